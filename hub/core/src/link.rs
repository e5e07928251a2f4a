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

/// What to send a spoke that just said hello, holding `spoke_generation` of `spoke_epoch`:
/// `None` when it already holds the current state, a delta when its generation is of this
/// epoch and not older than the removals `current` remembers, a snapshot otherwise.
pub fn on_hello(
    hub_epoch: &str,
    spoke_epoch: &str,
    spoke_generation: u64,
    current: &ClusterDesired,
) -> Option<DesiredUpdate> {
    let same_epoch = spoke_epoch == hub_epoch && spoke_generation != 0;
    if same_epoch && spoke_generation == current.generation {
        return None;
    }
    if same_epoch
        && spoke_generation < current.generation
        && spoke_generation >= current.removals_since
    {
        return Some(delta_since(spoke_generation, current));
    }
    // A generation of another hub, from the future, or older than the removals remembered:
    // start over.
    Some(snapshot(current))
}

/// What turns generation `base` of this epoch into `current`: the Targets changed after it
/// and the removals after it (`base` at least `current.removals_since`).
pub fn delta_since(base: u64, current: &ClusterDesired) -> DesiredUpdate {
    DesiredUpdate {
        generation: current.generation,
        base_generation: base,
        snapshot: false,
        upserts: current
            .targets
            .values()
            .filter(|t| t.spec_generation > base)
            .cloned()
            .collect(),
        removals: current
            .removed
            .iter()
            .filter(|(_, at)| **at > base)
            .map(|(app, _)| app.clone())
            .collect(),
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
/// Both are generations of one epoch, where a Target's `spec_generation` names its value: from
/// a generation `current` still has the removals since, the delta is read off `current`
/// alone ([`delta_since`]); else each Target is compared by its `spec_generation`.
pub fn delta(sent: &ClusterDesired, current: &ClusterDesired) -> Option<DesiredUpdate> {
    if sent.generation == current.generation {
        return None;
    }
    if sent.generation < current.generation && sent.generation >= current.removals_since {
        return Some(delta_since(sent.generation, current));
    }
    let upserts: Vec<VersionedTarget> = current
        .targets
        .iter()
        .filter(|(id, t)| {
            sent.targets
                .get(*id)
                .is_none_or(|s| s.spec_generation != t.spec_generation)
        })
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
    use std::sync::Arc;

    use super::*;
    use crate::fleet::DesiredTarget;

    fn target(app: &str, commit: &str) -> DesiredTarget {
        DesiredTarget::for_tests(app, commit)
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
                            target: Arc::new(target(app, commit)),
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
            ..ClusterDesired::default()
        }
    }

    #[test]
    fn a_spoke_in_step_gets_nothing() {
        let cur = desired(3, &[("a", "c1", 2)]);
        assert_eq!(on_hello("E", "E", 3, &cur), None);
    }

    #[test]
    fn another_epoch_a_new_spoke_or_a_future_generation_get_a_snapshot() {
        let cur = desired(3, &[("a", "c1", 2), ("b", "c1", 3)]);
        for (epoch, generation) in [("OTHER", 3), ("OTHER", 2), ("", 0), ("E", 9)] {
            let u = on_hello("E", epoch, generation, &cur).expect("snapshot");
            assert!(u.snapshot);
            assert_eq!(u.generation, 3);
            assert_eq!(u.upserts.len(), 2);
        }
    }

    #[test]
    fn an_empty_first_state_is_still_sent() {
        let cur = desired(1, &[]);
        let u = on_hello("E", "", 0, &cur).expect("snapshot");
        assert!(u.snapshot && u.upserts.is_empty() && u.generation == 1);
    }

    #[test]
    fn an_earlier_generation_of_the_same_epoch_gets_what_changed_since() {
        let cur = desired(5, &[("a", "c3", 5), ("b", "c2", 3), ("c", "c1", 1)]);
        let u = on_hello("E", "E", 2, &cur).expect("delta");
        assert!(!u.snapshot);
        assert_eq!((u.base_generation, u.generation), (2, 5));
        let apps: Vec<_> = u.upserts.iter().map(|t| t.target.app.as_str()).collect();
        assert_eq!(apps, ["a", "b"]);
        let u = on_hello("E", "E", 4, &cur).expect("delta");
        let apps: Vec<_> = u.upserts.iter().map(|t| t.target.app.as_str()).collect();
        assert_eq!(apps, ["a"]);
    }

    #[test]
    fn removals_are_remembered_and_a_generation_older_than_them_gets_a_snapshot() {
        let g1 = desired(1, &[("a", "c1", 1), ("gone", "c1", 1)]);
        let mut a = BTreeMap::new();
        a.insert("a".to_owned(), Arc::new(target("a", "c2")));
        let g2 = g1.next(a.clone());
        assert_eq!(g2.removed.get("gone"), Some(&2));
        let u = on_hello("E", "E", 1, &g2).expect("delta");
        assert!(!u.snapshot);
        assert_eq!(u.removals, ["gone"]);
        assert_eq!(u.upserts.len(), 1);
        // A spoke that already saw the removal is not told again.
        let mut g = g2.next(a.clone());
        assert_eq!(g.generation, 3);
        assert!(on_hello("E", "E", 2, &g).unwrap().removals.is_empty());
        // Tombstones go after REMOVALS_KEPT generations; a spoke from before then starts over.
        for _ in 0..crate::model::REMOVALS_KEPT {
            g = g.next(a.clone());
        }
        assert!(g.removed.is_empty());
        assert_eq!(g.removals_since, 2);
        assert!(on_hello("E", "E", 1, &g).unwrap().snapshot);
        assert!(!on_hello("E", "E", 2, &g).unwrap().snapshot);
        // An App back again is an upsert, no longer a removal.
        let g2b = g2.next(
            g1.targets
                .iter()
                .map(|(k, v)| (k.clone(), Arc::clone(&v.target)))
                .collect(),
        );
        assert!(g2b.removed.is_empty());
        assert_eq!(g2b.targets["gone"].spec_generation, 3);
        let u = on_hello("E", "E", 2, &g2b).unwrap();
        assert!(u.removals.is_empty());
        let apps: Vec<_> = u.upserts.iter().map(|t| t.target.app.as_str()).collect();
        assert_eq!(apps, ["a", "gone"]);
    }

    #[test]
    fn the_next_generation_keeps_unchanged_targets_spec_generation() {
        let g1 = desired(1, &[("a", "c1", 1), ("b", "c1", 1)]);
        let g2 = g1.next(
            [("a", "c1"), ("b", "c2")]
                .iter()
                .map(|(app, c)| ((*app).to_owned(), Arc::new(target(app, c))))
                .collect(),
        );
        assert_eq!(g2.generation, 2);
        assert_eq!(g2.targets["a"].spec_generation, 1);
        assert_eq!(g2.targets["b"].spec_generation, 2);
        let u = on_hello("E", "E", 1, &g2).unwrap();
        let apps: Vec<_> = u.upserts.iter().map(|t| t.target.app.as_str()).collect();
        assert_eq!(apps, ["b"]);
    }

    #[test]
    fn a_delta_carries_changes_and_removals_only() {
        let sent = desired(3, &[("a", "c1", 2), ("b", "c1", 3), ("gone", "c1", 1)]);
        let mut cur = desired(4, &[("a", "c1", 2), ("b", "c2", 4), ("new", "c2", 4)]);
        cur.removed.insert("gone".into(), 4);
        // Read off the current state (its tombstones), or, from a generation older than the
        // removals it keeps, by comparing the two: the same delta.
        let mut compared = cur.clone();
        compared.removed.clear();
        compared.removals_since = 4;
        for cur in [cur.clone(), compared] {
            let u = delta(&sent, &cur).expect("delta");
            assert!(!u.snapshot);
            assert_eq!((u.base_generation, u.generation), (3, 4));
            let ids: Vec<_> = u.upserts.iter().map(|t| t.target.app.as_str()).collect();
            assert_eq!(ids, ["b", "new"]);
            assert_eq!(u.removals, ["gone"]);
        }
        assert_eq!(delta(&cur, &cur), None);
    }
}
