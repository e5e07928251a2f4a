//! gitfleet hub: follows Git repositories, places Apps on clusters, sends each spoke its desired
//! state over mutual TLS, and keeps everything it learns in an embedded sled store. Also the
//! library behind the `gitfleet` admin CLI.

pub mod cli;
pub mod client;
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
pub mod resources;
pub mod runtime;
pub mod store;
pub mod telemetry;
pub mod webhook;
