//! The journal's contract: the same scenarios, run against every backend.
//!
//! Each backend's test file implements [`Harness`] (fresh, empty journals plus raw
//! access to their storage, to tamper with it as an attacker or a bug would) and
//! expands [`contract_tests!`] with it, which turns every scenario below into a
//! `#[tokio::test]` of that backend.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use keyturn_journal::{
    Actor, Append, ChainBreak, Clock, Envelope, EventSchema, Fence, GENESIS_HASH, GroupCommit,
    Journal, JournalError, MAX_EVENTS_PER_APPEND, NewEvent, SchemaVersion, StreamHead, StreamId,
    SystemClock, decode, verify_chain, verify_stream,
};
use serde_json::{Value, json};

/// A fresh, empty journal and raw access to its storage.
pub struct Fixture {
    /// The journal under test.
    pub journal: Arc<dyn Journal>,
    /// Raw access to the same storage, bypassing the journal.
    pub raw: Box<dyn RawAccess>,
}

/// What a backend's test file provides.
#[async_trait]
pub trait Harness: Send + Sync {
    /// A fresh, empty journal whose reads use small pages where the backend pages, and
    /// which stamps its events with `clock`'s time.
    async fn fixture_with_clock(&self, clock: Arc<dyn Clock>) -> Fixture;

    /// [`Harness::fixture_with_clock`] on the system clock.
    async fn fixture(&self) -> Fixture {
        self.fixture_with_clock(Arc::new(SystemClock)).await
    }
}

