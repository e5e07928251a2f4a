use super::*;
use crate::model::{ClusterDesired, HealthState, SyncState, VersionedTarget};
use crate::resources::parse_document;
use std::collections::BTreeSet;

mod backends;
mod compat;

async fn sled_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("db")).await.unwrap();
    (dir, s)
}

#[cfg(feature = "etcd")]
use super::etcd_server;

/// Runs each `async fn(Store)` named against a sled store, an in-memory one and one on a real
/// etcd.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod on_sled {
            $(
                #[tokio::test]
                async fn $name() {
                    let (_dir, s) = super::sled_store().await;
                    super::$name(s).await;
                }
            )*
        }
        mod on_memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Store::in_memory().await.unwrap()).await;
                }
            )*
        }
        #[cfg(feature = "etcd")]
        mod on_etcd {
            $(
                #[tokio::test]
                async fn $name() {
                    let etcd = super::etcd_server::EtcdServer::start();
                    let options = super::etcd::EtcdOptions::new(vec![etcd.endpoint()]);
                    let backend = super::etcd::EtcdBackend::connect(&options).await.unwrap();
                    let s = super::Store::with_backend(std::sync::Arc::new(backend)).await.unwrap();
                    super::$name(s).await;
                }
            )*
        }
    };
}

on_every_backend!(
    resources_round_trip,
    tokens_count_uses_and_expire,
    a_token_is_looked_up_without_spending_it,
    a_revoked_token_is_refused,
    a_cluster_update_reads_and_writes_in_one_step,
    reports_are_kept_once_per_seq,
    desired_state_clusters_and_revisions_round_trip,
    the_mirror_follows_every_write,
    a_rollouts_history_entry_is_written_when_it_starts_changes_phase_or_ends,
    only_a_change_of_place_bumps_the_placement_version,
    events_are_paged_newest_first_and_filtered,
    desired_targets_are_stored_one_by_one,
    a_torn_desired_state_loads_as_a_new_generation_without_deltas,
    export_and_import_carry_everything_but_the_epoch,
    concurrent_token_uses_spend_each_use_once,
    the_audit_log_keeps_the_newest_within_its_retention,
    users_change_in_one_step,
    a_dashboard_link_is_spent_once,
);

