//! Crash safety end to end: `keyturn run` killed at every step boundary (failpoints),
//! killed at random moments (SIGKILL), and raced by a second runner, each time resumed
//! by fresh processes and checked against what IAM and Secrets Manager hold, against the
//! journal's invariants (`support/crash.rs`: `check_journal`), and for secrets leaking
//! anywhere.
//!
//! - `every_failpoint_crash_resumes_to_the_same_end_state`: one scenario per name in
//!   `FAILPOINTS`, each of which must really crash a process;
//! - `every_crash_on_the_retirement_path_resumes_to_the_same_end_state`: the same for an
//!   unused key, retired without a replacement;
//! - `an_orphan_whose_deletion_failed_is_deleted_later`;
//! - `sigkill_at_random_moments_ends_as_an_uninterrupted_campaign`;
//! - `two_runners_at_once_create_each_key_exactly_once` (DynamoDB journal);
//! - `a_rotation_brackets_every_mutation_between_its_intent_and_its_outcome`.
//!
//! Needs the keyturn binary built with `--features keyturn-cli/failpoints` (this target
//! requires that feature; `cargo xtask test` passes it).

mod support;

#[path = "support/crash.rs"]
mod harness;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use harness::{
    JournalFacts, Keyturn, Proc, Rng, adopt, assert_failpoints_compiled_in, assert_no_secret,
    assert_no_unstored_key, assert_rotated, check_journal, current_secret, keys_of, left_busy,
    member, open_journal, settled, states, stored_secrets,
};
use keyturn_journal::JournalLocation;
use keyturn_testbed::seed::{AccountSpec, KeySpec, OrgSpec, SeededAccount, UserSpec, seed};
use keyturn_testbed::{Emulator, EmulatorOptions, FaultRule};
use keyturn_worker::failpoints::FAILPOINTS;
use serde_json::Value;
use support::TempDir;
use tokio::sync::Semaphore;

/// The campaign every scenario runs.
const CAMPAIGN: &str = "c1";

/// Gates of two seconds, as in the campaign scenarios.
fn policy(accounts: &[&str]) -> String {
    let accounts: Vec<String> = accounts.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"
[scope]
accounts = [{}]

[rotation]
allow_short_gates = true
max_key_age = "90d"
unused_after = "45d"
quiet_period = "2s"
adoption_timeout = "1h"
observation_period = "2s"
"#,
        accounts.join(", ")
    )
}

/// `keyturn run` with a short claim, so that the claim of a run that died expires soon.
const RUN: &[&str] = &["run", CAMPAIGN, "--claim-ttl", "1s"];

/// How a scenario reaches its failpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// A plain rotation reaches it.
    Rotate,
    /// A run first crashes at this other failpoint; resuming reaches the scenario's.
    CrashFirst(&'static str),
    /// CreateAccessKey fails (injected 5xx, through every SDK retry): the failure is recorded.
    CreateFails,
    /// `keyturn rollback` during the observation period reaches it.
    Rollback,
    /// The same, with UpdateAccessKey failing (injected 5xx) during the rollback.
    RollbackFails,
    /// A run crashes right after CreateAccessKey, then deleting the orphan fails
    /// (injected 5xx on DeleteAccessKey).
    OrphanDeleteFails,
    /// The user's key is unused: it is retired (deactivated, observed, deleted), with no
    /// replacement.
    Retire,
}

impl Setup {
    fn for_point(point: &str) -> Self {
        let stem = point
            .trim_start_matches("run::before-")
            .trim_start_matches("run::after-");
        match stem {
            // A crash right after CreateAccessKey leaves an orphan; the resume deletes it.
            "delete-orphan" | "append-intent-delete-orphan" | "append-orphan-deleted" => {
                Setup::CrashFirst("run::after-create")
            }
            // A delivery made but not recorded is found again on resume.
            "append-recovered" => Setup::CrashFirst("run::after-deliver"),
            // A deletion made but not recorded is recorded from what IAM shows.
            "append-record" => Setup::CrashFirst("run::after-delete"),
            "append-failed" => Setup::CreateFails,
            "reactivate" | "append-intent-reactivate" | "append-reactivated" => Setup::Rollback,
            "append-reactivate-failed" => Setup::RollbackFails,
            _ => Setup::Rotate,
        }
    }

