//! `Link.Session`: one long-lived stream per spoke. Desired state goes out as a snapshot and
//! then deltas; status reports come in and are acked once durable.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use gitfleet_proto::v1 as pb;
use gitfleet_proto::v1::hub_message::Msg as Out;
use gitfleet_proto::v1::link_server::Link;
use gitfleet_proto::v1::spoke_message::Msg as In;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use super::live_diff::LiveDiffs;
use super::{cluster_peer, convert, peer_key};
use crate::engine::{Connection, Engine, Published};
use crate::link;
use crate::metrics::{ErrorKind, SessionEndKind};
use crate::model::ClusterDesired;
use crate::telemetry;

/// How long a spoke has to say hello after opening the stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// Spokes between opening a stream and being connected, at most: beyond that the hub sheds
/// load with RESOURCE_EXHAUSTED (spokes back off and retry) rather than queueing without bound.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 128;

#[derive(Debug, Clone)]
pub struct LinkService {
    engine: Arc<Engine>,
    handshakes: Arc<Semaphore>,
    /// Diff requests out to the spokes, their answers in (shared with `Admin.DiffLive`).
    live_diffs: LiveDiffs,
}

impl LinkService {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self::with_handshake_limit(engine, MAX_CONCURRENT_HANDSHAKES)
    }

    pub fn with_handshake_limit(engine: Arc<Engine>, max_handshakes: usize) -> Self {
        Self {
            engine,
            handshakes: Arc::new(Semaphore::new(max_handshakes.max(1))),
            live_diffs: LiveDiffs::default(),
        }
    }

    /// Carries the diff requests of `live_diffs` (the Admin service's) to the spokes.
    pub fn with_live_diffs(mut self, live_diffs: LiveDiffs) -> Self {
        self.live_diffs = live_diffs;
        self
    }
}

