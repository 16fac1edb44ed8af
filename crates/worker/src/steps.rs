//! The AWS side of each rotation step: one async function per step.
//!
//! These are thin adapters over IAM, STS and Secrets Manager. They decide nothing: the
//! drive loop calls them between journal appends (an intent before the call, an outcome
//! after it) and the planner decides what comes next. Every step can be repeated after a
//! crash without harm, except CreateAccessKey, whose secret IAM returns only once (the
//! drive loop reconciles it by listing the user's keys). Steps act on a key id, never on
//! whatever key a user happens to have.
//!
//! Every failure is an [`AwsFailure`] with the AWS error code. The secret of a new key
//! lives in a [`SecretAccessKey`] and is read only to deliver it and to sign the
//! verification call: it never reaches an error, a log line or a `Debug` output.
//!
//! GetAccessKeyLastUsed, which the wait for adoption reads, is [`crate::iam::last_used`].
//!
//! [`SecretAccessKey`]: crate::secret::SecretAccessKey

use std::borrow::Cow;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_iam::Client as IamClient;
use aws_sdk_iam::types::StatusType;
use aws_sdk_secretsmanager::Client as SecretsManagerClient;
use aws_sdk_secretsmanager::config::Region;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput;
use aws_sdk_secretsmanager::types::Tag;
use chrono::{DateTime, SecondsFormat, Utc};
use keyturn_planner::inventory::KeyStatus;
use keyturn_planner::{AccessKeyId, AccountId, CampaignName, UserName};
use secrecy::zeroize::Zeroizing;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::error::AwsFailure;
use crate::iam::to_chrono;
use crate::secret::{NewAccessKey, SecretAccessKey};

/// The tag that names the campaign which last wrote a secret.
pub const CAMPAIGN_TAG: &str = "keyturn:campaign";

/// The tag that names the IAM user whose key a secret holds.
pub const USER_TAG: &str = "keyturn:user";

/// The code of a delivery whose stored version does not hold the key it should.
pub const DELIVERY_MISMATCH: &str = "DeliveryMismatch";

/// The code of a verification whose key signs as someone other than its user.
pub const CALLER_MISMATCH: &str = "CallerMismatch";

/// How many CreateAccessKey requests one creation makes at most, each after a
/// throttling answer (which proves IAM did nothing with the request before it).
pub const CREATE_ATTEMPTS: u32 = 6;

/// The first pause between two verification attempts; each pause doubles, up to
/// [`VERIFY_MAX_PAUSE`].
const VERIFY_FIRST_PAUSE: Duration = Duration::from_millis(250);

/// The longest pause between two verification attempts.
const VERIFY_MAX_PAUSE: Duration = Duration::from_secs(2);

/// How long one verification call may take when little of the total wait is left.
const VERIFY_MIN_CALL_TIME: Duration = Duration::from_secs(5);

/// Codes with which a key that IAM has just created can be refused while the key
/// propagates (AWS documents up to a few seconds, seen up to about ten).
const PROPAGATION_CODES: &[&str] = &[
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "UnrecognizedClientException",
    "AccessDenied",
    "AccessDeniedException",
    "AuthFailure",
];

/// A key as ListAccessKeys reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedKey {
    /// The key's id.
    pub access_key_id: AccessKeyId,
    /// Active or Inactive.
    pub status: KeyStatus,
    /// When IAM created the key.
    pub created_at: DateTime<Utc>,
}

/// What a deletion found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// This call deleted the key.
    Deleted,
    /// The user no longer had the key (an earlier attempt deleted it, or the user is gone).
    AlreadyGone,
}

/// Where a user's key is delivered: one secret per user, one version per rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretTarget {
    /// The secret's name, already rendered from the policy's template by the caller.
    pub name: String,
    /// The secret's region, when it is not the region of the account's configuration.
    pub region: Option<String>,
}

/// A stored version of a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The secret's ARN (its account and region included).
    pub secret_arn: String,
    /// The version that holds the key: the client request token of the delivery.
    pub version_id: String,
}

