//! `kubesim`: serve many simulated Kubernetes clusters from one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use gitfleet_kubesim::{Kubesim, KubesimConfig};

#[derive(Parser)]
#[command(
    name = "kubesim",
    version,
    about = "A Kubernetes API simulator serving many virtual clusters"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "KUBESIM_LISTEN", default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Number of virtual clusters.
    #[arg(long, env = "KUBESIM_CLUSTERS", default_value_t = 1)]
    clusters: usize,
    /// Cluster names are this prefix plus a number from 1.
    #[arg(long, env = "KUBESIM_CLUSTER_PREFIX", default_value = "sim-")]
    cluster_prefix: String,
    /// Write `<cluster>.kubeconfig` files here.
    #[arg(long, env = "KUBESIM_KUBECONFIG_DIR")]
    kubeconfig_dir: Option<PathBuf>,
    /// Serve HTTPS with a generated CA (written into the kubeconfigs).
    #[arg(long, env = "KUBESIM_TLS")]
    tls: bool,
    /// Require this bearer token.
    #[arg(long, env = "KUBESIM_TOKEN")]
    token: Option<String>,
    /// How long workloads take to become ready.
    #[arg(long, env = "KUBESIM_READY_DELAY", default_value = "500ms", value_parser = humantime::parse_duration)]
    ready_delay: Duration,
    /// How often watches that allow bookmarks get one.
    #[arg(long, env = "KUBESIM_BOOKMARK_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    bookmark_interval: Duration,
    /// Run no ingress controller: Ingresses stay without an address, as on a cluster that has
    /// none.
    #[arg(long, env = "KUBESIM_NO_INGRESS_CONTROLLER")]
    no_ingress_controller: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let names: Vec<String> = (1..=cli.clusters)
        .map(|i| format!("{}{i}", cli.cluster_prefix))
        .collect();
    let mut config = KubesimConfig::new(names);
    config.listen = cli.listen;
    config.tls = cli.tls;
    config.token = cli.token;
    config.ready_delay = cli.ready_delay;
    config.bookmark_interval = cli.bookmark_interval;
    config.ingress_controller = !cli.no_ingress_controller;
    let handle = Kubesim::start(config).await.context("starting kubesim")?;
    println!(
        "kubesim listening on {} with {} clusters ({})",
        handle.base_url(),
        cli.clusters,
        handle.cluster_url(&format!("{}1", cli.cluster_prefix))
    );
    if let Some(dir) = &cli.kubeconfig_dir {
        let written = handle
            .write_kubeconfigs(dir)
            .with_context(|| format!("writing kubeconfigs to {}", dir.display()))?;
        println!("wrote {} kubeconfigs to {}", written.len(), dir.display());
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    handle.shutdown().await;
    Ok(())
}