type HubStream = Pin<Box<dyn Stream<Item = Result<pb::HubMessage, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Link for LinkService {
    type SessionStream = HubStream;

    async fn session(
        &self,
        request: Request<Streaming<pb::SpokeMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let cluster = cluster_peer(&request)?;
        let key = peer_key(&request)?;
        // A superseded certificate is refused before it holds anything (a handshake slot).
        self.engine.check_key(&cluster, &key).map_err(|e| {
            warn!(%cluster, error = %e, "certificate refused");
            Status::from(e)
        })?;
        let _handshake = self.handshakes.try_acquire().map_err(|_| {
            warn!(%cluster, "too many spokes connecting at once; shedding");
            Status::resource_exhausted("too many spokes connecting at once; retry later")
        })?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded("no Hello within 30s of opening the stream")
            })??;
        let hello = match first.and_then(|m| m.msg) {
            Some(In::Hello(h)) => h,
            Some(_) => {
                return Err(Status::failed_precondition(
                    "the first message on the stream must be Hello",
                ));
            }
            None => return Err(Status::cancelled("stream closed before Hello")),
        };
        if hello.cluster != cluster {
            warn!(%cluster, claimed = %hello.cluster, "Hello names another cluster; refused");
            return Err(Status::permission_denied(format!(
                "Hello names cluster {:?} but the certificate is for {cluster:?}",
                hello.cluster
            )));
        }
        let connection = self
            .engine
            .connect(&cluster, &key, &hello.agent_version)
            .await
            .map_err(|e| {
                warn!(%cluster, error = %e, "connection refused");
                Status::from(e)
            })?;
        info!(%cluster, agent_version = %hello.agent_version, generation = hello.desired_generation, "spoke connected");
        let (tx, rx) = mpsc::channel(32);
        let engine = Arc::clone(&self.engine);
        let live_diffs = self.live_diffs.clone();
        let span = info_span!("link", %cluster);
        tokio::spawn(
            async move {
                let id = connection.id;
                let diff_requests = live_diffs.attach(&cluster, id);
                let end = run(
                    &engine,
                    &cluster,
                    key.fingerprint,
                    hello,
                    connection,
                    Streams {
                        inbound,
                        tx,
                        diff_requests,
                        live_diffs: &live_diffs,
                    },
                )
                .await;
                live_diffs.detach(&cluster, id);
                engine.disconnect(&cluster, id);
                engine.metrics().session_ended(end.kind());
                info!(reason = %end, "spoke disconnected");
            }
            .instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

type Tx = mpsc::Sender<Result<pb::HubMessage, Status>>;

async fn send(tx: &Tx, msg: Out) -> bool {
    tx.send(Ok(pb::HubMessage { msg: Some(msg) })).await.is_ok()
}

/// Best effort: a spoke that does not read its stream does not hold the hub up.
async fn goodbye(tx: &Tx, reason: &str, revoked: bool) {
    let msg = pb::HubMessage {
        msg: Some(Out::Goodbye(pb::Goodbye {
            reason: reason.to_owned(),
            retry_after_seconds: 0,
            revoked,
        })),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(Ok(msg))).await;
}

/// Desired state with the credentials for the repositories of the Targets it carries (and no
/// others: a spoke only learns credentials of repositories it deploys from).
///
/// Each upsert is a `dispatch` span in the trace of the change that produced its revision (a
/// new root when the hub does not know it); the spoke's sync continues from there.
fn desired_message(
    published: &Published,
    cluster: &str,
    update: link::DesiredUpdate,
    epoch: &str,
) -> Out {
    let credentials = published.credentials_for(update.upserts.iter().map(|t| &*t.target));
    let traces = update
        .upserts
        .iter()
        .map(|t| {
            let target = &t.target;
            let span = info_span!(
                "dispatch",
                app = %target.app,
                %cluster,
                revision = %target.commit,
                generation = update.generation,
                snapshot = update.snapshot,
            );
            if let Some(origin) = published.origin(&target.app, &target.commit) {
                telemetry::set_parent(&span, &origin.trace);
            }
            telemetry::annotate(
                &span,
                &[
                    (telemetry::APP, &target.app),
                    (telemetry::CLUSTER, cluster),
                    (telemetry::REVISION, &target.commit),
                ],
            );
            (target.app.clone(), telemetry::context_of(&span))
        })
        .collect();
    Out::Desired(convert::desired_state(update, epoch, credentials, &traces))
}

/// Drives one spoke's stream until it ends, is replaced, or the hub shuts down.
///
/// Desired state goes out only while the session is the cluster's live connection, checked
/// after the state to send was read: a revocation cuts the connection off before it publishes
/// the cluster's (empty) desired state, so a session never hands a revoked spoke a state that
/// would make it prune everything. A session cut off says goodbye instead.
/// A session's streams: the spoke's messages in, the hub's out, and the diff requests to
/// carry out.
struct Streams<'a> {
    inbound: Streaming<pb::SpokeMessage>,
    tx: Tx,
    diff_requests: mpsc::Receiver<pb::DiffRequest>,
    live_diffs: &'a LiveDiffs,
}

