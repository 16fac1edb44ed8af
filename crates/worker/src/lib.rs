//! keyturn's imperative shell: the AWS adapters and the steps that act on them.
//!
//! This is the only crate that links the IAM, STS, Organizations and Secrets Manager
//! SDKs. It decides nothing about rotation itself (the planner does); it reads AWS,
//! performs the steps the planner asks for, and reports failures per account with the
//! AWS error code.

pub mod campaign;
pub mod credential_report;
pub mod error;
pub mod failpoints;
pub mod iam;
pub mod inventory;
pub mod notify;
pub mod org;
pub mod permissions;
pub mod port;
pub mod secret;
pub mod session;
pub mod steps;
pub mod telemetry;

pub use aws_config::SdkConfig;
pub use error::{AccountError, AwsFailure, WorkerError};
pub use session::{Caller, Sessions};
