//! gitfleet spoke agent: dials the hub, fetches the exact commit of each Target, renders and
//! applies it to its cluster with server-side apply, and reports status back.
//!
//! Decisions live in pure modules (`sync`, `desired`, `outbox`, `hubs`); adapters sit at the edges:
//! `git` (git2), `cluster` (kube-rs), `link` and `identity` (gRPC), `store` (files in the data
//! directory). `agent` runs a worker per Target; `runtime` wires everything together.

pub mod agent;
pub use gitfleet_support::allocator;
pub mod charts;
pub mod cluster;
pub mod desired;
pub mod git;
pub mod helm;
pub mod http;
pub mod hubs;
pub mod identity;
pub mod kustomize;
pub mod link;
pub mod metrics;
pub mod model;
pub mod outbox;
pub mod process;
pub mod renderer;
pub mod runtime;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod watch;

pub use cluster::KubeSource;
pub use runtime::{SpokeConfig, SpokeError, SpokeHandle, start};
