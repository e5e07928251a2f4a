//! Chart resolution: an App's `spec.render.helm.chart` (a repository, a name, a version or a
//! range) → one exact chart (version, sha256 digest, download URL), read from a Helm
//! repository's `index.yaml` or an OCI registry's tag list and manifest. The decisions are
//! `gitfleet_core::charts`'; the HTTP client (its timeouts, size caps, refused addresses and
//! where a credential may go) is `gitfleet_support::fetch`'s.

use gitfleet_core::charts::{
    self, ChartSource, INDEX_LIMITS, MAX_INDEX_BYTES, MAX_OCI_JSON_BYTES, OCI_MANIFEST_ACCEPT,
    ResolvedChart, Wanted,
};
use gitfleet_core::yaml::{Budget, Limits};
use gitfleet_support::fetch::{BasicAuth, FetchPolicy, Fetcher};

use crate::credentials::Credentials;
use crate::model::CredentialKind;
use crate::resources::ChartSpec;

/// Resolves charts; cheap to clone.
#[derive(Debug, Clone)]
pub struct ChartResolver {
    fetcher: Fetcher,
}

impl ChartResolver {
    pub fn new(policy: FetchPolicy) -> Result<Self, String> {
        Fetcher::new(policy)
            .map(|fetcher| Self { fetcher })
            .map_err(|e| e.to_string())
    }

    /// The exact chart `spec` names now; the error names the URL and what failed.
    pub async fn resolve(
        &self,
        spec: &ChartSpec,
        credentials: &Credentials,
    ) -> Result<ResolvedChart, String> {
        let wanted = Wanted::parse(&spec.version)
            .map_err(|e| format!("spec.render.helm.chart.version: {e}"))?;
        let source = ChartSource::of(&spec.repository, &spec.name)?;
        let auth = basic_auth_for(credentials, &spec.repository);
        match &source {
            ChartSource::Repository { .. } => {
                let url = source.index_url().unwrap_or_default();
                let fetched = self
                    .fetcher
                    .get(&url, None, MAX_INDEX_BYTES, auth.as_ref())
                    .await
                    .map_err(|e| e.to_string())?;
                let text = std::str::from_utf8(&fetched.body)
                    .map_err(|_| format!("{url}: index.yaml is not UTF-8"))?;
                charts::pick_from_index(
                    text,
                    &fetched.url,
                    &spec.repository,
                    &spec.name,
                    &wanted,
                    &Budget::new(INDEX_LIMITS),
                )
                .map_err(|e| e.to_string())
            }
            ChartSource::Oci { .. } => {
                let budget = Budget::new(Limits::DEFAULT);
                let tags_url = source.tags_url().unwrap_or_default();
                let fetched = self
                    .fetcher
                    .get(
                        &tags_url,
                        Some("application/json"),
                        MAX_OCI_JSON_BYTES,
                        auth.as_ref(),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                let text = String::from_utf8_lossy(&fetched.body);
                let tags =
                    charts::parse_tags(&text, &tags_url, &budget).map_err(|e| e.to_string())?;
                let versions: Vec<String> =
                    tags.iter().map(|t| charts::tag_to_version(t)).collect();
                let chosen = charts::highest(versions.iter().map(String::as_str), &wanted)
                    .ok_or_else(|| {
                        format!(
                            "{tags_url}: no tag of chart {:?} matches {:?} (tags: {})",
                            spec.name,
                            spec.version,
                            if tags.is_empty() {
                                "none".into()
                            } else {
                                tags.join(", ")
                            }
                        )
                    })?;
                let tag = tags
                    .iter()
                    .find(|t| charts::tag_to_version(t) == chosen)
                    .cloned()
                    .unwrap_or_else(|| chosen.to_owned());
                let manifest_url = source.manifest_url(&tag).unwrap_or_default();
                let manifest = self
                    .fetcher
                    .get(
                        &manifest_url,
                        Some(OCI_MANIFEST_ACCEPT),
                        MAX_OCI_JSON_BYTES,
                        auth.as_ref(),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                let manifest_digest = charts::sha256_digest(&manifest.body);
                if let Some(said) = manifest
                    .headers
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    && said.starts_with("sha256:")
                    && said != manifest_digest
                {
                    return Err(format!(
                        "{manifest_url}: the manifest's sha256 is {manifest_digest}, the registry says {said}"
                    ));
                }
                let text = String::from_utf8_lossy(&manifest.body);
                let layer = charts::chart_layer(&text, &manifest_url, &budget)
                    .map_err(|e| e.to_string())?;
                Ok(ResolvedChart {
                    repository: spec.repository.clone(),
                    name: spec.name.clone(),
                    version: chosen.to_owned(),
                    url: source.blob_url(&layer).unwrap_or_default(),
                    digest: layer,
                    manifest_digest,
                })
            }
        }
    }
}

/// The first `https` entry of the credentials file whose `urls:` cover the chart repository
/// (an `oci://` repository is looked up as `https://` of the same place).
pub fn basic_auth_for(credentials: &Credentials, repository: &str) -> Option<BasicAuth> {
    let as_https = match repository.strip_prefix("oci://") {
        Some(rest) => format!("https://{rest}"),
        None => repository.to_owned(),
    };
    credentials.git.values().find_map(|c| match &c.kind {
        CredentialKind::Https { username, password } if c.may_be_sent_to(&as_https) => {
            Some(BasicAuth {
                username: username.clone(),
                password: password.clone(),
                urls: c.urls.clone(),
            })
        }
        _ => None,
    })
}
