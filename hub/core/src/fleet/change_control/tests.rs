use std::collections::BTreeMap;
use std::time::Duration;

use chrono::NaiveDateTime;

use super::*;
use crate::fleet::freeze::FreezeRequest;
use crate::resources::{
    API_VERSION, AppSpec, ClusterSelection, Metadata, ProjectSpec, SyncWindowKind,
};

fn utc(s: &str) -> i64 {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
        .expect("test time")
        .and_utc()
        .timestamp()
}

/// Friday 2026-12-04, 15:00 UTC.
fn now() -> i64 {
    utc("2026-12-04 15:00")
}

fn app(name: &str, project: Option<&str>, windows: Vec<SyncWindow>) -> App {
    App {
        api_version: API_VERSION.into(),
        metadata: Metadata {
            name: name.into(),
            ..Default::default()
        },
        spec: AppSpec {
            project: project.map(Into::into),
            repo: "shop".into(),
            path: name.into(),
            namespace: name.into(),
            extra_paths: vec![],
            targets: vec![ClusterSelection {
                clusters: vec!["eu-1".into()],
                ..Default::default()
            }],
            render: Default::default(),
            customize: vec![],
            sync_policy: Default::default(),
            rollout: None,
            depends_on: vec![],
            sync_windows: windows,
        },
    }
}

fn project(windows: Vec<SyncWindow>) -> Project {
    Project {
        api_version: API_VERSION.into(),
        metadata: Metadata {
            name: "shop".into(),
            ..Default::default()
        },
        spec: ProjectSpec {
            sync_windows: windows,
            ..Default::default()
        },
    }
}

fn win(kind: SyncWindowKind, schedule: &str, hours: u64, selector: Option<&str>) -> SyncWindow {
    SyncWindow {
        kind,
        schedule: schedule.into(),
        duration: Duration::from_secs(hours * 3600),
        time_zone: None,
        cluster_selector: selector
            .map(|s| crate::fleet::freeze::parse_selector(s).expect("selector")),
        self_heal: true,
    }
}

fn no_heal(w: SyncWindow) -> SyncWindow {
    SyncWindow {
        self_heal: false,
        ..w
    }
}

fn freeze(name: &str, apps: &[&str], projects: &[&str], selector: &str, until: i64) -> Freeze {
    FreezeRequest {
        name: name.into(),
        apps: apps.iter().map(|s| (*s).to_owned()).collect(),
        projects: projects.iter().map(|s| (*s).to_owned()).collect(),
        cluster_selector: selector.into(),
        until,
        reason: "holiday campaign".into(),
        suspend_self_heal: false,
    }
    .validate("alice", now() - 60)
    .expect("valid freeze")
}

struct Clusters(Vec<(String, BTreeMap<String, String>)>);

impl Clusters {
    fn new(specs: &[(&str, &str)]) -> Self {
        Self(
            specs
                .iter()
                .map(|(name, env)| {
                    (
                        (*name).to_owned(),
                        [("env".to_owned(), (*env).to_owned())].into(),
                    )
                })
                .collect(),
        )
    }

    fn labels(&self) -> Vec<ClusterLabels<'_>> {
        self.0
            .iter()
            .map(|(name, labels)| ClusterLabels { name, labels })
            .collect()
    }
}

fn fleet() -> Clusters {
    Clusters::new(&[("eu-1", "prod"), ("eu-2", "prod"), ("lab-1", "dev")])
}

/// Which clusters are held, and the first reason of the first held one.
fn held(h: &Holds, clusters: &Clusters) -> (Vec<String>, Option<String>) {
    let names: Vec<String> = clusters
        .0
        .iter()
        .filter(|(c, _)| h.first(c, false).is_some())
        .map(|(c, _)| c.clone())
        .collect();
    let reason = names
        .first()
        .and_then(|c| h.first(c, false).map(|h| h.reason.clone()));
    (names, reason)
}

#[test]
fn nothing_holds_an_app_without_freezes_or_windows() {
    let c = fleet();
    let h = change_control_holds(
        &app("checkout", None, vec![]),
        None,
        &[],
        &c.labels(),
        now(),
    );
    assert!(h.is_empty());
}

