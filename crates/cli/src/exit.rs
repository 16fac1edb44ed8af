//! Exit codes, defined in one place and produced by one function.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | internal error (a bug, or something keyturn cannot classify) |
//! | 2 | invalid input: bad arguments, policy file, journal location or identifier; nothing was changed |
//! | 3 | partial: the command finished, but some accounts failed on AWS (listed on stderr) |
//! | 4 | AWS unavailable or refusing: the caller's identity or the organization could not be read |
//! | 5 | journal problem: not initialised, written by a newer keyturn, or unreachable |
//! | 6 | tampered: an event was modified, deleted or reordered outside keyturn |
//!
//! `docs/cli.md` carries the same table for users; a test keeps the two in step.

use std::fmt;

/// Every way `keyturn` can end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked for was done.
    Success = 0,
    /// A bug or an unclassified failure.
    Internal = 1,
    /// The input was refused before anything was contacted or changed.
    InvalidInput = 2,
    /// Some accounts failed; the others completed.
    Partial = 3,
    /// AWS could not be used at all.
    Aws = 4,
    /// The journal could not be used.
    Journal = 5,
    /// The journal's hash chains are broken.
    Tampered = 6,
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit as u8)
    }
}

/// A command's failure, classified by the exit code it produces.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub exit: Exit,
    /// The message for stderr (never a secret).
    pub message: String,
}

impl Failure {
    /// A failure with this exit code and message.
    pub fn new(exit: Exit, message: impl fmt::Display) -> Self {
        Self {
            exit,
            message: message.to_string(),
        }
    }
}

impl From<keyturn_worker::WorkerError> for Failure {
    fn from(e: keyturn_worker::WorkerError) -> Self {
        let exit = match e {
            keyturn_worker::WorkerError::Rejected(_) => Exit::InvalidInput,
            keyturn_worker::WorkerError::Aws(_) => Exit::Aws,
            keyturn_worker::WorkerError::Unexpected(_) => Exit::Internal,
            keyturn_worker::WorkerError::Tampered(_) => Exit::Tampered,
            keyturn_worker::WorkerError::Journal(e) => {
                return crate::commands::journal::journal_failure(e);
            }
        };
        Self::new(exit, e)
    }
}

/// What a command returns: `Ok(Exit::Success)` or `Ok(Exit::Partial)` after doing its
/// work, `Err` when it stopped.
pub type Outcome = Result<Exit, Failure>;

/// Prints a failure and turns the outcome into the process exit code.
pub fn report(outcome: Outcome) -> std::process::ExitCode {
    match outcome {
        Ok(exit) => exit.into(),
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            failure.exit.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Exit;

    /// The user-facing table in docs/cli.md must list exactly these codes.
    #[test]
    fn docs_list_every_exit_code() {
        let docs = include_str!("../../../docs/cli.md");
        let codes = [
            (Exit::Success, "success"),
            (Exit::Internal, "internal error"),
            (Exit::InvalidInput, "invalid input"),
            (Exit::Partial, "partial"),
            (Exit::Aws, "AWS unavailable"),
            (Exit::Journal, "journal problem"),
            (Exit::Tampered, "tampered"),
        ];
        for (exit, words) in codes {
            let row = format!("| {} | {words}", exit as u8);
            assert!(docs.contains(&row), "docs/cli.md lacks the row {row:?}");
        }
        let rows = docs
            .lines()
            .filter(|l| l.starts_with("| ") && l[2..].starts_with(|c: char| c.is_ascii_digit()))
            .count();
        assert_eq!(
            rows,
            codes.len(),
            "docs/cli.md lists an exit code keyturn does not have"
        );
    }
}
