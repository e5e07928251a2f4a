use super::*;
use serde_json::json;

fn f(name: &str) -> PathElement {
    PathElement::Field(name.into())
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {},
            "template": {"spec": {"containers": [
                {"name": "web", "image": "nginx", "ports": [{"containerPort": 80}], "args": ["a"]}
            ]}}
        }
    })
}

#[test]
fn field_set_of_a_deployment_matches_the_real_server() {
    let set = to_field_set(&deployment());
    let v1 = set.to_fields_v1();
    assert_eq!(
        v1,
        json!({
            "f:apiVersion": {},
            "f:kind": {},
            "f:metadata": {"f:labels": {"f:app": {}}, "f:name": {}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:strategy": {},
                "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {
                        ".": {},
                        "f:args": {},
                        "f:image": {},
                        "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                    }
                }}}
            }
        })
    );
}

#[test]
fn fields_v1_round_trips() {
    let set = to_field_set(&deployment());
    let back = FieldSet::from_fields_v1(&set.to_fields_v1()).unwrap();
    assert_eq!(back, set);
    assert!(FieldSet::from_fields_v1(&json!({"x:bad": {}})).is_err());
    assert!(FieldSet::from_fields_v1(&json!({"k:{not json": {}})).is_err());
    assert!(FieldSet::from_fields_v1(&json!([])).is_err());
}

#[test]
fn set_algebra() {
    let mut a = FieldSet::new();
    a.insert(&[f("spec"), f("replicas")]);
    a.insert(&[f("spec"), f("paused")]);
    let mut b = FieldSet::new();
    b.insert(&[f("spec"), f("replicas")]);
    b.insert(&[f("metadata"), f("labels"), f("x")]);
    let i = a.intersection(&b);
    assert_eq!(i.members(), vec![vec![f("spec"), f("replicas")]]);
    let d = a.difference(&b);
    assert_eq!(d.members(), vec![vec![f("spec"), f("paused")]]);
    let mut u = a.clone();
    u.union(&b);
    assert_eq!(u.members().len(), 3);
    assert!(u.has(&[f("metadata"), f("labels"), f("x")]));
    assert!(!u.has(&[f("metadata"), f("labels")]));
    assert!(u.has_at_or_below(&[f("metadata")]));
    u.remove_subtree(&[f("metadata")]);
    assert!(!u.has_at_or_below(&[f("metadata")]));
    assert!(FieldSet::new().is_empty());
    assert!(a.difference(&a).is_empty());
}

#[test]
fn paths_print_like_the_real_conflict_messages() {
    let p = vec![
        f("spec"),
        f("template"),
        f("spec"),
        f("containers"),
        PathElement::Key("{\"name\":\"web\"}".into()),
        f("image"),
    ];
    assert_eq!(
        path_string(&p),
        ".spec.template.spec.containers[name=\"web\"].image"
    );
    assert_eq!(
        path_string(&[
            f("metadata"),
            f("finalizers"),
            PathElement::Value("\"a\"".into())
        ]),
        ".metadata.finalizers[=\"a\"]"
    );
    assert_eq!(path_string(&[f("x"), PathElement::Index(2)]), ".x[2]");
}

#[test]
fn get_and_remove_by_path() {
    let mut d = deployment();
    let image = [
        f("spec"),
        f("template"),
        f("spec"),
        f("containers"),
        PathElement::Key("{\"name\":\"web\"}".into()),
        f("image"),
    ];
    assert_eq!(get_path(&d, &image), Some(&json!("nginx")));
    // The defaulted key field (protocol) matches an item that leaves it out.
    let port = [
        f("spec"),
        f("template"),
        f("spec"),
        f("containers"),
        PathElement::Key("{\"name\":\"web\"}".into()),
        f("ports"),
        PathElement::Key("{\"containerPort\":80,\"protocol\":\"TCP\"}".into()),
    ];
    assert!(get_path(&d, &port).is_some());
    assert!(remove_path(&mut d, &port));
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["ports"],
        json!([])
    );
    assert!(remove_path(&mut d, &image));
    assert!(!remove_path(&mut d, &image));
    assert!(get_path(&d, &[f("nope")]).is_none());
}

#[test]
fn items_without_keys_make_the_list_atomic() {
    let v = json!({"spec": {"containers": [{"image": "x"}]}});
    let set = to_field_set(&v);
    assert!(set.has(&[f("spec"), f("containers")]));
}

#[test]
fn finalizers_are_a_set() {
    let v = json!({"metadata": {"finalizers": ["a", "b"]}});
    let set = to_field_set(&v);
    assert_eq!(
        set.to_fields_v1(),
        json!({"f:metadata": {"f:finalizers": {"v:\"a\"": {}, "v:\"b\"": {}}}})
    );
}
