//! `gitfleet-spoke run`: the spoke agent of one cluster.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use gitfleet_spoke::allocator::{self, Allocator};
use gitfleet_spoke::runtime::{self, KubeSource, SpokeConfig};

#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

#[derive(Parser)]
#[command(name = "gitfleet-spoke", version, about = "gitfleet spoke agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connect to the hub and keep this cluster at the desired state.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Hub address, e.g. https://hub.example:7443. Repeat it (or give a comma-separated list
    /// in the variable) for the replicas of a highly available hub: the spoke dials them in
    /// turn and fails over to the next; a name that resolves to several addresses is tried
    /// address by address.
    #[arg(long, env = "GITFLEET_HUB", value_delimiter = ',', required = true)]
    hub: Vec<String>,
    /// Directory for the identity, desired state, status outbox and Git cache.
    #[arg(long, env = "GITFLEET_DATA_DIR")]
    data_dir: PathBuf,
    /// How log lines are written: `text` for people, `json` (one object per line, with
    /// `trace_id`) for log pipelines.
    #[arg(long, env = "GITFLEET_LOG_FORMAT", default_value = "text")]
    log_format: gitfleet_spoke::telemetry::LogFormat,
    /// Kubeconfig file; in-cluster configuration when absent.
    #[arg(long, env = "GITFLEET_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Context in the kubeconfig (default: its current context).
    #[arg(long, env = "GITFLEET_CONTEXT")]
    context: Option<String>,
    /// Name of this cluster (a DNS-1123 label).
    #[arg(long, env = "GITFLEET_CLUSTER_NAME")]
    cluster_name: String,
    /// Label proposed at registration, `key=value`; repeatable.
    #[arg(long = "label", env = "GITFLEET_LABELS", value_delimiter = ',')]
    labels: Vec<String>,
    /// Bootstrap token from `gitfleet token create` (first start only).
    #[arg(long, env = "GITFLEET_BOOTSTRAP_TOKEN", hide_env_values = true)]
    bootstrap_token: Option<String>,
    /// PEM file with the hub's CA certificate (first start only).
    #[arg(long, env = "GITFLEET_HUB_CA")]
    hub_ca: Option<PathBuf>,
    /// Address of the HTTP listener: /healthz, /readyz (connected to the hub) and /metrics.
    #[arg(long, env = "GITFLEET_HTTP_LISTEN", default_value = "0.0.0.0:9090")]
    http_listen: std::net::SocketAddr,
    /// Seconds objects may progress before they count as Degraded.
    #[arg(long, env = "GITFLEET_PROGRESS_TIMEOUT", default_value_t = 300)]
    progress_timeout: u64,
    /// The helm binary that renders Helm charts (`helm template`); a path or a name on PATH.
    #[arg(long, env = "GITFLEET_HELM_COMMAND", default_value = "helm")]
    helm_command: PathBuf,
    /// Most renders (`kustomize build`, `helm template`, the parse of their output or of plain
    /// YAML) running at once, over every Target; the others wait their turn.
    #[arg(long, env = "GITFLEET_MAX_CONCURRENT_RENDERS", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..))]
    max_concurrent_renders: u16,
    /// Threads that run the agent. The spoke mostly waits on the network; a thread per core of
    /// a large node would only cost memory.
    #[arg(long, env = "GITFLEET_WORKER_THREADS", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: u16,
    /// Seconds a Git fetch (and the read of the App's files after it) may take; a fetch that
    /// takes longer fails as transient and is retried.
    #[arg(long, env = "GITFLEET_GIT_FETCH_TIMEOUT", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..))]
    git_fetch_timeout: u64,
    /// Most bytes one Git fetch may receive from the server.
    #[arg(long, env = "GITFLEET_GIT_FETCH_MAX_BYTES", default_value_t = 1 << 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    git_fetch_max_bytes: u64,
    /// PEM bundle of certificate authorities trusted, besides the system's, when downloading
    /// Helm charts from chart repositories and OCI registries (a private repository behind a
    /// company CA).
    #[arg(long, env = "GITFLEET_CHART_CA_FILE")]
    chart_ca_file: Option<PathBuf>,
}

fn parse_labels(labels: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for label in labels {
        let Some((key, value)) = label.split_once('=') else {
            bail!("label {label:?} is not key=value");
        };
        out.insert(key.trim().to_owned(), value.trim().to_owned());
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let Command::Run(args) = Cli::parse().command;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(args.worker_threads))
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(args))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let telemetry = gitfleet_spoke::telemetry::init(args.log_format);
    allocator::return_freed_memory();
    let kube = match args.kubeconfig {
        Some(path) => KubeSource::Kubeconfig {
            path,
            context: args.context,
        },
        None => KubeSource::InCluster,
    };
    let mut config = SpokeConfig::new(String::new(), args.data_dir, args.cluster_name, kube);
    config.hub_urls = args.hub;
    config.labels = parse_labels(&args.labels)?;
    config.bootstrap_token = args.bootstrap_token;
    config.progress_timeout = std::time::Duration::from_secs(args.progress_timeout);
    config.helm_command = args.helm_command;
    config.max_concurrent_renders = usize::from(args.max_concurrent_renders);
    config.git_fetch = gitfleet_spoke::git::FetchLimits {
        timeout: std::time::Duration::from_secs(args.git_fetch_timeout),
        max_bytes: usize::try_from(args.git_fetch_max_bytes)
            .context("--git-fetch-max-bytes is larger than this machine can address")?,
    };
    config.http_listen = Some(args.http_listen);
    if let Some(path) = &args.chart_ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading --chart-ca-file {}", path.display()))?;
        config
            .chart_fetch
            .trust_pem(&pem, &path.display().to_string())
            .map_err(anyhow::Error::msg)
            .context("--chart-ca-file")?;
    }
    if let Some(path) = args.hub_ca {
        let pem = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the hub CA from {}", path.display()))?;
        config.hub_ca_pem = Some(pem);
    }
    let spoke = runtime::start(config).await.context("starting the spoke")?;
    shutdown_signal()
        .await
        .context("waiting for a shutdown signal")?;
    tracing::info!("shutting down");
    spoke.shutdown().await;
    telemetry.shutdown();
    Ok(())
}

/// Ctrl-C or SIGTERM (what Kubernetes sends a pod before it stops it).
async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}
