//! Given these events and this observation, then this decision: the rotation model's
//! pure tests, one small fixture per path and edge.

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::*;
use crate::ids::AccessKeyId;
use crate::inventory::KeyStatus;
use crate::policy::{Rotation, UserExclusion};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()
}

fn days(n: i64) -> Duration {
    Duration::days(n)
}

fn k(n: u8) -> AccessKeyId {
    AccessKeyId::new(format!("AKIATESTKEY{n:09}")).unwrap()
}

fn rules() -> Rotation {
    Rotation::default() // 90d age, 45d unused, 3d quiet, 30d adoption, 7d observation
}

fn active(
    key: AccessKeyId,
    age: i64,
    used_days_ago: Option<i64>,
    now: DateTime<Utc>,
) -> ObservedKey {
    ObservedKey {
        key,
        status: KeyStatus::Active,
        created_at: now - days(age),
        last_used_at: used_days_ago.map(|d| now - days(d)),
    }
}

fn inactive(
    key: AccessKeyId,
    age: i64,
    used_days_ago: Option<i64>,
    now: DateTime<Utc>,
) -> ObservedKey {
    ObservedKey {
        status: KeyStatus::Inactive,
        ..active(key, age, used_days_ago, now)
    }
}

fn fresh(key: &AccessKeyId, used: Option<DateTime<Utc>>, now: DateTime<Utc>) -> FreshUse {
    FreshUse {
        key: key.clone(),
        checked_at: now,
        last_used_at: used,
    }
}

fn actions(plans: &[KeyPlan]) -> Vec<PlanAction> {
    plans.iter().map(|p| p.action).collect()
}

/// Events recorded at the given times.
struct Given(Vec<(RotationEvent, DateTime<Utc>)>);

impl Given {
    fn new() -> Self {
        Self(Vec::new())
    }
    fn at(mut self, at: DateTime<Utc>, event: RotationEvent) -> Self {
        self.0.push((event, at));
        self
    }
    fn state(&self) -> UserState {
        UserState::from_events(self.0.iter().map(|(e, at)| (e, *at)))
    }
    fn decide(
        &self,
        observed: &[ObservedKey],
        fresh: Option<&FreshUse>,
        now: DateTime<Utc>,
    ) -> Decision {
        decide(&self.state(), observed, fresh, None, &rules(), now)
    }
    /// The decision of a run signed with `caller`.
    fn decide_as(
        &self,
        caller: &AccessKeyId,
        observed: &[ObservedKey],
        fresh: Option<&FreshUse>,
        now: DateTime<Utc>,
    ) -> Decision {
        decide(&self.state(), observed, fresh, Some(caller), &rules(), now)
    }
}

fn enrolled(key: AccessKeyId, path: Path, created: DateTime<Utc>) -> RotationEvent {
    RotationEvent::KeyEnrolled {
        key,
        path,
        reason: "test".into(),
        created_at: created,
        last_used_at: None,
    }
}

/// A rotation of k(1) that reached AwaitingAdoption at `verified`.
fn rotation_verified(verified: DateTime<Utc>) -> Given {
    let created = verified - days(120);
    Given::new()
        .at(
            verified - Duration::minutes(5),
            enrolled(k(1), Path::Rotate, created),
        )
        .at(
            verified - Duration::minutes(4),
            RotationEvent::StepIntended {
                key: k(1),
                step: Step::CreateReplacement,
                attempt: 1,
                target: None,
            },
        )
        .at(
            verified - Duration::minutes(4),
            RotationEvent::ReplacementCreated {
                key: k(1),
                new_key: k(2),
                created_at: verified,
            },
        )
        .at(
            verified - Duration::minutes(3),
            RotationEvent::StepIntended {
                key: k(1),
                step: Step::DeliverSecret,
                attempt: 1,
                target: Some(k(2)),
            },
        )
        .at(
            verified - Duration::minutes(3),
            RotationEvent::SecretDelivered {
                key: k(1),
                new_key: k(2),
                secret_arn: "arn".into(),
                version_id: "v1".into(),
                recovered: false,
            },
        )
        .at(
            verified,
            RotationEvent::ReplacementVerified {
                key: k(1),
                new_key: k(2),
                caller_arn: "arn:user".into(),
            },
        )
}

// ---- classify: the plan --------------------------------------------------------------

#[test]
fn an_old_key_in_use_is_rotated_and_says_why() {
    let now = t0();
    let plans = classify(
        &[active(k(1), 120, Some(1), now)],
        None,
        None,
        &rules(),
        now,
    );
    assert_eq!(actions(&plans), [PlanAction::Rotate]);
    assert!(
        plans[0]
            .reason
            .starts_with("Active, 120 days old, last used 1 day ago"),
        "{}",
        plans[0].reason
    );
}

#[test]
fn thresholds_are_exact() {
    let now = t0();
    let at_age = |age: Duration| ObservedKey {
        created_at: now - age,
        ..active(k(1), 0, Some(0), now)
    };
    let plan = |key: ObservedKey| classify(&[key], None, None, &rules(), now)[0].action;
    assert_eq!(
        plan(at_age(days(90))),
        PlanAction::None,
        "exactly 90 days old is not older than 90 days"
    );
    assert_eq!(
        plan(at_age(days(90) + Duration::seconds(1))),
        PlanAction::Rotate
    );
    let unused = |d: Duration| ObservedKey {
        last_used_at: Some(now - d),
        ..active(k(1), 60, None, now)
    };
    assert_eq!(
        plan(unused(days(45))),
        PlanAction::RetireUnused,
        "unused for exactly 45 days is unused for 45 days"
    );
    assert_eq!(
        plan(unused(days(45) - Duration::seconds(1))),
        PlanAction::None
    );
}

#[test]
fn never_used_keys_count_their_quiet_from_creation() {
    let now = t0();
    let plans = classify(
        &[active(k(1), 200, None, now), active(k(2), 10, None, now)],
        None,
        None,
        &rules(),
        now,
    );
    assert_eq!(
        actions(&plans),
        [PlanAction::RetireUnused, PlanAction::None]
    );
}

#[test]
fn a_key_created_in_the_future_is_left_alone() {
    let now = t0();
    let plans = classify(&[active(k(1), -3, None, now)], None, None, &rules(), now);
    assert_eq!(
        actions(&plans),
        [PlanAction::None],
        "a clock behind IAM's never makes a key look old"
    );
}

#[test]
fn two_active_keys_in_use_are_blocked_when_one_needs_rotation() {
    let now = t0();
    let both = [
        active(k(1), 120, Some(1), now),
        active(k(2), 100, Some(1), now),
    ];
    let plans = classify(&both, None, None, &rules(), now);
    assert_eq!(actions(&plans), [PlanAction::Blocked, PlanAction::Blocked]);
    assert!(plans[0].reason.contains("two Active keys in use"));
    let young = [
        active(k(1), 20, Some(1), now),
        active(k(2), 10, Some(1), now),
    ];
    assert_eq!(
        actions(&classify(&young, None, None, &rules(), now)),
        [PlanAction::None, PlanAction::None]
    );
}

#[test]
fn a_second_key_that_is_inactive_or_unused_frees_the_slot() {
    let now = t0();
    let with_inactive = [
        active(k(1), 120, Some(1), now),
        inactive(k(2), 30, Some(20), now),
    ];
    assert_eq!(
        actions(&classify(&with_inactive, None, None, &rules(), now)),
        [PlanAction::Rotate, PlanAction::DeleteInactive]
    );
    let with_unused = [active(k(1), 120, Some(1), now), active(k(2), 60, None, now)];
    assert_eq!(
        actions(&classify(&with_unused, None, None, &rules(), now)),
        [PlanAction::Rotate, PlanAction::RetireUnused]
    );
}

