//! Helm charts from a Helm repository and an OCI registry, end to end: hub, spoke, kubesim and
//! scripts/helm. The test serves both on 127.0.0.1 (a tiny hyper server: `index.yaml` and
//! `.tgz` archives built here with their sha256 digests; `/v2/` tag lists, manifests and
//! blobs). The hub resolves a version range to an exact version and digest, the spoke
//! downloads, verifies and renders it with the App's values from Git; a new release the range
//! allows is picked up with the next poll, and a version changed in the App (kept in Git, in the
//! hub's fleet path) moves every cluster. A tampered archive fails the Target naming the
//! digest, and nothing is applied. A private repository over HTTPS, behind a test CA, is read
//! with its credential by the hub and by the spoke.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use gitfleet_e2e::harness::{ClusterSpec, Fleet, FleetOptions, describe, until_async};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use sha2::{Digest as _, Sha256};

const DEADLINE: Duration = Duration::from_secs(90);

/// Paths → (content type, body), changed by the test while it serves; with `auth`, every
/// request without that `Authorization` header is answered 401.
#[derive(Clone, Default)]
struct Served {
    files: Arc<Mutex<HashMap<String, (&'static str, Bytes)>>>,
    auth: Option<String>,
}

impl Served {
    /// A server that answers only requests with this username and password.
    fn with_basic_auth(username: &str, password: &str) -> Self {
        use base64::Engine as _;
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        Served {
            auth: Some(format!("Basic {token}")),
            ..Served::default()
        }
    }

    fn put(&self, path: &str, content_type: &'static str, body: impl Into<Bytes>) {
        self.files
            .lock()
            .expect("the served map")
            .insert(path.to_owned(), (content_type, body.into()));
    }

    fn answer<B>(&self, req: &hyper::Request<B>) -> hyper::Response<Full<Bytes>> {
        let authorized = self.auth.as_ref().is_none_or(|want| {
            req.headers()
                .get("authorization")
                .is_some_and(|got| got.as_bytes() == want.as_bytes())
        });
        let found = self
            .files
            .lock()
            .expect("the served map")
            .get(req.uri().path())
            .cloned();
        let mut response = match found {
            _ if !authorized => {
                let mut r = hyper::Response::new(Full::new(Bytes::from("unauthorized")));
                *r.status_mut() = hyper::StatusCode::UNAUTHORIZED;
                r.headers_mut().insert(
                    "www-authenticate",
                    "Basic realm=\"charts\"".parse().expect("a header"),
                );
                r
            }
            Some((content_type, body)) => {
                let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
                let mut r = hyper::Response::new(Full::new(body));
                r.headers_mut().insert(
                    "content-type",
                    content_type.parse().expect("a content type"),
                );
                if content_type.contains("manifest") {
                    r.headers_mut().insert(
                        "docker-content-digest",
                        digest.parse().expect("a digest header"),
                    );
                }
                r
            }
            None => {
                let mut r = hyper::Response::new(Full::new(Bytes::from("not found")));
                *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                r
            }
        };
        response
            .headers_mut()
            .insert("server", "charts-test".parse().expect("a header"));
        response
    }
}

/// Serves `served` on 127.0.0.1 until the test ends: over HTTPS with `tls`, else HTTP.
async fn serve_with(served: Served, tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let served = served.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let response = served.answer(&req);
                    async move { Ok::<_, Infallible>(response) }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(tls) => {
                        if let Ok(stream) = tls.accept(stream).await {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            });
        }
    });
    addr
}

/// Serves `served` over HTTP on 127.0.0.1 until the test ends.
async fn serve(served: Served) -> SocketAddr {
    serve_with(served, None).await
}

/// A throwaway CA and a server certificate it signed for 127.0.0.1: the CA (for the hub's
/// and the spokes' `--chart-ca-file`) and the server's TLS setup.
fn loopback_tls() -> (
    rustls::pki_types::CertificateDer<'static>,
    tokio_rustls::TlsAcceptor,
) {
    let ca_key = rcgen::KeyPair::generate().expect("a CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("the CA");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("a server key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("server params")
        .signed_by(&key, &issuer)
        .expect("the server certificate");
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .expect("the server's TLS setup");
    (
        ca.der().clone(),
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)),
    )
}

