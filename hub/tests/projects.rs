//! Projects at the hub: an App is stored only inside its Project, placed only inside it (also
//! after the Project narrows), and carries the Project's rules to the spoke; a Project in use is
//! not deleted; the built-in `default` keeps what gitfleet did before Projects.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use gitfleet_hub::resources::Kind;
use gitfleet_proto::v1 as pb;
use support::*;
use tonic::Code;

fn project_doc(name: &str, source_repos: &[&str], envs: &[&str]) -> pb::ResourceDocument {
    doc(serde_json::json!({
        "apiVersion": "gitfleet.dev/v1", "kind": "Project",
        "metadata": {"name": name},
        "spec": {
            "sourceRepos": source_repos,
            "destinations": [{
                "clusterSelector": {"matchExpressions": [{"key": "env", "operator": "In", "values": envs}]},
                "namespaces": ["team-a", "team-a-*"]
            }],
            "clusterResources": [],
            "namespaceResources": {"deny": [{"group": "", "kind": "ResourceQuota"}]}
        }
    }))
}

/// App `name` of `project` in namespace `namespace` on every cluster with an `env` label.
fn team_app(name: &str, project: &str, repo: &str, namespace: &str) -> pb::ResourceDocument {
    doc(serde_json::json!({
        "apiVersion": "gitfleet.dev/v1", "kind": "App",
        "metadata": {"name": name},
        "spec": {
            "project": project, "repo": repo, "path": "apps/web", "namespace": namespace,
            "targets": [{"clusterSelector": {"matchExpressions": [{"key": "env", "operator": "Exists"}]}}]
        }
    }))
}

/// The next `OutsideProject` event of App `app`.
async fn outside_project_event(
    bus: &mut tokio::sync::broadcast::Receiver<gitfleet_hub::model::EventRecord>,
    app: &str,
) -> gitfleet_hub::model::EventRecord {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let e = bus.recv().await.unwrap();
            if e.app == app && e.kind == "OutsideProject" {
                return e;
            }
        }
    })
    .await
    .expect("an OutsideProject event")
}

fn apply(documents: Vec<pb::ResourceDocument>) -> pb::ApplyRequest {
    pb::ApplyRequest {
        documents,
        dry_run: false,
    }
}

#[tokio::test]
async fn an_app_outside_its_project_is_refused_at_apply_naming_the_field() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let git = GitRepo::new();
    git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    register(&hub, "prod-1", &[("env", "prod")]).await;
    register(&hub, "dev-1", &[("env", "dev")]).await;
    let mut admin = admin(&hub).await;
    admin
        .apply(apply(vec![
            repo_doc("platform", &git.url()),
            repo_doc(
                "other",
                &git.url().replace("file://", "file:///elsewhere/.."),
            ),
            project_doc("team-a", &["platform"], &["prod"]),
        ]))
        .await
        .unwrap();

    let refused = |app: pb::ResourceDocument| {
        let mut admin = admin.clone();
        async move {
            let err = admin.apply(apply(vec![app])).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{err}");
            err.message().to_owned()
        }
    };
    // Its targets reach dev-1, which the Project does not name.
    assert_eq!(
        refused(team_app("web", "team-a", "platform", "team-a")).await,
        r#"app "web": spec.targets[0]: cluster "dev-1" is not in Project team-a's destinations"#
    );
    let message = refused(team_app("web", "team-a", "other", "team-b")).await;
    assert!(
        message.contains(r#"app "web": spec.repo: Repo "other" "#)
            && message.contains("is not allowed by Project team-a's sourceRepos"),
        "{message}"
    );
    assert!(
        message.contains(
            r#"app "web": spec.namespace: namespace "team-b" is not allowed by Project team-a's destinations"#
        ),
        "{message}"
    );
    assert_eq!(
        refused(team_app("web", "nope", "platform", "team-a")).await,
        r#"app "web": spec.project: Project "nope" does not exist"#
    );
    // The built-in Project is not for changing.
    let message = refused(project_doc("default", &["platform"], &["prod"])).await;
    assert!(
        message.contains("metadata.name: \"default\" is the built-in Project"),
        "{message}"
    );
    // Nothing was stored.
    assert!(hub.engine().get(Some(Kind::App), None).unwrap().is_empty());

    // Inside the Project (prod only), it is stored; the same App in `default` is as before.
    let mut prod_only = team_app("web", "team-a", "platform", "team-a");
    prod_only.json = prod_only.json.replace(
        r#""operator":"Exists""#,
        r#""operator":"In","values":["prod"]"#,
    );
    admin.apply(apply(vec![prod_only])).await.unwrap();
    let mut anywhere = team_app("legacy", "default", "other", "kube-system");
    anywhere.json = anywhere.json.replace(r#""project":"default","#, "");
    admin.apply(apply(vec![anywhere])).await.unwrap();
    hub.shutdown().await;
}

#[tokio::test]
async fn a_project_that_narrows_takes_its_apps_off_the_clusters_it_no_longer_names() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let mut bus = hub.engine().subscribe_events();
    let git = GitRepo::new();
    git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let prod = register(&hub, "prod-1", &[("env", "prod")]).await;
    let dev = register(&hub, "dev-1", &[("env", "dev")]).await;
    let mut prod = FakeSpoke::connect(&hub.grpc_url(), &prod, SpokeView::default())
        .await
        .unwrap();
    let mut dev = FakeSpoke::connect(&hub.grpc_url(), &dev, SpokeView::default())
        .await
        .unwrap();
    let mut admin = admin(&hub).await;
    admin
        .apply(apply(vec![
            repo_doc("platform", &git.url()),
            project_doc("team-a", &["platform"], &["prod", "dev"]),
            team_app("web", "team-a", "platform", "team-a-web"),
            team_app("legacy", "default", "platform", "legacy"),
        ]))
        .await
        .unwrap();
    prod.until("web on prod-1", |v| v.targets.contains_key("web"))
        .await;
    dev.until("web and legacy on dev-1", |v| {
        v.targets.contains_key("web") && v.targets.contains_key("legacy")
    })
    .await;
    // The spoke learns the Project's rules for its cluster; `default` sends none.
    dev.until("the rules", |v| {
        let rules = v.targets["web"].project.clone().unwrap_or_default();
        rules.name == "team-a"
            && rules.namespaces == ["team-a", "team-a-*"]
            && rules.cluster_resources.is_empty()
            && rules.namespace_deny
                == [pb::GroupKind {
                    group: String::new(),
                    kind: "ResourceQuota".into(),
                }]
    })
    .await;
    dev.until("no rules for default", |v| {
        v.targets["legacy"].project.is_none()
    })
    .await;

    // The Project now names prod only: applying it is fine; web leaves dev-1 and stays on
    // prod-1, the App says why, and the other App is untouched.
    admin
        .apply(apply(vec![project_doc("team-a", &["platform"], &["prod"])]))
        .await
        .unwrap();
    dev.until("web gone from dev-1", |v| {
        !v.targets.contains_key("web") && v.targets.contains_key("legacy")
    })
    .await;
    prod.until("web still on prod-1", |v| v.targets.contains_key("web"))
        .await;
    let event = outside_project_event(&mut bus, "web").await;
    assert!(
        event.message.contains(
            r#"spec.targets[0]: cluster "dev-1" is not in Project team-a's destinations"#
        ),
        "{}",
        event.message
    );
    let got = hub.engine().get(Some(Kind::App), Some("web")).unwrap();
    assert_eq!(
        got[0]["status"]["project"]["problems"][0],
        r#"spec.targets[0]: cluster "dev-1" is not in Project team-a's destinations"#
    );
    assert!(
        hub.engine().get(Some(Kind::App), Some("legacy")).unwrap()[0]["status"]
            .get("project")
            .is_none()
    );

    // Widened again, web comes back.
    admin
        .apply(apply(vec![project_doc(
            "team-a",
            &["platform"],
            &["prod", "dev"],
        )]))
        .await
        .unwrap();
    dev.until("web back on dev-1", |v| v.targets.contains_key("web"))
        .await;
    hub.shutdown().await;
}

