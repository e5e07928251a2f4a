//! Self-heal while held, through the hub and the spokes' protocol: a freeze created with
//! `--no-self-heal` makes the hub send the Targets it holds `selfHeal: false` (on the clusters
//! it covers only), rollout status says so, and when the freeze ends by itself the App is
//! decided again at that second and its own `selfHeal` is sent back.

use crate::support;

use gitfleet_hub::fleet::freeze::FreezeRequest;
use gitfleet_proto::v1 as pb;
use support::*;

fn web() -> pb::ResourceDocument {
    doc(serde_json::json!({
        "apiVersion": "gitfleet.dev/v1", "kind": "App",
        "metadata": {"name": "web"},
        "spec": {
            "repo": "platform", "path": "apps/web", "namespace": "web",
            "targets": [{"clusterSelector": {}}],
        }
    }))
}

fn self_heal(view: &SpokeView) -> Option<bool> {
    view.targets
        .get("web")
        .and_then(|t| t.sync_policy.as_ref())
        .map(|p| p.self_heal)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[tokio::test]
async fn a_no_self_heal_freeze_turns_self_heal_off_where_it_holds_until_it_ends() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let git = GitRepo::new();
    git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let mut prod = {
        let id = register(&hub, "prod-1", &[("env", "prod")]).await;
        FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default())
            .await
            .unwrap()
    };
    let mut dev = {
        let id = register(&hub, "dev-1", &[("env", "dev")]).await;
        FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default())
            .await
            .unwrap()
    };
    admin(&hub)
        .await
        .apply(pb::ApplyRequest {
            documents: vec![repo_doc("platform", &git.url()), web()],
            dry_run: false,
        })
        .await
        .unwrap();
    prod.until("web on prod-1, self-healing", |v| {
        self_heal(v) == Some(true)
    })
    .await;
    dev.until("web on dev-1, self-healing", |v| self_heal(v) == Some(true))
        .await;

    // Held on prod for a few seconds, without self-heal.
    let until = now_unix() + 3;
    hub.engine()
        .create_freeze(
            FreezeRequest {
                name: "maint".into(),
                apps: vec!["web".into()],
                cluster_selector: "env=prod".into(),
                until,
                reason: "manual failover".into(),
                suspend_self_heal: true,
                ..Default::default()
            },
            "admin",
        )
        .await
        .unwrap();
    prod.until("self-heal off on prod-1", |v| self_heal(v) == Some(false))
        .await;
    let generation = prod.view.generation;
    let view = hub.engine().rollout_status("web").unwrap();
    let detail = |cluster: &str| {
        view.status
            .waves
            .iter()
            .flat_map(|w| &w.targets)
            .find(|t| t.cluster == cluster)
            .map(|t| t.detail.clone())
    };
    // (Updating still: the fake spokes never report.)
    let prod_detail = detail("prod-1").unwrap_or_default();
    assert!(
        prod_detail.ends_with("self-heal suspended by freeze maint"),
        "{prod_detail}"
    );
    let dev_detail = detail("dev-1").unwrap_or_default();
    assert!(!dev_detail.contains("self-heal"), "{dev_detail}");
    assert_eq!(self_heal(&dev.view), Some(true));

    // It ends by itself: the App is decided again then, and self-heals again.
    prod.until("self-heal back on prod-1 at the freeze's end", |v| {
        self_heal(v) == Some(true)
    })
    .await;
    assert!(now_unix() >= until, "not before its end");
    assert!(prod.view.generation > generation);
    assert_eq!(
        self_heal(&dev.view),
        Some(true),
        "dev-1 was never suspended"
    );
    hub.shutdown().await;
}
