//! Typed decoding of envelopes: every reader refuses what it does not understand
//! instead of guessing.
//!
//! The journal stores payloads as JSON with a type name and a schema version. The
//! caller's event enum (in the planner) implements [`EventSchema`]; [`decode`] checks
//! the type and the major version before handing the payload to it.

use crate::envelope::{Envelope, SchemaVersion};
use crate::error::JournalError;

/// Implemented by a caller's event type to let [`decode`] read envelopes into it.
pub trait EventSchema: Sized {
    /// The schema version this build writes. Readers accept every event whose major
    /// version is at most `CURRENT.major`; older versions are upcast by [`Self::decode`].
    const CURRENT: SchemaVersion;

    /// Every event type this build knows.
    fn known_types() -> &'static [&'static str];

    /// Decodes a payload of a known type, upcasting older versions.
    ///
    /// The error text ends up in a [`JournalError::Corrupt`] message, so it must
    /// describe what is wrong without quoting payload values (serde's "invalid type"
    /// messages quote them: map such errors to field names).
    fn decode(
        event_type: &str,
        version: SchemaVersion,
        payload: &serde_json::Value,
    ) -> Result<Self, String>;

    /// Encodes the event as its type name and payload, at [`Self::CURRENT`].
    fn encode(&self) -> (String, serde_json::Value);
}

/// Decodes an envelope into the caller's event type.
///
/// Refuses an event type not in [`EventSchema::known_types`]
/// ([`JournalError::UnknownEventType`]) and a major version newer than
/// [`EventSchema::CURRENT`] ([`JournalError::NewerSchema`]); a payload that
/// [`EventSchema::decode`] cannot read is [`JournalError::Corrupt`].
pub fn decode<E: EventSchema>(envelope: &Envelope) -> Result<E, JournalError> {
    if !E::known_types().contains(&envelope.event_type.as_str()) {
        return Err(JournalError::UnknownEventType {
            stream: envelope.stream.clone(),
            sequence: envelope.sequence,
            event_type: envelope.event_type.clone(),
        });
    }
    if envelope.schema_version.major > E::CURRENT.major {
        return Err(JournalError::NewerSchema {
            stream: envelope.stream.clone(),
            sequence: envelope.sequence,
            found: envelope.schema_version,
            supported: E::CURRENT,
        });
    }
    E::decode(
        &envelope.event_type,
        envelope.schema_version,
        &envelope.payload,
    )
    .map_err(|reason| JournalError::Corrupt {
        record: envelope.label(),
        detail: format!(
            "its {} payload (schema {}) does not decode: {reason}",
            envelope.event_type, envelope.schema_version
        ),
    })
}
