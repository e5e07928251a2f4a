use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use gitfleet_core::yaml::{LimitExceeded, Limits};

fn ctx() -> RenderContext {
    RenderContext {
        app: "guestbook".into(),
        target_id: "guestbook".into(),
        revision: "0123456789abcdef0123456789abcdef01234567".into(),
        namespace: "gb".into(),
        create_namespace: false,
    }
}

fn render_files(files: &[SourceFile]) -> Rendered {
    render(files, &ctx(), &RenderLimits::default(), &no_discovery).expect("render")
}

fn names(rendered: &Rendered) -> Vec<String> {
    rendered
        .manifests
        .iter()
        .map(|m| format!("{}/{}", m.object.kind, m.object.name))
        .collect()
}

const DEPLOYMENT: &str =
    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n";
const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n";

#[test]
fn renders_multi_document_files_in_path_order() {
    let files = [
        SourceFile::new(
            "app/b.yaml",
            format!("{SERVICE}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n"),
        ),
        SourceFile::new("app/a.yml", DEPLOYMENT),
    ];
    let rendered = render_files(&files);
    assert!(rendered.errors.is_empty(), "{:?}", rendered.errors);
    assert_eq!(
        names(&rendered),
        ["Deployment/web", "Service/web", "ConfigMap/cfg"]
    );
    assert_eq!(rendered.manifests[0].source_file, "app/a.yml");
    assert_eq!(rendered.manifests[2].source_file, "app/b.yaml");
}

#[test]
fn ignores_files_that_are_not_manifests() {
    let files = [
        SourceFile::new("app/README.md", "# not yaml: [\n"),
        SourceFile::new("app/script.sh", "echo hi"),
        SourceFile::new("app/web.YAML", DEPLOYMENT),
    ];
    let rendered = render_files(&files);
    assert!(rendered.errors.is_empty());
    assert_eq!(names(&rendered), ["Deployment/web"]);
}

#[test]
fn is_manifest_file_matches_extensions_only() {
    assert!(is_manifest_file("a/b.yaml"));
    assert!(is_manifest_file("b.yml"));
    assert!(is_manifest_file("x/c.JSON"));
    assert!(!is_manifest_file("x.yaml/README"));
    assert!(!is_manifest_file("Chart.lock"));
}

#[test]
fn renders_json_files() {
    let json = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"j"},"data":{"a":"1"}}"#;
    let rendered = render_files(&[SourceFile::new("app/cm.json", json)]);
    assert!(rendered.errors.is_empty(), "{:?}", rendered.errors);
    assert_eq!(rendered.manifests[0].body["data"]["a"], "1");
}

#[test]
fn skips_empty_documents_and_comments() {
    let text = format!("# header\n---\n---\n# only a comment\n---\n{DEPLOYMENT}---\n");
    let rendered = render_files(&[SourceFile::new("app/x.yaml", text)]);
    assert!(rendered.errors.is_empty(), "{:?}", rendered.errors);
    assert_eq!(names(&rendered), ["Deployment/web"]);
}

#[test]
fn empty_file_renders_nothing() {
    let rendered = render_files(&[SourceFile::new("app/empty.yaml", "")]);
    assert!(rendered.errors.is_empty());
    assert!(rendered.manifests.is_empty());
}

#[test]
fn flattens_lists() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: b}\n";
    let rendered = render_files(&[SourceFile::new("app/list.yaml", text)]);
    assert!(rendered.errors.is_empty(), "{:?}", rendered.errors);
    assert_eq!(names(&rendered), ["ConfigMap/a", "ConfigMap/b"]);
}

