//! The simulated AWS of one seed: accounts, IAM users and their keys (status, creation,
//! last use at IAM's 15-minute granularity, the two-key limit), Secrets Manager versions
//! and client request tokens; the applications that hold keys; and the invariants,
//! checked against this world at every mutation keyturn makes.
//!
//! Every change records who made it (keyturn, a person, the seed's initial state), so
//! that an invariant blames keyturn only for what keyturn did.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, DurationRound, Utc};
use keyturn_planner::inventory::KeyStatus;
use keyturn_planner::{AccessKeyId, AccountId, UserName};

use crate::ledger::Ledger;

/// Who made a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// It was there when the campaign started.
    Initial,
    /// keyturn created it (a replacement).
    Keyturn,
    /// A person or a pipeline created it during the campaign.
    Person,
}

/// A key as IAM holds it, with what the invariants need to know of its history.
#[derive(Debug, Clone)]
pub struct SimKey {
    /// The key's id.
    pub id: AccessKeyId,
    /// Its secret (the invariants look for it in the journal).
    pub secret: String,
    /// Active or Inactive.
    pub status: KeyStatus,
    /// When IAM created it.
    pub created_at: DateTime<Utc>,
    /// Its last use, at IAM's 15-minute granularity.
    pub last_used: Option<DateTime<Utc>>,
    /// Who made it.
    pub origin: Origin,
    /// When it last became Inactive (creation for a key created Inactive).
    pub inactive_since: Option<DateTime<Utc>>,
    /// Whether keyturn made it Inactive and nobody made it Active since.
    pub deactivated_by_keyturn: bool,
    /// Whether a secret version ever held it (keyturn's replacement was delivered).
    pub delivered: bool,
    /// The run whose CreateAccessKey made it (keyturn's keys only).
    pub created_by: Option<String>,
}

/// A version of a simulated secret.
#[derive(Debug, Clone)]
pub struct Version {
    /// The version id (the client request token of the delivery).
    pub id: String,
    /// The key it holds.
    pub key: AccessKeyId,
    /// Its secret.
    pub secret: String,
    /// A void version (keyturn took the token of a delivery it gave up): never current.
    pub void: bool,
}

/// A simulated Secrets Manager secret.
#[derive(Debug, Clone, Default)]
pub struct Secret {
    /// Every version, oldest first; the last one that is not void is AWSCURRENT.
    pub versions: Vec<Version>,
    /// When the current version was stored.
    pub changed_at: Option<DateTime<Utc>>,
}

impl Secret {
    /// The AWSCURRENT version.
    pub fn current(&self) -> Option<&Version> {
        self.versions.iter().rev().find(|v| !v.void)
    }
}

/// How an application follows the delivered secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switching {
    /// Reads the secret at every use and switches at once.
    Prompt,
    /// Switches this long after the secret changed.
    Late(Duration),
    /// Never reads the secret: keeps its old key (keyturn must block, not break it).
    Never,
}

/// An application using one user's key.
#[derive(Debug, Clone)]
pub struct App {
    /// Its name in the trace.
    pub name: String,
    /// Its account.
    pub account: AccountId,
    /// Its user.
    pub user: UserName,
    /// The key whose secret it uses.
    pub held: AccessKeyId,
    /// Every key whose secret it has held: the one it uses, and those it switched from
    /// (which a rollback can bring back).
    pub known: Vec<AccessKeyId>,
    /// Whether its last call was refused (the trace says so once).
    pub refused: bool,
    /// How often it makes a call.
    pub period: Duration,
    /// How it follows the delivered secret.
    pub switching: Switching,
}

/// One IAM user.
#[derive(Debug, Clone, Default)]
pub struct User {
    /// Its keys (at most two).
    pub keys: Vec<SimKey>,
}

/// One member account.
#[derive(Debug, Clone, Default)]
pub struct Account {
    /// Its users.
    pub users: BTreeMap<UserName, User>,
    /// Its secrets, by name.
    pub secrets: BTreeMap<String, Secret>,
}

/// The campaign's rules the invariants judge keyturn by.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// `[rotation] observation_period`.
    pub observation_period: Duration,
    /// `[rotation] unused_after`.
    pub unused_after: Duration,
    /// The largest skew of a worker's clock: keyturn measures its gates against AWS's
    /// timestamps on its own clock, so a clock that runs ahead shortens them by as much.
    pub skew: Duration,
}

