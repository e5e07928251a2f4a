//! Who may become a cluster, and stay one: bootstrap tokens bind the labels and the name of
//! what they register, a cluster is bound to the key of its current certificate, Register
//! costs nothing before the token is known to be good and is rate-limited, and a revocation
//! racing a reconnect never hands the spoke an empty desired state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use gitfleet_hub::engine::{RegistrationWork, TokenSpec};
use gitfleet_hub::runtime::{self, HubConfig, HubHandle};
use gitfleet_proto::v1 as pb;
use gitfleet_proto::v1::access_client::AccessClient;
use gitfleet_proto::v1::registration_client::RegistrationClient;
use gitfleet_proto::v1::spoke_message::Msg as In;
use support::*;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

async fn start(config: HubConfig) -> HubHandle {
    runtime::start(config).await.unwrap()
}

async fn token(hub: &HubHandle, spec: TokenSpec) -> String {
    hub.create_token_with(spec).await.unwrap()
}

fn spec(labels: &[(&str, &str)]) -> TokenSpec {
    TokenSpec::new(Duration::from_secs(600), owned(labels))
}

/// Clusters by name, with their labels sorted.
async fn clusters(hub: &HubHandle) -> BTreeMap<String, (BTreeMap<String, String>, bool)> {
    admin(hub)
        .await
        .list_clusters(pb::ListClustersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .clusters
        .into_iter()
        .map(|c| (c.name, (c.labels.into_iter().collect(), c.connected)))
        .collect()
}

async fn access(hub: &HubHandle) -> AccessClient<Channel> {
    let cfg = admin_config(hub);
    let ctx = cfg.context(None).unwrap();
    AccessClient::new(
        channel(
            &ctx.server,
            &ctx.certificate_authority_data,
            Some((&ctx.client_certificate_data, &ctx.client_key_data)),
        )
        .await,
    )
}

#[tokio::test]
async fn a_tokens_labels_are_the_clusters_and_a_pinned_token_registers_one_name() {
    let (_tmp, data) = data_dir();
    let hub = start(HubConfig::for_tests(&data)).await;
    let dev = token(
        &hub,
        TokenSpec {
            max_uses: 1,
            ..spec(&[("env", "dev")])
        },
    )
    .await;

    // The attack: a token minted for env=dev registering a cluster that says team=payments.
    let err = try_register(&hub, "dev-1", &dev, &[("env", "dev"), ("team", "payments")])
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.message().contains("\"team\""), "names the key: {err}");
    // Nor may the spoke change a label the token sets.
    let err = try_register(&hub, "dev-1", &dev, &[("env", "prod")])
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.message().contains("\"env\""), "{err}");
    assert!(
        !clusters(&hub).await.contains_key("dev-1"),
        "nothing registered"
    );
    // The refusals spent nothing: the one use is still there, and the cluster gets exactly
    // the token's labels.
    try_register(&hub, "dev-1", &dev, &[("env", "dev")])
        .await
        .unwrap();
    assert_eq!(clusters(&hub).await["dev-1"].0, owned(&[("env", "dev")]));

    // Labels of its own only under the keys the token allows.
    let zoned = token(
        &hub,
        TokenSpec {
            allowed_label_keys: ["zone".to_owned()].into(),
            ..spec(&[("env", "dev")])
        },
    )
    .await;
    try_register(&hub, "dev-2", &zoned, &[("zone", "a")])
        .await
        .unwrap();
    assert_eq!(
        clusters(&hub).await["dev-2"].0,
        owned(&[("env", "dev"), ("zone", "a")])
    );
    let err = try_register(&hub, "dev-3", &zoned, &[("zone", "a"), ("tier", "gold")])
        .await
        .err()
        .expect("refused");
    assert!(err.message().contains("\"tier\""), "{err}");
    assert!(err.message().contains("allowed: zone"), "{err}");

    // A pinned token registers its one name, whatever else it allows.
    let pinned = token(
        &hub,
        TokenSpec {
            cluster: Some("edge-7".into()),
            ..spec(&[])
        },
    )
    .await;
    let err = try_register(&hub, "edge-8", &pinned, &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.message().contains("\"edge-7\""), "{err}");
    try_register(&hub, "edge-7", &pinned, &[]).await.unwrap();

    // `token list` shows what a token allows.
    let tokens = access(&hub)
        .await
        .list_tokens(pb::ListTokensRequest {})
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert!(tokens.iter().any(|t| t.allowed_label_keys == ["zone"]));
    assert!(tokens.iter().any(|t| t.cluster_name == "edge-7"));

    // Tokens that contradict themselves, or pin a name no cluster can have, are not minted.
    let mut admin = admin(&hub).await;
    for (request, field) in [
        (
            pb::CreateTokenRequest {
                labels: owned(&[("env", "dev")]).into_iter().collect(),
                allowed_label_keys: vec!["env".into()],
                ..Default::default()
            },
            "\"env\"",
        ),
        (
            pb::CreateTokenRequest {
                allowed_label_keys: vec!["bad key".into()],
                ..Default::default()
            },
            "\"bad key\"",
        ),
        (
            pb::CreateTokenRequest {
                cluster_name: "Not_A_Name".into(),
                ..Default::default()
            },
            "\"Not_A_Name\"",
        ),
    ] {
        let err = admin.create_token(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(err.message().contains(field), "{err}");
    }
    hub.shutdown().await;
}

