//! kubesim against the real kube-rs client: apply, list by label, watch (410 Gone, bookmarks),
//! the status subresource, apply conflicts, field removal, controllers, CRDs and namespaces.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use gitfleet_kubesim::{Kubesim, KubesimConfig, KubesimHandle};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Client;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::Discovery;
use serde_json::{Value, json};

async fn sim(clusters: &[&str]) -> KubesimHandle {
    let mut config = KubesimConfig::new(clusters.iter().copied());
    config.ready_delay = Duration::from_millis(50);
    config.bookmark_interval = Duration::from_millis(100);
    config.watch_history = 20;
    Kubesim::start(config).await.unwrap()
}

fn client(h: &KubesimHandle, cluster: &str) -> Client {
    Client::try_from(h.kube_config(cluster)).unwrap()
}

fn deployment(name: &str, replicas: i64, labels: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}
            }
        }
    })
}

async fn apply(
    api: &Api<Deployment>,
    manager: &str,
    obj: &Value,
    force: bool,
) -> kube::Result<Deployment> {
    let name = obj["metadata"]["name"].as_str().unwrap();
    let mut pp = PatchParams::apply(manager);
    pp.force = force;
    api.patch(name, &pp, &Patch::Apply(obj)).await
}

/// Polls `check` until it returns Some or the deadline passes.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn condition(d: &Deployment, ty: &str) -> Option<(String, String)> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_.as_deref() == Some(ty))
        .map(|c| {
            (
                c.status.clone().unwrap_or_default(),
                c.reason.clone().unwrap_or_default(),
            )
        })
}

#[tokio::test]
async fn apply_creates_then_updates_with_identity_and_generation() {
    let h = sim(&["a"]).await;
    let api: Api<Deployment> = Api::namespaced(client(&h, "a"), "default");
    let created = apply(
        &api,
        "gitfleet",
        &deployment("web", 2, json!({"app": "web"})),
        false,
    )
    .await
    .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert_eq!(meta.generation, Some(1));
    assert!(meta.creation_timestamp.is_some());
    let mf = meta.managed_fields.as_ref().unwrap();
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].manager.as_deref(), Some("gitfleet"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    let fields = serde_json::to_value(&mf[0].fields_v1).unwrap();
    assert_eq!(fields["f:spec"]["f:replicas"], json!({}));
    assert_eq!(
        fields["f:spec"]["f:selector"],
        json!({}),
        "selectors are atomic"
    );
    assert_eq!(
        fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["f:ports"]
            ["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"],
        json!({".": {}, "f:containerPort": {}})
    );

    // The same apply again is a no-op (a ConfigMap, which no controller writes to meanwhile).
    let cms: Api<ConfigMap> = Api::namespaced(client(&h, "a"), "default");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}});
    let first = cms
        .patch("c", &PatchParams::apply("gitfleet"), &Patch::Apply(&cm))
        .await
        .unwrap();
    let again = cms
        .patch("c", &PatchParams::apply("gitfleet"), &Patch::Apply(&cm))
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        first.metadata.resource_version
    );
    assert_eq!(
        first.metadata.generation, None,
        "ConfigMaps have no generation"
    );

    // Metadata changes keep the generation; spec changes bump it.
    let relabelled = apply(
        &api,
        "gitfleet",
        &deployment("web", 2, json!({"app": "web", "tier": "front"})),
        false,
    )
    .await
    .unwrap();
    assert_eq!(relabelled.metadata.generation, Some(1));
    assert_ne!(
        relabelled.metadata.resource_version,
        created.metadata.resource_version
    );
    let scaled = apply(
        &api,
        "gitfleet",
        &deployment("web", 3, json!({"app": "web", "tier": "front"})),
        false,
    )
    .await
    .unwrap();
    assert_eq!(scaled.metadata.generation, Some(2));
    assert_eq!(scaled.metadata.uid, created.metadata.uid);

    let fetched = api.get("web").await.unwrap();
    assert_eq!(fetched.spec.replicas, Some(3));
    assert_eq!(
        h.get_object("a", "apps/v1", "Deployment", Some("default"), "web")
            .unwrap()["spec"]["replicas"],
        3
    );
    h.shutdown().await;
}

