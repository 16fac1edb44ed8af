//! Rotation events: past-tense facts, one stream per IAM user of a campaign.
//!
//! Every AWS mutation is bracketed: a [`RotationEvent::StepIntended`] before the call
//! and an outcome event after it, so a run that dies between the two is reconciled on
//! resume by observing IAM and Secrets Manager. No event ever carries secret material:
//! the secret's ARN and version id are recorded, never its value.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::AccessKeyId;

/// The schema version this build writes: bump the minor for additive changes, the
/// major when an old reader could misread a new payload.
pub const SCHEMA_MAJOR: u16 = 1;
/// See [`SCHEMA_MAJOR`].
pub const SCHEMA_MINOR: u16 = 1;
// 1.1 added the notification events (`notification-sent`, `notification-failed`).

/// What the campaign does to one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Path {
    /// Create a replacement, deliver it, wait for adoption, deactivate, observe, delete.
    Rotate,
    /// An Active key nobody uses: deactivate, observe, delete (no replacement).
    RetireUnused,
    /// An Inactive key: delete it once its observation period has passed.
    DeleteInactive,
}

impl Path {
    /// The plan's word for this path.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rotate => "rotate",
            Self::RetireUnused => "retire-unused",
            Self::DeleteInactive => "delete-inactive",
        }
    }
}

/// An AWS mutation keyturn performs on a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// CreateAccessKey for the replacement (not idempotent: its secret is returned once).
    CreateReplacement,
    /// Store the replacement's secret as a new Secrets Manager version.
    DeliverSecret,
    /// Prove the replacement authenticates.
    VerifyReplacement,
    /// Delete a replacement whose secret was never stored.
    DeleteOrphan,
    /// Make the key Inactive.
    Deactivate,
    /// Make the key Active again (rollback).
    Reactivate,
    /// Delete the key.
    Delete,
}

impl Step {
    /// The step's name in events and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateReplacement => "create-replacement",
            Self::DeliverSecret => "deliver-secret",
            Self::VerifyReplacement => "verify-replacement",
            Self::DeleteOrphan => "delete-orphan",
            Self::Deactivate => "deactivate",
            Self::Reactivate => "reactivate",
            Self::Delete => "delete",
        }
    }
}

/// The last-use evidence a gate decided on, recorded with the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UseEvidence {
    /// When GetAccessKeyLastUsed was asked.
    pub checked_at: DateTime<Utc>,
    /// What it answered (`None`: never used).
    pub last_used_at: Option<DateTime<Utc>>,
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotificationKind {
    /// A replacement was delivered and verified: the owner can fetch it.
    Delivered,
    /// A key is blocked: a human must decide.
    Blocked,
    /// A key failed too many times: a human must look.
    Failed,
    /// The old key is still in use and its adoption timeout is near.
    AdoptionTimeoutApproaching,
}

impl NotificationKind {
    /// Every kind, in the order the policy lists them.
    pub const ALL: [Self; 4] = [
        Self::Delivered,
        Self::Blocked,
        Self::Failed,
        Self::AdoptionTimeoutApproaching,
    ];

    /// The kind's name in the policy, in events and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Blocked => "blocked",
            Self::Failed => "failed",
            Self::AdoptionTimeoutApproaching => "adoption-timeout-approaching",
        }
    }
}

/// Where a notification goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotificationChannel {
    /// An SNS topic (Publish).
    Sns,
    /// A Slack-compatible webhook (HTTP POST of JSON).
    Webhook,
}

impl NotificationChannel {
    /// The channel's name in events and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sns => "sns",
            Self::Webhook => "webhook",
        }
    }
}

