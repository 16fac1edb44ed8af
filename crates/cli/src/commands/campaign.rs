//! `keyturn campaign start | list`.

use std::path::Path;

use chrono::SecondsFormat;
use keyturn_planner::CampaignName;
use keyturn_worker::campaign::{self, Started};
use serde::Serialize;

use super::inventory::load_policy;
use crate::args::Format;
use crate::exit::{Exit, Failure, Outcome};
use crate::output::{TableRow, write_rows};

/// `keyturn campaign start NAME --policy FILE`.
pub async fn start(journal: &str, name: &CampaignName, policy: &Path) -> Outcome {
    let location = super::journal::parse(journal)?;
    let policy = load_policy(policy)?;
    super::warn_about(&policy);
    let run_id = super::new_run_id();
    let sessions = super::sessions("campaign", &run_id).await?;
    let journal = super::open_journal_creating(&location, &sessions).await?;
    match campaign::start(
        journal.as_ref(),
        name,
        &policy,
        &super::actor(&sessions, &run_id),
    )
    .await?
    {
        Started::Created => println!("campaign {name} started; run it with `keyturn run {name}`"),
        Started::AlreadyExists => {
            println!("campaign {name} already exists with this policy; nothing changed")
        }
    }
    Ok(Exit::Success)
}

#[derive(Debug, Serialize)]
struct CampaignRow {
    name: String,
    started_at: String,
    started_by: String,
}

impl TableRow for CampaignRow {
    fn headers() -> &'static [&'static str] {
        &["campaign", "started", "by"]
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.started_at.clone(),
            self.started_by.clone(),
        ]
    }
}

/// `keyturn campaign list`.
pub async fn list(journal: &str, output: Option<Format>) -> Outcome {
    let location = super::journal::parse(journal)?;
    let journal = super::open_journal_for_reading(&location).await?;
    let rows: Vec<CampaignRow> = campaign::list(journal.as_ref())
        .await?
        .into_iter()
        .map(|c| CampaignRow {
            name: c.name.to_string(),
            started_at: c.started_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            started_by: c.started_by,
        })
        .collect();
    let mut stdout = std::io::stdout().lock();
    write_rows(&mut stdout, Format::or_default(output), &rows)
        .map_err(|e| Failure::new(Exit::Internal, format!("cannot write output: {e}")))?;
    Ok(Exit::Success)
}
