//! Org scale under faults: a campaign over 20+ accounts with 20% throttling, 5% HTTP
//! 5xx and 50 ms of added latency on every call (journal included) ends in the same
//! state as a clean run of the same organization, with no rotation step done twice.
//! And the fan-out's bounds, from the emulator's in-flight counters: accounts at once
//! (`--concurrency`), requests at once per account, users of an account worked at once.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use keyturn_testbed::seed::{
    AccountSpec, KeySpec, OrgSpec, SeededOrg, UserSpec, member_config, seed,
};
use keyturn_testbed::{Emulator, EmulatorOptions, FaultRule};
use serde_json::Value;
use support::{TempDir, keyturn};

const POLICY: &str = "[rotation]\nallow_short_gates = true\nquiet_period = \"2s\"\nadoption_timeout = \"1h\"\nobservation_period = \"2s\"\n";
const JOURNAL: &str = "dynamodb://keyturn-scale";

fn organization() -> OrgSpec {
    let accounts = (0..22)
        .map(|i| AccountSpec {
            name: format!("acct-{i:02}"),
            ou_path: vec![],
            users: vec![
                UserSpec::new("app", vec![KeySpec::active(100 + i, Some(1))]),
                UserSpec::new("idle", vec![KeySpec::active(200, None)]),
                UserSpec::new("old", vec![KeySpec::inactive(60, Some(30))]),
            ],
        })
        .collect();
    OrgSpec {
        management_users: vec![],
        accounts,
    }
}

/// Per (account name, user): the user's keys now as (Active?, is it the delivered key?),
/// and the campaign state of each of its old keys.
type EndState = BTreeMap<(String, String), (Vec<(String, bool)>, Vec<String>)>;

