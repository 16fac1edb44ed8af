//! The contract suite against the DynamoDB backend on the local emulator, plus what
//! only DynamoDB has: `init` of the table, its format record and its error mapping.
//!
//! One emulator serves the whole test binary. It runs serially (one request at a
//! time), because moto's threaded server does not make conditional writes atomic and
//! the racing-writers scenario relies on them. Every fixture gets its own table.

mod contract;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ProjectionType,
    ScalarAttributeType,
};
use contract::{Fixture, Harness, RawAccess};
use keyturn_journal::{
    Actor, Append, Clock, DynamoJournal, InitOutcome, Journal, JournalError, JournalLocation,
    NewEvent, SchemaVersion, StreamHead, StreamId, verify_stream,
};
use keyturn_testbed::{Emulator, EmulatorOptions, FaultRule};

static EMULATOR: LazyLock<Emulator> =
    LazyLock::new(|| Emulator::start(EmulatorOptions { serial: true }));

/// Small enough that every multi-item read of the contract takes several pages.
const PAGE_SIZE: i32 = 4;

fn unique_table() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "journal-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn sdk() -> aws_config::SdkConfig {
    EMULATOR.sdk_config().await
}

async fn client() -> Client {
    Client::new(&sdk().await)
}

fn location(table: &str) -> JournalLocation {
    JournalLocation::DynamoDb {
        table: table.to_owned(),
    }
}

struct Dynamo;

struct DynamoRaw {
    client: Client,
    table: String,
}

impl DynamoRaw {
    fn key(stream: &StreamId, sequence: u64) -> [(String, AttributeValue); 2] {
        [
            (
                "pk".into(),
                AttributeValue::S(format!("C#{}", stream.campaign())),
            ),
            (
                "sk".into(),
                AttributeValue::S(format!("E#{}#{sequence:020}", stream.name())),
            ),
        ]
    }
}

#[async_trait]
impl Harness for Dynamo {
    async fn fixture_with_clock(&self, clock: Arc<dyn Clock>) -> Fixture {
        let sdk = sdk().await;
        let table = unique_table();
        keyturn_journal::init(&location(&table), Some(&sdk))
            .await
            .unwrap();
        let journal = DynamoJournal::open(&sdk, &table)
            .await
            .unwrap()
            .with_page_size(PAGE_SIZE)
            .with_clock(clock);
        Fixture {
            journal: Arc::new(journal),
            raw: Box::new(DynamoRaw {
                client: Client::new(&sdk),
                table,
            }),
        }
    }
}

#[async_trait]
impl RawAccess for DynamoRaw {
    async fn set_payload(&self, stream: &StreamId, sequence: u64, payload_json: &str) {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(stream, sequence).into_iter().collect()))
            .update_expression("SET payload = :p")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":p", AttributeValue::S(payload_json.into()))
            .send()
            .await
            .unwrap();
    }

    async fn delete(&self, stream: &StreamId, sequence: u64) {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(stream, sequence).into_iter().collect()))
            .condition_expression("attribute_exists(pk)")
            .send()
            .await
            .unwrap();
    }

    async fn refuse_writes_at(&self, stream: &StreamId, sequence: u64) -> bool {
        // An item already in the place of the sequence fails the batch's condition.
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::key(stream, sequence).into_iter().collect()))
            .send()
            .await
            .unwrap();
        true
    }

    async fn accept_writes(&self, stream: &StreamId, sequence: u64) {
        self.delete(stream, sequence).await;
    }

    async fn another_handle(&self) -> Arc<dyn Journal> {
        Arc::new(
            DynamoJournal::open(&sdk().await, &self.table)
                .await
                .unwrap(),
        )
    }
}

contract_tests!(Dynamo);

fn one_event() -> Vec<NewEvent> {
    vec![NewEvent {
        event_type: "T".into(),
        schema_version: SchemaVersion::new(1, 0),
        payload: serde_json::json!({}),
        account_id: Some("123456789012".into()),
        user_name: None,
        access_key_ids: vec!["AKIAX".into()],
        actor: Actor {
            caller_arn: "arn".into(),
            run_id: "r".into(),
            host: "test-host".into(),
        },
    }]
}

