//! What the user typed: clap structures and nothing else.
//!
//! Values that have rules (account ids, role names, …) are parsed into their validated
//! types here, so a malformed one is refused before anything is contacted.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use keyturn_planner::{ExternalId, RoleName};

/// Rotates IAM user access keys across every account of an AWS Organization.
#[derive(Debug, Parser)]
#[command(name = "keyturn", version, about, long_about = None)]
pub struct Cli {
    /// Where the journal lives: dynamodb://TABLE or sqlite://PATH.
    #[arg(
        long,
        global = true,
        env = "KEYTURN_JOURNAL",
        default_value = keyturn_journal::DEFAULT_LOCATION
    )]
    pub journal: String,

    /// More log lines on stderr (-v, -vv); KEYTURN_LOG takes a full filter.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// keyturn's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every IAM user access key in scope, across the organization.
    #[command(
        after_help = "Examples:\n  keyturn inventory\n  keyturn inventory --policy policy.toml -o json | jq '.[] | select(.age_days > 90)'\n  keyturn inventory --role-name KeyturnRole --external-id my-ext-id -o csv > keys.csv"
    )]
    Inventory(InventoryArgs),
    /// Manage the journal.
    #[command(subcommand)]
    Journal(JournalCommand),
}

/// Arguments of `keyturn inventory`.
#[derive(Debug, Args)]
pub struct InventoryArgs {
    /// The policy file whose [scope] selects accounts and users.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// The role to assume in member accounts (overrides the policy).
    #[arg(long, value_name = "NAME")]
    pub role_name: Option<RoleName>,
    /// The ExternalId the member role requires (overrides the policy).
    #[arg(long, value_name = "ID")]
    pub external_id: Option<ExternalId>,
    /// Output format; a table on a terminal, JSON otherwise.
    #[arg(short, long, value_enum)]
    pub output: Option<Format>,
    /// How many accounts are read at once.
    #[arg(long, default_value_t = keyturn_worker::inventory::DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
}

/// `keyturn journal …`.
#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// Create the journal (a DynamoDB table with its indexes, or a SQLite file); safe to repeat.
    Init,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// A JSON array of objects.
    Json,
    /// Comma-separated values with a header.
    Csv,
}

impl Format {
    /// The format asked for, or the default: a table on a terminal, JSON when piped.
    pub fn or_default(asked: Option<Format>) -> Format {
        use std::io::IsTerminal;
        asked.unwrap_or(if std::io::stdout().is_terminal() {
            Format::Table
        } else {
            Format::Json
        })
    }
}
