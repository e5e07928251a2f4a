//! The spoke's plain HTTP listener: `/healthz` (the process serves), `/readyz` (the link to the
//! hub is up) and `/metrics` (Prometheus). It carries no data of the cluster and takes no input.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::link::LinkState;
use crate::metrics::{LinkSnapshot, SpokeMetrics};

#[derive(Clone)]
struct HttpState {
    link: Arc<LinkState>,
    metrics: Arc<SpokeMetrics>,
}

pub fn router(link: Arc<LinkState>, metrics: Arc<SpokeMetrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(scrape))
        .with_state(HttpState { link, metrics })
}

/// Serves until `cancel` fires.
pub async fn serve(listener: TcpListener, router: Router, cancel: CancellationToken) {
    if let Err(error) = axum::serve(listener, router)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
    {
        tracing::warn!(%error, "HTTP server failed");
    }
}

/// Ready while connected to the hub: a spoke that cannot reach its hub still enforces the last
/// desired state, but shows as not ready so that the disconnection is visible.
async fn ready(State(state): State<HttpState>) -> Response {
    if *state.link.connected().borrow() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to the hub (the last desired state is still enforced)\n",
        )
            .into_response()
    }
}

async fn scrape(State(state): State<HttpState>) -> Response {
    let desired = state.link.desired().borrow().clone();
    let snapshot = LinkSnapshot {
        connected: *state.link.connected().borrow(),
        targets: desired.targets.keys().cloned().collect(),
        unacked_reports: state.link.outbox().pending.len(),
        desired_generation: desired.generation,
    };
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(&snapshot),
    )
        .into_response()
}
