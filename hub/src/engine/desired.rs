//! Desired state: computed from resources, revisions, rollouts (and the holds that suspend
//! self-heal, decided with them) and clusters, stored (flushed)
//! and published to the spokes' live streams at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tracing::debug;

use super::repos::ChangeOrigin;
use super::rollouts::Scope;
use super::{Engine, EngineError, State, WriteGuard, placeable, rollouts, split_resources};
use crate::fleet::desired::{attach_health_rules, suspend_self_heal};
use crate::fleet::hold::SelfHealHolds;
use crate::fleet::{AppRevision, ClusterLabels, DesiredTarget, SharedFleet, compute_shared_fleet};
use crate::model::{ClusterDesired, ClusterRecord, RepoCredential};
use crate::resources::{App, ClusterGroup, HealthRule, Project, Repo, RepoSpec};

/// What a cluster's live link receives: its desired state and everything a message carrying
/// it needs, so that the link only encodes and writes. In memory only: the store keeps the
/// desired state, never the credentials or the traces.
#[derive(Debug, Default)]
pub struct Published {
    pub desired: Arc<ClusterDesired>,
    /// By App: the change that moved it to its latest commit, when this hub saw it (lost on
    /// restart); one map shared by every cluster's (see [`Published::origin`]).
    pub origins: Arc<HashMap<String, ChangeOrigin>>,
    /// The credentials (by repository URL) for the repositories of the Targets, and no others:
    /// a spoke only learns credentials of repositories it deploys from.
    pub credentials: Vec<(String, RepoCredential)>,
}

impl Published {
    /// The change that moved `app` to `commit`, if this hub saw it.
    pub fn origin(&self, app: &str, commit: &str) -> Option<&ChangeOrigin> {
        self.origins.get(app).filter(|o| o.commit == commit)
    }

    /// The credentials for the repositories of `targets` (a delta's upserts).
    pub fn credentials_for<'a>(
        &self,
        targets: impl IntoIterator<Item = &'a crate::fleet::DesiredTarget>,
    ) -> Vec<(String, RepoCredential)> {
        let mut out: Vec<(String, RepoCredential)> = Vec::new();
        for t in targets {
            let chart = t.chart.as_ref().map(|c| c.repository.as_str());
            for wanted in std::iter::once(t.repo_url.as_str()).chain(chart) {
                if !out.iter().any(|(url, _)| url == wanted)
                    && let Some((url, c)) = self.credentials.iter().find(|(url, _)| url == wanted)
                {
                    out.push((url.clone(), c.clone()));
                }
            }
        }
        out
    }
}

/// The credential each stored Repo's spokes fetch with, by Repo name, and the credential of
/// each chart repository Apps name, by [`chart_key`].
pub(super) type RepoCredentials = BTreeMap<String, RepoCredential>;

/// Where a chart repository's credential is in [`RepoCredentials`] (no Repo name holds a NUL).
fn chart_key(repository: &str) -> String {
    format!("chart\0{repository}")
}

/// Everything desired state is computed from: when a recompute finds these as they were last
/// time, the desired state it would compute is the one every cluster already has (see
/// [`FleetInputs::changes`]).
pub(super) struct FleetInputs {
    apps: Vec<App>,
    repos: BTreeMap<String, Repo>,
    groups: BTreeMap<String, ClusterGroup>,
    projects: BTreeMap<String, Project>,
    health_rules: BTreeMap<String, HealthRule>,
    revisions: BTreeMap<String, AppRevision>,
    rollouts: BTreeMap<String, Assigned>,
    controls: BTreeMap<String, crate::model::AppControl>,
    /// By App: where a freeze or window that holds it suspends its self-heal (decided with the
    /// rollouts, from the holds).
    self_heal: BTreeMap<String, SelfHealHolds>,
    /// See [`Store::clusters_snapshot`].
    placement_version: u64,
}

/// A rollout, compared by what it assigns: its progress (a Target turning healthy, a soak
/// passing) changes no desired state.
struct Assigned(Arc<crate::fleet::rollout::RolloutState>);

/// What a recompute computes again (see [`FleetInputs::changes`]).
struct Changes {
    /// The Apps whose Targets may differ, on every cluster.
    apps: HashSet<String>,
    /// The clusters whose place changed (new, relabelled, revoked, approved): every App's
    /// Targets on them.
    clusters: HashSet<String>,
}