/// A clock that stands still until a test moves it: virtual time.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock at `at`.
    pub fn at(at: DateTime<Utc>) -> Self {
        Self(Mutex::new(at))
    }

    /// Moves the clock on by `by`.
    pub fn advance(&self, by: chrono::Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// Direct access to a journal's storage, the way a tamperer (or a bug) would change it.
#[async_trait]
pub trait RawAccess: Send + Sync {
    /// Replaces the stored payload of an event with the given JSON text.
    async fn set_payload(&self, stream: &StreamId, sequence: u64, payload_json: &str);
    /// Deletes an event.
    async fn delete(&self, stream: &StreamId, sequence: u64);
    /// Makes the storage refuse to write the given sequence of a stream, in the middle
    /// of a batch. False if the backend cannot do it.
    async fn refuse_writes_at(&self, stream: &StreamId, sequence: u64) -> bool;
    /// Undoes [`RawAccess::refuse_writes_at`].
    async fn accept_writes(&self, stream: &StreamId, sequence: u64);
    /// Another handle on the same storage: a separate connection or client where the
    /// backend has them, with its default page size.
    async fn another_handle(&self) -> Arc<dyn Journal>;
}

/// Expands every scenario into a test of the backend whose harness `$harness` builds.
#[macro_export]
macro_rules! contract_tests {
    ($harness:expr) => {
        $crate::contract_tests!(@tests $harness;
            round_trip_keeps_every_field,
            events_are_stamped_with_the_journals_clock,
            a_stale_expected_version_is_a_conflict_with_the_actual_version,
            append_at_chains_to_the_head_it_is_given,
            append_at_a_stale_head_is_a_conflict_and_writes_nothing,
            a_batch_is_all_or_nothing,
            racing_writers_never_lose_or_duplicate_an_event,
            append_many_writes_each_stream_at_its_head,
            append_many_conflict_on_one_stream_spares_the_others,
            append_many_refuses_a_call_that_breaks_its_rules,
            append_all_writes_every_stream_or_none,
            a_fenced_append_is_written_only_while_its_fence_holds,
            append_many_fenced_fails_every_append_once_its_fence_moved,
            append_all_fenced_writes_nothing_once_its_fence_moved,
            an_append_to_the_fence_stream_at_the_fence_version_is_its_own_fence,
            a_group_commit_follows_its_fence_moved_by_its_own_renewal,
            racing_group_appends_never_lose_or_duplicate_an_event,
            read_campaign_reads_every_stream_in_order_across_pages,
            list_campaigns_lists_campaigns_with_events,
            events_for_access_key_finds_both_key_slots_in_time_order,
            events_for_account_honours_the_half_open_time_range,
            a_modified_payload_breaks_the_chain_at_that_event,
            a_deleted_middle_event_breaks_the_chain,
            decode_refuses_what_this_build_does_not_understand,
            invalid_input_is_rejected,
            audit_filters_combine_over_an_index,
        );
    };
    (@tests $harness:expr; $($scenario:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $scenario() {
                contract::$scenario(&$harness).await;
            }
        )*
    };
}

// ----- Helpers -----

fn stream(campaign: &str, name: &str) -> StreamId {
    StreamId::new(campaign, name).expect("valid stream id")
}

fn actor() -> Actor {
    Actor {
        caller_arn: "arn:aws:sts::123456789012:assumed-role/keyturn/test".into(),
        run_id: "run-1".into(),
        host: "test-host".into(),
    }
}

fn event(event_type: &str, payload: Value) -> NewEvent {
    NewEvent {
        event_type: event_type.into(),
        schema_version: SchemaVersion::new(1, 0),
        payload,
        account_id: None,
        user_name: None,
        access_key_ids: Vec::new(),
        actor: actor(),
    }
}

fn numbered(count: usize) -> Vec<NewEvent> {
    (0..count)
        .map(|n| event("Numbered", json!({ "n": n })))
        .collect()
}

/// Appends `count` events to a stream in batches of at most `batch`.
async fn fill(journal: &dyn Journal, stream: &StreamId, count: usize, batch: usize) {
    let mut version = journal.read_stream(stream).await.unwrap().len() as u64;
    let mut left = count;
    while left > 0 {
        let size = left.min(batch);
        version = journal
            .append(stream, version, numbered(size))
            .await
            .unwrap();
        left -= size;
    }
}

fn expect_conflict(result: Result<u64, JournalError>, expected: u64, actual: u64) {
    match result {
        Err(JournalError::Conflict {
            expected: e,
            actual: a,
            ..
        }) => assert_eq!((e, a), (expected, actual)),
        other => panic!("expected a conflict at {expected} (actual {actual}), got {other:?}"),
    }
}

fn identities(events: &[Envelope]) -> Vec<(String, String, u64)> {
    events
        .iter()
        .map(|e| (e.campaign.clone(), e.stream.name().to_owned(), e.sequence))
        .collect()
}

// ----- Scenarios -----

pub async fn round_trip_keeps_every_field(harness: &dyn Harness) {
    let fixture = harness.fixture().await;
    let journal = fixture.journal.as_ref();
    let id = stream("q3-2025", "012345678901/alice/AKIAOLD");
    assert!(journal.read_stream(&id).await.unwrap().is_empty());

    let payload = json!({
        "zeta": [1, -2, 3.5, 18446744073709551615u64, null, true],
        "alpha": { "nested": "ünïcödé \"quoted\" \\ \n", "empty": {} },
    });
    let full = NewEvent {
        event_type: "KeyCreated".into(),
        schema_version: SchemaVersion::new(3, 7),
        payload: payload.clone(),
        account_id: Some("012345678901".into()),
        user_name: Some("alice".into()),
        access_key_ids: vec!["AKIAOLD".into(), "AKIANEW".into()],
        actor: Actor {
            caller_arn: "arn:aws:sts::999999999999:assumed-role/ops/jane".into(),
            run_id: "run-42".into(),
            host: "test-host".into(),
        },
    };
    let before = Utc::now().trunc_subsecs(6);
    assert_eq!(journal.append(&id, 0, vec![full.clone()]).await.unwrap(), 1);
    let bare = event("KeyChecked", json!({}));
    assert_eq!(
        journal
            .append(&id, 1, vec![bare.clone(), bare.clone()])
            .await
            .unwrap(),
        3
    );
    let after = Utc::now();

    let events = journal.read_stream(&id).await.unwrap();
    assert_eq!(events.len(), 3);
    let first = &events[0];
    assert_eq!(first.stream, id);
    assert_eq!(first.sequence, 1);
    assert_eq!(first.event_type, full.event_type);
    assert_eq!(first.schema_version, full.schema_version);
    assert_eq!(first.payload, payload);
    assert_eq!(first.campaign, "q3-2025");
    assert_eq!(first.account_id, full.account_id);
    assert_eq!(first.user_name, full.user_name);
    assert_eq!(first.access_key_ids, full.access_key_ids);
    assert_eq!(first.actor, full.actor);
    assert_eq!(first.prev_hash, GENESIS_HASH);
    assert_eq!(first.hash.len(), 64);
    assert!(before <= first.recorded_at && first.recorded_at <= after);
    assert_eq!(first.recorded_at, first.recorded_at.trunc_subsecs(6));
    for (index, later) in events[1..].iter().enumerate() {
        assert_eq!(later.sequence, index as u64 + 2);
        assert_eq!(later.event_type, "KeyChecked");
        assert_eq!(later.account_id, None);
        assert_eq!(later.user_name, None);
        assert!(later.access_key_ids.is_empty());
        assert_eq!(later.prev_hash, events[index].hash);
    }
    verify_stream(&events).unwrap();

    // A second handle on the same storage reads the same envelopes.
    let other = fixture.raw.another_handle().await;
    assert_eq!(other.read_stream(&id).await.unwrap(), events);
}

/// Every way of appending stamps its events with the clock the journal was opened
/// with, to the microsecond, and the audit query by time selects on those stamps: a
/// simulation's campaign lives in its virtual time.
pub async fn events_are_stamped_with_the_journals_clock(harness: &dyn Harness) {
    let start: DateTime<Utc> = "2031-01-02T03:04:05.123456789Z".parse().unwrap();
    let clock = Arc::new(ManualClock::at(start));
    let fixture = harness.fixture_with_clock(clock.clone()).await;
    let journal = fixture.journal.as_ref();
    let day = chrono::Duration::days(1);
    let about = |n: u32| NewEvent {
        account_id: Some("555555555555".into()),
        ..event("Stamped", json!({ "n": n }))
    };
    let (a, b) = (stream("virtual", "a"), stream("virtual", "b"));

    assert_eq!(journal.append(&a, 0, vec![about(1)]).await.unwrap(), 1);
    clock.advance(day);
    let a_head = StreamHead::after(&journal.read_stream(&a).await.unwrap());
    let a_head = journal
        .append_at(&a, &a_head, vec![about(2), about(3)])
        .await
        .unwrap();
    clock.advance(day);
    let heads = journal
        .append_many(vec![
            append(&a, &a_head, vec![about(4)]),
            append(&b, &StreamHead::empty(), vec![about(5)]),
        ])
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    clock.advance(day);
    journal
        .append_all(vec![
            append(&a, &heads[0], vec![about(6)]),
            append(&b, &heads[1], vec![about(7)]),
        ])
        .await
        .unwrap();

    let stamped: Vec<(u64, DateTime<Utc>)> = journal
        .read_campaign("virtual")
        .await
        .unwrap()
        .iter()
        .map(|e| (e.payload["n"].as_u64().unwrap(), e.recorded_at))
        .collect();
    let on = |days: i32| start.trunc_subsecs(6) + day * days;
    assert_eq!(
        stamped,
        [
            (1, on(0)),
            (2, on(1)),
            (3, on(1)),
            (4, on(2)),
            (6, on(3)),
            (5, on(2)),
            (7, on(3)),
        ]
    );
    // The second day, and nothing else, by the account-and-time index.
    let numbers = journal
        .events_for_account("555555555555", on(1), on(2))
        .await
        .unwrap()
        .iter()
        .map(|e| e.payload["n"].as_u64().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(numbers, [2, 3]);
}

/// An append at a known head chains to it, returns the new head (the one a read would
/// give), and mixes with plain appends into one intact chain.
pub async fn append_at_chains_to_the_head_it_is_given(harness: &dyn Harness) {
    let fixture = harness.fixture().await;
    let journal = fixture.journal.as_ref();
    let id = stream("c", "s");
    let head = journal
        .append_at(&id, &StreamHead::empty(), numbered(2))
        .await
        .unwrap();
    assert_eq!(head.version(), 2);
    let head = journal.append_at(&id, &head, numbered(1)).await.unwrap();
    assert_eq!(head.version(), 3);
    let events = journal.read_stream(&id).await.unwrap();
    assert_eq!(StreamHead::after(&events), head, "the head a read gives");
    assert_eq!(head.hash(), events[2].hash);
    assert_eq!(journal.append(&id, 3, numbered(1)).await.unwrap(), 4);
    let head = StreamHead::after(&journal.read_stream(&id).await.unwrap());
    let head = journal.append_at(&id, &head, numbered(2)).await.unwrap();
    assert_eq!(head.version(), 6);
    let events = journal.read_stream(&id).await.unwrap();
    assert_eq!(events.len(), 6);
    verify_stream(&events).unwrap();
    assert_eq!(StreamHead::after(&events), head);

    // A head from another handle (another process) works the same.
    let other = fixture.raw.another_handle().await;
    let head = other.append_at(&id, &head, numbered(1)).await.unwrap();
    assert_eq!(head.version(), 7);
    verify_stream(&journal.read_stream(&id).await.unwrap()).unwrap();

    // Another stream of the same campaign starts from the empty head.
    let second = stream("c", "t");
    let head = journal
        .append_at(&second, &StreamHead::empty(), numbered(1))
        .await
        .unwrap();
    assert_eq!(head.version(), 1);
    assert_eq!(
        journal.list_campaigns().await.unwrap(),
        vec!["c".to_owned()]
    );
    assert_eq!(journal.read_campaign("c").await.unwrap().len(), 8);
}

/// A head the stream has moved past is a conflict with the actual version, as for
/// `append`, and nothing is written; the writer reloads and appends at the new head.
pub async fn append_at_a_stale_head_is_a_conflict_and_writes_nothing(harness: &dyn Harness) {
    let fixture = harness.fixture().await;
    let journal = fixture.journal.as_ref();
    let id = stream("c", "s");
    let stale_empty = StreamHead::empty();
    let head = journal
        .append_at(&id, &StreamHead::empty(), numbered(1))
        .await
        .unwrap();
    let conflict =
        |result: Result<StreamHead, JournalError>, expected: u64, actual: u64| match result {
            Err(JournalError::Conflict {
                expected: e,
                actual: a,
                ..
            }) => assert_eq!((e, a), (expected, actual)),
            other => panic!("expected a conflict, got {other:?}"),
        };
    conflict(
        journal.append_at(&id, &stale_empty, numbered(2)).await,
        0,
        1,
    );

    // Another writer moves the stream on: our head is stale.
    let other = fixture.raw.another_handle().await;
    let theirs = other.append_at(&id, &head, numbered(1)).await.unwrap();
    conflict(journal.append_at(&id, &head, numbered(1)).await, 1, 2);
    conflict(
        journal
            .append_at(&id, &head, numbered(MAX_EVENTS_PER_APPEND))
            .await,
        1,
        2,
    );
    let events = journal.read_stream(&id).await.unwrap();
    assert_eq!(
        events.len(),
        2,
        "nothing written by the conflicting appends"
    );
    assert_eq!(StreamHead::after(&events), theirs);

    // Reloaded, the writer appends at the new head.
    let head = journal
        .append_at(&id, &StreamHead::after(&events), numbered(1))
        .await
        .unwrap();
    assert_eq!(head.version(), 3);
    verify_stream(&journal.read_stream(&id).await.unwrap()).unwrap();

    // A batch still obeys the input rules.
    assert!(matches!(
        journal.append_at(&id, &head, Vec::new()).await,
        Err(JournalError::Rejected(_))
    ));
}

pub async fn a_stale_expected_version_is_a_conflict_with_the_actual_version(harness: &dyn Harness) {
    let fixture = harness.fixture().await;
    let journal = fixture.journal.as_ref();
    let id = stream("c", "s");
    expect_conflict(journal.append(&id, 3, numbered(1)).await, 3, 0);
    assert_eq!(journal.append(&id, 0, numbered(2)).await.unwrap(), 2);
    expect_conflict(journal.append(&id, 0, numbered(1)).await, 0, 2);
    expect_conflict(journal.append(&id, 1, numbered(3)).await, 1, 2);
    expect_conflict(journal.append(&id, 5, numbered(1)).await, 5, 2);
    assert_eq!(journal.read_stream(&id).await.unwrap().len(), 2);
    assert_eq!(journal.append(&id, 2, numbered(1)).await.unwrap(), 3);

    let err = journal.append(&id, 1, numbered(1)).await.unwrap_err();
    assert!(err.is_conflict());
    let message = err.to_string();
    assert!(
        message.contains("c/s") && message.contains("reload"),
        "{message}"
    );
    verify_stream(&journal.read_stream(&id).await.unwrap()).unwrap();
}

pub async fn a_batch_is_all_or_nothing(harness: &dyn Harness) {
    let fixture = harness.fixture().await;
    let journal = fixture.journal.as_ref();
    let id = stream("c", "batch");
    assert_eq!(journal.append(&id, 0, numbered(1)).await.unwrap(), 1);
    let unchanged = journal.read_stream(&id).await.unwrap();

    // An invalid event anywhere refuses the whole batch.
    let mut batch = numbered(3);
    batch[2].access_key_ids = vec!["A1".into(), "A2".into(), "A3".into()];
    let err = journal.append(&id, 1, batch).await.unwrap_err();
    assert!(matches!(err, JournalError::Rejected(_)), "{err}");
    assert!(err.to_string().contains("event 3"), "{err}");
    assert_eq!(journal.read_stream(&id).await.unwrap(), unchanged);

    // A stale batch writes nothing.
    expect_conflict(journal.append(&id, 0, numbered(4)).await, 0, 1);
    assert_eq!(journal.read_stream(&id).await.unwrap(), unchanged);

    // A storage failure in the middle of a batch writes nothing either.
    if fixture.raw.refuse_writes_at(&id, 3).await {
        let result = journal.append(&id, 1, numbered(4)).await;
        assert!(
            result.is_err(),
            "the refused write went through: {result:?}"
        );
        fixture.raw.accept_writes(&id, 3).await;
        assert_eq!(journal.read_stream(&id).await.unwrap(), unchanged);
    }

    // The largest batch goes through whole.
    assert_eq!(
        journal
            .append(&id, 1, numbered(MAX_EVENTS_PER_APPEND))
            .await
            .unwrap(),
        1 + MAX_EVENTS_PER_APPEND as u64
    );
    let events = journal.read_stream(&id).await.unwrap();
    assert_eq!(events.len(), 1 + MAX_EVENTS_PER_APPEND);
    verify_stream(&events).unwrap();
}

pub async fn racing_writers_never_lose_or_duplicate_an_event(harness: &dyn Harness) {
    const TASKS: usize = 16;
    const ROUNDS: usize = 3;
    const HANDLES: usize = 4;
    let fixture = harness.fixture().await;
    let mut handles = vec![fixture.raw.another_handle().await];
    while handles.len() < HANDLES {
        handles.push(fixture.raw.another_handle().await);
    }
    let id = stream("race", "one-stream");

    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let journal = Arc::clone(&handles[task % HANDLES]);
        let id = id.clone();
        tasks.spawn(async move {
            let mut won = Vec::new();
            let mut conflicts = 0u32;
            for round in 0..ROUNDS {
                let size = 1 + (task + round) % 2;
                loop {
                    let version = journal
                        .read_stream(&id)
                        .await
                        .unwrap()
                        .last()
                        .map_or(0, |last| last.sequence);
                    // Let the other writers run between the read and the append.
                    tokio::task::yield_now().await;
                    let batch = (0..size)
                        .map(|part| {
                            event(
                                "Raced",
                                json!({ "task": task, "round": round, "part": part }),
                            )
                        })
                        .collect();
                    match journal.append(&id, version, batch).await {
                        Ok(new_version) => {
                            assert_eq!(new_version, version + size as u64);
                            won.push((version + 1)..=new_version);
                            break;
                        }
                        Err(JournalError::Conflict { actual, .. }) => {
                            assert_ne!(actual, version, "a conflict at the expected version");
                            conflicts += 1;
                        }
                        Err(other) => panic!("task {task}: {other}"),
                    }
                }
            }
            (won, conflicts)
        });
    }
    let mut claimed: Vec<u64> = Vec::new();
    let mut conflicts = 0;
    while let Some(outcome) = tasks.join_next().await {
        let (won, task_conflicts) = outcome.expect("a racing task panicked");
        conflicts += task_conflicts;
        claimed.extend(won.into_iter().flatten());
    }
    claimed.sort_unstable();
    let events = fixture.journal.read_stream(&id).await.unwrap();
    let total = events.len() as u64;
    // Exactly one writer won each sequence number.
    assert_eq!(claimed, (1..=total).collect::<Vec<_>>());
    // No event was lost or written twice.
    let mut seen = BTreeSet::new();
    for event in &events {
        let key = (
            event.payload["task"].as_u64().unwrap(),
            event.payload["round"].as_u64().unwrap(),
            event.payload["part"].as_u64().unwrap(),
        );
        assert!(seen.insert(key), "event {key:?} stored twice");
    }
    let expected: usize = (0..TASKS)
        .flat_map(|task| (0..ROUNDS).map(move |round| 1 + (task + round) % 2))
        .sum();
    assert_eq!(seen.len(), expected);
    // Each task's batches stayed together and in order.
    for (index, event) in events.iter().enumerate() {
        let part = event.payload["part"].as_u64().unwrap();
        if part > 0 {
            let previous = &events[index - 1].payload;
            assert_eq!(previous["task"], event.payload["task"]);
            assert_eq!(previous["round"], event.payload["round"]);
            assert_eq!(previous["part"].as_u64().unwrap(), part - 1);
        }
    }
    verify_stream(&events).unwrap();
    eprintln!("{TASKS} racing writers, {total} events, {conflicts} conflicts");
}

fn append(stream: &StreamId, head: &StreamHead, events: Vec<NewEvent>) -> Append {
    Append {
        stream: stream.clone(),
        head: head.clone(),
        events,
    }
}

/// A group append writes every stream at its head, as separate `append_at`s would: new
/// streams of a new campaign and streams that already have events, each chained to its
/// own head, and lists the campaign.
pub async fn append_many_writes_each_stream_at_its_head(harness: &dyn Harness) {
    let fixture = harness.fixture().await;
    let journal = fixture.journal.as_ref();
    let (a, b, c) = (stream("g", "a"), stream("g", "b"), stream("g", "c"));
    let heads = journal
        .append_many(vec![
            append(&a, &StreamHead::empty(), numbered(2)),
            append(&b, &StreamHead::empty(), numbered(1)),
        ])
        .await;
    let heads: Vec<StreamHead> = heads.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        heads.iter().map(StreamHead::version).collect::<Vec<_>>(),
        [2, 1]
    );
    assert_eq!(journal.list_campaigns().await.unwrap(), ["g"]);

    // Existing streams at their heads, with a new one, in one call.
    let more = journal
        .append_many(vec![
            append(&b, &heads[1], numbered(3)),
            append(&c, &StreamHead::empty(), numbered(1)),
            append(&a, &heads[0], numbered(1)),
        ])
        .await;
    let more: Vec<StreamHead> = more.into_iter().map(Result::unwrap).collect();
    for (id, head, length) in [(&b, &more[0], 4), (&c, &more[1], 1), (&a, &more[2], 3)] {
        let events = journal.read_stream(id).await.unwrap();
        assert_eq!(events.len(), length, "{id}");
        verify_stream(&events).unwrap();
        assert_eq!(&StreamHead::after(&events), head, "{id}: the head returned");
    }
    let all = journal.read_campaign("g").await.unwrap();
    assert_eq!(all.len(), 8);
    verify_chain(&all).unwrap();

    // A single append through the group call is an ordinary append.
    let one = journal
        .append_many(vec![append(&c, &more[1], numbered(1))])
        .await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].as_ref().unwrap().version(), 2);
}

