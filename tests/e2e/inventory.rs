//! `keyturn inventory` against an emulator organization: the output equals the ground
//! truth read back from the emulator, one failing account does not stop the others, the
//! policy's scope selects accounts and users, and bad input changes nothing.

mod support;

use chrono::Utc;
use keyturn_testbed::seed::{AccountSpec, KeySpec, OrgSpec, SeededOrg, UserSpec, seed};
use keyturn_testbed::{Emulator, EmulatorOptions, FaultRule};
use serde_json::Value;
use support::{TempDir, assert_same_rows, ground_truth, keyturn, sort_key};

/// 22 member accounts under a nested OU tree (workloads/prod, workloads/dev,
/// workloads/dev/experiments, sandbox, and the root), with users holding 0, 1 and 2
/// keys, backdated and never-used keys, Inactive keys, an exempt and an excluded user.
fn organization() -> OrgSpec {
    let ou_paths: [&[&str]; 5] = [
        &["workloads", "prod"],
        &["workloads", "dev"],
        &["workloads", "dev", "experiments"],
        &["sandbox"],
        &[],
    ];
    let accounts = (0..22)
        .map(|i| AccountSpec {
            name: format!("member-{i:02}"),
            ou_path: ou_paths[i % ou_paths.len()]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            users: vec![
                UserSpec::new("no-keys", vec![]),
                UserSpec::new(
                    "one-old-in-use",
                    vec![KeySpec::active(120 + i as i64, Some(1))],
                ),
                UserSpec::new(
                    "two-keys",
                    vec![KeySpec::active(200, None), KeySpec::inactive(30, Some(20))],
                ),
                UserSpec::new("never-used", vec![KeySpec::active(5, None)]),
                UserSpec::new("breakglass-root", vec![KeySpec::active(400, Some(300))]),
                UserSpec::new("vendor", vec![KeySpec::active(150, Some(2))])
                    .tag("keyturn:exempt", "vendor rotates it"),
            ],
        })
        .collect();
    OrgSpec {
        management_users: vec![UserSpec::new(
            "org-admin",
            vec![KeySpec::active(95, Some(0))],
        )],
        accounts,
    }
}

async fn seeded() -> (Emulator, SeededOrg) {
    let emulator = Emulator::start(EmulatorOptions::default());
    let org = seed(&emulator, &organization(), Utc::now()).await;
    (emulator, org)
}

fn all_account_ids(org: &SeededOrg) -> Vec<&str> {
    std::iter::once(&org.management)
        .chain(&org.accounts)
        .map(|a| a.id.as_str())
        .collect()
}

