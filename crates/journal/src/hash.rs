//! The hash chain: the one canonical serialisation of an envelope, its SHA-256, and
//! the verification of a stream's chain.
//!
//! An envelope's hash is the hex SHA-256 of a canonical JSON array holding a format
//! tag and then every envelope field except `hash`, in a fixed order:
//!
//! ```text
//! ["keyturn-journal/1", campaign, stream name, sequence, event_type,
//!  schema major, schema minor, payload, recorded_at, account_id, user_name,
//!  [access key ids], actor caller_arn, actor run_id, actor host, prev_hash]
//! ```
//!
//! The payload is written canonically: objects with their keys sorted by their UTF-8
//! bytes, no whitespace, numbers as `serde_json` prints them. The canonical form is
//! produced here, not borrowed from `serde_json`'s map order, so the hash does not
//! depend on whether `serde_json`'s `preserve_order` feature is enabled anywhere in the
//! build. `recorded_at` is the stored RFC 3339 text with microseconds; absent options
//! are `null`. Because every event carries its predecessor's hash (`prev_hash`, 64
//! zeros for sequence 1), modifying, removing or reordering any event breaks the chain
//! from that event on. Truncating a stream's tail cannot be detected from the stream
//! alone: compare with an exported copy or an outside record of the last hash.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use sha2::{Digest, Sha256};

use crate::envelope::{Envelope, StreamId};

/// The `prev_hash` of the first event of every stream: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The tag that starts the canonical serialisation; a new tag means a new hash format.
const HASH_FORMAT_TAG: &str = "keyturn-journal/1";

/// Computes an envelope's hash from every field except `hash` itself.
pub fn envelope_hash(envelope: &Envelope) -> String {
    hex::encode(Sha256::digest(canonical_bytes(envelope).as_bytes()))
}

/// The canonical serialisation that [`envelope_hash`] hashes.
pub fn canonical_bytes(envelope: &Envelope) -> String {
    let mut out = String::with_capacity(512);
    out.push('[');
    write_str(&mut out, HASH_FORMAT_TAG);
    out.push(',');
    write_str(&mut out, envelope.campaign.as_str());
    out.push(',');
    write_str(&mut out, envelope.stream.name());
    out.push(',');
    out.push_str(&envelope.sequence.to_string());
    out.push(',');
    write_str(&mut out, &envelope.event_type);
    out.push(',');
    out.push_str(&envelope.schema_version.major.to_string());
    out.push(',');
    out.push_str(&envelope.schema_version.minor.to_string());
    out.push(',');
    write_value(&mut out, &envelope.payload);
    out.push(',');
    write_str(&mut out, &envelope.recorded_at_text());
    out.push(',');
    write_opt_str(&mut out, envelope.account_id.as_deref());
    out.push(',');
    write_opt_str(&mut out, envelope.user_name.as_deref());
    out.push_str(",[");
    for (index, key) in envelope.access_key_ids.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_str(&mut out, key);
    }
    out.push_str("],");
    write_str(&mut out, &envelope.actor.caller_arn);
    out.push(',');
    write_str(&mut out, &envelope.actor.run_id);
    out.push(',');
    write_str(&mut out, &envelope.actor.host);
    out.push(',');
    write_str(&mut out, &envelope.prev_hash);
    out.push(']');
    out
}

fn write_opt_str(out: &mut String, value: Option<&str>) {
    match value {
        Some(text) => write_str(out, text),
        None => out.push_str("null"),
    }
}

/// Writes a JSON value canonically: sorted object keys, no whitespace.
fn write_value(out: &mut String, value: &serde_json::Value) {
    match value {
        serde_json::Value::Null => out.push_str("null"),
        serde_json::Value::Bool(true) => out.push_str("true"),
        serde_json::Value::Bool(false) => out.push_str("false"),
        serde_json::Value::Number(number) => out.push_str(&number.to_string()),
        serde_json::Value::String(text) => write_str(out, text),
        serde_json::Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        serde_json::Value::Object(map) => {
            let sorted: BTreeMap<&str, &serde_json::Value> = map
                .iter()
                .map(|(key, value)| (key.as_str(), value))
                .collect();
            out.push('{');
            for (index, (key, value)) in sorted.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_str(out, key);
                out.push(':');
                write_value(out, value);
            }
            out.push('}');
        }
    }
}

/// Writes a JSON string literal: `"` and `\` escaped, control characters as `\u00XX`,
/// everything else as itself.
fn write_str(out: &mut String, text: &str) {
    out.reserve(text.len() + 2);
    out.push('"');
    // Runs of characters written as themselves are copied whole; the characters to
    // escape are all ASCII, so every index here is a character boundary.
    let mut run = 0;
    for (i, byte) in text.bytes().enumerate() {
        let escaped = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            byte if byte < 0x20 => "",
            _ => continue,
        };
        out.push_str(&text[run..i]);
        if escaped.is_empty() {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{:04x}", byte);
        } else {
            out.push_str(escaped);
        }
        run = i + 1;
    }
    out.push_str(&text[run..]);
    out.push('"');
}

