//! Audit speed on a large SQLite journal: fills a journal with N events (default
//! 1,000,000) across many user streams, then times a key's whole history
//! (`events_for_access_key`) and an account's quarter (`events_for_account`).
//!
//! `cargo run --release -p keyturn-journal --example audit_bench [-- EVENTS [PATH]]`

use std::time::{Duration, Instant};

use chrono::Utc;
use keyturn_journal::{
    Actor, Journal, MAX_EVENTS_PER_APPEND, NewEvent, SchemaVersion, SqliteJournal, StreamId,
};
use serde_json::json;

/// Events per user stream: a long rotation history.
const PER_STREAM: usize = 96;

fn event(account: &str, user: &str, old: &str, new: &str, n: usize) -> NewEvent {
    NewEvent {
        event_type: "step-intended".into(),
        schema_version: SchemaVersion::new(1, 0),
        payload: json!({ "key": old, "step": "deactivate", "attempt": 1, "target": null, "n": n }),
        account_id: Some(account.into()),
        user_name: Some(user.into()),
        access_key_ids: vec![old.into(), new.into()],
        actor: Actor {
            caller_arn: "arn:aws:sts::123456789012:assumed-role/keyturn/bench".into(),
            run_id: "bench".into(),
            host: "bench".into(),
        },
    }
}

fn key(stream: usize, which: &str) -> String {
    format!("AKIA{which}{stream:015}")
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let total: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let path = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("keyturn-audit-bench-{}.db", std::process::id()))
        });
    let _ = std::fs::remove_file(&path);
    let journal = SqliteJournal::open(&path).await?;
    let streams = total.div_ceil(PER_STREAM);

    let filling = Instant::now();
    for s in 0..streams {
        let account = format!("{:012}", s % 100);
        let user = format!("user{s}");
        let id = StreamId::new("bench", format!("user/{account}/{user}"))?;
        let (old, new) = (key(s, "OLD"), key(s, "NEW"));
        let mut version = 0;
        let mut written = 0;
        while written < PER_STREAM.min(total - s * PER_STREAM) {
            let batch = MAX_EVENTS_PER_APPEND.min(PER_STREAM - written);
            let events = (0..batch)
                .map(|i| event(&account, &user, &old, &new, written + i))
                .collect();
            version = journal.append(&id, version, events).await?;
            written += batch;
        }
    }
    let fill = filling.elapsed();
    let size = std::fs::metadata(&path)?.len();
    println!(
        "filled {total} events in {streams} streams ({:.0} MB) in {:.1?}",
        size as f64 / 1e6,
        fill
    );

    let mut by_key = Vec::new();
    for i in 0..25 {
        let stream = (i * 7919) % streams;
        let started = Instant::now();
        let history = journal
            .events_for_access_key(&key(stream, if i % 2 == 0 { "OLD" } else { "NEW" }))
            .await?;
        by_key.push(started.elapsed());
        assert_eq!(
            history.len(),
            PER_STREAM.min(total - stream * PER_STREAM),
            "a key's whole history"
        );
    }
    let mut by_account = Vec::new();
    for i in 0..5 {
        let account = format!("{:012}", i * 13 % 100);
        let started = Instant::now();
        let events = journal
            .events_for_account(
                &account,
                Utc::now() - chrono::Duration::days(90),
                Utc::now(),
            )
            .await?;
        by_account.push(started.elapsed());
        assert!(!events.is_empty());
    }
    println!(
        "one key's history (events_for_access_key): median {:.2?}, max {:.2?} over {} queries",
        median(by_key.clone()),
        by_key.iter().max().unwrap(),
        by_key.len()
    );
    println!(
        "one account's last 90 days (events_for_account, ~{} events): median {:.2?}",
        total / 100,
        median(by_account)
    );
    drop(journal);
    let _ = std::fs::remove_file(&path);
    Ok(())
}
