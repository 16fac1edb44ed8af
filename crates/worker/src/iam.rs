//! IAM reads of one account: its users, their tags and keys, and each key's last use.
//!
//! Calls per account: GetAccountAuthorizationDetails (users with their tags, paginated),
//! GetCredentialReport (plus GenerateCredentialReport and another Get when the report is
//! missing or older than four hours), ListAccessKeys only for the users the caller needs
//! ([`Listing`]), and GetAccessKeyLastUsed only for listed keys the report cannot place.
//! Per-user calls run with a small bound of their own, because IAM's rate limits are per
//! account.

use std::collections::BTreeSet;

use aws_sdk_iam::Client as IamClient;
use aws_sdk_iam::types::EntityType;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use keyturn_planner::inventory::{KeyRecord, KeyStatus, LastUse};
use keyturn_planner::policy::{Rotation, UserExclusion};
use keyturn_planner::rotation::{ObservedKey, PlanAction, classify};
use keyturn_planner::{AccessKeyId, AccountId, Scope, UserName};

use crate::credential_report::{CredentialReport, ReportKey};
use crate::error::AwsFailure;
use crate::org::OrgAccount;
use crate::port::AccountApi;

/// How many per-user IAM calls of one account run at once.
pub const PER_ACCOUNT_CONCURRENCY: usize = 4;

/// Whose keys an account read lists: ListAccessKeys costs one call per user, and the
/// credential report already says which users hold keys and how old and how used they
/// are (but not their ids).
#[derive(Debug, Clone, Copy)]
pub enum Listing<'a> {
    /// Users the report shows with at least one key, and users absent from the report
    /// (created after it): every key id there is, for `inventory`.
    Held,
    /// Users a campaign may act on (`plan`, `run`): those whose report row holds a key
    /// the planner's [`classify`] gives an action other than `none` (taking the report's
    /// status, creation time and last use, ages against now), users absent from the
    /// report, and the users in `in_flight` (a campaign's users with a key not settled).
    Actionable {
        /// The campaign's rotation rules.
        rules: &'a Rotation,
        /// Users the campaign is working on, by account.
        in_flight: &'a BTreeSet<(AccountId, UserName)>,
    },
}

impl Listing<'_> {
    /// Whether the user's keys are to be listed.
    fn wants(
        &self,
        account: &AccountId,
        user: &UserName,
        exclusion: Option<&UserExclusion>,
        report: &CredentialReport,
        now: DateTime<Utc>,
    ) -> bool {
        let Some(slots) = report.user_keys(user.as_str()) else {
            return true; // created after the report: nothing is known of its keys
        };
        match self {
            Self::Held => !slots.is_empty(),
            Self::Actionable { rules, in_flight } => {
                in_flight.contains(&(account.clone(), user.clone()))
                    || report_needs_action(slots, exclusion, rules, now)
            }
        }
    }
}

/// Whether the planner would do anything to the keys a report row shows. The report has
/// no key ids, so the slots stand in under placeholder ids; the caller's own key cannot
/// be told apart here, so it is planned like any other (a listed user is classified again
/// with the real ids).
pub fn report_needs_action(
    slots: &[ReportKey],
    exclusion: Option<&UserExclusion>,
    rules: &Rotation,
    now: DateTime<Utc>,
) -> bool {
    const PLACEHOLDERS: [&str; 2] = ["AKIAREPORTSLOT000001", "AKIAREPORTSLOT000002"];
    let observed: Vec<ObservedKey> = slots
        .iter()
        .zip(PLACEHOLDERS)
        .filter_map(|(slot, id)| {
            Some(ObservedKey {
                key: AccessKeyId::new(id).ok()?,
                status: if slot.active {
                    KeyStatus::Active
                } else {
                    KeyStatus::Inactive
                },
                created_at: slot.created_at,
                last_used_at: slot.last_used.as_ref().map(|l| l.at),
            })
        })
        .collect();
    classify(&observed, exclusion, None, rules, now)
        .iter()
        .any(|plan| plan.action != PlanAction::None)
}

/// An IAM user and its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamUser {
    /// The user's name.
    pub name: UserName,
    /// The user's tags, as (key, value).
    pub tags: Vec<(String, String)>,
}

/// One user's keys, and why the user is out of scope if it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserKeys {
    /// The user.
    pub user: IamUser,
    /// `Some` when the policy excludes or exempts the user.
    pub exclusion: Option<UserExclusion>,
    /// Whether the user's keys were listed ([`Listing`]); when not, `keys` is empty and
    /// says nothing.
    pub listed: bool,
    /// The user's keys (zero, one or two), when listed.
    pub keys: Vec<KeyRecord>,
}

