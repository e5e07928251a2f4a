//! The agent loop: one worker per Target. On a new spec a worker fetches the commit, renders,
//! applies in order and reports; then it watches health until the Target is Healthy or the
//! progress timeout turns what is still progressing into Degraded, reporting every change.
//!
//! The desired state comes from the link's persisted copy, so the agent keeps enforcing the
//! last one it had while the hub is away.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::cluster::{Cluster, ClusterError, Deletion, InventoryRef, Precondition};
use crate::desired::DesiredState;
use crate::git::{AppFiles, GitCache, ReadLimits};
use crate::link::{LinkState, unix_now};
use crate::metrics::{ErrorKind as MetricsError, Step};
use crate::model::{
    Health, ObjectRef, ResourceAction, ResourceResult, SyncState, TargetSpec, TargetStatus,
};
use crate::renderer::{RenderGate, RenderSettings, Renderers, Workspace};
use crate::sync::render::{self, FileError, Manifest, RenderContext, RenderLimits, Rendered};
use crate::sync::retry::{self, RetryPolicy};
use crate::sync::{drift, health, order, prune, report};
use crate::telemetry;
use crate::watch::Watches;

/// Renders at once by default: each may run a child process and parse megabytes of YAML, and
/// a spoke is given a core or two.
pub const DEFAULT_MAX_CONCURRENT_RENDERS: usize = 2;

/// How the agent paces itself.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub cluster_name: String,
    /// How long objects may progress before they count as Degraded.
    pub progress_timeout: Duration,
    /// Durations and errors of syncs, for `/metrics`.
    pub metrics: Arc<crate::metrics::SpokeMetrics>,
    /// Health polling while something is progressing.
    pub health_poll: Duration,
    /// Health polling once everything has settled (healthy or degraded).
    pub settled_poll: Duration,
    /// The longest gap between checks of a settled Target that does not heal itself.
    pub max_settled_poll: Duration,
    /// Retry delay after a fetch or render failure (for a fetch, once its quick retries
    /// below are spent); it doubles up to ten minutes while the failure lasts.
    pub retry_after_failure: Duration,
    /// Tries in all of a fetch that fails transiently (the network, the Git server, a commit
    /// a mirror does not have yet) before the Target is reported Failed; 1 turns quick
    /// retries off. Failures that would repeat (a refused credential, a missing path) fail at
    /// once.
    pub fetch_attempts: u32,
    /// The wait after the first failed try of a fetch; it doubles per try, up to
    /// `fetch_retry_max`, with jitter (see [`crate::sync::retry`]).
    pub fetch_retry_base: Duration,
    pub fetch_retry_max: Duration,
    /// How long to wait for a kind whose CRD the same sync applied to be served.
    pub crd_wait: Duration,
    pub render_limits: RenderLimits,
    pub read_limits: ReadLimits,
    /// Longest a `kustomize build` may run.
    pub kustomize_timeout: Duration,
    /// The `helm` to run `helm template` with (a path, or a name looked up on PATH).
    pub helm_command: std::path::PathBuf,
    /// Longest a `helm template` may run.
    pub helm_timeout: Duration,
    /// The rendering engines, in detection order.
    pub renderers: Renderers,
    /// Most renders (a `kustomize build` or `helm template` and the parse of its output, or
    /// the parse of plain YAML) running at once, over every Target.
    pub max_concurrent_renders: usize,
}

impl AgentConfig {
    /// How transient fetch failures are retried.
    pub fn fetch_retry(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: self.fetch_attempts,
            base: self.fetch_retry_base,
            max: self.fetch_retry_max,
        }
    }

    /// What renderers may spend, and the commands they run.
    pub fn render_settings(&self) -> RenderSettings {
        RenderSettings {
            limits: self.render_limits,
            read_limits: self.read_limits,
            kustomize_timeout: self.kustomize_timeout,
            helm_command: self.helm_command.clone(),
            helm_timeout: self.helm_timeout,
        }
    }

    pub fn new(cluster_name: impl Into<String>) -> Self {
        Self {
            cluster_name: cluster_name.into(),
            progress_timeout: Duration::from_secs(300),
            metrics: Arc::default(),
            health_poll: Duration::from_secs(1),
            settled_poll: Duration::from_secs(5),
            max_settled_poll: Duration::from_secs(60),
            retry_after_failure: Duration::from_secs(30),
            // Waits of about 1, 2 and 4 s: a reset connection, a Git server over its
            // connection limit or a lagging mirror gets 7 s to recover, while an outage still
            // shows as Failed within about 10 s (then `retry_after_failure` takes over).
            fetch_attempts: 4,
            fetch_retry_base: Duration::from_secs(1),
            fetch_retry_max: Duration::from_secs(15),
            crd_wait: Duration::from_secs(30),
            render_limits: RenderLimits::default(),
            read_limits: ReadLimits::default(),
            kustomize_timeout: Duration::from_secs(60),
            helm_command: "helm".into(),
            helm_timeout: Duration::from_secs(60),
            renderers: Renderers::standard(),
            max_concurrent_renders: DEFAULT_MAX_CONCURRENT_RENDERS,
        }
    }
}

