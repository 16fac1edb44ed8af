//! The SQLite backend: one file, the default for a single operator.
//!
//! Schema (format version 1):
//!
//! - `meta (key PRIMARY KEY, value)`: `format_version = 1`.
//! - `events`: one row per envelope, `PRIMARY KEY (campaign, stream, sequence)`, a
//!   column per envelope field (`key_id_1`, `key_id_2` for the at most two access key
//!   ids, the payload as JSON text, `recorded_at` as fixed-width RFC 3339 text with
//!   microseconds so that text order is time order). Indexes on
//!   `(account_id, recorded_at)`, `(key_id_1)`, `(key_id_2)` and
//!   `(campaign, recorded_at)`.
//! - `campaigns (campaign PRIMARY KEY)`: written in the same transaction as a stream's
//!   first event, so listing campaigns reads an index of campaigns, not every event.
//!
//! Every query is answered from the primary key or an index (a unit test checks the
//! query plans). The file is in WAL mode with a busy timeout, so a second process
//! sharing it waits for the lock instead of failing. An append runs inside
//! `BEGIN IMMEDIATE`: it takes the write lock first, reads the fence stream's last
//! sequence when the write is fenced (nothing is written when it is past the fence),
//! reads the stream's last (sequence, hash), compares it with the expected version and
//! inserts the batch,
//! stamped with the journal's [`Clock`] (read inside the transaction). The connection
//! lives behind a mutex and every call runs on tokio's blocking pool.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{
    Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior, params,
};

use crate::clock::{Clock, stamp, system};
use crate::envelope::{
    Actor, Envelope, NewEvent, SchemaVersion, StreamId, parse_timestamp, seal_batch, text_range,
    validate_batch, validate_campaign, validate_fence, validate_many,
};
use crate::error::{JournalError, fenced, foreign_head};
use crate::hash::GENESIS_HASH;
use crate::{Append, FORMAT_VERSION, Fence, InitOutcome, Journal, StreamHead};

/// How long a call waits for another connection's lock on the file before giving up
/// with [`JournalError::Unavailable`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    campaign     TEXT    NOT NULL,
    stream       TEXT    NOT NULL,
    sequence     INTEGER NOT NULL,
    event_type   TEXT    NOT NULL,
    schema_major INTEGER NOT NULL,
    schema_minor INTEGER NOT NULL,
    payload      TEXT    NOT NULL,
    recorded_at  TEXT    NOT NULL,
    account_id   TEXT,
    user_name    TEXT,
    key_id_1     TEXT,
    key_id_2     TEXT,
    caller_arn   TEXT    NOT NULL,
    run_id       TEXT    NOT NULL,
    host         TEXT    NOT NULL,
    prev_hash    TEXT    NOT NULL,
    hash         TEXT    NOT NULL,
    PRIMARY KEY (campaign, stream, sequence)
);
CREATE INDEX IF NOT EXISTS events_by_account ON events (account_id, recorded_at);
CREATE INDEX IF NOT EXISTS events_by_key_1 ON events (key_id_1);
CREATE INDEX IF NOT EXISTS events_by_key_2 ON events (key_id_2);
CREATE INDEX IF NOT EXISTS events_by_campaign_time ON events (campaign, recorded_at);
CREATE TABLE IF NOT EXISTS campaigns (
    campaign TEXT NOT NULL PRIMARY KEY
);
";

/// The columns every event query selects, in the order [`envelope_from_row`] reads.
const COLUMNS: &str = "campaign, stream, sequence, event_type, schema_major, schema_minor, \
     payload, recorded_at, account_id, user_name, key_id_1, key_id_2, caller_arn, run_id, \
     host, prev_hash, hash";

const LAST_OF_STREAM: &str = "SELECT sequence, hash FROM events WHERE campaign = ?1 AND stream = ?2 \
     ORDER BY sequence DESC LIMIT 1";