/// What a delivered secret says about its key, besides the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryMeta {
    /// The account of the key's user.
    pub account: AccountId,
    /// The key's user.
    pub user: UserName,
    /// The campaign that rotates the key.
    pub campaign: CampaignName,
    /// When the rotation happened. A retry must pass the same value (the one recorded in
    /// the journal's intent event): Secrets Manager refuses a reused token with another value.
    pub rotated_at: DateTime<Utc>,
}

/// The JSON document stored in the secret, as applications read it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct StoredKey<'a> {
    access_key_id: &'a str,
    secret_access_key: &'a str,
    user_name: &'a str,
    account_id: &'a str,
    campaign: &'a str,
    rotated_at: String,
}

/// The only field reconciliation reads back from a stored secret: every other one, the
/// secret included, is skipped by the parser.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StoredKeyId {
    access_key_id: String,
}

/// The document of a void version ([`void_delivery`]): names the key whose delivery
/// was abandoned, never a secret.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VoidedDelivery {
    voided_access_key_id: String,
    campaign: String,
}

/// The staging label of a void version: never `AWSCURRENT`, so applications never read it.
pub const VOID_STAGE: &str = "keyturn-void";

/// What [`void_delivery`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Voiding {
    /// The token now names a void version: no request can store a key under it any more.
    Voided,
    /// The token already names a version that is not this void (a delivery landed).
    Taken,
}

/// What a resumed run reads back to verify the key itself ([`read_delivered_key`]).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StoredKeyPair {
    access_key_id: String,
    secret_access_key: String,
}

/// Creates a new access key for `user` (CreateAccessKey). IAM refuses a third key with
/// `LimitExceeded`. Not idempotent: each successful call creates a key.
///
/// Without the SDK's retries: a first attempt that took effect but whose answer was lost
/// would otherwise be followed by a retry answered `LimitExceeded`, and that answer would
/// wrongly say that nothing was created. The request is repeated here only after a
/// throttling answer, which proves that IAM did nothing with it (up to
/// [`CREATE_ATTEMPTS`] requests, with backoff); any other failure is returned at once.
/// So a refusal returned (`rotation::create_refused`) proves that none of the requests
/// created a key, and a failure that may have taken effect (a 5xx, a timeout) is the
/// answer to the only request that could have; the campaign's own backoff retries the
/// step.
pub async fn create_access_key(
    iam: &IamClient,
    user: &UserName,
) -> Result<NewAccessKey, AwsFailure> {
    let mut pause = Duration::from_millis(100);
    let mut attempt = 1;
    let out = loop {
        let sent = iam
            .create_access_key()
            .user_name(user.as_str())
            .customize()
            .config_override(
                aws_sdk_iam::config::Builder::default()
                    .retry_config(aws_config::retry::RetryConfig::disabled()),
            )
            .send()
            .await;
        match sent {
            Ok(out) => break out,
            Err(e) => {
                let failure = AwsFailure::from_sdk("CreateAccessKey", &e);
                let throttled =
                    matches!(failure.code.as_str(), "Throttling" | "ThrottlingException");
                if !throttled || attempt >= CREATE_ATTEMPTS {
                    return Err(failure);
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
                attempt += 1;
            }
        }
    };
    let Some(key) = out.access_key else {
        return Err(unexpected("CreateAccessKey", "an answer without AccessKey"));
    };
    // The secret is moved out of the answer, not copied, so the one copy is zeroed on drop.
    let secret = SecretAccessKey::new(key.secret_access_key);
    let access_key_id =
        AccessKeyId::new(key.access_key_id).map_err(|e| unexpected("CreateAccessKey", e))?;
    // IAM always sends CreateDate; losing the secret for want of it would be worse than
    // using the local clock.
    let created_at = key
        .create_date
        .as_ref()
        .map(to_chrono)
        .unwrap_or_else(Utc::now);
    Ok(NewAccessKey {
        access_key_id,
        secret,
        created_at,
    })
}

/// The user's keys (ListAccessKeys, every page). A user that does not exist fails with
/// `NoSuchEntity`, which the caller interprets.
pub async fn list_access_keys(
    iam: &IamClient,
    user: &UserName,
) -> Result<Vec<ListedKey>, AwsFailure> {
    let metadata: Vec<_> = iam
        .list_access_keys()
        .user_name(user.as_str())
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| AwsFailure::from_sdk("ListAccessKeys", &e))?;
    metadata
        .into_iter()
        .map(|key| {
            let access_key_id = AccessKeyId::new(key.access_key_id().unwrap_or_default())
                .map_err(|e| unexpected("ListAccessKeys", e))?;
            let created_at = key
                .create_date()
                .map(to_chrono)
                .ok_or_else(|| unexpected("ListAccessKeys", "a key without CreateDate"))?;
            let status = match key.status() {
                Some(StatusType::Active) => KeyStatus::Active,
                Some(StatusType::Inactive) => KeyStatus::Inactive,
                other => {
                    return Err(unexpected(
                        "ListAccessKeys",
                        format!("key status {other:?}"),
                    ));
                }
            };
            Ok(ListedKey {
                access_key_id,
                status,
                created_at,
            })
        })
        .collect()
}

