//! OpenTelemetry end to end: a whole campaign run with `OTEL_EXPORTER_OTLP_ENDPOINT`
//! pointing at an OTLP/HTTP receiver in this test process, which decodes what the
//! exporter sends (protobuf, uncompressed) and checks the spans and metrics; then every
//! secret the campaign delivered (read back from Secrets Manager on the emulator) is
//! searched for in the raw OTLP payloads, stdout and stderr. Without an endpoint, or
//! with `OTEL_SDK_DISABLED=true`, nothing is sent.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use keyturn_testbed::seed::{
    AccountSpec, KeySpec, OrgSpec, SeededOrg, UserSpec, member_config, seed,
};
use keyturn_testbed::{Emulator, EmulatorOptions, FaultRule};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value;
use support::{Run, TempDir, keyturn_env};

const POLICY: &str = r#"
[scope]
exclude_users = ["breakglass-*"]

[rotation]
allow_short_gates = true
max_key_age = "90d"
unused_after = "45d"
quiet_period = "2s"
adoption_timeout = "1h"
observation_period = "2s"
"#;

// ---------------------------------------------------------------------------------------
// An OTLP/HTTP receiver: plain HTTP/1.1 on loopback, every request kept as received.
// ---------------------------------------------------------------------------------------

/// One HTTP request as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// A tiny OTLP/HTTP collector: answers 200 to every POST and keeps the request.
struct Receiver {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start() -> Self {
        Self::on(TcpListener::bind("127.0.0.1:0").expect("bind the receiver"))
    }

    fn on(listener: TcpListener) -> Self {
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&received);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let kept = Arc::clone(&kept);
                std::thread::spawn(move || serve(stream, &kept));
            }
        });
        Self { port, received }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// Serves one keep-alive connection until the client closes it.
fn serve(stream: TcpStream, kept: &Mutex<Vec<Received>>) {
    let mut writer = stream.try_clone().expect("clone the stream");
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let body = if headers
            .get("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            let mut body = Vec::new();
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).unwrap();
                let size = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk).unwrap();
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
            body
        } else {
            let length: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            body
        };
        kept.lock().unwrap().push(Received {
            path,
            headers,
            body,
        });
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reading the decoded payloads.
// ---------------------------------------------------------------------------------------

fn text(value: Option<&AnyValue>) -> Option<String> {
    match value?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

/// Attributes as text, by key.
type Attributes = BTreeMap<String, String>;

fn attrs(attributes: &[KeyValue]) -> Attributes {
    attributes
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), text(kv.value.as_ref())?)))
        .collect()
}

/// Every span received, with its resource's attributes.
fn spans(received: &[Received]) -> Vec<(BTreeMap<String, String>, Span)> {
    let mut spans = Vec::new();
    for request in received.iter().filter(|r| r.path == "/v1/traces") {
        let decoded = ExportTraceServiceRequest::decode(request.body.as_slice())
            .expect("a trace export decodes as ExportTraceServiceRequest");
        for resource_spans in decoded.resource_spans {
            let resource = resource_spans
                .resource
                .as_ref()
                .map(|r| attrs(&r.attributes))
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    spans.push((resource.clone(), span));
                }
            }
        }
    }
    spans
}

/// A metric's data points: (attributes, value) summed over every export, for counters
/// and gauges (the last value); histograms give their count.
#[derive(Debug, Default)]
struct Metrics {
    points: BTreeMap<String, Vec<(Attributes, f64)>>,
    resources: Vec<BTreeMap<String, String>>,
}

