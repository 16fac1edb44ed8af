//! keyturn's deterministic simulator: whole campaigns, in-process, in virtual time, in
//! the spirit of FoundationDB's and TigerBeetle's simulation testing.
//!
//! One seed decides everything: the organization's shape, the applications (prompt,
//! late or never switching to the delivered key), the people who reactivate,
//! deactivate, delete and create keys at random moments, AWS's faults (slow answers,
//! throttling, server errors, work done with its answer lost), 1 to 3 workers running
//! `keyturn run --watch` with skewed clocks that crash at any await point and restart,
//! and an operator's `rollback`. The real engine (`keyturn_worker::campaign::run`) runs
//! against the simulated AWS of [`aws`] through its port, on the memory or the SQLite journal, on a
//! single-threaded tokio runtime whose paused clock jumps to the next timer: 70 virtual
//! days run in milliseconds, and a seed replays exactly.
//!
//! A seed runs in two phases. For [`CHAOS_DAYS`] every actor and fault is on (safety:
//! the invariants of [`world`] are checked at every mutation keyturn makes). Then people,
//! faults, stalls and crashes stop, and within [`CALM_DAYS`] every key must settle
//! (liveness), every key keyturn created must be delivered or deleted, and no secret may
//! be in the journal.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, TimeZone, Utc};
use keyturn_journal::{Actor, Clock, Journal, MemoryJournal, SqliteJournal};
use keyturn_planner::inventory::KeyStatus;
use keyturn_planner::{AccountId, CampaignName, Policy, UserName};
use keyturn_worker::campaign::run::{RunOptions, rollback, run};
use keyturn_worker::campaign::{load_state, start};

pub mod aws;
pub mod ledger;
pub mod logs;
mod people;
pub mod rng;
pub mod world;

use aws::{Faults, Shared, SimCloud};
use people::{after_a_crash, during_a_run, person};
use rng::Rng;
use world::{App, Origin, Rules, Switching, World};

/// Days of chaos: every actor and fault on.
pub const CHAOS_DAYS: i64 = 30;
/// Days of calm after the chaos, within which every key must settle.
pub const CALM_DAYS: i64 = 60;
/// The largest skew of a worker's clock, either way, in milliseconds.
pub const MAX_SKEW_MS: u64 = 2_000;
/// Within how many days of its enrolment a key must settle once the calm has begun.
pub const SETTLE_DAYS: i64 = 30;

/// The policy every seed runs (real gates: no `allow_short_gates`).
const POLICY: &str = r#"
[rotation]
max_key_age = "90d"
unused_after = "45d"
quiet_period = "3d"
adoption_timeout = "12d"
observation_period = "7d"
"#;

/// What a seed did.
#[derive(Debug)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// The broken invariants (empty: the seed is clean).
    pub violations: Vec<String>,
    /// What happened, line by line.
    pub trace: Vec<String>,
}

/// A worker's clock: virtual time off by its skew.
#[derive(Debug)]
struct SkewedClock {
    shared: Arc<Shared>,
    skew: Duration,
}

impl Clock for SkewedClock {
    fn now(&self) -> DateTime<Utc> {
        self.shared.now() + self.skew
    }
}

/// The journal's clock: virtual time.
#[derive(Debug)]
struct VirtualClock(Arc<Shared>);

impl Clock for VirtualClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.now()
    }
}

/// Runs one seed to its end.
pub fn run_seed(seed: u64) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    // Tasks run on one thread: `spawn_local`, so the engine's futures need not be `Send`.
    let local = tokio::task::LocalSet::new();
    // Every log line the engine writes, at every level, is formatted and searched for
    // a secret (the simulated ones all contain `simsecret`).
    let leaks = logs::Leaks::default();
    let mut outcome = tracing::subscriber::with_default(leaks.subscriber(), || {
        local.block_on(&runtime, simulate(seed))
    });
    outcome.violations.extend(leaks.found());
    outcome
}

