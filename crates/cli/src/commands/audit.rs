//! `keyturn audit`: the journal's events that match, oldest first, with who acted.

use chrono::SecondsFormat;
use keyturn_journal::{AuditFilter, Envelope, audit};
use serde::Serialize;

use crate::args::{AuditArgs, Format};
use crate::exit::{Exit, Failure, Outcome};
use crate::output::{TableRow, write_rows};

/// One audited event; the field names are a contract.
#[derive(Debug, Serialize)]
pub struct AuditRow {
    recorded_at: String,
    campaign: String,
    account_id: Option<String>,
    user_name: Option<String>,
    old_access_key_id: Option<String>,
    new_access_key_id: Option<String>,
    event_type: String,
    outcome: &'static str,
    step: Option<String>,
    error_code: Option<String>,
    caller_arn: String,
    run_id: String,
    host: String,
    stream: String,
    sequence: u64,
    hash: String,
}

impl AuditRow {
    fn new(event: &Envelope) -> Self {
        let text = |field: &str| {
            event
                .payload
                .get(field)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let outcome = match event.event_type.as_str() {
            "step-intended" => "intended",
            "step-failed" | "key-failed" | "notification-failed" => "failed",
            "key-blocked" => "blocked",
            "key-skipped" | "key-released" => "skipped",
            _ => "recorded",
        };
        Self {
            recorded_at: event
                .recorded_at
                .to_rfc3339_opts(SecondsFormat::Micros, true),
            campaign: event.campaign.clone(),
            account_id: event.account_id.clone(),
            user_name: event.user_name.clone(),
            old_access_key_id: event.access_key_ids.first().cloned(),
            new_access_key_id: event.access_key_ids.get(1).cloned(),
            event_type: event.event_type.clone(),
            outcome,
            step: text("step"),
            error_code: text("code").or_else(|| text("error_code")),
            caller_arn: event.actor.caller_arn.clone(),
            run_id: event.actor.run_id.clone(),
            host: event.actor.host.clone(),
            stream: event.stream.name().to_owned(),
            sequence: event.sequence,
            hash: event.hash.clone(),
        }
    }
}

impl TableRow for AuditRow {
    fn headers() -> &'static [&'static str] {
        &[
            "time", "campaign", "account", "user", "old key", "new key", "event", "step", "error",
            "actor", "run", "hash",
        ]
    }

    fn cells(&self) -> Vec<String> {
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
        vec![
            self.recorded_at.clone(),
            self.campaign.clone(),
            dash(&self.account_id),
            dash(&self.user_name),
            dash(&self.old_access_key_id),
            dash(&self.new_access_key_id),
            self.event_type.clone(),
            dash(&self.step),
            dash(&self.error_code),
            self.caller_arn.clone(),
            format!("{}@{}", self.run_id, self.host),
            self.hash[..12.min(self.hash.len())].to_owned(),
        ]
    }
}

/// Prints the events that match the filter.
pub async fn run(journal: &str, args: AuditArgs) -> Outcome {
    let location = super::journal::parse(journal)?;
    let filter = AuditFilter {
        campaign: args.campaign.map(String::from),
        account_id: args.account.map(String::from),
        user_name: args.user.map(String::from),
        access_key_id: args.key.map(String::from),
        event_type: args.event,
        since: args.since,
        until: args.until,
    };
    let journal = super::open_journal_for_reading(&location).await?;
    let events = audit(journal.as_ref(), &filter)
        .await
        .map_err(super::journal::journal_failure)?;
    let rows: Vec<AuditRow> = events.iter().map(AuditRow::new).collect();
    let mut stdout = std::io::stdout().lock();
    write_rows(&mut stdout, Format::or_default(args.output), &rows)
        .map_err(|e| Failure::new(Exit::Internal, format!("cannot write output: {e}")))?;
    Ok(Exit::Success)
}