#[test]
fn excluded_users_and_the_callers_own_key_are_skipped() {
    let now = t0();
    let key = [active(k(1), 120, Some(1), now)];
    let exclusion = UserExclusion::ExcludedByPattern("breakglass-*".into());
    let plans = classify(&key, Some(&exclusion), None, &rules(), now);
    assert_eq!(actions(&plans), [PlanAction::Skip]);
    assert!(plans[0].reason.contains("excluded by pattern"));
    let plans = classify(&key, None, Some(&k(1)), &rules(), now);
    assert_eq!(actions(&plans), [PlanAction::Skip]);
    assert!(plans[0].reason.contains("the key this run is signed with"));
    assert!(
        enroll(&UserState::default(), &key, &plans, Some(&k(1))).is_empty(),
        "the caller's key is not recorded as skipped for good"
    );
}

// ---- enroll ---------------------------------------------------------------------------

#[test]
fn enrollment_takes_on_only_untracked_keys_that_need_something() {
    let now = t0();
    let keys = [
        active(k(1), 120, Some(1), now),
        inactive(k(3), 10, Some(1), now),
    ];
    let plans = classify(&keys, None, None, &rules(), now);
    let events = enroll(&UserState::default(), &keys, &plans, None);
    assert!(
        matches!(
            &events[..],
            [
                RotationEvent::KeyEnrolled {
                    path: Path::Rotate,
                    ..
                },
                RotationEvent::KeyEnrolled {
                    path: Path::DeleteInactive,
                    ..
                }
            ]
        ),
        "{events:?}"
    );
    let young = [active(k(4), 10, Some(1), now)];
    assert!(
        enroll(
            &UserState::default(),
            &young,
            &classify(&young, None, None, &rules(), now),
            None
        )
        .is_empty(),
        "a young key in use needs nothing"
    );

    let state = rotation_verified(now).state();
    let after = [
        active(k(1), 120, Some(1), now),
        active(k(2), 200, None, now),
    ];
    let plans = classify(&after, None, None, &rules(), now);
    assert!(
        enroll(&state, &after, &plans, None).is_empty(),
        "the old key and its replacement are already tracked"
    );
}

// ---- decide: the rotate path ------------------------------------------------------------

#[test]
fn a_pending_rotation_creates_its_replacement() {
    let now = t0();
    let given = Given::new().at(now, enrolled(k(1), Path::Rotate, now - days(120)));
    let decision = given.decide(&[active(k(1), 120, Some(1), now)], None, now);
    assert_eq!(
        decision,
        Decision::Act {
            key: k(1),
            action: Action::CreateReplacement { attempt: 1 }
        }
    );
}

#[test]
fn a_create_intent_without_outcome_deletes_the_orphan_it_left() {
    let now = t0();
    let given = Given::new()
        .at(now, enrolled(k(1), Path::Rotate, now - days(120)))
        .at(
            now,
            RotationEvent::StepIntended {
                key: k(1),
                step: Step::CreateReplacement,
                attempt: 1,
                target: None,
            },
        );
    let orphan = active(k(9), 0, None, now + Duration::seconds(1));
    let later = now + Duration::minutes(1);
    let keys = [active(k(1), 120, Some(1), now), orphan];
    assert_eq!(
        given.decide(&keys, None, later),
        Decision::CheckLastUse { key: k(9) },
        "never deleted without fresh evidence that it was never used"
    );
    let decision = given.decide(&keys, Some(&fresh(&k(9), None, later)), later);
    assert_eq!(
        decision,
        Decision::Act {
            key: k(1),
            action: Action::DeleteOrphan { orphan: k(9) }
        }
    );

    let nothing_created = given.decide(
        &[active(k(1), 120, Some(1), now)],
        None,
        now + Duration::minutes(1),
    );
    assert_eq!(
        nothing_created,
        Decision::Act {
            key: k(1),
            action: Action::CreateReplacement { attempt: 2 }
        }
    );
}

#[test]
fn the_orphan_of_a_create_intent_is_never_enrolled_and_is_deleted_even_after_a_failure() {
    // The run died after CreateAccessKey and before recording it: the next run sees a
    // second, young, unknown Active key. Enrolling it would block both keys for good.
    let now = t0();
    let intended = Given::new()
        .at(now, enrolled(k(1), Path::Rotate, now - days(120)))
        .at(
            now,
            RotationEvent::StepIntended {
                key: k(1),
                step: Step::CreateReplacement,
                attempt: 1,
                target: None,
            },
        );
    let later = now + Duration::minutes(1);
    let keys = [
        active(k(1), 120, Some(1), later),
        active(k(9), 0, None, now + Duration::seconds(1)),
    ];
    let plans = classify(&keys, None, None, &rules(), later);
    assert!(
        is_unrecorded_replacement(&intended.state(), &keys[1]),
        "created after the open create intent"
    );
    assert!(
        !is_unrecorded_replacement(&intended.state(), &keys[0]),
        "the tracked key is not an orphan"
    );
    assert!(
        enroll(&intended.state(), &keys, &plans, None).is_empty(),
        "the orphan is not enrolled (not even as blocked)"
    );

    // Deleting it failed: the failure does not close the intent, so the orphan is still
    // recognised, still not enrolled, and its deletion is retried after the backoff.
    let failed = intended
        .at(
            later,
            RotationEvent::StepIntended {
                key: k(1),
                step: Step::DeleteOrphan,
                attempt: 1,
                target: Some(k(9)),
            },
        )
        .at(
            later,
            RotationEvent::StepFailed {
                key: k(1),
                step: Step::DeleteOrphan,
                attempt: 1,
                code: "ServiceUnavailable".into(),
                message: "x".into(),
            },
        );
    assert!(enroll(&failed.state(), &keys, &plans, None).is_empty());
    assert!(matches!(
        failed.decide(&keys, None, later),
        Decision::Wait { .. }
    ));
    assert_eq!(
        failed.decide(&keys, None, later + Duration::seconds(2)),
        Decision::Act {
            key: k(1),
            action: Action::DeleteOrphan { orphan: k(9) }
        }
    );
}

#[test]
fn a_failed_create_keeps_looking_for_the_key_it_may_have_made() {
    let now = t0();
    let given = Given::new()
        .at(now, enrolled(k(1), Path::Rotate, now - days(120)))
        .at(
            now,
            RotationEvent::StepIntended {
                key: k(1),
                step: Step::CreateReplacement,
                attempt: 1,
                target: None,
            },
        )
        .at(
            now,
            RotationEvent::StepFailed {
                key: k(1),
                step: Step::CreateReplacement,
                attempt: 1,
                code: "RequestTimeout".into(),
                message: "x".into(),
            },
        );
    let later = now + Duration::seconds(3);
    let made_anyway = [
        active(k(1), 120, Some(1), later),
        active(k(9), 0, None, now + Duration::seconds(1)),
    ];
    assert_eq!(
        given.decide(&made_anyway, None, later),
        Decision::CheckLastUse { key: k(9) },
        "a create that failed may still have created the key"
    );
    assert_eq!(
        given.decide(&made_anyway, Some(&fresh(&k(9), None, later)), later),
        Decision::Act {
            key: k(1),
            action: Action::DeleteOrphan { orphan: k(9) }
        },
    );
    assert_eq!(
        given.decide(&made_anyway[..1], None, later),
        Decision::Act {
            key: k(1),
            action: Action::CreateReplacement { attempt: 2 }
        }
    );
}

#[test]
fn a_key_that_predates_the_intent_is_never_taken_for_an_orphan() {
    let now = t0();
    let given = Given::new()
        .at(now, enrolled(k(1), Path::Rotate, now - days(120)))
        .at(
            now,
            RotationEvent::StepIntended {
                key: k(1),
                step: Step::CreateReplacement,
                attempt: 1,
                target: None,
            },
        );
    let someone_elses = active(k(9), 1, Some(0), now);
    let decision = given.decide(
        &[active(k(1), 120, Some(1), now), someone_elses],
        None,
        now + Duration::minutes(1),
    );
    assert!(
        matches!(
            &decision,
            Decision::Act {
                action: Action::Record(RotationEvent::KeyBlocked { .. }),
                ..
            }
        ),
        "an unknown key appearing mid-campaign blocks the rotation, it is not deleted: {decision:?}"
    );
}

