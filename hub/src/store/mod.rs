//! Everything the hub knows, kept in an embedded sled database in its data directory.
//!
//! sled stays inside this module: the rest of the hub sees typed records and the operations it
//! needs, so that a replicated backend can replace this one without touching the logic. Values are
//! JSON; keys are plain strings. Anything acknowledged to anyone must be followed by
//! [`Store::flush`] before the acknowledgement leaves the hub.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::fleet::AppRevision;
use crate::fleet::rollout::{HealthyMark, RolloutState};
use crate::model::{
    AppControl, ClusterDesired, ClusterRecord, EventRecord, RepoStatus, ReportSummary,
    TargetReport, TokenProblem, TokenRecord,
};
use crate::resources::{Kind, Resource};

#[cfg(test)]
mod tests;

/// Bumped whenever a stored record changes shape incompatibly; [`Store::open`] migrates from
/// older versions (none yet) and refuses newer ones.
pub const SCHEMA_VERSION: u32 = 1;

/// How many generations of each cluster's desired state the store keeps.
pub const DESIRED_HISTORY: u64 = 16;

/// How many events the store keeps (the oldest go first).
pub const EVENTS_KEPT: usize = 50_000;

/// How long a flush waits for more writes when callers are queueing for it (see
/// [`Store::flush`]): like PostgreSQL's `commit_delay`, a little latency for fewer disk syncs.
const FLUSH_LINGER: std::time::Duration = std::time::Duration::from_millis(2);

const SCHEMA_KEY: &str = "schema_version";
const EPOCH_KEY: &str = "epoch";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("store error: {0}")]
    Sled(#[from] sled::Error),
    #[error("store record {tree}/{key} is corrupt: {message}")]
    Corrupt {
        tree: &'static str,
        key: String,
        message: String,
    },
    #[error(
        "store schema version {found} is newer than this hub understands ({expected}); upgrade the hub"
    )]
    SchemaTooNew { found: u32, expected: u32 },
    #[error("cannot use bootstrap token: {0}")]
    Token(TokenProblem),
    #[error("cannot import: {0}")]
    Import(String),
}

/// What happened to a status report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Stored; everything up to this seq is now recorded (durable after the next flush).
    Stored { acked_seq: u64 },
    /// Seen before (seq at or below one recorded earlier): nothing written; everything up to
    /// `acked_seq` is recorded (durable after the next flush).
    Duplicate { acked_seq: u64 },
}

/// The hub's durable state.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    epoch: String,
    resources: sled::Tree,
    clusters: sled::Tree,
    tokens: sled::Tree,
    desired: sled::Tree,
    history: sled::Tree,
    targets: sled::Tree,
    acked: sled::Tree,
    repo_status: sled::Tree,
    revisions: sled::Tree,
    rollouts: sled::Tree,
    rollout_history: sled::Tree,
    healthy: sled::Tree,
    events: sled::Tree,
    app_controls: sled::Tree,
    group: std::sync::Arc<GroupFlush>,
    mirror: Arc<Mutex<Mirror>>,
    /// The first write or flush that failed (see [`Store::failure`]).
    failure: Arc<std::sync::OnceLock<String>>,
    /// Reads of every stored resource (see [`Store::resource_scans`]).
    resource_scans: Arc<std::sync::atomic::AtomicU64>,
}

/// Decoded copies of the records the hub reads on every rollout decision and every status
/// report, so that those do not read and decode thousands of records each time. Loaded when
/// the store opens and updated by every write of those trees: the trees stay the truth.
#[derive(Debug, Default)]
struct Mirror {
    /// Shared with readers that decide over the whole fleet (copied on the next write while one
    /// holds it), so that a decision does not copy 10,000 records.
    clusters: Arc<BTreeMap<String, ClusterRecord>>,
    /// Bumped whenever a cluster's place in the fleet may change (it is new, or its labels,
    /// revocation or approval changed), not by its contact times.
    placement_version: u64,
    /// By report key: a summary of the last report.
    reports: HashMap<String, ReportSummary>,
    /// By report key.
    healthy: HashMap<String, HealthyMark>,
    /// By App: its current rollout, decoded once rather than on every decision (a rollout
    /// across 10,000 clusters assigns each of them a revision).
    rollouts: HashMap<String, Arc<RolloutState>>,
    /// Entries of the events tree.
    events: usize,
    /// By cluster: the highest report seq recorded (durable or not), to refuse duplicates.
    seen: HashMap<String, u64>,
    /// By cluster: the highest seq whose reports are durable, the one to ack.
    acked: HashMap<String, u64>,
}

