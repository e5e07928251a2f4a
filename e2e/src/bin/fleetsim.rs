//! `fleetsim`: a fleet of N simulated clusters against one real hub, or several hub replicas on
//! etcd, printing the figures of `docs/benchmarks.md` (never asserted: timings are not test
//! outcomes).
//!
//! ```text
//! cargo build --release -p gitfleet-e2e --bins
//! target/release/fleetsim --clusters 1000
//! # three replicas on one etcd prefix (the hub binary built with its etcd feature):
//! cargo build --release -p gitfleet-e2e --bins --features gitfleet-hub/etcd
//! target/release/fleetsim --clusters 1000 --replicas 3 --etcd-endpoint http://127.0.0.1:2379
//! ```
//!
//! The hub runs as its own process (the `gitfleet-hub-e2e` binary next to this one, or
//! `--hub-bin`), so its memory and CPU are its own; with `--replicas N`, N such processes share
//! one etcd prefix and one PKI (`gitfleet-hub init`, copied to each replica's data directory),
//! and each spoke is given every replica's address, first its own share's. In this process:
//! kubesim with one virtual cluster per spoke, and N real spoke agents (the spoke library), each
//! with its own key, certificate and mutual-TLS connection. Git is served by `git daemon`;
//! pushes reach the hub (a follower, when there are replicas) as signed GitHub webhooks. The
//! spokes' hub links run on a runtime of their own (as each real spoke's link has its own CPU),
//! their sync work on the main one. Phases:
//! 1. registration and connection of N spokes (one bootstrap token, N uses);
//! 2. the first deployment of a small App (a ConfigMap) to all N: commit → all synced+healthy
//!    (with `--apps M`, M-1 more Apps of one to three ConfigMaps beside it, which stay put
//!    after: the later phases move `small` on a fleet carrying M Apps per cluster);
//! 3. idle: hub RSS and CPU with N connected spokes;
//! 4. fan-out: webhook sent → each spoke holds the new revision (p50, p99, max), then commit →
//!    all synced+healthy, with the hub's CPU and peak RSS during it and its status-ingest rate;
//! 5. one hub: reconnect storm: the hub is killed (SIGKILL) and restarted on the same data
//!    directory → all N connected again, and a commit made while it was down reaches all of
//!    them. Replicas: (b) a follower holding a third of the links is killed → every spoke
//!    connected at a live replica again; then (a) the leader is killed mid-rollout (an App rolled
//!    out a batch at a time, a commit just pushed) → another replica leads, and the rollout moves
//!    again. Each killed replica is started again afterwards;
//! 6. status ingest: the spokes stop and one Link session per cluster, with that spoke's own
//!    certificate, streams status reports (32 unacked at most per session; the sessions spread
//!    over the replicas; for each of its Apps in turn): acked reports/s, each durable (flushed)
//!    before its ack.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use base64::Engine as _;
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
#[command(
    about = "Fleet simulator: N spokes against one hub process, or hub replicas on etcd; prints the benchmark table"
)]
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
    /// Stop once every spoke holds the fan-out's commit (phases 1 to 4 without waiting for
    /// the rollout to turn healthy): to measure or profile the fan-out alone.
    #[arg(long, conflicts_with = "ingest_only")]
    fanout_only: bool,
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
    /// Hub processes sharing one etcd prefix (needs --etcd-endpoint when more than one): one
    /// leads, every one serves spoke links, webhooks and admin calls.
    #[arg(long, env = "GITFLEET_SIM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    replicas: u16,
    /// The etcd the hubs keep their store in (a plain `http://HOST:PORT` client URL); each run
    /// takes a fresh prefix and deletes it at the end. Without it, the one hub uses sled.
    #[arg(long, env = "GITFLEET_SIM_ETCD_ENDPOINT")]
    etcd_endpoint: Option<String>,
    /// That etcd's process id, to report its memory and CPU beside the hubs'.
    #[arg(long, env = "GITFLEET_SIM_ETCD_PID")]
    etcd_pid: Option<u32>,
    /// Keep the directory with the hubs' logs and data directories (and the Git repository)
    /// when done, instead of deleting it; its path is printed.
    #[arg(long)]
    keep_hub_logs: bool,
    /// With replicas: the App's `maxUnavailable` for the rollout the leader is killed in, so
    /// that the rollout goes a batch at a time and the kill lands in the middle of it.
    #[arg(long, default_value = "25%")]
    failover_max_unavailable: String,
    /// With replicas: the rollout the leader is killed in starts with a canary wave of this
    /// many clusters that must stay healthy for 5 s, and the leader is killed as soon as they
    /// all are: the rollout then waits on the leader alone (the soak ends while none leads),
    /// so that the time to its next step is the failover's. 0: no canary; the leader is
    /// killed as the first spokes get the commit, and the rollout's next step waits for a
    /// Target of the batch under way to turn healthy as well.
    #[arg(long, default_value_t = 10)]
    failover_canary: usize,
    /// Apps on every cluster: `small`, which every phase moves, and M-1 more that the first
    /// deployment rolls out beside it and that stay put after (a mix of sizes, one to three
    /// ConfigMaps, and of rollout strategies: all at once, a quarter at a time, a canary wave
    /// of two named clusters then the rest), so that the phases run on a fleet carrying many.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    apps: u32,
}

/// One of the Apps beside `small` (see `--apps`): its name, how many ConfigMaps it renders,
/// and its rollout.
struct ExtraApp {
    name: String,
    objects: usize,
    rollout: &'static str,
}

/// The Apps beside `small`: `count` of them, their sizes and strategies in turn.
fn extra_apps(count: u32) -> Vec<ExtraApp> {
    (1..count)
        .map(|i| {
            let i = i as usize;
            ExtraApp {
                name: format!("extra-{i:03}"),
                objects: 1 + i % 3,
                rollout: match i % 3 {
                    0 => "",
                    1 => "  rollout: { maxUnavailable: \"25%\" }\n",
                    _ => {
                        "  rollout:\n    waves:\n      - { name: canary, clusters: [sim-00000, sim-00001] }\n"
                    }
                },
            }
        })
        .collect()
}

const SECRET: &str = "fleetsim-webhook-secret";

/// The spokes' allocator, as the `gitfleet-spoke` binary has it: the simulated spokes allocate
/// as real ones do (kubesim shares it). On glibc's malloc, 10,000 spokes taking a desired state
/// at once spent an eighth of their time in malloc, much of it growing its heaps (`sysmalloc`,
/// `mprotect`, page faults): a cost of the simulation, not of a spoke.
#[global_allocator]
static ALLOCATOR: gitfleet_spoke::allocator::Allocator = gitfleet_spoke::allocator::Allocator;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    gitfleet_spoke::allocator::return_freed_memory();
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
    if args.keep_hub_logs {
        let kept = tmp.keep();
        eprintln!(
            "fleetsim: the hubs' logs and data directories are kept in {}",
            kept.display()
        );
    }
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

/// What `sampled` measured of each process: its peak resident memory (KiB) and the CPU it
/// used (seconds), over `took`.
struct Load {
    peaks: Vec<u64>,
    cpu: Vec<f64>,
    took: Duration,
}

impl Load {
    /// The sum of the first `hubs` processes' peaks (each its own peak).
    fn hubs_peak(&self, hubs: usize) -> u64 {
        self.peaks.iter().take(hubs).sum()
    }

    fn percent(&self, cpu: f64) -> f64 {
        100.0 * cpu / self.took.as_secs_f64()
    }

