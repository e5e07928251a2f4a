//! `spec.dependsOn` through the hub: an App's Target waits on each cluster until the Apps it
//! depends on are healthy there at their own desired revision, says what it waits for, and
//! moves on the dependency's report; unknown Apps and cycles are refused at apply, and an App
//! others depend on cannot be deleted.

use crate::support;

use gitfleet_hub::fleet::rollout::TargetState;
use gitfleet_proto::v1 as pb;
use gitfleet_proto::v1::spoke_message::Msg as In;
use support::*;

fn app(name: &str, depends_on: &[&str]) -> pb::ResourceDocument {
    doc(serde_json::json!({
        "apiVersion": "gitfleet.dev/v1", "kind": "App",
        "metadata": {"name": name},
        "spec": {
            "repo": "platform", "path": format!("apps/{name}"), "namespace": name,
            "targets": [{"clusterSelector": {"matchLabels": {"env": "dev"}}}],
            "dependsOn": depends_on,
        }
    }))
}

/// A report of `app` at `revision` with the given health.
async fn report(spoke: &FakeSpoke, seq: u64, app: &str, revision: &str, health: pb::HealthState) {
    spoke
        .send(In::Status(pb::StatusReport {
            chart_digest: String::new(),
            seq,
            cluster: spoke.id.cluster.clone(),
            target_id: app.into(),
            revision: revision.into(),
            spec_generation: 1,
            sync: pb::SyncState::Synced as i32,
            health: health as i32,
            message: match health {
                pb::HealthState::Healthy => String::new(),
                _ => "Deployment ingress-nginx: 0/2 replicas available".into(),
            },
            resources: vec![],
            observed_at_unix: 1,
            trace: None,
        }))
        .await;
}

/// The state and detail of `app`'s Target on `cluster`, as `gitfleet rollout status` shows it.
fn target(
    hub: &gitfleet_hub::runtime::HubHandle,
    app: &str,
    cluster: &str,
) -> Option<(TargetState, String)> {
    let view = hub.engine().rollout_status(app).ok()?;
    view.status
        .waves
        .iter()
        .flat_map(|w| &w.targets)
        .find(|t| t.cluster == cluster)
        .map(|t| (t.state, t.detail.clone()))
}

