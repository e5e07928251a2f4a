//! The hub's state machine: resources, clusters and revisions in; per-cluster desired state out,
//! stored (flushed) and published to the spokes' live streams at once.
//!
//! `Engine` is one facade over concerns kept in files of their own: `resources` (apply, delete,
//! get), `repos` (Git followers, fetches, fleet sync), `clusters` (registration, approval, PKI,
//! tokens, renewal, revocation), `links` (spokes' connections and their reports, through to the
//! durable ack), `rollouts` (each App's rollout decisions), `queries` (the read model admin
//! RPCs, `/metrics` and a dashboard share), `desired` (computing and publishing desired state)
//! and `events` (the bus every event goes through).
//!
//! Every change to desired state goes through one async lock (`write`), so generations grow in
//! order and a connection sees them in order; Git work (fetches, diffs, reading the fleet path)
//! is done before it is taken, and what it found is checked again under it. Spoke connections
//! read desired state from a `watch` channel per cluster: a slow spoke never holds anyone up,
//! and deltas coalesce. In memory, the links and published desired state share one lock
//! (`state`: a revocation and a connection decide under it), while the followed Repos
//! (`followed`) and the rollout controller's queue (`controller`) have their own.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::fleet::ClusterLabels;
use crate::git::GitCache;
use crate::model::ClusterRecord;
use crate::pki::{Pki, PkiError};
use crate::resources::{App, ClusterGroup, HealthRule, Project, Repo, Resource};
use crate::store::{Store, StoreError};

mod audit;
mod changes;
mod charts;
mod clusters;
mod dashboard;
mod dependencies;
mod desired;
mod diffs;
mod events;
mod fleet_sync;
mod freezes;
mod holds;
mod kube_objects;
mod links;
mod notifications;
mod queries;
mod replicas;
mod repo_secrets;
mod repos;
mod resources;
mod rollouts;
mod users;

pub use audit::AuditEntry;
use changes::ChangeFeed;
pub use changes::{CHANGES_CAPACITY, FleetChange};
pub use clusters::{
    Issued, NewToken, PENDING_RETRY, RegisterOutcome, Registration, RegistrationWork, TokenSpec,
    token_hash,
};
pub use dashboard::{DashboardError, NewSession};
use desired::FleetInputs;
pub use desired::Published;
pub use diffs::{DiffPlan, DiffTarget, LinkPlace, MAX_DIFF_CLUSTERS, check_revision};
pub use events::BUS_CAPACITY;
use events::EventBus;
pub use kube_objects::AppSummary;
use links::LiveConnection;
pub use links::{ConnectHook, Connection};
pub use notifications::{NotificationConfig, NotifierView};
pub use queries::{RolloutRecord, RolloutView, StatusPage};
pub use repos::ChangeOrigin;
use repos::Followed;
pub use resources::Applied;
pub use users::{NewUser, app_project};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is well formed but the state does not allow it now.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] PkiError),
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub default_poll_interval: Duration,
    pub heartbeat_grace: Duration,
    pub cluster_cert_validity: Duration,
    /// Git credentials and webhook secrets by entry name, which Repos reference.
    pub repo_credentials: crate::credentials::Credentials,
    /// Registrations wait for `approve_cluster` before they get a certificate.
    pub require_approval: bool,
    /// The path in a Repo the hub takes its own Repos, Apps and ClusterGroups from.
    pub fleet: Option<crate::fleetsync::FleetSource>,
    /// Prometheus metrics the engine and its adapters update.
    pub metrics: Arc<crate::metrics::HubMetrics>,
    /// How much of the audit log the hub keeps.
    pub audit_retention: gitfleet_core::users::AuditRetention,
    /// Resolves Apps' `spec.render.helm.chart` (see `docs/sync.md`).
    pub charts: crate::charts::ChartResolver,
    /// How Notifiers' deliveries are sent and retried (see `docs/notifications.md`).
    pub notifications: NotificationConfig,
}

/// Held by every change to desired state (see the module's documentation).
type WriteGuard<'a> = tokio::sync::MutexGuard<'a, ()>;

