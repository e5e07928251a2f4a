//! Live reads (the `Watch` service): a stream sends where things stand, then what changes;
//! an events stream resumed from an id misses nothing and repeats nothing; streams are
//! authorized as the reads they mirror.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use gitfleet_hub::runtime::HubHandle;
use gitfleet_proto::v1 as pb;
use gitfleet_proto::v1::rollouts_client::RolloutsClient;
use gitfleet_proto::v1::spoke_message::Msg as In;
use gitfleet_proto::v1::users_client::UsersClient;
use gitfleet_proto::v1::watch_client::WatchClient;
use support::*;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

async fn admin_channel(hub: &HubHandle) -> Channel {
    let cfg = admin_config(hub);
    let ctx = cfg.context(None).unwrap();
    channel(
        &ctx.server,
        &ctx.certificate_authority_data,
        Some((&ctx.client_certificate_data, &ctx.client_key_data)),
    )
    .await
}

/// The next message of `stream`, within the deadline.
async fn next<T>(stream: &mut Streaming<T>, what: &str) -> T {
    tokio::time::timeout(DEADLINE, stream.message())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|e| panic!("stream failed waiting for {what}: {e}"))
        .unwrap_or_else(|| panic!("stream ended waiting for {what}"))
}

/// A report of `app` on the spoke's cluster with the given sync state (Healthy).
async fn report(spoke: &FakeSpoke, seq: u64, app: &str, revision: &str, sync: pb::SyncState) {
    spoke
        .send(In::Status(pb::StatusReport {
            seq,
            cluster: spoke.id.cluster.clone(),
            target_id: app.into(),
            revision: revision.into(),
            spec_generation: 1,
            sync: sync as i32,
            health: pb::HealthState::Healthy as i32,
            message: format!("report {seq}"),
            resources: vec![],
            observed_at_unix: 1,
            trace: None,
            chart_digest: String::new(),
        }))
        .await;
}

#[tokio::test]
async fn a_status_stream_sends_a_snapshot_then_only_what_changed_in_what_it_watches() {
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
    let (_, mut spoke) = web_on_dev_1(&hub, &git, &c1).await;
    let mut watch = WatchClient::new(admin_channel(&hub).await);
    let mut stream = watch
        .watch_status(pb::WatchStatusRequest {
            app: "web".into(),
            cluster: String::new(),
        })
        .await
        .unwrap()
        .into_inner();

    let snapshot = next(&mut stream, "the snapshot").await;
    assert!(
        snapshot.snapshot && snapshot.snapshot_complete,
        "{snapshot:?}"
    );
    assert_eq!(snapshot.targets.len(), 1);
    assert_eq!(
        (
            snapshot.targets[0].app.as_str(),
            snapshot.targets[0].cluster.as_str()
        ),
        ("web", "dev-1")
    );
    assert_eq!(snapshot.targets[0].desired_revision, c1);
    assert_eq!(snapshot.targets[0].updated_at_unix, 0, "no report yet");

    // Another App on the same cluster: its Target and its reports are not what this stream
    // watches, and web's Target does not change by it.
    admin(&hub)
        .await
        .apply(pb::ApplyRequest {
            documents: vec![app_doc("api", "platform", "apps/api", "dev")],
            dry_run: false,
        })
        .await
        .unwrap();
    spoke
        .until("api given", |v| v.commit_of("api").is_some())
        .await;
    report(&spoke, 1, "api", &c1, pb::SyncState::Synced).await;
    spoke.until("ack 1", |v| v.acked_seq == 1).await;

    // web's report is the next thing the stream sends.
    report(&spoke, 2, "web", &c1, pb::SyncState::Synced).await;
    let change = next(&mut stream, "web's report").await;
    assert!(!change.snapshot && !change.snapshot_complete, "{change:?}");
    assert!(change.removed.is_empty());
    assert_eq!(change.targets.len(), 1, "{change:?}");
    let t = &change.targets[0];
    assert_eq!((t.app.as_str(), t.cluster.as_str()), ("web", "dev-1"));
    assert_eq!(t.message, "report 2");
    assert_eq!(t.sync, pb::SyncState::Synced as i32);
    assert!(t.updated_at_unix > 0);

    // web deleted: its Target goes, and the stream says so.
    admin(&hub)
        .await
        .delete(pb::DeleteRequest {
            kind: "App".into(),
            name: "web".into(),
        })
        .await
        .unwrap();
    let gone = next(&mut stream, "web's Target removed").await;
    assert!(gone.targets.is_empty(), "{gone:?}");
    assert_eq!(gone.removed.len(), 1);
    assert_eq!(
        (
            gone.removed[0].app.as_str(),
            gone.removed[0].cluster.as_str()
        ),
        ("web", "dev-1")
    );
    hub.shutdown().await;
}

