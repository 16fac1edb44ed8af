//! What keyturn costs in AWS requests and journal writes, measured on the emulator's
//! request counters: the figures of `docs/costs.md`, each asserted exactly.
//!
//! - discovery (`inventory`, `plan`): calls per account, with the credential report
//!   generated on the first read and reused after it;
//! - a campaign `run` on the DynamoDB journal: calls and writes per key for each path
//!   (retire an unused key, delete an Inactive key, an Inactive key not due yet, and the
//!   resumed run that deletes a retired key). The fixed cost of a run (organization,
//!   campaign load) is measured on a campaign with nothing to do and taken off, so the
//!   per-key figures are exact; the account's claim rides with its first write and its
//!   release costs one. The journal
//!   writes of an account's users that coincide share one request (group commit), so
//!   their count is asserted between its bounds: one write per step when every user's
//!   append went together, the ungrouped figure when none did.

mod support;

use std::collections::BTreeMap;

use chrono::Utc;
use keyturn_testbed::seed::{AccountSpec, KeySpec, OrgSpec, SeededOrg, UserSpec, seed};
use keyturn_testbed::{Counters, Emulator, EmulatorOptions};
use support::{TempDir, keyturn};

/// Requests by action (`service:Action`), zero counts left out.
type Costs = BTreeMap<String, i64>;

/// Every request the counters saw, by action, over all accounts.
fn costs(counters: &Counters) -> Costs {
    let mut all = Costs::new();
    for r in &counters.requests {
        *all.entry(format!("{}:{}", r.service, r.action))
            .or_default() += r.count as i64;
    }
    all.retain(|_, n| *n != 0);
    all
}

/// Exactly these counts, every other action at 0.
fn only(pairs: &[(&str, i64)]) -> Costs {
    pairs
        .iter()
        .filter(|(_, n)| *n != 0)
        .map(|(a, n)| ((*a).to_owned(), *n))
        .collect()
}

fn minus(a: &Costs, b: &Costs) -> Costs {
    let mut out = a.clone();
    for (k, v) in b {
        *out.entry(k.clone()).or_default() -= v;
    }
    out.retain(|_, n| *n != 0);
    out
}

fn per(total: &Costs, n: i64) -> Costs {
    total
        .iter()
        .map(|(k, v)| {
            assert_eq!(v % n, 0, "{k}: {v} is not a multiple of {n}: {total:?}");
            (k.clone(), v / n)
        })
        .collect()
}

/// The journal's write requests.
const WRITES: [&str; 2] = ["dynamodb:PutItem", "dynamodb:TransactWriteItems"];

/// A path's cost beyond the `fixed` cost of a run, over `keys` keys (one per user, all
/// in one account): every call but the journal's writes per key, exactly, and the
/// writes checked against their bounds. Each key costs `writes_per_key` writes that its
/// steps wait on (its intents); its enrolment and the outcome that ends its turn (key
/// deactivated, key deleted), when no intent carries them, wait on nothing and ride
/// with another write (at the latest the claim's release). The claim itself rides with
/// the account's first write, so the account costs `account_writes` of its own: 1, the
/// release, or 0 when the run has nothing to write (then the account is not claimed).
/// The users' appends of a step share one write when they coincide: so the writes lie
/// between `account_writes + writes_per_key` (every step's appends grouped) and
/// `account_writes + writes_per_key × keys` (none).
fn path_cost(
    total: &Costs,
    fixed: &Costs,
    keys: i64,
    account_writes: i64,
    writes_per_key: i64,
) -> Costs {
    let mut delta = minus(total, fixed);
    let writes: i64 = WRITES.iter().map(|action| get(&delta, action)).sum();
    delta.retain(|action, _| !WRITES.contains(&action.as_str()));
    let (least, most) = (
        account_writes + writes_per_key,
        account_writes + writes_per_key * keys,
    );
    assert!(
        (least..=most).contains(&writes),
        "{writes} journal writes for {keys} keys: between {least} (every step's appends \
         grouped) and {most} (none): {total:?}"
    );
    let mut calls = per(&delta, keys);
    if writes_per_key > 0 {
        calls.insert("journal writes (ungrouped)".to_owned(), writes_per_key);
    }
    calls
}

fn get(c: &Costs, action: &str) -> i64 {
    c.get(action).copied().unwrap_or_default()
}

async fn measured(emulator: &Emulator, step: impl FnOnce()) -> Costs {
    emulator.reset_counters().await;
    step();
    costs(&emulator.counters().await)
}