#[test]
fn a_replacement_without_stored_secret_is_reconciled_first() {
    let now = t0();
    let given = Given::new()
        .at(now, enrolled(k(1), Path::Rotate, now - days(120)))
        .at(
            now,
            RotationEvent::StepIntended {
                key: k(1),
                step: Step::CreateReplacement,
                attempt: 1,
                target: None,
            },
        )
        .at(
            now,
            RotationEvent::ReplacementCreated {
                key: k(1),
                new_key: k(2),
                created_at: now,
            },
        );
    let decision = given.decide(
        &[active(k(1), 120, Some(1), now), active(k(2), 0, None, now)],
        None,
        now,
    );
    assert_eq!(
        decision,
        Decision::Act {
            key: k(1),
            action: Action::RecoverDelivery {
                new_key: k(2),
                attempt: 1
            }
        }
    );

    let lost = given
        .at(
            now,
            RotationEvent::StepIntended {
                key: k(1),
                step: Step::DeleteOrphan,
                attempt: 1,
                target: Some(k(2)),
            },
        )
        .at(
            now,
            RotationEvent::OrphanDeleted {
                key: k(1),
                orphan: k(2),
            },
        );
    let again = lost.decide(&[active(k(1), 120, Some(1), now)], None, now);
    assert_eq!(
        again,
        Decision::Act {
            key: k(1),
            action: Action::CreateReplacement { attempt: 2 }
        }
    );
}

#[test]
fn the_adoption_gate_waits_for_quiet_then_deactivates_on_fresh_evidence() {
    let verified = t0();
    let given = rotation_verified(verified);
    let keys = |now| [active(k(1), 120, Some(0), now), active(k(2), 0, None, now)];

    let early = verified + days(1);
    assert_eq!(
        given.decide(&keys(early), None, early),
        Decision::Wait {
            key: k(1),
            until: Some(verified + days(3)),
            reason: "waiting for the old key to go quiet".into()
        }
    );
    let due = verified + days(3);
    assert_eq!(
        given.decide(&keys(due), None, due),
        Decision::CheckLastUse { key: k(1) }
    );

    let before_delivery = fresh(&k(1), Some(verified - days(1)), due);
    let decision = given.decide(&keys(due), Some(&before_delivery), due);
    assert_eq!(
        decision,
        Decision::Act {
            key: k(1),
            action: Action::Deactivate {
                evidence: UseEvidence {
                    checked_at: due,
                    last_used_at: Some(verified - days(1))
                }
            }
        }
    );

    let used_yesterday = fresh(&k(1), Some(due - days(1)), due);
    assert_eq!(
        given.decide(&keys(due), Some(&used_yesterday), due),
        Decision::Wait {
            key: k(1),
            until: Some(due + days(2)),
            reason: "the old key is still in use; waiting for the application to switch".into()
        }
    );
}

/// A daily job's key made Inactive by a person for a day looks quiet: its refused calls
/// leave no last use. Awaiting adoption, an old key seen Inactive outside keyturn is
/// blocked for a human at once, before any quiet period could be judged on it; our own
/// deactivation whose outcome was lost is finished as usual.
#[test]
fn an_old_key_made_inactive_outside_keyturn_while_awaiting_adoption_is_blocked() {
    let verified = t0();
    let given = rotation_verified(verified);
    let keys = |now| {
        [
            inactive(k(1), 120, Some(2), now),
            active(k(2), 0, None, now),
        ]
    };
    for now in [verified + days(1), verified + days(3)] {
        blocked_for(
            &given.decide(&keys(now), None, now),
            &[
                "made Inactive outside keyturn",
                "quiet period cannot be judged",
            ],
        );
    }

    let due = verified + days(3);
    let deactivating = given.at(
        due,
        RotationEvent::StepIntended {
            key: k(1),
            step: Step::Deactivate,
            attempt: 1,
            target: None,
        },
    );
    let quiet = fresh(&k(1), Some(verified - days(1)), due);
    assert!(matches!(
        deactivating.decide(&keys(due), Some(&quiet), due),
        Decision::Act {
            action: Action::Deactivate { .. },
            ..
        }
    ));
}

#[test]
fn a_key_still_used_at_the_adoption_timeout_is_blocked_never_forced() {
    let verified = t0();
    let now = verified + days(30);
    let decision = rotation_verified(verified).decide(
        &[active(k(1), 150, Some(0), now)],
        Some(&fresh(&k(1), Some(now - Duration::hours(1)), now)),
        now,
    );
    match decision {
        Decision::Act {
            action:
                Action::Record(RotationEvent::KeyBlocked {
                    reason,
                    evidence: Some(evidence),
                    ..
                }),
            ..
        } => {
            assert!(reason.contains("still used"), "{reason}");
            assert_eq!(evidence.last_used_at, Some(now - Duration::hours(1)));
        }
        other => panic!("expected a block, got {other:?}"),
    }
}

#[test]
fn an_observed_key_used_after_its_deactivation_is_never_deleted() {
    // Given: keyturn deactivated the old key on evidence of its last use.
    let verified = t0();
    let deactivated = verified + days(4);
    let last_use = verified - days(1);
    let observing = rotation_verified(verified).at(
        deactivated,
        RotationEvent::KeyDeactivated {
            key: k(1),
            evidence: UseEvidence {
                checked_at: deactivated,
                last_used_at: Some(last_use),
            },
        },
    );
    let due = deactivated + days(7);
    let replacement = active(k(2), 10, Some(0), due);
    let old = |used: DateTime<Utc>| ObservedKey {
        last_used_at: Some(used),
        ..inactive(k(1), 130, None, due)
    };
    let blocked = |decision: Decision| match decision {
        Decision::Act {
            key,
            action: Action::Record(RotationEvent::KeyBlocked { reason, .. }),
        } => {
            assert_eq!(key, k(1));
            assert!(reason.contains("after keyturn deactivated it"), "{reason}");
        }
        other => panic!("expected the old key blocked, got {other:?}"),
    };
    // When: a person made it Active during the observation, an application used it,
    // and the person made it Inactive again before keyturn looked.
    let used_again = deactivated + days(4);
    // Then: the listing shows the later use, and the key is blocked, due or not.
    blocked(observing.decide(&[old(used_again), replacement.clone()], None, due));
    blocked(observing.decide(
        &[old(used_again), replacement.clone()],
        None,
        deactivated + days(5),
    ));
    // A listing that lags: the fresh answer asked for at the end shows it.
    assert_eq!(
        observing.decide(&[old(last_use), replacement.clone()], None, due),
        Decision::CheckLastUse { key: k(1) }
    );
    blocked(observing.decide(
        &[old(last_use), replacement.clone()],
        Some(&fresh(&k(1), Some(used_again), due)),
        due,
    ));
    // No use since the evidence: deleted.
    assert_eq!(
        observing.decide(
            &[old(last_use), replacement],
            Some(&fresh(&k(1), Some(last_use), due)),
            due
        ),
        Decision::Act {
            key: k(1),
            action: Action::Delete
        }
    );
}

