//! The tonic session with the hub: dial with the spoke's certificate, say Hello, send the
//! durable reports, apply what the hub sends, heartbeat and renew the certificate; reconnect
//! with backoff when the session ends. What it reads and writes lives in [`LinkState`].

use std::sync::Arc;
use std::time::Duration;

use gitfleet_proto::v1 as pb;
use gitfleet_proto::v1::link_client::LinkClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use super::convert::{
    desired_from_proto, diff_result_to_proto, status_to_proto, target_from_proto,
};
use super::{LinkConfig, LinkError, LinkState, install_crypto_provider, unix_now};
use crate::hubs::{Candidate, HubUrl, Rotation, backoff};
use crate::identity::{self, Identity, error_chain};

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
#[tracing::instrument(name = "link", skip_all, fields(cluster = %state.config().cluster_name))]
pub async fn run(state: Arc<LinkState>, identity: Identity, cancel: CancellationToken) {
    install_crypto_provider();
    let urls = match HubUrl::parse_all(&state.config().hub_urls) {
        Ok(urls) => urls,
        Err(error) => {
            tracing::error!(%error, "no usable hub address; not connecting");
            return;
        }
    };
    let mut identity = identity;
    let mut rotation = Rotation::default();
    let mut resyncs: u32 = 0;
    loop {
        // Resolved again for every attempt: the replicas behind a name come and go.
        let candidates = tokio::select! {
            candidates = super::resolve(&urls) => candidates,
            () = cancel.cancelled() => return,
        };
        let count = candidates.len();
        let Some(candidate) = candidates.get(rotation.current(count)) else {
            return;
        };
        let started = tokio::time::Instant::now();
        let outcome = tokio::select! {
            outcome = session(&state, candidate, &mut identity, &cancel) => outcome,
            () = cancel.cancelled() => Ok(SessionEnd::Shutdown),
        };
        state.set_connected(false);
        if started.elapsed() > Duration::from_secs(30) {
            rotation.healthy();
            resyncs = 0;
        }
        let (base, cap) = (state.config().backoff_base, state.config().backoff_cap);
        let wait = match outcome {
            Ok(SessionEnd::Shutdown) => return,
            Ok(SessionEnd::Resync) => {
                tracing::info!("desired state out of step with the hub; saying Hello again");
                // At once the first time, to the same hub; a hub that keeps sending deltas
                // that do not fit gets the usual backoff rather than a reconnect storm.
                resyncs = resyncs.saturating_add(1);
                if resyncs == 1 {
                    Duration::ZERO
                } else {
                    backoff(resyncs - 1, base, cap, rand::random())
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
                rotation.skip(count);
                tracing::info!(%reason, hub = %candidate.dial, retry_after_s = retry_after.as_secs(), "the hub said goodbye");
                retry_after
            }
            Ok(end) => {
                let wait = rotation.failed(count, base, cap, rand::random());
                tracing::info!(?end, hub = %candidate.dial, wait_ms = wait.as_millis() as u64, "session ended; trying the next hub address");
                wait
            }
            Err(error) => {
                let wait = rotation.failed(count, base, cap, rand::random());
                tracing::warn!(
                    %error,
                    attempt = rotation.failures(),
                    wait_ms = wait.as_millis() as u64,
                    "link down; trying the next hub address"
                );
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = cancel.cancelled() => return,
        }
    }
}

async fn channel(candidate: &Candidate, identity: &Identity) -> Result<Channel, LinkError> {
    let url_error = |message: String| LinkError::Url {
        url: candidate.configured.clone(),
        message,
    };
    let tls = super::tls_for(candidate, &identity.ca_pem).identity(
        tonic::transport::Identity::from_pem(&identity.cert_pem, &identity.key_pem),
    );
    Endpoint::from_shared(candidate.dial.clone())
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
        .map_err(|e| LinkError::Connect(format!("{}: {}", candidate.dial, error_chain(&e))))
}

async fn session(
    state: &LinkState,
    candidate: &Candidate,
    identity: &mut Identity,
    cancel: &CancellationToken,
) -> Result<SessionEnd, LinkError> {
    let config = state.config();
    let channel = channel(candidate, identity).await?;
    let mut client = LinkClient::new(channel)
        .max_decoding_message_size(gitfleet_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(gitfleet_proto::MAX_MESSAGE_BYTES);

    let (tx, rx) = mpsc::channel::<pb::SpokeMessage>(64);
    let (generation, epoch) = state.held_generation();
    let hello = pb::Hello {
        cluster: config.cluster_name.clone(),
        agent_version: config.agent_version.clone(),
        desired_generation: generation,
        last_acked_seq: state.last_acked(),
        hub_epoch: epoch,
    };
    send(&tx, pb::spoke_message::Msg::Hello(hello)).await?;
    let mut inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .map_err(|s| LinkError::Stream(status_chain(&s)))?
        .into_inner();
    state.set_connected(true);
    tracing::info!(generation, hub = %candidate.dial, "connected to the hub");

    // Everything unacked goes out again: the hub ignores what it already has.
    let mut last_sent = 0;
    let mut renewing = false;
    // Parsed once per certificate, not on every heartbeat (a simulated fleet runs 10,000 of
    // these loops in one process).
    let mut validity = identity::cert_validity(&identity.cert_pem);
    let mut heartbeat = tokio::time::interval(config.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Diffs the hub asked for, answered when done; dropped (aborted) with the session, whose
    // hub gave up on them.
    let mut diffs = tokio::task::JoinSet::new();
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
                        match state.desired_after(update) {
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
                    Some(pb::hub_message::Msg::Diff(request)) => {
                        diffs.spawn(answer_diff(config, request, tx.clone()));
                    }
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
            () = state.reported() => {}
            Some(_) = diffs.join_next(), if !diffs.is_empty() => {}
            _ = heartbeat.tick() => {
                state.persist_if_behind();
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

/// Answers one of the hub's diff requests on the stream, once the agent has made the diff.
fn answer_diff(
    config: &LinkConfig,
    request: pb::DiffRequest,
    tx: mpsc::Sender<pb::SpokeMessage>,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    use crate::sync::diff;
    let cluster = config.cluster_name.clone();
    let differ = config.diffs.get();
    async move {
        let spec = request.target.map(target_from_proto);
        tracing::info!(request = %request.request_id, app = spec.as_ref().map_or("", |s| s.app.as_str()), "the hub asked for a diff");
        let result = match (differ, spec) {
            (_, None) => diff::failed("", "", "the hub's diff request names no Target".into()),
            (None, Some(spec)) => diff::failed(
                &spec.target_id,
                &spec.source.commit,
                "this spoke runs no agent, so it cannot diff".into(),
            ),
            (Some(differ), Some(spec)) => differ.diff(spec).await,
        };
        let message = diff_result_to_proto(&cluster, request.request_id, result);
        // The session may have ended meanwhile: the hub no longer waits for it.
        let _ = send(&tx, pb::spoke_message::Msg::Diff(message)).await;
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
