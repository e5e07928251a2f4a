//! `spec.dependsOn`, pure: whether the Apps' dependencies are a graph the hub can follow (every
//! App named exists, no cycle), and what an App's dependencies hold of it on each cluster.
//!
//! An App's Target on a cluster waits until every App it depends on is *ready* there: the
//! dependency's Target was given a revision on that cluster, its spoke reports it applied,
//! synced and healthy (or suspended, a steady state someone chose) at that revision. A waiting
//! Target is a [`Hold`] of kind [`HoldKind::Dependency`]: no override lifts it, and what the
//! cluster runs keeps running.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use super::AppRevision;
use super::hold::{Hold, HoldKind, Holds};
use super::rollout::{Observation, RolloutState, counts_as_healthy, short};
use crate::model::SyncState;
use crate::resources::App;

/// What is wrong with the Apps' dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DependencyProblem {
    /// `app` names, at `spec.dependsOn[index]`, an App that does not exist.
    Unknown {
        app: String,
        index: usize,
        dependency: String,
    },
    /// The Apps depend on each other in a circle: each on the next, the last on the first.
    Cycle(Vec<String>),
}

impl DependencyProblem {
    /// Whether the problem concerns `app`.
    pub fn involves(&self, app: &str) -> bool {
        match self {
            DependencyProblem::Unknown { app: a, .. } => a == app,
            DependencyProblem::Cycle(apps) => apps.iter().any(|a| a == app),
        }
    }
}

impl fmt::Display for DependencyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DependencyProblem::Unknown {
                app,
                index,
                dependency,
            } => write!(
                f,
                "app {app:?}: spec.dependsOn[{index}]: there is no App {dependency:?}"
            ),
            DependencyProblem::Cycle(apps) => {
                let mut circle: Vec<String> = apps.iter().map(|a| format!("{a:?}")).collect();
                if let Some(first) = circle.first().cloned() {
                    circle.push(first);
                }
                write!(
                    f,
                    "apps depend on each other in a cycle ({}): none of them could ever be \
                     deployed; remove one of these spec.dependsOn entries",
                    circle.join(" → ")
                )
            }
        }
    }
}

/// Every problem of the Apps' dependencies: each unknown App named, and each cycle once
/// (starting at its alphabetically first App).
pub fn problems<'a>(apps: impl IntoIterator<Item = &'a App>) -> Vec<DependencyProblem> {
    let graph: BTreeMap<&str, &[String]> = apps
        .into_iter()
        .map(|a| (a.metadata.name.as_str(), a.spec.depends_on.as_slice()))
        .collect();
    let mut problems = Vec::new();
    for (app, deps) in &graph {
        for (index, dependency) in deps.iter().enumerate() {
            if !graph.contains_key(dependency.as_str()) {
                problems.push(DependencyProblem::Unknown {
                    app: (*app).to_owned(),
                    index,
                    dependency: dependency.clone(),
                });
            }
        }
    }
    problems.extend(cycles(&graph).into_iter().map(DependencyProblem::Cycle));
    problems
}

/// The cycles of the graph, each once. A depth-first search from each App in name order; a
/// back edge to an App on the current path closes a cycle, which is kept when it has not been
/// seen before (as the same set of Apps).
fn cycles(graph: &BTreeMap<&str, &[String]>) -> Vec<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        OnPath,
        Done,
    }
    fn visit<'a>(
        app: &'a str,
        graph: &BTreeMap<&'a str, &'a [String]>,
        marks: &mut HashMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
        seen: &mut BTreeSet<Vec<String>>,
        found: &mut Vec<Vec<String>>,
    ) {
        marks.insert(app, Mark::OnPath);
        path.push(app);
        for dependency in graph.get(app).copied().unwrap_or_default() {
            let Some((dependency, _)) = graph.get_key_value(dependency.as_str()) else {
                continue;
            };
            match marks.get(dependency) {
                Some(Mark::Done) => {}
                Some(Mark::OnPath) => {
                    let start = path.iter().position(|a| a == dependency).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        path[start..].iter().map(|a| (*a).to_owned()).collect();
                    // The same cycle found from another App is the same set, rotated.
                    let lowest = cycle
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, a)| a.as_str())
                        .map_or(0, |(i, _)| i);
                    cycle.rotate_left(lowest);
                    let mut key = cycle.clone();
                    key.sort();
                    if seen.insert(key) {
                        found.push(cycle);
                    }
                }
                None => visit(dependency, graph, marks, path, seen, found),
            }
        }
        path.pop();
        marks.insert(app, Mark::Done);
    }
    let mut marks = HashMap::new();
    let mut seen = BTreeSet::new();
    let mut found = Vec::new();
    for app in graph.keys() {
        if !marks.contains_key(app) {
            visit(
                app,
                graph,
                &mut marks,
                &mut Vec::new(),
                &mut seen,
                &mut found,
            );
        }
    }
    found
}