/// Sets the key's status (UpdateAccessKey). Setting the status a key already has
/// succeeds, so a retry is harmless. A key that is not the user's fails with `NoSuchEntity`.
pub async fn set_access_key_status(
    iam: &IamClient,
    user: &UserName,
    key: &AccessKeyId,
    status: KeyStatus,
) -> Result<(), AwsFailure> {
    iam.update_access_key()
        .user_name(user.as_str())
        .access_key_id(key.as_str())
        .status(StatusType::from(status.as_str()))
        .send()
        .await
        .map_err(|e| AwsFailure::from_sdk("UpdateAccessKey", &e))?;
    Ok(())
}

/// Deletes the user's key (DeleteAccessKey).
///
/// IAM answers `NoSuchEntity` both for a key already deleted and for a key of another
/// user, so that answer is checked: the key is [`Deletion::AlreadyGone`] when the user
/// is gone or no longer lists it, but a key that still exists under another user fails
/// with `NoSuchEntity` (IAM deleted nothing).
pub async fn delete_access_key(
    iam: &IamClient,
    user: &UserName,
    key: &AccessKeyId,
) -> Result<Deletion, AwsFailure> {
    let refused = match iam
        .delete_access_key()
        .user_name(user.as_str())
        .access_key_id(key.as_str())
        .send()
        .await
    {
        Ok(_) => return Ok(Deletion::Deleted),
        Err(e) => AwsFailure::from_sdk("DeleteAccessKey", &e),
    };
    if refused.code != "NoSuchEntity" {
        return Err(refused);
    }
    match list_access_keys(iam, user).await {
        // A user that is gone has no keys: IAM deletes a user only once its keys are deleted.
        Err(gone) if gone.code == "NoSuchEntity" => {}
        Err(other) => return Err(other),
        // IAM still lists the key: an inconsistent answer, which a later retry settles.
        Ok(keys) if keys.iter().any(|k| k.access_key_id == *key) => return Err(refused),
        Ok(_) => {}
    }
    // The user (if it exists) does not have the key. Does someone else?
    match iam
        .get_access_key_last_used()
        .access_key_id(key.as_str())
        .send()
        .await
    {
        Ok(out) => match out.user_name() {
            Some(owner) if owner != user.as_str() => Err(AwsFailure {
                operation: "DeleteAccessKey",
                code: "NoSuchEntity".to_owned(),
                message: format!(
                    "access key {key} belongs to user {owner}, not to {user}: nothing was deleted"
                ),
            }),
            _ => Ok(Deletion::AlreadyGone),
        },
        Err(e) => {
            let failure = AwsFailure::from_sdk("GetAccessKeyLastUsed", &e);
            if failure.is_transient() {
                Err(failure)
            } else {
                // The key is unknown (or unreadable) and the user does not list it.
                Ok(Deletion::AlreadyGone)
            }
        }
    }
}