/// A chart archive: one ConfigMap labelled with the chart's version, holding a value.
fn chart(name: &str, version: &str) -> Vec<u8> {
    let files: [(String, String); 3] = [
        (
            format!("{name}/Chart.yaml"),
            format!("apiVersion: v2\nname: {name}\nversion: {version}\n"),
        ),
        (
            format!("{name}/values.yaml"),
            "message: from-the-chart\n".to_owned(),
        ),
        (
            format!("{name}/templates/configmap.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cfg\n  labels:\n    chart-version: {{ .Chart.Version | quote }}\ndata:\n  message: {{ .Values.message | quote }}\n".to_owned(),
        ),
    ];
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(gz);
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, path, content.as_bytes())
            .expect("append to the archive");
    }
    builder
        .into_inner()
        .expect("the archive")
        .finish()
        .expect("gzip")
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A Helm repository's index of `versions` (version, digest of the archive).
fn index(name: &str, versions: &[(&str, String)]) -> String {
    let mut out = format!("apiVersion: v1\nentries:\n  {name}:\n");
    for (version, digest) in versions {
        out.push_str(&format!(
            "  - name: {name}\n    version: {version}\n    digest: \"{digest}\"\n    urls: [charts/{name}-{version}.tgz]\n"
        ));
    }
    out
}

fn app(name: &str, repository: &str, chart: &str, version: &str) -> String {
    format!(
        "apiVersion: gitfleet.dev/v1
kind: App
metadata: {{name: {name}}}
spec:
  repo: platform
  path: values/{name}
  namespace: {name}
  targets:
  - clusterSelector: {{}}
  render:
    helm:
      valuesFiles: [values.yaml]
      chart: {{repository: '{repository}', name: {chart}, version: '{version}'}}
"
    )
}

/// A fleet of one cluster `c1` whose App `app` (YAML, named as its namespace) lives in Git,
/// in the hub's fleet path (`--fleet-repo platform --fleet-path fleet`), with its values file:
/// a version changed there is a version changed in Git.
async fn start_with_app_in_git(app: &str, values: &str) -> Fleet {
    let mut options = FleetOptions::new(vec![ClusterSpec::new("c1")]);
    options.fleet = Some(gitfleet_hub::fleetsync::FleetSource {
        repo: "platform".into(),
        path: "fleet".into(),
    });
    let mut fleet = Fleet::start(options).await.expect("the fleet starts");
    let name = app
        .lines()
        .find_map(|l| l.strip_prefix("  namespace: "))
        .expect("the App's namespace");
    fleet
        .git
        .write(&format!("values/{name}/values.yaml"), values)
        .expect("the values file");
    fleet
        .git
        .write(&format!("fleet/{name}.yaml"), app)
        .expect("the App in the fleet path");
    fleet
        .git
        .commit(&format!("{name} and its values"))
        .expect("a commit");
    let repo = fleet.repo_yaml("platform");
    fleet.apply_yaml(&repo).await.expect("the Repo applies");
    fleet
}

