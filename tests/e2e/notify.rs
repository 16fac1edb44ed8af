//! Notifications end to end: the keyturn binary against the emulator, publishing to a
//! real SNS topic of the emulator (delivered over an HTTP subscription to a receiver in
//! this test) and posting to a Slack-compatible webhook (the same receiver).
//!
//! Checked: what is sent and when (delivered, blocked, failed, adoption-timeout-approaching
//! exactly once across runs), to whom (the owner tag, else the account's email), that
//! no secret is in any message, that failing channels are journaled and never hold up a
//! rotation, and that a malformed `[notify]` section is refused before any AWS call.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use keyturn_testbed::seed::{KeySpec, SeededKey, SeededOrg, UserSpec, member_config};
use keyturn_testbed::{Emulator, EmulatorOptions, FaultRule};
use serde_json::Value;
use support::{Run, TempDir, keep_using, keyturn_env, seed_flat};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const HOOK_VAR: &str = "KEYTURN_E2E_WEBHOOK";

// ---------------------------------------------------------------------------------------
// A local HTTP receiver: the webhook, and the endpoint of the SNS topic's subscription.
// ---------------------------------------------------------------------------------------

/// One request received: its path and body.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    body: String,
}

/// An HTTP/1.1 server on loopback that records every POST and answers 200, or 500 for
/// paths starting with `/fail`.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let log = got.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut socket).await else {
                        return;
                    };
                    let status = if request.path.starts_with("/fail") {
                        "500 Internal Server Error"
                    } else {
                        "200 OK"
                    };
                    log.lock().unwrap().push(request);
                    let answer = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: 2\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nok"
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self { port, got }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn received(&self, prefix: &str) -> Vec<Received> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<Received> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
    let path = head.split_whitespace().nth(1)?.to_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buffer.len() < header_end + length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buffer[header_end..]).into_owned();
    Some(Received { path, body })
}

/// The kind of a webhook message (its context block says `keyturn · KIND`).
fn webhook_kind(body: &str) -> String {
    let json: Value = serde_json::from_str(body).expect("the webhook body is JSON");
    assert!(json["text"].is_string(), "Slack-compatible: {json:#}");
    assert_eq!(json["blocks"][0]["type"], "section", "{json:#}");
    json["blocks"][1]["elements"][0]["text"]
        .as_str()
        .and_then(|t| t.strip_prefix("keyturn · "))
        .unwrap_or_else(|| panic!("no kind in {json:#}"))
        .to_owned()
}

fn webhook_text(body: &str) -> String {
    let json: Value = serde_json::from_str(body).unwrap();
    json["text"].as_str().unwrap().to_owned()
}

/// An SNS delivery over HTTP: (kind from the subject, the message).
fn sns_message(body: &str) -> (String, String) {
    let json: Value = serde_json::from_str(body).expect("an SNS notification is JSON");
    assert_eq!(json["Type"], "Notification", "{json:#}");
    let subject = json["Subject"].as_str().unwrap_or_default();
    let kind = [
        ("new access key ready", "delivered"),
        ("key rotation blocked", "blocked"),
        ("key rotation failed", "failed"),
        (
            "old access key still in use",
            "adoption-timeout-approaching",
        ),
    ]
    .iter()
    .find(|(words, _)| subject.contains(words))
    .map(|(_, kind)| (*kind).to_owned())
    .unwrap_or_else(|| panic!("unknown subject {subject:?}"));
    (kind, json["Message"].as_str().unwrap().to_owned())
}

// ---------------------------------------------------------------------------------------
// A test bed: emulator, organization, SNS topic, working directory with a SQLite journal.
// ---------------------------------------------------------------------------------------

struct Bed {
    emulator: Emulator,
    org: SeededOrg,
    dir: TempDir,
    printed: Mutex<String>,
}

impl Bed {
    async fn new(name: &str, accounts: Vec<(&str, Vec<UserSpec>)>) -> Self {
        let emulator = Emulator::start(EmulatorOptions::default());
        let org = seed_flat(&emulator, accounts).await;
        Self {
            emulator,
            org,
            dir: TempDir::new(name),
            printed: Mutex::new(String::new()),
        }
    }

