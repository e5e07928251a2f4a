//! One revision of one Target: fetch (with quick retries of transient failures) → render
//! (within the spoke's render bound) → apply in waves → prune → the result the first report
//! is made of.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::cluster::{ClusterError, InventoryRef};
use crate::git::AppFiles;
use crate::metrics::{ErrorKind as MetricsError, Step};
use crate::model::{
    Health, ObjectRef, ResourceAction, ResourceResult, SyncState, TargetSpec, TargetStatus,
};
use crate::renderer::{RenderGate, Renderers, Workspace};
use crate::sync::hooks::{self, Phase};
use crate::sync::render::{self, FileError, Manifest, RenderContext, Rendered};
use crate::sync::retry::{self};
use crate::sync::{drift, order, ownership, project, prune};
use crate::telemetry;
use crate::watch::Seen;

use super::hooks as agent_hooks;
use super::prune::prune;
use super::{Context, send_if_changed, status_of};

/// The result of one apply pass, kept while health is watched.
pub(super) struct Attempt {
    pub(super) spec: TargetSpec,
    pub(super) resources: Vec<ResourceResult>,
    /// What was applied, as placed in its scope, to re-apply on drift.
    pub(super) manifests: HashMap<ObjectRef, Manifest>,
    /// The server's view of the declared fields right after apply (see `sync::drift`).
    pub(super) expected: HashMap<ObjectRef, serde_json::Value>,
    pub(super) fatal: Option<String>,
    pub(super) finished: Instant,
    /// The watches of the rendered objects' kinds, started before the apply so that ownership
    /// reads their cache; kept until the health watch has subscribed, so they never restart.
    pub(super) listing: Option<crate::watch::Subscription>,
    /// The spec's health rules, compiled.
    pub(super) rules: crate::sync::health::RuleSet,
}

