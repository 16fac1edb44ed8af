//! Rotation campaigns end to end: the keyturn binary against the emulator, with gates
//! of a few seconds, checked against what IAM and Secrets Manager hold.

mod support;

use std::time::Duration;

use chrono::Utc;
use keyturn_testbed::seed::{
    AccountSpec, KeySpec, OrgSpec, SeededOrg, UserSpec, member_config, seed,
};
use keyturn_testbed::{Emulator, EmulatorOptions};
use serde_json::Value;
use support::{TempDir, keyturn};

const POLICY: &str = r#"
[scope]
exclude_users = ["breakglass-*"]

[rotation]
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

    let started = keyturn(
        &emulator,
        dir.path(),
        &[
            "--journal",
            journal,
            "campaign",
            "start",
            "c1",
            "--policy",
            &policy,
        ],
    );
    assert_eq!(started.code, 0, "{}", started.stderr);

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
