//! The store's networked backend: etcd. The only code that knows etcd.
//!
//! Key layout: `{prefix}{tree}/{key}`, the key's bytes as the store gives them. etcd orders keys
//! bytewise, so the keys of a tree keep their order under the tree's prefix and a range of a tree
//! is a range of etcd keys; a tree name never is another's prefix once the `/` follows it.
//!
//! A batch is one etcd transaction: its conditions are compares, its writes the success ops. etcd
//! refuses a transaction of more than `--max-txn-ops` writes (128 by default) or larger than
//! `--max-request-bytes` (1.5 MiB), and one that writes a key twice. So a batch is first reduced
//! to its effect (one write per key, ranges cut around the keys written after them); a batch
//! without conditions that is still too large goes as several transactions in turn: its effect
//! split in the order of each key's last write (the writes as given when it deletes a range),
//! which keeps what the [`Backend`] trait promises (a read may see part of a batch, a crash of
//! the hub keeps a prefix of it in which a key's earlier writes may have given way to its last);
//! a batch with conditions must fit in one, or is refused, since its conditions must hold for
//! all of its writes.
//!
//! Several writers: the replicas of a hub share a prefix. [`Backend::watch`] feeds each the
//! others' writes (from a revision on, a transaction's together); `election` stands a replica for
//! etcd's election and, once it leads, fences every transaction on its election key. Requests
//! that cannot reach their member (one of three down) are sent again. For the offline tools
//! (export, import), [`EtcdBackend::connect_exclusive`] holds `{prefix}lock` instead, with a
//! lease, every transaction conditional on it.
//!
//! [`Backend::watch`]: super::Backend::watch
//!
//! The options here are always built (flags parse them); the backend itself, and the etcd
//! client with it, only with the crate's `etcd` feature (etcd's protos need `protoc` to build,
//! which a plain `cargo demo` on a fresh machine must not).

#[cfg(feature = "etcd")]
mod backend;
#[cfg(feature = "etcd")]
mod compaction;
#[cfg(feature = "etcd")]
mod election;
#[cfg(feature = "etcd")]
pub use backend::EtcdBackend;

use std::time::Duration;

/// A replica's standing in the election of the replicas sharing a prefix.
#[derive(Debug, Clone)]
pub struct Candidacy {
    /// Its part, as it changes.
    pub leadership: tokio::sync::watch::Receiver<crate::leadership::Leadership>,
    /// Cancelled once the replica's lease is gone (etcd out of its reach for longer than the
    /// lease's time to live): it may no longer lead nor write, and must restart.
    pub lost: tokio_util::sync::CancellationToken,
}

/// etcd's `--max-txn-ops` default.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;
/// etcd's `--max-request-bytes` default (1.5 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// How often the leader compacts etcd's history unless told otherwise: kube-apiserver's
/// `--etcd-compaction-interval` default.
pub const DEFAULT_COMPACTION_INTERVAL: Duration = Duration::from_secs(300);
/// Transactions of writes in any order under way at once, by default (see
/// [`EtcdOptions::txns_in_flight`]).
pub const DEFAULT_TXNS_IN_FLIGHT: usize = 8;
/// The key prefix when none is configured.
pub const DEFAULT_PREFIX: &str = "/gitfleet/";

/// Where the store is and how to reach it.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs (`http://host:2379`, `https://...`); requests go to any of them.
    pub endpoints: Vec<String>,
    /// Every key of the store starts with this.
    pub prefix: String,
    pub tls: Option<EtcdTls>,
    /// How long connecting to etcd (and the first request) may take.
    pub connect_timeout: Duration,
    /// How long one request may take once connected.
    pub request_timeout: Duration,
    /// Writes per transaction, at most: etcd's `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// The largest request etcd takes: its `--max-request-bytes`.
    pub max_request_bytes: usize,
    /// Transactions that may be under way at once when writes allow any order (each cluster's
    /// desired state), at least 1.
    pub txns_in_flight: usize,
    /// How long a hub's hold on its prefix outlives the hub: a hub killed without letting go
    /// keeps its successor waiting this long at most (see `EtcdBackend::connect_exclusive`).
    pub hold_ttl: Duration,
    /// How often the leading replica compacts etcd's history, to the revision etcd was at one
    /// interval before (`Duration::ZERO`: never; etcd's `--auto-compaction-retention` or its
    /// operator does it). See `compaction`.
    pub compaction_interval: Duration,
}

impl EtcdOptions {
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            prefix: DEFAULT_PREFIX.to_owned(),
            tls: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            txns_in_flight: DEFAULT_TXNS_IN_FLIGHT,
            hold_ttl: Duration::from_secs(10),
            compaction_interval: DEFAULT_COMPACTION_INTERVAL,
        }
    }
}

/// TLS to etcd: the CA that signed its certificate and a client certificate, in PEM.
#[derive(Clone, Default)]
pub struct EtcdTls {
    pub ca_pem: Option<Vec<u8>>,
    /// Certificate and private key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca_pem", &self.ca_pem.is_some())
            .field("identity", &self.identity.is_some())
            .finish()
    }
}
