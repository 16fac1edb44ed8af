//! The organization: which accounts are in scope.
//!
//! Every Organizations list is paginated. OUs named in the policy are walked
//! recursively (children of children), and only ACTIVE accounts are ever returned.

use std::collections::{BTreeSet, VecDeque};

use aws_sdk_organizations::Client as OrganizationsClient;
use aws_sdk_organizations::types::{Account, AccountState, AccountStatus, ChildType};
use keyturn_planner::{AccountId, OrganizationalUnitId, Scope};

use crate::error::{AwsFailure, WorkerError};

/// A member account of the organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgAccount {
    /// The account id.
    pub id: AccountId,
    /// The account's name.
    pub name: String,
    /// The account's root email (a fallback contact for its key owners).
    pub email: Option<String>,
}

/// The active accounts of the organization that the scope selects, ordered by id.
pub async fn accounts_in_scope(
    org: &OrganizationsClient,
    scope: &Scope,
) -> Result<Vec<OrgAccount>, WorkerError> {
    let all = org
        .list_accounts()
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(|e| AwsFailure::from_sdk("ListAccounts", &e))?
        .into_iter()
        .flat_map(|page| page.accounts.unwrap_or_default())
        .collect::<Vec<_>>();
    let active: Vec<OrgAccount> = all
        .iter()
        .filter(|a| is_active(a))
        .map(to_org_account)
        .collect::<Result<_, _>>()?;

    for listed in &scope.accounts {
        if !active.iter().any(|a| a.id == *listed) {
            return Err(WorkerError::Rejected(format!(
                "account {listed} in scope.accounts is not an active account of this organization"
            )));
        }
    }
    let under_units = accounts_under_units(org, &scope.organizational_units).await?;

    let mut selected: Vec<OrgAccount> = active
        .into_iter()
        .filter(|a| scope.includes_account(&a.id, under_units.contains(&a.id)))
        .collect();
    selected.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(selected)
}

/// Every account anywhere below the given OUs (or roots).
async fn accounts_under_units(
    org: &OrganizationsClient,
    units: &[OrganizationalUnitId],
) -> Result<BTreeSet<AccountId>, WorkerError> {
    let mut found = BTreeSet::new();
    let mut queue: VecDeque<String> = units.iter().map(|u| u.as_str().to_owned()).collect();
    let mut seen = BTreeSet::new();
    while let Some(parent) = queue.pop_front() {
        if !seen.insert(parent.clone()) {
            continue;
        }
        let accounts = org
            .list_accounts_for_parent()
            .parent_id(&parent)
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(|e| AwsFailure::from_sdk("ListAccountsForParent", &e))?
            .into_iter()
            .flat_map(|page| page.accounts.unwrap_or_default());
        for account in &accounts.collect::<Vec<_>>() {
            found.insert(to_org_account(account)?.id);
        }
        let children = org
            .list_children()
            .parent_id(&parent)
            .child_type(ChildType::OrganizationalUnit)
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(|e| AwsFailure::from_sdk("ListChildren", &e))?;
        queue.extend(
            children
                .into_iter()
                .flat_map(|page| page.children.unwrap_or_default())
                .filter_map(|c| c.id),
        );
    }
    Ok(found)
}

/// Organizations reports the newer `State` and the older `Status`; either says ACTIVE.
fn is_active(account: &Account) -> bool {
    #[allow(deprecated)]
    let status = account.status();
    match account.state() {
        Some(state) => *state == AccountState::Active,
        None => status == Some(&AccountStatus::Active),
    }
}

fn to_org_account(account: &Account) -> Result<OrgAccount, WorkerError> {
    let raw = account.id().unwrap_or_default();
    let id = AccountId::new(raw)
        .map_err(|e| WorkerError::Unexpected(format!("Organizations returned {e}")))?;
    Ok(OrgAccount {
        id,
        name: account.name().unwrap_or_default().to_owned(),
        email: account.email().map(str::to_owned),
    })
}
