//! The time the journal stamps events with: a [`Clock`] given by whoever opens the
//! journal, [`SystemClock`] unless told otherwise.
//!
//! Every backend keeps one and reads the time through it alone (an event's
//! `recorded_at`, a DynamoDB table's `created_at`), so that a deterministic simulation
//! can run a campaign of many virtual days in moments, with every event stamped in
//! virtual time. The journal never compares its clock with anything: it stores what the
//! clock says, truncated to the microseconds it keeps, and the audit queries by time
//! range select on those stamps.

use std::fmt::Debug;
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};

/// Where the journal reads the current time.
pub trait Clock: Send + Sync + Debug {
    /// The current time. The journal keeps it to the microsecond.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock ([`Utc::now`]): the clock of every journal opened without one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The clock of a journal opened without one.
pub(crate) fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// The clock's time, truncated to the microsecond precision the journal stores.
pub(crate) fn stamp(clock: &dyn Clock) -> DateTime<Utc> {
    clock.now().trunc_subsecs(6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(DateTime<Utc>);

    impl Clock for Fixed {
        fn now(&self) -> DateTime<Utc> {
            self.0
        }
    }

    #[test]
    fn a_stamp_is_the_clocks_time_to_the_microsecond() {
        let at = DateTime::parse_from_rfc3339("2031-01-02T03:04:05.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            crate::format_timestamp(stamp(&Fixed(at))),
            "2031-01-02T03:04:05.123456Z"
        );
        let before = Utc::now().trunc_subsecs(6);
        let now = stamp(&SystemClock);
        assert!(before <= now && now <= Utc::now());
    }
}
