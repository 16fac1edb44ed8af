//! The AWS permissions keyturn needs, per principal, as data.
//!
//! Two principals make keyturn's calls:
//!
//! - the **member role**, assumed in every member account: IAM (the account's users and
//!   their keys, the credential report) and Secrets Manager (the delivery secrets, which
//!   live in the user's own account, under the policy's `[delivery] name_template`);
//! - the **runner**, keyturn's own identity (the ECS task role of `deploy/runner.yaml`):
//!   Organizations (which accounts are in scope), STS (who am I, AssumeRole on the
//!   member role), DynamoDB (the journal table and its indexes) and SNS (publishing
//!   notifications to a topic of its own account).
//!
//! `deploy/member-role.yaml` and `deploy/runner.yaml` grant exactly these lists: the
//! `e2e_deploy` test (`tests/e2e/deploy.rs`) reads the templates and compares. The unit
//! test below reads this crate's and the journal's sources, finds every AWS SDK operation
//! they call (the operation names come from the SDK crates themselves), and fails when a
//! called operation is not declared here or a declared action is never called.
//!
//! The verification of a new key (STS GetCallerIdentity signed with that key) needs no
//! permission: GetCallerIdentity is allowed to every identity.

/// What the resources of a grant are: each maps to one ARN pattern in the templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceScope {
    /// `*`: the actions have no resource-level permissions.
    Any,
    /// The IAM users of the member account (`arn:…:iam::ACCOUNT:user/*`).
    AccountUsers,
    /// The delivery secrets of the member account, in any region: the names that start
    /// with the delivery prefix (`arn:…:secretsmanager:*:ACCOUNT:secret:PREFIX*`).
    DeliverySecrets,
    /// The member role, in any account of the organization (`arn:…:iam::*:role/ROLE`).
    MemberRole,
    /// The journal table itself.
    JournalTable,
    /// The journal table and its global secondary indexes.
    JournalTableAndIndexes,
    /// The SNS topics of the runner's own account, in any region
    /// (`arn:…:sns:*:ACCOUNT:TOPICS`, every topic unless the `NotificationTopics`
    /// parameter narrows it): the policy's `[notify] sns_topic_arn`.
    RunnerTopics,
}

/// Actions granted together on one resource scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// IAM actions, `service:Action`.
    pub actions: &'static [&'static str],
    /// What they may touch.
    pub resource: ResourceScope,
    /// Why keyturn needs them.
    pub why: &'static str,
}

/// The member role's permissions in each member account.
pub const MEMBER_ROLE_ACTIONS: &[Grant] = &[
    Grant {
        actions: &[
            "iam:CreateAccessKey",
            "iam:DeleteAccessKey",
            "iam:GetAccessKeyLastUsed",
            "iam:ListAccessKeys",
            "iam:UpdateAccessKey",
        ],
        resource: ResourceScope::AccountUsers,
        why: "the rotation steps on a user's keys, and the last-use evidence of its gates",
    },
    Grant {
        actions: &[
            "iam:GenerateCredentialReport",
            "iam:GetAccountAuthorizationDetails",
            "iam:GetCredentialReport",
        ],
        resource: ResourceScope::Any,
        why: "the account's inventory: its users with their tags, and the credential report",
    },
    Grant {
        actions: &[
            "secretsmanager:CreateSecret",
            "secretsmanager:GetSecretValue",
            "secretsmanager:PutSecretValue",
            "secretsmanager:TagResource",
        ],
        resource: ResourceScope::DeliverySecrets,
        why: "delivering a new key to the user's secret and reading the delivery back",
    },
];

/// What the member role's trust policy lets the runner do: assume the role, naming the
/// campaign as the session's source identity.
pub const MEMBER_ROLE_TRUST_ACTIONS: &[&str] = &["sts:AssumeRole", "sts:SetSourceIdentity"];

