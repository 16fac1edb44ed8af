//! The deployment templates (`deploy/`) against the code.
//!
//! - The member role (`deploy/member-role.yaml`) and the runner role
//!   (`deploy/runner.yaml`) grant exactly the actions `keyturn_worker::permissions`
//!   declares, on exactly the resources each grant's scope names, and nothing else (the
//!   declared lists are themselves checked against the SDK calls of the sources, in
//!   `permissions.rs`). The member role trusts only the runner role, with the external id
//!   and the organization's id.
//! - The journal table the runner template describes is created on the emulator as
//!   written, `keyturn journal init` accepts it, and a whole rotation on it (with an SNS
//!   notification) calls only
//!   what the templates grant: every request the emulator receives is counted by
//!   service, action and signing account, and each must be granted to the principal
//!   that signed it.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType,
};
use chrono::Utc;
use keyturn_testbed::seed::{AccountSpec, KeySpec, OrgSpec, UserSpec, seed};
use keyturn_testbed::{Emulator, EmulatorOptions};
use keyturn_worker::permissions::{
    Grant, MEMBER_ROLE_ACTIONS, MEMBER_ROLE_TRUST_ACTIONS, NO_ACTION, Principal, RUNNER_ACTIONS,
    ResourceScope, principal_of,
};
use serde_json::{Value, json};
use support::{TempDir, keyturn};

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// A template, as JSON values (the templates use long-form intrinsic functions only).
fn template(name: &str) -> Value {
    let path = deploy_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    serde_json::to_value(&yaml).unwrap_or_else(|e| {
        panic!(
            "{} has a short-form tag (!Sub, !Ref…) or a non-JSON value; write Fn::Sub, Ref… \
             ({e})",
            path.display()
        )
    })
}

/// The resource `logical` of `template`, checking its type.
fn resource<'a>(template: &'a Value, logical: &str, kind: &str) -> &'a Value {
    let found = &template["Resources"][logical];
    assert_eq!(found["Type"], kind, "{logical} is a {kind}");
    found
}

