//! The evidence report: what a campaign did, per account and overall, and where the
//! organization stands now against CIS AWS Foundations 2.11 / 2.12 and Security Hub
//! IAM.3 / IAM.8. Computed from the journal (what happened) and a fresh inventory
//! (what is true now); rendering is the CLI's job.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use keyturn_planner::inventory::{KeyRecord, KeyStatus};
use keyturn_planner::rotation::{Path, Phase, RotationEvent};
use keyturn_planner::{AccessKeyId, AccountId, UserName};

use super::CampaignState;
use crate::inventory::Inventory;

/// Counts of one account, or of the whole campaign.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Keys the campaign took on (enrolled, skipped or blocked).
    pub in_scope_at_start: usize,
    /// Keys replaced and deleted.
    pub rotated: usize,
    /// Unused keys deactivated and deleted without replacement.
    pub retired: usize,
    /// Inactive keys deleted.
    pub deleted_inactive: usize,
    /// Keys left for a human.
    pub blocked: usize,
    /// Keys out of scope.
    pub skipped: usize,
    /// Keys that failed too often.
    pub failed: usize,
    /// Keys still on their way.
    pub in_progress: usize,
    /// Active keys that break a control now.
    pub non_compliant_now: usize,
}

/// A key that is not settled the way the campaign wanted, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exception {
    /// The account.
    pub account_id: AccountId,
    /// The user.
    pub user_name: UserName,
    /// The key.
    pub access_key_id: AccessKeyId,
    /// blocked, skipped, failed, pending…
    pub state: &'static str,
    /// Why.
    pub reason: String,
}

/// One finished rotation and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The account.
    pub account_id: AccountId,
    /// The user.
    pub user_name: UserName,
    /// The old key.
    pub old_key: AccessKeyId,
    /// Its replacement.
    pub new_key: Option<AccessKeyId>,
    /// When the campaign took the key on.
    pub started_at: DateTime<Utc>,
    /// When the old key was deleted.
    pub finished_at: DateTime<Utc>,
}

/// An Active key that breaks a control now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonCompliant {
    /// The key as IAM shows it now.
    pub key: KeyRecord,
    /// CIS 2.12 (older than the maximum age) and/or CIS 2.11 (unused too long).
    pub controls: Vec<&'static str>,
    /// The campaign's state for the key, if it has one.
    pub campaign_state: Option<&'static str>,
    /// The campaign's reason, if any.
    pub reason: Option<String>,
}

/// A control and whether the scope meets it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// E.g. "CIS AWS Foundations 2.12 / Security Hub IAM.3".
    pub id: &'static str,
    /// What it asks.
    pub title: String,
    /// Active keys in scope breaking it now.
    pub failing_keys: usize,
}

/// The whole report.
#[derive(Debug, Clone)]
pub struct Report {
    /// When it was computed.
    pub generated_at: DateTime<Utc>,
    /// The controls.
    pub controls: Vec<Control>,
    /// Totals.
    pub overall: Counts,
    /// Per account.
    pub accounts: BTreeMap<AccountId, Counts>,
    /// Blocked, skipped, failed and unfinished keys with their reasons.
    pub exceptions: Vec<Exception>,
    /// Finished rotations.
    pub rotations: Vec<Rotation>,
    /// Ages in days of the keys that existed when the campaign started, at that time.
    pub ages_before: Vec<i64>,
    /// Ages in days of the Active keys in scope now.
    pub ages_after: Vec<i64>,
    /// (time, keys settled so far) at each settling event.
    pub progress: Vec<(DateTime<Utc>, usize)>,
    /// Active keys that break a control now.
    pub non_compliant: Vec<NonCompliant>,
    /// Accounts that could not be read now (their keys are not in the "now" figures).
    pub unread_accounts: Vec<AccountId>,
}