#[test]
fn deletion_waits_for_the_observation_period_and_never_hits_an_active_key() {
    let verified = t0();
    let deactivated = verified + days(3);
    let given = rotation_verified(verified).at(
        deactivated,
        RotationEvent::KeyDeactivated {
            key: k(1),
            evidence: UseEvidence {
                checked_at: deactivated,
                last_used_at: None,
            },
        },
    );
    let replacement = |now| active(k(2), 10, Some(0), now);
    let now = deactivated + days(6);
    assert!(
        matches!(given.decide(&[inactive(k(1), 130, None, now), replacement(now)], None, now), Decision::Wait { until: Some(u), .. } if u == deactivated + days(7))
    );
    let now = deactivated + days(7);
    // Due: one fresh answer on the key's last use first, then the deletion.
    assert_eq!(
        given.decide(
            &[inactive(k(1), 130, None, now), replacement(now)],
            None,
            now
        ),
        Decision::CheckLastUse { key: k(1) }
    );
    assert_eq!(
        given.decide(
            &[inactive(k(1), 130, None, now), replacement(now)],
            Some(&fresh(&k(1), None, now)),
            now
        ),
        Decision::Act {
            key: k(1),
            action: Action::Delete
        }
    );
    let reactivated_by_hand =
        given.decide(&[active(k(1), 130, None, now), replacement(now)], None, now);
    assert!(matches!(
        reactivated_by_hand,
        Decision::Act {
            action: Action::Record(RotationEvent::KeyBlocked { .. }),
            ..
        }
    ));
}

#[test]
fn a_clock_moving_backwards_never_advances_a_gate() {
    let verified = t0();
    let deactivated = verified + days(3);
    let given = rotation_verified(verified).at(
        deactivated,
        RotationEvent::KeyDeactivated {
            key: k(1),
            evidence: UseEvidence {
                checked_at: deactivated,
                last_used_at: None,
            },
        },
    );
    let earlier = deactivated - days(2);
    assert!(matches!(
        given.decide(
            &[
                inactive(k(1), 130, None, earlier),
                active(k(2), 0, None, earlier)
            ],
            None,
            earlier
        ),
        Decision::Wait { .. }
    ));
    assert!(matches!(
        rotation_verified(verified).decide(
            &[active(k(1), 120, None, verified)],
            None,
            verified - days(1)
        ),
        Decision::Wait { .. }
    ));
}

#[test]
fn rollback_puts_the_key_back_to_awaiting_adoption_with_a_new_clock() {
    let verified = t0();
    let deactivated = verified + days(3);
    let reactivated = deactivated + days(1);
    let given = rotation_verified(verified)
        .at(
            deactivated,
            RotationEvent::KeyDeactivated {
                key: k(1),
                evidence: UseEvidence {
                    checked_at: deactivated,
                    last_used_at: None,
                },
            },
        )
        .at(
            reactivated,
            RotationEvent::RollbackRequested {
                key: k(1),
                reason: "billing broke".into(),
                requested_by: "ops".into(),
            },
        )
        .at(reactivated, RotationEvent::KeyReactivated { key: k(1) });
    let state = given.state();
    assert_eq!(state.keys[&k(1)].phase, Phase::AwaitingAdoption);
    assert_eq!(state.keys[&k(1)].adoption_started_at, Some(reactivated));
    let now = reactivated + days(1);
    assert!(
        matches!(given.decide(&[active(k(1), 125, Some(0), now)], None, now), Decision::Wait { until: Some(u), .. } if u == reactivated + days(3))
    );
}

#[test]
fn a_rollback_intended_but_not_carried_out_is_finished_never_dropped() {
    let verified = t0();
    let deactivated = verified + days(3);
    let asked = deactivated + days(1);
    let intended = rotation_verified(verified)
        .at(
            deactivated,
            RotationEvent::KeyDeactivated {
                key: k(1),
                evidence: UseEvidence {
                    checked_at: deactivated,
                    last_used_at: None,
                },
            },
        )
        .at(
            asked,
            RotationEvent::RollbackRequested {
                key: k(1),
                reason: "billing broke".into(),
                requested_by: "ops".into(),
            },
        )
        .at(
            asked,
            RotationEvent::StepIntended {
                key: k(1),
                step: Step::Reactivate,
                attempt: 1,
                target: None,
            },
        );
    // Long past the observation period: the key must come back, not be deleted.
    let now = asked + days(30);
    let inactive_now = [
        inactive(k(1), 150, Some(5), now),
        active(k(2), 30, Some(0), now),
    ];
    assert_eq!(
        intended.decide(&inactive_now, None, now),
        Decision::Act {
            key: k(1),
            action: Action::Reactivate
        },
        "the rollback's process died before UpdateAccessKey"
    );
    let active_now = [
        active(k(1), 150, Some(5), now),
        active(k(2), 30, Some(0), now),
    ];
    assert_eq!(
        intended.decide(&active_now, None, now),
        Decision::Act {
            key: k(1),
            action: Action::Record(RotationEvent::KeyReactivated { key: k(1) })
        },
        "it died after UpdateAccessKey: the outcome is observed"
    );
    let failed = intended.at(
        asked,
        RotationEvent::StepFailed {
            key: k(1),
            step: Step::Reactivate,
            attempt: 1,
            code: "ServiceUnavailable".into(),
            message: "x".into(),
        },
    );
    assert_eq!(
        failed.decide(&inactive_now, None, now),
        Decision::Act {
            key: k(1),
            action: Action::Reactivate
        },
        "its call failed: the next run retries it"
    );
}

// ---- decide: the other paths --------------------------------------------------------------

#[test]
fn an_unused_key_is_retired_only_if_still_unused_on_fresh_evidence() {
    let now = t0();
    let given = Given::new().at(now, enrolled(k(1), Path::RetireUnused, now - days(200)));
    let key = [active(k(1), 200, None, now)];
    assert_eq!(
        given.decide(&key, None, now),
        Decision::CheckLastUse { key: k(1) }
    );
    let still_unused = fresh(&k(1), None, now);
    assert!(matches!(
        given.decide(&key, Some(&still_unused), now),
        Decision::Act {
            action: Action::Deactivate { .. },
            ..
        }
    ));

    let used_now = fresh(&k(1), Some(now), now);
    let decision = given.decide(&key, Some(&used_now), now);
    assert!(
        matches!(
            &decision,
            Decision::Act {
                action: Action::Record(RotationEvent::KeyEnrolled {
                    path: Path::Rotate,
                    ..
                }),
                ..
            }
        ),
        "an old key used again is rotated instead: {decision:?}"
    );
    let young = Given::new().at(now, enrolled(k(1), Path::RetireUnused, now - days(50)));
    let decision = young.decide(&[active(k(1), 50, None, now)], Some(&used_now), now);
    assert!(matches!(
        decision,
        Decision::Act {
            action: Action::Record(RotationEvent::KeyReleased { .. }),
            ..
        }
    ));
}

#[test]
fn a_retirement_whose_deactivation_was_not_recorded_is_finished_not_released() {
    let now = t0();
    let intended = Given::new()
        .at(now, enrolled(k(1), Path::RetireUnused, now - days(100)))
        .at(
            now,
            RotationEvent::StepIntended {
                key: k(1),
                step: Step::Deactivate,
                attempt: 1,
                target: None,
            },
        );
    // The run died after UpdateAccessKey: IAM shows the key Inactive, the journal does not.
    let later = now + Duration::minutes(1);
    let key = [inactive(k(1), 100, None, later)];
    assert_eq!(
        intended.decide(&key, None, later),
        Decision::CheckLastUse { key: k(1) }
    );
    assert!(matches!(
        intended.decide(&key, Some(&fresh(&k(1), None, later)), later),
        Decision::Act {
            action: Action::Deactivate { .. },
            ..
        }
    ));
    // Without our intent, an Inactive key was deactivated by someone else: released.
    let outside = Given::new().at(now, enrolled(k(1), Path::RetireUnused, now - days(100)));
    assert!(matches!(
        outside.decide(&key, None, later),
        Decision::Act {
            action: Action::Record(RotationEvent::KeyReleased { .. }),
            ..
        }
    ));
}