impl Mirror {
    fn load(store: &Store) -> Result<Self, StoreError> {
        let mut mirror = Mirror {
            clusters: Arc::new(entries(&store.clusters, "clusters")?),
            healthy: entries::<HealthyMark>(&store.healthy, "healthy")?
                .into_iter()
                .collect(),
            events: store.events.len(),
            rollouts: entries::<RolloutState>(&store.rollouts, "rollouts")?
                .into_iter()
                .map(|(app, state)| (app, Arc::new(state)))
                .collect(),
            ..Default::default()
        };
        for kv in store.targets.iter() {
            let (k, v) = kv?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let report: TargetReport = decode("targets", &key, &v)?;
            mirror.reports.insert(key, ReportSummary::from(&report));
        }
        mirror.acked = entries::<u64>(&store.acked, "acked")?.into_iter().collect();
        mirror.seen = mirror.acked.clone();
        Ok(mirror)
    }
}

/// Group commit: callers that ask for a flush while one is running share the next one, so that
/// many spokes reporting at once cost one disk flush, not one each.
#[derive(Debug, Default)]
struct GroupFlush {
    /// Tickets handed out: one per `flush` call.
    requested: std::sync::atomic::AtomicU64,
    /// Every ticket up to this one is durable.
    done: std::sync::atomic::AtomicU64,
    /// Held by the caller doing the flush; the others queue here (fairly) and mostly find their
    /// ticket covered when they get it.
    leader: tokio::sync::Mutex<()>,
    /// Flushes actually done.
    flushes: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// Opens the sled database, waiting briefly for its lock: sled releases the lock only when the
/// background flusher of the last handle exits, a moment after the handle is dropped, so a store
/// reopened in the same process (a hub restarted in place) can find it still held. A lock held
/// for longer (another hub on the same directory) is reported.
fn open_db(path: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::Config::new().path(path).open() {
            // sled wraps the lock failure as `Other` with the OS error in its message.
            Err(sled::Error::Io(e))
                if (e.kind() == std::io::ErrorKind::WouldBlock
                    || e.to_string().contains("could not acquire lock"))
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => {
                return other.map_err(|source| StoreError::Open {
                    path: path.to_owned(),
                    source,
                });
            }
        }
    }
}

