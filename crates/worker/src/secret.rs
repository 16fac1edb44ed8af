//! The secret half of a new access key, kept where it cannot leak.
//!
//! IAM returns a key's secret once, in the CreateAccessKey answer. keyturn holds it only
//! between that answer and its delivery to Secrets Manager: in a [`SecretAccessKey`],
//! which prints as `[redacted]` in every `Debug` and `Display`, cannot be serialised,
//! and is overwritten with zeros when dropped. [`SecretAccessKey::expose`] is the only
//! way to read it, so every place that handles the secret itself is easy to find.

use std::fmt;

use chrono::{DateTime, Utc};
use keyturn_planner::AccessKeyId;
use secrecy::{ExposeSecret, SecretString};

/// What `Debug` and `Display` print in place of a secret.
pub const REDACTED: &str = "[redacted]";

/// An access key's secret. It is zeroed in memory when dropped.
pub struct SecretAccessKey(SecretString);

impl SecretAccessKey {
    /// Takes ownership of the secret (the `String` is not copied, and is zeroed on drop).
    pub fn new(secret: String) -> Self {
        Self(SecretString::from(secret))
    }

    /// The secret itself. Only the delivery to Secrets Manager and the signing of the
    /// verification call read it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for SecretAccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretAccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A key IAM has just created, with the secret it will never show again.
pub struct NewAccessKey {
    /// The key's id (not a secret: it appears in CloudTrail and in the journal).
    pub access_key_id: AccessKeyId,
    /// The key's secret.
    pub secret: SecretAccessKey,
    /// When IAM created the key.
    pub created_at: DateTime<Utc>,
}

impl fmt::Debug for NewAccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewAccessKey")
            .field("access_key_id", &self.access_key_id.as_str())
            .field("created_at", &self.created_at)
            .field("secret", &self.secret)
            .finish()
    }
}

/// Prints the key's id only.
impl fmt::Display for NewAccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.access_key_id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let key = NewAccessKey {
            access_key_id: AccessKeyId::new("AKIAIOSFODNN7EXAMPLE").unwrap(),
            secret: SecretAccessKey::new(SECRET.to_owned()),
            created_at: DateTime::<Utc>::UNIX_EPOCH,
        };
        for shown in [
            format!("{key:?}"),
            format!("{key:#?}"),
            format!("{key}"),
            format!("{:?}", key.secret),
            format!("{}", key.secret),
        ] {
            assert!(!shown.contains(SECRET), "{shown}");
            assert!(!shown.contains("wJalr"), "{shown}");
        }
        assert_eq!(format!("{key}"), "AKIAIOSFODNN7EXAMPLE");
        assert!(format!("{key:?}").contains("AKIAIOSFODNN7EXAMPLE"));
        assert_eq!(format!("{:?}", key.secret), REDACTED);
        assert_eq!(key.secret.expose(), SECRET);
    }
}
