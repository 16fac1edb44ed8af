//! keyturn's AWS port (`keyturn_worker::port`) over the simulated world, with the
//! seed's faults: slow answers, throttling, server errors before the work, and the
//! nasty one, a request that took effect but whose answer was lost. A worker may also
//! stall (a laptop asleep) right before a mutation reaches AWS.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use keyturn_planner::inventory::{KeyStatus, LastUse};
use keyturn_planner::{AccessKeyId, AccountId, Scope, UserName};
use keyturn_worker::credential_report::CredentialReport;
use keyturn_worker::iam::IamUser;
use keyturn_worker::org::OrgAccount;
use keyturn_worker::port::{AccountApi, Cloud};
use keyturn_worker::secret::{NewAccessKey, SecretAccessKey};
use keyturn_worker::steps::{Deletion, Delivery, DeliveryMeta, ListedKey, SecretTarget, Voiding};
use keyturn_worker::{AwsFailure, SdkConfig, WorkerError};

use crate::rng::Rng;
use crate::world::{Origin, World};

/// The faults of a seed, switched off for the liveness phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Probability that a call is throttled (nothing done).
    pub throttle: f64,
    /// Probability of a server error before the work (nothing done).
    pub server: f64,
    /// Probability that a call's work is done but its answer lost.
    pub lost: f64,
    /// Probability that a worker stalls right before a mutation.
    pub stall: f64,
    /// How long a stall lasts.
    pub stall_for: StdDuration,
    /// The longest answer, in milliseconds.
    pub max_latency_ms: u64,
}

/// What every actor of a seed shares: the world, the randomness, the faults and time.
#[derive(Debug)]
pub struct Shared {
    /// The world.
    pub world: Mutex<World>,
    /// The seed's randomness.
    pub rng: Mutex<Rng>,
    /// The faults in force.
    pub faults: Mutex<Faults>,
    /// Virtual time zero.
    pub epoch: DateTime<Utc>,
    /// The runtime's instant at virtual time zero.
    pub start: tokio::time::Instant,
}

impl Shared {
    /// Virtual now.
    pub fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.start;
        self.epoch + Duration::from_std(elapsed).expect("a simulated span fits")
    }

    /// The world, its clock set to now.
    pub fn world(&self) -> MutexGuard<'_, World> {
        let now = self.now();
        let mut world = self
            .world
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        world.now = now;
        world
    }

    /// The seed's randomness.
    pub fn rng(&self) -> MutexGuard<'_, Rng> {
        self.rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn faults(&self) -> Faults {
        *self
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The organization as one worker reaches it.
#[derive(Debug, Clone)]
pub struct SimCloud {
    /// The seed's shared state.
    pub shared: Arc<Shared>,
    /// The worker's name in the trace (`w1`, …).
    pub who: String,
    /// The run (the process) whose calls these are, as its journal actor names it.
    pub run: String,
}

/// A fault drawn for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Throttled,
    ServerError,
    AnswerLost,
}

fn failure(operation: &'static str, (code, message): (&'static str, String)) -> AwsFailure {
    AwsFailure {
        operation,
        code: code.to_owned(),
        message,
    }
}

