//! The fleet managing itself: the hub follows a path in one of its Repos (`--fleet-repo`,
//! `--fleet-path`) and, on every new commit there, applies the Repo, App and ClusterGroup
//! documents it finds, and deletes the resources an earlier commit brought that are gone now.
//!
//! Ownership is an annotation, [`FLEET_SOURCE`], which the hub adds to every document it takes
//! from the path: only resources carrying it for this source are ever deleted, so resources
//! applied by hand are left alone (until the path names them: then the path owns them, as any
//! GitOps tool would). The fleet Repo itself is never deleted this way, or the hub would stop
//! following the path that could bring it back.
//!
//! Pure: files and stored resources in, a [`Plan`] out. The engine applies it (all documents
//! validated first, all stored or none) and records the outcome on the fleet Repo's status.

use std::collections::BTreeSet;
use std::path::Path;

use crate::documents::{Format, parse_text};
use crate::resources::{Kind, Resource};
use crate::yaml::{Budget, Limits};

#[cfg(test)]
mod tests;

/// The annotation that marks a resource as taken from the fleet path; its value is
/// [`FleetSource::id`].
pub const FLEET_SOURCE: &str = "gitfleet.dev/fleet-source";

/// Where the fleet's own resources live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSource {
    /// Name of the Repo resource.
    pub repo: String,
    /// Directory (or one file) in it; `.` or empty for the whole repository.
    pub path: String,
}

impl FleetSource {
    /// The annotation value: `repo:path`.
    pub fn id(&self) -> String {
        format!("{}:{}", self.repo, self.path.trim_matches('/'))
    }
}

/// What a commit of the fleet path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// (origin, JSON) for the hub engine's `apply`, annotated with the source.
    pub documents: Vec<(String, String)>,
    /// Resources an earlier commit brought that this one no longer has, in a safe order
    /// (Apps before the Repos and ClusterGroups they may use).
    pub delete: Vec<(Kind, String)>,
}

/// Plans the sync of `files` ((path, text) at `commit`, from the hub's `GitCache::read_documents`)
/// against what is `stored`. Errors name the file and document (`fleet@1a2b3c4d:apps/web.yaml#1`).
/// All files of the commit are read within one YAML budget (`limits`), so no commit can make
/// the hub hold more than that, however its files split the attack.
pub fn plan(
    source: &FleetSource,
    commit: &str,
    files: &[(String, String)],
    stored: &[Resource],
    limits: Limits,
) -> Result<Plan, String> {
    let budget = Budget::new(limits);
    let short = commit.get(..8).unwrap_or(commit);
    let id = source.id();
    let mut documents = Vec::new();
    let mut wanted = BTreeSet::new();
    for (file, text) in files {
        let origin = format!("{}@{short}:{file}", source.repo);
        let docs = parse_text(&origin, text, Format::for_path(Path::new(file)), &budget)
            .map_err(|e| e.to_string())?;
        for mut doc in docs {
            let kind = doc
                .value
                .get("kind")
                .and_then(|k| k.as_str())
                .and_then(Kind::parse);
            let name = doc
                .value
                .pointer("/metadata/name")
                .and_then(|n| n.as_str())
                .map(str::to_owned);
            if let (Some(kind), Some(name)) = (kind, name) {
                wanted.insert((kind, name));
            }
            // Malformed metadata is left for the hub's validation to report with its path.
            if let Some(metadata) = doc
                .value
                .get_mut("metadata")
                .and_then(|m| m.as_object_mut())
            {
                let annotations = metadata
                    .entry("annotations")
                    .or_insert_with(|| serde_json::json!({}));
                if let Some(a) = annotations.as_object_mut() {
                    a.insert(FLEET_SOURCE.into(), id.clone().into());
                }
            }
            documents.push((doc.origin, doc.value.to_string()));
        }
    }
    let mut delete: Vec<(Kind, String)> = stored
        .iter()
        .filter(|r| r.metadata().annotations.get(FLEET_SOURCE) == Some(&id))
        .map(|r| (r.kind(), r.name().to_owned()))
        .filter(|key| !wanted.contains(key))
        .filter(|(kind, name)| !(*kind == Kind::Repo && *name == source.repo))
        .collect();
    delete.sort_by_key(|(kind, name)| (*kind != Kind::App, name.clone()));
    Ok(Plan { documents, delete })
}
