//! The rotation model: events, the per-key state they fold into, and the decisions.

pub mod decide;
pub mod events;
mod gates;
pub mod notify;
pub mod state;

pub use decide::{
    Action, Decision, FreshUse, KeyPlan, ObservedKey, PlanAction, classify, create_refused, decide,
    enroll, is_unrecorded_replacement,
};
pub use events::{
    CampaignEvent, NotificationChannel, NotificationKind, Path, RotationEvent, Step, UseEvidence,
};
pub use notify::{DueNotification, due_notifications};
pub use state::{KeyState, Phase, UserState};

#[cfg(test)]
mod tests;
