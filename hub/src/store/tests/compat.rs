//! The sled backend's data directory: its layout (what earlier hubs wrote opens unchanged, and
//! this one writes the same), reopening, its lock, and what a flush makes durable; and the
//! store's failure, which no backend recovers from.

use std::sync::Arc;

use super::*;
use crate::store::memory::MemoryBackend;

/// Opens the data directory as plain sled, as the hub before the backend trait did.
fn raw_sled(path: &Path) -> ::sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match ::sled::open(path) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn be_key(prefix: &str, n: u64) -> Vec<u8> {
    let mut key = prefix.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&n.to_be_bytes());
    key
}

#[tokio::test]
async fn a_data_directory_written_before_the_backend_trait_opens_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let rollout = RolloutState::first(
        AppRevision {
            commit: "c".repeat(40),
            git_ref: "refs/heads/main".into(),
            ..Default::default()
        },
        5,
    );
    let mark = HealthyMark {
        revision: "a".repeat(40),
        since: 7,
    };
    let web = VersionedTarget {
        spec_generation: 2,
        target: Arc::new(super::target("web", "c1")),
    };
    // Schema 1's record: the whole desired state.
    let legacy = serde_json::json!({
        "generation": 3,
        "targets": { "web": web },
    });
    // Written the way the store wrote sled before it had a backend: one tree per name, string
    // keys (NUL-separated parts, big-endian numbers), JSON values, a 4-byte schema version.
    {
        let db = raw_sled(&path);
        let tree = |name: &str| db.open_tree(name).unwrap();
        let json = |v: &dyn erased::Json| v.json();
        tree("meta")
            .insert("schema_version", &1u32.to_be_bytes())
            .unwrap();
        tree("meta").insert("epoch", "0123abcd".as_bytes()).unwrap();
        tree("resources")
            .insert("Repo/a", json(&repo("a", "file:///a")))
            .unwrap();
        tree("clusters")
            .insert("eu-1", json(&cluster("eu-1")))
            .unwrap();
        tree("tokens").insert("h", json(&token(100, 2))).unwrap();
        tree("desired").insert("eu-1", json(&legacy)).unwrap();
        tree("desired_history")
            .insert(be_key("eu-1", 3), json(&legacy))
            .unwrap();
        tree("targets")
            .insert("eu-1\0web", json(&report(9, "web", "stored")))
            .unwrap();
        tree("acked").insert("eu-1", json(&9u64)).unwrap();
        tree("repo_status")
            .insert(
                "r",
                json(&RepoStatus {
                    commit: "c".into(),
                    ..RepoStatus::default()
                }),
            )
            .unwrap();
        tree("revisions")
            .insert("web", json(&rollout.revision))
            .unwrap();
        tree("rollouts").insert("web", json(&rollout)).unwrap();
        tree("rollout_history")
            .insert(be_key("web", rollout.number), json(&rollout))
            .unwrap();
        tree("healthy").insert("eu-1\0web", json(&mark)).unwrap();
        for id in [0u64, 7] {
            let e = EventRecord {
                id,
                ..event("web", "eu-1", &format!("event {id}"))
            };
            tree("events").insert(id.to_be_bytes(), json(&e)).unwrap();
        }
        tree("app_controls")
            .insert(
                "web",
                json(&AppControl {
                    suspended: true,
                    ..AppControl::default()
                }),
            )
            .unwrap();
        db.flush().unwrap();
    }

    let s = Store::open(&path).await.unwrap();
    assert_eq!(s.epoch(), "0123abcd");
    assert_eq!(s.resources().unwrap(), vec![repo("a", "file:///a")]);
    assert_eq!(s.cluster("eu-1").unwrap(), Some(cluster("eu-1")));
    assert_eq!(s.token("h").unwrap(), Some(token(100, 2)));
    // Migrated to schema 2: the Targets under their own keys, no history; no delta leads to
    // the migrated state (the history that would have made one is gone).
    let migrated = s.desired_all().await.unwrap()["eu-1"].clone();
    assert_eq!(
        migrated,
        ClusterDesired {
            generation: 3,
            targets: BTreeMap::from([("web".to_owned(), web.clone())]),
            removed: BTreeMap::new(),
            removals_since: 3,
        }
    );
    assert_eq!(
        s.inner.backend.count(Tree::DesiredHistory).await.unwrap(),
        0
    );
    assert_eq!(
        s.inner.backend.count(Tree::DesiredTargets).await.unwrap(),
        1
    );
    assert_eq!(
        s.report("eu-1", "web").await.unwrap().unwrap().message,
        "stored"
    );
    assert_eq!(s.report_summary("eu-1", "web").unwrap().seq, 9);
    assert_eq!(s.acked_seq("eu-1").unwrap(), 9);
    assert_eq!(s.repo_status("r").unwrap().unwrap().commit, "c");
    assert_eq!(s.revisions().unwrap()["web"], *rollout.revision);
    assert_eq!(s.rollout("web").unwrap(), Some(rollout.clone()));
    assert_eq!(
        s.rollout_history("web").await.unwrap(),
        vec![rollout.clone()]
    );
    assert_eq!(s.healthy_mark("eu-1", "web").unwrap(), Some(mark));
    assert!(s.app_control("web").unwrap().suspended);
    // Event 0 is older than the first `after`, as before.
    let events = s.events(None, None, 0, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].message, "event 7");
    // A token counted here is counted in the record that was there.
    assert_eq!(s.use_token("h", 50).unwrap().uses, 1);
    // New events follow the old ones.
    let mut more = [event("web", "", "new")];
    s.append_events(&mut more).unwrap();
    assert_eq!(more[0].id, 8);

    // And what this store writes, earlier hubs (plain sled) read the same way, but for the
    // desired state: a hub of schema 1 refuses the store (its version) and could not read a
    // record as one without Targets (it has none of its own).
    let next = migrated.next(BTreeMap::from([(
        "web".to_owned(),
        Arc::new(super::target("web", "c2")),
    )]));
    s.put_desired("eu-1", &migrated, &next).unwrap();
    s.put_rollout("api", &rollout).unwrap();
    s.flush().await.unwrap();
    drop(s);
    let db = raw_sled(&path);
    let tree = |name: &str| db.open_tree(name).unwrap();
    let token: TokenRecord =
        serde_json::from_slice(&tree("tokens").get("h").unwrap().unwrap()).unwrap();
    assert_eq!(token.uses, 1);
    assert_eq!(
        &*tree("meta").get("schema_version").unwrap().unwrap(),
        &SCHEMA_VERSION.to_be_bytes()
    );
    let record: serde_json::Value =
        serde_json::from_slice(&tree("desired").get("eu-1").unwrap().unwrap()).unwrap();
    assert_eq!(record["generation"], 4);
    assert!(record.get("targets").is_none(), "{record}");
    let stored: VersionedTarget =
        serde_json::from_slice(&tree("desired_targets").get("eu-1\0web").unwrap().unwrap())
            .unwrap();
    assert_eq!(
        (stored.spec_generation, stored.target.commit.as_str()),
        (4, "c2")
    );
    assert!(
        tree("rollout_history")
            .get(be_key("api", rollout.number))
            .unwrap()
            .is_some()
    );
    assert!(tree("events").get(8u64.to_be_bytes()).unwrap().is_some());
}

