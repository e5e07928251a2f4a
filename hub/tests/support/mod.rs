//! Test helpers: a hub in a tempdir, a local Git repository, an admin client and a fake spoke
//! that speaks the real protocol over real mutual TLS.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod etcd;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gitfleet_core::gitfleetconfig::ClientConfig;
use gitfleet_hub::runtime::{self, HubConfig, HubHandle};
use gitfleet_proto::v1 as pb;
use gitfleet_proto::v1::admin_client::AdminClient;
use gitfleet_proto::v1::hub_message::Msg as Out;
use gitfleet_proto::v1::link_client::LinkClient;
use gitfleet_proto::v1::registration_client::RegistrationClient;
use gitfleet_proto::v1::spoke_message::Msg as In;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Status, Streaming};

pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `check` until it yields a value or the deadline passes.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn start_hub(data_dir: &Path) -> HubHandle {
    runtime::start(HubConfig::for_tests(data_dir))
        .await
        .unwrap()
}

pub async fn channel(url: &str, ca_pem: &str, identity: Option<(&str, &str)>) -> Channel {
    try_channel(url, ca_pem, identity).await.unwrap()
}

pub async fn try_channel(
    url: &str,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(url.to_owned())
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

/// An Admin client with the credential the hub wrote.
pub async fn admin(hub: &HubHandle) -> AdminClient<Channel> {
    let cfg = admin_config(hub);
    let ctx = cfg.context(None).unwrap();
    assert_eq!(ctx.server, hub.grpc_url());
    let ch = channel(
        &ctx.server,
        &ctx.certificate_authority_data,
        Some((&ctx.client_certificate_data, &ctx.client_key_data)),
    )
    .await;
    AdminClient::new(ch)
}

// --- Git -------------------------------------------------------------------------------------

pub struct GitRepo {
    pub dir: tempfile::TempDir,
}

impl GitRepo {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path()).unwrap();
        repo.set_head("refs/heads/main").unwrap();
        Self { dir }
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }

    /// Writes `files` and commits them on main; returns the commit id.
    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        let repo = git2::Repository::open(self.dir.path()).unwrap();
        for (path, content) in files {
            let full = self.dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, content).unwrap();
        }
        let mut index = repo.index().unwrap();
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("test", "test@example.com").unwrap();
        let parent = repo
            .head()
            .ok()
            .and_then(|h| h.target())
            .map(|oid| repo.find_commit(oid).unwrap());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .unwrap()
            .to_string()
    }
}

pub fn doc(json: serde_json::Value) -> pb::ResourceDocument {
    pb::ResourceDocument {
        origin: "test".into(),
        json: json.to_string(),
    }
}

pub fn repo_doc(name: &str, url: &str) -> pb::ResourceDocument {
    doc(serde_json::json!({
        "apiVersion": "gitfleet.dev/v1", "kind": "Repo",
        "metadata": {"name": name},
        "spec": {"url": url, "ref": {"branch": "main"}, "pollInterval": "1s"}
    }))
}

pub fn app_doc(name: &str, repo: &str, path: &str, env: &str) -> pb::ResourceDocument {
    doc(serde_json::json!({
        "apiVersion": "gitfleet.dev/v1", "kind": "App",
        "metadata": {"name": name},
        "spec": {
            "repo": repo, "path": path, "namespace": name,
            "targets": [{"clusterSelector": {"matchLabels": {"env": env}}}]
        }
    }))
}

// --- the fake spoke ----------------------------------------------------------------------------

