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
//! - fleet decisions (`--clusters N`, `--fleet-only` for only those; `--apps M` there puts M
//!   Apps of mixed rollout strategies on every cluster): placement, durable reports, a
//!   recompute that changes nothing, memory per Target, a commit to one App and to every App,
//!   the status stream, and (on sled) a restart: the hub stopped and started on its data
//!   directory, and every cluster connected again as a reconnect storm's spokes would.
//!
//! Results are recorded in docs/benchmarks.md. With `RUST_LOG` set, the hub's events go to
//! stderr (`RUST_LOG=gitfleet_hub::engine::desired=debug`: each recompute's phases).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use gitfleet_cli::client::{AdminClient, ClientConfig, ConfigFile as _};
use gitfleet_e2e::gitrepo::GitRepo;
use gitfleet_hub::allocator::{self, Allocator};
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
    /// App paths in the monorepo (default 1000); with --fleet-only, Apps on every cluster in
    /// the fleet part (default 1; otherwise that part has one App).
    #[arg(long, env = "GITFLEET_BENCH_APPS")]
    apps: Option<usize>,
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
    /// With --etcd-endpoint: as the hub's --etcd-txns-in-flight.
    #[arg(long, env = "GITFLEET_ETCD_TXNS_IN_FLIGHT", default_value_t = gitfleet_hub::store::etcd::DEFAULT_TXNS_IN_FLIGHT)]
    etcd_txns_in_flight: usize,
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

