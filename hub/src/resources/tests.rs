use super::*;

fn yaml_to_json(yaml: &str) -> String {
    let v: serde_json::Value = serde_yaml::from_str(yaml).expect("test yaml");
    v.to_string()
}

fn parse_yaml(yaml: &str) -> Result<Resource, ResourceError> {
    parse_document("test.yaml#0", &yaml_to_json(yaml))
}

const DESIGN_APP: &str = r#"
apiVersion: gitfleet.dev/v1
kind: App
metadata: { name: guestbook }
spec:
  repo: platform
  path: apps/guestbook
  namespace: guestbook
  targets:
    - clusterSelector: { matchLabels: { env: prod } }
    - clusterGroup: eu
    - clusters: [edge-1]
  render: { type: auto }
  customize:
    - clusterSelector: { matchLabels: { env: dev } }
      kustomize: { dir: overlays/dev }
  syncPolicy: { prune: true, selfHeal: true, suspended: false }
"#;

#[test]
fn design_example_app_parses() {
    let Resource::App(app) = parse_yaml(DESIGN_APP).unwrap() else {
        panic!("not an app")
    };
    assert_eq!(app.metadata.name, "guestbook");
    assert_eq!(app.spec.targets.len(), 3);
    assert_eq!(app.spec.targets[1].cluster_group.as_deref(), Some("eu"));
    assert_eq!(app.spec.targets[2].clusters, vec!["edge-1".to_owned()]);
    assert_eq!(
        app.spec.customize[0]
            .kustomize
            .as_ref()
            .and_then(|k| k.dir.as_deref()),
        Some("overlays/dev")
    );
    assert!(app.spec.sync_policy.prune);
}

#[test]
fn round_trips_through_json() {
    let r = parse_yaml(DESIGN_APP).unwrap();
    let again = parse_document("", &r.to_json().to_string()).unwrap();
    assert_eq!(r, again);
    assert_eq!(r.kind(), Kind::App);
    assert_eq!(r.name(), "guestbook");
}

#[test]
fn repo_defaults_and_refs() {
    let r = parse_yaml(
        "apiVersion: gitfleet.dev/v1\nkind: Repo\nmetadata: {name: platform}\nspec: {url: 'https://git.example.com/p.git'}",
    )
    .unwrap();
    let Resource::Repo(repo) = r else { panic!() };
    assert_eq!(repo.spec.reference, GitRef::Branch("main".into()));
    assert_eq!(repo.spec.poll_interval, None);

    let r = parse_yaml(
        "apiVersion: gitfleet.dev/v1\nkind: Repo\nmetadata: {name: p}\nspec: {url: 'git@github.com:o/p.git', ref: {tag: v1.2.0}, pollInterval: 15s}",
    )
    .unwrap();
    let Resource::Repo(repo) = r else { panic!() };
    assert_eq!(repo.spec.reference, GitRef::Tag("v1.2.0".into()));
    assert_eq!(
        repo.spec.poll_interval,
        Some(std::time::Duration::from_secs(15))
    );
}

fn app_with_targets(targets: &str) -> String {
    format!(
        "apiVersion: gitfleet.dev/v1\nkind: App\nmetadata: {{name: web}}\nspec:\n  repo: r\n  path: apps/web\n  namespace: web\n  targets:\n{targets}"
    )
}

#[test]
fn unknown_operator_names_the_path() {
    let e = parse_yaml(&app_with_targets(
        "    - clusters: [a]\n    - clusterSelector: {matchExpressions: [{key: env, operator: Inn, values: [x]}]}\n",
    ))
    .unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.subject, "app \"web\"");
    assert_eq!(
        e.path,
        "spec.targets[1].clusterSelector.matchExpressions[0].operator"
    );
    assert!(msg.contains("unknown value `Inn`"), "{msg}");
    assert!(
        msg.starts_with("test.yaml#0: app \"web\": spec.targets[1]"),
        "{msg}"
    );
}

#[test]
fn selector_operator_value_rules() {
    let e = parse_yaml(&app_with_targets(
        "    - clusterSelector: {matchExpressions: [{key: env, operator: In}]}\n",
    ))
    .unwrap_err();
    assert_eq!(
        e.path,
        "spec.targets[0].clusterSelector.matchExpressions[0].values"
    );
    assert!(e.message.contains("needs at least one value"));

    let e = parse_yaml(&app_with_targets(
        "    - clusterSelector: {matchExpressions: [{key: env, operator: Exists, values: [a]}]}\n",
    ))
    .unwrap_err();
    assert!(e.message.contains("takes no values"), "{e}");

    let e = parse_yaml(&app_with_targets(
        "    - clusterSelector: {matchLabels: {'bad key!': x}}\n",
    ))
    .unwrap_err();
    assert_eq!(e.path, "spec.targets[0].clusterSelector.matchLabels");
}

