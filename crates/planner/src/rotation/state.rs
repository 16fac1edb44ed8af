//! Per-key state as a fold of a user's events. No decisions here: `evolve` only
//! records what happened (decide vs evolve).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::events::{
    NotificationChannel, NotificationKind, Path, RotationEvent, Step, UseEvidence,
};
use crate::ids::AccessKeyId;

/// Where a key is in its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Enrolled, nothing done yet (or a replacement is to be created again).
    Pending,
    /// The replacement exists but its secret is not stored (only a live process holds it).
    Created,
    /// The secret is stored; the replacement is not verified yet.
    Delivered,
    /// Verified and delivered: waiting for the old key to go quiet.
    AwaitingAdoption,
    /// Inactive, watched for the observation period.
    Observing,
    /// Deleted at the end of a rotation or as an Inactive key.
    Completed,
    /// Deleted at the end of a retirement.
    Retired,
    /// Out of scope.
    Skipped,
    /// A human must decide.
    Blocked,
    /// Too many failures.
    Failed,
    /// No longer needs anything from this campaign.
    Released,
    /// Gone from IAM without keyturn deleting it.
    Vanished,
}

impl Phase {
    /// Whether nothing more will happen to the key in this campaign.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed
                | Self::Retired
                | Self::Skipped
                | Self::Blocked
                | Self::Failed
                | Self::Released
                | Self::Vanished
        )
    }
}

impl Phase {
    /// The state word `keyturn status` reports.
    pub fn status_word(self) -> &'static str {
        match self {
            Self::Pending | Self::Created | Self::Delivered => "pending",
            Self::AwaitingAdoption => "awaiting-adoption",
            Self::Observing => "observing",
            Self::Completed | Self::Vanished => "completed",
            Self::Retired => "retired",
            Self::Skipped | Self::Released => "skipped",
            Self::Blocked => "blocked",
            Self::Failed => "failed",
        }
    }
}

/// An intent whose outcome has not been recorded yet (a failure is not an outcome: the
/// failed call may have taken effect), except a create that IAM refused
/// ([`create_refused`](super::decide::create_refused)), which created nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenIntent {
    /// The step.
    pub step: Step,
    /// Its attempt number.
    pub attempt: u32,
    /// The key it acts on when that is not the tracked key (an orphan).
    pub target: Option<AccessKeyId>,
    /// When the intent was recorded.
    pub at: DateTime<Utc>,
    /// When a failure answered it (the first `step-failed` of this step and attempt), if
    /// one did: a key the call created was created before then.
    pub answered_at: Option<DateTime<Utc>>,
}

/// What was tried of one notification (a kind on a channel) since what it is about last
/// happened: a new delivery, a new adoption period, a new block or failure starts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotificationLog {
    /// Whether the channel accepted it.
    pub sent: bool,
    /// How many attempts failed.
    pub failures: u32,
    /// When it was last tried.
    pub at: DateTime<Utc>,
}

/// One key's state in the campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    /// The key.
    pub key: AccessKeyId,
    /// Its path (a retirement becomes a rotation when rolled back).
    pub path: Option<Path>,
    /// Where it is.
    pub phase: Phase,
    /// Why it is where it is, in words.
    pub reason: String,
    /// The key's creation, as observed at enrollment.
    pub created_at: Option<DateTime<Utc>>,
    /// The replacement, once created.
    pub new_key: Option<AccessKeyId>,
    /// The delivered secret's ARN and version.
    pub delivery: Option<(String, String)>,
    /// When the adoption gate started (verification, or reactivation after a rollback).
    pub adoption_started_at: Option<DateTime<Utc>>,
    /// When the key was made Inactive.
    pub deactivated_at: Option<DateTime<Utc>>,
    /// The evidence of the last gate decision.
    pub evidence: Option<UseEvidence>,
    /// The intent without an outcome, if any.
    pub open_intent: Option<OpenIntent>,
    /// How many replacements were created (the next CreateAccessKey is attempt + 1).
    pub create_attempts: u32,
    /// Failures since the last success.
    pub failures: u32,
    /// When the last failure happened.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// The AWS error code of the last failure.
    pub last_failure_code: Option<String>,
    /// When the key entered the campaign.
    pub enrolled_at: DateTime<Utc>,
    /// The notifications about the key's current situation, by kind and channel.
    pub notifications: BTreeMap<(NotificationKind, NotificationChannel), NotificationLog>,
}

impl KeyState {
    /// Whether this key's open intent (a call that may be in flight or may have taken
    /// effect) is of `step`.
    pub fn intends(&self, step: Step) -> bool {
        self.open_intent.as_ref().is_some_and(|i| i.step == step)
    }

