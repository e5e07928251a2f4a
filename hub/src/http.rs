//! The hub's plain HTTP listener: health, Prometheus metrics, push webhooks from Git hosts, and
//! the web dashboard (`crate::dashboard`, under `/ui`).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tracing::{info, warn};

use crate::engine::{Engine, RolloutView};
use crate::fleet::rollout::{Summary, TargetState};
use crate::metrics::{ErrorKind, FleetSnapshot, RolloutProgress, WebhookOutcome};
use crate::webhook::{self, Decision, Provider, WebhookError};

/// The largest webhook body read when none is configured: push payloads are a few KiB to a few
/// hundred (GitHub lists at most 20 commits); the hub needs only the repository's URL.
pub const DEFAULT_WEBHOOK_MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
struct HttpState {
    engine: Arc<Engine>,
    fleet: Arc<FleetGauges>,
    webhook_secret: Option<Arc<str>>,
    webhook_max_body_bytes: usize,
}

pub fn router(
    engine: Arc<Engine>,
    webhook_secret: Option<String>,
    webhook_max_body_bytes: usize,
    dashboard: Option<crate::dashboard::DashboardConfig>,
) -> Router {
    let ui = match dashboard {
        Some(config) => crate::dashboard::router(Arc::clone(&engine), config),
        None => Router::new(),
    };
    Router::new()
        .route("/healthz", get(health))
        .route("/readyz", get(health))
        .route("/metrics", get(metrics))
        .route("/webhooks/{provider}", post(receive_webhook))
        .with_state(HttpState {
            engine,
            fleet: Arc::default(),
            webhook_secret: webhook_secret.map(Arc::from),
            webhook_max_body_bytes,
        })
        .merge(ui)
}

/// Live and ready while the store can make writes durable. sled refuses every write for good
/// after an I/O error (a full disk, say), even once the cause is gone: only a restart brings the
/// hub back, so both probes fail and the orchestrator restarts it (tests/faults.rs in e2e).
/// Anyone may ask, as often as they like: the answer is what the store's writes and flushes
/// found, never a flush of its own.
async fn health(State(state): State<HttpState>) -> Response {
    match state.engine.store_failure() {
        None => "ok\n".into_response(),
        // Logged once, when it happened: a probe in a loop must not flood the log either.
        Some(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store failed: {e}; restart the hub once the cause is fixed\n"),
        )
            .into_response(),
    }
}

/// The fleet part of a scrape: every cluster, every Target and every App's rollout progress,
/// which at 10,000 clusters × 50 Apps takes seconds to read. `/metrics` is unauthenticated, so
/// scrapes share one read (one waits for the read under way) and a read is reused for
/// [`FLEET_READ_MIN_AGE`] or [`FLEET_READ_SHARE`] times as long as it took, whichever is
/// longer: however often anyone scrapes, reading the fleet takes at most a fifth of a core,
/// off the runtime's workers. The read holds the lock in a task of its own, so a scrape whose
/// client goes away neither loses it nor lets the next scrape start another beside it.
#[derive(Default)]
struct FleetGauges {
    last: Arc<tokio::sync::Mutex<Option<FleetRead>>>,
}

/// A read of the fleet, and until when a scrape reuses it.
type FleetRead = (tokio::time::Instant, Arc<FleetSnapshot>);

const FLEET_READ_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(2);
const FLEET_READ_SHARE: u32 = 4;