/// Reads events from `stream` until `n` have come.
async fn events(stream: &mut Streaming<pb::WatchEventsResponse>, n: usize) -> Vec<pb::Event> {
    let mut out = Vec::new();
    while out.len() < n {
        out.extend(
            next(stream, &format!("{n} events (have {})", out.len()))
                .await
                .events,
        );
    }
    out
}

async fn listed_after(hub: &HubHandle, after: u64) -> Vec<pb::Event> {
    RolloutsClient::new(admin_channel(hub).await)
        .list_events(pb::ListEventsRequest {
            app: "web".into(),
            cluster: String::new(),
            after_id: after,
            limit: 10_000,
        })
        .await
        .unwrap()
        .into_inner()
        .events
}

fn ids(events: &[pb::Event]) -> Vec<u64> {
    events.iter().map(|e| e.id).collect()
}

#[tokio::test]
async fn events_resumed_from_an_id_after_a_disconnect_are_exactly_the_missed_ones() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let (_, mut spoke) = web_on_dev_1(&hub, &git, &c1).await;
    let mut watch = WatchClient::new(admin_channel(&hub).await);
    let request = |after_id| pb::WatchEventsRequest {
        app: "web".into(),
        cluster: String::new(),
        after_id,
        limit: 0,
    };

    // The newest events first (what happened to web so far), then a report's events live.
    let mut stream = watch.watch_events(request(0)).await.unwrap().into_inner();
    let backlog = next(&mut stream, "the newest events").await.events;
    assert_eq!(ids(&backlog), ids(&listed_after(&hub, 0).await));
    report(&spoke, 1, "web", &c1, pb::SyncState::Synced).await;
    spoke.until("ack 1", |v| v.acked_seq == 1).await;
    let live = listed_after(&hub, backlog.last().map_or(0, |e| e.id)).await;
    assert!(
        live.iter().any(|e| e.kind == "Synced"),
        "a report makes events: {live:?}"
    );
    let seen = events(&mut stream, live.len()).await;
    assert_eq!(ids(&seen), ids(&live));
    let resume_at = seen.last().unwrap().id;

    // The client goes away; Targets keep changing meanwhile.
    drop(stream);
    let mut seq = 1;
    for sync in [
        pb::SyncState::Failed,
        pb::SyncState::Synced,
        pb::SyncState::Failed,
        pb::SyncState::Synced,
    ] {
        seq += 1;
        report(&spoke, seq, "web", &c1, sync).await;
        spoke.until("the ack", |v| v.acked_seq == seq).await;
    }
    let missed = listed_after(&hub, resume_at).await;
    assert!(missed.len() >= 4, "{missed:?}");

    // Resumed from the last id it saw: exactly the missed events, in order, then new ones,
    // none twice.
    let mut stream = watch
        .watch_events(request(resume_at))
        .await
        .unwrap()
        .into_inner();
    let caught_up = events(&mut stream, missed.len()).await;
    assert_eq!(ids(&caught_up), ids(&missed));
    report(&spoke, seq + 1, "web", &c1, pb::SyncState::Failed).await;
    let newer = listed_after(&hub, missed.last().unwrap().id).await;
    let after = events(&mut stream, 1).await;
    assert_eq!(after[0].kind, "SyncFailed", "{after:?}");
    assert!(after[0].id > missed.last().unwrap().id);
    assert!(newer.is_empty() || newer[0].id == after[0].id);
    hub.shutdown().await;
}

