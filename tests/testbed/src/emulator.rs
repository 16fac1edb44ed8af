//! Starts the local AWS emulator (moto plus keyturn's control endpoints) and drives it.
//!
//! The emulator is `tests/emulator/server.py`, run with the Python of the venv that
//! `cargo xtask test` creates at `target/emulator-venv` from
//! `tests/emulator/requirements.txt`. Each [`Emulator`] is its own child process on a
//! free loopback port, so tests may start as many as they like in parallel. The child
//! watches its stdin, which this side holds open: when the test process ends, even by
//! SIGKILL, the pipe closes and the emulator exits with it.
//!
//! [`Emulator::start`] is synchronous, so an emulator can live in a `static`
//! (`std::sync::LazyLock`) shared by many `#[tokio::test]`s, each with its own runtime.
//! The control calls are plain HTTP/1.1 on loopback, made on tokio's blocking pool;
//! they panic with a clear message when they fail, since this is test support code.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The region every test talks to.
pub const REGION: &str = "us-east-1";

/// The account the emulator's default (dummy) credentials belong to: the organization's
/// management account.
pub const MANAGEMENT_ACCOUNT_ID: &str = "123456789012";

/// The dummy access key id and secret the emulator accepts for the management account.
pub const DUMMY_CREDENTIAL: &str = "testing";

/// Environment variables to remove from a process spawned against the emulator, so
/// that nothing from the developer's own AWS set-up leaks into a test.
pub const ENV_TO_REMOVE: &[&str] = &[
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "MOTO_ACCOUNT_ID",
];

const READY_PREFIX: &str = "KEYTURN_EMULATOR_READY ";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
const STDERR_TAIL_BYTES: usize = 16 * 1024;

/// How to run an emulator.
#[derive(Debug, Clone, Default)]
pub struct EmulatorOptions {
    /// Handle one request at a time, so that DynamoDB conditional writes are atomic
    /// (moto's threaded server lets two conditional writers both win).
    pub serial: bool,
}

/// A running emulator. Dropping it stops the child process and waits for it.
#[derive(Debug)]
pub struct Emulator {
    child: Child,
    /// Held open for the child's life: the child exits when this pipe closes.
    stdin: Option<ChildStdin>,
    endpoint: String,
    agent: ureq::Agent,
    stderr: Arc<Mutex<Tail>>,
}

/// The last-used data of an access key, as `GetAccessKeyLastUsed` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastUsed {
    /// When the key was last used.
    pub at: DateTime<Utc>,
    /// The service it was used with, such as `s3`.
    pub service: String,
    /// The region it was used in, such as `us-east-1`.
    pub region: String,
}

impl LastUsed {
    /// Last used at `at` with `service` in `region`.
    pub fn new(at: DateTime<Utc>, service: &str, region: &str) -> Self {
        Self {
            at,
            service: service.to_owned(),
            region: region.to_owned(),
        }
    }
}

/// Whose access key [`Emulator::set_access_key`] changed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AccessKeyOwner {
    /// The account the key's user is in.
    pub account_id: String,
    /// The user the key belongs to.
    pub user_name: String,
}

/// What a fault rule does to a matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// Answer with the service's throttling error (HTTP 400), instead of moto.
    Throttle,
    /// Answer with a 5xx (`InternalFailure` or `ServiceUnavailable`), instead of moto.
    Error,
    /// Wait, then let the request through to moto.
    Latency,
}

/// One fault-injection rule. With neither `count` nor `fraction`, it fires for every
/// matching request; the optional `service`, `action` and `account` narrow the match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// What the rule does.
    pub kind: FaultKind,
    /// The HTTP status of an [`FaultKind::Error`] rule: 500 or 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The delay of a [`FaultKind::Latency`] rule, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Fire for the next `count` matching requests, then stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Fire for this fraction of the matching requests (seeded, so runs repeat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// The seed of the rule's random choices for `fraction` (0 if not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Only requests signed for this service (the SigV4 scope), such as `iam`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Only requests for this action, such as `CreateAccessKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Only requests signed with credentials of this account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

impl FaultRule {
    fn new(kind: FaultKind) -> Self {
        Self {
            kind,
            status: None,
            latency_ms: None,
            count: None,
            fraction: None,
            seed: None,
            service: None,
            action: None,
            account: None,
        }
    }

    /// Answer matching requests with the service's throttling error.
    pub fn throttle() -> Self {
        Self::new(FaultKind::Throttle)
    }

