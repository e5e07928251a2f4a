//! The `gitfleet` CLI against the real hub, in-process: the admin credential the hub wrote, a
//! local Git repository, and a fake spoke (from `support`) that registers with a token the CLI
//! created and reports status the CLI then shows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use gitfleet_hub::cli::output::{ClusterListReport, Health, StatusReport, Sync, TokenReport};
use gitfleet_hub::cli::{CliError, run_args};
use gitfleet_hub::client::config::{ClientConfig, Context};
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

fn fleet_yaml(repo_url: &str) -> String {
    format!(
        "apiVersion: gitfleet.dev/v1
kind: Repo
metadata: {{ name: platform }}
spec:
  url: {repo_url}
---
apiVersion: gitfleet.dev/v1
kind: App
metadata: {{ name: web }}
spec:
  repo: platform
  path: apps/web
  namespace: web
  targets:
    - clusterSelector: {{ matchLabels: {{ env: dev }} }}
"
    )
}

#[tokio::test]
async fn apply_token_register_report_and_status_through_the_cli() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let admin = hub.admin_config_path().to_owned();
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "first");

    let fleet = data.join("fleet.yaml");
    std::fs::write(&fleet, fleet_yaml(&git.url())).unwrap();
    let fleet = fleet.display().to_string();
    let out = cli(&admin, &["apply", "-f", &fleet]).await.unwrap();
    assert_eq!(out, "repo/platform created\napp/web created\n");

    // The hub follows the branch; `get repos` shows the commit it found.
    let short = &c1[..8];
    eventually("the repo's commit in `get repos`", || async {
        let out = cli(&admin, &["get", "repos"]).await.unwrap();
        out.contains(short).then_some(())
    })
    .await;

    // A token from the CLI registers a cluster, whose labels place the App on it.
    let out = cli(
        &admin,
        &["token", "create", "--max-uses", "1", "-o", "json"],
    )
    .await
    .unwrap();
    let token: TokenReport = serde_json::from_str(&out).unwrap();
    let id = try_register(&hub, "dev-1", &token.token, &[("env", "dev")])
        .await
        .unwrap();
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default())
        .await
        .unwrap();
    spoke
        .until("web at c1", |v| {
            v.commit_of("web").as_deref() == Some(c1.as_str())
        })
        .await;

    let out = cli(&admin, &["cluster", "list", "-o", "json"])
        .await
        .unwrap();
    let clusters: ClusterListReport = serde_json::from_str(&out).unwrap();
    assert_eq!(clusters.clusters.len(), 1);
    assert_eq!(clusters.clusters[0].name, "dev-1");
    assert_eq!(clusters.clusters[0].labels.get("env").unwrap(), "dev");
    assert!(clusters.clusters[0].connected);
    let table = cli(&admin, &["cluster", "list"]).await.unwrap();
    assert!(
        table.lines().nth(1).unwrap().starts_with("dev-1"),
        "{table}"
    );

    spoke.report(1, "web", &c1, "all applied").await;
    let report = eventually("web synced at c1 in `status -o json`", || async {
        let out = cli(&admin, &["status", "--app", "web", "-o", "json"])
            .await
            .unwrap();
        let report: StatusReport = serde_json::from_str(&out).unwrap();
        report
            .targets
            .first()
            .is_some_and(|t| t.applied_revision == c1 && t.sync == Sync::Synced)
            .then_some(report)
    })
    .await;
    let target = &report.targets[0];
    assert_eq!(target.cluster, "dev-1");
    assert_eq!(target.desired_revision, c1);
    assert_eq!(target.health, Health::Healthy);
    assert_eq!(target.resources[0].kind, "ConfigMap");

    let table = cli(&admin, &["status"]).await.unwrap();
    let row = table.lines().nth(1).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[..6],
        ["web", "dev-1", short, short, "Synced", "Healthy"],
        "{table}"
    );

    // What `get` prints applies back unchanged (the hub's `status` is not sent).
    let all = cli(&admin, &["get", "all", "-o", "yaml"]).await.unwrap();
    let saved = data.join("saved.yaml");
    std::fs::write(&saved, all).unwrap();
    let out = cli(&admin, &["apply", "-f", &saved.display().to_string()])
        .await
        .unwrap();
    assert_eq!(out, "repo/platform unchanged\napp/web unchanged\n");

    // The token was for one use only.
    let err = try_register(&hub, "dev-2", &token.token, &[]).await;
    assert!(
        err.is_err(),
        "a used-up token must not register another cluster"
    );

    // The spoke's own certificate is not an admin credential.
    let spoke_config = data.join("spoke.gitfleetconfig");
    ClientConfig::single(Context {
        name: "spoke".into(),
        server: hub.grpc_url(),
        certificate_authority_data: id.ca_pem.clone(),
        client_certificate_data: id.cert_pem.clone(),
        client_key_data: id.key_pem.clone(),
        tls_server_name: None,
    })
    .save(&spoke_config)
    .unwrap();
    let err = cli(&spoke_config, &["status"]).await.unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().contains("refused this credential"), "{err}");

    hub.shutdown().await;
    let err = cli(&admin, &["status"]).await.unwrap_err();
    assert!(err.to_string().contains("is the hub running at"), "{err}");
}

#[tokio::test]
async fn invalid_resources_are_refused_with_the_hubs_reason_and_nothing_is_stored() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let admin = hub.admin_config_path().to_owned();
    let file = data.join("bad.yaml");
    std::fs::write(
        &file,
        format!(
            "{}---\napiVersion: gitfleet.dev/v1\nkind: App\nmetadata: {{ name: broken }}\nspec: {{ repo: platform, path: ../escape, namespace: x, targets: [] }}\n",
            fleet_yaml("file:///nowhere")
        ),
    )
    .unwrap();
    let file = file.display().to_string();
    let err = cli(&admin, &["apply", "-f", &file]).await.unwrap_err();
    assert_eq!(err.exit_code(), 1);
    let text = err.to_string();
    assert!(
        text.contains(&format!("{file}#2")),
        "names the document: {text}"
    );
    assert!(text.contains("broken"), "{text}");
    assert_eq!(
        cli(&admin, &["get", "all"]).await.unwrap(),
        "No resources found\n"
    );
    hub.shutdown().await;
}
