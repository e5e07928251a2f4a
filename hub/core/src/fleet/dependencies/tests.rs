use std::collections::BTreeMap;

use super::*;
use crate::model::HealthState;
use crate::resources::parse_document;

fn app(name: &str, depends_on: &[&str]) -> App {
    let deps: Vec<String> = depends_on.iter().map(|d| format!("{d:?}")).collect();
    let json = format!(
        r#"{{"apiVersion":"gitfleet.dev/v1","kind":"App","metadata":{{"name":"{name}"}},
        "spec":{{"repo":"shop","path":"apps/{name}","namespace":"{name}",
        "targets":[{{"clusters":["eu-1"]}}],"dependsOn":[{}]}}}}"#,
        deps.join(",")
    );
    match parse_document("test", &json) {
        Ok(crate::resources::Resource::App(a)) => a,
        other => panic!("not an App: {other:?}"),
    }
}

const AT: &str = "3f2a1c9d00000000000000000000000000000000";
const OLD: &str = "1a2b3c4d00000000000000000000000000000000";

fn ready() -> Observation {
    Observation {
        desired_revision: Some(AT.into()),
        applied_revision: Some(AT.into()),
        sync: SyncState::Synced,
        health: HealthState::Healthy,
        connected: true,
        ..Default::default()
    }
}

#[test]
fn apps_without_problems_have_none() {
    let apps = [
        app("ingress", &[]),
        app("shop", &["ingress"]),
        app("checkout", &["ingress", "shop"]),
    ];
    assert_eq!(problems(&apps), vec![]);
}

#[test]
fn an_unknown_app_is_named_with_its_field() {
    let apps = [app("shop", &["ingress", "ingres"]), app("ingress", &[])];
    let found = problems(&apps);
    assert_eq!(
        found,
        vec![DependencyProblem::Unknown {
            app: "shop".into(),
            index: 1,
            dependency: "ingres".into()
        }]
    );
    assert_eq!(
        found[0].to_string(),
        r#"app "shop": spec.dependsOn[1]: there is no App "ingres""#
    );
    assert!(found[0].involves("shop"));
    assert!(!found[0].involves("ingress"));
}

