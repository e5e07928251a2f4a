//! The `Users` service (personal credentials with a role: create, list, revoke, whoami) and the
//! `Audit` service (reading the audit log). Admin role only, but for `Whoami`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use gitfleet_core::authz::{Action, Role, Scope};
use gitfleet_core::users::{AuditRecord, DEFAULT_USER_TTL, UserRecord};
use gitfleet_proto::v1 as pb;
use gitfleet_proto::v1::audit_server::Audit;
use gitfleet_proto::v1::users_server::Users;
use tonic::{Request, Response, Status};
use tracing::info;

use super::auth::{begin, reader};
use super::required;
use crate::engine::{Engine, NewUser};
use crate::pki::now_unix;

/// How many audit entries `ListAudit` returns when the request names no limit, and at most.
const DEFAULT_AUDIT: usize = 100;
const MAX_AUDIT: usize = 10_000;

#[derive(Debug, Clone)]
pub struct UsersService {
    engine: Arc<Engine>,
    /// The web dashboard's URL, once the HTTP listener is bound (unset: no dashboard).
    dashboard_url: Arc<OnceLock<String>>,
}

impl UsersService {
    pub fn new(engine: Arc<Engine>, dashboard_url: Arc<OnceLock<String>>) -> Self {
        Self {
            engine,
            dashboard_url,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuditService {
    engine: Arc<Engine>,
}

impl AuditService {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

#[tonic::async_trait]
impl Users for UsersService {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let target = format!("user/{}", request.get_ref().name);
        let audited = begin(
            &self.engine,
            &request,
            Action::CreateUser,
            target,
            Scope::Any,
        )
        .await?;
        let admin = audited.caller.name().to_owned();
        let req = request.into_inner();
        let result = async {
            let name = required("name", &req.name)?;
            let role = Role::parse(&req.role).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "role {:?} is not one of admin, operator, viewer",
                    req.role
                ))
            })?;
            let ttl = match req.ttl_seconds {
                0 => DEFAULT_USER_TTL,
                n => Duration::from_secs(n),
            };
            let spec = NewUser {
                name: name.to_owned(),
                role,
                projects: req.projects.clone(),
                ttl,
            };
            Ok(self.engine.create_user(spec, &admin).await?)
        }
        .await;
        let (record, credential) = audited.finish(result).await?;
        info!(%admin, user = %record.name, role = %record.role, "user created");
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(user_info(&record, now_unix())),
            certificate_pem: credential.cert_pem,
            private_key_pem: credential.key_pem,
            ca_pem: self.engine.ca_pem().to_owned(),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        reader(&self.engine, &request, Action::ListUsers)?;
        let now = now_unix();
        Ok(Response::new(pb::ListUsersResponse {
            users: self
                .engine
                .users()
                .iter()
                .map(|u| user_info(u, now))
                .collect(),
        }))
    }

    async fn revoke_user(
        &self,
        request: Request<pb::RevokeUserRequest>,
    ) -> Result<Response<pb::RevokeUserResponse>, Status> {
        let what = format!("user {:?}", request.get_ref().name);
        let target = format!("user/{}", request.get_ref().name);
        let audited = begin(
            &self.engine,
            &request,
            Action::RevokeUser,
            target,
            Scope::Fleet { what: &what },
        )
        .await?;
        let admin = audited.caller.name().to_owned();
        let req = request.into_inner();
        let result = async {
            Ok(self
                .engine
                .revoke_user(required("name", &req.name)?, &admin)
                .await?)
        }
        .await;
        let revoked = audited.finish(result).await?;
        info!(%admin, user = %req.name, revoked, "revoke user");
        Ok(Response::new(pb::RevokeUserResponse { revoked }))
    }

    async fn whoami(
        &self,
        request: Request<pb::WhoamiRequest>,
    ) -> Result<Response<pb::WhoamiResponse>, Status> {
        let caller = reader(&self.engine, &request, Action::Whoami)?;
        let projects = match caller.user.role {
            Role::Operator => caller.subject().operated_projects(),
            Role::Admin | Role::Viewer => Vec::new(),
        };
        Ok(Response::new(pb::WhoamiResponse {
            name: caller.user.name.clone(),
            role: caller.user.role.to_string(),
            projects,
            certificate_expires_unix: caller.cert.not_after_unix,
            hub_version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }

    async fn create_dashboard_signin(
        &self,
        request: Request<pb::CreateDashboardSigninRequest>,
    ) -> Result<Response<pb::CreateDashboardSigninResponse>, Status> {
        let audited = begin(
            &self.engine,
            &request,
            Action::DashboardSignin,
            "dashboard".to_owned(),
            Scope::Any,
        )
        .await?;
        let user = audited.caller.user.clone();
        let result = async {
            let url = self.dashboard_url.get().ok_or_else(|| {
                Status::failed_precondition(
                    "this hub serves no dashboard: it has no HTTP listener (--http-listen)",
                )
            })?;
            let (token, link) = self.engine.create_dashboard_signin(&user).await?;
            Ok(pb::CreateDashboardSigninResponse {
                url: format!("{url}/signin?token={token}"),
                expires_at_unix: link.expires_at_unix,
            })
        }
        .await;
        let answer = audited.finish(result).await?;
        info!(user = %user.name, "dashboard sign-in link issued");
        Ok(Response::new(answer))
    }
}

#[tonic::async_trait]
impl Audit for AuditService {
    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        reader(&self.engine, &request, Action::ListAudit)?;
        let req = request.into_inner();
        let limit = match req.limit {
            0 => DEFAULT_AUDIT,
            n => usize::try_from(n).unwrap_or(MAX_AUDIT).min(MAX_AUDIT),
        };
        let entries = self
            .engine
            .audit_log(
                (!req.user.is_empty()).then_some(req.user.as_str()),
                req.since_unix,
                limit,
            )
            .await?;
        Ok(Response::new(pb::ListAuditResponse {
            entries: entries.into_iter().map(audit_entry).collect(),
        }))
    }
}

// --- domain -> wire ---------------------------------------------------------------------------

fn user_info(u: &UserRecord, now: i64) -> pb::UserInfo {
    pb::UserInfo {
        name: u.name.clone(),
        role: u.role.to_string(),
        projects: u.projects.clone(),
        expires_at_unix: u.expires_at_unix,
        status: u.status(now).to_owned(),
        created_by: u.created_by.clone(),
        created_at_unix: u.created_at_unix,
        revoked_by: u.revoked_by.clone(),
        revoked_at_unix: u.revoked_at_unix,
    }
}

fn audit_entry(e: AuditRecord) -> pb::AuditEntry {
    pb::AuditEntry {
        id: e.id,
        at_unix: e.at_unix,
        user: e.user,
        action: e.action,
        target: e.target,
        outcome: e.outcome.as_str().to_owned(),
        message: e.message,
    }
}
