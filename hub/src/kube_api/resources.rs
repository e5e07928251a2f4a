//! Repo, App, ClusterGroup and Project custom resources → the hub's resources, and their status
//! back. One kube-runtime `Controller` per kind over the watched namespace.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, info, warn};

use gitfleet_core::kube_api::{
    FINALIZER, Readiness, app_status, document, owner, ready_condition, repo_status,
};

use super::{Context, KubeApiError, api_resource, now_rfc3339};
use crate::engine::EngineError;
use crate::engine::FleetChange;
use crate::resources::Kind;

/// One kind's controller context: the shared one, the kind, and what was last applied per
/// object (its document and the outcome), so that an object that did not change is not
/// applied again at every resync.
struct KindContext {
    shared: Arc<Context>,
    kind: Kind,
    api: Api<DynamicObject>,
    applied: Mutex<HashMap<String, String>>,
}

/// Runs the controller of `kind` until the process stops.
pub(super) async fn control(
    shared: Arc<Context>,
    kind: Kind,
    plural: &'static str,
) -> Result<(), KubeApiError> {
    let ar = api_resource(kind.as_str(), plural);
    let api: Api<DynamicObject> =
        Api::namespaced_with(shared.client.clone(), &shared.namespace, &ar);
    let ctx = Arc::new(KindContext {
        shared,
        kind,
        api: api.clone(),
        applied: Mutex::new(HashMap::new()),
    });
    let controller = Controller::new_with(api, watcher::Config::default(), ar.clone());
    // Apps' and Repos' status follows the hub's changes at once; the resync is the safety net.
    let follower = matches!(kind, Kind::App | Kind::Repo)
        .then(|| tokio::spawn(follow_changes(Arc::clone(&ctx), controller.store(), ar)));
    let _abort = follower.map(|f| AbortOnDrop(f.abort_handle()));
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|outcome| async move {
            match outcome {
                // The watch itself (no CRD, no access): retried with a backoff.
                Err(kube::runtime::controller::Error::QueueError(e)) => {
                    warn!(%kind, error = %e, "cannot watch the custom resources");
                }
                Err(e) => debug!(%kind, error = %e, "reconcile failed"),
                Ok(_) => {}
            }
        })
        .await;
    Ok(())
}

/// Aborts a task when dropped: the change follower goes with its controller.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The longest a refused object waits before it is tried again.
const RETRY_REFUSED: Duration = Duration::from_secs(2);

/// How long changes are gathered before the objects they concern are refreshed.
const GATHER: Duration = Duration::from_millis(200);

/// Refreshes the status of the App (or Repo) objects whose App the hub changed (a Target's
/// report, a rollout's step), gathering bursts for [`GATHER`]; every object after the change
/// feed lagged.
async fn follow_changes(ctx: Arc<KindContext>, store: Store<DynamicObject>, ar: ApiResource) {
    let mut changes = ctx.shared.engine.subscribe_changes();
    loop {
        let mut apps = BTreeSet::new();
        let mut all = false;
        let mut until = None;
        loop {
            let change = match until {
                None => changes.recv().await,
                Some(until) => tokio::select! {
                    c = changes.recv() => c,
                    () = tokio::time::sleep_until(until) => break,
                },
            };
            until = until.or_else(|| Some(tokio::time::Instant::now() + GATHER));
            match change {
                Ok(FleetChange::App(app) | FleetChange::Target { app, .. }) => {
                    apps.insert(app);
                }
                Ok(FleetChange::Cluster(_)) => {}
                Err(RecvError::Lagged(_)) => all = true,
                Err(RecvError::Closed) => return,
            }
        }
        let names: BTreeSet<String> = if all {
            store
                .state()
                .iter()
                .filter_map(|o| o.metadata.name.clone())
                .collect()
        } else if ctx.kind == Kind::Repo {
            apps.iter().filter_map(|a| repo_of(&ctx, a)).collect()
        } else {
            apps
        };
        for name in names {
            let key = ObjectRef::new_with(&name, ar.clone()).within(&ctx.shared.namespace);
            let Some(obj) = store.get(&key) else { continue };
            if let Err(e) = refresh(&ctx, &obj).await {
                debug!(kind = %ctx.kind, %name, error = %e, "cannot refresh the status");
            }
        }
    }
}

