//! Replicas of one hub: a follower serves its spokes' sessions and hands every other call to the
//! leading replica, which takes the caller's identity from the follower only when the follower
//! proves to be a replica (`grpc::forward`).
//!
//! Each test starts hubs on copies of one PKI, as replicas have; their sled stores are their
//! own, which shows where each call was answered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use gitfleet_hub::grpc::forward::{FORWARDED_CLIENT_CERT, FORWARDED_FOR, NO_LEADER};
use gitfleet_hub::leadership::Leadership;
use gitfleet_hub::pki::{Pki, REPLICA_CERT_VALIDITY};
use gitfleet_hub::runtime::{self, HubConfig, HubHandle};
use gitfleet_proto::v1 as pb;
use gitfleet_proto::v1::admin_client::AdminClient;
use gitfleet_proto::v1::audit_client::AuditClient;
use gitfleet_proto::v1::registration_client::RegistrationClient;
use gitfleet_proto::v1::users_client::UsersClient;
use support::*;
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// A leader (alone on its store, as far as it knows) and a follower told that it leads.
struct Replicas {
    leader: HubHandle,
    follower: HubHandle,
    /// The follower's part: what its election would say.
    leadership: watch::Sender<Leadership>,
    leader_dir: std::path::PathBuf,
    _dirs: Vec<tempfile::TempDir>,
}

impl Replicas {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(leader_config: impl FnOnce(&mut HubConfig)) -> Self {
        let (leader_tmp, leader_dir) = data_dir();
        let mut config = HubConfig::for_tests(&leader_dir);
        leader_config(&mut config);
        let leader = runtime::start(config).await.unwrap();
        let (leadership, follower_tmp, follower) =
            follower_of(&leader_dir, Some(leader.grpc_url())).await;
        Self {
            leader,
            follower,
            leadership,
            leader_dir,
            _dirs: vec![leader_tmp, follower_tmp],
        }
    }

    fn follow(&self, leader_url: Option<String>) {
        self.leadership
            .send(Leadership::Follower { leader_url })
            .unwrap();
    }
}

/// A hub on a copy of the PKI in `pki_of`, following `leader_url`.
async fn follower_of(
    pki_of: &Path,
    leader_url: Option<String>,
) -> (watch::Sender<Leadership>, tempfile::TempDir, HubHandle) {
    let (tmp, dir) = data_dir();
    copy_pki(pki_of, &dir);
    let (leadership, watch) = watch::channel(Leadership::Follower { leader_url });
    let hub = runtime::start(HubConfig {
        leadership: Some(watch),
        ..HubConfig::for_tests(&dir)
    })
    .await
    .unwrap();
    (leadership, tmp, hub)
}

fn copy_pki(from: &Path, to: &Path) {
    let target = to.join("pki");
    std::fs::create_dir_all(&target).unwrap();
    for entry in std::fs::read_dir(from.join("pki")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
    }
}

/// A channel with the admin credential the hub wrote.
async fn admin_channel(hub: &HubHandle) -> Channel {
    let config = admin_config(hub);
    let context = config.context(None).unwrap();
    client_with(
        hub,
        &context.client_certificate_data,
        &context.client_key_data,
    )
    .await
}

fn admin_cert_base64(hub: &HubHandle) -> String {
    der_base64(
        &admin_config(hub)
            .context(None)
            .unwrap()
            .client_certificate_data,
    )
}

async fn client_with(hub: &HubHandle, cert_pem: &str, key_pem: &str) -> Channel {
    channel(&hub.grpc_url(), hub.ca_pem(), Some((cert_pem, key_pem))).await
}

async fn cluster_names(admin: &mut AdminClient<Channel>) -> Result<Vec<String>, Status> {
    let mut names: Vec<String> = admin
        .list_clusters(pb::ListClustersRequest::default())
        .await?
        .into_inner()
        .clusters
        .into_iter()
        .map(|c| c.name)
        .collect();
    names.sort();
    Ok(names)
}

/// The clusters a hub's own store holds (no call goes anywhere).
fn stored_clusters(hub: &HubHandle) -> Vec<String> {
    let mut names: Vec<String> = hub
        .engine()
        .clusters()
        .unwrap()
        .into_iter()
        .map(|c| c.record.name)
        .collect();
    names.sort();
    names
}

fn stored_repos(hub: &HubHandle) -> usize {
    hub.engine()
        .get(Some(gitfleet_hub::resources::Kind::Repo), None)
        .unwrap()
        .len()
}

fn der_base64(pem: &str) -> String {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    base64::engine::general_purpose::STANDARD.encode(pem.contents)
}

fn with_header<T>(message: T, name: &'static str, value: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(name, value.parse().unwrap());
    request
}

