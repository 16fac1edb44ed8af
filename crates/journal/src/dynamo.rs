//! The DynamoDB backend: one table shared by every operator and worker of an
//! organisation.
//!
//! # Table layout (format version 1)
//!
//! One on-demand (`PAY_PER_REQUEST`) table with a string partition key `pk` and a
//! string sort key `sk`. Item families, told apart by `pk`:
//!
//! | `pk` | `sk` | what |
//! |---|---|---|
//! | `C#<campaign>` | `E#<stream name>#<sequence, 20 digits>` | one event (envelope) |
//! | `CAMPAIGNS` | `<campaign>` | the campaign index: one item per campaign with events |
//! | `META` | `format` | `format_version` (a number), written by `keyturn journal init` |
//! | `L#<campaign>` | (reserved) | leases of a campaign's workers, to come |
//!
//! A campaign is one partition: reading a stream is a consistent Query
//! `pk = :c AND begins_with(sk, "E#<stream>#")`, reading a whole campaign is
//! `begins_with(sk, "E#")`, both paginated with `LastEvaluatedKey`. `#` cannot occur
//! in campaign or stream names, so one stream's prefix never matches another stream.
//! Leases will live in their own `L#` partitions so that reading a campaign's events
//! never reads them.
//!
//! Event attributes: `campaign`, `stream`, `seq` (N), `event_type`, `schema_major`
//! (N), `schema_minor` (N), `payload` (the JSON text), `recorded_at` (RFC 3339 with
//! microseconds), `account_id`, `user_name`, `key_id_1`, `key_id_2` (absent when the
//! event has none: the indexes are sparse), `caller_arn`, `run_id`, `host`, `prev_hash`,
//! `hash`, and `at` = `<recorded_at>#<campaign>#<stream>#<sequence, 20 digits>`, the
//! sort key of the global secondary indexes (all with projection ALL):
//! `by_account (account_id, at)`, `by_key_1 (key_id_1, at)`, `by_key_2 (key_id_2, at)`.
//! The audit queries read those indexes only; nothing ever scans the table. Index reads
//! are eventually consistent, as DynamoDB offers no consistent reads on a GSI.
//!
//! # Appending
//!
//! [`Journal::append_at`] is given the stream's head (version and last hash) by a caller
//! that read the stream or appended to it, and reads nothing: events are immutable, so
//! while the stream is at that version its last hash is the head's, and the write's
//! conditions refuse it if the stream has moved. [`Journal::append`] reads the event at
//! the expected version with a consistent GetItem first (its hash is the new batch's
//! `prev_hash`; if it is missing the stream is elsewhere, and a consistent Query for the
//! last event gives the actual version). A stream's first append also writes the
//! campaign index item unless the campaign is known to be listed (one consistent GetItem
//! per campaign and process; the index is never deleted from). The new events are
//! written with `attribute_not_exists(pk)` conditions: a single event with a
//! conditional PutItem, a batch (or the first batch of a campaign, which also writes
//! the campaign index item) with one TransactWriteItems. A failed condition means
//! another writer took the sequence: [`JournalError::Conflict`] with the actual
//! version, unless the item found there is the very event this call wrote (a retried
//! request whose first answer was lost), which counts as success. Transactions carry
//! a client request token digested from the hashes of the events they write, so
//! DynamoDB applies a retried transaction once. A group append (`append_many`) writes
//! several streams' batches in one transaction; the cancellation reasons name the items
//! whose condition failed, those streams are resolved alone, and the others go again.
//!
//! A fenced write ([`crate::Fence`]) carries one more transaction item: a
//! ConditionCheck with `attribute_not_exists(pk)` on the fence stream's event item after
//! the fence's version (`C#<campaign>` / `E#<stream>#<version + 1>`), so a fenced single
//! event is a TransactWriteItems rather than a PutItem. When one of the write's own
//! events goes in that very place (an append to the fence's stream at the fence's
//! version), its condition is the same and is the fence: no ConditionCheck, as
//! DynamoDB refuses two operations on one item of a transaction (one such event alone
//! is a PutItem). The cancellation reasons tell the fence's failure (its check's, or
//! that event's) from the streams' own: then nothing was written and every append of
//! the write is [`JournalError::Fenced`], unless an event of the write is found in
//! place with its own hash (the write applied once already, its answer lost). With the
//! campaign index item, a transaction holds at most
//! [`MAX_EVENTS_PER_APPEND`] + 2 = 25 items, the limit of older DynamoDB.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::RequestId;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, GlobalSecondaryIndex,
    GlobalSecondaryIndexDescription, IndexStatus, KeySchemaElement, KeyType, Projection,
    ProjectionType, Put, ScalarAttributeType, TableDescription, TableStatus, TransactWriteItem,
};
use chrono::{DateTime, Utc};

use crate::clock::{Clock, stamp, system};
use crate::envelope::{
    Actor, Envelope, MAX_EVENTS_PER_APPEND, NewEvent, SchemaVersion, StreamId, parse_timestamp,
    seal_batch, text_range, validate_batch, validate_campaign, validate_fence, validate_many,
};
use crate::error::{JournalError, fenced};
use crate::hash::GENESIS_HASH;
use crate::location::validate_table_name;
use crate::{
    Append, FORMAT_VERSION, Fence, InitOutcome, Journal, StreamHead, patient_retry_config,
};

/// An attribute map, as the SDK passes items.
type Item = HashMap<String, AttributeValue>;

const PK: &str = "pk";
const SK: &str = "sk";
const AT: &str = "at";
const ACCOUNT_ID: &str = "account_id";
const KEY_ID_1: &str = "key_id_1";
const KEY_ID_2: &str = "key_id_2";

const META_PK: &str = "META";
const META_SK: &str = "format";
const CAMPAIGNS_PK: &str = "CAMPAIGNS";
const EVENT_SK_PREFIX: &str = "E#";

/// The global secondary indexes: (name, partition key attribute). All sort on `at`.
const INDEXES: [(&str, &str); 3] = [
    ("by_account", ACCOUNT_ID),
    ("by_key_1", KEY_ID_1),
    ("by_key_2", KEY_ID_2),
];

/// The most items of one TransactWriteItems in older DynamoDB (and the most this backend
/// sends): the events of an append, the campaign index item and the fence's check.
const MAX_TRANSACTION_ITEMS: usize = 25;
const _: () = assert!(MAX_EVENTS_PER_APPEND + 2 <= MAX_TRANSACTION_ITEMS);

/// How often a transaction that collided with another transaction on the campaign
/// index item is tried before the append reports [`JournalError::Unavailable`].
const TRANSACTION_ATTEMPTS: u32 = 5;

/// How long `init` waits for a new table to become ACTIVE.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(600);

/// How often `init` polls a table that is not ACTIVE yet.
const ACTIVE_POLL: Duration = Duration::from_secs(2);

/// AWS error codes that mean "retry later".
const RETRYABLE_CODES: [&str; 9] = [
    "ThrottlingException",
    "Throttling",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "InternalServerError",
    "ServiceUnavailable",
    "LimitExceededException",
    "TransactionInProgressException",
];

