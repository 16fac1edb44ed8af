//! What the user typed: clap structures and nothing else.
//!
//! Values that have rules (account ids, role names, …) are parsed into their validated
//! types here, so a malformed one is refused before anything is contacted.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use keyturn_planner::{AccessKeyId, AccountId, CampaignName, ExternalId, RoleName, UserName};

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
    /// Show what a campaign with this policy would do to each key (a dry run: nothing changes).
    #[command(
        after_help = "Examples:\n  keyturn plan --policy policy.toml\n  keyturn plan --policy policy.toml -o json | jq '.[] | select(.action == \"rotate\")'"
    )]
    Plan(PlanArgs),
    /// Start or list rotation campaigns.
    #[command(subcommand)]
    Campaign(CampaignCommand),
    /// Advance every key of a campaign as far as its gates allow.
    #[command(
        after_help = "Examples:\n  keyturn run q3-rotation\n  keyturn run q3-rotation --watch --concurrency 32\n  KEYTURN_JOURNAL=dynamodb://keyturn keyturn run q3-rotation"
    )]
    Run(RunArgs),
    /// Show where every key of a campaign stands.
    #[command(
        after_help = "Examples:\n  keyturn status q3-rotation\n  keyturn status q3-rotation -o json | jq '.keys[] | select(.state == \"blocked\")'"
    )]
    Status(StatusArgs),
    /// Reactivate an old key that was deactivated and not yet deleted.
    #[command(
        after_help = "Example:\n  keyturn rollback q3-rotation --key AKIAIOSFODNN7EXAMPLE --reason \"billing batch still uses it\""
    )]
    Rollback(RollbackArgs),
    /// The journal's events that match, oldest first, for audit questions.
    #[command(
        after_help = "Examples:\n  keyturn audit --key AKIAIOSFODNN7EXAMPLE\n  keyturn audit --account 012345678901 --since 2026-07-01 --until 2026-10-01 -o csv\n  keyturn audit --campaign q3 --event key-blocked -o jsonl"
    )]
    Audit(AuditArgs),
    /// Recompute every hash chain and report each modified, deleted or reordered event.
    #[command(after_help = "Examples:\n  keyturn verify\n  keyturn verify q3-rotation")]
    Verify {
        /// One campaign (default: every campaign of the journal).
        name: Option<CampaignName>,
    },
    /// Evidence for auditors: what a campaign did and where the scope stands now (CIS 2.11/2.12, IAM.3/IAM.8).
    #[command(
        after_help = "Examples:\n  keyturn report q3-rotation --format html --out q3.html\n  keyturn report q3-rotation --format csv > q3.csv"
    )]
    Report {
        /// The campaign.
        name: CampaignName,
        /// html (one self-contained file with charts), csv (per account) or json (everything).
        #[arg(long, value_parser = ["html", "csv", "json"], default_value = "html")]
        format: String,
        /// Write to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Manage the journal.
    #[command(subcommand)]
    Journal(JournalCommand),
}

/// Arguments of `keyturn audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this campaign.
    #[arg(long)]
    pub campaign: Option<CampaignName>,
    /// Only this account.
    #[arg(long)]
    pub account: Option<AccountId>,
    /// Only this user (with --account, --campaign or --key).
    #[arg(long)]
    pub user: Option<UserName>,
    /// The whole history of this key, as the old or the new key.
    #[arg(long, value_name = "ACCESS_KEY_ID")]
    pub key: Option<AccessKeyId>,
    /// Only this event type (e.g. key-deactivated, step-failed).
    #[arg(long, value_name = "TYPE")]
    pub event: Option<String>,
    /// Recorded at or after (RFC 3339, or a date: 2026-07-01).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Recorded before (RFC 3339, or a date).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Output format; a table on a terminal, JSON otherwise.
    #[arg(short, long, value_enum)]
    pub output: Option<Format>,
}

/// An instant as RFC 3339 or a date (midnight UTC).
fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
        .map_err(|_| {
            format!("{text:?} is neither RFC 3339 (2026-07-01T00:00:00Z) nor a date (2026-07-01)")
        })
}

/// Arguments of `keyturn plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The policy file.
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// Output format; a table on a terminal, JSON otherwise.
    #[arg(short, long, value_enum)]
    pub output: Option<Format>,
    /// How many accounts are read at once.
    #[arg(long, default_value_t = keyturn_worker::inventory::DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
}

/// `keyturn campaign …`.
#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// Record a new campaign with a snapshot of its policy (again with the identical policy: no change).
    Start {
        /// The campaign's name (letters, digits, '.', '_' and '-').
        name: CampaignName,
        /// The policy file.
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
    },
    /// List the campaigns of the journal.
    List {
        /// Output format; a table on a terminal, JSON otherwise.
        #[arg(short, long, value_enum)]
        output: Option<Format>,
    },
}

/// Arguments of `keyturn run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The campaign.
    pub name: CampaignName,
    /// How many accounts are worked at once.
    #[arg(long, default_value_t = keyturn_worker::inventory::DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Keep going until only blocked keys are left, sleeping until the next gate is due (Ctrl-C stops cleanly).
    #[arg(long)]
    pub watch: bool,
    /// How long an account claim lasts before another worker may take it over.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = humantime::parse_duration)]
    pub claim_ttl: std::time::Duration,
    /// How long to retry verifying a new key through IAM's propagation delay.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub verify_wait: std::time::Duration,
}

/// Arguments of `keyturn status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The campaign.
    pub name: CampaignName,
    /// Output format; a table on a terminal, JSON otherwise.
    #[arg(short, long, value_parser = ["table", "json"])]
    pub output: Option<String>,
}

/// Arguments of `keyturn rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The campaign.
    pub name: CampaignName,
    /// The old key to reactivate.
    #[arg(long, value_name = "ACCESS_KEY_ID")]
    pub key: AccessKeyId,
    /// Why (recorded in the journal).
    #[arg(long)]
    pub reason: String,
    /// How long the account claim lasts before another worker may take it over (a
    /// rollback that dies holds its account until then).
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = humantime::parse_duration)]
    pub claim_ttl: std::time::Duration,
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
    /// One JSON object per line.
    Jsonl,
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
