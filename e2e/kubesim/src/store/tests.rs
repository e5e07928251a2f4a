use super::*;

const NOW: &str = "2026-01-01T00:00:00Z";

fn ctx(manager: &str) -> WriteCtx {
    WriteCtx {
        manager: manager.into(),
        dry_run: false,
        force: false,
        now: NOW.into(),
    }
}

fn state() -> ClusterState {
    ClusterState::new(50, NOW)
}

fn rt(s: &ClusterState, group: &str, plural: &str) -> Arc<ResourceType> {
    s.resolve(group, "v1", plural).unwrap()
}

fn apply(
    s: &mut ClusterState,
    group: &str,
    plural: &str,
    ns: &str,
    obj: Value,
) -> Result<(Arc<Stored>, bool), ApiError> {
    let t = rt(s, group, plural);
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    s.patch(
        &t,
        "v1",
        ns,
        &name,
        PatchKind::Apply,
        &serde_json::to_vec(&obj).unwrap(),
        false,
        &ctx("test"),
    )
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

#[test]
fn new_clusters_have_the_standard_namespaces() {
    let s = state();
    let ns = rt(&s, "", "namespaces");
    let names: Vec<String> = s
        .list(
            &ns,
            None,
            &LabelSelector::default(),
            &FieldSelector::default(),
        )
        .iter()
        .map(|o| o.name.clone())
        .collect();
    assert_eq!(
        names,
        vec!["default", "kube-node-lease", "kube-public", "kube-system"]
    );
}

#[test]
fn apply_create_sets_identity() {
    let mut s = state();
    let (o, created) = apply(&mut s, "", "configmaps", "default", cm("a")).unwrap();
    assert!(created);
    let v = o.value();
    assert_eq!(v["metadata"]["namespace"], "default");
    assert_eq!(v["metadata"]["creationTimestamp"], NOW);
    assert_eq!(v["metadata"]["resourceVersion"], o.rv.to_string());
    assert!(v["metadata"].get("generation").is_none());
    let (again, created) = apply(&mut s, "", "configmaps", "default", cm("a")).unwrap();
    assert!(!created);
    assert_eq!(again.rv, o.rv, "no-op apply");
}

#[test]
fn bad_names_are_422_with_the_real_message() {
    let mut s = state();
    let mut bad = cm("Bad_Name");
    bad["metadata"]["name"] = json!("Bad_Name");
    let e = apply(&mut s, "", "configmaps", "default", bad).unwrap_err();
    assert_eq!(e.code, 422);
    assert_eq!(e.reason, "Invalid");
    assert!(
        e.message.starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"),
        "{}",
        e.message
    );
    let d = e.details.unwrap();
    assert_eq!(d["causes"][0]["field"], "metadata.name");
    assert_eq!(d["causes"][0]["reason"], "FieldValueInvalid");
}

#[test]
fn body_and_url_must_agree() {
    let mut s = state();
    let t = rt(&s, "", "configmaps");
    let body = serde_json::to_vec(&cm("a")).unwrap();
    let e = s
        .patch(
            &t,
            "v1",
            "default",
            "b",
            PatchKind::Apply,
            &body,
            false,
            &ctx("t"),
        )
        .unwrap_err();
    assert_eq!(
        e.message,
        "the name of the object (a) does not match the name on the URL (b)"
    );
    let mut wrong = cm("a");
    wrong["apiVersion"] = json!("apps/v1");
    let e = apply(&mut s, "", "configmaps", "default", wrong).unwrap_err();
    assert_eq!(e.code, 400);
    assert_eq!(
        e.message,
        "the API version in the data (apps/v1) does not match the expected API version (v1)"
    );
    let e = s
        .patch(
            &t,
            "v1",
            "default",
            "a",
            PatchKind::Apply,
            b"a: [",
            false,
            &ctx("t"),
        )
        .unwrap_err();
    assert_eq!(e.code, 400);
    assert!(
        e.message.starts_with("error decoding YAML"),
        "{}",
        e.message
    );
}

#[test]
fn namespaces_must_exist_and_not_be_terminating() {
    let mut s = state();
    let e = apply(&mut s, "", "configmaps", "nope", cm("a")).unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "namespaces \"nope\" not found")
    );
    let ns = rt(&s, "", "namespaces");
    s.create(
        &ns,
        "v1",
        None,
        json!({"metadata": {"name": "x"}}),
        &ctx("t"),
    )
    .unwrap();
    apply(&mut s, "", "configmaps", "x", cm("a")).unwrap();
    let (o, gone) = s
        .delete(
            &ns,
            "",
            "x",
            Propagation::Background,
            (None, None),
            &ctx("t"),
        )
        .unwrap();
    assert!(!gone);
    assert_eq!(o.value()["status"]["phase"], "Terminating");
    let e = apply(&mut s, "", "configmaps", "x", cm("b")).unwrap_err();
    assert_eq!(e.code, 403);
    assert!(
        e.message.contains("because it is being terminated"),
        "{}",
        e.message
    );
    let job = s.jobs.pop().unwrap();
    assert_eq!(job.step, Step::NamespaceCleanup);
    s.run_job(&job, NOW);
    assert!(s.lookup("configmaps", "x", "a").is_none());
    assert!(s.lookup("namespaces", "", "x").is_none());
}

