//! Everything the hub knows: typed records over a [`Backend`] (sled in the data directory,
//! memory in tests), with the records the hot paths read mirrored in memory.
//!
//! The backend stays behind [`Store`]: the rest of the hub sees typed records and the
//! operations it needs, so that a replicated backend can replace sled without touching the
//! logic. Values are JSON; keys are plain strings. Writes change the mirror at once and queue
//! for the backend; anything acknowledged to anyone must be followed by [`Store::flush`] before
//! the acknowledgement leaves the hub.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::fleet::AppRevision;
use crate::fleet::freeze::Freeze;
use crate::fleet::rollout::{HealthyMark, RolloutState};
use crate::model::{
    AppControl, ClusterRecord, EventRecord, RepoStatus, ReportSummary, TargetReport, TokenProblem,
    TokenRecord,
};
use crate::resources::{Kind, Resource};
use gitfleet_core::notify::{Delivery, NotifierStatus};
use gitfleet_core::users::{AuditRecord, AuditRetention, UserRecord};

pub mod backend;
mod desired;
pub mod etcd;
pub mod memory;
mod remote;
pub mod sled;

pub use backend::{Backend, BackendError, Batch, Change, ChangeFeed, KeyRange, Order, Tree};
pub use desired::{DesiredHead, StoredTarget};
pub use remote::{RemoteChange, RemoteChanges};

#[cfg(test)]
mod tests;

/// A real etcd for the store's tests (shared with the integration tests).
#[cfg(all(test, feature = "etcd"))]
#[path = "../../tests/support/etcd.rs"]
mod etcd_server;

/// Bumped whenever a stored record changes shape incompatibly; [`Store::open`] migrates from
/// older versions and refuses newer ones. 2: each desired Target under its own key
/// ([`Tree::DesiredTargets`]), no desired-state history. 3: a desired Target may be written
/// without its cluster's record, newer than it (see `store/desired.rs`).
pub const SCHEMA_VERSION: u32 = 3;

/// How many events the store keeps (the oldest go first).
pub const EVENTS_KEPT: usize = 50_000;

/// How many deliveries one Notifier may have waiting; beyond, the oldest are dropped (and
/// counted as given up on its status).
pub const MAX_PENDING_DELIVERIES: usize = 10_000;

/// How long a flush waits for more writes when callers are queueing for it (see
/// [`Store::flush`]): like PostgreSQL's `commit_delay`, a little latency for fewer disk syncs.
const FLUSH_LINGER: std::time::Duration = std::time::Duration::from_millis(2);

/// How often writes that no flush followed are handed to the backend (which makes them
/// durable on its own schedule: sled within half a second), so that they reach the disk as
/// they did when every write went to sled at once.
const COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// How many events a read of the events takes from the backend at a time.
const EVENTS_PAGE: usize = 512;

const SCHEMA_KEY: &str = "schema_version";
const EPOCH_KEY: &str = "epoch";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}")]
    Open { path: PathBuf, source: BackendError },
    #[error("store error: {0}")]
    Backend(#[from] BackendError),
    #[error("the store cannot make writes durable since an earlier failure: {0}")]
    Failed(String),
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
    /// A write made on condition that a record was still as read found it changed (another
    /// replica wrote it meanwhile): nothing of it was written.
    #[error("{0}")]
    Conflict(String),
}

/// Where the outcome of a write made on condition goes: `Err` with why it was not made.
type Outcome = Arc<OnceLock<Result<(), String>>>;

/// A record's tree and key.
type RecordKey = (Tree, Vec<u8>);

/// What became of a write made on condition (see [`Store::update_cluster_if_unchanged`]).
#[derive(Debug, Clone, Default)]
pub struct WriteCheck {
    outcome: Option<Outcome>,
}

impl WriteCheck {
    /// Makes the write durable, or says it was not made because the record had changed.
    pub async fn confirm(&self, store: &Store) -> Result<(), StoreError> {
        store.flush().await?;
        match self.outcome.as_ref().and_then(|o| o.get()) {
            Some(Err(why)) => Err(StoreError::Conflict(why.clone())),
            _ => Ok(()),
        }
    }
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
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    epoch: String,
    /// A random id of this store (this replica), for the records that say which replica
    /// holds what (see [`Store::set_presence`]).
    replica: String,
    /// The URL other replicas reach this one at, written in its presence records (see
    /// [`Store::set_replica_url`]).
    replica_url: OnceLock<String>,
    /// Others' writes, as this store learns them from a shared backend (see
    /// [`Store::subscribe_remote`]); `None` on a backend nobody else writes.
    remote: Option<tokio::sync::broadcast::Sender<RemoteChanges>>,
    /// The revisions of this store's own transactions whose changes the watch has not
    /// passed yet (see `remote::apply`).
    own_revisions: Mutex<std::collections::BTreeSet<i64>>,
    mirror: Mutex<Mirror>,
    /// Held while queued writes are handed to the backend, so that they reach it in the order
    /// they were made.
    committing: tokio::sync::Mutex<()>,
    group: GroupFlush,
    /// The first write or flush that failed (see [`Store::failure`]).
    failure: OnceLock<String>,
    /// Reads of every stored resource (see [`Store::resource_scans`]).
    resource_scans: AtomicU64,
}

/// Decoded copies of the records the hub reads synchronously (every rollout decision, every
/// status report, every recompute), so that those neither wait for the backend nor read and
/// decode thousands of records each time; and the writes not yet handed to the backend.
/// Loaded when the store opens and updated by every write: the backend stays the truth.
/// Reports, desired-state history, rollout history and events are read from the backend.
#[derive(Debug, Default)]
struct Mirror {
    /// Shared with readers that decide over the whole fleet (copied on the next write while one
    /// holds it), so that a decision does not copy 10,000 records.
    clusters: Arc<BTreeMap<String, ClusterRecord>>,
    /// Bumped whenever a cluster's place in the fleet may change (it is new, or its labels,
    /// revocation or approval changed, or it is gone), not by its contact times. Each mirror
    /// counts from a base of its own ([`placement_base`]), so that a version read from one
    /// never names a moment of another.
    placement_version: u64,
    /// By cluster (gone ones too): the placement version its place last changed at, so that a
    /// recompute may place again only the clusters that moved (see [`Store::placed_since`]).
    placed_at: HashMap<String, u64>,
    /// The same by version, so that the clusters moved since a version are read off its end.
    placed_log: BTreeMap<u64, String>,
    /// The version this mirror's count started from.
    placement_base: u64,
    /// By report key: a summary of the last report.
    reports: HashMap<String, ReportSummary>,
    /// By report key.
    healthy: HashMap<String, HealthyMark>,
    /// By App: the clusters whose Target's report or healthy mark changed since the App's
    /// observer last took them (see [`Store::take_target_changes`]). Only observed Apps have
    /// an entry; a new mirror (open, import) has none, so every observer reads afresh.
    target_changes: HashMap<String, HashSet<String>>,
    /// By App: its current rollout, decoded once rather than on every decision (a rollout
    /// across 10,000 clusters assigns each of them a revision).
    rollouts: HashMap<String, Arc<RolloutState>>,
    /// By resource key (`Kind/name`).
    resources: BTreeMap<String, Resource>,
    /// By hash: the record and its stored bytes (what a use of the token expects to replace).
    tokens: BTreeMap<String, (TokenRecord, Vec<u8>)>,
    repo_status: BTreeMap<String, RepoStatus>,
    revisions: BTreeMap<String, AppRevision>,
    app_controls: BTreeMap<String, AppControl>,
    /// The ids of the events kept, oldest first.
    event_ids: VecDeque<u64>,
    /// The id the next event gets.
    next_event_id: u64,
    /// By name: every user, revoked ones too (checked on every admin call, from here).
    users: BTreeMap<String, UserRecord>,
    /// By name: the freezes, ended ones too until they are deleted (read on every rollout
    /// decision, from here).
    freezes: BTreeMap<String, Freeze>,
    /// By delivery key (see [`delivery_store_key`]): the notifications not yet delivered
    /// (read by the delivery worker and `notifier list`, from here).
    deliveries: BTreeMap<String, Delivery>,
    /// By Notifier: what its deliveries did.
    notifier_status: BTreeMap<String, NotifierStatus>,
    /// The audit entries kept, oldest first: id and time.
    audit: VecDeque<(u64, i64)>,
    /// The id the next audit entry gets.
    next_audit_id: u64,
    audit_retention: AuditRetention,
    /// By cluster: the highest report seq recorded (durable or not), to refuse duplicates.
    seen: HashMap<String, u64>,
    /// By cluster: the highest seq whose reports are durable, the one to ack.
    acked: HashMap<String, u64>,
    /// Writes made but not yet handed to the backend, in order.
    pending: Vec<Batch>,
    /// The clusters whose desired state `pending` writes (see `Store::put_desired`).
    pending_desired: HashSet<String>,
    /// For the batches of `pending` (by index) made on condition by a writer that wants to know
    /// whether they held: where their outcome goes.
    pending_checks: Vec<(usize, Outcome)>,
    /// On a shared backend: the keys (and ranges) `pending` writes, so that a change another
    /// writer made before them, which they will overwrite, does not replace what the mirror
    /// holds already (`None` on a backend nobody else writes).
    pending_keys: Option<remote::PendingKeys>,
    /// By cluster: the replicas holding its link, with the URL each is reached at (empty
    /// when a replica of an older release wrote the record), on a shared backend.
    presence: HashMap<String, BTreeMap<String, String>>,
    /// On a shared backend: the low 16 bits of every event id this store gives, so that ids
    /// given by replicas at the same moment differ (see `next_id`).
    id_salt: Option<u16>,
}

