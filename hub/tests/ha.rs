//! Several hub replicas on one etcd prefix: one leads (follows Git, decides rollouts, answers
//! admin calls), every one serves the spokes linked to it, and what one writes reaches the
//! others through etcd's watch.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "etcd")]

use crate::http;
use crate::support;

use std::path::Path;
use std::time::Duration;

use gitfleet_hub::leadership::Leadership;
use gitfleet_hub::runtime::{self, HubConfig, HubHandle, StoreConfig};
use gitfleet_hub::store::etcd::EtcdOptions;
use gitfleet_proto::v1 as pb;
use support::etcd::EtcdServer;
use support::*;

fn replica(data: &Path, endpoint: &str, prefix: &str) -> HubConfig {
    let mut options = EtcdOptions::new(vec![endpoint.to_owned()]);
    options.prefix = prefix.into();
    // A lost replica is replaced within this.
    options.hold_ttl = Duration::from_secs(3);
    HubConfig {
        store: StoreConfig::Etcd(options),
        webhook_secret: Some(WEBHOOK_SECRET.into()),
        ..HubConfig::for_tests(data)
    }
}

const WEBHOOK_SECRET: &str = "webhook-secret";

/// `gitfleet_hub_leader` on a replica's `/metrics`.
async fn leader_gauge(hub: &HubHandle) -> String {
    let (code, body) = http::get(hub.http_addr().unwrap(), "/metrics").await;
    assert_eq!(code, 200);
    body.lines()
        .find(|l| l.starts_with("gitfleet_hub_leader "))
        .unwrap_or_else(|| panic!("no gitfleet_hub_leader in {body}"))
        .to_owned()
}

/// A second replica's data directory: the first's PKI (`gitfleet-hub init` and a Secret do
/// this in a real install).
fn second_data_dir(first: &Path) -> (tempfile::TempDir, std::path::PathBuf) {
    let (tmp, data) = data_dir();
    let pki = data.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    for entry in std::fs::read_dir(first.join("pki")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), pki.join(entry.file_name())).unwrap();
    }
    (tmp, data)
}

/// Repo `repo` and App `web` (on env=dev) applied at `leader`, and a spoke of `id` linked to
/// `replica` once it holds web at `commit`.
async fn web_through(
    leader: &HubHandle,
    repo: pb::ResourceDocument,
    replica: &HubHandle,
    id: &SpokeIdentity,
    commit: &str,
) -> FakeSpoke {
    admin(leader)
        .await
        .apply(pb::ApplyRequest {
            documents: vec![repo, app_doc("web", "platform", "apps/web", "dev")],
            dry_run: false,
        })
        .await
        .unwrap();
    let mut spoke = FakeSpoke::connect(&replica.grpc_url(), id, SpokeView::default())
        .await
        .unwrap();
    spoke
        .until("web at the commit, through the replica", |v| {
            v.commit_of("web").as_deref() == Some(commit)
        })
        .await;
    spoke
}

/// A follower that knows which replica leads (one that does not yet, between its start and
/// its first look at the election, answers every forwarded call with UNAVAILABLE).
fn follows_a_leader(part: &Leadership) -> bool {
    matches!(
        part,
        Leadership::Follower {
            leader_url: Some(_)
        }
    )
}

async fn until_part(hub: &HubHandle, what: &str, wanted: impl Fn(&Leadership) -> bool) {
    let mut part = hub.leadership();
    tokio::time::timeout(DEADLINE, part.wait_for(|p| wanted(p)))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap();
}