/// A spoke identity: its own key and the certificate the hub issued.
#[derive(Clone)]
pub struct SpokeIdentity {
    pub cluster: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

pub fn csr(key: &rcgen::KeyPair) -> String {
    rcgen::CertificateParams::default()
        .serialize_request(key)
        .unwrap()
        .pem()
        .unwrap()
}

/// Registers over TLS without a client certificate.
pub async fn try_register(
    hub: &HubHandle,
    cluster: &str,
    token: &str,
    labels: &[(&str, &str)],
) -> Result<SpokeIdentity, Status> {
    try_register_with_key(
        hub,
        cluster,
        token,
        labels,
        &rcgen::KeyPair::generate().unwrap(),
    )
    .await
}

/// Registers with a given key (a retry after a lost response uses the same key).
pub async fn try_register_with_key(
    hub: &HubHandle,
    cluster: &str,
    token: &str,
    labels: &[(&str, &str)],
    key: &rcgen::KeyPair,
) -> Result<SpokeIdentity, Status> {
    let ch = channel(&hub.grpc_url(), hub.ca_pem(), None).await;
    let resp = RegistrationClient::new(ch)
        .register(pb::RegisterRequest {
            token: token.into(),
            cluster_name: cluster.into(),
            csr_pem: csr(key),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            agent_version: "test-0.1".into(),
        })
        .await?
        .into_inner();
    match resp.outcome {
        Some(pb::register_response::Outcome::Issued(i)) => Ok(SpokeIdentity {
            cluster: i.cluster_name,
            cert_pem: i.certificate_pem,
            key_pem: key.serialize_pem(),
            ca_pem: i.ca_pem,
        }),
        other => panic!("unexpected registration outcome {other:?}"),
    }
}

/// Registers `cluster` with a token of its own that gives it `labels`.
pub async fn register(hub: &HubHandle, cluster: &str, labels: &[(&str, &str)]) -> SpokeIdentity {
    let token = hub
        .create_token(Duration::from_secs(600), owned(labels), 1)
        .await
        .unwrap();
    try_register(hub, cluster, &token, labels).await.unwrap()
}

pub fn owned(labels: &[(&str, &str)]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// What a fake spoke holds.
#[derive(Debug, Clone, Default)]
pub struct SpokeView {
    pub epoch: String,
    pub generation: u64,
    pub targets: BTreeMap<String, pb::TargetSpec>,
    pub acked_seq: u64,
    pub snapshots: usize,
    pub deltas: usize,
    pub goodbye: Option<pb::Goodbye>,
    pub renewed: Option<pb::RenewResponse>,
    /// Every credential received.
    pub credentials: Vec<pb::RepoCredential>,
    /// Upserts and removals of the last delta received.
    pub last_delta: (usize, usize),
    /// Every diff request received (`gitfleet diff --live`).
    pub diff_requests: Vec<pb::DiffRequest>,
}

impl SpokeView {
    pub fn commit_of(&self, app: &str) -> Option<String> {
        self.targets
            .get(app)
            .and_then(|t| t.source.as_ref())
            .map(|s| s.commit.clone())
    }

    fn apply(&mut self, msg: Out) {
        match msg {
            Out::Desired(d) => {
                if d.snapshot {
                    self.targets.clear();
                    self.snapshots += 1;
                } else {
                    assert_eq!(
                        d.base_generation, self.generation,
                        "delta on a generation the spoke does not hold"
                    );
                    self.deltas += 1;
                    self.last_delta = (d.upserts.len(), d.removals.len());
                }
                for t in d.upserts {
                    self.targets.insert(t.target_id.clone(), t);
                }
                for r in d.removals {
                    self.targets.remove(&r);
                }
                self.generation = d.generation;
                self.epoch = d.hub_epoch;
                self.credentials.extend(d.credentials);
            }
            Out::Ack(a) => {
                assert!(a.acked_seq >= self.acked_seq, "acks never go backwards");
                self.acked_seq = a.acked_seq;
            }
            Out::Renewed(r) => self.renewed = Some(r),
            Out::Goodbye(g) => self.goodbye = Some(g),
            Out::Diff(d) => self.diff_requests.push(d),
        }
    }
}

/// One live session of a fake spoke.
pub struct FakeSpoke {
    pub id: SpokeIdentity,
    pub view: SpokeView,
    tx: mpsc::Sender<pb::SpokeMessage>,
    inbound: Streaming<pb::HubMessage>,
    /// The error the stream ended with, if it did.
    pub ended: Option<Status>,
}

impl FakeSpoke {
    /// Opens a session saying hello with what `view` holds.
    pub async fn connect(
        hub_url: &str,
        id: &SpokeIdentity,
        view: SpokeView,
    ) -> Result<Self, Status> {
        let hello_cluster = id.cluster.clone();
        Self::connect_as(hub_url, id, view, &hello_cluster).await
    }

    pub async fn connect_as(
        hub_url: &str,
        id: &SpokeIdentity,
        view: SpokeView,
        hello_cluster: &str,
    ) -> Result<Self, Status> {
        let ch = channel(hub_url, &id.ca_pem, Some((&id.cert_pem, &id.key_pem))).await;
        let (tx, rx) = mpsc::channel(16);
        tx.send(pb::SpokeMessage {
            msg: Some(In::Hello(pb::Hello {
                cluster: hello_cluster.into(),
                agent_version: "test-0.1".into(),
                desired_generation: view.generation,
                last_acked_seq: view.acked_seq,
                hub_epoch: view.epoch.clone(),
            })),
        })
        .await
        .unwrap();
        let inbound = LinkClient::new(ch)
            .session(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Self {
            id: id.clone(),
            view,
            tx,
            inbound,
            ended: None,
        })
    }

    pub async fn send(&self, msg: In) {
        self.tx
            .send(pb::SpokeMessage { msg: Some(msg) })
            .await
            .unwrap();
    }

    pub async fn send_raw(&self, msg: pb::SpokeMessage) {
        self.tx.send(msg).await.unwrap();
    }

    pub async fn report(&self, seq: u64, app: &str, revision: &str, message: &str) {
        let cluster = self.id.cluster.clone();
        self.report_as(&cluster, seq, app, revision, message).await;
    }

    pub async fn report_as(
        &self,
        cluster: &str,
        seq: u64,
        app: &str,
        revision: &str,
        message: &str,
    ) {
        self.send(In::Status(pb::StatusReport {
            seq,
            cluster: cluster.into(),
            target_id: app.into(),
            revision: revision.into(),
            spec_generation: 1,
            sync: pb::SyncState::Synced as i32,
            health: pb::HealthState::Healthy as i32,
            message: message.into(),
            resources: vec![pb::ResourceResult {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                namespace: app.into(),
                name: "cfg".into(),
                action: "applied".into(),
                health: pb::HealthState::Healthy as i32,
                message: String::new(),
                source_file: format!("apps/{app}/cm.yaml"),
                hook: String::new(),
            }],
            observed_at_unix: 1,
            trace: None,
            chart_digest: String::new(),
        }))
        .await;
    }

    /// Reads messages until `cond` holds on the view (or the stream ends: then panics).
    pub async fn until(&mut self, what: &str, cond: impl Fn(&SpokeView) -> bool) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !cond(&self.view) {
            let next = tokio::time::timeout_at(deadline, self.inbound.message())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; view: {:?}", self.view));
            match next {
                Ok(Some(m)) => self
                    .view
                    .apply(m.msg.expect("hub messages are never empty")),
                Ok(None) => panic!("stream ended while waiting for {what}"),
                Err(status) => panic!("stream failed while waiting for {what}: {status}"),
            }
        }
    }

    /// Reads until the stream ends; returns the error status it ended with (None: clean end).
    pub async fn until_end(&mut self) -> Option<Status> {
        loop {
            let next = tokio::time::timeout(DEADLINE, self.inbound.message())
                .await
                .expect("stream did not end in time");
            match next {
                Ok(Some(m)) => self
                    .view
                    .apply(m.msg.expect("hub messages are never empty")),
                Ok(None) => return None,
                Err(status) => {
                    self.ended = Some(status.clone());
                    return Some(status);
                }
            }
        }
    }

    /// Ends the outbound stream cleanly (the hub reads its end) and keeps reading.
    pub fn end_stream(&mut self) {
        let (closed, _) = mpsc::channel(1);
        self.tx = closed;
    }

    /// Closes the outbound side; the hub sees the stream end.
    pub fn close(self) -> SpokeView {
        self.view
    }
}

pub fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("hub");
    (d, p)
}

