//! A spoke whose hub is unreachable keeps enforcing the desired state it persisted, and keeps
//! its reports for when the hub is back. Uses only the spoke's public API (`start`), kubesim,
//! and files in the data directory, as a restarted spoke would find them.

use std::collections::BTreeMap;
use std::time::Duration;

use gitfleet_kubesim::{Kubesim, KubesimConfig};
use gitfleet_spoke::desired::DesiredState;
use gitfleet_spoke::identity::{self, IdentityStore};
use gitfleet_spoke::model::{RenderOptions, Source, SyncPolicy, SyncState, TargetSpec};
use gitfleet_spoke::outbox::Outbox;
use gitfleet_spoke::{KubeSource, SpokeConfig};

const DEADLINE: Duration = Duration::from_secs(60);

/// An identity signed by a throwaway CA: the spoke needs one to start, not a hub to check it.
fn write_identity(data_dir: &std::path::Path, cluster: &str) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let store = IdentityStore::new(data_dir);
    let key = store.load_or_create_key().expect("key");
    let csr = identity::build_csr(&key, cluster).expect("csr");
    let cert = rcgen::CertificateSigningRequestParams::from_pem(&csr)
        .expect("csr")
        .signed_by(&issuer)
        .expect("sign");
    store
        .save_certificate(&cert.pem(), &ca.pem())
        .expect("save");
}

fn commit_app(dir: &std::path::Path) -> String {
    let git = gitfleet_e2e::gitrepo::GitRepo::init(dir).expect("init");
    git.write(
        "apps/offline/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: offline\ndata:\n  mode: away\n",
    )
    .expect("write");
    git.commit("app").expect("commit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoke_without_its_hub_enforces_its_last_desired_state() {
    let kubesim = Kubesim::start(KubesimConfig::new(["edge"]))
        .await
        .expect("kubesim");
    let repo_dir = tempfile::TempDir::new().expect("tempdir");
    let commit = commit_app(repo_dir.path());
    let data = tempfile::TempDir::new().expect("tempdir");
    write_identity(data.path(), "edge");

    // The desired state the spoke persisted before the hub went away.
    let spec = TargetSpec {
        target_id: "offline".into(),
        app: "offline".into(),
        source: Source {
            repo_url: format!("file://{}", repo_dir.path().display()),
            repo_name: "platform".into(),
            commit: commit.clone(),
            git_ref: "refs/heads/main".into(),
            path: "apps/offline".into(),
            extra_paths: Vec::new(),
            trusted_keys: Vec::new(),
        },
        namespace: "offline".into(),
        render: RenderOptions::default(),
        sync_policy: SyncPolicy::default(),
        trace: BTreeMap::new(),
        spec_generation: 3,
        project: None,
        health_rules: Vec::new(),
    };
    let desired = DesiredState {
        generation: 7,
        hub_epoch: "epoch".into(),
        targets: [("offline".to_owned(), spec)].into_iter().collect(),
        credentials: Vec::new(),
    };
    gitfleet_spoke::store::write_json(&data.path().join("state/desired.json"), &desired, true)
        .expect("persist");

    // Nothing listens on this port: the hub is away.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hub_url = format!(
        "https://127.0.0.1:{}",
        closed.local_addr().expect("addr").port()
    );
    drop(closed);
    let mut config = SpokeConfig::new(
        hub_url,
        data.path(),
        "edge",
        KubeSource::Config(Box::new(kubesim.kube_config("edge"))),
    );
    config.progress_timeout = Duration::from_secs(10);
    let spoke = gitfleet_spoke::start(config)
        .await
        .expect("spoke starts without its hub");
    assert_eq!(spoke.cluster_name(), "edge");
    assert!(!*spoke.connected().borrow());

    let deadline = tokio::time::Instant::now() + DEADLINE;
    while kubesim
        .get_object("edge", "v1", "ConfigMap", Some("offline"), "offline")
        .is_none()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the spoke did not apply its persisted desired state"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its reports wait on disk, numbered, for the hub.
    let outbox_path = data.path().join("state/outbox.json");
    loop {
        let outbox: Option<Outbox> =
            gitfleet_spoke::store::read_json(&outbox_path).expect("outbox");
        if let Some(report) = outbox.as_ref().and_then(|o| o.pending.last())
            && report.status.sync == SyncState::Synced
        {
            assert_eq!(report.status.revision, commit);
            assert_eq!(report.status.spec_generation, 3);
            assert!(report.seq >= 1);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no synced report in the outbox: {outbox:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    spoke.shutdown().await;
    kubesim.shutdown().await;
}
