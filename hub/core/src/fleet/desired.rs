//! Desired state: what each cluster should run, and what changed between two versions of it.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::hold::SelfHealHolds;
use super::placement::ClusterLabels;
use super::project::{self, TargetProject};
use crate::charts::ResolvedChart;
use crate::health_rules::{MAX_RULES, TargetHealthRule};
use crate::resources::{
    App, ClusterGroup, Customization, HealthRule, Project, RenderSpec, Repo, SyncPolicySpec,
};

#[cfg(test)]
mod tests;

/// One App on one cluster, fully resolved: everything a spoke needs to fetch, render and apply.
/// This is the domain form of the wire `TargetSpec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredTarget {
    pub app: String,
    pub repo: String,
    pub repo_url: String,
    pub commit: String,
    /// The ref the hub followed, e.g. `refs/heads/main`.
    pub git_ref: String,
    pub path: String,
    pub extra_paths: Vec<String>,
    pub namespace: String,
    /// Render options after the cluster's customization.
    pub render: RenderSpec,
    pub sync_policy: SyncPolicySpec,
    /// Bumped by `gitfleet app sync`: a changed Target makes the spoke sync it again although
    /// nothing else changed. Never sent on the wire: the new spec generation is the signal.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sync_request: u64,
    /// What the spoke enforces on the render's objects; absent for the `default` Project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<TargetProject>,
    /// What suspends the Target's self-heal (`freeze campaign`), when a freeze or window that
    /// holds it says so and the App self-heals: `sync_policy.self_heal` is then false (see
    /// [`suspend_self_heal`]). For status; never sent on the wire (the policy is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_heal_suspended: Option<String>,
    /// The Repo's `spec.verify.trustedKeys`: the spoke applies only a commit (or tag) signed by
    /// one of them. Empty: the Repo does not ask for signatures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_keys: Vec<String>,
    /// The custom health rules the spoke judges the Target's objects by, first match wins: the
    /// Project's, then the hub-wide `HealthRule`s (see [`attach_health_rules`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_rules: Vec<TargetHealthRule>,
    /// The exact chart (version, digest, URL) the hub resolved `render.helm.chart` to, from
    /// the Target's revision; absent for an App without a chart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ResolvedChart>,
}

