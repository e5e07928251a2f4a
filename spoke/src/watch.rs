//! Watches on the objects the Targets applied, so that a change made by someone else is noticed
//! within moments instead of at the next poll.
//!
//! One [`Watches`] per cluster runs **one watch per kind** (per API resource), cluster-wide and
//! metadata-only, over every object of that kind (not only those carrying the `gitfleet.dev/app`
//! label the renderer puts on gitfleet's objects: ownership must tell an absent object from
//! someone else's without reading it). Each Target [subscribes](Watches::subscribe) with the
//! objects it applies; an event wakes only the Targets that named the object (see [`routing`]). Where the
//! spoke may not list a kind cluster-wide (a namespaced RBAC setup answers 403), that kind is
//! watched in each namespace its subscribers use instead. The last subscriber of a kind leaving
//! stops its watch.
//!
//! A watch only says *that* something changed; the agent then reads the objects back and decides
//! (drift, health) as before, so a missed event costs latency, never correctness: the agent's
//! slow poll stays as the safety net. No object bodies are kept: events carry metadata only, and
//! of that each watch keeps, per object, only what ownership needs ([`Watches::seen`]: for a
//! labelled object the App label, the resourceVersion, and `managedFields` only while the shared
//! field manager of earlier releases still holds an entry; for any other object its name alone),
//! so that the check before an apply costs no request per object: a first sync waits for one
//! list per kind instead ([`Subscription::listed`]).

pub mod routing;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures::StreamExt as _;
use kube::Api;
use kube::core::{ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::watcher::{self, Event};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::cluster::Cluster;
use crate::model::ObjectRef;
use crate::sync::render::LABEL_APP;
use routing::{AfterError, Interests, Place, Scope, SubscriberId};

/// Pause before restarting a failed watch; doubles per failure up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The shared watches of one cluster, made once with the cluster's client; dropping it stops
/// every watch.
pub struct Watches {
    shared: Arc<Shared>,
}

struct Shared {
    cluster: Arc<Cluster>,
    hub: Mutex<Hub>,
    /// Ids of subscribers and of watches (a watch checks that it was not replaced).
    next_id: AtomicU64,
}

#[derive(Default)]
struct Hub {
    kinds: HashMap<KindKey, KindWatch>,
    subscribers: HashMap<SubscriberId, Arc<Waker>>,
    /// Kinds the server refused to list cluster-wide: watched per namespace while the spoke
    /// runs (RBAC rarely widens under a running spoke; a restart tries again).
    forbidden_cluster_wide: HashSet<KindKey>,
}

/// One API resource, as resolved by discovery.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct KindKey {
    api_version: String,
    plural: String,
}

impl KindKey {
    fn of(resource: &ApiResource) -> Self {
        Self {
            api_version: resource.api_version.clone(),
            plural: resource.plural.clone(),
        }
    }
}

impl std::fmt::Display for KindKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.api_version, self.plural)
    }
}

struct KindWatch {
    resource: ApiResource,
    namespaced: bool,
    per_namespace: bool,
    interests: Interests,
    streams: BTreeMap<Scope, Stream>,
}

/// One running watch.
struct Stream {
    id: u64,
    /// Listed and watching (false until the first list, and after an error until it listed
    /// again).
    live: bool,
    /// The objects of this scope as of the last list and the events since, keyed by
    /// (namespace, name): for a labelled one what [`trimmed`] keeps, `None` for any other.
    objects: HashMap<(String, String), Option<serde_json::Value>>,
    task: JoinHandle<()>,
}

/// What a lookup in the watches' cache came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// A gitfleet-labelled object, as `{"metadata": {...}}` trimmed to what ownership reads.
    Labelled(serde_json::Value),
    /// An object without gitfleet's label.
    Unlabelled,
    /// The watch of its kind and scope is live and has no object under that name.
    Absent,
    /// Nothing watches that kind there yet (or its watch is relisting).
    Unknown,
}

