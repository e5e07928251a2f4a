//! Projects: what an App's Project allows it, decided from values. The hub asks here before it
//! stores an App ([`check_app`]) and every time it places one ([`place_in_project`]); what a
//! spoke must enforce on the objects a render produced travels with each Target as a
//! [`TargetProject`].

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use super::placement::{ClusterLabels, Placement, place, selector_matches};
use crate::resources::{
    API_VERSION, App, ClusterGroup, DEFAULT_PROJECT, GroupKind, Metadata, Project,
    ProjectDestination, ProjectSpec, Repo,
};

#[cfg(test)]
mod tests;

/// The built-in Project of every App that names none: every Repo, every cluster and namespace,
/// every kind. It is what gitfleet allowed before Projects existed.
pub fn default_project() -> &'static Project {
    static DEFAULT: LazyLock<Project> = LazyLock::new(|| Project {
        api_version: API_VERSION.to_owned(),
        metadata: Metadata {
            name: DEFAULT_PROJECT.to_owned(),
            ..Metadata::default()
        },
        spec: ProjectSpec {
            source_repos: vec!["*".to_owned()],
            destinations: vec![ProjectDestination {
                name: Some("*".to_owned()),
                namespaces: vec!["*".to_owned()],
                ..ProjectDestination::default()
            }],
            cluster_resources: vec![GroupKind {
                group: "*".to_owned(),
                kind: "*".to_owned(),
            }],
            namespace_resources: Default::default(),
            sync_windows: Vec::new(),
            health_rules: Vec::new(),
        },
    });
    &DEFAULT
}

/// Whether `project` is the built-in one (nothing to enforce anywhere).
pub fn is_default(project: &Project) -> bool {
    project.metadata.name == DEFAULT_PROJECT
}

/// The Project `app` belongs to: a stored one, or the built-in `default`. `None` when it names
/// a Project that does not exist (such an App is placed nowhere).
pub fn project_of<'a>(app: &App, projects: &'a BTreeMap<String, Project>) -> Option<&'a Project> {
    let name = app.spec.project_name();
    if name == DEFAULT_PROJECT {
        return Some(default_project());
    }
    projects.get(name)
}

/// Matches `text` against `pattern`, where `*` stands for any run of characters except
/// `separator` and `**` for any run at all. Without a separator both mean the same.
pub fn glob_matches(pattern: &str, text: &str, separator: Option<char>) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // matches[j]: whether p[..i] matches t[..j], row by row over i (linear in memory; patterns
    // and texts are short and validated, but a quadratic recursion is not worth the risk).
    let mut matches = vec![false; t.len() + 1];
    matches[0] = true;
    let mut i = 0;
    while i < p.len() {
        let mut next = vec![false; t.len() + 1];
        if p[i] == '*' {
            let across = i + 1 < p.len() && p[i + 1] == '*';
            let crosses = |c: char| across || Some(c) != separator;
            next[0] = matches[0];
            for j in 1..=t.len() {
                next[j] = matches[j] || (next[j - 1] && crosses(t[j - 1]));
            }
            i += if across { 2 } else { 1 };
        } else {
            for j in 1..=t.len() {
                next[j] = matches[j - 1] && t[j - 1] == p[i];
            }
            i += 1;
        }
        matches = next;
    }
    matches[t.len()]
}

/// Whether a URL glob may match `url` at all: one with `.` or `..` path segments could reach
/// outside the prefix a glob means (`https://git.example.com/team-a/../team-b/app`).
fn url_is_plain(url: &str) -> bool {
    let path = url.split_once("://").map_or(url, |(_, rest)| rest);
    !path.split(['/', ':']).any(|seg| seg == "." || seg == "..")
}

/// Whether `project`'s `sourceRepos` allow the Repo named `name` at `url` (`url` unknown:
/// by name only).
pub fn allows_repo(project: &Project, name: &str, url: Option<&str>) -> bool {
    project.spec.source_repos.iter().any(|entry| {
        entry == "*"
            || entry == name
            || url.is_some_and(|url| url_is_plain(url) && glob_matches(entry, url, Some('/')))
    })
}

