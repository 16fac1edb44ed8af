//! Audit queries and tamper evidence on journals written by real campaigns, on both
//! persistent backends: `keyturn audit` by each filter, `keyturn verify` detecting
//! events modified, deleted or reordered directly in the DynamoDB table or the SQLite
//! file, and no secret in any audit output.

mod support;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use keyturn_testbed::seed::{
    AccountSpec, KeySpec, OrgSpec, SeededOrg, UserSpec, member_config, seed,
};
use keyturn_testbed::{Emulator, EmulatorOptions};
use serde_json::Value;
use support::{Run, TempDir, keyturn};

const POLICY: &str = "[rotation]\nallow_short_gates = true\nquiet_period = \"2s\"\nadoption_timeout = \"1h\"\nobservation_period = \"2s\"\n";

/// Two accounts; in each, one key to rotate and one unused key to retire.
async fn campaign(journal: &str) -> (Emulator, SeededOrg, TempDir) {
    campaign_with(journal, &[]).await
}

/// [`campaign`], with the member roles of the accounts at `refusing` (indexes into the
/// seeded accounts) refusing `sts:SetSourceIdentity`.
async fn campaign_with(journal: &str, refusing: &[usize]) -> (Emulator, SeededOrg, TempDir) {
    let emulator = Emulator::start(EmulatorOptions::default());
    let users = vec![
        UserSpec::new("app", vec![KeySpec::active(120, Some(1))]),
        UserSpec::new("idle", vec![KeySpec::active(200, None)]),
    ];
    let accounts = ["prod", "dev"]
        .iter()
        .map(|n| AccountSpec {
            name: (*n).into(),
            ou_path: vec![],
            users: users.clone(),
        })
        .collect();
    let org = seed(
        &emulator,
        &OrgSpec {
            management_users: vec![],
            accounts,
        },
        Utc::now(),
    )
    .await;
    let refused: Vec<&str> = refusing
        .iter()
        .map(|&i| org.accounts[i].id.as_str())
        .collect();
    emulator.deny_source_identity(&refused).await;
    let dir = TempDir::new("audit");
    let policy = dir.write("policy.toml", POLICY);
    if journal.starts_with("dynamodb://") {
        assert_eq!(
            keyturn(
                &emulator,
                dir.path(),
                &["--journal", journal, "journal", "init"]
            )
            .code,
            0
        );
    }
    support::start_campaign(&emulator, dir.path(), journal, "q3", &policy);
    let run = keyturn(&emulator, dir.path(), &["--journal", journal, "run", "q3"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    (emulator, org, dir)
}

fn audit(emulator: &Emulator, dir: &TempDir, journal: &str, filter: &[&str]) -> Vec<Value> {
    let mut args = vec!["--journal", journal, "audit", "-o", "json"];
    args.extend_from_slice(filter);
    let run = keyturn(emulator, dir.path(), &args);
    assert_eq!(run.code, 0, "audit {filter:?}: {}", run.stderr);
    run.json().as_array().unwrap().clone()
}

fn types(rows: &[Value]) -> Vec<&str> {
    rows.iter()
        .map(|r| r["event_type"].as_str().unwrap())
        .collect()
}

async fn secrets(emulator: &Emulator, org: &SeededOrg) -> Vec<String> {
    let mut found = Vec::new();
    for account in &org.accounts {
        let sm = aws_sdk_secretsmanager::Client::new(&member_config(emulator, &account.id).await);
        let value = sm
            .get_secret_value()
            .secret_id("keyturn/app")
            .send()
            .await
            .expect("the delivered secret");
        let json: Value = serde_json::from_str(value.secret_string().unwrap()).unwrap();
        found.push(json["SecretAccessKey"].as_str().unwrap().to_owned());
    }
    found
}

async fn check_queries(journal: &str) {
    let (emulator, org, dir) = campaign(journal).await;
    let prod = &org.accounts[0];
    let old = &prod.users[0].keys[0].access_key_id;

    let history = audit(&emulator, &dir, journal, &["--key", old]);
    assert_eq!(
        types(&history),
        [
            "key-enrolled",
            "step-intended",
            "replacement-created",
            "step-intended",
            "secret-delivered",
            "replacement-verified"
        ],
        "the whole history of the old key, oldest first"
    );
    let new = history[2]["new_access_key_id"].as_str().unwrap().to_owned();
    assert!(history.iter().all(|r| r["account_id"] == prod.id.as_str()
        && r["user_name"] == "app"
        && r["campaign"] == "q3"));
    assert!(history.iter().all(
        |r| r["caller_arn"].as_str().unwrap().starts_with("arn:aws:")
            && !r["run_id"].as_str().unwrap().is_empty()
    ));
    assert!(history.iter().all(
        |r| !r["host"].as_str().unwrap().is_empty() && r["hash"].as_str().unwrap().len() == 64
    ));
    let by_new = audit(&emulator, &dir, journal, &["--key", &new]);
    assert_eq!(
        types(&by_new),
        [
            "replacement-created",
            "step-intended",
            "secret-delivered",
            "replacement-verified"
        ],
        "found as the new key too"
    );

    let account = audit(&emulator, &dir, journal, &["--account", &prod.id]);
    assert!(account.iter().all(|r| r["account_id"] == prod.id.as_str()));
    assert_eq!(
        account
            .iter()
            .filter(|r| r["event_type"] == "key-enrolled")
            .count(),
        2,
        "both keys of the account"
    );
    let idle = audit(
        &emulator,
        &dir,
        journal,
        &["--account", &prod.id, "--user", "idle"],
    );
    assert_eq!(
        types(&idle),
        ["key-enrolled", "step-intended", "key-deactivated"],
        "the unused key was retired: deactivated first"
    );
    let nothing_yet = audit(
        &emulator,
        &dir,
        journal,
        &["--account", &prod.id, "--until", "2000-01-01"],
    );
    assert!(nothing_yet.is_empty());

    let deactivations = audit(
        &emulator,
        &dir,
        journal,
        &["--campaign", "q3", "--event", "key-deactivated"],
    );
    assert_eq!(deactivations.len(), 2, "one retired key per account");
    let all = audit(&emulator, &dir, journal, &[]);
    assert!(
        all.len() >= account.len() * 2 - 2,
        "every campaign without a filter"
    );
    let times: Vec<&str> = all
        .iter()
        .map(|r| r["recorded_at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");

    for format in ["table", "csv", "jsonl"] {
        let run = keyturn(
            &emulator,
            dir.path(),
            &[
                "--journal",
                journal,
                "audit",
                "--campaign",
                "q3",
                "-o",
                format,
            ],
        );
        assert_eq!(run.code, 0, "{format}: {}", run.stderr);
        for secret in secrets(&emulator, &org).await {
            assert!(
                !run.stdout.contains(&secret),
                "no secret in audit output ({format})"
            );
        }
        if format == "jsonl" {
            assert_eq!(run.stdout.lines().count(), all.len());
            assert!(
                run.stdout
                    .lines()
                    .all(|l| serde_json::from_str::<Value>(l).is_ok())
            );
        }
        if format == "csv" {
            assert!(run.stdout.starts_with("recorded_at,campaign,account_id,user_name,old_access_key_id,new_access_key_id,event_type"));
        }
    }
    let ambiguous = keyturn(
        &emulator,
        dir.path(),
        &["--journal", journal, "audit", "--user", "app"],
    );
    assert_eq!(
        ambiguous.code, 2,
        "a user name alone is ambiguous: {}",
        ambiguous.stderr
    );

    let verify = keyturn(&emulator, dir.path(), &["--journal", journal, "verify"]);
    assert_eq!(verify.code, 0, "{}", verify.stdout);
    assert!(verify.stdout.starts_with("ok: "), "{}", verify.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_queries_on_sqlite() {
    check_queries("sqlite://journal.db").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_queries_on_dynamodb() {
    check_queries("dynamodb://keyturn-audit").await;
}

/// CloudTrail attribution: every member session keyturn opens for a campaign is named
/// `keyturn-<campaign>-<run>` (the run id the journal records as the actor) and carries
/// the source identity `keyturn-<campaign>`; a role whose trust policy does not allow
/// `sts:SetSourceIdentity` is assumed again without it, once, and the campaign goes on.
#[tokio::test(flavor = "multi_thread")]
async fn member_sessions_carry_the_campaign_in_session_name_and_source_identity() {
    let journal = "sqlite://journal.db";
    let (emulator, org, dir) = campaign_with(journal, &[1]).await;
    let (allowing, refusing) = (&org.accounts[0], &org.accounts[1]);
    let requests = emulator.assume_role_requests().await;
    let into = |account: &str| {
        requests
            .iter()
            .filter(|r| r.role_arn.split(':').nth(4) == Some(account))
            .filter(|r| r.role_session_name != "keyturn-testbed") // the seeding's own
            .collect::<Vec<_>>()
    };

    let run_ids: std::collections::BTreeSet<String> = audit(&emulator, &dir, journal, &[])
        .iter()
        .filter(|r| r["event_type"] != "campaign-started")
        .map(|r| r["run_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(run_ids.len(), 1, "one run acted: {run_ids:?}");
    let run_id = run_ids.first().unwrap();
    let session = format!("keyturn-q3-{run_id}");

    let allowed = into(&allowing.id);
    assert_eq!(allowed.len(), 1, "assumed once: {allowed:?}");
    assert_eq!(allowed[0].role_session_name, session);
    assert_eq!(allowed[0].source_identity, "keyturn-q3");

    let refused = into(&refusing.id);
    assert_eq!(
        refused
            .iter()
            .map(|r| (r.role_session_name.as_str(), r.source_identity.as_str()))
            .collect::<Vec<_>>(),
        [(session.as_str(), "keyturn-q3"), (session.as_str(), "")],
        "refused with the source identity, then assumed without it"
    );
    let verified = audit(
        &emulator,
        &dir,
        journal,
        &["--account", &refusing.id, "--event", "replacement-verified"],
    );
    assert_eq!(verified.len(), 1, "the campaign went on in that account");
}

fn broken_lines(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.starts_with("BROKEN "))
        .map(str::to_owned)
        .collect()
}

/// A command that decides or reports from campaign q3, whose `stream` was modified at
/// its first event, refused it with the tamper exit code, before printing anything.
fn assert_refused(run: &Run, stream: &str) {
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (6, ""),
        "a broken chain is refused: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "the hash chain of stream q3/{stream} is broken at sequence 1"
        )) && run.stderr.contains("`keyturn verify`"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_detects_edits_deletions_and_reordering_in_sqlite() {
    let journal = "sqlite://journal.db";
    let (emulator, org, dir) = campaign(journal).await;
    let stream = format!("user/{}/app", org.accounts[0].id);
    let db = rusqlite::Connection::open(dir.path().join("journal.db")).unwrap();

    db.execute("UPDATE events SET payload = replace(payload, 'test', 'TEST') WHERE stream = ?1 AND sequence = 1", [&stream]).unwrap();
    db.execute("UPDATE events SET payload = '{\"key\":\"AKIAFORGED0000000000\",\"path\":\"rotate\",\"reason\":\"x\",\"created_at\":\"2026-01-01T00:00:00Z\",\"last_used_at\":null}' WHERE stream = ?1 AND sequence = 1", [&stream]).unwrap();
    let run = keyturn(
        &emulator,
        dir.path(),
        &["--journal", journal, "verify", "q3"],
    );
    assert_eq!(
        run.code, 6,
        "tampering has its own exit code: {}",
        run.stdout
    );
    assert_eq!(
        broken_lines(&run.stdout),
        [format!(
            "BROKEN q3/{stream} #1: modified: its content no longer matches its hash"
        )]
    );

    // The commands that decide or report from the campaign refuse it, print nothing on
    // stdout and write nothing.
    let count = |db: &rusqlite::Connection| -> i64 {
        db.query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap()
    };
    let before = count(&db);
    let old_key = org.accounts[0].users[0].keys[0].access_key_id.clone();
    for args in [
        &["run", "q3"][..],
        &["status", "q3"],
        &["report", "q3", "--format", "csv"],
        &["rollback", "q3", "--key", &old_key, "--reason", "test"],
    ] {
        let mut full = vec!["--journal", journal];
        full.extend_from_slice(args);
        assert_refused(&keyturn(&emulator, dir.path(), &full), &stream);
    }
    assert_eq!(count(&db), before, "nothing was written");
    // `audit` reads events by index, not whole streams: each is checked against its
    // own hash, and an edited one refuses the answer.
    let audit = keyturn(
        &emulator,
        dir.path(),
        &["--journal", journal, "audit", "--campaign", "q3"],
    );
    assert_eq!(
        (audit.code, audit.stdout.as_str()),
        (6, ""),
        "{}",
        audit.stderr
    );
    assert!(
        audit.stderr.contains(&format!(
            "the journal record q3/{stream} #1 was altered outside keyturn: its content no longer matches its hash"
        )),
        "{}",
        audit.stderr
    );

    let idle = format!("user/{}/idle", org.accounts[1].id);
    db.execute(
        "DELETE FROM events WHERE stream = ?1 AND sequence = 2",
        [&idle],
    )
    .unwrap();
    let run = keyturn(&emulator, dir.path(), &["--journal", journal, "verify"]);
    assert_eq!(run.code, 6);
    let lines = broken_lines(&run.stdout);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("BROKEN q3/{idle} #3: missing event(s)"))),
        "{lines:?}"
    );

    let other = format!("user/{}/app", org.accounts[1].id);
    db.execute_batch(&format!(
        "UPDATE events SET sequence = 100 WHERE stream = '{other}' AND sequence = 2;
         UPDATE events SET sequence = 2 WHERE stream = '{other}' AND sequence = 3;
         UPDATE events SET sequence = 3 WHERE stream = '{other}' AND sequence = 100;"
    ))
    .unwrap();
    let run = keyturn(&emulator, dir.path(), &["--journal", journal, "verify"]);
    let lines = broken_lines(&run.stdout);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("BROKEN q3/{other} #2: "))),
        "reordering is detected: {lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_detects_edits_deletions_and_reordering_in_dynamodb() {
    let journal = "dynamodb://keyturn-tamper";
    let (emulator, org, dir) = campaign(journal).await;
    let ddb = aws_sdk_dynamodb::Client::new(&emulator.sdk_config().await);
    let key = |stream: &str, seq: u64| {
        [
            ("pk".to_owned(), AttributeValue::S("C#q3".into())),
            (
                "sk".to_owned(),
                AttributeValue::S(format!("E#{stream}#{seq:020}")),
            ),
        ]
        .into_iter()
        .collect::<std::collections::HashMap<_, _>>()
    };
    let table = "keyturn-tamper";

    let app = format!("user/{}/app", org.accounts[0].id);
    ddb.update_item()
        .table_name(table)
        .set_key(Some(key(&app, 1)))
        .update_expression("SET #r = :r")
        .expression_attribute_names("#r", "run_id")
        .expression_attribute_values(":r", AttributeValue::S("someone-else".into()))
        .send()
        .await
        .unwrap();
    let run = keyturn(
        &emulator,
        dir.path(),
        &["--journal", journal, "verify", "q3"],
    );
    assert_eq!(run.code, 6, "{}", run.stdout);
    assert_eq!(
        broken_lines(&run.stdout),
        [format!(
            "BROKEN q3/{app} #1: modified: its content no longer matches its hash"
        )]
    );
    assert_refused(
        &keyturn(&emulator, dir.path(), &["--journal", journal, "run", "q3"]),
        &app,
    );

    let idle = format!("user/{}/idle", org.accounts[1].id);
    ddb.delete_item()
        .table_name(table)
        .set_key(Some(key(&idle, 2)))
        .send()
        .await
        .unwrap();
    let lines =
        broken_lines(&keyturn(&emulator, dir.path(), &["--journal", journal, "verify"]).stdout);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("BROKEN q3/{idle} #3: missing event(s)"))),
        "{lines:?}"
    );

    // Reorder: swap the contents of events 2 and 3 of a stream, keeping their keys.
    let other = format!("user/{}/app", org.accounts[1].id);
    let get = |seq| {
        ddb.get_item()
            .table_name(table)
            .set_key(Some(key(&other, seq)))
            .consistent_read(true)
            .send()
    };
    let two = get(2).await.unwrap().item.unwrap();
    let three = get(3).await.unwrap().item.unwrap();
    let moved = |mut item: std::collections::HashMap<String, AttributeValue>, seq: u64| {
        item.extend(key(&other, seq));
        item.insert("seq".into(), AttributeValue::N(seq.to_string()));
        item
    };
    ddb.put_item()
        .table_name(table)
        .set_item(Some(moved(three, 2)))
        .send()
        .await
        .unwrap();
    ddb.put_item()
        .table_name(table)
        .set_item(Some(moved(two, 3)))
        .send()
        .await
        .unwrap();
    let lines =
        broken_lines(&keyturn(&emulator, dir.path(), &["--journal", journal, "verify"]).stdout);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("BROKEN q3/{other} #2: "))),
        "reordering is detected: {lines:?}"
    );
}