/// A placement version far from any other mirror's in this process (see
/// [`Mirror::placement_version`]).
fn placement_base() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed) << 40
}

impl Mirror {
    /// A change of `cluster`'s place (see [`Mirror::placement_version`]).
    fn placement_changed(&mut self, cluster: &str) {
        self.placement_version += 1;
        let version = self.placement_version;
        match self.placed_at.get_mut(cluster) {
            Some(at) => {
                let name = self
                    .placed_log
                    .remove(at)
                    .unwrap_or_else(|| cluster.to_owned());
                *at = version;
                self.placed_log.insert(version, name);
            }
            None => {
                self.placed_at.insert(cluster.to_owned(), version);
                self.placed_log.insert(version, cluster.to_owned());
            }
        }
    }

    async fn load(backend: &dyn Backend) -> Result<Self, StoreError> {
        let base = placement_base();
        let mut mirror = Mirror {
            placement_version: base,
            placement_base: base,
            clusters: Arc::new(entries(backend, Tree::Clusters).await?),
            healthy: entries::<HealthyMark>(backend, Tree::Healthy)
                .await?
                .into_iter()
                .collect(),
            rollouts: entries::<RolloutState>(backend, Tree::Rollouts)
                .await?
                .into_iter()
                .map(|(app, state)| (app, Arc::new(state)))
                .collect(),
            resources: entries(backend, Tree::Resources).await?,
            repo_status: entries(backend, Tree::RepoStatus).await?,
            revisions: entries(backend, Tree::Revisions).await?,
            app_controls: entries(backend, Tree::AppControls).await?,
            users: entries(backend, Tree::Users).await?,
            freezes: entries(backend, Tree::Freezes).await?,
            deliveries: entries(backend, Tree::Deliveries).await?,
            notifier_status: entries(backend, Tree::NotifierStatus).await?,
            acked: entries::<u64>(backend, Tree::Acked)
                .await?
                .into_iter()
                .collect(),
            ..Default::default()
        };
        for (k, v) in backend::load(backend, Tree::Tokens).await? {
            let key = String::from_utf8_lossy(&k).into_owned();
            let record: TokenRecord = decode(Tree::Tokens, &key, &v)?;
            mirror.tokens.insert(key, (record, v));
        }
        for (k, v) in backend::load(backend, Tree::Targets).await? {
            let key = String::from_utf8_lossy(&k).into_owned();
            let report: TargetReport = decode(Tree::Targets, &key, &v)?;
            mirror.reports.insert(key, ReportSummary::from(&report));
        }
        for (k, _) in backend::load(backend, Tree::Events).await? {
            let id = event_id(&k).ok_or_else(|| StoreError::Corrupt {
                tree: Tree::Events.name(),
                key: hex::encode(&k),
                message: format!("{} bytes of key, expected 8", k.len()),
            })?;
            mirror.event_ids.push_back(id);
        }
        // Ids only grow, across restarts too, so that they keep the recording order; 0 is
        // never given, so that `after = 0` means every event.
        mirror.next_event_id = mirror.event_ids.back().map_or(1, |id| id + 1);
        for (k, v) in backend::load(backend, Tree::Audit).await? {
            let key = hex::encode(&k);
            let id = event_id(&k).ok_or_else(|| StoreError::Corrupt {
                tree: Tree::Audit.name(),
                key: key.clone(),
                message: format!("{} bytes of key, expected 8", k.len()),
            })?;
            let entry: AuditRecord = decode(Tree::Audit, &key, &v)?;
            mirror.audit.push_back((id, entry.at_unix));
        }
        mirror.next_audit_id = mirror.audit.back().map_or(1, |(id, _)| id + 1);
        // The links other replicas hold now: a replica started later learns of them here, since
        // the watch tells it only of links made or lost after its start.
        for (k, v) in backend::load(backend, Tree::Presence).await? {
            let key = String::from_utf8_lossy(&k);
            if let Some((cluster, replica)) = key.split_once('\u{0}') {
                mirror
                    .presence
                    .entry(cluster.to_owned())
                    .or_default()
                    .insert(replica.to_owned(), remote::presence_url(&v));
            }
        }
        mirror.seen = mirror.acked.clone();
        Ok(mirror)
    }

    /// Records that the Target of report key `key` changed, for its App's observer if it has
    /// one (see [`Store::take_target_changes`]).
    fn target_changed(&mut self, key: &str) {
        if self.target_changes.is_empty() {
            return;
        }
        if let Some((cluster, app)) = key.split_once('\u{0}')
            && let Some(changed) = self.target_changes.get_mut(app)
            && !changed.contains(cluster)
        {
            changed.insert(cluster.to_owned());
        }
    }

    /// Queues `batch` for the backend, after every write queued before it.
    fn write(&mut self, batch: Batch) {
        debug_assert!(
            !batch.unordered || batch.conditions.is_empty(),
            "an unordered batch has no conditions"
        );
        if let Some(keys) = &mut self.pending_keys {
            keys.add(&batch);
        }
        match self.pending.last_mut() {
            // Unconditional writes join the previous batch: fewer round trips for a networked
            // backend. A batch with conditions stays apart, so that its conditions are checked
            // after the writes before it, not before; so does an unordered one, which the
            // backend may send at once with its unordered neighbours.
            Some(last)
                if last.conditions.is_empty()
                    && batch.conditions.is_empty()
                    && !last.unordered
                    && !batch.unordered =>
            {
                last.ops.extend(batch.ops);
            }
            _ => self.pending.push(batch),
        }
    }

    fn put(&mut self, tree: Tree, key: impl Into<Vec<u8>>, value: Vec<u8>) {
        let mut batch = Batch::default();
        batch.put(tree, key, value);
        self.write(batch);
    }

    fn delete(&mut self, tree: Tree, key: impl Into<Vec<u8>>) {
        let mut batch = Batch::default();
        batch.delete(tree, key);
        self.write(batch);
    }
}

/// A store closed with writes still queued (no flush followed them) hands them to the backend
/// if it can take them without waiting (sled can: they reach the disk as sled closes, as when
/// every write went to sled at once).
impl Drop for Inner {
    fn drop(&mut self) {
        use futures::FutureExt;
        let mirror = self
            .mirror
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pending = std::mem::take(&mut mirror.pending);
        if pending.is_empty() || self.failure.get().is_some() {
            return;
        }
        for batch in pending {
            match self.backend.commit(batch).now_or_never() {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "writes no flush followed are lost as the store closes");
                    return;
                }
                None => {
                    tracing::warn!(
                        "writes no flush followed are lost as the store closes: the backend cannot take them at once"
                    );
                    return;
                }
            }
        }
    }
}

