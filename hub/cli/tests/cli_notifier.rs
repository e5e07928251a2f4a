//! Notifiers through the `gitfleet` CLI against the real hub, in-process: `apply -f`, `get`,
//! `notifier list` (last delivery, last error, waiting), `delete`, and who may apply a
//! hub-wide Notifier or a Project's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::path::{Path, PathBuf};

use gitfleet_cli::cli::notifier::NotifierListReport;
use gitfleet_cli::cli::{CliError, run_args};
use support::*;

async fn cli(config: &Path, args: &[&str]) -> Result<String, CliError> {
    let config = config.display().to_string();
    let argv: Vec<&str> = ["gitfleet", "--config", &config]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    let mut out = Vec::new();
    run_args(argv, &mut out).await?;
    Ok(String::from_utf8(out).unwrap())
}

async fn create_user(admin: &Path, dir: &Path, name: &str, role: &str, project: &str) -> PathBuf {
    let file = dir.join(format!("{name}.gitfleetconfig"));
    let file_arg = file.display().to_string();
    let mut args = vec!["user", "create", name, "-f", &file_arg, "--role", role];
    if !project.is_empty() {
        args.extend(["--project", project]);
    }
    cli(admin, &args).await.unwrap();
    file
}

fn write(dir: &Path, name: &str, yaml: &str) -> String {
    let file = dir.join(name);
    std::fs::write(&file, yaml).unwrap();
    file.display().to_string()
}

async fn list(config: &Path) -> NotifierListReport {
    serde_json::from_str(
        &cli(config, &["notifier", "list", "-o", "json"])
            .await
            .unwrap(),
    )
    .unwrap()
}

/// A port nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn notifiers_are_applied_listed_with_their_deliveries_and_deleted() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let admin = hub.admin_config_path().to_owned();
    let port = closed_port();
    let file = write(
        &data,
        "ops.yaml",
        &format!(
            "apiVersion: gitfleet.dev/v1
kind: Notifier
metadata: {{name: ops}}
spec:
  webhook: {{url: \"http://127.0.0.1:{port}/gitfleet\"}}
  events: [FreezeStarted, FreezeEnded]
"
        ),
    );
    let out = cli(&admin, &["apply", "-f", &file]).await.unwrap();
    assert!(out.contains("notifier/ops created"), "{out}");

    // Nothing delivered yet: never, nothing waiting.
    let table = cli(&admin, &["notifier", "list"]).await.unwrap();
    let header = table.lines().next().unwrap();
    for column in [
        "NAME",
        "SINK",
        "EVENTS",
        "LAST DELIVERY",
        "LAST ERROR",
        "PENDING",
    ] {
        assert!(header.contains(column), "{table}");
    }
    assert!(
        table.contains(&format!("webhook http://127.0.0.1:{port}/gitfleet"))
            && table.contains("FreezeStarted,FreezeEnded")
            && table.contains("never"),
        "{table}"
    );

    // A freeze starts; the receiver is down: the delivery waits, and says why.
    cli(
        &admin,
        &[
            "freeze", "create", "night", "--for", "1h", "--reason", "release",
        ],
    )
    .await
    .unwrap();
    let report = eventually("a failed attempt listed", || async {
        let report = list(&admin).await;
        let n = &report.notifiers[0];
        (n.pending == 1 && !n.last_error.is_empty()).then_some(report)
    })
    .await;
    let n = &report.notifiers[0];
    assert!(n.last_error.starts_with("ops/"), "{n:?}");
    assert!(n.last_error.contains("trying again in"), "{n:?}");
    assert!(
        n.last_error_at.is_some() && n.next_attempt_at.is_some(),
        "{n:?}"
    );
    assert_eq!((n.delivered, n.given_up), (0, 0));

    // `get` lists it as a resource, with what waits.
    let got = cli(&admin, &["get", "notifiers"]).await.unwrap();
    assert!(
        got.contains("ops") && got.contains("FreezeStarted"),
        "{got}"
    );

    let out = cli(&admin, &["delete", "notifier", "ops"]).await.unwrap();
    assert!(out.contains("ops"), "{out}");
    assert_eq!(
        cli(&admin, &["notifier", "list"]).await.unwrap(),
        "no notifiers\n"
    );
    let err = cli(&admin, &["delete", "notifier", "ops"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ops"), "{err}");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_projects_operators_apply_its_notifiers_and_only_admins_hub_wide_ones() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let admin = hub.admin_config_path().to_owned();
    let project = write(
        &data,
        "team-a.yaml",
        "apiVersion: gitfleet.dev/v1
kind: Project
metadata: { name: team-a }
spec:
  sourceRepos: ['*']
  destinations: [{ name: '*', namespaces: [team-a] }]
---
apiVersion: gitfleet.dev/v1
kind: Project
metadata: { name: team-b }
spec:
  sourceRepos: ['*']
  destinations: [{ name: '*', namespaces: [team-b] }]
",
    );
    cli(&admin, &["apply", "-f", &project]).await.unwrap();
    let otto = create_user(&admin, &data, "otto", "operator", "team-a").await;
    let vera = create_user(&admin, &data, "vera", "viewer", "").await;
    let notifier = |name: &str, project: Option<&str>| {
        let project = project.map_or(String::new(), |p| format!("  project: {p}\n"));
        write(
            &data,
            &format!("{name}.yaml"),
            &format!(
                "apiVersion: gitfleet.dev/v1
kind: Notifier
metadata: {{name: {name}}}
spec:
{project}  slack: {{url: \"https://hooks.example.com/services/T/B/X\"}}
  events: [RolloutStarted, TargetDegraded]
"
            ),
        )
    };

    // An operator of team-a applies team-a's Notifier.
    let out = cli(
        &otto,
        &["apply", "-f", &notifier("team-a-chat", Some("team-a"))],
    )
    .await
    .unwrap();
    assert!(out.contains("notifier/team-a-chat created"), "{out}");
    // Not team-b's, and not a hub-wide one.
    for (file, expected) in [
        (
            notifier("team-b-chat", Some("team-b")),
            "permission denied: operator otto cannot apply Notifier \"team-b-chat\"",
        ),
        (
            notifier("fleet-chat", None),
            "permission denied: operator otto cannot apply Notifier \"fleet-chat\"",
        ),
    ] {
        let err = cli(&otto, &["apply", "-f", &file]).await.unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
    }
    // Nor move team-a's to the whole fleet.
    let err = cli(&otto, &["apply", "-f", &notifier("team-a-chat", None)])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    // Its operators may delete it; a viewer lists, and the Slack URL never shows.
    let listed = cli(&vera, &["notifier", "list"]).await.unwrap();
    assert!(
        listed.contains("team-a-chat (project team-a)") && listed.contains("slack"),
        "{listed}"
    );
    assert!(!listed.contains("hooks.example.com"), "{listed}");
    let err = cli(&vera, &["delete", "notifier", "team-a-chat"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    // The Project is not deleted from under its Notifier.
    cli(
        &otto,
        &["apply", "-f", &notifier("team-a-chat", Some("team-a"))],
    )
    .await
    .unwrap();
    let err = cli(&admin, &["delete", "project", "team-a"])
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Project \"team-a\" still has Notifier \"team-a-chat\": delete them first"),
        "{err}"
    );
    cli(&otto, &["delete", "notifier", "team-a-chat"])
        .await
        .unwrap();
    assert!(list(&admin).await.notifiers.is_empty());
    hub.shutdown().await;
}
