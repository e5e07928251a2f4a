//! The engine's event bus (every event reaches live subscribers, in the order it is stored)
//! its rollout controller (each App's rollout decided when something concerns that App), and
//! its write lock (never held across Git work).

use crate::support;

use gitfleet_proto::v1 as pb;
use support::*;

#[tokio::test]
async fn a_subscriber_sees_a_rollouts_events_in_order() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let mut bus = hub.engine().subscribe_events();
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let (_, spoke) = web_on_dev_1(&hub, &git, &c1).await;
    spoke.report(1, "web", &c1, "all good").await;

    let mut seen = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        loop {
            let event = bus.recv().await.expect("no event missed");
            let done = event.app == "web" && event.kind == "Completed";
            seen.push(event);
            if done {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the rollout never completed; events seen: {seen:#?}"));

    assert!(
        seen.windows(2).all(|w| w[0].id < w[1].id),
        "broadcast in the order recorded: {seen:#?}"
    );
    // Exactly what the store holds, in the same order (`events` reads ids above `after`, and
    // event ids start at 1).
    let last = seen.last().map(|e| e.id).unwrap_or_default();
    let stored: Vec<(u64, String)> = hub
        .engine()
        .events(Some("web"), None, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.id <= last)
        .map(|e| (e.id, e.kind))
        .collect();
    let broadcast: Vec<(u64, String)> = seen
        .iter()
        .filter(|e| e.app == "web")
        .map(|e| (e.id, e.kind.clone()))
        .collect();
    let readable: Vec<(u64, String)> = broadcast
        .iter()
        .filter(|(id, _)| *id > 0)
        .cloned()
        .collect();
    assert_eq!(readable, stored);
    let kinds: Vec<&str> = broadcast.iter().map(|(_, k)| k.as_str()).collect();
    let at = |kind: &str| {
        kinds
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_else(|| panic!("no {kind} event in {kinds:?}"))
    };
    assert!(at("Created") < at("Started"), "{kinds:?}");
    assert!(at("Started") < at("Completed"), "{kinds:?}");
    hub.shutdown().await;
}

/// An App in env=dev clusters whose rollout stays in progress for an hour once its Targets
/// are healthy.
fn soaking_app(name: &str) -> pb::ResourceDocument {
    doc(serde_json::json!({
        "apiVersion": "gitfleet.dev/v1", "kind": "App",
        "metadata": {"name": name},
        "spec": {
            "repo": "platform", "path": format!("apps/{name}"), "namespace": name,
            "targets": [{"clusterSelector": {"matchLabels": {"env": "dev"}}}],
            "rollout": {"minHealthyFor": "1h"}
        }
    }))
}

/// Apps `a` and `b` (`app` gives each one's document) on cluster `dev-1` from the Repo
/// `platform`: the first commit, and the spoke once it holds both Apps at it.
async fn a_and_b_on_dev_1(
    hub: &gitfleet_hub::runtime::HubHandle,
    git: &GitRepo,
    app: impl Fn(&str) -> pb::ResourceDocument,
) -> (String, FakeSpoke) {
    let c1 = git.commit(
        &[("apps/a/cm.yaml", "v: 1\n"), ("apps/b/cm.yaml", "v: 1\n")],
        "one",
    );
    let id = register(hub, "dev-1", &[("env", "dev")]).await;
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default())
        .await
        .unwrap();
    admin(hub)
        .await
        .apply(pb::ApplyRequest {
            documents: vec![repo_doc("platform", &git.url()), app("a"), app("b")],
            dry_run: false,
        })
        .await
        .unwrap();
    spoke
        .until("a and b at c1", |v| {
            v.commit_of("a").as_deref() == Some(c1.as_str())
                && v.commit_of("b").as_deref() == Some(c1.as_str())
        })
        .await;
    (c1, spoke)
}

#[tokio::test]
async fn a_report_for_one_app_decides_that_apps_rollout_only() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let engine = hub.engine();
    let git = GitRepo::new();
    let (c1, mut spoke) = a_and_b_on_dev_1(&hub, &git, soaking_app).await;

    let mut seq = 0;
    loop {
        let (a, b, resyncs) = (
            engine.rollout_decisions("a"),
            engine.rollout_decisions("b"),
            engine.rollout_resyncs(),
        );
        seq += 1;
        spoke.report(seq, "a", &c1, "healthy").await;
        spoke
            .until("the report acked", |v| v.acked_seq == seq)
            .await;
        eventually("a's rollout decided on its report", || {
            let decided = engine.rollout_decisions("a") > a;
            async move { decided.then_some(()) }
        })
        .await;
        if engine.rollout_resyncs() != resyncs {
            // The driver's safety net decided every rollout meanwhile: measure again.
            assert!(seq < 5, "a resync on every try");
            continue;
        }
        assert_eq!(
            engine.rollout_decisions("b"),
            b,
            "a report for a decided b's rollout too"
        );
        break;
    }
    for app in ["a", "b"] {
        let view = engine.rollout_status(app).unwrap();
        assert!(
            !matches!(
                view.state.phase,
                gitfleet_hub::fleet::rollout::Phase::Complete
            ),
            "{app}'s rollout soaks for an hour"
        );
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn a_git_diff_holds_no_lock_that_an_apply_needs() {
    use std::sync::Arc;
    use tokio::sync::{Notify, mpsc};

    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let engine = hub.engine();
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
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
    let revision = |engine: &gitfleet_hub::engine::Engine| {
        engine
            .get(Some(gitfleet_hub::resources::Kind::App), Some("web"))
            .unwrap()
            .first()
            .and_then(|d| d["status"]["revision"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    eventually("web at c1", || {
        let at = revision(engine) == c1;
        async move { at.then_some(()) }
    })
    .await;

    // Every diff waits until the test lets it go.
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let hook_release = Arc::clone(&release);
    engine.set_diff_hook(Some(Arc::new(move |repo: String| {
        let entered_tx = entered_tx.clone();
        let release = Arc::clone(&hook_release);
        Box::pin(async move {
            let _ = entered_tx.send(repo);
            release.notified().await;
        })
    })));
    let c2 = git.commit(&[("apps/web/cm.yaml", "v: 2\n")], "two");
    assert!(engine.trigger_fetch("platform"));
    let repo = tokio::time::timeout(DEADLINE, entered.recv())
        .await
        .expect("the fetch of c2 diffs")
        .unwrap();
    assert_eq!(repo, "platform");

    // The diff is held: a change that takes the engine's write lock goes through meanwhile.
    let group = doc(serde_json::json!({
        "apiVersion": "gitfleet.dev/v1", "kind": "ClusterGroup",
        "metadata": {"name": "eu"},
        "spec": {"selector": {"matchLabels": {"region": "eu"}}}
    }));
    let applied = tokio::time::timeout(
        DEADLINE,
        admin.apply(pb::ApplyRequest {
            documents: vec![group],
            dry_run: false,
        }),
    )
    .await
    .expect("an apply while a diff runs is not held up by it")
    .unwrap()
    .into_inner();
    assert_eq!(applied.outcomes[0].action, "created");
    assert_eq!(revision(engine), c1, "the held diff moved nothing yet");

    // Let it go: the App moves to c2 as it would have.
    engine.set_diff_hook(None);
    release.notify_one();
    eventually("web at c2", || {
        let at = revision(engine) == c2;
        async move { at.then_some(()) }
    })
    .await;
    hub.shutdown().await;
}

/// A rollout with a strategy that follows a complete one takes its first step on the fetch
/// that brought the commit, not when the driver's 30 s safety net next looks at it.
#[tokio::test]
async fn a_new_commit_after_a_complete_rollout_goes_out_at_once_with_a_strategy() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let engine = hub.engine();
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let id = register(&hub, "dev-1", &[("env", "dev")]).await;
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default())
        .await
        .unwrap();
    admin(&hub)
        .await
        .apply(pb::ApplyRequest {
            documents: vec![
                doc(serde_json::json!({
                    "apiVersion": "gitfleet.dev/v1", "kind": "Repo",
                    "metadata": {"name": "platform"},
                    "spec": {"url": git.url(), "pollInterval": "1h"}
                })),
                doc(serde_json::json!({
                    "apiVersion": "gitfleet.dev/v1", "kind": "App",
                    "metadata": {"name": "web"},
                    "spec": {
                        "repo": "platform", "path": "apps/web", "namespace": "web",
                        "targets": [{"clusterSelector": {"matchLabels": {"env": "dev"}}}],
                        "rollout": {"maxUnavailable": 1}
                    }
                })),
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
    spoke.report(1, "web", &c1, "healthy").await;
    eventually("the first rollout complete", || {
        let complete = engine.rollout_status("web").is_ok_and(|view| {
            matches!(
                view.state.phase,
                gitfleet_hub::fleet::rollout::Phase::Complete
            )
        });
        async move { complete.then_some(()) }
    })
    .await;

    let c2 = git.commit(&[("apps/web/cm.yaml", "v: 2\n")], "two");
    let resyncs = engine.rollout_resyncs();
    assert!(engine.trigger_fetch("platform"));
    spoke
        .until("web at c2", |v| {
            v.commit_of("web").as_deref() == Some(c2.as_str())
        })
        .await;
    assert_eq!(
        engine.rollout_resyncs(),
        resyncs,
        "the new commit's first step waited for the driver's safety-net resync"
    );
    hub.shutdown().await;
}

/// A recompute from the inputs of the last decision decides no complete rollout again (each
/// App's decision is remembered with what it was made from), and a changed input decides again
/// the App it concerns and no other.
#[tokio::test]
async fn a_recompute_that_changes_nothing_decides_no_complete_rollout_again() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let engine = hub.engine();
    let git = GitRepo::new();
    let plain = |name: &str| {
        doc(serde_json::json!({
            "apiVersion": "gitfleet.dev/v1", "kind": "App",
            "metadata": {"name": name},
            "spec": {
                "repo": "platform", "path": format!("apps/{name}"), "namespace": name,
                "targets": [{"clusterSelector": {"matchLabels": {"env": "dev"}}}]
            }
        }))
    };
    let (c1, mut spoke) = a_and_b_on_dev_1(&hub, &git, plain).await;
    spoke.report(1, "a", &c1, "healthy").await;
    spoke.report(2, "b", &c1, "healthy").await;
    let complete = |app: &str| {
        engine.rollout_status(app).is_ok_and(|view| {
            matches!(
                view.state.phase,
                gitfleet_hub::fleet::rollout::Phase::Complete
            )
        })
    };
    eventually("both rollouts complete", || {
        let done = complete("a") && complete("b");
        async move { done.then_some(()) }
    })
    .await;

    let (a, b) = (engine.rollout_decisions("a"), engine.rollout_decisions("b"));
    for _ in 0..3 {
        engine.recompute().await.unwrap();
    }
    assert_eq!(
        (engine.rollout_decisions("a"), engine.rollout_decisions("b")),
        (a, b),
        "a recompute that changed nothing decided complete rollouts again"
    );

    // A commit to a's path: a's revision changes, b's does not.
    let c2 = git.commit(&[("apps/a/cm.yaml", "v: 2\n")], "two");
    assert!(engine.trigger_fetch("platform"));
    spoke
        .until("a at c2", |v| {
            v.commit_of("a").as_deref() == Some(c2.as_str())
        })
        .await;
    assert!(engine.rollout_decisions("a") > a, "a's new commit decided");
    assert_eq!(
        engine.rollout_decisions("b"),
        b,
        "b's rollout decided again though nothing of it changed"
    );
    hub.shutdown().await;
}

/// A rollout over many clusters is decided on every batch of reports: each decision reads
/// again only the Targets whose report changed since the last one (it read every Target of
/// the App, every time), and still sees each change (a Target turning degraded pauses it).
#[tokio::test]
async fn a_rollout_decision_reads_again_only_the_targets_that_changed() {
    use gitfleet_hub::model::{HealthState, SyncState, TargetReport};
    const CLUSTERS: usize = 40;
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let engine = hub.engine();
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/a/cm.yaml", "v: 1\n")], "one");
    let mut links = Vec::new();
    let mut clusters = Vec::new();
    for i in 0..CLUSTERS {
        let id = register(&hub, &format!("dev-{i:02}"), &[("env", "dev")]).await;
        let key = gitfleet_hub::pki::cert_key_pem(&id.cert_pem).unwrap();
        links.push(engine.connect(&id.cluster, &key, "test").await.unwrap());
        clusters.push(id.cluster);
    }
    admin(&hub)
        .await
        .apply(pb::ApplyRequest {
            documents: vec![repo_doc("platform", &git.url()), soaking_app("a")],
            dry_run: false,
        })
        .await
        .unwrap();
    for cluster in &clusters {
        eventually("every cluster given a at c1", || {
            let given = engine
                .desired(cluster)
                .and_then(|d| d.targets.get("a").map(|t| t.target.commit.clone()))
                == Some(c1.clone());
            async move { given.then_some(()) }
        })
        .await;
    }
    let mut seq = 0;
    let mut report = |cluster: &str, health: HealthState, message: &str| {
        seq += 1;
        engine
            .store_report(TargetReport {
                seq,
                cluster: cluster.to_owned(),
                app: "a".into(),
                revision: c1.clone(),
                spec_generation: 1,
                sync: SyncState::Synced,
                health,
                message: message.to_owned(),
                ..Default::default()
            })
            .unwrap();
    };
    for cluster in &clusters {
        report(cluster, HealthState::Healthy, "1 resource");
    }
    engine.flush().await.unwrap();
    // Decides every App here and now: what was reported so far has been read.
    engine.recompute().await.unwrap();
    let before = engine.rollout_targets_read("a");
    assert!(
        before >= CLUSTERS as u64,
        "the rollout read every Target at least once: {before}"
    );

    const CHANGES: usize = 5;
    for (i, cluster) in clusters.iter().take(CHANGES).enumerate() {
        report(
            cluster,
            HealthState::Healthy,
            &format!("{} resources", i + 2),
        );
        engine.flush().await.unwrap();
        engine.recompute().await.unwrap();
    }
    // Each change is read once, by whichever decision came first (the recompute or the
    // driver, woken by the report); the other 35 Targets are not read again.
    assert_eq!(
        engine.rollout_targets_read("a") - before,
        CHANGES as u64,
        "Targets read by the decisions after {CHANGES} reports, one Target each"
    );
    let state = engine.rollout_state("a").unwrap();
    assert!(
        matches!(
            state.phase,
            gitfleet_hub::fleet::rollout::Phase::Progressing
        ),
        "soaking: {:?}",
        state.phase
    );

    // A change the decision must see: one Target degrades past the failure budget.
    report(&clusters[CLUSTERS - 1], HealthState::Degraded, "crash loop");
    engine.flush().await.unwrap();
    engine.recompute().await.unwrap();
    let state = engine.rollout_state("a").unwrap();
    assert!(
        matches!(
            state.phase,
            gitfleet_hub::fleet::rollout::Phase::Paused { .. }
        ),
        "a degraded Target pauses the rollout: {:?}",
        state.phase
    );
    drop(links);
    hub.shutdown().await;
}

/// A cluster that joins a fleet, or is relabelled, has its own desired state computed: the
/// recompute looks at that cluster, not at every cluster of the fleet (it looked at all of
/// them, and computed every App's Targets on each, on every registration). Debug builds check
/// every cluster against the whole fleet's computation on each of these recomputes.
#[tokio::test]
async fn a_cluster_that_joins_or_is_relabelled_is_the_only_one_looked_at() {
    const CLUSTERS: usize = 20;
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let engine = hub.engine();
    let git = GitRepo::new();
    let c1 = git.commit(&[("apps/a/cm.yaml", "v: 1\n")], "one");
    let mut clusters = Vec::new();
    for i in 0..CLUSTERS {
        let id = register(&hub, &format!("dev-{i:02}"), &[("env", "dev")]).await;
        clusters.push(id.cluster);
    }
    let app = doc(serde_json::json!({
        "apiVersion": "gitfleet.dev/v1", "kind": "App",
        "metadata": {"name": "a"},
        "spec": {
            "repo": "platform", "path": "apps/a", "namespace": "a",
            "targets": [{"clusterSelector": {"matchLabels": {"env": "dev"}}}]
        }
    }));
    let mut admin = admin(&hub).await;
    admin
        .apply(pb::ApplyRequest {
            documents: vec![repo_doc("platform", &git.url()), app],
            dry_run: false,
        })
        .await
        .unwrap();
    let commit_of = |cluster: &str| {
        engine
            .desired(cluster)
            .and_then(|d| d.targets.get("a").map(|t| t.target.commit.clone()))
    };
    for cluster in &clusters {
        eventually("every cluster given a at c1", || {
            let given = commit_of(cluster) == Some(c1.clone());
            async move { given.then_some(()) }
        })
        .await;
    }
    // Settled: a recompute now changes nothing.
    engine.recompute().await.unwrap();
    let before = engine.desired_clusters_visited();
    let joined = register(&hub, "dev-new", &[("env", "dev")]).await;
    eventually("the new cluster given a at c1", || {
        let given = commit_of(&joined.cluster) == Some(c1.clone());
        async move { given.then_some(()) }
    })
    .await;
    engine.recompute().await.unwrap();
    let visited = engine.desired_clusters_visited() - before;
    assert!(
        (1..CLUSTERS as u64).contains(&visited),
        "recomputes after one cluster joined looked at {visited} clusters' desired state; \
         the fleet has {}",
        CLUSTERS + 1
    );

    // Relabelled off the App's selector: its Target goes, and no other cluster is looked at.
    let before = engine.desired_clusters_visited();
    engine
        .label_cluster(
            &clusters[0],
            &gitfleet_core::cluster_labels::LabelChanges {
                set: [("env".to_owned(), "prod".to_owned())]
                    .into_iter()
                    .collect(),
                remove: Default::default(),
                overwrite: true,
            },
            "test",
        )
        .await
        .unwrap();
    assert_eq!(commit_of(&clusters[0]), None, "relabelled off the App");
    assert_eq!(commit_of(&clusters[1]), Some(c1.clone()));
    assert_eq!(commit_of(&joined.cluster), Some(c1.clone()));
    let visited = engine.desired_clusters_visited() - before;
    assert_eq!(visited, 1, "a relabel looked at {visited} clusters");
    hub.shutdown().await;
}
