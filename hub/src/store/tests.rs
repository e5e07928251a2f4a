use super::*;
use crate::model::{HealthState, SyncState, VersionedTarget};
use crate::resources::parse_document;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("db")).unwrap();
    (dir, s)
}

fn repo(name: &str, url: &str) -> Resource {
    parse_document(
        "test",
        &format!(
            r#"{{"apiVersion":"gitfleet.dev/v1","kind":"Repo","metadata":{{"name":"{name}"}},"spec":{{"url":"{url}"}}}}"#
        ),
    )
    .unwrap()
}

fn token(expires: i64, max_uses: u32) -> TokenRecord {
    TokenRecord {
        id: "t1".into(),
        expires_at_unix: expires,
        max_uses,
        uses: 0,
        labels: [("env".to_owned(), "dev".to_owned())].into(),
        description: String::new(),
        revoked: false,
        allowed_label_keys: Default::default(),
        cluster: None,
    }
}

/// An approved cluster without labels, registered at 1.
fn cluster(name: &str) -> ClusterRecord {
    ClusterRecord {
        name: name.into(),
        labels: BTreeMap::new(),
        agent_version: String::new(),
        registered_at_unix: 1,
        certificate_expires_unix: 2,
        last_contact_unix: 0,
        revoked: false,
        key_fingerprint: String::new(),
        renewed_key_fingerprints: Vec::new(),
        pending: false,
        token_id: String::new(),
    }
}

fn report(seq: u64, app: &str, message: &str) -> TargetReport {
    TargetReport {
        seq,
        cluster: "eu-1".into(),
        app: app.into(),
        revision: "c1".into(),
        sync: SyncState::Synced,
        health: HealthState::Healthy,
        message: message.into(),
        ..TargetReport::default()
    }
}

#[test]
fn epoch_survives_reopen_and_differs_between_stores() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let epoch = {
        let s = Store::open(&path).unwrap();
        s.epoch().to_owned()
    };
    let again = Store::open(&path).unwrap();
    assert_eq!(again.epoch(), epoch);
    let (_d, other) = store();
    assert_ne!(other.epoch(), epoch);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let s = Store::open(&path).unwrap();
        s.db.open_tree("meta")
            .unwrap()
            .insert(SCHEMA_KEY, &(SCHEMA_VERSION + 1).to_be_bytes())
            .unwrap();
        s.db.flush().unwrap();
    }
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
}

#[tokio::test]
async fn resources_round_trip_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let s = Store::open(&path).unwrap();
        s.put_resources(&[repo("a", "file:///a"), repo("b", "file:///b")])
            .unwrap();
        s.flush().await.unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.resources().unwrap().len(), 2);
    assert_eq!(
        s.resource(Kind::Repo, "b").unwrap(),
        Some(repo("b", "file:///b"))
    );
    assert_eq!(s.resource(Kind::App, "b").unwrap(), None);
    assert!(s.delete_resource(Kind::Repo, "a").unwrap());
    assert!(!s.delete_resource(Kind::Repo, "a").unwrap());
    assert_eq!(s.resources().unwrap(), vec![repo("b", "file:///b")]);
}

#[test]
fn tokens_count_uses_and_expire() {
    let (_d, s) = store();
    s.put_token("h", &token(100, 2)).unwrap();
    assert_eq!(s.use_token("h", 50).unwrap().uses, 1);
    assert_eq!(s.use_token("h", 50).unwrap().uses, 2);
    assert!(matches!(
        s.use_token("h", 50),
        Err(StoreError::Token(TokenProblem::UsedUp))
    ));
    s.put_token("e", &token(100, 0)).unwrap();
    assert!(matches!(
        s.use_token("e", 100),
        Err(StoreError::Token(TokenProblem::Expired))
    ));
    assert!(matches!(
        s.use_token("nope", 0),
        Err(StoreError::Token(TokenProblem::Unknown))
    ));
    // Unlimited uses within the TTL.
    for _ in 0..5 {
        s.use_token("e", 99).unwrap();
    }
    let mut revoked = token(100, 0);
    revoked.revoked = true;
    s.put_token("r", &revoked).unwrap();
    assert!(matches!(
        s.use_token("r", 0),
        Err(StoreError::Token(TokenProblem::Revoked))
    ));
}

