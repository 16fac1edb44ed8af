//! `keyturn journal …`: set-up of the journal.

use crate::exit::{Exit, Outcome};

/// `keyturn journal init`.
pub async fn init(location: &str) -> Outcome {
    let _ = location;
    Ok(Exit::Success)
}
