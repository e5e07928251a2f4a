//! The hub goes away while spokes are reporting, and comes back from its data directory: nothing
//! it acknowledged is lost, duplicates are ignored, and every spoke is back and in sync. And the
//! hub process is killed (SIGKILL) right after answering an admin: what it answered is there.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::ensure;
use gitfleet_cli::client::{AdminClient, AppVerb};
use gitfleet_e2e::harness::{ClusterSpec, Fleet, FleetOptions, resource_documents};
use gitfleet_e2e::hubproc::HubProcess;
use gitfleet_proto::v1 as pb;

const DEADLINE: Duration = Duration::from_secs(60);
const CONFIGMAP: &str = include_str!("../demo/hello/configmap.yaml");
const DEPLOYMENT: &str = include_str!("../demo/hello/deployment.yaml");

const APP: &str = "apiVersion: gitfleet.dev/v1\nkind: App\nmetadata: { name: hello }\nspec:\n  repo: platform\n  path: apps/hello\n  namespace: hello\n  targets:\n    - clusterSelector: {}\n";

fn acked(fleet: &Fleet) -> BTreeMap<String, u64> {
    let store = fleet.hub().store();
    fleet
        .clusters()
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                store.acked_seq(&c.name).expect("store readable"),
            )
        })
        .collect()
}

