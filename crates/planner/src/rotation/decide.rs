//! The decisions: what a key's plan is (`classify`), which keys a campaign takes on
//! (`enroll`), and what to do next for a user (`decide`). All pure: the observations
//! and the time are arguments.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::events::{Path, RotationEvent, Step, UseEvidence};
use super::gates::{
    Turn, awaiting_adoption, observing, pending_delete_inactive, pending_retire_unused,
    pending_rotate,
};
use super::state::{KeyState, OpenIntent, Phase, UserState};
use crate::ids::AccessKeyId;
use crate::inventory::{KeyStatus, whole_days};
use crate::policy::{Rotation, UserExclusion, format_duration};

/// How many failures in a row make a key `failed`.
pub const MAX_FAILURES: u32 = 5;
/// The wait after the first failure; it doubles with each further failure.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// How far a key's creation time, by IAM's clock, may lie outside the span of a create
/// call, by ours, and still be the call's key (clock skew).
pub const CLOCK_SKEW: Duration = Duration::from_secs(120);
/// How long a CreateAccessKey call may take: the worker's operation timeout for an IAM
/// call, 30 s, with margin. A create intent that no failure answered (its run died) may
/// have created a key until this long after it was recorded, not later.
pub const CREATE_CALL_BOUND: Duration = Duration::from_secs(60);

/// Whether a failure of CreateAccessKey with this AWS error code proves that IAM refused
/// the request, so that no key was created: a limit (`LimitExceeded`, two keys already),
/// a refusal of the caller (`AccessDenied`, `AccessDeniedException`,
/// `UnrecognizedClientException`, `InvalidClientTokenId`, `ExpiredToken`), a request IAM
/// would not take (`ValidationError`, `InvalidInput`, `NoSuchEntity`,
/// `EntityTemporarilyUnmodifiable`) or a throttle (`Throttling`, `ThrottlingException`).
///
/// The worker never repeats a CreateAccessKey request after an answer that may have
/// taken effect (only after throttling, which proves IAM did nothing), so a refusal
/// answers every request of the attempt: with the SDK's retries, a first request that timed out after
/// creating the key and a retry refused with `LimitExceeded` would prove nothing. Server
/// errors (5xx, `ServiceFailure`), timeouts (`RequestTimeout` among them), dispatch and
/// IO errors are not refusals: the request may have taken effect.
pub fn create_refused(code: &str) -> bool {
    matches!(
        code,
        "LimitExceeded"
            | "AccessDenied"
            | "AccessDeniedException"
            | "ValidationError"
            | "InvalidInput"
            | "NoSuchEntity"
            | "Throttling"
            | "ThrottlingException"
            | "EntityTemporarilyUnmodifiable"
            | "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "ExpiredToken"
    )
}

/// A key as IAM shows it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedKey {
    /// The key.
    pub key: AccessKeyId,
    /// Active or Inactive.
    pub status: KeyStatus,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Its last use as last known (`None`: never used).
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A fresh GetAccessKeyLastUsed answer, asked right before a gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreshUse {
    /// The key asked about.
    pub key: AccessKeyId,
    /// When it was asked.
    pub checked_at: DateTime<Utc>,
    /// The answer (`None`: never used).
    pub last_used_at: Option<DateTime<Utc>>,
}

/// The plan's action for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanAction {
    /// Old and in use: replace it.
    Rotate,
    /// Active and unused: deactivate, observe, delete.
    RetireUnused,
    /// Inactive: delete after the observation period.
    DeleteInactive,
    /// Nothing to do.
    None,
    /// Out of scope.
    Skip,
    /// A human must decide.
    Blocked,
}

impl PlanAction {
    /// The plan's word for the action.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rotate => "rotate",
            Self::RetireUnused => "retire-unused",
            Self::DeleteInactive => "delete-inactive",
            Self::None => "none",
            Self::Skip => "skip",
            Self::Blocked => "blocked",
        }
    }

    fn path(self) -> Option<Path> {
        match self {
            Self::Rotate => Some(Path::Rotate),
            Self::RetireUnused => Some(Path::RetireUnused),
            Self::DeleteInactive => Some(Path::DeleteInactive),
            _ => None,
        }
    }
}

/// One key's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPlan {
    /// The key.
    pub key: AccessKeyId,
    /// What the campaign would do.
    pub action: PlanAction,
    /// Why, in words ("Active, 120 days old, last used 1 day ago").
    pub reason: String,
}