/// A journal in one DynamoDB table.
#[derive(Clone)]
pub struct DynamoJournal {
    client: Client,
    table: String,
    page_size: Option<i32>,
    /// Campaigns known to be in the campaign index (read there, written there, or seen
    /// with events, which are written with it). The index is never deleted from, so a
    /// campaign once known stays known and a stream's first append needs no read of it.
    listed: Arc<Mutex<HashSet<String>>>,
    /// What events (and the format record) are stamped with.
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for DynamoJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoJournal")
            .field("table", &self.table)
            .field("page_size", &self.page_size)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// A client built from `sdk` with [`patient_retry_config`]: a journal write that fails
/// mid-rotation fails the account's turn after its mutation was made, so the next run
/// redoes work (a replacement whose secret was only in this run's memory is deleted and
/// created again).
fn patient_client(sdk: &aws_config::SdkConfig) -> Client {
    Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(sdk)
            .retry_config(patient_retry_config())
            .build(),
    )
}

impl DynamoJournal {
    /// Opens the journal in `table`, with a client built from `sdk` whose retries are
    /// [`patient_retry_config`]'s.
    ///
    /// [`JournalError::NotInitialised`] if the table or its format record is missing,
    /// [`JournalError::Incompatible`] if a newer keyturn wrote it.
    pub async fn open(sdk: &aws_config::SdkConfig, table: &str) -> Result<Self, JournalError> {
        Self::open_with_client(patient_client(sdk), table).await
    }

    /// Opens the journal in `table` with the given client.
    pub async fn open_with_client(client: Client, table: &str) -> Result<Self, JournalError> {
        let journal = Self::unchecked(client, table)?;
        match journal.stored_format_version().await? {
            None => Err(JournalError::NotInitialised {
                location: journal.describe(),
                detail: "the table has no format record".into(),
            }),
            Some(_) => Ok(journal),
        }
    }

    /// Creates the table (on-demand capacity, deletion protection on, the three
    /// indexes), waits until it is ACTIVE and records the format version. Idempotent:
    /// an existing table laid out as a journal is accepted; another layout is refused
    /// with the difference named.
    pub async fn init(
        sdk: &aws_config::SdkConfig,
        table: &str,
    ) -> Result<InitOutcome, JournalError> {
        Self::init_with_client(patient_client(sdk), table).await
    }

    /// [`DynamoJournal::init`] with the given client.
    pub async fn init_with_client(
        client: Client,
        table: &str,
    ) -> Result<InitOutcome, JournalError> {
        let journal = Self::unchecked(client, table)?;
        let created = journal.create_table_if_missing().await?;
        let description = journal.wait_until_active().await?;
        check_table_layout(&journal.table, &description)?;
        journal.write_format_record().await?;
        Ok(InitOutcome { created })
    }

    /// Sets the most items one Query page returns (DynamoDB's default is 1 MB of
    /// items). Tests use a small page to exercise pagination.
    pub fn with_page_size(mut self, items: i32) -> Self {
        self.page_size = Some(items.max(1));
        self
    }

    /// Stamps the events this handle appends with `clock`'s time instead of the system
    /// clock's.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The table's name.
    pub fn table_name(&self) -> &str {
        &self.table
    }

    fn unchecked(client: Client, table: &str) -> Result<Self, JournalError> {
        validate_table_name(table)?;
        Ok(DynamoJournal {
            client,
            table: table.to_owned(),
            page_size: None,
            listed: Arc::default(),
            clock: system(),
        })
    }

    // ----- Errors -----

