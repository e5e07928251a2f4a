//! The spokes' links: connecting (the key check, the one live connection per cluster),
//! disconnecting, liveness, and status reports through to the durable ack.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn};

use super::clusters::superseded;
use super::{Engine, EngineError, Published};
use crate::metrics::ErrorKind as MetricsError;
use crate::model::{ClusterDesired, ClusterRecord, KeyBinding, TargetReport};
use crate::pki::{self, now_unix};
use crate::store::ReportOutcome;
use crate::telemetry;

/// See [`Engine::set_connect_hook`] and [`Engine::set_diff_hook`].
pub type ConnectHook = Arc<
    dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync,
>;

/// A live link of one spoke, handed to the gRPC adapter.
#[derive(Debug)]
pub struct Connection {
    pub id: u64,
    /// The cluster's desired state as published, with what sending it needs.
    pub desired: watch::Receiver<Arc<Published>>,
    /// Cancelled when a newer connection of the same cluster replaces this one, or the cluster
    /// is revoked.
    pub replaced: CancellationToken,
    /// Cancelled when an admin revokes the cluster.
    pub revoked: CancellationToken,
    pub acked_seq: u64,
}

impl Connection {
    /// Whether the connection was replaced or revoked: it must send the spoke nothing more.
    pub fn cut_off(&self) -> bool {
        self.revoked.is_cancelled() || self.replaced.is_cancelled()
    }
}

pub(super) struct LiveConnection {
    pub(super) id: u64,
    pub(super) replaced: CancellationToken,
    pub(super) revoked: CancellationToken,
    pub(super) agent_version: String,
}

impl Engine {
    /// The current desired state of a cluster.
    pub fn desired(&self, cluster: &str) -> Option<Arc<ClusterDesired>> {
        self.lock()
            .desired
            .get(cluster)
            .map(|tx| Arc::clone(&tx.borrow().desired))
    }

    /// The current desired state of a cluster as published to its link.
    pub fn published(&self, cluster: &str) -> Option<Arc<Published>> {
        self.lock()
            .desired
            .get(cluster)
            .map(|tx| tx.borrow().clone())
    }

    // --- the link ----------------------------------------------------------------------------

    /// Whether a certificate with `key` may speak for `cluster` now: a cheap look that
    /// changes nothing, to refuse a superseded certificate before its session waits for
    /// anything. [`Engine::connect`] decides again, atomically.
    pub fn check_key(&self, cluster: &str, key: &pki::CertKey) -> Result<(), EngineError> {
        match self.store.cluster(cluster)? {
            Some(r)
                if r.key_binding(&key.fingerprint, key.not_after_unix)
                    == KeyBinding::Superseded =>
            {
                Err(EngineError::Unauthenticated(superseded(cluster)))
            }
            _ => Ok(()),
        }
    }