#[tokio::test]
async fn a_rollout_stream_sends_the_rollout_then_each_change() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let (_, mut spoke) = web_on_dev_1(&hub, &git, &c1).await;
    let mut watch = WatchClient::new(admin_channel(&hub).await);
    let mut stream = watch
        .watch_rollout(pb::RolloutRequest {
            app: "web".into(),
            counts_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream, "the rollout").await;
    assert_eq!(first.app, "web");
    assert_eq!(first.summary, "progressing", "{first:?}");

    RolloutsClient::new(admin_channel(&hub).await)
        .pause_rollout(pb::RolloutRequest {
            app: "web".into(),
            counts_only: false,
        })
        .await
        .unwrap();
    let paused = next(&mut stream, "the pause").await;
    assert_eq!(paused.summary, "paused", "{paused:?}");
    RolloutsClient::new(admin_channel(&hub).await)
        .resume_rollout(pb::RolloutRequest {
            app: "web".into(),
            counts_only: false,
        })
        .await
        .unwrap();
    let resumed = next(&mut stream, "the resume").await;
    assert_eq!(resumed.summary, "progressing", "{resumed:?}");

    // The Target's healthy report completes it.
    report(&spoke, 1, "web", &c1, pb::SyncState::Synced).await;
    spoke.until("ack 1", |v| v.acked_seq == 1).await;
    let mut last = resumed;
    while last.summary != "complete" {
        last = next(&mut stream, "the rollout to complete").await;
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn streams_are_authorized_as_the_reads_they_mirror() {
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
    let (id, mut spoke) = web_on_dev_1(&hub, &git, &c1).await;
    let created = UsersClient::new(admin_channel(&hub).await)
        .create_user(pb::CreateUserRequest {
            name: "vera".into(),
            role: "viewer".into(),
            projects: vec![],
            ttl_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let viewer = channel(
        &hub.grpc_url(),
        &created.ca_pem,
        Some((&created.certificate_pem, &created.private_key_pem)),
    )
    .await;
    let mut watch = WatchClient::new(viewer);

    // A viewer may watch what it may read; watching web, it is sent nothing of api.
    let mut status = watch
        .watch_status(pb::WatchStatusRequest {
            app: "web".into(),
            cluster: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let snapshot = next(&mut status, "the viewer's snapshot").await;
    assert!(snapshot.targets.iter().all(|t| t.app == "web"));
    let mut events = watch
        .watch_events(pb::WatchEventsRequest {
            app: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let backlog = next(&mut events, "the viewer's events").await;
    assert!(backlog.events.iter().all(|e| e.app == "web"));
    admin(&hub)
        .await
        .apply(pb::ApplyRequest {
            documents: vec![app_doc("api", "platform", "apps/api", "dev")],
            dry_run: false,
        })
        .await
        .unwrap();
    spoke
        .until("api given", |v| v.commit_of("api").is_some())
        .await;
    report(&spoke, 1, "api", &c1, pb::SyncState::Failed).await;
    spoke.until("ack 1", |v| v.acked_seq == 1).await;
    report(&spoke, 2, "web", &c1, pb::SyncState::Failed).await;
    let change = next(&mut status, "web's report").await;
    assert!(change.targets.iter().all(|t| t.app == "web"), "{change:?}");
    let mut got = Vec::new();
    while !got.iter().any(|e: &pb::Event| e.kind == "SyncFailed") {
        got.extend(next(&mut events, "web's SyncFailed").await.events);
    }
    assert!(got.iter().all(|e| e.app == "web"), "{got:?}");

    // An unknown App is answered as the unary reads answer it.
    let err = watch
        .watch_events(pb::WatchEventsRequest {
            app: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let err = watch
        .watch_rollout(pb::RolloutRequest {
            app: "nope".into(),
            counts_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");

    // A cluster's certificate may not call the admin API, streams included.
    let as_cluster = channel(
        &hub.grpc_url(),
        &id.ca_pem,
        Some((&id.cert_pem, &id.key_pem)),
    )
    .await;
    let err = WatchClient::new(as_cluster)
        .watch_status(pb::WatchStatusRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");

    // Once revoked, the viewer cannot open another.
    UsersClient::new(admin_channel(&hub).await)
        .revoke_user(pb::RevokeUserRequest {
            name: "vera".into(),
        })
        .await
        .unwrap();
    let err = watch
        .watch_status(pb::WatchStatusRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_status_stream_shows_what_starts_holding_a_target() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let (_, mut spoke) = web_on_dev_1(&hub, &git, &c1).await;
    report(&spoke, 1, "web", &c1, pb::SyncState::Synced).await;
    spoke.until("ack 1", |v| v.acked_seq == 1).await;
    let mut watch = WatchClient::new(admin_channel(&hub).await);
    let mut stream = watch
        .watch_status(pb::WatchStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let snapshot = next(&mut stream, "the snapshot").await;
    assert_eq!(snapshot.targets.len(), 1);
    assert!(snapshot.targets[0].held.is_empty(), "{snapshot:?}");

    // A freeze of web, then a commit: the new revision is held, and the Target says why.
    RolloutsClient::new(admin_channel(&hub).await)
        .create_freeze(pb::CreateFreezeRequest {
            name: "campaign".into(),
            apps: vec!["web".into()],
            for_seconds: 3600,
            reason: "sale".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    git.commit(&[("apps/web/cm.yaml", "v: 2\n")], "two");
    let held = loop {
        let m = next(&mut stream, "web held by the freeze").await;
        if let Some(t) = m.targets.into_iter().find(|t| !t.held.is_empty()) {
            break t;
        }
    };
    assert!(held.held.contains("campaign"), "{held:?}");
    assert_eq!(held.desired_revision, c1, "held at the old revision");
    hub.shutdown().await;
}

#[tokio::test]
async fn an_events_stream_that_falls_behind_reads_what_it_missed_back_from_the_store() {
    use gitfleet_hub::engine::BUS_CAPACITY;
    use gitfleet_hub::model::{HealthState, SyncState, TargetReport};

    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let (_, _spoke) = web_on_dev_1(&hub, &git, &c1).await;
    let mut watch = WatchClient::new(admin_channel(&hub).await);
    let mut stream = watch
        .watch_events(pb::WatchEventsRequest {
            app: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let backlog = next(&mut stream, "the newest events").await.events;
    let start = backlog.last().map_or(0, |e| e.id);

    // More events than the bus holds, recorded while the stream's task cannot run (this test's
    // runtime has one thread, and this loop does not yield): it falls behind the bus.
    let reports = BUS_CAPACITY + 1000;
    for seq in 1..=reports as u64 {
        hub.engine()
            .store_report(TargetReport {
                seq,
                cluster: "dev-1".into(),
                app: "web".into(),
                revision: c1.clone(),
                spec_generation: 1,
                sync: if seq % 2 == 0 {
                    SyncState::Synced
                } else {
                    SyncState::Failed
                },
                health: HealthState::Healthy,
                message: format!("report {seq}"),
                ..Default::default()
            })
            .unwrap();
    }
    hub.engine().flush().await.unwrap();
    let want = listed_after(&hub, start).await;
    assert!(want.len() > BUS_CAPACITY, "{}", want.len());
    let got = events(&mut stream, want.len()).await;
    assert_eq!(ids(&got), ids(&want), "every event once, in order");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_status_stream_that_falls_behind_is_sent_a_fresh_snapshot() {
    use gitfleet_hub::engine::CHANGES_CAPACITY;
    use gitfleet_hub::model::{HealthState, SyncState, TargetReport};

    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let (_, _spoke) = web_on_dev_1(&hub, &git, &c1).await;
    let mut watch = WatchClient::new(admin_channel(&hub).await);
    let mut stream = watch
        .watch_status(pb::WatchStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream, "the snapshot").await;
    assert!(first.snapshot_complete);

    // More changes than the feed holds while the stream's task cannot run (one thread, no
    // yield): it falls behind, and is sent the Targets as they are now.
    let reports = (CHANGES_CAPACITY + 100) as u64;
    for seq in 1..=reports {
        hub.engine()
            .store_report(TargetReport {
                seq,
                cluster: "dev-1".into(),
                app: "web".into(),
                revision: c1.clone(),
                spec_generation: 1,
                sync: SyncState::Synced,
                health: HealthState::Healthy,
                message: format!("report {seq}"),
                ..Default::default()
            })
            .unwrap();
    }
    hub.engine().flush().await.unwrap();
    let again = next(&mut stream, "a fresh snapshot").await;
    assert!(again.snapshot && again.snapshot_complete, "{again:?}");
    assert_eq!(again.targets.len(), 1);
    assert_eq!(again.targets[0].message, format!("report {reports}"));
    hub.shutdown().await;
}