    /// Scenarios that inject faults get an emulator of their own (fault rules are global).
    fn injects_faults(self) -> bool {
        matches!(
            self,
            Setup::CreateFails | Setup::RollbackFails | Setup::OrphanDeleteFails
        )
    }

    /// The failpoints at which processes must crash, in order, for `point`.
    fn crashes(self, point: &'static str) -> VecDeque<&'static str> {
        match self {
            Setup::CrashFirst(first) => VecDeque::from([first, point]),
            _ => VecDeque::from([point]),
        }
    }

    fn rolls_back(self) -> bool {
        matches!(self, Setup::Rollback | Setup::RollbackFails)
    }
}

/// A 500 for the next six calls of an IAM action: as many as the SDK's attempts, so the
/// step fails.
fn failing(action: &str) -> FaultRule {
    // As many 500s as one step makes requests: the SDK's six attempts, but one for
    // CreateAccessKey, which keyturn sends once without retries (its error must answer
    // that one request).
    let requests = if action == "CreateAccessKey" { 1 } else { 6 };
    FaultRule::error(500)
        .service("iam")
        .action(action)
        .count(requests)
}

/// An account whose one user has an Active key that nobody used for 100 days.
fn unused_key_account(name: &str) -> AccountSpec {
    AccountSpec {
        name: name.to_owned(),
        ou_path: vec![],
        users: vec![UserSpec::new("app", vec![KeySpec::active(100, None)])],
    }
}

fn one_key_account(name: &str) -> AccountSpec {
    AccountSpec {
        name: name.to_owned(),
        ou_path: vec![],
        users: vec![UserSpec::new("app", vec![KeySpec::active(120, Some(1))])],
    }
}

async fn seed_accounts(emulator: &Emulator, accounts: Vec<AccountSpec>) -> Vec<SeededAccount> {
    let spec = OrgSpec {
        management_users: vec![],
        accounts,
    };
    let org = seed(emulator, &spec, Utc::now()).await;
    // From here on the counters see keyturn's calls only.
    emulator.reset_counters().await;
    org.accounts
}

/// CreateAccessKey calls that reached IAM in `account` (injected faults excluded).
async fn creates_in(emulator: &Emulator, account: &str) -> u64 {
    let counters = emulator.counters().await;
    let calls: u64 = counters
        .requests
        .iter()
        .filter(|r| r.service == "iam" && r.action == "CreateAccessKey" && r.account == account)
        .map(|r| r.count)
        .sum();
    let faulted: u64 = emulator
        .faults()
        .await
        .iter()
        .filter(|f| f.rule.action.as_deref() == Some("CreateAccessKey"))
        .map(|f| f.fired)
        .sum();
    calls - faulted
}

/// The message a scenario's task panicked with.
fn panic_message(e: tokio::task::JoinError) -> String {
    let panic = e.into_panic();
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// One scenario, named `point`: processes crash at the failpoints of `to_crash`, in
/// order; fresh processes resume to completion; everything is checked.
async fn crash_at(
    emulator: Arc<Emulator>,
    account: SeededAccount,
    point: &'static str,
    setup: Setup,
    mut to_crash: VecDeque<&'static str>,
) -> JournalFacts {
    let id = account.id.as_str();
    let iam = member(&emulator, id).await;
    let old_key = &account.users[0].keys[0];
    let seeded = vec![old_key.access_key_id.clone()];
    let dir = TempDir::new(&format!(
        "crash-{}",
        point.replace("::", "-").replace('_', "-")
    ));
    let keyturn = Keyturn::new(&emulator, dir.path(), "sqlite://journal.db");
    let policy = dir.write("policy.toml", &policy(&[id]));
    let started = keyturn
        .invoke(&["campaign", "start", CAMPAIGN, "--policy", &policy], None)
        .await;
    assert!(started.exited(0), "{}", started.describe());
    if setup == Setup::CreateFails {
        emulator.set_faults(&[failing("CreateAccessKey")]).await;
    }

    let mut rolled_back = !setup.rolls_back();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = keyturn.status(CAMPAIGN).await;
        if settled(&status) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{point}: the campaign did not settle in time: {status:#}"
        );
        let failpoints = to_crash.front().map(|p| format!("{p}=return"));
        let observing = states(&status).iter().any(|s| s == "observing");
        let proc = if !rolled_back && observing {
            if setup == Setup::RollbackFails {
                emulator.set_faults(&[failing("UpdateAccessKey")]).await;
            }
            let args = [
                "rollback",
                CAMPAIGN,
                "--key",
                &old_key.access_key_id,
                "--reason",
                "crash test",
                "--claim-ttl",
                "2s",
            ];
            let proc = keyturn.invoke(&args, failpoints.as_deref()).await;
            rolled_back = proc.died() || proc.exited(0);
            proc
        } else if setup.rolls_back() {
            keyturn.invoke(RUN, None).await
        } else {
            keyturn.invoke(RUN, failpoints.as_deref()).await
        };
        if proc.died() {
            let expected = to_crash.pop_front();
            assert!(
                expected.is_some_and(|p| proc.crashed_at(p)),
                "{point}: a process died, but not at {expected:?}: {}",
                proc.describe()
            );
            if setup == Setup::OrphanDeleteFails {
                emulator.set_faults(&[failing("DeleteAccessKey")]).await;
            }
        } else {
            assert!(proc.exited(0), "{point}: {}", proc.describe());
            // (With faults injected, AWS itself may refuse to delete an orphan for a while.)
            if !setup.injects_faults() && !left_busy(&proc, id) {
                assert_no_unstored_key(&iam, "app", &seeded, point).await;
            }
        }
        let keys = keys_of(&iam, "app").await;
        assert!(keys.len() <= 2, "{point}: more than two keys: {keys:?}");
        adopt(&emulator, &iam, "app").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        to_crash.is_empty(),
        "{point}: the campaign settled, but no process reached {to_crash:?}"
    );

    let status = keyturn.status(CAMPAIGN).await;
    if setup == Setup::Retire {
        assert_eq!(
            states(&status),
            ["retired"],
            "{point}: the campaign retired the key: {status:#}"
        );
        assert_eq!(
            keys_of(&iam, "app").await,
            [],
            "{point}: the key is deleted"
        );
        assert_eq!(
            current_secret(&iam, "app").await,
            None,
            "{point}: no secret"
        );
    } else {
        assert_eq!(
            states(&status),
            ["completed"],
            "{point}: the campaign completed the rotation: {status:#}"
        );
        assert_rotated(&emulator, &iam, "app", point).await;
    }
    let location = JournalLocation::Sqlite {
        path: dir.path().join("journal.db"),
    };
    let journal = open_journal(&location, &emulator).await;
    let facts = check_journal(journal.as_ref(), CAMPAIGN, point).await;
    drop(journal);
    let creates = creates_in(&emulator, id).await;
    let replacements = u64::from(setup != Setup::Retire);
    assert_eq!(
        creates,
        replacements + facts.orphans_in(id) as u64,
        "{point}: CreateAccessKey calls = the surviving replacement + the orphans deleted"
    );
    let mut secrets = stored_secrets(&iam, "app").await;
    secrets.push(old_key.secret_access_key.clone());
    assert_no_secret(dir.path(), &keyturn.outputs(), &secrets, point);
    facts
}

/// Every failpoint of the drive loop: a `keyturn run` (or `keyturn rollback`) crashes
/// there, abruptly; fresh processes resume until the rotation completes; the end state
/// is checked against IAM and Secrets Manager, the journal's invariants and hash chains,
/// and for secrets in the journal file or any output. Each failpoint must really crash a
/// process, so a name in `FAILPOINTS` that no run reaches fails this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_failpoint_crash_resumes_to_the_same_end_state() {
    assert_failpoints_compiled_in();
    let points: Vec<&'static str> = FAILPOINTS.to_vec();
    let (shared, own): (Vec<&'static str>, Vec<&'static str>) = points
        .iter()
        .partition(|p| !Setup::for_point(p).injects_faults());
    // One emulator for the scenarios without faults, one per scenario with faults.
    let emulators: Vec<Arc<Emulator>> = std::thread::scope(|scope| {
        let started: Vec<_> = (0..=own.len())
            .map(|_| scope.spawn(|| Arc::new(Emulator::start(EmulatorOptions::default()))))
            .collect();
        started.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let mut scenarios = Vec::new();
    let accounts = seed_accounts(
        &emulators[0],
        (0..shared.len())
            .map(|i| one_key_account(&format!("crash-{i:02}")))
            .collect(),
    )
    .await;
    for (point, account) in shared.iter().copied().zip(accounts) {
        scenarios.push((Arc::clone(&emulators[0]), account, point));
    }
    for (point, emulator) in own.iter().copied().zip(&emulators[1..]) {
        let account = seed_accounts(emulator, vec![one_key_account("crash")])
            .await
            .remove(0);
        scenarios.push((Arc::clone(emulator), account, point));
    }

    let limit = Arc::new(Semaphore::new(10));
    let mut tasks = tokio::task::JoinSet::new();
    for (emulator, account, point) in scenarios {
        let limit = Arc::clone(&limit);
        tasks.spawn(async move {
            let _permit = limit.acquire().await.unwrap();
            let setup = Setup::for_point(point);
            crash_at(emulator, account, point, setup, setup.crashes(point)).await;
            point
        });
    }

    let mut passed = BTreeSet::new();
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(point) => {
                passed.insert(point);
            }
            Err(e) => failures.push(panic_message(e)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failpoint scenarios failed:\n\n{}",
        failures.len(),
        points.len(),
        failures.join("\n\n")
    );
    let listed: BTreeSet<&str> = points.iter().copied().collect();
    assert_eq!(passed, listed, "every listed failpoint crashed a process");
}

/// A run dies right after CreateAccessKey; on resume, deleting the orphan it left fails
/// (5xx through every SDK retry) and is recorded as failed. The orphan must still be
/// deleted by a later run, never taken for the user's own second key.
#[tokio::test(flavor = "multi_thread")]
async fn an_orphan_whose_deletion_failed_is_deleted_later() {
    assert_failpoints_compiled_in();
    let emulator = Arc::new(Emulator::start(EmulatorOptions::default()));
    let account = seed_accounts(&emulator, vec![one_key_account("orphan")])
        .await
        .remove(0);
    let setup = Setup::OrphanDeleteFails;
    let facts = crash_at(
        emulator,
        account,
        "orphan-delete-fails",
        setup,
        setup.crashes("run::after-create"),
    )
    .await;
    assert!(
        facts
            .failures
            .iter()
            .any(|(step, _)| *step == keyturn_planner::rotation::Step::DeleteOrphan),
        "the orphan's deletion failed once: {:?}",
        facts.failures
    );
}

// ---- SIGKILL at random moments --------------------------------------------------------

/// The mixed organization of the SIGKILL scenario: in every account one user whose key
/// is rotated (in odd accounts it also has an Inactive key, deleted first to free the
/// slot), one whose unused key is retired, and in even accounts one that needs nothing.
fn mixed_org() -> Vec<AccountSpec> {
    (0..4)
        .map(|i| {
            let users = if i % 2 == 0 {
                vec![
                    UserSpec::new("rotor", vec![KeySpec::active(120, Some(1))]),
                    UserSpec::new("retiree", vec![KeySpec::active(100, None)]),
                    UserSpec::new("fresh", vec![KeySpec::active(10, Some(1))]),
                ]
            } else {
                vec![
                    UserSpec::new(
                        "rotor",
                        vec![
                            KeySpec::active(200, Some(2)),
                            KeySpec::inactive(300, Some(150)),
                        ],
                    ),
                    UserSpec::new("retiree", vec![KeySpec::active(60, Some(50))]),
                ]
            };
            AccountSpec {
                name: format!("mixed-{i}"),
                ou_path: vec![],
                users,
            }
        })
        .collect()
}

/// What a campaign left, independent of the random ids of one emulator: per account
/// name and user, the statuses of its keys, whether its secret holds its one Active key,
/// and the state of each seeded key (by its position in the seed).
type Shape = BTreeMap<(String, String), (Vec<String>, Option<bool>, Vec<(usize, String)>)>;

async fn shape(emulator: &Emulator, accounts: &[SeededAccount], status: &Value) -> Shape {
    let mut shape = Shape::new();
    for account in accounts {
        let iam = member(emulator, &account.id).await;
        for user in &account.users {
            let keys = keys_of(&iam, &user.name).await;
            let statuses = keys.iter().map(|(_, s)| s.clone()).collect();
            let secret = current_secret(&iam, &user.name)
                .await
                .map(|(id, _)| keys == [(id, "Active".to_owned())]);
            let mut states: Vec<(usize, String)> = status["keys"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|k| k["account_id"] == account.id.as_str() && k["user_name"] == user.name)
                .map(|k| {
                    let old = k["old_access_key_id"].as_str().unwrap();
                    let seeded = user
                        .keys
                        .iter()
                        .position(|s| s.access_key_id == old)
                        .unwrap_or_else(|| panic!("{old} was not seeded"));
                    (seeded, k["state"].as_str().unwrap().to_owned())
                })
                .collect();
            states.sort();
            shape.insert(
                (account.name.clone(), user.name.clone()),
                (statuses, secret, states),
            );
        }
    }
    shape
}

/// Runs a campaign over `accounts` to the end: first runs killed with SIGKILL after a
/// random delay (those that end before are not counted) until `kills` were killed, then
/// runs to completion, the applications switching to each delivered key between runs.
/// Returns the end shape.
async fn campaign_with_kills(
    emulator: &Emulator,
    accounts: &[SeededAccount],
    kills: usize,
    seed: u64,
    what: &str,
) -> Shape {
    let dir = TempDir::new(what);
    let keyturn = Keyturn::new(emulator, dir.path(), "sqlite://journal.db");
    let ids: Vec<&str> = accounts.iter().map(|a| a.id.as_str()).collect();
    let policy = dir.write("policy.toml", &policy(&ids));
    let started = keyturn
        .invoke(&["campaign", "start", CAMPAIGN, "--policy", &policy], None)
        .await;
    assert!(started.exited(0), "{}", started.describe());

    let mut members = Vec::new();
    for account in accounts {
        members.push(member(emulator, &account.id).await);
    }
    let no_unstored_key = async |proc: &Proc| {
        for (account, iam) in accounts.iter().zip(&members) {
            if left_busy(proc, &account.id) {
                continue;
            }
            for user in &account.users {
                let seeded: Vec<String> =
                    user.keys.iter().map(|k| k.access_key_id.clone()).collect();
                assert_no_unstored_key(iam, &user.name, &seeded, what).await;
            }
        }
    };
    let check = async |label: &str| {
        for (account, iam) in accounts.iter().zip(&members) {
            for user in &account.users {
                let keys = keys_of(iam, &user.name).await;
                assert!(keys.len() <= 2, "{what}, {label}: {keys:?}");
                adopt(emulator, iam, &user.name).await;
            }
        }
    };
    // A run takes 100 to 200 ms here when it only waits, up to 500 ms when it has work:
    // the delays spread the kills over all of it. The kills go on through the gates and
    // past the end of the work (then they land in the inventory and the claims).
    let mut rng = Rng::new(seed);
    let mut killed = 0;
    let mut runs = 0;
    while killed < kills {
        runs += 1;
        assert!(
            runs <= kills * 5,
            "{what}: only {killed} of {runs} runs were killed before they ended"
        );
        let delay = Duration::from_millis(rng.between(30, 450));
        let proc = keyturn.spawn(RUN, None, Some(delay)).await;
        if proc.killed {
            assert!(proc.died(), "{what}: {}", proc.describe());
            killed += 1;
            // Its claims last a second: the next run finds the accounts busy or free.
            tokio::time::sleep(Duration::from_millis(rng.between(0, 1100))).await;
        } else {
            assert!(proc.exited(0), "{what}: {}", proc.describe());
            no_unstored_key(&proc).await;
        }
        check(&format!("after run {runs}")).await;
    }
    eprintln!("{what}: {killed} of {runs} runs killed before they ended");

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = keyturn.status(CAMPAIGN).await;
        if settled(&status) {
            break;
        }
        assert!(Instant::now() < deadline, "{what}: not settled: {status:#}");
        let proc = keyturn.invoke(RUN, None).await;
        assert!(proc.exited(0), "{what}: {}", proc.describe());
        no_unstored_key(&proc).await;
        check("resuming").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let status = keyturn.status(CAMPAIGN).await;
    let location = JournalLocation::Sqlite {
        path: dir.path().join("journal.db"),
    };
    let journal = open_journal(&location, emulator).await;
    let facts = check_journal(journal.as_ref(), CAMPAIGN, what).await;
    drop(journal);
    let mut secrets = Vec::new();
    for (account, iam) in accounts.iter().zip(&members) {
        let rotor = (account.id.clone(), "rotor".to_owned());
        assert_rotated(emulator, iam, "rotor", what).await;
        let created = facts.created.get(&rotor).copied().unwrap_or_default();
        let orphans = facts.orphans.get(&rotor).copied().unwrap_or_default();
        assert!(
            created <= 1 + orphans,
            "{what}: {created} replacements recorded for {rotor:?} with {orphans} orphans"
        );
        // Only the rotor of each account creates keys.
        assert_eq!(
            creates_in(emulator, &account.id).await,
            1 + facts.orphans_in(&account.id) as u64,
            "{what}: CreateAccessKey calls in {} = one rotation + the orphans deleted",
            account.name
        );
        for user in &account.users {
            secrets.extend(stored_secrets(iam, &user.name).await);
            secrets.extend(user.keys.iter().map(|k| k.secret_access_key.clone()));
        }
    }
    assert_no_secret(dir.path(), &keyturn.outputs(), &secrets, what);
    shape(emulator, accounts, &status).await
}

/// A multi-account campaign whose runs are killed with SIGKILL at random moments (seeded,
/// so a failure repeats), then resumed to completion, ends exactly as an uninterrupted
/// run of the same organization on another emulator.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_ends_as_an_uninterrupted_campaign() {
    assert_failpoints_compiled_in();
    let (killed, calm) = std::thread::scope(|scope| {
        let killed = scope.spawn(|| Emulator::start(EmulatorOptions::default()));
        let calm = scope.spawn(|| Emulator::start(EmulatorOptions::default()));
        (killed.join().unwrap(), calm.join().unwrap())
    });
    let killed_accounts = seed_accounts(&killed, mixed_org()).await;
    let calm_accounts = seed_accounts(&calm, mixed_org()).await;
    let (interrupted, uninterrupted) = tokio::join!(
        campaign_with_kills(&killed, &killed_accounts, 20, 0x5EED_4B11, "sigkill"),
        campaign_with_kills(&calm, &calm_accounts, 0, 1, "uninterrupted"),
    );
    assert_eq!(
        interrupted, uninterrupted,
        "the killed campaign ends as the uninterrupted one"
    );
    let rotor = &uninterrupted[&("mixed-1".to_owned(), "rotor".to_owned())];
    assert_eq!(
        rotor,
        &(
            vec!["Active".to_owned()],
            Some(true),
            vec![(0, "completed".to_owned()), (1, "completed".to_owned())]
        ),
        "the expected end state itself: {uninterrupted:#?}"
    );
}

// ---- two runners at once --------------------------------------------------------------

/// Two `keyturn run` processes on the same campaign at once, on a DynamoDB journal served
/// one request at a time (so conditional writes are atomic, as in DynamoDB), round after
/// round until the campaign completes, then a third run alone: every CreateAccessKey
/// happens exactly once, no user ever has more than two keys, and every secret holds
/// its user's surviving key.
#[tokio::test(flavor = "multi_thread")]
async fn two_runners_at_once_create_each_key_exactly_once() {
    assert_failpoints_compiled_in();
    let emulator = Emulator::start(EmulatorOptions { serial: true });
    let accounts = seed_accounts(
        &emulator,
        (0..4)
            .map(|i| AccountSpec {
                name: format!("race-{i}"),
                ou_path: vec![],
                users: vec![
                    UserSpec::new("app-a", vec![KeySpec::active(120, Some(1))]),
                    UserSpec::new("app-b", vec![KeySpec::active(150, Some(2))]),
                ],
            })
            .collect(),
    )
    .await;
    let dir = TempDir::new("crash-race");
    let table = "keyturn-race";
    let keyturn = Keyturn::new(&emulator, dir.path(), &format!("dynamodb://{table}"));
    let init = keyturn.invoke(&["journal", "init"], None).await;
    assert!(init.exited(0), "{}", init.describe());
    let ids: Vec<&str> = accounts.iter().map(|a| a.id.as_str()).collect();
    let policy = dir.write("policy.toml", &policy(&ids));
    let started = keyturn
        .invoke(&["campaign", "start", CAMPAIGN, "--policy", &policy], None)
        .await;
    assert!(started.exited(0), "{}", started.describe());
    let mut users = Vec::new();
    for account in &accounts {
        let iam = member(&emulator, &account.id).await;
        for user in &account.users {
            users.push((account.id.as_str(), user.name.as_str(), iam.clone()));
        }
    }

    // One account at a time: the two runners race for each account's claim in turn, and
    // one often claims an account the other has just worked (from a stale read).
    let run = ["run", CAMPAIGN, "--concurrency", "1"];
    let mut first_round = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (one, two) = tokio::join!(keyturn.invoke(&run, None), keyturn.invoke(&run, None));
        for proc in [&one, &two] {
            assert!(proc.exited(0), "{}", proc.describe());
        }
        if first_round.is_empty() {
            first_round = vec![one.stdout.clone(), two.stdout.clone()];
        }
        for (account, user, iam) in &users {
            let keys = keys_of(iam, user).await;
            assert!(keys.len() <= 2, "{account}/{user}: {keys:?}");
            adopt(&emulator, iam, user).await;
        }
        if settled(&keyturn.status(CAMPAIGN).await) {
            break;
        }
        assert!(Instant::now() < deadline, "the campaign did not settle");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        first_round
            .iter()
            .any(|out| out.contains("\nbusy ") || out.starts_with("busy ")),
        "the two runners met (one found an account the other held):\n{}",
        first_round.join("\n--- the other runner ---\n")
    );
    let third = keyturn.invoke(&run, None).await;
    assert!(third.exited(0), "{}", third.describe());
    let status = keyturn.status(CAMPAIGN).await;
    assert!(
        states(&status).iter().all(|s| s == "completed"),
        "{status:#}"
    );

