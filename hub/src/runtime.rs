//! Wiring: opens the store, loads the PKI, starts the engine, the gRPC server (mutual TLS) and
//! the HTTP listener, and shuts them all down in order.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gitfleet_proto::MAX_MESSAGE_BYTES;
use gitfleet_proto::v1::access_server::AccessServer;
use gitfleet_proto::v1::admin_server::AdminServer;
use gitfleet_proto::v1::audit_server::AuditServer;
use gitfleet_proto::v1::link_server::LinkServer;
use gitfleet_proto::v1::registration_server::RegistrationServer;
use gitfleet_proto::v1::rollouts_server::RolloutsServer;
use gitfleet_proto::v1::users_server::UsersServer;
use gitfleet_proto::v1::watch_server::WatchServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tracing::{info, warn};

use crate::engine::{Engine, EngineConfig, EngineError, TokenSpec};
use crate::git::GitCache;
use crate::grpc::access::AccessService;
use crate::grpc::admin::AdminService;
use crate::grpc::forward::ForwardLayer;
use crate::grpc::link::LinkService;
use crate::grpc::registration::RegistrationService;
use crate::grpc::rollouts::RolloutsService;
use crate::grpc::users::{AuditService, UsersService};
use crate::grpc::watch::WatchService;
use crate::leadership::LeadershipWatch;
use crate::metrics::HubMetrics;
use crate::pki::{DEFAULT_CLUSTER_CERT_VALIDITY, Pki, PkiError};
use crate::store::{Store, StoreError};
use gitfleet_core::gitfleetconfig::{ClientConfig, Context};

/// How the hub runs. Every default is safe for production.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub data_dir: PathBuf,
    pub grpc_listen: SocketAddr,
    pub http_listen: Option<SocketAddr>,
    /// The gRPC URL spokes and admins should dial (written into the admin credential);
    /// derived from the listen address when absent.
    pub advertise_url: Option<String>,
    /// Extra DNS names / IPs for the server certificate.
    pub server_names: Vec<String>,
    pub default_poll_interval: Duration,
    /// A connected cluster not heard from for this long shows as disconnected.
    pub heartbeat_grace: Duration,
    /// Validity of certificates issued to spokes.
    pub cluster_cert_validity: Duration,
    pub max_concurrent_fetches: usize,
    pub fetch_timeout: Duration,
    /// What the hub's chart resolution may contact, and for how long (30 s a request;
    /// loopback only in tests: there is no flag for it).
    pub chart_fetch: gitfleet_support::fetch::FetchPolicy,
    /// What Notifiers' deliveries may contact, and how long one may take (10 s; `http://` and
    /// loopback only in tests: there is no flag for it, as for charts).
    pub notify_fetch: gitfleet_support::fetch::FetchPolicy,
    /// How Notifiers' deliveries are retried before they are given up.
    pub notify_retry: gitfleet_core::notify::RetryPolicy,
    /// Shared secret for push webhooks (HMAC key, or GitLab token); webhooks are off without it.
    pub webhook_secret: Option<String>,
    /// Spokes between opening their stream and saying hello, at most; more are refused with
    /// RESOURCE_EXHAUSTED (they back off and retry).
    pub max_concurrent_handshakes: usize,
    /// Git credentials and webhook secrets that Repos reference (see [`crate::credentials`]).
    pub repo_credentials: crate::credentials::Credentials,
    /// Registrations wait until an admin approves them (double opt-in).
    pub require_approval: bool,
    /// Take the hub's own Repos, Apps and ClusterGroups from a path in one of its Repos.
    pub fleet: Option<crate::fleetsync::FleetSource>,
    /// `Register` calls a minute (and at once) from one source address; 0: no limit.
    pub register_rate_limit: u32,
    /// How long a client of the gRPC listener has to finish its TLS handshake; a connection
    /// still handshaking then is closed.
    pub tls_handshake_timeout: Duration,
    /// The largest webhook request body the HTTP listener reads; larger ones get 413.
    pub webhook_max_body_bytes: usize,
    /// Connections each listener keeps at once, and how long one may stay silent (see
    /// [`crate::listener`]).
    pub connection_limits: crate::listener::Limits,
    /// How much of the audit log the hub keeps (the newest entries, none older than an age).
    pub audit_retention: gitfleet_core::users::AuditRetention,
    /// Where the hub keeps its state.
    pub store: StoreConfig,
    /// The gRPC URL other replicas of this hub reach this one at, to hand it the calls only
    /// the leader answers (several replicas on etcd); the advertised URL when absent.
    pub replica_url: Option<String>,
    /// This replica's part among several, as the election sees it: a follower serves its
    /// spokes' sessions and hands every other call to the leader (see [`crate::grpc::forward`]).
    /// `None`: the election of the replicas on a shared (etcd) store decides it, or, on sled,
    /// the hub runs alone and answers everything. Tests give it here to force a part.
    pub leadership: Option<LeadershipWatch>,
    /// The web dashboard's public URL (`--ui-url`), which sign-in links are made from;
    /// `http://HTTP-LISTEN-ADDRESS/ui` when absent.
    pub ui_url: Option<String>,
    /// How long a dashboard session lives (`--ui-session-ttl`).
    pub ui_session_ttl: Duration,
    /// The Kubernetes-native API (`--kube-api`, docs/kube-api.md): the management cluster whose
    /// custom resources the leader reconciles into the hub. `None`: off.
    pub kube_api: Option<crate::kube_api::KubeApiConfig>,
}

