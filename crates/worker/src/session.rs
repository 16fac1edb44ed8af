//! AWS sessions: the caller's own configuration and one assumed-role configuration per
//! member account.
//!
//! Every client of an account is built from that account's `SdkConfig`, whose
//! `AssumeRoleProvider` assumes the role once, caches the credentials and refreshes
//! them near expiry: a role is never re-assumed per call.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use keyturn_planner::{AccountId, ExternalId, RoleName};

use crate::error::{AwsFailure, WorkerError};

/// Loads the caller's AWS configuration from the usual sources (environment, profile,
/// instance role), with standard retries: exponential backoff with jitter, up to six
/// attempts. Not the adaptive mode: its client-side rate limiter is shared by every
/// account of the process, so one throttled account would slow all the others (and
/// under steady throttling it slowed a whole run to a request every second or two).
/// `AWS_ENDPOINT_URL` is honoured,
/// which is how tests and the demo point keyturn at the local emulator.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(6)
                .with_initial_backoff(Duration::from_millis(100)),
        )
        .load()
        .await
}

/// Who is running keyturn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The caller's account (the organization's management account, or a delegated administrator).
    pub account_id: AccountId,
    /// The caller's ARN, recorded as the actor of journal events.
    pub arn: String,
    /// The ARN partition (`aws`, `aws-us-gov`, `aws-cn`).
    pub partition: String,
}

/// The caller's configuration and the means to reach every member account.
#[derive(Debug, Clone)]
pub struct Sessions {
    base: SdkConfig,
    caller: Caller,
    session_name: String,
    /// One configuration per (account, role, external id), built once per process, so
    /// that every client of an account shares one set of assumed-role credentials.
    accounts: Arc<tokio::sync::Mutex<HashMap<String, SdkConfig>>>,
}

/// Credentials assumed once and shared by every client built from one account's
/// configuration; refreshed when less than five minutes remain. (Each SDK client
/// would otherwise keep an identity cache of its own and assume the role again.)
#[derive(Debug)]
struct SharedAssumedRole {
    provider: AssumeRoleProvider,
    cached: tokio::sync::Mutex<Option<Credentials>>,
}

/// How long before expiry assumed-role credentials are refreshed.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

impl SharedAssumedRole {
    async fn credentials(&self) -> aws_credential_types::provider::Result {
        let mut cached = self.cached.lock().await;
        if let Some(credentials) = cached.as_ref() {
            let fresh = credentials.expiry().is_none_or(|expiry| {
                expiry
                    .duration_since(SystemTime::now())
                    .is_ok_and(|left| left > REFRESH_BEFORE)
            });
            if fresh {
                return Ok(credentials.clone());
            }
        }
        let credentials = self.provider.provide_credentials().await?;
        *cached = Some(credentials.clone());
        Ok(credentials)
    }
}

impl ProvideCredentials for SharedAssumedRole {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.credentials())
    }
}

impl Sessions {
    /// Identifies the caller with STS GetCallerIdentity.
    pub async fn new(base: SdkConfig, session_name: &str) -> Result<Self, WorkerError> {
        let out = aws_sdk_sts::Client::new(&base)
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| AwsFailure::from_sdk("GetCallerIdentity", &e))?;
        let arn = out.arn().unwrap_or_default().to_owned();
        let account = out.account().unwrap_or_default();
        let account_id = AccountId::new(account)
            .map_err(|e| WorkerError::Unexpected(format!("GetCallerIdentity returned {e}")))?;
        let partition = arn
            .split(':')
            .nth(1)
            .filter(|p| !p.is_empty())
            .unwrap_or("aws")
            .to_owned();
        Ok(Self {
            base,
            caller: Caller {
                account_id,
                arn,
                partition,
            },
            session_name: session_name.to_owned(),
            accounts: Arc::default(),
        })
    }

    /// The caller's identity.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// The caller's own configuration.
    pub fn base(&self) -> &SdkConfig {
        &self.base
    }

    /// The configuration for `account`: the caller's own for the caller's account,
    /// otherwise credentials of `role` assumed in that account (lazily, on first use).
    pub async fn for_account(
        &self,
        account: &AccountId,
        role: &RoleName,
        external_id: Option<&ExternalId>,
    ) -> SdkConfig {
        if *account == self.caller.account_id {
            return self.base.clone();
        }
        let memo = format!(
            "{account}/{role}/{}",
            external_id.map_or("", |e| e.as_str())
        );
        let mut accounts = self.accounts.lock().await;
        if let Some(config) = accounts.get(&memo) {
            return config.clone();
        }
        let role_arn = format!(
            "arn:{}:iam::{}:role/{}",
            self.caller.partition, account, role
        );
        let mut builder = AssumeRoleProvider::builder(role_arn)
            .session_name(&self.session_name)
            .configure(&self.base);
        if let Some(external_id) = external_id {
            builder = builder.external_id(external_id.as_str());
        }
        let provider = SharedAssumedRole {
            provider: builder.build().await,
            cached: tokio::sync::Mutex::new(None),
        };
        let config = self
            .base
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build();
        accounts.insert(memo, config.clone());
        config
    }
}

/// A session name that identifies keyturn in CloudTrail: `keyturn-<purpose>-<run>`.
pub fn session_name(purpose: &str, run_id: &str) -> String {
    let mut name: String = format!("keyturn-{purpose}-{run_id}")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(*c))
        .collect();
    name.truncate(64);
    name
}
