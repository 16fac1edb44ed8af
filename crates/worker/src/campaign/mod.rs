//! Campaigns: starting one with a policy snapshot, loading its journal in one paginated
//! read, running it, reporting its status, and rolling a key back.

pub mod claims;
pub mod codec;
pub mod report;
pub mod run;
pub mod status;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use keyturn_journal::{Actor, Envelope, Journal, StreamHead, decode};
use keyturn_planner::rotation::{CampaignEvent, Phase, RotationEvent, UserState};
use keyturn_planner::{AccessKeyId, AccountId, CampaignName, Policy, UserName};

use self::codec::{
    CAMPAIGN_STREAM, StoredCampaign, StoredRotation, Timed, campaign_event, campaign_stream,
    parse_user_stream,
};
use crate::error::WorkerError;

/// A campaign as recorded at its start.
#[derive(Debug, Clone)]
pub struct Campaign {
    /// Its name.
    pub name: CampaignName,
    /// The policy it runs under, for its whole life.
    pub policy: Policy,
    /// The policy as recorded (canonical TOML).
    pub policy_text: String,
    /// When it was started.
    pub started_at: DateTime<Utc>,
    /// Who started it (caller ARN).
    pub started_by: String,
}

/// What `start` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// The campaign is new.
    Created,
    /// It already existed with the identical policy; nothing changed.
    AlreadyExists,
}