/// Where the hub keeps its state.
// Made once at startup: the size of a variant costs nothing worth a box in every caller.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Default)]
pub enum StoreConfig {
    /// sled in `DATA_DIR/store`: one hub process, nothing else to run.
    #[default]
    Sled,
    /// etcd, under a key prefix; the data directory still holds the PKI.
    Etcd(crate::store::etcd::EtcdOptions),
}

impl StoreConfig {
    /// Opens the store for a serving hub, creating it on first use: on etcd, shared with the
    /// other replicas on the prefix, with the way to stand for their election.
    async fn open_replica(&self, data_dir: &Path) -> Result<(Store, Option<Elector>), HubError> {
        match self {
            #[cfg(feature = "etcd")]
            StoreConfig::Etcd(options) => {
                let backend = Arc::new(
                    crate::store::etcd::EtcdBackend::connect(options)
                        .await
                        .map_err(StoreError::Backend)?,
                );
                let store =
                    Store::with_backend(Arc::clone(&backend) as Arc<dyn crate::store::Backend>)
                        .await?;
                Ok((
                    store,
                    Some(Elector {
                        backend,
                        ttl: options.hold_ttl,
                    }),
                ))
            }
            _ => Ok((self.open(data_dir).await?, None)),
        }
    }

    /// Opens the store for this process alone (export, import), creating it on first use.
    pub async fn open(&self, data_dir: &Path) -> Result<Store, HubError> {
        Ok(match self {
            StoreConfig::Sled => Store::open(&data_dir.join("store")).await?,
            #[cfg(feature = "etcd")]
            StoreConfig::Etcd(options) => {
                let backend = crate::store::etcd::EtcdBackend::connect_exclusive(options)
                    .await
                    .map_err(StoreError::Backend)?;
                Store::with_backend(Arc::new(backend)).await?
            }
            #[cfg(not(feature = "etcd"))]
            StoreConfig::Etcd(_) => {
                return Err(StoreError::Backend(crate::store::BackendError::Storage(
                    "this gitfleet-hub was built without etcd support: build it with \
                     `--features etcd` (the release images have it)"
                        .into(),
                ))
                .into());
            }
        })
    }

