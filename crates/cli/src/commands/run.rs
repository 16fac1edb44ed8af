//! `keyturn run NAME [--watch]`: advance a campaign, print what was done, what waits
//! until when, and what is blocked.

use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use keyturn_worker::AccountError;
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
        let exit = exit_of(&summary);
        // A stream altered outside keyturn stops a watch at once; other failures are
        // retried on the next pass.
        if stopped
            || !args.watch
            || (!open && summary.busy_accounts.is_empty())
            || exit == Exit::Tampered
        {
            return Ok(exit);
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

/// The exit code of a pass: success, or the gravest failure of an account (a stream
/// altered outside keyturn, then the journal, then a bug, then AWS: partial).
fn exit_of(summary: &RunSummary) -> Exit {
    let rank = |error: &AccountError| match error {
        AccountError::Tampered(_) => (4, Exit::Tampered),
        AccountError::Journal(_) => (3, Exit::Journal),
        AccountError::Internal(_) => (2, Exit::Internal),
        AccountError::Aws(_) => (1, Exit::Partial),
    };
    summary
        .failed_accounts
        .iter()
        .map(|failed| rank(&failed.error))
        .max_by_key(|(rank, _)| *rank)
        .map_or(Exit::Success, |(_, exit)| exit)
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
        let what = match &failed.error {
            AccountError::Aws(failure) => format!(
                "{} in {}: {}",
                failure.code, failure.operation, failure.message
            ),
            other => other.to_string(),
        };
        eprintln!(
            "account {} ({}) failed: {}",
            failed.account.id,
            failed.account.name,
            what.replace('\n', " ")
        );
    }
}

#[cfg(test)]
mod tests {
    use keyturn_planner::AccountId;
    use keyturn_worker::AwsFailure;
    use keyturn_worker::campaign::run::FailedAccount;
    use keyturn_worker::org::OrgAccount;

    use super::*;

    fn failed(id: &str, error: AccountError) -> FailedAccount {
        FailedAccount {
            account: OrgAccount {
                id: AccountId::new(id).unwrap(),
                name: id.to_owned(),
                email: None,
            },
            error,
        }
    }

    fn aws() -> AccountError {
        AccountError::Aws(AwsFailure {
            operation: "ListAccessKeys",
            code: "AccessDenied".into(),
            message: "no".into(),
        })
    }

    /// Each kind of account failure has its own exit code, and the gravest decides.
    #[test]
    fn a_pass_exits_with_its_gravest_account_failure() {
        let exit = |errors: Vec<AccountError>| {
            exit_of(&RunSummary {
                failed_accounts: errors
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| failed(&format!("{:012}", i + 1), e))
                    .collect(),
                ..RunSummary::default()
            })
        };
        let journal = || {
            AccountError::Journal(keyturn_journal::JournalError::Unavailable {
                backend: "dynamodb://t".into(),
                detail: "throttled".into(),
            })
        };
        let tampered = || AccountError::Tampered("stream edited".into());
        assert_eq!(exit(vec![]), Exit::Success);
        assert_eq!(exit(vec![aws()]), Exit::Partial);
        assert_eq!(exit(vec![aws(), journal()]), Exit::Journal);
        assert_eq!(exit(vec![tampered(), aws(), journal()]), Exit::Tampered);
        assert_eq!(
            exit(vec![AccountError::Internal("bug".into()), aws()]),
            Exit::Internal
        );
    }

    /// A journal error found to be tampering is typed so, wherever it was met.
    #[test]
    fn a_tampered_record_met_mid_run_is_tampering() {
        let error = AccountError::from(keyturn_journal::JournalError::Tampered {
            record: "q3/user/1/app #2".into(),
            detail: "its payload is not valid JSON (line 1, column 1)".into(),
        });
        assert!(matches!(error, AccountError::Tampered(_)), "{error:?}");
        assert_eq!(error.code(), "Tampered");
    }
}
