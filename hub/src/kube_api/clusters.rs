//! One `Cluster` custom resource per registered cluster: the hub creates it and keeps its
//! status (connected, last contact, agent version); its `spec.labels` and the hub's labels are
//! kept in step both ways (`gitfleet_core::kube_api::label_flow`: the side that moved from the
//! labels last agreed on, `status.labels`, wins).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, info, warn};

use gitfleet_core::kube_api::{
    CLUSTER_KIND, CLUSTER_PLURAL, ClusterFacts, LabelFlow, Readiness, cluster_status,
    contact_to_write, label_changes, label_flow, labels_of, ready_condition,
};

use super::resources::merge_patch;
use super::{Context, KubeApiError, api_resource, now_rfc3339, rfc3339};
use crate::engine::FleetChange;
use crate::model::ClusterView;

/// How long changes are gathered before a pass.
const GATHER: std::time::Duration = std::time::Duration::from_millis(200);

/// Compares the hub's clusters with their objects every resync, until the process stops.
pub(super) async fn keep_in_step(ctx: Arc<Context>) -> Result<(), KubeApiError> {
    let ar = api_resource(CLUSTER_KIND, CLUSTER_PLURAL);
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ctx.namespace, &ar);
    let mut tick = tokio::time::interval(ctx.resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A pass also follows the hub's cluster changes (a registration, a link, new labels) and
    // edits of the objects, gathered for a moment; the resync is the safety net.
    let mut changes = ctx.engine.subscribe_changes();
    let mut edits = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        let resync = tokio::select! {
            _ = tick.tick() => true,
            change = changes.recv() => match change {
                Ok(FleetChange::Cluster(_)) | Err(RecvError::Lagged(_)) => false,
                Ok(_) => continue,
                Err(RecvError::Closed) => return Ok(()),
            },
            edit = edits.next() => match edit {
                Some(Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))) => false,
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    debug!(error = %e, "cannot watch the Cluster objects");
                    continue;
                }
                None => return Ok(()),
            },
        };
        // What else came meanwhile is this pass's (it lists the objects after). The pass's own
        // writes come back as edits: one more pass, which finds nothing to write.
        tokio::time::sleep(GATHER).await;
        while changes.try_recv().is_ok() {}
        while let Some(Some(_)) = edits.next().now_or_never() {}
        if let Err(e) = pass(&ctx, &api).await {
            warn!(error = %e, "cannot bring the Cluster objects in step");
        }
        if resync && let Err(e) = collect_orphans(&ctx).await {
            warn!(error = %e, "cannot look for resources whose object is gone");
        }
    }
}

async fn pass(ctx: &Context, api: &Api<DynamicObject>) -> Result<(), KubeApiError> {
    let objects: BTreeMap<String, DynamicObject> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name.clone().map(|n| (n, o)))
        .collect();
    for view in ctx.engine.clusters()? {
        if view.record.revoked {
            continue;
        }
        let name = view.record.name.clone();
        if let Err(e) = one(ctx, api, &view, objects.get(&name)).await {
            warn!(cluster = %name, error = %e, "cannot bring the Cluster object in step");
        }
    }
    Ok(())
}

