use super::*;

fn object(name: &str, action: pb::DiffAction, diff: &str, message: &str) -> pb::DiffObject {
    pb::DiffObject {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        namespace: "hello".into(),
        name: name.into(),
        action: action as i32,
        diff: diff.into(),
        message: message.into(),
        source_file: format!("apps/hello/{name}.yaml"),
    }
}

fn response() -> pb::DiffLiveResponse {
    pb::DiffLiveResponse {
        app: "hello".into(),
        revision: "3c5e7a91d0f4aaaaaaaaaaaaaaaaaaaaaaaaaaaa".into(),
        clusters: vec![
            pb::ClusterDiff {
                cluster: "eu-1".into(),
                revision: "3c5e7a91d0f4aaaaaaaaaaaaaaaaaaaaaaaaaaaa".into(),
                objects: vec![
                    object("same", pb::DiffAction::Unchanged, "", ""),
                    object(
                        "cfg",
                        pb::DiffAction::Update,
                        "--- live ConfigMap hello/cfg\n+++ 3c5e7a91 ConfigMap hello/cfg\n@@ -1 +1 @@\n-k: a\n+k: b\n",
                        "",
                    ),
                    object("new", pb::DiffAction::Create, "+k: v\n", ""),
                    object("old", pb::DiffAction::Prune, "-k: v\n", "no longer in Git"),
                    object(
                        "theirs",
                        pb::DiffAction::Failed,
                        "",
                        "belongs to App \"other\"",
                    ),
                ],
                creates: 1,
                updates: 1,
                prunes: 1,
                failures: 1,
                omitted: 2,
                ..Default::default()
            },
            pb::ClusterDiff {
                cluster: "eu-2".into(),
                error: "offline: the spoke is not connected (last heard from 3m ago)".into(),
                offline: true,
                ..Default::default()
            },
        ],
    }
}

fn plain() -> Style {
    Style {
        color: false,
        now_unix: 0,
    }
}

#[test]
fn the_report_counts_what_would_change_on_every_cluster() {
    let report = live_report(response());
    assert_eq!(report.differences, 3);
    assert_eq!(report.clusters[0].objects[0].action, "unchanged");
    assert_eq!(report.clusters[0].objects[3].action, "prune");
    assert_eq!(report.clusters[0].objects[0].diff, None);
    assert!(report.clusters[1].offline);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["clusters"][0]["objects"][1]["action"], "update");
    assert_eq!(
        json["clusters"][0]["objects"][1]["sourceFile"],
        "apps/hello/cfg.yaml"
    );
    assert!(json["clusters"][0].get("error").is_none());
    assert_eq!(json["clusters"][1]["offline"], true);
    assert_eq!(
        incomplete(&report),
        [
            "eu-1 (1 object(s) failed)".to_owned(),
            "eu-2 (offline: the spoke is not connected (last heard from 3m ago))".to_owned()
        ]
    );
}

#[test]
fn the_text_shows_each_cluster_its_changes_and_a_summary() {
    let text = live_text(&live_report(response()), plain());
    let expected = "\
=== cluster eu-1: app hello at 3c5e7a91
configmap/cfg -n hello would be changed
--- live ConfigMap hello/cfg
+++ 3c5e7a91 ConfigMap hello/cfg
@@ -1 +1 @@
-k: a
+k: b
configmap/new -n hello would be created
+k: v
configmap/old -n hello would be pruned
-k: v
configmap/theirs -n hello failed: belongs to App \"other\"
cluster eu-1: 1 to create, 1 to change, 1 to prune, 1 failed (2 objects not shown: the answer has a size limit; ask for this cluster alone with --cluster eu-1)

=== cluster eu-2: app hello at 3c5e7a91
error: offline: the spoke is not connected (last heard from 3m ago)

";
    assert_eq!(text, expected);
    assert!(!text.contains('\x1b'));
}

#[test]
fn colour_only_when_asked() {
    let text = live_text(
        &live_report(response()),
        Style {
            color: true,
            now_unix: 0,
        },
    );
    assert!(text.contains("\x1b[31m-k: a\x1b[0m"), "{text}");
    assert!(text.contains("\x1b[32m+k: b\x1b[0m"), "{text}");
    assert!(text.contains("\x1b[1m=== cluster eu-1"), "{text}");
}

#[test]
fn an_app_on_no_cluster_says_so() {
    let text = live_text(
        &live_report(pb::DiffLiveResponse {
            app: "hello".into(),
            revision: "abc".into(),
            clusters: vec![],
        }),
        plain(),
    );
    assert_eq!(
        text,
        "app hello has no Target on any cluster: nothing to compare\n"
    );
}
