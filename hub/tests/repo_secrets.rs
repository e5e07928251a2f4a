//! Per-Repo credentials and webhook secrets: a Repo names entries of the hub's credentials
//! file; its webhooks must be signed with its own secret, and its credential reaches only the
//! spokes that deploy from it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use gitfleet_hub::fleetsync::FleetSource;
use gitfleet_hub::runtime::{self, HubConfig};
use gitfleet_proto::v1 as pb;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal HTTP/1.1 POST; returns the status code.
async fn post(addr: std::net::SocketAddr, path: &str, signature: &str, body: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Hub-Signature-256: {signature}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
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
        "repository": {"full_name": "org/repo", "clone_url": url}
    })
    .to_string()
}

fn repo(name: &str, url: &str, refs: serde_json::Value) -> pb::ResourceDocument {
    let mut spec = serde_json::json!({"url": url, "pollInterval": "1h"});
    spec.as_object_mut()
        .unwrap()
        .extend(refs.as_object().unwrap().clone());
    doc(serde_json::json!({
        "apiVersion": "gitfleet.dev/v1", "kind": "Repo",
        "metadata": {"name": name},
        "spec": spec
    }))
}

async fn commit_of(
    admin: &mut pb::admin_client::AdminClient<tonic::transport::Channel>,
    repo: &str,
) -> String {
    let docs = admin
        .get(pb::GetRequest {
            kind: "Repo".into(),
            name: repo.into(),
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

/// The credentials file an operator would write: entries the Repos below name.
fn credentials_file(dir: &std::path::Path) -> gitfleet_hub::credentials::Credentials {
    let hook_b = dir.join("hook-b");
    std::fs::write(&hook_b, "secret-b\n").unwrap();
    let file = dir.join("credentials.yaml");
    std::fs::write(
        &file,
        format!(
            "hook-a: {{ webhookSecret: secret-a }}
hook-b: {{ webhookSecretFile: {} }}
bot:
  https: {{ username: deploy-bot, password: bot-token }}
  urls: ['https://git.example.test/platform/']
github-bot:
  https: {{ username: github-bot, password: bot-password }}
  urls: ['https://github.com/acme/']
",
            hook_b.display()
        ),
    )
    .unwrap();
    gitfleet_hub::credentials::load(&file).unwrap()
}

#[tokio::test]
async fn each_repo_is_triggered_only_by_its_own_webhook_secret() {
    let (tmp, data) = data_dir();
    let mut config = HubConfig::for_tests(&data);
    config.repo_credentials = credentials_file(tmp.path());
    // No hub-wide --webhook-secret: the Repos' own secrets switch webhooks on.
    let hub = runtime::start(config).await.unwrap();
    let http = hub.http_addr().unwrap();
    let (a, b) = (GitRepo::new(), GitRepo::new());
    let a1 = a.commit(&[("apps/a/cm.yaml", "v: 1\n")], "one");
    let b1 = b.commit(&[("apps/b/cm.yaml", "v: 1\n")], "one");
    let mut admin = admin(&hub).await;
    admin
        .apply(pb::ApplyRequest {
            documents: vec![
                repo(
                    "a",
                    &a.url(),
                    serde_json::json!({"webhookSecretRef": "hook-a"}),
                ),
                repo(
                    "b",
                    &b.url(),
                    serde_json::json!({"webhookSecretRef": "hook-b"}),
                ),
            ],
            dry_run: false,
        })
        .await
        .unwrap();
    for (name, commit) in [("a", &a1), ("b", &b1)] {
        eventually("the first fetches", || {
            let mut admin = admin.clone();
            async move { (commit_of(&mut admin, name).await == *commit).then_some(()) }
        })
        .await;
    }

    let a2 = a.commit(&[("apps/a/cm.yaml", "v: 2\n")], "two");
    let body = push_payload(&a.url());
    // Signed with the other Repo's secret, or a guess: refused, nothing fetched.
    assert_eq!(
        post(
            http,
            "/webhooks/github",
            &github_sig(&body, "secret-b"),
            &body
        )
        .await,
        401
    );
    assert_eq!(
        post(http, "/webhooks/github", &github_sig(&body, "guess"), &body).await,
        401
    );
    // Not signed for any Repo that follows it: the same answer as for an unknown repository.
    let other = push_payload("https://example.com/someone/else.git");
    assert_eq!(
        post(
            http,
            "/webhooks/github",
            &github_sig(&other, "secret-a"),
            &other
        )
        .await,
        404
    );
    assert_eq!(
        commit_of(&mut admin, "a").await,
        a1,
        "no fetch from a refused webhook"
    );

    // Signed with its own secret: fetched at once (polling is an hour away).
    assert_eq!(
        post(
            http,
            "/webhooks/github",
            &github_sig(&body, "secret-a"),
            &body
        )
        .await,
        202
    );
    eventually("the webhook-triggered fetch", || {
        let mut admin = admin.clone();
        let a2 = a2.clone();
        async move { (commit_of(&mut admin, "a").await == a2).then_some(()) }
    })
    .await;
    // b's secret (read from a file) works for b.
    let b2 = b.commit(&[("apps/b/cm.yaml", "v: 2\n")], "two");
    let body = push_payload(&b.url());
    assert_eq!(
        post(
            http,
            "/webhooks/github",
            &github_sig(&body, "secret-b"),
            &body
        )
        .await,
        202
    );
    eventually("b's webhook-triggered fetch", || {
        let mut admin = admin.clone();
        let b2 = b2.clone();
        async move { (commit_of(&mut admin, "b").await == b2).then_some(()) }
    })
    .await;
    hub.shutdown().await;
}

#[tokio::test]
async fn refs_to_missing_entries_are_refused_and_credentials_follow_the_ref() {
    let (tmp, data) = data_dir();
    let mut config = HubConfig::for_tests(&data);
    config.repo_credentials = credentials_file(tmp.path());
    let hub = runtime::start(config).await.unwrap();
    let mut admin = admin(&hub).await;
    let git = GitRepo::new();
    git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");

    // Field-path errors, and nothing stored.
    for (refs, expected) in [
        (
            serde_json::json!({"credentialsRef": "nope"}),
            "repo \"platform\": spec.credentialsRef: the hub's credentials file (--repo-credentials) has no entry \"nope\" with https or ssh credentials",
        ),
        (
            serde_json::json!({"webhookSecretRef": "bot"}),
            "repo \"platform\": spec.webhookSecretRef: the hub's credentials file (--repo-credentials) has no entry \"bot\" with a webhookSecret",
        ),
    ] {
        let err = admin
            .apply(pb::ApplyRequest {
                documents: vec![repo("platform", &git.url(), refs)],
                dry_run: false,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains(expected), "{}", err.message());
    }
    let stored = admin
        .get(pb::GetRequest {
            kind: "Repo".into(),
            name: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .resources;
    assert!(stored.is_empty(), "{stored:?}");

    // The credential the ref names reaches the spoke that deploys from the Repo, with the
    // places it may go; `get` shows the ref, never the secret.
    let url = "https://git.example.test/platform/web.git";
    serve_as(&data, url, &git);
    let dev = register(&hub, "dev-1", &[("env", "dev")]).await;
    admin
        .apply(pb::ApplyRequest {
            documents: vec![
                repo(
                    "platform",
                    url,
                    serde_json::json!({"credentialsRef": "bot"}),
                ),
                app_doc("web", "platform", "apps/web", "dev"),
            ],
            dry_run: false,
        })
        .await
        .unwrap();
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &dev, SpokeView::default())
        .await
        .unwrap();
    spoke.until("web", |v| v.targets.contains_key("web")).await;
    let creds = &spoke.view.credentials;
    assert_eq!(creds.len(), 1, "{creds:?}");
    assert_eq!(creds[0].repo_url, url);
    assert_eq!(creds[0].urls, ["https://git.example.test/platform/"]);
    match &creds[0].kind {
        Some(pb::repo_credential::Kind::Https(h)) => {
            assert_eq!(
                (h.username.as_str(), h.password.as_str()),
                ("deploy-bot", "bot-token")
            );
        }
        other => panic!("unexpected credential {other:?}"),
    }
    let shown = admin
        .get(pb::GetRequest {
            kind: "Repo".into(),
            name: "platform".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .resources;
    assert!(
        shown[0].json.contains("\"credentialsRef\":\"bot\""),
        "{}",
        shown[0].json
    );
    assert!(!shown[0].json.contains("bot-token"), "{}", shown[0].json);
    hub.shutdown().await;
}

fn fleet_repo_doc(name: &str, url: &str, credentials_ref: &str) -> String {
    format!(
        "apiVersion: gitfleet.dev/v1\nkind: Repo\nmetadata: {{ name: {name} }}\nspec: {{ url: '{url}', credentialsRef: {credentials_ref}, pollInterval: 1s }}\n"
    )
}

/// Issue 16: a Repo that named an organisation's credential, with a URL of its own choosing,
/// had the hub answer that server's 401 with the credential, in clear text over plain HTTP.
/// Now such a Repo is refused, by hand and through the fleet path, with the Repo, the field and
/// the URL; the server never sees a password, and nothing else changes.
#[tokio::test]
async fn a_credential_goes_only_where_its_entry_says() {
    let prompt = PasswordPrompt::default();
    let evil = format!("http://{}/x.git", prompt.start().await);
    let (tmp, data) = data_dir();
    let mut config = HubConfig::for_tests(&data);
    config.repo_credentials = credentials_file(tmp.path());
    config.fleet = Some(FleetSource {
        repo: "fleet".into(),
        path: "fleet".into(),
    });
    let hub = runtime::start(config).await.unwrap();
    let mut admin = admin(&hub).await;

    let refused = |name: &str, url: &str, what: &str| {
        format!(
            "repo \"{name}\": spec.credentialsRef: {what} may not be sent to \"{url}\" (spec.url): its urls are https://github.com/acme/"
        )
    };
    let lookalike = "https://github.com/acmevil/x.git";
    for (name, url, refs, expected) in [
        (
            "evil",
            evil.as_str(),
            serde_json::json!({"credentialsRef": "github-bot"}),
            refused("evil", &evil, "the credentials entry \"github-bot\""),
        ),
        (
            "evil",
            lookalike,
            serde_json::json!({"credentialsRef": "github-bot"}),
            refused("evil", lookalike, "the credentials entry \"github-bot\""),
        ),
        // Named like the entry and naming none: bound all the same.
        (
            "github-bot",
            evil.as_str(),
            serde_json::json!({}),
            refused(
                "github-bot",
                &evil,
                "not set, so the credentials entry named like the Repo applies, and it",
            ),
        ),
    ] {
        let err = admin
            .apply(pb::ApplyRequest {
                documents: vec![repo(name, url, refs)],
                dry_run: false,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        assert!(err.message().contains(&expected), "{}", err.message());
    }

    // Through the fleet path: the commit is refused on the fleet Repo's status, with the same
    // reason, and none of it is applied.
    let fleet = GitRepo::new();
    fleet.commit(
        &[
            (
                "fleet/evil.yaml",
                &fleet_repo_doc("evil", &evil, "github-bot"),
            ),
            (
                "fleet/other.yaml",
                &fleet_repo_doc("other", "https://github.com/acme/other.git", "github-bot"),
            ),
        ],
        "borrow the org's credential",
    );
    admin
        .apply(pb::ApplyRequest {
            documents: vec![repo_doc("fleet", &fleet.url())],
            dry_run: false,
        })
        .await
        .unwrap();
    let expected = refused("evil", &evil, "the credentials entry \"github-bot\"");
    let fleet_error = eventually("the fleet sync to fail", || {
        let mut admin = admin.clone();
        async move {
            let docs = admin
                .get(pb::GetRequest {
                    kind: "Repo".into(),
                    name: "fleet".into(),
                })
                .await
                .ok()?
                .into_inner()
                .resources;
            let v: serde_json::Value = serde_json::from_str(&docs.first()?.json).ok()?;
            let error = v["status"]["fleet"]["error"].as_str()?.to_owned();
            (!error.is_empty()).then_some(error)
        }
    })
    .await;
    assert!(fleet_error.contains(&expected), "{fleet_error}");
    let repos: Vec<String> = admin
        .get(pb::GetRequest {
            kind: "Repo".into(),
            name: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .resources
        .iter()
        .map(|d| {
            serde_json::from_str::<serde_json::Value>(&d.json).unwrap()["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(repos, ["fleet"]);
    assert_eq!(
        prompt.authorized(),
        Vec::<String>::new(),
        "no password sent"
    );
    hub.shutdown().await;
}
