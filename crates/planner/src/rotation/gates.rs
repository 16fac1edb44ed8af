//! The gates of one tracked key, one function per phase and path: what
//! [`super::decide`] does for a key once its reconciliations, failures and
//! disappearance are settled. Pure, like the rest of the model.

use chrono::{DateTime, Utc};

use super::decide::{
    Action, Decision, FreshUse, ObservedKey, after, chrono, rotation_waiting_for_the_slot,
    unused_since,
};
use super::events::{Path, RotationEvent, Step, UseEvidence};
use super::state::{KeyState, UserState};
use crate::ids::AccessKeyId;
use crate::inventory::KeyStatus;
use crate::policy::{Rotation, format_duration};

/// What one key's decision sees: its state, the user's, the key as listed now, the
/// user's keys, a fresh last-use answer about it if one was asked, the rules and now.
#[derive(Clone, Copy)]
pub(super) struct Turn<'a> {
    pub ks: &'a KeyState,
    pub state: &'a UserState,
    pub current: &'a ObservedKey,
    pub observed: &'a [ObservedKey],
    pub fresh: Option<&'a FreshUse>,
    pub rules: &'a Rotation,
    pub now: DateTime<Utc>,
}

impl Turn<'_> {
    fn act(&self, action: Action) -> Decision {
        Decision::Act {
            key: self.ks.key.clone(),
            action,
        }
    }

    fn record(&self, event: RotationEvent) -> Decision {
        self.act(Action::Record(event))
    }

    /// The key's replacement, when it is no longer listed Active (deleted or made
    /// Inactive outside keyturn); `None` for a key without one.
    fn replacement_gone(&self) -> Option<&AccessKeyId> {
        self.ks.new_key.as_ref().filter(|new_key| {
            !self
                .observed
                .iter()
                .any(|k| &k.key == *new_key && k.status == KeyStatus::Active)
        })
    }

    fn wait(&self, until: Option<DateTime<Utc>>, reason: &str) -> Decision {
        Decision::Wait {
            key: self.ks.key.clone(),
            until,
            reason: reason.to_owned(),
        }
    }
}

/// An Inactive key enrolled for deletion: deleted once unused for the observation
/// period, asked fresh; released when someone made it Active again.
pub(super) fn pending_delete_inactive(t: &Turn<'_>) -> Decision {
    let Turn {
        ks,
        current,
        fresh,
        rules,
        now,
        ..
    } = *t;
    let key = &ks.key;
    if current.status == KeyStatus::Active {
        return t.record(RotationEvent::KeyReleased {
            key: key.clone(),
            reason: "made Active again outside keyturn".to_owned(),
        });
    }
    let Some(fresh) = fresh else {
        // A last use only ever moves later, so a fresh answer can only push the
        // deletion further out: while the period is not over even from the last
        // use already known, the check (one call) is not worth asking.
        let due = after(unused_since(current), rules.observation_period);
        if now < due {
            return t.wait(Some(due), "Inactive; waiting for the observation period");
        }
        return Decision::CheckLastUse { key: key.clone() };
    };
    let quiet = ObservedKey {
        last_used_at: fresh.last_used_at,
        ..current.clone()
    };
    let due = after(unused_since(&quiet), rules.observation_period);
    if now >= due {
        t.act(Action::Delete)
    } else {
        t.wait(Some(due), "Inactive; waiting for the observation period")
    }
}

