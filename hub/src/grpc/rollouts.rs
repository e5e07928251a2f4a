//! The `Rollouts` service: rollout status and commands, App suspension and forced syncs, and
//! the event history. Reads need any role; commands an operator of the App's Project (or an
//! admin), and are audited; the user is recorded as who paused, resumed, promoted, rolled back,
//! suspended or synced.

use std::sync::Arc;

use gitfleet_core::authz::{Action, Scope};
use gitfleet_proto::v1 as pb;
use gitfleet_proto::v1::rollouts_server::Rollouts;
use tonic::{Request, Response, Status};
use tracing::{Instrument, info, info_span};

use super::auth::{Audited, begin, reader};
use super::required;
use crate::engine::{Engine, RolloutRecord, RolloutView};
use crate::fleet::freeze::{Freeze, FreezeRequest, MAX_REASON, format_selector};
use crate::fleet::rollout::{
    Command, Phase, RolloutKind, RolloutState, Summary, TargetState, WaveProgress,
};
use crate::fleet::window::utc_text;
use crate::model::EventRecord;
use crate::pki::now_unix;

/// How many events `ListEvents` returns when the request names no limit, and at most.
const DEFAULT_EVENTS: usize = 100;
const MAX_EVENTS: usize = 10_000;

#[derive(Debug, Clone)]
pub struct RolloutsService {
    engine: Arc<Engine>,
}

impl RolloutsService {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }

    /// Authorizes and begins auditing a change to `app` (by an operator of its Project, or an
    /// admin).
    async fn begin_app<T>(
        &self,
        request: &Request<T>,
        action: Action,
        app: &str,
    ) -> Result<Audited, Status> {
        let what = format!("App {app:?}");
        let project = self.engine.project_of_app(app);
        begin(
            &self.engine,
            request,
            action,
            format!("App/{app}"),
            Scope::Project {
                what: &what,
                project: &project,
            },
        )
        .await
    }

    /// A command that names only the App, made by the calling user.
    async fn user_command(
        &self,
        request: Request<pb::RolloutRequest>,
        action: Action,
        command: impl FnOnce(String) -> Command,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        let audited = self
            .begin_app(&request, action, &request.get_ref().app)
            .await?;
        let admin = audited.caller.name().to_owned();
        let req = request.into_inner();
        let result = self.command(&admin, &req.app, command(admin.clone())).await;
        audited.finish(result).await
    }

    async fn command(
        &self,
        admin: &str,
        app: &str,
        command: Command,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        let app = required("app", app)?;
        let verb = match &command {
            Command::NewRevision(_) => "new revision",
            Command::Pause { .. } => "pause",
            Command::Resume { .. } => "resume",
            Command::Promote { .. } => "promote",
            Command::Rollback { .. } => "rollback",
            Command::OverrideHolds { .. } => "start --override-freeze",
        };
        let view = self
            .engine
            .rollout_command(app, command)
            .instrument(info_span!("rollout", %admin, app = %app, command = verb))
            .await?;
        info!(%admin, %app, command = verb, rollout = view.state.number, "rollout command");
        Ok(Response::new(rollout_status(view)))
    }

    /// Suspends or resumes an App, audited.
    async fn suspension(
        &self,
        request: Request<pb::AppControlRequest>,
        suspended: bool,
    ) -> Result<Response<pb::AppControlResponse>, Status> {
        let action = if suspended {
            Action::SuspendApp
        } else {
            Action::ResumeApp
        };
        let audited = self
            .begin_app(&request, action, &request.get_ref().app)
            .await?;
        let admin = audited.caller.name().to_owned();
        let req = request.into_inner();
        let result = async {
            Ok(self
                .engine
                .set_suspended(required("app", &req.app)?, suspended, &admin)
                .await?)
        }
        .await;
        let message = audited.finish(result).await?;
        info!(%admin, app = %req.app, suspended, "app suspension");
        Ok(Response::new(pb::AppControlResponse { message }))
    }
}

#[tonic::async_trait]
impl Rollouts for RolloutsService {
    async fn get_rollout(
        &self,
        request: Request<pb::RolloutRequest>,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        reader(&self.engine, &request, Action::RolloutStatus)?;
        let req = request.into_inner();
        let mut view = self.engine.rollout_status(required("app", &req.app)?)?;
        if req.counts_only {
            for wave in &mut view.status.waves {
                wave.targets.clear();
            }
        }
        Ok(Response::new(rollout_status(view)))
    }