/// A rotation event. Every variant names the key it concerns (`key`, the old key for
/// a rotation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RotationEvent {
    /// The key entered the campaign with a path.
    KeyEnrolled {
        key: AccessKeyId,
        path: Path,
        reason: String,
        created_at: DateTime<Utc>,
        last_used_at: Option<DateTime<Utc>>,
    },
    /// The key is out of scope for this campaign (excluded or exempt user, the caller's key).
    KeySkipped { key: AccessKeyId, reason: String },
    /// A human must decide (two keys in use, still in use at the adoption timeout, …).
    KeyBlocked {
        key: AccessKeyId,
        reason: String,
        evidence: Option<UseEvidence>,
    },
    /// A mutation is about to be attempted.
    StepIntended {
        key: AccessKeyId,
        step: Step,
        attempt: u32,
        target: Option<AccessKeyId>,
    },
    /// The replacement exists; its secret is only in the memory of the process that created it.
    ReplacementCreated {
        key: AccessKeyId,
        new_key: AccessKeyId,
        created_at: DateTime<Utc>,
    },
    /// The replacement's secret is stored and was read back.
    SecretDelivered {
        key: AccessKeyId,
        new_key: AccessKeyId,
        secret_arn: String,
        version_id: String,
        recovered: bool,
    },
    /// The replacement authenticated; the adoption clock starts.
    ReplacementVerified {
        key: AccessKeyId,
        new_key: AccessKeyId,
        caller_arn: String,
    },
    /// A replacement whose secret was lost was deleted, to be created again.
    OrphanDeleted {
        key: AccessKeyId,
        orphan: AccessKeyId,
    },
    /// The key was made Inactive, on this evidence.
    KeyDeactivated {
        key: AccessKeyId,
        evidence: UseEvidence,
    },
    /// An operator asked to undo the deactivation.
    RollbackRequested {
        key: AccessKeyId,
        reason: String,
        requested_by: String,
    },
    /// The key is Active again; the adoption gate starts over.
    KeyReactivated { key: AccessKeyId },
    /// The key is gone (`already_gone`: DeleteAccessKey answered NoSuchEntity).
    KeyDeleted {
        key: AccessKeyId,
        already_gone: bool,
    },
    /// The key no longer exists in IAM and keyturn did not delete it.
    KeyVanished { key: AccessKeyId },
    /// The key no longer needs its path (used again before retirement, reactivated by hand…).
    KeyReleased { key: AccessKeyId, reason: String },
    /// A step failed; it is retried with backoff.
    StepFailed {
        key: AccessKeyId,
        step: Step,
        attempt: u32,
        code: String,
        message: String,
    },
    /// Too many failures: the key needs a human.
    KeyFailed { key: AccessKeyId, reason: String },
    /// A notification about the key was accepted by its channel (never carries a secret).
    NotificationSent {
        key: AccessKeyId,
        kind: NotificationKind,
        channel: NotificationChannel,
        /// The owner the message names (the user's owner tag, else the account's email).
        owner: Option<String>,
        /// The replacement the message names, for a delivery.
        new_key: Option<AccessKeyId>,
        /// The channel's id for the message (SNS MessageId), when it gives one.
        message_id: Option<String>,
    },
    /// A notification could not be sent; it never holds up the rotation.
    NotificationFailed {
        key: AccessKeyId,
        kind: NotificationKind,
        channel: NotificationChannel,
        attempt: u32,
        /// The AWS error code, or `WebhookStatus<code>`, `WebhookTimeout`, `WebhookUnreachable`.
        error_code: String,
    },
}