/// Two uses of one sign-in link that both read it before either wrote: one starts its
/// session, the other is told it lost (as two replicas on one etcd would be); sessions are
/// left out of a backup.
async fn a_dashboard_link_is_spent_once(s: Store) {
    s.put_dashboard_record("signin/h1", &serde_json::json!({"user": "alice"}));
    s.flush().await.unwrap();
    let (_, first): (serde_json::Value, _) =
        s.dashboard_record("signin/h1").await.unwrap().unwrap();
    let (_, second): (serde_json::Value, _) =
        s.dashboard_record("signin/h1").await.unwrap().unwrap();
    let a = s.consume_dashboard_record(
        "signin/h1",
        first,
        "session/a",
        &serde_json::json!({"n": 1}),
    );
    let b = s.consume_dashboard_record(
        "signin/h1",
        second,
        "session/b",
        &serde_json::json!({"n": 2}),
    );
    a.confirm(&s).await.unwrap();
    assert!(matches!(b.confirm(&s).await, Err(StoreError::Conflict(_))));
    assert!(s.failure().is_none());
    let read = |key: &'static str| {
        let s = s.clone();
        async move {
            s.dashboard_record::<serde_json::Value>(key)
                .await
                .unwrap()
                .map(|(v, _)| v)
        }
    };
    assert_eq!(read("session/a").await, Some(serde_json::json!({"n": 1})));
    assert_eq!(read("session/b").await, None);
    assert_eq!(read("signin/h1").await, None);
    let dump = s.export().await.unwrap();
    assert!(dump["trees"].get("dashboard").is_none(), "{dump}");
    assert_eq!(
        s.sweep_dashboard_records(|key, _| key == "session/a")
            .await
            .unwrap(),
        1
    );
    s.flush().await.unwrap();
    assert_eq!(read("session/a").await, None);
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
pub(crate) fn cluster(name: &str) -> ClusterRecord {
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

fn event(app: &str, cluster: &str, message: &str) -> EventRecord {
    EventRecord {
        app: app.into(),
        cluster: cluster.into(),
        message: message.into(),
        ..Default::default()
    }
}

async fn resources_round_trip(s: Store) {
    s.put_resources(&[repo("a", "file:///a"), repo("b", "file:///b")])
        .unwrap();
    assert_eq!(s.resources().unwrap().len(), 2);
    assert_eq!(
        s.resource(Kind::Repo, "b").unwrap(),
        Some(repo("b", "file:///b"))
    );
    assert_eq!(s.resource(Kind::App, "b").unwrap(), None);
    assert!(s.delete_resource(Kind::Repo, "a").unwrap());
    assert!(!s.delete_resource(Kind::Repo, "a").unwrap());
    assert_eq!(s.resources().unwrap(), vec![repo("b", "file:///b")]);
    s.flush().await.unwrap();
    let exported = s.export().await.unwrap();
    let stored = exported["trees"]["resources"].as_object().unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(stored.contains_key(&hex::encode("Repo/b")), "{stored:?}");
}

async fn tokens_count_uses_and_expire(s: Store) {
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
    // Each use was a conditional write on the one before: all of them reach the backend.
    s.flush().await.unwrap();
    let dump = s.export().await.unwrap();
    let stored = &dump["trees"]["tokens"][hex::encode("e")];
    assert_eq!(stored["uses"], 5, "{stored}");
    assert!(s.failure().is_none());
}

async fn a_revoked_token_is_refused(s: Store) {
    let mut revoked = token(100, 0);
    revoked.id = "t2".into();
    s.put_token("r", &revoked).unwrap();
    assert!(!s.revoke_token("none").unwrap());
    assert!(s.revoke_token("t2").unwrap());
    assert!(s.token("r").unwrap().unwrap().revoked);
    assert!(matches!(
        s.use_token("r", 0),
        Err(StoreError::Token(TokenProblem::Revoked))
    ));
    assert_eq!(s.tokens().unwrap().len(), 1);
}

async fn concurrent_token_uses_spend_each_use_once(s: Store) {
    s.put_token("h", &token(100, 10)).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..25 {
        let s = s.clone();
        tasks.spawn(async move {
            let used = s.use_token("h", 1).map(|r| r.uses);
            s.flush().await.unwrap();
            used
        });
    }
    let mut uses = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Ok(n) = r.unwrap() {
            uses.push(n);
        }
    }
    uses.sort_unstable();
    assert_eq!(uses, (1..=10).collect::<Vec<_>>());
    assert!(s.failure().is_none());
}

async fn a_token_is_looked_up_without_spending_it(s: Store) {
    assert_eq!(s.token("h").unwrap(), None);
    s.put_token("h", &token(100, 1)).unwrap();
    for _ in 0..3 {
        assert_eq!(s.token("h").unwrap(), Some(token(100, 1)));
    }
    assert_eq!(s.use_token("h", 50).unwrap().uses, 1);
    assert_eq!(s.token("h").unwrap().unwrap().uses, 1);
}

