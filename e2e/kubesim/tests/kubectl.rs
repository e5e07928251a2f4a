//! kubesim against the real `kubectl` (1.32, on PATH) over every manifest in the shared corpus.
//!
//! Every YAML file in the corpus has an expected outcome in [`EXPECTED`]: it round-trips
//! (server-side apply, read back, no diff, delete), or it fails the way a real API server fails
//! it (a kind whose CRD is not installed), or it is not a manifest kubectl can apply at all
//! (kustomize configuration, Helm chart sources), in which case kubectl refuses it before
//! writing anything. A test checks that the table covers every file, so none is skipped silently.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use gitfleet_kubesim::{Kubesim, KubesimConfig, KubesimHandle};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/corpus");

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Applies, reads back with every manifest field intact, diffs clean, deletes.
    RoundTrip,
    /// Fails like a real server without the CRD: kubectl cannot map the kind.
    MissingCrd(&'static str, &'static str),
    /// kustomize's own configuration (Kustomization, transformer configs): no such API kind.
    NotAnApiKind(&'static str, &'static str),
    /// Helm chart source (Go templates, values): kubectl refuses it before writing anything.
    HelmSource,
}

use Expect::{HelmSource, MissingCrd, NotAnApiKind, RoundTrip};

const KUSTOMIZATION: Expect = NotAnApiKind("Kustomization", "kustomize.config.k8s.io/v1beta1");
const LABELS: Expect = NotAnApiKind("LabelTransformer", "builtin");

