//! Several workers on one campaign (issue 4): three `keyturn run --watch` processes work
//! one campaign on a DynamoDB journal at once; one is killed with SIGKILL in the middle
//! of an account it holds; the other two take its accounts over when its claims expire
//! and finish the campaign.
//!
//! Checked afterwards: every IAM and Secrets Manager mutation happened exactly once per
//! key (emulator counters per action and account), the end state in IAM, Secrets Manager
//! and `keyturn status` is the one the seed calls for, the killed worker's claims were
//! taken over with higher fencing tokens, every event of every user stream was written
//! by the run that held the account's claim at that moment, the journal's invariants and
//! hash chains hold, and no secret appears in any process's output or in the journal.

mod support;

#[allow(dead_code)]
#[path = "support/crash.rs"]
mod harness;

#[allow(dead_code)]
#[path = "support/workers.rs"]
mod workers;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use harness::{
    Keyturn, assert_no_secret, check_journal, current_secret, keys_of, member, open_journal,
    sign_with, stored_secrets,
};
use keyturn_journal::{Envelope, JournalLocation, verify_chain};
use keyturn_planner::rotation::Phase;
use keyturn_testbed::seed::{AccountSpec, KeySpec, OrgSpec, SeededAccount, UserSpec, seed};
use keyturn_testbed::{Emulator, EmulatorOptions, FaultRule};
use keyturn_worker::campaign::UserEntry;
use keyturn_worker::campaign::codec::parse_user_stream;
use support::TempDir;
use workers::{ClaimRecord, Worker, claims_by_account, holder_at};

const CAMPAIGN: &str = "c1";
const TABLE: &str = "keyturn-workers";
const ACCOUNTS: usize = 15;
/// Claims last eight seconds unless renewed (a worker renews at every journal append
/// once half of that is gone): a dead worker's accounts are free soon after, and a live
/// one frozen for a moment by the test keeps them.
const CLAIM_TTL: &str = "8s";

/// Gates of two seconds, so that the whole campaign (create, deliver, verify; the quiet
/// period; deactivate; the observation period; delete) runs in one test.
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

/// What the campaign must do to each user of the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// An old key in use: replaced (create, deliver, verify), then deactivated and deleted.
    Rotated,
    /// An Inactive key deleted first to free the slot, then the Active one rotated.
    InactiveDeletedThenRotated,
    /// An unused key: deactivated and deleted, no replacement.
    Retired,
    /// A young key: untouched.
    Untouched,
}

/// Every account: two users whose keys are rotated, one whose unused key is retired, one
/// whose key is young; every third account also a user with an Inactive old key beside
/// its Active one.
fn org() -> Vec<AccountSpec> {
    (0..ACCOUNTS)
        .map(|i| {
            let mut users = vec![
                UserSpec::new("rotor-a", vec![KeySpec::active(120, Some(1))]),
                UserSpec::new("rotor-b", vec![KeySpec::active(150, Some(3))]),
                UserSpec::new("retiree", vec![KeySpec::active(100, None)]),
                UserSpec::new("young", vec![KeySpec::active(10, Some(1))]),
            ];
            if i % 3 == 0 {
                users.push(UserSpec::new(
                    "two-keys",
                    vec![
                        KeySpec::active(200, Some(2)),
                        KeySpec::inactive(300, Some(150)),
                    ],
                ));
            }
            AccountSpec {
                name: format!("worker-{i:02}"),
                ou_path: vec![],
                users,
            }
        })
        .collect()
}

fn expect(user: &str) -> Expect {
    match user {
        "rotor-a" | "rotor-b" => Expect::Rotated,
        "two-keys" => Expect::InactiveDeletedThenRotated,
        "retiree" => Expect::Retired,
        "young" => Expect::Untouched,
        other => panic!("no expectation for {other}"),
    }
}