/// An index's name, key schema and projection.
type IndexShape = (String, Vec<(String, KeyType)>, Option<ProjectionType>);

#[tokio::test]
async fn init_is_idempotent_and_creates_the_indexes() {
    let sdk = sdk().await;
    let table = unique_table();
    let location = location(&table);
    assert_eq!(
        keyturn_journal::init(&location, Some(&sdk)).await.unwrap(),
        InitOutcome { created: true }
    );
    assert_eq!(
        keyturn_journal::init(&location, Some(&sdk)).await.unwrap(),
        InitOutcome { created: false }
    );
    let journal = keyturn_journal::open(&location, Some(&sdk)).await.unwrap();
    assert_eq!(journal.describe(), format!("dynamodb://{table}"));

    let description = client()
        .await
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let keys = |schema: &[KeySchemaElement]| -> Vec<(String, KeyType)> {
        schema
            .iter()
            .map(|k| (k.attribute_name().to_owned(), k.key_type().clone()))
            .collect()
    };
    assert_eq!(
        keys(description.key_schema()),
        [("pk".into(), KeyType::Hash), ("sk".into(), KeyType::Range)]
    );
    assert_eq!(
        description
            .billing_mode_summary()
            .and_then(|b| b.billing_mode()),
        Some(&BillingMode::PayPerRequest)
    );
    let mut indexes: Vec<IndexShape> = description
        .global_secondary_indexes()
        .iter()
        .map(|index| {
            (
                index.index_name().unwrap().to_owned(),
                keys(index.key_schema()),
                index
                    .projection()
                    .and_then(|p| p.projection_type())
                    .cloned(),
            )
        })
        .collect();
    indexes.sort_by(|a, b| a.0.cmp(&b.0));
    let expected = |name: &str, partition: &str| {
        (
            name.to_owned(),
            vec![
                (partition.to_owned(), KeyType::Hash),
                ("at".into(), KeyType::Range),
            ],
            Some(ProjectionType::All),
        )
    };
    assert_eq!(
        indexes,
        [
            expected("by_account", "account_id"),
            expected("by_key_1", "key_id_1"),
            expected("by_key_2", "key_id_2"),
        ]
    );
}

#[tokio::test]
async fn open_before_init_says_to_run_init() {
    let sdk = sdk().await;
    // No table at all.
    let table = unique_table();
    let err = keyturn_journal::open(&location(&table), Some(&sdk))
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::NotInitialised { .. }), "{err}");
    assert!(err.to_string().contains("keyturn journal init"), "{err}");

    // A table with the right keys but no format record.
    let client = client().await;
    create_table(&client, &table, "pk", Some("sk")).await;
    let err = keyturn_journal::open(&location(&table), Some(&sdk))
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::NotInitialised { .. }), "{err}");
}

async fn create_table(client: &Client, table: &str, hash: &str, range: Option<&str>) {
    let mut request = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(hash)
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(hash)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        );
    if let Some(range) = range {
        request = request
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(range)
                    .key_type(KeyType::Range)
                    .build()
                    .unwrap(),
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(range)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            );
    }
    request.send().await.unwrap();
}

#[tokio::test]
async fn init_refuses_a_table_of_another_layout_naming_the_difference() {
    let sdk = sdk().await;
    let client = client().await;

    let other = unique_table();
    create_table(&client, &other, "id", None).await;
    let err = keyturn_journal::init(&location(&other), Some(&sdk))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, JournalError::Rejected(_)), "{message}");
    assert!(message.contains("key schema is [id HASH]"), "{message}");
    let err = keyturn_journal::open(&location(&other), Some(&sdk))
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::Rejected(_)), "{err}");

    let no_indexes = unique_table();
    create_table(&client, &no_indexes, "pk", Some("sk")).await;
    let message = keyturn_journal::init(&location(&no_indexes), Some(&sdk))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("no global secondary index by_account") && message.contains("by_key_2"),
        "{message}"
    );
}