#[test]
fn a_cycle_is_found_once_whichever_app_it_is_entered_from() {
    let apps = [
        app("c", &["a"]),
        app("b", &["c"]),
        app("a", &["b"]),
        app("d", &["a"]),
    ];
    let found = problems(&apps);
    assert_eq!(
        found,
        vec![DependencyProblem::Cycle(vec![
            "a".into(),
            "b".into(),
            "c".into()
        ])]
    );
    assert!(found[0].to_string().contains(r#""a" → "b" → "c" → "a""#));
    assert!(found[0].involves("b"));
    assert!(!found[0].involves("d"));
}

#[test]
fn two_separate_cycles_are_both_found() {
    let apps = [
        app("a", &["b"]),
        app("b", &["a"]),
        app("x", &["y"]),
        app("y", &["z"]),
        app("z", &["x"]),
    ];
    let found = problems(&apps);
    assert_eq!(found.len(), 2, "{found:?}");
}

#[test]
fn a_diamond_is_not_a_cycle() {
    let apps = [
        app("base", &[]),
        app("left", &["base"]),
        app("right", &["base"]),
        app("top", &["left", "right"]),
    ];
    assert_eq!(problems(&apps), vec![]);
}

#[test]
fn dependents_are_deleted_before_what_they_depend_on() {
    let ingress = app("ingress", &[]);
    let shop = app("shop", &["ingress"]);
    let checkout = app("checkout", &["shop", "ingress"]);
    assert_eq!(
        deletion_order(&[&ingress, &shop, &checkout]),
        vec!["checkout", "shop", "ingress"]
    );
    assert_eq!(
        dependents([&ingress, &shop, &checkout], "ingress"),
        vec!["shop", "checkout"]
    );
}

#[test]
fn a_ready_dependency_holds_nothing() {
    assert_eq!(waits_for("ingress", None, Some(&ready())), None);
    let suspended = Observation {
        health: HealthState::Suspended,
        ..ready()
    };
    assert_eq!(waits_for("ingress", None, Some(&suspended)), None);
}

#[test]
fn each_way_of_not_being_ready_says_why() {
    let cases = [
        (None, "waits for ingress: nothing of it on this cluster yet"),
        (
            Some(Observation {
                desired_revision: None,
                ..ready()
            }),
            "waits for ingress: nothing of it on this cluster yet",
        ),
        (
            Some(Observation {
                applied_revision: None,
                ..ready()
            }),
            "waits for ingress: not yet applied at 3f2a1c9",
        ),
        (
            Some(Observation {
                applied_revision: Some(OLD.into()),
                ..ready()
            }),
            "waits for ingress: at 1a2b3c4, not yet at 3f2a1c9",
        ),
        (
            Some(Observation {
                health: HealthState::Progressing,
                ..ready()
            }),
            "waits for ingress: Progressing at 3f2a1c9",
        ),
        (
            Some(Observation {
                health: HealthState::Degraded,
                message: "Deployment ingress-nginx: 0/2 replicas available".into(),
                ..ready()
            }),
            "waits for ingress: Degraded at 3f2a1c9 (Deployment ingress-nginx: 0/2 replicas \
             available)",
        ),
        (
            Some(Observation {
                sync: SyncState::Failed,
                message: "apply failed".into(),
                ..ready()
            }),
            "waits for ingress: sync failed at 3f2a1c9 (apply failed)",
        ),
        (
            Some(Observation {
                sync: SyncState::Syncing,
                ..ready()
            }),
            "waits for ingress: Syncing at 3f2a1c9",
        ),
    ];
    for (o, want) in cases {
        assert_eq!(
            waits_for("ingress", None, o.as_ref()).as_deref(),
            Some(want)
        );
    }
}

#[test]
fn holds_are_per_cluster_and_per_dependency() {
    let shop = app("shop", &["ingress", "certs"]);
    let mut observed: BTreeMap<String, DependencyState> = BTreeMap::new();
    observed
        .entry("ingress".into())
        .or_default()
        .observed
        .insert("eu-1".into(), ready());
    observed
        .entry("ingress".into())
        .or_default()
        .observed
        .insert(
            "eu-2".into(),
            Observation {
                health: HealthState::Progressing,
                ..ready()
            },
        );
    observed
        .entry("certs".into())
        .or_default()
        .observed
        .insert("eu-1".into(), ready());
    observed
        .entry("certs".into())
        .or_default()
        .observed
        .insert("eu-2".into(), ready());
    let holds = holds(&shop, ["eu-1", "eu-2", "eu-3"], &observed);
    assert_eq!(holds.first("eu-1", false), None);
    let eu2: Vec<&str> = holds.on("eu-2", false).map(|h| h.reason.as_str()).collect();
    assert_eq!(eu2, vec!["waits for ingress: Progressing at 3f2a1c9"]);
    let eu3: Vec<&str> = holds.on("eu-3", false).map(|h| h.reason.as_str()).collect();
    assert_eq!(
        eu3,
        vec![
            "waits for ingress: nothing of it on this cluster yet",
            "waits for certs: nothing of it on this cluster yet"
        ]
    );
    // No override lifts a dependency.
    assert!(holds.first("eu-2", true).is_some());
    assert!(!holds.any_overridable());
    assert_eq!(holds.next_end(false), None);
}

#[test]
fn an_app_without_dependencies_is_never_held() {
    let observed = BTreeMap::new();
    assert!(holds(&app("ingress", &[]), ["eu-1"], &observed).is_empty());
}

#[test]
fn a_dependency_whose_rollout_has_not_reached_the_cluster_is_not_ready() {
    // Told the old revision, healthy at it; its own rollout moves to AT.
    let told_old = Observation {
        desired_revision: Some(OLD.into()),
        applied_revision: Some(OLD.into()),
        ..ready()
    };
    assert_eq!(waits_for("ingress", Some(OLD), Some(&told_old)), None);
    assert_eq!(
        waits_for("ingress", Some(AT), Some(&told_old)).as_deref(),
        Some("waits for ingress: at 1a2b3c4, not yet at 3f2a1c9")
    );
}

#[test]
fn a_dependency_is_meant_to_run_where_git_points_unless_rolled_back_from_there() {
    let rev = |c: &str| AppRevision {
        commit: c.into(),
        git_ref: "main".into(),
        trace: BTreeMap::new(),
        fetched_at_unix_ms: 0,
        chart: None,
    };
    let mut rollout = RolloutState::first(rev(OLD), 0);
    assert_eq!(wanted_revision(Some(&rev(AT)), Some(&rollout)), Some(AT));
    assert_eq!(wanted_revision(None, Some(&rollout)), Some(OLD));
    assert_eq!(wanted_revision(Some(&rev(AT)), None), Some(AT));
    assert_eq!(wanted_revision(None, None), None);
    rollout.rejected = Some(AT.into());
    assert_eq!(wanted_revision(Some(&rev(AT)), Some(&rollout)), Some(OLD));
}
