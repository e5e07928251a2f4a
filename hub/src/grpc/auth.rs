//! Every admin call passes here first: the caller's verified certificate → its user's record
//! (from memory: revoked, replaced or expired certificates are refused on their next call) →
//! the role's decision (`gitfleet_core::authz`). A mutating call is written to the audit log
//! before it runs and finished with its outcome, durably, before it is answered; a refused one
//! is recorded as denied.
//!
//! A caller with no client certificate at all is refused without an audit entry: there is no
//! one to attribute it to, and anyone may open a connection (the log and the disk are not theirs
//! to fill).

use std::sync::Arc;

use gitfleet_core::authz::{Action, Scope, Subject, authorize};
use gitfleet_core::users::{AuditOutcome, UserRecord};
use tonic::{Code, Request, Status};
use tracing::warn;

use super::{peer, peer_key};
use crate::engine::{AuditEntry, Engine};
use crate::pki::{CertKey, Peer};

/// An authenticated caller of the admin API.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: UserRecord,
    /// The certificate it called with.
    pub cert: CertKey,
}

impl Caller {
    pub fn name(&self) -> &str {
        &self.user.name
    }

    pub fn subject(&self) -> Subject {
        self.user.subject()
    }
}

/// Who a request claims to be, from its verified certificate: a user (and the certificate's
/// key), or why not.
enum Claim {
    User(String, CertKey),
    /// Refused before any user record is read; `who` is set when there is someone to record.
    Refused {
        who: Option<String>,
        status: Status,
    },
}

fn claim<T>(request: &Request<T>) -> Claim {
    match peer(request) {
        Ok(Peer::Admin(name)) => match peer_key(request) {
            Ok(key) => Claim::User(name, key),
            Err(status) => Claim::Refused {
                who: Some(name),
                status,
            },
        },
        Ok(Peer::Cluster(name)) => {
            warn!(cluster = %name, "cluster certificate used to call the admin API; refused");
            Claim::Refused {
                who: Some(format!("cluster/{name}")),
                status: Status::permission_denied(format!(
                    "cluster {name:?} may not call the admin API; a user's certificate is required"
                )),
            }
        }
        Err(status) => Claim::Refused { who: None, status },
    }
}

/// The caller, if its certificate speaks for a user whose record accepts it now.
fn authenticate(engine: &Engine, claim: Claim) -> Result<Caller, (Option<String>, Status)> {
    match claim {
        Claim::User(name, cert) => match engine.authenticate(&name, &cert) {
            Ok(user) => Ok(Caller { user, cert }),
            Err(problem) => {
                warn!(user = %name, %problem, "admin call refused");
                Err((Some(name), Status::unauthenticated(problem.to_string())))
            }
        },
        Claim::Refused { who, status } => Err((who, status)),
    }
}

/// A call that changes nothing (not audited): the caller, if its role allows `action` at all.
pub fn reader<T>(engine: &Engine, request: &Request<T>, action: Action) -> Result<Caller, Status> {
    let caller = authenticate(engine, claim(request)).map_err(|(_, status)| status)?;
    authorize(&caller.subject(), action, Scope::Any)
        .map_err(|denied| Status::permission_denied(denied.to_string()))?;
    Ok(caller)
}

/// A mutating call, audited: authenticated, authorized for `scope`, and recorded as begun;
/// [`Audited::finish`] records the outcome. A refusal is recorded (durably) before it is
/// answered.
pub async fn begin<T>(
    engine: &Arc<Engine>,
    request: &Request<T>,
    action: Action,
    target: String,
    scope: Scope<'_>,
) -> Result<Audited, Status> {
    let refuse = async |who: Option<String>, status: Status, target: String| -> Status {
        let Some(who) = who else {
            return status;
        };
        match engine
            .audit_refused(&who, action, target, status.message().to_owned())
            .await
        {
            Ok(()) => status,
            Err(e) => Status::from(e),
        }
    };
    let caller = match authenticate(engine, claim(request)) {
        Ok(caller) => caller,
        Err((who, status)) => return Err(refuse(who, status, target).await),
    };
    if let Err(denied) = authorize(&caller.subject(), action, scope) {
        let status = Status::permission_denied(denied.to_string());
        return Err(refuse(Some(caller.name().to_owned()), status, target).await);
    }
    let entry = engine.audit_begin(caller.name(), action, target)?;
    Ok(Audited {
        engine: Arc::clone(engine),
        caller,
        entry,
        note: String::new(),
    })
}

/// An audited call under way.
#[derive(Debug)]
pub struct Audited {
    engine: Arc<Engine>,
    pub caller: Caller,
    entry: AuditEntry,
    /// The entry's message when the call succeeds (why it was made: an override's reason).
    note: String,
}

impl Audited {
    /// Names what the call turned out to be about.
    pub fn set_target(&mut self, target: String) {
        self.entry.set_target(target);
    }

    /// What the entry says when the call succeeds (a failure says why it failed).
    pub fn note(&mut self, note: String) {
        self.note = note;
    }

    /// Records the call's outcome durably, then hands it back to be answered (or, if the
    /// audit entry cannot be made durable, an error instead: no answer leaves unaudited).
    pub async fn finish<R>(self, result: Result<R, Status>) -> Result<R, Status> {
        let (outcome, message) = match &result {
            Ok(_) => (AuditOutcome::Ok, self.note),
            Err(s) if matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated) => {
                (AuditOutcome::Denied, s.message().to_owned())
            }
            Err(s) => (AuditOutcome::Failed, s.message().to_owned()),
        };
        self.engine
            .audit_finish(self.entry, outcome, message)
            .await?;
        result
    }
}
