//! The hub's integration tests: a real hub in a tempdir, fake spokes over real mutual TLS.
//!
//! One test binary per crate: each file here is a module of it (linking one binary instead of
//! one per file saves minutes of CI and gigabytes of disk). Run one file's tests with
//! `cargo nextest run -p gitfleet-hub --test hub <file>::`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/http.rs"]
mod http;

mod support;

mod cluster_labels;
mod dependencies;
mod diff_live;
mod durability;
mod engine;
mod etcd;
mod fleet_sync;
mod forward;
mod git;
mod git_daemon;
mod grpc_listener;
mod ha;
mod ha_trace;
mod init;
mod kube_crds;
mod kube_owned;
mod link;
mod monorepo;
mod notifications;
mod projects;
mod registration;
mod repo_secrets;
mod self_heal_holds;
mod signed_commits;
mod watch;
mod webhooks;
