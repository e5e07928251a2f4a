//! The hub's logs and traces: gitfleet-support's telemetry under the hub's service name.

pub use gitfleet_support::telemetry::*;

/// The service name the hub's spans carry unless `OTEL_SERVICE_NAME` says otherwise.
pub const SERVICE_NAME: &str = "gitfleet-hub";

/// Installs the hub binary's global subscriber (see [`gitfleet_support::telemetry::init`]).
pub fn init(format: LogFormat) -> Telemetry {
    gitfleet_support::telemetry::init(SERVICE_NAME, format)
}

/// Installs a subscriber exporting the hub's spans to `endpoint`, whatever the environment says.
pub fn init_with_endpoint(endpoint: &str) -> Result<Telemetry, TelemetryError> {
    gitfleet_support::telemetry::init_with_endpoint(SERVICE_NAME, endpoint)
}
