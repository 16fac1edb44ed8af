//! Seeding an emulator organization through the real AWS SDK.
//!
//! Everything an AWS API can do is done through the SDK (organization, OUs, accounts,
//! users, tags, keys, key status); only what no API can do (a key's creation date and
//! last use) goes through the emulator's control endpoint. The result is the ground
//! truth that tests compare keyturn's output with.

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_sdk_iam::types::{StatusType, Tag};
use aws_sdk_organizations::types::{CreateAccountState, OrganizationFeatureSet};
use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;

use crate::emulator::{Emulator, LastUsed};

/// The role Organizations creates in every new account.
pub const MEMBER_ROLE: &str = "OrganizationAccountAccessRole";

/// One key to create: its age, its last use, and whether it stays Active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// Days since creation.
    pub age_days: i64,
    /// Days since last use; `None` = never used.
    pub last_used_days_ago: Option<i64>,
    /// Active (true) or Inactive.
    pub active: bool,
}

impl KeySpec {
    /// An Active key of `age_days`, last used `used_days_ago` days ago (or never).
    pub fn active(age_days: i64, used_days_ago: Option<i64>) -> Self {
        Self {
            age_days,
            last_used_days_ago: used_days_ago,
            active: true,
        }
    }

    /// An Inactive key.
    pub fn inactive(age_days: i64, used_days_ago: Option<i64>) -> Self {
        Self {
            age_days,
            last_used_days_ago: used_days_ago,
            active: false,
        }
    }
}

/// One user to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    /// The user's name.
    pub name: String,
    /// Its tags.
    pub tags: Vec<(String, String)>,
    /// Its keys (at most two: IAM refuses a third).
    pub keys: Vec<KeySpec>,
}

impl UserSpec {
    /// A user with these keys and no tags.
    pub fn new(name: &str, keys: Vec<KeySpec>) -> Self {
        Self {
            name: name.to_owned(),
            tags: Vec::new(),
            keys,
        }
    }

    /// Adds a tag.
    pub fn tag(mut self, key: &str, value: &str) -> Self {
        self.tags.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// One member account to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSpec {
    /// The account's name.
    pub name: String,
    /// Its OU path below the root, e.g. `["workloads", "prod"]`; empty = the root.
    pub ou_path: Vec<String>,
    /// Its users.
    pub users: Vec<UserSpec>,
}

/// An organization to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgSpec {
    /// Users of the management account itself.
    pub management_users: Vec<UserSpec>,
    /// Member accounts.
    pub accounts: Vec<AccountSpec>,
}

/// A created key, including its secret (tests use it to sign as the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeededKey {
    /// The key id.
    pub access_key_id: String,
    /// The secret, for tests that simulate an application using the key.
    pub secret_access_key: String,
    /// The (backdated) creation time.
    pub created_at: DateTime<Utc>,
    /// The last use set, or `None` for never used.
    pub last_used: Option<LastUsed>,
    /// Active or not.
    pub active: bool,
}

/// A created user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeededUser {
    /// The user's name.
    pub name: String,
    /// Its tags.
    pub tags: Vec<(String, String)>,
    /// Its keys.
    pub keys: Vec<SeededKey>,
}

/// A created account (or the management account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeededAccount {
    /// The account id.
    pub id: String,
    /// The account's name.
    pub name: String,
    /// The OU path it was placed under.
    pub ou_path: Vec<String>,
    /// Its users.
    pub users: Vec<SeededUser>,
}

/// The created organization: the ground truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeededOrg {
    /// The root id (`r-…`).
    pub root_id: String,
    /// The management account.
    pub management: SeededAccount,
    /// OU ids by path ("workloads/prod").
    pub ous: BTreeMap<String, String>,
    /// Member accounts, in the order of the spec.
    pub accounts: Vec<SeededAccount>,
}

impl SeededOrg {
    /// The id of the OU at `path` ("a/b").
    pub fn ou(&self, path: &str) -> &str {
        self.ous
            .get(path)
            .unwrap_or_else(|| panic!("no OU {path:?} was seeded"))
    }

    /// The seeded account named `name`.
    pub fn account(&self, name: &str) -> &SeededAccount {
        self.accounts
            .iter()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("no account {name:?} was seeded"))
    }
}

