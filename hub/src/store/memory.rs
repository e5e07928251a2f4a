//! A [`Backend`] in memory, for tests: ordered maps behind one lock. Nothing survives the
//! process; `sync` only counts. It can be told to fail, as a full disk would.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use super::backend::{
    Backend, BackendError, BackendFuture, Batch, Condition, Entries, KeyRange, Op, Order, Tree,
};

type Trees = BTreeMap<Tree, BTreeMap<Vec<u8>, Vec<u8>>>;

#[derive(Debug, Default)]
pub struct MemoryBackend {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    trees: Trees,
    syncs: u64,
    /// When set, every commit and sync fails with it.
    broken: Option<String>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes every later commit and sync fail with `message`.
    pub fn break_with(&self, message: &str) {
        self.state().broken = Some(message.to_owned());
    }

    /// Makes commits and syncs work again (the cause of a failure is gone).
    pub fn heal(&self) {
        self.state().broken = None;
    }

    /// How many times `sync` was called.
    pub fn syncs(&self) -> u64 {
        self.state().syncs
    }

    fn check(state: &State) -> Result<(), BackendError> {
        match &state.broken {
            Some(message) => Err(BackendError::Storage(message.clone())),
            None => Ok(()),
        }
    }
}

fn in_range<'a>(
    tree: Option<&'a BTreeMap<Vec<u8>, Vec<u8>>>,
    range: &'a KeyRange,
) -> impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)> + 'a {
    tree.into_iter().flat_map(move |t| {
        t.range(range.start.clone()..)
            .take_while(move |(k, _)| range.contains(k))
    })
}

impl Backend for MemoryBackend {
    fn get<'a>(&'a self, tree: Tree, key: &'a [u8]) -> BackendFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            Ok(self
                .state()
                .trees
                .get(&tree)
                .and_then(|t| t.get(key))
                .cloned())
        })
    }

    fn scan(
        &self,
        tree: Tree,
        range: KeyRange,
        order: Order,
        limit: usize,
    ) -> BackendFuture<'_, Entries> {
        Box::pin(async move {
            let state = self.state();
            let entries: Vec<_> = in_range(state.trees.get(&tree), &range)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Ok(match order {
                Order::Ascending => entries.into_iter().take(limit).collect(),
                Order::Descending => entries.into_iter().rev().take(limit).collect(),
            })
        })
    }

    fn count(&self, tree: Tree) -> BackendFuture<'_, usize> {
        Box::pin(async move { Ok(self.state().trees.get(&tree).map_or(0, BTreeMap::len)) })
    }

    fn commit(&self, batch: Batch) -> BackendFuture<'_, ()> {
        Box::pin(async move {
            let mut state = self.state();
            Self::check(&state)?;
            for condition in &batch.conditions {
                let (tree, key, expected) = match condition {
                    Condition::Absent { tree, key } => (*tree, key, None),
                    Condition::Equals { tree, key, value } => (*tree, key, Some(value)),
                };
                if state.trees.get(&tree).and_then(|t| t.get(key)) != expected {
                    return Err(BackendError::conflict(tree, key));
                }
            }
            for op in batch.ops {
                match op {
                    Op::Put { tree, key, value } => {
                        state.trees.entry(tree).or_default().insert(key, value);
                    }
                    Op::Delete { tree, key } => {
                        if let Some(t) = state.trees.get_mut(&tree) {
                            t.remove(&key);
                        }
                    }
                    Op::DeleteRange { tree, range } => {
                        if let Some(t) = state.trees.get_mut(&tree) {
                            t.retain(|k, _| !range.contains(k));
                        }
                    }
                }
            }
            Ok(())
        })
    }

    fn sync(&self) -> BackendFuture<'_, ()> {
        Box::pin(async move {
            let mut state = self.state();
            Self::check(&state)?;
            state.syncs += 1;
            Ok(())
        })
    }
}