/// Group commit: callers that ask for a flush while one is running share the next one, so that
/// many spokes reporting at once cost one disk flush, not one each.
#[derive(Debug, Default)]
struct GroupFlush {
    /// Tickets handed out: one per `flush` call.
    requested: AtomicU64,
    /// Every ticket up to this one is durable.
    done: AtomicU64,
    /// Held by the caller doing the flush; the others queue here (fairly) and mostly find their
    /// ticket covered when they get it.
    leader: tokio::sync::Mutex<()>,
    /// Flushes actually done.
    flushes: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("epoch", &self.inner.epoch)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the sled store at `path`, checking the schema version and creating
    /// the hub epoch on first open.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let backend = sled::SledBackend::open(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::with_backend(Arc::new(backend)).await
    }

    /// A new, empty store in memory (for tests: nothing survives it).
    pub async fn in_memory() -> Result<Self, StoreError> {
        Self::with_backend(Arc::new(memory::MemoryBackend::new())).await
    }

    /// The store over `backend`, checking the schema version and creating the hub epoch on
    /// first open. Inside a Tokio runtime, a task hands writes that no flush followed to the
    /// backend every [`COMMIT_INTERVAL`] while the store lives.
    pub async fn with_backend(backend: Arc<dyn Backend>) -> Result<Self, StoreError> {
        let mut first = Batch::default();
        match backend.get(Tree::Meta, SCHEMA_KEY.as_bytes()).await? {
            None => {
                first.put(
                    Tree::Meta,
                    SCHEMA_KEY,
                    SCHEMA_VERSION.to_be_bytes().to_vec(),
                );
            }
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_slice())
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        tree: Tree::Meta.name(),
                        key: SCHEMA_KEY.into(),
                        message: format!("{} bytes, expected 4", v.len()),
                    })?;
                if found > SCHEMA_VERSION {
                    return Err(StoreError::SchemaTooNew {
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
                // Older versions are migrated one step at a time.
                if found < 2 {
                    desired::migrate_to_2(&*backend).await?;
                }
                if found < 3 {
                    desired::migrate_to_3(&*backend).await?;
                }
            }
        }
        let epoch = match backend.get(Tree::Meta, EPOCH_KEY.as_bytes()).await? {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => {
                let e = hex::encode(rand::random::<[u8; 16]>());
                first.put(Tree::Meta, EPOCH_KEY, e.as_bytes().to_vec());
                e
            }
        };
        if !first.is_empty() {
            backend.commit(first).await?;
        }
        backend.sync().await?;
        // Watched from before the load: a change made meanwhile is applied again, to the same
        // end (a change carries the whole record).
        let feed = backend.watch().await?;
        let mut mirror = Mirror::load(&*backend).await?;
        let remote = feed.as_ref().map(|_| {
            mirror.pending_keys = Some(remote::PendingKeys::default());
            let salt = rand::random::<u16>();
            mirror.id_salt = Some(salt);
            mirror.next_event_id = next_id(mirror.next_event_id.saturating_sub(1), Some(salt));
            tokio::sync::broadcast::channel(remote::FEED_CAPACITY).0
        });
        let store = Self {
            inner: Arc::new(Inner {
                backend,
                epoch,
                replica: hex::encode(rand::random::<[u8; 8]>()),
                replica_url: OnceLock::new(),
                remote,
                own_revisions: Mutex::new(Default::default()),
                mirror: Mutex::new(mirror),
                committing: tokio::sync::Mutex::new(()),
                group: GroupFlush::default(),
                failure: OnceLock::new(),
                resource_scans: AtomicU64::new(0),
            }),
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(commit_now_and_then(Arc::downgrade(&store.inner)));
            if let Some(feed) = feed {
                runtime.spawn(remote::follow(Arc::downgrade(&store.inner), feed));
            }
        }
        Ok(store)
    }

    fn own_revisions(&self) -> MutexGuard<'_, std::collections::BTreeSet<i64>> {
        self.inner
            .own_revisions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn mirror(&self) -> MutexGuard<'_, Mirror> {
        self.inner
            .mirror
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A random id of this hub's state, fixed at creation. Desired-state generations are only
    /// meaningful within one epoch.
    pub fn epoch(&self) -> &str {
        &self.inner.epoch
    }

    /// Hands every write queued so far to the backend, in order (visible to its reads, durable
    /// at its next sync); how many writes that was.
    async fn commit(&self) -> Result<usize, StoreError> {
        let _in_order = self.inner.committing.lock().await;
        if let Some(failure) = self.failure() {
            return Err(StoreError::Failed(failure.to_owned()));
        }
        let (pending, checks) = {
            let mut mirror = self.mirror();
            if let Some(keys) = &mut mirror.pending_keys {
                keys.clear();
            }
            mirror.pending_desired.clear();
            (
                std::mem::take(&mut mirror.pending),
                std::mem::take(&mut mirror.pending_checks),
            )
        };
        let writes = pending.iter().map(|b| b.ops.len()).sum();
        let given = pending.len();
        // By batch: where the outcome goes if its writer asked to know, and its keys, to read
        // again if it is refused (thousands of each when thousands of spokes connect at once).
        let mut checked: Vec<Option<(Outcome, Vec<RecordKey>)>> =
            (0..given).map(|_| None).collect();
        for (at, outcome) in checks {
            if let (Some(slot), Some(batch)) = (checked.get_mut(at), pending.get(at)) {
                *slot = Some((outcome, batch.ops.iter().filter_map(op_key).collect()));
            }
        }
        let outcomes = self.inner.backend.commit_all(pending).await;
        if self.inner.remote.is_some() {
            self.own_revisions()
                .extend(self.inner.backend.own_revisions());
        }
        let answered = outcomes.len();
        for (done, check) in outcomes.into_iter().zip(checked) {
            match (done, check) {
                (Ok(()), Some((outcome, _))) => {
                    let _ = outcome.set(Ok(()));
                }
                (Ok(()), None) => {}
                // A write whose writer asked to know: it is told, and the mirror reads the
                // records again (it holds the write that was not made).
                (Err(e @ BackendError::Conflict { .. }), Some((outcome, keys))) => {
                    let _ = outcome.set(Err(e.to_string()));
                    self.reread(&keys).await.map_err(|e| self.failed(e))?;
                }
                // A failed batch takes the writes queued after it with it: the store is failed
                // for good then (see `failure`), so that no later flush reports them durable.
                (Err(e), _) => return Err(self.failed(e)),
            }
        }
        if answered < given {
            return Err(self.failed(BackendError::Storage(format!(
                "the store's backend applied {answered} of {given} batches and did not say why"
            ))));
        }
        Ok(writes)
    }

    /// Makes every write so far durable. Concurrent callers share flushes (group commit): a
    /// caller returns once a flush that started after its call has finished.
    pub async fn flush(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        let group = &self.inner.group;
        // Everything this caller wrote happened before its ticket was drawn.
        let ticket = group.requested.fetch_add(1, SeqCst) + 1;
        let _leader = group.leader.lock().await;
        if group.done.load(SeqCst) >= ticket {
            return Ok(());
        }
        // Others are waiting too, so writes are arriving faster than flushes finish: wait a
        // moment for more of them, so that one flush covers more (each costs a disk sync and
        // several system calls, the bulk of the hub's work when many spokes report at once).
        if group.requested.load(SeqCst) > ticket {
            tokio::time::sleep(FLUSH_LINGER).await;
        }
        // Every ticket drawn before this load is covered by the commit and sync that follow.
        let upto = group.requested.load(SeqCst);
        let started = std::time::Instant::now();
        let writes = self.commit().await?;
        let committed = started.elapsed();
        self.inner
            .backend
            .sync()
            .await
            .map_err(|e| self.failed(e))?;
        tracing::debug!(
            writes,
            callers = upto - group.done.load(SeqCst),
            commit_ms = committed.as_millis() as u64,
            sync_ms = (started.elapsed() - committed).as_millis() as u64,
            "flushed"
        );
        group.flushes.fetch_add(1, SeqCst);
        group.done.fetch_max(upto, SeqCst);
        Ok(())
    }

    /// How many disk flushes this store has done (fewer than `flush` calls under load).
    pub fn flush_count(&self) -> u64 {
        self.inner.group.flushes.load(Ordering::SeqCst)
    }

    /// Why the store cannot make writes durable any more, if a write or flush failed: sled
    /// refuses every write for good after an I/O error (a full disk, say), even once the cause
    /// is gone, and writes queued behind a failed one are lost. Known without touching the
    /// disk, so that health probes cost nothing.
    pub fn failure(&self) -> Option<&str> {
        self.inner.failure.get().map(String::as_str)
    }

    /// Fails the store from outside (a replica that lost its lease): nothing more is
    /// acknowledged.
    pub fn fail(&self, why: &str) {
        self.failed(BackendError::Storage(why.to_owned()));
    }

    /// `e` as a store error, remembered (and logged) as the store's failure if it is the first.
    fn failed(&self, e: BackendError) -> StoreError {
        if self.inner.failure.set(e.to_string()).is_ok() {
            tracing::error!(error = %e, "the store cannot make writes durable any more; restart the hub once the cause is fixed");
        }
        StoreError::Backend(e)
    }

    /// The backend, once every write queued so far is handed to it, so that reads of it see
    /// them.
    async fn backend(&self) -> Result<&dyn Backend, StoreError> {
        self.commit().await?;
        Ok(&*self.inner.backend)
    }

    // --- resources ---------------------------------------------------------------------------

    pub fn resources(&self) -> Result<Vec<Resource>, StoreError> {
        self.inner.resource_scans.fetch_add(1, Ordering::Relaxed);
        Ok(self.mirror().resources.values().cloned().collect())
    }

    /// How many times every stored resource was read: work that nothing an unauthenticated
    /// caller sends may cause.
    pub fn resource_scans(&self) -> u64 {
        self.inner.resource_scans.load(Ordering::Relaxed)
    }

    pub fn resource(&self, kind: Kind, name: &str) -> Result<Option<Resource>, StoreError> {
        Ok(self
            .mirror()
            .resources
            .get(&resource_key(kind, name))
            .cloned())
    }

    /// Stores all of `resources` at once, or none of them.
    pub fn put_resources(&self, resources: &[Resource]) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        let mut mirror = self.mirror();
        for r in resources {
            let key = resource_key(r.kind(), r.name());
            batch.put(Tree::Resources, key.as_bytes(), encode(r));
            mirror.resources.insert(key, r.clone());
        }
        mirror.write(batch);
        Ok(())
    }

    pub fn delete_resource(&self, kind: Kind, name: &str) -> Result<bool, StoreError> {
        let key = resource_key(kind, name);
        let mut mirror = self.mirror();
        let found = mirror.resources.remove(&key).is_some();
        if found {
            mirror.delete(Tree::Resources, key);
        }
        Ok(found)
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

    /// The clusters whose place changed after placement version `version` (see
    /// [`Store::clusters_snapshot`]), gone ones included; `None` when `version` is not one of
    /// this store's memory (a version of another, or from its future).
    pub fn placed_since(&self, version: u64) -> Option<HashSet<String>> {
        let mirror = self.mirror();
        if version < mirror.placement_base || version > mirror.placement_version {
            return None;
        }
        Some(
            mirror
                .placed_log
                .range(version + 1..)
                .map(|(_, cluster)| cluster.clone())
                .collect(),
        )
    }

    pub fn cluster(&self, name: &str) -> Result<Option<ClusterRecord>, StoreError> {
        Ok(self.mirror().clusters.get(name).cloned())
    }

    pub fn put_cluster(&self, record: &ClusterRecord) -> Result<(), StoreError> {
        put_cluster_locked(&mut self.mirror(), record);
        Ok(())
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
            put_cluster_locked(&mut mirror, &record);
        }
        Ok(answer)
    }

    /// Like [`Store::update_cluster`], for a writer that may race another replica writing the
    /// same record (a link's contact, a renewal, against an admin's revocation or labels at the
    /// leader): on a shared store the write is made only if the record is still the one
    /// `change` read, and the [`WriteCheck`] tells whether it was; otherwise the other
    /// replica's write stands. On a store nobody else writes it is `update_cluster`.
    pub fn update_cluster_if_unchanged<T>(
        &self,
        name: &str,
        change: impl FnOnce(Option<&ClusterRecord>) -> (Option<ClusterRecord>, T),
    ) -> Result<(T, WriteCheck), StoreError> {
        let mut mirror = self.mirror();
        let old = mirror.clusters.get(name).map(encode);
        let (record, answer) = change(mirror.clusters.get(name));
        let Some(record) = record else {
            return Ok((answer, WriteCheck::default()));
        };
        if !self.is_shared() {
            put_cluster_locked(&mut mirror, &record);
            return Ok((answer, WriteCheck::default()));
        }
        let outcome = Arc::new(OnceLock::new());
        let mut batch = Batch::default();
        batch.require(Tree::Clusters, name.as_bytes(), old).put(
            Tree::Clusters,
            record.name.as_bytes(),
            encode(&record),
        );
        mirror.write(batch);
        mirror_cluster_locked(&mut mirror, &record);
        let at = mirror.pending.len() - 1;
        mirror.pending_checks.push((at, Arc::clone(&outcome)));
        Ok((
            answer,
            WriteCheck {
                outcome: Some(outcome),
            },
        ))
    }

    /// Reads `keys` from the backend into the mirror again.
    async fn reread(&self, keys: &[(Tree, Vec<u8>)]) -> Result<(), BackendError> {
        for (tree, key) in keys {
            let value = self.inner.backend.get(*tree, key).await?;
            let change = Change {
                revision: 0,
                tree: *tree,
                key: key.clone(),
                value,
            };
            let text = String::from_utf8_lossy(key).into_owned();
            if let Err(e) = self.mirror().apply_change(&change, &text) {
                tracing::warn!(error = %e, "cannot read a record again after a lost race");
            }
        }
        Ok(())
    }

    // --- tokens ------------------------------------------------------------------------------

    pub fn put_token(&self, hash: &str, record: &TokenRecord) -> Result<(), StoreError> {
        let value = encode(record);
        let mut mirror = self.mirror();
        mirror.put(Tree::Tokens, hash, value.clone());
        mirror
            .tokens
            .insert(hash.to_owned(), (record.clone(), value));
        Ok(())
    }

    /// The token with this hash, if there is one: a lookup, nothing written.
    pub fn token(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.mirror().tokens.get(hash).map(|(r, _)| r.clone()))
    }

    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        Ok(self
            .mirror()
            .tokens
            .values()
            .map(|(r, _)| r.clone())
            .collect())
    }

    /// Marks the token with this id revoked; false when there is none.
    pub fn revoke_token(&self, id: &str) -> Result<bool, StoreError> {
        let mut mirror = self.mirror();
        let Some(hash) = mirror
            .tokens
            .iter()
            .find(|(_, (r, _))| r.id == id)
            .map(|(hash, _)| hash.clone())
        else {
            return Ok(false);
        };
        let mut record = mirror.tokens[&hash].0.clone();
        record.revoked = true;
        let value = encode(&record);
        mirror.put(Tree::Tokens, hash.as_bytes(), value.clone());
        mirror.tokens.insert(hash, (record, value));
        Ok(true)
    }

    /// Checks the token with this hash and counts one use, atomically: under the mirror's
    /// lock here, and in the backend on condition that the record is still the one read (a
    /// token shared by several hubs is spent once per use).
    pub fn use_token(&self, hash: &str, now_unix: i64) -> Result<TokenRecord, StoreError> {
        let mut mirror = self.mirror();
        let Some((record, old)) = mirror.tokens.get(hash) else {
            return Err(StoreError::Token(TokenProblem::Unknown));
        };
        record.check(now_unix).map_err(StoreError::Token)?;
        let mut record = record.clone();
        record.uses += 1;
        let value = encode(&record);
        let mut batch = Batch::default();
        batch
            .require(Tree::Tokens, hash, Some(old.clone()))
            .put(Tree::Tokens, hash, value.clone());
        mirror.write(batch);
        mirror
            .tokens
            .insert(hash.to_owned(), (record.clone(), value));
        Ok(record)
    }

    // --- the dashboard's sign-in links and sessions ------------------------------------------

    /// A dashboard record (`signin/HASH` or `session/HASH`) and its stored bytes, read from the
    /// backend (after every write queued here): what any replica wrote is found.
    pub async fn dashboard_record<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, Vec<u8>)>, StoreError> {
        let backend = self.backend().await?;
        match backend.get(Tree::Dashboard, key.as_bytes()).await? {
            Some(v) => Ok(Some((decode(Tree::Dashboard, key, &v)?, v))),
            None => Ok(None),
        }
    }

    /// Writes a dashboard record (durable after the next flush).
    pub fn put_dashboard_record(&self, key: &str, record: &impl Serialize) {
        self.mirror().put(Tree::Dashboard, key, encode(record));
    }

    /// Deletes a dashboard record (durable after the next flush).
    pub fn delete_dashboard_record(&self, key: &str) {
        self.mirror().delete(Tree::Dashboard, key);
    }

    /// Replaces the record at `used` (still holding `old`) by `record` at `key`, in one write
    /// made on condition that `used` still holds `old`: of two uses of a single-use link, at
    /// any replicas, one is made and the other's [`WriteCheck`] says it lost.
    pub fn consume_dashboard_record(
        &self,
        used: &str,
        old: Vec<u8>,
        key: &str,
        record: &impl Serialize,
    ) -> WriteCheck {
        let mut mirror = self.mirror();
        let outcome = Arc::new(OnceLock::new());
        let mut batch = Batch::default();
        batch
            .require(Tree::Dashboard, used, Some(old))
            .delete(Tree::Dashboard, used)
            .put(Tree::Dashboard, key, encode(record));
        mirror.write(batch);
        let at = mirror.pending.len() - 1;
        mirror.pending_checks.push((at, Arc::clone(&outcome)));
        WriteCheck {
            outcome: Some(outcome),
        }
    }

    /// Deletes the dashboard records `expired` says are over (a sweep at each new sign-in
    /// link); durable after the next flush.
    pub async fn sweep_dashboard_records(
        &self,
        expired: impl Fn(&str, &[u8]) -> bool,
    ) -> Result<usize, StoreError> {
        let backend = self.backend().await?;
        let mut gone = 0;
        for (k, v) in backend::load(backend, Tree::Dashboard).await? {
            let key = String::from_utf8_lossy(&k).into_owned();
            if expired(&key, &v) {
                self.delete_dashboard_record(&key);
                gone += 1;
            }
        }
        Ok(gone)
    }

    // --- status reports ----------------------------------------------------------------------

    /// Records a report (or, with `report: None`, only its sequence number: a report the hub
    /// reads but does not keep) unless `seq` was seen before. Not durable until the next
    /// [`Store::flush`]; [`Store::ack_durably`] does that and records the seq as acked.
    ///
    /// Duplicates are told apart in memory (under the mirror's lock, so concurrent streams of
    /// one cluster are ordered), and the acked seq is written only once the reports are
    /// durable.
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
                mirror.put(Tree::Targets, key.as_bytes(), value);
                mirror.target_changed(&key);
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
        mirror.put(Tree::Acked, cluster, encode(&seq));
        Ok(true)
    }

    /// The highest seq of `cluster` whose reports are durable.
    pub fn acked_seq(&self, cluster: &str) -> Result<u64, StoreError> {
        Ok(self.mirror().acked.get(cluster).copied().unwrap_or(0))
    }

    /// Every Target's last report (read from the backend).
    pub async fn reports(&self) -> Result<Vec<TargetReport>, StoreError> {
        Ok(entries(self.backend().await?, Tree::Targets)
            .await?
            .into_values()
            .collect())
    }

    /// The last report on a Target (read from the backend; see [`Store::report_summary`]).
    pub async fn report(
        &self,
        cluster: &str,
        app: &str,
    ) -> Result<Option<TargetReport>, StoreError> {
        let key = report_key(cluster, app);
        self.backend()
            .await?
            .get(Tree::Targets, key.as_bytes())
            .await?
            .map(|v| decode(Tree::Targets, &key, &v))
            .transpose()
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
        f: impl FnMut(usize, Option<&ReportSummary>, Option<&HealthyMark>) -> T,
    ) -> Vec<T> {
        each_target(&self.mirror(), app, clusters, f)
    }

    /// The clusters whose Target of `app` had its report or healthy mark changed since the
    /// last call for `app`, so that an observer keeping what it read may read again only those.
    /// `None` when nothing was recorded for `app` (the first call, after
    /// [`Store::forget_target_changes`], or once the store's memory was read afresh): the
    /// observer reads every Target, and changes are recorded from this call on. Take the
    /// changes before reading, so that nothing written in between is missed.
    pub fn take_target_changes(&self, app: &str) -> Option<HashSet<String>> {
        let mut mirror = self.mirror();
        match mirror.target_changes.get_mut(app) {
            Some(changed) => Some(std::mem::take(changed)),
            None => {
                mirror.target_changes.insert(app.to_owned(), HashSet::new());
                None
            }
        }
    }

    /// Stops recording what changes in `app`'s Targets (its observer let go of what it read).
    pub fn forget_target_changes(&self, app: &str) {
        self.mirror().target_changes.remove(app);
    }

    /// [`Store::with_targets`] for an observer's cross-check: `f` also learns whether the
    /// Target changed since the last [`Store::take_target_changes`] (what it read of such a
    /// Target may be older than what the store holds now).
    #[cfg(debug_assertions)]
    pub fn with_targets_since_taken<T>(
        &self,
        app: &str,
        clusters: &[&str],
        mut f: impl FnMut(usize, Option<&ReportSummary>, Option<&HealthyMark>, bool) -> T,
    ) -> Vec<T> {
        let mirror = self.mirror();
        let changed = mirror.target_changes.get(app);
        each_target(&mirror, app, clusters, |i, report, mark| {
            let since = changed.is_none_or(|changed| changed.contains(clusters[i]));
            f(i, report, mark, since)
        })
    }

    pub fn delete_report(&self, cluster: &str, app: &str) -> Result<(), StoreError> {
        let key = report_key(cluster, app);
        let mut mirror = self.mirror();
        mirror.delete(Tree::Targets, key.as_bytes());
        mirror.reports.remove(&key);
        mirror.target_changed(&key);
        Ok(())
    }

    // --- repositories ------------------------------------------------------------------------

    pub fn repo_statuses(&self) -> Result<BTreeMap<String, RepoStatus>, StoreError> {
        Ok(self.mirror().repo_status.clone())
    }

    pub fn repo_status(&self, repo: &str) -> Result<Option<RepoStatus>, StoreError> {
        Ok(self.mirror().repo_status.get(repo).cloned())
    }

    pub fn put_repo_status(&self, repo: &str, status: &RepoStatus) -> Result<(), StoreError> {
        let mut mirror = self.mirror();
        mirror.put(Tree::RepoStatus, repo, encode(status));
        mirror.repo_status.insert(repo.to_owned(), status.clone());
        Ok(())
    }

    pub fn delete_repo_status(&self, repo: &str) -> Result<(), StoreError> {
        let mut mirror = self.mirror();
        mirror.delete(Tree::RepoStatus, repo);
        mirror.repo_status.remove(repo);
        Ok(())
    }

    /// The revision each App is at.
    pub fn revisions(&self) -> Result<BTreeMap<String, AppRevision>, StoreError> {
        Ok(self.mirror().revisions.clone())
    }

    /// The revision of one App (see [`revisions`](Self::revisions)).
    pub fn revision(&self, app: &str) -> Option<AppRevision> {
        self.mirror().revisions.get(app).cloned()
    }

    pub fn put_revision(&self, app: &str, revision: &AppRevision) -> Result<(), StoreError> {
        let mut mirror = self.mirror();
        mirror.put(Tree::Revisions, app, encode(revision));
        mirror.revisions.insert(app.to_owned(), revision.clone());
        Ok(())
    }

    pub fn delete_revision(&self, app: &str) -> Result<(), StoreError> {
        let mut mirror = self.mirror();
        mirror.delete(Tree::Revisions, app);
        mirror.revisions.remove(app);
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

    /// Stores an App's current rollout. The App's history keeps each rollout's last state; the
    /// current one's is its record, read over its history entry (see
    /// [`Store::rollout_history`]), so the entry is written only when the rollout starts or its
    /// phase changes, and the rollout before gets its last state when the next starts, in the
    /// same batch. A rollout over 10,000 clusters is decided hundreds of times, each writing
    /// the whole record: twice, when every decision wrote the entry too.
    pub fn put_rollout(&self, app: &str, state: &RolloutState) -> Result<(), StoreError> {
        let value = encode(state);
        let mut batch = Batch::default();
        let mut mirror = self.mirror();
        match mirror.rollouts.get(app) {
            Some(previous) if previous.number == state.number => {
                if previous.phase != state.phase {
                    batch.put(
                        Tree::RolloutHistory,
                        numbered_key(app, state.number),
                        value.clone(),
                    );
                }
            }
            previous => {
                if let Some(previous) = previous {
                    batch.put(
                        Tree::RolloutHistory,
                        numbered_key(app, previous.number),
                        encode(&**previous),
                    );
                }
                batch.put(
                    Tree::RolloutHistory,
                    numbered_key(app, state.number),
                    value.clone(),
                );
            }
        }
        batch.put(Tree::Rollouts, app, value);
        mirror.write(batch);
        mirror
            .rollouts
            .insert(app.to_owned(), Arc::new(state.clone()));
        Ok(())
    }

    /// The last state of each of an App's rollouts, oldest first: the history read from the
    /// backend, with the current rollout's record over its entry (which may be older). What it
    /// shows is durable: a rollout shown `complete` stays so if the hub is killed right after
    /// (the rollout driver stores a decision a moment before its flush, and the kill tests
    /// commit the next revision once the history says `complete`; shown before it was durable,
    /// a kill in that moment made the next rollout supersede it).
    pub async fn rollout_history(&self, app: &str) -> Result<Vec<RolloutState>, StoreError> {
        let current = self.rollout_shared(app);
        // Covers every write made before it, the current record's included.
        self.flush().await?;
        let mut states = self
            .backend()
            .await?
            .scan(
                Tree::RolloutHistory,
                KeyRange::prefix(prefix_key(app)),
                Order::Ascending,
                usize::MAX,
            )
            .await?
            .into_iter()
            .map(|(k, v)| decode(Tree::RolloutHistory, &String::from_utf8_lossy(&k), &v))
            .collect::<Result<Vec<RolloutState>, StoreError>>()?;
        if let Some(current) = current {
            match states.iter_mut().find(|s| s.number == current.number) {
                Some(entry) => *entry = RolloutState::clone(&current),
                None => {
                    states.push(RolloutState::clone(&current));
                    states.sort_by_key(|s| s.number);
                }
            }
        }
        Ok(states)
    }

    /// Forgets an App's rollouts, healthy marks and controls (the App was deleted).
    pub fn delete_app_records(&self, app: &str) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        batch
            .delete(Tree::Rollouts, app)
            .delete(Tree::AppControls, app)
            .delete_range(Tree::RolloutHistory, KeyRange::prefix(prefix_key(app)));
        let mut mirror = self.mirror();
        mirror.rollouts.remove(app);
        mirror.app_controls.remove(app);
        let marks: Vec<String> = mirror
            .healthy
            .keys()
            .filter(|k| k.split('\u{0}').nth(1) == Some(app))
            .cloned()
            .collect();
        for key in marks {
            batch.delete(Tree::Healthy, key.as_bytes());
            mirror.healthy.remove(&key);
        }
        mirror.target_changes.remove(app);
        mirror.write(batch);
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
        mirror.target_changed(&key);
        match mark {
            Some(m) => {
                mirror.put(Tree::Healthy, key.as_bytes(), encode(m));
                mirror.healthy.insert(key, m.clone());
            }
            None => {
                mirror.delete(Tree::Healthy, key.as_bytes());
                mirror.healthy.remove(&key);
            }
        };
        Ok(())
    }

    // --- app controls ------------------------------------------------------------------------

    pub fn app_controls(&self) -> Result<BTreeMap<String, AppControl>, StoreError> {
        Ok(self.mirror().app_controls.clone())
    }

    pub fn app_control(&self, app: &str) -> Result<AppControl, StoreError> {
        Ok(self
            .mirror()
            .app_controls
            .get(app)
            .cloned()
            .unwrap_or_default())
    }

    pub fn put_app_control(&self, app: &str, control: &AppControl) -> Result<(), StoreError> {
        let mut mirror = self.mirror();
        if *control == AppControl::default() {
            mirror.delete(Tree::AppControls, app);
            mirror.app_controls.remove(app);
        } else {
            mirror.put(Tree::AppControls, app, encode(control));
            mirror.app_controls.insert(app.to_owned(), control.clone());
        }
        Ok(())
    }

    // --- events ------------------------------------------------------------------------------

    /// Records events, giving each the next id; the oldest beyond [`EVENTS_KEPT`] are dropped.
    pub fn append_events(&self, events: &mut [EventRecord]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::default();
        let mut mirror = self.mirror();
        for e in events.iter_mut() {
            e.id = mirror.next_event_id;
            mirror.next_event_id = next_id(e.id, mirror.id_salt);
            batch.put(Tree::Events, e.id.to_be_bytes(), encode(&*e));
            mirror.event_ids.push_back(e.id);
        }
        while mirror.event_ids.len() > EVENTS_KEPT {
            if let Some(oldest) = mirror.event_ids.pop_front() {
                batch.delete(Tree::Events, oldest.to_be_bytes());
            }
        }
        mirror.write(batch);
        Ok(())
    }

    /// The newest `limit` events (of one App, and/or one cluster, when given) with an id above
    /// `after`, oldest first (read from the backend, newest first, a page at a time).
    pub async fn events(
        &self,
        app: Option<&str>,
        cluster: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let backend = self.backend().await?;
        let mut out = Vec::new();
        let mut range = KeyRange::starting_at(after.saturating_add(1).to_be_bytes());
        while out.len() < limit {
            let page = backend
                .scan(Tree::Events, range.clone(), Order::Descending, EVENTS_PAGE)
                .await?;
            let full = page.len() == EVENTS_PAGE;
            for (k, v) in &page {
                if out.len() >= limit {
                    break;
                }
                let e: EventRecord = decode(Tree::Events, &hex::encode(k), v)?;
                if app.is_some_and(|a| a != e.app) || cluster.is_some_and(|c| c != e.cluster) {
                    continue;
                }
                out.push(e);
            }
            match page.last() {
                Some((oldest, _)) if full => range.end = Some(oldest.clone()),
                _ => break,
            }
        }
        out.reverse();
        Ok(out)
    }

    /// The oldest events (of one App, and/or one cluster, when given) with an id above
    /// `after`, in id order, from one page of the backend: what a live read that fell behind
    /// (or resumes) sends next. With them the id to read on from, `None` once none follow.
    pub async fn events_after(
        &self,
        app: Option<&str>,
        cluster: Option<&str>,
        after: u64,
    ) -> Result<(Vec<EventRecord>, Option<u64>), StoreError> {
        let backend = self.backend().await?;
        let range = KeyRange::starting_at(after.saturating_add(1).to_be_bytes());
        let page = backend
            .scan(Tree::Events, range, Order::Ascending, EVENTS_PAGE)
            .await?;
        let mut out = Vec::new();
        for (k, v) in &page {
            let e: EventRecord = decode(Tree::Events, &hex::encode(k), v)?;
            if app.is_some_and(|a| a != e.app) || cluster.is_some_and(|c| c != e.cluster) {
                continue;
            }
            out.push(e);
        }
        let next = match page.last() {
            Some((last, _)) if page.len() == EVENTS_PAGE => event_id(last),
            _ => None,
        };
        Ok((out, next))
    }
}