/// Creates the organization, OUs, accounts, users and keys of `spec`, with key ages and
/// last uses relative to `now`.
pub async fn seed(emulator: &Emulator, spec: &OrgSpec, now: DateTime<Utc>) -> SeededOrg {
    let management_config = emulator.sdk_config().await;
    let org = aws_sdk_organizations::Client::new(&management_config);
    let created = org
        .create_organization()
        .feature_set(OrganizationFeatureSet::All)
        .send()
        .await
        .expect("CreateOrganization");
    let management_id = created
        .organization()
        .and_then(|o| o.master_account_id())
        .expect("management account id")
        .to_owned();
    let roots = org.list_roots().send().await.expect("ListRoots");
    let root_id = roots.roots()[0].id().expect("root id").to_owned();

    let mut ous = BTreeMap::new();
    for account in &spec.accounts {
        let mut parent = root_id.clone();
        for depth in 1..=account.ou_path.len() {
            let path = account.ou_path[..depth].join("/");
            if let Some(id) = ous.get(&path) {
                parent = String::clone(id);
                continue;
            }
            let out = org
                .create_organizational_unit()
                .parent_id(&parent)
                .name(&account.ou_path[depth - 1])
                .send()
                .await
                .expect("CreateOrganizationalUnit");
            parent = out
                .organizational_unit()
                .and_then(|o| o.id())
                .expect("OU id")
                .to_owned();
            ous.insert(path, parent.clone());
        }
    }

    let management_name = org
        .describe_account()
        .account_id(&management_id)
        .send()
        .await
        .expect("DescribeAccount")
        .account()
        .and_then(|a| a.name())
        .unwrap_or_default()
        .to_owned();
    let management = SeededAccount {
        id: management_id.clone(),
        name: management_name,
        ou_path: Vec::new(),
        users: seed_users(emulator, &management_config, &spec.management_users, now).await,
    };

    let accounts: Vec<SeededAccount> = futures::stream::iter(spec.accounts.iter().map(|account| {
        let org = org.clone();
        let root_id = root_id.clone();
        let ous = ous.clone();
        async move {
            let id = create_account(&org, &account.name).await;
            if !account.ou_path.is_empty() {
                org.move_account()
                    .account_id(&id)
                    .source_parent_id(&root_id)
                    .destination_parent_id(&ous[&account.ou_path.join("/")])
                    .send()
                    .await
                    .expect("MoveAccount");
            }
            let config = member_config(emulator, &id).await;
            let users = seed_users(emulator, &config, &account.users, now).await;
            SeededAccount {
                id,
                name: account.name.clone(),
                ou_path: account.ou_path.clone(),
                users,
            }
        }
    }))
    .buffered(8)
    .collect()
    .await;

    SeededOrg {
        root_id,
        management,
        ous,
        accounts,
    }
}

/// Creates a member account and waits until it exists.
pub async fn create_account(org: &aws_sdk_organizations::Client, name: &str) -> String {
    let out = org
        .create_account()
        .account_name(name)
        .email(format!("{name}@example.com"))
        .send()
        .await
        .expect("CreateAccount");
    let mut status = out
        .create_account_status()
        .cloned()
        .expect("CreateAccountStatus");
    loop {
        match status.state() {
            Some(CreateAccountState::Succeeded) => {
                return status.account_id().expect("account id").to_owned();
            }
            Some(CreateAccountState::Failed) => {
                panic!("CreateAccount {name} failed: {:?}", status.failure_reason())
            }
            _ => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let request = status.id().expect("request id").to_owned();
                status = org
                    .describe_create_account_status()
                    .create_account_request_id(request)
                    .send()
                    .await
                    .expect("DescribeCreateAccountStatus")
                    .create_account_status()
                    .cloned()
                    .expect("CreateAccountStatus");
            }
        }
    }
}

/// An SDK config signed as `OrganizationAccountAccessRole` in a member account.
pub async fn member_config(emulator: &Emulator, account_id: &str) -> SdkConfig {
    let management = emulator.sdk_config().await;
    let out = aws_sdk_sts::Client::new(&management)
        .assume_role()
        .role_arn(format!("arn:aws:iam::{account_id}:role/{MEMBER_ROLE}"))
        .role_session_name("keyturn-testbed")
        .send()
        .await
        .expect("AssumeRole");
    let c = out.credentials().expect("credentials");
    emulator
        .sdk_config_with(Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_owned()),
            None,
            "keyturn-testbed-member",
        ))
        .await
}

