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
//! A run takes the claim with the account's first write ([`Claim::lazily`]): the claim
//! rides as the gate of the account's group commit, written all or none with the first
//! intents, so that no intent (and so no mutation) of the account is written unless the
//! claim is, and the claim costs no write of its own. The reads before that write act
//! on nothing. An account whose run writes nothing is never claimed, and one whose run
//! writes only deferred facts is claimed and released in the write that carries them.
//! Before anything else leaves the process on the account's behalf (a notification),
//! the claim is taken on its own ([`acquire`]).
//!
//! The time-to-live must be longer than the longest step (an AWS call with its SDK
//! retries, or a verification through IAM's propagation delay): the claim is checked
//! before a step and its outcome is appended only while the claim is still held.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use keyturn_journal::{
    Actor, Append, Clock, Deferred, Envelope, EventSchema, Fence, GroupCommit, Journal,
    JournalError, NewEvent, SchemaVersion, StreamHead, StreamId, decode,
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
#[derive(Debug)]
pub struct Claim {
    stream: StreamId,
    /// The claim stream's head this run wrote last (while `gate` is pending: the head
    /// it is taken at).
    head: StreamHead,
    expires_at: DateTime<Utc>,
    lost: bool,
    /// Until the account's first write carried the claim: that write's outcome.
    gate: Option<Deferred>,
    /// The run holding it, for the logs.
    run_id: String,
    /// The account's first write failed on the claim: another run took it first.
    refused: bool,
    /// Where the claim reads the time.
    clock: Arc<dyn Clock>,
    /// When the claim was last taken or renewed, on the monotonic clock: the lease is
    /// judged on both clocks (see [`Claim::remaining`]).
    renewed: tokio::time::Instant,
}

