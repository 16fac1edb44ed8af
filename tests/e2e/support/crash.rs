//! Helpers of the crash scenarios (`tests/e2e/crash.rs`): running keyturn processes that
//! may crash or be killed, reading IAM and Secrets Manager back through the SDK, and
//! checking the journal's invariants event by event.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use keyturn_journal::{Journal, JournalLocation, verify_chain};
use keyturn_planner::rotation::{Path as KeyPath, Phase, RotationEvent, Step, UserState};
use keyturn_planner::{AccessKeyId, CampaignName, Policy};
use keyturn_testbed::Emulator;
use keyturn_testbed::seed::member_config;
use keyturn_worker::SdkConfig;
use keyturn_worker::campaign::{CampaignState, load_state};
use serde_json::Value;
use tokio::io::AsyncReadExt;

/// Fails unless the keyturn binary under test was built with its failpoints
/// (`--features keyturn-cli/failpoints`): such a binary refuses a malformed `FAILPOINTS`.
/// The target dir is shared, so a plain build can replace the binary between the build
/// of this test and its run; this says so instead of failing every scenario obscurely.
pub fn assert_failpoints_compiled_in() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyturn"))
        .arg("--version")
        .env("FAILPOINTS", "not-a-failpoint-configuration")
        .output()
        .expect("run keyturn --version");
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("failpoint"),
        "{} was built without its failpoints: build the tests with \
         `--features keyturn-cli/failpoints` (as `cargo xtask test` does)",
        env!("CARGO_BIN_EXE_keyturn")
    );
}

/// One finished (or killed) keyturn process.
#[derive(Debug)]
pub struct Proc {
    /// What was run, for messages.
    pub what: String,
    /// How it ended.
    pub status: ExitStatus,
    /// Whether the test killed it (before it ended on its own).
    pub killed: bool,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl Proc {
    /// Whether the process ended by a signal (abort, SIGKILL) rather than by exiting.
    pub fn died(&self) -> bool {
        self.status.code().is_none()
    }

    /// Whether it exited with `code`.
    pub fn exited(&self, code: i32) -> bool {
        self.status.code() == Some(code)
    }

    /// Whether it crashed at the named failpoint: ended by a signal, having said so.
    pub fn crashed_at(&self, failpoint: &str) -> bool {
        self.died()
            && self
                .stderr
                .contains(&format!("failpoint {failpoint}: crashing the process"))
    }

    /// Both streams, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} ended with {:?} (killed by the test: {})\nstdout:\n{}\nstderr:\n{}",
            self.what, self.status, self.killed, self.stdout, self.stderr
        )
    }
}