#[test]
fn generation_tracks_spec_only() {
    let mut s = state();
    let d = |replicas: i64, label: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"l": label}},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}}}})
    };
    let t = rt(&s, "apps", "deployments");
    let a = |s: &mut ClusterState, v: Value| {
        s.patch(
            &t,
            "v1",
            "default",
            "d",
            PatchKind::Apply,
            &serde_json::to_vec(&v).unwrap(),
            false,
            &ctx("t"),
        )
        .unwrap()
        .0
        .value()
    };
    assert_eq!(a(&mut s, d(1, "x"))["metadata"]["generation"], 1);
    assert_eq!(a(&mut s, d(1, "y"))["metadata"]["generation"], 1);
    assert_eq!(a(&mut s, d(2, "y"))["metadata"]["generation"], 2);
    // Controller work was planned for the create and the spec change.
    assert_eq!(s.jobs.len(), 4);
}

#[test]
fn patches_of_every_kind() {
    let mut s = state();
    apply(&mut s, "", "configmaps", "default", cm("a")).unwrap();
    let t = rt(&s, "", "configmaps");
    let p = |s: &mut ClusterState, kind: PatchKind, body: Value| {
        s.patch(
            &t,
            "v1",
            "default",
            "a",
            kind,
            &serde_json::to_vec(&body).unwrap(),
            false,
            &ctx("kubectl-patch"),
        )
    };
    let v = p(&mut s, PatchKind::Merge, json!({"data": {"m": "1"}}))
        .unwrap()
        .0
        .value();
    assert_eq!(v["data"], json!({"k": "v", "m": "1"}));
    let v = p(
        &mut s,
        PatchKind::Json,
        json!([{"op": "remove", "path": "/data/k"}]),
    )
    .unwrap()
    .0
    .value();
    assert_eq!(v["data"], json!({"m": "1"}));
    let v = p(
        &mut s,
        PatchKind::Strategic,
        json!({"metadata": {"labels": {"x": "y"}}}),
    )
    .unwrap()
    .0
    .value();
    assert_eq!(v["metadata"]["labels"], json!({"x": "y"}));
    let managers: Vec<&str> = v["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert!(managers.contains(&"kubectl-patch"), "{managers:?}");
    let e = p(
        &mut s,
        PatchKind::Json,
        json!([{"op": "remove", "path": "/nope"}]),
    )
    .unwrap_err();
    assert_eq!(e.code, 422);
    let e = s
        .patch(
            &t,
            "v1",
            "default",
            "a",
            PatchKind::Merge,
            b"{",
            false,
            &ctx("t"),
        )
        .unwrap_err();
    assert_eq!(e.code, 400);
}

#[test]
fn stale_resource_versions_conflict() {
    let mut s = state();
    let (o, _) = apply(&mut s, "", "configmaps", "default", cm("a")).unwrap();
    let t = rt(&s, "", "configmaps");
    let mut v = o.value();
    v["metadata"]["resourceVersion"] = json!("1");
    let e = s
        .replace(&t, "v1", "default", "a", v, false, &ctx("t"))
        .unwrap_err();
    assert_eq!(e.code, 409);
    assert!(
        e.message.contains("the object has been modified"),
        "{}",
        e.message
    );
}

#[test]
fn finalizers_hold_deletion_until_removed() {
    let mut s = state();
    let mut obj = cm("a");
    obj["metadata"]["finalizers"] = json!(["example.com/hold"]);
    apply(&mut s, "", "configmaps", "default", obj).unwrap();
    let t = rt(&s, "", "configmaps");
    let (o, gone) = s
        .delete(
            &t,
            "default",
            "a",
            Propagation::Background,
            (None, None),
            &ctx("t"),
        )
        .unwrap();
    assert!(!gone);
    assert!(o.value()["metadata"]["deletionTimestamp"].is_string());
    s.patch(
        &t,
        "v1",
        "default",
        "a",
        PatchKind::Merge,
        br#"{"metadata":{"finalizers":null}}"#,
        false,
        &ctx("t"),
    )
    .unwrap();
    assert!(s.lookup("configmaps", "default", "a").is_none());
}

#[test]
fn garbage_collection_follows_owner_references() {
    let mut s = state();
    let (owner, _) = apply(&mut s, "", "configmaps", "default", cm("owner")).unwrap();
    let uid = owner.value()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    for name in ["dep1", "dep2"] {
        let mut d = cm(name);
        d["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]);
        apply(&mut s, "", "configmaps", "default", d).unwrap();
    }
    let t = rt(&s, "", "configmaps");
    s.delete(
        &t,
        "default",
        "owner",
        Propagation::Orphan,
        (None, None),
        &ctx("t"),
    )
    .unwrap();
    assert!(s.lookup("configmaps", "default", "dep1").is_some());
    let orphan = s.lookup("configmaps", "default", "dep1").unwrap().value();
    assert!(
        orphan["metadata"].get("ownerReferences").is_none(),
        "{orphan}"
    );

    let (owner, _) = apply(&mut s, "", "configmaps", "default", cm("owner2")).unwrap();
    let uid = owner.value()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let mut d = cm("dep3");
    d["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner2", "uid": uid}]);
    apply(&mut s, "", "configmaps", "default", d).unwrap();
    s.delete(
        &t,
        "default",
        "owner2",
        Propagation::Background,
        (None, None),
        &ctx("t"),
    )
    .unwrap();
    assert!(s.lookup("configmaps", "default", "dep3").is_none());
}

