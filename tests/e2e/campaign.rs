//! Rotation campaigns end to end: the keyturn binary against the emulator, with gates
//! of a few seconds, checked against what IAM and Secrets Manager hold.
//!
//! Every scenario has its own emulator and working directory. Gates are seconds long
//! (`quiet_period`, `observation_period` = 2s), so a scenario sleeps a few seconds
//! between runs; behaviour is asserted against IAM and Secrets Manager read through the
//! SDK, not only against what keyturn says about itself.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use aws_credential_types::Credentials;
use chrono::{DateTime, Utc};
use keyturn_testbed::seed::{
    AccountSpec, KeySpec, OrgSpec, SeededKey, SeededOrg, UserSpec, member_config, seed,
};
use keyturn_testbed::{Emulator, EmulatorOptions, FaultRule};
use serde_json::Value;
use support::{Run, TempDir, ground_truth, keep_using, keyturn, keyturn_env, seed_flat};

const POLICY: &str = r#"
[scope]
exclude_users = ["breakglass-*"]

[rotation]
allow_short_gates = true
max_key_age = "90d"
unused_after = "45d"
quiet_period = "2s"
adoption_timeout = "1h"
observation_period = "2s"
"#;

async fn one_account(users: Vec<UserSpec>) -> (Emulator, SeededOrg) {
    let emulator = Emulator::start(EmulatorOptions::default());
    let spec = OrgSpec {
        management_users: vec![],
        accounts: vec![AccountSpec {
            name: "app".into(),
            ou_path: vec![],
            users,
        }],
    };
    let org = seed(&emulator, &spec, Utc::now()).await;
    (emulator, org)
}

fn status(emulator: &Emulator, dir: &TempDir, journal: &str) -> Value {
    let run = keyturn(
        emulator,
        dir.path(),
        &["--journal", journal, "status", "c1", "-o", "json"],
    );
    assert_eq!(run.code, 0, "status: {}", run.stderr);
    run.json()
}

fn key_entry<'a>(status: &'a Value, old: &str) -> &'a Value {
    status["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["old_access_key_id"] == old)
        .unwrap_or_else(|| panic!("no entry for {old}: {status:#}"))
}

fn run_ok(emulator: &Emulator, dir: &TempDir, journal: &str) -> String {
    let run = keyturn(emulator, dir.path(), &["--journal", journal, "run", "c1"]);
    assert_eq!(run.code, 0, "run: {}\n{}", run.stdout, run.stderr);
    run.stdout
}

async fn keys_of(emulator: &Emulator, account: &str, user: &str) -> Vec<(String, String)> {
    let iam = aws_sdk_iam::Client::new(&member_config(emulator, account).await);
    let out = iam
        .list_access_keys()
        .user_name(user)
        .send()
        .await
        .expect("ListAccessKeys");
    out.access_key_metadata()
        .iter()
        .map(|k| {
            (
                k.access_key_id().unwrap().to_owned(),
                k.status().unwrap().as_str().to_owned(),
            )
        })
        .collect()
}

/// Signs a call with the key, as an application that switched to it would.
async fn use_key(emulator: &Emulator, key_id: &str, secret: &str) {
    let config = emulator
        .sdk_config_with(aws_credential_types::Credentials::new(
            key_id, secret, None, None, "app",
        ))
        .await;
    aws_sdk_sts::Client::new(&config)
        .get_caller_identity()
        .send()
        .await
        .expect("GetCallerIdentity with the key");
}