#[test]
fn a_token_is_looked_up_without_spending_it() {
    let (_d, s) = store();
    assert_eq!(s.token("h").unwrap(), None);
    s.put_token("h", &token(100, 1)).unwrap();
    for _ in 0..3 {
        assert_eq!(s.token("h").unwrap(), Some(token(100, 1)));
    }
    assert_eq!(s.use_token("h", 50).unwrap().uses, 1);
    assert_eq!(s.token("h").unwrap().unwrap().uses, 1);
}

#[test]
fn a_cluster_update_reads_and_writes_in_one_step() {
    let (_d, s) = store();
    // Nothing to update: nothing written.
    let seen = s.update_cluster("eu-1", |r| (None, r.is_some())).unwrap();
    assert!(!seen);
    assert_eq!(s.cluster("eu-1").unwrap(), None);
    s.put_cluster(&cluster("eu-1")).unwrap();
    let before = s.clusters_snapshot().1;
    let answer = s
        .update_cluster("eu-1", |r| {
            let mut r = r.cloned().unwrap();
            r.revoked = true;
            (Some(r), "revoked")
        })
        .unwrap();
    assert_eq!(answer, "revoked");
    assert!(s.cluster("eu-1").unwrap().unwrap().revoked);
    assert!(s.clusters_snapshot().1 > before, "a change of place");
    // A writer that changes another field keeps the revocation it did not read before.
    s.update_cluster("eu-1", |r| {
        let mut r = r.cloned().unwrap();
        r.last_contact_unix = 42;
        (Some(r), ())
    })
    .unwrap();
    let record = s.cluster("eu-1").unwrap().unwrap();
    assert!(record.revoked);
    assert_eq!(record.last_contact_unix, 42);
    // Returning no record leaves the stored one as it was.
    s.update_cluster("eu-1", |_| (None, ())).unwrap();
    assert_eq!(s.cluster("eu-1").unwrap(), Some(record));
}

#[test]
fn reports_are_kept_once_per_seq() {
    let (_d, s) = store();
    assert_eq!(
        s.record_report("eu-1", 1, Some(&report(1, "web", "first")))
            .unwrap(),
        ReportOutcome::Stored { acked_seq: 1 }
    );
    assert_eq!(
        s.record_report("eu-1", 1, Some(&report(1, "web", "again")))
            .unwrap(),
        ReportOutcome::Duplicate { acked_seq: 1 }
    );
    assert_eq!(s.report("eu-1", "web").unwrap().unwrap().message, "first");
    // A report the hub does not keep still moves the sequence.
    assert_eq!(
        s.record_report("eu-1", 2, None).unwrap(),
        ReportOutcome::Stored { acked_seq: 2 }
    );
    // Not ackable until the caller flushed and said so.
    assert_eq!(s.acked_seq("eu-1").unwrap(), 0);
    s.persist_acked("eu-1", 2).unwrap();
    assert_eq!(s.acked_seq("eu-1").unwrap(), 2);
    assert_eq!(
        s.record_report("eu-1", 2, None).unwrap(),
        ReportOutcome::Duplicate { acked_seq: 2 }
    );
    // An older seq never moves it back.
    s.persist_acked("eu-1", 1).unwrap();
    assert_eq!(s.acked_seq("eu-1").unwrap(), 2);
    assert_eq!(s.acked_seq("other").unwrap(), 0);
    assert_eq!(s.reports().unwrap().len(), 1);
    s.delete_report("eu-1", "web").unwrap();
    assert_eq!(s.report("eu-1", "web").unwrap(), None);
}

