//! The waved rollout the process fault tests drive, and what they check of it after each
//! fault. The hub runs in processes of its own (one, or several replicas on etcd), N real
//! spokes in the test's process on kubesim, and one App rolls out in three waves: 10 % canary,
//! 30 % early, the rest. The checks: no cluster given a revision before its wave (on every
//! poll), every acknowledged report still stored, and after the last commit one complete
//! rollout per commit with each cluster given each revision once, wave by wave.
//!
//! `tests/faults.rs` kills the one hub process; `tests/ha_faults.rs` the leading replica of
//! three, or an etcd member. Admin calls go through [`Admins`], which says which failures are
//! worth another try (an election under way, a replica gone).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use gitfleet_cli::client::{AdminClient, ClientError};
use gitfleet_hub::store::Store;
use gitfleet_kubesim::{Kubesim, KubesimConfig, KubesimHandle};
use gitfleet_proto::v1 as pb;
use gitfleet_spoke::outbox::Outbox;
use gitfleet_spoke::{KubeSource, SpokeConfig, SpokeHandle};
use tokio::time::Instant;

use crate::gitrepo::GitRepo;
use crate::harness::{describe, is_converged};

/// How long a rollout, a failover or a call retried through one may take.
pub const DEADLINE: Duration = Duration::from_secs(120);
const CONFIGMAP: &str = include_str!("../demo/hello/configmap.yaml");
const DEPLOYMENT: &str = include_str!("../demo/hello/deployment.yaml");

/// The hello App in three waves by the clusters' `ring` label.
pub const WAVED_APP: &str = "apiVersion: gitfleet.dev/v1
kind: App
metadata: { name: hello }
spec:
  repo: platform
  path: apps/hello
  namespace: hello
  targets:
    - clusterSelector: {}
  rollout:
    minHealthyFor: 1s
    waves:
      - name: canary
        clusterSelector: { matchLabels: { ring: canary } }
      - name: early
        clusterSelector: { matchLabels: { ring: early } }
        maxUnavailable: 50%
      - name: rest
        clusterSelector: {}
        maxUnavailable: 50%
";

/// Which wave cluster `index` of `n` belongs to: 10 % canary, 30 % early, the rest.
pub fn wave_of(index: usize, n: usize) -> usize {
    let canary = (n / 10).max(1);
    let early = (n * 3 / 10).max(1);
    if index < canary {
        0
    } else if index < canary + early {
        1
    } else {
        2
    }
}

/// The Repo `platform` at `git`'s `main`, polled every 200 ms.
pub fn repo_yaml(git: &GitRepo) -> String {
    format!(
        "apiVersion: gitfleet.dev/v1\nkind: Repo\nmetadata: {{ name: platform }}\nspec:\n  url: {}\n  ref: {{ branch: main }}\n  pollInterval: 200ms\n",
        git.url()
    )
}

/// The hello App (ConfigMap + Deployment) at `greeting`.
pub fn write_hello(git: &GitRepo, greeting: &str) -> anyhow::Result<()> {
    git.write(
        "apps/hello/configmap.yaml",
        CONFIGMAP.replace("gitfleet, v1", &format!("gitfleet, {greeting}")),
    )?;
    git.write("apps/hello/deployment.yaml", DEPLOYMENT)?;
    Ok(())
}

/// The greeting the hello ConfigMap holds in `cluster`.
pub fn greeting(kubesim: &KubesimHandle, cluster: &str) -> Option<String> {
    let cm = kubesim.get_object(cluster, "v1", "ConfigMap", Some("hello"), "hello-config")?;
    cm.pointer("/data/greeting")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

/// Where a test's admin calls go.
#[allow(async_fn_in_trait)]
pub trait Admins {
    /// A client of a hub that answers admin calls.
    async fn client(&mut self) -> anyhow::Result<&mut AdminClient>;
    /// Whether a call that failed with `error` is worth making again (then [`client`] gives
    /// the client to make it with).
    ///
    /// [`client`]: Admins::client
    fn retry(&mut self, error: &anyhow::Error) -> bool;
}

/// One hub: nothing is tried again.
impl Admins for AdminClient {
    async fn client(&mut self) -> anyhow::Result<&mut AdminClient> {
        Ok(self)
    }

    fn retry(&mut self, _error: &anyhow::Error) -> bool {
        false
    }
}

/// Whether `error` says the hub could not be reached or could not answer for now (no replica
/// leads yet, the one that led is gone), rather than that the call was wrong.
pub fn is_transient(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|e| match e.downcast_ref::<ClientError>() {
            Some(
                ClientError::Unreachable { .. }
                | ClientError::NoLeader { .. }
                | ClientError::Timeout { .. },
            ) => true,
            Some(ClientError::Rpc { code, .. }) => matches!(
                code,
                tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::Aborted
            ),
            // A hub killed under a call ends its connection without TLS's goodbye, which the
            // client words as a certificate problem.
            Some(ClientError::Tls { reason, .. }) => reason.contains("peer closed connection"),
            _ => false,
        })
}