fn register_request(token: &str, cluster: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        token: token.into(),
        cluster_name: cluster.into(),
        csr_pem: csr(&rcgen::KeyPair::generate().unwrap()),
        labels: Default::default(),
        agent_version: "test-0.1".into(),
    }
}

#[tokio::test]
async fn admin_calls_to_a_follower_are_answered_by_the_leader() {
    let hubs = Replicas::start().await;
    register(&hubs.leader, "dev-1", &[("env", "dev")]).await;
    let git = GitRepo::new();
    git.commit(&[("apps/web/cm.yaml", "kind: ConfigMap\n")], "first");

    let mut through_follower = admin(&hubs.follower).await;
    assert_eq!(
        cluster_names(&mut through_follower).await.unwrap(),
        ["dev-1"],
        "the follower answers with the leader's clusters"
    );
    assert!(stored_clusters(&hubs.follower).is_empty());

    through_follower
        .apply(pb::ApplyRequest {
            documents: vec![repo_doc("platform", &git.url())],
            dry_run: false,
        })
        .await
        .unwrap();
    assert_eq!(stored_repos(&hubs.leader), 1, "the leader stored the Repo");
    assert_eq!(
        stored_repos(&hubs.follower),
        0,
        "the follower wrote nothing"
    );

    // The leader knew the caller: the follower's admin, not the follower itself.
    let whoami = UsersClient::new(admin_channel(&hubs.follower).await)
        .whoami(pb::WhoamiRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(whoami.name, "admin");
    let audit = AuditClient::new(admin_channel(&hubs.leader).await)
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        audit
            .entries
            .iter()
            .any(|e| e.user == "admin" && e.action == "apply" && e.outcome == "ok"),
        "{:?}",
        audit.entries
    );
    hubs.follower.shutdown().await;
    hubs.leader.shutdown().await;
}

#[tokio::test]
async fn a_registration_through_a_follower_lands_on_the_leader() {
    let hubs = Replicas::start().await;
    let token = hubs
        .leader
        .create_token(Duration::from_secs(600), owned(&[("env", "dev")]), 1)
        .await
        .unwrap();
    let id = try_register(&hubs.follower, "eu-1", &token, &[("env", "dev")])
        .await
        .unwrap();
    assert_eq!(stored_clusters(&hubs.leader), ["eu-1"]);
    assert!(stored_clusters(&hubs.follower).is_empty());
    // The leader's certificate, good on the leader.
    let mut spoke = FakeSpoke::connect(&hubs.leader.grpc_url(), &id, SpokeView::default())
        .await
        .unwrap();
    spoke.until("first snapshot", |v| v.snapshots == 1).await;
    hubs.follower.shutdown().await;
    hubs.leader.shutdown().await;
}

#[tokio::test]
async fn a_cluster_certificate_is_refused_through_a_follower_as_by_the_leader() {
    let hubs = Replicas::start().await;
    let id = register(&hubs.leader, "dev-1", &[("env", "dev")]).await;
    let mut refusals = Vec::new();
    for hub in [&hubs.leader, &hubs.follower] {
        let mut as_cluster = AdminClient::new(client_with(hub, &id.cert_pem, &id.key_pem).await);
        refusals.push(cluster_names(&mut as_cluster).await.unwrap_err());
    }
    for refused in &refusals {
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert_eq!(
            refused.message(),
            "cluster \"dev-1\" may not call the admin API; a user's certificate is required"
        );
    }

    // No certificate at all: the same refusal as the leader's.
    let mut anonymous =
        AdminClient::new(channel(&hubs.follower.grpc_url(), hubs.follower.ca_pem(), None).await);
    let refused = cluster_names(&mut anonymous).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert_eq!(
        refused.message(),
        "a client certificate issued by this hub is required"
    );
    hubs.follower.shutdown().await;
    hubs.leader.shutdown().await;
}

