//! The gRPC adapter of the hub–spoke link: one `Link.Session` stream over mutual TLS, and the
//! only place that converts between the wire format and the spoke's domain types.
//!
//! The link keeps two promises across reconnects and restarts: the desired state it publishes
//! is always a consistent generation (deltas apply only on their base; otherwise it says Hello
//! again), and no status report is lost (each is numbered and persisted before it is sent, and
//! kept until the hub acks it).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gitfleet_proto::v1 as pb;
use gitfleet_proto::v1::link_client::LinkClient;
use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::desired::{DesiredState, DesiredUpdate};
use crate::identity::{self, Identity, IdentityStore, error_chain};
use crate::model::{
    CredentialKind, Health, RenderOptions, RenderType, RepoCredential, ResourceResult, Source,
    SyncPolicy, SyncState, TargetSpec, TargetStatus,
};
use crate::outbox::{Outbox, SequencedReport};
use crate::store::{self, StoreError};

/// Installs rustls' ring crypto provider for the process, once; later calls do nothing.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Another part of the process may have installed one already; either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// How the link behaves.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// `https://host:port` of the hub.
    pub hub_url: String,
    pub cluster_name: String,
    pub agent_version: String,
    pub heartbeat_interval: Duration,
    /// First reconnect delay; it doubles per failed attempt, with full jitter.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Where `desired.json` and `outbox.json` live.
    pub state_dir: PathBuf,
    /// Where the identity lives, to renew the certificate over the live stream (None: never).
    pub identity_store: Option<IdentityStore>,
}

