//! What the user typed: clap structures and nothing else.
//!
//! Values that have rules (account ids, role names, …) are parsed into their validated
//! types here, so a malformed one is refused before anything is contacted.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use keyturn_planner::{AccessKeyId, AccountId, CampaignName, ExternalId, RoleName, UserName};

/// Rotates IAM user access keys across every account of an AWS Organization.
#[derive(Debug, Parser)]
#[command(
    name = "keyturn",
    version,
    about,
    long_about = None,
    after_help = "Examples:\n  keyturn plan --policy policy.toml\n  keyturn --journal dynamodb://keyturn campaign start q3-rotation --policy policy.toml\n  keyturn --journal dynamodb://keyturn run q3-rotation --watch\n\nEvery command has examples in its own help: keyturn help COMMAND."
)]
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

    /// Log lines on stderr as text, or as one JSON object per line (for machines).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "KEYTURN_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

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
    #[command(
        subcommand,
        after_help = "Examples:\n  keyturn campaign start q3-rotation --policy policy.toml\n  keyturn campaign list -o json"
    )]
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
    #[command(
        subcommand,
        after_help = "Examples:\n  keyturn --journal dynamodb://keyturn journal init\n  keyturn --journal sqlite:///var/lib/keyturn/journal.db journal init"
    )]
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
    #[command(
        after_help = "Examples:\n  keyturn campaign start q3-rotation --policy policy.toml\n  KEYTURN_JOURNAL=dynamodb://keyturn keyturn campaign start prod-wave-1 --policy prod-ou.toml"
    )]
    Start {
        /// The campaign's name (letters, digits, '.', '_' and '-').
        name: CampaignName,
        /// The policy file.
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
    },
    /// List the campaigns of the journal.
    #[command(
        after_help = "Examples:\n  keyturn campaign list\n  keyturn --journal dynamodb://keyturn campaign list -o csv"
    )]
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
    #[command(
        after_help = "Examples:\n  keyturn --journal dynamodb://keyturn journal init\n  keyturn journal init    # sqlite://keyturn.db in the current directory"
    )]
    Init,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per event, with its span's fields.
    Json,
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

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::Cli;

    /// The example command lines of a help text: the indented lines after `Examples:`
    /// (or `Example:`), up to the first blank line.
    fn examples(help: &str) -> Vec<String> {
        let mut lines = help.lines().skip_while(|l| !l.starts_with("Example"));
        lines.next();
        lines
            .take_while(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_owned())
            .collect()
    }

    /// A shell line split into words, as far as keyturn's arguments go: environment
    /// assignments before the command are dropped, and the words stop at a pipe, a
    /// redirection or a comment. Handles single and double quotes.
    fn keyturn_words(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut word = String::new();
        let mut in_word = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\'' => {
                    in_word = true;
                    word.extend(chars.by_ref().take_while(|&c| c != '\''));
                }
                '"' => {
                    in_word = true;
                    while let Some(c) = chars.next() {
                        match c {
                            '"' => break,
                            '\\' => word.extend(chars.next()),
                            c => word.push(c),
                        }
                    }
                }
                '|' | '>' | '<' | ';' | '&' if !in_word => break,
                '#' if !in_word => break,
                c if c.is_whitespace() => {
                    if in_word {
                        words.push(std::mem::take(&mut word));
                        in_word = false;
                    }
                }
                c => {
                    in_word = true;
                    word.push(c);
                }
            }
        }
        if in_word {
            words.push(word);
        }
        let start = words
            .iter()
            .position(|w| !w.contains('='))
            .unwrap_or(words.len());
        words.split_off(start)
    }

    /// The subcommand path a parsed command line selects, e.g. `["campaign", "start"]`.
    fn path_of(words: &[String]) -> Vec<String> {
        let mut command = Cli::command();
        let matches = command
            .try_get_matches_from_mut(words)
            .expect("parsed once already");
        let mut path = Vec::new();
        let mut current = &matches;
        while let Some((name, sub)) = current.subcommand() {
            path.push(name.to_owned());
            current = sub;
        }
        path
    }

    /// Every command of the tree with its path below `keyturn` (the root's is empty),
    /// leaving out clap's generated `help`.
    fn walk(command: &clap::Command, path: Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
        let help = command
            .get_after_long_help()
            .or(command.get_after_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        out.push((path.clone(), help));
        for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut sub_path = path.clone();
            sub_path.push(sub.get_name().to_owned());
            walk(sub, sub_path, out);
        }
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_examples_that_parse_and_run_that_command() {
        let mut commands = Vec::new();
        walk(&Cli::command(), Vec::new(), &mut commands);
        // The walk goes down the whole tree, nested subcommands included.
        for nested in [
            ["campaign", "start"],
            ["campaign", "list"],
            ["journal", "init"],
        ] {
            assert!(
                commands.iter().any(|(path, _)| path == &nested),
                "the walk missed {nested:?}"
            );
        }
        let mut problems = Vec::new();
        for (path, help) in &commands {
            let shown = std::iter::once("keyturn")
                .chain(path.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" ");
            let examples = examples(help);
            if examples.is_empty() {
                problems.push(format!("`{shown}` has no examples in its help"));
            }
            for example in examples {
                let words = keyturn_words(&example);
                if words.first().map(String::as_str) != Some("keyturn") {
                    problems.push(format!("`{shown}`: `{example}` does not run keyturn"));
                    continue;
                }
                let cli = match Cli::try_parse_from(&words) {
                    Ok(cli) => cli,
                    Err(e) => {
                        problems.push(format!("`{shown}`: `{example}` does not parse: {e}"));
                        continue;
                    }
                };
                if let Err(e) = keyturn_journal::parse_location(&cli.journal) {
                    problems.push(format!("`{shown}`: `{example}`: {e}"));
                }
                // An example under a command runs that command (or one of its subcommands).
                if !path_of(&words).starts_with(path) {
                    problems.push(format!("`{shown}`: `{example}` runs another command"));
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn the_example_check_catches_missing_and_stale_examples() {
        assert!(examples("Some text\n\nNo examples here").is_empty());
        assert_eq!(
            examples("Examples:\n  keyturn verify\n  keyturn verify q3\n\nMore text"),
            ["keyturn verify", "keyturn verify q3"]
        );
        assert_eq!(
            keyturn_words(
                r#"KEYTURN_JOURNAL=sqlite://x.db keyturn rollback q3 --reason "it's \"used\"" --key 'A B' | jq . # note"#
            ),
            [
                "keyturn",
                "rollback",
                "q3",
                "--reason",
                r#"it's "used""#,
                "--key",
                "A B"
            ]
        );
        // A flag that does not exist, or a malformed value, is refused by the parser the
        // test uses.
        for stale in [
            "keyturn run q3 --no-such-flag",
            "keyturn audit --account 12345",
            "keyturn run q3 --concurrency 0",
        ] {
            assert!(
                Cli::try_parse_from(keyturn_words(stale)).is_err(),
                "{stale}"
            );
        }
        assert_eq!(
            path_of(&keyturn_words("keyturn campaign list -o json")),
            ["campaign", "list"]
        );
    }
}