    async fn pause_rollout(
        &self,
        request: Request<pb::RolloutRequest>,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        self.user_command(request, Action::PauseRollout, |by| Command::Pause { by })
            .await
    }

    async fn resume_rollout(
        &self,
        request: Request<pb::RolloutRequest>,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        self.user_command(request, Action::ResumeRollout, |by| Command::Resume { by })
            .await
    }

    async fn promote_rollout(
        &self,
        request: Request<pb::RolloutRequest>,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        self.user_command(request, Action::PromoteRollout, |by| Command::Promote {
            by,
        })
        .await
    }

    async fn rollback_rollout(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        let audited = self
            .begin_app(&request, Action::RollbackRollout, &request.get_ref().app)
            .await?;
        let admin = audited.caller.name().to_owned();
        let req = request.into_inner();
        let result = async {
            let app = required("app", &req.app)?;
            let to = if req.to_revision.is_empty() {
                None
            } else {
                Some(self.engine.resolve_revision(app, &req.to_revision).await?)
            };
            self.command(
                &admin,
                app,
                Command::Rollback {
                    to,
                    by: admin.clone(),
                },
            )
            .await
        }
        .await;
        audited.finish(result).await
    }

    async fn rollout_history(
        &self,
        request: Request<pb::RolloutRequest>,
    ) -> Result<Response<pb::RolloutHistoryResponse>, Status> {
        reader(&self.engine, &request, Action::RolloutHistory)?;
        let req = request.into_inner();
        let records = self
            .engine
            .rollout_history(required("app", &req.app)?)
            .await?;
        Ok(Response::new(pb::RolloutHistoryResponse {
            rollouts: records.into_iter().map(rollout_record).collect(),
        }))
    }

    async fn suspend_app(
        &self,
        request: Request<pb::AppControlRequest>,
    ) -> Result<Response<pb::AppControlResponse>, Status> {
        self.suspension(request, true).await
    }

    async fn resume_app(
        &self,
        request: Request<pb::AppControlRequest>,
    ) -> Result<Response<pb::AppControlResponse>, Status> {
        self.suspension(request, false).await
    }

    async fn sync_app(
        &self,
        request: Request<pb::AppControlRequest>,
    ) -> Result<Response<pb::AppControlResponse>, Status> {
        let audited = self
            .begin_app(&request, Action::SyncApp, &request.get_ref().app)
            .await?;
        let admin = audited.caller.name().to_owned();
        let req = request.into_inner();
        let cluster = (!req.cluster.is_empty()).then_some(req.cluster.as_str());
        let result = async {
            Ok(self
                .engine
                .request_sync(required("app", &req.app)?, cluster, &admin)
                .await?)
        }
        .await;
        let message = audited.finish(result).await?;
        info!(%admin, app = %req.app, cluster = %req.cluster, "sync requested");
        Ok(Response::new(pb::AppControlResponse { message }))
    }

    async fn create_freeze(
        &self,
        request: Request<pb::CreateFreezeRequest>,
    ) -> Result<Response<pb::FreezeInfo>, Status> {
        self.create_freeze_call(request).await
    }

    async fn list_freezes(
        &self,
        request: Request<pb::ListFreezesRequest>,
    ) -> Result<Response<pb::ListFreezesResponse>, Status> {
        reader(&self.engine, &request, Action::ListFreezes)?;
        let now = now_unix();
        Ok(Response::new(pb::ListFreezesResponse {
            freezes: self
                .engine
                .freezes()
                .into_iter()
                .map(|f| freeze_info(f, now))
                .collect(),
        }))
    }

    async fn delete_freeze(
        &self,
        request: Request<pb::DeleteFreezeRequest>,
    ) -> Result<Response<pb::DeleteFreezeResponse>, Status> {
        self.delete_freeze_call(request).await
    }

    async fn start_rollout(
        &self,
        request: Request<pb::StartRolloutRequest>,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        self.start_rollout_call(request).await
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        reader(&self.engine, &request, Action::ListEvents)?;
        let req = request.into_inner();
        let limit = match req.limit {
            0 => DEFAULT_EVENTS,
            n => usize::try_from(n).unwrap_or(MAX_EVENTS).min(MAX_EVENTS),
        };
        let events = self
            .engine
            .events(
                (!req.app.is_empty()).then_some(req.app.as_str()),
                (!req.cluster.is_empty()).then_some(req.cluster.as_str()),
                req.after_id,
                limit,
            )
            .await?;
        Ok(Response::new(pb::ListEventsResponse {
            events: events.into_iter().map(event).collect(),
        }))
    }
}

