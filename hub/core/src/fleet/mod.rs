//! The fleet's decisions, pure: which clusters an App lands on and what each spoke should run.
//! No IO here: values in, values out.

pub mod change_control;
pub mod dependencies;
pub mod desired;
pub mod freeze;
pub mod history;
pub mod hold;
pub mod placement;
pub mod project;
pub mod rollout;
pub mod window;

pub use desired::{
    AppRevision, Delta, DesiredTarget, SharedFleet, compute_fleet, compute_fleet_with_rollouts,
    compute_shared_fleet, desired_target, diff,
};
pub use placement::{ClusterLabels, Placement, place, selection_matches, selector_matches};
