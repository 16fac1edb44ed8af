//! What the worker tells observers: `tracing` spans for steps, OpenTelemetry metrics
//! (the API only: the binary installs an SDK and an exporter, or nothing), an SDK
//! interceptor that counts AWS calls and throttles, and a progress observer.
//!
//! Without a meter provider installed, every instrument here is OpenTelemetry's no-op:
//! recording costs a virtual call and nothing is kept or sent. The names and attributes
//! are documented in `docs/telemetry.md`.
//!
//! No label, attribute or field carries a secret: steps are labelled with their kind and
//! outcome, AWS calls with service and operation; key ids are span attributes only (never
//! metric labels: cardinality). The interceptor reads response status, headers and, for
//! error responses only, looks for a throttling code in the body; it never records a body.

use std::fmt::Debug;
use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use aws_config::SdkConfig;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use keyturn_planner::{AccessKeyId, UserName};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram};
use tracing::Instrument;
use tracing::field::Empty;

use crate::error::AwsFailure;

/// The instrumentation scope of every keyturn metric.
pub const METER: &str = "keyturn";

/// Throttled AWS answers seen by this process (for progress displays).
static THROTTLES: AtomicU64 = AtomicU64::new(0);

/// AWS requests sent by this process, every attempt counted (for progress displays).
static CALLS: AtomicU64 = AtomicU64::new(0);

/// Throttled AWS answers seen so far by this process.
pub fn throttles_so_far() -> u64 {
    THROTTLES.load(Ordering::Relaxed)
}

/// AWS requests sent so far by this process.
pub fn calls_so_far() -> u64 {
    CALLS.load(Ordering::Relaxed)
}

struct Instruments {
    steps: Counter<u64>,
    step_duration: Histogram<f64>,
    aws_calls: Counter<u64>,
    aws_throttles: Counter<u64>,
    aws_retries: Counter<u64>,
    keys: Gauge<u64>,
}

/// The instruments, created on first use from the global meter provider: the binary
/// installs its provider before any command runs.
fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter = opentelemetry::global::meter(METER);
        Instruments {
            steps: meter
                .u64_counter("keyturn.steps")
                .with_description("Rotation steps performed, by step kind and outcome")
                .build(),
            step_duration: meter
                .f64_histogram("keyturn.step.duration")
                .with_unit("s")
                .with_description("How long a rotation step took, AWS retries included")
                .build(),
            aws_calls: meter
                .u64_counter("keyturn.aws.calls")
                .with_description("AWS requests sent (every attempt), by service and operation")
                .build(),
            aws_throttles: meter
                .u64_counter("keyturn.aws.throttles")
                .with_description("AWS answers that throttled a request, by service and operation")
                .build(),
            aws_retries: meter
                .u64_counter("keyturn.aws.retries")
                .with_description("AWS requests that were retries of an earlier attempt")
                .build(),
            keys: meter
                .u64_gauge("keyturn.keys")
                .with_description(
                    "Keys of a campaign by state, after a run (from the journal's fold)",
                )
                .build(),
        }
    })
}

/// Records how many keys of `campaign` are in each state (the status words of
/// `keyturn status`), as the `keyturn.keys` gauge.
pub fn record_key_states<'a>(campaign: &str, counts: impl IntoIterator<Item = (&'a str, usize)>) {
    let keys = &instruments().keys;
    for (state, n) in counts {
        keys.record(
            n as u64,
            &[
                KeyValue::new("campaign", campaign.to_owned()),
                KeyValue::new("state", state.to_owned()),
            ],
        );
    }
}

tokio::task_local! {
    /// The `keyturn.step` span of the step under way in this task, for the interceptor.
    static STEP_SPAN: tracing::Span;
}

/// Runs one rotation step (`kind`: `create-replacement`, `deactivate`, …, or
/// `check-last-use`, `find-delivery`) on `key` of `user` in a `keyturn.step` span, and
/// counts it. The span gets the outcome, the AWS request id of the step's last call
/// and, on failure, the AWS error code and operation.
pub async fn step<T>(
    kind: &'static str,
    user: &UserName,
    key: &AccessKeyId,
    work: impl Future<Output = Result<T, AwsFailure>>,
) -> Result<T, AwsFailure> {
    let span = tracing::info_span!(
        "keyturn.step",
        step.kind = kind,
        user = %user,
        key.id = %key,
        outcome = Empty,
        aws.service = Empty,
        aws.operation = Empty,
        aws.request_id = Empty,
        aws.error_code = Empty,
    );
    let started = Instant::now();
    let result = STEP_SPAN
        .scope(span.clone(), work.instrument(span.clone()))
        .await;
    let outcome = if result.is_ok() { "ok" } else { "failed" };
    span.record("outcome", outcome);
    if let Err(failure) = &result {
        span.record("aws.error_code", failure.code.as_str());
        span.record("aws.operation", failure.operation);
    }
    let labels = [
        KeyValue::new("step", kind),
        KeyValue::new("outcome", outcome),
    ];
    let instruments = instruments();
    instruments.steps.add(1, &labels);
    instruments
        .step_duration
        .record(started.elapsed().as_secs_f64(), &labels);
    result
}

/// Codes with which AWS says a request was throttled.
const THROTTLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceededException",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
];

/// Whether an HTTP answer is a throttle: status 429, or an error status whose error code
/// (the `x-amzn-ErrorType` header of JSON protocols, else the code in the body) is a
/// throttling code.
fn is_throttle(status: u16, error_type: Option<&str>, body: Option<&[u8]>) -> bool {
    if status == 429 {
        return true;
    }
    if status < 400 {
        return false;
    }
    let code = error_type
        .map(str::to_owned)
        .or_else(|| body.and_then(error_code));
    code.is_some_and(|code| {
        // `ThrottlingException:http://…` (header), `…v20120810#ThrottlingException` (JSON).
        let code = code.split(':').next().unwrap_or_default();
        let code = code.rsplit('#').next().unwrap_or_default();
        THROTTLE_CODES.contains(&code)
    })
}