async fn run(
    engine: &Arc<Engine>,
    cluster: &str,
    mut session_key: String,
    hello: pb::Hello,
    mut connection: Connection,
    streams: Streams<'_>,
) -> SessionEnd {
    let Streams {
        mut inbound,
        tx,
        mut diff_requests,
        live_diffs,
    } = streams;
    let epoch = engine.epoch().to_owned();
    let published = connection.desired.borrow_and_update().clone();
    let mut sent: Arc<ClusterDesired> = Arc::clone(&published.desired);
    if !connection.cut_off() {
        if let Some(update) =
            link::on_hello(&epoch, &hello.hub_epoch, hello.desired_generation, &sent)
        {
            debug!(
                generation = update.generation,
                snapshot = update.snapshot,
                "sending desired state"
            );
            if !send(&tx, desired_message(&published, cluster, update, &epoch)).await {
                return SessionEnd::SpokeGone;
            }
        }
        if connection.acked_seq > 0
            && !send(
                &tx,
                Out::Ack(pb::StatusAck {
                    acked_seq: connection.acked_seq,
                }),
            )
            .await
        {
            return SessionEnd::SpokeGone;
        }
    }
    let shutdown = engine.shutdown_token().clone();
    // Reports are recorded as they arrive and acked while the session reads on: the ack under
    // way covers what was recorded when it started, and what arrives meanwhile waits for the
    // next, so that a flush covers everything that came while the one before was under way.
    let mut acking: Option<AckTask> = None;
    let mut waiting = Waiting::default();
    loop {
        tokio::select! {
            // Being cut off comes before anything else that is ready.
            biased;
            _ = connection.revoked.cancelled() => {
                warn!("cluster revoked; closing its stream");
                goodbye(&tx, "this cluster has been revoked", true).await;
                return SessionEnd::Revoked;
            }
            _ = connection.replaced.cancelled() => {
                goodbye(&tx, "replaced by a newer connection of the same cluster", false).await;
                return SessionEnd::Replaced;
            }
            _ = shutdown.cancelled() => {
                goodbye(&tx, "hub shutting down", false).await;
                return SessionEnd::Shutdown;
            }
            changed = connection.desired.changed() => {
                if changed.is_err() {
                    return SessionEnd::Shutdown;
                }
                let published = connection.desired.borrow_and_update().clone();
                let current = Arc::clone(&published.desired);
                if connection.cut_off() {
                    // The cancellation is ready: the next turn says goodbye.
                    continue;
                }
                if let Some(update) = link::delta(&sent, &current) {
                    debug!(generation = update.generation, base = update.base_generation, "sending delta");
                    let found: Vec<std::time::Instant> = update
                        .upserts
                        .iter()
                        .filter_map(|t| published.origin(&t.target.app, &t.target.commit).map(|o| o.fetch_started))
                        .collect();
                    if !send(&tx, desired_message(&published, cluster, update, &epoch)).await {
                        return SessionEnd::SpokeGone;
                    }
                    for started in found {
                        engine.metrics().dispatched(started.elapsed());
                    }
                }
                sent = current;
            }
            Some(request) = diff_requests.recv() => {
                if connection.cut_off() {
                    // The main loop says goodbye next; the request fails with the link.
                    continue;
                }
                debug!(request = %request.request_id, "asking the spoke for a diff");
                if !send(&tx, Out::Diff(request)).await {
                    return SessionEnd::SpokeGone;
                }
            }
            acked = async {
                match acking.as_mut() {
                    Some(ack) => ack.await,
                    None => std::future::pending().await,
                }
            }, if acking.is_some() => {
                acking = None;
                // A task that panicked (a bug) ends the session: the spoke sends its reports
                // again to a session that can ack them.
                let acked = match acked {
                    Ok(acked) => acked.map_err(Status::from),
                    Err(e) => Err(Status::internal(format!("acknowledging status reports failed: {e}"))),
                };
                match acked {
                    Ok(acked_seq) => {
                        if !send(&tx, Out::Ack(pb::StatusAck { acked_seq })).await {
                            return SessionEnd::SpokeGone;
                        }
                    }
                    Err(status) => {
                        let end = SessionEnd::Refused(status.message().to_owned());
                        let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(Err(status))).await;
                        return end;
                    }
                }
                if let Some(seq) = waiting.take() {
                    acking = Some(ack(engine, cluster, seq));
                }
            }
            // A spoke that sends faster than its reports become durable waits for the ack
            // under way before more are read (at most MAX_UNACKED_REPORTS held per session).
            message = inbound.message(), if waiting.count < MAX_UNACKED_REPORTS => {
                let message = match message {
                    Ok(Some(m)) => m,
                    Ok(None) => return SessionEnd::SpokeClosed,
                    Err(status) => {
                        // Undecodable or oversized input: tell the spoke why, if it still listens.
                        let end = if matches!(status.code(), tonic::Code::OutOfRange | tonic::Code::Internal | tonic::Code::InvalidArgument) {
                            warn!(%status, "malformed message from the spoke; closing its stream");
                            engine.metrics().error(ErrorKind::link);
                            SessionEnd::Malformed(status.message().to_owned())
                        } else {
                            SessionEnd::Transport(error_chain(&status))
                        };
                        let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(Err(status))).await;
                        return end;
                    }
                };
                engine.touch(cluster);
                let outcome = match message.msg {
                    Some(In::Status(report)) => {
                        match record(engine, cluster, report) {
                            Ok(seq) => {
                                waiting.add(seq);
                                if acking.is_none()
                                    && let Some(seq) = waiting.take()
                                {
                                    acking = Some(ack(engine, cluster, seq));
                                }
                                Ok(true)
                            }
                            Err(status) => Err(status),
                        }
                    }
                    _ => {
                        handle(
                            engine,
                            cluster,
                            &epoch,
                            message,
                            Session {
                                sent: &mut sent,
                                key: &mut session_key,
                                connection: &connection,
                                live_diffs,
                            },
                            &tx,
                        )
                        .await
                    }
                };
                match outcome {
                    Ok(true) => {}
                    Ok(false) => return SessionEnd::SpokeGone,
                    Err(status) => {
                        let end = SessionEnd::Refused(status.message().to_owned());
                        let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(Err(status))).await;
                        return end;
                    }
                }
            }
        }
    }
}