    /// Maps an SDK error, keeping the AWS error code in the message.
    fn sdk_error<E>(&self, operation: &str, err: SdkError<E>) -> JournalError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let code = err.code().map(str::to_owned);
        let status = err
            .raw_response()
            .map(|response| response.status().as_u16());
        let detail = format!("{operation} failed: {}", describe_sdk_error(&err));
        let backend = self.describe();
        match &err {
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => JournalError::Unavailable { backend, detail },
            SdkError::ServiceError(_) => match code.as_deref() {
                Some("ResourceNotFoundException") => JournalError::NotInitialised {
                    location: backend,
                    detail: format!("the table does not exist; {detail}"),
                },
                Some(code) if RETRYABLE_CODES.contains(&code) => {
                    JournalError::Unavailable { backend, detail }
                }
                _ if status.is_some_and(|status| status >= 500) => {
                    JournalError::Unavailable { backend, detail }
                }
                _ => JournalError::Unexpected { backend, detail },
            },
            _ => JournalError::Unexpected { backend, detail },
        }
    }

    fn corrupt(&self, record: String, detail: impl Into<String>) -> JournalError {
        JournalError::Corrupt {
            record: format!("{record} in {}", self.describe()),
            detail: detail.into(),
        }
    }

    fn build_error(&self, what: &str, err: impl fmt::Display) -> JournalError {
        JournalError::Unexpected {
            backend: self.describe(),
            detail: format!("cannot build the {what} request: {err}"),
        }
    }

    // ----- Meta and table management -----

    /// Reads the format record: `None` if it is missing.
    async fn stored_format_version(&self) -> Result<Option<u32>, JournalError> {
        let answer = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(META_PK))
            .key(SK, s(META_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| {
                if err.code() == Some("ValidationException") {
                    JournalError::rejected(format!(
                        "the DynamoDB table {} exists but is not a keyturn journal (it has \
                         another key schema): choose another table name ({})",
                        self.table,
                        describe_sdk_error(&err)
                    ))
                } else {
                    self.sdk_error("GetItem of the format record", err)
                }
            })?;
        let Some(item) = answer.item else {
            return Ok(None);
        };
        let record = format!("{META_PK}/{META_SK}");
        let found: u32 = number(&item, "format_version")
            .map_err(|detail| self.corrupt(record.clone(), detail))?;
        if found == 0 {
            return Err(self.corrupt(record, "format_version is 0"));
        }
        if found > FORMAT_VERSION {
            return Err(JournalError::Incompatible {
                location: self.describe(),
                found,
                supported: FORMAT_VERSION,
            });
        }
        Ok(Some(found))
    }

    /// Writes the format record unless it exists; refuses a newer existing one.
    async fn write_format_record(&self) -> Result<(), JournalError> {
        let written = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PK, s(META_PK))
            .item(SK, s(META_SK))
            .item(
                "format_version",
                AttributeValue::N(FORMAT_VERSION.to_string()),
            )
            .item("created_at", s(&stamp(self.clock.as_ref()).to_rfc3339()))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await;
        match written {
            Ok(_) => {
                tracing::info!(journal = %self.describe(), "recorded the journal format version");
                Ok(())
            }
            Err(err) if err.code() == Some("ConditionalCheckFailedException") => {
                self.stored_format_version().await.map(drop)
            }
            Err(err) => Err(self.sdk_error("PutItem of the format record", err)),
        }
    }

    /// Creates the table; returns false if it already exists.
    async fn create_table_if_missing(&self) -> Result<bool, JournalError> {
        match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(_) => return Ok(false),
            Err(err) if err.code() == Some("ResourceNotFoundException") => {}
            Err(err) => return Err(self.sdk_error("DescribeTable", err)),
        }
        let key = |name: &str, key_type: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(key_type)
                .build()
                .map_err(|e| self.build_error("CreateTable", e))
        };
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| self.build_error("CreateTable", e))
        };
        let mut request = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .deletion_protection_enabled(true)
            .key_schema(key(PK, KeyType::Hash)?)
            .key_schema(key(SK, KeyType::Range)?);
        for name in [PK, SK, AT, ACCOUNT_ID, KEY_ID_1, KEY_ID_2] {
            request = request.attribute_definitions(attribute(name)?);
        }
        for (index, partition) in INDEXES {
            request = request.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(index)
                    .key_schema(key(partition, KeyType::Hash)?)
                    .key_schema(key(AT, KeyType::Range)?)
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::All)
                            .build(),
                    )
                    .build()
                    .map_err(|e| self.build_error("CreateTable", e))?,
            );
        }
        match request.send().await {
            Ok(_) => {
                tracing::info!(journal = %self.describe(), "created the DynamoDB table");
                Ok(true)
            }
            // Another `init` created it in the meantime.
            Err(err) if err.code() == Some("ResourceInUseException") => Ok(false),
            Err(err) => Err(self.sdk_error("CreateTable", err)),
        }
    }

    /// Polls the table until it and its indexes are ACTIVE.
    async fn wait_until_active(&self) -> Result<TableDescription, JournalError> {
        let started = Instant::now();
        loop {
            let description = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|err| self.sdk_error("DescribeTable", err))?
                .table
                .ok_or_else(|| JournalError::Unexpected {
                    backend: self.describe(),
                    detail: "DescribeTable answered without a table description".into(),
                })?;
            let table_active = description.table_status() == Some(&TableStatus::Active);
            let indexes_active = description
                .global_secondary_indexes()
                .iter()
                .all(|index| index.index_status() == Some(&IndexStatus::Active));
            if table_active && indexes_active {
                return Ok(description);
            }
            if description.table_status() == Some(&TableStatus::Deleting) {
                return Err(JournalError::rejected(format!(
                    "the DynamoDB table {} is being deleted: wait for the deletion to finish \
                     and run `keyturn journal init` again",
                    self.table
                )));
            }
            if started.elapsed() > ACTIVE_TIMEOUT {
                return Err(JournalError::Unavailable {
                    backend: self.describe(),
                    detail: format!(
                        "the table did not become ACTIVE within {} s; run `keyturn journal \
                         init` again later",
                        ACTIVE_TIMEOUT.as_secs()
                    ),
                });
            }
            tokio::time::sleep(ACTIVE_POLL).await;
        }
    }

    // ----- Reading -----

    /// Runs a Query to its last page.
    async fn query_all(
        &self,
        what: &str,
        query: impl Fn() -> QueryFluentBuilder,
    ) -> Result<Vec<Item>, JournalError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = query()
                .set_limit(self.page_size)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|err| self.sdk_error(what, err))?;
            items.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    /// A consistent Query over the event items of a campaign whose sort key starts
    /// with `prefix`.
    fn events_query(&self, campaign: &str, prefix: String) -> QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", s(&campaign_pk(campaign)))
            .expression_attribute_values(":prefix", s(&prefix))
    }

    /// The stream's version: the sequence of its last event, 0 if it has none.
    async fn current_version(&self, stream: &StreamId) -> Result<u64, JournalError> {
        let answer = self
            .events_query(stream.campaign(), stream_prefix(stream))
            .scan_index_forward(false)
            .limit(1)
            .projection_expression("#pk, #sk")
            .send()
            .await
            .map_err(|err| self.sdk_error("Query of the stream's last event", err))?;
        let Some(item) = answer.items.unwrap_or_default().into_iter().next() else {
            return Ok(0);
        };
        // The sort key is authoritative: it is what the conditions guard.
        text(&item, SK)
            .ok()
            .and_then(|sk| sk.strip_prefix(&stream_prefix(stream)))
            .and_then(|digits| digits.parse().ok())
            .ok_or_else(|| self.corrupt(item_label(&item), "its sort key holds no sequence"))
    }

    /// Reads one event item with a consistent GetItem.
    async fn get_event(
        &self,
        stream: &StreamId,
        sequence: u64,
    ) -> Result<Option<Item>, JournalError> {
        self.client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(&campaign_pk(stream.campaign())))
            .key(SK, s(&event_sk(stream, sequence)))
            .consistent_read(true)
            .send()
            .await
            .map(|answer| answer.item)
            .map_err(|err| self.sdk_error("GetItem of an event", err))
    }

    fn known_listed(&self, campaign: &str) -> bool {
        self.listed
            .lock()
            .is_ok_and(|listed| listed.contains(campaign))
    }

    fn remember_listed(&self, campaign: &str) {
        if let Ok(mut listed) = self.listed.lock() {
            listed.insert(campaign.to_owned());
        }
    }

    /// Whether the campaign index already lists the campaign (read once per campaign
    /// and process: the index is never deleted from).
    async fn campaign_listed(&self, campaign: &str) -> Result<bool, JournalError> {
        if self.known_listed(campaign) {
            return Ok(true);
        }
        let listed = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(CAMPAIGNS_PK))
            .key(SK, s(campaign))
            .consistent_read(true)
            .projection_expression("#pk")
            .expression_attribute_names("#pk", PK)
            .send()
            .await
            .map(|answer| answer.item.is_some())
            .map_err(|err| self.sdk_error("GetItem of the campaign index", err))?;
        if listed {
            self.remember_listed(campaign);
        }
        Ok(listed)
    }

    fn envelopes(&self, items: &[Item]) -> Result<Vec<Envelope>, JournalError> {
        items
            .iter()
            .map(|item| {
                envelope_from_item(item)
                    .map_err(|detail| self.corrupt(item_label(item), detail).in_event())
            })
            .collect()
    }

    /// Queries one index for a partition key value (and optionally an `at` range).
    async fn query_index(
        &self,
        index: &str,
        partition: &str,
        value: &str,
        range: Option<&(String, String)>,
    ) -> Result<Vec<Envelope>, JournalError> {
        let items = self
            .query_all(&format!("Query of index {index}"), || {
                let query = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(index)
                    .expression_attribute_names("#key", partition)
                    .expression_attribute_values(":key", s(value));
                match range {
                    None => query.key_condition_expression("#key = :key"),
                    Some((from, to)) => query
                        .key_condition_expression("#key = :key AND #at BETWEEN :from AND :to")
                        .expression_attribute_names("#at", AT)
                        .expression_attribute_values(":from", s(from))
                        .expression_attribute_values(":to", s(to)),
                }
            })
            .await?;
        self.envelopes(&items)
    }

    // ----- Writing -----

    /// Writes one sealed batch (`campaign`: with the campaign index item), on condition
    /// of `fence`; on a failed condition, tells our own earlier write from another
    /// writer's.
    async fn write_batch(
        &self,
        sealed: Vec<Envelope>,
        campaign: Option<&str>,
        fence: Option<&Fence>,
    ) -> Result<StreamHead, JournalError> {
        let mut results = [None];
        self.write_group(vec![(0, sealed)], campaign, fence, &mut results)
            .await;
        let [result] = results;
        let head = result.unwrap_or_else(|| Err(self.no_outcome()))?;
        if let Some(campaign) = campaign {
            self.remember_listed(campaign);
        }
        Ok(head)
    }

    fn no_outcome(&self) -> JournalError {
        JournalError::Unexpected {
            backend: self.describe(),
            detail: "a write left an append without an outcome".into(),
        }
    }

    /// Writes several streams' sealed batches (each with its index in `results`) in one
    /// request, and again without the streams whose condition failed (each resolved as
    /// [`resolve_condition_failure`](Self::resolve_condition_failure) does) until every
    /// batch has its outcome. `campaign`: the campaign index item to write with them.
    /// Every request carries `fence`; once it fails, every batch not written yet is
    /// [`JournalError::Fenced`].
    async fn write_group(
        &self,
        mut sealed: Vec<(usize, Vec<Envelope>)>,
        mut campaign: Option<&str>,
        fence: Option<&Fence>,
        results: &mut [Option<Result<StreamHead, JournalError>>],
    ) {
        while !sealed.is_empty() {
            match self.attempt(&sealed, campaign, fence).await {
                Attempt::Written => {
                    if let Some(campaign) = campaign {
                        self.remember_listed(campaign);
                    }
                    for (index, batch) in sealed.drain(..) {
                        results[index] = Some(Ok(StreamHead::after(&batch)));
                    }
                }
                Attempt::Refused(e) => {
                    for (index, _) in sealed.drain(..) {
                        results[index] = Some(Err(e.clone()));
                    }
                }
                Attempt::Failed(failed) => {
                    // Nothing was written, and the fence held. The batches that failed
                    // their condition are resolved (written by a lost earlier answer, or
                    // a conflict); the others go again.
                    let mut remaining = Vec::new();
                    for (position, (index, batch)) in sealed.drain(..).enumerate() {
                        if !failed.contains(&position) {
                            remaining.push((index, batch));
                            continue;
                        }
                        let resolved = self.resolve_condition_failure(&batch).await;
                        results[index] = Some(resolved.map(|()| StreamHead::after(&batch)));
                    }
                    sealed = remaining;
                    if campaign.is_some_and(|c| self.known_listed(c)) {
                        campaign = None;
                    }
                }
            }
        }
    }

    /// Makes one request that writes the batches of `sealed` (with the campaign index
    /// item, if any) on condition that nothing is at their keys and that `fence` holds.
    ///
    /// The fence is a ConditionCheck that nothing is at the fence stream's item after
    /// its version, unless one of the request's own events is that item: its condition
    /// is then the same, and DynamoDB refuses two operations on one item of a
    /// transaction.
    async fn attempt(
        &self,
        sealed: &[(usize, Vec<Envelope>)],
        campaign: Option<&str>,
        fence: Option<&Fence>,
    ) -> Attempt {
        let envelopes: Vec<(usize, &Envelope)> = sealed
            .iter()
            .enumerate()
            .flat_map(|(position, (_, batch))| batch.iter().map(move |e| (position, e)))
            .collect();
        let items = match envelopes
            .iter()
            .map(|(_, envelope)| envelope_to_item(envelope))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(items) => items,
            Err(e) => return Attempt::Refused(e),
        };
        // The event, if any, written where the fence stream's next event would be.
        let fence_event = fence.and_then(|fence| {
            envelopes.iter().position(|(_, envelope)| {
                envelope.stream == fence.stream && envelope.sequence == fence.version + 1
            })
        });
        let check = fence.filter(|_| fence_event.is_none());
        let token = transaction_token(envelopes.iter().map(|(_, e)| *e), fence);
        let (failed, check_failed) = match self.write_items(items, campaign, check, token).await {
            Ok(()) => return Attempt::Written,
            Err(WriteFailure::Other(e)) => return Attempt::Refused(e),
            Err(WriteFailure::ConditionFailed { items, fence }) => (items, fence),
        };
        let fence_failed = check_failed || fence_event.is_some_and(|item| failed.contains(&item));
        if let Some(fence) = fence.filter(|_| fence_failed) {
            // Nothing was written: another writer moved the fence's stream. Unless this
            // very request was applied once already (its answer lost): every event of it
            // is then in place, the one in the fence's place among them.
            let witness = fence_event
                .filter(|item| failed.contains(item))
                .or_else(|| failed.first().copied());
            return match witness {
                None => Attempt::Refused(fenced(fence)),
                Some(item) => match self.is_written(envelopes[item].1).await {
                    Ok(true) => {
                        tracing::debug!(journal = %self.describe(), "a retried write had already been applied");
                        Attempt::Written
                    }
                    Ok(false) => Attempt::Refused(fenced(fence)),
                    Err(e) => Attempt::Refused(e),
                },
            };
        }
        let mut positions: BTreeSet<usize> = failed
            .iter()
            .filter_map(|&item| envelopes.get(item).map(|(position, _)| *position))
            .collect();
        // Without reasons, every batch is resolved.
        if positions.is_empty() {
            positions = (0..sealed.len()).collect();
        }
        Attempt::Failed(positions)
    }

    /// Writes event items, each on condition that nothing is at its key, and `check`'s
    /// ConditionCheck: one PutItem for a single item alone, else one transaction (with
    /// the campaign index item, if any) whose idempotency token is `token`.
    async fn write_items(
        &self,
        items: Vec<Item>,
        campaign: Option<&str>,
        check: Option<&Fence>,
        token: String,
    ) -> Result<(), WriteFailure> {
        if items.len() == 1 && campaign.is_none() && check.is_none() {
            self.put_single(items.into_iter().next()).await
        } else {
            self.transact(items, campaign, check, token).await
        }
    }

    async fn put_single(&self, item: Option<Item>) -> Result<(), WriteFailure> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(item)
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await
            .map(drop)
            .map_err(|err| {
                if err.code() == Some("ConditionalCheckFailedException") {
                    WriteFailure::ConditionFailed {
                        items: vec![0],
                        fence: false,
                    }
                } else {
                    WriteFailure::Other(self.sdk_error("PutItem of an event", err))
                }
            })
    }

    async fn transact(
        &self,
        items: Vec<Item>,
        campaign: Option<&str>,
        check: Option<&Fence>,
        token: String,
    ) -> Result<(), WriteFailure> {
        let events = items.len();
        let mut writes = Vec::with_capacity(events + 2);
        for item in items {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PK)
                .build()
                .map_err(|e| WriteFailure::Other(self.build_error("TransactWriteItems", e)))?;
            writes.push(TransactWriteItem::builder().put(put).build());
        }
        if let Some(campaign) = campaign {
            let put = Put::builder()
                .table_name(&self.table)
                .item(PK, s(CAMPAIGNS_PK))
                .item(SK, s(campaign))
                .item("campaign", s(campaign))
                .build()
                .map_err(|e| WriteFailure::Other(self.build_error("TransactWriteItems", e)))?;
            writes.push(TransactWriteItem::builder().put(put).build());
        }
        // The fence's check comes last: its cancellation reason is the last one.
        let check_index = check.map(|_| writes.len());
        if let Some(fence) = check {
            let check = ConditionCheck::builder()
                .table_name(&self.table)
                .key(PK, s(&campaign_pk(fence.stream.campaign())))
                .key(SK, s(&event_sk(&fence.stream, fence.version + 1)))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PK)
                .build()
                .map_err(|e| WriteFailure::Other(self.build_error("TransactWriteItems", e)))?;
            writes.push(TransactWriteItem::builder().condition_check(check).build());
        }
        debug_assert!(
            writes.len() <= MAX_TRANSACTION_ITEMS,
            "{} items",
            writes.len()
        );
        // The token makes a retried request idempotent on DynamoDB. It digests the hash
        // of every event written, each unique to its batch (it covers the time and the
        // event), so that another set of batches never reuses it.
        let mut attempt = 1;
        loop {
            // The SDK's own retries of one request reuse its token; a new attempt after
            // a cancellation (which wrote nothing) is a new request with a new token.
            let token = format!("{token}-{attempt}");
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(writes.clone()))
                .client_request_token(token)
                .send()
                .await;
            let err = match result {
                Ok(_) => return Ok(()),
                Err(err) => err,
            };
            let reasons: Vec<String> = match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(canceled)) => canceled
                    .cancellation_reasons()
                    .iter()
                    .map(|reason| reason.code().unwrap_or("None").to_owned())
                    .collect(),
                _ => {
                    return Err(WriteFailure::Other(
                        self.sdk_error("TransactWriteItems", err),
                    ));
                }
            };
            let has = |code: &str| reasons.iter().any(|reason| reason == code);
            if has("ConditionalCheckFailed") {
                let failed: Vec<usize> = reasons
                    .iter()
                    .enumerate()
                    .filter(|(_, reason)| *reason == "ConditionalCheckFailed")
                    .map(|(item, _)| item)
                    .collect();
                return Err(WriteFailure::ConditionFailed {
                    fence: check_index.is_some_and(|check| failed.contains(&check)),
                    items: failed.into_iter().filter(|&item| item < events).collect(),
                });
            }
            if has("TransactionConflict") && attempt < TRANSACTION_ATTEMPTS {
                tracing::debug!(journal = %self.describe(), attempt, "transaction conflict, retrying");
                tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
                attempt += 1;
                continue;
            }
            let throttled = [
                "TransactionConflict",
                "ThrottlingError",
                "ProvisionedThroughputExceeded",
                "RequestLimitExceeded",
            ]
            .iter()
            .any(|code| has(code));
            let detail = format!(
                "TransactWriteItems was cancelled (reasons: {}): {}",
                reasons.join(", "),
                describe_sdk_error(&err)
            );
            return Err(WriteFailure::Other(if throttled {
                JournalError::Unavailable {
                    backend: self.describe(),
                    detail,
                }
            } else {
                JournalError::Unexpected {
                    backend: self.describe(),
                    detail,
                }
            }));
        }
    }

    /// After a batch failed its condition: success if its first sequence holds the very
    /// event this call wrote (a retried request whose answer was lost), else a conflict
    /// with the stream's actual version.
    async fn resolve_condition_failure(&self, sealed: &[Envelope]) -> Result<(), JournalError> {
        let Some(first) = sealed.first() else {
            return Ok(());
        };
        if self.is_written(first).await? {
            tracing::debug!(journal = %self.describe(), "a retried write had already been applied");
            return Ok(());
        }
        Err(JournalError::Conflict {
            stream: first.stream.clone(),
            expected: first.sequence - 1,
            actual: self.current_version(&first.stream).await?,
        })
    }

    /// Whether this very envelope is stored (one consistent GetItem).
    async fn is_written(&self, envelope: &Envelope) -> Result<bool, JournalError> {
        Ok(self
            .get_event(&envelope.stream, envelope.sequence)
            .await?
            .is_some_and(|item| text(&item, "hash").ok() == Some(envelope.hash.as_str())))
    }
}