async fn simulate(seed: u64) -> Outcome {
    let mut rng = Rng::new(seed);
    let epoch = Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap();
    let policy = Policy::from_toml("sim.toml", POLICY).expect("the simulator's policy is valid");
    let (policy, refused) = bad_policy(seed).map_or((policy.clone(), None), |bad| {
        match Policy::from_toml("bad.toml", bad) {
            Ok(accepted) => (accepted, None),
            Err(e) => (policy, Some(e.to_string())),
        }
    });
    let rules = Rules {
        observation_period: Duration::from_std(policy.rotation.observation_period).unwrap(),
        unused_after: Duration::from_std(policy.rotation.unused_after).unwrap(),
        skew: Duration::milliseconds(MAX_SKEW_MS as i64),
    };
    let mut world = World::new(epoch, rules);
    seed_organization(&mut world, &mut rng);
    let faults = if rng.chance(0.7) {
        Faults {
            throttle: 0.05,
            server: 0.03,
            lost: 0.03,
            stall: 0.02,
            stall_for: StdDuration::from_secs(300),
            max_latency_ms: 300,
        }
    } else {
        Faults {
            max_latency_ms: 50,
            ..Faults::default()
        }
    };
    let people = rng.chance(0.7);
    let workers = rng.range(1, 3) as usize;
    let with_rollback = rng.chance(0.3);
    // A second campaign in the same journal, started during the first one by someone
    // else, with a worker of its own: it must not act on the first one's keys.
    let overlap = rng.chance(0.25).then(|| rng.range(1, 15));
    // The journal: the memory backend, or SQLite in a third of the seeds (drawn apart
    // from the seed's sequence, which the rest of the seed keeps as it was).
    let sqlite = Rng::new(seed.rotate_left(17) ^ 0x5317).chance(0.33);

    let shared = Arc::new(Shared {
        world: std::sync::Mutex::new(world),
        rng: std::sync::Mutex::new(rng),
        faults: std::sync::Mutex::new(faults),
        epoch,
        start: tokio::time::Instant::now(),
    });
    shared.world().note(
        "sim",
        format!("seed {seed}: {workers} worker(s), people {people}, faults {faults:?}, rollback {with_rollback}, second campaign from day {overlap:?}, sqlite journal {sqlite}"),
    );
    if let Some(why) = refused {
        shared.world().note(
            "sim",
            format!("a policy keyturn must refuse is refused: {why}"),
        );
    }
    let clock: Arc<dyn Clock> = Arc::new(VirtualClock(shared.clone()));
    let dir = tempfile::tempdir().expect("a temporary directory for the SQLite journal");
    let journal: Arc<dyn Journal> = if sqlite {
        let path = dir.path().join("journal.db");
        SqliteJournal::init(&path)
            .await
            .expect("a SQLite journal is made");
        Arc::new(
            SqliteJournal::open_with_clock(&path, clock)
                .await
                .expect("the SQLite journal opens")
                .inline(),
        )
    } else {
        Arc::new(MemoryJournal::with_clock(clock))
    };
    let journal: Arc<dyn Journal> = Arc::new(aws::WatchedJournal {
        inner: journal,
        shared: shared.clone(),
    });
    let name = CampaignName::new("sim").unwrap();
    let operator = actor("operator");
    start(journal.as_ref(), &name, &policy, &operator)
        .await
        .expect("the campaign starts");

    let calm = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let end =
        tokio::time::Instant::now() + (Duration::days(CHAOS_DAYS + CALM_DAYS)).to_std().unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    let app_count = shared.world().apps.len();
    for app in 0..app_count {
        tasks.spawn_local(application(shared.clone(), app, end));
    }
    if people {
        tasks.spawn_local(person(shared.clone(), calm.clone()));
    }
    for w in 1..=workers {
        tasks.spawn_local(worker(
            shared.clone(),
            journal.clone(),
            name.clone(),
            w,
            Calm {
                calm: calm.clone(),
                people,
                seed,
            },
            end,
        ));
    }
    if let Some(day) = overlap {
        let (shared, journal, policy) = (shared.clone(), journal.clone(), policy.clone());
        let calm = Calm {
            calm: calm.clone(),
            people,
            seed,
        };
        tasks.spawn_local(async move {
            tokio::time::sleep(StdDuration::from_secs(day * 86_400)).await;
            let second = CampaignName::new("sim2").unwrap();
            start(journal.as_ref(), &second, &policy, &actor("operator2"))
                .await
                .expect("the second campaign starts");
            shared
                .world()
                .note("sim", "a second campaign, sim2, starts");
            worker(shared, journal, second, 9, calm, end).await;
        });
    }
    if with_rollback {
        tasks.spawn_local(rollback_operator(
            shared.clone(),
            journal.clone(),
            name.clone(),
        ));
    }
    tokio::time::sleep(Duration::days(CHAOS_DAYS).to_std().unwrap()).await;
    calm.store(true, std::sync::atomic::Ordering::SeqCst);
    *shared.faults.lock().unwrap() = Faults {
        max_latency_ms: 50,
        ..Faults::default()
    };
    shared
        .world()
        .note("sim", "calm: people, faults and crashes stop");
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined
            && e.is_panic()
        {
            let what = format!("keyturn panicked: {}", panic_message(e.into_panic()));
            let mut world = shared.world();
            world.note("CHECK", &what);
            world.violations.push(what);
        }
    }

    finish(&shared, journal.as_ref(), &name).await;
    if overlap.is_some() {
        finish(
            &shared,
            journal.as_ref(),
            &CampaignName::new("sim2").unwrap(),
        )
        .await;
    }
    let world = shared.world();
    Outcome {
        seed,
        violations: world.violations.clone(),
        trace: world.trace.clone(),
    }
}