impl RolloutsService {
    /// Authorizes and begins auditing a change to a freeze (admins only).
    async fn begin_freeze<T>(
        &self,
        request: &Request<T>,
        action: Action,
        name: &str,
    ) -> Result<Audited, Status> {
        let what = format!("freeze {name:?}");
        begin(
            &self.engine,
            request,
            action,
            format!("Freeze/{name}"),
            Scope::Fleet { what: &what },
        )
        .await
    }

    pub(super) async fn create_freeze_call(
        &self,
        request: Request<pb::CreateFreezeRequest>,
    ) -> Result<Response<pb::FreezeInfo>, Status> {
        let mut audited = self
            .begin_freeze(&request, Action::CreateFreeze, &request.get_ref().name)
            .await?;
        let admin = audited.caller.name().to_owned();
        let req = request.into_inner();
        let result = async {
            let until = match (req.until_unix, req.for_seconds) {
                (0, 0) => {
                    return Err(Status::invalid_argument(format!(
                        "freeze {:?}: until: required (or for)",
                        req.name
                    )));
                }
                (0, secs) => now_unix().saturating_add(i64::try_from(secs).unwrap_or(i64::MAX)),
                (until, 0) => until,
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "freeze {:?}: until: give until or for, not both",
                        req.name
                    )));
                }
            };
            let freeze = self
                .engine
                .create_freeze(
                    FreezeRequest {
                        name: req.name.clone(),
                        apps: req.apps.clone(),
                        projects: req.projects.clone(),
                        cluster_selector: req.cluster_selector.clone(),
                        until,
                        reason: req.reason.clone(),
                        suspend_self_heal: req.no_self_heal,
                    },
                    &admin,
                )
                .await?;
            Ok(freeze)
        }
        .await;
        if let Ok(f) = &result {
            audited.note(format!(
                "{} until {}{}: {}",
                f.scope_text(),
                utc_text(f.until),
                if f.self_heal { "" } else { ", no self-heal" },
                f.reason
            ));
        }
        let freeze = audited.finish(result).await?;
        info!(%admin, freeze = %freeze.name, "freeze created");
        Ok(Response::new(freeze_info(freeze, now_unix())))
    }

    pub(super) async fn delete_freeze_call(
        &self,
        request: Request<pb::DeleteFreezeRequest>,
    ) -> Result<Response<pb::DeleteFreezeResponse>, Status> {
        let audited = self
            .begin_freeze(&request, Action::DeleteFreeze, &request.get_ref().name)
            .await?;
        let admin = audited.caller.name().to_owned();
        let req = request.into_inner();
        let result = async {
            let name = required("name", &req.name)?;
            Ok(self.engine.delete_freeze(name, &admin).await?)
        }
        .await;
        let deleted = audited.finish(result).await?;
        Ok(Response::new(pb::DeleteFreezeResponse {
            deleted: deleted.is_some(),
        }))
    }

    pub(super) async fn start_rollout_call(
        &self,
        request: Request<pb::StartRolloutRequest>,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        let app = request.get_ref().app.clone();
        let what = format!("App {app:?}");
        let project = self.engine.project_of_app(&app);
        let mut audited = begin(
            &self.engine,
            &request,
            Action::OverrideFreeze,
            format!("App/{app}"),
            Scope::Project {
                what: &what,
                project: &project,
            },
        )
        .await?;
        let admin = audited.caller.name().to_owned();
        let req = request.into_inner();
        let reason = req.reason.trim().to_owned();
        audited.note(format!("reason: {reason}"));
        let result = async {
            if !req.override_freeze {
                return Err(Status::invalid_argument(
                    "override_freeze: required: a rollout starts by itself when its revision                      arrives, and a held one when its holds end; --override-freeze lets it                      through a freeze or sync window now",
                ));
            }
            if reason.is_empty() {
                return Err(Status::invalid_argument(
                    "reason: required with --override-freeze (it is recorded in the audit log                      and the App's events)",
                ));
            }
            if reason.len() > MAX_REASON {
                return Err(Status::invalid_argument(format!(
                    "reason: longer than {MAX_REASON} bytes"
                )));
            }
            self.command(
                &admin,
                &req.app,
                Command::OverrideHolds {
                    by: admin.clone(),
                    reason: reason.clone(),
                },
            )
            .await
        }
        .await;
        audited.finish(result).await
    }
}

