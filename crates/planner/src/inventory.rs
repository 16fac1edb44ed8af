//! The inventory snapshot: what IAM says about each access key at one moment.
//!
//! These are plain values gathered by the worker and read by the planner and the CLI.
//! Ages are computed against a `now` the caller passes in, never against a clock.

use chrono::{DateTime, Utc};

use crate::ids::{AccessKeyId, AccountId, UserName};

/// An access key's status as IAM reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyStatus {
    /// The key authenticates requests.
    Active,
    /// The key is disabled; it can be reactivated or deleted.
    Inactive,
}

impl KeyStatus {
    /// The status as IAM spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "Active",
            Self::Inactive => "Inactive",
        }
    }
}

/// The last recorded use of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastUse {
    /// When the key was last used.
    pub at: DateTime<Utc>,
    /// The service it was used with, when IAM knows it.
    pub service: Option<String>,
    /// The region it was used in, when IAM knows it.
    pub region: Option<String>,
}

/// One access key of one user in one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The account that holds the user.
    pub account_id: AccountId,
    /// The account's name in the organization.
    pub account_name: String,
    /// The key's user.
    pub user_name: UserName,
    /// The key itself.
    pub access_key_id: AccessKeyId,
    /// Active or Inactive.
    pub status: KeyStatus,
    /// When the key was created.
    pub created_at: DateTime<Utc>,
    /// Its last use, or `None` when it was never used.
    pub last_used: Option<LastUse>,
}

impl KeyRecord {
    /// Whole days since creation at `now`; zero when the clock reads earlier than the creation.
    pub fn age_days(&self, now: DateTime<Utc>) -> i64 {
        whole_days(self.created_at, now)
    }
}

/// Whole days from `from` to `to`, never negative.
pub fn whole_days(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_days().max(0)
}

/// Sorts records the way every output presents them: by account, user, creation, key.
pub fn sort_records(records: &mut [KeyRecord]) {
    records.sort_by(|a, b| {
        (&a.account_id, &a.user_name, a.created_at, &a.access_key_id).cmp(&(
            &b.account_id,
            &b.user_name,
            b.created_at,
            &b.access_key_id,
        ))
    });
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn record(created: DateTime<Utc>) -> KeyRecord {
        KeyRecord {
            account_id: AccountId::new("000000000001").unwrap(),
            account_name: "a".into(),
            user_name: UserName::new("u").unwrap(),
            access_key_id: AccessKeyId::new("AKIAAAAAAAAAAAAAAAAA").unwrap(),
            status: KeyStatus::Active,
            created_at: created,
            last_used: None,
        }
    }

    #[test]
    fn age_is_whole_days_and_never_negative() {
        let created = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let r = record(created);
        assert_eq!(r.age_days(created + chrono::Duration::hours(23)), 0);
        assert_eq!(r.age_days(created + chrono::Duration::days(90)), 90);
        assert_eq!(
            r.age_days(created + chrono::Duration::days(90) - chrono::Duration::seconds(1)),
            89
        );
        assert_eq!(
            r.age_days(created - chrono::Duration::days(3)),
            0,
            "a clock behind the key's creation"
        );
    }
}
