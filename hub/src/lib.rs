//! gitfleet hub: follows Git repositories, places Apps on clusters, sends each spoke its desired
//! state over mutual TLS, and keeps everything it learns in an embedded sled store. The `gitfleet`
//! admin CLI is the `gitfleet-cli` crate.

pub mod credentials;
pub mod engine;
pub mod fleet;
pub mod fleetsync;
pub mod git;
pub mod grpc;
pub mod http;
pub mod link;
pub mod metrics;
pub mod model;
pub mod pki;
pub mod runtime;
pub mod store;
pub mod telemetry;
pub mod webhook;

/// The resources live in gitfleet-core, which the CLI shares; `crate::resources` stays their
/// path inside the hub.
pub use gitfleet_core::resources;