/// How long a sync waits for the watches of kinds it applies to list before it checks
/// ownership by reading each object instead (a kind the spoke may not list, a huge kind).
const LIST_WAIT: Duration = Duration::from_secs(10);

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
pub(super) async fn sync_once(
    ctx: &Context,
    spec: &TargetSpec,
    credential: Option<&crate::model::RepoCredential>,
    chart_credential: Option<&crate::model::RepoCredential>,
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
        listing: None,
        rules: crate::sync::health::RuleSet::new(&spec.health_rules),
    };
    let metrics = &ctx.config.metrics;
    let files = match fetch(ctx, spec, credential, last, spec_rx).await {
        Fetched::Files(files) => files,
        Fetched::Failed(message) => return Some(fail(message)),
        Fetched::Superseded => return None,
    };
    let rendered = render_fetched(
        ctx,
        spec,
        files,
        (credential, chart_credential),
        &spec.source.commit,
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
    let first_sync = !had_inventory(ctx, spec).await;
    let plan = hooks::classify(rendered.manifests, first_sync);
    let rules = crate::sync::health::RuleSet::new(&spec.health_rules);
    for (manifest, error) in &plan.invalid {
        let mut failed = result(
            manifest,
            ResourceAction::Failed,
            Health::Unknown,
            error.clone(),
        );
        failed.hook = hooks::hook_annotation(&manifest.body)
            .unwrap_or_default()
            .to_owned();
        resources.push(failed);
    }
    for (manifest, reason) in &plan.skipped {
        let mut skipped = result(
            manifest,
            ResourceAction::Skipped,
            Health::Unknown,
            reason.clone(),
        );
        skipped.hook = hooks::hook_annotation(&manifest.body)
            .unwrap_or_default()
            .to_owned();
        resources.push(skipped);
    }
    record_intent(ctx, spec, &plan.ordinary).await;
    let placed: Vec<ObjectRef> = plan
        .ordinary
        .iter()
        .chain(plan.hooks.iter().map(|h| &h.manifest))
        .map(|m| {
            let mut object = m.object.clone();
            if object.namespace.is_empty() {
                object.namespace.clone_from(&spec.namespace);
            }
            object
        })
        .collect();
    let listing = ctx.watches.subscribe(&spec.app, &placed).await;
    if !listing
        .listed(tokio::time::Instant::now() + LIST_WAIT)
        .await
    {
        tracing::debug!("not every watched kind has listed; reading those objects instead");
    }
    let crds = served_by_crds(&plan.ordinary);
    let span = tracing::info_span!(
        "apply",
        objects = plan.ordinary.len(),
        hooks = plan.hooks.len()
    );
    let mut manifests = HashMap::new();
    let mut expected = HashMap::new();
    // Set when a wave timed out waiting for health: the health watch then judges at once.
    let mut progress_started: Option<Instant> = None;
    // What failed, for the SyncFail hooks and for what is not applied after it.
    let mut failure: Option<String> = None;
    // Set when hooks or waves kept objects of this revision back: nothing is pruned then.
    let mut held_back = false;
    // PreSync hooks before anything else; one that fails stops the sync here.
    // The App's namespace comes first: the one gitfleet adds before any wave (a negative wave
    // needs it too), and the one Git declares when PreSync hooks are to run in it (as Argo CD
    // creates it before its hooks).
    let presync = !plan.phase(Phase::PreSync).is_empty();
    let (first, ordinary): (Vec<Manifest>, Vec<Manifest>) =
        plan.ordinary.iter().cloned().partition(|m| {
            render::is_added_namespace(m)
                || (presync
                    && m.group().is_empty()
                    && m.object.kind == "Namespace"
                    && m.object.name == spec.namespace)
        });
    for mut manifest in first {
        let (result, server) = apply_one(ctx, spec, &mut manifest, &crds, versions).await;
        if let Some(server) = server {
            expected.insert(
                manifest.object.clone(),
                drift::project(&manifest.body, &server),
            );
            manifests.insert(manifest.object.clone(), manifest);
        }
        resources.push(result);
    }
    if !plan.phase(Phase::PreSync).is_empty() {
        syncing(ctx, spec, last, "running PreSync hooks".into());
    }
    let (pre, pre_failure) = agent_hooks::run_phase(ctx, spec, &plan, Phase::PreSync, &rules).await;
    resources.extend(pre);
    if let Some(failed) = pre_failure {
        held_back = true;
        let reason = format!("not applied: {failed}");
        for manifest in &ordinary {
            resources.push(result(
                manifest,
                ResourceAction::Skipped,
                Health::Unknown,
                reason.clone(),
            ));
        }
        for phase in [Phase::Sync, Phase::PostSync] {
            resources.extend(agent_hooks::not_reached(&plan, phase, &reason));
        }
        failure = Some(failed);
    } else {
        let waves = order::plan(ordinary);
        let last_wave = waves.len().saturating_sub(1);
        async {
            // Set once a wave that stops on failure had one, or did not become healthy: later
            // waves are only reported.
            let mut stopped: Option<String> = None;
            for (index, wave) in waves.into_iter().enumerate() {
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
                let mut applied = Vec::new();
                for mut manifest in wave.manifests {
                    let (result, server) =
                        apply_one(ctx, spec, &mut manifest, &crds, versions).await;
                    if result.action == ResourceAction::Failed && first_failure.is_none() {
                        first_failure = Some(result.object.display_name());
                    }
                    if let Some(server) = server {
                        expected.insert(
                            manifest.object.clone(),
                            drift::project(&manifest.body, &server),
                        );
                        applied.push(manifest.object.clone());
                        manifests.insert(manifest.object.clone(), manifest);
                    }
                    resources.push(result);
                }
                if let Some(failed) = &first_failure {
                    failure.get_or_insert_with(|| format!("{failed} failed to apply"));
                }
                if stop_on_failure && let Some(failed) = first_failure {
                    tracing::warn!(wave = number, %failed, "a wave that stops on failure failed; later waves are not applied");
                    stopped = Some(format!(
                        "not applied: {failed} failed in wave {number}, which stops on failure"
                    ));
                    continue;
                }
                // A later wave waits until this one is healthy; a single wave (or the last)
                // does not wait here.
                if index < last_wave && !applied.is_empty() {
                    let timeout = ctx.config.progress_timeout;
                    let began = Instant::now();
                    syncing(
                        ctx,
                        spec,
                        last,
                        format!("waiting for wave {number} to become healthy before the next wave"),
                    );
                    let gate = agent_hooks::wait_healthy(
                        ctx,
                        &applied,
                        &rules,
                        &listing,
                        began + timeout,
                    )
                    .instrument(tracing::info_span!("wave", wave = number, objects = applied.len()))
                    .await;
                    if gate != hooks::Gate::Open {
                        let reason = hooks::wave_not_healthy(number, &gate, timeout);
                        tracing::warn!(wave = number, %reason, "later waves are not applied");
                        if matches!(gate, hooks::Gate::Wait(_)) {
                            progress_started = Some(began);
                        }
                        held_back = true;
                        stopped = Some(format!("not applied: {reason}"));
                        failure.get_or_insert(reason);
                    }
                }
            }
        }
        .instrument(span)
        .await;
        // Sync hooks after the objects of every wave; PostSync once all of them are healthy.
        if let Some(failed) = &failure {
            let reason = format!("not run: {failed}");
            for phase in [Phase::Sync, Phase::PostSync] {
                resources.extend(agent_hooks::not_reached(&plan, phase, &reason));
            }
        } else {
            if !plan.phase(Phase::Sync).is_empty() {
                syncing(ctx, spec, last, "running Sync hooks".into());
            }
            let (sync, sync_failure) =
                agent_hooks::run_phase(ctx, spec, &plan, Phase::Sync, &rules).await;
            resources.extend(sync);
            if let Some(failed) = sync_failure {
                resources.extend(agent_hooks::not_reached(
                    &plan,
                    Phase::PostSync,
                    &format!("not run: {failed}"),
                ));
                failure = Some(failed);
            } else if !plan.phase(Phase::PostSync).is_empty() {
                let objects: Vec<ObjectRef> = manifests.keys().cloned().collect();
                let timeout = ctx.config.progress_timeout;
                syncing(
                    ctx,
                    spec,
                    last,
                    "waiting for the App's objects to become healthy before PostSync hooks".into(),
                );
                let gate = agent_hooks::wait_healthy(
                    ctx,
                    &objects,
                    &rules,
                    &listing,
                    Instant::now() + timeout,
                )
                .instrument(tracing::info_span!(
                    "wave",
                    wave = "PostSync",
                    objects = objects.len()
                ))
                .await;
                if gate == hooks::Gate::Open {
                    let (post, post_failure) =
                        agent_hooks::run_phase(ctx, spec, &plan, Phase::PostSync, &rules).await;
                    resources.extend(post);
                    failure = post_failure;
                } else {
                    let because = format!(
                        "the App's objects {}",
                        hooks::unhealthy_because(&gate, timeout)
                    );
                    resources.extend(agent_hooks::not_reached(
                        &plan,
                        Phase::PostSync,
                        &format!("not run: {because}"),
                    ));
                    failure = Some(because);
                }
            }
        }
    }
    if failure.is_some() && !plan.phase(Phase::SyncFail).is_empty() {
        tracing::info!(
            failure = failure.as_deref().unwrap_or_default(),
            "running SyncFail hooks"
        );
        syncing(ctx, spec, last, "running SyncFail hooks".into());
        let (fail, _) = agent_hooks::run_phase(ctx, spec, &plan, Phase::SyncFail, &rules).await;
        resources.extend(fail);
    }
    let render_clean = files.errors.is_empty() && rendered.errors.is_empty() && !held_back;
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
        finished: progress_started.unwrap_or_else(Instant::now),
        listing: Some(listing),
        rules,
    })
}