impl Metrics {
    fn of(received: &[Received]) -> Self {
        let mut metrics = Metrics::default();
        for request in received.iter().filter(|r| r.path == "/v1/metrics") {
            let decoded = ExportMetricsServiceRequest::decode(request.body.as_slice())
                .expect("a metrics export decodes as ExportMetricsServiceRequest");
            for resource_metrics in decoded.resource_metrics {
                if let Some(resource) = &resource_metrics.resource {
                    metrics.resources.push(attrs(&resource.attributes));
                }
                for scope in resource_metrics.scope_metrics {
                    for m in scope.metrics {
                        let entry = metrics.points.entry(m.name.clone()).or_default();
                        let number =
                            |p: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint| match p
                                .value
                            {
                                Some(number_data_point::Value::AsInt(i)) => i as f64,
                                Some(number_data_point::Value::AsDouble(d)) => d,
                                None => 0.0,
                            };
                        match m.data {
                            Some(metric::Data::Sum(sum)) => entry.extend(
                                sum.data_points
                                    .iter()
                                    .map(|p| (attrs(&p.attributes), number(p))),
                            ),
                            Some(metric::Data::Gauge(gauge)) => entry.extend(
                                gauge
                                    .data_points
                                    .iter()
                                    .map(|p| (attrs(&p.attributes), number(p))),
                            ),
                            Some(metric::Data::Histogram(h)) => entry.extend(
                                h.data_points
                                    .iter()
                                    .map(|p| (attrs(&p.attributes), p.count as f64)),
                            ),
                            _ => {}
                        }
                    }
                }
            }
        }
        metrics
    }