const EXPECTED: &[(&str, Expect)] = &[
    (
        "kubernetes-examples/AI/model-serving-tensorflow/deployment.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/AI/model-serving-tensorflow/ingress.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/AI/model-serving-tensorflow/pv.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/AI/model-serving-tensorflow/pvc.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/AI/model-serving-tensorflow/service.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/AI/vllm-deployment/hpa/gpu-dcgm-exporter-service-generic.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/AI/vllm-deployment/hpa/gpu-dcgm-exporter-service-gke.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/AI/vllm-deployment/hpa/gpu-horizontal-pod-autoscaler.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/AI/vllm-deployment/hpa/gpu-service-monitor-generic.yaml",
        MissingCrd("ServiceMonitor", "monitoring.coreos.com/v1"),
    ),
    (
        "kubernetes-examples/AI/vllm-deployment/hpa/gpu-service-monitor-gke.yaml",
        MissingCrd("ServiceMonitor", "monitoring.coreos.com/v1"),
    ),
    (
        "kubernetes-examples/AI/vllm-deployment/hpa/horizontal-pod-autoscaler.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/AI/vllm-deployment/hpa/prometheus-adapter.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/AI/vllm-deployment/hpa/prometheus-rule.yaml",
        MissingCrd("PrometheusRule", "monitoring.coreos.com/v1"),
    ),
    (
        "kubernetes-examples/AI/vllm-deployment/hpa/vllm-service-monitor.yaml",
        MissingCrd("ServiceMonitor", "monitoring.coreos.com/v1"),
    ),
    (
        "kubernetes-examples/AI/vllm-deployment/vllm-deployment.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/AI/vllm-deployment/vllm-service.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/databases/cassandra/cassandra-service.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/databases/cassandra/cassandra-statefulset.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/web/guestbook/all-in-one/frontend.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/web/guestbook/all-in-one/guestbook-all-in-one.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/web/guestbook/all-in-one/redis-replica.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/web/guestbook/frontend-deployment.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/web/guestbook/frontend-service.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/web/guestbook/legacy/frontend-controller.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/web/guestbook/legacy/redis-master-controller.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/web/guestbook/legacy/redis-replica-controller.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/web/guestbook/redis-master-deployment.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/web/guestbook/redis-master-service.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/web/guestbook/redis-replica-deployment.yaml",
        RoundTrip,
    ),
    (
        "kubernetes-examples/web/guestbook/redis-replica-service.yaml",
        RoundTrip,
    ),
    ("podinfo/charts/podinfo/Chart.yaml", HelmSource),
    (
        "podinfo/charts/podinfo/templates/certificate.yaml",
        HelmSource,
    ),
    (
        "podinfo/charts/podinfo/templates/deployment.yaml",
        HelmSource,
    ),
    (
        "podinfo/charts/podinfo/templates/grpcroute.yaml",
        HelmSource,
    ),
    (
        "podinfo/charts/podinfo/templates/hooks/job.yaml",
        HelmSource,
    ),
    ("podinfo/charts/podinfo/templates/hpa.yaml", HelmSource),
    (
        "podinfo/charts/podinfo/templates/httproute.yaml",
        HelmSource,
    ),
    ("podinfo/charts/podinfo/templates/ingress.yaml", HelmSource),
    ("podinfo/charts/podinfo/templates/pdb.yaml", HelmSource),
    (
        "podinfo/charts/podinfo/templates/redis/config.yaml",
        HelmSource,
    ),
    (
        "podinfo/charts/podinfo/templates/redis/deployment.yaml",
        HelmSource,
    ),
    (
        "podinfo/charts/podinfo/templates/redis/service.yaml",
        HelmSource,
    ),
    ("podinfo/charts/podinfo/templates/service.yaml", HelmSource),
    (
        "podinfo/charts/podinfo/templates/serviceaccount.yaml",
        HelmSource,
    ),
    (
        "podinfo/charts/podinfo/templates/servicemonitor.yaml",
        HelmSource,
    ),
    (
        "podinfo/charts/podinfo/templates/tests/cache.yaml",
        HelmSource,
    ),
    (
        "podinfo/charts/podinfo/templates/tests/fail.yaml",
        HelmSource,
    ),
    (
        "podinfo/charts/podinfo/templates/tests/grpc.yaml",
        HelmSource,
    ),
    (
        "podinfo/charts/podinfo/templates/tests/jwt.yaml",
        HelmSource,
    ),
    (
        "podinfo/charts/podinfo/templates/tests/service.yaml",
        HelmSource,
    ),
    (
        "podinfo/charts/podinfo/templates/tests/timeout.yaml",
        HelmSource,
    ),
    (
        "podinfo/charts/podinfo/templates/tests/tls.yaml",
        HelmSource,
    ),
    ("podinfo/charts/podinfo/values-prod.yaml", HelmSource),
    ("podinfo/charts/podinfo/values.yaml", HelmSource),
    ("podinfo/deploy/bases/backend/deployment.yaml", RoundTrip),
    ("podinfo/deploy/bases/backend/hpa.yaml", RoundTrip),
    (
        "podinfo/deploy/bases/backend/kustomization.yaml",
        KUSTOMIZATION,
    ),
    ("podinfo/deploy/bases/backend/service.yaml", RoundTrip),
    ("podinfo/deploy/bases/cache/deployment.yaml", RoundTrip),
    (
        "podinfo/deploy/bases/cache/kustomization.yaml",
        KUSTOMIZATION,
    ),
    ("podinfo/deploy/bases/cache/service.yaml", RoundTrip),
    (
        "podinfo/deploy/bases/database/cronjob-backup-daily.yaml",
        RoundTrip,
    ),
    (
        "podinfo/deploy/bases/database/cronjob-rollup-daily.yaml",
        RoundTrip,
    ),
    (
        "podinfo/deploy/bases/database/cronjob-rollup-weekly.yaml",
        RoundTrip,
    ),
    (
        "podinfo/deploy/bases/database/deployment-replica.yaml",
        RoundTrip,
    ),
    ("podinfo/deploy/bases/database/hpa-replica.yaml", RoundTrip),
    (
        "podinfo/deploy/bases/database/kustomization.yaml",
        KUSTOMIZATION,
    ),
    ("podinfo/deploy/bases/database/pvc-primary.yaml", RoundTrip),
    (
        "podinfo/deploy/bases/database/service-primary.yaml",
        RoundTrip,
    ),
    (
        "podinfo/deploy/bases/database/service-replica.yaml",
        RoundTrip,
    ),
    (
        "podinfo/deploy/bases/database/serviceaccount.yaml",
        RoundTrip,
    ),
    (
        "podinfo/deploy/bases/database/statefulset-primary.yaml",
        RoundTrip,
    ),
    (
        "podinfo/deploy/bases/frontend/cronjob-warm-cache.yaml",
        RoundTrip,
    ),
    ("podinfo/deploy/bases/frontend/deployment.yaml", RoundTrip),
    ("podinfo/deploy/bases/frontend/hpa.yaml", RoundTrip),
    (
        "podinfo/deploy/bases/frontend/kustomization.yaml",
        KUSTOMIZATION,
    ),
    ("podinfo/deploy/bases/frontend/service.yaml", RoundTrip),
    (
        "podinfo/deploy/bases/frontend/serviceaccount.yaml",
        RoundTrip,
    ),
    (
        "podinfo/deploy/overlays/dev/kustomization.yaml",
        KUSTOMIZATION,
    ),
    ("podinfo/deploy/overlays/dev/labels.yaml", LABELS),
    ("podinfo/deploy/overlays/dev/namespace.yaml", RoundTrip),
    (
        "podinfo/deploy/overlays/production/kustomization.yaml",
        KUSTOMIZATION,
    ),
    ("podinfo/deploy/overlays/production/labels.yaml", LABELS),
    (
        "podinfo/deploy/overlays/production/namespace.yaml",
        RoundTrip,
    ),
    (
        "podinfo/deploy/overlays/staging/kustomization.yaml",
        KUSTOMIZATION,
    ),
    ("podinfo/deploy/overlays/staging/labels.yaml", LABELS),
    ("podinfo/deploy/overlays/staging/namespace.yaml", RoundTrip),
    ("podinfo/deploy/secure/backend/deployment.yaml", RoundTrip),
    ("podinfo/deploy/secure/backend/hpa.yaml", RoundTrip),
    ("podinfo/deploy/secure/backend/service.yaml", RoundTrip),
    (
        "podinfo/deploy/secure/common/cluster-issuer.yaml",
        MissingCrd("ClusterIssuer", "cert-manager.io/v1"),
    ),
    ("podinfo/deploy/secure/common/namespace.yaml", RoundTrip),
    (
        "podinfo/deploy/secure/common/reconciler-rbac.yaml",
        RoundTrip,
    ),
    (
        "podinfo/deploy/secure/common/service-account.yaml",
        RoundTrip,
    ),
    (
        "podinfo/deploy/secure/frontend/certificate.yaml",
        MissingCrd("Certificate", "cert-manager.io/v1"),
    ),
    ("podinfo/deploy/secure/frontend/deployment.yaml", RoundTrip),
    ("podinfo/deploy/secure/frontend/hpa.yaml", RoundTrip),
    ("podinfo/deploy/secure/frontend/service.yaml", RoundTrip),
    ("podinfo/deploy/webapp/backend/deployment.yaml", RoundTrip),
    ("podinfo/deploy/webapp/backend/hpa.yaml", RoundTrip),
    ("podinfo/deploy/webapp/backend/service.yaml", RoundTrip),
    ("podinfo/deploy/webapp/common/namespace.yaml", RoundTrip),
    (
        "podinfo/deploy/webapp/common/reconciler-rbac.yaml",
        RoundTrip,
    ),
    (
        "podinfo/deploy/webapp/common/service-account.yaml",
        RoundTrip,
    ),
    ("podinfo/deploy/webapp/frontend/deployment.yaml", RoundTrip),
    ("podinfo/deploy/webapp/frontend/hpa.yaml", RoundTrip),
    ("podinfo/deploy/webapp/frontend/service.yaml", RoundTrip),
    ("podinfo/kustomize/deployment.yaml", RoundTrip),
    ("podinfo/kustomize/hpa.yaml", RoundTrip),
    ("podinfo/kustomize/kustomization.yaml", KUSTOMIZATION),
    ("podinfo/kustomize/service.yaml", RoundTrip),
];

fn corpus() -> PathBuf {
    PathBuf::from(CORPUS)
}

/// kubectl pointed at one cluster, with its own discovery cache.
struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Kubectl {
    fn new(h: &KubesimHandle, cluster: &str, dir: &Path) -> Self {
        let kubeconfig = dir.join(format!("{cluster}.kubeconfig"));
        std::fs::write(&kubeconfig, h.kubeconfig_yaml(cluster)).unwrap();
        Self {
            kubeconfig,
            cache: dir.join(format!("{cluster}-cache")),
        }
    }

    async fn run_with(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("kubectl is on PATH");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input.as_bytes()).await.unwrap();
            drop(pipe);
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("kubectl finished within a minute")
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Creates a namespace from a manifest.
    async fn namespace(&self, name: &str) {
        let manifest = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n");
        let out = self
            .run_with(&["apply", "--server-side", "-f", "-"], Some(&manifest))
            .await;
        assert_eq!(out.code, 0, "creating namespace {name}: {out:?}");
    }

    async fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, None).await
    }

    async fn ok(&self, args: &[&str]) -> Out {
        let out = self.run(args).await;
        assert_eq!(out.code, 0, "kubectl {args:?} failed: {out:?}");
        out
    }
}

