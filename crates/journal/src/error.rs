//! The one error type of the journal, shaped by how a caller reacts to it.
//!
//! | variant | what the caller does |
//! |---|---|
//! | [`JournalError::Conflict`] | reload the stream, decide again, append at the new version |
//! | [`JournalError::Fenced`] | another writer moved the stream the write was fenced on: whatever that stream guarded is no longer the caller's, stop writing under it |
//! | [`JournalError::Rejected`] | the input broke a rule: tell the user, do not retry |
//! | [`JournalError::Unavailable`] | the backend is throttling, unreachable or failing: retry later |
//! | [`JournalError::Incompatible`] | the journal was written by a newer keyturn: upgrade |
//! | [`JournalError::NotInitialised`] | run `keyturn journal init` first |
//! | [`JournalError::UnknownEventType`], [`JournalError::NewerSchema`] | this build cannot read the event: upgrade, never guess |
//! | [`JournalError::Corrupt`] | a stored record cannot be read back: stop and investigate |
//! | [`JournalError::Unexpected`] | anything else (a bug, a permission problem): log and stop |
//!
//! No message ever contains an event payload: payloads may be large and are not meant
//! for logs. Backend failures keep the backend's own error code (for DynamoDB, the AWS
//! error code such as `ThrottlingException`) in the `detail` text.

use crate::envelope::{SchemaVersion, StreamId};

/// Everything that can go wrong in the journal.
///
/// Backend failures carry their cause as `detail` text rather than as a boxed
/// [`std::error::Error`] source: the text already holds the backend's error code and
/// message (rendered with the AWS SDK's `DisplayErrorContext`), so printing the error
/// once with `{}` tells the whole story, and printing its source chain does not repeat it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The stream is not at the version the caller expected: another writer appended
    /// first (or the caller's view is stale).
    #[error(
        "stream {stream} is at version {actual}, not at the expected version {expected}: \
         another writer appended first; reload the stream and decide again"
    )]
    Conflict {
        /// The stream that was appended to.
        stream: StreamId,
        /// The version the caller expected.
        expected: u64,
        /// The version the stream is actually at.
        actual: u64,
    },

    /// The write was fenced on another stream ([`crate::Fence`]), and that stream has
    /// moved past the fence's version: nothing of the write was written. Unlike a
    /// [`JournalError::Conflict`], reloading the appended streams does not help: what
    /// the fence stood for (a claim) has passed to another writer.
    #[error(
        "stream {stream} has moved past version {expected}, on which this write was fenced: \
         another writer appended to it, and nothing of the write was written"
    )]
    Fenced {
        /// The fence's stream.
        stream: StreamId,
        /// The version the write required it to be at.
        expected: u64,
    },

    /// The input broke one of the journal's rules; retrying the same call cannot succeed.
    #[error("{0}")]
    Rejected(String),

    /// The backend is throttling, unreachable or failing; the same call may succeed later.
    #[error("the journal at {backend} is unavailable, retry later: {detail}")]
    Unavailable {
        /// The backend's location, as [`crate::Journal::describe`] prints it.
        backend: String,
        /// What happened, with the backend's error code.
        detail: String,
    },

    /// The journal was written by a newer build of keyturn.
    #[error(
        "the journal at {location} has format version {found}, but this build of keyturn \
         supports format version {supported} at most: upgrade keyturn"
    )]
    Incompatible {
        /// The journal's location.
        location: String,
        /// The format version recorded in the journal.
        found: u32,
        /// The newest format version this build understands.
        supported: u32,
    },

    /// The journal's storage exists but was never initialised (or does not exist).
    #[error("the journal at {location} is not initialised ({detail}): run `keyturn journal init`")]
    NotInitialised {
        /// The journal's location.
        location: String,
        /// What is missing.
        detail: String,
    },

    /// An event's type is not one this build knows.
    #[error(
        "event {sequence} of stream {stream} has type `{event_type}`, which this build of \
         keyturn does not know: upgrade keyturn"
    )]
    UnknownEventType {
        /// The event's stream.
        stream: StreamId,
        /// The event's sequence number.
        sequence: u64,
        /// The unknown type.
        event_type: String,
    },

    /// An event was written with a newer major schema version than this build reads.
    #[error(
        "event {sequence} of stream {stream} was written with schema version {found}, newer \
         than the version {supported} this build of keyturn reads: upgrade keyturn"
    )]
    NewerSchema {
        /// The event's stream.
        stream: StreamId,
        /// The event's sequence number.
        sequence: u64,
        /// The event's schema version.
        found: SchemaVersion,
        /// The schema version this build writes.
        supported: SchemaVersion,
    },

    /// A stored record cannot be read back (a missing or malformed field, a payload that
    /// does not decode).
    #[error("the journal record {record} cannot be read: {detail}")]
    Corrupt {
        /// Which record: an event (`campaign/stream #sequence`) or a backend item.
        record: String,
        /// What is wrong with it; never the payload itself.
        detail: String,
    },

    /// A stored event cannot be what keyturn wrote: one of its fields no longer decodes
    /// (a payload that is not JSON, a timestamp or a stream id that does not parse). Like
    /// a broken hash chain, it was altered outside keyturn, and nothing is decided or
    /// reported from it.
    #[error(
        "the journal record {record} was altered outside keyturn: {detail}; keyturn does not \
         act on or report from a journal whose events were modified (`keyturn verify` \
         checks every hash chain)"
    )]
    Tampered {
        /// Which event: `campaign/stream #sequence`, or the backend's item key.
        record: String,
        /// What no longer decodes; never the field's value.
        detail: String,
    },

    /// Anything else: a bug, a permission problem, a backend answer that makes no sense.
    #[error("unexpected failure of the journal at {backend}: {detail}")]
    Unexpected {
        /// The backend's location.
        backend: String,
        /// What happened, with the backend's error code.
        detail: String,
    },
}

/// The error of a write whose fence failed.
pub(crate) fn fenced(fence: &crate::Fence) -> JournalError {
    JournalError::Fenced {
        stream: fence.stream.clone(),
        expected: fence.version,
    }
}

/// The error for a head whose hash is not the stream's at that version: a head taken
/// from another stream (a caller's mistake; nothing is written).
pub(crate) fn foreign_head(stream: &crate::StreamId, version: u64) -> JournalError {
    JournalError::rejected(format!(
        "the head given for stream {stream} at version {version} is not that stream's"
    ))
}

impl JournalError {
    /// Builds a [`JournalError::Rejected`] from any message.
    pub(crate) fn rejected(message: impl Into<String>) -> Self {
        JournalError::Rejected(message.into())
    }

    /// Whether the caller should reload the stream and decide again.
    pub fn is_conflict(&self) -> bool {
        matches!(self, JournalError::Conflict { .. })
    }

    /// Whether the write's fence failed: another writer moved the stream it was fenced on.
    pub fn is_fenced(&self) -> bool {
        matches!(self, JournalError::Fenced { .. })
    }

    /// The same failure, as an event record that cannot be what keyturn wrote: a
    /// [`JournalError::Corrupt`] event becomes [`JournalError::Tampered`].
    pub(crate) fn in_event(self) -> Self {
        match self {
            JournalError::Corrupt { record, detail } => JournalError::Tampered { record, detail },
            other => other,
        }
    }

    /// Whether a stored event was altered outside keyturn.
    pub fn is_tampering(&self) -> bool {
        matches!(self, JournalError::Tampered { .. })
    }

    /// Whether the same call may succeed later without any change.
    pub fn is_retryable(&self) -> bool {
        matches!(self, JournalError::Unavailable { .. })
    }
}