#[test]
fn an_inactive_key_is_deleted_after_the_observation_period_since_last_use() {
    let now = t0();
    let given = Given::new().at(now, enrolled(k(1), Path::DeleteInactive, now - days(30)));
    let key = [inactive(k(1), 30, Some(5), now)];
    let used = fresh(&k(1), Some(now - days(5)), now);
    assert!(
        matches!(given.decide(&key, Some(&used), now), Decision::Wait { until: Some(u), .. } if u == now + days(2))
    );
    let long_ago = fresh(&k(1), Some(now - days(8)), now);
    assert_eq!(
        given.decide(&key, Some(&long_ago), now),
        Decision::Act {
            key: k(1),
            action: Action::Delete
        }
    );
}

#[test]
fn an_inactive_key_is_checked_fresh_only_once_its_deletion_may_be_due() {
    let now = t0();
    let given = Given::new().at(now, enrolled(k(1), Path::DeleteInactive, now - days(30)));
    // Last used 5 days ago as far as known: not due for 2 more days whatever a fresh
    // check says (a last use only moves later), so no check is asked for.
    let recent = [inactive(k(1), 30, Some(5), now)];
    assert_eq!(
        given.decide(&recent, None, now),
        Decision::Wait {
            key: k(1),
            until: Some(now + days(2)),
            reason: "Inactive; waiting for the observation period".to_owned()
        }
    );
    // Due as far as known: the fresh check comes first, and decides.
    let old = [inactive(k(1), 30, Some(8), now)];
    assert_eq!(
        given.decide(&old, None, now),
        Decision::CheckLastUse { key: k(1) }
    );
    let used_since = fresh(&k(1), Some(now - days(1)), now);
    assert!(matches!(
        given.decide(&old, Some(&used_since), now),
        Decision::Wait { until: Some(u), .. } if u == now + days(6)
    ));
    // Nothing known of its use (listed without the report): counted from creation.
    let unknown = [inactive(k(1), 3, None, now)];
    assert!(matches!(
        given.decide(&unknown, None, now),
        Decision::Wait { until: Some(u), .. } if u == now + days(4)
    ));
}

#[test]
fn the_slot_is_freed_before_the_rotation_starts() {
    let now = t0();
    let given = Given::new()
        .at(now, enrolled(k(1), Path::Rotate, now - days(120)))
        .at(now, enrolled(k(2), Path::DeleteInactive, now - days(30)));
    let keys = [
        active(k(1), 120, Some(1), now),
        inactive(k(2), 30, Some(20), now),
    ];
    assert_eq!(
        given.decide(&keys, None, now),
        Decision::CheckLastUse { key: k(2) },
        "the Inactive key goes first"
    );
    let deleted = given.at(
        now,
        RotationEvent::KeyDeleted {
            key: k(2),
            already_gone: false,
        },
    );
    assert_eq!(
        deleted.decide(&keys[..1], None, now),
        Decision::Act {
            key: k(1),
            action: Action::CreateReplacement { attempt: 1 }
        }
    );
}

#[test]
fn keys_or_users_deleted_out_of_band_are_recorded_as_vanished() {
    let now = t0();
    let given = Given::new()
        .at(now, enrolled(k(1), Path::Rotate, now - days(120)))
        .at(now, enrolled(k(2), Path::DeleteInactive, now - days(30)));
    let user_gone = given.decide(&[], None, now);
    assert!(matches!(
        user_gone,
        Decision::Act {
            action: Action::Record(RotationEvent::KeyVanished { .. }),
            ..
        }
    ));
    let deleting = Given::new()
        .at(now, enrolled(k(2), Path::DeleteInactive, now - days(30)))
        .at(
            now,
            RotationEvent::StepIntended {
                key: k(2),
                step: Step::Delete,
                attempt: 1,
                target: None,
            },
        );
    assert_eq!(
        deleting.decide(&[], None, now),
        Decision::Act {
            key: k(2),
            action: Action::Record(RotationEvent::KeyDeleted {
                key: k(2),
                already_gone: true
            })
        },
        "a delete whose outcome was lost is recognised by observing IAM"
    );
}

#[test]
fn failures_back_off_and_then_fail_the_key() {
    let now = t0();
    let failed = |n: u32| {
        (0..n).fold(
            Given::new().at(now, enrolled(k(1), Path::Rotate, now - days(120))),
            |g, i| {
                g.at(
                    now,
                    RotationEvent::StepFailed {
                        key: k(1),
                        step: Step::CreateReplacement,
                        attempt: i + 1,
                        code: "Throttling".into(),
                        message: "x".into(),
                    },
                )
            },
        )
    };
    let key = [active(k(1), 120, Some(1), now)];
    assert!(
        matches!(failed(1).decide(&key, None, now), Decision::Wait { until: Some(u), .. } if u == now + Duration::seconds(2))
    );
    assert!(
        matches!(failed(3).decide(&key, None, now), Decision::Wait { until: Some(u), .. } if u == now + Duration::seconds(8))
    );
    assert!(matches!(
        failed(3).decide(&key, None, now + Duration::seconds(8)),
        Decision::Act {
            action: Action::CreateReplacement { .. },
            ..
        }
    ));
    match failed(5).decide(&key, None, now) {
        Decision::Act {
            action: Action::Record(RotationEvent::KeyFailed { reason, .. }),
            ..
        } => assert!(reason.contains("Throttling"), "{reason}"),
        other => panic!("expected the key to fail, got {other:?}"),
    }
}

// ---- events --------------------------------------------------------------------------

#[test]
fn events_round_trip_and_unknown_or_newer_ones_are_refused() {
    let event = RotationEvent::SecretDelivered {
        key: k(1),
        new_key: k(2),
        secret_arn: "arn".into(),
        version_id: "v".into(),
        recovered: true,
    };
    let (kind, payload) = event.to_payload();
    assert_eq!(kind, "secret-delivered");
    assert!(payload.get("type").is_none(), "the type is stored apart");
    assert_eq!(
        RotationEvent::from_payload(&kind, 1, &payload).unwrap(),
        event
    );
    assert!(
        RotationEvent::from_payload("key-teleported", 1, &payload)
            .unwrap_err()
            .contains("unknown event type")
    );
    assert!(
        RotationEvent::from_payload(&kind, 2, &payload)
            .unwrap_err()
            .contains("newer")
    );
    assert_eq!(event.key_ids(), [&k(1), &k(2)]);
    for kind in RotationEvent::TYPES {
        assert!(
            RotationEvent::from_payload(kind, 1, &serde_json::json!({})).is_err(),
            "{kind} needs its fields"
        );
    }
}

#[test]
fn the_old_key_is_never_deactivated_once_its_replacement_is_gone_or_inactive() {
    let verified = t0();
    let given = rotation_verified(verified);
    let due = verified + days(3);
    let quiet = fresh(&k(1), Some(verified - days(1)), due);
    let blocked = |decision: Decision| match decision {
        Decision::Act {
            key,
            action:
                Action::Record(RotationEvent::KeyBlocked {
                    reason, evidence, ..
                }),
        } => {
            assert_eq!(key, k(1));
            assert!(reason.contains("outside keyturn"), "{reason}");
            assert_eq!(
                evidence,
                Some(UseEvidence {
                    checked_at: due,
                    last_used_at: Some(verified - days(1))
                })
            );
        }
        other => panic!("expected the old key blocked, got {other:?}"),
    };

    // The replacement was deleted by hand: the old key is the user's only key.
    blocked(given.decide(&[active(k(1), 120, Some(1), due)], Some(&quiet), due));
    // The replacement was made Inactive by hand.
    blocked(given.decide(
        &[
            active(k(1), 120, Some(1), due),
            inactive(k(2), 3, None, due),
        ],
        Some(&quiet),
        due,
    ));
    // Before the quiet period nothing is decided yet; with the replacement there and
    // Active, the gate opens as usual.
    assert!(matches!(
        given.decide(&[active(k(1), 120, Some(1), due)], None, verified + days(1)),
        Decision::Wait { .. }
    ));
    assert!(matches!(
        given.decide(
            &[active(k(1), 120, Some(1), due), active(k(2), 3, None, due)],
            Some(&quiet),
            due
        ),
        Decision::Act {
            action: Action::Deactivate { .. },
            ..
        }
    ));
}

