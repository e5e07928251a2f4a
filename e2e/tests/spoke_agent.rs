//! The spoke's agent and cluster adapter against kubesim, without a hub: desired state goes in
//! through a watch channel, reports come out through a recording reporter. Real git2 fetches,
//! real kube-rs server-side apply.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gitfleet_kubesim::{Kubesim, KubesimConfig, KubesimHandle};
use gitfleet_spoke::agent::{self, AgentConfig, Reporter};
use gitfleet_spoke::cluster::{Cluster, ClusterError};
use gitfleet_spoke::desired::DesiredState;
use gitfleet_spoke::git::GitCache;
use gitfleet_spoke::metrics::{LinkSnapshot, SpokeMetrics};
use gitfleet_spoke::model::{
    Health, RenderOptions, ResourceAction, Source, SyncPolicy, SyncState, TargetSpec, TargetStatus,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus");
const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Recorder {
    reports: Mutex<Vec<TargetStatus>>,
}

impl Reporter for Recorder {
    fn report(&self, status: TargetStatus) {
        self.reports.lock().expect("reports").push(status);
    }
}

impl Recorder {
    fn latest(&self, target: &str) -> Option<TargetStatus> {
        self.reports
            .lock()
            .expect("reports")
            .iter()
            .rev()
            .find(|r| r.target_id == target)
            .cloned()
    }

    /// Waits until the latest report of `target` satisfies `done`.
    async fn wait_for(
        &self,
        target: &str,
        what: &str,
        done: impl Fn(&TargetStatus) -> bool,
    ) -> TargetStatus {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(latest) = self.latest(target).filter(|s| done(s)) {
                return latest;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; latest: {:#?}",
                self.latest(target)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A Git repository on disk that tests write files into and commit.
struct Repo {
    dir: tempfile::TempDir,
    repo: git2::Repository,
}

impl Repo {
    fn new() -> Self {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let repo = git2::Repository::init(dir.path()).expect("init");
        Self { dir, repo }
    }

    fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }

    fn write(&self, path: &str, content: &str) {
        let full = self.dir.path().join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, content).expect("write");
    }

    fn copy_dir(&self, from: &Path, to: &str) {
        for entry in std::fs::read_dir(from).expect("read corpus") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                let name = path.file_name().and_then(|n| n.to_str()).expect("name");
                self.write(
                    &format!("{to}/{name}"),
                    &std::fs::read_to_string(&path).expect("read"),
                );
            }
        }
    }

    fn commit(&self) -> String {
        let mut index = self.repo.index().expect("index");
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .expect("add");
        index.update_all(["*"], None).expect("update");
        index.write().expect("write index");
        let tree = self
            .repo
            .find_tree(index.write_tree().expect("tree"))
            .expect("tree");
        let sig = git2::Signature::now("test", "test@example.com").expect("sig");
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        self.repo
            .commit(Some("HEAD"), &sig, &sig, "test", &tree, &parents)
            .expect("commit")
            .to_string()
    }
}

/// `scripts/helm`: the helm-compatible wrapper around helm-python-sdk; scripts/test builds
/// its venv (through scripts/check-charts) before the tests run.
fn helm_command() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/helm")
}

fn spec(app: &str, repo: &Repo, commit: &str, path: &str) -> TargetSpec {
    TargetSpec {
        target_id: app.into(),
        app: app.into(),
        source: Source {
            repo_url: repo.url(),
            repo_name: "platform".into(),
            commit: commit.into(),
            git_ref: "refs/heads/main".into(),
            path: path.into(),
            extra_paths: Vec::new(),
            trusted_keys: Vec::new(),
        },
        namespace: app.into(),
        render: RenderOptions::default(),
        sync_policy: SyncPolicy::default(),
        trace: BTreeMap::new(),
        spec_generation: 1,
        project: None,
        health_rules: Vec::new(),
    }
}

struct Bench {
    kubesim: KubesimHandle,
    recorder: Arc<Recorder>,
    desired: watch::Sender<DesiredState>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _data: tempfile::TempDir,
}

impl Bench {
    async fn start(progress_timeout: Duration) -> Self {
        Self::start_with(progress_timeout, |_| {}).await
    }

    /// Starts with the test defaults, then lets `adjust` change the agent's configuration.
    async fn start_with(progress_timeout: Duration, adjust: impl FnOnce(&mut AgentConfig)) -> Self {
        Self::start_with_client(progress_timeout, adjust, |kubesim| {
            kube::Client::try_from(kubesim.kube_config("c1")).expect("client")
        })
        .await
    }

    /// As [`Bench::start_with`], with the spoke's Kubernetes client made by `client`.
    async fn start_with_client(
        progress_timeout: Duration,
        adjust: impl FnOnce(&mut AgentConfig),
        client: impl FnOnce(&KubesimHandle) -> kube::Client,
    ) -> Self {
        let mut config = KubesimConfig::new(["c1"]);
        config.ready_delay = Duration::from_millis(100);
        let kubesim = Kubesim::start(config).await.expect("kubesim");
        let client = client(&kubesim);
        let data = tempfile::TempDir::new().expect("tempdir");
        let recorder = Arc::new(Recorder::default());
        let (desired, desired_rx) = watch::channel(DesiredState::default());
        let mut agent_config = AgentConfig::new("c1");
        agent_config.progress_timeout = progress_timeout;
        agent_config.health_poll = Duration::from_millis(200);
        agent_config.settled_poll = Duration::from_millis(500);
        agent_config.max_settled_poll = Duration::from_secs(2);
        agent_config.retry_after_failure = Duration::from_secs(1);
        agent_config.helm_command = helm_command();
        adjust(&mut agent_config);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(agent::run(
            agent_config,
            Arc::new(Cluster::new(client)),
            Arc::new(GitCache::new(data.path().join("git"))),
            recorder.clone(),
            desired_rx,
            cancel.clone(),
        ));
        Self {
            kubesim,
            recorder,
            desired,
            cancel,
            task,
            _data: data,
        }
    }

