//! The benchmark driver behind `cargo xtask bench`: keyturn against Cloud Custodian on
//! the same seeded organization, in the same run, on the local emulator.
//!
//! It starts an emulator, seeds [`bench_org`] (five users and 7.5 keys an account)
//! through the AWS SDK, and measures, each as the median of `--runs` runs:
//!
//! - `keyturn inventory` and `keyturn plan`, against `c7n-org run` with an `iam-user`
//!   policy whose `access-key` filter matches Active keys older than 90 days
//!   (report-only), at c7n-org's default `C7N_ORG_PARALLEL` and at the best of a sweep;
//! - `keyturn run` of a campaign whose policy only retires unused keys (deactivation
//!   only: the observation period is years), on a DynamoDB journal on the emulator and
//!   on SQLite, against the same c7n policy with `remove-keys` (`disable: true`,
//!   `age: 90`). Both act on the same keys;
//! - AWS calls per account and journal writes per retired key, from the emulator's
//!   request counters; peak RSS and CPU time of each measured process (GNU
//!   `/usr/bin/time -v` when present, else `VmHWM` polled from `/proc`); the emulator's
//!   own CPU time during each run, to show when it is the bottleneck;
//! - the same with 50 ms of latency added to every AWS call, and keyturn's wall time
//!   against the model `calls × latency ÷ concurrency`.
//!
//! Every measured run gets a fresh emulator and organization: moto's state grows with
//! use (it looks assumed-role credentials up in a list, and DynamoDB requests slow down
//! as a table grows), so no run inherits another's, and every run starts from the same
//! keys. Runs are interleaved (run 1 of everything, then run 2, …) so that other load on
//! the machine spreads over both tools. Every run's output is checked (keys listed, keys
//! planned, keys deactivated, policy matches), so a wrong result fails the benchmark
//! instead of timing it. The results go to stdout and, with `--write FILE`, into a
//! section of FILE (replaced on the next run of the same size, the rest of the file
//! kept).
//!
//! Usage: `keyturn-bench --keyturn PATH --c7n-org PATH [--accounts N] [--runs K]
//! [--quick] [--no-latency] [--no-peer] [--sweep P,P,…] [--write FILE] [--command TEXT]`

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use keyturn_testbed::seed::{SeededOrg, bench_org, seed};
use keyturn_testbed::{
    Counters, ENV_TO_REMOVE, Emulator, EmulatorOptions, FaultRule, MANAGEMENT_ACCOUNT_ID,
};
use serde_json::Value;

/// The journal of the retirement campaigns: a DynamoDB table on the same emulator.
const JOURNAL: &str = "dynamodb://keyturn-bench";
/// The same on SQLite, in the working directory: the retirement without the journal's
/// requests to the emulator, to show their share.
const SQLITE_JOURNAL: &str = "sqlite://journal.db";
/// The latency added to every AWS call in the latency variant, to model real AWS.
const LATENCY_MS: u64 = 50;
/// keyturn's default `--concurrency` (accounts at once), which the benchmark uses.
const KEYTURN_CONCURRENCY: u64 = 16;
/// The age beyond which Custodian's policy matches a key, in days.
const AGE_DAYS: i64 = 90;
/// The c7n policy names (they appear in c7n-org's resource counts).
const C7N_REPORT: &str = "old-active-keys";
const C7N_REMOVE: &str = "disable-old-active-keys";
/// The IAM user resource and its access-key filter: Active keys older than 90 days.
const C7N_FILTERS: &str = "    resource: iam-user
    filters:
      - type: access-key
        key: Status
        value: Active
      - type: access-key
        match-operator: and
        key: CreateDate
        value_type: age
        value: 90
        op: greater-than
";
/// The C7N_ORG_PARALLEL settings tried besides the default, to find its best.
const SWEEP: &[usize] = &[1, 2, 4, 8, 16, 32];
const QUICK_SWEEP: &[usize] = &[2];
/// keyturn's policy: every member account (the management account has no users and
/// Custodian's accounts file lists only members), keys unused for 45 days are retired,
/// nothing is old enough to rotate, and a deactivated key is observed for years, so a
/// run only deactivates.
const KEYTURN_POLICY: &str = r#"[scope]
exclude_accounts = ["123456789012"]

[rotation]
max_key_age = "3650d"
unused_after = "45d"
observation_period = "3650d"
"#;

