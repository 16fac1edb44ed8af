//! The simulator's own guarantees: a seed replays exactly, its invariants bite on a
//! deliberately wrong change, and they never blame keyturn for what a person did.

use chrono::{Duration, TimeZone, Utc};
use keyturn_journal::{Actor, NewEvent, SchemaVersion, StreamId};
use keyturn_planner::inventory::KeyStatus;
use keyturn_planner::{AccessKeyId, AccountId, UserName};
use keyturn_sim::world::{App, Origin, Rules, Switching, World};
use serde_json::json;

fn world() -> (World, AccountId, UserName) {
    let now = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let mut world = World::new(
        now,
        Rules {
            observation_period: Duration::days(7),
            unused_after: Duration::days(45),
            skew: Duration::seconds(2),
        },
    );
    let account = AccountId::new("100000000000").unwrap();
    let user = UserName::new("alice").unwrap();
    world.accounts.insert(account.clone(), Default::default());
    world
        .accounts
        .get_mut(&account)
        .unwrap()
        .users
        .insert(user.clone(), Default::default());
    (world, account, user)
}

/// A committed event of `run` on `stream`, as the simulator's journal watch sees it.
fn committed(
    world: &mut World,
    stream: &str,
    run: &str,
    kind: &str,
    user: Option<&UserName>,
    payload: serde_json::Value,
) {
    let event = NewEvent {
        event_type: kind.to_owned(),
        schema_version: SchemaVersion::new(1, 0),
        payload,
        account_id: Some("100000000000".to_owned()),
        user_name: user.map(|u| u.to_string()),
        access_key_ids: Vec::new(),
        actor: Actor {
            caller_arn: "arn:aws:iam::123456789012:user/sim".to_owned(),
            run_id: run.to_owned(),
            host: "sim".to_owned(),
        },
    };
    world
        .ledger
        .record(&StreamId::new("sim", stream).unwrap(), &event);
}

/// `run` holds the account's claim for `ttl` from now.
fn claim(world: &mut World, run: &str, ttl: Duration) {
    let expires_at = world.now + ttl;
    committed(
        world,
        "account/100000000000",
        run,
        "claim-taken",
        None,
        json!({ "run_id": run, "expires_at": expires_at }),
    );
}

/// `run` records its intent to `step` the user's `key`.
fn intend(world: &mut World, run: &str, user: &UserName, step: &str, key: &AccessKeyId) {
    committed(
        world,
        &format!("user/100000000000/{user}"),
        run,
        "step-intended",
        Some(user),
        json!({ "key": key, "step": step, "attempt": 1, "target": null }),
    );
}

/// `run`'s call leaves now, with the journal as it is.
fn send(world: &mut World, run: &str) {
    world.sent_ledger = world.ledger.clone();
    world.call_run = run.to_owned();
    world.call_sent_at = world.now;
}

#[test]
fn a_seed_replays_exactly() {
    let first = keyturn_sim::run_seed(11);
    let again = keyturn_sim::run_seed(11);
    assert!(
        first.trace.len() > 10,
        "a seed does something: {:?}",
        first.trace
    );
    assert_eq!(first.trace, again.trace);
    assert_eq!(first.violations, again.violations);
}

#[test]
fn a_seed_on_the_sqlite_journal_replays_exactly() {
    // 13656 runs on SQLite: its calls once went to tokio's blocking pool, and the paused
    // clock jumped ahead while SQLite worked, so two replays could differ (and did, about
    // one in three).
    let first = keyturn_sim::run_seed(13656);
    assert!(
        first
            .trace
            .iter()
            .any(|line| line.contains("sqlite journal true")),
        "{:?}",
        first.trace.iter().find(|line| line.contains("journal"))
    );
    for _ in 0..3 {
        let again = keyturn_sim::run_seed(13656);
        assert_eq!(first.trace, again.trace);
    }
}

#[test]
fn deleting_an_active_key_breaks_an_invariant() {
    let (mut world, account, user) = world();
    let created = world.now - Duration::days(200);
    let key = world
        .create_key(&account, &user, Origin::Initial, created, KeyStatus::Active)
        .unwrap();
    claim(&mut world, "w1.1", Duration::minutes(2));
    intend(&mut world, "w1.1", &user, "delete", &key.id);
    send(&mut world, "w1.1");
    world.delete_key("w1", &account, &user, &key.id).unwrap();
    assert_eq!(world.violations.len(), 1, "{:?}", world.violations);
    assert!(world.violations[0].contains("an Active key"));
}

