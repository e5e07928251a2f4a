//! Resources owned by Kubernetes objects (docs/kube-api.md), at the hub: the controller's
//! `apply_owned` goes through the same validation and apply as `gitfleet apply` and marks the
//! resource; `gitfleet apply` and `delete` of it are refused naming the object (over gRPC, as
//! the CLI sees it); an object never takes a resource it does not own, nor deletes one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use gitfleet_core::kube_api::{OWNER_ANNOTATION, document, owner};
use gitfleet_hub::engine::EngineError;
use gitfleet_hub::resources::Kind;
use gitfleet_proto::v1 as pb;
use support::*;
use tonic::Code;

fn app_object(name: &str, path: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "gitfleet.dev/v1", "kind": "App",
        "metadata": {"name": name, "namespace": "gitfleet", "generation": 2, "labels": {"team": "a"}},
        "spec": {"repo": "platform", "path": path, "namespace": name,
                 "targets": [{"clusterSelector": {"matchLabels": {"env": "prod"}}}]},
    })
}

fn apply(documents: Vec<pb::ResourceDocument>) -> pb::ApplyRequest {
    pb::ApplyRequest {
        documents,
        dry_run: false,
    }
}

#[tokio::test]
async fn a_kubernetes_objects_resource_is_its_own() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let engine = hub.engine();
    let git = GitRepo::new();
    git.commit(&[("apps/web/cm.yaml", "v: 1\n")], "one");
    let mut admin = admin(&hub).await;
    admin
        .apply(apply(vec![repo_doc("platform", &git.url())]))
        .await
        .unwrap();

    // The controller's apply: validated as any apply, marked with its object.
    let web = owner("gitfleet", "web");
    let web_doc = document(Kind::App, "gitfleet", &app_object("web", "apps/web")).to_string();
    let applied = engine.apply_owned("", web_doc.clone(), &web).await.unwrap();
    assert_eq!(applied.action, "created");
    let again = engine.apply_owned("", web_doc, &web).await.unwrap();
    assert_eq!(again.action, "unchanged");
    let stored = engine.get(Some(Kind::App), Some("web")).unwrap();
    assert_eq!(
        stored[0]["metadata"]["annotations"][OWNER_ANNOTATION],
        "gitfleet/web"
    );
    assert_eq!(stored[0]["metadata"]["labels"]["team"], "a");
    let refused = engine
        .apply_owned(
            "",
            document(Kind::App, "gitfleet", &app_object("web", "../up")).to_string(),
            &web,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, EngineError::Invalid(m) if m.contains("spec.path")),
        "{refused}"
    );

    // gitfleet apply and delete are refused, naming the object.
    let err = admin
        .apply(apply(vec![app_doc("web", "platform", "apps/web", "dev")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("apps.gitfleet.dev/web"), "{err}");
    assert!(err.message().contains("\"gitfleet\""), "{err}");
    let err = admin
        .delete(pb::DeleteRequest {
            kind: "app".into(),
            name: "web".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("apps.gitfleet.dev/web"), "{err}");
    // Nor may a person's document claim to be an object's.
    let mut claimed = app_object("other", "apps/web");
    claimed["metadata"] =
        serde_json::json!({"name": "other", "annotations": {OWNER_ANNOTATION: "gitfleet/other"}});
    let err = admin.apply(apply(vec![doc(claimed)])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains(OWNER_ANNOTATION), "{err}");
    assert!(!engine.exists(Kind::App, "other").unwrap());

    // An object never takes a resource that is not its own.
    admin
        .apply(apply(vec![app_doc(
            "by-hand", "platform", "apps/web", "dev",
        )]))
        .await
        .unwrap();
    let err = engine
        .apply_owned(
            "",
            document(Kind::App, "gitfleet", &app_object("by-hand", "apps/web")).to_string(),
            &owner("gitfleet", "by-hand"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::FailedPrecondition(m) if m.contains("gitfleet delete app by-hand")),
        "{err}"
    );
    let err = engine
        .apply_owned(
            "",
            document(Kind::App, "elsewhere", &app_object("web", "apps/web")).to_string(),
            &owner("elsewhere", "web"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::FailedPrecondition(m) if m.contains("gitfleet/web")),
        "{err}"
    );
    assert!(
        !engine
            .delete_owned(Kind::App, "by-hand", &owner("gitfleet", "by-hand"))
            .await
            .unwrap()
    );
    assert!(
        !engine
            .delete_owned(Kind::App, "web", &owner("elsewhere", "web"))
            .await
            .unwrap()
    );
    assert_eq!(
        engine.kube_owned("gitfleet").unwrap(),
        vec![(Kind::App, "web".to_owned(), "gitfleet/web".to_owned())]
    );
    assert!(engine.kube_owned("elsewhere").unwrap().is_empty());

    // Its object's deletion deletes it.
    assert!(engine.delete_owned(Kind::App, "web", &web).await.unwrap());
    assert!(!engine.exists(Kind::App, "web").unwrap());
    assert!(engine.exists(Kind::App, "by-hand").unwrap());
    hub.shutdown().await;
}
