//! The Kubernetes-native API (docs/kube-api.md): with `--kube-api`, a kube-rs controller
//! against the hub's management cluster for the `gitfleet.dev/v1` custom resources Repo, App,
//! ClusterGroup and Project (reconciled into the hub through the engine's validation and apply,
//! their status written back) and Cluster (one per registered cluster; its `spec.labels` and the
//! hub's labels kept in step). The only module of the hub that knows kube-rs: it converts to the
//! hub's documents and records at its edge, with the decisions in `gitfleet_core::kube_api`.
//!
//! It runs on the replica that leads only (alone, or elected): it applies resources, which only
//! the leader writes; a replica that loses its lease stops the whole process, controller
//! included, and the next leader takes over from the objects as they are.

mod clusters;
mod resources;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::engine::Engine;
use crate::leadership::LeadershipWatch;

/// The namespace watched when none is given and the hub does not run in a pod.
pub const DEFAULT_NAMESPACE: &str = "gitfleet";

/// How the hub reaches its management cluster.
#[derive(Debug, Clone)]
pub struct KubeApiConfig {
    /// A kubeconfig file (its current context); `None`: in-cluster configuration (kube's
    /// `Config::infer`).
    pub kubeconfig: Option<PathBuf>,
    /// The one namespace whose custom resources the hub takes; `None`: the pod's namespace in a
    /// cluster, else [`DEFAULT_NAMESPACE`].
    pub namespace: Option<String>,
    /// The safety net: how often every object is reconciled again (its status written only
    /// when it changed) and the Clusters' objects compared with the hub's clusters; changes are
    /// followed as they happen besides.
    pub resync: Duration,
}

impl KubeApiConfig {
    pub fn new(kubeconfig: Option<PathBuf>, namespace: Option<String>) -> Self {
        Self {
            kubeconfig,
            namespace,
            resync: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubeApiError {
    #[error("management cluster configuration: {0}")]
    Config(String),
    #[error("management cluster: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
}

/// What every reconcile shares.
pub(crate) struct Context {
    pub engine: Arc<Engine>,
    pub client: kube::Client,
    pub namespace: String,
    pub resync: Duration,
}

async fn connect(config: &KubeApiConfig) -> Result<(kube::Client, String), KubeApiError> {
    let (kube_config, in_cluster) = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| KubeApiError::Config(format!("{}: {e}", path.display())))?;
            let c = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| KubeApiError::Config(format!("{}: {e}", path.display())))?;
            (c, false)
        }
        None => (
            kube::Config::infer()
                .await
                .map_err(|e| KubeApiError::Config(e.to_string()))?,
            true,
        ),
    };
    let namespace = match &config.namespace {
        Some(ns) => ns.clone(),
        // In a pod, `infer` reads the service account's namespace.
        None if in_cluster && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
            kube_config.default_namespace.clone()
        }
        None => DEFAULT_NAMESPACE.to_owned(),
    };
    let client = kube::Client::try_from(kube_config)?;
    Ok((client, namespace))
}

/// Runs the controller while this replica leads, until `shutdown`; a management cluster that
/// cannot be reached is tried again with a backoff (the hub serves on regardless).
pub fn spawn(
    engine: Arc<Engine>,
    config: KubeApiConfig,
    mut leadership: LeadershipWatch,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if leadership.borrow_and_update().leads() {
                break;
            }
            tokio::select! {
                changed = leadership.changed() => if changed.is_err() { return },
                () = shutdown.cancelled() => return,
            }
        }
        let mut backoff = Duration::from_secs(1);
        loop {
            let outcome = tokio::select! {
                r = run(Arc::clone(&engine), &config) => r,
                () = shutdown.cancelled() => return,
            };
            if let Err(e) = outcome {
                warn!(error = %e, retry_in = ?backoff, "Kubernetes API controller stopped");
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {},
                () = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
    })
}

async fn run(engine: Arc<Engine>, config: &KubeApiConfig) -> Result<(), KubeApiError> {
    let (client, namespace) = connect(config).await?;
    info!(%namespace, "Kubernetes API controller started");
    let ctx = Arc::new(Context {
        engine,
        client,
        namespace,
        resync: config.resync,
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (kind, plural) in gitfleet_core::kube_api::RESOURCE_KINDS {
        tasks.spawn(resources::control(Arc::clone(&ctx), kind, plural));
    }
    tasks.spawn(clusters::keep_in_step(Arc::clone(&ctx)));
    // Each runs until the process stops; one that ends is an error.
    match tasks.join_next().await {
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(KubeApiError::Config(format!("controller task: {e}"))),
        None => Ok(()),
    }
}

/// The API resource of a gitfleet custom resource kind.
pub(crate) fn api_resource(kind: &str, plural: &str) -> kube::core::ApiResource {
    use gitfleet_core::kube_api::{GROUP, VERSION};
    kube::core::ApiResource {
        group: GROUP.to_owned(),
        version: VERSION.to_owned(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: kind.to_owned(),
        plural: plural.to_owned(),
    }
}

/// Now, RFC 3339 to the second, as Kubernetes writes times.
pub(crate) fn now_rfc3339() -> String {
    rfc3339(crate::pki::now_unix())
}

pub(crate) fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