/// A duration as chrono's, to compare spans of time; never added to a time (see
/// [`after`]).
pub(super) fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// `t` plus `d`, or the latest time there is when that lies beyond it. Every gate and
/// deadline is computed this way, so that no duration can panic a decision, a check or
/// a notification (the policy bounds its durations; the model does not rely on it).
pub(crate) fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `t` less `d`, or the earliest time there is when that lies before it.
pub(crate) fn before(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The wait after `failures` failures in a row: [`FIRST_BACKOFF`], doubled with each
/// further failure (saturating).
pub(crate) fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
}

fn describe(key: &ObservedKey, now: DateTime<Utc>) -> String {
    let used = match key.last_used_at {
        Some(at) => match whole_days(at, now) {
            0 => "last used today".to_owned(),
            1 => "last used 1 day ago".to_owned(),
            n => format!("last used {n} days ago"),
        },
        None => "never used".to_owned(),
    };
    format!(
        "{}, {} days old, {used}",
        key.status.as_str(),
        whole_days(key.created_at, now)
    )
}

/// The quiet span of a key: since its last use, or its creation when never used.
pub(super) fn unused_since(key: &ObservedKey) -> DateTime<Utc> {
    key.last_used_at
        .map_or(key.created_at, |used| used.max(key.created_at))
}

/// The plan for one user's keys (at most two).
///
/// Rules: an Inactive key is deleted once `observation_period` has passed since its last
/// use or creation; an Active key unused for at least `unused_after` is retired; an
/// Active key older than `max_key_age` (strictly) is rotated. A rotation needs the
/// second slot: when the other key is Active and in use, both are blocked, never
/// resolved by deleting a key in use.
pub fn classify(
    keys: &[ObservedKey],
    exclusion: Option<&UserExclusion>,
    caller_key: Option<&AccessKeyId>,
    rules: &Rotation,
    now: DateTime<Utc>,
) -> Vec<KeyPlan> {
    let mut plans: Vec<KeyPlan> = keys
        .iter()
        .map(|key| {
            let words = describe(key, now);
            let (action, reason) = if let Some(exclusion) = exclusion {
                (PlanAction::Skip, format!("{words}; {exclusion}"))
            } else if caller_key == Some(&key.key) {
                (
                    PlanAction::Skip,
                    format!("{words}; the key this run is signed with"),
                )
            } else if key.status == KeyStatus::Inactive {
                (PlanAction::DeleteInactive, words)
            } else if now - unused_since(key) >= chrono(rules.unused_after) {
                (
                    PlanAction::RetireUnused,
                    format!(
                        "{words}; unused for at least {}",
                        format_duration(rules.unused_after)
                    ),
                )
            } else if now - key.created_at > chrono(rules.max_key_age) {
                (
                    PlanAction::Rotate,
                    format!("{words}; older than {}", format_duration(rules.max_key_age)),
                )
            } else {
                (PlanAction::None, words)
            };
            KeyPlan {
                key: key.key.clone(),
                action,
                reason,
            }
        })
        .collect();

    if plans.len() == 2 {
        let in_use = |p: &KeyPlan| matches!(p.action, PlanAction::Rotate | PlanAction::None);
        let both_active = keys.iter().all(|k| k.status == KeyStatus::Active);
        let needs_slot = plans.iter().any(|p| p.action == PlanAction::Rotate);
        if both_active && needs_slot && plans.iter().all(in_use) {
            for plan in &mut plans {
                plan.action = PlanAction::Blocked;
                plan.reason = format!(
                    "{}; the user has two Active keys in use: a human must choose",
                    plan.reason
                );
            }
        }
    }
    plans
}

/// Whether a key created at `created_at` may be the key of an open create intent: it was
/// created while the call was in flight, from the intent (less [`CLOCK_SKEW`]) to the
/// failure that answered the call, or [`CREATE_CALL_BOUND`] after the intent when none
/// did (plus [`CLOCK_SKEW`]). A key created outside that span is not the call's.
fn created_during(intent: &OpenIntent, created_at: DateTime<Utc>) -> bool {
    let answered = intent
        .answered_at
        .unwrap_or_else(|| after(intent.at, CREATE_CALL_BOUND));
    before(intent.at, CLOCK_SKEW) <= created_at && created_at <= after(answered, CLOCK_SKEW)
}

