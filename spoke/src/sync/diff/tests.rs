use serde_json::json;

use super::*;

fn deployment() -> ObjectRef {
    ObjectRef {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        namespace: "hello".into(),
        name: "web".into(),
    }
}

fn secret() -> ObjectRef {
    ObjectRef {
        api_version: "v1".into(),
        kind: "Secret".into(),
        namespace: "hello".into(),
        name: "db".into(),
    }
}

fn live_deployment(replicas: u32, revision: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "hello",
            "uid": "1234",
            "resourceVersion": "42",
            "generation": 3,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "managedFields": [{"manager": "gitfleet/hello"}],
            "labels": {"gitfleet.dev/app": "hello"},
            "annotations": {
                "gitfleet.dev/revision": revision,
                "gitfleet.dev/target": "hello",
            },
        },
        "spec": {"replicas": replicas},
        "status": {"readyReplicas": replicas},
    })
}

#[test]
fn comparable_drops_what_the_server_manages_and_the_revision_annotation() {
    let c = comparable(&live_deployment(2, "aaaa"));
    assert_eq!(
        c,
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "hello",
                "labels": {"gitfleet.dev/app": "hello"},
                "annotations": {"gitfleet.dev/target": "hello"},
            },
            "spec": {"replicas": 2},
        })
    );
    // Annotations that held only the revision go with it.
    let only = json!({"metadata": {"name": "x", "annotations": {"gitfleet.dev/revision": "a"}}});
    assert_eq!(comparable(&only), json!({"metadata": {"name": "x"}}));
    // Not an object: as it is.
    assert_eq!(comparable(&json!("x")), json!("x"));
}

#[test]
fn a_new_commit_alone_is_no_change() {
    let (action, diff) = compare(
        &deployment(),
        Some(&live_deployment(2, "aaaa")),
        Some(&live_deployment(2, "bbbb")),
        "bbbb",
    );
    assert_eq!(action, DiffAction::Unchanged);
    assert!(diff.is_empty());
}

#[test]
fn a_changed_field_is_an_update_with_a_unified_diff() {
    let (action, diff) = compare(
        &deployment(),
        Some(&live_deployment(2, "aaaa")),
        Some(&live_deployment(3, "bbbbbbbbbbbb")),
        "bbbbbbbbbbbb",
    );
    assert_eq!(action, DiffAction::Update);
    assert!(
        diff.starts_with("--- live Deployment hello/web\n+++ bbbbbbbb Deployment hello/web\n"),
        "{diff}"
    );
    assert!(diff.contains("\n-  replicas: 2\n"), "{diff}");
    assert!(diff.contains("\n+  replicas: 3\n"), "{diff}");
    assert!(!diff.contains("resourceVersion"), "{diff}");
    assert!(!diff.contains("readyReplicas"), "{diff}");
}

#[test]
fn create_and_prune_diff_against_nothing() {
    let (action, diff) = compare(&deployment(), None, Some(&live_deployment(1, "b")), "b");
    assert_eq!(action, DiffAction::Create);
    assert!(diff.contains("\n+  replicas: 1\n"), "{diff}");
    assert!(!diff.lines().any(|l| l.starts_with("-  ")), "{diff}");
    let (action, diff) = compare(&deployment(), Some(&live_deployment(1, "a")), None, "b");
    assert_eq!(action, DiffAction::Prune);
    assert!(diff.contains("\n-  replicas: 1\n"), "{diff}");
    assert!(!diff.lines().any(|l| l.starts_with("+  ")), "{diff}");
    assert_eq!(
        compare(&deployment(), None, None, "b"),
        (DiffAction::Unchanged, String::new())
    );
}

fn secret_value(data: Value, string_data: Option<Value>) -> Value {
    let mut s = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "db",
            "namespace": "hello",
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"password\":\"aHVudGVyMg==\"}}"
            }
        },
        "data": data,
    });
    if let Some(sd) = string_data {
        s["stringData"] = sd;
    }
    s
}

#[test]
fn secret_values_never_show_only_which_keys_change() {
    let live = secret_value(
        json!({"password": "aHVudGVyMg==", "user": "YWRh", "gone": "eA=="}),
        None,
    );
    let planned = secret_value(
        json!({"password": "czNjcjN0", "user": "YWRh", "new": "eQ=="}),
        Some(json!({"token": "plain-text-token"})),
    );
    let (action, diff) = compare(&secret(), Some(&live), Some(&planned), "b");
    assert_eq!(action, DiffAction::Update);
    for value in [
        "aHVudGVyMg==",
        "czNjcjN0",
        "YWRh",
        "eA==",
        "eQ==",
        "plain-text-token",
        "hunter2",
    ] {
        assert!(!diff.contains(value), "{value} shows in:\n{diff}");
    }
    assert!(diff.contains("-  password: \"*** (before)\""), "{diff}");
    assert!(diff.contains("+  password: \"*** (after)\""), "{diff}");
    assert!(
        diff.contains("   user: \"***\""),
        "unchanged key, masked: {diff}"
    );
    assert!(diff.contains("-  gone: \"***\""), "{diff}");
    assert!(diff.contains("+  new: \"***\""), "{diff}");
    assert!(diff.contains("+  token: \"***\""), "{diff}");
}

