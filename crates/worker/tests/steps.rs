//! The rotation steps against the local AWS emulator (moto behind keyturn's wrapper),
//! through the real AWS SDK. Each test starts its own emulator, so tests never see each
//! other's users, keys or secrets. Two paths moto cannot produce (IAM's propagation
//! delay, a read-back that holds another key) are driven by a stub STS endpoint on
//! loopback and by `aws-smithy-mocks`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput;
use aws_sdk_secretsmanager::operation::put_secret_value::PutSecretValueOutput;
use aws_sdk_secretsmanager::operation::tag_resource::TagResourceOutput;
use aws_smithy_mocks::{MockResponseInterceptor, RuleMode, create_mock_http_client, mock};
use chrono::{TimeZone, Utc};
use keyturn_planner::inventory::KeyStatus;
use keyturn_planner::{AccessKeyId, AccountId, CampaignName, UserName};
use keyturn_testbed::seed::{AccountSpec, KeySpec, OrgSpec, UserSpec, member_config, seed};
use keyturn_testbed::{Emulator, EmulatorOptions, FaultRule, MANAGEMENT_ACCOUNT_ID};
use keyturn_worker::AwsFailure;
use keyturn_worker::secret::{NewAccessKey, SecretAccessKey};
use keyturn_worker::steps::{
    CALLER_MISMATCH, CAMPAIGN_TAG, DELIVERY_MISMATCH, Deletion, Delivery, DeliveryMeta,
    SecretTarget, USER_TAG, Voiding, caller_access_key_id, client_request_token, create_access_key,
    delete_access_key, deliver_secret, find_delivery, list_access_keys, read_delivered_key,
    secrets_manager_client, set_access_key_status, verify_access_key, void_delivery,
};

fn user(name: &str) -> UserName {
    UserName::new(name).unwrap()
}

fn campaign(name: &str) -> CampaignName {
    CampaignName::new(name).unwrap()
}

fn emulator() -> Emulator {
    Emulator::start(EmulatorOptions::default())
}

/// Creates IAM users directly through the SDK.
async fn create_users(config: &SdkConfig, names: &[&str]) {
    let iam = aws_sdk_iam::Client::new(config);
    for name in names {
        iam.create_user().user_name(*name).send().await.unwrap();
    }
}

/// The user's keys as the SDK lists them: (id, status), without keyturn's code.
async fn sdk_keys(config: &SdkConfig, user: &str) -> Vec<(String, String)> {
    aws_sdk_iam::Client::new(config)
        .list_access_keys()
        .user_name(user)
        .send()
        .await
        .unwrap()
        .access_key_metadata()
        .iter()
        .map(|k| {
            (
                k.access_key_id().unwrap().to_owned(),
                k.status().unwrap().as_str().to_owned(),
            )
        })
        .collect()
}

/// Asserts that no text shown for `failure` (Display, Debug, message) holds a secret.
fn assert_no_secret(failure: &AwsFailure, secrets: &[&str]) {
    for shown in [
        failure.to_string(),
        format!("{failure:?}"),
        failure.message.clone(),
    ] {
        for secret in secrets {
            assert!(!shown.contains(secret), "a secret leaked into {shown:?}");
        }
    }
}

fn meta(account: &str, user_name: &str, campaign_name: &str) -> DeliveryMeta {
    DeliveryMeta {
        account: AccountId::new(account).unwrap(),
        user: user(user_name),
        campaign: campaign(campaign_name),
        rotated_at: Utc.with_ymd_and_hms(2025, 6, 1, 12, 30, 0).unwrap(),
    }
}

fn target(name: &str, region: Option<&str>) -> SecretTarget {
    SecretTarget {
        name: name.to_owned(),
        region: region.map(str::to_owned),
    }
}

async fn version_count(sm: &aws_sdk_secretsmanager::Client, name: &str) -> usize {
    sm.list_secret_version_ids()
        .secret_id(name)
        .send()
        .await
        .unwrap()
        .versions()
        .len()
}

async fn tags(sm: &aws_sdk_secretsmanager::Client, name: &str) -> Vec<(String, String)> {
    let mut tags: Vec<_> = sm
        .describe_secret()
        .secret_id(name)
        .send()
        .await
        .unwrap()
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_owned(),
                t.value().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    tags.sort();
    tags
}

/// The current value of the secret, parsed.
async fn current_value(sm: &aws_sdk_secretsmanager::Client, name: &str) -> serde_json::Value {
    let out = sm.get_secret_value().secret_id(name).send().await.unwrap();
    serde_json::from_str(out.secret_string().unwrap()).unwrap()
}

