//! `fleetsim`: a fleet of N simulated clusters against one real hub, printing the figures of
//! `docs/benchmarks.md` (never asserted: timings are not test outcomes).
//!
//! ```text
//! cargo build --release -p gitfleet-e2e --bins
//! target/release/fleetsim --clusters 1000
//! ```
//!
//! The hub runs as its own process (the `gitfleet-hub-e2e` binary next to this one, or
//! `--hub-bin`), so its memory and CPU are its own. In this process: kubesim with one virtual
//! cluster per spoke, and N real spoke agents (the spoke library), each with its own key,
//! certificate and mutual-TLS connection. Git is served by `git daemon`; pushes reach the hub as
//! signed GitHub webhooks. The spokes' hub links run on a runtime of their own (as each real
//! spoke's link has its own CPU), their sync work on the main one. Phases:
//! 1. registration and connection of N spokes (one bootstrap token, N uses);
//! 2. the first deployment of a small App (a ConfigMap) to all N: commit → all synced+healthy;
//! 3. idle: hub RSS and CPU with N connected spokes;
//! 4. fan-out: webhook sent → each spoke holds the new revision (p50, p99, max), then commit →
//!    all synced+healthy, with the hub's CPU and peak RSS during it and its status-ingest rate;
//! 5. reconnect storm: the hub is killed (SIGKILL) and restarted on the same data directory →
//!    all N connected again, and a commit made while it was down reaches all of them;
//! 6. status ingest: the spokes stop and one Link session per cluster, with that spoke's own
//!    certificate, streams status reports (32 unacked at most per session): acked reports/s,
//!    each durable (flushed) before its ack.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Parser;
use gitfleet_cli::client::AdminClient;
use gitfleet_cli::client::config::{ClientConfig, ConfigFile as _};
use gitfleet_e2e::gitrepo::GitRepo;
use gitfleet_kubesim::{Kubesim, KubesimConfig};
use gitfleet_proto::v1 as pb;
use gitfleet_spoke::{KubeSource, SpokeConfig, SpokeHandle};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
#[command(about = "Fleet simulator: N spokes against one hub process; prints the benchmark table")]
struct Args {
    /// Simulated clusters (one spoke and one kubesim virtual cluster each).
    #[arg(long, env = "GITFLEET_SIM_CLUSTERS", default_value_t = 1000)]
    clusters: usize,
    /// The hub binary (default: gitfleet-hub-e2e, then gitfleet-hub, next to this binary).
    #[arg(long, env = "GITFLEET_SIM_HUB_BIN")]
    hub_bin: Option<PathBuf>,
    /// How long to sample the idle hub.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    idle: Duration,
    /// Give up on any phase after this long.
    #[arg(long, default_value = "600s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// How long the status-ingest phase streams reports.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    ingest: Duration,
    /// Only registration, the first deployment and status ingest (to measure ingest quickly).
    #[arg(long)]
    ingest_only: bool,
    /// The spokes reach kubesim over in-memory pipes instead of TCP (same kube-rs client and
    /// HTTP): needed beyond about 5,000 clusters where the open-file limit is 20,000, since
    /// over TCP each Kubernetes connection costs this process two descriptors.
    #[arg(long)]
    kube_in_memory: bool,
    /// Run the spokes' hub links on the same runtime as their sync work. By default they get
    /// a runtime of their own: each real spoke has its own CPU, while here 10,000 spokes'
    /// renders and applies would otherwise queue ahead of their links' keepalive pings (a
    /// 49-second backlog at 10,000, and every link dropped).
    #[arg(long)]
    links_share_runtime: bool,
    /// With `--spoke-work-idle false`: the nice value of the threads that do the simulated
    /// spokes' sync work (and kubesim's), and of `git daemon`; 0 leaves them at normal priority. Each real spoke, cluster and Git
    /// server has CPU of its own; here they share two cores with the hub and the spokes' links,
    /// and without this their 10,000-fold work starves both (the hub is the thing measured).
    #[arg(long, default_value_t = 10)]
    spoke_work_nice: u8,
    /// Run the spokes' sync work, kubesim and `git daemon` (with every `git upload-pack` it
    /// starts) under SCHED_IDLE instead of a nice value: they then take only the CPU the hub
    /// and the links leave. Nice alone is not enough at 10,000: hundreds of fetching threads
    /// and `upload-pack` processes at nice 10 together outweigh the hub's few threads.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    spoke_work_idle: bool,
    /// Where the spokes keep their data (identity, Git cache, desired state, outbox): by
    /// default a tmpfs (`/dev/shm`, when there is one), since each real spoke has a disk of its
    /// own and here 10,000 spokes' fsyncs would queue on one. The hub's data stays on disk.
    #[arg(long)]
    spoke_data: Option<PathBuf>,
    /// Spokes started at once while the fleet comes up.
    #[arg(long, default_value_t = 64)]
    start_batch: usize,
}

const SECRET: &str = "fleetsim-webhook-secret";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run(Args::parse()).await
}

/// How the simulated spokes' work is scheduled (see `--spoke-work-idle`, `--spoke-work-nice`).
#[derive(Debug, Clone, Copy)]
enum WorkPriority {
    Normal,
    Nice(u8),
    Idle,
}

