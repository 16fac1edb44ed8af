//! Audit of one key's history in a DynamoDB journal of 1,000,000 events, on the local
//! emulator: how many requests `events_for_access_key` (what `keyturn audit --key`
//! runs) makes, how many items DynamoDB reads for them, and how long they take.
//!
//! `cargo run --release -p keyturn-journal --example audit_bench_dynamodb [-- EVENTS]`
//!
//! The measured key's history (two streams: the key rotated out as the old key of one
//! user's long history, and the same key arriving as the new key) is written through
//! the journal's own append path. Writing the other ~1,000,000 events through that path
//! would take the emulator (one Python process) hours, so they are copies of those
//! genuine items under other campaigns' streams, accounts and key ids, written with
//! BatchWriteItem: the same item shape, in the same table, under the same indexes.
//!
//! What the figures mean: on DynamoDB a Query on a global secondary index reads only
//! the items under its partition key, whatever the table's size, and reports them as
//! `ScannedCount`. The emulator (moto) keeps no index structures: it answers an index
//! Query by walking every item of the table, so its time grows with the table and
//! says nothing about DynamoDB's. The request count and `ScannedCount` are the
//! DynamoDB figures; the emulator's time is printed for honesty, not as a target.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, ReturnConsumedCapacity, WriteRequest};
use futures::StreamExt;
use keyturn_journal::{
    Actor, DynamoJournal, Journal, MAX_EVENTS_PER_APPEND, NewEvent, SchemaVersion, StreamId,
};
use keyturn_testbed::{Emulator, EmulatorOptions};
use serde_json::json;

/// Events per genuine user stream: a long rotation history.
const PER_STREAM: usize = 96;
/// The key whose history is measured: the old key of one stream, the new key of another.
const KEY: &str = "AKIAMEASURED00000001";
const TABLE: &str = "keyturn-audit-bench";
/// BatchWriteItem's limit.
const BATCH: usize = 25;
/// Batches in flight while filling.
const FILL_CONCURRENCY: usize = 4;
/// Timed repetitions of the audit query.
const RUNS: usize = 3;

type Item = std::collections::HashMap<String, AttributeValue>;

fn event(old: &str, new: &str, n: usize) -> NewEvent {
    NewEvent {
        event_type: "step-intended".into(),
        schema_version: SchemaVersion::new(1, 0),
        payload: json!({ "key": old, "step": "deactivate", "attempt": 1, "target": null, "n": n }),
        account_id: Some("000000000001".into()),
        user_name: Some("measured".into()),
        access_key_ids: vec![old.into(), new.into()],
        actor: Actor {
            caller_arn: "arn:aws:sts::123456789012:assumed-role/keyturn/bench".into(),
            run_id: "bench".into(),
            host: "bench".into(),
        },
    }
}