impl Store {
    // --- users -------------------------------------------------------------------------------

    /// Every user, by name (from memory).
    pub fn users(&self) -> BTreeMap<String, UserRecord> {
        self.mirror().users.clone()
    }

    /// The user of this name (from memory: asked on every admin call).
    pub fn user(&self, name: &str) -> Option<UserRecord> {
        self.mirror().users.get(name).cloned()
    }

    /// Reads every user and writes one as one step: no other change of the users comes
    /// between (so that "not the last admin" still holds when the revocation is written).
    /// `change` returns the record to write (`None`: nothing) with its answer.
    pub fn change_users<T, E>(
        &self,
        change: impl FnOnce(&BTreeMap<String, UserRecord>) -> Result<(Option<UserRecord>, T), E>,
    ) -> Result<T, E> {
        let mut mirror = self.mirror();
        let (record, answer) = change(&mirror.users)?;
        if let Some(record) = record {
            mirror.put(Tree::Users, record.name.as_bytes(), encode(&record));
            mirror.users.insert(record.name.clone(), record);
        }
        Ok(answer)
    }

    // --- freezes -----------------------------------------------------------------------------

    /// Every freeze, by name (from memory: read by every rollout decision).
    pub fn freezes(&self) -> Vec<Freeze> {
        self.mirror().freezes.values().cloned().collect()
    }