impl Store {
    /// Opens (or creates) the store at `path`, checking the schema version and creating the
    /// hub epoch on first open.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = open_db(path)?;
        let meta = db.open_tree("meta")?;
        match meta.get(SCHEMA_KEY)? {
            None => {
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
            }
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        tree: "meta",
                        key: SCHEMA_KEY.into(),
                        message: format!("{} bytes, expected 4", v.len()),
                    })?;
                if found > SCHEMA_VERSION {
                    return Err(StoreError::SchemaTooNew {
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
                // Older versions would be migrated here, one step at a time.
            }
        }
        let epoch = match meta.get(EPOCH_KEY)? {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => {
                let e = hex::encode(rand::random::<[u8; 16]>());
                meta.insert(EPOCH_KEY, e.as_bytes())?;
                e
            }
        };
        db.flush()?;
        let mut store = Self {
            epoch,
            resources: db.open_tree("resources")?,
            clusters: db.open_tree("clusters")?,
            tokens: db.open_tree("tokens")?,
            desired: db.open_tree("desired")?,
            history: db.open_tree("desired_history")?,
            targets: db.open_tree("targets")?,
            acked: db.open_tree("acked")?,
            repo_status: db.open_tree("repo_status")?,
            revisions: db.open_tree("revisions")?,
            rollouts: db.open_tree("rollouts")?,
            rollout_history: db.open_tree("rollout_history")?,
            healthy: db.open_tree("healthy")?,
            events: db.open_tree("events")?,
            app_controls: db.open_tree("app_controls")?,
            group: std::sync::Arc::default(),
            mirror: Arc::default(),
            failure: Arc::default(),
            resource_scans: Arc::default(),
            db,
        };
        store.mirror = Arc::new(Mutex::new(Mirror::load(&store)?));
        Ok(store)
    }

    fn mirror(&self) -> MutexGuard<'_, Mirror> {
        self.mirror
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A random id of this hub's state, fixed at creation. Desired-state generations are only
    /// meaningful within one epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Makes every write so far durable. Concurrent callers share flushes (group commit): a
    /// caller returns once a flush that started after its call has finished.
    pub async fn flush(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        // Everything this caller wrote happened before its ticket was drawn.
        let ticket = self.group.requested.fetch_add(1, SeqCst) + 1;
        let _leader = self.group.leader.lock().await;
        if self.group.done.load(SeqCst) >= ticket {
            return Ok(());
        }
        // Others are waiting too, so writes are arriving faster than flushes finish: wait a
        // moment for more of them, so that one flush covers more (each costs a disk sync and
        // several system calls, the bulk of the hub's work when many spokes report at once).
        if self.group.requested.load(SeqCst) > ticket {
            tokio::time::sleep(FLUSH_LINGER).await;
        }
        // Every ticket drawn before this load is covered by the flush that follows it.
        let upto = self.group.requested.load(SeqCst);
        self.db.flush_async().await.noted(self)?;
        self.group.flushes.fetch_add(1, SeqCst);
        self.group.done.fetch_max(upto, SeqCst);
        Ok(())
    }

    /// How many disk flushes this store has done (fewer than `flush` calls under load).
    pub fn flush_count(&self) -> u64 {
        self.group.flushes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Why the store cannot make writes durable any more, if a write or flush failed: sled
    /// refuses every write for good after an I/O error (a full disk, say), even once the cause
    /// is gone. Known without touching the disk, so that health probes cost nothing.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// `e` as a store error, remembered (and logged) as the store's failure if it is the first.
    fn failed(&self, e: sled::Error) -> StoreError {
        if self.failure.set(e.to_string()).is_ok() {
            tracing::error!(error = %e, "the store cannot make writes durable any more; restart the hub once the cause is fixed");
        }
        StoreError::Sled(e)
    }

    // --- resources ---------------------------------------------------------------------------

    pub fn resources(&self) -> Result<Vec<Resource>, StoreError> {
        self.resource_scans
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        values(&self.resources, "resources")
    }

    /// How many times every stored resource was read and decoded: work that nothing an
    /// unauthenticated caller sends may cause.
    pub fn resource_scans(&self) -> u64 {
        self.resource_scans
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn resource(&self, kind: Kind, name: &str) -> Result<Option<Resource>, StoreError> {
        get(&self.resources, "resources", &resource_key(kind, name))
    }

    /// Stores all of `resources` at once, or none of them.
    pub fn put_resources(&self, resources: &[Resource]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for r in resources {
            batch.insert(resource_key(r.kind(), r.name()).as_bytes(), encode(r));
        }
        self.resources.apply_batch(batch).noted(self)?;
        Ok(())
    }

    pub fn delete_resource(&self, kind: Kind, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .resources
            .remove(resource_key(kind, name))
            .noted(self)?
            .is_some())
    }

    // --- clusters ----------------------------------------------------------------------------

    pub fn clusters(&self) -> Result<Vec<ClusterRecord>, StoreError> {
        Ok(self.mirror().clusters.values().cloned().collect())
    }

    /// Every cluster by name, as of now, without copying them; with the placement version
    /// they are at (see [`Store::put_cluster`]): equal versions, equal placements.
    pub fn clusters_snapshot(&self) -> (Arc<BTreeMap<String, ClusterRecord>>, u64) {
        let mirror = self.mirror();
        (Arc::clone(&mirror.clusters), mirror.placement_version)
    }

    pub fn cluster(&self, name: &str) -> Result<Option<ClusterRecord>, StoreError> {
        Ok(self.mirror().clusters.get(name).cloned())
    }

    pub fn put_cluster(&self, record: &ClusterRecord) -> Result<(), StoreError> {
        // Under the mirror's lock, so that the tree and the mirror change in the same order.
        let mut mirror = self.mirror();
        self.put_cluster_locked(&mut mirror, record)
    }

    /// Reads and rewrites a cluster's record as one step: no other write of the record comes
    /// between, so that a writer changing one field (the last contact) cannot undo another's
    /// change (a revocation, a renewal's key) it read before. `change` gets the record (`None`
    /// when there is none) and returns the record to write (`None`: write nothing) with its
    /// own answer.
    pub fn update_cluster<T>(
        &self,
        name: &str,
        change: impl FnOnce(Option<&ClusterRecord>) -> (Option<ClusterRecord>, T),
    ) -> Result<T, StoreError> {
        let mut mirror = self.mirror();
        let (record, answer) = change(mirror.clusters.get(name));
        if let Some(record) = record {
            self.put_cluster_locked(&mut mirror, &record)?;
        }
        Ok(answer)
    }

    fn put_cluster_locked(
        &self,
        mirror: &mut MutexGuard<'_, Mirror>,
        record: &ClusterRecord,
    ) -> Result<(), StoreError> {
        self.clusters
            .insert(&record.name, encode(record))
            .noted(self)?;
        let placed_as_before = mirror.clusters.get(&record.name).is_some_and(|old| {
            old.labels == record.labels
                && old.revoked == record.revoked
                && old.pending == record.pending
        });
        if !placed_as_before {
            mirror.placement_version += 1;
        }
        Arc::make_mut(&mut mirror.clusters).insert(record.name.clone(), record.clone());
        Ok(())
    }

    // --- tokens ------------------------------------------------------------------------------

    pub fn put_token(&self, hash: &str, record: &TokenRecord) -> Result<(), StoreError> {
        self.tokens.insert(hash, encode(record)).noted(self)?;
        Ok(())
    }

    /// The token with this hash, if there is one: a lookup, nothing written.
    pub fn token(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.tokens
            .get(hash)?
            .map(|raw| decode("tokens", hash, &raw))
            .transpose()
    }

    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        values(&self.tokens, "tokens")
    }

    /// Marks the token with this id revoked; false when there is none.
    pub fn revoke_token(&self, id: &str) -> Result<bool, StoreError> {
        for kv in self.tokens.iter() {
            let (k, v) = kv?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let mut record: TokenRecord = decode("tokens", &key, &v)?;
            if record.id == id {
                record.revoked = true;
                self.tokens.insert(k, encode(&record)).noted(self)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Checks the token with this hash and counts one use, atomically.
    pub fn use_token(&self, hash: &str, now_unix: i64) -> Result<TokenRecord, StoreError> {
        let result = self.tokens.transaction(|t| {
            let Some(raw) = t.get(hash)? else {
                return Err(ConflictableTransactionError::Abort(StoreError::Token(
                    TokenProblem::Unknown,
                )));
            };
            let mut record: TokenRecord =
                decode("tokens", hash, &raw).map_err(ConflictableTransactionError::Abort)?;
            record
                .check(now_unix)
                .map_err(|p| ConflictableTransactionError::Abort(StoreError::Token(p)))?;
            record.uses += 1;
            t.insert(hash, encode(&record))?;
            Ok(record)
        });
        flatten(result).map_err(|e| match e {
            StoreError::Sled(e) => self.failed(e),
            other => other,
        })
    }

    // --- desired state -----------------------------------------------------------------------

    pub fn desired_all(&self) -> Result<BTreeMap<String, ClusterDesired>, StoreError> {
        entries(&self.desired, "desired")
    }

    /// Stores a cluster's current desired state and keeps it in the cluster's history, which
    /// holds the last [`DESIRED_HISTORY`] generations (so a reconnecting spoke can get a delta).
    pub fn put_desired(&self, cluster: &str, desired: &ClusterDesired) -> Result<(), StoreError> {
        // Plain inserts (a sled transaction writes and syncs the log twice, and a fan-out stores
        // one of these per cluster). History first: a current generation without its history
        // entry (a crash between the two) only costs that cluster a snapshot instead of a delta.
        let value = encode(desired);
        self.history
            .insert(history_key(cluster, desired.generation), value.as_slice())
            .noted(self)?;
        self.desired.insert(cluster.as_bytes(), value).noted(self)?;
        if let Some(old) = desired.generation.checked_sub(DESIRED_HISTORY) {
            self.history.remove(history_key(cluster, old)).noted(self)?;
        }
        Ok(())
    }

    /// A cluster's desired state as it was at `generation`, if still kept.
    pub fn desired_at(
        &self,
        cluster: &str,
        generation: u64,
    ) -> Result<Option<ClusterDesired>, StoreError> {
        let key = history_key(cluster, generation);
        self.history
            .get(&key)?
            .map(|v| decode("desired_history", &format!("{cluster}@{generation}"), &v))
            .transpose()
    }

    // --- status reports ----------------------------------------------------------------------

    /// Records a report (or, with `report: None`, only its sequence number: a report the hub
    /// reads but does not keep) unless `seq` was seen before. Not durable until the next
    /// [`Store::flush`]; [`Store::ack_durably`] does that and records the seq as acked.
    ///
    /// Plain inserts, not a sled transaction: sled writes out and syncs its log buffer twice per
    /// transaction or batch, which made every report cost two disk writes. Duplicates are told
    /// apart in memory instead (under the mirror's lock, so concurrent streams of one cluster
    /// are ordered), and the acked seq is written only once the reports are durable.
    pub fn record_report(
        &self,
        cluster: &str,
        seq: u64,
        report: Option<&TargetReport>,
    ) -> Result<ReportOutcome, StoreError> {
        let value = report.map(|r| (report_key(cluster, &r.app), encode(r)));
        let mut mirror = self.mirror();
        let last = mirror.seen.get(cluster).copied().unwrap_or(0);
        if seq <= last {
            // Recorded before this call, so durable after the caller's next flush.
            return Ok(ReportOutcome::Duplicate { acked_seq: last });
        }
        if let (Some(r), Some((key, value))) = (report, value) {
            // Reports of a cluster only grow in seq: an older one never replaces a newer.
            let newer = mirror.reports.get(&key).is_none_or(|old| old.seq <= r.seq);
            if newer {
                self.targets.insert(key.as_bytes(), value).noted(self)?;
                mirror.reports.insert(key, ReportSummary::from(r));
            }
        }
        mirror.seen.insert(cluster.to_owned(), seq);
        Ok(ReportOutcome::Stored { acked_seq: seq })
    }

    /// Makes the reports of `cluster` recorded so far durable, then `seq` as its acked seq, so
    /// that `seq` may be acked: two flushes (both shared with concurrent callers), so that the
    /// acked seq on disk never covers a report that is not.
    pub async fn ack_durably(&self, cluster: &str, seq: u64) -> Result<(), StoreError> {
        self.flush().await?;
        if self.persist_acked(cluster, seq)? {
            self.flush().await?;
        }
        Ok(())
    }

    /// Records that the reports of `cluster` up to `seq` are durable (the caller flushed after
    /// recording them); durable itself after the next flush. Whether it moved.
    pub fn persist_acked(&self, cluster: &str, seq: u64) -> Result<bool, StoreError> {
        let mut mirror = self.mirror();
        let acked = mirror.acked.entry(cluster.to_owned()).or_default();
        if seq <= *acked {
            return Ok(false);
        }
        *acked = seq;
        self.acked
            .insert(cluster.as_bytes(), encode(&seq))
            .noted(self)?;
        Ok(true)
    }

    /// The highest seq of `cluster` whose reports are durable.
    pub fn acked_seq(&self, cluster: &str) -> Result<u64, StoreError> {
        Ok(self.mirror().acked.get(cluster).copied().unwrap_or(0))
    }

    pub fn reports(&self) -> Result<Vec<TargetReport>, StoreError> {
        values(&self.targets, "targets")
    }

    pub fn report(&self, cluster: &str, app: &str) -> Result<Option<TargetReport>, StoreError> {
        get(&self.targets, "targets", &report_key(cluster, app))
    }

    /// A summary of the last report on a Target (from memory).
    pub fn report_summary(&self, cluster: &str, app: &str) -> Option<ReportSummary> {
        self.mirror()
            .reports
            .get(&report_key(cluster, app))
            .cloned()
    }

    /// `f` of the last report's summary and the healthy mark of `app`'s Target on each of
    /// `clusters`, in order, from memory under one lock.
    pub fn with_targets<T>(
        &self,
        app: &str,
        clusters: &[&str],
        mut f: impl FnMut(usize, Option<&ReportSummary>, Option<&HealthyMark>) -> T,
    ) -> Vec<T> {
        let mirror = self.mirror();
        clusters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let key = report_key(c, app);
                f(i, mirror.reports.get(&key), mirror.healthy.get(&key))
            })
            .collect()
    }

    pub fn delete_report(&self, cluster: &str, app: &str) -> Result<(), StoreError> {
        let key = report_key(cluster, app);
        let mut mirror = self.mirror();
        self.targets.remove(&key).noted(self)?;
        mirror.reports.remove(&key);
        Ok(())
    }

    // --- repositories ------------------------------------------------------------------------

    pub fn repo_statuses(&self) -> Result<BTreeMap<String, RepoStatus>, StoreError> {
        entries(&self.repo_status, "repo_status")
    }

    pub fn repo_status(&self, repo: &str) -> Result<Option<RepoStatus>, StoreError> {
        get(&self.repo_status, "repo_status", repo)
    }

    pub fn put_repo_status(&self, repo: &str, status: &RepoStatus) -> Result<(), StoreError> {
        self.repo_status.insert(repo, encode(status)).noted(self)?;
        Ok(())
    }

    pub fn delete_repo_status(&self, repo: &str) -> Result<(), StoreError> {
        self.repo_status.remove(repo).noted(self)?;
        Ok(())
    }

    /// The revision each App is at.
    pub fn revisions(&self) -> Result<BTreeMap<String, AppRevision>, StoreError> {
        entries(&self.revisions, "revisions")
    }

    pub fn put_revision(&self, app: &str, revision: &AppRevision) -> Result<(), StoreError> {
        self.revisions.insert(app, encode(revision)).noted(self)?;
        Ok(())
    }

    pub fn delete_revision(&self, app: &str) -> Result<(), StoreError> {
        self.revisions.remove(app).noted(self)?;
        Ok(())
    }

    // --- rollouts ----------------------------------------------------------------------------

    /// Every App's current rollout.
    pub fn rollouts(&self) -> Result<BTreeMap<String, RolloutState>, StoreError> {
        Ok(self
            .mirror()
            .rollouts
            .iter()
            .map(|(app, state)| (app.clone(), RolloutState::clone(state)))
            .collect())
    }

    /// Every App's current rollout, shared (from memory).
    pub fn rollouts_shared(&self) -> HashMap<String, Arc<RolloutState>> {
        self.mirror().rollouts.clone()
    }

    pub fn rollout(&self, app: &str) -> Result<Option<RolloutState>, StoreError> {
        Ok(self
            .mirror()
            .rollouts
            .get(app)
            .map(|state| RolloutState::clone(state)))
    }

    /// An App's current rollout, shared (from memory).
    pub fn rollout_shared(&self, app: &str) -> Option<Arc<RolloutState>> {
        self.mirror().rollouts.get(app).cloned()
    }

    /// Stores an App's current rollout, and it as the latest state of its number in the
    /// App's history.
    pub fn put_rollout(&self, app: &str, state: &RolloutState) -> Result<(), StoreError> {
        let value = encode(state);
        // Under the mirror's lock, so that the trees and the mirror change in the same order.
        let mut mirror = self.mirror();
        (&self.rollouts, &self.rollout_history)
            .transaction(|(current, history)| {
                current.insert(app.as_bytes(), value.clone())?;
                history.insert(numbered_key(app, state.number), value.clone())?;
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => self.failed(e),
            })?;
        mirror
            .rollouts
            .insert(app.to_owned(), Arc::new(state.clone()));
        Ok(())
    }

    /// The last state of each of an App's rollouts, oldest first.
    pub fn rollout_history(&self, app: &str) -> Result<Vec<RolloutState>, StoreError> {
        self.rollout_history
            .scan_prefix(prefix_key(app))
            .map(|kv| {
                let (k, v) = kv?;
                decode("rollout_history", &String::from_utf8_lossy(&k), &v)
            })
            .collect()
    }

    /// Forgets an App's rollouts, healthy marks and controls (the App was deleted).
    pub fn delete_app_records(&self, app: &str) -> Result<(), StoreError> {
        {
            let mut mirror = self.mirror();
            self.rollouts.remove(app).noted(self)?;
            mirror.rollouts.remove(app);
        }
        self.app_controls.remove(app).noted(self)?;
        for kv in self.rollout_history.scan_prefix(prefix_key(app)) {
            let (k, _) = kv?;
            self.rollout_history.remove(k).noted(self)?;
        }
        let mut mirror = self.mirror();
        for kv in self.healthy.iter() {
            let (k, _) = kv?;
            if k.split(|b| *b == 0).nth(1) == Some(app.as_bytes()) {
                self.healthy.remove(&k).noted(self)?;
                mirror.healthy.remove(String::from_utf8_lossy(&k).as_ref());
            }
        }
        Ok(())
    }

    /// When a Target turned healthy at its revision (see `fleet::rollout::next_healthy_since`).
    pub fn healthy_mark(
        &self,
        cluster: &str,
        app: &str,
    ) -> Result<Option<HealthyMark>, StoreError> {
        Ok(self
            .mirror()
            .healthy
            .get(&report_key(cluster, app))
            .cloned())
    }

    pub fn put_healthy_mark(
        &self,
        cluster: &str,
        app: &str,
        mark: Option<&HealthyMark>,
    ) -> Result<(), StoreError> {
        let key = report_key(cluster, app);
        let mut mirror = self.mirror();
        match mark {
            Some(m) => {
                self.healthy.insert(&key, encode(m)).noted(self)?;
                mirror.healthy.insert(key, m.clone());
            }
            None => {
                self.healthy.remove(&key).noted(self)?;
                mirror.healthy.remove(&key);
            }
        };
        Ok(())
    }

    // --- app controls ------------------------------------------------------------------------

    pub fn app_controls(&self) -> Result<BTreeMap<String, AppControl>, StoreError> {
        entries(&self.app_controls, "app_controls")
    }

    pub fn app_control(&self, app: &str) -> Result<AppControl, StoreError> {
        Ok(get(&self.app_controls, "app_controls", app)?.unwrap_or_default())
    }

    pub fn put_app_control(&self, app: &str, control: &AppControl) -> Result<(), StoreError> {
        if *control == AppControl::default() {
            self.app_controls.remove(app).noted(self)?;
        } else {
            self.app_controls.insert(app, encode(control)).noted(self)?;
        }
        Ok(())
    }

    // --- events ------------------------------------------------------------------------------

    /// Records events, giving each the next id; the oldest beyond [`EVENTS_KEPT`] are dropped.
    pub fn append_events(&self, events: &mut [EventRecord]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for e in events.iter_mut() {
            // generate_id is monotonic across restarts, so ids keep the recording order.
            e.id = self.db.generate_id().noted(self)?;
            batch.insert(&e.id.to_be_bytes(), encode(&*e));
        }
        // The count is kept in memory: counting the tree would read all of it every time.
        let mut mirror = self.mirror();
        self.events.apply_batch(batch).noted(self)?;
        mirror.events += events.len();
        let excess = mirror.events.saturating_sub(EVENTS_KEPT);
        for kv in self.events.iter().take(excess) {
            let (k, _) = kv?;
            if self.events.remove(k).noted(self)?.is_some() {
                mirror.events -= 1;
            }
        }
        Ok(())
    }

    /// The newest `limit` events (of one App, and/or one cluster, when given) with an id above
    /// `after`, oldest first.
    pub fn events(
        &self,
        app: Option<&str>,
        cluster: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let mut out = Vec::new();
        for kv in self
            .events
            .range((after.saturating_add(1)).to_be_bytes()..)
            .rev()
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = kv?;
            let e: EventRecord = decode("events", &hex::encode(&k), &v)?;
            if app.is_some_and(|a| a != e.app) || cluster.is_some_and(|c| c != e.cluster) {
                continue;
            }
            out.push(e);
        }
        out.reverse();
        Ok(out)
    }
}