#[derive(Default)]
struct State {
    desired: HashMap<String, watch::Sender<Arc<Published>>>,
    /// The Repos' credentials the published desired states carry (`None` before the first
    /// recompute).
    credentials: Option<Arc<desired::RepoCredentials>>,
    connections: HashMap<String, LiveConnection>,
    last_contact: HashMap<String, i64>,
    next_connection: u64,
    /// By App: where its current revision came from, so that dispatching the revision joins
    /// that change's trace and is timed from its fetch (lost on restart).
    traces: Arc<HashMap<String, ChangeOrigin>>,
}

pub struct Engine {
    store: Store,
    pki: Arc<Pki>,
    git: GitCache,
    config: EngineConfig,
    write: tokio::sync::Mutex<()>,
    state: Mutex<State>,
    /// The Repos followed, under a lock of their own: fetch triggers and webhooks take no
    /// other.
    followed: Mutex<Followed>,
    /// What the rollout controller keeps (see [`rollouts::drive_rollouts`]).
    controller: Mutex<rollouts::Controller>,
    shutdown: CancellationToken,
    /// Wakes the rollout controller (see [`rollouts::drive_rollouts`]).
    rollout_kick: Notify,
    /// See [`FleetInputs`]; `None` until the first recompute (and after one that failed).
    computed_from: Mutex<Option<FleetInputs>>,
    /// How many clusters' desired state recomputes have looked at since the hub started (see
    /// [`Engine::desired_clusters_visited`]).
    desired_visits: std::sync::atomic::AtomicU64,
    /// Registrations that took the write lock (see [`Engine::registration_work`]).
    registration_locks: std::sync::atomic::AtomicU64,
    /// Registrations written to the store's memory, and how many of them a recompute and a
    /// flush have settled since (see [`Engine::settle_registration`]).
    registrations_written: std::sync::atomic::AtomicU64,
    registrations_settled: std::sync::atomic::AtomicU64,
    connect_hook: Mutex<Option<ConnectHook>>,
    /// Every event goes through it (see [`Engine::subscribe_events`]).
    bus: EventBus,
    /// What the live reads are driven by (see [`Engine::subscribe_changes`]).
    changes: ChangeFeed,
    /// Whether this replica does the work that must happen once (see [`Engine::lead`]).
    leading: std::sync::atomic::AtomicBool,
    /// By App: the last chart resolution error, so that each distinct one is one event.
    chart_errors: Mutex<HashMap<String, String>>,
    /// On a replica that does not lead: desired Targets the leader wrote, by cluster and App,
    /// until the cluster's record that names them arrives (see `replicas.rs`).
    staged_targets: Mutex<HashMap<String, BTreeMap<String, crate::model::VersionedTarget>>>,
    /// One copy of equal Targets, shared by the clusters that hold them.
    interner: Mutex<crate::model::TargetInterner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    /// Loads desired state from the store; with `leads`, takes up the work that must happen
    /// once (see [`Engine::lead`]): a replica that does not lead yet does it when elected.
    pub async fn start(
        store: Store,
        pki: Arc<Pki>,
        git: GitCache,
        config: EngineConfig,
        shutdown: CancellationToken,
        leads: bool,
    ) -> Result<Arc<Self>, EngineError> {
        store.set_audit_retention(config.audit_retention);
        let engine = Arc::new(Self {
            bus: EventBus::new(store.clone()),
            changes: ChangeFeed::new(),
            store,
            pki,
            git,
            config,
            write: tokio::sync::Mutex::new(()),
            state: Mutex::new(State::default()),
            followed: Mutex::new(Followed::default()),
            controller: Mutex::new(rollouts::Controller::default()),
            shutdown,
            rollout_kick: Notify::new(),
            computed_from: Mutex::new(None),
            desired_visits: Default::default(),
            registration_locks: Default::default(),
            registrations_written: Default::default(),
            registrations_settled: Default::default(),
            connect_hook: Mutex::new(None),
            leading: std::sync::atomic::AtomicBool::new(false),
            chart_errors: Mutex::new(HashMap::new()),
            staged_targets: Mutex::new(HashMap::new()),
            interner: Mutex::new(crate::model::TargetInterner::default()),
        });
        // Subscribed before anything is read below: nothing another replica writes meanwhile
        // is missed (what the reads below already hold is told again, harmlessly).
        let changes = engine.store.subscribe_remote();
        {
            let mut stored = engine.store.desired_all().await?;
            {
                // Decoded one by one: shared again.
                let mut interner = engine.interner();
                for desired in stored.values_mut() {
                    for t in desired.targets.values_mut() {
                        t.target = interner.share(Arc::clone(&t.target));
                    }
                }
            }
            let mut state = engine.lock();
            for (cluster, desired) in stored {
                state.desired.insert(
                    cluster,
                    watch::channel(Arc::new(Published {
                        desired: Arc::new(desired),
                        ..Default::default()
                    }))
                    .0,
                );
            }
            for c in engine.store.clusters()? {
                state
                    .last_contact
                    .insert(c.name.clone(), c.last_contact_unix);
            }
        }
        if let Some(changes) = changes {
            tokio::spawn(Arc::clone(&engine).follow_others(changes));
        }
        if leads {
            engine.lead().await?;
        } else {
            engine.prepare_to_follow()?;
        }
        Ok(engine)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every event from now on, in the order recorded (each also in the store, where
    /// [`Engine::events`] reads it back by id).
    pub fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<crate::model::EventRecord> {
        self.bus.subscribe()
    }

    /// Makes every write so far durable (at shutdown; every answer the engine gives is
    /// durable already).
    pub async fn flush(&self) -> Result<(), EngineError> {
        Ok(self.store.flush().await?)
    }

    /// Why the store cannot make writes durable any more, if a write or flush failed; known
    /// without touching the disk, for health probes.
    pub fn store_failure(&self) -> Option<&str> {
        self.store.failure()
    }

    pub fn epoch(&self) -> &str {
        self.store.epoch()
    }

    pub fn ca_pem(&self) -> &str {
        self.pki.ca_pem()
    }

    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    pub fn metrics(&self) -> &Arc<crate::metrics::HubMetrics> {
        &self.config.metrics
    }

    /// Stops every follower.
    pub fn stop(&self) {
        for (_, f) in self.followed().followers.drain() {
            f.task.abort();
        }
    }
}

/// The clusters placement may choose: registered, approved, not revoked.
fn placeable<'a>(clusters: impl IntoIterator<Item = &'a ClusterRecord>) -> Vec<ClusterLabels<'a>> {
    clusters
        .into_iter()
        .filter(|c| !c.revoked && !c.pending)
        .map(|c| ClusterLabels {
            name: &c.name,
            labels: &c.labels,
        })
        .collect()
}

/// The stored resources by kind.
#[derive(Default)]
struct Split {
    apps: Vec<App>,
    repos: BTreeMap<String, Repo>,
    groups: BTreeMap<String, ClusterGroup>,
    projects: BTreeMap<String, Project>,
    health_rules: BTreeMap<String, HealthRule>,
}

fn split_resources(resources: Vec<Resource>) -> Split {
    let mut apps = Vec::new();
    let mut repos = BTreeMap::new();
    let mut groups = BTreeMap::new();
    let mut projects = BTreeMap::new();
    let mut health_rules = BTreeMap::new();
    for r in resources {
        match r {
            Resource::App(a) => apps.push(a),
            Resource::Repo(r) => {
                repos.insert(r.metadata.name.clone(), r);
            }
            Resource::ClusterGroup(g) => {
                groups.insert(g.metadata.name.clone(), g);
            }
            Resource::Project(p) => {
                projects.insert(p.metadata.name.clone(), p);
            }
            Resource::HealthRule(h) => {
                health_rules.insert(h.metadata.name.clone(), h);
            }
            // Notifiers place nothing: the event bus reads them from the store.
            Resource::Notifier(_) => {}
        }
    }
    Split {
        apps,
        repos,
        groups,
        projects,
        health_rules,
    }
}
