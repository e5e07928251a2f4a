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
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::convert::{desired_from_proto, status_to_proto};
use super::{LinkConfig, LinkError, LinkState, install_crypto_provider, unix_now};
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
    let mut identity = identity;
    let mut attempt: u32 = 0;
    loop {
        let started = tokio::time::Instant::now();
        let outcome = tokio::select! {
            outcome = session(&state, &mut identity, &cancel) => outcome,
            () = cancel.cancelled() => Ok(SessionEnd::Shutdown),
        };
        state.set_connected(false);
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
                        state.config().backoff_base,
                        state.config().backoff_cap,
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
                    state.config().backoff_base,
                    state.config().backoff_cap,
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
                    state.config().backoff_base,
                    state.config().backoff_cap,
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
    let config = state.config();
    let channel = channel(config, identity).await?;
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
                        let held = state.held_desired();
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
            () = state.reported() => {}
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
}