    fn set(&self, generation: u64, targets: Vec<TargetSpec>) {
        self.desired.send_replace(DesiredState {
            generation,
            hub_epoch: "e".into(),
            targets: targets
                .into_iter()
                .map(|t| (t.target_id.clone(), t))
                .collect(),
            credentials: Vec::new(),
        });
    }

    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("agent stops")
            .expect("join");
        self.kubesim.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guestbook_applies_and_becomes_healthy_then_follows_a_new_commit() {
    let bench = Bench::start(Duration::from_secs(30)).await;
    let repo = Repo::new();
    repo.copy_dir(
        &Path::new(CORPUS).join("kubernetes-examples/web/guestbook"),
        "apps/guestbook",
    );
    let v1 = repo.commit();
    bench.set(1, vec![spec("guestbook", &repo, &v1, "apps/guestbook")]);

    let done = bench
        .recorder
        .wait_for("guestbook", "guestbook synced and healthy", |s| {
            s.revision == v1 && s.sync == SyncState::Synced && s.health == Health::Healthy
        })
        .await;
    // 3 Deployments, 3 Services and the Namespace gitfleet creates for the App.
    assert_eq!(done.resources.len(), 7, "{:#?}", done.resources);
    assert!(
        done.resources
            .iter()
            .all(|r| r.action == ResourceAction::Applied && r.health == Health::Healthy)
    );
    assert!(
        done.resources
            .iter()
            .any(|r| r.source_file == "apps/guestbook/frontend-deployment.yaml")
    );

    let frontend = bench
        .kubesim
        .get_object("c1", "apps/v1", "Deployment", Some("guestbook"), "frontend")
        .expect("frontend deployed");
    assert_eq!(
        frontend["metadata"]["labels"]["gitfleet.dev/app"],
        "guestbook"
    );
    assert_eq!(
        frontend["metadata"]["annotations"]["gitfleet.dev/revision"],
        v1.as_str()
    );
    let managers: Vec<&str> = frontend["metadata"]["managedFields"]
        .as_array()
        .expect("managed fields")
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(managers.contains(&"gitfleet/guestbook"), "{managers:?}");

    // A second commit that changes one object converges too.
    let frontend_yaml = std::fs::read_to_string(
        Path::new(CORPUS).join("kubernetes-examples/web/guestbook/frontend-deployment.yaml"),
    )
    .expect("read")
    .replace("replicas: 3", "replicas: 5");
    repo.write("apps/guestbook/frontend-deployment.yaml", &frontend_yaml);
    let v2 = repo.commit();
    let mut next = spec("guestbook", &repo, &v2, "apps/guestbook");
    next.spec_generation = 2;
    bench.set(2, vec![next]);
    bench
        .recorder
        .wait_for("guestbook", "v2 synced and healthy", |s| {
            s.revision == v2 && s.sync == SyncState::Synced && s.health == Health::Healthy
        })
        .await;
    let frontend = bench
        .kubesim
        .get_object("c1", "apps/v1", "Deployment", Some("guestbook"), "frontend")
        .expect("frontend");
    assert_eq!(frontend["spec"]["replicas"], 5);
    assert_eq!(
        frontend["metadata"]["annotations"]["gitfleet.dev/revision"],
        v2.as_str()
    );
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_and_an_unknown_kind_fail_alone_while_the_rest_applies() {
    let bench = Bench::start(Duration::from_secs(30)).await;
    let repo = Repo::new();
    repo.write(
        "apps/mixed/good.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: good\ndata:\n  a: b\n",
    );
    repo.write(
        "apps/mixed/bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\n  labels: [oops\n",
    );
    repo.write(
        "apps/mixed/monitor.yaml",
        "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata:\n  name: mon\nspec: {}\n",
    );
    let commit = repo.commit();
    bench.set(1, vec![spec("mixed", &repo, &commit, "apps/mixed")]);

    let status = bench
        .recorder
        .wait_for("mixed", "mixed applied", |s| {
            s.sync == SyncState::OutOfSync && s.health != Health::Progressing
        })
        .await;
    let by_file = |file: &str| {
        status
            .resources
            .iter()
            .find(|r| r.source_file == file)
            .unwrap_or_else(|| panic!("{file} in {:#?}", status.resources))
    };
    let bad = by_file("apps/mixed/bad.yaml");
    assert_eq!(bad.action, ResourceAction::Invalid);
    assert!(
        bad.message.starts_with("apps/mixed/bad.yaml: "),
        "{}",
        bad.message
    );
    assert!(bad.message.contains("line"), "{}", bad.message);
    let monitor = by_file("apps/mixed/monitor.yaml");
    assert_eq!(monitor.action, ResourceAction::Failed);
    assert!(
        monitor
            .message
            .contains("does not know kind ServiceMonitor"),
        "{}",
        monitor.message
    );
    assert_eq!(
        by_file("apps/mixed/good.yaml").action,
        ResourceAction::Applied
    );
    assert!(
        status.message.contains("apps/mixed/bad.yaml"),
        "{}",
        status.message
    );
    assert!(
        status.message.contains("servicemonitor/mon"),
        "{}",
        status.message
    );
    assert!(
        bench
            .kubesim
            .get_object("c1", "v1", "ConfigMap", Some("mixed"), "good")
            .is_some()
    );
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_workload_is_degraded_with_its_reason() {
    let bench = Bench::start(Duration::from_secs(5)).await;
    let repo = Repo::new();
    repo.write(
        "apps/broken/deploy.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  annotations:\n    kubesim.gitfleet.dev/fail: \"true\"\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: nginx\n",
    );
    let commit = repo.commit();
    bench.set(1, vec![spec("broken", &repo, &commit, "apps/broken")]);
    let status = bench
        .recorder
        .wait_for("broken", "degraded", |s| s.health == Health::Degraded)
        .await;
    assert_eq!(
        status.sync,
        SyncState::Synced,
        "it applied; it is just unhealthy"
    );
    assert!(
        status.message.contains("deployment/web"),
        "{}",
        status.message
    );
    assert!(status.message.contains("replicas"), "{}", status.message);
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crd_and_its_custom_resource_apply_in_one_commit() {
    let bench = Bench::start(Duration::from_secs(30)).await;
    let repo = Repo::new();
    repo.write(
        "apps/widgets/widget.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 3\n",
    );
    repo.write(
        "apps/widgets/crd.yaml",
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#,
    );
    let commit = repo.commit();
    bench.set(1, vec![spec("widgets", &repo, &commit, "apps/widgets")]);
    let status = bench
        .recorder
        .wait_for("widgets", "widgets synced", |s| {
            s.sync == SyncState::Synced && s.health == Health::Healthy
        })
        .await;
    assert!(
        status
            .resources
            .iter()
            .all(|r| r.action == ResourceAction::Applied),
        "{:#?}",
        status.resources
    );
    assert!(
        bench
            .kubesim
            .get_object("c1", "example.com/v1", "Widget", Some("widgets"), "w1")
            .is_some()
    );
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_commit_fails_the_target_and_others_keep_working() {
    // A missing commit is retried (a mirror may lag), so quick retries keep this test quick.
    let bench = Bench::start_with(Duration::from_secs(30), |c| {
        c.fetch_attempts = 2;
        c.fetch_retry_base = Duration::from_millis(20);
    })
    .await;
    let repo = Repo::new();
    repo.write(
        "apps/ok/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n",
    );
    let commit = repo.commit();
    let missing = "0123456789abcdef0123456789abcdef01234567";
    bench.set(
        1,
        vec![
            spec("ghost", &repo, missing, "apps/ok"),
            spec("ok", &repo, &commit, "apps/ok"),
        ],
    );
    let ghost = bench
        .recorder
        .wait_for("ghost", "ghost failed", |s| s.sync == SyncState::Failed)
        .await;
    assert!(ghost.message.contains(missing), "{}", ghost.message);
    assert!(
        ghost.message.starts_with("fetch failed after 2 attempts: "),
        "{}",
        ghost.message
    );
    bench
        .recorder
        .wait_for("ok", "ok healthy", |s| {
            s.sync == SyncState::Synced && s.health == Health::Healthy
        })
        .await;
    bench.stop().await;
}

#[tokio::test]
async fn the_cluster_adapter_names_unknown_kinds() {
    let kubesim = Kubesim::start(KubesimConfig::new(["c1"]))
        .await
        .expect("kubesim");
    let cluster = Cluster::new(kube::Client::try_from(kubesim.kube_config("c1")).expect("client"));
    let deployments = cluster
        .resolve("apps/v1", "Deployment")
        .await
        .expect("deployments are known");
    assert!(deployments.namespaced);
    assert!(
        !cluster
            .resolve("v1", "Namespace")
            .await
            .expect("namespaces")
            .namespaced
    );
    for (api_version, kind) in [
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("v1", "Nonsense"),
    ] {
        let err = cluster
            .resolve(api_version, kind)
            .await
            .expect_err("unknown");
        assert!(matches!(err, ClusterError::UnknownKind { .. }), "{err}");
        assert!(err.to_string().contains(kind), "{err}");
    }
    assert_eq!(cluster.known_scopes().len(), 2);
    kubesim.shutdown().await;
}

fn configmap(name: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  annotations: {{{annotations}}}\ndata:\n  a: b\n"
    )
}

/// Polls kubesim until `done` holds for the object (present or not).
async fn wait_object(
    kubesim: &KubesimHandle,
    ns: &str,
    name: &str,
    what: &str,
    done: impl Fn(bool) -> bool,
) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done(
        kubesim
            .get_object("c1", "v1", "ConfigMap", Some(ns), name)
            .is_some(),
    ) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_dropped_from_git_are_pruned_exactly() {
    let bench = Bench::start(Duration::from_secs(30)).await;
    let repo = Repo::new();
    repo.write("apps/p/keep.yaml", &configmap("keep", ""));
    repo.write("apps/p/drop.yaml", &configmap("drop", ""));
    repo.write(
        "apps/p/precious.yaml",
        &configmap("precious", "gitfleet.dev/prune: disabled"),
    );
    let v1 = repo.commit();
    let mut target = spec("p", &repo, &v1, "apps/p");
    target.sync_policy.prune = true;
    bench.set(1, vec![target.clone()]);
    bench
        .recorder
        .wait_for("p", "v1 synced", |s| {
            s.revision == v1 && s.sync == SyncState::Synced
        })
        .await;
    let inventory = bench
        .kubesim
        .get_object("c1", "v1", "ConfigMap", Some("p"), "gitfleet-inventory-p")
        .expect("inventory recorded in the cluster");
    assert!(
        inventory["data"]["objects"]
            .as_str()
            .expect("objects")
            .contains("\"drop\"")
    );
    // An object gitfleet did not apply is never touched.
    let client = kube::Client::try_from(bench.kubesim.kube_config("c1")).expect("client");
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(client, "p");
    let foreign: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "foreign"}})).expect("cm");
    api.create(&kube::api::PostParams::default(), &foreign)
        .await
        .expect("create foreign");

    std::fs::remove_file(repo.dir.path().join("apps/p/drop.yaml")).expect("rm");
    std::fs::remove_file(repo.dir.path().join("apps/p/precious.yaml")).expect("rm");
    let v2 = repo.commit();
    target.source.commit = v2.clone();
    target.spec_generation = 2;
    bench.set(2, vec![target.clone()]);
    // The object that opted out of pruning stays, and the Target says it requires pruning.
    let status = bench
        .recorder
        .wait_for("p", "v2 applied", |s| {
            s.revision == v2 && s.sync == SyncState::OutOfSync
        })
        .await;
    let leftovers: Vec<(&str, &str)> = status
        .resources
        .iter()
        .filter(|r| r.action == ResourceAction::RequiresPruning)
        .map(|r| (r.object.name.as_str(), r.message.as_str()))
        .collect();
    assert_eq!(
        leftovers,
        [(
            "precious",
            "requires pruning: no longer in Git, kept because it is annotated gitfleet.dev/prune: disabled"
        )]
    );
    assert_eq!(status.health, Health::Healthy, "{}", status.message);
    let pruned: Vec<&str> = status
        .resources
        .iter()
        .filter(|r| r.action == ResourceAction::Pruned)
        .map(|r| r.object.name.as_str())
        .collect();
    assert_eq!(pruned, ["drop"]);
    wait_object(&bench.kubesim, "p", "drop", "drop pruned", |present| {
        !present
    })
    .await;
    assert!(
        bench
            .kubesim
            .get_object("c1", "v1", "ConfigMap", Some("p"), "precious")
            .is_some(),
        "opted out of pruning"
    );
    assert!(
        bench
            .kubesim
            .get_object("c1", "v1", "ConfigMap", Some("p"), "foreign")
            .is_some(),
        "never applied by gitfleet"
    );
    assert!(
        bench
            .kubesim
            .get_object("c1", "v1", "ConfigMap", Some("p"), "keep")
            .is_some()
    );

    // Removing the Target prunes what it applied, and its inventory; the namespace stays.
    bench.set(3, vec![]);
    wait_object(
        &bench.kubesim,
        "p",
        "keep",
        "keep pruned with its target",
        |present| !present,
    )
    .await;
    wait_object(
        &bench.kubesim,
        "p",
        "gitfleet-inventory-p",
        "inventory removed",
        |present| !present,
    )
    .await;
    assert!(
        bench
            .kubesim
            .get_object("c1", "v1", "ConfigMap", Some("p"), "precious")
            .is_some()
    );
    assert!(
        bench
            .kubesim
            .get_object("c1", "v1", "Namespace", None, "p")
            .is_some()
    );
    bench.stop().await;
}

