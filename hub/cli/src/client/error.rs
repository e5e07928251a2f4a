//! Failures talking to a hub, each worded to say what to do next.

use std::error::Error as StdError;

use tonic::Code;

const CHECK_CONTEXT: &str = "check --context / GITFLEET_CONTEXT and --config / GITFLEET_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("context {context:?} has an invalid hub address {server:?}: {reason}")]
    BadAddress {
        context: String,
        server: String,
        reason: String,
    },
    #[error(
        "context {context:?} has unusable {field}: {reason}; re-import the hub's admin.gitfleetconfig with `gitfleet config import`"
    )]
    BadCredentials {
        context: String,
        field: &'static str,
        reason: String,
    },
    #[error(
        "cannot reach the hub at {server} ({reason}); is the hub running at {server}? {CHECK_CONTEXT}"
    )]
    Unreachable { server: String, reason: String },
    /// A replica of a highly available hub answered, but no replica leads at the moment (one
    /// just went away): nothing was done, and the call can be made again in a few seconds.
    #[error(
        "the hub at {server} has no leading replica right now ({message}); nothing was changed: run the command again in a few seconds"
    )]
    NoLeader { server: String, message: String },
    #[error(
        "certificate rejected talking to {server}: {reason}; the context's CA and admin certificate must come from this hub's admin.gitfleetconfig ({CHECK_CONTEXT})"
    )]
    Tls { server: String, reason: String },
    #[error(
        "the hub at {server} refused this credential: {message}; admin commands need the admin certificate from the hub's admin.gitfleetconfig, not a spoke's"
    )]
    PermissionDenied { server: String, message: String },
    /// The credential is a user's, but its role does not allow the call (the hub's message
    /// says which role would), or the user was revoked or replaced.
    #[error("{message}")]
    Forbidden { message: String },
    /// The hub rejected what was sent (e.g. an invalid resource); its message names the problem.
    #[error("{message}")]
    InvalidArgument { message: String },
    #[error("{message}")]
    NotFound { message: String },
    #[error("the hub at {server} did not answer in time: {message}")]
    Timeout { server: String, message: String },
    #[error(
        "the hub at {server} does not support this call ({message}); is the hub older than this gitfleet CLI?"
    )]
    Unimplemented { server: String, message: String },
    #[error("the hub at {server} failed the request ({code:?}): {message}")]
    Rpc {
        server: String,
        code: Code,
        message: String,
    },
}

impl ClientError {
    /// Whether a `--watch` stream that failed so is worth opening again (after a pause): the
    /// hub was unreachable, had no leader, or the connection broke; not when the hub refused
    /// or did not know what was asked.
    pub fn reconnectable(&self) -> bool {
        match self {
            ClientError::Unreachable { .. }
            | ClientError::NoLeader { .. }
            | ClientError::Timeout { .. } => true,
            ClientError::Rpc { code, .. } => matches!(
                code,
                Code::Cancelled
                    | Code::Unknown
                    | Code::Aborted
                    | Code::Internal
                    | Code::ResourceExhausted
            ),
            ClientError::BadAddress { .. }
            | ClientError::BadCredentials { .. }
            | ClientError::Tls { .. }
            | ClientError::PermissionDenied { .. }
            | ClientError::Forbidden { .. }
            | ClientError::InvalidArgument { .. }
            | ClientError::NotFound { .. }
            | ClientError::Unimplemented { .. } => false,
        }
    }

    /// A failure to dial: refused connection, DNS, timeout, or a TLS handshake failure.
    pub(crate) fn from_transport(server: &str, error: &tonic::transport::Error) -> ClientError {
        let reason = chain(error)
            .trim_start_matches("transport error: ")
            .to_owned();
        if is_tls_failure(error) {
            ClientError::Tls {
                server: server.to_owned(),
                reason: explain_tls(reason),
            }
        } else {
            ClientError::Unreachable {
                server: server.to_owned(),
                reason,
            }
        }
    }

    pub(crate) fn from_status(server: &str, status: tonic::Status) -> ClientError {
        let server = server.to_owned();
        let mut message = status.message().to_owned();
        if let Some(source) = status.source() {
            let detail = chain(source);
            if detail.contains(&message) {
                message = detail;
            } else if !message.contains(&detail) {
                message = format!("{message}: {detail}");
            }
        }
        let tls = status.source().is_some_and(is_tls_failure) || looks_like_tls(status.message());
        match status.code() {
            Code::InvalidArgument | Code::FailedPrecondition | Code::AlreadyExists => {
                ClientError::InvalidArgument { message }
            }
            Code::NotFound => ClientError::NotFound { message },
            Code::PermissionDenied if message.starts_with("permission denied: ") => {
                ClientError::Forbidden { message }
            }
            Code::Unauthenticated
                if message.starts_with("user ")
                    || message.starts_with("no user named ")
                    || message.contains(" of user ") =>
            {
                ClientError::Forbidden { message }
            }
            Code::PermissionDenied | Code::Unauthenticated => {
                ClientError::PermissionDenied { server, message }
            }
            Code::DeadlineExceeded => ClientError::Timeout { server, message },
            Code::Unimplemented => ClientError::Unimplemented { server, message },
            _ if tls => ClientError::Tls {
                server,
                reason: explain_tls(message),
            },
            // The hub's replicas say so when none leads (see the hub's grpc::forward).
            Code::Unavailable
                if message.starts_with("no hub replica leads right now")
                    || message.starts_with("cannot reach the leading replica") =>
            {
                ClientError::NoLeader { server, message }
            }
            Code::Unavailable => ClientError::Unreachable {
                server,
                reason: message,
            },
            code => ClientError::Rpc {
                server,
                code,
                message,
            },
        }
    }
}

/// An error and its sources as one line, without repeating a message a wrapper already quoted.
pub(crate) use gitfleet_support::error_chain as chain;

fn is_tls_failure(error: &(dyn StdError + 'static)) -> bool {
    let mut next: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        // io::Error::source skips the error it wraps, so look inside by hand: tokio-rustls
        // reports handshake failures as io::Error(rustls::Error).
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && (inner.downcast_ref::<rustls::Error>().is_some()
                || looks_like_tls(&inner.to_string()))
        {
            return true;
        }
        if looks_like_tls(&e.to_string()) {
            return true;
        }
        next = e.source();
    }
    false
}

/// Says in words which side refused which certificate, keeping the technical reason.
fn explain_tls(reason: String) -> String {
    let reason = reason.trim_start_matches("transport error: ").to_owned();
    let lower = reason.to_ascii_lowercase();
    let which = if lower.contains("notvalidforname") || lower.contains("not valid for name") {
        "the hub's certificate does not name this address (set tls-server-name in the context)"
    } else if lower.contains("expired") {
        "a certificate has expired"
    } else if lower.contains("unknownissuer") {
        "the hub's certificate is not signed by this context's CA"
    } else if lower.contains("received fatal alert") {
        "the hub does not trust this admin certificate"
    } else {
        return reason;
    };
    format!("{which} ({reason})")
}

fn looks_like_tls(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    ["certificate", "received fatal alert", "handshake", "tls"]
        .iter()
        .any(|needle| text.contains(needle))
}
