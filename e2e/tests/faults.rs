//! Fault tests: the hub process killed with SIGKILL mid-rollout, a network partition between
//! the hub and some spokes, a spoke stopped mid-apply or losing its disk, and a full disk under
//! the hub. Each runs at a small size by default; docs/faults.md gives the full-size command
//! (`GITFLEET_FAULT_CLUSTERS`, `GITFLEET_FAULT_KILLS`, `GITFLEET_FAULT_OBJECTS`).
//!
//! Every wait polls a condition with a deadline; the only timed pauses choose *when* a fault
//! strikes, never wait for something to happen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use gitfleet_cli::client::AdminClient;
use gitfleet_e2e::harness::{
    ClusterSpec, Fleet, FleetOptions, describe, is_converged, resource_documents,
};
use gitfleet_e2e::hubproc::HubProcess;
use gitfleet_e2e::proxy::Proxy;
use gitfleet_e2e::rollout_checks::{DEADLINE, WavedFleet, greeting, write_hello};
use gitfleet_kubesim::KubesimHandle;
use gitfleet_spoke::outbox::Outbox;
use gitfleet_spoke::{KubeSource, SpokeConfig};
use rand::Rng as _;
use tokio::time::Instant;

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Polls `check` every 50 ms until it yields a value, or fails naming `what`.
async fn poll<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if start.elapsed() > deadline {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 1. kill -9 of the hub process at random moments of rollouts

/// A hub in its own process, spokes in this one.
struct ProcFleet {
    fleet: WavedFleet,
    hub: HubProcess,
    admin: AdminClient,
}

impl ProcFleet {
    async fn start(work: &Path, n: usize) -> anyhow::Result<ProcFleet> {
        let hub = HubProcess::start(
            Path::new(env!("CARGO_BIN_EXE_gitfleet-hub-e2e")),
            &work.join("hub"),
            vec![
                "--default-poll-interval".into(),
                "1s".into(),
                "--heartbeat-grace".into(),
                "30s".into(),
            ],
        )
        .await?;
        let mut admin = hub.admin().await?;
        let token = admin
            .create_token(WavedFleet::token_request(n))
            .await?
            .token;
        let url = hub.grpc_url();
        let fleet =
            WavedFleet::start(work, n, |_| vec![url.clone()], &hub.ca_pem()?, &token).await?;
        Ok(ProcFleet { fleet, hub, admin })
    }

    /// After a kill: every report a spoke saw acked is in the dead hub's store.
    async fn check_nothing_acked_lost(&self) -> anyhow::Result<()> {
        // A spoke persists an ack before it reads on, so once it has noticed the end of its
        // stream, its outbox holds every ack it received.
        for (name, spoke) in &self.fleet.spokes {
            let mut connected = spoke.connected();
            tokio::time::timeout(DEADLINE, connected.wait_for(|c| !*c))
                .await
                .with_context(|| format!("{name} did not notice the hub's death"))??;
        }
        let acked = self.fleet.acked_by_spokes()?;
        let store = gitfleet_hub::store::Store::open(&self.hub.data_dir().join("store"))
            .await
            .context("opening the killed hub's store")?;
        self.fleet.check_acked_in(&acked, &store).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_process_killed_at_random_moments_of_rollouts() -> anyhow::Result<()> {
    let n = env_usize("GITFLEET_FAULT_CLUSTERS", 10);
    let kills = env_usize("GITFLEET_FAULT_KILLS", 3);
    let tmp = tempfile::tempdir()?;
    let mut proc = ProcFleet::start(tmp.path(), n).await?;

    write_hello(&proc.fleet.git, "v1")?;
    let v1 = proc.fleet.git.commit("v1")?;
    proc.admin
        .apply(
            resource_documents("inline", &proc.fleet.resources())?,
            false,
        )
        .await?;
    proc.fleet.wait_complete(&mut proc.admin, &v1).await?;

    let mut revisions = vec![v1];
    let mut rng = rand::rng();
    for k in 0..kills {
        let greeting = format!("v{}", k + 2);
        write_hello(&proc.fleet.git, &greeting)?;
        let revision = proc.fleet.git.commit(&greeting)?;
        // A random moment within the rollout (or before the hub has even seen the commit).
        let strike = Instant::now() + Duration::from_millis(rng.random_range(0..4000));
        while Instant::now() < strike {
            proc.fleet.check_allowed(&mut proc.admin, &revision).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let before = proc.fleet.check_allowed(&mut proc.admin, &revision).await?;
        proc.hub.kill().await?;
        eprintln!(
            "kill {}/{kills}: rollout {:?}",
            k + 1,
            before.map(|r| format!(
                "#{} {} wave {} {}",
                r.number, r.summary, r.current_wave, r.reason
            ))
        );
        proc.check_nothing_acked_lost().await?;
        proc.hub.restart().await?;
        proc.admin = proc.hub.admin().await?;
        proc.fleet.wait_complete(&mut proc.admin, &revision).await?;
        revisions.push(revision);
    }
    ensure!(proc.hub.starts() as usize == kills + 1);
    proc.fleet
        .check_rollouts(&mut proc.admin, &revisions)
        .await?;

    proc.fleet.shutdown().await;
    proc.hub.stop().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. A partition between the hub and some spokes

const PARTITION_APP: &str = "apiVersion: gitfleet.dev/v1
kind: App
metadata: { name: hello }
spec:
  repo: platform
  path: apps/hello
  namespace: hello
  targets:
    - clusterSelector: {}
  rollout:
    minHealthyFor: 0s
    waves:
      - name: first
        clusterSelector: { matchLabels: { ring: first } }
";

/// Changes the hello ConfigMap's greeting the way `kubectl edit` would.
async fn edit_greeting(kubesim: &KubesimHandle, cluster: &str, value: &str) -> anyhow::Result<()> {
    let client = kube::Client::try_from(kubesim.kube_config(cluster))?;
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client, "hello");
    let patch = serde_json::json!({"data": {"greeting": value}});
    let params = kube::api::PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    api.patch("hello-config", &params, &kube::api::Patch::Merge(&patch))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_spokes_keep_enforcing_and_catch_up_when_healed() -> anyhow::Result<()> {
    // p-* spokes dial through the proxy; d-* directly. Wave "first" holds p-1 and d-1.
    let clusters = vec![
        ClusterSpec::new("p-1").label("ring", "first"),
        ClusterSpec::new("d-1").label("ring", "first"),
        ClusterSpec::new("p-2"),
        ClusterSpec::new("d-2"),
    ];
    let behind = ["p-1", "p-2"];
    let mut options = FleetOptions::new(clusters.clone());
    options.deferred_spokes = behind.iter().map(|s| s.to_string()).collect();
    let mut fleet = Fleet::start(options).await?;
    let proxy = Proxy::start(fleet.hub().grpc_addr()).await?;
    for c in clusters
        .iter()
        .filter(|c| behind.contains(&c.name.as_str()))
    {
        fleet.start_spoke_via(c, proxy.url()).await?;
    }
    write_hello(&fleet.git, "v1")?;
    let v1 = fleet.git.commit("v1")?;
    let resources = format!("{}---\n{PARTITION_APP}", fleet.repo_yaml("platform"));
    fleet.apply_yaml(&resources).await?;
    fleet.wait_converged("hello", &v1, 4, DEADLINE).await?;
    ensure!(
        proxy.live_connections() >= 2,
        "both p spokes go through the proxy"
    );

    proxy.cut();
    for name in behind {
        let mut connected = fleet.spokes[name].connected();
        tokio::time::timeout(DEADLINE, connected.wait_for(|c| !*c))
            .await
            .with_context(|| format!("{name} did not notice the partition"))??;
    }
    fleet
        .wait_for(
            "hello",
            "the hub to show p-1 and p-2 disconnected",
            DEADLINE,
            |s| {
                s.iter()
                    .all(|t| t.cluster_connected != t.cluster.starts_with("p-"))
            },
        )
        .await?;

    // Cut off, p-1 still corrects drift from its last desired state.
    edit_greeting(&fleet.kubesim, "p-1", "edited by hand").await?;
    let kubesim = &fleet.kubesim;
    poll(
        "p-1 to revert the edit while partitioned",
        DEADLINE,
        || async move {
            Ok(
                (greeting(kubesim, "p-1").as_deref() == Some("Hello from gitfleet, v1"))
                    .then_some(()),
            )
        },
    )
    .await?;
    ensure!(proxy.is_cut());

    // A new commit: the first wave cannot finish without p-1, which is waited for by name as
    // disconnected, never counted as failed; nothing reaches the second wave.
    write_hello(&fleet.git, "v2")?;
    let v2 = fleet.git.commit("v2")?;
    let start = Instant::now();
    let waiting = loop {
        let targets = fleet.status("hello").await?;
        for t in &targets {
            ensure!(
                t.cluster == "d-1" || t.desired_revision != v2,
                "{} has v2 while the first wave waits for p-1:\n{}",
                t.cluster,
                describe(&targets)
            );
        }
        let r = fleet.admin().rollout("hello").await?;
        let d1_done = targets
            .iter()
            .any(|t| t.cluster == "d-1" && is_converged(t, &v2));
        if r.revision == v2 && d1_done && r.reason.contains("p-1") {
            break r;
        }
        ensure!(
            start.elapsed() < DEADLINE,
            "the rollout never waited for p-1: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(
        waiting.summary != "paused" && waiting.summary != "failed",
        "a partition is no failure: {waiting:?}"
    );
    ensure!(
        waiting.reason.contains("disconnected"),
        "the reason says why p-1 is waited for: {}",
        waiting.reason
    );
    let first = &waiting.waves[0];
    ensure!(first.failed == 0, "nothing failed: {first:?}");
    ensure!(
        first
            .targets
            .iter()
            .any(|t| t.cluster == "p-1" && t.state == "disconnected"),
        "p-1 is shown disconnected: {first:?}"
    );
    ensure!(
        greeting(&fleet.kubesim, "p-1").as_deref() == Some("Hello from gitfleet, v1"),
        "p-1 keeps v1 while cut off"
    );

    proxy.heal();
    fleet.wait_converged("hello", &v2, 4, DEADLINE).await?;
    let r = fleet.admin().rollout("hello").await?;
    ensure!(r.revision == v2 && r.summary == "complete", "{r:?}");
    for name in ["p-1", "p-2", "d-1", "d-2"] {
        ensure!(
            greeting(&fleet.kubesim, name).as_deref() == Some("Hello from gitfleet, v2"),
            "{name} runs v2"
        );
    }
    let status = fleet.status("hello").await?;
    ensure!(
        status.iter().all(|t| t.cluster_connected),
        "all connected again:\n{}",
        describe(&status)
    );
    drop(proxy);
    fleet.shutdown().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. A spoke stopped mid-apply; a spoke that lost its disk

const BIG_APP: &str = "apiVersion: gitfleet.dev/v1
kind: App
metadata: { name: big }
spec:
  repo: platform
  path: apps/big
  namespace: big
  targets:
    - clusterSelector: {}
";

/// `count` ConfigMaps named `{prefix}-0000`… in one file.
fn configmaps(prefix: &str, count: usize) -> String {
    (0..count)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {prefix}-{i:04}\ndata:\n  n: \"{i}\"\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

fn exists(kubesim: &KubesimHandle, cluster: &str, name: &str) -> bool {
    kubesim
        .get_object(cluster, "v1", "ConfigMap", Some("big"), name)
        .is_some()
}

fn count_prefix(kubesim: &KubesimHandle, cluster: &str, prefix: &str) -> usize {
    kubesim
        .list_objects(cluster)
        .iter()
        .filter(|o| {
            o.pointer("/metadata/namespace").and_then(|v| v.as_str()) == Some("big")
                && o.pointer("/metadata/name")
                    .and_then(|v| v.as_str())
                    .is_some_and(|n| n.starts_with(&format!("{prefix}-")))
        })
        .count()
}

/// Waits until the spoke of `cluster` has started applying `{prefix}-*`.
async fn wait_applying(fleet: &Fleet, cluster: &str, prefix: &str) -> anyhow::Result<()> {
    let first = format!("{prefix}-0000");
    let start = Instant::now();
    while !exists(&fleet.kubesim, cluster, &first) {
        ensure!(
            start.elapsed() < DEADLINE,
            "{cluster} never started applying {prefix}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// Fails when the spoke of `cluster` has applied all of `{prefix}-*` already.
fn ensure_mid_apply(
    fleet: &Fleet,
    cluster: &str,
    prefix: &str,
    count: usize,
) -> anyhow::Result<()> {
    let last = format!("{prefix}-{:04}", count - 1);
    ensure!(
        !exists(&fleet.kubesim, cluster, &last),
        "{cluster} applied all {count} objects before it could be stopped; raise GITFLEET_FAULT_OBJECTS"
    );
    Ok(())
}

/// Waits until the spoke of `cluster` has applied some but not all of `{prefix}-*`, then stops
/// it there; fails if the apply finished first (then the object count is too small).
async fn stop_mid_apply(
    fleet: &mut Fleet,
    cluster: &str,
    prefix: &str,
    count: usize,
) -> anyhow::Result<usize> {
    wait_applying(fleet, cluster, prefix).await?;
    stop_now(fleet, cluster, prefix, count).await
}

/// Stops the spoke of `cluster`, which must be mid-apply of `{prefix}-*`.
async fn stop_now(
    fleet: &mut Fleet,
    cluster: &str,
    prefix: &str,
    count: usize,
) -> anyhow::Result<usize> {
    ensure_mid_apply(fleet, cluster, prefix, count)?;
    let spoke = fleet.spokes.remove(cluster).context("spoke running")?;
    spoke.shutdown().await;
    let applied = count_prefix(&fleet.kubesim, cluster, prefix);
    ensure!(
        applied > 0 && applied < count,
        "stopped mid-apply: {applied} of {count} applied"
    );
    Ok(applied)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoke_stopped_mid_apply_resumes_and_orphans_nothing() -> anyhow::Result<()> {
    let count = env_usize("GITFLEET_FAULT_OBJECTS", 1500);
    let c1 = ClusterSpec::new("c1");
    let mut fleet = Fleet::start(FleetOptions::new(vec![c1.clone()])).await?;
    fleet
        .git
        .write("apps/big/base.yaml", configmaps("base", 1))?;
    let v1 = fleet.git.commit("v1")?;
    let resources = format!("{}---\n{BIG_APP}", fleet.repo_yaml("platform"));
    fleet.apply_yaml(&resources).await?;
    fleet.wait_converged("big", &v1, 1, DEADLINE).await?;

    // Stopped while applying a large revision, started again from its data directory: it
    // finishes that revision.
    fleet.git.write("apps/big/a.yaml", configmaps("a", count))?;
    let v2 = fleet.git.commit("v2: many objects")?;
    let applied = stop_mid_apply(&mut fleet, "c1", "a", count).await?;
    eprintln!("stopped after {applied} of {count} objects");
    fleet.start_spoke(&c1).await?;
    fleet.wait_converged("big", &v2, 1, DEADLINE).await?;
    ensure!(count_prefix(&fleet.kubesim, "c1", "a") == count);

    // Mid-apply again, Git drops what it is applying, the spoke hears of it and stops before
    // it has finished: the restarted spoke starts from the newer revision, which no longer
    // names the objects it had created; it must still delete them.
    fleet.git.write("apps/big/b.yaml", configmaps("b", count))?;
    let v3 = fleet.git.commit("v3: more objects")?;
    wait_applying(&fleet, "c1", "b").await?;
    fleet.git.remove("apps/big/b.yaml")?;
    let v4 = fleet.git.commit("v4: the new objects reverted")?;
    ensure!(v3 != v4);
    let desired_path = fleet.work_dir().join("spokes/c1/state/desired.json");
    let start = Instant::now();
    loop {
        let desired: Option<gitfleet_spoke::desired::DesiredState> =
            gitfleet_spoke::store::read_json(&desired_path)?;
        if desired
            .as_ref()
            .and_then(|d| d.targets.get("big"))
            .is_some_and(|t| t.source.commit == v4)
        {
            break;
        }
        ensure_mid_apply(&fleet, "c1", "b", count)?;
        ensure!(start.elapsed() < DEADLINE, "c1 never heard of v4");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let applied = stop_now(&mut fleet, "c1", "b", count).await?;
    eprintln!("stopped after {applied} of {count} objects, holding v4");
    fleet.start_spoke(&c1).await?;
    fleet.wait_converged("big", &v4, 1, DEADLINE).await?;
    let kubesim = &fleet.kubesim;
    poll(
        "the half-applied objects of v3 to be pruned",
        DEADLINE,
        || async move { Ok((count_prefix(kubesim, "c1", "b") == 0).then_some(())) },
    )
    .await
    .with_context(|| {
        format!(
            "{} objects of the interrupted revision are orphaned",
            count_prefix(kubesim, "c1", "b")
        )
    })?;
    ensure!(count_prefix(&fleet.kubesim, "c1", "a") == count);
    fleet.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoke_that_lost_its_disk_recovers_its_inventory_from_the_cluster() -> anyhow::Result<()>
{
    let c1 = ClusterSpec::new("c1");
    let mut fleet = Fleet::start(FleetOptions::new(vec![c1.clone()])).await?;
    for name in ["keep", "drop1", "drop2", "drop3"] {
        fleet
            .git
            .write(&format!("apps/big/{name}.yaml"), configmaps(name, 1))?;
    }
    let v1 = fleet.git.commit("v1")?;
    let resources = format!("{}---\n{BIG_APP}", fleet.repo_yaml("platform"));
    fleet.apply_yaml(&resources).await?;
    fleet.wait_converged("big", &v1, 1, DEADLINE).await?;
    let data_dir = fleet.work_dir().join("spokes").join("c1");

    // The spoke's state and Git cache are lost (its identity survives, say in a Secret), and
    // Git drops a file meanwhile: only the inventory in the cluster remembers that object.
    fleet
        .spokes
        .remove("c1")
        .context("running")?
        .shutdown()
        .await;
    for dir in ["state", "git"] {
        std::fs::remove_dir_all(data_dir.join(dir))?;
    }
    fleet.git.remove("apps/big/drop1.yaml")?;
    let v2 = fleet.git.commit("v2: drop1 removed")?;
    fleet.start_spoke(&c1).await?;
    fleet.wait_converged("big", &v2, 1, DEADLINE).await?;
    let kubesim = &fleet.kubesim;
    poll(
        "drop1 pruned after the state was lost",
        DEADLINE,
        || async move { Ok((!exists(kubesim, "c1", "drop1-0000")).then_some(())) },
    )
    .await?;
    ensure!(exists(&fleet.kubesim, "c1", "keep-0000"));

    // The whole disk is lost, identity included: the hub refuses the name with another key.
    fleet
        .spokes
        .remove("c1")
        .context("running")?
        .shutdown()
        .await;
    std::fs::remove_dir_all(&data_dir)?;
    fleet.git.remove("apps/big/drop2.yaml")?;
    let v3 = fleet.git.commit("v3: drop2 removed")?;
    let refused = fleet.start_spoke(&c1).await;
    let message = format!(
        "{:#}",
        refused.err().context("the name is bound to the lost key")?
    );
    ensure!(
        message.to_lowercase().contains("already"),
        "the refusal says why: {message}"
    );

    // The documented way back: revoke the old name, register the cluster under a new one. The
    // new spoke finds the Target's inventory in the cluster and prunes what Git dropped.
    ensure!(fleet.admin().revoke_cluster("c1").await?);
    let token = fleet
        .hub()
        .create_token(Duration::from_secs(600), BTreeMap::new(), 1)
        .await?;
    let mut config = SpokeConfig::new(
        fleet.hub().grpc_url(),
        fleet.work_dir().join("spokes").join("c1-rebuilt"),
        "c1-rebuilt",
        KubeSource::Config(Box::new(fleet.kubesim.kube_config("c1"))),
    );
    config.hub_ca_pem = Some(fleet.hub().ca_pem().to_owned());
    config.bootstrap_token = Some(token);
    config.heartbeat_interval = Duration::from_secs(2);
    let spoke = gitfleet_spoke::start(config).await?;
    fleet.spokes.insert("c1-rebuilt".into(), spoke);
    fleet
        .wait_for("big", "c1-rebuilt converged at v3", DEADLINE, |s| {
            s.iter()
                .any(|t| t.cluster == "c1-rebuilt" && is_converged(t, &v3))
        })
        .await?;
    let kubesim = &fleet.kubesim;
    poll(
        "drop2 pruned by the re-registered spoke",
        DEADLINE,
        || async move { Ok((!exists(kubesim, "c1", "drop2-0000")).then_some(())) },
    )
    .await?;
    ensure!(exists(&fleet.kubesim, "c1", "keep-0000"));
    ensure!(exists(&fleet.kubesim, "c1", "drop3-0000"));

    // And it owns the rest from now on: a file removed later is pruned too.
    fleet.git.remove("apps/big/drop3.yaml")?;
    let v4 = fleet.git.commit("v4: drop3 removed")?;
    fleet
        .wait_for("big", "c1-rebuilt converged at v4", DEADLINE, |s| {
            s.iter()
                .any(|t| t.cluster == "c1-rebuilt" && is_converged(t, &v4))
        })
        .await?;
    let kubesim = &fleet.kubesim;
    poll("drop3 pruned", DEADLINE, || async move {
        Ok((!exists(kubesim, "c1", "drop3-0000")).then_some(()))
    })
    .await?;
    ensure!(exists(&fleet.kubesim, "c1", "keep-0000"));
    fleet.shutdown().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4. A full disk under the hub

/// A small tmpfs mounted over a directory, unmounted on drop. Needs root (CAP_SYS_ADMIN).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// `None` when this machine does not let us mount one.
    fn mount(dir: &Path, size: &str) -> anyhow::Result<Option<Tmpfs>> {
        std::fs::create_dir_all(dir)?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(out) if out.status.success() => Ok(Some(Tmpfs {
                dir: dir.to_owned(),
            })),
            Ok(out) => {
                eprintln!(
                    "cannot mount a tmpfs: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                Ok(None)
            }
            Err(e) => {
                eprintln!("cannot run mount: {e}");
                Ok(None)
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a task of the hub may still hold a file open for a moment.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

/// Writes `path` until the file system is full; the bytes written.
fn fill(path: &Path) -> anyhow::Result<u64> {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path)?;
    let mut written = 0u64;
    for chunk in [1 << 20, 4096, 512] {
        let buf = vec![0x5au8; chunk];
        loop {
            match file.write_all(&buf).and_then(|()| file.sync_all()) {
                Ok(()) => written += chunk as u64,
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => return Err(e).context("filling the disk"),
            }
        }
    }
    Ok(written)
}

/// GET `path` from the hub's HTTP listener: status code and body.
async fn http_get(fleet: &Fleet, path: &str) -> anyhow::Result<(u16, String)> {
    let addr = fleet.hub().http_addr().context("the hub serves HTTP")?;
    gitfleet_e2e::hubproc::http_get(addr, path).await
}

/// The hub's `/metrics` text.
async fn hub_metrics(fleet: &Fleet) -> anyhow::Result<String> {
    Ok(http_get(fleet, "/metrics").await?.1)
}

fn errors_total(metrics: &str, kind: &str) -> f64 {
    let prefix = format!("gitfleet_errors_total{{kind=\"{kind}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn spoke_outbox(fleet: &Fleet, cluster: &str) -> anyhow::Result<Outbox> {
    let path = fleet
        .work_dir()
        .join("spokes")
        .join(cluster)
        .join("state/outbox.json");
    Ok(gitfleet_spoke::store::read_json(&path)?.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_hub_fails_loudly_loses_nothing_and_recovers() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let hub_dir = tmp.path().join("hub");
    let Some(_tmpfs) = Tmpfs::mount(&hub_dir, "64m")? else {
        eprintln!("SKIPPED: a full disk needs a tmpfs, and this process may not mount one");
        return Ok(());
    };
    let mut options = FleetOptions::new(vec![ClusterSpec::new("a"), ClusterSpec::new("b")]);
    options.work_dir = Some(tmp.path().to_owned());
    let mut fleet = Fleet::start(options).await?;
    write_hello(&fleet.git, "v1")?;
    let v1 = fleet.git.commit("v1")?;
    let resources = format!(
        "{}---\napiVersion: gitfleet.dev/v1\nkind: App\nmetadata: {{ name: hello }}\nspec:\n  repo: platform\n  path: apps/hello\n  namespace: hello\n  targets:\n    - clusterSelector: {{}}\n",
        fleet.repo_yaml("platform")
    );
    fleet.apply_yaml(&resources).await?;
    fleet.wait_converged("hello", &v1, 2, DEADLINE).await?;
    let acked_before: BTreeMap<String, u64> = ["a", "b"]
        .iter()
        .map(|c| {
            let seq = fleet.hub().store().acked_seq(c).expect("store");
            (c.to_string(), seq)
        })
        .collect();

    let ballast = hub_dir.join("ballast");
    let filled = fill(&ballast)?;
    eprintln!("disk filled with {filled} bytes");
    let errors_before = errors_total(&hub_metrics(&fleet).await?, "status_ingest");

    // Admin writes fail, and say why. The first few may still fit in pages sled's files already
    // hold (and then they are durable): write until the disk really refuses.
    let mut batch = 0;
    let message = loop {
        batch += 1;
        let groups: String = (0..100)
            .map(|i| format!("apiVersion: gitfleet.dev/v1\nkind: ClusterGroup\nmetadata: {{ name: filler-{batch}-{i} }}\nspec:\n  selector: {{ matchLabels: {{ filler: \"{batch}-{i}\" }} }}\n---\n"))
            .collect();
        match fleet.apply_yaml(&groups).await {
            Ok(_) => ensure!(batch < 2000, "2000 batches of writes fit on a full disk"),
            Err(e) => break format!("{e:#}"),
        }
    };
    eprintln!("apply on a full disk (batch {batch}): {message}");
    ensure!(
        message.contains("No space left"),
        "the error names the cause: {message}"
    );

    // Reports arrive (a drift on a, reverted by its spoke): they cannot be stored, so they are
    // not acked; the spoke keeps them.
    edit_greeting(&fleet.kubesim, "a", "edited while the hub's disk is full").await?;
    let kubesim = &fleet.kubesim;
    poll("a to revert the edit", DEADLINE, || async move {
        Ok((greeting(kubesim, "a").as_deref() == Some("Hello from gitfleet, v1")).then_some(()))
    })
    .await?;
    let start = Instant::now();
    loop {
        let metrics = hub_metrics(&fleet).await?;
        let outbox = spoke_outbox(&fleet, "a")?;
        if errors_total(&metrics, "status_ingest") > errors_before && !outbox.pending.is_empty() {
            break;
        }
        ensure!(
            start.elapsed() < DEADLINE,
            "reports on a full disk went unnoticed: outbox {outbox:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Whatever the spokes saw acked, before or during the full disk.
    let mut acked_by_spokes = BTreeMap::new();
    for c in ["a", "b"] {
        acked_by_spokes.insert(c, spoke_outbox(&fleet, c)?.last_acked);
    }

    // Space returns. sled refuses writes for good after an I/O error, so the hub cannot resume
    // by itself: its probes say so, and the orchestrator restarts it (here: the test does).
    std::fs::remove_file(&ballast)?;
    let (code, body) = http_get(&fleet, "/healthz").await?;
    ensure!(
        code == 503 && body.contains("No space left"),
        "/healthz asks for a restart: {code} {body}"
    );
    ensure!(http_get(&fleet, "/readyz").await?.0 == 503);
    fleet.crash_and_restart_hub().await?;
    ensure!(http_get(&fleet, "/healthz").await?.0 == 200);
    for (c, seq) in &acked_by_spokes {
        let stored = fleet.hub().store().acked_seq(c)?;
        ensure!(
            stored >= *seq,
            "{c}: the spoke holds an ack for {seq}, the restarted hub's store only {stored}"
        );
    }
    let start = Instant::now();
    loop {
        let outbox = spoke_outbox(&fleet, "a")?;
        if outbox.pending.is_empty() && outbox.last_acked > acked_before["a"] {
            break;
        }
        ensure!(
            start.elapsed() < DEADLINE,
            "the hub did not resume after space returned: outbox {outbox:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fleet
        .apply_yaml(
            "apiVersion: gitfleet.dev/v1\nkind: ClusterGroup\nmetadata: { name: full }\nspec:\n  selector: {}\n",
        )
        .await
        .context("writes work again")?;
    // Nothing acked before is lost, across a restart too.
    fleet.restart_hub().await?;
    for (c, seq) in &acked_before {
        let now = fleet.hub().store().acked_seq(c)?;
        ensure!(now >= *seq, "{c}: acked {seq} before, {now} after");
    }
    write_hello(&fleet.git, "v2")?;
    let v2 = fleet.git.commit("v2")?;
    fleet.wait_converged("hello", &v2, 2, DEADLINE).await?;
    fleet.shutdown().await;
    Ok(())
}
