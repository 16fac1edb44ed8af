//! keyturn's event store: append-only streams of typed envelopes with optimistic
//! concurrency, a per-stream hash chain and index-backed audit queries.
//!
//! The journal knows nothing of rotation. Callers append [`NewEvent`]s to a
//! [`StreamId`] (a campaign and a name) at an expected version; the journal numbers,
//! timestamps and hash-chains them into [`Envelope`]s. Its invariants hold in every
//! backend:
//!
//! - append-only: nothing is ever updated or deleted;
//! - an append succeeds only at the expected version, all of its events or none;
//! - a fenced write ([`Fence`]) succeeds only while another stream has not moved,
//!   checked atomically with it;
//! - every event is hash-chained to the previous event of its stream
//!   ([`verify_stream`], [`verify_chain`]);
//! - audit queries use indexes, never a table scan;
//! - no payload ever appears in an error or a log line.
//!
//! Backends: [`DynamoJournal`] (shared, production), [`SqliteJournal`] (one file, the
//! default for a single operator) and [`MemoryJournal`] (tests). [`open`] and [`init`]
//! pick one from a [`JournalLocation`]. Every backend stamps events with the [`Clock`]
//! it was opened with ([`SystemClock`] unless told otherwise), so that a simulation can
//! run in virtual time.
//!
//! Module map: [`envelope`] (the data model and input rules), [`hash`] (canonical form
//! and chain verification), [`schema`] (typed decoding), [`clock`], [`error`],
//! [`location`], [`group`] (group commit of concurrent appends), [`memory`], [`sqlite`],
//! [`dynamo`].

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub mod clock;
pub mod dynamo;
pub mod envelope;
pub mod error;
pub mod group;
pub mod hash;
pub mod location;
pub mod memory;
pub mod query;
pub mod schema;
pub mod sqlite;

pub use clock::{Clock, SystemClock};
pub use dynamo::DynamoJournal;
pub use envelope::{
    Actor, Envelope, MAX_ACCESS_KEY_IDS, MAX_EVENTS_PER_APPEND, MAX_PAYLOAD_BYTES, NewEvent,
    SchemaVersion, StreamId, format_timestamp, validate_campaign,
};
pub use error::JournalError;
pub use group::{Deferred, GroupCommit};
pub use hash::{
    ChainBreak, ChainError, GENESIS_HASH, envelope_hash, find_chain_breaks, verify_chain,
    verify_stream,
};
pub use location::{DEFAULT_LOCATION, ENV_VAR, JournalLocation, parse_location};
pub use memory::MemoryJournal;
pub use query::{AuditFilter, IndexUsed, audit};
pub use schema::{EventSchema, decode};
pub use sqlite::SqliteJournal;

/// Attempts of a call made with [`patient_retry_config`].
pub const PATIENT_ATTEMPTS: u32 = 10;

/// Retries for AWS calls whose failure costs work already done: the journal's (an
/// append that fails after its mutation was made leaves the next run to reconcile it,
/// and a replacement whose secret was only in the run's memory is deleted and created
/// again) and the delivery of a new key's secret. The SDK's standard retries,
/// [`PATIENT_ATTEMPTS`] attempts with jittered exponential backoff from 100 ms, each wait
/// at most 2 s: up to about 11 s of waiting (half that on average), where keyturn's other
/// AWS calls make six attempts (about 3 s) and leave the rest to the next run's backoff.
/// Safe to repeat: the journal's writes are conditional (a write applied once already
/// is recognised by its hash), and a delivery is idempotent by its request token.
pub fn patient_retry_config() -> aws_config::retry::RetryConfig {
    aws_config::retry::RetryConfig::standard()
        .with_max_attempts(PATIENT_ATTEMPTS)
        .with_initial_backoff(std::time::Duration::from_millis(100))
        .with_max_backoff(std::time::Duration::from_secs(2))
}

/// Where a stream ends, as a read or an append showed it: the sequence of its last
/// event (its version, 0 when empty) and that event's hash.
///
/// Events are immutable, so while the stream is still at this version its last hash is
/// this one: [`Journal::append_at`] chains new events to it without reading the stream
/// again, and its condition on the version refuses the append when the stream has moved.
/// A head can only be made from a stream's envelopes or by an append, never from loose
/// numbers, so that a wrong hash cannot be chained in by mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHead {
    version: u64,
    hash: String,
}

impl StreamHead {
    /// The head of a stream with no event.
    pub fn empty() -> Self {
        Self {
            version: 0,
            hash: GENESIS_HASH.to_owned(),
        }
    }

    /// The head after `events`, all of one stream in ascending sequence (as
    /// [`Journal::read_stream`] returns them, or one stream's part of
    /// [`Journal::read_campaign`]).
    pub fn after(events: &[Envelope]) -> Self {
        events.last().map_or_else(Self::empty, Self::at)
    }

