//! Progress of `inventory`, `plan` and `run` on stderr: accounts done out of the total,
//! keys acted on, throttled AWS answers.
//!
//! On a terminal, an `indicatif` bar per phase (inventory, then run), redrawn in place.
//! Otherwise plain lines: one when a phase ends, and one at most every
//! [`LINE_INTERVAL`] while a long phase goes on, so that logs stay readable. With
//! `--log-format json` those lines are INFO log events instead (fields `phase`,
//! `accounts_done`, `accounts_total`, `keys_acted_on`, `throttles`; shown with `-v`), so
//! that stderr stays one JSON object per line. Nothing is ever written to stdout, which
//! carries only the requested output.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use keyturn_planner::AccessKeyId;
use keyturn_worker::telemetry::{self, Progress};

/// The shortest time between two plain progress lines of one phase.
pub const LINE_INTERVAL: Duration = Duration::from_secs(10);

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    /// A bar redrawn in place on stderr (a terminal).
    Bar,
    /// A bar that never draws (tests read its state).
    #[cfg_attr(not(test), allow(dead_code))]
    HiddenBar,
    /// Plain lines, written to stderr.
    Lines,
    /// INFO log events (JSON logs).
    Events,
}

/// What has happened in the current phase.
#[derive(Debug)]
struct State {
    phase: &'static str,
    total: usize,
    done: usize,
    keys: HashSet<AccessKeyId>,
    throttles_at_start: u64,
    last_line: Instant,
    bar: Option<ProgressBar>,
}

/// Reports progress on stderr; passed to the worker as its [`Progress`] observer.
#[derive(Debug)]
pub struct Reporter {
    sink: Sink,
    state: Mutex<State>,
}

impl Reporter {
    /// A bar when stderr is a terminal, plain lines (or log events) otherwise.
    pub fn stderr() -> Self {
        if crate::telemetry::logs_are_json() {
            Self::new(Sink::Events)
        } else if std::io::stderr().is_terminal() {
            Self::new(Sink::Bar)
        } else {
            Self::new(Sink::Lines)
        }
    }

    fn new(sink: Sink) -> Self {
        Self {
            sink,
            state: Mutex::new(State {
                phase: "",
                total: 0,
                done: 0,
                keys: HashSet::new(),
                throttles_at_start: telemetry::throttles_so_far(),
                last_line: Instant::now(),
                bar: None,
            }),
        }
    }

    /// Ends the current phase: its last line, or the bar left at its final state.
    pub fn finish(&self) {
        let mut state = self.lock();
        self.end_phase(&mut state);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn end_phase(&self, state: &mut State) {
        if state.phase.is_empty() {
            return;
        }
        if matches!(self.sink, Sink::Lines | Sink::Events) {
            self.emit(state);
        } else if let Some(bar) = state.bar.take() {
            bar.set_message(message(state));
            bar.finish();
        }
        state.phase = "";
    }

    fn update(&self, state: &mut State) {
        if matches!(self.sink, Sink::Lines | Sink::Events) {
            if state.last_line.elapsed() >= LINE_INTERVAL && state.done < state.total {
                state.last_line = Instant::now();
                self.emit(state);
            }
        } else if let Some(bar) = &state.bar {
            bar.set_position(state.done as u64);
            bar.set_message(message(state));
        }
    }
}

impl Reporter {
    /// One plain line, or one log event.
    fn emit(&self, state: &State) {
        if self.sink == Sink::Events {
            tracing::info!(
                phase = state.phase,
                accounts_done = state.done,
                accounts_total = state.total,
                keys_acted_on = state.keys.len(),
                throttles = throttles(state),
                "progress"
            );
        } else {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "{}", line(state));
        }
    }
}

impl Progress for Reporter {
    fn phase(&self, name: &'static str, accounts: usize) {
        let mut state = self.lock();
        self.end_phase(&mut state);
        state.phase = name;
        state.total = accounts;
        state.done = 0;
        state.keys.clear();
        state.throttles_at_start = telemetry::throttles_so_far();
        state.last_line = Instant::now();
        if matches!(self.sink, Sink::Bar | Sink::HiddenBar) {
            let target = if self.sink == Sink::Bar {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            };
            let bar = ProgressBar::with_draw_target(Some(accounts as u64), target);
            let style = ProgressStyle::with_template(
                "{prefix:>9} [{bar:30}] {pos}/{len} accounts, {msg} ({elapsed})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(name);
            bar.set_message(message(&state));
            if !bar.is_hidden() {
                bar.enable_steady_tick(Duration::from_millis(250));
            }
            state.bar = Some(bar);
        }
    }

    fn account_done(&self) {
        let mut state = self.lock();
        state.done += 1;
        self.update(&mut state);
    }

    fn key_acted(&self, key: &AccessKeyId) {
        let mut state = self.lock();
        if state.keys.insert(key.clone()) {
            self.update(&mut state);
        }
    }
}

/// The bar's message: keys acted on (in a run) and throttles.
fn message(state: &State) -> String {
    let throttles = throttles(state);
    if state.phase == "run" {
        format!("{} keys acted on, {throttles} throttles", state.keys.len())
    } else {
        format!("{throttles} throttles")
    }
}

/// A plain progress line: `run: 3/12 accounts, 2 keys acted on, 0 throttles`.
fn line(state: &State) -> String {
    format!(
        "{}: {}/{} accounts, {}",
        state.phase,
        state.done,
        state.total,
        message(state)
    )
}

/// Throttled AWS answers since the phase started.
fn throttles(state: &State) -> u64 {
    telemetry::throttles_so_far().saturating_sub(state.throttles_at_start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> AccessKeyId {
        AccessKeyId::new(format!("AKIAIOSFODNN7EXAMPL{n}")).unwrap()
    }

    #[test]
    fn the_bar_counts_accounts_and_distinct_keys() {
        let reporter = Reporter::new(Sink::HiddenBar);
        reporter.phase("inventory", 3);
        reporter.account_done();
        {
            let state = reporter.lock();
            let bar = state.bar.as_ref().unwrap();
            assert_eq!(bar.length(), Some(3));
            assert_eq!(bar.position(), 1);
            assert_eq!(bar.prefix(), "inventory");
            assert!(bar.message().ends_with("throttles"), "{}", bar.message());
        }
        reporter.phase("run", 2);
        reporter.account_done();
        reporter.key_acted(&key(1));
        reporter.key_acted(&key(1));
        reporter.key_acted(&key(2));
        reporter.account_done();
        let state = reporter.lock();
        let bar = state.bar.as_ref().unwrap();
        assert!(bar.is_hidden(), "a test bar never draws");
        assert_eq!(bar.prefix(), "run");
        assert_eq!((bar.position(), bar.length()), (2, Some(2)));
        assert!(
            bar.message().starts_with("2 keys acted on, "),
            "{}",
            bar.message()
        );
    }

    #[test]
    fn plain_lines_say_the_phase_accounts_keys_and_throttles() {
        let reporter = Reporter::new(Sink::Lines);
        reporter.phase("run", 4);
        reporter.account_done();
        reporter.key_acted(&key(3));
        let state = reporter.lock();
        let text = line(&state);
        assert!(
            text.starts_with("run: 1/4 accounts, 1 keys acted on, "),
            "{text}"
        );
        assert!(text.ends_with(" throttles"), "{text}");
    }
}