    /// The directory whose size is the store's size on disk, if the store is on this disk.
    fn local_dir(&self, data_dir: &Path) -> Option<PathBuf> {
        match self {
            StoreConfig::Sled => Some(data_dir.join("store")),
            StoreConfig::Etcd(_) => None,
        }
    }
}

/// How a replica on a shared store stands for the election of the replicas.
struct Elector {
    #[cfg(feature = "etcd")]
    backend: Arc<crate::store::etcd::EtcdBackend>,
    #[cfg(feature = "etcd")]
    ttl: Duration,
}

impl Elector {
    #[cfg(feature = "etcd")]
    async fn stand(&self, url: String) -> Result<crate::store::etcd::Candidacy, HubError> {
        Ok(self
            .backend
            .stand(url, self.ttl)
            .await
            .map_err(StoreError::Backend)?)
    }

    #[cfg(not(feature = "etcd"))]
    async fn stand(&self, _url: String) -> Result<Never, HubError> {
        unreachable_without_etcd()
    }
}

#[cfg(not(feature = "etcd"))]
enum Never {}

#[cfg(not(feature = "etcd"))]
fn unreachable_without_etcd() -> Result<Never, HubError> {
    Err(StoreError::Backend(crate::store::BackendError::Storage(
        "this gitfleet-hub was built without etcd support".into(),
    ))
    .into())
}

/// The TLS handshake timeout of the gRPC listener when none is configured.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 limits of the gRPC listener, per connection (see docs/configuration.md). A spoke uses
/// one stream (its session) and the CLI a few at a time; the rest bounds what one connection,
/// authenticated or not, can make the hub hold.
pub const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// The largest header block a request may send (hyper's default, stated here on purpose).
pub const HTTP2_MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// Streams a client may open and reset before the hub reads them, at most: beyond, the
/// connection is closed (the "rapid reset" attack, CVE-2023-44487).
pub const HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// The hub pings an idle connection this often and closes it when the ping is not answered
/// within [`HTTP2_KEEPALIVE_TIMEOUT`]: a vanished peer does not hold a connection for long.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

impl HubConfig {
    /// Production defaults: gRPC on 0.0.0.0:7443, HTTP on 0.0.0.0:7080.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            grpc_listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 7443)),
            http_listen: Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 7080))),
            advertise_url: None,
            server_names: Vec::new(),
            default_poll_interval: Duration::from_secs(30),
            heartbeat_grace: Duration::from_secs(90),
            cluster_cert_validity: DEFAULT_CLUSTER_CERT_VALIDITY,
            max_concurrent_fetches: 8,
            fetch_timeout: Duration::from_secs(120),
            chart_fetch: gitfleet_support::fetch::FetchPolicy::default(),
            notify_fetch: gitfleet_support::fetch::FetchPolicy {
                timeout: Duration::from_secs(10),
                ..Default::default()
            },
            notify_retry: Default::default(),
            webhook_secret: None,
            max_concurrent_handshakes: crate::grpc::link::MAX_CONCURRENT_HANDSHAKES,
            repo_credentials: Default::default(),
            require_approval: false,
            fleet: None,
            register_rate_limit: crate::grpc::rate_limit::DEFAULT_REGISTER_PER_MINUTE,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            webhook_max_body_bytes: crate::http::DEFAULT_WEBHOOK_MAX_BODY_BYTES,
            connection_limits: crate::listener::Limits::default(),
            audit_retention: Default::default(),
            store: StoreConfig::Sled,
            replica_url: None,
            leadership: None,
            ui_url: None,
            ui_session_ttl: Duration::from_secs(
                gitfleet_core::dashboard::DEFAULT_SESSION_TTL_SECS.unsigned_abs(),
            ),
            kube_api: None,
        }
    }

    /// For tests: loopback, ephemeral ports, short intervals.
    pub fn for_tests(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            grpc_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            http_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
            default_poll_interval: Duration::from_secs(1),
            heartbeat_grace: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(30),
            // Tests serve charts on 127.0.0.1.
            chart_fetch: gitfleet_support::fetch::FetchPolicy {
                allow_loopback: true,
                timeout: Duration::from_secs(10),
                extra_roots: Vec::new(),
            },
            // Tests run their receivers on 127.0.0.1, and wait for retries.
            notify_fetch: gitfleet_support::fetch::FetchPolicy {
                allow_loopback: true,
                timeout: Duration::from_secs(5),
                extra_roots: Vec::new(),
            },
            notify_retry: gitfleet_core::notify::RetryPolicy {
                base: Duration::from_millis(100),
                cap: Duration::from_secs(1),
                max_attempts: 5,
            },
            ..Self::new(data_dir)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("cannot write gitfleet config {path}: {source}")]
    AdminConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} already holds a CA: init creates the PKI of a new hub only; every hub using this data directory uses the CA there"
    )]
    AlreadyInitialised { path: PathBuf },
}