/// Whether an untracked key may be a replacement this campaign created without recording
/// it (its process died between CreateAccessKey and the append, or the call failed after
/// taking effect): a key created while an open intent to create a replacement was in
/// flight (see [`CREATE_CALL_BOUND`] and [`CLOCK_SKEW`]), or the target of an open intent
/// to delete such an orphan. It is never enrolled, which would take it for the user's
/// own second key and block the rotation for good: [`decide`] deletes it if it was never
/// used and does not sign the run, and blocks the user for a human otherwise. A key
/// created outside that span may be enrolled as usual.
pub fn is_unrecorded_replacement(state: &UserState, key: &ObservedKey) -> bool {
    state.tracking(&key.key).is_none()
        && state.keys.values().any(|ks| match &ks.open_intent {
            Some(intent) if intent.step == Step::CreateReplacement => {
                created_during(intent, key.created_at)
            }
            Some(intent) if intent.step == Step::DeleteOrphan => {
                intent.target.as_ref() == Some(&key.key)
            }
            _ => false,
        })
}

/// The events that take on the keys a campaign does not track yet. The caller's own
/// key is left out rather than recorded as skipped: another caller may rotate it. So is
/// a replacement the campaign may have created without recording it
/// ([`is_unrecorded_replacement`]): the decisions reconcile it.
pub fn enroll(
    state: &UserState,
    keys: &[ObservedKey],
    plans: &[KeyPlan],
    caller_key: Option<&AccessKeyId>,
) -> Vec<RotationEvent> {
    plans
        .iter()
        .filter(|plan| state.tracking(&plan.key).is_none() && Some(&plan.key) != caller_key)
        .filter_map(|plan| {
            let observed = keys.iter().find(|k| k.key == plan.key)?;
            if is_unrecorded_replacement(state, observed) {
                return None;
            }
            match plan.action {
                PlanAction::Skip => Some(RotationEvent::KeySkipped {
                    key: plan.key.clone(),
                    reason: plan.reason.clone(),
                }),
                PlanAction::Blocked => Some(RotationEvent::KeyBlocked {
                    key: plan.key.clone(),
                    reason: plan.reason.clone(),
                    evidence: None,
                }),
                PlanAction::None => None,
                action => Some(RotationEvent::KeyEnrolled {
                    key: plan.key.clone(),
                    path: action.path()?,
                    reason: plan.reason.clone(),
                    created_at: observed.created_at,
                    last_used_at: observed.last_used_at,
                }),
            }
        })
        .collect()
}

/// A mutation (or a reconciliation) to perform on a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the replacement, deliver its secret, read it back and verify it — in one go.
    CreateReplacement {
        /// The attempt number (it derives the delivery's idempotency token).
        attempt: u32,
    },
    /// After a crash between creation and delivery: find out whether the secret version
    /// of `attempt` was stored; if not, the replacement is an orphan.
    RecoverDelivery {
        /// The replacement whose secret may be lost.
        new_key: AccessKeyId,
        /// The attempt that created it.
        attempt: u32,
    },
    /// Verify the delivered replacement (reading its secret back from the store).
    Verify {
        /// The replacement.
        new_key: AccessKeyId,
    },
    /// Delete a replacement whose secret was never stored.
    DeleteOrphan {
        /// The orphan.
        orphan: AccessKeyId,
    },
    /// Make the key Inactive, on this evidence.
    Deactivate {
        /// The fresh last-use evidence.
        evidence: UseEvidence,
    },
    /// Delete the key.
    Delete,
    /// Make the key Active again: a rollback's reactivation that was intended (and
    /// recorded) but not carried out, because its process died or the call failed.
    Reactivate,
    /// Only record an event (blocked, failed, released, vanished, re-planned…).
    Record(RotationEvent),
}

/// What to do next for a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Perform an action on a key.
    Act {
        /// The tracked (old) key.
        key: AccessKeyId,
        /// The action.
        action: Action,
    },
    /// Ask GetAccessKeyLastUsed for this key, then decide again with the answer.
    CheckLastUse {
        /// The key.
        key: AccessKeyId,
    },
    /// Nothing to do before `until` (or until something else changes, when `None`).
    Wait {
        /// The key waiting.
        key: AccessKeyId,
        /// When to look again.
        until: Option<DateTime<Utc>>,
        /// Why, in words.
        reason: String,
    },
    /// Every key of the user is settled.
    Idle,
}

