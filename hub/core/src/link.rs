//! What the hub sends a spoke about its desired state: pure decisions over generations.

use crate::model::{ClusterDesired, VersionedTarget};

/// Desired state to send: a snapshot (replace everything) or a delta on `base_generation`.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredUpdate {
    pub generation: u64,
    pub base_generation: u64,
    pub snapshot: bool,
    pub upserts: Vec<VersionedTarget>,
    pub removals: Vec<String>,
}

/// What to send a spoke that just said hello, holding `spoke_generation` of `spoke_epoch`.
/// `held` is the hub's record of that generation, when it still keeps it. `None` when the spoke
/// already holds the current state.
pub fn on_hello(
    hub_epoch: &str,
    spoke_epoch: &str,
    spoke_generation: u64,
    current: &ClusterDesired,
    held: Option<&ClusterDesired>,
) -> Option<DesiredUpdate> {
    let same_epoch = spoke_epoch == hub_epoch && spoke_generation != 0;
    if same_epoch && spoke_generation == current.generation {
        return None;
    }
    match held {
        Some(h)
            if same_epoch
                && h.generation == spoke_generation
                && h.generation < current.generation =>
        {
            delta(h, current)
        }
        // A generation of another hub, from the future, or too old to be kept: start over.
        _ => Some(snapshot(current)),
    }
}

pub fn snapshot(current: &ClusterDesired) -> DesiredUpdate {
    DesiredUpdate {
        generation: current.generation,
        base_generation: 0,
        snapshot: true,
        upserts: current.targets.values().cloned().collect(),
        removals: Vec::new(),
    }
}

/// What turns `sent` (what the spoke holds) into `current`; `None` when nothing changed.
pub fn delta(sent: &ClusterDesired, current: &ClusterDesired) -> Option<DesiredUpdate> {
    if sent.generation == current.generation {
        return None;
    }
    let upserts: Vec<VersionedTarget> = current
        .targets
        .iter()
        .filter(|(id, t)| sent.targets.get(*id) != Some(*t))
        .map(|(_, t)| t.clone())
        .collect();
    let removals: Vec<String> = sent
        .targets
        .keys()
        .filter(|id| !current.targets.contains_key(*id))
        .cloned()
        .collect();
    Some(DesiredUpdate {
        generation: current.generation,
        base_generation: sent.generation,
        snapshot: false,
        upserts,
        removals,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::fleet::DesiredTarget;
    use crate::resources::{RenderSpec, SyncPolicySpec};

    fn target(app: &str, commit: &str) -> DesiredTarget {
        DesiredTarget {
            app: app.into(),
            repo: "r".into(),
            repo_url: "file:///r".into(),
            commit: commit.into(),
            git_ref: "refs/heads/main".into(),
            path: app.into(),
            extra_paths: vec![],
            namespace: "default".into(),
            render: RenderSpec::default(),
            sync_policy: SyncPolicySpec::default(),
            sync_request: 0,
            project: None,
            self_heal_suspended: None,
            health_rules: Vec::new(),
            trusted_keys: vec![],
            chart: None,
        }
    }

    fn desired(generation: u64, targets: &[(&str, &str, u64)]) -> ClusterDesired {
        ClusterDesired {
            generation,
            targets: targets
                .iter()
                .map(|(app, commit, g)| {
                    (
                        (*app).to_owned(),
                        VersionedTarget {
                            spec_generation: *g,
                            target: target(app, commit),
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn a_spoke_in_step_gets_nothing() {
        let cur = desired(3, &[("a", "c1", 2)]);
        assert_eq!(on_hello("E", "E", 3, &cur, None), None);
    }

    #[test]
    fn another_epoch_a_new_spoke_or_an_old_generation_get_a_snapshot() {
        let cur = desired(3, &[("a", "c1", 2), ("b", "c1", 3)]);
        for (epoch, generation) in [("OTHER", 3), ("", 0), ("E", 2), ("E", 9)] {
            let u = on_hello("E", epoch, generation, &cur, None).expect("snapshot");
            assert!(u.snapshot);
            assert_eq!(u.generation, 3);
            assert_eq!(u.upserts.len(), 2);
        }
    }

    #[test]
    fn an_empty_first_state_is_still_sent() {
        let cur = desired(1, &[]);
        let u = on_hello("E", "", 0, &cur, None).expect("snapshot");
        assert!(u.snapshot && u.upserts.is_empty() && u.generation == 1);
    }

    #[test]
    fn a_kept_generation_of_the_same_epoch_gets_a_delta() {
        let held = desired(2, &[("a", "c1", 2), ("b", "c1", 1)]);
        let cur = desired(3, &[("a", "c2", 3), ("b", "c1", 1)]);
        let u = on_hello("E", "E", 2, &cur, Some(&held)).expect("delta");
        assert!(!u.snapshot);
        assert_eq!((u.base_generation, u.generation), (2, 3));
        assert_eq!(u.upserts.len(), 1);
        // The same generation from another epoch is another state altogether.
        assert!(
            on_hello("E", "OTHER", 2, &cur, Some(&held))
                .unwrap()
                .snapshot
        );
        // A record that does not match what the spoke says it holds is not trusted.
        assert!(on_hello("E", "E", 1, &cur, Some(&held)).unwrap().snapshot);
    }

    #[test]
    fn a_delta_carries_changes_and_removals_only() {
        let sent = desired(3, &[("a", "c1", 2), ("b", "c1", 3), ("gone", "c1", 1)]);
        let cur = desired(4, &[("a", "c1", 2), ("b", "c2", 4), ("new", "c2", 4)]);
        let u = delta(&sent, &cur).expect("delta");
        assert!(!u.snapshot);
        assert_eq!((u.base_generation, u.generation), (3, 4));
        let ids: Vec<_> = u.upserts.iter().map(|t| t.target.app.as_str()).collect();
        assert_eq!(ids, ["b", "new"]);
        assert_eq!(u.removals, ["gone"]);
        assert_eq!(delta(&cur, &cur), None);
    }
}
