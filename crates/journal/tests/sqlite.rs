//! The contract suite against the SQLite backend, plus what only SQLite has: the file,
//! its format record and sharing it between connections.

mod contract;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use contract::{Fixture, Harness, RawAccess};
use keyturn_journal::{
    Actor, Clock, InitOutcome, Journal, JournalError, NewEvent, SchemaVersion, SqliteJournal,
    StreamId, parse_location,
};
use rusqlite::{Connection, params};

struct Sqlite;

struct SqliteRaw {
    path: PathBuf,
    // Keeps the directory (and the file) alive as long as the fixture.
    _directory: tempfile::TempDir,
}

impl SqliteRaw {
    fn connection(&self) -> Connection {
        let connection = Connection::open(&self.path).unwrap();
        connection.busy_timeout(Duration::from_secs(10)).unwrap();
        connection
    }
}

#[async_trait]
impl Harness for Sqlite {
    async fn fixture_with_clock(&self, clock: Arc<dyn Clock>) -> Fixture {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("journal.db");
        let journal = SqliteJournal::open_with_clock(&path, clock).await.unwrap();
        Fixture {
            journal: Arc::new(journal),
            raw: Box::new(SqliteRaw {
                path,
                _directory: directory,
            }),
        }
    }
}

#[async_trait]
impl RawAccess for SqliteRaw {
    async fn set_payload(&self, stream: &StreamId, sequence: u64, payload_json: &str) {
        let changed = self
            .connection()
            .execute(
                "UPDATE events SET payload = ?4 WHERE campaign = ?1 AND stream = ?2 AND sequence = ?3",
                params![stream.campaign(), stream.name(), sequence as i64, payload_json],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }

    async fn delete(&self, stream: &StreamId, sequence: u64) {
        let changed = self
            .connection()
            .execute(
                "DELETE FROM events WHERE campaign = ?1 AND stream = ?2 AND sequence = ?3",
                params![stream.campaign(), stream.name(), sequence as i64],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }

    async fn refuse_writes_at(&self, stream: &StreamId, sequence: u64) -> bool {
        // Test stream names hold no quotes, so they can be spliced into the trigger.
        self.connection()
            .execute_batch(&format!(
                "CREATE TRIGGER refuse_write BEFORE INSERT ON events \
                 WHEN NEW.campaign = '{}' AND NEW.stream = '{}' AND NEW.sequence = {sequence} \
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
                stream.campaign(),
                stream.name()
            ))
            .unwrap();
        true
    }

    async fn accept_writes(&self, _stream: &StreamId, _sequence: u64) {
        self.connection()
            .execute_batch("DROP TRIGGER refuse_write;")
            .unwrap();
    }

    async fn another_handle(&self) -> Arc<dyn Journal> {
        Arc::new(SqliteJournal::open(&self.path).await.unwrap())
    }
}

contract_tests!(Sqlite);

fn one_event() -> Vec<NewEvent> {
    vec![NewEvent {
        event_type: "T".into(),
        schema_version: SchemaVersion::new(1, 0),
        payload: serde_json::json!({}),
        account_id: None,
        user_name: None,
        access_key_ids: Vec::new(),
        actor: Actor {
            caller_arn: "arn".into(),
            run_id: "r".into(),
            host: "test-host".into(),
        },
    }]
}

fn location(path: &Path) -> keyturn_journal::JournalLocation {
    parse_location(&format!("sqlite://{}", path.display())).unwrap()
}

#[tokio::test]
async fn init_creates_the_file_once_and_open_describes_it() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("new.db");
    let location = location(&path);
    assert_eq!(
        keyturn_journal::init(&location, None).await.unwrap(),
        InitOutcome { created: true }
    );
    assert!(path.exists());
    assert_eq!(
        keyturn_journal::init(&location, None).await.unwrap(),
        InitOutcome { created: false }
    );
    let journal = keyturn_journal::open(&location, None).await.unwrap();
    assert_eq!(journal.describe(), format!("sqlite://{}", path.display()));
    assert_eq!(journal.describe(), location.to_string());
}

#[tokio::test]
async fn open_creates_a_missing_file() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("fresh.db");
    let journal = keyturn_journal::open(&location(&path), None).await.unwrap();
    let id = StreamId::new("c", "s").unwrap();
    assert_eq!(journal.append(&id, 0, one_event()).await.unwrap(), 1);
    assert!(path.exists());
}

