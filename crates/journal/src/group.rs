//! Group commit: appends from concurrent tasks, each to its own stream, written together.
//!
//! A task hands its append to a [`GroupCommit`] and waits for its outcome. The first
//! task to find no write in flight becomes the writer: it takes every append queued
//! so far (up to [`MAX_EVENTS_PER_APPEND`] events, one per stream) and writes them with
//! one [`Journal::append_many`]. Appends queued while that write is in flight go in the
//! next one. Nothing waits for company: a lone append is written at once, so a group
//! costs no latency, and under load the writes per append fall towards one per group.
//!
//! Each task still gets exactly the outcome `append_at` would have given it, and its
//! append is written before the call returns: a caller that records an intent before a
//! mutation keeps that order.
//!
//! An append that nothing waits on (a fact recorded at the end of a task's work) can be
//! [deferred](GroupCommit::defer): it rides with the next write, or with the closing
//! [`flush`](GroupCommit::flush), which also carries one last append of its own (an
//! account's claim release) so that everything left goes in one write.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::envelope::{MAX_EVENTS_PER_APPEND, NewEvent, StreamId};
use crate::error::JournalError;
use crate::{Append, Journal, StreamHead};

/// An append waiting for a write, and where its outcome goes.
struct Queued {
    append: Append,
    outcome: oneshot::Sender<Result<StreamHead, JournalError>>,
}

/// A deferred append's outcome, known once a write has carried it (at the latest, the
/// [`GroupCommit::flush`]).
#[derive(Debug)]
pub struct Deferred(oneshot::Receiver<Result<StreamHead, JournalError>>);

impl Deferred {
    /// The outcome, or `None` while no write has carried the append yet.
    pub fn outcome(mut self) -> Option<Result<StreamHead, JournalError>> {
        self.0.try_recv().ok()
    }
}

/// Groups concurrent appends to the streams of one campaign into shared writes.
pub struct GroupCommit {
    journal: Arc<dyn Journal>,
    queue: Mutex<Vec<Queued>>,
    /// Held by the one task writing a group.
    writer: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("journal", &self.journal.describe())
            .finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// A group commit in front of `journal`.
    pub fn new(journal: Arc<dyn Journal>) -> Self {
        Self {
            journal,
            queue: Mutex::new(Vec::new()),
            writer: tokio::sync::Mutex::new(()),
        }
    }

    /// [`Journal::append_at`], written with whatever other appends are waiting.
    pub async fn append_at(
        &self,
        stream: &StreamId,
        head: &StreamHead,
        events: Vec<NewEvent>,
    ) -> Result<StreamHead, JournalError> {
        let mut outcome = self.enqueue(Append {
            stream: stream.clone(),
            head: head.clone(),
            events,
        });
        loop {
            let _writer = self.writer.lock().await;
            match outcome.try_recv() {
                Ok(result) => return result,
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(JournalError::Unexpected {
                        backend: self.journal.describe(),
                        detail: "the task writing a group of appends stopped before its outcome"
                            .into(),
                    });
                }
                // Not written yet: this task writes the next group, its own among them.
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            self.write_group().await;
        }
    }

    /// Queues an append that nothing waits on, to be written with the next group or by
    /// [`flush`](GroupCommit::flush). It must be its stream's last append before then.
    pub fn defer(&self, stream: &StreamId, head: &StreamHead, events: Vec<NewEvent>) -> Deferred {
        Deferred(self.enqueue(Append {
            stream: stream.clone(),
            head: head.clone(),
            events,
        }))
    }

    /// Writes every deferred append still queued, with `last` (written in the same
    /// request when they fit in one), and returns `last`'s outcome. Call it when no
    /// other task appends any more.
    pub async fn flush(&self, last: Option<Append>) -> Option<Result<StreamHead, JournalError>> {
        let mut outcome = last.map(|append| self.enqueue(append));
        let _writer = self.writer.lock().await;
        while !self.queue().is_empty() {
            self.write_group().await;
        }
        outcome.as_mut().map(|outcome| {
            outcome.try_recv().unwrap_or_else(|_| {
                Err(JournalError::Unexpected {
                    backend: self.journal.describe(),
                    detail: "a flushed append was not written".into(),
                })
            })
        })
    }

    /// Drops every append still queued, unwritten: their [`Deferred`] outcomes stay
    /// `None`. For a caller that may no longer write them (it lost its claim).
    pub fn discard(&self) {
        self.queue().clear();
    }

    fn enqueue(&self, append: Append) -> oneshot::Receiver<Result<StreamHead, JournalError>> {
        let (sender, outcome) = oneshot::channel();
        self.queue().push(Queued {
            append,
            outcome: sender,
        });
        outcome
    }

