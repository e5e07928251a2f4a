//! Desired state in the store: each cluster's record ([`Tree::Desired`]: its generation, which
//! Apps it has at which `spec_generation`, its tombstones) and its Targets one by one
//! ([`Tree::DesiredTargets`], `cluster`, NUL, App), so that a commit to one App rewrites one
//! Target per cluster instead of every cluster's whole desired state.
//!
//! A commit that only changes Targets the cluster already has, written whole by the backend
//! (one etcd transaction), writes those Targets alone: each carries the generation it changed
//! at, and the cluster's generation is the newest of its record's and its Targets'. So a commit
//! to one App at 10,000 clusters is 10,000 writes, not 20,000. The record is written too when
//! the cluster's Apps or tombstones change, or when the backend would split the write: then
//! the Targets are marked as named by the record (`with_record`) and go before it, so that a
//! record never names a Target that is not stored yet, and a marked Target the record does not
//! name at its generation is the trace of a torn write. What a torn write leaves is found on
//! load and costs that cluster's spokes a snapshot, never a Target they miss. (sled, which a
//! crash before the flush may leave with part of a batch, has no other replica to see it: no
//! spoke was sent any of it, since desired state is published once flushed, and the recompute
//! after the restart writes what is missing at a newer generation.)

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::backend::{self, Backend, Batch, KeyRange, Op, Order, Tree};
use super::{SCHEMA_KEY, Store, StoreError, decode, encode, report_key};
use crate::fleet::DesiredTarget;
use crate::model::{ClusterDesired, VersionedTarget};

/// A desired Target as [`Tree::DesiredTargets`] stores it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StoredTarget {
    pub spec_generation: u64,
    pub target: Arc<DesiredTarget>,
    /// Written with the cluster's record, which names it at `spec_generation` (absent: written
    /// alone, whole with the cluster's other changes of that generation).
    #[serde(default)]
    pub with_record: bool,
}

impl StoredTarget {
    /// Reads a record of [`Tree::DesiredTargets`] (`key`: its key, for the error).
    pub fn decode(key: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        decode(Tree::DesiredTargets, key, bytes)
    }

    pub fn versioned(self) -> VersionedTarget {
        VersionedTarget {
            spec_generation: self.spec_generation,
            target: self.target,
        }
    }
}

/// [`StoredTarget`] as written, without copying the Target.
#[derive(Serialize)]
struct StoredTargetRef<'a> {
    spec_generation: u64,
    target: &'a DesiredTarget,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    with_record: bool,
}

pub(super) fn encode_target(target: &VersionedTarget, with_record: bool) -> Vec<u8> {
    encode(&StoredTargetRef {
        spec_generation: target.spec_generation,
        target: &target.target,
        with_record,
    })
}

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

    /// The desired state this record and the cluster's stored `targets` make: the generation
    /// is the newest of the record's and the Targets' (a Target written alone is newer than
    /// the record). A torn write (see [`torn`](Self::torn)) is taken as stored, and the state
    /// becomes a new generation that no delta leads to: every spoke of the cluster gets a
    /// snapshot, and the next write stores it whole.
    pub fn assemble(self, targets: BTreeMap<String, StoredTarget>) -> ClusterDesired {
        if let Some(legacy) = self.targets {
            return ClusterDesired {
                generation: self.generation,
                targets: legacy,
                removed: BTreeMap::new(),
                removals_since: self.generation,
            };
        }
        let torn = self.torn(&targets);
        let newest = targets
            .values()
            .map(|t| t.spec_generation)
            .max()
            .unwrap_or(0);
        let mut targets: BTreeMap<String, VersionedTarget> = targets
            .into_iter()
            .map(|(app, t)| (app, t.versioned()))
            .collect();
        if !torn {
            return ClusterDesired {
                generation: self.generation.max(newest),
                targets,
                removed: self.removed,
                removals_since: self.removals_since,
            };
        }
        let generation = self.generation.max(newest) + 1;
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

    /// Whether `targets` are not what a whole write left: a Target the record names is
    /// missing, one is older than the record names, one the record does not name is stored,
    /// or one written with the record is not named by it at its generation (the record's
    /// transaction never made it, etcd having split the write).
    fn torn(&self, targets: &BTreeMap<String, StoredTarget>) -> bool {
        targets.len() != self.apps.len()
            || targets.iter().any(|(app, t)| match self.apps.get(app) {
                None => true,
                Some(named) => {
                    t.spec_generation < *named || (t.with_record && t.spec_generation != *named)
                }
            })
    }

    /// Whether schema 2 would have read `targets` as torn: every Target was written with the
    /// record then, so any that is not named by it at its generation.
    fn torn_in_schema_2(&self, targets: &BTreeMap<String, StoredTarget>) -> bool {
        targets.len() != self.apps.len()
            || self
                .apps
                .iter()
                .any(|(app, spec)| targets.get(app).map(|t| t.spec_generation) != Some(*spec))
    }
}