impl LinkConfig {
    pub fn new(
        hub_url: impl Into<String>,
        cluster_name: impl Into<String>,
        state_dir: PathBuf,
    ) -> Self {
        Self {
            hub_url: hub_url.into(),
            cluster_name: cluster_name.into(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            heartbeat_interval: Duration::from_secs(10),
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(60),
            state_dir,
            identity_store: None,
        }
    }

    fn desired_path(&self) -> PathBuf {
        self.state_dir.join("desired.json")
    }
    fn outbox_path(&self) -> PathBuf {
        self.state_dir.join("outbox.json")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("hub URL {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("connecting to the hub: {0}")]
    Connect(String),
    #[error("the hub ended the stream: {0}")]
    Stream(String),
}

/// The link's durable state and its hand-offs to the agent.
pub struct LinkState {
    config: LinkConfig,
    outbox: Arc<DurableOutbox>,
    desired: watch::Sender<DesiredState>,
    connected: watch::Sender<bool>,
}

/// The outbox, and its copy on disk. Writing is off the async runtime (a file write with two
/// fsyncs can take milliseconds, and every task of the runtime would wait behind it), and
/// coalesced: reports that arrive while a write runs share the next one. A report is sent only
/// once a write that includes it has finished, so nothing the hub sees is missing from disk.
struct DurableOutbox {
    path: PathBuf,
    memory: Mutex<Versioned>,
    /// Serialises writers; holds the version the file has.
    written: Mutex<u64>,
    /// The highest sequence number on disk (only reports up to it may be sent).
    durable_seq: std::sync::atomic::AtomicU64,
    /// Wakes the session when a report became durable.
    reported: Notify,
    /// Called when a write fails (the spoke counts it in its metrics).
    on_error: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

#[derive(Default)]
struct Versioned {
    outbox: Outbox,
    /// Bumped on every change, so a writer knows whether the file is behind.
    version: u64,
}

impl DurableOutbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Versioned> {
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the outbox unless the file already has this version or a later one. Blocking.
    fn write(&self) -> Result<(), StoreError> {
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (snapshot, version) = {
            let memory = self.lock();
            if memory.version <= *written {
                return Ok(());
            }
            (memory.outbox.clone(), memory.version)
        };
        store::write_json(&self.path, &snapshot, false)?;
        *written = version;
        self.durable_seq
            .fetch_max(snapshot.last_seq, std::sync::atomic::Ordering::SeqCst);
        self.reported.notify_one();
        Ok(())
    }

    /// Writes the outbox soon, off the async runtime (at once, blocking, outside one).
    fn write_soon(self: &Arc<Self>) {
        let this = Arc::clone(self);
        let write = move || {
            if let Err(error) = this.write() {
                // Kept in memory and not sent; retried on the next change or heartbeat.
                tracing::error!(%error, "could not persist the status outbox; retrying later");
                if let Some(hook) = this.on_error.get() {
                    hook();
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(write);
            }
            Err(_) => write(),
        }
    }

    fn is_behind(&self) -> bool {
        let version = self.lock().version;
        version
            > *self
                .written
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl LinkState {
    /// Loads the persisted desired state and outbox (empty when there are none yet).
    pub fn load(config: LinkConfig) -> Result<Arc<Self>, StoreError> {
        let desired: DesiredState = store::read_json(&config.desired_path())?.unwrap_or_default();
        let outbox = store::read_json::<Outbox>(&config.outbox_path())?
            .unwrap_or_default()
            .within_limits();
        let durable_seq = outbox.last_seq;
        Ok(Arc::new(Self {
            outbox: Arc::new(DurableOutbox {
                path: config.outbox_path(),
                memory: Mutex::new(Versioned { outbox, version: 0 }),
                written: Mutex::new(0),
                durable_seq: durable_seq.into(),
                reported: Notify::new(),
                on_error: std::sync::OnceLock::new(),
            }),
            config,
            desired: watch::Sender::new(desired),
            connected: watch::Sender::new(false),
        }))
    }

    /// The desired state, updated whenever the hub changes it.
    pub fn desired(&self) -> watch::Receiver<DesiredState> {
        self.desired.subscribe()
    }

    /// Whether a session with the hub is up.
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.subscribe()
    }

    /// Numbers a report and has it persisted; the session sends it once it is on disk.
    /// Returns its sequence number.
    pub fn report(&self, status: TargetStatus) -> u64 {
        let seq = {
            let mut memory = self.outbox.lock();
            memory.version += 1;
            memory.outbox.push(status)
        };
        self.outbox.write_soon();
        seq
    }

    /// The outbox as it is now (for tests and diagnostics).
    pub fn outbox(&self) -> Outbox {
        self.outbox.lock().outbox.clone()
    }

    /// Calls `hook` whenever persisting the outbox fails (set once; later calls are ignored).
    pub fn on_outbox_error(&self, hook: impl Fn() + Send + Sync + 'static) {
        let _ = self.outbox.on_error.set(Box::new(hook));
    }

    /// Whether every report so far is on disk (for tests and diagnostics).
    pub fn outbox_durable(&self) -> bool {
        !self.outbox.is_behind()
    }

    fn ack(&self, acked_seq: u64) {
        let changed = {
            let mut memory = self.outbox.lock();
            let changed = memory.outbox.ack(acked_seq);
            if changed {
                memory.version += 1;
            }
            changed
        };
        // Losing an ack only makes the spoke resend what the hub then ignores: no need to wait.
        if changed {
            self.outbox.write_soon();
        }
    }

    /// Durable reports with a sequence number above `after`.
    fn pending_after(&self, after: u64) -> Vec<SequencedReport> {
        let durable = self
            .outbox
            .durable_seq
            .load(std::sync::atomic::Ordering::SeqCst);
        self.outbox
            .lock()
            .outbox
            .after(after)
            .filter(|r| r.seq <= durable)
            .cloned()
            .collect()
    }

    async fn set_desired(&self, next: DesiredState) -> Result<(), StoreError> {
        // Credentials are in here: owner-only. Written off the runtime (two fsyncs).
        let path = self.config.desired_path();
        let next = tokio::task::spawn_blocking(move || {
            store::write_json(&path, &next, true).map(|()| next)
        })
        .await
        .map_err(|e| StoreError::Io {
            path: self.config.desired_path(),
            source: std::io::Error::other(e),
        })??;
        self.desired.send_replace(next);
        Ok(())
    }
}

/// How a session ended.
#[derive(Debug, PartialEq, Eq)]
enum SessionEnd {
    Shutdown,
    /// A delta did not fit: reconnect at once and say Hello.
    Resync,
    Goodbye {
        reason: String,
        retry_after: Duration,
        revoked: bool,
    },
    Closed,
}

/// A status's code and message with the errors beneath it (tonic keeps the transport's cause,
/// such as a keepalive timeout, one level down).
fn status_chain(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(source) = std::error::Error::source(status) {
        let cause = error_chain(source);
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// Runs the link until `cancel` fires or the hub revokes the cluster.
#[tracing::instrument(name = "link", skip_all, fields(cluster = %state.config.cluster_name))]
pub async fn run(state: Arc<LinkState>, identity: Identity, cancel: CancellationToken) {
    install_crypto_provider();
    let mut identity = identity;
    let mut attempt: u32 = 0;
    loop {
        let started = tokio::time::Instant::now();
        let outcome = tokio::select! {
            outcome = session(&state, &mut identity, &cancel) => outcome,
            () = cancel.cancelled() => Ok(SessionEnd::Shutdown),
        };
        state.connected.send_replace(false);
        let wait = match outcome {
            Ok(SessionEnd::Shutdown) => return,
            Ok(SessionEnd::Resync) => {
                tracing::info!("desired state out of step with the hub; saying Hello again");
                // At once the first time; a hub that keeps sending deltas that do not fit
                // gets the usual backoff rather than a reconnect storm.
                if started.elapsed() > Duration::from_secs(30) {
                    attempt = 0;
                }
                attempt = attempt.saturating_add(1);
                if attempt == 1 {
                    Duration::ZERO
                } else {
                    backoff(
                        attempt - 1,
                        state.config.backoff_base,
                        state.config.backoff_cap,
                        rand::random(),
                    )
                }
            }
            Ok(SessionEnd::Goodbye {
                revoked: true,
                reason,
                ..
            }) => {
                tracing::error!(%reason, "the hub revoked this cluster; no longer connecting");
                return;
            }
            Ok(SessionEnd::Goodbye {
                reason,
                retry_after,
                ..
            }) if !retry_after.is_zero() => {
                tracing::info!(%reason, retry_after_s = retry_after.as_secs(), "the hub said goodbye");
                retry_after
            }
            Ok(end) => {
                tracing::info!(?end, "session ended");
                if started.elapsed() > Duration::from_secs(30) {
                    attempt = 0;
                }
                attempt = attempt.saturating_add(1);
                backoff(
                    attempt,
                    state.config.backoff_base,
                    state.config.backoff_cap,
                    rand::random(),
                )
            }
            Err(error) => {
                if started.elapsed() > Duration::from_secs(30) {
                    attempt = 0;
                }
                attempt = attempt.saturating_add(1);
                let wait = backoff(
                    attempt,
                    state.config.backoff_base,
                    state.config.backoff_cap,
                    rand::random(),
                );
                tracing::warn!(%error, attempt, wait_ms = wait.as_millis() as u64, "link down; reconnecting");
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = cancel.cancelled() => return,
        }
    }
}

/// Exponential backoff with full jitter: a uniform delay in [0, min(cap, base·2^(attempt-1))].
/// `unit` is a random number in [0, 1).
pub fn backoff(attempt: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let ceiling = base.saturating_mul(1u32 << exponent).min(cap);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

async fn channel(config: &LinkConfig, identity: &Identity) -> Result<Channel, LinkError> {
    let url_error = |message: String| LinkError::Url {
        url: config.hub_url.clone(),
        message,
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&identity.ca_pem))
        .identity(tonic::transport::Identity::from_pem(
            &identity.cert_pem,
            &identity.key_pem,
        ));
    Endpoint::from_shared(config.hub_url.clone())
        .map_err(|e| url_error(e.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .tls_config(tls)
        .map_err(|e| url_error(e.to_string()))?
        .connect()
        .await
        .map_err(|e| LinkError::Connect(error_chain(&e)))
}

async fn session(
    state: &LinkState,
    identity: &mut Identity,
    cancel: &CancellationToken,
) -> Result<SessionEnd, LinkError> {
    let config = &state.config;
    let channel = channel(config, identity).await?;
    let mut client = LinkClient::new(channel)
        .max_decoding_message_size(gitfleet_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(gitfleet_proto::MAX_MESSAGE_BYTES);

    let (tx, rx) = mpsc::channel::<pb::SpokeMessage>(64);
    let (generation, epoch) = {
        let desired = state.desired.borrow();
        (desired.generation, desired.hub_epoch.clone())
    };
    let hello = pb::Hello {
        cluster: config.cluster_name.clone(),
        agent_version: config.agent_version.clone(),
        desired_generation: generation,
        last_acked_seq: state.outbox.lock().outbox.last_acked,
        hub_epoch: epoch,
    };
    send(&tx, pb::spoke_message::Msg::Hello(hello)).await?;
    let mut inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .map_err(|s| LinkError::Stream(status_chain(&s)))?
        .into_inner();
    state.connected.send_replace(true);
    tracing::info!(generation, "connected to the hub");

    // Everything unacked goes out again: the hub ignores what it already has.
    let mut last_sent = 0;
    let mut renewing = false;
    // Parsed once per certificate, not on every heartbeat (a simulated fleet runs 10,000 of
    // these loops in one process).
    let mut validity = identity::cert_validity(&identity.cert_pem);
    let mut heartbeat = tokio::time::interval(config.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        for report in state.pending_after(last_sent) {
            last_sent = report.seq;
            send(
                &tx,
                pb::spoke_message::Msg::Status(status_to_proto(&config.cluster_name, &report)),
            )
            .await?;
        }
        tokio::select! {
            message = inbound.message() => {
                let message = message.map_err(|s| LinkError::Stream(status_chain(&s)))?;
                let Some(message) = message else { return Ok(SessionEnd::Closed) };
                match message.msg {
                    Some(pb::hub_message::Msg::Desired(desired)) => {
                        let update = desired_from_proto(desired);
                        let held = state.desired.borrow().clone();
                        match held.apply(update) {
                            Ok(next) => {
                                tracing::info!(generation = next.generation, targets = next.targets.len(), "desired state updated");
                                state.set_desired(next).await?;
                            }
                            Err(stale) => {
                                tracing::warn!(%stale, "dropping a delta that does not fit; saying Hello again");
                                return Ok(SessionEnd::Resync);
                            }
                        }
                    }
                    Some(pb::hub_message::Msg::Ack(ack)) => state.ack(ack.acked_seq),
                    Some(pb::hub_message::Msg::Goodbye(goodbye)) => {
                        return Ok(SessionEnd::Goodbye {
                            reason: goodbye.reason,
                            retry_after: Duration::from_secs(u64::from(goodbye.retry_after_seconds)),
                            revoked: goodbye.revoked,
                        });
                    }
                    Some(pb::hub_message::Msg::Renewed(renewed)) => {
                        renewing = false;
                        if let Some(store) = &config.identity_store {
                            match store.finish_renewal(&renewed.certificate_pem, &renewed.ca_pem, identity) {
                                Ok(next) => {
                                    tracing::info!("certificate renewed; new connections use it");
                                    validity = identity::cert_validity(&next.cert_pem);
                                    // Stored: the hub may now refuse the certificate it replaces.
                                    let stored = pb::Heartbeat {
                                        sent_at_unix: unix_now(),
                                        renewed_key_sha256: identity::key_fingerprint(&next.key_pem).unwrap_or_default(),
                                    };
                                    *identity = next;
                                    send(&tx, pb::spoke_message::Msg::Heartbeat(stored)).await?;
                                }
                                Err(error) => tracing::warn!(%error, "could not use the renewed certificate"),
                            }
                        }
                    }
                    None => {}
                }
            }
            () = state.outbox.reported.notified() => {}
            _ = heartbeat.tick() => {
                if state.outbox.is_behind() {
                    state.outbox.write_soon();
                }
                send(&tx, pb::spoke_message::Msg::Heartbeat(pb::Heartbeat { sent_at_unix: unix_now(), ..Default::default() })).await?;
                if !renewing && let Some(csr_pem) = start_renewal(config, validity) {
                    renewing = true;
                    send(&tx, pb::spoke_message::Msg::Renew(pb::RenewRequest { csr_pem })).await?;
                }
            }
            () = cancel.cancelled() => return Ok(SessionEnd::Shutdown),
        }
    }
}

/// A CSR for a new key when the certificate is due for renewal (two thirds of its life gone).
fn start_renewal(config: &LinkConfig, validity: Option<(i64, i64)>) -> Option<String> {
    let store = config.identity_store.as_ref()?;
    let (not_before, not_after) = validity?;
    if !identity::renewal_due(not_before, not_after, unix_now()) {
        return None;
    }
    match store.begin_renewal(&config.cluster_name) {
        Ok(csr) => {
            tracing::info!(not_after, "renewing the certificate over the live stream");
            Some(csr)
        }
        Err(error) => {
            tracing::warn!(%error, "could not start a certificate renewal");
            None
        }
    }
}

async fn send(
    tx: &mpsc::Sender<pb::SpokeMessage>,
    msg: pb::spoke_message::Msg,
) -> Result<(), LinkError> {
    tx.send(pb::SpokeMessage { msg: Some(msg) })
        .await
        .map_err(|_| LinkError::Stream("the stream to the hub is closed".into()))
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

// ---- wire <-> domain ------------------------------------------------------------------------

pub fn desired_from_proto(d: pb::DesiredState) -> DesiredUpdate {
    DesiredUpdate {
        generation: d.generation,
        base_generation: d.base_generation,
        snapshot: d.snapshot,
        hub_epoch: d.hub_epoch,
        upserts: d.upserts.into_iter().map(target_from_proto).collect(),
        removals: d.removals,
        credentials: d
            .credentials
            .into_iter()
            .filter_map(credential_from_proto)
            .collect(),
    }
}

/// The engine and its options: from `engine` where the hub sets it, else from fields 1-5 (a
/// hub older than `engine`).
#[allow(deprecated)]
fn render_from_proto(render: pb::RenderOptions) -> RenderOptions {
    use pb::render_options::Engine;
    let with =
        |render_type, kustomize: Option<pb::KustomizeOptions>, helm: Option<pb::HelmOptions>| {
            let helm = helm.unwrap_or_default();
            RenderOptions {
                render_type,
                kustomize_dir: kustomize.unwrap_or_default().dir,
                helm_release: helm.release,
                helm_values_files: helm.values_files,
                helm_values_yaml: helm.values_yaml,
            }
        };
    match render.engine {
        Some(Engine::Detect(detect)) => with(RenderType::Auto, detect.kustomize, detect.helm),
        Some(Engine::Plain(_)) => with(RenderType::Yaml, None, None),
        Some(Engine::Kustomize(kustomize)) => with(RenderType::Kustomize, Some(kustomize), None),
        Some(Engine::Helm(helm)) => with(RenderType::Helm, None, Some(helm)),
        None => RenderOptions {
            render_type: match pb::RenderType::try_from(render.r#type)
                .unwrap_or(pb::RenderType::Unspecified)
            {
                pb::RenderType::Yaml => RenderType::Yaml,
                pb::RenderType::Kustomize => RenderType::Kustomize,
                pb::RenderType::Helm => RenderType::Helm,
                pb::RenderType::Auto | pb::RenderType::Unspecified => RenderType::Auto,
            },
            kustomize_dir: render.kustomize_dir,
            helm_release: render.helm_release,
            helm_values_files: render.helm_values_files,
            helm_values_yaml: render.helm_values_yaml,
        },
    }
}

pub fn target_from_proto(t: pb::TargetSpec) -> TargetSpec {
    let source = t.source.unwrap_or_default();
    let render = t.render.unwrap_or_default();
    let policy = t.sync_policy.unwrap_or_default();
    TargetSpec {
        target_id: t.target_id,
        app: t.app,
        source: Source {
            repo_url: source.repo_url,
            repo_name: source.repo_name,
            commit: source.commit,
            git_ref: source.git_ref,
            path: source.path,
            extra_paths: source.extra_paths,
        },
        namespace: t.namespace,
        render: render_from_proto(render),
        sync_policy: SyncPolicy {
            prune: policy.prune,
            self_heal: policy.self_heal,
            suspended: policy.suspended,
            force: policy.force,
        },
        trace: t
            .trace
            .map(|t| t.fields.into_iter().collect())
            .unwrap_or_default(),
        spec_generation: t.spec_generation,
    }
}

fn credential_from_proto(c: pb::RepoCredential) -> Option<RepoCredential> {
    let kind = match c.kind? {
        pb::repo_credential::Kind::Https(h) => CredentialKind::Https {
            username: h.username,
            password: h.password,
        },
        pb::repo_credential::Kind::Ssh(s) => CredentialKind::Ssh {
            username: s.username,
            private_key_pem: s.private_key_pem,
            known_hosts: s.known_hosts,
        },
    };
    Some(RepoCredential {
        repo_url: c.repo_url,
        kind,
        urls: c.urls,
    })
}

pub fn status_to_proto(cluster: &str, report: &SequencedReport) -> pb::StatusReport {
    let s = &report.status;
    pb::StatusReport {
        seq: report.seq,
        cluster: cluster.to_owned(),
        target_id: s.target_id.clone(),
        revision: s.revision.clone(),
        spec_generation: s.spec_generation,
        sync: sync_to_proto(s.sync) as i32,
        health: health_to_proto(s.health) as i32,
        message: s.message.clone(),
        resources: s.resources.iter().map(resource_to_proto).collect(),
        observed_at_unix: s.observed_at_unix,
        trace: Some(pb::TraceContext {
            fields: s.trace.clone().into_iter().collect(),
        }),
    }
}

fn resource_to_proto(r: &ResourceResult) -> pb::ResourceResult {
    pb::ResourceResult {
        api_version: r.object.api_version.clone(),
        kind: r.object.kind.clone(),
        namespace: r.object.namespace.clone(),
        name: r.object.name.clone(),
        action: r.action.as_str().to_owned(),
        health: health_to_proto(r.health) as i32,
        message: r.message.clone(),
        source_file: r.source_file.clone(),
    }
}

pub fn sync_to_proto(s: SyncState) -> pb::SyncState {
    match s {
        SyncState::Pending => pb::SyncState::Pending,
        SyncState::Syncing => pb::SyncState::Syncing,
        SyncState::Synced => pb::SyncState::Synced,
        SyncState::OutOfSync => pb::SyncState::OutOfSync,
        SyncState::Failed => pb::SyncState::Failed,
    }
}

pub fn health_to_proto(h: Health) -> pb::HealthState {
    match h {
        Health::Healthy => pb::HealthState::Healthy,
        Health::Progressing => pb::HealthState::Progressing,
        Health::Degraded => pb::HealthState::Degraded,
        Health::Missing => pb::HealthState::Missing,
        Health::Suspended => pb::HealthState::Suspended,
        Health::Unknown => pb::HealthState::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_to_the_cap_with_full_jitter() {
        let base = Duration::from_millis(500);
        let cap = Duration::from_secs(60);
        assert_eq!(
            backoff(1, base, cap, 0.999_999),
            Duration::from_millis(500).mul_f64(0.999_999)
        );
        assert_eq!(backoff(3, base, cap, 0.5), Duration::from_secs(1));
        assert_eq!(backoff(20, base, cap, 0.5), Duration::from_secs(30));
        assert_eq!(backoff(u32::MAX, base, cap, 0.5), Duration::from_secs(30));
        assert_eq!(backoff(5, base, cap, 0.0), Duration::ZERO);
    }

    #[test]
    fn target_specs_convert_from_the_wire() {
        let spec = target_from_proto(pb::TargetSpec {
            target_id: "web".into(),
            app: "web".into(),
            source: Some(pb::Source {
                repo_url: "file:///r".into(),
                commit: "c".into(),
                path: "apps/web".into(),
                ..Default::default()
            }),
            namespace: "web".into(),
            render: Some(pb::RenderOptions {
                engine: Some(pb::render_options::Engine::Kustomize(
                    pb::KustomizeOptions::default(),
                )),
                ..Default::default()
            }),
            sync_policy: Some(pb::SyncPolicy {
                prune: true,
                force: true,
                ..Default::default()
            }),
            trace: None,
            spec_generation: 4,
        });
        assert_eq!(spec.source.path, "apps/web");
        assert_eq!(spec.render.render_type, RenderType::Kustomize);
        assert!(spec.sync_policy.prune && spec.sync_policy.force && !spec.sync_policy.self_heal);
        assert_eq!(spec.spec_generation, 4);
    }

    /// `RenderOptions` as hubs and spokes before the `engine` oneof encoded it.
    #[derive(Clone, PartialEq, prost::Message)]
    struct LegacyRenderOptions {
        #[prost(enumeration = "pb::RenderType", tag = "1")]
        r#type: i32,
        #[prost(string, tag = "2")]
        kustomize_dir: String,
        #[prost(string, tag = "3")]
        helm_release: String,
        #[prost(string, repeated, tag = "4")]
        helm_values_files: Vec<String>,
        #[prost(string, tag = "5")]
        helm_values_yaml: String,
    }

    fn options(
        render_type: RenderType,
        kustomize_dir: &str,
        helm_release: &str,
        helm_values_files: &[&str],
        helm_values_yaml: &str,
    ) -> RenderOptions {
        RenderOptions {
            render_type,
            kustomize_dir: kustomize_dir.into(),
            helm_release: helm_release.into(),
            helm_values_files: helm_values_files.iter().map(|f| (*f).to_owned()).collect(),
            helm_values_yaml: helm_values_yaml.into(),
        }
    }

    /// A hub of the previous release and one of this release meet spokes of either during an
    /// upgrade: each side must read the render options the other meant.
    #[test]
    #[allow(deprecated)]
    fn render_options_read_the_same_in_the_old_encoding_and_the_new() {
        use pb::render_options::Engine;
        use prost::Message as _;
        let kustomize = |dir: &str| pb::KustomizeOptions { dir: dir.into() };
        let helm = pb::HelmOptions {
            release: "web-b".into(),
            values_files: vec!["values-prod.yaml".into()],
            values_yaml: "replicas: 3\n".into(),
        };
        let cases = [
            (
                options(RenderType::Auto, "", "", &[], ""),
                pb::RenderType::Auto,
                Engine::Detect(pb::DetectOptions::default()),
            ),
            (
                options(
                    RenderType::Auto,
                    "overlays/dev",
                    "web-b",
                    &["values-prod.yaml"],
                    "replicas: 3\n",
                ),
                pb::RenderType::Auto,
                Engine::Detect(pb::DetectOptions {
                    kustomize: Some(kustomize("overlays/dev")),
                    helm: Some(helm.clone()),
                }),
            ),
            (
                options(RenderType::Yaml, "", "", &[], ""),
                pb::RenderType::Yaml,
                Engine::Plain(pb::PlainOptions {}),
            ),
            (
                options(RenderType::Kustomize, "overlays/dev", "", &[], ""),
                pb::RenderType::Kustomize,
                Engine::Kustomize(kustomize("overlays/dev")),
            ),
            (
                options(
                    RenderType::Helm,
                    "",
                    "web-b",
                    &["values-prod.yaml"],
                    "replicas: 3\n",
                ),
                pb::RenderType::Helm,
                Engine::Helm(helm.clone()),
            ),
        ];
        for (expected, render_type, engine) in cases {
            let legacy = LegacyRenderOptions {
                r#type: render_type as i32,
                kustomize_dir: expected.kustomize_dir.clone(),
                helm_release: expected.helm_release.clone(),
                helm_values_files: expected.helm_values_files.clone(),
                helm_values_yaml: expected.helm_values_yaml.clone(),
            };
            // An old hub's message, read by this spoke.
            let old = pb::RenderOptions::decode(legacy.encode_to_vec().as_slice()).expect("decode");
            assert_eq!(
                render_from_proto(old),
                expected,
                "old encoding of {render_type:?}"
            );
            // A new hub's message (both encodings, as the hub fills them), read by this spoke
            // and by an old one.
            let both = pb::RenderOptions {
                r#type: legacy.r#type,
                kustomize_dir: legacy.kustomize_dir.clone(),
                helm_release: legacy.helm_release.clone(),
                helm_values_files: legacy.helm_values_files.clone(),
                helm_values_yaml: legacy.helm_values_yaml.clone(),
                engine: Some(engine.clone()),
            };
            let bytes = both.encode_to_vec();
            let new = pb::RenderOptions::decode(bytes.as_slice()).expect("decode");
            assert_eq!(
                render_from_proto(new),
                expected,
                "new encoding of {render_type:?}"
            );
            assert_eq!(
                LegacyRenderOptions::decode(bytes.as_slice()).expect("decode"),
                legacy,
                "an old spoke reading the new encoding of {render_type:?}"
            );
            // The oneof alone means the same as both.
            let engine_only = pb::RenderOptions {
                engine: Some(engine),
                ..Default::default()
            };
            assert_eq!(
                render_from_proto(engine_only),
                expected,
                "engine only: {render_type:?}"
            );
        }
        // Nothing at all (an empty message): detect.
        assert_eq!(
            render_from_proto(pb::RenderOptions::default()),
            RenderOptions::default()
        );
    }
}