/// The mutations one user's keys call for, from the seed: (CreateAccessKey,
/// UpdateAccessKey, DeleteAccessKey, secrets written).
fn mutations(user: &str) -> [u64; 4] {
    match expect(user) {
        Expect::Rotated => [1, 1, 1, 1],
        Expect::InactiveDeletedThenRotated => [1, 1, 2, 1],
        Expect::Retired => [0, 1, 1, 0],
        Expect::Untouched => [0, 0, 0, 0],
    }
}

/// The event types that record the outcome of an AWS mutation.
const MUTATION_OUTCOMES: &[&str] = &[
    "replacement-created",
    "secret-delivered",
    "key-deactivated",
    "key-deleted",
    "orphan-deleted",
];

/// Where the campaign stands, from the journal (one consistent read): every event, the
/// folded state of every user, and the claims per account.
struct Snapshot {
    events: Vec<Envelope>,
    users: BTreeMap<(String, String), UserEntry>,
    claims: BTreeMap<String, Vec<ClaimRecord>>,
}

async fn snapshot(journal: &dyn keyturn_journal::Journal) -> Snapshot {
    let events = journal
        .read_campaign(CAMPAIGN)
        .await
        .expect("read the campaign");
    let mut streams: BTreeMap<(String, String), Vec<Envelope>> = BTreeMap::new();
    for event in &events {
        if let Some((account, user)) = parse_user_stream(event.stream.name()) {
            streams
                .entry((account.to_string(), user.to_string()))
                .or_default()
                .push(event.clone());
        }
    }
    let users = streams
        .into_iter()
        .map(|(id, envelopes)| {
            let entry = UserEntry::from_envelopes(&envelopes).expect("fold a user stream");
            (id, entry)
        })
        .collect();
    let claims = claims_by_account(&events);
    Snapshot {
        events,
        users,
        claims,
    }
}

impl Snapshot {
    /// The accounts whose claim `run` holds now (taken or renewed, neither released nor
    /// expired).
    fn held_by(&self, run: &str) -> Vec<String> {
        let now = Utc::now();
        self.claims
            .iter()
            .filter(|(_, records)| {
                records
                    .last()
                    .is_some_and(|r| r.run_id == run && r.expires_at.is_some_and(|e| e > now))
            })
            .map(|(account, _)| account.clone())
            .collect()
    }

    /// When `run`'s current hold of `account` began: its claim taken, not counting the
    /// renewals that followed.
    fn hold_start(&self, run: &str, account: &str) -> Option<DateTime<Utc>> {
        self.claims[account]
            .iter()
            .rev()
            .take_while(|r| r.run_id == run && r.expires_at.is_some())
            .last()
            .map(|r| r.at)
    }

    /// Whether `run` recorded the outcome of an AWS mutation in `account` since `since`.
    fn mutated(&self, run: &str, account: &str, since: DateTime<Utc>) -> bool {
        let prefix = format!("user/{account}/");
        self.events.iter().any(|e| {
            e.stream.name().starts_with(&prefix)
                && e.actor.run_id == run
                && e.recorded_at >= since
                && MUTATION_OUTCOMES.contains(&e.event_type.as_str())
        })
    }

    /// Whether a key of `account` still has work ahead of it in the campaign.
    fn unfinished(&self, account: &str) -> bool {
        self.users
            .iter()
            .filter(|((a, _), _)| a == account)
            .any(|(_, entry)| entry.state.keys.values().any(|k| !k.phase.is_terminal()))
    }

    /// What may be under way in `accounts`: an intent without its outcome (its AWS call
    /// may be in flight), or a replacement created whose secret is not delivered yet
    /// (it exists only in the creating process's memory).
    fn in_flight(&self, accounts: &[String]) -> Vec<String> {
        self.users
            .iter()
            .filter(|((a, _), _)| accounts.contains(a))
            .flat_map(|((a, u), entry)| {
                entry.state.keys.values().filter_map(move |k| {
                    if let Some(intent) = &k.open_intent {
                        Some(format!("{a}/{u} {}: {:?} intended", k.key, intent.step))
                    } else if k.phase == Phase::Created {
                        Some(format!("{a}/{u} {}: replacement not delivered", k.key))
                    } else {
                        None
                    }
                })
            })
            .collect()
    }