impl FleetInputs {
    /// What may differ between the desired state computed from `self` and the one computed
    /// from `new`: each App's Targets on a cluster are a function of its own inputs, of what
    /// the Apps share and of that cluster's place. `None` when something the Apps share
    /// changed (Repos, groups, Projects, health rules), or the clusters whose place changed
    /// are not known (`placed_since` answers `None`), and every App's Targets must be
    /// computed again.
    fn changes(
        &self,
        new: &FleetInputs,
        placed_since: impl FnOnce(u64) -> Option<HashSet<String>>,
    ) -> Option<Changes> {
        if self.repos != new.repos
            || self.groups != new.groups
            || self.projects != new.projects
            || self.health_rules != new.health_rules
        {
            return None;
        }
        let clusters = if self.placement_version == new.placement_version {
            HashSet::new()
        } else {
            placed_since(self.placement_version)?
        };
        fn by_name(apps: &[App]) -> HashMap<&str, &App> {
            apps.iter().map(|a| (a.metadata.name.as_str(), a)).collect()
        }
        let (old_apps, new_apps) = (by_name(&self.apps), by_name(&new.apps));
        let apps = old_apps
            .keys()
            .chain(new_apps.keys())
            .copied()
            .filter(|&name| {
                old_apps.get(name) != new_apps.get(name)
                    || self.revisions.get(name) != new.revisions.get(name)
                    || !Assigned::alike(self.rollouts.get(name), new.rollouts.get(name), &clusters)
                    || self.controls.get(name) != new.controls.get(name)
                    || self.self_heal.get(name) != new.self_heal.get(name)
            })
            .map(str::to_owned)
            .collect();
        Some(Changes { apps, clusters })
    }
}

impl Assigned {
    /// Whether two rollouts assign the same revisions to every cluster but `placed` (whose
    /// Targets are computed again whatever their rollouts say).
    fn alike(a: Option<&Assigned>, b: Option<&Assigned>, placed: &HashSet<String>) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) if placed.is_empty() => a == b,
            (Some(a), Some(b)) => {
                Arc::ptr_eq(&a.0, &b.0)
                    || a.0
                        .assigned
                        .iter()
                        .filter(|(cluster, _)| !placed.contains(*cluster))
                        .eq(b
                            .0
                            .assigned
                            .iter()
                            .filter(|(cluster, _)| !placed.contains(*cluster)))
            }
            _ => false,
        }
    }
}

impl PartialEq for Assigned {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.assigned == other.0.assigned
    }
}

impl Engine {
    // --- desired state -----------------------------------------------------------------------

    /// Recomputes every cluster's desired state, deciding every App's rollout; stores and
    /// publishes what changed.
    pub async fn recompute(&self) -> Result<(), EngineError> {
        let guard = self.write.lock().await;
        self.recompute_locked(&guard).await
    }

    /// [`Engine::recompute`] under the write lock.
    pub(super) async fn recompute_locked(&self, guard: &WriteGuard<'_>) -> Result<(), EngineError> {
        self.recompute_scoped(guard, Scope::All).await
    }

