//! Errors of the worker, shaped by how the caller reacts, and the AWS error code of a failure.
//!
//! An AWS failure keeps the code AWS answered with (`AccessDenied`, `Throttling`, …)
//! so that operators and scripts can act on it; the message never carries request
//! payloads, so no secret can leak through an error.

use std::error::Error as StdError;

use aws_sdk_sts::operation::assume_role::AssumeRoleError;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// One failed AWS call, reduced to what an operator needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation} failed with {code}: {message}")]
pub struct AwsFailure {
    /// The API operation, e.g. `ListAccessKeys`.
    pub operation: &'static str,
    /// The AWS error code, or the SDK's failure kind when no response came back.
    pub code: String,
    /// A readable description (never a request payload).
    pub message: String,
}

impl AwsFailure {
    /// Reduces an SDK error of `operation` to its code and message.
    pub fn from_sdk<E>(operation: &'static str, err: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let (code, message) = match err {
            SdkError::ServiceError(service) => {
                let e = service.err();
                (
                    e.code().unwrap_or("Unknown").to_owned(),
                    e.message().unwrap_or("no message").to_owned(),
                )
            }
            other => {
                let code = assume_role_code(other).unwrap_or_else(|| kind_of(other).to_owned());
                (code, DisplayErrorContext(other).to_string())
            }
        };
        Self {
            operation,
            code,
            message,
        }
    }

    /// Whether retrying later may succeed (throttling, 5xx, network trouble).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.code.as_str(),
            "Throttling"
                | "ThrottlingException"
                | "TooManyRequestsException"
                | "RequestLimitExceeded"
                | "ServiceUnavailable"
                | "InternalFailure"
                | "InternalError"
                | "ServiceFailure"
                | "TimeoutError"
                | "DispatchFailure"
        )
    }
}

/// The SDK's failure kind, for errors that carry no AWS error code.
fn kind_of<E, R>(err: &SdkError<E, R>) -> &'static str {
    match err {
        SdkError::ConstructionFailure(_) => "ConstructionFailure",
        SdkError::TimeoutError(_) => "TimeoutError",
        SdkError::DispatchFailure(_) => "DispatchFailure",
        SdkError::ResponseError(_) => "ResponseError",
        SdkError::ServiceError(_) => "ServiceError",
        _ => "Unknown",
    }
}

/// When a call failed because its credentials could not be obtained, the code of the
/// STS AssumeRole call behind them (an account whose role cannot be assumed).
fn assume_role_code(err: &(dyn StdError + 'static)) -> Option<String> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    let mut saw_credentials = false;
    while let Some(e) = current {
        if let Some(sts) = e.downcast_ref::<SdkError<AssumeRoleError, HttpResponse>>() {
            return Some(match sts {
                SdkError::ServiceError(s) => {
                    s.err().code().unwrap_or("AssumeRoleFailed").to_owned()
                }
                other => kind_of(other).to_owned(),
            });
        }
        saw_credentials |= e
            .downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
            .is_some();
        current = e.source();
    }
    saw_credentials.then(|| "CredentialsError".to_owned())
}

/// Errors that stop a whole command (as opposed to one account's failure).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The organization or the caller's identity could not be read.
    #[error("{0}")]
    Aws(#[from] AwsFailure),
    /// The request breaks a rule (e.g. an account listed in the policy that is not in the organization).
    #[error("{0}")]
    Rejected(String),
    /// AWS answered with something keyturn cannot interpret.
    #[error("unexpected answer from AWS: {0}")]
    Unexpected(String),
    /// The journal could not be used.
    #[error(transparent)]
    Journal(#[from] keyturn_journal::JournalError),
    /// A campaign's events fail their hash chain: nothing is decided or reported from
    /// them.
    #[error(
        "{0}; keyturn does not act on or report from a journal whose events were modified, \
         removed or reordered (`keyturn verify` lists every break)"
    )]
    Tampered(#[from] keyturn_journal::ChainError),
}

/// Why a run gave up one account (the other accounts go on): each kind has its own exit
/// code (`docs/cli.md`).
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// An AWS call the account needed failed (after the SDK's retries).
    #[error("{0}")]
    Aws(#[from] AwsFailure),
    /// The journal failed a read or a write of the account.
    #[error("the journal failed: {0}")]
    Journal(keyturn_journal::JournalError),
    /// A stream of the account was altered outside keyturn since the run read it.
    #[error("{0}")]
    Tampered(String),
    /// Something keyturn cannot classify (a bug).
    #[error("{0}")]
    Internal(String),
}

impl AccountError {
    /// The AWS error code, the journal's word for its failure, or `Tampered`.
    pub fn code(&self) -> &str {
        match self {
            AccountError::Aws(failure) => &failure.code,
            AccountError::Journal(_) => "JournalError",
            AccountError::Tampered(_) => "Tampered",
            AccountError::Internal(_) => "Internal",
        }
    }
}

impl From<keyturn_journal::JournalError> for AccountError {
    fn from(e: keyturn_journal::JournalError) -> Self {
        if e.is_tampering() {
            AccountError::Tampered(e.to_string())
        } else {
            AccountError::Journal(e)
        }
    }
}

impl From<WorkerError> for AccountError {
    fn from(e: WorkerError) -> Self {
        match e {
            WorkerError::Aws(failure) => AccountError::Aws(failure),
            WorkerError::Journal(e) => e.into(),
            WorkerError::Tampered(_) => AccountError::Tampered(e.to_string()),
            WorkerError::Rejected(_) | WorkerError::Unexpected(_) => {
                AccountError::Internal(e.to_string())
            }
        }
    }
}
