//! The `gitfleet` CLI against the real hub, in-process: the admin credential the hub wrote, a
//! local Git repository, and a fake spoke (from `support`) that registers with a token the CLI
//! created and reports status the CLI then shows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::path::Path;

use gitfleet_cli::cli::output::{
    ClusterListReport, ClusterReport, Health, PendingListReport, StatusReport, Sync,
    TokenListReport, TokenReport,
};
use gitfleet_cli::cli::{CliError, run_args};
use gitfleet_cli::client::config::{ClientConfig, ConfigFile as _, Context};
use gitfleet_hub::runtime::{self, HubConfig, HubHandle};
use gitfleet_proto::v1 as pb;
use gitfleet_proto::v1::registration_client::RegistrationClient;
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

    // A token from the CLI registers a cluster, whose labels (the token's) place the App on it.
    let out = cli(
        &admin,
        &[
            "token",
            "create",
            "--max-uses",
            "1",
            "--label",
            "env=dev",
            "-o",
            "json",
        ],
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

/// One registration attempt, keeping a `PendingApproval` answer (which `support::try_register`
/// treats as unexpected).
async fn register_once(
    hub: &HubHandle,
    cluster: &str,
    token: &str,
    key: &rcgen::KeyPair,
) -> Result<pb::register_response::Outcome, tonic::Status> {
    let ch = channel(&hub.grpc_url(), hub.ca_pem(), None).await;
    let response = RegistrationClient::new(ch)
        .register(pb::RegisterRequest {
            token: token.into(),
            cluster_name: cluster.into(),
            csr_pem: csr(key),
            labels: [("env".to_owned(), "edge".to_owned())]
                .into_iter()
                .collect(),
            agent_version: "test-0.1".into(),
        })
        .await?
        .into_inner();
    Ok(response
        .outcome
        .expect("a registration always has an outcome"))
}

async fn pending_names(admin: &Path) -> Vec<String> {
    let out = cli(admin, &["cluster", "pending", "-o", "json"])
        .await
        .unwrap();
    let report: PendingListReport = serde_json::from_str(&out).unwrap();
    report.clusters.into_iter().map(|c| c.name).collect()
}

async fn cluster_names(admin: &Path) -> Vec<String> {
    let out = cli(admin, &["cluster", "list", "-o", "json"])
        .await
        .unwrap();
    let report: ClusterListReport = serde_json::from_str(&out).unwrap();
    report.clusters.into_iter().map(|c| c.name).collect()
}

async fn tokens(admin: &Path) -> TokenListReport {
    let out = cli(admin, &["token", "list", "-o", "json"]).await.unwrap();
    serde_json::from_str(&out).unwrap()
}

#[tokio::test]
async fn approve_revoke_and_token_lifecycle_through_the_cli() {
    let (_tmp, data) = data_dir();
    let hub = runtime::start(HubConfig {
        require_approval: true,
        ..HubConfig::for_tests(&data)
    })
    .await
    .unwrap();
    let admin = hub.admin_config_path().to_owned();

    // A token for any number of clusters, so that refusals below come from revocation alone.
    let out = cli(
        &admin,
        &[
            "token",
            "create",
            "--description",
            "edge wave",
            "--label",
            "env=edge",
            "-o",
            "json",
        ],
    )
    .await
    .unwrap();
    let token: TokenReport = serde_json::from_str(&out).unwrap();
    let listed = tokens(&admin).await;
    assert_eq!(listed.tokens.len(), 1);
    let info = &listed.tokens[0];
    assert_eq!(info.token_id, token.token_id);
    assert_eq!(info.description, "edge wave");
    assert_eq!((info.uses, info.max_uses, info.revoked), (0, None, false));
    let table = cli(&admin, &["token", "list"]).await.unwrap();
    assert!(table.contains(&token.token_id), "{table}");
    assert!(
        !table.contains(&token.token),
        "the secret is never listed: {table}"
    );
    let yaml = cli(&admin, &["token", "list", "-o", "yaml"]).await.unwrap();
    assert!(!yaml.contains(&token.token), "{yaml}");

    // The registration waits: pending, not yet a cluster.
    let key = rcgen::KeyPair::generate().unwrap();
    let outcome = register_once(&hub, "edge-1", &token.token, &key)
        .await
        .unwrap();
    assert!(
        matches!(outcome, pb::register_response::Outcome::Pending(_)),
        "{outcome:?}"
    );
    assert_eq!(pending_names(&admin).await, ["edge-1"]);
    assert!(cluster_names(&admin).await.is_empty());
    let table = cli(&admin, &["cluster", "pending"]).await.unwrap();
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.starts_with("edge-1") && row.contains("env=edge"),
        "{table}"
    );

    // Approved: the retry with the same key gets the certificate.
    let out = cli(&admin, &["cluster", "approve", "edge-1"])
        .await
        .unwrap();
    assert!(out.starts_with("cluster/edge-1 approved; "), "{out}");
    let err = cli(&admin, &["cluster", "approve", "edge-1"])
        .await
        .unwrap_err();
    assert!(matches!(err, CliError::NotPending { .. }), "{err:?}");
    assert_eq!(err.exit_code(), 1);
    let outcome = register_once(&hub, "edge-1", &token.token, &key)
        .await
        .unwrap();
    let pb::register_response::Outcome::Issued(issued) = outcome else {
        panic!("approved registration still not issued: {outcome:?}")
    };
    assert!(pending_names(&admin).await.is_empty());
    assert_eq!(cluster_names(&admin).await, ["edge-1"]);
    let id = SpokeIdentity {
        cluster: issued.cluster_name,
        cert_pem: issued.certificate_pem,
        key_pem: key.serialize_pem(),
        ca_pem: issued.ca_pem,
    };
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default())
        .await
        .unwrap();
    spoke.until("the first snapshot", |v| v.snapshots > 0).await;
    assert_eq!(tokens(&admin).await.tokens[0].uses, 1);

    // Revoked: the live stream ends with a revoked goodbye, and the next connection is refused.
    let out = cli(&admin, &["cluster", "revoke", "edge-1", "-o", "json"])
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json, serde_json::json!({"name": "edge-1", "revoked": true}));
    spoke.until_end().await;
    assert!(
        spoke.view.goodbye.as_ref().is_some_and(|g| g.revoked),
        "goodbye: {:?}",
        spoke.view.goodbye
    );
    let refused = match FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default()).await {
        Err(status) => status,
        Ok(mut again) => again
            .until_end()
            .await
            .expect("a revoked cluster's stream ends with an error"),
    };
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");
    assert!(refused.message().contains("revoked"), "{refused}");
    let err = register_once(&hub, "edge-1", &token.token, &key)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");

    // A revoked cluster is not listed as an ordinary disconnected one: hidden unless --all.
    let out = cli(&admin, &["cluster", "list", "-o", "json"])
        .await
        .unwrap();
    let listed: ClusterListReport = serde_json::from_str(&out).unwrap();
    assert!(listed.clusters.is_empty(), "{listed:?}");
    let out = cli(&admin, &["cluster", "list", "--all", "-o", "json"])
        .await
        .unwrap();
    let listed: ClusterListReport = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.clusters.len(), 1, "{listed:?}");
    assert_eq!(listed.clusters[0].name, "edge-1");
    assert!(listed.clusters[0].revoked && !listed.clusters[0].connected);
    let table = cli(&admin, &["cluster", "list", "-A"]).await.unwrap();
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.starts_with("edge-1") && row.contains("revoked"),
        "{table}"
    );

    let err = cli(&admin, &["cluster", "revoke", "nowhere"])
        .await
        .unwrap_err();
    assert!(matches!(err, CliError::NoSuchCluster { .. }), "{err:?}");
    assert_eq!(err.exit_code(), 1);

    // A revoked token registers nobody, however many uses it had left.
    let out = cli(&admin, &["token", "revoke", &token.token_id])
        .await
        .unwrap();
    assert!(
        out.starts_with(&format!("token/{} revoked; ", token.token_id)),
        "{out}"
    );
    let listed = tokens(&admin).await;
    assert!(listed.tokens[0].revoked, "{listed:?}");
    let table = cli(&admin, &["token", "list"]).await.unwrap();
    assert_eq!(
        table.lines().nth(1).unwrap().split_whitespace().last(),
        Some("yes"),
        "{table}"
    );
    let other = rcgen::KeyPair::generate().unwrap();
    let err = register_once(&hub, "edge-2", &token.token, &other)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
        ),
        "{err}"
    );
    assert!(pending_names(&admin).await.is_empty());
    let err = cli(&admin, &["token", "revoke", "nope"]).await.unwrap_err();
    assert!(matches!(err, CliError::NoSuchToken { .. }), "{err:?}");
    assert_eq!(err.exit_code(), 1);

    hub.shutdown().await;
}

