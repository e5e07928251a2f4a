//! The hub's plain HTTP listener: health now; webhooks and metrics join later.

use axum::Router;
use axum::routing::get;

pub fn router() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ok\n" }))
}