/// Encodes a record as the store does, behind one object-safe type for the test above.
mod erased {
    pub trait Json {
        fn json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap()
        }
    }
}

/// Schema 2 wrote every Target with its cluster's record, so a Target newer than the record was
/// a torn write; schema 3 writes a Target alone when only it changed. Migrated, a cluster torn
/// in schema 2 still loads as torn (a generation no delta leads to), and one that was whole
/// loads as it was.
#[tokio::test]
async fn a_desired_state_torn_under_schema_2_is_still_torn_after_the_migration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let versioned = |spec: u64, commit: &str| VersionedTarget {
        spec_generation: spec,
        target: Arc::new(super::target("web", commit)),
    };
    {
        let db = raw_sled(&path);
        let tree = |name: &str| db.open_tree(name).unwrap();
        let json = |v: &dyn erased::Json| v.json();
        tree("meta")
            .insert("schema_version", &2u32.to_be_bytes())
            .unwrap();
        tree("meta").insert("epoch", "0123abcd".as_bytes()).unwrap();
        let head = |generation: u64, apps: serde_json::Value| {
            json(&serde_json::json!({
                "generation": generation, "apps": apps, "removals_since": 0,
            }))
        };
        // eu-1: generation 2's Target of a stored, its record (naming a and b at 2) lost.
        tree("desired")
            .insert("eu-1", head(1, serde_json::json!({"a": 1, "b": 1})))
            .unwrap();
        tree("desired_targets")
            .insert("eu-1\0a", json(&versioned(2, "c2")))
            .unwrap();
        tree("desired_targets")
            .insert("eu-1\0b", json(&versioned(1, "c1")))
            .unwrap();
        // eu-2: whole.
        tree("desired")
            .insert("eu-2", head(2, serde_json::json!({"a": 2})))
            .unwrap();
        tree("desired_targets")
            .insert("eu-2\0a", json(&versioned(2, "c2")))
            .unwrap();
        db.flush().unwrap();
    }
    let s = Store::open(&path).await.unwrap();
    let loaded = s.desired_all().await.unwrap();
    let torn = &loaded["eu-1"];
    assert_eq!((torn.generation, torn.removals_since), (3, 3), "{torn:?}");
    let u = crate::link::on_hello(s.epoch(), s.epoch(), 1, torn).unwrap();
    assert!(u.snapshot, "a spoke at generation 1 must start over");
    let whole = &loaded["eu-2"];
    assert_eq!((whole.generation, whole.removals_since), (2, 0));
    assert_eq!(whole.targets["a"], versioned(2, "c2"));
    // Stored whole at the migration: opened again, the same.
    drop(s);
    let again = Store::open(&path).await.unwrap();
    assert_eq!(again.desired_all().await.unwrap(), loaded);
}