/// `DATA/admin.gitfleetconfig`: the hub's own admin credential, for clients dialling `server`.
fn write_admin_config(data: &Path, server: &str, pki: &Pki) -> Result<PathBuf, HubError> {
    let admin_config_path = data.join("admin.gitfleetconfig");
    let admin_config = ClientConfig::single(Context {
        name: "gitfleet".into(),
        server: server.to_owned(),
        certificate_authority_data: pki.ca_pem().to_owned(),
        client_certificate_data: pki.admin().cert_pem.clone(),
        client_key_data: pki.admin().key_pem.clone(),
        tls_server_name: None,
    });
    // Owner-only: it holds the admin's private key.
    crate::pki::write_private(&admin_config_path, admin_config.to_yaml().as_bytes()).map_err(
        |source| HubError::AdminConfig {
            path: admin_config_path.clone(),
            source,
        },
    )?;
    Ok(admin_config_path)
}

/// What `gitfleet-hub init` made.
#[derive(Debug, Clone)]
pub struct Initialised {
    pub pki_dir: PathBuf,
    pub admin_config_path: PathBuf,
}

/// `gitfleet-hub init`: creates a hub's PKI in `DATA/pki` (the CA, a server certificate for
/// `server_names` besides the loopback names, the admin certificate) and the first admin
/// credential `DATA/admin.gitfleetconfig` for clients dialling `server_url`, without starting
/// a hub. Every replica of a highly available hub then starts on a copy of that `pki/`, and
/// [`start`] uses it as it is. Refuses, changing nothing, when `DATA/pki` already holds (part
/// of) a CA.
pub fn init(
    data_dir: &Path,
    server_names: &[String],
    server_url: &str,
) -> Result<Initialised, HubError> {
    let pki_dir = data_dir.join("pki");
    for name in ["ca.crt", "ca.key", ".ca.crt.new", ".ca.key.new"] {
        let path = pki_dir.join(name);
        let there = path.try_exists().map_err(|source| HubError::DataDir {
            path: path.clone(),
            source,
        })?;
        if there {
            return Err(HubError::AlreadyInitialised { path });
        }
    }
    std::fs::create_dir_all(data_dir).map_err(|source| HubError::DataDir {
        path: data_dir.to_owned(),
        source,
    })?;
    let pki = Pki::load_or_create(&pki_dir, server_names)?;
    let admin_config_path = write_admin_config(data_dir, server_url, &pki)?;
    Ok(Initialised {
        pki_dir,
        admin_config_path,
    })
}

/// The URL clients dial when none is configured: the gRPC listener's address, loopback for an
/// unspecified one.
pub fn default_grpc_url(grpc_listen: SocketAddr) -> String {
    advertised_url(grpc_listen)
}

/// Installs rustls's ring crypto provider for the process; harmless when already installed.
pub use gitfleet_support::install_crypto_provider;

