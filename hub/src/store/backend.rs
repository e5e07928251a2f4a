//! What the hub's store needs from the database under it: named trees of byte keys and values,
//! ordered range reads, and atomic batches of writes made durable on demand. [`Store`] keeps the
//! typed records, the in-memory mirror and group commit above this; sled ([`SledBackend`]),
//! memory ([`MemoryBackend`], for tests) and etcd ([`EtcdBackend`]: a tree is a key prefix, a
//! batch a transaction, `sync` a check that etcd answers) implement it.
//!
//! [`Store`]: super::Store
//! [`SledBackend`]: super::sled::SledBackend
//! [`MemoryBackend`]: super::memory::MemoryBackend
//! [`EtcdBackend`]: super::etcd::EtcdBackend

use futures::future::BoxFuture;

/// A backend's answer: boxed so that [`Backend`] can be used as `dyn Backend`.
pub type BackendFuture<'a, T> = BoxFuture<'a, Result<T, BackendError>>;

/// Keys and values, in the order a scan returned them.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The trees of the store. Their names are the on-disk (sled) tree names and would be the key
/// prefixes of a networked store: renaming one loses its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tree {
    /// Schema version and hub epoch.
    Meta,
    Resources,
    Clusters,
    Tokens,
    /// Each cluster's desired state but its Targets (generation, which Apps at which
    /// `spec_generation`, tombstones), by cluster.
    Desired,
    /// Schema 1's whole desired state of each cluster's last generations; emptied by the
    /// migration to schema 2 and written no more.
    DesiredHistory,
    /// Each cluster's desired Targets one by one (`cluster`, NUL, App): a change to one App
    /// rewrites one record per cluster.
    DesiredTargets,
    Targets,
    Acked,
    RepoStatus,
    Revisions,
    Rollouts,
    RolloutHistory,
    Healthy,
    Events,
    AppControls,
    /// The admin API's users, by name.
    Users,
    /// The audit log, by id (big-endian).
    Audit,
    /// Which replica holds each cluster's link (`cluster`, NUL, replica id), on a store several
    /// hub replicas share; etcd drops a replica's entries with its lease.
    Presence,
    /// Freezes (`gitfleet freeze`), by name.
    Freezes,
    /// Notifications waiting to be delivered, by Notifier and event id
    /// (`NOTIFIER/EVENT-ID`, the id zero-padded to 20 digits so that keys sort by event).
    Deliveries,
    /// What each Notifier's deliveries did (last delivery, last error), by Notifier.
    NotifierStatus,
    /// The web dashboard's sign-in links (`signin/HASH`) and browser sessions
    /// (`session/HASH`), by the SHA-256 of their token; read from the backend, never mirrored,
    /// so that every replica accepts what any other wrote.
    Dashboard,
}

impl Tree {
    pub const ALL: [Tree; 23] = [
        Tree::Meta,
        Tree::Resources,
        Tree::Clusters,
        Tree::Tokens,
        Tree::Desired,
        Tree::DesiredHistory,
        Tree::DesiredTargets,
        Tree::Targets,
        Tree::Acked,
        Tree::RepoStatus,
        Tree::Revisions,
        Tree::Rollouts,
        Tree::RolloutHistory,
        Tree::Healthy,
        Tree::Events,
        Tree::AppControls,
        Tree::Users,
        Tree::Audit,
        Tree::Presence,
        Tree::Freezes,
        Tree::Deliveries,
        Tree::NotifierStatus,
        Tree::Dashboard,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Tree::Meta => "meta",
            Tree::Resources => "resources",
            Tree::Clusters => "clusters",
            Tree::Tokens => "tokens",
            Tree::Desired => "desired",
            Tree::DesiredHistory => "desired_history",
            Tree::DesiredTargets => "desired_targets",
            Tree::Targets => "targets",
            Tree::Acked => "acked",
            Tree::RepoStatus => "repo_status",
            Tree::Revisions => "revisions",
            Tree::Rollouts => "rollouts",
            Tree::RolloutHistory => "rollout_history",
            Tree::Healthy => "healthy",
            Tree::Events => "events",
            Tree::AppControls => "app_controls",
            Tree::Users => "users",
            Tree::Audit => "audit",
            Tree::Presence => "presence",
            Tree::Freezes => "freezes",
            Tree::Deliveries => "deliveries",
            Tree::NotifierStatus => "notifier_status",
            Tree::Dashboard => "dashboard",
        }
    }

    pub fn from_name(name: &str) -> Option<Tree> {
        Tree::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl std::fmt::Display for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The keys from `start` (included) up to `end` (excluded; `None`: to the end of the tree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    /// Every key of the tree.
    pub fn all() -> Self {
        Self::starting_at(Vec::new())
    }

    /// Every key from `start` on.
    pub fn starting_at(start: impl Into<Vec<u8>>) -> Self {
        Self {
            start: start.into(),
            end: None,
        }
    }

    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let start = prefix.into();
        let end = prefix_end(&start);
        Self { start, end }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }
}