    /// Recomputes desired state, deciding the rollouts of the Apps in `scope` (the others keep
    /// the rollout last decided).
    pub(super) async fn recompute_scoped(
        &self,
        _write: &WriteGuard<'_>,
        scope: Scope<'_>,
    ) -> Result<(), EngineError> {
        let t0 = Instant::now();
        let super::Split {
            apps,
            repos,
            groups,
            projects,
            health_rules,
        } = split_resources(self.store.resources()?);
        let revisions = self.store.revisions()?;
        let (clusters, placement_version) = self.store.clusters_snapshot();
        let labels = placeable(clusters.values());
        let decided = self.decide_rollouts(
            &apps,
            &revisions,
            super::rollouts::Placement {
                labels: &labels,
                version: placement_version,
            },
            &groups,
            &projects,
            scope,
        )?;
        let t1 = t0.elapsed();
        let inputs = FleetInputs {
            apps,
            repos,
            groups,
            projects,
            health_rules,
            revisions,
            rollouts: decided
                .rollouts
                .into_iter()
                .map(|(app, state)| (app, Assigned(state)))
                .collect(),
            controls: decided.controls,
            self_heal: decided.self_heal,
            placement_version,
        };
        let mut changes = self
            .computed_from()
            .as_ref()
            .and_then(|previous| previous.changes(&inputs, |v| self.store.placed_since(v)));
        if changes
            .as_ref()
            .is_some_and(|c| c.apps.is_empty() && c.clusters.is_empty())
        {
            // Desired state is a function of these: nothing to compute (the rollout driver
            // decides on every report of a rollout; most of them move nothing). They are kept
            // in place of the last ones, equal to them for desired state: a rollout that moved
            // on without assigning anything (a Target turned healthy, the rollout completed) is
            // a new allocation, and kept stale, every later recompute compared its 10,000
            // assigned revisions again instead of two pointers.
            *self.computed_from() = Some(inputs);
            return Ok(());
        }
        let t2 = t0.elapsed();
        // A recompute that fails leaves none, and the next computes every App.
        *self.computed_from() = None;
        // The clusters to look at: only those placed anew when no App changed (a cluster
        // registering into a fleet of 10,000 looks at itself, not at the 10,000), in the
        // clusters' order; else every one.
        let visit: Vec<&ClusterRecord> = match &changes {
            Some(c) if c.apps.is_empty() => {
                let mut placed: Vec<&ClusterRecord> =
                    c.clusters.iter().filter_map(|n| clusters.get(n)).collect();
                placed.sort_by(|a, b| a.name.cmp(&b.name));
                placed
            }
            _ => clusters.values().collect(),
        };
        // Each one's current desired state: looked up once under the lock, without copying a
        // name (this runs on every registration).
        let current: Vec<Option<Arc<ClusterDesired>>> = {
            let state = self.lock();
            visit
                .iter()
                .map(|c| {
                    state
                        .desired
                        .get(&c.name)
                        .map(|tx| Arc::clone(&tx.borrow().desired))
                })
                .collect()
        };
        if let Some(c) = &changes
            && visit.iter().zip(&current).any(|(cluster, d)| {
                d.as_ref().is_none_or(|d| d.generation == 0) && !c.clusters.contains(&cluster.name)
            })
        {
            // A cluster without desired state yet has no Targets of the unchanged Apps to keep
            // (one placed anew gets every App's computed; see below).
            changes = None;
        }
        let assigned: BTreeMap<String, &BTreeMap<String, Arc<AppRevision>>> = inputs
            .rollouts
            .iter()
            .map(|(app, state)| (app.clone(), &state.0.assigned))
            .collect();
        // The Targets of `apps` on `on` (cluster → App → Target).
        let compute = |apps: &[App], on: &[ClusterLabels<'_>]| {
            let mut fleet = compute_shared_fleet(
                apps,
                &inputs.repos,
                &inputs.revisions,
                &assigned,
                on,
                &inputs.groups,
                &inputs.projects,
            );
            rollouts::apply_controls(&mut fleet, &inputs.controls);
            suspend_self_heal(&mut fleet, &inputs.self_heal);
            attach_health_rules(&mut fleet, apps, &inputs.projects, &inputs.health_rules);
            fleet
        };
        // Only the changed Apps' Targets, and every App's on the clusters placed anew, when
        // nothing the Apps share changed: a commit to one App computes that App's Targets, not
        // the fleet's, and a cluster that joins computes its own.
        let fleet = match &changes {
            Some(changed) => {
                let mut fleet = if changed.apps.is_empty() {
                    BTreeMap::new()
                } else {
                    let subset: Vec<App> = inputs
                        .apps
                        .iter()
                        .filter(|a| changed.apps.contains(&a.metadata.name))
                        .cloned()
                        .collect();
                    compute(&subset, &labels)
                };
                if !changed.clusters.is_empty() {
                    let placed = placeable(changed.clusters.iter().filter_map(|n| clusters.get(n)));
                    fleet.extend(compute(&inputs.apps, &placed));
                }
                fleet
            }
            None => compute(&inputs.apps, &labels),
        };
        // One shared copy of the Targets that are alike on many clusters, and alike with the
        // ones computed before (the computation shares those alike within it).
        let fleet: SharedFleet = {
            let mut interner = self.interner();
            // By the computed Target's address (every computed Target is alive until its last
            // cluster is visited, so no address is reused while it counts): its shared copy.
            let mut shared: HashMap<*const DesiredTarget, Arc<DesiredTarget>> = HashMap::new();
            fleet
                .into_iter()
                .map(|(cluster, targets)| {
                    let targets = targets
                        .into_iter()
                        .map(|(app, t)| {
                            let t = shared
                                .entry(Arc::as_ptr(&t))
                                .or_insert_with(|| interner.share(t))
                                .clone();
                            (app, t)
                        })
                        .collect();
                    (cluster, targets)
                })
                .collect()
        };
        // Debug builds (every test) check each incremental result against the whole fleet's.
        let whole: Option<SharedFleet> = match &changes {
            Some(_) if cfg!(debug_assertions) => Some(compute(&inputs.apps, &labels)),
            _ => None,
        };
        let none = BTreeMap::new();
        if let (Some(whole), Some(c)) = (&whole, &changes)
            && c.apps.is_empty()
        {
            // The clusters not looked at have what the whole fleet's computation gives them.
            let state = self.lock();
            for cluster in clusters.values().filter(|r| !c.clusters.contains(&r.name)) {
                let expected = whole.get(&cluster.name).unwrap_or(&none);
                let held = state
                    .desired
                    .get(&cluster.name)
                    .map(|tx| Arc::clone(&tx.borrow().desired));
                debug_assert!(
                    held.is_some_and(|d| d.has_targets(expected)),
                    "cluster {}: left as it was when {:?} were placed anew, but the whole \
                     fleet's desired state differs",
                    cluster.name,
                    c.clusters
                );
            }
        }

        let t3 = t0.elapsed();
        self.desired_visits
            .fetch_add(visit.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let mut changed = Vec::new();
        for (cluster, old) in visit.iter().zip(current) {
            // A revoked cluster keeps no Targets.
            let computed = fleet.get(&cluster.name).unwrap_or(&none);
            let old = old.unwrap_or_default();
            let new_targets = match &changes {
                Some(c) if !c.clusters.contains(&cluster.name) => {
                    let changed = &c.apps;
                    // The other Apps' Targets are the ones the cluster has (every cluster has
                    // desired state here, see above).
                    let unchanged = changed
                        .iter()
                        .all(|app| computed.get(app) == old.targets.get(app).map(|v| &v.target));
                    let targets: Option<BTreeMap<String, Arc<DesiredTarget>>> =
                        (!unchanged).then(|| {
                            old.targets
                                .iter()
                                .filter(|(app, _)| !changed.contains(*app))
                                .map(|(app, v)| (app.clone(), Arc::clone(&v.target)))
                                .chain(computed.iter().map(|(app, t)| (app.clone(), Arc::clone(t))))
                                .collect()
                        });
                    if let Some(whole) = &whole {
                        let expected = whole.get(&cluster.name).unwrap_or(&none);
                        debug_assert!(
                            match &targets {
                                Some(targets) => targets == expected,
                                None => old.has_targets(expected),
                            },
                            "cluster {}: the incremental desired state of {changed:?} differs \
                             from the whole fleet's",
                            cluster.name
                        );
                    }
                    match targets {
                        Some(targets) => targets,
                        None => continue,
                    }
                }
                _ => {
                    // Every App's Targets were computed for this cluster.
                    if let Some(whole) = &whole {
                        debug_assert!(
                            computed == whole.get(&cluster.name).unwrap_or(&none),
                            "cluster {}: its desired state placed anew differs from the whole \
                             fleet's",
                            cluster.name
                        );
                    }
                    if old.generation != 0 && old.has_targets(computed) {
                        continue;
                    }
                    computed.clone()
                }
            };
            let desired = old.next(new_targets);
            for gone in old
                .targets
                .keys()
                .filter(|a| !desired.targets.contains_key(*a))
            {
                self.store.delete_report(&cluster.name, gone)?;
            }
            self.store.put_desired(&cluster.name, &old, &desired)?;
            changed.push((cluster.name.clone(), desired));
        }
        let credentials: Arc<RepoCredentials> = Arc::new(
            self.spoke_credentials(
                inputs
                    .repos
                    .values()
                    .map(|r| (r.metadata.name.as_str(), &r.spec)),
                &inputs.apps,
            ),
        );
        let t4 = t0.elapsed();
        if !changed.is_empty() {
            self.store.flush().await?;
        }
        let t5 = t0.elapsed();
        let mut state = self.lock();
        if state.credentials.as_ref() != Some(&credentials) {
            // A Repo's credential changed (or this is the first recompute): every cluster's
            // link must send the new one from now on, whether its Targets changed or not.
            let clusters: Vec<String> = state.desired.keys().cloned().collect();
            for cluster in clusters {
                if changed.iter().any(|(c, _)| *c == cluster) {
                    continue;
                }
                let Some(tx) = state.desired.get(&cluster) else {
                    continue;
                };
                let current = Arc::clone(&tx.borrow().desired);
                let published = state.publishable(current, &credentials);
                if let Some(tx) = state.desired.get(&cluster) {
                    tx.send_replace(Arc::new(published));
                }
            }
            state.credentials = Some(Arc::clone(&credentials));
        }
        let published_to: Vec<String> = changed.iter().map(|(c, _)| c.clone()).collect();
        for (cluster, desired) in changed {
            tracing::trace!(%cluster, generation = desired.generation, targets = desired.targets.len(), "desired state changed");
            let published = Arc::new(state.publishable(Arc::new(desired), &credentials));
            match state.desired.get(&cluster) {
                Some(tx) => {
                    tx.send_replace(published);
                }
                None => {
                    state.desired.insert(cluster, watch::channel(published).0);
                }
            }
        }
        drop(state);
        for cluster in &published_to {
            self.cluster_changed(cluster);
        }
        *self.computed_from() = Some(inputs);
        // Where a recompute's time goes, cumulative from its start (docs/benchmarks.md).
        debug!(
            decided_ms = t1.as_millis() as u64,
            compared_ms = t2.as_millis() as u64,
            computed_ms = t3.as_millis() as u64,
            stored_ms = t4.as_millis() as u64,
            flushed_ms = t5.as_millis() as u64,
            published_ms = t0.elapsed().as_millis() as u64,
            clusters = published_to.len(),
            "desired state recomputed"
        );
        Ok(())
    }

    /// The credentials spokes fetch with: each Repo's by its name, and the credential of each
    /// chart repository an App names by [`chart_key`].
    pub(super) fn spoke_credentials<'a>(
        &self,
        repos: impl Iterator<Item = (&'a str, &'a RepoSpec)>,
        apps: &[App],
    ) -> RepoCredentials {
        let mut credentials: RepoCredentials = repos
            .filter_map(|(name, spec)| {
                let c = self.git_credential(name, spec).ok()??;
                Some((name.to_owned(), c))
            })
            .collect();
        for chart in apps.iter().filter_map(super::charts::chart_of) {
            let key = chart_key(&chart.repository);
            if credentials.contains_key(&key) {
                continue;
            }
            if let Some(c) =
                crate::charts::credential_for(&self.config.repo_credentials, &chart.repository)
            {
                credentials.insert(key, c);
            }
        }
        credentials
    }