impl SimCloud {
    /// One call: latency, a fault perhaps, the work (`work` runs on the world at the
    /// moment the request reaches AWS), latency again.
    async fn call<T>(
        &self,
        operation: &'static str,
        mutation: bool,
        work: impl FnOnce(&mut World, &str) -> Result<T, (&'static str, String)>,
    ) -> Result<T, AwsFailure> {
        let faults = self.shared.faults();
        let sent = self.shared.now();
        // What the journal held when the call left: a mutation is judged by it.
        let ledger = mutation.then(|| self.shared.world().ledger.clone());
        let (before, fault, after, stall) = {
            let mut rng = self.shared.rng();
            let latency = |rng: &mut Rng| {
                StdDuration::from_millis(rng.range(1, faults.max_latency_ms.max(1)))
            };
            let before = latency(&mut rng);
            let after = latency(&mut rng);
            let fault = if rng.chance(faults.throttle) {
                Fault::Throttled
            } else if rng.chance(faults.server) {
                Fault::ServerError
            } else if rng.chance(faults.lost) {
                Fault::AnswerLost
            } else {
                Fault::None
            };
            let stall = mutation && rng.chance(faults.stall);
            (before, fault, after, stall)
        };
        if stall {
            self.shared
                .world()
                .note(&self.who, format!("stalls before {operation}"));
            tokio::time::sleep(faults.stall_for).await;
        }
        tokio::time::sleep(before).await;
        match fault {
            Fault::Throttled => {
                return Err(failure(
                    operation,
                    ("Throttling", "Rate exceeded".to_owned()),
                ));
            }
            Fault::ServerError => {
                return Err(failure(
                    operation,
                    ("ServiceUnavailable", "simulated 503".to_owned()),
                ));
            }
            _ => {}
        }
        let done = {
            let mut world = self.shared.world();
            world.call_sent_at = sent;
            world.call_run.clone_from(&self.run);
            if let Some(ledger) = ledger {
                world.sent_ledger = ledger;
            }
            work(&mut world, &self.who)
        };
        tokio::time::sleep(after).await;
        if fault == Fault::AnswerLost {
            if mutation {
                self.shared.world().note(
                    &self.who,
                    format!("{operation} took effect; its answer is lost"),
                );
            }
            return Err(failure(
                operation,
                ("InternalFailure", "simulated lost answer".to_owned()),
            ));
        }
        done.map_err(|refusal| failure(operation, refusal))
    }
}

#[async_trait]
impl Cloud for SimCloud {
    async fn accounts_in_scope(&self, _scope: &Scope) -> Result<Vec<OrgAccount>, WorkerError> {
        self.call("ListAccounts", false, |world, _| {
            Ok(world
                .accounts
                .keys()
                .map(|id| OrgAccount {
                    id: id.clone(),
                    name: format!("acct-{id}"),
                    email: None,
                })
                .collect())
        })
        .await
        .map_err(WorkerError::from)
    }

    async fn caller_key(&self) -> Option<AccessKeyId> {
        None
    }

    async fn account(&self, account: &AccountId, _scope: &Scope) -> Arc<dyn AccountApi> {
        Arc::new(SimAccount {
            cloud: self.clone(),
            account: account.clone(),
        })
    }

    fn sdk_config(&self) -> Option<&SdkConfig> {
        None
    }
}

/// One member account as one worker reaches it.
#[derive(Debug)]
pub struct SimAccount {
    cloud: SimCloud,
    account: AccountId,
}

fn report_time(t: Option<DateTime<Utc>>) -> String {
    t.map_or("N/A".to_owned(), |t| {
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    })
}

#[async_trait]
impl AccountApi for SimAccount {
    async fn list_users(&self) -> Result<Vec<IamUser>, AwsFailure> {
        let account = &self.account;
        self.cloud
            .call("GetAccountAuthorizationDetails", false, |world, _| {
                Ok(world.accounts[account]
                    .users
                    .keys()
                    .map(|name| IamUser {
                        name: name.clone(),
                        tags: Vec::new(),
                    })
                    .collect())
            })
            .await
    }

    async fn credential_report(&self) -> Result<CredentialReport, AwsFailure> {
        let account = &self.account;
        let text = self
            .cloud
            .call("GetCredentialReport", false, |world, _| {
                let mut csv = String::from(
                    "user,access_key_1_active,access_key_1_last_rotated,access_key_1_last_used_date,access_key_1_last_used_region,access_key_1_last_used_service,access_key_2_active,access_key_2_last_rotated,access_key_2_last_used_date,access_key_2_last_used_region,access_key_2_last_used_service\n",
                );
                for (name, user) in &world.accounts[account].users {
                    csv.push_str(name.as_str());
                    for slot in 0..2 {
                        match user.keys.get(slot) {
                            Some(k) => csv.push_str(&format!(
                                ",{},{},{},us-east-1,iam",
                                k.status == KeyStatus::Active,
                                report_time(Some(k.created_at)),
                                report_time(k.last_used)
                            )),
                            None => csv.push_str(",false,N/A,N/A,N/A,N/A"),
                        }
                    }
                    csv.push('\n');
                }
                Ok(csv)
            })
            .await?;
        CredentialReport::parse(text.as_bytes()).map_err(|message| AwsFailure {
            operation: "GetCredentialReport",
            code: "MalformedReport".to_owned(),
            message,
        })
    }

    async fn list_access_keys(&self, user: &UserName) -> Result<Vec<ListedKey>, AwsFailure> {
        let account = &self.account;
        self.cloud
            .call("ListAccessKeys", false, |world, who| {
                world.read_keys(who, account, user);
                Ok(world
                    .user_mut(account, user)?
                    .keys
                    .iter()
                    .map(|k| ListedKey {
                        access_key_id: k.id.clone(),
                        status: k.status,
                        created_at: k.created_at,
                    })
                    .collect())
            })
            .await
    }