#[tokio::test]
async fn a_journal_with_a_newer_format_version_is_refused_on_open() {
    let sdk = sdk().await;
    let table = unique_table();
    keyturn_journal::init(&location(&table), Some(&sdk))
        .await
        .unwrap();
    client()
        .await
        .update_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("META".into()))
        .key("sk", AttributeValue::S("format".into()))
        .update_expression("SET format_version = :v")
        .expression_attribute_values(":v", AttributeValue::N("2".into()))
        .send()
        .await
        .unwrap();
    for result in [
        keyturn_journal::open(&location(&table), Some(&sdk))
            .await
            .map(drop),
        keyturn_journal::init(&location(&table), Some(&sdk))
            .await
            .map(drop),
    ] {
        let err = result.unwrap_err();
        match &err {
            JournalError::Incompatible {
                found, supported, ..
            } => assert_eq!((*found, *supported), (2, 1)),
            other => panic!("expected Incompatible, got {other:?}"),
        }
        assert!(err.to_string().contains("upgrade keyturn"), "{err}");
    }
}

#[tokio::test]
async fn open_without_aws_configuration_is_rejected() {
    let err = keyturn_journal::open(&location("journal"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::Rejected(_)), "{err}");
}

/// A journal table on an emulator of its own, so that the caller's fault rules touch
/// no other test.
async fn faulty_table() -> (Emulator, aws_config::SdkConfig, String) {
    let emulator = Emulator::start(EmulatorOptions { serial: true });
    let sdk = emulator.sdk_config().await;
    let table = unique_table();
    keyturn_journal::init(&location(&table), Some(&sdk))
        .await
        .unwrap();
    (emulator, sdk, table)
}

#[tokio::test]
async fn throttling_and_server_errors_are_unavailable_with_the_aws_code() {
    let (emulator, sdk, table) = faulty_table().await;
    // With the SDK's default retries (three attempts), not the journal's patient ones:
    // what is mapped here is what is left once retries are exhausted, whatever their number.
    let journal = DynamoJournal::open_with_client(Client::new(&sdk), &table)
        .await
        .unwrap();
    let id = StreamId::new("c", "s").unwrap();

    emulator
        .set_faults(&[FaultRule::throttle().service("dynamodb").action("Query")])
        .await;
    let err = journal.read_stream(&id).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("ThrottlingException"), "{err}");

    emulator
        .set_faults(&[FaultRule::error(503).service("dynamodb").action("GetItem")])
        .await;
    let err = journal.append(&id, 0, one_event()).await.unwrap_err();
    assert!(
        matches!(err, JournalError::Unavailable { .. }),
        "expected Unavailable, got {err:?}"
    );

    emulator.clear_faults().await;
    assert_eq!(journal.append(&id, 0, one_event()).await.unwrap(), 1);
}

/// The journal's client is patient (`patient_retry_config`): a write throttled seven
/// times in a row, one more than keyturn's other AWS calls attempt, still lands, once.
#[tokio::test]
async fn a_write_throttled_past_six_attempts_still_lands_once() {
    let (emulator, sdk, table) = faulty_table().await;
    let journal = keyturn_journal::open(&location(&table), Some(&sdk))
        .await
        .unwrap();
    let id = StreamId::new("c", "s").unwrap();
    let rules = [
        FaultRule::throttle()
            .service("dynamodb")
            .action("TransactWriteItems")
            .count(7),
        FaultRule::error(503)
            .service("dynamodb")
            .action("PutItem")
            .count(7),
    ];
    emulator.set_faults(&rules).await;

    // The stream's first append (with the campaign index item: a transaction), then a
    // second one (a single PutItem).
    assert_eq!(journal.append(&id, 0, one_event()).await.unwrap(), 1);
    assert_eq!(journal.append(&id, 1, one_event()).await.unwrap(), 2);
    let fired: Vec<u64> = emulator.faults().await.iter().map(|f| f.fired).collect();
    assert_eq!(fired, [7, 7], "every injected fault was met and retried");
    emulator.clear_faults().await;
    let events = journal.read_stream(&id).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [1, 2]
    );
    verify_stream(&events).unwrap();
}

