//! Tests that keep the architecture honest by reading every crate's `Cargo.toml`:
//! the allowed dependency edges of `docs/architecture.md`, and the AWS SDK declared once.

use std::collections::BTreeMap;

/// The product crates and the workspace crates each may depend on (normal dependencies).
const ALLOWED_INTERNAL: &[(&str, &[&str])] = &[
    ("keyturn-planner", &[]),
    ("keyturn-journal", &[]),
    ("keyturn-worker", &["keyturn-planner", "keyturn-journal"]),
    (
        "keyturn-cli",
        &["keyturn-planner", "keyturn-journal", "keyturn-worker"],
    ),
    // The deterministic simulator (never shipped): the engine through its AWS port,
    // against a simulated AWS; it links no AWS SDK (OWNED_BY keeps them in the worker).
    (
        "keyturn-sim",
        &["keyturn-planner", "keyturn-journal", "keyturn-worker"],
    ),
    // A development tool, never shipped: it reads keyturn's clap command to generate
    // shell completions and man pages (`cargo xtask completions|man`).
    ("xtask", &["keyturn-cli"]),
];

/// External crates that only some crates may link, and which ones.
const OWNED_BY: &[(&str, &[&str])] = &[
    ("aws-sdk-iam", &["keyturn-worker"]),
    ("aws-sdk-sts", &["keyturn-worker"]),
    ("aws-sdk-organizations", &["keyturn-worker"]),
    ("aws-sdk-secretsmanager", &["keyturn-worker"]),
    ("aws-sdk-sns", &["keyturn-worker"]),
    ("aws-sdk-dynamodb", &["keyturn-journal"]),
    ("rusqlite", &["keyturn-journal"]),
    ("clap", &["keyturn-cli", "xtask"]),
    ("clap_complete", &["xtask"]),
    ("clap_mangen", &["xtask"]),
    // Telemetry: the worker records through the OpenTelemetry API only; the binary alone
    // installs the SDK, the OTLP exporter and the tracing bridge, and draws progress bars.
    ("opentelemetry_sdk", &["keyturn-cli"]),
    ("opentelemetry-otlp", &["keyturn-cli"]),
    ("tracing-opentelemetry", &["keyturn-cli"]),
    ("indicatif", &["keyturn-cli"]),
];

/// What the planner must never link: it is pure (no IO, no async runtime, no AWS).
fn forbidden_in_planner(dependency: &str) -> bool {
    dependency.starts_with("aws-")
        || [
            "tokio",
            "futures",
            "async-trait",
            "rusqlite",
            "reqwest",
            "hyper",
        ]
        .contains(&dependency)
}

/// Each workspace crate's name and manifest, from the root manifest's member list.
fn manifests() -> BTreeMap<String, toml::Table> {
    let root = crate::workspace_root();
    let workspace: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let members = workspace["workspace"]["members"].as_array().unwrap();
    members
        .iter()
        .map(|m| {
            let path = root.join(m.as_str().unwrap()).join("Cargo.toml");
            let manifest: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
            let name = manifest["package"]["name"].as_str().unwrap().to_owned();
            (name, manifest)
        })
        .collect()
}

fn dependencies<'a>(
    manifest: &'a toml::Table,
    section: &str,
) -> Vec<(&'a String, &'a toml::Value)> {
    manifest
        .get(section)
        .and_then(|d| d.as_table())
        .map(|t| t.iter().collect())
        .unwrap_or_default()
}

/// The dependency-edge violations of a set of manifests (empty when the architecture holds).
fn violations(manifests: &BTreeMap<String, toml::Table>) -> Vec<String> {
    let mut problems = Vec::new();
    for (krate, manifest) in manifests {
        let Some((_, allowed)) = ALLOWED_INTERNAL.iter().find(|(name, _)| name == krate) else {
            continue;
        };
        for (dependency, _) in dependencies(manifest, "dependencies") {
            let dependency = dependency.as_str();
            if manifests.contains_key(dependency) && !allowed.contains(&dependency) {
                problems.push(format!("{krate} must not depend on {dependency}"));
            }
            if let Some((_, owners)) = OWNED_BY.iter().find(|(name, _)| *name == dependency)
                && !owners.contains(&krate.as_str())
            {
                problems.push(format!(
                    "only {} may link {dependency}, but {krate} does",
                    owners.join(" and ")
                ));
            }
            if krate == "keyturn-planner" && forbidden_in_planner(dependency) {
                problems.push(format!(
                    "the planner is pure and must not link {dependency}"
                ));
            }
        }
    }
    problems
}

#[test]
fn crates_keep_the_allowed_dependency_edges() {
    let problems = violations(&manifests());
    assert!(
        problems.is_empty(),
        "architecture violations (see docs/architecture.md):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_edge_check_catches_a_forbidden_edge() {
    let mut manifests = manifests();
    let planner = manifests.get_mut("keyturn-planner").unwrap();
    let deps = planner
        .entry("dependencies")
        .or_insert(toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .unwrap();
    deps.insert("tokio".into(), toml::Value::String("1".into()));
    deps.insert("keyturn-worker".into(), toml::Value::String("0".into()));
    deps.insert("aws-sdk-iam".into(), toml::Value::String("1".into()));
    let cli = manifests.get_mut("keyturn-cli").unwrap();
    let deps = cli["dependencies"].as_table_mut().unwrap();
    deps.insert("clap_mangen".into(), toml::Value::String("0.3".into()));
    let xtask = manifests.get_mut("xtask").unwrap();
    let deps = xtask["dependencies"].as_table_mut().unwrap();
    deps.insert("keyturn-worker".into(), toml::Value::String("0".into()));
    deps.insert("rusqlite".into(), toml::Value::String("0".into()));
    let mut problems = violations(&manifests);
    problems.sort();
    assert_eq!(
        problems,
        [
            "keyturn-planner must not depend on keyturn-worker",
            "only keyturn-journal may link rusqlite, but xtask does",
            "only keyturn-worker may link aws-sdk-iam, but keyturn-planner does",
            "only xtask may link clap_mangen, but keyturn-cli does",
            "the planner is pure and must not link aws-sdk-iam",
            "the planner is pure and must not link tokio",
            "xtask must not depend on keyturn-worker",
        ]
    );
}

#[test]
fn aws_crates_are_declared_once_in_the_workspace() {
    for (krate, manifest) in manifests() {
        for section in ["dependencies", "dev-dependencies"] {
            for (dependency, spec) in dependencies(&manifest, section) {
                if dependency.starts_with("aws-") {
                    let inherited = spec
                        .as_table()
                        .and_then(|t| t.get("workspace"))
                        .and_then(|w| w.as_bool())
                        == Some(true);
                    assert!(
                        inherited,
                        "{krate} declares {dependency} itself; use `{dependency}.workspace = true`"
                    );
                }
            }
        }
    }
}