/// Where a worker sends its reports.
pub trait Reporter: Send + Sync + 'static {
    fn report(&self, status: TargetStatus);
}

impl Reporter for LinkState {
    fn report(&self, status: TargetStatus) {
        LinkState::report(self, status);
    }
}

struct Context {
    config: AgentConfig,
    cluster: Arc<Cluster>,
    /// One watch per kind, shared by every Target (see `crate::watch`).
    watches: Watches,
    git: Arc<GitCache>,
    reporter: Arc<dyn Reporter>,
    render_settings: RenderSettings,
    /// Shared by every Target: see `AgentConfig::max_concurrent_renders`.
    render_gate: RenderGate,
}

struct Worker {
    spec: watch::Sender<TargetSpec>,
    cancel: CancellationToken,
}

/// Runs until `cancel` fires, keeping one worker per Target of the desired state.
pub async fn run(
    config: AgentConfig,
    cluster: Arc<Cluster>,
    git: Arc<GitCache>,
    reporter: Arc<dyn Reporter>,
    mut desired: watch::Receiver<DesiredState>,
    cancel: CancellationToken,
) {
    let ctx = Arc::new(Context {
        render_settings: config.render_settings(),
        render_gate: RenderGate::new(config.max_concurrent_renders),
        config,
        watches: Watches::new(cluster.clone()),
        cluster,
        git,
        reporter,
    });
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut tasks = JoinSet::new();
    loop {
        let state = desired.borrow_and_update().clone();
        let state = Arc::new(state);
        let removed: Vec<String> = workers
            .keys()
            .filter(|id| !state.targets.contains_key(*id))
            .cloned()
            .collect();
        for id in removed {
            if let Some(worker) = workers.remove(&id) {
                tracing::info!(target_id = %id, "target removed; stopping its worker");
                worker.cancel.cancel();
                let spec = worker.spec.borrow().clone();
                if spec.sync_policy.prune {
                    tasks.spawn(prune_removed(ctx.clone(), spec));
                }
            }
        }
        for (id, spec) in &state.targets {
            match workers.get(id) {
                Some(worker) => {
                    worker.spec.send_if_modified(|held| {
                        let changed = !same_spec(held, spec);
                        if changed {
                            *held = spec.clone();
                        }
                        changed
                    });
                }
                None => {
                    let (tx, rx) = watch::channel(spec.clone());
                    let worker_cancel = cancel.child_token();
                    tasks.spawn(target_worker(
                        ctx.clone(),
                        rx,
                        desired.clone(),
                        worker_cancel.clone(),
                    ));
                    workers.insert(
                        id.clone(),
                        Worker {
                            spec: tx,
                            cancel: worker_cancel,
                        },
                    );
                }
            }
        }
        tokio::select! {
            changed = desired.changed() => if changed.is_err() { break },
            () = cancel.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    for worker in workers.values() {
        worker.cancel.cancel();
    }
    while tasks.join_next().await.is_some() {}
}

/// Whether two specs ask for the same thing. The trace context says which hub step sent a
/// spec, not what it asks for: a spec sent again (a snapshot after a reconnect) is no change.
fn same_spec(a: &TargetSpec, b: &TargetSpec) -> bool {
    TargetSpec {
        trace: BTreeMap::new(),
        ..a.clone()
    } == TargetSpec {
        trace: BTreeMap::new(),
        ..b.clone()
    }
}

/// The result of one apply pass, kept while health is watched.
struct Attempt {
    spec: TargetSpec,
    resources: Vec<ResourceResult>,
    /// What was applied, as placed in its scope, to re-apply on drift.
    manifests: HashMap<ObjectRef, Manifest>,
    /// The server's view of the declared fields right after apply (see `sync::drift`).
    expected: HashMap<ObjectRef, serde_json::Value>,
    fatal: Option<String>,
    finished: Instant,
}

async fn target_worker(
    ctx: Arc<Context>,
    mut spec_rx: watch::Receiver<TargetSpec>,
    desired: watch::Receiver<DesiredState>,
    cancel: CancellationToken,
) {
    let mut last: Option<TargetStatus> = None;
    let mut versions: HashMap<ObjectRef, String> = HashMap::new();
    loop {
        let mut spec = spec_rx.borrow_and_update().clone();
        let span = tracing::info_span!(
            "sync",
            app = %spec.app,
            cluster = %ctx.config.cluster_name,
            revision = %spec.source.commit,
        );
        // A child of the hub's dispatch of this spec; reports carry the sync's own context,
        // so that the hub's spans storing them join the trace below it.
        telemetry::set_parent(&span, &spec.trace);
        telemetry::annotate(
            &span,
            &[
                (telemetry::APP, &spec.app),
                (telemetry::CLUSTER, &ctx.config.cluster_name),
                (telemetry::REVISION, &spec.source.commit),
            ],
        );
        spec.trace = telemetry::context_of(&span);
        if spec.sync_policy.suspended {
            let status = status_of(
                &spec,
                SyncState::Pending,
                Health::Unknown,
                "sync is suspended by policy".into(),
                Vec::new(),
            );
            send_if_changed(&ctx, &mut last, status);
            tokio::select! {
                changed = spec_rx.changed() => if changed.is_err() { return } else { continue },
                () = cancel.cancelled() => return,
            }
        }
        let syncing = status_of(
            &spec,
            SyncState::Syncing,
            last.as_ref().map_or(Health::Progressing, |s| s.health),
            format!("syncing revision {}", short(&spec.source.commit)),
            Vec::new(),
        );
        send_if_changed(&ctx, &mut last, syncing);
        let credential = desired
            .borrow()
            .credential_for(&spec.source.repo_url)
            .cloned();
        let sync = sync_once(
            &ctx,
            &spec,
            credential.as_ref(),
            &mut versions,
            &mut last,
            &mut spec_rx,
        );
        let attempt = tokio::select! {
            attempt = sync.instrument(span.clone()) => attempt,
            () = cancel.cancelled() => return,
        };
        let Some(attempt) = attempt else {
            // A newer spec arrived while a fetch waited to be retried: sync that one instead,
            // unless the spec channel closed (the Target was removed).
            if spec_rx.has_changed().is_err() {
                return;
            }
            continue;
        };
        let new_spec = watch_health(&ctx, attempt, &mut last, &mut spec_rx, &cancel, span).await;
        if !new_spec {
            return;
        }
    }
}

/// Watches the health of what was applied, reporting changes. Returns true when a new spec
/// arrived (sync again), false when the worker should stop.
async fn watch_health(
    ctx: &Context,
    mut attempt: Attempt,
    last: &mut Option<TargetStatus>,
    spec_rx: &mut watch::Receiver<TargetSpec>,
    cancel: &CancellationToken,
    sync_span: tracing::Span,
) -> bool {
    let mut failure_wait = ctx.config.retry_after_failure;
    // A change to what was applied wakes the loop at once (drift is reported, and reverted
    // with selfHeal, within moments); the timed checks are the safety net.
    let watches = ctx
        .watches
        .subscribe(&attempt.spec.app, attempt.manifests.keys())
        .await;
    let mut quiet_rounds: u32 = 0;
    // Health is watched in a `health` span of the sync until the Target first settles, which
    // ends the sync's part of the change's trace; later checks run in a `watch` span, which is
    // not exported.
    let mut health = Some(tracing::info_span!(parent: &sync_span, "health"));
    let watch = tracing::info_span!(
        parent: None,
        "watch",
        app = %attempt.spec.app,
        cluster = %ctx.config.cluster_name,
        revision = %attempt.spec.source.commit,
    );
    drop(sync_span);
    loop {
        let span = health.clone().unwrap_or_else(|| watch.clone());
        let (delay, settled) = async {
            let mut resources = attempt.resources.clone();
            if attempt.fatal.is_some() {
                let summary = report::summarize(&resources, attempt.fatal.as_deref());
                send_if_changed(
                    ctx,
                    last,
                    status_of(
                        &attempt.spec,
                        summary.sync,
                        summary.health,
                        summary.message,
                        resources,
                    ),
                );
                let wait = failure_wait;
                failure_wait = (failure_wait * 2).min(Duration::from_secs(600));
                (wait, true)
            } else {
                let drifted = assess_health(ctx, &mut resources, &attempt.expected).await;
                let expired = attempt.finished.elapsed() >= ctx.config.progress_timeout;
                if expired {
                    report::expire_progressing(&mut resources, ctx.config.progress_timeout);
                }
                let summary = report::summarize(&resources, None);
                let progressing = summary.health == Health::Progressing
                    || resources.iter().any(|r| r.health == Health::Progressing);
                let changed = send_if_changed(
                    ctx,
                    last,
                    status_of(
                        &attempt.spec,
                        summary.sync,
                        summary.health,
                        summary.message,
                        resources,
                    ),
                );
                quiet_rounds = if changed {
                    0
                } else {
                    quiet_rounds.saturating_add(1)
                };
                let delay = if !drifted.is_empty() && attempt.spec.sync_policy.self_heal {
                    heal(ctx, &mut attempt, &drifted).await;
                    ctx.config.health_poll
                } else if progressing {
                    ctx.config.health_poll
                } else {
                    settled_delay(
                        &ctx.config,
                        attempt.spec.sync_policy.self_heal && !watches.working(),
                        quiet_rounds,
                    )
                };
                (delay, !progressing)
            }
        }
        .instrument(span)
        .await;
        if settled {
            health = None;
        }
        tokio::select! {
            changed = spec_rx.changed() => return changed.is_ok(),
            () = watches.changed() => {}
            () = tokio::time::sleep(delay) => {
                if attempt.fatal.is_some() {
                    // Retry the whole sync: the repository or network may be back.
                    spec_rx.mark_changed();
                    return true;
                }
            }
            () = cancel.cancelled() => return false,
        }
    }
}

/// How long to wait between checks of a settled Target: `settled_poll` while it changes or
/// when it must heal itself without working watches (drift must be caught within seconds),
/// doubling per quiet round up to `max_settled_poll` otherwise, so that an idle spoke costs
/// next to nothing.
fn settled_delay(config: &AgentConfig, poll_for_drift: bool, quiet_rounds: u32) -> Duration {
    if poll_for_drift {
        return config.settled_poll;
    }
    let factor = 1u32 << quiet_rounds.min(8);
    config
        .settled_poll
        .saturating_mul(factor)
        .min(config.max_settled_poll.max(config.settled_poll))
}

/// Self-heal: re-applies drifted objects, taking back the fields Git declares (force: someone
/// else's update took their ownership).
async fn heal(ctx: &Context, attempt: &mut Attempt, drifted: &[(ObjectRef, Vec<String>)]) {
    for (object, paths) in drifted {
        let Some(manifest) = attempt.manifests.get(object) else {
            continue;
        };
        let applied = match ctx.cluster.resolve(&object.api_version, &object.kind).await {
            Ok(resolved) => ctx.cluster.apply(&resolved, manifest, true).await,
            Err(error) => Err(error),
        };
        match applied {
            Ok(applied) => {
                tracing::info!(object = %object.display_name(), paths = %paths.join(", "), "reverted drift");
                attempt.expected.insert(
                    object.clone(),
                    drift::project(&manifest.body, &applied.object),
                );
            }
            Err(error) => {
                tracing::warn!(object = %object.display_name(), %error, "could not revert drift")
            }
        }
    }
}

/// What fetching a Target's commit came to.
enum Fetched {
    Files(AppFiles),
    /// The message the Target fails with.
    Failed(String),
    /// A newer spec arrived (or the spec channel closed) while waiting to try again.
    Superseded,
}

/// Fetches the commit and reads the App path, trying transient failures again per
/// `AgentConfig::fetch_retry`. While it waits the Target stays Syncing with a message that says
/// what failed and when the next try is; only a failure that would repeat, or the last try's,
/// fails the Target.
async fn fetch(
    ctx: &Context,
    spec: &TargetSpec,
    credential: Option<&crate::model::RepoCredential>,
    last: &mut Option<TargetStatus>,
    spec_rx: &mut watch::Receiver<TargetSpec>,
) -> Fetched {
    let metrics = &ctx.config.metrics;
    let policy = ctx.config.fetch_retry();
    let attempts = policy.attempts();
    let mut failed: u32 = 0;
    loop {
        let started = Instant::now();
        let fetch_span = tracing::info_span!(
            "fetch",
            repo = %spec.source.repo_url,
            attempt = failed + 1,
        );
        telemetry::annotate(
            &fetch_span,
            &[
                (telemetry::VCS_URL, &spec.source.repo_url),
                (telemetry::VCS_REF, &spec.source.git_ref),
                (telemetry::VCS_REVISION, &spec.source.commit),
            ],
        );
        let fetched = ctx
            .git
            .read_app(&spec.source, credential, ctx.config.read_limits)
            .instrument(fetch_span)
            .await;
        metrics.observe(Step::fetch, started.elapsed());
        let error = match fetched {
            Ok(files) => return Fetched::Files(files),
            Err(error) => error,
        };
        metrics.error(MetricsError::fetch);
        failed += 1;
        let transient = error.is_transient();
        let wait = if transient {
            policy.next_delay(failed, rand::random::<f64>())
        } else {
            None
        };
        let Some(wait) = wait else {
            tracing::warn!(%error, attempt = failed, attempts, transient, "fetch failed");
            return Fetched::Failed(if transient && failed > 1 {
                format!("fetch failed after {failed} attempts: {error}")
            } else {
                error.to_string()
            });
        };
        tracing::warn!(%error, attempt = failed, attempts, retry_in = ?wait, "fetch failed; retrying");
        let retrying = status_of(
            spec,
            SyncState::Syncing,
            last.as_ref().map_or(Health::Progressing, |s| s.health),
            format!(
                "fetch failed (attempt {failed} of {attempts}), retrying in {}: {error}",
                retry::describe(wait)
            ),
            Vec::new(),
        );
        send_if_changed(ctx, last, retrying);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = spec_rx.changed() => return Fetched::Superseded,
        }
    }
}

/// Fetch, render, apply: everything up to the first health check. `None` when a newer spec
/// arrived before the fetch succeeded or failed for good.
async fn sync_once(
    ctx: &Context,
    spec: &TargetSpec,
    credential: Option<&crate::model::RepoCredential>,
    versions: &mut HashMap<ObjectRef, String>,
    last: &mut Option<TargetStatus>,
    spec_rx: &mut watch::Receiver<TargetSpec>,
) -> Option<Attempt> {
    let fail = |message: String| Attempt {
        spec: spec.clone(),
        resources: Vec::new(),
        manifests: HashMap::new(),
        expected: HashMap::new(),
        fatal: Some(message),
        finished: Instant::now(),
    };
    let metrics = &ctx.config.metrics;
    let files = match fetch(ctx, spec, credential, last, spec_rx).await {
        Fetched::Files(files) => files,
        Fetched::Failed(message) => return Some(fail(message)),
        Fetched::Superseded => return None,
    };
    let render_ctx = RenderContext {
        app: spec.app.clone(),
        target_id: spec.target_id.clone(),
        revision: spec.source.commit.clone(),
        namespace: spec.namespace.clone(),
        create_namespace: true,
    };
    let workspace = Workspace {
        spec,
        files,
        credential,
        git: &ctx.git,
        settings: &ctx.render_settings,
    };
    let scopes = ctx.cluster.known_scopes();
    let rendered = render_target(
        &ctx.config.renderers,
        &ctx.render_gate,
        workspace,
        &render_ctx,
        &render::scopes_from(&scopes),
    )
    .await;
    let (files, rendered, took) = match rendered {
        Ok(rendered) => rendered,
        Err(message) => {
            metrics.error(MetricsError::render);
            return Some(fail(message));
        }
    };
    metrics.observe(Step::render, took);
    let started = Instant::now();

    let mut resources: Vec<ResourceResult> = files
        .errors
        .iter()
        .chain(rendered.errors.iter())
        .map(invalid_file)
        .collect();
    record_intent(ctx, spec, &rendered.manifests).await;
    let crds = served_by_crds(&rendered.manifests);
    let span = tracing::info_span!("apply", objects = rendered.manifests.len());
    let mut manifests = HashMap::new();
    let mut expected = HashMap::new();
    async {
        // Set once a wave that stops on failure had one: later waves are only reported.
        let mut stopped: Option<String> = None;
        for wave in order::plan(rendered.manifests) {
            if let Some(reason) = &stopped {
                for manifest in &wave.manifests {
                    resources.push(result(
                        manifest,
                        ResourceAction::Skipped,
                        Health::Unknown,
                        reason.clone(),
                    ));
                }
                continue;
            }
            let (number, stop_on_failure) = (wave.wave, wave.stop_on_failure);
            let mut first_failure = None;
            for mut manifest in wave.manifests {
                let (result, server) = apply_one(ctx, spec, &mut manifest, &crds, versions).await;
                if result.action == ResourceAction::Failed && first_failure.is_none() {
                    first_failure = Some(result.object.display_name());
                }
                if let Some(server) = server {
                    expected.insert(
                        manifest.object.clone(),
                        drift::project(&manifest.body, &server),
                    );
                    manifests.insert(manifest.object.clone(), manifest);
                }
                resources.push(result);
            }
            if stop_on_failure && let Some(failed) = first_failure {
                tracing::warn!(wave = number, %failed, "a wave that stops on failure failed; later waves are not applied");
                stopped = Some(format!(
                    "not applied: {failed} failed in wave {number}, which stops on failure"
                ));
            }
        }
    }
    .instrument(span)
    .await;
    let render_clean = files.errors.is_empty() && rendered.errors.is_empty();
    prune(ctx, spec, render_clean, &mut resources)
        .instrument(tracing::info_span!("prune"))
        .await;
    metrics.observe(Step::apply, started.elapsed());
    for r in &resources {
        match r.action {
            ResourceAction::Failed => metrics.error(MetricsError::apply),
            ResourceAction::Invalid => metrics.error(MetricsError::render),
            _ => {}
        }
    }
    tracing::info!(
        applied = resources
            .iter()
            .filter(|r| matches!(
                r.action,
                ResourceAction::Applied | ResourceAction::Unchanged
            ))
            .count(),
        failed = resources
            .iter()
            .filter(|r| matches!(r.action, ResourceAction::Failed | ResourceAction::Invalid))
            .count(),
        "applied"
    );
    Some(Attempt {
        spec: spec.clone(),
        resources,
        manifests,
        expected,
        fatal: None,
        finished: Instant::now(),
    })
}

async fn apply_one(
    ctx: &Context,
    spec: &TargetSpec,
    manifest: &mut Manifest,
    crds: &[(String, String)],
    versions: &mut HashMap<ObjectRef, String>,
) -> (ResourceResult, Option<serde_json::Value>) {
    let resolved = match resolve_waiting_for_crd(ctx, manifest, crds).await {
        Ok(resolved) => resolved,
        Err(error) => {
            let health = if matches!(error, ClusterError::UnknownKind { .. }) {
                Health::Missing
            } else {
                Health::Unknown
            };
            return (
                result(manifest, ResourceAction::Failed, health, error.to_string()),
                None,
            );
        }
    };
    render::place_in_scope(manifest, resolved.namespaced, &spec.namespace);
    match ctx
        .cluster
        .apply(&resolved, manifest, spec.sync_policy.force)
        .await
    {
        Ok(applied) => {
            let unchanged = versions.get(&manifest.object) == Some(&applied.resource_version);
            versions.insert(manifest.object.clone(), applied.resource_version);
            let action = if unchanged {
                ResourceAction::Unchanged
            } else {
                ResourceAction::Applied
            };
            (
                result(manifest, action, Health::Progressing, String::new()),
                Some(applied.object),
            )
        }
        Err(error) => {
            tracing::warn!(object = %manifest.object.display_name(), %error, "apply failed");
            (
                result(
                    manifest,
                    ResourceAction::Failed,
                    Health::Unknown,
                    error.to_string(),
                ),
                None,
            )
        }
    }
}

/// Adds the objects about to be applied to the Target's inventory before any is created (see
/// [`prune::intent`]): a spoke stopped mid-apply then still knows them when the revision it
/// syncs next has dropped them. Best effort: on a first sync the namespace that will hold the
/// inventory may not exist yet, and an apply that cannot record its intent is no worse off than
/// one that did not try.
async fn record_intent(ctx: &Context, spec: &TargetSpec, manifests: &[Manifest]) {
    let inventory_ref = InventoryRef::new(&spec.app, &spec.target_id, &spec.namespace);
    let previous = match ctx.cluster.read_inventory(&inventory_ref).await {
        Ok(previous) => previous.unwrap_or_default(),
        Err(error) => {
            tracing::warn!(%error, "cannot read the inventory before applying");
            return;
        }
    };
    let objects: Vec<ObjectRef> = manifests.iter().map(|m| m.object.clone()).collect();
    if let Some(next) = prune::intent(&previous, &objects)
        && let Err(error) = ctx.cluster.write_inventory(&inventory_ref, &next).await
    {
        tracing::debug!(%error, "cannot record the objects about to be applied");
    }
}

/// Deletes what the Target applied before and Git no longer has (where policy and safety
/// allow), then records the new inventory in the cluster.
async fn prune(
    ctx: &Context,
    spec: &TargetSpec,
    render_clean: bool,
    resources: &mut Vec<ResourceResult>,
) {
    let inventory_ref = InventoryRef::new(&spec.app, &spec.target_id, &spec.namespace);
    let previous = match ctx.cluster.read_inventory(&inventory_ref).await {
        Ok(previous) => previous.unwrap_or_default(),
        Err(error) => {
            // Without the old inventory a new one would forget objects: leave both alone.
            tracing::warn!(%error, "cannot read the inventory; not pruning and not recording");
            return;
        }
    };
    let current: Vec<ObjectRef> = resources
        .iter()
        .filter(|r| r.action != ResourceAction::Invalid)
        .map(|r| r.object.clone())
        .collect();
    let mut still_present = Vec::new();
    match prune::candidates(&previous, &current, spec.sync_policy.prune, render_clean) {
        Ok(gone) => {
            for object in gone {
                match delete_if_ours(ctx, spec, &object).await {
                    Ok(Pruning::Deleted(message)) => resources.push(ResourceResult {
                        object,
                        action: ResourceAction::Pruned,
                        health: Health::Healthy,
                        message,
                        source_file: String::new(),
                    }),
                    Ok(Pruning::Kept(reason)) => {
                        if reason == prune::KEPT_BY_ANNOTATION {
                            resources.push(requires_pruning(&object, reason));
                        }
                        still_present.push(object);
                    }
                    // Not a failure: the next sync looks at the object as it is then.
                    Ok(Pruning::Changed) => {
                        resources.push(ResourceResult {
                            object: object.clone(),
                            action: ResourceAction::Skipped,
                            health: Health::Unknown,
                            message: CHANGED_SINCE_CHECKED.to_owned(),
                            source_file: String::new(),
                        });
                        still_present.push(object);
                    }
                    Err(error) => {
                        resources.push(ResourceResult {
                            object: object.clone(),
                            action: ResourceAction::Failed,
                            health: Health::Unknown,
                            message: format!("pruning: {error}"),
                            source_file: String::new(),
                        });
                        still_present.push(object);
                    }
                }
            }
        }
        Err(hold) => {
            let gone = prune::candidates(&previous, &current, true, true).unwrap_or_default();
            tracing::info!(
                ?hold,
                objects = gone.len(),
                "not pruning objects dropped from Git"
            );
            for object in gone {
                if hold == prune::Hold::PolicyOff {
                    match ctx.cluster.get(&object).await {
                        // Deleted by someone else: nothing left to prune or to remember.
                        Ok(None) => continue,
                        Ok(Some(live)) => {
                            match prune::may_delete(&live, &spec.app, &spec.target_id) {
                                Ok(()) => resources.push(requires_pruning(
                                    &object,
                                    "the App's sync policy has prune off",
                                )),
                                Err(reason) if reason == prune::KEPT_BY_ANNOTATION => {
                                    resources.push(requires_pruning(&object, reason));
                                }
                                Err(_) => {}
                            }
                        }
                        Err(error) => {
                            tracing::warn!(object = %object.display_name(), %error, "reading an object dropped from Git");
                        }
                    }
                }
                still_present.push(object);
            }
        }
    }
    let next = prune::next_inventory(&spec.source.commit, &current, &still_present);
    if next != previous
        && let Err(error) = ctx.cluster.write_inventory(&inventory_ref, &next).await
    {
        tracing::warn!(%error, "cannot record the inventory");
    }
}

/// What pruning one object came to.
enum Pruning {
    /// Deleted, or already gone.
    Deleted(String),
    /// Kept, for this reason (see `prune::may_delete`).
    Kept(&'static str),
    /// Not deleted: between the check and the delete, the object was changed, or deleted and
    /// created again, by someone else (the server refused the delete's preconditions).
    Changed,
}

/// The result message of an object that [`Pruning::Changed`] kept.
pub const CHANGED_SINCE_CHECKED: &str = "skipped: changed since checked";

/// An object Git no longer has that stays in the cluster on purpose.
fn requires_pruning(object: &ObjectRef, reason: &str) -> ResourceResult {
    ResourceResult {
        object: object.clone(),
        action: ResourceAction::RequiresPruning,
        health: Health::Unknown,
        message: format!("requires pruning: no longer in Git, kept because {reason}"),
        source_file: String::new(),
    }
}

/// Deletes an object when the live one is this Target's and may be deleted.
async fn delete_if_ours(
    ctx: &Context,
    spec: &TargetSpec,
    object: &ObjectRef,
) -> Result<Pruning, ClusterError> {
    let Some(live) = ctx.cluster.get(object).await? else {
        return Ok(Pruning::Deleted("already gone".into()));
    };
    if let Err(reason) = prune::may_delete(&live, &spec.app, &spec.target_id) {
        tracing::info!(object = %object.display_name(), reason, "keeping an object dropped from Git");
        return Ok(Pruning::Kept(reason));
    }
    // Only the object just checked: one that someone changed or re-created since is theirs
    // until the next sync has looked at it.
    match ctx
        .cluster
        .delete(object, Some(&Precondition::of(&live)))
        .await?
    {
        Deletion::Deleted => {
            tracing::info!(object = %object.display_name(), "pruned");
            Ok(Pruning::Deleted("pruned: no longer in Git".into()))
        }
        Deletion::AlreadyGone => Ok(Pruning::Deleted("already gone".into())),
        Deletion::Changed(message) => {
            tracing::info!(object = %object.display_name(), %message, "not pruning an object that changed since it was checked");
            Ok(Pruning::Changed)
        }
    }
}

/// Deletes everything a removed Target applied (its policy allowing), then its inventory.
/// Objects that opted out of pruning are left behind, no longer tracked.
async fn prune_removed(ctx: Arc<Context>, spec: TargetSpec) {
    let span = tracing::info_span!("prune", app = %spec.app, cluster = %ctx.config.cluster_name, revision = %spec.source.commit);
    async {
        let inventory_ref = InventoryRef::new(&spec.app, &spec.target_id, &spec.namespace);
        let previous = match ctx.cluster.read_inventory(&inventory_ref).await {
            Ok(Some(previous)) => previous,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "cannot read the inventory of a removed target");
                return;
            }
        };
        let gone = prune::candidates(&previous, &[], true, true).unwrap_or_default();
        let mut kept = Vec::new();
        for object in gone {
            match delete_if_ours(&ctx, &spec, &object).await {
                // Objects kept on purpose are left behind; only failures and objects changed
                // since they were checked keep the inventory.
                Ok(Pruning::Deleted(_) | Pruning::Kept(_)) => {}
                Ok(Pruning::Changed) => kept.push(object),
                Err(error) => {
                    tracing::warn!(object = %object.display_name(), %error, "pruning a removed target");
                    kept.push(object);
                }
            }
        }
        let result = if kept.is_empty() {
            ctx.cluster.delete_inventory(&inventory_ref).await
        } else {
            ctx.cluster.write_inventory(&inventory_ref, &prune::next_inventory(&previous.revision, &[], &kept)).await
        };
        if let Err(error) = result {
            tracing::warn!(%error, "updating the inventory of a removed target");
        }
    }
    .instrument(span)
    .await;
}