#[tokio::test]
async fn cluster_label_sets_and_removes_labels_through_the_cli() {
    let (_tmp, data) = data_dir();
    let hub = runtime::start(HubConfig::for_tests(&data)).await.unwrap();
    let admin = hub.admin_config_path().to_owned();
    register(&hub, "prod-1", &[("ring", "canary")]).await;

    // Another value for an existing key needs --overwrite; the hub's reason comes through.
    let err = cli(&admin, &["cluster", "label", "prod-1", "ring=prod"])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"label "ring" already has the value "canary"; pass --overwrite to change it"#
    );
    let out = cli(
        &admin,
        &[
            "cluster",
            "label",
            "prod-1",
            "ring=prod",
            "zone=eu",
            "--overwrite",
        ],
    )
    .await
    .unwrap();
    assert_eq!(out, "cluster/prod-1 labeled (labels: ring=prod,zone=eu)\n");

    let out = cli(
        &admin,
        &["cluster", "label", "prod-1", "zone-", "-o", "json"],
    )
    .await
    .unwrap();
    let report: ClusterReport = serde_json::from_str(&out).unwrap();
    assert_eq!(report.name, "prod-1");
    assert_eq!(report.labels, owned(&[("ring", "prod")]));
    let out = cli(
        &admin,
        &["cluster", "label", "prod-1", "tier=gold", "-o", "yaml"],
    )
    .await
    .unwrap();
    let report: ClusterReport = serde_saphyr::from_str(&out).unwrap();
    assert_eq!(report.labels, owned(&[("ring", "prod"), ("tier", "gold")]));

    // A bad key is named, and nothing changes.
    let err = cli(
        &admin,
        &["cluster", "label", "prod-1", "ok=yes", "Bad Key=x"],
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"label key "Bad Key" must consist of letters, digits, '-', '_' and '.'"#
    );
    let err = cli(&admin, &["cluster", "label", "prod-1", "ring=a", "ring-"])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"label "ring" is given more than once; no label was changed"#
    );
    let err = cli(&admin, &["cluster", "label", "nope", "ring=prod"])
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), r#"cluster "nope" is not registered"#);
    let out = cli(&admin, &["cluster", "list", "-o", "json"])
        .await
        .unwrap();
    let listed: ClusterListReport = serde_json::from_str(&out).unwrap();
    assert_eq!(
        listed.clusters[0].labels,
        owned(&[("ring", "prod"), ("tier", "gold")])
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn projects_through_the_cli() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let admin = hub.admin_config_path().to_owned();
    let git = GitRepo::new();
    git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "first");
    let project = "apiVersion: gitfleet.dev/v1
