//! The port between keyturn's engine and AWS: what the inventory, `run` and `rollback`
//! ask of Organizations, STS, IAM and Secrets Manager, in keyturn's own terms.
//!
//! [`Cloud`] is the organization as the runner reaches it; [`AccountApi`] is one member
//! account through its assumed role. The production implementation is the AWS SDK
//! adapter ([`Sessions`](crate::Sessions) and [`SdkAccount`]), which the end-to-end tests
//! run against the emulator; the deterministic simulator (`crates/sim`) is the other.
//! Nothing behind the port decides anything about rotation: it reads and mutates, and
//! reports every failure as an [`AwsFailure`] with the AWS error code.
//!
//! The contract each implementation keeps, beyond the signatures:
//! - every list is complete (every page read);
//! - [`AccountApi::create_access_key`] never repeats a request that may have taken
//!   effect (it repeats one only after a throttling answer): a refusal it returns
//!   (`LimitExceeded`, `AccessDenied`, throttling…) proves that nothing was created;
//! - no call runs longer than [`OPERATION_TIMEOUT`] (the SDK adapter sets it as the
//!   operation timeout, retries included), so that an intent's call cannot take effect
//!   long after it was recorded, and a worker always gets control back well within half
//!   of its claim's time to live;
//! - a secret appears only in a [`NewAccessKey`] and in the delivery target, never in an
//!   error.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_iam::Client as IamClient;
use keyturn_planner::inventory::{KeyStatus, LastUse};
use keyturn_planner::{AccessKeyId, AccountId, Scope, UserName};

use crate::credential_report::{self, CredentialReport};
use crate::error::{AwsFailure, WorkerError};
use crate::iam::{self, IamUser};
use crate::org::{self, OrgAccount};
use crate::secret::NewAccessKey;
use crate::session::Sessions;
use crate::steps::{self, Deletion, Delivery, DeliveryMeta, ListedKey, SecretTarget, Voiding};
use crate::telemetry;

/// The longest any one AWS operation may take, its retries included. Well under half
/// of the shortest claim time to live a run accepts, so a worker stalled in a call gets
/// control back in time to see that its claim is running out.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The organization as the runner reaches it.
#[async_trait]
pub trait Cloud: Send + Sync + Debug {
    /// The ACTIVE accounts the scope selects (every page of ListAccounts, OUs walked).
    async fn accounts_in_scope(&self, scope: &Scope) -> Result<Vec<OrgAccount>, WorkerError>;

    /// The access key id the runner's calls are signed with, when it is an IAM user's
    /// long-term key: a run never deactivates or deletes it.
    async fn caller_key(&self) -> Option<AccessKeyId>;

    /// One member account, reached through the scope's role.
    async fn account(&self, account: &AccountId, scope: &Scope) -> Arc<dyn AccountApi>;

    /// The runner's own SDK configuration, for the notifications' SNS client; `None`
    /// where there is none (the simulator, which does not notify).
    fn sdk_config(&self) -> Option<&SdkConfig>;
}

/// One member account, through its assumed role.
#[async_trait]
pub trait AccountApi: Send + Sync {
    /// Every IAM user of the account with its tags.
    async fn list_users(&self) -> Result<Vec<IamUser>, AwsFailure>;

    /// The account's credential report (generated when missing or stale).
    async fn credential_report(&self) -> Result<CredentialReport, AwsFailure>;

    /// The user's keys (ListAccessKeys). A user that does not exist fails with
    /// `NoSuchEntity`.
    async fn list_access_keys(&self, user: &UserName) -> Result<Vec<ListedKey>, AwsFailure>;

    /// The key's last use, asked of IAM (GetAccessKeyLastUsed); `None`: never used.
    async fn last_used(&self, key: &AccessKeyId) -> Result<Option<LastUse>, AwsFailure>;

    /// Creates a key for the user (CreateAccessKey), never repeating a request that may
    /// have taken effect.
    async fn create_access_key(&self, user: &UserName) -> Result<NewAccessKey, AwsFailure>;

    /// Sets the key's status (UpdateAccessKey): idempotent.
    async fn set_access_key_status(
        &self,
        user: &UserName,
        key: &AccessKeyId,
        status: KeyStatus,
    ) -> Result<(), AwsFailure>;

    /// Deletes the user's key (DeleteAccessKey); a key already gone is
    /// [`Deletion::AlreadyGone`], a key of another user fails with `NoSuchEntity`.
    async fn delete_access_key(
        &self,
        user: &UserName,
        key: &AccessKeyId,
    ) -> Result<Deletion, AwsFailure>;

    /// Stores the key as the secret version `token` of the target, then reads it back
    /// (idempotent by `token`); see [`steps::deliver_secret`].
    async fn deliver_secret(
        &self,
        target: &SecretTarget,
        key: &NewAccessKey,
        meta: &DeliveryMeta,
        token: &str,
    ) -> Result<Delivery, AwsFailure>;

    /// The version `token` of the target secret and the key it holds, if stored.
    async fn find_delivery(
        &self,
        target: &SecretTarget,
        token: &str,
    ) -> Result<Option<(Delivery, AccessKeyId)>, AwsFailure>;