async fn one(
    ctx: &Context,
    api: &Api<DynamicObject>,
    view: &ClusterView,
    object: Option<&DynamicObject>,
) -> Result<(), KubeApiError> {
    let name = &view.record.name;
    let hub = &view.record.labels;
    let spec = object.and_then(|o| labels_of(o.data.pointer("/spec/labels")));
    let old_status = object
        .and_then(|o| o.data.get("status").cloned())
        .unwrap_or_else(|| json!({}));
    let agreed = labels_of(old_status.get("labels"));
    let mut readiness = Readiness::ready("InStep", "labels in step with the hub");
    let agreed_now = match label_flow(hub, spec.as_ref(), agreed.as_ref()) {
        LabelFlow::None => hub.clone(),
        LabelFlow::ToHub(labels) => match label_changes(hub, &labels) {
            None => labels,
            Some(changes) => {
                let by = format!("kubernetes:{}/{name}", ctx.namespace);
                match ctx.engine.label_cluster(name, &changes, &by).await {
                    Ok(_) => {
                        info!(cluster = %name, "labels taken from its Cluster object");
                        labels
                    }
                    Err(crate::engine::EngineError::Invalid(m)) => {
                        readiness =
                            Readiness::not_ready("InvalidLabels", format!("spec.labels: {m}"));
                        // Still the last agreed labels: the edit is tried again until fixed.
                        agreed.clone().unwrap_or_else(|| hub.clone())
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        },
        LabelFlow::ToObject(labels) => {
            match object {
                None => {
                    let new: DynamicObject = serde_json::from_value(json!({
                        "apiVersion": format!("{}/{}", gitfleet_core::kube_api::GROUP, gitfleet_core::kube_api::VERSION),
                        "kind": CLUSTER_KIND,
                        "metadata": { "name": name, "namespace": ctx.namespace },
                        "spec": { "labels": labels },
                    }))
                    .map_err(|e| KubeApiError::Config(e.to_string()))?;
                    api.create(&PostParams::default(), &new).await?;
                }
                Some(o) => {
                    let old = o
                        .data
                        .pointer("/spec/labels")
                        .cloned()
                        .unwrap_or(Value::Null);
                    let patch = json!({ "spec": { "labels": merge_patch(&old, &json!(labels)) } });
                    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
                        .await?;
                }
            }
            labels
        }
    };
    let generation = match object {
        Some(o) => o.metadata.generation.unwrap_or(0),
        None => api.get(name).await?.metadata.generation.unwrap_or(0),
    };
    let last_contact = (view.record.last_contact_unix > 0).then(|| {
        // A heartbeat is no reason to write.
        let written = old_status
            .get("lastContact")
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp());
        let changed = old_status.get("connected") != Some(&json!(view.connected));
        rfc3339(contact_to_write(
            written,
            view.record.last_contact_unix,
            changed,
        ))
    });
    let mut status = cluster_status(&ClusterFacts {
        labels: agreed_now,
        connected: view.connected,
        agent_version: view.record.agent_version.clone(),
        last_contact,
        registered: rfc3339(view.record.registered_at_unix),
    });
    status["observedGeneration"] = json!(generation);
    status["conditions"] = json!([ready_condition(
        &readiness,
        generation,
        &old_status,
        &now_rfc3339()
    )]);
    if status != old_status {
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": merge_patch(&old_status, &status) })),
        )
        .await?;
    }
    Ok(())
}

/// Deletes the hub's resources whose object is gone without the hub seeing its deletion (its
/// finalizer removed by hand while the hub was down). The hub's resources are read before the
/// objects are listed: a resource applied since was applied from an object that the list shows.
async fn collect_orphans(ctx: &Context) -> Result<(), KubeApiError> {
    let owned = ctx.engine.kube_owned(&ctx.namespace)?;
    if owned.is_empty() {
        return Ok(());
    }
    for (kind, plural) in gitfleet_core::kube_api::RESOURCE_KINDS {
        let mine: Vec<&(crate::resources::Kind, String, String)> =
            owned.iter().filter(|(k, _, _)| *k == kind).collect();
        if mine.is_empty() {
            continue;
        }
        let ar = api_resource(kind.as_str(), plural);
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ctx.namespace, &ar);
        let names: std::collections::BTreeSet<String> = api
            .list_metadata(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter_map(|o| o.metadata.name)
            .collect();
        for (kind, name, owner) in mine {
            let object = owner.split_once('/').map(|(_, n)| n).unwrap_or_default();
            if names.contains(object) {
                continue;
            }
            match ctx.engine.delete_owned(*kind, name, owner).await {
                Ok(true) => info!(%kind, %name, %owner, "deleted: its object is gone"),
                Ok(false) => {}
                Err(e) => {
                    warn!(%kind, %name, %owner, error = %e, "its object is gone, but it cannot be deleted")
                }
            }
        }
    }
    Ok(())
}