/// Where and why a hash chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the hash chain of stream {stream} is broken at sequence {sequence}: {reason}")]
pub struct ChainError {
    /// The stream whose chain is broken.
    pub stream: StreamId,
    /// The sequence of the first event that does not verify.
    pub sequence: u64,
    /// What is wrong.
    pub reason: ChainBreak,
}

/// The ways a chain can break.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainBreak {
    /// The event's recomputed hash differs from its stored hash: the event was modified.
    HashMismatch {
        /// The hash stored with the event.
        stored: String,
        /// The hash recomputed from the event's fields.
        computed: String,
    },
    /// The event's `prev_hash` is not the previous event's hash (or, for the first
    /// event, not 64 zeros): an event before it was modified, removed or reordered.
    BrokenLink {
        /// The hash the event should point at.
        expected: String,
        /// The hash the event points at.
        found: String,
    },
    /// The sequence numbers are not 1, 2, 3, …: an event was removed or reordered.
    SequenceGap {
        /// The sequence that should come next.
        expected: u64,
    },
    /// The event's `campaign` field differs from its stream's campaign.
    CampaignMismatch {
        /// The campaign field.
        campaign: String,
    },
    /// [`verify_stream`] was given events of more than one stream.
    ForeignStream {
        /// The other stream.
        other: StreamId,
    },
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainBreak::HashMismatch { stored, computed } => write!(
                f,
                "the event's content does not match its hash (stored {stored}, computed \
                 {computed}): it was modified after it was written"
            ),
            ChainBreak::BrokenLink { expected, found } => write!(
                f,
                "the event points at previous hash {found}, but the previous event's hash is \
                 {expected}: an earlier event was modified, removed or reordered"
            ),
            ChainBreak::SequenceGap { expected } => write!(
                f,
                "expected sequence {expected} here: an event was removed or reordered"
            ),
            ChainBreak::CampaignMismatch { campaign } => write!(
                f,
                "the event's campaign field `{}` differs from its stream's campaign",
                campaign.escape_debug()
            ),
            ChainBreak::ForeignStream { other } => {
                write!(f, "an event of another stream ({other}) is mixed in")
            }
        }
    }
}

/// Verifies the chain of one stream, given all its events from sequence 1 in order.
///
/// Recomputes every hash and checks every link and sequence number. Pure computation,
/// so it is a plain function: call it from async code directly.
pub fn verify_stream(events: &[Envelope]) -> Result<(), ChainError> {
    verify_stream_refs(&events.iter().collect::<Vec<_>>())
}

fn verify_stream_refs(events: &[&Envelope]) -> Result<(), ChainError> {
    let Some(first) = events.first() else {
        return Ok(());
    };
    let stream = &first.stream;
    let mut expected_prev = GENESIS_HASH;
    for (index, event) in events.iter().enumerate() {
        let expected_sequence = index as u64 + 1;
        let fail = |reason| ChainError {
            stream: stream.clone(),
            sequence: event.sequence,
            reason,
        };
        if &event.stream != stream {
            return Err(fail(ChainBreak::ForeignStream {
                other: event.stream.clone(),
            }));
        }
        if event.sequence != expected_sequence {
            return Err(ChainError {
                stream: stream.clone(),
                sequence: event.sequence,
                reason: ChainBreak::SequenceGap {
                    expected: expected_sequence,
                },
            });
        }
        if event.campaign != stream.campaign() {
            return Err(fail(ChainBreak::CampaignMismatch {
                campaign: event.campaign.clone(),
            }));
        }
        if event.prev_hash != expected_prev {
            return Err(fail(ChainBreak::BrokenLink {
                expected: expected_prev.to_owned(),
                found: event.prev_hash.clone(),
            }));
        }
        let computed = envelope_hash(event);
        if computed != event.hash {
            return Err(fail(ChainBreak::HashMismatch {
                stored: event.hash.clone(),
                computed,
            }));
        }
        expected_prev = &event.hash;
    }
    Ok(())
}