impl DynamoJournal {
    /// Seals `events` after (`expected_version`, `prev_hash`) and writes them, on
    /// condition of `fence`.
    async fn write_after(
        &self,
        stream: &StreamId,
        expected_version: u64,
        prev_hash: &str,
        events: Vec<NewEvent>,
        fence: Option<&Fence>,
    ) -> Result<StreamHead, JournalError> {
        let with_campaign_item =
            expected_version == 0 && !self.campaign_listed(stream.campaign()).await?;
        let count = events.len();
        let now = stamp(self.clock.as_ref());
        let sealed = seal_batch(stream, expected_version, prev_hash, events, now)?;
        let campaign = with_campaign_item.then(|| stream.campaign());
        let head = self.write_batch(sealed, campaign, fence).await?;
        let version = head.version();
        tracing::debug!(journal = %self.describe(), expected_version, count, version, "appended");
        Ok(head)
    }
}

/// Why a conditional write failed.
enum WriteFailure {
    /// A condition failed: nothing was written. `items`: the event items (by their
    /// index in the request) found where they were to be written, when DynamoDB said;
    /// `fence`: whether the fence's ConditionCheck failed.
    ConditionFailed { items: Vec<usize>, fence: bool },
    /// Anything else.
    Other(JournalError),
}

/// What one write request did.
enum Attempt {
    /// Every batch is written (by this request, or by an earlier one whose answer was
    /// lost).
    Written,
    /// Nothing was written: every batch's error (a failed fence, or a failure of the
    /// request).
    Refused(JournalError),
    /// Nothing was written, and the fence held: these batches (by position) failed
    /// their own condition; the others may go again.
    Failed(BTreeSet<usize>),
}