    /// The hubs' memory (the sum and each replica's), then etcd's if measured.
    fn memory_text(&self, hubs: usize) -> String {
        let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
        let mut text = format!("{} MiB", mib(self.hubs_peak(hubs)));
        if hubs > 1 {
            let each: Vec<String> = self.peaks.iter().take(hubs).map(|&p| mib(p)).collect();
            text.push_str(&format!(" ({})", each.join(" + ")));
        }
        if let Some(etcd) = self.peaks.get(hubs) {
            text.push_str(&format!("; etcd {} MiB", mib(*etcd)));
        }
        text
    }

    /// The hubs' CPU (the sum and each replica's), then etcd's if measured.
    fn cpu_text(&self, hubs: usize) -> String {
        let total: f64 = self.cpu.iter().take(hubs).sum();
        let mut text = format!("hub {:.0}% of one core", self.percent(total));
        if hubs > 1 {
            let each: Vec<String> = self
                .cpu
                .iter()
                .take(hubs)
                .map(|&c| format!("{:.0}", self.percent(c)))
                .collect();
            text = format!(
                "{hubs} hubs {:.0}% of one core ({} %)",
                self.percent(total),
                each.join(" + ")
            );
        }
        if let Some(etcd) = self.cpu.get(hubs) {
            text.push_str(&format!(", etcd {:.0}%", self.percent(*etcd)));
        }
        text
    }

    fn text(&self, hubs: usize) -> String {
        format!(
            "{}, {} over {:.1}s",
            self.memory_text(hubs),
            self.cpu_text(hubs),
            self.took.as_secs_f64()
        )
    }
}

/// Samples processes every 100 ms while `f` runs: each one's peak RSS and the CPU it used. A
/// process that ends meanwhile keeps what was last read of it.
async fn sampled<T>(
    pids: &[u32],
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(T, Load)> {
    let mut cpu0 = Vec::with_capacity(pids.len());
    for &pid in pids {
        cpu0.push(usage(pid)?.1);
    }
    let start = Instant::now();
    let last: Arc<std::sync::Mutex<Vec<(u64, f64)>>> = Arc::new(std::sync::Mutex::new(
        cpu0.iter().map(|&c| (0, c)).collect(),
    ));
    let stop = tokio_util::sync::CancellationToken::new();
    let sample = {
        let pids = pids.to_vec();
        let last = Arc::clone(&last);
        move || {
            if let Ok(mut last) = last.lock() {
                for (pid, seen) in pids.iter().zip(last.iter_mut()) {
                    if let Ok((rss, cpu)) = usage(*pid) {
                        *seen = (seen.0.max(rss), cpu);
                    }
                }
            }
        }
    };
    let sampler = {
        let stop = stop.clone();
        let sample = sample.clone();
        tokio::spawn(async move {
            loop {
                sample();
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
    sample();
    let last = last
        .lock()
        .map_err(|_| anyhow::anyhow!("the sampler panicked"))?;
    Ok((
        out?,
        Load {
            peaks: last.iter().map(|&(peak, _)| peak).collect(),
            cpu: last
                .iter()
                .zip(&cpu0)
                .map(|(&(_, cpu1), &cpu0)| cpu1 - cpu0)
                .collect(),
            took,
        },
    ))
}

/// How long the canary wave of the rollout the leader is killed in must stay healthy (see
/// `--failover-canary`): shorter than a failover, so that the rollout waits on the leader.
const CANARY_SOAK: Duration = Duration::from_secs(5);

/// When another replica led, when the hub's view had every cluster held by a live replica and
/// none by the dead one, when ListClusters agreed, and for a rollout when it moved again: each
/// from the kill.
#[derive(Debug, Default)]
struct Failover {
    led: Option<(usize, Duration)>,
    all_live: Option<Duration>,
    gone: Option<Duration>,
    listed: Option<Duration>,
    /// When a Target of the batch under way was first seen healthy at the commit (through the
    /// new leader, so never before it led): the earliest the rollout could move, leader or not.
    slot: Option<Duration>,
    progress: Option<Duration>,
    moved: Option<Duration>,
}

/// The rollout a leader was killed in: its commit, the Targets given it before the kill, and
/// when each spoke came to hold it.
struct RolloutWatch {
    commit: String,
    given: std::collections::BTreeSet<String>,
    /// Targets healthy at the commit when the leader was killed.
    healthy: usize,
    arrivals: Arc<std::sync::Mutex<BTreeMap<String, Instant>>>,
}

/// How long after `killed` each waiter (see `Sim::before_kill`) saw its spoke's new session.
async fn reconnect_times(
    waiters: Vec<tokio::task::JoinHandle<Instant>>,
    killed: Instant,
    timeout: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let deadline = tokio::time::Instant::from_std(killed + timeout);
    let mut times = Vec::with_capacity(waiters.len());
    for waiter in waiters {
        let at = tokio::time::timeout_at(deadline, waiter)
            .await
            .context("a spoke never had a session again")??;
        times.push(at.saturating_duration_since(killed));
    }
    times.sort();
    Ok(times)
}

fn spokes_text(times: &[Duration]) -> String {
    match times.last() {
        Some(max) => format!(
            "{:.1}s / {:.1}s",
            percentile(times, 0.5).as_secs_f64(),
            max.as_secs_f64()
        ),
        None => "none lost".to_owned(),
    }
}

/// The `p` quantile of sorted, non-empty `times`.
fn percentile(times: &[Duration], p: f64) -> Duration {
    let rank = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len());
    times[rank - 1]
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(
        || "not seen".to_owned(),
        |d| format!("{:.1}s", d.as_secs_f64()),
    )
}

/// One hub process: its data directory, its log and its two listeners.
struct Replica {
    dir: PathBuf,
    log: PathBuf,
    grpc_port: u16,
    http_port: u16,
    /// None while it is down (killed, not yet started again).
    process: Option<Proc>,
}

impl Replica {
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.grpc_port)
    }

    fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.0.id())
    }

    fn runs(&self) -> bool {
        self.process.is_some()
    }
}

/// The hubs' store in etcd: where, and the prefix of this run.
struct EtcdStore {
    url: String,
    /// `HOST:PORT` of `url`, for the plain HTTP requests to etcd's JSON gateway.
    addr: String,
    prefix: String,
}

struct Sim {
    /// The spokes' data directories live under here (see `--spoke-data`).
    spoke_dir: PathBuf,
    hub_bin: PathBuf,
    /// One hub, or the replicas sharing `etcd`.
    hubs: Vec<Replica>,
    etcd: Option<EtcdStore>,
    etcd_pid: Option<u32>,
    /// The admin client and the replica it talks to.
    admin: Option<(usize, AdminClient)>,
    /// Which replica each spoke dials first (the others follow, see `hub_order`).
    first_hub: BTreeMap<String, usize>,
    /// The Apps beside `small` (see `--apps`).
    extra_apps: Vec<ExtraApp>,
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
    ended_before: BTreeMap<(usize, String), u64>,
    /// Where the spokes' hub links run (see `--links-share-runtime`).
    links: LinkRuntime,
    /// Where the spokes and kubesim work (see `--spoke-work-nice`).
    work: LinkRuntime,
    /// Where the waiters that time what the spokes see run: nothing else uses it.
    timer: LinkRuntime,
}

/// Blocking threads of the links' runtime (see [`LinkRuntime::new`]).
const LINK_WRITERS: usize = 8;