#[test]
fn a_secret_created_or_pruned_is_masked_too() {
    let s = secret_value(json!({"password": "aHVudGVyMg=="}), Some(json!("weird")));
    for (live, planned) in [(None, Some(&s)), (Some(&s), None)] {
        let (_, diff) = compare(&secret(), live, planned, "b");
        assert!(!diff.contains("aHVudGVyMg=="), "{diff}");
        assert!(!diff.contains("weird"), "{diff}");
        assert!(diff.contains("password: \"***\""), "{diff}");
    }
}

#[test]
fn only_core_secrets_are_masked() {
    let mut other = secret();
    other.api_version = "example.com/v1".into();
    let s = secret_value(json!({"k": "dmFsdWU="}), None);
    let (_, diff) = compare(&other, None, Some(&s), "b");
    assert!(diff.contains("dmFsdWU="), "{diff}");
}

#[test]
fn long_diffs_are_cut_at_a_line_with_a_marker() {
    let line = "x".repeat(99) + "\n";
    let text = line.repeat(2000);
    let cut = cut_diff(text.clone());
    assert!(
        cut.len() <= diff_limits::MAX_OBJECT_DIFF_BYTES,
        "{}",
        cut.len()
    );
    assert!(cut.ends_with(&format!("{}\n", diff_limits::CUT_MARKER)));
    let body = cut.strip_suffix(&format!("{}\n", diff_limits::CUT_MARKER));
    assert!(body.is_some_and(|b| b.lines().all(|l| l.len() == 99)));
    let short = "a\nb\n".to_owned();
    assert_eq!(cut_diff(short.clone()), short);
    assert_eq!(cut_text("héllo wörld", 6), "hé…");
    assert_eq!(cut_text("short", 6), "short");
}

fn object(name: &str, action: DiffAction, diff_len: usize) -> ObjectDiff {
    ObjectDiff {
        object: ObjectRef {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: "hello".into(),
            name: name.into(),
        },
        action,
        diff: "d".repeat(diff_len),
        message: String::new(),
        source_file: "cm.yaml".into(),
    }
}

#[test]
fn within_limits_keeps_failures_and_changes_first_in_their_order() {
    let mut objects = Vec::new();
    for i in 0..40 {
        objects.push(object(&format!("same-{i}"), DiffAction::Unchanged, 0));
        objects.push(object(&format!("changed-{i}"), DiffAction::Update, 60_000));
    }
    objects.push(object("broken", DiffAction::Failed, 0));
    let diff = within_limits("hello", "b", objects, None);
    assert_eq!(
        diff.counts,
        Counts {
            creates: 0,
            updates: 40,
            prunes: 0,
            failures: 1
        }
    );
    assert!(diff.omitted > 0);
    assert_eq!(diff.objects.len() + diff.omitted, 81);
    assert!(diff.objects.iter().any(|o| o.object.name == "broken"));
    // Changes were kept before unchanged objects were considered: those kept are the first
    // ones, in order; small unchanged objects fill what room is left.
    let changed: Vec<&str> = diff
        .objects
        .iter()
        .filter(|o| o.action == DiffAction::Update)
        .map(|o| o.object.name.as_str())
        .collect();
    let expected: Vec<String> = (0..changed.len()).map(|i| format!("changed-{i}")).collect();
    assert_eq!(changed, expected);
    assert!(changed.len() < 40);
    let names: Vec<&str> = diff
        .objects
        .iter()
        .map(|o| o.object.name.as_str())
        .collect();
    assert_eq!(names[..2], ["same-0", "changed-0"], "order kept: {names:?}");
    let size: usize = diff.objects.iter().map(cost).sum();
    assert!(size <= diff_limits::MAX_RESULT_BYTES);
}

#[test]
fn within_limits_caps_the_count_and_cuts_messages_and_errors() {
    let objects: Vec<ObjectDiff> = (0..diff_limits::MAX_OBJECTS + 10)
        .map(|i| object(&format!("o{i}"), DiffAction::Unchanged, 0))
        .collect();
    let diff = within_limits("hello", "b", objects, None);
    assert_eq!(diff.objects.len(), diff_limits::MAX_OBJECTS);
    assert_eq!(diff.omitted, 10);
    let mut long = object("m", DiffAction::Failed, 0);
    long.message = "m".repeat(5000);
    let diff = within_limits("hello", "b", vec![long], Some("e".repeat(10_000)));
    assert!(diff.objects[0].message.len() <= diff_limits::MAX_MESSAGE_BYTES);
    assert!(
        diff.error
            .as_ref()
            .is_some_and(|e| e.len() <= diff_limits::MAX_ERROR_BYTES && e.ends_with('…'))
    );
    let f = failed("hello", "b", "render failed".into());
    assert_eq!(f.error.as_deref(), Some("render failed"));
    assert!(f.objects.is_empty());
}
