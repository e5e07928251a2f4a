//! The decisions of the shared watches, without IO: which subscribers an event concerns, which
//! watches a kind needs, whether a Target's watches all work, and what a failed watch turns into.
//!
//! One watch per kind serves every Target that applied objects of that kind; each Target
//! subscribes with the places (namespace, name) of its objects. An event is routed by place
//! alone, not by the object's `gitfleet.dev/app` label: someone who edits that label away (or to
//! another App) has changed the object, and its Target must still hear of it. Two Targets that
//! claim the same object are both woken, which costs one extra read-back and is what a conflict
//! needs anyway.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Names one subscription (one Target's health loop).
pub type SubscriberId = u64;

/// Where an object lives: its namespace (empty when cluster-scoped) and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Place {
    pub namespace: String,
    pub name: String,
}

impl Place {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// What one watch of a kind covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Every namespace (or a cluster-scoped kind).
    Cluster,
    /// One namespace: the fallback where the spoke may not list a kind cluster-wide.
    Namespace(String),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cluster => f.write_str("all namespaces"),
            Self::Namespace(namespace) => write!(f, "namespace {namespace}"),
        }
    }
}

/// The objects of one kind its subscribers care about, indexed both ways.
#[derive(Debug, Default, Clone)]
pub struct Interests {
    by_place: HashMap<Place, BTreeSet<SubscriberId>>,
    by_subscriber: BTreeMap<SubscriberId, BTreeSet<Place>>,
}

impl Interests {
    /// Adds (to) a subscriber's interest in `places`.
    pub fn add(&mut self, subscriber: SubscriberId, places: impl IntoIterator<Item = Place>) {
        let held = self.by_subscriber.entry(subscriber).or_default();
        for place in places {
            self.by_place
                .entry(place.clone())
                .or_default()
                .insert(subscriber);
            held.insert(place);
        }
    }

    /// Forgets a subscriber; returns whether it had any interest here.
    pub fn remove(&mut self, subscriber: SubscriberId) -> bool {
        let Some(places) = self.by_subscriber.remove(&subscriber) else {
            return false;
        };
        for place in places {
            if let Some(subscribers) = self.by_place.get_mut(&place) {
                subscribers.remove(&subscriber);
                if subscribers.is_empty() {
                    self.by_place.remove(&place);
                }
            }
        }
        true
    }

    /// Whether no subscriber is left (the kind's watch can stop).
    pub fn is_empty(&self) -> bool {
        self.by_subscriber.is_empty()
    }

    pub fn subscribers(&self) -> impl Iterator<Item = SubscriberId> + '_ {
        self.by_subscriber.keys().copied()
    }

    /// An object at (`namespace`, `name`) changed or was deleted: the subscribers that named it.
    pub fn route(&self, namespace: &str, name: &str) -> Vec<SubscriberId> {
        self.by_place
            .get(&Place::new(namespace, name))
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// A watch over `scope` (re-)listed: every subscriber with objects it covers may have missed
    /// changes while it was not watching, and must look again.
    pub fn listed(&self, scope: &Scope) -> Vec<SubscriberId> {
        self.by_subscriber
            .iter()
            .filter(|(_, places)| places.iter().any(|p| covers(scope, p)))
            .map(|(s, _)| *s)
            .collect()
    }

    /// The namespaces some subscriber has objects in.
    pub fn namespaces(&self) -> BTreeSet<String> {
        self.by_place.keys().map(|p| p.namespace.clone()).collect()
    }

    /// The namespaces one subscriber has objects in.
    pub fn namespaces_of(&self, subscriber: SubscriberId) -> BTreeSet<String> {
        self.by_subscriber
            .get(&subscriber)
            .map(|places| places.iter().map(|p| p.namespace.clone()).collect())
            .unwrap_or_default()
    }
}

/// Whether a watch over `scope` sees the object at `place`.
pub fn covers(scope: &Scope, place: &Place) -> bool {
    match scope {
        Scope::Cluster => true,
        Scope::Namespace(namespace) => *namespace == place.namespace,
    }
}

/// The watches a kind needs: one over the whole cluster, unless the kind is namespaced and the
/// spoke may not watch it cluster-wide, in which case one per namespace its subscribers use.
pub fn wanted_scopes(
    interests: &Interests,
    namespaced: bool,
    per_namespace: bool,
) -> BTreeSet<Scope> {
    if interests.is_empty() {
        return BTreeSet::new();
    }
    if !(namespaced && per_namespace) {
        return BTreeSet::from([Scope::Cluster]);
    }
    interests
        .namespaces()
        .into_iter()
        .map(Scope::Namespace)
        .collect()
}

/// Whether every watch a subscriber depends on in one kind has listed and is running; `live`
/// says that of one scope (false for a scope that has no watch).
pub fn working(
    interests: &Interests,
    subscriber: SubscriberId,
    scopes: &BTreeSet<Scope>,
    live: impl Fn(&Scope) -> bool,
) -> bool {
    if scopes.contains(&Scope::Cluster) {
        return live(&Scope::Cluster);
    }
    interests
        .namespaces_of(subscriber)
        .into_iter()
        .all(|namespace| live(&Scope::Namespace(namespace)))
}

/// What a failed watch turns into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterError {
    /// Try the same watch again after a pause.
    Retry,
    /// The spoke may not watch this kind cluster-wide (403): watch each namespace instead.
    WatchPerNamespace,
}

pub fn after_error(scope: &Scope, namespaced: bool, forbidden: bool) -> AfterError {
    match scope {
        Scope::Cluster if namespaced && forbidden => AfterError::WatchPerNamespace,
        _ => AfterError::Retry,
    }
}

#[cfg(test)]
mod tests;
