//! `keyturn run`: the drive loop. For every user of every account in scope:
//! load → fold → decide → act → append, until each key waits for a gate or is settled.
//!
//! Every mutation is bracketed by an intent event before the AWS call and an outcome
//! event after it. Appends are conditional on the user stream's version; a conflict
//! means someone else wrote, so the user is reloaded and decided again. Accounts are
//! claimed (see `claims`) so that two workers never act on the same account.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use keyturn_journal::{Actor, Clock, Deferred, GroupCommit, Journal, StreamId, SystemClock};
use keyturn_planner::inventory::{KeyRecord, KeyStatus};
use keyturn_planner::rotation::{
    Action, Decision, FreshUse, ObservedKey, Path, RotationEvent, Step, classify, decide, enroll,
};
use keyturn_planner::{AccessKeyId, AccountId, CampaignName, Policy, UserName};

use super::claims::{self, Acquired, Claim};
use super::codec::{rotation_event, user_stream};
use super::{Campaign, CampaignState, UserEntry, load_state, secret_name};
use crate::error::{AccountError, AwsFailure, WorkerError};
use crate::failpoints::{self as fp, Boundary};
use crate::iam::{self, Listing, UserKeys};
use crate::inventory;
use crate::org::OrgAccount;
use crate::port::{AccountApi, Cloud};
use crate::secret::NewAccessKey;
use crate::steps::{self, Deletion, Delivery, DeliveryMeta, SecretTarget, Voiding};
use crate::telemetry::{self, Progress};

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// How many accounts are worked at once.
    pub concurrency: usize,
    /// How long an account claim lasts unless renewed.
    pub claim_ttl: chrono::Duration,
    /// How long to retry verifying a new key through IAM's propagation delay.
    pub verify_wait: Duration,
    /// How long a user's append waits at most for the account's other users to append
    /// too, so that their appends share one journal write (see `GroupCommit`).
    pub group_linger: Duration,
    /// Set (e.g. on Ctrl-C) to stop between steps: no new step starts, a step under
    /// way finishes and is recorded.
    pub stop: Arc<AtomicBool>,
    /// Told how many accounts there are and when each is done, and which keys were acted on.
    pub progress: Option<Arc<dyn Progress>>,
    /// Where the run reads the time (the system clock; a virtual one in the simulator).
    pub clock: Arc<dyn Clock>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            concurrency: 16,
            claim_ttl: chrono::Duration::seconds(120),
            verify_wait: Duration::from_secs(30),
            group_linger: Duration::from_millis(200),
            stop: Arc::new(AtomicBool::new(false)),
            progress: None,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Something the run did to a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// The account.
    pub account: AccountId,
    /// The user.
    pub user: UserName,
    /// The key.
    pub key: AccessKeyId,
    /// What happened, in words ("replacement AKIA… created, delivered and verified").
    pub what: String,
}

/// A key left waiting for a gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The account.
    pub account: AccountId,
    /// The user.
    pub user: UserName,
    /// The key.
    pub key: AccessKeyId,
    /// When it can move (None: when another key frees the slot).
    pub until: Option<DateTime<Utc>>,
    /// Why.
    pub reason: String,
}

/// An account the run gave up, and why; the other accounts went on.
#[derive(Debug)]
pub struct FailedAccount {
    /// The account.
    pub account: OrgAccount,
    /// Why.
    pub error: AccountError,
}

/// What a run did and left.
#[derive(Debug, Default)]
pub struct RunSummary {
    /// Actions taken, in order per user.
    pub done: Vec<Done>,
    /// Keys waiting for a gate.
    pub waiting: Vec<Waiting>,
    /// Accounts that could not be read or worked.
    pub failed_accounts: Vec<FailedAccount>,
    /// Accounts another worker holds, and until when.
    pub busy_accounts: Vec<(AccountId, String, DateTime<Utc>)>,
    /// The campaign as this run leaves it: the state it loaded with its own appends
    /// folded in (at the times this process made them, within milliseconds of the
    /// journal's `recorded_at`), so that the caller need not read the whole campaign
    /// again. `None`
    /// when the run cannot know it exactly, because it met another worker (a busy
    /// account, a conflicting append, a lost claim) or a failure: read the journal then.
    /// Its `claims` leave out the accounts this run claimed (their heads moved).
    pub state: Option<CampaignState>,
}

impl RunSummary {
    /// The earliest time a waiting key can move.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.waiting.iter().filter_map(|w| w.until).min()
    }
}

/// Everything one run needs, shared by its account tasks.
struct Ctx<'a> {
    journal: Arc<dyn Journal>,
    cloud: &'a dyn Cloud,
    campaign: &'a Campaign,
    actor: Actor,
    caller_key: Option<AccessKeyId>,
    options: &'a RunOptions,
    /// The policy's `[notify]` channels, when it has the section.
    notifier: Option<crate::notify::Notifier>,
}

/// Advances every key of the campaign as far as its gates allow.
#[tracing::instrument(
    name = "keyturn.run",
    skip_all,
    fields(campaign = %name, run.id = %actor.run_id, accounts = tracing::field::Empty)
)]
pub async fn run(
    journal: Arc<dyn Journal>,
    cloud: &dyn Cloud,
    name: &CampaignName,
    actor: Actor,
    options: &RunOptions,
) -> Result<RunSummary, WorkerError> {
    let mut state = load_state(journal.as_ref(), name).await?;
    let policy: &Policy = &state.campaign.policy;
    // Before the organization is read: a webhook URL variable that is not set refuses
    // the run.
    let notifier = match (&policy.notify, cloud.sdk_config()) {
        (Some(notify), Some(sdk)) => Some(crate::notify::Notifier::from_policy(notify, sdk)?),
        (Some(_), None) => {
            return Err(WorkerError::Rejected(
                "this campaign's policy has [notify], which needs the AWS SDK".to_owned(),
            ));
        }
        (None, _) => None,
    };
    // Keys are listed only for users the campaign may act on (the credential report
    // says which) and for users it is working on; see `iam::Listing`.
    let in_flight: BTreeSet<(AccountId, UserName)> = state
        .users
        .iter()
        .filter(|(_, entry)| entry.state.keys.values().any(|k| !k.phase.is_terminal()))
        .map(|(user, _)| user.clone())
        .collect();
    let listing = Listing::Actionable {
        rules: &policy.rotation,
        in_flight: &in_flight,
    };
    let inventory = inventory::collect_with_progress(
        cloud,
        &policy.scope,
        options.concurrency,
        listing,
        options.progress.as_deref(),
        options.clock.as_ref(),
    )
    .await?;
    tracing::Span::current().record("accounts", inventory.accounts.len());
    if let Some(progress) = &options.progress {
        progress.phase("run", inventory.accounts.len());
    }
    let caller_key = cloud.caller_key().await;
    let ctx = Ctx {
        journal,
        cloud,
        campaign: &state.campaign,
        actor,
        caller_key,
        options,
        notifier,
    };

    let mut summary = RunSummary {
        failed_accounts: inventory
            .failures
            .iter()
            .map(|f| FailedAccount {
                account: f.account.clone(),
                error: AccountError::Aws(f.failure.clone()),
            })
            .collect(),
        ..RunSummary::default()
    };
    let outcomes: Vec<AccountOutcome> = futures::stream::iter(&inventory.accounts)
        .map(|account| async {
            let outcome = run_account(&ctx, &state, &account.account, &account.users).await;
            if let Some(progress) = &options.progress {
                progress.account_done();
            }
            outcome
        })
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;
    drop(ctx);
    let mut exact = summary.failed_accounts.is_empty();
    for outcome in outcomes {
        summary.done.extend(outcome.done);
        summary.waiting.extend(outcome.waiting);
        exact &= !outcome.stale && outcome.busy.is_none() && outcome.failure.is_none();
        if let Some(busy) = outcome.busy {
            summary.busy_accounts.push(busy);
        }
        if let Some(failure) = outcome.failure {
            summary.failed_accounts.push(failure);
        }
        if let Some(account) = outcome.claimed {
            state.claims.remove(&account);
        }
        state.users.extend(outcome.users);
    }
    summary
        .failed_accounts
        .sort_by(|a, b| a.account.id.cmp(&b.account.id));
    summary.state = exact.then_some(state);
    Ok(summary)
}

