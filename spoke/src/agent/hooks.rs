//! Running sync hooks and waiting for waves: the IO around [`crate::sync::hooks`]. A hook is
//! created (POST for one named by `generateName`; otherwise deleted first under
//! BeforeHookCreation, then applied), waited for until its object is Healthy or Degraded within
//! the progress timeout, and deleted afterwards as its policies say. Hooks of one phase run one
//! after another.

use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument as _;

use crate::cluster::{Deletion, Precondition};
use crate::model::{Health, ObjectRef, ResourceAction, ResourceResult, TargetSpec};
use crate::sync::health::{RuleSet, assess_with};
use crate::sync::hooks::{self, DeletePolicy, Gate, Hook, Phase, Plan, Run};
use crate::sync::render::{self, LABEL_APP, Manifest};
use crate::sync::{ownership, project};
use crate::watch::Subscription;

use super::Context;

/// How long a hook object with a fixed name may take to go away before it is created again.
const DELETE_WAIT: Duration = Duration::from_secs(60);

/// Runs the hooks of `phase`, in order. Returns their results and, when one failed, what
/// failed (`job/migrate-x1z: job failed: ...`); the hooks after a failed one are not run and are
/// reported skipped.
pub(super) async fn run_phase(
    ctx: &Context,
    spec: &TargetSpec,
    plan: &Plan,
    phase: Phase,
    rules: &RuleSet,
) -> (Vec<ResourceResult>, Option<String>) {
    let mut results = Vec::new();
    let mut failure: Option<String> = None;
    for hook in plan.phase(phase) {
        if let Some(failed) = &failure {
            results.push(not_run(
                hook,
                phase,
                format!(
                    "not run: {failed}, an earlier {} hook, failed",
                    phase.as_str()
                ),
            ));
            continue;
        }
        let span = tracing::info_span!(
            "hook",
            phase = phase.as_str(),
            kind = %hook.manifest.object.kind,
            name = %hook.manifest.object.name,
        );
        let result = run_hook(ctx, spec, hook, phase, rules)
            .instrument(span)
            .await;
        if result.action == ResourceAction::Failed {
            failure = Some(result.object.display_name());
        }
        results.push(result);
    }
    let failure = failure.map(|name| {
        let message = results
            .iter()
            .find(|r| r.object.display_name() == name)
            .map(|r| r.message.clone())
            .unwrap_or_default();
        format!("{} hook {name} failed: {message}", phase.as_str())
    });
    (results, failure)
}

/// The results of hooks of `phase` that this sync does not reach.
pub(super) fn not_reached(plan: &Plan, phase: Phase, reason: &str) -> Vec<ResourceResult> {
    plan.phase(phase)
        .into_iter()
        .map(|hook| not_run(hook, phase, reason.to_owned()))
        .collect()
}

fn not_run(hook: &Hook, phase: Phase, message: String) -> ResourceResult {
    let mut result = super::pipeline::result(
        &hook.manifest,
        ResourceAction::Skipped,
        Health::Unknown,
        message,
    );
    result.hook = phase.as_str().to_owned();
    result
}

async fn run_hook(
    ctx: &Context,
    spec: &TargetSpec,
    hook: &Hook,
    phase: Phase,
    rules: &RuleSet,
) -> ResourceResult {
    let mut manifest = hook.manifest.clone();
    let failed = |manifest: &Manifest, message: String| {
        tracing::warn!(object = %manifest.object.display_name(), %message, "hook failed");
        let mut result =
            super::pipeline::result(manifest, ResourceAction::Failed, Health::Degraded, message);
        result.hook = phase.as_str().to_owned();
        result
    };
    let resolved = match ctx
        .cluster
        .resolve(&manifest.object.api_version, &manifest.object.kind)
        .await
    {
        Ok(resolved) => resolved,
        Err(error) => return failed(&manifest, error.to_string()),
    };
    render::place_in_scope(&mut manifest, resolved.namespaced, &spec.namespace);
    if let Some(rules) = &spec.project
        && let Err(message) = project::check(rules, &manifest.object)
    {
        return failed(&manifest, message);
    }
    let manager = ownership::field_manager(&spec.app);
    let created = if hook.generate_name.is_some() {
        ctx.cluster.create(&resolved, &manifest, &manager).await
    } else {
        if let Err(message) = clear_earlier_run(ctx, spec, hook, &manifest).await {
            return failed(&manifest, message);
        }
        ctx.cluster
            .apply(&resolved, &manifest, &manager, spec.sync_policy.force)
            .await
    };
    let created = match created {
        Ok(created) => created,
        Err(error) => return failed(&manifest, format!("creating the hook: {error}")),
    };
    if let Some(name) = created
        .object
        .pointer("/metadata/name")
        .and_then(serde_json::Value::as_str)
    {
        manifest.object.name = name.to_owned();
    }
    tracing::info!(object = %manifest.object.display_name(), "hook created");
    let object = manifest.object.clone();
    let (run, message) = wait_for_run(ctx, &spec.app, &object, rules).await;
    let mut result = match run {
        Run::Succeeded => {
            let mut result = super::pipeline::result(
                &manifest,
                ResourceAction::Applied,
                Health::Healthy,
                message,
            );
            result.hook = phase.as_str().to_owned();
            result
        }
        Run::Failed | Run::Running => failed(&manifest, message),
    };
    let policy = match run {
        Run::Succeeded => Some(DeletePolicy::HookSucceeded),
        Run::Failed => Some(DeletePolicy::HookFailed),
        Run::Running => None,
    }
    .filter(|p| hook.has_policy(*p));
    if let Some(policy) = policy {
        let policy = format!("{policy:?}");
        match ctx.cluster.delete(&object, None).await {
            Ok(_) => result.message = join(&result.message, &format!("deleted ({policy})")),
            Err(error) => {
                result.message = join(&result.message, &format!("not deleted ({policy}): {error}"));
            }
        }
    }
    result
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_owned()
    } else {
        format!("{a}; {b}")
    }
}

