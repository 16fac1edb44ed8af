//! The demo driver behind `cargo xtask demo`: a whole rotation campaign against the local
//! emulator, in about a minute.
//!
//! It starts a fresh emulator, seeds an organization whose keys take every path
//! ([`demo_org`]), then runs the keyturn binary as an operator would: `journal init` on
//! a DynamoDB table, `plan`, `campaign start`, and `run` again and again as the gates
//! (a few seconds here) fall due. Between runs it plays the applications: each one
//! whose replacement is awaiting adoption reads its new key from the Secrets Manager
//! secret in its own account and signs a call with it; one slow application keeps using
//! its old key until keyturn notices, and only then switches. It ends with the
//! inventory and a check that no Active key older than `max_key_age` remains except the
//! blocked and skipped ones, each explained. Any failure (a keyturn command that fails,
//! a campaign that does not settle, a check that does not hold) exits non-zero, so the
//! demo is also a smoke test.
//!
//! Usage: `keyturn-demo --keyturn PATH/TO/keyturn`

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use chrono::{DateTime, Utc};
use keyturn_testbed::seed::{SeededOrg, demo_org, member_config, seed};
use keyturn_testbed::{Emulator, EmulatorOptions};
use serde_json::Value;

/// The journal: a DynamoDB table on the emulator, as a team would run it.
const JOURNAL: &str = "dynamodb://keyturn-demo";
const TABLE: &str = "keyturn-demo";
const CAMPAIGN: &str = "demo";
/// The policy's `max_key_age`, in days, for the final check.
const MAX_KEY_AGE_DAYS: i64 = 90;
/// The demo policy: real thresholds for age and use, gates of a few seconds.
const POLICY: &str = r#"[scope]
exclude_users = ["breakglass-*"]   # never touched (and reported as skipped)