#[tokio::test]
async fn create_makes_one_key_whose_secret_is_never_shown_and_a_third_key_is_refused() {
    let emu = emulator();
    let config = emu.sdk_config().await;
    create_users(&config, &["alice"]).await;
    let iam = aws_sdk_iam::Client::new(&config);
    let alice = user("alice");

    let before = Utc::now() - chrono::Duration::seconds(5);
    let key = create_access_key(&iam, &alice).await.unwrap();
    let secret = key.secret.expose().to_owned();
    assert!(secret.len() >= 16, "moto returns a real-looking secret");
    assert_eq!(
        sdk_keys(&config, "alice").await,
        vec![(key.access_key_id.to_string(), "Active".to_owned())]
    );
    assert!(key.created_at >= before && key.created_at <= Utc::now());

    let listed = list_access_keys(&iam, &alice).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].access_key_id, key.access_key_id);
    assert_eq!(listed[0].status, KeyStatus::Active);
    assert_eq!(listed[0].created_at.timestamp(), key.created_at.timestamp());

    for shown in [
        format!("{key:?}"),
        format!("{key:#?}"),
        format!("{key}"),
        format!("{:?}", key.secret),
        format!("{}", key.secret),
    ] {
        assert!(!shown.contains(&secret), "the secret leaked into {shown:?}");
    }
    assert!(format!("{key:?}").contains(key.access_key_id.as_str()));
    assert_eq!(format!("{key}"), key.access_key_id.as_str());

    let second = create_access_key(&iam, &alice).await.unwrap();
    let third = create_access_key(&iam, &alice).await.unwrap_err();
    assert_eq!(third.code, "LimitExceeded", "{third}");
    assert_eq!(third.operation, "CreateAccessKey");
    assert!(!third.is_transient());
    assert_no_secret(&third, &[&secret, second.secret.expose()]);
    assert_eq!(sdk_keys(&config, "alice").await.len(), 2);
}