#[test]
fn invalid_yaml_is_a_file_error_with_its_line_and_other_files_still_render() {
    let files = [
        SourceFile::new(
            "app/bad.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels: [unclosed\n",
        ),
        SourceFile::new("app/good.yaml", DEPLOYMENT),
    ];
    let rendered = render_files(&files);
    assert_eq!(names(&rendered), ["Deployment/web"]);
    assert_eq!(rendered.errors.len(), 1);
    let error = &rendered.errors[0];
    assert_eq!(error.file, "app/bad.yaml");
    assert!(error.line.is_some_and(|l| l >= 5), "{error:?}");
    assert!(error.to_string().starts_with("app/bad.yaml: "), "{error}");
    assert!(error.to_string().contains("line"), "{error}");
}

#[test]
fn a_document_without_kind_fails_its_whole_file_naming_the_line() {
    let text = format!("{SERVICE}---\napiVersion: v1\nmetadata:\n  name: nokind\n");
    let files = [
        SourceFile::new("app/mixed.yaml", text),
        SourceFile::new("app/ok.yaml", DEPLOYMENT),
    ];
    let rendered = render_files(&files);
    assert_eq!(names(&rendered), ["Deployment/web"]);
    let error = &rendered.errors[0];
    assert_eq!(error.file, "app/mixed.yaml");
    assert_eq!(error.line, Some(5));
    assert!(error.message.contains("line 5"), "{error}");
    assert!(error.message.contains("missing kind"), "{error}");
}

#[test]
fn missing_api_version_name_or_metadata_are_errors() {
    for (text, expect) in [
        (
            "kind: ConfigMap\nmetadata: {name: a}\n",
            "missing apiVersion",
        ),
        ("apiVersion: v1\nkind: ConfigMap\n", "has no metadata.name"),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
            "has no metadata.name",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {generateName: x-}\n",
            "generateName",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: [a]\n",
            "metadata must be a mapping",
        ),
        (
            "apiVersion: 1\nkind: ConfigMap\nmetadata: {name: a}\n",
            "apiVersion must be a string",
        ),
        ("- a\n- b\n", "must be a mapping"),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, labels: {n: 1}}\n",
            "labels.n must be a string",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: [x]}\n",
            "namespace is not a string",
        ),
    ] {
        let rendered = render_files(&[SourceFile::new("app/x.yaml", text)]);
        assert!(rendered.manifests.is_empty(), "{text}");
        assert!(
            rendered.errors[0].message.contains(expect),
            "{text}: {}",
            rendered.errors[0]
        );
    }
}

#[test]
fn invalid_wave_annotation_is_an_error() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  annotations: {gitfleet.dev/wave: soon}\n";
    let rendered = render_files(&[SourceFile::new("app/x.yaml", text)]);
    assert!(
        rendered.errors[0].message.contains("must be an integer"),
        "{}",
        rendered.errors[0]
    );
}

#[test]
fn argo_cd_sync_wave_is_read_when_gitfleets_wave_is_absent_and_checked_the_same() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  annotations: {argocd.argoproj.io/sync-wave: \"-2\"}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n  annotations: {argocd.argoproj.io/sync-wave: \"-2\", gitfleet.dev/wave: \"3\"}\n";
    let rendered = render_files(&[SourceFile::new("app/x.yaml", text)]);
    let waves: Vec<i32> = rendered.manifests.iter().map(Manifest::wave).collect();
    assert_eq!(waves, [-2, 3], "gitfleet's wins when both are set");
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  annotations: {argocd.argoproj.io/sync-wave: later}\n";
    let rendered = render_files(&[SourceFile::new("app/x.yaml", text)]);
    let message = &rendered.errors[0].message;
    assert!(
        message.contains("argocd.argoproj.io/sync-wave must be an integer"),
        "{message}"
    );
}

#[test]
fn only_a_hook_may_be_named_by_generate_name() {
    let hook = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: migrate-\n  annotations: {argocd.argoproj.io/hook: PreSync}\n";
    let rendered = render_files(&[SourceFile::new("app/x.yaml", hook)]);
    assert!(rendered.errors.is_empty(), "{:?}", rendered.errors);
    assert_eq!(rendered.manifests[0].object.name, "migrate-");
    assert!(rendered.manifests[0].body["metadata"].get("name").is_none());

    let ordinary = "apiVersion: batch/v1\nkind: Job\nmetadata: {generateName: migrate-}\n";
    let rendered = render_files(&[SourceFile::new("app/x.yaml", ordinary)]);
    assert!(rendered.manifests.is_empty());
    assert!(
        rendered.errors[0]
            .message
            .contains("only a hook may use it"),
        "{}",
        rendered.errors[0]
    );
}

