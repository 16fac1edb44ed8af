//! Where a journal lives: parsing `dynamodb://TABLE` and `sqlite://PATH`.

use std::fmt;
use std::path::PathBuf;

use crate::error::JournalError;

/// The environment variable that names the journal location.
pub const ENV_VAR: &str = "KEYTURN_JOURNAL";

/// The location used when none is given: a SQLite file in the working directory.
pub const DEFAULT_LOCATION: &str = "sqlite://keyturn.db";

const DYNAMODB_SCHEME: &str = "dynamodb://";
const SQLITE_SCHEME: &str = "sqlite://";

/// A parsed journal location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalLocation {
    /// A DynamoDB table, in the account and region of the AWS configuration in use.
    DynamoDb {
        /// The table name (3 to 255 characters of `a-z A-Z 0-9 _ - .`).
        table: String,
    },
    /// A SQLite file; relative paths are relative to the working directory.
    Sqlite {
        /// The file's path.
        path: PathBuf,
    },
}

impl fmt::Display for JournalLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalLocation::DynamoDb { table } => write!(f, "{DYNAMODB_SCHEME}{table}"),
            JournalLocation::Sqlite { path } => write!(f, "{SQLITE_SCHEME}{}", path.display()),
        }
    }
}

impl std::str::FromStr for JournalLocation {
    type Err = JournalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_location(s)
    }
}

/// Parses `dynamodb://TABLE` or `sqlite://PATH` (`sqlite://keyturn.db` is relative,
/// `sqlite:///var/lib/keyturn.db` absolute).
pub fn parse_location(s: &str) -> Result<JournalLocation, JournalError> {
    if let Some(table) = s.strip_prefix(DYNAMODB_SCHEME) {
        validate_table_name(table)?;
        return Ok(JournalLocation::DynamoDb {
            table: table.to_owned(),
        });
    }
    if let Some(path) = s.strip_prefix(SQLITE_SCHEME) {
        if path.is_empty() {
            return Err(JournalError::rejected(format!(
                "the journal location `{}` names no file: write sqlite://PATH, for example \
                 {DEFAULT_LOCATION} or sqlite:///var/lib/keyturn/journal.db",
                s.escape_debug()
            )));
        }
        if path.contains('\0') {
            return Err(JournalError::rejected(
                "the journal location's file path contains a NUL character",
            ));
        }
        return Ok(JournalLocation::Sqlite {
            path: PathBuf::from(path),
        });
    }
    Err(JournalError::rejected(format!(
        "the journal location `{}` is not understood: use dynamodb://TABLE for a shared \
         DynamoDB table or sqlite://PATH for a local file",
        s.escape_debug()
    )))
}

/// Checks a DynamoDB table name: 3 to 255 characters of `a-z`, `A-Z`, `0-9`, `_`, `-`
/// and `.`.
pub fn validate_table_name(table: &str) -> Result<(), JournalError> {
    let len = table.len();
    if !(3..=255).contains(&len) {
        return Err(JournalError::rejected(format!(
            "the DynamoDB table name `{}` has {len} characters; it needs 3 to 255",
            table.escape_debug()
        )));
    }
    if let Some(bad) = table
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(JournalError::rejected(format!(
            "the DynamoDB table name `{}` contains `{}`; use only letters, digits, `_`, `-` \
             and `.`",
            table.escape_debug(),
            bad.escape_debug()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_and_displays_them_back() {
        for (text, expected) in [
            (
                "dynamodb://keyturn-journal",
                JournalLocation::DynamoDb {
                    table: "keyturn-journal".into(),
                },
            ),
            (
                "dynamodb://a.b_c-1",
                JournalLocation::DynamoDb {
                    table: "a.b_c-1".into(),
                },
            ),
            (
                "sqlite://keyturn.db",
                JournalLocation::Sqlite {
                    path: "keyturn.db".into(),
                },
            ),
            (
                "sqlite:///var/lib/keyturn.db",
                JournalLocation::Sqlite {
                    path: "/var/lib/keyturn.db".into(),
                },
            ),
        ] {
            let parsed = parse_location(text).unwrap();
            assert_eq!(parsed, expected);
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(
            DEFAULT_LOCATION.parse::<JournalLocation>().unwrap(),
            JournalLocation::Sqlite {
                path: "keyturn.db".into()
            }
        );
    }

    #[test]
    fn refuses_bad_tables_and_unknown_schemes_naming_both_forms() {
        for bad in [
            "dynamodb://ab",
            "dynamodb://",
            "dynamodb://has space",
            "dynamodb://tab/le",
            &format!("dynamodb://{}", "t".repeat(256)),
            "sqlite://",
        ] {
            assert!(
                matches!(parse_location(bad), Err(JournalError::Rejected(_))),
                "{bad}"
            );
        }
        assert!(parse_location(&format!("dynamodb://{}", "t".repeat(255))).is_ok());
        for unknown in ["keyturn.db", "postgres://x", "DynamoDB://t", ""] {
            let message = parse_location(unknown).unwrap_err().to_string();
            assert!(
                message.contains("dynamodb://TABLE") && message.contains("sqlite://PATH"),
                "{message}"
            );
        }
    }
}