#[tokio::main]
async fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let dir = std::env::temp_dir().join(format!("keyturn-bench-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return ExitCode::from(1);
    }
    let started = Instant::now();
    let outcome = bench(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    match outcome {
        Ok(()) => {
            eprintln!(
                "[bench] done in {:.0} s",
                started.elapsed().as_secs_f64().round()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nBENCHMARK FAILED: {e}");
            ExitCode::from(1)
        }
    }
}

const USAGE: &str = "usage: keyturn-bench --keyturn PATH --c7n-org PATH [--accounts N] [--runs K] \
[--quick] [--no-latency] [--no-peer] [--sweep P,P,…] [--write FILE] [--command TEXT]";

/// The command line.
#[derive(Debug)]
struct Args {
    keyturn: PathBuf,
    c7n_org: PathBuf,
    accounts: usize,
    runs: usize,
    quick: bool,
    latency: bool,
    write: Option<PathBuf>,
    command: String,
    /// The C7N_ORG_PARALLEL settings to try besides the default.
    sweep: Vec<usize>,
    /// Whether to run Cloud Custodian at all.
    peer: bool,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut keyturn = None;
        let mut c7n_org = None;
        let mut accounts = None;
        let mut runs = None;
        let mut quick = false;
        let mut latency = true;
        let mut write = None;
        let mut command = None;
        let mut sweep = None;
        let mut peer = true;
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "--keyturn" => keyturn = Some(PathBuf::from(value("--keyturn")?)),
                "--c7n-org" => c7n_org = Some(PathBuf::from(value("--c7n-org")?)),
                "--accounts" => accounts = Some(number(&value("--accounts")?)?),
                "--runs" => runs = Some(number(&value("--runs")?)?),
                "--quick" => quick = true,
                "--no-latency" => latency = false,
                "--no-peer" => peer = false,
                "--write" => write = Some(PathBuf::from(value("--write")?)),
                "--command" => command = Some(value("--command")?),
                "--sweep" => {
                    sweep = Some(
                        value("--sweep")?
                            .split(',')
                            .map(number)
                            .collect::<Result<Vec<_>, _>>()?,
                    );
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(Self {
            keyturn: keyturn.ok_or("--keyturn is required")?,
            c7n_org: c7n_org.ok_or("--c7n-org is required")?,
            accounts: accounts.unwrap_or(if quick { 10 } else { 100 }),
            runs: runs.unwrap_or(if quick { 1 } else { 3 }),
            quick,
            latency: latency && !quick,
            write,
            command: command.unwrap_or_else(|| "keyturn-bench".to_owned()),
            sweep: sweep.unwrap_or_else(|| if quick { QUICK_SWEEP } else { SWEEP }.to_vec()),
            peer,
        })
    }
}

fn number(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{text:?} is not a positive number")),
    }
}

// ----------------------------------------------------------------------------------------
// Running and timing one process.
// ----------------------------------------------------------------------------------------

/// A process to measure: program, arguments and extra environment, run in `dir` with the
/// emulator's environment.
#[derive(Debug, Clone)]
struct Spec {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    env_remove: Vec<String>,
    dir: PathBuf,
}

/// What one process did.
#[derive(Debug)]
struct Timed {
    wall: f64,
    /// Peak resident memory in KiB (the largest process, for a process tree).
    rss_kb: Option<u64>,
    /// User plus system CPU seconds (with its waited-for children).
    cpu: Option<f64>,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

const GNU_TIME: &str = "/usr/bin/time";

/// Runs `spec` to its end, timing it. Blocking.
fn run_timed(spec: &Spec, scratch: &Path) -> Result<Timed, String> {
    let out_path = scratch.join("stdout");
    let err_path = scratch.join("stderr");
    let time_path = scratch.join("time-v.txt");
    let _ = std::fs::remove_file(&time_path);
    let gnu_time = Path::new(GNU_TIME).exists();
    let mut command = if gnu_time {
        let mut c = Command::new(GNU_TIME);
        c.arg("-v").arg("-o").arg(&time_path).arg(&spec.program);
        c
    } else {
        Command::new(&spec.program)
    };
    for name in ENV_TO_REMOVE
        .iter()
        .copied()
        .chain(["KEYTURN_JOURNAL", "KEYTURN_LOG"])
    {
        command.env_remove(name);
    }
    for name in &spec.env_remove {
        command.env_remove(name);
    }
    let file = |path: &Path| {
        File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))
    };
    command
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.dir)
        .stdin(Stdio::null())
        .stdout(file(&out_path)?)
        .stderr(file(&err_path)?);
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", spec.program.display()))?;
    let mut polled_hwm = None;
    let status = if gnu_time {
        child.wait().map_err(|e| e.to_string())?
    } else {
        // No GNU time: poll the peak resident set the kernel keeps for the process.
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                break status;
            }
            if let Some(kb) = vm_hwm_kb(child.id()) {
                polled_hwm = Some(kb);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let wall = started.elapsed().as_secs_f64();
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    let (rss_kb, cpu) = if gnu_time {
        parse_gnu_time(&read(&time_path))
    } else {
        (polled_hwm, None)
    };
    Ok(Timed {
        wall,
        rss_kb,
        cpu,
        status,
        stdout: read(&out_path),
        stderr: read(&err_path),
    })
}

/// `VmHWM` of a live process, in KiB.
fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Peak RSS (KiB) and CPU seconds from GNU time's `-v` report.
fn parse_gnu_time(report: &str) -> (Option<u64>, Option<f64>) {
    let field = |name: &str| {
        report
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let rss = field("Maximum resident set size (kbytes):").map(|kb| kb as u64);
    let cpu = match (
        field("User time (seconds):"),
        field("System time (seconds):"),
    ) {
        (Some(u), Some(s)) => Some(u + s),
        _ => None,
    };
    (rss, cpu)
}

/// One measured run: the process and what the emulator saw meanwhile.
#[derive(Debug, Clone)]
struct Sample {
    wall: f64,
    rss_kb: Option<u64>,
    cpu: Option<f64>,
    emulator_cpu: f64,
    counters: Counters,
}

/// Runs `spec` with fresh counters and returns the sample and the process's output.
async fn measure(
    emulator: &Emulator,
    spec: &Spec,
    scratch: &Path,
) -> Result<(Sample, Timed), String> {
    emulator.reset_counters().await;
    let before = emulator.process_stats().await;
    let (spec, scratch) = (spec.clone(), scratch.to_owned());
    let timed = tokio::task::spawn_blocking(move || run_timed(&spec, &scratch))
        .await
        .map_err(|e| format!("the timing task failed: {e}"))??;
    let after = emulator.process_stats().await;
    let counters = emulator.counters().await;
    let sample = Sample {
        wall: timed.wall,
        rss_kb: timed.rss_kb,
        cpu: timed.cpu,
        emulator_cpu: after.cpu_seconds - before.cpu_seconds,
        counters,
    };
    Ok((sample, timed))
}

/// Fails with the tail of the process's stderr unless it exited 0.
fn succeeded(what: &str, timed: &Timed) -> Result<(), String> {
    if timed.status.success() {
        return Ok(());
    }
    let tail: Vec<&str> = timed.stderr.lines().rev().take(30).collect();
    Err(format!(
        "{what} exited with {}; the end of its stderr:\n{}",
        timed.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    ))
}

// ----------------------------------------------------------------------------------------
// The benchmark.
// ----------------------------------------------------------------------------------------

/// A series of runs of one measurement.
#[derive(Debug, Clone, Default)]
struct Series {
    samples: Vec<Sample>,
}

impl Series {
    fn push(&mut self, sample: Sample) {
        self.samples.push(sample);
    }

    /// The run with the median wall time (the lower middle one for an even count).
    fn median(&self) -> &Sample {
        let mut sorted: Vec<&Sample> = self.samples.iter().collect();
        sorted.sort_by(|a, b| a.wall.total_cmp(&b.wall));
        sorted[(sorted.len() - 1) / 2]
    }

    fn wall(&self) -> f64 {
        self.median().wall
    }

    /// The median wall time, if the series was measured.
    fn measured(&self) -> Option<f64> {
        (!self.samples.is_empty()).then(|| self.wall())
    }

    fn walls(&self) -> String {
        self.samples
            .iter()
            .map(|s| format!("{:.2}", s.wall))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn max_rss_kb(&self) -> Option<u64> {
        self.samples.iter().filter_map(|s| s.rss_kb).max()
    }
}

/// Everything measured on one emulator: at no latency, or at [`LATENCY_MS`].
#[derive(Debug, Default)]
struct Measured {
    inventory: Series,
    plan: Series,
    retire: Series,
    /// The same retirement with a SQLite journal (no latency only).
    retire_sqlite: Series,
    report_default: Series,
    report_best: Series,
    remove_default: Series,
    remove_best: Series,
}

/// The benchmark's results.
#[derive(Debug)]
struct Results {
    accounts: usize,
    keys: usize,
    retire_keys: usize,
    runs: usize,
    quick: bool,
    /// Seeding times, one per fresh organization.
    seed_secs: Vec<f64>,
    c7n_default: usize,
    sweep: Vec<(usize, Sample)>,
    c7n_best: usize,
    plain: Measured,
    latency: Option<Measured>,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    gnu_time: bool,
    /// `/proc/loadavg` at the start and at the end: other work on the machine.
    load: (String, String),
    /// The work tree's revision when the run started, right after keyturn was built.
    revision: String,
}

/// A fresh emulator with the benchmark's organization, for one measured run: moto's
/// state grows with use (it looks up assumed-role credentials in a list, and a
/// DynamoDB table that grows gets slower), so no run inherits another's.
struct World {
    emulator: Emulator,
    /// Every key of the member accounts.
    keys: usize,
    /// The keys both tools act on: Active, older than 90 days, unused.
    retire_keys: usize,
}

/// What can be measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Inventory,
    Plan,
    Retire,
    RetireSqlite,
    Report(Option<usize>),
    Remove(Option<usize>),
}

impl Run {
    fn label(self) -> String {
        let parallel = |p: Option<usize>| match p {
            Some(p) => format!("C7N_ORG_PARALLEL={p}"),
            None => "default parallelism".to_owned(),
        };
        match self {
            Run::Inventory => "keyturn inventory".to_owned(),
            Run::Plan => "keyturn plan".to_owned(),
            Run::Retire => "keyturn run (retire unused)".to_owned(),
            Run::RetireSqlite => "keyturn run (retire unused, SQLite journal)".to_owned(),
            Run::Report(p) => format!("c7n-org report, {}", parallel(p)),
            Run::Remove(p) => format!("c7n-org remove-keys, {}", parallel(p)),
        }
    }
}

/// The state the measurements share.
struct Bench<'a> {
    args: &'a Args,
    dir: PathBuf,
    seed_secs: Vec<f64>,
    keys: usize,
    retire_keys: usize,
}

