//! The simulator's own guarantees: a seed replays exactly, its invariants bite on a
//! deliberately wrong change, and they never blame keyturn for what a person did.

use chrono::{Duration, TimeZone, Utc};
use keyturn_planner::inventory::KeyStatus;
use keyturn_planner::{AccountId, UserName};
use keyturn_sim::world::{App, Origin, Rules, Switching, World};

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
fn deleting_an_active_key_breaks_an_invariant() {
    let (mut world, account, user) = world();
    let created = world.now - Duration::days(200);
    let key = world
        .create_key(&account, &user, Origin::Initial, created, KeyStatus::Active)
        .unwrap();
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
    world.delete_key("w1", &account, &user, &key.id).unwrap();
    assert_eq!(world.violations.len(), 1, "{:?}", world.violations);
    assert!(world.violations[0].contains("billing"));
}