#[tokio::test]
async fn forwarded_headers_from_callers_that_are_not_replicas_are_ignored() {
    let hubs = Replicas::start_with(|c| c.register_rate_limit = 1).await;
    let id = register_without_limit(&hubs.leader, "dev-1").await;
    let admin_cert = admin_cert_base64(&hubs.leader);

    // A cluster claiming to pass on the admin's certificate, to the leader and to a follower.
    for hub in [&hubs.leader, &hubs.follower] {
        let mut as_cluster = AdminClient::new(client_with(hub, &id.cert_pem, &id.key_pem).await);
        let refused = as_cluster
            .list_clusters(with_header(
                pb::ListClustersRequest::default(),
                FORWARDED_CLIENT_CERT,
                &admin_cert,
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert_eq!(
            refused.message(),
            "cluster \"dev-1\" may not call the admin API; a user's certificate is required"
        );
    }
    // A caller with no certificate claiming to pass on the admin's: the follower has no
    // certificate of its own to put in the header, so only taking the caller's out stops it.
    for hub in [&hubs.leader, &hubs.follower] {
        let mut anonymous = AdminClient::new(channel(&hub.grpc_url(), hub.ca_pem(), None).await);
        let refused = anonymous
            .list_clusters(with_header(
                pb::ListClustersRequest::default(),
                FORWARDED_CLIENT_CERT,
                &admin_cert,
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        assert_eq!(
            refused.message(),
            "a client certificate issued by this hub is required"
        );
    }

    // Nor does a claimed address escape the registration rate limit (1 a minute).
    let mut registration =
        RegistrationClient::new(channel(&hubs.leader.grpc_url(), hubs.leader.ca_pem(), None).await);
    for (i, claimed) in ["198.51.100.1:1", "198.51.100.2:1"].into_iter().enumerate() {
        let refused = registration
            .register(with_header(
                register_request("not-a-token", "eu-1"),
                FORWARDED_FOR,
                claimed,
            ))
            .await
            .unwrap_err();
        if i == 1 {
            assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
            assert!(
                refused
                    .message()
                    .starts_with("too many registrations from 127.0.0.1;"),
                "{refused:?}"
            );
        }
    }
    hubs.follower.shutdown().await;
    hubs.leader.shutdown().await;
}

/// A cluster registered in-process (the rate-limited gRPC call is what a test checks).
async fn register_without_limit(hub: &HubHandle, cluster: &str) -> SpokeIdentity {
    let token = hub
        .create_token(Duration::from_secs(600), owned(&[]), 1)
        .await
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let outcome = hub
        .engine()
        .register(gitfleet_hub::engine::Registration {
            token,
            cluster: cluster.into(),
            csr_pem: csr(&key),
            labels: Default::default(),
            agent_version: "test-0.1".into(),
        })
        .await
        .unwrap();
    let gitfleet_hub::engine::RegisterOutcome::Issued(issued) = outcome else {
        panic!("registration of {cluster} did not issue a certificate");
    };
    SpokeIdentity {
        cluster: cluster.into(),
        cert_pem: issued.certificate_pem,
        key_pem: key.serialize_pem(),
        ca_pem: hub.ca_pem().to_owned(),
    }
}

#[tokio::test]
async fn a_replica_certificate_speaks_only_for_the_caller_it_passes_on() {
    let hubs = Replicas::start_with(|c| c.register_rate_limit = 1).await;
    let id = register_without_limit(&hubs.leader, "dev-1").await;
    let replica = Pki::load_or_create(&hubs.leader_dir.join("pki"), &[])
        .unwrap()
        .issue_replica(REPLICA_CERT_VALIDITY)
        .unwrap();
    let mut as_replica =
        AdminClient::new(client_with(&hubs.leader, &replica.cert_pem, &replica.key_pem).await);

    // On its own, a replica is nobody.
    let refused = cluster_names(&mut as_replica).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert_eq!(
        refused.message(),
        "a client certificate issued by this hub is required"
    );
    // Passing on the admin's certificate, it calls as the admin; a cluster's, as the cluster.
    let admin_cert = admin_cert_base64(&hubs.leader);
    let listed = as_replica
        .list_clusters(with_header(
            pb::ListClustersRequest::default(),
            FORWARDED_CLIENT_CERT,
            &admin_cert,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.clusters.len(), 1);
    let refused = as_replica
        .list_clusters(with_header(
            pb::ListClustersRequest::default(),
            FORWARDED_CLIENT_CERT,
            &der_base64(&id.cert_pem),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // The registration rate limit counts the address it passes on.
    let mut registration = RegistrationClient::new(
        client_with(&hubs.leader, &replica.cert_pem, &replica.key_pem).await,
    );
    for attempt in 0..2 {
        let refused = registration
            .register(with_header(
                register_request("not-a-token", "eu-1"),
                FORWARDED_FOR,
                "198.51.100.7:4000",
            ))
            .await
            .unwrap_err();
        if attempt == 1 {
            assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
            assert!(
                refused
                    .message()
                    .starts_with("too many registrations from 198.51.100.7;"),
                "{refused:?}"
            );
        }
    }
    // A malformed header from a replica is a refusal naming it, not a guess.
    let refused = registration
        .register(with_header(
            register_request("not-a-token", "eu-1"),
            FORWARDED_FOR,
            "somewhere",
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused
            .message()
            .starts_with("header x-gitfleet-forwarded-for of a call handed over by a hub replica is not an address"),
        "{refused:?}"
    );

    // A follower does not pass on what a replica handed it: two followers that each think the
    // other leads must not bounce a call between them.
    let mut to_follower =
        AdminClient::new(client_with(&hubs.follower, &replica.cert_pem, &replica.key_pem).await);
    let refused = to_follower
        .list_clusters(with_header(
            pb::ListClustersRequest::default(),
            FORWARDED_CLIENT_CERT,
            &admin_cert,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    hubs.follower.shutdown().await;
    hubs.leader.shutdown().await;
}

#[tokio::test]
async fn a_follower_without_a_reachable_leader_answers_unavailable() {
    let hubs = Replicas::start().await;
    let mut through_follower = admin(&hubs.follower).await;

    hubs.follow(None);
    let refused = cluster_names(&mut through_follower).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(refused.message(), NO_LEADER);
    let mut registration = RegistrationClient::new(
        channel(&hubs.follower.grpc_url(), hubs.follower.ca_pem(), None).await,
    );
    let refused = registration
        .register(register_request("not-a-token", "eu-1"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(refused.message(), NO_LEADER);

    // A leader that is gone: a port nobody listens on.
    let gone = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("https://{}", listener.local_addr().unwrap())
    };
    hubs.follow(Some(gone.clone()));
    let refused = cluster_names(&mut through_follower).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused
            .message()
            .starts_with(&format!("cannot reach the leading replica at {gone}: ")),
        "{refused:?}"
    );

    // A hub outside this PKI (what an address taken over would be) is not a leader to it.
    let (_foreign_tmp, foreign_dir) = data_dir();
    let foreign = start_hub(&foreign_dir).await;
    hubs.follow(Some(foreign.grpc_url()));
    let refused = cluster_names(&mut through_follower).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().starts_with(&format!(
            "cannot reach the leading replica at {}: ",
            foreign.grpc_url()
        )) && refused.message().contains("certificate"),
        "{refused:?}"
    );
    foreign.shutdown().await;

    // The election names a leader: the follower hands calls to it, and to the next one named.
    register(&hubs.leader, "dev-1", &[]).await;
    hubs.follow(Some(hubs.leader.grpc_url()));
    assert_eq!(
        cluster_names(&mut through_follower).await.unwrap(),
        ["dev-1"]
    );
    let (next_leadership, next_tmp, next) = follower_of(&hubs.leader_dir, None).await;
    next_leadership.send(Leadership::Leader).unwrap();
    register(&next, "dev-2", &[]).await;
    hubs.follow(Some(next.grpc_url()));
    assert_eq!(
        cluster_names(&mut through_follower).await.unwrap(),
        ["dev-2"]
    );
    next.shutdown().await;
    drop(next_tmp);
    hubs.follower.shutdown().await;
    hubs.leader.shutdown().await;
}

#[tokio::test]
async fn a_follower_serves_spoke_sessions_itself() {
    let hubs = Replicas::start().await;
    // Registered while the follower led: the cluster is in its own store only.
    hubs.leadership.send(Leadership::Leader).unwrap();
    let id = register(&hubs.follower, "local-1", &[]).await;
    assert_eq!(stored_clusters(&hubs.follower), ["local-1"]);
    hubs.follow(Some(hubs.leader.grpc_url()));

    let mut spoke = FakeSpoke::connect(&hubs.follower.grpc_url(), &id, SpokeView::default())
        .await
        .unwrap();
    spoke.until("first snapshot", |v| v.snapshots == 1).await;
    // The leader does not know it: the session was not handed over.
    let refused = match FakeSpoke::connect(&hubs.leader.grpc_url(), &id, SpokeView::default()).await
    {
        Err(status) => status,
        Ok(mut session) => session
            .until_end()
            .await
            .expect("the leader refuses a cluster it never registered"),
    };
    assert_ne!(refused.code(), Code::Ok, "{refused:?}");
    hubs.follower.shutdown().await;
    hubs.leader.shutdown().await;
}

#[tokio::test]
async fn a_leader_that_never_finishes_its_handshake_is_given_up_on() {
    let hubs = Replicas::start().await;
    // Connections are accepted (by the kernel) and never answered: a frozen process.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("https://{}", silent.local_addr().unwrap());
    hubs.follow(Some(silent_url.clone()));
    let mut through_follower = admin(&hubs.follower).await;
    let refused = tokio::time::timeout(DEADLINE, cluster_names(&mut through_follower))
        .await
        .expect("the follower gives up on a silent leader")
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().starts_with(&format!(
            "cannot reach the leading replica at {silent_url}: "
        )),
        "{refused:?}"
    );
    drop(silent);
    hubs.follower.shutdown().await;
    hubs.leader.shutdown().await;
}
