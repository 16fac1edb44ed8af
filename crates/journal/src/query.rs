//! Audit queries: the events that match a filter, oldest first, each served by an
//! index (a campaign partition, the account-and-time index, or the two access-key
//! indexes), never by a scan. Filters that no index serves are applied to the
//! answer of the most selective index query. Every event read is checked against its
//! own hash first (an edited one is [`JournalError::Tampered`]).

use chrono::{DateTime, Utc};

use crate::{Envelope, Journal, JournalError, envelope_hash};

/// What an auditor asks for; every field narrows the answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// One campaign.
    pub campaign: Option<String>,
    /// One account.
    pub account_id: Option<String>,
    /// One user (with an account, a campaign or a key: user names repeat across accounts).
    pub user_name: Option<String>,
    /// One access key, whether it was the old or the new key of an event.
    pub access_key_id: Option<String>,
    /// One event type.
    pub event_type: Option<String>,
    /// Recorded at or after.
    pub since: Option<DateTime<Utc>>,
    /// Recorded before.
    pub until: Option<DateTime<Utc>>,
}

/// Which index a filter is served by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexUsed {
    /// The two access-key indexes.
    AccessKey,
    /// The account-and-time index.
    AccountTime,
    /// One campaign's partition.
    Campaign,
    /// Every campaign's partition, one query each (from the campaign index).
    AllCampaigns,
}

impl AuditFilter {
    /// The index that serves this filter.
    pub fn index(&self) -> IndexUsed {
        if self.access_key_id.is_some() {
            IndexUsed::AccessKey
        } else if self.account_id.is_some() {
            IndexUsed::AccountTime
        } else if self.campaign.is_some() {
            IndexUsed::Campaign
        } else {
            IndexUsed::AllCampaigns
        }
    }

    /// Whether an event matches every field.
    pub fn matches(&self, event: &Envelope) -> bool {
        let eq = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| Some(w) == have)
        };
        eq(&self.campaign, Some(&event.campaign))
            && eq(&self.account_id, event.account_id.as_deref())
            && eq(&self.user_name, event.user_name.as_deref())
            && eq(&self.event_type, Some(&event.event_type))
            && self
                .access_key_id
                .as_deref()
                .is_none_or(|k| event.access_key_ids.iter().any(|id| id == k))
            && self.since.is_none_or(|t| event.recorded_at >= t)
            && self.until.is_none_or(|t| event.recorded_at < t)
    }
}

/// The events matching `filter`, oldest first.
pub async fn audit(
    journal: &dyn Journal,
    filter: &AuditFilter,
) -> Result<Vec<Envelope>, JournalError> {
    if filter.user_name.is_some()
        && filter.account_id.is_none()
        && filter.campaign.is_none()
        && filter.access_key_id.is_none()
    {
        return Err(JournalError::Rejected(
            "a user name is only unique within an account: add --account, --campaign or --key"
                .to_owned(),
        ));
    }
    if let (Some(since), Some(until)) = (filter.since, filter.until)
        && since >= until
    {
        return Err(JournalError::Rejected(format!(
            "--since {since} is not before --until {until}"
        )));
    }
    let candidates = match filter.index() {
        IndexUsed::AccessKey => {
            journal
                .events_for_access_key(filter.access_key_id.as_deref().unwrap_or_default())
                .await?
        }
        IndexUsed::AccountTime => {
            let from = filter.since.unwrap_or(DateTime::<Utc>::MIN_UTC);
            let to = filter.until.unwrap_or(DateTime::<Utc>::MAX_UTC);
            journal
                .events_for_account(filter.account_id.as_deref().unwrap_or_default(), from, to)
                .await?
        }
        IndexUsed::Campaign => {
            journal
                .read_campaign(filter.campaign.as_deref().unwrap_or_default())
                .await?
        }
        IndexUsed::AllCampaigns => {
            let mut all = Vec::new();
            for campaign in journal.list_campaigns().await? {
                all.extend(journal.read_campaign(&campaign).await?);
            }
            all
        }
    };
    // Every event read is checked against its own hash before it is matched: an event
    // edited to fall outside the filter (another user, another time) is tampering too.
    // The links between events need whole streams: `keyturn verify` checks those.
    if let Some(edited) = candidates.iter().find(|e| envelope_hash(e) != e.hash) {
        return Err(JournalError::Tampered {
            record: format!(
                "{}/{} #{}",
                edited.campaign,
                edited.stream.name(),
                edited.sequence
            ),
            detail: "its content no longer matches its hash".to_owned(),
        });
    }
    let mut events: Vec<Envelope> = candidates
        .into_iter()
        .filter(|e| filter.matches(e))
        .collect();
    events.sort_by(|a, b| a.time_order_key().cmp(&b.time_order_key()));
    Ok(events)
}
