//! Holds, pure: why a cluster's Target may not be given a new revision now.
//!
//! Change control decides them (a freeze, a sync window, an App waiting for another: see
//! `docs/change-control.md`); the rollout ([`super::rollout::decide_held`]) obeys them. A hold
//! stops a Target from *changing*: what it runs keeps running, rollbacks are never held, and a
//! held Target does not count against the progress deadline. What it runs keeps self-healing
//! too, unless the freeze or window that holds it says otherwise ([`Holds::self_heal`]).

use std::collections::{BTreeMap, HashMap};

/// What holds a Target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HoldKind {
    /// An ad hoc freeze (`gitfleet freeze create`).
    Freeze,
    /// A recurring `syncWindows` entry of the App or its Project (a deny window open, or allow
    /// windows all closed).
    Window,
    /// `spec.dependsOn`: an App this one depends on is not healthy on the cluster at its own
    /// desired revision.
    Dependency,
}

impl HoldKind {
    /// Whether `gitfleet rollout start --override-freeze` lifts it. A dependency is a fact about
    /// the cluster, not a rule someone set: no override makes the dependency healthy.
    pub fn overridable(self) -> bool {
        matches!(self, HoldKind::Freeze | HoldKind::Window)
    }
}

/// One hold on a Target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub kind: HoldKind,
    /// For a person, complete on its own: "freeze campaign until 2026-12-24 00:00 UTC: holiday
    /// sale", "waits for ingress: Progressing at 3f2a1c9".
    pub reason: String,
    /// When the hold ends by itself, if it does (a freeze's end, a window's edge): the rollout
    /// is decided again then. `None`: until something else changes (a report, a deletion).
    pub until: Option<i64>,
    /// `Some(what)` when this hold also suspends the Target's self-heal (a freeze created with
    /// `--no-self-heal`, a window with `selfHeal: false`), `what` naming it briefly: `freeze
    /// campaign`. Never for a dependency.
    pub suspends_self_heal: Option<String>,
}

/// The holds on one App's Targets right now: some on every cluster, some on single clusters.
/// Empty for most Apps most of the time, and built without a per-cluster entry for what holds
/// every cluster (a freeze of the whole fleet on 10,000 clusters is one entry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holds {
    everywhere: Vec<Hold>,
    by_cluster: HashMap<String, Vec<Hold>>,
    /// The earliest time at which what suspends self-heal may change by itself (a freeze that
    /// suspends it ends, an edge of a window that does): the App is decided again then, held
    /// or not.
    self_heal_changes_at: Option<i64>,
}

/// Where an App's Targets do not self-heal now, and why: what the holds that suspend it (see
/// [`Hold::suspends_self_heal`]) come to. The desired state published for those Targets has
/// `syncPolicy.selfHeal` false. Overrides do not lift it: `--override-freeze` lets a revision
/// through, it does not make the freeze's rule about the running objects go away.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelfHealHolds {
    everywhere: Option<String>,
    by_cluster: BTreeMap<String, String>,
}

impl SelfHealHolds {
    /// Self-heal suspended nowhere.
    pub fn none() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.everywhere.is_none() && self.by_cluster.is_empty()
    }

    /// What suspends self-heal on `cluster`, if anything does.
    pub fn on(&self, cluster: &str) -> Option<&str> {
        self.everywhere
            .as_deref()
            .or_else(|| self.by_cluster.get(cluster).map(String::as_str))
    }
}

