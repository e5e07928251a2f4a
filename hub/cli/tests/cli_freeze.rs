//! Freezes and the emergency override through the `gitfleet` CLI against the real hub,
//! in-process: who may create, delete and override them, what the audit log records, which
//! requests are refused and why, and that a freeze outlives a restart of the hub.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::path::{Path, PathBuf};

use gitfleet_cli::cli::freeze::FreezeListReport;
use gitfleet_cli::cli::users::AuditReport;
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

async fn create_user(admin: &Path, dir: &Path, name: &str, role: &str) -> PathBuf {
    let file = dir.join(format!("{name}.gitfleetconfig"));
    let file_arg = file.display().to_string();
    cli(
        admin,
        &["user", "create", name, "-f", &file_arg, "--role", role],
    )
    .await
    .unwrap();
    file
}

async fn freezes(config: &Path) -> FreezeListReport {
    serde_json::from_str(
        &cli(config, &["freeze", "list", "-o", "json"])
            .await
            .unwrap(),
    )
    .unwrap()
}

async fn audit(admin: &Path) -> AuditReport {
    serde_json::from_str(&cli(admin, &["audit", "-o", "json"]).await.unwrap()).unwrap()
}

#[tokio::test]
async fn admins_create_list_and_delete_freezes_audited_and_durable_and_others_are_refused() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let admin = hub.admin_config_path().to_owned();
    let operator = create_user(&admin, &data, "otto", "operator").await;
    let viewer = create_user(&admin, &data, "vera", "viewer").await;

    // An admin freezes checkout on production clusters for two hours.
    let out = cli(
        &admin,
        &[
            "freeze",
            "create",
            "campaign",
            "--app",
            "checkout",
            "--cluster-selector",
            "env=prod",
            "--for",
            "2h",
            "--reason",
            "holiday campaign",
        ],
    )
    .await
    .unwrap();
    assert!(
        out.starts_with(
            "freeze campaign created: new revisions of apps checkout; clusters env=prod are held until "
        ),
        "{out}"
    );

    // Anyone reads it: the table and JSON.
    let table = cli(&viewer, &["freeze", "list"]).await.unwrap();
    let header = table.lines().next().unwrap();
    for column in ["NAME", "SCOPE", "UNTIL", "BY", "REASON"] {
        assert!(header.contains(column), "{table}");
    }
    assert!(
        table.contains("campaign") && table.contains("admin") && table.contains("holiday campaign"),
        "{table}"
    );
    let list = freezes(&viewer).await;
    assert_eq!(list.freezes.len(), 1);
    let f = &list.freezes[0];
    assert_eq!(f.apps, ["checkout"]);
    assert_eq!(f.cluster_selector, "env=prod");
    assert!(f.active);
    assert_eq!(f.created_by, "admin");

    // Operators and viewers may not create, delete or override; refusals are audited.
    let err = cli(
        &operator,
        &["freeze", "create", "mine", "--for", "1h", "--reason", "x"],
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "permission denied: operator otto cannot create freezes freeze \"mine\" (admin required)"
    );
    let err = cli(&viewer, &["freeze", "delete", "campaign"])
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("permission denied: viewer vera cannot delete freezes"),
        "{err}"
    );
    let err = cli(
        &operator,
        &[
            "rollout",
            "start",
            "checkout",
            "--override-freeze",
            "--reason",
            "hotfix",
        ],
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "permission denied: operator otto cannot override freezes and sync windows"
        ),
        "{err}"
    );

    // Bad requests name the field, and nothing is stored.
    for (args, want) in [
        (
            vec![
                "freeze", "create", "Bad_Name", "--for", "1h", "--reason", "x",
            ],
            "freeze \"Bad_Name\": name: ",
        ),
        (
            vec![
                "freeze",
                "create",
                "past",
                "--until",
                "2020-01-01T00:00:00Z",
                "--reason",
                "x",
            ],
            "freeze \"past\": until: 2020-01-01 00:00 UTC is not in the future",
        ),
        (
            vec![
                "freeze",
                "create",
                "sel",
                "--for",
                "1h",
                "--cluster-selector",
                "env in (prod",
                "--reason",
                "x",
            ],
            "freeze \"sel\": clusterSelector: ",
        ),
        (
            vec![
                "freeze", "create", "campaign", "--for", "1h", "--reason", "again",
            ],
            "freeze \"campaign\" exists",
        ),
    ] {
        let err = cli(&admin, &args).await.unwrap_err().to_string();
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // The CLI itself wants a reason and an end.
    assert!(
        cli(&admin, &["freeze", "create", "x", "--for", "1h"])
            .await
            .is_err()
    );
    assert!(
        cli(&admin, &["freeze", "create", "x", "--reason", "r"])
            .await
            .is_err()
    );
    assert_eq!(freezes(&admin).await.freezes.len(), 1);

    // An override of an App with no rollout in progress is refused, and says so.
    let err = cli(
        &admin,
        &[
            "rollout",
            "start",
            "checkout",
            "--override-freeze",
            "--reason",
            "hotfix",
        ],
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("checkout"), "{err}");

    // The audit log: who created it, with its scope, end and reason; the refusals.
    let log = audit(&admin).await;
    let created = log
        .entries
        .iter()
        .find(|e| e.action == "freeze create" && e.outcome == "ok")
        .expect("the creation is audited");
    assert_eq!(created.user, "admin");
    assert_eq!(created.target, "Freeze/campaign");
    assert!(
        created
            .message
            .contains("apps checkout; clusters env=prod until ")
            && created.message.ends_with(": holiday campaign"),
        "{}",
        created.message
    );
    assert!(
        log.entries
            .iter()
            .any(|e| e.action == "freeze create" && e.user == "otto" && e.outcome == "denied")
    );
    assert!(
        log.entries
            .iter()
            .any(|e| e.action == "freeze delete" && e.user == "vera" && e.outcome == "denied")
    );
    assert!(
        log.entries
            .iter()
            .any(|e| e.action == "rollout start --override-freeze"
                && e.user == "otto"
                && e.outcome == "denied")
    );

    // Durable: a restarted hub still has it.
    hub.shutdown().await;
    let hub = start_hub(&data).await;
    let admin = hub.admin_config_path().to_owned();
    let list = freezes(&admin).await;
    assert_eq!(list.freezes.len(), 1, "{list:?}");
    assert_eq!(list.freezes[0].reason, "holiday campaign");

    // Deleted, and gone; deleting it again says there is none.
    let out = cli(&admin, &["freeze", "delete", "campaign"])
        .await
        .unwrap();
    assert_eq!(out, "freeze campaign deleted: what it held rolls out now\n");
    assert!(freezes(&admin).await.freezes.is_empty());
    let err = cli(&admin, &["freeze", "delete", "campaign"])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no freeze named \"campaign\"; see `gitfleet freeze list`"
    );
    assert!(
        audit(&admin)
            .await
            .entries
            .iter()
            .any(|e| e.action == "freeze delete" && e.user == "admin" && e.outcome == "ok")
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn a_no_self_heal_freeze_is_listed_audited_and_kept_so_across_a_restart() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let admin = hub.admin_config_path().to_owned();
    let out = cli(
        &admin,
        &[
            "freeze",
            "create",
            "maint",
            "--app",
            "db",
            "--for",
            "1h",
            "--no-self-heal",
            "--reason",
            "manual failover",
        ],
    )
    .await
    .unwrap();
    assert!(out.ends_with(", and do not self-heal\n"), "{out}");
    cli(
        &admin,
        &["freeze", "create", "plain", "--for", "1h", "--reason", "x"],
    )
    .await
    .unwrap();
    let self_heal = |list: &FreezeListReport| -> Vec<(String, bool)> {
        list.freezes
            .iter()
            .map(|f| (f.name.clone(), f.self_heal))
            .collect()
    };
    let want = vec![("maint".to_owned(), false), ("plain".to_owned(), true)];
    assert_eq!(self_heal(&freezes(&admin).await), want);
    let table = cli(&admin, &["freeze", "list"]).await.unwrap();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("maint") && l.contains("suspended")),
        "{table}"
    );
    let log = audit(&admin).await;
    let created = log
        .entries
        .iter()
        .find(|e| e.action == "freeze create" && e.target == "Freeze/maint")
        .expect("audited");
    assert!(
        created.message.contains(", no self-heal: manual failover"),
        "{}",
        created.message
    );

    hub.shutdown().await;
    let hub = start_hub(&data).await;
    let admin = hub.admin_config_path().to_owned();
    assert_eq!(self_heal(&freezes(&admin).await), want, "stored so");
    hub.shutdown().await;
}
