//! The `Watch` service: live reads of Target status, a rollout and events, as server streams.
//!
//! Each stream is a task that first sends where things stand and then follows the engine's
//! change feed ([`Engine::subscribe_changes`]) or its event bus, re-reading only what a change
//! names (one Target, one cluster's Targets, one App's rollout) and sending only what differs
//! from what it sent last. Nothing is re-read on a timer, so a watcher costs what changes in
//! what it watches. A stream that falls behind the feed (`RecvError::Lagged`) does not skip
//! anything silently: the status stream sends a fresh snapshot, the rollout stream the
//! rollout as it is, the events stream reads the missed events back from the store by id.
//!
//! Authorized as the reads they mirror (`Status`, `GetRollout`, `ListEvents`: any role, see
//! `auth::reader`), once when the stream opens; reads are not narrowed to a user's Projects
//! (docs/tenancy.md), so neither is what a stream sends.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use gitfleet_core::authz::Action;
use gitfleet_proto::v1 as pb;
use gitfleet_proto::v1::watch_server::Watch;
use prost::Message;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::debug;

use super::auth::reader;
use super::rollouts::{event, rollout_status};
use super::{convert, required};
use crate::engine::{BUS_CAPACITY, Engine, FleetChange};
use crate::model::EventRecord;

#[cfg(test)]
mod tests;

/// Messages queued for a client that reads slowly; then the stream's task waits for it (and
/// falls behind the feed, which it then recovers from as from any lag).
const OUT_QUEUE: usize = 16;
/// A message ends before what it carries passes this, encoded (a quarter of the message
/// limit, as a `Status` page).
const MESSAGE_BYTES: usize = gitfleet_proto::MAX_MESSAGE_BYTES / 4;
/// At most this many changes are read again together (queued changes coalesce: ten reports of
/// one Target are one read).
const COALESCE_MAX: usize = 4096;
/// A rollout stream reads the rollout again at most this often.
const ROLLOUT_READ_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// Events a `WatchEvents` without a resume point starts with when it names no limit, and at most.
const DEFAULT_EVENTS: usize = 100;
const MAX_EVENTS: usize = 10_000;
/// How many of the ids it sent an events stream remembers, to send none twice: more than the
/// bus can hold, which bounds how far the store's read-back and the bus overlap.
const DELIVERED_WINDOW: usize = 2 * BUS_CAPACITY;

pub type WatchStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;
type Out<T> = mpsc::Sender<Result<T, Status>>;

#[derive(Debug, Clone)]
pub struct WatchService {
    engine: Arc<Engine>,
}

impl WatchService {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Runs `task` as the stream's producer until it ends, the client goes away or the hub stops.
fn spawn<T, F>(engine: &Arc<Engine>, task: impl FnOnce(Out<T>) -> F) -> Response<WatchStream<T>>
where
    T: Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(OUT_QUEUE);
    let gone = tx.clone();
    let shutdown = engine.shutdown_token().clone();
    let work = task(tx);
    tokio::spawn(async move {
        tokio::select! {
            () = work => {}
            () = gone.closed() => debug!("a watcher went away"),
            () = shutdown.cancelled() => {}
        }
    });
    Response::new(Box::pin(ReceiverStream::new(rx)))
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStatusStream = WatchStream<pb::WatchStatusResponse>;
    type WatchRolloutStream = WatchStream<pb::RolloutStatus>;
    type WatchEventsStream = WatchStream<pb::WatchEventsResponse>;

    async fn watch_status(
        &self,
        request: Request<pb::WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        reader(&self.engine, &request, Action::Status)?;
        let req = request.into_inner();
        let filter = Filter {
            app: non_empty(req.app),
            cluster: non_empty(req.cluster),
        };
        // Subscribed before the snapshot is read: nothing that changes meanwhile is missed.
        let changes = self.engine.subscribe_changes();
        let engine = Arc::clone(&self.engine);
        Ok(spawn(&self.engine, move |tx| {
            watch_status(engine, filter, changes, tx)
        }))
    }