    /// An SNS topic in the runner's (management) account, delivering to `endpoint`.
    async fn topic(&self, name: &str, endpoint: &str) -> String {
        let sns = aws_sdk_sns::Client::new(&self.emulator.sdk_config().await);
        let arn = sns
            .create_topic()
            .name(name)
            .send()
            .await
            .expect("CreateTopic")
            .topic_arn()
            .unwrap()
            .to_owned();
        sns.subscribe()
            .topic_arn(&arn)
            .protocol("http")
            .endpoint(endpoint)
            .send()
            .await
            .expect("Subscribe");
        arn
    }

    fn kt(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut all = vec!["--journal", "sqlite://journal.db"];
        all.extend_from_slice(args);
        let run = keyturn_env(&self.emulator, self.dir.path(), &all, env);
        let mut printed = self.printed.lock().unwrap();
        printed.push_str(&run.stdout);
        printed.push_str(&run.stderr);
        run
    }

    fn start(&self, policy: &str) {
        let path = self.dir.write("policy.toml", policy);
        let run = self.kt(&["campaign", "start", "c1", "--policy", &path], &[]);
        assert_eq!(run.code, 0, "campaign start: {}", run.stderr);
    }

    fn run(&self, env: &[(&str, &str)]) -> String {
        let run = self.kt(&["run", "c1"], env);
        assert_eq!(run.code, 0, "run: {}\n{}", run.stdout, run.stderr);
        run.stdout
    }

    fn status(&self) -> Value {
        let run = self.kt(&["status", "c1", "-o", "json"], &[]);
        assert_eq!(run.code, 0, "status: {}", run.stderr);
        run.json()
    }

    fn entry(&self, old: &str) -> Value {
        self.status()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["old_access_key_id"] == old)
            .unwrap_or_else(|| panic!("no entry for {old}"))
            .clone()
    }

    fn account(&self, name: &str) -> String {
        self.org.account(name).id.clone()
    }

    fn seeded(&self, account: &str, user: &str, index: usize) -> SeededKey {
        self.org
            .account(account)
            .users
            .iter()
            .find(|u| u.name == user)
            .unwrap()
            .keys[index]
            .clone()
    }

    /// Every event of the journal: (type, payload).
    fn events(&self) -> Vec<(String, Value)> {
        let db = rusqlite::Connection::open_with_flags(
            self.dir.path().join("journal.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open the journal");
        let mut statement = db
            .prepare("SELECT event_type, payload FROM events ORDER BY rowid")
            .unwrap();
        statement
            .query_map([], |row| {
                let payload: String = row.get(1)?;
                Ok((row.get(0)?, serde_json::from_str(&payload).unwrap()))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// The notification events: (type, kind, channel, key, payload).
    fn notifications(&self) -> Vec<(String, String, String, String, Value)> {
        self.events()
            .into_iter()
            .filter(|(t, _)| t.starts_with("notification-"))
            .map(|(t, p)| {
                let field = |name: &str| p[name].as_str().unwrap_or_default().to_owned();
                (t, field("kind"), field("channel"), field("key"), p)
            })
            .collect()
    }

    fn journal_bytes(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("journal.db")
            {
                text.push_str(&String::from_utf8_lossy(&std::fs::read(path).unwrap()));
            }
        }
        text
    }

    /// The delivered secret of a user: (its ARN, the SecretAccessKey in it).
    async fn delivered(&self, account: &str, user: &str) -> (String, String, String) {
        let sm = aws_sdk_secretsmanager::Client::new(
            &member_config(&self.emulator, &self.account(account)).await,
        );
        let name = format!("keyturn/{user}");
        let value = sm
            .get_secret_value()
            .secret_id(&name)
            .send()
            .await
            .expect("GetSecretValue");
        let doc: Value = serde_json::from_str(value.secret_string().unwrap()).unwrap();
        (
            value.arn().unwrap().to_owned(),
            doc["AccessKeyId"].as_str().unwrap().to_owned(),
            doc["SecretAccessKey"].as_str().unwrap().to_owned(),
        )
    }
}

fn policy(rotation: &str, notify: &str) -> String {
    format!("[rotation]\nallow_short_gates = true\n{rotation}\n[notify]\n{notify}\n")
}

fn time(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .with_timezone(&Utc)
}

async fn sleep_until(at: DateTime<Utc>, margin: Duration) {
    let wait = (at - Utc::now()).to_std().unwrap_or_default() + margin;
    tokio::time::sleep(wait).await;
}

fn count<'a>(kinds: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for kind in kinds {
        *counts.entry(kind.to_owned()).or_default() += 1;
    }
    counts
}

