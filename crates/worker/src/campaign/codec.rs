//! How rotation and campaign events are stored: stream names, envelope metadata, and
//! the journal's typed decoding (which refuses unknown types and newer schemas).

use chrono::{DateTime, Utc};
use keyturn_journal::{Actor, EventSchema, JournalError, NewEvent, SchemaVersion, StreamId};
use keyturn_planner::rotation::events::{SCHEMA_MAJOR, SCHEMA_MINOR};
use keyturn_planner::rotation::{CampaignEvent, RotationEvent};
use keyturn_planner::{AccountId, CampaignName, UserName};

/// The campaign's own stream (its start, with the policy snapshot).
pub const CAMPAIGN_STREAM: &str = "campaign";

const CURRENT: SchemaVersion = SchemaVersion {
    major: SCHEMA_MAJOR,
    minor: SCHEMA_MINOR,
};

/// A rotation event as the journal stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRotation(pub RotationEvent);

impl EventSchema for StoredRotation {
    const CURRENT: SchemaVersion = CURRENT;

    fn known_types() -> &'static [&'static str] {
        RotationEvent::TYPES
    }

    fn decode(
        event_type: &str,
        version: SchemaVersion,
        payload: &serde_json::Value,
    ) -> Result<Self, String> {
        RotationEvent::from_payload(event_type, version.major, payload).map(Self)
    }

    fn encode(&self) -> (String, serde_json::Value) {
        self.0.to_payload()
    }
}

/// A campaign event as the journal stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCampaign(pub CampaignEvent);

impl EventSchema for StoredCampaign {
    const CURRENT: SchemaVersion = CURRENT;

    fn known_types() -> &'static [&'static str] {
        CampaignEvent::TYPES
    }

    fn decode(
        event_type: &str,
        version: SchemaVersion,
        payload: &serde_json::Value,
    ) -> Result<Self, String> {
        CampaignEvent::from_payload(event_type, version.major, payload).map(Self)
    }

    fn encode(&self) -> (String, serde_json::Value) {
        self.0.to_payload()
    }
}

/// The campaign's own stream.
pub fn campaign_stream(campaign: &CampaignName) -> Result<StreamId, JournalError> {
    StreamId::new(campaign.as_str(), CAMPAIGN_STREAM)
}

/// One user's stream: every event about that user's keys, in order.
pub fn user_stream(
    campaign: &CampaignName,
    account: &AccountId,
    user: &UserName,
) -> Result<StreamId, JournalError> {
    StreamId::new(campaign.as_str(), format!("user/{account}/{user}"))
}

/// The account and user of a user stream's name.
pub fn parse_user_stream(name: &str) -> Option<(AccountId, UserName)> {
    let rest = name.strip_prefix("user/")?;
    let (account, user) = rest.split_once('/')?;
    Some((AccountId::new(account).ok()?, UserName::new(user).ok()?))
}

/// A rotation event ready to append, with its indexed metadata.
pub fn rotation_event(
    event: &RotationEvent,
    account: &AccountId,
    user: &UserName,
    actor: &Actor,
) -> NewEvent {
    NewEvent::encode(&StoredRotation(event.clone()), actor.clone())
        .with_account(account.as_str())
        .with_user(user.as_str())
        .with_access_keys(event.key_ids().iter().map(|k| k.as_str()))
}

/// A campaign event ready to append.
pub fn campaign_event(event: &CampaignEvent, actor: &Actor) -> NewEvent {
    NewEvent::encode(&StoredCampaign(event.clone()), actor.clone())
}

/// A decoded rotation event and when it was recorded.
pub type Timed = (RotationEvent, DateTime<Utc>);
