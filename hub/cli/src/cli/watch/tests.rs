#![allow(clippy::unwrap_used)]

use clap::Parser as _;

use super::*;

fn target(app: &str, cluster: &str, message: &str) -> pb::TargetStatus {
    pb::TargetStatus {
        app: app.into(),
        cluster: cluster.into(),
        message: message.into(),
        desired_revision: "0123456789abcdef".into(),
        cluster_connected: true,
        ..Default::default()
    }
}

fn snapshot(targets: Vec<pb::TargetStatus>, complete: bool) -> pb::WatchStatusResponse {
    pb::WatchStatusResponse {
        snapshot: true,
        snapshot_complete: complete,
        targets,
        removed: vec![],
    }
}

fn change(targets: Vec<pb::TargetStatus>, removed: &[(&str, &str)]) -> pb::WatchStatusResponse {
    pb::WatchStatusResponse {
        snapshot: false,
        snapshot_complete: false,
        targets,
        removed: removed
            .iter()
            .map(|(a, c)| pb::TargetKey {
                app: (*a).into(),
                cluster: (*c).into(),
            })
            .collect(),
    }
}

fn removed(keys: &[(&str, &str)]) -> Vec<(String, String)> {
    keys.iter()
        .map(|(a, c)| ((*a).to_owned(), (*c).to_owned()))
        .collect()
}

#[test]
fn a_snapshot_in_parts_is_shown_once_complete() {
    let mut shown = ShownTargets::default();
    assert_eq!(
        shown.apply(snapshot(vec![target("web", "eu-1", "")], false)),
        None
    );
    let first = shown
        .apply(snapshot(vec![target("web", "us-1", "")], true))
        .unwrap();
    assert_eq!(first.changed.len(), 2);
    assert!(first.removed.is_empty());
}

#[test]
fn changes_print_only_what_differs_and_removals_once() {
    let mut shown = ShownTargets::default();
    shown.apply(snapshot(
        vec![target("web", "eu-1", ""), target("web", "us-1", "")],
        true,
    ));
    let same = shown
        .apply(change(vec![target("web", "eu-1", "")], &[]))
        .unwrap();
    assert_eq!(same, StatusChanges::default());
    let moved = shown
        .apply(change(
            vec![target("web", "eu-1", "degraded")],
            &[("web", "us-1")],
        ))
        .unwrap();
    assert_eq!(moved.changed, vec![target("web", "eu-1", "degraded")]);
    assert_eq!(moved.removed, removed(&[("web", "us-1")]));
    let again = shown.apply(change(vec![], &[("web", "us-1")])).unwrap();
    assert!(again.removed.is_empty());
}

#[test]
fn a_fresh_snapshot_after_a_reconnect_prints_only_what_changed_meanwhile() {
    let mut shown = ShownTargets::default();
    shown.apply(snapshot(
        vec![
            target("web", "eu-1", ""),
            target("web", "us-1", ""),
            target("api", "eu-1", ""),
        ],
        true,
    ));
    // While disconnected: web on us-1 degraded, api went away, db came.
    let after = shown
        .apply(snapshot(
            vec![
                target("db", "eu-1", ""),
                target("web", "eu-1", ""),
                target("web", "us-1", "degraded"),
            ],
            true,
        ))
        .unwrap();
    assert_eq!(
        after.changed,
        vec![target("db", "eu-1", ""), target("web", "us-1", "degraded")]
    );
    assert_eq!(after.removed, removed(&[("api", "eu-1")]));
    assert_eq!(shown.shown.len(), 3);
}

#[test]
fn reconnects_back_off_to_a_ceiling() {
    assert_eq!(reconnect_delay(0), Duration::from_millis(250));
    assert_eq!(reconnect_delay(1), Duration::from_millis(500));
    assert_eq!(reconnect_delay(4), Duration::from_secs(4));
    assert_eq!(reconnect_delay(5), Duration::from_secs(8));
    assert_eq!(reconnect_delay(500), Duration::from_secs(8));
}

fn status_args() -> StatusArgs {
    let cli = super::super::args::Cli::try_parse_from(["gitfleet", "status", "--watch"]).unwrap();
    match cli.command {
        super::super::args::Command::Status(s) => s,
        _ => unreachable!(),
    }
}

#[test]
fn watch_lines_are_one_json_object_per_target_and_the_table_header_once() {
    let style = Style {
        color: false,
        now_unix: 0,
    };
    let changes = StatusChanges {
        changed: vec![target("web", "eu-1", "degraded")],
        removed: removed(&[("web", "us-1")]),
    };
    let json = status_lines(&changes, false, &status_args(), OutputFormat::Json, style);
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{json}");
    assert_eq!(lines[0]["app"], "web");
    assert_eq!(lines[0]["message"], "degraded");
    assert_eq!(
        lines[1],
        serde_json::json!({"app": "web", "cluster": "us-1", "removed": true})
    );

    let first = status_lines(&changes, true, &status_args(), OutputFormat::Table, style);
    assert!(first.starts_with("APP"), "{first}");
    assert!(first.contains("web  us-1  (Target removed)"), "{first}");
    let later = status_lines(&changes, false, &status_args(), OutputFormat::Table, style);
    assert!(!later.contains("APP"), "{later}");
    assert!(later.contains("degraded"), "{later}");
}
