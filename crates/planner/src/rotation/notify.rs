//! Which notifications are due for a user, from the fold alone (pure: `now` is an
//! argument). The worker sends them and records each outcome, `notification-sent` or
//! `notification-failed`, which the fold reads back so that nothing is sent twice.

use chrono::{DateTime, Utc};

use super::decide::{after, before};
use super::events::{NotificationChannel, NotificationKind};
use super::state::{KeyState, Phase, UserState};
use crate::ids::AccessKeyId;
use crate::policy::{Notify, Rotation};

/// How many times a notification that fails is tried, one attempt per run.
pub const MAX_NOTIFY_ATTEMPTS: u32 = 3;

/// One notification to send now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueNotification {
    /// The (old) key it is about.
    pub key: AccessKeyId,
    /// What it says.
    pub kind: NotificationKind,
    /// Where it goes.
    pub channel: NotificationChannel,
    /// Which attempt this is (1 for the first).
    pub attempt: u32,
}

/// When an old key awaiting adoption is blocked if it is still in use, if it is waiting.
pub fn adoption_deadline(ks: &KeyState, rules: &Rotation) -> Option<DateTime<Utc>> {
    (ks.phase == Phase::AwaitingAdoption)
        .then_some(ks.adoption_started_at?)
        .map(|started| after(started, rules.adoption_timeout))
}

/// Whether the key's situation calls for a notification of `kind` now.
///
/// - `delivered`: the replacement is delivered and verified and the old key waits for
///   adoption (once per replacement);
/// - `blocked`, `failed`: the key is in that phase (once each time it gets there);
/// - `adoption-timeout-approaching`: the old key still waits for adoption and `now` is
///   within `warn_before_adoption_timeout` of its deadline, and past the quiet period
///   (once per adoption period). Ask this after the decisions have settled for the run
///   (`decide` gave `Wait` or `Idle`): a key past its quiet period that still waits has
///   then just been seen in use, or it would have been deactivated.
pub fn calls_for(
    ks: &KeyState,
    kind: NotificationKind,
    notify: &Notify,
    rules: &Rotation,
    now: DateTime<Utc>,
) -> bool {
    match kind {
        NotificationKind::Delivered => {
            ks.phase == Phase::AwaitingAdoption && ks.new_key.is_some() && ks.delivery.is_some()
        }
        NotificationKind::Blocked => ks.phase == Phase::Blocked,
        NotificationKind::Failed => ks.phase == Phase::Failed,
        NotificationKind::AdoptionTimeoutApproaching => {
            let (Some(started), Some(deadline)) =
                (ks.adoption_started_at, adoption_deadline(ks, rules))
            else {
                return false;
            };
            let warn_from = before(deadline, notify.warn_before_adoption_timeout)
                .max(after(started, rules.quiet_period));
            now >= warn_from && ks.last_failure_at.is_none()
        }
    }
}