#[test]
fn desired_state_clusters_and_revisions_round_trip() {
    let (_d, s) = store();
    let desired = ClusterDesired {
        generation: 3,
        targets: BTreeMap::from([(
            "web".to_owned(),
            VersionedTarget {
                spec_generation: 2,
                target: crate::fleet::DesiredTarget {
                    app: "web".into(),
                    repo: "r".into(),
                    repo_url: "file:///r".into(),
                    commit: "c".into(),
                    git_ref: "refs/heads/main".into(),
                    path: "apps/web".into(),
                    extra_paths: vec![],
                    namespace: "web".into(),
                    render: Default::default(),
                    sync_policy: Default::default(),
                    sync_request: 0,
                },
            },
        )]),
    };
    s.put_desired("eu-1", &desired).unwrap();
    assert_eq!(s.desired_all().unwrap().get("eu-1"), Some(&desired));

    let cluster = ClusterRecord {
        name: "eu-1".into(),
        labels: [("env".to_owned(), "prod".to_owned())].into(),
        agent_version: "0.1.0".into(),
        registered_at_unix: 1,
        certificate_expires_unix: 2,
        last_contact_unix: 3,
        revoked: false,
        key_fingerprint: "ab".into(),
        renewed_key_fingerprints: Vec::new(),
        pending: false,
        token_id: "t1".into(),
    };
    s.put_cluster(&cluster).unwrap();
    assert_eq!(s.cluster("eu-1").unwrap(), Some(cluster.clone()));
    assert_eq!(s.clusters().unwrap(), vec![cluster]);

    let rev = AppRevision {
        commit: "c".into(),
        git_ref: "refs/heads/main".into(),
    };
    s.put_revision("web", &rev).unwrap();
    assert_eq!(s.revisions().unwrap().get("web"), Some(&rev));
    s.delete_revision("web").unwrap();
    assert!(s.revisions().unwrap().is_empty());

    let status = RepoStatus {
        commit: "c".into(),
        error: "boom".into(),
        ..RepoStatus::default()
    };
    s.put_repo_status("r", &status).unwrap();
    assert_eq!(s.repo_status("r").unwrap(), Some(status));
}

#[test]
fn corrupt_records_name_tree_and_key() {
    let (_d, s) = store();
    s.resources
        .insert("App/web", b"{not json".as_ref())
        .unwrap();
    let err = s.resource(Kind::App, "web").unwrap_err().to_string();
    assert!(err.contains("resources/App/web"), "{err}");
}

#[test]
fn a_corrupt_record_of_a_mirrored_tree_fails_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let s = Store::open(&path).unwrap();
        s.clusters.insert("eu-1", b"{not json".as_ref()).unwrap();
        s.db.flush().unwrap();
    }
    let err = Store::open(&path).unwrap_err().to_string();
    assert!(err.contains("clusters/eu-1"), "{err}");
}

#[test]
fn the_mirror_follows_every_write_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let report = |seq: u64, revision: &str| TargetReport {
        seq,
        cluster: "eu-1".into(),
        app: "web".into(),
        revision: revision.into(),
        sync: SyncState::Synced,
        health: HealthState::Healthy,
        message: format!("report {seq}"),
        ..Default::default()
    };
    let mark = HealthyMark {
        revision: "a".repeat(40),
        since: 7,
    };
    let rollout = RolloutState::first(
        AppRevision {
            commit: "c".repeat(40),
            git_ref: "refs/heads/main".into(),
        },
        5,
    );
    {
        let s = Store::open(&path).unwrap();
        s.put_cluster(&cluster("eu-1")).unwrap();
        s.record_report("eu-1", 1, Some(&report(1, "aaa"))).unwrap();
        s.record_report("eu-1", 2, Some(&report(2, "bbb"))).unwrap();
        s.put_healthy_mark("eu-1", "web", Some(&mark)).unwrap();
        s.put_healthy_mark("eu-1", "api", Some(&mark)).unwrap();
        s.put_healthy_mark("eu-1", "api", None).unwrap();
        s.put_rollout("web", &rollout).unwrap();
        assert_eq!(s.report_summary("eu-1", "web").unwrap().revision, "bbb");
        assert_eq!(s.healthy_mark("eu-1", "api").unwrap(), None);
        s.db.flush().unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.clusters().unwrap().len(), 1);
    let summary = s.report_summary("eu-1", "web").unwrap();
    assert_eq!((summary.seq, summary.message.as_str()), (2, "report 2"));
    assert_eq!(s.healthy_mark("eu-1", "web").unwrap(), Some(mark));
    assert_eq!(s.healthy_mark("eu-1", "api").unwrap(), None);
    assert_eq!(s.rollout("web").unwrap(), Some(rollout.clone()));
    assert_eq!(s.rollout_shared("web").as_deref(), Some(&rollout));
    assert_eq!(s.rollouts_shared().len(), 1);
    s.delete_report("eu-1", "web").unwrap();
    assert_eq!(s.report_summary("eu-1", "web"), None);
    s.delete_app_records("web").unwrap();
    assert_eq!(s.healthy_mark("eu-1", "web").unwrap(), None);
    assert_eq!(s.rollout("web").unwrap(), None);
    assert!(s.rollouts_shared().is_empty());
    assert_eq!(s.rollout_history("web").unwrap(), vec![]);
}