/// A stale or foreign head fails that append alone, exactly as `append_at` would, and
/// writes nothing to its stream; the call's other streams are written.
pub async fn append_many_conflict_on_one_stream_spares_the_others(harness: &dyn Harness) {
    let fixture = harness.fixture().await;
    let journal = fixture.journal.as_ref();
    let (a, b, c) = (stream("g", "a"), stream("g", "b"), stream("g", "c"));
    let mut heads = Vec::new();
    for id in [&a, &b, &c] {
        heads.push(
            journal
                .append_at(id, &StreamHead::empty(), numbered(1))
                .await
                .unwrap(),
        );
    }
    // Another writer moves `b` on.
    let other = fixture.raw.another_handle().await;
    let theirs = other.append_at(&b, &heads[1], numbered(1)).await.unwrap();

    let results = journal
        .append_many(vec![
            append(&a, &heads[0], numbered(2)),
            append(&b, &heads[1], numbered(1)),
            append(&c, &heads[2], numbered(1)),
        ])
        .await;
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].as_ref().unwrap().version(), 3);
    match &results[1] {
        Err(JournalError::Conflict {
            stream,
            expected,
            actual,
        }) => assert_eq!((stream, *expected, *actual), (&b, 1, 2)),
        other => panic!("expected a conflict on {b}, got {other:?}"),
    }
    assert_eq!(results[2].as_ref().unwrap().version(), 2);
    let b_events = journal.read_stream(&b).await.unwrap();
    assert_eq!(
        StreamHead::after(&b_events),
        theirs,
        "nothing written to {b}"
    );
    for id in [&a, &c] {
        verify_stream(&journal.read_stream(id).await.unwrap()).unwrap();
    }

    // A head taken from another stream is refused for that stream only.
    let a_head = results[0].clone().unwrap();
    let c_head = results[2].clone().unwrap();
    let results = journal
        .append_many(vec![
            append(&a, &c_head, numbered(1)),
            append(&c, &c_head, numbered(1)),
        ])
        .await;
    assert!(
        matches!(
            &results[0],
            Err(JournalError::Rejected(_)) | Err(JournalError::Conflict { .. })
        ),
        "{:?}",
        results[0]
    );
    assert_eq!(results[1].as_ref().unwrap().version(), 3);
    assert_eq!(
        StreamHead::after(&journal.read_stream(&a).await.unwrap()),
        a_head,
        "nothing written to {a}"
    );

    // A storage failure on one stream: each result tells the truth about its stream.
    let a_events = journal.read_stream(&a).await.unwrap();
    if fixture.raw.refuse_writes_at(&a, 4).await {
        let c_head = results[1].clone().unwrap();
        let results = journal
            .append_many(vec![
                append(&a, &a_head, numbered(1)),
                append(&c, &c_head, numbered(2)),
            ])
            .await;
        fixture.raw.accept_writes(&a, 4).await;
        assert!(results[0].is_err(), "the refused write went through");
        assert_eq!(journal.read_stream(&a).await.unwrap(), a_events);
        let c_events = journal.read_stream(&c).await.unwrap();
        match &results[1] {
            Ok(head) => assert_eq!(&StreamHead::after(&c_events), head),
            Err(_) => assert_eq!(StreamHead::after(&c_events), c_head),
        }
        verify_stream(&c_events).unwrap();
    }
}