/// A running hub.
pub struct HubHandle {
    grpc_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    grpc_url: String,
    ca_pem: String,
    admin_config_path: PathBuf,
    engine: Arc<Engine>,
    /// The engine's store, for tests and tools that look at what is stored.
    store: Store,
    /// This replica's part (always [`Leadership::Alone`](crate::leadership::Leadership) on
    /// sled).
    leadership: crate::leadership::LeadershipWatch,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// A hub dropped without [`HubHandle::shutdown`] still stops serving (without waiting).
    _stop_on_drop: tokio_util::sync::DropGuard,
}

impl std::fmt::Debug for HubHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubHandle")
            .field("grpc_addr", &self.grpc_addr)
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

/// Starts a hub: returns once both listeners are bound and serving.
pub async fn start(config: HubConfig) -> Result<HubHandle, HubError> {
    install_crypto_provider();
    let data = &config.data_dir;
    std::fs::create_dir_all(data).map_err(|source| HubError::DataDir {
        path: data.clone(),
        source,
    })?;
    let (store, elector) = config.store.open_replica(data).await?;
    let pki = Arc::new(Pki::load_or_create(
        &data.join("pki"),
        &config.server_names,
    )?);

    let grpc_listener = TcpListener::bind(config.grpc_listen)
        .await
        .map_err(|source| HubError::Bind {
            addr: config.grpc_listen,
            source,
        })?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|source| HubError::Bind {
            addr: config.grpc_listen,
            source,
        })?;
    let grpc_url = config
        .advertise_url
        .clone()
        .unwrap_or_else(|| advertised_url(grpc_addr));

    let admin_config_path = write_admin_config(data, &grpc_url, &pki)?;
    // Written in this replica's presence records, before any spoke links (see `diff --live`).
    store.set_replica_url(
        config
            .replica_url
            .clone()
            .unwrap_or_else(|| grpc_url.clone()),
    );

    let shutdown = CancellationToken::new();
    #[cfg(feature = "etcd")]
    let candidacy = match &elector {
        Some(elector) => Some(
            elector
                .stand(
                    config
                        .replica_url
                        .clone()
                        .unwrap_or_else(|| grpc_url.clone()),
                )
                .await?,
        ),
        None => None,
    };
    #[cfg(not(feature = "etcd"))]
    let candidacy: Option<crate::store::etcd::Candidacy> = match &elector {
        Some(elector) => match elector.stand(String::new()).await? {},
        None => None,
    };
    let git = GitCache::new(
        data.join("git"),
        config.max_concurrent_fetches,
        config.fetch_timeout,
    );
    let engine = Engine::start(
        store.clone(),
        Arc::clone(&pki),
        git,
        EngineConfig {
            default_poll_interval: config.default_poll_interval,
            heartbeat_grace: config.heartbeat_grace,
            cluster_cert_validity: config.cluster_cert_validity,
            repo_credentials: config.repo_credentials.clone(),
            require_approval: config.require_approval,
            fleet: config.fleet.clone(),
            metrics: Arc::new(HubMetrics::new(config.store.local_dir(data))),
            audit_retention: config.audit_retention,
            charts: crate::charts::ChartResolver::new(config.chart_fetch.clone())
                .map_err(HubError::Tls)?,
            notifications: crate::engine::NotificationConfig {
                fetcher: gitfleet_support::fetch::Fetcher::new(config.notify_fetch.clone())
                    .map_err(|e| HubError::Tls(e.to_string()))?,
                retry: config.notify_retry,
            },
        },
        shutdown.clone(),
        candidacy.is_none(),
    )
    .await?;
    let leadership: crate::leadership::LeadershipWatch = match &candidacy {
        Some(c) => c.leadership.clone(),
        None => crate::leadership::alone(),
    };
    engine.metrics().set_leader(candidacy.is_none());
    if let Some(candidacy) = candidacy {
        tokio::spawn(take_part(
            Arc::clone(&engine),
            store.clone(),
            candidacy,
            shutdown.clone(),
        ));
    }

    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            &pki.server().cert_pem,
            &pki.server().key_pem,
        ))
        .client_ca_root(Certificate::from_pem(pki.ca_pem()))
        // Registration is the one call without a client certificate; every other handler
        // requires one and checks it (see grpc::peer).
        .client_auth_optional(true)
        // Anyone can open a connection: one that never finishes its handshake must not hold
        // a task and a socket forever.
        .timeout(config.tls_handshake_timeout);
    // Every replica serves the shared PKI's one server certificate: a follower checks the
    // leader's against the name the hub is known by, whatever address the election gave.
    let server_name = config
        .server_names
        .first()
        .cloned()
        .unwrap_or_else(|| "localhost".to_owned());
    // `diff --live` asks the replica a cluster's spoke is linked to.
    let replicas = Arc::new(crate::grpc::forward::ReplicaLinks::new(
        Arc::clone(&pki),
        server_name.clone(),
    ));
    let forward = ForwardLayer::new(
        config
            .leadership
            .clone()
            .unwrap_or_else(|| leadership.clone()),
        Arc::clone(&pki),
        server_name,
    );
    // `Admin.DiffLive` asks, through the spokes' sessions.
    let live_diffs = crate::grpc::live_diff::LiveDiffs::default();
    // The dashboard's URL: known once the HTTP listener is bound (below); `gitfleet dashboard`
    // makes its links from it.
    let dashboard_url: Arc<std::sync::OnceLock<String>> = Arc::default();
    let server = Server::builder()
        .tls_config(tls)
        .map_err(|e| HubError::Tls(e.to_string()))?
        .max_concurrent_streams(HTTP2_MAX_CONCURRENT_STREAMS)
        .http2_max_header_list_size(HTTP2_MAX_HEADER_LIST_SIZE)
        .http2_max_pending_accept_reset_streams(Some(HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS))
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .layer(forward)
        .add_service(
            RegistrationServer::new(RegistrationService::with_rate_limit(
                Arc::clone(&engine),
                config.register_rate_limit,
            ))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            LinkServer::new(
                LinkService::with_handshake_limit(
                    Arc::clone(&engine),
                    config.max_concurrent_handshakes,
                )
                .with_live_diffs(live_diffs.clone()),
            )
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            AdminServer::new(
                AdminService::new(Arc::clone(&engine))
                    .with_live_diffs(live_diffs)
                    .with_replicas(replicas),
            )
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            AccessServer::new(AccessService::new(Arc::clone(&engine)))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            RolloutsServer::new(RolloutsService::new(Arc::clone(&engine)))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            WatchServer::new(WatchService::new(Arc::clone(&engine)))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            UsersServer::new(UsersService::new(
                Arc::clone(&engine),
                Arc::clone(&dashboard_url),
            ))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            AuditServer::new(AuditService::new(Arc::clone(&engine)))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        );
    let mut tasks = Vec::new();
    if let Some(kube_api) = config.kube_api.clone() {
        // Only while this replica leads (see crate::kube_api).
        tasks.push(crate::kube_api::spawn(
            Arc::clone(&engine),
            kube_api,
            config
                .leadership
                .clone()
                .unwrap_or_else(|| leadership.clone()),
            shutdown.clone(),
        ));
    }
    let stop = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        let incoming =
            crate::listener::GuardedListener::new(grpc_listener, config.connection_limits, "gRPC")
                .into_stream();
        if let Err(e) = server
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await
        {
            warn!(error = %e, "gRPC server failed");
        }
    }));

    let http_addr = match config.http_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| HubError::Bind { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| HubError::Bind { addr, source })?;
            let url = config
                .ui_url
                .clone()
                .map(|u| u.trim_end_matches('/').to_owned())
                .unwrap_or_else(|| format!("http://{}/ui", loopback_if_unspecified(bound)));
            let _ = dashboard_url.set(url);
            let router = crate::http::router(
                Arc::clone(&engine),
                config.webhook_secret.clone(),
                config.webhook_max_body_bytes,
                Some(crate::dashboard::DashboardConfig {
                    url: Arc::clone(&dashboard_url),
                    session_ttl: config.ui_session_ttl,
                }),
            );
            let stop = shutdown.clone();
            let connection_limits = config.connection_limits;
            tasks.push(tokio::spawn(async move {
                let listener =
                    crate::listener::GuardedListener::new(listener, connection_limits, "HTTP");
                if let Err(e) = axum::serve(listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
                {
                    warn!(error = %e, "HTTP server failed");
                }
            }));
            Some(bound)
        }
        None => None,
    };
    info!(grpc = %grpc_addr, http = ?http_addr, url = %grpc_url, data_dir = %data.display(), "hub started");
    Ok(HubHandle {
        grpc_addr,
        http_addr,
        grpc_url,
        ca_pem: pki.ca_pem().to_owned(),
        admin_config_path,
        engine,
        store,
        leadership,
        _stop_on_drop: shutdown.clone().drop_guard(),
        shutdown,
        tasks,
    })
}

