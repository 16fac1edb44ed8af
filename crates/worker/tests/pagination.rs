//! Pagination past the first page, for the lists the emulator cannot page (it ignores
//! `MaxItems` on some IAM lists and `MaxResults` on ListChildren): the SDK is driven by
//! `aws-smithy-mocks` rules that answer page by page, and the worker must read them all.

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_sdk_iam::operation::generate_credential_report::GenerateCredentialReportOutput;
use aws_sdk_iam::operation::get_access_key_last_used::GetAccessKeyLastUsedOutput;
use aws_sdk_iam::operation::get_account_authorization_details::GetAccountAuthorizationDetailsOutput;
use aws_sdk_iam::operation::get_credential_report::GetCredentialReportOutput;
use aws_sdk_iam::operation::list_access_keys::ListAccessKeysOutput;
use aws_sdk_iam::primitives::{Blob, DateTime};
use aws_sdk_iam::types::{
    AccessKeyLastUsed, AccessKeyMetadata, ReportStateType, StatusType, Tag, UserDetail,
};
use aws_sdk_organizations::operation::list_accounts::ListAccountsOutput;
use aws_sdk_organizations::operation::list_accounts_for_parent::ListAccountsForParentOutput;
use aws_sdk_organizations::operation::list_children::ListChildrenOutput;
use aws_sdk_organizations::types::{Account, AccountStatus, Child, ChildType};
use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock};
use keyturn_planner::policy::UserExclusion;
use keyturn_planner::{AccountId, OrganizationalUnitId, Scope};
use keyturn_worker::iam::{Listing, account_keys};
use keyturn_worker::org::{OrgAccount, accounts_in_scope};
use keyturn_worker::port::SdkAccount;

fn interceptor(rules: &[&Rule]) -> MockResponseInterceptor {
    rules.iter().fold(
        MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny),
        |i, r| i.with_rule(r),
    )
}

fn iam_client(rules: &[&Rule]) -> aws_sdk_iam::Client {
    let config = aws_sdk_iam::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(aws_sdk_iam::config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "AKIDTEST",
            "not-a-secret",
            None,
            None,
            "test",
        ))
        .http_client(create_mock_http_client())
        .interceptor(interceptor(rules))
        .build();
    aws_sdk_iam::Client::from_conf(config)
}

fn organizations_client(rules: &[&Rule]) -> aws_sdk_organizations::Client {
    let config = aws_sdk_organizations::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(aws_sdk_organizations::config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "AKIDTEST",
            "not-a-secret",
            None,
            None,
            "test",
        ))
        .http_client(create_mock_http_client())
        .interceptor(interceptor(rules))
        .build();
    aws_sdk_organizations::Client::from_conf(config)
}

fn user(name: &str, tags: &[(&str, &str)]) -> UserDetail {
    let tags = tags
        .iter()
        .map(|(k, v)| Tag::builder().key(*k).value(*v).build().unwrap())
        .collect();
    UserDetail::builder()
        .user_name(name)
        .set_tags(Some(tags))
        .build()
}

fn key(user: &str, id: &str, created_secs: i64) -> AccessKeyMetadata {
    AccessKeyMetadata::builder()
        .user_name(user)
        .access_key_id(id)
        .status(StatusType::Active)
        .create_date(DateTime::from_secs(created_secs))
        .build()
}