async fn start(clusters: Vec<String>) -> KubesimHandle {
    let mut config = KubesimConfig::new(clusters);
    config.ready_delay = Duration::from_millis(100);
    Kubesim::start(config).await.unwrap()
}

/// The YAML documents of a file (empty ones dropped).
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    gitfleet_kubesim::yaml::documents(&text).unwrap()
}

/// Every field of `want` (the manifest) is in `got` (the live object) with the same value.
fn assert_subset(want: &Value, got: &Value, path: &str) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                if wv.is_null() || (path.is_empty() && k == "status") {
                    continue;
                }
                let gv = g
                    .get(k)
                    .unwrap_or_else(|| panic!("{path}.{k} missing from the live object"));
                assert_subset(wv, gv, &format!("{path}.{k}"));
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            assert_eq!(w.len(), g.len(), "{path}: list length");
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                assert_subset(wv, gv, &format!("{path}[{i}]"));
            }
        }
        // YAML 1.1 (kubectl's parser) reads 0755 as octal; kubesim keeps it a string.
        (Value::String(w), Value::Number(g))
            if w.starts_with('0') && i64::from_str_radix(w, 8).ok() == g.as_i64() => {}
        _ => assert_eq!(want, got, "{path}"),
    }
}

fn live_items(out: &Out) -> Vec<Value> {
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    if v["kind"] == "List" {
        v["items"].as_array().unwrap().clone()
    } else {
        vec![v]
    }
}