#[tokio::test]
async fn a_project_in_use_is_not_deleted_and_default_never() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let git = GitRepo::new();
    git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let mut admin = admin(&hub).await;
    admin
        .apply(apply(vec![
            repo_doc("platform", &git.url()),
            project_doc("team-a", &["platform"], &["prod"]),
            team_app("web", "team-a", "platform", "team-a"),
            team_app("api", "team-a", "platform", "team-a"),
        ]))
        .await
        .unwrap();
    let engine = hub.engine();
    let err = engine.delete(Kind::Project, "team-a").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Project "team-a" is still used by Apps "api", "web": delete them or move them to another Project first"#
    );
    let err = engine.delete(Kind::Project, "default").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Project "default" is built in and cannot be deleted"#
    );
    // `get projects` lists the built-in one too.
    let names: Vec<String> = engine
        .get(Some(Kind::Project), None)
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["default", "team-a"]);

    assert!(engine.delete(Kind::App, "web").await.unwrap());
    assert!(engine.delete(Kind::App, "api").await.unwrap());
    assert!(engine.delete(Kind::Project, "team-a").await.unwrap());
    hub.shutdown().await;
}

#[tokio::test]
async fn a_relabeled_cluster_outside_the_project_is_not_given_the_app_and_the_app_says_so() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let mut bus = hub.engine().subscribe_events();
    let git = GitRepo::new();
    git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    register(&hub, "prod-1", &[("env", "prod")]).await;
    let edge = register(&hub, "edge-1", &[]).await;
    let mut edge = FakeSpoke::connect(&hub.grpc_url(), &edge, SpokeView::default())
        .await
        .unwrap();
    let mut admin = admin(&hub).await;
    admin
        .apply(apply(vec![
            repo_doc("platform", &git.url()),
            project_doc("team-a", &["platform"], &["prod"]),
            team_app("web", "team-a", "platform", "team-a-web"),
        ]))
        .await
        .unwrap();

    // The platform team moves edge-1 into a ring web's targets select but its Project does not
    // allow: web stays off edge-1, and says why, naming who relabeled.
    let cfg = admin_config(&hub);
    let ctx = cfg.context(None).unwrap();
    let ch = channel(
        &ctx.server,
        &ctx.certificate_authority_data,
        Some((&ctx.client_certificate_data, &ctx.client_key_data)),
    )
    .await;
    gitfleet_proto::v1::access_client::AccessClient::new(ch)
        .label_cluster(pb::LabelClusterRequest {
            name: "edge-1".into(),
            set: [("env".to_owned(), "staging".to_owned())].into(),
            remove: vec![],
            overwrite: false,
        })
        .await
        .unwrap();
    let event = outside_project_event(&mut bus, "web").await;
    assert!(
        event.message.contains(
            r#"spec.targets[0]: cluster "edge-1" is not in Project team-a's destinations"#
        ),
        "{}",
        event.message
    );
    assert_eq!(event.by, "admin");
    // The recompute ran before the answer: edge-1's desired state is final.
    let desired = hub.engine().desired("edge-1").unwrap();
    assert!(!desired.targets.contains_key("web"), "{desired:?}");
    edge.until("edge-1 told its (empty) state", |v| {
        !v.targets.contains_key("web")
    })
    .await;
    hub.shutdown().await;
}
