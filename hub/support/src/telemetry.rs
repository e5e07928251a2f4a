//! Logs and traces of every gitfleet binary (the service name is a parameter): one tracing
//! registry with an env filter (`RUST_LOG`, default `info`), a fmt layer whose lines start with
//! the trace id when there is one, and an OpenTelemetry layer exporting spans over OTLP/gRPC,
//! switched on only when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//! set (off, no span leaves the process and nothing is allocated for it).
//!
//! W3C trace context travels with desired state and status reports (`TraceContext` on the wire,
//! a plain map here): [`context_of`] writes a span's context, [`set_parent`] continues one.

use std::collections::{BTreeMap, HashMap};

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Span attributes of the change a span belongs to (see [`annotate`]).
pub const APP: &str = "gitfleet.app";
pub const CLUSTER: &str = "gitfleet.cluster";
pub const REVISION: &str = "gitfleet.revision";
/// OpenTelemetry semantic conventions for version control.
pub const VCS_URL: &str = "vcs.repository.url.full";
pub const VCS_REF: &str = "vcs.ref.head.name";
pub const VCS_REVISION: &str = "vcs.ref.head.revision";

/// Spans that live as long as a connection, a follower or a settled Target: they are not a step
/// of any one change, so they are not exported (each change's spans would otherwise hang off
/// one endless trace). They still frame log lines.
pub const NOT_EXPORTED: [&str; 3] = ["follow", "link", "watch"];

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot set up the OTLP exporter: {0}")]
    Exporter(String),
    #[error("a global tracing subscriber is already installed in this process")]
    AlreadyInstalled,
}

/// Keeps the exporter alive; [`Telemetry::shutdown`] sends what is still buffered.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans ended so far (blocks until the exporter answers).
    pub fn flush(&self) {
        if let Some(p) = &self.provider
            && let Err(e) = p.force_flush()
        {
            tracing::warn!(error = %e, "cannot flush spans");
        }
    }

    /// Flushes and stops the exporter.
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            tracing::warn!(error = %e, "cannot shut the span exporter down");
        }
    }
}

/// The OTLP endpoint configured in the environment, if any.
pub fn otlp_endpoint_from_env() -> Option<String> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok())
    .find(|v| !v.trim().is_empty())
}

/// Installs the global subscriber for the binary; exports spans when the environment names an
/// OTLP endpoint, as `service` (e.g. `gitfleet-hub`) unless `OTEL_SERVICE_NAME` says otherwise.
/// Call inside the Tokio runtime (the exporter is a tonic client). A second call (tests,
/// embedding) installs nothing.
pub fn init(service: &'static str) -> Telemetry {
    let provider = match otlp_endpoint_from_env() {
        // The exporter reads the endpoint, headers, timeout and compression from `OTEL_*`.
        Some(_) => match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
        {
            Ok(exporter) => Some(provider(service, exporter)),
            Err(e) => {
                eprintln!("tracing export is off: cannot set up the OTLP exporter: {e}");
                None
            }
        },
        None => None,
    };
    install(service, provider).unwrap_or_default()
}

/// Installs the global subscriber exporting spans of `service` to `endpoint` (e.g.
/// `http://127.0.0.1:4317`), whatever the environment says: for tests with their own OTLP
/// receiver.
pub fn init_with_endpoint(
    service: &'static str,
    endpoint: &str,
) -> Result<Telemetry, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    install(service, Some(provider(service, exporter)))
}

fn provider(
    service: &'static str,
    exporter: opentelemetry_otlp::SpanExporter,
) -> SdkTracerProvider {
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build()
}

fn install(
    service: &'static str,
    provider: Option<SdkTracerProvider>,
) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service))
            .with_filter(filter_fn(|meta| {
                !(meta.is_span() && NOT_EXPORTED.contains(&meta.name()))
            }))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                .event_format(WithTraceId(
                    tracing_subscriber::fmt::format().with_target(false),
                )),
        )
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(Telemetry { provider })
}

/// Starts each log line inside a trace with `trace_id=…`, so a log line leads to its trace.
struct WithTraceId<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        // The OpenTelemetry layer makes an entered span's context the current one.
        let cx = opentelemetry::Context::current();
        let span = cx.span();
        let sc = span.span_context();
        if sc.is_valid() {
            write!(writer, "trace_id={} ", sc.trace_id())?;
        }
        self.0.format_event(ctx, writer, event)
    }
}

/// The W3C trace context (`traceparent`, `tracestate`) of `span`; empty when spans are not
/// exported.
pub fn context_of(span: &tracing::Span) -> BTreeMap<String, String> {
    let cx = span.context();
    let mut fields = HashMap::new();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut fields);
    }
    fields.into_iter().collect()
}

/// Sets OpenTelemetry attributes on `span` (no-op when spans are not exported), e.g.
/// `annotate(&span, &[(APP, "web"), (CLUSTER, "eu-1")])`.
pub fn annotate(span: &tracing::Span, attributes: &[(&'static str, &str)]) {
    for (key, value) in attributes {
        span.set_attribute(*key, value.to_string());
    }
}

/// Makes `span` a child of the span `fields` describe (a W3C trace context from another process
/// or an earlier moment). Call before the span is first entered; does nothing when `fields`
/// hold no valid context or spans are not exported.
pub fn set_parent(span: &tracing::Span, fields: &BTreeMap<String, String>) {
    if fields.is_empty() {
        return;
    }
    let carrier: HashMap<String, String> = fields.clone().into_iter().collect();
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_subscriber_contexts_are_empty_and_parents_are_ignored() {
        let span = tracing::info_span!("sync");
        assert!(context_of(&span).is_empty());
        let mut fields = BTreeMap::new();
        fields.insert(
            "traceparent".to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        );
        set_parent(&span, &fields);
        set_parent(&span, &BTreeMap::new());
    }

    #[test]
    fn a_context_survives_the_round_trip_through_a_map() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let parent = tracing::info_span!("dispatch");
            let fields = context_of(&parent);
            let traceparent = fields.get("traceparent").expect("a traceparent");
            assert!(traceparent.starts_with("00-"), "{traceparent}");

            let child = tracing::info_span!(parent: None, "sync");
            set_parent(&child, &fields);
            let child_fields = context_of(&child);
            let trace_of = |f: &BTreeMap<String, String>| {
                f["traceparent"].split('-').nth(1).map(str::to_owned)
            };
            assert_eq!(trace_of(&fields), trace_of(&child_fields));
            assert_ne!(fields["traceparent"], child_fields["traceparent"]);
        });
    }
}
