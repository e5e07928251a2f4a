//! End-to-end and fault tests of the whole product (hub and spoke processes, kubesim, Git).
//!
//! One test binary per crate: each file here is a module of it (linking one binary instead of
//! one per file saves minutes of CI and gigabytes of disk). Run one file's tests with
//! `cargo nextest run -p gitfleet-e2e --test e2e <file>::`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(feature = "etcd")]
#[path = "../../hub/tests/support/etcd.rs"]
mod etcd;

mod audit;
mod cert_rotation;
mod change_control;
mod dashboard;
mod diff_live;
mod faults;
mod freeze_self_heal;
mod ha_faults;
mod health_rules;
mod helm_charts;
mod hub_failover;
mod hub_restart;
mod kube_api;
mod metrics;
mod notifications;
mod projects;
mod rollouts;
mod signed_commits;
mod spoke_agent;
mod spoke_offline;
mod spoke_watches;
mod sync_hooks;
mod tracing;
mod walking_skeleton;
mod watch;
