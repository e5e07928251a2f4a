//! One Target's loop: on every new spec (or a failed sync's retry) report Syncing, run the
//! pipeline for its revision, then watch health until the next spec.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::desired::DesiredState;
use crate::model::{Health, ObjectRef, SyncState, TargetSpec, TargetStatus};
use crate::telemetry;

use super::health::watch_health;
use super::pipeline::sync_once;
use super::{Context, send_if_changed, short, status_of};

pub(super) async fn target_worker(
    ctx: Arc<Context>,
    mut spec_rx: watch::Receiver<TargetSpec>,
    desired: watch::Receiver<DesiredState>,
    cancel: CancellationToken,
) {
    let mut last: Option<TargetStatus> = None;
    let mut versions: HashMap<ObjectRef, String> = HashMap::new();
    loop {
        let mut spec = spec_rx.borrow_and_update().clone();
        let span = tracing::info_span!(
            "sync",
            app = %spec.app,
            cluster = %ctx.config.cluster_name,
            revision = %spec.source.commit,
        );
        // A child of the hub's dispatch of this spec; reports carry the sync's own context,
        // so that the hub's spans storing them join the trace below it.
        telemetry::set_parent(&span, &spec.trace);
        telemetry::annotate(
            &span,
            &[
                (telemetry::APP, &spec.app),
                (telemetry::CLUSTER, &ctx.config.cluster_name),
                (telemetry::REVISION, &spec.source.commit),
            ],
        );
        spec.trace = telemetry::context_of(&span);
        if spec.sync_policy.suspended {
            let status = status_of(
                &spec,
                SyncState::Pending,
                Health::Unknown,
                "sync is suspended by policy".into(),
                Vec::new(),
            );
            send_if_changed(&ctx, &mut last, status);
            tokio::select! {
                changed = spec_rx.changed() => if changed.is_err() { return } else { continue },
                () = cancel.cancelled() => return,
            }
        }
        let syncing = status_of(
            &spec,
            SyncState::Syncing,
            last.as_ref().map_or(Health::Progressing, |s| s.health),
            format!("syncing revision {}", short(&spec.source.commit)),
            Vec::new(),
        );
        send_if_changed(&ctx, &mut last, syncing);
        let (credential, chart_credential) = {
            let desired = desired.borrow();
            let chart = spec.render.helm_chart.as_ref();
            (
                desired.credential_for(&spec.source.repo_url).cloned(),
                chart.and_then(|c| desired.credential_for(&c.repository).cloned()),
            )
        };
        let sync = sync_once(
            &ctx,
            &spec,
            credential.as_ref(),
            chart_credential.as_ref(),
            &mut versions,
            &mut last,
            &mut spec_rx,
        );
        let attempt = tokio::select! {
            attempt = sync.instrument(span.clone()) => attempt,
            () = cancel.cancelled() => return,
        };
        let Some(attempt) = attempt else {
            // A newer spec arrived while a fetch waited to be retried: sync that one instead,
            // unless the spec channel closed (the Target was removed).
            if spec_rx.has_changed().is_err() {
                return;
            }
            continue;
        };
        let new_spec = watch_health(&ctx, attempt, &mut last, &mut spec_rx, &cancel, span).await;
        if !new_spec {
            return;
        }
    }
}