impl FleetGauges {
    async fn snapshot(&self, engine: &Arc<Engine>) -> Arc<FleetSnapshot> {
        let mut last = Arc::clone(&self.last).lock_owned().await;
        if let Some((fresh_until, snapshot)) = &*last
            && tokio::time::Instant::now() < *fresh_until
        {
            return Arc::clone(snapshot);
        }
        let engine = Arc::clone(engine);
        let read = tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let reader = Arc::clone(&engine);
            match tokio::task::spawn_blocking(move || read_fleet(&reader)).await {
                Ok(snapshot) => {
                    engine.metrics().fleet_read();
                    let took = started.elapsed();
                    let fresh_until = tokio::time::Instant::now()
                        + FLEET_READ_MIN_AGE.max(took * FLEET_READ_SHARE);
                    let snapshot = Arc::new(snapshot);
                    *last = Some((fresh_until, Arc::clone(&snapshot)));
                    snapshot
                }
                Err(e) => {
                    // The last read, if any, rather than gauges of nothing; tried again next.
                    warn!(error = %e, "metrics: reading the fleet failed");
                    last.as_ref()
                        .map(|(_, s)| Arc::clone(s))
                        .unwrap_or_default()
                }
            }
        });
        read.await.unwrap_or_default()
    }
}

/// Prometheus scrape: the counters as they are, the fleet gauges from the engine's state (as
/// of the last fleet read, see [`FleetGauges`]).
async fn metrics(State(state): State<HttpState>) -> Response {
    let snapshot = state.fleet.snapshot(&state.engine).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.engine.metrics().encode(&snapshot),
    )
        .into_response()
}

/// The fleet gauges from the engine's state now.
fn read_fleet(engine: &Engine) -> FleetSnapshot {
    let mut snapshot = FleetSnapshot::default();
    match engine.clusters() {
        Ok(clusters) => {
            let live = clusters.iter().filter(|c| !c.record.revoked);
            snapshot.clusters = live.clone().count();
            snapshot.connected = live.filter(|c| c.connected).count();
        }
        Err(e) => {
            warn!(error = %e, "metrics: cannot read clusters");
            engine.metrics().error(ErrorKind::store);
        }
    }
    snapshot.targets = engine.target_states();
    // One read of the store for all Apps.
    match engine.rollout_statuses() {
        Ok(views) => {
            for view in views {
                let progress = rollout_progress(&view);
                snapshot.rollouts.push((view.app, progress));
            }
        }
        Err(e) => {
            warn!(error = %e, "metrics: cannot read rollouts");
            engine.metrics().error(ErrorKind::store);
        }
    }
    snapshot
}

fn rollout_progress(view: &RolloutView) -> RolloutProgress {
    let mut p = RolloutProgress {
        wave: view.state.wave,
        waves: view.status.waves.len(),
        paused: view.status.summary == Summary::Paused,
        ..RolloutProgress::default()
    };
    for t in view.status.waves.iter().flat_map(|w| &w.targets) {
        let n = match t.state {
            TargetState::Pending | TargetState::Held => &mut p.pending,
            TargetState::Updating => &mut p.progressing,
            TargetState::Healthy => &mut p.healthy,
            TargetState::Failed | TargetState::Tolerated => &mut p.failed,
            TargetState::Disconnected => &mut p.disconnected,
        };
        *n += 1;
    }
    p
}

fn reply(status: StatusCode, message: impl Into<String>) -> Response {
    (status, format!("{}\n", message.into())).into_response()
}

