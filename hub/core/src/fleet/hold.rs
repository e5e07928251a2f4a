//! Holds, pure: why a cluster's Target may not be given a new revision now.
//!
//! Change control decides them (a freeze, a sync window, an App waiting for another: see
//! `docs/change-control.md`); the rollout ([`super::rollout::decide_held`]) obeys them. A hold
//! stops a Target from *changing*: what it runs keeps running (and self-healing), rollbacks are
//! never held, and a held Target does not count against the progress deadline.

use std::collections::HashMap;

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
}

/// The holds on one App's Targets right now: some on every cluster, some on single clusters.
/// Empty for most Apps most of the time, and built without a per-cluster entry for what holds
/// every cluster (a freeze of the whole fleet on 10,000 clusters is one entry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holds {
    everywhere: Vec<Hold>,
    by_cluster: HashMap<String, Vec<Hold>>,
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
}