#[test]
fn the_old_key_is_never_deleted_once_its_replacement_is_gone_or_inactive_during_observation() {
    let verified = t0();
    let deactivated = verified + days(3);
    let observing = rotation_verified(verified).at(
        deactivated,
        RotationEvent::KeyDeactivated {
            key: k(1),
            evidence: UseEvidence {
                checked_at: deactivated,
                last_used_at: None,
            },
        },
    );
    let due = deactivated + days(7);
    let blocked = |decision: Decision| match decision {
        Decision::Act {
            key,
            action: Action::Record(RotationEvent::KeyBlocked { reason, .. }),
        } => {
            assert_eq!(key, k(1));
            assert!(reason.contains(k(2).as_str()), "{reason}");
            assert!(reason.contains("deleted or made Inactive"), "{reason}");
        }
        other => panic!("expected the old key blocked, got {other:?}"),
    };

    // The replacement was deleted by hand while the old key was observed: the old key,
    // Inactive, is the only way back.
    blocked(observing.decide(&[inactive(k(1), 130, None, due)], None, due));
    // The replacement was made Inactive by hand.
    blocked(observing.decide(
        &[
            inactive(k(1), 130, None, due),
            inactive(k(2), 10, Some(1), due),
        ],
        None,
        due,
    ));
    // Told at once, not only when the deletion falls due: the user may have no working key.
    blocked(observing.decide(
        &[inactive(k(1), 130, None, due)],
        None,
        deactivated + days(1),
    ));
    // With the replacement there and Active, the deletion goes ahead.
    assert_eq!(
        observing.decide(
            &[
                inactive(k(1), 130, None, due),
                active(k(2), 10, Some(0), due)
            ],
            Some(&fresh(&k(1), None, due)),
            due
        ),
        Decision::Act {
            key: k(1),
            action: Action::Delete
        }
    );

    // A pending rollback still comes first: the key is made Active again.
    let rolling_back = observing.at(
        due,
        RotationEvent::StepIntended {
            key: k(1),
            step: Step::Reactivate,
            attempt: 1,
            target: None,
        },
    );
    assert_eq!(
        rolling_back.decide(&[inactive(k(1), 130, None, due)], None, due),
        Decision::Act {
            key: k(1),
            action: Action::Reactivate
        }
    );

    // A retirement has no replacement to check: it is deleted when due.
    let retiring = Given::new()
        .at(
            verified,
            enrolled(k(1), Path::RetireUnused, verified - days(200)),
        )
        .at(
            deactivated,
            RotationEvent::KeyDeactivated {
                key: k(1),
                evidence: UseEvidence {
                    checked_at: deactivated,
                    last_used_at: None,
                },
            },
        );
    assert_eq!(
        retiring.decide(
            &[inactive(k(1), 200, None, due)],
            Some(&fresh(&k(1), None, due)),
            due
        ),
        Decision::Act {
            key: k(1),
            action: Action::Delete
        }
    );
}

#[test]
fn two_keys_to_rotate_that_wait_for_each_other_are_blocked_for_a_human() {
    // k(1) is rotated and waits for k(2), planned for retirement, to free the second
    // slot. k(2) is deactivated, then rolled back: reactivated, it is to be rotated too.
    // Now each waits for the other to be deleted, which neither ever will be.
    let now = t0();
    let deactivated = now + Duration::hours(1);
    let reactivated = now + Duration::hours(2);
    let given = Given::new()
        .at(now, enrolled(k(1), Path::Rotate, now - days(120)))
        .at(now, enrolled(k(2), Path::RetireUnused, now - days(100)))
        .at(
            deactivated,
            RotationEvent::KeyDeactivated {
                key: k(2),
                evidence: UseEvidence {
                    checked_at: deactivated,
                    last_used_at: None,
                },
            },
        )
        .at(
            reactivated,
            RotationEvent::RollbackRequested {
                key: k(2),
                reason: "a batch job still needs it".into(),
                requested_by: "ops".into(),
            },
        )
        .at(
            reactivated,
            RotationEvent::StepIntended {
                key: k(2),
                step: Step::Reactivate,
                attempt: 1,
                target: None,
            },
        )
        .at(reactivated, RotationEvent::KeyReactivated { key: k(2) });
    assert_eq!(
        (
            given.state().keys[&k(2)].path,
            given.state().keys[&k(2)].phase
        ),
        (Some(Path::Rotate), Phase::Pending)
    );
    let later = reactivated + Duration::minutes(1);
    let keys = [
        active(k(1), 120, Some(0), later),
        active(k(2), 100, Some(0), later),
    ];
    let blocked = |decision: Decision, blocked: AccessKeyId, other: AccessKeyId| match decision {
        Decision::Act {
            key,
            action:
                Action::Record(RotationEvent::KeyBlocked {
                    key: event_key,
                    reason,
                    ..
                }),
        } => {
            assert_eq!((&key, &event_key), (&blocked, &blocked));
            assert!(reason.contains(other.as_str()), "{reason}");
            assert!(reason.contains("a human must choose"), "{reason}");
        }
        other => panic!("expected {blocked} blocked, got {other:?}"),
    };
    // Before the rollback the rotation simply waits for the retirement to free the slot.
    let retiring = Given(given.0[..2].to_vec());
    assert_eq!(
        retiring.decide(&keys, None, later),
        Decision::CheckLastUse { key: k(2) }
    );
    // The key that sorts first is blocked first, then the other, for the same reason.
    blocked(given.decide(&keys, None, later), k(1), k(2));
    let first = given.at(
        later,
        RotationEvent::KeyBlocked {
            key: k(1),
            reason: "each waits for the other".into(),
            evidence: None,
        },
    );
    blocked(first.decide(&keys, None, later), k(2), k(1));
    let both = first.at(
        later,
        RotationEvent::KeyBlocked {
            key: k(2),
            reason: "each waits for the other".into(),
            evidence: None,
        },
    );
    assert_eq!(both.decide(&keys, None, later), Decision::Idle);
}

/// k(1) is rotated; the create intent of `attempt` is open since `at`.
fn create_intended(at: DateTime<Utc>, attempt: u32) -> Given {
    (1..=attempt).fold(
        Given::new().at(at, enrolled(k(1), Path::Rotate, at - days(120))),
        |given, n| {
            let given = given.at(
                at,
                RotationEvent::StepIntended {
                    key: k(1),
                    step: Step::CreateReplacement,
                    attempt: n,
                    target: None,
                },
            );
            if n < attempt {
                failed_with(given, Step::CreateReplacement, n, "ServiceFailure", at)
            } else {
                given
            }
        },
    )
}

fn failed_with(given: Given, step: Step, attempt: u32, code: &str, at: DateTime<Utc>) -> Given {
    given.at(
        at,
        RotationEvent::StepFailed {
            key: k(1),
            step,
            attempt,
            code: code.into(),
            message: "x".into(),
        },
    )
}

fn recorded(decision: &Decision) -> Option<&'static str> {
    match decision {
        Decision::Act {
            action: Action::Record(event),
            ..
        } => Some(event.event_type()),
        _ => None,
    }
}

