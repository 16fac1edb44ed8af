//! Logs, traces and metrics of the binary (see `docs/telemetry.md`).
//!
//! Logs are `tracing` events written to stderr as text or JSON lines. Traces and metrics
//! are exported over OTLP (HTTP, protobuf) only when the standard variables ask for it:
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, or the per-signal `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
//! `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`, unless `OTEL_SDK_DISABLED=true`. Otherwise no
//! exporter, no background thread and no meter provider exist: the worker's spans go to
//! the log layer only and its metrics to OpenTelemetry's no-op meter.
//!
//! The exporters run on threads of their own (a batch span processor and a periodic
//! metric reader), so they are built before the async runtime and shut down after it,
//! which flushes what is left: [`Telemetry::shutdown`] runs on every way out of `main`.

use std::env;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{MetricExporter, Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::args::LogFormat;

/// The service name when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
const DEFAULT_SERVICE_NAME: &str = "keyturn";

/// Whether log lines are JSON (`--log-format json`): progress is then logged as events
/// too, so that stderr stays one JSON object per line.
static LOG_JSON: AtomicBool = AtomicBool::new(false);

/// Whether `--log-format json` was asked for.
pub fn logs_are_json() -> bool {
    LOG_JSON.load(Ordering::Relaxed)
}

/// Which OTLP signals the environment asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wanted {
    /// Export traces.
    pub traces: bool,
    /// Export metrics.
    pub metrics: bool,
}

/// Reads the standard `OTEL_*` variables through `var` (the process environment in
/// production). An endpoint that is not plain `http://` or a protocol other than
/// `http/protobuf` is refused with a message that says why.
pub fn wanted(var: impl Fn(&str) -> Option<String>) -> Result<Wanted, String> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(Wanted::default());
    }
    let general = set("OTEL_EXPORTER_OTLP_ENDPOINT");
    let traces = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let metrics = set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
    let endpoints = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &general),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &traces),
        ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", &metrics),
    ];
    for (name, value) in endpoints {
        if let Some(value) = value
            && !value.trim().to_ascii_lowercase().starts_with("http://")
        {
            return Err(format!(
                "{name}={value:?}: keyturn exports OTLP over plain HTTP (http://host:4318), \
                 typically to a local OpenTelemetry Collector that forwards it over TLS"
            ));
        }
    }
    for name in [
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    ] {
        if let Some(protocol) = set(name)
            && protocol.trim() != "http/protobuf"
        {
            return Err(format!(
                "{name}={protocol:?}: keyturn exports OTLP as http/protobuf only"
            ));
        }
    }
    Ok(Wanted {
        traces: general.is_some() || traces.is_some(),
        metrics: general.is_some() || metrics.is_some(),
    })
}

/// The OpenTelemetry resource: the SDK's detectors (`OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`), with `service.name=keyturn` unless one was given, and
/// keyturn's version.
fn resource() -> Resource {
    let named = env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| {
            v.split(',')
                .any(|kv| kv.trim().starts_with("service.name="))
        });
    let mut builder = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if !named {
        builder = builder.with_service_name(DEFAULT_SERVICE_NAME);
    }
    builder.build()
}

/// What was installed; shut it down (flushing) before the process ends.
#[derive(Debug, Default)]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Exports what is still buffered and stops the exporters' threads. Failures are
    /// reported on stderr; they never change the command's exit code.
    pub fn shutdown(self) {
        if let Some(provider) = self.tracer_provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: could not export the last traces: {e}");
        }
        if let Some(provider) = self.meter_provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: could not export the last metrics: {e}");
        }
    }
}

/// The log filter: `KEYTURN_LOG` when set, else a level from `-v` (warnings by default).
fn log_filter(verbose: u8) -> tracing_subscriber::EnvFilter {
    let default = match verbose {
        0 => "warn",
        1 => "info,aws_config=warn,aws_smithy_runtime=warn",
        _ => "debug",
    };
    tracing_subscriber::EnvFilter::try_from_env("KEYTURN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
}

/// Installs logging to stderr and, when the environment asks for it, the OTLP exporters.
/// Must run outside the async runtime (the exporters' HTTP client has a runtime of its own).
pub fn init(log_format: LogFormat, verbose: u8) -> Result<Telemetry, String> {
    let wanted = wanted(|name| env::var(name).ok())?;
    LOG_JSON.store(log_format == LogFormat::Json, Ordering::Relaxed);
    let mut telemetry = Telemetry::default();
    if wanted.traces || wanted.metrics {
        let resource = resource();
        if wanted.traces {
            let exporter = SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .build()
                .map_err(|e| format!("cannot set up the OTLP trace exporter: {e}"))?;
            telemetry.tracer_provider = Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource.clone())
                    .build(),
            );
        }
        if wanted.metrics {
            let exporter = MetricExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .build()
                .map_err(|e| format!("cannot set up the OTLP metric exporter: {e}"))?;
            let provider = SdkMeterProvider::builder()
                .with_periodic_exporter(exporter)
                .with_resource(resource)
                .build();
            opentelemetry::global::set_meter_provider(provider.clone());
            telemetry.meter_provider = Some(provider);
        }
    }

    let logs = match log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    }
    .with_filter(log_filter(verbose));
    // Spans go to OpenTelemetry whatever the log level: keyturn's own, at INFO and above
    // (not the SDK's internal DEBUG spans, which say nothing an operator needs).
    let traces = telemetry.tracer_provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("keyturn"))
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.target().starts_with("keyturn") && *meta.level() <= tracing::Level::INFO
            }))
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .map_err(|e| format!("cannot set up logging: {e}"))?;
    Ok(telemetry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted_with(vars: &[(&str, &str)]) -> Result<Wanted, String> {
        wanted(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn nothing_is_exported_unless_an_endpoint_is_set() {
        assert_eq!(wanted_with(&[]), Ok(Wanted::default()));
        assert_eq!(
            wanted_with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]),
            Ok(Wanted::default())
        );
        assert_eq!(
            wanted_with(&[("OTEL_SERVICE_NAME", "x")]),
            Ok(Wanted::default())
        );
    }

    #[test]
    fn the_general_endpoint_exports_both_and_per_signal_endpoints_one_each() {
        let both = Wanted {
            traces: true,
            metrics: true,
        };
        assert_eq!(
            wanted_with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")]),
            Ok(both)
        );
        assert_eq!(
            wanted_with(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces"
            )]),
            Ok(Wanted {
                traces: true,
                metrics: false
            })
        );
        assert_eq!(
            wanted_with(&[(
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "http://c:4318/v1/metrics"
            )]),
            Ok(Wanted {
                traces: false,
                metrics: true
            })
        );
    }

    #[test]
    fn the_sdk_can_be_disabled() {
        assert_eq!(
            wanted_with(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_SDK_DISABLED", "TRUE"),
            ]),
            Ok(Wanted::default())
        );
        assert!(
            wanted_with(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_SDK_DISABLED", "false"),
            ])
            .unwrap()
            .traces
        );
    }

    #[test]
    fn what_cannot_be_exported_is_refused_with_the_reason() {
        let https = wanted_with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel.example:4318")])
            .unwrap_err();
        assert!(https.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{https}");
        assert!(https.contains("plain HTTP"), "{https}");
        let grpc = wanted_with(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ])
        .unwrap_err();
        assert!(grpc.contains("http/protobuf"), "{grpc}");
    }
}