/// An object's place, and the metadata ownership needs if it is labelled (`None` otherwise).
fn trimmed(meta: &kube::core::ObjectMeta) -> ((String, String), Option<serde_json::Value>) {
    let key = (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    );
    let Some(app) = meta.labels.as_ref().and_then(|l| l.get(LABEL_APP)) else {
        return (key, None);
    };
    let mut metadata = serde_json::json!({
        "labels": {LABEL_APP: app},
        "resourceVersion": meta.resource_version,
    });
    let legacy = meta
        .managed_fields
        .iter()
        .flatten()
        .any(|e| e.manager.as_deref() == Some(crate::sync::ownership::LEGACY_FIELD_MANAGER));
    if legacy && let Ok(entries) = serde_json::to_value(&meta.managed_fields) {
        metadata["managedFields"] = entries;
    }
    (key, Some(serde_json::json!({ "metadata": metadata })))
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a subscriber is woken.
#[derive(Default)]
struct Waker {
    notify: Notify,
    wakes: AtomicU64,
}

impl Waker {
    fn wake(&self) {
        self.wakes.fetch_add(1, Ordering::Relaxed);
        self.notify.notify_one();
    }
}

impl Watches {
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self {
            shared: Arc::new(Shared {
                cluster,
                hub: Mutex::new(Hub::default()),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    /// Subscribes App `app`'s Target to changes of `objects`, starting the watches of kinds
    /// nobody watched yet. Kinds the server does not resolve are left to the poll.
    pub async fn subscribe<'a>(
        &self,
        app: &str,
        objects: impl IntoIterator<Item = &'a ObjectRef>,
    ) -> Subscription {
        let mut by_kind: BTreeMap<(&str, &str), Vec<Place>> = BTreeMap::new();
        for o in objects {
            by_kind
                .entry((&o.api_version, &o.kind))
                .or_default()
                .push(Place::new(&o.namespace, &o.name));
        }
        let mut resolved = Vec::new();
        for ((api_version, kind), places) in by_kind {
            match self.shared.cluster.resolve(api_version, kind).await {
                Ok(r) => resolved.push((r, places)),
                Err(error) => {
                    tracing::debug!(%app, %kind, %error, "not watching a kind the server does not resolve");
                }
            }
        }
        let waker = Arc::new(Waker::default());
        let id = self.shared.next_id();
        let mut hub = self.shared.lock();
        hub.subscribers.insert(id, waker.clone());
        let mut kinds = Vec::new();
        for (r, places) in resolved {
            let key = KindKey::of(&r.resource);
            let per_namespace = hub.forbidden_cluster_wide.contains(&key);
            let kind = hub.kinds.entry(key.clone()).or_insert_with(|| KindWatch {
                resource: r.resource.clone(),
                namespaced: r.namespaced,
                per_namespace,
                interests: Interests::default(),
                streams: BTreeMap::new(),
            });
            kind.interests.add(id, places);
            if !kinds.contains(&key) {
                kinds.push(key.clone());
            }
            self.shared.start_wanted(&mut hub, &key);
        }
        drop(hub);
        Subscription {
            shared: self.shared.clone(),
            id,
            waker,
            kinds,
        }
    }

    /// What the watch of `resource` last saw of object `namespace`/`name` (`namespace` empty
    /// for a cluster-scoped object).
    pub fn seen(&self, resource: &ApiResource, namespace: &str, name: &str) -> Seen {
        let hub = self.shared.lock();
        let Some(kind) = hub.kinds.get(&KindKey::of(resource)) else {
            return Seen::Unknown;
        };
        let stream = kind
            .streams
            .get(&Scope::Cluster)
            .or_else(|| kind.streams.get(&Scope::Namespace(namespace.to_owned())));
        match stream {
            Some(stream) if stream.live => {
                match stream.objects.get(&(namespace.to_owned(), name.to_owned())) {
                    Some(Some(metadata)) => Seen::Labelled(metadata.clone()),
                    Some(None) => Seen::Unlabelled,
                    None => Seen::Absent,
                }
            }
            _ => Seen::Unknown,
        }
    }

    /// How many watches run (one per kind, or per namespace of a kind watched per namespace).
    pub fn len(&self) -> usize {
        self.shared
            .lock()
            .kinds
            .values()
            .map(|k| k.streams.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        // Subscriptions may outlive the hub's owner; the watches must not.
        self.shared.lock().kinds.clear();
    }
}

impl Shared {
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Hub> {
        self.hub
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the watches kind `key` needs and stops those it no longer needs.
    fn start_wanted(self: &Arc<Self>, hub: &mut Hub, key: &KindKey) {
        let Some(kind) = hub.kinds.get_mut(key) else {
            return;
        };
        let wanted = routing::wanted_scopes(&kind.interests, kind.namespaced, kind.per_namespace);
        kind.streams.retain(|scope, _| wanted.contains(scope));
        for scope in wanted {
            if kind.streams.contains_key(&scope) {
                continue;
            }
            let id = self.next_id();
            let client = self.cluster.client().clone();
            let api: Api<PartialObjectMeta<DynamicObject>> = match &scope {
                Scope::Namespace(namespace) => {
                    Api::namespaced_with(client, namespace, &kind.resource)
                }
                Scope::Cluster => Api::all_with(client, &kind.resource),
            };
            tracing::debug!(kind = %key, %scope, "starting a watch");
            let task = tokio::spawn(run_stream(
                Arc::downgrade(self),
                key.clone(),
                scope.clone(),
                id,
                api,
            ));
            kind.streams.insert(
                scope,
                Stream {
                    id,
                    live: false,
                    objects: HashMap::new(),
                    task,
                },
            );
        }
    }

    fn unsubscribe(self: &Arc<Self>, id: SubscriberId, kinds: &[KindKey]) {
        let mut hub = self.lock();
        hub.subscribers.remove(&id);
        for key in kinds {
            let Some(kind) = hub.kinds.get_mut(key) else {
                continue;
            };
            kind.interests.remove(id);
            if kind.interests.is_empty() {
                tracing::debug!(kind = %key, "no subscriber left; stopping its watch");
                hub.kinds.remove(key);
            } else {
                self.start_wanted(&mut hub, key);
            }
        }
    }
}

/// Locks the hub and runs `f` on the kind of stream `id`, unless that stream was stopped or
/// replaced meanwhile. Returns `None` when the stream should end.
fn with_stream<T>(
    shared: &Weak<Shared>,
    key: &KindKey,
    scope: &Scope,
    id: u64,
    f: impl FnOnce(&mut Hub) -> T,
) -> Option<T> {
    let shared = shared.upgrade()?;
    let mut hub = shared.lock();
    let current = hub
        .kinds
        .get(key)
        .and_then(|k| k.streams.get(scope))
        .is_some_and(|s| s.id == id);
    current.then(|| f(&mut hub))
}

impl Hub {
    fn wake(&self, subscribers: &[SubscriberId]) {
        for s in subscribers {
            if let Some(waker) = self.subscribers.get(s) {
                waker.wake();
            }
        }
    }

    fn stream_mut(&mut self, key: &KindKey, scope: &Scope) -> Option<&mut Stream> {
        self.kinds
            .get_mut(key)
            .and_then(|k| k.streams.get_mut(scope))
    }

    fn set_live(&mut self, key: &KindKey, scope: &Scope, live: bool) {
        if let Some(stream) = self
            .kinds
            .get_mut(key)
            .and_then(|k| k.streams.get_mut(scope))
        {
            stream.live = live;
        }
    }
}

/// Runs one watch until its task is aborted, restarting it (and listing again) after a pause
/// whenever it fails.
async fn run_stream(
    shared: Weak<Shared>,
    key: KindKey,
    scope: Scope,
    id: u64,
    api: Api<PartialObjectMeta<DynamicObject>>,
) {
    let mut pause = RETRY_MIN;
    loop {
        let config = watcher::Config::default();
        let mut events = std::pin::pin!(watcher::watcher(api.clone(), config));
        // A (re)list builds the cache afresh, so objects deleted while the watch was down go.
        let mut listing: HashMap<(String, String), Option<serde_json::Value>> = HashMap::new();
        let error = loop {
            let routed = match events.next().await {
                Some(Ok(event @ (Event::Apply(_) | Event::Delete(_)))) => {
                    let (deleted, object) = match event {
                        Event::Delete(object) => (true, object),
                        Event::Apply(object) => (false, object),
                        _ => continue,
                    };
                    let namespace = object.metadata.namespace.as_deref().unwrap_or_default();
                    let name = object.metadata.name.as_deref().unwrap_or_default();
                    let place = (namespace.to_owned(), name.to_owned());
                    let kept = (!deleted).then(|| trimmed(&object.metadata));
                    with_stream(&shared, &key, &scope, id, |hub| {
                        if let Some(stream) = hub.stream_mut(&key, &scope) {
                            match kept {
                                Some((place, metadata)) => {
                                    stream.objects.insert(place, metadata);
                                }
                                None => {
                                    stream.objects.remove(&place);
                                }
                            }
                        }
                        let to = hub
                            .kinds
                            .get(&key)
                            .map(|k| k.interests.route(namespace, name))
                            .unwrap_or_default();
                        hub.wake(&to);
                    })
                }
                Some(Ok(Event::InitDone)) => {
                    pause = RETRY_MIN;
                    // Changes made before this list completed arrive as part of it, not as
                    // events: every subscriber looks again (also after the first list, which
                    // may have raced a subscriber's own first look).
                    let listed = std::mem::take(&mut listing);
                    with_stream(&shared, &key, &scope, id, |hub| {
                        if let Some(stream) = hub.stream_mut(&key, &scope) {
                            stream.objects = listed;
                        }
                        hub.set_live(&key, &scope, true);
                        let to = hub
                            .kinds
                            .get(&key)
                            .map(|k| k.interests.listed(&scope))
                            .unwrap_or_default();
                        hub.wake(&to);
                    })
                }
                Some(Ok(Event::Init)) => {
                    listing.clear();
                    Some(())
                }
                Some(Ok(Event::InitApply(object))) => {
                    let (place, metadata) = trimmed(&object.metadata);
                    listing.insert(place, metadata);
                    Some(())
                }
                Some(Err(error)) => break Some(error),
                None => break None,
            };
            if routed.is_none() {
                return;
            }
        };
        // The watcher would resume on its own, but a resumed watch says nothing when it is
        // back: restarting it lists again, which says so (and wakes the subscribers).
        let forbidden = error.as_ref().is_some_and(is_forbidden);
        let fell_back = with_stream(&shared, &key, &scope, id, |hub| {
            hub.set_live(&key, &scope, false);
            let Some(kind) = hub.kinds.get_mut(&key) else {
                return false;
            };
            match routing::after_error(&scope, kind.namespaced, forbidden) {
                AfterError::Retry => false,
                AfterError::WatchPerNamespace => {
                    kind.per_namespace = true;
                    hub.forbidden_cluster_wide.insert(key.clone());
                    true
                }
            }
        });
        match fell_back {
            None => return,
            Some(true) => {
                tracing::warn!(
                    kind = %key,
                    "may not watch this kind in all namespaces (403); watching each namespace of its objects instead"
                );
                if let Some(shared) = shared.upgrade() {
                    // Replaces (and so stops) this watch.
                    let mut hub = shared.lock();
                    shared.start_wanted(&mut hub, &key);
                }
                return;
            }
            Some(false) => match &error {
                Some(error) => {
                    tracing::debug!(kind = %key, %scope, %error, retry_in = ?pause, "watch failed; restarting it")
                }
                None => tracing::debug!(kind = %key, %scope, "watch ended; restarting it"),
            },
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_MAX);
    }
}

fn is_forbidden(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status))
        | watcher::Error::WatchError(status) => status.is_forbidden(),
        _ => false,
    }
}

/// One Target's interest in its objects; dropping it unsubscribes (and stops watches nobody
/// needs any more).
pub struct Subscription {
    shared: Arc<Shared>,
    id: SubscriberId,
    waker: Arc<Waker>,
    kinds: Vec<KindKey>,
}

impl Subscription {
    /// Resolves when a subscribed object changed (or may have) since the last call.
    pub async fn changed(&self) {
        self.waker.notify.notified().await;
    }

    /// Whether every watch this subscription depends on has listed and is running, so that
    /// changes are seen as they happen.
    pub fn working(&self) -> bool {
        let hub = self.shared.lock();
        self.kinds.iter().all(|key| {
            hub.kinds.get(key).is_some_and(|kind| {
                let scopes: BTreeSet<Scope> = kind.streams.keys().cloned().collect();
                routing::working(&kind.interests, self.id, &scopes, |scope| {
                    kind.streams.get(scope).is_some_and(|s| s.live)
                })
            })
        })
    }

    /// Waits until every watch this subscription depends on has listed, or `deadline` passed;
    /// returns whether they all did. Before the first apply of a kind, one list answers the
    /// ownership check for all its objects (instead of a read of each).
    pub async fn listed(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            if self.working() {
                return true;
            }
            tokio::select! {
                () = self.waker.notify.notified() => {}
                () = tokio::time::sleep_until(deadline) => return self.working(),
            }
        }
    }

    /// How many kinds this subscription watches (kinds the server does not resolve are not
    /// counted).
    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// How often this subscription was woken so far (for tests and diagnostics).
    pub fn wakes(&self) -> u64 {
        self.waker.wakes.load(Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.unsubscribe(self.id, &self.kinds);
    }
}