#[test]
fn the_fifth_failure_never_leaves_a_created_key_behind() {
    let now = t0();
    let later = now + Duration::minutes(1);
    let old = active(k(1), 120, Some(1), later);

    // A replacement created, its delivery failing five times: its secret may be lost.
    let created = (1..=5).fold(
        Given::new()
            .at(now, enrolled(k(1), Path::Rotate, now - days(120)))
            .at(
                now,
                RotationEvent::StepIntended {
                    key: k(1),
                    step: Step::CreateReplacement,
                    attempt: 1,
                    target: None,
                },
            )
            .at(
                now,
                RotationEvent::ReplacementCreated {
                    key: k(1),
                    new_key: k(2),
                    created_at: now,
                },
            ),
        |g, n| failed_with(g, Step::DeliverSecret, n, "InternalServiceError", now),
    );
    let keys = [old.clone(), active(k(2), 0, None, now)];
    assert_eq!(
        created.decide(&keys, None, later),
        Decision::Act {
            key: k(1),
            action: Action::RecoverDelivery {
                new_key: k(2),
                attempt: 1
            }
        },
        "the replacement is reconciled before the key fails"
    );
    assert!(
        matches!(
            created.decide(&keys, None, now + Duration::seconds(1)),
            Decision::Wait { .. }
        ),
        "the backoff still applies to the reconciliation"
    );

    // Deleting an orphan failing five times: it is still deleted, then the key fails.
    let deleting = (1..=5).fold(
        create_intended(now, 1).at(
            now,
            RotationEvent::StepIntended {
                key: k(1),
                step: Step::DeleteOrphan,
                attempt: 1,
                target: Some(k(9)),
            },
        ),
        |g, n| failed_with(g, Step::DeleteOrphan, n, "ServiceFailure", now),
    );
    let orphaned = [old.clone(), active(k(9), 0, None, now)];
    assert_eq!(
        deleting.decide(&orphaned, None, later),
        Decision::Act {
            key: k(1),
            action: Action::DeleteOrphan { orphan: k(9) }
        }
    );
    let cleaned = deleting.at(
        later,
        RotationEvent::OrphanDeleted {
            key: k(1),
            orphan: k(9),
        },
    );
    assert_eq!(
        recorded(&cleaned.decide(std::slice::from_ref(&old), None, later)),
        Some("key-failed"),
        "the failures that led to the orphan still count"
    );

    // Five creates that failed, the last of which may have created a key anyway.
    let creating = failed_with(
        create_intended(now, 5),
        Step::CreateReplacement,
        5,
        "ServiceFailure",
        now,
    );
    assert_eq!(creating.state().keys[&k(1)].failures, 5);
    let maybe = [
        old.clone(),
        active(k(9), 0, None, now + Duration::seconds(1)),
    ];
    let never_used = fresh(&k(9), None, later);
    assert_eq!(
        creating.decide(&maybe, Some(&never_used), later),
        Decision::Act {
            key: k(1),
            action: Action::DeleteOrphan { orphan: k(9) }
        }
    );
    assert_eq!(
        recorded(&creating.decide(&[old], None, later)),
        Some("key-failed"),
        "nothing was created: the key fails"
    );
}

#[test]
fn an_old_key_that_vanished_never_leaves_a_created_key_behind() {
    let now = t0();
    let later = now + Duration::minutes(1);
    let given = create_intended(now, 1);
    // The old key was deleted by hand while CreateAccessKey was in flight.
    let orphan_only = [active(k(9), 0, None, now + Duration::seconds(1))];
    let never_used = fresh(&k(9), None, later);
    assert_eq!(
        given.decide(&orphan_only, Some(&never_used), later),
        Decision::Act {
            key: k(1),
            action: Action::DeleteOrphan { orphan: k(9) }
        }
    );
    let cleaned = given
        .at(
            later,
            RotationEvent::StepIntended {
                key: k(1),
                step: Step::DeleteOrphan,
                attempt: 1,
                target: Some(k(9)),
            },
        )
        .at(
            later,
            RotationEvent::OrphanDeleted {
                key: k(1),
                orphan: k(9),
            },
        );
    assert_eq!(
        recorded(&cleaned.decide(&[], None, later)),
        Some("key-vanished")
    );
}

#[test]
fn an_old_key_made_inactive_outside_keyturn_never_leaves_a_created_key_behind() {
    let now = t0();
    let later = now + Duration::minutes(1);
    let given = create_intended(now, 1);
    let keys = [
        inactive(k(1), 120, Some(1), later),
        active(k(9), 0, None, now + Duration::seconds(1)),
    ];
    let never_used = fresh(&k(9), None, later);
    assert_eq!(
        given.decide(&keys, Some(&never_used), later),
        Decision::Act {
            key: k(1),
            action: Action::DeleteOrphan { orphan: k(9) }
        }
    );
    let cleaned = given
        .at(
            later,
            RotationEvent::StepIntended {
                key: k(1),
                step: Step::DeleteOrphan,
                attempt: 1,
                target: Some(k(9)),
            },
        )
        .at(
            later,
            RotationEvent::OrphanDeleted {
                key: k(1),
                orphan: k(9),
            },
        );
    assert_eq!(
        recorded(&cleaned.decide(&keys[..1], None, later)),
        Some("key-released")
    );
}

// ---- decide: what an open create intent may have left ------------------------------------

/// k(9), never used as far as listed, created at `created`.
fn unknown_key(created: DateTime<Utc>, now: DateTime<Utc>) -> ObservedKey {
    ObservedKey {
        created_at: created,
        ..active(k(9), 0, None, now)
    }
}

fn blocked_for(decision: &Decision, words: &[&str]) {
    match decision {
        Decision::Act {
            key,
            action: Action::Record(RotationEvent::KeyBlocked { reason, .. }),
        } => {
            assert_eq!(key, &k(1));
            for word in words {
                assert!(reason.contains(word), "{word:?} not in {reason:?}");
            }
        }
        other => panic!("expected k(1) blocked ({words:?}), got {other:?}"),
    }
}

#[test]
fn a_create_that_iam_refused_created_nothing_and_leaves_later_keys_alone() {
    let now = t0();
    let answered = now + Duration::seconds(1);
    let refused = failed_with(
        create_intended(now, 1),
        Step::CreateReplacement,
        1,
        "LimitExceeded",
        answered,
    );
    let state = refused.state();
    let ks = &state.keys[&k(1)];
    assert_eq!(
        ks.open_intent, None,
        "IAM's answer proves nothing was created"
    );
    assert_eq!(
        (ks.failures, ks.last_failure_code.as_deref()),
        (1, Some("LimitExceeded")),
        "the failure still counts"
    );
    let later = now + Duration::seconds(30);
    let someone_elses = unknown_key(now + Duration::seconds(5), later);
    assert!(!is_unrecorded_replacement(&state, &someone_elses));
    let keys = [active(k(1), 120, Some(1), later), someone_elses.clone()];
    blocked_for(
        &refused.decide(&keys, Some(&fresh(&k(9), None, later)), later),
        &["second key", k(9).as_str()],
    );
    assert!(
        matches!(
            refused.decide(&keys[..1], None, answered + Duration::seconds(1)),
            Decision::Wait { .. }
        ),
        "the backoff still applies"
    );
    assert_eq!(
        refused.decide(&keys[..1], None, later),
        Decision::Act {
            key: k(1),
            action: Action::CreateReplacement { attempt: 2 }
        }
    );

    for code in [
        "LimitExceeded",
        "AccessDenied",
        "AccessDeniedException",
        "ValidationError",
        "InvalidInput",
        "NoSuchEntity",
        "Throttling",
        "ThrottlingException",
        "EntityTemporarilyUnmodifiable",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
    ] {
        assert!(decide::create_refused(code), "{code}");
    }
    // A failure that may have taken effect leaves the intent open.
    for code in [
        "ServiceFailure",
        "InternalFailure",
        "ServiceUnavailable",
        "RequestTimeout",
        "TimeoutError",
        "DispatchFailure",
    ] {
        let maybe = failed_with(
            create_intended(now, 1),
            Step::CreateReplacement,
            1,
            code,
            answered,
        );
        assert!(!decide::create_refused(code), "{code}");
        assert!(maybe.state().keys[&k(1)].open_intent.is_some(), "{code}");
        assert!(
            is_unrecorded_replacement(&maybe.state(), &someone_elses),
            "{code}"
        );
    }
}