    async fn last_used(&self, key: &AccessKeyId) -> Result<Option<LastUse>, AwsFailure> {
        self.cloud
            .call("GetAccessKeyLastUsed", false, |world, _| {
                let used = world.find_key(key).and_then(|(_, _, k)| k.last_used);
                Ok(used.map(|at| LastUse {
                    at,
                    service: Some("iam".to_owned()),
                    region: Some("us-east-1".to_owned()),
                }))
            })
            .await
    }

    async fn create_access_key(&self, user: &UserName) -> Result<NewAccessKey, AwsFailure> {
        let account = &self.account;
        let key = self
            .cloud
            .call("CreateAccessKey", true, |world, who| {
                let now = world.now;
                let key =
                    world.create_key(account, user, Origin::Keyturn, now, KeyStatus::Active)?;
                world.note(who, format!("{user}: created {}", key.id));
                world.judge_intent(
                    account,
                    user,
                    None,
                    &["create-replacement"],
                    &format!("created {}", key.id),
                );
                Ok(key)
            })
            .await?;
        Ok(NewAccessKey {
            access_key_id: key.id,
            secret: SecretAccessKey::new(key.secret),
            created_at: key.created_at,
        })
    }

    async fn set_access_key_status(
        &self,
        user: &UserName,
        key: &AccessKeyId,
        status: KeyStatus,
    ) -> Result<(), AwsFailure> {
        let account = &self.account;
        self.cloud
            .call("UpdateAccessKey", true, |world, who| {
                world.set_status(who, account, user, key, status)
            })
            .await
    }

    async fn delete_access_key(
        &self,
        user: &UserName,
        key: &AccessKeyId,
    ) -> Result<Deletion, AwsFailure> {
        let account = &self.account;
        self.cloud
            .call("DeleteAccessKey", true, |world, who| {
                match world.key_mut(account, user, key) {
                    Ok(_) => world
                        .delete_key(who, account, user, key)
                        .map(|()| Deletion::Deleted),
                    // Gone from this user; a key of another user is not deleted.
                    Err(_) => match world.find_key(key) {
                        Some(_) => Err((
                            "NoSuchEntity",
                            format!("access key {key} belongs to another user"),
                        )),
                        None => Ok(Deletion::AlreadyGone),
                    },
                }
            })
            .await
    }

    async fn deliver_secret(
        &self,
        target: &SecretTarget,
        key: &NewAccessKey,
        _meta: &DeliveryMeta,
        token: &str,
    ) -> Result<Delivery, AwsFailure> {
        let account = &self.account;
        self.cloud
            .call("PutSecretValue", true, |world, who| {
                let now = world.now;
                let mut delivered = false;
                let secret = world.secret_mut(account, &target.name);
                match secret.versions.iter().find(|v| v.id == token) {
                    Some(v) if v.key == key.access_key_id && !v.void => {}
                    Some(_) => {
                        return Err((
                            "ResourceExistsException",
                            "the token names another value".to_owned(),
                        ));
                    }
                    None => {
                        delivered = true;
                        secret.versions.push(crate::world::Version {
                            id: token.to_owned(),
                            key: key.access_key_id.clone(),
                            secret: key.secret.expose().to_owned(),
                            void: false,
                        });
                        secret.changed_at = Some(now);
                    }
                }
                let owner = world
                    .find_key(&key.access_key_id)
                    .map(|(a, u, _)| (a.clone(), u.clone()));
                if let Some((a, u)) = &owner
                    && let Ok(k) = world.key_mut(a, u, &key.access_key_id)
                {
                    k.delivered = true;
                }
                // A key deleted since is judged too (a late delivery of a deleted key).
                let owner = owner.or_else(|| {
                    world
                        .graveyard
                        .iter()
                        .find(|(_, _, k)| k.id == key.access_key_id)
                        .map(|(a, u, _)| (a.clone(), u.clone()))
                });
                world.note(
                    who,
                    format!("delivered {} to {}", key.access_key_id, target.name),
                );
                if delivered && let Some((a, u)) = owner {
                    world.judge_intent(
                        &a,
                        &u,
                        Some(&key.access_key_id),
                        &["deliver-secret"],
                        &format!("stored {} in {}", key.access_key_id, target.name),
                    );
                }
                Ok(Delivery {
                    secret_arn: format!(
                        "arn:aws:secretsmanager:us-east-1:{account}:secret:{}",
                        target.name
                    ),
                    version_id: token.to_owned(),
                })
            })
            .await
    }