/// A replica's part in the election, acted on: it takes up the leader's work once elected, and
/// stops the hub (failing its store first, so that nothing more is acknowledged) once its lease
/// is lost, as kube-controller-manager does: a restarted replica stands again.
async fn take_part(
    engine: Arc<Engine>,
    store: Store,
    candidacy: crate::store::etcd::Candidacy,
    shutdown: CancellationToken,
) {
    let mut leadership = candidacy.leadership;
    loop {
        if leadership.borrow_and_update().leads() && !engine.leads() {
            engine.metrics().set_leader(true);
            tracing::info!("elected: this hub replica leads; taking up the leader's work");
            if let Err(e) = engine.lead().await {
                let why = format!("this hub replica was elected but cannot lead: {e}");
                tracing::error!("{why}");
                store.fail(&why);
                engine.metrics().set_leader(false);
                shutdown.cancel();
                return;
            }
        }
        tokio::select! {
            changed = leadership.changed() => if changed.is_err() { return },
            () = candidacy.lost.cancelled() => {
                engine.metrics().set_leader(false);
                store.fail("this hub replica lost its etcd lease: it no longer leads nor acknowledges anything; restart it");
                engine.stop();
                shutdown.cancel();
                return;
            }
            () = shutdown.cancelled() => return,
        }
    }
}