    /// Writes the next group from the queue (the caller holds `writer`).
    async fn write_group(&self) {
        let group = self.take_group();
        if group.is_empty() {
            return;
        }
        let (appends, senders): (Vec<Append>, Vec<_>) = group
            .into_iter()
            .map(|queued| (queued.append, queued.outcome))
            .unzip();
        let results = self.journal.append_many(appends).await;
        for (sender, result) in senders.into_iter().zip(results) {
            // A task that stopped waiting no longer needs its outcome.
            let _ = sender.send(result);
        }
    }

    /// The queued appends one write may carry, oldest first:
    /// one campaign, one append per stream, at most [`MAX_EVENTS_PER_APPEND`] events
    /// (a larger append alone, for the journal to refuse). The rest stays queued.
    fn take_group(&self) -> Vec<Queued> {
        let mut queue = self.queue();
        let mut group: Vec<Queued> = Vec::new();
        let mut events = 0;
        let mut index = 0;
        while index < queue.len() {
            let candidate = &queue[index].append;
            let fits = group.is_empty()
                || (events + candidate.events.len() <= MAX_EVENTS_PER_APPEND
                    && candidate.stream.campaign() == group[0].append.stream.campaign()
                    && group.iter().all(|q| q.append.stream != candidate.stream));
            if fits {
                events += candidate.events.len();
                group.push(queue.remove(index));
            } else {
                index += 1;
            }
        }
        group
    }

    fn queue(&self) -> MutexGuard<'_, Vec<Queued>> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use chrono::{DateTime, Utc};
    use serde_json::json;

    use super::*;
    use crate::envelope::{Actor, Envelope, SchemaVersion};
    use crate::{MemoryJournal, verify_chain};

    /// A memory journal whose group appends are counted and take a while, so that
    /// appends queue up behind a write in flight.
    #[derive(Debug, Default)]
    struct Slow {
        inner: MemoryJournal,
        writes: AtomicUsize,
    }

