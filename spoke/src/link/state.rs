//! The spoke's durable side of the link: the desired state it holds and the outbox of status
//! reports, both on disk, and their hand-offs to the agent. Outlives every session: the agent
//! keeps enforcing the last desired state, and reports keep their numbers, while the hub is
//! away or the spoke restarts.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::desired::{DesiredState, DesiredUpdate, StaleDelta};
use crate::identity::IdentityStore;
use crate::model::TargetStatus;
use crate::outbox::{Outbox, SequencedReport};
use crate::store::{self, StoreError};

/// How the link behaves.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// `https://host:port` of the hub, or of each of its replicas: dialled in turn (see
    /// [`crate::hubs`]).
    pub hub_urls: Vec<String>,
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
    /// What answers the hub's diff requests, once the agent set it.
    pub diffs: super::DiffSlot,
}

impl LinkConfig {
    pub fn new(
        hub_url: impl Into<String>,
        cluster_name: impl Into<String>,
        state_dir: PathBuf,
    ) -> Self {
        Self {
            hub_urls: vec![hub_url.into()],
            cluster_name: cluster_name.into(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            heartbeat_interval: Duration::from_secs(10),
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(60),
            state_dir,
            identity_store: None,
            diffs: super::DiffSlot::default(),
        }
    }

    pub(super) fn desired_path(&self) -> PathBuf {
        self.state_dir.join("desired.json")
    }
    pub(super) fn outbox_path(&self) -> PathBuf {
        self.state_dir.join("outbox.json")
    }
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

    pub(super) fn ack(&self, acked_seq: u64) {
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
    pub(super) fn pending_after(&self, after: u64) -> Vec<SequencedReport> {
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

    pub(super) fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// The generation and hub epoch of the desired state held (what Hello says).
    pub(super) fn held_generation(&self) -> (u64, String) {
        let desired = self.desired.borrow();
        (desired.generation, desired.hub_epoch.clone())
    }

    /// The desired state `update` makes of the one held (which stays as it is until
    /// [`LinkState::set_desired`]).
    pub(super) fn desired_after(&self, update: DesiredUpdate) -> Result<DesiredState, StaleDelta> {
        self.desired.borrow().apply(update)
    }

    /// The highest sequence number the hub has acked.
    pub(super) fn last_acked(&self) -> u64 {
        self.outbox.lock().outbox.last_acked
    }

    pub(super) fn set_connected(&self, connected: bool) {
        self.connected.send_replace(connected);
    }

    /// Resolves when a report has become durable (and may be sent).
    pub(super) async fn reported(&self) {
        self.outbox.reported.notified().await;
    }

    /// Writes the outbox again if a write of it failed (called on every heartbeat).
    pub(super) fn persist_if_behind(&self) {
        if self.outbox.is_behind() {
            self.outbox.write_soon();
        }
    }

    /// Persists a new desired state, then publishes it to the agent.
    pub(super) async fn set_desired(&self, next: DesiredState) -> Result<(), StoreError> {
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