/// Whether `o`, the tracked state of the user's other key (`other`, as observed), is
/// itself a rotation without a replacement that waits for the second key slot (Active,
/// pending) or was blocked: it never frees the slot, so a rotation waiting for it would
/// wait forever. A retirement turned into a rotation by a rollback gets there.
pub(super) fn rotation_waiting_for_the_slot(o: &KeyState, other: &ObservedKey) -> bool {
    o.key == other.key
        && o.path == Some(Path::Rotate)
        && o.new_key.is_none()
        && match o.phase {
            Phase::Pending => other.status == KeyStatus::Active,
            Phase::Blocked => true,
            _ => false,
        }
}

/// The reconciliation of a replacement the campaign created, or may have created, whose
/// secret may be lost, if one is due: a created replacement whose delivery is unknown
/// (`RecoverDelivery`), an orphan whose deletion was intended (deleted, or recorded as
/// deleted once IAM no longer shows it), and a key that an open create intent may have
/// left behind ([`is_unrecorded_replacement`]). It does not depend on what became of the
/// old key.
///
/// The first two are keyturn's own recorded keys. The last is only a key created while
/// the call was in flight, which could be someone else's: it is deleted only on fresh
/// evidence that it was never used (asked first with `CheckLastUse`), and never when it
/// signs the run (`caller_key`). Used, or the run's own, it is left alone and the user
/// is blocked for a human.
fn reconcile_created(
    state: &UserState,
    ks: &KeyState,
    observed: &[ObservedKey],
    fresh: Option<&FreshUse>,
    caller_key: Option<&AccessKeyId>,
) -> Option<Decision> {
    let act = |action| {
        Some(Decision::Act {
            key: ks.key.clone(),
            action,
        })
    };
    if ks.phase == Phase::Created {
        let new_key = ks.new_key.clone().expect("a created replacement has an id");
        return act(Action::RecoverDelivery {
            new_key,
            attempt: ks.create_attempts,
        });
    }
    let intent = ks.open_intent.as_ref()?;
    match intent.step {
        Step::DeleteOrphan => {
            let orphan = intent.target.clone()?;
            if observed.iter().any(|k| k.key == orphan) {
                act(Action::DeleteOrphan { orphan })
            } else {
                act(Action::Record(RotationEvent::OrphanDeleted {
                    key: ks.key.clone(),
                    orphan,
                }))
            }
        }
        Step::CreateReplacement => {
            let candidate = observed.iter().find(|k| {
                k.key != ks.key
                    && state.tracking(&k.key).is_none()
                    && created_during(intent, k.created_at)
            })?;
            let fresh = fresh.filter(|f| f.key == candidate.key);
            let used = candidate
                .last_used_at
                .or_else(|| fresh.and_then(|f| f.last_used_at));
            let why = if caller_key == Some(&candidate.key) {
                "it signs this run".to_owned()
            } else if let Some(used) = used {
                format!("it was used (at {})", used.to_rfc3339())
            } else if fresh.is_none() {
                return Some(Decision::CheckLastUse {
                    key: candidate.key.clone(),
                });
            } else {
                return act(Action::DeleteOrphan {
                    orphan: candidate.key.clone(),
                });
            };
            act(Action::Record(RotationEvent::KeyBlocked {
                key: ks.key.clone(),
                reason: format!(
                    "an unknown key {} was created while keyturn's CreateAccessKey was in flight, and {why}: not deleting it; a human must decide whether it is keyturn's replacement",
                    candidate.key
                ),
                evidence: None,
            }))
        }
        _ => None,
    }
}