// ---------------------------------------------------------------------------------------
// Scenarios.
// ---------------------------------------------------------------------------------------

/// A campaign with a delivered rotation whose old key stays in use, a user blocked with
/// two keys in use, and a key whose creation keeps failing: each owner is told on SNS
/// and on the webhook, exactly once per event (the adoption warning once over several
/// runs), with the owner tag or else the account's email, and never a secret.
#[tokio::test(flavor = "multi_thread")]
async fn owners_are_told_on_sns_and_the_webhook_once_per_event_and_never_a_secret() {
    let bed = Bed::new(
        "notify-all",
        vec![
            (
                "app",
                vec![
                    UserSpec::new("svc", vec![KeySpec::active(120, Some(1))])
                        .tag("owner", "alice@example.com"),
                    UserSpec::new(
                        "dual",
                        vec![KeySpec::active(120, Some(1)), KeySpec::active(30, Some(1))],
                    ),
                ],
            ),
            (
                "broken",
                vec![UserSpec::new("app", vec![KeySpec::active(120, Some(1))])],
            ),
        ],
    )
    .await;
    let receiver = Receiver::start().await;
    let topic = bed.topic("key-owners", &receiver.url("/sns")).await;
    let hook = receiver.url("/hook/T0001/B0002/s3cr3t-webhook-token");
    let env = [(HOOK_VAR, hook.as_str())];
    // Deadline 90s after delivery (well after the five runs below), warning from 85s
    // before it (5s after delivery).
    bed.start(&policy(
        "quiet_period = \"2s\"\nadoption_timeout = \"90s\"\nobservation_period = \"2s\"",
        &format!(
            "sns_topic_arn = \"{topic}\"\nwebhook_url_env = \"{HOOK_VAR}\"\nwarn_before_adoption_timeout = \"85s\""
        ),
    ));
    let broken = bed.account("broken");
    bed.emulator
        .set_faults(&[FaultRule::error(500)
            .action("CreateAccessKey")
            .account(&broken)])
        .await;
    let svc_old = bed.seeded("app", "svc", 0);
    let broken_old = bed.seeded("broken", "app", 0).access_key_id;

    let out = bed.run(&env);
    assert!(
        out.contains("notified the owner (delivered) via sns")
            && out.contains("notified the owner (delivered) via webhook")
            && out.contains("notified the owner (blocked) via webhook"),
        "{out}"
    );
    let (secret_arn, new_key, secret) = bed.delivered("app", "svc").await;
    // The application keeps using the old key: it is never deactivated.
    let app = keep_using(&bed.emulator, &svc_old).await;

    // Five runs in all: the broken key fails for good at the fifth; meanwhile the
    // adoption warning falls due (from 5s after delivery) and is sent once.
    for run in 2..=5 {
        let entry = bed.entry(&broken_old);
        let next = time(entry["next_check_at"].as_str().expect("a retry is due"));
        sleep_until(next, Duration::from_millis(1200)).await;
        let out = bed.run(&env);
        if run == 5 {
            assert!(out.contains("notified the owner (failed) via sns"), "{out}");
        }
    }
    app.abort();
    assert_eq!(bed.entry(&broken_old)["state"], "failed");
    assert_eq!(
        bed.entry(&svc_old.access_key_id)["state"],
        "awaiting-adoption"
    );

    // The same five notifications (the blocked user has two keys) on both channels.
    let expected = count([
        "delivered",
        "blocked",
        "blocked",
        "failed",
        "adoption-timeout-approaching",
    ]);
    let sns: Vec<(String, String)> = receiver
        .received("/sns")
        .iter()
        .map(|r| sns_message(&r.body))
        .collect();
    let hooked: Vec<(String, String)> = receiver
        .received("/hook/")
        .iter()
        .map(|r| (webhook_kind(&r.body), webhook_text(&r.body)))
        .collect();
    assert_eq!(
        count(sns.iter().map(|(k, _)| k.as_str())),
        expected,
        "{sns:#?}"
    );
    assert_eq!(
        count(hooked.iter().map(|(k, _)| k.as_str())),
        expected,
        "{hooked:#?}"
    );

    for (kind, text) in sns.iter().chain(&hooked) {
        match kind.as_str() {
            "delivered" => {
                // Where to fetch it, never what it is.
                for words in [
                    secret_arn.as_str(),
                    new_key.as_str(),
                    svc_old.access_key_id.as_str(),
                    "alice@example.com",
                ] {
                    assert!(text.contains(words), "{words:?} missing: {text}");
                }
            }
            "adoption-timeout-approaching" => {
                assert!(text.contains(&svc_old.access_key_id), "{text}");
                assert!(text.contains("alice@example.com"), "{text}");
            }
            "blocked" => {
                assert!(text.contains("two Active keys in use"), "{text}");
                // No owner tag: the account's email from Organizations.
                assert!(text.contains("app@example.com"), "{text}");
            }
            "failed" => {
                assert!(text.contains(&broken_old), "{text}");
                assert!(text.contains("InternalFailure"), "{text}");
                assert!(text.contains("broken@example.com"), "{text}");
            }
            other => panic!("unexpected kind {other}"),
        }
    }

    // No secret anywhere: not in a message, not printed, not in the journal; and the
    // webhook's URL (read from the environment) is neither printed nor journaled.
    let mut secrets = vec![secret.clone()];
    for (account, user, keys) in [("app", "svc", 1), ("app", "dual", 2), ("broken", "app", 1)] {
        for i in 0..keys {
            secrets.push(bed.seeded(account, user, i).secret_access_key);
        }
    }
    let printed = bed.printed.lock().unwrap().clone();
    let journal = bed.journal_bytes();
    for secret in &secrets {
        assert!(secret.len() >= 20);
        for r in receiver.all() {
            assert!(!r.body.contains(secret.as_str()), "a secret in {}", r.path);
        }
        assert!(!printed.contains(secret.as_str()), "a secret was printed");
        assert!(
            !journal.contains(secret.as_str()),
            "a secret is in the journal"
        );
    }
    assert!(
        !printed.contains("s3cr3t-webhook-token"),
        "the webhook URL was printed"
    );
    assert!(
        !journal.contains("s3cr3t-webhook-token"),
        "the webhook URL was journaled"
    );

    // Journaled: one notification-sent per message and channel, none failed; the owner
    // and the replacement recorded.
    let notes = bed.notifications();
    assert!(
        notes.iter().all(|(t, ..)| t == "notification-sent"),
        "{notes:#?}"
    );
    for channel in ["sns", "webhook"] {
        let kinds = notes
            .iter()
            .filter(|(_, _, c, ..)| c == channel)
            .map(|(_, k, ..)| k.as_str());
        assert_eq!(count(kinds), expected, "{channel}");
    }
    let delivered = notes
        .iter()
        .find(|(_, k, c, ..)| k == "delivered" && c == "sns")
        .unwrap();
    assert_eq!(delivered.3, svc_old.access_key_id);
    assert_eq!(delivered.4["owner"], "alice@example.com");
    assert_eq!(delivered.4["new_key"], new_key.as_str());
    assert!(delivered.4["message_id"].is_string(), "{:#}", delivered.4);
}