#[tokio::test]
async fn audit_queries_never_scan_the_table() {
    let sdk = sdk().await;
    let table = unique_table();
    keyturn_journal::init(&location(&table), Some(&sdk))
        .await
        .unwrap();
    let journal = keyturn_journal::open(&location(&table), Some(&sdk))
        .await
        .unwrap();
    let id = StreamId::new("c", "s").unwrap();
    journal.append(&id, 0, one_event()).await.unwrap();
    journal.read_stream(&id).await.unwrap();
    journal.read_campaign("c").await.unwrap();
    journal.list_campaigns().await.unwrap();
    assert_eq!(
        journal.events_for_access_key("AKIAX").await.unwrap().len(),
        1
    );
    let now = chrono::Utc::now();
    journal
        .events_for_account("123456789012", now - chrono::Duration::hours(1), now)
        .await
        .unwrap();
    // The counters cover every test of this binary so far: none may have scanned.
    assert_eq!(EMULATOR.counters().await.by_action("dynamodb", "Scan"), 0);
}

/// With the head known, an append is one write and no read: a single event one PutItem,
/// a batch one TransactWriteItems. A stream's first append reads the campaign index once
/// per campaign and handle; a plain `append` still reads the previous event.
#[tokio::test]
async fn an_append_at_a_known_head_reads_nothing() {
    // Its own emulator, so that its request counters count this test only.
    let emulator = Emulator::start(EmulatorOptions::default());
    let sdk = emulator.sdk_config().await;
    let table = unique_table();
    keyturn_journal::init(&location(&table), Some(&sdk))
        .await
        .unwrap();
    let journal = DynamoJournal::open(&sdk, &table).await.unwrap();
    let count = |action: &'static str| {
        let emulator = &emulator;
        async move { emulator.counters().await.by_action("dynamodb", action) }
    };
    let snapshot = || async {
        [
            count("GetItem").await,
            count("Query").await,
            count("PutItem").await,
            count("TransactWriteItems").await,
        ]
    };
    emulator.reset_counters().await;

    let first = StreamId::new("c", "user-1").unwrap();
    let head = journal
        .append_at(&first, &keyturn_journal::StreamHead::empty(), one_event())
        .await
        .unwrap();
    // The campaign is new: one GetItem of the index, one transaction (event + index item).
    assert_eq!(snapshot().await, [1, 0, 0, 1]);
    emulator.reset_counters().await;

    let head = journal.append_at(&first, &head, one_event()).await.unwrap();
    assert_eq!(snapshot().await, [0, 0, 1, 0], "one event: one PutItem");
    emulator.reset_counters().await;

    let mut two = one_event();
    two.extend(one_event());
    let head = journal.append_at(&first, &head, two).await.unwrap();
    assert_eq!(head.version(), 4);
    assert_eq!(snapshot().await, [0, 0, 0, 1], "a batch: one transaction");
    emulator.reset_counters().await;

    // Another stream of a campaign this handle knows: no read of the index.
    let second = StreamId::new("c", "user-2").unwrap();
    journal
        .append_at(&second, &keyturn_journal::StreamHead::empty(), one_event())
        .await
        .unwrap();
    assert_eq!(snapshot().await, [0, 0, 1, 0]);
    emulator.reset_counters().await;

    // A handle that read the campaign knows it is listed too.
    let other = DynamoJournal::open(&sdk, &table).await.unwrap();
    let events = other.read_campaign("c").await.unwrap();
    emulator.reset_counters().await;
    let third = StreamId::new("c", "user-3").unwrap();
    other
        .append_at(&third, &keyturn_journal::StreamHead::empty(), one_event())
        .await
        .unwrap();
    assert_eq!(snapshot().await, [0, 0, 1, 0]);
    assert_eq!(events.len(), 5);
    emulator.reset_counters().await;

    // The plain append reads the event at the expected version first.
    journal.append(&first, 4, one_event()).await.unwrap();
    assert_eq!(snapshot().await, [1, 0, 1, 0]);
    verify_stream(&journal.read_stream(&first).await.unwrap()).unwrap();
    assert_eq!(
        journal.list_campaigns().await.unwrap(),
        vec!["c".to_owned()]
    );
    emulator.reset_counters().await;

    // A group append: one transaction for every stream, no read; one event alone is a
    // PutItem. After a conflict on one stream, one more transaction for the others.
    let head = StreamHead::after(&journal.read_stream(&first).await.unwrap());
    let second_head = StreamHead::after(&journal.read_stream(&second).await.unwrap());
    emulator.reset_counters().await;
    let group = |stream: &StreamId, head: &StreamHead| Append {
        stream: stream.clone(),
        head: head.clone(),
        events: one_event(),
    };
    let fourth = StreamId::new("c", "user-4").unwrap();
    let heads = journal
        .append_many(vec![
            group(&first, &head),
            group(&second, &second_head),
            group(&fourth, &StreamHead::empty()),
        ])
        .await;
    assert!(heads.iter().all(Result::is_ok), "{heads:?}");
    assert_eq!(
        snapshot().await,
        [0, 0, 0, 1],
        "three streams: one transaction"
    );
    emulator.reset_counters().await;
    let fourth_head = heads[2].clone().unwrap();
    journal
        .append_many(vec![group(&fourth, &fourth_head)])
        .await
        .remove(0)
        .unwrap();
    assert_eq!(snapshot().await, [0, 0, 1, 0], "one event: one PutItem");
    emulator.reset_counters().await;
    let results = journal
        .append_many(vec![
            group(&first, &head),
            group(&second, heads[1].as_ref().unwrap()),
        ])
        .await;
    assert!(results[0].as_ref().unwrap_err().is_conflict());
    assert_eq!(results[1].as_ref().unwrap().version(), 3);
    // The failed transaction, the conflict's resolution (the GetItem of the sequence and
    // the Query of the stream's version), then the other stream's PutItem.
    assert_eq!(snapshot().await, [1, 1, 1, 1]);
}