/// Taking a claim either succeeds or names who holds it until when.
#[derive(Debug)]
pub enum Acquired {
    /// This run holds the account.
    Held(Box<Claim>),
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
    clock: &Arc<dyn Clock>,
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
        if let Some((run_id, expires_at)) = held_by_another(&events, &actor.run_id, clock.now())? {
            if !fresh {
                continue;
            }
            return Ok(Acquired::Busy {
                run_id,
                until: expires_at,
            });
        }
        let expires_at = clock.now() + ttl;
        let taking = taking(
            &stream,
            &StreamHead::after(&events),
            account,
            actor,
            expires_at,
        );
        match journal
            .append_at(&taking.stream, &taking.head, taking.events)
            .await
        {
            Ok(head) => {
                tracing::info!(
                    run = %actor.run_id,
                    account = %account,
                    token = head.version(),
                    "claimed the account until {expires_at}"
                );
                return Ok(Acquired::Held(Box::new(Claim {
                    stream,
                    head,
                    expires_at,
                    lost: false,
                    gate: None,
                    run_id: actor.run_id.clone(),
                    refused: false,
                    clock: clock.clone(),
                    renewed: tokio::time::Instant::now(),
                })));
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

/// The run other than `run_id` whose claim the stream `events` ends with, and until when,
/// while it holds.
fn held_by_another(
    events: &[Envelope],
    run_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<(String, DateTime<Utc>)>, JournalError> {
    Ok(match events.last().map(decode::<ClaimEvent>).transpose()? {
        Some(ClaimEvent::ClaimTaken {
            run_id: holder,
            expires_at,
        }) if holder != run_id && expires_at > now => Some((holder, expires_at)),
        _ => None,
    })
}

/// The append that takes the claim at `head`, until `expires_at`.
fn taking(
    stream: &StreamId,
    head: &StreamHead,
    account: &AccountId,
    actor: &Actor,
    expires_at: DateTime<Utc>,
) -> Append {
    let event = ClaimEvent::ClaimTaken {
        run_id: actor.run_id.clone(),
        expires_at,
    };
    Append {
        stream: stream.clone(),
        head: head.clone(),
        events: vec![NewEvent::encode(&event, actor.clone()).with_account(account.as_str())],
    }
}

impl Claim {
    /// The claim of an account to be taken by the account's first write through
    /// `commit` (its [gate](GroupCommit::gate)), at the head `seen` shows (the campaign
    /// read at the start of the run). `None` when `seen` shows another run holding the
    /// account: [`acquire`] it then, which reads it afresh.
    pub fn lazily(
        commit: &GroupCommit,
        campaign: &CampaignName,
        account: &AccountId,
        actor: &Actor,
        ttl: chrono::Duration,
        seen: &[Envelope],
        clock: &Arc<dyn Clock>,
    ) -> Result<Option<Claim>, JournalError> {
        if held_by_another(seen, &actor.run_id, clock.now())?.is_some() {
            return Ok(None);
        }
        let stream = claim_stream(campaign, account)?;
        let head = StreamHead::after(seen);
        let expires_at = clock.now() + ttl;
        let append = taking(&stream, &head, account, actor, expires_at);
        // Every write of the account is fenced by the claim stream: the gate is the
        // fence's own append (its condition is the fence), and moves it to the claim.
        commit.set_fence(Some(Fence::at(&stream, &head)));
        Ok(Some(Claim {
            gate: Some(commit.gate(append)),
            stream,
            head,
            expires_at,
            lost: false,
            run_id: actor.run_id.clone(),
            refused: false,
            clock: clock.clone(),
            renewed: tokio::time::Instant::now(),
        }))
    }

    /// Takes in the outcome of the write that carried the claim, once there is one.
    fn settle(&mut self) {
        let Some(outcome) = self.gate.as_mut().and_then(Deferred::take_outcome) else {
            return;
        };
        self.gate = None;
        match outcome {
            Ok(head) => {
                tracing::info!(
                    run = %self.run_id,
                    account = self.stream.name().trim_start_matches("account/"),
                    token = head.version(),
                    "claimed the account until {} (with its first write)",
                    self.expires_at
                );
                self.head = head;
            }
            Err(e) => {
                tracing::warn!(
                    run = %self.run_id,
                    account = self.stream.name().trim_start_matches("account/"),
                    "the claim was not taken, and nothing of its write was written: {e}"
                );
                self.lost = true;
                self.refused = e.is_conflict() || e.is_fenced();
            }
        }
    }

    /// Who holds the account, when the account's first write found that another run
    /// took the claim first (one read of the claim stream, in that case only).
    pub async fn taken_by(
        &mut self,
        journal: &dyn Journal,
    ) -> Result<Option<(String, DateTime<Utc>)>, JournalError> {
        self.settle();
        if !self.refused {
            return Ok(None);
        }
        held_by_another(
            &journal.read_stream(&self.stream).await?,
            &self.run_id,
            self.clock.now(),
        )
    }

    /// Whether the claim still waits for the account's first write to carry it.
    pub fn is_pending(&mut self) -> bool {
        self.settle();
        self.gate.is_some()
    }

    /// The fencing token: the version of the claim's stream this run last wrote. A run
    /// that takes the account over holds a higher one.
    pub fn token(&self) -> u64 {
        self.head.version()
    }

    /// Until when the claim holds unless renewed.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }

    /// The fence of every write made under this claim: its stream at the head this run
    /// last wrote. Another run's claim moves the stream, and a fenced write then fails.
    pub fn fence(&self) -> Fence {
        Fence::at(&self.stream, &self.head)
    }

    /// How much of the lease is left: the lesser of what the wall clock says (which
    /// jumps forward over a sleeping laptop's sleep, and is what other runs judge the
    /// claim by) and what the monotonic clock says (which an NTP step backwards does
    /// not stretch).
    pub fn remaining(&self, ttl: chrono::Duration) -> chrono::Duration {
        let wall = self.expires_at - self.clock.now();
        let monotonic = chrono::Duration::from_std(self.renewed.elapsed())
            .map_or(chrono::Duration::MIN, |elapsed| ttl - elapsed);
        wall.min(monotonic)
    }

    /// Marks the claim lost: a write under it was refused by its fence.
    pub fn fenced(&mut self) {
        self.lost = true;
    }

    /// Whether the claim could not be taken, or a renewal found the account taken over
    /// (then it stays lost).
    pub fn is_lost(&mut self) -> bool {
        self.settle();
        self.lost
    }

    /// Renews the claim when less than half of `ttl` is left. `Ok(false)`: the claim was
    /// lost to another run (now or at an earlier call), and this run must stop acting on
    /// the account. A claim still waiting for the account's first write (`commit`, the
    /// group commit whose gate it is) counts as held: that write carries it or fails;
    /// when it has waited for half of `ttl`, it is taken back and written on its own.
    pub async fn keep(
        &mut self,
        journal: &dyn Journal,
        actor: &Actor,
        ttl: chrono::Duration,
        commit: Option<&GroupCommit>,
    ) -> Result<bool, JournalError> {
        self.settle();
        if self.lost {
            return Ok(false);
        }
        self.renew_if_due(journal, actor, ttl, commit).await
    }

    /// [`keep`](Self::keep), right before an AWS mutation: a claim still waiting for the
    /// account's first write is written first (with whatever is queued), so that no
    /// mutation is ever sent by a run whose claim the journal does not hold. (A worker
    /// finishing the reactivation a `rollback` asked for acts under the rollback's
    /// intent, with no write of its own before the call.)
    pub async fn hold(
        &mut self,
        journal: &dyn Journal,
        actor: &Actor,
        ttl: chrono::Duration,
        commit: &GroupCommit,
    ) -> Result<bool, JournalError> {
        self.settle();
        if self.lost {
            return Ok(false);
        }
        if let Some(gate) = self.gate.as_mut() {
            commit.write_gate().await;
            gate.wait().await;
            self.settle();
            if self.lost {
                return Ok(false);
            }
        }
        self.renew_if_due(journal, actor, ttl, Some(commit)).await
    }

    async fn renew_if_due(
        &mut self,
        journal: &dyn Journal,
        actor: &Actor,
        ttl: chrono::Duration,
        commit: Option<&GroupCommit>,
    ) -> Result<bool, JournalError> {
        // Renewed once half of the lease is gone, and always while less than one AWS
        // operation's timeout is left: a mutation that starts may then finish, at the
        // latest, before another run could take the account over.
        let remaining = self.remaining(ttl);
        let operation = chrono::Duration::from_std(crate::port::OPERATION_TIMEOUT)
            .unwrap_or(chrono::Duration::MAX);
        if remaining > ttl / 2 && remaining > operation {
            return Ok(true);
        }
        if let Some(gate) = self.gate.as_mut() {
            // Written now, through the group (with whatever is queued on its promise,
            // all or none), then renewed.
            if let Some(commit) = commit {
                commit.write_gate().await;
            }
            gate.wait().await;
            self.settle();
            if self.lost {
                return Ok(false);
            }
        }
        let expires_at = self.clock.now() + ttl;
        let renewed = tokio::time::Instant::now();
        let event = ClaimEvent::ClaimTaken {
            run_id: actor.run_id.clone(),
            expires_at,
        };
        let events = vec![NewEvent::encode(&event, actor.clone())];
        // Through the account's group, when there is one: the renewal then moves the
        // group's fence under its writer lock, never racing a write that carries it.
        let renewal = match commit {
            Some(commit) => commit.append_at(&self.stream, &self.head, events).await,
            None => journal.append_at(&self.stream, &self.head, events).await,
        };
        match renewal {
            Ok(head) => {
                tracing::debug!(
                    run = %actor.run_id,
                    stream = %self.stream,
                    token = head.version(),
                    "renewed the claim until {expires_at}"
                );
                self.head = head;
                self.expires_at = expires_at;
                self.renewed = renewed;
                Ok(true)
            }
            Err(e) if e.is_conflict() || e.is_fenced() => {
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
    /// ([`keyturn_journal::GroupCommit::flush`], which makes it the continuation of a
    /// claim still pending); `None` when the claim was lost.
    pub fn release_append(mut self, actor: &Actor) -> Option<Append> {
        self.settle();
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

    fn clock() -> Arc<dyn Clock> {
        Arc::new(keyturn_journal::SystemClock)
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
        match acquire(
            journal,
            &campaign,
            &account,
            &actor(run),
            ttl,
            None,
            &clock(),
        )
        .await
        .unwrap()
        {
            Acquired::Held(claim) => Ok(*claim),
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
        assert!(a.keep(&journal, &a_actor, ttl, None).await.unwrap());
        assert_eq!(a.token(), 1, "plenty of time left: nothing written");
        // A claim taken for one second is renewed for a minute at once.
        let mut short = {
            let journal = MemoryJournal::new();
            let claim = take(&journal, "run-a", chrono::Duration::seconds(1))
                .await
                .unwrap();
            (journal, claim)
        };
        assert!(short.1.keep(&short.0, &a_actor, ttl, None).await.unwrap());
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
        assert!(!a.keep(&journal, &a_actor, ttl, None).await.unwrap());
        assert!(a.is_lost());
        assert!(!a.keep(&journal, &a_actor, ttl, None).await.unwrap());
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
            &clock(),
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
            &clock(),
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
            &clock(),
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

    fn user_append(head: &StreamHead, run: &str) -> (StreamId, StreamHead, Vec<NewEvent>) {
        let event = ClaimEvent::ClaimReleased {
            run_id: run.to_owned(),
        };
        (
            StreamId::new("c1", "user/222222222222/alice").unwrap(),
            head.clone(),
            vec![NewEvent::encode(&event, actor(run))],
        )
    }

    #[tokio::test]
    async fn a_lazy_claim_is_written_before_a_mutation_that_no_write_preceded() {
        // A worker finishing a rollback's reactivation acts under the rollback's intent:
        // its first act on the account is the AWS call, with no write of its own before.
        let journal = std::sync::Arc::new(MemoryJournal::new());
        let (campaign, account) = names();
        let stream = claim_stream(&campaign, &account).unwrap();
        let ttl = chrono::Duration::seconds(60);
        let lazily = |commit: &GroupCommit, run: &str| {
            Claim::lazily(commit, &campaign, &account, &actor(run), ttl, &[], &clock())
                .unwrap()
                .unwrap()
        };
        // Two runs read the campaign at the same time; neither has written anything.
        let a_commit = GroupCommit::new(journal.clone(), std::time::Duration::ZERO);
        let b_commit = GroupCommit::new(journal.clone(), std::time::Duration::ZERO);
        let mut a = lazily(&a_commit, "run-a");
        let mut b = lazily(&b_commit, "run-b");

        // Before its call, A's claim is written: the journal holds it.
        assert!(
            a.hold(journal.as_ref(), &actor("run-a"), ttl, &a_commit)
                .await
                .unwrap()
        );
        assert!(!a.is_pending());
        let claims = journal.read_stream(&stream).await.unwrap();
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].actor.run_id, "run-a");
        // B's claim cannot be written over it: B does not act.
        assert!(
            !b.hold(journal.as_ref(), &actor("run-b"), ttl, &b_commit)
                .await
                .unwrap()
        );
        assert!(b.is_lost());
        assert_eq!(journal.read_stream(&stream).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_lazy_claim_is_written_with_the_first_write_or_nothing_is() {
        let journal = std::sync::Arc::new(MemoryJournal::new());
        let (campaign, account) = names();
        let stream = claim_stream(&campaign, &account).unwrap();
        let ttl = chrono::Duration::seconds(60);
        let lazily = |commit: &GroupCommit, run: &str, seen: &[Envelope]| {
            Claim::lazily(
                commit,
                &campaign,
                &account,
                &actor(run),
                ttl,
                seen,
                &clock(),
            )
            .unwrap()
        };

        // Pending, and nothing written, until the account's first write carries it.
        let a_commit = GroupCommit::new(journal.clone(), std::time::Duration::ZERO);
        let mut a = lazily(&a_commit, "run-a", &[]).unwrap();
        assert!(a.is_pending());
        assert!(
            a.keep(journal.as_ref(), &actor("run-a"), ttl, Some(&a_commit))
                .await
                .unwrap()
        );
        assert!(journal.read_stream(&stream).await.unwrap().is_empty());
        // Run B read the campaign at the same time, and queues its claim too.
        let b_commit = GroupCommit::new(journal.clone(), std::time::Duration::ZERO);
        let mut b = lazily(&b_commit, "run-b", &[]).unwrap();

        let (user, head, events) = user_append(&StreamHead::empty(), "run-a");
        let written = a_commit.append_at(&user, &head, events).await.unwrap();
        assert!(!a.is_pending() && !a.is_lost());
        assert_eq!(a.token(), 1, "taken in the same write");
        let claims = journal.read_stream(&stream).await.unwrap();
        assert_eq!(claims.len(), 1);
        let users = journal.read_stream(&user).await.unwrap();
        assert_eq!(claims[0].recorded_at, users[0].recorded_at, "one write");

        // B's first write fails on its claim, whose head moved: nothing of it is written,
        // and its claim is lost.
        let (user, head, events) = user_append(&written, "run-b");
        let refused = b_commit.append_at(&user, &head, events).await.unwrap_err();
        assert!(
            refused.is_fenced(),
            "the claim stream moved under B's fence: {refused}"
        );
        assert!(b.is_lost());
        let holder = b.taken_by(journal.as_ref()).await.unwrap();
        assert!(
            matches!(&holder, Some((run, until)) if run == "run-a" && *until == a.expires_at()),
            "{holder:?}"
        );
        assert!(a.taken_by(journal.as_ref()).await.unwrap().is_none());
        assert_eq!(journal.read_stream(&user).await.unwrap().len(), 1);
        // An append queued on the promise of B's claim, after its write went out, is not
        // written either: B's group writes nothing more.
        let other = StreamId::new("c1", "user/222222222222/bob").unwrap();
        let (_, _, events) = user_append(&StreamHead::empty(), "run-b");
        let late = b_commit
            .append_at(&other, &StreamHead::empty(), events)
            .await
            .unwrap_err();
        assert!(late.is_fenced(), "{late}");
        assert!(journal.read_stream(&other).await.unwrap().is_empty());
        assert_eq!(journal.read_stream(&stream).await.unwrap().len(), 1);

        // Seen held by a live claim of another run: not taken lazily (acquire reads it).
        let seen = journal.read_stream(&stream).await.unwrap();
        let c_commit = GroupCommit::new(journal.clone(), std::time::Duration::ZERO);
        assert!(lazily(&c_commit, "run-c", &seen).is_none());

        // A's release; then a claim that nothing wrote for half its time is written by
        // `keep` through its group, then renewed.
        a.release(journal.as_ref(), &actor("run-a")).await;
        let seen = journal.read_stream(&stream).await.unwrap();
        let short = chrono::Duration::milliseconds(40);
        let d_commit = GroupCommit::new(journal.clone(), std::time::Duration::ZERO);
        let mut d = Claim::lazily(
            &d_commit,
            &campaign,
            &account,
            &actor("run-d"),
            short,
            &seen,
            &clock(),
        )
        .unwrap()
        .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        assert!(
            d.keep(journal.as_ref(), &actor("run-d"), short, Some(&d_commit))
                .await
                .unwrap()
        );
        assert!(!d.is_pending());
        assert_eq!(d.token(), 4, "taken at 3, renewed at 4");
        assert!(d.expires_at() > Utc::now() + short / 2);
        assert!(d_commit.flush(None).await.is_none(), "its gate was written");
        d.release(journal.as_ref(), &actor("run-d")).await;

        // The same while another user's append waits in the group (for a member that
        // does not append): `keep` writes the gate with it, all in one write, and the
        // waiting append gets its outcome from that write.
        let seen = journal.read_stream(&stream).await.unwrap();
        let f_commit = GroupCommit::new(journal.clone(), std::time::Duration::from_secs(30));
        let mut f = Claim::lazily(
            &f_commit,
            &campaign,
            &account,
            &actor("run-f"),
            short,
            &seen,
            &clock(),
        )
        .unwrap()
        .unwrap();
        let (_waiting, _idle) = (f_commit.join(), f_commit.join());
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        let carol = StreamId::new("c1", "user/222222222222/carol").unwrap();
        let (_, empty, events) = user_append(&StreamHead::empty(), "run-f");
        let started = std::time::Instant::now();
        let (appended, kept) = tokio::join!(f_commit.append_at(&carol, &empty, events), async {
            // Once the append is queued, waiting for the idle member.
            tokio::task::yield_now().await;
            f.keep(journal.as_ref(), &actor("run-f"), short, Some(&f_commit))
                .await
        });
        assert!(kept.unwrap());
        assert_eq!(appended.unwrap().version(), 1);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "the append did not wait out the linger"
        );
        assert_eq!(f.token(), 7, "taken at 6 with carol's append, renewed at 7");
        let claims = journal.read_stream(&stream).await.unwrap();
        let carols = journal.read_stream(&carol).await.unwrap();
        assert_eq!(claims[5].recorded_at, carols[0].recorded_at, "one write");
        assert!(f_commit.flush(None).await.is_none(), "nothing left queued");
        f.release(journal.as_ref(), &actor("run-f")).await;

        // Nothing to write at the end: the claim is never taken.
        let seen = journal.read_stream(&stream).await.unwrap();
        let e_commit = GroupCommit::new(journal.clone(), std::time::Duration::ZERO);
        let mut e = lazily(&e_commit, "run-e", &seen).unwrap();
        assert!(e.is_pending());
        assert!(e_commit.ungate());
        assert!(e_commit.flush(None).await.is_none());
        assert_eq!(journal.read_stream(&stream).await.unwrap(), seen);
    }

    /// A wall clock a test can move on its own: virtual time (paused tokio) plus a jump.
    #[derive(Debug)]
    struct JumpingClock {
        start: tokio::time::Instant,
        base: DateTime<Utc>,
        jump: std::sync::Mutex<chrono::Duration>,
    }

    impl Clock for JumpingClock {
        fn now(&self) -> DateTime<Utc> {
            let elapsed = chrono::Duration::from_std(self.start.elapsed()).unwrap();
            self.base + elapsed + *self.jump.lock().unwrap()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_lease_is_judged_on_both_clocks_before_acting() {
        let journal = MemoryJournal::new();
        let (campaign, account) = names();
        let ttl = chrono::Duration::seconds(120);
        let jumping = Arc::new(JumpingClock {
            start: tokio::time::Instant::now(),
            base: Utc::now(),
            jump: std::sync::Mutex::new(chrono::Duration::zero()),
        });
        let clock: Arc<dyn Clock> = jumping.clone();
        let take = |run: &'static str| {
            let (journal, campaign, account, clock) = (&journal, &campaign, &account, &clock);
            async move {
                match acquire(journal, campaign, account, &actor(run), ttl, None, clock)
                    .await
                    .unwrap()
                {
                    Acquired::Held(claim) => Some(*claim),
                    Acquired::Busy { .. } => None,
                }
            }
        };

        // An NTP step backwards does not stretch the lease: after 100 s on the monotonic
        // clock only 20 s are left, whatever the wall clock says, and `keep` renews.
        let mut a = take("run-a").await.unwrap();
        *jumping.jump.lock().unwrap() = chrono::Duration::minutes(-10);
        tokio::time::advance(std::time::Duration::from_secs(100)).await;
        assert!(a.remaining(ttl) <= chrono::Duration::seconds(20));
        assert!(a.keep(&journal, &actor("run-a"), ttl, None).await.unwrap());
        assert_eq!(a.token(), 2, "renewed");

        // A laptop that slept 10 minutes: the monotonic clock barely moved, but the wall
        // clock (which other runs judge the claim by) jumped past the expiry, and another
        // run took the account over. Before acting, `keep` sees the lease gone, tries to
        // renew, finds the takeover and stops.
        *jumping.jump.lock().unwrap() = chrono::Duration::minutes(10);
        let b = take("run-b")
            .await
            .expect("run-b takes the expired claim over");
        assert!(b.token() > a.token());
        assert!(a.remaining(ttl) < chrono::Duration::zero());
        assert!(!a.keep(&journal, &actor("run-a"), ttl, None).await.unwrap());
        assert!(a.is_lost());
    }
}