// --- credentials -------------------------------------------------------------------------------

/// Makes the hub whose data directory is `data` fetch `url` (an https URL, which tests cannot
/// serve) from the local `repo`: the cache of `url` rewrites it (`url.<repo>.insteadOf`). No
/// credential is sent over the local transport; this is for checking where credentials go.
pub fn serve_as(data: &Path, url: &str, repo: &GitRepo) {
    let cache = gitfleet_hub::git::GitCache::new(data.join("git"), 1, DEADLINE).cache_dir(url);
    let bare = git2::Repository::init_bare(cache).unwrap();
    bare.config()
        .unwrap()
        .set_str(&format!("url.{}.insteadOf", repo.url()), url)
        .unwrap();
}

/// What an HTTP server that asks every request for a password saw.
#[derive(Clone, Default)]
pub struct PasswordPrompt {
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl PasswordPrompt {
    /// Answers every request on a free loopback port with `401` and `WWW-Authenticate: Basic`;
    /// returns its address.
    pub async fn start(&self) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = self.requests.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let requests = requests.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    requests
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&head).into_owned());
                    let _ = stream
                        .write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await;
                });
            }
        });
        addr
    }

    /// How many requests arrived.
    pub fn requests(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// The heads of the requests that carried an `Authorization` header.
    pub fn authorized(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.to_ascii_lowercase().contains("\r\nauthorization:"))
            .cloned()
            .collect()
    }
}

/// The admin credentials file the hub wrote at start.
pub fn admin_config(hub: &HubHandle) -> ClientConfig {
    let text = std::fs::read_to_string(hub.admin_config_path()).unwrap();
    ClientConfig::from_yaml(&text).unwrap()
}

/// The common start of a link test: cluster `dev-1` (env=dev) registered, Repo `platform` (`git`)
/// and App `web` (apps/web, on env=dev) applied, and a spoke connected that has been told `web`
/// at `commit`. Returns the cluster's identity and the spoke.
pub async fn web_on_dev_1(
    hub: &HubHandle,
    git: &GitRepo,
    commit: &str,
) -> (SpokeIdentity, FakeSpoke) {
    let id = register(hub, "dev-1", &[("env", "dev")]).await;
    admin(hub)
        .await
        .apply(pb::ApplyRequest {
            documents: vec![
                repo_doc("platform", &git.url()),
                app_doc("web", "platform", "apps/web", "dev"),
            ],
            dry_run: false,
        })
        .await
        .unwrap();
    let mut spoke = FakeSpoke::connect(&hub.grpc_url(), &id, SpokeView::default())
        .await
        .unwrap();
    spoke
        .until("web at the commit", |v| {
            v.commit_of("web").as_deref() == Some(commit)
        })
        .await;
    (id, spoke)
}