/// Whether `project`'s `sourceRepos` allow Helm charts from `repository` (an `https://` Helm
/// repository or an `oci://` registry path): `*`, or a URL glob that matches it. The hub
/// resolves a chart with its credential, and hands that credential to the spokes that
/// download it, only for an App whose Project allows the repository.
pub fn allows_chart_repository(project: &Project, repository: &str) -> bool {
    project.spec.source_repos.iter().any(|entry| {
        entry == "*" || (url_is_plain(repository) && glob_matches(entry, repository, Some('/')))
    })
}

/// Whether one destination names `cluster`. A group that does not exist names nothing.
pub fn destination_covers(
    destination: &ProjectDestination,
    cluster: ClusterLabels<'_>,
    groups: &BTreeMap<String, ClusterGroup>,
) -> bool {
    if let Some(name) = &destination.name {
        return glob_matches(name, cluster.name, None);
    }
    if let Some(selector) = &destination.cluster_selector {
        return selector_matches(selector, cluster.labels);
    }
    if let Some(group) = &destination.group {
        return groups
            .get(group)
            .is_some_and(|g| selector_matches(&g.spec.selector, cluster.labels));
    }
    false
}

/// The namespace globs `project` allows on `cluster`: those of every destination naming it
/// (empty: the cluster is not one of the Project's).
pub fn namespaces_on(
    project: &Project,
    cluster: ClusterLabels<'_>,
    groups: &BTreeMap<String, ClusterGroup>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in &project.spec.destinations {
        if destination_covers(d, cluster, groups) {
            for ns in &d.namespaces {
                if !out.contains(ns) {
                    out.push(ns.clone());
                }
            }
        }
    }
    out
}

/// Whether `namespace` matches one of `globs`.
pub fn namespace_allowed(globs: &[String], namespace: &str) -> bool {
    globs.iter().any(|g| glob_matches(g, namespace, None))
}

/// Whether `project` lets an App run on `cluster` with `namespace` as its namespace.
pub fn admits(
    project: &Project,
    cluster: ClusterLabels<'_>,
    namespace: &str,
    groups: &BTreeMap<String, ClusterGroup>,
) -> bool {
    project.spec.destinations.iter().any(|d| {
        destination_covers(d, cluster, groups) && namespace_allowed(&d.namespaces, namespace)
    })
}

/// The namespace an App's Target on a placement has (its customization's, or the App's).
pub fn target_namespace<'a>(app: &'a App, placement: &Placement) -> &'a str {
    placement
        .customization
        .and_then(|i| app.spec.customize.get(i))
        .and_then(|c| c.namespace.as_deref())
        .unwrap_or(&app.spec.namespace)
}

/// The clusters `app` runs on: its placement, less every cluster its Project does not admit
/// it to (with its namespace there). An App whose Project is missing runs nowhere.
pub fn place_in_project(
    app: &App,
    project: Option<&Project>,
    clusters: &[ClusterLabels<'_>],
    groups: &BTreeMap<String, ClusterGroup>,
) -> Vec<Placement> {
    let Some(project) = project else {
        return Vec::new();
    };
    let mut placements = place(app, clusters, groups);
    if is_default(project) {
        return placements;
    }
    let by_name = by_name(clusters);
    placements.retain(|p| {
        by_name
            .get(p.cluster.as_str())
            .is_some_and(|c| admits(project, *c, target_namespace(app, p), groups))
    });
    placements
}

/// The clusters by name: a placement names its cluster, and a fleet has thousands.
pub fn by_name<'l>(clusters: &[ClusterLabels<'l>]) -> HashMap<&'l str, ClusterLabels<'l>> {
    clusters.iter().map(|c| (c.name, *c)).collect()
}

/// What a spoke enforces on the objects one Target's render produced (the domain form of the
/// wire `TargetProject`). The built-in `default` Project has none: nothing to enforce.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetProject {
    pub name: String,
    /// Namespace globs the Project allows on this cluster.
    pub namespaces: Vec<String>,
    /// Cluster-scoped kinds allowed (Namespaces matching `namespaces` always are).
    pub cluster_resources: Vec<GroupKind>,
    /// Namespaced kinds denied.
    pub namespace_deny: Vec<GroupKind>,
}

/// The rules a spoke enforces for an App of `project` on `cluster`; `None` for `default`.
pub fn target_rules(
    project: &Project,
    cluster: ClusterLabels<'_>,
    groups: &BTreeMap<String, ClusterGroup>,
) -> Option<TargetProject> {
    if is_default(project) {
        return None;
    }
    Some(TargetProject {
        name: project.metadata.name.clone(),
        namespaces: namespaces_on(project, cluster, groups),
        cluster_resources: project.spec.cluster_resources.clone(),
        namespace_deny: project.spec.namespace_resources.deny.clone(),
    })
}

