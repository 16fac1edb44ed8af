//! One module per command; `run` dispatches. The helpers here set up what several
//! commands share: the AWS sessions, the journal and the actor recorded in events.

mod audit;
mod campaign;
mod inventory;
pub mod journal;
mod plan;
mod report;
mod rollback;
mod run;
mod status;
mod verify;

use std::sync::Arc;

use keyturn_journal::{Actor, Journal, JournalError, JournalLocation};
use keyturn_worker::{Sessions, session};

use crate::args::{CampaignCommand, Cli, Command, JournalCommand};
use crate::exit::{Exit, Failure, Outcome};

/// Runs the command the user asked for.
pub async fn run(cli: Cli) -> Outcome {
    match cli.command {
        Command::Inventory(args) => inventory::run(args).await,
        Command::Plan(args) => plan::run(args).await,
        Command::Campaign(CampaignCommand::Start { name, policy }) => {
            campaign::start(&cli.journal, &name, &policy).await
        }
        Command::Campaign(CampaignCommand::List { output }) => {
            campaign::list(&cli.journal, output).await
        }
        Command::Run(args) => run::run(&cli.journal, args).await,
        Command::Status(args) => status::run(&cli.journal, args).await,
        Command::Rollback(args) => rollback::run(&cli.journal, args).await,
        Command::Report { name, format, out } => {
            report::run(&cli.journal, &name, &format, out.as_deref()).await
        }
        Command::Audit(args) => audit::run(&cli.journal, args).await,
        Command::Verify { name } => verify::run(&cli.journal, name.as_ref()).await,
        Command::Journal(JournalCommand::Init) => journal::init(&cli.journal).await,
    }
}

/// Logs the policy's warnings (a test bed's short gates), on stderr through the log
/// layer, so that `--log-format json` keeps every stderr line JSON.
pub fn warn_about(policy: &keyturn_planner::Policy) {
    for warning in policy.warnings() {
        tracing::warn!("policy: {warning}");
    }
}

/// `--claim-ttl` as the engine takes it. Zero is refused (exit 2). Under twice the AWS
/// operation timeout it is logged as a warning: a call that hangs until its timeout can
/// then outlast the lease, and only the journal's fence still protects the writes (a
/// test bed's setting).
pub fn claim_ttl(ttl: std::time::Duration) -> Result<chrono::Duration, Failure> {
    if ttl.is_zero() {
        return Err(Failure::new(
            Exit::InvalidInput,
            "--claim-ttl must be longer than zero",
        ));
    }
    if let Some(warning) = short_claim_ttl(ttl) {
        tracing::warn!("{warning}");
    }
    chrono::Duration::from_std(ttl).map_err(|e| Failure::new(Exit::InvalidInput, e))
}

/// The warning a claim TTL under twice the AWS operation timeout deserves.
fn short_claim_ttl(ttl: std::time::Duration) -> Option<String> {
    let operation = keyturn_worker::port::OPERATION_TIMEOUT;
    (ttl < operation * 2).then(|| {
        format!(
            "--claim-ttl {} is under twice the AWS operation timeout ({}s): a call that \
             hangs can outlast the claim, and another worker may take the account over \
             while it is in flight; use at least {}s outside a test bed",
            humantime::format_duration(ttl),
            operation.as_secs(),
            (operation * 2).as_secs()
        )
    })
}

/// A short random id for this process's run, recorded as the actor of its events.
pub fn new_run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// The caller's sessions; `purpose` names them in CloudTrail.
pub async fn sessions(purpose: &str, run_id: &str) -> Result<Sessions, Failure> {
    let config = session::load_sdk_config().await;
    Ok(Sessions::new(config, purpose, run_id).await?)
}

/// Opens the journal at `location` (already validated) with the caller's AWS
/// configuration, for a command on an existing campaign: a SQLite file that does not
/// exist is an error, never created.
pub async fn open_journal(
    location: &JournalLocation,
    sessions: &Sessions,
) -> Result<Arc<dyn Journal>, Failure> {
    require_existing_file(location)?;
    open_journal_creating(location, sessions).await
}

/// [`open_journal`] for `campaign start`, the one command that creates a SQLite journal
/// file on first use (a DynamoDB table is always made by `keyturn journal init`).
pub async fn open_journal_creating(
    location: &JournalLocation,
    sessions: &Sessions,
) -> Result<Arc<dyn Journal>, Failure> {
    keyturn_journal::open(location, Some(sessions.base()))
        .await
        .map_err(journal::journal_failure)
}

/// A SQLite journal's file must exist before any command but `campaign start` and
/// `journal init` opens it: a mistyped path must not leave an empty journal behind.
fn require_existing_file(location: &JournalLocation) -> Result<(), Failure> {
    match location {
        JournalLocation::Sqlite { path } if !path.exists() => {
            Err(journal::journal_failure(JournalError::NotInitialised {
                location: location.to_string(),
                detail: "there is no journal file at this path".into(),
            }))
        }
        _ => Ok(()),
    }
}

/// Who records events: the caller's ARN, this run's id and the host it runs on.
pub fn actor(sessions: &Sessions, run_id: &str) -> Actor {
    Actor {
        caller_arn: sessions.caller().arn.clone(),
        run_id: run_id.to_owned(),
        host: host_name(),
    }
}

/// The name of the machine this process runs on, as the journal's actor records it:
/// the kernel's host name (Linux), else `HOSTNAME` or `COMPUTERNAME`, else `unknown`.
/// Control characters are dropped and the name is cut to 255 characters (DNS names are
/// shorter; the journal refuses control characters and names over 1024), so that a
/// strange host name can never make an append fail.
fn host_name() -> String {
    let candidates = [
        std::fs::read_to_string("/proc/sys/kernel/hostname").ok(),
        std::fs::read_to_string("/etc/hostname").ok(),
        std::env::var("HOSTNAME").ok(),
        std::env::var("COMPUTERNAME").ok(),
    ];
    candidates
        .into_iter()
        .flatten()
        .map(|name| {
            name.chars()
                .filter(|c| !c.is_control())
                .take(255)
                .collect::<String>()
                .trim()
                .to_owned()
        })
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Opens the journal for a read-only command: AWS is contacted only for a DynamoDB journal,
/// and a SQLite file that does not exist is an error, never created (a mistyped path must
/// not leave an empty journal behind).
pub async fn open_journal_for_reading(
    location: &JournalLocation,
) -> Result<Arc<dyn Journal>, Failure> {
    let sdk = match location {
        JournalLocation::DynamoDb { .. } => Some(session::load_sdk_config().await),
        _ => {
            require_existing_file(location)?;
            None
        }
    };
    keyturn_journal::open(location, sdk.as_ref())
        .await
        .map_err(journal::journal_failure)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{claim_ttl, short_claim_ttl};

    #[test]
    fn a_claim_ttl_under_twice_the_operation_timeout_is_warned_about_and_zero_refused() {
        assert!(short_claim_ttl(Duration::from_secs(120)).is_none());
        assert!(short_claim_ttl(Duration::from_secs(60)).is_none());
        let warning = short_claim_ttl(Duration::from_secs(8)).expect("8s is short");
        assert!(warning.contains("--claim-ttl 8s"), "{warning}");
        assert!(warning.contains("at least 60s"), "{warning}");
        assert_eq!(
            claim_ttl(Duration::ZERO).unwrap_err().exit,
            crate::exit::Exit::InvalidInput
        );
        assert_eq!(
            claim_ttl(Duration::from_secs(90)).unwrap(),
            chrono::Duration::seconds(90)
        );
    }
}