/// Resolves a kind; when a CRD of this same sync defines it, waits (bounded) for the server to
/// start serving it.
async fn resolve_waiting_for_crd(
    ctx: &Context,
    manifest: &Manifest,
    crds: &[(String, String)],
) -> Result<crate::cluster::Resolved, ClusterError> {
    let object = &manifest.object;
    let defined_here = crds
        .iter()
        .any(|(group, kind)| group == manifest.group() && kind == &object.kind);
    let deadline = Instant::now() + ctx.config.crd_wait;
    loop {
        match ctx.cluster.resolve(&object.api_version, &object.kind).await {
            Err(ClusterError::UnknownKind { .. }) if defined_here && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => return other,
        }
    }
}

/// (group, kind) of every custom resource kind the CRDs among `manifests` define.
fn served_by_crds(manifests: &[Manifest]) -> Vec<(String, String)> {
    manifests
        .iter()
        .filter(|m| {
            m.group() == "apiextensions.k8s.io" && m.object.kind == "CustomResourceDefinition"
        })
        .filter_map(|m| {
            let group = m.body.pointer("/spec/group")?.as_str()?;
            let kind = m.body.pointer("/spec/names/kind")?.as_str()?;
            Some((group.to_owned(), kind.to_owned()))
        })
        .collect()
}

