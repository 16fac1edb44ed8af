//! Seeds that found a defect on the code before its fix, replayed on every test run:
//! each must now be clean. `cargo xtask sim --seed S --trace` shows what the seed does.
//!
//! A seed's world is what the simulator of its time drew from it: 267, 270, 18, 60, 22,
//! 40, 2245, 20, 239, 17173, 29878, 32762, 25048, 33046, 32013, 16869, 394 and 661 were
//! found by this simulator (2245 and the five-digit ones in the 100,000-seed runs; 20
//! and 239 by the claim invariant; 18, 60, 22 and 40 with defects 2 and 7 undone on
//! commit b7cc4d9; 394 and 661 with defect 6 undone, by the person who retires an old key
//! after a crash);
//! the others by the simulator as of commit 289ab51 (before the second campaign was
//! added, which draws from the seed too), so here they replay other interleavings and
//! stand as guards. `docs/simulation.md` says how each was found (the fix undone alone,
//! 2,000 seeds).

/// (seed, the defect it found).
const REGRESSIONS: &[(u64, &str)] = &[
    (
        1230,
        "a mutation decided on the run's first listing deleted a key a person had just made Inactive",
    ),
    (
        674,
        "the unbounded orphan rule deleted an Active key a person created after the create intent",
    ),
    (
        1182,
        "the unbounded orphan rule deleted an Active key a person created after the create intent",
    ),
    (
        19,
        "two keys waiting for each other's slot after a rollback turned a retirement into a rotation",
    ),
    (
        358,
        "two keys waiting for each other's slot after a rollback turned a retirement into a rotation",
    ),
    (
        267,
        "overlapping campaigns: a second campaign deleted a key the first had deactivated, before its observation period",
    ),
    (
        270,
        "overlapping campaigns: a second campaign deleted a key the first had deactivated the day before",
    ),
    (
        18,
        "the old key deleted at the end of its observation while its replacement was gone",
    ),
    (
        60,
        "the old key deleted at the end of its observation while its replacement was gone",
    ),
    (
        22,
        "a policy with a one-hour quiet period, accepted, deactivated a key used six hours before",
    ),
    (
        40,
        "a policy with a 300000-year adoption timeout, accepted, left a key awaiting adoption for good",
    ),
    (
        2245,
        "an observed old key a person made Active, used and made Inactive again was deleted at the end of its observation",
    ),
    (
        20,
        "a worker finished a rollback's reactivation before its lazily taken claim was written",
    ),
    (
        239,
        "a worker finished a rollback's reactivation before its lazily taken claim was written",
    ),
    (
        17173,
        "a PutSecretValue stalled past its claim landed after a takeover: the secret held a key deleted as an orphan",
    ),
    (
        29878,
        "a stalled first delivery landed after a takeover created the secret: the secret held a key deleted as an orphan",
    ),
    (
        32762,
        "a stalled delivery landed after a takeover; applications followed the secret to a deleted key and the old key was then retired under them",
    ),
    (
        25048,
        "a rollback's reactivation whose answer was lost was retried under its first intent, over a person's deactivation",
    ),
    (
        33046,
        "a rollback's reactivation whose answer was lost was retried under its first intent, over a person's deactivation",
    ),
    (
        32013,
        "an old key a person made Inactive for a day looked quiet and was deactivated under a daily job",
    ),
    (
        16869,
        "a CreateAccessKey sent after the run's process woke past its claim left a key nobody had the secret of",
    ),
    (
        394,
        "defect 6: the old key vanished after a crash between create and delivery; the replacement outlived its lost secret",
    ),
    (
        661,
        "defect 6: the old key vanished after a crash between create and delivery; the replacement outlived its lost secret",
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