#[tokio::test]
async fn delivery_lands_in_the_member_account_as_one_secret_per_user_with_a_version_per_rotation() {
    let emu = emulator();
    let org = seed(
        &emu,
        &OrgSpec {
            management_users: Vec::new(),
            accounts: vec![AccountSpec {
                name: "workload".to_owned(),
                ou_path: Vec::new(),
                users: vec![UserSpec::new("app", vec![KeySpec::active(120, Some(1))])],
            }],
        },
        Utc::now(),
    )
    .await;
    let account = org.account("workload");
    let old_key = account.users[0].keys[0].access_key_id.clone();
    let member = member_config(&emu, &account.id).await;
    let management = emu.sdk_config().await;
    let iam = aws_sdk_iam::Client::new(&member);
    let sm = secrets_manager_client(&member, None);
    let management_sm = secrets_manager_client(&management, None);
    let app = user("app");
    let name = "keyturn/workload/app";
    let target = target(name, None);

    // First rotation: the secret does not exist yet.
    let key1 = create_access_key(&iam, &app).await.unwrap();
    let meta1 = meta(&account.id, "app", "spring-2025");
    let token1 = client_request_token("spring-2025", &key1.access_key_id, 0);
    let first = deliver_secret(&sm, &target, &key1, &meta1, &token1)
        .await
        .unwrap();
    assert_eq!(first.version_id, token1);
    assert!(
        first.secret_arn.starts_with(&format!(
            "arn:aws:secretsmanager:us-east-1:{}:secret:",
            account.id
        )),
        "{}",
        first.secret_arn
    );
    let value = current_value(&sm, name).await;
    assert_eq!(value["AccessKeyId"], key1.access_key_id.as_str());
    assert_eq!(value["SecretAccessKey"], key1.secret.expose());
    assert_eq!(value["UserName"], "app");
    assert_eq!(value["AccountId"], account.id.as_str());
    assert_eq!(value["Campaign"], "spring-2025");
    assert_eq!(value["RotatedAt"], "2025-06-01T12:30:00Z");
    assert_eq!(
        tags(&sm, name).await,
        vec![
            (CAMPAIGN_TAG.to_owned(), "spring-2025".to_owned()),
            (USER_TAG.to_owned(), "app".to_owned()),
        ]
    );
    // The management account has no such secret.
    let elsewhere = management_sm
        .describe_secret()
        .secret_id(name)
        .send()
        .await
        .unwrap_err();
    assert_eq!(elsewhere.code(), Some("ResourceNotFoundException"));

    // The same call again (a retry after a crash) stores nothing new.
    let again = deliver_secret(&sm, &target, &key1, &meta1, &token1)
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(version_count(&sm, name).await, 1);
    // A retry whose meta differs (a new rotated_at) finds its key already in the
    // version the token names: the same delivery, nothing new stored.
    let later = DeliveryMeta {
        rotated_at: meta1.rotated_at + chrono::Duration::minutes(5),
        ..meta1.clone()
    };
    let retried = deliver_secret(&sm, &target, &key1, &later, &token1)
        .await
        .unwrap();
    assert_eq!(retried, first);
    assert_eq!(version_count(&sm, name).await, 1);
    assert_eq!(
        current_value(&sm, name).await["RotatedAt"],
        "2025-06-01T12:30:00Z"
    );

    // A resumed run reads the key back from the version and can verify it.
    let read = read_delivered_key(&sm, &target, &token1).await.unwrap();
    assert_eq!(read.access_key_id, key1.access_key_id);
    assert_eq!(read.secret.expose(), key1.secret.expose());
    assert!(!format!("{read:?}").contains(key1.secret.expose()));
    assert_eq!(
        verify_access_key(&member, &read, &app, Duration::from_secs(10))
            .await
            .unwrap(),
        format!("arn:aws:iam::{}:user/app", account.id)
    );
    let unknown_version = client_request_token("spring-2025", &key1.access_key_id, 7);
    let missing = read_delivered_key(&sm, &target, &unknown_version)
        .await
        .unwrap_err();
    assert_eq!(missing.code, "ResourceNotFoundException", "{missing}");

    // The next rotation, by another campaign, adds a version to the same secret.
    aws_sdk_iam::Client::new(&member)
        .delete_access_key()
        .user_name("app")
        .access_key_id(&old_key)
        .send()
        .await
        .unwrap();
    let key2 = create_access_key(&iam, &app).await.unwrap();
    let meta2 = meta(&account.id, "app", "autumn-2025");
    let token2 = client_request_token("autumn-2025", &key2.access_key_id, 0);
    let second = deliver_secret(&sm, &target, &key2, &meta2, &token2)
        .await
        .unwrap();
    assert_eq!(second.secret_arn, first.secret_arn, "one secret per user");
    assert_eq!(second.version_id, token2);
    assert_eq!(version_count(&sm, name).await, 2);
    assert_eq!(
        current_value(&sm, name).await["AccessKeyId"],
        key2.access_key_id.as_str()
    );
    assert_eq!(
        tags(&sm, name).await,
        vec![
            (CAMPAIGN_TAG.to_owned(), "autumn-2025".to_owned()),
            (USER_TAG.to_owned(), "app".to_owned()),
        ]
    );
    deliver_secret(&sm, &target, &key2, &meta2, &token2)
        .await
        .unwrap();
    assert_eq!(version_count(&sm, name).await, 2);

    // A token reused with another value is refused, and nothing is stored.
    let reused = deliver_secret(&sm, &target, &key2, &meta2, &token1)
        .await
        .unwrap_err();
    assert_eq!(reused.code, "ResourceExistsException", "{reused}");
    assert!(
        reused.message.contains(key1.access_key_id.as_str()),
        "{reused}"
    );
    assert_no_secret(&reused, &[key1.secret.expose(), key2.secret.expose()]);
    assert_eq!(version_count(&sm, name).await, 2);

    // Reconciliation finds each version by its token, and nothing for the unknown.
    assert_eq!(
        find_delivery(&sm, &target, &token1).await.unwrap(),
        Some((first.clone(), key1.access_key_id.clone()))
    );
    assert_eq!(
        find_delivery(&sm, &target, &token2).await.unwrap(),
        Some((second.clone(), key2.access_key_id.clone()))
    );
    let unknown = client_request_token("spring-2025", &key1.access_key_id, 1);
    assert_eq!(find_delivery(&sm, &target, &unknown).await.unwrap(), None);
    let missing = self::target("keyturn/workload/nobody", None);
    assert_eq!(find_delivery(&sm, &missing, &token1).await.unwrap(), None);
    assert_eq!(
        find_delivery(&management_sm, &target, &token1)
            .await
            .unwrap(),
        None,
        "the management account holds no version"
    );
}