#[tokio::test]
async fn a_journal_with_a_newer_format_version_is_refused_on_open() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("future.db");
    drop(SqliteJournal::open(&path).await.unwrap());
    Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE meta SET value = '7' WHERE key = 'format_version'",
            [],
        )
        .unwrap();
    let err = keyturn_journal::open(&location(&path), None)
        .await
        .unwrap_err();
    match &err {
        JournalError::Incompatible {
            found, supported, ..
        } => assert_eq!((*found, *supported), (7, keyturn_journal::FORMAT_VERSION)),
        other => panic!("expected Incompatible, got {other:?}"),
    }
    assert!(err.to_string().contains("upgrade keyturn"), "{err}");
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("notes.txt");
    std::fs::write(
        &path,
        "these are not the tables you are looking for, padded to a page ".repeat(20),
    )
    .unwrap();
    let err = SqliteJournal::open(&path).await.unwrap_err();
    assert!(matches!(err, JournalError::Rejected(_)), "{err}");
}

#[tokio::test]
async fn a_file_in_a_missing_directory_is_rejected_with_its_path() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("missing/journal.db");
    let err = SqliteJournal::open(&path).await.unwrap_err();
    assert!(matches!(err, JournalError::Rejected(_)), "{err}");
    assert!(err.to_string().contains("missing/journal.db"), "{err}");
}

#[tokio::test]
async fn a_second_process_waits_for_the_lock_instead_of_failing() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("shared.db");
    let journal = SqliteJournal::open(&path).await.unwrap();
    let id = StreamId::new("c", "s").unwrap();
    journal.append(&id, 0, one_event()).await.unwrap();

    // Another "process" holds the write lock for a while.
    let holder_path = path.clone();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let mut connection = Connection::open(&holder_path).unwrap();
        let transaction = connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        transaction.commit().unwrap();
    });
    locked_rx.recv().unwrap();
    let started = std::time::Instant::now();
    assert_eq!(journal.append(&id, 1, one_event()).await.unwrap(), 2);
    assert!(started.elapsed() >= Duration::from_millis(300));
    holder.join().unwrap();
}

#[test]
fn the_file_is_in_wal_mode() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("wal.db");
    runtime.block_on(async {
        SqliteJournal::open(&path).await.unwrap();
    });
    let mode: String = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

/// A stored event whose payload, edited in the file, is no longer JSON cannot be what
/// keyturn wrote: every read refuses it as tampering (naming the event, never the
/// payload), not as a journal that cannot be read.
#[tokio::test]
async fn an_event_edited_so_that_it_no_longer_decodes_is_tampering() {
    let fixture = Sqlite
        .fixture_with_clock(Arc::new(keyturn_journal::SystemClock))
        .await;
    let id = StreamId::new("c", "s").unwrap();
    fixture.journal.append(&id, 0, one_event()).await.unwrap();
    fixture
        .raw
        .set_payload(&id, 1, "{\"n\":(secret-looking}")
        .await;
    for read in [
        fixture.journal.read_stream(&id).await,
        fixture.journal.read_campaign("c").await,
    ] {
        match read {
            Err(e @ JournalError::Tampered { .. }) => {
                assert!(e.is_tampering());
                let text = e.to_string();
                assert!(text.contains("c/s #1"), "{text}");
                assert!(text.contains("altered outside keyturn"), "{text}");
                assert!(!text.contains("secret-looking"), "{text}");
            }
            other => panic!("expected Tampered, got {other:?}"),
        }
    }
}