/// Whether `rule` names the kind `group`/`kind` (either side may be `*`).
pub fn group_kind_matches(rule: &GroupKind, group: &str, kind: &str) -> bool {
    (rule.group == "*" || rule.group == group) && (rule.kind == "*" || rule.kind == kind)
}

/// `group/kind`, or the kind alone for the core group.
pub fn describe_kind(group: &str, kind: &str) -> String {
    if group.is_empty() {
        kind.to_owned()
    } else {
        format!("{group}/{kind}")
    }
}

/// Something of an App its Project does not allow, at a field of the App.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectProblem {
    /// `spec.repo`, `spec.namespace`, `spec.targets[1]`, ...
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ProjectProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Everything of `app` that its Project (`project`, `None` when it does not exist) does not
/// allow, given its Repo (`None`: not applied yet) and the clusters and groups there are now.
/// Empty when the App is inside its Project.
pub fn check_app(
    app: &App,
    project: Option<&Project>,
    repo: Option<&Repo>,
    clusters: &[ClusterLabels<'_>],
    groups: &BTreeMap<String, ClusterGroup>,
) -> Vec<ProjectProblem> {
    let name = app.spec.project_name();
    let Some(project) = project else {
        return vec![ProjectProblem {
            path: "spec.project".into(),
            message: format!("Project {name:?} does not exist"),
        }];
    };
    if is_default(project) {
        return Vec::new();
    }
    let mut problems = Vec::new();
    let url = repo.map(|r| r.spec.url.as_str());
    if !allows_repo(project, &app.spec.repo, url) {
        problems.push(ProjectProblem {
            path: "spec.repo".into(),
            message: match url {
                Some(url) => format!(
                    "Repo {:?} ({url}) is not allowed by Project {name}'s sourceRepos",
                    app.spec.repo
                ),
                None => format!(
                    "Repo {:?} is not allowed by Project {name}'s sourceRepos",
                    app.spec.repo
                ),
            },
        });
    }
    if let Some(chart) = app.spec.render.helm.as_ref().and_then(|h| h.chart.as_ref())
        && !allows_chart_repository(project, &chart.repository)
    {
        problems.push(ProjectProblem {
            path: "spec.render.helm.chart.repository".into(),
            message: format!(
                "chart repository {} is not allowed by Project {name}'s sourceRepos",
                chart.repository
            ),
        });
    }
    let anywhere = |ns: &str| {
        project
            .spec
            .destinations
            .iter()
            .any(|d| namespace_allowed(&d.namespaces, ns))
    };
    if !anywhere(&app.spec.namespace) {
        problems.push(ProjectProblem {
            path: "spec.namespace".into(),
            message: format!(
                "namespace {:?} is not allowed by Project {name}'s destinations",
                app.spec.namespace
            ),
        });
    }
    for (i, c) in app.spec.customize.iter().enumerate() {
        if let Some(ns) = &c.namespace
            && !anywhere(ns)
        {
            problems.push(ProjectProblem {
                path: format!("spec.customize[{i}].namespace"),
                message: format!(
                    "namespace {ns:?} is not allowed by Project {name}'s destinations"
                ),
            });
        }
    }
    let by_name = by_name(clusters);
    for p in place(app, clusters, groups) {
        let Some(cluster) = by_name.get(p.cluster.as_str()) else {
            continue;
        };
        let namespace = target_namespace(app, &p);
        if admits(project, *cluster, namespace, groups) {
            continue;
        }
        let index = app
            .spec
            .targets
            .iter()
            .position(|t| super::placement::selection_matches(t, *cluster, groups))
            .unwrap_or(0);
        let covered = project
            .spec
            .destinations
            .iter()
            .any(|d| destination_covers(d, *cluster, groups));
        problems.push(ProjectProblem {
            path: format!("spec.targets[{index}]"),
            message: if covered {
                format!(
                    "namespace {namespace:?} on cluster {:?} is not allowed by Project {name}'s destinations",
                    p.cluster
                )
            } else {
                format!(
                    "cluster {:?} is not in Project {name}'s destinations",
                    p.cluster
                )
            },
        });
    }
    problems
}