/// A panic's message.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// The policy keyturn must refuse that the seed tries first, if it does (defect 7 of
/// issue 15): gates under a day without `allow_short_gates` in one seed of twenty, a
/// duration that overflows in another. Refused,
/// the seed runs the real policy; accepted, it runs that one, and the invariants judge
/// what it does (an application's key deactivated within hours of its use, a panic).
pub fn bad_policy(seed: u64) -> Option<&'static str> {
    // Drawn apart from the seed's sequence, which the rest of the seed keeps as it was.
    match Rng::new(seed.rotate_left(29) ^ 0xD7).range(0, 19) {
        0 => Some(
            r#"
[rotation]
max_key_age = "90d"
unused_after = "45d"
quiet_period = "1h"
adoption_timeout = "12d"
observation_period = "2h"
"#,
        ),
        1 => Some(
            r#"
[rotation]
max_key_age = "90d"
unused_after = "45d"
quiet_period = "3d"
adoption_timeout = "300000y"
observation_period = "7d"
"#,
        ),
        _ => None,
    }
}

fn actor(run: &str) -> Actor {
    Actor {
        caller_arn: "arn:aws:iam::123456789012:user/sim".to_owned(),
        run_id: run.to_owned(),
        host: "sim".to_owned(),
    }
}

/// An organization of random shape: 1–3 accounts of 1–4 users, whose keys are old and
/// in use (with 1–2 applications), old and unused, Inactive, or young.
fn seed_organization(world: &mut World, rng: &mut Rng) {
    let epoch = world.now;
    for a in 0..rng.range(1, 3) {
        let account = AccountId::new(format!("{:012}", 100_000_000_000 + a)).unwrap();
        world
            .accounts
            .insert(account.clone(), world::Account::default());
        for u in 0..rng.range(1, 4) {
            let user = UserName::new(format!("user{a}{u}")).unwrap();
            world
                .accounts
                .get_mut(&account)
                .unwrap()
                .users
                .insert(user.clone(), world::User::default());
            for _ in 0..rng.range(0, 2) {
                let kind = rng.range(0, 3);
                let age = Duration::days(rng.range(100, 400) as i64);
                let (status, created, used) = match kind {
                    0 => (
                        KeyStatus::Active,
                        epoch - age,
                        Some(epoch - Duration::hours(2)),
                    ),
                    1 => (
                        KeyStatus::Active,
                        epoch - age,
                        Some(epoch - Duration::days(60)),
                    ),
                    2 => (KeyStatus::Inactive, epoch - age, None),
                    _ => (
                        KeyStatus::Active,
                        epoch - Duration::days(rng.range(1, 30) as i64),
                        Some(epoch - Duration::hours(1)),
                    ),
                };
                let Ok(mut key) =
                    world.create_key(&account, &user, Origin::Initial, created, status)
                else {
                    continue;
                };
                key.last_used = used;
                if let Ok(k) = world.key_mut(&account, &user, &key.id) {
                    k.last_used = used;
                    if status == KeyStatus::Inactive {
                        k.inactive_since = Some(created);
                    }
                }
                if kind == 0 || kind == 3 {
                    for n in 0..rng.range(1, 2) {
                        let switching = match rng.range(0, 3) {
                            0 | 1 => Switching::Prompt,
                            2 => Switching::Late(Duration::hours(rng.range(1, 96) as i64)),
                            _ => Switching::Never,
                        };
                        let period = *rng.pick(&[
                            Duration::minutes(30),
                            Duration::hours(6),
                            Duration::days(1),
                        ]);
                        world.apps.push(App {
                            name: format!("app-{user}-{n}"),
                            account: account.clone(),
                            user: user.clone(),
                            held: key.id.clone(),
                            known: vec![key.id.clone()],
                            refused: false,
                            period,
                            switching,
                        });
                    }
                }
            }
        }
    }
    let shape: Vec<String> = world
        .accounts
        .iter()
        .flat_map(|(a, acct)| {
            acct.users.iter().map(move |(u, user)| {
                let keys: Vec<String> = user
                    .keys
                    .iter()
                    .map(|k| {
                        format!(
                            "{} {} {}d used {}",
                            k.id,
                            k.status.as_str(),
                            (epoch - k.created_at).num_days(),
                            k.last_used.map_or("never".to_owned(), |t| format!(
                                "{}d ago",
                                (epoch - t).num_days()
                            ))
                        )
                    })
                    .collect();
                format!("{a}/{u}: [{}]", keys.join(", "))
            })
        })
        .collect();
    for line in shape {
        world.note("sim", line);
    }
    let apps: Vec<String> = world
        .apps
        .iter()
        .map(|a| {
            format!(
                "{} uses {} every {}m, {:?}",
                a.name,
                a.held,
                a.period.num_minutes(),
                a.switching
            )
        })
        .collect();
    for line in apps {
        world.note("sim", line);
    }
}