/// Creates users with their tags and keys, then backdates the keys.
pub async fn seed_users(
    emulator: &Emulator,
    config: &SdkConfig,
    users: &[UserSpec],
    now: DateTime<Utc>,
) -> Vec<SeededUser> {
    let iam = aws_sdk_iam::Client::new(config);
    let mut seeded = Vec::with_capacity(users.len());
    for user in users {
        assert!(user.keys.len() <= 2, "IAM allows at most two keys per user");
        let tags: Vec<Tag> = user
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build().expect("tag"))
            .collect();
        iam.create_user()
            .user_name(&user.name)
            .set_tags((!tags.is_empty()).then_some(tags))
            .send()
            .await
            .expect("CreateUser");
        let mut keys = Vec::new();
        for spec in &user.keys {
            let created = iam
                .create_access_key()
                .user_name(&user.name)
                .send()
                .await
                .expect("CreateAccessKey");
            let key = created.access_key().expect("access key");
            let created_at = now - Duration::days(spec.age_days);
            let last_used = spec
                .last_used_days_ago
                .map(|days| LastUsed::new(now - Duration::days(days), "s3", "us-east-1"));
            emulator
                .set_access_key(
                    key.access_key_id(),
                    Some(created_at),
                    Some(last_used.clone()),
                )
                .await;
            if !spec.active {
                iam.update_access_key()
                    .user_name(&user.name)
                    .access_key_id(key.access_key_id())
                    .status(StatusType::Inactive)
                    .send()
                    .await
                    .expect("UpdateAccessKey");
            }
            keys.push(SeededKey {
                access_key_id: key.access_key_id().to_owned(),
                secret_access_key: key.secret_access_key().to_owned(),
                created_at,
                last_used,
                active: spec.active,
            });
        }
        seeded.push(SeededUser {
            name: user.name.clone(),
            tags: user.tags.clone(),
            keys,
        });
    }
    seeded
}

/// A deterministic organization of `accounts` member accounts under a nested OU tree,
/// with a fixed mix of users and keys: old keys in use, old unused keys, never-used
/// keys, Inactive keys, users with zero, one and two keys, an excluded and an exempt user.
pub fn sample_org(accounts: usize) -> OrgSpec {
    let ou_paths: [&[&str]; 4] = [
        &["workloads", "prod"],
        &["workloads", "dev"],
        &["sandbox"],
        &[],
    ];
    let accounts = (0..accounts)
        .map(|i| {
            let users = match i % 4 {
                0 => vec![
                    UserSpec::new("app-deployer", vec![KeySpec::active(120, Some(1))]),
                    UserSpec::new("ci-runner", vec![KeySpec::active(30, Some(0))]),
                    UserSpec::new("report-reader", vec![KeySpec::active(200, None)]),
                    UserSpec::new("no-keys", vec![]),
                    UserSpec::new("breakglass-admin", vec![KeySpec::active(400, None)]),
                ],
                1 => vec![
                    UserSpec::new(
                        "etl",
                        vec![
                            KeySpec::active(95, Some(2)),
                            KeySpec::inactive(300, Some(150)),
                        ],
                    ),
                    UserSpec::new("backup", vec![KeySpec::active(10, Some(1))]),
                    UserSpec::new("legacy", vec![KeySpec::active(150, Some(60))]),
                    UserSpec::new("vendor", vec![KeySpec::active(180, Some(1))])
                        .tag("keyturn:exempt", "vendor-managed"),
                ],
                2 => vec![
                    UserSpec::new(
                        "twins",
                        vec![KeySpec::active(140, Some(1)), KeySpec::active(100, Some(1))],
                    ),
                    UserSpec::new("monitor", vec![KeySpec::active(91, Some(3))]),
                    UserSpec::new("fresh", vec![KeySpec::active(0, None)]),
                ],
                _ => vec![
                    UserSpec::new("svc-a", vec![KeySpec::active(89, Some(1))]),
                    UserSpec::new("svc-b", vec![KeySpec::inactive(60, Some(50))]),
                    UserSpec::new(
                        "svc-c",
                        vec![KeySpec::active(365, Some(1)), KeySpec::active(46, None)],
                    ),
                ],
            };
            AccountSpec {
                name: format!("acct-{i:03}"),
                ou_path: ou_paths[i % ou_paths.len()]
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect(),
                users,
            }
        })
        .collect();
    OrgSpec {
        management_users: vec![UserSpec::new(
            "org-automation",
            vec![KeySpec::active(100, Some(5))],
        )],
        accounts,
    }
}

