use super::*;
use crate::resources::parse_value;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn target(desired: &str, reported: &str, sync: SyncState, health: HealthState) -> TargetState {
    TargetState {
        desired: desired.into(),
        reported: reported.into(),
        sync,
        health,
    }
}

#[test]
fn a_custom_resource_becomes_the_hubs_document() {
    let object = json!({
        "apiVersion": "gitfleet.dev/v1",
        "kind": "App",
        "metadata": {
            "name": "web", "namespace": "gitfleet", "uid": "u1", "generation": 3,
            "labels": {"team": "a"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "finalizers": [FINALIZER],
            "managedFields": [],
        },
        "spec": {"repo": "platform", "path": "apps/web", "namespace": "web",
                 "targets": [{"clusters": ["a"]}]},
        "status": {"sync": "Synced"},
    });
    let doc = document(Kind::App, "gitfleet", &object);
    assert_eq!(
        doc["metadata"]["annotations"],
        json!({OWNER_ANNOTATION: "gitfleet/web"})
    );
    assert_eq!(doc["metadata"]["labels"], json!({"team": "a"}));
    assert!(doc.get("status").is_none());
    let parsed = parse_value("", doc).unwrap();
    assert_eq!(parsed.kind(), Kind::App);
    assert_eq!(owner_of(parsed.metadata()), Some("gitfleet/web"));
}

#[test]
fn a_refused_spec_names_the_field() {
    let object = json!({
        "metadata": {"name": "web"},
        "spec": {"repo": "platform", "path": "apps/web", "namespace": "web",
                 "targets": [{"clusterSelector": {"matchExpressions": [
                     {"key": "env", "operator": "Inn", "values": ["a"]}]}}]},
    });
    let e = parse_value("", document(Kind::App, "ns", &object)).unwrap_err();
    assert!(e.path.starts_with("spec.targets[0]"), "{e}");
    let object = json!({"metadata": {"name": "r"}});
    let e = parse_value("", document(Kind::Repo, "ns", &object)).unwrap_err();
    assert!(e.to_string().contains("spec"), "{e}");
}

#[test]
fn ownership() {
    let free = Metadata::default();
    let mut ours = Metadata::default();
    ours.annotations
        .insert(OWNER_ANNOTATION.into(), "gitfleet/web".into());
    let mut theirs = Metadata::default();
    theirs
        .annotations
        .insert(OWNER_ANNOTATION.into(), "other/web".into());
    assert!(may_take(Kind::App, "web", None, "gitfleet/web").is_ok());
    assert!(may_take(Kind::App, "web", Some(&ours), "gitfleet/web").is_ok());
    let e = may_take(Kind::App, "web", Some(&theirs), "gitfleet/web").unwrap_err();
    assert!(e.contains("other/web"), "{e}");
    let e = may_take(Kind::App, "web", Some(&free), "gitfleet/web").unwrap_err();
    assert!(e.contains("gitfleet delete app web"), "{e}");
    let r = refusal("apply", Kind::App, "web", "gitfleet/web");
    assert!(r.contains("apps.gitfleet.dev/web"), "{r}");
    assert!(r.contains("\"gitfleet\""), "{r}");
}

#[test]
fn the_ready_condition_keeps_its_transition_time_while_it_holds() {
    let ok = Readiness::ready("Applied", "in force");
    let first = ready_condition(&ok, 1, &json!({}), "2026-01-01T00:00:00Z");
    assert_eq!(first["status"], "True");
    assert_eq!(first["observedGeneration"], 1);
    let previous = json!({"conditions": [first]});
    let again = ready_condition(&ok, 2, &previous, "2026-01-02T00:00:00Z");
    assert_eq!(again["lastTransitionTime"], "2026-01-01T00:00:00Z");
    assert_eq!(again["observedGeneration"], 2);
    let bad = Readiness::not_ready("Invalid", "spec.path: must be relative");
    let changed = ready_condition(&bad, 3, &previous, "2026-01-03T00:00:00Z");
    assert_eq!(changed["status"], "False");
    assert_eq!(changed["lastTransitionTime"], "2026-01-03T00:00:00Z");
    assert_eq!(changed["message"], "spec.path: must be relative");
}

#[test]
fn an_apps_sync_and_health_over_its_targets() {
    use HealthState as H;
    use SyncState as S;
    assert_eq!(app_sync(&[]), S::Unknown);
    assert_eq!(app_health(&[]), H::Unknown);
    let done = target("c2", "c2", S::Synced, H::Healthy);
    assert_eq!(app_sync(&[done.clone(), done.clone()]), S::Synced);
    assert_eq!(app_health(&[done.clone(), done.clone()]), H::Healthy);
    let old = target("c2", "c1", S::Synced, H::Healthy);
    assert_eq!(app_sync(&[done.clone(), old.clone()]), S::Syncing);
    assert_eq!(app_health(&[done.clone(), old]), H::Progressing);
    let failed = target("c2", "c2", S::Failed, H::Degraded);
    assert_eq!(app_sync(&[done.clone(), failed.clone()]), S::Failed);
    assert_eq!(app_health(&[done.clone(), failed]), H::Degraded);
    let drift = target("c2", "c2", S::OutOfSync, H::Healthy);
    assert_eq!(app_sync(&[done.clone(), drift]), S::OutOfSync);
    let none = target("c2", "", S::Unknown, H::Unknown);
    assert_eq!(app_health(&[done.clone(), none]), H::Unknown);
    let status = app_status(
        "0123456789abcdef",
        "Complete",
        "",
        &[done.clone(), target("c2", "c2", S::Synced, H::Progressing)],
    );
    assert_eq!(status["shortRevision"], "01234567");
    assert_eq!(status["sync"], "Synced");
    assert_eq!(status["health"], "Progressing");
    assert_eq!(status["targets"]["total"], 2);
    assert_eq!(status["targets"]["healthy"], 1);
    assert_eq!(status["targets"]["progressing"], 1);
    assert_eq!(status["targets"]["degraded"], 0);
}

#[test]
fn cluster_labels_flow_from_the_side_that_moved() {
    let hub = labels(&[("env", "prod")]);
    let edited = labels(&[("env", "dev")]);
    assert_eq!(
        label_flow(&hub, None, None),
        LabelFlow::ToObject(hub.clone())
    );
    assert_eq!(label_flow(&hub, Some(&hub), Some(&hub)), LabelFlow::None);
    assert_eq!(label_flow(&hub, Some(&hub), None), LabelFlow::None);
    // A person edited the object.
    assert_eq!(
        label_flow(&hub, Some(&edited), Some(&hub)),
        LabelFlow::ToHub(edited.clone())
    );
    // `gitfleet cluster label` changed the hub's.
    assert_eq!(
        label_flow(&edited, Some(&hub), Some(&hub)),
        LabelFlow::ToObject(edited.clone())
    );
    // Both moved: the object wins.
    let third = labels(&[("env", "test")]);
    assert_eq!(
        label_flow(&third, Some(&edited), Some(&hub)),
        LabelFlow::ToHub(edited.clone())
    );
    // An object written by hand without status.
    assert_eq!(
        label_flow(&hub, Some(&edited), None),
        LabelFlow::ToHub(edited)
    );
}

#[test]
fn label_changes_replace_the_labels() {
    let from = labels(&[("env", "prod"), ("ring", "1"), ("keep", "x")]);
    let to = labels(&[("env", "dev"), ("keep", "x"), ("new", "y")]);
    let c = label_changes(&from, &to).unwrap();
    assert_eq!(c.set, labels(&[("env", "dev"), ("new", "y")]));
    assert_eq!(c.remove.iter().collect::<Vec<_>>(), ["ring"]);
    assert!(c.overwrite);
    assert_eq!(
        crate::cluster_labels::apply_label_changes(&from, &c).unwrap(),
        to
    );
    assert!(label_changes(&to, &to).is_none());
    assert_eq!(
        labels_of(Some(&json!({"a": "b", "n": 1}))),
        Some(labels(&[("a", "b")]))
    );
    assert_eq!(labels_of(None), None);
}

#[test]
fn heartbeats_do_not_rewrite_the_last_contact() {
    assert_eq!(contact_to_write(None, 100, false), 100);
    assert_eq!(contact_to_write(Some(100), 130, false), 100);
    assert_eq!(contact_to_write(Some(100), 160, false), 160);
    assert_eq!(contact_to_write(Some(100), 130, true), 130);
}
