//! Hub figures, printed, never asserted (timings are not test outcomes):
//! `cargo run --release --bin hub-bench [-- --apps 1000 --rounds 5]`.
//!
//! A monorepo with one path per App, served by `git daemon` (git://, so that fetches can be
//! shallow, as from a real Git host):
//! - change detection: from a commit touching one App's path to that App's new revision in
//!   the cluster's desired state, with the fetch triggered at once (as a webhook does), and how
//!   many of the Targets moved;
//! - fetch: the hub's Git cache against `git fetch` on the same repository, first (shallow)
//!   and incremental (after a one-file commit).
//!
//! Results are recorded in docs/benchmarks.md.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use gitfleet_cli::client::{AdminClient, ClientConfig, ConfigFile as _};
use gitfleet_e2e::gitrepo::GitRepo;
use gitfleet_hub::engine::{Engine, RegisterOutcome, Registration};
use gitfleet_hub::fleet::rollout::Phase;
use gitfleet_hub::git::GitCache;
use gitfleet_hub::model::{HealthState, SyncState, TargetReport};
use gitfleet_hub::pki::{CertKey, cert_key_pem};
use gitfleet_hub::resources::GitRef;
use gitfleet_hub::runtime::{self, HubConfig};

#[derive(Parser)]
#[command(about = "Hub benchmark: change detection in a monorepo and fetch time against git fetch")]
struct Args {
    /// App paths in the monorepo.
    #[arg(long, env = "GITFLEET_BENCH_APPS", default_value_t = 1000)]
    apps: usize,
    /// How many one-path commits (and incremental fetches) to time.
    #[arg(long, env = "GITFLEET_BENCH_ROUNDS", default_value_t = 5)]
    rounds: usize,
    /// Clusters for the fleet decisions part (0 skips it).
    #[arg(long, env = "GITFLEET_BENCH_CLUSTERS", default_value_t = 1000)]
    clusters: usize,
    /// Only the fleet decisions part.
    #[arg(long)]
    fleet_only: bool,
    /// Apps on every cluster for the dashboard's grid (the fleet part's App and more; 1 or 0
    /// skips the dashboard's figures).
    #[arg(long, default_value_t = 20)]
    grid_apps: usize,
    /// After the dashboard's figures, print a sign-in link to the benchmark's dashboard and
    /// keep the hub up this long (to look at the grid in a browser).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    hold_dashboard: Option<Duration>,
    /// How many times each single fleet decision is timed (the median is printed).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Keep the fleet decisions' hub store in this etcd (`http://host:2379`) instead of sled:
    /// needs a build with `--features etcd`.
    #[arg(long, value_name = "URL")]
    etcd_endpoint: Option<String>,
}

/// `git daemon` serving every repository on this machine by absolute path; killed on drop.
struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    async fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--base-path=/",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting git daemon (is git installed?)")?;
        let daemon = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            ensure!(Instant::now() < deadline, "git daemon did not listen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(daemon)
    }

    fn url(&self, dir: &Path) -> String {
        format!("git://127.0.0.1:{}{}", self.port, dir.display())
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn app_path(i: usize) -> String {
    format!("apps/app-{i:04}")
}

/// A few realistic files per App.
fn app_files(i: usize, version: &str) -> Vec<(String, String)> {
    let name = format!("app-{i:04}");
    vec![
        (
            format!("{}/deployment.yaml", app_path(i)),
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{ app: {name} }}\n  template:\n    metadata:\n      labels: {{ app: {name} }}\n    spec:\n      containers:\n        - name: app\n          image: registry.example.com/{name}:{version}\n"
            ),
        ),
        (
            format!("{}/service.yaml", app_path(i)),
            format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector: {{ app: {name} }}\n  ports: [ {{ port: 80 }} ]\n"
            ),
        ),
        (
            format!("{}/config.yaml", app_path(i)),
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  version: \"{version}\"\n"
            ),
        ),
    ]
}

