#![allow(clippy::unwrap_used)]

use super::*;

fn target(app: &str, cluster: &str, message: &str) -> pb::TargetStatus {
    pb::TargetStatus {
        app: app.into(),
        cluster: cluster.into(),
        message: message.into(),
        ..Default::default()
    }
}

fn query(app: Option<&str>, cluster: Option<&str>) -> Query {
    Query {
        app: app.map(str::to_owned),
        cluster: cluster.map(str::to_owned),
    }
}

fn keys(removed: &[pb::TargetKey]) -> Vec<(String, String)> {
    removed
        .iter()
        .map(|k| (k.app.clone(), k.cluster.clone()))
        .collect()
}

fn known_with(targets: &[(&str, &str)]) -> Known {
    let mut known = Known::default();
    let fresh = targets.iter().map(|(a, c)| target(a, c, "")).collect();
    let (sent, removed) = known.update(&query(None, None), fresh);
    assert_eq!(sent.len(), targets.len());
    assert!(removed.is_empty());
    known
}

#[test]
fn only_what_differs_from_what_was_sent_is_sent_again() {
    let mut known = known_with(&[("web", "eu-1"), ("web", "us-1")]);
    let (sent, removed) = known.update(
        &query(Some("web"), Some("eu-1")),
        vec![target("web", "eu-1", "")],
    );
    assert!(sent.is_empty() && removed.is_empty());
    let (sent, _) = known.update(
        &query(Some("web"), Some("eu-1")),
        vec![target("web", "eu-1", "degraded")],
    );
    assert_eq!(sent, vec![target("web", "eu-1", "degraded")]);
}

#[test]
fn a_target_gone_from_what_a_query_covers_is_removed_and_only_that() {
    let mut known = known_with(&[("api", "eu-1"), ("web", "eu-1"), ("web", "us-1")]);
    // The cluster eu-1 now has only api: web on eu-1 went away; web on us-1 is not covered.
    let (sent, removed) = known.update(&query(None, Some("eu-1")), vec![target("api", "eu-1", "")]);
    assert!(sent.is_empty());
    assert_eq!(keys(&removed), vec![("web".into(), "eu-1".into())]);
    // The App web now has no Targets at all.
    let (_, removed) = known.update(&query(Some("web"), None), vec![]);
    assert_eq!(keys(&removed), vec![("web".into(), "us-1".into())]);
    // Removed once: reading it again removes nothing more.
    let (_, removed) = known.update(&query(Some("web"), None), vec![]);
    assert!(removed.is_empty());
    // One Target gone.
    let (_, removed) = known.update(&query(Some("api"), Some("eu-1")), vec![]);
    assert_eq!(keys(&removed), vec![("api".into(), "eu-1".into())]);
    assert!(known.sent.is_empty() && known.by_cluster.is_empty());
}

#[test]
fn a_change_is_read_again_only_within_what_the_stream_watches() {
    let web = Filter {
        app: Some("web".into()),
        cluster: None,
    };
    let t = |a: &str, c: &str| FleetChange::Target {
        app: a.into(),
        cluster: c.into(),
    };
    assert_eq!(
        web.reread(&t("web", "eu-1")),
        Some(query(Some("web"), Some("eu-1")))
    );
    assert_eq!(web.reread(&t("api", "eu-1")), None);
    assert_eq!(
        web.reread(&FleetChange::Cluster("eu-1".into())),
        Some(query(Some("web"), Some("eu-1")))
    );
    assert_eq!(web.reread(&FleetChange::App("api".into())), None);
    assert_eq!(
        web.reread(&FleetChange::App("web".into())),
        Some(query(Some("web"), None))
    );
    let eu = Filter {
        app: None,
        cluster: Some("eu-1".into()),
    };
    assert_eq!(eu.reread(&t("web", "us-1")), None);
    assert_eq!(eu.reread(&FleetChange::Cluster("us-1".into())), None);
    assert_eq!(
        eu.reread(&FleetChange::App("web".into())),
        Some(query(Some("web"), Some("eu-1")))
    );
    let all = Filter::default();
    assert_eq!(
        all.reread(&FleetChange::Cluster("us-1".into())),
        Some(query(None, Some("us-1")))
    );
}

#[test]
fn events_are_filtered_as_list_events_filters_them() {
    let e = |app: &str, cluster: &str| EventRecord {
        app: app.into(),
        cluster: cluster.into(),
        ..Default::default()
    };
    let f = Filter {
        app: Some("web".into()),
        cluster: Some("eu-1".into()),
    };
    assert!(f.wants_event(&e("web", "eu-1")));
    assert!(!f.wants_event(&e("web", "")));
    assert!(!f.wants_event(&e("api", "eu-1")));
    assert!(Filter::default().wants_event(&e("api", "")));
}

#[test]
fn no_event_at_or_below_the_resume_point_and_none_twice() {
    let mut d = Delivered::new(10);
    assert!(!d.admit(9));
    assert!(!d.admit(10));
    assert!(d.admit(11));
    assert!(!d.admit(11));
    assert!(d.admit(13));
    // Another replica's event that came late, below the highest sent: sent once.
    assert!(d.admit(12));
    assert!(!d.admit(12));
    assert_eq!(d.highest, 13);
}

#[test]
fn delivered_remembers_a_bounded_window() {
    let mut d = Delivered::new(0);
    for id in 1..=(DELIVERED_WINDOW as u64 + 10) {
        assert!(d.admit(id));
    }
    assert_eq!(d.recent.len(), DELIVERED_WINDOW);
    assert_eq!(d.order.len(), DELIVERED_WINDOW);
}

#[test]
fn a_snapshot_is_cut_into_messages_the_last_saying_it_is_complete() {
    let empty = status_messages(vec![], vec![], true);
    assert_eq!(empty.len(), 1);
    assert!(empty[0].snapshot && empty[0].snapshot_complete);

    let big = "x".repeat(MESSAGE_BYTES / 3);
    let targets: Vec<_> = (0..7)
        .map(|i| target("web", &format!("c{i}"), &big))
        .collect();
    let messages = status_messages(targets, vec![], true);
    assert!(messages.len() > 1);
    assert!(
        messages
            .iter()
            .all(|m| m.snapshot && m.encoded_len() <= MESSAGE_BYTES + 64)
    );
    assert_eq!(messages.iter().filter(|m| m.snapshot_complete).count(), 1);
    assert!(messages.last().unwrap().snapshot_complete);
    assert_eq!(messages.iter().map(|m| m.targets.len()).sum::<usize>(), 7);

    let change = status_messages(vec![target("web", "c1", "")], vec![], false);
    assert_eq!(change.len(), 1);
    assert!(!change[0].snapshot && !change[0].snapshot_complete);
}