async fn bench(args: &Args, dir: &Path) -> Result<(), String> {
    let started_at = Utc::now();
    let load_before = load_average();
    // Read now, next to the build: the work tree may move on during a long run.
    let revision = git_revision();
    let gnu_time = Path::new(GNU_TIME).exists();
    eprintln!(
        "[bench] {} accounts, {} runs each{}{}{}; a fresh emulator and organization for every run; peak RSS from {}",
        args.accounts,
        args.runs,
        if args.quick { " (quick)" } else { "" },
        if args.latency {
            ", then again with 50 ms latency"
        } else {
            ""
        },
        if args.peer { "" } else { ", keyturn only" },
        if gnu_time {
            "/usr/bin/time -v"
        } else {
            "/proc/PID/status VmHWM, polled"
        }
    );
    let mut bench = Bench {
        args,
        dir: dir.to_owned(),
        seed_secs: Vec::new(),
        keys: 0,
        retire_keys: 0,
    };
    let c7n_default = std::thread::available_parallelism().map_or(1, |n| n.get()) * 4;

    // Custodian's parallelism: one run at every setting, then the best is measured with
    // the others.
    let mut sweep = Vec::new();
    if args.peer {
        let mut settings = vec![c7n_default];
        settings.extend(args.sweep.iter().filter(|&&p| p != c7n_default));
        for p in settings {
            let parallel = (p != c7n_default).then_some(p);
            sweep.push((p, bench.measure(Run::Report(parallel), false).await?));
        }
    }
    let c7n_best = sweep
        .iter()
        .min_by(|a, b| a.1.wall.total_cmp(&b.1.wall))
        .map_or(c7n_default, |(p, _)| *p);
    if args.peer {
        eprintln!(
            "[bench] c7n-org's best C7N_ORG_PARALLEL here: {c7n_best} (default {c7n_default})"
        );
    }
    let best = (c7n_best != c7n_default).then_some(c7n_best);

    // The runs, interleaved (run 1 of everything, then run 2, …), so that other load on
    // the machine spreads over both tools.
    let mut plain = Measured::default();
    let mut latency = args.latency.then(Measured::default);
    for _ in 0..args.runs {
        for slow in [false, true] {
            let Some(into) = (if slow {
                latency.as_mut()
            } else {
                Some(&mut plain)
            }) else {
                continue;
            };
            let mut runs = vec![Run::Inventory, Run::Plan, Run::Retire];
            if !slow {
                runs.push(Run::RetireSqlite);
            }
            if args.peer {
                runs.extend([Run::Report(None), Run::Remove(None)]);
                if best.is_some() {
                    runs.extend([Run::Report(best), Run::Remove(best)]);
                }
            }
            for run in runs {
                let sample = bench.measure(run, slow).await?;
                let series = match run {
                    Run::Inventory => &mut into.inventory,
                    Run::Plan => &mut into.plan,
                    Run::Retire => &mut into.retire,
                    Run::RetireSqlite => &mut into.retire_sqlite,
                    Run::Report(None) => &mut into.report_default,
                    Run::Report(Some(_)) => &mut into.report_best,
                    Run::Remove(None) => &mut into.remove_default,
                    Run::Remove(Some(_)) => &mut into.remove_best,
                };
                series.push(sample);
            }
        }
    }
    for m in std::iter::once(&mut plain).chain(latency.as_mut()) {
        if best.is_none() {
            m.report_best = m.report_default.clone();
            m.remove_best = m.remove_default.clone();
        }
    }

    let results = Results {
        accounts: args.accounts,
        keys: bench.keys,
        retire_keys: bench.retire_keys,
        runs: args.runs,
        quick: args.quick,
        seed_secs: bench.seed_secs.clone(),
        c7n_default,
        sweep,
        c7n_best,
        plain,
        latency,
        started_at,
        finished_at: Utc::now(),
        gnu_time,
        load: (load_before, load_average()),
        revision,
    };
    let text = report(&results, args);
    println!("{text}");
    if let Some(path) = &args.write {
        write_section(path, args.accounts, args.quick, &text)?;
        eprintln!("[bench] results written to {}", path.display());
    }
    Ok(())
}