#[tokio::test]
async fn epoch_survives_reopen_and_differs_between_stores() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let epoch = {
        let s = Store::open(&path).await.unwrap();
        s.epoch().to_owned()
    };
    let again = Store::open(&path).await.unwrap();
    assert_eq!(again.epoch(), epoch);
    let (_d, other) = sled_store().await;
    assert_ne!(other.epoch(), epoch);
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let db = raw_sled(&path);
        db.open_tree("meta")
            .unwrap()
            .insert(SCHEMA_KEY, &(SCHEMA_VERSION + 1).to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(&path).await.unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
}

#[tokio::test]
async fn writes_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mark = HealthyMark {
        revision: "a".repeat(40),
        since: 7,
    };
    {
        let s = Store::open(&path).await.unwrap();
        s.put_resources(&[repo("a", "file:///a"), repo("b", "file:///b")])
            .unwrap();
        s.put_cluster(&cluster("eu-1")).unwrap();
        s.record_report("eu-1", 2, Some(&report(2, "web", "report 2")))
            .unwrap();
        s.put_healthy_mark("eu-1", "web", Some(&mark)).unwrap();
        s.put_token("h", &token(100, 2)).unwrap();
        s.use_token("h", 1).unwrap();
        s.flush().await.unwrap();
    }
    let s = Store::open(&path).await.unwrap();
    assert_eq!(s.resources().unwrap().len(), 2);
    assert_eq!(s.clusters().unwrap().len(), 1);
    let summary = s.report_summary("eu-1", "web").unwrap();
    assert_eq!((summary.seq, summary.message.as_str()), (2, "report 2"));
    assert_eq!(s.healthy_mark("eu-1", "web").unwrap(), Some(mark));
    assert_eq!(s.token("h").unwrap().unwrap().uses, 1);
}

#[tokio::test]
async fn a_corrupt_record_names_tree_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let db = raw_sled(&path);
        db.open_tree("desired")
            .unwrap()
            .insert("eu-1", b"{not json".as_ref())
            .unwrap();
        db.flush().unwrap();
    }
    let s = Store::open(&path).await.unwrap();
    let err = s.desired_all().await.unwrap_err().to_string();
    assert!(err.contains("desired/eu-1"), "{err}");
}

#[tokio::test]
async fn a_corrupt_record_of_a_mirrored_tree_fails_the_open() {
    for tree in ["clusters", "resources", "tokens", "targets"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let db = raw_sled(&path);
            db.open_tree(tree)
                .unwrap()
                .insert("eu-1", b"{not json".as_ref())
                .unwrap();
            db.flush().unwrap();
        }
        let err = Store::open(&path).await.unwrap_err().to_string();
        assert!(err.contains(&format!("{tree}/eu-1")), "{err}");
    }
}

