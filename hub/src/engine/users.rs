//! The admin API's users: the hub's own first-start credential as the user `admin`, personal
//! credentials issued with a role, revocation, and the check of every admin call's certificate
//! against its user's record (from memory).

use std::time::Duration;

use gitfleet_core::authz::{DEFAULT_PROJECT, Role};
use gitfleet_core::users::{BOOTSTRAP_ADMIN, MAX_USER_TTL, UserProblem, UserRecord};
use tracing::info;

use super::{Engine, EngineError};
use crate::pki::{CertKey, KeyedCert, cert_key_pem, now_unix};
use crate::resources::{App, dns1123_label_problem};

/// What `user create` asks for.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub name: String,
    pub role: Role,
    pub projects: Vec<String>,
    pub ttl: Duration,
}

/// The Project an App document puts the App in (`spec.project`, or `default`).
pub fn app_project(app: &App) -> String {
    app.spec.project_name().to_owned()
}

impl Engine {
    /// The Project a stored App is in (`default` for one that does not exist: a call about it
    /// then fails as not found, for whoever may act in `default`).
    pub fn project_of_app(&self, name: &str) -> String {
        match self.store.resource(crate::resources::Kind::App, name) {
            Ok(Some(crate::resources::Resource::App(app))) => app_project(&app),
            _ => DEFAULT_PROJECT.to_owned(),
        }
    }

    /// Makes the hub's own credential (`DATA/pki/admin.crt`, the one `admin.gitfleetconfig`
    /// carries) the user `admin`: created on the first start of a hub that has no such user
    /// (a new install, or one from before users existed), and moved to the hub's renewed
    /// certificate when the hub renewed it. A revoked `admin`, or one an admin created again,
    /// is left as it is.
    pub(super) async fn bootstrap_admin(&self) -> Result<(), EngineError> {
        let key = cert_key_pem(&self.pki.admin().cert_pem)
            .map_err(|e| EngineError::Invalid(format!("the hub's admin certificate: {e}")))?;
        let now = now_unix();
        let changed = self.store.change_users(|users| {
            let record = match users.get(BOOTSTRAP_ADMIN) {
                None => Some(UserRecord {
                    name: BOOTSTRAP_ADMIN.to_owned(),
                    role: Role::Admin,
                    projects: Vec::new(),
                    key_fingerprint: key.fingerprint.clone(),
                    expires_at_unix: key.not_after_unix,
                    created_at_unix: now,
                    created_by: "hub".to_owned(),
                    revoked: false,
                    revoked_by: String::new(),
                    revoked_at_unix: 0,
                    bootstrap: true,
                }),
                Some(u) if u.bootstrap && !u.revoked && u.key_fingerprint != key.fingerprint => {
                    Some(UserRecord {
                        key_fingerprint: key.fingerprint.clone(),
                        expires_at_unix: key.not_after_unix,
                        ..u.clone()
                    })
                }
                Some(_) => None,
            };
            let changed = record.is_some();
            Ok::<_, EngineError>((record, changed))
        })?;
        if changed {
            self.store.flush().await?;
            info!(
                user = BOOTSTRAP_ADMIN,
                "the hub's admin credential is the user admin"
            );
        }
        Ok(())
    }

    /// The user a verified admin certificate speaks for, if its record accepts it now. From
    /// memory: asked on every admin call.
    pub fn authenticate(&self, name: &str, key: &CertKey) -> Result<UserRecord, UserProblem> {
        let user = self
            .store
            .user(name)
            .ok_or_else(|| UserProblem::Unknown(name.to_owned()))?;
        user.check(&key.fingerprint, now_unix())?;
        Ok(user)
    }

    /// Issues a user's credential and records the user, durably, before answering. A name in
    /// use by an active (or expired, unrevoked) user is refused; a revoked user's name may be
    /// given again: the new record binds the new certificate, so the old one stays refused.
    pub async fn create_user(
        &self,
        spec: NewUser,
        by: &str,
    ) -> Result<(UserRecord, KeyedCert), EngineError> {
        if let Some(problem) = dns1123_label_problem(&spec.name) {
            return Err(EngineError::Invalid(format!(
                "user name {:?} {problem}",
                spec.name
            )));
        }
        if !spec.projects.is_empty() && spec.role != Role::Operator {
            return Err(EngineError::Invalid(format!(
                "projects: only operators work in Projects; a {} is not given any",
                spec.role
            )));
        }
        for p in &spec.projects {
            if let Some(problem) = dns1123_label_problem(p) {
                return Err(EngineError::Invalid(format!("project {p:?} {problem}")));
            }
        }
        if spec.ttl.is_zero() || spec.ttl > MAX_USER_TTL {
            return Err(EngineError::Invalid(format!(
                "ttl {} is out of range: a user's certificate lives from 1s to {}",
                days(spec.ttl),
                days(MAX_USER_TTL)
            )));
        }
        let mut projects = spec.projects.clone();
        projects.sort();
        projects.dedup();
        let issued = self.pki.issue_user(&spec.name, spec.ttl)?;
        let now = now_unix();
        let record = UserRecord {
            name: spec.name.clone(),
            role: spec.role,
            projects,
            key_fingerprint: issued.key.fingerprint.clone(),
            expires_at_unix: issued.key.not_after_unix,
            created_at_unix: now,
            created_by: by.to_owned(),
            revoked: false,
            revoked_by: String::new(),
            revoked_at_unix: 0,
            bootstrap: false,
        };
        self.store
            .change_users(|users| match users.get(&spec.name) {
                Some(u) if !u.revoked => Err(EngineError::AlreadyExists(format!(
                    "user {:?} exists ({}); revoke it first to give the name a new credential",
                    spec.name,
                    u.status(now)
                ))),
                _ => Ok((Some(record.clone()), ())),
            })?;
        self.store.flush().await?;
        Ok((record, issued.credential))
    }

    /// Every user, revoked ones too, by name.
    pub fn users(&self) -> Vec<UserRecord> {
        self.store.users().into_values().collect()
    }

    /// Revokes a user: its certificate is refused from its next call on. False when no
    /// unrevoked user has the name; the last active admin cannot be revoked.
    pub async fn revoke_user(&self, name: &str, by: &str) -> Result<bool, EngineError> {
        let now = now_unix();
        let revoked = self.store.change_users(|users| {
            let Some(user) = users.get(name).filter(|u| !u.revoked) else {
                return Ok((None, false));
            };
            let other_admins = users
                .values()
                .filter(|u| u.name != name && u.is_active_admin(now))
                .count();
            if user.is_active_admin(now) && other_admins == 0 {
                return Err(EngineError::FailedPrecondition(format!(
                    "user {name:?} is the last active admin; create another admin before revoking it"
                )));
            }
            let record = UserRecord {
                revoked: true,
                revoked_by: by.to_owned(),
                revoked_at_unix: now,
                ..user.clone()
            };
            Ok((Some(record), true))
        })?;
        if revoked {
            self.store.flush().await?;
        }
        Ok(revoked)
    }
}

/// A duration in whole days when it is one (`90d`), else as humantime writes it.
fn days(d: Duration) -> String {
    const DAY: u64 = 24 * 3600;
    if d.as_secs().is_multiple_of(DAY) && !d.is_zero() {
        format!("{}d", d.as_secs() / DAY)
    } else {
        humantime::format_duration(d).to_string()
    }
}