/// A delivery given up (its key about to be deleted as an orphan) is voided first, so a
/// request under its token that was still in flight can no longer land: the late
/// PutSecretValue is refused and the secret's current version stays the one delivered
/// since. A missing secret is created with the void, so the same holds when the
/// stalled request was the secret's first delivery.
#[tokio::test]
async fn a_voided_delivery_can_no_longer_land_and_never_becomes_current() {
    let emu = emulator();
    let config = emu.sdk_config().await;
    create_users(&config, &["alice", "bob"]).await;
    let iam = aws_sdk_iam::Client::new(&config);
    let sm = secrets_manager_client(&config, None);
    let meta = meta(MANAGEMENT_ACCOUNT_ID, "alice", "c1");

    for (who, exists) in [("alice", true), ("bob", false)] {
        let name = format!("keyturn/{who}");
        let target = target(&name, None);
        let earlier = create_access_key(&iam, &user(who)).await.unwrap();
        if exists {
            let token = client_request_token("c1", &earlier.access_key_id, 1);
            deliver_secret(&sm, &target, &earlier, &meta, &token)
                .await
                .unwrap();
        }
        // The stalled request's key and token: its delivery was not found, so it is voided.
        let stalled = create_access_key(&iam, &user(who)).await.unwrap();
        let token = client_request_token("c1", &stalled.access_key_id, 2);
        let void = |key| void_delivery(&sm, &target, &token, key, &meta);
        assert_eq!(void(&stalled.access_key_id).await.unwrap(), Voiding::Voided);
        assert_eq!(
            void(&stalled.access_key_id).await.unwrap(),
            Voiding::Voided,
            "{who}: the same void again is accepted"
        );
        assert_eq!(find_delivery(&sm, &target, &token).await.unwrap(), None);
        if exists {
            assert_eq!(
                current_value(&sm, &name).await["AccessKeyId"],
                earlier.access_key_id.as_str(),
                "{who}: the void never becomes current"
            );
        }
        // The stalled request lands: refused, and the current version does not move.
        let late = deliver_secret(&sm, &target, &stalled, &meta, &token)
            .await
            .unwrap_err();
        assert_eq!(late.code, "ResourceExistsException", "{who}: {late:?}");
        assert_no_secret(&late, &[stalled.secret.expose()]);
        // The next delivery (a new key, a new token) becomes current.
        set_access_key_status(
            &iam,
            &user(who),
            &stalled.access_key_id,
            KeyStatus::Inactive,
        )
        .await
        .unwrap();
        delete_access_key(&iam, &user(who), &stalled.access_key_id)
            .await
            .unwrap();
        let next = create_access_key(&iam, &user(who)).await.unwrap();
        let next_token = client_request_token("c1", &next.access_key_id, 3);
        deliver_secret(&sm, &target, &next, &meta, &next_token)
            .await
            .unwrap();
        assert_eq!(
            current_value(&sm, &name).await["AccessKeyId"],
            next.access_key_id.as_str(),
            "{who}"
        );
        // A token a delivery already holds is not voided.
        assert_eq!(
            void_delivery(&sm, &target, &next_token, &next.access_key_id, &meta)
                .await
                .unwrap(),
            Voiding::Taken
        );
        assert!(
            find_delivery(&sm, &target, &next_token)
                .await
                .unwrap()
                .is_some()
        );
    }
}