/// A fenced append costs no read and no more requests than an unfenced one that carries
/// others: one TransactWriteItems (its events and the fence's ConditionCheck), or one
/// PutItem for one event at the fence's own place. A failed fence is found out by that
/// request alone, unless an event of the write is where another writer's is.
#[tokio::test]
async fn a_fenced_append_is_one_request() {
    // Its own emulator, so that its request counters count this test only.
    let emulator = Emulator::start(EmulatorOptions::default());
    let sdk = emulator.sdk_config().await;
    let table = unique_table();
    keyturn_journal::init(&location(&table), Some(&sdk))
        .await
        .unwrap();
    let journal = DynamoJournal::open(&sdk, &table).await.unwrap();
    let other = DynamoJournal::open(&sdk, &table).await.unwrap();
    let snapshot = || async {
        let counters = emulator.counters().await;
        let count = |action| counters.by_action("dynamodb", action);
        [
            count("GetItem"),
            count("Query"),
            count("PutItem"),
            count("TransactWriteItems"),
        ]
    };
    let claim = StreamId::new("c", "account/1").unwrap();
    let (a, b) = (
        StreamId::new("c", "user-a").unwrap(),
        StreamId::new("c", "user-b").unwrap(),
    );
    let claim_head = journal
        .append_at(&claim, &StreamHead::empty(), one_event())
        .await
        .unwrap();
    let a_head = journal
        .append_at(&a, &StreamHead::empty(), one_event())
        .await
        .unwrap();
    let fence = keyturn_journal::Fence::at(&claim, &claim_head);
    emulator.reset_counters().await;

    let a_head = journal
        .append_at_fenced(&a, &a_head, one_event(), Some(&fence))
        .await
        .unwrap();
    assert_eq!(snapshot().await, [0, 0, 0, 1], "one event: one transaction");
    emulator.reset_counters().await;

    let mut two = one_event();
    two.extend(one_event());
    let a_head = journal
        .append_at_fenced(&a, &a_head, two, Some(&fence))
        .await
        .unwrap();
    assert_eq!(snapshot().await, [0, 0, 0, 1], "a batch: one transaction");
    emulator.reset_counters().await;

    // The fence's own stream at the fence's version: its put is the fence.
    let claim_head = journal
        .append_at_fenced(&claim, &claim_head, one_event(), Some(&fence))
        .await
        .unwrap();
    assert_eq!(
        snapshot().await,
        [0, 0, 1, 0],
        "a renewal alone: one PutItem"
    );
    emulator.reset_counters().await;

    let fence = keyturn_journal::Fence::at(&claim, &claim_head);
    let group = |stream: &StreamId, head: &StreamHead| Append {
        stream: stream.clone(),
        head: head.clone(),
        events: one_event(),
    };
    let results = journal
        .append_many_fenced(
            vec![
                group(&a, &a_head),
                group(&b, &StreamHead::empty()),
                group(&claim, &claim_head),
            ],
            Some(&fence),
        )
        .await;
    let heads: Vec<StreamHead> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(snapshot().await, [0, 0, 0, 1], "a group: one transaction");
    let (a_head, b_head, claim_head) = (heads[0].clone(), heads[1].clone(), heads[2].clone());
    let fence = keyturn_journal::Fence::at(&claim, &claim_head);

    // While the fence holds, a stale head is resolved as without a fence (a GetItem of
    // the sequence, a Query of the stream's version), and the others go again.
    emulator.reset_counters().await;
    let results = journal
        .append_many_fenced(
            vec![group(&a, &a_head), group(&b, &StreamHead::empty())],
            Some(&fence),
        )
        .await;
    assert!(results[1].as_ref().unwrap_err().is_conflict());
    let a_head = results[0].clone().unwrap();
    assert_eq!(snapshot().await, [1, 1, 0, 2]);

    // Another writer moves the fence's stream: the failed ConditionCheck alone tells.
    other
        .append_at(&claim, &claim_head, one_event())
        .await
        .unwrap();
    emulator.reset_counters().await;
    let failed = journal
        .append_at_fenced(&a, &a_head, one_event(), Some(&fence))
        .await
        .unwrap_err();
    assert!(failed.is_fenced(), "{failed}");
    let results = journal
        .append_many_fenced(vec![group(&a, &a_head), group(&b, &b_head)], Some(&fence))
        .await;
    assert!(results.iter().all(|r| r.as_ref().unwrap_err().is_fenced()));
    assert_eq!(snapshot().await, [0, 0, 0, 2]);
    // A renewal at the old head: its put failed, and one GetItem tells another writer's
    // event from this very write applied once already.
    emulator.reset_counters().await;
    let failed = journal
        .append_at_fenced(&claim, &claim_head, one_event(), Some(&fence))
        .await
        .unwrap_err();
    assert!(failed.is_fenced(), "{failed}");
    assert_eq!(snapshot().await, [1, 0, 1, 0]);
}