    /// The freeze of this name, if any.
    pub fn freeze(&self, name: &str) -> Option<Freeze> {
        self.mirror().freezes.get(name).cloned()
    }

    /// Stores `freeze`, replacing any of its name (the engine checks under its write lock).
    pub fn put_freeze(&self, freeze: &Freeze) {
        let mut mirror = self.mirror();
        mirror.put(Tree::Freezes, freeze.name.as_bytes(), encode(freeze));
        mirror.freezes.insert(freeze.name.clone(), freeze.clone());
    }

    /// Deletes the freeze of this name, returning it if there was one.
    pub fn delete_freeze(&self, name: &str) -> Option<Freeze> {
        let mut mirror = self.mirror();
        let old = mirror.freezes.remove(name)?;
        mirror.delete(Tree::Freezes, name.as_bytes());
        Some(old)
    }

    // --- notifications -----------------------------------------------------------------------

    /// Every stored Notifier (from memory: asked for every event recorded).
    pub fn notifiers(&self) -> Vec<crate::resources::Notifier> {
        let mirror = self.mirror();
        let start = resource_key(Kind::Notifier, "");
        mirror
            .resources
            .range(start.clone()..)
            .take_while(|(k, _)| k.starts_with(&start))
            .filter_map(|(_, r)| match r {
                Resource::Notifier(n) => Some(n.clone()),
                _ => None,
            })
            .collect()
    }

