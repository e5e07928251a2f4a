//! The hub's state machine: resources, clusters and revisions in; per-cluster desired state out,
//! stored (flushed) and published to the spokes' live streams at once.
//!
//! Every change to desired state goes through one async lock (`write`), so generations grow in
//! order and a connection sees them in order. Spoke connections read desired state from a
//! `watch` channel per cluster: a slow spoke never holds anyone up, and deltas coalesce.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::fleet::{AppRevision, ClusterLabels, compute_fleet_with_rollouts};
use crate::git::{GitCache, changes};
use crate::metrics::{ErrorKind as MetricsError, PollOutcome};
use crate::model::{
    ClusterDesired, ClusterRecord, ClusterView, KeyBinding, RepoCredential, RepoStatus,
    TargetReport, TargetView, TokenProblem, TokenRecord, VersionedTarget,
};
use crate::pki::{self, Pki, PkiError, now_unix};
use crate::resources::{App, ClusterGroup, Kind, Repo, RepoSpec, Resource, parse_document};
use crate::store::{ReportOutcome, Store, StoreError};
use crate::telemetry;

mod fleet_sync;
mod repo_secrets;
mod rollouts;

pub use rollouts::{RolloutRecord, RolloutView};

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
}

/// The outcome of applying one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub kind: Kind,
    pub name: String,
    /// "created", "configured", "unchanged".
    pub action: &'static str,
}

/// What a new bootstrap token allows.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub ttl: Duration,
    /// The labels of every cluster registered with the token.
    pub labels: BTreeMap<String, String>,
    /// Keys under which the spoke may propose labels of its own.
    pub allowed_label_keys: std::collections::BTreeSet<String>,
    /// The one cluster name the token may register.
    pub cluster: Option<String>,
    /// 0: unlimited within the TTL.
    pub max_uses: u32,
    pub description: String,
}

impl TokenSpec {
    /// A token valid for `ttl` that gives clusters `labels` and lets spokes add none.
    pub fn new(ttl: Duration, labels: BTreeMap<String, String>) -> Self {
        Self {
            ttl,
            labels,
            allowed_label_keys: Default::default(),
            cluster: None,
            max_uses: 0,
            description: String::new(),
        }
    }
}

/// See [`Engine::registration_work`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistrationWork {
    pub csrs_verified: u64,
    pub certificates_signed: u64,
    pub write_locks: u64,
}

/// See [`Engine::set_connect_hook`].
pub type ConnectHook = Arc<
    dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync,
>;

/// A newly minted bootstrap token (the secret is shown once).
#[derive(Debug, Clone)]
pub struct NewToken {
    pub token: String,
    pub id: String,
    pub expires_at_unix: i64,
}

/// A spoke's registration request, in domain terms.
#[derive(Debug, Clone)]
pub struct Registration {
    pub token: String,
    pub cluster: String,
    pub csr_pem: String,
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
}

/// How long a spoke waiting for approval should wait before asking again.
pub const PENDING_RETRY: Duration = Duration::from_secs(10);