#[test]
fn only_a_change_of_place_bumps_the_placement_version() {
    let (_dir, s) = store();
    let mut record = ClusterRecord {
        labels: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
        pending: true,
        ..cluster("eu-1")
    };
    let version = |s: &Store| s.clusters_snapshot().1;
    let start = version(&s);
    s.put_cluster(&record).unwrap();
    let registered = version(&s);
    assert!(registered > start, "a new cluster is a change of place");
    // A reader holding a snapshot keeps what it saw; the next write does not change it.
    let (held, _) = s.clusters_snapshot();
    record.last_contact_unix = 99;
    record.agent_version = "v2".into();
    s.put_cluster(&record).unwrap();
    assert_eq!(
        version(&s),
        registered,
        "contact times do not move a cluster"
    );
    assert_eq!(held["eu-1"].last_contact_unix, 0);
    assert_eq!(s.clusters_snapshot().0["eu-1"].last_contact_unix, 99);
    let mut seen = registered;
    for change in [
        |r: &mut ClusterRecord| r.pending = false,
        |r: &mut ClusterRecord| {
            r.labels.insert("tier".into(), "edge".into());
        },
        |r: &mut ClusterRecord| r.revoked = true,
    ] {
        change(&mut record);
        s.put_cluster(&record).unwrap();
        assert!(version(&s) > seen, "{record:?}");
        seen = version(&s);
    }
}

#[test]
fn events_beyond_the_limit_are_dropped_oldest_first_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let event = |n: usize| EventRecord {
        app: "web".into(),
        message: format!("event {n}"),
        ..Default::default()
    };
    {
        let s = Store::open(&path).unwrap();
        let mut events: Vec<_> = (0..EVENTS_KEPT - 2).map(event).collect();
        s.append_events(&mut events).unwrap();
        s.db.flush().unwrap();
    }
    let s = Store::open(&path).unwrap();
    let mut more: Vec<_> = (EVENTS_KEPT - 2..EVENTS_KEPT + 3).map(event).collect();
    s.append_events(&mut more).unwrap();
    assert_eq!(s.events.len(), EVENTS_KEPT);
    let oldest = s.events(None, None, 0, EVENTS_KEPT).unwrap();
    assert_eq!(oldest.len(), EVENTS_KEPT);
    assert_eq!(oldest[0].message, "event 3");
    assert_eq!(
        oldest[EVENTS_KEPT - 1].message,
        format!("event {}", EVENTS_KEPT + 2)
    );
}

#[test]
fn desired_history_keeps_the_last_generations() {
    let (_d, s) = store();
    for generation in 1..=(DESIRED_HISTORY + 3) {
        s.put_desired(
            "eu-1",
            &ClusterDesired {
                generation,
                targets: BTreeMap::new(),
            },
        )
        .unwrap();
    }
    let last = DESIRED_HISTORY + 3;
    assert_eq!(s.desired_all().unwrap()["eu-1"].generation, last);
    assert_eq!(
        s.desired_at("eu-1", last).unwrap().unwrap().generation,
        last
    );
    assert_eq!(s.desired_at("eu-1", 4).unwrap().unwrap().generation, 4);
    assert_eq!(s.desired_at("eu-1", 3).unwrap(), None);
    assert_eq!(s.desired_at("other", last).unwrap(), None);
}

