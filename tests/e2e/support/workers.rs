//! Helpers of the several-workers scenario (`tests/e2e/workers.rs`): `keyturn` processes
//! whose output is read while they run, which can be paused (SIGSTOP), resumed
//! (SIGCONT) and killed (SIGKILL); and the account claims read back from the journal.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use keyturn_journal::{Envelope, decode};
use keyturn_testbed::Emulator;
use keyturn_worker::campaign::claims::ClaimEvent;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// A `keyturn` process running in the background.
#[derive(Debug)]
pub struct Worker {
    /// A name for messages ("worker 1").
    pub label: String,
    child: Child,
    pid: u32,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect<R>(stream: R, into: Arc<Mutex<String>>) -> JoinHandle<()>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut text = into.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    })
}

impl Worker {
    /// Starts `keyturn -v --journal JOURNAL ARGS` against `emulator`, in `dir`.
    pub fn spawn(
        label: &str,
        emulator: &Emulator,
        dir: &Path,
        journal: &str,
        args: &[&str],
    ) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keyturn"));
        for name in keyturn_testbed::ENV_TO_REMOVE {
            command.env_remove(name);
        }
        command
            .envs(emulator.env())
            .env_remove("KEYTURN_JOURNAL")
            .env_remove("KEYTURN_LOG")
            .env_remove("FAILPOINTS")
            .env("NO_COLOR", "1")
            .args(["-v", "--journal", journal])
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start keyturn");
        let pid = child.id().expect("a running child has a pid");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().expect("piped"), Arc::clone(&stdout)),
            collect(child.stderr.take().expect("piped"), Arc::clone(&stderr)),
        ];
        Self {
            label: label.to_owned(),
            child,
            pid,
            stdout,
            stderr,
            readers,
        }
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Its run id, once it has logged a claim ("claimed the account … run=ID …").
    pub fn run_id(&self) -> Option<String> {
        strip_ansi(&self.stderr())
            .lines()
            .filter(|l| l.contains("claimed the account"))
            .find_map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("run="))
                    .map(|id| id.trim_end_matches([',', ':']).to_owned())
            })
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid);
    }

    /// Freezes the process (SIGSTOP): it sends nothing more until resumed.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused process go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub async fn kill(&mut self) -> ExitStatus {
        self.signal("KILL");
        self.finish().await
    }

    /// Whether it has ended.
    pub fn ended(&mut self) -> bool {
        self.child.try_wait().expect("poll keyturn").is_some()
    }

    /// Waits for the process to end on its own, at most `limit`; on timeout it is
    /// killed and the test fails with its output.
    pub async fn wait(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => {
                status.expect("wait for keyturn");
                self.finish().await
            }
            Err(_) => {
                self.signal("KILL");
                self.finish().await;
                panic!(
                    "{} did not end within {limit:?}:\n{}",
                    self.label,
                    self.describe()
                );
            }
        }
    }

    async fn finish(&mut self) -> ExitStatus {
        let status = self.child.wait().await.expect("wait for keyturn");
        for reader in self.readers.drain(..) {
            let _ = reader.await;
        }
        status
    }

    /// Both streams, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} (pid {})\nstdout:\n{}\nstderr:\n{}",
            self.label,
            self.pid,
            self.stdout(),
            self.stderr()
        )
    }
}

/// The text without terminal colour sequences (`ESC [ … letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One event of an account's claim stream.
#[derive(Debug, Clone)]
pub struct ClaimRecord {
    /// Its sequence in the claim stream: the fencing token it gave its holder.
    pub token: u64,
    /// The run that wrote it.
    pub run_id: String,
    /// When the journal recorded it.
    pub at: DateTime<Utc>,
    /// `Some(expiry)` for a claim taken (or renewed), `None` for a release.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The claim streams (`account/<id>`) of a campaign's events, per account id.
pub fn claims_by_account(events: &[Envelope]) -> BTreeMap<String, Vec<ClaimRecord>> {
    let mut claims: BTreeMap<String, Vec<ClaimRecord>> = BTreeMap::new();
    for event in events {
        let Some(account) = event.stream.name().strip_prefix("account/") else {
            continue;
        };
        let decoded = decode::<ClaimEvent>(event).expect("a claim event");
        let expires_at = match decoded {
            ClaimEvent::ClaimTaken { expires_at, .. } => Some(expires_at),
            ClaimEvent::ClaimReleased { .. } => None,
        };
        claims
            .entry(account.to_owned())
            .or_default()
            .push(ClaimRecord {
                token: event.sequence,
                run_id: event.actor.run_id.clone(),
                at: event.recorded_at,
                expires_at,
            });
    }
    for records in claims.values_mut() {
        records.sort_by_key(|r| r.token);
    }
    claims
}

/// The intervals during which each run held the account, from its claim stream: a
/// claim taken at `at` holds until it expires or the stream's next event (a renewal, a
/// release or a takeover), whichever comes first.
pub fn holds(records: &[ClaimRecord]) -> Vec<(String, DateTime<Utc>, DateTime<Utc>)> {
    records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let expires = r.expires_at?;
            let end = records
                .get(i + 1)
                .map_or(expires, |next| next.at.min(expires));
            Some((r.run_id.clone(), r.at, end))
        })
        .collect()
}

/// The run that held the account at `at`, if any. An event its run recorded at the
/// very moment of its release was written in the release's own transaction (the
/// release carries the run's deferred events; had the release's condition failed,
/// nothing of that transaction would bear its time): it counts as held.
pub fn holder_at(records: &[ClaimRecord], at: DateTime<Utc>) -> Option<String> {
    let released_with = |run: &str| {
        records
            .iter()
            .any(|r| r.expires_at.is_none() && r.at == at && r.run_id == run)
    };
    holds(records)
        .into_iter()
        .find(|(run, from, to)| *from <= at && (at < *to || (at == *to && released_with(run))))
        .map(|(run, _, _)| run)
}