#[tokio::test]
async fn reads_follow_every_page() {
    // Its own emulator, so that its request counters count this test only.
    let emulator = Emulator::start(EmulatorOptions { serial: false });
    let sdk = emulator.sdk_config().await;
    let table = unique_table();
    keyturn_journal::init(&location(&table), Some(&sdk))
        .await
        .unwrap();
    let journal = DynamoJournal::open(&sdk, &table)
        .await
        .unwrap()
        .with_page_size(3);
    let id = StreamId::new("c", "s").unwrap();
    let events: Vec<NewEvent> = (0..10).flat_map(|_| one_event()).collect();
    journal.append(&id, 0, events).await.unwrap();

    emulator.reset_counters().await;
    assert_eq!(journal.read_campaign("c").await.unwrap().len(), 10);
    // 10 items in pages of 3: four pages (the last may be followed by an empty one).
    let queries = emulator.counters().await.by_action("dynamodb", "Query");
    assert!(queries >= 4, "read_campaign made {queries} Query requests");

    emulator.reset_counters().await;
    assert_eq!(
        journal.events_for_access_key("AKIAX").await.unwrap().len(),
        10
    );
    let queries = emulator.counters().await.by_action("dynamodb", "Query");
    assert!(
        queries >= 5,
        "events_for_access_key made {queries} Query requests"
    );
}