#[tokio::test]
async fn conflicting_apply_gets_409_and_force_takes_ownership() {
    let h = sim(&["a"]).await;
    let api: Api<Deployment> = Api::namespaced(client(&h, "a"), "default");
    apply(
        &api,
        "alice",
        &deployment("web", 2, json!({"app": "web"})),
        false,
    )
    .await
    .unwrap();
    let err = apply(
        &api,
        "bob",
        &deployment("web", 5, json!({"app": "web"})),
        false,
    )
    .await
    .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}")
    };
    assert_eq!(status.code, 409);
    assert_eq!(status.reason, "Conflict");
    assert_eq!(
        status.message,
        "Apply failed with 1 conflict: conflict with \"alice\": .spec.replicas"
    );

    // Agreeing on a value is not a conflict: both own it.
    apply(
        &api,
        "bob",
        &deployment("web", 2, json!({"app": "web"})),
        false,
    )
    .await
    .unwrap();

    let forced = apply(
        &api,
        "bob",
        &deployment("web", 5, json!({"app": "web"})),
        true,
    )
    .await
    .unwrap();
    assert_eq!(forced.spec.replicas, Some(5));
    let owners: Vec<(String, bool)> = forced
        .metadata
        .managed_fields
        .unwrap()
        .iter()
        .map(|e| {
            let f = serde_json::to_value(&e.fields_v1).unwrap();
            (
                e.manager.clone().unwrap(),
                f.pointer("/f:spec/f:replicas").is_some(),
            )
        })
        .collect();
    assert!(owners.contains(&("bob".into(), true)), "{owners:?}");
    assert!(owners.contains(&("alice".into(), false)), "{owners:?}");
    h.shutdown().await;
}

#[tokio::test]
async fn fields_a_manager_stops_applying_are_removed_unless_shared() {
    let h = sim(&["a"]).await;
    let api: Api<ConfigMap> = Api::namespaced(client(&h, "a"), "default");
    let cm = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": data});
    let pp = |m: &str| PatchParams::apply(m);
    api.patch(
        "cfg",
        &pp("alice"),
        &Patch::Apply(cm(json!({"a": "1", "b": "2", "c": "3"}))),
    )
    .await
    .unwrap();
    api.patch("cfg", &pp("bob"), &Patch::Apply(cm(json!({"c": "3"}))))
        .await
        .unwrap();
    let after = api
        .patch("cfg", &pp("alice"), &Patch::Apply(cm(json!({"a": "1"}))))
        .await
        .unwrap();
    let data = after.data.unwrap();
    assert_eq!(data.get("a").map(String::as_str), Some("1"));
    assert!(!data.contains_key("b"), "b was only alice's: removed");
    assert_eq!(
        data.get("c").map(String::as_str),
        Some("3"),
        "c is still bob's"
    );

    // Removing an associative list item (a container) the applier no longer lists.
    let dapi: Api<Deployment> = Api::namespaced(client(&h, "a"), "default");
    let mut two = deployment("web", 1, json!({"app": "web"}));
    two["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "sidecar", "image": "envoy"}));
    apply(&dapi, "gitfleet", &two, false).await.unwrap();
    let one = apply(
        &dapi,
        "gitfleet",
        &deployment("web", 1, json!({"app": "web"})),
        false,
    )
    .await
    .unwrap();
    let containers = one.spec.template.spec.unwrap().containers;
    assert_eq!(
        containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        vec!["web"]
    );
    h.shutdown().await;
}

#[tokio::test]
async fn list_by_label_across_namespaces() {
    let h = sim(&["a"]).await;
    let c = client(&h, "a");
    let ns_api: Api<Namespace> = Api::all(c.clone());
    ns_api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap(),
        )
        .await
        .unwrap();
    for (ns, name, labels) in [
        ("default", "a", json!({"app": "web", "env": "prod"})),
        ("default", "b", json!({"app": "web", "env": "dev"})),
        ("team", "c", json!({"app": "db"})),
    ] {
        let api: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}});
        api.patch(name, &PatchParams::apply("t"), &Patch::Apply(obj))
            .await
            .unwrap();
    }
    let all: Api<ConfigMap> = Api::all(c.clone());
    let names = |l: kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        l.items
            .into_iter()
            .map(|o| o.metadata.name.unwrap())
            .collect()
    };
    let q = |s: &str| ListParams::default().labels(s);
    assert_eq!(
        names(all.list(&q("app=web")).await.unwrap()),
        vec!["a", "b"]
    );
    assert_eq!(
        names(all.list(&q("app==web,env!=prod")).await.unwrap()),
        vec!["b"]
    );
    assert_eq!(
        names(
            all.list(&q("app in (db,web),env notin (dev)"))
                .await
                .unwrap()
        ),
        vec!["a", "c"]
    );
    assert_eq!(names(all.list(&q("env")).await.unwrap()), vec!["a", "b"]);
    assert_eq!(names(all.list(&q("!env,app")).await.unwrap()), vec!["c"]);
    let team: Api<ConfigMap> = Api::namespaced(c.clone(), "team");
    assert_eq!(
        names(team.list(&ListParams::default()).await.unwrap()),
        vec!["c"]
    );
    assert_eq!(
        names(
            all.list(&ListParams::default().fields("metadata.name=b"))
                .await
                .unwrap()
        ),
        vec!["b"]
    );
    assert_eq!(
        names(
            all.list(&ListParams::default().fields("metadata.namespace=team"))
                .await
                .unwrap()
        ),
        vec!["c"]
    );
    // limit/continue are accepted (and the whole list returned).
    assert_eq!(
        all.list(&ListParams::default().limit(1))
            .await
            .unwrap()
            .items
            .len(),
        3
    );
    h.shutdown().await;
}