#[test]
fn sets_labels_annotations_and_namespace() {
    let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels: {tier: web}\n  annotations: {note: keep}\n";
    let rendered = render_files(&[SourceFile::new("app/x.yaml", text)]);
    let m = &rendered.manifests[0];
    assert_eq!(m.object.namespace, "gb");
    let meta = &m.body["metadata"];
    assert_eq!(meta["namespace"], "gb");
    assert_eq!(
        meta["labels"],
        json!({"tier": "web", "gitfleet.dev/app": "guestbook"})
    );
    assert_eq!(
        meta["annotations"],
        json!({
            "note": "keep",
            "gitfleet.dev/target": "guestbook",
            "gitfleet.dev/revision": "0123456789abcdef0123456789abcdef01234567",
        })
    );
}

#[test]
fn null_labels_are_replaced_by_gitfleet_labels() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  labels:\n  annotations:\n";
    let rendered = render_files(&[SourceFile::new("app/x.yaml", text)]);
    assert!(rendered.errors.is_empty(), "{:?}", rendered.errors);
    assert_eq!(
        rendered.manifests[0].body["metadata"]["labels"]["gitfleet.dev/app"],
        "guestbook"
    );
}

#[test]
fn keeps_an_explicit_namespace() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: other}\n";
    let rendered = render_files(&[SourceFile::new("app/x.yaml", text)]);
    assert_eq!(rendered.manifests[0].object.namespace, "other");
}

#[test]
fn cluster_scoped_kinds_get_no_namespace() {
    let text = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r, namespace: wrong}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\n";
    let rendered = render_files(&[SourceFile::new("app/x.yaml", text)]);
    for m in &rendered.manifests {
        assert_eq!(m.object.namespace, "", "{:?}", m.object);
        assert!(m.body["metadata"].get("namespace").is_none());
    }
    assert_eq!(rendered.manifests.len(), 3);
}

#[test]
fn discovery_overrides_the_table() {
    let mut scopes = BTreeMap::new();
    scopes.insert(("example.com/v1".to_owned(), "Cluster".to_owned()), false);
    scopes.insert(("v1".to_owned(), "Namespace".to_owned()), true);
    let text = "apiVersion: example.com/v1\nkind: Cluster\nmetadata: {name: c}\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n";
    let lookup = scopes_from(&scopes);
    let rendered = render(
        &[SourceFile::new("app/x.yaml", text)],
        &ctx(),
        &RenderLimits::default(),
        &lookup,
    )
    .expect("render");
    assert_eq!(rendered.manifests[0].object.namespace, "");
    assert_eq!(
        rendered.manifests[1].object.namespace, "gb",
        "unknown kinds are namespaced"
    );
}

#[test]
fn place_in_scope_follows_discovery() {
    let text = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n";
    let mut rendered = render_files(&[SourceFile::new("app/x.yaml", text)]);
    let m = &mut rendered.manifests[0];
    place_in_scope(m, false, "gb");
    assert_eq!(m.object.namespace, "");
    assert!(m.body["metadata"].get("namespace").is_none());
    place_in_scope(m, true, "gb");
    assert_eq!(m.object.namespace, "gb");
    assert_eq!(m.body["metadata"]["namespace"], "gb");
}