/// What one key needs, before priorities between keys are applied.
fn decide_key(
    state: &UserState,
    ks: &KeyState,
    observed: &[ObservedKey],
    fresh: Option<&FreshUse>,
    caller_key: Option<&AccessKeyId>,
    rules: &Rotation,
    now: DateTime<Utc>,
) -> Decision {
    let key = ks.key.clone();
    let act = |action| Decision::Act {
        key: key.clone(),
        action,
    };
    let record = |event| Decision::Act {
        key: key.clone(),
        action: Action::Record(event),
    };
    let wait = |until: Option<DateTime<Utc>>, reason: &str| Decision::Wait {
        key: key.clone(),
        until,
        reason: reason.to_owned(),
    };

    let backoff = ks.last_failure_at.and_then(|failed_at| {
        let retry_at = after(failed_at, backoff(ks.failures));
        (now < retry_at).then(|| {
            let code = ks.last_failure_code.as_deref().unwrap_or("an error");
            wait(
                Some(retry_at),
                &format!("retrying after {code} ({} of {MAX_FAILURES})", ks.failures),
            )
        })
    });

    // A replacement this campaign created, or may have created, without storing its
    // secret is reconciled before anything that ends the key's path (the last failure
    // allowed, the old key vanished or released): those close the open intent, after
    // which the created key, Active and with its secret lost, would never be looked at
    // again. A call the reconciliation makes waits out the backoff of a failure; an
    // outcome it only records does not.
    if let Some(reconciliation) = reconcile_created(state, ks, observed, fresh, caller_key) {
        return match (&reconciliation, backoff) {
            (
                Decision::Act {
                    action: Action::Record(_),
                    ..
                },
                _,
            )
            | (_, None) => reconciliation,
            (_, Some(wait)) => wait,
        };
    }
    if ks.failures >= MAX_FAILURES {
        let code = ks.last_failure_code.clone().unwrap_or_default();
        return record(RotationEvent::KeyFailed {
            key: key.clone(),
            reason: format!("{} failures in a row, the last with {code}", ks.failures),
        });
    }
    if let Some(wait) = backoff {
        return wait;
    }

    let Some(current) = observed.iter().find(|k| k.key == ks.key) else {
        let deleting = ks.intends(Step::Delete);
        return if deleting {
            record(RotationEvent::KeyDeleted {
                key: key.clone(),
                already_gone: true,
            })
        } else {
            record(RotationEvent::KeyVanished { key: key.clone() })
        };
    };
    let fresh = fresh.filter(|f| f.key == ks.key);

    let turn = Turn {
        ks,
        state,
        current,
        observed,
        fresh,
        rules,
        now,
    };
    match (ks.phase, ks.path) {
        (Phase::Pending, Some(Path::DeleteInactive)) => pending_delete_inactive(&turn),
        (Phase::Pending, Some(Path::RetireUnused)) => pending_retire_unused(&turn),
        (Phase::Pending, Some(Path::Rotate)) => pending_rotate(&turn),
        (Phase::Delivered, _) => act(Action::Verify {
            new_key: ks
                .new_key
                .clone()
                .expect("a delivered replacement has an id"),
        }),
        (Phase::AwaitingAdoption, _) => awaiting_adoption(&turn),
        (Phase::Observing, _) => observing(&turn),
        _ => Decision::Idle,
    }
}

/// The next thing to do for a user: reconciliations and the steps that free a key slot
/// come first, then the rotation; otherwise the earliest wait. `caller_key` is the key
/// the run is signed with, if it is an access key: a key an open create intent may have
/// left is never deleted when it is that key.
pub fn decide(
    state: &UserState,
    observed: &[ObservedKey],
    fresh: Option<&FreshUse>,
    caller_key: Option<&AccessKeyId>,
    rules: &Rotation,
    now: DateTime<Utc>,
) -> Decision {
    let priority = |ks: &KeyState| match ks.path {
        Some(Path::DeleteInactive) => 0,
        Some(Path::RetireUnused) => 1,
        _ => 2,
    };
    let mut open: Vec<&KeyState> = state
        .keys
        .values()
        .filter(|k| !k.phase.is_terminal())
        .collect();
    open.sort_by_key(|k| (k.phase != Phase::Created, priority(k), k.key.clone()));
    let mut earliest: Option<Decision> = None;
    let mut indefinite: Option<Decision> = None;
    for ks in open {
        match decide_key(state, ks, observed, fresh, caller_key, rules, now) {
            Decision::Idle => {}
            wait @ Decision::Wait {
                until: Some(until), ..
            } => {
                let sooner = match &earliest {
                    Some(Decision::Wait {
                        until: Some(current),
                        ..
                    }) => until < *current,
                    _ => true,
                };
                if sooner {
                    earliest = Some(wait);
                }
            }
            wait @ Decision::Wait { until: None, .. } => {
                indefinite.get_or_insert(wait);
            }
            other => return other,
        }
    }
    earliest.or(indefinite).unwrap_or(Decision::Idle)
}
