//! Others' writes: on a backend several hub replicas share (etcd), every store watches it and
//! applies what the other replicas wrote to its mirror, so that reads from memory stay true.
//!
//! A store tells its own writes from others' by the revisions of its own transactions, and
//! never lets a change another replica made replace a write of its own that is still queued
//! (that write lands after it, and the mirror holds it already).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};

use super::backend::{Batch, Change, ChangeFeed, KeyRange, Op, Tree};
use super::{Inner, Mirror, Store, StoreError, decode, encode, event_id, next_id};
use crate::fleet::freeze::Freeze;
use crate::fleet::rollout::{HealthyMark, RolloutState};
use crate::model::{
    AppControl, ClusterRecord, RepoStatus, ReportSummary, TargetReport, TokenRecord,
};
use crate::resources::Resource;
use gitfleet_core::notify::{Delivery, NotifierStatus};
use gitfleet_core::users::{AuditRecord, UserRecord};

/// Messages a subscriber may fall behind by before it is told it lagged (and must read the
/// whole state again). A message is one transaction's writes: a commit to one App at 10,000
/// clusters is 10,000 changes (each cluster's desired Target) in 79 transactions, and one to
/// all 50 Apps half a million in about 4,000. Counted in changes, the feed overran into a full
/// read of the state on a commit moving 100,000 Targets.
pub(super) const FEED_CAPACITY: usize = 4096;

/// The changes of one watch response that the engine acts on, in commit order.
pub type RemoteChanges = Arc<Vec<RemoteChange>>;

/// A change another replica made, that a replica's engine acts on.
#[derive(Debug, Clone)]
pub struct RemoteChange {
    pub tree: Tree,
    /// The store's key (text).
    pub key: String,
    /// The new value for the trees the engine reads values of (desired state, events); `None`
    /// otherwise, and for a deletion.
    pub value: Option<Arc<Vec<u8>>>,
}

/// The keys and ranges the queued writes of a store write.
#[derive(Debug, Default)]
pub(super) struct PendingKeys {
    keys: HashMap<(Tree, Vec<u8>), usize>,
    ranges: Vec<(Tree, KeyRange)>,
}

impl PendingKeys {
    pub(super) fn add(&mut self, batch: &Batch) {
        for op in &batch.ops {
            match op {
                Op::Put { tree, key, .. } | Op::Delete { tree, key } => {
                    *self.keys.entry((*tree, key.clone())).or_default() += 1;
                }
                Op::DeleteRange { tree, range } => self.ranges.push((*tree, range.clone())),
            }
        }
    }

    pub(super) fn clear(&mut self) {
        self.keys.clear();
        self.ranges.clear();
    }

    fn contains(&self, tree: Tree, key: &[u8]) -> bool {
        self.keys.contains_key(&(tree, key.to_vec()))
            || self
                .ranges
                .iter()
                .any(|(t, range)| *t == tree && range.contains(key))
    }
}

/// Applies the changes of `feed` to the store's mirror until the store is dropped; a broken
/// feed fails the store (it can no longer know what the others wrote).
pub(super) async fn follow(store: Weak<Inner>, mut feed: ChangeFeed) {
    while let Some(changes) = feed.recv().await {
        let Some(inner) = store.upgrade() else { return };
        let store = Store { inner };
        match changes {
            Ok(changes) => store.apply(changes).await,
            Err(e) => {
                store.failed(e);
                return;
            }
        }
    }
}

impl Store {
    /// Whether other replicas share this store's backend.
    pub fn is_shared(&self) -> bool {
        self.inner.remote.is_some()
    }

    /// This store's (this replica's) random id.
    pub fn replica_id(&self) -> &str {
        &self.inner.replica
    }

    /// The changes other replicas make from now on (nothing on a backend nobody else writes).
    pub fn subscribe_remote(&self) -> Option<tokio::sync::broadcast::Receiver<RemoteChanges>> {
        self.inner.remote.as_ref().map(|tx| tx.subscribe())
    }