/// An application: calls AWS with its key every period; follows the delivered secret
/// as its kind says.
async fn application(shared: Arc<Shared>, app: usize, end: tokio::time::Instant) {
    loop {
        let period = shared.world().apps[app].period;
        tokio::time::sleep(period.to_std().unwrap()).await;
        if tokio::time::Instant::now() >= end {
            return;
        }
        let mut world = shared.world();
        let now = world.now;
        let App {
            account,
            user,
            held,
            switching,
            name,
            ..
        } = world.apps[app].clone();
        let switch_to = match (switching, world.current_secret(&account, &user)) {
            (Switching::Prompt, Some((key, _))) => Some(key),
            (Switching::Late(delay), Some((key, at))) if now - at >= delay => Some(key),
            _ => None,
        };
        if let Some(key) = switch_to.filter(|k| k != &held) {
            world.apps[app].held = key.clone();
            world.apps[app].known.push(key.clone());
            world.note(&name, format!("switches to {key}"));
        }
        let refused = !world.use_key(app);
        if refused && !world.apps[app].refused {
            let held = world.apps[app].held.clone();
            world.note(&name, format!("call with {held} refused"));
        }
        world.apps[app].refused = refused;
    }
}

/// Whether the chaos is over, and whether this seed has people acting.
#[derive(Debug, Clone)]
struct Calm {
    calm: Arc<std::sync::atomic::AtomicBool>,
    people: bool,
    /// The seed of the actors added after a seed's world was fixed, which draw from a
    /// stream of their own so that the worlds of earlier seeds stay as they were.
    seed: u64,
}

/// A `keyturn run --watch` process: runs, sleeps until the next gate falls due (at most
/// a day), runs again; it may crash at any await point and restart as a new process.
async fn worker(
    shared: Arc<Shared>,
    journal: Arc<dyn Journal>,
    name: CampaignName,
    index: usize,
    calm: Calm,
    end: tokio::time::Instant,
) {
    let who = format!("w{index}");
    let skew =
        Duration::milliseconds(shared.rng().range(0, 2 * MAX_SKEW_MS) as i64 - MAX_SKEW_MS as i64);
    let mut process = 0;
    let mut own = Rng::new(calm.seed ^ 0xd6d6_0000 ^ index as u64);
    // Workers start a little apart.
    tokio::time::sleep(StdDuration::from_secs(index as u64 * 7)).await;
    while tokio::time::Instant::now() < end {
        process += 1;
        let run_id = format!("{who}.{process}");
        let cloud = SimCloud {
            shared: shared.clone(),
            who: who.clone(),
            run: run_id.clone(),
        };
        let options = RunOptions {
            concurrency: 4,
            claim_ttl: chrono::Duration::seconds(120),
            verify_wait: StdDuration::from_secs(30),
            clock: Arc::new(SkewedClock {
                shared: shared.clone(),
                skew,
            }),
            ..RunOptions::default()
        };
        let chaos = !calm.calm.load(std::sync::atomic::Ordering::SeqCst);
        let crash = chaos && shared.rng().chance(0.2);
        if chaos && calm.people {
            during_a_run(&shared);
        }
        let crash_after = StdDuration::from_millis(shared.rng().range(1, 5_000));
        // Nothing due: the next scheduled run, a day later.
        let mut next = StdDuration::from_secs(86_400);
        let attempt = run(journal.clone(), &cloud, &name, actor(&run_id), &options);
        let result = if crash {
            tokio::select! {
                result = attempt => Some(result),
                () = tokio::time::sleep(crash_after) => None,
            }
        } else {
            Some(attempt.await)
        };
        match result {
            None => {
                shared
                    .world()
                    .note(&who, format!("process {run_id} crashes"));
                next = StdDuration::from_secs(shared.rng().range(1, 600));
                if calm.people {
                    after_a_crash(&shared, &mut own);
                }
            }
            Some(Ok(summary)) => {
                if let Some(due) = summary.next_due() {
                    let wait = (due - shared.now()).num_seconds().clamp(60, 86_400) as u64;
                    next = StdDuration::from_secs(wait);
                }
            }
            Some(Err(e)) => {
                shared.world().note(&who, format!("run failed: {e}"));
                next = StdDuration::from_secs(3_600);
            }
        }
        tokio::time::sleep(next).await;
    }
}