/// A Secrets Manager client of `config`'s account, in `region` if given (else the
/// config's region), with the journal's patient retries
/// ([`keyturn_journal::patient_retry_config`]): a delivery that fails costs the
/// replacement, whose secret exists only in the run's memory.
pub fn secrets_manager_client(config: &SdkConfig, region: Option<&str>) -> SecretsManagerClient {
    let mut builder = aws_sdk_secretsmanager::config::Builder::from(config)
        .retry_config(keyturn_journal::patient_retry_config())
        .interceptor(crate::telemetry::AwsCallTelemetry);
    if let Some(region) = region {
        builder = builder.region(Region::new(region.to_owned()));
    }
    SecretsManagerClient::from_conf(builder.build())
}

/// `sm`, or a copy of it in the target's region when the target names another one.
fn client_for<'a>(
    sm: &'a SecretsManagerClient,
    target: &SecretTarget,
) -> Cow<'a, SecretsManagerClient> {
    match target.region.as_deref() {
        Some(region) if sm.config().region().map(|r| r.as_ref()) != Some(region) => {
            let config = sm
                .config()
                .to_builder()
                .region(Region::new(region.to_owned()))
                .build();
            Cow::Owned(SecretsManagerClient::from_conf(config))
        }
        _ => Cow::Borrowed(sm),
    }
}

/// Stores the key as a new version of the user's secret, then reads it back.
///
/// The value is the JSON document `{"AccessKeyId", "SecretAccessKey", "UserName",
/// "AccountId", "Campaign", "RotatedAt"}`. An existing secret gets a new version
/// (PutSecretValue) and its `keyturn:campaign` and `keyturn:user` tags are updated
/// (TagResource); a missing one is created with them (CreateSecret). Both calls pass
/// `token` as ClientRequestToken, which Secrets Manager uses as the VersionId: repeating
/// the call with the same token stores nothing new. Secrets Manager refuses a token
/// reused with another value (`ResourceExistsException`); when the version it names
/// already holds this key (a retry whose `meta` differs, say in `rotated_at`), that
/// version is the delivery, and when it holds another key, the refusal is returned,
/// naming that key. The version is then read back (GetSecretValue by VersionId); if it
/// does not hold this key's id, the delivery fails with [`DELIVERY_MISMATCH`].
///
/// `sm` may be any client of the account: the target's region, if it names one, wins.
pub async fn deliver_secret(
    sm: &SecretsManagerClient,
    target: &SecretTarget,
    key: &NewAccessKey,
    meta: &DeliveryMeta,
    token: &str,
) -> Result<Delivery, AwsFailure> {
    let sm = client_for(sm, target);
    let value = Zeroizing::new(
        serde_json::to_string(&StoredKey {
            access_key_id: key.access_key_id.as_str(),
            secret_access_key: key.secret.expose(),
            user_name: meta.user.as_str(),
            account_id: meta.account.as_str(),
            campaign: meta.campaign.as_str(),
            rotated_at: meta.rotated_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        })
        // Serialising plain strings cannot fail; the error would not carry the secret anyway.
        .map_err(|_| unexpected("PutSecretValue", "the secret value could not be encoded"))?,
    );
    let tags = [
        tag(CAMPAIGN_TAG, meta.campaign.as_str()),
        tag(USER_TAG, meta.user.as_str()),
    ];

    let arn = match add_version(&sm, &target.name, token, &value, key).await {
        Ok(arn) => {
            tag_secret(&sm, &arn, &tags).await?;
            arn
        }
        Err(missing) if missing.code == "ResourceNotFoundException" => {
            match create_secret(&sm, &target.name, token, &value, &tags, meta).await {
                Ok(arn) => arn,
                // The secret exists after all (another writer created it between the two
                // calls, or the token is taken): add the version to it.
                Err(exists) if exists.code == "ResourceExistsException" => {
                    let arn = add_version(&sm, &target.name, token, &value, key).await?;
                    tag_secret(&sm, &arn, &tags).await?;
                    arn
                }
                Err(other) => return Err(other),
            }
        }
        Err(other) => return Err(other),
    };
    drop(value);

    let out = sm
        .get_secret_value()
        .secret_id(&arn)
        .version_id(token)
        .send()
        .await
        .map_err(|e| AwsFailure::from_sdk("GetSecretValue", &e))?;
    let (delivery, stored) = stored_version(&out)?;
    if stored != key.access_key_id || delivery.version_id != token {
        return Err(AwsFailure {
            operation: "GetSecretValue",
            code: DELIVERY_MISMATCH.to_owned(),
            message: format!(
                "version {} of secret {} holds access key {stored}, not {}",
                delivery.version_id, delivery.secret_arn, key.access_key_id
            ),
        });
    }
    Ok(delivery)
}