impl WorkPriority {
    fn of(args: &Args) -> Self {
        match (args.spoke_work_idle, args.spoke_work_nice) {
            (true, _) => Self::Idle,
            (false, 0) => Self::Normal,
            (false, n) => Self::Nice(n),
        }
    }

    /// The command that starts `program` at this priority (`chrt --idle 0`, `nice -n N`).
    fn command(self, program: &str) -> Command {
        match self {
            Self::Normal => Command::new(program),
            Self::Nice(n) => {
                let mut c = Command::new("nice");
                c.args(["-n", &n.to_string(), program]);
                c
            }
            Self::Idle => {
                let mut c = Command::new("chrt");
                c.args(["--idle", "0", program]);
                c
            }
        }
    }

    /// Applies this priority to the calling thread (Linux schedules threads one by one:
    /// `renice` or `chrt` on the thread's id).
    fn apply_to_this_thread(self) {
        let tid = std::fs::read_link("/proc/thread-self").ok().and_then(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .map(ToOwned::to_owned)
        });
        let Some(tid) = tid else {
            return;
        };
        if matches!(self, Self::Idle) && this_thread_is_idle() {
            // Inherited from the thread that started it (Linux threads inherit their policy):
            // most of a runtime's blocking threads, and no `chrt` to start for them.
            return;
        }
        let mut command = match self {
            Self::Normal => return,
            Self::Nice(n) => {
                let mut c = Command::new("renice");
                c.args(["-n", &n.to_string(), "-p", &tid]);
                c
            }
            Self::Idle => {
                let mut c = Command::new("chrt");
                c.args(["--idle", "-p", "0", &tid]);
                c
            }
        };
        let done = command.stdout(Stdio::null()).stderr(Stdio::null()).status();
        if !done.is_ok_and(|s| s.success()) {
            eprintln!(
                "fleetsim: could not lower thread {tid} to {self:?}; spoke work runs at normal priority"
            );
        }
    }
}

/// Whether the calling thread already runs under SCHED_IDLE (policy 5, the 41st field of
/// `/proc/thread-self/stat`; fields are counted after the command name's closing parenthesis,
/// the name may hold spaces).
fn this_thread_is_idle() -> bool {
    std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().nth(41 - 3).map(|p| p == "5")
        })
        .unwrap_or(false)
}

async fn run(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GITFLEET_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let tmp = tempfile::Builder::new().prefix("fleetsim-").tempdir()?;
    let spoke_root = match &args.spoke_data {
        Some(dir) => dir.clone(),
        None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
        None => tmp.path().to_owned(),
    };
    let spoke_tmp = tempfile::Builder::new()
        .prefix("fleetsim-spokes-")
        .tempdir_in(&spoke_root)
        .with_context(|| {
            format!(
                "a directory for the spokes' data in {}",
                spoke_root.display()
            )
        })?;
    let mut sim = Sim::start(&args, tmp.path(), spoke_tmp.path()).await?;
    let result = sim.run(&args).await;
    sim.stop().await;
    result
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A task on `runtime` ticking every 100 ms that records its largest lateness (µs).
fn lag_probe(runtime: &tokio::runtime::Handle) -> Arc<std::sync::atomic::AtomicU64> {
    let lag = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let max = Arc::clone(&lag);
    runtime.spawn(async move {
        let tick = Duration::from_millis(100);
        loop {
            let start = Instant::now();
            tokio::time::sleep(tick).await;
            let late = start.elapsed().saturating_sub(tick);
            let late = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
            max.fetch_max(late, std::sync::atomic::Ordering::Relaxed);
        }
    });
    lag
}

/// Resident memory (KiB) and CPU time (seconds) of a process, from /proc.
fn usage(pid: u32) -> anyhow::Result<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11..13)
        .context("short /proc/pid/stat")?
        .iter()
        .map(|f| f.parse::<f64>().unwrap_or(0.0))
        .sum();
    Ok((rss, ticks / 100.0))
}

/// Samples a process every 100 ms while `f` runs: its peak RSS and the CPU it used.
async fn sampled<T>(
    pid: u32,
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(T, u64, f64, Duration)> {
    let (_, cpu0) = usage(pid)?;
    let start = Instant::now();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let peak = Arc::clone(&peak);
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                if let Ok((rss, _)) = usage(pid) {
                    peak.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    () = stop.cancelled() => return,
                }
            }
        })
    };
    let out = f.await;
    stop.cancel();
    let _ = sampler.await;
    let took = start.elapsed();
    let (rss, cpu1) = usage(pid)?;
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed).max(rss);
    Ok((out?, peak, cpu1 - cpu0, took))
}

