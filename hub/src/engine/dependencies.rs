//! `spec.dependsOn` as holds: an App's Target waits on each cluster until the Apps it depends
//! on are ready there (given a revision, applied, synced and healthy at it; see
//! [`crate::fleet::dependencies`]). The dependency's reports wake its dependents' rollouts.

use std::collections::BTreeMap;

use super::Engine;
use crate::fleet::dependencies::{self, DependencyState};
use crate::fleet::hold::Holds;
use crate::fleet::rollout::Plan;
use crate::resources::App;

impl Engine {
    /// What `app`'s dependencies hold of it at `now`, on the clusters of its `plan`; `wanted`
    /// is the revision each dependency is meant to run ([`dependencies::wanted_revision`]).
    pub(super) fn dependency_holds(
        &self,
        app: &App,
        plan: &Plan,
        wanted: &dyn Fn(&str) -> Option<String>,
        now: i64,
    ) -> Holds {
        if app.spec.depends_on.is_empty() {
            return Holds::none();
        }
        let clusters: Vec<&str> = plan.clusters().collect();
        let known: BTreeMap<String, DependencyState> = app
            .spec
            .depends_on
            .iter()
            .map(|d| {
                let state = DependencyState {
                    wanted: wanted(d),
                    observed: self.observations(d, clusters.iter().copied(), now),
                };
                (d.clone(), state)
            })
            .collect();
        dependencies::holds(app, clusters, &known)
    }
}
