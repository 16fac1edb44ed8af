//! `keyturn-sim --seeds N [--from K]` runs N seeds (K, K+1, …) and reports each failing
//! one with the broken invariant; `keyturn-sim --seed S` replays one seed and prints its
//! whole trace. `cargo xtask sim` builds and runs it.

use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut seeds: u64 = 100;
    let mut from: u64 = 1;
    let mut one: Option<u64> = None;
    let mut verbose = false;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> u64 {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("{name} needs a number");
                std::process::exit(2)
            })
        };
        match arg.as_str() {
            "--seeds" => seeds = value("--seeds"),
            "--from" => from = value("--from"),
            "--seed" => one = Some(value("--seed")),
            "--trace" => verbose = true,
            other => {
                eprintln!(
                    "unknown argument {other:?}\nusage: keyturn-sim [--seeds N] [--from K] | --seed S [--trace]"
                );
                return ExitCode::from(2);
            }
        }
    }
    if let Some(seed) = one {
        let outcome = keyturn_sim::run_seed(seed);
        if verbose || !outcome.violations.is_empty() {
            for line in &outcome.trace {
                println!("{line}");
            }
        }
        return report(&[outcome]);
    }
    let started = Instant::now();
    // Seeds are independent: they run on every core, each on a runtime of its own.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let mut outcomes: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (from..from + seeds)
                        .filter(|seed| seed % threads == t)
                        .map(keyturn_sim::run_seed)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a simulation thread"))
            .collect()
    });
    outcomes.sort_by_key(|o| o.seed);
    let code = report(&outcomes);
    println!(
        "{} seeds in {:.1} s: {} passed, {} failed",
        outcomes.len(),
        started.elapsed().as_secs_f64(),
        outcomes.iter().filter(|o| o.violations.is_empty()).count(),
        outcomes.iter().filter(|o| !o.violations.is_empty()).count()
    );
    code
}

/// Prints every failing seed with its first broken invariant and how to replay it.
fn report(outcomes: &[keyturn_sim::Outcome]) -> ExitCode {
    let mut failed = false;
    for outcome in outcomes.iter().filter(|o| !o.violations.is_empty()) {
        failed = true;
        println!(
            "seed {} FAILED: {} (and {} more); replay: cargo xtask sim --seed {}",
            outcome.seed,
            outcome.violations[0],
            outcome.violations.len() - 1,
            outcome.seed
        );
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