async fn until_held(hub: &gitfleet_hub::runtime::HubHandle, app: &str, cluster: &str, why: &str) {
    eventually(&format!("{app} on {cluster} held: {why}"), || {
        let t = target(hub, app, cluster);
        let held = matches!(&t, Some((TargetState::Held, detail)) if detail.contains(why));
        async move { held.then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_target_waits_on_each_cluster_for_its_dependency_and_says_why() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let git = GitRepo::new();
    let c1 = git.commit(
        &[
            ("apps/ingress/cm.yaml", "v: 1\n"),
            ("apps/shop/cm.yaml", "v: 1\n"),
        ],
        "one",
    );
    let mut spokes = Vec::new();
    for cluster in ["dev-1", "dev-2"] {
        let id = register(&hub, cluster, &[("env", "dev")]).await;
        spokes.push(
            FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default())
                .await
                .unwrap(),
        );
    }
    admin(&hub)
        .await
        .apply(pb::ApplyRequest {
            documents: vec![
                repo_doc("platform", &git.url()),
                app("ingress", &[]),
                app("shop", &["ingress"]),
            ],
            dry_run: false,
        })
        .await
        .unwrap();
    for spoke in &mut spokes {
        spoke
            .until("ingress at c1", |v| {
                v.commit_of("ingress").as_deref() == Some(c1.as_str())
            })
            .await;
    }
    let short = &c1[..7];
    for cluster in ["dev-1", "dev-2"] {
        until_held(
            &hub,
            "shop",
            cluster,
            &format!("waits for ingress: not yet applied at {short}"),
        )
        .await;
    }

    // dev-1's ingress is healthy, dev-2's is not: shop goes to dev-1 only.
    report(&spokes[0], 1, "ingress", &c1, pb::HealthState::Healthy).await;
    report(&spokes[1], 1, "ingress", &c1, pb::HealthState::Progressing).await;
    spokes[0]
        .until("shop at c1 on dev-1", |v| {
            v.commit_of("shop").as_deref() == Some(c1.as_str())
        })
        .await;
    spokes[1]
        .until("the report acked", |v| v.acked_seq == 1)
        .await;
    until_held(
        &hub,
        "shop",
        "dev-2",
        &format!("waits for ingress: Progressing at {short}"),
    )
    .await;
    assert_eq!(
        spokes[1].view.commit_of("shop"),
        None,
        "nothing of shop on dev-2"
    );
    let view = hub.engine().rollout_status("shop").unwrap();
    assert!(
        !view.state.assigned.contains_key("dev-2"),
        "dev-2 was not given shop: {:?}",
        view.state.assigned
    );

    // Its report moves shop on, without a timer.
    report(&spokes[1], 2, "ingress", &c1, pb::HealthState::Healthy).await;
    spokes[1]
        .until("shop at c1 on dev-2", |v| {
            v.commit_of("shop").as_deref() == Some(c1.as_str())
        })
        .await;

    // A new commit of both: an ingress that fails keeps shop waiting where it fails, with the
    // reason; shop keeps running the revision it has.
    let c2 = git.commit(
        &[
            ("apps/ingress/cm.yaml", "v: 2\n"),
            ("apps/shop/cm.yaml", "v: 2\n"),
        ],
        "two",
    );
    hub.engine()
        .fetch_now(vec!["platform".into()])
        .await
        .unwrap();
    for spoke in &mut spokes {
        spoke
            .until("ingress at c2", |v| {
                v.commit_of("ingress").as_deref() == Some(c2.as_str())
            })
            .await;
    }
    report(&spokes[0], 3, "ingress", &c2, pb::HealthState::Healthy).await;
    report(&spokes[1], 3, "ingress", &c2, pb::HealthState::Degraded).await;
    spokes[0]
        .until("shop at c2 on dev-1", |v| {
            v.commit_of("shop").as_deref() == Some(c2.as_str())
        })
        .await;
    until_held(
        &hub,
        "shop",
        "dev-2",
        &format!(
            "waits for ingress: Degraded at {} (Deployment ingress-nginx: 0/2 replicas available)",
            &c2[..7]
        ),
    )
    .await;
    spokes[1]
        .until("the report acked", |v| v.acked_seq == 3)
        .await;
    assert_eq!(
        spokes[1].view.commit_of("shop").as_deref(),
        Some(c1.as_str()),
        "shop keeps running c1 on dev-2"
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn unknown_apps_and_cycles_are_refused_at_apply_and_a_dependency_is_not_deleted() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let git = GitRepo::new();
    git.commit(&[("apps/ingress/cm.yaml", "v: 1\n")], "one");
    let mut client = admin(&hub).await;
    let apply = |documents: Vec<pb::ResourceDocument>| pb::ApplyRequest {
        documents,
        dry_run: false,
    };

    let e = client
        .apply(apply(vec![
            repo_doc("platform", &git.url()),
            app("shop", &["ingres"]),
        ]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message()
            .contains(r#"app "shop": spec.dependsOn[0]: there is no App "ingres""#),
        "{}",
        e.message()
    );

    // Both in one apply: fine, whatever their order.
    client
        .apply(apply(vec![
            repo_doc("platform", &git.url()),
            app("shop", &["ingress"]),
            app("ingress", &[]),
        ]))
        .await
        .unwrap();

    let e = client
        .apply(apply(vec![app("ingress", &["shop"])]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains(r#"("ingress" → "shop" → "ingress")"#),
        "{}",
        e.message()
    );

    let e = client
        .delete(pb::DeleteRequest {
            kind: "App".into(),
            name: "ingress".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message()
            .contains(r#"App "ingress" is a dependency of App "shop""#),
        "{}",
        e.message()
    );
    // Nothing was lost: both are there, unchanged.
    let apps = hub
        .engine()
        .get(Some(gitfleet_hub::resources::Kind::App), Some("ingress"))
        .unwrap();
    assert_eq!(apps.len(), 1, "ingress is still there");

    // Once shop no longer depends on it, it goes.
    client.apply(apply(vec![app("shop", &[])])).await.unwrap();
    client
        .delete(pb::DeleteRequest {
            kind: "App".into(),
            name: "ingress".into(),
        })
        .await
        .unwrap();
    hub.shutdown().await;
}
