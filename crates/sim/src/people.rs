//! The people and pipelines who act on keys while a campaign runs: at random, and on
//! purpose right after a run died mid-rotation.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use keyturn_planner::inventory::KeyStatus;
use keyturn_planner::{AccessKeyId, AccountId, UserName};

use crate::aws::Shared;
use crate::rng::Rng;
use crate::world::{Origin, World};

/// People and pipelines: at random moments, reactivate, deactivate, delete or create
/// a key of a random user.
pub(crate) async fn person(shared: Arc<Shared>, calm: Arc<std::sync::atomic::AtomicBool>) {
    loop {
        let wait = shared.rng().range(3_600, 4 * 86_400);
        tokio::time::sleep(StdDuration::from_secs(wait)).await;
        if calm.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        person_acts(&mut shared.world(), &mut shared.rng());
    }
}

/// One act of a person or a pipeline on a random user: reactivate an Inactive key,
/// deactivate or delete a key, or create one.
fn person_acts(world: &mut World, rng: &mut Rng) {
    let users: Vec<(AccountId, UserName)> = world
        .accounts
        .iter()
        .flat_map(|(a, acct)| acct.users.keys().map(move |u| (a.clone(), u.clone())))
        .collect();
    let (account, user) = rng.pick(&users).clone();
    let keys: Vec<_> = world.accounts[&account].users[&user]
        .keys
        .iter()
        .map(|k| (k.id.clone(), k.status))
        .collect();
    let now = world.now;
    match rng.range(0, 3) {
        0 => {
            if let Some((key, _)) = keys.iter().find(|(_, s)| *s == KeyStatus::Inactive) {
                let _ = world.set_status("person", &account, &user, key, KeyStatus::Active);
            }
        }
        1 => {
            if !keys.is_empty() {
                let (key, _) = rng.pick(&keys).clone();
                let _ = world.set_status("person", &account, &user, &key, KeyStatus::Inactive);
            }
        }
        2 => {
            if !keys.is_empty() && rng.chance(0.5) {
                let (key, _) = rng.pick(&keys).clone();
                let _ = world.delete_key("person", &account, &user, &key);
            }
        }
        _ => {
            if let Ok(key) =
                world.create_key(&account, &user, Origin::Person, now, KeyStatus::Active)
            {
                world.touched(&account, &user);
                world.note("person", format!("{user}: created {}", key.id));
            }
        }
    }
}

/// A person who finds a user with a key keyturn created and has not delivered (a run
/// died between the two) and makes the user's old key Inactive or deletes it: the
/// interleaving in which a rotation's end (released, vanished) could be recorded before
/// the undelivered replacement is cleaned up.
fn person_retires_an_old_key(world: &mut World, rng: &mut Rng) {
    let users: Vec<(AccountId, UserName, AccessKeyId)> = world
        .accounts
        .iter()
        .flat_map(|(a, acct)| {
            acct.users.iter().filter_map(move |(u, keys)| {
                let undelivered = keys
                    .keys
                    .iter()
                    .any(|k| k.origin == Origin::Keyturn && !k.delivered);
                let old = keys.keys.iter().find(|k| k.origin != Origin::Keyturn)?;
                undelivered.then(|| (a.clone(), u.clone(), old.id.clone()))
            })
        })
        .collect();
    if users.is_empty() {
        return;
    }
    let (account, user, old) = rng.pick(&users).clone();
    if rng.chance(0.5) {
        let _ = world.set_status("person", &account, &user, &old, KeyStatus::Inactive);
    } else {
        let _ = world.delete_key("person", &account, &user, &old);
    }
}

/// In 30 % of the runs, a person who acts while the run is under way: between its
/// listing of the account and its mutations (what a fresh read before each mutation is
/// for).
pub(crate) fn during_a_run(shared: &Arc<Shared>) {
    if shared.rng().chance(0.3) {
        let shared = shared.clone();
        let delay = StdDuration::from_millis(shared.rng().range(20, 4_000));
        tokio::task::spawn_local(async move {
            tokio::time::sleep(delay).await;
            person_acts(&mut shared.world(), &mut shared.rng());
        });
    }
}

/// In half of the crashes, the person who looks at a user the dead run left with a new
/// key and no delivery, before the run restarts, and retires the old key by hand.
pub(crate) fn after_a_crash(shared: &Arc<Shared>, own: &mut Rng) {
    if own.chance(0.5) {
        let shared = shared.clone();
        let delay = StdDuration::from_secs(own.range(1, 600));
        let mut rng = Rng::new(own.next_u64());
        tokio::task::spawn_local(async move {
            tokio::time::sleep(delay).await;
            person_retires_an_old_key(&mut shared.world(), &mut rng);
        });
    }
}
