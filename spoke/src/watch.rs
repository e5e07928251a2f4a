//! Watches on the objects a Target applied, so that a change made by someone else is noticed
//! within moments instead of at the next poll.
//!
//! One kube-runtime watcher per (kind, namespace) the Target applied into, selecting only this
//! App's objects by its `gitfleet.dev/app` label. A watch only says *that* something changed;
//! the agent then reads the objects back and decides (drift, health) as before, so a missed
//! event costs latency, never correctness: the agent's slow poll stays as the safety net.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt as _;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt as _};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::cluster::Cluster;
use crate::model::ObjectRef;
use crate::sync::render::LABEL_APP;

/// Running watches for one Target; dropping it stops them.
pub struct WatchSet {
    changed: Arc<Notify>,
    /// One flag per watcher: listed and watching (false until the first list, and after an
    /// error until the watch is back).
    live: Vec<Arc<AtomicBool>>,
    tasks: Vec<JoinHandle<()>>,
}

impl WatchSet {
    /// Starts watching `objects` (of App `app`). Kinds the server no longer resolves are left
    /// to the poll.
    pub async fn start<'a>(
        cluster: &Cluster,
        app: &str,
        objects: impl IntoIterator<Item = &'a ObjectRef>,
    ) -> Self {
        let mut groups: BTreeMap<(String, String, String), BTreeSet<String>> = BTreeMap::new();
        for o in objects {
            groups
                .entry((o.api_version.clone(), o.kind.clone(), o.namespace.clone()))
                .or_default()
                .insert(o.name.clone());
        }
        let changed = Arc::new(Notify::new());
        let mut set = Self {
            changed: changed.clone(),
            live: Vec::new(),
            tasks: Vec::new(),
        };
        let selector = format!("{LABEL_APP}={app}");
        for ((api_version, kind, namespace), names) in groups {
            let resolved = match cluster.resolve(&api_version, &kind).await {
                Ok(resolved) => resolved,
                Err(error) => {
                    tracing::debug!(%kind, %error, "not watching a kind the server does not resolve");
                    continue;
                }
            };
            let api: Api<kube::core::DynamicObject> = if resolved.namespaced {
                Api::namespaced_with(cluster.client().clone(), &namespace, &resolved.resource)
            } else {
                Api::all_with(cluster.client().clone(), &resolved.resource)
            };
            let config = watcher::Config::default().labels(&selector);
            let live = Arc::new(AtomicBool::new(false));
            set.live.push(live.clone());
            let changed = changed.clone();
            set.tasks.push(tokio::spawn(async move {
                let mut listed_before = false;
                let mut events = std::pin::pin!(watcher::watcher(api, config).default_backoff());
                while let Some(event) = events.next().await {
                    match event {
                        Ok(Event::Apply(object) | Event::Delete(object)) => {
                            if names.contains(&object.name_any()) {
                                changed.notify_one();
                            }
                        }
                        Ok(Event::InitDone) => {
                            live.store(true, Ordering::Relaxed);
                            // A restarted watch may have missed changes: look again.
                            if listed_before {
                                changed.notify_one();
                            }
                            listed_before = true;
                        }
                        Ok(Event::Init | Event::InitApply(_)) => {}
                        Err(error) => {
                            live.store(false, Ordering::Relaxed);
                            tracing::debug!(%kind, %namespace, %error, "watch interrupted; retrying");
                        }
                    }
                }
            }));
        }
        set
    }

    /// Resolves when a watched object changed (or may have) since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Whether every watch is listed and running, so that changes are seen as they happen.
    pub fn working(&self) -> bool {
        self.live.iter().all(|l| l.load(Ordering::Relaxed))
    }

    /// How many watches run.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl Drop for WatchSet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