/// Takes the version `token` of the target secret before a delivery that was not found
/// is given up (its key deleted as an orphan): PutSecretValue of a void document naming
/// `key`, labelled [`VOID_STAGE`] only, so `AWSCURRENT` stays where it is. Secrets Manager
/// refuses a token reused with another value, so a delivery request under `token` that
/// is still in flight (stalled past its run's claim) can no longer land afterwards and
/// make the secret hold a deleted key. A missing secret is created with the void as its
/// first version (no application has been told of it yet), since a stalled
/// PutSecretValue would otherwise add its version once the next delivery creates the
/// secret. Idempotent: the same void again is accepted.
pub async fn void_delivery(
    sm: &SecretsManagerClient,
    target: &SecretTarget,
    token: &str,
    key: &AccessKeyId,
    meta: &DeliveryMeta,
) -> Result<Voiding, AwsFailure> {
    let sm = client_for(sm, target);
    let value = serde_json::to_string(&VoidedDelivery {
        voided_access_key_id: key.as_str().to_owned(),
        campaign: meta.campaign.as_str().to_owned(),
    })
    .map_err(|_| unexpected("PutSecretValue", "the void document could not be encoded"))?;
    let put = || async {
        sm.put_secret_value()
            .secret_id(&target.name)
            .client_request_token(token)
            .secret_string(&value)
            .version_stages(VOID_STAGE)
            .send()
            .await
            .map_err(|e| AwsFailure::from_sdk("PutSecretValue", &e))
    };
    let taken = |f: &AwsFailure| f.code == "ResourceExistsException";
    match put().await {
        Ok(_) => Ok(Voiding::Voided),
        Err(f) if taken(&f) => Ok(Voiding::Taken),
        Err(f) if f.code == "ResourceNotFoundException" => {
            let tags = [
                tag(CAMPAIGN_TAG, meta.campaign.as_str()),
                tag(USER_TAG, meta.user.as_str()),
            ];
            match create_secret(&sm, &target.name, token, &value, &tags, meta).await {
                Ok(_) => Ok(Voiding::Voided),
                // Created meanwhile (by the request this void is racing, or another):
                // the token is taken, or can be taken as a version.
                Err(f) if taken(&f) => match put().await {
                    Ok(_) => Ok(Voiding::Voided),
                    Err(f) if taken(&f) => Ok(Voiding::Taken),
                    Err(f) => Err(f),
                },
                Err(f) => Err(f),
            }
        }
        Err(f) => Err(f),
    }
}

/// Reconciliation after a crash: the version `token` of the target secret, and the key
/// id it holds; `None` when the secret or that version does not exist, or the version
/// is void ([`void_delivery`]).
pub async fn find_delivery(
    sm: &SecretsManagerClient,
    target: &SecretTarget,
    token: &str,
) -> Result<Option<(Delivery, AccessKeyId)>, AwsFailure> {
    let sm = client_for(sm, target);
    match sm
        .get_secret_value()
        .secret_id(&target.name)
        .version_id(token)
        .send()
        .await
    {
        Ok(out) if is_void(&out) => Ok(None),
        Ok(out) => stored_version(&out).map(Some),
        Err(e) => {
            let failure = AwsFailure::from_sdk("GetSecretValue", &e);
            if failure.code == "ResourceNotFoundException" {
                Ok(None)
            } else {
                Err(failure)
            }
        }
    }
}