const INSERT_EVENT: &str = "INSERT INTO events (campaign, stream, sequence, event_type, \
     schema_major, schema_minor, payload, recorded_at, account_id, user_name, key_id_1, \
     key_id_2, caller_arn, run_id, host, prev_hash, hash) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)";

fn select_stream() -> String {
    format!("SELECT {COLUMNS} FROM events WHERE campaign = ?1 AND stream = ?2 ORDER BY sequence")
}

fn select_campaign() -> String {
    format!("SELECT {COLUMNS} FROM events WHERE campaign = ?1 ORDER BY stream, sequence")
}

const SELECT_CAMPAIGNS: &str = "SELECT campaign FROM campaigns ORDER BY campaign";

fn select_access_key() -> String {
    format!(
        "SELECT {COLUMNS} FROM events WHERE key_id_1 = ?1 \
         UNION ALL SELECT {COLUMNS} FROM events WHERE key_id_2 = ?1 \
         ORDER BY recorded_at, campaign, stream, sequence"
    )
}

fn select_account() -> String {
    format!(
        "SELECT {COLUMNS} FROM events \
         WHERE account_id = ?1 AND recorded_at >= ?2 AND recorded_at < ?3 \
         ORDER BY recorded_at, campaign, stream, sequence"
    )
}

/// A journal in one SQLite file.
pub struct SqliteJournal {
    path: PathBuf,
    connection: Arc<Mutex<Connection>>,
    clock: Arc<dyn Clock>,
    /// Every call runs on the calling thread (see [`SqliteJournal::inline`]).
    inline: bool,
}

impl fmt::Debug for SqliteJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteJournal")
            .field("path", &self.path)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl SqliteJournal {
    /// Opens the journal in `path`, creating the file and its schema if needed.
    ///
    /// [`JournalError::Incompatible`] if the file was written by a newer keyturn.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, JournalError> {
        Self::open_with_clock(path, system()).await
    }

    /// [`SqliteJournal::open`], for a journal that stamps its events with `clock`'s time.
    pub async fn open_with_clock(
        path: impl AsRef<Path>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, JournalError> {
        let path = path.as_ref().to_path_buf();
        let (connection, _created) = blocking(&describe_path(&path), {
            let path = path.clone();
            move || open_connection(&path)
        })
        .await?;
        Ok(SqliteJournal {
            path,
            connection: Arc::new(Mutex::new(connection)),
            clock,
            inline: false,
        })
    }

    /// The same journal, running every call on the calling thread instead of tokio's
    /// blocking pool, for a deterministic simulation on a single-threaded runtime with
    /// paused time: a call on the pool leaves the runtime idle, and its paused clock
    /// would jump to the next timer while SQLite works, by however long that took. A
    /// call then blocks the runtime's thread: not for a multi-task production runtime.
    pub fn inline(mut self) -> Self {
        self.inline = true;
        self
    }

    /// Creates the file and its schema if needed; `created` tells whether this call did.
    pub async fn init(path: impl AsRef<Path>) -> Result<InitOutcome, JournalError> {
        let path = path.as_ref().to_path_buf();
        let (_connection, created) =
            blocking(&describe_path(&path), move || open_connection(&path)).await?;
        Ok(InitOutcome { created })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on the connection, on tokio's blocking pool.
    async fn with_connection<T, F>(&self, work: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &str) -> Result<T, JournalError> + Send + 'static,
    {
        let connection = Arc::clone(&self.connection);
        let backend = self.describe();
        let call = move || {
            let mut connection = connection.lock().map_err(|_| JournalError::Unexpected {
                backend: backend.clone(),
                detail: "a previous call panicked while holding the connection".into(),
            })?;
            work(&mut connection, &backend)
        };
        if self.inline {
            call()
        } else {
            blocking(&self.describe(), call).await
        }
    }
}

fn describe_path(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// Runs blocking work on tokio's blocking pool.
async fn blocking<T, F>(backend: &str, work: F) -> Result<T, JournalError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, JournalError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| JournalError::Unexpected {
            backend: backend.to_owned(),
            detail: format!("the journal's worker thread failed: {e}"),
        })?
}