/// How keyturn processes of one scenario are started, and everything they printed.
#[derive(Debug, Clone)]
pub struct Keyturn {
    env: Vec<(String, String)>,
    dir: std::path::PathBuf,
    journal: String,
    outputs: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Keyturn {
    /// keyturn against `emulator`, in `dir`, on `journal` (`sqlite://…` or `dynamodb://…`).
    pub fn new(emulator: &Emulator, dir: &Path, journal: &str) -> Self {
        Self {
            env: emulator.env(),
            dir: dir.to_path_buf(),
            journal: journal.to_owned(),
            outputs: Arc::default(),
        }
    }

    /// Runs `keyturn --journal J ARGS` to its end, with `failpoints` as `FAILPOINTS`.
    pub async fn invoke(&self, args: &[&str], failpoints: Option<&str>) -> Proc {
        self.spawn(args, failpoints, None).await
    }

    /// Runs `keyturn --journal J ARGS`, sending it SIGKILL after `kill_after` unless it
    /// ended before.
    pub async fn spawn(
        &self,
        args: &[&str],
        failpoints: Option<&str>,
        kill_after: Option<Duration>,
    ) -> Proc {
        // No core file for the aborts of crash runs: a power cut leaves none either.
        let mut command = tokio::process::Command::new("sh");
        command
            .arg("-c")
            .arg("ulimit -c 0; exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_keyturn"))
            .args(["--journal", &self.journal])
            .args(args)
            .current_dir(&self.dir);
        for name in keyturn_testbed::ENV_TO_REMOVE {
            command.env_remove(name);
        }
        command
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("KEYTURN_JOURNAL")
            .env_remove("KEYTURN_LOG")
            .env_remove("FAILPOINTS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(failpoints) = failpoints {
            command.env("FAILPOINTS", failpoints);
        }
        let mut child = command.spawn().expect("start keyturn");
        let mut out = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        let stdout = tokio::spawn(async move {
            let mut text = Vec::new();
            let _ = out.read_to_end(&mut text).await;
            String::from_utf8_lossy(&text).into_owned()
        });
        let stderr = tokio::spawn(async move {
            let mut text = Vec::new();
            let _ = err.read_to_end(&mut text).await;
            String::from_utf8_lossy(&text).into_owned()
        });
        let mut killed = false;
        let status = match kill_after {
            None => child.wait().await.expect("wait for keyturn"),
            Some(delay) => match tokio::time::timeout(delay, child.wait()).await {
                Ok(status) => status.expect("wait for keyturn"),
                Err(_) => {
                    // It may end on its own between the timeout and the signal.
                    let _ = child.start_kill();
                    let status = child.wait().await.expect("wait for keyturn");
                    killed = status.code().is_none();
                    status
                }
            },
        };
        let proc = Proc {
            what: format!(
                "keyturn {}{}",
                args.join(" "),
                failpoints.map_or(String::new(), |f| format!(" (FAILPOINTS={f})"))
            ),
            status,
            killed,
            stdout: stdout.await.expect("stdout reader"),
            stderr: stderr.await.expect("stderr reader"),
        };
        let mut outputs = self.outputs.lock().unwrap();
        outputs.push(proc.stdout.clone());
        outputs.push(proc.stderr.clone());
        proc
    }

    /// `keyturn status NAME -o json`, which must succeed.
    pub async fn status(&self, campaign: &str) -> Value {
        let proc = self.invoke(&["status", campaign, "-o", "json"], None).await;
        assert!(proc.exited(0), "{}", proc.describe());
        serde_json::from_str(&proc.stdout).expect("status is JSON")
    }

    /// Everything every process of this scenario printed.
    pub fn outputs(&self) -> Vec<String> {
        self.outputs.lock().unwrap().clone()
    }
}

/// The state words of a status document's keys.
pub fn states(status: &Value) -> Vec<String> {
    status["keys"]
        .as_array()
        .expect("status keys")
        .iter()
        .map(|k| k["state"].as_str().unwrap().to_owned())
        .collect()
}

/// Whether every key of the campaign is settled (no pending, adoption or observation).
pub fn settled(status: &Value) -> bool {
    let states = states(status);
    !states.is_empty()
        && states
            .iter()
            .all(|s| !matches!(s.as_str(), "pending" | "awaiting-adoption" | "observing"))
}

/// An SDK configuration signed as the organization's access role in a member account,
/// for reading what keyturn did there.
pub async fn member(emulator: &Emulator, account: &str) -> SdkConfig {
    member_config(emulator, account).await
}

/// A user's keys as IAM lists them: (id, status), sorted.
pub async fn keys_of(member: &SdkConfig, user: &str) -> Vec<(String, String)> {
    let iam = aws_sdk_iam::Client::new(member);
    let out = iam
        .list_access_keys()
        .user_name(user)
        .send()
        .await
        .expect("ListAccessKeys");
    let mut keys: Vec<(String, String)> = out
        .access_key_metadata()
        .iter()
        .map(|k| {
            (
                k.access_key_id().unwrap().to_owned(),
                k.status().unwrap().as_str().to_owned(),
            )
        })
        .collect();
    keys.sort();
    keys
}

/// The key pair in the current version (`AWSCURRENT`) of a user's secret, if any.
pub async fn current_secret(member: &SdkConfig, user: &str) -> Option<(String, String)> {
    let sm = aws_sdk_secretsmanager::Client::new(member);
    let out = sm
        .get_secret_value()
        .secret_id(format!("keyturn/{user}"))
        .send()
        .await
        .ok()?;
    let value: Value = serde_json::from_str(out.secret_string()?).expect("secret is JSON");
    Some((
        value["AccessKeyId"].as_str()?.to_owned(),
        value["SecretAccessKey"].as_str()?.to_owned(),
    ))
}

