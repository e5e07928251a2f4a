//! The hub end to end with a fake spoke over real mutual TLS: registration, desired state from
//! Git, status reports, refusals, and a restart from the same data directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use gitfleet_hub::engine::TokenSpec;
use gitfleet_hub::runtime::{self, HubConfig};
use gitfleet_proto::v1 as pb;
use gitfleet_proto::v1::admin_client::AdminClient;
use gitfleet_proto::v1::link_client::LinkClient;
use gitfleet_proto::v1::spoke_message::Msg as In;
use support::*;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

async fn status_of(
    admin: &mut AdminClient<tonic::transport::Channel>,
    app: &str,
) -> Vec<pb::TargetStatus> {
    let mut targets = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .status(pb::StatusRequest {
                app: app.into(),
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        targets.extend(page.targets);
        if page.next_page_token.is_empty() {
            return targets;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn a_commit_flows_to_the_spoke_and_its_report_back() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let git = GitRepo::new();
    let c1 = git.commit(
        &[
            ("apps/web/cm.yaml", "v: 1\n"),
            ("apps/api/cm.yaml", "v: 1\n"),
        ],
        "one",
    );

    let id = register(&hub, "dev-1", &[("env", "dev")]).await;
    assert_eq!(id.cluster, "dev-1");
    assert_eq!(id.ca_pem, hub.ca_pem());
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default())
        .await
        .unwrap();
    // A new spoke gets a snapshot at once, even an empty one.
    spoke.until("first snapshot", |v| v.snapshots == 1).await;
    assert!(spoke.view.targets.is_empty());

    let mut admin = admin(&hub).await;
    let applied = admin
        .apply(pb::ApplyRequest {
            documents: vec![
                repo_doc("platform", &git.url()),
                app_doc("web", "platform", "apps/web", "dev"),
                app_doc("api", "platform", "apps/api", "dev"),
                app_doc("prod-only", "platform", "apps/web", "prod"),
            ],
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    let actions: Vec<_> = applied.outcomes.iter().map(|o| o.action.as_str()).collect();
    assert_eq!(actions, ["created"; 4]);

    spoke
        .until("web and api at c1", |v| {
            v.commit_of("web").as_deref() == Some(c1.as_str())
                && v.commit_of("api").as_deref() == Some(c1.as_str())
        })
        .await;
    assert!(!spoke.view.targets.contains_key("prod-only"));
    let web = &spoke.view.targets["web"];
    let source = web.source.as_ref().unwrap();
    assert_eq!(source.repo_url, git.url());
    assert_eq!(source.path, "apps/web");
    assert_eq!(source.git_ref, "refs/heads/main");
    assert_eq!(web.namespace, "web");

    // Only the App whose files changed moves.
    let c2 = git.commit(&[("apps/web/cm.yaml", "v: 2\n")], "two");
    spoke
        .until("web at c2", |v| {
            v.commit_of("web").as_deref() == Some(c2.as_str())
        })
        .await;
    assert_eq!(spoke.view.commit_of("api").as_deref(), Some(c1.as_str()));
    assert!(spoke.view.deltas >= 1, "changes arrive as deltas");

    // A report is acked once stored and shows in Admin.Status.
    spoke.report(1, "web", &c2, "all good").await;
    spoke.until("ack 1", |v| v.acked_seq == 1).await;
    let targets = status_of(&mut admin, "web").await;
    assert_eq!(targets.len(), 1);
    let t = &targets[0];
    assert_eq!(
        (t.cluster.as_str(), t.desired_revision.as_str()),
        ("dev-1", c2.as_str())
    );
    assert_eq!(t.applied_revision, c2);
    assert_eq!(t.sync, pb::SyncState::Synced as i32);
    assert_eq!(t.health, pb::HealthState::Healthy as i32);
    assert_eq!(t.message, "all good");
    assert_eq!(t.resources.len(), 1);
    assert!(t.cluster_connected);

    // A duplicate is acked again but not stored.
    spoke.report(1, "web", &c2, "duplicate").await;
    spoke.report(2, "api", &c1, "api good").await;
    spoke.until("ack 2", |v| v.acked_seq == 2).await;
    assert_eq!(status_of(&mut admin, "web").await[0].message, "all good");
    assert_eq!(status_of(&mut admin, "api").await[0].message, "api good");

    // The Repo shows what the hub fetched.
    let repos = admin
        .get(pb::GetRequest {
            kind: "Repo".into(),
            name: "platform".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .resources;
    let repo: serde_json::Value = serde_json::from_str(&repos[0].json).unwrap();
    assert_eq!(repo["status"]["commit"], c2.as_str());
    assert_eq!(repo["status"]["error"], "");
    let apps = admin
        .get(pb::GetRequest {
            kind: "App".into(),
            name: "api".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .resources;
    let api: serde_json::Value = serde_json::from_str(&apps[0].json).unwrap();
    assert_eq!(api["status"]["revision"], c1.as_str());
    assert_eq!(api["kind"], "App");

    let clusters = admin
        .list_clusters(pb::ListClustersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .clusters;
    assert_eq!(clusters.len(), 1);
    assert_eq!(clusters[0].name, "dev-1");
    assert_eq!(
        clusters[0].labels.get("env").map(String::as_str),
        Some("dev")
    );
    assert!(clusters[0].connected);
    assert!(clusters[0].certificate_expires_unix > 0);

    // A cluster registering later gets its Targets in its first snapshot; a ClusterGroup places
    // an App; deleting an App removes its Target from every spoke.
    let late = register(&hub, "dev-2", &[("env", "dev")]).await;
    let mut late = FakeSpoke::connect(&hub.grpc_url(), &late, SpokeView::default())
        .await
        .unwrap();
    late.until("its snapshot", |v| v.snapshots == 1).await;
    assert_eq!(late.view.commit_of("web").as_deref(), Some(c2.as_str()));
    admin
        .apply(pb::ApplyRequest {
            documents: vec![
                doc(serde_json::json!({
                    "apiVersion": "gitfleet.dev/v1", "kind": "ClusterGroup",
                    "metadata": {"name": "devs"},
                    "spec": {"selector": {"matchLabels": {"env": "dev"}}}
                })),
                doc(serde_json::json!({
                    "apiVersion": "gitfleet.dev/v1", "kind": "App",
                    "metadata": {"name": "grouped"},
                    "spec": {"repo": "platform", "path": "apps/api", "namespace": "grouped",
                             "targets": [{"clusterGroup": "devs"}]}
                })),
            ],
            dry_run: false,
        })
        .await
        .unwrap();
    late.until("the grouped App", |v| v.targets.contains_key("grouped"))
        .await;
    admin
        .delete(pb::DeleteRequest {
            kind: "App".into(),
            name: "api".into(),
        })
        .await
        .unwrap();
    late.until("api removed", |v| !v.targets.contains_key("api"))
        .await;
    spoke
        .until("api removed", |v| !v.targets.contains_key("api"))
        .await;
    assert!(status_of(&mut admin, "api").await.is_empty());

    // A report naming another cluster is refused and ends the stream.
    spoke.report_as("prod-1", 3, "web", &c2, "sneaky").await;
    let status = spoke.until_end().await.expect("refused with a status");
    assert_eq!(status.code(), Code::PermissionDenied, "{status}");
    assert!(status.message().contains("prod-1"), "{status}");

    hub.shutdown().await;
}

#[tokio::test]
async fn apply_is_all_or_nothing_and_reports_outcomes() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let mut admin = admin(&hub).await;
    let git = GitRepo::new();
    git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");

    let bad = admin
        .apply(pb::ApplyRequest {
            documents: vec![
                repo_doc("platform", &git.url()),
                doc(serde_json::json!({"apiVersion": "gitfleet.dev/v1", "kind": "App", "metadata": {"name": "web"}, "spec": {"repo": "platform"}})),
            ],
            dry_run: false,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("web"), "{bad}");
    let stored = admin
        .get(pb::GetRequest::default())
        .await
        .unwrap()
        .into_inner()
        .resources;
    assert!(stored.is_empty(), "nothing stored from an invalid batch");

    let docs = vec![
        repo_doc("platform", &git.url()),
        app_doc("web", "platform", "apps/web", "dev"),
    ];
    let dry = admin
        .apply(pb::ApplyRequest {
            documents: docs.clone(),
            dry_run: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(dry.outcomes.iter().all(|o| o.action == "created"));
    assert!(
        admin
            .get(pb::GetRequest::default())
            .await
            .unwrap()
            .into_inner()
            .resources
            .is_empty()
    );

    let first = admin
        .apply(pb::ApplyRequest {
            documents: docs.clone(),
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(first.outcomes.iter().all(|o| o.action == "created"));
    let again = admin
        .apply(pb::ApplyRequest {
            documents: docs,
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.outcomes.iter().all(|o| o.action == "unchanged"));
    let changed = admin
        .apply(pb::ApplyRequest {
            documents: vec![app_doc("web", "platform", "apps/web", "prod")],
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changed.outcomes[0].action, "configured");

    // A broken Repo records its error and leaves the others alone.
    admin
        .apply(pb::ApplyRequest {
            documents: vec![repo_doc("broken", "file:///does/not/exist")],
            dry_run: false,
        })
        .await
        .unwrap();
    let error = eventually("the broken Repo's error", || {
        let mut admin = admin.clone();
        async move {
            let docs = admin
                .get(pb::GetRequest {
                    kind: "Repo".into(),
                    name: "broken".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .resources;
            let v: serde_json::Value = serde_json::from_str(&docs[0].json).unwrap();
            let e = v["status"]["error"].as_str().unwrap_or_default().to_owned();
            (!e.is_empty()).then_some(e)
        }
    })
    .await;
    assert!(error.contains("/does/not/exist"), "{error}");
    let ok = admin
        .get(pb::GetRequest {
            kind: "Repo".into(),
            name: "platform".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .resources;
    let v: serde_json::Value = serde_json::from_str(&ok[0].json).unwrap();
    assert_eq!(v["status"]["error"], "");

    let deleted = admin
        .delete(pb::DeleteRequest {
            kind: "App".into(),
            name: "web".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.deleted);
    let unknown_kind = admin
        .delete(pb::DeleteRequest {
            kind: "Pod".into(),
            name: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown_kind.code(), Code::InvalidArgument);
    hub.shutdown().await;
}

/// The TLS layer refuses the certificate: no call reaches a handler (which would answer
/// PERMISSION_DENIED or UNAUTHENTICATED).
async fn assert_refused_at_handshake(
    hub: &gitfleet_hub::runtime::HubHandle,
    cert: &str,
    key: &str,
) {
    let Ok(ch) = try_channel(&hub.grpc_url(), hub.ca_pem(), Some((cert, key))).await else {
        return;
    };
    // With TLS 1.3 the client learns of the refusal on its first call.
    let err = LinkClient::new(ch)
        .session(ReceiverStream::new(tokio::sync::mpsc::channel(1).1))
        .await
        .expect_err("the certificate was accepted");
    assert!(
        matches!(err.code(), Code::Unknown | Code::Unavailable)
            && err.message().contains("transport"),
        "refused by a handler rather than the TLS layer: {err}"
    );
}

#[tokio::test]
async fn callers_without_the_right_certificate_are_refused() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let id = register(&hub, "dev-1", &[]).await;

    // No client certificate: Link and Admin refuse.
    let anonymous = channel(&hub.grpc_url(), hub.ca_pem(), None).await;
    let err = AdminClient::new(anonymous.clone())
        .list_clusters(pb::ListClustersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::SpokeMessage {
        msg: Some(In::Hello(pb::Hello {
            cluster: "dev-1".into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let err = LinkClient::new(anonymous)
        .session(ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");

    // A spoke certificate cannot call Admin.
    let spoke_ch = channel(
        &hub.grpc_url(),
        hub.ca_pem(),
        Some((&id.cert_pem, &id.key_pem)),
    )
    .await;
    let err = AdminClient::new(spoke_ch)
        .create_token(pb::CreateTokenRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");

    // Hello naming another cluster.
    let err = FakeSpoke::connect_as(&hub.grpc_url(), &id, SpokeView::default(), "prod-1")
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");

    // A certificate from a foreign CA does not get through the handshake.
    let (_t2, other_data) = data_dir();
    let other = start_hub(&other_data).await;
    let foreign = register(&other, "dev-1", &[]).await;
    assert_refused_at_handshake(&hub, &foreign.cert_pem, &foreign.key_pem).await;

    // A certificate from the hub's own CA that has expired is refused too.
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(data.join("pki/ca.key")).unwrap())
            .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(hub.ca_pem(), ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://gitfleet/cluster/dev-1".try_into().unwrap(),
    )];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired = params.signed_by(&key, &issuer).unwrap().pem();
    assert_refused_at_handshake(&hub, &expired, &key.serialize_pem()).await;
    other.shutdown().await;
    hub.shutdown().await;
}

#[tokio::test]
async fn bad_tokens_and_bad_requests_do_not_register() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;

    let err = try_register(&hub, "dev-1", "gft_unknown", &[])
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(err.message().contains("unknown"), "{err}");

    let once = hub
        .create_token(Duration::from_secs(600), BTreeMap::new(), 1)
        .await
        .unwrap();
    let err = try_register(&hub, "Not_A_Name", &once, &[])
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    // A refused request does not spend the token.
    try_register(&hub, "dev-1", &once, &[]).await.unwrap();
    let err = try_register(&hub, "dev-2", &once, &[]).await.err().unwrap();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.message().contains("maximum"), "{err}");

    // A registered name is taken: another key cannot claim it, a retry with the same key can.
    let many = hub
        .create_token(Duration::from_secs(600), BTreeMap::new(), 0)
        .await
        .unwrap();
    let err = try_register(&hub, "dev-1", &many, &[]).await.err().unwrap();
    assert_eq!(err.code(), Code::AlreadyExists, "{err}");
    let key = rcgen::KeyPair::generate().unwrap();
    try_register_with_key(&hub, "edge-1", &many, &[], &key)
        .await
        .unwrap();
    try_register_with_key(&hub, "edge-1", &many, &[], &key)
        .await
        .unwrap();

    // A revoked token is refused.
    let revocable = hub
        .engine()
        .create_token(TokenSpec {
            description: "to revoke".into(),
            ..TokenSpec::new(Duration::from_secs(600), BTreeMap::new())
        })
        .await
        .unwrap();
    assert!(hub.engine().revoke_token(&revocable.id).await.unwrap());
    let err = try_register(&hub, "dev-9", &revocable.token, &[])
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.message().contains("revoked"), "{err}");

    // A token past its TTL is refused.
    let short = hub
        .create_token(Duration::from_secs(1), BTreeMap::new(), 0)
        .await
        .unwrap();
    let attempt = std::sync::atomic::AtomicUsize::new(0);
    let err = eventually("the token to expire", || {
        let short = short.clone();
        // A new name each time: a name already registered comes back without its token.
        let n = attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let hub = &hub;
        async move {
            try_register(hub, &format!("late-{n}"), &short, &[])
                .await
                .err()
        }
    })
    .await;
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(err.message().contains("expired"), "{err}");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_restarted_hub_keeps_everything() {
    let (_tmp, data) = data_dir();
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");

    let hub = start_hub(&data).await;
    let ca = hub.ca_pem().to_owned();
    let id = register(&hub, "dev-1", &[("env", "dev")]).await;
    let mut admin_client = admin(&hub).await;
    let mut spoke = deploy_web_to_dev(&hub, &mut admin_client, &git.url(), &id, &c1).await;
    spoke.report(1, "web", &c1, "synced").await;
    spoke.until("ack 1", |v| v.acked_seq == 1).await;
    hub.shutdown().await;
    let goodbye = spoke.until_end().await;
    assert!(goodbye.is_none(), "clean end on shutdown: {goodbye:?}");
    assert!(spoke.view.goodbye.is_some(), "a goodbye before the end");
    let held = spoke.close();

    let hub = start_hub(&data).await;
    assert_eq!(hub.ca_pem(), ca, "same CA after restart");
    // The spoke's certificate still works, and it holds the current generation: no snapshot.
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &id, held.clone())
        .await
        .unwrap();
    spoke.until("the stored ack", |v| v.acked_seq == 1).await;
    assert_eq!(
        spoke.view.snapshots, held.snapshots,
        "no snapshot for a spoke in step"
    );
    spoke.report(1, "web", &c1, "resent after restart").await;
    spoke.report(2, "web", &c1, "after restart").await;
    spoke.until("ack 2", |v| v.acked_seq == 2).await;

    let mut admin_client = admin(&hub).await;
    let t = &status_of(&mut admin_client, "web").await[0];
    assert_eq!(t.desired_revision, c1);
    assert_eq!(t.message, "after restart");
    let resources = admin_client
        .get(pb::GetRequest::default())
        .await
        .unwrap()
        .into_inner()
        .resources;
    assert_eq!(resources.len(), 2);
    let clusters = admin_client
        .list_clusters(pb::ListClustersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .clusters;
    assert_eq!(clusters.len(), 1);
    hub.shutdown().await;
}

#[tokio::test]
async fn a_reconnecting_spoke_gets_only_what_changed_and_can_renew_its_certificate() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let git = GitRepo::new();
    let c1 = git.commit(
        &[
            ("apps/web/cm.yaml", "v: 1\n"),
            ("apps/api/cm.yaml", "v: 1\n"),
        ],
        "one",
    );
    let mut id = register(&hub, "dev-1", &[("env", "dev")]).await;
    let mut admin = admin(&hub).await;
    admin
        .apply(pb::ApplyRequest {
            documents: vec![
                repo_doc("platform", &git.url()),
                app_doc("web", "platform", "apps/web", "dev"),
                app_doc("api", "platform", "apps/api", "dev"),
            ],
            dry_run: false,
        })
        .await
        .unwrap();
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default())
        .await
        .unwrap();
    spoke
        .until("both at c1", |v| {
            v.commit_of("web").as_deref() == Some(c1.as_str())
                && v.commit_of("api").as_deref() == Some(c1.as_str())
        })
        .await;
    let held = spoke.close();
    eventually("dev-1 shown disconnected", || {
        let mut admin = admin.clone();
        async move {
            let clusters = admin
                .list_clusters(pb::ListClustersRequest::default())
                .await
                .unwrap()
                .into_inner()
                .clusters;
            (!clusters[0].connected && clusters[0].last_contact_unix > 0).then_some(())
        }
    })
    .await;

    // While the spoke is away, web moves.
    let c2 = git.commit(&[("apps/web/cm.yaml", "v: 2\n")], "two");
    eventually("web desired at c2", || {
        let mut admin = admin.clone();
        let c2 = c2.clone();
        async move {
            let t = status_of(&mut admin, "web").await;
            (t.first()?.desired_revision == c2).then_some(())
        }
    })
    .await;
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &id, held.clone())
        .await
        .unwrap();
    spoke
        .until("web at c2", |v| {
            v.commit_of("web").as_deref() == Some(c2.as_str())
        })
        .await;
    assert_eq!(
        spoke.view.snapshots, held.snapshots,
        "a delta, not a snapshot"
    );
    assert_eq!(spoke.view.commit_of("api").as_deref(), Some(c1.as_str()));

    // Renewal over the live stream: a new key, a new certificate, the stream keeps running.
    let key = rcgen::KeyPair::generate().unwrap();
    spoke
        .send(In::Renew(pb::RenewRequest { csr_pem: csr(&key) }))
        .await;
    spoke.until("renewed", |v| v.renewed.is_some()).await;
    let renewed = spoke.view.renewed.clone().unwrap();
    assert_ne!(renewed.certificate_pem, id.cert_pem);
    assert_eq!(renewed.ca_pem, hub.ca_pem());
    spoke.report(1, "web", &c2, "still here").await;
    spoke.until("ack 1", |v| v.acked_seq == 1).await;

    // The new certificate works; the new session replaces the old one.
    id.cert_pem = renewed.certificate_pem;
    id.key_pem = key.serialize_pem();
    let view = spoke.view.clone();
    let mut fresh = FakeSpoke::connect(&hub.grpc_url(), &id, view)
        .await
        .unwrap();
    assert!(spoke.until_end().await.is_none());
    let goodbye = spoke
        .view
        .goodbye
        .clone()
        .expect("the old session got a goodbye");
    assert!(goodbye.reason.contains("replaced"), "{goodbye:?}");
    fresh
        .report(2, "web", &c2, "from the new certificate")
        .await;
    fresh.until("ack 2", |v| v.acked_seq == 2).await;

    // A message with nothing in it is refused.
    fresh
        .send(In::Heartbeat(pb::Heartbeat {
            sent_at_unix: 1,
            ..Default::default()
        }))
        .await;
    fresh.send_raw(pb::SpokeMessage { msg: None }).await;
    let status = fresh.until_end().await.expect("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_revoked_cluster_is_cut_off_and_oversized_messages_are_refused() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let id = register(&hub, "dev-1", &[]).await;
    let other = register(&hub, "dev-2", &[]).await;

    // Oversized: refused, the stream ends, the hub carries on.
    let mut big = FakeSpoke::connect(&hub.grpc_url(), &other, SpokeView::default())
        .await
        .unwrap();
    big.until("snapshot", |v| v.snapshots == 1).await;
    let huge = "x".repeat(gitfleet_proto::MAX_MESSAGE_BYTES + 1);
    big.report(1, "web", "c", &huge).await;
    let status = big.until_end().await.expect("refused");
    assert_eq!(status.code(), Code::OutOfRange, "{status}");

    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default())
        .await
        .unwrap();
    spoke.until("snapshot", |v| v.snapshots == 1).await;
    assert!(hub.revoke_cluster("dev-1").await.unwrap());
    assert!(spoke.until_end().await.is_none());
    let goodbye = spoke.view.goodbye.clone().expect("a goodbye");
    assert!(goodbye.revoked, "{goodbye:?}");

    let err = FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default())
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.message().contains("revoked"), "{err}");
    let token = hub
        .create_token(Duration::from_secs(600), BTreeMap::new(), 0)
        .await
        .unwrap();
    let err = try_register(&hub, "dev-1", &token, &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");

    // The other cluster is unharmed.
    let mut fine = FakeSpoke::connect(&hub.grpc_url(), &other, SpokeView::default())
        .await
        .unwrap();
    fine.until("snapshot", |v| v.snapshots == 1).await;
    hub.shutdown().await;
}

/// A report of dev-1 on `app` listing `resources` ConfigMaps, each with `message`.
fn report_of(
    seq: u64,
    app: &str,
    revision: &str,
    resources: usize,
    message: &str,
) -> pb::StatusReport {
    pb::StatusReport {
        chart_digest: String::new(),
        seq,
        cluster: "dev-1".into(),
        target_id: app.into(),
        revision: revision.into(),
        spec_generation: 1,
        sync: pb::SyncState::Synced as i32,
        health: pb::HealthState::Healthy as i32,
        message: format!("{resources} resources synced and healthy"),
        resources: (0..resources)
            .map(|i| pb::ResourceResult {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                namespace: "web".into(),
                name: format!("settings-{i:05}"),
                action: "applied".into(),
                health: pb::HealthState::Healthy as i32,
                message: message.into(),
                source_file: format!("apps/web/settings-{i:05}.yaml"),
                hook: String::new(),
            })
            .collect(),
        observed_at_unix: 1,
        trace: None,
    }
}

#[tokio::test]
async fn a_report_over_the_limits_is_acked_and_kept_as_a_summary_that_names_the_limit() {
    use gitfleet_proto::report_limits::{
        MAX_REPORT_BYTES, MAX_RESOURCE_MESSAGE_BYTES, MAX_RESOURCES,
    };
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let id = register(&hub, "dev-1", &[("env", "dev")]).await;
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default())
        .await
        .unwrap();
    let mut admin = admin(&hub).await;
    admin
        .apply(pb::ApplyRequest {
            documents: vec![
                repo_doc("platform", &git.url()),
                app_doc("web", "platform", "apps/web", "dev"),
            ],
            dry_run: false,
        })
        .await
        .unwrap();
    spoke
        .until("web at c1", |v| {
            v.commit_of("web").as_deref() == Some(c1.as_str())
        })
        .await;

    // Too many resources: acked (the spoke must not send it forever), kept as a summary.
    let too_many = MAX_RESOURCES + 1000;
    spoke
        .send(In::Status(report_of(1, "web", &c1, too_many, "")))
        .await;
    spoke.until("ack 1", |v| v.acked_seq == 1).await;
    let t = &status_of(&mut admin, "web").await[0];
    assert!(
        t.resources.is_empty(),
        "{} resources kept",
        t.resources.len()
    );
    assert!(
        t.message.contains(&format!(
            "{too_many} resources (the limit is {MAX_RESOURCES})"
        )),
        "{}",
        t.message
    );
    assert_eq!(
        (t.sync, t.health),
        (
            pb::SyncState::Synced as i32,
            pb::HealthState::Healthy as i32
        ),
        "the spoke's verdict stands"
    );

    // A resource's message too long.
    let long = "e".repeat(10 * 1024);
    spoke
        .send(In::Status(report_of(2, "web", &c1, 3, &long)))
        .await;
    spoke.until("ack 2", |v| v.acked_seq == 2).await;
    let t = &status_of(&mut admin, "web").await[0];
    assert!(t.resources.is_empty());
    assert!(
        t.message.contains(&format!(
            "resources[0].message is 10240 bytes (the limit is {MAX_RESOURCE_MESSAGE_BYTES})"
        )),
        "{}",
        t.message
    );

    // Within every other limit, but too big as a whole (and still under the message limit).
    let message = "m".repeat(MAX_RESOURCE_MESSAGE_BYTES);
    spoke
        .send(In::Status(report_of(3, "web", &c1, 3500, &message)))
        .await;
    spoke.until("ack 3", |v| v.acked_seq == 3).await;
    let t = &status_of(&mut admin, "web").await[0];
    assert!(t.resources.is_empty());
    assert!(
        t.message
            .contains(&format!("bytes encoded (the limit is {MAX_REPORT_BYTES})")),
        "{}",
        t.message
    );

    // A real 2,000-object App is within the limits, kept whole, and listed.
    spoke
        .send(In::Status(report_of(4, "web", &c1, 2000, "")))
        .await;
    spoke.until("ack 4", |v| v.acked_seq == 4).await;
    let t = &status_of(&mut admin, "web").await[0];
    assert_eq!(t.resources.len(), 2000);
    assert_eq!(t.message, "2000 resources synced and healthy");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_backup_restores_into_a_new_data_directory() {
    let (_tmp, data) = data_dir();
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let hub = start_hub(&data).await;
    let id = register(&hub, "dev-1", &[("env", "dev")]).await;
    let mut admin_client = admin(&hub).await;
    let mut spoke = deploy_web_to_dev(&hub, &mut admin_client, &git.url(), &id, &c1).await;
    spoke.report(1, "web", &c1, "synced").await;
    spoke.until("ack 1", |v| v.acked_seq == 1).await;
    let ca = hub.ca_pem().to_owned();
    hub.shutdown().await;
    spoke.until_end().await;
    let held = spoke.close();

    let backup = gitfleet_hub::runtime::export(&data, &Default::default())
        .await
        .unwrap();
    let (_tmp2, restored) = data_dir();
    gitfleet_hub::runtime::import(&restored, &Default::default(), &backup)
        .await
        .unwrap();
    let err = gitfleet_hub::runtime::import(&restored, &Default::default(), &backup)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already holds data"), "{err}");

    let hub = start_hub(&restored).await;
    assert_eq!(hub.ca_pem(), ca, "the CA travels with the backup");
    // A restored hub is a new epoch: the spoke gets a full snapshot, its old identity works.
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &id, held.clone())
        .await
        .unwrap();
    spoke
        .until("a snapshot from the restored hub", |v| {
            v.snapshots > held.snapshots
        })
        .await;
    assert_ne!(spoke.view.epoch, held.epoch);
    assert_eq!(spoke.view.commit_of("web").as_deref(), Some(c1.as_str()));
    let mut admin_client = admin(&hub).await;
    let t = &status_of(&mut admin_client, "web").await[0];
    assert_eq!(t.message, "synced");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_hub_dropped_mid_stream_loses_no_acked_report() {
    const REPORTS: u64 = 40;
    let (_tmp, data) = data_dir();
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let hub = start_hub(&data).await;
    let (id, mut spoke) = web_on_dev_1(&hub, &git, &c1).await;
    for seq in 1..=REPORTS {
        spoke
            .report(seq, "web", &c1, &format!("report {seq}"))
            .await;
    }
    // Drop the hub (no orderly shutdown) once some reports are acked, while others are in flight.
    spoke.until("some acks", |v| v.acked_seq >= 5).await;
    drop(hub);
    spoke.until_end().await;
    let held = spoke.close();
    assert!(held.acked_seq >= 5);

    // The store is released once the dropped hub's tasks have wound down.
    let hub = eventually("the data directory to be free", || {
        let data = data.clone();
        async move { runtime::start(HubConfig::for_tests(&data)).await.ok() }
    })
    .await;
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &id, held.clone())
        .await
        .unwrap();
    // The hub says at once how far it holds; never less than what it acked before.
    spoke
        .until("the stored ack", |v| v.acked_seq >= held.acked_seq)
        .await;
    // The spoke resends everything not acked (and, harmlessly, one that was).
    for seq in held.acked_seq..=REPORTS {
        spoke
            .report(seq, "web", &c1, &format!("report {seq}"))
            .await;
    }
    spoke
        .until("every report acked", |v| v.acked_seq == REPORTS)
        .await;
    let mut admin = admin(&hub).await;
    let t = &status_of(&mut admin, "web").await[0];
    assert_eq!(t.message, format!("report {REPORTS}"));
    hub.shutdown().await;
}

#[tokio::test]
async fn too_many_handshakes_at_once_are_shed() {
    let (_tmp, data) = data_dir();
    let mut config = HubConfig::for_tests(&data);
    config.max_concurrent_handshakes = 1;
    let hub = runtime::start(config).await.unwrap();
    let id = register(&hub, "dev-1", &[]).await;
    let ch = channel(
        &hub.grpc_url(),
        &id.ca_pem,
        Some((&id.cert_pem, &id.key_pem)),
    )
    .await;
    // A spoke that opens its stream and never says hello holds the only handshake slot.
    let (silent_tx, silent_rx) = tokio::sync::mpsc::channel::<pb::SpokeMessage>(1);
    let mut silent = LinkClient::new(ch.clone());
    let held = tokio::spawn(async move { silent.session(ReceiverStream::new(silent_rx)).await });
    let err = eventually("a shed handshake", || {
        let id = id.clone();
        let url = hub.grpc_url();
        async move {
            FakeSpoke::connect(&url, &id, SpokeView::default())
                .await
                .err()
        }
    })
    .await;
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    // Once the slot is free, the spoke gets in.
    drop(silent_tx);
    let _ = held.await;
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default())
        .await
        .unwrap();
    spoke.until("snapshot", |v| v.snapshots == 1).await;
    hub.shutdown().await;
}

#[tokio::test]
async fn credentials_reach_only_spokes_that_deploy_from_the_repo() {
    let (_tmp, data) = data_dir();
    let mut config = HubConfig::for_tests(&data);
    config.repo_credentials.git.insert(
        "private".into(),
        gitfleet_hub::model::RepoCredential {
            urls: vec!["https://git.example.test/private/".into()],
            kind: gitfleet_hub::model::CredentialKind::Https {
                username: "git".into(),
                password: "s3cret".into(),
            },
        },
    );
    let hub = runtime::start(config).await.unwrap();
    let private = GitRepo::new();
    let public = GitRepo::new();
    private.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    public.commit(&[("apps/api/cm.yaml", "v: 1\n")], "one");
    let private_url = "https://git.example.test/private/web.git";
    serve_as(&data, private_url, &private);
    let dev = register(&hub, "dev-1", &[("env", "dev")]).await;
    let prod = register(&hub, "prod-1", &[("env", "prod")]).await;
    admin(&hub)
        .await
        .apply(pb::ApplyRequest {
            documents: vec![
                repo_doc("private", private_url),
                repo_doc("public", &public.url()),
                app_doc("web", "private", "apps/web", "dev"),
                app_doc("api", "public", "apps/api", "prod"),
            ],
            dry_run: false,
        })
        .await
        .unwrap();

    let mut dev = FakeSpoke::connect(&hub.grpc_url(), &dev, SpokeView::default())
        .await
        .unwrap();
    dev.until("web", |v| v.targets.contains_key("web")).await;
    let creds = &dev.view.credentials;
    assert_eq!(creds.len(), 1, "{creds:?}");
    assert_eq!(creds[0].repo_url, private_url);
    assert_eq!(creds[0].urls, ["https://git.example.test/private/"]);
    match &creds[0].kind {
        Some(pb::repo_credential::Kind::Https(h)) => {
            assert_eq!(
                (h.username.as_str(), h.password.as_str()),
                ("git", "s3cret")
            );
        }
        other => panic!("unexpected credential {other:?}"),
    }

    let mut prod = FakeSpoke::connect(&hub.grpc_url(), &prod, SpokeView::default())
        .await
        .unwrap();
    prod.until("api", |v| v.targets.contains_key("api")).await;
    assert!(
        prod.view.credentials.is_empty(),
        "no credentials of a Repo it does not deploy from"
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn approval_mode_holds_registrations_until_an_admin_approves() {
    use gitfleet_proto::v1::access_client::AccessClient;

    let (_tmp, data) = data_dir();
    let mut config = HubConfig::for_tests(&data);
    config.require_approval = true;
    let hub = runtime::start(config).await.unwrap();
    let token = hub
        .engine()
        .create_token(TokenSpec {
            max_uses: 1,
            description: "edge".into(),
            ..TokenSpec::new(Duration::from_secs(600), BTreeMap::new())
        })
        .await
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let ch = channel(&hub.grpc_url(), hub.ca_pem(), None).await;
    let register = |ch: tonic::transport::Channel| {
        let (csr_pem, token) = (csr(&key), token.token.clone());
        async move {
            gitfleet_proto::v1::registration_client::RegistrationClient::new(ch)
                .register(pb::RegisterRequest {
                    token,
                    cluster_name: "edge-1".into(),
                    csr_pem,
                    labels: Default::default(),
                    agent_version: "test".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .outcome
                .unwrap()
        }
    };
    // Pending, and pending again on retry (the one-use token is not spent twice).
    for _ in 0..2 {
        match register(ch.clone()).await {
            pb::register_response::Outcome::Pending(p) => {
                assert_eq!(p.cluster_name, "edge-1");
                assert!(p.retry_after_seconds > 0);
            }
            other => panic!("expected pending, got {other:?}"),
        }
    }
    let cfg = admin_config(&hub);
    let ctx = cfg.context(None).unwrap();
    let admin_ch = channel(
        &ctx.server,
        &ctx.certificate_authority_data,
        Some((&ctx.client_certificate_data, &ctx.client_key_data)),
    )
    .await;
    let mut access = AccessClient::new(admin_ch.clone());
    let pending = access
        .list_pending_clusters(pb::ListPendingClustersRequest {})
        .await
        .unwrap()
        .into_inner()
        .clusters;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].name, "edge-1");
    let listed = AdminClient::new(admin_ch.clone())
        .list_clusters(pb::ListClustersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .clusters;
    assert!(listed.is_empty(), "a pending cluster is not a cluster yet");

    assert!(
        !access
            .approve_cluster(pb::ApproveClusterRequest {
                name: "nope".into()
            })
            .await
            .unwrap()
            .into_inner()
            .approved
    );
    assert!(
        access
            .approve_cluster(pb::ApproveClusterRequest {
                name: "edge-1".into()
            })
            .await
            .unwrap()
            .into_inner()
            .approved
    );
    let issued = match register(ch.clone()).await {
        pb::register_response::Outcome::Issued(i) => i,
        other => panic!("expected a certificate, got {other:?}"),
    };
    let id = SpokeIdentity {
        cluster: "edge-1".into(),
        cert_pem: issued.certificate_pem,
        key_pem: key.serialize_pem(),
        ca_pem: issued.ca_pem,
    };
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default())
        .await
        .unwrap();
    spoke.until("snapshot", |v| v.snapshots == 1).await;

    // A spoke certificate cannot use Access.
    let spoke_ch = channel(
        &hub.grpc_url(),
        hub.ca_pem(),
        Some((&id.cert_pem, &id.key_pem)),
    )
    .await;
    let err = AccessClient::new(spoke_ch)
        .list_tokens(pb::ListTokensRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");

    // Tokens are listed without secrets and can be revoked; clusters can be revoked.
    let tokens = access
        .list_tokens(pb::ListTokensRequest {})
        .await
        .unwrap()
        .into_inner()
        .tokens;
    let t = tokens.iter().find(|t| t.token_id == token.id).unwrap();
    assert_eq!((t.uses, t.max_uses, t.revoked), (1, 1, false));
    assert!(
        access
            .revoke_token(pb::RevokeTokenRequest {
                token_id: token.id.clone()
            })
            .await
            .unwrap()
            .into_inner()
            .revoked
    );
    assert!(
        access
            .revoke_cluster(pb::RevokeClusterRequest {
                name: "edge-1".into()
            })
            .await
            .unwrap()
            .into_inner()
            .revoked
    );
    assert!(spoke.until_end().await.is_none());
    assert!(spoke.view.goodbye.as_ref().is_some_and(|g| g.revoked));
    hub.shutdown().await;
}

#[tokio::test]
async fn a_silent_spoke_shows_disconnected_after_the_grace_period() {
    let (_tmp, data) = data_dir();
    let mut config = HubConfig::for_tests(&data);
    config.heartbeat_grace = Duration::from_secs(1);
    let hub = runtime::start(config).await.unwrap();
    let id = register(&hub, "dev-1", &[]).await;
    let mut admin = admin(&hub).await;
    let connected = |admin: &AdminClient<tonic::transport::Channel>| {
        let mut admin = admin.clone();
        async move {
            admin
                .list_clusters(pb::ListClustersRequest::default())
                .await
                .unwrap()
                .into_inner()
                .clusters[0]
                .connected
        }
    };
    let spoke = FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default())
        .await
        .unwrap();
    assert!(connected(&admin).await);
    // The stream stays open but nothing arrives: past the grace period it shows disconnected.
    eventually("silence to show", || {
        let admin = admin.clone();
        async move { (!connected(&admin).await).then_some(()) }
    })
    .await;
    // A heartbeat brings it back.
    spoke
        .send(In::Heartbeat(pb::Heartbeat {
            sent_at_unix: 1,
            ..Default::default()
        }))
        .await;
    eventually("the heartbeat to show", || {
        let admin = admin.clone();
        async move { connected(&admin).await.then_some(()) }
    })
    .await;
    let clusters = admin
        .list_clusters(pb::ListClustersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .clusters;
    assert_eq!(clusters[0].agent_version, "test-0.1");
    hub.shutdown().await;
}

/// Applies the Repo `platform` and the App `web` (for env=dev clusters) and connects the fake
/// spoke `id`, returning once it holds `web` at `commit`.
async fn deploy_web_to_dev(
    hub: &gitfleet_hub::runtime::HubHandle,
    admin_client: &mut AdminClient<tonic::transport::Channel>,
    git_url: &str,
    id: &SpokeIdentity,
    commit: &str,
) -> FakeSpoke {
    admin_client
        .apply(pb::ApplyRequest {
            documents: vec![
                repo_doc("platform", git_url),
                app_doc("web", "platform", "apps/web", "dev"),
            ],
            dry_run: false,
        })
        .await
        .unwrap();
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), id, SpokeView::default())
        .await
        .unwrap();
    spoke
        .until("web at the first commit", |v| {
            v.commit_of("web").as_deref() == Some(commit)
        })
        .await;
    spoke
}

#[tokio::test]
async fn status_lists_targets_a_page_at_a_time_in_key_order() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let git = GitRepo::new();
    git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let mut ids = Vec::new();
    for cluster in ["dev-1", "dev-3", "dev-2"] {
        ids.push(register(&hub, cluster, &[("env", "dev")]).await);
    }
    let mut admin = admin(&hub).await;
    admin
        .apply(pb::ApplyRequest {
            documents: vec![
                repo_doc("platform", &git.url()),
                app_doc("web", "platform", "apps/web", "dev"),
                app_doc("api", "platform", "apps/web", "dev"),
            ],
            dry_run: false,
        })
        .await
        .unwrap();
    let all = eventually("six Targets", || {
        let mut admin = admin.clone();
        async move {
            let targets = status_of(&mut admin, "").await;
            (targets.len() == 6).then_some(targets)
        }
    })
    .await;
    let keys = |targets: &[pb::TargetStatus]| -> Vec<String> {
        targets
            .iter()
            .map(|t| format!("{}/{}", t.app, t.cluster))
            .collect()
    };
    assert_eq!(
        keys(&all),
        [
            "api/dev-1",
            "api/dev-2",
            "api/dev-3",
            "web/dev-1",
            "web/dev-2",
            "web/dev-3"
        ]
    );

    // Pages of four: the first ends with a token, the second holds the rest and ends the list.
    let page = |size: u32, token: String, app: &str| {
        let mut admin = admin.clone();
        let app = app.to_owned();
        async move {
            admin
                .status(pb::StatusRequest {
                    app,
                    page_size: size,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let first = page(4, String::new(), "").await.unwrap();
    assert_eq!(keys(&first.targets), keys(&all[..4]));
    assert!(!first.next_page_token.is_empty());
    let second = page(4, first.next_page_token.clone(), "").await.unwrap();
    assert_eq!(keys(&second.targets), keys(&all[4..]));
    assert!(
        second.next_page_token.is_empty(),
        "the last page ends the list"
    );

    // Pages of one through one App, following the tokens, list exactly that App's Targets.
    let mut walked = Vec::new();
    let mut token = String::new();
    loop {
        let p = page(1, token, "web").await.unwrap();
        assert!(p.targets.len() <= 1);
        walked.extend(p.targets);
        if p.next_page_token.is_empty() {
            break;
        }
        token = p.next_page_token;
    }
    assert_eq!(keys(&walked), keys(&all[3..]));

    // A page also ends before 1 MiB: with two reports of about 700 KiB on dev-1 (within the
    // report limits: 600 resources with 1 KiB messages), a page of any size stops before the
    // second of them, and the next page carries on from there.
    let commit = all[0].desired_revision.clone();
    let spoke = FakeSpoke::connect(&hub.grpc_url(), &ids[0], SpokeView::default())
        .await
        .unwrap();
    let message = "x".repeat(1024);
    spoke
        .send(In::Status(report_of(1, "api", &commit, 600, &message)))
        .await;
    spoke
        .send(In::Status(report_of(2, "web", &commit, 600, &message)))
        .await;
    eventually("both big reports stored", || {
        let mut admin = admin.clone();
        async move {
            let targets = status_of(&mut admin, "").await;
            (targets.iter().filter(|t| t.resources.len() == 600).count() == 2).then_some(())
        }
    })
    .await;
    let first = page(5000, String::new(), "").await.unwrap();
    assert_eq!(keys(&first.targets), keys(&all[..3]));
    let second = page(5000, first.next_page_token, "").await.unwrap();
    assert_eq!(keys(&second.targets), keys(&all[3..]));
    assert!(second.next_page_token.is_empty());

    // A token the hub did not issue is refused, naming the token.
    let err = page(0, "bogus".into(), "").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("\"bogus\""), "{err}");

    hub.shutdown().await;
}

#[tokio::test]
async fn every_ended_session_is_counted_by_why() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let ended = |reason: &str| {
        let text = hub
            .engine()
            .metrics()
            .encode(&gitfleet_hub::metrics::FleetSnapshot::default());
        let series = format!("gitfleet_link_sessions_ended_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let id = register(&hub, "dev-1", &[]).await;

    // The spoke ends its stream.
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default())
        .await
        .unwrap();
    spoke.until("first snapshot", |v| v.snapshots == 1).await;
    spoke.end_stream();
    assert!(spoke.until_end().await.is_none(), "a clean end");
    eventually("spoke_closed counted", || async {
        (ended("spoke_closed") == 1).then_some(())
    })
    .await;

    // A newer connection of the same cluster replaces the older.
    let mut older = FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default())
        .await
        .unwrap();
    older.until("first snapshot", |v| v.snapshots == 1).await;
    let mut newer = FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default())
        .await
        .unwrap();
    newer.until("first snapshot", |v| v.snapshots == 1).await;
    older.until_end().await;
    eventually("replaced counted", || async {
        (ended("replaced") == 1).then_some(())
    })
    .await;

    // The hub refuses a report naming another cluster.
    newer
        .report_as("prod-1", 1, "web", &"a".repeat(40), "sneaky")
        .await;
    let status = newer.until_end().await.expect("refused with a status");
    assert_eq!(status.code(), Code::PermissionDenied, "{status}");
    eventually("refused counted", || async {
        (ended("refused") == 1).then_some(())
    })
    .await;
    assert_eq!(ended("transport"), 0);

    hub.shutdown().await;
}

#[tokio::test]
async fn clusters_are_listed_a_page_at_a_time_by_name() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    for cluster in ["dev-3", "dev-1", "dev-2"] {
        register(&hub, cluster, &[("env", "dev")]).await;
    }
    let admin = admin(&hub).await;
    let page = |size: u32, token: &str| {
        let request = pb::ListClustersRequest {
            page_size: size,
            page_token: token.to_owned(),
        };
        let mut admin = admin.clone();
        async move {
            admin
                .list_clusters(request)
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let names = |p: &pb::ListClustersResponse| -> Vec<String> {
        p.clusters.iter().map(|c| c.name.clone()).collect()
    };
    let first = page(2, "").await.unwrap();
    assert_eq!(names(&first), ["dev-1", "dev-2"]);
    assert!(!first.next_page_token.is_empty());
    let second = page(2, &first.next_page_token).await.unwrap();
    assert_eq!(names(&second), ["dev-3"]);
    assert!(
        second.next_page_token.is_empty(),
        "the last page ends the list"
    );
    // The hub's default page holds them all.
    let all = page(0, "").await.unwrap();
    assert_eq!(names(&all), ["dev-1", "dev-2", "dev-3"]);
    assert!(all.next_page_token.is_empty());

    let err = page(0, "t1:web/dev-1").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("t1:web/dev-1"), "{err}");
    hub.shutdown().await;
}