#[tokio::test]
async fn events_beyond_the_limit_are_dropped_oldest_first_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let event = |n: usize| EventRecord {
        app: "web".into(),
        message: format!("event {n}"),
        ..Default::default()
    };
    {
        let s = Store::open(&path).await.unwrap();
        let mut events: Vec<_> = (0..EVENTS_KEPT - 2).map(event).collect();
        s.append_events(&mut events).unwrap();
        s.flush().await.unwrap();
    }
    let s = Store::open(&path).await.unwrap();
    let mut more: Vec<_> = (EVENTS_KEPT - 2..EVENTS_KEPT + 3).map(event).collect();
    s.append_events(&mut more).unwrap();
    s.flush().await.unwrap();
    assert_eq!(
        s.inner.backend.count(Tree::Events).await.unwrap(),
        EVENTS_KEPT
    );
    let oldest = s.events(None, None, 0, EVENTS_KEPT).await.unwrap();
    assert_eq!(oldest.len(), EVENTS_KEPT);
    assert_eq!(oldest[0].message, "event 3");
    assert_eq!(
        oldest[EVENTS_KEPT - 1].message,
        format!("event {}", EVENTS_KEPT + 2)
    );
}

#[tokio::test]
async fn a_store_reopened_at_once_waits_for_the_lock() {
    // sled lets go of its file lock only when the dropped handle's flusher thread exits; opening
    // again straight away must wait for it, not fail.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    for _ in 0..20 {
        let s = Store::open(&path).await.unwrap();
        drop(s);
    }
    // A lock held by a live handle is still reported once the wait is over.
    let held = Store::open(&path).await.unwrap();
    let err = Store::open(&path).await.unwrap_err();
    assert!(err.to_string().contains("lock"), "{err}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_flushes_are_shared_and_nothing_flushed_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).await.unwrap();
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
    let s = Store::open(dir.path()).await.unwrap();
    for i in 0..200u64 {
        let cluster = format!("c-{i}");
        assert_eq!(s.acked_seq(&cluster).unwrap(), 1, "{cluster}");
        assert_eq!(
            s.report(&cluster, "web").await.unwrap().unwrap().message,
            "ok"
        );
    }
}

#[tokio::test]
async fn an_acked_seq_written_after_the_reports_may_be_lost_without_losing_reports() {
    // A crash after the flush of the reports but before the acked seq was flushed: the
    // reports are there, and a spoke resending one stores it again rather than losing it.
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).await.unwrap();
        s.record_report("eu-1", 7, Some(&report(7, "web", "seven")))
            .unwrap();
        s.flush().await.unwrap();
    }
    let s = Store::open(dir.path()).await.unwrap();
    assert_eq!(s.acked_seq("eu-1").unwrap(), 0);
    assert_eq!(
        s.record_report("eu-1", 7, Some(&report(7, "web", "seven again")))
            .unwrap(),
        ReportOutcome::Stored { acked_seq: 7 }
    );
    assert_eq!(
        s.report("eu-1", "web").await.unwrap().unwrap().message,
        "seven again"
    );
}

#[tokio::test]
async fn a_flush_hands_every_write_to_the_backend_and_syncs_it() {
    let backend = Arc::new(MemoryBackend::new());
    let s = Store::with_backend(backend.clone()).await.unwrap();
    let syncs = backend.syncs();
    s.record_report("eu-1", 3, Some(&report(3, "web", "three")))
        .unwrap();
    s.persist_acked("eu-1", 3).unwrap();
    // Queued, not yet in the backend.
    assert_eq!(backend.get(Tree::Acked, b"eu-1").await.unwrap(), None);
    s.flush().await.unwrap();
    assert_eq!(
        backend.get(Tree::Acked, b"eu-1").await.unwrap(),
        Some(b"3".to_vec())
    );
    assert!(
        backend
            .get(Tree::Targets, b"eu-1\0web")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(backend.syncs(), syncs + 1);
}

#[tokio::test]
async fn writes_no_flush_followed_reach_the_backend_soon() {
    let backend = Arc::new(MemoryBackend::new());
    let s = Store::with_backend(backend.clone()).await.unwrap();
    s.put_cluster(&cluster("eu-1")).unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while backend
        .get(Tree::Clusters, b"eu-1")
        .await
        .unwrap()
        .is_none()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the write never reached the backend"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    drop(s);
}

#[tokio::test]
async fn writes_no_flush_followed_survive_closing_the_store() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).await.unwrap();
        s.put_cluster(&cluster("eu-1")).unwrap();
        s.append_events(&mut [event("web", "", "last words")])
            .unwrap();
        // No await since: the task that commits now and then has not run.
        assert!(!s.mirror().pending.is_empty());
    }
    let s = Store::open(dir.path()).await.unwrap();
    assert_eq!(s.cluster("eu-1").unwrap(), Some(cluster("eu-1")));
    assert_eq!(
        s.events(None, None, 0, 10).await.unwrap()[0].message,
        "last words"
    );
}