impl Holds {
    /// Nothing held.
    pub fn none() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.everywhere.is_empty() && self.by_cluster.is_empty()
    }

    /// Holds every Target of the App.
    pub fn hold_everywhere(&mut self, hold: Hold) {
        self.everywhere.push(hold);
    }

    /// Holds the App's Target on `cluster`.
    pub fn hold(&mut self, cluster: &str, hold: Hold) {
        match self.by_cluster.get_mut(cluster) {
            Some(holds) => holds.push(hold),
            None => {
                self.by_cluster.insert(cluster.to_owned(), vec![hold]);
            }
        }
    }

    /// Adds every hold of `other`.
    pub fn extend(&mut self, other: Holds) {
        self.everywhere.extend(other.everywhere);
        if let Some(at) = other.self_heal_changes_at {
            self.self_heal_changes_at(at);
        }
        for (cluster, holds) in other.by_cluster {
            self.by_cluster.entry(cluster).or_default().extend(holds);
        }
    }

    /// The holds on `cluster`'s Target that apply, the overridable ones left out when
    /// `overridden`; the first one is the one to show.
    pub fn on<'a>(&'a self, cluster: &str, overridden: bool) -> impl Iterator<Item = &'a Hold> {
        self.everywhere
            .iter()
            .chain(self.by_cluster.get(cluster).into_iter().flatten())
            .filter(move |h| !(overridden && h.kind.overridable()))
    }

    /// The first hold that applies to `cluster`'s Target.
    pub fn first<'a>(&'a self, cluster: &str, overridden: bool) -> Option<&'a Hold> {
        self.on(cluster, overridden).next()
    }

    /// Whether any overridable hold (a freeze, a window) holds any Target: what an override
    /// lifts.
    pub fn any_overridable(&self) -> bool {
        self.everywhere
            .iter()
            .chain(self.by_cluster.values().flatten())
            .any(|h| h.kind.overridable())
    }

    /// Notes that what suspends self-heal may change by itself at `at` (the earliest such time
    /// is kept).
    pub fn self_heal_changes_at(&mut self, at: i64) {
        self.self_heal_changes_at = Some(self.self_heal_changes_at.map_or(at, |t| t.min(at)));
    }

    /// When what suspends self-heal may next change by itself: the App must be decided again
    /// then, whether a hold applies or not (a window with `selfHeal: false` opening).
    pub fn next_self_heal_change(&self) -> Option<i64> {
        self.self_heal_changes_at
    }

    /// Where self-heal is suspended, and by what (the first hold that suspends it on each
    /// cluster). Overrides do not lift it; dependencies never suspend it.
    pub fn self_heal(&self) -> SelfHealHolds {
        let suspends = |h: &Hold| h.suspends_self_heal.clone();
        let everywhere = self.everywhere.iter().find_map(suspends);
        let by_cluster = if everywhere.is_some() {
            BTreeMap::new()
        } else {
            self.by_cluster
                .iter()
                .filter_map(|(c, holds)| Some((c.clone(), holds.iter().find_map(suspends)?)))
                .collect()
        };
        SelfHealHolds {
            everywhere,
            by_cluster,
        }
    }

    /// The earliest time a hold ends by itself, among those that apply.
    pub fn next_end(&self, overridden: bool) -> Option<i64> {
        self.everywhere
            .iter()
            .chain(self.by_cluster.values().flatten())
            .filter(|h| !(overridden && h.kind.overridable()))
            .filter_map(|h| h.until)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(kind: HoldKind, reason: &str, until: Option<i64>) -> Hold {
        Hold {
            kind,
            reason: reason.into(),
            until,
            suspends_self_heal: None,
        }
    }

    #[test]
    fn a_hold_everywhere_holds_every_cluster_and_single_holds_only_theirs() {
        let mut h = Holds::none();
        assert!(h.is_empty());
        h.hold(
            "eu-1",
            hold(HoldKind::Dependency, "waits for ingress", None),
        );
        assert_eq!(
            h.first("eu-1", false).map(|h| h.kind),
            Some(HoldKind::Dependency)
        );
        assert!(h.first("us-1", false).is_none());
        h.hold_everywhere(hold(HoldKind::Freeze, "freeze sale", Some(50)));
        assert_eq!(
            h.first("us-1", false).map(|h| h.kind),
            Some(HoldKind::Freeze)
        );
        assert_eq!(h.on("eu-1", false).count(), 2);
        assert_eq!(h.next_end(false), Some(50));
    }

    #[test]
    fn an_override_lifts_freezes_and_windows_but_not_dependencies() {
        let mut h = Holds::none();
        h.hold_everywhere(hold(HoldKind::Window, "deny window", Some(10)));
        h.hold(
            "eu-1",
            hold(HoldKind::Dependency, "waits for ingress", None),
        );
        assert!(h.first("us-1", true).is_none());
        assert_eq!(
            h.first("eu-1", true).map(|h| h.reason.as_str()),
            Some("waits for ingress")
        );
        assert_eq!(h.next_end(true), None);
        assert!(h.any_overridable());
    }

    #[test]
    fn self_heal_is_suspended_where_a_hold_that_says_so_applies_and_overrides_do_not_lift_it() {
        let mut h = Holds::none();
        h.hold_everywhere(hold(HoldKind::Freeze, "freeze sale", Some(50)));
        h.hold(
            "eu-1",
            Hold {
                suspends_self_heal: Some("deny window '0 14 * * 5' of App shop".into()),
                ..hold(HoldKind::Window, "deny window", Some(10))
            },
        );
        h.hold(
            "us-1",
            hold(HoldKind::Dependency, "waits for ingress", None),
        );
        let s = h.self_heal();
        assert_eq!(s.on("eu-1"), Some("deny window '0 14 * * 5' of App shop"));
        assert_eq!(s.on("us-1"), None, "a dependency never suspends self-heal");
        assert_eq!(s.on("ap-1"), None);
        assert!(!s.is_empty());

        let mut everywhere = Holds::none();
        everywhere.hold_everywhere(Hold {
            suspends_self_heal: Some("freeze maintenance".into()),
            ..hold(HoldKind::Freeze, "freeze maintenance", Some(80))
        });
        everywhere.self_heal_changes_at(80);
        h.extend(everywhere);
        let s = h.self_heal();
        for c in ["eu-1", "us-1", "ap-1"] {
            assert_eq!(s.on(c), Some("freeze maintenance"), "{c}");
        }
        assert_eq!(h.next_self_heal_change(), Some(80));
        h.self_heal_changes_at(30);
        h.self_heal_changes_at(90);
        assert_eq!(h.next_self_heal_change(), Some(30));
        assert!(Holds::none().self_heal().is_empty());
    }
}
