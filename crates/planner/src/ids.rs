//! Identifiers validated once at the edge, so that the rest of keyturn can trust them.
//!
//! Each type checks the rules AWS itself applies (or, for campaign names, the rules
//! keyturn's journal needs) and keeps the value as text: account ids, for example,
//! can start with `0` and are never numbers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A value that does not satisfy an identifier's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {rule}")]
pub struct InvalidId {
    /// What kind of identifier was expected ("account id", ...).
    pub kind: &'static str,
    /// The rejected value.
    pub value: String,
    /// The rule it breaks, in words.
    pub rule: &'static str,
}

macro_rules! text_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $check:expr, $rule:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `value` and wraps it.
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                let check: fn(&str) -> bool = $check;
                if check(&value) {
                    Ok(Self(value))
                } else {
                    Err(InvalidId { kind: $kind, value, rule: $rule })
                }
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

fn is_iam_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)
}

text_id!(
    /// A 12-digit AWS account id, kept as text (ids can start with `0`).
    AccountId,
    "account id",
    |s| s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()),
    "an AWS account id is exactly 12 digits"
);

text_id!(
    /// An IAM access key id such as `AKIAIOSFODNN7EXAMPLE`.
    AccessKeyId,
    "access key id",
    |s| (16..=128).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()),
    "an access key id is 16 to 128 upper-case letters and digits"
);

text_id!(
    /// An IAM user name.
    UserName,
    "user name",
    |s| (1..=64).contains(&s.len()) && s.chars().all(is_iam_name_char),
    "an IAM user name is 1 to 64 letters, digits and +=,.@_-"
);

text_id!(
    /// An IAM role name (without path), such as `OrganizationAccountAccessRole`.
    RoleName,
    "role name",
    |s| (1..=64).contains(&s.len()) && s.chars().all(is_iam_name_char),
    "an IAM role name is 1 to 64 letters, digits and +=,.@_-"
);

text_id!(
    /// The name of a rotation campaign, as operators type it and the journal keys it.
    CampaignName,
    "campaign name",
    |s| (1..=64).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
    "a campaign name is 1 to 64 letters, digits, '.', '_' and '-', starting with a letter or digit"
);

text_id!(
    /// An Organizations unit id (`ou-…`) or root id (`r-…`).
    OrganizationalUnitId,
    "organizational unit id",
    |s| {
        let lower_alnum = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if let Some(root) = s.strip_prefix("r-") {
            (4..=32).contains(&root.len()) && lower_alnum(root)
        } else if let Some(rest) = s.strip_prefix("ou-") {
            match rest.split_once('-') {
                Some((a, b)) => (4..=32).contains(&a.len()) && (8..=32).contains(&b.len()) && lower_alnum(a) && lower_alnum(b),
                None => false,
            }
        } else {
            false
        }
    },
    "an organizational unit id looks like ou-ab12-cdef3456 (or r-ab12 for the root)"
);

text_id!(
    /// An STS ExternalId, as a role's trust policy may require.
    ExternalId,
    "external id",
    |s| (2..=1224).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@:/_-".contains(c)),
    "an external id is 2 to 1224 letters, digits and +=,.@:/_-"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_twelve_digits_kept_as_text() {
        assert_eq!(
            AccountId::new("012345678901").unwrap().as_str(),
            "012345678901"
        );
        for bad in [
            "12345678901",
            "1234567890123",
            "12345678901a",
            "",
            " 12345678901",
        ] {
            let err = AccountId::new(bad).unwrap_err();
            assert_eq!(err.kind, "account id", "{bad:?}");
        }
    }

    #[test]
    fn access_key_ids_are_upper_case_alphanumerics() {
        assert!(AccessKeyId::new("AKIAIOSFODNN7EXAMPLE").is_ok());
        assert!(AccessKeyId::new("akiaiosfodnn7example").is_err());
        assert!(AccessKeyId::new("AKIA").is_err());
    }

    #[test]
    fn campaign_names_are_safe_for_journal_keys() {
        assert!(CampaignName::new("q3-2026.rotation_1").is_ok());
        for bad in [
            "",
            "-leading",
            "has space",
            "has#hash",
            "a/b",
            &"x".repeat(65),
        ] {
            assert!(CampaignName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn organizational_unit_ids_follow_the_organizations_format() {
        assert!(OrganizationalUnitId::new("ou-ab12-cdef3456").is_ok());
        assert!(OrganizationalUnitId::new("r-ab12").is_ok());
        for bad in [
            "ou-ab12",
            "OU-AB12-CDEF3456",
            "r-",
            "ou-ab1-cdef3456",
            "123456789012",
        ] {
            assert!(OrganizationalUnitId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn identifiers_deserialize_through_validation() {
        let ok: AccountId = serde_json::from_str("\"000000000001\"").unwrap();
        assert_eq!(ok.as_str(), "000000000001");
        let err = serde_json::from_str::<AccountId>("\"1\"").unwrap_err();
        assert!(err.to_string().contains("exactly 12 digits"), "{err}");
    }
}
