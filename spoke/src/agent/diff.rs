//! `gitfleet diff --live` on the spoke: fetch and render a Target at the revision the hub
//! names, then for each object server-side apply it with `dryRun=All` as the App's field
//! manager and compare what the server answers with the live object; list what the sync would
//! prune. Nothing in the cluster changes: only reads (gets, the inventory) and dry runs; no
//! inventory intent, no field-manager hand-over, no hook runs (hooks are run, not applied, and
//! are left out). The decisions are `sync::diff`'s.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::StreamExt as _;
use tokio::sync::{Semaphore, watch};
use tracing::Instrument as _;

use crate::cluster::{ClusterError, InventoryRef};
use crate::desired::DesiredState;
use crate::link::Differ;
use crate::model::{ObjectRef, TargetSpec};
use crate::sync::diff::{self, DiffAction, ObjectDiff, TargetDiff, short};
use crate::sync::render::{self, Manifest};
use crate::sync::{hooks, ownership, project, prune};

use super::Context;
use super::pipeline::render_fetched;
use super::prune::within_project;

/// Diffs made at once, at most; more wait (their renders would wait for the render bound
/// anyway, and the hub times out a request that waits too long).
const MAX_CONCURRENT_DIFFS: usize = 2;
/// Objects of one diff read and dry-run at once: a large App is compared in a few seconds
/// without flooding the API server.
const OBJECTS_AT_ONCE: usize = 8;

/// The agent's [`Differ`]: diffs run on the agent's runtime, never on the link's.
pub(super) struct AgentDiffer {
    ctx: Arc<Context>,
    desired: watch::Receiver<DesiredState>,
    permits: Arc<Semaphore>,
    runtime: tokio::runtime::Handle,
}