#[tokio::test]
async fn a_failed_commit_fails_every_later_flush() {
    let backend = Arc::new(MemoryBackend::new());
    let s = Store::with_backend(backend.clone()).await.unwrap();
    assert_eq!(s.failure(), None);
    s.record_report("eu-1", 1, Some(&report(1, "web", "lost")))
        .unwrap();
    backend.break_with("no space left on device");
    let err = s.flush().await.unwrap_err().to_string();
    assert!(err.contains("no space left on device"), "{err}");
    assert_eq!(s.failure(), Some("no space left on device"));
    // The cause is gone, but the report queued before is not in the backend: no later flush
    // may say that what came after it is durable.
    backend.heal();
    s.record_report("eu-1", 2, Some(&report(2, "web", "later")))
        .unwrap();
    let err = s.ack_durably("eu-1", 2).await.unwrap_err().to_string();
    assert!(err.contains("since an earlier failure"), "{err}");
    assert_eq!(s.acked_seq("eu-1").unwrap(), 0);
    assert_eq!(
        backend.get(Tree::Targets, b"eu-1\0web").await.unwrap(),
        None
    );
}

/// The migration to schema 3 writes a torn cluster only while the schema is still 2: a replica
/// that read schema 2 and migrates after another one did (which may lead already, and write
/// Targets without their records) leaves the store as it is; run twice, it writes once.
#[tokio::test]
async fn the_migration_to_schema_3_writes_only_while_the_schema_is_2() {
    let versioned = |spec: u64, commit: &str| VersionedTarget {
        spec_generation: spec,
        target: Arc::new(super::target("web", commit)),
    };
    let backend = MemoryBackend::new();
    let mut batch = Batch::default();
    batch
        .put(Tree::Meta, SCHEMA_KEY, 2u32.to_be_bytes().to_vec())
        .put(
            Tree::Desired,
            "eu-1",
            encode(&serde_json::json!({"generation": 1, "apps": {"a": 1}, "removals_since": 0})),
        )
        .put(Tree::DesiredTargets, "eu-1\0a", encode(&versioned(2, "c2")));
    backend.commit(batch.clone()).await.unwrap();
    let raw = |tree: Tree, key: &'static str| {
        let backend = &backend;
        async move { backend.get(tree, key.as_bytes()).await.unwrap() }
    };

    // Another replica migrated first: nothing is written.
    let mut migrated = Batch::default();
    migrated.put(Tree::Meta, SCHEMA_KEY, 3u32.to_be_bytes().to_vec());
    backend.commit(migrated).await.unwrap();
    desired::migrate_to_3(&backend).await.unwrap();
    assert_eq!(
        raw(Tree::DesiredTargets, "eu-1\0a").await,
        Some(encode(&versioned(2, "c2")))
    );

    // At schema 2: the torn cluster is stored whole, once.
    backend.commit(batch).await.unwrap();
    desired::migrate_to_3(&backend).await.unwrap();
    let once = (
        raw(Tree::Desired, "eu-1").await,
        raw(Tree::DesiredTargets, "eu-1\0a").await,
    );
    let head: serde_json::Value = serde_json::from_slice(once.0.as_ref().unwrap()).unwrap();
    assert_eq!(head["generation"], 3);
    assert_eq!(
        raw(Tree::Meta, SCHEMA_KEY).await,
        Some(3u32.to_be_bytes().to_vec())
    );
    desired::migrate_to_3(&backend).await.unwrap();
    assert_eq!(
        (
            raw(Tree::Desired, "eu-1").await,
            raw(Tree::DesiredTargets, "eu-1\0a").await
        ),
        once
    );
}