    /// Answer matching requests with a 5xx error: `status` is 500 or 503.
    pub fn error(status: u16) -> Self {
        Self {
            status: Some(status),
            ..Self::new(FaultKind::Error)
        }
    }

    /// Delay matching requests by `ms` milliseconds, then serve them.
    pub fn latency(ms: u64) -> Self {
        Self {
            latency_ms: Some(ms),
            ..Self::new(FaultKind::Latency)
        }
    }

    /// Fire for the next `n` matching requests only.
    pub fn count(mut self, n: u64) -> Self {
        self.count = Some(n);
        self
    }

    /// Fire for this fraction (0 to 1) of the matching requests.
    pub fn fraction(mut self, fraction: f64) -> Self {
        self.fraction = Some(fraction);
        self
    }

    /// Seed the random choices of [`FaultRule::fraction`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Match only requests for this service, such as `iam` or `dynamodb`.
    pub fn service(mut self, service: &str) -> Self {
        self.service = Some(service.to_owned());
        self
    }

    /// Match only requests for this action, such as `CreateAccessKey`.
    pub fn action(mut self, action: &str) -> Self {
        self.action = Some(action.to_owned());
        self
    }

    /// Match only requests signed with credentials of this account.
    pub fn account(mut self, account: &str) -> Self {
        self.account = Some(account.to_owned());
        self
    }
}

/// A fault rule as the emulator reports it, with how often it matched and fired.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FaultStatus {
    /// The rule.
    #[serde(flatten)]
    pub rule: FaultRule,
    /// How many requests matched it.
    pub matched: u64,
    /// How many times it fired.
    pub fired: u64,
}

/// The emulator's request counters since start or the last reset.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Counters {
    /// Every request except control calls, faulted ones included.
    pub total: u64,
    /// Requests answered by an injected throttle or 5xx instead of moto.
    pub faults_injected: u64,
    /// Requests delayed by a latency rule.
    #[serde(default)]
    pub latency_injected: u64,
    /// Counts by service, action and account.
    pub requests: Vec<RequestCount>,
    /// The CPU time moto spent serving each service and action.
    #[serde(default)]
    pub cpu: Vec<ActionCpu>,
    /// The most signed requests in flight at once (injected latency included).
    #[serde(default)]
    pub concurrency: InFlight,
}

/// The most signed requests the emulator was handling at once, since the last reset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct InFlight {
    /// By account: the most requests in flight at once in that account.
    pub max_in_flight: Vec<AccountInFlight>,
    /// By service, action and account: the most requests of that action in flight at
    /// once in that account.
    pub max_in_flight_by_action: Vec<ActionInFlight>,
    /// The most member accounts (every account but moto's default one, the
    /// organization's management account) with a request in flight at once.
    pub max_member_accounts_in_flight: u64,
}

/// The most requests of one action one account had in flight at once.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ActionInFlight {
    /// The SigV4 service, such as `iam`.
    pub service: String,
    /// The action, such as `UpdateAccessKey`.
    pub action: String,
    /// The account id.
    pub account: String,
    /// The most requests in flight at once.
    pub max: u64,
}

/// The most requests one account had in flight at once.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AccountInFlight {
    /// The account id.
    pub account: String,
    /// The most requests in flight at once.
    pub max: u64,
}

/// The CPU time moto spent serving one (service, action): its handling threads' CPU
/// time, injected latency and faults not included.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ActionCpu {
    /// The SigV4 service, such as `iam`.
    pub service: String,
    /// The action, such as `ListUsers`.
    pub action: String,
    /// CPU time in microseconds.
    pub micros: u64,
}

/// How many requests one (service, action, account) triple received.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RequestCount {
    /// The SigV4 service, such as `iam`.
    pub service: String,
    /// The action, such as `ListUsers`.
    pub action: String,
    /// The account the request was signed for.
    pub account: String,
    /// How many requests.
    pub count: u64,
}

impl Counters {
    /// Every request except control calls.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Requests for one action of one service, over all accounts.
    pub fn by_action(&self, service: &str, action: &str) -> u64 {
        self.sum(|r| r.service == service && r.action == action)
    }

    /// Requests signed for one account, over all services and actions.
    pub fn by_account(&self, account: &str) -> u64 {
        self.sum(|r| r.account == account)
    }

    /// Requests for one service, over all actions and accounts.
    pub fn by_service(&self, service: &str) -> u64 {
        self.sum(|r| r.service == service)
    }

