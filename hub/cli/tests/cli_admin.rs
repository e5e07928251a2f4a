//! The `gitfleet` CLI end to end against a fake Admin server over real mutual TLS: certificates
//! made with rcgen, a credentials file in a tempdir, `gitfleet_cli::cli::run_args` in-process.

// Test helpers outside #[test] functions unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use gitfleet_cli::cli::output::{ClusterListReport, StatusReport, Sync, TokenReport};
use gitfleet_cli::cli::{CliError, run_args};
use gitfleet_cli::client::config::{ClientConfig, ConfigFile as _, Context};
use gitfleet_proto::v1 as pb;
use gitfleet_proto::v1::admin_server::{Admin, AdminServer};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

const REV: &str = "0123456789abcdef0123456789abcdef01234567";

// ---------------------------------------------------------------------------------------------
// certificates

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

struct Leaf {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    fn issue(&self, common_name: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params
            .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
            .unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// the fake hub

#[derive(Debug, Default)]
struct Received {
    applies: Vec<pb::ApplyRequest>,
    deletes: Vec<pb::DeleteRequest>,
    gets: Vec<pb::GetRequest>,
    statuses: Vec<pb::StatusRequest>,
    tokens: Vec<pb::CreateTokenRequest>,
    /// Common names of the client certificates that called.
    callers: Vec<String>,
}

#[derive(Default)]
struct State {
    received: Received,
    /// (kind, name) → JSON, as a hub would store them.
    stored: BTreeMap<(String, String), String>,
}

#[derive(Clone, Default)]
struct FakeHub {
    state: Arc<Mutex<State>>,
    targets: Arc<Mutex<Vec<pb::TargetStatus>>>,
    clusters: Arc<Vec<pb::ClusterInfo>>,
}

impl FakeHub {
    fn record_caller<T>(&self, request: &Request<T>) {
        let cn = request
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| common_name(c.as_ref())))
            .unwrap_or_default();
        self.state.lock().unwrap().received.callers.push(cn);
    }
}