/// The ConfigMap `{release}-cfg` on cluster `c1`, once it has `version` and `message`.
async fn wait_for_configmap(
    fleet: &mut Fleet,
    namespace: &str,
    version: &str,
    message: &str,
) -> anyhow::Result<()> {
    let client = kube::Client::try_from(fleet.kubesim.kube_config("c1"))?;
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let name = format!("{namespace}-cfg");
    let what = format!("ConfigMap {namespace}/{name} of chart version {version} saying {message}");
    let found = until_async(&what, DEADLINE, async || {
        let Some(cm) = api.get_opt(&name).await? else {
            return Ok(None);
        };
        let label = cm
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("chart-version"))
            .cloned();
        let said = cm.data.as_ref().and_then(|d| d.get("message")).cloned();
        Ok((label.as_deref() == Some(version) && said.as_deref() == Some(message)).then_some(()))
    })
    .await;
    if found.is_err() {
        let status = fleet.status(namespace).await.unwrap_or_default();
        let events = fleet
            .cli(&["events", namespace])
            .await
            .unwrap_or_else(|e| e.to_string());
        return found.with_context(|| format!("status:\n{}\nevents:\n{events}", describe(&status)));
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_from_a_helm_repository_installs_and_a_new_release_in_range_upgrades_it() {
    let served = Served::default();
    let addr = serve(served.clone()).await;
    let v1 = chart("podinfo", "1.0.0");
    served.put("/charts/podinfo-1.0.0.tgz", "application/gzip", v1.clone());
    served.put(
        "/index.yaml",
        "text/yaml",
        index("podinfo", &[("1.0.0", sha256(&v1))]),
    );

    let repository = format!("http://{addr}");
    let mut fleet = start_with_app_in_git(
        &app("web", &repository, "podinfo", "^1.0.0"),
        "message: from-git\n",
    )
    .await;
    wait_for_configmap(&mut fleet, "web", "1.0.0", "from-git")
        .await
        .unwrap();

    // A new release the range allows, and a new commit: the poll resolves 1.1.0.
    let v2 = chart("podinfo", "1.1.0");
    served.put("/charts/podinfo-1.1.0.tgz", "application/gzip", v2.clone());
    served.put(
        "/index.yaml",
        "text/yaml",
        index("podinfo", &[("1.0.0", sha256(&v1)), ("1.1.0", sha256(&v2))]),
    );
    fleet
        .git
        .write("values/web/values.yaml", "message: from-git-2\n")
        .unwrap();
    fleet.git.commit("web values, again").unwrap();
    wait_for_configmap(&mut fleet, "web", "1.1.0", "from-git-2")
        .await
        .unwrap();

    // The App pinned back to an exact version in Git: every cluster moves to it.
    fleet
        .git
        .write(
            "fleet/web.yaml",
            app("web", &repository, "podinfo", "1.0.0"),
        )
        .unwrap();
    fleet.git.commit("web pinned to chart 1.0.0").unwrap();
    wait_for_configmap(&mut fleet, "web", "1.0.0", "from-git-2")
        .await
        .unwrap();
    // Each resolution is an event of the App, naming the version and digest.
    let events = fleet.cli(&["events", "web"]).await.unwrap();
    assert!(
        events.contains("ChartResolved") && events.contains("podinfo 1.1.0 (sha256:"),
        "events name the resolution: {events}"
    );

    // A version no release matches: an event naming the index and the versions there, and the
    // chart in force stays.
    fleet
        .git
        .write(
            "fleet/web.yaml",
            app("web", &repository, "podinfo", "^9.0.0"),
        )
        .unwrap();
    fleet
        .git
        .commit("web at a chart range nothing matches")
        .unwrap();
    let events = until_async("a ChartResolutionFailed event", DEADLINE, async || {
        let events = fleet.cli(&["events", "web"]).await?;
        Ok(events.contains("ChartResolutionFailed").then_some(events))
    })
    .await
    .unwrap();
    assert!(
        events.contains(&format!("{repository}/index.yaml")) && events.contains("1.0.0, 1.1.0"),
        "{events}"
    );
    wait_for_configmap(&mut fleet, "web", "1.0.0", "from-git-2")
        .await
        .unwrap();
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_from_an_oci_registry_installs_and_upgrades_when_its_version_changes_in_git() {
    let served = Served::default();
    let addr = serve(served.clone()).await;
    served.put("/v2/", "application/json", "{}");
    let push = |version: &str, tags: &[&str]| {
        let archive = chart("podinfo", version);
        let layer = format!("sha256:{}", sha256(&archive));
        served.put(
            &format!("/v2/charts/podinfo/blobs/{layer}"),
            "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
            archive,
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json",
                       "digest": format!("sha256:{}", "0".repeat(64)), "size": 2},
            "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
                        "digest": layer, "size": 1}],
        });
        served.put(
            &format!("/v2/charts/podinfo/manifests/{version}"),
            "application/vnd.oci.image.manifest.v1+json",
            manifest.to_string(),
        );
        served.put(
            "/v2/charts/podinfo/tags/list",
            "application/json",
            serde_json::json!({"name": "charts/podinfo", "tags": tags}).to_string(),
        );
    };
    push("2.0.0", &["2.0.0"]);
    push("2.1.0", &["2.0.0", "2.1.0"]);

    let repository = format!("oci://{addr}/charts");
    let mut fleet = start_with_app_in_git(
        &app("api", &repository, "podinfo", "2.0.0"),
        "message: oci\n",
    )
    .await;
    wait_for_configmap(&mut fleet, "api", "2.0.0", "oci")
        .await
        .unwrap();

    fleet
        .git
        .write("fleet/api.yaml", app("api", &repository, "podinfo", "~2.1"))
        .unwrap();
    fleet.git.commit("api at chart ~2.1").unwrap();
    wait_for_configmap(&mut fleet, "api", "2.1.0", "oci")
        .await
        .unwrap();
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_chart_fails_the_target_naming_the_digest_and_nothing_is_applied() {
    let served = Served::default();
    let addr = serve(served.clone()).await;
    let genuine = chart("podinfo", "1.0.0");
    let digest = sha256(&genuine);
    // The index vouches for the genuine archive; the server hands out another.
    served.put(
        "/charts/podinfo-1.0.0.tgz",
        "application/gzip",
        chart("podinfo", "6.6.6"),
    );
    served.put(
        "/index.yaml",
        "text/yaml",
        index("podinfo", &[("1.0.0", digest.clone())]),
    );

    let mut fleet = Fleet::start(FleetOptions::new(vec![ClusterSpec::new("c1")]))
        .await
        .unwrap();
    fleet
        .git
        .write("values/shop/values.yaml", "message: x\n")
        .unwrap();
    fleet.git.commit("shop values").unwrap();
    let yaml = format!(
        "{}---\n{}",
        fleet.repo_yaml("platform"),
        app("shop", &format!("http://{addr}"), "podinfo", "1.0.0")
    );
    fleet.apply_yaml(&yaml).await.unwrap();
    let status = fleet
        .wait_for("shop", "the Target failed on the digest", DEADLINE, |s| {
            s.first().is_some_and(|t| {
                t.sync == gitfleet_proto::v1::SyncState::Failed as i32
                    && t.message.contains(&format!("sha256:{digest}"))
            })
        })
        .await
        .unwrap();
    let message = &status[0].message;
    assert!(message.contains("digest mismatch"), "{message}");
    let client = kube::Client::try_from(fleet.kubesim.kube_config("c1")).unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "shop");
    assert!(
        api.get_opt("shop-cfg").await.unwrap().is_none(),
        "nothing of the tampered chart is applied"
    );
    fleet.shutdown().await;
}