    async fn watch_rollout(
        &self,
        request: Request<pb::RolloutRequest>,
    ) -> Result<Response<Self::WatchRolloutStream>, Status> {
        reader(&self.engine, &request, Action::RolloutStatus)?;
        let req = request.into_inner();
        let app = required("app", &req.app)?.to_owned();
        let changes = self.engine.subscribe_changes();
        // Read here, so that an unknown App (or one not rolled out yet) is answered as
        // GetRollout answers it, not as a stream that ends at once.
        let first = rollout_message(&self.engine, &app, req.counts_only)?;
        let engine = Arc::clone(&self.engine);
        Ok(spawn(&self.engine, move |tx| {
            watch_rollout(engine, app, req.counts_only, first, changes, tx)
        }))
    }

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        reader(&self.engine, &request, Action::ListEvents)?;
        let req = request.into_inner();
        let filter = Filter {
            app: non_empty(req.app),
            cluster: non_empty(req.cluster),
        };
        if let Some(app) = &filter.app {
            self.engine.check_app(app)?;
        }
        let limit = match req.limit {
            0 => DEFAULT_EVENTS,
            n => usize::try_from(n).unwrap_or(MAX_EVENTS).min(MAX_EVENTS),
        };
        // Subscribed before the store is read back: an event recorded meanwhile comes both
        // ways, and is sent once.
        let bus = self.engine.subscribe_events();
        let engine = Arc::clone(&self.engine);
        Ok(spawn(&self.engine, move |tx| {
            watch_events(engine, filter, req.after_id, limit, bus, tx)
        }))
    }
}

// --- status ----------------------------------------------------------------------------------

/// What a stream watches: one App and/or one cluster, or everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Filter {
    app: Option<String>,
    cluster: Option<String>,
}

/// The Targets to read again: of one App and/or one cluster (`None`: any).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Query {
    app: Option<String>,
    cluster: Option<String>,
}

impl Filter {
    fn wants_app(&self, app: &str) -> bool {
        self.app.as_deref().is_none_or(|a| a == app)
    }

    fn wants_cluster(&self, cluster: &str) -> bool {
        self.cluster.as_deref().is_none_or(|c| c == cluster)
    }

    /// What of the watched Targets `change` may have changed (`None`: nothing watched).
    fn reread(&self, change: &FleetChange) -> Option<Query> {
        match change {
            FleetChange::Target { app, cluster } => {
                (self.wants_app(app) && self.wants_cluster(cluster)).then(|| Query {
                    app: Some(app.clone()),
                    cluster: Some(cluster.clone()),
                })
            }
            FleetChange::Cluster(cluster) => self.wants_cluster(cluster).then(|| Query {
                app: self.app.clone(),
                cluster: Some(cluster.clone()),
            }),
            FleetChange::App(app) => self.wants_app(app).then(|| Query {
                app: Some(app.clone()),
                cluster: self.cluster.clone(),
            }),
        }
    }

    fn wants_event(&self, e: &EventRecord) -> bool {
        self.wants_app(&e.app) && self.cluster.as_deref().is_none_or(|c| c == e.cluster)
    }
}

/// What a status stream last sent of each Target (a digest of it), so that it sends only
/// what changed, and knows which Targets went away.
#[derive(Debug, Default)]
struct Known {
    /// By (app, cluster).
    sent: BTreeMap<(String, String), u64>,
    /// (cluster, app) of every key of `sent`.
    by_cluster: BTreeSet<(String, String)>,
}

fn digest(t: &pb::TargetStatus) -> u64 {
    let mut h = DefaultHasher::new();
    t.encode_to_vec().hash(&mut h);
    h.finish()
}

impl Known {
    /// Forgets everything: a snapshot follows.
    fn clear(&mut self) {
        self.sent.clear();
        self.by_cluster.clear();
    }

