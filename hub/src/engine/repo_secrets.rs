//! Per-Repo secrets: the credential a Repo fetches with and the secret that signs its webhooks,
//! both named by the Repo (`spec.credentialsRef`, `spec.webhookSecretRef`) and kept in the
//! hub's credentials file (see [`crate::credentials`]).

use tracing::warn;

use super::Engine;
use crate::git::GitError;
use crate::model::RepoCredential;
use crate::resources::{RepoSpec, Resource};
use crate::webhook::Candidate;

impl Engine {
    /// A field-path error for every Repo in `resources` that names an entry the hub's
    /// credentials file does not have.
    pub(super) fn credential_ref_errors(&self, resources: &[Resource]) -> Vec<String> {
        resources
            .iter()
            .filter_map(|r| match r {
                Resource::Repo(repo) => self
                    .config
                    .repo_credentials
                    .check(&repo.metadata.name, &repo.spec)
                    .err()
                    .map(|e| e.to_string()),
                _ => None,
            })
            .collect()
    }

    /// The credential the Repo fetches with. A ref to a missing entry (the file changed since
    /// the Repo was applied) is the fetch's error, recorded on the Repo.
    pub(super) fn git_credential(
        &self,
        name: &str,
        spec: &RepoSpec,
    ) -> Result<Option<RepoCredential>, GitError> {
        self.config
            .repo_credentials
            .git_for(name, spec)
            .map(|c| c.cloned())
            .map_err(|e| GitError::Credentials(e.to_string()))
    }

    /// Whether the credentials file has any webhook secret (webhooks are on with one of
    /// these or the hub-wide secret).
    pub fn has_webhook_secrets(&self) -> bool {
        !self.config.repo_credentials.webhook_secrets.is_empty()
    }

    /// The Repos whose URL is one of `urls` (compared normalised), each with the secret that
    /// signs its webhooks: its own `webhookSecretRef`, else `hub_wide`. From memory: the
    /// delivery asking is not authenticated yet, so it must not make the hub read its store.
    pub fn webhook_candidates(&self, urls: &[String], hub_wide: Option<&str>) -> Vec<Candidate> {
        let followed = self.followed();
        followed
            .by_url
            .find(urls)
            .into_iter()
            .map(|(name, spec)| {
                let secret = match self
                    .config
                    .repo_credentials
                    .webhook_secret_for(name, spec, hub_wide)
                {
                    Ok(s) => s.map(str::to_owned),
                    Err(e) => {
                        warn!(repo = %name, error = %e, "webhook secret missing; deliveries for this Repo are refused");
                        None
                    }
                };
                Candidate {
                    repo: name.to_owned(),
                    secret,
                }
            })
            .collect()
    }
}