/// `append_all` writes every append, or nothing at all when one of them fails (a
/// conflict, a foreign head, a broken rule), and says which failed.
pub async fn append_all_writes_every_stream_or_none(harness: &dyn Harness) {
    let fixture = harness.fixture().await;
    let journal = fixture.journal.as_ref();
    let (a, b, c) = (stream("all", "a"), stream("all", "b"), stream("all", "c"));
    let first = journal
        .append_at(&a, &StreamHead::empty(), numbered(1))
        .await
        .unwrap();
    // Every stream written, a new one among them, each head as `append_at` gives it.
    let heads = journal
        .append_all(vec![
            append(&a, &first, numbered(2)),
            append(&b, &StreamHead::empty(), numbered(1)),
        ])
        .await
        .unwrap();
    assert_eq!(
        heads.iter().map(StreamHead::version).collect::<Vec<_>>(),
        [3, 1]
    );
    for (id, head) in [(&a, &heads[0]), (&b, &heads[1])] {
        let events = journal.read_stream(id).await.unwrap();
        verify_stream(&events).unwrap();
        assert_eq!(&StreamHead::after(&events), head);
    }

    // Another writer moves `b` on: an append at its old head fails the whole call, and
    // nothing of it is written, neither to `a` nor to the new stream `c`.
    let other = fixture.raw.another_handle().await;
    let theirs = other.append_at(&b, &heads[1], numbered(1)).await.unwrap();
    let before = journal.read_campaign("all").await.unwrap();
    let failed = journal
        .append_all(vec![
            append(&a, &heads[0], numbered(1)),
            append(&c, &StreamHead::empty(), numbered(2)),
            append(&b, &heads[1], numbered(1)),
        ])
        .await
        .unwrap_err();
    match &failed {
        JournalError::Conflict {
            stream,
            expected,
            actual,
        } => assert_eq!((stream, *expected, *actual), (&b, 1, 2)),
        other => panic!("expected a conflict on {b}, got {other:?}"),
    }
    assert_eq!(journal.read_campaign("all").await.unwrap(), before);

    // The same appends at the right heads go through together.
    let heads = journal
        .append_all(vec![
            append(&a, &heads[0], numbered(1)),
            append(&c, &StreamHead::empty(), numbered(2)),
            append(&b, &theirs, numbered(1)),
        ])
        .await
        .unwrap();
    assert_eq!(
        heads.iter().map(StreamHead::version).collect::<Vec<_>>(),
        [4, 2, 3]
    );
    assert_eq!(
        journal.read_campaign("all").await.unwrap().len(),
        before.len() + 4
    );

    // A call that breaks a rule (one stream twice) is refused, and writes nothing.
    let before = journal.read_campaign("all").await.unwrap();
    let refused = journal
        .append_all(vec![
            append(&a, &heads[0], numbered(1)),
            append(&a, &heads[0], numbered(1)),
        ])
        .await
        .unwrap_err();
    assert!(matches!(refused, JournalError::Rejected(_)), "{refused}");
    assert_eq!(journal.read_campaign("all").await.unwrap(), before);
}

fn expect_fenced<T: std::fmt::Debug>(
    result: Result<T, JournalError>,
    fence_stream: &StreamId,
    version: u64,
) {
    match result {
        Err(err @ JournalError::Fenced { .. }) => {
            let JournalError::Fenced { stream, expected } = &err else {
                unreachable!()
            };
            assert_eq!((stream, *expected), (fence_stream, version));
            assert!(err.is_fenced() && !err.is_conflict() && !err.is_retryable());
            let message = err.to_string();
            assert!(message.contains(&fence_stream.to_string()), "{message}");
            assert!(!message.contains("\"n\""), "no payload: {message}");
        }
        other => panic!("expected the fence on {fence_stream} at {version} to fail, got {other:?}"),
    }
}

/// A fenced append is written while the fence's stream is still at the fence's version,
/// and has its own stream's outcome then; once another writer appended to the fence's
/// stream it fails with `Fenced` (whatever its own stream's state) and writes nothing.
pub async fn a_fenced_append_is_written_only_while_its_fence_holds(harness: &dyn Harness) {
    let fixture = harness.fixture().await;
    let journal = fixture.journal.as_ref();
    let other = fixture.raw.another_handle().await;
    let (claim, a) = (stream("f", "account/1"), stream("f", "user/a"));
    let claim_head = journal
        .append_at(&claim, &StreamHead::empty(), numbered(1))
        .await
        .unwrap();
    let fence = Fence::at(&claim, &claim_head);
    assert_eq!(fence.version, 1);

    // While the fence holds: one event, a batch, and a stale head of the stream's own
    // (an ordinary conflict).
    let a1 = journal
        .append_at_fenced(&a, &StreamHead::empty(), numbered(1), Some(&fence))
        .await
        .unwrap();
    let a2 = journal
        .append_at_fenced(&a, &a1, numbered(3), Some(&fence))
        .await
        .unwrap();
    assert_eq!(a2.version(), 4);
    match journal
        .append_at_fenced(&a, &a1, numbered(1), Some(&fence))
        .await
    {
        Err(JournalError::Conflict {
            stream,
            expected: 1,
            actual: 4,
        }) if stream == a => {}
        other => panic!("expected a conflict of {a}, got {other:?}"),
    }
    let events = journal.read_stream(&a).await.unwrap();
    assert_eq!(StreamHead::after(&events), a2);
    verify_stream(&events).unwrap();

    // Another writer moves the fence's stream on: nothing fenced on it is written, at
    // the right head or a stale one.
    let theirs = other
        .append_at(&claim, &claim_head, numbered(1))
        .await
        .unwrap();
    let before = journal.read_campaign("f").await.unwrap();
    for (head, events) in [(&a2, numbered(1)), (&a2, numbered(2)), (&a1, numbered(1))] {
        expect_fenced(
            journal
                .append_at_fenced(&a, head, events, Some(&fence))
                .await,
            &claim,
            1,
        );
    }
    let new_stream = stream("f", "user/b");
    expect_fenced(
        journal
            .append_at_fenced(&new_stream, &StreamHead::empty(), numbered(1), Some(&fence))
            .await,
        &claim,
        1,
    );
    assert_eq!(journal.read_campaign("f").await.unwrap(), before);

    // Fenced at the fence stream's new head, the same append goes through; unfenced, it
    // always did.
    let a3 = journal
        .append_at_fenced(&a, &a2, numbered(1), Some(&Fence::at(&claim, &theirs)))
        .await
        .unwrap();
    let a4 = journal
        .append_at_fenced(&a, &a3, numbered(1), None)
        .await
        .unwrap();
    assert_eq!(a4.version(), 6);

    // A fence at version 0 holds while its stream is empty; the largest append, the
    // first of a new campaign, fits with it.
    let unclaimed = Fence {
        stream: stream("g", "account/2"),
        version: 0,
    };
    let head = journal
        .append_at_fenced(
            &stream("g", "user/c"),
            &StreamHead::empty(),
            numbered(MAX_EVENTS_PER_APPEND),
            Some(&unclaimed),
        )
        .await
        .unwrap();
    assert_eq!(head.version(), MAX_EVENTS_PER_APPEND as u64);
    assert_eq!(journal.list_campaigns().await.unwrap(), ["f", "g"]);
    other
        .append_at(&unclaimed.stream, &StreamHead::empty(), numbered(1))
        .await
        .unwrap();
    expect_fenced(
        journal
            .append_at_fenced(&stream("g", "user/c"), &head, numbered(1), Some(&unclaimed))
            .await,
        &unclaimed.stream,
        0,
    );

    // A fence on another campaign's stream is refused, and writes nothing.
    let before = journal.read_campaign("f").await.unwrap();
    let foreign = Fence {
        stream: stream("g", "account/2"),
        version: 1,
    };
    let refused = journal
        .append_at_fenced(&a, &a4, numbered(1), Some(&foreign))
        .await
        .unwrap_err();
    assert!(matches!(refused, JournalError::Rejected(_)), "{refused}");
    assert_eq!(journal.read_campaign("f").await.unwrap(), before);
}

