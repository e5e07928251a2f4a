//! The web dashboard (`/ui`, docs/dashboard.md), served by the hub's HTTP listener: the page
//! and its script and style (embedded, no CDN), the sign-in link's landing, JSON reads for the
//! grid, an App and a cluster, server-sent events for live updates (the engine's change feed
//! and event bus, as the `Watch` streams use them), and the actions an operator may take.
//!
//! Every read needs a session (the `gitfleet_session` cookie: HttpOnly, Secure,
//! SameSite=Strict); every action also the session's CSRF token in `x-gitfleet-csrf`, and goes
//! through the same authorization (`gitfleet_core::authz`), audit entry and engine call as the
//! CLI's. Decisions are `gitfleet_core::dashboard`'s; this is the adapter.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use gitfleet_core::authz::{Scope, authorize};
use gitfleet_core::dashboard::{SessionProblem, UiAction, allowed_actions};
use gitfleet_core::users::{AuditOutcome, UserRecord};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tracing::{info, warn};

use crate::engine::{DashboardError, Engine, EngineError, FleetChange, token_hash};
use crate::fleet::rollout::Command;
use crate::pki::now_unix;

const SESSION_COOKIE: &str = "gitfleet_session";
const CSRF_COOKIE: &str = "gitfleet_csrf";
const CSRF_HEADER: &str = "x-gitfleet-csrf";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Nothing but the dashboard's own script, style and JSON: no inline script, no other origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Events kept in an App page's timeline.
const TIMELINE: usize = 50;

/// How often an idle event stream says something, so that the listener's idle timeout and
/// proxies keep it open.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// Where the dashboard is reached and how long its sessions live.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// The dashboard's public URL (`--ui-url`, else the HTTP listener's address + `/ui`), set
    /// once the listener is bound; sign-in links are made from it.
    pub url: Arc<OnceLock<String>>,
    pub session_ttl: Duration,
}

#[derive(Clone)]
struct UiState {
    engine: Arc<Engine>,
    config: DashboardConfig,
}

pub fn router(engine: Arc<Engine>, config: DashboardConfig) -> Router {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/app.js", get(script))
        .route("/ui/app.css", get(style))
        .route("/ui/signin", get(sign_in))
        .route("/ui/signout", post(sign_out))
        .route("/ui/api/me", get(me))
        .route("/ui/api/grid", get(grid))
        .route("/ui/api/apps/{app}", get(app_page))
        .route("/ui/api/apps/{app}/{action}", post(act))
        .route("/ui/api/clusters/{cluster}", get(cluster_page))
        .route("/ui/api/stream", get(stream))
        .with_state(UiState { engine, config })
}