/// The Apps of `apps` that name `dependency` in their `dependsOn`.
pub fn dependents<'a>(apps: impl IntoIterator<Item = &'a App>, dependency: &str) -> Vec<&'a str> {
    apps.into_iter()
        .filter(|a| a.spec.depends_on.iter().any(|d| d == dependency))
        .map(|a| a.metadata.name.as_str())
        .collect()
}

/// The order to delete `deleting` in so that no App is deleted while another App still
/// depends on it: dependents before their dependencies. Apps outside `deleting` that depend on
/// one of them are not reordered around (deleting that one is refused).
pub fn deletion_order(deleting: &[&App]) -> Vec<String> {
    let mut left: Vec<&App> = deleting.to_vec();
    let mut order = Vec::with_capacity(left.len());
    while !left.is_empty() {
        // An App no other App still to be deleted depends on goes next.
        let next = left
            .iter()
            .position(|a| {
                !left
                    .iter()
                    .any(|o| o.spec.depends_on.contains(&a.metadata.name))
            })
            // A cycle (refused at apply, so never stored): any order.
            .unwrap_or(0);
        order.push(left.remove(next).metadata.name.clone());
    }
    order
}

/// The revision `dependency` is meant to run, which its dependents wait for: where Git
/// points (its rollout goes there next, whether or not it has reached a cluster), unless its
/// rollout rolled back from that commit (then the revision it rolled back to); its rollout's
/// revision while its Repo is not fetched.
pub fn wanted_revision<'a>(
    git: Option<&'a AppRevision>,
    rollout: Option<&'a RolloutState>,
) -> Option<&'a str> {
    match (git, rollout) {
        (Some(git), Some(r)) if r.rejected.as_deref() == Some(git.commit.as_str()) => {
            Some(r.revision.commit.as_str())
        }
        (Some(git), _) => Some(git.commit.as_str()),
        (None, r) => r.map(|r| r.revision.commit.as_str()),
    }
}

/// What the hub knows of one dependency: the revision it is meant to run
/// ([`wanted_revision`]) and what each cluster reports of it.
#[derive(Debug, Clone, Default)]
pub struct DependencyState {
    pub wanted: Option<String>,
    pub observed: BTreeMap<String, Observation>,
}

/// Why `dependency`'s Target on a cluster does not let a dependent move yet, or `None` when it
/// is ready: given a revision there, applied, synced and healthy at the revision it is meant
/// to run (`wanted`; the revision the cluster was told when unknown). A cluster still told an
/// older revision while the dependency's rollout moves to a newer one is not ready: the
/// dependent's new revision may need the new one.
pub fn waits_for(
    dependency: &str,
    wanted: Option<&str>,
    o: Option<&Observation>,
) -> Option<String> {
    let why = |what: String| Some(format!("waits for {dependency}: {what}"));
    let Some(o) = o else {
        return why("nothing of it on this cluster yet".into());
    };
    let Some(told) = &o.desired_revision else {
        return why("nothing of it on this cluster yet".into());
    };
    let desired = wanted.unwrap_or(told);
    match &o.applied_revision {
        None => return why(format!("not yet applied at {}", short(desired))),
        Some(applied) if applied != desired => {
            return why(format!(
                "at {}, not yet at {}",
                short(applied),
                short(desired)
            ));
        }
        Some(_) => {}
    }
    let with_message = |what: String| {
        if o.message.is_empty() {
            what
        } else {
            format!("{what} ({})", o.message)
        }
    };
    if o.sync == SyncState::Failed {
        return why(with_message(format!("sync failed at {}", short(desired))));
    }
    if o.sync != SyncState::Synced {
        return why(format!("{} at {}", o.sync, short(desired)));
    }
    if !counts_as_healthy(o.health) {
        return why(with_message(format!("{} at {}", o.health, short(desired))));
    }
    None
}

/// The holds `app`'s dependencies put on its Targets on `clusters`, from what the hub
/// knows of each dependency (`dependencies[name]`).
pub fn holds<'a>(
    app: &App,
    clusters: impl IntoIterator<Item = &'a str>,
    dependencies: &BTreeMap<String, DependencyState>,
) -> Holds {
    let mut holds = Holds::none();
    if app.spec.depends_on.is_empty() {
        return holds;
    }
    for cluster in clusters {
        for dependency in &app.spec.depends_on {
            let state = dependencies.get(dependency);
            let wanted = state.and_then(|s| s.wanted.as_deref());
            let o = state.and_then(|s| s.observed.get(cluster));
            if let Some(reason) = waits_for(dependency, wanted, o) {
                holds.hold(
                    cluster,
                    Hold {
                        kind: HoldKind::Dependency,
                        reason,
                        until: None,
                        // What a dependency holds keeps self-healing.
                        suspends_self_heal: None,
                    },
                );
            }
        }
    }
    holds
}

#[cfg(test)]
mod tests;
