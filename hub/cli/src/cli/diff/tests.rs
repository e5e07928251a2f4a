use super::*;
use serde_json::json;

fn doc(origin: &str, value: Value) -> Document {
    Document {
        origin: origin.into(),
        value,
    }
}

fn outcome(kind: &str, name: &str, action: &str) -> pb::ApplyOutcome {
    pb::ApplyOutcome {
        kind: kind.into(),
        name: name.into(),
        action: action.into(),
    }
}

fn app(namespace: &str) -> Value {
    json!({
        "apiVersion": "gitfleet.dev/v1",
        "kind": "App",
        "metadata": { "name": "web" },
        "spec": {
            "repo": "platform",
            "path": "apps/web",
            "namespace": namespace,
            "targets": [ { "clusters": ["dev-1"] } ]
        }
    })
}

/// What the hub's Get returns for `value`: the stored form (defaults filled in) plus status.
fn live(value: &Value) -> pb::ResourceDocument {
    let mut stored = gitfleet_core::resources::parse_document("", &value.to_string())
        .unwrap()
        .to_json();
    stored
        .as_object_mut()
        .unwrap()
        .insert("status".into(), json!({ "revision": "abc123" }));
    pb::ResourceDocument {
        origin: String::new(),
        json: stored.to_string(),
    }
}

const PLAIN: Style = Style {
    color: false,
    now_unix: 0,
};

#[test]
fn unchanged_resources_have_no_diff() {
    let report = diff_report(
        &[doc("web.yaml#0", app("web"))],
        &[outcome("App", "web", "unchanged")],
        &[live(&app("web"))],
    );
    assert_eq!(report.differences, 0);
    assert_eq!(report.resources[0].diff, None);
    assert_eq!(
        diff_text(&report, PLAIN),
        "app/web unchanged (web.yaml#0)\n"
    );
}

#[test]
fn a_changed_field_is_the_only_line_that_differs() {
    // The local document leaves defaults out and the hub's copy has a status: neither shows.
    let report = diff_report(
        &[doc("web.yaml#0", app("web-v2"))],
        &[outcome("App", "web", "configured")],
        &[live(&app("web"))],
    );
    assert_eq!(report.differences, 1);
    let diff = report.resources[0].diff.as_deref().unwrap();
    let changed: Vec<&str> = diff
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .collect();
    assert_eq!(
        changed,
        ["-  namespace: web", "+  namespace: web-v2"],
        "{diff}"
    );
    assert!(
        diff.starts_with("--- hub: app/web\n+++ web.yaml#0: app/web\n"),
        "{diff}"
    );
    assert!(!diff.contains("abc123"), "status is not diffed: {diff}");
}

#[test]
fn a_new_resource_diffs_against_nothing() {
    let repo = json!({
        "apiVersion": "gitfleet.dev/v1",
        "kind": "Repo",
        "metadata": { "name": "platform" },
        "spec": { "url": "https://git.example.com/platform.git" }
    });
    let report = diff_report(
        &[doc("fleet.yaml#0", repo), doc("fleet.yaml#1", app("web"))],
        &[
            outcome("Repo", "platform", "created"),
            outcome("App", "web", "unchanged"),
        ],
        &[live(&app("web"))],
    );
    assert_eq!(report.differences, 1);
    let diff = report.resources[0].diff.as_deref().unwrap();
    let body: Vec<&str> = diff.lines().skip(3).collect();
    assert!(
        body.iter().all(|l| l.starts_with('+')),
        "only additions: {diff}"
    );
    // The default ref the hub fills in shows, so the diff is what will be stored.
    assert!(diff.contains("+    branch: main"), "{diff}");
    let text = diff_text(&report, PLAIN);
    assert!(
        text.starts_with("repo/platform created (fleet.yaml#0)\n--- hub: repo/platform\n"),
        "{text}"
    );
    assert!(
        text.ends_with("app/web unchanged (fleet.yaml#1)\n"),
        "{text}"
    );
}

#[test]
fn colour_marks_additions_and_removals_only_when_asked() {
    let report = diff_report(
        &[doc("web.yaml#0", app("web-v2"))],
        &[outcome("App", "web", "configured")],
        &[live(&app("web"))],
    );
    let plain = diff_text(&report, PLAIN);
    assert!(!plain.contains('\x1b'), "{plain}");
    let colored = diff_text(
        &report,
        Style {
            color: true,
            now_unix: 0,
        },
    );
    assert!(
        colored.contains("\x1b[31m-  namespace: web\x1b[0m"),
        "{colored}"
    );
    assert!(
        colored.contains("\x1b[32m+  namespace: web-v2\x1b[0m"),
        "{colored}"
    );
}

#[test]
fn the_json_report_lists_every_resource_with_its_action() {
    let report = diff_report(
        &[doc("web.yaml#0", app("web-v2"))],
        &[outcome("App", "web", "configured")],
        &[live(&app("web"))],
    );
    let json: Value = serde_json::from_str(&output::to_json(&report)).unwrap();
    assert_eq!(json["differences"], 1);
    assert_eq!(json["resources"][0]["action"], "configured");
    assert_eq!(json["resources"][0]["origin"], "web.yaml#0");
    assert!(
        json["resources"][0]["diff"]
            .as_str()
            .unwrap()
            .contains("+  namespace: web-v2")
    );
}

#[test]
fn exit_codes_follow_diff() {
    assert_eq!(CliError::Differences { count: 2 }.exit_code(), 1);
    assert!(CliError::Differences { count: 2 }.is_reported());
    let failed = CliError::DiffFailed(Box::new(CliError::NoHome));
    assert_eq!(failed.exit_code(), 2);
    assert!(!failed.is_reported());
    assert_eq!(failed.to_string(), CliError::NoHome.to_string());
}
