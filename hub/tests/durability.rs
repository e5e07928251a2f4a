//! Nothing is acknowledged before it is on disk: every admin write (resources, App and rollout
//! controls, tokens, clusters and their labels) flushes the store before it answers, whether or
//! not it changes any cluster's desired state. (e2e's hub_restart.rs kills the hub process right
//! after such answers; this checks every write, quickly.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use gitfleet_core::cluster_labels::LabelChanges;
use gitfleet_hub::engine::TokenSpec;
use gitfleet_hub::fleet::rollout::Command;
use gitfleet_hub::resources::Kind;
use gitfleet_hub::runtime::HubHandle;
use support::*;

/// Runs `write` and checks that the store was flushed while it ran.
async fn flushed<T>(hub: &HubHandle, what: &str, write: impl Future<Output = T>) -> T {
    let before = hub.store().flush_count();
    let out = write.await;
    assert!(
        hub.store().flush_count() > before,
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
        engine.create_token(TokenSpec {
            max_uses: 1,
            description: "test".into(),
            ..TokenSpec::new(Duration::from_secs(600), BTreeMap::new())
        }),
    )
    .await
    .unwrap();
    assert!(
        flushed(&hub, "revoking a token", engine.revoke_token(&token.id))
            .await
            .unwrap()
    );
    let spoke = register(&hub, "c1", &[("env", "prod")]).await;
    let relabel = LabelChanges {
        set: [("env".to_owned(), "canary".to_owned())].into(),
        overwrite: true,
        ..Default::default()
    };
    let labeled = flushed(
        &hub,
        "labeling a cluster",
        engine.label_cluster(&spoke.cluster, &relabel, "admin"),
    )
    .await
    .unwrap();
    assert_eq!(labeled.record.labels["env"], "canary");
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

#[tokio::test]
async fn rollout_commands_sync_requests_and_approvals_are_flushed_before_they_answer() {
    let (_tmp, data) = data_dir();
    let mut config = gitfleet_hub::runtime::HubConfig::for_tests(&data);
    config.require_approval = true;
    let hub = gitfleet_hub::runtime::start(config).await.unwrap();
    let engine = hub.engine();
    let git = GitRepo::new();
    git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");

    // A registration waits for approval: the approval is the write.
    let token = hub
        .create_token(
            Duration::from_secs(600),
            [("env".to_owned(), "dev".to_owned())].into(),
            1,
        )
        .await
        .unwrap();
    let ch = channel(&hub.grpc_url(), hub.ca_pem(), None).await;
    let outcome = gitfleet_proto::v1::registration_client::RegistrationClient::new(ch)
        .register(gitfleet_proto::v1::RegisterRequest {
            token,
            cluster_name: "dev-1".into(),
            csr_pem: csr(&rcgen::KeyPair::generate().unwrap()),
            labels: [("env".to_owned(), "dev".to_owned())].into(),
            agent_version: "test".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .outcome;
    assert!(
        matches!(
            outcome,
            Some(gitfleet_proto::v1::register_response::Outcome::Pending(_))
        ),
        "{outcome:?}"
    );
    assert!(
        flushed(&hub, "approving a cluster", engine.approve_cluster("dev-1"))
            .await
            .unwrap()
    );

    engine
        .apply(
            &[
                json(repo_doc("platform", &git.url())),
                json(app_doc("web", "platform", "apps/web", "dev")),
            ],
            false,
        )
        .await
        .unwrap();
    eventually("the first rollout of web", || async {
        engine.rollout_status("web").ok().filter(|_| {
            engine
                .desired("dev-1")
                .is_some_and(|d| !d.targets.is_empty())
        })
    })
    .await;
    flushed(
        &hub,
        "a sync request",
        engine.request_sync("web", None, "test"),
    )
    .await
    .unwrap();
    flushed(
        &hub,
        "pausing a rollout",
        engine.rollout_command("web", Command::Pause { by: "test".into() }),
    )
    .await
    .unwrap();
    flushed(
        &hub,
        "resuming a rollout",
        engine.rollout_command("web", Command::Resume { by: "test".into() }),
    )
    .await
    .unwrap();
    hub.shutdown().await;
}