kind: Project
metadata: { name: team-a }
spec:
  sourceRepos: [platform]
  destinations:
    - clusterSelector: { matchLabels: { env: dev } }
      namespaces: [web, \"web-*\"]
";
    let yaml = format!(
        "{}---\n{}",
        project,
        fleet_yaml(&git.url()).replace("  repo: platform", "  project: team-a\n  repo: platform")
    );
    let file = data.join("fleet.yaml");
    std::fs::write(&file, yaml).unwrap();
    let file = file.display().to_string();
    let out = cli(&admin, &["apply", "-f", &file]).await.unwrap();
    assert_eq!(
        out,
        "project/team-a created\nrepo/platform created\napp/web created\n"
    );

    let rows = |out: String| -> Vec<String> {
        out.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(
        rows(cli(&admin, &["get", "projects"]).await.unwrap()),
        [
            "NAME SOURCE REPOS DESTINATIONS CLUSTER RESOURCES",
            "default * cluster *: * */*",
            "team-a platform env=dev: web,web-* none",
        ]
    );
    let apps = rows(cli(&admin, &["get", "apps"]).await.unwrap());
    assert_eq!(apps[1], "web platform apps/web web env=dev no team-a");

    let err = cli(&admin, &["delete", "project", "team-a"])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Project "team-a" is still used by App "web": delete them or move them to another Project first"#
    );
    cli(&admin, &["delete", "app", "web"]).await.unwrap();
    assert_eq!(
        cli(&admin, &["delete", "project", "team-a"]).await.unwrap(),
        "project/team-a deleted\n"
    );
    hub.shutdown().await;
}

