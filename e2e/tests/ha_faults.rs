//! Fault tests of the highly available hub with real processes: `gitfleet-hub serve` replicas
//! sharing one PKI and one etcd prefix, real spokes given every replica's address, the waved
//! rollout of `faults.rs` (`gitfleet_e2e::rollout_checks`). The leading replica is killed with
//! SIGKILL mid-rollout, or an etcd member of three is; what must hold is in docs/faults.md.
//! `GITFLEET_FAULT_CLUSTERS` and `GITFLEET_FAULT_KILLS` size them.
//!
//! Every wait polls a condition with a deadline; the only timed pauses choose *when* a fault
//! strikes. Admin calls go to any live replica, and are made again while an election is under
//! way (UNAVAILABLE) or the replica asked is gone.
#![cfg(feature = "etcd")]

use crate::etcd;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use gitfleet_cli::client::{AdminClient, ClientError};
use gitfleet_core::resources::Kind;
use gitfleet_e2e::harness::{describe, resource_documents};
use gitfleet_e2e::hubproc::{HubProcess, admin_client};
use gitfleet_e2e::rollout_checks::{Admins, DEADLINE, WavedFleet, call, is_transient, write_hello};
use gitfleet_hub::store::Store;
use gitfleet_hub::store::etcd::{EtcdBackend, EtcdOptions};
use rand::Rng as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const PREFIX: &str = "/ha-e2e/";

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_gitfleet-hub-e2e"))
}

/// A ClusterGroup no cluster is in: an admin write that changes nobody's desired state.
fn cluster_group(name: &str) -> String {
    format!(
        "apiVersion: gitfleet.dev/v1\nkind: ClusterGroup\nmetadata: {{ name: {name} }}\nspec:\n  selector: {{ matchLabels: {{ group: {name} }} }}\n"
    )
}

/// The replicas of one hub, each a process: one PKI, one etcd prefix.
struct Replicas {
    hubs: Vec<HubProcess>,
    /// Which replicas run (a killed one is not asked anything until it is restarted).
    running: Vec<bool>,
    admins: ReplicaClients,
    lease_ttl: String,
}

impl Replicas {
    /// `n` replicas on the etcd at `endpoints`, each started once the one before answers;
    /// the first leads.
    async fn start(
        work: &Path,
        n: usize,
        endpoints: &[String],
        lease_ttl: &str,
    ) -> anyhow::Result<Replicas> {
        let origin = work.join("pki-origin");
        HubProcess::init(exe(), &origin).await?;
        let args = vec![
            "--store".into(),
            "etcd".into(),
            "--etcd-endpoints".into(),
            endpoints.join(","),
            "--etcd-prefix".into(),
            PREFIX.into(),
            "--etcd-lease-ttl".into(),
            lease_ttl.into(),
            "--default-poll-interval".into(),
            "1s".into(),
            "--heartbeat-grace".into(),
            "30s".into(),
        ];
        let mut hubs = Vec::new();
        for i in 0..n {
            let hub = HubProcess::start_with_pki(
                exe(),
                &work.join(format!("hub-{i}")),
                &origin.join("pki"),
                args.clone(),
            )
            .await
            .with_context(|| format!("starting replica {i}"))?;
            hubs.push(hub);
        }
        let mut replicas = Replicas {
            running: vec![true; n],
            admins: ReplicaClients::new(&hubs),
            hubs,
            lease_ttl: lease_ttl.to_owned(),
        };
        let leader = replicas.wait_leader().await?;
        ensure!(leader == 0, "replica {leader} leads, not the first started");
        Ok(replicas)
    }

    fn urls(&self) -> Vec<String> {
        self.hubs.iter().map(HubProcess::grpc_url).collect()
    }

    /// Every replica's address, starting with replica `first`'s (so that the spokes spread).
    fn urls_from(&self, first: usize) -> Vec<String> {
        let mut urls = self.urls();
        let n = urls.len();
        urls.rotate_left(first % n);
        urls
    }