    /// `fresh` is every Target `query` covers as it is now: what of it changed since sent,
    /// and which Targets `query` covers were sent but are gone.
    fn update(
        &mut self,
        query: &Query,
        fresh: Vec<pb::TargetStatus>,
    ) -> (Vec<pb::TargetStatus>, Vec<pb::TargetKey>) {
        let mut seen = HashSet::with_capacity(fresh.len());
        let mut changed = Vec::new();
        for t in fresh {
            let key = (t.app.clone(), t.cluster.clone());
            seen.insert(key.clone());
            let d = digest(&t);
            if self.sent.insert(key, d) != Some(d) {
                self.by_cluster.insert((t.cluster.clone(), t.app.clone()));
                changed.push(t);
            }
        }
        let covered: Vec<(String, String)> = match (&query.app, &query.cluster) {
            (Some(a), Some(c)) => vec![(a.clone(), c.clone())],
            (Some(a), None) => self
                .sent
                .range((a.clone(), String::new())..)
                .take_while(|((ka, _), _)| ka == a)
                .map(|(k, _)| k.clone())
                .collect(),
            (None, Some(c)) => self
                .by_cluster
                .range((c.clone(), String::new())..)
                .take_while(|(kc, _)| kc == c)
                .map(|(c, a)| (a.clone(), c.clone()))
                .collect(),
            (None, None) => self.sent.keys().cloned().collect(),
        };
        let mut removed = Vec::new();
        for key in covered {
            if seen.contains(&key) || self.sent.remove(&key).is_none() {
                continue;
            }
            self.by_cluster.remove(&(key.1.clone(), key.0.clone()));
            removed.push(pb::TargetKey {
                app: key.0,
                cluster: key.1,
            });
        }
        (changed, removed)
    }
}

/// By App: what held its rollout when a status stream last read its Targets. An App's rollout
/// changes its Targets' status only through what holds it (their `held`), so a rollout step
/// that leaves that as it was reads none of them again (with many clusters, a step of a
/// rollout would otherwise read every Target's report once per watcher).
#[derive(Debug, Default)]
struct Holds(HashMap<String, Option<(String, String)>>);

impl Holds {
    /// Whether `change` may have changed a Target's status: every change but an App's whose
    /// hold is still the one seen last (a hold that cannot be read counts as changed).
    fn moved(&mut self, engine: &Engine, change: &FleetChange) -> bool {
        let FleetChange::App(app) = change else {
            return true;
        };
        let Ok(hold) = engine.app_hold(app) else {
            return true;
        };
        self.0.insert(app.clone(), hold.clone()) != Some(hold)
    }
}

/// `targets` cut into messages under [`MESSAGE_BYTES`] each (at least one message).
fn status_messages(
    targets: Vec<pb::TargetStatus>,
    removed: Vec<pb::TargetKey>,
    snapshot: bool,
) -> Vec<pb::WatchStatusResponse> {
    let mut out = vec![pb::WatchStatusResponse {
        snapshot,
        removed,
        ..Default::default()
    }];
    let mut bytes = 0;
    for t in targets {
        let len = t.encoded_len();
        let full = bytes + len > MESSAGE_BYTES;
        let last = out.last_mut().expect("never empty");
        if full && !last.targets.is_empty() {
            out.push(pb::WatchStatusResponse {
                snapshot,
                ..Default::default()
            });
            bytes = 0;
        }
        bytes += len;
        out.last_mut().expect("never empty").targets.push(t);
    }
    if snapshot && let Some(last) = out.last_mut() {
        last.snapshot_complete = true;
    }
    out
}

/// How a stream's following of the feed ended.
enum Followed {
    /// It fell behind the feed: what it watches must be read again.
    Lagged,
    /// The client went away, or the feed ended (the hub stops).
    Over,
}

/// The changes queued now, at least one (waited for), at most [`COALESCE_MAX`].
async fn next_changes(
    changes: &mut broadcast::Receiver<FleetChange>,
) -> Result<HashSet<FleetChange>, Followed> {
    let mut batch = HashSet::new();
    match changes.recv().await {
        Ok(c) => {
            batch.insert(c);
        }
        Err(broadcast::error::RecvError::Lagged(missed)) => {
            debug!(missed, "a watcher fell behind the changes");
            return Err(Followed::Lagged);
        }
        Err(broadcast::error::RecvError::Closed) => return Err(Followed::Over),
    }
    while batch.len() < COALESCE_MAX {
        match changes.try_recv() {
            Ok(c) => {
                batch.insert(c);
            }
            Err(broadcast::error::TryRecvError::Empty) => break,
            Err(broadcast::error::TryRecvError::Lagged(_)) => return Err(Followed::Lagged),
            Err(broadcast::error::TryRecvError::Closed) => return Err(Followed::Over),
        }
    }
    Ok(batch)
}

async fn read_targets(engine: &Engine, query: &Query) -> Result<Vec<pb::TargetStatus>, Status> {
    Ok(engine
        .status(query.app.as_deref(), query.cluster.as_deref())
        .await?
        .into_iter()
        .map(convert::target_status)
        .collect())
}

