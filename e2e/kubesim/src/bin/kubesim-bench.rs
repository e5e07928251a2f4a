//! `kubesim-bench`: server-side apply throughput and memory per virtual cluster holding the
//! guestbook app. Build with `--release` to measure.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use comfy_table::Table;
use futures::StreamExt;
use gitfleet_kubesim::{Kubesim, KubesimConfig, KubesimHandle};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

#[derive(Parser)]
#[command(
    name = "kubesim-bench",
    about = "Measure kubesim's server-side apply rate and memory per cluster"
)]
struct Cli {
    /// Virtual clusters, each holding the guestbook app.
    #[arg(long, env = "KUBESIM_BENCH_CLUSTERS", default_value_t = 2000)]
    clusters: usize,
    /// Concurrent HTTP clients.
    #[arg(long, env = "KUBESIM_BENCH_CONCURRENCY", default_value_t = 64)]
    concurrency: usize,
    /// How long the steady-state apply phase runs.
    #[arg(long, env = "KUBESIM_BENCH_DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The guestbook manifests (multi-document YAML).
    #[arg(long, env = "KUBESIM_BENCH_MANIFEST", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/corpus/kubernetes-examples/web/guestbook/all-in-one/guestbook-all-in-one.yaml"))]
    manifest: PathBuf,
}

/// One object to apply: its URL path below the cluster prefix and its body.
struct Object {
    path: String,
    body: Value,
}

fn objects(manifest: &str) -> anyhow::Result<Vec<Object>> {
    let mut out = Vec::new();
    for v in gitfleet_kubesim::yaml::documents(manifest).context("parsing the manifest")? {
        let name = v["metadata"]["name"]
            .as_str()
            .context("object without a name")?;
        let path = match v["kind"].as_str() {
            Some("Deployment") => format!("/apis/apps/v1/namespaces/default/deployments/{name}"),
            Some("Service") => format!("/api/v1/namespaces/default/services/{name}"),
            other => bail!("the benchmark applies Deployments and Services, not {other:?}"),
        };
        out.push(Object { path, body: v });
    }
    Ok(out)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn apply(client: &HttpClient, url: &str, body: Bytes) -> anyhow::Result<()> {
    let req = http::Request::builder()
        .method("PATCH")
        .uri(url)
        .header("content-type", "application/apply-patch+yaml")
        .body(Full::new(body))?;
    let resp = client.request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{status}: {}", String::from_utf8_lossy(&bytes));
    }
    Ok(())
}

/// Applies every (cluster, object) pair once with `concurrency` requests in flight; returns the
/// number of applies and how long they took.
async fn apply_all(
    client: &HttpClient,
    base: &str,
    clusters: &[String],
    objects: &[Object],
    concurrency: usize,
    generation: u64,
) -> anyhow::Result<(u64, Duration)> {
    let bodies: Vec<Bytes> = objects
        .iter()
        .map(|o| {
            let mut b = o.body.clone();
            b["metadata"]["annotations"]["bench/generation"] =
                Value::String(generation.to_string());
            Bytes::from(serde_json::to_vec(&b).unwrap_or_default())
        })
        .collect();
    let started = Instant::now();
    let jobs = clusters.iter().flat_map(|c| {
        objects.iter().zip(&bodies).map(move |(o, b)| {
            (
                format!(
                    "{base}/clusters/{c}{}?fieldManager=bench&force=true",
                    o.path
                ),
                b.clone(),
            )
        })
    });
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(jobs)
        .map(|(url, body)| async move { apply(client, &url, body).await })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let n = results.len() as u64;
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        return Err(e.context("an apply failed"));
    }
    Ok((n, started.elapsed()))
}

async fn settle(h: &KubesimHandle, cluster: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let ready = h
            .get_object(
                cluster,
                "apps/v1",
                "Deployment",
                Some("default"),
                "frontend",
            )
            .and_then(|d| {
                d.pointer("/status/availableReplicas")
                    .and_then(Value::as_i64)
            })
            .is_some();
        if ready {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let manifest = std::fs::read_to_string(&cli.manifest)
        .with_context(|| format!("reading {}", cli.manifest.display()))?;
    let objects = objects(&manifest)?;

    let mut config = KubesimConfig::new(Vec::<String>::new());
    config.ready_delay = Duration::from_millis(100);
    let h = Kubesim::start(config).await.context("starting kubesim")?;
    let base = h.base_url();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(cli.concurrency)
        .build(connector);

    // Memory: empty clusters first, then the guestbook in each, after the controllers settled.
    let rss_start = rss_kib();
    let names: Vec<String> = (0..cli.clusters).map(|i| format!("bench-{i}")).collect();
    for n in &names {
        h.add_cluster(n);
    }
    let rss_empty = rss_kib();
    let (created, create_time) =
        apply_all(&client, &base, &names, &objects, cli.concurrency, 0).await?;
    if let Some(last) = names.last() {
        settle(&h, last).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_full = rss_kib();
    let stored: usize = names
        .iter()
        .take(10)
        .map(|n| h.stored_bytes(n))
        .sum::<usize>()
        / 10.min(names.len().max(1));

    // Throughput: re-apply changed objects (real writes: a new annotation value each round).
    let total = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut round = 1;
    while started.elapsed() < cli.duration {
        let (n, _) = apply_all(&client, &base, &names, &objects, cli.concurrency, round).await?;
        total.fetch_add(n, Ordering::Relaxed);
        round += 1;
    }
    let update_time = started.elapsed();
    let updates = total.load(Ordering::Relaxed);
    // The same objects again, unchanged: no-op applies (what a steady-state GitOps sync sends).
    let (noops, noop_time) =
        apply_all(&client, &base, &names, &objects, cli.concurrency, round - 1).await?;

    let per_cluster = |kib: u64| kib as f64 / cli.clusters.max(1) as f64;
    let mut table = Table::new();
    table.set_header(vec!["measure", "value"]);
    table.add_row(vec![
        "virtual clusters".to_string(),
        cli.clusters.to_string(),
    ]);
    table.add_row(vec![
        "objects per cluster (guestbook)".to_string(),
        objects.len().to_string(),
    ]);
    table.add_row(vec![
        "concurrent clients".to_string(),
        cli.concurrency.to_string(),
    ]);
    table.add_row(vec![
        "SSA creates/s".to_string(),
        format!("{:.0}", created as f64 / create_time.as_secs_f64()),
    ]);
    table.add_row(vec![
        "SSA updates/s (changed objects)".to_string(),
        format!(
            "{:.0} ({updates} in {:.1}s)",
            updates as f64 / update_time.as_secs_f64(),
            update_time.as_secs_f64()
        ),
    ]);
    table.add_row(vec![
        "SSA no-op applies/s (unchanged)".to_string(),
        format!("{:.0}", noops as f64 / noop_time.as_secs_f64()),
    ]);
    table.add_row(vec![
        "RSS per empty cluster".to_string(),
        format!(
            "{:.1} KiB",
            per_cluster(rss_empty.saturating_sub(rss_start))
        ),
    ]);
    table.add_row(vec![
        "RSS per cluster with guestbook".to_string(),
        format!("{:.1} KiB", per_cluster(rss_full.saturating_sub(rss_start))),
    ]);
    table.add_row(vec![
        "stored JSON per cluster (objects + watch history)".to_string(),
        format!("{:.1} KiB", stored as f64 / 1024.0),
    ]);
    table.add_row(vec![
        "process RSS at the end".to_string(),
        format!("{} MiB", rss_kib() / 1024),
    ]);
    println!("{table}");
    h.shutdown().await;
    Ok(())
}