#[test]
fn watch_history_replays_and_expires() {
    let mut s = ClusterState::new(3, NOW);
    let t = rt(&s, "", "configmaps");
    let filter = WatchFilter {
        type_key: t.key(),
        namespace: None,
        labels: LabelSelector::default(),
        fields: FieldSelector::default(),
    };
    let start = s.resource_version();
    for i in 0..2 {
        apply(&mut s, "", "configmaps", "default", cm(&format!("c{i}"))).unwrap();
    }
    let (tx, _rx) = mpsc::channel(10);
    let replay = s
        .watch(filter.clone(), WatchStart::After(start), tx.clone())
        .unwrap();
    assert_eq!(replay.len(), 2);
    for i in 2..6 {
        apply(&mut s, "", "configmaps", "default", cm(&format!("c{i}"))).unwrap();
    }
    let e = s
        .watch(filter.clone(), WatchStart::After(start), tx.clone())
        .unwrap_err();
    assert_eq!(e.code, 410);
    let snapshot = s.watch(filter, WatchStart::Snapshot, tx).unwrap();
    assert_eq!(snapshot.len(), 6);
    assert!(snapshot.iter().all(|(k, _)| *k == EventType::Added));
}

#[test]
fn label_transitions_become_added_and_deleted() {
    let mut s = state();
    let t = rt(&s, "", "configmaps");
    let filter = WatchFilter {
        type_key: t.key(),
        namespace: None,
        labels: LabelSelector::parse("app=x").unwrap(),
        fields: FieldSelector::default(),
    };
    let (tx, mut rx) = mpsc::channel(10);
    s.watch(filter, WatchStart::Snapshot, tx).unwrap();
    let mut obj = cm("a");
    apply(&mut s, "", "configmaps", "default", obj.clone()).unwrap();
    obj["metadata"]["labels"] = json!({"app": "x"});
    apply(&mut s, "", "configmaps", "default", obj.clone()).unwrap();
    obj["metadata"]["labels"] = json!({"app": "y"});
    apply(&mut s, "", "configmaps", "default", obj).unwrap();
    assert_eq!(rx.try_recv().unwrap().0, EventType::Added);
    assert_eq!(rx.try_recv().unwrap().0, EventType::Deleted);
    assert!(rx.try_recv().is_err());
}