#[cfg(any(test, feature = "testing"))]
impl DesiredTarget {
    /// A Target of `app` at `commit` from a plain repository, with every option at its
    /// default: for tests.
    pub fn for_tests(app: &str, commit: &str) -> Self {
        DesiredTarget {
            app: app.into(),
            repo: "r".into(),
            repo_url: "file:///r".into(),
            commit: commit.into(),
            git_ref: "refs/heads/main".into(),
            path: app.into(),
            extra_paths: vec![],
            namespace: "default".into(),
            render: RenderSpec::default(),
            sync_policy: SyncPolicySpec::default(),
            sync_request: 0,
            project: None,
            self_heal_suspended: None,
            health_rules: Vec::new(),
            trusted_keys: vec![],
            chart: None,
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The revision each App should be at, with the ref it was resolved from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AppRevision {
    pub commit: String,
    pub git_ref: String,
    /// The W3C trace context of the change that moved the App here (empty when none was
    /// recorded), so that whichever hub replica dispatches the commit joins its trace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trace: BTreeMap<String, String>,
    /// When the fetch that found the commit started (Unix milliseconds; 0: unknown): dispatch
    /// latency is timed from there, by any replica.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fetched_at_unix_ms: u64,
    /// For an App with `spec.render.helm.chart`: the exact chart the hub resolved it to. Part
    /// of the revision, so that a new chart version (or digest) is a new revision that rolls
    /// out like a commit, and every cluster given this revision gets this chart.
    /// Boxed: most Apps have none, and revisions are in every rollout record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<Box<ResolvedChart>>,
}

/// Two revisions are the same when they are the same commit of the same ref and the same
/// chart: where a change came from says nothing about what runs.
impl PartialEq for AppRevision {
    fn eq(&self, other: &Self) -> bool {
        self.commit == other.commit && self.git_ref == other.git_ref && self.chart == other.chart
    }
}

impl Eq for AppRevision {}

/// What changed between two desired states of one cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delta {
    pub upserts: Vec<DesiredTarget>,
    pub removals: Vec<String>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }
}

/// Builds the Target of `app` for a cluster, applying its customization (if any).
pub fn desired_target(
    app: &App,
    repo: &Repo,
    revision: &AppRevision,
    customization: Option<&Customization>,
) -> DesiredTarget {
    let mut render = app.spec.render.clone();
    let mut namespace = app.spec.namespace.clone();
    if let Some(c) = customization {
        if c.kustomize.is_some() {
            render.kustomize = c.kustomize.clone();
        }
        if let Some(helm) = &c.helm {
            // The chart is the App's: a customization changes values, not the chart.
            let chart = render.helm.as_ref().and_then(|h| h.chart.clone());
            render.helm = Some(crate::resources::HelmOptions {
                chart,
                ..helm.clone()
            });
        }
        if let Some(ns) = &c.namespace {
            namespace = ns.clone();
        }
    }
    DesiredTarget {
        app: app.metadata.name.clone(),
        repo: repo.metadata.name.clone(),
        repo_url: repo.spec.url.clone(),
        commit: revision.commit.clone(),
        git_ref: revision.git_ref.clone(),
        path: app.spec.path.clone(),
        extra_paths: app.spec.extra_paths.clone(),
        namespace,
        render,
        sync_policy: app.spec.sync_policy,
        sync_request: 0,
        project: None,
        self_heal_suspended: None,
        health_rules: Vec::new(),
        trusted_keys: repo
            .spec
            .verify
            .as_ref()
            .map(|v| v.trusted_keys.clone())
            .unwrap_or_default(),
        chart: revision
            .chart
            .as_deref()
            .cloned()
            .filter(|_| wants_chart(app)),
    }
}

/// Whether `app` takes its chart from a Helm repository or an OCI registry.
pub fn wants_chart(app: &App) -> bool {
    app.spec
        .render
        .helm
        .as_ref()
        .is_some_and(|h| h.chart.is_some())
}

/// Desired state of the whole fleet: cluster → App name → Target. Apps whose Repo is missing or
/// has no revision yet place nothing (they cannot be fetched). Every placed cluster of an App
/// gets the App's revision at once; see [`compute_fleet_with_rollouts`] for Apps in a rollout.
/// Every App is taken to be of the `default` Project (a test helper's view).
pub fn compute_fleet(
    apps: &[App],
    repos: &BTreeMap<String, Repo>,
    revisions: &BTreeMap<String, AppRevision>,
    clusters: &[ClusterLabels<'_>],
    groups: &BTreeMap<String, ClusterGroup>,
) -> BTreeMap<String, BTreeMap<String, DesiredTarget>> {
    let no_rollouts: BTreeMap<String, BTreeMap<String, Arc<AppRevision>>> = BTreeMap::new();
    compute_fleet_with_rollouts(
        apps,
        repos,
        revisions,
        &no_rollouts,
        clusters,
        groups,
        &BTreeMap::new(),
    )
}

/// As [`compute_fleet`], but an App with an entry in `rollouts` (App name → cluster → revision,
/// from [`super::rollout::target_revisions`]) gives each placed cluster the revision its rollout
/// assigns, and nothing to a placed cluster the rollout has not assigned yet (a wave not reached
/// in an App's first rollout). Apps without an entry get their revision everywhere at once.
/// An App is placed only inside its Project (see [`project::place_in_project`]), and not at
/// all when the Project is missing or does not allow its Repo.
pub fn compute_fleet_with_rollouts<A: Borrow<BTreeMap<String, Arc<AppRevision>>>>(
    apps: &[App],
    repos: &BTreeMap<String, Repo>,
    revisions: &BTreeMap<String, AppRevision>,
    rollouts: &BTreeMap<String, A>,
    clusters: &[ClusterLabels<'_>],
    groups: &BTreeMap<String, ClusterGroup>,
    projects: &BTreeMap<String, Project>,
) -> BTreeMap<String, BTreeMap<String, DesiredTarget>> {
    compute_shared_fleet(apps, repos, revisions, rollouts, clusters, groups, projects)
        .into_iter()
        .map(|(cluster, targets)| {
            let targets = targets
                .into_iter()
                .map(|(app, t)| (app, Arc::unwrap_or_clone(t)))
                .collect();
            (cluster, targets)
        })
        .collect()
}

/// A fleet's desired state with the Targets that are alike shared: cluster → App → Target.
pub type SharedFleet = BTreeMap<String, BTreeMap<String, Arc<DesiredTarget>>>;

/// [`compute_fleet_with_rollouts`], each App's Targets that come out alike built once and
/// shared: on every cluster with the same revision and customization, an App of the `default`
/// Project has the same Target (a Project of its own has rules per cluster: built for each).
/// A commit to 50 Apps on 10,000 clusters built 500,000 Targets (a dozen strings each), and
/// then compared them to share the equal ones.
pub fn compute_shared_fleet<A: Borrow<BTreeMap<String, Arc<AppRevision>>>>(
    apps: &[App],
    repos: &BTreeMap<String, Repo>,
    revisions: &BTreeMap<String, AppRevision>,
    rollouts: &BTreeMap<String, A>,
    clusters: &[ClusterLabels<'_>],
    groups: &BTreeMap<String, ClusterGroup>,
    projects: &BTreeMap<String, Project>,
) -> SharedFleet {
    // Each cluster's Targets, by the cluster's place in `clusters`, turned into maps at the end:
    // inserting 10,000 clusters' Targets into a map by cluster name, one App after the other,
    // cost most of a commit's computation (a search by name per Target).
    let position: HashMap<&str, usize> = clusters
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name, i))
        .collect();
    let mut targets: Vec<Vec<(String, Arc<DesiredTarget>)>> = vec![Vec::new(); clusters.len()];
    // Built once, and only when an App has a Project of its own (whose rules are per cluster).
    let mut by_name = None;
    for app in apps {
        let (Some(repo), Some(revision)) =
            (repos.get(&app.spec.repo), revisions.get(&app.metadata.name))
        else {
            continue;
        };
        let project = project::project_of(app, projects);
        if project
            .is_some_and(|p| !project::allows_repo(p, &repo.metadata.name, Some(&repo.spec.url)))
        {
            continue;
        }
        if let (Some(p), Some(chart)) = (project, &revision.chart)
            && !project::allows_chart_repository(p, &chart.repository)
        {
            continue;
        }
        // A chart the hub has not resolved yet: nothing to render, so nothing is placed (a
        // resolution once made stays in the revision, so this never removes running Targets).
        if wants_chart(app) && revision.chart.is_none() {
            continue;
        }
        let own_project = project.filter(|p| !project::is_default(p));
        // The Targets built for this App so far, by revision and customization (a rollout
        // gives one or two revisions; customizations are few).
        let mut built: Vec<(&AppRevision, Option<usize>, Arc<DesiredTarget>)> = Vec::new();
        let per_cluster = rollouts.get(&app.metadata.name).map(Borrow::borrow);
        for p in project::place_in_project(app, project, clusters, groups) {
            let Some(&i) = position.get(p.cluster.as_str()) else {
                continue;
            };
            let revision = match per_cluster {
                Some(assigned) => match assigned.get(&p.cluster) {
                    Some(r) => &**r,
                    None => continue,
                },
                None => revision,
            };
            let custom = p.customization.and_then(|i| app.spec.customize.get(i));
            let target = match own_project {
                // Only a Project of its own has rules (and costs the lookup).
                Some(project) => {
                    let mut target = desired_target(app, repo, revision, custom);
                    if let Some(cluster) = by_name
                        .get_or_insert_with(|| project::by_name(clusters))
                        .get(p.cluster.as_str())
                    {
                        target.project = project::target_rules(project, *cluster, groups);
                    }
                    Arc::new(target)
                }
                None => match built
                    .iter()
                    .find(|(r, c, _)| *r == revision && *c == p.customization)
                {
                    Some((_, _, t)) => Arc::clone(t),
                    None => {
                        let t = Arc::new(desired_target(app, repo, revision, custom));
                        built.push((revision, p.customization, Arc::clone(&t)));
                        t
                    }
                },
            };
            targets[i].push((app.metadata.name.clone(), target));
        }
    }
    clusters
        .iter()
        .zip(targets)
        .map(|(c, targets)| (c.name.to_owned(), targets.into_iter().collect()))
        .collect()
}

/// A Target in a fleet map, owned or shared: what the passes over a fleet change it through.
pub trait TargetSlot: Sized {
    fn get(&self) -> &DesiredTarget;
    /// The Target to change: a shared one is copied first (only this slot changes).
    fn get_mut(&mut self) -> &mut DesiredTarget;
    /// Changes the Target by `change`, which gives every slot of one Target the same result (a
    /// change by App, not by cluster): a shared Target is copied and changed once, and every
    /// slot that shared it shares the copy. `done` remembers, by the address of each Target
    /// changed, it and its copy (kept, so that no address is reused during the pass).
    fn change_alike(&mut self, done: &mut Changed<Self>, change: impl FnOnce(&mut DesiredTarget));
}

/// What [`TargetSlot::change_alike`] changed in one pass: by the address of a Target, the
/// Target and its changed copy.
pub type Changed<T> = HashMap<*const DesiredTarget, (T, T)>;

impl TargetSlot for DesiredTarget {
    fn get(&self) -> &DesiredTarget {
        self
    }
    fn get_mut(&mut self) -> &mut DesiredTarget {
        self
    }
    fn change_alike(&mut self, _: &mut Changed<Self>, change: impl FnOnce(&mut DesiredTarget)) {
        change(self);
    }
}

impl TargetSlot for Arc<DesiredTarget> {
    fn get(&self) -> &DesiredTarget {
        self
    }
    fn get_mut(&mut self) -> &mut DesiredTarget {
        Arc::make_mut(self)
    }
    fn change_alike(&mut self, done: &mut Changed<Self>, change: impl FnOnce(&mut DesiredTarget)) {
        let key = Arc::as_ptr(self);
        if let Some((_, copy)) = done.get(&key) {
            *self = Arc::clone(copy);
            return;
        }
        let original = Arc::clone(self);
        change(Arc::make_mut(self));
        done.insert(key, (original, Arc::clone(self)));
    }
}

/// Turns self-heal off in the Targets of `fleet` (cluster → App → Target) that a freeze or
/// window suspending it holds (`holds`: App → where, from [`super::hold::Holds::self_heal`]),
/// and says why in [`DesiredTarget::self_heal_suspended`]. A Target whose App does not
/// self-heal is left as it is: there is nothing to suspend. Apps without an entry self-heal as
/// they say, so a hold's end gives the App's own policy back.
pub fn suspend_self_heal<T: TargetSlot>(
    fleet: &mut BTreeMap<String, BTreeMap<String, T>>,
    holds: &BTreeMap<String, SelfHealHolds>,
) {
    if holds.is_empty() {
        return;
    }
    for (cluster, targets) in fleet.iter_mut() {
        for (app, target) in targets.iter_mut() {
            let Some(why) = holds.get(app).and_then(|h| h.on(cluster)) else {
                continue;
            };
            if target.get().sync_policy.self_heal {
                let target = target.get_mut();
                target.sync_policy.self_heal = false;
                target.self_heal_suspended = Some(why.to_owned());
            }
        }
    }
}

/// Gives every Target the health rules of its App: its Project's `spec.healthRules` (in
/// order), then the hub-wide `HealthRule`s (by name), at most [`MAX_RULES`] in all.
pub fn attach_health_rules<T: TargetSlot>(
    fleet: &mut BTreeMap<String, BTreeMap<String, T>>,
    apps: &[App],
    projects: &BTreeMap<String, Project>,
    hub_rules: &BTreeMap<String, HealthRule>,
) {
    let hub: Vec<TargetHealthRule> = hub_rules
        .values()
        .map(|r| TargetHealthRule {
            origin: format!("HealthRule {}", r.metadata.name),
            rule: r.spec.clone(),
        })
        .collect();
    let by_app: BTreeMap<&str, Vec<TargetHealthRule>> = apps
        .iter()
        .map(|app| {
            let own = project::project_of(app, projects)
                .map(|p| {
                    p.spec
                        .health_rules
                        .iter()
                        .map(|rule| TargetHealthRule {
                            origin: format!("Project {}", p.metadata.name),
                            rule: rule.clone(),
                        })
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            let rules = own
                .into_iter()
                .chain(hub.iter().cloned())
                .take(MAX_RULES)
                .collect();
            (app.metadata.name.as_str(), rules)
        })
        .filter(|(_, rules): &(&str, Vec<TargetHealthRule>)| !rules.is_empty())
        .collect();
    if by_app.is_empty() {
        return;
    }
    // The rules are the App's: a Target shared by many clusters is given them once.
    let mut done = Changed::new();
    for targets in fleet.values_mut() {
        for (app, target) in targets.iter_mut() {
            if let Some(rules) = by_app.get(app.as_str())
                && target.get().health_rules != *rules
            {
                target.change_alike(&mut done, |t| t.health_rules = rules.clone());
            }
        }
    }
}

/// What turns `old` into `new`: changed or added Targets, and names of removed ones.
pub fn diff(old: &BTreeMap<String, DesiredTarget>, new: &BTreeMap<String, DesiredTarget>) -> Delta {
    let upserts = new
        .iter()
        .filter(|(name, t)| old.get(*name) != Some(*t))
        .map(|(_, t)| t.clone())
        .collect();
    let removals = old
        .keys()
        .filter(|name| !new.contains_key(*name))
        .cloned()
        .collect();
    Delta { upserts, removals }
}