#[tokio::test]
async fn a_target_region_overrides_the_client_region() {
    let emu = emulator();
    let config = emu.sdk_config().await;
    create_users(&config, &["alice"]).await;
    let key = create_access_key(&aws_sdk_iam::Client::new(&config), &user("alice"))
        .await
        .unwrap();
    let us = secrets_manager_client(&config, None);
    let eu = secrets_manager_client(&config, Some("eu-west-1"));
    assert_eq!(eu.config().region().unwrap().as_ref(), "eu-west-1");
    let name = "keyturn/alice";
    let in_eu = target(name, Some("eu-west-1"));
    let token = client_request_token("c1", &key.access_key_id, 0);

    // A client of the config's region, given an EU target, writes in the EU.
    let delivery = deliver_secret(
        &us,
        &in_eu,
        &key,
        &meta(MANAGEMENT_ACCOUNT_ID, "alice", "c1"),
        &token,
    )
    .await
    .unwrap();
    assert!(
        delivery.secret_arn.starts_with(&format!(
            "arn:aws:secretsmanager:eu-west-1:{MANAGEMENT_ACCOUNT_ID}:"
        )),
        "{}",
        delivery.secret_arn
    );
    eu.describe_secret().secret_id(name).send().await.unwrap();
    let not_in_us = us
        .describe_secret()
        .secret_id(name)
        .send()
        .await
        .unwrap_err();
    assert_eq!(not_in_us.code(), Some("ResourceNotFoundException"));

    assert_eq!(
        find_delivery(&us, &in_eu, &token).await.unwrap(),
        Some((delivery, key.access_key_id.clone()))
    );
    assert_eq!(
        find_delivery(&us, &target(name, None), &token)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn verification_names_the_user_and_refuses_a_deleted_key_within_the_bound() {
    let emu = emulator();
    let org = seed(
        &emu,
        &OrgSpec {
            management_users: vec![UserSpec::new("alice", Vec::new())],
            accounts: vec![AccountSpec {
                name: "workload".to_owned(),
                ou_path: Vec::new(),
                users: vec![UserSpec::new("app", Vec::new())],
            }],
        },
        Utc::now(),
    )
    .await;
    let config = emu.sdk_config().await;
    let iam = aws_sdk_iam::Client::new(&config);
    let alice = user("alice");

    let key = create_access_key(&iam, &alice).await.unwrap();
    let arn = verify_access_key(&config, &key, &alice, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        arn,
        format!("arn:aws:iam::{MANAGEMENT_ACCOUNT_ID}:user/alice")
    );

    // A member account's user, verified from that account's configuration.
    let account = org.account("workload");
    let member = member_config(&emu, &account.id).await;
    let app = user("app");
    let member_key = create_access_key(&aws_sdk_iam::Client::new(&member), &app)
        .await
        .unwrap();
    let arn = verify_access_key(&member, &member_key, &app, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(arn, format!("arn:aws:iam::{}:user/app", account.id));

    // A key checked against the wrong user fails at once.
    let started = Instant::now();
    let wrong = verify_access_key(&config, &key, &user("bob"), Duration::from_secs(10))
        .await
        .unwrap_err();
    assert_eq!(wrong.code, CALLER_MISMATCH, "{wrong}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A deleted key fails with a code within the bound. moto signs an unknown key as
    // its default caller (`arn:aws:sts::123456789012:user/moto`), hence CallerMismatch;
    // AWS answers InvalidClientTokenId, retried until the bound (see the stub tests).
    delete_access_key(&iam, &alice, &key.access_key_id)
        .await
        .unwrap();
    let max_wait = Duration::from_secs(2);
    let started = Instant::now();
    let deleted = verify_access_key(&config, &key, &alice, max_wait)
        .await
        .unwrap_err();
    assert!(
        [CALLER_MISMATCH, "InvalidClientTokenId"].contains(&deleted.code.as_str()),
        "{deleted}"
    );
    assert!(started.elapsed() < max_wait + Duration::from_secs(6));
    assert_no_secret(&deleted, &[key.secret.expose()]);
}

/// A stub STS endpoint on loopback: answer `n` (0-based) is `answer(n)` as (HTTP
/// status, XML body). It records the access key id each request was signed with.
struct StubSts {
    endpoint: String,
    signed_with: Arc<Mutex<Vec<String>>>,
}

impl StubSts {
    fn start(answer: impl Fn(usize) -> (u16, String) + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let signed_with = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&signed_with);
        // The thread ends with the test process; it only ever serves loopback.
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { break };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(value) = lower.strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                    if lower.starts_with("authorization:")
                        && let Some(rest) = line.split("Credential=").nth(1)
                    {
                        let id = rest.split('/').next().unwrap_or_default().to_owned();
                        record.lock().unwrap().push(id);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let (status, xml) = answer(n);
                let response = format!(
                    "HTTP/1.1 {status} Stub\r\ncontent-type: text/xml\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{xml}",
                    xml.len()
                );
                let _ = stream.write_all(response.as_bytes());
            }
        });
        Self {
            endpoint,
            signed_with,
        }
    }

    async fn config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new(
                "AKIDCALLER",
                "caller-secret",
                None,
                None,
                "test",
            ))
            .load()
            .await
    }

    fn requests(&self) -> Vec<String> {
        self.signed_with.lock().unwrap().clone()
    }
}

fn sts_error(code: &str) -> (u16, String) {
    (
        403,
        format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error>\
             <Type>Sender</Type><Code>{code}</Code><Message>The security token included in \
             the request is invalid.</Message></Error><RequestId>r</RequestId></ErrorResponse>"
        ),
    )
}

fn sts_identity(arn: &str) -> (u16, String) {
    (
        200,
        format!(
            "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
             <GetCallerIdentityResult><Arn>{arn}</Arn><UserId>AIDAEXAMPLE</UserId>\
             <Account>123456789012</Account></GetCallerIdentityResult><ResponseMetadata>\
             <RequestId>r</RequestId></ResponseMetadata></GetCallerIdentityResponse>"
        ),
    )
}

const STUB_SECRET: &str = "stubSecretKeyThatMustNeverBeShown0123456";

fn stub_key() -> NewAccessKey {
    NewAccessKey {
        access_key_id: AccessKeyId::new("AKIAIOSFODNN7EXAMPLE").unwrap(),
        secret: SecretAccessKey::new(STUB_SECRET.to_owned()),
        created_at: Utc::now(),
    }
}

