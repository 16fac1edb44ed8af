//! The contract suite against the in-memory backend.

mod contract;

use std::sync::Arc;

use async_trait::async_trait;
use contract::{Fixture, Harness, RawAccess};
use keyturn_journal::{Clock, Journal, MemoryJournal, StreamId};

struct Memory;

struct MemoryRaw(Arc<MemoryJournal>);

#[async_trait]
impl Harness for Memory {
    async fn fixture_with_clock(&self, clock: Arc<dyn Clock>) -> Fixture {
        let journal = Arc::new(MemoryJournal::with_clock(clock));
        Fixture {
            journal: journal.clone(),
            raw: Box::new(MemoryRaw(journal)),
        }
    }
}

#[async_trait]
impl RawAccess for MemoryRaw {
    async fn set_payload(&self, stream: &StreamId, sequence: u64, payload_json: &str) {
        let payload = serde_json::from_str(payload_json).unwrap();
        self.0.tamper_for_tests(stream, |events| {
            let event = events.iter_mut().find(|e| e.sequence == sequence).unwrap();
            event.payload = payload;
        });
    }

    async fn delete(&self, stream: &StreamId, sequence: u64) {
        self.0
            .tamper_for_tests(stream, |events| events.retain(|e| e.sequence != sequence));
    }

    async fn refuse_writes_at(&self, _stream: &StreamId, _sequence: u64) -> bool {
        // Memory cannot fail half-way: it validates the batch, then extends a vector.
        false
    }

    async fn accept_writes(&self, _stream: &StreamId, _sequence: u64) {}

    async fn another_handle(&self) -> Arc<dyn Journal> {
        self.0.clone()
    }
}

contract_tests!(Memory);

#[test]
fn describes_itself_as_memory() {
    assert_eq!(MemoryJournal::new().describe(), "memory");
}
