//! `keyturn inventory`: every IAM user access key in scope, across the organization.

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use keyturn_planner::inventory::{KeyRecord, sort_records};
use keyturn_planner::{Policy, Scope};
use keyturn_worker::inventory::{self, Inventory};
use keyturn_worker::{Sessions, session};
use serde::Serialize;

use crate::args::{Format, InventoryArgs};
use crate::exit::{Exit, Failure, Outcome};
use crate::output::{TableRow, write_rows};

/// One output row; the field names and order are a contract scripts depend on.
#[derive(Debug, Serialize)]
pub struct InventoryRow {
    account_id: String,
    account_name: String,
    user_name: String,
    access_key_id: String,
    status: &'static str,
    created_at: String,
    age_days: i64,
    last_used_at: Option<String>,
    last_used_service: Option<String>,
    last_used_region: Option<String>,
}

impl InventoryRow {
    fn new(key: &KeyRecord, now: DateTime<Utc>) -> Self {
        let last = key.last_used.as_ref();
        Self {
            account_id: key.account_id.to_string(),
            account_name: key.account_name.clone(),
            user_name: key.user_name.to_string(),
            access_key_id: key.access_key_id.to_string(),
            status: key.status.as_str(),
            created_at: rfc3339(key.created_at),
            age_days: key.age_days(now),
            last_used_at: last.map(|l| rfc3339(l.at)),
            last_used_service: last.and_then(|l| l.service.clone()),
            last_used_region: last.and_then(|l| l.region.clone()),
        }
    }
}

impl TableRow for InventoryRow {
    fn headers() -> &'static [&'static str] {
        &[
            "account",
            "name",
            "user",
            "access key",
            "status",
            "created",
            "age (days)",
            "last used",
            "service",
            "region",
        ]
    }

    fn cells(&self) -> Vec<String> {
        let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
        vec![
            self.account_id.clone(),
            self.account_name.clone(),
            self.user_name.clone(),
            self.access_key_id.clone(),
            self.status.to_owned(),
            self.created_at.clone(),
            self.age_days.to_string(),
            self.last_used_at
                .clone()
                .unwrap_or_else(|| "never".to_owned()),
            or_dash(&self.last_used_service),
            or_dash(&self.last_used_region),
        ]
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Loads the policy's scope (or the defaults) and applies the command-line overrides.
fn scope(args: &InventoryArgs) -> Result<Scope, Failure> {
    let mut scope = match &args.policy {
        Some(path) => load_policy(path)?.scope,
        None => Scope::default(),
    };
    if let Some(role) = &args.role_name {
        scope.role_name = role.clone();
    }
    if let Some(external_id) = &args.external_id {
        scope.external_id = Some(external_id.clone());
    }
    Ok(scope)
}

/// Reads and validates a policy file; any problem is invalid input.
pub fn load_policy(path: &Path) -> Result<Policy, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::new(
            Exit::InvalidInput,
            format!("cannot read policy file {}: {e}", path.display()),
        )
    })?;
    Policy::from_toml(&path.display().to_string(), &text)
        .map_err(|e| Failure::new(Exit::InvalidInput, e))
}

/// Runs the inventory and prints it.
pub async fn run(args: InventoryArgs) -> Outcome {
    let scope = scope(&args)?;
    let format = Format::or_default(args.output);
    let run_id = uuid_like_run_id();
    let sessions = Sessions::new(session::load_sdk_config().await, "inventory", &run_id).await?;
    let progress = crate::progress::Reporter::stderr();
    let inventory = inventory::collect_with_progress(
        &sessions,
        &scope,
        usize::from(args.concurrency),
        keyturn_worker::iam::Listing::Held,
        Some(&progress),
        &keyturn_journal::SystemClock,
    )
    .await?;
    progress.finish();
    let now = Utc::now();
    print(&inventory, format, now)?;
    report_failures(&inventory);
    Ok(if inventory.failures.is_empty() {
        Exit::Success
    } else {
        Exit::Partial
    })
}

fn print(inventory: &Inventory, format: Format, now: DateTime<Utc>) -> Result<(), Failure> {
    let mut keys: Vec<KeyRecord> = inventory
        .accounts
        .iter()
        .flat_map(|a| &a.users)
        .filter(|u| u.exclusion.is_none())
        .flat_map(|u| u.keys.iter().cloned())
        .collect();
    sort_records(&mut keys);
    let rows: Vec<InventoryRow> = keys.iter().map(|k| InventoryRow::new(k, now)).collect();
    let mut stdout = std::io::stdout().lock();
    write_rows(&mut stdout, format, &rows)
        .map_err(|e| Failure::new(Exit::Internal, format!("cannot write output: {e}")))
}

/// One line per failed account on stderr: its id, name and the AWS error code.
pub fn report_failures(inventory: &Inventory) {
    for failed in &inventory.failures {
        let message = failed.failure.message.replace('\n', " ");
        eprintln!(
            "account {} ({}) failed: {} in {}: {message}",
            failed.account.id, failed.account.name, failed.failure.code, failed.failure.operation
        );
    }
    let skipped: usize = inventory
        .accounts
        .iter()
        .flat_map(|a| &a.users)
        .filter(|u| u.exclusion.is_some())
        .count();
    if skipped > 0 {
        tracing::info!("{skipped} users out of scope (excluded or exempt)");
    }
}

/// A short random run id for session names and (later) journal actors.
fn uuid_like_run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}