#[test]
fn duplicate_objects_keep_the_first_and_report_the_second() {
    let files = [
        SourceFile::new("app/a.yaml", DEPLOYMENT),
        SourceFile::new("app/b.yaml", DEPLOYMENT),
    ];
    let rendered = render_files(&files);
    assert_eq!(rendered.manifests.len(), 1);
    assert_eq!(rendered.errors[0].file, "app/b.yaml");
    assert!(
        rendered.errors[0]
            .message
            .contains("already defined in app/a.yaml"),
        "{}",
        rendered.errors[0]
    );
}

#[test]
fn same_name_in_different_namespaces_or_kinds_is_not_a_duplicate() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: x}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: y}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: a, namespace: y}\n";
    let rendered = render_files(&[SourceFile::new("app/x.yaml", text)]);
    assert!(rendered.errors.is_empty(), "{:?}", rendered.errors);
    assert_eq!(rendered.manifests.len(), 3);
}

#[test]
fn creates_the_app_namespace_when_asked_and_absent() {
    let mut context = ctx();
    context.create_namespace = true;
    let rendered = render(
        &[SourceFile::new("app/x.yaml", DEPLOYMENT)],
        &context,
        &RenderLimits::default(),
        &no_discovery,
    )
    .expect("render");
    let ns = rendered
        .manifests
        .iter()
        .find(|m| m.object.kind == "Namespace")
        .expect("namespace");
    assert_eq!(ns.object.name, "gb");
    assert_eq!(
        ns.body["metadata"]["annotations"][ANNOTATION_PRUNE],
        "disabled"
    );
    assert_eq!(ns.body["metadata"]["labels"][LABEL_APP], "guestbook");

    let own = "apiVersion: v1\nkind: Namespace\nmetadata: {name: gb, labels: {mine: x}}\n";
    let rendered = render(
        &[SourceFile::new("app/ns.yaml", own)],
        &context,
        &RenderLimits::default(),
        &no_discovery,
    )
    .expect("render");
    assert_eq!(rendered.manifests.len(), 1);
    assert_eq!(
        rendered.manifests[0].body["metadata"]["labels"]["mine"],
        "x"
    );
}

#[test]
fn too_many_bytes_fails_the_target() {
    let limits = RenderLimits {
        max_bytes: 10,
        ..RenderLimits::default()
    };
    let err = render(
        &[SourceFile::new("a.yaml", DEPLOYMENT)],
        &ctx(),
        &limits,
        &no_discovery,
    )
    .expect_err("over limit");
    assert!(
        matches!(err, RenderError::TooManyBytes { limit: 10, .. }),
        "{err}"
    );
    // Files that are not manifests do not count.
    let ok = render(
        &[SourceFile::new("big.bin", vec![0u8; 100])],
        &ctx(),
        &limits,
        &no_discovery,
    );
    assert!(ok.is_ok());
}

#[test]
fn ten_thousand_tiny_documents_are_refused() {
    let text = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n".repeat(10_000);
    let err = render(
        &[SourceFile::new("a.yaml", text)],
        &ctx(),
        &RenderLimits::default(),
        &no_discovery,
    )
    .expect_err("too many documents");
    assert_eq!(err, RenderError::TooManyDocuments { limit: 5_000 });
    assert!(err.to_string().contains("more than 5000 documents"));

    let empty = "---\n".repeat(10_000);
    let err = render(
        &[SourceFile::new("a.yaml", empty)],
        &ctx(),
        &RenderLimits::default(),
        &no_discovery,
    )
    .expect_err("empty documents count too");
    assert_eq!(err, RenderError::TooManyDocuments { limit: 5_000 });
}

#[test]
fn document_limit_counts_across_files() {
    let limits = RenderLimits {
        max_documents: 3,
        ..RenderLimits::default()
    };
    let two = format!("{DEPLOYMENT}---\n{SERVICE}");
    let files = [
        SourceFile::new("a.yaml", two.clone()),
        SourceFile::new("b.yaml", two),
    ];
    assert!(render(&files, &ctx(), &limits, &no_discovery).is_err());
    assert!(render(&files[..1], &ctx(), &limits, &no_discovery).is_ok());
}