/// The simulated world.
#[derive(Debug)]
pub struct World {
    /// The accounts.
    pub accounts: BTreeMap<AccountId, Account>,
    /// The applications.
    pub apps: Vec<App>,
    /// Every key that ever existed (deleted ones too), for the end checks.
    pub graveyard: Vec<(AccountId, UserName, SimKey)>,
    /// The campaign's start (keys a person creates after it are the person's).
    pub started_at: DateTime<Utc>,
    /// The rules.
    pub rules: Rules,
    /// What happened, for the trace of a failing seed.
    pub trace: Vec<String>,
    /// Broken invariants.
    pub violations: Vec<String>,
    /// Virtual now, set by the harness before every access.
    pub now: DateTime<Utc>,
    /// When each worker last listed each user's keys (ListAccessKeys).
    pub read_at: BTreeMap<(String, AccountId, UserName), DateTime<Utc>>,
    /// When a person last changed each user's keys.
    pub touched_at: BTreeMap<(AccountId, UserName), DateTime<Utc>>,
    /// When the call being applied left its worker (before its latency and any stall).
    pub call_sent_at: DateTime<Utc>,
    /// keyturn's intents to create a replacement: (account, user, when recorded).
    pub create_intents: Vec<(AccountId, UserName, DateTime<Utc>)>,
    /// The claims and intents the journal holds now.
    pub ledger: Ledger,
    /// The ledger as it was when the call being applied left its worker.
    pub sent_ledger: Ledger,
    /// The run whose call is being applied.
    pub call_run: String,
    next_key: u64,
}

/// How recent a read must be, when the call is sent, to be the fresh read a mutation
/// is decided on.
pub const FRESH_READ: Duration = Duration::seconds(1);

/// A key used this recently is never one keyturn may deactivate: no gate is shorter
/// than a day without `allow_short_gates` (which the simulator's policy does not set),
/// and IAM records a use at most 15 minutes late.
pub const RECENT_USE: Duration = Duration::hours(12);

