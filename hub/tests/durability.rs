//! Nothing is acknowledged before it is on disk: every admin write flushes the store before it
//! answers, whether or not it changes any cluster's desired state. (e2e's hub_restart.rs kills
//! the hub process right after such answers; this checks every write, quickly.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use gitfleet_hub::resources::Kind;
use gitfleet_hub::runtime::HubHandle;
use support::*;

/// Runs `write` and checks that the store was flushed while it ran.
async fn flushed<T>(hub: &HubHandle, what: &str, write: impl Future<Output = T>) -> T {
    let before = hub.engine().store().flush_count();
    let out = write.await;
    assert!(
        hub.engine().store().flush_count() > before,
        "{what} answered without flushing the store"
    );
    out
}

fn json(doc: gitfleet_proto::v1::ResourceDocument) -> (String, String) {
    (doc.origin, doc.json)
}

#[tokio::test]
async fn every_admin_write_is_flushed_before_it_answers() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let engine = hub.engine();

    // No cluster is registered: none of these changes any cluster's desired state.
    let applied = flushed(
        &hub,
        "applying a Repo",
        engine.apply(
            &[json(repo_doc("platform", "file:///nonexistent.git"))],
            false,
        ),
    )
    .await
    .unwrap();
    assert_eq!(applied[0].action, "created");
    flushed(
        &hub,
        "applying an App",
        engine.apply(
            &[json(app_doc("web", "platform", "apps/web", "dev"))],
            false,
        ),
    )
    .await
    .unwrap();
    let group = doc(serde_json::json!({
        "apiVersion": "gitfleet.dev/v1", "kind": "ClusterGroup",
        "metadata": {"name": "everyone"}, "spec": {"selector": {}}
    }));
    flushed(
        &hub,
        "applying a ClusterGroup",
        engine.apply(&[json(group)], false),
    )
    .await
    .unwrap();
    flushed(
        &hub,
        "suspending an App",
        engine.set_suspended("web", true, "test"),
    )
    .await
    .unwrap();
    flushed(
        &hub,
        "resuming an App",
        engine.set_suspended("web", false, "test"),
    )
    .await
    .unwrap();
    assert!(
        flushed(
            &hub,
            "deleting a ClusterGroup",
            engine.delete(Kind::ClusterGroup, "everyone"),
        )
        .await
        .unwrap()
    );
    let token = flushed(
        &hub,
        "creating a token",
        engine.create_token(Duration::from_secs(600), BTreeMap::new(), 1, "test".into()),
    )
    .await
    .unwrap();
    assert!(
        flushed(&hub, "revoking a token", engine.revoke_token(&token.id))
            .await
            .unwrap()
    );
    let spoke = register(&hub, "c1", &[("env", "prod")]).await;
    assert!(
        flushed(
            &hub,
            "revoking a cluster",
            engine.revoke_cluster(&spoke.cluster),
        )
        .await
        .unwrap()
    );
    hub.shutdown().await;
}