fn common_name(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The fake's paging: one item per page (token: the next index), so that every listing
/// exercises the client's following of pages.
fn page_of_one<T: Clone>(items: &[T], token: &str) -> (Vec<T>, String) {
    let from: usize = if token.is_empty() {
        0
    } else {
        token.parse().unwrap()
    };
    let page = items.iter().skip(from).take(1).cloned().collect();
    let next = if from + 1 < items.len() {
        (from + 1).to_string()
    } else {
        String::new()
    };
    (page, next)
}

#[tonic::async_trait]
impl Admin for FakeHub {
    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        self.record_caller(&request);
        let request = request.into_inner();
        let mut state = self.state.lock().unwrap();
        state.received.applies.push(request.clone());
        // Validate everything first, as the real hub does: all or nothing.
        let mut parsed = Vec::new();
        for doc in &request.documents {
            let value: serde_json::Value = serde_json::from_str(&doc.json)
                .map_err(|e| Status::invalid_argument(format!("{}: {e}", doc.origin)))?;
            let kind = value["kind"].as_str().unwrap_or_default().to_owned();
            if !["Repo", "App", "ClusterGroup"].contains(&kind.as_str()) {
                return Err(Status::invalid_argument(format!(
                    "{}: document: kind: unknown kind {kind:?}",
                    doc.origin
                )));
            }
            let name = value["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            parsed.push((kind, name, doc.json.clone()));
        }
        let mut outcomes = Vec::new();
        for (kind, name, json) in parsed {
            let key = (kind.clone(), name.clone());
            let action = match state.stored.get(&key) {
                None => "created",
                Some(old) if *old == json => "unchanged",
                Some(_) => "configured",
            };
            if !request.dry_run {
                state.stored.insert(key, json);
            }
            outcomes.push(pb::ApplyOutcome {
                kind,
                name,
                action: action.to_owned(),
            });
        }
        Ok(Response::new(pb::ApplyResponse { outcomes }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        self.record_caller(&request);
        let request = request.into_inner();
        let mut state = self.state.lock().unwrap();
        state.received.deletes.push(request.clone());
        let deleted = state.stored.remove(&(request.kind, request.name)).is_some();
        Ok(Response::new(pb::DeleteResponse { deleted }))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        self.record_caller(&request);
        let request = request.into_inner();
        let mut state = self.state.lock().unwrap();
        state.received.gets.push(request.clone());
        let resources = state
            .stored
            .iter()
            .filter(|((kind, name), _)| {
                (request.kind.is_empty() || *kind == request.kind)
                    && (request.name.is_empty() || *name == request.name)
            })
            .map(|((kind, name), json)| pb::ResourceDocument {
                origin: format!("{kind}/{name}"),
                json: json.clone(),
            })
            .collect();
        Ok(Response::new(pb::GetResponse { resources }))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.record_caller(&request);
        let request = request.into_inner();
        self.state
            .lock()
            .unwrap()
            .received
            .statuses
            .push(request.clone());
        let matching: Vec<pb::TargetStatus> = self
            .targets
            .lock()
            .unwrap()
            .iter()
            .filter(|t| request.app.is_empty() || t.app == request.app)
            .filter(|t| request.cluster.is_empty() || t.cluster == request.cluster)
            .cloned()
            .collect();
        let (targets, next_page_token) = page_of_one(&matching, &request.page_token);
        Ok(Response::new(pb::StatusResponse {
            targets,
            next_page_token,
        }))
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        self.record_caller(&request);
        let request = request.into_inner();
        let expires_at_unix = now() + i64::try_from(request.ttl_seconds).unwrap();
        self.state.lock().unwrap().received.tokens.push(request);
        Ok(Response::new(pb::CreateTokenResponse {
            token: "gft_0123456789abcdef".into(),
            token_id: "tok-1".into(),
            expires_at_unix,
        }))
    }

    async fn refresh_repo(
        &self,
        request: Request<pb::RefreshRepoRequest>,
    ) -> Result<Response<pb::RefreshRepoResponse>, Status> {
        self.record_caller(&request);
        Err(Status::unimplemented("the fake hub fetches no Repo"))
    }

    async fn list_notifiers(
        &self,
        request: Request<pb::ListNotifiersRequest>,
    ) -> Result<Response<pb::ListNotifiersResponse>, Status> {
        self.record_caller(&request);
        Ok(Response::new(pb::ListNotifiersResponse::default()))
    }

    async fn diff_live(
        &self,
        request: Request<pb::DiffLiveRequest>,
    ) -> Result<Response<pb::DiffLiveResponse>, Status> {
        self.record_caller(&request);
        Err(Status::unimplemented(
            "the fake hub has no spokes to diff on",
        ))
    }

    async fn list_clusters(
        &self,
        request: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersResponse>, Status> {
        self.record_caller(&request);
        let request = request.into_inner();
        let (clusters, next_page_token) = page_of_one(&self.clusters, &request.page_token);
        Ok(Response::new(pb::ListClustersResponse {
            clusters,
            next_page_token,
        }))
    }
}

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// harness

struct Harness {
    fake: FakeHub,
    ca: Ca,
    server: String,
    dir: tempfile::TempDir,
    config: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Harness {
    async fn start() -> Harness {
        Self::start_with(FakeHub::default()).await
    }

    async fn start_with(fake: FakeHub) -> Harness {
        gitfleet_cli::client::install_crypto_provider();
        let ca = Ca::new("gitfleet test CA");
        let server_cert = ca.issue("hub", &["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(&server_cert.cert, &server_cert.key))
            .client_ca_root(Certificate::from_pem(&ca.pem));
        let router = Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(AdminServer::new(fake.clone()));
        let task = tokio::spawn(async move {
            router
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        let server = format!("https://{addr}");
        let harness = Harness {
            fake,
            ca,
            server,
            dir,
            config,
            task,
        };
        let admin = harness
            .ca
            .issue("admin", &[], ExtendedKeyUsagePurpose::ClientAuth);
        harness.write_config(&harness.ca.pem.clone(), &admin);
        harness
    }

    fn write_config(&self, ca_pem: &str, client: &Leaf) {
        ClientConfig::single(Context {
            name: "test".into(),
            server: self.server.clone(),
            certificate_authority_data: ca_pem.to_owned(),
            client_certificate_data: client.cert.clone(),
            client_key_data: client.key.clone(),
            tls_server_name: None,
        })
        .save(&self.config)
        .unwrap();
    }

    async fn run(&self, args: &[&str]) -> Result<String, CliError> {
        let config = self.config.display().to_string();
        let argv: Vec<&str> = ["gitfleet", "--config", &config]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        let mut out = Vec::new();
        run_args(argv, &mut out).await?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn write(&self, rel: &str, text: &str) -> String {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    fn received<R>(&self, f: impl FnOnce(&Received) -> R) -> R {
        f(&self.fake.state.lock().unwrap().received)
    }
}

const REPO: &str = "apiVersion: gitfleet.dev/v1
kind: Repo
metadata: { name: platform }
spec:
  url: https://git.example/platform.git
  ref: { branch: main }
";

const APP: &str = "apiVersion: gitfleet.dev/v1
kind: App
metadata: { name: guestbook }
spec:
  repo: platform
  path: apps/guestbook
  namespace: guestbook
  targets:
    - clusterSelector: { matchLabels: { env: dev } }
";

fn dir_str(path: &Path) -> String {
    path.display().to_string()
}

// ---------------------------------------------------------------------------------------------
// tests

#[tokio::test]
async fn apply_sends_every_document_with_its_origin_and_prints_what_changed() {
    let hub = Harness::start().await;
    let repo = hub.write("fleet/00-repo.yaml", REPO);
    let apps = hub.write(
        "fleet/apps/guestbook.yaml",
        &format!("---\n{APP}---\n# nothing\n---\napiVersion: gitfleet.dev/v1\nkind: ClusterGroup\nmetadata: {{ name: eu }}\nspec: {{ selector: {{ matchLabels: {{ region: eu }} }} }}\n"),
    );
    let fleet = dir_str(&hub.dir.path().join("fleet"));

    let out = hub.run(&["apply", "-f", &fleet]).await.unwrap();
    // Path order: "00-repo.yaml" sorts before "apps/".
    assert_eq!(
        out,
        "repo/platform created\napp/guestbook created\nclustergroup/eu created\n"
    );
    let (origins, first_json) = hub.received(|r| {
        assert_eq!(r.applies.len(), 1);
        assert!(!r.applies[0].dry_run);
        let docs = &r.applies[0].documents;
        (
            docs.iter().map(|d| d.origin.clone()).collect::<Vec<_>>(),
            docs[0].json.clone(),
        )
    });
    assert_eq!(
        origins,
        [
            format!("{repo}#0"),
            format!("{apps}#0"),
            format!("{apps}#2")
        ]
    );
    let first: serde_json::Value = serde_json::from_str(&first_json).unwrap();
    assert_eq!(first["spec"]["ref"]["branch"], "main");
    assert_eq!(first["metadata"]["name"], "platform");

    // Again: nothing changed; a dry run of a changed App reports without storing.
    let out = hub.run(&["apply", "-f", &repo]).await.unwrap();
    assert_eq!(out, "repo/platform unchanged\n");
    let changed = hub.write("changed.yaml", &APP.replace("env: dev", "env: prod"));
    let out = hub
        .run(&["apply", "-f", &changed, "--dry-run"])
        .await
        .unwrap();
    assert_eq!(out, "app/guestbook configured (dry run)\n");
    assert!(hub.received(|r| r.applies[2].dry_run));
    let out = hub
        .run(&["apply", "-f", &changed, "-o", "json"])
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["outcomes"][0]["action"], "configured");
    assert_eq!(json["dryRun"], false);

    // Every call came with the admin certificate.
    hub.received(|r| assert!(r.callers.iter().all(|c| c == "admin"), "{:?}", r.callers));
}

#[tokio::test]
async fn a_yaml_error_names_file_and_line_and_sends_nothing() {
    let hub = Harness::start().await;
    let good = hub.write("a-good.yaml", REPO);
    let bad = hub.write(
        "b-bad.yaml",
        &format!("{APP}---\nkind: App\nmetadata:\n  name: [oops\n"),
    );
    let err = hub
        .run(&["apply", "-f", &good, "-f", &bad])
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 1);
    let text = err.to_string();
    assert!(text.starts_with(&format!("{bad}:")), "{text}");
    assert!(text.contains("invalid YAML"), "{text}");
    assert!(text.ends_with("nothing was applied"), "{text}");
    hub.received(|r| assert!(r.applies.is_empty(), "nothing may reach the hub"));
}

#[tokio::test]
async fn the_hubs_validation_errors_come_through_verbatim() {
    let hub = Harness::start().await;
    let file = hub.write("widget.yaml", "kind: Widget\nmetadata: { name: w }\n");
    let err = hub.run(&["apply", "-f", &file]).await.unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert_eq!(
        err.to_string(),
        format!("{file}#0: document: kind: unknown kind \"Widget\"")
    );
}

#[tokio::test]
async fn apply_reads_standard_input_of_the_binary_too() {
    // `-f -` reads the process's stdin; in-process we can only check that an empty stdin is a
    // clear error rather than a hang or an empty apply. (The e2e tests pipe real input.)
    let hub = Harness::start().await;
    let empty = hub.write("empty.yaml", "---\n");
    let err = hub.run(&["apply", "-f", &empty]).await.unwrap_err();
    assert!(err.to_string().starts_with("no documents in"), "{err}");
    hub.received(|r| assert!(r.applies.is_empty()));
}

fn sample_targets() -> Vec<pb::TargetStatus> {
    let target = |cluster: &str| pb::TargetStatus {
        app: "guestbook".into(),
        cluster: cluster.into(),
        desired_revision: REV.into(),
        applied_revision: REV.into(),
        sync: pb::SyncState::Synced as i32,
        health: pb::HealthState::Healthy as i32,
        message: String::new(),
        resources: vec![pb::ResourceResult {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "guestbook".into(),
            name: "web".into(),
            action: "applied".into(),
            health: pb::HealthState::Healthy as i32,
            message: String::new(),
            source_file: "apps/guestbook/web.yaml".into(),
            hook: String::new(),
        }],
        updated_at_unix: now() - 3,
        cluster_connected: true,
        held: String::new(),
    };
    let mut broken = target("prod-1");
    broken.sync = pb::SyncState::OutOfSync as i32;
    broken.health = pb::HealthState::Degraded as i32;
    broken.message = "1 of 2 resources failed".into();
    broken.resources.push(pb::ResourceResult {
        api_version: "example.com/v1".into(),
        kind: "Widget".into(),
        namespace: "guestbook".into(),
        name: "odd".into(),
        action: "failed".into(),
        health: pb::HealthState::Missing as i32,
        message: "no kind Widget is registered".into(),
        source_file: "apps/guestbook/widget.yaml".into(),
        hook: String::new(),
    });
    vec![broken, target("dev-1")]
}

#[tokio::test]
async fn status_prints_a_table_for_people_and_full_documents_for_scripts() {
    let hub = Harness::start_with(FakeHub {
        targets: Arc::new(Mutex::new(sample_targets())),
        ..FakeHub::default()
    })
    .await;

    let out = hub.run(&["status"]).await.unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("APP"), "{out}");
    assert!(
        lines[1].starts_with("guestbook   dev-1     01234567   01234567   Synced"),
        "{out}"
    );
    assert!(
        lines[2].contains("OutOfSync   Degraded   1 of 2 resources failed"),
        "{out}"
    );
    // The failed object is listed with its file and message even without --resources.
    assert!(out.contains("Widget/guestbook/odd"), "{out}");
    assert!(
        out.contains("apps/guestbook/widget.yaml   no kind Widget is registered"),
        "{out}"
    );
    assert!(!out.contains("Deployment/guestbook/web"), "{out}");
    assert!(!out.contains(REV), "tables shorten revisions");

    let out = hub.run(&["status", "--resources"]).await.unwrap();
    assert!(out.contains("Deployment/guestbook/web"), "{out}");

    let out = hub
        .run(&[
            "status",
            "--app",
            "guestbook",
            "--cluster",
            "dev-1",
            "-o",
            "json",
        ])
        .await
        .unwrap();
    let report: StatusReport = serde_json::from_str(&out).unwrap();
    assert_eq!(report.targets.len(), 1);
    assert_eq!(report.targets[0].applied_revision, REV);
    hub.received(|r| {
        let last = r.statuses.last().unwrap();
        assert_eq!(
            (last.app.as_str(), last.cluster.as_str()),
            ("guestbook", "dev-1")
        );
    });

    let out = hub.run(&["status", "-o", "yaml"]).await.unwrap();
    let report: StatusReport = serde_saphyr::from_str(&out).unwrap();
    assert_eq!(report.targets.len(), 2);
    // The fake serves one Target per page: the CLI followed the token to the second page.
    hub.received(|r| {
        let tokens: Vec<&str> = r
            .statuses
            .iter()
            .rev()
            .take(2)
            .map(|s| s.page_token.as_str())
            .collect();
        assert_eq!(tokens, ["1", ""]);
    });
    assert_eq!(
        report.targets[1].resources[1].message,
        "no kind Widget is registered"
    );
}

#[tokio::test]
async fn get_and_delete_work_on_stored_resources() {
    let hub = Harness::start().await;
    let file = hub.write("fleet.yaml", &format!("{REPO}---\n{APP}"));
    hub.run(&["apply", "-f", &file]).await.unwrap();

    let out = hub.run(&["get", "apps"]).await.unwrap();
    let normalised: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        normalised,
        [
            "NAME REPO PATH NAMESPACE TARGETS SUSPENDED PROJECT",
            "guestbook platform apps/guestbook guestbook env=dev no default"
        ]
    );
    hub.received(|r| assert_eq!(r.gets.last().unwrap().kind, "App"));

    // A named get prints the document itself, which applies back unchanged.
    let yaml = hub
        .run(&["get", "app", "guestbook", "-o", "yaml"])
        .await
        .unwrap();
    let value: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(value["spec"]["path"], "apps/guestbook");
    let again = hub.write("again.yaml", &yaml);
    assert_eq!(
        hub.run(&["apply", "-f", &again]).await.unwrap(),
        "app/guestbook unchanged\n"
    );

    let all = hub.run(&["get", "all", "-o", "json"]).await.unwrap();
    let list: serde_json::Value = serde_json::from_str(&all).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);

    let err = hub.run(&["get", "app", "nope"]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "App \"nope\" not found; list what exists with `gitfleet get apps`"
    );

    assert_eq!(
        hub.run(&["delete", "app", "guestbook"]).await.unwrap(),
        "app/guestbook deleted\n"
    );
    let err = hub.run(&["delete", "app", "guestbook"]).await.unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().contains("not found"), "{err}");
    assert_eq!(
        hub.run(&["get", "apps"]).await.unwrap(),
        "No resources found\n"
    );
}

#[tokio::test]
async fn token_create_sends_the_options_and_prints_the_token_once() {
    let hub = Harness::start().await;
    let out = hub
        .run(&[
            "token",
            "create",
            "--ttl",
            "2h",
            "--label",
            "env=prod",
            "--label",
            "region=eu",
            "--max-uses",
            "3",
            "--description",
            "eu wave",
            "--allow-label-key",
            "zone",
            "--cluster",
            "eu-prod-3",
        ])
        .await
        .unwrap();
    assert_eq!(out.lines().next(), Some("gft_0123456789abcdef"));
    assert!(
        out.contains("(in 2h)") || out.contains("(in 1h59m)"),
        "{out}"
    );
    hub.received(|r| {
        let t = &r.tokens[0];
        assert_eq!(t.ttl_seconds, 7200);
        assert_eq!(t.max_uses, 3);
        assert_eq!(t.description, "eu wave");
        assert_eq!(t.labels.get("env").map(String::as_str), Some("prod"));
        assert_eq!(t.labels.get("region").map(String::as_str), Some("eu"));
        assert_eq!(t.allowed_label_keys, ["zone"]);
        assert_eq!(t.cluster_name, "eu-prod-3");
    });

    let out = hub.run(&["token", "create", "-o", "json"]).await.unwrap();
    let report: TokenReport = serde_json::from_str(&out).unwrap();
    assert_eq!(report.token, "gft_0123456789abcdef");
    assert!(report.expires_at.is_some());
    hub.received(|r| {
        assert_eq!(r.tokens[1].ttl_seconds, 3600, "default ttl");
        assert_eq!(r.tokens[1].max_uses, 0, "unlimited by default");
        assert!(r.tokens[1].allowed_label_keys.is_empty());
        assert_eq!(r.tokens[1].cluster_name, "", "any cluster by default");
    });
}

#[tokio::test]
async fn cluster_list_shows_connection_and_last_contact() {
    let cluster = |name: &str, connected: bool, ago: i64| pb::ClusterInfo {
        name: name.into(),
        labels: [("env".to_owned(), "dev".to_owned())].into_iter().collect(),
        agent_version: "0.1.0".into(),
        connected,
        last_contact_unix: if ago < 0 { 0 } else { now() - ago },
        registered_at_unix: now() - 3600,
        certificate_expires_unix: now() + 86_400,
        revoked: false,
    };
    let hub = Harness::start_with(FakeHub {
        clusters: Arc::new(vec![
            cluster("dev-2", false, -1),
            cluster("dev-1", true, 120),
        ]),
        ..FakeHub::default()
    })
    .await;
    let out = hub.run(&["cluster", "list"]).await.unwrap();
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(
        rows[0],
        ["NAME", "LABELS", "CONNECTED", "LAST CONTACT", "AGENT"]
    );
    assert_eq!(rows[1][..3], ["dev-1", "env=dev", "yes"]);
    assert!(
        rows[1][3].ends_with(" ago") && rows[1][3].starts_with('2'),
        "{out}"
    );
    assert_eq!(rows[2], ["dev-2", "env=dev", "no", "never", "0.1.0"]);

    let out = hub.run(&["cluster", "list", "-o", "json"]).await.unwrap();
    let report: ClusterListReport = serde_json::from_str(&out).unwrap();
    assert_eq!(report.clusters[0].name, "dev-1");
    assert!(report.clusters[0].connected);
}

#[tokio::test]
async fn a_client_certificate_from_a_foreign_ca_is_rejected_clearly() {
    let hub = Harness::start().await;
    let foreign = Ca::new("someone else's CA");
    let intruder = foreign.issue("admin", &[], ExtendedKeyUsagePurpose::ClientAuth);
    hub.write_config(&hub.ca.pem, &intruder);

    let err = hub.run(&["status"]).await.unwrap_err();
    assert_eq!(err.exit_code(), 1);
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("certificate rejected talking to {}", hub.server)),
        "{text}"
    );
    assert!(
        text.contains("the hub does not trust this admin certificate"),
        "{text}"
    );
    hub.received(|r| assert!(r.statuses.is_empty(), "the call must not reach the service"));
}

#[tokio::test]
async fn a_hub_certificate_from_a_foreign_ca_is_rejected_clearly() {
    let hub = Harness::start().await;
    let foreign = Ca::new("not the hub's CA");
    let admin = hub
        .ca
        .issue("admin", &[], ExtendedKeyUsagePurpose::ClientAuth);
    hub.write_config(&foreign.pem, &admin);

    let err = hub.run(&["cluster", "list"]).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("certificate rejected talking to {}", hub.server)),
        "{text}"
    );
    assert!(text.contains("admin.gitfleetconfig"), "{text}");
    assert!(
        text.contains("the hub's certificate is not signed by this context's CA"),
        "{text}"
    );
}

#[tokio::test]
async fn a_hub_certificate_for_another_name_is_rejected_clearly() {
    let hub = Harness::start().await;
    let mut config = ClientConfig::load(&hub.config).unwrap();
    config.contexts[0].tls_server_name = Some("elsewhere.example".into());
    config.save(&hub.config).unwrap();
    let err = hub.run(&["status"]).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("does not name this address"), "{text}");
    assert!(text.contains("tls-server-name"), "{text}");
}

