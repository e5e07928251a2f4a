//! Push webhooks over real HTTP: a signed push fetches at once; anything else fetches nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::http;
use crate::support;

use gitfleet_hub::runtime::{self, HubConfig, HubHandle};
use gitfleet_proto::v1 as pb;
use http::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "webhook-secret";

async fn repo_commit(
    admin: &mut gitfleet_proto::v1::admin_client::AdminClient<tonic::transport::Channel>,
) -> String {
    let docs = admin
        .get(pb::GetRequest {
            kind: "Repo".into(),
            name: "platform".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .resources;
    let v: serde_json::Value = serde_json::from_str(&docs[0].json).unwrap();
    v["status"]["commit"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_signed_push_fetches_at_once_and_bad_ones_fetch_nothing() {
    let (_tmp, data) = data_dir();
    let mut config = HubConfig::for_tests(&data);
    config.webhook_secret = Some(SECRET.into());
    let hub = runtime::start(config).await.unwrap();
    let http = hub.http_addr().unwrap();
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let mut admin = admin(&hub).await;
    admin
        .apply(pb::ApplyRequest {
            documents: vec![doc(serde_json::json!({
                "apiVersion": "gitfleet.dev/v1", "kind": "Repo",
                "metadata": {"name": "platform"},
                // Polling is far away: only the webhook can bring the next commit soon.
                "spec": {"url": git.url(), "pollInterval": "1h"}
            }))],
            dry_run: false,
        })
        .await
        .unwrap();
    eventually("the first fetch", || {
        let mut admin = admin.clone();
        let c1 = c1.clone();
        async move { (repo_commit(&mut admin).await == c1).then_some(()) }
    })
    .await;

    let c2 = git.commit(&[("apps/web/cm.yaml", "v: 2\n")], "two");
    let body = push_payload(&git.url());

    // Refused deliveries: nothing fetched.
    let bad = github_sig(&body, "wrong");
    assert_eq!(
        post(
            http,
            "/webhooks/github",
            &[("X-Hub-Signature-256", bad)],
            &body
        )
        .await,
        401
    );
    assert_eq!(post(http, "/webhooks/github", &[], &body).await, 401);
    let junk = "{not json";
    assert_eq!(
        post(
            http,
            "/webhooks/github",
            &[("X-Hub-Signature-256", github_sig(junk, SECRET))],
            junk
        )
        .await,
        400
    );
    let other = push_payload("https://example.com/someone/else.git");
    assert_eq!(
        post(
            http,
            "/webhooks/github",
            &[("X-Hub-Signature-256", github_sig(&other, SECRET))],
            &other
        )
        .await,
        404
    );
    assert_eq!(post(http, "/webhooks/svn", &[], &body).await, 404);
    assert_eq!(
        post(
            http,
            "/webhooks/gitlab",
            &[("X-Gitlab-Token", "guess".to_owned())],
            &body
        )
        .await,
        401
    );
    assert_eq!(
        repo_commit(&mut admin).await,
        c1,
        "no fetch from a refused webhook"
    );

    // A genuine push: fetched right away.
    assert_eq!(
        post(
            http,
            "/webhooks/github",
            &[("X-Hub-Signature-256", github_sig(&body, SECRET))],
            &body
        )
        .await,
        202
    );
    eventually("the webhook-triggered fetch", || {
        let mut admin = admin.clone();
        let c2 = c2.clone();
        async move { (repo_commit(&mut admin).await == c2).then_some(()) }
    })
    .await;
    hub.shutdown().await;
}

#[tokio::test]
async fn webhooks_are_off_without_a_secret_and_health_answers() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let http = hub.http_addr().unwrap();
    assert_eq!(post(http, "/webhooks/github", &[], "{}").await, 404);
    let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    stream.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    hub.shutdown().await;
}

/// A hub whose Repo `platform` (polled hourly) has been fetched once, so that nothing reads
/// the store by itself any more.
async fn quiet_hub(config: HubConfig, repo_refs: serde_json::Value) -> (HubHandle, GitRepo) {
    let hub = runtime::start(config).await.unwrap();
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let mut spec = serde_json::json!({"url": git.url(), "pollInterval": "1h"});
    spec.as_object_mut()
        .unwrap()
        .extend(repo_refs.as_object().unwrap().clone());
    let mut admin = admin(&hub).await;
    admin
        .apply(pb::ApplyRequest {
            documents: vec![doc(serde_json::json!({
                "apiVersion": "gitfleet.dev/v1", "kind": "Repo",
                "metadata": {"name": "platform"},
                "spec": spec
            }))],
            dry_run: false,
        })
        .await
        .unwrap();
    eventually("the first fetch", || {
        let mut admin = admin.clone();
        let c1 = c1.clone();
        async move { (repo_commit(&mut admin).await == c1).then_some(()) }
    })
    .await;
    (hub, git)
}

#[tokio::test]
async fn a_delivery_is_verified_before_the_hub_reads_any_repo() {
    // With the hub-wide secret only, and with a Repo's own secret (the payload is then parsed
    // for the repository, whose Repos are found in memory).
    let (_tmp, data) = data_dir();
    let mut hub_wide = HubConfig::for_tests(&data);
    hub_wide.webhook_secret = Some(SECRET.into());
    let (tmp2, data2) = data_dir();
    let mut per_repo = HubConfig::for_tests(&data2);
    let file = tmp2.path().join("credentials.yaml");
    std::fs::write(&file, "hook: { webhookSecret: repo-secret }\n").unwrap();
    per_repo.repo_credentials = gitfleet_hub::credentials::load(&file).unwrap();
    for (config, refs, secret) in [
        (hub_wide, serde_json::json!({}), SECRET),
        (
            per_repo,
            serde_json::json!({"webhookSecretRef": "hook"}),
            "repo-secret",
        ),
    ] {
        let (hub, git) = quiet_hub(config, refs).await;
        let http = hub.http_addr().unwrap();
        let store = hub.store();
        let scans = store.resource_scans();
        let body = push_payload(&git.url());
        for headers in [
            vec![("X-Hub-Signature-256", github_sig(&body, "a guess"))],
            vec![],
        ] {
            assert_eq!(post(http, "/webhooks/github", &headers, &body).await, 401);
        }
        assert_eq!(
            store.resource_scans(),
            scans,
            "an unauthenticated delivery made the hub read every stored resource"
        );
        assert_eq!(
            post(
                http,
                "/webhooks/github",
                &[("X-Hub-Signature-256", github_sig(&body, secret))],
                &body
            )
            .await,
            202,
            "a genuine delivery still fetches"
        );
        hub.shutdown().await;
    }
}

#[tokio::test]
async fn an_oversized_webhook_body_is_refused_with_413() {
    let (_tmp, data) = data_dir();
    let mut config = HubConfig::for_tests(&data);
    config.webhook_secret = Some(SECRET.into());
    config.webhook_max_body_bytes = 4096;
    let hub = runtime::start(config).await.unwrap();
    let http = hub.http_addr().unwrap();
    let padding = "x".repeat(8192);
    let body = serde_json::json!({
        "repository": {"clone_url": "https://example.com/org/repo.git"},
        "padding": padding,
    })
    .to_string();
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Hub-Signature-256: {}\r\nConnection: close\r\n\r\n",
        body.len(),
        github_sig(&body, SECRET)
    );
    let (code, message) = request(http, &head, body.as_bytes()).await;
    assert_eq!(code, 413, "{message}");
    assert!(
        message.contains("the limit is 4096 bytes, --webhook-max-body-bytes"),
        "the refusal names the limit: {message}"
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn health_probes_never_flush_the_store() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let http = hub.http_addr().unwrap();
    let flushes = hub.store().flush_count();
    for _ in 0..20 {
        for path in ["/healthz", "/readyz"] {
            let (code, body) = get(http, path).await;
            assert_eq!((code, body.as_str()), (200, "ok\n"), "{path}");
        }
    }
    assert_eq!(
        hub.store().flush_count(),
        flushes,
        "an unauthenticated probe made the hub flush its store"
    );
    hub.shutdown().await;
}

/// `/metrics` is as unauthenticated as the probes: a scrape read every stored resource once per
/// App (Apps × resources per scrape). It reads them once.
#[tokio::test]
async fn a_metrics_scrape_reads_the_store_once_whatever_the_number_of_apps() {
    let (_tmp, data) = data_dir();
    let (hub, _git) = quiet_hub(HubConfig::for_tests(&data), serde_json::json!({})).await;
    let mut admin = admin(&hub).await;
    let apps: Vec<String> = (0..12).map(|i| format!("web-{i}")).collect();
    admin
        .apply(pb::ApplyRequest {
            documents: apps
                .iter()
                .map(|a| app_doc(a, "platform", "apps/web", "prod"))
                .collect(),
            dry_run: false,
        })
        .await
        .unwrap();
    let engine = hub.engine();
    eventually("every App's rollout", || {
        let ready = apps.iter().all(|a| engine.rollout_status(a).is_ok());
        async move { ready.then_some(()) }
    })
    .await;
    let http = hub.http_addr().unwrap();
    let scans = hub.store().resource_scans();
    let (code, body) = get(http, "/metrics").await;
    assert_eq!(code, 200);
    assert!(body.contains("web-11"), "every App is in the scrape");
    let read = hub.store().resource_scans() - scans;
    assert!(
        read <= 2,
        "one scrape read every stored resource {read} times for {} Apps",
        apps.len()
    );
    // Anyone may scrape as often as they like: scrapes right after a read share it (at
    // 10,000 clusters × 50 Apps a read of the fleet takes seconds), however many come at once.
    let scans = hub.store().resource_scans();
    let burst: Vec<_> = (0..8).map(|_| get(http, "/metrics")).collect();
    for (code, body) in futures::future::join_all(burst).await {
        assert_eq!(code, 200);
        assert!(body.contains("web-11"), "the shared read has every App");
        assert!(
            body.contains("gitfleet_metrics_fleet_reads_total 1"),
            "one fleet read for all of them:\n{body}"
        );
    }
    assert_eq!(
        hub.store().resource_scans() - scans,
        0,
        "a burst of scrapes read the store again"
    );
    hub.shutdown().await;
}

/// Two replicas on one etcd prefix: a push webhook that reaches the follower is fetched by the
/// leader (which alone follows the Repos), with polling an hour away.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn a_push_to_a_follower_is_fetched_by_the_leader() {
    use gitfleet_hub::leadership::Leadership;
    use gitfleet_hub::runtime::StoreConfig;
    use gitfleet_hub::store::etcd::EtcdOptions;

    let etcd = support::etcd::EtcdServer::start();
    let replica = |data: &std::path::Path| {
        let mut options = EtcdOptions::new(vec![etcd.endpoint()]);
        options.prefix = "/webhooks/".into();
        options.hold_ttl = std::time::Duration::from_secs(3);
        HubConfig {
            store: StoreConfig::Etcd(options),
            webhook_secret: Some(SECRET.into()),
            ..HubConfig::for_tests(data)
        }
    };
    let until_part = |hub: &HubHandle, wanted: fn(&Leadership) -> bool| {
        let mut part = hub.leadership();
        async move {
            tokio::time::timeout(DEADLINE, part.wait_for(wanted))
                .await
                .expect("an election")
                .unwrap();
        }
    };
    let (_ta, a_data) = data_dir();
    let leader = runtime::start(replica(&a_data)).await.unwrap();
    until_part(&leader, Leadership::leads).await;
    // The second replica's data directory holds the first one's PKI, as in a real install.
    let (_tb, b_data) = data_dir();
    std::fs::create_dir_all(b_data.join("pki")).unwrap();
    for entry in std::fs::read_dir(a_data.join("pki")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), b_data.join("pki").join(entry.file_name())).unwrap();
    }
    let follower = runtime::start(replica(&b_data)).await.unwrap();
    until_part(&follower, |p| {
        matches!(
            p,
            Leadership::Follower {
                leader_url: Some(_)
            }
        )
    })
    .await;

    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let mut admin = admin(&leader).await;
    admin
        .apply(pb::ApplyRequest {
            documents: vec![doc(serde_json::json!({
                "apiVersion": "gitfleet.dev/v1", "kind": "Repo",
                "metadata": {"name": "platform"},
                // Polling is far away: only the webhook can bring the next commit soon.
                "spec": {"url": git.url(), "pollInterval": "1h"}
            }))],
            dry_run: false,
        })
        .await
        .unwrap();
    eventually("the first fetch", || {
        let mut admin = admin.clone();
        let c1 = c1.clone();
        async move { (repo_commit(&mut admin).await == c1).then_some(()) }
    })
    .await;
    // The follower knows the Repo (it answers webhooks for it) once the leader's write reached
    // it: until then a push is refused as one no Repo follows.
    let c2 = git.commit(&[("apps/web/cm.yaml", "v: 2\n")], "two");
    let body = push_payload(&git.url());
    let signed = [("X-Hub-Signature-256", github_sig(&body, SECRET))];
    let http = follower.http_addr().unwrap();
    eventually("the follower to accept the push", || async {
        (post(http, "/webhooks/github", &signed, &body).await == 202).then_some(())
    })
    .await;
    eventually("the leader to fetch what the follower was told", || {
        let mut admin = admin.clone();
        let c2 = c2.clone();
        async move { (repo_commit(&mut admin).await == c2).then_some(()) }
    })
    .await;
    follower.shutdown().await;
    leader.shutdown().await;
}
