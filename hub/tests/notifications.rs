//! Notifiers against receivers the tests run on loopback: the generic webhook (its signature
//! checked with the secret from the credentials file), Slack's format, GitHub's, GitLab's and
//! Gitea's commit status APIs; filters; retries with one idempotency key; a delivery that
//! fails while the hub is down arrives after a restart on the same data directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use gitfleet_core::notify::{DELIVERY_HEADER, SIGNATURE_HEADER, verify_signature};
use gitfleet_hub::runtime::{self, HubConfig, HubHandle};
use gitfleet_proto::v1 as pb;
use support::*;

// --- a receiver on loopback ------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: http::HeaderMap,
    body: Vec<u8>,
    /// The status it was answered with.
    answered: u16,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct Script {
    received: Vec<Received>,
    /// The statuses of the next answers, in order; 200 once they are used up.
    answers: VecDeque<u16>,
}

/// An HTTP server on 127.0.0.1 that records every request and answers as scripted.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), Arc::default()).await
    }

    async fn start_on(addr: SocketAddr, script: Arc<Mutex<Script>>) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::clone(&script);
        let app = axum::Router::new().fallback(
            move |uri: http::Uri, headers: http::HeaderMap, body: axum::body::Bytes| {
                let shared = Arc::clone(&shared);
                async move {
                    let mut script = shared.lock().unwrap();
                    let answered = script.answers.pop_front().unwrap_or(200);
                    script.received.push(Received {
                        path: uri.path().to_owned(),
                        headers,
                        body: body.to_vec(),
                        answered,
                    });
                    (
                        http::StatusCode::from_u16(answered).unwrap(),
                        format!("answered {answered}"),
                    )
                }
            },
        );
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, script }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn answer(&self, statuses: &[u16]) {
        self.script.lock().unwrap().answers.extend(statuses);
    }

    fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }

    /// Waits until a request of event type `event` was answered with `status`.
    async fn until_answered(&self, event: &str, status: u16) -> Received {
        eventually(&format!("{event} answered {status}"), || async {
            self.received()
                .into_iter()
                .find(|r| r.answered == status && r.header("x-gitfleet-event") == Some(event))
        })
        .await
    }
}

// --- the hub ---------------------------------------------------------------------------------

fn credentials(dir: &std::path::Path, yaml: &str) -> gitfleet_hub::credentials::Credentials {
    let file = dir.join("credentials.yaml");
    std::fs::write(&file, yaml).unwrap();
    gitfleet_hub::credentials::load(&file).unwrap()
}

async fn start_with(
    data: &std::path::Path,
    creds: &gitfleet_hub::credentials::Credentials,
) -> HubHandle {
    let mut config = HubConfig::for_tests(data);
    config.repo_credentials = creds.clone();
    runtime::start(config).await.unwrap()
}

fn notifier(name: &str, spec: serde_json::Value) -> pb::ResourceDocument {
    doc(serde_json::json!({
        "apiVersion": "gitfleet.dev/v1", "kind": "Notifier",
        "metadata": {"name": name},
        "spec": spec,
    }))
}

async fn apply(hub: &HubHandle, documents: Vec<pb::ResourceDocument>) -> Result<(), tonic::Status> {
    admin(hub)
        .await
        .apply(pb::ApplyRequest {
            documents,
            dry_run: false,
        })
        .await
        .map(|_| ())
}

async fn notifiers(hub: &HubHandle) -> Vec<pb::NotifierInfo> {
    admin(hub)
        .await
        .list_notifiers(pb::ListNotifiersRequest {})
        .await
        .unwrap()
        .into_inner()
        .notifiers
}

async fn notifier_info(hub: &HubHandle, name: &str) -> pb::NotifierInfo {
    notifiers(hub)
        .await
        .into_iter()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no notifier {name}"))
}