impl Store {
    /// Every cluster's current desired state (read from the backend: at start, and by a
    /// replica that fell behind the others' writes).
    pub async fn desired_all(&self) -> Result<BTreeMap<String, ClusterDesired>, StoreError> {
        let backend = self.backend().await?;
        let mut out = BTreeMap::new();
        for (cluster, (head, targets)) in stored_desired(backend).await? {
            out.insert(cluster, head.assemble(targets));
        }
        Ok(out)
    }

    /// One cluster's stored desired state (none stored: the empty state). The record is read
    /// again after the Targets, and all of it again if the record changed meanwhile (another
    /// replica wrote it): a record and Targets of two writes would look torn.
    pub async fn desired_of(&self, cluster: &str) -> Result<ClusterDesired, StoreError> {
        let backend = self.backend().await?;
        let prefix = format!("{cluster}\u{0}");
        let mut tries = 0;
        loop {
            tries += 1;
            let Some(head) = backend.get(Tree::Desired, cluster.as_bytes()).await? else {
                return Ok(ClusterDesired::default());
            };
            let mut targets = BTreeMap::new();
            let range = KeyRange::prefix(prefix.as_bytes());
            for (k, v) in backend
                .scan(Tree::DesiredTargets, range, Order::Ascending, usize::MAX)
                .await?
            {
                let key = String::from_utf8_lossy(&k).into_owned();
                if let Some(app) = key.strip_prefix(prefix.as_str()) {
                    targets.insert(app.to_owned(), StoredTarget::decode(&key, &v)?);
                }
            }
            let again = backend.get(Tree::Desired, cluster.as_bytes()).await?;
            if again.as_ref() == Some(&head) || tries >= 5 {
                return Ok(DesiredHead::decode(cluster, &head)?.assemble(targets));
            }
        }
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
            .map(|v| StoredTarget::decode(&key, &v).map(StoredTarget::versioned))
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
        let backend = &*self.inner.backend;
        let mut mirror = self.mirror();
        let batch = if mirror.pending_desired.insert(cluster.to_owned()) {
            desired_writes(cluster, old, desired, |b| backend.applies_whole(b))
        } else {
            // Written twice before one flush: the second must land after the first, which it
            // may share no key with (a record, then Targets alone), so it does not go in any
            // order; and, joined to the writes before it and maybe split with them, it is
            // written with its record.
            let mut batch = desired_writes(cluster, old, desired, |_| false);
            batch.unordered = false;
            batch
        };
        mirror.write(batch);
        Ok(())
    }
}

/// Each cluster's record and stored Targets.
type StoredDesired = BTreeMap<String, (DesiredHead, BTreeMap<String, StoredTarget>)>;

async fn stored_desired(backend: &dyn Backend) -> Result<StoredDesired, StoreError> {
    let mut by_cluster: BTreeMap<String, BTreeMap<String, StoredTarget>> = BTreeMap::new();
    for (k, v) in backend::load(backend, Tree::DesiredTargets).await? {
        let key = String::from_utf8_lossy(&k).into_owned();
        let Some((cluster, app)) = key.split_once('\u{0}') else {
            continue;
        };
        let target = StoredTarget::decode(&key, &v)?;
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
        out.insert(cluster, (head, targets));
    }
    Ok(out)
}

