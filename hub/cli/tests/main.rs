//! The admin CLI's tests: the real `gitfleet` binary against a real hub.
//!
//! One test binary per crate: each file here is a module of it (linking one binary instead of
//! one per file saves minutes of CI and gigabytes of disk). Run one file's tests with
//! `cargo nextest run -p gitfleet-cli --test cli <file>::`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/support/mod.rs"]
mod support;

mod cli_admin;
mod cli_diff;
mod cli_exit_codes;
mod cli_freeze;
mod cli_hub;
mod cli_notifier;
mod cli_users;
