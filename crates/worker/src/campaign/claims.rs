//! Account claims: at most one worker acts on an account of a campaign at a time.
//!
//! A claim is an event in the account's own stream of the campaign (`account/<id>`),
//! appended at the stream's expected version, so two workers can never both take it.
//! It expires unless renewed; a worker renews before each mutation once half the
//! time is gone, and stops working on the account the moment a renewal conflicts
//! (someone else took the claim after it expired): the claim's stream version is the
//! fencing token.

use chrono::{DateTime, Utc};
use keyturn_journal::{
    Actor, EventSchema, Journal, JournalError, NewEvent, SchemaVersion, StreamId, decode,
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

/// A claim this run holds.
#[derive(Debug, Clone)]
pub struct Claim {
    stream: StreamId,
    version: u64,
    expires_at: DateTime<Utc>,
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
pub async fn acquire(
    journal: &dyn Journal,
    campaign: &CampaignName,
    account: &AccountId,
    actor: &Actor,
    ttl: chrono::Duration,
) -> Result<Acquired, JournalError> {
    let stream = claim_stream(campaign, account)?;
    for _ in 0..3 {
        let events = journal.read_stream(&stream).await?;
        let version = events.last().map_or(0, |e| e.sequence);
        if let Some(last) = events.last()
            && let ClaimEvent::ClaimTaken { run_id, expires_at } = decode::<ClaimEvent>(last)?
            && run_id != actor.run_id
            && expires_at > Utc::now()
        {
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
            .append(
                &stream,
                version,
                vec![NewEvent::encode(&event, actor.clone()).with_account(account.as_str())],
            )
            .await
        {
            Ok(version) => {
                return Ok(Acquired::Held(Claim {
                    stream,
                    version,
                    expires_at,
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
    /// Renews the claim when less than half of `ttl` is left. `Ok(false)`: the claim was
    /// lost to another run, and this run must stop acting on the account.
    pub async fn keep(
        &mut self,
        journal: &dyn Journal,
        actor: &Actor,
        ttl: chrono::Duration,
    ) -> Result<bool, JournalError> {
        if self.expires_at - Utc::now() > ttl / 2 {
            return Ok(true);
        }
        let expires_at = Utc::now() + ttl;
        let event = ClaimEvent::ClaimTaken {
            run_id: actor.run_id.clone(),
            expires_at,
        };
        match journal
            .append(
                &self.stream,
                self.version,
                vec![NewEvent::encode(&event, actor.clone())],
            )
            .await
        {
            Ok(version) => {
                self.version = version;
                self.expires_at = expires_at;
                Ok(true)
            }
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Lets the account go (best effort: an expired claim frees itself).
    pub async fn release(self, journal: &dyn Journal, actor: &Actor) {
        let event = ClaimEvent::ClaimReleased {
            run_id: actor.run_id.clone(),
        };
        if let Err(e) = journal
            .append(
                &self.stream,
                self.version,
                vec![NewEvent::encode(&event, actor.clone())],
            )
            .await
        {
            tracing::warn!("could not release the claim on {}: {e}", self.stream);
        }
    }
}