/// Files of `DATA/pki` a backup carries: without the CA no spoke could reach a restored hub.
const PKI_FILES: [&str; 6] = [
    "ca.crt",
    "ca.key",
    "server.crt",
    "server.key",
    "admin.crt",
    "admin.key",
];

/// A backup of a (stopped) hub's store and the PKI of its data directory, as one JSON document.
/// It holds the CA's private key: keep it as safe as the data directory.
pub async fn export(data_dir: &Path, store: &StoreConfig) -> Result<serde_json::Value, HubError> {
    let store = store.open(data_dir).await?;
    let mut pki = serde_json::Map::new();
    for name in PKI_FILES {
        let path = data_dir.join("pki").join(name);
        let text = std::fs::read_to_string(&path).map_err(|source| HubError::DataDir {
            path: path.clone(),
            source,
        })?;
        pki.insert(name.to_owned(), serde_json::Value::String(text));
    }
    Ok(serde_json::json!({ "store": store.export().await?, "pki": pki }))
}

/// Restores an [`export`] into a new store (sled: a new data directory; etcd: a prefix without
/// data) and the PKI into the data directory.
pub async fn import(
    data_dir: &Path,
    store: &StoreConfig,
    backup: &serde_json::Value,
) -> Result<(), HubError> {
    let pki_dir = data_dir.join("pki");
    std::fs::create_dir_all(&pki_dir).map_err(|source| HubError::DataDir {
        path: pki_dir.clone(),
        source,
    })?;
    let store = store.open(data_dir).await?;
    let dump = backup
        .get("store")
        .ok_or_else(|| StoreError::Import("the backup has no store".into()))?;
    store.import(dump).await?;
    for name in PKI_FILES {
        let text = backup
            .pointer(&format!("/pki/{}", name.replace('/', "~1")))
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| StoreError::Import(format!("the backup has no pki/{name}")))?;
        let path = pki_dir.join(name);
        crate::pki::write_private(&path, text.as_bytes())
            .map_err(|source| HubError::DataDir { path, source })?;
    }
    Ok(())
}

