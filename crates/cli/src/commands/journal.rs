//! `keyturn journal …`: set-up of the journal.

use keyturn_journal::{JournalError, JournalLocation};

use crate::exit::{Exit, Failure, Outcome};

/// `keyturn journal init`: creates the DynamoDB table (with its indexes) or the SQLite
/// file; an existing, matching journal is left as it is.
pub async fn init(location: &str) -> Outcome {
    let location = parse(location)?;
    let sdk = match location {
        JournalLocation::DynamoDb { .. } => Some(keyturn_worker::session::load_sdk_config().await),
        JournalLocation::Sqlite { .. } => None,
    };
    let outcome = keyturn_journal::init(&location, sdk.as_ref())
        .await
        .map_err(journal_failure)?;
    let what = if outcome.created {
        "created"
    } else {
        "already initialised; nothing changed"
    };
    println!("journal {location}: {what}");
    Ok(Exit::Success)
}

/// Parses a journal location; a malformed one is invalid input.
pub fn parse(location: &str) -> Result<JournalLocation, Failure> {
    keyturn_journal::parse_location(location).map_err(journal_failure)
}

/// Classifies a journal error by the exit code it produces.
pub fn journal_failure(e: JournalError) -> Failure {
    let exit = match e {
        JournalError::Rejected(_) => Exit::InvalidInput,
        JournalError::Unexpected { .. } | JournalError::Conflict { .. } => Exit::Internal,
        JournalError::Unavailable { .. }
        | JournalError::Incompatible { .. }
        | JournalError::NotInitialised { .. }
        | JournalError::UnknownEventType { .. }
        | JournalError::NewerSchema { .. }
        | JournalError::Corrupt { .. } => Exit::Journal,
        JournalError::Tampered { .. } => Exit::Tampered,
        _ => Exit::Internal,
    };
    Failure::new(exit, e)
}