/// For a hook with a fixed name: refuses to touch an object that is not this App's, and under
/// BeforeHookCreation deletes what an earlier run left and waits (bounded) until it is gone.
async fn clear_earlier_run(
    ctx: &Context,
    spec: &TargetSpec,
    hook: &Hook,
    manifest: &Manifest,
) -> Result<(), String> {
    let object = &manifest.object;
    let Some(live) = ctx
        .cluster
        .get(object)
        .await
        .map_err(|e| format!("reading the live object: {e}"))?
    else {
        return Ok(());
    };
    let owner = live
        .pointer("/metadata/labels")
        .and_then(|l| l.get(LABEL_APP))
        .and_then(serde_json::Value::as_str);
    if owner != Some(spec.app.as_str()) {
        return Err(match owner {
            Some(other) => format!("exists and is owned by App {other}; not running the hook"),
            None => "exists and is not managed by gitfleet; not running the hook".to_owned(),
        });
    }
    if !hook.has_policy(DeletePolicy::BeforeHookCreation) {
        return Ok(());
    }
    match ctx
        .cluster
        .delete(object, Some(&Precondition::of(&live)))
        .await
    {
        Ok(Deletion::Deleted | Deletion::AlreadyGone | Deletion::Changed(_)) => {}
        Err(error) => {
            return Err(format!(
                "deleting the earlier run (BeforeHookCreation): {error}"
            ));
        }
    }
    let deadline = Instant::now() + DELETE_WAIT;
    let watch = ctx.watches.subscribe(&spec.app, [object]).await;
    loop {
        match ctx.cluster.get(object).await {
            Ok(None) => return Ok(()),
            Ok(Some(_)) | Err(_) if Instant::now() >= deadline => {
                return Err(format!(
                    "the earlier run was still there {}s after it was deleted (BeforeHookCreation)",
                    DELETE_WAIT.as_secs()
                ));
            }
            Ok(Some(_)) | Err(_) => wait(ctx, &watch, deadline).await,
        }
    }
}

/// Waits until a hook's object is Healthy or Degraded, or the progress timeout passes.
async fn wait_for_run(
    ctx: &Context,
    app: &str,
    object: &ObjectRef,
    rules: &RuleSet,
) -> (Run, String) {
    let timeout = ctx.config.progress_timeout;
    let deadline = Instant::now() + timeout;
    let watch = ctx.watches.subscribe(app, std::iter::once(object)).await;
    loop {
        let (health, message) = match ctx.cluster.get(object).await {
            Ok(live) => {
                let assessment = assess_with(live.as_ref(), rules);
                (assessment.health, assessment.message)
            }
            Err(error) => (Health::Unknown, format!("reading it back: {error}")),
        };
        match hooks::run_state(health) {
            Run::Running if Instant::now() < deadline => wait(ctx, &watch, deadline).await,
            Run::Running => {
                let message = if message.is_empty() {
                    format!("did not finish within {}s", timeout.as_secs())
                } else {
                    format!("did not finish within {}s: {message}", timeout.as_secs())
                };
                return (Run::Running, message);
            }
            done => return (done, message),
        }
    }
}

/// Until the watch sees a change of the objects, the next poll, or `deadline`, whichever is
/// first: the poll covers a watch that has not listed or a kind it cannot watch.
async fn wait(ctx: &Context, watch: &Subscription, deadline: Instant) {
    let poll = Instant::now() + ctx.config.health_poll;
    tokio::select! {
        () = watch.changed() => {}
        () = tokio::time::sleep_until(poll.min(deadline)) => {}
    }
}

/// Waits until every one of `objects` is Healthy (the gate opens), one is Degraded, or
/// `deadline` passes; returns the last gate.
pub(super) async fn wait_healthy(
    ctx: &Context,
    objects: &[ObjectRef],
    rules: &RuleSet,
    watch: &Subscription,
    deadline: Instant,
) -> Gate {
    loop {
        let mut states = Vec::with_capacity(objects.len());
        for object in objects {
            let (health, message) = match ctx.cluster.get(object).await {
                Ok(live) => {
                    let assessment = assess_with(live.as_ref(), rules);
                    (assessment.health, assessment.message)
                }
                Err(error) => (Health::Unknown, format!("reading it back: {error}")),
            };
            states.push((object.display_name(), health, message));
        }
        let gate = hooks::gate(states.iter().map(|(n, h, m)| (n.clone(), *h, m.as_str())));
        match gate {
            Gate::Wait(_) if Instant::now() < deadline => wait(ctx, watch, deadline).await,
            other => return other,
        }
    }
}
