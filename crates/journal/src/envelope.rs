//! The journal's data model: stream ids, the events callers append ([`NewEvent`]) and
//! the sealed, hash-chained records the journal stores and reads back ([`Envelope`]).
//!
//! Validation of everything a caller hands in lives here too, so that every backend
//! accepts and refuses exactly the same input, and `seal_batch` is the one place
//! where new envelopes are numbered, timestamped and hashed.

use std::fmt;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use crate::error::JournalError;
use crate::hash::envelope_hash;

/// The most events one [`crate::Journal::append`] call (or one group append, all its
/// streams together) may carry.
///
/// DynamoDB writes a batch as one transaction, which older DynamoDB caps at 25 items.
/// Besides the events, the first batch of a campaign writes the campaign's index item,
/// and a fenced write checks its fence with one more item: 23 events and those two
/// make 25.
pub const MAX_EVENTS_PER_APPEND: usize = 23;

/// The longest serialised payload the journal accepts, in bytes.
///
/// A batch of [`MAX_EVENTS_PER_APPEND`] events at this size stays well within
/// DynamoDB's 400 KB item and 4 MB transaction limits. Events record facts about a
/// rotation step, never bulk data.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// The longest campaign name, stream name or event type, in characters.
pub const MAX_NAME_LEN: usize = 200;

/// The longest metadata text (account id, user name, access key id, actor fields).
pub const MAX_METADATA_LEN: usize = 1024;

/// The most access key ids one event may carry: the old key and its replacement.
pub const MAX_ACCESS_KEY_IDS: usize = 2;

/// Identifies one stream: a campaign and a name inside it.
///
/// Both parts are non-empty printable ASCII (space to `~`) without `#`, at most
/// [`MAX_NAME_LEN`] characters. `#` is reserved as the separator of the DynamoDB keys.
/// Displays as `campaign/name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawStreamId")]
pub struct StreamId {
    campaign: String,
    name: String,
}

/// The unvalidated form of a [`StreamId`], used to validate on deserialisation.
#[derive(Deserialize)]
struct RawStreamId {
    campaign: String,
    name: String,
}

impl TryFrom<RawStreamId> for StreamId {
    type Error = JournalError;

    fn try_from(raw: RawStreamId) -> Result<Self, Self::Error> {
        StreamId::new(raw.campaign, raw.name)
    }
}

impl StreamId {
    /// Validates and builds a stream id.
    pub fn new(campaign: impl Into<String>, name: impl Into<String>) -> Result<Self, JournalError> {
        let campaign = campaign.into();
        let name = name.into();
        validate_name("campaign name", &campaign)?;
        validate_name("stream name", &name)?;
        Ok(StreamId { campaign, name })
    }

    /// The campaign the stream belongs to.
    pub fn campaign(&self) -> &str {
        &self.campaign
    }

    /// The stream's name inside its campaign.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.campaign, self.name)
    }
}

/// Validates a campaign name the way [`StreamId::new`] validates its campaign part.
///
/// Readers that take a bare campaign name ([`crate::Journal::read_campaign`]) use it.
pub fn validate_campaign(campaign: &str) -> Result<(), JournalError> {
    validate_name("campaign name", campaign)
}

fn validate_name(what: &str, value: &str) -> Result<(), JournalError> {
    if value.is_empty() {
        return Err(JournalError::rejected(format!(
            "the {what} must not be empty"
        )));
    }
    if value.chars().count() > MAX_NAME_LEN {
        return Err(JournalError::rejected(format!(
            "the {what} `{}…` is longer than {MAX_NAME_LEN} characters",
            value.chars().take(40).collect::<String>().escape_debug()
        )));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(' '..='~').contains(c) || *c == '#')
    {
        return Err(JournalError::rejected(format!(
            "the {what} `{}` contains `{}`: use printable ASCII characters other than `#`",
            value.escape_debug(),
            bad.escape_debug()
        )));
    }
    Ok(())
}

/// The version of an event type's payload schema.
///
/// A new minor version only adds optional fields, so older readers may still decode it;
/// a new major version changes meaning, and older readers refuse it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SchemaVersion {
    /// Incompatible changes.
    pub major: u16,
    /// Compatible additions.
    pub minor: u16,
}