/// A status's message and the cause at the bottom of it ("h2 protocol error: error reading a
/// body from connection: connection reset"): tonic keeps the transport's cause beneath
/// wrappers whose own text repeats the message.
fn error_chain(status: &Status) -> String {
    let mut text = status.message().to_owned();
    let mut root = None;
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        root = Some(error);
        source = error.source();
    }
    if let Some(root) = root {
        let cause = root.to_string();
        if !text.ends_with(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// Why a spoke's session ended, for the log and `gitfleet_link_sessions_ended_total{reason}`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SessionEnd {
    /// The spoke ended its stream (it shut down or is reconnecting).
    SpokeClosed,
    /// The stream broke: reset, timeout, connection lost (the transport's words).
    Transport(String),
    /// The spoke sent something undecodable or oversized.
    Malformed(String),
    /// The hub refused a message (another cluster's name, a failed store write).
    Refused(String),
    /// The spoke stopped reading what the hub sends.
    SpokeGone,
    Replaced,
    Revoked,
    Shutdown,
}

impl SessionEnd {
    fn kind(&self) -> SessionEndKind {
        match self {
            Self::SpokeClosed => SessionEndKind::spoke_closed,
            Self::Transport(_) => SessionEndKind::transport,
            Self::Malformed(_) => SessionEndKind::malformed,
            Self::Refused(_) => SessionEndKind::refused,
            Self::SpokeGone => SessionEndKind::spoke_gone,
            Self::Replaced => SessionEndKind::replaced,
            Self::Revoked => SessionEndKind::revoked,
            Self::Shutdown => SessionEndKind::shutdown,
        }
    }
}

impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SpokeClosed => f.write_str("the spoke closed its stream"),
            Self::Transport(why) => write!(f, "the connection broke: {why}"),
            Self::Malformed(why) => write!(f, "malformed message: {why}"),
            Self::Refused(why) => write!(f, "refused: {why}"),
            Self::SpokeGone => f.write_str("the spoke stopped reading its stream"),
            Self::Replaced => f.write_str("replaced by a newer connection of the same cluster"),
            Self::Revoked => f.write_str("the cluster was revoked"),
            Self::Shutdown => f.write_str("the hub is shutting down"),
        }
    }
}

/// The most reports a session records that no ack under way covers: beyond, it reads no
/// more from the spoke until the ack under way is done.
const MAX_UNACKED_REPORTS: usize = 512;

/// An ack under way: the seq to ack once it and every report recorded before it are durable.
/// A task of its own, so that it goes on while the session waits on something else (a spoke
/// slow to read what the hub sends): a flush under way holds every other session's flush up.
type AckTask = tokio::task::JoinHandle<Result<u64, crate::engine::EngineError>>;

fn ack(engine: &Arc<Engine>, cluster: &str, seq: u64) -> AckTask {
    let (engine, cluster) = (Arc::clone(engine), cluster.to_owned());
    tokio::spawn(
        async move {
            engine.ack_reports(&cluster, seq).await?;
            Ok(seq)
        }
        .in_current_span(),
    )
}

/// Reports recorded that no ack under way covers yet.
#[derive(Debug, Default)]
struct Waiting {
    /// How many.
    count: usize,
    /// The seq to ack for them (the highest recorded; a duplicate's is the highest seen).
    seq: Option<u64>,
}

impl Waiting {
    fn add(&mut self, seq: u64) {
        self.count += 1;
        self.seq = Some(self.seq.map_or(seq, |s| s.max(seq)));
    }

    /// The seq to ack for the reports waiting, which an ack started now covers.
    fn take(&mut self) -> Option<u64> {
        self.count = 0;
        self.seq.take()
    }
}

