//! The gRPC adapter of the hub–spoke link: one `Link.Session` stream over mutual TLS, and the
//! only place that converts between the wire format and the spoke's domain types.
//!
//! The link keeps two promises across reconnects and restarts: the desired state it publishes
//! is always a consistent generation (deltas apply only on their base; otherwise it says Hello
//! again), and no status report is lost (each is numbered and persisted before it is sent, and
//! kept until the hub acks it).
//!
//! - `session`: the tonic session (connect, stream, heartbeats, renewal, failover between hub
//!   addresses with [`crate::hubs`]);
//! - `state`: the durable state it serves (desired state and outbox, on disk);
//! - `convert`: wire <-> domain.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use tonic::transport::{Certificate, ClientTlsConfig};

use crate::hubs::{Candidate, HubUrl, candidates};

use crate::store::StoreError;

mod convert;
mod session;
mod state;

pub use crate::hubs::backoff;
pub use convert::{
    desired_from_proto, diff_result_to_proto, health_to_proto, status_to_proto, sync_to_proto,
    target_from_proto,
};
pub use session::run;
pub use state::{LinkConfig, LinkState};

/// What answers the hub's `DiffRequest`s (`gitfleet diff --live`): the agent, which renders
/// and dry-run applies a Target (see `agent::diff`).
pub trait Differ: Send + Sync + 'static {
    fn diff(
        &self,
        spec: crate::model::TargetSpec,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = crate::sync::diff::TargetDiff> + Send>>;
}

/// Where the agent puts its [`Differ`] once it runs, and the session finds it: the link starts
/// before the agent, and a spoke without an agent (a test's) answers every request with an
/// error.
#[derive(Clone, Default)]
pub struct DiffSlot(std::sync::Arc<std::sync::OnceLock<std::sync::Arc<dyn Differ>>>);

impl DiffSlot {
    /// Sets the differ; a slot set already keeps its first.
    pub fn set(&self, differ: std::sync::Arc<dyn Differ>) {
        let _ = self.0.set(differ);
    }

    pub fn get(&self) -> Option<std::sync::Arc<dyn Differ>> {
        self.0.get().cloned()
    }
}

impl std::fmt::Debug for DiffSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiffSlot")
            .field("set", &self.0.get().is_some())
            .finish()
    }
}

pub use gitfleet_support::install_crypto_provider;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("hub URL {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("connecting to the hub: {0}")]
    Connect(String),
    #[error("the hub ended the stream: {0}")]
    Stream(String),
}

/// The candidates of `urls` now, names resolved through the system resolver. A name that does
/// not resolve stays a candidate as it is (dialling it reports the error).
pub async fn resolve(urls: &[HubUrl]) -> Vec<Candidate> {
    let mut resolved: HashMap<&str, Vec<SocketAddr>> = HashMap::new();
    for url in urls {
        let Some((host, port)) = url.to_resolve() else {
            continue;
        };
        match tokio::net::lookup_host((host, port)).await {
            Ok(addrs) => {
                resolved.insert(url.url.as_str(), addrs.collect());
            }
            Err(error) => tracing::debug!(url = %url.url, %error, "cannot resolve a hub address"),
        }
    }
    candidates(urls, |url| {
        resolved.get(url.url.as_str()).cloned().unwrap_or_default()
    })
}

/// TLS towards `candidate`: the hub's certificate checked against the configured name even
/// when the dial goes to one of its resolved addresses.
pub(crate) fn tls_for(candidate: &Candidate, ca_pem: &str) -> ClientTlsConfig {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if candidate.dial == candidate.configured {
        tls
    } else {
        tls.domain_name(candidate.server_name.clone())
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