#[test]
fn deleting_a_key_someone_else_just_made_inactive_breaks_an_invariant() {
    let (mut world, account, user) = world();
    let key = world
        .create_key(
            &account,
            &user,
            Origin::Person,
            world.now,
            KeyStatus::Active,
        )
        .unwrap();
    world
        .set_status("person", &account, &user, &key.id, KeyStatus::Inactive)
        .unwrap();
    world.now += Duration::days(3);
    claim(&mut world, "w2.1", Duration::minutes(2));
    intend(&mut world, "w2.1", &user, "delete", &key.id);
    send(&mut world, "w2.1");
    world.delete_key("w2", &account, &user, &key.id).unwrap();
    assert_eq!(world.violations.len(), 1, "{:?}", world.violations);
}

#[test]
fn keyturn_taking_an_applications_last_key_breaks_an_invariant_a_person_doing_it_does_not() {
    let (mut world, account, user) = world();
    let created = world.now - Duration::days(120);
    let key = world
        .create_key(&account, &user, Origin::Initial, created, KeyStatus::Active)
        .unwrap();
    world.apps.push(App {
        name: "billing".into(),
        account: account.clone(),
        user: user.clone(),
        held: key.id.clone(),
        known: vec![key.id.clone()],
        refused: false,
        period: Duration::hours(1),
        switching: Switching::Never,
    });
    // keyturn deactivating it: the application still holds a key keyturn can bring back.
    world.now += Duration::days(4);
    claim(&mut world, "w1.1", Duration::minutes(2));
    intend(&mut world, "w1.1", &user, "deactivate", &key.id);
    send(&mut world, "w1.1");
    world
        .set_status("w1", &account, &user, &key.id, KeyStatus::Inactive)
        .unwrap();
    assert!(world.violations.is_empty(), "{:?}", world.violations);
    // A person deleting it is the person's doing.
    let mut by_person = world.accounts.clone();
    std::mem::swap(&mut world.accounts, &mut by_person);
    world
        .delete_key("person", &account, &user, &key.id)
        .unwrap();
    assert!(world.violations.is_empty(), "{:?}", world.violations);
    // keyturn deleting it (observed long enough) leaves the application with nothing.
    std::mem::swap(&mut world.accounts, &mut by_person);
    world.now += Duration::days(8);
    claim(&mut world, "w1.2", Duration::minutes(2));
    intend(&mut world, "w1.2", &user, "delete", &key.id);
    send(&mut world, "w1.2");
    world.delete_key("w1", &account, &user, &key.id).unwrap();
    assert_eq!(world.violations.len(), 1, "{:?}", world.violations);
    assert!(world.violations[0].contains("billing"));
}

/// An old, long-unused Active key of the user's.
fn old_key(world: &mut World, account: &AccountId, user: &UserName) -> AccessKeyId {
    let created = world.now - Duration::days(200);
    let key = world
        .create_key(account, user, Origin::Initial, created, KeyStatus::Active)
        .unwrap();
    world.key_mut(account, user, &key.id).unwrap().last_used = Some(created);
    key.id
}

/// The key, made Inactive by keyturn at `since`.
fn deactivated_by_keyturn(
    world: &mut World,
    account: &AccountId,
    user: &UserName,
    key: &AccessKeyId,
    since: chrono::DateTime<Utc>,
) {
    let k = world.key_mut(account, user, key).unwrap();
    k.status = KeyStatus::Inactive;
    k.deactivated_by_keyturn = true;
    k.inactive_since = Some(since);
}

#[test]
fn a_mutation_takes_effect_once_under_its_intent_from_the_claims_holder() {
    let (mut world, account, user) = world();
    let key = old_key(&mut world, &account, &user);
    claim(&mut world, "w1.1", Duration::minutes(2));
    intend(&mut world, "w1.1", &user, "deactivate", &key);
    send(&mut world, "w1.1");
    world
        .set_status("w1", &account, &user, &key, KeyStatus::Inactive)
        .unwrap();
    assert!(world.violations.is_empty(), "{:?}", world.violations);

    // A person undoes it; the same intent cannot carry a second deactivation.
    world
        .set_status("person", &account, &user, &key, KeyStatus::Active)
        .unwrap();
    world.now += Duration::seconds(5);
    send(&mut world, "w1.1");
    world
        .set_status("w1", &account, &user, &key, KeyStatus::Inactive)
        .unwrap();
    assert_eq!(world.violations.len(), 1, "{:?}", world.violations);
    assert!(world.violations[0].contains("a second mutation"));
}