/// Reads every applied object back and judges its health.
/// Returns the objects that drifted from what was applied (changed or deleted), with the
/// paths that changed.
async fn assess_health(
    ctx: &Context,
    resources: &mut [ResourceResult],
    expected: &HashMap<ObjectRef, serde_json::Value>,
) -> Vec<(ObjectRef, Vec<String>)> {
    let mut drifted = Vec::new();
    for r in resources.iter_mut() {
        if !matches!(
            r.action,
            ResourceAction::Applied | ResourceAction::Unchanged
        ) {
            continue;
        }
        match ctx.cluster.get(&r.object).await {
            Ok(live) => {
                let assessment = health::assess(live.as_ref());
                r.health = assessment.health;
                r.message = assessment.message;
                let paths = match (&live, expected.get(&r.object)) {
                    (Some(live), Some(expected)) => drift::diff(expected, live),
                    (None, Some(_)) => vec!["(the object was deleted)".to_owned()],
                    _ => Vec::new(),
                };
                if !paths.is_empty() {
                    r.action = ResourceAction::Drifted;
                    r.message = format!("drifted from Git: {}", paths.join(", "));
                    drifted.push((r.object.clone(), paths));
                }
            }
            Err(error) => {
                r.health = Health::Unknown;
                r.message = format!("reading it back: {error}");
            }
        }
    }
    drifted
}