    /// Queues `deliveries` (with the writes they report, in one flush). A Notifier holding
    /// [`MAX_PENDING_DELIVERIES`] already loses its oldest, counted as given up on its
    /// status, so that a receiver gone for good cannot fill the store.
    pub fn enqueue_deliveries(&self, deliveries: &[Delivery], now_unix: i64) {
        if deliveries.is_empty() {
            return;
        }
        let mut mirror = self.mirror();
        for d in deliveries {
            let key = delivery_store_key(&d.notifier, d.notification.event.id);
            mirror.put(Tree::Deliveries, key.as_bytes(), encode(d));
            mirror.deliveries.insert(key, d.clone());
            let prefix = format!("{}/", d.notifier);
            let pending: Vec<String> = mirror
                .deliveries
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, _)| k.clone())
                .collect();
            if pending.len() > MAX_PENDING_DELIVERIES {
                let dropped = pending.len() - MAX_PENDING_DELIVERIES;
                for key in &pending[..dropped] {
                    mirror.deliveries.remove(key);
                    mirror.delete(Tree::Deliveries, key.as_bytes());
                }
                let mut status = mirror
                    .notifier_status
                    .get(&d.notifier)
                    .cloned()
                    .unwrap_or_default();
                status.given_up += dropped as u64;
                status.last_error = format!(
                    "more than {MAX_PENDING_DELIVERIES} deliveries waiting: the oldest dropped"
                );
                status.last_error_unix = now_unix;
                mirror.put(Tree::NotifierStatus, d.notifier.as_bytes(), encode(&status));
                mirror.notifier_status.insert(d.notifier.clone(), status);
            }
        }
    }

    /// The deliveries waiting, oldest event first per Notifier (from memory).
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.mirror().deliveries.values().cloned().collect()
    }

    /// How many deliveries wait, by Notifier.
    pub fn pending_deliveries(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for d in self.mirror().deliveries.values() {
            *out.entry(d.notifier.clone()).or_default() += 1;
        }
        out
    }

    /// Whether `delivery` still waits (its Notifier was not deleted meanwhile).
    pub fn delivery_waits(&self, delivery: &Delivery) -> bool {
        self.mirror().deliveries.contains_key(&delivery_store_key(
            &delivery.notifier,
            delivery.notification.event.id,
        ))
    }

    /// Records an attempt of `delivery`: still waiting (another attempt scheduled, `done`
    /// false) or done with (delivered or given up), with its Notifier's new status.
    pub fn record_attempt(&self, delivery: &Delivery, done: bool, status: &NotifierStatus) {
        let key = delivery_store_key(&delivery.notifier, delivery.notification.event.id);
        let mut mirror = self.mirror();
        if !mirror.deliveries.contains_key(&key) {
            // Its Notifier was deleted while it was being sent.
            return;
        }
        let mut batch = Batch::default();
        if done {
            batch.delete(Tree::Deliveries, key.as_bytes());
            mirror.deliveries.remove(&key);
        } else {
            batch.put(Tree::Deliveries, key.as_bytes(), encode(delivery));
            mirror.deliveries.insert(key, delivery.clone());
        }
        batch.put(
            Tree::NotifierStatus,
            delivery.notifier.as_bytes(),
            encode(status),
        );
        mirror
            .notifier_status
            .insert(delivery.notifier.clone(), status.clone());
        mirror.write(batch);
    }

    /// One Notifier's status (from memory; the default before its first attempt).
    pub fn notifier_status(&self, notifier: &str) -> NotifierStatus {
        self.mirror()
            .notifier_status
            .get(notifier)
            .cloned()
            .unwrap_or_default()
    }

    /// Every Notifier's status, by name (from memory).
    pub fn notifier_statuses(&self) -> BTreeMap<String, NotifierStatus> {
        self.mirror().notifier_status.clone()
    }

    /// Forgets a deleted Notifier's deliveries and status.
    pub fn delete_notifier_records(&self, notifier: &str) {
        let mut mirror = self.mirror();
        let prefix = format!("{notifier}/");
        let keys: Vec<String> = mirror
            .deliveries
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        let mut batch = Batch::default();
        for key in keys {
            batch.delete(Tree::Deliveries, key.as_bytes());
            mirror.deliveries.remove(&key);
        }
        if mirror.notifier_status.remove(notifier).is_some() {
            batch.delete(Tree::NotifierStatus, notifier.as_bytes());
        }
        if !batch.is_empty() {
            mirror.write(batch);
        }
    }

    // --- audit log ---------------------------------------------------------------------------

    /// How much of the audit log to keep from now on (applied as entries are added).
    pub fn set_audit_retention(&self, retention: AuditRetention) {
        self.mirror().audit_retention = retention;
    }

    /// Records an audit entry, giving it the next id (durable with the next flush, which is
    /// the flush of the change it describes when it is recorded first); the entries the
    /// retention no longer keeps go.
    pub fn append_audit(&self, entry: &mut AuditRecord) -> Result<u64, StoreError> {
        let mut batch = Batch::default();
        let mut mirror = self.mirror();
        // Only the leading replica writes the audit log (every admin call reaches it): its ids
        // stay consecutive.
        entry.id = mirror.next_audit_id;
        mirror.next_audit_id += 1;
        batch.put(Tree::Audit, entry.id.to_be_bytes(), encode(&*entry));
        mirror.audit.push_back((entry.id, entry.at_unix));
        let expired = {
            let kept = &mirror.audit;
            mirror
                .audit_retention
                .expired(kept.len(), entry.at_unix, |i| kept[i].1)
        };
        for _ in 0..expired {
            if let Some((oldest, _)) = mirror.audit.pop_front() {
                batch.delete(Tree::Audit, oldest.to_be_bytes());
            }
        }
        mirror.write(batch);
        Ok(entry.id)
    }

    /// Rewrites an audit entry recorded before (its outcome, once known), if still kept.
    pub fn put_audit(&self, entry: &AuditRecord) -> Result<(), StoreError> {
        let mut mirror = self.mirror();
        if mirror
            .audit
            .front()
            .is_some_and(|(oldest, _)| entry.id >= *oldest)
        {
            mirror.put(Tree::Audit, entry.id.to_be_bytes(), encode(entry));
        }
        Ok(())
    }

    /// The newest `limit` audit entries (of one user, and at or after `since_unix`, when
    /// given), oldest first (read from the backend, newest first, a page at a time).
    pub async fn audit(
        &self,
        user: Option<&str>,
        since_unix: i64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let backend = self.backend().await?;
        let mut out = Vec::new();
        let mut range = KeyRange::all();
        'pages: while out.len() < limit {
            let page = backend
                .scan(Tree::Audit, range.clone(), Order::Descending, EVENTS_PAGE)
                .await?;
            let full = page.len() == EVENTS_PAGE;
            for (k, v) in &page {
                if out.len() >= limit {
                    break;
                }
                let e: AuditRecord = decode(Tree::Audit, &hex::encode(k), v)?;
                if e.at_unix < since_unix {
                    // Ids grow with time: everything older follows.
                    break 'pages;
                }
                if user.is_some_and(|u| u != e.user) {
                    continue;
                }
                out.push(e);
            }
            match page.last() {
                Some((oldest, _)) if full => range.end = Some(oldest.clone()),
                _ => break,
            }
        }
        out.reverse();
        Ok(out)
    }
}