    /// The shared copies of Targets (see [`crate::model::TargetInterner`]).
    pub(super) fn interner(&self) -> std::sync::MutexGuard<'_, crate::model::TargetInterner> {
        self.interner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many clusters' desired state the recomputes since the hub started looked at: a
    /// cluster that joins or is relabelled is looked at alone, a commit's App on every cluster.
    #[doc(hidden)]
    pub fn desired_clusters_visited(&self) -> u64 {
        self.desired_visits
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The inputs of the desired state last computed and published in full.
    pub(super) fn computed_from(&self) -> std::sync::MutexGuard<'_, Option<FleetInputs>> {
        self.computed_from
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every cluster's current desired state.
    pub(super) fn desired_snapshot(&self) -> HashMap<String, Arc<ClusterDesired>> {
        let state = self.lock();
        state
            .desired
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(&v.borrow().desired)))
            .collect()
    }
}

impl State {
    /// `desired` with the origins of the changes and its repositories' credentials.
    pub(super) fn publishable(
        &self,
        desired: Arc<ClusterDesired>,
        credentials: &RepoCredentials,
    ) -> Published {
        let mut by_url: Vec<(String, RepoCredential)> = Vec::new();
        for t in desired.targets.values() {
            if !by_url.iter().any(|(url, _)| *url == t.target.repo_url)
                && let Some(c) = credentials.get(&t.target.repo)
            {
                by_url.push((t.target.repo_url.clone(), c.clone()));
            }
            // The chart's repository: its spokes download the archive with the credential
            // the hub resolved it with.
            if let Some(chart) = &t.target.chart
                && !by_url.iter().any(|(url, _)| *url == chart.repository)
                && let Some(c) = credentials.get(&chart_key(&chart.repository))
            {
                by_url.push((chart.repository.clone(), c.clone()));
            }
        }
        Published {
            desired,
            origins: Arc::clone(&self.traces),
            credentials: by_url,
        }
    }
}