async fn delivered_secret(emulator: &Emulator, account: &str, user: &str) -> Value {
    let sm = aws_sdk_secretsmanager::Client::new(&member_config(emulator, account).await);
    let out = sm
        .get_secret_value()
        .secret_id(format!("keyturn/{user}"))
        .send()
        .await
        .expect("GetSecretValue");
    serde_json::from_str(out.secret_string().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_old_key_in_use_is_rotated_through_every_gate() {
    let (emulator, org) = one_account(vec![UserSpec::new(
        "app",
        vec![KeySpec::active(120, Some(1))],
    )])
    .await;
    let account = &org.accounts[0].id;
    let old = org.accounts[0].users[0].keys[0].access_key_id.clone();
    let dir = TempDir::new("campaign-rotate");
    let journal = "sqlite://journal.db";
    let policy = dir.write("policy.toml", POLICY);

    support::start_campaign(&emulator, dir.path(), journal, "c1", &policy);

    // First run: the replacement is created, delivered to Secrets Manager and verified.
    let out = run_ok(&emulator, &dir, journal);
    assert!(out.contains("verified"), "{out}");
    let s = status(&emulator, &dir, journal);
    let entry = key_entry(&s, &old);
    assert_eq!(entry["state"], "awaiting-adoption", "{s:#}");
    let new = entry["new_access_key_id"].as_str().unwrap().to_owned();
    let secret = delivered_secret(&emulator, account, "app").await;
    assert_eq!(secret["AccessKeyId"], new.as_str());
    let mut keys = keys_of(&emulator, account, "app").await;
    keys.sort();
    let mut expected = vec![
        (old.clone(), "Active".to_owned()),
        (new.clone(), "Active".to_owned()),
    ];
    expected.sort();
    assert_eq!(
        keys, expected,
        "the old key stays Active until the application switched"
    );
    let secret_value = secret["SecretAccessKey"].as_str().unwrap().to_owned();
    assert!(!out.contains(&secret_value), "no secret on stdout");

    // The application switches to the new key; after the quiet period the old key is deactivated.
    use_key(&emulator, &new, &secret_value).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let out = run_ok(&emulator, &dir, journal);
    assert!(out.contains("deactivated"), "{out}");
    assert_eq!(
        key_entry(&status(&emulator, &dir, journal), &old)["state"],
        "observing"
    );
    assert!(
        keys_of(&emulator, account, "app")
            .await
            .contains(&(old.clone(), "Inactive".to_owned()))
    );

    // After the observation period it is deleted.
    tokio::time::sleep(Duration::from_secs(3)).await;
    run_ok(&emulator, &dir, journal);
    let s = status(&emulator, &dir, journal);
    assert_eq!(key_entry(&s, &old)["state"], "completed", "{s:#}");
    assert_eq!(
        keys_of(&emulator, account, "app").await,
        vec![(new.clone(), "Active".to_owned())]
    );

    let db = std::fs::read(dir.path().join("journal.db")).unwrap();
    assert!(
        !String::from_utf8_lossy(&db).contains(&secret_value),
        "no secret in the journal"
    );
}

// ---------------------------------------------------------------------------------------
// A test bed: one emulator, one seeded organization, one working directory and journal.
// ---------------------------------------------------------------------------------------

/// The policy of most scenarios, with the adoption timeout given.
fn policy(adoption_timeout: &str) -> String {
    POLICY.replace(
        "adoption_timeout = \"1h\"",
        &format!("adoption_timeout = \"{adoption_timeout}\""),
    )
}

/// An emulator with a seeded organization, a working directory with `policy.toml`, and
/// a journal; everything keyturn prints is kept, to search it for secrets.
struct Bed {
    emulator: Emulator,
    org: SeededOrg,
    dir: TempDir,
    journal: String,
    printed: Mutex<String>,
}

impl Bed {
    /// Member accounts named as given, each with its users; a SQLite journal.
    async fn new(name: &str, accounts: Vec<(&str, Vec<UserSpec>)>, policy: &str) -> Self {
        Self::with_journal(name, accounts, policy, "sqlite://journal.db").await
    }

    async fn with_journal(
        name: &str,
        accounts: Vec<(&str, Vec<UserSpec>)>,
        policy: &str,
        journal: &str,
    ) -> Self {
        let emulator = Emulator::start(EmulatorOptions::default());
        let org = seed_flat(&emulator, accounts).await;
        let dir = TempDir::new(name);
        dir.write("policy.toml", policy);
        Self {
            emulator,
            org,
            dir,
            journal: journal.to_owned(),
            printed: Mutex::new(String::new()),
        }
    }

    /// `keyturn --journal JOURNAL ARGS`, its output kept.
    fn kt(&self, args: &[&str]) -> Run {
        self.kt_env(args, &[])
    }

    fn kt_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut all = vec!["--journal", self.journal.as_str()];
        all.extend_from_slice(args);
        let run = keyturn_env(&self.emulator, self.dir.path(), &all, env);
        let mut printed = self.printed.lock().unwrap();
        printed.push_str(&run.stdout);
        printed.push_str(&run.stderr);
        run
    }

    fn policy_path(&self) -> String {
        self.dir.path().join("policy.toml").display().to_string()
    }

    /// `campaign start c1 --policy policy.toml`, which must succeed.
    fn start(&self) {
        let policy = self.policy_path();
        let run = self.kt(&["campaign", "start", "c1", "--policy", &policy]);
        assert_eq!(run.code, 0, "campaign start: {}", run.stderr);
    }

    /// `run c1`, which must exit 0; its stdout.
    fn run(&self) -> String {
        self.run_with(&[], &[])
    }

    fn run_with(&self, extra: &[&str], env: &[(&str, &str)]) -> String {
        let mut args = vec!["run", "c1"];
        args.extend_from_slice(extra);
        let run = self.kt_env(&args, env);
        assert_eq!(run.code, 0, "run: {}\n{}", run.stdout, run.stderr);
        // The run's closing counts come from its own account of the campaign (the state
        // it loaded and what it appended), not from a second read: they must be what
        // the journal says.
        let printed: BTreeMap<String, u64> = run
            .stdout
            .lines()
            .last()
            .unwrap_or_default()
            .split(", ")
            .filter(|part| !part.is_empty())
            .map(|part| {
                let (n, state) = part.split_once(' ').expect("`N state` in the counts line");
                (state.to_owned(), n.parse().expect("a count"))
            })
            .collect();
        assert_eq!(
            printed,
            counts(&self.status()),
            "the run's closing counts against the journal's: {}",
            run.stdout
        );
        run.stdout
    }

    /// `status c1 -o json`.
    fn status(&self) -> Value {
        let run = self.kt(&["status", "c1", "-o", "json"]);
        assert_eq!(run.code, 0, "status: {}", run.stderr);
        run.json()
    }

    /// The status entry of an old key.
    fn entry(&self, old: &str) -> Value {
        key_entry(&self.status(), old).clone()
    }

    fn account(&self, name: &str) -> String {
        self.org.account(name).id.clone()
    }

    /// The `index`th seeded key of a user of a member account.
    fn seeded(&self, account: &str, user: &str, index: usize) -> SeededKey {
        self.org
            .account(account)
            .users
            .iter()
            .find(|u| u.name == user)
            .unwrap_or_else(|| panic!("no user {user} in {account}"))
            .keys[index]
            .clone()
    }

    fn key_id(&self, account: &str, user: &str, index: usize) -> String {
        self.seeded(account, user, index).access_key_id
    }

    /// The user's keys as IAM lists them: (id, status), sorted.
    async fn keys(&self, account: &str, user: &str) -> Vec<(String, String)> {
        let mut keys = keys_of(&self.emulator, &self.account(account), user).await;
        keys.sort();
        keys
    }

    async fn iam(&self, account: &str) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&member_config(&self.emulator, &self.account(account)).await)
    }

    async fn secrets_manager(&self, account: &str) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(
            &member_config(&self.emulator, &self.account(account)).await,
        )
    }

    /// The names of every secret of the account.
    async fn secret_names(&self, account: &str) -> Vec<String> {
        let sm = self.secrets_manager(account).await;
        let out = sm.list_secrets().send().await.expect("ListSecrets");
        out.secret_list()
            .iter()
            .filter_map(|s| s.name().map(str::to_owned))
            .collect()
    }

    /// Every version of the user's delivered secret: (AccessKeyId, SecretAccessKey).
    async fn delivered(&self, account: &str, user: &str) -> Vec<(String, String)> {
        let sm = self.secrets_manager(account).await;
        let name = format!("keyturn/{user}");
        let versions = sm
            .list_secret_version_ids()
            .secret_id(&name)
            .send()
            .await
            .expect("ListSecretVersionIds");
        let mut delivered = Vec::new();
        for version in versions.versions() {
            let value = sm
                .get_secret_value()
                .secret_id(&name)
                .version_id(version.version_id().unwrap())
                .send()
                .await
                .expect("GetSecretValue");
            let doc: Value = serde_json::from_str(value.secret_string().unwrap()).unwrap();
            delivered.push((
                doc["AccessKeyId"].as_str().unwrap().to_owned(),
                doc["SecretAccessKey"].as_str().unwrap().to_owned(),
            ));
        }
        delivered
    }

    /// Asserts that the current delivered secret of the user is `new_key`, that its
    /// secret authenticates as the user, and returns that secret.
    async fn assert_delivered(&self, account: &str, user: &str, new_key: &str) -> String {
        let secret = delivered_secret(&self.emulator, &self.account(account), user).await;
        assert_eq!(secret["AccessKeyId"], new_key, "{secret:#}");
        assert_eq!(secret["UserName"], user);
        assert_eq!(secret["AccountId"], self.account(account).as_str());
        assert_eq!(secret["Campaign"], "c1");
        let value = secret["SecretAccessKey"].as_str().unwrap().to_owned();
        let arn = caller_arn(&self.emulator, new_key, &value).await;
        assert!(
            arn.ends_with(&format!(":user/{user}")),
            "the delivered key signs as {arn}"
        );
        value
    }

    /// Asserts that none of `secrets` appears in anything keyturn printed, nor in the
    /// journal (the SQLite files' bytes and every value of every table).
    fn assert_no_leak(&self, secrets: &[String]) {
        assert!(!secrets.is_empty(), "no secret to look for");
        let printed = self.printed.lock().unwrap();
        let journal = self.journal_text();
        for secret in secrets {
            assert!(secret.len() >= 20, "not a secret: {secret:?}");
            assert!(
                !printed.contains(secret.as_str()),
                "a secret access key was printed by keyturn"
            );
            assert!(
                !journal.contains(secret.as_str()),
                "a secret access key is in the journal"
            );
        }
    }

    /// The journal's events about keys, in the order recorded: (key, type, recorded at).
    fn events(&self) -> Vec<(String, String, DateTime<Utc>, Value)> {
        let path = self
            .journal
            .strip_prefix("sqlite://")
            .expect("a SQLite journal");
        let db = rusqlite::Connection::open_with_flags(
            self.dir.path().join(path),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open the journal");
        let mut statement = db
            .prepare(
                "SELECT key_id_1, event_type, recorded_at, payload FROM events \
                 WHERE key_id_1 IS NOT NULL ORDER BY rowid",
            )
            .unwrap();
        statement
            .query_map([], |row| {
                let at: String = row.get(2)?;
                let payload: String = row.get(3)?;
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    time(&at),
                    serde_json::from_str(&payload).expect("a JSON payload"),
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// How many events the SQLite journal holds, of every stream.
    fn event_count(&self) -> u64 {
        let path = self
            .journal
            .strip_prefix("sqlite://")
            .expect("a SQLite journal");
        let db = rusqlite::Connection::open_with_flags(
            self.dir.path().join(path),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open the journal");
        db.query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))
            .unwrap()
    }

    /// The journal shows every gate kept: a rotated key is deactivated only once the
    /// quiet period (2s) has passed since its replacement was verified (or since it was
    /// reactivated), on recorded evidence of a fresh last-use check that shows it quiet
    /// for that long; a key is deleted only once the observation period (2s) has passed
    /// since it was deactivated. Returns how many gates were checked.
    fn assert_gates_kept(&self) -> usize {
        let gate = chrono::Duration::seconds(2);
        let mut checked = 0;
        let mut adoption: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
        let mut deactivated: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
        for (key, kind, at, payload) in self.events() {
            match kind.as_str() {
                "replacement-verified" | "key-reactivated" => {
                    adoption.insert(key.clone(), at);
                    deactivated.remove(&key);
                }
                "key-deactivated" => {
                    let evidence = &payload["evidence"];
                    let checked_at = time(text(evidence, "checked_at"));
                    assert!(checked_at <= at, "{payload:#}");
                    if let Some(started) = adoption.get(&key) {
                        assert!(
                            at - *started >= gate,
                            "{key} deactivated {} after adoption started",
                            at - *started
                        );
                        let quiet_since = match evidence["last_used_at"].as_str() {
                            Some(used) => time(used).max(*started),
                            None => *started,
                        };
                        assert!(
                            checked_at + chrono::Duration::seconds(1) - quiet_since >= gate,
                            "{key} deactivated on evidence of no use for less than the quiet \
                             period: {payload:#}"
                        );
                        checked += 1;
                    }
                    deactivated.insert(key, at);
                }
                "key-deleted" => {
                    if let Some(since) = deactivated.get(&key) {
                        assert!(
                            at - *since >= gate,
                            "{key} deleted {} after its deactivation",
                            at - *since
                        );
                        checked += 1;
                    }
                }
                _ => {}
            }
        }
        checked
    }

    /// The SQLite journal as text: the raw bytes of its files and every text or blob
    /// value of every table (empty for another journal).
    fn journal_text(&self) -> String {
        let Some(path) = self.journal.strip_prefix("sqlite://") else {
            return String::new();
        };
        let path = self.dir.path().join(path);
        let mut text = String::new();
        for suffix in ["", "-wal", "-journal"] {
            let file = format!("{}{suffix}", path.display());
            if let Ok(bytes) = std::fs::read(&file) {
                text.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        let db = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open the journal");
        let tables: Vec<String> = db
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for table in tables {
            let mut statement = db.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
            let columns = statement.column_count();
            let mut rows = statement.query([]).unwrap();
            while let Some(row) = rows.next().unwrap() {
                for i in 0..columns {
                    match row.get_ref(i).unwrap() {
                        rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                            text.push_str(&String::from_utf8_lossy(t));
                            text.push('\n');
                        }
                        _ => {}
                    }
                }
            }
        }
        text
    }
}

fn time(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339:?} is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

/// The ARN a key signs as (STS GetCallerIdentity signed with it).
async fn caller_arn(emulator: &Emulator, key_id: &str, secret: &str) -> String {
    let config = emulator
        .sdk_config_with(Credentials::new(key_id, secret, None, None, "app"))
        .await;
    aws_sdk_sts::Client::new(&config)
        .get_caller_identity()
        .send()
        .await
        .expect("GetCallerIdentity with the key")
        .arn()
        .unwrap()
        .to_owned()
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not text: {value:#}"))
}

/// Mutating IAM calls the emulator served: CreateAccessKey, UpdateAccessKey, DeleteAccessKey.
async fn iam_mutations(emulator: &Emulator) -> BTreeMap<&'static str, u64> {
    let counters = emulator.counters().await;
    ["CreateAccessKey", "UpdateAccessKey", "DeleteAccessKey"]
        .into_iter()
        .map(|action| (action, counters.by_action("iam", action)))
        .collect()
}

fn no_iam_mutations() -> BTreeMap<&'static str, u64> {
    [
        ("CreateAccessKey", 0),
        ("UpdateAccessKey", 0),
        ("DeleteAccessKey", 0),
    ]
    .into_iter()
    .collect()
}

/// How many requests of `action` were signed for `account`.
async fn calls(emulator: &Emulator, account: &str, action: &str) -> u64 {
    emulator
        .counters()
        .await
        .requests
        .iter()
        .filter(|r| r.account == account && r.action == action)
        .map(|r| r.count)
        .sum()
}

/// A JSON document with its objects' field names in the order they were printed
/// (`serde_json::Value` sorts them).
#[derive(Debug)]
enum Ordered {
    Object(Vec<(String, Ordered)>),
    Array(Vec<Ordered>),
    Scalar,
}

impl Ordered {
    fn parse(json: &str) -> Self {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {json}"))
    }

    fn fields(&self) -> Vec<&str> {
        match self {
            Self::Object(fields) => fields.iter().map(|(k, _)| k.as_str()).collect(),
            other => panic!("not an object: {other:?}"),
        }
    }

    fn get(&self, name: &str) -> &Ordered {
        match self {
            Self::Object(fields) => fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v)
                .unwrap_or_else(|| panic!("no field {name}")),
            other => panic!("not an object: {other:?}"),
        }
    }

    fn items(&self) -> &[Ordered] {
        match self {
            Self::Array(items) => items,
            other => panic!("not an array: {other:?}"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Ordered;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_str<E>(self, _: &str) -> Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Ordered, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Ordered::Array(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Ordered, A::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry::<String, Ordered>()? {
                    fields.push(entry);
                }
                Ok(Ordered::Object(fields))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

const PLAN_FIELDS: [&str; 5] = [
    "account_id",
    "user_name",
    "access_key_id",
    "action",
    "reason",
];
const STATUS_FIELDS: [&str; 7] = [
    "account_id",
    "user_name",
    "old_access_key_id",
    "new_access_key_id",
    "state",
    "next_check_at",
    "reason",
];
const STATES: [&str; 8] = [
    "pending",
    "awaiting-adoption",
    "observing",
    "completed",
    "retired",
    "blocked",
    "skipped",
    "failed",
];

/// Checks the shape of `status -o json`: its fields in order, the counts of every state
/// (which add up to the keys), one entry per key.
fn check_status_shape(bed: &Bed) -> Value {
    let run = bed.kt(&["status", "c1", "-o", "json"]);
    assert_eq!(run.code, 0, "status: {}", run.stderr);
    let ordered = Ordered::parse(&run.stdout);
    assert_eq!(ordered.fields(), ["campaign", "counts", "keys"]);
    for key in ordered.get("keys").items() {
        assert_eq!(key.fields(), STATUS_FIELDS);
    }
    let status = run.json();
    assert_eq!(status["campaign"], "c1");
    let counts = status["counts"].as_object().unwrap();
    let names: BTreeSet<&str> = counts.keys().map(String::as_str).collect();
    assert_eq!(names, STATES.into_iter().collect());
    let keys = status["keys"].as_array().unwrap();
    let total: u64 = counts.values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(total, keys.len() as u64, "{status:#}");
    for state in STATES {
        let n = keys.iter().filter(|k| k["state"] == state).count() as u64;
        assert_eq!(counts[state], n, "count of {state}: {status:#}");
    }
    status
}

/// `(state, count)` pairs of the non-zero counts.
fn counts(status: &Value) -> BTreeMap<String, u64> {
    status["counts"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, n)| n.as_u64() != Some(0))
        .map(|(s, n)| (s.clone(), n.as_u64().unwrap()))
        .collect()
}

fn expect_counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect()
}

async fn sleep_secs(secs: f64) {
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
}

/// Sleeps until `at` plus a margin (timestamps are printed to the second).
async fn sleep_until(at: DateTime<Utc>, margin: Duration) {
    let wait = (at - Utc::now()).to_std().unwrap_or_default() + margin;
    tokio::time::sleep(wait).await;
}

// ---------------------------------------------------------------------------------------
// The scenarios.
// ---------------------------------------------------------------------------------------

/// `plan` prints one row per key in scope that may need action, with the contract's
/// fields in order, in JSON and CSV alike; every action appears with its reason; and
/// nothing is changed.
#[tokio::test(flavor = "multi_thread")]
async fn plan_prints_one_row_per_key_with_every_action_and_changes_nothing() {
    let bed = Bed::new(
        "plan",
        vec![(
            "app",
            vec![
                UserSpec::new("app", vec![KeySpec::active(120, Some(1))]),
                UserSpec::new("idle", vec![KeySpec::active(200, None)]),
                UserSpec::new("stale", vec![KeySpec::inactive(100, Some(50))]),
                UserSpec::new("young", vec![KeySpec::active(10, Some(1))]),
                UserSpec::new("breakglass-admin", vec![KeySpec::active(400, None)]),
                UserSpec::new("vendor", vec![KeySpec::active(180, Some(1))])
                    .tag("keyturn:exempt", "vendor-managed"),
                UserSpec::new(
                    "twins",
                    vec![KeySpec::active(140, Some(1)), KeySpec::active(100, Some(1))],
                ),
            ],
        )],
        POLICY,
    )
    .await;
    let account = bed.account("app");
    let now = Utc::now();
    let before = ground_truth(&bed.emulator, &bed.org, &[account.as_str()], &[], now).await;
    bed.emulator.reset_counters().await;

    let blocked = "; the user has two Active keys in use: a human must choose";
    let expected: BTreeMap<(String, String), (&str, String)> = [
        (
            "app",
            0,
            "rotate",
            "Active, 120 days old, last used 1 day ago; older than 90d".to_owned(),
        ),
        (
            "idle",
            0,
            "retire-unused",
            "Active, 200 days old, never used; unused for at least 45d".to_owned(),
        ),
        (
            "stale",
            0,
            "delete-inactive",
            "Inactive, 100 days old, last used 50 days ago".to_owned(),
        ),
        (
            "breakglass-admin",
            0,
            "skip",
            "Active, 400 days old, never used; user excluded by pattern \"breakglass-*\"".to_owned(),
        ),
        (
            "vendor",
            0,
            "skip",
            "Active, 180 days old, last used 1 day ago; user exempt by tag keyturn:exempt: vendor-managed"
                .to_owned(),
        ),
        (
            "twins",
            0,
            "blocked",
            format!("Active, 140 days old, last used 1 day ago; older than 90d{blocked}"),
        ),
        (
            "twins",
            1,
            "blocked",
            format!("Active, 100 days old, last used 1 day ago; older than 90d{blocked}"),
        ),
    ]
    .into_iter()
    .map(|(user, i, action, reason)| {
        (
            (user.to_owned(), bed.key_id("app", user, i)),
            (action, reason),
        )
    })
    .collect();

    // JSON: an array of objects with exactly the contract's fields, in order.
    let policy = bed.policy_path();
    let json = bed.kt(&["plan", "--policy", &policy, "-o", "json"]);
    assert_eq!(json.code, 0, "plan: {}", json.stderr);
    for row in Ordered::parse(&json.stdout).items() {
        assert_eq!(row.fields(), PLAN_FIELDS);
    }
    let rows = json.json();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), expected.len(), "one row per key: {rows:#?}");
    let mut planned: BTreeMap<(String, String), (String, String)> = BTreeMap::new();
    for row in rows {
        assert_eq!(text(row, "account_id"), account, "{row:#}");
        let id = (
            text(row, "user_name").to_owned(),
            text(row, "access_key_id").to_owned(),
        );
        let previous = planned.insert(
            id,
            (
                text(row, "action").to_owned(),
                text(row, "reason").to_owned(),
            ),
        );
        assert!(previous.is_none(), "a key planned twice: {row:#}");
    }
    let wanted: BTreeMap<(String, String), (String, String)> = expected
        .iter()
        .map(|(id, (action, reason))| (id.clone(), ((*action).to_owned(), reason.clone())))
        .collect();
    assert_eq!(planned, wanted);
    let actions: BTreeSet<&str> = planned.values().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "rotate",
            "retire-unused",
            "delete-inactive",
            "skip",
            "blocked"
        ]
        .into_iter()
        .collect(),
        "every action appears"
    );
    // One row per key IAM holds, no more, except the keys of a user whose credential
    // report row shows nothing to do ("young"): its keys are not even listed.
    let iam_keys: BTreeSet<(String, String)> = before
        .iter()
        .filter(|r| text(r, "user_name") != "young")
        .map(|r| {
            (
                text(r, "user_name").to_owned(),
                text(r, "access_key_id").to_owned(),
            )
        })
        .collect();
    assert_eq!(planned.keys().cloned().collect::<BTreeSet<_>>(), iam_keys);

    // CSV: a header with the same fields in the same order, and the same rows.
    let csv = bed.kt(&["plan", "--policy", &policy, "-o", "csv"]);
    assert_eq!(csv.code, 0, "plan: {}", csv.stderr);
    assert_eq!(
        csv.stdout.lines().next(),
        Some("account_id,user_name,access_key_id,action,reason")
    );
    let mut reader = csv::Reader::from_reader(csv.stdout.as_bytes());
    assert_eq!(reader.headers().unwrap(), PLAN_FIELDS.as_slice());
    let mut from_csv: BTreeMap<(String, String), (String, String)> = BTreeMap::new();
    for record in reader.records() {
        let record = record.expect("a CSV record");
        assert_eq!(record.len(), 5, "{record:?}");
        assert_eq!(&record[0], account);
        from_csv.insert(
            (record[1].to_owned(), record[2].to_owned()),
            (record[3].to_owned(), record[4].to_owned()),
        );
    }
    assert_eq!(from_csv, planned, "CSV and JSON plan the same");

    // Nothing changed: no mutating call reached AWS, IAM holds what it held, no journal.
    assert_eq!(iam_mutations(&bed.emulator).await, no_iam_mutations());
    let counters = bed.emulator.counters().await;
    assert!(counters.total() > 0, "plan reads the organization");
    assert_eq!(counters.by_service("secretsmanager"), 0);
    assert_eq!(counters.by_service("dynamodb"), 0);
    let after = ground_truth(&bed.emulator, &bed.org, &[account.as_str()], &[], now).await;
    assert_eq!(after, before, "IAM is unchanged");
    assert!(
        !bed.dir.path().join("keyturn.db").exists() && !bed.dir.path().join("journal.db").exists(),
        "plan writes no journal"
    );
}