    fn sum(&self, keep: impl Fn(&RequestCount) -> bool) -> u64 {
        self.requests
            .iter()
            .filter(|r| keep(r))
            .map(|r| r.count)
            .sum()
    }
}

/// One AssumeRole request as the emulator received it (empty strings for absent
/// parameters).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AssumeRoleRequest {
    /// The role's ARN.
    pub role_arn: String,
    /// The role session name.
    pub role_session_name: String,
    /// The external id.
    pub external_id: String,
    /// The source identity.
    pub source_identity: String,
}

/// The emulator process's resource use, to tell whether it is a benchmark's bottleneck.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct ProcessStats {
    /// User plus system CPU time of the emulator process.
    pub cpu_seconds: f64,
    /// Its peak resident memory, in KiB.
    pub max_rss_kb: u64,
}

/// The last bytes a child wrote to a pipe, for error messages.
#[derive(Debug, Default)]
struct Tail {
    bytes: VecDeque<u8>,
}

impl Tail {
    fn push(&mut self, data: &[u8]) {
        self.bytes.extend(data);
        let excess = self.bytes.len().saturating_sub(STDERR_TAIL_BYTES);
        self.bytes.drain(..excess);
    }

    fn text(&self) -> String {
        let (a, b) = self.bytes.as_slices();
        let mut all = a.to_vec();
        all.extend_from_slice(b);
        String::from_utf8_lossy(&all).into_owned()
    }
}

/// The workspace root: this crate lives in `tests/testbed`.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/testbed has a workspace root two levels up")
        .to_path_buf()
}

/// The Python that runs the emulator: `KEYTURN_EMULATOR_PYTHON`, else the venv's.
fn python_path(root: &Path) -> PathBuf {
    if let Some(python) = std::env::var_os("KEYTURN_EMULATOR_PYTHON") {
        return PathBuf::from(python);
    }
    let python = root.join("target/emulator-venv/bin/python");
    assert!(
        python.exists(),
        "the emulator's venv is missing ({}): run `cargo xtask test`, which creates it \
         from tests/emulator/requirements.txt (or set KEYTURN_EMULATOR_PYTHON)",
        python.display()
    );
    python
}