/// The first key after every key starting with `prefix` (`None`: there is none).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// In which order a scan returns keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Ascending,
    Descending,
}

/// One write of a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        tree: Tree,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        tree: Tree,
        key: Vec<u8>,
    },
    /// Deletes every key in the range (a networked store does this in one request).
    DeleteRange {
        tree: Tree,
        range: KeyRange,
    },
}

/// What must hold before a [`Batch`] is applied; checked against the state before the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The key holds no value.
    Absent { tree: Tree, key: Vec<u8> },
    /// The key holds exactly this value.
    Equals {
        tree: Tree,
        key: Vec<u8>,
        value: Vec<u8>,
    },
}

/// Writes applied together, in order, if all their conditions hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub conditions: Vec<Condition>,
    pub ops: Vec<Op>,
    /// Whether it may be applied in any order with the unordered batches next to it (see
    /// [`Backend::commit_all`]): set by [`in_any_order`](Batch::in_any_order).
    pub unordered: bool,
}

impl Batch {
    pub fn put(&mut self, tree: Tree, key: impl Into<Vec<u8>>, value: Vec<u8>) -> &mut Self {
        self.ops.push(Op::Put {
            tree,
            key: key.into(),
            value,
        });
        self
    }

    pub fn delete(&mut self, tree: Tree, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(Op::Delete {
            tree,
            key: key.into(),
        });
        self
    }

    pub fn delete_range(&mut self, tree: Tree, range: KeyRange) -> &mut Self {
        self.ops.push(Op::DeleteRange { tree, range });
        self
    }

    /// Applies the batch only if `key` holds `value` (`None`: holds nothing).
    pub fn require(
        &mut self,
        tree: Tree,
        key: impl Into<Vec<u8>>,
        value: Option<Vec<u8>>,
    ) -> &mut Self {
        let key = key.into();
        self.conditions.push(match value {
            Some(value) => Condition::Equals { tree, key, value },
            None => Condition::Absent { tree, key },
        });
        self
    }

    /// Lets a backend apply this batch in any order with the unordered batches next to it
    /// (still whole, and never before a batch that is not unordered queued before it, nor
    /// after one queued after it), so that a networked backend can send them at once: each
    /// cluster's desired state is such a batch, since what a crash or another replica may see
    /// of a commit is then some clusters at the new state and the others at the old, each
    /// whole. Such a batch has no conditions (they would be checked after the writes before
    /// it, which an unordered batch does not have).
    pub fn in_any_order(&mut self) -> &mut Self {
        self.unordered = true;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty() && self.ops.is_empty()
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The database failed (I/O, a lost connection, a lock held by another process).
    #[error("{0}")]
    Storage(String),
    /// A condition of a batch did not hold: nothing of the batch was applied.
    #[error("store record {tree}/{key} is not as this write expected (changed by another writer)")]
    Conflict { tree: Tree, key: String },
}

impl BackendError {
    /// Whether it ends a run of commits ([`Backend::commit_all`]): anything but a lost race
    /// (a conflict refuses its own batch only).
    pub fn ends_commits(&self) -> bool {
        !matches!(self, BackendError::Conflict { .. })
    }

    /// The conflict error for a condition on `key` of `tree`.
    pub fn conflict(tree: Tree, key: &[u8]) -> Self {
        BackendError::Conflict {
            tree,
            key: String::from_utf8_lossy(key).into_owned(),
        }
    }
}

/// A write committed to a backend several stores share, as a watch of it sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The backend's revision of the transaction that made it.
    pub revision: i64,
    pub tree: Tree,
    pub key: Vec<u8>,
    /// `None`: deleted.
    pub value: Option<Vec<u8>>,
}

/// Every write committed from some point on, in commit order, a transaction's writes together;
/// an error ends it (the store cannot know what it missed).
pub type ChangeFeed = tokio::sync::mpsc::Receiver<Result<Vec<Change>, BackendError>>;