/// Runs the campaign until nothing is left to do, switching each application to its
/// delivered key; returns the end state and the journal's per-user replacement count.
async fn campaign(
    emulator: &Emulator,
    org: &SeededOrg,
    faults: &[FaultRule],
) -> (EndState, BTreeMap<String, usize>) {
    let dir = TempDir::new("scale");
    let policy = dir.write("policy.toml", POLICY);
    for args in [
        vec!["journal", "init"],
        vec!["campaign", "start", "s1", "--policy", policy.as_str()],
    ] {
        let mut full = vec!["--journal", JOURNAL];
        full.extend(args);
        let run = keyturn(emulator, dir.path(), &full);
        assert_eq!(run.code, 0, "{full:?}: {}", run.stderr);
    }
    let mut switched = std::collections::BTreeSet::new();
    emulator.set_faults(faults).await;
    for round in 0..15 {
        let run = keyturn(emulator, dir.path(), &["--journal", JOURNAL, "run", "s1"]);
        if run.code != 0 {
            // Shown if the test fails: which accounts failed, and why.
            eprintln!("round {round} (exit {}):\n{}", run.code, run.stderr);
        }
        assert!(
            run.code == 0 || run.code == 3,
            "round {round}: {}\n{}",
            run.stdout,
            run.stderr
        );
        let status = keyturn(
            emulator,
            dir.path(),
            &["--journal", JOURNAL, "status", "s1", "-o", "json"],
        );
        assert_eq!(status.code, 0, "{}", status.stderr);
        let status = status.json();
        let keys = status["keys"].as_array().unwrap();
        // The test's own reads and the applications' switch run without faults.
        emulator.clear_faults().await;
        for key in keys.iter().filter(|k| k["state"] == "awaiting-adoption") {
            let account = key["account_id"].as_str().unwrap();
            if switched.insert(account.to_owned()) {
                let sm =
                    aws_sdk_secretsmanager::Client::new(&member_config(emulator, account).await);
                let value = sm
                    .get_secret_value()
                    .secret_id("keyturn/app")
                    .send()
                    .await
                    .expect("delivered secret");
                let secret: Value = serde_json::from_str(value.secret_string().unwrap()).unwrap();
                let creds = aws_credential_types::Credentials::new(
                    secret["AccessKeyId"].as_str().unwrap(),
                    secret["SecretAccessKey"].as_str().unwrap(),
                    None,
                    None,
                    "app",
                );
                aws_sdk_sts::Client::new(&emulator.sdk_config_with(creds).await)
                    .get_caller_identity()
                    .send()
                    .await
                    .expect("app switches");
            }
        }
        emulator.set_faults(faults).await;
        let open = keys.iter().any(|k| {
            matches!(
                k["state"].as_str(),
                Some("pending" | "awaiting-adoption" | "observing")
            )
        });
        if !open && run.code == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    emulator.clear_faults().await;

    let status = keyturn(
        emulator,
        dir.path(),
        &["--journal", JOURNAL, "status", "s1", "-o", "json"],
    )
    .json();
    let audit = keyturn(
        emulator,
        dir.path(),
        &[
            "--journal",
            JOURNAL,
            "audit",
            "--campaign",
            "s1",
            "-o",
            "json",
        ],
    )
    .json();
    let mut replacements: BTreeMap<String, usize> = BTreeMap::new();
    let mut history: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for event in audit.as_array().unwrap() {
        let Some(account) = event["account_id"].as_str() else {
            continue;
        };
        let name = org
            .accounts
            .iter()
            .find(|a| a.id == account)
            .unwrap()
            .name
            .clone();
        let kind = event["event_type"].as_str().unwrap();
        if kind == "replacement-created" {
            *replacements.entry(name.clone()).or_default() += 1;
        }
        history.entry(name).or_default().push(format!(
            "{} {} {kind} {} {}",
            event["user_name"].as_str().unwrap_or("-"),
            event["old_access_key_id"].as_str().unwrap_or("-"),
            event["step"].as_str().unwrap_or(""),
            event["error_code"].as_str().unwrap_or(""),
        ));
    }
    for (name, count) in &replacements {
        if *count != 1 {
            eprintln!(
                "{name}: {count} replacements\n  {}",
                history[name].join("\n  ")
            );
        }
    }
    let mut end = EndState::new();
    for account in &org.accounts {
        let iam = aws_sdk_iam::Client::new(&member_config(emulator, &account.id).await);
        let sm = aws_sdk_secretsmanager::Client::new(&member_config(emulator, &account.id).await);
        let delivered = sm
            .get_secret_value()
            .secret_id("keyturn/app")
            .send()
            .await
            .ok()
            .and_then(|v| {
                serde_json::from_str::<Value>(v.secret_string().unwrap())
                    .ok()
                    .and_then(|s| s["AccessKeyId"].as_str().map(str::to_owned))
            });
        for user in ["app", "idle", "old"] {
            let listed = iam.list_access_keys().user_name(user).send().await.unwrap();
            let keys = listed
                .access_key_metadata()
                .iter()
                .map(|k| {
                    (
                        k.status().unwrap().as_str().to_owned(),
                        delivered.as_deref() == k.access_key_id(),
                    )
                })
                .collect();
            let mut states: Vec<String> = status["keys"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|k| k["account_id"] == account.id.as_str() && k["user_name"] == user)
                .map(|k| k["state"].as_str().unwrap().to_owned())
                .collect();
            states.sort();
            end.insert((account.name.clone(), user.to_owned()), (keys, states));
        }
    }
    (end, replacements)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_campaign_under_throttling_errors_and_latency_ends_like_a_clean_one() {
    let spec = organization();
    let clean = Emulator::start(EmulatorOptions::default());
    let clean_org = seed(&clean, &spec, Utc::now()).await;
    let faulty = Emulator::start(EmulatorOptions::default());
    let faulty_org = seed(&faulty, &spec, Utc::now()).await;
    let faults = [
        FaultRule::latency(50),
        FaultRule::throttle().fraction(0.20).seed(7),
        FaultRule::error(503).fraction(0.05).seed(11),
    ];

    let (clean_end, clean_replacements) = campaign(&clean, &clean_org, &[]).await;
    faulty.reset_counters().await;
    let (faulty_end, faulty_replacements) = campaign(&faulty, &faulty_org, &faults).await;
    let injected = faulty.counters().await.faults_injected;
    assert!(injected > 50, "faults were really injected: {injected}");

    for ((account, user), (keys, states)) in &clean_end {
        match user.as_str() {
            "app" => assert_eq!(
                (keys.as_slice(), states.as_slice()),
                (
                    [("Active".to_owned(), true)].as_slice(),
                    ["completed".to_owned()].as_slice()
                ),
                "{account}"
            ),
            "idle" => assert_eq!(states, &["retired".to_owned()], "{account}"),
            _ => assert_eq!(states, &["completed".to_owned()], "{account}"),
        }
    }
    assert_eq!(faulty_end, clean_end, "the same end state as a clean run");
    assert!(clean_replacements.values().all(|n| *n == 1) && clean_replacements.len() == 22);
    assert_eq!(
        faulty_replacements, clean_replacements,
        "one replacement per rotated key, never two"
    );
}

/// The fan-out's bounds, read off the emulator's in-flight counters, with 100 ms added
/// to every call so that whatever keyturn runs at once overlaps: `--concurrency` bounds
/// the member accounts worked at once; within an account at most four requests run at
/// once (IAM's rate limits are per account); and an account's users are worked
/// concurrently, not one after another (their deactivations overlap).
#[tokio::test(flavor = "multi_thread")]
async fn accounts_and_their_users_are_worked_concurrently_within_their_bounds() {
    const ACCOUNTS: usize = 8;
    const USERS: usize = 6;
    let emulator = Emulator::start(EmulatorOptions::default());
    let users: Vec<UserSpec> = (0..USERS)
        .map(|u| UserSpec::new(&format!("user-{u}"), vec![KeySpec::active(100, None)]))
        .collect();
    let names: Vec<String> = (0..ACCOUNTS).map(|i| format!("acct-{i}")).collect();
    let org = support::seed_flat(
        &emulator,
        names.iter().map(|n| (n.as_str(), users.clone())).collect(),
    )
    .await;
    let dir = TempDir::new("bounds");
    let policy = dir.write(
        "policy.toml",
        "[rotation]\nallow_short_gates = true\nmax_key_age = \"3650d\"\nunused_after = \"45d\"\nobservation_period = \"3650d\"\n",
    );
    let journal = "sqlite://journal.db";
    support::start_campaign(&emulator, dir.path(), journal, "b1", &policy);

    emulator.reset_counters().await;
    emulator.set_faults(&[FaultRule::latency(100)]).await;
    let run = keyturn(
        &emulator,
        dir.path(),
        &["--journal", journal, "run", "b1", "--concurrency", "3"],
    );
    emulator.set_faults(&[]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout
            .lines()
            .filter(|l| l.starts_with("done "))
            .count(),
        ACCOUNTS * USERS,
        "every unused key deactivated: {}",
        run.stdout
    );

    let counters = emulator.counters().await.concurrency;
    let members: std::collections::BTreeSet<&str> =
        org.accounts.iter().map(|a| a.id.as_str()).collect();
    let overall: BTreeMap<&str, u64> = counters
        .max_in_flight
        .iter()
        .filter(|m| members.contains(m.account.as_str()))
        .map(|m| (m.account.as_str(), m.max))
        .collect();
    assert_eq!(overall.len(), ACCOUNTS, "{counters:?}");
    assert!(
        overall.values().all(|&n| n <= 4),
        "at most four requests at once per account: {overall:?}"
    );
    let deactivations: BTreeMap<&str, u64> = counters
        .max_in_flight_by_action
        .iter()
        .filter(|m| members.contains(m.account.as_str()) && m.action == "UpdateAccessKey")
        .map(|m| (m.account.as_str(), m.max))
        .collect();
    assert_eq!(deactivations.len(), ACCOUNTS, "{counters:?}");
    assert!(
        deactivations.values().all(|&n| n >= 2),
        "an account's users are worked at once: {deactivations:?}"
    );
    assert!(
        (2..=3).contains(&counters.max_member_accounts_in_flight),
        "accounts are worked concurrently, at most --concurrency at once: {counters:?}"
    );
}