/// Computes the report from the campaign's journal and a fresh inventory of its scope.
pub fn compute(state: &CampaignState, inventory: &Inventory, now: DateTime<Utc>) -> Report {
    let rules = &state.campaign.policy.rotation;
    let started = state.campaign.started_at;
    let mut accounts: BTreeMap<AccountId, Counts> = BTreeMap::new();
    let mut exceptions = Vec::new();
    let mut rotations = Vec::new();
    let mut settled_at = Vec::new();
    let mut deleted_created: Vec<DateTime<Utc>> = Vec::new();
    let mut tracked: BTreeMap<AccessKeyId, (&'static str, String)> = BTreeMap::new();

    for ((account, user), entry) in &state.users {
        let counts = accounts.entry(account.clone()).or_default();
        for ks in entry.state.keys.values() {
            counts.in_scope_at_start += 1;
            let word = ks.phase.status_word();
            tracked.insert(ks.key.clone(), (word, ks.reason.clone()));
            let finished = entry
                .events
                .iter()
                .rev()
                .find_map(|(event, at)| match event {
                    RotationEvent::KeyDeleted { key, .. } | RotationEvent::KeyVanished { key }
                        if *key == ks.key =>
                    {
                        Some(*at)
                    }
                    _ => None,
                });
            match (ks.phase, ks.path) {
                (Phase::Completed | Phase::Vanished, Some(Path::DeleteInactive)) => {
                    counts.deleted_inactive += 1
                }
                (Phase::Completed | Phase::Vanished, _) => counts.rotated += 1,
                (Phase::Retired, _) => counts.retired += 1,
                (Phase::Blocked, _) => counts.blocked += 1,
                (Phase::Skipped | Phase::Released, _) => counts.skipped += 1,
                (Phase::Failed, _) => counts.failed += 1,
                _ => counts.in_progress += 1,
            }
            if let (Some(at), true) = (
                finished,
                matches!(
                    ks.phase,
                    Phase::Completed | Phase::Retired | Phase::Vanished
                ),
            ) {
                settled_at.push(at);
                if let Some(created) = ks.created_at {
                    deleted_created.push(created);
                }
                if ks.path == Some(Path::Rotate) {
                    rotations.push(Rotation {
                        account_id: account.clone(),
                        user_name: user.clone(),
                        old_key: ks.key.clone(),
                        new_key: ks.new_key.clone(),
                        started_at: ks.enrolled_at,
                        finished_at: at,
                    });
                }
            }
            if !matches!(
                ks.phase,
                Phase::Completed | Phase::Retired | Phase::Vanished
            ) {
                exceptions.push(Exception {
                    account_id: account.clone(),
                    user_name: user.clone(),
                    access_key_id: ks.key.clone(),
                    state: word,
                    reason: ks.reason.clone(),
                });
            }
        }
    }

    let days =
        |d: std::time::Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    let mut non_compliant = Vec::new();
    let mut ages_after = Vec::new();
    let mut ages_before: Vec<i64> = deleted_created
        .iter()
        .map(|c| (started - *c).num_days().max(0))
        .collect();
    for account in &inventory.accounts {
        for user in account.users.iter().filter(|u| u.exclusion.is_none()) {
            for key in &user.keys {
                if key.created_at < started {
                    ages_before.push((started - key.created_at).num_days().max(0));
                }
                if key.status != KeyStatus::Active {
                    continue;
                }
                ages_after.push(key.age_days(now));
                let mut controls = Vec::new();
                if now - key.created_at > days(rules.max_key_age) {
                    controls.push("CIS 2.12 / IAM.3");
                }
                let quiet_since = key
                    .last_used
                    .as_ref()
                    .map_or(key.created_at, |l| l.at.max(key.created_at));
                if now - quiet_since >= days(rules.unused_after) {
                    controls.push("CIS 2.11 / IAM.8");
                }
                if !controls.is_empty() {
                    accounts
                        .entry(key.account_id.clone())
                        .or_default()
                        .non_compliant_now += 1;
                    let campaign = tracked.get(&key.access_key_id);
                    non_compliant.push(NonCompliant {
                        key: key.clone(),
                        controls,
                        campaign_state: campaign.map(|(w, _)| *w),
                        reason: campaign.map(|(_, r)| r.clone()),
                    });
                }
            }
        }
    }
    settled_at.sort();
    let progress = settled_at
        .iter()
        .enumerate()
        .map(|(i, at)| (*at, i + 1))
        .collect();
    let overall = accounts.values().fold(Counts::default(), |mut total, c| {
        total.in_scope_at_start += c.in_scope_at_start;
        total.rotated += c.rotated;
        total.retired += c.retired;
        total.deleted_inactive += c.deleted_inactive;
        total.blocked += c.blocked;
        total.skipped += c.skipped;
        total.failed += c.failed;
        total.in_progress += c.in_progress;
        total.non_compliant_now += c.non_compliant_now;
        total
    });
    let failing = |control: &str| {
        non_compliant
            .iter()
            .filter(|n| n.controls.contains(&control))
            .count()
    };
    let fmt = keyturn_planner::policy::format_duration;
    let controls = vec![
        Control {
            id: "CIS AWS Foundations 2.12 / Security Hub IAM.3",
            title: format!(
                "Access keys are rotated every {} or less",
                fmt(rules.max_key_age)
            ),
            failing_keys: failing("CIS 2.12 / IAM.3"),
        },
        Control {
            id: "CIS AWS Foundations 2.11 / Security Hub IAM.8",
            title: format!(
                "Credentials unused for {} or more are disabled",
                fmt(rules.unused_after)
            ),
            failing_keys: failing("CIS 2.11 / IAM.8"),
        },
    ];
    Report {
        generated_at: now,
        controls,
        overall,
        accounts,
        exceptions,
        rotations,
        ages_before,
        ages_after,
        progress,
        non_compliant,
        unread_accounts: inventory
            .failures
            .iter()
            .map(|f| f.account.id.clone())
            .collect(),
    }
}