#[tokio::test]
async fn watch_streams_changes_bookmarks_and_410_gone() {
    let h = sim(&["a"]).await;
    let api: Api<ConfigMap> = Api::namespaced(client(&h, "a"), "default");
    let cm = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w", "labels": {"app": "w"}}, "data": {"v": v}});
    let first = api
        .patch("w", &PatchParams::apply("t"), &Patch::Apply(cm("0")))
        .await
        .unwrap();
    let rv0 = first.metadata.resource_version.clone().unwrap();

    // From resourceVersion 0: ADDED for what exists, then changes, with bookmarks.
    let wp = WatchParams::default().labels("app=w");
    let mut stream = api.watch(&wp, "0").await.unwrap().boxed();
    let mut seen = Vec::new();
    let mut bookmark = false;
    api.patch("w", &PatchParams::apply("t"), &Patch::Apply(cm("1")))
        .await
        .unwrap();
    while seen.len() < 2 || !bookmark {
        match tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(o) => seen.push(("ADDED", o.data.unwrap()["v"].clone())),
            WatchEvent::Modified(o) => seen.push(("MODIFIED", o.data.unwrap()["v"].clone())),
            WatchEvent::Bookmark(b) => {
                assert!(!b.metadata.resource_version.is_empty());
                bookmark = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        vec![("ADDED", "0".to_string()), ("MODIFIED", "1".to_string())]
    );

    // From a known resourceVersion: only what came after.
    let mut from_rv = api
        .watch(&WatchParams::default(), &rv0)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(Duration::from_secs(10), from_rv.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Modified(o) => assert_eq!(o.data.unwrap()["v"], "1"),
        other => panic!("unexpected {other:?}"),
    }

    // Past the retained history (20 events): 410 Gone.
    for i in 2..40 {
        api.patch(
            "w",
            &PatchParams::apply("t"),
            &Patch::Apply(cm(&i.to_string())),
        )
        .await
        .unwrap();
    }
    let mut gone = api
        .watch(&WatchParams::default(), &rv0)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(Duration::from_secs(10), gone.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Error(e) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
            assert!(
                e.message.starts_with("too old resource version"),
                "{}",
                e.message
            );
        }
        other => panic!("expected 410, got {other:?}"),
    }

    // Deletion is seen by the watcher.
    api.delete("w", &DeleteParams::default()).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Deleted(o) => {
                assert_eq!(o.metadata.name.as_deref(), Some("w"));
                break;
            }
            WatchEvent::Modified(_) | WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    h.shutdown().await;
}

#[tokio::test]
async fn kube_runtime_watcher_sees_objects() {
    let h = sim(&["a"]).await;
    let api: Api<ConfigMap> = Api::namespaced(client(&h, "a"), "default");
    let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
    api.patch("x", &PatchParams::apply("t"), &Patch::Apply(obj))
        .await
        .unwrap();
    let mut events =
        kube::runtime::watcher(api.clone(), kube::runtime::watcher::Config::default()).boxed();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline);
        if let Ok(Some(Ok(kube::runtime::watcher::Event::InitApply(o)))) =
            tokio::time::timeout(Duration::from_secs(10), events.next()).await
        {
            assert_eq!(o.metadata.name.as_deref(), Some("x"));
            break;
        }
    }
    h.shutdown().await;
}

