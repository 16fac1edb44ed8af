//! `keyturn verify [NAME]`: recompute every hash chain; report each break.

use keyturn_journal::{ChainBreak, find_chain_breaks};
use keyturn_planner::CampaignName;

use crate::exit::{Exit, Outcome};

/// Verifies one campaign, or every campaign of the journal.
pub async fn run(journal: &str, name: Option<&CampaignName>) -> Outcome {
    let location = super::journal::parse(journal)?;
    let journal = super::open_journal_for_reading(&location).await?;
    let campaigns = match name {
        Some(name) => vec![name.to_string()],
        None => journal
            .list_campaigns()
            .await
            .map_err(super::journal::journal_failure)?,
    };
    let mut events_checked = 0;
    let mut breaks = 0;
    for campaign in &campaigns {
        let events = journal
            .read_campaign(campaign)
            .await
            .map_err(super::journal::journal_failure)?;
        if events.is_empty() && name.is_some() {
            return Err(crate::exit::Failure::new(
                Exit::InvalidInput,
                format!("the journal has no campaign named {campaign}"),
            ));
        }
        events_checked += events.len();
        for found in find_chain_breaks(&events) {
            breaks += 1;
            let what = match &found.reason {
                ChainBreak::HashMismatch { .. } => {
                    "modified: its content no longer matches its hash".to_owned()
                }
                ChainBreak::BrokenLink { .. } => {
                    "broken link: an event before it was modified, deleted or reordered".to_owned()
                }
                ChainBreak::SequenceGap { expected } => {
                    format!("missing event(s): expected sequence {expected}")
                }
                other => format!("{other:?}"),
            };
            println!(
                "BROKEN {}/{} #{}: {what}",
                campaign,
                found.stream.name(),
                found.sequence
            );
        }
    }
    if breaks == 0 {
        println!(
            "ok: {events_checked} events in {} campaign(s), every hash chain intact",
            campaigns.len()
        );
        Ok(Exit::Success)
    } else {
        eprintln!(
            "{breaks} break(s) in the hash chains of {events_checked} events: the journal was altered outside keyturn"
        );
        Ok(Exit::Tampered)
    }
}
