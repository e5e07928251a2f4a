//! The engine's event bus: every event reaches live subscribers, in the order it is stored.

mod support;

use gitfleet_proto::v1 as pb;
use support::*;

#[tokio::test]
async fn a_subscriber_sees_a_rollouts_events_in_order() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let mut bus = hub.engine().subscribe_events();
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
        .until("web at c1", |v| {
            v.commit_of("web").as_deref() == Some(c1.as_str())
        })
        .await;
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
    // the store's first id is 0).
    let last = seen.last().map(|e| e.id).unwrap_or_default();
    let stored: Vec<(u64, String)> = hub
        .engine()
        .events(Some("web"), None, 0, 1000)
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