/// Every SecretAccessKey stored in any version of a user's secret.
pub async fn stored_secrets(member: &SdkConfig, user: &str) -> Vec<String> {
    let sm = aws_sdk_secretsmanager::Client::new(member);
    let name = format!("keyturn/{user}");
    let Ok(versions) = sm
        .list_secret_version_ids()
        .secret_id(&name)
        .include_deprecated(true)
        .send()
        .await
    else {
        return Vec::new();
    };
    let mut secrets = Vec::new();
    for version in versions.versions() {
        let out = sm
            .get_secret_value()
            .secret_id(&name)
            .version_id(version.version_id().unwrap())
            .send()
            .await
            .expect("GetSecretValue of a listed version");
        let value: Value = serde_json::from_str(out.secret_string().unwrap()).unwrap();
        // A void (a delivery keyturn gave up) holds no secret.
        if value.get("VoidedAccessKeyId").is_none() {
            secrets.push(value["SecretAccessKey"].as_str().unwrap().to_owned());
        }
    }
    secrets
}

/// Signs STS GetCallerIdentity with the key, as an application using it does; its ARN,
/// or the error code.
pub async fn sign_with(emulator: &Emulator, key_id: &str, secret: &str) -> Result<String, String> {
    let config = emulator
        .sdk_config_with(aws_credential_types::Credentials::new(
            key_id, secret, None, None, "app",
        ))
        .await;
    aws_sdk_sts::Client::new(&config)
        .get_caller_identity()
        .send()
        .await
        .map(|out| out.arn().unwrap_or_default().to_owned())
        .map_err(|e| format!("{e:?}"))
}

/// The application switches to whatever key the user's secret holds now.
pub async fn adopt(emulator: &Emulator, member: &SdkConfig, user: &str) {
    if let Some((id, secret)) = current_secret(member, user).await {
        sign_with(emulator, &id, &secret)
            .await
            .expect("the delivered key signs");
    }
}

/// Whether a finished run left `account` to another worker (it printed a `busy` line).
pub fn left_busy(proc: &Proc, account: &str) -> bool {
    proc.stdout.lines().any(|l| {
        (l.starts_with("busy") || l.contains(keyturn_worker::campaign::run::ANOTHER_RUNS_STEP))
            && l.contains(account)
    })
}

/// The invariant at the end of a run that worked the user's account: every key the user
/// has is one it had before the campaign or the one stored in its secret; no replacement
/// is left whose secret is stored nowhere.
pub async fn assert_no_unstored_key(member: &SdkConfig, user: &str, seeded: &[String], what: &str) {
    let stored = current_secret(member, user).await.map(|(id, _)| id);
    for (key, status) in keys_of(member, user).await {
        assert!(
            seeded.contains(&key) || stored.as_ref() == Some(&key),
            "{what}: after a run, {user} has {key} ({status}), which was neither seeded nor \
             stored in its secret"
        );
    }
}

/// Checks a user's final state against IAM and Secrets Manager: exactly one key, Active,
/// the one in the secret's current version, and it authenticates as the user.
pub async fn assert_rotated(emulator: &Emulator, member: &SdkConfig, user: &str, what: &str) {
    let keys = keys_of(member, user).await;
    let (id, secret) = current_secret(member, user)
        .await
        .unwrap_or_else(|| panic!("{what}: {user} has no secret"));
    assert_eq!(
        keys,
        vec![(id.clone(), "Active".to_owned())],
        "{what}: {user} ends with exactly the key of its secret (no orphan, old key deleted)"
    );
    let arn = sign_with(emulator, &id, &secret)
        .await
        .unwrap_or_else(|e| panic!("{what}: the stored key does not authenticate: {e}"));
    assert!(
        arn.ends_with(&format!(":user/{user}")),
        "{what}: the stored key signs as {arn}"
    );
}