#[test]
fn a_mutation_sent_without_the_claim_breaks_an_invariant() {
    let (mut world, account, user) = world();
    let key = old_key(&mut world, &account, &user);
    // w1 stalled past its lease; w2 took the account over and intends the same step.
    claim(&mut world, "w1.1", Duration::minutes(2));
    intend(&mut world, "w1.1", &user, "delete", &key);
    world.now += Duration::minutes(5);
    claim(&mut world, "w2.1", Duration::minutes(2));
    let since = world.now - Duration::days(8);
    deactivated_by_keyturn(&mut world, &account, &user, &key, since);
    send(&mut world, "w1.1");
    world.delete_key("w1", &account, &user, &key).unwrap();
    assert_eq!(world.violations.len(), 1, "{:?}", world.violations);
    assert!(
        world.violations[0].contains("without holding the claim"),
        "{:?}",
        world.violations
    );

    // An expired claim nobody took over is not held either.
    let (mut world, account, user) = self::world();
    let key = old_key(&mut world, &account, &user);
    claim(&mut world, "w1.1", Duration::minutes(2));
    intend(&mut world, "w1.1", &user, "deactivate", &key);
    world.now += Duration::minutes(3);
    send(&mut world, "w1.1");
    world
        .set_status("w1", &account, &user, &key, KeyStatus::Inactive)
        .unwrap();
    assert_eq!(world.violations.len(), 1, "{:?}", world.violations);
    assert!(world.violations[0].contains("without holding the claim"));
}

#[test]
fn a_mutation_of_another_kind_or_key_than_the_intent_breaks_an_invariant() {
    let (mut world, account, user) = world();
    let key = old_key(&mut world, &account, &user);
    claim(&mut world, "w1.1", Duration::minutes(2));
    // No intent at all.
    send(&mut world, "w1.1");
    world
        .set_status("w1", &account, &user, &key, KeyStatus::Inactive)
        .unwrap();
    assert_eq!(world.violations.len(), 1, "{:?}", world.violations);
    assert!(world.violations[0].contains("with no open intent"));
    // An intent to deactivate, and a deletion.
    intend(&mut world, "w1.1", &user, "deactivate", &key);
    send(&mut world, "w1.1");
    world.now += Duration::days(10);
    world.delete_key("w1", &account, &user, &key).unwrap();
    assert_eq!(world.violations.len(), 2, "{:?}", world.violations);
    assert!(
        world.violations[1].contains("with no open intent of its kind"),
        "{:?}",
        world.violations
    );
}

#[test]
fn a_worker_may_finish_the_reactivation_a_rollback_intended() {
    let (mut world, account, user) = world();
    let key = old_key(&mut world, &account, &user);
    let since = world.now;
    deactivated_by_keyturn(&mut world, &account, &user, &key, since);
    claim(&mut world, "rollback", Duration::minutes(5));
    intend(&mut world, "rollback", &user, "reactivate", &key);
    committed(
        &mut world,
        "account/100000000000",
        "rollback",
        "claim-released",
        None,
        json!({ "run_id": "rollback" }),
    );
    claim(&mut world, "w2.3", Duration::minutes(2));
    send(&mut world, "w2.3");
    world
        .set_status("w2", &account, &user, &key, KeyStatus::Active)
        .unwrap();
    assert!(world.violations.is_empty(), "{:?}", world.violations);
}

#[test]
fn deactivating_a_key_used_within_hours_breaks_an_invariant() {
    let (mut world, account, user) = world();
    let key = old_key(&mut world, &account, &user);
    world.key_mut(&account, &user, &key).unwrap().last_used = Some(world.now - Duration::hours(3));
    claim(&mut world, "w1.1", Duration::minutes(2));
    intend(&mut world, "w1.1", &user, "deactivate", &key);
    send(&mut world, "w1.1");
    world
        .set_status("w1", &account, &user, &key, KeyStatus::Inactive)
        .unwrap();
    assert_eq!(world.violations.len(), 1, "{:?}", world.violations);
    assert!(world.violations[0].contains("used 180 minutes before"));
}

#[test]
fn a_secret_in_a_log_line_or_a_span_breaks_an_invariant() {
    let leaks = keyturn_sim::logs::Leaks::default();
    tracing::subscriber::with_default(leaks.subscriber(), || {
        tracing::trace!(key = "AKIASIM0000000000001", "a clean line");
        let span = tracing::debug_span!("step", secret = tracing::field::Empty);
        span.record("secret", "simsecret00000001xxxx");
        tracing::info!(value = ?("simsecret00000002",), "a leak");
    });
    let found = leaks.found();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|f| !f.contains("simsecret")), "{found:?}");
    assert!(found[0].contains("field secret"), "{found:?}");
}

#[test]
fn a_policy_keyturn_must_refuse_is_refused_in_the_seeds_that_try_one() {
    let seed = (1..)
        .find(|s| keyturn_sim::bad_policy(*s).is_some())
        .unwrap();
    let outcome = keyturn_sim::run_seed(seed);
    assert!(
        outcome
            .trace
            .iter()
            .any(|line| line.contains("a policy keyturn must refuse is refused")),
        "seed {seed}: {:?}",
        &outcome.trace[..3]
    );
    assert!(outcome.violations.is_empty(), "{:?}", outcome.violations);
}
