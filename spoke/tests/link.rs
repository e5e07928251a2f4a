//! The spoke's registration and link against a fake hub speaking the real protocol over real
//! mutual TLS (certificates made here with rcgen).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gitfleet_proto::v1 as pb;
use gitfleet_proto::v1::link_server::{Link, LinkServer};
use gitfleet_proto::v1::registration_server::{Registration, RegistrationServer};
use gitfleet_spoke::identity::{self, IdentityStore};
use gitfleet_spoke::link::{self, LinkConfig, LinkState};
use gitfleet_spoke::model::{Health, SyncState, TargetStatus};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

const TOKEN: &str = "bootstrap-secret";

struct Pki {
    ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test hub CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).expect("ca");
        Self {
            ca_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn server_identity(&self, names: &[&str]) -> Identity {
        let key = rcgen::KeyPair::generate().expect("key");
        let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let params = rcgen::CertificateParams::new(names).expect("params");
        let cert = params.signed_by(&key, &self.issuer).expect("server cert");
        Identity::from_pem(cert.pem(), key.serialize_pem())
    }

    fn sign_csr(&self, csr_pem: &str, cluster: &str) -> String {
        self.sign_csr_valid(csr_pem, cluster, None)
    }

    /// Signs with the given validity (years), or rcgen's default (1975 to 4096).
    fn sign_csr_valid(&self, csr_pem: &str, cluster: &str, years: Option<(i32, i32)>) -> String {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).expect("csr");
        if let Some((from, to)) = years {
            csr.params.not_before = rcgen::date_time_ymd(from, 1, 1);
            csr.params.not_after = rcgen::date_time_ymd(to, 1, 1);
        }
        csr.params.subject_alt_names = vec![rcgen::SanType::URI(
            format!("spiffe://gitfleet/cluster/{cluster}")
                .try_into()
                .expect("uri"),
        )];
        csr.signed_by(&self.issuer).expect("sign").pem()
    }
}

#[derive(Default)]
struct HubState {
    registrations: usize,
    renewals: usize,
    hellos: Vec<pb::Hello>,
    reports: Vec<pb::StatusReport>,
    diffs: Vec<pb::DiffResult>,
    heartbeats: usize,
    /// Ack reports as they arrive.
    ack: bool,
    /// What to send right after each Hello.
    on_hello: Vec<pb::HubMessage>,
    session: Option<mpsc::Sender<Result<pb::HubMessage, Status>>>,
    reader: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Clone)]
struct FakeHub {
    pki: Arc<Pki>,
    state: Arc<Mutex<HubState>>,
}

impl FakeHub {
    fn with<R>(&self, f: impl FnOnce(&mut HubState) -> R) -> R {
        f(&mut self.state.lock().expect("hub state"))
    }

    async fn push(&self, msg: pb::hub_message::Msg) {
        let tx = self.with(|s| s.session.clone()).expect("a live session");
        tx.send(Ok(pb::HubMessage { msg: Some(msg) }))
            .await
            .expect("send");
    }

    /// Ends the current stream abruptly, as a crashing hub would.
    fn drop_session(&self) {
        self.with(|s| {
            s.session = None;
            if let Some(reader) = s.reader.take() {
                reader.abort();
            }
        });
    }
}

#[tonic::async_trait]
impl Registration for FakeHub {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let r = request.into_inner();
        if r.token != TOKEN {
            return Err(Status::unauthenticated("unknown bootstrap token"));
        }
        self.with(|s| s.registrations += 1);
        let certificate_pem = self.pki.sign_csr(&r.csr_pem, &r.cluster_name);
        Ok(Response::new(pb::RegisterResponse {
            outcome: Some(pb::register_response::Outcome::Issued(pb::Issued {
                certificate_pem,
                ca_pem: self.pki.ca_pem.clone(),
                cluster_name: r.cluster_name,
            })),
        }))
    }
}