    /// Records that this replica holds (or no longer holds) `cluster`'s link, so that the
    /// leading replica knows which clusters are connected anywhere. Nothing on a backend
    /// nobody else writes.
    pub fn set_presence(&self, cluster: &str, present: bool) {
        if !self.is_shared() {
            return;
        }
        let key = format!("{cluster}\u{0}{}", self.inner.replica);
        let mut mirror = self.mirror();
        let mut batch = Batch::default();
        if present {
            let url = self.inner.replica_url.get().cloned().unwrap_or_default();
            let record = Presence {
                replica: self.inner.replica.clone(),
                url: url.clone(),
            };
            batch.put(Tree::Presence, key.as_bytes(), encode(&record));
            mirror
                .presence
                .entry(cluster.to_owned())
                .or_default()
                .insert(self.inner.replica.clone(), url);
        } else {
            batch.delete(Tree::Presence, key.as_bytes());
            if let Some(holders) = mirror.presence.get_mut(cluster) {
                holders.remove(&self.inner.replica);
                if holders.is_empty() {
                    mirror.presence.remove(cluster);
                }
            }
        }
        mirror.write(batch);
    }

    /// Asks the leading replica to fetch `repo` now (a follower got its webhook): a write the
    /// leader sees in its watch.
    pub fn request_fetch(&self, repo: &str) {
        let mut batch = Batch::default();
        batch.put(
            Tree::Meta,
            format!("fetch/{repo}").into_bytes(),
            hex::encode(rand::random::<[u8; 8]>()).into_bytes(),
        );
        self.mirror().write(batch);
    }

    /// Whether another replica holds `cluster`'s link.
    pub fn connected_elsewhere(&self, cluster: &str) -> bool {
        self.held_elsewhere(&self.mirror(), cluster)
    }

    /// [`Store::connected_elsewhere`] of each of `clusters`, under one lock.
    pub fn connected_elsewhere_each(&self, clusters: &[&str]) -> Vec<bool> {
        let mirror = self.mirror();
        clusters
            .iter()
            .map(|c| self.held_elsewhere(&mirror, c))
            .collect()
    }

    fn held_elsewhere(&self, mirror: &Mirror, cluster: &str) -> bool {
        mirror
            .presence
            .get(cluster)
            .is_some_and(|holders| holders.keys().any(|r| *r != self.inner.replica))
    }

    /// The URL of another replica holding `cluster`'s link, when one does and said where it is
    /// reached (replicas of older releases do not).
    pub fn linked_elsewhere_at(&self, cluster: &str) -> Option<String> {
        self.mirror().presence.get(cluster).and_then(|holders| {
            holders
                .iter()
                .find(|(r, url)| **r != self.inner.replica && !url.is_empty())
                .map(|(_, url)| url.clone())
        })
    }

    /// Where other replicas reach this one (`--replica-url`, else the advertised URL): written
    /// in its presence records from now on, so that a `diff --live` at another replica can ask
    /// this one about the spokes linked here.
    pub fn set_replica_url(&self, url: String) {
        let _ = self.inner.replica_url.set(url);
    }

    /// Holds back the application of others' writes (and this store's commits) while the
    /// guard lives: a test's way to make a race happen.
    #[cfg(all(test, feature = "etcd"))]
    pub(super) async fn hold_others_writes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.committing.lock().await
    }

    /// Applies others' changes to the mirror and tells the subscribers.
    async fn apply(&self, changes: Vec<Change>) {
        // Every commit of this store that may have made these changes has returned, with its
        // revision, once no commit is running.
        let _no_commit = self.inner.committing.lock().await;
        let own: BTreeSet<i64> = {
            let mut own = self.own_revisions();
            own.extend(self.inner.backend.own_revisions());
            // What the watch has passed is no longer needed.
            let first = changes.first().map_or(0, |c| c.revision);
            *own = own.split_off(&first);
            own.clone()
        };
        let mut told = Vec::new();
        {
            let mut mirror = self.mirror();
            for change in changes {
                if own.contains(&change.revision) {
                    continue;
                }
                if mirror
                    .pending_keys
                    .as_ref()
                    .is_some_and(|p| p.contains(change.tree, &change.key))
                {
                    continue;
                }
                let key = String::from_utf8_lossy(&change.key).into_owned();
                if let Err(e) = mirror.apply_change(&change, &key) {
                    // A record this hub cannot read: another replica runs a newer hub, or the
                    // record is damaged. The others' copy is kept as it was.
                    tracing::warn!(error = %e, "cannot apply another replica's write");
                    continue;
                }
                if told_of(change.tree) {
                    told.push(RemoteChange {
                        tree: change.tree,
                        value: match change.tree {
                            Tree::Desired | Tree::DesiredTargets | Tree::Events => {
                                change.value.map(Arc::new)
                            }
                            _ => None,
                        },
                        key,
                    });
                }
            }
        }
        if let Some(tx) = &self.inner.remote
            && !told.is_empty()
        {
            // Nobody listening is fine.
            let _ = tx.send(Arc::new(told));
        }
    }
}