#[tokio::test]
async fn status_subresource_is_separate_from_spec() {
    let h = sim(&["a"]).await;
    let c = client(&h, "a");
    let api: Api<Deployment> = Api::namespaced(c, "default");
    let mut d = deployment("web", 1, json!({"app": "web"}));
    d["metadata"]["annotations"] = json!({"kubesim.gitfleet.dev/fail": "true"});
    apply(&api, "gitfleet", &d, false).await.unwrap();
    // Status sent to the main resource is ignored...
    let mut with_status = d.clone();
    with_status["status"] = json!({"replicas": 99});
    let after = apply(&api, "gitfleet", &with_status, false).await.unwrap();
    assert_ne!(after.status.and_then(|s| s.replicas), Some(99));
    // ...and written through /status, without touching the generation.
    let status = json!({"apiVersion": "apps/v1", "kind": "Deployment", "status": {"replicas": 7, "observedGeneration": 1}});
    let patched = api
        .patch_status(
            "web",
            &PatchParams::apply("tester").force(),
            &Patch::Apply(status),
        )
        .await
        .unwrap();
    assert_eq!(patched.status.unwrap().replicas, Some(7));
    assert_eq!(patched.metadata.generation, Some(1));
    let merged = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 8}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.status.unwrap().replicas, Some(8));
    let via_get = api.get_status("web").await.unwrap();
    assert_eq!(via_get.status.unwrap().replicas, Some(8));
    h.shutdown().await;
}

#[tokio::test]
async fn deployments_become_available_or_fail_as_annotated() {
    let h = sim(&["a"]).await;
    let api: Api<Deployment> = Api::namespaced(client(&h, "a"), "default");
    apply(
        &api,
        "gitfleet",
        &deployment("good", 3, json!({"app": "good"})),
        false,
    )
    .await
    .unwrap();
    let mut bad = deployment("bad", 2, json!({"app": "bad"}));
    bad["metadata"]["annotations"] = json!({"kubesim.gitfleet.dev/fail": "true"});
    apply(&api, "gitfleet", &bad, false).await.unwrap();

    let good = eventually("good to become available", || async {
        let d = api.get("good").await.ok()?;
        (condition(&d, "Available")? == ("True".into(), "MinimumReplicasAvailable".into()))
            .then_some(d)
    })
    .await;
    let s = good.status.clone().unwrap();
    assert_eq!(
        (
            s.replicas,
            s.ready_replicas,
            s.available_replicas,
            s.updated_replicas
        ),
        (Some(3), Some(3), Some(3), Some(3))
    );
    assert_eq!(s.observed_generation, Some(1));
    assert_eq!(
        condition(&good, "Progressing").unwrap(),
        ("True".into(), "NewReplicaSetAvailable".into())
    );

    let bad = eventually("bad to time out", || async {
        let d = api.get("bad").await.ok()?;
        (condition(&d, "Progressing")?.1 == "ProgressDeadlineExceeded").then_some(d)
    })
    .await;
    assert_eq!(condition(&bad, "Progressing").unwrap().0, "False");
    assert_eq!(
        condition(&bad, "Available").unwrap(),
        ("False".into(), "MinimumReplicasUnavailable".into())
    );

    // Fixing the failure (dropping the annotation, as a rollback to a good image would) is a new
    // generation: the answer to the write already shows the old verdict as unobserved, so a
    // client reading it never takes ProgressDeadlineExceeded for the fixed release's.
    let fixed = apply(
        &api,
        "gitfleet",
        &deployment("bad", 2, json!({"app": "bad"})),
        false,
    )
    .await
    .unwrap();
    assert_eq!(fixed.metadata.generation, Some(2));
    assert_eq!(fixed.status.unwrap().observed_generation, Some(1));
    eventually("the fixed release to become available", || async {
        let d = api.get("bad").await.ok()?;
        let s = d.status.clone()?;
        (s.observed_generation == Some(2) && s.available_replicas == Some(2)).then_some(())
    })
    .await;

    // A new spec restarts the rollout: observedGeneration follows.
    apply(
        &api,
        "gitfleet",
        &deployment("good", 4, json!({"app": "good"})),
        false,
    )
    .await
    .unwrap();
    eventually("the new generation to roll out", || async {
        let d = api.get("good").await.ok()?;
        let s = d.status.clone()?;
        (s.observed_generation == Some(2) && s.available_replicas == Some(4)).then_some(())
    })
    .await;
    h.shutdown().await;
}

