//! Notifications end to end: a waved rollout on real spokes and kubesim tells a signed webhook
//! and a GitHub-style commit status API, both served by the test on loopback, that it started,
//! that its waves are done and that it completed, in that order, each once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gitfleet_core::notify::{DELIVERY_HEADER, SIGNATURE_HEADER, verify_signature};
use gitfleet_e2e::harness::{ClusterSpec, Fleet, FleetOptions, until};
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;

const DEADLINE: Duration = Duration::from_secs(90);
const CONFIGMAP: &str = include_str!("../demo/hello/configmap.yaml");
const SECRET: &str = "e2e-hmac-secret";

#[derive(Debug, Clone)]
struct Request {
    path: String,
    headers: http::HeaderMap,
    body: bytes::Bytes,
}

impl Request {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

/// An HTTP receiver on 127.0.0.1 answering 200 to everything, keeping what it was sent.
async fn receiver() -> (SocketAddr, Arc<Mutex<Vec<Request>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local address");
    let received: Arc<Mutex<Vec<Request>>> = Arc::default();
    let kept = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let kept = Arc::clone(&kept);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let kept = Arc::clone(&kept);
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            kept.lock().expect("not poisoned").push(Request {
                                path: parts.uri.path().to_owned(),
                                headers: parts.headers,
                                body,
                            });
                            Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from_static(b"ok"),
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received)
}

fn requests(received: &Arc<Mutex<Vec<Request>>>) -> Vec<Request> {
    received.lock().expect("not poisoned").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waved_rollout_tells_a_webhook_and_a_commit_status_api_each_step_once() {
    let (addr, received) = receiver().await;
    let base = format!("http://{addr}");
    let work = tempfile::tempdir().expect("a temporary directory");
    let credentials = work.path().join("credentials.yaml");
    std::fs::write(
        &credentials,
        format!(
            "ops-hook:\n  notifierSecret: {SECRET}\n  urls: ['{base}/hooks/']\nforge:\n  notifierSecret: forge-token\n  urls: ['{base}/api/repos/acme/']\n"
        ),
    )
    .expect("write the credentials file");
    let mut options = FleetOptions::new(vec![
        ClusterSpec::new("canary-1").label("ring", "canary"),
        ClusterSpec::new("prod-1").label("ring", "prod"),
        ClusterSpec::new("prod-2").label("ring", "prod"),
    ]);
    options.hub_credentials =
        gitfleet_hub::credentials::load(&credentials).expect("the credentials file loads");
    let mut fleet = Fleet::start(options).await.expect("the fleet starts");

    fleet
        .git
        .write("apps/hello/configmap.yaml", CONFIGMAP)
        .expect("write");
    let v1 = fleet.git.commit("hello v1").expect("commit");
    let yaml = format!(
        "{repo}---
apiVersion: gitfleet.dev/v1
kind: Notifier
metadata: {{ name: ops }}
spec:
  webhook: {{ url: \"{base}/hooks/ops\", secretRef: ops-hook }}
  events: [RolloutStarted, WaveCompleted, RolloutCompleted, TargetDegraded]
  apps: [hello]
---
apiVersion: gitfleet.dev/v1
kind: Notifier
metadata: {{ name: forge }}
spec:
  github: {{ secretRef: forge, apiUrl: \"{base}/api\", repository: acme/hello, context: production }}
  events: [RolloutStarted, RolloutCompleted]
---
apiVersion: gitfleet.dev/v1
kind: App
metadata: {{ name: hello }}
spec:
  repo: platform
  path: apps/hello
  namespace: hello
  targets:
    - clusterSelector: {{}}
  rollout:
    waves:
      - name: canary
        clusterSelector: {{ matchLabels: {{ ring: canary }} }}
",
        repo = fleet.repo_yaml("platform"),
    );
    fleet.apply_yaml(&yaml).await.expect("apply");
    fleet
        .wait_converged("hello", &v1, 3, DEADLINE)
        .await
        .expect("hello converges");

    // The webhook: started, each wave done, completed, in event order, each signed.
    let hooks = until("the webhook told of the completion", DEADLINE, || {
        let hooks: Vec<Request> = requests(&received)
            .into_iter()
            .filter(|r| r.path == "/hooks/ops")
            .collect();
        let done = hooks
            .iter()
            .any(|r| r.header("x-gitfleet-event") == "RolloutCompleted");
        Ok(done.then_some(hooks))
    })
    .await
    .expect("the webhook is told");
    let types: Vec<&str> = hooks.iter().map(|r| r.header("x-gitfleet-event")).collect();
    assert_eq!(
        types,
        [
            "RolloutStarted",
            "WaveCompleted",
            "WaveCompleted",
            "RolloutCompleted"
        ],
        "in event order, each once"
    );
    let mut keys: Vec<&str> = hooks.iter().map(|r| r.header(DELIVERY_HEADER)).collect();
    keys.dedup();
    assert_eq!(keys.len(), 4, "one idempotency key per delivery: {keys:?}");
    for r in &hooks {
        assert!(
            verify_signature(SECRET.as_bytes(), &r.body, r.header(SIGNATURE_HEADER)),
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["event"]["app"], "hello");
        assert_eq!(r.json()["event"]["commit"], v1.as_str());
    }

    // The commit status: pending, then success, on v1.
    let path = format!("/api/repos/acme/hello/statuses/{v1}");
    let statuses = until("the commit status set to success", DEADLINE, || {
        let statuses: Vec<Request> = requests(&received)
            .into_iter()
            .filter(|r| r.path == path)
            .collect();
        let done = statuses.iter().any(|r| r.json()["state"] == "success");
        Ok(done.then_some(statuses))
    })
    .await
    .expect("the commit status is set");
    let states: Vec<String> = statuses
        .iter()
        .map(|r| r.json()["state"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(states, ["pending", "success"]);
    for r in &statuses {
        assert_eq!(r.header("authorization"), "Bearer forge-token");
        assert_eq!(r.json()["context"], "production");
    }

    let listed = fleet
        .cli(&["notifier", "list"])
        .await
        .expect("notifier list");
    assert!(
        listed.contains("ops") && listed.contains("forge") && !listed.contains("forge-token"),
        "{listed}"
    );
    fleet.shutdown().await;
}
