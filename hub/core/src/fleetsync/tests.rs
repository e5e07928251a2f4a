use super::*;
use crate::resources::parse_document;
use crate::yaml::Limits;

fn source() -> FleetSource {
    FleetSource {
        repo: "fleet".into(),
        path: "clusters/prod/".into(),
    }
}

const COMMIT: &str = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d";

fn group(name: &str) -> String {
    format!(
        "apiVersion: gitfleet.dev/v1\nkind: ClusterGroup\nmetadata: {{ name: {name} }}\nspec: {{ selector: {{ matchLabels: {{ env: {name} }} }} }}\n"
    )
}

/// A stored resource, owned by `owner` (an annotation value) or applied by hand.
fn stored(kind: &str, name: &str, owner: Option<&str>) -> Resource {
    let annotations = match owner {
        Some(o) => serde_json::json!({ FLEET_SOURCE: o }),
        None => serde_json::json!({}),
    };
    let spec = match kind {
        "Repo" => serde_json::json!({ "url": "https://git.example.com/x.git" }),
        "App" => serde_json::json!({
            "repo": "fleet", "path": "apps/x", "namespace": "x",
            "targets": [ { "clusters": ["a"] } ]
        }),
        _ => serde_json::json!({ "selector": {} }),
    };
    let doc = serde_json::json!({
        "apiVersion": "gitfleet.dev/v1", "kind": kind,
        "metadata": { "name": name, "annotations": annotations },
        "spec": spec
    });
    parse_document("", &doc.to_string()).unwrap()
}

#[test]
fn documents_are_annotated_with_their_source_and_named_by_commit_and_file() {
    let files = vec![(
        "clusters/prod/groups.yaml".to_owned(),
        format!("{}---\n{}", group("eu"), group("us")),
    )];
    let plan = plan(&source(), COMMIT, &files, &[], Limits::DEFAULT).unwrap();
    assert_eq!(plan.delete, []);
    let origins: Vec<&str> = plan.documents.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(
        origins,
        [
            "fleet@1a2b3c4d:clusters/prod/groups.yaml#0",
            "fleet@1a2b3c4d:clusters/prod/groups.yaml#1"
        ]
    );
    let doc: serde_json::Value = serde_json::from_str(&plan.documents[0].1).unwrap();
    assert_eq!(
        doc["metadata"]["annotations"][FLEET_SOURCE],
        "fleet:clusters/prod"
    );
    // What the hub validates and stores.
    let r = parse_document("", &plan.documents[0].1).unwrap();
    assert_eq!((r.kind(), r.name()), (Kind::ClusterGroup, "eu"));
}

#[test]
fn only_resources_this_source_brought_are_deleted_when_gone() {
    let id = source().id();
    let files = vec![("clusters/prod/eu.yaml".to_owned(), group("eu"))];
    let stored = vec![
        stored("ClusterGroup", "eu", Some(&id)),  // still in the path
        stored("ClusterGroup", "old", Some(&id)), // removed from the path
        stored("App", "old-app", Some(&id)),      // removed too: deleted first
        stored("Repo", "old-repo", Some(&id)),    // removed
        stored("ClusterGroup", "by-hand", None),  // never the path's
        stored("ClusterGroup", "elsewhere", Some("fleet:clusters/dev")),
        stored("Repo", "fleet", Some(&id)), // the fleet Repo itself stays
    ];
    let plan = plan(&source(), COMMIT, &files, &stored, Limits::DEFAULT).unwrap();
    assert_eq!(
        plan.delete,
        [
            (Kind::App, "old-app".to_owned()),
            (Kind::ClusterGroup, "old".to_owned()),
            (Kind::Repo, "old-repo".to_owned()),
        ]
    );
}

#[test]
fn a_resource_applied_by_hand_is_taken_over_when_the_path_names_it() {
    let files = vec![("clusters/prod/eu.yaml".to_owned(), group("by-hand"))];
    let plan = plan(
        &source(),
        COMMIT,
        &files,
        &[stored("ClusterGroup", "by-hand", None)],
        Limits::DEFAULT,
    )
    .unwrap();
    assert_eq!(plan.delete, []);
    assert!(plan.documents[0].1.contains(FLEET_SOURCE));
}

#[test]
fn bad_yaml_names_the_file_and_plans_nothing() {
    let files = vec![
        ("clusters/prod/a.yaml".to_owned(), group("a")),
        (
            "clusters/prod/b.yaml".to_owned(),
            "kind: [unclosed\n".to_owned(),
        ),
    ];
    let err = plan(&source(), COMMIT, &files, &[], Limits::DEFAULT).unwrap_err();
    assert!(err.contains("fleet@1a2b3c4d:clusters/prod/b.yaml"), "{err}");
    let files = vec![("x.json".to_owned(), "[1, 2]".to_owned())];
    let err = plan(&source(), COMMIT, &files, &[], Limits::DEFAULT).unwrap_err();
    assert!(err.contains("x.json"), "{err}");
}

#[test]
fn an_empty_path_deletes_everything_it_brought() {
    let id = source().id();
    let plan = plan(
        &source(),
        COMMIT,
        &[],
        &[stored("ClusterGroup", "eu", Some(&id))],
        Limits::DEFAULT,
    )
    .unwrap();
    assert_eq!(plan.documents, []);
    assert_eq!(plan.delete, [(Kind::ClusterGroup, "eu".to_owned())]);
}

/// A 1 MiB file of aliases to one anchored scalar took the hub past 3 GB and, retried on every
/// fetch, into a crash loop.
#[test]
fn an_alias_bomb_in_the_fleet_path_is_refused_naming_the_file() {
    let mut bomb = format!(
        "apiVersion: gitfleet.dev/v1\nkind: ClusterGroup\nmetadata: {{name: &n \"{}\"}}\nspec: [",
        "x".repeat(4096)
    );
    bomb.push_str(&vec!["*n"; 100_000].join(","));
    bomb.push_str("]\n");
    assert!(bomb.len() < 1024 * 1024);
    let files = vec![
        ("clusters/prod/a.yaml".to_owned(), group("a")),
        ("clusters/prod/bomb.yaml".to_owned(), bomb),
    ];
    let err = plan(&source(), COMMIT, &files, &[], Limits::DEFAULT).unwrap_err();
    assert!(
        err.starts_with("fleet@1a2b3c4d:clusters/prod/bomb.yaml: more than 10000 YAML aliases"),
        "{err}"
    );
}

/// The budget is per commit: files that are each within a document's limit are refused
/// together.
#[test]
fn the_yaml_budget_counts_every_file_of_the_commit() {
    let limits = Limits {
        max_total_bytes: 64 * 1024,
        ..Limits::DEFAULT
    };
    let big = |name: &str| {
        format!(
            "apiVersion: gitfleet.dev/v1\nkind: ClusterGroup\nmetadata: {{name: {name}}}\nspec: {{selector: {{matchLabels: {{note: \"{}\"}}}}}}\n",
            "z".repeat(20 * 1024)
        )
    };
    let two: Vec<(String, String)> = (0..2)
        .map(|i| (format!("clusters/prod/{i}.yaml"), big(&format!("g{i}"))))
        .collect();
    plan(&source(), COMMIT, &two, &[], limits).expect("two files fit");
    let four: Vec<(String, String)> = (0..4)
        .map(|i| (format!("clusters/prod/{i}.yaml"), big(&format!("g{i}"))))
        .collect();
    let err = plan(&source(), COMMIT, &four, &[], limits).unwrap_err();
    assert!(
        err.contains("the files together expand to more than 65536 bytes"),
        "{err}"
    );
}