/// An unused Active key enrolled for retirement: deactivated only if still unused on
/// fresh evidence; rotated instead when used again and old, else released.
pub(super) fn pending_retire_unused(t: &Turn<'_>) -> Decision {
    let Turn {
        ks,
        current,
        fresh,
        rules,
        now,
        ..
    } = *t;
    let key = &ks.key;
    // Inactive because of our own deactivation whose outcome was lost (the run died
    // after UpdateAccessKey): not "outside keyturn". It is decided again on fresh
    // evidence, and UpdateAccessKey is idempotent.
    let deactivating = ks.intends(Step::Deactivate);
    if current.status == KeyStatus::Inactive && !deactivating {
        return t.record(RotationEvent::KeyReleased {
            key: key.clone(),
            reason: "made Inactive outside keyturn".to_owned(),
        });
    }
    let Some(fresh) = fresh else {
        return Decision::CheckLastUse { key: key.clone() };
    };
    let quiet = ObservedKey {
        last_used_at: fresh.last_used_at,
        ..current.clone()
    };
    if now - unused_since(&quiet) >= chrono(rules.unused_after) {
        t.act(Action::Deactivate {
            evidence: UseEvidence {
                checked_at: fresh.checked_at,
                last_used_at: fresh.last_used_at,
            },
        })
    } else if now - current.created_at > chrono(rules.max_key_age) {
        t.record(RotationEvent::KeyEnrolled {
            key: key.clone(),
            path: Path::Rotate,
            reason: "used again since it was planned for retirement: rotating it instead"
                .to_owned(),
            created_at: current.created_at,
            last_used_at: fresh.last_used_at,
        })
    } else {
        t.record(RotationEvent::KeyReleased {
            key: key.clone(),
            reason: "used again since it was planned for retirement".to_owned(),
        })
    }
}

/// A key to rotate, before its replacement: create one, once the user's second slot
/// is free (or block when it never will be).
pub(super) fn pending_rotate(t: &Turn<'_>) -> Decision {
    let Turn {
        ks,
        state,
        current,
        observed,
        ..
    } = *t;
    let key = &ks.key;
    if current.status == KeyStatus::Inactive {
        return t.record(RotationEvent::KeyReleased {
            key: key.clone(),
            reason: "made Inactive outside keyturn".to_owned(),
        });
    }
    if let Some(other) = observed.iter().find(|k| k.key != ks.key) {
        let tracked = state.tracking(&other.key);
        if tracked.is_some_and(|o| rotation_waiting_for_the_slot(o, other)) {
            // Each waits for the other to free the slot: the key decided first (in
            // `decide`'s order) is blocked first, then the other for the same reason.
            return t.record(RotationEvent::KeyBlocked {
                key: key.clone(),
                reason: format!(
                    "the user's other key {} is to be rotated too, and neither rotation can free the second key slot for the other: a human must choose which one to rotate first (keyturn never deletes a key in use)",
                    other.key
                ),
                evidence: None,
            });
        }
        return match tracked {
            Some(o) if !o.phase.is_terminal() => t.wait(
                None,
                &format!(
                    "waiting for {} to be deleted, to free the second key slot",
                    other.key
                ),
            ),
            _ => t.record(RotationEvent::KeyBlocked {
                key: key.clone(),
                reason: format!(
                    "the user already has a second key ({}) that this campaign does not remove",
                    other.key
                ),
                evidence: None,
            }),
        };
    }
    t.act(Action::CreateReplacement {
        attempt: ks.create_attempts + 1,
    })
}