#[tokio::test]
async fn export_and_import_carry_everything_but_the_epoch() {
    let (_d, s) = store();
    s.put_resources(&[repo("a", "file:///a")]).unwrap();
    s.put_token("h", &token(100, 2)).unwrap();
    s.put_desired(
        "eu-1",
        &ClusterDesired {
            generation: 2,
            targets: BTreeMap::new(),
        },
    )
    .unwrap();
    s.record_report("eu-1", 4, Some(&report(4, "web", "hi")))
        .unwrap();
    s.persist_acked("eu-1", 4).unwrap();
    let dump = s.export().unwrap();
    // Through text, as a backup file would be.
    let dump: serde_json::Value = serde_json::from_str(&dump.to_string()).unwrap();

    let (_d2, fresh) = store();
    fresh.import(&dump).await.unwrap();
    assert_eq!(fresh.resources().unwrap(), s.resources().unwrap());
    assert_eq!(fresh.use_token("h", 50).unwrap().uses, 1);
    assert_eq!(fresh.desired_all().unwrap(), s.desired_all().unwrap());
    assert_eq!(fresh.desired_at("eu-1", 2).unwrap().unwrap().generation, 2);
    assert_eq!(fresh.acked_seq("eu-1").unwrap(), 4);
    assert_eq!(fresh.report("eu-1", "web").unwrap().unwrap().message, "hi");
    assert_ne!(fresh.epoch(), s.epoch());

    // Never over existing data.
    let err = fresh.import(&dump).await.unwrap_err();
    assert!(err.to_string().contains("already holds data"), "{err}");
    let (_d3, other) = store();
    let err = other
        .import(&serde_json::json!({"schemaVersion": 1, "trees": {"bogus": {}}}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
}

#[test]
fn a_store_reopened_at_once_waits_for_the_lock() {
    // sled lets go of its file lock only when the dropped handle's flusher thread exits; opening
    // again straight away must wait for it, not fail.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    for _ in 0..20 {
        let s = Store::open(&path).unwrap();
        drop(s);
    }
    // A lock held by a live handle is still reported once the wait is over.
    let held = Store::open(&path).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(err.to_string().contains("lock"), "{err}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_flushes_are_shared_and_nothing_flushed_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let before = s.flush_count();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u64 {
        let s = s.clone();
        tasks.spawn(async move {
            let cluster = format!("c-{i}");
            s.record_report(&cluster, 1, Some(&report(1, "web", "ok")))
                .unwrap();
            s.ack_durably(&cluster, 1).await.unwrap();
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let flushes = s.flush_count() - before;
    assert!(
        (1..=100).contains(&flushes),
        "200 concurrent flushes share disk flushes: {flushes}"
    );
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    for i in 0..200u64 {
        let cluster = format!("c-{i}");
        assert_eq!(s.acked_seq(&cluster).unwrap(), 1, "{cluster}");
        assert_eq!(s.report(&cluster, "web").unwrap().unwrap().message, "ok");
    }
}

#[test]
fn an_acked_seq_written_after_the_reports_may_be_lost_without_losing_reports() {
    // A crash after the flush of the reports but before the acked seq was flushed: the
    // reports are there, and a spoke resending one stores it again rather than losing it.
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        s.record_report("eu-1", 7, Some(&report(7, "web", "seven")))
            .unwrap();
        s.db.flush().unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.acked_seq("eu-1").unwrap(), 0);
    assert_eq!(
        s.record_report("eu-1", 7, Some(&report(7, "web", "seven again")))
            .unwrap(),
        ReportOutcome::Stored { acked_seq: 7 }
    );
    assert_eq!(
        s.report("eu-1", "web").unwrap().unwrap().message,
        "seven again"
    );
}
