//! Shared helpers of the end-to-end scenarios: running the keyturn binary against an
//! emulator and reading ground truth back through the SDK.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use std::time::Duration;

use aws_credential_types::Credentials;
use chrono::{DateTime, SecondsFormat, Utc};
use keyturn_testbed::Emulator;
use keyturn_testbed::seed::{
    AccountSpec, OrgSpec, SeededKey, SeededOrg, UserSpec, member_config, seed,
};
use serde_json::{Value, json};

/// The outcome of one keyturn invocation.
#[derive(Debug)]
pub struct Run {
    /// The exit code.
    pub code: i32,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

impl Run {
    /// stdout parsed as JSON; panics with both streams when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// `keyturn --journal JOURNAL campaign start NAME --policy POLICY`, which must succeed.
pub fn start_campaign(emulator: &Emulator, dir: &Path, journal: &str, name: &str, policy: &str) {
    let start = keyturn(
        emulator,
        dir,
        &[
            "--journal",
            journal,
            "campaign",
            "start",
            name,
            "--policy",
            policy,
        ],
    );
    assert_eq!(start.code, 0, "campaign start {name}: {}", start.stderr);
}

/// Runs `keyturn ARGS` against the emulator, in `dir` (its working directory).
pub fn keyturn(emulator: &Emulator, dir: &Path, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyturn"));
    emulator.configure(&mut command);
    let output: Output = command
        .args(args)
        .current_dir(dir)
        .env_remove("KEYTURN_JOURNAL")
        .env_remove("KEYTURN_LOG")
        .output()
        .expect("run keyturn");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Starts `keyturn ARGS` (a `run --watch`, say) in the background, in `dir`: the
/// process, and its stderr line by line as it comes (stdout is not kept).
pub fn spawn_keyturn(
    emulator: &Emulator,
    dir: &Path,
    args: &[&str],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyturn"));
    emulator.configure(&mut command);
    let mut child = command
        .args(args)
        .current_dir(dir)
        .env_remove("KEYTURN_JOURNAL")
        .env_remove("KEYTURN_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start keyturn");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Runs `keyturn ARGS` like [`keyturn`], with extra environment variables set after the
/// usual ones are removed (for example `KEYTURN_LOG=debug`).
pub fn keyturn_env(emulator: &Emulator, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyturn"));
    emulator.configure(&mut command);
    let output: Output = command
        .args(args)
        .current_dir(dir)
        .env_remove("KEYTURN_JOURNAL")
        .env_remove("KEYTURN_LOG")
        .envs(env.iter().copied())
        .output()
        .expect("run keyturn");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A fresh temporary directory for one test, removed when dropped.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// Creates a new, empty directory.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "keyturn-e2e-{name}-{}-{}",
            std::process::id(),
            uuid_ish()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes a file in it and returns its path as text.
    pub fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write file");
        path.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn uuid_ish() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The inventory rows IAM holds for the given accounts, read back through the SDK with
/// per-key calls (independently of keyturn's credential-report path), as keyturn's
/// JSON would show them at `now`. Users whose name is in `skip_users` are left out.
pub async fn ground_truth(
    emulator: &Emulator,
    org: &SeededOrg,
    account_ids: &[&str],
    skip_users: &[&str],
    now: DateTime<Utc>,
) -> Vec<Value> {
    let mut rows = Vec::new();
    let all = std::iter::once(&org.management).chain(&org.accounts);
    for account in all.filter(|a| account_ids.contains(&a.id.as_str())) {
        let config = if account.id == org.management.id {
            emulator.sdk_config().await
        } else {
            member_config(emulator, &account.id).await
        };
        let iam = aws_sdk_iam::Client::new(&config);
        let users = iam.list_users().send().await.expect("ListUsers");
        for user in users.users() {
            if skip_users.contains(&user.user_name()) {
                continue;
            }
            let keys = iam
                .list_access_keys()
                .user_name(user.user_name())
                .send()
                .await
                .expect("ListAccessKeys");
            for key in keys.access_key_metadata() {
                let id = key.access_key_id().unwrap();
                let created = to_chrono(key.create_date().unwrap());
                let used = iam
                    .get_access_key_last_used()
                    .access_key_id(id)
                    .send()
                    .await
                    .expect("GetAccessKeyLastUsed");
                let used = used.access_key_last_used().unwrap();
                let (at, service, region) = match used.last_used_date() {
                    Some(at) => (
                        json!(rfc3339(to_chrono(at))),
                        json!(used.service_name()),
                        json!(used.region()),
                    ),
                    None => (Value::Null, Value::Null, Value::Null),
                };
                rows.push(json!({
                    "account_id": account.id,
                    "account_name": account.name,
                    "user_name": user.user_name(),
                    "access_key_id": id,
                    "status": key.status().unwrap().as_str(),
                    "created_at": rfc3339(created),
                    "age_days": (now - created).num_days().max(0),
                    "last_used_at": at,
                    "last_used_service": service,
                    "last_used_region": region,
                }));
            }
        }
    }
    rows.sort_by_key(sort_key);
    rows
}

/// The order keyturn prints rows in: account, user, creation, key.
pub fn sort_key(row: &Value) -> (String, String, String, String) {
    let field = |name: &str| row[name].as_str().unwrap_or_default().to_owned();
    (
        field("account_id"),
        field("user_name"),
        field("created_at"),
        field("access_key_id"),
    )
}

fn to_chrono(t: &aws_smithy_types_shim::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos()).unwrap()
}

/// The SDK's timestamp type, reached through the IAM crate's re-export.
mod aws_smithy_types_shim {
    pub use aws_sdk_iam::primitives::DateTime;
}

/// Asserts two row lists are equal, printing only the rows that differ.
pub fn assert_same_rows(actual: &[Value], expected: &[Value]) {
    let missing: Vec<&Value> = expected.iter().filter(|r| !actual.contains(r)).collect();
    let unexpected: Vec<&Value> = actual.iter().filter(|r| !expected.contains(r)).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty() && actual.len() == expected.len(),
        "{} rows expected, {} printed\nmissing ({}): {:#?}\nunexpected ({}): {:#?}",
        expected.len(),
        actual.len(),
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        unexpected.len(),
        unexpected.iter().take(5).collect::<Vec<_>>()
    );
}

/// An application that keeps signing calls with a key, every 200 ms, until aborted.
pub async fn keep_using(emulator: &Emulator, key: &SeededKey) -> tokio::task::JoinHandle<()> {
    let config = emulator
        .sdk_config_with(Credentials::new(
            key.access_key_id.as_str(),
            key.secret_access_key.as_str(),
            None,
            None,
            "app",
        ))
        .await;
    let sts = aws_sdk_sts::Client::new(&config);
    sts.get_caller_identity()
        .send()
        .await
        .expect("the application signs with its key");
    tokio::spawn(async move {
        loop {
            let _ = sts.get_caller_identity().send().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Seeds an organization of member accounts at the root, each with its users, and no
/// user in the management account.
pub async fn seed_flat(emulator: &Emulator, accounts: Vec<(&str, Vec<UserSpec>)>) -> SeededOrg {
    let spec = OrgSpec {
        management_users: vec![],
        accounts: accounts
            .into_iter()
            .map(|(name, users)| AccountSpec {
                name: name.into(),
                ou_path: vec![],
                users,
            })
            .collect(),
    };
    seed(emulator, &spec, Utc::now()).await
}