#[tokio::test]
async fn verification_retries_through_iam_propagation_signed_with_the_new_key() {
    let stub = StubSts::start(|n| {
        if n < 2 {
            sts_error("InvalidClientTokenId")
        } else {
            sts_identity("arn:aws:iam::123456789012:user/ops/alice")
        }
    });
    let started = Instant::now();
    let arn = verify_access_key(
        &stub.config().await,
        &stub_key(),
        &user("alice"),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(arn, "arn:aws:iam::123456789012:user/ops/alice");
    assert_eq!(stub.requests(), vec!["AKIAIOSFODNN7EXAMPLE"; 3]);
    // Two pauses: 250 ms, then 500 ms.
    assert!(started.elapsed() >= Duration::from_millis(700));
}

#[tokio::test]
async fn verification_gives_up_at_the_bound_with_the_aws_code() {
    let stub = StubSts::start(|_| sts_error("InvalidClientTokenId"));
    let max_wait = Duration::from_millis(1500);
    let started = Instant::now();
    let failure = verify_access_key(&stub.config().await, &stub_key(), &user("alice"), max_wait)
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(failure.code, "InvalidClientTokenId", "{failure}");
    assert_eq!(failure.operation, "GetCallerIdentity");
    assert!(waited >= max_wait, "{waited:?}");
    assert!(waited < max_wait + Duration::from_secs(2), "{waited:?}");
    assert!(stub.requests().len() >= 3, "{:?}", stub.requests());
    assert!(
        failure.message.contains("AKIAIOSFODNN7EXAMPLE"),
        "{failure}"
    );
    assert_no_secret(&failure, &[STUB_SECRET]);
}

#[tokio::test]
async fn verification_does_not_retry_other_refusals() {
    let stub = StubSts::start(|_| sts_error("OptInRequired"));
    let failure = verify_access_key(
        &stub.config().await,
        &stub_key(),
        &user("alice"),
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    assert_eq!(failure.code, "OptInRequired");
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn status_and_deletion_act_on_the_named_key_of_the_named_user_only() {
    let emu = emulator();
    let config = emu.sdk_config().await;
    create_users(&config, &["alice", "bob"]).await;
    let iam = aws_sdk_iam::Client::new(&config);
    let (alice, bob) = (user("alice"), user("bob"));
    let a1 = create_access_key(&iam, &alice).await.unwrap().access_key_id;
    let a2 = create_access_key(&iam, &alice).await.unwrap().access_key_id;
    let b1 = create_access_key(&iam, &bob).await.unwrap().access_key_id;
    let status_of = |keys: &[(String, String)], id: &AccessKeyId| {
        keys.iter()
            .find(|(k, _)| k == id.as_str())
            .map(|(_, s)| s.clone())
    };

    set_access_key_status(&iam, &alice, &a1, KeyStatus::Inactive)
        .await
        .unwrap();
    let keys = sdk_keys(&config, "alice").await;
    assert_eq!(status_of(&keys, &a1).as_deref(), Some("Inactive"));
    assert_eq!(status_of(&keys, &a2).as_deref(), Some("Active"));
    let listed = list_access_keys(&iam, &alice).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|k| (k.access_key_id.clone(), k.status))
            .collect::<Vec<_>>(),
        vec![
            (a1.clone(), KeyStatus::Inactive),
            (a2.clone(), KeyStatus::Active)
        ]
    );
    // Idempotent, and reversible (rollback).
    set_access_key_status(&iam, &alice, &a1, KeyStatus::Inactive)
        .await
        .unwrap();
    set_access_key_status(&iam, &alice, &a1, KeyStatus::Active)
        .await
        .unwrap();
    assert_eq!(
        status_of(&sdk_keys(&config, "alice").await, &a1).as_deref(),
        Some("Active")
    );

    // Bob's key named with Alice's name: refused, Bob's key untouched.
    let refused = set_access_key_status(&iam, &alice, &b1, KeyStatus::Inactive)
        .await
        .unwrap_err();
    assert_eq!(
        (refused.operation, refused.code.as_str()),
        ("UpdateAccessKey", "NoSuchEntity")
    );
    let refused = delete_access_key(&iam, &alice, &b1).await.unwrap_err();
    assert_eq!(
        (refused.operation, refused.code.as_str()),
        ("DeleteAccessKey", "NoSuchEntity")
    );
    assert!(refused.message.contains("bob"), "{refused}");
    let refused = delete_access_key(&iam, &user("ghost"), &b1)
        .await
        .unwrap_err();
    assert_eq!(refused.code, "NoSuchEntity");
    assert_eq!(
        sdk_keys(&config, "bob").await,
        vec![(b1.to_string(), "Active".to_owned())]
    );

    // Deleting twice: the second time the key is already gone.
    assert_eq!(
        delete_access_key(&iam, &alice, &a1).await.unwrap(),
        Deletion::Deleted
    );
    assert_eq!(
        delete_access_key(&iam, &alice, &a1).await.unwrap(),
        Deletion::AlreadyGone
    );
    assert_eq!(
        sdk_keys(&config, "alice").await,
        vec![(a2.to_string(), "Active".to_owned())]
    );

    // A user that is gone: its keys are gone too; listing it is NoSuchEntity.
    iam.delete_access_key()
        .user_name("alice")
        .access_key_id(a2.as_str())
        .send()
        .await
        .unwrap();
    iam.delete_user().user_name("alice").send().await.unwrap();
    assert_eq!(
        delete_access_key(&iam, &alice, &a2).await.unwrap(),
        Deletion::AlreadyGone
    );
    let gone = list_access_keys(&iam, &alice).await.unwrap_err();
    assert_eq!(
        (gone.operation, gone.code.as_str()),
        ("ListAccessKeys", "NoSuchEntity")
    );
    let gone = set_access_key_status(&iam, &alice, &a2, KeyStatus::Inactive)
        .await
        .unwrap_err();
    assert_eq!(gone.code, "NoSuchEntity");
}

/// CreateAccessKey is repeated after throttling (which proves IAM did nothing), up to
/// `CREATE_ATTEMPTS` requests, and never after an answer that may have taken effect.
#[tokio::test]
async fn a_throttled_create_is_repeated_and_creates_exactly_one_key_but_a_server_error_is_not() {
    let emu = emulator();
    let config = emu.sdk_config().await;
    create_users(&config, &["alice", "bob", "carol"]).await;
    let iam = aws_sdk_iam::Client::new(&config);
    emu.set_faults(&[FaultRule::throttle()
        .service("iam")
        .action("CreateAccessKey")
        .count(2)])
        .await;
    emu.reset_counters().await;

    let key = create_access_key(&iam, &user("alice")).await.unwrap();
    assert_eq!(
        sdk_keys(&config, "alice").await,
        vec![(key.access_key_id.to_string(), "Active".to_owned())]
    );
    let faults = emu.faults().await;
    assert_eq!(faults[0].fired, 2);
    assert_eq!(emu.counters().await.by_action("iam", "CreateAccessKey"), 3);

    // Throttled on every request it may make: a transient failure, and no key.
    emu.set_faults(&[FaultRule::throttle()
        .service("iam")
        .action("CreateAccessKey")
        .count(u64::from(keyturn_worker::steps::CREATE_ATTEMPTS))])
        .await;
    emu.reset_counters().await;
    let throttled = create_access_key(&iam, &user("bob")).await.unwrap_err();
    assert_eq!(throttled.code, "Throttling", "{throttled}");
    assert!(throttled.is_transient());
    assert!(sdk_keys(&config, "bob").await.is_empty());
    assert_eq!(
        emu.counters().await.by_action("iam", "CreateAccessKey"),
        u64::from(keyturn_worker::steps::CREATE_ATTEMPTS)
    );

    // A server error may have taken effect: returned at once, after one request.
    emu.set_faults(&[FaultRule::error(500)
        .service("iam")
        .action("CreateAccessKey")
        .count(1)])
        .await;
    emu.reset_counters().await;
    let failed = create_access_key(&iam, &user("carol")).await.unwrap_err();
    assert!(failed.is_transient(), "{failed}");
    assert_eq!(emu.counters().await.by_action("iam", "CreateAccessKey"), 1);
}

/// The delivery's client retries patiently (`keyturn_journal::patient_retry_config`):
/// a secret throttled seven times in a row, past the six attempts of keyturn's other
/// calls, is still stored, once, so the replacement it belongs to is kept.
#[tokio::test]
async fn a_delivery_throttled_past_six_attempts_still_stores_one_version() {
    let emu = emulator();
    let config = emu.sdk_config().await;
    create_users(&config, &["app"]).await;
    let iam = aws_sdk_iam::Client::new(&config);
    let sm = secrets_manager_client(&config, None);
    let key = create_access_key(&iam, &user("app")).await.unwrap();
    let name = "keyturn/throttled/app";
    emu.set_faults(&[
        FaultRule::throttle()
            .service("secretsmanager")
            .action("CreateSecret")
            .count(7),
        FaultRule::throttle()
            .service("secretsmanager")
            .action("GetSecretValue")
            .count(7),
    ])
    .await;

    let token = client_request_token("spring-2025", &key.access_key_id, 1);
    let delivery = deliver_secret(
        &sm,
        &target(name, None),
        &key,
        &meta("123456789012", "app", "spring-2025"),
        &token,
    )
    .await
    .unwrap();
    assert_eq!(delivery.version_id, token);
    let fired: Vec<u64> = emu.faults().await.iter().map(|f| f.fired).collect();
    assert_eq!(fired, [7, 7], "every injected fault was met and retried");
    emu.clear_faults().await;
    assert_eq!(version_count(&sm, name).await, 1);
    assert_eq!(
        current_value(&sm, name).await["AccessKeyId"],
        key.access_key_id.as_str()
    );
}

#[test]
fn client_request_tokens_are_deterministic_distinct_and_valid() {
    let key = AccessKeyId::new("AKIAIOSFODNN7EXAMPLE").unwrap();
    let other = AccessKeyId::new("AKIAI44QH8DHBEXAMPLE").unwrap();
    let token = client_request_token("spring-2025", &key, 0);
    assert_eq!(token, client_request_token("spring-2025", &key, 0));
    assert_eq!(token.len(), 64);
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    let all = [
        token.clone(),
        client_request_token("spring-2025", &key, 1),
        client_request_token("spring-2025", &other, 0),
        client_request_token("autumn-2025", &key, 0),
    ];
    for (i, a) in all.iter().enumerate() {
        assert!((32..=64).contains(&a.len()));
        for b in &all[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

#[tokio::test]
async fn the_callers_own_user_key_is_recognised() {
    let emu = emulator();
    let org = seed(
        &emu,
        &OrgSpec {
            management_users: vec![UserSpec::new("automation", Vec::new())],
            accounts: vec![AccountSpec {
                name: "workload".to_owned(),
                ou_path: Vec::new(),
                users: Vec::new(),
            }],
        },
        Utc::now(),
    )
    .await;
    let config = emu.sdk_config().await;
    // The emulator's dummy credentials are no IAM user key.
    assert_eq!(caller_access_key_id(&config).await, None);
    // Temporary credentials of an assumed role are not either.
    let member = member_config(&emu, &org.account("workload").id).await;
    assert_eq!(caller_access_key_id(&member).await, None);
    // A user's own key is.
    let key = create_access_key(&aws_sdk_iam::Client::new(&config), &user("automation"))
        .await
        .unwrap();
    let as_user = emu
        .sdk_config_with(Credentials::new(
            key.access_key_id.as_str(),
            key.secret.expose(),
            None,
            None,
            "test",
        ))
        .await;
    assert_eq!(
        caller_access_key_id(&as_user).await.as_deref(),
        Some(key.access_key_id.as_str())
    );
}

const MOCK_ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:keyturn/alice-AbCdEf";

fn mocked_secrets_manager(
    stored: &'static str,
    token: &'static str,
) -> aws_sdk_secretsmanager::Client {
    let put = mock!(aws_sdk_secretsmanager::Client::put_secret_value).then_output(move || {
        PutSecretValueOutput::builder()
            .arn(MOCK_ARN)
            .version_id(token)
            .build()
    });
    let tag = mock!(aws_sdk_secretsmanager::Client::tag_resource)
        .then_output(|| TagResourceOutput::builder().build());
    let get = mock!(aws_sdk_secretsmanager::Client::get_secret_value).then_output(move || {
        GetSecretValueOutput::builder()
            .arn(MOCK_ARN)
            .version_id(token)
            .secret_string(stored)
            .build()
    });
    let interceptor = MockResponseInterceptor::new()
        .rule_mode(RuleMode::MatchAny)
        .with_rule(&put)
        .with_rule(&tag)
        .with_rule(&get);
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "AKIDTEST",
            "not-a-secret",
            None,
            None,
            "test",
        ))
        .http_client(create_mock_http_client())
        .interceptor(interceptor)
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
}

#[tokio::test]
async fn a_read_back_that_holds_another_key_is_a_delivery_mismatch_without_the_secret() {
    const TOKEN: &str = "0123456789abcdef0123456789abcdef";
    let key = stub_key();
    let target = target("keyturn/alice", None);
    let meta = meta(MANAGEMENT_ACCOUNT_ID, "alice", "c1");

    let other = mocked_secrets_manager(
        r#"{"AccessKeyId":"AKIAI44QH8DHBEXAMPLE","SecretAccessKey":"stubSecretKeyThatMustNeverBeShown0123456"}"#,
        TOKEN,
    );
    let failure = deliver_secret(&other, &target, &key, &meta, TOKEN)
        .await
        .unwrap_err();
    assert_eq!(failure.code, DELIVERY_MISMATCH, "{failure}");
    assert!(
        failure.message.contains("AKIAI44QH8DHBEXAMPLE"),
        "{failure}"
    );
    assert_no_secret(&failure, &[STUB_SECRET]);

    // A value that is not keyturn's JSON: the error gives a position, not the text.
    let garbage = mocked_secrets_manager(
        "stubSecretKeyThatMustNeverBeShown0123456 is not JSON",
        TOKEN,
    );
    let failure = deliver_secret(&garbage, &target, &key, &meta, TOKEN)
        .await
        .unwrap_err();
    assert_eq!(failure.code, DELIVERY_MISMATCH, "{failure}");
    assert_no_secret(&failure, &[STUB_SECRET, "stubSecret"]);

    // The matching value is a delivery.
    let matching = mocked_secrets_manager(
        r#"{"AccessKeyId":"AKIAIOSFODNN7EXAMPLE","SecretAccessKey":"x"}"#,
        TOKEN,
    );
    assert_eq!(
        deliver_secret(&matching, &target, &key, &meta, TOKEN)
            .await
            .unwrap(),
        Delivery {
            secret_arn: MOCK_ARN.to_owned(),
            version_id: TOKEN.to_owned(),
        }
    );
}