fn freeze_info(f: Freeze, now: i64) -> pb::FreezeInfo {
    pb::FreezeInfo {
        active: f.active(now),
        scope: f.scope_text(),
        no_self_heal: !f.self_heal,
        cluster_selector: f
            .cluster_selector
            .as_ref()
            .map(format_selector)
            .unwrap_or_default(),
        name: f.name,
        apps: f.apps,
        projects: f.projects,
        until_unix: f.until,
        reason: f.reason,
        created_by: f.created_by,
        created_at_unix: f.created_at,
    }
}

// --- domain -> wire ---------------------------------------------------------------------------

fn kind_name(state: &RolloutState) -> (&'static str, String, String) {
    match &state.kind {
        RolloutKind::Update => ("update", String::new(), String::new()),
        RolloutKind::Rollback { from, by, .. } => ("rollback", from.commit.clone(), by.clone()),
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub(super) fn rollout_status(view: RolloutView) -> pb::RolloutStatus {
    let RolloutView {
        app,
        state,
        status,
        suspended,
        git_revision,
    } = view;
    let (kind, from, by) = kind_name(&state);
    let summary = match status.summary {
        Summary::Progressing => "progressing",
        Summary::Paused => "paused",
        Summary::RollingBack => "rollingBack",
        Summary::Complete => "complete",
        Summary::RolledBack => "rolledBack",
        Summary::Held => "held",
    };
    let paused_message = match &state.phase {
        Phase::Paused { message, .. } => message.clone(),
        _ => String::new(),
    };
    pb::RolloutStatus {
        app,
        number: state.number,
        kind: kind.into(),
        summary: summary.into(),
        reason: status.reason,
        revision: state.revision.commit.clone(),
        git_ref: state.revision.git_ref.clone(),
        stable_revision: state
            .stable
            .as_ref()
            .map(|s| s.commit.clone())
            .unwrap_or_default(),
        rolled_back_from: from,
        rollback_by: by,
        started_at_unix: state.started_at,
        finished_at_unix: state.finished_at.unwrap_or(0),
        current_wave: count(state.wave),
        waves: status
            .waves
            .into_iter()
            .map(|w| pb::RolloutWave {
                name: w.name,
                progress: match w.progress {
                    WaveProgress::Done => "done",
                    WaveProgress::Current => "current",
                    WaveProgress::Waiting => "waiting",
                }
                .into(),
                total: count(w.total),
                updated: count(w.updated),
                healthy: count(w.healthy),
                failed: count(w.failed),
                max_unavailable: count(w.max_unavailable),
                targets: w
                    .targets
                    .into_iter()
                    .map(|t| pb::RolloutTarget {
                        cluster: t.cluster,
                        state: match t.state {
                            TargetState::Pending => "pending",
                            TargetState::Updating => "updating",
                            TargetState::Healthy => "healthy",
                            TargetState::Failed => "failed",
                            TargetState::Tolerated => "tolerated",
                            TargetState::Disconnected => "disconnected",
                            TargetState::Held => "held",
                        }
                        .into(),
                        detail: t.detail,
                    })
                    .collect(),
            })
            .collect(),
        next_check_at_unix: status.next_check_at.unwrap_or(0),
        suspended,
        git_revision: git_revision.unwrap_or_default(),
        paused_message,
    }
}

fn rollout_record(r: RolloutRecord) -> pb::RolloutRecord {
    let (kind, from, by) = kind_name(&r.state);
    pb::RolloutRecord {
        number: r.state.number,
        kind: kind.into(),
        revision: r.state.revision.commit.clone(),
        git_ref: r.state.revision.git_ref.clone(),
        rolled_back_from: from,
        rollback_by: by,
        outcome: r.outcome.into(),
        started_at_unix: r.state.started_at,
        finished_at_unix: r.state.finished_at.unwrap_or(0),
        clusters: count(r.state.assigned.len()),
    }
}

pub(super) fn event(e: EventRecord) -> pb::Event {
    pb::Event {
        id: e.id,
        at_unix: e.at_unix,
        app: e.app,
        cluster: e.cluster,
        rollout: e.rollout,
        kind: e.kind,
        message: e.message,
        by: e.by,
    }
}