/// Register with a valid CSR and `token`, for a name and labels a token may refuse.
async fn attempt(
    ch: Channel,
    cluster: &str,
    token: &str,
    labels: &[(&str, &str)],
) -> tonic::Status {
    RegistrationClient::new(ch)
        .register(pb::RegisterRequest {
            token: token.into(),
            cluster_name: cluster.into(),
            csr_pem: csr(&rcgen::KeyPair::generate().unwrap()),
            labels: owned(labels).into_iter().collect(),
            agent_version: "test".into(),
        })
        .await
        .expect_err("refused")
}

#[tokio::test]
async fn a_register_without_a_usable_token_costs_no_signature_and_no_lock() {
    let (_tmp, data) = data_dir();
    let mut config = HubConfig::for_tests(&data);
    // The flood must reach the engine: no rate limit here.
    config.register_rate_limit = 0;
    let hub = start(config).await;
    let used = token(
        &hub,
        TokenSpec {
            max_uses: 1,
            ..spec(&[])
        },
    )
    .await;
    try_register(&hub, "first", &used, &[]).await.unwrap();
    let revoked = hub.engine().create_token(spec(&[])).await.unwrap();
    assert!(hub.engine().revoke_token(&revoked.id).await.unwrap());
    let pinned = token(
        &hub,
        TokenSpec {
            cluster: Some("edge-1".into()),
            ..spec(&[("env", "dev")])
        },
    )
    .await;
    let before = hub.engine().registration_work();

    let ch = channel(&hub.grpc_url(), hub.ca_pem(), None).await;
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..40 {
        let ch = ch.clone();
        let (used, revoked, pinned) = (used.clone(), revoked.token.clone(), pinned.clone());
        flood.spawn(async move {
            let name = format!("c-{i}");
            let status = match i % 5 {
                0 => attempt(ch, &name, &format!("gft_{i:064}"), &[]).await,
                1 => attempt(ch, &name, &used, &[]).await,
                2 => attempt(ch, &name, &revoked, &[]).await,
                3 => attempt(ch, &name, &pinned, &[]).await,
                _ => attempt(ch, "edge-1", &pinned, &[("team", "payments")]).await,
            };
            (i % 5, status)
        });
    }
    while let Some(done) = flood.join_next().await {
        let (kind, status) = done.unwrap();
        let expected = if kind == 0 {
            Code::Unauthenticated
        } else {
            Code::PermissionDenied
        };
        assert_eq!(status.code(), expected, "{kind}: {status}");
    }
    assert_eq!(
        hub.engine().registration_work(),
        before,
        "no CSR verified, nothing signed, no write lock taken"
    );

    // A usable token gets its CSR verified and signed, under the write lock.
    try_register(&hub, "edge-1", &pinned, &[]).await.unwrap();
    assert_eq!(
        hub.engine().registration_work(),
        RegistrationWork {
            csrs_verified: before.csrs_verified + 1,
            certificates_signed: before.certificates_signed + 1,
            write_locks: before.write_locks + 1,
        }
    );
    hub.shutdown().await;
}

