//! AWS sessions: the caller's own configuration and one assumed-role configuration per
//! member account.
//!
//! Every client of an account is built from that account's `SdkConfig`, whose credentials
//! provider assumes the role once, caches the credentials and refreshes them near expiry:
//! a role is never re-assumed per call. Every SDK client of the process shares one HTTP
//! client (one connection pool and one TLS set-up), and every AssumeRole goes through one
//! STS client: per-account clients would each load the trust store and keep a pool of
//! their own, which at a thousand accounts costs more memory than everything else.
//!
//! CloudTrail attribution: the role session name is `keyturn-<purpose>-<run>` and, where
//! the role's trust policy allows `sts:SetSourceIdentity`, the source identity is
//! `keyturn-<purpose>` (the campaign's name for `run` and `rollback`). A role that refuses
//! the source identity is assumed again without it, once, and remembered, so a trust
//! policy without `sts:SetSourceIdentity` costs one extra call per account and a warning.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_sdk_sts::error::ProvideErrorMetadata;
use aws_smithy_http_client::ConnectorBuilder;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use keyturn_planner::{AccountId, ExternalId, RoleName};

use crate::error::{AwsFailure, WorkerError};

/// Loads the caller's AWS configuration from the usual sources (environment, profile,
/// instance role), with standard retries: exponential backoff with jitter, up to six
/// attempts. Not the adaptive mode: its client-side rate limiter is shared by every
/// account of the process, so one throttled account would slow all the others (and
/// under steady throttling it slowed a whole run to a request every second or two).
/// Every operation, its retries included, is cut off after
/// [`OPERATION_TIMEOUT`](crate::port::OPERATION_TIMEOUT): a call that hangs (a stuck
/// connection, a laptop that slept) gives the worker control back well within half of
/// its claim's time to live. `AWS_ENDPOINT_URL` is honoured, which is how tests and the
/// demo point keyturn at the local emulator.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(shared_http_client())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(6)
                .with_initial_backoff(Duration::from_millis(100)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(crate::port::OPERATION_TIMEOUT)
                .build(),
        )
        .load()
        .await
}

/// The HTTP client every SDK client of the process shares: what the SDK builds for each
/// client by default (hyper 1 with rustls on aws-lc, the proxy taken from the
/// environment), built once. Connectors are made per distinct timeout setting and
/// cached by the client, so all of keyturn's clients use one connection pool.
fn shared_http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector =
            ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
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
    /// The STS client every AssumeRole goes through.
    sts: aws_sdk_sts::Client,
    session_name: String,
    source_identity: String,
    /// One configuration per (account, role, external id), built once per process, so
    /// that every client of an account shares one set of assumed-role credentials.
    accounts: Arc<tokio::sync::Mutex<HashMap<String, SdkConfig>>>,
}

/// Credentials assumed once and shared by every client built from one account's
/// configuration; refreshed when less than five minutes remain. (Each SDK client
/// would otherwise keep an identity cache of its own and assume the role again.)
#[derive(Debug)]
struct SharedAssumedRole {
    sts: aws_sdk_sts::Client,
    role_arn: String,
    session_name: String,
    external_id: Option<String>,
    source_identity: String,
    /// Set once the role refused the source identity: later refreshes go without it.
    source_identity_refused: AtomicBool,
    cached: tokio::sync::Mutex<Option<Credentials>>,
}

/// How long before expiry assumed-role credentials are refreshed.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

/// What a provider error is named, in the credentials it produces.
const PROVIDER_NAME: &str = "keyturn-assume-role";

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
        let credentials = self.assume().await?;
        *cached = Some(credentials.clone());
        Ok(credentials)
    }

    /// One AssumeRole, with the source identity unless the role has refused it; a
    /// refusal (AccessDenied) is retried once without it.
    async fn assume(&self) -> aws_credential_types::provider::Result {
        if !self.source_identity_refused.load(Ordering::Relaxed) {
            match self.call(Some(&self.source_identity)).await {
                Err(e) if e.code() == Some("AccessDenied") => {
                    let credentials = self
                        .call(None)
                        .await
                        .map_err(CredentialsError::provider_error)?;
                    self.source_identity_refused.store(true, Ordering::Relaxed);
                    tracing::warn!(
                        role = %self.role_arn,
                        "the role does not allow sts:SetSourceIdentity; assumed without a source identity, so CloudTrail ties this account's calls to the campaign by session name only"
                    );
                    return to_credentials(credentials);
                }
                result => return to_credentials(result.map_err(CredentialsError::provider_error)?),
            }
        }
        to_credentials(
            self.call(None)
                .await
                .map_err(CredentialsError::provider_error)?,
        )
    }

    async fn call(
        &self,
        source_identity: Option<&str>,
    ) -> Result<
        aws_sdk_sts::operation::assume_role::AssumeRoleOutput,
        aws_sdk_sts::error::SdkError<aws_sdk_sts::operation::assume_role::AssumeRoleError>,
    > {
        self.sts
            .assume_role()
            .role_arn(&self.role_arn)
            .role_session_name(&self.session_name)
            .set_external_id(self.external_id.clone())
            .set_source_identity(source_identity.map(str::to_owned))
            .send()
            .await
    }
}

/// The SDK's credentials out of an AssumeRole answer.
fn to_credentials(
    out: aws_sdk_sts::operation::assume_role::AssumeRoleOutput,
) -> aws_credential_types::provider::Result {
    let Some(c) = out.credentials() else {
        return Err(CredentialsError::unhandled(
            "AssumeRole returned no credentials",
        ));
    };
    let expiry = SystemTime::try_from(*c.expiration())
        .map_err(|e| CredentialsError::unhandled(format!("AssumeRole expiration: {e}")))?;
    Ok(Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        Some(expiry),
        PROVIDER_NAME,
    ))
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
    /// Identifies the caller with STS GetCallerIdentity. `purpose` (the campaign, or the
    /// command) and `run_id` name the member-account sessions in CloudTrail.
    pub async fn new(base: SdkConfig, purpose: &str, run_id: &str) -> Result<Self, WorkerError> {
        let sts = crate::telemetry::sts_client(&base);
        let out = sts
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
            sts,
            session_name: session_name(purpose, run_id),
            source_identity: source_identity(purpose),
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
        let provider = SharedAssumedRole {
            sts: self.sts.clone(),
            role_arn,
            session_name: self.session_name.clone(),
            external_id: external_id.map(|e| e.as_str().to_owned()),
            source_identity: self.source_identity.clone(),
            source_identity_refused: AtomicBool::new(false),
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
    sts_name(&format!("keyturn-{purpose}-{run_id}"))
}

/// The source identity keyturn sets when it assumes a member role: `keyturn-<purpose>`.
/// It stays on the session (and on any role chained from it), so CloudTrail in the
/// member account names the campaign even where the session name was cut short.
pub fn source_identity(purpose: &str) -> String {
    sts_name(&format!("keyturn-{purpose}"))
}

/// `text` in the characters STS allows in session names and source identities
/// (`[\w+=,.@-]`), at most 64 of them.
fn sts_name(text: &str) -> String {
    let mut name: String = text
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(*c))
        .collect();
    name.truncate(64);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_to_what_sts_allows() {
        assert_eq!(
            session_name("q3-rotation", "abc123"),
            "keyturn-q3-rotation-abc123"
        );
        assert_eq!(source_identity("q3 rotation/ü"), "keyturn-q3rotation");
        let long = "c".repeat(80);
        assert_eq!(source_identity(&long).len(), 64);
        assert_eq!(session_name(&long, "r").len(), 64);
    }
}