#[async_trait]
impl Journal for DynamoJournal {
    async fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<u64, JournalError> {
        validate_batch(&events)?;
        let prev_hash = if expected_version == 0 {
            GENESIS_HASH.to_owned()
        } else {
            match self.get_event(stream, expected_version).await? {
                Some(item) => text(&item, "hash")
                    .map(str::to_owned)
                    .map_err(|detail| self.corrupt(item_label(&item), detail))?,
                None => {
                    return Err(JournalError::Conflict {
                        stream: stream.clone(),
                        expected: expected_version,
                        actual: self.current_version(stream).await?,
                    });
                }
            }
        };
        let head = self
            .write_after(stream, expected_version, &prev_hash, events, None)
            .await?;
        Ok(head.version())
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
        // No read: the conditions on the new sequences refuse the write if the stream
        // has moved past `head`, and while it is at `head` its last hash is `head`'s.
        self.write_after(stream, head.version(), head.hash(), events, fence)
            .await
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
        let campaign = appends[0].stream.campaign().to_owned();
        let with_campaign_item = if appends.iter().any(|a| a.head.version() == 0) {
            match self.campaign_listed(&campaign).await {
                Ok(listed) => !listed,
                Err(e) => return vec![Err(e); count],
            }
        } else {
            false
        };
        let now = stamp(self.clock.as_ref());
        let mut results: Vec<Option<Result<StreamHead, JournalError>>> = vec![None; count];
        let mut sealed = Vec::with_capacity(count);
        for (index, append) in appends.into_iter().enumerate() {
            let head = &append.head;
            match seal_batch(
                &append.stream,
                head.version(),
                head.hash(),
                append.events,
                now,
            ) {
                Ok(batch) => sealed.push((index, batch)),
                Err(e) => results[index] = Some(Err(e)),
            }
        }
        let campaign = with_campaign_item.then_some(campaign.as_str());
        self.write_group(sealed, campaign, fence, &mut results)
            .await;
        tracing::debug!(journal = %self.describe(), count, "appended to several streams");
        results
            .into_iter()
            .map(|result| result.unwrap_or_else(|| Err(self.no_outcome())))
            .collect()
    }