#[derive(Default)]
struct AccountOutcome {
    done: Vec<Done>,
    waiting: Vec<Waiting>,
    busy: Option<(AccountId, String, DateTime<Utc>)>,
    failure: Option<FailedAccount>,
    /// The account, when this run claimed it.
    claimed: Option<AccountId>,
    /// The streams of the users this run drove, as it left them.
    users: Vec<((AccountId, UserName), UserEntry)>,
    /// Set when the journal may hold what `users` does not: an append conflicted or
    /// failed, or the claim was lost.
    stale: bool,
    /// Events recorded with the account's next write or its claim's release (a
    /// turn's enrolment, or its last outcome), by the index of their user in `users`,
    /// with the boundaries of the appends they stand for.
    deferred: Vec<(usize, Deferred, Vec<Boundary>)>,
}

#[tracing::instrument(
    name = "keyturn.account",
    skip_all,
    fields(account.id = %account.id, phase = "run")
)]
async fn run_account(
    ctx: &Ctx<'_>,
    state: &CampaignState,
    account: &OrgAccount,
    users: &[UserKeys],
) -> AccountOutcome {
    let mut outcome = AccountOutcome::default();
    let fail = |error: AccountError| FailedAccount {
        account: account.clone(),
        error,
    };
    // Users IAM lists now, and users the journal knows that IAM no longer lists (deleted).
    // A user whose keys were not listed has nothing the campaign may act on (and no key
    // in flight): it is not driven, and not taken for deleted either.
    let mut work: BTreeMap<UserName, (Option<&UserKeys>, UserEntry)> = BTreeMap::new();
    let in_iam: BTreeSet<&UserName> = users.iter().map(|u| &u.user.name).collect();
    for user in users.iter().filter(|u| u.listed) {
        let entry = state
            .users
            .get(&(account.id.clone(), user.user.name.clone()))
            .cloned()
            .unwrap_or_default();
        work.insert(user.user.name.clone(), (Some(user), entry));
    }
    for ((acct, user), entry) in &state.users {
        if acct == &account.id && !in_iam.contains(user) {
            work.insert(user.clone(), (None, entry.clone()));
        }
    }
    if work.is_empty() {
        // Nothing here the campaign may act on: no claim, no write.
        return outcome;
    }
    // The claim stream as the run's campaign read found it. The claim is taken with
    // the account's first write (the gate of its group commit), at that head: no write
    // of its own. It is taken at once, alone, when the account may be notified about
    // (a notification leaves the process before any write), or when another run seemed
    // to hold it (then the stream is read afresh, and the account may be busy).
    let seen_claim = state
        .claims
        .get(&account.id)
        .map_or(&[][..], std::slice::from_ref);
    let commit = GroupCommit::new(ctx.journal.clone(), ctx.options.group_linger);
    let lazily = if ctx.notifier.is_some() {
        Ok(None)
    } else {
        Claim::lazily(
            &commit,
            &ctx.campaign.name,
            &account.id,
            &ctx.actor,
            ctx.options.claim_ttl,
            seen_claim,
            &ctx.options.clock,
        )
    };
    let acquired = match lazily {
        Ok(Some(claim)) => Ok(Acquired::Held(Box::new(claim))),
        Ok(None) => {
            claims::acquire(
                ctx.journal.as_ref(),
                &ctx.campaign.name,
                &account.id,
                &ctx.actor,
                ctx.options.claim_ttl,
                Some(seen_claim),
                &ctx.options.clock,
            )
            .await
        }
        Err(e) => Err(e),
    };
    let claim = match acquired {
        Ok(Acquired::Held(claim)) => claim,
        Ok(Acquired::Busy { run_id, until }) => {
            outcome.busy = Some((account.id.clone(), run_id, until));
            return outcome;
        }
        Err(e) => {
            outcome.failure = Some(fail(e.into()));
            return outcome;
        }
    };
    // Every write of the account is conditional on this run still holding its claim
    // (a pending claim: the write that carries it is the fence's own append).
    commit.set_fence(Some(claim.fence()));
    let api = ctx
        .cloud
        .account(&account.id, &ctx.campaign.policy.scope)
        .await;
    let worker = AccountWorker {
        ctx,
        account,
        api,
        commit,
        claim: tokio::sync::Mutex::new(*claim),
        outcome: std::sync::Mutex::new(outcome),
        halted: AtomicBool::new(false),
    };

    // The account's users are driven concurrently, each user's steps in order, under
    // the same per-account bound as the reads (IAM's rate limits are per account). A
    // lost claim or a failure halts the account: no user starts after it. Each user
    // under way is a member of the account's group commit: their appends wait for each
    // other (up to the linger) and share writes.
    futures::stream::iter(work)
        .map(|(user, (listed, entry))| {
            let worker = &worker;
            async move {
                if ctx.options.stop.load(Ordering::SeqCst) || worker.halted.load(Ordering::SeqCst) {
                    return;
                }
                let _member = worker.commit.join();
                match worker.drive_user(&user, listed, entry).await {
                    Ok(true) => {}
                    // The claim was lost: another worker owns the account now.
                    Ok(false) => worker.halted.store(true, Ordering::SeqCst),
                    Err(failure) => {
                        worker.halted.store(true, Ordering::SeqCst);
                        worker
                            .outcome()
                            .failure
                            .get_or_insert_with(|| fail(failure));
                    }
                }
            }
        })
        .buffer_unordered(iam::PER_ACCOUNT_CONCURRENCY)
        .collect::<()>()
        .await;
    // The deferred events are written only while the claim is held (renewed if due),
    // with its release, in one write. A claim no write carried yet is taken and
    // released in that write, and not taken at all when there is nothing to write.
    let deferred = std::mem::take(&mut worker.outcome().deferred);
    let held = deferred.is_empty() || matches!(worker.keep_claim().await, Ok(true));
    let mut claim = worker.claim.into_inner();
    // Another worker took the account first: say so, as when its claim was seen.
    let busy = claim
        .taken_by(ctx.journal.as_ref())
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(account = %account.id, "could not read who holds the account: {e}");
            None
        });
    let untouched = claim.is_pending() && deferred.is_empty();
    let release = if untouched {
        worker.commit.ungate();
        None
    } else {
        claim.release_append(&ctx.actor)
    };
    let mut outcome = worker
        .outcome
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !untouched {
        // Its head moved: a later read takes it afresh.
        outcome.claimed = Some(account.id.clone());
    }
    if let Some((run_id, until)) = busy {
        outcome.busy = Some((account.id.clone(), run_id, until));
    }
    // The closing write passes the boundaries of the appends it carries.
    let boundaries = if held {
        distinct(deferred.iter().flat_map(|(_, _, b)| b.iter().copied()))
    } else {
        worker.commit.discard();
        Vec::new()
    };
    let released = Boundary::around_all(&boundaries, worker.commit.flush(release)).await;
    if let Some(Err(e)) = released {
        tracing::warn!(account = %account.id, "could not release the claim: {e}");
    }
    for (index, events, _) in deferred {
        match events.outcome() {
            Some(Ok(head)) => {
                let entry = &mut outcome.users[index].1;
                entry.version = head.version();
                entry.head = head;
            }
            Some(Err(e)) => {
                // A conflict, or a fence that moved (another run took the account
                // first), leaves the user to a later run; anything else fails the
                // account, as a failed append does.
                outcome.stale = true;
                if !e.is_conflict() && !e.is_fenced() {
                    outcome.failure.get_or_insert_with(|| fail(e.into()));
                }
            }
            None => outcome.stale = true,
        }
    }
    // Users finish in any order; what each did stays in its own order.
    outcome.done.sort_by(|a, b| a.user.cmp(&b.user));
    outcome.waiting.sort_by(|a, b| a.user.cmp(&b.user));
    outcome
}