/// A string or a list of values, as a list.
fn list(value: &Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

/// The resource pattern each scope stands for, as the templates write it.
fn resources_of(scope: ResourceScope) -> Vec<Value> {
    match scope {
        ResourceScope::Any => vec![json!("*")],
        ResourceScope::AccountUsers => {
            vec![json!({"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:user/*"})]
        }
        ResourceScope::DeliverySecrets => vec![json!({
            "Fn::Sub":
                "arn:${AWS::Partition}:secretsmanager:*:${AWS::AccountId}:secret:${SecretNamePrefix}*"
        })],
        ResourceScope::MemberRole => {
            vec![json!({"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/${MemberRoleName}"})]
        }
        ResourceScope::JournalTable => vec![json!({"Fn::GetAtt": ["JournalTable", "Arn"]})],
        ResourceScope::JournalTableAndIndexes => vec![
            json!({"Fn::GetAtt": ["JournalTable", "Arn"]}),
            json!({"Fn::Sub": "${JournalTable.Arn}/index/*"}),
        ],
        ResourceScope::RunnerTopics => {
            vec![
                json!({"Fn::Sub": "arn:${AWS::Partition}:sns:*:${AWS::AccountId}:${NotificationTopics}"}),
            ]
        }
    }
}

/// Every (action, resource) an IAM role's inline policies allow; checks that every
/// statement is a plain Allow of named actions on named resources.
fn granted(role: &Value) -> BTreeMap<String, BTreeSet<String>> {
    assert!(
        role["Properties"]["ManagedPolicyArns"].is_null(),
        "keyturn's roles hold inline policies only, compared here"
    );
    let mut grants: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for policy in list(&role["Properties"]["Policies"]) {
        for statement in list(&policy["PolicyDocument"]["Statement"]) {
            assert_eq!(statement["Effect"], "Allow", "{statement}");
            for forbidden in ["NotAction", "NotResource", "NotPrincipal"] {
                assert!(statement[forbidden].is_null(), "{forbidden} in {statement}");
            }
            for action in list(&statement["Action"]) {
                let action = action.as_str().expect("an action is a string");
                assert!(!action.contains('*'), "wildcard action {action}");
                for resource in list(&statement["Resource"]) {
                    grants
                        .entry(action.to_owned())
                        .or_default()
                        .insert(resource.to_string());
                }
            }
        }
    }
    grants
}

/// What `declared` grants, in the form [`granted`] returns.
fn expected(declared: &[Grant]) -> BTreeMap<String, BTreeSet<String>> {
    let mut grants: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for grant in declared {
        for action in grant.actions {
            grants
                .entry((*action).to_owned())
                .or_default()
                .extend(resources_of(grant.resource).iter().map(Value::to_string));
        }
    }
    grants
}

/// Fails with every difference between what a template grants and what is declared.
fn same_grants(
    file: &str,
    granted: &BTreeMap<String, BTreeSet<String>>,
    declared: &BTreeMap<String, BTreeSet<String>>,
) {
    let mut problems = Vec::new();
    for (action, resources) in granted {
        match declared.get(action) {
            None => problems.push(format!(
                "{file} grants {action}, which keyturn_worker::permissions does not declare"
            )),
            Some(wanted) if wanted != resources => problems.push(format!(
                "{file} grants {action} on {resources:?}, declared on {wanted:?}"
            )),
            Some(_) => {}
        }
    }
    for action in declared.keys() {
        if !granted.contains_key(action) {
            problems.push(format!(
                "{file} does not grant {action}, which keyturn_worker::permissions declares"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The statements of `role`'s inline policies that grant `action`.
fn statements_with(role: &Value, action: &str) -> Vec<Value> {
    list(&role["Properties"]["Policies"])
        .iter()
        .flat_map(|p| list(&p["PolicyDocument"]["Statement"]))
        .filter(|s| list(&s["Action"]).contains(&json!(action)))
        .collect()
}

#[test]
fn the_member_role_grants_exactly_the_declared_actions() {
    let member = template("member-role.yaml");
    let role = resource(&member, "MemberRole", "AWS::IAM::Role");
    same_grants(
        "member-role.yaml",
        &granted(role),
        &expected(MEMBER_ROLE_ACTIONS),
    );

    // Only the runner role may assume it, with the external id, from the organization.
    let trust = list(&role["Properties"]["AssumeRolePolicyDocument"]["Statement"]);
    assert_eq!(trust.len(), 1, "one trust statement: {trust:?}");
    let trust = &trust[0];
    assert_eq!(trust["Effect"], "Allow");
    assert_eq!(trust["Principal"], json!({"AWS": {"Ref": "RunnerRoleArn"}}));
    let actions: BTreeSet<String> = list(&trust["Action"])
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let declared: BTreeSet<String> = MEMBER_ROLE_TRUST_ACTIONS
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
    assert_eq!(actions, declared);
    assert_eq!(
        trust["Condition"],
        json!({"StringEquals": {
            "sts:ExternalId": {"Ref": "ExternalId"},
            "aws:PrincipalOrgID": {"Ref": "OrganizationId"},
        }})
    );

    // The parameters those references name exist, and the secret prefix holds no wildcard.
    for parameter in [
        "RoleName",
        "RunnerRoleArn",
        "ExternalId",
        "OrganizationId",
        "SecretNamePrefix",
    ] {
        assert!(
            member["Parameters"][parameter].is_object(),
            "parameter {parameter}"
        );
    }
    let prefix = &member["Parameters"]["SecretNamePrefix"];
    assert_eq!(
        prefix["Default"], "keyturn/",
        "the default name_template's prefix"
    );
    assert!(
        !prefix["AllowedPattern"].as_str().unwrap().contains('*'),
        "a prefix cannot be a wildcard"
    );
    assert_eq!(role["Properties"]["RoleName"], json!({"Ref": "RoleName"}));
}

#[test]
fn the_runner_role_grants_exactly_the_declared_actions() {
    let runner = template("runner.yaml");
    let role = resource(&runner, "RunnerRole", "AWS::IAM::Role");
    same_grants("runner.yaml", &granted(role), &expected(RUNNER_ACTIONS));

    // The member role may be assumed only in accounts of the organization.
    for action in MEMBER_ROLE_TRUST_ACTIONS {
        for statement in statements_with(role, action) {
            assert_eq!(
                statement["Condition"],
                json!({"StringEquals": {"aws:ResourceOrgID": {"Ref": "OrganizationId"}}}),
                "{action}"
            );
        }
    }
    // The role is the ECS task's, in this account only.
    let trust = list(&role["Properties"]["AssumeRolePolicyDocument"]["Statement"]);
    assert_eq!(trust.len(), 1);
    assert_eq!(
        trust[0]["Principal"],
        json!({"Service": "ecs-tasks.amazonaws.com"})
    );
    assert_eq!(
        trust[0]["Condition"],
        json!({"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}})
    );

    // The task runs `keyturn run CAMPAIGN` as that role, on the journal table.
    let task = resource(&runner, "TaskDefinition", "AWS::ECS::TaskDefinition");
    assert_eq!(
        task["Properties"]["TaskRoleArn"],
        json!({"Fn::GetAtt": ["RunnerRole", "Arn"]})
    );
    let container = &task["Properties"]["ContainerDefinitions"][0];
    assert_eq!(
        container["Command"],
        json!(["run", {"Ref": "CampaignName"}])
    );
    let environment: BTreeMap<String, Value> = list(&container["Environment"])
        .into_iter()
        .map(|e| (e["Name"].as_str().unwrap().to_owned(), e["Value"].clone()))
        .collect();
    assert_eq!(
        environment["KEYTURN_JOURNAL"],
        json!({"Fn::Sub": "dynamodb://${JournalTable}"})
    );
    let schedule = resource(&runner, "Schedule", "AWS::Scheduler::Schedule");
    assert_eq!(
        schedule["Properties"]["Target"]["EcsParameters"]["TaskDefinitionArn"],
        json!({"Ref": "TaskDefinition"})
    );
    assert_eq!(
        schedule["Properties"]["Target"]["EcsParameters"]["LaunchType"],
        "FARGATE"
    );
}

#[test]
fn the_journal_table_is_durable() {
    let runner = template("runner.yaml");
    let table = resource(&runner, "JournalTable", "AWS::DynamoDB::Table");
    assert_eq!(table["DeletionPolicy"], "Retain");
    let properties = &table["Properties"];
    assert_eq!(properties["DeletionProtectionEnabled"], true);
    assert_eq!(
        properties["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
    assert_eq!(properties["SSESpecification"]["SSEEnabled"], true);
    assert_eq!(properties["BillingMode"], "PAY_PER_REQUEST");
}

#[test]
fn the_image_is_built_with_the_pinned_toolchain_and_runs_as_non_root() {
    let root = deploy_dir().join("..");
    let toolchain = std::fs::read_to_string(root.join("rust-toolchain.toml")).unwrap();
    let channel = toolchain
        .lines()
        .find_map(|l| l.trim().strip_prefix("channel = "))
        .expect("rust-toolchain.toml names a channel")
        .trim_matches('"');
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .collect();
    assert_eq!(
        froms.len(),
        2,
        "a build stage and a runtime stage: {froms:?}"
    );
    assert!(
        froms[0].starts_with(&format!("rust:{channel}-")),
        "the build stage uses the toolchain of rust-toolchain.toml ({channel}): {}",
        froms[0]
    );
    assert!(dockerfile.contains("--locked"), "the build is --locked");
    assert!(froms[1].ends_with(":nonroot"), "{}", froms[1]);
    let user = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("the runtime stage names its user");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "{user}"
    );
    // The task definition runs the image as that same user.
    let runner = template("runner.yaml");
    let task = resource(&runner, "TaskDefinition", "AWS::ECS::TaskDefinition");
    assert_eq!(task["Properties"]["ContainerDefinitions"][0]["User"], user);
}

#[test]
fn every_skipped_checkov_check_says_why() {
    let mut skipped = Vec::new();
    for file in ["member-role.yaml", "runner.yaml"] {
        let template = template(file);
        for (logical, resource) in template["Resources"].as_object().unwrap() {
            for skip in list(&resource["Metadata"]["checkov"]["skip"]) {
                let id = skip["id"].as_str().unwrap_or_default();
                let comment = skip["comment"].as_str().unwrap_or_default();
                assert!(id.starts_with("CKV_"), "{file} {logical}: {skip}");
                assert!(
                    comment.split_whitespace().count() >= 10,
                    "{file} {logical}: skipping {id} needs a reason: {skip}"
                );
                skipped.push(format!("{logical}:{id}"));
            }
        }
    }
    // The skips deploy/README.md explains; a new one is explained there too.
    assert_eq!(
        skipped,
        ["JournalTable:CKV_AWS_119", "LogGroup:CKV_AWS_158"]
    );
}

/// CreateTable with the template's key schema, attributes and indexes.
async fn create_table_as_written(emulator: &Emulator, name: &str) {
    let runner = template("runner.yaml");
    let properties = &resource(&runner, "JournalTable", "AWS::DynamoDB::Table")["Properties"];
    let key = |k: &Value| {
        KeySchemaElement::builder()
            .attribute_name(k["AttributeName"].as_str().unwrap())
            .key_type(KeyType::from(k["KeyType"].as_str().unwrap()))
            .build()
            .unwrap()
    };
    let mut request = aws_sdk_dynamodb::Client::new(&emulator.sdk_config().await)
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::from(
            properties["BillingMode"].as_str().unwrap(),
        ))
        .set_key_schema(Some(
            list(&properties["KeySchema"]).iter().map(key).collect(),
        ));
    for attribute in list(&properties["AttributeDefinitions"]) {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(attribute["AttributeName"].as_str().unwrap())
                .attribute_type(ScalarAttributeType::from(
                    attribute["AttributeType"].as_str().unwrap(),
                ))
                .build()
                .unwrap(),
        );
    }
    for index in list(&properties["GlobalSecondaryIndexes"]) {
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(index["IndexName"].as_str().unwrap())
                .set_key_schema(Some(list(&index["KeySchema"]).iter().map(key).collect()))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(
                            index["Projection"]["ProjectionType"].as_str().unwrap(),
                        ))
                        .build(),
                )
                .build()
                .unwrap(),
        );
    }
    request
        .send()
        .await
        .expect("CreateTable as the template writes it");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_on_the_templates_table_calls_only_what_the_templates_grant() {
    let emulator = Emulator::start(EmulatorOptions::default());
    let spec = OrgSpec {
        management_users: vec![],
        accounts: vec![AccountSpec {
            name: "app".into(),
            ou_path: vec!["workloads".into(), "prod".into()],
            users: vec![UserSpec::new("app", vec![KeySpec::active(120, Some(1))])],
        }],
    };
    let org = seed(&emulator, &spec, Utc::now()).await;
    let dir = TempDir::new("deploy-rotation");
    let journal = "dynamodb://keyturn";
    create_table_as_written(&emulator, "keyturn").await;
    let topic = aws_sdk_sns::Client::new(&emulator.sdk_config().await)
        .create_topic()
        .name("key-owners")
        .send()
        .await
        .expect("CreateTopic")
        .topic_arn
        .expect("a topic ARN");
    emulator.reset_counters().await;

    // `journal init` accepts the table and records the format version (needed: a table
    // without that record is refused as not initialised).
    let init = keyturn(
        &emulator,
        dir.path(),
        &["--journal", journal, "journal", "init"],
    );
    assert_eq!(init.code, 0, "{}", init.stderr);
    assert_eq!(
        init.stdout.trim(),
        "journal dynamodb://keyturn: already initialised; nothing changed",
        "the table the template creates is a journal"
    );

    // The scope walks the organization from its root (ListChildren, ListAccountsForParent).
    // The runner's own account is excluded, as deploy/README.md says: keyturn reaches it
    // with its own identity, not through the member role, and the runner role holds no
    // IAM grant.
    let policy = dir.write(
        "policy.toml",
        &format!(
            "[scope]\norganizational_units = [\"{}\"]\nexclude_accounts = [\"{}\"]\n\n\
             [rotation]\nallow_short_gates = true\nmax_key_age = \"90d\"\nunused_after = \"45d\"\nquiet_period = \"2s\"\n\
             adoption_timeout = \"30d\"\nobservation_period = \"2s\"\n\n\
             [notify]\nsns_topic_arn = \"{topic}\"\non = [\"delivered\"]\n",
            org.root_id, org.management.id
        ),
    );
    support::start_campaign(&emulator, dir.path(), journal, "c1", &policy);
    let run = |what: &str| {
        let out = keyturn(&emulator, dir.path(), &["--journal", journal, "run", "c1"]);
        assert_eq!(out.code, 0, "{what}: {}\n{}", out.stdout, out.stderr);
        assert!(out.stdout.contains(what), "{what}: {}", out.stdout);
    };
    run("verified");
    // The application switches to the delivered key (a call signed with it, as a user of
    // the member account: no role's grant is involved).
    let account = &org.accounts[0].id;
    let status = keyturn(
        &emulator,
        dir.path(),
        &["--journal", journal, "status", "c1", "-o", "json"],
    );
    let status: Value = serde_json::from_str(&status.stdout).expect("status JSON");
    let new_key = status["keys"][0]["new_access_key_id"]
        .as_str()
        .expect("a replacement")
        .to_owned();
    let before_app = counted(&emulator.counters().await);
    let secret = {
        let sm = aws_sdk_secretsmanager::Client::new(
            &keyturn_testbed::seed::member_config(&emulator, account).await,
        );
        let out = sm
            .get_secret_value()
            .secret_id("keyturn/app")
            .send()
            .await
            .expect("GetSecretValue");
        let value: Value = serde_json::from_str(out.secret_string().unwrap()).unwrap();
        value["SecretAccessKey"].as_str().unwrap().to_owned()
    };
    let config = emulator
        .sdk_config_with(aws_credential_types::Credentials::new(
            &new_key, &secret, None, None, "app",
        ))
        .await;
    aws_sdk_sts::Client::new(&config)
        .get_caller_identity()
        .send()
        .await
        .expect("GetCallerIdentity with the new key");
    let test_calls = subtract(&counted(&emulator.counters().await), &before_app);
    tokio::time::sleep(Duration::from_secs(3)).await;
    run("deactivated");
    tokio::time::sleep(Duration::from_secs(3)).await;
    run("deleted");
    let audit = keyturn(
        &emulator,
        dir.path(),
        &[
            "--journal",
            journal,
            "audit",
            "--key",
            &new_key,
            "-o",
            "json",
        ],
    );
    assert_eq!(audit.code, 0, "{}", audit.stderr);

    // Every request keyturn made, by the principal that signed it.
    let counted = subtract(&counted(&emulator.counters().await), &test_calls);
    let runner_account = org.management.id.clone();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (service, action, signer) in counted.keys() {
        let action = format!("{service}:{action}");
        // Calls that need no grant: the key's own verification, and operations that IAM
        // authorises by their parts.
        if action == "sts:GetCallerIdentity" && *signer != runner_account {
            continue;
        }
        let needed: Vec<String> = if NO_ACTION.iter().any(|(a, _)| *a == action) {
            vec!["dynamodb:PutItem".to_owned()]
        } else {
            vec![action.clone()]
        };
        let principal = if *signer == runner_account {
            Principal::Runner
        } else {
            Principal::MemberRole
        };
        for needed in needed {
            seen.insert(needed.clone());
            let granted = keyturn_worker::permissions::actions_of(principal);
            if !granted.contains(&needed.as_str()) {
                problems.push(format!(
                    "{needed}, signed for account {signer}, is not granted to the {principal:?}"
                ));
            }
            if principal_of(service) != Some(principal) {
                problems.push(format!(
                    "{needed} was signed for account {signer}, but {service} belongs to the {:?}",
                    principal_of(service)
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The run exercised every kind of grant (so the check above compared something).
    for action in [
        "organizations:ListAccounts",
        "organizations:ListChildren",
        "organizations:ListAccountsForParent",
        "sts:AssumeRole",
        "dynamodb:PutItem",
        "dynamodb:Query",
        "iam:CreateAccessKey",
        "iam:UpdateAccessKey",
        "iam:DeleteAccessKey",
        "iam:GetAccessKeyLastUsed",
        "secretsmanager:CreateSecret",
        "secretsmanager:GetSecretValue",
        "sns:Publish",
    ] {
        assert!(
            seen.contains(action),
            "the rotation called {action}: {seen:?}"
        );
    }
}

/// Counts by (service, action, signing account).
type Counted = BTreeMap<(String, String, String), u64>;

/// The emulator's counters by (service, action, signing account).
fn counted(counters: &keyturn_testbed::Counters) -> Counted {
    let mut out = Counted::new();
    for r in &counters.requests {
        *out.entry((r.service.clone(), r.action.clone(), r.account.clone()))
            .or_default() += r.count;
    }
    out
}

/// `all` less `minus`.
fn subtract(all: &Counted, minus: &Counted) -> Counted {
    all.iter()
        .filter_map(|(key, count)| {
            let left = count.saturating_sub(minus.get(key).copied().unwrap_or(0));
            (left > 0).then(|| (key.clone(), left))
        })
        .collect()
}
