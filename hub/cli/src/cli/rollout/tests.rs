use super::*;

fn wave(
    name: &str,
    progress: &str,
    total: u32,
    updated: u32,
    healthy: u32,
    failed: u32,
) -> pb::RolloutWave {
    pb::RolloutWave {
        name: name.into(),
        progress: progress.into(),
        total,
        updated,
        healthy,
        failed,
        max_unavailable: 1,
        targets: Vec::new(),
    }
}

fn paused() -> pb::RolloutStatus {
    let mut canary = wave("canary", "current", 2, 2, 1, 1);
    canary.targets = vec![
        pb::RolloutTarget {
            cluster: "canary-1".into(),
            state: "healthy".into(),
            detail: String::new(),
        },
        pb::RolloutTarget {
            cluster: "canary-2".into(),
            state: "failed".into(),
            detail: "Degraded: deploy/web: CrashLoopBackOff".into(),
        },
    ];
    let mut eu = wave("eu", "waiting", 5, 0, 0, 0);
    eu.targets = (1..=5)
        .map(|i| pb::RolloutTarget {
            cluster: format!("eu-{i}"),
            state: "pending".into(),
            detail: String::new(),
        })
        .collect();
    pb::RolloutStatus {
        app: "web".into(),
        number: 3,
        kind: "update".into(),
        summary: "paused".into(),
        reason: "paused: wave 1/2 canary: 1 of 2 failed (failure budget 0)".into(),
        revision: "c".repeat(40),
        git_ref: "refs/heads/main".into(),
        stable_revision: "b".repeat(40),
        started_at_unix: 1_700_000_000,
        current_wave: 0,
        waves: vec![canary, eu],
        paused_message: "paused: ...".into(),
        ..Default::default()
    }
}

fn style() -> Style {
    Style {
        color: false,
        now_unix: 1_700_000_060,
    }
}

#[test]
fn the_status_names_the_failing_target_and_its_reason() {
    let report = rollout_report(&paused());
    assert_eq!(
        report.current_wave, 1,
        "waves are counted from 1 for people"
    );
    assert!(report.stopped() && !report.finished() && !report.succeeded());
    let text = rollout_text(&report, style());
    assert!(
        text.starts_with("web: rollout #3 to cccccccc   PAUSED\n"),
        "{text}"
    );
    assert!(text.contains("1 of 2 failed"), "{text}");
    assert!(text.contains("stable bbbbbbbb"), "{text}");
    assert!(text.contains("1/2 canary"), "{text}");
    assert!(text.contains("[##########!!!!!!!!!!]"), "{text}");
    assert!(
        text.contains("canary-2   canary   failed    Degraded: deploy/web: CrashLoopBackOff"),
        "{text}"
    );
    // Pending Targets of a wave not reached are not listed one by one.
    assert!(!text.contains("eu-3"), "{text}");
}

#[test]
fn bars_show_healthy_failed_and_updating_targets() {
    let report = rollout_report(&pb::RolloutStatus {
        waves: vec![wave("eu", "current", 4, 3, 1, 1)],
        ..paused()
    });
    assert_eq!(bar(&report.waves[0], 8), "[##!!~~--]");
    let empty = rollout_report(&pb::RolloutStatus {
        waves: vec![wave("none", "done", 0, 0, 0, 0)],
        ..paused()
    });
    assert_eq!(bar(&empty.waves[0], 4), "[####]");
}

#[test]
fn json_is_complete_and_round_trips() {
    let report = rollout_report(&paused());
    let json = output::to_json(&report);
    let back: RolloutReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
    assert!(json.contains("\"stableRevision\""), "{json}");
}

#[test]
fn a_watch_line_has_the_time_waves_and_reason() {
    let line = rollout_line(&rollout_report(&paused()), 1_700_000_060);
    assert_eq!(
        line,
        "2023-11-14T22:14:20Z  web: rollout #3 to cccccccc  [canary 1/2, eu 0/5]  paused: wave 1/2 canary: 1 of 2 failed (failure budget 0)\n"
    );
}

#[test]
fn history_shows_outcomes_and_rollbacks() {
    let records = vec![
        pb::RolloutRecord {
            number: 1,
            kind: "update".into(),
            revision: "a".repeat(40),
            outcome: "complete".into(),
            started_at_unix: 1_700_000_000,
            finished_at_unix: 1_700_000_030,
            clusters: 12,
            ..Default::default()
        },
        pb::RolloutRecord {
            number: 2,
            kind: "rollback".into(),
            revision: "a".repeat(40),
            rolled_back_from: "c".repeat(40),
            rollback_by: "onFailure: rollback".into(),
            outcome: "rolled back".into(),
            started_at_unix: 1_700_000_040,
            clusters: 12,
            ..Default::default()
        },
    ];
    let report = history_report("web", &records);
    let text = history_table(&report, style());
    assert!(text.contains("complete"), "{text}");
    assert!(text.contains("30s"), "{text}");
    assert!(
        text.contains("from cccccccc by onFailure: rollback"),
        "{text}"
    );
}

#[test]
fn events_show_age_kind_and_rollout_number() {
    let events = vec![pb::Event {
        id: 7,
        at_unix: 1_700_000_050,
        app: "web".into(),
        cluster: String::new(),
        rollout: 3,
        kind: "Paused".into(),
        message: "paused by alice".into(),
        by: "alice".into(),
    }];
    let text = events_table(&events_report(&events), style(), true);
    assert!(text.contains("10s ago"), "{text}");
    assert!(text.contains("#3 paused by alice"), "{text}");
    assert!(text.starts_with("AGE"), "{text}");
    let rows = events_table(&events_report(&events), style(), false);
    assert!(!rows.contains("AGE") && rows.contains("Paused"), "{rows}");
}

#[test]
fn a_complete_rollout_lists_the_targets_whose_self_heal_is_suspended() {
    let mut eu = wave("eu", "done", 2, 2, 2, 0);
    eu.targets = vec![
        pb::RolloutTarget {
            cluster: "eu-1".into(),
            state: "healthy".into(),
            detail: "self-heal suspended by freeze maint".into(),
        },
        pb::RolloutTarget {
            cluster: "eu-2".into(),
            state: "healthy".into(),
            detail: String::new(),
        },
    ];
    let report = rollout_report(&pb::RolloutStatus {
        summary: "complete".into(),
        reason: "complete".into(),
        finished_at_unix: 1_700_000_050,
        current_wave: 0,
        waves: vec![eu],
        paused_message: String::new(),
        ..paused()
    });
    let text = rollout_text(&report, style());
    assert!(
        text.contains("eu-1      eu     healthy   self-heal suspended by freeze maint"),
        "{text}"
    );
    assert!(!text.contains("eu-2"), "{text}");
}
