//! Group commit: appends from concurrent tasks, each to its own stream, written together.
//!
//! A task hands its append to a [`GroupCommit`] and waits for its outcome. The first
//! task to find no write in flight becomes the writer: it takes every append queued
//! so far (up to [`MAX_EVENTS_PER_APPEND`] events, one per stream) and writes them with
//! one [`Journal::append_many`]. Appends queued while that write is in flight go in the
//! next one.
//!
//! Tasks that append again and again (an account's user tasks) can [join](GroupCommit::join)
//! the group as members. An append then waits, before it is written, until every member
//! is appending too (queued or in flight) or has left, or until the group's *linger*
//! has passed since it was queued: the users of one account reach their intents at
//! about the same time, and their appends go in one write instead of one each. The
//! linger bounds what a member on a long step (a verification through IAM's
//! propagation delay) can cost the others. Without members (or with every other member
//! appending already), an append never waits.
//!
//! Each task still gets exactly the outcome `append_at` would have given it (with the
//! group's fence, `append_at_fenced`), and its append is written before the call
//! returns: a caller that records an intent before a mutation keeps that order.
//!
//! A *gate* is an append that the next write must carry, all or none with the rest of
//! it ([`Journal::append_all`]): an account's claim, taken by the first write of the
//! account's work instead of a write of its own, so that none of that work is written
//! unless the claim is. When the gate's own condition fails, nothing of the write is
//! written and every append in it fails with the gate's error, as does every append
//! after it (queued, perhaps, on the promise of the gate); when another append's fails,
//! that append alone fails and the rest is written again at once.
//!
//! An append that nothing waits on (a fact recorded at the end of a task's work) can be
//! [deferred](GroupCommit::defer): it rides with the next write, or with the closing
//! [`flush`](GroupCommit::flush), which also carries one last append of its own (an
//! account's claim release) so that everything left goes in one write.
//!
//! A group can be [fenced](GroupCommit::set_fence): every write then carries the
//! group's current [`Fence`] ([`Journal::append_many_fenced`], `append_all_fenced`), so
//! that nothing of it lands once another writer moved the fence's stream (took the
//! account's claim over). An append to the fence's own stream that goes through the
//! group (a renewal of the claim) moves the fence to that append's new head as it is
//! written, under the lock of the one task writing, so that no write carries a fence
//! the group's own renewal moved. When a write fails on its fence, every append in it
//! fails with [`JournalError::Fenced`], and so does every later one while the fence
//! stays, without a request: a stream never goes back.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

use crate::envelope::{MAX_EVENTS_PER_APPEND, NewEvent, StreamId};
use crate::error::JournalError;
use crate::{Append, Fence, Journal, StreamHead};

/// An append waiting for a write, and where its outcome goes.
struct Queued {
    append: Append,
    outcome: oneshot::Sender<Result<StreamHead, JournalError>>,
    /// The group's gate (see [`GroupCommit::gate`]).
    gate: bool,
}

/// A deferred append's outcome, known once a write has carried it (at the latest, the
/// [`GroupCommit::flush`]).
#[derive(Debug)]
pub struct Deferred {
    receiver: oneshot::Receiver<Result<StreamHead, JournalError>>,
    /// The outcome [`wait`](Deferred::wait) received.
    received: Option<Result<StreamHead, JournalError>>,
}

impl Deferred {
    fn new(receiver: oneshot::Receiver<Result<StreamHead, JournalError>>) -> Self {
        Self {
            receiver,
            received: None,
        }
    }

    /// The outcome, or `None` while no write has carried the append yet.
    pub fn outcome(mut self) -> Option<Result<StreamHead, JournalError>> {
        self.received
            .take()
            .or_else(|| self.receiver.try_recv().ok())
    }

    /// The outcome once a write carried the append (then `Some` once);
    /// [`JournalError::Unexpected`] when it was dropped unwritten.
    pub fn take_outcome(&mut self) -> Option<Result<StreamHead, JournalError>> {
        if let Some(received) = self.received.take() {
            return Some(received);
        }
        match self.receiver.try_recv() {
            Ok(outcome) => Some(outcome),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(dropped())),
        }
    }

    /// Waits until a write carried the append (or it was dropped unwritten); the
    /// outcome is then [`take_outcome`](Deferred::take_outcome)'s.
    pub async fn wait(&mut self) {
        if self.received.is_none() {
            self.received = Some(
                (&mut self.receiver)
                    .await
                    .unwrap_or_else(|_| Err(dropped())),
            );
        }
    }
}