/// Writes keyturn's policy, c7n-org's accounts file and the two c7n policies.
fn write_inputs(dir: &Path, org: &SeededOrg) -> Result<(), String> {
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("cannot write {name}: {e}"))
    };
    write("policy.toml", KEYTURN_POLICY)?;
    let mut accounts = String::from("accounts:\n");
    for account in &org.accounts {
        // Ids are quoted: they can start with 0, which YAML would read as a number.
        let _ = write!(
            accounts,
            "  - account_id: \"{id}\"\n    name: {name}\n    regions: [us-east-1]\n    role: arn:aws:iam::{id}:role/OrganizationAccountAccessRole\n",
            id = account.id,
            name = account.name
        );
    }
    write("accounts.yml", &accounts)?;
    write(
        "report.yml",
        &format!("policies:\n  - name: {C7N_REPORT}\n{C7N_FILTERS}"),
    )?;
    write(
        "remove.yml",
        &format!(
            "policies:\n  - name: {C7N_REMOVE}\n{C7N_FILTERS}    actions:\n      - type: remove-keys\n        disable: true\n        age: {AGE_DAYS}\n"
        ),
    )?;
    Ok(())
}

impl Bench<'_> {
    /// Starts a fresh emulator, seeds the organization, writes the inputs and creates
    /// both journals; with `slow`, then adds the latency to every AWS call.
    async fn world(&mut self, slow: bool) -> Result<World, String> {
        let _ = std::fs::remove_file(self.dir.join("journal.db"));
        let emulator = Emulator::start(EmulatorOptions::default());
        let now = Utc::now();
        let seeding = Instant::now();
        let org = seed(&emulator, &bench_org(self.args.accounts), now).await;
        self.seed_secs.push(seeding.elapsed().as_secs_f64());
        let keys: usize = org
            .accounts
            .iter()
            .flat_map(|a| &a.users)
            .map(|u| u.keys.len())
            .sum();
        let retire_keys = org
            .accounts
            .iter()
            .flat_map(|a| &a.users)
            .flat_map(|u| &u.keys)
            .filter(|k| k.active && now - k.created_at > chrono::Duration::days(AGE_DAYS))
            .count();
        if self.seed_secs.len() == 1 {
            eprintln!(
                "[bench] seeded {} accounts, {keys} keys ({retire_keys} Active and older than \
                 {AGE_DAYS} days, all unused) in {:.1} s",
                org.accounts.len(),
                seeding.elapsed().as_secs_f64()
            );
        }
        self.keys = keys;
        self.retire_keys = retire_keys;
        write_inputs(&self.dir, &org)?;
        let world = World {
            emulator,
            keys,
            retire_keys,
        };
        for journal in [JOURNAL, SQLITE_JOURNAL] {
            self.keyturn_untimed(&world, &["--journal", journal, "journal", "init"])?;
        }
        if slow {
            world
                .emulator
                .set_faults(&[FaultRule::latency(LATENCY_MS)])
                .await;
        }
        Ok(world)
    }

    /// One measured run on a fresh world, checked.
    async fn measure(&mut self, run: Run, slow: bool) -> Result<Sample, String> {
        let world = self.world(slow).await?;
        let sample = match run {
            Run::Inventory => self.keyturn_read(&world, "inventory").await?,
            Run::Plan => self.keyturn_read(&world, "plan").await?,
            Run::Retire => self.keyturn_retire(&world, JOURNAL).await?,
            Run::RetireSqlite => self.keyturn_retire(&world, SQLITE_JOURNAL).await?,
            Run::Report(p) => self.c7n(&world, C7N_REPORT, p).await?,
            Run::Remove(p) => self.c7n(&world, C7N_REMOVE, p).await?,
        };
        let label = if slow {
            format!("{}, +{LATENCY_MS} ms", run.label())
        } else {
            run.label()
        };
        progress(&label, &sample);
        Ok(sample)
    }

    fn keyturn_spec(&self, world: &World, args: &[&str]) -> Spec {
        Spec {
            program: self.args.keyturn.clone(),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            env: world.emulator.env(),
            env_remove: Vec::new(),
            dir: self.dir.clone(),
        }
    }

    /// Runs keyturn without timing it (set-up steps).
    fn keyturn_untimed(&self, world: &World, args: &[&str]) -> Result<String, String> {
        let spec = self.keyturn_spec(world, args);
        let scratch = self.dir.join("untimed");
        std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
        let timed = run_timed(&spec, &scratch)?;
        succeeded(&format!("keyturn {}", args.join(" ")), &timed)?;
        Ok(timed.stdout)
    }

    async fn timed_keyturn(&self, world: &World, args: &[&str]) -> Result<(Sample, Timed), String> {
        let spec = self.keyturn_spec(world, args);
        let (sample, timed) = measure(&world.emulator, &spec, &self.dir).await?;
        succeeded(&format!("keyturn {}", args.join(" ")), &timed)?;
        Ok((sample, timed))
    }

    /// `keyturn inventory` or `keyturn plan`, checked against the seeded keys.
    async fn keyturn_read(&self, world: &World, command: &str) -> Result<Sample, String> {
        let (sample, timed) = self
            .timed_keyturn(world, &[command, "--policy", "policy.toml", "-o", "json"])
            .await?;
        let rows = json_rows(&timed.stdout, command)?;
        let retire = rows
            .iter()
            .filter(|r| r["action"] == "retire-unused")
            .count();
        let expected_retire = if command == "plan" {
            world.retire_keys
        } else {
            0
        };
        // `inventory` lists every key; `plan` only the keys of the users it had to list
        // (those with a key to act on), so it is held to its retirements alone.
        let listed_ok = if command == "plan" {
            rows.len() <= world.keys
        } else {
            rows.len() == world.keys
        };
        if !listed_ok || retire != expected_retire {
            return Err(format!(
                "keyturn {command} listed {} keys ({retire} to retire), expected {} ({expected_retire})",
                rows.len(),
                world.keys,
            ));
        }
        Ok(sample)
    }

    /// One retirement campaign on `journal`: started untimed, then one timed
    /// `keyturn run`, which must deactivate exactly the unused keys.
    async fn keyturn_retire(&self, world: &World, journal: &str) -> Result<Sample, String> {
        let name = "retire";
        self.keyturn_untimed(
            world,
            &[
                "--journal",
                journal,
                "campaign",
                "start",
                name,
                "--policy",
                "policy.toml",
            ],
        )?;
        let (sample, timed) = self
            .timed_keyturn(world, &["--journal", journal, "run", name])
            .await?;
        let deactivated = sample.counters.by_action("iam", "UpdateAccessKey");
        if deactivated != world.retire_keys as u64 {
            return Err(format!(
                "keyturn run made {deactivated} UpdateAccessKey calls, expected {}; its stdout:\n{}",
                world.retire_keys, timed.stdout
            ));
        }
        Ok(sample)
    }

    /// Runs a c7n-org policy (report or remove) over every account, checked.
    async fn c7n(
        &self,
        world: &World,
        policy: &str,
        parallel: Option<usize>,
    ) -> Result<Sample, String> {
        let file = if policy == C7N_REPORT {
            "report.yml"
        } else {
            "remove.yml"
        };
        // A fresh output and cache directory per run: what a periodic run meets once
        // c7n's 15-minute cache has expired.
        let out = self.dir.join("c7n-out");
        let cache = self.dir.join("c7n-cache");
        for d in [&out, &cache] {
            let _ = std::fs::remove_dir_all(d);
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let mut env = world.emulator.env();
        let mut env_remove = vec!["C7N_ORG_PARALLEL".to_owned()];
        if let Some(p) = parallel {
            env.push(("C7N_ORG_PARALLEL".to_owned(), p.to_string()));
            env_remove.clear();
        }
        let spec = Spec {
            program: self.args.c7n_org.clone(),
            args: [
                "run",
                "-c",
                "accounts.yml",
                "-u",
                file,
                "-s",
                &out.to_string_lossy(),
                "--cache-path",
                &cache.to_string_lossy(),
                "-r",
                "us-east-1",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
            env,
            env_remove,
            dir: self.dir.clone(),
        };
        let (sample, timed) = measure(&world.emulator, &spec, &self.dir).await?;
        succeeded(&format!("c7n-org run -u {file}"), &timed)?;
        if timed.stderr.contains("Exception running policy")
            || timed.stderr.contains("Error running policy")
        {
            return Err(format!("c7n-org reported errors:\n{}", timed.stderr));
        }
        let matched = c7n_count(&timed.stderr, policy);
        if matched != Some(world.retire_keys) {
            return Err(format!(
                "c7n-org matched {matched:?} users with {policy}, expected {}; its stderr:\n{}",
                world.retire_keys, timed.stderr
            ));
        }
        if policy == C7N_REMOVE {
            let disabled = sample.counters.by_action("iam", "UpdateAccessKey");
            if disabled != world.retire_keys as u64 {
                return Err(format!(
                    "c7n-org remove-keys made {disabled} UpdateAccessKey calls, expected {}",
                    world.retire_keys
                ));
            }
        }
        Ok(sample)
    }
}

/// The rows of a JSON array printed by keyturn.
fn json_rows(stdout: &str, what: &str) -> Result<Vec<Value>, String> {
    match serde_json::from_str(stdout) {
        Ok(Value::Array(rows)) => Ok(rows),
        _ => Err(format!("keyturn {what} did not print a JSON array")),
    }
}

/// The number of resources c7n-org reports for `policy` in its closing
/// `Policy resource counts Counter({'policy': N})` line.
fn c7n_count(stderr: &str, policy: &str) -> Option<usize> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("Policy resource counts"))?;
    let counts = &line[line.find("Counter(")?..];
    match counts.find(&format!("'{policy}': ")) {
        Some(at) => counts[at + policy.len() + 4..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok(),
        None => Some(0),
    }
}

