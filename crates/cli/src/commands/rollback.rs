//! `keyturn rollback NAME --key OLD --reason WHY`: reactivate a deactivated old key.

use std::sync::Arc;

use keyturn_worker::campaign::run::{RunOptions, rollback};

use crate::args::RollbackArgs;
use crate::exit::{Exit, Outcome};

/// Reactivates the key and records why; it goes back to awaiting adoption.
pub async fn run(journal: &str, args: RollbackArgs) -> Outcome {
    let location = super::journal::parse(journal)?;
    let run_id = super::new_run_id();
    let sessions = super::sessions(args.name.as_str(), &run_id).await?;
    let journal = super::open_journal(&location, &sessions).await?;
    let actor = super::actor(&sessions, &run_id);
    let options = RunOptions {
        claim_ttl: super::claim_ttl(args.claim_ttl)?,
        ..RunOptions::default()
    };
    let (account, user) = rollback(
        Arc::clone(&journal),
        &sessions,
        &args.name,
        &args.key,
        &args.reason,
        actor,
        &options,
    )
    .await?;
    println!(
        "{} of {user} in {account} is Active again; it waits for adoption anew",
        args.key
    );
    Ok(Exit::Success)
}