    /// A spoke said hello with a certificate for `key`: it becomes the cluster's one live
    /// connection, unless the cluster is revoked, waits for approval, or is bound to another
    /// key (the certificate was superseded by a renewal).
    pub async fn connect(
        &self,
        cluster: &str,
        key: &pki::CertKey,
        agent_version: &str,
    ) -> Result<Connection, EngineError> {
        let acked_seq = self.store.acked_seq(cluster)?;
        let now = now_unix();
        let (binding, id, replaced, revoked, desired) = {
            let mut state = self.lock();
            // Checked and recorded under the state lock, which revocation takes too (see
            // `revoke_cluster`), and in one step on the record, so that neither a revocation nor a
            // renewal's new key is undone by writing back a record read before them.
            // On condition that the record is still the one read: a revocation or new labels
            // another replica (the leader) wrote meanwhile stand, and this replica hears of
            // them (and cuts the link off) from the watch.
            let (admitted, _) = self.store.update_cluster_if_unchanged(cluster, |record| {
                let Some(record) = record else {
                    return (
                        None,
                        Err(EngineError::PermissionDenied(format!(
                            "cluster {cluster:?} is not registered with this hub"
                        ))),
                    );
                };
                if record.revoked {
                    return (
                        None,
                        Err(EngineError::PermissionDenied(format!(
                            "cluster {cluster:?} has been revoked"
                        ))),
                    );
                }
                if record.pending {
                    return (
                        None,
                        Err(EngineError::PermissionDenied(format!(
                            "cluster {cluster:?} is waiting for approval"
                        ))),
                    );
                }
                let binding = record.key_binding(&key.fingerprint, key.not_after_unix);
                if binding == KeyBinding::Superseded {
                    return (None, Err(EngineError::Unauthenticated(superseded(cluster))));
                }
                let mut record = match binding {
                    KeyBinding::BindNow | KeyBinding::Renewed => record.bind_key(&key.fingerprint),
                    KeyBinding::Bound | KeyBinding::Superseded => record.clone(),
                };
                record.last_contact_unix = now;
                if !agent_version.is_empty() {
                    record.agent_version = agent_version.to_owned();
                }
                (Some(record), Ok(binding))
            })?;
            let binding = admitted?;
            state.next_connection += 1;
            let id = state.next_connection;
            let replaced = CancellationToken::new();
            let revoked = CancellationToken::new();
            if let Some(old) = state.connections.insert(
                cluster.to_owned(),
                LiveConnection {
                    id,
                    replaced: replaced.clone(),
                    revoked: revoked.clone(),
                    agent_version: agent_version.to_owned(),
                },
            ) {
                old.replaced.cancel();
            }
            state.last_contact.insert(cluster.to_owned(), now);
            self.store.set_presence(cluster, true);
            let desired = state
                .desired
                .entry(cluster.to_owned())
                .or_insert_with(|| watch::channel(Arc::new(Published::default())).0)
                .subscribe();
            (binding, id, replaced, revoked, desired)
        };
        match binding {
            KeyBinding::BindNow => {
                info!(%cluster, fingerprint = %key.fingerprint, "bound the cluster to the key of its current certificate (record from an older hub)");
            }
            KeyBinding::Renewed => {
                info!(%cluster, "connected with its renewed certificate; the previous one is refused from now on");
            }
            KeyBinding::Bound | KeyBinding::Superseded => {}
        }
        self.cluster_changed(cluster);
        self.kick_rollouts();
        let hook = self
            .connect_hook
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook(cluster.to_owned()).await;
        }
        Ok(Connection {
            id,
            desired,
            replaced,
            revoked,
            acked_seq,
        })
    }

    /// For tests: `hook` runs after every connection is admitted and before its session
    /// sends anything, so that a test can put a change (a revocation) exactly there.
    #[doc(hidden)]
    pub fn set_connect_hook(&self, hook: Option<ConnectHook>) {
        *self.connect_hook.lock().unwrap_or_else(|p| p.into_inner()) = hook;
    }

    /// The connection `id` of `cluster` ended.
    pub fn disconnect(&self, cluster: &str, id: u64) {
        let mut state = self.lock();
        if state.connections.get(cluster).is_some_and(|c| c.id == id) {
            state.connections.remove(cluster);
            self.store.set_presence(cluster, false);
        }
        let last = state.last_contact.get(cluster).copied();
        drop(state);
        self.cluster_changed(cluster);
        self.kick_rollouts();
        let Some(last) = last else {
            return;
        };
        let recorded = self
            .store
            .update_cluster_if_unchanged(cluster, |record| match record {
                Some(r) if r.last_contact_unix < last => (
                    Some(ClusterRecord {
                        last_contact_unix: last,
                        ..r.clone()
                    }),
                    (),
                ),
                _ => (None, ()),
            });
        if let Err(e) = recorded {
            warn!(%cluster, error = %e, "cannot record last contact");
        }
    }

    /// Any message from a spoke shows it is alive.
    pub fn touch(&self, cluster: &str) {
        self.lock()
            .last_contact
            .insert(cluster.to_owned(), now_unix());
    }

    /// Stores status reports of `cluster` that arrived together (each unless a duplicate) and
    /// answers with the seq to ack only once they and that seq are durable: one flush for the
    /// batch (shared with concurrent callers), so a spoke streaming reports costs one disk
    /// flush per batch, and no ack ever covers a report that could still be lost.
    pub async fn ingest_reports(
        &self,
        cluster: &str,
        reports: Vec<TargetReport>,
    ) -> Result<u64, EngineError> {
        let acked_seq = self.record_reports(cluster, reports)?;
        self.ack_reports(cluster, acked_seq).await?;
        Ok(acked_seq)
    }

    /// Stores status reports of `cluster` (each unless a duplicate), not yet durable, and
    /// answers with the seq that may be acked once [`Engine::ack_reports`] has made it durable.
    /// A link records each report as it arrives and acks while it reads on, so that the reports
    /// arriving while one flush is under way are all in the next.
    pub fn record_reports(
        &self,
        cluster: &str,
        reports: Vec<TargetReport>,
    ) -> Result<u64, EngineError> {
        let mut acked_seq = 0;
        for report in reports {
            // Stored in the trace of the spoke's sync that sent it.
            let span = info_span!(
                "status",
                app = %report.app,
                revision = %report.revision,
                sync = ?report.sync,
                health = ?report.health,
            );
            telemetry::set_parent(&span, &report.trace);
            telemetry::annotate(
                &span,
                &[
                    (telemetry::APP, &report.app),
                    (telemetry::CLUSTER, cluster),
                    (telemetry::REVISION, &report.revision),
                ],
            );
            let seq = span
                .in_scope(|| self.store_report(report))
                .inspect_err(|_| self.config.metrics.error(MetricsError::status_ingest))?;
            self.config.metrics.status_report();
            acked_seq = acked_seq.max(seq);
        }
        Ok(acked_seq)
    }

    /// Makes every report recorded so far durable, then `seq` as `cluster`'s acked seq: once
    /// this returns, `seq` may be acked (see [`Engine::record_reports`]).
    pub async fn ack_reports(&self, cluster: &str, seq: u64) -> Result<(), EngineError> {
        self.store
            .ack_durably(cluster, seq)
            .await
            .inspect_err(|_| self.config.metrics.error(MetricsError::status_ingest))?;
        Ok(())
    }

    /// Stores a report, not yet durable, unless it is a duplicate; returns the seq to ack once
    /// flushed. The link goes through [`Engine::ingest_reports`]; this is for benchmarks that
    /// store many clusters' reports and flush once ([`Engine::flush`]).
    #[doc(hidden)]
    pub fn store_report(&self, mut report: TargetReport) -> Result<u64, EngineError> {
        let cluster = report.cluster.clone();
        // A spoke may only report on its own current Targets; a report about anything else
        // (say, an App removed meanwhile) is acknowledged but not kept.
        let known = self
            .desired(&cluster)
            .is_some_and(|d| d.targets.contains_key(&report.app));
        report.received_at_unix = now_unix();
        let previous = if known {
            self.store.report_summary(&cluster, &report.app)
        } else {
            None
        };
        let outcome = self
            .store
            .record_report(&cluster, report.seq, known.then_some(&report))?;
        match outcome {
            ReportOutcome::Stored { acked_seq } => {
                if known {
                    self.after_report(previous.as_ref(), &report)?;
                } else {
                    debug!(%cluster, app = %report.app, "report for a Target the cluster does not have; not kept");
                }
                Ok(acked_seq)
            }
            ReportOutcome::Duplicate { acked_seq } => {
                debug!(%cluster, seq = report.seq, "duplicate report ignored");
                Ok(acked_seq)
            }
        }
    }
}
