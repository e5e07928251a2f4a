use super::*;
use serde_json::json;

const NOW: &str = "2026-01-01T00:00:00Z";

fn writer(manager: &str) -> Writer<'_> {
    Writer {
        manager,
        api_version: "apps/v1",
        subresource: "",
        now: NOW,
    }
}

fn cm(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data})
}

/// Applies and returns the merged object; panics on conflicts.
fn apply_ok(live: &Value, config: &Value, entries: &mut Vec<ManagedEntry>, manager: &str) -> Value {
    apply(live, config, entries, &writer(manager), false).unwrap()
}

#[test]
fn first_apply_owns_what_it_sets() {
    let mut entries = Vec::new();
    let out = apply_ok(&json!({}), &cm(json!({"a": "1"})), &mut entries, "alice");
    assert_eq!(out["data"], json!({"a": "1"}));
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].operation, Operation::Apply);
    assert_eq!(
        entries[0].fields.to_fields_v1(),
        json!({"f:data": {"f:a": {}}})
    );
}

#[test]
fn conflicts_name_the_manager_and_path() {
    let mut entries = Vec::new();
    let live = apply_ok(
        &json!({}),
        &cm(json!({"a": "1", "b": "1"})),
        &mut entries,
        "alice",
    );
    let err = apply(
        &live,
        &cm(json!({"a": "2", "b": "2"})),
        &mut entries.clone(),
        &writer("bob"),
        false,
    )
    .unwrap_err();
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "Conflict");
    assert_eq!(
        err.message,
        "Apply failed with 2 conflicts: conflicts with \"alice\":\n- .data.a\n- .data.b"
    );
    let details = err.details.unwrap();
    assert_eq!(details["causes"][0]["reason"], "FieldManagerConflict");
    assert_eq!(details["causes"][0]["field"], ".data.a");
    assert_eq!(details["causes"][0]["message"], "conflict with \"alice\"");
}

#[test]
fn update_managers_are_named_with_version_and_time() {
    let old = cm(json!({"a": "1"}));
    let mut entries = Vec::new();
    update(
        &json!({}),
        &old,
        &mut entries,
        &Writer {
            manager: "kubectl-edit",
            api_version: "v1",
            subresource: "",
            now: NOW,
        },
    );
    let err = apply(
        &old,
        &cm(json!({"a": "2"})),
        &mut entries,
        &writer("bob"),
        false,
    )
    .unwrap_err();
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using v1 at 2026-01-01T00:00:00Z: .data.a"
    );
}

#[test]
fn force_moves_ownership() {
    let mut entries = Vec::new();
    let live = apply_ok(
        &json!({}),
        &cm(json!({"a": "1", "b": "1"})),
        &mut entries,
        "alice",
    );
    let out = apply(
        &live,
        &cm(json!({"a": "2"})),
        &mut entries,
        &writer("bob"),
        true,
    )
    .unwrap();
    assert_eq!(out["data"], json!({"a": "2", "b": "1"}));
    let alice = entries.iter().find(|e| e.manager == "alice").unwrap();
    assert_eq!(alice.fields.to_fields_v1(), json!({"f:data": {"f:b": {}}}));
    let bob = entries.iter().find(|e| e.manager == "bob").unwrap();
    assert_eq!(bob.fields.to_fields_v1(), json!({"f:data": {"f:a": {}}}));
}

#[test]
fn same_value_is_shared_not_a_conflict() {
    let mut entries = Vec::new();
    let live = apply_ok(&json!({}), &cm(json!({"a": "1"})), &mut entries, "alice");
    let out = apply_ok(&live, &cm(json!({"a": "1"})), &mut entries, "bob");
    assert_eq!(out, live);
    assert_eq!(entries.len(), 2);
    // Alice dropping the shared field leaves it to bob.
    let out = apply_ok(&out, &cm(json!({})), &mut entries, "alice");
    assert_eq!(out["data"], json!({"a": "1"}));
}

#[test]
fn dropped_fields_are_removed() {
    let mut entries = Vec::new();
    let live = apply_ok(
        &json!({}),
        &cm(json!({"a": "1", "b": "2"})),
        &mut entries,
        "alice",
    );
    let out = apply_ok(&live, &cm(json!({"a": "1"})), &mut entries, "alice");
    assert_eq!(out["data"], json!({"a": "1"}));
    // Dropping everything removes the emptied map too.
    let out = apply_ok(
        &out,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
        &mut entries,
        "alice",
    );
    assert!(out.get("data").is_none(), "{out}");
}

#[test]
fn fields_set_by_others_survive_an_apply() {
    let mut entries = Vec::new();
    let live = apply_ok(&json!({}), &cm(json!({"a": "1"})), &mut entries, "alice");
    let mut edited = live.clone();
    edited["data"]["z"] = json!("9");
    update(
        &live,
        &edited,
        &mut entries,
        &Writer {
            manager: "kubectl-edit",
            api_version: "v1",
            subresource: "",
            now: NOW,
        },
    );
    let out = apply_ok(&edited, &cm(json!({"a": "2"})), &mut entries, "alice");
    assert_eq!(out["data"], json!({"a": "2", "z": "9"}));
}

