//! Pruning: deleting what a Target applied before and Git no longer has (where policy and
//! safety allow), recording the inventory, and cleaning up after a removed Target.

use std::sync::Arc;

use tracing::Instrument as _;

use crate::cluster::{ClusterError, Deletion, InventoryRef, Precondition};
use crate::model::{Health, ObjectRef, ResourceAction, ResourceResult, TargetSpec};
use crate::sync::{project, prune};

use super::Context;

/// Deletes what the Target applied before and Git no longer has (where policy and safety
/// allow), then records the new inventory in the cluster.
pub(super) async fn prune(
    ctx: &Context,
    spec: &TargetSpec,
    render_clean: bool,
    resources: &mut Vec<ResourceResult>,
) {
    let inventory_ref = InventoryRef::new(&spec.app, &spec.target_id, &spec.namespace);
    let previous = match ctx.cluster.read_inventory(&inventory_ref).await {
        Ok(previous) => within_project(spec, previous.unwrap_or_default()),
        Err(error) => {
            // Without the old inventory a new one would forget objects: leave both alone.
            tracing::warn!(%error, "cannot read the inventory; not pruning and not recording");
            return;
        }
    };
    let current: Vec<ObjectRef> = resources
        .iter()
        .filter(|r| r.action != ResourceAction::Invalid)
        // Hooks are run, not owned: never recorded, never pruned.
        .filter(|r| r.hook.is_empty())
        .filter(|r| project::allows(spec.project.as_ref(), &r.object))
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
                        hook: String::new(),
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
                            hook: String::new(),
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
                            hook: String::new(),
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

/// The inventory less the objects the Target's Project does not allow (recorded before the
/// Project was narrowed, or by an older spoke): the App may not delete them, so it forgets
/// them; they stay in the cluster as they are.
pub(super) fn within_project(
    spec: &TargetSpec,
    mut inventory: prune::Inventory,
) -> prune::Inventory {
    let before = inventory.objects.len();
    inventory
        .objects
        .retain(|o| project::allows(spec.project.as_ref(), o));
    if inventory.objects.len() != before {
        tracing::info!(
            forgotten = before - inventory.objects.len(),
            "objects outside the App's Project are no longer the App's to prune"
        );
    }
    inventory
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
        hook: String::new(),
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
pub(super) async fn prune_removed(ctx: Arc<Context>, spec: TargetSpec) {
    let span = tracing::info_span!("prune", app = %spec.app, cluster = %ctx.config.cluster_name, revision = %spec.source.commit);
    async {
        let inventory_ref = InventoryRef::new(&spec.app, &spec.target_id, &spec.namespace);
        let previous = match ctx.cluster.read_inventory(&inventory_ref).await {
            Ok(Some(previous)) => within_project(&spec, previous),
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