#[test]
fn a_selection_sets_exactly_one_field() {
    let e = parse_yaml(&app_with_targets(
        "    - clusters: [a]\n      clusterGroup: eu\n",
    ))
    .unwrap_err();
    assert_eq!(e.path, "spec.targets[0]");
    assert!(e.message.contains("exactly one"));
    let e = parse_yaml(&app_with_targets("    - {}\n")).unwrap_err();
    assert_eq!(e.path, "spec.targets[0]");
    let e = parse_yaml(&app_with_targets("    []\n")).unwrap_err();
    assert_eq!(e.path, "spec.targets");
}

#[test]
fn unsafe_paths_are_refused() {
    for (path, why) in [
        ("../etc", "'..'"),
        ("apps/../../x", "'..'"),
        ("/abs", "relative"),
        ("apps/.git/config", ".git"),
    ] {
        let doc = format!(
            "apiVersion: gitfleet.dev/v1\nkind: App\nmetadata: {{name: web}}\nspec: {{repo: r, path: '{path}', namespace: web, targets: [{{clusters: [a]}}]}}"
        );
        let e = parse_yaml(&doc).unwrap_err();
        assert_eq!(e.path, "spec.path", "{path}");
        assert!(e.message.contains(why), "{path}: {e}");
    }
}

#[test]
fn names_must_be_dns_labels() {
    let e = parse_yaml(
        "apiVersion: gitfleet.dev/v1\nkind: ClusterGroup\nmetadata: {name: Bad_Name}\nspec: {selector: {}}",
    )
    .unwrap_err();
    assert_eq!(e.path, "metadata.name");
    assert!(e.message.contains("lowercase"), "{e}");
    let e = parse_yaml(&app_with_targets("    - clusters: [Edge_1]\n")).unwrap_err();
    assert_eq!(e.path, "spec.targets[0].clusters[0]");
}

#[test]
fn unknown_fields_kinds_and_versions() {
    let e = parse_yaml(&format!(
        "{}  rollout2: {{}}\n",
        app_with_targets("    - clusters: [a]\n")
    ))
    .unwrap_err();
    assert!(e.message.contains("unknown field `rollout2`"), "{e}");
    assert_eq!(e.path, "spec.rollout2");

    let e = parse_yaml("apiVersion: gitfleet.dev/v1\nkind: Deployment\nmetadata: {name: x}")
        .unwrap_err();
    assert_eq!(e.path, "kind");
    assert!(e.message.contains("unknown kind \"Deployment\""));

    let e =
        parse_yaml("apiVersion: v2\nkind: Repo\nmetadata: {name: x}\nspec: {url: 'https://a/b'}")
            .unwrap_err();
    assert_eq!(e.path, "apiVersion");
    assert_eq!(e.subject, "repo \"x\"");

    let e = parse_document("f#1", "[1,2]").unwrap_err();
    assert_eq!(e.subject, "document");
    let e = parse_document("f#1", "{not json").unwrap_err();
    assert_eq!(e.subject, "document");
}

#[test]
fn repo_url_and_ref_checks() {
    let repo = |spec: &str| {
        parse_yaml(&format!(
            "apiVersion: gitfleet.dev/v1\nkind: Repo\nmetadata: {{name: r}}\nspec: {spec}"
        ))
    };
    assert_eq!(repo("{url: 'not a url'}").unwrap_err().path, "spec.url");
    assert_eq!(
        repo("{url: 'https://a/b', ref: {commit: abc}}")
            .unwrap_err()
            .path,
        "spec.ref.commit"
    );
    assert_eq!(
        repo("{url: 'https://a/b', ref: {branch: 'a..b'}}")
            .unwrap_err()
            .path,
        "spec.ref"
    );
    assert_eq!(
        repo("{url: 'https://a/b', pollInterval: 1ms}")
            .unwrap_err()
            .path,
        "spec.pollInterval"
    );
    let e = repo("{url: 'https://a/b', ref: {branch: main, tag: v1}}").unwrap_err();
    assert!(e.path.starts_with("spec.ref"), "{e}");
    assert!(
        repo("{url: 'file:///tmp/x', ref: {commit: 0123456789abcdef0123456789abcdef01234567}}")
            .is_ok()
    );
}

#[test]
fn kind_parses_cli_spellings() {
    assert_eq!(Kind::parse("apps"), Some(Kind::App));
    assert_eq!(Kind::parse("Repo"), Some(Kind::Repo));
    assert_eq!(Kind::parse("clustergroups"), Some(Kind::ClusterGroup));
    assert_eq!(Kind::parse("pods"), None);
}
