//! Keeping etcd's history bounded. etcd keeps every version of every key until its history is
//! compacted, and a hub writes a version per status report and per link: at 10,000 clusters
//! the database reaches etcd's quota (`--quota-backend-bytes`, 2 GiB by default) within
//! minutes, and etcd then refuses every write ("mvcc: database space exceeded"). As
//! kube-apiserver does for the cluster's own etcd (`--etcd-compaction-interval`), the leading
//! replica compacts every interval to the revision etcd was at one interval before, so that a
//! watch (another replica's feed) that is less than an interval behind never finds what it has
//! not read compacted away. Compaction frees space inside etcd's database for new writes;
//! giving it back to the file system (`etcdctl defrag`) stays an operator's task (docs/ha.md).

use std::sync::Weak;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::EtcdBackend;
use crate::store::BackendError;

impl EtcdBackend {
    /// etcd's current revision.
    pub(super) async fn current_revision(&self) -> Result<i64, BackendError> {
        let answer = self
            .kv_get(
                self.prefix().to_vec(),
                Some(etcd_client::GetOptions::new().with_count_only()),
            )
            .await?;
        answer.header().map(|h| h.revision()).ok_or_else(|| {
            BackendError::Storage(format!(
                "etcd at {} answered without its revision",
                self.endpoints()
            ))
        })
    }

    /// Compacts etcd's history up to `revision` (the versions before it are gone). One that is
    /// already compacted further (etcd's own auto-compaction, or another replica) is no
    /// failure.
    pub(super) async fn compact_to(&self, revision: i64) -> Result<(), BackendError> {
        match self.kv.clone().compact(revision, None).await {
            Ok(_) => Ok(()),
            Err(e)
                if e.to_string()
                    .contains("required revision has been compacted") =>
            {
                Ok(())
            }
            Err(e) => Err(self.error(e)),
        }
    }
}

/// While this replica leads, compacts etcd's history every `every` to the revision etcd was at
/// `every` before (read by this replica, leading then or not). Ends when the lease is lost or
/// the backend dropped.
pub(super) async fn compact_history(
    backend: Weak<EtcdBackend>,
    every: Duration,
    lost: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The revision read at the last tick, and the last compacted to. Every replica reads it,
    // so that one elected between two ticks compacts at its first.
    let mut previous: Option<i64> = None;
    let mut compacted = 0;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = lost.cancelled() => return,
        }
        let Some(b) = backend.upgrade() else { return };
        let now = match b.current_revision().await {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read etcd's revision to compact its history");
                continue;
            }
        };
        let leads = b.session().leader.is_some();
        if let Some(to) = previous.filter(|&to| leads && to > compacted) {
            match b.compact_to(to).await {
                Ok(()) => {
                    compacted = to;
                    tracing::debug!(revision = to, "compacted etcd's history");
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    revision = to,
                    "cannot compact etcd's history; its database grows until it is"
                ),
            }
        }
        previous = Some(now);
    }
}