fn sorted(rows: &Value) -> Vec<Value> {
    let mut rows = rows.as_array().expect("a JSON array").clone();
    rows.sort_by_key(sort_key);
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn inventory_equals_the_ground_truth_of_every_account() {
    let (emulator, org) = seeded().await;
    let dir = TempDir::new("inventory-truth");
    emulator.reset_counters().await;

    let run = keyturn(&emulator, dir.path(), &["inventory", "-o", "json"]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_eq!(
        emulator.counters().await.by_action("sts", "AssumeRole"),
        22,
        "each member account's role is assumed once and shared by all its clients"
    );
    let output = run.json();

    let truth = ground_truth(
        &emulator,
        &org,
        &all_account_ids(&org),
        &["vendor"],
        Utc::now(),
    )
    .await;
    assert_eq!(
        truth.len(),
        22 * 5 + 1,
        "the seeded keys minus the exempt user's"
    );
    assert_same_rows(&sorted(&output), &truth);
    assert!(
        output.as_array().unwrap() == &truth,
        "rows come sorted by account, user, creation"
    );

    let order = [
        "account_id",
        "account_name",
        "user_name",
        "access_key_id",
        "status",
        "created_at",
        "age_days",
        "last_used_at",
        "last_used_service",
        "last_used_region",
    ];
    let first_object = &run.stdout[..run.stdout.find('}').expect("an object")];
    let positions: Vec<usize> = order
        .iter()
        .map(|f| {
            first_object
                .find(&format!("\"{f}\""))
                .unwrap_or_else(|| panic!("no field {f}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "the JSON field names and order are a contract: {first_object}"
    );
    assert_eq!(
        output[0].as_object().unwrap().len(),
        order.len(),
        "no other fields"
    );
    let never_used: Vec<&Value> = output
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["user_name"] == "never-used")
        .collect();
    assert_eq!(never_used.len(), 22);
    assert!(
        never_used
            .iter()
            .all(|r| r["last_used_at"].is_null() && r["last_used_service"].is_null())
    );
    assert!(
        !run.stdout.contains("vendor"),
        "the exempt user is out of scope"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_has_the_same_rows_with_a_header() {
    let (emulator, org) = seeded().await;
    let dir = TempDir::new("inventory-csv");
    let run = keyturn(&emulator, dir.path(), &["inventory", "-o", "csv"]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let mut lines = run.stdout.lines();
    assert_eq!(
        lines.next(),
        Some(
            "account_id,account_name,user_name,access_key_id,status,created_at,age_days,last_used_at,last_used_service,last_used_region"
        )
    );
    let truth = ground_truth(
        &emulator,
        &org,
        &all_account_ids(&org),
        &["vendor"],
        Utc::now(),
    )
    .await;
    let csv_rows: Vec<&str> = lines.collect();
    assert_eq!(csv_rows.len(), truth.len());
    let expected_first = &truth[0];
    let cells: Vec<&str> = csv_rows[0].split(',').collect();
    assert_eq!(
        cells[0],
        expected_first["account_id"].as_str().unwrap(),
        "account ids keep their leading zeros as text"
    );
    assert_eq!(cells[3], expected_first["access_key_id"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_account_is_reported_and_the_others_complete() {
    let (emulator, org) = seeded().await;
    let broken = &org.accounts[3];
    emulator
        .set_faults(&[FaultRule::error(500).service("iam").account(&broken.id)])
        .await;
    let dir = TempDir::new("inventory-failure");

    let run = keyturn(&emulator, dir.path(), &["inventory", "-o", "json"]);
    assert_eq!(
        run.code, 3,
        "some accounts failed: exit code 3; stderr: {}",
        run.stderr
    );
    let failure_lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("account "))
        .collect();
    assert_eq!(
        failure_lines.len(),
        1,
        "one line per failed account: {}",
        run.stderr
    );
    assert!(
        failure_lines[0].contains(&broken.id) && failure_lines[0].contains("InternalFailure"),
        "{}",
        failure_lines[0]
    );

    let output = run.json();
    let others: Vec<&str> = all_account_ids(&org)
        .into_iter()
        .filter(|id| *id != broken.id)
        .collect();
    let truth = ground_truth(&emulator, &org, &others, &["vendor"], Utc::now()).await;
    assert_same_rows(&sorted(&output), &truth);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_scope_selects_units_recursively_and_excludes_accounts_and_users() {
    let (emulator, org) = seeded().await;
    let workloads = org.ou("workloads");
    let excluded = org
        .accounts
        .iter()
        .find(|a| a.ou_path == ["workloads", "prod"])
        .unwrap();
    let listed = org
        .accounts
        .iter()
        .find(|a| a.ou_path == ["sandbox"])
        .unwrap();
    let dir = TempDir::new("inventory-scope");
    let policy = dir.write(
        "policy.toml",
        &format!(
            "[scope]\norganizational_units = [\"{workloads}\"]\naccounts = [\"{}\"]\nexclude_accounts = [\"{}\"]\nexclude_users = [\"breakglass-*\"]\n",
            listed.id, excluded.id
        ),
    );

    let run = keyturn(
        &emulator,
        dir.path(),
        &["inventory", "--policy", &policy, "-o", "json"],
    );
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);

    let expected: Vec<&str> = org
        .accounts
        .iter()
        .filter(|a| {
            (a.ou_path.first().map(String::as_str) == Some("workloads") || a.id == listed.id)
                && a.id != excluded.id
        })
        .map(|a| a.id.as_str())
        .collect();
    assert!(
        org.accounts
            .iter()
            .any(|a| a.ou_path.len() == 3 && expected.contains(&a.id.as_str())),
        "an account two OUs below the listed one is included"
    );
    let truth = ground_truth(
        &emulator,
        &org,
        &expected,
        &["vendor", "breakglass-root"],
        Utc::now(),
    )
    .await;
    assert_same_rows(&sorted(&run.json()), &truth);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_before_anything_is_contacted() {
    let emulator = Emulator::start(EmulatorOptions::default());
    let dir = TempDir::new("inventory-bad-input");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--policy".into(),
                dir.write("typo.toml", "[scope]\nrole_nmae = \"X\"\n"),
            ],
            "typo.toml:2:1: field `scope.role_nmae`",
        ),
        (
            vec![
                "--policy".into(),
                dir.write("acct.toml", "[scope]\naccounts = [\"12345\"]\n"),
            ],
            "acct.toml:2",
        ),
        (
            vec![
                "--policy".into(),
                dir.path().join("missing.toml").display().to_string(),
            ],
            "cannot read policy file",
        ),
        (
            vec!["--role-name".into(), "bad role".into()],
            "invalid role name",
        ),
        (
            vec!["--external-id".into(), "x".into()],
            "invalid external id",
        ),
    ];
    for (extra, message) in cases {
        let mut args = vec!["inventory", "-o", "json"];
        args.extend(extra.iter().map(String::as_str));
        let run = keyturn(&emulator, dir.path(), &args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
    assert_eq!(emulator.counters().await.total(), 0, "no AWS call was made");
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_whose_role_cannot_be_assumed_are_reported_with_the_sts_error_code() {
    let emulator = Emulator::start(EmulatorOptions::default());
    let spec = OrgSpec {
        management_users: vec![UserSpec::new(
            "org-admin",
            vec![KeySpec::active(95, Some(0))],
        )],
        accounts: (0..3)
            .map(|i| AccountSpec {
                name: format!("member-{i}"),
                ou_path: vec![],
                users: vec![UserSpec::new("app", vec![KeySpec::active(100, Some(1))])],
            })
            .collect(),
    };
    let org = seed(&emulator, &spec, Utc::now()).await;
    emulator
        .set_faults(&[FaultRule::error(503).service("sts").action("AssumeRole")])
        .await;
    let dir = TempDir::new("inventory-assume-role");

    let run = keyturn(&emulator, dir.path(), &["inventory", "-o", "json"]);
    assert_eq!(run.code, 3, "stderr: {}", run.stderr);
    let failure_lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("account "))
        .collect();
    assert_eq!(
        failure_lines.len(),
        3,
        "one line per member account: {}",
        run.stderr
    );
    for account in &org.accounts {
        let line = failure_lines
            .iter()
            .find(|l| l.contains(&account.id))
            .expect("a line for every member account");
        assert!(
            line.contains("ServiceUnavailable"),
            "the AssumeRole error code is reported: {line}"
        );
    }
    let truth = ground_truth(
        &emulator,
        &org,
        &[org.management.id.as_str()],
        &[],
        Utc::now(),
    )
    .await;
    assert_same_rows(&sorted(&run.json()), &truth);
}