    async fn append_all_fenced(
        &self,
        appends: Vec<Append>,
        fence: Option<&Fence>,
    ) -> Result<Vec<StreamHead>, JournalError> {
        validate_many(&appends, fence)?;
        let count = appends.len();
        let campaign = appends[0].stream.campaign().to_owned();
        let with_campaign_item = appends.iter().any(|a| a.head.version() == 0)
            && !self.campaign_listed(&campaign).await?;
        let now = stamp(self.clock.as_ref());
        let sealed = appends
            .into_iter()
            .map(|append| {
                let head = &append.head;
                seal_batch(
                    &append.stream,
                    head.version(),
                    head.hash(),
                    append.events,
                    now,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let heads: Vec<StreamHead> = sealed.iter().map(|b| StreamHead::after(b)).collect();
        let sealed: Vec<(usize, Vec<Envelope>)> = sealed.into_iter().enumerate().collect();
        let listing = with_campaign_item.then_some(campaign.as_str());
        match self.attempt(&sealed, listing, fence).await {
            Attempt::Written => {}
            Attempt::Refused(e) => return Err(e),
            Attempt::Failed(failed) => {
                // Nothing was written. A batch that failed its condition is a conflict,
                // or was written by this very transaction, applied once already (its
                // answer lost): then all of it was.
                for position in failed {
                    self.resolve_condition_failure(&sealed[position].1).await?;
                }
            }
        }
        if with_campaign_item {
            self.remember_listed(&campaign);
        }
        tracing::debug!(journal = %self.describe(), count, "appended to several streams, all or none");
        Ok(heads)
    }

    async fn read_stream(&self, stream: &StreamId) -> Result<Vec<Envelope>, JournalError> {
        let items = self
            .query_all("Query of a stream", || {
                self.events_query(stream.campaign(), stream_prefix(stream))
            })
            .await?;
        self.envelopes(&items)
    }

    async fn read_campaign(&self, campaign: &str) -> Result<Vec<Envelope>, JournalError> {
        validate_campaign(campaign)?;
        let items = self
            .query_all("Query of a campaign", || {
                self.events_query(campaign, EVENT_SK_PREFIX.to_owned())
            })
            .await?;
        let mut events = self.envelopes(&items)?;
        if !events.is_empty() {
            self.remember_listed(campaign);
        }
        // The sort key orders `E#a!#…` before `E#a#…` (`!` sorts before `#`), while
        // streams order by name: sort to the documented order.
        events.sort_by(|a, b| (a.stream.name(), a.sequence).cmp(&(b.stream.name(), b.sequence)));
        Ok(events)
    }

    async fn list_campaigns(&self) -> Result<Vec<String>, JournalError> {
        let items = self
            .query_all("Query of the campaign index", || {
                self.client
                    .query()
                    .table_name(&self.table)
                    .consistent_read(true)
                    .key_condition_expression("#pk = :pk")
                    .expression_attribute_names("#pk", PK)
                    .expression_attribute_values(":pk", s(CAMPAIGNS_PK))
            })
            .await?;
        let mut campaigns = items
            .iter()
            .map(|item| {
                text(item, SK)
                    .map(str::to_owned)
                    .map_err(|detail| self.corrupt(item_label(item), detail))
            })
            .collect::<Result<Vec<_>, _>>()?;
        campaigns.sort();
        Ok(campaigns)
    }

    async fn events_for_access_key(
        &self,
        access_key_id: &str,
    ) -> Result<Vec<Envelope>, JournalError> {
        // One Query on each key index, sent together: a key's history costs one round
        // trip and reads only that key's items, whatever the table's size.
        let (as_first, as_second) = tokio::try_join!(
            self.query_index(INDEXES[1].0, INDEXES[1].1, access_key_id, None),
            self.query_index(INDEXES[2].0, INDEXES[2].1, access_key_id, None),
        )?;
        let mut by_event: BTreeMap<(String, String, u64), Envelope> = BTreeMap::new();
        for event in as_first.into_iter().chain(as_second) {
            by_event.insert(
                (
                    event.campaign.clone(),
                    event.stream.name().to_owned(),
                    event.sequence,
                ),
                event,
            );
        }
        let mut events: Vec<Envelope> = by_event.into_values().collect();
        events.sort_by(|a, b| a.time_order_key().cmp(&b.time_order_key()));
        Ok(events)
    }

    async fn events_for_account(
        &self,
        account_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Envelope>, JournalError> {
        let Some(range) = text_range(from, to) else {
            return Ok(Vec::new());
        };
        let (index, partition) = INDEXES[0];
        let mut events = self
            .query_index(index, partition, account_id, Some(&range))
            .await?;
        events.sort_by(|a, b| a.time_order_key().cmp(&b.time_order_key()));
        Ok(events)
    }

    fn describe(&self) -> String {
        format!("dynamodb://{}", self.table)
    }
}

/// Describes an SDK error in one line: for an answer of the service, its AWS error
/// code, message, HTTP status and request id (what AWS support asks for); otherwise
/// the chain of causes (a refused connection, a timeout).
///
/// This is what `aws_sdk_dynamodb::error::DisplayErrorContext` prints before it
/// appends the error's `Debug` form, which holds the whole raw response: too much
/// for a message meant for a person.
fn describe_sdk_error<E>(err: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(context) => {
            let mut text = format!(
                "{}: {} (HTTP {}",
                err.code().unwrap_or("UnknownError"),
                err.message().unwrap_or("no message"),
                context.raw().status().as_u16()
            );
            if let Some(request_id) = err.request_id() {
                text.push_str(", request id ");
                text.push_str(request_id);
            }
            text.push(')');
            text
        }
        _ => {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}

// ----- Keys and attribute mapping -----

/// The idempotency token of a transaction writing these events on condition of
/// `fence` (32 hex digits): a digest of their hashes and of the fence.
fn transaction_token<'a>(
    sealed: impl IntoIterator<Item = &'a Envelope>,
    fence: Option<&Fence>,
) -> String {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    for envelope in sealed {
        digest.update(envelope.hash.as_bytes());
    }
    if let Some(fence) = fence {
        digest.update(format!("#fence#{}#{}", fence.stream, fence.version).as_bytes());
    }
    hex::encode(digest.finalize())[..32].to_owned()
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn campaign_pk(campaign: &str) -> String {
    format!("C#{campaign}")
}

fn stream_prefix(stream: &StreamId) -> String {
    format!("{EVENT_SK_PREFIX}{}#", stream.name())
}

fn event_sk(stream: &StreamId, sequence: u64) -> String {
    format!("{}{sequence:020}", stream_prefix(stream))
}

/// The sort key of the indexes: time first, then the event's identity for a stable
/// order among events of the same microsecond.
fn at_key(envelope: &Envelope) -> String {
    format!(
        "{}#{}#{}#{:020}",
        envelope.recorded_at_text(),
        envelope.campaign,
        envelope.stream.name(),
        envelope.sequence
    )
}

/// A short name of an item for error messages (its keys, never its payload).
/// An item as errors name it: the event (`campaign/stream #sequence`) when those
/// attributes read, else the item's key.
fn item_label(item: &Item) -> String {
    let text = |name| match item.get(name) {
        Some(AttributeValue::S(value) | AttributeValue::N(value)) => Some(value.as_str()),
        _ => None,
    };
    match (text("campaign"), text("stream"), text("seq")) {
        (Some(campaign), Some(stream), Some(seq)) => format!("{campaign}/{stream} #{seq}"),
        _ => format!(
            "item {}/{}",
            text(PK).unwrap_or("?"),
            text(SK).unwrap_or("?")
        ),
    }
}

fn envelope_to_item(envelope: &Envelope) -> Result<Item, JournalError> {
    let payload = serde_json::to_string(&envelope.payload).map_err(|e| {
        JournalError::rejected(format!(
            "the payload of {} cannot be serialised: {e}",
            envelope.label()
        ))
    })?;
    let mut item: Item = HashMap::with_capacity(20);
    let mut put = |name: &str, value: AttributeValue| {
        item.insert(name.to_owned(), value);
    };
    put(PK, s(&campaign_pk(&envelope.campaign)));
    put(SK, s(&event_sk(&envelope.stream, envelope.sequence)));
    put("campaign", s(&envelope.campaign));
    put("stream", s(envelope.stream.name()));
    put("seq", AttributeValue::N(envelope.sequence.to_string()));
    put("event_type", s(&envelope.event_type));
    put(
        "schema_major",
        AttributeValue::N(envelope.schema_version.major.to_string()),
    );
    put(
        "schema_minor",
        AttributeValue::N(envelope.schema_version.minor.to_string()),
    );
    put("payload", AttributeValue::S(payload));
    put("recorded_at", s(&envelope.recorded_at_text()));
    if let Some(account_id) = &envelope.account_id {
        put(ACCOUNT_ID, s(account_id));
    }
    if let Some(user_name) = &envelope.user_name {
        put("user_name", s(user_name));
    }
    if let Some(key) = envelope.access_key_ids.first() {
        put(KEY_ID_1, s(key));
    }
    if let Some(key) = envelope.access_key_ids.get(1) {
        put(KEY_ID_2, s(key));
    }
    put("caller_arn", s(&envelope.actor.caller_arn));
    put("run_id", s(&envelope.actor.run_id));
    put("host", s(&envelope.actor.host));
    put("prev_hash", s(&envelope.prev_hash));
    put("hash", s(&envelope.hash));
    put(AT, s(&at_key(envelope)));
    Ok(item)
}

fn envelope_from_item(item: &Item) -> Result<Envelope, String> {
    let campaign = text(item, "campaign")?.to_owned();
    let stream = StreamId::new(campaign.clone(), text(item, "stream")?)
        .map_err(|e| format!("its stream id is invalid: {e}"))?;
    let payload = serde_json::from_str(text(item, "payload")?).map_err(|e| {
        format!(
            "its payload is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    let access_key_ids = [KEY_ID_1, KEY_ID_2]
        .into_iter()
        .map(|name| optional_text(item, name))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    Ok(Envelope {
        stream,
        sequence: number(item, "seq")?,
        event_type: text(item, "event_type")?.to_owned(),
        schema_version: SchemaVersion {
            major: number(item, "schema_major")?,
            minor: number(item, "schema_minor")?,
        },
        payload,
        recorded_at: parse_timestamp(text(item, "recorded_at")?)?,
        campaign,
        account_id: optional_text(item, ACCOUNT_ID)?,
        user_name: optional_text(item, "user_name")?,
        access_key_ids,
        actor: Actor {
            caller_arn: text(item, "caller_arn")?.to_owned(),
            run_id: text(item, "run_id")?.to_owned(),
            host: text(item, "host")?.to_owned(),
        },
        prev_hash: text(item, "prev_hash")?.to_owned(),
        hash: text(item, "hash")?.to_owned(),
    })
}

/// A required string attribute.
fn text<'a>(item: &'a Item, name: &str) -> Result<&'a str, String> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value),
        Some(_) => Err(format!("its attribute {name} is not a string")),
        None => Err(format!("it has no attribute {name}")),
    }
}

/// An optional string attribute.
fn optional_text(item: &Item, name: &str) -> Result<Option<String>, String> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::S(value)) => Ok(Some(value.clone())),
        Some(_) => Err(format!("its attribute {name} is not a string")),
    }
}

/// A required number attribute.
fn number<T: std::str::FromStr>(item: &Item, name: &str) -> Result<T, String> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => value
            .parse()
            .map_err(|_| format!("its attribute {name} = {value} is out of range")),
        Some(_) => Err(format!("its attribute {name} is not a number")),
        None => Err(format!("it has no attribute {name}")),
    }
}