/// The key stored in version `version_id` of the target secret, its secret included:
/// what a resumed run verifies when the process that created the key is gone. IAM's
/// creation date is not stored, so `created_at` is when the version was stored.
/// A missing secret or version fails with `ResourceNotFoundException`.
pub async fn read_delivered_key(
    sm: &SecretsManagerClient,
    target: &SecretTarget,
    version_id: &str,
) -> Result<NewAccessKey, AwsFailure> {
    let sm = client_for(sm, target);
    let out = sm
        .get_secret_value()
        .secret_id(&target.name)
        .version_id(version_id)
        .send()
        .await
        .map_err(|e| AwsFailure::from_sdk("GetSecretValue", &e))?;
    let (delivery, stored) = parse_stored::<StoredKeyPair>(&out)?;
    // Moved, not copied: the one copy is zeroed on drop.
    let secret = SecretAccessKey::new(stored.secret_access_key);
    let access_key_id = AccessKeyId::new(stored.access_key_id)
        .map_err(|_| stored_mismatch(&delivery, "holds no valid AccessKeyId"))?;
    if secret.expose().is_empty() {
        return Err(stored_mismatch(&delivery, "holds an empty SecretAccessKey"));
    }
    Ok(NewAccessKey {
        access_key_id,
        secret,
        created_at: out.created_date().map(to_chrono).unwrap_or_else(Utc::now),
    })
}

/// Adds the version (PutSecretValue); the secret's ARN. When the token is already taken,
/// the version it names is accepted if it holds `key`.
async fn add_version(
    sm: &SecretsManagerClient,
    name: &str,
    token: &str,
    value: &str,
    key: &NewAccessKey,
) -> Result<String, AwsFailure> {
    let taken = match put_version(sm, name, token, value).await {
        Err(taken) if taken.code == "ResourceExistsException" => taken,
        other => return other,
    };
    let Ok(out) = sm
        .get_secret_value()
        .secret_id(name)
        .version_id(token)
        .send()
        .await
    else {
        return Err(taken);
    };
    match stored_version(&out) {
        Ok((delivery, stored)) if stored == key.access_key_id => Ok(delivery.secret_arn),
        Ok((delivery, stored)) => Err(AwsFailure {
            message: format!(
                "{} (version {} already holds access key {stored}, not {})",
                taken.message, delivery.version_id, key.access_key_id
            ),
            ..taken
        }),
        Err(_) => Err(taken),
    }
}

/// PutSecretValue; the secret's ARN.
async fn put_version(
    sm: &SecretsManagerClient,
    name: &str,
    token: &str,
    value: &str,
) -> Result<String, AwsFailure> {
    let out = sm
        .put_secret_value()
        .secret_id(name)
        .client_request_token(token)
        .secret_string(value)
        .send()
        .await
        .map_err(|e| AwsFailure::from_sdk("PutSecretValue", &e))?;
    out.arn()
        .map(str::to_owned)
        .ok_or_else(|| unexpected("PutSecretValue", "an answer without ARN"))
}

/// CreateSecret with its first version and tags; the secret's ARN.
async fn create_secret(
    sm: &SecretsManagerClient,
    name: &str,
    token: &str,
    value: &str,
    tags: &[Tag],
    meta: &DeliveryMeta,
) -> Result<String, AwsFailure> {
    let out = sm
        .create_secret()
        .name(name)
        .description(format!(
            "Access key of IAM user {} in account {}, rotated by keyturn",
            meta.user, meta.account
        ))
        .client_request_token(token)
        .secret_string(value)
        .set_tags(Some(tags.to_vec()))
        .send()
        .await
        .map_err(|e| AwsFailure::from_sdk("CreateSecret", &e))?;
    out.arn()
        .map(str::to_owned)
        .ok_or_else(|| unexpected("CreateSecret", "an answer without ARN"))
}