    /// An account `run` holds, has mutated something in during this hold, and whose
    /// keys are not all done.
    fn kill_point(&self, run: &str) -> Option<String> {
        self.held_by(run).into_iter().find(|account| {
            self.hold_start(run, account)
                .is_some_and(|since| self.mutated(run, account, since))
                && self.unfinished(account)
        })
    }
}

/// An account's claims and user streams in order of recording, for messages.
fn history(snapshot: &Snapshot, account: &str) -> String {
    let mut lines: Vec<(DateTime<Utc>, String)> = snapshot
        .events
        .iter()
        .filter(|e| {
            e.stream.name() == format!("account/{account}")
                || e.stream.name().starts_with(&format!("user/{account}/"))
        })
        .map(|e| {
            (
                e.recorded_at,
                format!(
                    "{} {} #{} {} by {}: {}",
                    e.recorded_at.format("%H:%M:%S%.6f"),
                    e.stream.name(),
                    e.sequence,
                    e.event_type,
                    e.actor.run_id,
                    e.payload
                ),
            )
        })
        .collect();
    lines.sort();
    lines
        .into_iter()
        .map(|(_, l)| l)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Per account and action, the calls that reached the emulator.
async fn calls(emulator: &Emulator) -> BTreeMap<(String, String), u64> {
    let mut calls = BTreeMap::new();
    for r in emulator.counters().await.requests {
        *calls.entry((r.account, r.action)).or_default() += r.count;
    }
    calls
}

/// Three workers, one killed midway: the campaign completes with every mutation done
/// exactly once, by the worker that held the account at the time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_one_killed_midway_complete_the_campaign_exactly_once() {
    // DynamoDB's conditional writes are atomic only when moto serves one request at a time.
    let emulator = Emulator::start(EmulatorOptions { serial: true });
    let org = seed(
        &emulator,
        &OrgSpec {
            management_users: vec![],
            accounts: org(),
        },
        Utc::now(),
    )
    .await;
    let accounts: Vec<SeededAccount> = org.accounts;
    let dir = TempDir::new("workers");
    let journal_url = format!("dynamodb://{TABLE}");
    let keyturn = Keyturn::new(&emulator, dir.path(), &journal_url);
    let init = keyturn.invoke(&["journal", "init"], None).await;
    assert!(init.exited(0), "{}", init.describe());
    let ids: Vec<&str> = accounts.iter().map(|a| a.id.as_str()).collect();
    let policy = dir.write("policy.toml", &policy(&ids));
    let started = keyturn
        .invoke(&["campaign", "start", CAMPAIGN, "--policy", &policy], None)
        .await;
    assert!(started.exited(0), "{}", started.describe());
    let journal = open_journal(
        &JournalLocation::DynamoDb {
            table: TABLE.to_owned(),
        },
        &emulator,
    )
    .await;
    // From here on the counters see the workers' calls (and the test's reads).
    emulator.reset_counters().await;
    // IAM answers a little slowly, as it does in AWS, so that the workers' accounts
    // overlap in time; checking a key's last use and verifying a new key with STS take
    // longer still: moments when a worker is inside an account with no AWS mutation
    // under way, at which the test can kill it.
    emulator
        .set_faults(&[
            FaultRule::latency(250)
                .service("iam")
                .action("GetAccessKeyLastUsed"),
            FaultRule::latency(250)
                .service("sts")
                .action("GetCallerIdentity"),
            FaultRule::latency(20).service("iam"),
        ])
        .await;

    // ---- three workers at once ----------------------------------------------------------
    let run = [
        "run",
        CAMPAIGN,
        "--watch",
        "--concurrency",
        "2",
        "--claim-ttl",
        CLAIM_TTL,
    ];
    let mut workers: Vec<Worker> = (1..=3)
        .map(|i| {
            Worker::spawn(
                &format!("worker {i}"),
                &emulator,
                dir.path(),
                &journal_url,
                &run,
            )
        })
        .collect();

    // ---- kill one midway ----------------------------------------------------------------
    // The moment is chosen from the journal: a worker holds an account's claim, has
    // recorded a mutation there since it took the claim, and keys of the account still
    // have work ahead. It is frozen
    // (SIGSTOP) while the test looks: once requests it had sent have landed, the journal
    // shows whether an AWS call of it may be under way (an intent without outcome) or a
    // replacement's secret lives only in its memory (created, not yet delivered). If
    // neither, it dies (SIGKILL) with nothing in flight; otherwise it goes on and the
    // test looks again.
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut attempts = 0;
    let (victim, victim_run, kill_account, killed_at) = 'kill: loop {
        assert!(
            Instant::now() < deadline,
            "no worker was caught in the middle of an account ({attempts} tries):\n{}",
            workers
                .iter()
                .map(Worker::describe)
                .collect::<Vec<_>>()
                .join("\n")
        );
        let now = snapshot(journal.as_ref()).await;
        for (i, worker) in workers.iter_mut().enumerate() {
            assert!(
                !worker.ended(),
                "{} ended before any was killed:\n{}",
                worker.label,
                worker.describe()
            );
            let Some(run_id) = worker.run_id() else {
                continue;
            };
            if now.kill_point(&run_id).is_none() {
                continue;
            }
            attempts += 1;
            let paused = Instant::now();
            worker.pause();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let frozen = snapshot(journal.as_ref()).await;
            eprintln!(
                "{} frozen for {:?} ({} events)",
                worker.label,
                paused.elapsed(),
                frozen.events.len()
            );
            let held = frozen.held_by(&run_id);
            let in_flight = frozen.in_flight(&held);
            match frozen.kill_point(&run_id) {
                Some(account) if in_flight.is_empty() => {
                    let status = worker.kill().await;
                    assert!(status.code().is_none(), "{}: {status:?}", worker.label);
                    break 'kill (i, run_id, account, Utc::now());
                }
                _ => worker.resume(),
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "killed {} (run {victim_run}) in account {kill_account} after {attempts} tries",
        workers[victim].label
    );

    // ---- the survivors finish -----------------------------------------------------------
    emulator.clear_faults().await;
    for (i, worker) in workers.iter_mut().enumerate() {
        if i == victim {
            continue;
        }
        let status = worker.wait(Duration::from_secs(180)).await;
        assert!(status.success(), "{status:?}\n{}", worker.describe());
    }
    for (i, worker) in workers.iter().enumerate() {
        assert!(
            i == victim || !worker.stderr().contains("taken over by another run"),
            "{} lost a claim while alive:\n{}",
            worker.label,
            worker.describe()
        );
    }
    let survivors: Vec<String> = workers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, w)| w.run_id().expect("a survivor claimed accounts"))
        .collect();

    // A run alone afterwards finds nothing left to do.
    let before = calls(&emulator).await;
    let last = keyturn.invoke(&["run", CAMPAIGN], None).await;
    assert!(last.exited(0), "{}", last.describe());
    assert!(
        !last.stdout.lines().any(|l| l.starts_with("done")),
        "the survivors left work:\n{}",
        last.stdout
    );
    let after = calls(&emulator).await;
    for action in ["CreateAccessKey", "UpdateAccessKey", "DeleteAccessKey"] {
        let count = |c: &BTreeMap<(String, String), u64>| {
            c.iter()
                .filter(|((_, a), _)| a == action)
                .map(|(_, n)| n)
                .sum::<u64>()
        };
        assert_eq!(
            count(&before),
            count(&after),
            "the last run called {action}"
        );
    }

    // ---- the end state is the one the seed calls for -------------------------------------
    let status = keyturn.status(CAMPAIGN).await;
    let mut secrets = Vec::new();
    for account in &accounts {
        let iam = member(&emulator, &account.id).await;
        for user in &account.users {
            let who = format!("{}/{}", account.name, user.name);
            let seeded: BTreeSet<&str> =
                user.keys.iter().map(|k| k.access_key_id.as_str()).collect();
            secrets.extend(user.keys.iter().map(|k| k.secret_access_key.clone()));
            let stored = stored_secrets(&iam, &user.name).await;
            secrets.extend(stored.iter().cloned());
            let keys = keys_of(&iam, &user.name).await;
            let mut words: Vec<String> = status["keys"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|k| k["account_id"] == account.id.as_str() && k["user_name"] == user.name)
                .map(|k| k["state"].as_str().unwrap().to_owned())
                .collect();
            words.sort();
            match expect(&user.name) {
                Expect::Rotated | Expect::InactiveDeletedThenRotated => {
                    let (id, secret) = current_secret(&iam, &user.name)
                        .await
                        .unwrap_or_else(|| panic!("{who}: no secret"));
                    assert!(!seeded.contains(id.as_str()), "{who}: not replaced");
                    assert_eq!(
                        keys,
                        vec![(id.clone(), "Active".to_owned())],
                        "{who}: exactly the delivered key is left"
                    );
                    assert_eq!(stored.len(), 1, "{who}: one secret version was written");
                    let arn = sign_with(&emulator, &id, &secret)
                        .await
                        .unwrap_or_else(|e| panic!("{who}: the stored key does not sign: {e}"));
                    assert!(
                        arn.ends_with(&format!(":user/{}", user.name)),
                        "{who}: {arn}"
                    );
                    assert_eq!(
                        words,
                        vec!["completed"; user.keys.len()],
                        "{who}: {status:#}"
                    );
                }
                Expect::Retired => {
                    assert_eq!(keys, vec![], "{who}: the unused key is deleted");
                    assert!(stored.is_empty(), "{who}: no secret");
                    assert_eq!(words, ["retired"], "{who}");
                }
                Expect::Untouched => {
                    let expected: Vec<(String, String)> = user
                        .keys
                        .iter()
                        .map(|k| (k.access_key_id.clone(), "Active".to_owned()))
                        .collect();
                    assert_eq!(keys, expected, "{who}: untouched");
                    assert!(words.is_empty(), "{who}: not enrolled: {words:?}");
                }
            }
        }
    }

    // ---- every mutation exactly once, per account ----------------------------------------
    let end = snapshot(journal.as_ref()).await;
    let counted = calls(&emulator).await;
    let count = |account: &str, action: &str| {
        counted
            .get(&(account.to_owned(), action.to_owned()))
            .copied()
            .unwrap_or_default()
    };
    for account in &accounts {
        let expected = account
            .users
            .iter()
            .map(|u| mutations(&u.name))
            .fold([0; 4], |acc, m| std::array::from_fn(|i| acc[i] + m[i]));
        let id = account.id.as_str();
        let actual = [
            count(id, "CreateAccessKey"),
            count(id, "UpdateAccessKey"),
            count(id, "DeleteAccessKey"),
            count(id, "CreateSecret"),
        ];
        assert_eq!(
            actual,
            expected,
            "{} ({id}): [CreateAccessKey, UpdateAccessKey, DeleteAccessKey, CreateSecret]\n{}\n{}",
            account.name,
            history(&end, id),
            workers
                .iter()
                .flat_map(|w| {
                    w.stderr()
                        .lines()
                        .filter(|l| l.contains(id))
                        .map(|l| format!("{}: {l}", w.label))
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
                .join("\n")
        );
        // A first delivery tries PutSecretValue, finds no secret, and creates it.
        assert_eq!(
            count(id, "PutSecretValue"),
            expected[3],
            "{}: PutSecretValue",
            account.name
        );
        assert_eq!(count(id, "TagResource"), 0, "{}: TagResource", account.name);
    }

    // ---- the journal: claims, fencing, invariants -----------------------------------------
    if let Err(e) = verify_chain(&end.events) {
        panic!("the journal's hash chain is broken: {e}");
    }
    let facts = check_journal(journal.as_ref(), CAMPAIGN, "three workers").await;
    assert!(facts.failures.is_empty(), "{:?}", facts.failures);
    for account in &accounts {
        for user in &account.users {
            let id = (account.id.clone(), user.name.clone());
            let replaced = usize::from(mutations(&user.name)[0] > 0);
            assert_eq!(
                facts.created.get(&id).copied().unwrap_or_default(),
                replaced,
                "{id:?}"
            );
            assert_eq!(facts.orphans.get(&id).copied().unwrap_or_default(), 0);
        }
    }

    // No worker acted on an account it did not hold: every event of a user stream was
    // written by the run holding the account's claim when it was recorded.
    let mut writers: BTreeMap<String, usize> = BTreeMap::new();
    for event in &end.events {
        let Some(rest) = event.stream.name().strip_prefix("user/") else {
            continue;
        };
        let account = rest.split('/').next().unwrap();
        let records = end
            .claims
            .get(account)
            .unwrap_or_else(|| panic!("{account} was worked but never claimed"));
        let holder = holder_at(records, event.recorded_at);
        assert_eq!(
            holder.as_deref(),
            Some(event.actor.run_id.as_str()),
            "{} #{} ({}) was written by run {} at {}, when the claim was held by {holder:?}: \
             {records:#?}",
            event.stream,
            event.sequence,
            event.event_type,
            event.actor.run_id,
            event.recorded_at
        );
        *writers.entry(event.actor.run_id.clone()).or_default() += 1;
    }
    for run in survivors.iter().chain([&victim_run]) {
        assert!(
            writers.get(run).is_some_and(|n| *n > 0),
            "run {run} did no work: {writers:?}"
        );
    }
    assert_eq!(
        writers.len(),
        3,
        "only the three workers wrote: {writers:?}"
    );

    // The killed worker's claims were taken over, each with a higher fencing token, once
    // it had expired; and the account it was killed in was finished by a survivor.
    let mut taken_over = Vec::new();
    for (account, records) in &end.claims {
        let Some(last) = records.iter().rposition(|r| r.run_id == victim_run) else {
            continue;
        };
        let Some(expired) = records[last].expires_at else {
            continue; // released before the kill
        };
        let next = records[last + 1..]
            .iter()
            .find(|r| r.expires_at.is_some())
            .unwrap_or_else(|| panic!("{account}: the killed run's claim was never taken over"));
        assert!(survivors.contains(&next.run_id), "{account}: {next:?}");
        assert!(next.token > records[last].token, "{account}: {records:#?}");
        assert!(
            next.at >= expired,
            "{account}: taken over at {} before the claim expired at {expired}",
            next.at
        );
        taken_over.push(account.clone());
    }
    assert!(
        taken_over.contains(&kill_account),
        "the account the worker was killed in ({kill_account}) was taken over: {taken_over:?}"
    );
    let prefix = format!("user/{kill_account}/");
    assert!(
        end.events
            .iter()
            .any(|e| e.stream.name().starts_with(&prefix)
                && survivors.contains(&e.actor.run_id)
                && e.recorded_at > killed_at
                && MUTATION_OUTCOMES.contains(&e.event_type.as_str())),
        "a survivor finished the work in {kill_account}"
    );

    // ---- no secret anywhere -----------------------------------------------------------------
    let mut outputs = keyturn.outputs();
    for worker in &workers {
        outputs.push(worker.stdout());
        outputs.push(worker.stderr());
    }
    let journal_text = serde_json::to_string(
        &end.events
            .iter()
            .map(|e| (&e.payload, &e.actor.run_id, &e.event_type))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    outputs.push(journal_text);
    assert_no_secret(dir.path(), &outputs, &secrets, "three workers");
}