/// An Active key nobody uses is retired (deactivated, observed, deleted) without a
/// replacement or a secret; an Inactive key is deleted.
#[tokio::test(flavor = "multi_thread")]
async fn an_unused_key_is_retired_and_an_inactive_key_deleted_without_a_replacement() {
    let bed = Bed::new(
        "retire",
        vec![(
            "app",
            vec![
                UserSpec::new("idle", vec![KeySpec::active(200, None)]),
                UserSpec::new("stale", vec![KeySpec::inactive(100, Some(50))]),
            ],
        )],
        POLICY,
    )
    .await;
    let idle = bed.key_id("app", "idle", 0);
    let stale = bed.key_id("app", "stale", 0);
    bed.start();
    bed.emulator.reset_counters().await;

    // First run: the unused key is deactivated on fresh evidence; the Inactive key, long
    // past its observation period, is deleted.
    let out = bed.run();
    assert!(out.contains("deactivated"), "{out}");
    let entry = bed.entry(&idle);
    assert_eq!(entry["state"], "observing", "{entry:#}");
    assert_eq!(entry["new_access_key_id"], Value::Null);
    assert!(entry["next_check_at"].is_string(), "{entry:#}");
    assert_eq!(
        bed.keys("app", "idle").await,
        [(idle.clone(), "Inactive".to_owned())]
    );
    let entry = bed.entry(&stale);
    assert_eq!(entry["state"], "completed", "{entry:#}");
    assert_eq!(entry["reason"], "Inactive key deleted");
    assert_eq!(entry["new_access_key_id"], Value::Null);
    assert!(bed.keys("app", "stale").await.is_empty());

    // After the observation period the retired key is deleted.
    sleep_secs(2.5).await;
    bed.run();
    let status = check_status_shape(&bed);
    let entry = key_entry(&status, &idle);
    assert_eq!(entry["state"], "retired", "{status:#}");
    assert_eq!(
        entry["reason"],
        "unused key deactivated, observed and deleted"
    );
    assert_eq!(entry["new_access_key_id"], Value::Null);
    assert_eq!(entry["next_check_at"], Value::Null);
    assert_eq!(
        counts(&status),
        expect_counts(&[("retired", 1), ("completed", 1)])
    );
    assert!(bed.keys("app", "idle").await.is_empty());

    // No replacement was ever created and no secret stored.
    let mutations = iam_mutations(&bed.emulator).await;
    assert_eq!(mutations["CreateAccessKey"], 0, "{mutations:?}");
    assert_eq!(mutations["UpdateAccessKey"], 1, "{mutations:?}");
    assert_eq!(mutations["DeleteAccessKey"], 2, "{mutations:?}");
    assert!(bed.secret_names("app").await.is_empty());
    assert!(bed.assert_gates_kept() > 0);
}