#[test]
fn crds_register_and_unregister_types() {
    let mut s = state();
    assert!(s.resolve("example.com", "v1", "widgets").is_none());
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced", "names": {"kind": "Widget", "plural": "widgets"},
                 "versions": [{"name": "v1", "served": true, "storage": true}]}});
    apply(
        &mut s,
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "",
        crd,
    )
    .unwrap();
    let w = s.resolve("example.com", "v1", "widgets").unwrap();
    let body = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}});
    s.patch(
        &w,
        "v1",
        "default",
        "w",
        PatchKind::Apply,
        &serde_json::to_vec(&body).unwrap(),
        false,
        &ctx("t"),
    )
    .unwrap();
    let crds = rt(&s, "apiextensions.k8s.io", "customresourcedefinitions");
    s.delete(
        &crds,
        "",
        "widgets.example.com",
        Propagation::Background,
        (None, None),
        &ctx("t"),
    )
    .unwrap();
    assert!(s.resolve("example.com", "v1", "widgets").is_none());
    assert!(s.lookup("widgets.example.com", "default", "w").is_none());
}

#[test]
fn dry_run_changes_nothing() {
    let mut s = state();
    let t = rt(&s, "", "configmaps");
    let before = s.resource_version();
    let dry = WriteCtx {
        dry_run: true,
        ..ctx("t")
    };
    let (o, created) = s
        .patch(
            &t,
            "v1",
            "default",
            "a",
            PatchKind::Apply,
            &serde_json::to_vec(&cm("a")).unwrap(),
            false,
            &dry,
        )
        .unwrap();
    assert!(created);
    assert_eq!(o.value()["data"]["k"], "v");
    assert_eq!(s.resource_version(), before);
    assert!(s.lookup("configmaps", "default", "a").is_none());
}

#[test]
fn bodies_must_be_objects() {
    assert_eq!(parse_body(b"[1]", false).unwrap_err().code, 400);
    assert_eq!(parse_body(b"{nope", false).unwrap_err().code, 400);
    assert!(parse_body(b"a: 1\nb: [x]\n", true).is_ok());
    assert!(
        parse_body(b"a: [", true)
            .unwrap_err()
            .message
            .starts_with("error decoding YAML")
    );
}

fn sts(extra: Value) -> Value {
    let mut s = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "db", "image": "postgres:16"}]}}}});
    json_patch::merge(&mut s, &extra);
    s
}

