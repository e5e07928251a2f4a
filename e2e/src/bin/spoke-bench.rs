//! Spoke figures against kubesim, printed, never asserted (timings are not test outcomes):
//! `cargo run --release --bin spoke-bench`.
//!
//! - the time to fetch, render and apply 1,000 objects until the Target reports Synced;
//! - CPU and resident memory of the spoke while 20 Targets sit idle. kubesim runs in a child
//!   process (this binary again, with `--kubesim DIR`), so that the figures are the spoke's
//!   alone; the child's are printed next to them. The spoke runs with its own allocator setup
//!   (`gitfleet_spoke::allocator`), as the `gitfleet-spoke` binary does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gitfleet_kubesim::{Kubesim, KubesimConfig};
use gitfleet_spoke::agent::{self, AgentConfig, Reporter};
use gitfleet_spoke::allocator::{self, Allocator};
use gitfleet_spoke::cluster::Cluster;
use gitfleet_spoke::desired::DesiredState;
use gitfleet_spoke::git::GitCache;
use gitfleet_spoke::model::{
    Health, RenderOptions, Source, SyncPolicy, SyncState, TargetSpec, TargetStatus,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

#[derive(Default)]
struct Latest(Mutex<BTreeMap<String, TargetStatus>>);

impl Reporter for Latest {
    fn report(&self, status: TargetStatus) {
        self.0
            .lock()
            .expect("latest")
            .insert(status.target_id.clone(), status);
    }
}

fn commit(dir: &std::path::Path, files: &[(String, String)]) -> String {
    let git = gitfleet_e2e::gitrepo::GitRepo::init(dir).expect("init");
    for (path, content) in files {
        git.write(path, content).expect("write");
    }
    git.commit("bench").expect("commit")
}

fn target(id: &str, url: &str, commit: &str, path: &str) -> TargetSpec {
    TargetSpec {
        target_id: id.into(),
        app: id.into(),
        source: Source {
            repo_url: url.into(),
            repo_name: "bench".into(),
            commit: commit.into(),
            git_ref: String::new(),
            path: path.into(),
            extra_paths: Vec::new(),
            trusted_keys: Vec::new(),
        },
        namespace: id.into(),
        render: RenderOptions::default(),
        sync_policy: SyncPolicy::default(),
        trace: BTreeMap::new(),
        spec_generation: 1,
        project: None,
        health_rules: Vec::new(),
    }
}

/// (user+system CPU seconds, resident MiB) of a process (`self` or a pid).
fn usage(pid: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    (ticks / 100.0, rss_kib / 1024.0)
}

async fn wait_all(latest: &Latest, ids: &[String], done: impl Fn(&TargetStatus) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let ok = {
            let map = latest.0.lock().expect("latest");
            ids.iter().all(|id| map.get(id).is_some_and(&done))
        };
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "targets did not converge");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The child: serves one simulated cluster, writes its kubeconfig into `dir`, says `ready`,
/// and stops when its standard input closes (the parent is gone).
async fn serve_kubesim(dir: &std::path::Path) {
    let mut sim = KubesimConfig::new(["bench"]);
    sim.ready_delay = Duration::from_millis(50);
    let kubesim = Kubesim::start(sim).await.expect("kubesim");
    kubesim.write_kubeconfigs(dir).expect("kubeconfig");
    println!("ready");
    let mut sink = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut sink).await;
    kubesim.shutdown().await;
}

/// Starts kubesim in a child process and returns it with a client configuration for it.
async fn start_kubesim(dir: &std::path::Path) -> (tokio::process::Child, kube::Config) {
    let mut child = tokio::process::Command::new(std::env::current_exe().expect("own path"))
        .arg("--kubesim")
        .arg(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start kubesim");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    while let Some(line) = lines.next_line().await.expect("kubesim output") {
        if line == "ready" {
            break;
        }
    }
    let kubeconfig =
        kube::config::Kubeconfig::read_from(dir.join("bench.kubeconfig")).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kube config");
    (child, config)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, dir] = args.as_slice()
        && flag == "--kubesim"
    {
        serve_kubesim(std::path::Path::new(dir)).await;
        return;
    }
    allocator::return_freed_memory();
    let sim_dir = tempfile::TempDir::new().expect("tempdir");
    let (kubesim, kube_config) = start_kubesim(sim_dir.path()).await;
    let kubesim_pid = kubesim.id().expect("kubesim pid").to_string();
    let repo = tempfile::TempDir::new().expect("tempdir");
    let data = tempfile::TempDir::new().expect("tempdir");
    let url = format!("file://{}", repo.path().display());

    let mut files = Vec::new();
    for file in 0..10 {
        let docs: Vec<String> = (0..100)
            .map(|i| format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{file}-{i}\ndata:\n  n: \"{i}\"\n"))
            .collect();
        files.push((format!("big/part-{file}.yaml"), docs.join("---\n")));
    }
    for t in 0..20 {
        files.push((
            format!("small/{t}/app.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: b\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports: [{port: 80}]\n".to_owned(),
        ));
    }
    let rev = commit(repo.path(), &files);

    let client = kube::Client::try_from(kube_config).expect("client");
    let latest = Arc::new(Latest::default());
    let (desired_tx, desired_rx) = watch::channel(DesiredState::default());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(agent::run(
        AgentConfig::new("bench"),
        Arc::new(Cluster::new(client)),
        Arc::new(GitCache::new(data.path().join("git"))),
        latest.clone(),
        desired_rx,
        cancel.clone(),
    ));

    let started = Instant::now();
    desired_tx.send_replace(DesiredState {
        generation: 1,
        targets: [("big".to_owned(), target("big", &url, &rev, "big"))]
            .into_iter()
            .collect(),
        ..DesiredState::default()
    });
    wait_all(&latest, &["big".to_owned()], |s| {
        s.sync == SyncState::Synced && s.health == Health::Healthy
    })
    .await;
    println!(
        "fetch + render + apply + healthy, 1,000 objects: {:?}",
        started.elapsed()
    );

    let ids: Vec<String> = (0..20).map(|t| format!("small-{t}")).collect();
    let targets = ids
        .iter()
        .enumerate()
        .map(|(t, id)| (id.clone(), target(id, &url, &rev, &format!("small/{t}"))))
        .collect();
    let started = Instant::now();
    desired_tx.send_replace(DesiredState {
        generation: 2,
        targets,
        ..DesiredState::default()
    });
    wait_all(&latest, &ids, |s| {
        s.sync == SyncState::Synced && s.health == Health::Healthy
    })
    .await;
    println!(
        "20 Targets of 3 objects each synced and healthy: {:?}",
        started.elapsed()
    );

    // Let polling settle into its idle rhythm, then measure a quiet minute.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (cpu_before, _) = usage("self");
    let (sim_cpu_before, _) = usage(&kubesim_pid);
    let window = Duration::from_secs(60);
    tokio::time::sleep(window).await;
    let (cpu_after, rss) = usage("self");
    let (sim_cpu_after, sim_rss) = usage(&kubesim_pid);
    let percent = |before: f64, after: f64| (after - before) / window.as_secs_f64() * 100.0;
    println!(
        "idle with 20 Targets, the spoke alone: {:.2}% of one core, {rss:.1} MiB resident",
        percent(cpu_before, cpu_after)
    );
    println!(
        "  (kubesim, in its own process: {:.2}% of one core, {sim_rss:.1} MiB resident)",
        percent(sim_cpu_before, sim_cpu_after)
    );
    cancel.cancel();
    let _ = task.await;
    drop(kubesim);
}
