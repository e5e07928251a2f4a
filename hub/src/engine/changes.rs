//! The change feed the live reads (`Watch` streams) are driven by: the engine says *what*
//! changed (a Target, every Target of a cluster, an App's rollout) as it changes it, here or,
//! on a shared store, at another replica (`replicas`); a watcher re-reads only that. Nothing
//! is recomputed for the fleet on a timer, so what a watcher costs grows with what changes in
//! what it watches, not with the fleet.
//!
//! A subscriber that falls behind by more than [`CHANGES_CAPACITY`] changes is told so
//! (`RecvError::Lagged`) and must read what it watches again (a snapshot): changes are
//! notifications, not history, and carry no values to read back.

use tokio::sync::broadcast;

use super::Engine;

/// Changes kept for subscribers that have not received them yet.
pub const CHANGES_CAPACITY: usize = 16 * 1024;

/// What may have changed: a watcher re-reads it and compares with what it last sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FleetChange {
    /// One Target's report (its sync, health, resources, message).
    Target { app: String, cluster: String },
    /// Every Target of a cluster: its desired state was published (Targets added, removed,
    /// given a revision) or its link went up or down.
    Cluster(String),
    /// An App's rollout (decided, commanded) or its controls (suspended, sync requested);
    /// its Targets' held text with it.
    App(String),
}

pub(super) struct ChangeFeed {
    tx: broadcast::Sender<FleetChange>,
}

impl ChangeFeed {
    pub(super) fn new() -> Self {
        Self {
            tx: broadcast::channel(CHANGES_CAPACITY).0,
        }
    }

    fn send(&self, change: FleetChange) {
        // Without subscribers (the usual case) a change costs nothing but this check.
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(change);
        }
    }
}

impl Engine {
    /// Every change from now on (see [`FleetChange`]).
    pub fn subscribe_changes(&self) -> broadcast::Receiver<FleetChange> {
        self.changes.tx.subscribe()
    }

    pub(super) fn target_changed(&self, app: &str, cluster: &str) {
        self.changes.send(FleetChange::Target {
            app: app.to_owned(),
            cluster: cluster.to_owned(),
        });
    }

    pub(super) fn cluster_changed(&self, cluster: &str) {
        self.changes.send(FleetChange::Cluster(cluster.to_owned()));
    }

    pub(super) fn app_changed(&self, app: &str) {
        self.changes.send(FleetChange::App(app.to_owned()));
    }
}