    /// The head at one event: the stream's head if it is the stream's last.
    pub fn at(last: &Envelope) -> Self {
        Self {
            version: last.sequence,
            hash: last.hash.clone(),
        }
    }

    /// The stream's version: its last sequence, 0 when empty.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The hash of the last event (the genesis hash when empty).
    pub fn hash(&self) -> &str {
        &self.hash
    }
}

impl Default for StreamHead {
    fn default() -> Self {
        Self::empty()
    }
}

/// One stream's part of a [`Journal::append_many`]: events to chain to `head`, as
/// [`Journal::append_at`] would.
#[derive(Debug, Clone)]
pub struct Append {
    /// The stream to append to.
    pub stream: StreamId,
    /// Where the caller last saw the stream end.
    pub head: StreamHead,
    /// 1 or more events.
    pub events: Vec<NewEvent>,
}

/// A condition on another stream of the same campaign, checked atomically with a write:
/// write only if `stream` is still at `version`, that is if nothing was appended to it
/// after `version`.
///
/// A fence guards writes made on the strength of a stream's state: keyturn's per-account
/// claims are events of a stream `account/<id>` whose version is the fencing token, and
/// a worker's writes under a claim are fenced on the claim stream at the version it
/// wrote last, so that none of them lands once another worker took the account over.
/// The journal knows nothing of claims: any stream of the campaign can fence a write.
///
/// The fence is checked against the streams as they were before the write. When it
/// fails, nothing of the write is written and every append in it fails with
/// [`JournalError::Fenced`], whatever its own stream's state. A write may also append to
/// the fence's stream: at the fence's version, that append's own condition is the fence.
/// The version is one the caller saw (a [`StreamHead`]'s, from a read or an append): a
/// stream never goes back, so while nothing follows that version the stream is still
/// at it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fence {
    /// The stream that must not have moved, of the campaign the write appends to.
    pub stream: StreamId,
    /// The version it must still be at.
    pub version: u64,
}

impl Fence {
    /// The fence of `stream` at the head the caller saw it at.
    pub fn at(stream: &StreamId, head: &StreamHead) -> Self {
        Self {
            stream: stream.clone(),
            version: head.version(),
        }
    }
}

/// The storage format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// The event store, behind which every backend sits.
///
/// Reads of one stream or one campaign are strongly consistent: they see every append
/// that returned before they started. The audit queries by access key and by account
/// use secondary indexes; on DynamoDB those are eventually consistent (an event
/// appears in them within about a second of its append).
#[async_trait]
pub trait Journal: Send + Sync + Debug {
    /// Appends 1 to [`MAX_EVENTS_PER_APPEND`] events to a stream whose last sequence is
    /// `expected_version` (0 for a new stream), all of them or none, and returns the
    /// stream's new version.
    ///
    /// [`JournalError::Conflict`] (with the actual version) when the stream is elsewhere:
    /// reload it, decide again, append at the new version. A caller that knows the
    /// stream's head uses [`append_at`](Journal::append_at), which needs no read.
    async fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<u64, JournalError>;

    /// [`append`](Journal::append) for a caller that knows the stream's head (from its
    /// read or its previous append): the new events are chained to `head` without
    /// reading the stream first, which saves a consistent read per append on DynamoDB.
    /// Returns the new head.
    ///
    /// [`JournalError::Conflict`] (with the actual version) when the stream is no longer
    /// at `head`'s version, exactly as `append`.
    async fn append_at(
        &self,
        stream: &StreamId,
        head: &StreamHead,
        events: Vec<NewEvent>,
    ) -> Result<StreamHead, JournalError> {
        self.append_at_fenced(stream, head, events, None).await
    }

    /// [`append_at`](Journal::append_at), written only while `fence` holds (see
    /// [`Fence`]); without a fence, exactly `append_at`. When the fence has moved, the
    /// error is [`JournalError::Fenced`] and nothing is written. A fence of another
    /// campaign is [`JournalError::Rejected`].
    ///
    /// On DynamoDB a fenced append is one TransactWriteItems with a ConditionCheck on
    /// the fence, or one PutItem when it is a single event appended to the fence's own
    /// stream at the fence's version (its condition is then the fence).
    async fn append_at_fenced(
        &self,
        stream: &StreamId,
        head: &StreamHead,
        events: Vec<NewEvent>,
        fence: Option<&Fence>,
    ) -> Result<StreamHead, JournalError>;

    /// [`append_at`](Journal::append_at) to several streams of one campaign in one write
    /// where the backend can (one TransactWriteItems on DynamoDB, one transaction on
    /// SQLite): a group commit of concurrent writers. Returns one result per append, in
    /// order, each exactly what `append_at` would have returned for it: a conflict on one
    /// stream writes nothing to that stream and does not keep the others from being
    /// written.
    ///
    /// Every append is [`JournalError::Rejected`] (and nothing written) when the call
    /// breaks a rule: no append, appends to two campaigns or twice to one stream, or more
    /// than [`MAX_EVENTS_PER_APPEND`] events in all.
    async fn append_many(&self, appends: Vec<Append>) -> Vec<Result<StreamHead, JournalError>> {
        self.append_many_fenced(appends, None).await
    }