/// The Repo an App follows.
fn repo_of(ctx: &KindContext, app: &str) -> Option<String> {
    let docs = ctx.shared.engine.get(Some(Kind::App), Some(app)).ok()?;
    docs.first()?
        .pointer("/spec/repo")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Recomputes the status of an object already reconciled (its `Ready` condition says how its
/// last apply went) and writes it if it changed.
async fn refresh(ctx: &KindContext, obj: &DynamicObject) -> Result<(), KubeApiError> {
    if obj.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let name = obj.metadata.name.clone().unwrap_or_default();
    let old = obj.data.get("status").cloned().unwrap_or_else(|| json!({}));
    let Some((readiness, generation)) = last_apply(&old) else {
        return Ok(());
    };
    let owner = owner(&ctx.shared.namespace, &name);
    let status = status_of(ctx, &name, &owner, &old, &readiness, generation).await?;
    write_status(&ctx.api, &name, &old, status).await
}

/// How the last apply of an object went, from its `Ready` condition (a Repo's fetch reasons
/// mean it was applied), with the generation it was about.
fn last_apply(status: &Value) -> Option<(Readiness, i64)> {
    let ready = status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?;
    let generation = ready.get("observedGeneration")?.as_i64()?;
    let reason = ready["reason"].as_str().unwrap_or_default();
    let readiness = if ready["status"] == "True" || matches!(reason, "FetchFailed" | "Fetching") {
        Readiness::ready("Applied", APPLIED)
    } else {
        Readiness::not_ready(reason, ready["message"].as_str().unwrap_or_default())
    };
    Some((readiness, generation))
}

/// The `Ready` message of an object in force in the hub.
const APPLIED: &str = "in force in the hub";

fn error_policy(obj: Arc<DynamicObject>, error: &KubeApiError, ctx: Arc<KindContext>) -> Action {
    warn!(kind = %ctx.kind, name = obj.metadata.name.as_deref().unwrap_or(""), %error, "cannot reconcile");
    Action::requeue(ctx.shared.resync.min(Duration::from_secs(5)))
}

async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<KindContext>) -> Result<Action, KubeApiError> {
    let kind = ctx.kind;
    let name = obj.metadata.name.clone().unwrap_or_default();
    let owner = owner(&ctx.shared.namespace, &name);
    let finalizers = obj.metadata.finalizers.clone().unwrap_or_default();
    let has_finalizer = finalizers.iter().any(|f| f == FINALIZER);
    let generation = obj.metadata.generation.unwrap_or(0);
    let old_status = obj.data.get("status").cloned().unwrap_or_else(|| json!({}));

    if obj.metadata.deletion_timestamp.is_some() {
        if !has_finalizer {
            return Ok(Action::await_change());
        }
        match ctx.shared.engine.delete_owned(kind, &name, &owner).await {
            Ok(deleted) => {
                if deleted {
                    info!(%kind, %name, "deleted with its Kubernetes object");
                }
                ctx.applied.lock().map(|mut a| a.remove(&name)).ok();
                let rest: Vec<&String> = finalizers.iter().filter(|f| *f != FINALIZER).collect();
                ctx.api
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({ "metadata": { "finalizers": rest } })),
                    )
                    .await?;
                Ok(Action::await_change())
            }
            Err(EngineError::FailedPrecondition(m) | EngineError::Invalid(m)) => {
                // A Project still in use, an App others depend on: the object stays, saying why.
                let status = with_conditions(
                    &old_status,
                    &Readiness::not_ready("DeleteRefused", m),
                    generation,
                );
                write_status(&ctx.api, &name, &old_status, status).await?;
                Ok(Action::requeue(ctx.shared.resync.min(RETRY_REFUSED)))
            }
            Err(e) => Err(e.into()),
        }
    } else {
        if !has_finalizer {
            let mut all = finalizers.clone();
            all.push(FINALIZER.to_owned());
            ctx.api
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "metadata": { "finalizers": all } })),
                )
                .await?;
        }
        let object = serde_json::to_value(obj.as_ref()).unwrap_or_default();
        let doc = document(kind, &ctx.shared.namespace, &object).to_string();
        let unchanged = ctx
            .applied
            .lock()
            .ok()
            .is_some_and(|a| a.get(&name) == Some(&doc));
        let readiness = if unchanged {
            Readiness::ready("Applied", APPLIED)
        } else {
            // No origin: the error names the resource (`app "web": spec.path: ...`).
            match ctx.shared.engine.apply_owned("", doc.clone(), &owner).await {
                Ok(applied) => {
                    if applied.action != "unchanged" {
                        info!(%kind, %name, action = applied.action, "applied from its Kubernetes object");
                    }
                    if let Ok(mut a) = ctx.applied.lock() {
                        a.insert(name.clone(), doc);
                    }
                    Readiness::ready("Applied", APPLIED)
                }
                Err(EngineError::Invalid(m)) => {
                    forget(&ctx, &name);
                    Readiness::not_ready("Invalid", m)
                }
                Err(EngineError::FailedPrecondition(m) | EngineError::PermissionDenied(m)) => {
                    forget(&ctx, &name);
                    Readiness::not_ready("Conflict", m)
                }
                Err(e) => {
                    forget(&ctx, &name);
                    return Err(e.into());
                }
            }
        };
        let status = status_of(&ctx, &name, &owner, &old_status, &readiness, generation).await?;
        write_status(&ctx.api, &name, &old_status, status).await?;
        // A refusal may end with another object (a Project, a Repo): tried again sooner.
        Ok(Action::requeue(if readiness.ready {
            ctx.shared.resync
        } else {
            ctx.shared.resync.min(RETRY_REFUSED)
        }))
    }
}

