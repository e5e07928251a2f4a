//! The hub's plain HTTP listener: health, and push webhooks from Git hosts (metrics join later).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tracing::{info, warn};

use crate::engine::Engine;
use crate::webhook::{self, Provider, WebhookError};

#[derive(Clone)]
struct HttpState {
    engine: Arc<Engine>,
    webhook_secret: Option<Arc<str>>,
}

pub fn router(engine: Arc<Engine>, webhook_secret: Option<String>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ok\n" }))
        .route("/webhooks/{provider}", post(receive_webhook))
        .with_state(HttpState {
            engine,
            webhook_secret: webhook_secret.map(Arc::from),
        })
}

fn reply(status: StatusCode, message: impl Into<String>) -> Response {
    (status, format!("{}\n", message.into())).into_response()
}

/// A verified push triggers an immediate fetch of every Repo with that URL. Anything else is a
/// 4xx, logged, and fetches nothing.
async fn receive_webhook(
    State(state): State<HttpState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(secret) = state.webhook_secret.as_deref() else {
        return reply(
            StatusCode::NOT_FOUND,
            "webhooks are not configured on this hub",
        );
    };
    let Some(kind) = Provider::parse(&provider) else {
        warn!(%provider, "webhook from an unknown provider");
        return reply(
            StatusCode::NOT_FOUND,
            format!(
                "unknown webhook provider {provider:?}; expected github, gitlab, gitea, forgejo or bitbucket"
            ),
        );
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Err(e) = webhook::verify(kind, header, &body, secret.as_bytes()) {
        warn!(%provider, error = %e, "webhook refused");
        return reply(StatusCode::UNAUTHORIZED, e.to_string());
    }
    let urls = match webhook::repository_urls(kind, &body) {
        Ok(urls) => urls,
        Err(e @ (WebhookError::Malformed(_) | WebhookError::NoRepository)) => {
            warn!(%provider, error = %e, "webhook payload refused");
            return reply(StatusCode::BAD_REQUEST, e.to_string());
        }
        Err(e) => return reply(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match state.engine.trigger_fetch_by_url(&urls) {
        Ok(repos) if repos.is_empty() => {
            warn!(%provider, ?urls, "webhook for a repository no Repo follows");
            reply(StatusCode::NOT_FOUND, "no Repo follows this repository")
        }
        Ok(repos) => {
            info!(%provider, ?repos, "webhook: fetching now");
            reply(
                StatusCode::ACCEPTED,
                format!("fetching {}", repos.join(", ")),
            )
        }
        Err(e) => {
            warn!(error = %e, "webhook: cannot read Repos");
            reply(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}
