//! The agent: one worker per Target. On a new spec a worker fetches the commit, renders,
//! applies in order and reports; then it watches health until the Target is Healthy or the
//! progress timeout turns what is still progressing into Degraded, reporting every change.
//!
//! The desired state comes from the link's persisted copy, so the agent keeps enforcing the
//! last one it had while the hub is away.
//!
//! - `supervisor`: one worker per Target of the desired state, started, updated and stopped as
//!   it changes;
//! - `worker`: one Target's loop, from spec to spec;
//! - `pipeline`: one revision: fetch, render, apply, prune;
//! - `health`: health and drift of what was applied, and selfHeal;
//! - `prune`: what Git no longer has, and the inventory.

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::git::{GitCache, ReadLimits};
use crate::link::{LinkState, unix_now};
use crate::model::{Health, ResourceResult, SyncState, TargetSpec, TargetStatus};
use crate::renderer::{RenderGate, RenderSettings, Renderers};
use crate::sync::render::RenderLimits;
use crate::sync::retry::RetryPolicy;
use crate::watch::Watches;

mod diff;
mod health;
mod hooks;
mod pipeline;
mod prune;
mod supervisor;
mod worker;

#[cfg(test)]
pub(crate) use pipeline::render_target;
pub use prune::CHANGED_SINCE_CHECKED;
pub use supervisor::run;

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
    /// Charts from Helm repositories and OCI registries (see [`crate::charts`]); `None`:
    /// only charts in Git render.
    pub charts: Option<Arc<crate::charts::ChartCache>>,
    /// The rendering engines, in detection order.
    pub renderers: Renderers,
    /// Most renders (a `kustomize build` or `helm template` and the parse of its output, or
    /// the parse of plain YAML) running at once, over every Target.
    pub max_concurrent_renders: usize,
    /// Where to put what answers the hub's diff requests (`gitfleet diff --live`), shared
    /// with the link; `None`: this agent answers none.
    pub diffs: Option<crate::link::DiffSlot>,
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
            charts: self.charts.clone(),
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
            charts: None,
            renderers: Renderers::standard(),
            max_concurrent_renders: DEFAULT_MAX_CONCURRENT_RENDERS,
            diffs: None,
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
        trace: spec.trace.clone(),
        chart_digest: spec
            .render
            .helm_chart
            .as_ref()
            .map(|c| c.digest.clone())
            .unwrap_or_default(),
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