    let created = emulator
        .counters()
        .await
        .by_action("iam", "CreateAccessKey");
    assert_eq!(
        created,
        users.len() as u64,
        "one CreateAccessKey per rotated key; the first round printed:\n{}",
        first_round.join("\n--- the other runner ---\n")
    );
    let location = JournalLocation::DynamoDb {
        table: table.to_owned(),
    };
    let journal = open_journal(&location, &emulator).await;
    let facts = check_journal(journal.as_ref(), CAMPAIGN, "two runners").await;
    let mut secrets = Vec::new();
    for (account, user, iam) in &users {
        assert_rotated(&emulator, iam, user, "two runners").await;
        let id = ((*account).to_owned(), (*user).to_owned());
        assert_eq!(facts.created.get(&id), Some(&1), "{id:?}");
        assert_eq!(facts.orphans.get(&id), Some(&0), "{id:?}");
        secrets.extend(stored_secrets(iam, user).await);
    }
    assert_no_secret(dir.path(), &keyturn.outputs(), &secrets, "two runners");
}

/// The retirement path (an unused key: deactivated, observed, deleted, no replacement)
/// crashed at each of its step boundaries, resumed to the same end: no key, retired.
#[tokio::test(flavor = "multi_thread")]
async fn every_crash_on_the_retirement_path_resumes_to_the_same_end_state() {
    assert_failpoints_compiled_in();
    let points: Vec<&'static str> = FAILPOINTS
        .iter()
        .copied()
        .filter(|p| {
            ["enroll", "deactivate", "deactivated", "delete", "deleted"]
                .iter()
                .any(|stem| p.ends_with(&format!("-{stem}")) && !p.contains("orphan"))
        })
        .collect();
    assert_eq!(points.len(), 14, "{points:?}");
    let emulator = Arc::new(Emulator::start(EmulatorOptions::default()));
    let accounts = seed_accounts(
        &emulator,
        (0..points.len())
            .map(|i| unused_key_account(&format!("retire-{i:02}")))
            .collect(),
    )
    .await;
    let mut tasks = tokio::task::JoinSet::new();
    for (point, account) in points.iter().copied().zip(accounts) {
        let emulator = Arc::clone(&emulator);
        tasks.spawn(async move {
            crash_at(
                emulator,
                account,
                point,
                Setup::Retire,
                VecDeque::from([point]),
            )
            .await;
        });
    }
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            failures.push(panic_message(e));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} retirement scenarios failed:\n\n{}",
        failures.len(),
        points.len(),
        failures.join("\n\n")
    );
}