/// Sends every message, or says the client went away.
async fn send_all<T>(tx: &Out<T>, messages: Vec<T>) -> Result<(), Followed> {
    for m in messages {
        tx.send(Ok(m)).await.map_err(|_| Followed::Over)?;
    }
    Ok(())
}

async fn watch_status(
    engine: Arc<Engine>,
    filter: Filter,
    mut changes: broadcast::Receiver<FleetChange>,
    tx: Out<pb::WatchStatusResponse>,
) {
    let everything = Query {
        app: filter.app.clone(),
        cluster: filter.cluster.clone(),
    };
    let mut known = Known::default();
    loop {
        // A snapshot: at the start, and whenever the stream fell behind the changes.
        let targets = match read_targets(&engine, &everything).await {
            Ok(t) => t,
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        known.clear();
        let (targets, _) = known.update(&everything, targets);
        if send_all(&tx, status_messages(targets, Vec::new(), true))
            .await
            .is_err()
        {
            return;
        }
        match follow_status(&engine, &filter, &mut changes, &mut known, &tx).await {
            Followed::Lagged => continue,
            Followed::Over => return,
        }
    }
}

async fn follow_status(
    engine: &Engine,
    filter: &Filter,
    changes: &mut broadcast::Receiver<FleetChange>,
    known: &mut Known,
    tx: &Out<pb::WatchStatusResponse>,
) -> Followed {
    let mut holds = Holds::default();
    loop {
        let batch = match next_changes(changes).await {
            Ok(b) => b,
            Err(end) => return end,
        };
        let queries: HashSet<Query> = batch
            .iter()
            .filter(|c| holds.moved(engine, c))
            .filter_map(|c| filter.reread(c))
            .collect();
        let (mut changed, mut removed) = (Vec::new(), Vec::new());
        for query in &queries {
            match read_targets(engine, query).await {
                Ok(fresh) => {
                    let (c, r) = known.update(query, fresh);
                    changed.extend(c);
                    removed.extend(r);
                }
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return Followed::Over;
                }
            }
        }
        if changed.is_empty() && removed.is_empty() {
            continue;
        }
        changed.sort_unstable_by(|a, b| (&a.app, &a.cluster).cmp(&(&b.app, &b.cluster)));
        if let Err(end) = send_all(tx, status_messages(changed, removed, false)).await {
            return end;
        }
    }
}

// --- rollout ---------------------------------------------------------------------------------

fn rollout_message(
    engine: &Engine,
    app: &str,
    counts_only: bool,
) -> Result<pb::RolloutStatus, Status> {
    let mut view = engine.rollout_status(app)?;
    if counts_only {
        for wave in &mut view.status.waves {
            wave.targets.clear();
        }
    }
    Ok(rollout_status(view))
}

/// Whether `change` may have moved `app`'s rollout (as `rollout status` shows it).
fn moves_rollout(engine: &Engine, app: &str, change: &FleetChange) -> bool {
    match change {
        FleetChange::App(a) | FleetChange::Target { app: a, .. } => a == app,
        FleetChange::Cluster(c) => engine.has_target(c, app),
    }
}

