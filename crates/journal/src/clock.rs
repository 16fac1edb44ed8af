//! Where the journal and the engine read the time: the system clock in production, a
//! virtual one in the deterministic simulator (a campaign of 30 simulated days runs in
//! milliseconds there, and every `recorded_at` is virtual time).

use std::fmt::Debug;

use chrono::{DateTime, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