#[test]
fn a_freeze_of_an_app_holds_it_everywhere_until_it_ends_and_not_the_others() {
    let c = fleet();
    let until = utc("2026-12-07 06:00");
    let freezes = [freeze("campaign", &["checkout"], &[], "", until)];
    let h = change_control_holds(
        &app("checkout", None, vec![]),
        None,
        &freezes,
        &c.labels(),
        now(),
    );
    let (names, reason) = held(&h, &c);
    assert_eq!(names, ["eu-1", "eu-2", "lab-1"]);
    assert_eq!(
        reason.as_deref(),
        Some("freeze campaign until 2026-12-07 06:00 UTC (alice: holiday campaign)")
    );
    assert_eq!(h.next_end(false), Some(until));
    assert_eq!(
        h.first("eu-1", false).map(|h| h.kind),
        Some(HoldKind::Freeze)
    );
    assert!(h.first("eu-1", true).is_none(), "an override lifts it");

    let other = change_control_holds(
        &app("branding", None, vec![]),
        None,
        &freezes,
        &c.labels(),
        now(),
    );
    assert!(other.is_empty(), "branding is not named");

    let ended = change_control_holds(
        &app("checkout", None, vec![]),
        None,
        &freezes,
        &c.labels(),
        until,
    );
    assert!(ended.is_empty(), "over at its end");
}

#[test]
fn a_freeze_of_a_project_with_a_cluster_selector_holds_only_those_clusters() {
    let c = fleet();
    let freezes = [freeze("prod", &[], &["shop"], "env=prod", now() + 600)];
    let h = change_control_holds(
        &app("cart", Some("shop"), vec![]),
        None,
        &freezes,
        &c.labels(),
        now(),
    );
    assert_eq!(held(&h, &c).0, ["eu-1", "eu-2"]);
    let h = change_control_holds(
        &app("cart", Some("other"), vec![]),
        None,
        &freezes,
        &c.labels(),
        now(),
    );
    assert!(h.is_empty());
}

#[test]
fn a_freeze_of_nothing_in_particular_holds_the_whole_fleet() {
    let c = fleet();
    let freezes = [freeze("all", &[], &[], "", now() + 600)];
    let h = change_control_holds(
        &app("anything", Some("any"), vec![]),
        None,
        &freezes,
        &c.labels(),
        now(),
    );
    assert_eq!(held(&h, &c).0.len(), 3);
}

#[test]
fn an_open_deny_window_of_the_project_holds_until_it_closes() {
    let c = fleet();
    // Fridays 14:00 UTC for 10h: open at 15:00.
    let p = project(vec![win(SyncWindowKind::Deny, "0 14 * * 5", 10, None)]);
    let a = app("checkout", Some("shop"), vec![]);
    let h = change_control_holds(&a, Some(&p), &[], &c.labels(), now());
    let (names, reason) = held(&h, &c);
    assert_eq!(names.len(), 3);
    assert_eq!(
        reason.as_deref(),
        Some("deny window '0 14 * * 5' (10h, UTC) of Project shop until 2026-12-05 00:00 UTC")
    );
    assert_eq!(h.next_end(false), Some(utc("2026-12-05 00:00")));
    assert_eq!(
        h.first("eu-1", false).map(|h| h.kind),
        Some(HoldKind::Window)
    );
    // Closed an hour before: nothing held.
    let h = change_control_holds(&a, Some(&p), &[], &c.labels(), utc("2026-12-04 13:00"));
    assert!(h.is_empty());
}

#[test]
fn allow_windows_hold_outside_them_until_the_next_opens() {
    let c = fleet();
    // Every day 22:00 for 2h.
    let a = app(
        "checkout",
        None,
        vec![win(SyncWindowKind::Allow, "0 22 * * *", 2, None)],
    );
    let h = change_control_holds(&a, None, &[], &c.labels(), now());
    let (names, reason) = held(&h, &c);
    assert_eq!(names.len(), 3);
    assert_eq!(
        reason.as_deref(),
        Some(
            "outside every allow window; allow window '0 22 * * *' (2h, UTC) of App checkout \
             opens 2026-12-04 22:00 UTC"
        )
    );
    assert_eq!(h.next_end(false), Some(utc("2026-12-04 22:00")));
    // Inside it: free.
    let h = change_control_holds(&a, None, &[], &c.labels(), utc("2026-12-04 23:30"));
    assert!(h.is_empty());
}