/// Maps a SQLite error: a lock that outlasted the busy timeout is
/// [`JournalError::Unavailable`], everything else [`JournalError::Unexpected`].
fn sqlite_error(backend: &str, err: rusqlite::Error) -> JournalError {
    let busy = matches!(
        &err,
        rusqlite::Error::SqliteFailure(failure, _)
            if matches!(failure.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    );
    if busy {
        JournalError::Unavailable {
            backend: backend.to_owned(),
            detail: format!(
                "another process held the file locked for more than {} s ({err})",
                BUSY_TIMEOUT.as_secs()
            ),
        }
    } else {
        JournalError::Unexpected {
            backend: backend.to_owned(),
            detail: format!("SQLite error: {err}"),
        }
    }
}

/// Opens the file, sets WAL mode and the busy timeout, and creates or checks the
/// schema. Returns whether the schema was created by this call.
fn open_connection(path: &Path) -> Result<(Connection, bool), JournalError> {
    let backend = describe_path(path);
    let fail = |err| sqlite_error(&backend, err);
    let mut connection = Connection::open(path).map_err(|err| {
        JournalError::rejected(format!(
            "cannot open or create the journal file {}: {err}; check that its directory \
             exists and is writable",
            path.display()
        ))
    })?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
    let mode: String = connection
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|err| match &err {
            rusqlite::Error::SqliteFailure(failure, _)
                if failure.code == ErrorCode::NotADatabase =>
            {
                JournalError::rejected(format!(
                    "{} is not a SQLite database: choose another journal file",
                    path.display()
                ))
            }
            _ => fail(err),
        })?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(journal = %backend, mode, "SQLite did not switch the journal to WAL mode");
    }

    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    let has_meta: bool = transaction
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            [],
            |row| row.get::<_, i64>(0),
        )
        .map_err(fail)?
        > 0;
    let stored_version: Option<String> = if has_meta {
        transaction
            .query_row(
                "SELECT value FROM meta WHERE key = 'format_version'",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(fail)?
    } else {
        None
    };
    let created = match stored_version {
        Some(text) => {
            let found: u32 = text.parse().map_err(|_| JournalError::Corrupt {
                record: format!("meta format_version of {backend}"),
                detail: format!("`{}` is not a version number", text.escape_debug()),
            })?;
            if found > FORMAT_VERSION {
                return Err(JournalError::Incompatible {
                    location: backend.clone(),
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            false
        }
        None => {
            let other_tables: i64 = transaction
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' \
                     AND name NOT IN ('meta', 'events', 'campaigns')",
                    [],
                    |row| row.get(0),
                )
                .map_err(fail)?;
            if other_tables > 0 {
                return Err(JournalError::rejected(format!(
                    "{} is a SQLite database of another program (it has tables but no keyturn \
                     journal): choose another journal file",
                    path.display()
                )));
            }
            transaction
                .execute_batch(
                    "CREATE TABLE IF NOT EXISTS meta (key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL);",
                )
                .map_err(fail)?;
            transaction.execute_batch(SCHEMA).map_err(fail)?;
            transaction
                .execute(
                    "INSERT INTO meta (key, value) VALUES ('format_version', ?1)",
                    params![FORMAT_VERSION.to_string()],
                )
                .map_err(fail)?;
            true
        }
    };
    transaction.commit().map_err(fail)?;
    if created {
        tracing::info!(journal = %backend, "created the SQLite journal");
    }
    Ok((connection, created))
}

/// Converts a stored sequence (or schema number) to the signed integer SQLite keeps.
fn to_sql_integer(value: u64) -> Result<i64, JournalError> {
    i64::try_from(value)
        .map_err(|_| JournalError::rejected(format!("{value} is too large for the journal")))
}

/// Reads the stream's last (sequence, hash), or (0, genesis) for an empty stream.
fn last_of_stream(
    connection: &Connection,
    backend: &str,
    stream: &StreamId,
) -> Result<(u64, String), JournalError> {
    let last: Option<(i64, String)> = connection
        .query_row(
            LAST_OF_STREAM,
            params![stream.campaign(), stream.name()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(|err| sqlite_error(backend, err))?;
    match last {
        None => Ok((0, GENESIS_HASH.to_owned())),
        Some((sequence, hash)) => {
            let sequence = u64::try_from(sequence).map_err(|_| JournalError::Corrupt {
                record: format!("last event of {stream}"),
                detail: format!("its sequence {sequence} is negative"),
            })?;
            Ok((sequence, hash))
        }
    }
}

/// `Ok` when the fence holds (read inside the write's transaction): nothing follows
/// its version in its stream. [`JournalError::Fenced`] otherwise.
fn check_fence(
    transaction: &Transaction<'_>,
    backend: &str,
    fence: Option<&Fence>,
) -> Result<(), JournalError> {
    let Some(fence) = fence else {
        return Ok(());
    };
    let (version, _) = last_of_stream(transaction, backend, &fence.stream)?;
    if version > fence.version {
        return Err(fenced(fence));
    }
    Ok(())
}

/// Appends in one transaction at `expected_version`; with `expected_hash`, the stream's
/// last hash must be that one too (a caller's [`StreamHead`]). The read of the last
/// event is local and inside the transaction, so SQLite checks the head rather than
/// trusting it; so is the fence's.
#[allow(clippy::too_many_arguments)]
fn append_blocking(
    connection: &mut Connection,
    backend: &str,
    clock: &dyn Clock,
    stream: &StreamId,
    expected_version: u64,
    expected_hash: Option<&str>,
    events: Vec<NewEvent>,
    fence: Option<&Fence>,
) -> Result<StreamHead, JournalError> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|err| sqlite_error(backend, err))?;
    check_fence(&transaction, backend, fence)?;
    let head = append_in(
        &transaction,
        backend,
        stream,
        expected_version,
        expected_hash,
        events,
        stamp(clock),
    )??;
    transaction
        .commit()
        .map_err(|err| sqlite_error(backend, err))?;
    Ok(head)
}

/// Appends to several streams in one transaction: each stream's batch at its head, or
/// not at all when the stream is elsewhere. A failed fence or a storage failure writes
/// nothing and is every append's.
fn append_many_blocking(
    connection: &mut Connection,
    backend: &str,
    clock: &dyn Clock,
    appends: Vec<Append>,
    fence: Option<&Fence>,
) -> Vec<Result<StreamHead, JournalError>> {
    let count = appends.len();
    let written = (|| {
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|err| sqlite_error(backend, err))?;
        check_fence(&transaction, backend, fence)?;
        let now = stamp(clock);
        let results = appends
            .into_iter()
            .map(|append| append_at_in(&transaction, backend, append, now))
            .collect::<Result<Vec<_>, _>>()?;
        transaction
            .commit()
            .map_err(|err| sqlite_error(backend, err))?;
        Ok(results)
    })();
    written.unwrap_or_else(|e: JournalError| vec![Err(e); count])
}

/// Appends to several streams in one transaction, all or none: a failed fence, the
/// first append that fails or a storage failure rolls the whole transaction back.
fn append_all_blocking(
    connection: &mut Connection,
    backend: &str,
    clock: &dyn Clock,
    appends: Vec<Append>,
    fence: Option<&Fence>,
) -> Result<Vec<StreamHead>, JournalError> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|err| sqlite_error(backend, err))?;
    check_fence(&transaction, backend, fence)?;
    let now = stamp(clock);
    let mut heads = Vec::with_capacity(appends.len());
    for append in appends {
        // Dropping the transaction on an error rolls it back.
        heads.push(append_at_in(&transaction, backend, append, now)??);
    }
    transaction
        .commit()
        .map_err(|err| sqlite_error(backend, err))?;
    Ok(heads)
}

