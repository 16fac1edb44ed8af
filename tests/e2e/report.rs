//! `keyturn report`: the evidence report's numbers equal what the journal and IAM say,
//! and the HTML renders in headless Chromium (a screenshot is kept for review).

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use keyturn_testbed::seed::{AccountSpec, KeySpec, OrgSpec, UserSpec, member_config, seed};
use keyturn_testbed::{Emulator, EmulatorOptions};
use serde_json::Value;
use support::{TempDir, keyturn};

const POLICY: &str = "[scope]\nexclude_users = [\"breakglass-*\"]\n[rotation]\nallow_short_gates = true\nquiet_period = \"2s\"\nadoption_timeout = \"1h\"\nobservation_period = \"2s\"\n";

fn chromium() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("headless Chromium is needed for the report test: apt-get install chromium (.ci/run does)")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_report_matches_the_journal_and_iam_and_renders() {
    let emulator = Emulator::start(EmulatorOptions::default());
    let users = vec![
        UserSpec::new("app", vec![KeySpec::active(120, Some(1))]),
        UserSpec::new("idle", vec![KeySpec::active(200, None)]),
        UserSpec::new("old-inactive", vec![KeySpec::inactive(60, Some(30))]),
        UserSpec::new(
            "twins",
            vec![KeySpec::active(150, Some(1)), KeySpec::active(20, Some(1))],
        ),
        UserSpec::new("breakglass-root", vec![KeySpec::active(400, None)]),
        UserSpec::new("fresh", vec![KeySpec::active(5, Some(0))]),
    ];
    let spec = OrgSpec {
        management_users: vec![],
        accounts: vec![AccountSpec {
            name: "prod".into(),
            ou_path: vec![],
            users,
        }],
    };
    let org = seed(&emulator, &spec, Utc::now()).await;
    let account = org.accounts[0].id.clone();
    let dir = TempDir::new("report");
    let journal = "dynamodb://keyturn-report";
    let policy = dir.write("policy.toml", POLICY);
    for args in [
        vec!["journal", "init"],
        vec!["campaign", "start", "q3", "--policy", policy.as_str()],
        vec!["run", "q3"],
    ] {
        let mut full = vec!["--journal", journal];
        full.extend(args);
        let run = keyturn(&emulator, dir.path(), &full);
        assert_eq!(run.code, 0, "{full:?}: {}\n{}", run.stdout, run.stderr);
    }
    // The application switches to its new key; two more runs pass the gates.
    let sm = aws_sdk_secretsmanager::Client::new(&member_config(&emulator, &account).await);
    let secret: Value = serde_json::from_str(
        sm.get_secret_value()
            .secret_id("keyturn/app")
            .send()
            .await
            .unwrap()
            .secret_string()
            .unwrap(),
    )
    .unwrap();
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
        .unwrap();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let run = keyturn(&emulator, dir.path(), &["--journal", journal, "run", "q3"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
    }

    let report = keyturn(
        &emulator,
        dir.path(),
        &["--journal", journal, "report", "q3", "--format", "json"],
    );
    assert_eq!(report.code, 0, "{}", report.stderr);
    let report = report.json();
    let overall = &report["overall"];
    let status = keyturn(
        &emulator,
        dir.path(),
        &["--journal", journal, "status", "q3", "-o", "json"],
    )
    .json();
    let count = |state: &str| status["counts"][state].as_u64().unwrap();
    assert_eq!(
        overall["in_scope_at_start"],
        status["keys"].as_array().unwrap().len() as u64
    );
    assert_eq!(
        overall["rotated"].as_u64().unwrap() + overall["deleted_inactive"].as_u64().unwrap(),
        count("completed")
    );
    assert_eq!(
        (
            overall["rotated"].as_u64(),
            overall["retired"].as_u64(),
            overall["deleted_inactive"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(
        (overall["blocked"].as_u64(), overall["skipped"].as_u64()),
        (Some(count("blocked")), Some(count("skipped")))
    );
    assert_eq!((count("blocked"), count("skipped")), (2, 1), "{status:#}");

    // Ground truth: the Active keys in scope older than 90 days, read through the SDK.
    let iam = aws_sdk_iam::Client::new(&member_config(&emulator, &account).await);
    let mut old_active = Vec::new();
    for user in ["app", "idle", "old-inactive", "twins", "fresh"] {
        for key in iam
            .list_access_keys()
            .user_name(user)
            .send()
            .await
            .unwrap()
            .access_key_metadata()
        {
            let age = Utc::now().timestamp() - key.create_date().unwrap().secs();
            if key.status().unwrap().as_str() == "Active" && age > 90 * 86_400 {
                old_active.push(key.access_key_id().unwrap().to_owned());
            }
        }
    }
    let reported: Vec<&str> = report["non_compliant_now"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["access_key_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        reported, old_active,
        "non-compliant now = the old Active keys IAM still holds (the blocked twin)"
    );
    assert_eq!(report["controls"][0]["status"], "fail");
    assert_eq!(
        report["non_compliant_now"][0]["campaign_state"], "blocked",
        "each exception is explained"
    );
    assert_eq!(report["rotations"].as_array().unwrap().len(), 1);
    assert!(
        report["rotations"][0]["duration_seconds"].as_i64().unwrap() >= 4,
        "through both gates"
    );

    let csv = keyturn(
        &emulator,
        dir.path(),
        &["--journal", journal, "report", "q3", "--format", "csv"],
    );
    assert!(csv.stdout.starts_with("account_id,in_scope_at_start,rotated,retired,deleted_inactive,blocked,skipped,failed,in_progress,non_compliant_now\n"));
    assert!(
        csv.stdout.contains(&format!("{account},6,1,1,1,2,1,0,0,1")),
        "{}",
        csv.stdout
    );
    assert!(
        csv.stdout.contains("ALL,6,1,1,1,2,1,0,0,1"),
        "{}",
        csv.stdout
    );

    let html_path = dir.path().join("q3.html");
    let html = keyturn(
        &emulator,
        dir.path(),
        &[
            "--journal",
            journal,
            "report",
            "q3",
            "--format",
            "html",
            "--out",
            html_path.to_str().unwrap(),
        ],
    );
    assert_eq!(html.code, 0, "{}", html.stderr);
    let page = std::fs::read_to_string(&html_path).unwrap();
    assert!(
        !page.contains("http://") && !page.contains("https://") && !page.contains("<script src"),
        "self-contained: no fetches"
    );
    assert!(
        !page.contains(secret["SecretAccessKey"].as_str().unwrap()),
        "no secret in the report"
    );

    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-screenshot.png");
    let _ = std::fs::remove_file(&screenshot);
    let profile = dir.path().join("chromium-profile");
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ];
    let url = format!("file://{}", html_path.display());
    let dom = Command::new(chromium())
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", &url])
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("Access key rotation evidence: campaign q3")
            && dom.contains("id=\"ages-before\"")
            && dom.contains("id=\"progress\""),
        "the page renders with its charts"
    );
    let shot = Command::new(chromium())
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args([
            format!("--screenshot={}", screenshot.display()),
            "--window-size=1400,2000".into(),
            url,
        ])
        .output()
        .expect("run chromium");
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let png = std::fs::read(&screenshot).expect("a screenshot for review");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real picture: {} bytes",
        png.len()
    );
    eprintln!("report screenshot for review: {}", screenshot.display());
}