/// Two-key users: an Inactive second key is deleted first and the rotation proceeds in
/// the same run; an unused second key is retired first (deactivate → observe → delete),
/// then the rotation proceeds; two keys in use are both blocked and left as they are.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_key_frees_its_slot_first_and_two_keys_in_use_are_blocked_untouched() {
    let bed = Bed::new(
        "two-keys",
        vec![(
            "app",
            vec![
                UserSpec::new(
                    "etl",
                    vec![
                        KeySpec::active(120, Some(1)),
                        KeySpec::inactive(300, Some(150)),
                    ],
                ),
                UserSpec::new(
                    "svc",
                    vec![KeySpec::active(365, Some(1)), KeySpec::active(46, None)],
                ),
                UserSpec::new(
                    "twins",
                    vec![KeySpec::active(140, Some(1)), KeySpec::active(100, Some(1))],
                ),
            ],
        )],
        POLICY,
    )
    .await;
    let (etl_old, etl_inactive) = (bed.key_id("app", "etl", 0), bed.key_id("app", "etl", 1));
    let (svc_old, svc_unused) = (bed.key_id("app", "svc", 0), bed.key_id("app", "svc", 1));
    let twins_before = bed.keys("app", "twins").await;
    bed.start();

    // Run 1. etl: the Inactive key is deleted, then the replacement is created.
    let out = bed.run();
    let deleted_at = out
        .find(&format!("{etl_inactive}: deleted"))
        .unwrap_or_else(|| panic!("the Inactive key is deleted: {out}"));
    let created_at = out
        .find(&format!("{etl_old}: replacement"))
        .unwrap_or_else(|| panic!("the rotation proceeds: {out}"));
    assert!(
        deleted_at < created_at,
        "the slot is freed before the replacement is created: {out}"
    );
    let status = check_status_shape(&bed);
    assert_eq!(key_entry(&status, &etl_inactive)["state"], "completed");
    let entry = key_entry(&status, &etl_old);
    assert_eq!(entry["state"], "awaiting-adoption", "{status:#}");
    let etl_new = text(entry, "new_access_key_id").to_owned();
    let mut expected = vec![
        (etl_old.clone(), "Active".to_owned()),
        (etl_new.clone(), "Active".to_owned()),
    ];
    expected.sort();
    assert_eq!(bed.keys("app", "etl").await, expected);
    let etl_secret = bed.assert_delivered("app", "etl", &etl_new).await;

    // svc: the unused key is deactivated first; the rotation waits for the slot.
    let entry = key_entry(&status, &svc_unused);
    assert_eq!(entry["state"], "observing", "{status:#}");
    let entry = key_entry(&status, &svc_old);
    assert_eq!(entry["state"], "pending", "{status:#}");
    assert_eq!(entry["new_access_key_id"], Value::Null);
    let mut expected = vec![
        (svc_old.clone(), "Active".to_owned()),
        (svc_unused.clone(), "Inactive".to_owned()),
    ];
    expected.sort();
    assert_eq!(bed.keys("app", "svc").await, expected);

    // twins: both blocked, with the reason; untouched.
    for key in &twins_before {
        let entry = key_entry(&status, &key.0);
        assert_eq!(entry["state"], "blocked", "{status:#}");
        assert!(
            text(entry, "reason").contains("two Active keys in use"),
            "{entry:#}"
        );
        assert_eq!(entry["new_access_key_id"], Value::Null);
        assert_eq!(entry["next_check_at"], Value::Null);
    }
    assert_eq!(bed.keys("app", "twins").await, twins_before);

    // Run 2, after the observation period: the unused key is deleted (retired), then the
    // rotation of the old one proceeds.
    sleep_secs(2.5).await;
    let out = bed.run();
    let deleted_at = out
        .find(&format!("{svc_unused}: deleted"))
        .unwrap_or_else(|| panic!("the unused key is deleted: {out}"));
    let created_at = out
        .find(&format!("{svc_old}: replacement"))
        .unwrap_or_else(|| panic!("the rotation proceeds: {out}"));
    assert!(deleted_at < created_at, "{out}");
    let status = check_status_shape(&bed);
    assert_eq!(key_entry(&status, &svc_unused)["state"], "retired");
    let entry = key_entry(&status, &svc_old);
    assert_eq!(entry["state"], "awaiting-adoption", "{status:#}");
    let svc_new = text(entry, "new_access_key_id").to_owned();
    let mut expected = vec![
        (svc_old.clone(), "Active".to_owned()),
        (svc_new.clone(), "Active".to_owned()),
    ];
    expected.sort();
    assert_eq!(bed.keys("app", "svc").await, expected);
    let svc_secret = bed.assert_delivered("app", "svc", &svc_new).await;

    // The blocked users are still untouched; nothing was created for them.
    assert_eq!(bed.keys("app", "twins").await, twins_before);
    for key in &twins_before {
        assert_eq!(key_entry(&status, &key.0)["state"], "blocked");
    }
    assert!(
        !bed.secret_names("app")
            .await
            .contains(&"keyturn/twins".to_owned())
    );
    bed.assert_no_leak(&[etl_secret, svc_secret]);
    assert!(bed.assert_gates_kept() > 0);
}