async fn restart_mid_rollout(crash: bool) -> anyhow::Result<()> {
    let mut fleet = Fleet::start(FleetOptions::new(vec![
        ClusterSpec::new("a"),
        ClusterSpec::new("b"),
        ClusterSpec::new("c"),
    ]))
    .await?;
    fleet.git.write("apps/hello/configmap.yaml", CONFIGMAP)?;
    fleet.git.write("apps/hello/deployment.yaml", DEPLOYMENT)?;
    let v1 = fleet.git.commit("v1")?;
    let resources = format!("{}---\n{APP}", fleet.repo_yaml("platform"));
    fleet.apply_yaml(&resources).await?;
    fleet.wait_converged("hello", &v1, 3, DEADLINE).await?;
    let before = acked(&fleet);
    assert!(
        before.values().all(|&s| s > 0),
        "every spoke has reported: {before:?}"
    );

    // A new commit, and the hub goes away as soon as it has handed it out: the spokes apply and
    // report while it is gone.
    fleet.git.write(
        "apps/hello/configmap.yaml",
        CONFIGMAP.replace("gitfleet, v1", "gitfleet, v2"),
    )?;
    let v2 = fleet.git.commit("v2")?;
    fleet
        .wait_for("hello", "v2 handed out", DEADLINE, |s| {
            s.iter().any(|t| t.desired_revision == v2)
        })
        .await?;
    let at_stop = acked(&fleet);
    if crash {
        fleet.crash_and_restart_hub().await?;
    } else {
        fleet.restart_hub().await?;
    }
    let after_restart = acked(&fleet);
    for (cluster, seq) in &at_stop {
        assert!(
            after_restart[cluster] >= *seq,
            "{cluster}: acked seq {seq} before the restart, {} after: an acked report was lost",
            after_restart[cluster]
        );
    }

    let status = fleet.wait_converged("hello", &v2, 3, DEADLINE).await?;
    for t in &status {
        let cm = fleet
            .kubesim
            .get_object(&t.cluster, "v1", "ConfigMap", Some("hello"), "hello-config")
            .ok_or_else(|| anyhow::anyhow!("{}: configmap missing", t.cluster))?;
        assert_eq!(cm["data"]["greeting"], "Hello from gitfleet, v2");
    }
    let end = acked(&fleet);

    // Once more, with nothing in flight: the store alone brings the hub back exactly.
    fleet.restart_hub().await?;
    let status = fleet.wait_converged("hello", &v2, 3, DEADLINE).await?;
    assert_eq!(status.len(), 3);
    let again = acked(&fleet);
    for (cluster, seq) in &end {
        assert!(
            again[cluster] >= *seq,
            "{cluster}: {} < {seq}",
            again[cluster]
        );
    }
    fleet.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_mid_rollout_loses_nothing() {
    restart_mid_rollout(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_rollout_loses_nothing_acked() {
    restart_mid_rollout(true).await.unwrap();
}

/// `Kind/name` of every stored resource.
async fn stored(admin: &mut AdminClient) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for doc in admin.get("", "").await? {
        let v: serde_json::Value = serde_json::from_str(&doc.json)?;
        names.push(format!(
            "{}/{}",
            v["kind"].as_str().unwrap_or_default(),
            v["metadata"]["name"].as_str().unwrap_or_default()
        ));
    }
    names.sort();
    Ok(names)
}

// No cluster is registered, so none of these writes changes any cluster's desired state: the
// hub used to flush only when one did, and an apply answered `created` was gone after a crash.
const REPO_AND_GROUP: &str = "apiVersion: gitfleet.dev/v1
kind: Repo
metadata: { name: platform }
spec:
  url: file:///nonexistent/platform.git
  ref: { branch: main }
---
apiVersion: gitfleet.dev/v1
kind: ClusterGroup
metadata: { name: everyone }
spec:
  selector: {}
";

const WEB_APP: &str = "apiVersion: gitfleet.dev/v1
kind: App
metadata: { name: web }
spec:
  repo: platform
  path: apps/web
  namespace: web
  targets:
    - clusterSelector: {}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_hub_acknowledged_survives_a_kill_9_right_after() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut hub = HubProcess::start(
        Path::new(env!("CARGO_BIN_EXE_gitfleet-hub-e2e")),
        &tmp.path().join("hub"),
        Vec::new(),
    )
    .await?;
    let mut admin = hub.admin().await?;
    let outcomes = admin
        .apply(resource_documents("inline", REPO_AND_GROUP)?, false)
        .await?;
    ensure!(
        outcomes.iter().all(|o| o.action == "created") && outcomes.len() == 2,
        "{outcomes:?}"
    );
    // Killed as soon as the answer is in: sled's own background flush (every 500 ms) has
    // almost never run by then.
    hub.kill().await?;
    hub.restart().await?;
    let mut admin = hub.admin().await?;
    let after = stored(&mut admin).await?;
    ensure!(
        after == ["ClusterGroup/everyone", "Repo/platform"],
        "an applied resource was lost: {after:?}"
    );

    let outcomes = admin
        .apply(resource_documents("inline", WEB_APP)?, false)
        .await?;
    ensure!(outcomes[0].action == "created", "{outcomes:?}");
    hub.kill().await?;
    hub.restart().await?;
    let mut admin = hub.admin().await?;
    let after = stored(&mut admin).await?;
    ensure!(
        after == ["App/web", "ClusterGroup/everyone", "Repo/platform"],
        "the applied App was lost: {after:?}"
    );
    let events = admin.events("web", "", 0, 100).await?;
    ensure!(
        events.iter().any(|e| e.kind == "Created"),
        "the App's Created event was lost: {events:?}"
    );

    // Deletes, App controls and tokens, each killed right after its answer.
    ensure!(admin.delete("ClusterGroup", "everyone").await?);
    hub.kill().await?;
    hub.restart().await?;
    let mut admin = hub.admin().await?;
    ensure!(
        stored(&mut admin).await? == ["App/web", "Repo/platform"],
        "a deleted resource came back: {:?}",
        stored(&mut admin).await?
    );

    admin.app_control(AppVerb::Suspend, "web", None).await?;
    hub.kill().await?;
    hub.restart().await?;
    let mut admin = hub.admin().await?;
    let events = admin.events("web", "", 0, 100).await?;
    ensure!(
        events.iter().any(|e| e.kind == "Suspended"),
        "the suspension was lost: {events:?}"
    );

    let token = admin
        .create_token(pb::CreateTokenRequest {
            ttl_seconds: 600,
            labels: Default::default(),
            max_uses: 1,
            description: "kill -9".into(),
            ..Default::default()
        })
        .await?;
    hub.kill().await?;
    hub.restart().await?;
    let mut admin = hub.admin().await?;
    ensure!(
        admin
            .list_tokens()
            .await?
            .iter()
            .any(|t| t.token_id == token.token_id),
        "the token was lost"
    );
    ensure!(admin.revoke_token(&token.token_id).await?);
    hub.kill().await?;
    hub.restart().await?;
    let mut admin = hub.admin().await?;
    ensure!(
        admin
            .list_tokens()
            .await?
            .iter()
            .any(|t| t.token_id == token.token_id && t.revoked),
        "the token's revocation was lost"
    );
    hub.stop().await?;
    Ok(())
}