fn git(args: &[&str], dir: &Path) -> anyhow::Result<()> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("git {args:?}"))?;
    if !out.status.success() {
        bail!(
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `git fetch` of `main` into a bare repository, shallow like the hub's first fetch.
fn git_fetch(bare: &Path, url: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    git(
        &[
            "fetch",
            "--quiet",
            "--depth=1",
            url,
            "+refs/heads/main:refs/heads/main",
        ],
        bare,
    )?;
    Ok(started.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The labels of every benchmark cluster (its token's: a spoke cannot choose its own).
fn bench_labels() -> BTreeMap<String, String> {
    BTreeMap::from([("env".to_owned(), "bench".to_owned())])
}

/// Registers `cluster`; the key of its certificate, to connect with.
async fn register(engine: &Engine, token: String, cluster: &str) -> anyhow::Result<CertKey> {
    let key = rcgen::KeyPair::generate()?;
    let csr_pem = rcgen::CertificateParams::default()
        .serialize_request(&key)?
        .pem()?;
    match engine
        .register(Registration {
            token,
            cluster: cluster.into(),
            csr_pem,
            labels: bench_labels(),
            agent_version: "bench".into(),
        })
        .await?
    {
        RegisterOutcome::Issued(issued) => Ok(cert_key_pem(&issued.certificate_pem)?),
        RegisterOutcome::Pending { .. } => bail!("registration is waiting for approval"),
    }
}

/// Polls the cluster's desired state until `done` holds for it; returns the (app → spec
/// generation, commit) it saw then.
async fn until_desired(
    engine: &Engine,
    cluster: &str,
    what: &str,
    done: impl Fn(&BTreeMap<String, (u64, String)>) -> bool,
) -> anyhow::Result<BTreeMap<String, (u64, String)>> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let targets: BTreeMap<String, (u64, String)> = engine
            .desired(cluster)
            .map(|d| {
                d.targets
                    .iter()
                    .map(|(app, t)| (app.clone(), (t.spec_generation, t.target.commit.clone())))
                    .collect()
            })
            .unwrap_or_default();
        if done(&targets) {
            return Ok(targets);
        }
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    runtime::install_crypto_provider();
    let tmp = tempfile::tempdir()?;
    let daemon = GitDaemon::start().await?;
    if !args.fleet_only {
        monorepo(&args, tmp.path(), &daemon).await?;
    }
    if args.clusters > 0 {
        fleet(
            args.clusters,
            args.grid_apps,
            args.hold_dashboard,
            args.repeat,
            args.etcd_endpoint.as_deref(),
            tmp.path(),
            &daemon,
        )
        .await?;
    }
    Ok(())
}

/// p50 / p99 / max of `v`.
fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |p: f64| {
        v.get(((v.len() as f64 * p).ceil() as usize).clamp(1, v.len().max(1)) - 1)
            .copied()
            .unwrap_or_default()
    };
    format!("{} / {} / {}", ms(at(0.5)), ms(at(0.99)), ms(at(1.0)))
}

type DesiredRx = tokio::sync::watch::Receiver<Arc<gitfleet_hub::engine::Published>>;

/// The spec generation of the App's Target in a cluster's desired state, once at `commit`.
fn held(rx: &DesiredRx, commit: &str) -> Option<u64> {
    rx.borrow()
        .desired
        .targets
        .get("small")
        .filter(|t| t.target.commit == commit)
        .map(|t| t.spec_generation)
}

/// Stores one report per cluster on the App at `commit`, as the link stores them.
fn report_all(
    engine: &Engine,
    clusters: &[(String, DesiredRx)],
    seq: u64,
    commit: &str,
    (sync, health): (SyncState, HealthState),
) -> anyhow::Result<()> {
    for (cluster, rx) in clusters {
        engine.store_report(TargetReport {
            seq,
            cluster: cluster.clone(),
            app: "small".into(),
            revision: commit.to_owned(),
            spec_generation: held(rx, commit).context("placed")?,
            sync,
            health,
            message: "1 resource".into(),
            ..Default::default()
        })?;
    }
    Ok(())
}

/// Stores each round of `reports` (seq, state) for every cluster at `commit`, flushes, and
/// waits for the rollout to `commit` to complete: the reports stored per second, and the time
/// until complete.
async fn reports_until_complete(
    engine: &Engine,
    clusters: &[(String, DesiredRx)],
    commit: &str,
    reports: &[(u64, (SyncState, HealthState))],
) -> anyhow::Result<(f64, Duration)> {
    let started = Instant::now();
    for (seq, state) in reports {
        report_all(engine, clusters, *seq, commit, *state)?;
    }
    engine.flush().await?;
    let rate = (reports.len() * clusters.len()) as f64 / started.elapsed().as_secs_f64();
    until_rollout_complete(engine, commit).await?;
    Ok((rate, started.elapsed()))
}

/// The median time of `repeat` calls of the rollout view.
fn rollout_view_median(engine: &Engine, repeat: usize) -> anyhow::Result<Duration> {
    let mut took = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let t = Instant::now();
        engine.rollout_status("small")?;
        took.push(t.elapsed());
    }
    Ok(median(took))
}

/// Polls until `app`'s rollout is at `commit` and complete.
async fn until_rollout_complete(engine: &Engine, commit: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(view) = engine.rollout_status("small")
            && view.state.revision.commit == commit
            && matches!(view.state.phase, Phase::Complete)
        {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "the rollout never completed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The hub's decisions for a fleet, in process (no links, no spokes): one small App on every
/// cluster, each cluster's desired state watched as a link session would.
async fn fleet(
    n: usize,
    grid_apps: usize,
    hold_dashboard: Option<Duration>,
    repeat: usize,
    etcd_endpoint: Option<&str>,
    tmp: &Path,
    daemon: &GitDaemon,
) -> anyhow::Result<()> {
    let repo_dir = tmp.join("small");
    let repo = GitRepo::init(&repo_dir)?;
    let write = |v: u32| {
        repo.write(
            "apps/small/configmap.yaml",
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: small\ndata:\n  version: \"{v}\"\n"),
        )
    };
    write(1)?;
    let c1 = repo.commit("small v1")?;
    let url = daemon.url(&repo_dir);
    let mut config = HubConfig::for_tests(tmp.join("fleet-hub"));
    config.default_poll_interval = Duration::from_secs(3600);
    if let Some(endpoint) = etcd_endpoint {
        let mut options = gitfleet_hub::store::etcd::EtcdOptions::new(vec![endpoint.to_owned()]);
        // A prefix of its own per run: a bench never reads an earlier run's state.
        options.prefix = format!("/hub-bench-{}/", std::process::id());
        println!("(store: etcd at {endpoint}, prefix {})", options.prefix);
        config.store = runtime::StoreConfig::Etcd(options);
    }
    let hub = runtime::start(config).await?;
    let engine: Arc<Engine> = Arc::clone(hub.engine());
    let token = hub
        .create_token(Duration::from_secs(3600), bench_labels(), u32::try_from(n)?)
        .await?;
    println!("fleet decisions ({n} clusters, one small App on all of them, in process):");
    let started = Instant::now();
    let names: Vec<String> = (0..n).map(|i| format!("c{i:05}")).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in names.chunks(n.div_ceil(8).max(1)) {
        let (engine, token, chunk) = (Arc::clone(&engine), token.clone(), chunk.to_vec());
        tasks.spawn(async move {
            let mut keys = Vec::with_capacity(chunk.len());
            for c in chunk {
                let key = register(&engine, token.clone(), &c).await?;
                keys.push((c, key));
            }
            anyhow::Ok(keys)
        });
    }
    let mut keys = BTreeMap::new();
    while let Some(r) = tasks.join_next().await {
        keys.extend(r??);
    }
    let mut clusters: Vec<(String, DesiredRx)> = Vec::with_capacity(n);
    for c in names {
        let key = keys.get(&c).context("a registered cluster")?;
        let rx = engine.connect(&c, key, "bench").await?.desired;
        clusters.push((c, rx));
    }
    println!(
        "  register + connect:                 {}",
        ms(started.elapsed())
    );
    let documents = vec![
        (
            "bench#fleet".to_owned(),
            format!(
                "{{\"apiVersion\":\"gitfleet.dev/v1\",\"kind\":\"Repo\",\"metadata\":{{\"name\":\"sim\"}},\"spec\":{{\"url\":\"{url}\",\"pollInterval\":\"1h\"}}}}"
            ),
        ),
        (
            "bench#fleet-app".to_owned(),
            serde_json::json!({
                "apiVersion": "gitfleet.dev/v1", "kind": "App",
                "metadata": {"name": "small"},
                "spec": {
                    "repo": "sim", "path": "apps/small", "namespace": "default",
                    "targets": [{"clusterSelector": {"matchLabels": {"env": "bench"}}}]
                }
            })
            .to_string(),
        ),
    ];
    let started = Instant::now();
    engine.apply(&documents, false).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    for (cluster, rx) in &clusters {
        let mut rx = rx.clone();
        let placed = rx.wait_for(|d| {
            d.desired
                .targets
                .get("small")
                .is_some_and(|t| t.target.commit == c1)
        });
        tokio::time::timeout_at(deadline, placed)
            .await
            .with_context(|| format!("the App was never placed on {cluster}"))??;
    }
    println!(
        "  apply -> placed on all:             {}",
        ms(started.elapsed())
    );
    // Every Target synced and healthy at v1.
    let healthy = (SyncState::Synced, HealthState::Healthy);
    let (rate, complete) = reports_until_complete(&engine, &clusters, &c1, &[(1, healthy)]).await?;
    println!(
        "  {n} reports stored ({rate:.0}/s, not flushed each); rollout complete after {}",
        ms(complete)
    );
    let mut took = Vec::new();
    for _ in 0..repeat {
        let t = Instant::now();
        engine.recompute().await?;
        took.push(t.elapsed());
    }
    println!("  recompute, nothing changed:         {}", ms(median(took)));
    println!(
        "  rollout status (complete):          {}",
        ms(rollout_view_median(&engine, repeat)?)
    );

    // A new commit: webhook -> every cluster's desired state has it.
    write(2)?;
    let c2 = repo.commit("small v2")?;
    let started = Instant::now();
    let waiters: Vec<_> = clusters
        .iter()
        .map(|(_, rx)| {
            let mut rx = rx.clone();
            let c2 = c2.clone();
            tokio::spawn(async move {
                let _ = rx
                    .wait_for(|d| {
                        d.desired
                            .targets
                            .get("small")
                            .is_some_and(|t| t.target.commit == c2)
                    })
                    .await;
                started.elapsed()
            })
        })
        .collect();
    ensure!(engine.trigger_fetch("sim"), "the Repo is followed");
    let mut latencies = Vec::with_capacity(n);
    for w in waiters {
        latencies.push(w.await?);
    }
    println!(
        "  fetch -> desired state (p50/p99/max): {}",
        percentiles(latencies)
    );
    println!(
        "  rollout status (progressing):       {}",
        ms(rollout_view_median(&engine, repeat)?)
    );
    // The spokes report: syncing, then synced and healthy.
    let syncing = (SyncState::Syncing, HealthState::Progressing);
    let (rate, complete) =
        reports_until_complete(&engine, &clusters, &c2, &[(2, syncing), (3, healthy)]).await?;
    println!(
        "  {} reports during the rollout stored ({rate:.0}/s); rollout complete after {}",
        2 * n,
        ms(complete)
    );
    live_reads(&hub, &engine, &clusters, &c2, repeat).await?;
    if grid_apps > 1 {
        dashboard(&hub, &engine, &clusters, &c2, grid_apps, repeat).await?;
        if let Some(hold) = hold_dashboard {
            let admin = engine
                .users()
                .into_iter()
                .find(|u| u.name == "admin")
                .context("the admin user")?;
            let (token, _) = engine.create_dashboard_signin(&admin).await?;
            let addr = hub.http_addr().context("the hub's HTTP listener")?;
            println!("  dashboard: http://{addr}/ui/signin?token={token} (for {hold:?})");
            tokio::time::sleep(hold).await;
        }
    }
    hub.shutdown().await;
    Ok(())
}

/// Live reads: a `status --watch` of the whole fleet over gRPC. Its snapshot costs what the
/// fleet is; one Target's report then reaches it in a time that must not grow with the fleet
/// (the stream reads that Target only).
async fn live_reads(
    hub: &runtime::HubHandle,
    engine: &Engine,
    clusters: &[(String, DesiredRx)],
    commit: &str,
    repeat: usize,
) -> anyhow::Result<()> {
    let config = ClientConfig::load(hub.admin_config_path())?;
    let mut client = AdminClient::connect(config.context(None)?).await?;
    let started = Instant::now();
    let mut stream = client.watch_status("", "").await?;
    let mut targets = 0;
    loop {
        let m = client
            .next(&mut stream)
            .await?
            .context("the stream ended")?;
        targets += m.targets.len();
        if m.snapshot_complete {
            break;
        }
    }
    println!(
        "  status stream: snapshot of {targets} Targets: {}",
        ms(started.elapsed())
    );
    let (cluster, rx) = clusters.first().context("a cluster")?;
    let mut took = Vec::with_capacity(repeat);
    for i in 0..repeat {
        let message = format!("probe {i}");
        let t = Instant::now();
        engine.store_report(TargetReport {
            seq: 10 + i as u64,
            cluster: cluster.clone(),
            app: "small".into(),
            revision: commit.to_owned(),
            spec_generation: held(rx, commit).context("placed")?,
            sync: SyncState::Synced,
            health: HealthState::Healthy,
            message: message.clone(),
            ..Default::default()
        })?;
        engine.flush().await?;
        loop {
            let m = client
                .next(&mut stream)
                .await?
                .context("the stream ended")?;
            if m.targets.iter().any(|t| t.message == message) {
                break;
            }
        }
        took.push(t.elapsed());
    }
    println!(
        "  one report -> the status stream:    {} (median of {repeat})",
        ms(median(took))
    );
    Ok(())
}

/// The web dashboard (`/ui`): the grid of `apps` Apps × every cluster over the HTTP listener
/// (time to first byte, bytes sent), and a Target's change reaching an open event stream.
async fn dashboard(
    hub: &runtime::HubHandle,
    engine: &Arc<Engine>,
    clusters: &[(String, DesiredRx)],
    commit: &str,
    apps: usize,
    repeat: usize,
) -> anyhow::Result<()> {
    use http_body_util::BodyExt as _;

    let names: Vec<String> = (1..apps).map(|i| format!("grid-{i:02}")).collect();
    let documents: Vec<(String, String)> = names
        .iter()
        .map(|name| {
            (
                format!("bench#{name}"),
                serde_json::json!({
                    "apiVersion": "gitfleet.dev/v1", "kind": "App",
                    "metadata": {"name": name, "labels": {"team": "bench"}},
                    "spec": {
                        "repo": "sim", "path": "apps/small", "namespace": name,
                        "targets": [{"clusterSelector": {"matchLabels": {"env": "bench"}}}]
                    }
                })
                .to_string(),
            )
        })
        .collect();
    engine.apply(&documents, false).await?;
    // Each Target reports synced and healthy once its App's rollout gives it the commit.
    let mut reported: std::collections::HashSet<(usize, usize)> = Default::default();
    let want = names.len() * clusters.len();
    let deadline = Instant::now() + Duration::from_secs(600);
    while reported.len() < want {
        ensure!(
            Instant::now() < deadline,
            "the grid's Apps never reached every cluster"
        );
        for (ci, (cluster, rx)) in clusters.iter().enumerate() {
            for (ai, app) in names.iter().enumerate() {
                if reported.contains(&(ci, ai)) {
                    continue;
                }
                let generation = rx
                    .borrow()
                    .desired
                    .targets
                    .get(app)
                    .filter(|t| t.target.commit == commit)
                    .map(|t| t.spec_generation);
                if let Some(spec_generation) = generation {
                    engine.store_report(TargetReport {
                        seq: 1000 + (ai as u64),
                        cluster: cluster.clone(),
                        app: app.clone(),
                        revision: commit.to_owned(),
                        spec_generation,
                        sync: SyncState::Synced,
                        health: HealthState::Healthy,
                        message: "1 resource".into(),
                        ..Default::default()
                    })?;
                    reported.insert((ci, ai));
                }
            }
        }
        engine.flush().await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = engine
        .users()
        .into_iter()
        .find(|u| u.name == "admin")
        .context("the admin user")?;
    let (link, _) = engine.create_dashboard_signin(&admin).await?;
    let session = engine
        .dashboard_sign_in(&link, Duration::from_secs(3600))
        .await?;
    let addr = hub.http_addr().context("the hub's HTTP listener")?;
    let cookie = format!("gitfleet_session={}", session.token);
    let get =
        async |path: &str| -> anyhow::Result<(Duration, Duration, usize, hyper::body::Incoming)> {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let request = hyper::Request::get(path)
                .header(hyper::header::HOST, addr.to_string())
                .header(hyper::header::COOKIE, &cookie)
                .body(http_body_util::Empty::<bytes::Bytes>::new())?;
            let t = Instant::now();
            let response = send.send_request(request).await?;
            let first_byte = t.elapsed();
            ensure!(
                response.status().is_success(),
                "GET {path}: {}",
                response.status()
            );
            Ok((first_byte, t.elapsed(), 0, response.into_body()))
        };
    let mut ttfb = Vec::with_capacity(repeat);
    let mut whole = Vec::with_capacity(repeat);
    let mut bytes = 0;
    for _ in 0..repeat.max(1) {
        let (first, _, _, body) = get("/ui/api/grid").await?;
        let t = Instant::now();
        let body = body.collect().await?.to_bytes();
        whole.push(first + t.elapsed());
        ttfb.push(first);
        bytes = body.len();
        let grid: serde_json::Value = serde_json::from_slice(&body)?;
        ensure!(
            grid["cells"].as_array().map(Vec::len) == Some(apps)
                && grid["clusters"].as_array().map(Vec::len) == Some(clusters.len()),
            "the grid has {apps} Apps × {} clusters",
            clusters.len()
        );
    }
    println!(
        "dashboard ({apps} Apps × {} clusters, over the HTTP listener):",
        clusters.len()
    );
    println!(
        "  grid JSON: first byte {}, whole {} (medians of {}), {bytes} bytes",
        ms(median(ttfb)),
        ms(median(whole)),
        repeat.max(1)
    );
    // A Target's change reaching an open event stream (what a browser's EventSource reads).
    let (_, _, _, mut events) = get("/ui/api/stream").await?;
    let (cluster, rx) = clusters.first().context("a cluster")?;
    let mut took = Vec::with_capacity(repeat);
    for i in 0..repeat.max(1) {
        let (health, code) = if i % 2 == 0 {
            (HealthState::Degraded, "f")
        } else {
            (HealthState::Healthy, "h")
        };
        let t = Instant::now();
        engine.store_report(TargetReport {
            // Past every seq the grid's reports used on this cluster (seqs are per cluster).
            seq: 10_000 + i as u64,
            cluster: cluster.clone(),
            app: "small".into(),
            revision: commit.to_owned(),
            spec_generation: held(rx, commit).context("placed")?,
            sync: SyncState::Synced,
            health,
            message: format!("probe {i}"),
            ..Default::default()
        })?;
        engine.flush().await?;
        let mut buffer = String::new();
        'event: loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), events.frame())
                .await
                .context("no event within 30 s")?
                .context("the event stream ended")??;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buffer.push_str(&String::from_utf8_lossy(&data));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
                    continue;
                };
                let Ok(cell) = serde_json::from_str::<serde_json::Value>(data) else {
                    continue;
                };
                if cell["cluster"] == cluster.as_str()
                    && cell["app"] == "small"
                    && cell["cell"] == code
                {
                    break 'event;
                }
            }
        }
        took.push(t.elapsed());
    }
    println!(
        "  one report -> the dashboard's event stream: {} (median of {}; max {})",
        ms(median(took.clone())),
        took.len(),
        ms(took.iter().max().copied().unwrap_or_default())
    );
    Ok(())
}

/// Change detection in a monorepo, and the hub's fetch against `git fetch`.
async fn monorepo(args: &Args, tmp: &Path, daemon: &GitDaemon) -> anyhow::Result<()> {
    let repo_dir = tmp.join("mono");
    let repo = GitRepo::init(&repo_dir)?;
    for i in 0..args.apps {
        for (path, content) in app_files(i, "1.0.0") {
            repo.write(&path, content)?;
        }
    }
    let c1 = repo.commit("a monorepo")?;
    let url = daemon.url(&repo_dir);
    println!(
        "hub-bench: monorepo with {} App paths ({} files), served by git daemon; {} rounds",
        args.apps,
        args.apps * 3,
        args.rounds
    );

    // --- fetch: the hub's cache against git fetch --------------------------------------------
    let cache = GitCache::new(tmp.join("cache"), 4, Duration::from_secs(300));
    let main_branch = GitRef::Branch("main".into());
    let started = Instant::now();
    ensure!(cache.fetch(&url, &main_branch).await?.commit == c1);
    let hub_first = started.elapsed();
    let bare = tmp.join("git-fetch.git");
    git(
        &[
            "init",
            "--quiet",
            "--bare",
            bare.to_str().context("utf-8 path")?,
        ],
        tmp,
    )?;
    let git_first = git_fetch(&bare, &url)?;
    let (mut hub_incremental, mut git_incremental) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        for (path, content) in app_files(round, &format!("1.1.{round}")) {
            repo.write(&path, content)?;
        }
        let commit = repo.commit("one app")?;
        let started = Instant::now();
        ensure!(cache.fetch(&url, &main_branch).await?.commit == commit);
        hub_incremental.push(started.elapsed());
        git_incremental.push(git_fetch(&bare, &url)?);
    }
    println!("fetch (shallow first, then incremental after a one-App commit):");
    println!(
        "  first fetch:       gitfleet {:>10}   git fetch --depth=1 {:>10}",
        ms(hub_first),
        ms(git_first)
    );
    println!(
        "  incremental fetch: gitfleet {:>10}   git fetch --depth=1 {:>10}   (medians of {})",
        ms(median(hub_incremental)),
        ms(median(git_incremental)),
        args.rounds
    );

    // --- change detection through the hub ----------------------------------------------------
    let mut config = HubConfig::for_tests(tmp.join("hub"));
    // Only the trigger (a webhook in production) fetches during the measurement.
    config.default_poll_interval = Duration::from_secs(3600);
    let hub = runtime::start(config).await?;
    let engine: Arc<Engine> = Arc::clone(hub.engine());
    let token = hub
        .create_token(Duration::from_secs(600), bench_labels(), 1)
        .await?;
    register(&engine, token, "bench-1").await?;
    let mut documents = vec![(
        "bench#0".to_owned(),
        serde_json::json!({
            "apiVersion": "gitfleet.dev/v1", "kind": "Repo",
            "metadata": {"name": "mono"},
            "spec": {"url": url, "pollInterval": "1h"}
        })
        .to_string(),
    )];
    documents.extend((0..args.apps).map(|i| {
        (
            format!("bench#{}", i + 1),
            serde_json::json!({
                "apiVersion": "gitfleet.dev/v1", "kind": "App",
                "metadata": {"name": format!("app-{i:04}")},
                "spec": {
                    "repo": "mono", "path": app_path(i), "namespace": format!("app-{i:04}"),
                    "targets": [{"clusterSelector": {"matchLabels": {"env": "bench"}}}]
                }
            })
            .to_string(),
        )
    }));
    let started = Instant::now();
    engine.apply(&documents, false).await?;
    let applied = started.elapsed();
    let head = repo.head()?;
    let apps = args.apps;
    let mut before = until_desired(&engine, "bench-1", "every App placed", |t| {
        t.len() == apps && t.values().all(|(_, c)| *c == head)
    })
    .await?;
    let placed = started.elapsed();
    println!(
        "change detection ({} Apps on one cluster; fetch triggered at once, as by a webhook):",
        args.apps
    );
    println!(
        "  apply {} Apps: {}; every Target placed at the head commit after {}",
        args.apps,
        ms(applied),
        ms(placed)
    );
    for round in 0..args.rounds {
        let app = (round * 397 + 42) % args.apps;
        let name = format!("app-{app:04}");
        for (path, content) in app_files(app, &format!("2.0.{round}")) {
            repo.write(&path, content)?;
        }
        let commit = repo.commit("one app")?;
        let started = Instant::now();
        ensure!(engine.trigger_fetch("mono"), "the Repo is followed");
        let after = until_desired(&engine, "bench-1", "the changed App's new revision", |t| {
            t.get(&name).is_some_and(|(_, c)| *c == commit)
        })
        .await?;
        let elapsed = started.elapsed();
        let moved: Vec<&String> = after
            .iter()
            .filter(|(a, (generation, _))| before.get(*a).map(|(g, _)| g) != Some(generation))
            .map(|(a, _)| a)
            .collect();
        println!(
            "  round {}: commit touching {name} -> new desired revision in {} ; Targets moved: {} of {} ({})",
            round + 1,
            ms(elapsed),
            moved.len(),
            after.len(),
            moved
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        before = after;
    }
    hub.shutdown().await;
    Ok(())
}