/// The trees whose changes the engine acts on.
fn told_of(tree: Tree) -> bool {
    matches!(
        tree,
        Tree::Desired
            | Tree::DesiredTargets
            | Tree::Clusters
            | Tree::Resources
            | Tree::Targets
            | Tree::Presence
            | Tree::Meta
            | Tree::Rollouts
            | Tree::AppControls
            | Tree::Revisions
            | Tree::Events
    )
}

impl Mirror {
    /// Makes the mirror hold what `change` wrote.
    pub(super) fn apply_change(&mut self, change: &Change, key: &str) -> Result<(), StoreError> {
        let tree = change.tree;
        let value = change.value.as_deref();
        match tree {
            Tree::Meta
            | Tree::Desired
            | Tree::DesiredHistory
            | Tree::DesiredTargets
            | Tree::RolloutHistory
            | Tree::Dashboard => {}
            Tree::Resources => match value {
                Some(v) => {
                    let r: Resource = decode(tree, key, v)?;
                    self.resources.insert(key.to_owned(), r);
                }
                None => {
                    self.resources.remove(key);
                }
            },
            Tree::Clusters => {
                let old = self.clusters.get(key);
                let record: Option<ClusterRecord> =
                    value.map(|v| decode(tree, key, v)).transpose()?;
                let placed_as_before = match (old, &record) {
                    (Some(old), Some(new)) => {
                        old.labels == new.labels
                            && old.revoked == new.revoked
                            && old.pending == new.pending
                    }
                    (None, None) => true,
                    _ => false,
                };
                if !placed_as_before {
                    self.placement_changed(key);
                }
                let clusters = Arc::make_mut(&mut self.clusters);
                match record {
                    Some(r) => {
                        clusters.insert(key.to_owned(), r);
                    }
                    None => {
                        clusters.remove(key);
                    }
                }
            }
            Tree::Tokens => match value {
                Some(v) => {
                    let r: TokenRecord = decode(tree, key, v)?;
                    self.tokens.insert(key.to_owned(), (r, v.to_vec()));
                }
                None => {
                    self.tokens.remove(key);
                }
            },
            Tree::Targets => match value {
                Some(v) => {
                    let r: TargetReport = decode(tree, key, v)?;
                    self.reports.insert(key.to_owned(), ReportSummary::from(&r));
                    self.target_changed(key);
                }
                None => {
                    self.reports.remove(key);
                    self.target_changed(key);
                }
            },
            Tree::Acked => match value {
                Some(v) => {
                    let seq: u64 = decode(tree, key, v)?;
                    self.acked.insert(key.to_owned(), seq);
                    let seen = self.seen.entry(key.to_owned()).or_default();
                    *seen = (*seen).max(seq);
                }
                None => {
                    self.acked.remove(key);
                }
            },
            Tree::RepoStatus => apply_to::<RepoStatus>(&mut self.repo_status, tree, key, value)?,
            Tree::Revisions => apply_to(&mut self.revisions, tree, key, value)?,
            Tree::AppControls => apply_to::<AppControl>(&mut self.app_controls, tree, key, value)?,
            Tree::Users => apply_to::<UserRecord>(&mut self.users, tree, key, value)?,
            Tree::Freezes => apply_to::<Freeze>(&mut self.freezes, tree, key, value)?,
            Tree::Deliveries => apply_to::<Delivery>(&mut self.deliveries, tree, key, value)?,
            Tree::NotifierStatus => {
                apply_to::<NotifierStatus>(&mut self.notifier_status, tree, key, value)?
            }
            Tree::Rollouts => match value {
                Some(v) => {
                    let r: RolloutState = decode(tree, key, v)?;
                    self.rollouts.insert(key.to_owned(), Arc::new(r));
                }
                None => {
                    self.rollouts.remove(key);
                }
            },
            Tree::Healthy => match value {
                Some(v) => {
                    let m: HealthyMark = decode(tree, key, v)?;
                    self.healthy.insert(key.to_owned(), m);
                    self.target_changed(key);
                }
                None => {
                    self.healthy.remove(key);
                    self.target_changed(key);
                }
            },
            Tree::Events => {
                let Some(id) = event_id(&change.key) else {
                    return Ok(());
                };
                match value {
                    Some(_) => {
                        insert_sorted(&mut self.event_ids, id);
                        if id >= self.next_event_id {
                            self.next_event_id = next_id(id, self.id_salt);
                        }
                    }
                    None => self.event_ids.retain(|e| *e != id),
                }
            }
            Tree::Audit => {
                let Some(id) = event_id(&change.key) else {
                    return Ok(());
                };
                match value {
                    Some(v) => {
                        let entry: AuditRecord = decode(tree, &hex::encode(&change.key), v)?;
                        if !self.audit.iter().any(|(e, _)| *e == id) {
                            let at = self.audit.partition_point(|(e, _)| *e < id);
                            self.audit.insert(at, (id, entry.at_unix));
                        }
                        if id >= self.next_audit_id {
                            self.next_audit_id = id + 1;
                        }
                    }
                    None => self.audit.retain(|(e, _)| *e != id),
                }
            }
            Tree::Presence => {
                let Some((cluster, replica)) = key.split_once('\u{0}') else {
                    return Ok(());
                };
                match value {
                    Some(v) => {
                        self.presence
                            .entry(cluster.to_owned())
                            .or_default()
                            .insert(replica.to_owned(), presence_url(v));
                    }
                    None => {
                        if let Some(holders) = self.presence.get_mut(cluster) {
                            holders.remove(replica);
                            if holders.is_empty() {
                                self.presence.remove(cluster);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn apply_to<T: serde::de::DeserializeOwned>(
    map: &mut std::collections::BTreeMap<String, T>,
    tree: Tree,
    key: &str,
    value: Option<&[u8]>,
) -> Result<(), StoreError> {
    match value {
        Some(v) => {
            map.insert(key.to_owned(), decode(tree, key, v)?);
        }
        None => {
            map.remove(key);
        }
    }
    Ok(())
}

fn insert_sorted(ids: &mut std::collections::VecDeque<u64>, id: u64) {
    let at = ids.partition_point(|e| *e < id);
    if ids.get(at) != Some(&id) {
        ids.insert(at, id);
    }
}

/// A presence record's value: the replica and where it is reached. Replicas of older releases
/// wrote the replica's id alone (a JSON string), which reads as no URL.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Presence {
    replica: String,
    #[serde(default)]
    url: String,
}

/// The URL in a presence record's value (empty when it has none).
pub(super) fn presence_url(value: &[u8]) -> String {
    serde_json::from_slice::<Presence>(value)
        .map(|p| p.url)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_presence_record_says_where_its_replica_is_reached_or_nothing() {
        let record = Presence {
            replica: "abcd".into(),
            url: "https://hub-1.internal:7443".into(),
        };
        assert_eq!(
            presence_url(&encode(&record)),
            "https://hub-1.internal:7443"
        );
        // An older replica's record: its id alone.
        assert_eq!(presence_url(&encode(&"abcd")), "");
        assert_eq!(presence_url(b"not json"), "");
    }
}
