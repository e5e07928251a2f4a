//! The gRPC adapter of the hub–spoke link: one `Link.Session` stream over mutual TLS, and the
//! only place that converts between the wire format and the spoke's domain types.
//!
//! The link keeps two promises across reconnects and restarts: the desired state it publishes
//! is always a consistent generation (deltas apply only on their base; otherwise it says Hello
//! again), and no status report is lost (each is numbered and persisted before it is sent, and
//! kept until the hub acks it).
//!
//! - `session`: the tonic session (connect, stream, heartbeats, renewal, backoff);
//! - `state`: the durable state it serves (desired state and outbox, on disk);
//! - `convert`: wire <-> domain.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::store::StoreError;

mod convert;
mod session;
mod state;

pub use convert::{
    desired_from_proto, health_to_proto, status_to_proto, sync_to_proto, target_from_proto,
};
pub use session::{backoff, run};
pub use state::{LinkConfig, LinkState};

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

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