    #[async_trait]
    impl Journal for Slow {
        async fn append(
            &self,
            stream: &StreamId,
            expected_version: u64,
            events: Vec<NewEvent>,
        ) -> Result<u64, JournalError> {
            self.inner.append(stream, expected_version, events).await
        }
        async fn append_at(
            &self,
            stream: &StreamId,
            head: &StreamHead,
            events: Vec<NewEvent>,
        ) -> Result<StreamHead, JournalError> {
            self.inner.append_at(stream, head, events).await
        }
        async fn append_many(&self, appends: Vec<Append>) -> Vec<Result<StreamHead, JournalError>> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.inner.append_many(appends).await
        }
        async fn read_stream(&self, stream: &StreamId) -> Result<Vec<Envelope>, JournalError> {
            self.inner.read_stream(stream).await
        }
        async fn read_campaign(&self, campaign: &str) -> Result<Vec<Envelope>, JournalError> {
            self.inner.read_campaign(campaign).await
        }
        async fn list_campaigns(&self) -> Result<Vec<String>, JournalError> {
            self.inner.list_campaigns().await
        }
        async fn events_for_access_key(&self, key: &str) -> Result<Vec<Envelope>, JournalError> {
            self.inner.events_for_access_key(key).await
        }
        async fn events_for_account(
            &self,
            account_id: &str,
            from: DateTime<Utc>,
            to: DateTime<Utc>,
        ) -> Result<Vec<Envelope>, JournalError> {
            self.inner.events_for_account(account_id, from, to).await
        }
        fn describe(&self) -> String {
            "slow memory".into()
        }
    }

    fn events(count: usize, task: usize) -> Vec<NewEvent> {
        (0..count)
            .map(|n| NewEvent {
                event_type: "Grouped".into(),
                schema_version: SchemaVersion::new(1, 0),
                payload: json!({ "task": task, "n": n }),
                account_id: None,
                user_name: None,
                access_key_ids: Vec::new(),
                actor: Actor {
                    caller_arn: "arn:aws:iam::123456789012:user/test".into(),
                    run_id: "run".into(),
                    host: "host".into(),
                },
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_share_writes_and_each_gets_its_own_outcome() {
        const TASKS: usize = 8;
        const ROUNDS: u64 = 3;
        let journal = Arc::new(Slow::default());
        let group = Arc::new(GroupCommit::new(journal.clone()));
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..TASKS {
            let group = group.clone();
            tasks.spawn(async move {
                let stream = StreamId::new("c", format!("user-{task}")).unwrap();
                let mut head = StreamHead::empty();
                for round in 0..ROUNDS {
                    head = group
                        .append_at(&stream, &head, events(1 + task % 2, task))
                        .await
                        .unwrap();
                    assert_eq!(head.version(), (round + 1) * (1 + task as u64 % 2));
                }
                // A stale head is this task's conflict alone.
                let stale = group
                    .append_at(&stream, &StreamHead::empty(), events(1, task))
                    .await
                    .unwrap_err();
                assert!(stale.is_conflict(), "{stale}");
                head
            });
        }
        let mut heads = Vec::new();
        while let Some(head) = tasks.join_next().await {
            heads.push(head.unwrap());
        }
        let stored = journal.read_campaign("c").await.unwrap();
        verify_chain(&stored).unwrap();
        let expected: u64 = (0..TASKS as u64).map(|t| ROUNDS * (1 + t % 2)).sum();
        assert_eq!(stored.len() as u64, expected);
        let writes = journal.writes.load(Ordering::SeqCst);
        // 8 tasks × 4 appends each, one at a time per task: without grouping 32 writes.
        assert!(
            writes <= 16,
            "{writes} writes for {} appends",
            TASKS * (ROUNDS as usize + 1)
        );
    }

    #[tokio::test]
    async fn deferred_appends_ride_with_the_next_write_or_the_flush() {
        let journal = Arc::new(Slow::default());
        let group = GroupCommit::new(journal.clone());
        let stream = |n: usize| StreamId::new("c", format!("user-{n}")).unwrap();
        let first = group.defer(&stream(1), &StreamHead::empty(), events(1, 1));
        assert_eq!(
            journal.writes.load(Ordering::SeqCst),
            0,
            "deferred: not written"
        );
        // The next append carries it.
        let head = group
            .append_at(&stream(2), &StreamHead::empty(), events(1, 2))
            .await
            .unwrap();
        assert_eq!(journal.writes.load(Ordering::SeqCst), 1);
        assert_eq!(first.outcome().unwrap().unwrap().version(), 1);
        // Two more deferred, and a conflicting one: the flush writes them with its own
        // last append, in one write, each with its own outcome.
        let second = group.defer(&stream(3), &StreamHead::empty(), events(2, 3));
        let stale = group.defer(&stream(2), &StreamHead::empty(), events(1, 2));
        let last = StreamId::new("c", "account/1").unwrap();
        let closing = group
            .flush(Some(Append {
                stream: last.clone(),
                head: StreamHead::empty(),
                events: events(1, 9),
            }))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(journal.writes.load(Ordering::SeqCst), 2);
        assert_eq!(closing.version(), 1);
        assert_eq!(second.outcome().unwrap().unwrap().version(), 2);
        assert!(stale.outcome().unwrap().unwrap_err().is_conflict());
        assert_eq!(
            StreamHead::after(&journal.read_stream(&stream(2)).await.unwrap()),
            head
        );
        assert_eq!(journal.read_campaign("c").await.unwrap().len(), 5);
        // Nothing left: a flush without a last append writes nothing.
        assert!(group.flush(None).await.is_none());
        assert_eq!(journal.writes.load(Ordering::SeqCst), 2);
        // A discarded append is never written, and has no outcome.
        let dropped = group.defer(&stream(4), &StreamHead::empty(), events(1, 4));
        group.discard();
        assert!(group.flush(None).await.is_none());
        assert!(dropped.outcome().is_none());
        assert!(journal.read_stream(&stream(4)).await.unwrap().is_empty());
        assert_eq!(journal.writes.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_group_never_exceeds_the_events_of_one_append() {
        let journal = Arc::new(Slow::default());
        let group = Arc::new(GroupCommit::new(journal.clone()));
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..4 {
            let group = group.clone();
            tasks.spawn(async move {
                let stream = StreamId::new("c", format!("user-{task}")).unwrap();
                group
                    .append_at(&stream, &StreamHead::empty(), events(10, task))
                    .await
            });
        }
        while let Some(result) = tasks.join_next().await {
            assert_eq!(result.unwrap().unwrap().version(), 10);
        }
        // 40 events, at most 24 per write: at least two writes, all written.
        assert!(journal.writes.load(Ordering::SeqCst) >= 2);
        assert_eq!(journal.read_campaign("c").await.unwrap().len(), 40);
        // An append larger than one write allows is refused, as `append_at` refuses it.
        let stream = StreamId::new("c", "big").unwrap();
        let refused = group
            .append_at(
                &stream,
                &StreamHead::empty(),
                events(MAX_EVENTS_PER_APPEND + 1, 9),
            )
            .await
            .unwrap_err();
        assert!(matches!(refused, JournalError::Rejected(_)), "{refused}");
    }
}