// ---- discovery ------------------------------------------------------------------------

/// Each member account: one key of each plan action, a young key in use, a user with two
/// young keys in use, and a user with no key.
fn discovery_org(accounts: usize) -> OrgSpec {
    OrgSpec {
        management_users: Vec::new(),
        accounts: (0..accounts)
            .map(|i| AccountSpec {
                name: format!("cost-{i}"),
                ou_path: Vec::new(),
                users: vec![
                    UserSpec::new("old-in-use", vec![KeySpec::active(120, Some(1))]),
                    UserSpec::new("unused", vec![KeySpec::active(200, None)]),
                    UserSpec::new("stale", vec![KeySpec::inactive(100, Some(50))]),
                    UserSpec::new("young", vec![KeySpec::active(10, Some(1))]),
                    UserSpec::new(
                        "two-young",
                        vec![KeySpec::active(20, Some(0)), KeySpec::active(5, Some(1))],
                    ),
                    UserSpec::new("no-keys", Vec::new()),
                ],
            })
            .collect(),
    }
}

const DISCOVERY_POLICY: &str = r#"
[rotation]
allow_short_gates = true
max_key_age = "90d"
unused_after = "45d"
"#;

/// Per account: AssumeRole, GetAccountAuthorizationDetails, GenerateCredentialReport and
/// GetCredentialReport (IAM starts a report on the first read of the account and reuses
/// it for four hours: two report calls either way), and ListAccessKeys only for the users
/// that need it: `inventory` the five users the report shows with keys, `plan` the three
/// whose keys it would act on. No GetAccessKeyLastUsed: the report places every key.
#[tokio::test(flavor = "multi_thread")]
async fn discovery_costs_per_account() {
    const ACCOUNTS: i64 = 3;
    let emulator = Emulator::start(EmulatorOptions::default());
    let org = seed(&emulator, &discovery_org(ACCOUNTS as usize), Utc::now()).await;
    let dir = TempDir::new("costs-discovery");
    let policy = dir.write("policy.toml", DISCOVERY_POLICY);
    // The management account is in scope too: read with the caller's own credentials
    // (no AssumeRole), and it has no user.
    let all = ACCOUNTS + 1;
    // The calls of the accounts (Organizations and the caller's identity are once per
    // command, whatever the organization's size).
    let accounts_only = |c: Costs| -> Costs {
        c.into_iter()
            .filter(|(k, _)| k.starts_with("iam:") || k == "sts:AssumeRole")
            .collect()
    };
    let expect = |more: &[(&str, i64)]| {
        let mut pairs = vec![
            ("sts:AssumeRole", ACCOUNTS),
            ("iam:GetAccountAuthorizationDetails", all),
        ];
        pairs.extend_from_slice(more);
        only(&pairs)
    };

    let first = measured(&emulator, || {
        let run = keyturn(&emulator, dir.path(), &["inventory", "-o", "json"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(run.json().as_array().unwrap().len(), 6 * ACCOUNTS as usize);
    })
    .await;
    let expected = expect(&[
        ("iam:GenerateCredentialReport", all),
        ("iam:GetCredentialReport", all),
        ("iam:ListAccessKeys", 5 * ACCOUNTS),
    ]);
    assert_eq!(
        accounts_only(first),
        expected,
        "inventory, reports not generated yet"
    );

    let again = measured(&emulator, || {
        let run = keyturn(&emulator, dir.path(), &["inventory", "-o", "json"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
    })
    .await;
    let expected = expect(&[
        ("iam:GenerateCredentialReport", all),
        ("iam:GetCredentialReport", all),
        ("iam:ListAccessKeys", 5 * ACCOUNTS),
    ]);
    assert_eq!(accounts_only(again), expected, "inventory, reports recent");

    let plan = measured(&emulator, || {
        let run = keyturn(
            &emulator,
            dir.path(),
            &["plan", "--policy", &policy, "-o", "json"],
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        let rows = run.json();
        let mut actions: Vec<&str> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["action"].as_str().unwrap())
            .collect();
        actions.sort_unstable();
        actions.dedup();
        assert_eq!(
            actions,
            ["delete-inactive", "retire-unused", "rotate"],
            "{rows:#}"
        );
        assert_eq!(rows.as_array().unwrap().len(), 3 * ACCOUNTS as usize);
    })
    .await;
    let expected = expect(&[
        ("iam:GenerateCredentialReport", all),
        ("iam:GetCredentialReport", all),
        ("iam:ListAccessKeys", 3 * ACCOUNTS),
    ]);
    assert_eq!(accounts_only(plan.clone()), expected, "plan");
    // Per member account: 4 calls, plus one ListAccessKeys per user with a key to act on.
    let member = |c: &Costs| {
        get(c, "sts:AssumeRole")
            + (get(c, "iam:GetAccountAuthorizationDetails") - 1)
            + (get(c, "iam:GenerateCredentialReport") - 1)
            + (get(c, "iam:GetCredentialReport") - 1)
    };
    assert_eq!(member(&plan), 4 * ACCOUNTS);
    drop(org);
}

// ---- a campaign run on the DynamoDB journal --------------------------------------------

const RUN_POLICY: &str = r#"
[scope]
accounts = ["ACCOUNT"]

[rotation]
allow_short_gates = true
max_key_age = "90d"
unused_after = "45d"
quiet_period = "2s"
adoption_timeout = "1h"
observation_period = "OBSERVATION"
"#;

struct Campaigns {
    emulator: Emulator,
    org: SeededOrg,
    dir: TempDir,
}

const JOURNAL: &str = "dynamodb://keyturn-costs";

impl Campaigns {
    fn kt(&self, args: &[&str]) -> support::Run {
        let mut all = vec!["--journal", JOURNAL];
        all.extend_from_slice(args);
        let run = keyturn(&self.emulator, self.dir.path(), &all);
        assert_eq!(run.code, 0, "keyturn {args:?}: {}", run.stderr);
        run
    }

    /// Starts campaign `name` over the account seeded as `name`.
    fn start(&self, name: &str, observation: &str) {
        let account = &self.org.account(name).id;
        let policy = RUN_POLICY
            .replace("ACCOUNT", account)
            .replace("OBSERVATION", observation);
        let path = self.dir.write(&format!("{name}.toml"), &policy);
        self.kt(&["campaign", "start", name, "--policy", &path]);
    }

    async fn run(&self, name: &str) -> Costs {
        measured(&self.emulator, || {
            self.kt(&["run", name]);
        })
        .await
    }
}

/// Per key, on DynamoDB: a retirement is 2 writes and no read in its first run
/// (enrolment and intent in one TransactWriteItems, the outcome in one PutItem) and 2
/// more when the resumed run deletes it; deleting an Inactive key is 2 writes; an
/// Inactive key whose observation period cannot be over yet costs its enrolment (1
/// write) and no GetAccessKeyLastUsed; enrolling a key first looks it up in the
/// journal's access-key indexes (two Queries), so that no other campaign of the journal
/// holds it. IAM: ListAccessKeys once per user listed and
/// once more right before each UpdateAccessKey or DeleteAccessKey (the fresh read the
/// mutation is decided on: someone may have changed the keys since the listing),
/// GetAccessKeyLastUsed once right before a deactivation or a deletion (after an
/// observation too: a use since the deactivation means someone made the key Active),
/// one mutation; never a re-list after keyturn's own change.
#[tokio::test(flavor = "multi_thread")]
async fn run_costs_per_key_on_the_dynamodb_journal() {
    const KEYS: i64 = 2;
    let users = |prefix: &str, key: fn() -> KeySpec| {
        (0..KEYS)
            .map(|i| UserSpec::new(&format!("{prefix}-{i}"), vec![key()]))
            .collect::<Vec<_>>()
    };
    let spec = OrgSpec {
        management_users: Vec::new(),
        accounts: vec![
            AccountSpec {
                name: "idle".into(),
                ou_path: Vec::new(),
                users: vec![UserSpec::new("young", vec![KeySpec::active(10, Some(1))])],
            },
            AccountSpec {
                name: "rotate".into(),
                ou_path: Vec::new(),
                users: users("in-use", || KeySpec::active(120, Some(1))),
            },
            AccountSpec {
                name: "retire".into(),
                ou_path: Vec::new(),
                users: users("unused", || KeySpec::active(200, None)),
            },
            AccountSpec {
                name: "inactive".into(),
                ou_path: Vec::new(),
                users: users("stale", || KeySpec::inactive(100, Some(50))),
            },
            AccountSpec {
                name: "waiting".into(),
                ou_path: Vec::new(),
                users: users("recent", || KeySpec::inactive(100, Some(5))),
            },
        ],
    };
    let emulator = Emulator::start(EmulatorOptions::default());
    let org = seed(&emulator, &spec, Utc::now()).await;
    let bed = Campaigns {
        emulator,
        org,
        dir: TempDir::new("costs-run"),
    };
    bed.kt(&["journal", "init"]);
    // Every account has a recent credential report from here on (IAM reuses it).
    bed.kt(&["inventory", "-o", "json"]);
    bed.start("idle", "2s");
    bed.start("rotate", "2s");
    bed.start("retire", "2s");
    bed.start("inactive", "2s");
    bed.start("waiting", "30d");

    // A run with nothing to do: what any run over one account costs (organization,
    // campaign load), whatever the keys. An account with nothing the campaign may act on
    // is not claimed: no journal write at all.
    let fixed = bed.run("idle").await;
    assert_eq!(
        (
            get(&fixed, "sts:AssumeRole"),
            get(&fixed, "iam:GetAccountAuthorizationDetails"),
            get(&fixed, "iam:GetCredentialReport"),
            get(&fixed, "iam:GenerateCredentialReport"),
            get(&fixed, "iam:ListAccessKeys"),
            get(&fixed, "iam:GetAccessKeyLastUsed"),
        ),
        (1, 1, 1, 1, 0, 0),
        "one account read for the run, its young key not even listed: {fixed:?}"
    );
    assert_eq!(
        (
            get(&fixed, "dynamodb:PutItem"),
            get(&fixed, "dynamodb:TransactWriteItems"),
            get(&fixed, "dynamodb:GetItem"),
            get(&fixed, "dynamodb:Query"),
            get(&fixed, "dynamodb:Scan"),
        ),
        (0, 0, 1, 1, 0),
        "nothing to do: the journal's format check (GetItem) and the campaign load \
         (one Query; the closing counts come from the run's own state, not a second \
         read), no claim, no write, no Scan: {fixed:?}"
    );
    assert_eq!(
        bed.run("idle").await,
        fixed,
        "the fixed cost of a run is stable"
    );
    // An account with work is claimed with its first write and released with its last:
    // one write of its own (the release) and no read (the claim stream's head comes with
    // the campaign load). Every figure below is measured beyond the fixed cost, exactly
    // but for the writes, whose bounds count the release: a claim that cost a read or a
    // write more would show.
    let overhead = fixed.clone();

    let retire = path_cost(&bed.run("retire").await, &overhead, KEYS, 1, 1);
    assert_eq!(
        retire,
        only(&[
            ("dynamodb:Query", 2),
            ("iam:ListAccessKeys", 2),
            ("iam:GetAccessKeyLastUsed", 1),
            ("iam:UpdateAccessKey", 1),
            ("journal writes (ungrouped)", 1),
        ]),
        "retire an unused key (first run: deactivate)"
    );

    let inactive = path_cost(&bed.run("inactive").await, &overhead, KEYS, 1, 1);
    assert_eq!(
        inactive,
        only(&[
            ("dynamodb:Query", 2),
            ("iam:ListAccessKeys", 2),
            ("iam:GetAccessKeyLastUsed", 1),
            ("iam:DeleteAccessKey", 1),
            ("journal writes (ungrouped)", 1),
        ]),
        "delete an Inactive key"
    );

    let waiting = path_cost(&bed.run("waiting").await, &overhead, KEYS, 1, 0);
    assert_eq!(
        waiting,
        only(&[("dynamodb:Query", 2), ("iam:ListAccessKeys", 1)]),
        "an Inactive key not due: no GetAccessKeyLastUsed, and its enrolment rides with \
         the claim, taken and released in one write"
    );
    let waiting_again = path_cost(&bed.run("waiting").await, &overhead, KEYS, 0, 0);
    assert_eq!(
        waiting_again,
        only(&[("iam:ListAccessKeys", 1)]),
        "in flight and not due: listed, nothing else, not even a claim"
    );

    // The retired keys' observation period (2s) passes: the resumed run deletes them.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let resumed = path_cost(&bed.run("retire").await, &overhead, KEYS, 1, 1);
    assert_eq!(
        resumed,
        only(&[
            ("iam:ListAccessKeys", 2),
            ("iam:GetAccessKeyLastUsed", 1),
            ("iam:DeleteAccessKey", 1),
            ("journal writes (ungrouped)", 1)
        ]),
        "resume: a fresh check that nobody used the key since its deactivation, then \
         delete the retired key (its intent; the outcome rides with the claim's release)"
    );
    let settled = bed.run("retire").await;
    assert_eq!(
        settled, fixed,
        "a settled campaign costs only the fixed part: nothing to act on, no claim"
    );

    // Rotation: create, deliver, verify (first run); after the quiet period, the fresh
    // check and the deactivation; after the observation period, the deletion.
    let created = path_cost(&bed.run("rotate").await, &overhead, KEYS, 1, 5);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let deactivated = path_cost(&bed.run("rotate").await, &overhead, KEYS, 1, 1);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let deleted = path_cost(&bed.run("rotate").await, &overhead, KEYS, 1, 1);
    assert_eq!(
        created,
        only(&[
            ("dynamodb:Query", 2),
            ("iam:ListAccessKeys", 1),
            ("iam:CreateAccessKey", 1),
            ("secretsmanager:CreateSecret", 1),
            ("secretsmanager:PutSecretValue", 1),
            ("secretsmanager:GetSecretValue", 1),
            ("sts:GetCallerIdentity", 1),
            ("journal writes (ungrouped)", 5),
        ]),
        "rotate, first run: enrolment + create intent in one write, then created, \
         deliver intent, delivered, verified; the secret read back, the new key verified"
    );
    assert_eq!(
        deactivated,
        only(&[
            ("iam:ListAccessKeys", 2),
            ("iam:GetAccessKeyLastUsed", 1),
            ("iam:UpdateAccessKey", 1),
            ("journal writes (ungrouped)", 1),
        ]),
        "rotate, after the quiet period: fresh check, deactivation"
    );
    assert_eq!(
        deleted,
        only(&[
            ("iam:ListAccessKeys", 2),
            ("iam:GetAccessKeyLastUsed", 1),
            ("iam:DeleteAccessKey", 1),
            ("journal writes (ungrouped)", 1),
        ]),
        "rotate, after the observation period: a fresh check that nobody used the key \
         since its deactivation, then the deletion"
    );

    // The fixed part of a run over one account, for the record (docs/costs.md).
    eprintln!("fixed cost of a run: {fixed:?}");
}

/// The users of one account are driven concurrently, and their appends that coincide
/// share one write (group commit). With 100 ms on every call the users move in step, and
/// they wait for each other: 8 retirements take far fewer than the 9 writes they would
/// cost alone (8 intents, the first carrying the claim, and the release with the 8
/// outcomes), and every key is retired exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn an_accounts_users_share_journal_writes() {
    const USERS: usize = 8;
    let spec = OrgSpec {
        management_users: Vec::new(),
        accounts: vec![AccountSpec {
            name: "group".into(),
            ou_path: Vec::new(),
            users: (0..USERS)
                .map(|i| UserSpec::new(&format!("unused-{i}"), vec![KeySpec::active(200, None)]))
                .collect(),
        }],
    };
    let emulator = Emulator::start(EmulatorOptions::default());
    let org = seed(&emulator, &spec, Utc::now()).await;
    let bed = Campaigns {
        emulator,
        org,
        dir: TempDir::new("costs-group"),
    };
    bed.kt(&["journal", "init"]);
    bed.start("group", "30d");
    bed.emulator
        .set_faults(&[keyturn_testbed::FaultRule::latency(100)])
        .await;
    let run = bed.run("group").await;
    bed.emulator.set_faults(&[]).await;
    assert_eq!(get(&run, "iam:UpdateAccessKey"), USERS as i64, "{run:?}");
    let writes: i64 = WRITES.iter().map(|action| get(&run, action)).sum();
    // Ungrouped: 1 write per key (its intent, the first carrying the claim; its outcome
    // ends its turn and rides with the claim's release), and the release.
    let ungrouped = 1 + USERS as i64;
    eprintln!("{writes} journal writes for {USERS} retirements ({ungrouped} ungrouped)");
    // Grouped: the users go in waves of 4 (`PER_ACCOUNT_CONCURRENCY`), and a wave's
    // intents wait for each other (the users are members of the account's group
    // commit) and go in one write: 2 for 8 users, the release, and one more of slack
    // for timing. Without the wait, a wave's first intent went alone and the rest
    // after it: 5.
    assert!(
        writes <= 1 + USERS as i64 / 4 + 1,
        "{writes} journal writes for {USERS} retirements ({ungrouped} ungrouped): {run:?}"
    );
    // Each key once, each deactivated and now observed: nothing lost in a group.
    let status = bed.kt(&["status", "group", "-o", "json"]).json();
    let keys = status["keys"].as_array().unwrap();
    assert_eq!(keys.len(), USERS, "{status:#}");
    assert!(keys.iter().all(|k| k["state"] == "observing"), "{status:#}");
}