#[tokio::test]
async fn crds_serve_their_kinds_and_missing_ones_404() {
    let h = sim(&["a"]).await;
    let c = client(&h, "a");
    let gvk = GroupVersionKind::gvk("example.com", "v1", "Widget");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &ar);
    let w = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 1}});
    let err = widgets
        .patch("w1", &PatchParams::apply("t"), &Patch::Apply(&w))
        .await
        .unwrap_err();
    let kube::Error::Api(s) = err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (s.code, s.message.as_str()),
        (404, "the server could not find the requested resource")
    );

    let crds: Api<DynamicObject> = Api::all_with(
        c.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
                 "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    });
    crds.patch(
        "widgets.example.com",
        &PatchParams::apply("t"),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    let created = widgets
        .patch("w1", &PatchParams::apply("t"), &Patch::Apply(&w))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));

    let discovery = Discovery::new(c.clone()).run().await.unwrap();
    let group = discovery
        .get("example.com")
        .expect("the CRD's group is discovered");
    assert!(group.recommended_kind("Widget").is_some());
    eventually("the CRD to be established", || async {
        let o = crds.get("widgets.example.com").await.ok()?;
        let conds = o.data.pointer("/status/conditions")?.as_array()?.clone();
        conds
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
            .then_some(())
    })
    .await;

    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        widgets
            .get("w1")
            .await
            .unwrap_err()
            .to_string()
            .contains("404")
    );
    h.shutdown().await;
}

#[tokio::test]
async fn deleting_a_namespace_removes_its_contents() {
    let h = sim(&["a", "b"]).await;
    let c = client(&h, "a");
    let ns_api: Api<Namespace> = Api::all(c.clone());
    ns_api
        .patch(
            "doomed",
            &PatchParams::apply("t"),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}}),
            ),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "doomed");
    cms.patch(
        "x",
        &PatchParams::apply("t"),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})),
    )
    .await
    .unwrap();
    // The other cluster is independent.
    assert!(
        h.get_object("b", "v1", "ConfigMap", Some("doomed"), "x")
            .is_none()
    );
    ns_api
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the namespace to go", || async {
        matches!(ns_api.get("doomed").await, Err(kube::Error::Api(s)) if s.code == 404)
            .then_some(())
    })
    .await;
    assert!(
        h.get_object("a", "v1", "ConfigMap", Some("doomed"), "x")
            .is_none()
    );
    // Creating in a missing namespace fails as on a real server.
    let err = cms
        .patch(
            "y",
            &PatchParams::apply("t"),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "y"}}),
            ),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(s) = err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (s.code, s.message.as_str()),
        (404, "namespaces \"doomed\" not found")
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_delete_with_preconditions_only_deletes_the_object_it_names() {
    let h = sim(&["a"]).await;
    let c = client(&h, "a");
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let create = |value: &'static str| {
        let cms = cms.clone();
        async move {
            cms.patch(
                "x",
                &PatchParams::apply("t"),
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"k": value}})),
            )
            .await
            .unwrap()
        }
    };
    let first = create("1").await;
    let (uid, rv) = (
        first.metadata.uid.clone().unwrap(),
        first.metadata.resource_version.clone().unwrap(),
    );
    let changed = create("2").await;
    let new_rv = changed.metadata.resource_version.clone().unwrap();
    let conflict = |err: kube::Error| {
        let kube::Error::Api(s) = err else {
            panic!("{err:?}")
        };
        assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
        s.message
    };
    let with = |uid: Option<&str>, rv: Option<&str>| {
        DeleteParams::default().preconditions(kube::api::Preconditions {
            uid: uid.map(str::to_owned),
            resource_version: rv.map(str::to_owned),
        })
    };
    // Changed since it was read: the API server's own words, and the object stays.
    let err = cms
        .delete("x", &with(Some(&uid), Some(&rv)))
        .await
        .unwrap_err();
    assert_eq!(
        conflict(err),
        format!(
            "Operation cannot be fulfilled on ConfigMap \"x\": the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({new_rv}). The object might have been modified"
        )
    );
    assert!(cms.get_opt("x").await.unwrap().is_some());
    // Deleted and created again under the same name.
    let err = cms
        .delete("x", &with(Some("not-the-uid"), None))
        .await
        .unwrap_err();
    assert_eq!(
        conflict(err),
        format!(
            "Operation cannot be fulfilled on ConfigMap \"x\": the UID in the precondition (not-the-uid) does not match the UID in record ({uid}). The object might have been deleted and then recreated"
        )
    );
    // A group's kind is qualified by its group.
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), "default");
    apply(&deployments, "t", &deployment("web", 1, json!({})), false)
        .await
        .unwrap();
    let err = deployments
        .delete("web", &with(None, Some("1")))
        .await
        .unwrap_err();
    assert!(
        conflict(err).starts_with("Operation cannot be fulfilled on Deployment.apps \"web\": the ResourceVersion in the precondition (1)"),
    );
    // The object as it is now is deleted.
    cms.delete("x", &with(Some(&uid), Some(&new_rv)))
        .await
        .unwrap();
    assert!(cms.get_opt("x").await.unwrap().is_none());
    h.shutdown().await;
}