/// The writes that store `desired` over `old`: the Targets that changed (or all of them, when
/// `old` is a state no delta leads to, which may differ from the stored Targets: loaded from a
/// torn write, or migrated) and the removed ones deleted; then the record, unless only Targets
/// the cluster already had changed and `whole` says the backend applies them in one piece
/// (then each Target's generation says what the record would have).
pub(super) fn desired_writes(
    cluster: &str,
    old: &ClusterDesired,
    desired: &ClusterDesired,
    whole: impl Fn(&Batch) -> bool,
) -> Batch {
    let snapshot = old.generation != 0 && old.removals_since >= old.generation;
    let same_apps = old.targets.len() == desired.targets.len()
        && old
            .targets
            .keys()
            .zip(desired.targets.keys())
            .all(|(a, b)| a == b);
    let record_unchanged = !snapshot
        && old.generation != 0
        && same_apps
        && old.removed == desired.removed
        && old.removals_since == desired.removals_since;
    let targets = |with_record: bool| {
        let mut batch = Batch::default();
        for (app, t) in &desired.targets {
            let same = old
                .targets
                .get(app)
                .is_some_and(|o| o.spec_generation == t.spec_generation);
            if snapshot || !same {
                batch.put(
                    Tree::DesiredTargets,
                    report_key(cluster, app),
                    encode_target(t, with_record),
                );
            }
        }
        for app in old
            .targets
            .keys()
            .filter(|a| !desired.targets.contains_key(*a))
        {
            batch.delete(Tree::DesiredTargets, report_key(cluster, app));
        }
        // Each cluster's desired state stands alone: a commit's 10,000 clusters go to etcd in
        // transactions sent at once, not one after another.
        batch.in_any_order();
        batch
    };
    if record_unchanged {
        let alone = targets(false);
        let newest = desired.targets.values().map(|t| t.spec_generation).max();
        // The Targets written carry the new generation (else the record must say it), and
        // land at once.
        if newest == Some(desired.generation)
            && alone.ops.iter().any(|op| matches!(op, Op::Put { .. }))
            && whole(&alone)
        {
            return alone;
        }
    }
    let mut batch = targets(true);
    batch.put(Tree::Desired, cluster, encode(&DesiredHead::of(desired)));
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

/// Schema 2 → 3: a Target may be written without its cluster's record (see the module). In
/// schema 2 every Target was written with it, so a Target newer than the record was the trace
/// of a torn write, which schema 3 would take for a Target written alone: such a cluster is
/// stored whole again, at the new generation schema 2 would have loaded it as. Each such
/// cluster's write holds only if its record and the schema version are still what was read:
/// replicas opening at once on one etcd, or an older replica still writing during a rolling
/// update, are left what they wrote (a record written meanwhile names the Targets again; one
/// that lands after this write makes it look torn, and it loads as a snapshot).
pub(super) async fn migrate_to_3(backend: &dyn Backend) -> Result<(), StoreError> {
    let schema_2 = 2u32.to_be_bytes().to_vec();
    for (cluster, (head, targets)) in stored_desired(backend).await? {
        if head.targets.is_some() || !head.torn_in_schema_2(&targets) {
            continue;
        }
        let Some(raw) = backend.get(Tree::Desired, cluster.as_bytes()).await? else {
            continue;
        };
        if DesiredHead::decode(&cluster, &raw)? != head {
            continue;
        }
        // Marked as written with the record, so that schema 3 reads it as torn the same way.
        let marked = targets
            .into_iter()
            .map(|(app, t)| {
                let with_record = StoredTarget {
                    with_record: true,
                    ..t
                };
                (app, with_record)
            })
            .collect();
        let desired = head.assemble(marked);
        let mut batch = desired_writes(&cluster, &desired, &desired, |_| false);
        batch.unordered = false;
        // A conditional write must fit one etcd transaction: a cluster with more Apps than
        // that is written as before, unconditionally.
        if batch.ops.len() <= 100 {
            batch
                .require(Tree::Desired, cluster.as_bytes(), Some(raw))
                .require(Tree::Meta, SCHEMA_KEY, Some(schema_2.clone()));
        }
        match backend.commit(batch).await {
            Ok(()) | Err(super::BackendError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut done = Batch::default();
    done.require(Tree::Meta, SCHEMA_KEY, Some(schema_2)).put(
        Tree::Meta,
        SCHEMA_KEY,
        3u32.to_be_bytes().to_vec(),
    );
    match backend.commit(done).await {
        // Another replica migrated first.
        Ok(()) | Err(super::BackendError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
