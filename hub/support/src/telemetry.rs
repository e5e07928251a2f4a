//! Logs and traces of every gitfleet binary (the service name is a parameter): one tracing
//! registry with an env filter (`RUST_LOG`, default `info`), a fmt layer whose lines start with
//! the trace id when there is one (or, with [`LogFormat::Json`], one JSON object per line with a
//! `trace_id` key, for log pipelines), and an OpenTelemetry layer exporting spans over OTLP/gRPC,
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

/// How log lines are written to stdout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// For people: `trace_id=… 2026-12-04T05:00:00Z  INFO span{field=…}: message key=value`.
    #[default]
    Text,
    /// For log pipelines (Loki, Elasticsearch, Cloud Logging): one JSON object per line with
    /// `timestamp`, `level`, `fields` (the message and the event's fields), `span` and `spans`
    /// (the spans the event is in, with their fields) and, inside a trace, `trace_id`.
    Json,
}

/// A `--log-format` value that is neither `text` nor `json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("log format {0:?} is not one of text, json")]
pub struct UnknownLogFormat(pub String);

impl std::str::FromStr for LogFormat {
    type Err = UnknownLogFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(UnknownLogFormat(s.to_owned())),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
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
pub fn init(service: &'static str, format: LogFormat) -> Telemetry {
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
    install(service, provider, format).unwrap_or_default()
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
    install(service, Some(provider(service, exporter)), LogFormat::Text)
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
    format: LogFormat,
) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service))
            .with_filter(filter_fn(|meta| {
                !(meta.is_span() && NOT_EXPORTED.contains(&meta.name()))
            }))
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(log_layer(format, ansi, std::io::stdout))
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(Telemetry { provider })
}

/// The fmt layer of `format` writing to `writer`.
fn log_layer<S, W>(
    format: LogFormat,
    ansi: bool,
    writer: W,
) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Text => Box::new(
            tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .with_writer(writer)
                .event_format(WithTraceId(
                    tracing_subscriber::fmt::format().with_target(false),
                )),
        ),
        LogFormat::Json => Box::new(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(writer)
                .event_format(JsonWithTraceId(
                    tracing_subscriber::fmt::format()
                        .json()
                        .with_target(true)
                        .with_current_span(true)
                        .with_span_list(true),
                )),
        ),
    }
}

/// The trace id of the span the current event is in, when spans are traced.
fn current_trace_id() -> Option<opentelemetry::trace::TraceId> {
    // The OpenTelemetry layer makes an entered span's context the current one.
    let cx = opentelemetry::Context::current();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id())
}

/// A JSON log line with `"trace_id"` as its first key inside a trace: the JSON formatter is
/// run into a buffer and the key put in front of its fields.
struct JsonWithTraceId(
    tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json>,
);

impl<S> FormatEvent<S, tracing_subscriber::fmt::format::JsonFields> for JsonWithTraceId
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, tracing_subscriber::fmt::format::JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let Some(trace_id) = current_trace_id() else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"trace_id\":\"{trace_id}\",{rest}"),
            None => writer.write_str(&line),
        }
    }
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
        if let Some(trace_id) = current_trace_id() {
            write!(writer, "trace_id={trace_id} ")?;
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
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Log lines written by a test's subscriber.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// Logs `event` inside a span `sync{app="web"}` with `format`, traced when `traced`.
    fn log_one(format: LogFormat, traced: bool) -> String {
        let lines = Lines::default();
        let writer = lines.clone();
        let provider = SdkTracerProvider::builder().build();
        let otel =
            traced.then(|| tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let subscriber =
            tracing_subscriber::registry()
                .with(otel)
                .with(log_layer(format, false, move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("sync", app = "web");
            let _entered = span.enter();
            tracing::warn!(cluster = "eu-1", "apply failed");
        });
        lines.text()
    }

    #[test]
    fn log_formats_parse_and_only_known_names() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!(" Text ".parse::<LogFormat>(), Ok(LogFormat::Text));
        let error = "yaml".parse::<LogFormat>().unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"log format "yaml" is not one of text, json"#
        );
        assert_eq!(LogFormat::Json.to_string(), "json");
    }

    #[test]
    fn json_lines_carry_the_message_the_fields_the_span_and_the_trace_id() {
        let out = log_one(LogFormat::Json, true);
        let line: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
        assert_eq!(line["level"], "WARN", "{line}");
        assert_eq!(line["fields"]["message"], "apply failed", "{line}");
        assert_eq!(line["fields"]["cluster"], "eu-1", "{line}");
        assert_eq!(line["span"]["name"], "sync", "{line}");
        assert_eq!(line["span"]["app"], "web", "{line}");
        let trace_id = line["trace_id"].as_str().expect("a trace_id");
        assert_eq!(trace_id.len(), 32, "{trace_id}");
        assert!(
            trace_id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{trace_id}"
        );
        assert!(out.starts_with("{\"trace_id\":"), "{out}");
    }

    #[test]
    fn json_lines_outside_a_trace_have_no_trace_id() {
        let out = log_one(LogFormat::Json, false);
        let line: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
        assert_eq!(line["fields"]["message"], "apply failed", "{line}");
        assert!(line.get("trace_id").is_none(), "{line}");
    }

    #[test]
    fn text_lines_start_with_the_trace_id_inside_a_trace() {
        let out = log_one(LogFormat::Text, true);
        assert!(out.starts_with("trace_id="), "{out}");
        assert!(
            out.contains("sync{app=\"web\"}: apply failed cluster=\"eu-1\""),
            "{out}"
        );
        assert!(
            serde_json::from_str::<serde_json::Value>(out.trim()).is_err(),
            "{out}"
        );
    }

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