/// The organization of `cargo xtask demo`: [`sample_org`]'s mix of users on 12 member
/// accounts of three teams, named for what they are and placed three OU levels deep
/// where they run production:
///
/// - `workloads/prod/<team>`: `<team>-prod` (an old key in use, an old key never used,
///   a recent key in use, a user without keys, a `breakglass-*` user);
/// - `workloads/dev`: `<team>-dev` (an old key in use next to an old Inactive one, a
///   recent key, an old key unused for 60 days, a vendor user exempt by tag);
/// - `sandbox`: `<team>-sandbox` (a user with two old keys, both in use; a key just over
///   90 days; a brand-new key);
/// - the root: `<team>-shared` (a key just under 90 days, an Inactive key, a user with
///   an old key in use and a second key never used);
///
/// plus `org-automation` in the management account (an old key in use). 46 users and
/// 52 keys in all.
pub fn demo_org() -> OrgSpec {
    let teams = ["payments", "search", "identity"];
    let mut spec = sample_org(teams.len() * 4);
    for (i, account) in spec.accounts.iter_mut().enumerate() {
        let team = teams[i / 4];
        let (name, ou_path): (String, &[&str]) = match i % 4 {
            0 => (format!("{team}-prod"), &["workloads", "prod", team]),
            1 => (format!("{team}-dev"), &["workloads", "dev"]),
            2 => (format!("{team}-sandbox"), &["sandbox"]),
            _ => (format!("{team}-shared"), &[]),
        };
        account.name = name;
        account.ou_path = ou_path.iter().map(|s| (*s).to_owned()).collect();
    }
    spec
}

/// The benchmark's organization (`cargo xtask bench`): `accounts` member accounts at the
/// root, five users each and a fixed mix of keys, 7.5 keys an account on average (8 in
/// even accounts, 7 in odd ones: 750 keys for 100 accounts). The management account has
/// no users.
///
/// The mix is chosen so that Cloud Custodian's report (Active keys older than 90 days)
/// and keyturn's retirement of unused keys (Active, unused for 45 days) select the same
/// keys, and so that `remove-keys` (`disable: true`, `age: 90`) touches no other key of a
/// matched user: every Active key older than 90 days is unused, an old Inactive key only
/// sits beside a young Active one, and the other key of a matched user is young.
/// 2.5 keys an account are selected by both (250 for 100 accounts): even accounts have
/// three (200 days never used, 120 days last used 60 days ago, 400 days never used), odd
/// ones two (95 days last used 50 days ago, 150 days never used). The other keys are
/// young and in use, young and never used (30 days), or Inactive.
pub fn bench_org(accounts: usize) -> OrgSpec {
    let accounts = (0..accounts)
        .map(|i| {
            let users = if i % 2 == 0 {
                vec![
                    UserSpec::new(
                        "app-1",
                        vec![KeySpec::active(200, None), KeySpec::active(20, Some(1))],
                    ),
                    UserSpec::new(
                        "app-2",
                        vec![KeySpec::active(120, Some(60)), KeySpec::active(10, Some(0))],
                    ),
                    UserSpec::new(
                        "app-3",
                        vec![
                            KeySpec::inactive(300, Some(150)),
                            KeySpec::active(30, Some(1)),
                        ],
                    ),
                    UserSpec::new("svc-1", vec![KeySpec::active(60, Some(2))]),
                    UserSpec::new("svc-2", vec![KeySpec::active(400, None)]),
                ]
            } else {
                vec![
                    UserSpec::new(
                        "app-1",
                        vec![KeySpec::active(95, Some(50)), KeySpec::active(5, Some(0))],
                    ),
                    UserSpec::new(
                        "app-2",
                        vec![
                            KeySpec::active(45, Some(1)),
                            KeySpec::inactive(200, Some(100)),
                        ],
                    ),
                    UserSpec::new("app-3", vec![KeySpec::active(150, None)]),
                    UserSpec::new("svc-1", vec![KeySpec::active(80, Some(3))]),
                    UserSpec::new("svc-2", vec![KeySpec::active(30, None)]),
                ]
            };
            AccountSpec {
                name: format!("bench-{i:04}"),
                ou_path: Vec::new(),
                users,
            }
        })
        .collect();
    OrgSpec {
        management_users: Vec::new(),
        accounts,
    }
}
