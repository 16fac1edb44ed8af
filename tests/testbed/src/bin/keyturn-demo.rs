//! The demo driver behind `cargo xtask demo`: starts a fresh emulator, seeds a sample
//! organization through the real AWS SDK, and runs the keyturn binary against it.
//!
//! Usage: `keyturn-demo --keyturn PATH/TO/keyturn`

use std::path::PathBuf;
use std::process::Command;

use chrono::Utc;
use keyturn_testbed::seed::{sample_org, seed};
use keyturn_testbed::{Emulator, EmulatorOptions};

const ACCOUNTS: usize = 12;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let keyturn = match (args.next().as_deref(), args.next()) {
        (Some("--keyturn"), Some(path)) => PathBuf::from(path),
        _ => {
            eprintln!("usage: keyturn-demo --keyturn PATH");
            return std::process::ExitCode::from(2);
        }
    };

    step("Starting the local AWS emulator (moto, on loopback)");
    let emulator = Emulator::start(EmulatorOptions::default());
    println!("emulator at {}", emulator.endpoint_url());

    step(&format!(
        "Seeding an organization of {ACCOUNTS} member accounts through the AWS SDK"
    ));
    let org = seed(&emulator, &sample_org(ACCOUNTS), Utc::now()).await;
    let users: usize =
        org.accounts.iter().map(|a| a.users.len()).sum::<usize>() + org.management.users.len();
    let keys: usize = std::iter::once(&org.management)
        .chain(&org.accounts)
        .flat_map(|a| &a.users)
        .map(|u| u.keys.len())
        .sum();
    println!(
        "management account {} ({}), root {}",
        org.management.id, org.management.name, org.root_id
    );
    for (path, id) in &org.ous {
        let under = org
            .accounts
            .iter()
            .filter(|a| a.ou_path.join("/") == *path)
            .count();
        println!("  OU {path:<16} {id}  ({under} accounts directly below)");
    }
    println!(
        "{users} users, {keys} access keys: old keys in use, old unused keys, never-used keys,"
    );
    println!("Inactive keys, users with two keys, a breakglass user and a vendor-exempt user.");

    let dir = std::env::temp_dir().join(format!("keyturn-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the demo directory");
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[scope]\norganizational_units = [\"{}\"]\nexclude_users = [\"breakglass-*\"]\n",
            org.ou("workloads")
        ),
    )
    .expect("write the demo policy");

    emulator.reset_counters().await;
    let mut worst = 0;
    let runs: [(&str, Vec<String>); 2] = [
        (
            "keyturn inventory -o table   (every account, the exempt vendor user left out)",
            vec!["inventory".into(), "-o".into(), "table".into()],
        ),
        (
            "keyturn inventory --policy policy.toml -o csv   (only the workloads OU, recursively; breakglass-* excluded)",
            vec![
                "inventory".into(),
                "--policy".into(),
                policy.display().to_string(),
                "-o".into(),
                "csv".into(),
            ],
        ),
    ];
    for (title, args) in runs {
        step(title);
        let mut command = Command::new(&keyturn);
        emulator.configure(&mut command);
        let status = command
            .args(&args)
            .current_dir(&dir)
            .status()
            .expect("run keyturn");
        worst = worst.max(status.code().unwrap_or(1));
    }
    let _ = std::fs::remove_dir_all(&dir);

    let counters = emulator.counters().await;
    step("What it cost");
    println!(
        "keyturn made {} AWS API calls for both inventories of {} accounts: {} IAM, {} STS, {} Organizations",
        counters.total(),
        ACCOUNTS + 1,
        counters.by_service("iam"),
        counters.by_service("sts"),
        counters.by_service("organizations")
    );
    std::process::ExitCode::from(u8::try_from(worst).unwrap_or(1))
}

fn step(title: &str) {
    println!("\n==> {title}\n");
}
