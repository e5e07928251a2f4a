//! A monorepo with 1,000 App paths: a commit touching one App moves exactly that one Target.
//! Prints how long each step took (figures, not assertions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::Instant;

use gitfleet_proto::v1 as pb;
use support::*;

const APPS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_changed_path_of_a_thousand_moves_one_target() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let git = GitRepo::new();
    let files: Vec<(String, String)> = (0..APPS)
        .map(|i| (format!("apps/app-{i:04}/cm.yaml"), format!("n: {i}\n")))
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let c1 = git.commit(&refs, "a thousand apps");

    let id = register(&hub, "dev-1", &[("env", "dev")]).await;
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default())
        .await
        .unwrap();
    let mut admin = admin(&hub).await;
    let mut documents = vec![repo_doc("mono", &git.url())];
    documents.extend((0..APPS).map(|i| {
        app_doc(
            &format!("app-{i:04}"),
            "mono",
            &format!("apps/app-{i:04}"),
            "dev",
        )
    }));
    let started = Instant::now();
    admin
        .apply(pb::ApplyRequest {
            documents,
            dry_run: false,
        })
        .await
        .unwrap();
    let applied = started.elapsed();
    spoke
        .until("every App at c1", |v| {
            v.targets.len() == APPS
                && v.targets
                    .values()
                    .all(|t| t.source.as_ref().is_some_and(|s| s.commit == c1))
        })
        .await;
    let placed = started.elapsed();

    let c2 = git.commit(&[("apps/app-0042/cm.yaml", "n: changed\n")], "one app");
    let committed = Instant::now();
    spoke
        .until("app-0042 at c2", |v| {
            v.commit_of("app-0042").as_deref() == Some(c2.as_str())
        })
        .await;
    let moved = committed.elapsed();
    assert_eq!(spoke.view.last_delta, (1, 0), "exactly one Target moved");
    let at_c1 = spoke
        .view
        .targets
        .values()
        .filter(|t| t.source.as_ref().is_some_and(|s| s.commit == c1))
        .count();
    assert_eq!(at_c1, APPS - 1);
    println!(
        "monorepo: {APPS} Apps applied in {applied:?}, all placed on the spoke after {placed:?}; \
         one changed path reached the spoke {moved:?} after the commit (poll interval 1s), \
         moving 1 of {APPS} Targets"
    );
    hub.shutdown().await;
}