/// A channel without a client certificate whose connections come from `source`.
async fn channel_from(hub: &HubHandle, source: std::net::IpAddr) -> Channel {
    Channel::from_shared(hub.grpc_url())
        .unwrap()
        .local_address(Some(source))
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(hub.ca_pem())))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn registrations_beyond_the_budget_of_a_source_are_refused_until_later() {
    let (_tmp, data) = data_dir();
    let mut config = HubConfig::for_tests(&data);
    config.register_rate_limit = 3;
    let hub = start(config).await;
    let good = token(&hub, spec(&[])).await;
    let here = channel_from(&hub, [127, 0, 0, 1].into()).await;
    for _ in 0..3 {
        let status = attempt(here.clone(), "x", "gft_nope", &[]).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    }
    // Over the budget: refused before the token is even looked at, good token or not.
    let status = attempt(here.clone(), "x", &good, &[]).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("retry"), "{status}");
    let seconds: u64 = status
        .metadata()
        .get("retry-after")
        .expect("a retry-after hint")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&seconds), "{seconds}");
    assert!(!clusters(&hub).await.contains_key("x"));

    // Another source address has a budget of its own.
    let there = channel_from(&hub, [127, 0, 0, 2].into()).await;
    let key = rcgen::KeyPair::generate().unwrap();
    RegistrationClient::new(there)
        .register(pb::RegisterRequest {
            token: good,
            cluster_name: "y".into(),
            csr_pem: csr(&key),
            labels: Default::default(),
            agent_version: "test".into(),
        })
        .await
        .unwrap();
    hub.shutdown().await;
}

#[tokio::test]
async fn a_superseded_certificate_cannot_replace_the_live_session() {
    let (_tmp, data) = data_dir();
    let hub = start(HubConfig::for_tests(&data)).await;
    let token = token(&hub, spec(&[("env", "dev")])).await;
    let first_key = rcgen::KeyPair::generate().unwrap();
    let old = try_register_with_key(&hub, "dev-1", &token, &[], &first_key)
        .await
        .unwrap();
    let mut live = FakeSpoke::connect(&hub.grpc_url(), &old, SpokeView::default())
        .await
        .unwrap();
    live.until("snapshot", |v| v.snapshots == 1).await;

    // The spoke renews over its stream: a new key, a new certificate.
    let key = rcgen::KeyPair::generate().unwrap();
    live.send(In::Renew(pb::RenewRequest { csr_pem: csr(&key) }))
        .await;
    live.until("renewed", |v| v.renewed.is_some()).await;
    let renewed = SpokeIdentity {
        cert_pem: live.view.renewed.clone().unwrap().certificate_pem,
        key_pem: key.serialize_pem(),
        ..old.clone()
    };
    // It stored the new certificate, and says so.
    confirm(&hub, &live, &renewed).await;

    // The attack: the old certificate (an old volume snapshot) tries to take over the cluster.
    let err = FakeSpoke::connect(&hub.grpc_url(), &old, live.view.clone())
        .await
        .err()
        .expect("the superseded certificate is refused");
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(err.message().contains("superseded"), "{err}");
    // Nor can its key get a new certificate by registering again.
    let err = try_register_with_key(&hub, "dev-1", &token, &[], &first_key)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::AlreadyExists, "{err}");

    // The live session is intact: it was not replaced, and its reports are acked.
    live.report(1, "web", "c1", "still here").await;
    live.until("ack 1", |v| v.acked_seq == 1).await;
    assert!(live.view.goodbye.is_none(), "{:?}", live.view.goodbye);
    assert!(clusters(&hub).await["dev-1"].1, "connected");

    // The renewed certificate is the cluster's: it connects (replacing the old session), and
    // can renew in turn.
    let mut fresh = FakeSpoke::connect(&hub.grpc_url(), &renewed, live.view.clone())
        .await
        .unwrap();
    assert!(live.until_end().await.is_none());
    assert!(
        live.view
            .goodbye
            .as_ref()
            .is_some_and(|g| g.reason.contains("replaced")),
        "{:?}",
        live.view.goodbye
    );
    fresh
        .report(2, "web", "c1", "from the new certificate")
        .await;
    fresh.until("ack 2", |v| v.acked_seq == 2).await;
    let third = rcgen::KeyPair::generate().unwrap();
    fresh.view.renewed = None;
    fresh
        .send(In::Renew(pb::RenewRequest {
            csr_pem: csr(&third),
        }))
        .await;
    fresh.until("renewed", |v| v.renewed.is_some()).await;
    let third = SpokeIdentity {
        cert_pem: fresh.view.renewed.clone().unwrap().certificate_pem,
        key_pem: third.serialize_pem(),
        ..old.clone()
    };
    confirm(&hub, &fresh, &third).await;
    let err = FakeSpoke::connect(&hub.grpc_url(), &renewed, SpokeView::default())
        .await
        .err()
        .expect("superseded in turn");
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    hub.shutdown().await;
}

