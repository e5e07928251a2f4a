//! `gitfleet diff -f` against a real hub, through the real binary: exit 0 when the hub has what
//! the files say, 1 with a diff when it does not, 2 when the files cannot be compared; nothing
//! is ever stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Output;

use gitfleet_cli::cli::diff::DiffReport;
use support::*;

const REPO: &str = "apiVersion: gitfleet.dev/v1
kind: Repo
metadata: { name: platform }
spec:
  url: https://git.example.com/platform.git
";

fn app(namespace: &str) -> String {
    format!(
        "apiVersion: gitfleet.dev/v1
kind: App
metadata: {{ name: web }}
spec:
  repo: platform
  path: apps/web
  namespace: {namespace}
  targets:
    - clusterSelector: {{ matchLabels: {{ env: dev }} }}
"
    )
}

/// The `gitfleet` binary, off the runtime so the in-process hub keeps serving.
async fn gitfleet(config: &Path, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_gitfleet"));
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("GITFLEET_CONTEXT")
        .env_remove("GITFLEET_OUTPUT")
        .env_remove("GITFLEET_COLOR");
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[tokio::test]
async fn diff_shows_what_apply_would_change_and_exits_like_diff() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let admin = hub.admin_config_path().to_owned();
    let files = tempfile::tempdir().unwrap();
    let fleet = write(
        files.path(),
        "fleet.yaml",
        &format!("{REPO}---\n{}", app("web")),
    );
    let fleet = fleet.to_str().unwrap();

    // Nothing stored yet: both would be created, exit 1, and the diff is all additions.
    let out = gitfleet(&admin, &["diff", "-f", fleet]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        out.stderr.is_empty(),
        "differences are no error: {}",
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("repo/platform created ("), "{stdout}");
    assert!(stdout.contains("+  namespace: web\n"), "{stdout}");
    let get = gitfleet(&admin, &["get", "all", "-o", "json"]).await;
    assert!(
        !text(&get.stdout).contains("platform"),
        "diff stores nothing: {}",
        text(&get.stdout)
    );

    // Applied: no differences, exit 0.
    let out = gitfleet(&admin, &["apply", "-f", fleet]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = gitfleet(&admin, &["diff", "-f", fleet]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("repo/platform unchanged ({fleet}#0)\napp/web unchanged ({fleet}#1)\n")
    );

    // One field changed: only that line differs, in the JSON report too.
    let changed = write(files.path(), "web.yaml", &app("web-v2"));
    let out = gitfleet(
        &admin,
        &["diff", "-f", changed.to_str().unwrap(), "-o", "json"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: DiffReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report.differences, 1);
    assert_eq!(report.resources[0].action, "configured");
    let diff = report.resources[0].diff.as_deref().unwrap();
    let changes: Vec<&str> = diff
        .lines()
        .skip(2)
        .filter(|l| l.starts_with('+') || l.starts_with('-'))
        .collect();
    assert_eq!(
        changes,
        ["-  namespace: web", "+  namespace: web-v2"],
        "{diff}"
    );

    // Invalid input: the hub's field-path error, exit 2 (not 1, which means "differs").
    let bad = write(
        files.path(),
        "bad.yaml",
        &app("web").replace("matchLabels", "matchLabel"),
    );
    let out = gitfleet(&admin, &["diff", "-f", bad.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("spec.targets[0].clusterSelector"),
        "{stderr}"
    );
    let out = gitfleet(&admin, &["diff", "-f", "/nonexistent/fleet.yaml"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = gitfleet(&admin, &["diff"]).await;
    assert_eq!(out.status.code(), Some(2), "usage error");

    // The namespace the hub stores is still the applied one.
    let out = gitfleet(&admin, &["get", "app", "web", "-o", "json"]).await;
    assert!(
        text(&out.stdout).contains("\"namespace\": \"web\""),
        "{}",
        text(&out.stdout)
    );
}