/// Renders a Target: the engine its options (or its files) pick, then the YAML into objects,
/// holding one of the spoke's render permits throughout. Returns the files' refused entries,
/// what was rendered, and how long rendering took once it had its turn.
/// Renders the fetched `files` of `spec` at `revision` in this cluster, as a sync does: the
/// spec's workspace with its (repository, chart) credentials, objects' scopes as the cluster
/// knows them. A sync and a diff render alike through it.
pub(crate) async fn render_fetched(
    ctx: &Context,
    spec: &TargetSpec,
    files: crate::git::AppFiles,
    (credential, chart_credential): (
        Option<&crate::model::RepoCredential>,
        Option<&crate::model::RepoCredential>,
    ),
    revision: &str,
) -> Result<(crate::git::AppFiles, Rendered, Duration), String> {
    let render_ctx = RenderContext {
        app: spec.app.clone(),
        target_id: spec.target_id.clone(),
        revision: revision.to_owned(),
        namespace: spec.namespace.clone(),
        create_namespace: true,
    };
    let workspace = Workspace {
        spec,
        files,
        credential,
        chart_credential,
        git: &ctx.git,
        settings: &ctx.render_settings,
    };
    let scopes = ctx.cluster.known_scopes();
    render_target(
        &ctx.config.renderers,
        &ctx.render_gate,
        workspace,
        &render_ctx,
        &render::scopes_from(&scopes),
    )
    .await
}

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
    // Before anything is read or written: an object its Project does not allow is not the
    // App's to look at.
    if let Some(rules) = &spec.project
        && let Err(message) = project::check(rules, &manifest.object)
    {
        tracing::warn!(object = %manifest.object.display_name(), %message, "not applied");
        return (
            result(manifest, ResourceAction::Failed, Health::Unknown, message),
            None,
        );
    }
    let force = match claim(ctx, spec, &resolved, manifest).await {
        Ok(ownership::Claim::Apply) => spec.sync_policy.force,
        Ok(ownership::Claim::Adopt) => true,
        Ok(ownership::Claim::LeaveAsIs) => {
            return (
                result(
                    manifest,
                    ResourceAction::Unchanged,
                    Health::Healthy,
                    "exists and belongs to someone else; left as it is".into(),
                ),
                None,
            );
        }
        Err(message) => {
            tracing::warn!(object = %manifest.object.display_name(), %message, "not applied");
            return (
                result(manifest, ResourceAction::Failed, Health::Unknown, message),
                None,
            );
        }
    };
    let manager = ownership::field_manager(&spec.app);
    match ctx
        .cluster
        .apply(&resolved, manifest, &manager, force)
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