impl SchemaVersion {
    /// Builds a schema version.
    pub const fn new(major: u16, minor: u16) -> Self {
        SchemaVersion { major, minor }
    }
}

impl fmt::Display for SchemaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Who appended an event: the AWS principal and the run it belonged to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Actor {
    /// The ARN of the caller identity that ran the step.
    pub caller_arn: String,
    /// The id of the keyturn run (one process invocation).
    pub run_id: String,
    /// The host the run was on.
    pub host: String,
}

/// An event as callers append it; the journal numbers, timestamps and hashes it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// The event's type, e.g. `KeyCreated`. Printable ASCII, at most [`MAX_NAME_LEN`].
    pub event_type: String,
    /// The schema version of the payload.
    pub schema_version: SchemaVersion,
    /// The payload. Never a secret. At most [`MAX_PAYLOAD_BYTES`] serialised.
    pub payload: serde_json::Value,
    /// The AWS account the event is about, indexed for audit queries.
    pub account_id: Option<String>,
    /// The IAM user the event is about.
    pub user_name: Option<String>,
    /// The access key ids the event is about (the old key and its replacement), at most
    /// [`MAX_ACCESS_KEY_IDS`], distinct; each is indexed for audit queries.
    pub access_key_ids: Vec<String>,
    /// Who appended it.
    pub actor: Actor,
}

impl NewEvent {
    /// Builds an event from a typed event: its type, payload and [`EventSchema::CURRENT`]
    /// version, without indexed metadata (add it with the `with_*` methods).
    ///
    /// [`EventSchema::CURRENT`]: crate::EventSchema::CURRENT
    pub fn encode<E: crate::EventSchema>(event: &E, actor: Actor) -> Self {
        let (event_type, payload) = event.encode();
        NewEvent {
            event_type,
            schema_version: E::CURRENT,
            payload,
            account_id: None,
            user_name: None,
            access_key_ids: Vec::new(),
            actor,
        }
    }

    /// Sets the account the event is about.
    pub fn with_account(mut self, account_id: impl Into<String>) -> Self {
        self.account_id = Some(account_id.into());
        self
    }

    /// Sets the IAM user the event is about.
    pub fn with_user(mut self, user_name: impl Into<String>) -> Self {
        self.user_name = Some(user_name.into());
        self
    }

    /// Sets the access key ids the event is about.
    pub fn with_access_keys<I, S>(mut self, access_key_ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.access_key_ids = access_key_ids.into_iter().map(Into::into).collect();
        self
    }
}

/// A stored event: what the caller appended plus its place in the stream, the time
/// it was recorded and its link in the stream's hash chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The stream the event belongs to.
    pub stream: StreamId,
    /// The event's position in its stream; the first event is 1.
    pub sequence: u64,
    /// The event's type.
    pub event_type: String,
    /// The schema version of the payload.
    pub schema_version: SchemaVersion,
    /// The payload.
    pub payload: serde_json::Value,
    /// When the journal recorded the event, with microsecond precision.
    pub recorded_at: DateTime<Utc>,
    /// The stream's campaign (the same as `stream.campaign()`, kept as its own field
    /// because it is indexed).
    pub campaign: String,
    /// The AWS account the event is about.
    pub account_id: Option<String>,
    /// The IAM user the event is about.
    pub user_name: Option<String>,
    /// The access key ids the event is about, at most two.
    pub access_key_ids: Vec<String>,
    /// Who appended it.
    pub actor: Actor,
    /// The hash of the previous event of the stream; 64 zeros for the first event.
    pub prev_hash: String,
    /// The hash of this event: hex SHA-256 over every other field, see [`crate::hash`].
    pub hash: String,
}

impl Envelope {
    /// `recorded_at` as the journal stores and hashes it: RFC 3339, UTC, microseconds
    /// (`2025-01-31T12:00:00.123456Z`). The text is fixed-width, so it sorts by time.
    pub fn recorded_at_text(&self) -> String {
        format_timestamp(self.recorded_at)
    }