[rotation]
allow_short_gates = true     # a demo: gates of seconds (production gates are a day or more)
max_key_age = "90d"          # Active and older than this: rotate
unused_after = "45d"         # Active and unused this long: deactivate, observe, delete
quiet_period = "8s"          # the old key must stay unused this long after delivery
adoption_timeout = "1h"      # still in use this long after delivery: blocked for a human
observation_period = "5s"    # a deactivated key stays Inactive this long before deletion
"#;
/// The user whose application is slow to switch (the first one of that name).
const SLOW_APP_USER: &str = "monitor";
/// How long the campaign may take before the demo gives up, and how many runs.
const CAMPAIGN_DEADLINE: Duration = Duration::from_secs(180);
const MAX_RUNS: usize = 25;

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let keyturn = match (args.next().as_deref(), args.next()) {
        (Some("--keyturn"), Some(path)) => PathBuf::from(path),
        _ => {
            eprintln!("usage: keyturn-demo --keyturn PATH");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("keyturn-demo-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return ExitCode::from(1);
    }
    let outcome = demo(keyturn, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    match outcome {
        Ok(()) => {
            println!(
                "\nThe demo passed in {}s.",
                started.elapsed().as_secs_f64().round()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nDEMO FAILED: {e}");
            ExitCode::from(1)
        }
    }
}

async fn demo(keyturn: PathBuf, dir: &Path) -> Result<(), String> {
    step("Starting the local AWS emulator (moto, on loopback)");
    let emulator = Emulator::start(EmulatorOptions::default());
    println!("emulator at {}", emulator.endpoint_url());

    step("Seeding an organization through the AWS SDK");
    let org = seed(&emulator, &demo_org(), Utc::now()).await;
    describe_org(&org);

    let mut demo = Demo {
        keyturn,
        dir: dir.to_owned(),
        emulator,
        org,
        transcript: String::new(),
        secrets: Vec::new(),
    };
    std::fs::write(dir.join("policy.toml"), POLICY)
        .map_err(|e| format!("cannot write the policy: {e}"))?;
    step("The campaign's policy, policy.toml (every account of the organization)");
    print!("{POLICY}");

    step("Create the journal: a DynamoDB table (with its indexes) on the emulator");
    demo.show(&["--journal", JOURNAL, "journal", "init"])?;

    step("What a campaign would do to each key (reads only)");
    demo.show(&["plan", "--policy", "policy.toml", "-o", "table"])?;

    step("Start the campaign: the journal records it with a snapshot of the policy");
    demo.show(&[
        "--journal",
        JOURNAL,
        "campaign",
        "start",
        CAMPAIGN,
        "--policy",
        "policy.toml",
    ])?;

    demo.drive().await?;

    step("Where every key of the campaign stands, and why");
    let status = demo.status_json()?;
    demo.show(&["--journal", JOURNAL, "status", CAMPAIGN, "-o", "table"])?;

    step("The organization's keys now");
    demo.show(&["inventory", "-o", "table"])?;

    step("Check: no Active key older than max_key_age, except blocked and skipped ones");
    let inventory = demo.json(&["inventory", "-o", "json"])?;
    demo.check(&inventory, &status).await
}

/// Prints the organization that was seeded.
fn describe_org(org: &SeededOrg) {
    let accounts = std::iter::once(&org.management).chain(&org.accounts);
    let users: usize = accounts.clone().map(|a| a.users.len()).sum();
    let keys: usize = accounts.flat_map(|a| &a.users).map(|u| u.keys.len()).sum();
    println!(
        "management account {} ({}), root {}, {} member accounts:",
        org.management.id,
        org.management.name,
        org.root_id,
        org.accounts.len()
    );
    let mut by_ou: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for account in &org.accounts {
        by_ou
            .entry(account.ou_path.join("/"))
            .or_default()
            .push(&account.name);
    }
    for (path, names) in &by_ou {
        let ou = if path.is_empty() {
            "(root)".to_owned()
        } else {
            format!("{path} ({})", org.ou(path))
        };
        println!("  {ou:<44} {}", names.join(", "));
    }
    println!(
        "{users} users, {keys} access keys. Among them: old keys in use, old keys unused or never"
    );
    println!(
        "used, Inactive keys, users with two keys (twins: both in use), breakglass-* users (excluded"
    );
    println!("by the policy) and vendor users tagged keyturn:exempt.");
}

/// The demo's state: the keyturn binary, its working directory, the emulator and org.
struct Demo {
    keyturn: PathBuf,
    dir: PathBuf,
    emulator: Emulator,
    org: SeededOrg,
    /// Everything keyturn printed, to check that no secret ever appears in it.
    transcript: String,
    /// Every delivered secret the applications read, for the same check.
    secrets: Vec<String>,
}

/// What one application has done about its new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlowApp {
    /// Its replacement is not delivered yet.
    NotYet,
    /// Its replacement is delivered but it still signs with the old key.
    StillOnOldKey,
    /// It switched.
    Switched,
}

impl Demo {
    /// Runs `keyturn ARGS` against the emulator in the demo directory; fails on a
    /// non-zero exit. keyturn's stderr (people's messages) is passed through.
    fn keyturn(&mut self, args: &[&str]) -> Result<String, String> {
        let mut command = Command::new(&self.keyturn);
        self.emulator.configure(&mut command);
        let output = command
            .args(args)
            .current_dir(&self.dir)
            .env_remove("KEYTURN_JOURNAL")
            .env_remove("KEYTURN_LOG")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.keyturn.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        self.transcript.push_str(&stdout);
        self.transcript.push_str(&stderr);
        for line in stderr.lines() {
            eprintln!("  (stderr) {line}");
        }
        if !output.status.success() {
            return Err(format!(
                "`keyturn {}` exited with {}",
                args.join(" "),
                output.status
            ));
        }
        Ok(stdout)
    }

    /// Shows the command, runs it and prints its output.
    fn show(&mut self, args: &[&str]) -> Result<String, String> {
        println!("$ keyturn {}", args.join(" "));
        let out = self.keyturn(args)?;
        print!("{out}");
        Ok(out)
    }

    /// Runs a command whose stdout is JSON, without showing it.
    fn json(&mut self, args: &[&str]) -> Result<Value, String> {
        let out = self.keyturn(args)?;
        serde_json::from_str(&out)
            .map_err(|e| format!("`keyturn {}` printed no JSON ({e})", args.join(" ")))
    }

    fn status_json(&mut self) -> Result<Value, String> {
        self.json(&["--journal", JOURNAL, "status", CAMPAIGN, "-o", "json"])
    }

    /// `keyturn run` until every key is settled or blocked, playing the applications in
    /// between and sleeping until the next gate is due.
    async fn drive(&mut self) -> Result<(), String> {
        let slow_app = self
            .org
            .accounts
            .iter()
            .find_map(|a| {
                let user = a.users.iter().find(|u| u.name == SLOW_APP_USER)?;
                Some((
                    a.id.clone(),
                    user.keys.first()?.access_key_id.clone(),
                    user.keys.first()?.secret_access_key.clone(),
                ))
            })
            .ok_or("the demo organization has no slow application")?;
        let (slow_account, slow_key, slow_secret) = slow_app;
        let mut slow = SlowApp::NotYet;
        let mut adopted: BTreeSet<String> = BTreeSet::new();
        let started = Instant::now();

        step("The campaign: run keyturn, let the applications switch, wait for the gates, repeat");
        println!(
            "Each `keyturn run` advances every key as far as its gates allow and says what it did"
        );
        println!(
            "(done), what waits until when (waiting; grouped by reason here) and how many keys are"
        );
        println!(
            "in each state. Between runs, [app] lines play the applications: each one whose new key"
        );
        println!(
            "awaits adoption reads it from the Secrets Manager secret in its own account and signs"
        );
        println!(
            "a call with it; the old key then goes quiet, and keyturn deactivates it, observes it,"
        );
        println!(
            "and deletes it. One application is slow and keeps using its old key for a while."
        );

        for round in 1..=MAX_RUNS {
            step(&format!(
                "Run {round} (+{}s since the first)",
                started.elapsed().as_secs()
            ));
            if slow == SlowApp::StillOnOldKey {
                self.sign(&slow_key, &slow_secret).await?;
                println!(
                    "[app] {slow_account} {SLOW_APP_USER}: the application signs with its OLD key {slow_key} once more"
                );
            }
            let args = ["--journal", JOURNAL, "run", CAMPAIGN];
            println!("$ keyturn {}", args.join(" "));
            let out = self.keyturn(&args)?;
            let report = RunReport::parse(&out);
            report.print();
            let noticed = report
                .waiting
                .iter()
                .any(|w| w.key == slow_key && w.reason.contains("still in use"));

            let status = self.status_json()?;
            let slow_state = keys(&status)
                .iter()
                .find(|k| k["old_access_key_id"] == slow_key.as_str())
                .and_then(|k| k["state"].as_str())
                .unwrap_or("unknown");
            if slow == SlowApp::StillOnOldKey && slow_state != "awaiting-adoption" {
                // Only if a run took longer than the quiet period to reach the account.
                slow = SlowApp::Switched;
                println!(
                    "[app] {slow_account} {SLOW_APP_USER}: keyturn moved the old key to {slow_state} before it saw the last use; the application stops using it"
                );
            }
            for key in keys(&status) {
                if key["state"] != "awaiting-adoption" {
                    continue;
                }
                let (Some(account), Some(user), Some(old), Some(new)) = (
                    key["account_id"].as_str(),
                    key["user_name"].as_str(),
                    key["old_access_key_id"].as_str(),
                    key["new_access_key_id"].as_str(),
                ) else {
                    return Err(format!("a status entry without its keys: {key}"));
                };
                if adopted.contains(new) {
                    continue;
                }
                if old == slow_key {
                    match slow {
                        SlowApp::NotYet => {
                            slow = SlowApp::StillOnOldKey;
                            println!(
                                "[app] {account} {user}: a slow application; it keeps signing with its old key for now"
                            );
                            continue;
                        }
                        SlowApp::StillOnOldKey if !noticed => continue,
                        SlowApp::StillOnOldKey | SlowApp::Switched => {
                            slow = SlowApp::Switched;
                            println!(
                                "[app] {account} {user}: keyturn saw the old key still in use and waits; the application now switches"
                            );
                        }
                    }
                }
                let arn = self.adopt(account, user, new).await?;
                adopted.insert(new.to_owned());
                println!(
                    "[app] {account} {user}: read keyturn/{user} from Secrets Manager, signed GetCallerIdentity with {new} as {arn}"
                );
            }

            let counts = &status["counts"];
            let open: u64 = ["pending", "awaiting-adoption", "observing"]
                .iter()
                .filter_map(|s| counts[*s].as_u64())
                .sum();
            if open == 0 {
                println!(
                    "\nNothing is pending, awaiting adoption or observing: the campaign has settled (+{}s).",
                    started.elapsed().as_secs()
                );
                return Ok(());
            }
            if started.elapsed() > CAMPAIGN_DEADLINE {
                break;
            }
            let wait = report.next_due(&status);
            println!(
                "\n{open} {} still moving; the next gate is due in {}s: waiting.",
                if open == 1 { "key" } else { "keys" },
                wait.as_secs()
            );
            tokio::time::sleep(wait).await;
        }
        Err(format!(
            "the campaign did not settle within {MAX_RUNS} runs or {}s",
            CAMPAIGN_DEADLINE.as_secs()
        ))
    }

    /// The application of `user` in `account` reads its new key from the secret keyturn
    /// delivered, and signs a call with it. Returns the identity it signed as.
    async fn adopt(&mut self, account: &str, user: &str, new: &str) -> Result<String, String> {
        let config = if account == self.org.management.id {
            self.emulator.sdk_config().await
        } else {
            member_config(&self.emulator, account).await
        };
        let secret = aws_sdk_secretsmanager::Client::new(&config)
            .get_secret_value()
            .secret_id(format!("keyturn/{user}"))
            .send()
            .await
            .map_err(|e| format!("GetSecretValue keyturn/{user} in {account}: {e:?}"))?;
        let value: Value = secret
            .secret_string()
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| format!("the secret keyturn/{user} in {account} is not JSON"))?;
        if value["AccessKeyId"] != new {
            return Err(format!(
                "the secret keyturn/{user} in {account} holds {}, not the new key {new}",
                value["AccessKeyId"]
            ));
        }
        let secret_key = value["SecretAccessKey"]
            .as_str()
            .ok_or_else(|| format!("the secret keyturn/{user} in {account} has no secret key"))?
            .to_owned();
        self.secrets.push(secret_key.clone());
        self.sign(new, &secret_key).await
    }

    /// Signs STS GetCallerIdentity with a key, as an application using it would; moto
    /// records the key's last use at once.
    async fn sign(&self, key: &str, secret: &str) -> Result<String, String> {
        let config = self
            .emulator
            .sdk_config_with(Credentials::new(key, secret, None, None, "application"))
            .await;
        let who = aws_sdk_sts::Client::new(&config)
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| format!("GetCallerIdentity signed with {key}: {e:?}"))?;
        Ok(who.arn().unwrap_or("?").to_owned())
    }

    /// The final check, from `inventory -o json` and `status -o json`.
    async fn check(&mut self, inventory: &Value, status: &Value) -> Result<(), String> {
        let now = Utc::now();
        let rows = inventory
            .as_array()
            .ok_or("the inventory is not a JSON array")?;
        let by_key: BTreeMap<&str, &Value> = keys(status)
            .iter()
            .filter_map(|k| Some((k["old_access_key_id"].as_str()?, k)))
            .collect();
        let mut problems = Vec::new();
        let mut exceptions = 0;
        println!(
            "Active keys older than {MAX_KEY_AGE_DAYS}d in the inventory, and why each is left:"
        );
        for row in rows {
            let key = row["access_key_id"].as_str().unwrap_or("?");
            let created = row["created_at"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .ok_or_else(|| format!("inventory row without created_at: {row}"))?;
            let old = now - created.with_timezone(&Utc) > chrono::Duration::days(MAX_KEY_AGE_DAYS);
            if row["status"] != "Active" || !old {
                continue;
            }
            let who = format!(
                "{} {} {key} ({} days)",
                row["account_id"].as_str().unwrap_or("?"),
                row["user_name"].as_str().unwrap_or("?"),
                row["age_days"]
            );
            match by_key.get(key) {
                Some(entry) if matches!(entry["state"].as_str(), Some("blocked" | "skipped")) => {
                    exceptions += 1;
                    println!(
                        "  {who}: {}, {}",
                        entry["state"].as_str().unwrap_or_default(),
                        entry["reason"].as_str().unwrap_or_default()
                    );
                }
                Some(entry) => problems.push(format!(
                    "{who} is Active and older than {MAX_KEY_AGE_DAYS}d, but the campaign has it {}",
                    entry["state"]
                )),
                None => problems.push(format!(
                    "{who} is Active and older than {MAX_KEY_AGE_DAYS}d, and the campaign does not know it"
                )),
            }
        }
        let listed: BTreeSet<&str> = rows
            .iter()
            .filter_map(|r| r["access_key_id"].as_str())
            .collect();
        let unlisted: Vec<&Value> = keys(status)
            .iter()
            .filter(|k| {
                k["state"] == "skipped"
                    && k["old_access_key_id"]
                        .as_str()
                        .is_some_and(|key| !listed.contains(key))
            })
            .collect();
        if !unlisted.is_empty() {
            println!("Also skipped, and left out of the inventory as exempt:");
            for k in &unlisted {
                println!(
                    "  {} {} {}: skipped, {}",
                    k["account_id"].as_str().unwrap_or("?"),
                    k["user_name"].as_str().unwrap_or("?"),
                    k["old_access_key_id"].as_str().unwrap_or("?"),
                    k["reason"].as_str().unwrap_or_default()
                );
            }
        }

        for k in keys(status) {
            if k["state"] == "failed" {
                problems.push(format!("a key failed: {k}"));
            }
            if let Some(new) = k["new_access_key_id"].as_str()
                && k["state"] == "completed"
            {
                let active = rows
                    .iter()
                    .any(|r| r["access_key_id"] == new && r["status"] == "Active");
                let old_gone = !listed.contains(k["old_access_key_id"].as_str().unwrap_or(""));
                if !active || !old_gone {
                    problems.push(format!(
                        "rotation of {} is completed but IAM shows the new key {} and the old key {}",
                        k["old_access_key_id"],
                        if active { "Active" } else { "not Active" },
                        if old_gone { "gone" } else { "still there" }
                    ));
                }
            }
        }
        let journal = self.journal_text().await?;
        let leaked = self
            .secrets
            .iter()
            .filter(|s| self.transcript.contains(s.as_str()) || journal.contains(s.as_str()))
            .count();
        if leaked > 0 {
            problems.push(format!(
                "{leaked} delivered secrets appear in keyturn's output or in the journal"
            ));
        }
        if self.secrets.is_empty() {
            problems.push("no application read a delivered secret".to_owned());
        }

        println!();
        let counts = &status["counts"];
        let count = |s: &str| counts[s].as_u64().unwrap_or(0);
        let rotated = keys(status)
            .iter()
            .filter(|k| k["state"] == "completed" && k["new_access_key_id"].is_string())
            .count();
        println!(
            "The campaign rotated {rotated} keys, deleted {} Inactive ones and retired {} unused \
             ones; {} are blocked and {} skipped.",
            count("completed") - rotated as u64,
            count("retired"),
            count("blocked"),
            count("skipped"),
        );
        println!(
            "Of the {} keys in the inventory, {exceptions} are Active and older than \
             {MAX_KEY_AGE_DAYS}d: each is blocked or skipped, as explained above.",
            rows.len()
        );
        println!(
            "The {} delivered secrets the applications read appear nowhere in keyturn's output \
             or in the journal ({} bytes of DynamoDB items).",
            self.secrets.len(),
            journal.len()
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} problems:\n  {}",
                problems.len(),
                problems.join("\n  ")
            ))
        }
    }

    /// Every item of the journal's DynamoDB table, as text (for the secret check).
    async fn journal_text(&self) -> Result<String, String> {
        let dynamodb = aws_sdk_dynamodb::Client::new(&self.emulator.sdk_config().await);
        let mut text = String::new();
        let mut pages = dynamodb.scan().table_name(TABLE).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| format!("Scan {TABLE}: {e:?}"))?;
            for item in page.items() {
                text.push_str(&format!("{item:?}\n"));
            }
        }
        Ok(text)
    }
}