/// The runner's permissions in its own account.
pub const RUNNER_ACTIONS: &[Grant] = &[
    Grant {
        actions: &[
            "organizations:ListAccounts",
            "organizations:ListAccountsForParent",
            "organizations:ListChildren",
        ],
        resource: ResourceScope::Any,
        why: "the active accounts in scope, OUs walked recursively",
    },
    Grant {
        actions: &["sts:GetCallerIdentity"],
        resource: ResourceScope::Any,
        why: "who is running keyturn (recorded as the actor of journal events)",
    },
    Grant {
        actions: MEMBER_ROLE_TRUST_ACTIONS,
        resource: ResourceScope::MemberRole,
        why: "reaching each member account, with the campaign as source identity",
    },
    Grant {
        actions: &[
            "dynamodb:ConditionCheckItem",
            "dynamodb:DescribeTable",
            "dynamodb:GetItem",
            "dynamodb:PutItem",
        ],
        resource: ResourceScope::JournalTable,
        why: "appending events (PutItem, and the Put items of TransactWriteItems), fencing \
              an append on the claim that covers it (a ConditionCheck item of \
              TransactWriteItems), reading the format record and a stream's head, and \
              `journal init` on the existing table",
    },
    Grant {
        actions: &["dynamodb:Query"],
        resource: ResourceScope::JournalTableAndIndexes,
        why: "loading a campaign, and the audit queries on the indexes",
    },
    Grant {
        actions: &["sns:Publish"],
        resource: ResourceScope::RunnerTopics,
        why: "notifying key owners on the policy's `[notify] sns_topic_arn` (docs/notifications.md)",
    },
];

/// Which principal calls each service's operations.
pub const SERVICE_PRINCIPAL: &[(&str, Principal)] = &[
    ("iam", Principal::MemberRole),
    ("secretsmanager", Principal::MemberRole),
    ("organizations", Principal::Runner),
    ("sts", Principal::Runner),
    ("dynamodb", Principal::Runner),
    ("sns", Principal::Runner),
];

/// Who makes a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// The role assumed in each member account.
    MemberRole,
    /// keyturn's own identity.
    Runner,
}

/// Operations keyturn calls that need no action of their own, and why.
pub const NO_ACTION: &[(&str, &str)] = &[(
    "dynamodb:TransactWriteItems",
    "IAM authorises each item of the transaction by its own action (PutItem for keyturn's \
     Put items); there is no dynamodb:TransactWriteItems action",
)];

/// Operations keyturn can call that the deployment deliberately does not grant.
pub const NOT_GRANTED: &[(&str, &str)] = &[(
    "dynamodb:CreateTable",
    "deploy/runner.yaml creates the journal table; `keyturn journal init` calls CreateTable \
     only when the table is missing",
)];

/// An action that a call needs besides its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Implied {
    /// The IAM action.
    pub action: &'static str,
    /// The SDK method of the call that needs it (`assume_role`).
    pub operation: &'static str,
    /// Text that shows the need: looked for in the call itself (from the method to its
    /// `.send()`) when `in_call`, else anywhere in the file that makes the call.
    pub markers: &'static [&'static str],
    /// Whether the markers belong to the call's own builder chain.
    pub in_call: bool,
    /// Why the action is needed.
    pub why: &'static str,
}

/// Actions that calls need besides their own.
pub const IMPLIED: &[Implied] = &[
    Implied {
        action: "sts:SetSourceIdentity",
        operation: "assume_role",
        markers: &[".source_identity(", ".set_source_identity("],
        in_call: true,
        why: "AssumeRole with a SourceIdentity: the caller's policy and the trust policy allow it",
    },
    Implied {
        action: "sts:TagSession",
        operation: "assume_role",
        markers: &[
            ".tags(",
            ".set_tags(",
            ".transitive_tag_keys(",
            ".set_transitive_tag_keys(",
        ],
        in_call: true,
        why: "AssumeRole with session tags",
    },
    Implied {
        action: "dynamodb:PutItem",
        operation: "transact_write_items",
        markers: &["Put::builder()"],
        in_call: false,
        why: "a Put item of TransactWriteItems",
    },
    Implied {
        action: "dynamodb:UpdateItem",
        operation: "transact_write_items",
        markers: &["Update::builder()"],
        in_call: false,
        why: "an Update item of TransactWriteItems",
    },
    Implied {
        action: "dynamodb:DeleteItem",
        operation: "transact_write_items",
        markers: &["Delete::builder()"],
        in_call: false,
        why: "a Delete item of TransactWriteItems",
    },
    Implied {
        action: "dynamodb:ConditionCheckItem",
        operation: "transact_write_items",
        markers: &["ConditionCheck::builder()"],
        in_call: false,
        why: "a ConditionCheck item of TransactWriteItems",
    },
];

