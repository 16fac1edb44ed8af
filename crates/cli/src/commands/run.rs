//! `keyturn run NAME [--watch]`: advance a campaign, print what was done, what waits
//! until when, and what is blocked.

use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use keyturn_worker::campaign::run::{RunOptions, RunSummary, run as run_campaign};
use keyturn_worker::campaign::{load_state, status};

use crate::args::RunArgs;
use crate::exit::{Exit, Outcome};

/// The longest `--watch` sleeps before looking again, even when nothing is due sooner.
const MAX_SLEEP: Duration = Duration::from_secs(300);

/// Runs the campaign once, or until only blocked keys are left with `--watch`.
pub async fn run(journal: &str, args: RunArgs) -> Outcome {
    let location = super::journal::parse(journal)?;
    let run_id = super::new_run_id();
    let sessions = super::sessions(args.name.as_str(), &run_id).await?;
    let journal = super::open_journal(&location, &sessions).await?;
    let actor = super::actor(&sessions, &run_id);
    let progress = Arc::new(crate::progress::Reporter::stderr());
    let options = RunOptions {
        concurrency: usize::from(args.concurrency),
        claim_ttl: super::claim_ttl(args.claim_ttl)?,
        verify_wait: args.verify_wait,
        progress: Some(progress.clone()),
        ..RunOptions::default()
    };
    // Ctrl-C stops cleanly between steps: the step under way finishes and is recorded.
    let stop = Arc::clone(&options.stop);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("stopping after the step under way (Ctrl-C); run again to resume");
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let mut warned = false;
    loop {
        let mut summary = run_campaign(
            Arc::clone(&journal),
            &sessions,
            &args.name,
            actor.clone(),
            &options,
        )
        .await?;
        progress.finish();
        print_summary(&summary);
        // The run's own account of the campaign, unless it met another worker or a
        // failure: then the journal is read again.
        let state = match summary.state.take() {
            Some(state) => state,
            None => load_state(journal.as_ref(), &args.name).await?,
        };
        if !warned {
            super::warn_about(&state.campaign.policy);
            warned = true;
        }
        let rows = status::rows(&state);
        let counts = status::counts(&rows);
        keyturn_worker::telemetry::record_key_states(
            args.name.as_str(),
            counts.iter().map(|(state, n)| (*state, *n)),
        );
        println!(
            "{}",
            counts
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(s, n)| format!("{n} {s}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let open = rows
            .iter()
            .any(|r| matches!(r.state, "pending" | "awaiting-adoption" | "observing"));
        let stopped = options.stop.load(std::sync::atomic::Ordering::SeqCst);
        if stopped || !args.watch || (!open && summary.busy_accounts.is_empty()) {
            return Ok(if summary.failed_accounts.is_empty() {
                Exit::Success
            } else {
                Exit::Partial
            });
        }
        let next = summary
            .next_due()
            .map(|at| (at - Utc::now()).to_std().unwrap_or_default());
        let sleep = next
            .unwrap_or(Duration::from_secs(5))
            .clamp(Duration::from_millis(200), MAX_SLEEP);
        eprintln!(
            "watching: next check in {}",
            humantime::format_duration(Duration::from_secs(sleep.as_secs().max(1)))
        );
        let deadline = tokio::time::Instant::now() + sleep;
        while tokio::time::Instant::now() < deadline {
            if options.stop.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(Exit::Success);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn print_summary(summary: &RunSummary) {
    for done in &summary.done {
        println!(
            "done     {} {} {}: {}",
            done.account, done.user, done.key, done.what
        );
    }
    for waiting in &summary.waiting {
        let until = waiting.until.map_or_else(
            || "later".to_owned(),
            |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
        );
        println!(
            "waiting  {} {} {} until {until}: {}",
            waiting.account, waiting.user, waiting.key, waiting.reason
        );
    }
    for (account, run, until) in &summary.busy_accounts {
        println!(
            "busy     {account}: worked by run {run} until {}",
            until.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
    }
    for failed in &summary.failed_accounts {
        let message = failed.failure.message.replace('\n', " ");
        eprintln!(
            "account {} ({}) failed: {} in {}: {message}",
            failed.account.id, failed.account.name, failed.failure.code, failed.failure.operation
        );
    }
}