/// Renders a Target: the engine its options (or its files) pick, then the YAML into objects,
/// holding one of the spoke's render permits throughout. Returns the files' refused entries,
/// what was rendered, and how long rendering took once it had its turn.
pub(crate) async fn render_target(
    renderers: &Renderers,
    gate: &RenderGate,
    workspace: Workspace<'_>,
    render_ctx: &RenderContext,
    namespaced: &(dyn Fn(&str, &str) -> Option<bool> + Sync),
) -> Result<(crate::git::AppFiles, Rendered, Duration), String> {
    let chosen = renderers
        .choose(workspace.spec, &workspace.files.files)
        .map_err(|e| e.to_string())?;
    let _permit = gate.enter().await;
    let started = Instant::now();
    let limits = workspace.settings.limits;
    let files = chosen
        .renderer
        .render(&chosen.dir, workspace)
        .await
        .map_err(|e| e.to_string())?;
    let rendered = tracing::info_span!("render")
        .in_scope(|| render::render(&files.files, render_ctx, &limits, namespaced))
        .map_err(|e| e.to_string())?;
    Ok((files, rendered, started.elapsed()))
}

fn invalid_file(error: &FileError) -> ResourceResult {
    ResourceResult {
        object: ObjectRef {
            api_version: String::new(),
            kind: String::new(),
            namespace: String::new(),
            name: String::new(),
        },
        action: ResourceAction::Invalid,
        health: Health::Unknown,
        message: error.to_string(),
        source_file: error.file.clone(),
    }
}