/// App `web` on `dev-1` rolled out at a first commit, then at a second one (rollout #2:
/// `RolloutStarted`, then `RolloutCompleted` once the spoke reports it healthy). Returns the
/// second commit and the spoke (its session open).
async fn roll_out_a_second_commit(
    hub: &HubHandle,
    git: &GitRepo,
    first: &str,
) -> (String, FakeSpoke) {
    let (_id, mut spoke) = web_on_dev_1(hub, git, first).await;
    spoke.report(1, "web", first, "synced").await;
    let second = git.commit(&[("apps/web/cm.yaml", "kind: ConfigMap # 2\n")], "two");
    hub.engine()
        .fetch_now(vec!["platform".into()])
        .await
        .unwrap();
    spoke
        .until("web at the second commit", |v| {
            v.commit_of("web").as_deref() == Some(second.as_str())
        })
        .await;
    spoke.report(2, "web", &second, "synced").await;
    spoke.until("ack 2", |v| v.acked_seq == 2).await;
    (second, spoke)
}

fn first_commit(git: &GitRepo) -> String {
    git.commit(&[("apps/web/cm.yaml", "kind: ConfigMap\n")], "one")
}

// --- tests -----------------------------------------------------------------------------------

#[tokio::test]
async fn a_webhook_is_signed_with_the_secret_its_entry_binds_to_its_url() {
    let (tmp, data) = data_dir();
    let receiver = Receiver::start().await;
    let creds = credentials(
        tmp.path(),
        &format!(
            "ops-hook:\n  notifierSecret: hmac-topsecret\n  urls: ['{}']\n",
            receiver.url("/gitfleet")
        ),
    );
    let hub = start_with(&data, &creds).await;
    let git = GitRepo::new();
    let first = first_commit(&git);
    apply(
        &hub,
        vec![notifier(
            "ops",
            serde_json::json!({
                "webhook": {"url": receiver.url("/gitfleet/ops"), "secretRef": "ops-hook"},
                "events": ["RolloutStarted", "RolloutPaused", "RolloutRolledBack", "RolloutCompleted", "TargetDegraded"],
                "apps": ["web"],
            }),
        )],
    )
    .await
    .unwrap();
    let (second, _spoke) = roll_out_a_second_commit(&hub, &git, &first).await;

    let started = eventually("RolloutStarted of the second commit", || async {
        receiver.received().into_iter().find(|r| {
            r.header("x-gitfleet-event") == Some("RolloutStarted")
                && r.json()["event"]["rollout"] == 2
        })
    })
    .await;
    let completed = eventually("RolloutCompleted of the second commit", || async {
        receiver.received().into_iter().find(|r| {
            r.header("x-gitfleet-event") == Some("RolloutCompleted")
                && r.json()["event"]["commit"] == second.as_str()
        })
    })
    .await;
    for r in [&started, &completed] {
        assert_eq!(r.path, "/gitfleet/ops");
        assert_eq!(r.header("content-type"), Some("application/json"));
        let signature = r.header(SIGNATURE_HEADER).expect("signed");
        assert!(
            verify_signature(b"hmac-topsecret", &r.body, signature),
            "the signature verifies over the body with the entry's secret"
        );
        let body = r.json();
        assert_eq!(r.header(DELIVERY_HEADER), body["id"].as_str());
        assert_eq!(
            body["id"],
            format!("ops/{}", body["event"]["id"].as_u64().unwrap())
        );
        assert_eq!(body["event"]["app"], "web");
        assert_eq!(body["event"]["project"], "default");
    }
    assert_eq!(started.json()["event"]["commit"], second.as_str());
    assert_eq!(started.json()["event"]["rollout"], 2);

    let info = notifier_info(&hub, "ops").await;
    assert_eq!(
        info.sink,
        format!("webhook {}", receiver.url("/gitfleet/ops"))
    );
    assert!(info.delivered >= 2, "{info:?}");
    assert_eq!(info.given_up, 0, "{info:?}");
    assert!(info.last_delivery.starts_with("ops/"), "{info:?}");
    assert!(!format!("{:?}", notifiers(&hub).await).contains("hmac-topsecret"));
    // `get` shows the resource as applied, with its deliveries, and never the secret.
    let got = admin(&hub)
        .await
        .get(pb::GetRequest {
            kind: "notifier".into(),
            name: "ops".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let text = format!("{got:?}");
    assert!(
        text.contains("ops-hook") && !text.contains("hmac-topsecret"),
        "{text}"
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn a_secret_is_refused_for_a_url_its_entry_does_not_cover() {
    let (tmp, data) = data_dir();
    let receiver = Receiver::start().await;
    let creds = credentials(
        tmp.path(),
        &format!(
            "ops-hook:\n  notifierSecret: s\n  urls: ['{}']\n",
            receiver.url("/gitfleet")
        ),
    );
    let hub = start_with(&data, &creds).await;
    for (spec, expected) in [
        (
            serde_json::json!({"webhook": {"url": "http://127.0.0.1:1/elsewhere", "secretRef": "ops-hook"}, "events": ["RolloutStarted"]}),
            "notifier \"evil\": spec.webhook.secretRef: the credentials entry \"ops-hook\" may not be used for \"http://127.0.0.1:1/elsewhere\" (spec.webhook.url)",
        ),
        (
            serde_json::json!({"webhook": {"url": receiver.url("/gitfleet"), "secretRef": "nope"}, "events": ["RolloutStarted"]}),
            "notifier \"evil\": spec.webhook.secretRef: the hub's credentials file (--repo-credentials) has no entry \"nope\" with a notifierSecret",
        ),
        (
            serde_json::json!({"webhook": {"url": receiver.url("/gitfleet")}, "events": ["RolloutStarted"], "project": "team-x"}),
            "notifier \"evil\": spec.project: Project \"team-x\" does not exist",
        ),
    ] {
        let err = apply(&hub, vec![notifier("evil", spec)]).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        assert!(err.message().contains(expected), "{}", err.message());
    }
    assert!(notifiers(&hub).await.is_empty());
    hub.shutdown().await;
}

#[tokio::test]
async fn slack_gets_its_format_and_a_notifier_of_another_app_gets_nothing() {
    let (_tmp, data) = data_dir();
    let slack = Receiver::start().await;
    let other = Receiver::start().await;
    let hub = start_hub(&data).await;
    let git = GitRepo::new();
    let first = first_commit(&git);
    apply(
        &hub,
        vec![
            notifier(
                "chat",
                serde_json::json!({
                    "slack": {"url": slack.url("/services/T0/B0/X")},
                    "events": ["RolloutStarted", "RolloutCompleted"],
                    "apps": ["web"],
                }),
            ),
            notifier(
                "others",
                serde_json::json!({
                    "webhook": {"url": other.url("/hook")},
                    "events": ["RolloutStarted", "RolloutCompleted", "TargetDegraded"],
                    "apps": ["api"],
                }),
            ),
            notifier(
                "prod-only",
                serde_json::json!({
                    "webhook": {"url": other.url("/prod")},
                    "events": ["TargetDegraded"],
                    "clusterSelector": {"matchLabels": {"env": "prod"}},
                }),
            ),
        ],
    )
    .await
    .unwrap();
    let (_id, spoke) = web_on_dev_1(&hub, &git, &first).await;
    spoke.report(1, "web", &first, "synced").await;
    let second = git.commit(&[("apps/web/cm.yaml", "kind: ConfigMap # 2\n")], "two");
    hub.engine()
        .fetch_now(vec!["platform".into()])
        .await
        .unwrap();
    let started = eventually("RolloutStarted of the second commit", || async {
        slack.received().into_iter().find(|r| {
            r.header("x-gitfleet-event") == Some("RolloutStarted")
                && r.json()["text"].as_str().unwrap().contains("rollout #2")
        })
    })
    .await;
    assert_eq!(started.path, "/services/T0/B0/X");
    let body = started.json();
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with(":rocket: web: rollout #2 started (") && text.contains(&second[..7]),
        "{text}"
    );
    assert_eq!(body["blocks"][0]["type"], "section");
    assert_eq!(body["blocks"][0]["text"]["type"], "mrkdwn");
    assert_eq!(started.header(SIGNATURE_HEADER), None);

    // A degraded Target on a dev cluster: not for `prod-only`.
    spoke
        .send(gitfleet_proto::v1::spoke_message::Msg::Status(
            pb::StatusReport {
                seq: 2,
                cluster: "dev-1".into(),
                target_id: "web".into(),
                revision: first.clone(),
                spec_generation: 1,
                sync: pb::SyncState::Synced as i32,
                health: pb::HealthState::Degraded as i32,
                message: "crashloop".into(),
                observed_at_unix: 2,
                ..Default::default()
            },
        ))
        .await;
    eventually("the Degraded event", || async {
        let events = hub
            .engine()
            .events(Some("web"), None, 0, 100)
            .await
            .unwrap();
        events.iter().any(|e| e.kind == "Degraded").then_some(())
    })
    .await;
    // Deliveries are queued with the event they report: none was ever queued for the others.
    let infos = notifiers(&hub).await;
    for name in ["others", "prod-only"] {
        let info = infos.iter().find(|n| n.name == name).unwrap();
        assert_eq!(
            (info.pending, info.delivered, info.given_up),
            (0, 0, 0),
            "{info:?}"
        );
    }
    assert!(other.received().is_empty());
    hub.shutdown().await;
}

#[tokio::test]
async fn commit_statuses_reach_github_gitlab_and_gitea_with_their_tokens() {
    let (tmp, data) = data_dir();
    let forge = Receiver::start().await;
    let creds = credentials(
        tmp.path(),
        &format!(
            "gh:\n  notifierSecret: ghp_token\n  urls: ['{}']\ngl:\n  notifierSecret: glpat_token\n  urls: ['{}']\ngt:\n  notifierSecret: gitea_token\n  urls: ['{}']\n",
            forge.url("/gh/repos/acme/"),
            forge.url("/gl/projects/"),
            forge.url("/gt/"),
        ),
    );
    let hub = start_with(&data, &creds).await;
    let git = GitRepo::new();
    let first = first_commit(&git);
    let status_sink = |secret: &str, api: &str, repository: &str| serde_json::json!({"secretRef": secret, "apiUrl": forge.url(api), "repository": repository});
    let events = serde_json::json!(["RolloutStarted", "RolloutCompleted"]);
    apply(
        &hub,
        vec![
            notifier(
                "github",
                serde_json::json!({"github": status_sink("gh", "/gh", "acme/shop"), "events": events}),
            ),
            notifier(
                "gitlab",
                serde_json::json!({"gitlab": status_sink("gl", "/gl", "group/sub/shop"), "events": events}),
            ),
            notifier(
                "gitea",
                serde_json::json!({"gitea": status_sink("gt", "/gt/", "acme/shop"), "events": events}),
            ),
        ],
    )
    .await
    .unwrap();
    let (second, _spoke) = roll_out_a_second_commit(&hub, &git, &first).await;
    let on_path = |path: String, state: &'static str| {
        let forge = forge.clone();
        async move {
            eventually(&format!("{state} at {path}"), || async {
                forge
                    .received()
                    .into_iter()
                    .find(|r| r.path == path && r.json()["state"] == state)
            })
            .await
        }
    };
    let gh = on_path(format!("/gh/repos/acme/shop/statuses/{second}"), "pending").await;
    assert_eq!(gh.header("authorization"), Some("Bearer ghp_token"));
    assert_eq!(gh.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(gh.json()["context"], "gitfleet/web");
    assert!(
        gh.json()["description"]
            .as_str()
            .unwrap()
            .starts_with("web: rollout #2 started")
    );
    let gh_done = on_path(format!("/gh/repos/acme/shop/statuses/{second}"), "success").await;
    assert_eq!(gh_done.json()["context"], "gitfleet/web");

    let gl = on_path(
        format!("/gl/projects/group%2Fsub%2Fshop/statuses/{second}"),
        "running",
    )
    .await;
    assert_eq!(gl.header("private-token"), Some("glpat_token"));
    assert_eq!(gl.header("authorization"), None);
    assert_eq!(gl.json()["name"], "gitfleet/web");
    on_path(
        format!("/gl/projects/group%2Fsub%2Fshop/statuses/{second}"),
        "success",
    )
    .await;

    let gt = on_path(format!("/gt/repos/acme/shop/statuses/{second}"), "pending").await;
    assert_eq!(gt.header("authorization"), Some("token gitea_token"));
    assert_eq!(gt.json()["context"], "gitfleet/web");
    on_path(format!("/gt/repos/acme/shop/statuses/{second}"), "success").await;

    let listed = format!("{:?}", notifiers(&hub).await);
    for token in ["ghp_token", "glpat_token", "gitea_token"] {
        assert!(!listed.contains(token), "{listed}");
    }
    hub.shutdown().await;
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A freeze's start: an event that needs no spoke.
async fn freeze(hub: &HubHandle, name: &str) {
    hub.engine()
        .create_freeze(
            gitfleet_hub::fleet::freeze::FreezeRequest {
                name: name.into(),
                until: now_unix() + 3600,
                reason: "release night".into(),
                ..Default::default()
            },
            "admin",
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_failing_receiver_is_retried_and_the_delivery_arrives_once_with_one_key() {
    let (_tmp, data) = data_dir();
    let receiver = Receiver::start().await;
    receiver.answer(&[500, 503]);
    let hub = start_hub(&data).await;
    apply(
        &hub,
        vec![notifier(
            "ops",
            serde_json::json!({"webhook": {"url": receiver.url("/hook")}, "events": ["FreezeStarted"]}),
        )],
    )
    .await
    .unwrap();
    freeze(&hub, "release").await;
    receiver.until_answered("FreezeStarted", 200).await;
    let received = receiver.received();
    assert_eq!(
        received.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [500, 503, 200],
        "retried until accepted, then never again"
    );
    let keys: Vec<&str> = received
        .iter()
        .map(|r| r.header(DELIVERY_HEADER).unwrap())
        .collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    assert_eq!(
        received[0].body, received[2].body,
        "the same body each time"
    );
    let info = eventually("the delivery recorded", || async {
        let info = notifier_info(&hub, "ops").await;
        (info.delivered == 1).then_some(info)
    })
    .await;
    assert_eq!((info.pending, info.given_up), (0, 0), "{info:?}");
    assert_eq!(info.last_delivery, keys[0]);
    assert_eq!(info.last_error, "", "a delivery clears the last error");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_freeze_tells_its_start_and_its_end_by_time() {
    let (_tmp, data) = data_dir();
    let receiver = Receiver::start().await;
    let hub = start_hub(&data).await;
    apply(
        &hub,
        vec![notifier(
            "ops",
            serde_json::json!({"webhook": {"url": receiver.url("/hook")}, "events": ["FreezeStarted", "FreezeEnded"]}),
        )],
    )
    .await
    .unwrap();
    hub.engine()
        .create_freeze(
            gitfleet_hub::fleet::freeze::FreezeRequest {
                name: "short".into(),
                apps: vec!["web".into()],
                until: now_unix() + 2,
                reason: "two seconds".into(),
                ..Default::default()
            },
            "admin",
        )
        .await
        .unwrap();
    let started = receiver.until_answered("FreezeStarted", 200).await;
    assert!(
        started.json()["summary"]
            .as_str()
            .unwrap()
            .starts_with("fleet: freeze started: freeze short of apps web until "),
        "{}",
        started.json()
    );
    assert_eq!(started.json()["event"]["by"], "admin");
    let ended = receiver.until_answered("FreezeEnded", 200).await;
    assert!(
        ended.json()["event"]["message"]
            .as_str()
            .unwrap()
            .starts_with("freeze short of apps web ended at "),
        "{}",
        ended.json()
    );
    // Told once: the freeze is marked, and a restart does not tell it again.
    assert!(hub.store().freeze("short").unwrap().end_recorded);
    hub.shutdown().await;
    let hub = start_hub(&data).await;
    assert_eq!(notifier_info(&hub, "ops").await.pending, 0);
    let ends = receiver
        .received()
        .iter()
        .filter(|r| r.header("x-gitfleet-event") == Some("FreezeEnded"))
        .count();
    assert_eq!(ends, 1);
    hub.shutdown().await;
}

#[tokio::test]
async fn a_refused_delivery_is_given_up_at_once_and_shows_why() {
    let (_tmp, data) = data_dir();
    let receiver = Receiver::start().await;
    receiver.answer(&[404]);
    let hub = start_hub(&data).await;
    apply(
        &hub,
        vec![notifier(
            "ops",
            serde_json::json!({"webhook": {"url": receiver.url("/gone")}, "events": ["FreezeStarted"]}),
        )],
    )
    .await
    .unwrap();
    freeze(&hub, "release").await;
    let info = eventually("the delivery given up", || async {
        let info = notifier_info(&hub, "ops").await;
        (info.given_up == 1).then_some(info)
    })
    .await;
    assert_eq!(info.pending, 0, "{info:?}");
    assert!(
        info.last_error.contains("given up after 1 attempt")
            && info.last_error.contains("HTTP 404: answered 404"),
        "{info:?}"
    );
    assert_eq!(receiver.received().len(), 1);
    hub.shutdown().await;
}

#[tokio::test]
async fn a_delivery_that_fails_while_the_hub_is_down_arrives_after_restart() {
    let (_tmp, data) = data_dir();
    delivered_after_restart(|| HubConfig::for_tests(&data)).await;
}

/// The same on etcd: the queue is the store's, whichever backend it is on.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn a_delivery_queued_on_etcd_arrives_after_restart() {
    let etcd = support::etcd::EtcdServer::start();
    let (_tmp, data) = data_dir();
    delivered_after_restart(|| {
        let mut options = gitfleet_hub::store::etcd::EtcdOptions::new(vec![etcd.endpoint()]);
        options.prefix = "/notify/".into();
        HubConfig {
            store: gitfleet_hub::runtime::StoreConfig::Etcd(options),
            ..HubConfig::for_tests(&data)
        }
    })
    .await;
}

/// `hub`, once it leads (at once on sled; once elected on etcd).
async fn leading(hub: HubHandle) -> HubHandle {
    eventually("the hub leads", || async {
        hub.leadership().borrow().leads().then_some(())
    })
    .await;
    hub
}

/// A receiver failing while a hub records an event and tries it, that hub stopped, the
/// receiver recovering, and a hub started on the same store: the delivery arrives, with the
/// key of the failed attempts.
async fn delivered_after_restart(config: impl Fn() -> HubConfig) {
    let receiver = Receiver::start().await;
    // Failing for longer than the first hub lives.
    receiver.answer(&[503; 1000]);
    let hub = leading(runtime::start(config()).await.unwrap()).await;
    apply(
        &hub,
        vec![notifier(
            "ops",
            serde_json::json!({"webhook": {"url": receiver.url("/hook")}, "events": ["FreezeStarted"]}),
        )],
    )
    .await
    .unwrap();
    freeze(&hub, "release").await;
    let info = eventually("a failed attempt shown", || async {
        let info = notifier_info(&hub, "ops").await;
        (info.pending == 1 && info.last_error.contains("HTTP 503")).then_some(info)
    })
    .await;
    assert!(info.last_error.contains("trying again in"), "{info:?}");
    hub.shutdown().await;
    let failed_key = receiver.received()[0]
        .header(DELIVERY_HEADER)
        .unwrap()
        .to_owned();

    // The receiver recovers while no hub runs; a hub on the same store delivers.
    receiver.script.lock().unwrap().answers.clear();
    let hub = leading(runtime::start(config()).await.unwrap()).await;
    let delivered = receiver.until_answered("FreezeStarted", 200).await;
    assert_eq!(delivered.header(DELIVERY_HEADER), Some(failed_key.as_str()));
    let info = eventually("the delivery recorded", || async {
        let info = notifier_info(&hub, "ops").await;
        (info.delivered == 1).then_some(info)
    })
    .await;
    assert_eq!(info.pending, 0, "{info:?}");
    hub.shutdown().await;
}

#[tokio::test]
async fn deleting_a_notifier_drops_its_deliveries() {
    let (_tmp, data) = data_dir();
    let receiver = Receiver::start().await;
    receiver.answer(&[503; 1000]);
    let hub = start_hub(&data).await;
    apply(
        &hub,
        vec![notifier(
            "ops",
            serde_json::json!({"webhook": {"url": receiver.url("/hook")}, "events": ["FreezeStarted"]}),
        )],
    )
    .await
    .unwrap();
    freeze(&hub, "release").await;
    eventually("a delivery waiting", || async {
        (notifier_info(&hub, "ops").await.pending == 1).then_some(())
    })
    .await;
    let deleted = admin(&hub)
        .await
        .delete(pb::DeleteRequest {
            kind: "Notifier".into(),
            name: "ops".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.deleted);
    assert!(notifiers(&hub).await.is_empty());
    assert!(hub.store().deliveries().is_empty());
    assert!(hub.store().notifier_statuses().is_empty());
    hub.shutdown().await;
}

/// Two replicas on etcd: a Target event a follower records (its spoke reports there) is queued
/// in the shared store with the report, and the leader, the only one that delivers, sends it
/// once.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn a_follower_queues_what_its_spokes_report_and_the_leader_delivers_it_once() {
    use gitfleet_hub::leadership::Leadership;

    let etcd = support::etcd::EtcdServer::start();
    let receiver = Receiver::start().await;
    let replica = |data: &std::path::Path| {
        let mut options = gitfleet_hub::store::etcd::EtcdOptions::new(vec![etcd.endpoint()]);
        options.prefix = "/notify-ha/".into();
        HubConfig {
            store: gitfleet_hub::runtime::StoreConfig::Etcd(options),
            ..HubConfig::for_tests(data)
        }
    };
    let (_ta, a_data) = data_dir();
    let a = leading(runtime::start(replica(&a_data)).await.unwrap()).await;
    // The second replica shares the first's PKI, as `gitfleet-hub init` and a Secret do.
    let (_tb, b_data) = data_dir();
    std::fs::create_dir_all(b_data.join("pki")).unwrap();
    for entry in std::fs::read_dir(a_data.join("pki")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), b_data.join("pki").join(entry.file_name())).unwrap();
    }
    let b = runtime::start(replica(&b_data)).await.unwrap();
    eventually("the second replica to follow", || async {
        matches!(*b.leadership().borrow(), Leadership::Follower { .. }).then_some(())
    })
    .await;

    let git = GitRepo::new();
    let first = first_commit(&git);
    let id = register(&a, "dev-1", &[("env", "dev")]).await;
    apply(
        &a,
        vec![
            repo_doc("platform", &git.url()),
            app_doc("web", "platform", "apps/web", "dev"),
            notifier(
                "ops",
                serde_json::json!({"webhook": {"url": receiver.url("/hook")}, "events": ["TargetDegraded"]}),
            ),
        ],
    )
    .await
    .unwrap();
    let mut spoke = FakeSpoke::connect(&b.grpc_url(), &id, SpokeView::default())
        .await
        .unwrap();
    spoke
        .until("web at the commit, through the follower", |v| {
            v.commit_of("web").as_deref() == Some(first.as_str())
        })
        .await;
    spoke
        .send(gitfleet_proto::v1::spoke_message::Msg::Status(
            pb::StatusReport {
                seq: 1,
                cluster: "dev-1".into(),
                target_id: "web".into(),
                revision: first.clone(),
                spec_generation: 1,
                sync: pb::SyncState::Synced as i32,
                health: pb::HealthState::Degraded as i32,
                message: "crashloop".into(),
                observed_at_unix: 1,
                ..Default::default()
            },
        ))
        .await;
    spoke.until("ack 1", |v| v.acked_seq == 1).await;

    let degraded = receiver.until_answered("TargetDegraded", 200).await;
    assert_eq!(degraded.json()["event"]["cluster"], "dev-1");
    assert_eq!(
        degraded.json()["event"]["message"],
        "degraded at ".to_owned() + &first[..7] + ": crashloop"
    );
    let info = eventually("the leader to record the delivery", || async {
        let info = notifier_info(&a, "ops").await;
        (info.delivered == 1).then_some(info)
    })
    .await;
    assert_eq!(info.pending, 0, "{info:?}");
    assert_eq!(
        receiver.received().len(),
        1,
        "delivered once, by the leader"
    );
    b.shutdown().await;
    a.shutdown().await;
}

/// A rollout replaced by a newer commit before it completed ends its commit's status at
/// `error` (that commit will not be rolled out), instead of leaving it pending for ever.
#[tokio::test]
async fn a_superseded_rollout_ends_its_commit_status() {
    let (tmp, data) = data_dir();
    let forge = Receiver::start().await;
    let creds = credentials(
        tmp.path(),
        &format!(
            "gh:\n  notifierSecret: ghp_token\n  urls: ['{}']\n",
            forge.url("/gh/repos/acme/")
        ),
    );
    let hub = start_with(&data, &creds).await;
    let git = GitRepo::new();
    let first = first_commit(&git);
    apply(
        &hub,
        vec![notifier(
            "github",
            serde_json::json!({
                "github": {"secretRef": "gh", "apiUrl": forge.url("/gh"), "repository": "acme/shop"},
                "events": ["RolloutStarted", "RolloutSuperseded"],
            }),
        )],
    )
    .await
    .unwrap();
    let (_id, mut spoke) = web_on_dev_1(&hub, &git, &first).await;
    spoke.report(1, "web", &first, "synced").await;
    let commit = |n: u32| {
        git.commit(
            &[("apps/web/cm.yaml", &format!("kind: ConfigMap # {n}\n"))],
            &format!("commit {n}"),
        )
    };
    let second = commit(2);
    hub.engine()
        .fetch_now(vec!["platform".into()])
        .await
        .unwrap();
    spoke
        .until("web at the second commit", |v| {
            v.commit_of("web").as_deref() == Some(second.as_str())
        })
        .await;
    // No report at the second commit: its rollout is still under way when the third comes.
    let third = commit(3);
    hub.engine()
        .fetch_now(vec!["platform".into()])
        .await
        .unwrap();
    let path = format!("/gh/repos/acme/shop/statuses/{second}");
    let ended = eventually("the second commit's status ended", || async {
        forge
            .received()
            .into_iter()
            .find(|r| r.path == path && r.json()["state"] == "error")
    })
    .await;
    let description = ended.json()["description"].as_str().unwrap().to_owned();
    assert!(
        description.starts_with(&format!("web: rollout #2 replaced ({})", &second[..7])),
        "{description}"
    );
    assert!(description.contains(&third[..7]), "{description}");
    assert_eq!(ended.header("authorization"), Some("Bearer ghp_token"));
    hub.shutdown().await;
}
