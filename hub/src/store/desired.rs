//! Desired state in the store: each cluster's record ([`Tree::Desired`]: its generation, which
//! Apps it has at which `spec_generation`, its tombstones) and its Targets one by one
//! ([`Tree::DesiredTargets`], `cluster`, NUL, App), so that a commit to one App rewrites one
//! Target per cluster instead of every cluster's whole desired state.
//!
//! A cluster's Targets are written before its record (in one batch; etcd may split a large
//! batch into several transactions, in order), so that a record never names a Target that is
//! not stored yet. What a torn write leaves (Targets newer than the record that should name
//! them) is found on load and costs that cluster's spokes a snapshot, never a Target they miss.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::backend::{self, Backend, Batch, KeyRange, Tree};
use super::{SCHEMA_KEY, Store, StoreError, decode, encode, report_key};
use crate::model::{ClusterDesired, VersionedTarget};

/// A cluster's desired state as [`Tree::Desired`] stores it: everything but the Targets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DesiredHead {
    pub generation: u64,
    /// By App: the `spec_generation` of its stored Target.
    #[serde(default)]
    pub apps: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub removed: BTreeMap<String, u64>,
    #[serde(default)]
    pub removals_since: u64,
    /// Schema 1 kept the Targets in the record itself; only the migration reads them. Never
    /// written, so that a hub of schema 1 cannot read a record of schema 2 as one without
    /// Targets (it refuses it instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    targets: Option<BTreeMap<String, VersionedTarget>>,
}

impl DesiredHead {
    pub fn of(desired: &ClusterDesired) -> Self {
        Self {
            generation: desired.generation,
            apps: desired
                .targets
                .iter()
                .map(|(app, t)| (app.clone(), t.spec_generation))
                .collect(),
            removed: desired.removed.clone(),
            removals_since: desired.removals_since,
            targets: None,
        }
    }

    /// Reads a record of [`Tree::Desired`] (as another replica's write brings it).
    pub fn decode(cluster: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        decode(Tree::Desired, cluster, bytes)
    }

    /// The desired state this record names, with `targets` as another replica's writes brought
    /// them (or the store had them a moment later): taken as they are, the record's generation
    /// kept. A follower never makes up a generation of its own: the leader's next record must
    /// still be newer than what the follower published.
    pub fn assemble_as_written(self, targets: BTreeMap<String, VersionedTarget>) -> ClusterDesired {
        ClusterDesired {
            generation: self.generation,
            targets,
            removed: self.removed,
            removals_since: self.removals_since,
        }
    }

    /// The desired state this record names, with the `targets` stored. A Target that does not
    /// match the record (missing, or of another `spec_generation`: a write torn between etcd
    /// transactions) is taken as stored, and the state becomes a new generation that no delta
    /// leads to: every spoke of the cluster gets a snapshot, and the next write stores it
    /// whole.
    pub fn assemble(self, mut targets: BTreeMap<String, VersionedTarget>) -> ClusterDesired {
        if let Some(legacy) = self.targets {
            return ClusterDesired {
                generation: self.generation,
                targets: legacy,
                removed: BTreeMap::new(),
                removals_since: self.generation,
            };
        }
        let torn = targets.len() != self.apps.len()
            || self
                .apps
                .iter()
                .any(|(app, spec)| targets.get(app).map(|t| t.spec_generation) != Some(*spec));
        if !torn {
            return ClusterDesired {
                generation: self.generation,
                targets,
                removed: self.removed,
                removals_since: self.removals_since,
            };
        }
        let generation = self.generation.max(
            targets
                .values()
                .map(|t| t.spec_generation)
                .max()
                .unwrap_or(0),
        ) + 1;
        for t in targets.values_mut() {
            t.spec_generation = generation;
        }
        ClusterDesired {
            generation,
            targets,
            removed: BTreeMap::new(),
            removals_since: generation,
        }
    }
}