fn forget(ctx: &KindContext, name: &str) {
    if let Ok(mut a) = ctx.applied.lock() {
        a.remove(name);
    }
}

/// `status` with its `Ready` condition (and `observedGeneration`) for `readiness`.
fn with_conditions(status: &Value, readiness: &Readiness, generation: i64) -> Value {
    let mut out = status.clone();
    if !out.is_object() {
        out = json!({});
    }
    out["observedGeneration"] = json!(generation);
    out["conditions"] = json!([ready_condition(
        readiness,
        generation,
        status,
        &now_rfc3339()
    )]);
    out
}

/// The object's whole status: its conditions, and for a Repo its revision and fetch error, for
/// an App the summary of its Targets.
/// A refused spec leaves the hub's resource as it was: its summary is still shown.
async fn status_of(
    ctx: &KindContext,
    name: &str,
    owner: &str,
    old: &Value,
    readiness: &Readiness,
    generation: i64,
) -> Result<Value, KubeApiError> {
    let engine = &ctx.shared.engine;
    let kind = ctx.kind;
    let mut status = json!({});
    let mut readiness = readiness.clone();
    if readiness.ready || engine.owns(kind, name, owner)? {
        match kind {
            Kind::Repo => {
                let stored = engine.get(Some(Kind::Repo), Some(name))?;
                let s = stored
                    .first()
                    .and_then(|d| d.get("status"))
                    .cloned()
                    .unwrap_or_default();
                let (summary, fetched) = repo_status(
                    s["commit"].as_str().unwrap_or_default(),
                    s["error"].as_str().unwrap_or_default(),
                );
                status = summary;
                if readiness.ready {
                    readiness = fetched;
                }
            }
            Kind::App => match engine.app_summary(name).await? {
                Some(summary) => {
                    status = app_status(
                        &summary.revision,
                        &summary.phase,
                        &summary.reason,
                        &summary.targets,
                    );
                }
                None => {
                    status = json!({
                        "sync": "Unknown",
                        "health": "Unknown",
                        "phase": "Pending",
                        "message": "waiting for its Repo's first fetch",
                    });
                }
            },
            _ => {}
        }
    }
    status["observedGeneration"] = json!(generation);
    status["conditions"] = json!([ready_condition(&readiness, generation, old, &now_rfc3339())]);
    Ok(status)
}

/// Writes `status` through the status subresource, only when it is not what the object has.
async fn write_status(
    api: &Api<DynamicObject>,
    name: &str,
    old: &Value,
    status: Value,
) -> Result<(), KubeApiError> {
    if *old == status {
        return Ok(());
    }
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": merge_patch(old, &status) })),
    )
    .await?;
    Ok(())
}

/// A JSON merge patch that turns the object `old` into `new` at its top level: keys no longer
/// set are nulled (a merge patch of `new` alone would keep them); values are replaced whole.
pub(super) fn merge_patch(old: &Value, new: &Value) -> Value {
    let mut patch = new.clone();
    if let (Some(old), Some(p)) = (old.as_object(), patch.as_object_mut()) {
        for k in old.keys() {
            if !p.contains_key(k) {
                p.insert(k.clone(), Value::Null);
            }
        }
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_patch_removes_what_is_no_longer_set() {
        let old = json!({"error": "x", "revision": "a", "conditions": [1]});
        let new = json!({"revision": "b", "conditions": [2]});
        assert_eq!(
            merge_patch(&old, &new),
            json!({"error": null, "revision": "b", "conditions": [2]})
        );
    }
}
