//! Seeds that found a defect on the code before its fix, replayed on every test run:
//! each must now be clean. `cargo xtask sim --seed S --trace` shows what the seed does.

/// (seed, the defect it found).
const REGRESSIONS: &[(u64, &str)] = &[
    (
        267,
        "overlapping campaigns: a second campaign deleted a key the first had deactivated, before its observation period",
    ),
    (
        270,
        "overlapping campaigns: a second campaign deleted a key the first had deactivated the day before",
    ),
];

#[test]
fn seeds_that_found_defects_stay_clean() {
    let mut failures = Vec::new();
    for (seed, defect) in REGRESSIONS {
        let outcome = keyturn_sim::run_seed(*seed);
        if !outcome.violations.is_empty() {
            failures.push(format!(
                "seed {seed} (it found: {defect}) fails again: {}\n{}",
                outcome.violations.join("; "),
                outcome.trace.join("\n")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