/// Appends `PER_STREAM` events to a stream through the journal's own path.
async fn genuine_stream(
    journal: &DynamoJournal,
    stream: &str,
    old: &str,
    new: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let id = StreamId::new("measured", stream)?;
    let mut version = 0;
    while (version as usize) < PER_STREAM {
        let batch = MAX_EVENTS_PER_APPEND.min(PER_STREAM - version as usize);
        let events = (0..batch)
            .map(|i| event(old, new, version as usize + i))
            .collect();
        version = journal.append(&id, version, events).await?;
    }
    Ok(())
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// A copy of a genuine event item as event `n` of the filler: another campaign, stream,
/// account and pair of keys; every other attribute as written by the journal.
fn filler(template: &Item, n: usize) -> Item {
    let stream_no = n / PER_STREAM;
    let seq = n % PER_STREAM + 1;
    let campaign = format!("filler-{:03}", stream_no % 100);
    let stream = format!("user/{:012}/u{stream_no}", stream_no % 1000);
    let at = format!("2026-01-01T00:00:00.{n:06}Z#{campaign}#{stream}#{seq:020}");
    let mut item = template.clone();
    item.insert("pk".into(), s(format!("C#{campaign}")));
    item.insert("sk".into(), s(format!("E#{stream}#{seq:020}")));
    item.insert("campaign".into(), s(&campaign));
    item.insert("stream".into(), s(&stream));
    item.insert("seq".into(), AttributeValue::N(seq.to_string()));
    item.insert("account_id".into(), s(format!("{:012}", stream_no % 1000)));
    item.insert("user_name".into(), s(format!("u{stream_no}")));
    item.insert("key_id_1".into(), s(format!("AKIAFILLOLD{stream_no:09}")));
    item.insert("key_id_2".into(), s(format!("AKIAFILLNEW{stream_no:09}")));
    item.insert("at".into(), s(at));
    item
}

async fn write_batch(client: &Client, mut items: Vec<Item>) -> Result<(), String> {
    let mut pause = Duration::from_millis(50);
    while !items.is_empty() {
        let requests = items
            .drain(..)
            .map(|item| {
                WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(item)).build().unwrap())
                    .build()
            })
            .collect();
        let out = client
            .batch_write_item()
            .request_items(TABLE, requests)
            .send()
            .await
            .map_err(|e| format!("BatchWriteItem: {e:?}"))?;
        if let Some(left) = out.unprocessed_items().and_then(|u| u.get(TABLE)) {
            items = left
                .iter()
                .filter_map(|w| w.put_request().map(|p| p.item().clone()))
                .collect();
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
    Ok(())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let emulator = Emulator::start(EmulatorOptions::default());
    let sdk = emulator.sdk_config().await;
    let client = Client::new(&sdk);
    DynamoJournal::init(&sdk, TABLE).await?;
    let journal = DynamoJournal::open(&sdk, TABLE).await?;

    // The measured key's genuine history: rotated out of one stream, into another.
    genuine_stream(
        &journal,
        "user/000000000001/measured",
        KEY,
        "AKIANEXT000000000001",
    )
    .await?;
    genuine_stream(
        &journal,
        "user/000000000001/before",
        "AKIAPREV000000000001",
        KEY,
    )
    .await?;
    let template = client
        .query()
        .table_name(TABLE)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", s("C#measured"))
        .limit(1)
        .send()
        .await?
        .items()
        .first()
        .cloned()
        .ok_or("no genuine event to copy")?;

    let filling = Instant::now();
    let fill = total.saturating_sub(2 * PER_STREAM);
    let batches: Vec<Vec<Item>> = (0..fill)
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(|chunk| chunk.iter().map(|&n| filler(&template, n)).collect())
        .collect();
    let mut written = 0;
    let mut writes = futures::stream::iter(batches)
        .map(|batch| {
            let client = &client;
            async move {
                let n = batch.len();
                write_batch(client, batch).await.map(|()| n)
            }
        })
        .buffer_unordered(FILL_CONCURRENCY);
    while let Some(n) = writes.next().await {
        written += n?;
        if written % 100_000 < BATCH {
            eprintln!(
                "[fill] {written} of {fill} events, {:.0?}",
                filling.elapsed()
            );
        }
    }
    drop(writes);
    let fill_time = filling.elapsed();
    let events_in_table = fill + 2 * PER_STREAM;
    let emulator_rss = emulator.process_stats().await;

    // The measurement: what `keyturn audit --key` runs, with the emulator's counters.
    emulator.reset_counters().await;
    let cpu_before = emulator.process_stats().await.cpu_seconds;
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let history = journal.events_for_access_key(KEY).await?;
        times.push(started.elapsed());
        assert_eq!(history.len(), 2 * PER_STREAM, "the key's whole history");
    }
    let cpu = emulator.process_stats().await.cpu_seconds - cpu_before;
    let counters = emulator.counters().await;
    let queries = counters.by_action("dynamodb", "Query");
    let scans = counters.by_action("dynamodb", "Scan");
    assert_eq!(counters.total(), queries, "nothing but Queries");
    assert_eq!(scans, 0);

    // What DynamoDB reads for them: each index Query's ScannedCount and capacity.
    let mut scanned = Vec::new();
    for (index, attribute) in [("by_key_1", "key_id_1"), ("by_key_2", "key_id_2")] {
        let out = client
            .query()
            .table_name(TABLE)
            .index_name(index)
            .key_condition_expression("#k = :k")
            .expression_attribute_names("#k", attribute)
            .expression_attribute_values(":k", s(KEY))
            .return_consumed_capacity(ReturnConsumedCapacity::Indexes)
            .send()
            .await?;
        scanned.push(format!(
            "{index}: Count {}, ScannedCount {}, LastEvaluatedKey {}",
            out.count(),
            out.scanned_count(),
            if out.last_evaluated_key().is_some() {
                "set"
            } else {
                "none"
            }
        ));
    }

    println!(
        "table: {events_in_table} events ({} genuine, {fill} copies written in {fill_time:.0?}); emulator RSS {} MiB",
        2 * PER_STREAM,
        emulator_rss.max_rss_kb / 1024
    );
    println!(
        "one key's history (events_for_access_key, {} events): {} requests per audit ({} Query, {scans} Scan over {RUNS} audits)",
        2 * PER_STREAM,
        queries as f64 / RUNS as f64,
        queries
    );
    for line in scanned {
        println!("  {line}");
    }
    println!(
        "emulator time per audit: median {:.2?}, max {:.2?}; emulator CPU {:.2} s per audit (moto walks the whole table for an index Query; DynamoDB reads only the matching items)",
        median(times.clone()),
        times.iter().max().unwrap(),
        cpu / RUNS as f64
    );
    Ok(())
}