    /// The order of the time-ordered audit queries: time, then campaign, stream and
    /// sequence, so that every backend breaks ties the same way.
    pub fn time_order_key(&self) -> (DateTime<Utc>, &str, &str, u64) {
        (
            self.recorded_at,
            self.stream.campaign(),
            self.stream.name(),
            self.sequence,
        )
    }

    /// A short name of the event for error messages: `campaign/stream #sequence`.
    pub fn label(&self) -> String {
        format!("{} #{}", self.stream, self.sequence)
    }
}

/// Formats a time the way the journal stores `recorded_at`.
pub fn format_timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses a stored `recorded_at` text.
pub(crate) fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|e| {
            format!(
                "recorded_at `{}` is not an RFC 3339 time: {e}",
                text.escape_debug()
            )
        })
}

/// The earliest instant at or after `at` that has whole microseconds.
///
/// Stored times have whole microseconds, so `stored >= at` holds exactly when
/// `stored >= ceil_micros(at)`, and likewise for `<`: range queries on the stored text
/// use it to give the same answer as a comparison of the full-precision times.
pub(crate) fn ceil_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    let truncated = at.trunc_subsecs(6);
    if truncated < at {
        truncated
            .checked_add_signed(chrono::Duration::microseconds(1))
            .unwrap_or(truncated)
    } else {
        truncated
    }
}

/// The earliest `recorded_at` text a range query can name.
const LOWEST_TIMESTAMP_TEXT: &str = "0000-01-01T00:00:00.000000Z";
/// The latest `recorded_at` text a range query can name.
const HIGHEST_TIMESTAMP_TEXT: &str = "9999-12-31T23:59:59.999999Z";

/// The stored-text bounds of the half-open time range `from <= recorded_at < to`, or
/// `None` when the range is empty.
///
/// Both bounds are rounded up to whole microseconds (see [`ceil_micros`]) and clamped
/// to the four-digit years whose text sorts by time. A backend compares the stored text
/// with `>= from` and `< to`; on DynamoDB, whose sort key appends `#campaign#…` to the
/// time, `BETWEEN from AND to` selects exactly the same events.
pub(crate) fn text_range(from: DateTime<Utc>, to: DateTime<Utc>) -> Option<(String, String)> {
    if from >= to {
        return None;
    }
    let bound = |at: DateTime<Utc>| {
        let text = format_timestamp(ceil_micros(at));
        if text.starts_with('-') {
            LOWEST_TIMESTAMP_TEXT.to_owned()
        } else if text.starts_with('+') {
            HIGHEST_TIMESTAMP_TEXT.to_owned()
        } else {
            text
        }
    };
    Some((bound(from), bound(to)))
}

/// Validates the count of a batch and every event in it.
pub(crate) fn validate_batch(events: &[NewEvent]) -> Result<(), JournalError> {
    if events.is_empty() {
        return Err(JournalError::rejected(
            "an append must carry at least one event",
        ));
    }
    if events.len() > MAX_EVENTS_PER_APPEND {
        return Err(JournalError::rejected(format!(
            "an append carries {} events, more than the {MAX_EVENTS_PER_APPEND} allowed in one \
             call: split it into several appends",
            events.len()
        )));
    }
    for (index, event) in events.iter().enumerate() {
        validate_event(event).map_err(|reason| {
            JournalError::rejected(format!(
                "event {} of the batch is refused: {reason}",
                index + 1
            ))
        })?;
    }
    Ok(())
}

