//! Repo, App, ClusterGroup and Project custom resources → the hub's resources, and their status
//! back. One kube-runtime `Controller` per kind over the watched namespace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use gitfleet_core::kube_api::{
    FINALIZER, Readiness, app_status, document, owner, ready_condition, repo_status,
};

use super::{Context, KubeApiError, api_resource, now_rfc3339};
use crate::engine::EngineError;
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
    Controller::new_with(api, watcher::Config::default(), ar)
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

fn error_policy(obj: Arc<DynamicObject>, error: &KubeApiError, ctx: Arc<KindContext>) -> Action {
    warn!(kind = %ctx.kind, name = obj.metadata.name.as_deref().unwrap_or(""), %error, "cannot reconcile");
    Action::requeue(ctx.shared.resync.min(std::time::Duration::from_secs(5)))
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
                Ok(Action::requeue(ctx.shared.resync))
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
            Readiness::ready("Applied", "in force in the hub")
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
                    Readiness::ready("Applied", "in force in the hub")
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
        Ok(Action::requeue(ctx.shared.resync))
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