/// Every break in the chains of `events` (grouped by stream, in stream order), rather
/// than the first: each modified event (its own hash), each broken link (an event
/// before it was modified, removed or reordered) and each gap in the sequence numbers.
/// Each stream must be given complete, from sequence 1.
pub fn find_chain_breaks(events: &[Envelope]) -> Vec<ChainError> {
    let mut streams: BTreeMap<&StreamId, Vec<&Envelope>> = BTreeMap::new();
    for event in events {
        streams.entry(&event.stream).or_default().push(event);
    }
    let mut breaks = Vec::new();
    for (stream, events) in streams {
        let mut expected_sequence = 1;
        let mut expected_prev = GENESIS_HASH.to_owned();
        for event in events {
            let mut report = |reason| {
                breaks.push(ChainError {
                    stream: stream.clone(),
                    sequence: event.sequence,
                    reason,
                });
            };
            if event.sequence != expected_sequence {
                report(ChainBreak::SequenceGap {
                    expected: expected_sequence,
                });
            }
            if event.campaign != stream.campaign() {
                report(ChainBreak::CampaignMismatch {
                    campaign: event.campaign.clone(),
                });
            }
            if event.prev_hash != expected_prev {
                report(ChainBreak::BrokenLink {
                    expected: expected_prev.clone(),
                    found: event.prev_hash.clone(),
                });
            }
            let computed = envelope_hash(event);
            if computed != event.hash {
                report(ChainBreak::HashMismatch {
                    stored: event.hash.clone(),
                    computed,
                });
            }
            expected_sequence = event.sequence + 1;
            expected_prev = event.hash.clone();
        }
    }
    breaks
}