#[tonic::async_trait]
impl Link for FakeHub {
    type SessionStream = ReceiverStream<Result<pb::HubMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<pb::SpokeMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        if request.peer_certs().is_none_or(|c| c.is_empty()) {
            return Err(Status::unauthenticated("a client certificate is required"));
        }
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let hub = self.clone();
        let out = tx.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                match message.msg {
                    Some(pb::spoke_message::Msg::Hello(hello)) => {
                        let replies = hub.with(|s| {
                            s.hellos.push(hello);
                            s.on_hello.clone()
                        });
                        for reply in replies {
                            let _ = out.send(Ok(reply)).await;
                        }
                    }
                    Some(pb::spoke_message::Msg::Status(report)) => {
                        let seq = report.seq;
                        let ack = hub.with(|s| {
                            s.reports.push(report);
                            s.ack
                        });
                        if ack {
                            let ack = pb::HubMessage {
                                msg: Some(pb::hub_message::Msg::Ack(pb::StatusAck {
                                    acked_seq: seq,
                                })),
                            };
                            let _ = out.send(Ok(ack)).await;
                        }
                    }
                    Some(pb::spoke_message::Msg::Renew(renew)) => {
                        hub.with(|s| s.renewals += 1);
                        let renewed = pb::RenewResponse {
                            certificate_pem: hub.pki.sign_csr(&renew.csr_pem, "edge-1"),
                            ca_pem: hub.pki.ca_pem.clone(),
                        };
                        let _ = out
                            .send(Ok(pb::HubMessage {
                                msg: Some(pb::hub_message::Msg::Renewed(renewed)),
                            }))
                            .await;
                    }
                    Some(pb::spoke_message::Msg::Heartbeat(_)) => hub.with(|s| s.heartbeats += 1),
                    Some(pb::spoke_message::Msg::Diff(result)) => {
                        hub.with(|s| s.diffs.push(result))
                    }
                    _ => {}
                }
            }
        });
        self.with(|s| {
            s.session = Some(tx);
            s.reader = Some(reader);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn start_hub() -> (FakeHub, String) {
    start_hub_named(&["localhost", "127.0.0.1"]).await
}

/// A fake hub on 127.0.0.1 whose server certificate holds only `names`.
async fn start_hub_named(names: &[&str]) -> (FakeHub, String) {
    link::install_crypto_provider();
    let pki = Arc::new(Pki::new());
    let hub = FakeHub {
        pki: pki.clone(),
        state: Arc::new(Mutex::new(HubState {
            ack: true,
            ..HubState::default()
        })),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let tls = ServerTlsConfig::new()
        .identity(pki.server_identity(names))
        .client_ca_root(Certificate::from_pem(&pki.ca_pem))
        .client_auth_optional(true);
    let server = Server::builder()
        .tls_config(tls)
        .expect("tls")
        .add_service(RegistrationServer::new(hub.clone()))
        .add_service(LinkServer::new(hub.clone()));
    tokio::spawn(server.serve_with_incoming(TcpListenerStream::new(listener)));
    (hub, url)
}

/// Polls `condition` until it holds, failing the test after 15 seconds.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn status(target: &str, message: &str) -> TargetStatus {
    TargetStatus {
        chart_digest: String::new(),
        target_id: target.into(),
        revision: "0123456789abcdef0123456789abcdef01234567".into(),
        spec_generation: 1,
        sync: SyncState::Synced,
        health: Health::Healthy,
        message: message.into(),
        resources: Vec::new(),
        observed_at_unix: 0,
        trace: BTreeMap::new(),
    }
}

fn target(id: &str, commit: &str) -> pb::TargetSpec {
    pb::TargetSpec {
        target_id: id.into(),
        app: id.into(),
        source: Some(pb::Source {
            repo_url: "file:///repo".into(),
            commit: commit.into(),
            path: "apps".into(),
            ..Default::default()
        }),
        namespace: id.into(),
        spec_generation: 1,
        ..Default::default()
    }
}

fn desired(
    generation: u64,
    base: u64,
    snapshot: bool,
    upserts: Vec<pb::TargetSpec>,
) -> pb::hub_message::Msg {
    pb::hub_message::Msg::Desired(pb::DesiredState {
        generation,
        base_generation: base,
        snapshot,
        hub_epoch: "epoch-1".into(),
        upserts,
        ..Default::default()
    })
}

fn registration(url: &str, hub: &FakeHub, token: &str) -> identity::Registration {
    identity::Registration {
        hub_urls: vec![url.to_owned()],
        hub_ca_pem: hub.pki.ca_pem.clone(),
        token: token.to_owned(),
        cluster_name: "edge-1".into(),
        labels: BTreeMap::new(),
        agent_version: "test".into(),
    }
}

#[tokio::test]
async fn registers_once_and_keeps_its_identity() {
    let (hub, url) = start_hub().await;
    let data = tempfile::TempDir::new().expect("tempdir");
    let store = IdentityStore::new(data.path());

    let refused = identity::ensure_identity(&store, Some(&registration(&url, &hub, "wrong"))).await;
    assert!(
        refused
            .expect_err("bad token")
            .to_string()
            .contains("unknown bootstrap token")
    );

    let first = identity::ensure_identity(&store, Some(&registration(&url, &hub, TOKEN)))
        .await
        .expect("register");
    assert!(first.cert_pem.contains("BEGIN CERTIFICATE"));
    assert_eq!(first.ca_pem, hub.pki.ca_pem);
    // On restart the files are enough: no token, no call to the hub.
    let again = identity::ensure_identity(&store, None)
        .await
        .expect("stored identity");
    assert_eq!(again, first);
    assert_eq!(hub.with(|s| s.registrations), 1);
}

#[tokio::test]
async fn link_delivers_desired_state_and_loses_no_report() {
    let (hub, url) = start_hub().await;
    hub.with(|s| {
        s.on_hello = vec![pb::HubMessage {
            msg: Some(desired(
                1,
                0,
                true,
                vec![target("web", "a".repeat(40).as_str())],
            )),
        }]
    });
    let (data, identity) = registered(&hub, &url).await;

    let mut config = LinkConfig::new(url.clone(), "edge-1", data.path().join("state"));
    config.backoff_base = Duration::from_millis(20);
    config.backoff_cap = Duration::from_millis(100);
    let state = LinkState::load(config.clone()).expect("state");
    let cancel = CancellationToken::new();
    let task = tokio::spawn(link::run(state.clone(), identity.clone(), cancel.clone()));

    // The snapshot sent after Hello becomes the desired state, persisted.
    let desired_rx = state.desired();
    eventually("snapshot applied", || desired_rx.borrow().generation == 1).await;
    assert_eq!(
        desired_rx.borrow().targets["web"].source.commit,
        "a".repeat(40)
    );
    assert!(data.path().join("state/desired.json").exists());

    // A report is numbered, sent and acked.
    assert_eq!(state.report(status("web", "one")), 1);
    eventually("report 1 acked", || {
        state.outbox().pending.is_empty() && state.outbox().last_acked == 1
    })
    .await;

    // The hub receives report 2 but crashes before acking it: the spoke keeps it and resends it.
    hub.with(|s| s.ack = false);
    assert_eq!(state.report(status("web", "two")), 2);
    eventually("report 2 received", || {
        hub.with(|s| s.reports.iter().any(|r| r.seq == 2))
    })
    .await;
    assert_eq!(state.outbox().pending.len(), 1);
    let on_disk: gitfleet_spoke::outbox::Outbox = serde_json::from_slice(
        &std::fs::read(data.path().join("state/outbox.json")).expect("outbox"),
    )
    .expect("json");
    assert_eq!(on_disk.pending[0].seq, 2, "unacked reports are on disk");
    hub.with(|s| {
        s.ack = true;
        s.on_hello.clear();
    });
    hub.drop_session();
    eventually("second hello", || hub.with(|s| s.hellos.len() == 2)).await;
    let hello = hub.with(|s| s.hellos[1].clone());
    assert_eq!(
        (
            hello.cluster.as_str(),
            hello.desired_generation,
            hello.last_acked_seq
        ),
        ("edge-1", 1, 1)
    );
    assert_eq!(hello.hub_epoch, "epoch-1");
    eventually("report 2 resent and acked", || {
        state.outbox().pending.is_empty()
    })
    .await;
    let seqs: Vec<u64> = hub.with(|s| s.reports.iter().map(|r| r.seq).collect());
    assert_eq!(seqs, [1, 2, 2]);
    assert!(hub.with(|s| s.reports.iter().all(|r| r.cluster == "edge-1")));

    // A delta on the held generation applies; one on another base makes the spoke say Hello again.
    hub.push(desired(
        2,
        1,
        false,
        vec![target("api", "b".repeat(40).as_str())],
    ))
    .await;
    eventually("delta applied", || desired_rx.borrow().generation == 2).await;
    assert_eq!(desired_rx.borrow().targets.len(), 2);
    hub.push(desired(9, 7, false, vec![])).await;
    eventually("third hello", || hub.with(|s| s.hellos.len() == 3)).await;
    assert_eq!(hub.with(|s| s.hellos[2].desired_generation), 2);
    assert_eq!(
        desired_rx.borrow().generation,
        2,
        "the stale delta was dropped"
    );

    // A revoked cluster stops reconnecting.
    eventually("session up", || hub.with(|s| s.session.is_some())).await;
    hub.push(pb::hub_message::Msg::Goodbye(pb::Goodbye {
        reason: "revoked".into(),
        retry_after_seconds: 0,
        revoked: true,
    }))
    .await;
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("link stops")
        .expect("join");

    // Restarting from the data dir keeps the desired state and the acked sequence.
    let restarted = LinkState::load(config).expect("state");
    assert_eq!(restarted.desired().borrow().generation, 2);
    assert_eq!(restarted.outbox().last_acked, 2);
    assert_eq!(restarted.report(status("web", "three")), 3);
}

#[tokio::test]
async fn a_link_without_a_valid_identity_is_refused() {
    let (hub, url) = start_hub().await;
    let data = tempfile::TempDir::new().expect("tempdir");
    // A certificate from a CA the hub does not trust.
    let foreign = Pki::new();
    let key = rcgen::KeyPair::generate().expect("key");
    let csr = identity::build_csr(&key, "edge-9").expect("csr");
    let identity = identity::Identity {
        key_pem: key.serialize_pem(),
        cert_pem: foreign.sign_csr(&csr, "edge-9"),
        ca_pem: hub.pki.ca_pem.clone(),
    };
    let mut config = LinkConfig::new(url, "edge-9", data.path().join("state"));
    config.backoff_base = Duration::from_millis(20);
    config.backoff_cap = Duration::from_millis(50);
    let state = LinkState::load(config).expect("state");
    let cancel = CancellationToken::new();
    let task = tokio::spawn(link::run(state.clone(), identity, cancel.clone()));
    // Give it several attempts; none may reach the hub's Session handler.
    let mut connected = state.connected();
    let reached = tokio::time::timeout(Duration::from_secs(2), connected.wait_for(|c| *c)).await;
    assert!(
        reached.is_err(),
        "a foreign certificate must not get a session"
    );
    assert!(hub.with(|s| s.hellos.is_empty()));
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("link stops")
        .expect("join");
}

#[tokio::test]
async fn an_aging_certificate_is_renewed_over_the_live_stream() {
    let (hub, url) = start_hub().await;
    let data = tempfile::TempDir::new().expect("tempdir");
    let store = IdentityStore::new(data.path());
    // A certificate two thirds through its life (2020 to 2030).
    let key = store.load_or_create_key().expect("key");
    let csr = identity::build_csr(&key, "edge-1").expect("csr");
    store
        .save_certificate(
            &hub.pki.sign_csr_valid(&csr, "edge-1", Some((2020, 2030))),
            &hub.pki.ca_pem,
        )
        .expect("save");
    let old = store.load().expect("load").expect("identity");

    let mut config = LinkConfig::new(url, "edge-1", data.path().join("state"));
    config.heartbeat_interval = Duration::from_millis(100);
    config.identity_store = Some(store.clone());
    let state = LinkState::load(config).expect("state");
    let cancel = CancellationToken::new();
    let task = tokio::spawn(link::run(state.clone(), old.clone(), cancel.clone()));

    // Read the files directly: `load` is for starting up, not for watching a running spoke.
    eventually("certificate renewed on disk", || {
        std::fs::read_to_string(store.cert_path()).is_ok_and(|now| now != old.cert_pem)
            && std::fs::read_to_string(store.key_path()).is_ok_and(|now| now != old.key_pem)
    })
    .await;
    let renewed = store.load().expect("load").expect("identity");
    assert_ne!(
        renewed.key_pem, old.key_pem,
        "a new key with the new certificate"
    );
    assert_eq!(
        hub.with(|s| s.renewals),
        1,
        "renewed once, not on every heartbeat"
    );
    // The stream kept running: no reconnect, and reports still flow.
    assert_eq!(state.report(status("web", "after renewal")), 1);
    eventually("report acked", || state.outbox().pending.is_empty()).await;
    assert_eq!(hub.with(|s| s.hellos.len()), 1);
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("link stops")
        .expect("join");
}

/// A data directory with an identity the hub issued.
async fn registered(hub: &FakeHub, url: &str) -> (tempfile::TempDir, identity::Identity) {
    let data = tempfile::TempDir::new().expect("tempdir");
    let identity = identity::ensure_identity(
        &IdentityStore::new(data.path()),
        Some(&registration(url, hub, TOKEN)),
    )
    .await
    .expect("register");
    (data, identity)
}

#[tokio::test]
async fn a_report_is_sent_only_once_it_is_on_disk() {
    let (hub, url) = start_hub().await;
    let (data, identity) = registered(&hub, &url).await;
    let mut config = LinkConfig::new(url, "edge-1", data.path().join("state"));
    config.heartbeat_interval = Duration::from_millis(50);
    let state = LinkState::load(config).expect("state");
    let cancel = CancellationToken::new();
    let task = tokio::spawn(link::run(state.clone(), identity, cancel.clone()));
    let mut connected = state.connected();
    tokio::time::timeout(Duration::from_secs(10), connected.wait_for(|c| *c))
        .await
        .expect("connected")
        .expect("link running");

    // The outbox cannot be written (a directory stands where the file goes).
    let outbox = data.path().join("state/outbox.json");
    std::fs::create_dir_all(outbox.join("in-the-way")).expect("block the outbox file");
    let seq = state.report(status("web", "while the disk refuses"));
    // Heartbeats go out (and retry the write) meanwhile; the report must not.
    let beats = hub.with(|s| s.heartbeats);
    eventually("several heartbeats", || {
        hub.with(|s| s.heartbeats >= beats + 3)
    })
    .await;
    assert!(!state.outbox_durable());
    assert!(
        hub.with(|s| s.reports.iter().all(|r| r.seq != seq)),
        "a report that is not on disk was sent"
    );

    // Once the disk takes it, the heartbeat's retry writes it and it goes out.
    std::fs::remove_dir_all(&outbox).expect("unblock");
    eventually("report sent and acked", || {
        hub.with(|s| s.reports.iter().any(|r| r.seq == seq)) && state.outbox().pending.is_empty()
    })
    .await;
    let on_disk: gitfleet_spoke::outbox::Outbox =
        serde_json::from_slice(&std::fs::read(&outbox).expect("outbox")).expect("json");
    assert_eq!(on_disk.last_seq, seq);
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("link stops")
        .expect("join");
}

#[tokio::test]
async fn a_report_too_big_to_send_is_bounded_and_does_not_wedge_the_outbox() {
    use gitfleet_proto::report_limits::{MAX_REPORT_BYTES, MAX_RESOURCES};
    use gitfleet_spoke::model::{ObjectRef, ResourceAction, ResourceResult};
    use prost::Message as _;
    let (hub, url) = start_hub().await;
    let (data, identity) = registered(&hub, &url).await;
    let config = LinkConfig::new(url, "edge-1", data.path().join("state"));
    let state = LinkState::load(config).expect("state");
    let cancel = CancellationToken::new();
    let task = tokio::spawn(link::run(state.clone(), identity, cancel.clone()));

    // 12,000 objects whose apply failed with a long error: 30 MiB as it stands, far over the
    // link's 4 MiB message limit.
    let mut big = status("web", "12000 of 12000 resources failed");
    big.sync = SyncState::Failed;
    big.resources = (0..12_000)
        .map(|i| ResourceResult {
            object: ObjectRef {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                namespace: "web".into(),
                name: format!("settings-{i:05}"),
            },
            action: ResourceAction::Failed,
            health: Health::Missing,
            message: "admission webhook denied the request: ".repeat(64),
            source_file: format!("apps/web/settings-{i:05}.yaml"),
            hook: String::new(),
        })
        .collect();
    let seq = state.report(big);
    let next = state.report(status("api", "fine"));
    eventually("both reports acked", || {
        state.outbox().pending.is_empty() && state.outbox().last_acked == next
    })
    .await;
    let sent = hub
        .with(|s| s.reports.iter().find(|r| r.seq == seq).cloned())
        .expect("the big report was sent");
    assert!(
        sent.encoded_len() <= MAX_REPORT_BYTES,
        "{}",
        sent.encoded_len()
    );
    assert!(sent.resources.len() <= MAX_RESOURCES);
    assert!(
        sent.message.contains("of 12000 resources not listed"),
        "{}",
        sent.message
    );
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("link stops")
        .expect("join");
}

/// A loopback URL nothing listens on.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("https://{}", listener.local_addr().expect("addr"))
}

#[tokio::test]
async fn registration_goes_through_the_first_hub_address_that_answers() {
    let (hub, url) = start_hub().await;
    let data = tempfile::TempDir::new().expect("tempdir");
    let store = IdentityStore::new(data.path());
    let dead = dead_url();
    let mut reg = registration(&url, &hub, TOKEN);
    reg.hub_urls = vec![dead.clone(), url.clone()];
    let identity = identity::register(&store, &reg).await.expect("register");
    assert_eq!(identity.ca_pem, hub.pki.ca_pem);
    assert_eq!(hub.with(|s| s.registrations), 1);

    // None answers: the error names every address and why.
    let other_dead = dead_url();
    let data = tempfile::TempDir::new().expect("tempdir");
    reg.hub_urls = vec![dead.clone(), other_dead.clone()];
    let err = identity::register(&IdentityStore::new(data.path()), &reg)
        .await
        .expect_err("no hub")
        .to_string();
    assert!(err.contains(&dead) && err.contains(&other_dead), "{err}");
    assert!(!err.ends_with('.'), "{err}");

    // A malformed address is refused before anything is dialled.
    reg.hub_urls = vec![url.clone(), "hub.example:7443".into()];
    let err = identity::register(&IdentityStore::new(data.path()), &reg)
        .await
        .expect_err("bad url")
        .to_string();
    assert!(err.contains("\"hub.example:7443\""), "{err}");
    assert_eq!(hub.with(|s| s.registrations), 1);
}

#[tokio::test]
async fn a_resolved_name_is_dialled_by_address_and_verified_by_name() {
    // The certificate names only `localhost`: dialled by its address, the hub is still checked
    // against the name the spoke was given.
    let (hub, url) = start_hub_named(&["localhost"]).await;
    let port = url.rsplit(':').next().expect("port");
    let by_name = format!("https://localhost:{port}");
    let data = tempfile::TempDir::new().expect("tempdir");
    let mut reg = registration(&by_name, &hub, TOKEN);
    identity::register(&IdentityStore::new(data.path()), &reg)
        .await
        .expect("registered through the name");

    // By address, the same certificate does not fit: verification really uses the name.
    reg.hub_urls = vec![url];
    let other = tempfile::TempDir::new().expect("tempdir");
    identity::register(&IdentityStore::new(other.path()), &reg)
        .await
        .expect_err("127.0.0.1 is not in the certificate");
}

/// Answers every diff with one object whose name is the Target's commit, after `delay`.
struct FakeDiffer {
    delay: Duration,
}

impl link::Differ for FakeDiffer {
    fn diff(
        &self,
        spec: gitfleet_spoke::model::TargetSpec,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = gitfleet_spoke::sync::diff::TargetDiff> + Send>,
    > {
        use gitfleet_spoke::sync::diff::{DiffAction, ObjectDiff, within_limits};
        let delay = self.delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            let object = ObjectDiff {
                object: gitfleet_spoke::model::ObjectRef {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    namespace: spec.namespace.clone(),
                    name: spec.source.commit.clone(),
                },
                action: DiffAction::Create,
                diff: "+x".into(),
                message: String::new(),
                source_file: "cm.yaml".into(),
            };
            within_limits(&spec.target_id, &spec.source.commit, vec![object], None)
        })
    }
}

