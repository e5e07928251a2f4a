//! A whole fleet in one process: kubesim with N virtual clusters, a hub, one spoke per cluster,
//! and a local Git repository. End-to-end tests, the demo and benchmarks build on it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use gitfleet_cli::client::AdminClient;
use gitfleet_cli::client::config::{ClientConfig, ConfigFile as _};
use gitfleet_core::documents::{Format, parse_text};
use gitfleet_core::yaml::{Budget, Limits};
use gitfleet_hub::engine::TokenSpec;
use gitfleet_hub::runtime::{HubConfig, HubHandle};
use gitfleet_proto::v1 as pb;
use gitfleet_spoke::{KubeSource, SpokeConfig, SpokeHandle};

use crate::gitrepo::GitRepo;
use gitfleet_kubesim::{Kubesim, KubesimConfig, KubesimHandle};

/// One simulated cluster and the labels its spoke registers with.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl ClusterSpec {
    pub fn new(name: &str) -> Self {
        ClusterSpec {
            name: name.to_owned(),
            labels: BTreeMap::new(),
        }
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }
}

#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub clusters: Vec<ClusterSpec>,
    /// How long kubesim's simulated controllers take to make a workload ready.
    pub ready_delay: Duration,
    /// Where everything lives; a fresh temporary directory when `None`.
    pub work_dir: Option<PathBuf>,
    /// How long the certificates the hub issues to spokes are valid (the hub's default when
    /// `None`); short values make spokes renew within a test.
    pub cluster_cert_validity: Option<Duration>,
    /// Clusters whose spokes [`Fleet::start`] leaves to the test (to start them with
    /// [`Fleet::start_spoke_via`], say behind a proxy).
    pub deferred_spokes: Vec<String>,
    /// The runtime the spokes' hub links run on (`SpokeConfig::link_runtime`); the test's
    /// when `None`.
    pub link_runtime: Option<tokio::runtime::Handle>,
    /// The spokes' `--progress-timeout`: how long objects may progress (and hooks run, and a
    /// wave take to become healthy) before they count as Degraded.
    pub progress_timeout: Duration,
    /// The spokes' `--helm-command` (`helm` from `PATH` when `None`).
    pub helm_command: Option<PathBuf>,
    /// The hub's `--repo-credentials` file, as loaded.
    pub hub_credentials: gitfleet_hub::credentials::Credentials,
    /// Certificate authorities the hub and the spokes trust for chart repositories and
    /// registries (`--chart-ca-file`): a test serving charts over HTTPS.
    pub chart_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The hub's `--fleet-repo`/`--fleet-path`: Repos and Apps kept in Git.
    pub fleet: Option<gitfleet_hub::fleetsync::FleetSource>,
    /// The hub's `--kube-api`: its management cluster (a kubeconfig) and namespace.
    pub kube_api: Option<gitfleet_hub::kube_api::KubeApiConfig>,
}

impl FleetOptions {
    pub fn new(clusters: Vec<ClusterSpec>) -> Self {
        FleetOptions {
            clusters,
            ready_delay: Duration::from_millis(200),
            work_dir: None,
            cluster_cert_validity: None,
            deferred_spokes: Vec::new(),
            link_runtime: None,
            progress_timeout: Duration::from_secs(30),
            helm_command: None,
            hub_credentials: Default::default(),
            chart_roots: Vec::new(),
            fleet: None,
            kube_api: None,
        }
    }
}

/// A running fleet. Dropping it without [`Fleet::shutdown`] leaves tasks to the runtime's end.
pub struct Fleet {
    pub kubesim: KubesimHandle,
    hub: Option<HubHandle>,
    pub spokes: BTreeMap<String, SpokeHandle>,
    pub git: GitRepo,
    clusters: Vec<ClusterSpec>,
    options: FleetOptions,
    admin: AdminClient,
    work_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Fleet {
    /// Starts kubesim, a hub, registers one spoke per cluster with a bootstrap token, and creates
    /// an empty Git repository (nothing is committed yet).
    pub async fn start(options: FleetOptions) -> anyhow::Result<Fleet> {
        let (tmp, work_dir) = match &options.work_dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let t = tempfile::tempdir().context("creating a temporary directory")?;
                let p = t.path().to_owned();
                (Some(t), p)
            }
        };
        let names: Vec<String> = options.clusters.iter().map(|c| c.name.clone()).collect();
        let mut ks_config = KubesimConfig::new(names);
        ks_config.ready_delay = options.ready_delay;
        let kubesim = Kubesim::start(ks_config)
            .await
            .context("starting kubesim")?;