    async fn find_delivery(
        &self,
        target: &SecretTarget,
        token: &str,
    ) -> Result<Option<(Delivery, AccessKeyId)>, AwsFailure> {
        let account = &self.account;
        self.cloud
            .call("GetSecretValue", false, |world, _| {
                Ok(world.accounts[account]
                    .secrets
                    .get(&target.name)
                    .and_then(|s| s.versions.iter().find(|v| v.id == token && !v.void))
                    .map(|v| {
                        (
                            Delivery {
                                secret_arn: format!(
                                    "arn:aws:secretsmanager:us-east-1:{account}:secret:{}",
                                    target.name
                                ),
                                version_id: v.id.clone(),
                            },
                            v.key.clone(),
                        )
                    }))
            })
            .await
    }

    async fn void_delivery(
        &self,
        target: &SecretTarget,
        token: &str,
        key: &AccessKeyId,
        _meta: &DeliveryMeta,
    ) -> Result<Voiding, AwsFailure> {
        let account = &self.account;
        self.cloud
            .call("PutSecretValue", true, |world, who| {
                // A missing secret is created with the void as its first version.
                let secret = world.secret_mut(account, &target.name);
                let voiding = match secret.versions.iter().find(|v| v.id == token) {
                    Some(v) if v.void && &v.key == key => Voiding::Voided,
                    Some(_) => Voiding::Taken,
                    None => {
                        secret.versions.push(crate::world::Version {
                            id: token.to_owned(),
                            key: key.clone(),
                            secret: String::new(),
                            void: true,
                        });
                        Voiding::Voided
                    }
                };
                world.note(
                    who,
                    format!(
                        "voided the delivery of {key} in {}: {voiding:?}",
                        target.name
                    ),
                );
                Ok(voiding)
            })
            .await
    }

    async fn read_delivered_key(
        &self,
        target: &SecretTarget,
        version_id: &str,
    ) -> Result<NewAccessKey, AwsFailure> {
        let account = &self.account;
        let (key, secret, at) = self
            .cloud
            .call("GetSecretValue", false, |world, _| {
                let now = world.now;
                world.accounts[account]
                    .secrets
                    .get(&target.name)
                    .and_then(|s| s.versions.iter().find(|v| v.id == version_id && !v.void))
                    .map(|v| (v.key.clone(), v.secret.clone(), now))
                    .ok_or(("ResourceNotFoundException", "no such version".to_owned()))
            })
            .await?;
        Ok(NewAccessKey {
            access_key_id: key,
            secret: SecretAccessKey::new(secret),
            created_at: at,
        })
    }

    async fn verify_access_key(
        &self,
        key: &NewAccessKey,
        user: &UserName,
        max_wait: StdDuration,
    ) -> Result<String, AwsFailure> {
        // A new key authenticates once it has propagated (a few seconds after creation).
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            let account = &self.account;
            let answer = self
                .cloud
                .call("GetCallerIdentity", false, |world, _| {
                    let now = world.now;
                    match world.find_key(&key.access_key_id) {
                        Some((a, u, k))
                            if a == account
                                && u == user
                                && k.status == KeyStatus::Active
                                && k.secret == key.secret.expose()
                                && now - k.created_at >= Duration::seconds(4) =>
                        {
                            Ok(format!("arn:aws:iam::{account}:user/{user}"))
                        }
                        _ => Err((
                            "InvalidClientTokenId",
                            "the key is not valid (yet)".to_owned(),
                        )),
                    }
                })
                .await;
            match answer {
                Ok(arn) => return Ok(arn),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(StdDuration::from_secs(1)).await,
            }
        }
    }
}

/// The journal as the simulated world watches it: every append is passed on, and the
/// world notes each intent to create a replacement (account, user, time), so that the
/// invariants can tell keyturn's documented orphan ambiguity from a defect.
#[derive(Debug)]
pub struct WatchedJournal {
    /// The journal itself.
    pub inner: Arc<dyn keyturn_journal::Journal>,
    /// The seed's shared state.
    pub shared: Arc<Shared>,
}

