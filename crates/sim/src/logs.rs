//! Every log line and trace span the engine writes during a seed, at every level, as
//! an operator would see them with `RUST_LOG=trace` (the message and every field of
//! every event and span, formatted), searched for a secret: the simulated secrets all
//! contain [`MARK`], so one substring search finds any of them.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// What every simulated secret contains (`world::World::create_key`).
pub const MARK: &str = "simsecret";

/// What held a secret during one seed.
#[derive(Debug, Clone, Default)]
pub struct Leaks(Arc<Mutex<Vec<String>>>);

impl Leaks {
    /// A subscriber that formats every event and span field at every level into this
    /// check.
    pub fn subscriber(&self) -> impl Subscriber + Send + Sync + 'static {
        tracing_subscriber::registry().with(self.clone())
    }

    /// The broken invariants: a log line or span with a secret in it (named by where
    /// it was written, never quoted).
    pub fn found(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|at| format!("a secret is in a log line or span: {at}"))
            .collect()
    }

    fn check(&self, kind: &str, metadata: &tracing::Metadata<'_>, fields: impl FnOnce(&mut Text)) {
        let mut text = Text(String::new());
        fields(&mut text);
        if text.0.contains(MARK) {
            let field = text
                .0
                .split('\n')
                .find(|f| f.contains(MARK))
                .and_then(|f| f.split('=').next())
                .unwrap_or("?")
                .to_owned();
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(format!(
                    "{kind} {} at {}:{}, field {field}",
                    metadata.name(),
                    metadata.file().unwrap_or("?"),
                    metadata.line().unwrap_or(0)
                ));
        }
    }
}

/// The fields of an event or span, one `name=value` a line.
#[derive(Debug)]
struct Text(String);

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = writeln!(self.0, "{}={value}", field.name());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let _ = writeln!(self.0, "{}={value}", field.name());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = writeln!(self.0, "{}={value:?}", field.name());
    }
}

impl<S> Layer<S> for Leaks
where
    S: Subscriber + for<'lookup> tracing_subscriber::registry::LookupSpan<'lookup>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        self.check("span", attrs.metadata(), |text| attrs.record(text));
    }

    fn on_record(&self, span: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(metadata) = ctx.metadata(span) {
            self.check("span", metadata, |text| values.record(text));
        }
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        self.check("event", event.metadata(), |text| event.record(text));
    }
}
