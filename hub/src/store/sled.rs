//! The store's embedded backend: sled, in the hub's data directory. The only code that knows
//! sled. One sled tree per [`Tree`], named after it; values and keys as the store gives them,
//! so data directories written before the [`Backend`] trait existed open unchanged.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use super::backend::{
    Backend, BackendError, BackendFuture, Batch, Condition, Entries, KeyRange, Op, Order, Tree,
};

pub struct SledBackend {
    db: ::sled::Db,
    trees: HashMap<Tree, ::sled::Tree>,
    /// Held while a batch is checked and applied, so that no other commit comes between (the
    /// database's file lock keeps other processes out).
    commit: Mutex<()>,
}

impl std::fmt::Debug for SledBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledBackend").finish_non_exhaustive()
    }
}

fn storage(e: ::sled::Error) -> BackendError {
    BackendError::Storage(e.to_string())
}

impl SledBackend {
    /// Opens (or creates) the database at `path`, waiting briefly for its lock: sled releases
    /// the lock only when the background flusher of the last handle exits, a moment after the
    /// handle is dropped, so a store reopened in the same process (a hub restarted in place)
    /// can find it still held. A lock held for longer (another hub on the same directory) is
    /// reported.
    pub fn open(path: &Path) -> Result<Self, BackendError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            match ::sled::Config::new().path(path).open() {
                // sled wraps the lock failure as `Other` with the OS error in its message.
                Err(::sled::Error::Io(e))
                    if (e.kind() == std::io::ErrorKind::WouldBlock
                        || e.to_string().contains("could not acquire lock"))
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other.map_err(storage)?,
            }
        };
        let trees = Tree::ALL
            .into_iter()
            .map(|t| Ok((t, db.open_tree(t.name()).map_err(storage)?)))
            .collect::<Result<_, BackendError>>()?;
        Ok(Self {
            db,
            trees,
            commit: Mutex::new(()),
        })
    }

    fn tree(&self, tree: Tree) -> &::sled::Tree {
        // Every tree is opened in `open`.
        &self.trees[&tree]
    }

    fn scan_now(
        &self,
        tree: Tree,
        range: &KeyRange,
        order: Order,
        limit: usize,
    ) -> Result<Entries, BackendError> {
        let t = self.tree(tree);
        let iter = match &range.end {
            Some(end) => t.range(range.start.as_slice()..end.as_slice()),
            None => t.range(range.start.as_slice()..),
        };
        let pair = |kv: Result<(::sled::IVec, ::sled::IVec), ::sled::Error>| {
            kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(storage)
        };
        match order {
            Order::Ascending => iter.take(limit).map(pair).collect(),
            Order::Descending => iter.rev().take(limit).map(pair).collect(),
        }
    }

    fn commit_now(&self, batch: &Batch) -> Result<(), BackendError> {
        let _one_at_a_time = self
            .commit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for condition in &batch.conditions {
            let (tree, key, expected) = match condition {
                Condition::Absent { tree, key } => (*tree, key, None),
                Condition::Equals { tree, key, value } => (*tree, key, Some(value.as_slice())),
            };
            let found = self.tree(tree).get(key).map_err(storage)?;
            if found.as_deref() != expected {
                return Err(BackendError::conflict(tree, key));
            }
        }
        // Plain inserts in order, not a sled batch or transaction: each of those writes and
        // syncs sled's log buffer twice, and a crash keeps a prefix of plain inserts anyway.
        for op in &batch.ops {
            match op {
                Op::Put { tree, key, value } => {
                    self.tree(*tree)
                        .insert(key.as_slice(), value.as_slice())
                        .map_err(storage)?;
                }
                Op::Delete { tree, key } => {
                    self.tree(*tree).remove(key.as_slice()).map_err(storage)?;
                }
                Op::DeleteRange { tree, range } => {
                    for (key, _) in self.scan_now(*tree, range, Order::Ascending, usize::MAX)? {
                        self.tree(*tree).remove(key).map_err(storage)?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Backend for SledBackend {
    fn get<'a>(&'a self, tree: Tree, key: &'a [u8]) -> BackendFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            Ok(self
                .tree(tree)
                .get(key)
                .map_err(storage)?
                .map(|v| v.to_vec()))
        })
    }

    fn scan(
        &self,
        tree: Tree,
        range: KeyRange,
        order: Order,
        limit: usize,
    ) -> BackendFuture<'_, Entries> {
        Box::pin(async move { self.scan_now(tree, &range, order, limit) })
    }

    fn count(&self, tree: Tree) -> BackendFuture<'_, usize> {
        Box::pin(async move { Ok(self.tree(tree).len()) })
    }

    fn commit(&self, batch: Batch) -> BackendFuture<'_, ()> {
        Box::pin(async move { self.commit_now(&batch) })
    }

    fn sync(&self) -> BackendFuture<'_, ()> {
        Box::pin(async move {
            self.db.flush_async().await.map_err(storage)?;
            Ok(())
        })
    }
}
