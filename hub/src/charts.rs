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
use crate::model::{CredentialKind, RepoCredential};
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
/// (an `oci://` repository is looked up as `https://` of the same place): the hub resolves
/// with it, and spokes with a Target of a chart from there download with it. What is fetched
/// lies under the repository (`<repository>/index.yaml`), so an entry for
/// `https://charts.example.com/team/` covers the repository `https://charts.example.com/team`.
pub fn credential_for(credentials: &Credentials, repository: &str) -> Option<RepoCredential> {
    let as_https = match repository.strip_prefix("oci://") {
        Some(rest) => format!("https://{rest}"),
        None => repository.to_owned(),
    };
    let as_https = format!("{}/", as_https.trim_end_matches('/'));
    credentials
        .git
        .values()
        .find(|c| matches!(c.kind, CredentialKind::Https { .. }) && c.may_be_sent_to(&as_https))
        .cloned()
}

/// [`credential_for`] as the HTTP client takes it.
pub fn basic_auth_for(credentials: &Credentials, repository: &str) -> Option<BasicAuth> {
    basic_auth(&credential_for(credentials, repository)?)
}

/// `credential` as the HTTP client takes it; `None` for an SSH key.
pub fn basic_auth(credential: &RepoCredential) -> Option<BasicAuth> {
    match &credential.kind {
        CredentialKind::Https { username, password } => Some(BasicAuth {
            username: username.clone(),
            password: password.clone(),
            urls: credential.urls.clone(),
        }),
        CredentialKind::Ssh { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves `routes` (path → body) on 127.0.0.1; everything else is 404.
    async fn serve(routes: Vec<(&'static str, String)>) -> std::net::SocketAddr {
        let mut router = axum::Router::new();
        for (path, body) in routes {
            router = router.route(path, axum::routing::get(move || async move { body }));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, router).await });
        addr
    }

    fn resolver() -> ChartResolver {
        gitfleet_support::install_crypto_provider();
        ChartResolver::new(FetchPolicy {
            allow_loopback: true,
            timeout: std::time::Duration::from_secs(5),
            extra_roots: Vec::new(),
        })
        .unwrap()
    }

    #[test]
    fn a_credential_covers_the_repository_its_urls_name_with_or_without_a_slash() {
        let mut credentials = Credentials::default();
        credentials.git.insert(
            "charts".into(),
            RepoCredential {
                urls: vec!["https://charts.example.com/team/".into()],
                kind: CredentialKind::Https {
                    username: "u".into(),
                    password: "p".into(),
                },
            },
        );
        for repository in [
            "https://charts.example.com/team",
            "https://charts.example.com/team/",
            "https://charts.example.com/team/sub",
            "oci://charts.example.com/team",
        ] {
            assert!(
                credential_for(&credentials, repository).is_some(),
                "{repository}"
            );
        }
        for repository in [
            "https://charts.example.com/teammate",
            "https://charts.example.com/",
            "http://charts.example.com/team",
            "https://other.example.com/team",
        ] {
            assert!(
                credential_for(&credentials, repository).is_none(),
                "{repository}"
            );
        }
    }

    fn spec(repository: String, version: &str) -> ChartSpec {
        ChartSpec {
            repository,
            name: "podinfo".into(),
            version: version.into(),
        }
    }

    #[tokio::test]
    async fn a_helm_repository_index_resolves_to_the_highest_version_in_range() {
        let d = |c: char| c.to_string().repeat(64);
        let index = format!(
            "apiVersion: v1\nentries:\n  podinfo:\n  - version: 1.0.0\n    digest: \"{}\"\n    urls: [podinfo-1.0.0.tgz]\n  - version: 1.2.0\n    digest: \"{}\"\n    urls: [podinfo-1.2.0.tgz]\n",
            d('a'),
            d('b')
        );
        let addr = serve(vec![("/sub/index.yaml", index)]).await;
        let r = resolver()
            .resolve(
                &spec(format!("http://{addr}/sub"), "^1"),
                &Credentials::default(),
            )
            .await
            .unwrap();
        assert_eq!(r.version, "1.2.0");
        assert_eq!(r.digest, format!("sha256:{}", d('b')));
        assert_eq!(r.url, format!("http://{addr}/sub/podinfo-1.2.0.tgz"));

        let e = resolver()
            .resolve(
                &spec(format!("http://{addr}/sub"), "^2"),
                &Credentials::default(),
            )
            .await
            .unwrap_err();
        assert!(
            e.contains("index.yaml") && e.contains("1.0.0, 1.2.0"),
            "{e}"
        );
        let e = resolver()
            .resolve(
                &spec(format!("http://{addr}/none"), "^1"),
                &Credentials::default(),
            )
            .await
            .unwrap_err();
        assert!(
            e.contains(&format!("http://{addr}/none/index.yaml")) && e.contains("404"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_oci_registry_resolves_to_the_chart_layer_of_the_highest_tag() {
        let layer = format!("sha256:{}", "c".repeat(64));
        let manifest = format!(
            r#"{{"schemaVersion":2,"layers":[{{"mediaType":"{}","digest":"{layer}","size":1}}]}}"#,
            gitfleet_core::charts::HELM_LAYER_MEDIA_TYPE
        );
        let addr = serve(vec![
            (
                "/v2/charts/podinfo/tags/list",
                r#"{"name":"charts/podinfo","tags":["6.5.4","6.6.0","latest"]}"#.to_owned(),
            ),
            ("/v2/charts/podinfo/manifests/6.6.0", manifest.clone()),
        ])
        .await;
        let r = resolver()
            .resolve(
                &spec(format!("oci://{addr}/charts"), "^6"),
                &Credentials::default(),
            )
            .await
            .unwrap();
        assert_eq!(r.version, "6.6.0");
        assert_eq!(r.digest, layer);
        assert_eq!(
            r.url,
            format!("http://{addr}/v2/charts/podinfo/blobs/{layer}")
        );
        assert_eq!(
            r.manifest_digest,
            gitfleet_core::charts::sha256_digest(manifest.as_bytes())
        );
    }

    #[tokio::test]
    async fn refused_addresses_are_not_contacted() {
        let e = ChartResolver::new(FetchPolicy::default())
            .unwrap()
            .resolve(
                &spec("https://169.254.169.254/charts".into(), "1.0.0"),
                &Credentials::default(),
            )
            .await
            .unwrap_err();
        assert!(e.contains("link-local"), "{e}");
    }
}
