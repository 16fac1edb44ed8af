//! What the journal says about keyturn's right to act, as the simulator reads it from
//! the committed appends: which run holds each account's claim (and until when), and
//! the open intent of each key (the latest `step-intended` naming it as its key).
//! keyturn's mutations are judged against it (`World::judge_intent`): every mutation
//! is sent by the run holding the account's claim, under an open intent of its kind
//! that names the key it changes, and takes effect at most once per intent. (The intent
//! need not be the sender's own: a worker finishes the reactivation a `rollback` asked
//! for under the rollback's intent, which stays open until it is done.)

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use keyturn_journal::{NewEvent, StreamId};
use keyturn_planner::{AccessKeyId, AccountId, UserName};

/// An intent a run committed (a `step-intended` event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// Its number in the seed, in commit order.
    pub seq: u64,
    /// The run that committed it.
    pub run: String,
    /// The step (`create-replacement`, `deactivate`, …).
    pub step: String,
    /// The keys it names (the key and its target).
    pub keys: Vec<AccessKeyId>,
    /// The key its call changes: its target when it has one (the orphan to delete, the
    /// replacement to deliver), else its key.
    pub acts_on: AccessKeyId,
}

impl Ledger {
    /// The campaign in which `run` held the account's claim at `at` (allowing `skew`
    /// on the run's clock), if it did.
    pub fn claim_of(
        &self,
        run: &str,
        account: &AccountId,
        at: DateTime<Utc>,
        skew: chrono::Duration,
    ) -> Option<String> {
        self.claims
            .iter()
            .find(|((_, a), (holder, expires))| {
                a == account && holder == run && *expires + skew >= at
            })
            .map(|((campaign, _), _)| campaign.clone())
    }

    /// The user's open intents in the campaign, oldest first.
    pub fn open_intents(
        &self,
        campaign: &str,
        account: &AccountId,
        user: &UserName,
    ) -> Vec<&Intent> {
        let mut open: Vec<&Intent> = self
            .intents
            .iter()
            .filter(|((c, a, u, _), _)| c == campaign && a == account && u == user)
            .map(|(_, intent)| intent)
            .collect();
        open.sort_by_key(|i| i.seq);
        open
    }
}

/// The claims and intents the journal holds.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// (campaign, account) → the run holding the account's claim, and until when.
    pub claims: BTreeMap<(String, AccountId), (String, DateTime<Utc>)>,
    /// (campaign, account, user, key) → the key's open intent.
    pub intents: BTreeMap<(String, AccountId, UserName, AccessKeyId), Intent>,
    /// The intents a mutation has taken effect under.
    pub spent: BTreeSet<u64>,
    next: u64,
}

impl Ledger {
    /// Reads one committed event of `stream`.
    pub fn record(&mut self, stream: &StreamId, event: &NewEvent) {
        let text = |field: &str| event.payload.get(field).and_then(|v| v.as_str());
        let campaign = stream.campaign().to_owned();
        let account = event
            .account_id
            .as_deref()
            .or_else(|| stream.name().strip_prefix("account/"))
            .and_then(|a| AccountId::new(a).ok());
        match event.event_type.as_str() {
            "claim-taken" => {
                let expires = text("expires_at").and_then(|t| t.parse::<DateTime<Utc>>().ok());
                if let (Some(account), Some(run), Some(expires)) =
                    (account, text("run_id"), expires)
                {
                    self.claims
                        .insert((campaign, account), (run.to_owned(), expires));
                }
            }
            "claim-released" => {
                if let (Some(account), Some(run)) = (account, text("run_id")) {
                    let key = (campaign, account);
                    if self
                        .claims
                        .get(&key)
                        .is_some_and(|(holder, _)| holder == run)
                    {
                        self.claims.remove(&key);
                    }
                }
            }
            "step-intended" => {
                let user = event
                    .user_name
                    .as_deref()
                    .and_then(|u| UserName::new(u).ok());
                let (Some(account), Some(user), Some(step)) = (account, user, text("step")) else {
                    return;
                };
                let keys: Vec<AccessKeyId> = ["key", "target"]
                    .into_iter()
                    .filter_map(|field| text(field).and_then(|k| AccessKeyId::new(k).ok()))
                    .collect();
                let Some(key) = keys.first().cloned() else {
                    return;
                };
                self.next += 1;
                let intent = Intent {
                    seq: self.next,
                    run: event.actor.run_id.clone(),
                    step: step.to_owned(),
                    acts_on: keys.last().cloned().unwrap_or_else(|| key.clone()),
                    keys,
                };
                self.intents.insert((campaign, account, user, key), intent);
            }
            _ => {}
        }
    }
}