/// The old key after its replacement was verified: deactivated once quiet for the
/// quiet period on fresh evidence, never while the replacement is gone; blocked at the
/// adoption timeout, or when someone made it Inactive (its quiet can no longer be
/// judged).
pub(super) fn awaiting_adoption(t: &Turn<'_>) -> Decision {
    let Turn {
        ks,
        current,
        fresh,
        rules,
        now,
        ..
    } = *t;
    let key = &ks.key;
    // Made Inactive outside keyturn while the applications move: an Inactive key
    // shows no use, so its quiet span can no longer be judged (a daily job looks
    // quiet after a day of refused calls), and a person is acting on it. Our own
    // deactivation whose outcome was lost is finished below, on fresh evidence.
    let deactivating = ks.intends(Step::Deactivate);
    if current.status == KeyStatus::Inactive && !deactivating {
        return t.record(RotationEvent::KeyBlocked {
            key: key.clone(),
            reason: "made Inactive outside keyturn while awaiting adoption: an Inactive key shows no use, so its quiet period cannot be judged; a human decides whether to delete it or make it Active again".to_owned(),
            evidence: None,
        });
    }
    let started = ks.adoption_started_at.unwrap_or(ks.enrolled_at);
    let earliest = after(started, rules.quiet_period);
    if now < earliest {
        return t.wait(Some(earliest), "waiting for the old key to go quiet");
    }
    let Some(fresh) = fresh else {
        return Decision::CheckLastUse { key: key.clone() };
    };
    let evidence = UseEvidence {
        checked_at: fresh.checked_at,
        last_used_at: fresh.last_used_at,
    };
    let quiet_since = fresh.last_used_at.map_or(started, |used| used.max(started));
    let due = after(quiet_since, rules.quiet_period);
    let timeout = after(started, rules.adoption_timeout);
    // Deactivating the old key is safe only while its replacement is there and
    // Active: deleted or made Inactive outside keyturn, it would leave the user
    // without a working key, so a human decides.
    let replacement_gone = t.replacement_gone();
    if now >= due
        && let Some(new_key) = replacement_gone
    {
        t.record(RotationEvent::KeyBlocked {
            key: key.clone(),
            reason: format!(
                "the replacement {new_key} was deleted or made Inactive outside keyturn: not deactivating the old key, which may be the user's only working key"
            ),
            evidence: Some(evidence),
        })
    } else if now >= due {
        t.act(Action::Deactivate { evidence })
    } else if now >= timeout {
        let used = fresh
            .last_used_at
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        t.record(RotationEvent::KeyBlocked {
            key: key.clone(),
            reason: format!(
                "the old key was still used at {used}, {} after its replacement was delivered: a human must find the application",
                format_duration(rules.adoption_timeout)
            ),
            evidence: Some(evidence),
        })
    } else {
        t.wait(
            Some(due.min(timeout)),
            "the old key is still in use; waiting for the application to switch",
        )
    }
}

/// The deactivated old key: a rollback is finished first; deleted after the whole
/// observation period, unless someone made it Active or used it meanwhile, or its
/// replacement is gone.
pub(super) fn observing(t: &Turn<'_>) -> Decision {
    let Turn {
        ks,
        current,
        fresh,
        rules,
        now,
        ..
    } = *t;
    let key = &ks.key;
    let reactivating = ks.intends(Step::Reactivate);
    if current.status == KeyStatus::Active && reactivating {
        return t.record(RotationEvent::KeyReactivated { key: key.clone() });
    }
    if reactivating {
        // A rollback was asked for and intended: finish it, never delete the key.
        return t.act(Action::Reactivate);
    }
    if current.status == KeyStatus::Active {
        return t.record(RotationEvent::KeyBlocked {
            key: key.clone(),
            reason: "reactivated outside keyturn during observation: not deleting an Active key"
                .to_owned(),
            evidence: None,
        });
    }
    // The Inactive old key is the only way back while its replacement is not
    // there and Active (deleted or made Inactive outside keyturn during the
    // observation): deleting it would leave the user with no key to reactivate,
    // so a human decides, and is told at once rather than when the deletion
    // falls due. A retirement has no replacement.
    if let Some(new_key) = t.replacement_gone() {
        return t.record(RotationEvent::KeyBlocked {
            key: key.clone(),
            reason: format!(
                "the replacement {new_key} was deleted or made Inactive outside keyturn during observation: not deleting the old key, the only way back"
            ),
            evidence: None,
        });
    }
    // A use recorded after the last use the deactivation was decided on means the
    // key was made Active and used during the observation, and Inactive again
    // since (a person, a pipeline): its observation is void, and a human decides.
    // The listing may show it already; at the end, a fresh answer is asked for.
    let before = ks.evidence.and_then(|e| e.last_used_at);
    let used_since = |last: Option<DateTime<Utc>>| last.filter(|l| Some(*l) > before);
    if let Some(last) =
        used_since(current.last_used_at).or_else(|| fresh.and_then(|f| used_since(f.last_used_at)))
    {
        return t.record(RotationEvent::KeyBlocked {
            key: key.clone(),
            reason: format!(
                "used at {} after keyturn deactivated it: made Active outside keyturn during observation; not deleting",
                last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            evidence: None,
        });
    }
    let due = after(ks.deactivated_at.unwrap_or(now), rules.observation_period);
    if now < due {
        t.wait(Some(due), "Inactive; observing before deletion")
    } else if fresh.is_none() {
        Decision::CheckLastUse { key: key.clone() }
    } else {
        t.act(Action::Delete)
    }
}