/// The boundaries of the appends pending events stand for, in order, once each: a
/// settled outcome's own, and the enrolment's for anything else.
fn pending_boundaries(pending: &[RotationEvent]) -> Vec<Boundary> {
    distinct(pending.iter().map(|event| match event {
        RotationEvent::KeyDeactivated { .. } => fp::APPEND_DEACTIVATED,
        RotationEvent::KeyDeleted { .. } => fp::APPEND_DELETED,
        _ => fp::APPEND_ENROLL,
    }))
}

/// The boundaries in their first order, each once.
fn distinct(boundaries: impl IntoIterator<Item = Boundary>) -> Vec<Boundary> {
    let mut out = Vec::new();
    for boundary in boundaries {
        if !out.contains(&boundary) {
            out.push(boundary);
        }
    }
    out
}

/// The work on one account, under its claim, shared by the account's user tasks.
struct AccountWorker<'c> {
    ctx: &'c Ctx<'c>,
    account: &'c OrgAccount,
    /// The account's AWS, through the run's port.
    api: Arc<dyn AccountApi>,
    /// The users' appends, written together when they coincide.
    commit: GroupCommit,
    /// Held across a renewal, so that the account's tasks renew it one at a time.
    claim: tokio::sync::Mutex<Claim>,
    /// Locked only between awaits.
    outcome: std::sync::Mutex<AccountOutcome>,
    /// Set when the claim was lost or a user failed: no other user starts.
    halted: AtomicBool,
}

/// A user's stream, its folded state and what IAM shows now.
struct UserWork {
    user: UserName,
    stream: StreamId,
    entry: UserEntry,
    observed: Vec<ObservedKey>,
    /// Events folded into `entry` but not appended yet: the turn's enrolment, and an
    /// outcome that needs no write of its own (`settle`). They ride with the user's
    /// next append (one write instead of two), or, when the turn ends without one,
    /// with the account's next write or its claim's release.
    pending: Vec<RotationEvent>,
}

impl UserWork {
    /// Records an event the turn goes on without writing: folded now, appended with the
    /// user's next append or deferred with the turn's end (see `pending`). For the
    /// turn's enrolment, and for the outcomes a resumed run reconciles from IAM alone
    /// when they were never written (the key is Inactive, or gone), so that a crash
    /// before the write loses nothing but the record's timing; the observation period
    /// then starts later, never earlier.
    fn settle(&mut self, event: RotationEvent, now: DateTime<Utc>) {
        self.entry.fold(event.clone(), now);
        self.pending.push(event);
    }

    /// What IAM shows after this run set the key's status (the call succeeded).
    fn observe_status(&mut self, key: &AccessKeyId, status: KeyStatus) {
        if let Some(observed) = self.observed.iter_mut().find(|o| &o.key == key) {
            observed.status = status;
        }
    }

    /// What IAM shows after this run deleted the key (or found it gone).
    fn observe_gone(&mut self, key: &AccessKeyId) {
        self.observed.retain(|o| &o.key != key);
    }
}

/// Why a key waits while another run's intent on it is younger than a claim's time to
/// live.
pub const ANOTHER_RUNS_STEP: &str = "another run's step on this key may still be under way (its intent is younger than the claim's time to live)";

/// How many decisions one user may take in one run (a guard against a loop).
const MAX_STEPS_PER_USER: usize = 64;