    /// The largest value of `name` among points whose attributes include `with`
    /// (cumulative counters: the last export holds the total).
    fn max(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.points
            .get(name)
            .into_iter()
            .flatten()
            .filter(|(a, _)| {
                with.iter()
                    .all(|(k, v)| a.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| *v)
            .fold(0.0, f64::max)
    }

    /// The values an attribute takes among the points of `name`.
    fn values_of(&self, name: &str, attribute: &str) -> BTreeSet<String> {
        self.points
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|(a, _)| a.get(attribute).cloned())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// The scenario.
// ---------------------------------------------------------------------------------------

async fn organization() -> (Emulator, SeededOrg) {
    let emulator = Emulator::start(EmulatorOptions::default());
    let spec = OrgSpec {
        management_users: vec![],
        accounts: vec![
            AccountSpec {
                name: "app".into(),
                ou_path: vec![],
                users: vec![
                    UserSpec::new("ci", vec![KeySpec::active(120, Some(1))]),
                    UserSpec::new("batch", vec![KeySpec::active(200, Some(3))]),
                    UserSpec::new("idle", vec![KeySpec::active(150, None)]),
                ],
            },
            AccountSpec {
                name: "web".into(),
                ou_path: vec![],
                users: vec![
                    UserSpec::new("svc", vec![KeySpec::active(100, Some(2))]),
                    UserSpec::new("old", vec![KeySpec::inactive(300, None)]),
                ],
            },
        ],
    };
    let org = seed(&emulator, &spec, Utc::now()).await;
    (emulator, org)
}

/// Every SecretAccessKey stored in every version of every secret of the member accounts.
async fn delivered_secrets(emulator: &Emulator, org: &SeededOrg) -> Vec<String> {
    let mut secrets = Vec::new();
    for account in &org.accounts {
        let sm = aws_sdk_secretsmanager::Client::new(&member_config(emulator, &account.id).await);
        let listed = sm.list_secrets().send().await.expect("ListSecrets");
        for secret in listed.secret_list() {
            let name = secret.name().unwrap();
            let versions = sm
                .list_secret_version_ids()
                .secret_id(name)
                .send()
                .await
                .expect("ListSecretVersionIds");
            for version in versions.versions() {
                let value = sm
                    .get_secret_value()
                    .secret_id(name)
                    .version_id(version.version_id().unwrap())
                    .send()
                    .await
                    .expect("GetSecretValue");
                let doc: Value = serde_json::from_str(value.secret_string().unwrap()).unwrap();
                secrets.push(doc["SecretAccessKey"].as_str().unwrap().to_owned());
            }
        }
    }
    secrets
}

fn kt(emulator: &Emulator, dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut all = vec!["--journal", "sqlite://journal.db"];
    all.extend_from_slice(args);
    keyturn_env(emulator, dir.path(), &all, env)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_campaign_exports_its_spans_and_metrics_and_never_a_secret() {
    let (emulator, org) = organization().await;
    let receiver = Receiver::start();
    let dir = TempDir::new("telemetry");
    let policy = dir.write("policy.toml", POLICY);
    let endpoint = receiver.endpoint();
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=e2e"),
    ];

    let mut printed = String::new();
    let start = kt(
        &emulator,
        &dir,
        &["campaign", "start", "c1", "--policy", &policy],
        &[],
    );
    assert_eq!(start.code, 0, "{}", start.stderr);

    // The whole first pass: rotations created, delivered and verified, an unused key
    // deactivated, an Inactive key deleted; with debug logs as JSON.
    let run = kt(
        &emulator,
        &dir,
        &["--log-format", "json", "-vv", "run", "c1"],
        &otel,
    );
    assert_eq!(run.code, 0, "run: {}\n{}", run.stdout, run.stderr);
    printed.push_str(&run.stdout);
    printed.push_str(&run.stderr);
    assert!(run.stdout.contains("created"), "{}", run.stdout);
    // stderr is one JSON object per line (logs, and progress as log events).
    let mut levels = BTreeSet::new();
    let mut progress_events = 0;
    for line in run.stderr.lines().filter(|l| !l.trim().is_empty()) {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a stderr line is not JSON ({e}): {line}"));
        levels.insert(event["level"].as_str().unwrap_or_default().to_owned());
        if event["fields"]["message"] == "progress" {
            progress_events += 1;
            assert!(
                event["fields"]["accounts_total"].as_u64().is_some(),
                "{event}"
            );
        }
    }
    assert!(levels.contains("DEBUG"), "-vv logs at debug: {levels:?}");
    assert!(
        progress_events >= 2,
        "one progress event per phase:\n{}",
        run.stderr
    );

    // After the quiet period, another pass (the deactivated key's observation, …), with
    // two throttled IAM answers on the way.
    tokio::time::sleep(Duration::from_secs(3)).await;
    emulator
        .set_faults(&[FaultRule::throttle().service("iam").count(2)])
        .await;
    let again = kt(&emulator, &dir, &["run", "c1"], &otel);
    assert_eq!(again.code, 0, "run: {}\n{}", again.stdout, again.stderr);
    printed.push_str(&again.stdout);
    printed.push_str(&again.stderr);
    assert!(
        again
            .stderr
            .lines()
            .any(|l| l.starts_with("run: ") && l.contains(" accounts, ")),
        "plain progress lines when stderr is not a terminal:\n{}",
        again.stderr
    );
    assert!(
        again
            .stderr
            .lines()
            .any(|l| l == "inventory: 3/3 accounts, 2 throttles"),
        "the throttles are counted in the progress:\n{}",
        again.stderr
    );

    // The inventory with progress on: stdout is still exactly the JSON asked for.
    let inventory = kt(&emulator, &dir, &["inventory", "-o", "json"], &otel);
    assert_eq!(inventory.code, 0, "{}", inventory.stderr);
    printed.push_str(&inventory.stdout);
    printed.push_str(&inventory.stderr);
    let rows = inventory.json();
    assert!(rows.as_array().is_some_and(|r| !r.is_empty()), "{rows}");
    assert!(
        inventory
            .stderr
            .lines()
            .any(|l| l.starts_with("inventory: 3/3 accounts")),
        "{}",
        inventory.stderr
    );

    let received = receiver.received();
    assert!(!received.is_empty(), "nothing was exported");
    for request in &received {
        assert!(
            request.path == "/v1/traces" || request.path == "/v1/metrics",
            "unexpected OTLP path {}",
            request.path
        );
        assert_eq!(
            request.headers.get("content-type").map(String::as_str),
            Some("application/x-protobuf")
        );
        assert!(
            !request.headers.contains_key("content-encoding"),
            "{:?}",
            request.headers
        );
    }

    // Spans: the run, its accounts, their steps with AWS request ids.
    let spans = spans(&received);
    let named = |name: &'static str| spans.iter().filter(move |(_, s)| s.name == name);
    let (resource, run_span) = named("keyturn.run").next().expect("a keyturn.run span");
    assert_eq!(
        resource.get("service.name").map(String::as_str),
        Some("keyturn")
    );
    assert_eq!(
        resource.get("deployment.environment").map(String::as_str),
        Some("e2e"),
        "OTEL_RESOURCE_ATTRIBUTES is honoured"
    );
    let run_attrs = attrs(&run_span.attributes);
    assert_eq!(run_attrs.get("campaign").map(String::as_str), Some("c1"));
    assert_eq!(run_attrs.get("accounts").map(String::as_str), Some("3"));
    assert!(
        run_attrs.get("run.id").is_some_and(|id| id.len() == 12),
        "{run_attrs:?}"
    );
    assert_eq!(named("keyturn.run").count(), 2, "one span per run");

    let accounts: BTreeSet<String> = named("keyturn.account")
        .filter(|(_, s)| s.trace_id == run_span.trace_id)
        .filter_map(|(_, s)| attrs(&s.attributes).get("account.id").cloned())
        .collect();
    for account in &org.accounts {
        assert!(
            accounts.contains(&account.id),
            "no account span for {}: {accounts:?}",
            account.id
        );
    }
    assert!(
        named("keyturn.inventory").count() >= 3,
        "the runs' and the command's inventories"
    );

    let steps: Vec<(BTreeMap<String, String>, &Span)> = named("keyturn.step")
        .map(|(_, s)| (attrs(&s.attributes), s))
        .collect();
    let kinds: BTreeSet<&str> = steps
        .iter()
        .filter_map(|(a, _)| a.get("step.kind").map(String::as_str))
        .collect();
    for kind in [
        "check-last-use",
        "create-replacement",
        "deliver-secret",
        "verify-replacement",
        "deactivate",
        "delete",
    ] {
        assert!(kinds.contains(kind), "no {kind} step span: {kinds:?}");
    }
    let create = steps
        .iter()
        .find(|(a, _)| a.get("step.kind").map(String::as_str) == Some("create-replacement"))
        .unwrap();
    assert_eq!(
        create.0.get("outcome").map(String::as_str),
        Some("ok"),
        "{:?}",
        create.0
    );
    assert_eq!(
        create.0.get("aws.operation").map(String::as_str),
        Some("CreateAccessKey")
    );
    assert_eq!(create.0.get("aws.service").map(String::as_str), Some("iam"));
    assert!(
        create
            .0
            .get("aws.request_id")
            .is_some_and(|id| !id.is_empty()),
        "the step carries its AWS request id: {:?}",
        create.0
    );
    assert!(
        create
            .0
            .get("key.id")
            .is_some_and(|k| k.starts_with("AKIA"))
    );
    // The step sits in its account's span, which sits in the run's.
    let parent = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.span_id == create.1.parent_span_id)
        .expect("the step's parent span was exported");
    assert_eq!(parent.name, "keyturn.account");
    let grandparent = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.span_id == parent.parent_span_id)
        .expect("the account's parent span was exported");
    assert_eq!(grandparent.name, "keyturn.run");
    for (a, _) in &steps {
        if a.get("outcome").map(String::as_str) == Some("ok") {
            assert!(
                a.get("aws.request_id").is_some(),
                "a step without a request id: {a:?}"
            );
        }
    }

    // Metrics: steps by kind and outcome, AWS calls by service, durations, keys by state.
    let metrics = Metrics::of(&received);
    assert!(
        metrics
            .resources
            .iter()
            .all(|r| r.get("service.name").map(String::as_str) == Some("keyturn")),
        "{:?}",
        metrics.resources
    );
    assert!(
        metrics.max(
            "keyturn.steps",
            &[("step", "create-replacement"), ("outcome", "ok")]
        ) >= 2.0,
        "{:?}",
        metrics.points.get("keyturn.steps")
    );
    assert!(metrics.max("keyturn.step.duration", &[("step", "deliver-secret")]) >= 2.0);
    let services = metrics.values_of("keyturn.aws.calls", "service");
    for service in ["iam", "sts", "secretsmanager", "organizations"] {
        assert!(
            services.contains(service),
            "no AWS calls counted for {service}: {services:?}"
        );
    }
    let operations = metrics.values_of("keyturn.aws.calls", "operation");
    for operation in ["CreateAccessKey", "AssumeRole", "GetCallerIdentity"] {
        assert!(
            operations.contains(operation),
            "{operation}: {operations:?}"
        );
    }
    // The second run met two throttled IAM answers, retried by the SDK.
    assert!(
        metrics.max("keyturn.aws.throttles", &[("service", "iam")]) >= 2.0,
        "{:?}",
        metrics.points.get("keyturn.aws.throttles")
    );
    assert!(metrics.max("keyturn.aws.retries", &[("service", "iam")]) >= 2.0);
    let states = metrics.values_of("keyturn.keys", "state");
    assert!(
        !states.is_empty(),
        "the keys-by-state gauge: {:?}",
        metrics.points.keys()
    );

    // No secret anywhere: not in any OTLP payload, not on stdout or stderr.
    let mut secrets = delivered_secrets(&emulator, &org).await;
    assert!(
        secrets.len() >= 3,
        "the campaign delivered {} secrets",
        secrets.len()
    );
    for account in &org.accounts {
        for user in &account.users {
            secrets.extend(user.keys.iter().map(|k| k.secret_access_key.clone()));
        }
    }
    let payloads: Vec<&[u8]> = received.iter().map(|r| r.body.as_slice()).collect();
    for secret in &secrets {
        assert!(secret.len() >= 20, "not a secret: {secret:?}");
        assert!(
            !printed.contains(secret.as_str()),
            "a secret access key was printed"
        );
        for payload in &payloads {
            assert!(
                !payload
                    .windows(secret.len())
                    .any(|w| w == secret.as_bytes()),
                "a secret access key is in an OTLP payload"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_exported_without_an_endpoint_or_when_disabled() {
    let (emulator, _org) = organization().await;
    let dir = TempDir::new("telemetry-off");
    let receiver = Receiver::start();
    let endpoint = receiver.endpoint();

    // The SDK switched off: the endpoint is ignored.
    let disabled = kt(
        &emulator,
        &dir,
        &["inventory", "-o", "json"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SDK_DISABLED", "true"),
        ],
    );
    assert_eq!(disabled.code, 0, "{}", disabled.stderr);
    disabled.json();

    // Other OTEL_* variables without an endpoint: nothing is set up, not even towards the
    // default endpoint (localhost:4318), which this receiver listens on when it is free.
    let default_port = TcpListener::bind("127.0.0.1:4318").ok().map(Receiver::on);
    let unset = kt(
        &emulator,
        &dir,
        &["inventory", "-o", "json"],
        &[
            ("OTEL_SERVICE_NAME", "keyturn-test"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ],
    );
    assert_eq!(unset.code, 0, "{}", unset.stderr);
    unset.json();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 0, "exported although disabled");
    if let Some(default_port) = default_port {
        assert_eq!(
            default_port.received().len(),
            0,
            "exported without an endpoint"
        );
    }

    // What keyturn cannot export to is refused before anything is contacted.
    emulator.reset_counters().await;
    for (name, value) in [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "https://collector.example:4318",
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ] {
        let mut env = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
        env.retain(|(n, _)| *n != name);
        env.push((name, value));
        let refused = kt(&emulator, &dir, &["inventory", "-o", "json"], &env);
        assert_eq!(refused.code, 2, "{name}={value}: {}", refused.stderr);
        assert!(refused.stderr.contains(name), "{}", refused.stderr);
        assert!(refused.stdout.is_empty(), "{}", refused.stdout);
    }
    assert_eq!(
        emulator.counters().await.total(),
        0,
        "nothing was contacted"
    );
    assert_eq!(receiver.received().len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_still_exports_what_was_traced() {
    let (emulator, _org) = organization().await;
    let dir = TempDir::new("telemetry-ctrl-c");
    let receiver = Receiver::start();
    // Every IAM answer takes two seconds: the inventory is still reading when interrupted.
    emulator
        .set_faults(&[FaultRule::latency(2000).service("iam")])
        .await;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keyturn"));
    emulator.configure(&mut command);
    let child = command
        .args(["inventory", "-o", "json"])
        .current_dir(dir.path())
        .env_remove("KEYTURN_JOURNAL")
        .env_remove("KEYTURN_LOG")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start keyturn inventory");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted (Ctrl-C)"), "{stderr}");
    assert!(output.stdout.is_empty(), "no partial output on stdout");

    let received = receiver.received();
    let spans = spans(&received);
    let names: BTreeSet<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
    assert!(names.contains("keyturn.inventory"), "{names:?}");
    assert!(names.contains("keyturn.account"), "{names:?}");
    let metrics = Metrics::of(&received);
    assert!(
        metrics.max("keyturn.aws.calls", &[("service", "organizations")]) >= 1.0,
        "{:?}",
        metrics.points.keys()
    );
}
