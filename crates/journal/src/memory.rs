//! The in-memory backend, for unit tests of the journal's callers.
//!
//! One mutex guards a map from stream to its events; every call holds it for its
//! whole duration, so appends are trivially atomic, and a write's fence is checked
//! under it before anything is written. Queries walk the map: the memory
//! backend has no indexes and needs none. Events are stamped with the journal's
//! [`Clock`], read under the lock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::clock::{Clock, stamp, system};
use crate::envelope::{
    Envelope, NewEvent, StreamId, seal_batch, validate_batch, validate_campaign, validate_fence,
    validate_many,
};
use crate::error::{JournalError, fenced, foreign_head};
use crate::hash::GENESIS_HASH;
use crate::{Append, Fence, Journal, StreamHead};

/// A journal that lives in the process's memory and is lost with it.
#[derive(Debug)]
pub struct MemoryJournal {
    streams: Mutex<BTreeMap<StreamId, Vec<Envelope>>>,
    clock: Arc<dyn Clock>,
}

impl Default for MemoryJournal {
    fn default() -> Self {
        Self::with_clock(system())
    }
}

impl MemoryJournal {
    /// An empty journal on the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty journal that stamps its events with `clock`'s time.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            streams: Mutex::default(),
            clock,
        }
    }

    /// Gives a test raw, unchecked access to a stream's stored events, to simulate
    /// tampering with the store (modify, remove or reorder events).
    ///
    /// Never call it outside tests: it bypasses every invariant of the journal.
    pub fn tamper_for_tests<R>(
        &self,
        stream: &StreamId,
        tamper: impl FnOnce(&mut Vec<Envelope>) -> R,
    ) -> R {
        let mut streams = self.lock_ignoring_poison();
        tamper(streams.entry(stream.clone()).or_default())
    }

    fn lock(&self) -> Result<MutexGuard<'_, BTreeMap<StreamId, Vec<Envelope>>>, JournalError> {
        self.streams.lock().map_err(|_| JournalError::Unexpected {
            backend: self.describe(),
            detail: "a previous call panicked while holding the journal's lock".into(),
        })
    }

    fn lock_ignoring_poison(&self) -> MutexGuard<'_, BTreeMap<StreamId, Vec<Envelope>>> {
        self.streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Journal for MemoryJournal {
    async fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<u64, JournalError> {
        validate_batch(&events)?;
        let mut streams = self.lock()?;
        let stored = streams.get(stream);
        let (actual, prev_hash) = stored
            .and_then(|events| events.last())
            .map_or((0, GENESIS_HASH), |last| {
                (last.sequence, last.hash.as_str())
            });
        if actual != expected_version {
            return Err(JournalError::Conflict {
                stream: stream.clone(),
                expected: expected_version,
                actual,
            });
        }
        let now = stamp(self.clock.as_ref());
        let sealed = seal_batch(stream, expected_version, prev_hash, events, now)?;
        let new_version = sealed.last().map_or(expected_version, |last| last.sequence);
        streams.entry(stream.clone()).or_default().extend(sealed);
        Ok(new_version)
    }

    async fn append_at_fenced(
        &self,
        stream: &StreamId,
        head: &StreamHead,
        events: Vec<NewEvent>,
        fence: Option<&Fence>,
    ) -> Result<StreamHead, JournalError> {
        validate_batch(&events)?;
        validate_fence(fence, stream.campaign())?;
        let mut streams = self.lock()?;
        check_fence(&streams, fence)?;
        let now = stamp(self.clock.as_ref());
        append_locked(&mut streams, stream, head, events, now)
    }

    async fn append_many_fenced(
        &self,
        appends: Vec<Append>,
        fence: Option<&Fence>,
    ) -> Vec<Result<StreamHead, JournalError>> {
        let count = appends.len();
        let streams = validate_many(&appends, fence).and_then(|()| self.lock());
        let mut streams = match streams.and_then(|streams| {
            check_fence(&streams, fence)?;
            Ok(streams)
        }) {
            Ok(streams) => streams,
            Err(e) => return vec![Err(e); count],
        };
        let now = stamp(self.clock.as_ref());
        appends
            .into_iter()
            .map(|append| {
                append_locked(
                    &mut streams,
                    &append.stream,
                    &append.head,
                    append.events,
                    now,
                )
            })
            .collect()
    }

    async fn append_all_fenced(
        &self,
        appends: Vec<Append>,
        fence: Option<&Fence>,
    ) -> Result<Vec<StreamHead>, JournalError> {
        validate_many(&appends, fence)?;
        let mut streams = self.lock()?;
        check_fence(&streams, fence)?;
        // Every head checked and every batch sealed before anything is stored.
        let now = stamp(self.clock.as_ref());
        let sealed = appends
            .into_iter()
            .map(|append| {
                check_head(&streams, &append.stream, &append.head)?;
                seal_batch(
                    &append.stream,
                    append.head.version(),
                    append.head.hash(),
                    append.events,
                    now,
                )
                .map(|batch| (append.stream, batch))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(sealed
            .into_iter()
            .map(|(stream, batch)| {
                let head = StreamHead::after(&batch);
                streams.entry(stream).or_default().extend(batch);
                head
            })
            .collect())
    }

    async fn read_stream(&self, stream: &StreamId) -> Result<Vec<Envelope>, JournalError> {
        Ok(self.lock()?.get(stream).cloned().unwrap_or_default())
    }

    async fn read_campaign(&self, campaign: &str) -> Result<Vec<Envelope>, JournalError> {
        validate_campaign(campaign)?;
        // The map is ordered by (campaign, name), so the campaign's streams are
        // contiguous and already in stream order.
        Ok(self
            .lock()?
            .iter()
            .filter(|(stream, _)| stream.campaign() == campaign)
            .flat_map(|(_, events)| events.iter().cloned())
            .collect())
    }

    async fn list_campaigns(&self) -> Result<Vec<String>, JournalError> {
        let mut campaigns: Vec<String> = self
            .lock()?
            .iter()
            .filter(|(_, events)| !events.is_empty())
            .map(|(stream, _)| stream.campaign().to_owned())
            .collect();
        campaigns.dedup();
        Ok(campaigns)
    }

    async fn events_for_access_key(
        &self,
        access_key_id: &str,
    ) -> Result<Vec<Envelope>, JournalError> {
        let mut found: Vec<Envelope> = self
            .lock()?
            .values()
            .flatten()
            .filter(|event| event.access_key_ids.iter().any(|key| key == access_key_id))
            .cloned()
            .collect();
        found.sort_by(|a, b| a.time_order_key().cmp(&b.time_order_key()));
        Ok(found)
    }

    async fn events_for_account(
        &self,
        account_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Envelope>, JournalError> {
        let mut found: Vec<Envelope> = self
            .lock()?
            .values()
            .flatten()
            .filter(|event| {
                event.account_id.as_deref() == Some(account_id)
                    && from <= event.recorded_at
                    && event.recorded_at < to
            })
            .cloned()
            .collect();
        found.sort_by(|a, b| a.time_order_key().cmp(&b.time_order_key()));
        Ok(found)
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}

/// `Ok` when the fence holds: nothing follows its version in its stream.
fn check_fence(
    streams: &BTreeMap<StreamId, Vec<Envelope>>,
    fence: Option<&Fence>,
) -> Result<(), JournalError> {
    let Some(fence) = fence else {
        return Ok(());
    };
    let version = streams
        .get(&fence.stream)
        .and_then(|events| events.last())
        .map_or(0, |last| last.sequence);
    if version > fence.version {
        return Err(fenced(fence));
    }
    Ok(())
}

/// `Ok` when the stream ends at `head`.
fn check_head(
    streams: &BTreeMap<StreamId, Vec<Envelope>>,
    stream: &StreamId,
    head: &StreamHead,
) -> Result<(), JournalError> {
    let stored = streams.get(stream).map(Vec::as_slice).unwrap_or_default();
    let actual = StreamHead::after(stored);
    if actual.version() != head.version() {
        return Err(JournalError::Conflict {
            stream: stream.clone(),
            expected: head.version(),
            actual: actual.version(),
        });
    }
    if actual.hash() != head.hash() {
        return Err(foreign_head(stream, head.version()));
    }
    Ok(())
}

/// `append_at` under the journal's lock.
fn append_locked(
    streams: &mut BTreeMap<StreamId, Vec<Envelope>>,
    stream: &StreamId,
    head: &StreamHead,
    events: Vec<NewEvent>,
    now: DateTime<Utc>,
) -> Result<StreamHead, JournalError> {
    check_head(streams, stream, head)?;
    let sealed = seal_batch(stream, head.version(), head.hash(), events, now)?;
    let new_head = StreamHead::after(&sealed);
    streams.entry(stream.clone()).or_default().extend(sealed);
    Ok(new_head)
}