impl AccountWorker<'_> {
    fn now(&self) -> DateTime<Utc> {
        self.ctx.options.clock.now()
    }

    fn outcome(&self) -> std::sync::MutexGuard<'_, AccountOutcome> {
        self.outcome
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Renews the account's claim when due; `Ok(false)` when it was lost.
    async fn keep_claim(&self) -> Result<bool, AccountError> {
        let ctx = self.ctx;
        self.claim
            .lock()
            .await
            .keep(
                ctx.journal.as_ref(),
                &ctx.actor,
                ctx.options.claim_ttl,
                Some(&self.commit),
            )
            .await
            .map_err(AccountError::from)
    }

    /// Right before an AWS mutation: whether this run still holds the account, with
    /// enough of its lease left for the call (renewed when not). A run that stalled past
    /// its lease (a sleeping laptop, a stuck call) finds out here and stops.
    async fn leased(&self) -> Result<bool, AccountError> {
        let ctx = self.ctx;
        let held = self
            .claim
            .lock()
            .await
            .hold(
                ctx.journal.as_ref(),
                &ctx.actor,
                ctx.options.claim_ttl,
                &self.commit,
            )
            .await
            .map_err(AccountError::from)?;
        if !held {
            self.outcome().stale = true;
        }
        Ok(held)
    }

    async fn claim_lost(&self) -> bool {
        self.claim.lock().await.is_lost()
    }

    fn note(&self, work: &UserWork, key: &AccessKeyId, what: String) {
        tracing::info!(account = %self.account.id, user = %work.user, key = %key, "{what}");
        if let Some(progress) = &self.ctx.options.progress {
            progress.key_acted(key);
        }
        self.outcome().done.push(Done {
            account: self.account.id.clone(),
            user: work.user.clone(),
            key: key.clone(),
            what,
        });
    }

    /// Enrolls the user's new keys, then acts until every key waits or is settled.
    /// `Ok(false)` when the account's claim was lost.
    async fn drive_user(
        &self,
        user: &UserName,
        listed: Option<&UserKeys>,
        entry: UserEntry,
    ) -> Result<bool, AccountError> {
        let ctx = self.ctx;
        let rules = &ctx.campaign.policy.rotation;
        let stream =
            user_stream(&ctx.campaign.name, &self.account.id, user).map_err(AccountError::from)?;
        let observed = listed
            .map(|u| u.keys.iter().map(observe).collect())
            .unwrap_or_default();
        let mut work = UserWork {
            user: user.clone(),
            stream,
            entry,
            observed,
            pending: Vec::new(),
        };

        if let Some(listed) = listed {
            let plans = classify(
                &work.observed,
                listed.exclusion.as_ref(),
                ctx.caller_key.as_ref(),
                rules,
                self.now(),
            );
            let mut events = enroll(
                &work.entry.state,
                &work.observed,
                &plans,
                ctx.caller_key.as_ref(),
            );
            self.hold_back_keys_of_other_campaigns(&work.user, &mut events)
                .await?;
            // Folded now, appended with the first intent or outcome of this turn (or
            // deferred at its end): see `append`.
            let now = self.now();
            for event in events {
                work.settle(event, now);
            }
        }
        let mut driven = self.drive(&mut work, listed).await;
        // The turn ended with events not appended (an enrolment, a last outcome): facts
        // nothing in this run waits on. They ride with the account's next write, or
        // with the release of its claim.
        let mut deferred = None;
        if !work.pending.is_empty() && !matches!(driven, Ok(false)) {
            match self.keep_claim().await {
                Ok(true) => deferred = Some(self.defer(&mut work)),
                Ok(false) => driven = driven.map(|_| false),
                Err(failure) => driven = driven.and(Err(failure)),
            }
        }
        if !matches!(driven, Ok(true)) || self.claim_lost().await {
            self.outcome().stale = true;
        }
        let mut outcome = self.outcome();
        if let Some((deferred, boundaries)) = deferred {
            let index = outcome.users.len();
            outcome.deferred.push((index, deferred, boundaries));
        }
        outcome
            .users
            .push(((self.account.id.clone(), work.user), work.entry));
        drop(outcome);
        driven
    }

    /// Leaves out of `events` the enrolment of a key that another campaign of the
    /// journal has not settled, and reports the key as waiting, naming that campaign.
    /// One look-up by access key per key about to be enrolled (a key is enrolled once).
    async fn hold_back_keys_of_other_campaigns(
        &self,
        user: &UserName,
        events: &mut Vec<RotationEvent>,
    ) -> Result<(), AccountError> {
        let ctx = self.ctx;
        let mut kept = Vec::with_capacity(events.len());
        for event in events.drain(..) {
            if let RotationEvent::KeyEnrolled { key, .. } = &event
                && let Some(other) =
                    super::held_elsewhere(ctx.journal.as_ref(), &ctx.campaign.name, key)
                        .await
                        .map_err(AccountError::from)?
            {
                self.outcome().waiting.push(Waiting {
                    account: self.account.id.clone(),
                    user: user.clone(),
                    key: key.clone(),
                    until: None,
                    reason: format!(
                        "not enrolled: campaign {other} of this journal has not settled this key"
                    ),
                });
                continue;
            }
            kept.push(event);
        }
        *events = kept;
        Ok(())
    }

    /// Queues the user's pending events for the account's next write: its head is set
    /// from the outcome once written (see `run_account`). Returns the boundaries of the
    /// appends they stand for.
    fn defer(&self, work: &mut UserWork) -> (Deferred, Vec<Boundary>) {
        let pending = std::mem::take(&mut work.pending);
        let boundaries = pending_boundaries(&pending);
        let events = pending
            .iter()
            .map(|e| rotation_event(e, &self.account.id, &work.user, &self.ctx.actor))
            .collect();
        (
            self.commit.defer(&work.stream, &work.entry.head, events),
            boundaries,
        )
    }

    /// Acts for one user until every key waits or is settled. `Ok(false)` when the
    /// account's claim was lost.
    async fn drive(
        &self,
        work: &mut UserWork,
        listed: Option<&UserKeys>,
    ) -> Result<bool, AccountError> {
        let ctx = self.ctx;
        let rules = &ctx.campaign.policy.rotation;
        let user = &work.user.clone();
        if work
            .entry
            .state
            .keys
            .values()
            .all(|k| k.phase.is_terminal())
        {
            self.notify_due(work, listed).await;
            return Ok(true);
        }
        if listed.is_none() {
            work.observed = self.list_keys(user).await?;
        }

        let mut fresh: Option<FreshUse> = None;
        // Whether `observed` was read from IAM since the last action: every
        // UpdateAccessKey and DeleteAccessKey is decided on such a read (one
        // ListAccessKeys), because a person or another tool may have changed the user's
        // keys since the account was listed, minutes ago at a thousand accounts.
        let mut listed_now = false;
        for _ in 0..MAX_STEPS_PER_USER {
            if ctx.options.stop.load(Ordering::SeqCst) {
                return Ok(true);
            }
            let decision = decide(
                &work.entry.state,
                &work.observed,
                fresh.as_ref(),
                ctx.caller_key.as_ref(),
                rules,
                self.now(),
            );
            match decision {
                Decision::Idle => {
                    self.notify_due(work, listed).await;
                    return Ok(true);
                }
                Decision::Wait { key, until, reason } => {
                    self.notify_due(work, listed).await;
                    self.outcome().waiting.push(Waiting {
                        account: self.account.id.clone(),
                        user: user.clone(),
                        key,
                        until,
                        reason,
                    });
                    return Ok(true);
                }
                Decision::CheckLastUse { key } => {
                    let asked =
                        telemetry::step("check-last-use", user, &key, self.api.last_used(&key))
                            .await;
                    let last_used = match asked {
                        Ok(last_used) => last_used,
                        // Gone since the listing (another run deleted it, a person did):
                        // decided again on a fresh listing, which no longer shows it.
                        Err(failure) if failure.code == "NoSuchEntity" && !listed_now => {
                            self.refresh(work).await?;
                            listed_now = true;
                            continue;
                        }
                        Err(failure) => return Err(failure.into()),
                    };
                    fresh = Some(FreshUse {
                        key,
                        checked_at: self.now(),
                        last_used_at: last_used.map(|l| l.at),
                    });
                }
                Decision::Act { key, action } => {
                    if !matches!(action, Action::Record(_))
                        && let Some(until) = work.entry.foreign_intent(
                            &key,
                            &ctx.actor.run_id,
                            ctx.options.claim_ttl,
                            self.now(),
                        )
                    {
                        // Its claim may have expired, but that run's call may still
                        // reach AWS (a process frozen between its lease check and its
                        // request): its step is reconciled once it cannot.
                        self.outcome().waiting.push(Waiting {
                            account: self.account.id.clone(),
                            user: user.clone(),
                            key,
                            until: Some(until),
                            reason: ANOTHER_RUNS_STEP.to_owned(),
                        });
                        return Ok(true);
                    }
                    if mutates_a_key(&action) && !listed_now {
                        self.refresh(work).await?;
                        listed_now = true;
                        continue;
                    }
                    listed_now = false;
                    fresh = None;
                    let disabling = matches!(action, Action::Deactivate { .. } | Action::Delete);
                    if disabling && ctx.caller_key.as_ref() == Some(&key) {
                        // Never cut off the credentials this run is signed with.
                        self.outcome().waiting.push(Waiting {
                            account: self.account.id.clone(),
                            user: user.clone(),
                            key,
                            until: None,
                            reason: "this run is signed with this key: run keyturn with other credentials to finish it".to_owned(),
                        });
                        return Ok(true);
                    }
                    if !self.keep_claim().await? {
                        return Ok(false);
                    }
                    let failures =
                        |work: &UserWork| work.entry.state.keys.get(&key).map_or(0, |k| k.failures);
                    let before = failures(work);
                    if !self.act(work, &key, action).await? {
                        if self.claim_lost().await {
                            return Ok(false);
                        }
                        // Someone else wrote to the stream: reload it and what IAM shows
                        // (both may predate that run's work), and decide again.
                        let envelopes = ctx
                            .journal
                            .read_stream(&work.stream)
                            .await
                            .map_err(AccountError::from)?;
                        keyturn_journal::verify_stream(&envelopes)
                            .map_err(|e| AccountError::from(WorkerError::Tampered(e)))?;
                        work.entry =
                            UserEntry::from_envelopes(&envelopes).map_err(AccountError::from)?;
                        self.refresh(work).await?;
                    } else if failures(work) > before
                        && failures(work) < keyturn_planner::rotation::decide::MAX_FAILURES
                    {
                        // A step failed: it is retried with backoff on a later run, and
                        // nothing else of this user is tried against the same fault now.
                        let ks = &work.entry.state.keys[&key];
                        self.outcome().waiting.push(Waiting {
                            account: self.account.id.clone(),
                            user: user.clone(),
                            key: key.clone(),
                            until: ks.next_check_at(rules),
                            reason: format!(
                                "retrying after {} ({} of {})",
                                ks.last_failure_code.as_deref().unwrap_or("an error"),
                                ks.failures,
                                keyturn_planner::rotation::decide::MAX_FAILURES
                            ),
                        });
                        return Ok(true);
                    }
                }
            }
        }
        tracing::warn!(account = %self.account.id, user = %user, "stopped after {MAX_STEPS_PER_USER} steps in one run");
        Ok(true)
    }

    /// Sends the notifications due for the user now (`[notify]`) and records their
    /// outcomes. Never fails the user's turn: a notification is a side note.
    async fn notify_due(&self, work: &mut UserWork, listed: Option<&UserKeys>) {
        let ctx = self.ctx;
        let (Some(notifier), Some(notify)) = (&ctx.notifier, &ctx.campaign.policy.notify) else {
            return;
        };
        let user = crate::notify::UserContext {
            campaign: &ctx.campaign.name,
            account: self.account,
            user: &work.user,
            tags: listed.map(|u| u.user.tags.as_slice()),
        };
        let rules = &ctx.campaign.policy.rotation;
        let events =
            crate::notify::send_due(notifier, notify, rules, user, &work.entry.state, self.now())
                .await;
        if events.is_empty() {
            return;
        }
        for event in &events {
            let (key, what) = match event {
                RotationEvent::NotificationSent {
                    key, kind, channel, ..
                } => (
                    key,
                    format!(
                        "notified the owner ({}) via {}",
                        kind.as_str(),
                        channel.as_str()
                    ),
                ),
                RotationEvent::NotificationFailed {
                    key,
                    kind,
                    channel,
                    error_code,
                    ..
                } => (
                    key,
                    format!(
                        "notifying the owner ({}) via {} failed with {error_code}",
                        kind.as_str(),
                        channel.as_str()
                    ),
                ),
                _ => continue,
            };
            self.note(work, key, what);
        }
        // A crash or a conflict here loses only the record: the notification is sent
        // again by a later run (at least once).
        match self.append(work, events, fp::APPEND_RECORD).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(account = %self.account.id, user = %work.user, "notification outcomes not recorded: the stream moved");
            }
            Err(failure) => {
                tracing::warn!(account = %self.account.id, user = %work.user, code = %failure.code(), "notification outcomes not recorded");
            }
        }
    }

    /// Appends events to the user's stream at its version and folds them in, between the
    /// failpoints of `at`, only while this run still holds the account's claim (renewed
    /// when due). `Ok(false)` on a version conflict or a lost claim.
    async fn append(
        &self,
        work: &mut UserWork,
        events: Vec<RotationEvent>,
        at: Boundary,
    ) -> Result<bool, AccountError> {
        let ctx = self.ctx;
        if !self.keep_claim().await? {
            self.outcome().stale = true;
            return Ok(false);
        }
        // A pending enrolment rides with these events, in one write. Its boundary then
        // coincides with this append's and is passed right before it (nothing is
        // written between the two), so a crash there leaves nothing recorded.
        let pending = std::mem::take(&mut work.pending);
        if !events.is_empty() {
            for boundary in pending_boundaries(&pending) {
                boundary.around(async {}).await;
            }
        }
        let new: Vec<_> = pending
            .iter()
            .chain(&events)
            .map(|e| rotation_event(e, &self.account.id, &work.user, &ctx.actor))
            .collect();
        // At the head this run read or wrote last: no read before the write, which
        // carries the account's other users' appends waiting at the same time.
        match at
            .around(self.commit.append_at(&work.stream, &work.entry.head, new))
            .await
        {
            Ok(head) => {
                let now = self.now();
                for event in events {
                    work.entry.fold(event, now);
                }
                work.entry.version = head.version();
                work.entry.head = head;
                Ok(true)
            }
            Err(e) => {
                self.outcome().stale = true;
                if e.is_fenced() {
                    // The claim moved: another run holds the account now.
                    self.claim.lock().await.fenced();
                    Ok(false)
                } else if e.is_conflict() {
                    Ok(false)
                } else {
                    Err(e.into())
                }
            }
        }
    }

    /// Appends one event, treating a conflict as "reload and decide again".
    async fn record(
        &self,
        work: &mut UserWork,
        event: RotationEvent,
        at: Boundary,
    ) -> Result<bool, AccountError> {
        self.append(work, vec![event], at).await
    }

    async fn list_keys(&self, user: &UserName) -> Result<Vec<ObservedKey>, AccountError> {
        match self.api.list_access_keys(user).await {
            Ok(keys) => Ok(keys
                .into_iter()
                .map(|k| ObservedKey {
                    key: k.access_key_id,
                    status: k.status,
                    created_at: k.created_at,
                    last_used_at: None,
                })
                .collect()),
            Err(f) if f.code == "NoSuchEntity" => Ok(Vec::new()),
            Err(f) => Err(f.into()),
        }
    }

    /// Re-reads the user's keys (after another writer's work), keeping the last-use data
    /// already known. After this run's own mutation the outcome tells the new state
    /// ([`UserWork::observe_status`], [`UserWork::observe_gone`]): no call.
    async fn refresh(&self, work: &mut UserWork) -> Result<(), AccountError> {
        let mut keys = self.list_keys(&work.user).await?;
        for key in &mut keys {
            key.last_used_at = work
                .observed
                .iter()
                .find(|o| o.key == key.key)
                .and_then(|o| o.last_used_at);
        }
        work.observed = keys;
        Ok(())
    }

    fn target(&self, user: &UserName) -> SecretTarget {
        let delivery = &self.ctx.campaign.policy.delivery;
        SecretTarget {
            name: secret_name(&delivery.name_template, &self.account.id, user),
            region: delivery.region.clone(),
        }
    }

    /// What a delivery of this run stores beside the key, stamped now.
    fn meta(&self, work: &UserWork) -> DeliveryMeta {
        DeliveryMeta {
            account: self.account.id.clone(),
            user: work.user.clone(),
            campaign: self.ctx.campaign.name.clone(),
            rotated_at: self.now(),
        }
    }

    /// Records a failed step; the key is retried with backoff on a later decision.
    async fn failed(
        &self,
        work: &mut UserWork,
        key: &AccessKeyId,
        step: Step,
        attempt: u32,
        failure: &AwsFailure,
    ) -> Result<bool, AccountError> {
        self.note(
            work,
            key,
            format!("{} failed with {}", step.as_str(), failure.code),
        );
        let event = RotationEvent::StepFailed {
            key: key.clone(),
            step,
            attempt,
            code: failure.code.clone(),
            message: failure.message.replace('\n', " "),
        };
        self.record(work, event, fp::APPEND_FAILED).await
    }

    async fn intend(
        &self,
        work: &mut UserWork,
        key: &AccessKeyId,
        step: Step,
        attempt: u32,
        target: Option<&AccessKeyId>,
        at: Boundary,
    ) -> Result<bool, AccountError> {
        let event = RotationEvent::StepIntended {
            key: key.clone(),
            step,
            attempt,
            target: target.cloned(),
        };
        self.record(work, event, at).await
    }

    /// Performs one decided action. `Ok(false)` when the stream moved under us.
    async fn act(
        &self,
        work: &mut UserWork,
        key: &AccessKeyId,
        action: Action,
    ) -> Result<bool, AccountError> {
        let attempt = work.entry.state.keys.get(key).map_or(1, |k| k.failures + 1);
        match action {
            Action::Record(event) => {
                let what = match &event {
                    RotationEvent::KeyBlocked { reason, .. } => format!("blocked: {reason}"),
                    RotationEvent::KeyFailed { reason, .. } => format!("failed: {reason}"),
                    RotationEvent::KeyReleased { reason, .. } => format!("released: {reason}"),
                    RotationEvent::KeyVanished { .. } => "no longer exists in IAM".to_owned(),
                    RotationEvent::KeyDeleted { .. } => "deleted (observed)".to_owned(),
                    RotationEvent::OrphanDeleted { orphan, .. } => {
                        format!("orphan {orphan} is gone")
                    }
                    RotationEvent::KeyEnrolled { reason, .. } => format!("re-planned: {reason}"),
                    other => other.event_type().to_owned(),
                };
                let ok = self.record(work, event, fp::APPEND_RECORD).await?;
                if ok {
                    self.note(work, key, what);
                }
                Ok(ok)
            }
            Action::CreateReplacement { attempt } => self.replace(work, key, attempt).await,
            Action::RecoverDelivery { new_key, attempt } => {
                let token =
                    steps::client_request_token(self.ctx.campaign.name.as_str(), key, attempt);
                // A failed lookup is a failure of the delivery step like any other:
                // recorded with its code and retried with backoff, never an account
                // failure that would starve the account's other users and never count.
                let target = self.target(&work.user);
                let found = match self
                    .stored_delivery(work, key, &target, &token, &new_key)
                    .await
                {
                    Ok(Stored::Yes(delivery)) => delivery,
                    Ok(Stored::No) => return self.delete_orphan(work, key, &new_key).await,
                    Ok(Stored::ClaimLost) => return Ok(false),
                    // A run that died or stalled may still have a request in flight: the
                    // key is kept, and retried, until its delivery is settled for good.
                    Ok(Stored::NotVoided(failure)) | Err(AccountError::Aws(failure)) => {
                        return self
                            .failed(work, key, Step::DeliverSecret, attempt, &failure)
                            .await;
                    }
                    Err(other) => return Err(other),
                };
                let event = RotationEvent::SecretDelivered {
                    key: key.clone(),
                    new_key: new_key.clone(),
                    secret_arn: found.secret_arn,
                    version_id: found.version_id,
                    recovered: true,
                };
                let ok = self.record(work, event, fp::APPEND_RECOVERED).await?;
                self.note(work, key, format!("recovered the delivery of {new_key}"));
                Ok(ok)
            }
            Action::Verify { new_key } => {
                let Some((_, version)) = work
                    .entry
                    .state
                    .keys
                    .get(key)
                    .and_then(|k| k.delivery.clone())
                else {
                    return Err(AwsFailure {
                        operation: "verify",
                        code: "NoDelivery".into(),
                        message: format!("{key} has no recorded delivery"),
                    }
                    .into());
                };
                let target = self.target(&work.user);
                let read = telemetry::step(
                    "read-delivery",
                    &work.user,
                    key,
                    self.api.read_delivered_key(&target, &version),
                )
                .await;
                let secret = match read {
                    Ok(secret) if secret.access_key_id == new_key => secret,
                    Ok(_) => {
                        let failure = AwsFailure {
                            operation: "GetSecretValue",
                            code: "DeliveryMismatch".into(),
                            message: "the stored secret names another key".into(),
                        };
                        return self
                            .failed(work, key, Step::VerifyReplacement, attempt, &failure)
                            .await;
                    }
                    Err(failure) => {
                        return self
                            .failed(work, key, Step::VerifyReplacement, attempt, &failure)
                            .await;
                    }
                };
                self.verify(work, key, &secret, attempt).await
            }
            Action::DeleteOrphan { orphan } => self.delete_orphan(work, key, &orphan).await,
            Action::Deactivate { evidence } => {
                if !self
                    .intend(
                        work,
                        key,
                        Step::Deactivate,
                        attempt,
                        None,
                        fp::APPEND_INTENT_DEACTIVATE,
                    )
                    .await?
                {
                    return Ok(false);
                }
                if !self.leased().await? {
                    return Ok(false);
                }
                let deactivated = fp::DEACTIVATE
                    .around(telemetry::step(
                        Step::Deactivate.as_str(),
                        &work.user,
                        key,
                        self.api.set_access_key_status(
                            &work.user,
                            key,
                            keyturn_planner::inventory::KeyStatus::Inactive,
                        ),
                    ))
                    .await;
                match deactivated {
                    Ok(()) => {
                        work.settle(
                            RotationEvent::KeyDeactivated {
                                key: key.clone(),
                                evidence,
                            },
                            self.now(),
                        );
                        let why = match work.entry.state.keys.get(key).and_then(|k| k.path) {
                            Some(Path::RetireUnused) => {
                                "deactivated (unused: no replacement needed)"
                            }
                            _ => "deactivated (no use seen for the quiet period)",
                        };
                        self.note(work, key, why.into());
                        work.observe_status(key, KeyStatus::Inactive);
                        Ok(true)
                    }
                    Err(failure) => {
                        self.failed(work, key, Step::Deactivate, attempt, &failure)
                            .await
                    }
                }
            }
            Action::Delete => {
                if !self
                    .intend(
                        work,
                        key,
                        Step::Delete,
                        attempt,
                        None,
                        fp::APPEND_INTENT_DELETE,
                    )
                    .await?
                {
                    return Ok(false);
                }
                if !self.leased().await? {
                    return Ok(false);
                }
                let deleted = fp::DELETE
                    .around(telemetry::step(
                        Step::Delete.as_str(),
                        &work.user,
                        key,
                        self.api.delete_access_key(&work.user, key),
                    ))
                    .await;
                match deleted {
                    Ok(deletion) => {
                        let already_gone = deletion == Deletion::AlreadyGone;
                        work.settle(
                            RotationEvent::KeyDeleted {
                                key: key.clone(),
                                already_gone,
                            },
                            self.now(),
                        );
                        self.note(work, key, "deleted".into());
                        work.observe_gone(key);
                        Ok(true)
                    }
                    Err(failure) => {
                        self.failed(work, key, Step::Delete, attempt, &failure)
                            .await
                    }
                }
            }
            Action::Reactivate => {
                // Finishing a rollback whose call did not answer (or never left): every
                // try is an intent of its own, so the journal shows each UpdateAccessKey
                // that may have taken effect.
                if !self
                    .intend(
                        work,
                        key,
                        Step::Reactivate,
                        attempt,
                        None,
                        fp::APPEND_INTENT_REACTIVATE,
                    )
                    .await?
                {
                    return Ok(false);
                }
                if !self.leased().await? {
                    return Ok(false);
                }
                let reactivated = fp::REACTIVATE
                    .around(telemetry::step(
                        Step::Reactivate.as_str(),
                        &work.user,
                        key,
                        self.api.set_access_key_status(
                            &work.user,
                            key,
                            keyturn_planner::inventory::KeyStatus::Active,
                        ),
                    ))
                    .await;
                match reactivated {
                    Ok(()) => {
                        let ok = self
                            .record(
                                work,
                                RotationEvent::KeyReactivated { key: key.clone() },
                                fp::APPEND_REACTIVATED,
                            )
                            .await?;
                        self.note(
                            work,
                            key,
                            "Active again: finished the rollback that was asked for".into(),
                        );
                        work.observe_status(key, KeyStatus::Active);
                        Ok(ok)
                    }
                    Err(failure) => {
                        self.failed(work, key, Step::Reactivate, attempt, &failure)
                            .await
                    }
                }
            }
        }
    }

    /// Create → deliver (read back) → verify, with an intent before each mutation and
    /// the secret only ever in this process's memory and in the delivery target.
    async fn replace(
        &self,
        work: &mut UserWork,
        key: &AccessKeyId,
        attempt: u32,
    ) -> Result<bool, AccountError> {
        if !self
            .intend(
                work,
                key,
                Step::CreateReplacement,
                attempt,
                None,
                fp::APPEND_INTENT_CREATE,
            )
            .await?
        {
            return Ok(false);
        }
        if !self.leased().await? {
            return Ok(false);
        }
        let created = fp::CREATE
            .around(telemetry::step(
                Step::CreateReplacement.as_str(),
                &work.user,
                key,
                self.api.create_access_key(&work.user),
            ))
            .await;
        let new = match created {
            Ok(new) => new,
            Err(failure) => {
                return self
                    .failed(work, key, Step::CreateReplacement, attempt, &failure)
                    .await;
            }
        };
        // Until its delivery is sent, the new key's secret is in this process alone: a
        // run that cannot go on to send it (its claim moved, the journal failed) deletes
        // the key rather than leave one nobody can use or tell from a person's.
        let ready = self.ready_to_deliver(work, key, &new, attempt).await;
        if !matches!(ready, Ok(true)) {
            self.discard(work, key, &new.access_key_id).await;
            return ready;
        }
        let target = self.target(&work.user);
        let meta = self.meta(work);
        let token = steps::client_request_token(self.ctx.campaign.name.as_str(), key, attempt);
        let delivered = fp::DELIVER
            .around(telemetry::step(
                Step::DeliverSecret.as_str(),
                &work.user,
                key,
                self.api.deliver_secret(&target, &new, &meta, &token),
            ))
            .await;
        let delivery = match delivered {
            Ok(delivery) => delivery,
            Err(failure) => {
                if !self
                    .failed(work, key, Step::DeliverSecret, attempt, &failure)
                    .await?
                {
                    return Ok(false);
                }
                // The secret exists only in this process: settle the replacement now,
                // so that it never outlives the run without its secret stored.
                let found = self
                    .stored_delivery(work, key, &target, &token, &new.access_key_id)
                    .await;
                return match found {
                    Ok(Stored::Yes(delivery)) => {
                        let event = RotationEvent::SecretDelivered {
                            key: key.clone(),
                            new_key: new.access_key_id.clone(),
                            secret_arn: delivery.secret_arn,
                            version_id: delivery.version_id,
                            recovered: true,
                        };
                        if !self.record(work, event, fp::APPEND_RECOVERED).await? {
                            return Ok(false);
                        }
                        self.verify(work, key, &new, 1).await
                    }
                    // This run's own requests under the token were answered, or
                    // cancelled by its operation timeout: when Secrets Manager refuses
                    // even the void, the key, whose secret would be lost with this
                    // process, is deleted all the same.
                    Ok(Stored::No | Stored::NotVoided(_)) => {
                        self.delete_orphan(work, key, &new.access_key_id).await
                    }
                    Ok(Stored::ClaimLost) => Ok(false),
                    // Secrets Manager cannot say whether the version was stored: deleting
                    // the key could leave a stored secret naming a deleted key, so the
                    // next run reconciles it (RecoverDelivery) once it can tell.
                    Err(AccountError::Aws(_)) => Ok(true),
                    Err(other) => Err(other),
                };
            }
        };
        let delivered = RotationEvent::SecretDelivered {
            key: key.clone(),
            new_key: new.access_key_id.clone(),
            secret_arn: delivery.secret_arn.clone(),
            version_id: delivery.version_id.clone(),
            recovered: false,
        };
        if !self.record(work, delivered, fp::APPEND_DELIVERED).await? {
            return Ok(false);
        }
        self.note(
            work,
            key,
            format!(
                "secret of {} delivered to {}",
                new.access_key_id, target.name
            ),
        );
        self.verify(work, key, &new, 1).await
    }

    async fn verify(
        &self,
        work: &mut UserWork,
        key: &AccessKeyId,
        new: &NewAccessKey,
        attempt: u32,
    ) -> Result<bool, AccountError> {
        let verified = fp::VERIFY
            .around(telemetry::step(
                Step::VerifyReplacement.as_str(),
                &work.user,
                key,
                self.api
                    .verify_access_key(new, &work.user, self.ctx.options.verify_wait),
            ))
            .await;
        match verified {
            Ok(caller_arn) => {
                let event = RotationEvent::ReplacementVerified {
                    key: key.clone(),
                    new_key: new.access_key_id.clone(),
                    caller_arn,
                };
                let ok = self.record(work, event, fp::APPEND_VERIFIED).await?;
                self.note(
                    work,
                    key,
                    format!(
                        "replacement {} verified; waiting for adoption",
                        new.access_key_id
                    ),
                );
                Ok(ok)
            }
            Err(failure) => {
                self.failed(work, key, Step::VerifyReplacement, attempt, &failure)
                    .await
            }
        }
    }

    /// Records the created replacement and the intent to deliver it, and checks the
    /// lease: whether the run may send the delivery.
    async fn ready_to_deliver(
        &self,
        work: &mut UserWork,
        key: &AccessKeyId,
        new: &NewAccessKey,
        attempt: u32,
    ) -> Result<bool, AccountError> {
        let created = RotationEvent::ReplacementCreated {
            key: key.clone(),
            new_key: new.access_key_id.clone(),
            created_at: new.created_at,
        };
        if !self.record(work, created, fp::APPEND_CREATED).await? {
            return Ok(false);
        }
        self.note(
            work,
            key,
            format!("replacement {} created", new.access_key_id),
        );
        work.observed.push(ObservedKey {
            key: new.access_key_id.clone(),
            status: KeyStatus::Active,
            created_at: new.created_at,
            last_used_at: None,
        });
        Ok(self
            .intend(
                work,
                key,
                Step::DeliverSecret,
                attempt,
                Some(&new.access_key_id),
                fp::APPEND_INTENT_DELIVER,
            )
            .await?
            && self.leased().await?)
    }

    /// Deletes a key this run just created and could not record (its claim moved, or
    /// the journal failed): the key's secret exists only in this process and goes with
    /// it, so nobody can ever use the key, and a later run could not tell it from a key a
    /// person made (a create that stalled past the claim lands outside the create
    /// window). The one mutation that needs no claim and no intent: it acts on the id
    /// IAM just returned, and on nothing else.
    async fn discard(&self, work: &UserWork, key: &AccessKeyId, new_key: &AccessKeyId) {
        // The last chance to delete it: a few tries more than the SDK's own retries.
        let mut pause = Duration::from_secs(1);
        let mut tries = 0;
        let deleted = loop {
            tries += 1;
            let deleted = telemetry::step(
                "discard-replacement",
                &work.user,
                key,
                self.api.delete_access_key(&work.user, new_key),
            )
            .await;
            match deleted {
                Err(failure) if tries < 3 && failure.is_transient() => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                other => break other,
            }
        };
        match deleted {
            Ok(_) => tracing::warn!(
                account = %self.account.id, user = %work.user, key = %new_key,
                "the replacement's creation could not be recorded: deleted it"
            ),
            Err(failure) => tracing::error!(
                account = %self.account.id, user = %work.user, key = %new_key, code = %failure.code,
                "the replacement's creation could not be recorded, and deleting it failed: a human must delete it"
            ),
        }
    }

    /// Whether version `token` of the target secret stores `new_key`, settled so that it
    /// stays that way. A version not found is voided ([`AccountApi::void_delivery`])
    /// before the answer is "no": a delivery request under `token` still in flight (one
    /// that stalled past its run's claim) can then no longer land after the key is
    /// deleted as an orphan and leave the secret holding a deleted key. When the void
    /// finds the token taken, the delivery landed meanwhile and is looked up again.
    async fn stored_delivery(
        &self,
        work: &UserWork,
        key: &AccessKeyId,
        target: &SecretTarget,
        token: &str,
        new_key: &AccessKeyId,
    ) -> Result<Stored, AccountError> {
        let find = || {
            telemetry::step(
                "find-delivery",
                &work.user,
                key,
                self.api.find_delivery(target, token),
            )
        };
        let stored = |found: Option<(Delivery, AccessKeyId)>| match found {
            Some((delivery, stored)) if &stored == new_key => Stored::Yes(delivery),
            _ => Stored::No,
        };
        if let Stored::Yes(delivery) = stored(find().await?) {
            return Ok(Stored::Yes(delivery));
        }
        if !self.leased().await? {
            return Ok(Stored::ClaimLost);
        }
        let voided = telemetry::step(
            "void-delivery",
            &work.user,
            key,
            self.api
                .void_delivery(target, token, new_key, &self.meta(work)),
        )
        .await;
        match voided {
            Ok(Voiding::Voided) => Ok(Stored::No),
            Ok(Voiding::Taken) => Ok(stored(find().await?)),
            Err(failure) => Ok(Stored::NotVoided(failure)),
        }
    }

    async fn delete_orphan(
        &self,
        work: &mut UserWork,
        key: &AccessKeyId,
        orphan: &AccessKeyId,
    ) -> Result<bool, AccountError> {
        let attempt = work.entry.state.keys.get(key).map_or(1, |k| k.failures + 1);
        if !self
            .intend(
                work,
                key,
                Step::DeleteOrphan,
                attempt,
                Some(orphan),
                fp::APPEND_INTENT_DELETE_ORPHAN,
            )
            .await?
        {
            return Ok(false);
        }
        if !self.leased().await? {
            return Ok(false);
        }
        let deleted = fp::DELETE_ORPHAN
            .around(telemetry::step(
                Step::DeleteOrphan.as_str(),
                &work.user,
                key,
                self.api.delete_access_key(&work.user, orphan),
            ))
            .await;
        match deleted {
            Ok(_) => {
                let ok = self
                    .record(
                        work,
                        RotationEvent::OrphanDeleted {
                            key: key.clone(),
                            orphan: orphan.clone(),
                        },
                        fp::APPEND_ORPHAN_DELETED,
                    )
                    .await?;
                self.note(
                    work,
                    key,
                    format!("deleted {orphan}, a replacement whose secret was never stored"),
                );
                work.observe_gone(orphan);
                Ok(ok)
            }
            Err(failure) => {
                self.failed(work, key, Step::DeleteOrphan, attempt, &failure)
                    .await
            }
        }
    }
}