/// The hub's allocator, as the `gitfleet-hub` binary has it.
#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The hub's own events on stderr when asked, e.g. where each recompute's time goes:
    // RUST_LOG=gitfleet_hub::engine::desired=debug.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    allocator::return_freed_memory();
    runtime::install_crypto_provider();
    let tmp = tempfile::tempdir()?;
    let daemon = GitDaemon::start().await?;
    if !args.fleet_only {
        monorepo(&args, tmp.path(), &daemon).await?;
    }
    if args.clusters > 0 {
        let per_cluster = if args.fleet_only {
            args.apps.unwrap_or(1)
        } else {
            1
        };
        ensure!(per_cluster > 0, "--apps: at least one App");
        fleet(
            args.clusters,
            per_cluster,
            DashboardBench {
                apps: args.grid_apps,
                hold: args.hold_dashboard,
            },
            args.repeat,
            args.etcd_endpoint
                .as_deref()
                .map(|e| (e, args.etcd_txns_in_flight)),
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

/// The spec generation of `app`'s Target in a cluster's desired state, once at `commit`.
fn held(rx: &DesiredRx, app: &str, commit: &str) -> Option<u64> {
    rx.borrow()
        .desired
        .targets
        .get(app)
        .filter(|t| t.target.commit == commit)
        .map(|t| t.spec_generation)
}

/// The fleet part's Apps: one (`small`, as in the earlier figures) or `m` of a mix of sizes and
/// rollout strategies.
struct FleetApps {
    names: Vec<String>,
}

impl FleetApps {
    fn new(m: usize) -> Self {
        let names = if m == 1 {
            vec!["small".to_owned()]
        } else {
            (0..m).map(|i| format!("a{i:03}")).collect()
        };
        Self { names }
    }

    fn first(&self) -> &str {
        self.names.first().map_or("small", String::as_str)
    }

    /// Writes App `i`'s files at version `v`: a ConfigMap, and for every third App a
    /// Deployment and a Service too.
    fn write(&self, repo: &GitRepo, i: usize, v: u32) -> anyhow::Result<()> {
        let name = &self.names[i];
        repo.write(
            &format!("apps/{name}/configmap.yaml"),
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  version: \"{v}\"\n"
            ),
        )?;
        if i % 3 == 2 {
            for (path, content) in app_files(i, &format!("1.{v}.0")) {
                let file = path.rsplit('/').next().unwrap_or("file.yaml").to_owned();
                repo.write(&format!("apps/{name}/{file}"), content)?;
            }
        }
        Ok(())
    }

    /// App `i`'s document. With several Apps, a mix of strategies: all at once (the default),
    /// a quarter of the clusters at a time, a canary wave of two named clusters then the rest,
    /// and a tenth at a time.
    fn document(&self, i: usize, canaries: &[String]) -> serde_json::Value {
        let name = &self.names[i];
        let mut spec = serde_json::json!({
            "repo": "sim", "path": format!("apps/{name}"), "namespace": "default",
            "targets": [{"clusterSelector": {"matchLabels": {"env": "bench"}}}]
        });
        let rollout = match (self.names.len() > 1).then_some(i % 4) {
            Some(1) => Some(serde_json::json!({"maxUnavailable": "25%"})),
            Some(2) => Some(serde_json::json!({
                "waves": [{"name": "canary", "clusters": canaries}]
            })),
            Some(3) => Some(serde_json::json!({"maxUnavailable": "10%"})),
            _ => None,
        };
        if let Some(rollout) = rollout {
            spec["rollout"] = rollout;
        }
        serde_json::json!({
            "apiVersion": "gitfleet.dev/v1", "kind": "App",
            "metadata": {"name": name}, "spec": spec
        })
    }
}

/// Plays the spokes: stores `states` (in order, from sequence number `seq`) for every Target
/// whose desired state holds its App's commit in `commits`, as those commits arrive (a rollout
/// gives them a batch at a time), flushing after each pass, until every App's rollout to its
/// commit is complete. The reports stored per second of storing (the hub's calls and flushes
/// alone, not the scan for what to report, which is the spokes' work), their count, and the
/// time until complete.
async fn report_until_complete(
    engine: &Engine,
    clusters: &[(String, DesiredRx)],
    commits: &BTreeMap<String, String>,
    seq: &mut u64,
    states: &[(SyncState, HealthState)],
) -> anyhow::Result<(f64, usize, Duration)> {
    let started = Instant::now();
    let deadline = started + bench_timeout();
    // By cluster: the Apps not reported yet, and a receiver of its own that tells whether its
    // desired state was published since this loop last looked (a pass looks only at those).
    let mut waiting: Vec<Vec<&str>> = clusters
        .iter()
        .map(|_| commits.keys().map(String::as_str).collect())
        .collect();
    let mut receivers: Vec<DesiredRx> = clusters.iter().map(|(_, rx)| rx.clone()).collect();
    let mut first_pass = true;
    // What a link does on each message a spoke sends: without it, every cluster counts as
    // disconnected once the heartbeat grace has passed, and a rollout that may take only so
    // many unavailable clusters stops handing its commit out.
    let mut touched = Instant::now();
    let (mut stored, mut storing) = (0usize, Duration::ZERO);
    let mut complete: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    loop {
        let mut new = 0;
        if touched.elapsed() >= Duration::from_secs(5) {
            for (cluster, _) in clusters {
                engine.touch(cluster);
            }
            touched = Instant::now();
        }
        for (c, (cluster, _)) in clusters.iter().enumerate() {
            let rx = &mut receivers[c];
            if waiting[c].is_empty() || !(first_pass || rx.has_changed().unwrap_or(false)) {
                continue;
            }
            let held: Vec<(String, u64)> = {
                let published = rx.borrow_and_update();
                let mut held = Vec::new();
                waiting[c].retain(|app| match published.desired.targets.get(*app) {
                    Some(t) if t.target.commit == commits[*app] => {
                        held.push(((*app).to_owned(), t.spec_generation));
                        false
                    }
                    _ => true,
                });
                held
            };
            if held.is_empty() {
                continue;
            }
            engine.touch(cluster);
            // The hub's work only: finding what to report is the spokes'.
            let hub_work = Instant::now();
            for (app, generation) in held {
                for (sync, health) in states {
                    // A link's sequence numbers only grow: one counter for every cluster.
                    *seq += 1;
                    engine.store_report(TargetReport {
                        seq: *seq,
                        cluster: cluster.clone(),
                        app: app.clone(),
                        revision: commits[&app].clone(),
                        spec_generation: generation,
                        sync: *sync,
                        health: *health,
                        message: "1 resource".into(),
                        ..Default::default()
                    })?;
                    stored += 1;
                }
                new += 1;
            }
            storing += hub_work.elapsed();
        }
        first_pass = false;
        if new > 0 {
            let flush = Instant::now();
            engine.flush().await?;
            storing += flush.elapsed();
        }
        for (app, commit) in commits {
            if !complete.contains(app)
                && let Some(state) = engine.rollout_state(app)
                && state.revision.commit == *commit
                && matches!(state.phase, Phase::Complete)
            {
                complete.insert(app.clone());
            }
        }
        if complete.len() == commits.len() {
            let rate = stored as f64 / storing.as_secs_f64().max(1e-9);
            return Ok((rate, stored, started.elapsed()));
        }
        if Instant::now() >= deadline {
            let stuck: Vec<String> = commits
                .keys()
                .filter(|a| !complete.contains(*a))
                .take(3)
                .map(|a| match engine.rollout_status(a) {
                    Ok(v) => format!(
                        "{a}: {:?} at {} wave {}",
                        v.state.phase, v.state.revision.commit, v.state.wave
                    ),
                    Err(e) => format!("{a}: {e}"),
                })
                .collect();
            bail!(
                "rollouts never completed: {} of {} Apps; {} reports stored; {}",
                complete.len(),
                commits.len(),
                stored,
                stuck.join("; ")
            );
        }
        if new == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// How long a bench step may take: `GITFLEET_BENCH_TIMEOUT` seconds, default 1800.
fn bench_timeout() -> Duration {
    Duration::from_secs(
        std::env::var("GITFLEET_BENCH_TIMEOUT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1800),
    )
}

/// This process's resident memory, from /proc (Linux).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// This process's CPU time (user + system), from /proc (Linux).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Clock ticks: 100 per second on every Linux this runs on.
    Some(Duration::from_millis((utime + stime) * 10))
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The median time of `repeat` calls of the rollout view of `app`.
fn rollout_view_median(engine: &Engine, app: &str, repeat: usize) -> anyhow::Result<Duration> {
    let mut took = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let t = Instant::now();
        engine.rollout_status(app)?;
        took.push(t.elapsed());
    }
    Ok(median(took))
}

/// The dashboard's part of the fleet figures: Apps in its grid, and how long to keep the hub up
/// afterwards to look at it (`--grid-apps`, `--hold-dashboard`).
struct DashboardBench {
    apps: usize,
    hold: Option<Duration>,
}

/// The hub's decisions for a fleet, in process (no links, no spokes): `m` Apps on every
/// cluster, each cluster's desired state watched as a link session would.
async fn fleet(
    n: usize,
    m: usize,
    ui: DashboardBench,
    repeat: usize,
    // The endpoint and how many transactions may be under way at once.
    etcd: Option<(&str, usize)>,
    tmp: &Path,
    daemon: &GitDaemon,
) -> anyhow::Result<()> {
    let apps = FleetApps::new(m);
    let repo_dir = tmp.join("small");
    let repo = GitRepo::init(&repo_dir)?;
    for i in 0..m {
        apps.write(&repo, i, 1)?;
    }
    let c1 = repo.commit("v1")?;
    let url = daemon.url(&repo_dir);
    let mut config = HubConfig::for_tests(tmp.join("fleet-hub"));
    config.default_poll_interval = Duration::from_secs(3600);
    if let Some((endpoint, txns_in_flight)) = etcd {
        let mut options = gitfleet_hub::store::etcd::EtcdOptions::new(vec![endpoint.to_owned()]);
        // A prefix of its own per run: a bench never reads an earlier run's state.
        options.prefix = format!("/hub-bench-{}/", std::process::id());
        options.txns_in_flight = txns_in_flight;
        println!("(store: etcd at {endpoint}, prefix {})", options.prefix);
        config.store = runtime::StoreConfig::Etcd(options);
    }
    let hub = runtime::start(config).await?;
    let engine: Arc<Engine> = Arc::clone(hub.engine());
    let token = hub
        .create_token(
            Duration::from_secs(3600),
            bench_labels(),
            u32::try_from(n + repeat)?,
        )
        .await?;
    if m == 1 {
        println!("fleet decisions ({n} clusters, one small App on all of them, in process):");
    } else {
        println!(
            "fleet decisions ({n} clusters x {m} Apps = {} Targets, in process; Apps: all at once, \
             25% at a time, a canary wave then the rest, 10% at a time):",
            n * m
        );
    }
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
    for c in &names {
        let key = keys.get(c).context("a registered cluster")?;
        let rx = engine.connect(c, key, "bench").await?.desired;
        clusters.push((c.clone(), rx));
    }
    println!(
        "  register + connect:                 {}",
        ms(started.elapsed())
    );
    let canaries: Vec<String> = names.iter().take(2).cloned().collect();
    let mut documents = vec![(
        "bench#fleet".to_owned(),
        format!(
            "{{\"apiVersion\":\"gitfleet.dev/v1\",\"kind\":\"Repo\",\"metadata\":{{\"name\":\"sim\"}},\"spec\":{{\"url\":\"{url}\",\"pollInterval\":\"1h\"}}}}"
        ),
    )];
    documents.extend((0..m).map(|i| {
        (
            format!("bench#fleet-app-{i}"),
            apps.document(i, &canaries).to_string(),
        )
    }));
    let rss_before = rss_bytes();
    let started = Instant::now();
    engine.apply(&documents, false).await?;
    // The Apps rolled out all at once are placed on every cluster in one step; the others a
    // batch at a time, as the reports below come in.
    let at_once: Vec<String> = apps.names.iter().step_by(4).cloned().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1800);
    for (cluster, rx) in &clusters {
        let mut rx = rx.clone();
        let placed = rx.wait_for(|d| {
            at_once.iter().all(|a| {
                d.desired
                    .targets
                    .get(a)
                    .is_some_and(|t| t.target.commit == c1)
            })
        });
        tokio::time::timeout_at(deadline, placed)
            .await
            .with_context(|| format!("the Apps were never placed on {cluster}"))??;
    }
    println!(
        "  apply -> placed on all{}:  {}",
        if m == 1 {
            "           "
        } else {
            " (all-at-once Apps)"
        },
        ms(started.elapsed())
    );
    // Every Target synced and healthy at v1.
    let healthy = (SyncState::Synced, HealthState::Healthy);
    let mut seq = 0;
    let at_c1: BTreeMap<String, String> =
        apps.names.iter().map(|a| (a.clone(), c1.clone())).collect();
    let (rate, stored, complete) =
        report_until_complete(&engine, &clusters, &at_c1, &mut seq, &[healthy]).await?;
    println!(
        "  {stored} reports stored ({rate:.0}/s durable, flushed per pass); rollouts complete after {}",
        ms(complete)
    );
    if let (Some(before), Some(after)) = (rss_before, rss_bytes()) {
        println!(
            "  memory: {} before the Apps, {} with {} Targets: {:.0} bytes per Target",
            mib(before),
            mib(after),
            n * m,
            after.saturating_sub(before) as f64 / (n * m) as f64
        );
    }
    if let Some(cpu) = cpu_time() {
        let idle = Duration::from_secs(5);
        tokio::time::sleep(idle).await;
        if let Some(after) = cpu_time() {
            println!(
                "  idle CPU (5 s, whole process):      {:.1} % of a core",
                100.0 * (after.saturating_sub(cpu)).as_secs_f64() / idle.as_secs_f64()
            );
        }
    }
    let mut took = Vec::new();
    for _ in 0..repeat {
        let t = Instant::now();
        engine.recompute().await?;
        took.push(t.elapsed());
    }
    println!("  recompute, nothing changed:         {}", ms(median(took)));
    let first = apps.first().to_owned();
    println!(
        "  rollout status (complete):          {}",
        ms(rollout_view_median(&engine, &first, repeat)?)
    );

    // A commit to one App (all at once): webhook -> every cluster's desired state has it.
    apps.write(&repo, 0, 2)?;
    let c2 = repo.commit("one App v2")?;
    let started = Instant::now();
    let waiters: Vec<_> = clusters
        .iter()
        .map(|(_, rx)| {
            let mut rx = rx.clone();
            let (c2, first) = (c2.clone(), first.clone());
            tokio::spawn(async move {
                let _ = rx
                    .wait_for(|d| {
                        d.desired
                            .targets
                            .get(&first)
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
    let label = if m == 1 {
        "  fetch -> desired state (p50/p99/max):".to_owned()
    } else {
        format!("  commit to {first}: fetch -> its {n} clusters (p50/p99/max):")
    };
    println!("{label} {}", percentiles(latencies));
    println!(
        "  rollout status (progressing):       {}",
        ms(rollout_view_median(&engine, &first, repeat)?)
    );
    // The spokes report: syncing, then synced and healthy.
    let syncing = (SyncState::Syncing, HealthState::Progressing);
    let one: BTreeMap<String, String> = BTreeMap::from([(first.clone(), c2.clone())]);
    let (rate, stored, complete) =
        report_until_complete(&engine, &clusters, &one, &mut seq, &[syncing, healthy]).await?;
    println!(
        "  {stored} reports during the rollout stored ({rate:.0}/s); rollout complete after {}",
        ms(complete)
    );
    let mut last = c2.clone();
    if m > 1 {
        // A commit that moves every App: each cluster holds every new revision once its
        // rollouts reach it (batches wait for the reports the bench plays).
        for i in 0..m {
            apps.write(&repo, i, 3)?;
        }
        let c3 = repo.commit("every App v3")?;
        let started = Instant::now();
        let waiters: Vec<_> = clusters
            .iter()
            .map(|(_, rx)| {
                let mut rx = rx.clone();
                let (c3, names) = (c3.clone(), apps.names.clone());
                tokio::spawn(async move {
                    let _ = rx
                        .wait_for(|d| {
                            names.iter().all(|a| {
                                d.desired
                                    .targets
                                    .get(a)
                                    .is_some_and(|t| t.target.commit == c3)
                            })
                        })
                        .await;
                    started.elapsed()
                })
            })
            .collect();
        ensure!(engine.trigger_fetch("sim"), "the Repo is followed");
        let all: BTreeMap<String, String> =
            apps.names.iter().map(|a| (a.clone(), c3.clone())).collect();
        let (rate, stored, complete) =
            report_until_complete(&engine, &clusters, &all, &mut seq, &[syncing, healthy]).await?;
        let mut latencies = Vec::with_capacity(n);
        for w in waiters {
            latencies.push(w.await?);
        }
        println!(
            "  commit to all {m} Apps: a cluster holds all new revisions (p50/p99/max): {}",
            percentiles(latencies)
        );
        println!(
            "  ... {stored} reports stored ({rate:.0}/s); every rollout complete after {}",
            ms(complete)
        );
        last = c3;
    }
    live_reads(&hub, &engine, &clusters, &first, &last, seq, repeat).await?;
    if ui.apps > 1 {
        dashboard(
            &hub,
            &engine,
            &clusters,
            &apps.names,
            &last,
            seq,
            ui.apps,
            repeat,
        )
        .await?;
        if let Some(hold) = ui.hold {
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
    // A cluster joining the fleet: registered, it connects and is given the Apps placed on
    // it (the all-at-once ones, at once).
    let mut took = Vec::new();
    for i in 0..repeat {
        let cluster = format!("joined-{i}");
        let t = Instant::now();
        let key = register(&engine, token.clone(), &cluster).await?;
        let mut rx = engine.connect(&cluster, &key, "bench").await?.desired;
        let placed = rx.wait_for(|d| {
            at_once.iter().all(|a| {
                d.desired
                    .targets
                    .get(a)
                    .is_some_and(|t| t.target.commit == last)
            })
        });
        tokio::time::timeout(bench_timeout(), placed)
            .await
            .with_context(|| format!("the Apps were never placed on {cluster}"))??;
        took.push(t.elapsed());
    }
    println!(
        "  a cluster joins: register -> given its Apps: {} (median of {repeat})",
        ms(median(took))
    );
    if etcd.is_some() {
        hub.shutdown().await;
        return Ok(());
    }
    // A reconnect storm's hub side: the hub restarts on its data directory and every cluster
    // connects again saying which generation it holds (TLS handshakes and streams aside:
    // fleetsim measures those with real spokes).
    let held: Vec<(String, u64)> = clusters
        .iter()
        .map(|(c, rx)| (c.clone(), rx.borrow().desired.generation))
        .collect();
    let epoch = engine.epoch().to_owned();
    drop(clusters);
    drop(engine);
    let started = Instant::now();
    hub.shutdown().await;
    let stopped = started.elapsed();
    let started = Instant::now();
    let mut config = HubConfig::for_tests(tmp.join("fleet-hub"));
    config.default_poll_interval = Duration::from_secs(3600);
    let hub = runtime::start(config).await?;
    let engine: Arc<Engine> = Arc::clone(hub.engine());
    let up = started.elapsed();
    let started = Instant::now();
    let (mut nothing, mut deltas, mut snapshots) = (0usize, 0usize, 0usize);
    for (cluster, generation) in &held {
        let key = keys.get(cluster).context("a registered cluster")?;
        let connection = engine.connect(cluster, key, "bench").await?;
        let current = std::sync::Arc::clone(&connection.desired.borrow().desired);
        match gitfleet_hub::link::on_hello(engine.epoch(), &epoch, *generation, &current) {
            None => nothing += 1,
            Some(u) if u.snapshot => snapshots += 1,
            Some(_) => deltas += 1,
        }
    }
    println!(
        "  restart: stop {}, start (load {} Targets, lead) {}; every cluster connected again {} \
         (told: nothing {nothing}, a delta {deltas}, a snapshot {snapshots})",
        ms(stopped),
        n * m,
        ms(up),
        ms(started.elapsed())
    );
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
    app: &str,
    commit: &str,
    seq: u64,
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
            seq: seq + 1 + i as u64,
            cluster: cluster.clone(),
            app: app.to_owned(),
            revision: commit.to_owned(),
            spec_generation: held(rx, app, commit).context("placed")?,
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
#[allow(clippy::too_many_arguments)]
async fn dashboard(
    hub: &runtime::HubHandle,
    engine: &Arc<Engine>,
    clusters: &[(String, DesiredRx)],
    existing: &[String],
    commit: &str,
    seq: u64,
    apps: usize,
    repeat: usize,
) -> anyhow::Result<()> {
    use http_body_util::BodyExt as _;

    // Past every seq the fleet part's reports used on these clusters (seqs are per cluster).
    let grid_seq = seq + 100_000;
    let probe_seq = seq + 200_000;
    let probe = existing.first().context("an App of the fleet part")?;
    let names: Vec<String> = (existing.len()..apps)
        .map(|i| format!("grid-{i:02}"))
        .collect();
    let apps = apps.max(existing.len());
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
    // The fleet part may have placed as many Apps as the grid shows already.
    if !documents.is_empty() {
        engine.apply(&documents, false).await?;
    }
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
                        seq: grid_seq + ai as u64,
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
    // A Prometheus scrape: the first reads the fleet (every cluster, Target and rollout), one
    // right after it shares that read.
    let scrape = async || -> anyhow::Result<Duration> {
        let (first, _, _, body) = get("/metrics").await?;
        let t = Instant::now();
        let text = body.collect().await?.to_bytes();
        ensure!(
            std::str::from_utf8(&text).is_ok_and(|t| t.contains("gitfleet_rollout_targets")),
            "the scrape has the rollouts' gauges"
        );
        Ok(first + t.elapsed())
    };
    let (reading, sharing) = (scrape().await?, scrape().await?);
    println!(
        "  /metrics: a scrape reading the fleet {}, the next (sharing that read) {}",
        ms(reading),
        ms(sharing)
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
            seq: probe_seq + i as u64,
            cluster: cluster.clone(),
            app: probe.clone(),
            revision: commit.to_owned(),
            spec_generation: held(rx, probe, commit).context("placed")?,
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
                    && cell["app"] == probe.as_str()
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
    let app_count = args.apps.unwrap_or(1000);
    let repo_dir = tmp.join("mono");
    let repo = GitRepo::init(&repo_dir)?;
    for i in 0..app_count {
        for (path, content) in app_files(i, "1.0.0") {
            repo.write(&path, content)?;
        }
    }
    let c1 = repo.commit("a monorepo")?;
    let url = daemon.url(&repo_dir);
    println!(
        "hub-bench: monorepo with {} App paths ({} files), served by git daemon; {} rounds",
        app_count,
        app_count * 3,
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
    documents.extend((0..app_count).map(|i| {
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
    let apps = app_count;
    let mut before = until_desired(&engine, "bench-1", "every App placed", |t| {
        t.len() == apps && t.values().all(|(_, c)| *c == head)
    })
    .await?;
    let placed = started.elapsed();
    println!(
        "change detection ({} Apps on one cluster; fetch triggered at once, as by a webhook):",
        app_count
    );
    println!(
        "  apply {} Apps: {}; every Target placed at the head commit after {}",
        app_count,
        ms(applied),
        ms(placed)
    );
    for round in 0..args.rounds {
        let app = (round * 397 + 42) % app_count;
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
