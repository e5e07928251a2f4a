//! Wiring: identity, cluster client, link and agent, started in-process so that binaries,
//! the e2e harness and the demo all run the same spoke.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::agent::{self, AgentConfig, Reporter};
pub use crate::cluster::KubeSource;
use crate::cluster::{Cluster, ClusterError};
use crate::git::GitCache;
use crate::identity::{self, IdentityError, IdentityStore};
use crate::link::{self, LinkConfig, LinkState};
use crate::metrics::{self, SpokeMetrics};
use crate::model::TargetStatus;
use crate::store::StoreError;

/// Everything a spoke needs to run.
#[derive(Debug, Clone)]
pub struct SpokeConfig {
    /// `https://host:port` of the hub, or of each of its replicas (`--hub` repeated): the
    /// spoke registers and connects through the first that answers, and fails over to the
    /// next (see [`crate::hubs`]).
    pub hub_urls: Vec<String>,
    /// The hub's CA (PEM), needed for the first registration only.
    pub hub_ca_pem: Option<String>,
    pub data_dir: PathBuf,
    pub cluster_name: String,
    /// Labels proposed at registration: accepted only under keys the bootstrap token allows.
    pub labels: BTreeMap<String, String>,
    /// Needed for the first registration only.
    pub bootstrap_token: Option<String>,
    pub kube: KubeSource,
    pub heartbeat_interval: Duration,
    /// How long objects may progress before they count as Degraded.
    pub progress_timeout: Duration,
    pub agent_version: String,
    /// The `helm` that renders Helm charts (`helm template`).
    pub helm_command: PathBuf,
    /// What chart downloads may contact, and for how long (loopback only in tests).
    pub chart_fetch: gitfleet_support::fetch::FetchPolicy,
    /// Sizes of chart archives, what they unpack to, and the chart cache.
    pub chart_limits: crate::charts::ChartLimits,
    /// Bounds on every Git fetch: how long, and how many bytes.
    pub git_fetch: crate::git::FetchLimits,
    /// Most renders running at once, over every Target (`--max-concurrent-renders`).
    pub max_concurrent_renders: usize,
    /// Where `/healthz`, `/readyz` and `/metrics` are served; no HTTP listener when `None`
    /// (the binary's default is 0.0.0.0:9090).
    pub http_listen: Option<SocketAddr>,
    /// The runtime the hub link runs on: its session, heartbeats and the HTTP/2 connection it
    /// opens (pings answered there). `None`: the caller's runtime. A runtime of its own keeps
    /// heavy sync work from delaying the link; the fleet simulator gives one to its thousands
    /// of spokes, since each real spoke has its own CPU.
    pub link_runtime: Option<tokio::runtime::Handle>,
}

