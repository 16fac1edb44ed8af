//! `keyturn status`: one entry per key of a campaign, from the journal alone.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use keyturn_planner::{AccessKeyId, AccountId, UserName};

use super::CampaignState;

/// One key's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatusRow {
    /// The account.
    pub account_id: AccountId,
    /// The user.
    pub user_name: UserName,
    /// The key the campaign acts on.
    pub old_access_key_id: AccessKeyId,
    /// Its replacement, once created.
    pub new_access_key_id: Option<AccessKeyId>,
    /// pending, awaiting-adoption, observing, completed, retired, blocked, skipped, failed.
    pub state: &'static str,
    /// When the key can next move, if it can.
    pub next_check_at: Option<DateTime<Utc>>,
    /// Why it is where it is.
    pub reason: String,
}

/// Every key of the campaign, ordered by account, user and key.
pub fn rows(state: &CampaignState) -> Vec<KeyStatusRow> {
    let rules = &state.campaign.policy.rotation;
    let mut rows = Vec::new();
    for ((account, user), entry) in &state.users {
        for ks in entry.state.keys.values() {
            let mut reason = ks.reason.clone();
            if let Some(code) = &ks.last_failure_code
                && !ks.phase.is_terminal()
            {
                reason = format!(
                    "{reason} (last attempt failed with {code}, {} in a row)",
                    ks.failures
                );
            }
            rows.push(KeyStatusRow {
                account_id: account.clone(),
                user_name: user.clone(),
                old_access_key_id: ks.key.clone(),
                new_access_key_id: ks.new_key.clone(),
                state: ks.phase.status_word(),
                next_check_at: ks.next_check_at(rules),
                reason,
            });
        }
    }
    rows
}

/// How many keys are in each state.
pub fn counts(rows: &[KeyStatusRow]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for state in [
        "pending",
        "awaiting-adoption",
        "observing",
        "completed",
        "retired",
        "blocked",
        "skipped",
        "failed",
    ] {
        counts.insert(state, 0);
    }
    for row in rows {
        *counts.entry(row.state).or_default() += 1;
    }
    counts
}