        let hub = gitfleet_hub::runtime::start(hub_config(&work_dir, &options))
            .await
            .context("starting the hub")?;
        let admin = admin_client(hub.admin_config_path()).await?;
        let git = GitRepo::init(&work_dir.join("git")).context("creating the Git repository")?;

        let mut fleet = Fleet {
            kubesim,
            hub: Some(hub),
            spokes: BTreeMap::new(),
            git,
            clusters: options.clusters.clone(),
            options: options.clone(),
            admin,
            work_dir,
            _tmp: tmp,
        };
        for cluster in options.clusters {
            if options.deferred_spokes.contains(&cluster.name) {
                continue;
            }
            fleet.start_spoke(&cluster).await?;
        }
        Ok(fleet)
    }

    pub fn hub(&self) -> &HubHandle {
        self.hub
            .as_ref()
            .expect("the hub runs except inside restart_hub")
    }

    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    pub fn clusters(&self) -> &[ClusterSpec] {
        &self.clusters
    }

    /// Starts (or restarts) the spoke of `cluster`, registering it when its data directory holds
    /// no identity yet.
    pub async fn start_spoke(&mut self, cluster: &ClusterSpec) -> anyhow::Result<()> {
        let url = self.hub().grpc_url();
        self.start_spoke_via(cluster, url).await
    }

    /// [`Fleet::start_spoke`], dialing the hub at `hub_url` (a proxy in front of it).
    pub async fn start_spoke_via(
        &mut self,
        cluster: &ClusterSpec,
        hub_url: String,
    ) -> anyhow::Result<()> {
        self.start_spoke_via_each(cluster, vec![hub_url]).await
    }

    /// [`Fleet::start_spoke`], given several hub addresses (`--hub` repeated), in this order.
    pub async fn start_spoke_via_each(
        &mut self,
        cluster: &ClusterSpec,
        hub_urls: Vec<String>,
    ) -> anyhow::Result<()> {
        let hub = self.hub();
        // A token for this cluster only, giving it its labels (a spoke cannot choose its own).
        let token = hub
            .create_token_with(TokenSpec {
                max_uses: 1,
                cluster: Some(cluster.name.clone()),
                ..TokenSpec::new(Duration::from_secs(600), cluster.labels.clone())
            })
            .await
            .context("creating a bootstrap token")?;
        let kube = KubeSource::Config(Box::new(self.kubesim.kube_config(&cluster.name)));
        let mut config = SpokeConfig::new(
            String::new(),
            self.work_dir.join("spokes").join(&cluster.name),
            cluster.name.clone(),
            kube,
        );
        config.hub_urls = hub_urls;
        config.hub_ca_pem = Some(hub.ca_pem().to_owned());
        config.bootstrap_token = Some(token);
        config.labels = cluster.labels.clone();
        config.heartbeat_interval = Duration::from_secs(2);
        config.progress_timeout = self.options.progress_timeout;
        if let Some(helm) = &self.options.helm_command {
            config.helm_command.clone_from(helm);
        }
        config.http_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        config.link_runtime = self.options.link_runtime.clone();
        // Helm renders through scripts/helm (scripts/charts-venv builds what it needs), and
        // the tests serve charts on 127.0.0.1.
        config.helm_command = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/helm");
        config.chart_fetch = gitfleet_support::fetch::FetchPolicy {
            allow_loopback: true,
            timeout: Duration::from_secs(10),
            extra_roots: self.options.chart_roots.clone(),
        };
        let spoke = gitfleet_spoke::start(config)
            .await
            .with_context(|| format!("starting the spoke of {}", cluster.name))?;
        self.spokes.insert(cluster.name.clone(), spoke);
        Ok(())
    }

    /// Stops the hub gracefully (spokes get a Goodbye) and starts a new one from the same data
    /// directory on the same address.
    pub async fn restart_hub(&mut self) -> anyhow::Result<()> {
        let hub = self.hub.take().expect("the hub runs");
        let addr = hub.grpc_addr();
        hub.shutdown().await;
        self.start_hub_at(addr).await
    }

    /// Drops the hub without a goodbye (streams end mid-flight, as when its process dies but its
    /// flushed store survives), then starts a new one from the same data directory and address.
    pub async fn crash_and_restart_hub(&mut self) -> anyhow::Result<()> {
        let hub = self.hub.take().expect("the hub runs");
        let addr = hub.grpc_addr();
        drop(hub);
        self.start_hub_at(addr).await
    }

    /// Stops the hub gracefully and leaves it stopped (until [`Fleet::start_hub_at`]); returns
    /// the address it listened on.
    pub async fn stop_hub(&mut self) -> std::net::SocketAddr {
        let hub = self.hub.take().expect("the hub runs");
        let addr = hub.grpc_addr();
        hub.shutdown().await;
        addr
    }

    /// Starts a hub from the fleet's hub data directory (its CA and store) listening on `addr`:
    /// the same hub back, or another replica of it.
    pub async fn start_hub_at(&mut self, addr: std::net::SocketAddr) -> anyhow::Result<()> {
        // The old listener may take a moment to be released.
        let deadline = Instant::now() + Duration::from_secs(20);
        let hub = loop {
            let mut config = hub_config(&self.work_dir, &self.options);
            config.grpc_listen = addr;
            match gitfleet_hub::runtime::start(config).await {
                Ok(hub) => break hub,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("hub restart not possible yet: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e).context("restarting the hub"),
            }
        };
        self.admin = admin_client(hub.admin_config_path()).await?;
        self.hub = Some(hub);
        Ok(())
    }

    /// Applies gitfleet resources written as (multi-document) YAML.
    pub async fn apply_yaml(&mut self, yaml: &str) -> anyhow::Result<Vec<pb::ApplyOutcome>> {
        let documents = resource_documents("inline", yaml)?;
        Ok(self.admin.apply(documents, false).await?)
    }

    /// A Repo resource for the fleet's Git repository, polled every 200 ms.
    pub fn repo_yaml(&self, name: &str) -> String {
        format!(
            "apiVersion: gitfleet.dev/v1\nkind: Repo\nmetadata: {{ name: {name} }}\nspec:\n  url: {url}\n  ref: {{ branch: main }}\n  pollInterval: 200ms\n",
            url = self.git.url()
        )
    }

    pub async fn status(&mut self, app: &str) -> anyhow::Result<Vec<pb::TargetStatus>> {
        Ok(self.admin.status(app, "").await?)
    }

    pub fn admin(&mut self) -> &mut AdminClient {
        &mut self.admin
    }

    /// Polls the hub's status of `app` until `done` holds, or fails after `deadline` with the
    /// last status seen.
    pub async fn wait_for(
        &mut self,
        app: &str,
        what: &str,
        deadline: Duration,
        mut done: impl FnMut(&[pb::TargetStatus]) -> bool,
    ) -> anyhow::Result<Vec<pb::TargetStatus>> {
        let mut last = Vec::new();
        let found = until_async(what, deadline, async || {
            let status = self.status(app).await?;
            if done(&status) {
                return Ok(Some(status));
            }
            last = status;
            Ok(None)
        })
        .await;
        found.with_context(|| format!("last status:\n{}", describe(&last)))
    }

    /// Runs the `gitfleet` CLI in-process against the hub as its admin: what it printed, or
    /// the error.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let config = self.hub().admin_config_path().display().to_string();
        let mut argv = vec!["gitfleet", "--config", config.as_str()];
        argv.extend_from_slice(args);
        let mut out = Vec::new();
        gitfleet_cli::cli::run_args(argv, &mut out)
            .await
            .with_context(|| format!("gitfleet {}", args.join(" ")))?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Waits until `expected` Targets of `app` are synced and healthy at `commit`.
    pub async fn wait_converged(
        &mut self,
        app: &str,
        commit: &str,
        expected: usize,
        deadline: Duration,
    ) -> anyhow::Result<Vec<pb::TargetStatus>> {
        let what = format!("{expected} Targets of {app} synced and healthy at {commit}");
        self.wait_for(app, &what, deadline, |s| {
            s.len() == expected && s.iter().all(|t| is_converged(t, commit))
        })
        .await
    }

    /// Stops spokes, hub and kubesim.
    pub async fn shutdown(mut self) {
        for (_, spoke) in std::mem::take(&mut self.spokes) {
            spoke.shutdown().await;
        }
        if let Some(hub) = self.hub.take() {
            hub.shutdown().await;
        }
        self.kubesim.shutdown().await;
    }
}

