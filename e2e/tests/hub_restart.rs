//! The hub goes away while spokes are reporting, and comes back from its data directory: nothing
//! it acknowledged is lost, duplicates are ignored, and every spoke is back and in sync.

use std::collections::BTreeMap;
use std::time::Duration;

use gitfleet_e2e::harness::{ClusterSpec, Fleet, FleetOptions};

const DEADLINE: Duration = Duration::from_secs(60);
const CONFIGMAP: &str = include_str!("../demo/hello/configmap.yaml");
const DEPLOYMENT: &str = include_str!("../demo/hello/deployment.yaml");

const APP: &str = "apiVersion: gitfleet.dev/v1\nkind: App\nmetadata: { name: hello }\nspec:\n  repo: platform\n  path: apps/hello\n  namespace: hello\n  targets:\n    - clusterSelector: {}\n";

fn acked(fleet: &Fleet) -> BTreeMap<String, u64> {
    let store = fleet.hub().engine().store();
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
