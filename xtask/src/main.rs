//! `cargo xtask …`: project automation. Only `completions` and `man` use a product crate
//! (`keyturn-cli`'s clap command).
//!
//! - `cargo xtask test`     — creates the emulator's Python venv if needed, then runs every test.
//! - `cargo xtask demo`     — seeds a sample organization on the emulator and runs keyturn on it.
//! - `cargo xtask emulator` — runs the emulator in the foreground for manual use.
//! - `cargo xtask venv`     — only creates (or refreshes) the emulator's venv.
//! - `cargo xtask bench`    — keyturn against Cloud Custodian on a seeded organization (docs/benchmarks.md).
//! - `cargo xtask sim`      — the deterministic simulator's seeds (docs/simulation.md).
//! - `cargo xtask completions`, `cargo xtask man` — shell completions and man pages (`assets.rs`).
//! - `cargo xtask deploy-lint` — cfn-lint and checkov on the deployment templates (`deploy.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

mod assets;
mod deploy;
#[cfg(test)]
mod size;
#[cfg(test)]
mod tidy;

const USAGE: &str = "usage: cargo xtask <test|demo|emulator|venv|bench|sim|completions|man|deploy-lint> [args…]

  test [CARGO TEST ARGS…]  create the emulator venv if missing, run the emulator's self-test, lint the
                           deployment templates and run every Rust test (keyturn built with its failpoints,
                           for the crash tests)
  demo                     seed a sample organization on a fresh emulator and run keyturn on it
  emulator [--port N] [--serial]
                           run the emulator in the foreground (Ctrl-C stops it)
  venv                     create or refresh target/emulator-venv from tests/emulator/requirements.txt
  bench [--accounts N] [--runs K] [--quick] [--no-latency] [--no-peer] [--sweep P,P,…]
                           benchmark keyturn (release) against Cloud Custodian on a seeded organization
                           (default 100 accounts, 3 runs; --accounts 1000 for the large variant; --quick:
                           10 accounts, 1 run, no latency variant; --no-peer: keyturn only; --sweep: the
                           C7N_ORG_PARALLEL settings tried besides the default) and write docs/benchmarks.md
  sim [--seeds N] [--from K] | --seed S [--trace]
                           run the deterministic simulator (release build) on N seeds from K (default 100
                           from 1), or replay seed S and print its trace (docs/simulation.md)
  completions [--out DIR]  write keyturn's shell completions (bash, elvish, fish, powershell, zsh)
                           to DIR (default target/assets/completions)
  man [--out DIR]          write one man page per keyturn command to DIR (default target/assets/man)
  deploy-lint              cfn-lint and checkov on deploy/*.yaml (venv target/deploy-venv from
                           deploy/requirements.txt)";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let root = workspace_root();
    match command.as_str() {
        "test" => test(&root, &rest),
        "demo" => demo(&root),
        "emulator" => emulator(&root, &rest),
        "venv" => venv(&root).map(drop),
        "bench" => bench(&root, &rest),
        "sim" => sim(&root, &rest),
        "completions" => assets::completions(&root, &rest, USAGE),
        "man" => assets::man(&root, &rest, USAGE),
        "deploy-lint" => deploy::lint(&root),
        "" | "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown xtask command {other:?}\n\n{USAGE}"),
    }
}

/// The workspace root: the parent of this crate's directory.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs a command, failing with its name when it fails.
fn run(command: &mut Command) -> Result<()> {
    let shown = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}

/// Creates `target/emulator-venv` from the pinned requirements, or refreshes it when the
/// requirements changed since it was made. Returns the venv's Python.
fn venv(root: &Path) -> Result<PathBuf> {
    let venv = python_venv(
        root,
        "target/emulator-venv",
        "tests/emulator/requirements.txt",
        "the emulator venv",
    )?;
    Ok(venv.join("bin/python"))
}

/// Creates the venv `dir` from the pinned `requirements` file, or refreshes it when the
/// requirements changed since it was made (a stamp file records them). Returns its path.
fn python_venv(root: &Path, dir: &str, requirements: &str, what: &str) -> Result<PathBuf> {
    let venv = root.join(dir);
    let python = venv.join("bin/python");
    let requirements = root.join(requirements);
    let wanted = std::fs::read_to_string(&requirements)
        .with_context(|| format!("cannot read {}", requirements.display()))?;
    let stamp = venv.join("keyturn-requirements.txt");
    if python.exists() && std::fs::read_to_string(&stamp).is_ok_and(|had| had == wanted) {
        return Ok(venv);
    }
    eprintln!("xtask: creating {what} in {} (once)", venv.display());
    let system_python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    run(Command::new(&system_python)
        .args(["-m", "venv", "--clear"])
        .arg(&venv))?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements))?;
    std::fs::write(&stamp, wanted)?;
    Ok(venv)
}

fn test(root: &Path, cargo_args: &[String]) -> Result<()> {
    let python = venv(root)?;
    eprintln!("xtask: the emulator's self-test");
    run(Command::new(&python)
        .arg(root.join("tests/emulator/test_server.py"))
        .current_dir(root))?;
    deploy::lint(root)?;
    ensure_chromium()?;
    // With the failpoints compiled into the keyturn binary the tests run, so that the
    // crash tests (tests/e2e/crash.rs) can kill it at every step boundary; a plain
    // `cargo build` leaves them out.
    eprintln!("xtask: every Rust test of the workspace (keyturn built with its failpoints)");
    run(cargo()
        .current_dir(root)
        .env("KEYTURN_EMULATOR_PYTHON", &python)
        .args([
            "test",
            "--workspace",
            "--all-targets",
            "--locked",
            "--features",
            "keyturn-cli/failpoints",
        ])
        .args(cargo_args))?;
    // The binary of the test build just made (its hot paths are optimised in the dev
    // profile, Cargo.toml): CI builds the workspace once, not a second time in release.
    eprintln!("xtask: the simulator, {SIM_SEEDS} seeds");
    run(Command::new(target_dir(root).join("debug/keyturn-sim"))
        .current_dir(root)
        .args(["--seeds", &SIM_SEEDS.to_string()]))
}

/// The evidence report's test renders the HTML in headless Chromium (Debian's
/// `chromium` package). Installs it when it is missing and this is root (as on CI);
/// otherwise says how.
fn ensure_chromium() -> Result<()> {
    if Path::new("/usr/bin/chromium").exists() {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        bail!(
            "the report test needs headless Chromium: run `sudo apt-get install chromium`, then `cargo xtask test` again"
        );
    }
    eprintln!("xtask: installing Debian's chromium for the report test (once)");
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "chromium",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, or the workspace's `target/`.
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// How many seeds `cargo xtask test` runs through the simulator.
const SIM_SEEDS: u32 = 2_000;

/// `cargo xtask sim`: builds the simulator in release (a seed runs 90 virtual days of a
/// campaign; debug code is ten times slower) and passes the arguments on.
fn sim(root: &Path, args: &[String]) -> Result<()> {
    run(cargo()
        .current_dir(root)
        .args([
            "run",
            "--release",
            "--locked",
            "--quiet",
            "-p",
            "keyturn-sim",
            "--",
        ])
        .args(args))
}

fn emulator(root: &Path, args: &[String]) -> Result<()> {
    let python = venv(root)?;
    let mut port = "4566".to_owned();
    let mut serial = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().context("--port needs a number")?.clone(),
            "--serial" => serial = true,
            other => bail!("unknown emulator option {other:?}\n\n{USAGE}"),
        }
    }
    eprintln!("xtask: starting the emulator; when it is ready, in another shell:");
    eprintln!(
        "  export AWS_ENDPOINT_URL=http://127.0.0.1:{port} AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1"
    );
    let mut command = Command::new(&python);
    command
        .arg(root.join("tests/emulator/server.py"))
        .args(["--port", &port]);
    if serial {
        command.arg("--serial");
    }
    run(&mut command)
}

fn demo(root: &Path) -> Result<()> {
    let python = venv(root)?;
    eprintln!("xtask: building keyturn and the demo driver");
    run(cargo().current_dir(root).args([
        "build",
        "--locked",
        "--quiet",
        "-p",
        "keyturn-cli",
        "-p",
        "keyturn-testbed",
        "--bins",
    ]))?;
    let bin = target_dir(root).join("debug");
    run(Command::new(bin.join("keyturn-demo"))
        .current_dir(root)
        .env("KEYTURN_EMULATOR_PYTHON", &python)
        .arg("--keyturn")
        .arg(bin.join("keyturn")))
}

/// Creates `target/bench-venv` (Cloud Custodian, the benchmark's peer) from
/// `tests/bench/requirements.txt`, or refreshes it when the requirements changed. Kept
/// apart from the emulator's venv: c7n brings its own boto3. Returns its `c7n-org`.
fn bench_venv(root: &Path) -> Result<PathBuf> {
    let venv = python_venv(
        root,
        "target/bench-venv",
        "tests/bench/requirements.txt",
        "the benchmark's venv (Cloud Custodian)",
    )?;
    Ok(venv.join("bin/c7n-org"))
}

/// `cargo xtask bench`: builds keyturn and the driver in release and runs
/// `keyturn-bench`, which writes its section of docs/benchmarks.md (a quick run writes
/// target/bench/quick.md instead).
fn bench(root: &Path, args: &[String]) -> Result<()> {
    let mut passed: Vec<String> = Vec::new();
    let mut quick = false;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--accounts" | "--runs" | "--sweep" => {
                let value = rest
                    .next()
                    .with_context(|| format!("{arg} needs a value"))?;
                passed.extend([arg.clone(), value.clone()]);
            }
            "--quick" => {
                quick = true;
                passed.push(arg.clone());
            }
            "--no-latency" | "--no-peer" => passed.push(arg.clone()),
            other => bail!("unknown bench option {other:?}\n\n{USAGE}"),
        }
    }
    let python = venv(root)?;
    let c7n_org = bench_venv(root)?;
    eprintln!(
        "xtask: building keyturn and the benchmark driver in release (minutes, the first time)"
    );
    run(cargo().current_dir(root).args([
        "build",
        "--release",
        "--locked",
        "--quiet",
        "-p",
        "keyturn-cli",
        "-p",
        "keyturn-testbed",
        "--bins",
    ]))?;
    let target = target_dir(root);
    let bin = target.join("release");
    let write = if quick {
        target.join("bench/quick.md")
    } else {
        root.join("docs/benchmarks.md")
    };
    let command = std::iter::once("cargo xtask bench".to_owned())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    run(Command::new(bin.join("keyturn-bench"))
        .current_dir(root)
        .env("KEYTURN_EMULATOR_PYTHON", &python)
        .arg("--keyturn")
        .arg(bin.join("keyturn"))
        .arg("--c7n-org")
        .arg(c7n_org)
        .args(&passed)
        .arg("--write")
        .arg(write)
        .arg("--command")
        .arg(command))
}
