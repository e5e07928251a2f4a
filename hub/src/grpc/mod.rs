//! The gRPC adapter: tonic services for spokes (Registration, Link) and people (Admin, Access,
//! Rollouts, Users, Audit; every call through `auth`). The caller's identity always comes from
//! its verified client certificate, never from a message: the one the TLS layer verified, or,
//! for a call another replica handed over (`forward`), the one that replica verified.

use std::net::SocketAddr;

use tonic::{Request, Status};
use tracing::warn;

use crate::engine::EngineError;
use crate::pki::{CertKey, Peer, cert_key, identify};

pub mod access;
pub mod admin;
pub mod auth;
pub mod convert;
pub mod forward;
pub mod link;
pub mod live_diff;
pub mod rate_limit;
pub mod registration;
pub mod rollouts;
pub mod users;
pub mod watch;

/// Who is calling, from the client certificate the TLS layer verified against the hub's CA.
pub fn peer<T>(request: &Request<T>) -> Result<Peer, Status> {
    identify(peer_leaf(request)?.as_ref()).map_err(|e| Status::unauthenticated(e.to_string()))
}

/// The key of the caller's (verified) client certificate.
pub fn peer_key<T>(request: &Request<T>) -> Result<CertKey, Status> {
    cert_key(peer_leaf(request)?.as_ref()).map_err(|e| Status::unauthenticated(e.to_string()))
}

/// The caller's verified leaf certificate.
fn peer_leaf<T>(request: &Request<T>) -> Result<tonic::transport::CertificateDer<'static>, Status> {
    let missing = || Status::unauthenticated("a client certificate issued by this hub is required");
    // Only `forward` inserts this, and only for a call a replica handed over: the replica's own
    // certificate then stands for nobody, the caller's for the caller.
    if let Some(forwarded) = request.extensions().get::<forward::Forwarded>() {
        return forwarded.client_cert.clone().ok_or_else(missing);
    }
    let certs = request.peer_certs().ok_or_else(missing)?;
    certs.first().cloned().ok_or_else(missing)
}

/// Where the caller connected from: for a call another replica handed over, the address that
/// replica was called from.
pub fn remote_addr<T>(request: &Request<T>) -> Option<SocketAddr> {
    match request.extensions().get::<forward::Forwarded>() {
        Some(forwarded) => forwarded.remote_addr,
        None => request.remote_addr(),
    }
}

/// The cluster a spoke proved itself to be; anything else is refused.
pub fn cluster_peer<T>(request: &Request<T>) -> Result<String, Status> {
    match peer(request)? {
        Peer::Cluster(name) => Ok(name),
        Peer::Admin(name) => {
            warn!(admin = %name, "admin certificate used on the spoke link");
            Err(Status::permission_denied(
                "only cluster certificates may use the spoke link",
            ))
        }
    }
}

/// `value`, or INVALID_ARGUMENT naming `field` when it is empty.
pub fn required<'a>(field: &str, value: &'a str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!("{field} is required")))
    } else {
        Ok(value)
    }
}

impl From<EngineError> for Status {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid(m) => Status::invalid_argument(m),
            EngineError::NotFound(m) => Status::not_found(m),
            EngineError::Unauthenticated(m) => Status::unauthenticated(m),
            EngineError::PermissionDenied(m) => Status::permission_denied(m),
            EngineError::AlreadyExists(m) => Status::already_exists(m),
            EngineError::FailedPrecondition(m) => Status::failed_precondition(m),
            e @ (EngineError::Store(_) | EngineError::Pki(_)) => {
                warn!(error = %e, "internal error");
                Status::internal(e.to_string())
            }
        }
    }
}