/// What a spoke sends once it stored a renewed certificate: the heartbeat naming its key.
/// Returns once the hub bound the cluster to that key.
async fn confirm(hub: &HubHandle, spoke: &FakeSpoke, renewed: &SpokeIdentity) {
    let key = gitfleet_hub::pki::cert_key_pem(&renewed.cert_pem).unwrap();
    spoke
        .send(In::Heartbeat(pb::Heartbeat {
            sent_at_unix: 1,
            renewed_key_sha256: key.fingerprint.clone(),
        }))
        .await;
    eventually("the cluster bound to the renewed key", || {
        let bound = hub
            .store()
            .cluster(&renewed.cluster)
            .unwrap()
            .is_some_and(|c| c.key_fingerprint == key.fingerprint);
        async move { bound.then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_renewal_the_spoke_never_stored_does_not_lock_it_out() {
    let (_tmp, data) = data_dir();
    let hub = start(HubConfig::for_tests(&data)).await;
    let old = register(&hub, "dev-1", &[]).await;
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &old, SpokeView::default())
        .await
        .unwrap();
    spoke.until("snapshot", |v| v.snapshots == 1).await;
    let key = rcgen::KeyPair::generate().unwrap();
    spoke
        .send(In::Renew(pb::RenewRequest { csr_pem: csr(&key) }))
        .await;
    spoke.until("renewed", |v| v.renewed.is_some()).await;
    let renewed = SpokeIdentity {
        cert_pem: spoke.view.renewed.clone().unwrap().certificate_pem,
        key_pem: key.serialize_pem(),
        ..old.clone()
    };
    // The spoke went away before storing it (or its answer was lost): it comes back with
    // the certificate it has.
    let held = spoke.close();
    let mut back = FakeSpoke::connect(&hub.grpc_url(), &old, held.clone())
        .await
        .expect("the certificate the spoke holds still gets in");
    back.report(1, "web", "c1", "back").await;
    back.until("ack 1", |v| v.acked_seq == 1).await;
    // Had it stored the new one, that would get in as well, and become the only one.
    let mut renewed_spoke = FakeSpoke::connect(&hub.grpc_url(), &renewed, back.view.clone())
        .await
        .unwrap();
    assert!(back.until_end().await.is_none(), "replaced");
    renewed_spoke.report(2, "web", "c1", "renewed").await;
    renewed_spoke.until("ack 2", |v| v.acked_seq == 2).await;
    let err = FakeSpoke::connect(&hub.grpc_url(), &old, SpokeView::default())
        .await
        .err()
        .expect("superseded once the renewed certificate was used");
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_cluster_recorded_without_a_key_accepts_only_its_last_certificate() {
    let (_tmp, data) = data_dir();
    let hub = start(HubConfig::for_tests(&data)).await;
    let first = register(&hub, "dev-1", &[]).await;
    hub.shutdown().await;
    // Renewed by a hub that issues for longer: the two certificates expire apart.
    let mut config = HubConfig::for_tests(&data);
    config.cluster_cert_validity = Duration::from_secs(60 * 24 * 3600);
    let hub = start(config).await;
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &first, SpokeView::default())
        .await
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    spoke
        .send(In::Renew(pb::RenewRequest { csr_pem: csr(&key) }))
        .await;
    spoke.until("renewed", |v| v.renewed.is_some()).await;
    let last = SpokeIdentity {
        cert_pem: spoke.view.renewed.clone().unwrap().certificate_pem,
        key_pem: key.serialize_pem(),
        ..first.clone()
    };
    hub.shutdown().await;
    drop(spoke);

    // The record as a hub from before key binding left it: no key.
    {
        let store = gitfleet_hub::store::Store::open(&data.join("store"))
            .await
            .unwrap();
        store
            .update_cluster("dev-1", |r| {
                let mut r = r.cloned().unwrap();
                r.key_fingerprint.clear();
                r.renewed_key_fingerprints.clear();
                (Some(r), ())
            })
            .unwrap();
        store.flush().await.unwrap();
    }
    let hub = start(HubConfig::for_tests(&data)).await;
    let err = FakeSpoke::connect(&hub.grpc_url(), &first, SpokeView::default())
        .await
        .err()
        .expect("an older certificate is not bound");
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &last, SpokeView::default())
        .await
        .unwrap();
    spoke.until("snapshot", |v| v.snapshots == 1).await;
    let bound = hub.store().cluster("dev-1").unwrap().unwrap();
    assert_eq!(
        bound.key_fingerprint,
        gitfleet_hub::pki::cert_key(&der(&last.cert_pem))
            .unwrap()
            .fingerprint,
        "the key of the last certificate is bound"
    );
    hub.shutdown().await;
}

fn der(pem: &str) -> Vec<u8> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    p.contents
}

#[tokio::test]
async fn a_revocation_racing_a_reconnect_never_sends_the_spoke_an_empty_desired_state() {
    let (_tmp, data) = data_dir();
    let hub = start(HubConfig::for_tests(&data)).await;
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let id = register(&hub, "dev-1", &[("env", "dev")]).await;
    admin(&hub)
        .await
        .apply(pb::ApplyRequest {
            documents: vec![
                repo_doc("platform", &git.url()),
                app_doc("web", "platform", "apps/web", "dev"),
            ],
            dry_run: false,
        })
        .await
        .unwrap();
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default())
        .await
        .unwrap();
    spoke
        .until("web at c1", |v| v.commit_of("web").as_deref() == Some(&*c1))
        .await;
    let held = spoke.close();

    // The spoke reconnects; the admin's revocation lands right after the hub admitted the
    // connection and before its session sent anything.
    let admitted = Arc::new(tokio::sync::Notify::new());
    let go_on = Arc::new(tokio::sync::Notify::new());
    let (a, g) = (Arc::clone(&admitted), Arc::clone(&go_on));
    hub.engine().set_connect_hook(Some(Arc::new(
        move |_cluster: String| -> Pin<Box<dyn Future<Output = ()> + Send>> {
            let (a, g) = (Arc::clone(&a), Arc::clone(&g));
            Box::pin(async move {
                a.notify_one();
                g.notified().await;
            })
        },
    )));
    let url = hub.grpc_url();
    let reconnect = {
        let (id, held) = (id.clone(), held.clone());
        tokio::spawn(async move { FakeSpoke::connect(&url, &id, held).await })
    };
    tokio::time::timeout(DEADLINE, admitted.notified())
        .await
        .expect("the connection was admitted");
    assert!(hub.revoke_cluster("dev-1").await.unwrap());
    go_on.notify_one();

    let mut spoke = reconnect.await.unwrap().unwrap();
    assert!(spoke.until_end().await.is_none(), "a clean end");
    let goodbye = spoke.view.goodbye.clone().expect("a goodbye");
    assert!(goodbye.revoked, "{goodbye:?}");
    assert_eq!(
        (spoke.view.snapshots, spoke.view.deltas),
        (held.snapshots, held.deltas),
        "no desired state sent to the revoked spoke"
    );
    assert_eq!(
        spoke.view.commit_of("web").as_deref(),
        Some(&*c1),
        "the spoke still holds its Target: nothing told it to prune"
    );
    hub.shutdown().await;
}

