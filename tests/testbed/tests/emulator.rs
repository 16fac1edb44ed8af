//! Tests of the emulator harness, through the real AWS SDK for Rust.

use std::net::TcpStream;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_sdk_iam::error::ProvideErrorMetadata;
use chrono::{Duration as Days, SubsecRound, Utc};
use keyturn_testbed::{
    Emulator, EmulatorOptions, FaultKind, FaultRule, LastUsed, MANAGEMENT_ACCOUNT_ID,
};

/// One emulator shared by the tests below that only read or write their own users.
static SHARED: LazyLock<Emulator> = LazyLock::new(|| Emulator::start(EmulatorOptions::default()));

fn own_emulator() -> Emulator {
    Emulator::start(EmulatorOptions::default())
}

#[tokio::test]
async fn backdated_key_reads_back_through_list_access_keys() {
    let emulator = own_emulator();
    let iam = aws_sdk_iam::Client::new(&emulator.sdk_config().await);
    iam.create_user().user_name("alice").send().await.unwrap();
    let key = iam
        .create_access_key()
        .user_name("alice")
        .send()
        .await
        .unwrap()
        .access_key
        .unwrap();

    let created = (Utc::now() - Days::days(200)).trunc_subsecs(0);
    let used = (Utc::now() - Days::days(3)).trunc_subsecs(0);
    let owner = emulator
        .set_access_key(
            &key.access_key_id,
            Some(created),
            Some(Some(LastUsed::new(used, "s3", "eu-west-1"))),
        )
        .await;
    assert_eq!(owner.account_id, MANAGEMENT_ACCOUNT_ID);
    assert_eq!(owner.user_name, "alice");

    let listed = iam
        .list_access_keys()
        .user_name("alice")
        .send()
        .await
        .unwrap();
    let metadata = &listed.access_key_metadata[0];
    assert_eq!(
        metadata.access_key_id.as_deref(),
        Some(key.access_key_id.as_str())
    );
    let create_date = metadata.create_date.unwrap();
    assert_eq!(create_date.secs(), created.timestamp());

    let last = iam
        .get_access_key_last_used()
        .access_key_id(&key.access_key_id)
        .send()
        .await
        .unwrap()
        .access_key_last_used
        .unwrap();
    assert_eq!(last.last_used_date.unwrap().secs(), used.timestamp());
    assert_eq!(last.service_name, "s3");
    assert_eq!(last.region, "eu-west-1");

    // Some(None) clears the last-used data: the key reads as never used.
    emulator
        .set_access_key(&key.access_key_id, None, Some(None))
        .await;
    let last = iam
        .get_access_key_last_used()
        .access_key_id(&key.access_key_id)
        .send()
        .await
        .unwrap()
        .access_key_last_used
        .unwrap();
    assert_eq!(last.last_used_date, None);
    assert_eq!(last.service_name, "N/A");
}

#[tokio::test]
async fn throttled_create_user_is_retried_and_counted() {
    let emulator = own_emulator();
    let iam = aws_sdk_iam::Client::new(&emulator.sdk_config().await);
    emulator
        .set_faults(&[FaultRule::throttle().action("CreateUser").count(1)])
        .await;

    iam.create_user().user_name("bob").send().await.unwrap();
    iam.list_users().send().await.unwrap();
    iam.list_users().send().await.unwrap();

    let counters = emulator.counters().await;
    assert_eq!(
        counters.by_action("iam", "CreateUser"),
        2,
        "throttled once, then retried: {counters:?}"
    );
    assert_eq!(counters.by_action("iam", "ListUsers"), 2);
    assert_eq!(counters.faults_injected, 1);
    assert_eq!(counters.total(), 4);
    assert_eq!(counters.by_account(MANAGEMENT_ACCOUNT_ID), 4);
    assert_eq!(counters.by_service("iam"), 4);

    let faults = emulator.faults().await;
    assert_eq!(faults.len(), 1);
    assert_eq!(faults[0].rule.kind, FaultKind::Throttle);
    // The retry matched too, after the rule had used up its count.
    assert_eq!((faults[0].matched, faults[0].fired), (2, 1));

    emulator.reset_counters().await;
    emulator.clear_faults().await;
    assert_eq!(emulator.counters().await.total(), 0);
    assert!(emulator.faults().await.is_empty());
}

#[tokio::test]
async fn every_protocol_fault_is_retried_by_the_sdk() {
    let emulator = own_emulator();
    let config = emulator.sdk_config().await;
    let iam = aws_sdk_iam::Client::new(&config);
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let organizations = aws_sdk_organizations::Client::new(&config);
    emulator
        .set_faults(&[
            FaultRule::error(503).service("iam").count(1),
            FaultRule::throttle().service("dynamodb").count(1),
            FaultRule::error(500)
                .service("dynamodb")
                .action("ListTables")
                .count(1),
            FaultRule::throttle().service("organizations").count(1),
        ])
        .await;

    iam.list_users().send().await.unwrap();
    // Two ListTables faults in a row (throttle, then 500): the third attempt succeeds.
    dynamodb.list_tables().send().await.unwrap();
    organizations
        .create_organization()
        .feature_set(aws_sdk_organizations::types::OrganizationFeatureSet::All)
        .send()
        .await
        .unwrap();

    let counters = emulator.counters().await;
    assert_eq!(counters.faults_injected, 4, "{counters:?}");
    assert_eq!(counters.by_action("iam", "ListUsers"), 2);
    assert_eq!(counters.by_action("dynamodb", "ListTables"), 3);
    assert_eq!(counters.by_action("organizations", "CreateOrganization"), 2);
}