/// `https://host:port` for a bound address; an unspecified address advertises loopback.
fn advertised_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    format!("https://{}", SocketAddr::new(ip, addr.port()))
}

impl HubHandle {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// `https://127.0.0.1:PORT` (or the advertised URL).
    pub fn grpc_url(&self) -> String {
        self.grpc_url.clone()
    }

    /// The CA that signs the hub's server certificate and every client certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The admin credential (a `ClientConfig` file) the hub wrote at start.
    pub fn admin_config_path(&self) -> &Path {
        &self.admin_config_path
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// What the hub has stored, for tests and tools that check it (the engine is the only
    /// writer; nothing else should write through this).
    /// This replica's part among the replicas sharing its store, as it changes.
    pub fn leadership(&self) -> crate::leadership::LeadershipWatch {
        self.leadership.clone()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Mints a bootstrap token without going through the admin API: clusters registered with
    /// it get `labels` (and the spoke may add none).
    pub async fn create_token(
        &self,
        ttl: Duration,
        labels: BTreeMap<String, String>,
        max_uses: u32,
    ) -> Result<String, HubError> {
        self.create_token_with(TokenSpec {
            max_uses,
            ..TokenSpec::new(ttl, labels)
        })
        .await
    }

    /// [`HubHandle::create_token`] with everything a token can say.
    pub async fn create_token_with(&self, spec: TokenSpec) -> Result<String, HubError> {
        let description = if spec.description.is_empty() {
            "created in-process".to_owned()
        } else {
            spec.description.clone()
        };
        let token = self
            .engine
            .create_token(TokenSpec {
                description,
                ..spec
            })
            .await?;
        Ok(token.token)
    }

    /// Lets a registration waiting for approval get its certificate on its next retry.
    pub async fn approve_cluster(&self, cluster: &str) -> Result<bool, HubError> {
        Ok(self.engine.approve_cluster(cluster).await?)
    }

    /// Cuts a cluster off at once (its stream ends with `Goodbye { revoked: true }`).
    pub async fn revoke_cluster(&self, cluster: &str) -> Result<bool, HubError> {
        Ok(self.engine.revoke_cluster(cluster).await?)
    }

    /// The token that stops the hub's servers and spoke sessions when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, says goodbye to every spoke, stops following Git, flushes the store and
    /// releases it (so a new hub can open the same data directory in this process).
    pub async fn shutdown(self) {
        let HubHandle {
            engine,
            store,
            shutdown,
            tasks,
            ..
        } = self;
        shutdown.cancel();
        engine.stop();
        for task in tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                warn!("a server did not stop within 5s; aborting it");
                abort.abort();
            }
        }
        if let Err(e) = engine.flush().await {
            warn!(error = %e, "cannot flush the store at shutdown");
        }
        // Spoke sessions and followers hold the engine (and with it the store's file lock) until
        // they notice the shutdown.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&engine) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if Arc::strong_count(&engine) > 1 {
            warn!("hub tasks still hold the engine after 5s");
        }
        drop(store);
        info!("hub stopped");
    }
}

/// An address a browser on this machine can open: a listener on every interface
/// (`0.0.0.0:7080`) is reached at loopback.
fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
    } else {
        addr
    }
}