/// Asserts that no secret appears in the files of `dir` (the journal and its WAL) nor in
/// any of `outputs`.
pub fn assert_no_secret(dir: &Path, outputs: &[String], secrets: &[String], what: &str) {
    assert!(!secrets.is_empty(), "{what}: no secret to look for");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read the scenario's directory") {
        let path = entry.expect("directory entry").path();
        if path.is_file() {
            files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    for secret in secrets {
        assert!(secret.len() >= 20, "{what}: implausible secret");
        for (name, bytes) in &files {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{what}: a secret is in {name}"
            );
        }
        for output in outputs {
            assert!(
                !output.contains(secret.as_str()),
                "{what}: a secret was printed:\n{output}"
            );
        }
    }
}

/// Opens a journal from the test process.
pub async fn open_journal(location: &JournalLocation, emulator: &Emulator) -> Arc<dyn Journal> {
    let sdk = match location {
        JournalLocation::DynamoDb { .. } => Some(emulator.sdk_config().await),
        JournalLocation::Sqlite { .. } => None,
    };
    keyturn_journal::open(location, sdk.as_ref())
        .await
        .expect("open the journal")
}

/// What a campaign's journal says, once its invariants were checked.
#[derive(Debug, Default)]
pub struct JournalFacts {
    /// Per (account, user): replacements created.
    pub created: BTreeMap<(String, String), usize>,
    /// Per (account, user): distinct orphans deleted.
    pub orphans: BTreeMap<(String, String), usize>,
    /// Every step failure recorded: (step, AWS error code).
    pub failures: Vec<(Step, String)>,
}

impl JournalFacts {
    /// Orphans deleted in an account, over its users.
    pub fn orphans_in(&self, account: &str) -> usize {
        sum_for(&self.orphans, account)
    }
}

fn sum_for(map: &BTreeMap<(String, String), usize>, account: &str) -> usize {
    map.iter()
        .filter(|((a, _), _)| a == account)
        .map(|(_, n)| n)
        .sum()
}