// ---- the order of the boundaries --------------------------------------------------------

/// With every failpoint set to `return(trace)` (report and go on), an uninterrupted
/// rotation passes its boundaries in exactly this order: every AWS mutation between its
/// intent's append and its outcome's append, and nothing appended before it is done.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_brackets_every_mutation_between_its_intent_and_its_outcome() {
    assert_failpoints_compiled_in();
    let emulator = Emulator::start(EmulatorOptions::default());
    let account = seed_accounts(&emulator, vec![one_key_account("trace")])
        .await
        .remove(0);
    let iam = member(&emulator, &account.id).await;
    let dir = TempDir::new("crash-trace");
    let keyturn = Keyturn::new(&emulator, dir.path(), "sqlite://journal.db");
    let policy = dir.write("policy.toml", &policy(&[&account.id]));
    let started = keyturn
        .invoke(&["campaign", "start", CAMPAIGN, "--policy", &policy], None)
        .await;
    assert!(started.exited(0), "{}", started.describe());
    let trace: Vec<String> = FAILPOINTS
        .iter()
        .map(|p| format!("{p}=return(trace)"))
        .collect();
    let trace = trace.join(";");

    let mut reached = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !settled(&keyturn.status(CAMPAIGN).await) {
        assert!(Instant::now() < deadline, "the rotation did not complete");
        let proc = keyturn.invoke(RUN, Some(&trace)).await;
        assert!(proc.exited(0), "{}", proc.describe());
        reached.extend(proc.stderr.lines().filter_map(|l| {
            l.strip_prefix("failpoint ")
                .and_then(|l| l.strip_suffix(": reached"))
                .map(str::to_owned)
        }));
        adopt(&emulator, &iam, "app").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let bracket = |step: &str| [format!("run::before-{step}"), format!("run::after-{step}")];
    let expected: Vec<String> = [
        "append-enroll",
        "append-intent-create",
        "create",
        "append-created",
        "append-intent-deliver",
        "deliver",
        "append-delivered",
        "verify",
        "append-verified",
        "append-intent-deactivate",
        "deactivate",
        "append-deactivated",
        "append-intent-delete",
        "delete",
        "append-deleted",
    ]
    .iter()
    .flat_map(|step| bracket(step))
    .collect();
    assert_eq!(reached, expected);
    assert_rotated(&emulator, &iam, "app", "trace").await;
}