    fn new(key: AccessKeyId, at: DateTime<Utc>) -> Self {
        Self {
            key,
            path: None,
            phase: Phase::Pending,
            reason: String::new(),
            created_at: None,
            new_key: None,
            delivery: None,
            adoption_started_at: None,
            deactivated_at: None,
            evidence: None,
            open_intent: None,
            create_attempts: 0,
            failures: 0,
            last_failure_at: None,
            last_failure_code: None,
            enrolled_at: at,
            notifications: BTreeMap::new(),
        }
    }

    /// The log of one notification, last tried at `at` (created on its first try).
    fn notification_tried(
        &mut self,
        kind: NotificationKind,
        channel: NotificationChannel,
        at: DateTime<Utc>,
    ) -> &mut NotificationLog {
        let log = self
            .notifications
            .entry((kind, channel))
            .or_insert(NotificationLog {
                sent: false,
                failures: 0,
                at,
            });
        log.at = at;
        log
    }

    fn forget_notifications(&mut self, kinds: &[NotificationKind]) {
        self.notifications
            .retain(|(kind, _), _| !kinds.contains(kind));
    }
}

impl KeyState {
    /// When the key's next gate falls due, from the recorded facts alone (the run
    /// decides on fresh evidence; this is the earliest it could move).
    pub fn next_check_at(&self, rules: &crate::policy::Rotation) -> Option<DateTime<Utc>> {
        let after = |from: Option<DateTime<Utc>>, d| from.map(|t| super::decide::after(t, d));
        if self.phase.is_terminal() {
            return None;
        }
        if let Some(failed) = self.last_failure_at {
            return after(Some(failed), super::decide::backoff(self.failures));
        }
        match self.phase {
            Phase::AwaitingAdoption => after(self.adoption_started_at, rules.quiet_period),
            Phase::Observing => after(self.deactivated_at, rules.observation_period),
            _ => Some(self.enrolled_at),
        }
    }
}

/// Everything the campaign knows about one user's keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserState {
    /// Keys by id, in enrollment order of their ids.
    pub keys: BTreeMap<AccessKeyId, KeyState>,
}

impl UserState {
    /// Folds events (with the times they were recorded) into a state.
    pub fn from_events<'a>(
        events: impl IntoIterator<Item = (&'a RotationEvent, DateTime<Utc>)>,
    ) -> Self {
        let mut state = Self::default();
        for (event, at) in events {
            state.evolve(event, at);
        }
        state
    }

    /// The key state that tracks `key`, either as its old key or as its replacement.
    pub fn tracking(&self, key: &AccessKeyId) -> Option<&KeyState> {
        self.keys
            .get(key)
            .or_else(|| self.keys.values().find(|k| k.new_key.as_ref() == Some(key)))
    }

