//! The org-wide inventory: every key of every account in scope, fanned out over accounts.
//!
//! Accounts run concurrently up to a bound; one account's failure (a role that cannot
//! be assumed, an API error) is recorded with its AWS error code and never stops the
//! others.

use futures::StreamExt;
use keyturn_planner::Scope;
use tracing::Instrument;

use keyturn_journal::{Clock, SystemClock};

use crate::error::{AwsFailure, WorkerError};
use crate::iam::{self, AccountKeys, Listing};
use crate::org::OrgAccount;
use crate::port::Cloud;
use crate::telemetry::Progress;

/// How many accounts are read at once unless the caller says otherwise.
pub const DEFAULT_CONCURRENCY: u16 = 16;

/// An account that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFailure {
    /// The account.
    pub account: OrgAccount,
    /// What failed.
    pub failure: AwsFailure,
}

/// The result of an inventory: what was read, and which accounts failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Accounts read in full, ordered by account id.
    pub accounts: Vec<AccountKeys>,
    /// Accounts that failed, ordered by account id.
    pub failures: Vec<AccountFailure>,
}

/// Reads every key of every account the scope selects (the keys of every user the
/// credential report shows with keys or does not know: [`Listing::Held`]).
pub async fn collect(
    cloud: &dyn Cloud,
    scope: &Scope,
    concurrency: usize,
) -> Result<Inventory, WorkerError> {
    collect_listing(cloud, scope, concurrency, Listing::Held).await
}

/// Reads every account the scope selects, listing the keys of the users `listing`
/// selects.
pub async fn collect_listing(
    cloud: &dyn Cloud,
    scope: &Scope,
    concurrency: usize,
    listing: Listing<'_>,
) -> Result<Inventory, WorkerError> {
    collect_with_progress(cloud, scope, concurrency, listing, None, &SystemClock).await
}

/// [`collect_listing`], telling `progress` how many accounts there are and when each is
/// read, with ages taken against `clock`.
#[tracing::instrument(name = "keyturn.inventory", skip_all, fields(accounts = tracing::field::Empty))]
pub async fn collect_with_progress(
    cloud: &dyn Cloud,
    scope: &Scope,
    concurrency: usize,
    listing: Listing<'_>,
    progress: Option<&dyn Progress>,
    clock: &dyn Clock,
) -> Result<Inventory, WorkerError> {
    let accounts = cloud.accounts_in_scope(scope).await?;
    tracing::Span::current().record("accounts", accounts.len());
    if let Some(progress) = progress {
        progress.phase("inventory", accounts.len());
    }
    let results: Vec<_> = futures::stream::iter(accounts)
        .map(|account| {
            let span = tracing::info_span!(
                "keyturn.account",
                account.id = %account.id,
                phase = "inventory",
                outcome = tracing::field::Empty,
                aws.error_code = tracing::field::Empty,
            );
            async move {
                let api = cloud.account(&account.id, scope).await;
                let read =
                    iam::account_keys(api.as_ref(), &account, scope, listing, clock.now()).await;
                let span = tracing::Span::current();
                match &read {
                    Ok(_) => span.record("outcome", "ok"),
                    Err(failure) => span
                        .record("outcome", "failed")
                        .record("aws.error_code", failure.code.as_str()),
                };
                if let Some(progress) = progress {
                    progress.account_done();
                }
                read.map_err(|failure| AccountFailure { account, failure })
            }
            .instrument(span)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut inventory = Inventory::default();
    for result in results {
        match result {
            Ok(keys) => inventory.accounts.push(keys),
            Err(failure) => inventory.failures.push(failure),
        }
    }
    inventory
        .accounts
        .sort_by(|a, b| a.account.id.cmp(&b.account.id));
    inventory
        .failures
        .sort_by(|a, b| a.account.id.cmp(&b.account.id));
    Ok(inventory)
}