/// Verifies the chains of every stream among `events` (for example the answer of
/// [`crate::Journal::read_campaign`]).
///
/// The events are grouped by stream, keeping their order within each stream; each
/// group must be its stream's complete chain from sequence 1. Streams are checked in
/// stream order, and the first break found is returned.
pub fn verify_chain(events: &[Envelope]) -> Result<(), ChainError> {
    let mut streams: BTreeMap<&StreamId, Vec<&Envelope>> = BTreeMap::new();
    for event in events {
        streams.entry(&event.stream).or_default().push(event);
    }
    streams
        .values()
        .try_for_each(|events| verify_stream_refs(events))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use serde_json::json;

    use super::*;
    use crate::envelope::{Actor, SchemaVersion};

    /// A change to one field of an envelope.
    type Mutation = Box<dyn Fn(&mut Envelope)>;

    fn envelope(sequence: u64, prev_hash: &str, payload: serde_json::Value) -> Envelope {
        let mut envelope = Envelope {
            stream: StreamId::new("c", "s").unwrap(),
            sequence,
            event_type: "KeyCreated".into(),
            schema_version: SchemaVersion::new(1, 2),
            payload,
            recorded_at: DateTime::parse_from_rfc3339("2025-03-04T05:06:07.123456Z")
                .unwrap()
                .with_timezone(&Utc),
            campaign: "c".into(),
            account_id: Some("012345678901".into()),
            user_name: Some("alice".into()),
            access_key_ids: vec!["AKIAOLD".into(), "AKIANEW".into()],
            actor: Actor {
                caller_arn: "arn:aws:sts::012345678901:assumed-role/r/s".into(),
                run_id: "run-1".into(),
                host: "test-host".into(),
            },
            prev_hash: prev_hash.into(),
            hash: String::new(),
        };
        envelope.hash = envelope_hash(&envelope);
        envelope
    }

    fn chain(len: u64) -> Vec<Envelope> {
        let mut events: Vec<Envelope> = Vec::new();
        for sequence in 1..=len {
            let prev = events
                .last()
                .map_or(GENESIS_HASH.to_owned(), |e| e.hash.clone());
            events.push(envelope(sequence, &prev, json!({ "n": sequence })));
        }
        events
    }

    #[test]
    fn strings_are_escaped_exactly_as_the_canonical_form_says() {
        // The canonical form is what every stored hash was computed over: a string is
        // written as itself but for `"`, `\` and control characters, character by
        // character, whatever the fast path does.
        fn by_character(text: &str) -> String {
            let mut out = String::from('"');
            for c in text.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        for text in [
            "",
            "plain",
            "\"",
            "\\",
            "a\"b\\c\u{1}d\né\t😀\u{1f}\u{7f}ü\"",
            "ends with a quote\"",
            "\u{0}\u{0}",
            "user/222222222222/alice",
        ] {
            let mut out = String::new();
            write_str(&mut out, text);
            assert_eq!(out, by_character(text), "{text:?}");
        }
    }

    #[test]
    fn every_break_is_found_not_only_the_first() {
        let mut events = chain(6);
        events[1].payload = json!({ "n": 99 });
        events.remove(3);
        let breaks = find_chain_breaks(&events);
        let found: Vec<(u64, &str)> = breaks
            .iter()
            .map(|b| {
                let kind = match b.reason {
                    ChainBreak::HashMismatch { .. } => "modified",
                    ChainBreak::BrokenLink { .. } => "link",
                    ChainBreak::SequenceGap { .. } => "gap",
                    _ => "other",
                };
                (b.sequence, kind)
            })
            .collect();
        assert_eq!(found, [(2, "modified"), (5, "gap"), (5, "link")]);
        assert!(find_chain_breaks(&chain(4)).is_empty());
    }

    #[test]
    fn canonical_form_is_fixed() {
        let event = envelope(1, GENESIS_HASH, json!({"b": [1, 2.5, null], "a": "x\"\n"}));
        assert_eq!(
            canonical_bytes(&event),
            format!(
                r#"["keyturn-journal/1","c","s",1,"KeyCreated",1,2,{{"a":"x\"\u000a","b":[1,2.5,null]}},"2025-03-04T05:06:07.123456Z","012345678901","alice",["AKIAOLD","AKIANEW"],"arn:aws:sts::012345678901:assumed-role/r/s","run-1","test-host","{GENESIS_HASH}"]"#
            )
        );
        assert_eq!(event.hash.len(), 64);
    }

    #[test]
    fn hash_ignores_the_insertion_order_of_payload_keys() {
        let mut forward = serde_json::Map::new();
        forward.insert("a".into(), json!(1));
        forward.insert("b".into(), json!({"y": 1, "x": 2}));
        let mut backward = serde_json::Map::new();
        backward.insert("b".into(), json!({"x": 2, "y": 1}));
        backward.insert("a".into(), json!(1));
        assert_eq!(
            envelope(1, GENESIS_HASH, forward.into()).hash,
            envelope(1, GENESIS_HASH, backward.into()).hash
        );
    }

    #[test]
    fn hash_changes_with_every_field() {
        let base = envelope(1, GENESIS_HASH, json!({"n": 1}));
        let mutations: Vec<Mutation> = vec![
            Box::new(|e| e.stream = StreamId::new("c", "t").unwrap()),
            Box::new(|e| e.campaign = "d".into()),
            Box::new(|e| e.sequence = 2),
            Box::new(|e| e.event_type = "KeyDeleted".into()),
            Box::new(|e| e.schema_version.major = 2),
            Box::new(|e| e.schema_version.minor = 3),
            Box::new(|e| e.payload = json!({"n": 2})),
            Box::new(|e| e.recorded_at += chrono::Duration::microseconds(1)),
            Box::new(|e| e.account_id = None),
            Box::new(|e| e.user_name = Some("bob".into())),
            Box::new(|e| {
                e.access_key_ids.pop();
            }),
            Box::new(|e| e.actor.caller_arn = "arn:other".into()),
            Box::new(|e| e.actor.run_id = "run-2".into()),
            Box::new(|e| e.actor.host = "other-host".into()),
            Box::new(|e| e.prev_hash = "1".repeat(64)),
        ];
        for (index, mutate) in mutations.iter().enumerate() {
            let mut changed = base.clone();
            mutate(&mut changed);
            assert_ne!(envelope_hash(&changed), base.hash, "mutation {index}");
        }
    }

    #[test]
    fn an_intact_chain_verifies() {
        verify_stream(&chain(5)).unwrap();
        verify_stream(&[]).unwrap();
    }

    #[test]
    fn a_modified_payload_is_detected_at_its_event() {
        let mut events = chain(5);
        events[2].payload = json!({"n": 99});
        let err = verify_stream(&events).unwrap_err();
        assert_eq!(err.sequence, 3);
        assert!(
            matches!(err.reason, ChainBreak::HashMismatch { .. }),
            "{err}"
        );
    }

    #[test]
    fn a_rehashed_modification_is_detected_at_the_next_event() {
        let mut events = chain(5);
        events[2].payload = json!({"n": 99});
        events[2].hash = envelope_hash(&events[2]);
        let err = verify_stream(&events).unwrap_err();
        assert_eq!(err.sequence, 4);
        assert!(matches!(err.reason, ChainBreak::BrokenLink { .. }), "{err}");
    }

    #[test]
    fn removed_and_reordered_events_are_detected() {
        let mut removed = chain(5);
        removed.remove(2);
        let err = verify_stream(&removed).unwrap_err();
        assert_eq!(
            (err.sequence, err.reason.clone()),
            (4, ChainBreak::SequenceGap { expected: 3 })
        );

        let mut reordered = chain(5);
        reordered.swap(1, 2);
        assert!(verify_stream(&reordered).is_err());

        let mut first_removed = chain(3);
        first_removed.remove(0);
        assert!(verify_stream(&first_removed).is_err());
    }

    #[test]
    fn verify_chain_checks_each_stream_of_a_mixed_list() {
        let mut events = chain(3);
        let other: Vec<Envelope> = chain(2)
            .into_iter()
            .map(|mut e| {
                e.stream = StreamId::new("c", "t").unwrap();
                e
            })
            .collect();
        // The second stream's hashes were computed for stream `s`, so they break.
        events.extend(other);
        let err = verify_chain(&events).unwrap_err();
        assert_eq!(err.stream.name(), "t");
        verify_chain(&chain(3)).unwrap();
    }
}
