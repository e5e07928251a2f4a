//! The election of the hub replicas sharing an etcd prefix: etcd's own election API. Each
//! replica stands with a key `{prefix}election/<lease>` held by its lease; the oldest key
//! leads. The leader's key and the revision that created it fence every transaction it makes
//! (see `Session::leader`), so a replica that lost its lease can never write over its
//! successor.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Candidacy, EtcdBackend};
use crate::leadership::Leadership;
use crate::store::BackendError;

impl EtcdBackend {
    /// The key the replicas' candidacies live under.
    fn election_name(&self) -> Vec<u8> {
        [self.prefix(), b"election"].concat()
    }

    /// Stands this replica for election as `url` (the URL other replicas reach it at), with a
    /// lease of `ttl`: it leads once every older candidate is gone, and stops leading (for good)
    /// when its lease runs out.
    pub async fn stand(
        self: &Arc<Self>,
        url: String,
        ttl: Duration,
    ) -> Result<Candidacy, BackendError> {
        let ttl_secs = i64::try_from(ttl.as_secs().max(2)).unwrap_or(i64::MAX);
        let lease = self
            .leases
            .clone()
            .grant(ttl_secs, None)
            .await
            .map_err(|e| self.error(e))?
            .id();
        self.session().lease = Some(lease);
        let (tx, rx) = watch::channel(Leadership::Follower { leader_url: None });
        let tx = Arc::new(tx);
        let lost = CancellationToken::new();
        tokio::spawn(keep_alive(Arc::downgrade(self), lease, ttl, lost.clone()));
        tokio::spawn(campaign(
            Arc::downgrade(self),
            url,
            lease,
            Arc::clone(&tx),
            lost.clone(),
        ));
        tokio::spawn(observe(Arc::downgrade(self), tx, lost.clone()));
        if !self.compaction_interval.is_zero() {
            tokio::spawn(super::compaction::compact_history(
                Arc::downgrade(self),
                self.compaction_interval,
                lost.clone(),
            ));
        }
        Ok(Candidacy {
            leadership: rx,
            lost,
        })
    }

    /// Gives the lease up: the replica stops leading and its presence records go at once.
    fn lose(&self, why: String) {
        let mut session = self.session();
        session.leader = None;
        session.lost.get_or_insert(why);
    }
}

/// Renews the lease every third of its time to live; when no renewal has succeeded for a
/// whole `ttl` (or etcd says the lease is gone), the replica has lost it.
async fn keep_alive(
    backend: Weak<EtcdBackend>,
    lease: i64,
    ttl: Duration,
    lost: CancellationToken,
) {
    let every = ttl / 3;
    let mut renewed = Instant::now();
    let mut stream = None;
    loop {
        let Some(b) = backend.upgrade() else { return };
        let mut leases = b.leases.clone();
        let endpoints = b.endpoints().to_owned();
        drop(b);
        let round = async {
            if stream.is_none() {
                stream = leases.keep_alive(lease).await.ok();
            }
            let Some((keeper, answers)) = &mut stream else {
                return None;
            };
            let answer = match keeper.keep_alive().await {
                Ok(()) => answers.message().await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(Some(answer)) => Some(answer.ttl()),
                Ok(None) | Err(_) => {
                    stream = None;
                    None
                }
            }
        };
        match tokio::time::timeout(every.max(Duration::from_millis(500)), round).await {
            Ok(Some(left)) if left > 0 => renewed = Instant::now(),
            Ok(Some(_)) => {
                let why = format!(
                    "this hub replica's etcd lease ran out (etcd at {endpoints} was out of its reach for longer than {}): it no longer leads nor writes; restart it",
                    humantime::format_duration(ttl)
                );
                give_up(&backend, why, &lost);
                return;
            }
            Ok(None) | Err(_) => {}
        }
        if renewed.elapsed() >= ttl {
            let why = format!(
                "this hub replica could not renew its etcd lease for {} (etcd at {endpoints} is out of its reach): it no longer leads nor writes; restart it",
                humantime::format_duration(ttl)
            );
            give_up(&backend, why, &lost);
            return;
        }
        tokio::time::sleep(every).await;
    }
}

fn give_up(backend: &Weak<EtcdBackend>, why: String, lost: &CancellationToken) {
    tracing::error!("{why}");
    if let Some(b) = backend.upgrade() {
        b.lose(why);
    }
    lost.cancel();
}

/// Campaigns until elected (etcd answers once every older candidate is gone), then fences
/// the replica's writes with its key and says it leads.
async fn campaign(
    backend: Weak<EtcdBackend>,
    url: String,
    lease: i64,
    tx: Arc<watch::Sender<Leadership>>,
    lost: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let Some(b) = backend.upgrade() else { return };
        let mut elections = b.elections.clone();
        let name = b.election_name();
        let endpoints = b.endpoints().to_owned();
        drop(b);
        let answer = tokio::select! {
            answer = elections.campaign(name, url.clone(), lease) => answer,
            () = lost.cancelled() => return,
        };
        match answer {
            Ok(response) => {
                let Some(key) = response.leader() else {
                    tracing::warn!(%endpoints, "etcd elected this replica without naming its key; standing again");
                    continue;
                };
                let Some(b) = backend.upgrade() else { return };
                {
                    let mut session = b.session();
                    if session.lost.is_some() {
                        return;
                    }
                    session.leader = Some((key.key().to_vec(), key.rev()));
                }
                tracing::info!(%url, "this hub replica leads");
                tx.send_replace(Leadership::Leader);
                return;
            }
            // A campaign waits for as long as an older candidate lives, beyond the client's
            // request timeout: standing again with the same lease keeps the same key and place.
            Err(e) => {
                if lost.is_cancelled() {
                    return;
                }
                tracing::debug!(error = %e, %endpoints, "campaign interrupted; standing again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Follows who leads, for a replica that does not: the URL its calls go to.
async fn observe(
    backend: Weak<EtcdBackend>,
    tx: Arc<watch::Sender<Leadership>>,
    lost: CancellationToken,
) {
    loop {
        let Some(b) = backend.upgrade() else { return };
        let mut elections = b.elections.clone();
        let name = b.election_name();
        drop(b);
        let stream = tokio::select! {
            stream = elections.observe(name) => stream,
            () = lost.cancelled() => return,
        };
        if let Ok(mut stream) = stream {
            loop {
                let message = tokio::select! {
                    message = stream.message() => message,
                    () = lost.cancelled() => return,
                };
                let Ok(Some(message)) = message else { break };
                let Some(kv) = message.kv() else { continue };
                let leader_url = String::from_utf8_lossy(kv.value()).into_owned();
                tx.send_if_modified(|now| {
                    if now.leads() {
                        return false;
                    }
                    let next = Leadership::Follower {
                        leader_url: Some(leader_url.clone()),
                    };
                    let changed = *now != next;
                    *now = next;
                    changed
                });
            }
        }
        // The stream ends when the leader goes: nobody leads until the next one is observed.
        tx.send_if_modified(|now| {
            if now.leads() || *now == (Leadership::Follower { leader_url: None }) {
                return false;
            }
            *now = Leadership::Follower { leader_url: None };
            true
        });
        if lost.is_cancelled() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
