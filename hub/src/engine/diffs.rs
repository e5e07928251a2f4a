//! `gitfleet diff --live`: which clusters to ask about an App, with the Target each would be
//! given at the revision asked for, and where each cluster's link is. Reads only (memory and
//! the store's mirror); the link adapter carries the requests (`grpc::live_diff`).

use crate::model::VersionedTarget;

use super::{Engine, EngineError};

/// The most clusters one `DiffLive` asks when it names none; the rest are listed as not asked.
pub const MAX_DIFF_CLUSTERS: usize = 50;

/// Where a cluster's spoke is linked, for a diff request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkPlace {
    /// Linked to this replica: ask it.
    Here,
    /// Linked to another hub replica, reached at this URL (`None`: a replica of an older
    /// release, which does not say).
    OtherReplica { url: Option<String> },
    /// Not linked anywhere; when it was last heard from (0: never).
    Offline { last_contact_unix: i64 },
}

/// One cluster to diff.
#[derive(Debug, Clone)]
pub struct DiffTarget {
    pub cluster: String,
    pub link: LinkPlace,
    /// The Target as the cluster would be given it at the plan's revision.
    pub target: VersionedTarget,
}

/// What one `DiffLive` asks.
#[derive(Debug, Clone)]
pub struct DiffPlan {
    pub app: String,
    pub revision: String,
    pub targets: Vec<DiffTarget>,
    /// Clusters with a Target of the App beyond [`MAX_DIFF_CLUSTERS`], not asked.
    pub not_asked: Vec<String>,
}

/// A full commit id: 40 hex digits (SHA-1) or 64 (SHA-256), as the spokes fetch exactly.
pub fn check_revision(revision: &str) -> Result<(), EngineError> {
    let hex = revision.bytes().all(|b| b.is_ascii_hexdigit());
    if hex && matches!(revision.len(), 40 | 64) {
        Ok(())
    } else {
        Err(EngineError::Invalid(format!(
            "revision {revision:?} is not a full commit id (40 hexadecimal digits); \
             name the commit in full (`git rev-parse`)"
        )))
    }
}

impl Engine {
    /// The clusters to diff `app` on (`cluster` alone, or every cluster the App has a Target
    /// on, at most [`MAX_DIFF_CLUSTERS`], by name) and the Target each would be given at
    /// `revision`, or by default the App's revision now: the head of its ref as last fetched,
    /// what a rollout dispatches next (its chart too). A given revision keeps each Target's
    /// chart.
    pub fn diff_plan(
        &self,
        app: &str,
        cluster: Option<&str>,
        revision: Option<&str>,
    ) -> Result<DiffPlan, EngineError> {
        let resource = self.app(app)?;
        if let Some(revision) = revision {
            check_revision(revision)?;
        }
        let head = self.store.revisions()?.get(app).cloned();
        let commit = match (revision, &head) {
            (Some(revision), _) => revision.to_ascii_lowercase(),
            (None, Some(head)) => head.commit.clone(),
            (None, None) => {
                return Err(EngineError::FailedPrecondition(format!(
                    "app {app:?} has no revision yet: its Repo {:?} has not been fetched \
                     (see `gitfleet get repo {}`)",
                    resource.spec.repo, resource.spec.repo
                )));
            }
        };
        let state = self.lock();
        let mut placed: Vec<(String, VersionedTarget)> = state
            .desired
            .iter()
            .filter(|(name, _)| cluster.is_none_or(|c| c == name.as_str()))
            .filter_map(|(name, tx)| {
                let published = tx.borrow();
                let target = published.desired.targets.get(app)?.clone();
                Some((name.clone(), target))
            })
            .collect();
        placed.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(cluster) = cluster
            && placed.is_empty()
        {
            return Err(EngineError::NotFound(format!(
                "app {app:?} has no Target on cluster {cluster:?}; see `gitfleet status --app {app}`"
            )));
        }
        let not_asked = placed
            .iter()
            .skip(MAX_DIFF_CLUSTERS)
            .map(|(c, _)| c.clone())
            .collect();
        placed.truncate(MAX_DIFF_CLUSTERS);
        let targets = placed
            .into_iter()
            .map(|(name, mut versioned)| {
                let target = std::sync::Arc::make_mut(&mut versioned.target);
                target.commit.clone_from(&commit);
                if revision.is_none()
                    && let Some(head) = &head
                {
                    target.git_ref.clone_from(&head.git_ref);
                    target.chart = head.chart.as_deref().cloned();
                }
                let link = if state.connections.contains_key(&name) {
                    LinkPlace::Here
                } else if self.store.connected_elsewhere(&name) {
                    LinkPlace::OtherReplica {
                        url: self.store.linked_elsewhere_at(&name),
                    }
                } else {
                    let last_contact_unix = state
                        .last_contact
                        .get(&name)
                        .copied()
                        .or_else(|| {
                            self.store
                                .cluster(&name)
                                .ok()
                                .flatten()
                                .map(|r| r.last_contact_unix)
                        })
                        .unwrap_or(0);
                    LinkPlace::Offline { last_contact_unix }
                };
                DiffTarget {
                    cluster: name,
                    link,
                    target: versioned,
                }
            })
            .collect();
        Ok(DiffPlan {
            app: app.to_owned(),
            revision: commit,
            targets,
            not_asked,
        })
    }
}