/// Validates a [`crate::Journal::append_many_fenced`]: every batch, the rules of the
/// call (see `append_many`) and the fence. The error is every append's: a refused call
/// writes nothing.
pub(crate) fn validate_many(
    appends: &[crate::Append],
    fence: Option<&crate::Fence>,
) -> Result<(), JournalError> {
    let Some(first) = appends.first() else {
        return Err(JournalError::rejected(
            "a group append must carry at least one append",
        ));
    };
    let mut streams = std::collections::BTreeSet::new();
    let mut total = 0;
    for append in appends {
        if append.stream.campaign() != first.stream.campaign() {
            return Err(JournalError::rejected(format!(
                "a group append writes to one campaign, not to both {} and {}",
                first.stream.campaign(),
                append.stream.campaign()
            )));
        }
        if !streams.insert(&append.stream) {
            return Err(JournalError::rejected(format!(
                "a group append names stream {} twice: put its events in one append",
                append.stream
            )));
        }
        validate_batch(&append.events).map_err(|e| {
            JournalError::rejected(format!("the append to {} is refused: {e}", append.stream))
        })?;
        total += append.events.len();
    }
    if total > MAX_EVENTS_PER_APPEND {
        return Err(JournalError::rejected(format!(
            "a group append carries {total} events, more than the {MAX_EVENTS_PER_APPEND} \
             allowed in one call: split it"
        )));
    }
    validate_fence(fence, first.stream.campaign())
}

/// Validates the fence of a write to `campaign`: a stream of the same campaign, at a
/// version a stream can reach. The error is every append's: a refused call writes
/// nothing.
pub(crate) fn validate_fence(
    fence: Option<&crate::Fence>,
    campaign: &str,
) -> Result<(), JournalError> {
    let Some(fence) = fence else {
        return Ok(());
    };
    if fence.stream.campaign() != campaign {
        return Err(JournalError::rejected(format!(
            "a write to campaign {campaign} cannot be fenced on stream {} of another campaign",
            fence.stream
        )));
    }
    if i64::try_from(fence.version).is_err() {
        return Err(JournalError::rejected(format!(
            "the fence on stream {} names version {}, which no stream reaches",
            fence.stream, fence.version
        )));
    }
    Ok(())
}

fn validate_event(event: &NewEvent) -> Result<(), String> {
    if event.event_type.is_empty() {
        return Err("its event type is empty".into());
    }
    if event.event_type.chars().count() > MAX_NAME_LEN {
        return Err(format!(
            "its event type is longer than {MAX_NAME_LEN} characters"
        ));
    }
    if !event.event_type.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "its event type `{}` is not printable ASCII without spaces",
            event.event_type.escape_debug()
        ));
    }
    let payload_len = serde_json::to_vec(&event.payload)
        .map_err(|e| format!("its payload cannot be serialised: {e}"))?
        .len();
    if payload_len > MAX_PAYLOAD_BYTES {
        return Err(format!(
            "its payload is {payload_len} bytes, more than the {MAX_PAYLOAD_BYTES} allowed"
        ));
    }
    if let Some(account_id) = &event.account_id {
        validate_metadata("account id", account_id)?;
    }
    if let Some(user_name) = &event.user_name {
        validate_metadata("user name", user_name)?;
    }
    if event.access_key_ids.len() > MAX_ACCESS_KEY_IDS {
        return Err(format!(
            "it names {} access keys, more than the {MAX_ACCESS_KEY_IDS} allowed (the old key \
             and its replacement)",
            event.access_key_ids.len()
        ));
    }
    for key in &event.access_key_ids {
        validate_metadata("access key id", key)?;
    }
    if event.access_key_ids.len() == 2 && event.access_key_ids[0] == event.access_key_ids[1] {
        return Err(format!(
            "it names access key {} twice",
            event.access_key_ids[0].escape_debug()
        ));
    }
    validate_metadata("actor's caller ARN", &event.actor.caller_arn)?;
    validate_metadata("actor's run id", &event.actor.run_id)?;
    validate_metadata("actor's host", &event.actor.host)?;
    Ok(())
}

fn validate_metadata(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("its {what} is empty"));
    }
    if value.chars().count() > MAX_METADATA_LEN {
        return Err(format!(
            "its {what} is longer than {MAX_METADATA_LEN} characters"
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!(
            "its {what} `{}` contains control characters",
            value.escape_debug()
        ));
    }
    Ok(())
}