/// Verifies the campaign's hash chains and replays every user's events, checking the
/// rotation invariants at each step:
///
/// - at most one rotation in flight per user, and never a second replacement of a key
///   while one exists;
/// - no deactivation without fresh evidence that the key was quiet (`quiet_period` since
///   adoption began, for a rotation; `unused_after`, for a retirement);
/// - no deletion intended before `observation_period` after the campaign deactivated the key;
/// - a reactivation intended (a rollback) is carried out before anything else happens to
///   the key, even when the rollback's process died or its call failed;
/// - no step failed with `LimitExceeded` (a third key).
pub async fn check_journal(journal: &dyn Journal, campaign: &str, what: &str) -> JournalFacts {
    let events = journal
        .read_campaign(campaign)
        .await
        .expect("read the campaign");
    assert!(!events.is_empty(), "{what}: the journal is empty");
    if let Err(e) = verify_chain(&events) {
        panic!("{what}: the journal's hash chain is broken: {e}");
    }
    let name = CampaignName::new(campaign).unwrap();
    let state: CampaignState = load_state(journal, &name).await.expect("load the campaign");
    let policy: &Policy = &state.campaign.policy;
    let rules = &policy.rotation;
    let chrono_of = |d: Duration| chrono::Duration::from_std(d).unwrap();
    let mut facts = JournalFacts::default();
    for ((account, user), entry) in &state.users {
        let who = format!("{what}: {account}/{user}");
        let id = (account.to_string(), user.to_string());
        let mut folded = UserState::default();
        let mut orphans = BTreeSet::new();
        let mut reactivating: BTreeSet<AccessKeyId> = BTreeSet::new();
        for (index, (event, at)) in entry.events.iter().enumerate() {
            let at: DateTime<Utc> = *at;
            let context = || format!("{who}, event {} ({})", index + 1, event.event_type());
            let key = event.key();
            let before = folded.keys.get(key).cloned();
            if reactivating.contains(key) {
                // Until the key is Active again, only the rollback itself may be recorded:
                // its failures (which leave the intent open), or the key vanishing.
                let allowed = matches!(
                    event,
                    RotationEvent::KeyReactivated { .. }
                        | RotationEvent::RollbackRequested { .. }
                        | RotationEvent::KeyVanished { .. }
                        | RotationEvent::KeyFailed { .. }
                        | RotationEvent::StepFailed {
                            step: Step::Reactivate,
                            ..
                        }
                        | RotationEvent::StepIntended {
                            step: Step::Reactivate,
                            ..
                        }
                );
                assert!(
                    allowed,
                    "{}: a rollback's reactivation was intended, but the key moved on without it",
                    context()
                );
            }
            match event {
                RotationEvent::ReplacementCreated { .. } => {
                    *facts.created.entry(id.clone()).or_default() += 1;
                    let ks = before
                        .as_ref()
                        .expect("a created replacement has a key state");
                    assert!(
                        ks.new_key.is_none(),
                        "{}: a second replacement of {key} while {:?} exists",
                        context(),
                        ks.new_key
                    );
                }
                RotationEvent::OrphanDeleted { orphan, .. } => {
                    orphans.insert(orphan.clone());
                }
                RotationEvent::KeyDeactivated { evidence, .. } => {
                    let ks = before.as_ref().expect("a deactivated key has a key state");
                    assert!(
                        at >= evidence.checked_at,
                        "{}: recorded before its evidence was asked",
                        context()
                    );
                    match ks.path {
                        Some(KeyPath::Rotate) => {
                            let started = ks.adoption_started_at.unwrap_or_else(|| {
                                panic!("{}: deactivated before adoption began", context())
                            });
                            let quiet_since =
                                evidence.last_used_at.map_or(started, |u| u.max(started));
                            assert!(
                                evidence.checked_at - quiet_since >= chrono_of(rules.quiet_period),
                                "{}: deactivated without {:?} of quiet (adoption began {started}, \
                                 evidence {evidence:?})",
                                context(),
                                rules.quiet_period
                            );
                        }
                        Some(KeyPath::RetireUnused) => {
                            let created = ks.created_at.expect("enrolled with its creation");
                            let quiet_since =
                                evidence.last_used_at.map_or(created, |u| u.max(created));
                            assert!(
                                evidence.checked_at - quiet_since >= chrono_of(rules.unused_after),
                                "{}: retired a key used within {:?} ({evidence:?})",
                                context(),
                                rules.unused_after
                            );
                        }
                        other => panic!("{}: deactivated a key on path {other:?}", context()),
                    }
                }
                RotationEvent::StepIntended {
                    step: Step::Delete, ..
                } => {
                    let ks = before.as_ref().expect("a deleted key has a key state");
                    if let Some(deactivated) = ks.deactivated_at {
                        assert!(
                            at - deactivated >= chrono_of(rules.observation_period),
                            "{}: deletion intended {} after deactivation, before the \
                             observation period of {:?}",
                            context(),
                            at - deactivated,
                            rules.observation_period
                        );
                    } else {
                        assert_eq!(
                            ks.path,
                            Some(KeyPath::DeleteInactive),
                            "{}: deleting a key the campaign never deactivated",
                            context()
                        );
                    }
                }
                RotationEvent::StepIntended {
                    step: Step::Reactivate,
                    ..
                } => {
                    reactivating.insert(key.clone());
                }
                RotationEvent::KeyReactivated { .. }
                | RotationEvent::KeyVanished { .. }
                | RotationEvent::KeyFailed { .. } => {
                    reactivating.remove(key);
                }
                RotationEvent::StepFailed { step, code, .. } => {
                    assert_ne!(
                        code,
                        "LimitExceeded",
                        "{}: a third key was asked",
                        context()
                    );
                    facts.failures.push((*step, code.clone()));
                }
                _ => {}
            }
            folded.evolve(event, at);
            let in_flight = folded
                .keys
                .values()
                .filter(|k| {
                    k.new_key.is_some()
                        && matches!(
                            k.phase,
                            Phase::Created
                                | Phase::Delivered
                                | Phase::AwaitingAdoption
                                | Phase::Observing
                        )
                })
                .count();
            assert!(
                in_flight <= 1,
                "{}: {in_flight} rotations in flight for one user",
                context()
            );
        }
        facts.orphans.insert(id.clone(), orphans.len());
    }
    facts
}

/// A small deterministic generator (xorshift64*), so that random kills repeat.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}