#[tokio::test]
async fn an_unknown_context_lists_the_known_ones() {
    let hub = Harness::start().await;
    let err = hub.run(&["--context", "prod", "status"]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no context named \"prod\" in {} (contexts: test); pick one with --context or `gitfleet config use-context NAME`",
            hub.config.display()
        )
    );
}

#[tokio::test]
async fn status_wait_times_out_naming_what_is_not_converged() {
    let hub = Harness::start_with(FakeHub {
        targets: Arc::new(Mutex::new(sample_targets())),
        ..FakeHub::default()
    })
    .await;
    let err = hub
        .run(&["status", "--wait", "--timeout", "1s", "--interval", "10ms"])
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert_eq!(
        err.to_string(),
        "timed out after 1s waiting for Targets to be synced and healthy: 1 of 2 not yet: \
         guestbook on prod-1 is OutOfSync/Degraded at 01234567 (wants 01234567): 1 of 2 resources failed"
    );
    // Two pages per poll.
    hub.received(|r| assert!(r.statuses.len() >= 4, "it polled"));
}

#[tokio::test]
async fn status_wait_returns_once_every_target_converges() {
    let hub = Arc::new(
        Harness::start_with(FakeHub {
            targets: Arc::new(Mutex::new(sample_targets())),
            ..FakeHub::default()
        })
        .await,
    );
    let waiting = {
        let hub = Arc::clone(&hub);
        tokio::spawn(async move {
            hub.run(&[
                "status",
                "--watch",
                "--wait",
                "--interval",
                "10ms",
                "-o",
                "json",
            ])
            .await
        })
    };
    // Let it see the unconverged state a few times, then fix the broken Target.
    poll_until("three status polls", || {
        hub.received(|r| r.statuses.len() >= 6)
    })
    .await;
    {
        let mut targets = hub.fake.targets.lock().unwrap();
        let broken = targets.iter_mut().find(|t| t.cluster == "prod-1").unwrap();
        broken.sync = pb::SyncState::Synced as i32;
        broken.health = pb::HealthState::Healthy as i32;
        broken.message = String::new();
    }
    let out = waiting.await.unwrap().unwrap();
    // --watch -o json prints one report per change, as JSON Lines.
    let reports: Vec<StatusReport> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), 2, "one line per change, not per poll: {out}");
    assert_eq!(reports[0].targets[1].sync, Sync::OutOfSync);
    assert!(reports[1].targets.iter().all(|t| t.sync == Sync::Synced));
}

async fn poll_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