/// An SNS topic that does not exist and a webhook that answers 500: the rotation goes
/// through every gate all the same, and each failure is journaled with its code.
#[tokio::test(flavor = "multi_thread")]
async fn failing_channels_are_journaled_and_never_hold_up_the_rotation() {
    let bed = Bed::new(
        "notify-failing",
        vec![(
            "app",
            vec![UserSpec::new("svc", vec![KeySpec::active(120, Some(1))])],
        )],
    )
    .await;
    let receiver = Receiver::start().await;
    let hook = receiver.url("/fail/s3cr3t-path");
    let env = [(HOOK_VAR, hook.as_str())];
    bed.start(&policy(
        "quiet_period = \"2s\"\nadoption_timeout = \"1h\"\nobservation_period = \"2s\"",
        &format!(
            "sns_topic_arn = \"arn:aws:sns:us-east-1:123456789012:nobody-listens\"\nwebhook_url_env = \"{HOOK_VAR}\"\non = [\"delivered\"]\nwarn_before_adoption_timeout = \"10m\""
        ),
    ));
    let old = bed.seeded("app", "svc", 0).access_key_id;

    let out = bed.run(&env);
    assert!(out.contains("verified"), "{out}");
    assert!(!out.contains("notified the owner"), "{out}");
    assert!(
        out.contains("notifying the owner (delivered) via webhook failed with WebhookStatus500")
            && out.contains("notifying the owner (delivered) via sns failed with NotFound"),
        "{out}"
    );
    assert_eq!(bed.entry(&old)["state"], "awaiting-adoption");
    assert_eq!(
        receiver.received("/fail").len(),
        3,
        "a 5xx is tried three times within the run"
    );
    let notes = bed.notifications();
    let failed: Vec<(String, String, u64)> = notes
        .iter()
        .map(|(t, _, c, _, p)| {
            assert_eq!(t, "notification-failed", "{p:#}");
            assert_eq!(p["kind"], "delivered");
            (
                c.clone(),
                p["error_code"].as_str().unwrap().to_owned(),
                p["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        failed,
        [
            ("sns".to_owned(), "NotFound".to_owned(), 1),
            ("webhook".to_owned(), "WebhookStatus500".to_owned(), 1),
        ]
    );

    // The old key is not used: deactivated after the quiet period, deleted after the
    // observation period, notifications or not.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    bed.run(&env);
    assert_eq!(bed.entry(&old)["state"], "observing");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    bed.run(&env);
    assert_eq!(bed.entry(&old)["state"], "completed");
    let printed = bed.printed.lock().unwrap().clone();
    assert!(
        !printed.contains("s3cr3t-path"),
        "the webhook URL was printed"
    );
    assert!(!bed.journal_bytes().contains("s3cr3t-path"));
}

/// A webhook nobody listens on: the blocked keys' notifications are tried once per run,
/// three times in all, each failure journaled as WebhookUnreachable; the keys stay
/// blocked and untouched.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_webhook_is_tried_on_three_runs_then_left() {
    let bed = Bed::new(
        "notify-unreachable",
        vec![(
            "app",
            vec![UserSpec::new(
                "dual",
                vec![KeySpec::active(120, Some(1)), KeySpec::active(30, Some(1))],
            )],
        )],
    )
    .await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    bed.start(&policy(
        "quiet_period = \"2s\"\nadoption_timeout = \"1h\"",
        &format!(
            "webhook_url = \"http://127.0.0.1:{closed}/hook/s3cr3t-path\"\non = [\"blocked\"]\nwarn_before_adoption_timeout = \"10m\""
        ),
    ));
    let keys = [
        bed.seeded("app", "dual", 0).access_key_id,
        bed.seeded("app", "dual", 1).access_key_id,
    ];
    for run in 1..=4u64 {
        let run_out = bed.kt(&["run", "c1"], &[]);
        assert_eq!(run_out.code, 0, "{}", run_out.stderr);
        assert!(
            !run_out.stderr.contains("s3cr3t-path"),
            "{}",
            run_out.stderr
        );
        let notes = bed.notifications();
        let expected = 2 * run.min(3) as usize;
        assert_eq!(notes.len(), expected, "after run {run}: {notes:#?}");
        for (t, kind, channel, key, p) in &notes {
            assert_eq!(
                (t.as_str(), kind.as_str(), channel.as_str()),
                ("notification-failed", "blocked", "webhook")
            );
            assert!(keys.contains(key));
            assert_eq!(p["error_code"], "WebhookUnreachable");
        }
    }
    for key in &keys {
        let attempts: Vec<u64> = bed
            .notifications()
            .iter()
            .filter(|n| &n.3 == key)
            .map(|n| n.4["attempt"].as_u64().unwrap())
            .collect();
        assert_eq!(attempts, [1, 2, 3]);
        assert_eq!(bed.entry(key)["state"], "blocked");
        // `keyturn audit --key` lists them as failed, with their code.
        let audit = bed.kt(&["audit", "--key", key, "-o", "json"], &[]);
        assert_eq!(audit.code, 0, "{}", audit.stderr);
        let rows: Vec<Value> = audit.json().as_array().unwrap().clone();
        let failed: Vec<&Value> = rows
            .iter()
            .filter(|r| r["event_type"] == "notification-failed")
            .collect();
        assert_eq!(failed.len(), 3, "{rows:#?}");
        for row in failed {
            assert_eq!(row["outcome"], "failed", "{row:#}");
            assert_eq!(row["error_code"], "WebhookUnreachable", "{row:#}");
        }
    }
}

/// A malformed `[notify]` section is refused with exit 2, its file, line and field, by
/// `plan` and `campaign start`, before any AWS call; a webhook URL variable that is not
/// set refuses `run` (exit 2) before any IAM or SNS call and records nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_notify_section_exits_2_and_touches_nothing() {
    let bed = Bed::new(
        "notify-bad",
        vec![(
            "app",
            vec![UserSpec::new("svc", vec![KeySpec::active(120, Some(1))])],
        )],
    )
    .await;
    let cases = [
        (
            "[notify]\nsns_topic_arn = \"arn:aws:sns:us-east-1:1234:t\"\n",
            ":2",
            "notify.sns_topic_arn",
        ),
        (
            "[notify]\nwebhook_url = \"ftp://hooks.example.com/s3cr3t\"\n",
            ":2",
            "notify.webhook_url",
        ),
        (
            "[rotation]\nadoption_timeout = \"10d\"\n\n[notify]\nwebhook_url_env = \"H\"\nwarn_before_adoption_timeout = \"12d\"\n",
            ":6",
            "notify.warn_before_adoption_timeout",
        ),
        ("[notify]\nowner_tag = \"team\"\n", ":1", "notify"),
        (
            "[notify]\nwebhook_url_env = \"H\"\non = [\"delivered\", \"rotated\"]\n",
            ":3",
            "notify.on",
        ),
    ];
    bed.emulator.reset_counters().await;
    for (text, line, field) in cases {
        let path = bed.dir.write("bad.toml", text);
        for args in [
            vec!["plan", "--policy", path.as_str()],
            vec!["campaign", "start", "c1", "--policy", path.as_str()],
        ] {
            let run = bed.kt(&args, &[]);
            assert_eq!(run.code, 2, "{args:?} {text:?}: {}", run.stderr);
            assert!(
                run.stderr.contains(&format!("bad.toml{line}")) && run.stderr.contains(field),
                "{text:?}: {}",
                run.stderr
            );
            assert!(!run.stderr.contains("s3cr3t"), "{}", run.stderr);
        }
    }
    assert_eq!(bed.emulator.counters().await.total(), 0, "no AWS call");
    assert!(!bed.dir.path().join("journal.db").exists() || bed.events().is_empty());

    bed.start(&policy(
        "quiet_period = \"2s\"",
        "webhook_url_env = \"KEYTURN_E2E_UNSET_WEBHOOK\"\nwarn_before_adoption_timeout = \"1d\"",
    ));
    let before = bed.events().len();
    bed.emulator.reset_counters().await;
    let run = bed.kt(&["run", "c1"], &[]);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("KEYTURN_E2E_UNSET_WEBHOOK"),
        "{}",
        run.stderr
    );
    let counters = bed.emulator.counters().await;
    assert_eq!(counters.by_service("iam"), 0, "{counters:?}");
    assert_eq!(counters.by_service("sns"), 0, "{counters:?}");
    assert_eq!(bed.events().len(), before, "nothing recorded");
}