/// A fenced group append: while the fence holds, each append has its own outcome (a
/// conflict spares the others); once the fence moved, every append fails with `Fenced`
/// and nothing is written to any stream.
pub async fn append_many_fenced_fails_every_append_once_its_fence_moved(harness: &dyn Harness) {
    let fixture = harness.fixture().await;
    let journal = fixture.journal.as_ref();
    let other = fixture.raw.another_handle().await;
    let claim = stream("f", "account/1");
    let (a, b, c, d) = (
        stream("f", "a"),
        stream("f", "b"),
        stream("f", "c"),
        stream("f", "d"),
    );
    let claim_head = journal
        .append_at(&claim, &StreamHead::empty(), numbered(1))
        .await
        .unwrap();
    let fence = Fence::at(&claim, &claim_head);
    let mut heads = Vec::new();
    for id in [&a, &b, &c] {
        heads.push(
            journal
                .append_at(id, &StreamHead::empty(), numbered(1))
                .await
                .unwrap(),
        );
    }
    let b_theirs = other.append_at(&b, &heads[1], numbered(1)).await.unwrap();

    let results = journal
        .append_many_fenced(
            vec![
                append(&a, &heads[0], numbered(2)),
                append(&b, &heads[1], numbered(1)),
                append(&c, &heads[2], numbered(1)),
            ],
            Some(&fence),
        )
        .await;
    assert_eq!(results[0].as_ref().unwrap().version(), 3);
    assert!(
        results[1].as_ref().unwrap_err().is_conflict(),
        "{results:?}"
    );
    assert_eq!(results[2].as_ref().unwrap().version(), 2);
    let (a_head, c_head) = (results[0].clone().unwrap(), results[2].clone().unwrap());

    // Another writer moves the fence's stream: every append fails on the fence, those
    // at the right head, a new stream's, and one at a stale head alike.
    other
        .append_at(&claim, &claim_head, numbered(1))
        .await
        .unwrap();
    let before = journal.read_campaign("f").await.unwrap();
    let results = journal
        .append_many_fenced(
            vec![
                append(&a, &a_head, numbered(1)),
                append(&b, &b_theirs, numbered(2)),
                append(&d, &StreamHead::empty(), numbered(1)),
                append(&c, &heads[2], numbered(1)),
            ],
            Some(&fence),
        )
        .await;
    assert_eq!(results.len(), 4);
    for result in results {
        expect_fenced(result, &claim, 1);
    }
    assert_eq!(journal.read_campaign("f").await.unwrap(), before);
    // The rules of the call come first: a refused call is refused, not fenced.
    let results = journal
        .append_many_fenced(
            vec![
                append(&a, &a_head, numbered(1)),
                append(&a, &a_head, numbered(1)),
            ],
            Some(&fence),
        )
        .await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(JournalError::Rejected(_)))),
        "{results:?}"
    );
    assert_eq!(journal.read_campaign("f").await.unwrap(), before);
    // Unfenced, or fenced at the new head, the same appends go through.
    let new_fence = Fence::at(
        &claim,
        &StreamHead::after(&journal.read_stream(&claim).await.unwrap()),
    );
    let results = journal
        .append_many_fenced(
            vec![
                append(&a, &a_head, numbered(1)),
                append(&d, &StreamHead::empty(), numbered(1)),
            ],
            Some(&new_fence),
        )
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let results = journal
        .append_many_fenced(vec![append(&c, &c_head, numbered(1))], None)
        .await;
    assert_eq!(results[0].as_ref().unwrap().version(), 3);
    verify_chain(&journal.read_campaign("f").await.unwrap()).unwrap();
}

/// `append_all_fenced` writes every append while the fence holds, and nothing once it
/// moved: the error is the fence's, even when an append's own head is stale too.
pub async fn append_all_fenced_writes_nothing_once_its_fence_moved(harness: &dyn Harness) {
    let fixture = harness.fixture().await;
    let journal = fixture.journal.as_ref();
    let other = fixture.raw.another_handle().await;
    let (claim, a, b) = (stream("f", "account/1"), stream("f", "a"), stream("f", "b"));
    let claim_head = journal
        .append_at(&claim, &StreamHead::empty(), numbered(1))
        .await
        .unwrap();
    let fence = Fence::at(&claim, &claim_head);
    let heads = journal
        .append_all_fenced(
            vec![
                append(&a, &StreamHead::empty(), numbered(2)),
                append(&b, &StreamHead::empty(), numbered(1)),
            ],
            Some(&fence),
        )
        .await
        .unwrap();
    assert_eq!(
        heads.iter().map(StreamHead::version).collect::<Vec<_>>(),
        [2, 1]
    );
    // While the fence holds, a stale head fails the call with its conflict.
    let failed = journal
        .append_all_fenced(
            vec![
                append(&a, &heads[0], numbered(1)),
                append(&b, &StreamHead::empty(), numbered(1)),
            ],
            Some(&fence),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&failed, JournalError::Conflict { stream, .. } if stream == &b),
        "{failed}"
    );

    other
        .append_at(&claim, &claim_head, numbered(1))
        .await
        .unwrap();
    let before = journal.read_campaign("f").await.unwrap();
    for appends in [
        vec![
            append(&a, &heads[0], numbered(1)),
            append(&b, &heads[1], numbered(1)),
        ],
        vec![
            append(&a, &heads[0], numbered(1)),
            append(&b, &StreamHead::empty(), numbered(1)),
        ],
        vec![append(&stream("f", "c"), &StreamHead::empty(), numbered(3))],
    ] {
        expect_fenced(
            journal.append_all_fenced(appends, Some(&fence)).await,
            &claim,
            1,
        );
    }
    assert_eq!(journal.read_campaign("f").await.unwrap(), before);
}

/// A write may append to the fence's own stream: at the fence's version, that append's
/// condition is the fence (no second check of the same place). It is written while the
/// fence holds, alone or with others; once another writer moved the stream, it fails
/// with `Fenced` like the rest of its write, not with a conflict of its own. A batch of
/// the fence's stream from an older head is a conflict of its own while the fence holds.
pub async fn an_append_to_the_fence_stream_at_the_fence_version_is_its_own_fence(
    harness: &dyn Harness,
) {
    let fixture = harness.fixture().await;
    let journal = fixture.journal.as_ref();
    let other = fixture.raw.another_handle().await;
    let (claim, a) = (stream("f", "account/1"), stream("f", "a"));
    // A claim taken fenced on its own empty stream.
    let empty_fence = Fence::at(&claim, &StreamHead::empty());
    let head = journal
        .append_at_fenced(
            &claim,
            &StreamHead::empty(),
            numbered(1),
            Some(&empty_fence),
        )
        .await
        .unwrap();
    // Renewed alone: one event, then a batch.
    let head = journal
        .append_at_fenced(&claim, &head, numbered(1), Some(&Fence::at(&claim, &head)))
        .await
        .unwrap();
    let head = journal
        .append_at_fenced(&claim, &head, numbered(2), Some(&Fence::at(&claim, &head)))
        .await
        .unwrap();
    assert_eq!(head.version(), 4);
    // With another stream's append, in a group append and all or none.
    let results = journal
        .append_many_fenced(
            vec![
                append(&a, &StreamHead::empty(), numbered(1)),
                append(&claim, &head, numbered(1)),
            ],
            Some(&Fence::at(&claim, &head)),
        )
        .await;
    let results: Vec<StreamHead> = results.into_iter().map(Result::unwrap).collect();
    let (a_head, head) = (results[0].clone(), results[1].clone());
    let heads = journal
        .append_all_fenced(
            vec![
                append(&claim, &head, numbered(1)),
                append(&a, &a_head, numbered(2)),
            ],
            Some(&Fence::at(&claim, &head)),
        )
        .await
        .unwrap();
    let (head, a_head) = (heads[0].clone(), heads[1].clone());
    assert_eq!((head.version(), a_head.version()), (6, 3));

    // Another writer takes the stream over: an append to it at the fence's version, the
    // old head, is fenced off like its companions.
    let stale = Fence::at(&claim, &head);
    let theirs = other.append_at(&claim, &head, numbered(1)).await.unwrap();
    let before = journal.read_campaign("f").await.unwrap();
    expect_fenced(
        journal
            .append_at_fenced(&claim, &head, numbered(1), Some(&stale))
            .await,
        &claim,
        6,
    );
    expect_fenced(
        journal
            .append_at_fenced(&claim, &head, numbered(3), Some(&stale))
            .await,
        &claim,
        6,
    );
    let results = journal
        .append_many_fenced(
            vec![
                append(&a, &a_head, numbered(1)),
                append(&claim, &head, numbered(1)),
            ],
            Some(&stale),
        )
        .await;
    for result in results {
        expect_fenced(result, &claim, 6);
    }
    expect_fenced(
        journal
            .append_all_fenced(
                vec![
                    append(&claim, &head, numbered(1)),
                    append(&a, &a_head, numbered(1)),
                ],
                Some(&stale),
            )
            .await,
        &claim,
        6,
    );
    assert_eq!(journal.read_campaign("f").await.unwrap(), before);

    // Fenced at the stream's head, a batch of it from the older head covers the fence's
    // place among its own: the fence holds, and the batch is a conflict of its own.
    let fence = Fence::at(&claim, &theirs);
    match journal
        .append_at_fenced(&claim, &head, numbered(3), Some(&fence))
        .await
    {
        Err(JournalError::Conflict {
            stream,
            expected: 6,
            actual: 7,
        }) if stream == claim => {}
        other => panic!("expected a conflict of {claim}, got {other:?}"),
    }
    assert_eq!(journal.read_campaign("f").await.unwrap(), before);
    verify_chain(&before).unwrap();
}