type Meddling = Arc<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// A layer of the spoke's Kubernetes client that, before the first DELETE whose path ends
/// with `path` goes out, runs `meddle` to completion: someone else acting on the object
/// between the spoke's last look at it and its delete.
#[derive(Clone)]
struct MeddleBeforeDelete {
    path: String,
    meddle: Meddling,
    fired: Arc<std::sync::atomic::AtomicBool>,
}

impl<S> tower::Layer<S> for MeddleBeforeDelete {
    type Service = Meddled<S>;

    fn layer(&self, inner: S) -> Meddled<S> {
        Meddled {
            inner: Arc::new(tokio::sync::Mutex::new(inner)),
            layer: self.clone(),
        }
    }
}

struct Meddled<S> {
    inner: Arc<tokio::sync::Mutex<S>>,
    layer: MeddleBeforeDelete,
}

impl<S, B> tower::Service<http::Request<B>> for Meddled<S>
where
    S: tower::Service<http::Request<B>> + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        // Readiness is awaited on the inner service when a request is made.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let meddle = (request.method() == http::Method::DELETE
            && request.uri().path().ends_with(&self.layer.path)
            && !self.layer.fired.swap(true, Ordering::SeqCst))
        .then(|| (self.layer.meddle)());
        let inner = self.inner.clone();
        Box::pin(async move {
            if let Some(meddle) = meddle {
                meddle.await;
            }
            let response = {
                let mut inner = inner.lock().await;
                std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
                inner.call(request)
            };
            response.await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_changed_between_the_prune_check_and_the_delete_is_not_deleted() {
    let changed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bench = Bench::start_with_client(
        Duration::from_secs(30),
        |_| {},
        |kubesim| {
            let config = kubesim.kube_config("c1");
            let someone = kube::Client::try_from(config.clone()).expect("client");
            let changed = changed.clone();
            // Someone else edits the object (it stays this Target's: same label and
            // annotation) after the spoke checked it and before its delete arrives.
            let meddle: Meddling = Arc::new(move || {
                let someone = someone.clone();
                let changed = changed.clone();
                Box::pin(async move {
                    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
                        kube::Api::namespaced(someone, "race");
                    api.patch(
                        "drop",
                        &kube::api::PatchParams::apply("someone-else"),
                        &kube::api::Patch::Apply(serde_json::json!({
                            "apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "drop"},
                            "data": {"edited": "by someone else"},
                        })),
                    )
                    .await
                    .expect("someone else edits the object");
                    changed.store(true, Ordering::SeqCst);
                })
            });
            let layer = MeddleBeforeDelete {
                path: "/namespaces/race/configmaps/drop".into(),
                meddle,
                fired: Arc::default(),
            };
            kube::client::ClientBuilder::try_from(config)
                .expect("client builder")
                .with_layer(&layer)
                .build()
        },
    )
    .await;
    let repo = Repo::new();
    repo.write("apps/race/keep.yaml", &configmap("keep", ""));
    repo.write("apps/race/drop.yaml", &configmap("drop", ""));
    let v1 = repo.commit();
    let mut target = spec("race", &repo, &v1, "apps/race");
    target.sync_policy.prune = true;
    bench.set(1, vec![target.clone()]);
    bench
        .recorder
        .wait_for("race", "v1 synced", |s| {
            s.revision == v1 && s.sync == SyncState::Synced
        })
        .await;

    std::fs::remove_file(repo.dir.path().join("apps/race/drop.yaml")).expect("rm");
    let v2 = repo.commit();
    target.source.commit = v2.clone();
    target.spec_generation = 2;
    bench.set(2, vec![target.clone()]);
    let status = bench
        .recorder
        .wait_for("race", "v2 applied", |s| {
            s.revision == v2 && s.sync != SyncState::Syncing
        })
        .await;
    assert!(changed.load(Ordering::SeqCst), "the delete was made");
    assert_eq!(status.sync, SyncState::OutOfSync, "{}", status.message);
    let drop = status
        .resources
        .iter()
        .find(|r| r.object.name == "drop")
        .expect("a result for drop");
    assert_eq!(
        (drop.action, drop.message.as_str()),
        (ResourceAction::Skipped, "skipped: changed since checked")
    );
    let live = bench
        .kubesim
        .get_object("c1", "v1", "ConfigMap", Some("race"), "drop")
        .expect("the edited object was not deleted");
    assert_eq!(live["data"]["edited"], "by someone else");

    // The next sync looks at it as it is now, still this Target's, and prunes it.
    target.spec_generation = 3;
    bench.set(3, vec![target]);
    let status = bench
        .recorder
        .wait_for("race", "drop pruned", |s| {
            s.sync == SyncState::Synced
                && s.resources
                    .iter()
                    .any(|r| r.object.name == "drop" && r.action == ResourceAction::Pruned)
        })
        .await;
    assert_eq!(status.revision, v2);
    wait_object(&bench.kubesim, "race", "drop", "drop pruned", |present| {
        !present
    })
    .await;
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_prune_policy_dropped_objects_stay() {
    let bench = Bench::start(Duration::from_secs(30)).await;
    let repo = Repo::new();
    repo.write("apps/q/a.yaml", &configmap("a", ""));
    repo.write("apps/q/b.yaml", &configmap("b", ""));
    let v1 = repo.commit();
    bench.set(1, vec![spec("q", &repo, &v1, "apps/q")]);
    bench
        .recorder
        .wait_for("q", "v1 synced", |s| {
            s.revision == v1 && s.sync == SyncState::Synced
        })
        .await;
    std::fs::remove_file(repo.dir.path().join("apps/q/b.yaml")).expect("rm");
    let v2 = repo.commit();
    bench.set(2, vec![spec("q", &repo, &v2, "apps/q")]);
    let status = bench
        .recorder
        .wait_for("q", "v2 applied", |s| {
            s.revision == v2 && s.sync == SyncState::OutOfSync
        })
        .await;
    assert!(
        status
            .resources
            .iter()
            .all(|r| r.action != ResourceAction::Pruned)
    );
    let leftover = status
        .resources
        .iter()
        .find(|r| r.action == ResourceAction::RequiresPruning)
        .expect("b reported");
    assert_eq!(leftover.object.name, "b");
    assert_eq!(
        status.message,
        "configmap/b: requires pruning: no longer in Git, kept because the App's sync policy has prune off"
    );
    assert!(
        bench
            .kubesim
            .get_object("c1", "v1", "ConfigMap", Some("q"), "b")
            .is_some()
    );
    // Deleted by hand, it is no longer reported (nor remembered).
    let client = kube::Client::try_from(bench.kubesim.kube_config("c1")).expect("client");
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(client, "q");
    api.delete("b", &Default::default())
        .await
        .expect("delete b");
    let mut again = spec("q", &repo, &v2, "apps/q");
    again.spec_generation = 3;
    bench.set(3, vec![again]);
    bench
        .recorder
        .wait_for("q", "v2 synced without b", |s| {
            s.spec_generation == 3 && s.sync == SyncState::Synced
        })
        .await;
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_in_a_wave_that_stops_on_failure_skips_later_waves_only() {
    let bench = Bench::start(Duration::from_secs(30)).await;
    let repo = Repo::new();
    let wave = |name: &str, wave: i32, extra: &str| {
        configmap(name, &format!("gitfleet.dev/wave: \"{wave}\"{extra}"))
    };
    // Wave 0 continues past its failure (an unknown kind), wave 1 stops on its failure.
    repo.write(
        "apps/w/unknown.yaml",
        "apiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: g\n",
    );
    repo.write("apps/w/first.yaml", &wave("first", 0, ""));
    repo.write(
        "apps/w/second.yaml",
        &wave("second", 1, ", gitfleet.dev/wave-on-failure: stop"),
    );
    repo.write(
        "apps/w/broken.yaml",
        "apiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: broken\n  annotations: {gitfleet.dev/wave: \"1\"}\n",
    );
    repo.write("apps/w/third.yaml", &wave("third", 2, ""));
    let commit = repo.commit();
    bench.set(1, vec![spec("w", &repo, &commit, "apps/w")]);
    let status = bench
        .recorder
        .wait_for("w", "w applied", |s| s.sync == SyncState::OutOfSync)
        .await;
    let action = |name: &str| {
        status
            .resources
            .iter()
            .find(|r| r.object.name == name)
            .map(|r| (r.action, r.message.clone()))
            .unwrap_or_else(|| panic!("{name} reported"))
    };
    assert_eq!(action("g").0, ResourceAction::Failed);
    assert_eq!(action("first").0, ResourceAction::Applied, "wave 0 goes on");
    assert_eq!(
        action("second").0,
        ResourceAction::Applied,
        "its own wave goes on"
    );
    assert_eq!(action("broken").0, ResourceAction::Failed);
    assert_eq!(
        action("third"),
        (
            ResourceAction::Skipped,
            "not applied: gadget/broken failed in wave 1, which stops on failure".to_owned()
        )
    );
    assert!(
        bench
            .kubesim
            .get_object("c1", "v1", "ConfigMap", Some("w"), "third")
            .is_none()
    );
    assert!(
        bench
            .kubesim
            .get_object("c1", "v1", "ConfigMap", Some("w"), "second")
            .is_some()
    );
    bench.stop().await;
}

/// Changes `data.a` of a ConfigMap the way `kubectl edit` would (an update by another manager).
async fn edit_configmap(kubesim: &KubesimHandle, ns: &str, name: &str, value: &str) {
    let client = kube::Client::try_from(kubesim.kube_config("c1")).expect("client");
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(client, ns);
    let patch = serde_json::json!({"data": {"a": value}});
    let params = kube::api::PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    api.patch(name, &params, &kube::api::Patch::Merge(&patch))
        .await
        .expect("edit");
}

fn data_a(kubesim: &KubesimHandle, ns: &str, name: &str) -> Option<String> {
    let cm = kubesim.get_object("c1", "v1", "ConfigMap", Some(ns), name)?;
    cm["data"]["a"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_reported_and_reverted_only_with_self_heal() {
    // Settled Targets are polled only once an hour here: drift can only be seen in time
    // through the watches on the applied objects.
    let bench = Bench::start_with(Duration::from_secs(30), |config| {
        config.settled_poll = Duration::from_secs(3600);
        config.max_settled_poll = Duration::from_secs(3600);
    })
    .await;
    let repo = Repo::new();
    repo.write("apps/d/cm.yaml", &configmap("settings", ""));
    let commit = repo.commit();
    let watched = spec("watched", &repo, &commit, "apps/d");
    let mut healed = spec("healed", &repo, &commit, "apps/d");
    healed.sync_policy.self_heal = true;
    bench.set(1, vec![watched, healed]);
    for target in ["watched", "healed"] {
        bench
            .recorder
            .wait_for(target, "synced", |s| {
                s.sync == SyncState::Synced && s.health == Health::Healthy
            })
            .await;
    }

    edit_configmap(&bench.kubesim, "watched", "settings", "edited").await;
    let status = bench
        .recorder
        .wait_for("watched", "drift reported", |s| {
            s.sync == SyncState::OutOfSync
        })
        .await;
    let drifted = status
        .resources
        .iter()
        .find(|r| r.action == ResourceAction::Drifted)
        .expect("drifted resource");
    assert_eq!(drifted.object.name, "settings");
    assert!(drifted.message.contains("data.a"), "{}", drifted.message);
    assert_eq!(
        data_a(&bench.kubesim, "watched", "settings").as_deref(),
        Some("edited"),
        "without selfHeal it stays"
    );

    edit_configmap(&bench.kubesim, "healed", "settings", "edited").await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while data_a(&bench.kubesim, "healed", "settings").as_deref() != Some("b") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "selfHeal did not revert the edit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        bench
            .recorder
            .reports
            .lock()
            .expect("reports")
            .iter()
            .any(|r| r.target_id == "healed" && r.sync == SyncState::OutOfSync),
        "the drift was reported before it was reverted"
    );
    bench
        .recorder
        .wait_for("healed", "back in sync", |s| s.sync == SyncState::Synced)
        .await;

    // Deleted by someone else, it comes back.
    let client = kube::Client::try_from(bench.kubesim.kube_config("c1")).expect("client");
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client, "healed");
    api.delete("settings", &Default::default())
        .await
        .expect("delete");
    wait_object(
        &bench.kubesim,
        "healed",
        "settings",
        "recreated",
        |present| present,
    )
    .await;
    bench.stop().await;
}

impl Repo {
    /// Copies a directory tree (recursively) into the repository.
    fn copy_tree(&self, from: &Path, to: &str) {
        for entry in std::fs::read_dir(from).expect("read dir") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("name")
                .to_owned();
            if path.is_dir() {
                self.copy_tree(&path, &format!("{to}/{name}"));
            } else {
                self.write(
                    &format!("{to}/{name}"),
                    &std::fs::read_to_string(&path).expect("read"),
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kustomize_overlay_renders_with_its_declared_bases() {
    let bench = Bench::start(Duration::from_secs(30)).await;
    let repo = Repo::new();
    repo.copy_tree(&Path::new(CORPUS).join("podinfo/deploy"), "deploy");
    let commit = repo.commit();
    let mut target = spec("podinfo", &repo, &commit, "deploy/overlays/dev");
    target.source.extra_paths = vec!["deploy/bases".into()];
    bench.set(1, vec![target]);
    let status = bench
        .recorder
        .wait_for("podinfo", "podinfo applied", |s| {
            s.sync != SyncState::Syncing && s.sync != SyncState::Pending
        })
        .await;
    assert_eq!(
        status.sync,
        SyncState::Synced,
        "{}: {:#?}",
        status.message,
        status.resources
    );
    assert!(status.resources.iter().all(|r| r.source_file
        == "deploy/overlays/dev/kustomization.yaml"
        || r.object.name == "podinfo"));
    let frontend = bench
        .kubesim
        .get_object("c1", "apps/v1", "Deployment", Some("dev"), "frontend")
        .expect("frontend in the overlay's namespace");
    assert_eq!(
        frontend["metadata"]["labels"]["app.kubernetes.io/environment"],
        "dev"
    );
    assert_eq!(
        frontend["metadata"]["labels"]["gitfleet.dev/app"],
        "podinfo"
    );
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_kustomizations_fail_only_their_target() {
    let bench = Bench::start(Duration::from_secs(30)).await;
    let repo = Repo::new();
    repo.write(
        "apps/remote/kustomization.yaml",
        "resources:\n- https://example.com/evil.yaml\n",
    );
    repo.write(
        "apps/outside/kustomization.yaml",
        "resources:\n- ../../secret\n",
    );
    // A generator outside the App's files: kustomize would read the spoke's own files.
    repo.write(
        "apps/generator/kustomization.yaml",
        "configMapGenerator:\n- name: loot\n  files: [key=../../../../../../etc/hostname]\n",
    );
    repo.write(
        "apps/remotegen/kustomization.yaml",
        "generators:\n- https://example.com/evil/generator?ref=main\n",
    );
    repo.write("secret/kustomization.yaml", "resources: [cm.yaml]\n");
    repo.write("secret/cm.yaml", &configmap("secret", ""));
    repo.write("apps/ok/cm.yaml", &configmap("ok", ""));
    let commit = repo.commit();
    bench.set(
        1,
        vec![
            spec("remote", &repo, &commit, "apps/remote"),
            spec("outside", &repo, &commit, "apps/outside"),
            spec("generator", &repo, &commit, "apps/generator"),
            spec("remotegen", &repo, &commit, "apps/remotegen"),
            spec("ok", &repo, &commit, "apps/ok"),
        ],
    );
    let generator = bench
        .recorder
        .wait_for("generator", "generator refused", |s| {
            s.sync == SyncState::Failed
        })
        .await;
    assert_eq!(
        generator.message,
        "apps/generator/kustomization.yaml: configMapGenerator[0].files[0]: \"../../../../../../etc/hostname\" leads out of the App path and its extraPaths"
    );
    let remotegen = bench
        .recorder
        .wait_for("remotegen", "remote generator refused", |s| {
            s.sync == SyncState::Failed
        })
        .await;
    assert_eq!(
        remotegen.message,
        "apps/remotegen/kustomization.yaml: generators[0]: remote resource \"https://example.com/evil/generator?ref=main\" is not allowed; vendor it into the repository"
    );
    let remote = bench
        .recorder
        .wait_for("remote", "remote refused", |s| s.sync == SyncState::Failed)
        .await;
    assert!(
        remote
            .message
            .contains("remote resource \"https://example.com/evil.yaml\" is not allowed"),
        "{}",
        remote.message
    );
    let outside = bench
        .recorder
        .wait_for("outside", "outside refused", |s| {
            s.sync == SyncState::Failed
        })
        .await;
    assert!(
        outside.message.contains("kustomize build failed"),
        "{}",
        outside.message
    );
    assert!(
        bench
            .kubesim
            .get_object("c1", "v1", "ConfigMap", Some("outside"), "secret")
            .is_none()
    );
    bench
        .recorder
        .wait_for("ok", "ok synced", |s| s.sync == SyncState::Synced)
        .await;
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_repositories_are_refused_and_other_targets_keep_working() {
    let bench = Bench::start(Duration::from_secs(30)).await;
    let repo = Repo::new();
    repo.write("apps/ok/cm.yaml", &configmap("ok", ""));
    // A symlink pointing outside the checkout, next to a good file.
    repo.write("apps/link/cm.yaml", &configmap("linked", ""));
    std::os::unix::fs::symlink("/etc/passwd", repo.dir.path().join("apps/link/passwd.yaml"))
        .expect("symlink");
    // A YAML "billion laughs".
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (name, prev) in [
        ("b", "a"),
        ("c", "b"),
        ("d", "c"),
        ("e", "d"),
        ("f", "e"),
        ("g", "f"),
        ("h", "g"),
        ("i", "h"),
    ] {
        bomb.push_str(&format!(
            "{name}: &{name} [{}]\n",
            vec![format!("*{prev}"); 9].join(",")
        ));
    }
    repo.write("apps/bomb/bomb.yaml", &bomb);
    // 10,000 tiny documents.
    repo.write(
        "apps/many/many.yaml",
        &"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n".repeat(10_000),
    );
    let commit = repo.commit();
    let mut escape = spec("escape", &repo, &commit, "apps/../../etc");
    escape.namespace = "escape".into();
    bench.set(
        1,
        vec![
            spec("ok", &repo, &commit, "apps/ok"),
            spec("link", &repo, &commit, "apps/link"),
            spec("bomb", &repo, &commit, "apps/bomb"),
            spec("many", &repo, &commit, "apps/many"),
            escape,
        ],
    );
    let link = bench
        .recorder
        .wait_for("link", "link applied", |s| s.sync == SyncState::OutOfSync)
        .await;
    let refused = link
        .resources
        .iter()
        .find(|r| r.action == ResourceAction::Invalid)
        .expect("symlink refused");
    assert_eq!(refused.source_file, "apps/link/passwd.yaml");
    assert!(
        refused.message.contains("symbolic links are refused"),
        "{}",
        refused.message
    );
    assert!(
        bench
            .kubesim
            .get_object("c1", "v1", "ConfigMap", Some("link"), "linked")
            .is_some()
    );

    let bomb = bench
        .recorder
        .wait_for("bomb", "bomb refused", |s| s.sync == SyncState::OutOfSync)
        .await;
    assert!(
        bomb.message.contains("apps/bomb/bomb.yaml"),
        "{}",
        bomb.message
    );
    assert!(
        bomb.message.contains("a YAML alias bomb?"),
        "{}",
        bomb.message
    );
    let many = bench
        .recorder
        .wait_for("many", "many refused", |s| s.sync == SyncState::Failed)
        .await;
    assert!(
        many.message.contains("more than 5000 documents"),
        "{}",
        many.message
    );
    let escape = bench
        .recorder
        .wait_for("escape", "escape refused", |s| s.sync == SyncState::Failed)
        .await;
    assert!(
        escape.message.contains("must not contain '..'"),
        "{}",
        escape.message
    );
    bench
        .recorder
        .wait_for("ok", "ok synced", |s| {
            s.sync == SyncState::Synced && s.health == Health::Healthy
        })
        .await;
    bench.stop().await;
}

/// The objects `helm template` renders for a chart, rendered independently of the spoke.
fn helm_template(
    chart: &Path,
    release: &str,
    namespace: &str,
    values: &[&Path],
) -> Vec<serde_json::Value> {
    let mut command = std::process::Command::new(helm_command());
    command.args(["template", release]).arg(chart).args([
        "--namespace",
        namespace,
        "--include-crds",
        "--skip-tests",
    ]);
    for file in values {
        command.arg("--values").arg(file);
    }
    let output = command.output().expect("run scripts/helm");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("helm prints UTF-8");
    gitfleet_core::yaml::Budget::new(gitfleet_core::yaml::Limits::DEFAULT)
        .documents(&text)
        .expect("yaml")
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_podinfo_chart_renders_with_helm_and_the_cluster_holds_exactly_its_objects() {
    let bench = Bench::start(Duration::from_secs(30)).await;
    let repo = Repo::new();
    let chart = Path::new(CORPUS).join("podinfo/charts/podinfo");
    repo.copy_tree(&chart, "charts/podinfo");
    let commit = repo.commit();
    let mut target = spec("podinfo", &repo, &commit, "charts/podinfo");
    target.render.helm_release = "web".into();
    target.render.helm_values_files = vec!["values-prod.yaml".into()];
    // kubesim runs no autoscaler, so the HPA values-prod.yaml turns on would never report.
    let inline_values = "hpa:\n  enabled: false\nreplicaCount: 2\n";
    target.render.helm_values_yaml = inline_values.into();
    bench.set(1, vec![target]);
    let status = bench
        .recorder
        .wait_for("podinfo", "podinfo applied and healthy", |s| {
            s.sync == SyncState::Synced && s.health == Health::Healthy
        })
        .await;

    let inline = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(inline.path(), inline_values).expect("write");
    let expected = helm_template(
        &chart,
        "web",
        "podinfo",
        &[&chart.join("values-prod.yaml"), inline.path()],
    );
    assert!(expected.len() >= 4, "{expected:#?}");
    let mut applied: Vec<(String, String)> = status
        .resources
        .iter()
        .filter(|r| r.object.kind != "Namespace")
        .map(|r| (r.object.kind.clone(), r.object.name.clone()))
        .collect();
    applied.sort();
    let mut rendered: Vec<(String, String)> = expected
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().expect("kind").to_owned(),
                o["metadata"]["name"].as_str().expect("name").to_owned(),
            )
        })
        .collect();
    rendered.sort();
    assert_eq!(
        applied, rendered,
        "the Target applied exactly what helm rendered"
    );
    for object in &expected {
        let kind = object["kind"].as_str().expect("kind");
        let name = object["metadata"]["name"].as_str().expect("name");
        let live = bench
            .kubesim
            .get_object(
                "c1",
                object["apiVersion"].as_str().expect("apiVersion"),
                kind,
                Some("podinfo"),
                name,
            )
            .unwrap_or_else(|| panic!("{kind} {name} is in the cluster"));
        let differs = gitfleet_spoke::sync::drift::diff(object, &live);
        assert!(differs.is_empty(), "{kind} {name} differs at {differs:?}");
        assert_eq!(live["metadata"]["labels"]["gitfleet.dev/app"], "podinfo");
        let source = status
            .resources
            .iter()
            .find(|r| r.object.kind == kind && r.object.name == name)
            .map(|r| r.source_file.clone())
            .expect("result");
        assert!(source.starts_with("charts/podinfo/templates/"), "{source}");
    }
    let deployment = bench
        .kubesim
        .get_object(
            "c1",
            "apps/v1",
            "Deployment",
            Some("podinfo"),
            "web-podinfo",
        )
        .expect("deployment");
    assert_eq!(deployment["spec"]["replicas"], 2, "inline values win");
    assert!(
        bench
            .kubesim
            .get_object(
                "c1",
                "apps/v1",
                "Deployment",
                Some("podinfo"),
                "web-podinfo-redis"
            )
            .is_some(),
        "values-prod.yaml turns the redis cache on"
    );
    bench.stop().await;
}

/// A stand-in for helm that renders one ConfigMap, `env`, holding its arguments and its
/// environment.
const ENV_DUMPING_HELM: &str = r#"#!/bin/sh
printf -- '---\n# Source: envdump/templates/env.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: env\ndata:\n  args: |\n'
for a in "$@"; do printf '    %s\n' "$a"; done
printf '  env: |\n'
env | sed 's/^/    /'
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renderer_sees_none_of_the_spoke_s_environment() {
    let tools = tempfile::TempDir::new().expect("tempdir");
    let fake = tools.path().join("helm");
    std::fs::write(&fake, ENV_DUMPING_HELM).expect("write");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let bench = Bench::start_with(Duration::from_secs(30), |config| {
        config.helm_command = fake.clone();
    })
    .await;
    let repo = Repo::new();
    repo.write(
        "apps/envdump/Chart.yaml",
        "apiVersion: v2\nname: envdump\nversion: 1.0.0\n",
    );
    repo.write("apps/envdump/values-x.yaml", "a: 1\n");
    let commit = repo.commit();
    let mut target = spec("envdump", &repo, &commit, "apps/envdump");
    target.render.helm_values_files = vec!["values-x.yaml".into()];
    bench.set(1, vec![target]);
    bench
        .recorder
        .wait_for("envdump", "envdump applied", |s| {
            s.sync == SyncState::Synced
        })
        .await;
    let dump = bench
        .kubesim
        .get_object("c1", "v1", "ConfigMap", Some("envdump"), "env")
        .expect("the renderer's ConfigMap");
    let text = |key: &str| dump["data"][key].as_str().expect(key).to_owned();
    let args: Vec<String> = text("args").lines().map(str::to_owned).collect();
    let [.., values, dashes, release, chart] = args.as_slice() else {
        panic!("{args:?}")
    };
    assert!(
        values.starts_with("--values=/") && values.ends_with("/apps/envdump/values-x.yaml"),
        "{args:?}"
    );
    assert_eq!(
        (dashes.as_str(), release.as_str()),
        ("--", "envdump"),
        "{args:?}"
    );
    assert!(chart.ends_with("/repo/apps/envdump"), "{args:?}");
    let env = text("env");
    let env: Vec<(&str, &str)> = env.lines().filter_map(|l| l.split_once('=')).collect();
    let var = |key: &str| env.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    // A throwaway home next to the copy of the repository, not the spoke's.
    let home = var("HOME").expect("HOME");
    assert!(home.ends_with("/home"), "{home}");
    assert!(Some(home) != std::env::var("HOME").ok().as_deref());
    let root = chart.trim_end_matches("/repo/apps/envdump");
    assert_eq!(Path::new(home).parent(), Some(Path::new(root)));
    assert_eq!(var("KUBECONFIG"), Some("/dev/null"));
    assert_eq!(var("PATH"), std::env::var("PATH").ok().as_deref());
    // Every variable of the spoke's process (here, the test's: cargo's at least) other than
    // PATH and the locale stays out. The fake helm's shell sets PWD, SHLVL and `_` itself.
    let own: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| !gitfleet_spoke::process::INHERITED_ENV.contains(&k.as_str()))
        .filter(|k| !["PWD", "OLDPWD", "SHLVL", "_"].contains(&k.as_str()))
        .filter(|k| {
            !gitfleet_spoke::process::sandbox_env(Vec::new(), Path::new("/h"))
                .iter()
                .any(|(a, _)| a == k.as_str())
        })
        .collect();
    assert!(!own.is_empty());
    for key in &own {
        assert_eq!(var(key), None, "{key} reached the renderer");
    }
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_charts_fail_only_their_target() {
    let bench = Bench::start_with(Duration::from_secs(30), |config| {
        config.helm_timeout = Duration::from_secs(3);
    })
    .await;
    let repo = Repo::new();
    let chart = |name: &str| format!("apiVersion: v2\nname: {name}\nversion: 1.0.0\n");
    repo.write("apps/loop/Chart.yaml", &chart("loop"));
    // 10^10 iterations in a few bytes: bounded by the timeout, not by the chart.
    repo.write(
        "apps/loop/templates/cm.yaml",
        "{{- range until 100000 }}{{- range until 100000 }}{{- end }}{{- end }}\n",
    );
    repo.write("apps/recursive/Chart.yaml", &chart("recursive"));
    repo.write(
        "apps/recursive/templates/cm.yaml",
        "{{- define \"r.loop\" }}{{ include \"r.loop\" . }}{{- end }}{{ include \"r.loop\" . }}\n",
    );
    repo.write(
        "apps/remote/Chart.yaml",
        &format!(
            "{}dependencies:\n- name: redis\n  version: 1.0.0\n  repository: https://charts.example.com\n",
            chart("remote")
        ),
    );
    // A release name that is a flag: with helm 3 it would render the spoke's key into a
    // ConfigMap (`--set-file`), or run a program (`--post-renderer`).
    repo.write("apps/smuggle/Chart.yaml", &chart("smuggle"));
    repo.write(
        "apps/smuggle/templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: loot}\ndata:\n  k: {{ .Values.k | quote }}\n",
    );
    repo.write("apps/ok/cm.yaml", &configmap("ok", ""));
    let commit = repo.commit();
    let mut smuggle = spec("smuggle", &repo, &commit, "apps/smuggle");
    smuggle.render.helm_release = "--set-file=k=/etc/hostname".into();
    bench.set(
        1,
        vec![
            spec("loop", &repo, &commit, "apps/loop"),
            spec("recursive", &repo, &commit, "apps/recursive"),
            spec("remote", &repo, &commit, "apps/remote"),
            smuggle,
            spec("ok", &repo, &commit, "apps/ok"),
        ],
    );
    bench
        .recorder
        .wait_for("ok", "ok synced", |s| s.sync == SyncState::Synced)
        .await;
    let looping = bench
        .recorder
        .wait_for("loop", "loop stopped", |s| s.sync == SyncState::Failed)
        .await;
    assert_eq!(
        looping.message,
        "apps/loop: helm template did not finish within 3s"
    );
    let recursive = bench
        .recorder
        .wait_for("recursive", "recursion refused", |s| {
            s.sync == SyncState::Failed
        })
        .await;
    // Helm's own recursion limit names the template; on a loaded machine the timeout may stop
    // it first. Either way it is refused, bounded, and the other Targets go on.
    assert!(
        recursive
            .message
            .starts_with("apps/recursive: helm template ")
            && (recursive.message.contains("recursive/templates/cm.yaml")
                || recursive.message.contains("did not finish within 3s")),
        "{}",
        recursive.message
    );
    let remote = bench
        .recorder
        .wait_for("remote", "remote refused", |s| s.sync == SyncState::Failed)
        .await;
    assert!(
        remote.message.starts_with(
            "apps/remote/Chart.yaml: dependency \"redis\" is not vendored under charts/"
        ),
        "{}",
        remote.message
    );
    let smuggle = bench
        .recorder
        .wait_for("smuggle", "smuggled flag refused", |s| {
            s.sync == SyncState::Failed
        })
        .await;
    assert_eq!(
        smuggle.message,
        "spec.render.helm.releaseName \"--set-file=k=/etc/hostname\" must consist of lowercase letters, digits, '-' and '.'"
    );
    assert!(
        bench
            .kubesim
            .get_object("c1", "v1", "ConfigMap", Some("smuggle"), "loot")
            .is_none(),
        "nothing was rendered"
    );
    // The spoke kept serving the others throughout: ok is still synced and healthy.
    let ok = bench.recorder.latest("ok").expect("ok reported");
    assert_eq!(ok.sync, SyncState::Synced);
    bench.stop().await;
}

/// `git daemon` serving every repository on this machine over `git://`, on a free loopback
/// port; stopped when dropped.
struct GitDaemon {
    addr: SocketAddr,
    _child: tokio::process::Child,
}

impl GitDaemon {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = tokio::process::Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--base-path=/",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("git daemon starts");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "git daemon listens on {addr}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            addr,
            _child: child,
        }
    }
}

/// A TCP proxy in front of the Git server that closes the first `refuse` connections the
/// moment it accepts them (a server over its connection limit, a reset) and forwards the rest.
struct FlakyProxy {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl FlakyProxy {
    async fn start(upstream: SocketAddr, refuse: usize) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if counted.fetch_add(1, Ordering::SeqCst) < refuse {
                    drop(client);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self {
            addr,
            connections,
            accept,
        }
    }

    /// The `git://` URL of `repo` through this proxy.
    fn url(&self, repo: &Repo) -> String {
        format!("git://{}{}", self.addr, repo.dir.path().display())
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// How many fetch tries failed, as `/metrics` counts them.
fn fetch_errors(metrics: &SpokeMetrics) -> u64 {
    let text = metrics.encode(&LinkSnapshot {
        connected: false,
        targets: BTreeSet::new(),
        unacked_reports: 0,
        desired_generation: 0,
    });
    text.lines()
        .find_map(|l| l.strip_prefix("gitfleet_spoke_errors_total{kind=\"fetch\"} "))
        .map_or(0, |n| n.parse().expect("a count"))
}

impl Recorder {
    /// Every report of `target` so far, oldest first.
    fn all(&self, target: &str) -> Vec<TargetStatus> {
        self.reports
            .lock()
            .expect("reports")
            .iter()
            .filter(|r| r.target_id == target)
            .cloned()
            .collect()
    }
}

/// A repository with one ConfigMap under `apps/cm`, and its commit. Like the big hosts, it
/// serves a commit asked for by id, so that one fetch takes one connection.
fn configmap_repo() -> (Repo, String) {
    let repo = Repo::new();
    repo.repo
        .config()
        .and_then(|mut c| c.set_bool("uploadpack.allowReachableSHA1InWant", true))
        .expect("configure the repository");
    repo.write("apps/cm/cm.yaml", &configmap("cm", ""));
    let commit = repo.commit();
    (repo, commit)
}

fn is_retry_report(status: &TargetStatus) -> bool {
    status.sync == SyncState::Syncing && status.message.contains("retrying in")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_that_fails_for_a_moment_is_retried_and_the_target_never_fails() {
    let daemon = GitDaemon::start().await;
    let proxy = FlakyProxy::start(daemon.addr, 2).await;
    let metrics = Arc::new(SpokeMetrics::new());
    let counted = metrics.clone();
    let bench = Bench::start_with(Duration::from_secs(30), move |c| {
        c.fetch_attempts = 4;
        c.fetch_retry_base = Duration::from_millis(100);
        c.metrics = counted;
    })
    .await;
    let (repo, commit) = configmap_repo();
    let mut flaky = spec("flaky", &repo, &commit, "apps/cm");
    flaky.source.repo_url = proxy.url(&repo);
    bench.set(1, vec![flaky]);

    bench
        .recorder
        .wait_for("flaky", "flaky synced and healthy", |s| {
            s.sync == SyncState::Synced && s.health == Health::Healthy
        })
        .await;
    let reports = bench.recorder.all("flaky");
    assert!(
        reports.iter().all(|r| r.sync != SyncState::Failed),
        "a blip must not fail the Target: {reports:#?}"
    );
    let retry = reports
        .iter()
        .find(|r| is_retry_report(r))
        .unwrap_or_else(|| panic!("a Syncing report says the fetch is retried: {reports:#?}"));
    assert!(
        retry
            .message
            .starts_with("fetch failed (attempt 1 of 4), retrying in "),
        "{}",
        retry.message
    );
    assert!(
        retry.message.contains(&proxy.addr.to_string()),
        "{}",
        retry.message
    );
    assert!(
        proxy.connections() > 2,
        "{} connections",
        proxy.connections()
    );
    assert!(fetch_errors(&metrics) >= 1, "each failed try is counted");
    assert!(
        bench
            .kubesim
            .get_object("c1", "v1", "ConfigMap", Some("flaky"), "cm")
            .is_some()
    );
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_path_fails_at_once_without_retries() {
    let daemon = GitDaemon::start().await;
    let proxy = FlakyProxy::start(daemon.addr, 0).await;
    let metrics = Arc::new(SpokeMetrics::new());
    let counted = metrics.clone();
    let bench = Bench::start_with(Duration::from_secs(30), move |c| {
        c.fetch_attempts = 4;
        c.fetch_retry_base = Duration::from_millis(100);
        // No slow retry of the failed sync while the test looks at the first one.
        c.retry_after_failure = Duration::from_secs(600);
        c.metrics = counted;
    })
    .await;
    let (repo, commit) = configmap_repo();
    let mut lost = spec("lost", &repo, &commit, "apps/none");
    lost.source.repo_url = proxy.url(&repo);
    bench.set(1, vec![lost]);

    let failed = bench
        .recorder
        .wait_for("lost", "lost failed", |s| s.sync == SyncState::Failed)
        .await;
    assert!(
        failed.message.contains("\"apps/none\" does not exist"),
        "{}",
        failed.message
    );
    assert!(
        !failed.message.contains("attempt") && !failed.message.contains("retr"),
        "{}",
        failed.message
    );
    let reports = bench.recorder.all("lost");
    assert!(
        !reports.iter().any(is_retry_report),
        "a missing path is not retried: {reports:#?}"
    );
    // One try: one fetch, one connection, one error.
    assert_eq!(proxy.connections(), 1);
    assert_eq!(fetch_errors(&metrics), 1);
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_server_that_stays_away_fails_the_target_after_every_try() {
    let daemon = GitDaemon::start().await;
    let proxy = FlakyProxy::start(daemon.addr, usize::MAX).await;
    let metrics = Arc::new(SpokeMetrics::new());
    let counted = metrics.clone();
    let bench = Bench::start_with(Duration::from_secs(30), move |c| {
        c.fetch_attempts = 3;
        c.fetch_retry_base = Duration::from_millis(50);
        c.retry_after_failure = Duration::from_secs(600);
        c.metrics = counted;
    })
    .await;
    let (repo, commit) = configmap_repo();
    let mut away = spec("away", &repo, &commit, "apps/cm");
    away.source.repo_url = proxy.url(&repo);
    bench.set(1, vec![away]);

    let failed = bench
        .recorder
        .wait_for("away", "away failed", |s| s.sync == SyncState::Failed)
        .await;
    assert!(
        failed
            .message
            .starts_with("fetch failed after 3 attempts: fetch git://"),
        "{}",
        failed.message
    );
    let retries: Vec<String> = bench
        .recorder
        .all("away")
        .into_iter()
        .filter(is_retry_report)
        .map(|r| r.message)
        .collect();
    assert_eq!(retries.len(), 2, "{retries:#?}");
    assert!(retries[0].starts_with("fetch failed (attempt 1 of 3), retrying in "));
    assert!(retries[1].starts_with("fetch failed (attempt 2 of 3), retrying in "));
    assert_eq!(fetch_errors(&metrics), 3, "each failed try is counted");
    assert!(
        proxy.connections() >= 3,
        "{} connections",
        proxy.connections()
    );
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_spec_and_a_shutdown_cut_a_retry_wait_short() {
    let daemon = GitDaemon::start().await;
    let proxy = FlakyProxy::start(daemon.addr, usize::MAX).await;
    // Waits far longer than the test's deadline: only a new spec or the shutdown ends them.
    let bench = Bench::start_with(Duration::from_secs(30), |c| {
        c.fetch_attempts = 4;
        c.fetch_retry_base = Duration::from_secs(600);
        c.fetch_retry_max = Duration::from_secs(600);
    })
    .await;
    let (repo, commit) = configmap_repo();
    let mut moved = spec("moved", &repo, &commit, "apps/cm");
    moved.source.repo_url = proxy.url(&repo);
    let mut stuck = spec("stuck", &repo, &commit, "apps/cm");
    stuck.source.repo_url = proxy.url(&repo);
    bench.set(1, vec![moved.clone(), stuck.clone()]);
    for target in ["moved", "stuck"] {
        bench
            .recorder
            .wait_for(target, "a fetch waiting to be retried", is_retry_report)
            .await;
    }

    // The hub points the Target at a server that works: the new spec wins over the wait.
    let mut direct = spec("moved", &repo, &commit, "apps/cm");
    direct.spec_generation = 2;
    bench.set(2, vec![direct, stuck]);
    bench
        .recorder
        .wait_for("moved", "moved synced from the working server", |s| {
            s.spec_generation == 2 && s.sync == SyncState::Synced && s.health == Health::Healthy
        })
        .await;
    assert!(
        bench
            .recorder
            .all("moved")
            .iter()
            .all(|r| r.sync != SyncState::Failed)
    );
    // `stop` fails unless the agent ends within seconds, "stuck" still waiting to retry.
    assert!(is_retry_report(
        &bench.recorder.latest("stuck").expect("stuck reported")
    ));
    bench.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Ownership: an App writes only what is absent, its own, or unmanaged with `adopt`.

fn configmap_in(namespace: &str, name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\ndata:\n  a: {value}\n"
    )
}

fn resource<'s>(status: &'s TargetStatus, name: &str) -> &'s gitfleet_spoke::model::ResourceResult {
    status
        .resources
        .iter()
        .find(|r| r.object.name == name)
        .unwrap_or_else(|| panic!("{name} in {:#?}", status.resources))
}

fn configmaps(
    kubesim: &KubesimHandle,
    ns: &str,
) -> kube::Api<k8s_openapi::api::core::v1::ConfigMap> {
    let client = kube::Client::try_from(kubesim.kube_config("c1")).expect("client");
    kube::Api::namespaced(client, ns)
}

async fn create_namespace(kubesim: &KubesimHandle, name: &str) {
    let client = kube::Client::try_from(kubesim.kube_config("c1")).expect("client");
    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    let namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("namespace");
    api.create(&kube::api::PostParams::default(), &namespace)
        .await
        .expect("create namespace");
}

fn managers(kubesim: &KubesimHandle, ns: &str, name: &str) -> Vec<String> {
    let cm = kubesim
        .get_object("c1", "v1", "ConfigMap", Some(ns), name)
        .expect("object");
    cm["metadata"]["managedFields"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| e["manager"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_naming_another_apps_object_is_refused_for_that_object_only() {
    let bench = Bench::start(Duration::from_secs(30)).await;
    let repo = Repo::new();
    repo.write("apps/b/shared.yaml", &configmap_in("b", "shared", "from-b"));
    repo.write("apps/a/shared.yaml", &configmap_in("b", "shared", "from-a"));
    repo.write("apps/a/mine.yaml", &configmap_in("a", "mine", "x"));
    let commit = repo.commit();
    bench.set(1, vec![spec("b", &repo, &commit, "apps/b")]);
    bench
        .recorder
        .wait_for("b", "b synced", |s| s.sync == SyncState::Synced)
        .await;

    let mut a = spec("a", &repo, &commit, "apps/a");
    // Not even adopt takes another App's object.
    a.sync_policy.adopt = true;
    bench.set(2, vec![spec("b", &repo, &commit, "apps/b"), a]);
    let status = bench
        .recorder
        .wait_for("a", "a applied", |s| {
            s.resources.iter().any(|r| r.object.name == "shared") && s.health != Health::Progressing
        })
        .await;
    let shared = resource(&status, "shared");
    assert_eq!(shared.action, ResourceAction::Failed);
    assert_eq!(shared.message, "owned by App b");
    assert_eq!(resource(&status, "mine").action, ResourceAction::Applied);
    assert!(data_a(&bench.kubesim, "a", "mine").is_some());
    assert_eq!(
        data_a(&bench.kubesim, "b", "shared").as_deref(),
        Some("from-b")
    );
    let live = bench
        .kubesim
        .get_object("c1", "v1", "ConfigMap", Some("b"), "shared")
        .expect("b's object");
    assert_eq!(live["metadata"]["labels"]["gitfleet.dev/app"], "b");
    assert_eq!(managers(&bench.kubesim, "b", "shared"), ["gitfleet/b"]);
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmanaged_object_is_taken_over_only_with_adopt() {
    let bench = Bench::start(Duration::from_secs(30)).await;
    create_namespace(&bench.kubesim, "u").await;
    let foreign: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "coredns"}, "data": {"a": "precious"}}),
    )
    .expect("cm");
    configmaps(&bench.kubesim, "u")
        .create(&kube::api::PostParams::default(), &foreign)
        .await
        .expect("create unmanaged");
    let repo = Repo::new();
    repo.write("apps/u/coredns.yaml", &configmap_in("u", "coredns", "mine"));
    repo.write("apps/u/other.yaml", &configmap_in("u", "other", "x"));
    let commit = repo.commit();
    let mut target = spec("u", &repo, &commit, "apps/u");
    bench.set(1, vec![target.clone()]);
    let status = bench
        .recorder
        .wait_for("u", "u applied", |s| {
            s.resources.iter().any(|r| r.object.name == "coredns")
                && s.health != Health::Progressing
        })
        .await;
    let coredns = resource(&status, "coredns");
    assert_eq!(coredns.action, ResourceAction::Failed);
    assert_eq!(
        coredns.message,
        "exists and is not managed by gitfleet; set syncPolicy.adopt to take it over"
    );
    assert_eq!(resource(&status, "other").action, ResourceAction::Applied);
    // The namespace existed before: the spoke neither refuses nor relabels it.
    assert_eq!(resource(&status, "u").action, ResourceAction::Unchanged);
    let namespace = bench
        .kubesim
        .get_object("c1", "v1", "Namespace", None, "u")
        .expect("namespace");
    assert!(namespace["metadata"]["labels"]["gitfleet.dev/app"].is_null());
    assert_eq!(
        data_a(&bench.kubesim, "u", "coredns").as_deref(),
        Some("precious")
    );

    target.sync_policy.adopt = true;
    target.spec_generation = 2;
    bench.set(2, vec![target]);
    let status = bench
        .recorder
        .wait_for("u", "u adopted", |s| {
            s.spec_generation == 2 && s.sync == SyncState::Synced
        })
        .await;
    assert_eq!(resource(&status, "coredns").action, ResourceAction::Applied);
    assert_eq!(
        data_a(&bench.kubesim, "u", "coredns").as_deref(),
        Some("mine")
    );
    let live = bench
        .kubesim
        .get_object("c1", "v1", "ConfigMap", Some("u"), "coredns")
        .expect("adopted");
    assert_eq!(live["metadata"]["labels"]["gitfleet.dev/app"], "u");
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ownership_check_reads_the_watches_not_each_object() {
    // Twenty objects that exist and are someone else's: each is refused, and telling them from
    // absent ones takes one list of ConfigMaps, not a read of each (a refused object is not
    // read back for health either, so every read here would be the check's).
    const N: usize = 20;
    let bench = Bench::start(Duration::from_secs(30)).await;
    create_namespace(&bench.kubesim, "r").await;
    let repo = Repo::new();
    for i in 0..N {
        let foreign: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(
            serde_json::json!({"metadata": {"name": format!("theirs-{i}")}, "data": {"a": "x"}}),
        )
        .expect("cm");
        configmaps(&bench.kubesim, "r")
            .create(&kube::api::PostParams::default(), &foreign)
            .await
            .expect("create unmanaged");
        repo.write(
            &format!("apps/r/theirs-{i}.yaml"),
            &configmap_in("r", &format!("theirs-{i}"), "mine"),
        );
    }
    let commit = repo.commit();
    let reads_before = bench.kubesim.object_reads("c1");
    bench.set(1, vec![spec("r", &repo, &commit, "apps/r")]);
    let status = bench
        .recorder
        .wait_for("r", "every object refused", |s| {
            s.resources
                .iter()
                .filter(|r| r.action == ResourceAction::Failed)
                .count()
                == N
        })
        .await;
    let refused = resource(&status, "theirs-7");
    assert_eq!(
        refused.message,
        "exists and is not managed by gitfleet; set syncPolicy.adopt to take it over"
    );
    let reads = bench.kubesim.object_reads("c1") - reads_before;
    // The inventory and the namespace may be read; none of the twenty objects is.
    assert!(
        reads < 5,
        "{reads} objects were read to check {N} objects' ownership"
    );
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_of_the_shared_field_manager_pass_to_the_apps_own() {
    let bench = Bench::start(Duration::from_secs(30)).await;
    create_namespace(&bench.kubesim, "up").await;
    // What a spoke of an earlier release left: applied by the shared manager `gitfleet` with
    // App up's labels, then edited by someone else.
    let old = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": "settings", "namespace": "up",
            "labels": {"gitfleet.dev/app": "up"},
            "annotations": {"gitfleet.dev/target": "up"},
        },
        "data": {"a": "old", "dropped": "gone-from-git"},
    });
    let api = configmaps(&bench.kubesim, "up");
    api.patch(
        "settings",
        &kube::api::PatchParams::apply("gitfleet"),
        &kube::api::Patch::Apply(&old),
    )
    .await
    .expect("apply as the shared manager");
    api.patch(
        "settings",
        &kube::api::PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        },
        &kube::api::Patch::Merge(&serde_json::json!({"data": {"theirs": "kept"}})),
    )
    .await
    .expect("someone else's field");

    let repo = Repo::new();
    repo.write(
        "apps/up/settings.yaml",
        &configmap_in("up", "settings", "new"),
    );
    let commit = repo.commit();
    bench.set(1, vec![spec("up", &repo, &commit, "apps/up")]);
    let status = bench
        .recorder
        .wait_for("up", "up applied", |s| {
            s.resources.iter().any(|r| r.object.name == "settings")
                && s.health != Health::Progressing
        })
        .await;
    let settings = resource(&status, "settings");
    assert_eq!(
        settings.action,
        ResourceAction::Applied,
        "{}",
        settings.message
    );
    let live = bench
        .kubesim
        .get_object("c1", "v1", "ConfigMap", Some("up"), "settings")
        .expect("settings");
    assert_eq!(live["data"]["a"], "new");
    assert_eq!(
        live["data"]["theirs"], "kept",
        "another manager's field stays"
    );
    assert!(
        live["data"]["dropped"].is_null(),
        "the App's manager owns what the shared one applied, so Git dropping it removes it: {live}"
    );
    let mut managers = managers(&bench.kubesim, "up", "settings");
    managers.sort();
    assert_eq!(managers, ["gitfleet/up", "kubectl-edit"]);
    bench.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_heal_does_not_force_over_an_object_made_again_by_someone_else() {
    let bench = Bench::start_with(Duration::from_secs(30), |config| {
        config.settled_poll = Duration::from_millis(200);
    })
    .await;
    let repo = Repo::new();
    repo.write("apps/h/cm.yaml", &configmap_in("h", "settings", "git"));
    let commit = repo.commit();
    let mut target = spec("h", &repo, &commit, "apps/h");
    target.sync_policy.self_heal = true;
    bench.set(1, vec![target]);
    bench
        .recorder
        .wait_for("h", "synced", |s| s.sync == SyncState::Synced)
        .await;

    // Someone outside gitfleet makes the object theirs (its labels gone, their data), in one
    // write: a delete and a create would race selfHeal re-creating the deleted object. A write
    // that loses to a heal (409 on the resourceVersion) is tried again from the new version.
    let api = configmaps(&bench.kubesim, "h");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut live = api.get("settings").await.expect("get");
        live.metadata.labels = None;
        live.metadata.annotations = None;
        live.metadata.managed_fields = None;
        live.data = Some(std::iter::once(("a".to_owned(), "theirs".to_owned())).collect());
        match api
            .replace("settings", &kube::api::PostParams::default(), &live)
            .await
        {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 && tokio::time::Instant::now() < deadline => {
            }
            Err(e) => panic!("made theirs: {e}"),
        }
    }
    // The refusal is reported on the resource, where the user looks; selfHeal stops watching
    // the object, so what the cluster holds once it is reported is final.
    let refused = bench
        .recorder
        .wait_for("h", "the refusal to heal reported", |s| {
            s.resources.iter().any(|r| {
                r.object.name == "settings"
                    && r.action == ResourceAction::Failed
                    && r.message.contains("not reverting drift")
            })
        })
        .await;
    let r = refused
        .resources
        .iter()
        .find(|r| r.object.name == "settings")
        .expect("settings");
    assert_eq!(
        r.message,
        "not reverting drift: exists and is not managed by gitfleet; set syncPolicy.adopt to take it over"
    );
    assert_eq!(
        data_a(&bench.kubesim, "h", "settings").as_deref(),
        Some("theirs"),
        "selfHeal took an object that is no longer the App's"
    );
    let live = bench
        .kubesim
        .get_object("c1", "v1", "ConfigMap", Some("h"), "settings")
        .expect("theirs");
    assert!(live["metadata"]["labels"]["gitfleet.dev/app"].is_null());
    bench.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Projects: an object the App's Project does not allow is refused alone, and never the App's
// to prune.

fn team_rules(namespaces: &[&str]) -> gitfleet_spoke::sync::project::TargetProject {
    gitfleet_spoke::sync::project::TargetProject {
        name: "team-a".into(),
        namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
        cluster_resources: Vec::new(),
        namespace_deny: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_outside_the_project_is_refused_and_never_pruned() {
    let bench = Bench::start(Duration::from_secs(30)).await;
    create_namespace(&bench.kubesim, "b").await;
    let repo = Repo::new();
    repo.write("apps/a/mine.yaml", &configmap_in("a", "mine", "x"));
    repo.write("apps/a/theirs.yaml", &configmap_in("b", "theirs", "x"));
    repo.write("apps/a/gone.yaml", &configmap_in("b", "gone", "x"));
    let v1 = repo.commit();
    // Before the App had a Project: all three are its own.
    let mut target = spec("a", &repo, &v1, "apps/a");
    target.sync_policy.prune = true;
    bench.set(1, vec![target.clone()]);
    bench
        .recorder
        .wait_for("a", "v1 synced", |s| {
            s.revision == v1 && s.sync == SyncState::Synced
        })
        .await;
    assert!(data_a(&bench.kubesim, "b", "gone").is_some());

    // Its Project now allows namespace a only; `gone` leaves Git, `theirs` stays in it.
    std::fs::remove_file(repo.dir.path().join("apps/a/gone.yaml")).expect("rm");
    repo.write("apps/a/mine.yaml", &configmap_in("a", "mine", "y"));
    let v2 = repo.commit();
    target.source.commit = v2.clone();
    target.spec_generation = 2;
    target.project = Some(team_rules(&["a"]));
    bench.set(2, vec![target]);
    let status = bench
        .recorder
        .wait_for("a", "v2 applied", |s| {
            s.revision == v2 && s.resources.iter().any(|r| r.object.name == "theirs")
        })
        .await;
    let theirs = resource(&status, "theirs");
    assert_eq!(theirs.action, ResourceAction::Failed);
    assert_eq!(theirs.message, "Project team-a does not allow namespace b");
    assert_eq!(resource(&status, "mine").action, ResourceAction::Applied);
    assert_eq!(data_a(&bench.kubesim, "a", "mine").as_deref(), Some("y"));
    assert!(
        !status
            .resources
            .iter()
            .any(|r| r.action == ResourceAction::Pruned),
        "{:#?}",
        status.resources
    );
    // Neither is deleted: outside its Project, the App may not touch them at all.
    assert_eq!(data_a(&bench.kubesim, "b", "theirs").as_deref(), Some("x"));
    assert_eq!(data_a(&bench.kubesim, "b", "gone").as_deref(), Some("x"));
    let inventory = bench
        .kubesim
        .get_object("c1", "v1", "ConfigMap", Some("a"), "gitfleet-inventory-a")
        .expect("inventory");
    let objects = inventory["data"]["objects"].as_str().expect("objects");
    assert!(
        objects.contains("\"mine\"") && !objects.contains("theirs") && !objects.contains("gone"),
        "{objects}"
    );
    bench.stop().await;
}

// ---------------------------------------------------------------------------------------------
// `diff --live`: the agent's diff refuses what the sync would refuse, per object, and changes
// nothing in the cluster.

/// Every object of the cluster → its resourceVersion.
fn versions(kubesim: &KubesimHandle) -> BTreeMap<String, String> {
    kubesim
        .list_objects("c1")
        .iter()
        .map(|o| {
            let text = |p: &str| o.pointer(p).and_then(|v| v.as_str()).unwrap_or_default();
            (
                format!(
                    "{} {}/{}",
                    text("/kind"),
                    text("/metadata/namespace"),
                    text("/metadata/name")
                ),
                text("/metadata/resourceVersion").to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diff_refuses_what_the_sync_would_and_changes_nothing() {
    use gitfleet_spoke::sync::diff::DiffAction;
    let slot = gitfleet_spoke::link::DiffSlot::default();
    let bench = Bench::start_with(Duration::from_secs(30), |config| {
        config.diffs = Some(slot.clone());
    })
    .await;
    let repo = Repo::new();
    repo.write("apps/b/shared.yaml", &configmap_in("b", "shared", "from-b"));
    repo.write("apps/a/shared.yaml", &configmap_in("b", "shared", "from-a"));
    repo.write("apps/a/mine.yaml", &configmap_in("a", "mine", "x"));
    repo.write("apps/a/theirs.yaml", &configmap_in("c", "theirs", "x"));
    let commit = repo.commit();
    bench.set(1, vec![spec("b", &repo, &commit, "apps/b")]);
    bench
        .recorder
        .wait_for("b", "b synced and healthy", |s| {
            s.sync == SyncState::Synced && s.health == Health::Healthy
        })
        .await;

    let before = versions(&bench.kubesim);
    let mut a = spec("a", &repo, &commit, "apps/a");
    a.project = Some(team_rules(&["a", "b"]));
    let differ = slot.get().expect("the agent set its differ");
    let diff = differ.diff(a).await;
    assert_eq!(diff.error, None, "{diff:#?}");
    let action = |name: &str| {
        diff.objects
            .iter()
            .find(|o| o.object.name == name)
            .map(|o| (o.action, o.message.clone()))
            .unwrap_or_else(|| panic!("{name} in {diff:#?}"))
    };
    assert_eq!(
        action("shared"),
        (DiffAction::Failed, "owned by App b".to_owned())
    );
    let (theirs, why) = action("theirs");
    assert_eq!(theirs, DiffAction::Failed);
    assert!(why.contains("team-a"), "{why}");
    assert_eq!(action("mine").0, DiffAction::Create);
    // The App's namespace, which gitfleet adds, would be created too.
    assert_eq!(action("a").0, DiffAction::Create);
    assert_eq!((diff.counts.creates, diff.counts.failures), (2, 2));
    assert_eq!(
        versions(&bench.kubesim),
        before,
        "the diff changed the cluster"
    );
    assert!(data_a(&bench.kubesim, "a", "mine").is_none());
    assert_eq!(
        data_a(&bench.kubesim, "b", "shared").as_deref(),
        Some("from-b")
    );
    bench.stop().await;
}