impl RotationEvent {
    /// Every event type this build reads.
    pub const TYPES: &'static [&'static str] = &[
        "key-enrolled",
        "key-skipped",
        "key-blocked",
        "step-intended",
        "replacement-created",
        "secret-delivered",
        "replacement-verified",
        "orphan-deleted",
        "key-deactivated",
        "rollback-requested",
        "key-reactivated",
        "key-deleted",
        "key-vanished",
        "key-released",
        "step-failed",
        "key-failed",
        "notification-sent",
        "notification-failed",
    ];

    /// The event's type name, as stored.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::KeyEnrolled { .. } => "key-enrolled",
            Self::KeySkipped { .. } => "key-skipped",
            Self::KeyBlocked { .. } => "key-blocked",
            Self::StepIntended { .. } => "step-intended",
            Self::ReplacementCreated { .. } => "replacement-created",
            Self::SecretDelivered { .. } => "secret-delivered",
            Self::ReplacementVerified { .. } => "replacement-verified",
            Self::OrphanDeleted { .. } => "orphan-deleted",
            Self::KeyDeactivated { .. } => "key-deactivated",
            Self::RollbackRequested { .. } => "rollback-requested",
            Self::KeyReactivated { .. } => "key-reactivated",
            Self::KeyDeleted { .. } => "key-deleted",
            Self::KeyVanished { .. } => "key-vanished",
            Self::KeyReleased { .. } => "key-released",
            Self::StepFailed { .. } => "step-failed",
            Self::KeyFailed { .. } => "key-failed",
            Self::NotificationSent { .. } => "notification-sent",
            Self::NotificationFailed { .. } => "notification-failed",
        }
    }

    /// The key the event concerns.
    pub fn key(&self) -> &AccessKeyId {
        match self {
            Self::KeyEnrolled { key, .. }
            | Self::KeySkipped { key, .. }
            | Self::KeyBlocked { key, .. }
            | Self::StepIntended { key, .. }
            | Self::ReplacementCreated { key, .. }
            | Self::SecretDelivered { key, .. }
            | Self::ReplacementVerified { key, .. }
            | Self::OrphanDeleted { key, .. }
            | Self::KeyDeactivated { key, .. }
            | Self::RollbackRequested { key, .. }
            | Self::KeyReactivated { key }
            | Self::KeyDeleted { key, .. }
            | Self::KeyVanished { key }
            | Self::KeyReleased { key, .. }
            | Self::StepFailed { key, .. }
            | Self::KeyFailed { key, .. }
            | Self::NotificationSent { key, .. }
            | Self::NotificationFailed { key, .. } => key,
        }
    }

    /// Every key id the event concerns (the key, and a replacement or orphan when named).
    pub fn key_ids(&self) -> Vec<&AccessKeyId> {
        let second = match self {
            Self::ReplacementCreated { new_key, .. }
            | Self::SecretDelivered { new_key, .. }
            | Self::ReplacementVerified { new_key, .. } => Some(new_key),
            Self::OrphanDeleted { orphan, .. } => Some(orphan),
            Self::NotificationSent { new_key, .. } => new_key.as_ref(),
            Self::StepIntended { target, .. } => target.as_ref(),
            _ => None,
        };
        std::iter::once(self.key()).chain(second).collect()
    }

    /// The payload as JSON, without the type tag (the journal stores the type apart).
    pub fn to_payload(&self) -> (String, serde_json::Value) {
        let mut value = serde_json::to_value(self).expect("rotation events always serialise");
        if let Some(map) = value.as_object_mut() {
            map.remove("type");
        }
        (self.event_type().to_owned(), value)
    }

    /// Reads a payload written by this or an older minor version of the same major.
    pub fn from_payload(
        event_type: &str,
        major: u16,
        payload: &serde_json::Value,
    ) -> Result<Self, String> {
        if major > SCHEMA_MAJOR {
            return Err(format!(
                "schema {major}.x is newer than this keyturn understands ({SCHEMA_MAJOR}.x)"
            ));
        }
        if !Self::TYPES.contains(&event_type) {
            return Err(format!("unknown event type {event_type:?}"));
        }
        let mut value = payload.clone();
        match value.as_object_mut() {
            Some(map) => {
                map.insert(
                    "type".to_owned(),
                    serde_json::Value::String(event_type.to_owned()),
                );
            }
            None => return Err("payload is not an object".to_owned()),
        }
        serde_json::from_value(value).map_err(|e| format!("{event_type} payload: {e}"))
    }
}

/// Campaign-level events, in the campaign's own stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum CampaignEvent {
    /// The campaign exists, with this policy (its canonical TOML) for its whole life.
    CampaignStarted { policy: String, started_by: String },
}

impl CampaignEvent {
    /// Every campaign event type this build reads.
    pub const TYPES: &'static [&'static str] = &["campaign-started"];

    /// The payload as JSON, without the type tag.
    pub fn to_payload(&self) -> (String, serde_json::Value) {
        let mut value = serde_json::to_value(self).expect("campaign events always serialise");
        if let Some(map) = value.as_object_mut() {
            map.remove("type");
        }
        ("campaign-started".to_owned(), value)
    }

    /// Reads a payload written by this or an older minor version of the same major.
    pub fn from_payload(
        event_type: &str,
        major: u16,
        payload: &serde_json::Value,
    ) -> Result<Self, String> {
        if major > SCHEMA_MAJOR {
            return Err(format!(
                "schema {major}.x is newer than this keyturn understands ({SCHEMA_MAJOR}.x)"
            ));
        }
        let mut value = payload.clone();
        match value.as_object_mut() {
            Some(map) => {
                map.insert(
                    "type".to_owned(),
                    serde_json::Value::String(event_type.to_owned()),
                );
            }
            None => return Err("payload is not an object".to_owned()),
        }
        serde_json::from_value(value).map_err(|e| format!("{event_type} payload: {e}"))
    }
}