/// Synced and healthy at exactly `commit`.
pub fn is_converged(t: &pb::TargetStatus, commit: &str) -> bool {
    t.desired_revision == commit
        && t.applied_revision == commit
        && t.sync == pb::SyncState::Synced as i32
        && t.health == pb::HealthState::Healthy as i32
}

/// One line per Target, for failure messages.
pub fn describe(status: &[pb::TargetStatus]) -> String {
    status
        .iter()
        .map(|t| {
            format!(
                "  {}/{}: desired {} applied {} sync {:?} health {:?} {}",
                t.app,
                t.cluster,
                short(&t.desired_revision),
                short(&t.applied_revision),
                pb::SyncState::try_from(t.sync).unwrap_or_default(),
                pb::HealthState::try_from(t.health).unwrap_or_default(),
                t.message
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn short(rev: &str) -> &str {
    rev.get(..8).unwrap_or(rev)
}

fn hub_config(work_dir: &Path, options: &FleetOptions) -> HubConfig {
    let mut config = HubConfig::for_tests(work_dir.join("hub"));
    if let Some(validity) = options.cluster_cert_validity {
        config.cluster_cert_validity = validity;
    }
    config.repo_credentials = options.hub_credentials.clone();
    config.fleet.clone_from(&options.fleet);
    config.kube_api.clone_from(&options.kube_api);
    config
        .chart_fetch
        .extra_roots
        .clone_from(&options.chart_roots);
    config
}

async fn admin_client(config_path: &Path) -> anyhow::Result<AdminClient> {
    let config = ClientConfig::load(config_path)?;
    let context = config.context(None)?;
    Ok(AdminClient::connect(context).await?)
}

/// Waits until `check` (read from local state, cheap) has an answer, re-checking every 50 ms, or
/// fails after `deadline` naming `what`. The one poll interval the tests' condition waits share.
pub async fn until<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        if let Some(answer) = check()? {
            return Ok(answer);
        }
        if start.elapsed() > deadline {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`until`] for checks that must ask something (the hub, a cluster): waits until `check` has
/// an answer, re-checking every 100 ms, or fails after `deadline` naming `what`.
pub async fn until_async<T>(
    what: &str,
    deadline: Duration,
    mut check: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        if let Some(answer) = check().await? {
            return Ok(answer);
        }
        if start.elapsed() > deadline {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resources written as (multi-document) YAML, as the Admin API takes them, read as `gitfleet
/// apply` reads them: origins `{file}#{index}`, empty documents skipped.
pub fn resource_documents(file: &str, yaml: &str) -> anyhow::Result<Vec<pb::ResourceDocument>> {
    let budget = Budget::new(Limits::DEFAULT);
    Ok(parse_text(file, yaml, Format::Yaml, &budget)?
        .into_iter()
        .map(|d| pb::ResourceDocument {
            origin: d.origin,
            json: d.value.to_string(),
        })
        .collect())
}