    /// Takes the version `token` of the target secret with a void document naming `key`,
    /// so that no delivery under `token` can land any more; see [`steps::void_delivery`].
    async fn void_delivery(
        &self,
        target: &SecretTarget,
        token: &str,
        key: &AccessKeyId,
        meta: &DeliveryMeta,
    ) -> Result<Voiding, AwsFailure>;

    /// The key stored in version `version_id` of the target secret, with its secret.
    async fn read_delivered_key(
        &self,
        target: &SecretTarget,
        version_id: &str,
    ) -> Result<NewAccessKey, AwsFailure>;

    /// Proves the key authenticates as the user (STS GetCallerIdentity signed with it),
    /// retrying through IAM's propagation delay for up to `max_wait`; returns the ARN.
    async fn verify_access_key(
        &self,
        key: &NewAccessKey,
        user: &UserName,
        max_wait: Duration,
    ) -> Result<String, AwsFailure>;
}

#[async_trait]
impl Cloud for Sessions {
    async fn accounts_in_scope(&self, scope: &Scope) -> Result<Vec<OrgAccount>, WorkerError> {
        let org = telemetry::organizations_client(self.base());
        org::accounts_in_scope(&org, scope).await
    }

    async fn caller_key(&self) -> Option<AccessKeyId> {
        steps::caller_access_key_id(self.base())
            .await
            .and_then(|k| AccessKeyId::new(k).ok())
    }

    async fn account(&self, account: &AccountId, scope: &Scope) -> Arc<dyn AccountApi> {
        let config = self
            .for_account(account, &scope.role_name, scope.external_id.as_ref())
            .await;
        Arc::new(SdkAccount::new(config))
    }

    fn sdk_config(&self) -> Option<&SdkConfig> {
        Some(self.base())
    }
}

/// One member account through the AWS SDK: the production [`AccountApi`].
#[derive(Debug, Clone)]
pub struct SdkAccount {
    config: SdkConfig,
    iam: IamClient,
}

impl SdkAccount {
    /// The account whose credentials `config` carries.
    pub fn new(config: SdkConfig) -> Self {
        let iam = telemetry::iam_client(&config);
        Self { config, iam }
    }

    /// The account with an IAM client of the caller's making (a test's mocked one);
    /// Secrets Manager and STS clients are still built from `config`.
    pub fn with_iam_client(config: SdkConfig, iam: IamClient) -> Self {
        Self { config, iam }
    }

    fn secrets_manager(&self, target: &SecretTarget) -> aws_sdk_secretsmanager::Client {
        steps::secrets_manager_client(&self.config, target.region.as_deref())
    }
}

#[async_trait]
impl AccountApi for SdkAccount {
    async fn list_users(&self) -> Result<Vec<IamUser>, AwsFailure> {
        iam::list_users(&self.iam).await
    }

    async fn credential_report(&self) -> Result<CredentialReport, AwsFailure> {
        credential_report::fetch(&self.iam).await
    }

    async fn list_access_keys(&self, user: &UserName) -> Result<Vec<ListedKey>, AwsFailure> {
        steps::list_access_keys(&self.iam, user).await
    }

    async fn last_used(&self, key: &AccessKeyId) -> Result<Option<LastUse>, AwsFailure> {
        iam::last_used(&self.iam, key).await
    }

    async fn create_access_key(&self, user: &UserName) -> Result<NewAccessKey, AwsFailure> {
        steps::create_access_key(&self.iam, user).await
    }

    async fn set_access_key_status(
        &self,
        user: &UserName,
        key: &AccessKeyId,
        status: KeyStatus,
    ) -> Result<(), AwsFailure> {
        steps::set_access_key_status(&self.iam, user, key, status).await
    }

    async fn delete_access_key(
        &self,
        user: &UserName,
        key: &AccessKeyId,
    ) -> Result<Deletion, AwsFailure> {
        steps::delete_access_key(&self.iam, user, key).await
    }

    async fn deliver_secret(
        &self,
        target: &SecretTarget,
        key: &NewAccessKey,
        meta: &DeliveryMeta,
        token: &str,
    ) -> Result<Delivery, AwsFailure> {
        steps::deliver_secret(&self.secrets_manager(target), target, key, meta, token).await
    }

    async fn find_delivery(
        &self,
        target: &SecretTarget,
        token: &str,
    ) -> Result<Option<(Delivery, AccessKeyId)>, AwsFailure> {
        steps::find_delivery(&self.secrets_manager(target), target, token).await
    }

    async fn void_delivery(
        &self,
        target: &SecretTarget,
        token: &str,
        key: &AccessKeyId,
        meta: &DeliveryMeta,
    ) -> Result<Voiding, AwsFailure> {
        steps::void_delivery(&self.secrets_manager(target), target, token, key, meta).await
    }

    async fn read_delivered_key(
        &self,
        target: &SecretTarget,
        version_id: &str,
    ) -> Result<NewAccessKey, AwsFailure> {
        steps::read_delivered_key(&self.secrets_manager(target), target, version_id).await
    }

    async fn verify_access_key(
        &self,
        key: &NewAccessKey,
        user: &UserName,
        max_wait: Duration,
    ) -> Result<String, AwsFailure> {
        steps::verify_access_key(&self.config, key, user, max_wait).await
    }
}
