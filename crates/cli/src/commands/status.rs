//! `keyturn status NAME`: counts per state and one entry per key, from the journal alone.

use std::io::Write;

use chrono::SecondsFormat;
use keyturn_worker::campaign::{load_state, status};
use serde::Serialize;

use crate::args::{Format, StatusArgs};
use crate::exit::{Exit, Failure, Outcome};
use crate::output::{TableRow, write_rows};

/// One key's entry; the field names are a contract.
#[derive(Debug, Serialize)]
struct StatusRow {
    account_id: String,
    user_name: String,
    old_access_key_id: String,
    new_access_key_id: Option<String>,
    state: &'static str,
    next_check_at: Option<String>,
    reason: String,
}

impl TableRow for StatusRow {
    fn headers() -> &'static [&'static str] {
        &[
            "account",
            "user",
            "old key",
            "new key",
            "state",
            "next check",
            "reason",
        ]
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.account_id.clone(),
            self.user_name.clone(),
            self.old_access_key_id.clone(),
            self.new_access_key_id.clone().unwrap_or_else(|| "-".into()),
            self.state.to_owned(),
            self.next_check_at.clone().unwrap_or_else(|| "-".into()),
            self.reason.clone(),
        ]
    }
}

#[derive(Debug, Serialize)]
struct StatusDocument<'a> {
    campaign: &'a str,
    counts: std::collections::BTreeMap<&'static str, usize>,
    keys: Vec<StatusRow>,
}

/// Prints the campaign's status.
pub async fn run(journal: &str, args: StatusArgs) -> Outcome {
    let location = super::journal::parse(journal)?;
    let journal = super::open_journal_for_reading(&location).await?;
    let state = load_state(journal.as_ref(), &args.name).await?;
    super::warn_about(&state.campaign.policy);
    let rows = status::rows(&state);
    let counts = status::counts(&rows);
    let keys: Vec<StatusRow> = rows
        .into_iter()
        .map(|r| StatusRow {
            account_id: r.account_id.to_string(),
            user_name: r.user_name.to_string(),
            old_access_key_id: r.old_access_key_id.to_string(),
            new_access_key_id: r.new_access_key_id.map(|k| k.to_string()),
            state: r.state,
            next_check_at: r
                .next_check_at
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            reason: r.reason,
        })
        .collect();
    let json = match args.output.as_deref() {
        Some("json") => true,
        Some(_) => false,
        None => Format::or_default(None) == Format::Json,
    };
    let mut stdout = std::io::stdout().lock();
    let written = if json {
        let document = StatusDocument {
            campaign: args.name.as_str(),
            counts,
            keys,
        };
        serde_json::to_writer_pretty(&mut stdout, &document)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(stdout))
    } else {
        let line = counts
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect::<Vec<_>>()
            .join("  ");
        writeln!(stdout, "campaign {}  {line}", args.name)
            .and_then(|()| write_rows(&mut stdout, Format::Table, &keys))
    };
    written.map_err(|e| Failure::new(Exit::Internal, format!("cannot write output: {e}")))?;
    Ok(Exit::Success)
}
