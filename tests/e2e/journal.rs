//! `keyturn journal init` on both persistent backends: DynamoDB on the emulator and
//! SQLite; idempotent; a malformed location changes nothing.

mod support;

use keyturn_testbed::{Emulator, EmulatorOptions};
use support::{TempDir, keyturn};

#[tokio::test(flavor = "multi_thread")]
async fn dynamodb_init_creates_the_table_once() {
    let emulator = Emulator::start(EmulatorOptions::default());
    let dir = TempDir::new("journal-dynamodb");
    let args = ["--journal", "dynamodb://keyturn-journal", "journal", "init"];

    let first = keyturn(&emulator, dir.path(), &args);
    assert_eq!(first.code, 0, "stderr: {}", first.stderr);
    assert_eq!(
        first.stdout.trim(),
        "journal dynamodb://keyturn-journal: created"
    );

    let again = keyturn(&emulator, dir.path(), &args);
    assert_eq!(again.code, 0, "stderr: {}", again.stderr);
    assert!(
        again.stdout.contains("already initialised"),
        "{}",
        again.stdout
    );

    let ddb = aws_sdk_dynamodb::Client::new(&emulator.sdk_config().await);
    let table = ddb
        .describe_table()
        .table_name("keyturn-journal")
        .send()
        .await
        .expect("DescribeTable");
    let table = table.table().unwrap();
    let mut indexes: Vec<&str> = table
        .global_secondary_indexes()
        .iter()
        .filter_map(|i| i.index_name())
        .collect();
    indexes.sort_unstable();
    assert_eq!(indexes, ["by_account", "by_key_1", "by_key_2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_journal_comes_from_the_environment_and_sqlite_is_created_as_a_file() {
    let emulator = Emulator::start(EmulatorOptions::default());
    let dir = TempDir::new("journal-sqlite");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keyturn"));
    emulator.configure(&mut command);
    let output = command
        .args(["journal", "init"])
        .env("KEYTURN_JOURNAL", "sqlite://audit.db")
        .current_dir(dir.path())
        .output()
        .expect("run keyturn");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        dir.path().join("audit.db").is_file(),
        "the SQLite journal named by KEYTURN_JOURNAL exists"
    );
    assert_eq!(
        emulator.counters().await.total(),
        0,
        "SQLite needs no AWS call"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_journal_location_is_refused() {
    let emulator = Emulator::start(EmulatorOptions::default());
    let dir = TempDir::new("journal-bad");
    for location in [
        "postgres://x",
        "dynamodb://no spaces allowed",
        "dynamodb://",
    ] {
        let run = keyturn(
            &emulator,
            dir.path(),
            &["--journal", location, "journal", "init"],
        );
        assert_eq!(run.code, 2, "{location}: {}", run.stderr);
        assert!(
            run.stderr.starts_with("error: "),
            "{location}: {}",
            run.stderr
        );
        assert!(run.stdout.is_empty());
    }
    assert_eq!(
        emulator.counters().await.total(),
        0,
        "nothing was contacted"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing was created"
    );
}

/// The read-only commands never create a SQLite journal: a mistyped path is an error
/// (exit 5, the journal's code) that names the path, and leaves no file behind.
#[tokio::test(flavor = "multi_thread")]
async fn read_only_commands_refuse_a_sqlite_journal_that_does_not_exist() {
    let emulator = Emulator::start(EmulatorOptions::default());
    let dir = TempDir::new("journal-missing");
    for command in [
        &["status", "q3"][..],
        &["audit", "--campaign", "q3"],
        &["campaign", "list"],
        &["verify"],
    ] {
        let mut args = vec!["--journal", "sqlite://typo.db"];
        args.extend_from_slice(command);
        let run = keyturn(&emulator, dir.path(), &args);
        assert_eq!(run.code, 5, "{command:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("typo.db") && run.stderr.contains("no journal file"),
            "{command:?}: {}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{command:?}: {}", run.stdout);
        assert!(
            !dir.path().join("typo.db").exists(),
            "{command:?} created the file"
        );
    }
    assert_eq!(
        emulator.counters().await.total(),
        0,
        "nothing was contacted"
    );
    // Commands on a campaign identify the caller first, and then refuse the same way.
    for command in [
        &["run", "q3"][..],
        &[
            "rollback",
            "q3",
            "--key",
            "AKIAIOSFODNN7EXAMPLE",
            "--reason",
            "x",
        ],
        &["report", "q3"],
    ] {
        let mut args = vec!["--journal", "sqlite://typo.db"];
        args.extend_from_slice(command);
        let run = keyturn(&emulator, dir.path(), &args);
        assert_eq!(run.code, 5, "{command:?}: {}", run.stderr);
        assert!(run.stderr.contains("no journal file"), "{}", run.stderr);
        assert!(!dir.path().join("typo.db").exists(), "{command:?}");
    }
}