/// The headers every dashboard answer carries.
fn secured(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    secured(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

fn problem(status: StatusCode, message: impl Into<String>) -> Response {
    secured((status, axum::Json(json!({ "error": message.into() }))).into_response())
}

fn engine_problem(e: EngineError) -> Response {
    let status = match &e {
        EngineError::Invalid(_) => StatusCode::BAD_REQUEST,
        EngineError::NotFound(_) => StatusCode::NOT_FOUND,
        EngineError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        EngineError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        EngineError::AlreadyExists(_) | EngineError::FailedPrecondition(_) => StatusCode::CONFLICT,
        EngineError::Store(_) | EngineError::Pki(_) => {
            warn!(error = %e, "dashboard: internal error");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    problem(status, e.to_string())
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The signed-in user, or the answer that says to sign in again.
async fn session(state: &UiState, headers: &HeaderMap) -> Result<(UserRecord, String), Response> {
    let unauthorized = || {
        problem(
            StatusCode::UNAUTHORIZED,
            "not signed in: run `gitfleet dashboard` to get a sign-in link",
        )
    };
    let Some(token) = cookie(headers, SESSION_COOKIE) else {
        return Err(unauthorized());
    };
    match state.engine.dashboard_session(token).await {
        Ok((session, user)) => Ok((user, session.csrf_hash)),
        Err(DashboardError::Refused(why)) => {
            info!(%why, "dashboard session refused");
            Err(unauthorized())
        }
        Err(DashboardError::Engine(e)) => Err(engine_problem(e)),
    }
}

#[derive(Deserialize)]
struct SigninQuery {
    token: String,
}

/// A sign-in link: spent, and its session's cookies set; then the dashboard, without the token
/// in the address bar.
async fn sign_in(State(state): State<UiState>, Query(q): Query<SigninQuery>) -> Response {
    match state
        .engine
        .dashboard_sign_in(&q.token, state.config.session_ttl)
        .await
    {
        Ok(session) => {
            let max_age = (session.record.expires_at_unix - now_unix()).max(0);
            let mut response = (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, HeaderValue::from_static("/ui"))],
            )
                .into_response();
            let h = response.headers_mut();
            for value in [
                format!(
                    "{SESSION_COOKIE}={}; Path=/ui; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict",
                    session.token
                ),
                // Read by the page's script and sent back in a header with every action.
                format!(
                    "{CSRF_COOKIE}={}; Path=/ui; Max-Age={max_age}; Secure; SameSite=Strict",
                    session.csrf
                ),
            ] {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    h.append(header::SET_COOKIE, v);
                }
            }
            secured(response)
        }
        Err(DashboardError::Refused(why)) => {
            info!(%why, "dashboard sign-in link refused");
            let text = match why {
                SessionProblem::Unknown | SessionProblem::Expired => {
                    "This sign-in link was used already or has expired (links last 5 minutes and \
                     open one session). Run `gitfleet dashboard` for a new one.\n"
                        .to_owned()
                }
                SessionProblem::User(p) => format!("Sign-in refused: {p}\n"),
            };
            secured(
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    text,
                )
                    .into_response(),
            )
        }
        Err(DashboardError::Engine(e)) => engine_problem(e),
    }
}

async fn sign_out(State(state): State<UiState>, headers: HeaderMap) -> Response {
    if let Err(r) = csrf_checked(&state, &headers).await {
        return r;
    }
    if let Some(token) = cookie(&headers, SESSION_COOKIE)
        && let Err(e) = state.engine.dashboard_sign_out(token).await
    {
        return engine_problem(e);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    for name in [SESSION_COOKIE, CSRF_COOKIE] {
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{name}=; Path=/ui; Max-Age=0; HttpOnly; Secure; SameSite=Strict"
        )) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    secured(response)
}

/// The session's user, if the request also carries the session's CSRF token.
async fn csrf_checked(state: &UiState, headers: &HeaderMap) -> Result<UserRecord, Response> {
    let (user, csrf_hash) = session(state, headers).await?;
    let sent = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if sent.is_empty() || token_hash(sent) != csrf_hash {
        warn!(user = %user.name, "dashboard action without the session's CSRF token; refused");
        return Err(problem(
            StatusCode::FORBIDDEN,
            "the request lacks this session's x-gitfleet-csrf token",
        ));
    }
    Ok(user)
}

fn json_response(value: impl serde::Serialize) -> Response {
    secured(axum::Json(value).into_response())
}

async fn me(State(state): State<UiState>, headers: HeaderMap) -> Response {
    match session(&state, &headers).await {
        Ok((user, _)) => json_response(json!({
            "name": user.name,
            "role": user.role,
            "projects": user.subject().operated_projects(),
            "mayAct": gitfleet_core::dashboard::role_may_act(user.role),
        })),
        Err(r) => r,
    }
}

async fn grid(State(state): State<UiState>, headers: HeaderMap) -> Response {
    if let Err(r) = session(&state, &headers).await {
        return r;
    }
    match state.engine.dashboard_grid() {
        Ok(grid) => json_response(grid),
        Err(e) => engine_problem(e),
    }
}

/// An App: its rollout's waves, its Targets with their resources, its timeline, and the
/// actions the user may take on it.
async fn app_page(
    State(state): State<UiState>,
    headers: HeaderMap,
    Path(app): Path<String>,
) -> Response {
    let user = match session(&state, &headers).await {
        Ok((user, _)) => user,
        Err(r) => return r,
    };
    let engine = &state.engine;
    if let Err(e) = engine.check_app(&app) {
        return engine_problem(e);
    }
    let project = engine.project_of_app(&app);
    let rollout = match engine.rollout_status(&app) {
        Ok(view) => Some(json!({
            "number": view.state.number,
            "summary": view.status.summary,
            "reason": view.status.reason,
            "revision": view.state.revision.commit,
            "suspended": view.suspended,
            "gitRevision": view.git_revision,
            "waves": view.status.waves.iter().map(|w| json!({
                "name": w.name,
                "progress": w.progress,
                "total": w.total,
                "updated": w.updated,
                "healthy": w.healthy,
                "failed": w.failed,
                "targets": w.targets.iter().map(|t| json!({
                    "cluster": t.cluster, "state": t.state, "detail": t.detail,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })),
        Err(EngineError::NotFound(_)) => None,
        Err(e) => return engine_problem(e),
    };
    let targets = match engine.status(Some(&app), None).await {
        Ok(targets) => targets,
        Err(e) => return engine_problem(e),
    };
    let events = match engine.events(Some(&app), None, 0, TIMELINE).await {
        Ok(mut events) => {
            events.reverse();
            events
        }
        Err(e) => return engine_problem(e),
    };
    json_response(json!({
        "name": app,
        "project": project,
        "actions": allowed_actions(&user.subject(), &app, &project),
        "rollout": rollout,
        "targets": targets.iter().map(|t| {
            let report = t.report.as_ref();
            json!({
                "cluster": t.cluster,
                "desiredRevision": t.desired_revision,
                "revision": report.map(|r| r.revision.as_str()),
                "sync": report.map(|r| r.sync),
                "health": report.map(|r| r.health),
                "message": report.map(|r| r.message.as_str()),
                "connected": t.cluster_connected,
                "held": t.held,
                "updatedAt": t.updated_at_unix,
                "resources": report.map(|r| r.resources.iter().map(|o| json!({
                    "kind": o.kind, "namespace": o.namespace, "name": o.name,
                    "health": o.health, "message": o.message, "action": o.action,
                })).collect::<Vec<_>>()).unwrap_or_default(),
            })
        }).collect::<Vec<_>>(),
        "events": events.iter().map(event_json).collect::<Vec<_>>(),
    }))
}

fn event_json(e: &crate::model::EventRecord) -> Value {
    json!({
        "id": e.id, "at": e.at_unix, "app": e.app, "cluster": e.cluster,
        "kind": e.kind, "message": e.message, "by": e.by,
    })
}

async fn cluster_page(
    State(state): State<UiState>,
    headers: HeaderMap,
    Path(cluster): Path<String>,
) -> Response {
    if let Err(r) = session(&state, &headers).await {
        return r;
    }
    let engine = &state.engine;
    let view = match engine.clusters() {
        Ok(clusters) => clusters.into_iter().find(|c| c.record.name == cluster),
        Err(e) => return engine_problem(e),
    };
    let Some(view) = view else {
        return problem(
            StatusCode::NOT_FOUND,
            format!("cluster {cluster:?} not found"),
        );
    };
    let targets = match engine.status(None, Some(&cluster)).await {
        Ok(targets) => targets,
        Err(e) => return engine_problem(e),
    };
    json_response(json!({
        "name": view.record.name,
        "labels": view.record.labels,
        "connected": view.connected,
        "agentVersion": view.record.agent_version,
        "lastContact": view.record.last_contact_unix,
        "targets": targets.iter().map(|t| {
            let report = t.report.as_ref();
            json!({
                "app": t.app,
                "desiredRevision": t.desired_revision,
                "revision": report.map(|r| r.revision.as_str()),
                "sync": report.map(|r| r.sync),
                "health": report.map(|r| r.health),
                "message": report.map(|r| r.message.as_str()),
            })
        }).collect::<Vec<_>>(),
    }))
}

/// Live updates: a `cell` event for each Target whose state changes (its grid cell, as the
/// grid's JSON codes it), `app` and `cluster` when more may have changed (the page reads it
/// again), `event` for each recorded event, and `reset` when the stream fell behind (read
/// everything again).
async fn stream(State(state): State<UiState>, headers: HeaderMap) -> Response {
    if let Err(r) = session(&state, &headers).await {
        return r;
    }
    let token = cookie(&headers, SESSION_COOKIE)
        .unwrap_or_default()
        .to_owned();
    let engine = Arc::clone(&state.engine);
    secured(
        Sse::new(live(engine, token))
            .keep_alive(KeepAlive::new().interval(KEEPALIVE))
            .into_response(),
    )
}

/// How often an open event stream checks that its session still holds (expired, signed out,
/// the user revoked): the stream ends within this.
const SESSION_RECHECK: Duration = Duration::from_secs(30);

struct Live {
    engine: Arc<Engine>,
    token: String,
    changes: tokio::sync::broadcast::Receiver<FleetChange>,
    events: tokio::sync::broadcast::Receiver<crate::model::EventRecord>,
    recheck: tokio::time::Interval,
}

fn live(engine: Arc<Engine>, token: String) -> impl Stream<Item = Result<Event, Infallible>> {
    let mut recheck = tokio::time::interval(SESSION_RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = Live {
        changes: engine.subscribe_changes(),
        events: engine.subscribe_events(),
        engine,
        token,
        recheck,
    };
    futures::stream::unfold(state, |mut s| async move {
        let event = loop {
            tokio::select! {
                change = s.changes.recv() => break match change {
                    Ok(FleetChange::Target { app, cluster }) => {
                        let (cell, revision) = s.engine.dashboard_cell(&app, &cluster);
                        Event::default().event("cell").json_data(json!({
                            "app": app, "cluster": cluster,
                            "cell": cell.code().to_string(), "revision": revision,
                        })).unwrap_or_default()
                    }
                    Ok(FleetChange::Cluster(cluster)) => {
                        Event::default().event("cluster").data(cluster)
                    }
                    Ok(FleetChange::App(app)) => Event::default().event("app").data(app),
                    Err(RecvError::Lagged(_)) => Event::default().event("reset").data("lagged"),
                    Err(RecvError::Closed) => return None,
                },
                event = s.events.recv() => break match event {
                    Ok(e) => Event::default().event("event").json_data(event_json(&e)).unwrap_or_default(),
                    Err(RecvError::Lagged(_)) => Event::default().event("reset").data("lagged"),
                    Err(RecvError::Closed) => return None,
                },
                _ = s.recheck.tick() => {
                    if let Err(why) = s.engine.dashboard_session(&s.token).await {
                        info!(%why, "dashboard event stream ended: its session no longer holds");
                        return None;
                    }
                }
            }
        };
        Some((Ok(event), s))
    })
}

/// An action on an App: the session's user, its CSRF token, then the CLI's path — the role's
/// decision for the App's Project (a refusal audited), the audit entry, the engine's command,
/// the entry finished with the outcome before the answer.
async fn act(
    State(state): State<UiState>,
    headers: HeaderMap,
    Path((app, action)): Path<(String, String)>,
) -> Response {
    let user = match csrf_checked(&state, &headers).await {
        Ok(user) => user,
        Err(r) => return r,
    };
    let Some(action) = UiAction::parse(&action) else {
        return problem(
            StatusCode::NOT_FOUND,
            format!("unknown action {action:?}; expected pause, resume, promote, rollback or sync"),
        );
    };
    let engine = &state.engine;
    if !engine.leads() {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "this hub replica does not lead: act from the leading replica's dashboard or the CLI",
        );
    }
    let project = engine.project_of_app(&app);
    let what = format!("App {app:?}");
    let target = format!("App/{app}");
    let by = user.name.clone();
    if let Err(denied) = authorize(
        &user.subject(),
        action.action(),
        Scope::Project {
            what: &what,
            project: &project,
        },
    ) {
        warn!(user = %by, app = %app, action = action.as_str(), "dashboard action refused");
        if let Err(e) = engine
            .audit_refused(&by, action.action(), target, denied.to_string())
            .await
        {
            return engine_problem(e);
        }
        return problem(StatusCode::FORBIDDEN, denied.to_string());
    }
    let entry = match engine.audit_begin(&by, action.action(), target) {
        Ok(entry) => entry,
        Err(e) => return engine_problem(e),
    };
    let result = match action {
        UiAction::Pause => command(engine, &app, Command::Pause { by: by.clone() }).await,
        UiAction::Resume => command(engine, &app, Command::Resume { by: by.clone() }).await,
        UiAction::Promote => command(engine, &app, Command::Promote { by: by.clone() }).await,
        UiAction::Rollback => {
            command(
                engine,
                &app,
                Command::Rollback {
                    to: None,
                    by: by.clone(),
                },
            )
            .await
        }
        UiAction::Sync => engine.request_sync(&app, None, &by).await,
    };
    let (outcome, message) = match &result {
        Ok(_) => (AuditOutcome::Ok, "from the dashboard".to_owned()),
        Err(e) => (AuditOutcome::Failed, e.to_string()),
    };
    if let Err(e) = engine.audit_finish(entry, outcome, message).await {
        return engine_problem(e);
    }
    match result {
        Ok(message) => {
            info!(user = %by, app = %app, action = action.as_str(), "dashboard action");
            json_response(json!({ "message": message }))
        }
        Err(e) => engine_problem(e),
    }
}

async fn command(engine: &Engine, app: &str, command: Command) -> Result<String, EngineError> {
    let view = engine.rollout_command(app, command).await?;
    Ok(format!(
        "rollout {}: {}",
        view.state.number,
        if view.status.reason.is_empty() {
            format!("{:?}", view.status.summary)
        } else {
            view.status.reason.clone()
        }
    ))
}