/// Validates a batch and seals it into envelopes that follow a stream's last event.
///
/// `expected_version` is the sequence of the stream's last event (0 for an empty
/// stream) and `prev_hash` that event's hash ([`crate::GENESIS_HASH`] for an empty
/// stream).
/// Every event of the batch gets the same `recorded_at`. Every backend appends through
/// this function, so numbering and hashing cannot differ between them.
pub(crate) fn seal_batch(
    stream: &StreamId,
    expected_version: u64,
    prev_hash: &str,
    events: Vec<NewEvent>,
    recorded_at: DateTime<Utc>,
) -> Result<Vec<Envelope>, JournalError> {
    validate_batch(&events)?;
    // Every backend stores sequences as signed 64-bit integers (SQLite) or numbers.
    let last = expected_version
        .checked_add(events.len() as u64)
        .filter(|last| i64::try_from(*last).is_ok())
        .ok_or_else(|| {
            JournalError::rejected(format!(
                "stream {stream} cannot grow past sequence {}",
                i64::MAX
            ))
        })?;
    debug_assert!(last > expected_version);
    let mut prev_hash = prev_hash.to_owned();
    let mut sealed = Vec::with_capacity(events.len());
    for (offset, event) in events.into_iter().enumerate() {
        let mut envelope = Envelope {
            stream: stream.clone(),
            sequence: expected_version + offset as u64 + 1,
            event_type: event.event_type,
            schema_version: event.schema_version,
            payload: event.payload,
            recorded_at,
            campaign: stream.campaign().to_owned(),
            account_id: event.account_id,
            user_name: event.user_name,
            access_key_ids: event.access_key_ids,
            actor: event.actor,
            prev_hash,
            hash: String::new(),
        };
        envelope.hash = envelope_hash(&envelope);
        prev_hash = envelope.hash.clone();
        sealed.push(envelope);
    }
    Ok(sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_id_accepts_printable_ascii_and_displays_with_a_slash() {
        let id = StreamId::new("q3-2025", "123456789012/alice/AKIAEXAMPLE").unwrap();
        assert_eq!(id.to_string(), "q3-2025/123456789012/alice/AKIAEXAMPLE");
        assert_eq!(id.campaign(), "q3-2025");
        assert_eq!(id.name(), "123456789012/alice/AKIAEXAMPLE");
    }

    #[test]
    fn stream_id_refuses_empty_long_hash_and_non_ascii_names() {
        for (campaign, name) in [
            ("", "s"),
            ("c", ""),
            ("c#1", "s"),
            ("c", "s#1"),
            ("c", "é"),
            ("c", "tab\there"),
            ("c", &"x".repeat(201)),
        ] {
            let err = StreamId::new(campaign, name).unwrap_err();
            assert!(
                matches!(err, JournalError::Rejected(_)),
                "{campaign:?}/{name:?}: {err}"
            );
        }
        assert!(StreamId::new("c", "x".repeat(200)).is_ok());
    }

    #[test]
    fn stream_id_deserialisation_validates() {
        let ok: StreamId = serde_json::from_str(r#"{"campaign":"c","name":"s"}"#).unwrap();
        assert_eq!(ok.to_string(), "c/s");
        assert!(serde_json::from_str::<StreamId>(r#"{"campaign":"c#","name":"s"}"#).is_err());
    }

    #[test]
    fn ceil_micros_rounds_up_only_partial_microseconds() {
        let whole = DateTime::parse_from_rfc3339("2025-01-01T00:00:00.000001Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(ceil_micros(whole), whole);
        let partial = whole + chrono::Duration::nanoseconds(1);
        assert_eq!(
            format_timestamp(ceil_micros(partial)),
            "2025-01-01T00:00:00.000002Z"
        );
        assert_eq!(
            ceil_micros(DateTime::<Utc>::MAX_UTC),
            DateTime::<Utc>::MAX_UTC.trunc_subsecs(6)
        );
    }

    #[test]
    fn text_range_is_empty_for_reversed_bounds_and_clamps_extreme_years() {
        let now = Utc::now();
        assert_eq!(text_range(now, now), None);
        let (from, to) = text_range(DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC).unwrap();
        assert_eq!(from, LOWEST_TIMESTAMP_TEXT);
        assert_eq!(to, HIGHEST_TIMESTAMP_TEXT);
        assert!(from.as_str() < format_timestamp(now).as_str());
    }
}