/// Writes `record` (under the mirror's lock, so that the queue and the mirror change in the
/// same order), bumping the placement version if the cluster's place may have changed.
fn put_cluster_locked(mirror: &mut Mirror, record: &ClusterRecord) {
    mirror.put(Tree::Clusters, record.name.as_bytes(), encode(record));
    mirror_cluster_locked(mirror, record);
}

/// Puts `record` in the mirror, bumping the placement version if the cluster's place may have
/// changed.
fn mirror_cluster_locked(mirror: &mut Mirror, record: &ClusterRecord) {
    let placed_as_before = mirror.clusters.get(&record.name).is_some_and(|old| {
        old.labels == record.labels
            && old.revoked == record.revoked
            && old.pending == record.pending
    });
    if !placed_as_before {
        mirror.placement_changed(&record.name);
    }
    Arc::make_mut(&mut mirror.clusters).insert(record.name.clone(), record.clone());
}

/// The record a write writes (`None` for a range).
fn op_key(op: &backend::Op) -> Option<(Tree, Vec<u8>)> {
    match op {
        backend::Op::Put { tree, key, .. } | backend::Op::Delete { tree, key } => {
            Some((*tree, key.clone()))
        }
        backend::Op::DeleteRange { .. } => None,
    }
}

/// Hands queued writes to the backend every [`COMMIT_INTERVAL`] until the store is dropped.
async fn commit_now_and_then(store: Weak<Inner>) {
    loop {
        tokio::time::sleep(COMMIT_INTERVAL).await;
        let Some(inner) = store.upgrade() else {
            return;
        };
        let store = Store { inner };
        let idle = store.mirror().pending.is_empty();
        if !idle && store.failure().is_none() {
            // A failure is remembered and logged where it happens; flushes report it.
            let _ = store.commit().await;
        }
    }
}