/// A database the hub's [`Store`](super::Store) can keep its state in.
///
/// What an implementation guarantees (the store relies on each):
/// - **Ordered trees.** Keys within a tree are ordered bytewise; scans return them in that
///   order (or its reverse) and see every batch committed before the scan started.
/// - **Atomic, conditional batches.** [`commit`](Backend::commit) checks every condition against
///   the state before the batch and applies the writes in order, with no other commit in
///   between; if a condition fails it applies nothing and returns [`BackendError::Conflict`].
///   This is what keeps read-modify-write records (a token's uses) right when several hubs
///   share a store; on one hub the store also serialises them in memory. A read that runs
///   while a batch is applied may see part of it (sled applies the writes one by one; etcd a
///   transaction whole, but a batch without conditions over its limits in several): the store reads from the backend only what it can take in any such state
///   (reports, history, events), and everything else from its mirror.
/// - **Durability on demand.** Once [`sync`](Backend::sync) returns, every batch whose commit
///   returned before `sync` was called survives a crash. Before that, a crash keeps a prefix
///   of the committed writes in commit order (possibly none of the unsynced ones, possibly part
///   of a batch; etcd, which commits durably, keeps whole transactions and splits a batch over
///   its limits after dropping every write a later one of the same key replaces, so that a
///   key's write counts where its last write stands), where the batches of a run of unordered
///   ones count in any order (etcd may keep some of them, whole, and not others): the store
///   orders its writes so that any such prefix is consistent (reports durable before the acked
///   seq that covers them is written; a cluster's desired Targets written with the record that
///   names them, the record last, whenever the batch may be split or the cluster's Apps
///   change, in one unordered batch per
///   cluster).
/// - **Writers.** sled has one writer (it holds a file lock). etcd may be shared by several
///   replicas of one hub: each store then learns the others' writes from
///   [`watch`](Backend::watch) and tells them from its own by the revisions
///   [`own_revisions`](Backend::own_revisions) gives, and the replicas divide the records
///   between them (see docs/ha.md) so that no record has two writers at once.
pub trait Backend: Send + Sync + 'static {
    /// The value of `key`, if any.
    fn get<'a>(&'a self, tree: Tree, key: &'a [u8]) -> BackendFuture<'a, Option<Vec<u8>>>;

    /// At most `limit` entries of `range`, in `order`.
    fn scan(
        &self,
        tree: Tree,
        range: KeyRange,
        order: Order,
        limit: usize,
    ) -> BackendFuture<'_, Entries>;

    /// How many entries `tree` holds.
    fn count(&self, tree: Tree) -> BackendFuture<'_, usize>;

    /// Applies `batch` atomically if its conditions hold (see the trait's guarantees).
    fn commit(&self, batch: Batch) -> BackendFuture<'_, ()>;

    /// Applies `batches` in turn, each as [`commit`](Backend::commit) would (its conditions
    /// checked after the writes of the batches before it); each one's outcome, in order. A
    /// batch that fails for another reason than a condition (a [`BackendError::Storage`]) ends
    /// it: the outcomes stop at it, and nothing after it is applied but, maybe, unordered
    /// batches of its run. A networked backend sends batches together where that keeps their
    /// meaning.
    ///
    /// A run of consecutive [unordered](Batch::in_any_order) batches may be applied in any
    /// order among themselves, and at once, each whole, after every batch before the run and
    /// before every batch after it; but a batch of the run that writes a key an earlier one of
    /// the run wrote is applied after that one (the later write stands).
    fn commit_all(&self, batches: Vec<Batch>) -> BoxFuture<'_, Vec<Result<(), BackendError>>> {
        Box::pin(async move {
            let mut outcomes = Vec::with_capacity(batches.len());
            for batch in batches {
                let outcome = self.commit(batch).await;
                let ends = outcome.as_ref().is_err_and(BackendError::ends_commits);
                outcomes.push(outcome);
                if ends {
                    break;
                }
            }
            outcomes
        })
    }

    /// Whether `batch`, committed alone or among others, is applied in one piece, so that
    /// another store watching sees all of it at once: always, but for a networked backend that
    /// splits a batch over its limits into several transactions. (A crash before
    /// [`sync`](Backend::sync) may still keep part of it, as the guarantees above say.)
    fn applies_whole(&self, _batch: &Batch) -> bool {
        true
    }

    /// Makes every batch committed so far durable.
    fn sync(&self) -> BackendFuture<'_, ()>;

    /// For a backend other stores write too: every write committed after this call, this
    /// store's own included. `None`: nobody else writes (the default).
    fn watch(&self) -> BackendFuture<'_, Option<ChangeFeed>> {
        Box::pin(async { Ok(None) })
    }

    /// The revisions of this store's commits since the last call (a shared backend's; none
    /// for the others): how a store tells its own writes in the [`watch`](Backend::watch).
    fn own_revisions(&self) -> Vec<i64> {
        Vec::new()
    }
}

/// Every entry of `tree`, in key order.
pub async fn load(backend: &dyn Backend, tree: Tree) -> Result<Entries, BackendError> {
    backend
        .scan(tree, KeyRange::all(), Order::Ascending, usize::MAX)
        .await
}
