//! Account claims: at most one worker acts on an account of a campaign at a time.
//!
//! A claim is an event in the account's own stream of the campaign (`account/<id>`),
//! appended at the stream's expected version, so two workers can never both take it.
//! It expires unless renewed. The claim's stream version is the fencing token: every
//! renewal is an append at the head this run last wrote (no read first), so it fails
//! the moment another run took the account over. A worker calls [`Claim::keep`] before every
//! append to the account's user streams (and so before every AWS mutation, each of
//! which follows its intent's append): it renews once half of the time is gone, and
//! once a renewal conflicts the claim is lost for good and the worker stops working on
//! the account. A worker that dies simply stops renewing; another takes the account
//! over when the claim expires (with a higher fencing token) and resumes from the
//! journal.
//!
//! The time-to-live must be longer than the longest step (an AWS call with its SDK
//! retries, or a verification through IAM's propagation delay): the claim is checked
//! before a step and its outcome is appended only while the claim is still held.

use chrono::{DateTime, Utc};
use keyturn_journal::{
    Actor, Append, Envelope, EventSchema, Journal, JournalError, NewEvent, SchemaVersion,
    StreamHead, StreamId, decode,
};
use keyturn_planner::{AccountId, CampaignName};
use serde::{Deserialize, Serialize};

/// Claim events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ClaimEvent {
    /// `run_id` holds the account until `expires_at`.
    ClaimTaken {
        run_id: String,
        expires_at: DateTime<Utc>,
    },
    /// `run_id` let the account go.
    ClaimReleased { run_id: String },
}

impl EventSchema for ClaimEvent {
    const CURRENT: SchemaVersion = SchemaVersion { major: 1, minor: 0 };

    fn known_types() -> &'static [&'static str] {
        &["claim-taken", "claim-released"]
    }

    fn decode(
        event_type: &str,
        _version: SchemaVersion,
        payload: &serde_json::Value,
    ) -> Result<Self, String> {
        let mut value = payload.clone();
        value
            .as_object_mut()
            .ok_or("payload is not an object")?
            .insert(
                "type".to_owned(),
                serde_json::Value::String(event_type.to_owned()),
            );
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    fn encode(&self) -> (String, serde_json::Value) {
        let mut value = serde_json::to_value(self).expect("claim events serialise");
        let kind = value
            .as_object_mut()
            .and_then(|m| m.remove("type"))
            .and_then(|t| t.as_str().map(str::to_owned));
        (kind.unwrap_or_default(), value)
    }
}

/// The stream of an account's claims in a campaign.
pub fn claim_stream(
    campaign: &CampaignName,
    account: &AccountId,
) -> Result<StreamId, JournalError> {
    StreamId::new(campaign.as_str(), format!("account/{account}"))
}

/// The account of a claim stream's name (`account/<id>`).
pub fn parse_claim_stream(name: &str) -> Option<AccountId> {
    AccountId::new(name.strip_prefix("account/")?).ok()
}

/// A claim this run holds.
#[derive(Debug, Clone)]
pub struct Claim {
    stream: StreamId,
    head: StreamHead,
    expires_at: DateTime<Utc>,
    lost: bool,
}

/// Taking a claim either succeeds or names who holds it until when.
#[derive(Debug)]
pub enum Acquired {
    /// This run holds the account.
    Held(Claim),
    /// Another run holds it.
    Busy {
        /// The other run.
        run_id: String,
        /// Until when, unless renewed.
        until: DateTime<Utc>,
    },
}