struct Sim {
    dir: PathBuf,
    /// The spokes' data directories live under here (see `--spoke-data`).
    spoke_dir: PathBuf,
    hub_bin: PathBuf,
    hub: Option<Proc>,
    grpc_port: u16,
    http_port: u16,
    admin: Option<AdminClient>,
    kubesim: gitfleet_kubesim::KubesimHandle,
    git: GitRepo,
    _daemon: Proc,
    repo_url: String,
    spokes: Vec<SpokeHandle>,
    names: Vec<String>,
    rows: Vec<(String, String)>,
    /// The largest lateness (µs) of a 100 ms timer in this process since it was last read: how
    /// starved the simulated spokes' runtime is.
    lag: Arc<std::sync::atomic::AtomicU64>,
    /// The same on the links' runtime, when they have their own.
    link_lag: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// `sessions_ended` when `phase_health` last read it.
    ended_before: BTreeMap<String, u64>,
    /// Where the spokes' hub links run (see `--links-share-runtime`).
    links: LinkRuntime,
    /// Where the spokes and kubesim work (see `--spoke-work-nice`).
    work: LinkRuntime,
}

/// A runtime for the spokes' links, shut down without blocking when dropped (a runtime dropped
/// inside another would panic).
struct LinkRuntime(Option<tokio::runtime::Runtime>);

impl LinkRuntime {
    fn new(shared: bool) -> anyhow::Result<Self> {
        Self::named(shared, "spoke-links", 2, WorkPriority::Normal)
    }

    /// A runtime of `threads` workers whose threads (blocking ones too) run at `priority`.
    fn named(
        shared: bool,
        name: &str,
        threads: usize,
        priority: WorkPriority,
    ) -> anyhow::Result<Self> {
        if shared {
            return Ok(Self(None));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .on_thread_start(move || priority.apply_to_this_thread())
            .enable_all()
            .build()
            .context("starting the links' runtime")?;
        Ok(Self(Some(runtime)))
    }

    fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.0.as_ref().map(|r| r.handle().clone())
    }
}

