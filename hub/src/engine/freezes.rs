//! Freezes (`gitfleet freeze`) and sync windows (`spec.syncWindows`) as holds: the store keeps
//! the freezes, [`crate::fleet::change_control`] decides what they and the windows hold.
//! Creating or deleting a freeze decides every rollout again at once (under the write lock,
//! like any admin change); a freeze's end and a window's edge wake the rollout by its
//! `next_check_at`.

use std::collections::{BTreeMap, HashSet};

use tracing::info;

use super::{Engine, EngineError};
use crate::fleet::ClusterLabels;
use crate::fleet::change_control::change_control_holds;
use crate::fleet::freeze::{Freeze, FreezeRequest};
use crate::fleet::hold::Holds;
use crate::fleet::rollout::Plan;
use crate::pki::now_unix;
use crate::resources::{App, Project};

impl Engine {
    /// What freezes and sync windows hold of `app` at `now`.
    pub(super) fn freeze_holds(
        &self,
        app: &App,
        plan: &Plan,
        labels: &[ClusterLabels<'_>],
        projects: &BTreeMap<String, Project>,
        now: i64,
    ) -> Holds {
        let project = projects.get(app.spec.project_name());
        let project_name = app.spec.project_name();
        let freezes: Vec<Freeze> = self
            .store
            .freezes()
            .into_iter()
            .filter(|f| f.active(now) && f.covers_app(&app.metadata.name, project_name))
            .collect();
        let windows = !app.spec.sync_windows.is_empty()
            || project.is_some_and(|p| !p.spec.sync_windows.is_empty());
        if freezes.is_empty() && !windows {
            return Holds::none();
        }
        // Only the plan's clusters can be held (and only selectors look at them).
        let planned: HashSet<&str> = plan.clusters().collect();
        let on_plan: Vec<ClusterLabels<'_>> = labels
            .iter()
            .filter(|c| planned.contains(c.name))
            .copied()
            .collect();
        change_control_holds(app, project, &freezes, &on_plan, now)
    }

    /// Every freeze, ended ones included until deleted, by name.
    pub fn freezes(&self) -> Vec<Freeze> {
        self.store.freezes()
    }

    /// Creates a freeze, durably, and decides every rollout again with it.
    pub async fn create_freeze(
        &self,
        request: FreezeRequest,
        by: &str,
    ) -> Result<Freeze, EngineError> {
        let now = now_unix();
        let freeze = request
            .validate(by, now)
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        let guard = self.write.lock().await;
        // An ended freeze of the same name is replaced: it holds nothing any more.
        if let Some(old) = self.store.freeze(&freeze.name)
            && old.active(now)
        {
            return Err(EngineError::AlreadyExists(format!(
                "freeze {:?} exists (until {}, by {}); delete it first or pick another name",
                old.name,
                crate::fleet::window::utc_text(old.until),
                old.created_by
            )));
        }
        self.store.put_freeze(&freeze);
        self.record_freeze_event(
            gitfleet_core::notify::FREEZE_STARTED_KIND,
            format!(
                "freeze {} of {} until {}: {}",
                freeze.name,
                freeze.scope_text(),
                crate::fleet::window::utc_text(freeze.until),
                freeze.reason
            ),
            by,
        )?;
        self.recompute_locked(&guard).await?;
        self.store.flush().await?;
        drop(guard);
        info!(freeze = %freeze.name, %by, until = freeze.until, scope = %freeze.scope_text(), "freeze created");
        Ok(freeze)
    }

    /// Deletes a freeze, durably, and decides every rollout again without it: what it held
    /// starts at once. `None`: there was none of that name.
    pub async fn delete_freeze(&self, name: &str, by: &str) -> Result<Option<Freeze>, EngineError> {
        let guard = self.write.lock().await;
        let Some(old) = self.store.delete_freeze(name) else {
            return Ok(None);
        };
        if old.active(now_unix()) {
            self.record_freeze_event(
                gitfleet_core::notify::FREEZE_ENDED_KIND,
                format!("freeze {name} of {} deleted", old.scope_text()),
                by,
            )?;
        }
        self.recompute_locked(&guard).await?;
        self.store.flush().await?;
        drop(guard);
        info!(freeze = %name, %by, "freeze deleted");
        Ok(Some(old))
    }
}