/// [`append_in`] at the head a group's append names.
fn append_at_in(
    transaction: &Transaction<'_>,
    backend: &str,
    append: Append,
    now: DateTime<Utc>,
) -> Result<Result<StreamHead, JournalError>, JournalError> {
    append_in(
        transaction,
        backend,
        &append.stream,
        append.head.version(),
        Some(append.head.hash()),
        append.events,
        now,
    )
}

/// One stream's append inside an open transaction, its events recorded at `now`. The
/// outer error is the storage's (roll the transaction back); the inner one is this
/// stream's alone (a conflict, a foreign head), and nothing of it was written.
fn append_in(
    transaction: &Transaction<'_>,
    backend: &str,
    stream: &StreamId,
    expected_version: u64,
    expected_hash: Option<&str>,
    events: Vec<NewEvent>,
    now: DateTime<Utc>,
) -> Result<Result<StreamHead, JournalError>, JournalError> {
    let fail = |err| sqlite_error(backend, err);
    let (actual, prev_hash) = last_of_stream(transaction, backend, stream)?;
    if actual != expected_version {
        return Ok(Err(JournalError::Conflict {
            stream: stream.clone(),
            expected: expected_version,
            actual,
        }));
    }
    if let Some(expected_hash) = expected_hash
        && expected_hash != prev_hash
    {
        return Ok(Err(foreign_head(stream, expected_version)));
    }
    let sealed = match seal_batch(stream, expected_version, &prev_hash, events, now) {
        Ok(sealed) => sealed,
        Err(e) => return Ok(Err(e)),
    };
    {
        let mut insert = transaction.prepare_cached(INSERT_EVENT).map_err(fail)?;
        for event in &sealed {
            let payload = serde_json::to_string(&event.payload).map_err(|e| {
                JournalError::rejected(format!(
                    "the payload of {} cannot be serialised: {e}",
                    event.label()
                ))
            })?;
            insert
                .execute(params![
                    event.campaign,
                    event.stream.name(),
                    to_sql_integer(event.sequence)?,
                    event.event_type,
                    event.schema_version.major,
                    event.schema_version.minor,
                    payload,
                    event.recorded_at_text(),
                    event.account_id,
                    event.user_name,
                    event.access_key_ids.first(),
                    event.access_key_ids.get(1),
                    event.actor.caller_arn,
                    event.actor.run_id,
                    event.actor.host,
                    event.prev_hash,
                    event.hash,
                ])
                .map_err(fail)?;
        }
    }
    if expected_version == 0 {
        transaction
            .execute(
                "INSERT OR IGNORE INTO campaigns (campaign) VALUES (?1)",
                params![stream.campaign()],
            )
            .map_err(fail)?;
    }
    Ok(Ok(StreamHead::after(&sealed)))
}