impl Emulator {
    /// Starts an emulator on a free loopback port and waits until it serves.
    ///
    /// Panics, with the child's stderr, if the venv is missing or the emulator does
    /// not report ready within 30 seconds.
    pub fn start(options: EmulatorOptions) -> Emulator {
        let root = workspace_root();
        let python = python_path(&root);
        let script = root.join("tests/emulator/server.py");
        assert!(
            script.exists(),
            "the emulator script is missing: {}",
            script.display()
        );

        let mut command = Command::new(&python);
        command
            .arg(&script)
            .args(["--host", "127.0.0.1", "--port", "0", "--exit-on-stdin-eof"]);
        if options.serial {
            command.arg("--serial");
        }
        // moto must map each access key to its own account, and botocore (which moto
        // uses for region lists) must not trip over a profile of the developer's.
        command
            .env_remove("MOTO_ACCOUNT_ID")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_DEFAULT_PROFILE")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap_or_else(|err| {
            panic!(
                "could not start the emulator with {}: {err}",
                python.display()
            )
        });
        let stdin = child.stdin.take();

        let stderr = Arc::new(Mutex::new(Tail::default()));
        let stderr_thread = drain_stderr(
            child.stderr.take().expect("stderr is piped"),
            Arc::clone(&stderr),
        );
        let (ready_tx, ready_rx) = mpsc::channel();
        drain_stdout(
            child.stdout.take().expect("stdout is piped"),
            Arc::clone(&stderr),
            ready_tx,
        );

        let endpoint = match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(endpoint) => endpoint,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Stdout closed before the ready line: the child died.
                let status = child.wait().ok();
                let _ = stderr_thread.join();
                panic!(
                    "the emulator exited before it was ready ({}); its stderr:\n{}",
                    describe_status(status),
                    lock(&stderr).text()
                );
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let status = child.wait().ok();
                let _ = stderr_thread.join();
                panic!(
                    "the emulator was not ready within {READY_TIMEOUT:?} ({}); its stderr:\n{}",
                    describe_status(status),
                    lock(&stderr).text()
                );
            }
        };

        let agent: ureq::Agent = ureq::Agent::config_builder()
            .proxy(None)
            .http_status_as_error(false)
            .timeout_global(Some(CONTROL_TIMEOUT))
            .build()
            .into();

        Emulator {
            child,
            stdin,
            endpoint,
            agent,
            stderr,
        }
    }

    /// The endpoint of every emulated service, `http://127.0.0.1:PORT`.
    pub fn endpoint_url(&self) -> &str {
        &self.endpoint
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines the emulator wrote to stderr (moto's tracebacks end up here).
    pub fn stderr_tail(&self) -> String {
        lock(&self.stderr).text()
    }

    /// An SDK config for the emulator with the dummy credentials of the organization's
    /// management account (`123456789012`), in `us-east-1`.
    pub async fn sdk_config(&self) -> SdkConfig {
        self.sdk_config_with(Credentials::new(
            DUMMY_CREDENTIAL,
            DUMMY_CREDENTIAL,
            None,
            None,
            "keyturn-emulator",
        ))
        .await
    }

    /// An SDK config for the emulator signing with the given credentials, for example
    /// an IAM user's new access key or credentials from STS AssumeRole.
    pub async fn sdk_config_with(&self, credentials: Credentials) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .credentials_provider(credentials)
            .load()
            .await
    }

    /// Environment variables that point a spawned process (the keyturn binary) at this
    /// emulator with the management account's dummy credentials. The shared config
    /// and credentials files are pointed at `/dev/null` so a developer's `~/.aws`
    /// cannot leak in; also remove [`ENV_TO_REMOVE`] (see [`Emulator::configure`]).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", DUMMY_CREDENTIAL),
            ("AWS_SECRET_ACCESS_KEY", DUMMY_CREDENTIAL),
            ("AWS_REGION", REGION),
            ("AWS_DEFAULT_REGION", REGION),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
    }

    /// Sets [`Emulator::env`] on a command and removes [`ENV_TO_REMOVE`] from it.
    pub fn configure<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        for name in ENV_TO_REMOVE {
            command.env_remove(name);
        }
        command.envs(self.env())
    }

    /// Whether the emulator answers its health check.
    pub async fn health(&self) -> bool {
        let (status, body) = self.control_raw("GET", "health", None).await;
        status == 200 && body.get("ok") == Some(&Value::Bool(true))
    }

    /// Changes an IAM access key: its creation date if `create_date` is given, and its
    /// last-used data if `last_used` is given (`Some(None)`: never used). Panics if no
    /// IAM user in any account owns the key.
    pub async fn set_access_key(
        &self,
        access_key_id: &str,
        create_date: Option<DateTime<Utc>>,
        last_used: Option<Option<LastUsed>>,
    ) -> AccessKeyOwner {
        let mut body = json!({ "access_key_id": access_key_id });
        if let Some(date) = create_date {
            body["create_date"] = json!(rfc3339(date));
        }
        match last_used {
            None => {}
            Some(None) => body["last_used"] = Value::Null,
            Some(Some(used)) => {
                body["last_used"] = json!({
                    "date": rfc3339(used.at),
                    "service": used.service,
                    "region": used.region,
                });
            }
        }
        self.control("POST", "iam/access-key", Some(body)).await
    }

    /// Replaces the fault rules.
    pub async fn set_faults(&self, rules: &[FaultRule]) {
        let _: Value = self
            .control("POST", "faults", Some(json!({ "rules": rules })))
            .await;
    }

    /// Removes every fault rule.
    pub async fn clear_faults(&self) {
        let _: Value = self.control("DELETE", "faults", None).await;
    }

    /// The fault rules in force, with how often each matched and fired.
    pub async fn faults(&self) -> Vec<FaultStatus> {
        #[derive(Deserialize)]
        struct Rules {
            rules: Vec<FaultStatus>,
        }
        let rules: Rules = self.control("GET", "faults", None).await;
        rules.rules
    }

    /// The request counters.
    pub async fn counters(&self) -> Counters {
        self.control("GET", "counters", None).await
    }

    /// Sets the request counters back to zero.
    pub async fn reset_counters(&self) {
        let _: Value = self.control("POST", "counters/reset", None).await;
    }

    /// Every AssumeRole request the emulator received, in order, with its parameters
    /// (moto itself keeps no source identity).
    pub async fn assume_role_requests(&self) -> Vec<AssumeRoleRequest> {
        #[derive(Deserialize)]
        struct Requests {
            requests: Vec<AssumeRoleRequest>,
        }
        let requests: Requests = self.control("GET", "sts/assume-role", None).await;
        requests.requests
    }

    /// Makes the roles of `accounts` refuse `sts:SetSourceIdentity`, as a trust policy
    /// without that action does: AssumeRole with a source identity answers AccessDenied.
    pub async fn deny_source_identity(&self, accounts: &[&str]) {
        let _: Value = self
            .control(
                "POST",
                "sts/assume-role",
                Some(json!({ "deny_source_identity": accounts })),
            )
            .await;
    }

    /// The emulator process's CPU time and peak memory.
    pub async fn process_stats(&self) -> ProcessStats {
        self.control("GET", "process", None).await
    }

    /// Makes a control call that must answer 200 with a body of type `T`.
    async fn control<T: serde::de::DeserializeOwned>(
        &self,
        method: &'static str,
        path: &'static str,
        body: Option<Value>,
    ) -> T {
        let (status, answer) = self.control_raw(method, path, body).await;
        if status != 200 {
            panic!(
                "emulator control call {method} /_keyturn/{path} answered {status}: {answer}\n\
                 emulator stderr:\n{}",
                self.stderr_tail()
            );
        }
        serde_json::from_value(answer.clone()).unwrap_or_else(|err| {
            panic!("emulator control call {method} /_keyturn/{path} answered {answer}: {err}")
        })
    }

    /// Makes a control call and returns its status and JSON body.
    async fn control_raw(
        &self,
        method: &'static str,
        path: &'static str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let agent = self.agent.clone();
        let url = format!("{}/_keyturn/{path}", self.endpoint);
        let outcome = tokio::task::spawn_blocking(move || call(&agent, method, &url, body))
            .await
            .expect("the control call's blocking task panicked");
        outcome.unwrap_or_else(|err| {
            panic!(
                "emulator control call {method} /_keyturn/{path} failed: {err}\n\
                 emulator stderr:\n{}",
                self.stderr_tail()
            )
        })
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // Closing stdin alone would stop it; killing makes it immediate.
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One blocking HTTP call with a JSON body (if any) and a JSON answer.
fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let result = match method {
        "GET" => agent.get(url).call(),
        "DELETE" => agent.delete(url).call(),
        "POST" => agent
            .post(url)
            .header("content-type", "application/json")
            .send(payload.as_bytes()),
        other => return Err(format!("unsupported method {other}")),
    };
    let response = result.map_err(|err| err.to_string())?;
    let status = response.status().as_u16();
    let text = response
        .into_body()
        .read_to_string()
        .map_err(|err| err.to_string())?;
    let value = serde_json::from_str(&text)
        .map_err(|err| format!("answer {status} is not JSON ({err}): {text}"))?;
    Ok((status, value))
}