    /// [`append_many`](Journal::append_many), written only while `fence` holds: when it
    /// has moved, every append is [`JournalError::Fenced`] and nothing is written (the
    /// fence is the whole write's, not one append's). While it holds, each append has
    /// its own outcome, as in `append_many`. Without a fence, exactly `append_many`.
    async fn append_many_fenced(
        &self,
        appends: Vec<Append>,
        fence: Option<&Fence>,
    ) -> Vec<Result<StreamHead, JournalError>>;

    /// [`append_many`](Journal::append_many), all of it or none: every append is
    /// written, and the new heads are returned in order, or nothing is written and the
    /// error is the first failing append's (a [`JournalError::Conflict`] names its
    /// stream). For appends that prove each other: a claim taken with the first intents
    /// it covers.
    ///
    /// The same rules as `append_many`, refused with [`JournalError::Rejected`].
    async fn append_all(&self, appends: Vec<Append>) -> Result<Vec<StreamHead>, JournalError> {
        self.append_all_fenced(appends, None).await
    }

    /// [`append_all`](Journal::append_all), written only while `fence` holds:
    /// [`JournalError::Fenced`] when it has moved. Without a fence, exactly `append_all`.
    async fn append_all_fenced(
        &self,
        appends: Vec<Append>,
        fence: Option<&Fence>,
    ) -> Result<Vec<StreamHead>, JournalError>;

    /// Every event of a stream, by ascending sequence.
    async fn read_stream(&self, stream: &StreamId) -> Result<Vec<Envelope>, JournalError>;

    /// Every event of every stream of a campaign, ordered by (stream name, sequence).
    async fn read_campaign(&self, campaign: &str) -> Result<Vec<Envelope>, JournalError>;

    /// The campaigns that have at least one event, in ascending order.
    async fn list_campaigns(&self) -> Result<Vec<String>, JournalError>;

    /// Every event naming the access key (in either key slot), ordered by
    /// (recorded_at, campaign, stream, sequence).
    async fn events_for_access_key(
        &self,
        access_key_id: &str,
    ) -> Result<Vec<Envelope>, JournalError>;

    /// Every event about an account recorded in `from <= recorded_at < to`, ordered by
    /// (recorded_at, campaign, stream, sequence).
    async fn events_for_account(
        &self,
        account_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Envelope>, JournalError>;

    /// Where the journal lives: `dynamodb://TABLE`, `sqlite://PATH` or `memory`.
    fn describe(&self) -> String;
}

/// What [`init`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitOutcome {
    /// Whether this call created the journal's storage (the DynamoDB table, or the
    /// SQLite file's schema); false when it already existed.
    pub created: bool,
}

/// Opens an existing journal.
///
/// A DynamoDB journal needs the caller's AWS configuration and must have been
/// initialised ([`JournalError::NotInitialised`] otherwise); a SQLite journal creates
/// its file on first open. A journal written by a newer keyturn is refused with
/// [`JournalError::Incompatible`].
pub async fn open(
    location: &JournalLocation,
    sdk: Option<&aws_config::SdkConfig>,
) -> Result<Arc<dyn Journal>, JournalError> {
    match location {
        JournalLocation::DynamoDb { table } => {
            let sdk = require_sdk(location, sdk)?;
            Ok(Arc::new(DynamoJournal::open(sdk, table).await?))
        }
        JournalLocation::Sqlite { path } => Ok(Arc::new(SqliteJournal::open(path).await?)),
    }
}

/// Creates a journal's storage, or checks that the existing storage is a journal this
/// build can use. Idempotent.
///
/// For DynamoDB: creates the table with its indexes (on-demand capacity), waits until
/// it is ACTIVE and records the format version; an existing table with another key
/// schema or missing indexes is refused with the difference named.
pub async fn init(
    location: &JournalLocation,
    sdk: Option<&aws_config::SdkConfig>,
) -> Result<InitOutcome, JournalError> {
    match location {
        JournalLocation::DynamoDb { table } => {
            let sdk = require_sdk(location, sdk)?;
            DynamoJournal::init(sdk, table).await
        }
        JournalLocation::Sqlite { path } => SqliteJournal::init(path).await,
    }
}

fn require_sdk<'a>(
    location: &JournalLocation,
    sdk: Option<&'a aws_config::SdkConfig>,
) -> Result<&'a aws_config::SdkConfig, JournalError> {
    sdk.ok_or_else(|| {
        JournalError::rejected(format!(
            "the journal at {location} needs AWS configuration (credentials and region), \
             and none was given"
        ))
    })
}