/// Makes `f`'s calls through `admins`, again while they fail in a way `admins` retries, for
/// up to [`DEADLINE`].
pub async fn call<A: Admins, T>(
    admins: &mut A,
    mut f: impl AsyncFnMut(&mut AdminClient) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        let outcome = match admins.client().await {
            Ok(client) => f(client).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(value) => return Ok(value),
            Err(e) if start.elapsed() < DEADLINE && admins.retry(&e) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// N spokes on kubesim in this process, each in its wave, and the Git repository of the App.
pub struct WavedFleet {
    pub kubesim: KubesimHandle,
    pub spokes: BTreeMap<String, SpokeHandle>,
    /// Wave index of each cluster.
    pub waves: BTreeMap<String, usize>,
    pub git: GitRepo,
    work: PathBuf,
}

impl WavedFleet {
    /// The bootstrap token `n` spokes register with, each saying which ring it is in.
    pub fn token_request(n: usize) -> pb::CreateTokenRequest {
        pb::CreateTokenRequest {
            ttl_seconds: 3600,
            labels: Default::default(),
            max_uses: n as u32,
            description: "fault test".into(),
            allowed_label_keys: vec!["ring".into()],
            cluster_name: String::new(),
        }
    }

    /// Starts kubesim with `n` clusters `c000`… and a spoke for each, registering with `token`
    /// at the hub addresses `hub_urls(index)` gives it; the Git repository in `work/git`.
    pub async fn start(
        work: &Path,
        n: usize,
        hub_urls: impl Fn(usize) -> Vec<String>,
        ca_pem: &str,
        token: &str,
    ) -> anyhow::Result<WavedFleet> {
        let names: Vec<String> = (0..n).map(|i| format!("c{i:03}")).collect();
        let mut ks = KubesimConfig::new(names.clone());
        ks.ready_delay = Duration::from_millis(200);
        let kubesim = Kubesim::start(ks).await?;
        let mut spokes = BTreeMap::new();
        let mut waves = BTreeMap::new();
        for (i, name) in names.iter().enumerate() {
            let wave = wave_of(i, n);
            let mut config = SpokeConfig::new(
                String::new(),
                work.join("spokes").join(name),
                name.clone(),
                KubeSource::Config(Box::new(kubesim.kube_config(name))),
            );
            config.hub_urls = hub_urls(i);
            config.hub_ca_pem = Some(ca_pem.to_owned());
            config.bootstrap_token = Some(token.to_owned());
            match wave {
                0 => config.labels.insert("ring".into(), "canary".into()),
                1 => config.labels.insert("ring".into(), "early".into()),
                _ => None,
            };
            config.heartbeat_interval = Duration::from_secs(2);
            config.progress_timeout = Duration::from_secs(60);
            let spoke = gitfleet_spoke::start(config)
                .await
                .with_context(|| format!("starting the spoke of {name}"))?;
            spokes.insert(name.clone(), spoke);
            waves.insert(name.clone(), wave);
        }
        let git = GitRepo::init(&work.join("git"))?;
        Ok(WavedFleet {
            kubesim,
            spokes,
            waves,
            git,
            work: work.to_owned(),
        })
    }

    /// The Repo and the waved App, as one YAML stream.
    pub fn resources(&self) -> String {
        format!("{}---\n{WAVED_APP}", repo_yaml(&self.git))
    }

    /// One poll: the rollout of `revision` (if it has started) never gave it to a cluster of a
    /// wave it had not reached, and before it started nobody had it.
    pub async fn check_allowed<A: Admins>(
        &self,
        admins: &mut A,
        revision: &str,
    ) -> anyhow::Result<Option<pb::RolloutStatus>> {
        call(admins, async |admin: &mut AdminClient| {
            self.check_allowed_once(admin, revision).await
        })
        .await
    }

    async fn check_allowed_once(
        &self,
        admin: &mut AdminClient,
        revision: &str,
    ) -> anyhow::Result<Option<pb::RolloutStatus>> {
        // Targets first, rollout second: the rollout read is at least as new, so the wave it
        // names is never behind the one that handed out what the targets show.
        let targets = admin.status("hello", "").await?;
        let r = match admin.rollout("hello").await {
            Ok(r) => r,
            Err(e) if e.to_string().contains("no rollout yet") => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let given: Vec<&pb::TargetStatus> = targets
            .iter()
            .filter(|t| t.desired_revision == revision)
            .collect();
        if r.revision != revision {
            ensure!(
                given.is_empty(),
                "{revision} handed out before its rollout started (rollout #{} is at {}):\n{}",
                r.number,
                r.revision,
                describe(&targets)
            );
        } else if r.summary != "complete" {
            for t in given {
                let wave = self.waves[&t.cluster];
                ensure!(
                    wave as u32 <= r.current_wave,
                    "{} (wave {wave}) has {revision} while rollout #{} is in wave {}: {}\n{}",
                    t.cluster,
                    r.number,
                    r.current_wave,
                    r.reason,
                    describe(&targets)
                );
            }
        }
        Ok(Some(r))
    }

    /// One poll (checking what is allowed): whether the rollout of `revision` is complete,
    /// stored so, and every Target converged there; the Targets, for a failure message.
    pub async fn poll_complete<A: Admins>(
        &self,
        admins: &mut A,
        revision: &str,
    ) -> anyhow::Result<(bool, Option<pb::RolloutStatus>, Vec<pb::TargetStatus>)> {
        let n = self.spokes.len();
        call(admins, async |admin: &mut AdminClient| {
            let r = self.check_allowed_once(admin, revision).await?;
            let targets = admin.status("hello", "").await?;
            let Some(number) = r
                .as_ref()
                .filter(|r| r.revision == revision && r.summary == "complete")
                .map(|r| r.number)
            else {
                return Ok((false, r, targets));
            };
            if targets.len() != n || !targets.iter().all(|t| is_converged(t, revision)) {
                return Ok((false, r, targets));
            }
            // The status is decided as of the call, and the driver stores it a moment later: a
            // rollout shown complete but not yet stored so would be superseded by the next
            // commit if the hub died in between.
            let history = admin.rollout_history("hello").await?;
            let stored = history
                .iter()
                .any(|h| h.number == number && h.outcome == "complete");
            Ok((stored, r, targets))
        })
        .await
    }

    /// Polls (checking what is allowed on every poll) until the rollout of `revision` is
    /// complete and every Target converged there.
    pub async fn wait_complete<A: Admins>(
        &self,
        admins: &mut A,
        revision: &str,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let (done, r, targets) = self.poll_complete(admins, revision).await?;
            if done {
                return Ok(());
            }
            if start.elapsed() > DEADLINE {
                bail!(
                    "rollout of {revision} did not complete: {r:?}\n{}",
                    describe(&targets)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The seq of the last report each spoke has seen acknowledged, from its outbox on disk
    /// (a spoke persists an ack before it reads on).
    pub fn acked_by_spokes(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let mut acked = BTreeMap::new();
        for name in self.spokes.keys() {
            let path = self
                .work
                .join("spokes")
                .join(name)
                .join("state/outbox.json");
            let outbox: Option<Outbox> = gitfleet_spoke::store::read_json(&path)?;
            acked.insert(name.clone(), outbox.map_or(0, |o| o.last_acked));
        }
        Ok(acked)
    }

    /// Every report the spokes had seen acknowledged (`acked`, read before `store` was opened)
    /// is in `store`.
    pub async fn check_acked_in(
        &self,
        acked: &BTreeMap<String, u64>,
        store: &Store,
    ) -> anyhow::Result<()> {
        for (name, &spoke_acked) in acked {
            let hub_acked = store.acked_seq(name)?;
            ensure!(
                hub_acked >= spoke_acked,
                "{name}: the spoke was acked up to seq {spoke_acked}, the hub's store holds only {hub_acked}: an acked report was lost"
            );
            if spoke_acked > 0 {
                ensure!(
                    store.report(name, "hello").await?.is_some(),
                    "{name}: acked reports, but no status stored"
                );
            }
        }
        Ok(())
    }

    /// After the last commit: one complete rollout per commit of `revisions`, numbered in
    /// order (none started over); in each, wave by wave, each cluster given the revision
    /// once; every cluster runs the last one.
    pub async fn check_rollouts<A: Admins>(
        &self,
        admins: &mut A,
        revisions: &[String],
    ) -> anyhow::Result<()> {
        let n = self.spokes.len();
        let expected: Vec<(u64, String, String)> = revisions
            .iter()
            .enumerate()
            .map(|(i, r)| (i as u64 + 1, r.clone(), "complete".to_owned()))
            .collect();
        // The rollout status is decided as of the call, the history is what was stored: the
        // last rollout may show complete a moment before the driver has stored it so.
        let start = Instant::now();
        loop {
            let history = call(admins, async |admin: &mut AdminClient| {
                Ok(admin.rollout_history("hello").await?)
            })
            .await?;
            let seen: Vec<(u64, String, String)> = history
                .into_iter()
                .map(|h| (h.number, h.revision, h.outcome))
                .collect();
            if seen == expected {
                break;
            }
            let still_storing = seen.len() == expected.len()
                && seen
                    .last()
                    .is_some_and(|(_, _, outcome)| outcome == "progressing");
            ensure!(
                still_storing && start.elapsed() < DEADLINE,
                "history {seen:?}, expected {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let events = call(admins, async |admin: &mut AdminClient| {
            Ok(admin.events("hello", "", 0, 1_000_000).await?)
        })
        .await?;
        for number in 1..=revisions.len() as u64 {
            let batches = updated_batches(&events, number)?;
            let mut given = BTreeSet::new();
            let mut unnamed = 0;
            let mut last_wave = 0;
            for batch in &batches {
                let named = &batch.named;
                let wave = self.waves[&named[0]];
                ensure!(
                    named.iter().all(|c| self.waves[c] == wave),
                    "rollout #{number}: one wave per batch: {named:?}"
                );
                ensure!(
                    wave >= last_wave,
                    "rollout #{number}: waves in order: {named:?} after wave {last_wave}"
                );
                if wave > 0 {
                    let previous_done = events.iter().any(|e| {
                        e.rollout == number
                            && e.kind == "WaveCompleted"
                            && e.id < batch.id
                            && e.message.starts_with(&format!("wave {}/", wave))
                    });
                    ensure!(
                        previous_done,
                        "rollout #{number}: wave {} given {named:?} before wave {wave} was done",
                        wave + 1
                    );
                }
                last_wave = wave;
                for c in named {
                    ensure!(
                        given.insert(c.clone()),
                        "rollout #{number}: {c} given twice"
                    );
                }
                unnamed += batch.more;
            }
            ensure!(
                given.len() + unnamed == n,
                "rollout #{number}: {} clusters given the revision, expected each of {n} once",
                given.len() + unnamed
            );
        }
        let last = revisions.last().context("at least one revision")?;
        let expected = format!("Hello from gitfleet, v{}", revisions.len());
        for name in self.spokes.keys() {
            ensure!(
                greeting(&self.kubesim, name).as_deref() == Some(expected.as_str()),
                "{name} does not run {last}"
            );
        }
        Ok(())
    }

    /// Stops every spoke and kubesim.
    pub async fn shutdown(mut self) {
        for (_, spoke) in std::mem::take(&mut self.spokes) {
            spoke.shutdown().await;
        }
        self.kubesim.shutdown().await;
    }
}

/// One `TargetsUpdated` event: its id, the clusters it names, and how many more it counts
/// without naming them (long lists end "c020, c021 and 12 more").
pub struct Batch {
    pub id: u64,
    pub named: Vec<String>,
    pub more: usize,
}

/// The `TargetsUpdated` events of rollout `number`, in order.
pub fn updated_batches(events: &[pb::Event], number: u64) -> anyhow::Result<Vec<Batch>> {
    let mut batches = Vec::new();
    for e in events
        .iter()
        .filter(|e| e.rollout == number && e.kind == "TargetsUpdated")
    {
        // "wave 2/3 early: c001, c002 given abcdef1"
        let (_, rest) = e.message.split_once(": ").unwrap_or_default();
        let list = rest.rsplit_once(" given ").map_or(rest, |(l, _)| l);
        let mut named = Vec::new();
        let mut more = 0;
        for item in list.split(", ") {
            match item.split_once(" and ") {
                Some((name, tail)) => {
                    named.push(name.to_owned());
                    more += tail
                        .trim_end_matches(" more")
                        .parse::<usize>()
                        .with_context(|| format!("unexpected list in {:?}", e.message))?;
                }
                None => named.push(item.to_owned()),
            }
        }
        batches.push(Batch {
            id: e.id,
            named,
            more,
        });
    }
    Ok(batches)
}