#[test]
fn deny_wins_over_an_open_allow_window() {
    let c = fleet();
    let a = app(
        "checkout",
        None,
        vec![
            win(SyncWindowKind::Allow, "0 0 * * *", 24, None),
            win(SyncWindowKind::Deny, "0 14 * * 5", 10, None),
        ],
    );
    let h = change_control_holds(&a, None, &[], &c.labels(), now());
    let (names, reason) = held(&h, &c);
    assert_eq!(names.len(), 3);
    assert!(reason.is_some_and(|r| r.starts_with("deny window")));
}

#[test]
fn windows_with_a_cluster_selector_apply_only_to_those_clusters() {
    let c = fleet();
    // Deny on prod now; an allow window for dev only, closed now.
    let a = app(
        "checkout",
        None,
        vec![
            win(SyncWindowKind::Deny, "0 14 * * 5", 10, Some("env=prod")),
            win(SyncWindowKind::Allow, "0 22 * * *", 2, Some("env=dev")),
        ],
    );
    let h = change_control_holds(&a, None, &[], &c.labels(), now());
    let reason = |c: &str| {
        h.first(c, false)
            .map(|h| h.reason.clone())
            .unwrap_or_default()
    };
    assert!(
        reason("eu-1").starts_with("deny window"),
        "{}",
        reason("eu-1")
    );
    assert!(reason("eu-2").starts_with("deny window"));
    assert!(reason("lab-1").starts_with("outside every allow window"));
    // At 23:00 the deny window is still open on prod, and dev's allow window is open.
    let h = change_control_holds(&a, None, &[], &c.labels(), utc("2026-12-04 23:00"));
    assert!(h.first("eu-1", false).is_some());
    assert!(h.first("lab-1", false).is_none());
}

#[test]
fn freezes_and_windows_together_both_show_and_the_earliest_end_wakes_the_rollout() {
    let c = fleet();
    let p = project(vec![win(SyncWindowKind::Deny, "0 14 * * 5", 10, None)]);
    let a = app("checkout", Some("shop"), vec![]);
    let freezes = [freeze("campaign", &["checkout"], &[], "", now() + 600)];
    let h = change_control_holds(&a, Some(&p), &freezes, &c.labels(), now());
    assert_eq!(h.on("eu-1", false).count(), 2);
    assert_eq!(h.next_end(false), Some(now() + 600));
}

/// What suspends self-heal on each of the fleet's clusters.
fn self_heal(h: &Holds, clusters: &Clusters) -> Vec<(String, Option<String>)> {
    let s = h.self_heal();
    clusters
        .0
        .iter()
        .map(|(c, _)| (c.clone(), s.on(c).map(str::to_owned)))
        .collect()
}

fn suspended_on(h: &Holds, clusters: &Clusters) -> Vec<String> {
    self_heal(h, clusters)
        .into_iter()
        .filter(|(_, s)| s.is_some())
        .map(|(c, _)| c)
        .collect()
}

#[test]
fn a_freeze_suspends_self_heal_only_when_created_so_and_only_where_it_holds() {
    let c = fleet();
    let until = now() + 600;
    let a = app("checkout", Some("shop"), vec![]);
    let heals = [freeze("campaign", &["checkout"], &[], "", until)];
    let h = change_control_holds(&a, None, &heals, &c.labels(), now());
    assert_eq!(held(&h, &c).0.len(), 3);
    assert!(h.self_heal().is_empty(), "a plain freeze keeps self-heal");
    assert_eq!(h.next_self_heal_change(), None);

    let mut f = freeze("campaign", &["checkout"], &[], "env=prod", until);
    f.self_heal = false;
    let h = change_control_holds(&a, None, std::slice::from_ref(&f), &c.labels(), now());
    assert_eq!(suspended_on(&h, &c), ["eu-1", "eu-2"]);
    assert_eq!(h.self_heal().on("eu-1"), Some("freeze campaign"));
    assert_eq!(
        h.next_self_heal_change(),
        Some(until),
        "decided again at its end"
    );
    let ended = change_control_holds(&a, None, std::slice::from_ref(&f), &c.labels(), until);
    assert!(ended.self_heal().is_empty(), "self-heal is back at its end");

    f.cluster_selector = None;
    let h = change_control_holds(&a, None, std::slice::from_ref(&f), &c.labels(), now());
    assert_eq!(suspended_on(&h, &c).len(), 3);
    let other = change_control_holds(
        &app("branding", None, vec![]),
        None,
        &[f],
        &c.labels(),
        now(),
    );
    assert!(
        other.self_heal().is_empty(),
        "an App it does not name heals"
    );
}