/// Runs an event query and converts every row.
fn query_events(
    connection: &Connection,
    backend: &str,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<Envelope>, JournalError> {
    let fail = |err| sqlite_error(backend, err);
    let mut statement = connection.prepare_cached(sql).map_err(fail)?;
    let mut rows = statement.query(params).map_err(fail)?;
    let mut events = Vec::new();
    while let Some(row) = rows.next().map_err(fail)? {
        events.push(envelope_from_row(row).map_err(JournalError::in_event)?);
    }
    Ok(events)
}

/// Converts one row selected with [`COLUMNS`] into an envelope.
fn envelope_from_row(row: &Row<'_>) -> Result<Envelope, JournalError> {
    let campaign: String = column(row, 0, "campaign", "event row")?;
    let stream_name: String = column(row, 1, "stream", "event row")?;
    let sequence: i64 = column(row, 2, "sequence", "event row")?;
    let record = format!("{campaign}/{stream_name} #{sequence}");
    let corrupt = |detail: String| JournalError::Corrupt {
        record: record.clone(),
        detail,
    };
    let stream = StreamId::new(campaign.clone(), stream_name)
        .map_err(|e| corrupt(format!("its stream id is invalid: {e}")))?;
    let sequence =
        u64::try_from(sequence).map_err(|_| corrupt("its sequence is negative".into()))?;
    let payload_text: String = column(row, 6, "payload", &record)?;
    let payload = serde_json::from_str(&payload_text).map_err(|e| {
        corrupt(format!(
            "its payload is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let recorded_at_text: String = column(row, 7, "recorded_at", &record)?;
    let key_1: Option<String> = column(row, 10, "key_id_1", &record)?;
    let key_2: Option<String> = column(row, 11, "key_id_2", &record)?;
    Ok(Envelope {
        stream,
        sequence,
        event_type: column(row, 3, "event_type", &record)?,
        schema_version: SchemaVersion {
            major: column(row, 4, "schema_major", &record)?,
            minor: column(row, 5, "schema_minor", &record)?,
        },
        payload,
        recorded_at: parse_timestamp(&recorded_at_text).map_err(corrupt)?,
        campaign,
        account_id: column(row, 8, "account_id", &record)?,
        user_name: column(row, 9, "user_name", &record)?,
        access_key_ids: key_1.into_iter().chain(key_2).collect(),
        actor: Actor {
            caller_arn: column(row, 12, "caller_arn", &record)?,
            run_id: column(row, 13, "run_id", &record)?,
            host: column(row, 14, "host", &record)?,
        },
        prev_hash: column(row, 15, "prev_hash", &record)?,
        hash: column(row, 16, "hash", &record)?,
    })
}

fn column<T: rusqlite::types::FromSql>(
    row: &Row<'_>,
    index: usize,
    name: &str,
    record: &str,
) -> Result<T, JournalError> {
    row.get(index).map_err(|e| JournalError::Corrupt {
        record: record.to_owned(),
        detail: format!("its column {name} cannot be read: {e}"),
    })
}

#[async_trait]
impl Journal for SqliteJournal {
    async fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<u64, JournalError> {
        validate_batch(&events)?;
        let stream = stream.clone();
        let count = events.len();
        let clock = Arc::clone(&self.clock);
        let head = self
            .with_connection(move |connection, backend| {
                append_blocking(
                    connection,
                    backend,
                    clock.as_ref(),
                    &stream,
                    expected_version,
                    None,
                    events,
                    None,
                )
            })
            .await?;
        let version = head.version();
        tracing::debug!(journal = %self.describe(), expected_version, count, version, "appended");
        Ok(version)
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
        let stream = stream.clone();
        let count = events.len();
        let expected = head.clone();
        let fence = fence.cloned();
        let clock = Arc::clone(&self.clock);
        let head = self
            .with_connection(move |connection, backend| {
                append_blocking(
                    connection,
                    backend,
                    clock.as_ref(),
                    &stream,
                    expected.version(),
                    Some(expected.hash()),
                    events,
                    fence.as_ref(),
                )
            })
            .await?;
        let version = head.version();
        tracing::debug!(journal = %self.describe(), count, version, "appended at a known head");
        Ok(head)
    }

    async fn append_many_fenced(
        &self,
        appends: Vec<Append>,
        fence: Option<&Fence>,
    ) -> Vec<Result<StreamHead, JournalError>> {
        let count = appends.len();
        if let Err(e) = validate_many(&appends, fence) {
            return vec![Err(e); count];
        }
        let fence = fence.cloned();
        let clock = Arc::clone(&self.clock);
        let results = self
            .with_connection(move |connection, backend| {
                Ok(append_many_blocking(
                    connection,
                    backend,
                    clock.as_ref(),
                    appends,
                    fence.as_ref(),
                ))
            })
            .await
            .unwrap_or_else(|e| vec![Err(e); count]);
        tracing::debug!(journal = %self.describe(), count, "appended to several streams");
        results
    }

    async fn append_all_fenced(
        &self,
        appends: Vec<Append>,
        fence: Option<&Fence>,
    ) -> Result<Vec<StreamHead>, JournalError> {
        validate_many(&appends, fence)?;
        let count = appends.len();
        let fence = fence.cloned();
        let clock = Arc::clone(&self.clock);
        let heads = self
            .with_connection(move |connection, backend| {
                append_all_blocking(connection, backend, clock.as_ref(), appends, fence.as_ref())
            })
            .await?;
        tracing::debug!(journal = %self.describe(), count, "appended to several streams, all or none");
        Ok(heads)
    }

    async fn read_stream(&self, stream: &StreamId) -> Result<Vec<Envelope>, JournalError> {
        let stream = stream.clone();
        self.with_connection(move |connection, backend| {
            query_events(
                connection,
                backend,
                &select_stream(),
                params![stream.campaign(), stream.name()],
            )
        })
        .await
    }

    async fn read_campaign(&self, campaign: &str) -> Result<Vec<Envelope>, JournalError> {
        validate_campaign(campaign)?;
        let campaign = campaign.to_owned();
        self.with_connection(move |connection, backend| {
            query_events(connection, backend, &select_campaign(), params![campaign])
        })
        .await
    }

    async fn list_campaigns(&self) -> Result<Vec<String>, JournalError> {
        self.with_connection(|connection, backend| {
            let fail = |err| sqlite_error(backend, err);
            let mut statement = connection.prepare_cached(SELECT_CAMPAIGNS).map_err(fail)?;
            let campaigns = statement
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(fail)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(fail)?;
            Ok(campaigns)
        })
        .await
    }

    async fn events_for_access_key(
        &self,
        access_key_id: &str,
    ) -> Result<Vec<Envelope>, JournalError> {
        let key = access_key_id.to_owned();
        self.with_connection(move |connection, backend| {
            query_events(connection, backend, &select_access_key(), params![key])
        })
        .await
    }

    async fn events_for_account(
        &self,
        account_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Envelope>, JournalError> {
        let Some((from, to)) = text_range(from, to) else {
            return Ok(Vec::new());
        };
        let account = account_id.to_owned();
        self.with_connection(move |connection, backend| {
            query_events(
                connection,
                backend,
                &select_account(),
                params![account, from, to],
            )
        })
        .await
    }

    fn describe(&self) -> String {
        describe_path(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the invariant that no query reads the whole events table.
    #[test]
    fn every_query_uses_the_primary_key_or_an_index() {
        let directory = tempfile::tempdir().unwrap();
        let (connection, created) = open_connection(&directory.path().join("j.db")).unwrap();
        assert!(created);
        for sql in [
            select_stream(),
            select_campaign(),
            select_access_key(),
            select_account(),
            LAST_OF_STREAM.to_owned(),
            SELECT_CAMPAIGNS.to_owned(),
        ] {
            let parameter_count = (1..=3).filter(|i| sql.contains(&format!("?{i}"))).count();
            let mut statement = connection
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let values = vec!["x"; parameter_count];
            let plan: Vec<String> = statement
                .query_map(rusqlite::params_from_iter(values), |row| {
                    row.get::<_, String>(3)
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            for step in &plan {
                let full_table_scan = step.starts_with("SCAN events") && !step.contains("INDEX");
                assert!(!full_table_scan, "{sql}\nplan: {plan:?}");
            }
        }
    }

    #[test]
    fn a_newer_format_version_is_refused_and_an_unknown_database_too() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("j.db");
        let (connection, _) = open_connection(&path).unwrap();
        connection
            .execute(
                "UPDATE meta SET value = '2' WHERE key = 'format_version'",
                [],
            )
            .unwrap();
        drop(connection);
        let err = open_connection(&path).unwrap_err();
        assert!(
            matches!(
                err,
                JournalError::Incompatible {
                    found: 2,
                    supported: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("upgrade keyturn"), "{err}");

        let other = directory.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE notes (text TEXT);")
            .unwrap();
        let err = open_connection(&other).unwrap_err();
        assert!(matches!(err, JournalError::Rejected(_)), "{err}");
    }
}
