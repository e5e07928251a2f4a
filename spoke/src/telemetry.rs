//! The spoke's logs and traces: gitfleet-support's telemetry as `gitfleet-spoke`.

pub use gitfleet_support::telemetry::*;

/// What the spoke's spans are exported as unless `OTEL_SERVICE_NAME` says otherwise.
pub const SERVICE_NAME: &str = "gitfleet-spoke";

/// Sets up logging and, when the environment names an OTLP endpoint, span export.
pub fn init(format: LogFormat) -> Telemetry {
    gitfleet_support::telemetry::init(SERVICE_NAME, format)
}