#[tokio::test]
async fn fault_codes_are_the_services_own() {
    let emulator = own_emulator();
    let config = emulator
        .sdk_config()
        .await
        .into_builder()
        .retry_config(RetryConfig::standard().with_max_attempts(1))
        .build();
    emulator
        .set_faults(&[FaultRule::throttle(), FaultRule::error(503)])
        .await;

    let iam = aws_sdk_iam::Client::new(&config);
    let err = iam.list_users().send().await.unwrap_err();
    assert_eq!(err.code(), Some("Throttling"), "{err:?}");
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 400);

    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let err = dynamodb.list_tables().send().await.unwrap_err();
    assert_eq!(err.code(), Some("ThrottlingException"), "{err:?}");

    let organizations = aws_sdk_organizations::Client::new(&config);
    let err = organizations.list_accounts().send().await.unwrap_err();
    assert!(
        matches!(
            err.as_service_error(),
            Some(aws_sdk_organizations::operation::list_accounts::ListAccountsError::TooManyRequestsException(_))
        ),
        "{err:?}"
    );

    emulator.set_faults(&[FaultRule::error(503)]).await;
    let err = iam.list_users().send().await.unwrap_err();
    assert_eq!(err.code(), Some("ServiceUnavailable"), "{err:?}");
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 503);
}

#[tokio::test]
async fn latency_rule_delays_then_serves() {
    let emulator = own_emulator();
    let iam = aws_sdk_iam::Client::new(&emulator.sdk_config().await);
    emulator
        .set_faults(&[FaultRule::latency(300).action("ListUsers").count(1)])
        .await;
    let start = Instant::now();
    iam.list_users().send().await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(300));
    let counters = emulator.counters().await;
    assert_eq!(
        (counters.latency_injected, counters.faults_injected),
        (1, 0)
    );
}

#[tokio::test]
async fn shared_emulator_serves_one_runtime() {
    let iam = aws_sdk_iam::Client::new(&SHARED.sdk_config().await);
    iam.create_user()
        .user_name("shared-one")
        .send()
        .await
        .unwrap();
    iam.get_user().user_name("shared-one").send().await.unwrap();
    assert!(SHARED.health().await);
}

#[tokio::test]
async fn shared_emulator_serves_another_runtime() {
    let iam = aws_sdk_iam::Client::new(&SHARED.sdk_config().await);
    iam.create_user()
        .user_name("shared-two")
        .send()
        .await
        .unwrap();
    iam.get_user().user_name("shared-two").send().await.unwrap();
    let stats = SHARED.process_stats().await;
    assert!(
        stats.cpu_seconds > 0.0 && stats.max_rss_kb > 10_000,
        "{stats:?}"
    );
}

#[tokio::test]
async fn env_points_a_process_at_the_emulator() {
    let emulator = own_emulator();
    let env = emulator.env();
    let value = |name: &str| {
        env.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    assert_eq!(value("AWS_ENDPOINT_URL"), Some(emulator.endpoint_url()));
    assert_eq!(value("AWS_REGION"), Some("us-east-1"));
    assert_eq!(value("AWS_EC2_METADATA_DISABLED"), Some("true"));
    assert!(emulator.endpoint_url().starts_with("http://127.0.0.1:"));
}

#[test]
fn drop_stops_the_emulator() {
    let emulator = own_emulator();
    let address = emulator
        .endpoint_url()
        .trim_start_matches("http://")
        .to_owned();
    let pid = emulator.pid();
    TcpStream::connect(&address).expect("the emulator listens");
    drop(emulator);
    assert!(
        TcpStream::connect(&address).is_err(),
        "nothing listens after drop"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the child was reaped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serial_emulator_has_one_conditional_winner() {
    let emulator = Emulator::start(EmulatorOptions { serial: true });
    let dynamodb = aws_sdk_dynamodb::Client::new(&emulator.sdk_config().await);
    dynamodb
        .create_table()
        .table_name("race")
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();

    for round in 0..5 {
        let barrier = Arc::new(tokio::sync::Barrier::new(10));
        let racers: Vec<_> = (0..10)
            .map(|worker| {
                let dynamodb = dynamodb.clone();
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    dynamodb
                        .put_item()
                        .table_name("race")
                        .item("pk", AttributeValue::S(format!("round-{round}")))
                        .item("winner", AttributeValue::N(worker.to_string()))
                        .condition_expression("attribute_not_exists(pk)")
                        .send()
                        .await
                })
            })
            .collect();
        let mut winners = 0;
        for racer in racers {
            match racer.await.unwrap() {
                Ok(_) => winners += 1,
                Err(err) => assert!(
                    err.into_service_error()
                        .is_conditional_check_failed_exception()
                ),
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
}