/// Records a new campaign with a snapshot of its policy. Starting an existing campaign
/// is accepted only with the identical policy.
pub async fn start(
    journal: &dyn Journal,
    name: &CampaignName,
    policy: &Policy,
    actor: &Actor,
) -> Result<Started, WorkerError> {
    let text = policy.to_toml();
    let stream = campaign_stream(name)?;
    let event = CampaignEvent::CampaignStarted {
        policy: text.clone(),
        started_by: actor.caller_arn.clone(),
    };
    match journal
        .append(&stream, 0, vec![campaign_event(&event, actor)])
        .await
    {
        Ok(_) => Ok(Started::Created),
        Err(e) if e.is_conflict() => {
            let existing = load(journal, name).await?;
            if existing.policy_text == text {
                Ok(Started::AlreadyExists)
            } else {
                Err(WorkerError::Rejected(format!(
                    "campaign {name} already exists with a different policy; start a campaign under a new name to change the policy"
                )))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads a campaign's start.
pub async fn load(journal: &dyn Journal, name: &CampaignName) -> Result<Campaign, WorkerError> {
    let events = journal.read_stream(&campaign_stream(name)?).await?;
    let first = events.first().ok_or_else(|| unknown(name))?;
    campaign_from(name, first)
}

fn unknown(name: &CampaignName) -> WorkerError {
    WorkerError::Rejected(format!(
        "there is no campaign named {name}; `keyturn campaign list` shows the campaigns of this journal"
    ))
}

fn campaign_from(name: &CampaignName, envelope: &Envelope) -> Result<Campaign, WorkerError> {
    let StoredCampaign(CampaignEvent::CampaignStarted { policy, started_by }) =
        decode::<StoredCampaign>(envelope)?;
    let parsed = Policy::from_toml(&format!("the policy recorded for campaign {name}"), &policy)
        .map_err(|e| WorkerError::Unexpected(e.to_string()))?;
    Ok(Campaign {
        name: name.clone(),
        policy: parsed,
        policy_text: policy,
        started_at: envelope.recorded_at,
        started_by,
    })
}

/// Every campaign of the journal, by name.
pub async fn list(journal: &dyn Journal) -> Result<Vec<Campaign>, WorkerError> {
    let mut campaigns = Vec::new();
    for name in journal.list_campaigns().await? {
        let Ok(name) = CampaignName::new(name) else {
            continue;
        };
        campaigns.push(load(journal, &name).await?);
    }
    Ok(campaigns)
}

/// One user's stream, folded.
#[derive(Debug, Clone, Default)]
pub struct UserEntry {
    /// The stream's version (its last sequence number).
    pub version: u64,
    /// The stream's head (version and last hash), for appends that need no read.
    pub head: StreamHead,
    /// The folded state.
    pub state: UserState,
    /// The events, decoded, with their recording times.
    pub events: Vec<Timed>,
    /// The run that recorded each key's last intent, and when, as read from the
    /// journal: a run that finds another run's open intent younger than a claim's time
    /// to live waits, since that run's call may still reach AWS.
    pub intents_by: BTreeMap<AccessKeyId, (String, DateTime<Utc>)>,
}

impl UserEntry {
    /// Folds envelopes of one user stream, all of it from sequence 1 (its hash chain
    /// is checked by the caller: `load_state` checks the whole campaign's at once).
    pub fn from_envelopes(envelopes: &[Envelope]) -> Result<Self, WorkerError> {
        let mut entry = UserEntry::default();
        for envelope in envelopes {
            let StoredRotation(event) = decode::<StoredRotation>(envelope)?;
            if let RotationEvent::StepIntended { key, .. } = &event {
                entry.intents_by.insert(
                    key.clone(),
                    (envelope.actor.run_id.clone(), envelope.recorded_at),
                );
            }
            entry.fold(event, envelope.recorded_at);
            entry.version = envelope.sequence;
            entry.head = StreamHead::at(envelope);
        }
        Ok(entry)
    }

    /// Until when another run's open intent on `key` may still be under way: its
    /// recording time plus `ttl`, when it is still open and unanswered (no failure
    /// recorded for it), was recorded by a run other than `run_id`, and that time is
    /// not past.
    pub fn foreign_intent(
        &self,
        key: &AccessKeyId,
        run_id: &str,
        ttl: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let open = self.state.keys.get(key)?.open_intent.as_ref()?;
        let (by, at) = self.intents_by.get(key)?;
        let until = *at + ttl;
        // An intent answered by a recorded failure is not under way: its call returned.
        let in_flight = open.answered_at.is_none();
        (in_flight && *at == open.at && by != run_id && now < until).then_some(until)
    }

    /// Folds one event into the state and keeps it, with the time it was recorded.
    pub fn fold(&mut self, event: RotationEvent, at: DateTime<Utc>) {
        self.state.evolve(&event, at);
        self.events.push((event, at));
    }
}

/// The other campaign of the same journal in which `key` is not settled, if any: two
/// campaigns acting on one key would cut each other's gates short (one deleting a key
/// the other deactivated a day ago, say). Read from the journal's index by access key
/// (eventually consistent on DynamoDB: a key enrolled elsewhere in the last second or
/// so is not seen), folding each other campaign's events of the key; a key that is the
/// replacement of a rotation still under way there counts as held too, and so does a
/// key blocked or failed there: a human must decide about it, and another campaign
/// must not decide for them (it stays held until that campaign settles it otherwise).
pub async fn held_elsewhere(
    journal: &dyn Journal,
    campaign: &CampaignName,
    key: &AccessKeyId,
) -> Result<Option<String>, WorkerError> {
    let mut by_campaign: BTreeMap<&str, Vec<(RotationEvent, DateTime<Utc>)>> = BTreeMap::new();
    let envelopes = journal.events_for_access_key(key.as_str()).await?;
    for envelope in &envelopes {
        if envelope.campaign == campaign.as_str() {
            continue;
        }
        if let Ok(StoredRotation(event)) = decode::<StoredRotation>(envelope) {
            by_campaign
                .entry(envelope.campaign.as_str())
                .or_default()
                .push((event, envelope.recorded_at));
        }
    }
    Ok(by_campaign.into_iter().find_map(|(other, events)| {
        let state = UserState::from_events(events.iter().map(|(e, at)| (e, *at)));
        state
            .tracking(key)
            .is_some_and(|ks| {
                !ks.phase.is_terminal() || matches!(ks.phase, Phase::Blocked | Phase::Failed)
            })
            .then(|| other.to_owned())
    }))
}

/// A campaign and every user stream it has, read in one paginated query.
#[derive(Debug, Clone)]
pub struct CampaignState {
    /// The campaign.
    pub campaign: Campaign,
    /// Users by (account, user).
    pub users: BTreeMap<(AccountId, UserName), UserEntry>,
    /// The last event of each account's claim stream, as read (see `claims::acquire`).
    pub claims: BTreeMap<AccountId, Envelope>,
}

/// Loads everything a campaign has recorded, after checking every stream's hash chain:
/// a run decides from these events, so a campaign whose events were modified, removed
/// or reordered is refused (`WorkerError::Tampered`) before anything is folded.
pub async fn load_state(
    journal: &dyn Journal,
    name: &CampaignName,
) -> Result<CampaignState, WorkerError> {
    let envelopes = journal.read_campaign(name.as_str()).await?;
    keyturn_journal::verify_chain(&envelopes)?;
    let mut campaign = None;
    let mut streams: BTreeMap<(AccountId, UserName), Vec<Envelope>> = BTreeMap::new();
    let mut claims = BTreeMap::new();
    for envelope in envelopes {
        let stream = envelope.stream.name().to_owned();
        if stream == CAMPAIGN_STREAM {
            if envelope.sequence == 1 {
                campaign = Some(campaign_from(name, &envelope)?);
            }
        } else if let Some(user) = parse_user_stream(&stream) {
            streams.entry(user).or_default().push(envelope);
        } else if let Some(account) = claims::parse_claim_stream(&stream) {
            // Envelopes come in ascending sequence per stream: the last one stays.
            claims.insert(account, envelope);
        }
    }
    let campaign = campaign.ok_or_else(|| unknown(name))?;
    let users = streams
        .into_iter()
        .map(|(user, envelopes)| Ok((user, UserEntry::from_envelopes(&envelopes)?)))
        .collect::<Result<_, WorkerError>>()?;
    Ok(CampaignState {
        campaign,
        users,
        claims,
    })
}

/// The secret name for a user, from the policy's template.
pub fn secret_name(template: &str, account: &AccountId, user: &UserName) -> String {
    template
        .replace("{account_id}", account.as_str())
        .replace("{user_name}", user.as_str())
}
