//! Named failpoints at every step boundary of the drive loop (`campaign/run.rs`): before
//! and after each AWS mutation, and before and after each journal append.
//!
//! They exist for the crash tests (`tests/e2e/crash.rs`), which kill a `keyturn run` at
//! each of them and check that a fresh process resumes safely. They are compiled in only
//! with the `failpoints` feature (`keyturn-cli/failpoints`), built on the `fail` crate;
//! without it, [`Failpoint::hit`] is an empty function and the `fail` crate is not linked.
//!
//! With the feature, the binary reads the `FAILPOINTS` environment variable at start-up
//! ([`setup`]), in the `fail` crate's syntax: `FAILPOINTS='run::after-create=return'`
//! makes the process abort (as abruptly as a power cut: no destructor, no flush, no
//! claim released) the first time it reaches `run::after-create`.
//! `return(trace)` instead prints `failpoint NAME: reached` to stderr and goes on.
//! Every name is listed in [`FAILPOINTS`].

/// One named failpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failpoint(&'static str);

impl Failpoint {
    /// The failpoint's name, such as `run::after-create`.
    pub const fn name(self) -> &'static str {
        self.0
    }

    /// Evaluates the failpoint: nothing unless the `failpoints` feature is on and
    /// `FAILPOINTS` configures it. Configured `return`, it aborts the process; configured
    /// `return(trace)`, it prints `failpoint NAME: reached` to stderr and returns.
    #[inline(always)]
    pub fn hit(self) {
        #[cfg(feature = "failpoints")]
        {
            let name = self.0;
            fail::fail_point!(name, |arg: Option<String>| {
                if arg.as_deref() == Some("trace") {
                    eprintln!("failpoint {name}: reached");
                } else {
                    eprintln!("failpoint {name}: crashing the process");
                    std::process::abort();
                }
            });
        }
    }
}

/// The two failpoints around one AWS call or one journal append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Boundary {
    /// Right before the call or the append.
    pub before: Failpoint,
    /// Right after it returned, before anything else.
    pub after: Failpoint,
}

impl Boundary {
    /// Runs `step` between the two failpoints.
    pub async fn around<T>(self, step: impl Future<Output = T>) -> T {
        Self::around_all(&[self], step).await
    }

    /// Runs `step` between the failpoints of every boundary, nested in order: one
    /// write that carries the appends of several boundaries.
    pub async fn around_all<T>(boundaries: &[Boundary], step: impl Future<Output = T>) -> T {
        for b in boundaries {
            b.before.hit();
        }
        let out = step.await;
        for b in boundaries.iter().rev() {
            b.after.hit();
        }
        out
    }
}

