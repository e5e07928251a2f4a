use super::*;
use crate::yaml::Limits;
use serde_json::json;

fn yaml(text: &str) -> Result<Vec<Document>, DocumentError> {
    parse_text(
        "fleet.yaml",
        text,
        Format::Yaml,
        &Budget::new(Limits::DEFAULT),
    )
}

fn origins(docs: &[Document]) -> Vec<&str> {
    docs.iter().map(|d| d.origin.as_str()).collect()
}

const APP: &str = "apiVersion: gitfleet.dev/v1
kind: App
metadata: { name: guestbook }
spec:
  repo: platform
  path: apps/guestbook
  namespace: guestbook
  targets:
    - clusterSelector: { matchLabels: { env: prod } }
";

#[test]
fn a_single_document_becomes_json() {
    let docs = yaml(APP).unwrap();
    assert_eq!(origins(&docs), ["fleet.yaml#0"]);
    assert_eq!(docs[0].value["kind"], "App");
    assert_eq!(docs[0].value["metadata"]["name"], "guestbook");
    assert_eq!(
        docs[0].value["spec"]["targets"][0]["clusterSelector"]["matchLabels"]["env"],
        "prod"
    );
}

#[test]
fn multi_document_files_keep_each_documents_position() {
    let text = format!(
        "---\nkind: Repo\nmetadata: {{name: platform}}\n---\n# only a comment\n---\n{APP}---\n"
    );
    let docs = yaml(&text).unwrap();
    // The comment-only document is skipped but still counted.
    assert_eq!(origins(&docs), ["fleet.yaml#0", "fleet.yaml#2"]);
    assert_eq!(docs[0].value["kind"], "Repo");
    assert_eq!(docs[1].value["kind"], "App");
}

#[test]
fn empty_files_and_lone_separators_hold_no_documents() {
    assert!(yaml("").unwrap().is_empty());
    assert!(yaml("---\n").unwrap().is_empty());
    assert!(yaml("---\n---\n...\n").unwrap().is_empty());
    assert!(yaml("# nothing here\n").unwrap().is_empty());
}

#[test]
fn bad_yaml_names_the_file_and_line() {
    let text = format!("{APP}---\nkind: Repo\nmetadata:\n  name: [unclosed\n");
    let err = yaml(&text).unwrap_err();
    let DocumentError::Syntax { file, line, .. } = &err else {
        panic!("expected a syntax error, got {err:?}");
    };
    assert_eq!(file, "fleet.yaml");
    // The error is at or after the line of the broken document, not the first one.
    let line = line.expect("the YAML reader reports a line");
    assert!(line >= 12, "line {line}: {err}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("fleet.yaml:{line}:")),
        "{message}"
    );
    let column = match &err {
        DocumentError::Syntax { column, .. } => column.unwrap(),
        _ => unreachable!(),
    };
    let repeated = format!("at line {line} column {column}");
    assert!(
        !message.contains(&repeated),
        "position said twice: {message}"
    );
}

#[test]
fn a_tab_indented_document_is_a_syntax_error() {
    let err = yaml("kind: App\nmetadata:\n\tname: x\n").unwrap_err();
    assert!(
        matches!(err, DocumentError::Syntax { line: Some(3), .. }),
        "{err:?}"
    );
}

#[test]
fn documents_that_are_not_mappings_are_refused() {
    let err = yaml("- a\n- b\n").unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("fleet.yaml#0: expected a resource"),
        "{text}"
    );
    assert!(text.contains("found a sequence"), "{text}");

    let err = yaml(&format!("{APP}---\njust a string\n")).unwrap_err();
    assert!(err.to_string().starts_with("fleet.yaml#1:"), "{err}");
}

#[test]
fn non_string_keys_cannot_become_json() {
    let err = yaml("kind: App\n? [a, b]\n: x\n").unwrap_err();
    assert!(
        matches!(&err, DocumentError::Syntax { file, line: Some(2), .. } if file == "fleet.yaml"),
        "{err:?}"
    );
    assert!(err.to_string().contains("mapping key"), "{err}");
}

#[test]
fn an_alias_bomb_is_refused_naming_the_file() {
    let mut text = format!(
        "kind: App\nmetadata: {{name: &n \"{}\"}}\nspec: [",
        "x".repeat(4096)
    );
    text.push_str(&vec!["*n"; 100_000].join(","));
    text.push_str("]\n");
    let err = yaml(&text).unwrap_err();
    assert!(matches!(&err, DocumentError::TooLarge { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("fleet.yaml: more than 10000 YAML aliases"),
        "{err}"
    );
}

#[test]
fn json_files_are_read_as_json_with_positions_in_errors() {
    let docs = parse_text(
        "app.json",
        r#"{"kind":"App","metadata":{"name":"a"}}"#,
        Format::Json,
        &Budget::new(Limits::DEFAULT),
    )
    .unwrap();
    assert_eq!(origins(&docs), ["app.json#0"]);
    assert_eq!(docs[0].value, json!({"kind":"App","metadata":{"name":"a"}}));

    let docs = parse_text(
        "all.json",
        r#"[{"kind":"Repo"},{"kind":"App"}]"#,
        Format::Json,
        &Budget::new(Limits::DEFAULT),
    )
    .unwrap();
    assert_eq!(origins(&docs), ["all.json#0", "all.json#1"]);

    let err = parse_text(
        "app.json",
        "{\n  \"kind\": \"App\",\n  oops\n}",
        Format::Json,
        &Budget::new(Limits::DEFAULT),
    )
    .unwrap_err();
    assert!(
        matches!(
            &err,
            DocumentError::Syntax {
                line: Some(3),
                format: "JSON",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("app.json:3:"), "{err}");
}

#[test]
fn yaml_reads_json_too() {
    let docs = yaml(r#"{"kind": "Repo", "metadata": {"name": "p"}}"#).unwrap();
    assert_eq!(docs[0].value["metadata"]["name"], "p");
}

#[test]
fn lists_expand_into_their_items() {
    let text = "apiVersion: gitfleet.dev/v1\nkind: List\nitems:\n  - {kind: Repo, metadata: {name: a}}\n  - {kind: App, metadata: {name: b}}\n";
    let docs = yaml(text).unwrap();
    assert_eq!(
        origins(&docs),
        ["fleet.yaml#0.items[0]", "fleet.yaml#0.items[1]"]
    );
    assert_eq!(docs[1].value["kind"], "App");

    let err = yaml("kind: List\nitems: 3\n").unwrap_err();
    assert!(err.to_string().contains("items of a List"), "{err}");
}

#[test]
fn format_follows_the_extension() {
    assert_eq!(Format::for_path(Path::new("a/b.json")), Format::Json);
    assert_eq!(Format::for_path(Path::new("a/b.JSON")), Format::Json);
    assert_eq!(Format::for_path(Path::new("a/b.yaml")), Format::Yaml);
    assert_eq!(Format::for_path(Path::new("a/b.yml")), Format::Yaml);
    assert_eq!(Format::for_path(Path::new("Makefile")), Format::Yaml);
}
#[test]
fn status_written_by_the_hub_is_not_sent_back() {
    let docs =
        yaml("kind: Repo\nmetadata: {name: p}\nspec: {url: x}\nstatus: {commit: abc}\n").unwrap();
    assert_eq!(
        docs[0].value,
        json!({"kind": "Repo", "metadata": {"name": "p"}, "spec": {"url": "x"}})
    );
}
