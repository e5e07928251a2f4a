//! The fleet managing itself, engine side: after a fetch of the fleet Repo, read the fleet
//! path at the new commit, apply what is there and delete what an earlier commit brought and
//! this one does not (see [`crate::fleetsync`] for the rules). The outcome goes on the fleet
//! Repo's status (`status.fleet`); a bad commit changes nothing else.

use std::sync::Arc;

use tracing::{Instrument, info, info_span, warn};

use super::{Engine, EngineError};
use crate::fleetsync::{self, FleetSource};
use crate::resources::{Kind, Resource};
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
        let outcome = self.apply_fleet(source, &repo.spec.url, &commit).await;
        let _guard = self.write.lock().await;
        let mut status = self.store.repo_status(&source.repo)?.unwrap_or_default();
        match outcome {
            Ok(()) => {
                status.fleet_commit = commit.clone();
                status.fleet_error.clear();
                info!(revision = %commit, "fleet synced");
            }
            Err(message) => {
                if status.fleet_error != message {
                    warn!(revision = %commit, error = %message, "fleet not synced; nothing changed");
                }
                status.fleet_error = message;
            }
        }
        self.store.put_repo_status(&source.repo, &status)?;
        self.store.flush().await?;
        Ok(())
    }

    /// Applies the fleet path at `commit`; the error is what the Repo's status shows.
    async fn apply_fleet(
        self: &Arc<Self>,
        source: &FleetSource,
        url: &str,
        commit: &str,
    ) -> Result<(), String> {
        let files = self
            .git
            .read_documents(url, commit, &source.path)
            .await
            .map_err(|e| format!("fleet path: {e}"))?;
        let stored = self.store.resources().map_err(|e| e.to_string())?;
        let plan = fleetsync::plan(source, commit, &files, &stored, Limits::DEFAULT)?;
        if !plan.documents.is_empty() {
            let outcomes = self
                .apply(&plan.documents, false)
                .await
                .map_err(|e| e.to_string())?;
            for o in outcomes.iter().filter(|o| o.action != "unchanged") {
                info!(kind = %o.kind, name = %o.name, action = o.action, "fleet resource applied");
            }
        }
        for (kind, name) in &plan.delete {
            if self.delete(*kind, name).await.map_err(|e| e.to_string())? {
                info!(%kind, %name, "fleet resource deleted: gone from the fleet path");
            }
        }
        Ok(())
    }
}