fn dropped() -> JournalError {
    unwritten("group commit".into(), "the append was dropped unwritten")
}

/// An append that no write carried, when its caller expected one to.
fn unwritten(backend: String, detail: &str) -> JournalError {
    JournalError::Unexpected {
        backend,
        detail: detail.into(),
    }
}

/// Groups concurrent appends to the streams of one campaign into shared writes.
pub struct GroupCommit {
    journal: Arc<dyn Journal>,
    queue: Mutex<Vec<Queued>>,
    /// Who is appending, and who could be.
    tally: Mutex<Tally>,
    /// Told whenever the tally moves towards a write.
    moved: Notify,
    /// How long an append waits for the other members at most.
    linger: Duration,
    /// Set when the gate's write failed: nothing more is written, every append queued
    /// then or later fails with this (it may have been queued on the gate's promise).
    refused: Mutex<Option<JournalError>>,
    /// The fence every write carries, and its failure.
    fencing: Mutex<Fencing>,
    /// Held by the one task writing a group.
    writer: tokio::sync::Mutex<()>,
}

/// A group's fence (see [`GroupCommit::set_fence`]).
#[derive(Debug, Default)]
struct Fencing {
    fence: Option<Fence>,
    /// Set when a write failed on `fence`: every later write carrying it would too.
    failed: Option<JournalError>,
}

/// Members of the group, and tasks inside [`GroupCommit::append_at`].
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    members: usize,
    appending: usize,
}

/// Membership of a [`GroupCommit`], from [`GroupCommit::join`] until dropped.
#[must_use = "a member leaves the group when this is dropped"]
pub struct Member<'g> {
    group: &'g GroupCommit,
}

impl std::fmt::Debug for Member<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").finish_non_exhaustive()
    }
}

impl Drop for Member<'_> {
    fn drop(&mut self) {
        self.group.tally().members -= 1;
        self.group.moved.notify_waiters();
    }
}

/// Counts a task inside `append_at` until dropped (also when its future is dropped).
struct Appending<'g> {
    group: &'g GroupCommit,
}

