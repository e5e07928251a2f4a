//! Which replica of a hub does the work that must happen once.
//!
//! A hub on sled runs alone and does everything. Hubs sharing an etcd prefix elect one leader
//! (an etcd lease): it follows Git, drives rollouts, syncs the fleet and answers every admin and
//! registration call; the others serve the spokes connected to them and hand every other call
//! to the leader at its replica URL.

use tokio::sync::watch;

/// This replica's part, as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// The only hub on its store (sled): it leads, and nobody else can.
    Alone,
    /// Elected: does the work that must happen once, and answers every call itself.
    Leader,
    /// Another replica leads, reachable at `leader_url` (`None`: no leader right now, between
    /// one's loss and the next election).
    Follower { leader_url: Option<String> },
}

impl Leadership {
    /// Whether this replica does the work that must happen once.
    pub fn leads(&self) -> bool {
        matches!(self, Leadership::Alone | Leadership::Leader)
    }
}

/// Where a replica learns its part: the sender stays with the election.
pub type LeadershipWatch = watch::Receiver<Leadership>;

/// A watch that always says [`Leadership::Alone`].
pub fn alone() -> LeadershipWatch {
    watch::channel(Leadership::Alone).1
}