async fn check_file(h: &KubesimHandle, cluster: &str, dir: &Path, rel: &str, expect: Expect) {
    let k = Kubectl::new(h, cluster, dir);
    let path = corpus().join(rel);
    let file = path.to_str().unwrap();
    let before = h.list_objects(cluster).len();
    match expect {
        RoundTrip => {
            let docs = documents(&path);
            // Namespaces the file uses but does not create exist beforehand, as they would.
            for d in &docs {
                if let Some(ns) = d.pointer("/metadata/namespace").and_then(Value::as_str)
                    && ns != "default"
                    && h.get_object(cluster, "v1", "Namespace", None, ns).is_none()
                {
                    k.namespace(ns).await;
                }
            }
            let applied = k.ok(&["apply", "--server-side", "-f", file]).await;
            assert_eq!(
                applied.stdout.matches("serverside-applied").count(),
                docs.len(),
                "{rel}: {applied:?}"
            );
            let got = k.ok(&["get", "-f", file, "-o", "json"]).await;
            let live = live_items(&got);
            assert_eq!(live.len(), docs.len(), "{rel}");
            for (want, got) in docs.iter().zip(&live) {
                assert_subset(want, got, "");
                assert!(got.pointer("/metadata/uid").is_some(), "{rel}");
                // kubectl hides managedFields; the store has them.
                let ns = got.pointer("/metadata/namespace").and_then(Value::as_str);
                let name = got["metadata"]["name"].as_str().unwrap();
                let stored = h
                    .get_object(
                        cluster,
                        got["apiVersion"].as_str().unwrap(),
                        got["kind"].as_str().unwrap(),
                        ns,
                        name,
                    )
                    .unwrap();
                // An object with nothing but its identity owns no fields (as on a real server).
                let identity_only = want
                    .as_object()
                    .unwrap()
                    .keys()
                    .all(|k| k == "apiVersion" || k == "kind" || k == "metadata")
                    && want["metadata"]
                        .as_object()
                        .unwrap()
                        .keys()
                        .all(|k| k == "name" || k == "namespace");
                if identity_only {
                    assert!(
                        stored["metadata"].get("managedFields").is_none(),
                        "{rel}: {stored}"
                    );
                    continue;
                }
                let managers = stored["metadata"]["managedFields"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{rel}: no managedFields in {stored}"));
                assert!(
                    managers
                        .iter()
                        .any(|m| m["manager"] == "kubectl" && m["operation"] == "Apply"),
                    "{rel}: {managers:?}"
                );
            }
            let diff = k.run(&["diff", "--server-side", "-f", file]).await;
            assert_eq!(diff.code, 0, "{rel}: a fresh apply diffs clean: {diff:?}");
            k.ok(&["delete", "-f", file, "--wait=true", "--timeout=30s"])
                .await;
            let gone = k.run(&["get", "-f", file, "-o", "name"]).await;
            assert_ne!(gone.code, 0, "{rel}: still there after delete: {gone:?}");
            assert!(gone.stderr.contains("NotFound"), "{rel}: {gone:?}");
        }
        MissingCrd(kind, api_version) | NotAnApiKind(kind, api_version) => {
            let out = k.run(&["apply", "--server-side", "-f", file]).await;
            assert_ne!(out.code, 0, "{rel}: {out:?}");
            let message = format!("no matches for kind \"{kind}\" in version \"{api_version}\"");
            assert!(
                out.stderr.contains(&message),
                "{rel}: expected {message:?}: {out:?}"
            );
            assert!(
                out.stderr.contains("ensure CRDs are installed first"),
                "{rel}: {out:?}"
            );
            assert_eq!(
                h.list_objects(cluster).len(),
                before,
                "{rel}: nothing was written"
            );
        }
        HelmSource => {
            let out = k.run(&["apply", "--server-side", "-f", file]).await;
            assert_ne!(
                out.code, 0,
                "{rel}: kubectl applied a Helm source file: {out:?}"
            );
            assert_eq!(
                h.list_objects(cluster).len(),
                before,
                "{rel}: nothing was written"
            );
        }
    }
}

#[test]
fn every_corpus_file_has_an_expected_outcome() {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(
                    p.strip_prefix(corpus())
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_string(),
                );
            }
        }
    }
    let mut files = Vec::new();
    walk(&corpus(), &mut files);
    files.sort();
    let listed: Vec<String> = EXPECTED.iter().map(|(f, _)| (*f).to_string()).collect();
    assert_eq!(
        files, listed,
        "EXPECTED must list every corpus YAML file, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corpus_file_round_trips_or_fails_like_a_real_server() {
    let clusters: Vec<String> = (0..EXPECTED.len()).map(|i| format!("f{i}")).collect();
    let h = start(clusters).await;
    let dir = tempfile::tempdir().unwrap();
    let results: Vec<()> = futures::stream::iter(EXPECTED.iter().enumerate())
        .map(|(i, (rel, expect))| {
            let h = &h;
            let dir = dir.path();
            async move { check_file(h, &format!("f{i}"), dir, rel, *expect).await }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    assert_eq!(results.len(), EXPECTED.len());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guestbook_directory_apply_get_wait_diff_delete() {
    let h = start(vec!["gb".into()]).await;
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl::new(&h, "gb", dir.path());
    let gb = corpus().join("kubernetes-examples/web/guestbook");
    let gb = gb.to_str().unwrap();
    let out = k.ok(&["apply", "--server-side", "-f", gb]).await;
    assert_eq!(
        out.stdout.matches("serverside-applied").count(),
        6,
        "{out:?}"
    );

    let yaml = k.ok(&["get", "deployments,services", "-o", "yaml"]).await;
    let list: Value = gitfleet_kubesim::yaml::value(yaml.stdout.as_bytes()).unwrap();
    let mut names: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["kind"].as_str().unwrap(),
                i["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "Deployment/frontend",
            "Deployment/redis-master",
            "Deployment/redis-replica",
            "Service/frontend",
            "Service/redis-master",
            "Service/redis-replica",
        ]
    );

    let redis = k
        .ok(&["get", "services", "-l", "app=redis", "-o", "name"])
        .await;
    assert_eq!(
        redis.stdout,
        "service/redis-master\nservice/redis-replica\n"
    );
    let notin = k
        .ok(&[
            "get",
            "services",
            "-l",
            "tier notin (backend)",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(notin.stdout, "service/frontend\n");
    let table = k.ok(&["get", "deployments"]).await;
    assert!(table.stdout.starts_with("NAME"), "{table:?}");
    assert!(table.stdout.contains("frontend"), "{table:?}");

    let wait = k
        .ok(&[
            "wait",
            "--for=condition=Available",
            "deployments",
            "--all",
            "--timeout=30s",
        ])
        .await;
    assert_eq!(wait.stdout.matches("condition met").count(), 3, "{wait:?}");
    let live = h
        .get_object("gb", "apps/v1", "Deployment", Some("default"), "frontend")
        .unwrap();
    assert_eq!(live["status"]["readyReplicas"], 3);

    let diff = k.run(&["diff", "--server-side", "-f", gb]).await;
    assert_eq!(diff.code, 0, "{diff:?}");
    // A changed manifest shows up in diff (server-side dry run) without being applied.
    let changed = std::fs::read_to_string(
        corpus().join("kubernetes-examples/web/guestbook/frontend-deployment.yaml"),
    )
    .unwrap()
    .replace("replicas: 3", "replicas: 4");
    let changed_path = dir.path().join("frontend.yaml");
    std::fs::write(&changed_path, changed).unwrap();
    let diff = k
        .run(&[
            "diff",
            "--server-side",
            "-f",
            changed_path.to_str().unwrap(),
        ])
        .await;
    assert_eq!(diff.code, 1, "{diff:?}");
    assert!(
        diff.stdout.contains("-  replicas: 3") && diff.stdout.contains("+  replicas: 4"),
        "{diff:?}"
    );
    let live = h
        .get_object("gb", "apps/v1", "Deployment", Some("default"), "frontend")
        .unwrap();
    assert_eq!(live["spec"]["replicas"], 3, "diff is a dry run");

    // Client-side apply, labels and scale go through the other patch types.
    k.ok(&["label", "deployment", "frontend", "team=web"]).await;
    k.ok(&["scale", "deployment", "frontend", "--replicas=2"])
        .await;
    let live = h
        .get_object("gb", "apps/v1", "Deployment", Some("default"), "frontend")
        .unwrap();
    assert_eq!(
        (
            live["spec"]["replicas"].clone(),
            live["metadata"]["labels"]["team"].clone()
        ),
        (serde_json::json!(2), serde_json::json!("web"))
    );
    k.ok(&["rollout", "status", "deployment/frontend", "--timeout=30s"])
        .await;

    let out = k
        .ok(&["delete", "-f", gb, "--wait=true", "--timeout=30s"])
        .await;
    assert_eq!(out.stdout.matches("deleted").count(), 6, "{out:?}");
    let left = k.ok(&["get", "deployments,services", "-o", "name"]).await;
    assert!(left.stdout.trim().is_empty(), "{left:?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kustomize_overlays_pipe_into_server_side_apply() {
    let envs = ["dev", "staging", "production"];
    let h = start(
        envs.iter()
            .map(|e| (*e).to_string())
            .chain(["plain".to_string()])
            .collect(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    for env in envs {
        let k = Kubectl::new(&h, env, dir.path());
        let overlay = corpus().join(format!("podinfo/deploy/overlays/{env}"));
        let rendered = k.ok(&["kustomize", overlay.to_str().unwrap()]).await;
        let out = k
            .run_with(
                &["apply", "--server-side", "-f", "-"],
                Some(&rendered.stdout),
            )
            .await;
        assert_eq!(out.code, 0, "{env}: {out:?}");
        assert!(
            out.stdout
                .contains(&format!("namespace/{env} serverside-applied")),
            "{out:?}"
        );
        k.ok(&[
            "wait",
            "--for=condition=Available",
            "deployments",
            "--all",
            "-n",
            env,
            "--timeout=30s",
        ])
        .await;
        let labelled = k
            .ok(&[
                "get",
                "deployments",
                "-n",
                env,
                "-l",
                &format!("app.kubernetes.io/environment={env}"),
                "-o",
                "name",
            ])
            .await;
        assert!(
            !labelled.stdout.is_empty(),
            "{env}: the overlay's labels are on the objects: {labelled:?}"
        );
        let diff = k
            .run_with(
                &["diff", "--server-side", "-f", "-"],
                Some(&rendered.stdout),
            )
            .await;
        assert_eq!(diff.code, 0, "{env}: {diff:?}");
        // Deleting the namespace takes its contents with it; kubectl waits for it.
        k.ok(&["delete", "namespace", env, "--wait=true", "--timeout=30s"])
            .await;
        let left = h
            .list_objects(env)
            .into_iter()
            .filter(|o| o["metadata"]["namespace"] == env)
            .count();
        assert_eq!(left, 0, "{env}");
    }
    let k = Kubectl::new(&h, "plain", dir.path());
    let rendered = k
        .ok(&[
            "kustomize",
            corpus().join("podinfo/kustomize").to_str().unwrap(),
        ])
        .await;
    let out = k
        .run_with(
            &["apply", "--server-side", "-f", "-"],
            Some(&rendered.stdout),
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    k.ok(&[
        "wait",
        "--for=condition=Available",
        "deployment/podinfo",
        "--timeout=30s",
    ])
    .await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_with_missing_crds_applies_the_rest_and_names_each_failure() {
    let h = start(vec!["mixed".into()]).await;
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl::new(&h, "mixed", dir.path());
    let hpa = corpus().join("kubernetes-examples/AI/vllm-deployment/hpa");
    let out = k
        .run(&["apply", "--server-side", "-f", hpa.to_str().unwrap()])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    for file in [
        "gpu-service-monitor-generic.yaml",
        "gpu-service-monitor-gke.yaml",
        "prometheus-rule.yaml",
        "vllm-service-monitor.yaml",
    ] {
        assert!(out.stderr.contains(file), "{file} is named: {out:?}");
    }
    assert!(
        out.stdout.contains("horizontalpodautoscaler.autoscaling/"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains(
            "apiservice.apiregistration.k8s.io/v1beta1.custom.metrics.k8s.io serverside-applied"
        ),
        "{out:?}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_make_kinds_appear_for_kubectl() {
    let h = start(vec!["crd".into()]).await;
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl::new(&h, "crd", dir.path());
    let monitor =
        corpus().join("kubernetes-examples/AI/vllm-deployment/hpa/vllm-service-monitor.yaml");
    let monitor = monitor.to_str().unwrap();
    assert_ne!(
        k.run(&["apply", "--server-side", "-f", monitor]).await.code,
        0
    );
    k.namespace("monitoring").await;
    let crd = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor, shortNames: [smon]}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"#;
    let out = k
        .run_with(&["apply", "--server-side", "-f", "-"], Some(crd))
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/servicemonitors.monitoring.coreos.com",
        "--timeout=30s",
    ])
    .await;
    // kubectl caches discovery; a fresh cache dir sees the new kind, as after a real CRD install.
    let k2 = Kubectl {
        kubeconfig: k.kubeconfig.clone(),
        cache: dir.path().join("fresh-cache"),
    };
    let out = k2.run(&["apply", "--server-side", "-f", monitor]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let got = k2.ok(&["get", "smon", "-A", "-o", "name"]).await;
    assert!(
        got.stdout.contains("servicemonitor.monitoring.coreos.com/"),
        "{got:?}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_workloads_never_become_available() {
    let h = start(vec!["fail".into()]).await;
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl::new(&h, "fail", dir.path());
    let manifest = std::fs::read_to_string(
        corpus().join("kubernetes-examples/web/guestbook/frontend-deployment.yaml"),
    )
    .unwrap()
    .replacen(
        "metadata:\n",
        "metadata:\n  annotations:\n    kubesim.gitfleet.dev/fail: \"true\"\n",
        1,
    );
    let out = k
        .run_with(&["apply", "--server-side", "-f", "-"], Some(&manifest))
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let rollout = k
        .run(&["rollout", "status", "deployment/frontend", "--timeout=30s"])
        .await;
    assert_ne!(rollout.code, 0, "{rollout:?}");
    assert!(
        rollout.stderr.contains("exceeded its progress deadline"),
        "{rollout:?}"
    );
    let wait = k
        .run(&[
            "wait",
            "--for=condition=Available",
            "deployment/frontend",
            "--timeout=1s",
        ])
        .await;
    assert_ne!(wait.code, 0, "{wait:?}");
    assert!(wait.stderr.contains("timed out"), "{wait:?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_over_tls_with_a_token() {
    let mut config = KubesimConfig::new(["secure"]);
    config.tls = true;
    config.token = Some("t0ken".into());
    let h = Kubesim::start(config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let paths = h.write_kubeconfigs(dir.path()).unwrap();
    assert_eq!(paths, vec![dir.path().join("secure.kubeconfig")]);
    let k = Kubectl {
        kubeconfig: paths[0].clone(),
        cache: dir.path().join("cache"),
    };
    let gb = corpus().join("kubernetes-examples/web/guestbook/frontend-service.yaml");
    k.ok(&["apply", "--server-side", "-f", gb.to_str().unwrap()])
        .await;
    let out = k
        .ok(&["get", "service", "frontend", "-o", "jsonpath={.spec.type}"])
        .await;
    assert_eq!(out.stdout, "NodePort");
    let bad = Kubectl {
        kubeconfig: dir.path().join("bad.kubeconfig"),
        cache: dir.path().join("cache2"),
    };
    std::fs::write(
        &bad.kubeconfig,
        h.kubeconfig_yaml("secure").replace("t0ken", "wrong"),
    )
    .unwrap();
    let out = bad.run(&["get", "services"]).await;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("Unauthorized") || out.stderr.contains("provide credentials"),
        "{out:?}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reports_invalid_names_and_conflicts_like_a_real_server() {
    let h = start(vec!["bad".into()]).await;
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl::new(&h, "bad", dir.path());
    let manifest = std::fs::read_to_string(
        corpus().join("kubernetes-examples/web/guestbook/frontend-deployment.yaml"),
    )
    .unwrap();
    let bad = manifest.replace("name: frontend", "name: Front_End");
    let out = k
        .run_with(&["apply", "--server-side", "-f", "-"], Some(&bad))
        .await;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("The Deployment \"Front_End\" is invalid: metadata.name: Invalid value: \"Front_End\": a lowercase RFC 1123 subdomain"),
        "{out:?}"
    );
    // Another manager changing a field kubectl owns conflicts until forced.
    k.run_with(&["apply", "--server-side", "-f", "-"], Some(&manifest))
        .await;
    let scaled = manifest.replace("replicas: 3", "replicas: 5");
    let out = k
        .run_with(
            &["apply", "--server-side", "--field-manager=other", "-f", "-"],
            Some(&scaled),
        )
        .await;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr
            .contains("Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas"),
        "{out:?}"
    );
    let out = k
        .run_with(
            &[
                "apply",
                "--server-side",
                "--field-manager=other",
                "--force-conflicts",
                "-f",
                "-",
            ],
            Some(&scaled),
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_generators_send_protobuf_that_kubesim_decodes() {
    let h = start(vec!["pb".into()]).await;
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl::new(&h, "pb", dir.path());
    k.ok(&["create", "namespace", "team"]).await;
    k.ok(&[
        "create",
        "configmap",
        "cfg",
        "-n",
        "team",
        "--from-literal=a=1",
    ])
    .await;
    k.ok(&[
        "create",
        "secret",
        "generic",
        "pw",
        "-n",
        "team",
        "--from-literal=p=s3cret",
    ])
    .await;
    k.ok(&["create", "serviceaccount", "bot", "-n", "team"])
        .await;
    let ns = h.get_object("pb", "v1", "Namespace", None, "team").unwrap();
    assert_eq!(ns["status"]["phase"], "Active");
    let cm = h
        .get_object("pb", "v1", "ConfigMap", Some("team"), "cfg")
        .unwrap();
    assert_eq!(cm["data"]["a"], "1");
    let secret = h
        .get_object("pb", "v1", "Secret", Some("team"), "pw")
        .unwrap();
    assert_eq!(secret["data"]["p"], "czNjcmV0");
    assert_eq!(secret["type"], "Opaque");
    assert!(
        h.get_object("pb", "v1", "ServiceAccount", Some("team"), "bot")
            .is_some()
    );
    h.shutdown().await;
}

/// The rows of a `kubectl get` table, each a map from the header's column names to the cells
/// (cells may hold spaces, as `cpu: 40%/80%` does, so columns are cut where the header's are).
fn table_rows(stdout: &str) -> (Vec<String>, Vec<std::collections::BTreeMap<String, String>>) {
    let mut lines = stdout.lines();
    let header = lines.next().unwrap_or_default();
    let mut starts = Vec::new();
    let mut names = Vec::new();
    let bytes: Vec<char> = header.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != ' ' {
            let start = i;
            // A column name may hold one space ("ACCESS MODES"); two end it.
            while i < bytes.len()
                && !(bytes[i] == ' ' && bytes.get(i + 1).is_none_or(|c| *c == ' '))
            {
                i += 1;
            }
            starts.push(start);
            names.push(bytes[start..i].iter().collect::<String>());
        }
        i += 1;
    }
    let rows = lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let chars: Vec<char> = line.chars().collect();
            names
                .iter()
                .enumerate()
                .map(|(n, name)| {
                    let from = starts[n].min(chars.len());
                    let to = starts
                        .get(n + 1)
                        .copied()
                        .unwrap_or(chars.len())
                        .min(chars.len());
                    (
                        name.clone(),
                        chars[from..to]
                            .iter()
                            .collect::<String>()
                            .trim()
                            .to_string(),
                    )
                })
                .collect()
        })
        .collect();
    (names, rows)
}

const STATEFUL_SET: &str = "apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: 2
  selector:
    matchLabels:
      app: db
  template:
    metadata:
      labels:
        app: db
    spec:
      containers:
      - name: db
        image: postgres:16
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateful_set_applied_without_an_update_strategy_rolls_out() {
    let h = start(vec!["sts".into()]).await;
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl::new(&h, "sts", dir.path());
    let out = k
        .run_with(&["apply", "--server-side", "-f", "-"], Some(STATEFUL_SET))
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let rollout = k
        .ok(&["rollout", "status", "statefulset/db", "--timeout=30s"])
        .await;
    assert!(
        rollout
            .stdout
            .contains("roll out complete: 2 new pods have been updated"),
        "{rollout:?}"
    );
    let (columns, rows) = table_rows(&k.ok(&["get", "statefulsets"]).await.stdout);
    assert_eq!(columns, ["NAME", "READY", "AGE"]);
    assert_eq!(
        (rows[0]["NAME"].as_str(), rows[0]["READY"].as_str()),
        ("db", "2/2")
    );

    let live = h
        .get_object("sts", "apps/v1", "StatefulSet", Some("default"), "db")
        .unwrap();
    assert_eq!(
        live["spec"]["updateStrategy"],
        serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    );
    assert_eq!(live["spec"]["podManagementPolicy"], "OrderedReady");
    let applier = live["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "kubectl")
        .unwrap()["fieldsV1"]
        .to_string();
    assert!(!applier.contains("updateStrategy"), "{applier}");
    assert!(!applier.contains("imagePullPolicy"), "{applier}");
    // The defaults are no drift: diff is clean and a re-apply keeps them.
    let diff = k
        .run_with(&["diff", "--server-side", "-f", "-"], Some(STATEFUL_SET))
        .await;
    assert_eq!(diff.code, 0, "{diff:?}");
    k.run_with(&["apply", "--server-side", "-f", "-"], Some(STATEFUL_SET))
        .await;
    let live = h
        .get_object("sts", "apps/v1", "StatefulSet", Some("default"), "db")
        .unwrap();
    assert_eq!(live["spec"]["updateStrategy"]["type"], "RollingUpdate");
    h.shutdown().await;
}

const WEB: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: nginx:1.27
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: web
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: web
  minReplicas: 2
  maxReplicas: 5
  metrics:
  - type: Resource
    resource:
      name: cpu
      target:
        type: Utilization
        averageUtilization: 70
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  selector:
    matchLabels:
      app: api
  template:
    metadata:
      labels:
        app: api
    spec:
      containers:
      - name: api
        image: nginx:1.27
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: api
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: api
  minReplicas: 2
  maxReplicas: 4
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_hpa_shows_what_the_autoscaler_reports() {
    let h = start(vec!["hpa".into()]).await;
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl::new(&h, "hpa", dir.path());
    let out = k
        .run_with(&["apply", "--server-side", "-f", "-"], Some(WEB))
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    for (hpa, replicas) in [("hpa/web", "3"), ("hpa/api", "2")] {
        k.ok(&[
            "wait",
            &format!("--for=jsonpath={{.status.currentReplicas}}={replicas}"),
            hpa,
            "--timeout=30s",
        ])
        .await;
    }
    let (columns, rows) = table_rows(&k.ok(&["get", "hpa"]).await.stdout);
    assert_eq!(
        columns,
        [
            "NAME",
            "REFERENCE",
            "TARGETS",
            "MINPODS",
            "MAXPODS",
            "REPLICAS",
            "AGE"
        ]
    );
    let row = |name: &str| rows.iter().find(|r| r["NAME"] == name).unwrap().clone();
    let web = row("web");
    assert_eq!(
        [
            &web["REFERENCE"],
            &web["TARGETS"],
            &web["MINPODS"],
            &web["MAXPODS"],
            &web["REPLICAS"]
        ],
        ["Deployment/web", "cpu: 70%/70%", "2", "5", "3"]
    );
    // The HPA without metrics got the default CPU target, and scaled its one-replica
    // Deployment up to its minimum, as a real autoscaler would.
    let api = row("api");
    assert_eq!(
        [
            &api["TARGETS"],
            &api["MINPODS"],
            &api["MAXPODS"],
            &api["REPLICAS"]
        ],
        ["cpu: 80%/80%", "2", "4", "2"]
    );
    let scaled = k
        .ok(&[
            "get",
            "deployment",
            "api",
            "-o",
            "jsonpath={.spec.replicas}",
        ])
        .await;
    assert_eq!(scaled.stdout, "2");
    let hpa = h
        .get_object(
            "hpa",
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            Some("default"),
            "web",
        )
        .unwrap();
    assert!(hpa["status"].get("lastScaleTime").is_none(), "{hpa}");
    let reasons: Vec<&str> = hpa["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        ["ReadyForNewScale", "ValidMetricFound", "DesiredWithinRange"]
    );
    let api = h
        .get_object(
            "hpa",
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            Some("default"),
            "api",
        )
        .unwrap();
    assert!(api["status"]["lastScaleTime"].is_string(), "{api}");
    h.shutdown().await;
}

const INGRESS_AND_CLAIM: &str = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
spec:
  ingressClassName: nginx
  tls:
  - hosts: [shop.example.com]
  rules:
  - host: shop.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: web
            port:
              number: 80
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 1Gi
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingresses_get_an_address_from_the_ingress_controller() {
    let h = start(vec!["ing".into()]).await;
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl::new(&h, "ing", dir.path());
    let out = k
        .run_with(
            &["apply", "--server-side", "-f", "-"],
            Some(INGRESS_AND_CLAIM),
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    k.ok(&[
        "wait",
        &format!(
            "--for=jsonpath={{.status.loadBalancer.ingress[0].ip}}={}",
            gitfleet_kubesim::controllers::INGRESS_ADDRESS
        ),
        "ingress/shop",
        "--timeout=30s",
    ])
    .await;
    let (columns, rows) = table_rows(&k.ok(&["get", "ingress"]).await.stdout);
    assert_eq!(
        columns,
        ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    );
    assert_eq!(
        [
            &rows[0]["NAME"],
            &rows[0]["CLASS"],
            &rows[0]["HOSTS"],
            &rows[0]["ADDRESS"],
            &rows[0]["PORTS"]
        ],
        [
            "shop",
            "nginx",
            "shop.example.com",
            "172.18.0.200",
            "80, 443"
        ]
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_ingress_controller_ingresses_stay_without_an_address() {
    let mut config = KubesimConfig::new(["bare"]);
    config.ready_delay = Duration::from_millis(100);
    config.ingress_controller = false;
    let h = Kubesim::start(config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl::new(&h, "bare", dir.path());
    let out = k
        .run_with(
            &["apply", "--server-side", "-f", "-"],
            Some(INGRESS_AND_CLAIM),
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    // The claim binds after the same delay an ingress controller takes, and its step was queued
    // after the Ingress's would have been: once it is Bound, an address would have come.
    k.ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Bound",
        "pvc/data",
        "--timeout=30s",
    ])
    .await;
    let (_, rows) = table_rows(&k.ok(&["get", "ingress"]).await.stdout);
    assert_eq!(rows[0]["ADDRESS"], "", "{rows:?}");
    let live = h
        .get_object(
            "bare",
            "networking.k8s.io/v1",
            "Ingress",
            Some("default"),
            "shop",
        )
        .unwrap();
    assert!(
        live.pointer("/status/loadBalancer/ingress").is_none(),
        "{live}"
    );
    h.shutdown().await;
}

const DAEMON_SET_AND_JOB: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels:
      app: agent
  template:
    metadata:
      labels:
        app: agent
    spec:
      nodeSelector:
        kubernetes.io/os: linux
      containers:
      - name: agent
        image: busybox:1.36
---
apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: migrate
        image: busybox:1.36
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_prints_the_real_columns_of_jobs_cron_jobs_claims_and_daemon_sets() {
    let h = start(vec!["tables".into()]).await;
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl::new(&h, "tables", dir.path());
    let database = corpus().join("podinfo/deploy/bases/database");
    k.ok(&["apply", "--server-side", "-k", database.to_str().unwrap()])
        .await;
    let out = k
        .run_with(
            &["apply", "--server-side", "-f", "-"],
            Some(DAEMON_SET_AND_JOB),
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    k.ok(&[
        "wait",
        "--for=condition=Complete",
        "job/migrate",
        "--timeout=30s",
    ])
    .await;
    k.ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Bound",
        "pvc/database-primary",
        "--timeout=30s",
    ])
    .await;
    k.ok(&["rollout", "status", "daemonset/agent", "--timeout=30s"])
        .await;

    let (columns, rows) = table_rows(&k.ok(&["get", "cronjobs"]).await.stdout);
    assert_eq!(
        columns,
        [
            "NAME",
            "SCHEDULE",
            "TIMEZONE",
            "SUSPEND",
            "ACTIVE",
            "LAST SCHEDULE",
            "AGE"
        ]
    );
    let backup = rows.iter().find(|r| r["NAME"] == "backup-daily").unwrap();
    assert_eq!(
        [
            &backup["SCHEDULE"],
            &backup["TIMEZONE"],
            &backup["SUSPEND"],
            &backup["ACTIVE"],
            &backup["LAST SCHEDULE"]
        ],
        ["0 0 * * *", "<none>", "False", "0", "<none>"]
    );
    let (columns, rows) = table_rows(&k.ok(&["get", "jobs"]).await.stdout);
    assert_eq!(
        columns,
        ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    );
    assert_eq!(
        [
            &rows[0]["NAME"],
            &rows[0]["STATUS"],
            &rows[0]["COMPLETIONS"]
        ],
        ["migrate", "Complete", "1/1"]
    );
    let (columns, rows) = table_rows(&k.ok(&["get", "pvc"]).await.stdout);
    assert_eq!(
        columns,
        [
            "NAME",
            "STATUS",
            "VOLUME",
            "CAPACITY",
            "ACCESS MODES",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "AGE"
        ]
    );
    assert_eq!(
        [
            &rows[0]["STATUS"],
            &rows[0]["CAPACITY"],
            &rows[0]["ACCESS MODES"],
            &rows[0]["VOLUMEATTRIBUTESCLASS"]
        ],
        ["Bound", "1Gi", "RWO", "<unset>"]
    );
    let (columns, rows) = table_rows(&k.ok(&["get", "daemonsets"]).await.stdout);
    assert_eq!(
        columns,
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE SELECTOR",
            "AGE"
        ]
    );
    assert_eq!(
        [
            &rows[0]["DESIRED"],
            &rows[0]["READY"],
            &rows[0]["NODE SELECTOR"]
        ],
        ["1", "1", "kubernetes.io/os=linux"]
    );
    // Defaults as a real server sets them, read back through kubectl.
    let job = k.ok(&["get", "job", "migrate", "-o", "json"]).await;
    let job: Value = serde_json::from_str(&job.stdout).unwrap();
    assert_eq!(
        [
            &job["spec"]["backoffLimit"],
            &job["spec"]["completionMode"],
            &job["spec"]["suspend"]
        ],
        [
            &serde_json::json!(6),
            &serde_json::json!("NonIndexed"),
            &serde_json::json!(false)
        ]
    );
    let cj = k
        .ok(&["get", "cronjob", "rollup-daily", "-o", "json"])
        .await;
    let cj: Value = serde_json::from_str(&cj.stdout).unwrap();
    assert_eq!(cj["spec"]["suspend"], false);
    assert_eq!(
        cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"],
        "ClusterFirst"
    );
    h.shutdown().await;
}

/// `gitfleet diff --live` relies on it: a server-side dry run answers with the object as it
/// would be (created or changed, defaults filled in) and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_dry_runs_answer_the_object_and_store_nothing() {
    let h = start(vec!["dry".into()]).await;
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl::new(&h, "dry", dir.path());
    let manifest = std::fs::read_to_string(
        corpus().join("kubernetes-examples/web/guestbook/frontend-deployment.yaml"),
    )
    .unwrap();
    let objects = |h: &KubesimHandle| {
        h.list_objects("dry")
            .iter()
            .map(|o| {
                (
                    o["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    o["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    let empty = objects(&h);
    // A dry-run create: the would-be object, defaulted, and nothing stored.
    let out = k
        .run_with(
            &[
                "apply",
                "--server-side",
                "--dry-run=server",
                "-o",
                "json",
                "-f",
                "-",
            ],
            Some(&manifest),
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let planned: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(planned["spec"]["replicas"], 3, "{planned}");
    assert_eq!(
        planned["spec"]["strategy"]["type"], "RollingUpdate",
        "defaults filled in: {planned}"
    );
    assert!(
        planned["metadata"]["resourceVersion"].is_null(),
        "nothing stored, no version: {planned}"
    );
    assert_eq!(objects(&h), empty, "a dry run stores nothing");
    assert!(
        h.get_object("dry", "apps/v1", "Deployment", Some("default"), "frontend")
            .is_none()
    );
    // A dry-run change of a stored object: the change answered, the stored object as it was.
    k.run_with(&["apply", "--server-side", "-f", "-"], Some(&manifest))
        .await;
    // Once the simulated controller has made it ready, nothing moves it but a write.
    k.ok(&[
        "wait",
        "--for=condition=Available",
        "deployment/frontend",
        "--timeout=30s",
    ])
    .await;
    let stored = objects(&h);
    let scaled = manifest.replace("replicas: 3", "replicas: 6");
    let out = k
        .run_with(
            &[
                "apply",
                "--server-side",
                "--dry-run=server",
                "-o",
                "json",
                "-f",
                "-",
            ],
            Some(&scaled),
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let planned: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(planned["spec"]["replicas"], 6, "{planned}");
    assert_eq!(objects(&h), stored, "a dry run changes nothing stored");
    let live = h
        .get_object("dry", "apps/v1", "Deployment", Some("default"), "frontend")
        .unwrap();
    assert_eq!(live["spec"]["replicas"], 3);
    h.shutdown().await;
}

const WIDGET_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Widget, plural: widgets}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      additionalPrinterColumns:
        - {name: Size, type: integer, jsonPath: .spec.size}
        - {name: Labels, type: string, jsonPath: .spec.labels}
        - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
        - {name: Color, type: string, jsonPath: .spec.color, priority: 1}
        - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

/// A CRD's `additionalPrinterColumns` are what `kubectl get` prints (`-o wide` adds those of
/// priority 1), with a missing field empty, maps as Go prints them and the status
/// subresource's conditions read through a filter.
#[tokio::test]
async fn kubectl_get_prints_a_crds_printer_columns() {
    let h = start(vec!["crds".into()]).await;
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl::new(&h, "crds", dir.path());
    let out = k
        .run_with(&["apply", "--server-side", "-f", "-"], Some(WIDGET_CRD))
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.example.com",
        "--timeout=30s",
    ])
    .await;
    let widgets = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: a}\nspec: {size: 3, color: red, labels: {env: prod, ring: b}}\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: b}\nspec: {}\n";
    let out = k.run_with(&["apply", "-f", "-"], Some(widgets)).await;
    assert_eq!(out.code, 0, "{out:?}");
    k.ok(&[
        "patch",
        "widgets",
        "a",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Other","status":"False"},{"type":"Ready","status":"True"}]}}"#,
    ])
    .await;

    let (columns, rows) = table_rows(&k.ok(&["get", "widgets"]).await.stdout);
    assert_eq!(columns, ["NAME", "SIZE", "LABELS", "READY", "AGE"]);
    let a = rows.iter().find(|r| r["NAME"] == "a").unwrap();
    assert_eq!(
        [&a["SIZE"], &a["LABELS"], &a["READY"]],
        ["3", "map[env:prod ring:b]", "True"]
    );
    assert!(a["AGE"].ends_with('s'), "{a:?}");
    let b = rows.iter().find(|r| r["NAME"] == "b").unwrap();
    assert_eq!(
        [&b["SIZE"], &b["LABELS"], &b["READY"]],
        ["", "", ""],
        "a missing field is a null cell, which kubectl leaves empty"
    );
    let (columns, rows) = table_rows(&k.ok(&["get", "widgets", "-o", "wide"]).await.stdout);
    assert_eq!(columns, ["NAME", "SIZE", "LABELS", "READY", "COLOR", "AGE"]);
    assert_eq!(
        rows.iter().find(|r| r["NAME"] == "a").unwrap()["COLOR"],
        "red"
    );
}