/// A push signed with a Repo's webhook secret (its `webhookSecretRef`, else the hub-wide
/// `--webhook-secret`) triggers an immediate fetch of that Repo. Anything else is a 4xx, logged,
/// and fetches nothing.
///
/// Deliveries come from anyone: the body is read up to a limit, and the signature is checked
/// before anything else when the hub-wide secret is the only one; with per-Repo secrets, the
/// payload is parsed for its repository's URL and only the Repos following it (looked up in
/// memory) are candidates. Nothing reads the store before a delivery is verified.
async fn receive_webhook(
    State(state): State<HttpState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Any path segment can come in: only known providers get a label of their own.
    let label = match Provider::parse(&provider) {
        Some(_) => provider.as_str(),
        None => "unknown",
    };
    let count = |outcome| state.engine.metrics().webhook(label, outcome);
    if state.webhook_secret.is_none() && !state.engine.has_webhook_secrets() {
        count(WebhookOutcome::not_found);
        return reply(
            StatusCode::NOT_FOUND,
            "webhooks are not configured on this hub",
        );
    }
    let Some(kind) = Provider::parse(&provider) else {
        warn!(%provider, "webhook from an unknown provider");
        count(WebhookOutcome::not_found);
        return reply(
            StatusCode::NOT_FOUND,
            format!(
                "unknown webhook provider {provider:?}; expected github, gitlab, gitea, forgejo or bitbucket"
            ),
        );
    };
    let body = match axum::body::to_bytes(body, state.webhook_max_body_bytes).await {
        Ok(body) => body,
        Err(e) => {
            let message = format!(
                "webhook body refused: {e} (the limit is {} bytes, --webhook-max-body-bytes)",
                state.webhook_max_body_bytes
            );
            warn!(%provider, "{message}");
            count(WebhookOutcome::too_large);
            state.engine.metrics().error(ErrorKind::webhook);
            return reply(StatusCode::PAYLOAD_TOO_LARGE, message);
        }
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let hub_wide = state.webhook_secret.as_deref();
    if !state.engine.has_webhook_secrets()
        && let Some(secret) = hub_wide
        && let Err(e) = webhook::verify(kind, header, &body, secret.as_bytes())
    {
        // The hub-wide secret is the only one: a delivery it did not sign is refused before
        // its payload is even parsed.
        warn!(%provider, error = %e, "webhook refused");
        count(WebhookOutcome::unauthorized);
        state.engine.metrics().error(ErrorKind::webhook);
        return reply(StatusCode::UNAUTHORIZED, e.to_string());
    }
    let urls = match webhook::repository_urls(kind, &body)
        .map_err(|e| webhook::unreadable(kind, header, &body, hub_wide, e))
    {
        Ok(urls) => urls,
        Err(e @ (WebhookError::Malformed(_) | WebhookError::NoRepository)) => {
            warn!(%provider, error = %e, "webhook payload refused");
            count(WebhookOutcome::bad_request);
            state.engine.metrics().error(ErrorKind::webhook);
            return reply(StatusCode::BAD_REQUEST, e.to_string());
        }
        // Not signed with the hub-wide secret.
        Err(e) => {
            warn!(%provider, error = %e, "webhook refused");
            count(WebhookOutcome::unauthorized);
            state.engine.metrics().error(ErrorKind::webhook);
            return reply(StatusCode::UNAUTHORIZED, e.to_string());
        }
    };
    // Which secret to check depends on the Repos the payload names: the payload is parsed
    // (not trusted) first, and only the Repos whose own secret signed it are fetched.
    let candidates = state.engine.webhook_candidates(&urls, hub_wide);
    match webhook::decide(kind, header, &body, &candidates, hub_wide) {
        Decision::Fetch(repos) => match state.engine.fetch_now(repos).await {
            Ok(fetching) => {
                info!(%provider, repos = ?fetching, "webhook: fetching now");
                count(WebhookOutcome::accepted);
                reply(
                    StatusCode::ACCEPTED,
                    format!("fetching {}", fetching.join(", ")),
                )
            }
            Err(e) => {
                warn!(%provider, error = %e, "webhook: cannot ask the leading replica to fetch");
                state.engine.metrics().error(ErrorKind::webhook);
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot ask the leading replica to fetch: {e}"),
                )
            }
        },
        Decision::Refused(e) => {
            warn!(%provider, ?urls, error = %e, "webhook refused");
            count(WebhookOutcome::unauthorized);
            state.engine.metrics().error(ErrorKind::webhook);
            reply(StatusCode::UNAUTHORIZED, e.to_string())
        }
        Decision::NotFollowed => {
            warn!(%provider, ?urls, "webhook for a repository no Repo with a webhook secret follows");
            count(WebhookOutcome::unknown_repository);
            reply(
                StatusCode::NOT_FOUND,
                "no Repo with a webhook secret follows this repository",
            )
        }
    }
}