fn progress(what: &str, sample: &Sample) {
    eprintln!(
        "[bench] {what}: {:.2} s, {} AWS calls, emulator CPU {:.1} s{}",
        sample.wall,
        sample.counters.total(),
        sample.emulator_cpu,
        sample
            .rss_kb
            .map(|kb| format!(", peak RSS {:.1} MiB", kb as f64 / 1024.0))
            .unwrap_or_default()
    );
}

// ----------------------------------------------------------------------------------------
// The report.
// ----------------------------------------------------------------------------------------

/// Calls made on behalf of member accounts (signed in them, plus the AssumeRole calls
/// into them, which the management account signs), per member account; and the rest
/// (organization-wide: the caller's identity, the account list).
fn per_account(counters: &Counters, accounts: usize) -> (f64, u64) {
    let mut member = 0;
    let mut org_wide = 0;
    for r in &counters.requests {
        if r.account != MANAGEMENT_ACCOUNT_ID || r.action == "AssumeRole" {
            member += r.count;
        } else {
            org_wide += r.count;
        }
    }
    (member as f64 / accounts as f64, org_wide)
}

/// `Action n.nn` per member account for the calls made on behalf of members, busiest
/// first, plus the organization-wide calls.
fn breakdown(counters: &Counters, accounts: usize) -> String {
    let mut by_action: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for r in &counters.requests {
        let entry = by_action
            .entry((r.service.clone(), r.action.clone()))
            .or_default();
        if r.account != MANAGEMENT_ACCOUNT_ID || r.action == "AssumeRole" {
            entry.0 += r.count;
        } else {
            entry.1 += r.count;
        }
    }
    let mut rows: Vec<_> = by_action.into_iter().collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.1.0 + row.1.1));
    rows.iter()
        .map(|((_, action), (member, org))| {
            let mut text = String::new();
            if *member > 0 {
                let _ = write!(text, "{action} {:.2}", *member as f64 / accounts as f64);
            }
            if *org > 0 {
                if !text.is_empty() {
                    text.push_str(" + ");
                } else {
                    text.push_str(action);
                    text.push(' ');
                }
                let _ = write!(text, "{org} org-wide");
            }
            text
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn secs(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.2} s")
    } else {
        format!("{s:.1} s")
    }
}

fn mib(kb: Option<u64>) -> String {
    kb.map_or_else(
        || "n/a".to_owned(),
        |kb| format!("{:.1} MiB", kb as f64 / 1024.0),
    )
}

/// The median of some numbers (0 when there are none).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0.0)
}

/// "12.3× faster" (or slower) of keyturn's `ours` against the peer's `theirs`.
fn ratio(ours: f64, theirs: f64) -> f64 {
    theirs / ours
}

fn times(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.0}×")
    } else {
        format!("{r:.1}×")
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**missed**" }
}

/// The emulator's CPU time during a run (all its threads, granian's HTTP threads
/// included) as a share of the run's wall time.
fn emulator_share(s: &Sample) -> String {
    format!(
        "{:.1} s ({:.0} %)",
        s.emulator_cpu,
        100.0 * s.emulator_cpu / s.wall
    )
}

/// The CPU time moto's request threads spent in moto during a run, as a share of the
/// run's wall time: the part the GIL serialises, so near 100 % means moto was busy all
/// along and bounded the run.
fn moto_share(s: &Sample) -> String {
    let moto = s.counters.cpu.iter().map(|c| c.micros).sum::<u64>() as f64 / 1e6;
    format!("{:.1} s ({:.0} %)", moto, 100.0 * moto / s.wall)
}

