//! gitfleet hub: follows Git repositories, places Apps on clusters, sends each spoke its desired
//! state over mutual TLS, and keeps everything it learns in an embedded sled store. The `gitfleet`
//! admin CLI is the `gitfleet-cli` crate.

/// The process's memory allocator (jemalloc), for the hub's binaries.
pub use gitfleet_support::allocator;
pub mod charts;
pub mod credentials;
pub mod dashboard;
pub mod engine;
pub mod git;
pub mod grpc;
pub mod http;
pub mod kube_api;
pub mod leadership;
pub mod listener;
pub mod metrics;
pub mod pki;
pub mod runtime;
pub mod store;
pub mod telemetry;

/// The pure decisions (resources, the fleet's placement, desired state and rollouts, the hub's
/// model, link decisions, fleet sync plans, webhook verification) live in gitfleet-core, which
/// Cargo keeps free of IO; `crate::fleet`, `crate::model` and the rest stay their paths inside
/// the hub.
pub use gitfleet_core::{fleet, fleetsync, health_rules, link, model, resources, webhook};
