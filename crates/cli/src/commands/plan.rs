//! `keyturn plan`: what a campaign with this policy would do to each key. Reads only.

use std::collections::BTreeSet;

use chrono::Utc;
use keyturn_planner::AccessKeyId;
use keyturn_planner::rotation::{ObservedKey, classify};
use keyturn_worker::iam::Listing;
use keyturn_worker::inventory;
use keyturn_worker::steps;
use serde::Serialize;

use super::inventory::load_policy;
use crate::args::{Format, PlanArgs};
use crate::exit::{Exit, Failure, Outcome};
use crate::output::{TableRow, write_rows};

/// One plan row; the field names are a contract.
#[derive(Debug, Serialize)]
pub struct PlanRow {
    account_id: String,
    user_name: String,
    access_key_id: String,
    action: &'static str,
    reason: String,
}

impl TableRow for PlanRow {
    fn headers() -> &'static [&'static str] {
        &["account", "user", "access key", "action", "reason"]
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.account_id.clone(),
            self.user_name.clone(),
            self.access_key_id.clone(),
            self.action.to_owned(),
            self.reason.clone(),
        ]
    }
}

/// Runs the plan.
pub async fn run(args: PlanArgs) -> Outcome {
    let policy = load_policy(&args.policy)?;
    super::warn_about(&policy);
    let format = Format::or_default(args.output);
    let run_id = super::new_run_id();
    let sessions = super::sessions("plan", &run_id).await?;
    let caller_key = steps::caller_access_key_id(sessions.base())
        .await
        .and_then(|k| AccessKeyId::new(k).ok());
    // Only users whose credential-report row shows a key the plan may act on (or who
    // are missing from the report) have their keys listed: a user whose keys all plan
    // `none` costs no ListAccessKeys and prints no row (docs/inventory.md).
    let in_flight = BTreeSet::new();
    let listing = Listing::Actionable {
        rules: &policy.rotation,
        in_flight: &in_flight,
    };
    let inventory = inventory::collect_listing(
        &sessions,
        &policy.scope,
        usize::from(args.concurrency),
        listing,
    )
    .await?;
    let now = Utc::now();
    let mut rows = Vec::new();
    for account in &inventory.accounts {
        for user in &account.users {
            let observed: Vec<ObservedKey> = user
                .keys
                .iter()
                .map(|k| ObservedKey {
                    key: k.access_key_id.clone(),
                    status: k.status,
                    created_at: k.created_at,
                    last_used_at: k.last_used.as_ref().map(|l| l.at),
                })
                .collect();
            for plan in classify(
                &observed,
                user.exclusion.as_ref(),
                caller_key.as_ref(),
                &policy.rotation,
                now,
            ) {
                rows.push(PlanRow {
                    account_id: account.account.id.to_string(),
                    user_name: user.user.name.to_string(),
                    access_key_id: plan.key.to_string(),
                    action: plan.action.as_str(),
                    reason: plan.reason,
                });
            }
        }
    }
    let mut stdout = std::io::stdout().lock();
    write_rows(&mut stdout, format, &rows)
        .map_err(|e| Failure::new(Exit::Internal, format!("cannot write output: {e}")))?;
    super::inventory::report_failures(&inventory);
    Ok(if inventory.failures.is_empty() {
        Exit::Success
    } else {
        Exit::Partial
    })
}