#[test]
fn an_open_deny_window_without_self_heal_suspends_it_until_an_edge() {
    let c = fleet();
    let p = project(vec![no_heal(win(
        SyncWindowKind::Deny,
        "0 14 * * 5",
        10,
        Some("env=prod"),
    ))]);
    let a = app("checkout", Some("shop"), vec![]);
    let h = change_control_holds(&a, Some(&p), &[], &c.labels(), now());
    assert_eq!(suspended_on(&h, &c), ["eu-1", "eu-2"]);
    assert_eq!(
        h.self_heal().on("eu-1"),
        Some("deny window '0 14 * * 5' (10h, UTC) of Project shop")
    );
    assert_eq!(h.next_self_heal_change(), Some(utc("2026-12-05 00:00")));

    // Closed: nothing held or suspended, but the App is decided again when it opens.
    let h = change_control_holds(&a, Some(&p), &[], &c.labels(), utc("2026-12-04 13:00"));
    assert!(h.self_heal().is_empty());
    assert_eq!(h.next_self_heal_change(), Some(utc("2026-12-04 14:00")));

    // The same window with self-heal: held, not suspended, and no extra wake.
    let p = project(vec![win(SyncWindowKind::Deny, "0 14 * * 5", 10, None)]);
    let h = change_control_holds(&a, Some(&p), &[], &c.labels(), now());
    assert_eq!(held(&h, &c).0.len(), 3);
    assert!(h.self_heal().is_empty());
    assert_eq!(h.next_self_heal_change(), None);
}

#[test]
fn a_deny_window_without_self_heal_suspends_it_even_when_another_outlasts_it() {
    let c = fleet();
    // Both open at 15:00: the one without self-heal closes at 16:00, the other at 00:00.
    let a = app(
        "checkout",
        None,
        vec![
            no_heal(win(SyncWindowKind::Deny, "0 14 * * 5", 2, None)),
            win(SyncWindowKind::Deny, "0 14 * * 5", 10, None),
        ],
    );
    let h = change_control_holds(&a, None, &[], &c.labels(), now());
    assert!(held(&h, &c).1.is_some_and(|r| r.contains("(10h, UTC)")));
    assert_eq!(
        h.self_heal().on("lab-1"),
        Some("deny window '0 14 * * 5' (2h, UTC) of App checkout")
    );
    assert_eq!(h.next_self_heal_change(), Some(utc("2026-12-04 16:00")));
    let later = change_control_holds(&a, None, &[], &c.labels(), utc("2026-12-04 16:00"));
    assert_eq!(held(&later, &c).0.len(), 3, "still held by the other");
    assert!(later.self_heal().is_empty(), "but self-healing again");
}

#[test]
fn outside_an_allow_window_without_self_heal_it_is_suspended_and_inside_it_heals() {
    let c = fleet();
    let a = app(
        "checkout",
        None,
        vec![no_heal(win(SyncWindowKind::Allow, "0 22 * * *", 2, None))],
    );
    let h = change_control_holds(&a, None, &[], &c.labels(), now());
    assert_eq!(suspended_on(&h, &c).len(), 3);
    assert_eq!(
        h.self_heal().on("eu-2"),
        Some("closed allow window '0 22 * * *' (2h, UTC) of App checkout")
    );
    assert_eq!(h.next_self_heal_change(), Some(utc("2026-12-04 22:00")));
    let inside = change_control_holds(&a, None, &[], &c.labels(), utc("2026-12-04 23:00"));
    assert!(inside.is_empty());
    assert!(inside.self_heal().is_empty());
    assert_eq!(
        inside.next_self_heal_change(),
        Some(utc("2026-12-05 00:00")),
        "decided again when it closes"
    );
}