/// What a registration gets: a certificate, or a wait for an admin's approval.
#[derive(Debug, Clone)]
pub enum RegisterOutcome {
    Issued(Issued),
    Pending {
        cluster: String,
        retry_after: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct Issued {
    pub cluster: String,
    pub certificate_pem: String,
    pub ca_pem: String,
}

/// A live link of one spoke, handed to the gRPC adapter.
#[derive(Debug)]
pub struct Connection {
    pub id: u64,
    pub desired: watch::Receiver<Arc<ClusterDesired>>,
    /// Cancelled when a newer connection of the same cluster replaces this one, or the cluster
    /// is revoked.
    pub replaced: CancellationToken,
    /// Cancelled when an admin revokes the cluster.
    pub revoked: CancellationToken,
    pub acked_seq: u64,
}

impl Connection {
    /// Whether the connection was replaced or revoked: it must send the spoke nothing more.
    pub fn cut_off(&self) -> bool {
        self.revoked.is_cancelled() || self.replaced.is_cancelled()
    }
}

struct LiveConnection {
    id: u64,
    replaced: CancellationToken,
    revoked: CancellationToken,
    agent_version: String,
}

struct Follower {
    spec: RepoSpec,
    trigger: Arc<Notify>,
    task: JoinHandle<()>,
}

/// The fetch that moved an App to a commit.
#[derive(Debug, Clone)]
struct ChangeOrigin {
    commit: String,
    /// W3C trace context of the change.
    trace: BTreeMap<String, String>,
    fetch_started: std::time::Instant,
}

#[derive(Default)]
struct State {
    desired: HashMap<String, watch::Sender<Arc<ClusterDesired>>>,
    connections: HashMap<String, LiveConnection>,
    last_contact: HashMap<String, i64>,
    followers: HashMap<String, Follower>,
    next_connection: u64,
    /// By App: where its current revision came from, so that dispatching the revision joins
    /// that change's trace and is timed from its fetch (lost on restart).
    traces: HashMap<String, ChangeOrigin>,
    /// Apps whose rollout is not complete: their reports wake the rollout driver.
    incomplete_rollouts: HashSet<String>,
    /// When a rollout asked to be decided again although nothing changed.
    next_rollout_check: Option<i64>,
    /// Every stored Repo by the repository it follows, for webhooks.
    repos_by_url: crate::webhook::RepoIndex,
}

pub struct Engine {
    store: Store,
    pki: Arc<Pki>,
    git: GitCache,
    config: EngineConfig,
    write: tokio::sync::Mutex<()>,
    state: Mutex<State>,
    shutdown: CancellationToken,
    /// Wakes the rollout driver.
    rollout_kick: Notify,
    /// See [`FleetInputs`]; `None` until the first recompute (and after one that failed).
    computed_from: Mutex<Option<FleetInputs>>,
    /// Registrations that took the write lock (see [`Engine::registration_work`]).
    registration_locks: std::sync::atomic::AtomicU64,
    connect_hook: Mutex<Option<ConnectHook>>,
}

/// Everything desired state is computed from: when a recompute finds these as they were last
/// time, the desired state it would compute is the one every cluster already has.
#[derive(PartialEq)]
struct FleetInputs {
    apps: Vec<App>,
    repos: BTreeMap<String, Repo>,
    groups: BTreeMap<String, ClusterGroup>,
    revisions: BTreeMap<String, AppRevision>,
    rollouts: BTreeMap<String, Assigned>,
    controls: BTreeMap<String, crate::model::AppControl>,
    /// See [`Store::clusters_snapshot`].
    placement_version: u64,
}

/// A rollout, compared by what it assigns: its progress (a Target turning healthy, a soak
/// passing) changes no desired state.
struct Assigned(Arc<crate::fleet::rollout::RolloutState>);

impl PartialEq for Assigned {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.assigned == other.0.assigned
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    /// Loads desired state from the store and starts following every stored Repo.
    pub async fn start(
        store: Store,
        pki: Arc<Pki>,
        git: GitCache,
        config: EngineConfig,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, EngineError> {
        let engine = Arc::new(Self {
            store,
            pki,
            git,
            config,
            write: tokio::sync::Mutex::new(()),
            state: Mutex::new(State::default()),
            shutdown,
            rollout_kick: Notify::new(),
            computed_from: Mutex::new(None),
            registration_locks: Default::default(),
            connect_hook: Mutex::new(None),
        });
        {
            let stored = engine.store.desired_all().await?;
            let mut state = engine.lock();
            for (cluster, desired) in stored {
                state
                    .desired
                    .insert(cluster, watch::channel(Arc::new(desired)).0);
            }
            for c in engine.store.clusters()? {
                state
                    .last_contact
                    .insert(c.name.clone(), c.last_contact_unix);
            }
        }
        // Placement may have changed shape since the store was written (a newer hub).
        engine.recompute().await?;
        for r in engine.store.resources()? {
            if let Resource::Repo(repo) = r {
                engine
                    .lock()
                    .repos_by_url
                    .put(&repo.metadata.name, &repo.spec);
                engine.follow(&repo);
            }
        }
        tokio::spawn(rollouts::drive_rollouts(Arc::clone(&engine)));
        Ok(engine)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn store(&self) -> &Store {
        &self.store
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

    /// The trace context of the change that moved `app` to `commit` (empty when unknown).
    pub fn trace_of(&self, app: &str, commit: &str) -> BTreeMap<String, String> {
        match self.lock().traces.get(app) {
            Some(o) if o.commit == commit => o.trace.clone(),
            _ => BTreeMap::new(),
        }
    }

    /// When the fetch that moved `app` to `commit` started (unknown after a restart).
    pub fn fetch_started(&self, app: &str, commit: &str) -> Option<std::time::Instant> {
        match self.lock().traces.get(app) {
            Some(o) if o.commit == commit => Some(o.fetch_started),
            _ => None,
        }
    }

    /// Stops every follower.
    pub fn stop(&self) {
        let mut state = self.lock();
        for (_, f) in state.followers.drain() {
            f.task.abort();
        }
    }

    // --- desired state -----------------------------------------------------------------------

    /// Recomputes every cluster's desired state; stores and publishes what changed.
    pub async fn recompute(&self) -> Result<(), EngineError> {
        let guard = self.write.lock().await;
        self.recompute_locked(&guard).await
    }

    async fn recompute_locked(
        &self,
        _write: &tokio::sync::MutexGuard<'_, ()>,
    ) -> Result<(), EngineError> {
        let (apps, repos, groups) = split_resources(self.store.resources()?);
        let revisions = self.store.revisions()?;
        let (clusters, placement_version) = self.store.clusters_snapshot();
        let labels = placeable(clusters.values());
        let decided = self.decide_rollouts(&apps, &revisions, &labels, &groups)?;
        let inputs = FleetInputs {
            apps,
            repos,
            groups,
            revisions,
            rollouts: decided
                .rollouts
                .into_iter()
                .map(|(app, state)| (app, Assigned(state)))
                .collect(),
            controls: decided.controls,
            placement_version,
        };
        if self.computed_from().as_ref() == Some(&inputs) {
            // Desired state is a function of these: nothing to compute (the rollout driver
            // decides on every report of a rollout; most of them move nothing).
            return Ok(());
        }
        *self.computed_from() = None;
        let current = self.desired_snapshot();
        let assigned: BTreeMap<String, &BTreeMap<String, AppRevision>> = inputs
            .rollouts
            .iter()
            .map(|(app, state)| (app.clone(), &state.0.assigned))
            .collect();
        let mut fleet = compute_fleet_with_rollouts(
            &inputs.apps,
            &inputs.repos,
            &inputs.revisions,
            &assigned,
            &labels,
            &inputs.groups,
        );
        rollouts::apply_controls(&mut fleet, &inputs.controls);

        let mut changed = Vec::new();
        let none = BTreeMap::new();
        for cluster in clusters.values() {
            // A revoked cluster keeps no Targets.
            let new_targets = fleet.get(&cluster.name).unwrap_or(&none);
            let old = current.get(&cluster.name).cloned().unwrap_or_default();
            if old.generation != 0 && old.has_targets(new_targets) {
                continue;
            }
            let new_targets = new_targets.clone();
            let generation = old.generation + 1;
            let targets = new_targets
                .into_iter()
                .map(|(app, target)| {
                    let spec_generation = match old.targets.get(&app) {
                        Some(v) if v.target == target => v.spec_generation,
                        _ => generation,
                    };
                    (
                        app,
                        VersionedTarget {
                            spec_generation,
                            target,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>();
            for gone in old.targets.keys().filter(|a| !targets.contains_key(*a)) {
                self.store.delete_report(&cluster.name, gone)?;
            }
            let desired = ClusterDesired {
                generation,
                targets,
            };
            self.store.put_desired(&cluster.name, &desired)?;
            changed.push((cluster.name.clone(), desired));
        }
        if !changed.is_empty() {
            self.store.flush().await?;
            let mut state = self.lock();
            for (cluster, desired) in changed {
                debug!(%cluster, generation = desired.generation, targets = desired.targets.len(), "desired state changed");
                let desired = Arc::new(desired);
                match state.desired.get(&cluster) {
                    Some(tx) => {
                        tx.send_replace(desired);
                    }
                    None => {
                        state.desired.insert(cluster, watch::channel(desired).0);
                    }
                }
            }
        }
        *self.computed_from() = Some(inputs);
        Ok(())
    }

    /// The inputs of the desired state last computed and published in full.
    fn computed_from(&self) -> std::sync::MutexGuard<'_, Option<FleetInputs>> {
        self.computed_from
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every cluster's current desired state.
    fn desired_snapshot(&self) -> HashMap<String, Arc<ClusterDesired>> {
        let state = self.lock();
        state
            .desired
            .iter()
            .map(|(k, v)| (k.clone(), v.borrow().clone()))
            .collect()
    }

    /// A cluster's desired state at an earlier generation, if the store still keeps it.
    pub async fn desired_at(&self, cluster: &str, generation: u64) -> Option<ClusterDesired> {
        if generation == 0 {
            return None;
        }
        self.store
            .desired_at(cluster, generation)
            .await
            .unwrap_or_else(|e| {
                warn!(%cluster, generation, error = %e, "cannot read desired-state history");
                None
            })
    }

    /// The current desired state of a cluster.
    pub fn desired(&self, cluster: &str) -> Option<Arc<ClusterDesired>> {
        self.lock()
            .desired
            .get(cluster)
            .map(|tx| tx.borrow().clone())
    }

    // --- resources ---------------------------------------------------------------------------

    /// Validates every document, then stores all of them or none.
    pub async fn apply(
        self: &Arc<Self>,
        documents: &[(String, String)],
        dry_run: bool,
    ) -> Result<Vec<Applied>, EngineError> {
        let mut parsed = Vec::new();
        let mut errors = Vec::new();
        for (origin, json) in documents {
            match parse_document(origin, json) {
                Ok(r) => parsed.push(r),
                Err(e) => errors.push(e.to_string()),
            }
        }
        for (i, r) in parsed.iter().enumerate() {
            if parsed[..i]
                .iter()
                .any(|p| p.kind() == r.kind() && p.name() == r.name())
            {
                errors.push(format!(
                    "{} {:?} appears more than once",
                    r.kind(),
                    r.name()
                ));
            }
        }
        errors.extend(self.credential_ref_errors(&parsed));
        if !errors.is_empty() {
            return Err(EngineError::Invalid(errors.join("\n")));
        }
        if documents.is_empty() {
            return Err(EngineError::Invalid("no documents to apply".into()));
        }

        let guard = self.write.lock().await;
        let mut outcomes = Vec::new();
        let mut to_store = Vec::new();
        let mut previous = Vec::new();
        for r in parsed {
            let old = self.store.resource(r.kind(), r.name())?;
            let action = match &old {
                None => "created",
                Some(o) if *o == r => "unchanged",
                Some(_) => "configured",
            };
            outcomes.push(Applied {
                kind: r.kind(),
                name: r.name().to_owned(),
                action,
            });
            if action != "unchanged" {
                previous.push(old);
                to_store.push(r);
            }
        }
        if dry_run || to_store.is_empty() {
            return Ok(outcomes);
        }
        self.store.put_resources(&to_store)?;
        {
            let mut state = self.lock();
            for r in &to_store {
                if let Resource::Repo(repo) = r {
                    state.repos_by_url.put(&repo.metadata.name, &repo.spec);
                }
            }
        }
        for (r, old) in to_store.iter().zip(&previous) {
            if let Resource::App(app) = r {
                let (kind, message) = match old {
                    Some(_) => ("Configured", "spec changed"),
                    None => ("Created", "created"),
                };
                self.record_app_event(&app.metadata.name, kind, message.into(), "")?;
                let repo_changed = match old {
                    Some(Resource::App(o)) => o.spec.repo != app.spec.repo,
                    _ => true,
                };
                if repo_changed {
                    self.assign_current_revision(app)?;
                }
            }
        }
        self.recompute_locked(&guard).await?;
        // The recompute flushes only when some cluster's desired state changed; the answer
        // ("created") must not leave before the resources are on disk either way.
        self.store.flush().await?;
        drop(guard);
        for r in &to_store {
            if let Resource::Repo(repo) = r {
                self.follow(repo);
            }
        }
        Ok(outcomes)
    }

    /// Gives an App the commit its Repo is at now (or none, until the Repo is fetched).
    fn assign_current_revision(&self, app: &App) -> Result<(), EngineError> {
        match self.store.repo_status(&app.spec.repo)? {
            Some(s) if !s.commit.is_empty() => self.store.put_revision(
                &app.metadata.name,
                &AppRevision {
                    commit: s.commit,
                    git_ref: s.git_ref,
                },
            )?,
            _ => self.store.delete_revision(&app.metadata.name)?,
        }
        Ok(())
    }

    pub async fn delete(&self, kind: Kind, name: &str) -> Result<bool, EngineError> {
        let guard = self.write.lock().await;
        if !self.store.delete_resource(kind, name)? {
            return Ok(false);
        }
        match kind {
            Kind::Repo => {
                let mut state = self.lock();
                state.repos_by_url.remove(name);
                if let Some(f) = state.followers.remove(name) {
                    f.task.abort();
                }
                drop(state);
                self.store.delete_repo_status(name)?;
            }
            Kind::App => {
                self.store.delete_revision(name)?;
                self.store.delete_app_records(name)?;
            }
            Kind::ClusterGroup => {}
        }
        self.recompute_locked(&guard).await?;
        self.store.flush().await?;
        Ok(true)
    }

    /// Stored resources as documents; Repos and Apps carry what the hub learned under `status`
    /// (a Repo's last fetched commit and error, an App's current revision).
    pub fn get(
        &self,
        kind: Option<Kind>,
        name: Option<&str>,
    ) -> Result<Vec<serde_json::Value>, EngineError> {
        let statuses = self.store.repo_statuses()?;
        let revisions = self.store.revisions()?;
        let mut out = Vec::new();
        for r in self.store.resources()? {
            if kind.is_some_and(|k| k != r.kind()) || name.is_some_and(|n| n != r.name()) {
                continue;
            }
            let mut doc = r.to_json();
            let status = match &r {
                Resource::Repo(repo) => Some(repo_status_json(
                    &statuses
                        .get(&repo.metadata.name)
                        .cloned()
                        .unwrap_or_default(),
                )),
                Resource::App(app) => Some(match revisions.get(&app.metadata.name) {
                    Some(rev) => serde_json::json!({ "revision": rev.commit, "ref": rev.git_ref }),
                    None => serde_json::json!({ "revision": "" }),
                }),
                Resource::ClusterGroup(_) => None,
            };
            if let (Some(status), Some(obj)) = (status, doc.as_object_mut()) {
                obj.insert("status".into(), status);
            }
            out.push(doc);
        }
        Ok(out)
    }

    // --- git ---------------------------------------------------------------------------------

    /// (Re)starts following a Repo when its spec is new or changed; fetches at once.
    fn follow(self: &Arc<Self>, repo: &Repo) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let name = repo.metadata.name.clone();
        let mut state = self.lock();
        if let Some(f) = state.followers.get(&name) {
            if f.spec == repo.spec {
                f.trigger.notify_one();
                return;
            }
            f.task.abort();
        }
        let trigger = Arc::new(Notify::new());
        let engine = Arc::clone(self);
        let spec = repo.spec.clone();
        let task = tokio::spawn(
            follow_repo(engine, name.clone(), spec.clone(), Arc::clone(&trigger))
                .instrument(info_span!("follow", repo = %name)),
        );
        state.followers.insert(
            name,
            Follower {
                spec,
                trigger,
                task,
            },
        );
    }

    /// The credentials (by repository URL) for the Repos of `targets`.
    pub fn credentials_for<'a>(
        &self,
        targets: impl IntoIterator<Item = &'a crate::fleet::DesiredTarget>,
    ) -> Vec<(String, RepoCredential)> {
        let mut out: Vec<(String, RepoCredential)> = Vec::new();
        for t in targets {
            if !out.iter().any(|(url, _)| *url == t.repo_url)
                && let Some(c) = self.stored_repo_credential(&t.repo)
            {
                out.push((t.repo_url.clone(), c));
            }
        }
        out
    }

    /// Asks the follower of `repo` to fetch now. False when no such Repo is followed.
    pub fn trigger_fetch(&self, repo: &str) -> bool {
        match self.lock().followers.get(repo) {
            Some(f) => {
                f.trigger.notify_one();
                true
            }
            None => false,
        }
    }

    /// Asks every Repo whose URL is one of `urls` (compared normalised) to fetch now; returns
    /// their names.
    pub fn trigger_fetch_by_url(&self, urls: &[String]) -> Vec<String> {
        let names: Vec<String> = self
            .lock()
            .repos_by_url
            .find(urls)
            .into_iter()
            .map(|(name, _)| name.to_owned())
            .collect();
        names
            .into_iter()
            .filter(|name| self.trigger_fetch(name))
            .collect()
    }

    /// One fetch of a Repo; moves the revision of every App whose files changed.
    async fn poll_repo(&self, name: &str, spec: &RepoSpec) {
        let started = std::time::Instant::now();
        let fetched = match self.git_credential(name, spec) {
            Ok(credential) => {
                self.git
                    .fetch_with(&spec.url, &spec.reference, credential)
                    .await
            }
            Err(e) => Err(e),
        };
        let outcome = match &fetched {
            Err(_) => PollOutcome::failed,
            Ok(r) => match self.store.repo_status(name) {
                Ok(Some(s)) if s.commit == r.commit => PollOutcome::unchanged,
                _ => PollOutcome::changed,
            },
        };
        self.config.metrics.poll(name, outcome, started.elapsed());
        if let Err(e) = self.after_fetch(name, spec, fetched, started).await {
            self.config.metrics.error(MetricsError::store);
            warn!(repo = %name, error = %e, "cannot record fetch result");
        }
    }

    async fn after_fetch(
        &self,
        name: &str,
        spec: &RepoSpec,
        fetched: Result<crate::git::Resolved, crate::git::GitError>,
        fetch_started: std::time::Instant,
    ) -> Result<(), EngineError> {
        let now = now_unix();
        let guard = self.write.lock().await;
        // The Repo may have been deleted or changed while fetching.
        match self.store.resource(Kind::Repo, name)? {
            Some(Resource::Repo(r)) if r.spec == *spec => {}
            _ => return Ok(()),
        }
        let mut status = self.store.repo_status(name)?.unwrap_or_default();
        status.last_fetch_unix = now;
        let resolved = match fetched {
            Ok(r) => r,
            Err(e) => {
                warn!(repo = %name, error = %e, "fetch failed");
                status.error = e.to_string();
                self.store.put_repo_status(name, &status)?;
                return Ok(());
            }
        };
        status.error.clear();
        status.last_success_unix = now;
        let old_commit = std::mem::replace(&mut status.commit, resolved.commit.clone());
        status.git_ref = resolved.git_ref.clone();
        let (apps, _, _) = split_resources(self.store.resources()?);
        let revisions = self.store.revisions()?;
        let changed_files = if old_commit.is_empty() || old_commit == resolved.commit {
            None
        } else {
            match self
                .git
                .changed_files(&spec.url, &old_commit, &resolved.commit)
                .instrument(info_span!("detect_changes", from = %old_commit, to = %resolved.commit))
                .await
            {
                Ok(files) => files,
                Err(e) => {
                    warn!(repo = %name, error = %e, "cannot diff commits; moving every App");
                    None
                }
            }
        };
        let revision = AppRevision {
            commit: resolved.commit.clone(),
            git_ref: resolved.git_ref.clone(),
        };
        // This fetch (the current span) starts the trace of the change for each App it moves.
        let fetch_span = tracing::Span::current();
        telemetry::annotate(
            &fetch_span,
            &[
                (telemetry::VCS_URL, &spec.url),
                (telemetry::VCS_REF, &resolved.git_ref),
                (telemetry::VCS_REVISION, &resolved.commit),
            ],
        );
        // The rollout step this commit starts, if it moves an App: the dispatches to spokes
        // continue its context. Made only then, so that polls that find nothing have no step.
        let mut rollout: Option<(tracing::Span, BTreeMap<String, String>)> = None;
        let mut moved = 0;
        for app in apps.iter().filter(|a| a.spec.repo == name) {
            let current = revisions.get(&app.metadata.name);
            let moves = match current {
                None => true,
                Some(c) if c.commit == revision.commit => false,
                Some(_) => match &changed_files {
                    Some(files) => {
                        changes::app_touched(files, &app.spec.path, &app.spec.extra_paths)
                    }
                    // Unknown history (first fetch, force-push, new URL): move to be safe.
                    None => old_commit != resolved.commit,
                },
            };
            if moves {
                self.store.put_revision(&app.metadata.name, &revision)?;
                let (_, trace) = rollout.get_or_insert_with(|| {
                    let span = info_span!("rollout", repo = %name, revision = %resolved.commit);
                    let trace = telemetry::context_of(&span);
                    (span, trace)
                });
                self.lock().traces.insert(
                    app.metadata.name.clone(),
                    ChangeOrigin {
                        commit: revision.commit.clone(),
                        trace: trace.clone(),
                        fetch_started,
                    },
                );
                self.record_app_event(
                    &app.metadata.name,
                    "NewRevision",
                    format!(
                        "{} moved to {}{}",
                        revision.git_ref,
                        crate::fleet::rollout::short(&revision.commit),
                        match current {
                            Some(c) =>
                                format!(" (from {})", crate::fleet::rollout::short(&c.commit)),
                            None => String::new(),
                        }
                    ),
                    "",
                )?;
                moved += 1;
            }
        }
        self.store.put_repo_status(name, &status)?;
        if old_commit != resolved.commit {
            info!(repo = %name, revision = %resolved.commit, apps_moved = moved, "ref moved");
        }
        if let Some((span, _)) = rollout {
            self.recompute_locked(&guard).instrument(span).await?;
        }
        Ok(())
    }

    // --- clusters ----------------------------------------------------------------------------

    /// Trades a bootstrap token and a CSR for a certificate.
    ///
    /// Everything an unauthenticated caller can make the hub do comes before the token is
    /// known to be good, and is cheap: name and label syntax, a hash, a lookup. Only a caller
    /// with a usable token gets its CSR verified, the write lock, and a signature.
    pub async fn register(&self, reg: Registration) -> Result<RegisterOutcome, EngineError> {
        if let Some(problem) = pki::dns1123_label_problem(&reg.cluster) {
            return Err(EngineError::Invalid(format!(
                "cluster name {:?} {problem}",
                reg.cluster
            )));
        }
        check_labels(&reg.labels)?;
        let now = now_unix();
        let hash = token_hash(&reg.token);
        let token = self
            .store
            .token(&hash)?
            .ok_or_else(|| token_refused(TokenProblem::Unknown))?;
        let existing = self.store.cluster(&reg.cluster)?;
        token
            .check_for(existing.as_ref(), now)
            .map_err(token_refused)?;
        let labels = token
            .admit(&reg.cluster, &reg.labels)
            .map_err(|p| EngineError::PermissionDenied(p.to_string()))?;
        if existing.as_ref().is_some_and(|c| c.revoked) {
            return Err(EngineError::PermissionDenied(format!(
                "cluster {:?} has been revoked",
                reg.cluster
            )));
        }
        let csr = self.pki.verify_csr(&reg.csr_pem).map_err(csr_refused)?;

        self.registration_locks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let guard = self.write.lock().await;
        let pending_outcome = |cluster: &str| RegisterOutcome::Pending {
            cluster: cluster.to_owned(),
            retry_after: PENDING_RETRY,
        };
        // Again under the lock: a registration of the same name may have come first.
        let issued = match self.store.cluster(&reg.cluster)? {
            Some(c) if c.revoked => {
                return Err(EngineError::PermissionDenied(format!(
                    "cluster {:?} has been revoked",
                    reg.cluster
                )));
            }
            // A name is taken once registered: only its current key may come back (a retry
            // after a lost response, or after approval), without spending the token again; so
            // a token holder cannot take over another cluster's name, and a key superseded by
            // a renewal cannot get a new certificate.
            Some(c) if c.key_fingerprint != csr.key_fingerprint => {
                return Err(EngineError::AlreadyExists(format!(
                    "cluster {:?} is already registered with another key",
                    reg.cluster
                )));
            }
            Some(c) if c.pending => return Ok(pending_outcome(&reg.cluster)),
            Some(_) => {
                let issued = self.sign_for(&csr, &reg.cluster)?;
                let expires = issued.not_after_unix;
                self.store.update_cluster(&reg.cluster, |record| {
                    let mut record = record.cloned();
                    if let Some(r) = &mut record {
                        r.certificate_expires_unix = expires;
                        r.last_contact_unix = r.last_contact_unix.max(now);
                    }
                    (record, ())
                })?;
                issued
            }
            None => {
                let pending = self.config.require_approval;
                // A cluster waiting for approval gets its certificate on the retry after it.
                let issued = if pending {
                    None
                } else {
                    Some(self.sign_for(&csr, &reg.cluster)?)
                };
                let token = self.store.use_token(&hash, now).map_err(|e| match e {
                    StoreError::Token(p) => token_refused(p),
                    other => EngineError::Store(other),
                })?;
                info!(cluster = %reg.cluster, token = %token.id, approval = pending, "registration accepted");
                self.store.put_cluster(&ClusterRecord {
                    name: reg.cluster.clone(),
                    labels,
                    agent_version: reg.agent_version,
                    registered_at_unix: now,
                    certificate_expires_unix: issued.as_ref().map_or(0, |i| i.not_after_unix),
                    last_contact_unix: now,
                    revoked: false,
                    key_fingerprint: csr.key_fingerprint.clone(),
                    renewed_key_fingerprints: Vec::new(),
                    pending,
                    token_id: token.id,
                })?;
                match issued {
                    Some(issued) => issued,
                    None => {
                        self.store.flush().await?;
                        info!(cluster = %reg.cluster, "registration waits for approval");
                        return Ok(pending_outcome(&reg.cluster));
                    }
                }
            }
        };
        self.recompute_locked(&guard).await?;
        self.store.flush().await?;
        info!(cluster = %reg.cluster, "certificate issued");
        Ok(RegisterOutcome::Issued(Issued {
            cluster: reg.cluster,
            certificate_pem: issued.certificate_pem,
            ca_pem: self.pki.ca_pem().to_owned(),
        }))
    }

    fn sign_for(
        &self,
        csr: &pki::VerifiedCsr,
        cluster: &str,
    ) -> Result<pki::IssuedCert, EngineError> {
        self.pki
            .sign_cluster(csr, cluster, self.config.cluster_cert_validity)
            .map_err(csr_refused)
    }

    /// What registrations have cost since start: CSRs verified, certificates signed (by
    /// registrations and renewals), and how often a registration took the write lock. A
    /// caller without a usable bootstrap token must cause none of them.
    pub fn registration_work(&self) -> RegistrationWork {
        let (csrs_verified, certificates_signed) = self.pki.csr_work();
        RegistrationWork {
            csrs_verified,
            certificates_signed,
            write_locks: self
                .registration_locks
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Lets a registration waiting for approval get its certificate on its next retry.
    pub async fn approve_cluster(&self, cluster: &str) -> Result<bool, EngineError> {
        let guard = self.write.lock().await;
        let approved = self.store.update_cluster(cluster, |record| {
            match record.filter(|c| c.pending && !c.revoked) {
                Some(c) => (
                    Some(ClusterRecord {
                        pending: false,
                        ..c.clone()
                    }),
                    true,
                ),
                None => (None, false),
            }
        })?;
        if !approved {
            return Ok(false);
        }
        self.recompute_locked(&guard).await?;
        self.store.flush().await?;
        info!(%cluster, "cluster approved");
        Ok(true)
    }

    /// Registrations waiting for approval.
    pub fn pending_clusters(&self) -> Result<Vec<ClusterRecord>, EngineError> {
        Ok(self
            .store
            .clusters()?
            .into_iter()
            .filter(|c| c.pending && !c.revoked)
            .collect())
    }

    pub fn tokens(&self) -> Result<Vec<TokenRecord>, EngineError> {
        Ok(self.store.tokens()?)
    }

    /// Issues a fresh certificate for a connected cluster (rotation over the live link). Its
    /// key is accepted alongside the current one until the spoke confirms it stored the new
    /// certificate ([`Engine::confirm_renewal`]) or connects with it; from then on only the
    /// new one is. `session_key` is the fingerprint of the key the session speaks for; a
    /// session whose key is no longer the bound one cannot renew. Returns the certificate.
    pub async fn renew(
        &self,
        cluster: &str,
        session_key: &str,
        csr_pem: &str,
    ) -> Result<String, EngineError> {
        let _guard = self.write.lock().await;
        let record = self.store.cluster(cluster)?.ok_or_else(|| {
            EngineError::NotFound(format!("cluster {cluster:?} is not registered"))
        })?;
        if record.revoked {
            return Err(EngineError::PermissionDenied(format!(
                "cluster {cluster:?} has been revoked"
            )));
        }
        if !speaks_for(&record, session_key) {
            return Err(EngineError::Unauthenticated(superseded(cluster)));
        }
        let issued = self
            .pki
            .sign_cluster_csr(csr_pem, cluster, self.config.cluster_cert_validity)
            .map_err(csr_refused)?;
        let renewed = self.store.update_cluster(cluster, |record| match record {
            Some(r) if !r.revoked && speaks_for(r, session_key) => (
                Some(r.renewed(session_key, &issued.key_fingerprint, issued.not_after_unix)),
                true,
            ),
            _ => (None, false),
        })?;
        if !renewed {
            return Err(EngineError::FailedPrecondition(format!(
                "cluster {cluster:?} changed while its certificate was renewed; renew again"
            )));
        }
        self.store.flush().await?;
        info!(%cluster, "certificate renewed");
        Ok(issued.certificate_pem)
    }

    /// The spoke of `cluster`, on a session speaking for `session_key`, stored the certificate
    /// a renewal issued for the key `renewed_key`: that key becomes the cluster's, and the
    /// certificate it replaces is refused from now on. True when the binding moved; a key the
    /// last renewal did not issue moves nothing.
    pub async fn confirm_renewal(
        &self,
        cluster: &str,
        session_key: &str,
        renewed_key: &str,
    ) -> Result<bool, EngineError> {
        let moved = self.store.update_cluster(cluster, |record| match record {
            Some(r)
                if !r.revoked
                    && speaks_for(r, session_key)
                    && r.renewed_key_fingerprints.iter().any(|k| k == renewed_key) =>
            {
                (Some(r.bind_key(renewed_key)), true)
            }
            _ => (None, false),
        })?;
        if moved {
            self.store.flush().await?;
            info!(%cluster, "the spoke holds its renewed certificate; the previous one is refused from now on");
        }
        Ok(moved)
    }

    /// Mints a bootstrap token; the secret is in the answer only.
    pub async fn create_token(&self, spec: TokenSpec) -> Result<NewToken, EngineError> {
        if spec.ttl.is_zero() {
            return Err(EngineError::Invalid("ttl must be positive".into()));
        }
        check_labels(&spec.labels)?;
        for key in &spec.allowed_label_keys {
            check_label_key(key, "allowed label key")?;
            if spec.labels.contains_key(key) {
                return Err(EngineError::Invalid(format!(
                    "allowed label key {key:?}: the token also sets label {key:?}, which a spoke cannot change; drop one of the two"
                )));
            }
        }
        if let Some(cluster) = &spec.cluster
            && let Some(problem) = pki::dns1123_label_problem(cluster)
        {
            return Err(EngineError::Invalid(format!(
                "cluster name {cluster:?} {problem}"
            )));
        }
        let secret: [u8; 32] = rand::random();
        let token = format!("gft_{}", hex::encode(secret));
        let hash = token_hash(&token);
        let id = hash[..12].to_owned();
        let expires_at_unix = now_unix().saturating_add(spec.ttl.as_secs() as i64);
        self.store.put_token(
            &hash,
            &TokenRecord {
                id: id.clone(),
                expires_at_unix,
                max_uses: spec.max_uses,
                uses: 0,
                labels: spec.labels,
                description: spec.description,
                revoked: false,
                allowed_label_keys: spec.allowed_label_keys,
                cluster: spec.cluster,
            },
        )?;
        self.store.flush().await?;
        Ok(NewToken {
            token,
            id,
            expires_at_unix,
        })
    }

    /// Cuts a cluster off: its certificate is refused from now on, its live stream ends with a
    /// goodbye that tells the spoke to stop, and it leaves every placement.
    ///
    /// The record and the live connection change under the state lock, the one `connect`
    /// checks the record and adds a connection under: a connection either sees the revocation
    /// and is refused, or exists already and is cut off here. Its session is told before the
    /// cluster's (now empty) desired state is published, and never sends desired state once
    /// told, so a revoked spoke is never handed an empty desired state to prune by.
    pub async fn revoke_cluster(&self, cluster: &str) -> Result<bool, EngineError> {
        let guard = self.write.lock().await;
        {
            let mut state = self.lock();
            let found = self.store.update_cluster(cluster, |record| match record {
                Some(r) => (
                    Some(ClusterRecord {
                        revoked: true,
                        ..r.clone()
                    }),
                    true,
                ),
                None => (None, false),
            })?;
            if !found {
                return Ok(false);
            }
            if let Some(live) = state.connections.remove(cluster) {
                live.revoked.cancel();
            }
        }
        self.store.flush().await?;
        self.recompute_locked(&guard).await?;
        info!(%cluster, "cluster revoked");
        Ok(true)
    }

    /// Makes a bootstrap token unusable, by its id.
    pub async fn revoke_token(&self, id: &str) -> Result<bool, EngineError> {
        let _guard = self.write.lock().await;
        let found = self.store.revoke_token(id)?;
        self.store.flush().await?;
        Ok(found)
    }

    pub fn clusters(&self) -> Result<Vec<ClusterView>, EngineError> {
        let now = now_unix();
        let state = self.lock();
        Ok(self
            .store
            .clusters()?
            .into_iter()
            .filter(|c| !c.pending)
            .map(|mut record| {
                if let Some(t) = state.last_contact.get(&record.name) {
                    record.last_contact_unix = record.last_contact_unix.max(*t);
                }
                if let Some(c) = state.connections.get(&record.name) {
                    record.agent_version = c.agent_version.clone();
                }
                let connected = self.is_connected(&state, &record.name, now);
                ClusterView { record, connected }
            })
            .collect())
    }

    fn is_connected(&self, state: &State, cluster: &str, now: i64) -> bool {
        state.connections.contains_key(cluster)
            && state
                .last_contact
                .get(cluster)
                .is_some_and(|t| now - t <= self.config.heartbeat_grace.as_secs() as i64)
    }

    // --- the link ----------------------------------------------------------------------------

    /// Whether a certificate with `key` may speak for `cluster` now: a cheap look that
    /// changes nothing, to refuse a superseded certificate before its session waits for
    /// anything. [`Engine::connect`] decides again, atomically.
    pub fn check_key(&self, cluster: &str, key: &pki::CertKey) -> Result<(), EngineError> {
        match self.store.cluster(cluster)? {
            Some(r)
                if r.key_binding(&key.fingerprint, key.not_after_unix)
                    == KeyBinding::Superseded =>
            {
                Err(EngineError::Unauthenticated(superseded(cluster)))
            }
            _ => Ok(()),
        }
    }

    /// A spoke said hello with a certificate for `key`: it becomes the cluster's one live
    /// connection, unless the cluster is revoked, waits for approval, or is bound to another
    /// key (the certificate was superseded by a renewal).
    pub async fn connect(
        &self,
        cluster: &str,
        key: &pki::CertKey,
        agent_version: &str,
    ) -> Result<Connection, EngineError> {
        let acked_seq = self.store.acked_seq(cluster)?;
        let now = now_unix();
        let (binding, id, replaced, revoked, desired) = {
            let mut state = self.lock();
            // Checked and recorded under the state lock, which revocation takes too (see
            // `revoke_cluster`), and in one step on the record, so that neither a revocation nor a
            // renewal's new key is undone by writing back a record read before them.
            let admitted = self.store.update_cluster(cluster, |record| {
                let Some(record) = record else {
                    return (
                        None,
                        Err(EngineError::PermissionDenied(format!(
                            "cluster {cluster:?} is not registered with this hub"
                        ))),
                    );
                };
                if record.revoked {
                    return (
                        None,
                        Err(EngineError::PermissionDenied(format!(
                            "cluster {cluster:?} has been revoked"
                        ))),
                    );
                }
                if record.pending {
                    return (
                        None,
                        Err(EngineError::PermissionDenied(format!(
                            "cluster {cluster:?} is waiting for approval"
                        ))),
                    );
                }
                let binding = record.key_binding(&key.fingerprint, key.not_after_unix);
                if binding == KeyBinding::Superseded {
                    return (None, Err(EngineError::Unauthenticated(superseded(cluster))));
                }
                let mut record = match binding {
                    KeyBinding::BindNow | KeyBinding::Renewed => record.bind_key(&key.fingerprint),
                    KeyBinding::Bound | KeyBinding::Superseded => record.clone(),
                };
                record.last_contact_unix = now;
                if !agent_version.is_empty() {
                    record.agent_version = agent_version.to_owned();
                }
                (Some(record), Ok(binding))
            })?;
            let binding = admitted?;
            state.next_connection += 1;
            let id = state.next_connection;
            let replaced = CancellationToken::new();
            let revoked = CancellationToken::new();
            if let Some(old) = state.connections.insert(
                cluster.to_owned(),
                LiveConnection {
                    id,
                    replaced: replaced.clone(),
                    revoked: revoked.clone(),
                    agent_version: agent_version.to_owned(),
                },
            ) {
                old.replaced.cancel();
            }
            state.last_contact.insert(cluster.to_owned(), now);
            let desired = state
                .desired
                .entry(cluster.to_owned())
                .or_insert_with(|| watch::channel(Arc::new(ClusterDesired::default())).0)
                .subscribe();
            (binding, id, replaced, revoked, desired)
        };
        match binding {
            KeyBinding::BindNow => {
                info!(%cluster, fingerprint = %key.fingerprint, "bound the cluster to the key of its current certificate (record from an older hub)");
            }
            KeyBinding::Renewed => {
                info!(%cluster, "connected with its renewed certificate; the previous one is refused from now on");
            }
            KeyBinding::Bound | KeyBinding::Superseded => {}
        }
        self.kick_rollouts();
        let hook = self
            .connect_hook
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook(cluster.to_owned()).await;
        }
        Ok(Connection {
            id,
            desired,
            replaced,
            revoked,
            acked_seq,
        })
    }

    /// For tests: `hook` runs after every connection is admitted and before its session
    /// sends anything, so that a test can put a change (a revocation) exactly there.
    #[doc(hidden)]
    pub fn set_connect_hook(&self, hook: Option<ConnectHook>) {
        *self.connect_hook.lock().unwrap_or_else(|p| p.into_inner()) = hook;
    }

    /// The connection `id` of `cluster` ended.
    pub fn disconnect(&self, cluster: &str, id: u64) {
        let mut state = self.lock();
        if state.connections.get(cluster).is_some_and(|c| c.id == id) {
            state.connections.remove(cluster);
        }
        let last = state.last_contact.get(cluster).copied();
        drop(state);
        self.kick_rollouts();
        let Some(last) = last else {
            return;
        };
        let recorded = self.store.update_cluster(cluster, |record| match record {
            Some(r) if r.last_contact_unix < last => (
                Some(ClusterRecord {
                    last_contact_unix: last,
                    ..r.clone()
                }),
                (),
            ),
            _ => (None, ()),
        });
        if let Err(e) = recorded {
            warn!(%cluster, error = %e, "cannot record last contact");
        }
    }

    /// Any message from a spoke shows it is alive.
    pub fn touch(&self, cluster: &str) {
        self.lock()
            .last_contact
            .insert(cluster.to_owned(), now_unix());
    }

    /// Stores a status report (durably) unless it is a duplicate; returns the seq to ack.
    pub async fn record_report(&self, report: TargetReport) -> Result<u64, EngineError> {
        let cluster = report.cluster.clone();
        let acked = self.store_report(report)?;
        self.store.ack_durably(&cluster, acked).await?;
        Ok(acked)
    }

    /// Stores a report (not yet durable: the caller flushes the store before acking) unless it
    /// is a duplicate; returns the seq to ack once flushed.
    pub fn store_report(&self, mut report: TargetReport) -> Result<u64, EngineError> {
        let cluster = report.cluster.clone();
        // A spoke may only report on its own current Targets; a report about anything else
        // (say, an App removed meanwhile) is acknowledged but not kept.
        let known = self
            .desired(&cluster)
            .is_some_and(|d| d.targets.contains_key(&report.app));
        report.received_at_unix = now_unix();
        let previous = if known {
            self.store.report_summary(&cluster, &report.app)
        } else {
            None
        };
        let outcome = self
            .store
            .record_report(&cluster, report.seq, known.then_some(&report))?;
        match outcome {
            ReportOutcome::Stored { acked_seq } => {
                if known {
                    self.after_report(previous.as_ref(), &report)?;
                } else {
                    debug!(%cluster, app = %report.app, "report for a Target the cluster does not have; not kept");
                }
                Ok(acked_seq)
            }
            ReportOutcome::Duplicate { acked_seq } => {
                debug!(%cluster, seq = report.seq, "duplicate report ignored");
                Ok(acked_seq)
            }
        }
    }

    /// Every Target (optionally of one App and/or cluster) with its last report, ordered by
    /// (app, cluster).
    pub async fn status(
        &self,
        app: Option<&str>,
        cluster: Option<&str>,
    ) -> Result<Vec<TargetView>, EngineError> {
        Ok(self
            .status_page(app, cluster, None, usize::MAX)
            .await?
            .targets)
    }

    /// One page of `status`: at most `limit` Targets ordered by (app, cluster), starting after
    /// the Target `after` (which need not exist any more). Only the page's reports are read from
    /// the store; the keys come from memory.
    pub async fn status_page(
        &self,
        app: Option<&str>,
        cluster: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<StatusPage, EngineError> {
        let now = now_unix();
        let mut keys: Vec<(String, String, String, bool)> = {
            let state = self.lock();
            let mut keys = Vec::new();
            for (c, tx) in &state.desired {
                if cluster.is_some_and(|want| want != c.as_str()) {
                    continue;
                }
                let connected = self.is_connected(&state, c, now);
                let desired = tx.borrow();
                for (a, t) in &desired.targets {
                    if app.is_some_and(|want| want != a) {
                        continue;
                    }
                    if after.is_some_and(|(aa, ac)| (a.as_str(), c.as_str()) <= (aa, ac)) {
                        continue;
                    }
                    keys.push((a.clone(), c.clone(), t.target.commit.clone(), connected));
                }
            }
            keys
        };
        keys.sort_unstable_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
        let more = keys.len() > limit;
        keys.truncate(limit);
        let mut targets = Vec::with_capacity(keys.len());
        for (app, cluster, desired_revision, cluster_connected) in keys {
            let report = self.store.report(&cluster, &app).await?;
            targets.push(TargetView {
                updated_at_unix: report.as_ref().map(|r| r.received_at_unix).unwrap_or(0),
                app,
                cluster,
                desired_revision,
                report,
                cluster_connected,
            });
        }
        Ok(StatusPage { targets, more })
    }

    /// Every Target's last sync and health (from memory), for gauges; a Target with no report
    /// yet counts with the defaults a missing report shows.
    pub fn target_states(&self) -> Vec<(crate::model::SyncState, crate::model::HealthState)> {
        let state = self.lock();
        let mut out = Vec::new();
        for (c, tx) in &state.desired {
            for a in tx.borrow().targets.keys() {
                out.push(match self.store.report_summary(c, a) {
                    Some(r) => (r.sync, r.health),
                    None => {
                        let r = TargetReport::default();
                        (r.sync, r.health)
                    }
                });
            }
        }
        out
    }
}

/// A page of Targets; `more` when Targets follow the last one.
#[derive(Debug, Clone)]
pub struct StatusPage {
    pub targets: Vec<TargetView>,
    pub more: bool,
}

async fn follow_repo(engine: Arc<Engine>, name: String, spec: RepoSpec, trigger: Arc<Notify>) {
    let interval = spec
        .poll_interval
        .unwrap_or(engine.config.default_poll_interval);
    loop {
        engine
            .poll_repo(&name, &spec)
            .instrument(info_span!("fetch", repo = %name, url = %spec.url))
            .await;
        if engine.is_fleet_repo(&name) {
            engine.sync_fleet_detached().await;
        }
        // Jitter spreads the polls of many Repos over time.
        let jittered = interval.mul_f64(rand::random_range(0.9..1.1));
        tokio::select! {
            _ = tokio::time::sleep(jittered) => {}
            _ = trigger.notified() => {}
            _ = engine.shutdown.cancelled() => return,
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

fn split_resources(
    resources: Vec<Resource>,
) -> (
    Vec<App>,
    BTreeMap<String, Repo>,
    BTreeMap<String, ClusterGroup>,
) {
    let mut apps = Vec::new();
    let mut repos = BTreeMap::new();
    let mut groups = BTreeMap::new();
    for r in resources {
        match r {
            Resource::App(a) => apps.push(a),
            Resource::Repo(r) => {
                repos.insert(r.metadata.name.clone(), r);
            }
            Resource::ClusterGroup(g) => {
                groups.insert(g.metadata.name.clone(), g);
            }
        }
    }
    (apps, repos, groups)
}

fn repo_status_json(s: &RepoStatus) -> serde_json::Value {
    let mut status = serde_json::json!({
        "commit": s.commit,
        "ref": s.git_ref,
        "lastFetchUnix": s.last_fetch_unix,
        "lastSuccessUnix": s.last_success_unix,
        "error": s.error,
    });
    if !s.fleet_commit.is_empty() || !s.fleet_error.is_empty() {
        status["fleet"] = serde_json::json!({ "commit": s.fleet_commit, "error": s.fleet_error });
    }
    status
}

/// SHA-256 of a bootstrap token, hex: what the store keeps instead of the token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A refusal for a token that cannot be used: unknown and expired tokens do not
/// authenticate anyone; used-up and revoked ones are known but not allowed.
fn token_refused(problem: TokenProblem) -> EngineError {
    match problem {
        TokenProblem::Unknown | TokenProblem::Expired => {
            EngineError::Unauthenticated(problem.to_string())
        }
        TokenProblem::UsedUp | TokenProblem::Revoked => {
            EngineError::PermissionDenied(problem.to_string())
        }
    }
}

fn csr_refused(e: PkiError) -> EngineError {
    match e {
        PkiError::InvalidCsr(m) => EngineError::Invalid(format!("csr_pem: {m}")),
        other => EngineError::Pki(other),
    }
}

fn superseded(cluster: &str) -> String {
    format!(
        "the certificate of cluster {cluster:?} has been superseded by a renewal; only the cluster's current certificate is accepted"
    )
}

/// Whether a session connected with the key `session_key` still speaks for the cluster.
fn speaks_for(record: &ClusterRecord, session_key: &str) -> bool {
    record.key_fingerprint.is_empty() || record.key_fingerprint == session_key
}

fn check_label_key(k: &str, what: &str) -> Result<(), EngineError> {
    let key_ok = !k.is_empty()
        && k.len() <= 253
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    if key_ok {
        Ok(())
    } else {
        Err(EngineError::Invalid(format!("{what} {k:?} is not valid")))
    }
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), EngineError> {
    for (k, v) in labels {
        check_label_key(k, "label key")?;
        let value_ok = v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !value_ok {
            return Err(EngineError::Invalid(format!(
                "label {k:?}: value {v:?} is not valid"
            )));
        }
    }
    Ok(())
}