/// The trees a backup carries (everything but `meta`, since an imported store is a new epoch,
/// `presence`, which only says what live replicas hold, and `dashboard`: browser sessions do
/// not outlive the hub they were made on).
fn data_trees() -> impl Iterator<Item = Tree> {
    Tree::ALL
        .into_iter()
        .filter(|t| !matches!(t, Tree::Meta | Tree::Presence | Tree::Dashboard))
}

impl Store {
    /// Everything the store holds, as one JSON document (keys hex-encoded, values as stored).
    pub async fn export(&self) -> Result<serde_json::Value, StoreError> {
        let backend = self.backend().await?;
        let mut trees = serde_json::Map::new();
        for tree in data_trees() {
            let mut entries = serde_json::Map::new();
            for (k, v) in backend::load(backend, tree).await? {
                let value: serde_json::Value = decode(tree, &String::from_utf8_lossy(&k), &v)?;
                entries.insert(hex::encode(&k), value);
            }
            trees.insert(tree.name().to_owned(), serde_json::Value::Object(entries));
        }
        Ok(serde_json::json!({
            "schemaVersion": SCHEMA_VERSION,
            "epoch": self.inner.epoch,
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
        let backend = self.backend().await?;
        for tree in data_trees() {
            if backend.count(tree).await? > 0 {
                return Err(bad(format!(
                    "the store already holds data (tree {tree}); import into a new data directory or etcd prefix"
                )));
            }
        }
        let mut batch = Batch::default();
        for (name, entries) in trees {
            let tree = Tree::from_name(name)
                .filter(|t| *t != Tree::Meta)
                .ok_or_else(|| bad(format!("unknown tree {name:?}")))?;
            let entries = entries
                .as_object()
                .ok_or_else(|| bad(format!("tree {name:?} is not an object")))?;
            for (key, value) in entries {
                let key = hex::decode(key)
                    .map_err(|e| bad(format!("tree {name:?}: key {key:?} is not hex: {e}")))?;
                batch.put(tree, key, encode(value));
            }
        }
        if version < u64::from(SCHEMA_VERSION) {
            // The dump's version until it is migrated (the migrations check it).
            let version = u32::try_from(version).unwrap_or(0);
            batch.put(Tree::Meta, SCHEMA_KEY, version.to_be_bytes().to_vec());
        }
        {
            let _in_order = self.inner.committing.lock().await;
            backend.commit(batch).await.map_err(|e| self.failed(e))?;
            // A backup of an older hub is migrated as its data directory would be.
            if version < 2 {
                desired::migrate_to_2(backend).await?;
            }
            if version < 3 {
                desired::migrate_to_3(backend).await?;
            }
            let mut mirror = Mirror::load(backend).await?;
            let mut current = self.mirror();
            mirror.pending = std::mem::take(&mut current.pending);
            mirror.pending_desired = std::mem::take(&mut current.pending_desired);
            mirror.pending_checks = std::mem::take(&mut current.pending_checks);
            mirror.pending_keys = current.pending_keys.take();
            mirror.id_salt = current.id_salt;
            *current = mirror;
        }
        self.flush().await
    }
}

/// A delivery's key in [`Tree::Deliveries`]: the Notifier and the event id, padded so that a
/// Notifier's deliveries sort by event.
fn delivery_store_key(notifier: &str, event_id: u64) -> String {
    format!("{notifier}/{event_id:020}")
}

fn resource_key(kind: Kind, name: &str) -> String {
    format!("{kind}/{name}")
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

/// `f` of the last report's summary and the healthy mark of `app`'s Target on each of
/// `clusters`, in order, from `mirror`.
fn each_target<T>(
    mirror: &Mirror,
    app: &str,
    clusters: &[&str],
    mut f: impl FnMut(usize, Option<&ReportSummary>, Option<&HealthyMark>) -> T,
) -> Vec<T> {
    // One key buffer for every cluster (this runs over an App's 10,000 clusters).
    let mut key = String::new();
    clusters
        .iter()
        .enumerate()
        .map(|(i, c)| {
            report_key_into(&mut key, c, app);
            f(i, mirror.reports.get(&key), mirror.healthy.get(&key))
        })
        .collect()
}

fn report_key(cluster: &str, app: &str) -> String {
    let mut key = String::with_capacity(cluster.len() + 1 + app.len());
    report_key_into(&mut key, cluster, app);
    key
}

/// [`report_key`] written into `key`, which is cleared first (one buffer for many lookups).
fn report_key_into(key: &mut String, cluster: &str, app: &str) {
    key.clear();
    key.push_str(cluster);
    key.push('\u{0}');
    key.push_str(app);
}

/// The id after `id`: the next number, or on a shared backend (`salt`) the next multiple of
/// 2^16 plus this store's salt, so that replicas giving ids at once give different ones and ids
/// still grow in the order each replica gives them.
fn next_id(id: u64, salt: Option<u16>) -> u64 {
    match salt {
        None => id + 1,
        Some(salt) => (((id >> 16) + 1) << 16) | u64::from(salt),
    }
}

fn event_id(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialise: string keys and plain data only")
}

fn decode<T: DeserializeOwned>(tree: Tree, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree: tree.name(),
        key: key.to_owned(),
        message: e.to_string(),
    })
}

/// Every record of `tree`, decoded, by key.
async fn entries<T: DeserializeOwned>(
    backend: &dyn Backend,
    tree: Tree,
) -> Result<BTreeMap<String, T>, StoreError> {
    backend::load(backend, tree)
        .await?
        .into_iter()
        .map(|(k, v)| {
            let key = String::from_utf8_lossy(&k).into_owned();
            let value = decode(tree, &key, &v)?;
            Ok((key, value))
        })
        .collect()
}