/// The error code of an error answer's body: `<Code>…</Code>` (query and XML
/// protocols) or the `__type` / `code` member of a JSON document.
fn error_code(body: &[u8]) -> Option<String> {
    if body.len() > 64 * 1024 {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    if let Some(start) = text.find("<Code>") {
        let rest = &text[start + "<Code>".len()..];
        return rest
            .find("</Code>")
            .map(|end| rest[..end].trim().to_owned());
    }
    let doc: serde_json::Value = serde_json::from_str(text).ok()?;
    ["__type", "code", "Code"]
        .iter()
        .find_map(|field| doc.get(*field)?.as_str().map(str::to_owned))
}

/// An SDK interceptor, registered on every client the worker builds, that counts each
/// attempt (`keyturn.aws.calls`), throttles and retries by service and operation, and
/// puts the request id of the answer on the step span under way.
#[derive(Debug, Clone, Copy, Default)]
pub struct AwsCallTelemetry;

impl Intercept for AwsCallTelemetry {
    fn name(&self) -> &'static str {
        "KeyturnTelemetry"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, operation) = cfg
            .load::<Metadata>()
            .map(|m| (service_label(m.service()), m.name().to_owned()))
            .unwrap_or_else(|| ("unknown".to_owned(), "unknown".to_owned()));
        let labels = [
            KeyValue::new("service", service.clone()),
            KeyValue::new("operation", operation.clone()),
        ];
        let instruments = instruments();
        CALLS.fetch_add(1, Ordering::Relaxed);
        instruments.aws_calls.add(1, &labels);
        if cfg
            .load::<RequestAttempts>()
            .is_some_and(|a| a.attempts() > 1)
        {
            instruments.aws_retries.add(1, &labels);
        }
        let Some(response) = context.response() else {
            return Ok(());
        };
        let headers = response.headers();
        let status = response.status().as_u16();
        if is_throttle(
            status,
            headers.get("x-amzn-errortype"),
            (status >= 400).then(|| response.body().bytes()).flatten(),
        ) {
            THROTTLES.fetch_add(1, Ordering::Relaxed);
            instruments.aws_throttles.add(1, &labels);
        }
        let request_id = headers
            .get("x-amzn-requestid")
            .or_else(|| headers.get("x-amz-request-id"));
        let _ = STEP_SPAN.try_with(|span| {
            span.record("aws.service", service.as_str());
            span.record("aws.operation", operation.as_str());
            if let Some(id) = request_id {
                span.record("aws.request_id", id);
            }
        });
        Ok(())
    }
}

/// The service label of an SDK service id: lower case without spaces (`IAM` → `iam`,
/// `Secrets Manager` → `secretsmanager`), like the service's endpoint prefix.
fn service_label(sdk_id: &str) -> String {
    sdk_id
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// An IAM client of `config` with the telemetry interceptor.
pub fn iam_client(config: &SdkConfig) -> aws_sdk_iam::Client {
    aws_sdk_iam::Client::from_conf(
        aws_sdk_iam::config::Builder::from(config)
            .interceptor(AwsCallTelemetry)
            .build(),
    )
}

/// An Organizations client of `config` with the telemetry interceptor.
pub fn organizations_client(config: &SdkConfig) -> aws_sdk_organizations::Client {
    aws_sdk_organizations::Client::from_conf(
        aws_sdk_organizations::config::Builder::from(config)
            .interceptor(AwsCallTelemetry)
            .build(),
    )
}

/// An STS client of `config` with the telemetry interceptor.
pub fn sts_client(config: &SdkConfig) -> aws_sdk_sts::Client {
    aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::config::Builder::from(config)
            .interceptor(AwsCallTelemetry)
            .build(),
    )
}

/// Who watches a long command advance: the binary draws progress from these calls.
/// Every method is called from the worker's tasks and must return at once.
pub trait Progress: Send + Sync + Debug {
    /// A phase (`inventory`, `run`) starts with this many accounts.
    fn phase(&self, name: &'static str, accounts: usize);
    /// One more account of the phase is finished (read, worked, failed or busy).
    fn account_done(&self);
    /// The run did something to this key (created its replacement, deactivated it, …).
    fn key_acted(&self, key: &AccessKeyId);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_labels_are_endpoint_prefixes() {
        assert_eq!(service_label("IAM"), "iam");
        assert_eq!(service_label("Secrets Manager"), "secretsmanager");
        assert_eq!(service_label("Organizations"), "organizations");
    }

    #[test]
    fn throttles_are_recognised_in_every_protocol() {
        assert!(is_throttle(429, None, None));
        assert!(is_throttle(
            400,
            Some("ThrottlingException:http://internal.amazon.com/coral/"),
            None
        ));
        let query = b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>\
            <Message>Rate exceeded</Message></Error></ErrorResponse>";
        assert!(is_throttle(400, None, Some(query)));
        let json = br#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException"}"#;
        assert!(is_throttle(400, None, Some(json)));
        // Not throttles: success, other errors, a message that merely mentions throttling.
        assert!(!is_throttle(200, Some("ThrottlingException"), None));
        let denied =
            b"<Error><Code>AccessDenied</Code><Message>Throttling is fine</Message></Error>";
        assert!(!is_throttle(400, None, Some(denied)));
        assert!(!is_throttle(
            400,
            None,
            Some(br#"{"__type":"ResourceNotFoundException"}"#)
        ));
        assert!(!is_throttle(503, None, Some(b"Throttling, maybe")));
    }
}