/// Checks that the Target's App may write the object under `manifest`'s name (see
/// [`ownership`]) and, for an object the shared field manager of earlier releases applied,
/// hands that manager's fields to the App's own. The message of a refusal is the resource's.
pub(super) async fn claim(
    ctx: &Context,
    spec: &TargetSpec,
    resolved: &crate::cluster::Resolved,
    manifest: &Manifest,
) -> Result<ownership::Claim, String> {
    // The shared watches know every labelled object of the kinds the Targets applied, so an
    // object gitfleet manages costs no request; only one the cache does not know as labelled
    // (absent, unmanaged, or a kind not watched yet) is read.
    let object = &manifest.object;
    let live = match ctx
        .watches
        .seen(&resolved.resource, &object.namespace, &object.name)
    {
        Seen::Labelled(metadata) => Some(metadata),
        Seen::Unlabelled => Some(serde_json::json!({"metadata": {}})),
        Seen::Absent => None,
        Seen::Unknown => ctx
            .cluster
            .get(object)
            .await
            .map_err(|e| format!("reading the live object: {e}"))?,
    };
    let owner = live
        .as_ref()
        .map_or(ownership::LiveOwner::Absent, ownership::LiveOwner::of);
    let claim = ownership::claim(
        &spec.app,
        &owner,
        spec.sync_policy.adopt,
        render::is_added_namespace(manifest),
    )
    .map_err(|r| r.to_string())?;
    let Some(live) = live.filter(|_| claim != ownership::Claim::LeaveAsIs) else {
        return Ok(claim);
    };
    if let Some(index) = ownership::legacy_entry(&live, &spec.app) {
        let manager = ownership::field_manager(&spec.app);
        match ctx
            .cluster
            .rename_manager(resolved, &manifest.object, &live, index, &manager)
            .await
        {
            Ok(()) => {
                tracing::info!(object = %manifest.object.display_name(), %manager, "took over the fields of the shared field manager");
            }
            Err(error) => {
                // The apply that follows meets the old manager's changed fields as a conflict,
                // which is reported: nothing is lost.
                tracing::warn!(object = %manifest.object.display_name(), %error, "could not hand the shared field manager's fields over");
            }
        }
    }
    Ok(claim)
}

/// Tells the hub what a sync that takes its time (hooks running, a wave becoming healthy) is
/// waiting for: the Target stays Syncing, with this message.
fn syncing(ctx: &Context, spec: &TargetSpec, last: &mut Option<TargetStatus>, message: String) {
    let health = last.as_ref().map_or(Health::Progressing, |s| s.health);
    let status = status_of(spec, SyncState::Syncing, health, message, Vec::new());
    send_if_changed(ctx, last, status);
}

/// Whether the Target has an inventory in the cluster, that is, was applied here before (Helm's
/// upgrade hooks run then, its install hooks on a first sync). A read that fails counts as
/// applied before: an upgrade hook is the safer guess for a Target that may well be running.
async fn had_inventory(ctx: &Context, spec: &TargetSpec) -> bool {
    let inventory_ref = InventoryRef::new(&spec.app, &spec.target_id, &spec.namespace);
    match ctx.cluster.read_inventory(&inventory_ref).await {
        Ok(previous) => previous.is_some(),
        Err(error) => {
            tracing::warn!(%error, "cannot read the inventory; taking the Target as applied before");
            true
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
    // An object its Project refuses will not be applied: it must not become the App's to prune.
    let objects: Vec<ObjectRef> = manifests
        .iter()
        .map(|m| m.object.clone())
        .filter(|o| project::allows(spec.project.as_ref(), o))
        .collect();
    if let Some(next) = prune::intent(&previous, &objects)
        && let Err(error) = ctx.cluster.write_inventory(&inventory_ref, &next).await
    {
        tracing::debug!(%error, "cannot record the objects about to be applied");
    }
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

fn invalid_file(error: &FileError) -> ResourceResult {
    ResourceResult::invalid(error.file.clone(), error.to_string())
}

pub(super) fn result(
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
        hook: String::new(),
    }
}