#[test]
fn billion_laughs_is_refused_as_a_file_error() {
    let bomb = r#"
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"#;
    let files = [
        SourceFile::new("app/bomb.yaml", bomb),
        SourceFile::new("app/ok.yaml", DEPLOYMENT),
    ];
    let rendered = render_files(&files);
    assert_eq!(names(&rendered), ["Deployment/web"]);
    assert_eq!(rendered.errors[0].file, "app/bomb.yaml");
    assert!(
        rendered.errors[0].message.contains("a YAML alias bomb?"),
        "{}",
        rendered.errors[0]
    );
}

#[test]
fn few_aliases_of_a_long_string_are_bounded_by_the_budget() {
    // A long string aliased a few times passes every count (few aliases, few events) but would
    // expand to ~100 MiB: only the budget's byte count stops it.
    let long = "x".repeat(1024 * 1024);
    let mut text =
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: a}}\ndata:\n  k0: &s {long}\n");
    for i in 1..100 {
        text.push_str(&format!("  k{i}: *s\n"));
    }
    let rendered = render(
        &[
            SourceFile::new("app/big.yaml", text),
            SourceFile::new("app/ok.yaml", DEPLOYMENT),
        ],
        &ctx(),
        &RenderLimits::default(),
        &no_discovery,
    )
    .expect("render");
    assert_eq!(names(&rendered), ["Deployment/web"]);
    assert_eq!(rendered.errors[0].file, "app/big.yaml");
    assert!(
        rendered.errors[0].message.contains("alias bomb"),
        "{}",
        rendered.errors[0]
    );
}

/// The attack that reached the spoke: one anchored scalar repeated by 100,000 aliases in a
/// file under 1 MiB. Refused before anything is built, naming the file.
#[test]
fn a_megabyte_of_aliases_fails_the_target_naming_the_file() {
    let mut text = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: a}}\ndata:\n  k: &s \"{}\"\nlist: [",
        "x".repeat(4096)
    );
    text.push_str(&vec!["*s"; 100_000].join(","));
    text.push_str("]\n");
    assert!(text.len() < 1024 * 1024);
    let err = render(
        &[
            SourceFile::new("app/bomb.yaml", text),
            SourceFile::new("app/ok.yaml", DEPLOYMENT),
        ],
        &ctx(),
        &RenderLimits::default(),
        &no_discovery,
    )
    .expect_err("over budget");
    assert!(
        matches!(&err, RenderError::OverBudget { file, error: LimitExceeded::Aliases { .. } } if file == "app/bomb.yaml"),
        "{err}"
    );
}

