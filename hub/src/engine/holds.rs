//! What holds each App's Targets from being given a new revision (see
//! [`crate::fleet::hold`]): freezes and sync windows ([`super::freezes`]) and dependencies
//! between Apps ([`super::dependencies`]). The rollout obeys them in
//! [`crate::fleet::rollout::decide_held`].

use std::collections::BTreeMap;

use super::Engine;
use crate::fleet::ClusterLabels;
use crate::fleet::hold::Holds;
use crate::fleet::rollout::Plan;
use crate::resources::{App, Project};

impl Engine {
    /// The holds on `app`'s Targets at `now`, on the clusters of its `plan`; `wanted` is the
    /// revision each App it depends on is meant to run.
    pub(super) fn holds_for(
        &self,
        app: &App,
        plan: &Plan,
        labels: &[ClusterLabels<'_>],
        projects: &BTreeMap<String, Project>,
        wanted: &dyn Fn(&str) -> Option<String>,
        now: i64,
    ) -> Holds {
        let mut holds = self.freeze_holds(app, plan, labels, projects, now);
        holds.extend(self.dependency_holds(app, plan, wanted, now));
        holds
    }
}