/// TagResource: adds or overwrites the tags.
async fn tag_secret(sm: &SecretsManagerClient, arn: &str, tags: &[Tag]) -> Result<(), AwsFailure> {
    sm.tag_resource()
        .secret_id(arn)
        .set_tags(Some(tags.to_vec()))
        .send()
        .await
        .map_err(|e| AwsFailure::from_sdk("TagResource", &e))?;
    Ok(())
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

/// Whether the version is a void ([`void_delivery`]).
fn is_void(out: &GetSecretValueOutput) -> bool {
    out.secret_string()
        .is_some_and(|text| serde_json::from_str::<VoidedDelivery>(text).is_ok())
}

/// The delivery a GetSecretValue answer describes and the key id its value holds.
fn stored_version(out: &GetSecretValueOutput) -> Result<(Delivery, AccessKeyId), AwsFailure> {
    let (delivery, stored) = parse_stored::<StoredKeyId>(out)?;
    let id = AccessKeyId::new(stored.access_key_id)
        .map_err(|_| stored_mismatch(&delivery, "holds no valid AccessKeyId"))?;
    Ok((delivery, id))
}

/// The delivery a GetSecretValue answer describes and the fields keyturn reads from its
/// value. Errors name the version, never the value.
fn parse_stored<T: DeserializeOwned>(
    out: &GetSecretValueOutput,
) -> Result<(Delivery, T), AwsFailure> {
    let delivery = Delivery {
        secret_arn: out.arn().unwrap_or_default().to_owned(),
        version_id: out.version_id().unwrap_or_default().to_owned(),
    };
    let Some(text) = out.secret_string() else {
        return Err(stored_mismatch(&delivery, "has no SecretString"));
    };
    // serde_json's message could quote a value: only its position is reported.
    match serde_json::from_str(text) {
        Ok(stored) => Ok((delivery, stored)),
        Err(e) => Err(stored_mismatch(
            &delivery,
            &format!(
                "is not keyturn's JSON document (error at line {}, column {})",
                e.line(),
                e.column()
            ),
        )),
    }
}

fn stored_mismatch(delivery: &Delivery, what: &str) -> AwsFailure {
    AwsFailure {
        operation: "GetSecretValue",
        code: DELIVERY_MISMATCH.to_owned(),
        message: format!(
            "version {} of secret {} {what}",
            delivery.version_id, delivery.secret_arn
        ),
    }
}

/// Proves that the new key authenticates: STS GetCallerIdentity signed with the key
/// itself, on `base`'s endpoint and region. Answers that mean "not propagated yet"
/// (`InvalidClientTokenId`, `SignatureDoesNotMatch`, access denied) and transient
/// failures are retried with growing pauses until `max_wait` has passed; the last
/// failure is then returned with its code. A key that signs as anyone but `user` fails
/// at once with [`CALLER_MISMATCH`]. Returns the caller ARN.
///
/// AWS refuses an Inactive key with `InvalidClientTokenId`; the local emulator does not.
pub async fn verify_access_key(
    base: &SdkConfig,
    key: &NewAccessKey,
    user: &UserName,
    max_wait: Duration,
) -> Result<String, AwsFailure> {
    let credentials = Credentials::new(
        key.access_key_id.as_str(),
        key.secret.expose(),
        None,
        None,
        "keyturn-new-key",
    );
    let config = base
        .to_builder()
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .build();
    let sts = crate::telemetry::sts_client(&config);
    let started = Instant::now();
    let deadline = started + max_wait;
    let mut pause = VERIFY_FIRST_PAUSE;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let call_deadline = deadline.max(Instant::now() + VERIFY_MIN_CALL_TIME);
        let failure =
            match tokio::time::timeout_at(call_deadline, sts.get_caller_identity().send()).await {
                Ok(Ok(out)) => {
                    let arn = out.arn().unwrap_or_default();
                    return if arn_names_user(arn, user) {
                        Ok(arn.to_owned())
                    } else {
                        Err(AwsFailure {
                            operation: "GetCallerIdentity",
                            code: CALLER_MISMATCH.to_owned(),
                            message: format!(
                                "access key {} signs as {arn:?}, not as IAM user {user}",
                                key.access_key_id
                            ),
                        })
                    };
                }
                Ok(Err(e)) => AwsFailure::from_sdk("GetCallerIdentity", &e),
                Err(_) => AwsFailure {
                    operation: "GetCallerIdentity",
                    code: "TimeoutError".to_owned(),
                    message: "no answer in time".to_owned(),
                },
            };
        let retryable =
            PROPAGATION_CODES.contains(&failure.code.as_str()) || failure.is_transient();
        let now = Instant::now();
        if !retryable || now >= deadline {
            let waited = now.duration_since(started);
            return Err(AwsFailure {
                message: format!(
                    "{} (access key {}, {attempts} attempt(s) over {:.1} s)",
                    failure.message,
                    key.access_key_id,
                    waited.as_secs_f64()
                ),
                ..failure
            });
        }
        tracing::debug!(
            access_key_id = %key.access_key_id,
            code = %failure.code,
            attempts,
            "new access key not accepted yet; retrying"
        );
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(VERIFY_MAX_PAUSE);
    }
}