/// The notifications due for a user now, in key order: every wanted kind the key's
/// situation calls for, on every configured channel, unless it was sent already or has
/// failed [`MAX_NOTIFY_ATTEMPTS`] times.
pub fn due_notifications(
    state: &UserState,
    notify: &Notify,
    rules: &Rotation,
    now: DateTime<Utc>,
) -> Vec<DueNotification> {
    let channels = notify.channels();
    let mut due = Vec::new();
    for ks in state.keys.values() {
        for kind in NotificationKind::ALL {
            if !notify.wants(kind) || !calls_for(ks, kind, notify, rules, now) {
                continue;
            }
            for &channel in &channels {
                let log = ks.notifications.get(&(kind, channel));
                let attempt = match log {
                    None => 1,
                    Some(log) if log.sent || log.failures >= MAX_NOTIFY_ATTEMPTS => continue,
                    Some(log) => log.failures + 1,
                };
                due.push(DueNotification {
                    key: ks.key.clone(),
                    kind,
                    channel,
                    attempt,
                });
            }
        }
    }
    due
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;
    use crate::policy::Policy;
    use crate::rotation::events::{Path, RotationEvent};

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()
    }

    fn k(n: u8) -> AccessKeyId {
        AccessKeyId::new(format!("AKIATESTKEY{n:09}")).unwrap()
    }

    /// 3d quiet period, 30d adoption timeout, warning 3d before it, both channels.
    fn policy(extra: &str) -> Policy {
        Policy::from_toml(
            "p.toml",
            &format!(
                "[notify]\nsns_topic_arn = \"arn:aws:sns:us-east-1:123456789012:keys\"\nwebhook_url_env = \"HOOK\"\n{extra}"
            ),
        )
        .unwrap()
    }

    fn due(
        events: &[(RotationEvent, DateTime<Utc>)],
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Vec<(NotificationKind, NotificationChannel, u32)> {
        let state = UserState::from_events(events.iter().map(|(e, at)| (e, *at)));
        due_notifications(
            &state,
            policy.notify.as_ref().unwrap(),
            &policy.rotation,
            now,
        )
        .into_iter()
        .map(|d| (d.kind, d.channel, d.attempt))
        .collect()
    }

    fn delivered_at(at: DateTime<Utc>) -> Vec<(RotationEvent, DateTime<Utc>)> {
        vec![
            (
                RotationEvent::KeyEnrolled {
                    key: k(1),
                    path: Path::Rotate,
                    reason: "old".into(),
                    created_at: at - Duration::days(100),
                    last_used_at: Some(at),
                },
                at,
            ),
            (
                RotationEvent::ReplacementCreated {
                    key: k(1),
                    new_key: k(2),
                    created_at: at,
                },
                at,
            ),
            (
                RotationEvent::SecretDelivered {
                    key: k(1),
                    new_key: k(2),
                    secret_arn: "arn:aws:secretsmanager:us-east-1:111111111111:secret:keyturn/u"
                        .into(),
                    version_id: "v1".into(),
                    recovered: false,
                },
                at,
            ),
            (
                RotationEvent::ReplacementVerified {
                    key: k(1),
                    new_key: k(2),
                    caller_arn: "arn:aws:iam::111111111111:user/u".into(),
                },
                at,
            ),
        ]
    }

    fn sent(kind: NotificationKind, channel: NotificationChannel) -> RotationEvent {
        RotationEvent::NotificationSent {
            key: k(1),
            kind,
            channel,
            owner: Some("team@example.com".into()),
            new_key: Some(k(2)),
            message_id: None,
        }
    }

    fn failed(kind: NotificationKind, channel: NotificationChannel, attempt: u32) -> RotationEvent {
        RotationEvent::NotificationFailed {
            key: k(1),
            kind,
            channel,
            attempt,
            error_code: "WebhookStatus500".into(),
        }
    }

    use NotificationChannel::{Sns, Webhook};
    use NotificationKind::{AdoptionTimeoutApproaching as Approaching, Blocked, Delivered, Failed};

    #[test]
    fn a_verified_delivery_is_announced_once_on_every_channel() {
        let p = policy("");
        let mut events = delivered_at(t0());
        assert_eq!(
            due(&events, &p, t0()),
            [(Delivered, Sns, 1), (Delivered, Webhook, 1)]
        );
        events.push((sent(Delivered, Sns), t0()));
        assert_eq!(due(&events, &p, t0()), [(Delivered, Webhook, 1)]);
        events.push((sent(Delivered, Webhook), t0()));
        assert_eq!(due(&events, &p, t0()), []);
    }

    #[test]
    fn nothing_is_due_before_verification_or_for_unwanted_kinds() {
        let p = policy("");
        let events = delivered_at(t0());
        assert_eq!(due(&events[..3], &p, t0()), [], "delivered, not verified");
        let only_blocked = policy("on = [\"blocked\"]\n");
        assert_eq!(due(&events, &only_blocked, t0()), []);
    }

    #[test]
    fn a_failed_notification_is_tried_again_up_to_the_limit_and_never_after_success() {
        let p = policy("");
        let mut events = delivered_at(t0());
        events.push((sent(Delivered, Sns), t0()));
        for attempt in 1..MAX_NOTIFY_ATTEMPTS {
            events.push((failed(Delivered, Webhook, attempt), t0()));
            assert_eq!(due(&events, &p, t0()), [(Delivered, Webhook, attempt + 1)]);
        }
        events.push((failed(Delivered, Webhook, MAX_NOTIFY_ATTEMPTS), t0()));
        assert_eq!(
            due(&events, &p, t0()),
            [],
            "gave up after {MAX_NOTIFY_ATTEMPTS}"
        );
    }

    #[test]
    fn the_adoption_warning_falls_due_within_its_window_once_per_adoption_period() {
        let p = policy("on = [\"adoption-timeout-approaching\"]\n");
        let mut events = delivered_at(t0());
        // Deadline t0+30d, warning from t0+27d.
        assert_eq!(due(&events, &p, t0() + Duration::days(26)), []);
        let warn = t0() + Duration::days(27);
        assert_eq!(
            due(&events, &p, warn),
            [(Approaching, Sns, 1), (Approaching, Webhook, 1)]
        );
        events.push((sent(Approaching, Sns), warn));
        events.push((sent(Approaching, Webhook), warn));
        assert_eq!(due(&events, &p, warn + Duration::days(1)), [], "once");
        // Deactivated, rolled back: a new adoption period, a new warning when it nears its end.
        let back = t0() + Duration::days(28);
        events.push((RotationEvent::KeyReactivated { key: k(1) }, back));
        assert_eq!(due(&events, &p, back + Duration::days(1)), []);
        assert_eq!(due(&events, &p, back + Duration::days(27)).len(), 2);
    }

    #[test]
    fn the_adoption_warning_never_comes_before_the_quiet_period_has_passed() {
        // Warning 29d before a 30d timeout: it would start on day 1, inside the 3d quiet period.
        let p = policy(
            "on = [\"adoption-timeout-approaching\"]\nwarn_before_adoption_timeout = \"29d\"\n",
        );
        let events = delivered_at(t0());
        assert_eq!(due(&events, &p, t0() + Duration::days(2)), []);
        assert_eq!(due(&events, &p, t0() + Duration::days(3)).len(), 2);
    }

    #[test]
    fn blocked_and_failed_keys_are_reported_once_each_time() {
        let p = policy("");
        let block = RotationEvent::KeyBlocked {
            key: k(1),
            reason: "two keys in use".into(),
            evidence: None,
        };
        let mut events = vec![(block.clone(), t0())];
        assert_eq!(
            due(&events, &p, t0()),
            [(Blocked, Sns, 1), (Blocked, Webhook, 1)]
        );
        events.push((sent(Blocked, Sns), t0()));
        events.push((sent(Blocked, Webhook), t0()));
        assert_eq!(due(&events, &p, t0()), []);
        let fail = RotationEvent::KeyFailed {
            key: k(3),
            reason: "5 failures in a row, the last with Throttling".into(),
        };
        events.push((fail, t0()));
        let state = UserState::from_events(events.iter().map(|(e, at)| (e, *at)));
        let due = due_notifications(&state, p.notify.as_ref().unwrap(), &p.rotation, t0());
        assert_eq!(due.len(), 2);
        assert!(due.iter().all(|d| d.key == k(3) && d.kind == Failed));
    }

    #[test]
    fn notification_events_leave_the_rotation_untouched() {
        let mut events = delivered_at(t0());
        let before = UserState::from_events(events.iter().map(|(e, at)| (e, *at)));
        events.push((sent(Delivered, Sns), t0()));
        events.push((failed(Delivered, Webhook, 1), t0()));
        let after = UserState::from_events(events.iter().map(|(e, at)| (e, *at)));
        let (b, a) = (&before.keys[&k(1)], &after.keys[&k(1)]);
        assert_eq!(
            (a.phase, a.failures, a.open_intent.clone()),
            (b.phase, b.failures, b.open_intent.clone())
        );
        assert_eq!(a.adoption_started_at, b.adoption_started_at);
        assert_eq!(after.keys.len(), 1);
    }

    #[test]
    fn notification_events_round_trip_through_their_payload() {
        for event in [sent(Delivered, Sns), failed(Approaching, Webhook, 2)] {
            let (kind, payload) = event.to_payload();
            assert_eq!(
                RotationEvent::from_payload(&kind, 1, &payload).unwrap(),
                event
            );
        }
        let (kind, _) = sent(Delivered, Sns).to_payload();
        assert_eq!(kind, "notification-sent");
        assert_eq!(sent(Delivered, Webhook).key_ids(), [&k(1), &k(2)]);
    }
}