/// Whether a replacement's delivery is stored ([`AccountWorker::stored_delivery`]).
enum Stored {
    /// It is, in this version.
    Yes(Delivery),
    /// It is not, and no request in flight can store it any more.
    No,
    /// It is not, but the void failed: a request in flight could still store it.
    NotVoided(AwsFailure),
    /// The run lost the account's claim before it could settle that.
    ClaimLost,
}

/// Whether the action changes or deletes an existing key (UpdateAccessKey,
/// DeleteAccessKey): it is decided again on a fresh ListAccessKeys first.
fn mutates_a_key(action: &Action) -> bool {
    matches!(
        action,
        Action::Deactivate { .. }
            | Action::Delete
            | Action::DeleteOrphan { .. }
            | Action::Reactivate
    )
}

fn observe(key: &KeyRecord) -> ObservedKey {
    ObservedKey {
        key: key.access_key_id.clone(),
        status: key.status,
        created_at: key.created_at,
        last_used_at: key.last_used.as_ref().map(|l| l.at),
    }
}

/// Reactivates a key that was deactivated and not yet deleted, recording why; the key
/// goes back to waiting for adoption.
pub async fn rollback(
    journal: Arc<dyn Journal>,
    cloud: &dyn Cloud,
    name: &CampaignName,
    key: &AccessKeyId,
    reason: &str,
    actor: Actor,
    options: &RunOptions,
) -> Result<(AccountId, UserName), WorkerError> {
    let state = load_state(journal.as_ref(), name).await?;
    let found = state.users.iter().find_map(|((account, user), entry)| {
        entry
            .state
            .keys
            .get(key)
            .map(|ks| (account.clone(), user.clone(), entry.clone(), ks.phase))
    });
    let Some((account, user, entry, phase)) = found else {
        return Err(WorkerError::Rejected(format!(
            "key {key} is not part of campaign {name}"
        )));
    };
    if phase != keyturn_planner::rotation::Phase::Observing {
        return Err(WorkerError::Rejected(format!(
            "key {key} is {}: only a key that was deactivated and not yet deleted can be rolled back",
            phase.status_word()
        )));
    }
    let claim = match claims::acquire(
        journal.as_ref(),
        name,
        &account,
        &actor,
        options.claim_ttl,
        None,
        &options.clock,
    )
    .await?
    {
        Acquired::Held(claim) => claim,
        Acquired::Busy { run_id, until } => {
            return Err(WorkerError::Rejected(format!(
                "account {account} is being worked by run {run_id} until {until}; try again then"
            )));
        }
    };
    let result = reactivate(
        journal.as_ref(),
        cloud,
        &claim,
        &state,
        &account,
        &user,
        entry,
        key,
        reason,
        &actor,
    )
    .await;
    claim.release(journal.as_ref(), &actor).await;
    result.map(|()| (account, user))
}