impl AgentDiffer {
    pub(super) fn new(ctx: Arc<Context>, desired: watch::Receiver<DesiredState>) -> Self {
        Self {
            ctx,
            desired,
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_DIFFS)),
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

impl Differ for AgentDiffer {
    fn diff(&self, spec: TargetSpec) -> Pin<Box<dyn Future<Output = TargetDiff> + Send>> {
        let ctx = Arc::clone(&self.ctx);
        let permits = Arc::clone(&self.permits);
        let (credential, chart_credential) = {
            let desired = self.desired.borrow();
            let chart = spec.render.helm_chart.as_ref();
            (
                desired.credential_for(&spec.source.repo_url).cloned(),
                chart.and_then(|c| desired.credential_for(&c.repository).cloned()),
            )
        };
        let span = tracing::info_span!(
            "diff",
            app = %spec.app,
            cluster = %ctx.config.cluster_name,
            revision = %spec.source.commit,
        );
        let (target_id, revision) = (spec.target_id.clone(), spec.source.commit.clone());
        let work = async move {
            let _permit = permits.acquire_owned().await;
            diff_target(&ctx, &spec, credential.as_ref(), chart_credential.as_ref()).await
        }
        .instrument(span);
        let task = self.runtime.spawn(work);
        Box::pin(async move {
            task.await.unwrap_or_else(|e| {
                diff::failed(&target_id, &revision, format!("the diff stopped: {e}"))
            })
        })
    }
}

fn failed_object(object: ObjectRef, source_file: &str, message: String) -> ObjectDiff {
    ObjectDiff {
        object,
        action: DiffAction::Failed,
        diff: String::new(),
        message,
        source_file: source_file.to_owned(),
    }
}

/// Fetch, render, dry-run apply and compare every object, and list what would be pruned.
async fn diff_target(
    ctx: &Context,
    spec: &TargetSpec,
    credential: Option<&crate::model::RepoCredential>,
    chart_credential: Option<&crate::model::RepoCredential>,
) -> TargetDiff {
    let revision = spec.source.commit.as_str();
    let fail = |message: String| diff::failed(&spec.target_id, revision, message);
    let files = match ctx
        .git
        .read_app(&spec.source, credential, ctx.config.read_limits)
        .await
    {
        Ok(files) => files,
        Err(error) => {
            return fail(format!(
                "App {:?} at {}: fetch failed: {error}",
                spec.app,
                short(revision)
            ));
        }
    };
    let rendered = render_fetched(ctx, spec, files, (credential, chart_credential), revision).await;
    let (files, rendered, _) = match rendered {
        Ok(rendered) => rendered,
        Err(message) => {
            return fail(format!(
                "App {:?} does not render at {}: {message}",
                spec.app,
                short(revision)
            ));
        }
    };
    let inventory_ref = InventoryRef::new(&spec.app, &spec.target_id, &spec.namespace);
    let previous = match ctx.cluster.read_inventory(&inventory_ref).await {
        Ok(previous) => previous,
        Err(error) => return fail(format!("reading the App's inventory: {error}")),
    };
    let mut objects: Vec<ObjectDiff> = files
        .errors
        .iter()
        .chain(rendered.errors.iter())
        .map(|e| failed_object(ObjectRef::default(), &e.file, e.to_string()))
        .collect();
    let render_clean = files.errors.is_empty() && rendered.errors.is_empty();
    let plan = hooks::classify(rendered.manifests, previous.is_none());
    for (manifest, error) in &plan.invalid {
        objects.push(failed_object(
            manifest.object.clone(),
            &manifest.source_file,
            error.clone(),
        ));
    }
    // Namespaces this revision creates: an object in one of them cannot be dry-run before it
    // exists, and is shown as it would be created.
    let created_namespaces: BTreeSet<String> = plan
        .ordinary
        .iter()
        .filter(|m| m.group().is_empty() && m.object.kind == "Namespace")
        .map(|m| m.object.name.clone())
        .collect();
    let compared: Vec<(ObjectDiff, ObjectRef)> = futures::stream::iter(plan.ordinary)
        .map(|manifest| compare_one(ctx, spec, manifest, &created_namespaces))
        .buffered(OBJECTS_AT_ONCE)
        .collect()
        .await;
    let mut current = Vec::new();
    for (compared, placed) in compared {
        if project::allows(spec.project.as_ref(), &placed) {
            current.push(placed);
        }
        objects.push(compared);
    }
    let previous = within_project(spec, previous.unwrap_or_default());
    match prune::candidates(&previous, &current, spec.sync_policy.prune, render_clean) {
        Ok(gone) => {
            for object in gone {
                match ctx.cluster.get(&object).await {
                    Ok(Some(live)) => {
                        if prune::may_delete(&live, &spec.app, &spec.target_id).is_ok() {
                            let (action, text) =
                                diff::compare(&object, Some(&live), None, revision);
                            objects.push(ObjectDiff {
                                object,
                                action,
                                diff: text,
                                message: "no longer in Git".into(),
                                source_file: String::new(),
                            });
                        }
                    }
                    Ok(None) => {}
                    Err(error) => objects.push(failed_object(
                        object,
                        "",
                        format!("reading an object the sync would prune: {error}"),
                    )),
                }
            }
        }
        Err(hold) => {
            tracing::debug!(?hold, "the sync would prune nothing");
        }
    }
    diff::within_limits(&spec.target_id, revision, objects, None)
}

/// One object: its Project's rules, the live object, whose it is, and the dry run; with the
/// object as placed in its scope.
async fn compare_one(
    ctx: &Context,
    spec: &TargetSpec,
    mut manifest: Manifest,
    created_namespaces: &BTreeSet<String>,
) -> (ObjectDiff, ObjectRef) {
    let compared = compare_placed(ctx, spec, &mut manifest, created_namespaces).await;
    (compared, manifest.object)
}

async fn compare_placed(
    ctx: &Context,
    spec: &TargetSpec,
    manifest: &mut Manifest,
    created_namespaces: &BTreeSet<String>,
) -> ObjectDiff {
    let revision = spec.source.commit.as_str();
    let source_file = manifest.source_file.clone();
    let resolved = match ctx
        .cluster
        .resolve(&manifest.object.api_version, &manifest.object.kind)
        .await
    {
        Ok(resolved) => resolved,
        Err(error @ ClusterError::UnknownKind { .. }) => {
            return failed_object(
                manifest.object.clone(),
                &source_file,
                format!(
                    "{error} (a kind a CRD of this revision defines cannot be dry-run before the CRD exists)"
                ),
            );
        }
        Err(error) => {
            return failed_object(manifest.object.clone(), &source_file, error.to_string());
        }
    };
    render::place_in_scope(manifest, resolved.namespaced, &spec.namespace);
    let object = manifest.object.clone();
    if let Some(rules) = &spec.project
        && let Err(message) = project::check(rules, &object)
    {
        return failed_object(object, &source_file, message);
    }
    let live = match ctx.cluster.get(&object).await {
        Ok(live) => live,
        Err(error) => {
            return failed_object(
                object,
                &source_file,
                format!("reading the live object: {error}"),
            );
        }
    };
    let owner = live
        .as_ref()
        .map_or(ownership::LiveOwner::Absent, ownership::LiveOwner::of);
    let force = match ownership::claim(
        &spec.app,
        &owner,
        spec.sync_policy.adopt,
        render::is_added_namespace(manifest),
    ) {
        Ok(ownership::Claim::Apply) => {
            // The sync hands the shared manager's fields to the App's first (no conflict
            // then); the dry run cannot, so it forces what the hand-over would allow.
            spec.sync_policy.force
                || live
                    .as_ref()
                    .is_some_and(|l| ownership::legacy_entry(l, &spec.app).is_some())
        }
        Ok(ownership::Claim::Adopt) => true,
        Ok(ownership::Claim::LeaveAsIs) => {
            return ObjectDiff {
                object,
                action: DiffAction::Unchanged,
                diff: String::new(),
                message: "exists and belongs to someone else; left as it is".into(),
                source_file,
            };
        }
        Err(refusal) => return failed_object(object, &source_file, refusal.to_string()),
    };
    let manager = ownership::field_manager(&spec.app);
    let planned = match ctx
        .cluster
        .apply_dry_run(&resolved, manifest, &manager, force)
        .await
    {
        Ok(applied) => applied.object,
        Err(_) if live.is_none() && created_namespaces.contains(&object.namespace) => {
            // In a namespace this revision creates: as it would be created.
            manifest.body.clone()
        }
        Err(error) => {
            return failed_object(object, &source_file, format!("dry run refused: {error}"));
        }
    };
    let (action, text) = diff::compare(&object, live.as_ref(), Some(&planned), revision);
    ObjectDiff {
        object,
        action,
        diff: text,
        message: String::new(),
        source_file,
    }
}