    /// The running replica that leads, once exactly one says so on `/metrics`; fails if
    /// two ever do.
    async fn wait_leader(&mut self) -> anyhow::Result<usize> {
        let start = Instant::now();
        loop {
            self.check_running()?;
            let mut leaders = Vec::new();
            let mut unknown = None;
            for (i, hub) in self.hubs.iter().enumerate() {
                if !self.running[i] {
                    continue;
                }
                // A scrape a busy machine did not answer in time is asked again.
                match hub.leads().await {
                    Ok(true) => leaders.push(i),
                    Ok(false) => {}
                    Err(e) => unknown = Some(e.context(format!("replica {i}"))),
                }
            }
            ensure!(leaders.len() <= 1, "replicas {leaders:?} all lead");
            if let ([leader], None) = (&leaders[..], &unknown) {
                return Ok(*leader);
            }
            if start.elapsed() > DEADLINE {
                bail!("no replica led within {DEADLINE:?} (last scrape failure: {unknown:?})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Fails when a replica that should run has exited, with its log.
    fn check_running(&mut self) -> anyhow::Result<()> {
        for (i, hub) in self.hubs.iter_mut().enumerate() {
            if self.running[i]
                && let Some(status) = hub.exited()?
            {
                bail!("replica {i} exited ({status}):\n{}", hub.log());
            }
        }
        Ok(())
    }

    /// Every running replica answers `/healthz` with 200.
    async fn check_healthy(&mut self) -> anyhow::Result<()> {
        self.check_running()?;
        for (i, hub) in self.hubs.iter().enumerate() {
            if self.running[i] {
                let (code, body) = hub.http_get("/healthz").await?;
                ensure!(
                    code == 200,
                    "replica {i}'s /healthz answered {code}: {body}"
                );
            }
        }
        Ok(())
    }

    async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        self.running[i] = false;
        self.admins.clients[i] = None;
        self.hubs[i].kill().await
    }

    async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.hubs[i].restart().await?;
        self.running[i] = true;
        Ok(())
    }

    /// `outcome`, with what the running replicas logged as warnings and errors when it is a
    /// failure (their logs go with the test's temporary directory).
    fn explain<T>(&self, outcome: anyhow::Result<T>) -> anyhow::Result<T> {
        outcome.map_err(|e| {
            let mut text = format!("{e:?}");
            for (i, hub) in self.hubs.iter().enumerate() {
                let log = hub.log();
                let lines: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                    .collect();
                text.push_str(&format!(
                    "\n\nreplica {i} ({}), its last warnings and errors:\n",
                    hub.grpc_url()
                ));
                text.push_str(&lines[lines.len().saturating_sub(20)..].join("\n"));
            }
            anyhow::anyhow!(text)
        })
    }

    /// The store as etcd holds it, read from this process through the `live` endpoints.
    async fn store(&self, live: &[String]) -> anyhow::Result<Store> {
        let mut options = EtcdOptions::new(live.to_owned());
        options.prefix = PREFIX.into();
        let backend = EtcdBackend::connect(&options)
            .await
            .context("connecting to etcd")?;
        Store::with_backend(Arc::new(backend))
            .await
            .context("opening the hub's store on etcd")
    }

    async fn stop(self) -> anyhow::Result<()> {
        for (hub, running) in self.hubs.into_iter().zip(self.running) {
            if running {
                hub.stop().await?;
            }
        }
        Ok(())
    }
}

/// An admin client of each replica, made when first needed: calls go to one replica, and to
/// the next when one fails for want of a hub (a replica gone, or no leader yet).
struct ReplicaClients {
    /// Each replica's admin credential (naming its own address).
    configs: Vec<PathBuf>,
    clients: Vec<Option<AdminClient>>,
    /// The replica calls go to now.
    current: usize,
}

impl ReplicaClients {
    fn new(hubs: &[HubProcess]) -> ReplicaClients {
        ReplicaClients {
            configs: hubs.iter().map(HubProcess::admin_config_path).collect(),
            clients: hubs.iter().map(|_| None).collect(),
            current: 0,
        }
    }
}

impl Admins for ReplicaClients {
    async fn client(&mut self) -> anyhow::Result<&mut AdminClient> {
        let n = self.configs.len();
        for step in 0..n {
            let i = (self.current + step) % n;
            if self.clients[i].is_none() {
                // A replica that is down (or starting) has no credential or refuses the
                // connection: the next one is asked.
                match admin_client(&self.configs[i]).await {
                    Ok(client) => self.clients[i] = Some(client),
                    Err(_) => continue,
                }
            }
            self.current = i;
            return self.clients[i].as_mut().context("connected just now");
        }
        Err(ClientError::Unreachable {
            server: format!("any of {n} replicas"),
            reason: "no replica answers".into(),
        }
        .into())
    }

    fn retry(&mut self, error: &anyhow::Error) -> bool {
        if !is_transient(error) {
            return false;
        }
        // The next call goes to the next replica, over a new connection: the failed one may
        // have been to a replica that is gone.
        self.clients[self.current] = None;
        self.current = (self.current + 1) % self.configs.len();
        true
    }
}

impl Admins for Replicas {
    async fn client(&mut self) -> anyhow::Result<&mut AdminClient> {
        self.admins.client().await
    }

    fn retry(&mut self, error: &anyhow::Error) -> bool {
        self.admins.retry(error)
    }
}

/// Admin writes (ClusterGroups `{prefix}-N`), one after another through any replica, while a
/// fault strikes: each one answered must survive it.
struct Writer {
    stop: CancellationToken,
    acked: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<anyhow::Result<Vec<String>>>,
}

impl Writer {
    fn start(replicas: &Replicas, prefix: &str) -> Writer {
        let mut admins = ReplicaClients::new(&replicas.hubs);
        let stop = CancellationToken::new();
        let acked = Arc::new(AtomicUsize::new(0));
        let (until, count, prefix) = (stop.clone(), Arc::clone(&acked), prefix.to_owned());
        let task = tokio::spawn(async move {
            let mut names = Vec::new();
            while !until.is_cancelled() {
                let name = format!("{prefix}-{}", names.len());
                let documents = resource_documents("inline", &cluster_group(&name))?;
                // `call`'s loop, spelled out: a spawned task cannot hold its async closure.
                let start = Instant::now();
                loop {
                    let outcome = match admins.client().await {
                        Ok(admin) => admin
                            .apply(documents.clone(), false)
                            .await
                            .map_err(anyhow::Error::from),
                        Err(e) => Err(e),
                    };
                    match outcome {
                        Ok(_) => break,
                        Err(e) if start.elapsed() < DEADLINE && admins.retry(&e) => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => {
                            return Err(e.context(format!("applying ClusterGroup {name}")));
                        }
                    }
                }
                names.push(name);
                count.fetch_add(1, Ordering::SeqCst);
                // Pacing only: a write every 20 ms or so.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(names)
        });
        Writer { stop, acked, task }
    }

    /// Waits until `n` writes have been answered.
    async fn wait_acked(&mut self, n: usize) -> anyhow::Result<()> {
        let start = Instant::now();
        while self.acked.load(Ordering::SeqCst) < n {
            if self.task.is_finished() {
                let outcome = (&mut self.task).await.context("the writer panicked")?;
                bail!("the writer stopped: {:?}", outcome.err());
            }
            ensure!(start.elapsed() < DEADLINE, "{n} admin writes not answered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Waits until `n` more writes than now have been answered.
    async fn wait_acked_more(mut self, n: usize) -> anyhow::Result<Writer> {
        let now = self.acked.load(Ordering::SeqCst);
        self.wait_acked(now + n).await?;
        Ok(self)
    }

    /// Stops writing: the names of the ClusterGroups the hub acknowledged, or why a write
    /// failed.
    async fn stop(self) -> anyhow::Result<Vec<String>> {
        self.stop.cancel();
        self.task.await.context("the writer panicked")?
    }
}

/// When each spoke's session ended after [`Relinks::watch`], and when it was linked again.
struct Relinks {
    spokes: Vec<(String, Arc<Mutex<Relink>>)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Default)]
struct Relink {
    ended: Option<Instant>,
    linked: Option<Instant>,
}

impl Relinks {
    fn watch(fleet: &WavedFleet) -> Relinks {
        let mut spokes = Vec::new();
        let mut tasks = Vec::new();
        for (name, spoke) in &fleet.spokes {
            let mut connected = spoke.connected();
            connected.borrow_and_update();
            let relink = Arc::new(Mutex::new(Relink::default()));
            let record = Arc::clone(&relink);
            tasks.push(tokio::spawn(async move {
                // A session only ends or starts: the first change is its end.
                if connected.changed().await.is_err() {
                    return;
                }
                record.lock().unwrap_or_else(PoisonError::into_inner).ended = Some(Instant::now());
                if connected.wait_for(|c| *c).await.is_ok() {
                    record.lock().unwrap_or_else(PoisonError::into_inner).linked =
                        Some(Instant::now());
                }
            }));
            spokes.push((name.clone(), relink));
        }
        Relinks { spokes, tasks }
    }

    /// The spokes whose session has ended since.
    fn ended(&self) -> Vec<String> {
        self.spokes
            .iter()
            .filter(|(_, r)| {
                r.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .ended
                    .is_some()
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Waits until every spoke whose session has ended is linked again: when the last was.
    async fn wait_relinked(&self) -> anyhow::Result<Option<Instant>> {
        let start = Instant::now();
        loop {
            let mut last = None;
            let mut away = Vec::new();
            for (name, relink) in &self.spokes {
                let r = relink.lock().unwrap_or_else(PoisonError::into_inner);
                match (r.ended, r.linked) {
                    (Some(_), None) => away.push(name.clone()),
                    (Some(_), Some(at)) => last = last.max(Some(at)),
                    _ => {}
                }
            }
            if away.is_empty() {
                return Ok(last);
            }
            ensure!(
                start.elapsed() < DEADLINE,
                "{away:?} not linked again within {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Relinks {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Every name of `groups` is a ClusterGroup in `store`.
fn check_groups_in(store: &Store, groups: &[String], when: &str) -> anyhow::Result<()> {
    for name in groups {
        ensure!(
            store.resource(Kind::ClusterGroup, name)?.is_some(),
            "ClusterGroup {name}, acknowledged {when}, is lost"
        );
    }
    Ok(())
}

/// Starts `n` spokes, each given every replica's address, starting from a different one.
async fn start_fleet(work: &Path, n: usize, replicas: &mut Replicas) -> anyhow::Result<WavedFleet> {
    let token = call(replicas, async |admin: &mut AdminClient| {
        Ok(admin
            .create_token(WavedFleet::token_request(n))
            .await?
            .token)
    })
    .await?;
    let ca = replicas.hubs[0].ca_pem()?;
    let spread: Vec<Vec<String>> = (0..n).map(|i| replicas.urls_from(i)).collect();
    WavedFleet::start(work, n, |i| spread[i].clone(), &ca, &token).await
}

/// Applies YAML through any replica.
async fn apply(replicas: &mut Replicas, yaml: &str) -> anyhow::Result<()> {
    let documents = resource_documents("inline", yaml)?;
    call(replicas, async |admin: &mut AdminClient| {
        Ok(admin.apply(documents.clone(), false).await?)
    })
    .await?;
    Ok(())
}

/// The highest event id of the App.
async fn last_event_id(replicas: &mut Replicas) -> anyhow::Result<u64> {
    let events = call(replicas, async |admin: &mut AdminClient| {
        Ok(admin.events("hello", "", 0, 1_000_000).await?)
    })
    .await?;
    Ok(events.iter().map(|e| e.id).max().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_mid_rollout_hands_over_and_the_rollout_continues() -> anyhow::Result<()>
{
    let etcd = etcd::EtcdServer::start();
    let endpoints = vec![etcd.endpoint()];
    let tmp = tempfile::tempdir()?;
    // Shorter than the default, so that a killed leader is replaced sooner: a test of the
    // hand-over. Not much shorter: etcd writing to a busy disk can keep every renewal waiting
    // for seconds (at 3s, all three replicas once lost their leases together).
    let mut replicas = Replicas::start(tmp.path(), 3, &endpoints, "5s").await?;
    let outcome = leaders_killed(tmp.path(), &endpoints, &mut replicas).await;
    replicas.explain(outcome)?;
    replicas.stop().await
}

/// Kills the leader at a random moment of each of `GITFLEET_FAULT_KILLS` rollouts.
async fn leaders_killed(
    work: &Path,
    endpoints: &[String],
    replicas: &mut Replicas,
) -> anyhow::Result<()> {
    let n = env_usize("GITFLEET_FAULT_CLUSTERS", 10);
    let kills = env_usize("GITFLEET_FAULT_KILLS", 2);
    let fleet = start_fleet(work, n, replicas).await?;

    write_hello(&fleet.git, "v1")?;
    let v1 = fleet.git.commit("v1")?;
    apply(replicas, &fleet.resources()).await?;
    fleet.wait_complete(replicas, &v1).await?;

    let mut revisions = vec![v1];
    let mut kills_of = [0u32; 3];
    let mut rng = rand::rng();
    for k in 0..kills {
        let greeting = format!("v{}", k + 2);
        write_hello(&fleet.git, &greeting)?;
        let revision = fleet.git.commit(&greeting)?;
        // A random moment within the rollout (or before the leader has even seen the commit).
        let strike = Instant::now() + Duration::from_millis(rng.random_range(0..4000));
        while Instant::now() < strike {
            fleet.check_allowed(replicas, &revision).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let leader = replicas.wait_leader().await?;
        // An admin write the leader itself answers right before it dies.
        let group = format!("before-kill-{k}");
        replicas.hubs[leader]
            .admin()
            .await?
            .apply(resource_documents("inline", &cluster_group(&group))?, false)
            .await
            .context("the leader applies a ClusterGroup")?;
        // And writes through any replica, on the wire as it dies.
        let mut writer = Writer::start(replicas, &format!("round-{k}"));
        writer.wait_acked(2).await?;
        let before = fleet.check_allowed(replicas, &revision).await?;
        let last_event = last_event_id(replicas).await?;
        let relinks = Relinks::watch(&fleet);
        replicas.kill(leader).await?;
        kills_of[leader] += 1;
        let killed = Instant::now();
        eprintln!(
            "kill {}/{kills} of replica {leader}, the leader: rollout {:?}",
            k + 1,
            before.as_ref().map(|r| format!(
                "#{} {} wave {} {}",
                r.number, r.summary, r.current_wave, r.reason
            ))
        );

        let next = replicas.wait_leader().await?;
        let elected = killed.elapsed();
        ensure!(next != leader, "the killed replica {leader} still leads");
        // By now (the lease has run out since) the spokes linked to the dead replica have seen
        // their sessions end; they move to the others.
        let linked_to_dead = relinks.ended().len();
        let reconnected = relinks
            .wait_relinked()
            .await?
            .map_or(Duration::ZERO, |at| at.duration_since(killed));

        // The new leader takes the rollout up where it was: its next step, timed from the kill.
        let start = Instant::now();
        let moving = loop {
            let r = fleet.check_allowed(replicas, &revision).await?;
            let events = call(replicas, async |admin: &mut AdminClient| {
                Ok(admin.events("hello", "", last_event, 1000).await?)
            })
            .await?;
            if let Some(e) = events.iter().find(|e| e.rollout > 0) {
                break Some(format!("{} ({})", e.kind, e.message));
            }
            if r.is_some_and(|r| r.revision == revision && r.summary == "complete") {
                break None;
            }
            ensure!(
                start.elapsed() < DEADLINE,
                "the rollout did not move after the failover"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let moved_again = killed.elapsed();
        eprintln!(
            "  replica {next} led {:.1}s after the kill (lease {}); the {linked_to_dead} spokes it had were linked again after {:.1}s; {}",
            elected.as_secs_f64(),
            replicas.lease_ttl,
            reconnected.as_secs_f64(),
            match moving {
                Some(step) => format!(
                    "the rollout moved again after {:.1}s: {step}",
                    moved_again.as_secs_f64()
                ),
                None => "the rollout had completed before the kill".into(),
            }
        );

        // Nothing acknowledged is lost: what the spokes hold as acked and the ClusterGroups
        // answered (read first) are in etcd.
        let written = writer.wait_acked_more(2).await?.stop().await?;
        let acked = fleet.acked_by_spokes()?;
        let store = replicas.store(endpoints).await?;
        fleet.check_acked_in(&acked, &store).await?;
        check_groups_in(&store, &[group], "by the leader right before it was killed")?;
        check_groups_in(&store, &written, "while the leader was killed")?;
        drop(store);

        // The killed replica comes back as a follower, while the rollout goes on.
        replicas.restart(leader).await?;
        ensure!(
            !replicas.hubs[leader].leads().await?,
            "the restarted replica {leader} leads"
        );
        fleet.wait_complete(replicas, &revision).await?;
        revisions.push(revision);
    }
    ensure!(replicas.wait_leader().await.is_ok());
    fleet.check_rollouts(replicas, &revisions).await?;
    let acked = fleet.acked_by_spokes()?;
    let store = replicas.store(endpoints).await?;
    fleet.check_acked_in(&acked, &store).await?;
    drop(store);
    for (i, hub) in replicas.hubs.iter().enumerate() {
        ensure!(
            hub.starts() == 1 + kills_of[i],
            "replica {i} started {} times, killed {} times",
            hub.starts(),
            kills_of[i]
        );
    }

    fleet.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_etcd_member_of_three_killed_stops_nothing_in_a_rollout() -> anyhow::Result<()> {
    let mut etcd = etcd::EtcdCluster::start(3);
    let endpoints = etcd.endpoints();
    let tmp = tempfile::tempdir()?;
    // The default lease: etcd electing a new leader takes a second or two, which a lease of a
    // few seconds does not always outlive on a busy machine.
    let mut replicas = Replicas::start(tmp.path(), 2, &endpoints, "8s").await?;
    let outcome = member_killed(tmp.path(), &mut etcd, &mut replicas).await;
    replicas.explain(outcome)?;
    replicas.stop().await
}

/// Kills etcd's leading member in a rollout.
async fn member_killed(
    work: &Path,
    etcd: &mut etcd::EtcdCluster,
    replicas: &mut Replicas,
) -> anyhow::Result<()> {
    let n = env_usize("GITFLEET_FAULT_CLUSTERS", 10);
    let endpoints = etcd.endpoints();
    let fleet = start_fleet(work, n, replicas).await?;

    write_hello(&fleet.git, "v1")?;
    let v1 = fleet.git.commit("v1")?;
    apply(replicas, &fleet.resources()).await?;
    fleet.wait_complete(replicas, &v1).await?;

    write_hello(&fleet.git, "v2")?;
    let v2 = fleet.git.commit("v2")?;
    let start = Instant::now();
    let before = loop {
        if let Some(r) = fleet.check_allowed(replicas, &v2).await?
            && r.revision == v2
        {
            ensure!(
                r.summary != "complete",
                "the rollout completed before an etcd member could be killed in it"
            );
            break r;
        }
        ensure!(
            start.elapsed() < DEADLINE,
            "the rollout of v2 never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut writer = Writer::start(replicas, "during");
    writer.wait_acked(3).await?;
    // etcd's leader, when there is one: the member whose loss asks most of the others.
    let etcd_leader = etcd.leader();
    let member = etcd_leader.unwrap_or(0);
    etcd.kill(member);
    let killed = Instant::now();
    eprintln!(
        "killed etcd member {member} (etcd's leader: {}) in rollout #{} {} wave {}",
        etcd_leader.is_some(),
        before.number,
        before.summary,
        before.current_wave
    );
    let live: Vec<String> = endpoints
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != member)
        .map(|(_, e)| e.clone())
        .collect();

    // Admin writes go on being answered with the member down.
    let writer = writer.wait_acked_more(3).await?;
    loop {
        replicas.check_healthy().await?;
        let (done, r, targets) = fleet.poll_complete(replicas, &v2).await?;
        if done {
            break;
        }
        ensure!(
            killed.elapsed() < DEADLINE,
            "rollout of v2 did not complete with an etcd member down: {r:?}\n{}",
            describe(&targets)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "the rollout completed {:.1}s after the member was killed",
        killed.elapsed().as_secs_f64()
    );
    replicas.check_healthy().await?;
    let leader = replicas.wait_leader().await?;
    ensure!(leader == 0, "the leader changed to replica {leader}");
    fleet
        .check_rollouts(replicas, &[v1.clone(), v2.clone()])
        .await?;
    let written = writer.stop().await?;
    let acked = fleet.acked_by_spokes()?;
    let store = replicas.store(&live).await?;
    fleet.check_acked_in(&acked, &store).await?;
    check_groups_in(&store, &written, "while an etcd member was killed")?;
    drop(store);
    eprintln!(
        "{} admin writes answered while the member was killed, each kept",
        written.len()
    );

    fleet.shutdown().await;
    Ok(())
}
