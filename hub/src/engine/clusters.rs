//! Clusters: registration with bootstrap tokens, approval, certificates (signing, renewal),
//! revocation, and the tokens themselves.

use std::collections::BTreeMap;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tracing::info;

use super::{Engine, EngineError};
use crate::model::{ClusterRecord, ClusterView, EventRecord, TokenProblem, TokenRecord};
use crate::pki::{self, PkiError, now_unix};
use crate::store::StoreError;
use gitfleet_core::cluster_labels::{LabelChanges, apply_label_changes};

/// What a new bootstrap token allows.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub ttl: Duration,
    /// The labels of every cluster registered with the token.
    pub labels: BTreeMap<String, String>,
    /// Keys under which the spoke may propose labels of its own.
    pub allowed_label_keys: std::collections::BTreeSet<String>,
    /// The one cluster name the token may register.
    pub cluster: Option<String>,
    /// 0: unlimited within the TTL.
    pub max_uses: u32,
    pub description: String,
}

impl TokenSpec {
    /// A token valid for `ttl` that gives clusters `labels` and lets spokes add none.
    pub fn new(ttl: Duration, labels: BTreeMap<String, String>) -> Self {
        Self {
            ttl,
            labels,
            allowed_label_keys: Default::default(),
            cluster: None,
            max_uses: 0,
            description: String::new(),
        }
    }
}

/// See [`Engine::registration_work`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistrationWork {
    pub csrs_verified: u64,
    pub certificates_signed: u64,
    pub write_locks: u64,
}

/// A newly minted bootstrap token (the secret is shown once).
#[derive(Debug, Clone)]
pub struct NewToken {
    pub token: String,
    pub id: String,
    pub expires_at_unix: i64,
}

/// A spoke's registration request, in domain terms.
#[derive(Debug, Clone)]
pub struct Registration {
    pub token: String,
    pub cluster: String,
    pub csr_pem: String,
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
}

/// How long a spoke waiting for approval should wait before asking again.
pub const PENDING_RETRY: Duration = Duration::from_secs(10);