impl Drop for LinkRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Sim {
    async fn start(args: &Args, dir: &Path, spoke_dir: &Path) -> anyhow::Result<Sim> {
        let hub_bin = match &args.hub_bin {
            Some(p) => p.clone(),
            None => {
                let here = std::env::current_exe()?;
                let bin_dir = here.parent().context("no binary directory")?;
                ["gitfleet-hub-e2e", "gitfleet-hub"]
                    .iter()
                    .map(|n| bin_dir.join(n))
                    .find(|p| p.exists())
                    .context(
                        "no gitfleet-hub binary next to fleetsim: build with \
                         `cargo build --release -p gitfleet-e2e --bins` or pass --hub-bin",
                    )?
            }
        };
        let names: Vec<String> = (0..args.clusters).map(|i| format!("sim-{i:05}")).collect();
        let mut ks = KubesimConfig::new(names.clone());
        ks.ready_delay = Duration::from_millis(100);
        // The spokes and kubesim work on a runtime of their own at a lower priority; this one
        // drives the phases and times them.
        let work = LinkRuntime::named(false, "spoke-work", 2, WorkPriority::of(args))?;
        let work_handle = work.handle().context("the spokes' runtime")?;
        let kubesim = work_handle
            .spawn(Kubesim::start(ks))
            .await
            .context("starting kubesim")?
            .context("starting kubesim")?;

        let git = GitRepo::init(&dir.join("git"))?;
        git.write(
            "apps/small/configmap.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: small\ndata:\n  version: \"1\"\n",
        )?;
        git.commit("small v1")?;
        // Like GitHub or GitLab, serve a commit asked for by id: a spoke's fetch is then one
        // connection, not a refused one and a fetch of every branch.
        git2::Repository::open(git.dir())?
            .config()?
            .set_bool("uploadpack.allowReachableSHA1InWant", true)?;
        let daemon_port = free_port()?;
        let daemon = Proc(
            WorkPriority::of(args)
                .command("git")
                .args([
                    "daemon",
                    "--reuseaddr",
                    "--export-all",
                    "--base-path=/",
                    // The default 32 makes git daemon kill fetches and pause its accept loop for
                    // a second each time a 10,000-spoke fleet fetches at once; the simulated
                    // spokes' blocking pool (512 threads) bounds the fetches in flight anyway.
                    "--max-connections=512",
                    "--listen=127.0.0.1",
                    &format!("--port={daemon_port}"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting git daemon")?,
        );
        let repo_url = format!("git://127.0.0.1:{daemon_port}{}", git.dir().display());

        let mut sim = Sim {
            dir: dir.to_owned(),
            spoke_dir: spoke_dir.to_owned(),
            hub_bin,
            hub: None,
            grpc_port: free_port()?,
            http_port: free_port()?,
            admin: None,
            kubesim,
            git,
            _daemon: daemon,
            repo_url,
            spokes: Vec::new(),
            names,
            rows: Vec::new(),
            lag: lag_probe(&work_handle),
            work,
            link_lag: None,
            ended_before: BTreeMap::new(),
            links: LinkRuntime::new(args.links_share_runtime)?,
        };
        sim.link_lag = sim.links.handle().map(|h| lag_probe(&h));
        sim.start_hub(args.timeout).await?;
        Ok(sim)
    }

    async fn start_hub(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let data = self.dir.join("hub");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("hub.log"))?;
        let child = Command::new(&self.hub_bin)
            .args([
                "serve",
                "--data-dir",
                &data.display().to_string(),
                "--grpc-listen",
                &format!("127.0.0.1:{}", self.grpc_port),
                "--http-listen",
                &format!("127.0.0.1:{}", self.http_port),
                "--webhook-secret",
                SECRET,
                "--default-poll-interval",
                "1h",
                // Every simulated spoke registers from 127.0.0.1 at once.
                "--register-rate-limit",
                "0",
            ])
            .env("GITFLEET_LOG", "warn")
            // Every start appends, so a restarted hub does not hide why the last one ended.
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.hub_bin.display()))?;
        self.hub = Some(Proc(child));
        let config_path = data.join("admin.gitfleetconfig");
        let deadline = Instant::now() + timeout;
        loop {
            if config_path.exists()
                && let Ok(config) = ClientConfig::load(&config_path)
                && let Ok(context) = config.context(None)
                && let Ok(client) = AdminClient::connect(context).await
            {
                self.admin = Some(client);
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the hub did not come up; see {}",
                self.dir.join("hub.log").display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every Target of the App, retrying (until `deadline`) a call the busy hub failed: a
    /// benchmark measures the fleet, not one listing's luck.
    async fn status_or_retry(
        &mut self,
        deadline: Instant,
    ) -> anyhow::Result<Vec<pb::TargetStatus>> {
        loop {
            match self.admin()?.status("small", "").await {
                Ok(status) => return Ok(status),
                Err(e) => {
                    self.check_hub()?;
                    ensure!(Instant::now() < deadline, "listing the Targets: {e}");
                    eprintln!("fleetsim: listing the Targets failed ({e}); retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Of the App's Targets, how many the hub has given `commit` and how many are healthy at
    /// it, from its rollout view (counted in memory); retried like `status_or_retry`.
    async fn rollout_progress(
        &mut self,
        commit: &str,
        deadline: Instant,
    ) -> anyhow::Result<(usize, usize)> {
        loop {
            match self.admin()?.rollout_counts("small").await {
                Ok(r) if r.revision != commit => return Ok((0, 0)),
                Ok(r) => {
                    let sum = |f: fn(&pb::RolloutWave) -> u32| {
                        r.waves.iter().map(|w| f(w) as usize).sum::<usize>()
                    };
                    return Ok((sum(|w| w.updated), sum(|w| w.healthy)));
                }
                Err(e) => {
                    self.check_hub()?;
                    ensure!(Instant::now() < deadline, "reading the rollout: {e}");
                    eprintln!("fleetsim: reading the rollout failed ({e}); retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Fails, saying how, when the hub process has ended.
    fn check_hub(&mut self) -> anyhow::Result<()> {
        let hub = self.hub.as_mut().context("the hub runs")?;
        if let Some(status) = hub.0.try_wait()? {
            anyhow::bail!(
                "the hub process ended ({status}); see {}",
                self.dir.join("hub.log").display()
            );
        }
        Ok(())
    }

    fn hub_pid(&self) -> anyhow::Result<u32> {
        Ok(self.hub.as_ref().context("the hub runs")?.0.id())
    }

    fn admin(&mut self) -> anyhow::Result<&mut AdminClient> {
        self.admin.as_mut().context("the hub runs")
    }

    fn row(&mut self, what: &str, value: String) {
        println!("  {what:<58} {value}");
        self.rows.push((what.to_owned(), value));
    }

    /// What a phase cost the links: the simulator's worst runtime lag and the sessions the hub
    /// saw end, by why, since the last call. Printed, not tabled: it explains the figures.
    async fn phase_health(&mut self) {
        let lag = self.lag.swap(0, std::sync::atomic::Ordering::Relaxed);
        let link_lag = self.link_lag.as_ref().map_or_else(
            || "(shared)".to_owned(),
            |l| {
                ms(Duration::from_micros(
                    l.swap(0, std::sync::atomic::Ordering::Relaxed),
                ))
            },
        );
        let ended = self.sessions_ended().await.unwrap_or_default();
        let delta: Vec<String> = ended
            .iter()
            .filter_map(|(reason, n)| {
                // The counters restart with the hub.
                let before = self.ended_before.get(reason).copied().unwrap_or(0);
                let d = if *n >= before { n - before } else { *n };
                (d > 0).then(|| format!("{reason} {d}"))
            })
            .collect();
        println!(
            "  ... simulator runtime lag max {} (spokes' work), {} (their links); link sessions ended: {}",
            ms(Duration::from_micros(lag)),
            link_lag,
            if delta.is_empty() {
                "none".to_owned()
            } else {
                delta.join(", ")
            }
        );
        self.ended_before = ended;
    }

    /// The hub's `gitfleet_link_sessions_ended_total` by reason.
    async fn sessions_ended(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let request = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.http_port)).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok(response
            .lines()
            .filter_map(|l| l.strip_prefix("gitfleet_link_sessions_ended_total{reason=\""))
            .filter_map(|rest| rest.split_once("\"} "))
            .filter_map(|(reason, n)| Some((reason.to_owned(), n.trim().parse().ok()?)))
            .collect())
    }

    async fn connected(&mut self) -> anyhow::Result<usize> {
        Ok(self
            .admin()?
            .list_clusters()
            .await?
            .iter()
            .filter(|c| c.connected)
            .count())
    }

    async fn wait_connected(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let n = self.names.len();
        let deadline = Instant::now() + timeout;
        loop {
            match self.connected().await {
                Ok(c) if c == n => return Ok(()),
                Ok(c) => ensure!(
                    Instant::now() < deadline,
                    "only {c} of {n} spokes connected"
                ),
                Err(e) => ensure!(Instant::now() < deadline, "{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// How often to read the rollout view while waiting for a rollout: each read decides over every
    /// cluster (about 6 µs of the hub's CPU per cluster), so reading it every 50 ms at 10,000
    /// would take most of a core from the hub being measured. Every 50 ms per 1,000 clusters
    /// keeps it near a tenth of one core.
    fn rollout_poll_interval(&self) -> Duration {
        let thousands = u32::try_from(self.names.len().div_ceil(1000)).unwrap_or(u32::MAX);
        Duration::from_millis(50) * thousands.max(1)
    }

    async fn wait_synced(&mut self, commit: &str, timeout: Duration) -> anyhow::Result<()> {
        let n = self.names.len();
        let deadline = Instant::now() + timeout;
        let poll = self.rollout_poll_interval().max(Duration::from_millis(200));
        loop {
            // The rollout's counts first (one small call), then one listing of every Target to
            // confirm: listing 10,000 Targets every 200 ms would load the hub being measured.
            let (_, healthy) = self.rollout_progress(commit, deadline).await?;
            if healthy < n {
                ensure!(
                    Instant::now() < deadline,
                    "only {healthy} of {n} Targets healthy at {commit}"
                );
                tokio::time::sleep(poll).await;
                continue;
            }
            let status = self.status_or_retry(deadline).await?;
            let done = status
                .iter()
                .filter(|t| {
                    t.applied_revision == commit
                        && t.sync == pb::SyncState::Synced as i32
                        && t.health == pb::HealthState::Healthy as i32
                })
                .count();
            if done == n {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "only {done} of {n} Targets synced and healthy at {commit}"
            );
            tokio::time::sleep(poll).await;
        }
    }

    async fn start_spokes(&mut self, args: &Args) -> anyhow::Result<()> {
        let uses = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        let token = self
            .admin()?
            .create_token(pb::CreateTokenRequest {
                ttl_seconds: 3600,
                labels: BTreeMap::from([("fleet".to_owned(), "sim".to_owned())])
                    .into_iter()
                    .collect(),
                max_uses: uses,
                description: "fleetsim".into(),
                allowed_label_keys: Vec::new(),
                cluster_name: String::new(),
            })
            .await?
            .token;
        let ca = std::fs::read_to_string(self.dir.join("hub").join("ca.pem"))
            .ok()
            .or_else(|| {
                let config =
                    ClientConfig::load(&self.dir.join("hub").join("admin.gitfleetconfig")).ok()?;
                Some(
                    config
                        .context(None)
                        .ok()?
                        .certificate_authority_data
                        .clone(),
                )
            })
            .context("no hub CA")?;
        let hub_url = format!("https://127.0.0.1:{}", self.grpc_port);
        let work = self.work.handle().context("the spokes' runtime")?;
        for chunk in self.names.clone().chunks(args.start_batch.max(1)) {
            let mut started = tokio::task::JoinSet::new();
            for name in chunk {
                let mut config = SpokeConfig::new(
                    hub_url.clone(),
                    self.spoke_dir.join(name),
                    name.clone(),
                    if args.kube_in_memory {
                        KubeSource::Client(self.kubesim.in_memory_client(name)?)
                    } else {
                        KubeSource::Config(Box::new(self.kubesim.kube_config(name)))
                    },
                );
                config.hub_ca_pem = Some(ca.clone());
                config.bootstrap_token = Some(token.clone());
                config.labels = BTreeMap::from([("fleet".to_owned(), "sim".to_owned())]);
                config.link_runtime = self.links.handle();
                started.spawn_on(gitfleet_spoke::start(config), &work);
            }
            while let Some(spoke) = started.join_next().await {
                self.spokes.push(spoke??);
            }
        }
        Ok(())
    }

    /// Sends the GitHub push webhook for the repository, as GitHub would after a push.
    async fn push_webhook(&self) -> anyhow::Result<()> {
        let body = serde_json::json!({
            "ref": "refs/heads/main",
            "repository": { "clone_url": self.repo_url },
        })
        .to_string();
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes())?;
        mac.update(body.as_bytes());
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        // One plain HTTP/1.1 request: no client library needed for a benchmark.
        let request = format!(
            "POST /webhooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\nX-GitHub-Event: push\r\n\
             X-Hub-Signature-256: {signature}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.http_port)).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let status_line = response.lines().next().unwrap_or_default().to_owned();
        ensure!(
            status_line.contains(" 200")
                || status_line.contains(" 202")
                || status_line.contains(" 204"),
            "webhook refused: {status_line}"
        );
        Ok(())
    }

    /// The hub's dispatch-latency histogram: cumulative counts by upper bound (seconds).
    async fn dispatch_buckets(&self) -> anyhow::Result<Vec<(f64, u64)>> {
        let request = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.http_port)).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let mut buckets = Vec::new();
        for line in response.lines() {
            let Some(rest) = line.strip_prefix("gitfleet_dispatch_latency_seconds_bucket{le=\"")
            else {
                continue;
            };
            let (le, count) = rest
                .split_once("\"} ")
                .with_context(|| format!("unexpected metrics line {line:?}"))?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse()?
            };
            buckets.push((le, count.trim().parse()?));
        }
        ensure!(
            !buckets.is_empty(),
            "the hub's /metrics has no dispatch latency"
        );
        Ok(buckets)
    }

    fn commit(&self, version: u32) -> anyhow::Result<String> {
        self.git.write(
            "apps/small/configmap.yaml",
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: small\ndata:\n  version: \"{version}\"\n"
            ),
        )?;
        Ok(self.git.commit(&format!("small v{version}"))?)
    }
}

impl Sim {
    async fn run(&mut self, args: &Args) -> anyhow::Result<()> {
        let n = self.names.len();
        println!(
            "fleetsim: {n} clusters, hub {} (pid {}), kubesim and spokes in pid {}",
            self.hub_bin.display(),
            self.hub_pid()?,
            std::process::id()
        );

        // 1. Registration and connection.
        let start = Instant::now();
        self.start_spokes(args).await?;
        self.wait_connected(args.timeout).await?;
        self.row(
            "register + connect all spokes",
            format!("{:.1}s", start.elapsed().as_secs_f64()),
        );
        self.phase_health().await;

        // 2. First deployment.
        let resources = format!(
            "apiVersion: gitfleet.dev/v1\nkind: Repo\nmetadata: {{ name: sim }}\nspec:\n  url: {}\n  ref: {{ branch: main }}\n  pollInterval: 1h\n---\napiVersion: gitfleet.dev/v1\nkind: App\nmetadata: {{ name: small }}\nspec:\n  repo: sim\n  path: apps/small\n  namespace: default\n  targets:\n    - clusterSelector: {{ matchLabels: {{ fleet: sim }} }}\n",
            self.repo_url
        );
        let documents = gitfleet_e2e::harness::resource_documents("fleetsim", &resources)?;
        let v1 = self.git.head()?;
        let start = Instant::now();
        self.admin()?.apply(documents, false).await?;
        self.wait_synced(&v1, args.timeout).await?;
        self.row(
            "first deployment: apply -> all synced+healthy",
            format!("{:.1}s", start.elapsed().as_secs_f64()),
        );
        self.phase_health().await;

        let last = if args.ingest_only {
            v1
        } else {
            self.idle_fanout_storm(args).await?
        };

        // 6. Status ingest: the spokes stop; their identities stream reports as fast as acks
        // come back.
        let pid = self.hub_pid()?;
        let (rss, _) = usage(std::process::id())?;
        let spokes_rss = rss;
        let sessions = self.names.len();
        for s in std::mem::take(&mut self.spokes) {
            s.shutdown().await;
        }
        let ((acked, took), _, cpu, _) =
            sampled(pid, self.ingest(sessions, args.ingest, &last)).await?;
        self.row(
            "status ingest: durable acked reports/s",
            format!(
                "{:.0}/s ({acked} over {:.1}s from {sessions} links, hub {:.0}% of one core)",
                acked as f64 / took.as_secs_f64(),
                took.as_secs_f64(),
                100.0 * cpu / took.as_secs_f64()
            ),
        );
        let rss = spokes_rss;
        self.row(
            "this process (kubesim + all spokes): resident memory",
            format!(
                "{:.1} MiB ({:.1} KiB per cluster)",
                rss as f64 / 1024.0,
                rss as f64 / n as f64
            ),
        );
        println!("\n| measure | {n} clusters |\n| --- | --- |");
        for (what, value) in &self.rows {
            println!("| {} | {value} |", what.trim_start_matches("  ... ").trim());
        }
        Ok(())
    }

    /// Phases 3-5: idle, fan-out and rollout, the reconnect storm. Returns the revision the
    /// fleet is at.
    async fn idle_fanout_storm(&mut self, args: &Args) -> anyhow::Result<String> {
        let n = self.names.len();
        // 3. Idle.
        let pid = self.hub_pid()?;
        let idle = args.idle;
        let ((), peak, cpu, took) = sampled(pid, async {
            tokio::time::sleep(idle).await;
            Ok(())
        })
        .await?;
        self.row(
            "hub idle: resident memory",
            format!(
                "{:.1} MiB ({:.1} KiB per connected spoke)",
                peak as f64 / 1024.0,
                peak as f64 / n as f64
            ),
        );
        self.row(
            "hub idle: CPU",
            format!("{:.2}% of one core", 100.0 * cpu / took.as_secs_f64()),
        );
        self.phase_health().await;

        // 4. Fan-out and rollout.
        let v2 = self.commit(2)?;
        let receivers: Vec<_> = self.spokes.iter().map(SpokeHandle::desired).collect();
        // Timed on a runtime of their own: on the spokes' busy one a waiter would note the
        // time only when its turn came, seconds late.
        let measure = LinkRuntime::named(false, "fanout-timer", 1, WorkPriority::Normal)?;
        let measure_handle = measure.handle().context("the timer runtime")?;
        let waiters: Vec<_> = receivers
            .into_iter()
            .map(|mut rx| {
                let v2 = v2.clone();
                measure_handle.spawn(async move {
                    let holds = |d: &gitfleet_spoke::desired::DesiredState| {
                        d.targets
                            .get("small")
                            .is_some_and(|t| t.source.commit == v2)
                    };
                    let _ = rx.wait_for(holds).await;
                    Instant::now()
                })
            })
            .collect();
        let timeout = args.timeout;
        let dispatched_before = self.dispatch_buckets().await?;
        let (fanout, peak, cpu, took) = sampled(pid, async {
            let sent = Instant::now();
            self.push_webhook().await?;
            // Nothing reads the hub meanwhile: the rollout view decides over every cluster,
            // and the hub's part is its own dispatch histogram, read before and after.
            let mut latencies = Vec::with_capacity(n);
            for mut w in waiters {
                let at = loop {
                    match tokio::time::timeout(Duration::from_secs(1), &mut w).await {
                        Ok(at) => break at?,
                        Err(_) => {
                            self.check_hub()?;
                            ensure!(
                                sent.elapsed() < timeout,
                                "a spoke never got the new revision"
                            );
                        }
                    }
                };
                latencies.push(at.saturating_duration_since(sent));
            }
            self.wait_synced(&v2, timeout).await?;
            Ok((latencies, sent.elapsed()))
        })
        .await?;
        let (mut latencies, to_healthy) = fanout;
        let dispatched_after = self.dispatch_buckets().await?;
        self.row(
            "fan-out, hub side: fetch start -> on each spoke's stream (p50/p99/max)",
            bucket_percentiles(&dispatched_before, &dispatched_after)?,
        );
        latencies.sort();
        self.row(
            "webhook -> the first spoke holds the new revision",
            ms(*latencies.first().context("no spokes")?),
        );
        let pct = |p: f64| {
            latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
        };
        self.row(
            "fan-out: webhook -> spoke holds new revision (p50/p99/max)",
            format!(
                "{} / {} / {}",
                ms(pct(0.50)),
                ms(pct(0.99)),
                ms(*latencies.last().context("no spokes")?)
            ),
        );
        self.row(
            "commit (webhook) -> all synced+healthy",
            format!("{:.2}s", to_healthy.as_secs_f64()),
        );
        self.row(
            "hub during the rollout: peak memory, CPU",
            load_text(peak, cpu, took),
        );
        self.phase_health().await;
        // 5. Reconnect storm: kill -9, commit while down, restart.
        let v3 = self.commit(3)?;
        if let Some(mut hub) = self.hub.take() {
            hub.0.kill()?;
            hub.0.wait()?;
        }
        self.admin = None;
        let start = Instant::now();
        self.start_hub(args.timeout).await?;
        let pid = self.hub_pid()?;
        let timeout = args.timeout;
        let ((), peak, cpu, took) = sampled(pid, async {
            self.wait_connected(timeout).await?;
            Ok(())
        })
        .await?;
        let reconnected = start.elapsed();
        self.push_webhook().await?;
        self.wait_synced(&v3, args.timeout).await?;
        self.row(
            "reconnect storm: kill -9 + restart -> all connected",
            format!("{:.1}s", reconnected.as_secs_f64()),
        );
        self.row(
            "  ... then a commit made while down -> all synced+healthy",
            format!("{:.1}s", start.elapsed().as_secs_f64()),
        );
        self.row(
            "  hub during the storm: peak memory, CPU",
            load_text(peak, cpu, took),
        );
        self.phase_health().await;
        Ok(v3)
    }

    /// Opens one Link session per cluster with the spoke's own identity and streams status
    /// reports, keeping up to `WINDOW` unacked per session, for `duration`. Returns how many
    /// reports the hub acked (durable) and over how long.
    async fn ingest(
        &self,
        sessions: usize,
        duration: Duration,
        revision: &str,
    ) -> anyhow::Result<(u64, Duration)> {
        const WINDOW: u64 = 32;
        let hub_url = format!("https://127.0.0.1:{}", self.grpc_port);
        // Every session is opened (a few at a time, retried: the hub sheds handshakes beyond
        // its limit) before any streams, so that all stream for the same window.
        let connects = Arc::new(tokio::sync::Semaphore::new(256));
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(sessions.max(1));
        let (go_tx, go_rx) = tokio::sync::watch::channel(None::<Instant>);
        let connect_deadline = Instant::now() + Duration::from_secs(300);
        let mut tasks = tokio::task::JoinSet::new();
        for name in self.names.iter().take(sessions) {
            let ids = self.spoke_dir.join(name).join("identity");
            let read = |f: &str| {
                std::fs::read_to_string(ids.join(f))
                    .with_context(|| format!("{name}: reading identity {f}"))
            };
            let (key, cert, ca) = (read("key.pem")?, read("cert.pem")?, read("ca.pem")?);
            let hub_url = hub_url.clone();
            let name = name.clone();
            let revision = revision.to_owned();
            let connects = Arc::clone(&connects);
            let ready_tx = ready_tx.clone();
            let mut go_rx = go_rx.clone();
            tasks.spawn(async move {
                let open = || async {
                    let tls = tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(&ca))
                        .identity(tonic::transport::Identity::from_pem(&cert, &key));
                    let channel = tonic::transport::Endpoint::from_shared(hub_url.clone())?
                        .connect_timeout(Duration::from_secs(10))
                        .tls_config(tls)?
                        .connect()
                        .await?;
                    let mut client = pb::link_client::LinkClient::new(channel);
                    let (tx, rx) = tokio::sync::mpsc::channel::<pb::SpokeMessage>(256);
                    tx.send(pb::SpokeMessage {
                        msg: Some(pb::spoke_message::Msg::Hello(pb::Hello {
                            cluster: name.clone(),
                            agent_version: "fleetsim".into(),
                            ..Default::default()
                        })),
                    })
                    .await?;
                    let inbound = tokio::time::timeout(
                        Duration::from_secs(30),
                        client.session(tokio_stream::wrappers::ReceiverStream::new(rx)),
                    )
                    .await??
                    .into_inner();
                    anyhow::Ok((tx, inbound))
                };
                let (tx, mut inbound) = {
                    let _permit = connects.acquire().await?;
                    loop {
                        match open().await {
                            Ok(session) => break session,
                            Err(_) if Instant::now() < connect_deadline => {
                                tokio::time::sleep(Duration::from_millis(rand::random_range(
                                    100..1000,
                                )))
                                .await;
                            }
                            Err(e) => return Err(e.context(format!("{name}: opening a session"))),
                        }
                    }
                };
                ready_tx.send(()).await?;
                drop(ready_tx);
                let until = *go_rx
                    .wait_for(Option::is_some)
                    .await?
                    .as_ref()
                    .context("go without a deadline")?;
                // Far above anything the real spoke used: every report is new to the hub.
                let first = 1_000_000u64;
                let (mut next, mut acked) = (first, first - 1);
                loop {
                    while next <= acked + WINDOW && Instant::now() < until {
                        let report = pb::StatusReport {
                            seq: next,
                            cluster: name.clone(),
                            target_id: "small".into(),
                            revision: revision.clone(),
                            sync: pb::SyncState::Synced as i32,
                            health: pb::HealthState::Healthy as i32,
                            message: "1 resource synced and healthy".into(),
                            ..Default::default()
                        };
                        tx.send(pb::SpokeMessage {
                            msg: Some(pb::spoke_message::Msg::Status(report)),
                        })
                        .await?;
                        next += 1;
                    }
                    if acked + 1 == next && Instant::now() >= until {
                        return anyhow::Ok(acked + 1 - first);
                    }
                    match inbound.message().await? {
                        Some(pb::HubMessage {
                            msg: Some(pb::hub_message::Msg::Ack(a)),
                        }) => acked = acked.max(a.acked_seq),
                        Some(_) => {}
                        None => anyhow::bail!("{name}: the hub ended the session"),
                    }
                }
            });
        }
        drop(ready_tx);
        let mut ready = 0;
        while ready < sessions {
            tokio::select! {
                r = ready_rx.recv() => match r {
                    Some(()) => ready += 1,
                    None => break,
                },
                Some(failed) = tasks.join_next() => {
                    failed??;
                }
            }
        }
        ensure!(
            ready == sessions,
            "only {ready} of {sessions} sessions opened"
        );
        let start = Instant::now();
        go_tx.send_replace(Some(start + duration));
        let mut total = 0;
        while let Some(r) = tasks.join_next().await {
            total += r??;
        }
        Ok((total, start.elapsed()))
    }

    async fn stop(mut self) {
        for s in std::mem::take(&mut self.spokes) {
            s.shutdown().await;
        }
        self.hub = None;
        if let Err(e) = std::fs::remove_dir_all(&self.spoke_dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("cannot clean up: {e}");
        }
    }
}

/// p50 / p99 / max of the observations between two scrapes of a histogram, as the bucket
/// bounds they fall under ("<= 50 ms").
fn bucket_percentiles(before: &[(f64, u64)], after: &[(f64, u64)]) -> anyhow::Result<String> {
    ensure!(before.len() == after.len(), "the histogram changed shape");
    let counts: Vec<(f64, u64)> = after
        .iter()
        .zip(before)
        .map(|(&(le, a), &(_, b))| (le, a.saturating_sub(b)))
        .collect();
    let total = counts.last().map_or(0, |&(_, c)| c);
    ensure!(total > 0, "the hub dispatched nothing it timed");
    let bound = |p: f64| {
        let rank = ((total as f64) * p).ceil().max(1.0) as u64;
        let le = counts
            .iter()
            .find(|&&(_, c)| c >= rank)
            .map_or(f64::INFINITY, |&(le, _)| le);
        if le.is_infinite() {
            "> 60 s".to_owned()
        } else {
            format!("<= {}", ms(Duration::from_secs_f64(le)))
        }
    };
    Ok(format!(
        "{} / {} / {} ({total} dispatches)",
        bound(0.50),
        bound(0.99),
        bound(1.0)
    ))
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// A process's peak memory (`peak` KiB) and its CPU time (`cpu` seconds) over `took`.
fn load_text(peak: u64, cpu: f64, took: Duration) -> String {
    format!(
        "{:.1} MiB, {:.0}% of one core over {:.1}s",
        peak as f64 / 1024.0,
        100.0 * cpu / took.as_secs_f64(),
        took.as_secs_f64()
    )
}
