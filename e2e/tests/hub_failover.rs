//! A spoke given several hub addresses: it registers and syncs through the one that answers,
//! and when that hub goes away and another replica comes up on its other address (the same
//! data directory: CA and store), it fails over with its existing certificate, and the reports
//! it made while no hub was up are acknowledged by the new one.

use std::time::Duration;

use gitfleet_e2e::harness::{ClusterSpec, Fleet, FleetOptions, until};
use gitfleet_spoke::outbox::Outbox;

const DEADLINE: Duration = Duration::from_secs(60);
const CONFIGMAP: &str = include_str!("../demo/hello/configmap.yaml");
const DEPLOYMENT: &str = include_str!("../demo/hello/deployment.yaml");

const APP: &str = "apiVersion: gitfleet.dev/v1\nkind: App\nmetadata: { name: hello }\nspec:\n  repo: platform\n  path: apps/hello\n  namespace: hello\n  targets:\n    - clusterSelector: {}\n";

/// A loopback address nothing listens on (yet).
fn free_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoke_fails_over_to_another_hub_address_and_loses_no_report() {
    let edge = ClusterSpec::new("edge");
    let mut options = FleetOptions::new(vec![edge.clone()]);
    options.deferred_spokes = vec!["edge".into()];
    // Slow enough that the rollout of v2 becomes ready while no hub is up.
    options.ready_delay = Duration::from_secs(2);
    let mut fleet = Fleet::start(options).await.expect("fleet");
    let dead = free_addr();
    let live = fleet.hub().grpc_addr();
    fleet
        .start_spoke_via_each(
            &edge,
            vec![format!("https://{dead}"), format!("https://{live}")],
        )
        .await
        .expect("the spoke registers through the live address");
    let spoke_dir = fleet.work_dir().join("spokes/edge");
    let cert_before =
        std::fs::read_to_string(spoke_dir.join("identity/cert.pem")).expect("certificate");

    fleet
        .git
        .write("apps/hello/configmap.yaml", CONFIGMAP)
        .expect("write");
    fleet
        .git
        .write("apps/hello/deployment.yaml", DEPLOYMENT)
        .expect("write");
    let v1 = fleet.git.commit("v1").expect("commit");
    let resources = format!("{}---\n{APP}", fleet.repo_yaml("platform"));
    fleet.apply_yaml(&resources).await.expect("apply");
    fleet
        .wait_converged("hello", &v1, 1, DEADLINE)
        .await
        .expect("synced through the live hub");

    // v2 reaches the spoke; then its hub goes away before the rollout is ready.
    fleet
        .git
        .write(
            "apps/hello/deployment.yaml",
            DEPLOYMENT.replace("podinfo:6.7.0", "podinfo:6.7.1"),
        )
        .expect("write");
    let v2 = fleet.git.commit("v2").expect("commit");
    let mut desired = fleet.spokes["edge"].desired();
    tokio::time::timeout(
        DEADLINE,
        desired.wait_for(|d| d.targets.values().any(|t| t.source.commit == v2)),
    )
    .await
    .expect("the spoke received v2 in time")
    .expect("the spoke runs");
    let acked_at_stop = fleet.hub().store().acked_seq("edge").expect("store");
    assert!(acked_at_stop > 0, "the live hub acknowledged reports");
    let first = fleet.stop_hub().await;
    assert_eq!(first, live);

    // Reports made while no hub is up wait in the outbox, unacknowledged.
    let outbox_path = spoke_dir.join("state/outbox.json");
    let made_offline = until("a report made while no hub is up", DEADLINE, || {
        let outbox: Option<Outbox> = gitfleet_spoke::store::read_json(&outbox_path)?;
        Ok(outbox.and_then(|o| {
            o.pending
                .iter()
                .filter(|r| r.seq > acked_at_stop && r.status.revision == v2)
                .map(|r| r.seq)
                .max()
        }))
    })
    .await
    .expect("reports while the hub is away");

    // Another replica of the hub, on the spoke's other address, with the same CA and store.
    fleet.start_hub_at(dead).await.expect("second hub");
    let mut connected = fleet.spokes["edge"].connected();
    tokio::time::timeout(DEADLINE, connected.wait_for(|up| *up))
        .await
        .expect("the spoke failed over in time")
        .expect("the spoke runs");
    until("the offline reports acknowledged", DEADLINE, || {
        let acked = fleet.hub().store().acked_seq("edge")?;
        Ok((acked >= made_offline).then_some(()))
    })
    .await
    .expect("nothing lost");
    fleet
        .wait_converged("hello", &v2, 1, DEADLINE)
        .await
        .expect("v2 reported through the second hub");
    assert_eq!(
        std::fs::read_to_string(spoke_dir.join("identity/cert.pem")).expect("certificate"),
        cert_before,
        "the spoke kept its certificate"
    );
    fleet.shutdown().await;
}