/// Stores a status report, not yet durable (see [`Engine::record_reports`]); the seq to ack
/// once it is.
fn record(engine: &Engine, cluster: &str, report: pb::StatusReport) -> Result<u64, Status> {
    let report = checked_report(engine, cluster, report)?;
    engine
        .record_reports(cluster, vec![report])
        .map_err(Status::from)
}

/// Checks a report's cluster and converts it; one over the limits is cut down to a summary.
fn checked_report(
    engine: &Engine,
    cluster: &str,
    report: pb::StatusReport,
) -> Result<crate::model::TargetReport, Status> {
    if report.cluster != cluster {
        warn!(claimed = %report.cluster, "status report for another cluster; refused");
        return Err(Status::permission_denied(format!(
            "status report names cluster {:?} but the certificate is for {cluster:?}",
            report.cluster
        )));
    }
    match convert::report_over_limits(&report) {
        None => convert::target_report(report),
        Some(problem) => {
            // Refusing it would make the spoke send it again forever: keep what fits, say why
            // on the Target, and ack it like any other.
            warn!(app = %convert::cut(&report.target_id, 64), %problem, "status report over the limits; keeping a summary");
            engine.metrics().error(ErrorKind::link);
            convert::report_over_limits_summary(report, &problem)
        }
    }
}

/// What `handle` reads and changes of its session.
struct Session<'a> {
    /// The desired state the spoke holds.
    sent: &'a mut Arc<ClusterDesired>,
    /// The fingerprint of the key the session speaks for: the one it connected with, then
    /// the one of each renewed certificate the spoke confirmed it stored.
    key: &'a mut String,
    connection: &'a Connection,
    live_diffs: &'a LiveDiffs,
}

/// Handles one message other than a status report; `Ok(false)` when the spoke is gone.
async fn handle(
    engine: &Engine,
    cluster: &str,
    epoch: &str,
    message: pb::SpokeMessage,
    session: Session<'_>,
    tx: &Tx,
) -> Result<bool, Status> {
    match message.msg {
        // Reports go through `ingest`.
        Some(In::Status(_)) => Ok(true),
        Some(In::Heartbeat(heartbeat)) => {
            if !heartbeat.renewed_key_sha256.is_empty()
                && engine
                    .confirm_renewal(cluster, session.key, &heartbeat.renewed_key_sha256)
                    .await?
            {
                // The session speaks for the key the spoke now holds.
                *session.key = heartbeat.renewed_key_sha256;
            }
            Ok(true)
        }
        Some(In::Hello(hello)) => {
            if hello.cluster != cluster {
                warn!(claimed = %hello.cluster, "Hello names another cluster; refused");
                return Err(Status::permission_denied(format!(
                    "Hello names cluster {:?} but the certificate is for {cluster:?}",
                    hello.cluster
                )));
            }
            // A spoke that lost track asks again: give it what it lacks.
            let published = engine.published(cluster).unwrap_or_default();
            let current = Arc::clone(&published.desired);
            if session.connection.cut_off() {
                // The main loop says goodbye next.
                return Ok(true);
            }
            if let Some(update) =
                link::on_hello(epoch, &hello.hub_epoch, hello.desired_generation, &current)
                && !send(tx, desired_message(&published, cluster, update, epoch)).await
            {
                return Ok(false);
            }
            *session.sent = current;
            Ok(true)
        }
        Some(In::Renew(renew)) => {
            let certificate_pem = engine.renew(cluster, session.key, &renew.csr_pem).await?;
            Ok(send(
                tx,
                Out::Renewed(pb::RenewResponse {
                    certificate_pem,
                    ca_pem: engine.ca_pem().to_owned(),
                }),
            )
            .await)
        }
        Some(In::Diff(result)) => {
            if result.cluster != cluster {
                warn!(claimed = %result.cluster, "diff result for another cluster; refused");
                return Err(Status::permission_denied(format!(
                    "diff result names cluster {:?} but the certificate is for {cluster:?}",
                    result.cluster
                )));
            }
            let id = result.request_id.clone();
            if !session.live_diffs.answer(cluster, result) {
                debug!(request = %id, "a diff result nobody waits for (late); dropped");
            }
            Ok(true)
        }
        None => Err(Status::invalid_argument("empty SpokeMessage")),
    }
}