impl SpokeConfig {
    /// A configuration with production defaults.
    pub fn new(
        hub_url: impl Into<String>,
        data_dir: impl Into<PathBuf>,
        cluster_name: impl Into<String>,
        kube: KubeSource,
    ) -> Self {
        Self {
            hub_urls: vec![hub_url.into()],
            hub_ca_pem: None,
            data_dir: data_dir.into(),
            cluster_name: cluster_name.into(),
            labels: BTreeMap::new(),
            bootstrap_token: None,
            kube,
            heartbeat_interval: Duration::from_secs(10),
            progress_timeout: Duration::from_secs(300),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            helm_command: "helm".into(),
            chart_fetch: gitfleet_support::fetch::FetchPolicy::default(),
            chart_limits: crate::charts::ChartLimits::default(),
            git_fetch: crate::git::FetchLimits::default(),
            max_concurrent_renders: agent::DEFAULT_MAX_CONCURRENT_RENDERS,
            http_listen: None,
            link_runtime: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpokeError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A running spoke.
pub struct SpokeHandle {
    cluster_name: String,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    link: Arc<LinkState>,
    metrics: Arc<SpokeMetrics>,
    http_addr: Option<SocketAddr>,
}

impl SpokeHandle {
    pub fn cluster_name(&self) -> &str {
        &self.cluster_name
    }

    /// Whether the spoke has a live session with the hub right now.
    pub fn connected(&self) -> tokio::sync::watch::Receiver<bool> {
        self.link.connected()
    }

    pub fn metrics(&self) -> &Arc<SpokeMetrics> {
        &self.metrics
    }

    /// The desired state as the spoke holds it, changing as the hub sends updates (what the
    /// fleet simulator times fan-out by).
    pub fn desired(&self) -> tokio::sync::watch::Receiver<crate::desired::DesiredState> {
        self.link.desired()
    }

    /// The bound address of the HTTP listener (health and metrics), if there is one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Stops the link and every worker, and waits for them.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Registers (if the data directory holds no identity yet), then runs the link and the agent in
/// the background.
pub async fn start(config: SpokeConfig) -> Result<SpokeHandle, SpokeError> {
    identity::validate_cluster_name(&config.cluster_name)?;
    crate::hubs::HubUrl::parse_all(&config.hub_urls).map_err(IdentityError::from)?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| SpokeError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    link::install_crypto_provider();

    let store = IdentityStore::new(&config.data_dir);
    let registration = match (&config.bootstrap_token, &config.hub_ca_pem) {
        (Some(token), Some(ca)) => Some(identity::Registration {
            hub_urls: config.hub_urls.clone(),
            hub_ca_pem: ca.clone(),
            token: token.clone(),
            cluster_name: config.cluster_name.clone(),
            labels: config.labels.clone(),
            agent_version: config.agent_version.clone(),
        }),
        _ => None,
    };
    let identity = identity::ensure_identity(&store, registration.as_ref()).await?;
    let cluster = Arc::new(Cluster::connect(&config.kube).await?);

    let mut link_config = LinkConfig::new(
        String::new(),
        config.cluster_name.clone(),
        config.data_dir.join("state"),
    );
    link_config.hub_urls = config.hub_urls.clone();
    link_config.agent_version = config.agent_version.clone();
    link_config.heartbeat_interval = config.heartbeat_interval;
    link_config.identity_store = Some(store.clone());
    let diffs = link::DiffSlot::default();
    link_config.diffs = diffs.clone();
    let link_state = LinkState::load(link_config)?;

    let metrics = Arc::new(SpokeMetrics::new());
    {
        let metrics = Arc::clone(&metrics);
        link_state.on_outbox_error(move || metrics.error(metrics::ErrorKind::report));
    }
    let mut agent_config = AgentConfig::new(config.cluster_name.clone());
    agent_config.progress_timeout = config.progress_timeout;
    agent_config.helm_command = config.helm_command.clone();
    match crate::charts::ChartCache::new(
        config.data_dir.join("charts"),
        config.chart_fetch.clone(),
        config.chart_limits,
    ) {
        Ok(cache) => agent_config.charts = Some(Arc::new(cache)),
        Err(e) => {
            tracing::warn!(error = %e, "no chart cache: charts from repositories will not render")
        }
    }
    agent_config.max_concurrent_renders = config.max_concurrent_renders;
    agent_config.diffs = Some(diffs);
    agent_config.metrics = Arc::clone(&metrics);
    let git =
        Arc::new(GitCache::new(config.data_dir.join("git")).with_fetch_limits(config.git_fetch));

    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();
    let http_addr = match config.http_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| SpokeError::Bind { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| SpokeError::Bind { addr, source })?;
            let router = crate::http::router(link_state.clone(), Arc::clone(&metrics));
            tasks.push(tokio::spawn(crate::http::serve(
                listener,
                router,
                cancel.child_token(),
            )));
            Some(bound)
        }
        None => None,
    };
    let link = link::run(link_state.clone(), identity, cancel.child_token());
    let link_task = match &config.link_runtime {
        Some(runtime) => runtime.spawn(link),
        None => tokio::spawn(link),
    };
    let agent_task = tokio::spawn(agent::run(
        agent_config,
        cluster,
        git,
        Arc::new(MeteredReporter {
            link: link_state.clone(),
            metrics: Arc::clone(&metrics),
        }),
        link_state.desired(),
        cancel.child_token(),
    ));
    tasks.push(link_task);
    tasks.push(agent_task);
    tracing::info!(cluster = %config.cluster_name, hubs = ?config.hub_urls, http = ?http_addr, "spoke started");
    Ok(SpokeHandle {
        cluster_name: config.cluster_name,
        cancel,
        tasks,
        link: link_state,
        metrics,
        http_addr,
    })
}

/// Hands reports to the link, counting them (and the Targets' states) for `/metrics`.
struct MeteredReporter {
    link: Arc<LinkState>,
    metrics: Arc<SpokeMetrics>,
}

impl Reporter for MeteredReporter {
    fn report(&self, status: TargetStatus) {
        self.metrics.reported(&status);
        self.link.report(status);
    }
}
