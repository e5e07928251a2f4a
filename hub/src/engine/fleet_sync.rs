//! The fleet managing itself, engine side: after a fetch of the fleet Repo, read the fleet
//! path at the new commit, apply what is there and delete what an earlier commit brought and
//! this one does not (see [`crate::fleetsync`] for the rules). The outcome goes on the fleet
//! Repo's status (`status.fleet`); a bad commit changes nothing else.

use std::sync::Arc;

use tracing::{Instrument, info, info_span, warn};

use super::{Engine, EngineError, WriteGuard};
use crate::fleet::dependencies;
use crate::fleetsync::{self, FleetSource};
use crate::resources::{App, Kind, Resource};
use gitfleet_core::yaml::Limits;

/// One sync at a time per process: a sync may restart the fleet Repo's follower (when the path
/// changes the fleet Repo itself), whose next poll must not start a second sync alongside.
static ONE_SYNC: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Engine {
    /// Whether `repo` is the Repo the fleet's own resources come from.
    pub(super) fn is_fleet_repo(&self, repo: &str) -> bool {
        self.config.fleet.as_ref().is_some_and(|f| f.repo == repo)
    }

    /// Syncs the fleet path if the fleet Repo is at a commit not synced yet. Runs in a task of
    /// its own, so that restarting the follower that asked for it cannot cut it in half.
    pub(super) async fn sync_fleet_detached(self: &Arc<Self>) {
        let engine = Arc::clone(self);
        let task = tokio::spawn(async move {
            let Some(source) = engine.config.fleet.clone() else {
                return;
            };
            let span = info_span!("fleet", repo = %source.repo, path = %source.path);
            if let Err(e) = engine.sync_fleet(&source).instrument(span).await {
                warn!(error = %e, "cannot record the fleet sync");
            }
        });
        let _ = task.await;
    }

    async fn sync_fleet(self: &Arc<Self>, source: &FleetSource) -> Result<(), EngineError> {
        let _one = ONE_SYNC.lock().await;
        let Some(Resource::Repo(repo)) = self.store.resource(Kind::Repo, &source.repo)? else {
            return Ok(());
        };
        let Some(status) = self.store.repo_status(&source.repo)? else {
            return Ok(());
        };
        let commit = status.commit;
        // A commit is synced once; a failed one is retried on every fetch (the cause may be
        // outside the commit, like a credentials entry the hub gained since).
        if commit.is_empty() || (status.fleet_commit == commit && status.fleet_error.is_empty()) {
            return Ok(());
        }
        // Git is read before the write lock is taken: nothing waits on a fetch.
        let files = self
            .git
            .read_documents(&repo.spec.url, &commit, &source.path)
            .await
            .map_err(|e| format!("fleet path: {e}"));
        let guard = self.write.lock().await;
        // One write of everything the commit changes, one recompute and one flush: the fleet
        // moves from one commit's resources to the next's in one step, with its status.
        let outcome = files.and_then(|files| self.apply_fleet(&guard, source, &commit, &files));
        let mut status = self.store.repo_status(&source.repo)?.unwrap_or_default();
        let mut applied = Vec::new();
        let changed = match outcome {
            Ok((stored, changed)) => {
                status.fleet_commit = commit.clone();
                status.fleet_error.clear();
                info!(revision = %commit, "fleet synced");
                applied = stored;
                changed
            }
            Err(message) => {
                if status.fleet_error != message {
                    warn!(revision = %commit, error = %message, "fleet not synced; nothing changed");
                }
                status.fleet_error = message;
                false
            }
        };
        self.store.put_repo_status(&source.repo, &status)?;
        if changed {
            self.recompute_locked(&guard).await?;
        }
        self.store.flush().await?;
        drop(guard);
        self.follow_applied(&applied);
        Ok(())
    }

    /// Writes what the fleet path at `commit` says (applies its documents, deletes what an
    /// earlier commit brought and this one does not), not yet flushed; the error is what the
    /// Repo's status shows. Returns the resources written and whether anything changed.
    fn apply_fleet(
        &self,
        guard: &WriteGuard<'_>,
        source: &FleetSource,
        commit: &str,
        files: &[(String, String)],
    ) -> Result<(Vec<Resource>, bool), String> {
        let stored = self.store.resources().map_err(|e| e.to_string())?;
        let plan = fleetsync::plan(source, commit, files, &stored, Limits::DEFAULT)?;
        let mut applied = Vec::new();
        if !plan.documents.is_empty() {
            let parsed = self.validate(&plan.documents).map_err(|e| e.to_string())?;
            // A Kubernetes object's resource is its own (docs/kube-api.md).
            for r in &parsed {
                self.refuse_kube_owned("apply", r.kind(), r.name(), Some(r))
                    .map_err(|e| e.to_string())?;
            }
            let (outcomes, written) = self
                .apply_locked(guard, parsed, false, "")
                .map_err(|e| e.to_string())?;
            for o in outcomes.iter().filter(|o| o.action != "unchanged") {
                info!(kind = %o.kind, name = %o.name, action = o.action, "fleet resource applied");
            }
            applied = written;
        }
        let mut deleted = false;
        // Projects last: one still used by an App is refused, and the Apps leaving with it in
        // this same commit are deleted first. Apps in dependency order, for the same reason:
        // an App that another depends on is refused while the other is there.
        let leaving: Vec<&App> = stored
            .iter()
            .filter_map(|r| match r {
                Resource::App(app) => Some(app),
                _ => None,
            })
            .filter(|app| {
                plan.delete
                    .contains(&(Kind::App, app.metadata.name.clone()))
            })
            .collect();
        let app_order = dependencies::deletion_order(&leaving);
        let mut deletes: Vec<&(Kind, String)> = plan.delete.iter().collect();
        deletes.sort_by_key(|(kind, name)| {
            (
                *kind == Kind::Project,
                *kind != Kind::App,
                app_order.iter().position(|a| a == name),
            )
        });
        for (kind, name) in deletes {
            if self
                .delete_locked(guard, *kind, name)
                .map_err(|e| e.to_string())?
            {
                deleted = true;
                info!(%kind, %name, "fleet resource deleted: gone from the fleet path");
            }
        }
        let changed = deleted || !applied.is_empty();
        Ok((applied, changed))
    }
}
