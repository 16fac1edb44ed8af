//! keyturn's rotation model and its decisions.
//!
//! This crate is pure: no async runtime, no AWS SDK, no clock (the time is always an
//! argument) and no IO. It holds the validated identifiers, the policy file, the
//! inventory snapshot of keys, and (from the rotation issue on) the rotation events and
//! the decision of each key's next step.

pub mod ids;
pub mod inventory;
pub mod policy;
pub mod rotation;

pub use ids::{
    AccessKeyId, AccountId, CampaignName, ExternalId, InvalidId, OrganizationalUnitId, RoleName,
    UserName,
};
pub use policy::{Policy, PolicyError, Scope};