#[tokio::test]
async fn one_replica_leads_and_a_spoke_on_another_gets_what_it_decides() {
    let etcd = EtcdServer::start();
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let (_ta, a_data) = data_dir();
    let a = runtime::start(replica(&a_data, &etcd.endpoint(), "/ha/"))
        .await
        .unwrap();
    until_part(&a, "the first replica to lead", Leadership::leads).await;
    let (_tb, b_data) = second_data_dir(&a_data);
    let b = runtime::start(replica(&b_data, &etcd.endpoint(), "/ha/"))
        .await
        .unwrap();
    until_part(&b, "the second replica to follow the first", |p| {
        *p == Leadership::Follower {
            leader_url: Some(a.grpc_url()),
        }
    })
    .await;
    assert!(a.engine().leads() && !b.engine().leads());
    assert_eq!(leader_gauge(&a).await, "gitfleet_hub_leader 1");
    assert_eq!(leader_gauge(&b).await, "gitfleet_hub_leader 0");

    // The leader registers the cluster and decides its desired state; the spoke is linked to
    // the other replica, which learns that desired state from etcd.
    let id = register(&a, "dev-1", &[("env", "dev")]).await;
    // Polled hourly: the leader fetches on triggers and webhooks only, so a test sees which.
    let repo = doc(serde_json::json!({
        "apiVersion": "gitfleet.dev/v1", "kind": "Repo",
        "metadata": {"name": "platform"},
        "spec": {"url": git.url(), "ref": {"branch": "main"}, "pollInterval": "1h"}
    }));
    let mut spoke = web_through(&a, repo, &b, &id, &c1).await;
    assert_eq!(spoke.view.epoch, a.store().epoch());

    // Its report, acknowledged by the follower, is what the leader knows of the Target, and the
    // leader counts the cluster as connected (it is, at the other replica).
    spoke.report(1, "web", &c1, "synced via b").await;
    spoke.until("ack 1", |v| v.acked_seq == 1).await;
    eventually("the leader to see the report", || async {
        a.store()
            .report_summary("dev-1", "web")
            .filter(|s| s.seq == 1)
    })
    .await;
    eventually("the leader to count dev-1 connected", || async {
        let clusters = admin(&a)
            .await
            .list_clusters(pb::ListClustersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .clusters;
        clusters
            .iter()
            .find(|c| c.name == "dev-1" && c.connected)
            .map(|_| ())
    })
    .await;

    // An admin call to the follower is answered by the leader.
    let clusters = admin(&b)
        .await
        .list_clusters(pb::ListClustersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .clusters;
    assert!(clusters.iter().any(|c| c.name == "dev-1" && c.connected));

    // A new commit whose push webhook reaches the follower: the leader, which follows Git,
    // fetches it, and the spoke on the follower gets it.
    let c2 = git.commit(&[("apps/web/cm.yaml", "v: 2\n")], "two");
    let push = http::push_payload(&git.url());
    let signature = http::github_sig(&push, WEBHOOK_SECRET);
    let code = http::post(
        b.http_addr().unwrap(),
        "/webhooks/github",
        &[("X-Hub-Signature-256", signature)],
        &push,
    )
    .await;
    assert!((200..300).contains(&code), "{code}");
    spoke
        .until("web at the second commit", |v| {
            v.commit_of("web").as_deref() == Some(c2.as_str())
        })
        .await;

    // The leader goes: the other replica leads within the lease, follows Git from then on, and
    // its spoke never had to move.
    a.shutdown().await;
    until_part(&b, "the follower to lead", Leadership::leads).await;
    eventually("the new leader's gauge", || async {
        (leader_gauge(&b).await == "gitfleet_hub_leader 1").then_some(())
    })
    .await;
    let c3 = git.commit(&[("apps/web/cm.yaml", "v: 3\n")], "three");
    eventually("the new leader to fetch", || async {
        b.engine().trigger_fetch("platform").then_some(())
    })
    .await;
    spoke
        .until("web at the third commit, from the new leader", |v| {
            v.commit_of("web").as_deref() == Some(c3.as_str())
        })
        .await;
    spoke
        .report(2, "web", &c3, "synced after the failover")
        .await;
    spoke.until("ack 2", |v| v.acked_seq == 2).await;
    b.shutdown().await;
}

#[tokio::test]
async fn one_etcd_member_of_three_killed_stops_nothing() {
    let mut etcd = support::etcd::EtcdCluster::start(3);
    let endpoints = etcd.endpoints();
    let on_all = |data: &Path| {
        let mut config = replica(data, &endpoints[0], "/ha3/");
        if let StoreConfig::Etcd(options) = &mut config.store {
            options.endpoints = endpoints.clone();
        }
        config
    };
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let (_ta, a_data) = data_dir();
    let a = runtime::start(on_all(&a_data)).await.unwrap();
    until_part(&a, "the first replica to lead", Leadership::leads).await;
    let (_tb, b_data) = second_data_dir(&a_data);
    let b = runtime::start(on_all(&b_data)).await.unwrap();
    until_part(&b, "the second replica to follow", follows_a_leader).await;
    let id = register(&a, "dev-1", &[("env", "dev")]).await;
    let mut spoke = web_through(&a, repo_doc("platform", &git.url()), &b, &id, &c1).await;
    spoke.report(1, "web", &c1, "before").await;
    spoke.until("ack 1", |v| v.acked_seq == 1).await;

    // Each member in turn is the one that dies: whichever it was (etcd's leader or not), the
    // two others keep a quorum and the hub keeps going.
    etcd.kill(0);
    let c2 = git.commit(&[("apps/web/cm.yaml", "v: 2\n")], "two");
    assert!(a.engine().trigger_fetch("platform"));
    spoke
        .until("web at the second commit with a member down", |v| {
            v.commit_of("web").as_deref() == Some(c2.as_str())
        })
        .await;
    spoke.report(2, "web", &c2, "after").await;
    spoke.until("ack 2", |v| v.acked_seq == 2).await;
    register(&a, "dev-2", &[("env", "dev")]).await;
    assert!(a.store().failure().is_none(), "{:?}", a.store().failure());
    assert!(b.store().failure().is_none(), "{:?}", b.store().failure());
    assert!(a.engine().leads() && !b.engine().leads());
    eventually(
        "the leader to see the report made after the member died",
        || async {
            a.store()
                .report_summary("dev-1", "web")
                .filter(|s| s.seq == 2)
        },
    )
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_replica_cut_off_from_etcd_stops_acknowledging_and_leading() {
    let etcd = EtcdServer::start();
    let upstream: std::net::SocketAddr = etcd
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let link = gitfleet_support::proxy::Proxy::start(upstream)
        .await
        .unwrap();
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let (_ta, a_data) = data_dir();
    let a = runtime::start(replica(
        &a_data,
        &format!("http://{}", link.addr()),
        "/cut/",
    ))
    .await
    .unwrap();
    until_part(
        &a,
        "the replica behind the proxy to lead",
        Leadership::leads,
    )
    .await;
    let (_tb, b_data) = second_data_dir(&a_data);
    let b = runtime::start(replica(&b_data, &etcd.endpoint(), "/cut/"))
        .await
        .unwrap();
    until_part(&b, "the other replica to follow", follows_a_leader).await;
    let (id, mut spoke) = web_on_dev_1(&a, &git, &c1).await;
    spoke.report(1, "web", &c1, "acked before the cut").await;
    spoke.until("ack 1", |v| v.acked_seq == 1).await;

    // The replica loses etcd: it acknowledges nothing from then on, stops leading once its
    // lease has run out, and stops itself; the other replica takes over.
    link.cut();
    spoke.report(2, "web", &c1, "sent after the cut").await;
    let stopped = a.shutdown_token();
    tokio::time::timeout(DEADLINE, stopped.cancelled())
        .await
        .expect("the cut-off replica stops itself");
    assert!(
        a.store().failure().is_some_and(|f| f.contains("lease")),
        "{:?}",
        a.store().failure()
    );
    until_part(&b, "the other replica to lead", Leadership::leads).await;
    spoke.until_end().await;
    let held = spoke.close();
    assert_eq!(
        held.acked_seq, 1,
        "nothing sent after the cut was acknowledged"
    );

    // The spoke moves to the replica that leads now: what was acknowledged is there, and the
    // report the cut-off replica never acknowledged is taken now.
    let mut spoke = FakeSpoke::connect(&b.grpc_url(), &id, held).await.unwrap();
    spoke
        .until("the new leader's hello", |v| v.acked_seq == 1)
        .await;
    spoke.report(2, "web", &c1, "sent again").await;
    spoke.until("ack 2", |v| v.acked_seq == 2).await;
    let report = b.store().report("dev-1", "web").await.unwrap().unwrap();
    assert_eq!(report.seq, 2);
    a.shutdown().await;
    b.shutdown().await;
}

/// A replica started after a spoke linked to another one knows that spoke is connected: the
/// links held elsewhere are read at start, not only learnt from the watch afterwards (a
/// restarted replica that came to lead counted them disconnected, and a rollout with a
/// strategy skipped them).
#[tokio::test]
async fn a_replica_started_later_knows_the_links_the_others_hold() {
    let etcd = EtcdServer::start();
    let (_ta, a_data) = data_dir();
    let a = runtime::start(replica(&a_data, &etcd.endpoint(), "/late/"))
        .await
        .unwrap();
    until_part(&a, "the first replica to lead", Leadership::leads).await;
    let (_tb, b_data) = second_data_dir(&a_data);
    let b = runtime::start(replica(&b_data, &etcd.endpoint(), "/late/"))
        .await
        .unwrap();
    until_part(&b, "the second replica to follow", follows_a_leader).await;
    let id = register(&a, "dev-1", &[("env", "dev")]).await;
    let _spoke = FakeSpoke::connect(&b.grpc_url(), &id, SpokeView::default())
        .await
        .unwrap();
    eventually(
        "the leader to see dev-1's link at the other replica",
        || async { a.store().connected_elsewhere("dev-1").then_some(()) },
    )
    .await;

    let (_tc, c_data) = second_data_dir(&a_data);
    let c = runtime::start(replica(&c_data, &etcd.endpoint(), "/late/"))
        .await
        .unwrap();
    assert!(
        c.store().connected_elsewhere("dev-1"),
        "a replica started after the link does not know it"
    );
    c.shutdown().await;
    b.shutdown().await;
    a.shutdown().await;
}

/// `diff --live` on several replicas: every replica answers it; one whose cluster's spoke is
/// linked to another replica asks that replica, on the caller's behalf, which asks its spoke.
#[tokio::test]
async fn diff_live_reaches_a_spoke_linked_to_another_replica() {
    use gitfleet_proto::v1::spoke_message::Msg as In;
    let etcd = EtcdServer::start();
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let (_ta, a_data) = data_dir();
    let a = runtime::start(replica(&a_data, &etcd.endpoint(), "/diff/"))
        .await
        .unwrap();
    until_part(&a, "the first replica to lead", Leadership::leads).await;
    let (_tb, b_data) = second_data_dir(&a_data);
    let b = runtime::start(replica(&b_data, &etcd.endpoint(), "/diff/"))
        .await
        .unwrap();
    until_part(&b, "the second replica to follow", follows_a_leader).await;
    let id = register(&a, "dev-1", &[("env", "dev")]).await;
    let mut spoke = web_through(&a, repo_doc("platform", &git.url()), &b, &id, &c1).await;
    eventually("the leader to know where dev-1's link is", || async {
        a.store().linked_elsewhere_at("dev-1")
    })
    .await;
    for (n, (at, hub)) in [("the leader", &a), ("the follower", &b)]
        .into_iter()
        .enumerate()
    {
        let mut client = admin(hub).await;
        let asking = tokio::spawn(async move {
            client
                .diff_live(pb::DiffLiveRequest {
                    app: "web".into(),
                    ..Default::default()
                })
                .await
        });
        spoke
            .until("the diff request", |v| v.diff_requests.len() == n + 1)
            .await;
        let asked = spoke.view.diff_requests[n].clone();
        spoke
            .send(In::Diff(pb::DiffResult {
                request_id: asked.request_id,
                cluster: "dev-1".into(),
                revision: c1.clone(),
                updates: 1,
                ..Default::default()
            }))
            .await;
        let answer = asking
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("asked at {at}: {e:?}"))
            .into_inner();
        assert_eq!(answer.revision, c1, "asked at {at}");
        assert_eq!(answer.clusters.len(), 1, "asked at {at}: {answer:?}");
        let dev1 = &answer.clusters[0];
        assert_eq!(
            (dev1.cluster.as_str(), dev1.updates, dev1.error.as_str()),
            ("dev-1", 1, ""),
            "asked at {at}: {dev1:?}"
        );
    }
    b.shutdown().await;
    a.shutdown().await;
}

/// The live reads on several replicas: each replica serves them from its own store, which
/// follows the others' writes. A stream at the leader sees what a spoke linked to a follower
/// reports (the report and the event the follower recorded reach it through etcd's watch); a
/// stream at the follower sees what the leader records (an App suspended); and the follower's
/// stream keeps going when the leader goes.
#[tokio::test]
async fn streams_at_every_replica_see_what_the_others_write_and_outlive_the_leader() {
    use gitfleet_proto::v1::watch_client::WatchClient;
    use tonic::Streaming;

    let etcd = EtcdServer::start();
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let (_ta, a_data) = data_dir();
    let a = runtime::start(replica(&a_data, &etcd.endpoint(), "/watch/"))
        .await
        .unwrap();
    until_part(&a, "the first replica to lead", Leadership::leads).await;
    let (_tb, b_data) = second_data_dir(&a_data);
    let b = runtime::start(replica(&b_data, &etcd.endpoint(), "/watch/"))
        .await
        .unwrap();
    until_part(&b, "the second replica to follow", follows_a_leader).await;
    let id = register(&a, "dev-1", &[("env", "dev")]).await;
    let mut spoke = web_through(&a, repo_doc("platform", &git.url()), &b, &id, &c1).await;

    let watch_at = async |hub: &HubHandle| {
        let ctx = admin_config(hub).context(None).unwrap().clone();
        WatchClient::new(
            channel(
                &hub.grpc_url(),
                &ctx.certificate_authority_data,
                Some((&ctx.client_certificate_data, &ctx.client_key_data)),
            )
            .await,
        )
    };
    let status_of = async |watch: &mut WatchClient<tonic::transport::Channel>| {
        watch
            .watch_status(pb::WatchStatusRequest {
                app: "web".into(),
                cluster: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
    };
    let events_of = async |watch: &mut WatchClient<tonic::transport::Channel>| {
        watch
            .watch_events(pb::WatchEventsRequest {
                app: "web".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    };
    async fn until_target(stream: &mut Streaming<pb::WatchStatusResponse>, message: &str) {
        loop {
            let m = tokio::time::timeout(DEADLINE, stream.message())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for a Target saying {message:?}"))
                .unwrap()
                .unwrap();
            if m.targets.iter().any(|t| t.message == message) {
                return;
            }
        }
    }
    async fn until_event(stream: &mut Streaming<pb::WatchEventsResponse>, kind: &str) {
        loop {
            let m = tokio::time::timeout(DEADLINE, stream.message())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for a {kind} event"))
                .unwrap()
                .unwrap();
            assert!(m.events.iter().all(|e| e.app == "web"), "{m:?}");
            if m.events.iter().any(|e| e.kind == kind) {
                return;
            }
        }
    }
    let mut at_a = watch_at(&a).await;
    let mut at_b = watch_at(&b).await;
    let mut status_a = status_of(&mut at_a).await;
    let mut events_a = events_of(&mut at_a).await;
    let mut status_b = status_of(&mut at_b).await;
    let mut events_b = events_of(&mut at_b).await;

    // A report to the follower: the leader's streams see it, and the event the follower made.
    spoke.report(1, "web", &c1, "synced via b").await;
    spoke.until("ack 1", |v| v.acked_seq == 1).await;
    until_target(&mut status_a, "synced via b").await;
    until_event(&mut events_a, "Synced").await;
    until_target(&mut status_b, "synced via b").await;
    until_event(&mut events_b, "Synced").await;

    // What the leader records reaches the follower's stream.
    let ctx = admin_config(&a).context(None).unwrap().clone();
    let admin_channel = channel(
        &a.grpc_url(),
        &ctx.certificate_authority_data,
        Some((&ctx.client_certificate_data, &ctx.client_key_data)),
    )
    .await;
    gitfleet_proto::v1::rollouts_client::RolloutsClient::new(admin_channel)
        .suspend_app(pb::AppControlRequest {
            app: "web".into(),
            cluster: String::new(),
        })
        .await
        .unwrap();
    until_event(&mut events_b, "Suspended").await;
    until_event(&mut events_a, "Suspended").await;

    // The leader goes; the follower's streams carry on and it leads.
    a.shutdown().await;
    until_part(&b, "the follower to lead", Leadership::leads).await;
    spoke.report(2, "web", &c1, "after the leader went").await;
    spoke.until("ack 2", |v| v.acked_seq == 2).await;
    until_target(&mut status_b, "after the leader went").await;
    b.shutdown().await;
}

/// One raw HTTP/1.1 GET (with a cookie): the whole answer, head and body.
async fn get_raw(addr: std::net::SocketAddr, path: &str, cookie: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

/// The dashboard on two replicas: a sign-in link asked of a follower (made by the leader) is
/// spent at the follower, once — a second use at the leader is refused — and the session it
/// starts is accepted at either replica.
#[tokio::test]
async fn a_dashboard_link_is_spent_once_and_its_session_accepted_by_every_replica() {
    use gitfleet_proto::v1::users_client::UsersClient;
    let etcd = EtcdServer::start();
    let (_ta, a_data) = data_dir();
    let a = runtime::start(replica(&a_data, &etcd.endpoint(), "/ui/"))
        .await
        .unwrap();
    until_part(&a, "the first replica to lead", Leadership::leads).await;
    let (_tb, b_data) = second_data_dir(&a_data);
    let b = runtime::start(replica(&b_data, &etcd.endpoint(), "/ui/"))
        .await
        .unwrap();
    until_part(&b, "the second replica to follow", follows_a_leader).await;

    let config = admin_config(&a);
    let ctx = config.context(None).unwrap();
    let channel = channel(
        &b.grpc_url(),
        &ctx.certificate_authority_data,
        Some((&ctx.client_certificate_data, &ctx.client_key_data)),
    )
    .await;
    let link = UsersClient::new(channel)
        .create_dashboard_signin(pb::CreateDashboardSigninRequest {})
        .await
        .unwrap()
        .into_inner();
    let path = &link.url[link.url.find("/ui/signin").unwrap()..];

    let answer = get_raw(b.http_addr().unwrap(), path, "").await;
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    let cookie = answer
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: gitfleet_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    let cookie = format!("gitfleet_session={cookie}");
    let again = get_raw(a.http_addr().unwrap(), path, "").await;
    assert!(again.starts_with("HTTP/1.1 401"), "{again}");
    for replica in [&a, &b] {
        let me = get_raw(replica.http_addr().unwrap(), "/ui/api/me", &cookie).await;
        assert!(me.starts_with("HTTP/1.1 200"), "{me}");
        assert!(me.contains("\"role\":\"admin\""), "{me}");
    }
    b.shutdown().await;
    a.shutdown().await;
}