#[test]
fn only_a_key_created_while_the_create_call_was_in_flight_is_its_orphan() {
    let now = t0();
    let later = now + Duration::minutes(30);
    let never_used = fresh(&k(9), None, later);
    let old = active(k(1), 120, Some(1), later);
    let skew = Duration::seconds(120);

    // No answer recorded (the run died): the call lasted at most CREATE_CALL_BOUND.
    let open = create_intended(now, 1);
    let bound = now + Duration::seconds(60);
    for (created, ours) in [
        (now - skew - Duration::seconds(1), false),
        (now - skew, true),
        (now + Duration::seconds(30), true),
        (bound + skew, true),
        (bound + skew + Duration::seconds(1), false),
        (now + Duration::minutes(20), false),
    ] {
        let candidate = unknown_key(created, later);
        assert_eq!(
            is_unrecorded_replacement(&open.state(), &candidate),
            ours,
            "created at {created}"
        );
        let decision = open.decide(&[old.clone(), candidate], Some(&never_used), later);
        if ours {
            assert_eq!(
                decision,
                Decision::Act {
                    key: k(1),
                    action: Action::DeleteOrphan { orphan: k(9) }
                },
                "created at {created}"
            );
        } else {
            // Not an orphan: a second key this campaign does not remove.
            blocked_for(&decision, &["second key", k(9).as_str()]);
        }
    }

    // A key created outside the window is enrolled as usual; inside, it never is.
    let enrolled_keys = |created: DateTime<Utc>| {
        let keys = [
            old.clone(),
            ObservedKey {
                status: KeyStatus::Inactive,
                ..unknown_key(created, later)
            },
        ];
        let plans = classify(&keys, None, None, &rules(), later);
        enroll(&open.state(), &keys, &plans, None)
    };
    assert!(
        matches!(
            &enrolled_keys(now + Duration::minutes(20))[..],
            [RotationEvent::KeyEnrolled {
                path: Path::DeleteInactive,
                ..
            }]
        ),
        "created long after the call"
    );
    assert_eq!(enrolled_keys(now + Duration::seconds(30)), []);

    // A failure answered the call after 10 s: the window closes CLOCK_SKEW after it.
    let answered = now + Duration::seconds(10);
    let timed_out = failed_with(
        create_intended(now, 1),
        Step::CreateReplacement,
        1,
        "RequestTimeout",
        answered,
    );
    assert_eq!(
        timed_out.state().keys[&k(1)]
            .open_intent
            .as_ref()
            .and_then(|i| i.answered_at),
        Some(answered)
    );
    let inside = unknown_key(answered + skew, later);
    let outside = unknown_key(answered + skew + Duration::seconds(1), later);
    assert!(is_unrecorded_replacement(&timed_out.state(), &inside));
    assert!(
        !is_unrecorded_replacement(&timed_out.state(), &outside),
        "created after the call was answered"
    );
    blocked_for(
        &timed_out.decide(&[old, outside], Some(&never_used), later),
        &["second key"],
    );
}

#[test]
fn an_orphan_candidate_is_deleted_only_if_fresh_evidence_shows_it_never_used() {
    let now = t0();
    let later = now + Duration::minutes(1);
    let given = create_intended(now, 1);
    let candidate = unknown_key(now + Duration::seconds(1), later);
    let keys = [active(k(1), 120, Some(1), later), candidate.clone()];

    assert_eq!(
        given.decide(&keys, None, later),
        Decision::CheckLastUse { key: k(9) },
        "the candidate's own last use is asked first"
    );
    assert_eq!(
        given.decide(&keys, Some(&fresh(&k(1), None, later)), later),
        Decision::CheckLastUse { key: k(9) },
        "evidence about another key says nothing of the candidate"
    );
    assert_eq!(
        given.decide(&keys, Some(&fresh(&k(9), None, later)), later),
        Decision::Act {
            key: k(1),
            action: Action::DeleteOrphan { orphan: k(9) }
        }
    );

    // Used: someone else's key, created while CreateAccessKey was in flight.
    let used = fresh(&k(9), Some(now + Duration::seconds(40)), later);
    let decision = given.decide(&keys, Some(&used), later);
    blocked_for(
        &decision,
        &[
            "unknown key",
            k(9).as_str(),
            "was used",
            "not deleting it",
            "a human must decide",
        ],
    );
    // Listed as used already: no need to ask.
    let listed_used = [
        keys[0].clone(),
        ObservedKey {
            last_used_at: Some(now + Duration::seconds(40)),
            ..candidate.clone()
        },
    ];
    blocked_for(
        &given.decide(&listed_used, None, later),
        &["unknown key", "was used"],
    );
    // The key this run is signed with is never deleted, used or not.
    blocked_for(
        &given.decide_as(&k(9), &keys, Some(&fresh(&k(9), None, later)), later),
        &[
            "unknown key",
            k(9).as_str(),
            "signs this run",
            "a human must decide",
        ],
    );

    // Keyturn's own recorded keys keep their handling: an intended orphan deletion
    // and a created replacement whose delivery is not found need no last-use check.
    let deleting = given.at(
        later,
        RotationEvent::StepIntended {
            key: k(1),
            step: Step::DeleteOrphan,
            attempt: 1,
            target: Some(k(9)),
        },
    );
    assert_eq!(
        deleting.decide(&keys, None, later),
        Decision::Act {
            key: k(1),
            action: Action::DeleteOrphan { orphan: k(9) }
        }
    );
}

#[test]
fn no_duration_overflows_a_decision_a_check_or_a_notification() {
    // The policy refuses such durations; the model must not panic on them all the same.
    let forever = Rotation {
        max_key_age: std::time::Duration::MAX,
        unused_after: std::time::Duration::MAX,
        quiet_period: std::time::Duration::MAX,
        adoption_timeout: std::time::Duration::MAX,
        observation_period: std::time::Duration::MAX,
        ..rules()
    };
    let mut notify = crate::policy::Policy::from_toml(
        "p.toml",
        "[notify]\nsns_topic_arn = \"arn:aws:sns:us-east-1:123456789012:t\"\n",
    )
    .unwrap()
    .notify
    .unwrap();
    notify.warn_before_adoption_timeout = std::time::Duration::MAX;

    let verified = t0();
    let now = verified + days(1);
    let deactivated = |given: Given| {
        given.at(
            verified,
            RotationEvent::KeyDeactivated {
                key: k(1),
                evidence: UseEvidence {
                    checked_at: verified,
                    last_used_at: None,
                },
            },
        )
    };
    let failing = (1..=40).fold(
        Given::new().at(verified, enrolled(k(1), Path::Rotate, verified - days(120))),
        |g, n| failed_with(g, Step::CreateReplacement, n, "ServiceFailure", verified),
    );
    let cases = [
        rotation_verified(verified),
        deactivated(rotation_verified(verified)),
        Given::new().at(verified, enrolled(k(1), Path::DeleteInactive, verified)),
        deactivated(Given::new().at(verified, enrolled(k(1), Path::RetireUnused, verified))),
        failing,
    ];
    let observed = [
        active(k(1), 120, Some(0), now),
        active(k(2), 1, Some(0), now),
    ];
    let inactive_now = [
        inactive(k(1), 120, Some(0), now),
        active(k(2), 1, Some(0), now),
    ];
    let _ = classify(&observed, None, None, &forever, now);
    for given in cases {
        let state = given.state();
        for keys in [&observed[..], &inactive_now[..]] {
            for fresh_use in [None, Some(fresh(&k(1), Some(verified), now))] {
                let _ = decide(&state, keys, fresh_use.as_ref(), None, &forever, now);
            }
        }
        for ks in state.keys.values() {
            let _ = ks.next_check_at(&forever);
        }
        let _ = due_notifications(&state, &notify, &forever, now);
        let _ = notify::adoption_deadline(&state.keys[&k(1)], &forever);
    }
}