/// The DynamoDB item of event `seq` of `stream` in campaign q3.
fn item_key(stream: &str, seq: u64) -> std::collections::HashMap<String, AttributeValue> {
    [
        ("pk".to_owned(), AttributeValue::S("C#q3".into())),
        (
            "sk".to_owned(),
            AttributeValue::S(format!("E#{stream}#{seq:020}")),
        ),
    ]
    .into_iter()
    .collect()
}

/// Sets one attribute of event `seq` of `stream` in the table, as someone with write
/// access to it would.
async fn edit(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    stream: &str,
    seq: u64,
    attribute: &str,
    value: &str,
) {
    ddb.update_item()
        .table_name(table)
        .set_key(Some(item_key(stream, seq)))
        .update_expression("SET #a = :v")
        .expression_attribute_names("#a", attribute)
        .expression_attribute_values(":v", AttributeValue::S(value.to_owned()))
        .send()
        .await
        .unwrap();
}

/// One character of the campaign record's payload changed in the table, so that it is no
/// longer JSON: every command that reads the campaign reports tampering (exit 6) and
/// names the record, never "cannot be read" (exit 5), and nothing is written.
#[tokio::test(flavor = "multi_thread")]
async fn an_edit_that_leaves_a_payload_undecodable_is_tampering_for_every_command() {
    let journal = "dynamodb://keyturn-undecodable";
    let table = "keyturn-undecodable";
    let (emulator, org, dir) = campaign(journal).await;
    let ddb = aws_sdk_dynamodb::Client::new(&emulator.sdk_config().await);
    let record = ddb
        .get_item()
        .table_name(table)
        .set_key(Some(item_key("campaign", 1)))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let payload = record["payload"].as_s().unwrap().clone();
    assert!(payload.starts_with('{'), "{payload}");
    edit(
        &ddb,
        table,
        "campaign",
        1,
        "payload",
        &payload.replacen('{', "(", 1),
    )
    .await;
    let items = || async {
        ddb.scan()
            .table_name(table)
            .select(aws_sdk_dynamodb::types::Select::Count)
            .send()
            .await
            .unwrap()
            .count
    };
    let before = items().await;

    let old_key = org.accounts[0].users[0].keys[0].access_key_id.clone();
    for args in [
        &["verify", "q3"][..],
        &["run", "q3"],
        &["run", "q3", "--watch"],
        &["status", "q3"],
        &["report", "q3", "--format", "json"],
        &["audit", "--campaign", "q3"],
        &["rollback", "q3", "--key", &old_key, "--reason", "test"],
    ] {
        let mut full = vec!["--journal", journal];
        full.extend_from_slice(args);
        let run = keyturn(&emulator, dir.path(), &full);
        assert_eq!(
            (run.code, run.stdout.as_str()),
            (6, ""),
            "{args:?}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains("q3/campaign #1")
                && run.stderr.contains("was altered outside keyturn")
                && run.stderr.contains("its payload is not valid JSON"),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert_eq!(items().await, before, "nothing was written");
}

/// `run --watch` reads the campaign again, its hash chains checked, before every pass: a
/// stream edited between two passes stops the watch with exit 6, and it acts no more.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_edited_between_two_passes_of_a_watch_stops_it_with_exit_6() {
    let journal = "dynamodb://keyturn-watch-tamper";
    let table = "keyturn-watch-tamper";
    let (emulator, org, dir) = campaign(journal).await;
    let ddb = aws_sdk_dynamodb::Client::new(&emulator.sdk_config().await);
    let (mut child, rx) = support::spawn_keyturn(
        &emulator,
        dir.path(),
        &["--journal", journal, "run", "q3", "--watch"],
    );
    // The first pass deactivates the keys whose quiet period is over; the watch then
    // waits for their two-second observation.
    let mut said = Vec::new();
    loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("the run reports it is watching: {said:#?}"));
        said.push(line.clone());
        if line.starts_with("watching: next check in") {
            break;
        }
    }
    let app = format!("user/{}/app", org.accounts[0].id);
    edit(&ddb, table, &app, 1, "run_id", "someone-else").await;

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(std::time::Instant::now() < deadline, "the watch went on");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    said.extend(rx.try_iter());
    assert_eq!(exit.code(), Some(6), "{said:#?}");
    assert!(
        said.iter().any(|l| l.contains(&format!(
            "the hash chain of stream q3/{app} is broken at sequence 1"
        ))),
        "{said:#?}"
    );
    // The observed keys were not deleted: the watch acted no more.
    let iam = aws_sdk_iam::Client::new(&member_config(&emulator, &org.accounts[0].id).await);
    let keys = iam
        .list_access_keys()
        .user_name("app")
        .send()
        .await
        .unwrap();
    assert_eq!(keys.access_key_metadata().len(), 2, "{said:#?}");
}