fn result(
    manifest: &Manifest,
    action: ResourceAction,
    health: Health,
    message: String,
) -> ResourceResult {
    ResourceResult {
        object: manifest.object.clone(),
        action,
        health,
        message,
        source_file: manifest.source_file.clone(),
    }
}

fn status_of(
    spec: &TargetSpec,
    sync: SyncState,
    health: Health,
    message: String,
    resources: Vec<ResourceResult>,
) -> TargetStatus {
    TargetStatus {
        target_id: spec.target_id.clone(),
        revision: spec.source.commit.clone(),
        spec_generation: spec.spec_generation,
        sync,
        health,
        message,
        resources,
        observed_at_unix: unix_now(),
        trace: spec.trace.clone().into_iter().collect::<BTreeMap<_, _>>(),
    }
}

/// Reports `status` unless it says what the last report said; returns whether it reported.
fn send_if_changed(ctx: &Context, last: &mut Option<TargetStatus>, status: TargetStatus) -> bool {
    if last.as_ref().is_some_and(|l| l.same_state_as(&status)) {
        return false;
    }
    tracing::info!(
        target_id = %status.target_id,
        sync = ?status.sync,
        health = ?status.health,
        message = %status.message,
        "target status"
    );
    ctx.reporter.report(status.clone());
    *last = Some(status);
    true
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_targets_are_checked_less_often_unless_they_heal_themselves() {
        let config = AgentConfig::new("c");
        assert_eq!(settled_delay(&config, false, 0), Duration::from_secs(5));
        assert_eq!(settled_delay(&config, false, 1), Duration::from_secs(10));
        assert_eq!(settled_delay(&config, false, 3), Duration::from_secs(40));
        assert_eq!(settled_delay(&config, false, 30), Duration::from_secs(60));
        assert_eq!(settled_delay(&config, true, 30), Duration::from_secs(5));
    }

    fn target(path: &str) -> TargetSpec {
        TargetSpec {
            target_id: "t".into(),
            app: "t".into(),
            source: crate::model::Source {
                repo_url: String::new(),
                repo_name: String::new(),
                commit: String::new(),
                git_ref: String::new(),
                path: path.into(),
                extra_paths: Vec::new(),
            },
            namespace: String::new(),
            render: crate::model::RenderOptions::default(),
            sync_policy: crate::model::SyncPolicy::default(),
            trace: BTreeMap::new(),
            spec_generation: 1,
        }
    }

    #[test]
    fn a_spec_sent_again_with_another_trace_context_is_no_change() {
        let held = target("app");
        let mut again = held.clone();
        again.trace.insert(
            "traceparent".into(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        );
        assert!(same_spec(&held, &again));
        let mut moved = again.clone();
        moved.source.commit = "b".repeat(40);
        assert!(!same_spec(&held, &moved));
    }
}