#[tokio::test]
async fn diff_requests_are_answered_on_the_stream_by_id_while_reports_flow() {
    let (hub, url) = start_hub().await;
    let (data, identity) = registered(&hub, &url).await;
    let mut config = LinkConfig::new(url.clone(), "edge-1", data.path().join("state"));
    config.backoff_base = Duration::from_millis(20);
    config.backoff_cap = Duration::from_millis(100);
    let state = LinkState::load(config.clone()).expect("state");
    let cancel = CancellationToken::new();
    let task = tokio::spawn(link::run(state.clone(), identity.clone(), cancel.clone()));
    eventually("session up", || hub.with(|s| s.session.is_some())).await;

    // No agent yet: an answer that says so, not silence.
    let request = |id: &str, commit: &str| {
        pb::hub_message::Msg::Diff(pb::DiffRequest {
            request_id: id.into(),
            target: Some(target("web", commit)),
        })
    };
    hub.push(request("r0", &"0".repeat(40))).await;
    eventually("the first answer", || hub.with(|s| s.diffs.len() == 1)).await;
    let first = hub.with(|s| s.diffs[0].clone());
    assert_eq!(first.request_id, "r0");
    assert_eq!(first.cluster, "edge-1");
    assert!(first.error.contains("runs no agent"), "{first:?}");

    // With a differ: a diff that takes its time holds up no report; its answer carries its
    // request's id.
    config.diffs.set(Arc::new(FakeDiffer {
        delay: Duration::from_millis(300),
    }));
    hub.push(request("slow", &"a".repeat(40))).await;
    assert_eq!(state.report(status("web", "meanwhile")), 1);
    eventually("the report meanwhile", || {
        hub.with(|s| s.reports.len() == 1)
    })
    .await;
    eventually("the slow answer", || hub.with(|s| s.diffs.len() == 2)).await;
    let slow = hub.with(|s| s.diffs[1].clone());
    assert_eq!(slow.request_id, "slow");
    assert_eq!(slow.revision, "a".repeat(40));
    assert_eq!(slow.creates, 1);
    assert_eq!(slow.objects.len(), 1);
    assert_eq!(slow.objects[0].name, "a".repeat(40));
    assert_eq!(slow.objects[0].action, pb::DiffAction::Create as i32);
    // A request without a Target is answered with an error.
    hub.push(pb::hub_message::Msg::Diff(pb::DiffRequest {
        request_id: "empty".into(),
        target: None,
    }))
    .await;
    eventually("the empty answer", || hub.with(|s| s.diffs.len() == 3)).await;
    assert!(hub.with(|s| s.diffs[2].error.contains("names no Target")));
    cancel.cancel();
    task.await.expect("join");
}