    /// Applies one event recorded at `at`.
    pub fn evolve(&mut self, event: &RotationEvent, at: DateTime<Utc>) {
        let state = self
            .keys
            .entry(event.key().clone())
            .or_insert_with(|| KeyState::new(event.key().clone(), at));
        match event {
            RotationEvent::KeyEnrolled {
                path,
                reason,
                created_at,
                ..
            } => {
                state.path = Some(*path);
                state.phase = Phase::Pending;
                state.reason = reason.clone();
                state.created_at = Some(*created_at);
                state.enrolled_at = at;
            }
            RotationEvent::KeySkipped { reason, .. } => set(state, Phase::Skipped, reason),
            RotationEvent::KeyBlocked {
                reason, evidence, ..
            } => {
                state.evidence = *evidence;
                state.forget_notifications(&[NotificationKind::Blocked]);
                set(state, Phase::Blocked, reason);
            }
            RotationEvent::StepIntended {
                step,
                attempt,
                target,
                ..
            } => {
                state.open_intent = Some(OpenIntent {
                    step: *step,
                    attempt: *attempt,
                    target: target.clone(),
                    at,
                    answered_at: None,
                });
                if *step == Step::CreateReplacement {
                    state.create_attempts = state.create_attempts.max(*attempt);
                }
            }
            RotationEvent::ReplacementCreated { new_key, .. } => {
                state.new_key = Some(new_key.clone());
                state.phase = Phase::Created;
                succeeded(state);
            }
            RotationEvent::SecretDelivered {
                new_key,
                secret_arn,
                version_id,
                ..
            } => {
                state.new_key = Some(new_key.clone());
                state.delivery = Some((secret_arn.clone(), version_id.clone()));
                state.phase = Phase::Delivered;
                succeeded(state);
            }
            RotationEvent::ReplacementVerified { .. } => {
                state.forget_notifications(&[
                    NotificationKind::Delivered,
                    NotificationKind::AdoptionTimeoutApproaching,
                ]);
                state.phase = Phase::AwaitingAdoption;
                state.adoption_started_at = Some(at);
                state.reason =
                    "replacement delivered and verified; waiting for the old key to go quiet"
                        .to_owned();
                succeeded(state);
            }
            RotationEvent::OrphanDeleted { .. } => {
                // Cleaning up is not progress: a failure count that led here stands, so
                // a replacement that can never be delivered ends `failed`, not in a loop.
                state.new_key = None;
                state.delivery = None;
                state.phase = Phase::Pending;
                state.open_intent = None;
            }
            RotationEvent::KeyDeactivated { evidence, .. } => {
                state.phase = Phase::Observing;
                state.deactivated_at = Some(at);
                state.evidence = Some(*evidence);
                state.reason = "Inactive; observing before deletion".to_owned();
                succeeded(state);
            }
            RotationEvent::RollbackRequested { reason, .. } => {
                state.reason = format!("rollback requested: {reason}");
            }
            RotationEvent::KeyReactivated { .. } => {
                state.forget_notifications(&[NotificationKind::AdoptionTimeoutApproaching]);
                state.deactivated_at = None;
                if state.path == Some(Path::RetireUnused) {
                    // The key is evidently needed: it gets a replacement instead.
                    state.path = Some(Path::Rotate);
                    state.phase = Phase::Pending;
                } else {
                    state.phase = Phase::AwaitingAdoption;
                    state.adoption_started_at = Some(at);
                }
                succeeded(state);
            }
            RotationEvent::KeyDeleted { .. } => {
                let phase = if state.path == Some(Path::RetireUnused) {
                    Phase::Retired
                } else {
                    Phase::Completed
                };
                state.phase = phase;
                state.reason = match phase {
                    Phase::Retired => "unused key deactivated, observed and deleted".to_owned(),
                    _ if state.path == Some(Path::DeleteInactive) => {
                        "Inactive key deleted".to_owned()
                    }
                    _ => "rotated: replacement delivered, old key deleted".to_owned(),
                };
                succeeded(state);
            }
            RotationEvent::KeyVanished { .. } => {
                set(
                    state,
                    Phase::Vanished,
                    "the key no longer exists in IAM (deleted outside keyturn)",
                );
                state.open_intent = None;
            }
            RotationEvent::KeyReleased { reason, .. } => {
                set(state, Phase::Released, reason);
                state.open_intent = None;
            }
            RotationEvent::StepFailed {
                step,
                attempt,
                code,
                ..
            } => {
                // The intent stays open: a call that failed may still have taken effect
                // (a key created, an orphan deleted, a key reactivated, a timeout after
                // the fact), so the decisions keep reconciling it by observing IAM until
                // an outcome closes it or the next attempt's intent replaces it. The
                // failure bounds when the call took effect, if it did. A create that IAM
                // refused created nothing: its intent is closed, so that no key created
                // afterwards is taken for its orphan.
                let answers = |i: &OpenIntent| i.step == *step && i.attempt == *attempt;
                if state.open_intent.as_ref().is_some_and(answers) {
                    if *step == Step::CreateReplacement && super::decide::create_refused(code) {
                        state.open_intent = None;
                    } else if let Some(intent) = state.open_intent.as_mut() {
                        intent.answered_at.get_or_insert(at);
                    }
                }
                state.failures += 1;
                state.last_failure_at = Some(at);
                state.last_failure_code = Some(code.clone());
            }
            RotationEvent::KeyFailed { reason, .. } => {
                state.forget_notifications(&[NotificationKind::Failed]);
                set(state, Phase::Failed, reason);
                state.open_intent = None;
            }
            // Notifications are side notes: they change neither the phase nor the
            // failure count of the rotation.
            RotationEvent::NotificationSent { kind, channel, .. } => {
                let log = state.notification_tried(*kind, *channel, at);
                log.sent = true;
            }
            RotationEvent::NotificationFailed { kind, channel, .. } => {
                let log = state.notification_tried(*kind, *channel, at);
                log.failures += 1;
            }
        }
    }
}

fn set(state: &mut KeyState, phase: Phase, reason: &str) {
    state.phase = phase;
    state.reason = reason.to_owned();
}

/// An outcome closes the open intent and clears the failure count.
fn succeeded(state: &mut KeyState) {
    state.open_intent = None;
    state.failures = 0;
    state.last_failure_at = None;
    state.last_failure_code = None;
}