#[tokio::test]
async fn tls_and_token_auth() {
    let mut config = KubesimConfig::new(["secure"]);
    config.tls = true;
    config.token = Some("s3cret".into());
    let h = Kubesim::start(config).await.unwrap();
    assert!(h.base_url().starts_with("https://"));
    let api: Api<ConfigMap> = Api::namespaced(client(&h, "secure"), "default");
    assert!(
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    let mut wrong = h.kube_config("secure");
    wrong.auth_info.token = Some("nope".to_string().into());
    let api: Api<ConfigMap> = Api::namespaced(Client::try_from(wrong).unwrap(), "default");
    let err = api.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 401),
        "{err:?}"
    );

    let kubeconfig = h.kubeconfig_yaml("secure");
    assert!(kubeconfig.contains("certificate-authority-data:"));
    assert!(kubeconfig.contains("token: s3cret"));
    h.shutdown().await;
}

#[tokio::test]
async fn streaming_list_watcher_gets_initial_events_then_changes() {
    let h = sim(&["a"]).await;
    let api: Api<ConfigMap> = Api::namespaced(client(&h, "a"), "default");
    let cm =
        |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
    api.patch(
        "first",
        &PatchParams::apply("t"),
        &Patch::Apply(cm("first")),
    )
    .await
    .unwrap();
    let config = kube::runtime::watcher::Config::default().streaming_lists();
    let mut events = kube::runtime::watcher(api.clone(), config).boxed();
    let mut init_done = false;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(init_done && seen.contains(&"second".to_string())) {
        assert!(Instant::now() < deadline, "{seen:?} init_done={init_done}");
        match tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            kube::runtime::watcher::Event::InitApply(o) => seen.push(o.metadata.name.unwrap()),
            kube::runtime::watcher::Event::InitDone => {
                init_done = true;
                api.patch(
                    "second",
                    &PatchParams::apply("t"),
                    &Patch::Apply(cm("second")),
                )
                .await
                .unwrap();
            }
            kube::runtime::watcher::Event::Apply(o) => seen.push(o.metadata.name.unwrap()),
            _ => {}
        }
    }
    assert_eq!(seen, vec!["first", "second"]);
    h.shutdown().await;
}

#[tokio::test]
async fn an_in_memory_client_applies_lists_and_watches_like_a_tcp_one() {
    let h = sim(&["mem-1", "mem-2"]).await;
    let mem = h.in_memory_client("mem-1").unwrap();
    let tcp = client(&h, "mem-1");
    let cms: Api<ConfigMap> = Api::namespaced(mem.clone(), "default");
    let mut watch = cms
        .watch(&WatchParams::default().labels("via=memory"), "0")
        .await
        .unwrap()
        .boxed();
    let cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "piped", "labels": {"via": "memory"}},
        "data": {"k": "v"}
    });
    cms.patch("piped", &PatchParams::apply("test"), &Patch::Apply(&cm))
        .await
        .unwrap();
    // The watch over the same in-memory transport sees it...
    let event = tokio::time::timeout(Duration::from_secs(10), watch.try_next())
        .await
        .expect("a watch event in time")
        .unwrap()
        .expect("the stream goes on");
    match event {
        WatchEvent::Added(o) => assert_eq!(o.metadata.name.as_deref(), Some("piped")),
        other => panic!("expected Added, got {other:?}"),
    }
    // ...and it is the same cluster a TCP client sees, and only that one.
    let over_tcp: Api<ConfigMap> = Api::namespaced(tcp, "default");
    assert_eq!(over_tcp.get("piped").await.unwrap().data.unwrap()["k"], "v");
    let other: Api<ConfigMap> = Api::namespaced(h.in_memory_client("mem-2").unwrap(), "default");
    let listed = other
        .list(&ListParams::default().labels("via=memory"))
        .await
        .unwrap();
    assert!(listed.items.is_empty());
}