#[test]
fn keyed_list_items_merge_and_are_removed_by_key() {
    let d = |containers: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"template": {"spec": {"containers": containers}}}})
    };
    let mut entries = Vec::new();
    let live = apply_ok(
        &json!({}),
        &d(json!([{"name": "a", "image": "1"}, {"name": "b", "image": "1"}])),
        &mut entries,
        "alice",
    );
    // Another manager sets a field inside container b.
    let out = apply_ok(
        &live,
        &d(json!([{"name": "b", "imagePullPolicy": "Always"}])),
        &mut entries,
        "bob",
    );
    let cs = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(
        cs[1],
        json!({"name": "b", "image": "1", "imagePullPolicy": "Always"})
    );
    // Alice drops both containers: a goes, b stays because bob owns part of it.
    let out = apply_ok(&out, &d(json!([])), &mut entries, "alice");
    let cs = out["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(cs.len(), 1);
    assert_eq!(cs[0]["name"], "b");
    assert!(
        cs[0].get("image").is_none(),
        "alice's image field went with her: {cs:?}"
    );
}

#[test]
fn atomic_lists_and_maps_are_replaced_whole() {
    let d = |args: Value, selector: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"selector": selector, "template": {"spec": {"containers": [{"name": "a", "args": args}]}}}})
    };
    let mut entries = Vec::new();
    let live = apply_ok(
        &json!({}),
        &d(
            json!(["x", "y"]),
            json!({"matchLabels": {"a": "1", "b": "2"}}),
        ),
        &mut entries,
        "alice",
    );
    let out = apply_ok(
        &live,
        &d(json!(["z"]), json!({"matchLabels": {"a": "1"}})),
        &mut entries,
        "alice",
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["z"])
    );
    assert_eq!(out["spec"]["selector"], json!({"matchLabels": {"a": "1"}}));
}

#[test]
fn null_removes_a_field() {
    let mut entries = Vec::new();
    let live = apply_ok(
        &json!({}),
        &cm(json!({"a": "1", "b": "1"})),
        &mut entries,
        "alice",
    );
    let out = apply_ok(
        &live,
        &cm(json!({"a": null, "b": "1"})),
        &mut entries,
        "alice",
    );
    assert_eq!(out["data"], json!({"b": "1"}));
}

#[test]
fn identity_fields_are_owned_by_nobody() {
    let mut entries = Vec::new();
    let mut config = cm(json!({"a": "1"}));
    config["metadata"]["namespace"] = json!("default");
    config["metadata"]["labels"] = json!({"x": "y"});
    apply_ok(&json!({}), &config, &mut entries, "alice");
    let v1 = entries[0].fields.to_fields_v1();
    assert_eq!(
        v1,
        json!({"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:x": {}}}})
    );
}

#[test]
fn update_takes_changed_fields_and_drops_removed_ones() {
    let mut entries = Vec::new();
    let live = apply_ok(
        &json!({}),
        &cm(json!({"a": "1", "b": "1"})),
        &mut entries,
        "alice",
    );
    let mut new = live.clone();
    new["data"] = json!({"a": "2", "c": "3"});
    update(
        &live,
        &new,
        &mut entries,
        &Writer {
            manager: "edit",
            api_version: "v1",
            subresource: "",
            now: NOW,
        },
    );
    assert!(
        entries.iter().all(|e| e.manager != "alice"),
        "alice lost a (changed) and b (removed), and with nothing left her entry went"
    );
    let edit = entries.iter().find(|e| e.manager == "edit").unwrap();
    assert_eq!(edit.operation, Operation::Update);
    assert_eq!(
        edit.fields.to_fields_v1(),
        json!({"f:data": {"f:a": {}, "f:c": {}}})
    );
    assert_eq!(entries.len(), 1, "empty entries are dropped");
}

#[test]
fn managed_fields_encode_sorted_and_decode_back() {
    let mut entries = Vec::new();
    let live = apply_ok(&json!({}), &cm(json!({"a": "1"})), &mut entries, "zed");
    let mut new = live.clone();
    new["data"]["b"] = json!("2");
    update(
        &live,
        &new,
        &mut entries,
        &Writer {
            manager: "alpha",
            api_version: "v1",
            subresource: "status",
            now: NOW,
        },
    );
    let mut obj = new.clone();
    encode_managed_fields(&mut obj, &mut entries);
    let mf = obj["metadata"]["managedFields"].as_array().unwrap();
    assert_eq!(mf[0]["operation"], "Apply", "Apply sorts before Update");
    assert_eq!(mf[1]["subresource"], "status");
    assert_eq!(mf[1]["fieldsType"], "FieldsV1");
    let decoded = decode_managed_fields(&obj).unwrap();
    assert!(same_ownership(&decoded, &entries));
    let mut none = new.clone();
    encode_managed_fields(&mut none, &mut []);
    assert!(none["metadata"].get("managedFields").is_none());
    assert!(decode_managed_fields(&json!({"metadata": {"managedFields": 3}})).is_err());
}

#[test]
fn merge_semantics() {
    let live = json!({"metadata": {"finalizers": ["a"]}, "spec": {"x": 1, "m": {"k": 1}}});
    let out = merge(
        &live,
        &json!({"metadata": {"finalizers": ["b", "a"]}, "spec": {"m": {"j": 2}}}),
    );
    assert_eq!(
        out,
        json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"x": 1, "m": {"k": 1, "j": 2}}})
    );
}