impl Store {
    /// Every cluster's current desired state (read from the backend: at start, and by a
    /// replica that fell behind the others' writes).
    pub async fn desired_all(&self) -> Result<BTreeMap<String, ClusterDesired>, StoreError> {
        let backend = self.backend().await?;
        let mut by_cluster: BTreeMap<String, BTreeMap<String, VersionedTarget>> = BTreeMap::new();
        for (k, v) in backend::load(backend, Tree::DesiredTargets).await? {
            let key = String::from_utf8_lossy(&k).into_owned();
            let Some((cluster, app)) = key.split_once('\u{0}') else {
                continue;
            };
            let target: VersionedTarget = decode(Tree::DesiredTargets, &key, &v)?;
            by_cluster
                .entry(cluster.to_owned())
                .or_default()
                .insert(app.to_owned(), target);
        }
        let mut out = BTreeMap::new();
        for (k, v) in backend::load(backend, Tree::Desired).await? {
            let cluster = String::from_utf8_lossy(&k).into_owned();
            let head = DesiredHead::decode(&cluster, &v)?;
            let targets = by_cluster.remove(&cluster).unwrap_or_default();
            out.insert(cluster, head.assemble(targets));
        }
        Ok(out)
    }

    /// One stored Target of a cluster's desired state.
    pub async fn desired_target(
        &self,
        cluster: &str,
        app: &str,
    ) -> Result<Option<VersionedTarget>, StoreError> {
        let key = report_key(cluster, app);
        self.backend()
            .await?
            .get(Tree::DesiredTargets, key.as_bytes())
            .await?
            .map(|v| decode(Tree::DesiredTargets, &key, &v))
            .transpose()
    }

    /// Stores a cluster's desired state `desired`, which follows `old` (the state stored
    /// before): the Targets that changed, then the record. Nothing else is rewritten.
    pub fn put_desired(
        &self,
        cluster: &str,
        old: &ClusterDesired,
        desired: &ClusterDesired,
    ) -> Result<(), StoreError> {
        self.mirror().write(desired_writes(cluster, old, desired));
        Ok(())
    }
}

/// The writes that store `desired` over `old`: the Targets that changed (or all of them, when
/// `old` is a state no delta leads to, which may differ from the stored Targets: loaded from a
/// torn write, or migrated), the removed ones deleted, then the record.
pub(super) fn desired_writes(
    cluster: &str,
    old: &ClusterDesired,
    desired: &ClusterDesired,
) -> Batch {
    let whole = old.generation != 0 && old.removals_since >= old.generation;
    let mut batch = Batch::default();
    for (app, t) in &desired.targets {
        let same = old
            .targets
            .get(app)
            .is_some_and(|o| o.spec_generation == t.spec_generation);
        if whole || !same {
            batch.put(Tree::DesiredTargets, report_key(cluster, app), encode(t));
        }
    }
    for app in old
        .targets
        .keys()
        .filter(|a| !desired.targets.contains_key(*a))
    {
        batch.delete(Tree::DesiredTargets, report_key(cluster, app));
    }
    batch.put(Tree::Desired, cluster, encode(&DesiredHead::of(desired)));
    // Each cluster's desired state stands alone: a commit's 10,000 clusters go to etcd in
    // transactions sent at once, not one after another.
    batch.in_any_order();
    batch
}

/// Schema 1 → 2: each cluster's Targets move out of its desired-state record into
/// [`Tree::DesiredTargets`]; the desired-state history goes (a spoke's delta is made from the
/// Targets' generations and the tombstones now). Idempotent: replicas starting at once on one
/// etcd write the same.
pub(super) async fn migrate_to_2(backend: &dyn Backend) -> Result<(), StoreError> {
    let mut batch = Batch::default();
    for (k, v) in backend::load(backend, Tree::Desired).await? {
        let cluster = String::from_utf8_lossy(&k).into_owned();
        let head = DesiredHead::decode(&cluster, &v)?;
        if head.targets.is_none() {
            continue;
        }
        let desired = head.assemble(BTreeMap::new());
        for (app, t) in &desired.targets {
            batch.put(Tree::DesiredTargets, report_key(&cluster, app), encode(t));
        }
        batch.put(Tree::Desired, k, encode(&DesiredHead::of(&desired)));
    }
    batch
        .delete_range(Tree::DesiredHistory, KeyRange::all())
        .put(Tree::Meta, SCHEMA_KEY, 2u32.to_be_bytes().to_vec());
    backend.commit(batch).await?;
    Ok(())
}