/// What a registration gets: a certificate, or a wait for an admin's approval.
#[derive(Debug, Clone)]
pub enum RegisterOutcome {
    Issued(Issued),
    Pending {
        cluster: String,
        retry_after: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct Issued {
    pub cluster: String,
    pub certificate_pem: String,
    pub ca_pem: String,
}

impl Engine {
    // --- clusters ----------------------------------------------------------------------------

    /// Trades a bootstrap token and a CSR for a certificate.
    ///
    /// Everything an unauthenticated caller can make the hub do comes before the token is
    /// known to be good, and is cheap: name and label syntax, a hash, a lookup. Only a caller
    /// with a usable token gets its CSR verified, the write lock, and a signature.
    pub async fn register(&self, reg: Registration) -> Result<RegisterOutcome, EngineError> {
        if let Some(problem) = pki::dns1123_label_problem(&reg.cluster) {
            return Err(EngineError::Invalid(format!(
                "cluster name {:?} {problem}",
                reg.cluster
            )));
        }
        check_labels(&reg.labels)?;
        let now = now_unix();
        let hash = token_hash(&reg.token);
        let token = self
            .store
            .token(&hash)?
            .ok_or_else(|| token_refused(TokenProblem::Unknown))?;
        let existing = self.store.cluster(&reg.cluster)?;
        token
            .check_for(existing.as_ref(), now)
            .map_err(token_refused)?;
        let labels = token
            .admit(&reg.cluster, &reg.labels)
            .map_err(|p| EngineError::PermissionDenied(p.to_string()))?;
        if existing.as_ref().is_some_and(|c| c.revoked) {
            return Err(EngineError::PermissionDenied(format!(
                "cluster {:?} has been revoked",
                reg.cluster
            )));
        }
        let csr = self.pki.verify_csr(&reg.csr_pem).map_err(csr_refused)?;

        self.registration_locks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let guard = self.write.lock().await;
        let pending_outcome = |cluster: &str| RegisterOutcome::Pending {
            cluster: cluster.to_owned(),
            retry_after: PENDING_RETRY,
        };
        // Again under the lock: a registration of the same name may have come first.
        let issued = match self.store.cluster(&reg.cluster)? {
            Some(c) if c.revoked => {
                return Err(EngineError::PermissionDenied(format!(
                    "cluster {:?} has been revoked",
                    reg.cluster
                )));
            }
            // A name is taken once registered: only its current key may come back (a retry
            // after a lost response, or after approval), without spending the token again; so
            // a token holder cannot take over another cluster's name, and a key superseded by
            // a renewal cannot get a new certificate.
            Some(c) if c.key_fingerprint != csr.key_fingerprint => {
                return Err(EngineError::AlreadyExists(format!(
                    "cluster {:?} is already registered with another key",
                    reg.cluster
                )));
            }
            Some(c) if c.pending => return Ok(pending_outcome(&reg.cluster)),
            Some(_) => {
                let issued = self.sign_for(&csr, &reg.cluster)?;
                let expires = issued.not_after_unix;
                self.store.update_cluster(&reg.cluster, |record| {
                    let mut record = record.cloned();
                    if let Some(r) = &mut record {
                        r.certificate_expires_unix = expires;
                        r.last_contact_unix = r.last_contact_unix.max(now);
                    }
                    (record, ())
                })?;
                issued
            }
            None => {
                let pending = self.config.require_approval;
                // A cluster waiting for approval gets its certificate on the retry after it.
                let issued = if pending {
                    None
                } else {
                    Some(self.sign_for(&csr, &reg.cluster)?)
                };
                let token = self.store.use_token(&hash, now).map_err(|e| match e {
                    StoreError::Token(p) => token_refused(p),
                    other => EngineError::Store(other),
                })?;
                info!(cluster = %reg.cluster, token = %token.id, approval = pending, "registration accepted");
                self.store.put_cluster(&ClusterRecord {
                    name: reg.cluster.clone(),
                    labels,
                    agent_version: reg.agent_version,
                    registered_at_unix: now,
                    certificate_expires_unix: issued.as_ref().map_or(0, |i| i.not_after_unix),
                    last_contact_unix: now,
                    revoked: false,
                    key_fingerprint: csr.key_fingerprint.clone(),
                    renewed_key_fingerprints: Vec::new(),
                    pending,
                    token_id: token.id,
                })?;
                match issued {
                    Some(issued) => issued,
                    None => {
                        self.store.flush().await?;
                        info!(cluster = %reg.cluster, "registration waits for approval");
                        return Ok(pending_outcome(&reg.cluster));
                    }
                }
            }
        };
        let ticket = self
            .registrations_written
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        drop(guard);
        self.settle_registration(ticket).await?;
        info!(cluster = %reg.cluster, "certificate issued");
        Ok(RegisterOutcome::Issued(Issued {
            cluster: reg.cluster,
            certificate_pem: issued.certificate_pem,
            ca_pem: self.pki.ca_pem().to_owned(),
        }))
    }

    /// Makes the registration written as `ticket` durable and gives its cluster desired state:
    /// one recompute and one flush for every registration written before it, so that a fleet
    /// registering at once (10,000 spokes installed together) costs a recompute per batch, not
    /// one per cluster (each is linear in the fleet: quadratic in all). The tokio lock is fair,
    /// so the registrations that queued for it meanwhile are written before the first of them
    /// settles them all.
    async fn settle_registration(&self, ticket: u64) -> Result<(), EngineError> {
        use std::sync::atomic::Ordering::SeqCst;
        let guard = self.write.lock().await;
        if self.registrations_settled.load(SeqCst) >= ticket {
            return Ok(());
        }
        // Every ticket up to here was written under the write lock, which this holds.
        let written = self.registrations_written.load(SeqCst);
        self.recompute_locked(&guard).await?;
        self.store.flush().await?;
        self.registrations_settled.fetch_max(written, SeqCst);
        Ok(())
    }

    fn sign_for(
        &self,
        csr: &pki::VerifiedCsr,
        cluster: &str,
    ) -> Result<pki::IssuedCert, EngineError> {
        self.pki
            .sign_cluster(csr, cluster, self.config.cluster_cert_validity)
            .map_err(csr_refused)
    }

    /// What registrations have cost since start: CSRs verified, certificates signed (by
    /// registrations and renewals), and how often a registration took the write lock. A
    /// caller without a usable bootstrap token must cause none of them.
    pub fn registration_work(&self) -> RegistrationWork {
        let (csrs_verified, certificates_signed) = self.pki.csr_work();
        RegistrationWork {
            csrs_verified,
            certificates_signed,
            write_locks: self
                .registration_locks
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Lets a registration waiting for approval get its certificate on its next retry.
    pub async fn approve_cluster(&self, cluster: &str) -> Result<bool, EngineError> {
        let guard = self.write.lock().await;
        let approved = self.store.update_cluster(cluster, |record| {
            match record.filter(|c| c.pending && !c.revoked) {
                Some(c) => (
                    Some(ClusterRecord {
                        pending: false,
                        ..c.clone()
                    }),
                    true,
                ),
                None => (None, false),
            }
        })?;
        if !approved {
            return Ok(false);
        }
        self.recompute_locked(&guard).await?;
        self.store.flush().await?;
        info!(%cluster, "cluster approved");
        Ok(true)
    }

    /// Changes a cluster's labels for an admin (`by`): durably, with a `ClusterLabeled` event,
    /// and with placement recomputed so Apps move onto or off the cluster as if it had
    /// registered with these labels. Nothing changes when a key or value is refused. The hub
    /// owns the labels from here on: a spoke's later registration or renewal keeps them.
    pub async fn label_cluster(
        &self,
        cluster: &str,
        changes: &LabelChanges,
        by: &str,
    ) -> Result<ClusterView, EngineError> {
        let guard = self.write.lock().await;
        let outside_before = self.apps_outside_projects()?;
        let mut outcome = Err(EngineError::NotFound(format!(
            "cluster {cluster:?} is not registered"
        )));
        self.store.update_cluster(cluster, |record| match record {
            None => (None, ()),
            Some(r) if r.revoked => {
                outcome = Err(EngineError::FailedPrecondition(format!(
                    "cluster {cluster:?} has been revoked; its labels no longer matter"
                )));
                (None, ())
            }
            Some(r) => match apply_label_changes(&r.labels, changes) {
                Err(problem) => {
                    outcome = Err(EngineError::Invalid(problem));
                    (None, ())
                }
                Ok(labels) => {
                    let record = ClusterRecord {
                        labels,
                        ..r.clone()
                    };
                    outcome = Ok((r.labels.clone(), record.clone()));
                    (Some(record), ())
                }
            },
        })?;
        let (old, record) = outcome?;
        self.bus.record(&mut [EventRecord {
            at_unix: now_unix(),
            cluster: cluster.to_owned(),
            kind: "ClusterLabeled".to_owned(),
            message: format!(
                "labels {} (were {})",
                format_labels(&record.labels),
                format_labels(&old)
            ),
            by: by.to_owned(),
            ..Default::default()
        }])?;
        self.report_new_project_problems(&outside_before, by)?;
        self.recompute_locked(&guard).await?;
        self.store.flush().await?;
        self.cluster_changed(cluster);
        info!(%cluster, %by, labels = %format_labels(&record.labels), "cluster labeled");
        let state = self.lock();
        let connected = self.is_connected(&state, cluster, now_unix());
        let mut record = record;
        if let Some(t) = state.last_contact.get(cluster) {
            record.last_contact_unix = record.last_contact_unix.max(*t);
        }
        Ok(ClusterView { record, connected })
    }

    /// Registrations waiting for approval.
    pub fn pending_clusters(&self) -> Result<Vec<ClusterRecord>, EngineError> {
        Ok(self
            .store
            .clusters()?
            .into_iter()
            .filter(|c| c.pending && !c.revoked)
            .collect())
    }

    pub fn tokens(&self) -> Result<Vec<TokenRecord>, EngineError> {
        Ok(self.store.tokens()?)
    }

    /// Issues a fresh certificate for a connected cluster (rotation over the live link). Its
    /// key is accepted alongside the current one until the spoke confirms it stored the new
    /// certificate ([`Engine::confirm_renewal`]) or connects with it; from then on only the
    /// new one is. `session_key` is the fingerprint of the key the session speaks for; a
    /// session whose key is no longer the bound one cannot renew. Returns the certificate.
    pub async fn renew(
        &self,
        cluster: &str,
        session_key: &str,
        csr_pem: &str,
    ) -> Result<String, EngineError> {
        let _guard = self.write.lock().await;
        let record = self.store.cluster(cluster)?.ok_or_else(|| {
            EngineError::NotFound(format!("cluster {cluster:?} is not registered"))
        })?;
        if record.revoked {
            return Err(EngineError::PermissionDenied(format!(
                "cluster {cluster:?} has been revoked"
            )));
        }
        if !speaks_for(&record, session_key) {
            return Err(EngineError::Unauthenticated(superseded(cluster)));
        }
        let issued = self
            .pki
            .sign_cluster_csr(csr_pem, cluster, self.config.cluster_cert_validity)
            .map_err(csr_refused)?;
        let (renewed, check) =
            self.store
                .update_cluster_if_unchanged(cluster, |record| match record {
                    Some(r) if !r.revoked && speaks_for(r, session_key) => (
                        Some(r.renewed(
                            session_key,
                            &issued.key_fingerprint,
                            issued.not_after_unix,
                        )),
                        true,
                    ),
                    _ => (None, false),
                })?;
        let changed = || {
            EngineError::FailedPrecondition(format!(
                "cluster {cluster:?} changed while its certificate was renewed; renew again"
            ))
        };
        if !renewed {
            return Err(changed());
        }
        // Another replica (the leader) may have written the record meanwhile: then the new key
        // was not recorded, and the certificate must not leave.
        match check.confirm(&self.store).await {
            Err(crate::store::StoreError::Conflict(_)) => return Err(changed()),
            other => other?,
        }
        info!(%cluster, "certificate renewed");
        Ok(issued.certificate_pem)
    }

    /// The spoke of `cluster`, on a session speaking for `session_key`, stored the certificate
    /// a renewal issued for the key `renewed_key`: that key becomes the cluster's, and the
    /// certificate it replaces is refused from now on. True when the binding moved; a key the
    /// last renewal did not issue moves nothing.
    pub async fn confirm_renewal(
        &self,
        cluster: &str,
        session_key: &str,
        renewed_key: &str,
    ) -> Result<bool, EngineError> {
        let (moved, check) =
            self.store
                .update_cluster_if_unchanged(cluster, |record| match record {
                    Some(r)
                        if !r.revoked
                            && speaks_for(r, session_key)
                            && r.renewed_key_fingerprints.iter().any(|k| k == renewed_key) =>
                    {
                        (Some(r.bind_key(renewed_key)), true)
                    }
                    _ => (None, false),
                })?;
        if moved {
            // Lost to another replica's write: the renewed key stays accepted and the spoke
            // confirms again on its next session.
            match check.confirm(&self.store).await {
                Err(crate::store::StoreError::Conflict(_)) => return Ok(false),
                other => other?,
            }
            info!(%cluster, "the spoke holds its renewed certificate; the previous one is refused from now on");
        }
        Ok(moved)
    }

    /// Mints a bootstrap token; the secret is in the answer only.
    pub async fn create_token(&self, spec: TokenSpec) -> Result<NewToken, EngineError> {
        if spec.ttl.is_zero() {
            return Err(EngineError::Invalid("ttl must be positive".into()));
        }
        check_labels(&spec.labels)?;
        for key in &spec.allowed_label_keys {
            check_label_key(key, "allowed label key")?;
            if spec.labels.contains_key(key) {
                return Err(EngineError::Invalid(format!(
                    "allowed label key {key:?}: the token also sets label {key:?}, which a spoke cannot change; drop one of the two"
                )));
            }
        }
        if let Some(cluster) = &spec.cluster
            && let Some(problem) = pki::dns1123_label_problem(cluster)
        {
            return Err(EngineError::Invalid(format!(
                "cluster name {cluster:?} {problem}"
            )));
        }
        let secret: [u8; 32] = rand::random();
        let token = format!("gft_{}", hex::encode(secret));
        let hash = token_hash(&token);
        let id = hash[..12].to_owned();
        let expires_at_unix = now_unix().saturating_add(spec.ttl.as_secs() as i64);
        self.store.put_token(
            &hash,
            &TokenRecord {
                id: id.clone(),
                expires_at_unix,
                max_uses: spec.max_uses,
                uses: 0,
                labels: spec.labels,
                description: spec.description,
                revoked: false,
                allowed_label_keys: spec.allowed_label_keys,
                cluster: spec.cluster,
            },
        )?;
        self.store.flush().await?;
        Ok(NewToken {
            token,
            id,
            expires_at_unix,
        })
    }

    /// Cuts a cluster off: its certificate is refused from now on, its live stream ends with a
    /// goodbye that tells the spoke to stop, and it leaves every placement.
    ///
    /// The record and the live connection change under the state lock, the one `connect`
    /// checks the record and adds a connection under: a connection either sees the revocation
    /// and is refused, or exists already and is cut off here. Its session is told before the
    /// cluster's (now empty) desired state is published, and never sends desired state once
    /// told, so a revoked spoke is never handed an empty desired state to prune by.
    pub async fn revoke_cluster(&self, cluster: &str) -> Result<bool, EngineError> {
        let guard = self.write.lock().await;
        {
            let mut state = self.lock();
            let found = self.store.update_cluster(cluster, |record| match record {
                Some(r) => (
                    Some(ClusterRecord {
                        revoked: true,
                        ..r.clone()
                    }),
                    true,
                ),
                None => (None, false),
            })?;
            if !found {
                return Ok(false);
            }
            if let Some(live) = state.connections.remove(cluster) {
                live.revoked.cancel();
            }
        }
        self.store.flush().await?;
        self.recompute_locked(&guard).await?;
        info!(%cluster, "cluster revoked");
        Ok(true)
    }

    /// Makes a bootstrap token unusable, by its id.
    pub async fn revoke_token(&self, id: &str) -> Result<bool, EngineError> {
        let _guard = self.write.lock().await;
        let found = self.store.revoke_token(id)?;
        self.store.flush().await?;
        Ok(found)
    }
}

/// SHA-256 of a bootstrap token, hex: what the store keeps instead of the token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A refusal for a token that cannot be used: unknown and expired tokens do not
/// authenticate anyone; used-up and revoked ones are known but not allowed.
fn token_refused(problem: TokenProblem) -> EngineError {
    match problem {
        TokenProblem::Unknown | TokenProblem::Expired => {
            EngineError::Unauthenticated(problem.to_string())
        }
        TokenProblem::UsedUp | TokenProblem::Revoked => {
            EngineError::PermissionDenied(problem.to_string())
        }
    }
}

fn csr_refused(e: PkiError) -> EngineError {
    match e {
        PkiError::InvalidCsr(m) => EngineError::Invalid(format!("csr_pem: {m}")),
        other => EngineError::Pki(other),
    }
}

pub(super) fn superseded(cluster: &str) -> String {
    format!(
        "the certificate of cluster {cluster:?} has been superseded by a renewal; only the cluster's current certificate is accepted"
    )
}

/// Whether a session connected with the key `session_key` still speaks for the cluster.
fn speaks_for(record: &ClusterRecord, session_key: &str) -> bool {
    record.key_fingerprint.is_empty() || record.key_fingerprint == session_key
}

fn check_label_key(k: &str, what: &str) -> Result<(), EngineError> {
    let key_ok = !k.is_empty()
        && k.len() <= 253
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    if key_ok {
        Ok(())
    } else {
        Err(EngineError::Invalid(format!("{what} {k:?} is not valid")))
    }
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), EngineError> {
    for (k, v) in labels {
        check_label_key(k, "label key")?;
        let value_ok = v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !value_ok {
            return Err(EngineError::Invalid(format!(
                "label {k:?}: value {v:?} is not valid"
            )));
        }
    }
    Ok(())
}

/// `k=v,k2=v2`, or `{}` when there are none: for an event's message and the log.
fn format_labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "{}".to_owned();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