/// The trees a backup carries (everything but `meta`: an imported store is a new epoch).
const DATA_TREES: [&str; 14] = [
    "resources",
    "clusters",
    "tokens",
    "desired",
    "desired_history",
    "targets",
    "acked",
    "repo_status",
    "revisions",
    "rollouts",
    "rollout_history",
    "healthy",
    "events",
    "app_controls",
];

impl Store {
    /// Everything the store holds, as one JSON document (keys hex-encoded, values as stored).
    pub fn export(&self) -> Result<serde_json::Value, StoreError> {
        let mut trees = serde_json::Map::new();
        for name in DATA_TREES {
            let tree = self.db.open_tree(name)?;
            let mut entries = serde_json::Map::new();
            for kv in tree.iter() {
                let (k, v) = kv?;
                let value: serde_json::Value = decode(name, &String::from_utf8_lossy(&k), &v)?;
                entries.insert(hex::encode(&k), value);
            }
            trees.insert(name.to_owned(), serde_json::Value::Object(entries));
        }
        Ok(serde_json::json!({
            "schemaVersion": SCHEMA_VERSION,
            "epoch": self.epoch,
            "trees": trees,
        }))
    }

    /// Loads an [`export`](Self::export) into this store, which must hold no data yet. The
    /// store keeps its own (new) epoch, so every spoke gets a fresh snapshot.
    pub async fn import(&self, dump: &serde_json::Value) -> Result<(), StoreError> {
        let bad = |m: String| StoreError::Import(m);
        let version = dump
            .get("schemaVersion")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| bad("schemaVersion is missing".into()))?;
        if version > u64::from(SCHEMA_VERSION) {
            return Err(StoreError::SchemaTooNew {
                found: u32::try_from(version).unwrap_or(u32::MAX),
                expected: SCHEMA_VERSION,
            });
        }
        let trees = dump
            .get("trees")
            .and_then(serde_json::Value::as_object)
            .ok_or_else(|| bad("trees is missing".into()))?;
        for name in DATA_TREES {
            if !self.db.open_tree(name)?.is_empty() {
                return Err(bad(format!(
                    "the store already holds data (tree {name}); import into a new data directory"
                )));
            }
        }
        for (name, entries) in trees {
            if !DATA_TREES.contains(&name.as_str()) {
                return Err(bad(format!("unknown tree {name:?}")));
            }
            let entries = entries
                .as_object()
                .ok_or_else(|| bad(format!("tree {name:?} is not an object")))?;
            let mut batch = sled::Batch::default();
            for (key, value) in entries {
                let key = hex::decode(key)
                    .map_err(|e| bad(format!("tree {name:?}: key {key:?} is not hex: {e}")))?;
                batch.insert(key, encode(value));
            }
            self.db.open_tree(name)?.apply_batch(batch).noted(self)?;
        }
        let mirror = Mirror::load(self)?;
        *self.mirror() = mirror;
        self.flush().await
    }
}