/// Every action granted to `principal`, sorted.
pub fn actions_of(principal: Principal) -> Vec<&'static str> {
    let grants = match principal {
        Principal::MemberRole => MEMBER_ROLE_ACTIONS,
        Principal::Runner => RUNNER_ACTIONS,
    };
    let mut actions: Vec<&'static str> = grants
        .iter()
        .flat_map(|g| g.actions.iter().copied())
        .collect();
    actions.sort_unstable();
    actions.dedup();
    actions
}

/// The principal that calls `service`'s operations, if the service is known.
pub fn principal_of(service: &str) -> Option<Principal> {
    SERVICE_PRINCIPAL
        .iter()
        .find(|(s, _)| *s == service)
        .map(|(_, p)| *p)
}

#[cfg(test)]
mod tests {
    //! The declared lists against the calls the sources make.

    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    use super::*;

    /// The SDK crates whose operations are looked for, and their IAM service prefix.
    const SDK_CRATES: &[(&str, &str)] = &[
        ("aws-sdk-iam", "iam"),
        ("aws-sdk-secretsmanager", "secretsmanager"),
        ("aws-sdk-organizations", "organizations"),
        ("aws-sdk-sts", "sts"),
        ("aws-sdk-dynamodb", "dynamodb"),
        ("aws-sdk-sns", "sns"),
        ("aws-sdk-sqs", "sqs"),
        ("aws-sdk-kms", "kms"),
        ("aws-sdk-s3", "s3"),
        ("aws-sdk-cloudwatch", "cloudwatch"),
        ("aws-sdk-eventbridge", "events"),
    ];

