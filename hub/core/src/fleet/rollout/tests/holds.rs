//! Freezes, windows and dependencies holding a rollout's Targets.

use super::*;
use crate::fleet::hold::{Hold, HoldKind, Holds};

fn freeze(until: i64) -> Hold {
    Hold {
        kind: HoldKind::Freeze,
        reason: format!("freeze campaign until {until}: holiday sale"),
        until: Some(until),
        suspends_self_heal: None,
    }
}

fn waits_for_ingress() -> Hold {
    Hold {
        kind: HoldKind::Dependency,
        reason: "waits for ingress: Progressing at 3f2a1c9".into(),
        until: None,
        suspends_self_heal: None,
    }
}

fn frozen_everywhere(until: i64) -> Holds {
    let mut h = Holds::none();
    h.hold_everywhere(freeze(until));
    h
}

#[test]
fn a_freeze_holds_a_new_revision_on_every_cluster_and_says_why_until_it_ends() {
    let (a, b) = (rev('a'), rev('b'));
    let mut sim = Sim::deployed(three_waves(), &a);
    let ends = T0 + 3600;
    sim.holds = frozen_everywhere(ends);
    sim.new_revision(&b);
    let d = sim.settle();
    assert!(
        d.changes.is_empty(),
        "nothing is dispatched: {:?}",
        d.changes
    );
    assert_eq!(sim.revisions(), "aaaaaaaa");
    assert_eq!(d.status.summary, Summary::Held);
    assert!(
        d.status.reason.contains("freeze campaign") && d.status.reason.contains("holiday sale"),
        "{}",
        d.status.reason
    );
    assert_eq!(d.status.next_check_at, Some(ends + 1));
    let canary = &d.status.waves[0].targets[0];
    assert_eq!(canary.state, TargetState::Held);
    assert!(
        canary.detail.contains("freeze campaign"),
        "{}",
        canary.detail
    );
    let held: Vec<_> = sim
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Held)
        .collect();
    assert_eq!(held.len(), 1, "announced once: {:?}", sim.events);

    // Long past the progress deadline, still held, never paused for it.
    sim.advance(7200);
    let d = sim.settle();
    assert!(d.changes.is_empty());
    assert!(!sim.state.is_paused(), "{:?}", sim.state.phase);

    // The freeze ends: the rollout starts by itself and completes.
    sim.holds = Holds::none();
    let d = sim.settle();
    assert_eq!(sim.revisions(), "bbbbbbbb");
    assert_eq!(d.status.summary, Summary::Complete);
    assert!(
        sim.events.iter().any(|e| e.kind == EventKind::Released),
        "{:?}",
        sim.events
    );
}

#[test]
fn a_freeze_of_some_clusters_lets_the_others_update_and_holds_its_wave() {
    let (a, b) = (rev('a'), rev('b'));
    let mut sim = Sim::deployed(three_waves(), &a);
    sim.holds.hold("eu-2", freeze(T0 + 60));
    sim.new_revision(&b);
    let d = sim.settle();
    // The canaries and eu's other clusters update; eu-2 keeps a, and the rest wave waits.
    assert_eq!(sim.revisions(), "bbbabbaa");
    assert_eq!(d.status.summary, Summary::Held);
    assert!(d.status.reason.contains("eu-2"), "{}", d.status.reason);
}

#[test]
fn an_override_lifts_freezes_but_a_dependency_still_holds() {
    let (a, b) = (rev('a'), rev('b'));
    let mut sim = Sim::deployed(three_waves(), &a);
    sim.holds = frozen_everywhere(T0 + 3600);
    sim.holds.hold("us-2", waits_for_ingress());
    sim.new_revision(&b);
    sim.settle();
    assert_eq!(sim.revisions(), "aaaaaaaa");
    sim.command(Command::OverrideHolds {
        by: "alice".into(),
        reason: "checkout outage fix".into(),
    })
    .expect("an incomplete rollout can be overridden");
    assert!(
        sim.events
            .iter()
            .any(|e| e.kind == EventKind::Overridden && e.message.contains("checkout outage fix"))
    );
    let d = sim.settle();
    assert_eq!(sim.revisions(), "bbbbbbba");
    assert!(
        d.status.reason.contains("waits for ingress"),
        "{}",
        d.status.reason
    );

    // The override belongs to that rollout: the next one is held again.
    sim.holds = frozen_everywhere(T0 + 3600);
    sim.new_revision(&rev('c'));
    sim.settle();
    assert_eq!(sim.revisions(), "bbbbbbba");
}

#[test]
fn an_override_of_a_complete_rollout_is_refused() {
    let a = rev('a');
    let mut sim = Sim::deployed(three_waves(), &a);
    let e = sim
        .command(Command::OverrideHolds {
            by: "alice".into(),
            reason: "x".into(),
        })
        .unwrap_err();
    assert!(matches!(e, CommandError::NotInProgress { .. }), "{e}");
}

#[test]
fn a_rollback_is_never_held() {
    let (a, b) = (rev('a'), rev('b'));
    let mut sim = Sim::deployed(three_waves(), &a);
    sim.new_revision(&b);
    sim.settle();
    assert_eq!(sim.revisions(), "bbbbbbbb");
    sim.holds = frozen_everywhere(T0 + 3600);
    sim.command(Command::Rollback {
        to: None,
        by: "alice".into(),
    })
    .expect("rollback");
    sim.settle();
    assert_eq!(sim.revisions(), "aaaaaaaa");
}

#[test]
fn a_cluster_that_joins_during_a_freeze_gets_nothing_until_it_ends() {
    let a = rev('a');
    let mut sim = Sim::deployed(plan(vec![wave("all", &["eu-1"])]), &a);
    sim.plan = plan(vec![wave("all", &["eu-1", "eu-2"])]);
    sim.obs.insert(
        "eu-2".into(),
        Observation {
            connected: true,
            last_contact: Some(T0),
            ..Default::default()
        },
    );
    sim.holds.hold("eu-2", freeze(T0 + 60));
    let d = sim.settle();
    assert_eq!(sim.revision_of("eu-2"), None);
    assert!(
        d.status.reason.contains("freeze campaign"),
        "{}",
        d.status.reason
    );
    assert_eq!(d.status.next_check_at, Some(T0 + 61));
    sim.holds = Holds::none();
    sim.settle();
    assert_eq!(sim.revision_of("eu-2"), Some('a'));
}

#[test]
fn a_first_deployment_waits_for_its_dependency_on_each_cluster() {
    let a = rev('a');
    let mut sim = Sim::new(plan(vec![wave("all", &["eu-1", "eu-2"])]), &a);
    sim.holds.hold("eu-1", waits_for_ingress());
    let d = sim.settle();
    assert_eq!(sim.revision_of("eu-1"), None);
    assert_eq!(sim.revision_of("eu-2"), Some('a'));
    let t = &d.status.waves[0].targets[0];
    assert_eq!((t.cluster.as_str(), t.state), ("eu-1", TargetState::Held));
    assert_eq!(t.detail, "waits for ingress: Progressing at 3f2a1c9");
    assert_eq!(
        d.status.next_check_at, None,
        "woken by the dependency's reports"
    );
    sim.holds = Holds::none();
    let d = sim.settle();
    assert_eq!(sim.revision_of("eu-1"), Some('a'));
    assert_eq!(d.status.summary, Summary::Complete);
}