/// Many files of one App, each within the per-document limit, are stopped by the Target's
/// budget: the budget is per Target, not per file.
#[test]
fn the_yaml_budget_counts_every_file_of_the_target() {
    let limits = RenderLimits {
        yaml: Limits {
            max_total_bytes: 1024 * 1024,
            ..Limits::DEFAULT
        },
        ..RenderLimits::default()
    };
    let file = |i: usize| {
        SourceFile::new(
            format!("app/cm{i}.yaml"),
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm{i}}}\ndata:\n  k: \"{}\"\n",
                "v".repeat(300 * 1024)
            ),
        )
    };
    let three: Vec<SourceFile> = (0..3).map(file).collect();
    let rendered = render(&three, &ctx(), &limits, &no_discovery).expect("three fit");
    assert_eq!(rendered.manifests.len(), 3);
    let ten: Vec<SourceFile> = (0..10).map(file).collect();
    let err = render(&ten, &ctx(), &limits, &no_discovery).expect_err("ten do not");
    assert!(
        matches!(
            &err,
            RenderError::OverBudget {
                error: LimitExceeded::TotalBytes { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn merge_keys_are_applied() {
    let text = "base: &base {app: web, tier: x}\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: m\n  labels:\n    <<: *base\n    tier: front\n";
    let rendered = render_files(&[SourceFile::new("app/m.yaml", text)]);
    assert!(rendered.errors.is_empty(), "{:?}", rendered.errors);
    let labels = &rendered.manifests[0].body["metadata"]["labels"];
    assert_eq!(labels["app"], "web");
    assert_eq!(labels["tier"], "front");
    assert!(labels.get("<<").is_none());
}

#[test]
fn non_string_keys_become_strings() {
    let text =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: m}\ndata:\n  1: one\n  true: yes\n";
    let rendered = render_files(&[SourceFile::new("app/m.yaml", text)]);
    assert!(rendered.errors.is_empty(), "{:?}", rendered.errors);
    assert_eq!(rendered.manifests[0].body["data"]["1"], "one");
    assert_eq!(rendered.manifests[0].body["data"]["true"], "yes");
}

#[test]
fn not_utf8_is_a_file_error() {
    let rendered = render_files(&[SourceFile::new("app/bin.yaml", vec![0xff, 0xfe, 0x00])]);
    assert!(
        rendered.errors[0].message.contains("UTF-8"),
        "{}",
        rendered.errors[0]
    );
}

#[test]
fn invalid_json_names_the_line() {
    let rendered = render_files(&[SourceFile::new(
        "app/x.json",
        "{\n\"apiVersion\": \"v1\",\n oops\n}",
    )]);
    assert_eq!(rendered.errors[0].line, Some(3));
}

#[test]
fn wave_on_failure_reads_the_annotation_and_refuses_other_values() {
    let with = |value: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  annotations: {{gitfleet.dev/wave-on-failure: {value}}}\n"
        )
    };
    let stop = render_files(&[SourceFile::new("a.yaml", with("stop"))]);
    assert!(stop.manifests[0].stops_wave_on_failure());
    let go_on = render_files(&[SourceFile::new("a.yaml", with("continue"))]);
    assert!(!go_on.manifests[0].stops_wave_on_failure());
    let bad = render_files(&[SourceFile::new("a.yaml", with("halt"))]);
    assert!(bad.manifests.is_empty());
    assert_eq!(
        bad.errors[0].message,
        "object at line 1: ConfigMap a: annotation gitfleet.dev/wave-on-failure must be \"stop\" or \"continue\", not \"halt\""
    );
}

#[test]
fn wave_reads_the_annotation() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  annotations: {gitfleet.dev/wave: \"-2\"}\n";
    let rendered = render_files(&[SourceFile::new("app/x.yaml", text)]);
    assert_eq!(rendered.manifests[0].wave(), -2);
    let rendered = render_files(&[SourceFile::new("app/y.yaml", SERVICE)]);
    assert_eq!(rendered.manifests[0].wave(), 0);
}

#[test]
fn document_start_lines_follow_markers() {
    assert_eq!(document_start_lines("a: 1\n---\nb: 2\n"), [1, 2]);
    assert_eq!(document_start_lines("# c\n---\na: 1\n"), [2]);
    assert_eq!(document_start_lines("a: 1\n...\nb: 2\n"), [1, 3]);
    assert_eq!(document_start_lines("--- # x\na: 1\n---\n"), [1, 3]);
    assert_eq!(document_start_lines("a: |\n  ---\n"), [1]);
    assert_eq!(document_start_lines(""), Vec::<usize>::new());
}

#[test]
fn renders_the_guestbook_corpus() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/corpus/kubernetes-examples/web/guestbook"
    );
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("corpus") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            let name = format!(
                "guestbook/{}",
                path.file_name().and_then(|n| n.to_str()).expect("name")
            );
            files.push(SourceFile::new(name, std::fs::read(&path).expect("read")));
        }
    }
    let rendered = render_files(&files);
    assert!(rendered.errors.is_empty(), "{:?}", rendered.errors);
    assert_eq!(rendered.manifests.len(), 6);
    assert!(
        rendered
            .manifests
            .iter()
            .all(|m| m.object.namespace == "gb")
    );
}
