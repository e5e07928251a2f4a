//! One commit, one trace: the hub's fetch that finds the commit, the change detection, the
//! rollout step and a dispatch to each spoke, then each spoke's sync (fetch, render, apply, health) as children of
//! its dispatch across the process boundary (W3C trace context on the wire), a `hook` span for
//! each sync hook's run, and the hub's
//! spans storing the spokes' status reports below each sync. Spans are exported over OTLP/gRPC
//! to a receiver in this test.
//!
//! The global subscriber is set once per process: this file holds one test.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gitfleet_e2e::harness::{ClusterSpec, Fleet, FleetOptions};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio_stream::wrappers::TcpListenerStream;

const DEADLINE: Duration = Duration::from_secs(60);

const CONFIGMAP: &str = include_str!("../demo/hello/configmap.yaml");

/// An OTLP trace receiver keeping every span it is sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("receiver lock");
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let receiver = Receiver::default();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        (receiver, format!("http://{addr}"))
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().expect("receiver lock").clone()
    }
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
}

fn describe(spans: &[&Span]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "  {} span={} parent={} cluster={:?}",
                s.name,
                hex(&s.span_id),
                hex(&s.parent_span_id),
                attr(s, "gitfleet.cluster")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The trace of the change to `commit`, checked; `Err` says what is still missing.
fn check_trace(all: &[Span], commit: &str, clusters: &[&str]) -> Result<(), String> {
    let root = all
        .iter()
        .find(|s| {
            s.name == "fetch"
                && s.parent_span_id.is_empty()
                && attr(s, "vcs.ref.head.revision") == Some(commit)
        })
        .ok_or("no root fetch span of the hub for the commit")?;
    let trace: Vec<&Span> = all.iter().filter(|s| s.trace_id == root.trace_id).collect();
    let children_of = |parent: &Span, name: &str| -> Vec<&Span> {
        trace
            .iter()
            .copied()
            .filter(|s| s.name == name && s.parent_span_id == parent.span_id)
            .collect()
    };
    let context = || format!("trace so far:\n{}", describe(&trace));
    if children_of(root, "detect_changes").is_empty() {
        return Err(format!("no detect_changes under the fetch; {}", context()));
    }
    let rollouts = children_of(root, "rollout");
    let [rollout] = rollouts[..] else {
        return Err(format!(
            "{} rollout spans under the fetch; {}",
            rollouts.len(),
            context()
        ));
    };
    for cluster in clusters {
        let dispatches: Vec<&Span> = children_of(rollout, "dispatch")
            .into_iter()
            .filter(|s| attr(s, "gitfleet.cluster") == Some(cluster))
            .collect();
        let [dispatch] = dispatches[..] else {
            return Err(format!(
                "{cluster}: {} dispatch spans under the rollout; {}",
                dispatches.len(),
                context()
            ));
        };
        assert_eq!(attr(dispatch, "gitfleet.app"), Some("hello"));
        assert_eq!(attr(dispatch, "gitfleet.revision"), Some(commit));
        let syncs = children_of(dispatch, "sync");
        let Some(sync) = syncs.first() else {
            return Err(format!(
                "{cluster}: no sync under its dispatch; {}",
                context()
            ));
        };
        assert_eq!(attr(sync, "gitfleet.cluster"), Some(*cluster));
        assert_eq!(attr(sync, "gitfleet.revision"), Some(commit));
        for step in ["fetch", "render", "apply", "health"] {
            if children_of(sync, step).is_empty() {
                return Err(format!(
                    "{cluster}: no {step} under the sync; {}",
                    context()
                ));
            }
        }
        // v2 brings a PreSync hook: its run is a span of the sync, naming phase, kind and name.
        let hooks = children_of(sync, "hook");
        let Some(hook) = hooks.first() else {
            return Err(format!("{cluster}: no hook under the sync; {}", context()));
        };
        assert_eq!(attr(hook, "phase"), Some("PreSync"), "{}", context());
        assert_eq!(attr(hook, "kind"), Some("ConfigMap"), "{}", context());
        assert_eq!(attr(hook, "name"), Some("hello-presync"), "{}", context());
        let fetch = children_of(sync, "fetch")[0];
        assert_eq!(attr(fetch, "vcs.ref.head.revision"), Some(commit));
        // The hub stored the spoke's reports inside the spoke's sync.
        if children_of(sync, "status").is_empty() {
            return Err(format!(
                "{cluster}: no status span of the hub under the sync; {}",
                context()
            ));
        }
    }
    // Every spoke span of this revision is in this one trace.
    let strays: Vec<&Span> = all
        .iter()
        .filter(|s| {
            s.name == "sync"
                && attr(s, "gitfleet.revision") == Some(commit)
                && s.trace_id != root.trace_id
        })
        .collect();
    if !strays.is_empty() {
        return Err(format!(
            "sync spans of {commit} outside its trace:\n{}",
            describe(&strays)
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_commit_is_one_trace_across_hub_and_spokes() {
    let (receiver, endpoint) = Receiver::start().await;
    let telemetry = gitfleet_hub::telemetry::init_with_endpoint(&endpoint)
        .expect("the first subscriber of this process");

    let clusters = ["eu-1", "eu-2"];
    let mut fleet = Fleet::start(FleetOptions::new(
        clusters.iter().map(|c| ClusterSpec::new(c)).collect(),
    ))
    .await
    .unwrap();
    fleet
        .git
        .write("apps/hello/configmap.yaml", CONFIGMAP)
        .unwrap();
    let v1 = fleet.git.commit("hello v1").unwrap();
    let app = "apiVersion: gitfleet.dev/v1\nkind: App\nmetadata: { name: hello }\nspec:\n  repo: platform\n  path: apps/hello\n  namespace: hello\n  targets:\n    - clusters: [eu-1, eu-2]\n";
    let yaml = format!("{}---\n{app}", fleet.repo_yaml("platform"));
    fleet.apply_yaml(&yaml).await.unwrap();
    fleet
        .wait_converged("hello", &v1, 2, DEADLINE)
        .await
        .unwrap();

    // The change under test: a new commit that touches the App.
    fleet
        .git
        .write(
            "apps/hello/configmap.yaml",
            CONFIGMAP.replace("gitfleet, v1", "gitfleet, v2"),
        )
        .unwrap();
    fleet
        .git
        .write(
            "apps/hello/presync.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hello-presync\n  annotations: {gitfleet.dev/hook: PreSync}\n",
        )
        .unwrap();
    let v2 = fleet.git.commit("hello v2").unwrap();
    fleet
        .wait_converged("hello", &v2, 2, DEADLINE)
        .await
        .unwrap();

    let start = Instant::now();
    loop {
        tokio::task::block_in_place(|| telemetry.flush());
        match check_trace(&receiver.spans(), &v2, &clusters) {
            Ok(()) => break,
            Err(missing) if start.elapsed() > DEADLINE => panic!("{missing}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }

    // Long-lived spans (a spoke's link, a Repo's follower, a settled Target's watch) are not
    // exported: each change is its own trace.
    let names: BTreeMap<String, usize> =
        receiver.spans().iter().fold(BTreeMap::new(), |mut m, s| {
            *m.entry(s.name.clone()).or_default() += 1;
            m
        });
    for long_lived in gitfleet_hub::telemetry::NOT_EXPORTED {
        assert!(
            !names.contains_key(long_lived),
            "{long_lived} exported: {names:?}"
        );
    }
    fleet.shutdown().await;
    tokio::task::block_in_place(|| telemetry.shutdown());
}