/// A fenced group commit: every write carries the group's fence, and the group's own
/// append to the fence's stream (a renewal of a claim) moves the fence with it, so the
/// group keeps writing, whichever of a renewal and another append is written first.
/// Once another writer moved the fence's stream, every append fails with `Fenced` and
/// nothing is written.
pub async fn a_group_commit_follows_its_fence_moved_by_its_own_renewal(harness: &dyn Harness) {
    let fixture = harness.fixture().await;
    let journal = fixture.journal.clone();
    let other = fixture.raw.another_handle().await;
    let (claim, a, b) = (stream("f", "account/1"), stream("f", "a"), stream("f", "b"));
    let group = GroupCommit::new(journal.clone(), Duration::ZERO);
    let claim_head = journal
        .append_at(&claim, &StreamHead::empty(), numbered(1))
        .await
        .unwrap();
    group.set_fence(Some(Fence::at(&claim, &claim_head)));

    let a_head = group
        .append_at(&a, &StreamHead::empty(), numbered(1))
        .await
        .unwrap();
    let renewed = group
        .append_at(&claim, &claim_head, numbered(1))
        .await
        .unwrap();
    assert_eq!(group.fence(), Some(Fence::at(&claim, &renewed)));
    let a_head = group.append_at(&a, &a_head, numbered(1)).await.unwrap();

    // A renewal and another append at once: one write or two, in either order.
    let no_events = StreamHead::empty();
    let (renewed, b_head) = tokio::join!(
        group.append_at(&claim, &renewed, numbered(1)),
        group.append_at(&b, &no_events, numbered(1)),
    );
    let (renewed, b_head) = (renewed.unwrap(), b_head.unwrap());
    assert_eq!(renewed.version(), 3);
    assert_eq!(group.fence(), Some(Fence::at(&claim, &renewed)));

    // Another writer takes the stream over: the group's next write fails on its fence,
    // every append of it, and so do the later ones.
    other
        .append_at(&claim, &renewed, numbered(1))
        .await
        .unwrap();
    let before = journal.read_campaign("f").await.unwrap();
    let deferred = group.defer(&b, &b_head, numbered(1));
    expect_fenced(group.append_at(&a, &a_head, numbered(1)).await, &claim, 3);
    expect_fenced(deferred.outcome().unwrap(), &claim, 3);
    expect_fenced(group.append_at(&b, &b_head, numbered(1)).await, &claim, 3);
    assert_eq!(journal.read_campaign("f").await.unwrap(), before);
    verify_chain(&before).unwrap();
}

/// A call that breaks a rule of the group append is refused whole: every append gets
/// the same rejection and nothing is written.
pub async fn append_many_refuses_a_call_that_breaks_its_rules(harness: &dyn Harness) {
    let fixture = harness.fixture().await;
    let journal = fixture.journal.as_ref();
    let (a, b) = (stream("g", "a"), stream("g", "b"));
    let empty = StreamHead::empty();
    let mut invalid = numbered(2);
    invalid[1].access_key_ids = vec!["A1".into(), "A2".into(), "A3".into()];
    let cases: Vec<(Vec<Append>, &str)> = vec![
        (
            vec![
                append(&a, &empty, numbered(1)),
                append(&stream("h", "a"), &empty, numbered(1)),
            ],
            "one campaign",
        ),
        (
            vec![
                append(&a, &empty, numbered(1)),
                append(&b, &empty, numbered(1)),
                append(&a, &empty, numbered(1)),
            ],
            "twice",
        ),
        (
            vec![
                append(&a, &empty, numbered(MAX_EVENTS_PER_APPEND)),
                append(&b, &empty, numbered(1)),
            ],
            "more than",
        ),
        (
            vec![append(&a, &empty, numbered(1)), append(&b, &empty, invalid)],
            "event 2",
        ),
        (
            vec![
                append(&a, &empty, numbered(1)),
                append(&b, &empty, Vec::new()),
            ],
            "at least one event",
        ),
    ];
    for (appends, reason) in cases {
        let count = appends.len();
        let results = journal.append_many(appends).await;
        assert_eq!(results.len(), count);
        for result in results {
            match result {
                Err(JournalError::Rejected(message)) => {
                    assert!(message.contains(reason), "{reason}: {message}")
                }
                other => panic!("{reason}: expected a rejection, got {other:?}"),
            }
        }
    }
    assert!(journal.read_campaign("g").await.unwrap().is_empty());
    assert!(journal.read_campaign("h").await.unwrap().is_empty());
    assert!(journal.append_many(Vec::new()).await.is_empty());
}

/// Group appends from several handles racing over the same streams: every event a
/// result reports written is stored once, at the sequences it reported, and nothing
/// else is stored.
pub async fn racing_group_appends_never_lose_or_duplicate_an_event(harness: &dyn Harness) {
    const TASKS: usize = 6;
    const ROUNDS: usize = 4;
    const STREAMS: usize = 3;
    let fixture = harness.fixture().await;
    let ids: Vec<StreamId> = (0..STREAMS)
        .map(|n| stream("race", &format!("s{n}")))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let journal = fixture.raw.another_handle().await;
        let ids = ids.clone();
        tasks.spawn(async move {
            let mut won: Vec<(StreamId, u64, u64)> = Vec::new();
            let mut heads: Vec<StreamHead> = vec![StreamHead::empty(); STREAMS];
            for round in 0..ROUNDS {
                let appends = ids
                    .iter()
                    .zip(&heads)
                    .map(|(id, head)| {
                        let payload = json!({ "task": task, "round": round });
                        append(id, head, vec![event("Raced", payload)])
                    })
                    .collect();
                tokio::task::yield_now().await;
                let results = journal.append_many(appends).await;
                for (n, result) in results.into_iter().enumerate() {
                    match result {
                        Ok(head) => {
                            assert_eq!(head.version(), heads[n].version() + 1);
                            won.push((ids[n].clone(), head.version(), round as u64));
                            heads[n] = head;
                        }
                        Err(JournalError::Conflict { .. }) => {
                            heads[n] =
                                StreamHead::after(&journal.read_stream(&ids[n]).await.unwrap());
                        }
                        Err(other) => panic!("task {task}: {other}"),
                    }
                }
            }
            (task as u64, won)
        });
    }
    let mut reported: BTreeMap<(StreamId, u64), (u64, u64)> = BTreeMap::new();
    while let Some(outcome) = tasks.join_next().await {
        let (task, won) = outcome.expect("a racing task panicked");
        for (id, sequence, round) in won {
            let previous = reported.insert((id.clone(), sequence), (task, round));
            assert!(
                previous.is_none(),
                "{id} #{sequence} reported written twice"
            );
        }
    }
    let events = fixture.journal.read_campaign("race").await.unwrap();
    verify_chain(&events).unwrap();
    let stored: BTreeMap<(StreamId, u64), (u64, u64)> = events
        .iter()
        .map(|e| {
            let who = (
                e.payload["task"].as_u64().unwrap(),
                e.payload["round"].as_u64().unwrap(),
            );
            ((e.stream.clone(), e.sequence), who)
        })
        .collect();
    assert_eq!(
        stored, reported,
        "what is stored is what the results reported"
    );
    assert!(!stored.is_empty());
}

