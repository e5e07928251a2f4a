//! Push webhooks over real HTTP: a signed push fetches at once; anything else fetches nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use gitfleet_hub::runtime::{self, HubConfig};
use gitfleet_proto::v1 as pb;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "webhook-secret";

/// A minimal HTTP/1.1 POST; returns the status code.
async fn post(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    stream.read_to_string(&mut resp).await.unwrap();
    resp.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn github_sig(body: &str, secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn push_payload(url: &str) -> String {
    serde_json::json!({
        "ref": "refs/heads/main",
        "repository": {"full_name": "org/repo", "clone_url": url, "html_url": url}
    })
    .to_string()
}

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