    fn workspace_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .expect("the worker lives in crates/worker")
            .to_path_buf()
    }

    /// The triple of the platform the tests run on, as `rustc -vV` names it.
    fn host_triple() -> String {
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
        let out = std::process::Command::new(rustc)
            .arg("-vV")
            .output()
            .expect("rustc -vV runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|line| line.strip_prefix("host: "))
            .expect("rustc -vV names the host")
            .to_owned()
    }

    /// Every operation of every SDK crate in the dependency graph: the fluent method
    /// name (`create_access_key`) → (IAM service prefix, operation name as AWS spells
    /// it, `CreateAccessKey`). Read from the SDK sources that `cargo metadata` locates:
    /// each operation is a module `src/operation/<name>.rs` whose runtime plugin names
    /// the operation (`Metadata::new("CreateAccessKey", …)`).
    fn sdk_operations() -> BTreeMap<String, Vec<(&'static str, String)>> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        // The host's packages only: offline, the other platforms' packages (never built
        // here) are not in the local registry cache, and cargo would have to fetch them.
        let out = std::process::Command::new(cargo)
            .args([
                "metadata",
                "--format-version",
                "1",
                "--offline",
                "--filter-platform",
                &host_triple(),
                "--manifest-path",
            ])
            .arg(workspace_root().join("Cargo.toml"))
            .output()
            .expect("cargo metadata runs");
        assert!(
            out.status.success(),
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut operations: BTreeMap<String, Vec<(&'static str, String)>> = BTreeMap::new();
        let mut seen_crates = BTreeSet::new();
        for package in metadata["packages"].as_array().unwrap() {
            let name = package["name"].as_str().unwrap();
            let Some((_, service)) = SDK_CRATES.iter().find(|(c, _)| *c == name) else {
                assert!(
                    !name.starts_with("aws-sdk-"),
                    "the SDK crate {name} is in the dependency graph: add it to SDK_CRATES \
                     with its IAM service prefix"
                );
                continue;
            };
            seen_crates.insert(name);
            let manifest = Path::new(package["manifest_path"].as_str().unwrap());
            let dir = manifest.parent().unwrap().join("src/operation");
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let Some(stem) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".rs"))
                else {
                    continue;
                };
                if stem == "mod" {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let named = text
                    .split("Metadata::new(")
                    .nth(1)
                    .and_then(|rest| rest.split('"').nth(1))
                    .unwrap_or_else(|| panic!("{} names no operation", path.display()));
                operations
                    .entry(stem.to_owned())
                    .or_default()
                    .push((service, named.to_owned()));
            }
        }
        for wanted in ["aws-sdk-iam", "aws-sdk-sts", "aws-sdk-dynamodb"] {
            assert!(
                seen_crates.contains(wanted),
                "cargo metadata lists no {wanted}"
            );
        }
        operations
    }

    /// The `.rs` files under `dir`, recursively.
    fn rust_files(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        files.sort();
        files
    }

    /// `text` without its `#[cfg(test)] mod … { … }` blocks: test code (mocks, seeding)
    /// is not keyturn calling AWS.
    fn without_test_modules(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find("#[cfg(test)]") {
            let after = &rest[at..];
            let item = after["#[cfg(test)]".len()..].trim_start();
            if !item.starts_with("mod ") {
                // A test-only item other than a module: kept (it is not a call).
                let keep = at + "#[cfg(test)]".len();
                out.push_str(&rest[..keep]);
                rest = &rest[keep..];
                continue;
            }
            out.push_str(&rest[..at]);
            let Some(open) = after.find('{') else {
                rest = "";
                break;
            };
            let mut depth = 0usize;
            let mut end = after.len();
            for (i, c) in after[open..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = open + i + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            rest = &after[end..];
        }
        out.push_str(rest);
        out
    }

    /// The SDK calls of one source file: each `.operation(` whose name is an operation
    /// of an SDK crate the file refers to (`aws_sdk_<crate>`). Returns the required
    /// actions with where they were seen; fails on a name that more than one of the
    /// file's SDK crates could mean.
    fn calls_in(
        path: &Path,
        text: &str,
        operations: &BTreeMap<String, Vec<(&'static str, String)>>,
    ) -> Vec<(String, String)> {
        let mut found = Vec::new();
        let bytes = text.as_bytes();
        for (dot, _) in text.match_indices('.') {
            let name: String = text[dot + 1..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name.is_empty() || bytes.get(dot + 1 + name.len()) != Some(&b'(') {
                continue;
            }
            let Some(candidates) = operations.get(&name) else {
                continue;
            };
            // A call on the engine's AWS port (`api.list_users()`, `AccountApi`) is not an
            // SDK call: its implementation's calls are found where they are made.
            if text[..dot].ends_with("api") {
                continue;
            }
            let mut referenced: Vec<&(&str, String)> = candidates
                .iter()
                .filter(|(service, _)| {
                    let krate = SDK_CRATES.iter().find(|(_, s)| s == service).unwrap().0;
                    text.contains(&krate.replace('-', "_"))
                })
                .collect();
            // A client obtained from a helper, in a file that names no SDK crate: the
            // call is still an SDK call when its builder chain ends in `.send()`.
            let statement = &text[dot..];
            let statement = &statement[..statement.find(';').unwrap_or(statement.len())];
            if referenced.is_empty() && statement.contains(".send()") {
                referenced = candidates.iter().collect();
            }
            let line = text[..dot].lines().count();
            let place = format!("{}:{line}", path.display());
            match referenced.as_slice() {
                [] => {}
                [(service, operation)] => found.push((format!("{service}:{operation}"), place)),
                several => panic!(
                    "{place}: .{name}() is an operation of several SDK crates ({several:?}) \
                     and the file does not tell which: name the client's crate in the file \
                     (`use aws_sdk_…::Client`) and no other crate with that operation"
                ),
            }
        }
        found
    }

    /// Where `text` shows that a call needs `implied.action`, if it does.
    fn implied_in(path: &Path, text: &str, implied: &Implied) -> Option<String> {
        let call = format!(".{}(", implied.operation);
        for (at, _) in text.match_indices(&call) {
            let region = if implied.in_call {
                let chain = &text[at..];
                &chain[..chain.find(".send()").unwrap_or(chain.len())]
            } else {
                text
            };
            if let Some(marker) = implied.markers.iter().find(|m| region.contains(*m)) {
                let line = text[..at].lines().count();
                return Some(format!("{}:{line} ({marker})", path.display()));
            }
        }
        None
    }

    /// Every action the product sources call for: SDK operations found in the worker's
    /// and the journal's sources (minus those needing no action), plus the implied ones.
    fn called_actions() -> BTreeMap<String, Vec<String>> {
        let operations = sdk_operations();
        let root = workspace_root();
        let mut called: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for dir in ["crates/worker/src", "crates/journal/src"] {
            for path in rust_files(&root.join(dir)) {
                let text = without_test_modules(&std::fs::read_to_string(&path).unwrap());
                let shown = path.strip_prefix(&root).unwrap();
                for (action, place) in calls_in(shown, &text, &operations) {
                    called.entry(action).or_default().push(place);
                }
                for implied in IMPLIED {
                    if let Some(place) = implied_in(shown, &text, implied) {
                        called
                            .entry(implied.action.to_owned())
                            .or_default()
                            .push(place);
                    }
                }
            }
        }
        for (action, _) in NO_ACTION {
            called.remove(*action);
        }
        called
    }

    #[test]
    fn declared_actions_are_exactly_the_actions_the_sources_call() {
        let called = called_actions();
        let not_granted: BTreeSet<&str> = NOT_GRANTED.iter().map(|(a, _)| *a).collect();
        let mut problems = Vec::new();
        for (action, places) in &called {
            if not_granted.contains(action.as_str()) {
                continue;
            }
            let service = action.split(':').next().unwrap();
            let Some(principal) = principal_of(service) else {
                problems.push(format!(
                    "{action} is called ({}) but no principal is named for {service}: add it \
                     to SERVICE_PRINCIPAL, the grant to its list and to its template",
                    places.join(", ")
                ));
                continue;
            };
            if !actions_of(principal).contains(&action.as_str()) {
                problems.push(format!(
                    "{action} is called ({}) but not granted to the {principal:?}: add it to \
                     permissions.rs and to its template under deploy/",
                    places.join(", ")
                ));
            }
        }
        for principal in [Principal::MemberRole, Principal::Runner] {
            for action in actions_of(principal) {
                if !called.contains_key(action) {
                    problems.push(format!(
                        "{action} is granted to the {principal:?} but no source calls it: \
                         remove it from permissions.rs and its template"
                    ));
                }
                let service = action.split(':').next().unwrap();
                if principal_of(service) != Some(principal) {
                    problems.push(format!(
                        "{action} is granted to the {principal:?}, but {service} is called by \
                         the {:?}",
                        principal_of(service)
                    ));
                }
            }
        }
        for (action, _) in NOT_GRANTED {
            if !called.contains_key(*action) {
                problems.push(format!(
                    "{action} is listed in NOT_GRANTED but nothing calls it"
                ));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn every_declared_action_is_one_named_action() {
        for principal in [Principal::MemberRole, Principal::Runner] {
            for action in actions_of(principal) {
                let (service, name) = action.split_once(':').unwrap();
                assert!(
                    !service.is_empty()
                        && name.starts_with(|c: char| c.is_ascii_uppercase())
                        && name.chars().all(|c| c.is_ascii_alphanumeric()),
                    "{action} is not one action (no wildcards)"
                );
            }
        }
        // The member role's trust is granted to the runner on the member role only.
        let trust = RUNNER_ACTIONS
            .iter()
            .find(|g| g.resource == ResourceScope::MemberRole)
            .unwrap();
        assert_eq!(trust.actions, MEMBER_ROLE_TRUST_ACTIONS);
    }

    #[test]
    fn the_scan_finds_calls_and_ignores_tests_and_other_receivers() {
        let mut operations = BTreeMap::new();
        operations.insert(
            "create_access_key".to_owned(),
            vec![("iam", "CreateAccessKey".to_owned())],
        );
        operations.insert(
            "tag_resource".to_owned(),
            vec![
                ("secretsmanager", "TagResource".to_owned()),
                ("dynamodb", "TagResource".to_owned()),
            ],
        );
        let source = "use aws_sdk_iam::Client;\nuse aws_sdk_secretsmanager as sm;\n\
                      fn f() { iam.create_access_key().user_name(u).send(); \
                      steps::create_access_key(x); sm.tag_resource(); \
                      self.api.create_access_key(user); }\n\
                      #[cfg(test)]\nmod tests { fn g() { iam.create_access_key(); } }\n";
        let text = without_test_modules(source);
        let found = calls_in(Path::new("x.rs"), &text, &operations);
        assert_eq!(
            found,
            [
                ("iam:CreateAccessKey".to_owned(), "x.rs:3".to_owned()),
                ("secretsmanager:TagResource".to_owned(), "x.rs:3".to_owned()),
            ]
        );
        // Without any SDK crate named, only a call that is sent is an SDK call.
        assert!(calls_in(Path::new("y.rs"), "a.create_access_key(x);", &operations).is_empty());
        assert_eq!(
            calls_in(
                Path::new("z.rs"),
                "let iam = helpers::iam_client(c);\niam.create_access_key()\n    .send().await?;",
                &operations
            ),
            [("iam:CreateAccessKey".to_owned(), "z.rs:2".to_owned())]
        );
    }
}