/// Claims one account for `ttl`.
///
/// `seen` is the claim stream as the caller already read it (the campaign read at the
/// start of a run), or `None` to read it now. What was seen may be stale: the append is
/// conditional on the stream's head, so a claim written since makes it conflict, and
/// the stream is then read afresh. A claim that looked busy is read afresh too before
/// the account is reported busy.
pub async fn acquire(
    journal: &dyn Journal,
    campaign: &CampaignName,
    account: &AccountId,
    actor: &Actor,
    ttl: chrono::Duration,
    seen: Option<&[Envelope]>,
) -> Result<Acquired, JournalError> {
    let stream = claim_stream(campaign, account)?;
    // Three reads of the stream at most, after the look at what was seen.
    let attempts = 3 + usize::from(seen.is_some());
    let mut seen = seen.map(<[Envelope]>::to_vec);
    for _ in 0..attempts {
        let (events, fresh) = match seen.take() {
            Some(events) => (events, false),
            None => (journal.read_stream(&stream).await?, true),
        };
        if let Some(last) = events.last()
            && let ClaimEvent::ClaimTaken { run_id, expires_at } = decode::<ClaimEvent>(last)?
            && run_id != actor.run_id
            && expires_at > Utc::now()
        {
            if !fresh {
                continue;
            }
            return Ok(Acquired::Busy {
                run_id,
                until: expires_at,
            });
        }
        let expires_at = Utc::now() + ttl;
        let event = ClaimEvent::ClaimTaken {
            run_id: actor.run_id.clone(),
            expires_at,
        };
        match journal
            .append_at(
                &stream,
                &StreamHead::after(&events),
                vec![NewEvent::encode(&event, actor.clone()).with_account(account.as_str())],
            )
            .await
        {
            Ok(head) => {
                tracing::info!(
                    run = %actor.run_id,
                    account = %account,
                    token = head.version(),
                    "claimed the account until {expires_at}"
                );
                return Ok(Acquired::Held(Claim {
                    stream,
                    head,
                    expires_at,
                    lost: false,
                }));
            }
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(JournalError::Unavailable {
        backend: journal.describe(),
        detail: format!("the claim on account {account} keeps changing"),
    })
}

impl Claim {
    /// The fencing token: the version of the claim's stream this run last wrote. A run
    /// that takes the account over holds a higher one.
    pub fn token(&self) -> u64 {
        self.head.version()
    }

    /// Until when the claim holds unless renewed.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }

    /// Whether a renewal found the account taken over (then it stays lost).
    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// Renews the claim when less than half of `ttl` is left. `Ok(false)`: the claim was
    /// lost to another run (now or at an earlier call), and this run must stop acting on
    /// the account.
    pub async fn keep(
        &mut self,
        journal: &dyn Journal,
        actor: &Actor,
        ttl: chrono::Duration,
    ) -> Result<bool, JournalError> {
        if self.lost {
            return Ok(false);
        }
        if self.expires_at - Utc::now() > ttl / 2 {
            return Ok(true);
        }
        let expires_at = Utc::now() + ttl;
        let event = ClaimEvent::ClaimTaken {
            run_id: actor.run_id.clone(),
            expires_at,
        };
        match journal
            .append_at(
                &self.stream,
                &self.head,
                vec![NewEvent::encode(&event, actor.clone())],
            )
            .await
        {
            Ok(head) => {
                tracing::debug!(
                    run = %actor.run_id,
                    stream = %self.stream,
                    token = head.version(),
                    "renewed the claim until {expires_at}"
                );
                self.head = head;
                self.expires_at = expires_at;
                Ok(true)
            }
            Err(e) if e.is_conflict() => {
                tracing::warn!(
                    run = %actor.run_id,
                    stream = %self.stream,
                    "the claim was taken over by another run: stopping work on the account"
                );
                self.lost = true;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Lets the account go (best effort: an expired claim frees itself). A lost claim
    /// is someone else's now and is left alone.
    pub async fn release(self, journal: &dyn Journal, actor: &Actor) {
        let Some(release) = self.release_append(actor) else {
            return;
        };
        if let Err(e) = journal
            .append_at(&release.stream, &release.head, release.events)
            .await
        {
            tracing::warn!("could not release the claim on {}: {e}", release.stream);
        }
    }

    /// The append that lets the account go, for a caller that writes it with others
    /// ([`keyturn_journal::GroupCommit::flush`]); `None` when the claim was lost.
    pub fn release_append(self, actor: &Actor) -> Option<Append> {
        if self.lost {
            return None;
        }
        let event = ClaimEvent::ClaimReleased {
            run_id: actor.run_id.clone(),
        };
        Some(Append {
            stream: self.stream,
            head: self.head,
            events: vec![NewEvent::encode(&event, actor.clone())],
        })
    }
}

#[cfg(test)]
mod tests {
    use keyturn_journal::MemoryJournal;

    use super::*;

    fn actor(run: &str) -> Actor {
        Actor {
            caller_arn: "arn:aws:iam::111111111111:user/ops".to_owned(),
            run_id: run.to_owned(),
            host: "test".to_owned(),
        }
    }

    fn names() -> (CampaignName, AccountId) {
        (
            CampaignName::new("c1").unwrap(),
            AccountId::new("222222222222").unwrap(),
        )
    }

    async fn take(
        journal: &MemoryJournal,
        run: &str,
        ttl: chrono::Duration,
    ) -> Result<Claim, (String, DateTime<Utc>)> {
        let (campaign, account) = names();
        match acquire(journal, &campaign, &account, &actor(run), ttl, None)
            .await
            .unwrap()
        {
            Acquired::Held(claim) => Ok(claim),
            Acquired::Busy { run_id, until } => Err((run_id, until)),
        }
    }

    async fn claim_events(journal: &MemoryJournal) -> Vec<(String, ClaimEvent)> {
        let (campaign, account) = names();
        let stream = claim_stream(&campaign, &account).unwrap();
        journal
            .read_stream(&stream)
            .await
            .unwrap()
            .iter()
            .map(|e| (e.actor.run_id.clone(), decode::<ClaimEvent>(e).unwrap()))
            .collect()
    }

    #[tokio::test]
    async fn a_held_claim_keeps_other_runs_out_until_it_is_released() {
        let journal = MemoryJournal::new();
        let ttl = chrono::Duration::seconds(60);
        let a = take(&journal, "run-a", ttl).await.unwrap();
        assert_eq!(a.token(), 1);
        let (holder, until) = take(&journal, "run-b", ttl).await.unwrap_err();
        assert_eq!((holder.as_str(), until), ("run-a", a.expires_at()));
        a.release(&journal, &actor("run-a")).await;
        let b = take(&journal, "run-b", ttl).await.unwrap();
        assert_eq!(b.token(), 3, "claim-taken, claim-released, claim-taken");
    }

    #[tokio::test]
    async fn keep_renews_only_once_half_of_the_time_is_gone() {
        let journal = MemoryJournal::new();
        let a_actor = actor("run-a");
        let ttl = chrono::Duration::seconds(60);
        let mut a = take(&journal, "run-a", ttl).await.unwrap();
        assert!(a.keep(&journal, &a_actor, ttl).await.unwrap());
        assert_eq!(a.token(), 1, "plenty of time left: nothing written");
        // A claim taken for one second is renewed for a minute at once.
        let mut short = {
            let journal = MemoryJournal::new();
            let claim = take(&journal, "run-a", chrono::Duration::seconds(1))
                .await
                .unwrap();
            (journal, claim)
        };
        assert!(short.1.keep(&short.0, &a_actor, ttl).await.unwrap());
        assert_eq!(short.1.token(), 2, "renewed");
        assert!(short.1.expires_at() > Utc::now() + chrono::Duration::seconds(50));
        short.1.release(&short.0, &a_actor).await;
        assert!(matches!(
            claim_events(&short.0).await.last(),
            Some((_, ClaimEvent::ClaimReleased { .. }))
        ));
        a.release(&journal, &a_actor).await;
    }

    #[tokio::test]
    async fn an_expired_claim_is_taken_over_with_a_higher_token_and_the_old_holder_stops() {
        let journal = MemoryJournal::new();
        let (a_actor, b_actor) = (actor("run-a"), actor("run-b"));
        // run-a's claim expires at once (it died, or stalled past its time to live).
        let mut a = take(&journal, "run-a", chrono::Duration::zero())
            .await
            .unwrap();
        let ttl = chrono::Duration::seconds(60);
        let b = take(&journal, "run-b", ttl).await.unwrap();
        assert!(b.token() > a.token(), "the fencing token grows");

        // run-a wakes up: its renewal conflicts, and the claim stays lost.
        assert!(!a.keep(&journal, &a_actor, ttl).await.unwrap());
        assert!(a.is_lost());
        assert!(!a.keep(&journal, &a_actor, ttl).await.unwrap());
        // Its release leaves run-b's claim alone.
        a.release(&journal, &a_actor).await;
        let events = claim_events(&journal).await;
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(matches!(
            &events[1],
            (run, ClaimEvent::ClaimTaken { .. }) if run == "run-b"
        ));
        let (holder, _) = take(&journal, "run-c", ttl).await.unwrap_err();
        assert_eq!(holder, "run-b");
        b.release(&journal, &b_actor).await;
    }

    #[tokio::test]
    async fn what_a_run_saw_earlier_is_checked_against_the_journal() {
        let journal = MemoryJournal::new();
        let (campaign, account) = names();
        let ttl = chrono::Duration::seconds(60);
        let stream = claim_stream(&campaign, &account).unwrap();
        let seen_empty = journal.read_stream(&stream).await.unwrap();
        // run-a takes the account after run-b looked: run-b's append conflicts, it reads
        // the stream afresh and finds the account busy.
        let a = take(&journal, "run-a", ttl).await.unwrap();
        let busy = acquire(
            &journal,
            &campaign,
            &account,
            &actor("run-b"),
            ttl,
            Some(&seen_empty),
        )
        .await
        .unwrap();
        assert!(
            matches!(&busy, Acquired::Busy { run_id, .. } if run_id == "run-a"),
            "{busy:?}"
        );
        // run-b saw run-a's claim, which run-a released since: run-b reads afresh and
        // takes the account instead of reporting it busy.
        let seen_busy = journal.read_stream(&stream).await.unwrap();
        a.release(&journal, &actor("run-a")).await;
        let b = acquire(
            &journal,
            &campaign,
            &account,
            &actor("run-b"),
            ttl,
            Some(&seen_busy),
        )
        .await
        .unwrap();
        let Acquired::Held(b) = b else {
            panic!("run-b should hold the account: {b:?}")
        };
        assert_eq!(b.token(), 3, "claim-taken, claim-released, claim-taken");
        // What was seen is current: the claim is appended at its head.
        let seen_now = journal.read_stream(&stream).await.unwrap();
        b.release(&journal, &actor("run-b")).await;
        let seen_released = journal.read_stream(&stream).await.unwrap();
        assert_eq!(seen_released.len(), seen_now.len() + 1);
        let c = acquire(
            &journal,
            &campaign,
            &account,
            &actor("run-c"),
            ttl,
            Some(&seen_released),
        )
        .await
        .unwrap();
        assert!(
            matches!(&c, Acquired::Held(claim) if claim.token() == 5),
            "{c:?}"
        );
    }

    #[tokio::test]
    async fn a_run_may_take_its_own_claim_again() {
        let journal = MemoryJournal::new();
        let ttl = chrono::Duration::seconds(60);
        let first = take(&journal, "run-a", ttl).await.unwrap();
        let again = take(&journal, "run-a", ttl).await.unwrap();
        assert!(again.token() > first.token());
    }
}
