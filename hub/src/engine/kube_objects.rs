//! The engine's side of the Kubernetes-native API (`crate::kube_api`, docs/kube-api.md):
//! resources owned by custom resources in the management cluster. Their documents go through
//! the same validation and the same apply as `gitfleet apply`; a resource a custom resource
//! owns is refused to `gitfleet apply` and `delete`, and a custom resource never takes a
//! resource it does not own.

use std::sync::Arc;

use gitfleet_core::kube_api::{TargetState, may_take, owner_of, refusal};

use super::{Applied, Engine, EngineError};
use crate::resources::{Kind, Resource};

/// What an App custom resource's status summarises (see
/// [`gitfleet_core::kube_api::app_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSummary {
    /// The revision the App's rollout moves to.
    pub revision: String,
    /// `Progressing`, `Paused`, `Complete`, ... (the rollout's summary).
    pub phase: String,
    /// The rollout's one-line reason.
    pub reason: String,
    pub targets: Vec<TargetState>,
}

impl Engine {
    /// Applies one resource document taken from the custom resource `owner` (`NAMESPACE/NAME`):
    /// validated and written as `gitfleet apply` would, unless the hub's resource of that kind
    /// and name is someone else's (applied with `gitfleet apply`, or another object's).
    pub async fn apply_owned(
        self: &Arc<Self>,
        origin: &str,
        document: String,
        owner: &str,
    ) -> Result<Applied, EngineError> {
        let documents = [(origin.to_owned(), document)];
        let parsed = self.validate(&documents)?;
        let guard = self.write.lock().await;
        for r in &parsed {
            let stored = self.store.resource(r.kind(), r.name())?;
            may_take(
                r.kind(),
                r.name(),
                stored.as_ref().map(Resource::metadata),
                owner,
            )
            .map_err(EngineError::FailedPrecondition)?;
        }
        let by = format!("kubernetes:{owner}");
        let (outcomes, stored) = self.apply_locked(&guard, parsed, false, &by)?;
        if !stored.is_empty() {
            self.recompute_locked(&guard).await?;
            self.store.flush().await?;
        }
        drop(guard);
        self.follow_applied(&stored);
        outcomes
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::Invalid("no documents to apply".into()))
    }

    /// Deletes the resource the custom resource `owner` owns; false when there is none (or it
    /// is not that object's: it is left alone).
    pub async fn delete_owned(
        &self,
        kind: Kind,
        name: &str,
        owner: &str,
    ) -> Result<bool, EngineError> {
        let guard = self.write.lock().await;
        let Some(stored) = self.store.resource(kind, name)? else {
            return Ok(false);
        };
        if owner_of(stored.metadata()) != Some(owner) {
            return Ok(false);
        }
        if !self.delete_locked(&guard, kind, name)? {
            return Ok(false);
        }
        self.recompute_locked(&guard).await?;
        self.store.flush().await?;
        Ok(true)
    }

    /// Whether the hub's `kind`/`name` is the object `owner`'s.
    pub fn owns(&self, kind: Kind, name: &str, owner: &str) -> Result<bool, EngineError> {
        Ok(self
            .store
            .resource(kind, name)?
            .is_some_and(|r| owner_of(r.metadata()) == Some(owner)))
    }

    /// The resources owned by objects of `namespace`: (kind, name, owner).
    pub fn kube_owned(&self, namespace: &str) -> Result<Vec<(Kind, String, String)>, EngineError> {
        let prefix = format!("{namespace}/");
        Ok(self
            .store
            .resources()?
            .into_iter()
            .filter_map(|r| {
                let owner = owner_of(r.metadata())?.to_owned();
                owner
                    .starts_with(&prefix)
                    .then(|| (r.kind(), r.name().to_owned(), owner))
            })
            .collect())
    }

    /// Refuses `verb` (apply, delete) by a person of a resource a custom resource owns, or
    /// of a document that claims to be one's.
    pub(super) fn refuse_kube_owned(
        &self,
        verb: &str,
        kind: Kind,
        name: &str,
        document: Option<&Resource>,
    ) -> Result<(), EngineError> {
        if let Some(stored) = self.store.resource(kind, name)?
            && let Some(owner) = owner_of(stored.metadata())
        {
            return Err(EngineError::FailedPrecondition(refusal(
                verb, kind, name, owner,
            )));
        }
        if let Some(owner) = document.and_then(|d| owner_of(d.metadata())) {
            return Err(EngineError::Invalid(format!(
                "{kind} {name:?}: metadata.annotations: {:?} is set by the hub for resources \
                 of Kubernetes objects (here {owner}); remove it",
                gitfleet_core::kube_api::OWNER_ANNOTATION
            )));
        }
        Ok(())
    }

    /// `gitfleet delete` of a resource: refused when a custom resource owns it.
    pub async fn delete_unowned(&self, kind: Kind, name: &str) -> Result<bool, EngineError> {
        self.refuse_kube_owned("delete", kind, name, None)?;
        self.delete(kind, name).await
    }

    /// What an App custom resource's status shows; `None` while the App has no rollout (its
    /// Repo not fetched yet).
    pub async fn app_summary(&self, name: &str) -> Result<Option<AppSummary>, EngineError> {
        let view = match self.rollout_status(name) {
            Ok(view) => view,
            Err(EngineError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let targets = self
            .status(Some(name), None)
            .await?
            .into_iter()
            .map(|t| {
                let report = t.report.unwrap_or_default();
                TargetState {
                    desired: t.desired_revision,
                    reported: report.revision,
                    sync: report.sync,
                    health: report.health,
                }
            })
            .collect();
        // `Progressing`, `Paused`, `RollingBack`, `Complete`, `RolledBack`, `Held`.
        let phase = format!("{:?}", view.status.summary);
        Ok(Some(AppSummary {
            revision: view.state.revision.commit.clone(),
            phase,
            reason: view.status.reason.clone(),
            targets,
        }))
    }
}