fn fields_of(v: &Value, manager: &str) -> String {
    v["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == manager)
        .map(|e| e["fieldsV1"].to_string())
        .unwrap_or_default()
}

#[test]
fn defaults_belong_to_no_applier_and_outlive_applies_that_omit_them() {
    let mut s = state();
    let (o, _) = apply(&mut s, "apps", "statefulsets", "default", sts(json!({}))).unwrap();
    let v = o.value();
    assert_eq!(v["spec"]["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(v["spec"]["updateStrategy"]["rollingUpdate"]["partition"], 0);
    assert_eq!(
        v["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    let owned = fields_of(&v, "test");
    for defaulted in [
        "updateStrategy",
        "podManagementPolicy",
        "replicas",
        "revisionHistoryLimit",
        "imagePullPolicy",
        "terminationMessagePath",
        "dnsPolicy",
    ] {
        assert!(
            !owned.contains(defaulted),
            "{defaulted} is owned by the applier: {owned}"
        );
    }
    // The same apply again changes nothing; the defaults stay.
    let (again, _) = apply(&mut s, "apps", "statefulsets", "default", sts(json!({}))).unwrap();
    assert_eq!(again.rv, o.rv);

    // The defaulted rolling update stays under another type, and a real server refuses it
    // there: the applier must clear it.
    let refused = apply(
        &mut s,
        "apps",
        "statefulsets",
        "default",
        sts(json!({"spec": {"updateStrategy": {"type": "OnDelete"}}})),
    )
    .unwrap_err();
    assert_eq!(refused.code, 422);
    assert!(
        refused.message.contains(
            "spec.updateStrategy.rollingUpdate: Invalid value: {\"partition\":0}: only allowed for updateStrategy 'RollingUpdate'"
        ),
        "{}",
        refused.message
    );

    // An applier that set a field and then omits it: the field goes, and its default returns.
    let (set, _) = apply(&mut s, "apps", "statefulsets", "default", {
        // (A merge patch would drop the null.)
        let mut c = sts(json!({"spec": {"replicas": 3, "updateStrategy": {"type": "OnDelete"}}}));
        c["spec"]["updateStrategy"]["rollingUpdate"] = Value::Null;
        c
    })
    .unwrap();
    assert!(
        set.value()["spec"]["updateStrategy"]
            .get("rollingUpdate")
            .is_none()
    );
    let v = set.value();
    assert_eq!(v["spec"]["replicas"], 3);
    assert_eq!(v["spec"]["updateStrategy"]["type"], "OnDelete");
    let (dropped, _) = apply(&mut s, "apps", "statefulsets", "default", sts(json!({}))).unwrap();
    let v = dropped.value();
    assert_eq!(v["spec"]["replicas"], 1);
    assert_eq!(v["spec"]["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(v["spec"]["revisionHistoryLimit"], 10);
    assert!(!fields_of(&v, "test").contains("replicas"));
}

#[test]
fn a_scale_target_wakes_the_autoscalers_that_scale_it() {
    let mut s = state();
    let hpa = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "db"}, "spec": {"maxReplicas": 3,
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db"}}});
    let t = s
        .resolve("autoscaling", "v2", "horizontalpodautoscalers")
        .unwrap();
    s.patch(
        &t,
        "v2",
        "default",
        "db",
        PatchKind::Apply,
        &serde_json::to_vec(&hpa).unwrap(),
        false,
        &ctx("test"),
    )
    .unwrap();
    let jobs = std::mem::take(&mut s.jobs);
    assert_eq!(jobs.len(), 1);
    // Before its target exists, the autoscaler says it cannot get the scale.
    s.run_job(&jobs[0], NOW);
    let v = s.get(&t, "default", "db").unwrap().value();
    assert_eq!(v["status"]["conditions"][0]["reason"], "FailedGetScale");

    apply(&mut s, "apps", "statefulsets", "default", sts(json!({}))).unwrap();
    let woken: Vec<PlannedJob> = std::mem::take(&mut s.jobs)
        .into_iter()
        .filter(|j| j.type_key == "horizontalpodautoscalers.autoscaling")
        .collect();
    assert_eq!(woken.len(), 1);
    s.run_job(&woken[0], NOW);
    let v = s.get(&t, "default", "db").unwrap().value();
    assert_eq!(v["status"]["currentReplicas"], 1);
    assert_eq!(v["status"]["desiredReplicas"], 1);
    assert_eq!(v["status"]["conditions"][0]["reason"], "ReadyForNewScale");
}

#[test]
fn a_recreate_deployment_refuses_the_defaulted_rolling_update() {
    let mut s = state();
    let deploy = |strategy: Value| {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}});
        if !strategy.is_null() {
            d["spec"]["strategy"] = strategy;
        }
        d
    };
    apply(
        &mut s,
        "apps",
        "deployments",
        "default",
        deploy(Value::Null),
    )
    .unwrap();
    let err = apply(
        &mut s,
        "apps",
        "deployments",
        "default",
        deploy(json!({"type": "Recreate"})),
    )
    .unwrap_err();
    assert_eq!(
        err.message,
        "Deployment.apps \"web\" is invalid: spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"
    );
    let (o, _) = apply(
        &mut s,
        "apps",
        "deployments",
        "default",
        deploy(json!({"type": "Recreate", "rollingUpdate": null})),
    )
    .unwrap();
    assert_eq!(o.value()["spec"]["strategy"], json!({"type": "Recreate"}));
}