impl Drop for Appending<'_> {
    fn drop(&mut self) {
        self.group.tally().appending -= 1;
    }
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("journal", &self.journal.describe())
            .finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// A group commit in front of `journal`, whose appends wait for the other members
    /// for at most `linger` (see the module's documentation).
    pub fn new(journal: Arc<dyn Journal>, linger: Duration) -> Self {
        Self {
            journal,
            queue: Mutex::new(Vec::new()),
            tally: Mutex::new(Tally::default()),
            moved: Notify::new(),
            linger,
            refused: Mutex::new(None),
            fencing: Mutex::new(Fencing::default()),
            writer: tokio::sync::Mutex::new(()),
        }
    }

    /// Fences every write from the next one on (a write in flight keeps the fence it
    /// carries): written only while `fence` holds (see [`Fence`]); `None` lifts the
    /// fence. An append to the fence's stream through the group moves the fence to the
    /// new head once written.
    pub fn set_fence(&self, fence: Option<Fence>) {
        *self.fencing() = Fencing {
            fence,
            failed: None,
        };
    }

    /// The fence the next write carries: the one set, moved on by the group's own
    /// appends to its stream.
    pub fn fence(&self) -> Option<Fence> {
        self.fencing().fence.clone()
    }

    /// Makes the calling task a member until the returned guard is dropped: its
    /// appends, and the other members', then wait for each other (up to the linger).
    pub fn join(&self) -> Member<'_> {
        self.tally().members += 1;
        Member { group: self }
    }

    /// [`Journal::append_at`], written with whatever other appends are waiting (and the
    /// group's fence, if any).
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
        // Counted once queued, so that a member this wakes finds the append to write.
        let _appending = {
            self.tally().appending += 1;
            Appending { group: self }
        };
        self.moved.notify_waiters();
        if let Some(result) = self.wait_for_members(&mut outcome).await {
            return result;
        }
        loop {
            let _writer = self.writer.lock().await;
            match outcome.try_recv() {
                Ok(result) => return result,
                Err(oneshot::error::TryRecvError::Closed) => return Err(self.writer_gone()),
                // Not written yet: this task writes the next group, its own among them.
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            self.write_group().await;
        }
    }

    /// Waits until every member is appending (or has left), or the linger has passed:
    /// `None` then. The append's outcome instead when another task wrote it meanwhile.
    async fn wait_for_members(
        &self,
        outcome: &mut oneshot::Receiver<Result<StreamHead, JournalError>>,
    ) -> Option<Result<StreamHead, JournalError>> {
        let deadline = tokio::time::Instant::now() + self.linger;
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            // Registered before the check, so that a change right after it is not missed.
            moved.as_mut().enable();
            let tally = *self.tally();
            if tally.appending >= tally.members {
                return None;
            }
            tokio::select! {
                written = &mut *outcome => return Some(written.unwrap_or_else(|_| Err(self.writer_gone()))),
                () = &mut moved => {}
                () = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }

    /// Queues the group's gate: an append that the next write carries, all or none with
    /// the rest of it (see the module's documentation). At most one at a time.
    pub fn gate(&self, append: Append) -> Deferred {
        let (sender, outcome) = oneshot::channel();
        self.queue().push(Queued {
            append,
            outcome: sender,
            gate: true,
        });
        Deferred::new(outcome)
    }

    /// Takes the gate back unwritten, if it is still queued; its [`Deferred`] then
    /// reports it dropped.
    pub fn ungate(&self) -> bool {
        let mut queue = self.queue();
        let before = queue.len();
        queue.retain(|queued| !queued.gate);
        queue.len() < before
    }

    /// Queues an append that nothing waits on, to be written with the next group or by
    /// [`flush`](GroupCommit::flush). It must be its stream's last append before then.
    pub fn defer(&self, stream: &StreamId, head: &StreamHead, events: Vec<NewEvent>) -> Deferred {
        Deferred::new(self.enqueue(Append {
            stream: stream.clone(),
            head: head.clone(),
            events,
        }))
    }

    /// Writes every deferred append still queued, with `last` (written in the same
    /// request when they fit in one), and returns `last`'s outcome. Call it when no
    /// other task appends any more. A `last` to the stream of a gate still queued is
    /// written as the gate's continuation: its events go in the gate's append.
    pub async fn flush(&self, last: Option<Append>) -> Option<Result<StreamHead, JournalError>> {
        let mut outcome = last.map(|mut append| {
            let mut queue = self.queue();
            let gated = queue
                .iter()
                .position(|q| q.gate && q.append.stream == append.stream);
            let gate = gated.is_some();
            if let Some(position) = gated {
                let queued = queue.remove(position);
                let mut events = queued.append.events;
                events.append(&mut append.events);
                append = Append {
                    events,
                    ..queued.append
                };
            }
            let (sender, outcome) = oneshot::channel();
            queue.push(Queued {
                append,
                outcome: sender,
                gate,
            });
            outcome
        });
        let _writer = self.writer.lock().await;
        while !self.queue().is_empty() {
            self.write_group().await;
        }
        outcome.as_mut().map(|outcome| {
            outcome.try_recv().unwrap_or_else(|_| {
                Err(unwritten(
                    self.journal.describe(),
                    "a flushed append was not written",
                ))
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
            gate: false,
        });
        outcome
    }

    /// Writes the gate now, with whatever is queued, if it is still queued: for a gate
    /// that cannot wait longer for a write to carry it.
    pub async fn write_gate(&self) {
        let _writer = self.writer.lock().await;
        if self.queue().iter().any(|q| q.gate) {
            self.write_group().await;
        }
    }

    /// Writes the next group from the queue (the caller holds `writer`).
    async fn write_group(&self) {
        let group = self.take_group();
        if group.is_empty() {
            return;
        }
        let refused = self.refused().clone();
        if let Some(refused) = refused {
            for queued in group {
                let _ = queued.outcome.send(Err(refused.clone()));
            }
            return;
        }
        let (fence, failed) = {
            let fencing = self.fencing();
            (fencing.fence.clone(), fencing.failed.clone())
        };
        if let Some(failed) = failed {
            for queued in group {
                let _ = queued.outcome.send(Err(failed.clone()));
            }
            return;
        }
        if group.iter().any(|queued| queued.gate) {
            return self.write_gated(group, fence).await;
        }
        let (appends, senders): (Vec<Append>, Vec<_>) = group
            .into_iter()
            .map(|queued| (queued.append, queued.outcome))
            .unzip();
        let streams: Vec<StreamId> = appends.iter().map(|a| a.stream.clone()).collect();
        let results = self
            .journal
            .append_many_fenced(appends, fence.as_ref())
            .await;
        if let Some(fence) = &fence {
            let moved = streams.iter().zip(&results).find_map(|(stream, result)| {
                result.as_ref().ok().filter(|_| stream == &fence.stream)
            });
            let failure = results
                .iter()
                .find_map(|result| result.as_ref().err().filter(|e| e.is_fenced()));
            self.follow_fence(fence, moved, failure);
        }
        for (sender, result) in senders.into_iter().zip(results) {
            // A task that stopped waiting no longer needs its outcome.
            let _ = sender.send(result);
        }
    }

    /// After a write that carried `fence`: moves the fence to `moved`, the head of the
    /// write's append to the fence's stream, or records a `failure` on the fence
    /// ([`JournalError::Fenced`]; any other is not the fence's). Left alone when
    /// [`set_fence`](GroupCommit::set_fence) replaced it meanwhile.
    fn follow_fence(
        &self,
        fence: &Fence,
        moved: Option<&StreamHead>,
        failure: Option<&JournalError>,
    ) {
        let mut fencing = self.fencing();
        if fencing.fence.as_ref() != Some(fence) {
            return;
        }
        if let Some(head) = moved {
            fencing.fence = Some(Fence::at(&fence.stream, head));
        }
        if let Some(failure) = failure.filter(|e| e.is_fenced()) {
            fencing.failed = Some(failure.clone());
        }
    }

    /// Writes a group that carries the gate, all or none. An append whose own condition
    /// failed is answered and left out, and the rest written again; the gate's failure
    /// (or the fence's, or the storage's) is every append's.
    async fn write_gated(&self, mut group: Vec<Queued>, fence: Option<Fence>) {
        loop {
            let appends: Vec<Append> = group.iter().map(|q| q.append.clone()).collect();
            let failure = match self
                .journal
                .append_all_fenced(appends, fence.as_ref())
                .await
            {
                Ok(heads) => {
                    if let Some(fence) = &fence {
                        let moved = group.iter().zip(&heads).find_map(|(q, head)| {
                            Some(head).filter(|_| q.append.stream == fence.stream)
                        });
                        self.follow_fence(fence, moved, None);
                    }
                    for (queued, head) in group.into_iter().zip(heads) {
                        let _ = queued.outcome.send(Ok(head));
                    }
                    return;
                }
                Err(failure) => failure,
            };
            if let Some(fence) = &fence {
                self.follow_fence(fence, None, Some(&failure));
            }
            let culprit = match &failure {
                JournalError::Conflict { stream, .. } => group
                    .iter()
                    .position(|q| !q.gate && &q.append.stream == stream),
                _ => None,
            };
            let Some(culprit) = culprit else {
                // The gate (or the fence) failed: so does every append written after it.
                *self.refused() = Some(failure.clone());
                for queued in group {
                    let _ = queued.outcome.send(Err(failure.clone()));
                }
                return;
            };
            let _ = group.remove(culprit).outcome.send(Err(failure));
            if group.iter().all(|q| q.gate) {
                // Only the gate is left: it waits for the next write.
                let mut queue = self.queue();
                for queued in group.into_iter().rev() {
                    queue.insert(0, queued);
                }
                return;
            }
        }
    }

    /// The queued appends one write may carry, oldest first:
    /// one campaign, one append per stream, at most [`MAX_EVENTS_PER_APPEND`] events
    /// (a larger append alone, for the journal to refuse). The rest stays queued.
    fn take_group(&self) -> Vec<Queued> {
        let mut queue = self.queue();
        // The gate goes first: it is in the next write, whatever else fits.
        if let Some(gate) = queue.iter().position(|q| q.gate) {
            let gate = queue.remove(gate);
            queue.insert(0, gate);
        }
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

    fn writer_gone(&self) -> JournalError {
        unwritten(
            self.journal.describe(),
            "the task writing a group of appends stopped before its outcome",
        )
    }

    fn tally(&self) -> MutexGuard<'_, Tally> {
        self.tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn refused(&self) -> MutexGuard<'_, Option<JournalError>> {
        self.refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn fencing(&self) -> MutexGuard<'_, Fencing> {
        self.fencing
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
    use crate::{Fence, MemoryJournal, verify_chain};

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
        async fn append_at_fenced(
            &self,
            stream: &StreamId,
            head: &StreamHead,
            events: Vec<NewEvent>,
            fence: Option<&Fence>,
        ) -> Result<StreamHead, JournalError> {
            self.inner
                .append_at_fenced(stream, head, events, fence)
                .await
        }
        async fn append_many_fenced(
            &self,
            appends: Vec<Append>,
            fence: Option<&Fence>,
        ) -> Vec<Result<StreamHead, JournalError>> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.inner.append_many_fenced(appends, fence).await
        }
        async fn append_all_fenced(
            &self,
            appends: Vec<Append>,
            fence: Option<&Fence>,
        ) -> Result<Vec<StreamHead>, JournalError> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.inner.append_all_fenced(appends, fence).await
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
        let group = Arc::new(GroupCommit::new(journal.clone(), Duration::ZERO));
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
        let group = GroupCommit::new(journal.clone(), Duration::ZERO);
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

    #[tokio::test(start_paused = true)]
    async fn members_appends_wait_for_each_other_up_to_the_linger() {
        let journal = Arc::new(Slow::default());
        let group = GroupCommit::new(journal.clone(), Duration::from_secs(5));
        let writes = || journal.writes.load(Ordering::SeqCst);
        let start = tokio::time::Instant::now();

        // Three members: two append at once while the third is on a step of 1 s, then
        // leaves without appending. Both appends go in one write, once it has left.
        let (a, b, c) = (group.join(), group.join(), group.join());
        async fn append(
            group: &GroupCommit,
            n: usize,
            member: Member<'_>,
            after: Duration,
            start: tokio::time::Instant,
        ) -> (u64, Duration) {
            tokio::time::sleep(after).await;
            let stream = StreamId::new("c", format!("user-{n}")).unwrap();
            let head = group
                .append_at(&stream, &StreamHead::empty(), events(1, n))
                .await;
            drop(member);
            (head.unwrap().version(), start.elapsed())
        }
        let leave = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(c);
        };
        let ((va, ta), (vb, tb), ()) = tokio::join!(
            append(&group, 1, a, Duration::ZERO, start),
            append(&group, 2, b, Duration::from_millis(10), start),
            leave
        );
        assert_eq!((va, vb), (1, 1));
        assert_eq!(writes(), 1, "the two appends share one write");
        // Written once the third member left (1 s), plus the write's own 20 ms.
        assert_eq!(ta, Duration::from_millis(1020), "{ta:?}");
        assert_eq!(tb, ta);

        // A member that neither appends nor leaves holds the others back for the linger
        // at most.
        let (d, _idle) = (group.join(), group.join());
        let (vd, td) = append(&group, 3, d, Duration::ZERO, start).await;
        assert_eq!(vd, 1);
        assert_eq!(writes(), 2);
        assert_eq!(td - tb, Duration::from_millis(5020), "{td:?}");

        // With every other member gone, an append waits for no one.
        drop(_idle);
        let before = start.elapsed();
        let stream = StreamId::new("c", "user-4").unwrap();
        group
            .append_at(&stream, &StreamHead::empty(), events(1, 4))
            .await
            .unwrap();
        assert_eq!(start.elapsed() - before, Duration::from_millis(20));
        assert_eq!(writes(), 3);
        assert_eq!(journal.read_campaign("c").await.unwrap().len(), 4);
    }

    #[tokio::test]
    async fn the_gate_goes_with_the_next_write_all_or_none() {
        let journal = Arc::new(Slow::default());
        let group = GroupCommit::new(journal.clone(), Duration::ZERO);
        let writes = || journal.writes.load(Ordering::SeqCst);
        let stream = |n: usize| StreamId::new("c", format!("user-{n}")).unwrap();
        let claim = StreamId::new("c", "account/1").unwrap();
        let gated = |head: &StreamHead| Append {
            stream: claim.clone(),
            head: head.clone(),
            events: events(1, 0),
        };

        // Queued, not written: the next append carries it, in one write.
        let mut gate = group.gate(gated(&StreamHead::empty()));
        assert!(gate.take_outcome().is_none());
        assert_eq!(writes(), 0);
        let first = group
            .append_at(&stream(1), &StreamHead::empty(), events(1, 1))
            .await
            .unwrap();
        assert_eq!(writes(), 1);
        let claim_head = gate.take_outcome().unwrap().unwrap();
        assert_eq!(claim_head.version(), 1);

        // Another append's conflict fails that append alone: the gate and the rest are
        // written again at once. Two writes: the refused one, and the retry.
        let mut gate = group.gate(gated(&claim_head));
        let stale = group.defer(&stream(1), &StreamHead::empty(), events(1, 1));
        let fresh = group
            .append_at(&stream(2), &StreamHead::empty(), events(1, 2))
            .await
            .unwrap();
        assert_eq!(fresh.version(), 1);
        assert!(stale.outcome().unwrap().unwrap_err().is_conflict());
        let claim_head = gate.take_outcome().unwrap().unwrap();
        assert_eq!(claim_head.version(), 2);
        assert_eq!(writes(), 3);

        // The gate's own conflict: nothing of the write is written, and every append in
        // it fails with the gate's error.
        let before = journal.read_campaign("c").await.unwrap();
        let mut gate = group.gate(gated(&StreamHead::empty()));
        let refused = group
            .append_at(&stream(1), &first, events(1, 1))
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, JournalError::Conflict { stream, .. } if stream == &claim),
            "{refused}"
        );
        assert!(gate.take_outcome().unwrap().unwrap_err().is_conflict());
        assert_eq!(journal.read_campaign("c").await.unwrap(), before);
        // Nor is anything after it: it may have been queued on the gate's promise.
        let writes_before = writes();
        let late = group
            .append_at(&stream(4), &StreamHead::empty(), events(1, 4))
            .await
            .unwrap_err();
        assert!(late.is_conflict(), "{late}");
        assert_eq!(writes(), writes_before);
        assert_eq!(journal.read_campaign("c").await.unwrap(), before);

        // A closing append to the gate's stream continues the gate: one append of both.
        let group = GroupCommit::new(journal.clone(), Duration::ZERO);
        let mut gate = group.gate(gated(&claim_head));
        let late = group.defer(&stream(3), &StreamHead::empty(), events(1, 3));
        let closed = group
            .flush(Some(gated(&claim_head)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(closed.version(), 4, "taken and released in one append");
        assert_eq!(late.outcome().unwrap().unwrap().version(), 1);
        assert!(
            gate.take_outcome().unwrap().is_err(),
            "merged into the flush"
        );

        // Taken back unwritten: nothing written.
        let writes_before = writes();
        let _gate = group.gate(gated(&closed));
        assert!(group.ungate());
        assert!(group.flush(None).await.is_none());
        assert_eq!(writes(), writes_before);
    }

    #[tokio::test]
    async fn every_write_carries_the_fence_that_the_groups_own_renewals_move() {
        let journal = Arc::new(Slow::default());
        let group = GroupCommit::new(journal.clone(), Duration::ZERO);
        let writes = || journal.writes.load(Ordering::SeqCst);
        let user = StreamId::new("c", "user-1").unwrap();
        let claim = StreamId::new("c", "account/1").unwrap();
        let claim_head = journal
            .inner
            .append_at(&claim, &StreamHead::empty(), events(1, 0))
            .await
            .unwrap();
        group.set_fence(Some(Fence::at(&claim, &claim_head)));

        let head = group
            .append_at(&user, &StreamHead::empty(), events(1, 1))
            .await
            .unwrap();
        // A renewal through the group moves the fence; the next write carries the new one.
        let renewed = group
            .append_at(&claim, &claim_head, events(1, 0))
            .await
            .unwrap();
        assert_eq!(group.fence(), Some(Fence::at(&claim, &renewed)));
        let head = group.append_at(&user, &head, events(1, 1)).await.unwrap();
        assert_eq!((head.version(), writes()), (2, 3));

        // Another writer moves the claim: the next write fails on its fence, every append
        // of it, and every later one without a request, until a new fence is set.
        journal
            .inner
            .append_at(&claim, &renewed, events(1, 9))
            .await
            .unwrap();
        let deferred = group.defer(
            &StreamId::new("c", "user-2").unwrap(),
            &StreamHead::empty(),
            events(1, 2),
        );
        let failed = group
            .append_at(&user, &head, events(1, 1))
            .await
            .unwrap_err();
        assert!(
            matches!(&failed, JournalError::Fenced { stream, expected: 2 } if stream == &claim),
            "{failed}"
        );
        assert!(deferred.outcome().unwrap().unwrap_err().is_fenced());
        assert_eq!(writes(), 4);
        let failed = group
            .append_at(&user, &head, events(1, 1))
            .await
            .unwrap_err();
        assert!(failed.is_fenced(), "{failed}");
        let last = Append {
            stream: claim.clone(),
            head: renewed.clone(),
            events: events(1, 0),
        };
        assert!(
            group
                .flush(Some(last))
                .await
                .unwrap()
                .unwrap_err()
                .is_fenced()
        );
        assert_eq!(
            writes(),
            4,
            "a failed fence fails later writes without a request"
        );
        assert_eq!(journal.read_stream(&user).await.unwrap().len(), 2);

        // A new fence (or none) lifts it.
        let theirs = StreamHead::after(&journal.read_stream(&claim).await.unwrap());
        group.set_fence(Some(Fence::at(&claim, &theirs)));
        let head = group.append_at(&user, &head, events(1, 1)).await.unwrap();
        group.set_fence(None);
        let head = group.append_at(&user, &head, events(1, 1)).await.unwrap();
        assert_eq!((head.version(), writes()), (4, 6));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fence_set_while_a_write_is_in_flight_is_not_moved_by_it() {
        let journal = Arc::new(Slow::default());
        let group = GroupCommit::new(journal.clone(), Duration::ZERO);
        let claim = StreamId::new("c", "account/1").unwrap();
        let claim_head = journal
            .inner
            .append_at(&claim, &StreamHead::empty(), events(1, 0))
            .await
            .unwrap();
        let fence = Fence::at(&claim, &claim_head);
        group.set_fence(Some(fence.clone()));
        let other = Fence {
            stream: StreamId::new("c", "account/2").unwrap(),
            version: 0,
        };
        // The renewal's write takes 20 ms; the fence is replaced 10 ms into it.
        let (renewed, ()) =
            tokio::join!(group.append_at(&claim, &claim_head, events(1, 0)), async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                group.set_fence(Some(other.clone()));
            });
        assert_eq!(
            renewed.unwrap().version(),
            2,
            "written with the fence it carried"
        );
        assert_eq!(group.fence(), Some(other));
    }

    #[tokio::test]
    async fn the_gate_goes_with_the_fence_it_covers_and_fails_with_it() {
        let journal = Arc::new(Slow::default());
        let claim = StreamId::new("c", "account/1").unwrap();
        let user = StreamId::new("c", "user-1").unwrap();
        let take = |head: &StreamHead| Append {
            stream: claim.clone(),
            head: head.clone(),
            events: events(1, 0),
        };
        // The claim taken as the gate, fenced on the claim stream at the head it is
        // taken at: the gate's own append is the fence, and moves it.
        let group = GroupCommit::new(journal.clone(), Duration::ZERO);
        group.set_fence(Some(Fence::at(&claim, &StreamHead::empty())));
        let mut gate = group.gate(take(&StreamHead::empty()));
        let head = group
            .append_at(&user, &StreamHead::empty(), events(1, 1))
            .await
            .unwrap();
        let taken = gate.take_outcome().unwrap().unwrap();
        assert_eq!(group.fence(), Some(Fence::at(&claim, &taken)));
        let head = group.append_at(&user, &head, events(1, 1)).await.unwrap();
        assert_eq!(head.version(), 2);

        // Another run took the claim first: the gate's write fails on the fence, whole.
        let group = GroupCommit::new(journal.clone(), Duration::ZERO);
        group.set_fence(Some(Fence::at(&claim, &StreamHead::empty())));
        let mut gate = group.gate(take(&StreamHead::empty()));
        let before = journal.read_campaign("c").await.unwrap();
        let failed = group
            .append_at(
                &StreamId::new("c", "user-2").unwrap(),
                &StreamHead::empty(),
                events(1, 2),
            )
            .await
            .unwrap_err();
        assert!(failed.is_fenced(), "{failed}");
        assert!(gate.take_outcome().unwrap().unwrap_err().is_fenced());
        assert_eq!(journal.read_campaign("c").await.unwrap(), before);
    }

    #[tokio::test]
    async fn a_group_never_exceeds_the_events_of_one_append() {
        let journal = Arc::new(Slow::default());
        let group = Arc::new(GroupCommit::new(journal.clone(), Duration::ZERO));
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
        // 40 events, at most 23 per write: at least two writes, all written.
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