#[allow(clippy::too_many_arguments)]
async fn reactivate(
    journal: &dyn Journal,
    cloud: &dyn Cloud,
    claim: &Claim,
    state: &CampaignState,
    account: &AccountId,
    user: &UserName,
    entry: UserEntry,
    key: &AccessKeyId,
    reason: &str,
    actor: &Actor,
) -> Result<(), WorkerError> {
    let name = &state.campaign.name;
    let stream = user_stream(name, account, user)?;
    let events = [
        RotationEvent::RollbackRequested {
            key: key.clone(),
            reason: reason.to_owned(),
            requested_by: actor.caller_arn.clone(),
        },
        RotationEvent::StepIntended {
            key: key.clone(),
            step: Step::Reactivate,
            attempt: 1,
            target: None,
        },
    ];
    let new: Vec<_> = events
        .iter()
        .map(|e| rotation_event(e, account, user, actor))
        .collect();
    // Fenced by the claim, as every write of `run`: a run that took the account over
    // since makes it fail, and nothing is reactivated.
    let fence = claim.fence();
    let head = fp::APPEND_INTENT_REACTIVATE
        .around(journal.append_at_fenced(&stream, &entry.head, new, Some(&fence)))
        .await?;
    let api = cloud.account(account, &state.campaign.policy.scope).await;
    let reactivated = fp::REACTIVATE
        .around(telemetry::step(
            Step::Reactivate.as_str(),
            user,
            key,
            api.set_access_key_status(user, key, KeyStatus::Active),
        ))
        .await;
    let head = match reactivated {
        Ok(()) => head,
        Err(failure) => {
            let event = RotationEvent::StepFailed {
                key: key.clone(),
                step: Step::Reactivate,
                attempt: 1,
                code: failure.code.clone(),
                message: failure.message.clone(),
            };
            let head = fp::APPEND_REACTIVATE_FAILED
                .around(journal.append_at_fenced(
                    &stream,
                    &head,
                    vec![rotation_event(&event, account, user, actor)],
                    Some(&fence),
                ))
                .await?;
            // A call that failed may still have taken effect (an answer lost after the
            // fact). Settled now, on a fresh read, it is not left open for a later run
            // to finish over a change a person makes in between.
            let active = api.list_access_keys(user).await.is_ok_and(|keys| {
                keys.iter()
                    .any(|k| &k.access_key_id == key && k.status == KeyStatus::Active)
            });
            if !active {
                return Err(failure.into());
            }
            head
        }
    };
    let done = RotationEvent::KeyReactivated { key: key.clone() };
    fp::APPEND_REACTIVATED
        .around(journal.append_at_fenced(
            &stream,
            &head,
            vec![rotation_event(&done, account, user, actor)],
            Some(&fence),
        ))
        .await?;
    Ok(())
}