/// Whether `arn` is the ARN of IAM user `user` (with or without a path).
fn arn_names_user(arn: &str, user: &UserName) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, _partition, service, _region, _account, resource] = parts[..] else {
        return false;
    };
    prefix == "arn"
        && service == "iam"
        && resource
            .strip_prefix("user/")
            .and_then(|path| path.rsplit('/').next())
            == Some(user.as_str())
}

/// The access key id the caller signs with, when it is an IAM user's long-term key
/// (`AKIA…`, no session token), so that a run never rotates its own key. `None` for
/// temporary credentials (an assumed role, SSO, an instance profile), or when the
/// configuration has no credentials or they cannot be resolved.
pub async fn caller_access_key_id(base: &SdkConfig) -> Option<String> {
    let credentials = base
        .credentials_provider()?
        .provide_credentials()
        .await
        .ok()?;
    let id = credentials.access_key_id();
    (credentials.session_token().is_none() && id.starts_with("AKIA")).then(|| id.to_owned())
}

/// The ClientRequestToken of a delivery: the hex SHA-256 of
/// `keyturn/<campaign>/<key>/<attempt>`, 64 characters (Secrets Manager takes 32 to 64).
/// The same rotation attempt always gets the same token, so a retried delivery is
/// recognised; a new attempt gets a new one.
pub fn client_request_token(campaign: &str, key: &AccessKeyId, attempt: u32) -> String {
    hex::encode(Sha256::digest(
        format!("keyturn/{campaign}/{key}/{attempt}").as_bytes(),
    ))
}

fn unexpected(operation: &'static str, what: impl std::fmt::Display) -> AwsFailure {
    AwsFailure {
        operation,
        code: "UnexpectedResponse".to_owned(),
        message: what.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_arns() {
        let alice = UserName::new("alice").unwrap();
        assert!(arn_names_user(
            "arn:aws:iam::123456789012:user/alice",
            &alice
        ));
        assert!(arn_names_user(
            "arn:aws-us-gov:iam::123456789012:user/team/ops/alice",
            &alice
        ));
        assert!(!arn_names_user(
            "arn:aws:iam::123456789012:user/bob",
            &alice
        ));
        assert!(!arn_names_user(
            "arn:aws:iam::123456789012:user/xalice",
            &alice
        ));
        assert!(!arn_names_user(
            "arn:aws:iam::123456789012:role/alice",
            &alice
        ));
        assert!(!arn_names_user(
            "arn:aws:sts::123456789012:user/moto",
            &alice
        ));
        assert!(!arn_names_user(
            "arn:aws:sts::123456789012:assumed-role/alice/alice",
            &alice
        ));
        assert!(!arn_names_user("", &alice));
    }
}