/// A table cell for a series' median wall time, or "—" when it was not measured.
fn wall_cell(s: &Series) -> String {
    s.measured().map_or_else(|| "—".to_owned(), secs)
}

/// "N× faster" (or "N× slower") of `ours` against `theirs`, or "—" when either was not
/// measured.
fn ratio_cell(ours: &Series, theirs: &Series) -> String {
    match (ours.measured(), theirs.measured()) {
        (Some(a), Some(b)) if b >= a => format!("{} faster", times(ratio(a, b))),
        (Some(a), Some(b)) => format!("{} slower", times(ratio(b, a))),
        _ => "—".to_owned(),
    }
}

fn report(r: &Results, args: &Args) -> String {
    let mut o = String::new();
    let p = &r.plain;
    let peer = !p.report_default.samples.is_empty();
    let heading = if r.quick {
        format!("## {} accounts (quick smoke run: not a result)", r.accounts)
    } else {
        format!("## {} accounts", r.accounts)
    };
    let _ = writeln!(o, "{heading}\n");
    let _ = writeln!(
        o,
        "`{}` — {} to {} UTC, keyturn built from the work tree {} (read at the start).\n",
        args.command,
        r.started_at.format("%Y-%m-%d %H:%M"),
        r.finished_at.format("%H:%M"),
        r.revision
    );
    let _ = writeln!(
        o,
        "{} Load average (1, 5, 15 min) at the start: {}; at the end: {}.\n",
        machine(),
        r.load.0,
        r.load.1
    );
    let peer_setup = if peer {
        format!(
            "c7n-org's default C7N_ORG_PARALLEL here is {} (4 × CPUs), the best of the sweep {}.",
            r.c7n_default, r.c7n_best
        )
    } else {
        "Cloud Custodian was not run (`--no-peer`).".to_owned()
    };
    let _ = writeln!(
        o,
        "Organization: {} member accounts × 5 users, {} keys, of which {} Active and older \
         than {AGE_DAYS} days, all unused for 45 days or more: the keys both tools act on. \
         Seeding one organization through the SDK took {:.0} s (median); every measured \
         run gets a fresh emulator and organization. Each figure is the median of {} runs \
         (the C7N_ORG_PARALLEL sweep: one run each). keyturn runs with its default \
         `--concurrency` ({KEYTURN_CONCURRENCY}) and a DynamoDB journal on the emulator \
         unless the row says SQLite. {peer_setup}\n",
        r.accounts,
        r.keys,
        r.retire_keys,
        median(&r.seed_secs),
        r.runs,
    );

    let mut targets: Vec<(String, Option<bool>)> = Vec::new();

    // Wall times and ratios.
    let _ = writeln!(o, "### Wall time, keyturn against Cloud Custodian\n");
    let _ = writeln!(
        o,
        "| | keyturn | c7n-org, default ({}) | c7n-org, best ({}) | vs default | vs best |",
        r.c7n_default, r.c7n_best
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    let mut wall_rows: Vec<(String, &Series, &Series, &Series)> = vec![
        (
            "`keyturn inventory` / c7n report".to_owned(),
            &p.inventory,
            &p.report_default,
            &p.report_best,
        ),
        (
            "`keyturn plan` / c7n report".to_owned(),
            &p.plan,
            &p.report_default,
            &p.report_best,
        ),
        (
            "retire unused keys: `keyturn run` / c7n `remove-keys`".to_owned(),
            &p.retire,
            &p.remove_default,
            &p.remove_best,
        ),
        (
            "retire unused keys, SQLite journal: `keyturn run` / c7n `remove-keys`".to_owned(),
            &p.retire_sqlite,
            &p.remove_default,
            &p.remove_best,
        ),
    ];
    if let Some(l) = &r.latency {
        let s = format!(", +{LATENCY_MS} ms a call");
        wall_rows.extend([
            (
                format!("`keyturn inventory` / c7n report{s}"),
                &l.inventory,
                &l.report_default,
                &l.report_best,
            ),
            (
                format!("`keyturn plan` / c7n report{s}"),
                &l.plan,
                &l.report_default,
                &l.report_best,
            ),
            (
                format!("retire unused keys: `keyturn run` / c7n `remove-keys`{s}"),
                &l.retire,
                &l.remove_default,
                &l.remove_best,
            ),
        ]);
    }
    for (name, ours, d, b) in &wall_rows {
        if ours.samples.is_empty() {
            continue;
        }
        let _ = writeln!(
            o,
            "| {name} | {} | {} | {} | {} | {} |",
            wall_cell(ours),
            wall_cell(d),
            wall_cell(b),
            ratio_cell(ours, d),
            ratio_cell(ours, b)
        );
    }
    let _ = writeln!(o);
    if peer {
        let _ = writeln!(
            o,
            "c7n-org report by C7N_ORG_PARALLEL (the sweep that chose the best setting, one \
             run each): {}.\n",
            r.sweep
                .iter()
                .map(|(p, s)| format!("{p}: {}", secs(s.wall)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let inv_d = ratio(p.inventory.wall(), p.report_default.wall());
        let inv_b = ratio(p.inventory.wall(), p.report_best.wall());
        targets.push((
            format!(
                "inventory at least 20× faster than c7n-org's report at its default \
                 parallelism and 10× at its best: {} and {}",
                times(inv_d),
                times(inv_b)
            ),
            Some(inv_d >= 20.0 && inv_b >= 10.0),
        ));
        let ret_d = ratio(p.retire.wall(), p.remove_default.wall());
        let ret_b = ratio(p.retire.wall(), p.remove_best.wall());
        targets.push((
            format!(
                "retiring the unused keys at least 10× faster than c7n-org's remove-keys: \
                 {} (default), {} (best) (c7n-org's time ÷ keyturn's)",
                times(ret_d),
                times(ret_b)
            ),
            Some(ret_d >= 10.0),
        ));
    } else {
        targets.push((
            "the ratios to Cloud Custodian: not measured in this run (`--no-peer`)".to_owned(),
            None,
        ));
    }

    // AWS calls.
    let _ = writeln!(o, "### AWS calls (from the emulator's counters)\n");
    let _ = writeln!(
        o,
        "Per member account: the calls signed in the account plus the AssumeRole into it; \
         org-wide calls (caller identity, account list) are counted apart. Median run.\n"
    );
    let _ = writeln!(
        o,
        "| run | calls | per account | org-wide | by action, per account |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|");
    let calls_row = |o: &mut String, name: &str, s: &Sample| {
        let (per, org) = per_account(&s.counters, r.accounts);
        let _ = writeln!(
            o,
            "| {name} | {} | {per:.2} | {org} | {} |",
            s.counters.total(),
            breakdown(&s.counters, r.accounts)
        );
    };
    calls_row(&mut o, "`keyturn inventory`", p.inventory.median());
    calls_row(&mut o, "`keyturn plan`", p.plan.median());
    calls_row(
        &mut o,
        "`keyturn run` (retire), AWS only",
        &without_service(p.retire.median(), "dynamodb"),
    );
    if peer {
        calls_row(&mut o, "c7n-org report", p.report_default.median());
        calls_row(&mut o, "c7n-org remove-keys", p.remove_default.median());
    }
    let _ = writeln!(o);

    // Discovery is what `plan` (and the start of every run) costs an account before any
    // per-key call: everything but ListAccessKeys (one per user with a key to act on)
    // and GetAccessKeyLastUsed (keys the credential report cannot place).
    let plan = p.plan.median();
    let (plan_per, _) = per_account(&plan.counters, r.accounts);
    let per_user = |action: &str| plan.counters.by_action("iam", action) as f64 / r.accounts as f64;
    let fixed = plan_per - per_user("ListAccessKeys") - per_user("GetAccessKeyLastUsed");
    targets.push((
        format!(
            "discovery at most 4 AWS calls per account, plus per-key calls only for keys that need action: \
             `keyturn plan` {fixed:.2} per account, plus ListAccessKeys {:.2} and GetAccessKeyLastUsed {:.2} \
             per account for the users with a key to act on",
            per_user("ListAccessKeys"),
            per_user("GetAccessKeyLastUsed"),
        ),
        Some(fixed <= 4.0),
    ));
    let retire = p.retire.median();
    let per_key =
        |action: &str| retire.counters.by_action("iam", action) as f64 / r.retire_keys as f64;
    let _ = writeln!(
        o,
        "Per retired key in the retirement run ({} keys): GetAccessKeyLastUsed {:.2}, \
         UpdateAccessKey {:.2}, ListAccessKeys {:.2}.\n",
        r.retire_keys,
        per_key("GetAccessKeyLastUsed"),
        per_key("UpdateAccessKey"),
        per_key("ListAccessKeys"),
    );

    // Journal writes.
    let writes: BTreeMap<&str, u64> = [
        "PutItem",
        "TransactWriteItems",
        "UpdateItem",
        "DeleteItem",
        "BatchWriteItem",
    ]
    .into_iter()
    .map(|a| (a, retire.counters.by_action("dynamodb", a)))
    .filter(|(_, n)| *n > 0)
    .collect();
    let total_writes: u64 = writes.values().sum();
    let _ = writeln!(
        o,
        "### Journal (DynamoDB on the emulator) during the retirement run\n\n\
         {total_writes} write requests for {} retired keys: **{:.2} writes per retired key** \
         ({}). Every DynamoDB request of the run: {}.\n",
        r.retire_keys,
        total_writes as f64 / r.retire_keys as f64,
        writes
            .iter()
            .map(|(a, n)| format!("{a} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        breakdown_totals(&retire.counters, "dynamodb")
    );

    // Memory.
    let _ = writeln!(o, "### Peak memory (RSS, the largest over the runs)\n");
    let _ = writeln!(
        o,
        "| `keyturn inventory` | `keyturn plan` | `keyturn run` | c7n-org report (largest process) | c7n-org remove-keys (largest process) |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|");
    let _ = writeln!(
        o,
        "| {} | {} | {} | {} | {} |\n",
        mib(p.inventory.max_rss_kb()),
        mib(p.plan.max_rss_kb()),
        mib(p.retire.max_rss_kb()),
        mib(p.report_default.max_rss_kb()),
        mib(p.remove_default.max_rss_kb()),
    );
    let keyturn_peak = [&p.inventory, &p.plan, &p.retire, &p.retire_sqlite]
        .iter()
        .filter_map(|s| s.max_rss_kb())
        .max();
    if r.accounts >= 1000 {
        targets.push((
            format!(
                "{} accounts, {} keys: keyturn's peak RSS under 100 MB: {}",
                r.accounts,
                r.keys,
                mib(keyturn_peak)
            ),
            Some(keyturn_peak.is_some_and(|kb| kb < 100 * 1024)),
        ));
    }
    if !r.gnu_time {
        let _ = writeln!(
            o,
            "(No /usr/bin/time on this machine: peak RSS is VmHWM polled every 5 ms; CPU \
             times are not shown.)\n"
        );
    }

    // Latency model.
    if let Some(l) = &r.latency {
        let _ = writeln!(
            o,
            "### With {LATENCY_MS} ms added to every AWS call: wall time against calls × latency ÷ concurrency\n"
        );
        let _ = writeln!(
            o,
            "| run | calls | model | wall (median) | wall ÷ model | emulator CPU (share of wall) |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|");
        for (name, series) in [
            ("`keyturn inventory`", &l.inventory),
            ("`keyturn plan`", &l.plan),
            ("`keyturn run` (retire)", &l.retire),
        ] {
            let s = series.median();
            let calls = s.counters.total();
            let model = calls as f64 * LATENCY_MS as f64 / 1000.0 / KEYTURN_CONCURRENCY as f64;
            let q = s.wall / model;
            let _ = writeln!(
                o,
                "| {name} | {calls} | {} | {} | {q:.2} | {} |",
                secs(model),
                secs(s.wall),
                emulator_share(s)
            );
            targets.push((
                format!(
                    "with {LATENCY_MS} ms a call, {name} within 1.5× of calls × latency ÷ \
                     {KEYTURN_CONCURRENCY}: {q:.2}×"
                ),
                Some(q <= 1.5),
            ));
        }
        let _ = writeln!(o);
    }

    // Emulator load.
    let _ = writeln!(
        o,
        "### Is the emulator the bottleneck?\n\n\
         The emulator is one process: moto's Python runs under the GIL (one core at most), \
         granian's HTTP threads (Rust) beside it. For each run (median run): the emulator's \
         CPU time, all threads, and that as a share of the run's wall time (it can pass \
         100 %); the CPU time moto's request threads spent in moto, the part the GIL \
         serialises, as a share of the wall time (near 100 %, moto was busy all along and \
         bounds the run); and the measured process's own CPU time (its children \
         included).\n"
    );
    let _ = writeln!(
        o,
        "| run | wall | emulator CPU, all threads (share of wall) | in moto (share of wall) | process CPU |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|");
    let mut all: Vec<(String, &Series)> = vec![
        ("`keyturn inventory`".to_owned(), &p.inventory),
        ("`keyturn plan`".to_owned(), &p.plan),
        ("`keyturn run` (retire)".to_owned(), &p.retire),
        (
            "`keyturn run` (retire), SQLite journal".to_owned(),
            &p.retire_sqlite,
        ),
        (
            format!("c7n-org report, {}", r.c7n_default),
            &p.report_default,
        ),
        (format!("c7n-org report, {}", r.c7n_best), &p.report_best),
        (
            format!("c7n-org remove-keys, {}", r.c7n_default),
            &p.remove_default,
        ),
        (
            format!("c7n-org remove-keys, {}", r.c7n_best),
            &p.remove_best,
        ),
    ];
    if let Some(l) = &r.latency {
        let s = format!(", +{LATENCY_MS} ms");
        all.extend([
            (format!("`keyturn inventory`{s}"), &l.inventory),
            (format!("`keyturn plan`{s}"), &l.plan),
            (format!("`keyturn run` (retire){s}"), &l.retire),
            (
                format!("c7n-org report, {}{s}", r.c7n_default),
                &l.report_default,
            ),
            (format!("c7n-org report, {}{s}", r.c7n_best), &l.report_best),
            (
                format!("c7n-org remove-keys, {}{s}", r.c7n_default),
                &l.remove_default,
            ),
            (
                format!("c7n-org remove-keys, {}{s}", r.c7n_best),
                &l.remove_best,
            ),
        ]);
    }
    // With the default as the best setting, the "best" series is a copy of the
    // default's under the same name: list it once.
    all.dedup_by(|a, b| a.0 == b.0);
    let all: Vec<_> = all
        .into_iter()
        .filter(|(_, s)| !s.samples.is_empty())
        .collect();
    for (name, series) in &all {
        let s = series.median();
        let _ = writeln!(
            o,
            "| {name} | {} | {} | {} | {} |",
            secs(s.wall),
            emulator_share(s),
            moto_share(s),
            s.cpu.map_or_else(|| "n/a".to_owned(), secs)
        );
    }
    let _ = writeln!(o);

    emulator_cpu_by_action(&mut o, &all);

    let _ = writeln!(o, "Every run's wall time, in seconds:\n");
    for (name, series) in &all {
        let _ = writeln!(o, "- {name}: {}", series.walls());
    }
    let _ = writeln!(o);

    // Targets.
    let _ = writeln!(o, "### Targets\n");
    for (what, ok) in &targets {
        let mark = match ok {
            Some(ok) => verdict(*ok),
            None => "not measured",
        };
        let _ = writeln!(o, "- {mark}: {what}");
    }
    if r.accounts < 1000 {
        let _ = writeln!(
            o,
            "- (peak RSS under 100 MB is a target at 1,000 accounts; here {})",
            mib(keyturn_peak)
        );
    }
    o
}

/// moto's CPU per request by action, for keyturn's runs (median run): what each kind of
/// request costs the one core (the GIL's) that bounds them.
fn emulator_cpu_by_action(o: &mut String, all: &[(String, &Series)]) {
    let keyturn: Vec<_> = all
        .iter()
        .filter(|(name, series)| {
            name.starts_with("`keyturn") && !series.median().counters.cpu.is_empty()
        })
        .collect();
    if keyturn.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "The emulator's CPU time per request, by action (median run; moto's handling \
         threads, injected latency not included), and the action's share of the run's \
         emulator CPU:\n"
    );
    let _ = writeln!(
        o,
        "| run | requests | emulator CPU | by action: CPU per request (share) |"
    );
    let _ = writeln!(o, "|---|---|---|---|");
    for (name, series) in keyturn {
        let s = series.median();
        let total: u64 = s.counters.cpu.iter().map(|c| c.micros).sum();
        let mut rows: Vec<(u64, String)> = s
            .counters
            .cpu
            .iter()
            .filter(|c| c.micros > 0)
            .map(|c| {
                let count = s.counters.by_action(&c.service, &c.action).max(1);
                (
                    c.micros,
                    format!(
                        "{} {:.1} ms ({:.0} %)",
                        c.action,
                        c.micros as f64 / 1000.0 / count as f64,
                        100.0 * c.micros as f64 / total.max(1) as f64
                    ),
                )
            })
            .collect();
        rows.sort_by_key(|row| std::cmp::Reverse(row.0));
        let _ = writeln!(
            o,
            "| {name} | {} | {} | {} |",
            s.counters.total,
            secs(total as f64 / 1e6),
            rows.into_iter()
                .map(|(_, r)| r)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(o);
}

/// The counters without one service's requests.
fn without_service(s: &Sample, service: &str) -> Sample {
    let mut s = s.clone();
    s.counters.requests.retain(|r| r.service != service);
    s.counters.total = s.counters.requests.iter().map(|r| r.count).sum();
    s
}

/// `Action n` totals of one service.
fn breakdown_totals(counters: &Counters, service: &str) -> String {
    let mut by_action: BTreeMap<&str, u64> = BTreeMap::new();
    for r in counters.requests.iter().filter(|r| r.service == service) {
        *by_action.entry(&r.action).or_default() += r.count;
    }
    by_action
        .iter()
        .map(|(a, n)| format!("{a} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The machine: CPUs, memory, CPU model, kernel.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or_else(
            || "?".to_owned(),
            |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0),
        );
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "?".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned());
    format!(
        "Machine: {cpus} CPUs (`nproc`), {mem_gib} memory, {model}, Linux {kernel}. The \
         emulator (moto 5.2.5), keyturn and Custodian share these CPUs."
    )
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// The work tree's commit, marked when it has changes.
fn git_revision() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("at {rev} plus uncommitted changes")
            } else {
                format!("at {rev}")
            }
        }
        None => "(revision unknown)".to_owned(),
    }
}

/// Replaces this size's section of `path` (between its markers) with `text`, or appends
/// it; the rest of the file is kept.
fn write_section(path: &Path, accounts: usize, quick: bool, text: &str) -> Result<(), String> {
    let tag = if quick {
        format!("quick-{accounts}")
    } else {
        accounts.to_string()
    };
    let begin =
        format!("<!-- keyturn-bench:{tag}:begin (generated by cargo xtask bench; do not edit) -->");
    let end = format!("<!-- keyturn-bench:{tag}:end -->");
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    let section = format!("{begin}\n{}\n{end}", text.trim_end());
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{section}{}", &old[..b], &old[e + end.len()..])
        }
        _ => format!("{}\n{section}\n", old.trim_end()),
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::write(path, new).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