impl WatchedJournal {
    /// Reads the events of an append the journal committed into the ledger.
    /// Reads the events of an append the journal committed into the ledger, and into
    /// the trace (claims only when taken by another run than the last).
    fn committed(&self, stream: &keyturn_journal::StreamId, events: &[keyturn_journal::NewEvent]) {
        let mut world = self.shared.world();
        for event in events {
            world.ledger.record(stream, event);
            if event.event_type.starts_with("claim") {
                continue;
            }
            let mut payload = event.payload.clone();
            if let Some(fields) = payload.as_object_mut() {
                fields.remove("type");
            }
            let mut line = format!(
                "{} {}/{}: {} {payload}",
                stream.campaign(),
                event.account_id.as_deref().unwrap_or("-"),
                event.user_name.as_deref().unwrap_or("-"),
                event.event_type,
            );
            if line.len() > 220 {
                let cut = (0..=220)
                    .rev()
                    .find(|i| line.is_char_boundary(*i))
                    .unwrap_or(0);
                line.truncate(cut);
                line.push('…');
            }
            let run = event.actor.run_id.clone();
            world.note(&run, line);
        }
    }

    fn watch<'a>(&self, events: impl IntoIterator<Item = &'a keyturn_journal::NewEvent>) {
        for event in events {
            let creating = event.event_type == "step-intended"
                && event.payload.get("step").and_then(|s| s.as_str()) == Some("create-replacement");
            if let (true, Some(account), Some(user)) = (
                creating,
                event.account_id.as_deref(),
                event.user_name.as_deref(),
            ) && let (Ok(account), Ok(user)) = (AccountId::new(account), UserName::new(user))
            {
                let mut world = self.shared.world();
                let now = world.now;
                world.create_intents.push((account, user, now));
            }
        }
    }
}

#[async_trait]
impl keyturn_journal::Journal for WatchedJournal {
    async fn append(
        &self,
        stream: &keyturn_journal::StreamId,
        expected_version: u64,
        events: Vec<keyturn_journal::NewEvent>,
    ) -> Result<u64, keyturn_journal::JournalError> {
        self.watch(&events);
        let copy = events.clone();
        let result = self.inner.append(stream, expected_version, events).await;
        if result.is_ok() {
            self.committed(stream, &copy);
        }
        result
    }

    async fn append_at_fenced(
        &self,
        stream: &keyturn_journal::StreamId,
        head: &keyturn_journal::StreamHead,
        events: Vec<keyturn_journal::NewEvent>,
        fence: Option<&keyturn_journal::Fence>,
    ) -> Result<keyturn_journal::StreamHead, keyturn_journal::JournalError> {
        self.watch(&events);
        let copy = events.clone();
        let result = self
            .inner
            .append_at_fenced(stream, head, events, fence)
            .await;
        if result.is_ok() {
            self.committed(stream, &copy);
        }
        result
    }

    async fn append_many_fenced(
        &self,
        appends: Vec<keyturn_journal::Append>,
        fence: Option<&keyturn_journal::Fence>,
    ) -> Vec<Result<keyturn_journal::StreamHead, keyturn_journal::JournalError>> {
        self.watch(appends.iter().flat_map(|a| &a.events));
        let copy = appends.clone();
        let results = self.inner.append_many_fenced(appends, fence).await;
        for (append, result) in copy.iter().zip(&results) {
            if result.is_ok() {
                self.committed(&append.stream, &append.events);
            }
        }
        results
    }

    async fn append_all_fenced(
        &self,
        appends: Vec<keyturn_journal::Append>,
        fence: Option<&keyturn_journal::Fence>,
    ) -> Result<Vec<keyturn_journal::StreamHead>, keyturn_journal::JournalError> {
        self.watch(appends.iter().flat_map(|a| &a.events));
        let copy = appends.clone();
        let result = self.inner.append_all_fenced(appends, fence).await;
        if result.is_ok() {
            for append in &copy {
                self.committed(&append.stream, &append.events);
            }
        }
        result
    }

    async fn read_stream(
        &self,
        stream: &keyturn_journal::StreamId,
    ) -> Result<Vec<keyturn_journal::Envelope>, keyturn_journal::JournalError> {
        self.inner.read_stream(stream).await
    }

    async fn read_campaign(
        &self,
        campaign: &str,
    ) -> Result<Vec<keyturn_journal::Envelope>, keyturn_journal::JournalError> {
        self.inner.read_campaign(campaign).await
    }

    async fn list_campaigns(&self) -> Result<Vec<String>, keyturn_journal::JournalError> {
        self.inner.list_campaigns().await
    }

    async fn events_for_access_key(
        &self,
        access_key_id: &str,
    ) -> Result<Vec<keyturn_journal::Envelope>, keyturn_journal::JournalError> {
        self.inner.events_for_access_key(access_key_id).await
    }

    async fn events_for_account(
        &self,
        account_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<keyturn_journal::Envelope>, keyturn_journal::JournalError> {
        self.inner.events_for_account(account_id, from, to).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}