/// Reads the child's stdout: sends the endpoint of the ready line, keeps the rest.
fn drain_stdout(
    stdout: impl Read + Send + 'static,
    tail: Arc<Mutex<Tail>>,
    ready: mpsc::Sender<String>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("emulator-stdout".into())
        .spawn(move || {
            let mut ready = Some(ready);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match (line.strip_prefix(READY_PREFIX), ready.take()) {
                    (Some(endpoint), Some(sender)) => {
                        let _ = sender.send(endpoint.trim().to_owned());
                    }
                    (_, sender) => {
                        ready = sender;
                        lock(&tail).push(format!("[stdout] {line}\n").as_bytes());
                    }
                }
            }
        })
        .expect("could not spawn the emulator's stdout reader")
}

/// Reads the child's stderr until it closes, keeping its tail for error messages.
/// With `KEYTURN_EMULATOR_STDERR=1` the lines are also copied to this process's stderr.
fn drain_stderr(stderr: impl Read + Send + 'static, tail: Arc<Mutex<Tail>>) -> JoinHandle<()> {
    let echo = std::env::var_os("KEYTURN_EMULATOR_STDERR").is_some_and(|v| v == "1");
    std::thread::Builder::new()
        .name("emulator-stderr".into())
        .spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                if echo {
                    eprint!("[emulator] {}", String::from_utf8_lossy(&line));
                }
                lock(&tail).push(&line);
                line.clear();
            }
        })
        .expect("could not spawn the emulator's stderr reader")
}

fn lock(tail: &Mutex<Tail>) -> std::sync::MutexGuard<'_, Tail> {
    tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn describe_status(status: Option<ExitStatus>) -> String {
    match status {
        Some(status) => status.to_string(),
        None => "exit status unknown".to_owned(),
    }
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}