fn resource_key(kind: Kind, name: &str) -> String {
    format!("{kind}/{name}")
}

fn history_key(cluster: &str, generation: u64) -> Vec<u8> {
    let mut key = cluster.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&generation.to_be_bytes());
    key
}

/// `app`, NUL, then the number big-endian: one App's entries sort together, in number order.
fn numbered_key(app: &str, number: u64) -> Vec<u8> {
    let mut key = prefix_key(app);
    key.extend_from_slice(&number.to_be_bytes());
    key
}

fn prefix_key(app: &str) -> Vec<u8> {
    let mut key = app.as_bytes().to_vec();
    key.push(0);
    key
}

fn report_key(cluster: &str, app: &str) -> String {
    format!("{cluster}\u{0}{app}")
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialise: string keys and plain data only")
}

fn decode<T: DeserializeOwned>(
    tree: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        key: key.to_owned(),
        message: e.to_string(),
    })
}

fn get<T: DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
    key: &str,
) -> Result<Option<T>, StoreError> {
    tree.get(key)?.map(|v| decode(name, key, &v)).transpose()
}

fn values<T: DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
) -> Result<Vec<T>, StoreError> {
    tree.iter()
        .map(|kv| {
            let (k, v) = kv?;
            decode(name, &String::from_utf8_lossy(&k), &v)
        })
        .collect()
}

fn entries<T: DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
) -> Result<BTreeMap<String, T>, StoreError> {
    tree.iter()
        .map(|kv| {
            let (k, v) = kv?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let value = decode(name, &key, &v)?;
            Ok((key, value))
        })
        .collect()
}

/// Remembers a failed write (see [`Store::failure`]).
trait Noted<T> {
    fn noted(self, store: &Store) -> Result<T, StoreError>;
}

impl<T> Noted<T> for Result<T, sled::Error> {
    fn noted(self, store: &Store) -> Result<T, StoreError> {
        self.map_err(|e| store.failed(e))
    }
}

fn flatten<T>(result: Result<T, TransactionError<StoreError>>) -> Result<T, StoreError> {
    result.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled(e),
    })
}