#[tokio::test]
async fn every_page_of_users_and_keys_is_read() {
    let users_page_1 = mock!(aws_sdk_iam::Client::get_account_authorization_details)
        .match_requests(|r| r.marker().is_none())
        .then_output(|| {
            GetAccountAuthorizationDetailsOutput::builder()
                .user_detail_list(user("alice", &[]))
                .is_truncated(true)
                .marker("users-2")
                .build()
        });
    let users_page_2 = mock!(aws_sdk_iam::Client::get_account_authorization_details)
        .match_requests(|r| r.marker() == Some("users-2"))
        .then_output(|| {
            GetAccountAuthorizationDetailsOutput::builder()
                .user_detail_list(user("bob", &[("keyturn:exempt", "vendor")]))
                .is_truncated(false)
                .build()
        });
    let generate = mock!(aws_sdk_iam::Client::generate_credential_report).then_output(|| {
        GenerateCredentialReportOutput::builder()
            .state(ReportStateType::Complete)
            .build()
    });
    // The report knows alice's first key only: the second falls back to GetAccessKeyLastUsed.
    let report = mock!(aws_sdk_iam::Client::get_credential_report).then_output(|| {
        let csv = "user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,password_next_rotation,mfa_active,access_key_1_active,access_key_1_last_rotated,access_key_1_last_used_date,access_key_1_last_used_region,access_key_1_last_used_service,access_key_2_active,access_key_2_last_rotated,access_key_2_last_used_date,access_key_2_last_used_region,access_key_2_last_used_service,cert_1_active,cert_1_last_rotated,cert_2_active,cert_2_last_rotated\n\
                   alice,arn,2020-01-01T00:00:00+00:00,false,N/A,N/A,N/A,false,true,1970-01-12T13:46:40+00:00,1970-01-13T00:00:00+00:00,us-east-1,iam,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A\n";
        GetCredentialReportOutput::builder().content(Blob::new(csv)).build()
    });
    let alice_keys_1 = mock!(aws_sdk_iam::Client::list_access_keys)
        .match_requests(|r| r.user_name() == Some("alice") && r.marker().is_none())
        .then_output(|| {
            ListAccessKeysOutput::builder()
                .access_key_metadata(key("alice", "AKIAALICE00000000001", 1_000_000))
                .is_truncated(true)
                .marker("keys-2")
                .build()
                .unwrap()
        });
    let alice_keys_2 = mock!(aws_sdk_iam::Client::list_access_keys)
        .match_requests(|r| r.user_name() == Some("alice") && r.marker() == Some("keys-2"))
        .then_output(|| {
            ListAccessKeysOutput::builder()
                .access_key_metadata(key("alice", "AKIAALICE00000000002", 2_000_000))
                .is_truncated(false)
                .build()
                .unwrap()
        });
    let bob_keys = mock!(aws_sdk_iam::Client::list_access_keys)
        .match_requests(|r| r.user_name() == Some("bob"))
        .then_output(|| {
            ListAccessKeysOutput::builder()
                .set_access_key_metadata(Some(vec![]))
                .build()
                .unwrap()
        });
    let last_used = mock!(aws_sdk_iam::Client::get_access_key_last_used)
        .match_requests(|r| r.access_key_id() == Some("AKIAALICE00000000002"))
        .then_output(|| {
            GetAccessKeyLastUsedOutput::builder()
                .access_key_last_used(
                    AccessKeyLastUsed::builder()
                        .last_used_date(DateTime::from_secs(3_000_000))
                        .service_name("sts")
                        .region("eu-west-1")
                        .build()
                        .unwrap(),
                )
                .build()
        });
    let iam = iam_client(&[
        &users_page_1,
        &users_page_2,
        &generate,
        &report,
        &alice_keys_1,
        &alice_keys_2,
        &bob_keys,
        &last_used,
    ]);
    let account = OrgAccount {
        id: AccountId::new("000000000001").unwrap(),
        name: "a".into(),
        email: None,
    };

    let api = SdkAccount::with_iam_client(aws_config::SdkConfig::builder().build(), iam);
    let keys = account_keys(
        &api,
        &account,
        &Scope::default(),
        Listing::Held,
        chrono::Utc::now(),
    )
    .await
    .unwrap();

    let names: Vec<&str> = keys.users.iter().map(|u| u.user.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob"], "both pages of users");
    let alice = &keys.users[0];
    let ids: Vec<&str> = alice
        .keys
        .iter()
        .map(|k| k.access_key_id.as_str())
        .collect();
    assert_eq!(
        ids,
        ["AKIAALICE00000000001", "AKIAALICE00000000002"],
        "both pages of keys"
    );
    assert_eq!(
        alice.keys[0].last_used.as_ref().unwrap().service.as_deref(),
        Some("iam"),
        "from the report"
    );
    assert_eq!(
        alice.keys[1].last_used.as_ref().unwrap().service.as_deref(),
        Some("sts"),
        "from GetAccessKeyLastUsed"
    );
    assert_eq!(
        last_used.num_calls(),
        1,
        "only the key the report could not place is asked for"
    );
    assert!(
        matches!(
            keys.users[1].exclusion,
            Some(UserExclusion::ExemptByTag { .. })
        ),
        "tags from the second page"
    );
}

fn account(id: &str) -> Account {
    #[allow(deprecated)]
    Account::builder()
        .id(id)
        .name(format!("n{id}"))
        .status(AccountStatus::Active)
        .build()
}

#[tokio::test]
async fn every_page_of_accounts_and_children_is_read_recursively() {
    let accounts_1 = mock!(aws_sdk_organizations::Client::list_accounts)
        .match_requests(|r| r.next_token().is_none())
        .then_output(|| {
            ListAccountsOutput::builder()
                .accounts(account("000000000001"))
                .accounts(account("000000000002"))
                .next_token("accounts-2")
                .build()
        });
    let accounts_2 = mock!(aws_sdk_organizations::Client::list_accounts)
        .match_requests(|r| r.next_token() == Some("accounts-2"))
        .then_output(|| {
            #[allow(deprecated)]
            let suspended = Account::builder()
                .id("000000000004")
                .status(AccountStatus::Suspended)
                .build();
            ListAccountsOutput::builder()
                .accounts(account("000000000003"))
                .accounts(suspended)
                .build()
        });
    // ou-root1-aaaaaaaa has two pages of child OUs; the second child holds account 3.
    let children_1 = mock!(aws_sdk_organizations::Client::list_children)
        .match_requests(|r| r.parent_id() == Some("ou-root1-aaaaaaaa") && r.next_token().is_none())
        .then_output(|| {
            ListChildrenOutput::builder()
                .children(
                    Child::builder()
                        .id("ou-root1-bbbbbbbb")
                        .r#type(ChildType::OrganizationalUnit)
                        .build(),
                )
                .next_token("children-2")
                .build()
        });
    let children_2 = mock!(aws_sdk_organizations::Client::list_children)
        .match_requests(|r| {
            r.parent_id() == Some("ou-root1-aaaaaaaa") && r.next_token() == Some("children-2")
        })
        .then_output(|| {
            ListChildrenOutput::builder()
                .children(
                    Child::builder()
                        .id("ou-root1-cccccccc")
                        .r#type(ChildType::OrganizationalUnit)
                        .build(),
                )
                .build()
        });
    let leaf_children = mock!(aws_sdk_organizations::Client::list_children)
        .match_requests(|r| r.parent_id() != Some("ou-root1-aaaaaaaa"))
        .then_output(|| ListChildrenOutput::builder().build());
    let under_c = mock!(aws_sdk_organizations::Client::list_accounts_for_parent)
        .match_requests(|r| r.parent_id() == Some("ou-root1-cccccccc"))
        .then_output(|| {
            ListAccountsForParentOutput::builder()
                .accounts(account("000000000003"))
                .build()
        });
    let under_others = mock!(aws_sdk_organizations::Client::list_accounts_for_parent)
        .match_requests(|r| r.parent_id() != Some("ou-root1-cccccccc"))
        .then_output(|| ListAccountsForParentOutput::builder().build());
    let org = organizations_client(&[
        &accounts_1,
        &accounts_2,
        &children_1,
        &children_2,
        &leaf_children,
        &under_c,
        &under_others,
    ]);

    let everyone = accounts_in_scope(&org, &Scope::default()).await.unwrap();
    let ids: Vec<&str> = everyone.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(
        ids,
        ["000000000001", "000000000002", "000000000003"],
        "both pages, suspended account left out"
    );

    let scope = Scope {
        organizational_units: vec![OrganizationalUnitId::new("ou-root1-aaaaaaaa").unwrap()],
        ..Scope::default()
    };
    let under_unit = accounts_in_scope(&org, &scope).await.unwrap();
    let ids: Vec<&str> = under_unit.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(
        ids,
        ["000000000003"],
        "found through the second page of child OUs"
    );
    assert_eq!(children_2.num_calls(), 1);
}