/// The `keys` array of a status document.
fn keys(status: &Value) -> &[Value] {
    status["keys"].as_array().map_or(&[], Vec::as_slice)
}

/// One `waiting` line of `keyturn run`.
#[derive(Debug)]
struct Waiting {
    key: String,
    until: Option<DateTime<Utc>>,
    reason: String,
}

/// `keyturn run`'s stdout, read back.
#[derive(Debug, Default)]
struct RunReport {
    done: Vec<String>,
    waiting: Vec<Waiting>,
    other: Vec<String>,
}

impl RunReport {
    fn parse(out: &str) -> Self {
        let mut report = Self::default();
        for line in out.lines() {
            if line.starts_with("done ") {
                report.done.push(line.to_owned());
            } else if let Some(rest) = line.strip_prefix("waiting ") {
                // "waiting  ACCOUNT USER KEY until TIME|later: REASON"
                let (head, reason) = rest.split_once(": ").unwrap_or((rest, ""));
                let mut words = head.split_whitespace();
                let key = words.nth(2).unwrap_or_default().to_owned();
                let until = words
                    .nth(1)
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc));
                report.waiting.push(Waiting {
                    key,
                    until,
                    reason: reason.to_owned(),
                });
            } else if !line.trim().is_empty() {
                report.other.push(line.to_owned());
            }
        }
        report
    }

    /// Prints what was done line by line, and the waiting keys grouped by reason.
    fn print(&self) {
        for line in &self.done {
            println!("{line}");
        }
        let mut by_reason: BTreeMap<&str, Vec<&Waiting>> = BTreeMap::new();
        for w in &self.waiting {
            by_reason.entry(&w.reason).or_default().push(w);
        }
        for (reason, waiting) in by_reason {
            let until = waiting.iter().filter_map(|w| w.until).min().map_or_else(
                || "until another key moves".to_owned(),
                |t| format!("first due {}", t.format("%H:%M:%S")),
            );
            let keys = match waiting.len() {
                1 => format!("1 key ({})", waiting[0].key),
                n => format!("{n} keys"),
            };
            println!("waiting  {keys}, {until}: {reason}");
        }
        for line in &self.other {
            if line.starts_with("busy") {
                println!("{line}");
            } else {
                println!("states   {line}");
            }
        }
    }

    /// How long to sleep before the next run: until the earliest gate that is still in
    /// the future (the run's waiting lines, else the status' next checks), plus a second
    /// for the whole seconds they are printed in; at least one second.
    fn next_due(&self, status: &Value) -> Duration {
        let now = Utc::now();
        let from_status = keys(status).iter().filter_map(|k| {
            k["next_check_at"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
        });
        let next = earliest_after(self.waiting.iter().filter_map(|w| w.until), now)
            .or_else(|| earliest_after(from_status, now))
            .unwrap_or(now);
        (next - now).to_std().unwrap_or_default() + Duration::from_secs(1)
    }
}

/// The earliest of `times` after `now`.
fn earliest_after(
    times: impl Iterator<Item = DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    times.filter(|t| *t > now).min()
}

fn step(title: &str) {
    println!("\n==> {title}\n");
}