/// Spokes installed together register together: each registration settled by a recompute
/// and a flush shared with the ones written meanwhile must still come back only once its own
/// cluster has desired state (a link opened right after it is never told "nothing yet"), and
/// survive a restart.
#[tokio::test]
async fn registrations_at_once_each_return_with_desired_state_and_survive_a_restart() {
    let (_tmp, data) = data_dir();
    let hub = start(HubConfig::for_tests(&data)).await;
    let fleet = token(&hub, spec(&[("env", "dev")])).await;
    let names: Vec<String> = (0..24).map(|i| format!("burst-{i:02}")).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for name in &names {
        let (hub_engine, token, name) = (Arc::clone(hub.engine()), fleet.clone(), name.clone());
        let url = hub.grpc_url();
        let ca = hub.ca_pem().to_owned();
        tasks.spawn(async move {
            let key = rcgen::KeyPair::generate().unwrap();
            let resp = RegistrationClient::new(channel(&url, &ca, None).await)
                .register(pb::RegisterRequest {
                    token,
                    cluster_name: name.clone(),
                    csr_pem: csr(&key),
                    labels: Default::default(),
                    agent_version: "test-0.1".into(),
                })
                .await;
            // Read the moment the registration returns, before anything else can recompute.
            let desired = hub_engine.desired(&name).map(|d| d.generation);
            (
                name,
                resp.map(|r| r.into_inner().outcome.is_some()),
                desired,
            )
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (name, issued, generation) = joined.unwrap();
        assert!(issued.unwrap(), "{name}: a certificate");
        assert!(
            generation.is_some_and(|g| g > 0),
            "{name}: desired state when its registration returned, got {generation:?}"
        );
    }
    let registered = clusters(&hub).await;
    for name in &names {
        assert!(registered.contains_key(name), "{name} listed");
    }
    hub.shutdown().await;
    let hub = start(HubConfig::for_tests(&data)).await;
    let registered = clusters(&hub).await;
    for name in &names {
        assert!(
            registered.contains_key(name),
            "{name} kept across a restart"
        );
    }
    hub.shutdown().await;
}
