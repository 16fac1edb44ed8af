//! Member-account sessions against the local emulator: the role is assumed once per
//! account with the campaign as source identity, every client of the account shares the
//! credentials, and the AssumeRole calls go through the STS client that carries the
//! telemetry interceptor (so they are counted like every other AWS call).

use chrono::Utc;
use keyturn_planner::{AccountId, RoleName};
use keyturn_testbed::seed::{AccountSpec, OrgSpec, seed};
use keyturn_testbed::{Emulator, EmulatorOptions};
use keyturn_worker::Sessions;
use keyturn_worker::telemetry;

#[tokio::test(flavor = "multi_thread")]
async fn a_member_role_is_assumed_once_with_the_campaign_as_source_identity() {
    let emulator = Emulator::start(EmulatorOptions::default());
    let accounts = ["a", "b"]
        .iter()
        .map(|n| AccountSpec {
            name: (*n).into(),
            ou_path: vec![],
            users: vec![],
        })
        .collect();
    let org = seed(
        &emulator,
        &OrgSpec {
            management_users: vec![],
            accounts,
        },
        Utc::now(),
    )
    .await;
    let sessions = Sessions::new(emulator.sdk_config().await, "q3", "run1")
        .await
        .expect("the caller's identity");
    let role = RoleName::new("OrganizationAccountAccessRole").unwrap();
    let seeding = emulator.assume_role_requests().await.len();
    let calls_before = telemetry::calls_so_far();

    for account in &org.accounts {
        let id = AccountId::new(&account.id).unwrap();
        // Two clients of the same account, each used twice.
        for _ in 0..2 {
            let config = sessions.for_account(&id, &role, None).await;
            let iam = telemetry::iam_client(&config);
            iam.list_users()
                .send()
                .await
                .expect("ListUsers in the member");
            iam.list_users()
                .send()
                .await
                .expect("ListUsers in the member");
        }
    }

    let requests = emulator.assume_role_requests().await;
    let ours = &requests[seeding..];
    assert_eq!(ours.len(), 2, "one AssumeRole per account: {ours:?}");
    for (request, account) in ours.iter().zip(&org.accounts) {
        assert_eq!(
            request.role_arn,
            format!(
                "arn:aws:iam::{}:role/OrganizationAccountAccessRole",
                account.id
            )
        );
        assert_eq!(request.role_session_name, "keyturn-q3-run1");
        assert_eq!(request.source_identity, "keyturn-q3");
    }
    assert_eq!(
        telemetry::calls_so_far() - calls_before,
        2 + 8,
        "the two AssumeRole calls are counted with the eight ListUsers"
    );
}