/// What one account holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountKeys {
    /// The account.
    pub account: OrgAccount,
    /// Its users, ordered by name.
    pub users: Vec<UserKeys>,
}

/// Reads every user of the account and, for the users `listing` selects, their keys
/// and their last use.
pub async fn account_keys(
    api: &dyn AccountApi,
    account: &OrgAccount,
    scope: &Scope,
    listing: Listing<'_>,
    now: DateTime<Utc>,
) -> Result<AccountKeys, AwsFailure> {
    let users = api.list_users().await?;
    let report = api.credential_report().await?;
    let mut users: Vec<UserKeys> = futures::stream::iter(users)
        .map(|user| {
            let report = &report;
            async move {
                let exclusion = scope.user_exclusion(
                    &user.name,
                    user.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                );
                let listed =
                    listing.wants(&account.id, &user.name, exclusion.as_ref(), report, now);
                let keys = if listed {
                    user_keys(api, account, &user.name, report).await?
                } else {
                    Vec::new()
                };
                Ok::<_, AwsFailure>(UserKeys {
                    user,
                    exclusion,
                    listed,
                    keys,
                })
            }
        })
        .buffer_unordered(PER_ACCOUNT_CONCURRENCY)
        .try_collect()
        .await?;
    users.sort_by(|a, b| a.user.name.cmp(&b.user.name));
    Ok(AccountKeys {
        account: account.clone(),
        users,
    })
}

/// Every IAM user of the account with its tags, in one paginated call.
pub async fn list_users(iam: &IamClient) -> Result<Vec<IamUser>, AwsFailure> {
    let pages: Vec<_> = iam
        .get_account_authorization_details()
        .filter(EntityType::User)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(|e| AwsFailure::from_sdk("GetAccountAuthorizationDetails", &e))?;
    pages
        .iter()
        .flat_map(|page| page.user_detail_list())
        .map(|detail| {
            let name = UserName::new(detail.user_name().unwrap_or_default())
                .map_err(|e| unexpected("GetAccountAuthorizationDetails", e))?;
            let tags = detail
                .tags()
                .iter()
                .map(|t| (t.key().to_owned(), t.value().to_owned()))
                .collect();
            Ok(IamUser { name, tags })
        })
        .collect()
}

/// The keys of one user, with last use from the report or, failing that, from IAM.
async fn user_keys(
    api: &dyn AccountApi,
    account: &OrgAccount,
    user: &UserName,
    report: &CredentialReport,
) -> Result<Vec<KeyRecord>, AwsFailure> {
    let listed = api.list_access_keys(user).await?;
    let mut keys = Vec::with_capacity(listed.len());
    for crate::steps::ListedKey {
        access_key_id,
        status,
        created_at,
    } in listed
    {
        let last_used = match report.last_used(user.as_str(), created_at) {
            Some(last_used) => last_used,
            None => api.last_used(&access_key_id).await?,
        };
        keys.push(KeyRecord {
            account_id: account.id.clone(),
            account_name: account.name.clone(),
            user_name: user.clone(),
            access_key_id,
            status,
            created_at,
            last_used,
        });
    }
    Ok(keys)
}

/// A key's last use, asked of IAM directly (fresh, unlike the credential report).
pub async fn last_used(iam: &IamClient, key: &AccessKeyId) -> Result<Option<LastUse>, AwsFailure> {
    let out = iam
        .get_access_key_last_used()
        .access_key_id(key.as_str())
        .send()
        .await
        .map_err(|e| AwsFailure::from_sdk("GetAccessKeyLastUsed", &e))?;
    let Some(used) = out.access_key_last_used() else {
        return Ok(None);
    };
    let known = |s: &str| (!s.is_empty() && s != "N/A").then(|| s.to_owned());
    Ok(used.last_used_date().map(|at| LastUse {
        at: to_chrono(at),
        service: known(used.service_name()),
        region: known(used.region()),
    }))
}

/// Converts an SDK timestamp.
pub fn to_chrono(t: &aws_smithy_types::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos()).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn unexpected(operation: &'static str, what: impl std::fmt::Display) -> AwsFailure {
    AwsFailure {
        operation,
        code: "UnexpectedResponse".to_owned(),
        message: what.to_string(),
    }
}