/// Users excluded by a name pattern or exempt by tag are recorded as skipped with the
/// reason, and nothing is done to their keys; keys that need nothing are not enrolled.
#[tokio::test(flavor = "multi_thread")]
async fn excluded_and_exempt_users_are_skipped_with_the_reason_and_untouched() {
    let bed = Bed::new(
        "skipped",
        vec![(
            "app",
            vec![
                UserSpec::new(
                    "breakglass-admin",
                    vec![
                        KeySpec::active(400, None),
                        KeySpec::inactive(300, Some(200)),
                    ],
                ),
                UserSpec::new("vendor", vec![KeySpec::active(180, Some(1))])
                    .tag("keyturn:exempt", "vendor-managed"),
                UserSpec::new("young", vec![KeySpec::active(10, Some(1))]),
            ],
        )],
        POLICY,
    )
    .await;
    let account = bed.account("app");
    let now = Utc::now();
    let before = ground_truth(&bed.emulator, &bed.org, &[account.as_str()], &[], now).await;
    bed.start();
    bed.emulator.reset_counters().await;

    bed.run();
    bed.run();
    let status = check_status_shape(&bed);
    assert_eq!(
        counts(&status),
        expect_counts(&[("skipped", 3)]),
        "{status:#}"
    );
    for i in 0..2 {
        let entry = key_entry(&status, &bed.key_id("app", "breakglass-admin", i));
        assert_eq!(entry["state"], "skipped");
        assert!(
            text(entry, "reason").ends_with("user excluded by pattern \"breakglass-*\""),
            "{entry:#}"
        );
        assert_eq!(entry["next_check_at"], Value::Null);
    }
    let entry = key_entry(&status, &bed.key_id("app", "vendor", 0));
    assert_eq!(entry["state"], "skipped");
    assert!(
        text(entry, "reason").ends_with("user exempt by tag keyturn:exempt: vendor-managed"),
        "{entry:#}"
    );
    let young = bed.key_id("app", "young", 0);
    assert!(
        !status["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["old_access_key_id"] == young.as_str()),
        "a key that needs nothing is not enrolled: {status:#}"
    );

    assert_eq!(iam_mutations(&bed.emulator).await, no_iam_mutations());
    assert_eq!(
        bed.emulator.counters().await.by_service("secretsmanager"),
        0
    );
    let after = ground_truth(&bed.emulator, &bed.org, &[account.as_str()], &[], now).await;
    assert_eq!(after, before, "IAM is unchanged");
}

/// The application keeps using the old key after the replacement is delivered: the key is
/// not deactivated within the quiet period, and at the adoption timeout it is blocked for
/// a human, still Active; never forced.
#[tokio::test(flavor = "multi_thread")]
async fn an_old_key_still_used_at_the_adoption_timeout_is_blocked_never_deactivated() {
    let bed = Bed::new(
        "adoption-timeout",
        vec![(
            "app",
            vec![UserSpec::new("app", vec![KeySpec::active(120, Some(1))])],
        )],
        &policy("6s"),
    )
    .await;
    let old = bed.seeded("app", "app", 0);
    bed.start();
    bed.emulator.reset_counters().await;

    let out = bed.run();
    assert!(out.contains("verified"), "{out}");
    let entry = bed.entry(&old.access_key_id);
    assert_eq!(entry["state"], "awaiting-adoption", "{entry:#}");
    let new = text(&entry, "new_access_key_id").to_owned();
    let secret = bed.assert_delivered("app", "app", &new).await;

    // The application never switches: it keeps signing with the old key.
    let app = keep_using(&bed.emulator, &old).await;

    // Past the quiet period, before the timeout: still in use, so not deactivated.
    sleep_secs(3.0).await;
    let out = bed.run();
    assert!(out.contains("still in use"), "{out}");
    let entry = bed.entry(&old.access_key_id);
    assert_eq!(entry["state"], "awaiting-adoption", "{entry:#}");
    let mut both = vec![
        (old.access_key_id.clone(), "Active".to_owned()),
        (new.clone(), "Active".to_owned()),
    ];
    both.sort();
    assert_eq!(bed.keys("app", "app").await, both);

    // Past the adoption timeout: blocked, with the evidence in words; still Active.
    sleep_secs(4.0).await;
    let out = bed.run();
    assert!(out.contains("blocked"), "{out}");
    let entry = bed.entry(&old.access_key_id);
    assert_eq!(entry["state"], "blocked", "{entry:#}");
    let reason = text(&entry, "reason");
    assert!(
        reason.contains("still used") && reason.contains("a human"),
        "{reason}"
    );
    assert_eq!(entry["new_access_key_id"], new.as_str());
    assert_eq!(entry["next_check_at"], Value::Null);
    assert_eq!(bed.keys("app", "app").await, both);

    // A blocked key stays as it is on later runs, even once the application stops.
    app.abort();
    sleep_secs(2.5).await;
    bed.run();
    assert_eq!(bed.entry(&old.access_key_id)["state"], "blocked");
    assert_eq!(bed.keys("app", "app").await, both);
    let mutations = iam_mutations(&bed.emulator).await;
    assert_eq!(
        mutations["UpdateAccessKey"], 0,
        "never deactivated: {mutations:?}"
    );
    assert_eq!(mutations["DeleteAccessKey"], 0, "{mutations:?}");
    assert_eq!(mutations["CreateAccessKey"], 1, "{mutations:?}");
    assert!(
        !bed.events()
            .iter()
            .any(|(_, kind, _, _)| kind == "key-deactivated"),
        "no deactivation was ever recorded"
    );
    bed.assert_no_leak(&[secret]);
}

/// `rollback` reactivates a key that was deactivated and not yet deleted, records why,
/// and puts it back to waiting for adoption (an unused key being retired gets a
/// replacement instead); a key in any other state, an unknown key or campaign is refused
/// with exit 2 and nothing changes.
#[tokio::test(flavor = "multi_thread")]
async fn rollback_reactivates_a_deactivated_key_and_refuses_any_other() {
    let bed = Bed::new(
        "rollback",
        vec![(
            "app",
            vec![
                UserSpec::new("app", vec![KeySpec::active(120, Some(1))]),
                UserSpec::new("idle", vec![KeySpec::active(200, None)]),
            ],
        )],
        POLICY,
    )
    .await;
    let old = bed.key_id("app", "app", 0);
    let idle = bed.key_id("app", "idle", 0);
    bed.start();

    bed.run();
    assert_eq!(bed.entry(&idle)["state"], "observing");
    assert_eq!(
        bed.keys("app", "idle").await,
        [(idle.clone(), "Inactive".to_owned())]
    );

    // The unused key being retired turns out to be needed: Active again, and it will get
    // a replacement instead of being deleted.
    let rollback = bed.kt(&[
        "rollback",
        "c1",
        "--key",
        &idle,
        "--reason",
        "the nightly report uses it",
    ]);
    assert_eq!(rollback.code, 0, "rollback: {}", rollback.stderr);
    assert_eq!(
        bed.keys("app", "idle").await,
        [(idle.clone(), "Active".to_owned())]
    );
    let entry = bed.entry(&idle);
    assert_eq!(entry["state"], "pending", "{entry:#}");
    assert!(
        text(&entry, "reason").contains("rollback")
            && text(&entry, "reason").contains("the nightly report uses it"),
        "{entry:#}"
    );

    // The application switches to the new key; after the quiet period the old key is
    // deactivated. The rolled-back unused key gets its replacement in the same run.
    let entry = bed.entry(&old);
    let new = text(&entry, "new_access_key_id").to_owned();
    let secret = bed.assert_delivered("app", "app", &new).await;
    use_key(&bed.emulator, &new, &secret).await;
    sleep_secs(2.5).await;
    bed.run();
    assert_eq!(bed.entry(&old)["state"], "observing");
    assert!(
        bed.keys("app", "app")
            .await
            .contains(&(old.clone(), "Inactive".to_owned()))
    );
    let entry = bed.entry(&idle);
    assert_eq!(entry["state"], "awaiting-adoption", "{entry:#}");
    let idle_new = text(&entry, "new_access_key_id").to_owned();
    let idle_secret = bed.assert_delivered("app", "idle", &idle_new).await;
    assert!(
        bed.keys("app", "idle")
            .await
            .contains(&(idle.clone(), "Active".to_owned()))
    );

    // Something broke: the old key is rolled back.
    let rollback = bed.kt(&["rollback", "c1", "--key", &old, "--reason", "x"]);
    assert_eq!(rollback.code, 0, "rollback: {}", rollback.stderr);
    assert!(rollback.stdout.contains(&old), "{}", rollback.stdout);
    let mut both = vec![
        (old.clone(), "Active".to_owned()),
        (new.clone(), "Active".to_owned()),
    ];
    both.sort();
    assert_eq!(bed.keys("app", "app").await, both, "Active again in IAM");
    let entry = bed.entry(&old);
    assert_eq!(entry["state"], "awaiting-adoption", "{entry:#}");
    assert!(
        text(&entry, "reason").contains("rollback") && text(&entry, "reason").ends_with('x'),
        "{entry:#}"
    );
    assert_eq!(entry["new_access_key_id"], new.as_str());
    assert!(entry["next_check_at"].is_string(), "{entry:#}");

    // Refused, and nothing changes: a key that is not deactivated, an unknown key, a
    // malformed key id, an unknown campaign.
    let status = bed.status();
    let events = bed.event_count();
    bed.emulator.reset_counters().await;
    let refused: [(&[&str], &str); 4] = [
        (
            &["rollback", "c1", "--key", &old, "--reason", "again"],
            "awaiting-adoption",
        ),
        (
            &[
                "rollback",
                "c1",
                "--key",
                "AKIAIOSFODNN7EXAMPLE",
                "--reason",
                "x",
            ],
            "not part of campaign",
        ),
        (
            &["rollback", "c1", "--key", "not a key", "--reason", "x"],
            "",
        ),
        (
            &["rollback", "nope", "--key", &old, "--reason", "x"],
            "no campaign named nope",
        ),
    ];
    for (args, words) in refused {
        let run = bed.kt(args);
        assert_eq!(run.code, 2, "{args:?}: {}\n{}", run.stdout, run.stderr);
        assert!(run.stderr.contains(words), "{args:?}: {}", run.stderr);
    }
    assert_eq!(bed.status(), status, "the campaign is unchanged");
    assert_eq!(bed.event_count(), events, "nothing was recorded");
    assert_eq!(bed.keys("app", "app").await, both);
    assert_eq!(iam_mutations(&bed.emulator).await, no_iam_mutations());

    // The adoption gate starts over: the application uses the new key, so after the
    // quiet period since the rollback the old key is deactivated again.
    sleep_secs(2.5).await;
    bed.run();
    assert_eq!(bed.entry(&old)["state"], "observing");
    bed.assert_no_leak(&[secret, idle_secret]);
    assert!(bed.assert_gates_kept() > 0);
}

/// The campaign commands' contract: an identical `campaign start` is accepted and
/// changes nothing, a different policy is refused; unknown campaigns, invalid names and
/// malformed policies are refused with exit 2 before anything is contacted or recorded.
#[tokio::test(flavor = "multi_thread")]
async fn campaign_commands_refuse_bad_input_with_exit_2_and_change_nothing() {
    let bed = Bed::new(
        "contract",
        vec![(
            "app",
            vec![UserSpec::new("app", vec![KeySpec::active(120, Some(1))])],
        )],
        POLICY,
    )
    .await;
    let policy = bed.policy_path();
    let bad_value = bed.dir.write(
        "bad.toml",
        "[scope]\nexclude_users = [\"breakglass-*\"]\n\n[rotation]\nquiet_period = \"soon\"\n",
    );
    let unknown_field = bed.dir.write(
        "unknown.toml",
        "[scope]\nexclude_user = [\"breakglass-*\"]\n",
    );
    bed.emulator.reset_counters().await;

    // Malformed policies: exit 2, the file, line and field named, nothing contacted.
    for (file, line, field) in [
        (&bad_value, 5, "rotation.quiet_period"),
        (&unknown_field, 2, "scope.exclude_user"),
    ] {
        for args in [
            vec!["plan", "--policy", file.as_str(), "-o", "json"],
            vec!["campaign", "start", "c1", "--policy", file.as_str()],
        ] {
            let run = bed.kt(&args);
            assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
            assert!(
                run.stderr.contains(&format!("{file}:{line}")),
                "{args:?}: file and line: {}",
                run.stderr
            );
            assert!(
                run.stderr.contains(&format!("`{field}`")),
                "{args:?}: field: {}",
                run.stderr
            );
            assert!(run.stdout.is_empty(), "{}", run.stdout);
        }
    }
    // Names that are not campaign names.
    let long = "x".repeat(65);
    for name in ["bad/name", "has space", "", long.as_str()] {
        let run = bed.kt(&["campaign", "start", name, "--policy", &policy]);
        assert_eq!(run.code, 2, "{name:?}: {}", run.stderr);
    }
    assert_eq!(
        bed.emulator.counters().await.total(),
        0,
        "nothing was contacted"
    );
    assert!(
        !bed.dir.path().join("journal.db").exists(),
        "no journal was created"
    );

    // Started once; again with the same policy (even written differently): accepted,
    // nothing changes; with a different policy: refused.
    bed.start();
    let events = bed.event_count();
    let again = bed.kt(&["campaign", "start", "c1", "--policy", &policy]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stdout.contains("already exists"), "{}", again.stdout);
    let same = bed.dir.write(
        "same.toml",
        "# the same policy, written differently\n\
         [rotation]\n\
         allow_short_gates = true\n\
         observation_period = \"2s\"\n\
         quiet_period = \"2s\"\n\
         adoption_timeout = \"1h\"\n\
         max_key_age = \"90d\"\n\n\
         [scope]\n\
         exclude_users = [ \"breakglass-*\" ]\n",
    );
    let again = bed.kt(&["campaign", "start", "c1", "--policy", &same]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stdout.contains("already exists"), "{}", again.stdout);
    let different = bed.dir.write(
        "different.toml",
        &POLICY.replace("quiet_period = \"2s\"", "quiet_period = \"3s\""),
    );
    let refused = bed.kt(&["campaign", "start", "c1", "--policy", &different]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("different policy"),
        "{}",
        refused.stderr
    );
    let refused = bed.kt(&["campaign", "start", "c2", "--policy", &bad_value]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert_eq!(bed.event_count(), events, "nothing was recorded");

    // `campaign list` shows the one campaign.
    let list = bed.kt(&["campaign", "list", "-o", "json"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    for row in Ordered::parse(&list.stdout).items() {
        assert_eq!(row.fields(), ["name", "started_at", "started_by"]);
    }
    let campaigns = list.json();
    let campaigns = campaigns.as_array().unwrap();
    assert_eq!(campaigns.len(), 1, "{campaigns:#?}");
    assert_eq!(campaigns[0]["name"], "c1");
    let started = time(text(&campaigns[0], "started_at"));
    assert!((Utc::now() - started).num_seconds().abs() < 120);
    assert!(
        text(&campaigns[0], "started_by").starts_with("arn:aws:"),
        "{campaigns:#?}"
    );

    // Unknown campaigns and invalid names: exit 2, nothing changed in IAM.
    bed.emulator.reset_counters().await;
    for args in [
        &["run", "nope"][..],
        &["status", "nope", "-o", "json"],
        &["run", "bad/name"],
        &["status", "bad/name"],
        &["run", "c1", "--concurrency", "0"],
    ] {
        let run = bed.kt(args);
        assert_eq!(run.code, 2, "{args:?}: {}\n{}", run.stdout, run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
    let run = bed.kt(&["run", "nope"]);
    assert!(
        run.stderr.contains("no campaign named nope"),
        "{}",
        run.stderr
    );
    assert_eq!(iam_mutations(&bed.emulator).await, no_iam_mutations());
    assert_eq!(bed.event_count(), events, "nothing was recorded");
    let status = check_status_shape(&bed);
    assert!(status["keys"].as_array().unwrap().is_empty(), "{status:#}");
}

/// A step that keeps failing: each failure is recorded with the AWS error code, retried
/// only after its backoff (2s, 4s, 8s, 16s), and the fifth failure makes the key `failed`;
/// meanwhile another account of the campaign completes its rotation.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_step_backs_off_then_fails_the_key_while_other_accounts_complete() {
    let bed = Bed::new(
        "failures",
        vec![
            (
                "broken",
                vec![UserSpec::new("app", vec![KeySpec::active(120, Some(1))])],
            ),
            (
                "healthy",
                vec![UserSpec::new("app", vec![KeySpec::active(120, Some(1))])],
            ),
        ],
        POLICY,
    )
    .await;
    let broken = bed.account("broken");
    let broken_old = bed.key_id("broken", "app", 0);
    let healthy_old = bed.key_id("healthy", "app", 0);
    bed.start();
    bed.emulator
        .set_faults(&[FaultRule::error(500)
            .action("CreateAccessKey")
            .account(&broken)])
        .await;

    let mut healthy_new = String::new();
    let mut healthy_secret = String::new();
    let mut next_check: Option<DateTime<Utc>> = None;
    for failure in 1..=5u32 {
        if let Some(at) = next_check {
            sleep_until(at, Duration::from_millis(1200)).await;
        }
        let creates = calls(&bed.emulator, &broken, "CreateAccessKey").await;
        let out = bed.run();
        assert!(
            out.contains("create-replacement failed with InternalFailure"),
            "{out}"
        );
        assert!(
            calls(&bed.emulator, &broken, "CreateAccessKey").await > creates,
            "retried once the backoff passed"
        );
        let entry = bed.entry(&broken_old);
        let reason = text(&entry, "reason");
        assert_eq!(entry["new_access_key_id"], Value::Null);
        if failure < 5 {
            assert_eq!(entry["state"], "pending", "{entry:#}");
            assert!(
                reason.contains(&format!("InternalFailure, {failure} in a row")),
                "{entry:#}"
            );
            let at = time(text(&entry, "next_check_at"));
            let backoff = 2i64 << (failure - 1);
            let ahead = (at - Utc::now()).num_milliseconds();
            assert!(
                ahead <= backoff * 1000 && ahead > (backoff - 4) * 1000,
                "failure {failure}: next check {ahead} ms ahead, backoff {backoff}s"
            );
            next_check = Some(at);
        } else {
            assert_eq!(entry["state"], "failed", "{entry:#}");
            assert_eq!(
                reason, "5 failures in a row, the last with InternalFailure",
                "{entry:#}"
            );
            assert_eq!(entry["next_check_at"], Value::Null);
        }

        // The backoff is respected: a run right away does not try again.
        if failure == 3 {
            let creates = calls(&bed.emulator, &broken, "CreateAccessKey").await;
            let out = bed.run();
            assert!(
                out.contains("retrying after InternalFailure (3 of 5)"),
                "{out}"
            );
            assert_eq!(
                calls(&bed.emulator, &broken, "CreateAccessKey").await,
                creates,
                "not retried before the backoff"
            );
            assert_eq!(bed.entry(&broken_old)["state"], "pending");
        }

        // The other account goes its way: rotated, adopted, deactivated, deleted.
        if failure == 1 {
            let entry = bed.entry(&healthy_old);
            assert_eq!(entry["state"], "awaiting-adoption", "{entry:#}");
            healthy_new = text(&entry, "new_access_key_id").to_owned();
            healthy_secret = bed.assert_delivered("healthy", "app", &healthy_new).await;
            use_key(&bed.emulator, &healthy_new, &healthy_secret).await;
        }
    }

    let status = check_status_shape(&bed);
    assert_eq!(
        counts(&status),
        expect_counts(&[("completed", 1), ("failed", 1)]),
        "{status:#}"
    );
    assert_eq!(key_entry(&status, &healthy_old)["state"], "completed");
    assert_eq!(
        bed.keys("healthy", "app").await,
        [(healthy_new.clone(), "Active".to_owned())]
    );
    // The failed key is untouched and no secret was stored for it.
    assert_eq!(
        bed.keys("broken", "app").await,
        [(broken_old.clone(), "Active".to_owned())]
    );
    assert!(bed.secret_names("broken").await.is_empty());
    // A failed key is settled: later runs leave it alone, even once AWS recovers.
    bed.emulator.clear_faults().await;
    let creates = calls(&bed.emulator, &broken, "CreateAccessKey").await;
    bed.run();
    assert_eq!(
        calls(&bed.emulator, &broken, "CreateAccessKey").await,
        creates
    );
    assert_eq!(bed.entry(&broken_old)["state"], "failed");
    bed.assert_no_leak(&[healthy_secret]);
    assert!(bed.assert_gates_kept() > 0);
}

/// Changes made outside keyturn during a campaign: an old key deleted by hand and a
/// user deleted by hand are recorded as gone (completed), without a crash; a key made
/// Active again by hand during observation is blocked, never deleted.
#[tokio::test(flavor = "multi_thread")]
async fn keys_and_users_changed_outside_keyturn_are_recorded_not_fought() {
    let bed = Bed::new(
        "out-of-band",
        vec![(
            "app",
            vec![
                UserSpec::new("gone-key", vec![KeySpec::active(120, Some(1))]),
                UserSpec::new("gone-user", vec![KeySpec::active(120, Some(1))]),
                UserSpec::new("reactivated", vec![KeySpec::active(120, Some(1))]),
            ],
        )],
        POLICY,
    )
    .await;
    let gone_key = bed.key_id("app", "gone-key", 0);
    let gone_user = bed.key_id("app", "gone-user", 0);
    let reactivated = bed.key_id("app", "reactivated", 0);
    bed.start();

    bed.run();
    let status = bed.status();
    let mut new = BTreeMap::new();
    for old in [&gone_key, &gone_user, &reactivated] {
        let entry = key_entry(&status, old);
        assert_eq!(entry["state"], "awaiting-adoption", "{status:#}");
        new.insert(old.clone(), text(entry, "new_access_key_id").to_owned());
    }
    let mut secrets = Vec::new();
    for (user, old) in [
        ("gone-key", &gone_key),
        ("gone-user", &gone_user),
        ("reactivated", &reactivated),
    ] {
        secrets.push(bed.assert_delivered("app", user, &new[old]).await);
    }

    // By hand: delete one old key; delete another user altogether (its keys, then the
    // user); the third application switches to its new key.
    let iam = bed.iam("app").await;
    iam.delete_access_key()
        .user_name("gone-key")
        .access_key_id(&gone_key)
        .send()
        .await
        .expect("DeleteAccessKey");
    for key in [&gone_user, &new[&gone_user]] {
        iam.delete_access_key()
            .user_name("gone-user")
            .access_key_id(key)
            .send()
            .await
            .expect("DeleteAccessKey");
    }
    iam.delete_user()
        .user_name("gone-user")
        .send()
        .await
        .expect("DeleteUser");
    use_key(&bed.emulator, &new[&reactivated], &secrets[2]).await;

    sleep_secs(2.5).await;
    bed.run();
    let status = check_status_shape(&bed);
    for old in [&gone_key, &gone_user] {
        let entry = key_entry(&status, old);
        assert_eq!(entry["state"], "completed", "{status:#}");
        assert!(
            text(entry, "reason").contains("deleted outside keyturn"),
            "{entry:#}"
        );
        assert_eq!(entry["next_check_at"], Value::Null);
    }
    assert_eq!(
        bed.keys("app", "gone-key").await,
        [(new[&gone_key].clone(), "Active".to_owned())],
        "the replacement is left in place"
    );
    let entry = key_entry(&status, &reactivated);
    assert_eq!(entry["state"], "observing", "{status:#}");
    assert!(
        bed.keys("app", "reactivated")
            .await
            .contains(&(reactivated.clone(), "Inactive".to_owned()))
    );

    // By hand: the deactivated key is made Active again during observation.
    iam.update_access_key()
        .user_name("reactivated")
        .access_key_id(&reactivated)
        .status(aws_sdk_iam::types::StatusType::Active)
        .send()
        .await
        .expect("UpdateAccessKey");
    bed.run();
    let entry = bed.entry(&reactivated);
    assert_eq!(entry["state"], "blocked", "{entry:#}");
    assert!(
        text(&entry, "reason").contains("reactivated outside keyturn"),
        "{entry:#}"
    );

    // Past the observation period it is still not deleted.
    sleep_secs(2.5).await;
    bed.run();
    assert_eq!(bed.entry(&reactivated)["state"], "blocked");
    let mut both = vec![
        (reactivated.clone(), "Active".to_owned()),
        (new[&reactivated].clone(), "Active".to_owned()),
    ];
    both.sort();
    assert_eq!(bed.keys("app", "reactivated").await, both);
    bed.assert_no_leak(&secrets);
    assert!(bed.assert_gates_kept() > 0);
}

/// The full rotation path on the DynamoDB journal (the production one): `journal init`,
/// start, run through every gate, status and list from the table; no secret in any item.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_runs_through_every_gate_on_the_dynamodb_journal() {
    let bed = Bed::with_journal(
        "dynamodb",
        vec![(
            "app",
            vec![UserSpec::new("app", vec![KeySpec::active(120, Some(1))])],
        )],
        POLICY,
        "dynamodb://keyturn-journal",
    )
    .await;
    let old = bed.key_id("app", "app", 0);
    let init = bed.kt(&["journal", "init"]);
    assert_eq!(init.code, 0, "journal init: {}", init.stderr);
    bed.start();

    let out = bed.run();
    assert!(out.contains("verified"), "{out}");
    let entry = bed.entry(&old);
    assert_eq!(entry["state"], "awaiting-adoption", "{entry:#}");
    let new = text(&entry, "new_access_key_id").to_owned();
    let secret = bed.assert_delivered("app", "app", &new).await;
    let mut both = vec![
        (old.clone(), "Active".to_owned()),
        (new.clone(), "Active".to_owned()),
    ];
    both.sort();
    assert_eq!(bed.keys("app", "app").await, both);

    use_key(&bed.emulator, &new, &secret).await;
    sleep_secs(2.5).await;
    let out = bed.run();
    assert!(out.contains("deactivated"), "{out}");
    assert_eq!(bed.entry(&old)["state"], "observing");
    assert!(
        bed.keys("app", "app")
            .await
            .contains(&(old.clone(), "Inactive".to_owned()))
    );

    sleep_secs(2.5).await;
    bed.run();
    let status = check_status_shape(&bed);
    let entry = key_entry(&status, &old);
    assert_eq!(entry["state"], "completed", "{status:#}");
    assert_eq!(entry["new_access_key_id"], new.as_str());
    assert_eq!(
        bed.keys("app", "app").await,
        [(new.clone(), "Active".to_owned())]
    );
    let list = bed.kt(&["campaign", "list", "-o", "json"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert_eq!(list.json()[0]["name"], "c1");

    // The table holds the journal, and no secret.
    let ddb = aws_sdk_dynamodb::Client::new(&bed.emulator.sdk_config().await);
    let mut items = String::new();
    let mut start = None;
    loop {
        let page = ddb
            .scan()
            .table_name("keyturn-journal")
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("Scan");
        for item in page.items() {
            items.push_str(&format!("{item:?}\n"));
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
    }
    assert!(items.contains(&old) && items.contains(&new), "{items}");
    assert!(items.contains("key-deleted"), "{items}");
    assert!(
        !items.contains(&secret),
        "a secret access key is in the table"
    );
    bed.assert_no_leak(&[secret]);
}

/// No secret access key reaches stdout, stderr (even with debug logging: `-vv`, and
/// `KEYTURN_LOG=debug` or `trace`) or the journal, over whole rotations; a key that
/// crosses the threshold after the first run is enrolled by a later one.
#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_stdout_stderr_debug_logs_or_the_journal() {
    let bed = Bed::new(
        "secrets",
        vec![(
            "app",
            vec![
                UserSpec::new("app", vec![KeySpec::active(120, Some(1))]),
                UserSpec::new("etl", vec![KeySpec::active(200, Some(2))]),
            ],
        )],
        POLICY,
    )
    .await;
    let old = bed.key_id("app", "app", 0);
    let etl_old = bed.key_id("app", "etl", 0);
    bed.start();

    // Run 1 at `-vv`: two replacements created, delivered, read back and verified.
    let run = bed.kt(&["-vv", "run", "c1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("DEBUG"),
        "-vv logs at debug level: {}",
        run.stderr
    );
    let mut secrets = Vec::new();
    for (user, old) in [("app", &old), ("etl", &etl_old)] {
        let entry = bed.entry(old);
        assert_eq!(entry["state"], "awaiting-adoption", "{entry:#}");
        let new = text(&entry, "new_access_key_id").to_owned();
        let secret = bed.assert_delivered("app", user, &new).await;
        use_key(&bed.emulator, &new, &secret).await;
        secrets.push(secret);
    }

    // A user whose key became old since: enrolled and rotated by the next run, which
    // logs at trace level.
    let iam = bed.iam("app").await;
    iam.create_user()
        .user_name("late")
        .send()
        .await
        .expect("CreateUser");
    let late = iam
        .create_access_key()
        .user_name("late")
        .send()
        .await
        .expect("CreateAccessKey");
    let late_old = late.access_key().unwrap().access_key_id().to_owned();
    bed.emulator
        .set_access_key(
            &late_old,
            Some(Utc::now() - chrono::Duration::days(120)),
            Some(Some(keyturn_testbed::LastUsed::new(
                Utc::now() - chrono::Duration::days(1),
                "s3",
                "us-east-1",
            ))),
        )
        .await;

    sleep_secs(2.5).await;
    let trace = [("KEYTURN_LOG", "trace")];
    let run = bed.kt_env(&["run", "c1"], &trace);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("TRACE"), "trace logs: {}", run.stderr);
    let entry = bed.entry(&late_old);
    assert_eq!(entry["state"], "awaiting-adoption", "{entry:#}");
    let late_new = text(&entry, "new_access_key_id").to_owned();
    secrets.push(bed.assert_delivered("app", "late", &late_new).await);

    let debug = [("KEYTURN_LOG", "debug")];
    for _ in 0..2 {
        sleep_secs(2.5).await;
        bed.run_with(&["-v"], &debug);
    }
    for args in [
        &["-vv", "status", "c1", "-o", "json"][..],
        &["-vv", "status", "c1", "-o", "table"],
        &["-vv", "campaign", "list", "-o", "csv"],
    ] {
        let run = bed.kt_env(args, &debug);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
    }
    let status = check_status_shape(&bed);
    assert_eq!(
        counts(&status),
        expect_counts(&[("completed", 3)]),
        "{status:#}"
    );

    // Every version ever delivered, read back from Secrets Manager.
    for user in ["app", "etl", "late"] {
        for (_, secret) in bed.delivered("app", user).await {
            if !secrets.contains(&secret) {
                secrets.push(secret);
            }
        }
    }
    bed.assert_no_leak(&secrets);
    assert!(bed.assert_gates_kept() > 0);
}

/// `run --watch` keeps going, sleeping until the next gate, and exits 0 with a summary
/// once only settled and blocked keys are left.
#[tokio::test(flavor = "multi_thread")]
async fn run_watch_drives_every_key_to_rest_and_exits_with_a_summary() {
    let bed = Bed::new(
        "watch",
        vec![
            (
                "one",
                vec![
                    UserSpec::new("app", vec![KeySpec::active(120, Some(1))]),
                    UserSpec::new(
                        "twins",
                        vec![KeySpec::active(140, Some(1)), KeySpec::active(100, Some(1))],
                    ),
                ],
            ),
            (
                "two",
                vec![UserSpec::new("idle", vec![KeySpec::active(200, None)])],
            ),
        ],
        POLICY,
    )
    .await;
    let old = bed.key_id("one", "app", 0);
    let idle = bed.key_id("two", "idle", 0);
    bed.start();

    // The application's old key shows no use after delivery, so the rotation goes through
    // every gate on its own; the unused key is retired; the twins stay blocked.
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keyturn"));
    bed.emulator.configure(&mut command);
    let mut child = command
        .args([
            "--journal",
            &bed.journal,
            "run",
            "c1",
            "--watch",
            "--concurrency",
            "1",
        ])
        .current_dir(bed.dir.path())
        .env_remove("KEYTURN_JOURNAL")
        .env_remove("KEYTURN_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run keyturn");
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "run --watch did not stop: {}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        sleep_secs(0.2).await;
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    bed.printed
        .lock()
        .unwrap()
        .push_str(&format!("{stdout}{stderr}"));
    assert!(stderr.contains("watching"), "{stderr}");
    assert_eq!(
        stdout.lines().last(),
        Some("2 blocked, 1 completed, 1 retired"),
        "{stdout}"
    );

    let status = check_status_shape(&bed);
    assert_eq!(
        counts(&status),
        expect_counts(&[("completed", 1), ("retired", 1), ("blocked", 2)])
    );
    let new = text(key_entry(&status, &old), "new_access_key_id").to_owned();
    assert_eq!(
        bed.keys("one", "app").await,
        [(new.clone(), "Active".to_owned())]
    );
    assert!(bed.keys("two", "idle").await.is_empty());
    assert_eq!(key_entry(&status, &idle)["state"], "retired");
    let secret = bed.assert_delivered("one", "app", &new).await;
    bed.assert_no_leak(&[secret]);
    assert!(bed.assert_gates_kept() > 0);
}

/// An account that cannot be read at all is reported (exit 3, its id and the AWS error
/// code on stderr) while the other accounts are worked; once AWS answers again, the next
/// run takes it up.
#[tokio::test(flavor = "multi_thread")]
async fn an_account_that_cannot_be_worked_never_stops_the_others() {
    let bed = Bed::new(
        "account-failure",
        vec![
            (
                "down",
                vec![UserSpec::new("app", vec![KeySpec::active(120, Some(1))])],
            ),
            (
                "up",
                vec![UserSpec::new("app", vec![KeySpec::active(120, Some(1))])],
            ),
        ],
        POLICY,
    )
    .await;
    let down = bed.account("down");
    let down_old = bed.key_id("down", "app", 0);
    let up_old = bed.key_id("up", "app", 0);
    bed.start();
    bed.emulator
        .set_faults(&[FaultRule::error(503).service("iam").account(&down)])
        .await;

    let run = bed.kt(&["run", "c1"]);
    assert_eq!(run.code, 3, "partial: {}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains(&down) && l.contains("ServiceUnavailable")),
        "{}",
        run.stderr
    );
    let status = bed.status();
    assert_eq!(
        key_entry(&status, &up_old)["state"],
        "awaiting-adoption",
        "{status:#}"
    );
    assert!(
        !status["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["old_access_key_id"] == down_old.as_str()),
        "{status:#}"
    );

    bed.emulator.clear_faults().await;
    bed.run();
    let entry = bed.entry(&down_old);
    assert_eq!(entry["state"], "awaiting-adoption", "{entry:#}");
    let new = text(&entry, "new_access_key_id").to_owned();
    let secret = bed.assert_delivered("down", "app", &new).await;
    let up_new = text(&bed.entry(&up_old), "new_access_key_id").to_owned();
    let up_secret = bed.assert_delivered("up", "app", &up_new).await;
    bed.assert_no_leak(&[secret, up_secret]);
}

/// Invariant: no key is left without its secret stored once a run completes. Secrets
/// Manager fails every write (reads still work, so the run can confirm the secret was not
/// stored): the replacement, whose secret existed only in the run's memory, must not
/// outlive the run. Once Secrets Manager accepts writes again, the rotation proceeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_replacement_whose_secret_cannot_be_stored_does_not_outlive_the_run() {
    let bed = Bed::new(
        "undelivered",
        vec![(
            "app",
            vec![UserSpec::new("app", vec![KeySpec::active(120, Some(1))])],
        )],
        POLICY,
    )
    .await;
    let account = bed.account("app");
    let old = bed.key_id("app", "app", 0);
    bed.start();
    bed.emulator
        .set_faults(&[
            FaultRule::error(500)
                .service("secretsmanager")
                .action("PutSecretValue")
                .account(&account),
            FaultRule::error(500)
                .service("secretsmanager")
                .action("CreateSecret")
                .account(&account),
        ])
        .await;

    let out = bed.run();
    assert!(out.contains("deliver-secret failed with"), "{out}");
    let entry = bed.entry(&old);
    assert_eq!(entry["state"], "pending", "{entry:#}");
    assert!(
        text(&entry, "reason").contains("InternalFailure"),
        "{entry:#}"
    );
    assert_eq!(
        bed.keys("app", "app").await,
        [(old.clone(), "Active".to_owned())],
        "a replacement whose secret is stored nowhere was left in IAM after the run:\n{out}"
    );

    // Secrets Manager accepts writes again: after the backoff the rotation proceeds.
    bed.emulator.clear_faults().await;
    let at = time(text(&entry, "next_check_at"));
    sleep_until(at, Duration::from_millis(1200)).await;
    bed.run();
    let entry = bed.entry(&old);
    assert_eq!(entry["state"], "awaiting-adoption", "{entry:#}");
    let new = text(&entry, "new_access_key_id").to_owned();
    let secret = bed.assert_delivered("app", "app", &new).await;
    let mut both = vec![
        (old.clone(), "Active".to_owned()),
        (new.clone(), "Active".to_owned()),
    ];
    both.sort();
    assert_eq!(bed.keys("app", "app").await, both);
    bed.assert_no_leak(&[secret]);
}

/// A Secrets Manager outage in one account: every run records each key's failure with
/// the AWS error code and backs off (so the keys count towards `failed`), and no key of
/// the account is starved behind another; the other account completes its delivery.
#[tokio::test(flavor = "multi_thread")]
async fn a_secrets_manager_outage_is_recorded_as_failures_of_every_key_of_the_account() {
    let bed = Bed::new(
        "sm-outage",
        vec![
            (
                "down",
                vec![
                    UserSpec::new("app1", vec![KeySpec::active(120, Some(1))]),
                    UserSpec::new("app2", vec![KeySpec::active(120, Some(1))]),
                ],
            ),
            (
                "up",
                vec![UserSpec::new("app", vec![KeySpec::active(120, Some(1))])],
            ),
        ],
        POLICY,
    )
    .await;
    let down = bed.account("down");
    let olds = [bed.key_id("down", "app1", 0), bed.key_id("down", "app2", 0)];
    let up_old = bed.key_id("up", "app", 0);
    bed.start();
    bed.emulator
        .set_faults(&[FaultRule::error(500)
            .service("secretsmanager")
            .account(&down)])
        .await;

    let out = bed.run();
    let status = bed.status();
    assert_eq!(
        key_entry(&status, &up_old)["state"],
        "awaiting-adoption",
        "{status:#}"
    );
    let mut due = Utc::now();
    for old in &olds {
        let entry = key_entry(&status, old);
        assert_eq!(entry["state"], "pending", "{out}\n{status:#}");
        assert!(
            text(entry, "reason").contains("InternalFailure, 1 in a row"),
            "{entry:#}"
        );
        let at = time(text(entry, "next_check_at"));
        due = due.max(at);
    }

    // After the backoff, both keys are tried again and their failures counted.
    sleep_until(due, Duration::from_millis(1200)).await;
    let run = bed.kt(&["run", "c1"]);
    let status = bed.status();
    for old in &olds {
        let entry = key_entry(&status, old);
        assert_eq!(entry["state"], "pending", "{status:#}");
        assert!(
            text(entry, "reason").contains("InternalFailure, 2 in a row"),
            "the second failure of {old} was not recorded (run exit {}):\n{}\n{}\n{entry:#}",
            run.code,
            run.stdout,
            run.stderr
        );
    }
    assert_eq!(
        run.code, 0,
        "failed steps are not failed accounts: {}",
        run.stderr
    );
}

/// The replacement is deleted, or made Inactive, outside keyturn while the old key waits
/// for adoption: deactivating the old key would leave the user without any working key,
/// so the old key is blocked for a human instead, still Active, and never deleted.
#[tokio::test(flavor = "multi_thread")]
async fn an_old_key_is_never_deactivated_once_its_replacement_is_gone() {
    let bed = Bed::new(
        "replacement-gone",
        vec![(
            "app",
            vec![
                UserSpec::new("deleted", vec![KeySpec::active(120, Some(1))]),
                UserSpec::new("disabled", vec![KeySpec::active(120, Some(1))]),
            ],
        )],
        POLICY,
    )
    .await;
    let deleted = bed.key_id("app", "deleted", 0);
    let disabled = bed.key_id("app", "disabled", 0);
    bed.start();
    bed.run();
    let deleted_new = text(&bed.entry(&deleted), "new_access_key_id").to_owned();
    let disabled_new = text(&bed.entry(&disabled), "new_access_key_id").to_owned();
    let secrets = vec![
        bed.assert_delivered("app", "deleted", &deleted_new).await,
        bed.assert_delivered("app", "disabled", &disabled_new).await,
    ];

    // By hand: one replacement deleted, the other made Inactive. The old keys are not
    // used after delivery, so the adoption gate alone would let them be deactivated.
    let iam = bed.iam("app").await;
    iam.delete_access_key()
        .user_name("deleted")
        .access_key_id(&deleted_new)
        .send()
        .await
        .expect("DeleteAccessKey");
    iam.update_access_key()
        .user_name("disabled")
        .access_key_id(&disabled_new)
        .status(aws_sdk_iam::types::StatusType::Inactive)
        .send()
        .await
        .expect("UpdateAccessKey");

    sleep_secs(2.5).await;
    bed.emulator.reset_counters().await;
    let out = bed.run();
    assert_eq!(
        bed.keys("app", "deleted").await,
        [(deleted.clone(), "Active".to_owned())],
        "the user's only key was deactivated:\n{out}"
    );
    let mut both = vec![
        (disabled.clone(), "Active".to_owned()),
        (disabled_new.clone(), "Inactive".to_owned()),
    ];
    both.sort();
    assert_eq!(
        bed.keys("app", "disabled").await,
        both,
        "the user's only Active key was deactivated:\n{out}"
    );
    for old in [&deleted, &disabled] {
        let entry = bed.entry(old);
        assert_eq!(entry["state"], "blocked", "{entry:#}");
        assert!(
            text(&entry, "reason").contains("outside keyturn"),
            "{entry:#}"
        );
    }

    // Blocked for good: later runs leave the keys as they are.
    sleep_secs(2.5).await;
    bed.run();
    assert_eq!(
        bed.keys("app", "deleted").await,
        [(deleted.clone(), "Active".to_owned())]
    );
    assert_eq!(bed.keys("app", "disabled").await, both);
    let mutations = iam_mutations(&bed.emulator).await;
    assert_eq!(mutations["UpdateAccessKey"], 0, "{mutations:?}");
    assert_eq!(mutations["DeleteAccessKey"], 0, "{mutations:?}");
    bed.assert_no_leak(&secrets);
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_a_watching_run_cleanly_between_steps() {
    let (emulator, _org) = one_account(vec![UserSpec::new(
        "app",
        vec![KeySpec::active(120, Some(1))],
    )])
    .await;
    let dir = TempDir::new("campaign-ctrl-c");
    let journal = "sqlite://journal.db";
    // A long quiet period: after its first steps the run has nothing to do but wait.
    let policy = dir.write(
        "policy.toml",
        &POLICY.replace("quiet_period = \"2s\"", "quiet_period = \"10m\""),
    );
    support::start_campaign(&emulator, dir.path(), journal, "c1", &policy);

    let (mut child, rx) = support::spawn_keyturn(
        &emulator,
        dir.path(),
        &["--journal", journal, "run", "c1", "--watch"],
    );
    // Progress lines (`inventory: …`, `run: …`) and the test bed's policy warning come
    // first; then the watch reports.
    let waiting = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the run reports it is watching");
        if !line.starts_with("inventory: ")
            && !line.starts_with("run: ")
            && !line.contains("policy: allow_short_gates")
        {
            break line;
        }
    };
    assert!(waiting.starts_with("watching: next check in"), "{waiting}");

    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not stop after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(exit.code(), Some(0), "a clean stop, not a kill");
    let said: Vec<String> = rx.try_iter().collect();
    assert!(
        said.iter()
            .any(|l| l.contains("stopping after the step under way")),
        "{said:?}"
    );

    // Every step it began was finished and recorded: the rotation waits at its gate.
    let s = status(&emulator, &dir, journal);
    assert_eq!(s["keys"][0]["state"], "awaiting-adoption", "{s:#}");
}