pub async fn read_campaign_reads_every_stream_in_order_across_pages(harness: &dyn Harness) {
    let fixture = harness.fixture().await;
    let journal = fixture.journal.as_ref();
    // `!` sorts before `#`, the separator of DynamoDB's sort key: "a!" must still come
    // after "a".
    let names = ["b", "a!", "a", "a b", "c"];
    for (index, name) in names.iter().enumerate() {
        fill(journal, &stream("audit", name), 5 + index * 2, 4).await;
    }
    fill(journal, &stream("audit2", "a"), 3, 3).await;
    fill(journal, &stream("other", "a"), 2, 2).await;

    let campaign = journal.read_campaign("audit").await.unwrap();
    let mut sorted_names = names.to_vec();
    sorted_names.sort_unstable();
    let mut expected = Vec::new();
    for name in sorted_names {
        expected.extend(journal.read_stream(&stream("audit", name)).await.unwrap());
    }
    assert_eq!(campaign.len(), 5 + 7 + 9 + 11 + 13);
    assert_eq!(identities(&campaign), identities(&expected));
    assert_eq!(campaign, expected);
    verify_chain(&campaign).unwrap();
    assert!(campaign.iter().all(|e| e.campaign == "audit"));

    assert_eq!(journal.read_campaign("audit2").await.unwrap().len(), 3);
    assert!(
        journal
            .read_campaign("nothing-here")
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn list_campaigns_lists_campaigns_with_events(harness: &dyn Harness) {
    let fixture = harness.fixture().await;
    let journal = fixture.journal.as_ref();
    assert!(journal.list_campaigns().await.unwrap().is_empty());
    // A failed first append does not list its campaign.
    let mut bad = numbered(1);
    bad[0].event_type = String::new();
    assert!(journal.append(&stream("ghost", "s"), 0, bad).await.is_err());

    let campaigns = ["c5", "c2", "c1", "c4", "c3", "c6"];
    for campaign in campaigns {
        fill(journal, &stream(campaign, "s1"), 1, 1).await;
        fill(journal, &stream(campaign, "s2"), 2, 2).await;
    }
    let mut expected: Vec<String> = campaigns.iter().map(|c| c.to_string()).collect();
    expected.sort();
    assert_eq!(journal.list_campaigns().await.unwrap(), expected);
}

pub async fn events_for_access_key_finds_both_key_slots_in_time_order(harness: &dyn Harness) {
    let fixture = harness.fixture().await;
    let journal = fixture.journal.as_ref();
    let with_keys = |keys: &[&str], n: u32| {
        let mut event = event("KeyEvent", json!({ "n": n }));
        event.access_key_ids = keys.iter().map(|k| k.to_string()).collect();
        event.account_id = Some("111111111111".into());
        event
    };
    let s1 = stream("k", "alice");
    let s2 = stream("k2", "bob");
    journal
        .append(&s1, 0, vec![with_keys(&["AKIAONE"], 1)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    journal
        .append(&s2, 0, vec![with_keys(&["AKIATWO"], 2)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    journal
        .append(&s1, 1, vec![with_keys(&["AKIATWO", "AKIAONE"], 3)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    journal
        .append(
            &s2,
            1,
            vec![with_keys(&[], 4), with_keys(&["AKIAZERO", "AKIATWO"], 5)],
        )
        .await
        .unwrap();

    let numbers = |events: &[Envelope]| -> Vec<u64> {
        events
            .iter()
            .map(|e| e.payload["n"].as_u64().unwrap())
            .collect()
    };
    let one = journal.events_for_access_key("AKIAONE").await.unwrap();
    assert_eq!(numbers(&one), [1, 3]);
    let two = journal.events_for_access_key("AKIATWO").await.unwrap();
    assert_eq!(numbers(&two), [2, 3, 5]);
    assert!(two.windows(2).all(|w| w[0].recorded_at <= w[1].recorded_at));
    assert_eq!(
        numbers(&journal.events_for_access_key("AKIAZERO").await.unwrap()),
        [5]
    );
    assert!(
        journal
            .events_for_access_key("AKIANONE")
            .await
            .unwrap()
            .is_empty()
    );
    // What the index returns is the stored envelope itself.
    let stored = journal.read_stream(&s1).await.unwrap();
    assert_eq!(one, stored);
}

pub async fn events_for_account_honours_the_half_open_time_range(harness: &dyn Harness) {
    let fixture = harness.fixture().await;
    let journal = fixture.journal.as_ref();
    let about = |account: &str, n: u32| {
        let mut event = event("AccountEvent", json!({ "n": n }));
        event.account_id = Some(account.into());
        event
    };
    let pause = || tokio::time::sleep(Duration::from_millis(10));
    let start = Utc::now();
    pause().await;
    // Early: two events in one batch (same time), and one of another account.
    journal
        .append(
            &stream("acc", "x"),
            0,
            vec![about("222222222222", 1), about("222222222222", 2)],
        )
        .await
        .unwrap();
    journal
        .append(&stream("acc", "y"), 0, vec![about("333333333333", 100)])
        .await
        .unwrap();
    pause().await;
    let middle_from = Utc::now();
    pause().await;
    journal
        .append(&stream("acc2", "x"), 0, vec![about("222222222222", 3)])
        .await
        .unwrap();
    journal
        .append(&stream("acc", "y"), 1, vec![about("333333333333", 101)])
        .await
        .unwrap();
    pause().await;
    let middle_to = Utc::now();
    pause().await;
    for n in 4..10 {
        journal
            .append(
                &stream("acc", "x"),
                u64::from(n) - 2,
                vec![about("222222222222", n)],
            )
            .await
            .unwrap();
    }
    pause().await;
    let end = Utc::now();

    let numbers = |events: Vec<Envelope>| -> Vec<u64> {
        events
            .iter()
            .map(|e| e.payload["n"].as_u64().unwrap())
            .collect()
    };
    let account = "222222222222";
    let all = journal
        .events_for_account(account, start, end)
        .await
        .unwrap();
    assert!(
        all.windows(2)
            .all(|w| w[0].time_order_key() <= w[1].time_order_key())
    );
    assert_eq!(numbers(all.clone()), (1..10).collect::<Vec<_>>());
    assert_eq!(
        numbers(
            journal
                .events_for_account(account, middle_from, middle_to)
                .await
                .unwrap()
        ),
        [3]
    );
    assert_eq!(
        numbers(
            journal
                .events_for_account(account, DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC)
                .await
                .unwrap()
        ),
        (1..10).collect::<Vec<_>>()
    );
    assert!(
        journal
            .events_for_account(account, middle_to, middle_from)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        journal
            .events_for_account("444444444444", start, end)
            .await
            .unwrap()
            .is_empty()
    );

    // The range is half-open at microsecond precision: [t, t + 1 µs) holds exactly
    // the events recorded at t, and [start, t) none of them.
    let third = &all[2];
    let at = third.recorded_at;
    let exact = journal
        .events_for_account(account, at, at + chrono::Duration::microseconds(1))
        .await
        .unwrap();
    assert_eq!(exact, vec![third.clone()]);
    let before = journal
        .events_for_account(account, start, at)
        .await
        .unwrap();
    assert_eq!(numbers(before), [1, 2]);
    // A bound with nanoseconds inside the microsecond after t excludes t.
    let after = journal
        .events_for_account(account, at + chrono::Duration::nanoseconds(1), end)
        .await
        .unwrap();
    assert_eq!(numbers(after), (4..10).collect::<Vec<_>>());
}

pub async fn a_modified_payload_breaks_the_chain_at_that_event(harness: &dyn Harness) {
    let fixture = harness.fixture().await;
    let journal = fixture.journal.as_ref();
    let id = stream("tamper", "victim");
    fill(journal, &id, 5, 2).await;
    fill(journal, &stream("tamper", "bystander"), 2, 2).await;
    verify_chain(&journal.read_campaign("tamper").await.unwrap()).unwrap();

    fixture
        .raw
        .set_payload(&id, 3, r#"{"n":0,"approved":true}"#)
        .await;
    let events = journal.read_stream(&id).await.unwrap();
    assert_eq!(events[2].payload, json!({"n": 0, "approved": true}));
    let err = verify_stream(&events).unwrap_err();
    assert_eq!((err.stream.clone(), err.sequence), (id.clone(), 3));
    assert!(
        matches!(err.reason, ChainBreak::HashMismatch { .. }),
        "{err}"
    );
    assert!(!err.to_string().contains("approved"), "{err}");

    let err = verify_chain(&journal.read_campaign("tamper").await.unwrap()).unwrap_err();
    assert_eq!((err.stream, err.sequence), (id, 3));
}

pub async fn a_deleted_middle_event_breaks_the_chain(harness: &dyn Harness) {
    let fixture = harness.fixture().await;
    let journal = fixture.journal.as_ref();
    let id = stream("tamper", "victim");
    fill(journal, &id, 5, 5).await;
    fixture.raw.delete(&id, 3).await;
    let events = journal.read_stream(&id).await.unwrap();
    assert_eq!(events.len(), 4);
    let err = verify_stream(&events).unwrap_err();
    assert_eq!(err.sequence, 4);
    assert_eq!(err.reason, ChainBreak::SequenceGap { expected: 3 });
}

/// An event type as the planner's would be: version 2.1, with an upcast from 1.x.
#[derive(Debug, PartialEq)]
enum TestEvent {
    KeyCreated { key: String, reason: String },
    KeyDeleted { key: String },
}

impl EventSchema for TestEvent {
    const CURRENT: SchemaVersion = SchemaVersion::new(2, 1);

    fn known_types() -> &'static [&'static str] {
        &["KeyCreated", "KeyDeleted"]
    }

    fn decode(event_type: &str, version: SchemaVersion, payload: &Value) -> Result<Self, String> {
        let field = |name: &str| {
            payload
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("field `{name}` is missing or not a string"))
        };
        match event_type {
            // Version 1 had no reason.
            "KeyCreated" if version.major < 2 => Ok(TestEvent::KeyCreated {
                key: field("key")?,
                reason: "age".into(),
            }),
            "KeyCreated" => Ok(TestEvent::KeyCreated {
                key: field("key")?,
                reason: field("reason")?,
            }),
            "KeyDeleted" => Ok(TestEvent::KeyDeleted { key: field("key")? }),
            other => Err(format!("unknown type {other}")),
        }
    }

    fn encode(&self) -> (String, Value) {
        match self {
            TestEvent::KeyCreated { key, reason } => {
                ("KeyCreated".into(), json!({ "key": key, "reason": reason }))
            }
            TestEvent::KeyDeleted { key } => ("KeyDeleted".into(), json!({ "key": key })),
        }
    }
}

pub async fn decode_refuses_what_this_build_does_not_understand(harness: &dyn Harness) {
    let fixture = harness.fixture().await;
    let journal = fixture.journal.as_ref();
    let id = stream("schema", "s");
    let current = TestEvent::KeyCreated {
        key: "AKIA1".into(),
        reason: "unused".into(),
    };
    let versioned = |event_type: &str, major, minor, payload: Value| NewEvent {
        schema_version: SchemaVersion::new(major, minor),
        ..event(event_type, payload)
    };
    let batch = vec![
        NewEvent::encode(&current, actor()).with_access_keys(["AKIA1"]),
        versioned("KeyCreated", 1, 3, json!({ "key": "AKIA2" })),
        versioned("KeyDeleted", 2, 0, json!({ "key": "AKIA3" })),
        versioned("KeyDeleted", 2, 9, json!({ "key": "AKIA4", "later": 1 })),
        versioned("KeyRenamed", 2, 0, json!({ "key": "AKIA5" })),
        versioned("KeyDeleted", 3, 0, json!({ "key": "AKIA6" })),
        versioned("KeyDeleted", 2, 1, json!({ "key": ["secret-looking"] })),
    ];
    journal.append(&id, 0, batch).await.unwrap();
    let events = journal.read_stream(&id).await.unwrap();
    assert_eq!(events[0].schema_version, TestEvent::CURRENT);

    assert_eq!(decode::<TestEvent>(&events[0]).unwrap(), current);
    // An older major is upcast, an older minor read as is.
    assert_eq!(
        decode::<TestEvent>(&events[1]).unwrap(),
        TestEvent::KeyCreated {
            key: "AKIA2".into(),
            reason: "age".into()
        }
    );
    assert_eq!(
        decode::<TestEvent>(&events[2]).unwrap(),
        TestEvent::KeyDeleted {
            key: "AKIA3".into()
        }
    );
    // A newer minor of the same major only adds fields: it is readable.
    assert_eq!(
        decode::<TestEvent>(&events[3]).unwrap(),
        TestEvent::KeyDeleted {
            key: "AKIA4".into()
        }
    );
    match decode::<TestEvent>(&events[4]) {
        Err(JournalError::UnknownEventType {
            stream,
            sequence,
            event_type,
        }) => assert_eq!(
            (stream, sequence, event_type.as_str()),
            (id.clone(), 5, "KeyRenamed")
        ),
        other => panic!("expected UnknownEventType, got {other:?}"),
    }
    match decode::<TestEvent>(&events[5]) {
        Err(err @ JournalError::NewerSchema { .. }) => {
            let JournalError::NewerSchema {
                found, supported, ..
            } = &err
            else {
                unreachable!()
            };
            assert_eq!(
                (*found, *supported),
                (SchemaVersion::new(3, 0), TestEvent::CURRENT)
            );
            assert!(err.to_string().contains("upgrade keyturn"), "{err}");
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    match decode::<TestEvent>(&events[6]) {
        Err(err @ JournalError::Corrupt { .. }) => {
            assert!(!err.to_string().contains("secret-looking"), "{err}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// A change that makes an event invalid.
type Mutation = Box<dyn Fn(&mut NewEvent)>;

pub async fn invalid_input_is_rejected(harness: &dyn Harness) {
    let fixture = harness.fixture().await;
    let journal = fixture.journal.as_ref();
    let id = stream("c", "s");
    let rejected = |result: Result<u64, JournalError>, what: &str| match result {
        Err(JournalError::Rejected(message)) => message,
        other => panic!("{what}: expected Rejected, got {other:?}"),
    };
    rejected(journal.append(&id, 0, Vec::new()).await, "empty batch");
    rejected(
        journal
            .append(&id, 0, numbered(MAX_EVENTS_PER_APPEND + 1))
            .await,
        "oversized batch",
    );
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "three keys",
            Box::new(|e| e.access_key_ids = vec!["A".into(), "B".into(), "C".into()]),
        ),
        (
            "a key twice",
            Box::new(|e| e.access_key_ids = vec!["A".into(), "A".into()]),
        ),
        (
            "empty key",
            Box::new(|e| e.access_key_ids = vec![String::new()]),
        ),
        (
            "empty account",
            Box::new(|e| e.account_id = Some(String::new())),
        ),
        (
            "control character",
            Box::new(|e| e.user_name = Some("a\nb".into())),
        ),
        ("empty type", Box::new(|e| e.event_type = String::new())),
        (
            "space in type",
            Box::new(|e| e.event_type = "Key Created".into()),
        ),
        ("empty run id", Box::new(|e| e.actor.run_id = String::new())),
        (
            "huge payload",
            Box::new(|e| e.payload = json!({ "blob": "x".repeat(70_000) })),
        ),
    ];
    for (what, mutate) in cases {
        let mut bad = event("T", json!({}));
        mutate(&mut bad);
        let message = rejected(journal.append(&id, 0, vec![bad]).await, what);
        assert!(!message.contains("xxxxxxxx"), "{what}: {message}");
    }
    let err = journal.read_campaign("bad#campaign").await.unwrap_err();
    assert!(matches!(err, JournalError::Rejected(_)), "{err}");
    // Nothing was written by any refused call.
    assert!(journal.read_stream(&id).await.unwrap().is_empty());
    assert!(journal.list_campaigns().await.unwrap().is_empty());

    // Bad input is refused before the version is checked, in every backend alike.
    journal.append(&id, 0, numbered(1)).await.unwrap();
    rejected(
        journal.append(&id, 0, Vec::new()).await,
        "empty batch at a stale version",
    );
}

/// Events grouped by stream, for backend tests that need them.
pub fn by_stream(events: &[Envelope]) -> BTreeMap<StreamId, Vec<Envelope>> {
    let mut streams: BTreeMap<StreamId, Vec<Envelope>> = BTreeMap::new();
    for event in events {
        streams
            .entry(event.stream.clone())
            .or_default()
            .push(event.clone());
    }
    streams
}

pub async fn audit_filters_combine_over_an_index(harness: &dyn Harness) {
    use keyturn_journal::{AuditFilter, IndexUsed, audit};

    let fixture = harness.fixture().await;
    let journal = fixture.journal.as_ref();
    let tagged = |kind: &str, account: &str, user: &str, keys: &[&str], n: u32| {
        let mut event = event(kind, json!({ "n": n }));
        event.account_id = Some(account.into());
        event.user_name = Some(user.into());
        event.access_key_ids = keys.iter().map(|k| k.to_string()).collect();
        event
    };
    let a = stream("audit-1", "user/111111111111/alice");
    let b = stream("audit-1", "user/222222222222/alice");
    let c = stream("audit-2", "user/111111111111/bob");
    journal
        .append(
            &a,
            0,
            vec![tagged(
                "key-enrolled",
                "111111111111",
                "alice",
                &["AKIAOLD1"],
                1,
            )],
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let middle = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    journal
        .append(
            &b,
            0,
            vec![tagged(
                "key-enrolled",
                "222222222222",
                "alice",
                &["AKIAOLD2"],
                2,
            )],
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    journal
        .append(
            &a,
            1,
            vec![tagged(
                "replacement-created",
                "111111111111",
                "alice",
                &["AKIAOLD1", "AKIANEW1"],
                3,
            )],
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    journal
        .append(
            &c,
            0,
            vec![tagged(
                "key-enrolled",
                "111111111111",
                "bob",
                &["AKIAOLD3"],
                4,
            )],
        )
        .await
        .unwrap();

    let numbers = |events: Vec<Envelope>| -> Vec<u64> {
        events
            .iter()
            .map(|e| e.payload["n"].as_u64().unwrap())
            .collect()
    };
    let query =
        |filter: AuditFilter| async move { numbers(audit(journal, &filter).await.unwrap()) };

    let by_new_key = AuditFilter {
        access_key_id: Some("AKIANEW1".into()),
        ..AuditFilter::default()
    };
    assert_eq!(by_new_key.index(), IndexUsed::AccessKey);
    assert_eq!(
        query(by_new_key).await,
        [3],
        "a key found as the new key of an event"
    );
    let by_old_key = AuditFilter {
        access_key_id: Some("AKIAOLD1".into()),
        ..AuditFilter::default()
    };
    assert_eq!(
        query(by_old_key).await,
        [1, 3],
        "the whole history of a key, oldest first"
    );

    let account = AuditFilter {
        account_id: Some("111111111111".into()),
        ..AuditFilter::default()
    };
    assert_eq!(account.index(), IndexUsed::AccountTime);
    assert_eq!(query(account.clone()).await, [1, 3, 4]);
    assert_eq!(
        query(AuditFilter {
            since: Some(middle),
            ..account.clone()
        })
        .await,
        [3, 4]
    );
    assert_eq!(
        query(AuditFilter {
            until: Some(middle),
            ..account.clone()
        })
        .await,
        [1]
    );
    assert_eq!(
        query(AuditFilter {
            user_name: Some("bob".into()),
            ..account.clone()
        })
        .await,
        [4]
    );
    assert_eq!(
        query(AuditFilter {
            campaign: Some("audit-1".into()),
            ..account.clone()
        })
        .await,
        [1, 3]
    );

    let campaign = AuditFilter {
        campaign: Some("audit-1".into()),
        ..AuditFilter::default()
    };
    assert_eq!(campaign.index(), IndexUsed::Campaign);
    assert_eq!(
        query(campaign.clone()).await,
        [1, 2, 3],
        "a campaign's events in time order, across streams"
    );
    assert_eq!(
        query(AuditFilter {
            event_type: Some("key-enrolled".into()),
            ..campaign
        })
        .await,
        [1, 2]
    );

    let everything = AuditFilter {
        event_type: Some("key-enrolled".into()),
        ..AuditFilter::default()
    };
    assert_eq!(everything.index(), IndexUsed::AllCampaigns);
    assert_eq!(query(everything).await, [1, 2, 4]);

    let user_alone = AuditFilter {
        user_name: Some("alice".into()),
        ..AuditFilter::default()
    };
    assert!(
        matches!(
            audit(journal, &user_alone).await,
            Err(JournalError::Rejected(_))
        ),
        "a user name alone is ambiguous"
    );
    let backwards = AuditFilter {
        campaign: Some("audit-1".into()),
        since: Some(middle),
        until: Some(middle),
        ..AuditFilter::default()
    };
    assert!(matches!(
        audit(journal, &backwards).await,
        Err(JournalError::Rejected(_))
    ));
}