/// An operator who, from a random day of the chaos on, looks once a day for a key in
/// observation and rolls one of them back (an application broke), once.
async fn rollback_operator(shared: Arc<Shared>, journal: Arc<dyn Journal>, name: CampaignName) {
    let first = shared.rng().range(3_600, 10 * 86_400);
    tokio::time::sleep(StdDuration::from_secs(first)).await;
    for _ in 0..CHAOS_DAYS {
        let Ok(state) = load_state(journal.as_ref(), &name).await else {
            return;
        };
        let observed: Vec<_> = state
            .users
            .values()
            .flat_map(|entry| entry.state.keys.values())
            .filter(|k| k.phase == keyturn_planner::rotation::Phase::Observing)
            .map(|k| k.key.clone())
            .collect();
        if observed.is_empty() {
            tokio::time::sleep(StdDuration::from_secs(86_400)).await;
            continue;
        }
        let key = shared.rng().pick(&observed).clone();
        let cloud = SimCloud {
            shared: shared.clone(),
            who: "wR".to_owned(),
            run: "rollback".to_owned(),
        };
        let options = RunOptions {
            clock: Arc::new(VirtualClock(shared.clone())),
            ..RunOptions::default()
        };
        let outcome = rollback(
            journal,
            &cloud,
            &name,
            &key,
            "an application broke",
            actor("rollback"),
            &options,
        )
        .await;
        shared.world().note(
            "operator",
            format!("rollback of {key}: {:?}", outcome.map(|_| ())),
        );
        return;
    }
}

/// The end checks: liveness, no secret-less replacement left, no secret in the journal.
async fn finish(shared: &Arc<Shared>, journal: &dyn Journal, name: &CampaignName) {
    let state = match load_state(journal, name).await {
        Ok(state) => state,
        Err(e) => {
            shared
                .world()
                .violations
                .push(format!("the campaign cannot be read: {e}"));
            return;
        }
    };
    let events = journal
        .read_campaign(name.as_str())
        .await
        .unwrap_or_default();
    let mut world = shared.world();
    // The bound: a key's whole path (adoption timeout, then the observation period)
    // plus slack for retries; a key enrolled later than that before the end (it fell
    // due late, or a person made it) is not held to it.
    let settled_by = world.now - Duration::days(SETTLE_DAYS);
    for ((account, user), entry) in &state.users {
        for ks in entry.state.keys.values() {
            if !ks.phase.is_terminal() && ks.enrolled_at <= settled_by {
                let what = format!(
                    "liveness: {account}/{user} {} still {:?} ({}) {SETTLE_DAYS} days after its enrolment, {CALM_DAYS} days into the calm",
                    ks.key, ks.phase, ks.reason
                );
                world.note("CHECK", &what);
                world.violations.push(what);
            }
        }
    }
    let leftovers: Vec<String> = world
        .accounts
        .iter()
        .flat_map(|(account, a)| {
            a.users.iter().flat_map(move |(user, u)| {
                u.keys
                    .iter()
                    .filter(|k| k.origin == Origin::Keyturn)
                    .map(move |k| (account, user, k))
            })
        })
        .filter(|(account, user, k)| {
            world
                .current_secret(account, user)
                .is_none_or(|(current, _)| current != k.id)
        })
        .map(|(account, user, k)| {
            format!(
                "{account}/{user}: keyturn's key {} is neither delivered nor deleted",
                k.id
            )
        })
        .collect();
    for what in leftovers {
        world.note("CHECK", &what);
        world.violations.push(what);
    }
    let secrets: Vec<String> = world
        .accounts
        .values()
        .flat_map(|a| {
            a.users
                .values()
                .flat_map(|u| u.keys.iter().map(|k| k.secret.clone()))
        })
        .chain(world.graveyard.iter().map(|(_, _, k)| k.secret.clone()))
        .collect();
    for envelope in &events {
        let text = format!("{envelope:?}");
        if let Some(secret) = secrets.iter().find(|s| text.contains(s.as_str())) {
            let what = format!("a secret ({}…) is in the journal", &secret[..12]);
            world.violations.push(what);
        }
    }
}