async fn watch_rollout(
    engine: Arc<Engine>,
    app: String,
    counts_only: bool,
    first: pb::RolloutStatus,
    mut changes: broadcast::Receiver<FleetChange>,
    tx: Out<pb::RolloutStatus>,
) {
    let mut last = first.encode_to_vec();
    if tx.send(Ok(first)).await.is_err() {
        return;
    }
    let mut read_at = tokio::time::Instant::now();
    loop {
        // The rollout is read at most every ROLLOUT_READ_EVERY: a read costs what the App's
        // clusters are, and reports arrive by the thousand during a large rollout; what
        // changed meanwhile is coalesced into the next read.
        tokio::time::sleep_until(read_at + ROLLOUT_READ_EVERY).await;
        match next_changes(&mut changes).await {
            Ok(batch) if !batch.iter().any(|c| moves_rollout(&engine, &app, c)) => continue,
            // Each message is the whole rollout: after a lag, reading it again is enough.
            Ok(_) | Err(Followed::Lagged) => {}
            Err(Followed::Over) => return,
        }
        read_at = tokio::time::Instant::now();
        let status = match rollout_message(&engine, &app, counts_only) {
            Ok(s) => s,
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        let encoded = status.encode_to_vec();
        if encoded == last {
            continue;
        }
        last = encoded;
        if tx.send(Ok(status)).await.is_err() {
            return;
        }
    }
}

// --- events ----------------------------------------------------------------------------------

/// Which events an events stream has sent: none at or below the client's resume point, and
/// none twice (the store's read-back and the bus overlap). Ids come in order from one hub;
/// on a shared store another replica's may come late, below the highest sent, and are still
/// sent once.
#[derive(Debug)]
struct Delivered {
    resume_from: u64,
    highest: u64,
    recent: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Delivered {
    fn new(resume_from: u64) -> Self {
        Self {
            resume_from,
            highest: resume_from,
            recent: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Whether event `id` is to be sent now (and, if so, it counts as sent).
    fn admit(&mut self, id: u64) -> bool {
        if id <= self.resume_from || !self.recent.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > DELIVERED_WINDOW
            && let Some(old) = self.order.pop_front()
        {
            self.recent.remove(&old);
        }
        self.highest = self.highest.max(id);
        true
    }
}

fn events_message(events: Vec<EventRecord>) -> pb::WatchEventsResponse {
    pb::WatchEventsResponse {
        events: events.into_iter().map(event).collect(),
    }
}

/// Sends every event of the store above `from` that the stream has not sent, in id order.
async fn read_back(
    engine: &Engine,
    filter: &Filter,
    mut from: u64,
    delivered: &mut Delivered,
    tx: &Out<pb::WatchEventsResponse>,
) -> Result<(), Followed> {
    loop {
        let (events, next) = match engine
            .events_after(filter.app.as_deref(), filter.cluster.as_deref(), from)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                let _ = tx.send(Err(Status::from(e))).await;
                return Err(Followed::Over);
            }
        };
        let events: Vec<EventRecord> = events
            .into_iter()
            .filter(|e| delivered.admit(e.id))
            .collect();
        if !events.is_empty() {
            send_all(tx, vec![events_message(events)]).await?;
        }
        match next {
            Some(n) => from = n,
            None => return Ok(()),
        }
    }
}

async fn watch_events(
    engine: Arc<Engine>,
    filter: Filter,
    after_id: u64,
    limit: usize,
    mut bus: broadcast::Receiver<EventRecord>,
    tx: Out<pb::WatchEventsResponse>,
) {
    let mut delivered = Delivered::new(after_id);
    let start = if after_id == 0 {
        // No resume point: the newest `limit`, as `gitfleet events` lists them.
        match engine
            .events(filter.app.as_deref(), filter.cluster.as_deref(), 0, limit)
            .await
        {
            Ok(events) => {
                let events: Vec<EventRecord> = events
                    .into_iter()
                    .filter(|e| delivered.admit(e.id))
                    .collect();
                send_all(&tx, vec![events_message(events)]).await
            }
            Err(e) => {
                let _ = tx.send(Err(Status::from(e))).await;
                return;
            }
        }
    } else {
        read_back(&engine, &filter, after_id, &mut delivered, &tx).await
    };
    if start.is_err() {
        return;
    }
    loop {
        let mut batch = Vec::new();
        let mut lagged = false;
        match bus.recv().await {
            Ok(e) => batch.push(e),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                debug!(
                    missed,
                    "an events watcher fell behind; reading back from the store"
                );
                lagged = true;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
        while !lagged && batch.len() < COALESCE_MAX {
            match bus.try_recv() {
                Ok(e) => batch.push(e),
                Err(broadcast::error::TryRecvError::Empty) => break,
                Err(broadcast::error::TryRecvError::Lagged(_)) => lagged = true,
                Err(broadcast::error::TryRecvError::Closed) => return,
            }
        }
        let events: Vec<EventRecord> = batch
            .into_iter()
            .filter(|e| filter.wants_event(e) && delivered.admit(e.id))
            .collect();
        if !events.is_empty() && send_all(&tx, vec![events_message(events)]).await.is_err() {
            return;
        }
        if lagged {
            let from = delivered.highest;
            if read_back(&engine, &filter, from, &mut delivered, &tx)
                .await
                .is_err()
            {
                return;
            }
        }
    }
}