/// A failure as the port reports it.
pub type Refusal = (&'static str, String);

impl World {
    /// An empty world at `now`.
    pub fn new(now: DateTime<Utc>, rules: Rules) -> Self {
        Self {
            accounts: BTreeMap::new(),
            apps: Vec::new(),
            graveyard: Vec::new(),
            started_at: now,
            rules,
            trace: Vec::new(),
            violations: Vec::new(),
            now,
            read_at: BTreeMap::new(),
            touched_at: BTreeMap::new(),
            call_sent_at: now,
            create_intents: Vec::new(),
            ledger: Ledger::default(),
            sent_ledger: Ledger::default(),
            call_run: String::new(),
            next_key: 1,
        }
    }

    /// Records a line of the trace.
    pub fn note(&mut self, who: &str, what: impl std::fmt::Display) {
        let since = self.now - self.started_at;
        let line = format!(
            "{:>3}d{:02}:{:02}:{:02} {who:<10} {what}",
            since.num_days(),
            since.num_hours() % 24,
            since.num_minutes() % 60,
            since.num_seconds() % 60
        );
        self.trace.push(line);
    }

    fn violate(&mut self, what: String) {
        self.note("INVARIANT", &what);
        self.violations.push(what);
    }

    /// A broken invariant of `who`'s change to the user's keys, unless a person changed
    /// them after `who` read them right before sending the call (within
    /// [`FRESH_READ`]): IAM has no conditional writes, so a person acting between
    /// keyturn's fresh read and its call's arrival (in the same second, or while its
    /// process was frozen) is the race keyturn documents it cannot close. A decision on
    /// an older read is keyturn's fault.
    fn violate_unless_raced(
        &mut self,
        who: &str,
        account: &AccountId,
        user: &UserName,
        what: String,
    ) {
        let read = self
            .read_at
            .get(&(who.to_owned(), account.clone(), user.clone()))
            .copied();
        let touched = self
            .touched_at
            .get(&(account.clone(), user.clone()))
            .copied();
        match (read, touched) {
            (Some(read), Some(touched))
                if touched >= read && self.call_sent_at - read <= FRESH_READ =>
            {
                self.note(
                    who,
                    format!("raced by a person after its read (not counted): {what}"),
                );
            }
            _ => self.violate(what),
        }
    }

    /// Judges a mutation of keyturn's that took effect on the user's keys (`key`: the
    /// key it changed, unless it created one) against the journal as it was when the
    /// call left: the run that sent it held the account's claim, an open intent of one of
    /// `steps` named the key, and no other mutation took effect under that intent.
    pub fn judge_intent(
        &mut self,
        account: &AccountId,
        user: &UserName,
        key: Option<&AccessKeyId>,
        steps: &[&str],
        what: &str,
    ) {
        if let Some(violation) = self.intent_verdict(account, user, key, steps, what) {
            self.violate(violation);
        }
    }

    /// What [`World::judge_intent`] finds wrong with the mutation, if anything.
    fn intent_verdict(
        &mut self,
        account: &AccountId,
        user: &UserName,
        key: Option<&AccessKeyId>,
        steps: &[&str],
        what: &str,
    ) -> Option<String> {
        let run = self.call_run.clone();
        let Some(campaign) =
            self.sent_ledger
                .claim_of(&run, account, self.call_sent_at, self.rules.skew)
        else {
            let held: Vec<_> = self.sent_ledger.claims.iter().collect();
            return Some(format!(
                "{run} {what} without holding the claim on account {account} when its call left (claims: {held:?})"
            ));
        };
        let open = self.sent_ledger.open_intents(&campaign, account, user);
        let Some(intent) = open
            .iter()
            .rev()
            .find(|i| steps.contains(&i.step.as_str()) && key.is_none_or(|k| &i.acts_on == k))
            .map(|i| (*i).clone())
        else {
            let open: Vec<String> = open
                .iter()
                .map(|i| format!("{} {} {:?}", i.run, i.step, i.keys))
                .collect();
            return Some(format!(
                "{run} {what} with no open intent of its kind for {user} in the journal (open: {open:?})"
            ));
        };
        (!self.ledger.spent.insert(intent.seq)).then(|| {
            format!(
                "{run} {what}: a second mutation under {}'s intent to {}",
                intent.run, intent.step
            )
        })
    }

    /// Whether the key was created within an unanswered create's window of one of
    /// keyturn's create intents for the user.
    fn created_while_creating(&self, account: &AccountId, user: &UserName, key: &SimKey) -> bool {
        let skew = Duration::minutes(2);
        let bound = Duration::seconds(60);
        self.create_intents.iter().any(|(a, u, at)| {
            a == account
                && u == user
                && *at - skew <= key.created_at
                && key.created_at <= *at + bound + skew
        })
    }

    /// Records a worker's ListAccessKeys of the user.
    pub fn read_keys(&mut self, who: &str, account: &AccountId, user: &UserName) {
        self.read_at
            .insert((who.to_owned(), account.clone(), user.clone()), self.now);
    }

    /// Records a person's change to the user's keys.
    pub fn touched(&mut self, account: &AccountId, user: &UserName) {
        self.touched_at
            .insert((account.clone(), user.clone()), self.now);
    }

    /// Makes a key for the user (the two-key limit applies).
    pub fn create_key(
        &mut self,
        account: &AccountId,
        user: &UserName,
        origin: Origin,
        created_at: DateTime<Utc>,
        status: KeyStatus,
    ) -> Result<SimKey, Refusal> {
        let n = self.next_key;
        let keys = &mut self.user_mut(account, user)?.keys;
        if keys.len() >= 2 {
            return Err((
                "LimitExceeded",
                "Cannot exceed quota for AccessKeysPerUser: 2".to_owned(),
            ));
        }
        let key = SimKey {
            id: AccessKeyId::new(format!("AKIASIM{n:013}")).expect("a valid key id"),
            secret: format!("simsecret{n:08}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
            status,
            created_at,
            last_used: None,
            origin,
            inactive_since: (status == KeyStatus::Inactive).then_some(created_at),
            deactivated_by_keyturn: false,
            delivered: false,
            created_by: (origin == Origin::Keyturn).then(|| self.call_run.clone()),
        };
        let keys = &mut self.user_mut(account, user)?.keys;
        keys.push(key.clone());
        self.next_key += 1;
        Ok(key)
    }

    /// The account's secret of that name, created empty when missing (a write creates
    /// it).
    pub fn secret_mut(&mut self, account: &AccountId, name: &str) -> &mut Secret {
        self.accounts
            .get_mut(account)
            .expect("a known account")
            .secrets
            .entry(name.to_owned())
            .or_default()
    }

    /// The user, or `NoSuchEntity`.
    pub fn user_mut(&mut self, account: &AccountId, user: &UserName) -> Result<&mut User, Refusal> {
        self.accounts
            .get_mut(account)
            .and_then(|a| a.users.get_mut(user))
            .ok_or((
                "NoSuchEntity",
                format!("The user with name {user} cannot be found."),
            ))
    }

    /// The user's key, or `NoSuchEntity`.
    pub fn key_mut(
        &mut self,
        account: &AccountId,
        user: &UserName,
        key: &AccessKeyId,
    ) -> Result<&mut SimKey, Refusal> {
        self.user_mut(account, user)?
            .keys
            .iter_mut()
            .find(|k| &k.id == key)
            .ok_or((
                "NoSuchEntity",
                format!("The Access Key with id {key} cannot be found."),
            ))
    }

    /// The key wherever it is.
    pub fn find_key(&self, key: &AccessKeyId) -> Option<(&AccountId, &UserName, &SimKey)> {
        self.accounts.iter().find_map(|(account, a)| {
            a.users.iter().find_map(|(user, u)| {
                u.keys
                    .iter()
                    .find(|k| &k.id == key)
                    .map(|k| (account, user, k))
            })
        })
    }

    /// Sets a key's status; keyturn's changes are judged first.
    pub fn set_status(
        &mut self,
        who: &str,
        account: &AccountId,
        user: &UserName,
        key: &AccessKeyId,
        status: KeyStatus,
    ) -> Result<(), Refusal> {
        let now = self.now;
        let by_keyturn = who.starts_with('w');
        let before = self.keyless_apps(account, user);
        let current = self.key_mut(account, user, key)?.clone();
        if by_keyturn
            && status == KeyStatus::Inactive
            && current.status == KeyStatus::Active
            && current.origin == Origin::Person
            && now - current.created_at + self.rules.skew < self.rules.unused_after
        {
            self.violate_unless_raced(
                who,
                account,
                user,
                format!("{who} deactivated {key}, which a person created during the campaign"),
            );
        }
        if by_keyturn
            && status == KeyStatus::Inactive
            && current.status == KeyStatus::Active
            && let Some(used) = current.last_used
            && now - used + self.rules.skew < RECENT_USE
        {
            self.violate_unless_raced(
                who,
                account,
                user,
                format!(
                    "{who} deactivated {key} of {user}, used {} minutes before",
                    (now - used).num_minutes()
                ),
            );
        }
        if !by_keyturn {
            self.touched(account, user);
        }
        let k = self.key_mut(account, user, key)?;
        if k.status != status {
            k.status = status;
            match status {
                KeyStatus::Inactive => {
                    k.inactive_since = Some(now);
                    k.deactivated_by_keyturn = by_keyturn;
                }
                KeyStatus::Active => {
                    k.inactive_since = None;
                    k.deactivated_by_keyturn = false;
                }
            }
            self.note(who, format!("{user}: {key} made {}", status.as_str()));
            if by_keyturn {
                self.check_apps(who, account, user, &before);
                let step = match status {
                    KeyStatus::Inactive => "deactivate",
                    KeyStatus::Active => "reactivate",
                };
                self.judge_intent(
                    account,
                    user,
                    Some(key),
                    &[step],
                    &format!("made {key} {}", status.as_str()),
                );
            }
        }
        Ok(())
    }

    /// What is wrong with keyturn deleting `current` now, if anything.
    fn deletion_verdict(
        &self,
        account: &AccountId,
        user: &UserName,
        current: &SimKey,
    ) -> Option<&'static str> {
        let now = self.now;
        // IAM does not say when a key became Inactive: a key keyturn did not
        // deactivate may be deleted once it is Inactive and has not been used (or
        // created) for the observation period, the rule keyturn can observe; the
        // invariant holds keyturn to exactly that.
        let quiet_through = |k: &SimKey| {
            now - k.last_used.unwrap_or(k.created_at).max(k.created_at) + self.rules.skew
                >= self.rules.observation_period
        };
        match current.status {
            // keyturn's replacement whose secret was never stored anywhere.
            _ if current.origin == Origin::Keyturn && !current.delivered => None,
            // The documented ambiguity of an unanswered create: a never-used key
            // created while keyturn's CreateAccessKey may have been in flight cannot
            // be told from keyturn's own (`rotation::CREATE_CALL_BOUND`, 60 s, and
            // `CLOCK_SKEW`, 2 minutes, either side).
            _ if current.last_used.is_none()
                && self.created_while_creating(account, user, current) =>
            {
                None
            }
            KeyStatus::Active => Some("an Active key"),
            KeyStatus::Inactive if !current.deactivated_by_keyturn && !quiet_through(current) => {
                Some(
                    "an Inactive key keyturn did not deactivate, used or created within the observation period",
                )
            }
            // Made Inactive by keyturn: observed for the whole period first.
            KeyStatus::Inactive
                if current.deactivated_by_keyturn
                    && current.inactive_since.is_some_and(|t| {
                        now - t + self.rules.skew < self.rules.observation_period
                    }) =>
            {
                Some("a key keyturn deactivated, before its observation period was over")
            }
            KeyStatus::Inactive => None,
        }
    }

    /// Deletes a key; keyturn's deletions are judged first.
    pub fn delete_key(
        &mut self,
        who: &str,
        account: &AccountId,
        user: &UserName,
        key: &AccessKeyId,
    ) -> Result<(), Refusal> {
        let before = self.keyless_apps(account, user);
        let current = self.key_mut(account, user, key)?.clone();
        if who.starts_with('w')
            && let Some(what) = self.deletion_verdict(account, user, &current)
        {
            self.violate_unless_raced(
                who,
                account,
                user,
                format!("{who} deleted {key} of {user}: {what}"),
            );
        }
        if !who.starts_with('w') {
            self.touched(account, user);
        }
        let discarded =
            current.created_by.as_deref() == Some(self.call_run.as_str()) && !current.delivered;
        let keys = &mut self.user_mut(account, user)?.keys;
        keys.retain(|k| &k.id != key);
        self.graveyard
            .push((account.clone(), user.clone(), current));
        self.note(who, format!("{user}: {key} deleted"));
        // A run that created a key and could not record it (its claim moved, the
        // journal failed) deletes it at once: the key's secret never left that run, so
        // nobody can use it, and no other run can tell it from a person's. That one
        // deletion needs neither the claim nor an intent.
        if who.starts_with('w') {
            self.check_apps(who, account, user, &before);
            let verdict = self.intent_verdict(
                account,
                user,
                Some(key),
                &["delete", "delete-orphan"],
                &format!("deleted {key}"),
            );
            match verdict {
                Some(_) if discarded => self.note(
                    who,
                    format!(
                        "{key} discarded by the run that created it, which could not record it"
                    ),
                ),
                Some(violation) => self.violate(violation),
                None => {}
            }
        }
        Ok(())
    }

    /// The applications of the user that hold the secret of no working key (their own
    /// key is gone, and so is the key their user's secret holds).
    fn keyless_apps(&self, account: &AccountId, user: &UserName) -> Vec<String> {
        let Some(keys) = self.accounts.get(account).and_then(|a| a.users.get(user)) else {
            return Vec::new();
        };
        // A key counts while it exists and is Active, or Inactive by keyturn's doing (a
        // rollback can bring it back); one a person made Inactive is the person's call.
        let exists = |key: &AccessKeyId| {
            keys.keys.iter().any(|k| {
                &k.id == key && (k.status == KeyStatus::Active || k.deactivated_by_keyturn)
            })
        };
        let delivered = self
            .current_secret(account, user)
            .is_some_and(|(key, _)| exists(&key));
        self.apps
            .iter()
            .filter(|a| &a.account == account && &a.user == user)
            .filter(|a| !exists(&a.held) && !a.known.iter().any(exists) && !delivered)
            .map(|a| a.name.clone())
            .collect()
    }

    /// After keyturn changed a user's keys: no application of the user lost its last
    /// key through that change (a person may have taken it before; that is not
    /// keyturn's doing).
    fn check_apps(&mut self, who: &str, account: &AccountId, user: &UserName, before: &[String]) {
        for app in self.keyless_apps(account, user) {
            if !before.contains(&app) {
                self.violate_unless_raced(
                    who,
                    account,
                    user,
                    format!(
                        "after {who}'s change, application {app} of {user} holds no key that exists"
                    ),
                );
            }
        }
    }

    /// An application's call with its key: the key's last use moves (at IAM's 15-minute
    /// granularity) when the key exists and is Active.
    pub fn use_key(&mut self, app: usize) -> bool {
        let now = self.now;
        let App {
            account,
            user,
            held,
            ..
        } = self.apps[app].clone();
        match self.key_mut(&account, &user, &held) {
            Ok(key) if key.status == KeyStatus::Active => {
                key.last_used = Some(
                    now.duration_trunc(Duration::minutes(15))
                        .unwrap_or(now)
                        .max(key.created_at),
                );
                true
            }
            _ => false,
        }
    }

    /// The key the user's secret holds now, with its secret, and when it was stored.
    pub fn current_secret(
        &self,
        account: &AccountId,
        user: &UserName,
    ) -> Option<(AccessKeyId, DateTime<Utc>)> {
        let suffix = format!("/{user}");
        self.accounts
            .get(account)?
            .secrets
            .iter()
            .find_map(|(name, s)| {
                (name.ends_with(&suffix) || name == user.as_str())
                    .then(|| Some((s.current()?.key.clone(), s.changed_at?)))
                    .flatten()
            })
    }
}