/// A runtime for the spokes' links, shut down without blocking when dropped (a runtime dropped
/// inside another would panic).
struct LinkRuntime(Option<tokio::runtime::Runtime>);

impl LinkRuntime {
    /// The links' runtime. Its blocking threads (each link writes the desired state it is
    /// given, and its outbox, with `fsync`s on one) are at most [`LINK_WRITERS`]: a fan-out
    /// hands 10,000 links a write each at once, and tokio's default would start 512 threads
    /// for them, which then take the CPU from the hub (each real spoke writes on its own).
    fn new(shared: bool) -> anyhow::Result<Self> {
        Self::build(
            shared,
            "spoke-links",
            2,
            WorkPriority::Normal,
            Some(LINK_WRITERS),
        )
    }

    /// A runtime of `threads` workers whose threads (blocking ones too) run at `priority`.
    fn named(
        shared: bool,
        name: &str,
        threads: usize,
        priority: WorkPriority,
    ) -> anyhow::Result<Self> {
        Self::build(shared, name, threads, priority, None)
    }

    fn build(
        shared: bool,
        name: &str,
        threads: usize,
        priority: WorkPriority,
        blocking: Option<usize>,
    ) -> anyhow::Result<Self> {
        if shared {
            return Ok(Self(None));
        }
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if let Some(blocking) = blocking {
            builder.max_blocking_threads(blocking);
        }
        let runtime = builder
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
        for app in extra_apps(args.apps) {
            for k in 0..app.objects {
                git.write(
                    &format!("apps/{}/configmap-{k}.yaml", app.name),
                    format!(
                        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {}-{k}\ndata:\n  version: \"1\"\n",
                        app.name
                    ),
                )?;
            }
        }
        git.commit("small v1")?;
        // Like GitHub or GitLab, serve a commit asked for by id: a spoke's fetch is then one
        // connection, not a refused one and a fetch of every branch.
        git2::Repository::open(git.dir())?
            .config()?
            .set_bool("uploadpack.allowReachableSHA1InWant", true)?;
        let daemon_port = free_port()?;
        // `git daemon` runs `git-daemon` as a child of its own, which would outlive the kill of
        // `git` when the run ends: the server itself is started, so that the kill ends it.
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .context("running git --exec-path")?;
        let git_daemon =
            Path::new(String::from_utf8_lossy(&exec_path.stdout).trim()).join("git-daemon");
        let daemon = Proc(
            WorkPriority::of(args)
                .command(&git_daemon.display().to_string())
                .args([
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

        let etcd = args
            .etcd_endpoint
            .as_deref()
            .map(|url| -> anyhow::Result<EtcdStore> {
                let addr = url
                    .strip_prefix("http://")
                    .map(|a| a.trim_end_matches('/').to_owned())
                    .filter(|a| !a.is_empty() && !a.contains('/'))
                    .with_context(|| {
                        format!("--etcd-endpoint {url}: must be a plain http://HOST:PORT URL")
                    })?;
                Ok(EtcdStore {
                    url: url.trim_end_matches('/').to_owned(),
                    addr,
                    prefix: format!("/fleetsim-{}/", hex::encode(rand::random::<[u8; 4]>())),
                })
            })
            .transpose()?;
        ensure!(
            args.replicas == 1 || etcd.is_some(),
            "--replicas {} needs --etcd-endpoint: replicas share their store in etcd",
            args.replicas
        );
        let mut hubs = Vec::new();
        for i in 0..args.replicas {
            // One hub on sled keeps the layout of every earlier run.
            let (data, log) = if etcd.is_none() {
                (dir.join("hub"), dir.join("hub.log"))
            } else {
                (
                    dir.join(format!("hub-{i}")),
                    dir.join(format!("hub-{i}.log")),
                )
            };
            hubs.push(Replica {
                dir: data,
                log,
                grpc_port: free_port()?,
                http_port: free_port()?,
                process: None,
            });
        }
        let mut sim = Sim {
            spoke_dir: spoke_dir.to_owned(),
            hub_bin,
            hubs,
            etcd,
            etcd_pid: args.etcd_pid,
            admin: None,
            first_hub: BTreeMap::new(),
            kubesim,
            git,
            _daemon: daemon,
            repo_url,
            spokes: Vec::new(),
            names,
            rows: Vec::new(),
            lag: lag_probe(&work_handle),
            work,
            extra_apps: extra_apps(args.apps),
            link_lag: None,
            ended_before: BTreeMap::new(),
            links: LinkRuntime::new(args.links_share_runtime)?,
            timer: LinkRuntime::named(false, "fleetsim-timer", 1, WorkPriority::Normal)?,
        };
        sim.link_lag = sim.links.handle().map(|h| lag_probe(&h));
        if sim.etcd.is_some() {
            sim.init_shared_pki()?;
        }
        // The first replica leads: started alone, it is elected before the others stand.
        sim.start_hub(0, args.timeout).await?;
        if sim.hubs.len() > 1 {
            sim.until_leader(&[0], Instant::now() + args.timeout)
                .await?;
            for i in 1..sim.hubs.len() {
                sim.start_hub(i, args.timeout).await?;
            }
            // A follower answers admin calls once it knows who leads.
            let deadline = Instant::now() + args.timeout;
            loop {
                match sim.admin().await?.list_clusters().await {
                    Ok(_) => break,
                    Err(e) => ensure!(
                        Instant::now() < deadline,
                        "the admin calls' replica never answered: {e}"
                    ),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(sim)
    }

    /// `gitfleet-hub init` once, then that `pki/` into every replica's data directory: what a
    /// Secret mounted on each replica does in Kubernetes.
    fn init_shared_pki(&self) -> anyhow::Result<()> {
        let first = &self.hubs[0];
        let done = Command::new(&self.hub_bin)
            .args(["init", "--data-dir", &first.dir.display().to_string()])
            .args(["--advertise-url", &first.url()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("running {} init", self.hub_bin.display()))?;
        ensure!(
            done.status.success(),
            "{} init failed: {}",
            self.hub_bin.display(),
            String::from_utf8_lossy(&done.stderr).trim()
        );
        let pki = first.dir.join("pki");
        for replica in &self.hubs[1..] {
            let to = replica.dir.join("pki");
            std::fs::create_dir_all(&to)?;
            for entry in std::fs::read_dir(&pki)? {
                let entry = entry?;
                std::fs::copy(entry.path(), to.join(entry.file_name()))
                    .with_context(|| format!("copying {}", entry.path().display()))?;
            }
        }
        Ok(())
    }

    /// Starts replica `i` (again, after a kill: the same data directory and ports) and waits
    /// until its Admin API answers.
    async fn start_hub(&mut self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let replica = &self.hubs[i];
        let data = replica.dir.clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&replica.log)?;
        let mut command = Command::new(&self.hub_bin);
        command.args([
            "serve",
            "--data-dir",
            &data.display().to_string(),
            "--grpc-listen",
            &format!("127.0.0.1:{}", replica.grpc_port),
            "--http-listen",
            &format!("127.0.0.1:{}", replica.http_port),
            "--webhook-secret",
            SECRET,
            "--default-poll-interval",
            "1h",
            // Every simulated spoke registers from 127.0.0.1 at once.
            "--register-rate-limit",
            "0",
        ]);
        if let Some(etcd) = &self.etcd {
            command.args([
                "--store",
                "etcd",
                "--etcd-endpoints",
                &etcd.url,
                "--etcd-prefix",
                &etcd.prefix,
            ]);
        }
        let child = command
            .env("GITFLEET_LOG", "warn")
            // Every start appends, so a restarted hub does not hide why the last one ended.
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.hub_bin.display()))?;
        self.hubs[i].process = Some(Proc(child));
        let config_path = data.join("admin.gitfleetconfig");
        let deadline = Instant::now() + timeout;
        loop {
            self.check_hub()?;
            // The credential names this replica's own address, whichever start wrote it.
            if let Ok(config) = ClientConfig::load(&config_path)
                && let Ok(context) = config.context(None)
                && AdminClient::connect(context).await.is_ok()
            {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "hub replica {i} did not come up; see {}",
                self.hubs[i].log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills replica `i` with SIGKILL (no goodbye, no lease given up).
    fn kill_hub(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut hub) = self.hubs[i].process.take() {
            hub.0.kill()?;
            hub.0.wait()?;
        }
        if self.admin.as_ref().is_some_and(|(at, _)| *at == i) {
            self.admin = None;
        }
        Ok(())
    }

    /// Every Target of the App, retrying (until `deadline`) a call the busy hub failed: a
    /// benchmark measures the fleet, not one listing's luck.
    async fn status_or_retry(
        &mut self,
        deadline: Instant,
    ) -> anyhow::Result<Vec<pb::TargetStatus>> {
        loop {
            match self.admin().await?.status("small", "").await {
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
        self.rollout_progress_of("small", commit, deadline).await
    }

    /// [`Sim::rollout_progress`] of any App.
    async fn rollout_progress_of(
        &mut self,
        app: &str,
        commit: &str,
        deadline: Instant,
    ) -> anyhow::Result<(usize, usize)> {
        loop {
            match self.admin().await?.rollout_counts(app).await {
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

    /// Fails, saying how, when a hub process that should run has ended.
    fn check_hub(&mut self) -> anyhow::Result<()> {
        for (i, hub) in self.hubs.iter_mut().enumerate() {
            if let Some(process) = hub.process.as_mut()
                && let Some(status) = process.0.try_wait()?
            {
                anyhow::bail!(
                    "hub replica {i} ended ({status}); see {}",
                    hub.log.display()
                );
            }
        }
        Ok(())
    }

    /// The running hub processes.
    fn hub_pids(&self) -> Vec<u32> {
        self.hubs.iter().filter_map(Replica::pid).collect()
    }

    /// The admin client, connected to the last running replica (a follower while the first
    /// one leads: admin calls then take the forwarding path that two calls in three take
    /// behind a Service).
    async fn admin(&mut self) -> anyhow::Result<&mut AdminClient> {
        if self.admin.is_none() {
            let i = (0..self.hubs.len())
                .rev()
                .find(|&i| self.hubs[i].runs())
                .context("no hub replica runs")?;
            let config = ClientConfig::load(&self.hubs[i].dir.join("admin.gitfleetconfig"))?;
            let client = AdminClient::connect(config.context(None)?).await?;
            self.admin = Some((i, client));
        }
        Ok(&mut self.admin.as_mut().context("the admin client")?.1)
    }

    /// Where webhooks go: the last running replica, a follower while the first one leads (a
    /// webhook at a follower reaches the leader through etcd, one step more).
    fn webhook_port(&self) -> anyhow::Result<u16> {
        self.hubs
            .iter()
            .rev()
            .find(|h| h.runs())
            .map(|h| h.http_port)
            .context("no hub replica runs")
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
        let mut by_reason: BTreeMap<&str, u64> = BTreeMap::new();
        for ((replica, reason), n) in &ended {
            // The counters restart with the hub.
            let before = self
                .ended_before
                .get(&(*replica, reason.clone()))
                .copied()
                .unwrap_or(0);
            *by_reason.entry(reason).or_default() += if *n >= before { n - before } else { *n };
        }
        let delta: Vec<String> = by_reason
            .iter()
            .filter(|&(_, d)| *d > 0)
            .map(|(reason, d)| format!("{reason} {d}"))
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

    /// Each running replica's `gitfleet_link_sessions_ended_total`, by replica and reason.
    async fn sessions_ended(&self) -> anyhow::Result<BTreeMap<(usize, String), u64>> {
        let mut ended = BTreeMap::new();
        for (i, hub) in self.hubs.iter().enumerate().filter(|(_, h)| h.runs()) {
            let response = metrics(hub.http_port).await?;
            ended.extend(
                response
                    .lines()
                    .filter_map(|l| l.strip_prefix("gitfleet_link_sessions_ended_total{reason=\""))
                    .filter_map(|rest| rest.split_once("\"} "))
                    .filter_map(|(reason, n)| {
                        Some(((i, reason.to_owned()), n.trim().parse().ok()?))
                    })
                    // Every reason is exposed from the start, at 0.
                    .filter(|(_, n)| *n > 0),
            );
        }
        Ok(ended)
    }

    async fn connected(&mut self) -> anyhow::Result<usize> {
        Ok(self
            .admin()
            .await?
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
            .admin()
            .await?
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
        let ca = std::fs::read_to_string(self.hubs[0].dir.join("pki").join("ca.crt"))
            .context("no hub CA")?;
        let urls: Vec<String> = self.hubs.iter().map(Replica::url).collect();
        let work = self.work.handle().context("the spokes' runtime")?;
        for (c, chunk) in self
            .names
            .clone()
            .chunks(args.start_batch.max(1))
            .enumerate()
        {
            let mut started = tokio::task::JoinSet::new();
            for (k, name) in chunk.iter().enumerate() {
                let order = hub_order(c * args.start_batch.max(1) + k, urls.len());
                self.first_hub.insert(name.clone(), order[0]);
                let mut config = SpokeConfig::new(
                    urls[order[0]].clone(),
                    self.spoke_dir.join(name),
                    name.clone(),
                    if args.kube_in_memory {
                        KubeSource::Client(self.kubesim.in_memory_client(name)?)
                    } else {
                        KubeSource::Config(Box::new(self.kubesim.kube_config(name)))
                    },
                );
                config.hub_urls = order.iter().map(|&r| urls[r].clone()).collect();
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
        let response = http(&format!("127.0.0.1:{}", self.webhook_port()?), &request).await?;
        let status_line = response.lines().next().unwrap_or_default().to_owned();
        ensure!(
            status_line.contains(" 200")
                || status_line.contains(" 202")
                || status_line.contains(" 204"),
            "webhook refused: {status_line}"
        );
        Ok(())
    }

    /// The hubs' dispatch-latency histogram, summed over the running replicas: cumulative
    /// counts by upper bound (seconds). A follower times its dispatches from the leader's fetch
    /// too (the change carries when it started).
    async fn dispatch_buckets(&self) -> anyhow::Result<Vec<(f64, u64)>> {
        let mut buckets: Vec<(f64, u64)> = Vec::new();
        for hub in self.hubs.iter().filter(|h| h.runs()) {
            let mine = dispatch_buckets_of(&metrics(hub.http_port).await?)?;
            if buckets.is_empty() {
                buckets = mine;
            } else {
                ensure!(
                    buckets.len() == mine.len(),
                    "the replicas' histograms differ"
                );
                for (sum, (_, count)) in buckets.iter_mut().zip(mine) {
                    sum.1 += count;
                }
            }
        }
        Ok(buckets)
    }

    /// Whether each replica leads, from its `gitfleet_hub_leader` (None: down or not answering).
    async fn leaders(&self) -> Vec<Option<bool>> {
        let mut leads = Vec::with_capacity(self.hubs.len());
        for hub in &self.hubs {
            let answer = if hub.runs() {
                metrics(hub.http_port).await.ok().and_then(|text| {
                    text.lines()
                        .find_map(|l| l.strip_prefix("gitfleet_hub_leader "))
                        .map(|v| v.trim() == "1")
                })
            } else {
                None
            };
            leads.push(answer);
        }
        leads
    }

    /// Waits until one of `candidates` says it leads; returns which.
    async fn until_leader(&self, candidates: &[usize], deadline: Instant) -> anyhow::Result<usize> {
        loop {
            let leads = self.leaders().await;
            if let Some(&i) = candidates.iter().find(|&&i| leads[i] == Some(true)) {
                return Ok(i);
            }
            ensure!(
                Instant::now() < deadline,
                "no hub replica of {candidates:?} leads (gitfleet_hub_leader: {leads:?})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Which clusters' links each replica holds, as the replicas record it in etcd (a replica's
    /// records go with its lease): cluster name → replica ids.
    async fn presence(&self) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
        let etcd = self.etcd.as_ref().context("no etcd")?;
        let from = format!("{}presence/", etcd.prefix);
        let to = format!("{}presence0", etcd.prefix);
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = serde_json::json!({
            "key": b64.encode(&from),
            "range_end": b64.encode(&to),
            "keys_only": true,
        });
        let answer = etcd_gateway(&etcd.addr, "/v3/kv/range", &body).await?;
        let mut held: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for kv in answer["kvs"].as_array().into_iter().flatten() {
            let key = b64.decode(kv["key"].as_str().context("a key without its name")?)?;
            let key = String::from_utf8(key)?;
            if let Some((cluster, replica)) = key
                .strip_prefix(&from)
                .and_then(|rest| rest.split_once('\u{0}'))
            {
                held.entry(cluster.to_owned())
                    .or_default()
                    .push(replica.to_owned());
            }
        }
        Ok(held)
    }

    /// The id replica `i` records its links under: the one most of the spokes that dial it
    /// first are held by.
    fn replica_id(&self, held: &BTreeMap<String, Vec<String>>, i: usize) -> Option<String> {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for (cluster, ids) in held {
            if self.first_hub.get(cluster) == Some(&i) {
                for id in ids {
                    *votes.entry(id).or_default() += 1;
                }
            }
        }
        votes
            .into_iter()
            .max_by_key(|&(_, n)| n)
            .map(|(id, _)| id.to_owned())
    }

    /// Deletes this run's prefix from etcd.
    async fn forget_etcd_prefix(&self) -> anyhow::Result<()> {
        let etcd = self.etcd.as_ref().context("no etcd")?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut end = etcd.prefix.clone().into_bytes();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let body = serde_json::json!({
            "key": b64.encode(&etcd.prefix),
            "range_end": b64.encode(&end),
        });
        etcd_gateway(&etcd.addr, "/v3/kv/deleterange", &body).await?;
        Ok(())
    }
}

/// The order in which spoke number `i` is given `replicas` addresses: first its own third (with
/// three replicas), then the others in an order that alternates from spoke to spoke, so that
/// the links of a replica that dies spread evenly over the ones left.
fn hub_order(i: usize, replicas: usize) -> Vec<usize> {
    let first = i % replicas;
    let others: Vec<usize> = (0..replicas).filter(|&r| r != first).collect();
    let mut order = vec![first];
    if !others.is_empty() {
        let turn = (i / replicas) % others.len();
        order.extend(others[turn..].iter().chain(&others[..turn]));
    }
    order
}

/// One plain HTTP request to `addr` (`HOST:PORT`), read until the server closes: no client
/// library needed for a benchmark.
async fn http(addr: &str, request: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// A hub's `/metrics` text.
async fn metrics(http_port: u16) -> anyhow::Result<String> {
    let request = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    http(&format!("127.0.0.1:{http_port}"), request).await
}

/// A call to etcd's JSON gateway (HTTP/1.0: the answer comes whole, not chunked).
async fn etcd_gateway(
    addr: &str,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = http(addr, &request).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("etcd at {addr}: no HTTP answer to {path}"))?;
    ensure!(
        head.lines().next().is_some_and(|l| l.contains(" 200")),
        "etcd at {addr}: {path}: {}",
        head.lines().next().unwrap_or_default()
    );
    serde_json::from_str(body).with_context(|| format!("etcd at {addr}: {path}: {body}"))
}

/// The cumulative buckets of `gitfleet_dispatch_latency_seconds` in one `/metrics` text.
fn dispatch_buckets_of(response: &str) -> anyhow::Result<Vec<(f64, u64)>> {
    let mut buckets = Vec::new();
    for line in response.lines() {
        let Some(rest) = line.strip_prefix("gitfleet_dispatch_latency_seconds_bucket{le=\"") else {
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

impl Sim {
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
        let store = match &self.etcd {
            Some(etcd) => format!(
                "{} replica(s) on etcd {} prefix {}",
                self.hubs.len(),
                etcd.url,
                etcd.prefix
            ),
            None => "one hub on sled".to_owned(),
        };
        let apps = self.apps_text();
        println!(
            "fleetsim: {n} clusters{apps}, {store}, hub {} (pids {:?}), kubesim and spokes in pid {}",
            self.hub_bin.display(),
            self.hub_pids(),
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
        let documents = self.resources(None, 0)?;
        let v1 = self.git.head()?;
        let start = Instant::now();
        self.admin().await?.apply(documents, false).await?;
        self.wait_synced(&v1, args.timeout).await?;
        self.wait_extras_synced(&v1, args.timeout).await?;
        self.row(
            "first deployment: apply -> all synced+healthy",
            format!("{:.1}s", start.elapsed().as_secs_f64()),
        );
        self.phase_health().await;

        let last = if args.ingest_only {
            v1
        } else {
            self.idle_and_fanout(args).await?;
            if args.fanout_only {
                self.print_table();
                return Ok(());
            }
            if self.hubs.len() > 1 {
                self.replica_faults(args).await?
            } else {
                self.reconnect_storm(args).await?
            }
        };

        // 6. Status ingest: the spokes stop; their identities stream reports as fast as acks
        // come back.
        let pids = self.measured_pids();
        let (rss, _) = usage(std::process::id())?;
        let spokes_rss = rss;
        let sessions = self.names.len();
        for s in std::mem::take(&mut self.spokes) {
            s.shutdown().await;
        }
        let ((acked, took), load) =
            sampled(&pids, self.ingest(sessions, args.ingest, &last)).await?;
        let hubs = self.hub_pids().len();
        self.row(
            "status ingest: durable acked reports/s",
            format!(
                "{:.0}/s ({acked} over {:.1}s from {sessions} links, {})",
                acked as f64 / took.as_secs_f64(),
                took.as_secs_f64(),
                load.cpu_text(hubs)
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
        self.print_table();
        Ok(())
    }

    /// The rows measured so far, as the Markdown table of `docs/benchmarks.md`.
    fn print_table(&self) {
        let apps = self.apps_text();
        let n = self.names.len();
        println!("\n| measure | {n} clusters{apps} |\n| --- | --- |");
        for (what, value) in &self.rows {
            println!("| {} | {value} |", what.trim_start_matches("  ... ").trim());
        }
    }

    /// The Repo and the App `small` on every cluster, and the `--apps` beside it;
    /// `max_unavailable` gives `small` a rollout strategy (one wave, that many Targets at a
    /// time).
    fn resources(
        &self,
        max_unavailable: Option<&str>,
        canary: usize,
    ) -> anyhow::Result<Vec<pb::ResourceDocument>> {
        let waves = match canary {
            0 => String::new(),
            n => format!(
                ", waves: [ {{ name: canary, clusters: [{}], minHealthyFor: {}s }} ]",
                self.names[..n.min(self.names.len())].join(", "),
                CANARY_SOAK.as_secs()
            ),
        };
        let rollout = max_unavailable
            .map(|m| format!("  rollout: {{ maxUnavailable: \"{m}\"{waves} }}\n"))
            .unwrap_or_default();
        let mut resources = format!(
            "apiVersion: gitfleet.dev/v1\nkind: Repo\nmetadata: {{ name: sim }}\nspec:\n  url: {}\n  ref: {{ branch: main }}\n  pollInterval: 1h\n---\napiVersion: gitfleet.dev/v1\nkind: App\nmetadata: {{ name: small }}\nspec:\n  repo: sim\n  path: apps/small\n  namespace: default\n  targets:\n    - clusterSelector: {{ matchLabels: {{ fleet: sim }} }}\n{rollout}",
            self.repo_url
        );
        for app in &self.extra_apps {
            resources.push_str(&format!(
                "---\napiVersion: gitfleet.dev/v1\nkind: App\nmetadata: {{ name: {} }}\nspec:\n  repo: sim\n  path: apps/{}\n  namespace: default\n  targets:\n    - clusterSelector: {{ matchLabels: {{ fleet: sim }} }}\n{}",
                app.name, app.name, app.rollout
            ));
        }
        gitfleet_e2e::harness::resource_documents("fleetsim", &resources)
    }

    /// " × M Apps" with `--apps M` beyond one, else nothing.
    fn apps_text(&self) -> String {
        match self.extra_apps.len() {
            0 => String::new(),
            more => format!(" × {} Apps", more + 1),
        }
    }

    /// Waits until every Target of the Apps beside `small` is healthy at `commit` (from their
    /// rollouts' counts).
    async fn wait_extras_synced(&mut self, commit: &str, timeout: Duration) -> anyhow::Result<()> {
        let n = self.names.len();
        let deadline = Instant::now() + timeout;
        let names: Vec<String> = self.extra_apps.iter().map(|a| a.name.clone()).collect();
        for app in names {
            loop {
                let (_, healthy) = self.rollout_progress_of(&app, commit, deadline).await?;
                if healthy == n {
                    break;
                }
                ensure!(
                    Instant::now() < deadline,
                    "App {app}: only {healthy} of {n} Targets healthy at {commit}"
                );
                tokio::time::sleep(self.rollout_poll_interval().max(Duration::from_millis(200)))
                    .await;
            }
        }
        Ok(())
    }

    /// The processes whose memory and CPU are measured: the running hubs, then etcd's if known.
    fn measured_pids(&self) -> Vec<u32> {
        let mut pids = self.hub_pids();
        pids.extend(self.etcd_pid);
        pids
    }

    /// Phases 3 and 4: idle, then fan-out and the rollout of a commit.
    async fn idle_and_fanout(&mut self, args: &Args) -> anyhow::Result<()> {
        let n = self.names.len();
        // 3. Idle.
        let pids = self.measured_pids();
        let hubs = self.hub_pids().len();
        let idle = args.idle;
        let ((), load) = sampled(&pids, async {
            tokio::time::sleep(idle).await;
            Ok(())
        })
        .await?;
        let peak = load.hubs_peak(hubs);
        self.row(
            "hub idle: resident memory",
            format!(
                "{} ({:.1} KiB per connected spoke)",
                load.memory_text(hubs),
                peak as f64 / n as f64
            ),
        );
        self.row("hub idle: CPU", load.cpu_text(hubs));
        self.phase_health().await;

        // 4. Fan-out and rollout.
        let v2 = self.commit(2)?;
        let waiters = self.holding_waiters(&v2)?;
        let timeout = args.timeout;
        let dispatched_before = self.dispatch_buckets().await?;
        let (fanout, load) = sampled(&pids, async {
            let sent = Instant::now();
            // To line the hub's log up with this run's times (`--keep-hub-logs`).
            eprintln!(
                "fleetsim: fan-out webhook sent at {}",
                humantime::format_rfc3339_micros(std::time::SystemTime::now())
            );
            self.push_webhook().await?;
            // Nothing reads the hub meanwhile: the rollout view decides over every cluster,
            // and the hub's part is its own dispatch histogram, read before and after.
            let mut latencies = Vec::with_capacity(n);
            for (_, mut w) in waiters {
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
            if !args.fanout_only {
                self.wait_synced(&v2, timeout).await?;
            }
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
        self.row(
            "fan-out: webhook -> spoke holds new revision (p50/p99/max)",
            format!(
                "{} / {} / {}",
                ms(percentile(&latencies, 0.50)),
                ms(percentile(&latencies, 0.99)),
                ms(*latencies.last().context("no spokes")?)
            ),
        );
        if args.fanout_only {
            self.row("hub during the fan-out: peak memory, CPU", load.text(hubs));
        } else {
            self.row(
                "commit (webhook) -> all synced+healthy",
                format!("{:.2}s", to_healthy.as_secs_f64()),
            );
            self.row("hub during the rollout: peak memory, CPU", load.text(hubs));
        }
        self.phase_health().await;
        Ok(())
    }

    /// For every spoke, a task on the timer runtime that notes when the spoke holds `commit`
    /// for the App. Timed on a runtime of their own: on the spokes' busy one a waiter would
    /// note the time only when its turn came, seconds late.
    fn holding_waiters(
        &self,
        commit: &str,
    ) -> anyhow::Result<Vec<(String, tokio::task::JoinHandle<Instant>)>> {
        let timer = self.timer.handle().context("the timer runtime")?;
        Ok(self
            .spokes
            .iter()
            .map(|spoke| {
                let mut rx = spoke.desired();
                let commit = commit.to_owned();
                let waiter = timer.spawn(async move {
                    let holds = |d: &gitfleet_spoke::desired::DesiredState| {
                        d.targets
                            .get("small")
                            .is_some_and(|t| t.source.commit == commit)
                    };
                    let _ = rx.wait_for(holds).await;
                    Instant::now()
                });
                (spoke.cluster_name().to_owned(), waiter)
            })
            .collect())
    }

    /// Phase 5 with one hub: a reconnect storm (kill -9, a commit while it is down, restart).
    /// Returns the revision the fleet is at.
    async fn reconnect_storm(&mut self, args: &Args) -> anyhow::Result<String> {
        let v3 = self.commit(3)?;
        self.kill_hub(0)?;
        let start = Instant::now();
        self.start_hub(0, args.timeout).await?;
        let pids = self.measured_pids();
        let timeout = args.timeout;
        let ((), load) = sampled(&pids, async {
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
            load.text(self.hub_pids().len()),
        );
        self.phase_health().await;
        Ok(v3)
    }

    /// Phase 5 with replicas: (b) a follower holding a third of the links is killed, then (a)
    /// the leader is killed mid-rollout; each is started again afterwards. (b) goes first, while
    /// each replica still holds the links of the spokes that dial it first. Returns the
    /// revision the fleet is at.
    async fn replica_faults(&mut self, args: &Args) -> anyhow::Result<String> {
        let all: Vec<usize> = (0..self.hubs.len()).collect();
        let n = self.names.len();

        // (b) A follower dies.
        let leader = self
            .until_leader(&all, Instant::now() + args.timeout)
            .await?;
        let admin_at = self.admin.as_ref().map(|(i, _)| *i);
        let victim = all
            .iter()
            .copied()
            .find(|&i| i != leader && Some(i) != admin_at)
            .or_else(|| all.iter().copied().find(|&i| i != leader))
            .context("no follower to kill")?;
        let (dead, reconnects) = self.before_kill(victim).await?;
        let lost = reconnects.len();
        let pids: Vec<u32> = self.survivors_pids(victim);
        let hubs = pids.len() - usize::from(self.etcd_pid.is_some());
        let killed = Instant::now();
        self.kill_hub(victim)?;
        let timeout = args.timeout;
        let (seen, load) =
            sampled(&pids, self.watch_failover(&dead, killed, None, timeout)).await?;
        let spokes = reconnect_times(reconnects, killed, timeout).await?;
        self.row(
            &format!(
                "replica loss: kill -9 a follower holding {lost} of {n} links -> every spoke connected at a live replica (hub's view, presence in etcd)"
            ),
            secs(seen.all_live),
        );
        self.row(
            "  ... the spokes' view: each of those has a session again (p50 / max)",
            spokes_text(&spokes),
        );
        self.row(
            "  ... the dead replica's links gone from the hub's view (its lease ran out)",
            secs(seen.gone),
        );
        self.row(
            "  ... ListClusters through a live replica: all connected, with those gone",
            secs(seen.listed),
        );
        self.row("  hubs left during it: peak memory, CPU", load.text(hubs));
        self.phase_health().await;
        let restart = Instant::now();
        self.start_hub(victim, args.timeout).await?;
        println!(
            "  ... replica {victim} started again in {:.1}s",
            restart.elapsed().as_secs_f64()
        );

        // (a) The leader dies mid-rollout: the App goes a batch at a time, a commit is pushed,
        // and the leader is killed as the first spokes get it.
        let leader = self
            .until_leader(&all, Instant::now() + args.timeout)
            .await?;
        let canary = args.failover_canary.min(n);
        let documents = self.resources(Some(&args.failover_max_unavailable), canary)?;
        self.admin().await?.apply(documents, false).await?;
        let v3 = self.commit(3)?;
        let (dead, reconnects) = self.before_kill(leader).await?;
        let lost = reconnects.len();
        let waiters = self.holding_waiters(&v3)?;
        let arrivals = Arc::new(std::sync::Mutex::new(BTreeMap::<String, Instant>::new()));
        let first_held = Arc::new(tokio::sync::Notify::new());
        let timer = self.timer.handle().context("the timer runtime")?;
        for (name, waiter) in waiters {
            let arrivals = Arc::clone(&arrivals);
            let first_held = Arc::clone(&first_held);
            timer.spawn(async move {
                if let Ok(at) = waiter.await {
                    if let Ok(mut arrivals) = arrivals.lock() {
                        arrivals.insert(name, at);
                    }
                    first_held.notify_one();
                }
            });
        }
        let pushed = Instant::now();
        self.push_webhook().await?;
        if canary == 0 {
            tokio::time::timeout(args.timeout, first_held.notified())
                .await
                .context("no spoke got the commit the leader was to be killed in")?;
        } else {
            self.until_canary_healthy(&v3, canary, pushed + args.timeout)
                .await?;
        }
        // The Targets the leader has given the commit: the batch under way.
        let before = self.admin().await?.rollout("small").await?;
        ensure!(
            before.revision == v3,
            "the rollout is at {}, not at the commit just pushed",
            before.revision
        );
        let given: std::collections::BTreeSet<String> = before
            .waves
            .iter()
            .flat_map(|w| &w.targets)
            .filter(|t| t.state != "pending")
            .map(|t| t.cluster.clone())
            .collect();
        let held_at_kill = arrivals.lock().map_or(0, |a| a.len());
        let counts = self.admin().await?.rollout_counts("small").await?;
        let healthy_at_kill: usize = counts.waves.iter().map(|w| w.healthy as usize).sum();
        let updated_at_kill: usize = counts.waves.iter().map(|w| w.updated as usize).sum();
        ensure!(
            canary == 0 || updated_at_kill == canary,
            "the canary's soak ended before the kill ({updated_at_kill} Targets given): the kill must land in it"
        );
        let pids = self.survivors_pids(leader);
        let killed = Instant::now();
        self.kill_hub(leader)?;
        let rollout = RolloutWatch {
            commit: v3.clone(),
            given: given.clone(),
            healthy: healthy_at_kill,
            arrivals: Arc::clone(&arrivals),
        };
        let (seen, load) = sampled(
            &pids,
            self.watch_failover(&dead, killed, Some(&rollout), timeout),
        )
        .await?;
        let spokes = reconnect_times(reconnects, killed, timeout).await?;
        self.wait_synced(&v3, timeout).await?;
        let done = killed.elapsed();
        let (new_leader, led) = seen.led.context("no replica took the lead")?;
        let when = match canary {
            0 => "mid-rollout".to_owned(),
            n => format!(
                "as its {n}-cluster canary wave turned healthy, {}s soak",
                CANARY_SOAK.as_secs()
            ),
        };
        self.row(
            &format!(
                "leader loss: kill -9 the leader {when} ({} of {n} Targets given the commit, {} held by the spokes, {:.1}s after the webhook) -> another replica leads (gitfleet_hub_leader)",
                given.len(),
                held_at_kill,
                (killed - pushed).as_secs_f64()
            ),
            format!("{} (replica {new_leader})", secs(Some(led))),
        );
        self.row(
            &format!(
                "  ... a Target of the batch under way healthy at the commit ({healthy_at_kill} were at the kill; hub's view, through the new leader)"
            ),
            secs(seen.slot),
        );
        self.row(
            "  ... the rollout moves again: the new leader gives the commit to more Targets (hub's view)",
            secs(seen.progress),
        );
        self.row(
            "  ... the first spoke outside the batch under way holds the commit",
            secs(seen.moved),
        );
        self.row(
            "  ... the rollout complete: all synced+healthy",
            format!("{:.1}s", done.as_secs_f64()),
        );
        self.row(
            &format!(
                "  ... the leader's {lost} links: every spoke connected at a live replica (hub's view)"
            ),
            secs(seen.all_live),
        );
        self.row(
            "  ... the spokes' view: each of those has a session again (p50 / max)",
            spokes_text(&spokes),
        );
        self.row(
            "  hubs left during the failover: peak memory, CPU",
            load.text(hubs),
        );
        self.phase_health().await;
        let restart = Instant::now();
        self.start_hub(leader, args.timeout).await?;
        println!(
            "  ... replica {leader} started again in {:.1}s",
            restart.elapsed().as_secs_f64()
        );
        Ok(v3)
    }

    /// Waits until the first `canary` Targets of `small` (its canary wave) are healthy at
    /// `commit`, polling often: the leader is to be killed within the wave's soak.
    async fn until_canary_healthy(
        &mut self,
        commit: &str,
        canary: usize,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        loop {
            match self.admin().await?.rollout_counts("small").await {
                Ok(r)
                    if r.revision == commit
                        && r.waves
                            .first()
                            .is_some_and(|w| w.healthy as usize >= canary) =>
                {
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => eprintln!("fleetsim: reading the rollout failed ({e}); retrying"),
            }
            ensure!(
                Instant::now() < deadline,
                "the canary wave of {canary} clusters never turned healthy at {commit}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What to know before replica `victim` is killed: the id its links are recorded under in
    /// etcd, and for each of those spokes a task that notes when it has a session again.
    async fn before_kill(
        &self,
        victim: usize,
    ) -> anyhow::Result<(String, Vec<tokio::task::JoinHandle<Instant>>)> {
        let timer = self.timer.handle().context("the timer runtime")?;
        let held = self.presence().await?;
        let dead = self
            .replica_id(&held, victim)
            .with_context(|| format!("replica {victim} holds no links"))?;
        let at_victim: std::collections::BTreeSet<&String> = held
            .iter()
            .filter(|(_, ids)| ids.contains(&dead))
            .map(|(cluster, _)| cluster)
            .collect();
        let waiters = self
            .spokes
            .iter()
            .filter(|s| at_victim.contains(&s.cluster_name().to_owned()))
            .map(|spoke| {
                let mut rx = spoke.connected();
                // Only what happens from now on counts: a session ended (false), then a new
                // one (true), possibly seen as one change.
                rx.borrow_and_update();
                timer.spawn(async move {
                    loop {
                        if rx.changed().await.is_err() || *rx.borrow_and_update() {
                            return Instant::now();
                        }
                    }
                })
            })
            .collect();
        Ok((dead, waiters))
    }

    /// The processes measured while replica `victim` is down.
    fn survivors_pids(&self, victim: usize) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .hubs
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != victim)
            .filter_map(|(_, h)| h.pid())
            .collect();
        pids.extend(self.etcd_pid);
        pids
    }

    /// After a replica whose links are recorded as `dead` was killed: when another replica led
    /// (if the leader died), when every cluster was held by a live replica and the dead one's
    /// records were gone (the hub's view, read from etcd), when ListClusters through a live
    /// replica showed every cluster connected once they were gone, and with `rollout`, when the
    /// rollout moved again.
    async fn watch_failover(
        &mut self,
        dead: &str,
        killed: Instant,
        rollout: Option<&RolloutWatch>,
        timeout: Duration,
    ) -> anyhow::Result<Failover> {
        let n = self.names.len();
        let poll = Duration::from_millis(100).max(self.rollout_poll_interval() / 2);
        let deadline = killed + timeout;
        let running: Vec<usize> = (0..self.hubs.len())
            .filter(|&i| self.hubs[i].runs())
            .collect();
        let mut seen = Failover::default();
        loop {
            self.check_hub()?;
            if rollout.is_some() && seen.led.is_none() {
                let leads = self.leaders().await;
                if let Some(&i) = running.iter().find(|&&i| leads[i] == Some(true)) {
                    seen.led = Some((i, killed.elapsed()));
                }
            }
            if seen.all_live.is_none() || seen.gone.is_none() {
                let held = self.presence().await?;
                let at = killed.elapsed();
                let live = self
                    .names
                    .iter()
                    .filter(|c| {
                        held.get(*c)
                            .is_some_and(|ids| ids.iter().any(|i| i != dead))
                    })
                    .count();
                if live == n && seen.all_live.is_none() {
                    seen.all_live = Some(at);
                }
                if !held.values().flatten().any(|i| i == dead) && seen.gone.is_none() {
                    seen.gone = Some(at);
                }
            }
            // Until a replica leads again, a follower answers admin calls UNAVAILABLE.
            let leads = rollout.is_none() || seen.led.is_some();
            if leads && seen.gone.is_some() && seen.listed.is_none() {
                match self.connected().await {
                    Ok(c) if c == n => seen.listed = Some(killed.elapsed()),
                    Ok(_) => {}
                    Err(e) => eprintln!("fleetsim: listing the clusters failed ({e:#})"),
                }
            }
            if let Some(r) = rollout {
                if leads && seen.progress.is_none() {
                    match self.admin().await?.rollout_counts("small").await {
                        Ok(status) if status.revision == r.commit => {
                            let at = killed.elapsed();
                            let sum = |f: fn(&pb::RolloutWave) -> u32| {
                                status.waves.iter().map(|w| f(w) as usize).sum::<usize>()
                            };
                            if sum(|w| w.healthy) > r.healthy && seen.slot.is_none() {
                                seen.slot = Some(at);
                            }
                            if sum(|w| w.updated) > r.given.len() {
                                seen.slot.get_or_insert(at);
                                seen.progress = Some(at);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => eprintln!("fleetsim: reading the rollout failed ({e})"),
                    }
                }
                if seen.moved.is_none()
                    && let Ok(arrivals) = r.arrivals.lock()
                {
                    seen.moved = arrivals
                        .iter()
                        .filter(|(cluster, _)| !r.given.contains(*cluster))
                        .map(|(_, at)| at.saturating_duration_since(killed))
                        .min();
                }
            }
            let rollout_done = rollout.is_none()
                || (seen.led.is_some() && seen.progress.is_some() && seen.moved.is_some());
            if rollout_done && seen.all_live.is_some() && seen.listed.is_some() {
                return Ok(seen);
            }
            ensure!(
                Instant::now() < deadline,
                "after the kill, not all seen in {}s: {seen:?}",
                timeout.as_secs()
            );
            tokio::time::sleep(poll).await;
        }
    }

    /// Opens one Link session per cluster with the spoke's own identity and streams status
    /// reports, keeping up to `WINDOW` unacked per session, for `duration`; the sessions go to
    /// the replicas in turn. Returns how many reports the hubs acked (durable) and over how
    /// long.
    async fn ingest(
        &self,
        sessions: usize,
        duration: Duration,
        revision: &str,
    ) -> anyhow::Result<(u64, Duration)> {
        const WINDOW: u64 = 32;
        let urls: Vec<String> = self.hubs.iter().map(Replica::url).collect();
        // Every session is opened (a few at a time, retried: the hub sheds handshakes beyond
        // its limit) before any streams, so that all stream for the same window.
        let connects = Arc::new(tokio::sync::Semaphore::new(256));
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(sessions.max(1));
        let (go_tx, go_rx) = tokio::sync::watch::channel(None::<Instant>);
        let connect_deadline = Instant::now() + Duration::from_secs(300);
        // Reports for every App of a cluster in turn (see `--apps`).
        let apps: Arc<Vec<String>> = Arc::new(
            std::iter::once("small".to_owned())
                .chain(self.extra_apps.iter().map(|a| a.name.clone()))
                .collect(),
        );
        let mut tasks = tokio::task::JoinSet::new();
        for (i, name) in self.names.iter().take(sessions).enumerate() {
            let ids = self.spoke_dir.join(name).join("identity");
            let read = |f: &str| {
                std::fs::read_to_string(ids.join(f))
                    .with_context(|| format!("{name}: reading identity {f}"))
            };
            let (key, cert, ca) = (read("key.pem")?, read("cert.pem")?, read("ca.pem")?);
            let hub_url = urls[i % urls.len()].clone();
            let name = name.clone();
            let revision = revision.to_owned();
            let connects = Arc::clone(&connects);
            let ready_tx = ready_tx.clone();
            let mut go_rx = go_rx.clone();
            let apps = Arc::clone(&apps);
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
                            target_id: apps[(next % apps.len() as u64) as usize].clone(),
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
        for hub in &mut self.hubs {
            hub.process = None;
        }
        if self.etcd.is_some()
            && let Err(e) = self.forget_etcd_prefix().await
        {
            eprintln!("cannot delete this run's etcd prefix: {e:#}");
        }
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