/// Checks that an existing table is laid out as a journal; names every difference.
fn check_table_layout(table: &str, description: &TableDescription) -> Result<(), JournalError> {
    let mut differences = Vec::new();
    let key_names = |keys: &[KeySchemaElement]| -> Vec<String> {
        keys.iter()
            .map(|key| format!("{} {}", key.attribute_name(), key.key_type().as_str()))
            .collect()
    };
    let expected_table_keys = vec![format!("{PK} HASH"), format!("{SK} RANGE")];
    let table_keys = key_names(description.key_schema());
    if table_keys != expected_table_keys {
        differences.push(format!(
            "its key schema is [{}], expected [{}]",
            table_keys.join(", "),
            expected_table_keys.join(", ")
        ));
    }
    for definition in description.attribute_definitions() {
        let name = definition.attribute_name();
        if [PK, SK, AT, ACCOUNT_ID, KEY_ID_1, KEY_ID_2].contains(&name)
            && definition.attribute_type() != &ScalarAttributeType::S
        {
            differences.push(format!(
                "attribute {name} has type {}, expected S",
                definition.attribute_type().as_str()
            ));
        }
    }
    for (index, partition) in INDEXES {
        let found: Option<&GlobalSecondaryIndexDescription> = description
            .global_secondary_indexes()
            .iter()
            .find(|candidate| candidate.index_name() == Some(index));
        let Some(found) = found else {
            differences.push(format!("it has no global secondary index {index}"));
            continue;
        };
        let expected = vec![format!("{partition} HASH"), format!("{AT} RANGE")];
        let keys = key_names(found.key_schema());
        if keys != expected {
            differences.push(format!(
                "index {index} has key schema [{}], expected [{}]",
                keys.join(", "),
                expected.join(", ")
            ));
        }
        let projection = found
            .projection()
            .and_then(|projection| projection.projection_type());
        if projection != Some(&ProjectionType::All) {
            differences.push(format!(
                "index {index} projects {}, expected ALL",
                projection.map_or("nothing", |p| p.as_str())
            ));
        }
    }
    if differences.is_empty() {
        Ok(())
    } else {
        Err(JournalError::rejected(format!(
            "the DynamoDB table {table} exists but is not laid out as a keyturn journal: {}. \
             Choose another table name",
            differences.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SystemClock;

    #[test]
    fn keys_sort_by_sequence_and_prefixes_do_not_overlap() {
        let stream = StreamId::new("c", "a").unwrap();
        let other = StreamId::new("c", "ab").unwrap();
        assert_eq!(event_sk(&stream, 2), "E#a#00000000000000000002");
        assert!(event_sk(&stream, 9) < event_sk(&stream, 10));
        assert!(!event_sk(&other, 1).starts_with(&stream_prefix(&stream)));
        assert_eq!(event_sk(&stream, u64::MAX).len(), "E#a#".len() + 20);
    }

    fn sealed(
        stream: &StreamId,
        expected: u64,
        prev_hash: &str,
        count: usize,
        run_id: &str,
    ) -> Vec<Envelope> {
        let events = (0..count)
            .map(|n| NewEvent {
                event_type: "T".into(),
                schema_version: SchemaVersion::new(1, 0),
                payload: serde_json::json!({ "n": n }),
                account_id: None,
                user_name: None,
                access_key_ids: Vec::new(),
                actor: Actor {
                    caller_arn: "arn".into(),
                    run_id: run_id.into(),
                    host: "test-host".into(),
                },
            })
            .collect();
        seal_batch(stream, expected, prev_hash, events, stamp(&SystemClock)).unwrap()
    }

    /// Guards the recovery from a write whose answer was lost: writing the same sealed
    /// batch again finds the batch's own first event and succeeds, while a different
    /// batch at the same place is a conflict.
    #[tokio::test]
    async fn a_write_found_already_applied_succeeds_and_another_writers_conflicts() {
        let emulator =
            keyturn_testbed::Emulator::start(keyturn_testbed::EmulatorOptions { serial: true });
        let client = Client::new(&emulator.sdk_config().await);
        DynamoJournal::init_with_client(client.clone(), "lost-answers")
            .await
            .unwrap();
        let journal = DynamoJournal::open_with_client(client, "lost-answers")
            .await
            .unwrap();
        let id = StreamId::new("c", "s").unwrap();

        // A batch (a transaction, with the campaign item) written twice.
        let first = sealed(&id, 0, GENESIS_HASH, 3, "run-a");
        let write =
            |batch: &Vec<Envelope>, campaign: Option<&'static str>, fence: Option<Fence>| {
                let journal = &journal;
                let batch = batch.clone();
                async move { journal.write_batch(batch, campaign, fence.as_ref()).await }
            };
        write(&first, Some("c"), None).await.unwrap();
        write(&first, Some("c"), None).await.unwrap();
        // A single event (a conditional put) written twice.
        let second = sealed(&id, 3, &first[2].hash, 1, "run-a");
        write(&second, None, None).await.unwrap();
        write(&second, None, None).await.unwrap();

        let rival = sealed(&id, 3, &first[2].hash, 1, "run-b");
        assert_ne!(rival[0].hash, second[0].hash);
        match write(&rival, None, None).await {
            Err(JournalError::Conflict { actual: 4, .. }) => {}
            other => panic!("expected a conflict at version 4, got {other:?}"),
        }
        let events = journal.read_stream(&id).await.unwrap();
        assert_eq!(events.len(), 4);
        crate::verify_stream(&events).unwrap();
        assert_eq!(journal.list_campaigns().await.unwrap(), ["c"]);

        // Fenced on another stream: a write applied once already is found in place even
        // when the fence has moved since; another writer's is fenced off.
        let fence_stream = StreamId::new("c", "account/1").unwrap();
        let claim = sealed(&fence_stream, 0, GENESIS_HASH, 1, "run-a");
        write(&claim, None, None).await.unwrap();
        let fence = Fence::at(&fence_stream, &StreamHead::after(&claim));
        let fenced_batch = sealed(&id, 4, &events[3].hash, 2, "run-a");
        write(&fenced_batch, None, Some(fence.clone()))
            .await
            .unwrap();
        write(&fenced_batch, None, Some(fence.clone()))
            .await
            .unwrap();
        // The fence's own stream at the fence's version: that event is the fence.
        let renewal = sealed(&fence_stream, 1, &claim[0].hash, 1, "run-a");
        write(&renewal, None, Some(fence.clone())).await.unwrap();
        write(&renewal, None, Some(fence.clone())).await.unwrap();
        // The fence has moved (by the renewal): the batch written before it still counts
        // as written, a new one is fenced off, and so is a rival renewal.
        write(&fenced_batch, None, Some(fence.clone()))
            .await
            .unwrap();
        let late = sealed(&id, 6, &fenced_batch[1].hash, 1, "run-a");
        let rival_renewal = sealed(&fence_stream, 1, &claim[0].hash, 1, "run-b");
        for batch in [&late, &rival_renewal] {
            match write(batch, None, Some(fence.clone())).await {
                Err(JournalError::Fenced {
                    stream,
                    expected: 1,
                }) if stream == fence_stream => {}
                other => panic!("expected the fence to fail, got {other:?}"),
            }
        }
        assert_eq!(journal.read_stream(&id).await.unwrap().len(), 6);
        assert_eq!(
            StreamHead::after(&journal.read_stream(&fence_stream).await.unwrap()),
            StreamHead::after(&renewal)
        );
    }

    #[test]
    fn items_round_trip_and_omit_absent_index_keys() {
        let envelope = crate::envelope::seal_batch(
            &StreamId::new("c", "s").unwrap(),
            0,
            GENESIS_HASH,
            vec![NewEvent {
                event_type: "T".into(),
                schema_version: SchemaVersion::new(1, 0),
                payload: serde_json::json!({"z": 1, "a": [true]}),
                account_id: None,
                user_name: None,
                access_key_ids: vec!["AKIA1".into()],
                actor: Actor {
                    caller_arn: "arn".into(),
                    run_id: "r".into(),
                    host: "test-host".into(),
                },
            }],
            stamp(&SystemClock),
        )
        .unwrap()
        .remove(0);
        let item = envelope_to_item(&envelope).unwrap();
        assert!(!item.contains_key(ACCOUNT_ID));
        assert!(!item.contains_key(KEY_ID_2));
        assert_eq!(envelope_from_item(&item).unwrap(), envelope);
    }
}