/// A private Helm repository behind a company CA: the hub resolves with the credential bound
/// to the repository's URL, and the spoke downloads the archive with the same credential (the
/// hub sends it with the Target, as it sends a Repo's). An App of a Project whose sourceRepos
/// do not cover the chart repository is refused, naming the field: the hub's credential is
/// not anyone's to use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_chart_repository_over_https_is_read_with_its_credential_by_hub_and_spoke() {
    let (ca, tls) = loopback_tls();
    let served = Served::with_basic_auth("charts-reader", "s3cret");
    let addr = serve_with(served.clone(), Some(tls)).await;
    let v1 = chart("private", "2.0.0");
    served.put(
        "/private/charts/private-2.0.0.tgz",
        "application/gzip",
        v1.clone(),
    );
    served.put(
        "/private/index.yaml",
        "text/yaml",
        index("private", &[("2.0.0", sha256(&v1))]),
    );
    let repository = format!("https://127.0.0.1:{}/private", addr.port());

    let mut options = FleetOptions::new(vec![ClusterSpec::new("c1")]);
    options.chart_roots = vec![ca];
    options.hub_credentials.git.insert(
        "charts".into(),
        gitfleet_core::model::RepoCredential {
            urls: vec![format!("{repository}/")],
            kind: gitfleet_core::model::CredentialKind::Https {
                username: "charts-reader".into(),
                password: "s3cret".into(),
            },
        },
    );
    let mut fleet = Fleet::start(options).await.unwrap();
    fleet
        .git
        .write(
            "values/secure/values.yaml",
            "message: from-a-private-chart\n",
        )
        .unwrap();
    fleet.git.commit("secure values").unwrap();
    let yaml = format!(
        "{}---\n{}",
        fleet.repo_yaml("platform"),
        app("secure", &repository, "private", "2.x")
    );
    fleet.apply_yaml(&yaml).await.unwrap();
    wait_for_configmap(&mut fleet, "secure", "2.0.0", "from-a-private-chart")
        .await
        .unwrap();

    // A tenant's Project that does not list the chart repository cannot name it.
    let project = "apiVersion: gitfleet.dev/v1
kind: Project
metadata: {name: team-a}
spec:
  sourceRepos: [platform]
  destinations:
  - clusterSelector: {}
    namespaces: [\"*\"]
";
    fleet.apply_yaml(project).await.unwrap();
    let tenant = app("tenant", &repository, "private", "2.x").replace(
        "  repo: platform\n",
        "  repo: platform\n  project: team-a\n",
    );
    let refused = fleet
        .apply_yaml(&tenant)
        .await
        .expect_err("an App of a chart repository its Project does not allow is refused")
        .to_string();
    assert!(
        refused.contains("spec.render.helm.chart.repository")
            && refused.contains("not allowed by Project team-a's sourceRepos"),
        "{refused}"
    );
    fleet.shutdown().await;
}