/// The verb-first grammar (`get|create|delete|label KIND`) and the noun-first forms it keeps as
/// aliases (`token list`, `user revoke`, `freeze delete`, `cluster label`, ...) do the same.
#[tokio::test]
async fn verb_first_commands_and_their_noun_first_aliases_do_the_same() {
    let (tmp, data) = data_dir();
    let hub = runtime::start(HubConfig::for_tests(&data)).await.unwrap();
    let admin = hub.admin_config_path().to_owned();
    register(&hub, "prod-1", &[("ring", "canary")]).await;
    let json = |out: String| -> serde_json::Value { serde_json::from_str(&out).unwrap() };

    // Tokens: create, get (all, one), delete = revoke.
    let out = cli(
        &admin,
        &["create", "token", "--max-uses", "1", "-o", "json"],
    )
    .await
    .unwrap();
    let token: TokenReport = serde_json::from_str(&out).unwrap();
    let listed = json(cli(&admin, &["get", "tokens", "-o", "json"]).await.unwrap());
    assert_eq!(
        listed,
        json(cli(&admin, &["token", "list", "-o", "json"]).await.unwrap())
    );
    let one = cli(&admin, &["get", "token", &token.token_id])
        .await
        .unwrap();
    assert!(one.contains(&token.token_id), "{one}");
    assert!(!one.contains(&token.token), "never the secret: {one}");
    let err = cli(&admin, &["get", "token", "nope"]).await.unwrap_err();
    assert!(matches!(err, CliError::NoSuchToken { .. }), "{err:?}");
    let err = cli(&admin, &["get", "tokens", "-l", "env=prod"])
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(
        err.to_string().starts_with("tokens have no labels"),
        "{err}"
    );
    let out = cli(&admin, &["delete", "token", &token.token_id])
        .await
        .unwrap();
    assert!(
        out.starts_with(&format!("token/{} revoked; ", token.token_id)),
        "{out}"
    );
    let listed: TokenListReport =
        serde_json::from_str(&cli(&admin, &["get", "tokens", "-o", "json"]).await.unwrap())
            .unwrap();
    assert!(
        listed
            .tokens
            .iter()
            .any(|t| t.token_id == token.token_id && t.revoked),
        "{listed:?}"
    );

    // Users: create, get, delete = revoke.
    let file = tmp.path().join("vera.gitfleetconfig");
    let file_arg = file.display().to_string();
    let out = cli(
        &admin,
        &[
            "create", "user", "vera", "--role", "viewer", "-f", &file_arg,
        ],
    )
    .await
    .unwrap();
    assert!(out.contains("user vera created"), "{out}");
    assert_eq!(
        json(cli(&admin, &["get", "users", "-o", "json"]).await.unwrap()),
        json(cli(&admin, &["user", "list", "-o", "json"]).await.unwrap())
    );
    let one = cli(&admin, &["get", "user", "vera"]).await.unwrap();
    assert!(one.contains("vera") && !one.contains("admin "), "{one}");
    let out = cli(&admin, &["delete", "user", "vera"]).await.unwrap();
    assert_eq!(
        out,
        "user vera revoked: its certificate is refused from now on\n"
    );
    let err = cli(&file, &["whoami"]).await.unwrap_err();
    assert_eq!(err.exit_code(), 1, "{err}");

    // Freezes: create, get, delete = end.
    let out = cli(
        &admin,
        &[
            "create", "freeze", "night", "--for", "1h", "--reason", "night",
        ],
    )
    .await
    .unwrap();
    assert!(out.contains("night"), "{out}");
    assert_eq!(
        json(
            cli(&admin, &["get", "freezes", "-o", "json"])
                .await
                .unwrap()
        ),
        json(
            cli(&admin, &["freeze", "list", "-o", "json"])
                .await
                .unwrap()
        )
    );
    let out = cli(&admin, &["delete", "freeze", "night"]).await.unwrap();
    assert_eq!(out, "freeze night deleted: what it held rolls out now\n");
    let err = cli(&admin, &["get", "freeze", "night"]).await.unwrap_err();
    assert!(matches!(err, CliError::NoSuchFreeze { .. }), "{err:?}");

    // Cluster labels, as kubectl's `label`.
    let out = cli(
        &admin,
        &["label", "cluster", "prod-1", "ring=prod", "--overwrite"],
    )
    .await
    .unwrap();
    assert_eq!(out, "cluster/prod-1 labeled (labels: ring=prod)\n");

    // What is only listed is not described.
    let err = cli(&admin, &["describe", "token", &token.token_id])
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 2);
    hub.shutdown().await;
}