async fn a_cluster_update_reads_and_writes_in_one_step(s: Store) {
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

async fn reports_are_kept_once_per_seq(s: Store) {
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
    // Read from the backend before any flush: the write is there.
    assert_eq!(
        s.report("eu-1", "web").await.unwrap().unwrap().message,
        "first"
    );
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
    assert_eq!(s.reports().await.unwrap().len(), 1);
    s.delete_report("eu-1", "web").unwrap();
    assert_eq!(s.report("eu-1", "web").await.unwrap(), None);
}

async fn desired_state_clusters_and_revisions_round_trip(s: Store) {
    let desired = ClusterDesired {
        generation: 3,
        targets: BTreeMap::from([(
            "web".to_owned(),
            VersionedTarget {
                spec_generation: 2,
                target: Arc::new(target("web", "c")),
            },
        )]),
        ..ClusterDesired::default()
    };
    s.put_desired("eu-1", &ClusterDesired::default(), &desired)
        .unwrap();
    assert_eq!(s.desired_all().await.unwrap().get("eu-1"), Some(&desired));

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
        ..Default::default()
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
    assert_eq!(s.repo_status("r").unwrap(), Some(status.clone()));
    assert_eq!(s.repo_statuses().unwrap().len(), 1);
    s.delete_repo_status("r").unwrap();
    assert_eq!(s.repo_status("r").unwrap(), None);

    let control = AppControl {
        suspended: true,
        ..AppControl::default()
    };
    s.put_app_control("web", &control).unwrap();
    assert_eq!(s.app_control("web").unwrap(), control);
    assert_eq!(s.app_controls().unwrap().len(), 1);
    s.put_app_control("web", &AppControl::default()).unwrap();
    assert!(s.app_controls().unwrap().is_empty());
}

/// A rollout is decided hundreds of times at 10,000 clusters, each decision writing its whole
/// record: its history entry is written only when it starts or changes phase, and the last
/// state of a rollout when the next starts; reading the history lays the current record over
/// its entry, so the history always shows each rollout's last state, after a restart too.
async fn a_rollouts_history_entry_is_written_when_it_starts_changes_phase_or_ends(s: Store) {
    use crate::fleet::rollout::Phase;
    let revision = |c: &str| AppRevision {
        commit: c.repeat(40),
        git_ref: "refs/heads/main".into(),
        ..Default::default()
    };
    let first = RolloutState::first(revision("a"), 5);
    s.put_rollout("web", &first).unwrap();
    // Decisions that change what is given, not the phase: the entry stays as it was.
    let mut step = first.clone();
    for i in 0..3 {
        step.assigned
            .insert(format!("eu-{i}"), Arc::new(revision("a")));
        s.put_rollout("web", &step).unwrap();
    }
    s.flush().await.unwrap();
    let raw = |dump: &serde_json::Value| -> Vec<serde_json::Value> {
        dump["trees"]["rollout_history"]
            .as_object()
            .map(|o| o.values().cloned().collect())
            .unwrap_or_default()
    };
    let dump = s.export().await.unwrap();
    let entries = raw(&dump);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry: RolloutState = serde_json::from_value(entries[0].clone()).unwrap();
    assert_eq!(entry, first, "the entry was written again by a decision");
    assert_eq!(s.rollout_history("web").await.unwrap(), vec![step.clone()]);
    // A change of phase writes it.
    let mut done = step.clone();
    done.phase = Phase::Complete;
    done.finished_at = Some(9);
    s.put_rollout("web", &done).unwrap();
    // The next rollout: the one before keeps its last state, whatever wrote its entry.
    let mut last = done.clone();
    last.assigned.insert("eu-9".into(), Arc::new(revision("a")));
    s.put_rollout("web", &last).unwrap();
    let mut second = RolloutState::first(revision("b"), 10);
    second.number = 2;
    s.put_rollout("web", &second).unwrap();
    let mut second_step = second.clone();
    second_step
        .assigned
        .insert("eu-0".into(), Arc::new(revision("b")));
    s.put_rollout("web", &second_step).unwrap();
    s.flush().await.unwrap();
    assert_eq!(
        s.rollout_history("web").await.unwrap(),
        vec![last.clone(), second_step.clone()]
    );
    // What the backend holds reads the same in a store opened on it.
    let dump = s.export().await.unwrap();
    assert_eq!(raw(&dump).len(), 2);
    let again = Store::in_memory().await.unwrap();
    again.import(&dump).await.unwrap();
    assert_eq!(
        again.rollout_history("web").await.unwrap(),
        vec![last, second_step]
    );
}

async fn the_mirror_follows_every_write(s: Store) {
    let mark = HealthyMark {
        revision: "a".repeat(40),
        since: 7,
    };
    let rollout = RolloutState::first(
        AppRevision {
            commit: "c".repeat(40),
            git_ref: "refs/heads/main".into(),
            ..Default::default()
        },
        5,
    );
    s.put_cluster(&cluster("eu-1")).unwrap();
    s.record_report("eu-1", 1, Some(&report(1, "web", "report 1")))
        .unwrap();
    s.record_report("eu-1", 2, Some(&report(2, "web", "report 2")))
        .unwrap();
    s.put_healthy_mark("eu-1", "web", Some(&mark)).unwrap();
    s.put_healthy_mark("eu-1", "api", Some(&mark)).unwrap();
    s.put_healthy_mark("eu-1", "api", None).unwrap();
    s.put_healthy_mark("eu-2", "web", Some(&mark)).unwrap();
    s.put_healthy_mark("eu-2", "webby", Some(&mark)).unwrap();
    s.put_rollout("web", &rollout).unwrap();
    s.put_app_control(
        "web",
        &AppControl {
            suspended: true,
            ..AppControl::default()
        },
    )
    .unwrap();
    let summary = s.report_summary("eu-1", "web").unwrap();
    assert_eq!((summary.seq, summary.message.as_str()), (2, "report 2"));
    assert_eq!(s.healthy_mark("eu-1", "web").unwrap(), Some(mark.clone()));
    assert_eq!(s.healthy_mark("eu-1", "api").unwrap(), None);
    assert_eq!(s.rollout("web").unwrap(), Some(rollout.clone()));
    assert_eq!(s.rollout_shared("web").as_deref(), Some(&rollout));
    assert_eq!(s.rollouts_shared().len(), 1);
    assert_eq!(s.rollouts().unwrap().len(), 1);
    assert_eq!(s.rollout_history("web").await.unwrap(), vec![rollout]);
    s.delete_report("eu-1", "web").unwrap();
    assert_eq!(s.report_summary("eu-1", "web"), None);
    s.delete_app_records("web").unwrap();
    assert_eq!(s.healthy_mark("eu-1", "web").unwrap(), None);
    assert_eq!(s.healthy_mark("eu-2", "web").unwrap(), None);
    assert_eq!(s.healthy_mark("eu-2", "webby").unwrap(), Some(mark));
    assert_eq!(s.rollout("web").unwrap(), None);
    assert!(s.rollouts_shared().is_empty());
    assert_eq!(s.app_control("web").unwrap(), AppControl::default());
    assert_eq!(s.rollout_history("web").await.unwrap(), vec![]);
    // The backend agrees with the mirror.
    s.flush().await.unwrap();
    let dump = s.export().await.unwrap();
    for tree in ["rollouts", "rollout_history", "app_controls", "targets"] {
        assert_eq!(dump["trees"][tree], serde_json::json!({}), "{tree}");
    }
    assert_eq!(
        dump["trees"]["healthy"].as_object().unwrap().len(),
        1,
        "{}",
        dump["trees"]["healthy"]
    );
}

async fn only_a_change_of_place_bumps_the_placement_version(s: Store) {
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

    // Which clusters moved since a version: the recompute places only those again.
    let placed = |v: u64| {
        s.placed_since(v)
            .map(|c| c.into_iter().collect::<BTreeSet<_>>())
    };
    assert_eq!(placed(seen), Some(BTreeSet::new()));
    s.put_cluster(&cluster("eu-2")).unwrap();
    assert_eq!(placed(seen), Some(BTreeSet::from(["eu-2".to_owned()])));
    assert_eq!(
        placed(start),
        Some(BTreeSet::from(["eu-1".to_owned(), "eu-2".to_owned()]))
    );
    // A version this store's memory never had (another's, or from its future) names no set.
    assert_eq!(placed(0), None);
    assert_eq!(placed(version(&s) + 1), None);
}

async fn events_are_paged_newest_first_and_filtered(s: Store) {
    // More than a page of the backend, so that the reads page.
    let mut events: Vec<_> = (0..EVENTS_PAGE * 2 + 10)
        .map(|n| {
            let app = if n % 3 == 0 { "api" } else { "web" };
            event(app, &format!("eu-{}", n % 2), &format!("event {n}"))
        })
        .collect();
    s.append_events(&mut events).unwrap();
    let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow");
    assert!(ids[0] > 0, "0 is never an id: after = 0 means all");
    let all = s.events(None, None, 0, usize::MAX).await.unwrap();
    assert_eq!(all, events);
    // The newest, oldest first.
    let newest = s.events(None, None, 0, 3).await.unwrap();
    assert_eq!(newest, events[events.len() - 3..].to_vec());
    let api_eu0: Vec<_> = events
        .iter()
        .filter(|e| e.app == "api" && e.cluster == "eu-0")
        .cloned()
        .collect();
    assert_eq!(
        s.events(Some("api"), Some("eu-0"), 0, usize::MAX)
            .await
            .unwrap(),
        api_eu0
    );
    let after = events[events.len() - 5].id;
    assert_eq!(
        s.events(None, None, after, 100).await.unwrap(),
        events[events.len() - 4..].to_vec()
    );
    assert!(
        s.events(Some("nope"), None, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

fn target(app: &str, commit: &str) -> crate::fleet::DesiredTarget {
    crate::fleet::DesiredTarget::for_tests(app, commit)
}

pub(crate) fn targets(of: &[(&str, &str)]) -> BTreeMap<String, Arc<crate::fleet::DesiredTarget>> {
    of.iter()
        .map(|(app, commit)| ((*app).to_owned(), Arc::new(target(app, commit))))
        .collect()
}

/// The Targets of `cluster` as stored, by App.
async fn stored_targets(s: &Store, cluster: &str) -> BTreeMap<String, Vec<u8>> {
    backend::load(&*s.inner.backend, Tree::DesiredTargets)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|(k, v)| {
            let key = String::from_utf8(k).unwrap();
            let (c, app) = key.split_once('\0')?;
            (c == cluster).then(|| (app.to_owned(), v))
        })
        .collect()
}

async fn desired_targets_are_stored_one_by_one(s: Store) {
    let g1 = ClusterDesired::default().next(targets(&[("a", "c1"), ("b", "c1"), ("c", "c1")]));
    s.put_desired("eu-1", &ClusterDesired::default(), &g1)
        .unwrap();
    s.flush().await.unwrap();
    let before = stored_targets(&s, "eu-1").await;
    assert_eq!(before.len(), 3);
    // One App moves, one goes: its Target is deleted, the others are not written again.
    let g2 = g1.next(targets(&[("a", "c2"), ("b", "c1")]));
    let writes = |old: &ClusterDesired, new: &ClusterDesired, whole: bool| -> Vec<String> {
        desired::desired_writes("eu-1", old, new, |_| whole)
            .ops
            .iter()
            .filter_map(|op| {
                op_key(op).map(|(tree, key)| format!("{tree}/{}", String::from_utf8_lossy(&key)))
            })
            .collect()
    };
    assert_eq!(
        writes(&g1, &g2, true),
        [
            "desired_targets/eu-1\0a",
            "desired_targets/eu-1\0c",
            "desired/eu-1"
        ]
    );
    s.put_desired("eu-1", &g1, &g2).unwrap();
    s.flush().await.unwrap();
    let after = stored_targets(&s, "eu-1").await;
    assert_eq!(after.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(after["b"], before["b"]);
    let loaded = s.desired_all().await.unwrap()["eu-1"].clone();
    assert_eq!(loaded, g2);
    assert_eq!(loaded.removed.get("c"), Some(&2));
    // A spoke at the first generation gets what changed since, from the stored state alone.
    let u = crate::link::on_hello(s.epoch(), s.epoch(), 1, &loaded).unwrap();
    assert!(!u.snapshot);
    assert_eq!(u.upserts.len(), 1);
    assert_eq!(u.removals, ["c"]);

    // Only a Target the cluster has changes: it is written alone, unless the backend would
    // split the write.
    let g3 = g2.next(targets(&[("a", "c2"), ("b", "c3")]));
    assert_eq!(writes(&g2, &g3, true), ["desired_targets/eu-1\0b"]);
    assert_eq!(
        writes(&g2, &g3, false),
        ["desired_targets/eu-1\0b", "desired/eu-1"]
    );
    s.put_desired("eu-1", &g2, &g3).unwrap();
    s.flush().await.unwrap();
    let loaded = s.desired_all().await.unwrap()["eu-1"].clone();
    assert_eq!(loaded, g3);
    assert_eq!(s.desired_of("eu-1").await.unwrap(), g3);
    // The record still says generation 2; the Target says 3, and the removal is remembered.
    let u = crate::link::on_hello(s.epoch(), s.epoch(), 2, &loaded).unwrap();
    assert!(!u.snapshot);
    assert_eq!(u.generation, 3);
    assert_eq!(u.upserts.len(), 1);
    assert_eq!(u.upserts[0].target.commit, "c3");
    let u = crate::link::on_hello(s.epoch(), s.epoch(), 1, &loaded).unwrap();
    assert_eq!(
        (u.upserts.len(), u.removals.clone()),
        (2, vec!["c".to_owned()])
    );
    // And an App added after that writes the record again, naming both.
    let g4 = g3.next(targets(&[("a", "c2"), ("b", "c3"), ("d", "c1")]));
    assert_eq!(
        writes(&g3, &g4, true),
        ["desired_targets/eu-1\0d", "desired/eu-1"]
    );
    s.put_desired("eu-1", &g3, &g4).unwrap();
    s.flush().await.unwrap();
    assert_eq!(s.desired_all().await.unwrap()["eu-1"], g4);
}

/// A Target newer than the record (the record's transaction never made it, etcd having split
/// the write): the state loads as a generation no delta leads to, and is stored whole next.
async fn a_torn_desired_state_loads_as_a_new_generation_without_deltas(s: Store) {
    let g1 = ClusterDesired::default().next(targets(&[("a", "c1"), ("b", "c1")]));
    s.put_desired("eu-1", &ClusterDesired::default(), &g1)
        .unwrap();
    s.flush().await.unwrap();
    // Written with the record (as a write the backend splits is), the record lost.
    let g2 = g1.next(targets(&[("a", "c2"), ("b", "c1")]));
    let mut torn = desired::desired_writes("eu-1", &g1, &g2, |_| false);
    torn.ops
        .retain(|op| op_key(op).is_some_and(|(tree, _)| tree == Tree::DesiredTargets));
    assert_eq!(torn.ops.len(), 1);
    s.inner.backend.commit(torn).await.unwrap();
    let loaded = s.desired_all().await.unwrap()["eu-1"].clone();
    assert_eq!(loaded.generation, 3);
    assert_eq!(loaded.removals_since, 3);
    assert_eq!(loaded.targets["a"].target.commit, "c2");
    assert_eq!(s.desired_of("eu-1").await.unwrap(), loaded);
    for spoke_at in [1, 2] {
        let u = crate::link::on_hello(s.epoch(), s.epoch(), spoke_at, &loaded).unwrap();
        assert!(
            u.snapshot,
            "a spoke at generation {spoke_at} must start over"
        );
    }
    // Stored whole on the next write, it loads as it is again.
    let next = loaded.next(targets(&[("a", "c2"), ("b", "c1")]));
    s.put_desired("eu-1", &loaded, &next).unwrap();
    s.flush().await.unwrap();
    let again = s.desired_all().await.unwrap()["eu-1"].clone();
    assert_eq!(again, next);
    assert_eq!(again.generation, 4);
}

async fn export_and_import_carry_everything_but_the_epoch(s: Store) {
    s.put_resources(&[repo("a", "file:///a")]).unwrap();
    s.put_token("h", &token(100, 2)).unwrap();
    let desired = ClusterDesired::default()
        .next(targets(&[("a", "c1")]))
        .next(targets(&[("a", "c2")]));
    s.put_desired("eu-1", &ClusterDesired::default(), &desired)
        .unwrap();
    s.record_report("eu-1", 4, Some(&report(4, "web", "hi")))
        .unwrap();
    s.persist_acked("eu-1", 4).unwrap();
    s.append_events(&mut [event("web", "", "one")]).unwrap();
    let dump = s.export().await.unwrap();
    // Through text, as a backup file would be.
    let dump: serde_json::Value = serde_json::from_str(&dump.to_string()).unwrap();

    for fresh in [Store::in_memory().await.unwrap(), sled_store().await.1] {
        fresh.import(&dump).await.unwrap();
        assert_eq!(fresh.resources().unwrap(), s.resources().unwrap());
        assert_eq!(fresh.use_token("h", 50).unwrap().uses, 1);
        assert_eq!(
            fresh.desired_all().await.unwrap(),
            s.desired_all().await.unwrap()
        );
        assert_eq!(fresh.acked_seq("eu-1").unwrap(), 4);
        assert_eq!(
            fresh.report("eu-1", "web").await.unwrap().unwrap().message,
            "hi"
        );
        assert_eq!(fresh.report_summary("eu-1", "web").unwrap().seq, 4);
        assert_eq!(fresh.events(None, None, 0, 10).await.unwrap().len(), 1);
        // Events recorded after an import follow the imported ones.
        let mut next = [event("web", "", "two")];
        fresh.append_events(&mut next).unwrap();
        assert_eq!(
            fresh.events(None, None, 0, 10).await.unwrap()[1].message,
            "two"
        );
        assert_ne!(fresh.epoch(), s.epoch());

        // Never over existing data.
        let err = fresh.import(&dump).await.unwrap_err();
        assert!(err.to_string().contains("already holds data"), "{err}");
    }
    let other = Store::in_memory().await.unwrap();
    let err = other
        .import(&serde_json::json!({"schemaVersion": 1, "trees": {"bogus": {}}}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");

    // A backup of schema 1 (whole desired states, their history) is migrated as it loads.
    let web = VersionedTarget {
        spec_generation: 2,
        target: Arc::new(target("web", "c1")),
    };
    let legacy = serde_json::json!({"generation": 3, "targets": {"web": web}});
    let old = Store::in_memory().await.unwrap();
    old.import(&serde_json::json!({
        "schemaVersion": 1,
        "trees": {
            "desired": {hex::encode("eu-1"): legacy},
            "desired_history": {hex::encode(b"eu-1\0\0\0\0\0\0\0\0\x03"): legacy},
        },
    }))
    .await
    .unwrap();
    let loaded = old.desired_all().await.unwrap()["eu-1"].clone();
    assert_eq!((loaded.generation, loaded.targets["web"].clone()), (3, web));
    assert_eq!(
        old.inner.backend.count(Tree::DesiredHistory).await.unwrap(),
        0
    );
}

fn audit_entry(user: &str, at_unix: i64) -> AuditRecord {
    AuditRecord {
        id: 0,
        at_unix,
        user: user.into(),
        action: "apply".into(),
        target: "App/web".into(),
        outcome: gitfleet_core::users::AuditOutcome::Unanswered,
        message: String::new(),
    }
}

async fn the_audit_log_keeps_the_newest_within_its_retention(s: Store) {
    s.set_audit_retention(AuditRetention {
        max_entries: 5,
        max_age: std::time::Duration::from_secs(1000),
    });
    let mut ids = Vec::new();
    for i in 0..8 {
        let user = if i % 2 == 0 { "alice" } else { "bob" };
        let mut e = audit_entry(user, 10_000 + i);
        ids.push(s.append_audit(&mut e).unwrap());
    }
    assert_eq!(ids, (1..=8).collect::<Vec<u64>>());
    let all = s.audit(None, 0, 100).await.unwrap();
    let kept: Vec<u64> = all.iter().map(|e| e.id).collect();
    assert_eq!(kept, [4, 5, 6, 7, 8], "the newest five, oldest first");
    let bob: Vec<u64> = s
        .audit(Some("bob"), 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(bob, [4, 6, 8]);
    let recent = s.audit(None, 10_006, 100).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(s.audit(None, 0, 2).await.unwrap()[0].id, 7);

    // An outcome rewrites its entry.
    let mut last = all[4].clone();
    last.outcome = gitfleet_core::users::AuditOutcome::Ok;
    s.put_audit(&last).unwrap();
    let again = s.audit(None, 0, 1).await.unwrap();
    assert_eq!(again[0].outcome, gitfleet_core::users::AuditOutcome::Ok);

    // Entries older than the age go as the next one comes.
    let mut late = audit_entry("carol", 10_000 + 1005);
    s.append_audit(&mut late).unwrap();
    let kept: Vec<u64> = s
        .audit(None, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(kept, [6, 7, 8, 9]);
}

async fn users_change_in_one_step(s: Store) {
    let record = |name: &str| UserRecord {
        name: name.into(),
        role: gitfleet_core::authz::Role::Viewer,
        projects: Vec::new(),
        key_fingerprint: "ff".into(),
        expires_at_unix: 1,
        created_at_unix: 0,
        created_by: "admin".into(),
        revoked: false,
        revoked_by: String::new(),
        revoked_at_unix: 0,
        bootstrap: false,
    };
    let seen = s
        .change_users(|users| Ok::<_, ()>((Some(record("alice")), users.len())))
        .unwrap();
    assert_eq!(seen, 0);
    // A refusal writes nothing.
    assert!(
        s.change_users(|_| Err::<(Option<UserRecord>, ()), _>("no"))
            .is_err()
    );
    s.flush().await.unwrap();
    assert_eq!(s.user("alice"), Some(record("alice")));
    assert_eq!(s.users().len(), 1);
}