macro_rules! boundaries {
    ($($(#[$doc:meta])* $konst:ident => $before:literal, $after:literal;)*) => {
        $(
            $(#[$doc])*
            pub const $konst: Boundary = Boundary {
                before: Failpoint($before),
                after: Failpoint($after),
            };
        )*

        /// Every failpoint name, by pairs (before, after), in the order of the
        /// declarations above. The crash tests crash a run at each of them, so a name
        /// listed here that no run reaches fails them.
        pub const FAILPOINTS: &[&str] = &[$($before, $after),*];
    };
}

boundaries! {
    /// IAM CreateAccessKey, the replacement (the one step whose result is returned once).
    CREATE => "run::before-create", "run::after-create";
    /// Secrets Manager: storing the replacement's secret and reading it back.
    DELIVER => "run::before-deliver", "run::after-deliver";
    /// STS GetCallerIdentity signed with the replacement.
    VERIFY => "run::before-verify", "run::after-verify";
    /// IAM UpdateAccessKey to Inactive.
    DEACTIVATE => "run::before-deactivate", "run::after-deactivate";
    /// IAM DeleteAccessKey of the old key.
    DELETE => "run::before-delete", "run::after-delete";
    /// IAM DeleteAccessKey of a replacement whose secret was never stored.
    DELETE_ORPHAN => "run::before-delete-orphan", "run::after-delete-orphan";
    /// IAM UpdateAccessKey to Active (rollback).
    REACTIVATE => "run::before-reactivate", "run::after-reactivate";

    /// Appending the enrollment of a user's newly seen keys.
    APPEND_ENROLL => "run::before-append-enroll", "run::after-append-enroll";
    /// Appending the intent to create the replacement.
    APPEND_INTENT_CREATE => "run::before-append-intent-create", "run::after-append-intent-create";
    /// Appending `replacement-created`.
    APPEND_CREATED => "run::before-append-created", "run::after-append-created";
    /// Appending the intent to deliver the secret.
    APPEND_INTENT_DELIVER => "run::before-append-intent-deliver", "run::after-append-intent-deliver";
    /// Appending `secret-delivered`.
    APPEND_DELIVERED => "run::before-append-delivered", "run::after-append-delivered";
    /// Appending `secret-delivered` found on resume (the delivery was made, not recorded).
    APPEND_RECOVERED => "run::before-append-recovered", "run::after-append-recovered";
    /// Appending `replacement-verified`.
    APPEND_VERIFIED => "run::before-append-verified", "run::after-append-verified";
    /// Appending the intent to deactivate.
    APPEND_INTENT_DEACTIVATE => "run::before-append-intent-deactivate", "run::after-append-intent-deactivate";
    /// Appending `key-deactivated`.
    APPEND_DEACTIVATED => "run::before-append-deactivated", "run::after-append-deactivated";
    /// Appending the intent to delete.
    APPEND_INTENT_DELETE => "run::before-append-intent-delete", "run::after-append-intent-delete";
    /// Appending `key-deleted`.
    APPEND_DELETED => "run::before-append-deleted", "run::after-append-deleted";
    /// Appending the intent to delete an orphan.
    APPEND_INTENT_DELETE_ORPHAN => "run::before-append-intent-delete-orphan", "run::after-append-intent-delete-orphan";
    /// Appending `orphan-deleted`.
    APPEND_ORPHAN_DELETED => "run::before-append-orphan-deleted", "run::after-append-orphan-deleted";
    /// Appending an event the planner decided without an AWS call (an outcome observed on
    /// resume, a key blocked, released, failed, vanished or re-planned).
    APPEND_RECORD => "run::before-append-record", "run::after-append-record";
    /// Appending `step-failed` in the drive loop.
    APPEND_FAILED => "run::before-append-failed", "run::after-append-failed";
    /// Appending a rollback's request and its intent to reactivate.
    APPEND_INTENT_REACTIVATE => "run::before-append-intent-reactivate", "run::after-append-intent-reactivate";
    /// Appending `key-reactivated` (rollback).
    APPEND_REACTIVATED => "run::before-append-reactivated", "run::after-append-reactivated";
    /// Appending `step-failed` of a rollback's reactivation.
    APPEND_REACTIVATE_FAILED => "run::before-append-reactivate-failed", "run::after-append-reactivate-failed";
}

/// Configures the failpoints from the `FAILPOINTS` environment variable, for the life
/// of the returned guard. Call it once, at the start of `main`. Panics when
/// `FAILPOINTS` is malformed.
#[cfg(feature = "failpoints")]
pub fn setup() -> fail::FailScenario<'static> {
    fail::FailScenario::setup()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn names_are_unique_and_well_formed() {
        let unique: BTreeSet<&str> = FAILPOINTS.iter().copied().collect();
        assert_eq!(
            unique.len(),
            FAILPOINTS.len(),
            "a failpoint name is repeated"
        );
        for pair in FAILPOINTS.chunks(2) {
            let before = pair[0].strip_prefix("run::before-").unwrap();
            let after = pair[1].strip_prefix("run::after-").unwrap();
            assert_eq!(before, after, "{pair:?} is not a before/after pair");
        }
    }

    /// Every boundary declared here is used by the drive loop (which evaluates both of
    /// its failpoints through `Boundary::around`). That each is reached at run time is
    /// what the crash tests check.
    #[test]
    fn every_boundary_is_used_by_the_drive_loop() {
        let this = include_str!("failpoints.rs");
        let run = include_str!("campaign/run.rs");
        let declared: Vec<&str> = this
            .lines()
            .filter_map(|l| l.trim().split_once(" => \"run::"))
            .map(|(konst, _)| konst)
            .collect();
        assert_eq!(declared.len() * 2, FAILPOINTS.len());
        for konst in declared {
            let needle = format!("fp::{konst}");
            let used = run.match_indices(&needle).any(|(at, _)| {
                !run[at + needle.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
            });
            assert!(used, "campaign/run.rs never uses {needle}");
        }
    }
}
