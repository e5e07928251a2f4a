//! Freezes (`gitfleet freeze`) and sync windows (`spec.syncWindows`) as holds.

use std::collections::BTreeMap;

use super::Engine;
use crate::fleet::ClusterLabels;
use crate::fleet::hold::Holds;
use crate::fleet::rollout::Plan;
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
        let _ = (app, plan, labels, projects, now);
        Holds::none()
    }
}
