//! The hub's own records: registered clusters, bootstrap tokens, per-cluster desired state, and
//! what spokes report about their Targets. Plain data, shared by the store, the engine and the
//! gRPC adapter (which alone converts them to and from the wire).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::fleet::DesiredTarget;

#[cfg(test)]
mod tests;

/// A registered spoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
    pub registered_at_unix: i64,
    pub certificate_expires_unix: i64,
    /// Last time the spoke was heard from (any message), 0 when never.
    pub last_contact_unix: i64,
    #[serde(default)]
    pub revoked: bool,
    /// SHA-256 of the public key of the cluster's current certificate, hex: the key the hub
    /// accepts for this cluster. Registration binds it, a renewal moves it (see
    /// `renewed_key_fingerprint`); a connection with any other key (a superseded certificate)
    /// is refused. Empty in records written before the hub recorded it: see
    /// [`ClusterRecord::key_binding`].
    #[serde(default)]
    pub key_fingerprint: String,
    /// The keys of the certificates renewals issued since, oldest first (at most
    /// [`RENEWALS_UNCONFIRMED`]), while the spoke has not yet said it stored one (nor connected
    /// with one): accepted too, so that a renewal whose answer was lost, or a spoke too old to
    /// confirm, is not locked out. The one the spoke confirms or connects with becomes
    /// `key_fingerprint`, and the others are dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub renewed_key_fingerprints: Vec<String>,
    /// Registered, waiting for an admin's approval (no certificate yet).
    #[serde(default)]
    pub pending: bool,
    /// The id of the bootstrap token the cluster registered with (empty in older records): a
    /// retry of the registration (a lost answer, a wait for approval) may present that token
    /// again after it is used up or expired.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token_id: String,
}

/// Renewals a spoke has not confirmed whose keys are still accepted.
pub const RENEWALS_UNCONFIRMED: usize = 4;

/// Whether a certificate's key may act as a cluster, from what its record binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyBinding {
    /// The certificate carries the bound key.
    Bound,
    /// The certificate is the one the last renewal issued: its key becomes the bound one, and
    /// the certificate it replaced is refused from then on.
    Renewed,
    /// A record from before the hub bound keys: the certificate is the one last issued (its
    /// expiry is the one recorded), and its key becomes the bound one.
    BindNow,
    /// Another key: a certificate superseded by a renewal (or never the cluster's).
    Superseded,
}

impl ClusterRecord {
    /// Whether a certificate with public key `fingerprint` expiring at `not_after_unix` speaks
    /// for this cluster: the current certificate does (its key is bound at registration), and
    /// so does the one a renewal issued since (which then becomes the current one). A record
    /// without a bound key (written by an older hub) accepts only the certificate whose expiry
    /// matches the one recorded when it was issued, never an older one, and binds its key.
    pub fn key_binding(&self, fingerprint: &str, not_after_unix: i64) -> KeyBinding {
        if self
            .renewed_key_fingerprints
            .iter()
            .any(|k| k == fingerprint)
        {
            KeyBinding::Renewed
        } else if !self.key_fingerprint.is_empty() {
            if self.key_fingerprint == fingerprint {
                KeyBinding::Bound
            } else {
                KeyBinding::Superseded
            }
        } else if not_after_unix == self.certificate_expires_unix {
            KeyBinding::BindNow
        } else {
            KeyBinding::Superseded
        }
    }

    /// The record once the key `fingerprint` is the cluster's: bound, and no renewal pending.
    pub fn bind_key(&self, fingerprint: &str) -> ClusterRecord {
        ClusterRecord {
            key_fingerprint: fingerprint.to_owned(),
            renewed_key_fingerprints: Vec::new(),
            ..self.clone()
        }
    }

    /// The record once a renewal issued a certificate for `fingerprint`, expiring at
    /// `not_after_unix`, on a session speaking for `session_key`.
    pub fn renewed(&self, session_key: &str, fingerprint: &str, not_after_unix: i64) -> Self {
        let mut renewed = self.renewed_key_fingerprints.clone();
        renewed.push(fingerprint.to_owned());
        let excess = renewed.len().saturating_sub(RENEWALS_UNCONFIRMED);
        renewed.drain(..excess);
        ClusterRecord {
            certificate_expires_unix: not_after_unix,
            key_fingerprint: if self.key_fingerprint.is_empty() {
                session_key.to_owned()
            } else {
                self.key_fingerprint.clone()
            },
            renewed_key_fingerprints: renewed,
            ..self.clone()
        }
    }
}

/// A bootstrap token, stored by the SHA-256 of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub expires_at_unix: i64,
    /// 0: unlimited within the TTL.
    pub max_uses: u32,
    pub uses: u32,
    /// The labels of every cluster registered with the token: the spoke cannot change them.
    pub labels: BTreeMap<String, String>,
    pub description: String,
    #[serde(default)]
    pub revoked: bool,
    /// Label keys under which the registering spoke may add labels of its own (empty in
    /// tokens minted before the hub had them: the spoke may add none).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub allowed_label_keys: BTreeSet<String>,
    /// The one cluster name the token registers, when pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// Why a token does not admit a registration (besides being unusable, [`TokenProblem`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionProblem {
    #[error("bootstrap token {token_id} is for cluster {pinned:?} only, not {asked:?}")]
    OtherCluster {
        token_id: String,
        pinned: String,
        asked: String,
    },
    #[error(
        "label {key:?}: bootstrap token {token_id} sets {key}={expected}, the spoke proposed {key}={proposed}; a spoke cannot change a token's labels"
    )]
    LabelChanged {
        token_id: String,
        key: String,
        expected: String,
        proposed: String,
    },
    #[error(
        "label {key:?}: bootstrap token {token_id} does not allow the spoke to set this key (allowed: {allowed}); mint a token with --label {key}=VALUE or --allow-label-key {key}"
    )]
    LabelNotAllowed {
        token_id: String,
        key: String,
        allowed: String,
    },
}

/// Why a token cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenProblem {
    #[error("bootstrap token is unknown")]
    Unknown,
    #[error("bootstrap token has expired")]
    Expired,
    #[error("bootstrap token has been used its maximum number of times")]
    UsedUp,
    #[error("bootstrap token has been revoked")]
    Revoked,
}

impl TokenRecord {
    /// Whether the token may register one more cluster at `now`.
    pub fn check(&self, now_unix: i64) -> Result<(), TokenProblem> {
        if self.revoked {
            Err(TokenProblem::Revoked)
        } else if now_unix >= self.expires_at_unix {
            Err(TokenProblem::Expired)
        } else if self.max_uses != 0 && self.uses >= self.max_uses {
            Err(TokenProblem::UsedUp)
        } else {
            Ok(())
        }
    }

    /// Whether the token may be presented at `now` to register `cluster`, whose record is
    /// `existing` if it has one. A new registration spends a use, so the token must be usable.
    /// A retry of the registration this token made (its answer was lost, or it waits for
    /// approval) spends nothing: the token only must not be revoked, even if it has been used
    /// up or has expired since. Records from before the hub recorded the token accept any
    /// token that is not revoked. (A retry gets a certificate only for the key the record
    /// holds: the caller checks that once the CSR is verified.)
    pub fn check_for(
        &self,
        existing: Option<&ClusterRecord>,
        now_unix: i64,
    ) -> Result<(), TokenProblem> {
        match existing {
            Some(c) if c.token_id == self.id || c.token_id.is_empty() => {
                if self.revoked {
                    Err(TokenProblem::Revoked)
                } else {
                    Ok(())
                }
            }
            _ => self.check(now_unix),
        }
    }

    /// The labels a cluster named `cluster` registering with this token gets, when the spoke
    /// proposes `proposed`: the token's labels, plus the proposed ones under the keys the token
    /// allows. Anything else the spoke proposes refuses the registration, naming the key, so
    /// that a token minted for `env=dev` cannot register a cluster that also claims
    /// `team=payments` (and receives the payments Apps).
    pub fn admit(
        &self,
        cluster: &str,
        proposed: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, AdmissionProblem> {
        if let Some(pinned) = &self.cluster
            && pinned != cluster
        {
            return Err(AdmissionProblem::OtherCluster {
                token_id: self.id.clone(),
                pinned: pinned.clone(),
                asked: cluster.to_owned(),
            });
        }
        let mut labels = self.labels.clone();
        for (key, value) in proposed {
            match self.labels.get(key) {
                Some(expected) if expected == value => {}
                Some(expected) => {
                    return Err(AdmissionProblem::LabelChanged {
                        token_id: self.id.clone(),
                        key: key.clone(),
                        expected: expected.clone(),
                        proposed: value.clone(),
                    });
                }
                None if self.allowed_label_keys.contains(key) => {
                    labels.insert(key.clone(), value.clone());
                }
                None => {
                    let allowed = if self.allowed_label_keys.is_empty() {
                        "none".to_owned()
                    } else {
                        self.allowed_label_keys
                            .iter()
                            .map(String::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    return Err(AdmissionProblem::LabelNotAllowed {
                        token_id: self.id.clone(),
                        key: key.clone(),
                        allowed,
                    });
                }
            }
        }
        Ok(labels)
    }
}

/// One Target in a cluster's desired state, with the generation at which it last changed.
/// The Target itself is shared: every cluster that runs an App alike holds one copy (see
/// [`TargetInterner`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionedTarget {
    pub spec_generation: u64,
    pub target: Arc<DesiredTarget>,
}

/// Hands out one shared copy of equal Targets: an App placed alike on 10,000 clusters is held
/// once, not 10,000 times. Per App it remembers the last few distinct Targets it handed out
/// (a rollout's waves make a few), so that looking one up costs a few comparisons.
#[derive(Debug, Default)]
pub struct TargetInterner {
    by_app: std::collections::HashMap<String, Vec<Arc<DesiredTarget>>>,
}

/// How many distinct Targets of one App the interner remembers.
const INTERNED_PER_APP: usize = 4;

impl TargetInterner {
    /// The shared copy of `target` (computed, or decoded from the store): the one handed out
    /// before when an equal one was, else `target`, remembered from now on.
    pub fn share(&mut self, target: Arc<DesiredTarget>) -> Arc<DesiredTarget> {
        // The App's name is copied only the first time the App is seen (this runs per Target).
        let known = match self.by_app.get_mut(target.app.as_str()) {
            Some(known) => known,
            None => self.by_app.entry(target.app.clone()).or_default(),
        };
        if let Some(i) = known
            .iter()
            .position(|k| Arc::ptr_eq(k, &target) || **k == *target)
        {
            // The most recently used stays longest.
            let found = known.remove(i);
            known.push(Arc::clone(&found));
            return found;
        }
        if known.len() == INTERNED_PER_APP {
            known.remove(0);
        }
        known.push(Arc::clone(&target));
        target
    }
}

/// How many generations a removed Target's tombstone is kept: a spoke that reconnects holding
/// an older generation than the oldest tombstone kept gets a snapshot instead of a delta.
pub const REMOVALS_KEPT: u64 = 16;

/// Everything one cluster should run, versioned.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterDesired {
    /// Starts at 1 for a registered cluster (0 on the wire means "nothing").
    pub generation: u64,
    pub targets: BTreeMap<String, VersionedTarget>,
    /// By App: the generation at which its Target was removed (tombstones), for every removal
    /// after `removals_since`. With each Target's `spec_generation`, they are what turns any
    /// generation from `removals_since` on into this one (see [`crate::link::on_hello`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub removed: BTreeMap<String, u64>,
    /// The generation from which on every removal is in `removed`.
    #[serde(default)]
    pub removals_since: u64,
}

impl ClusterDesired {
    /// The next generation, holding `targets`: a Target equal to the one held keeps its
    /// `spec_generation`, a changed or new one gets the new generation, a removed one leaves a
    /// tombstone (tombstones older than [`REMOVALS_KEPT`] generations are dropped, and
    /// `removals_since` moves past them).
    pub fn next(&self, targets: BTreeMap<String, Arc<DesiredTarget>>) -> ClusterDesired {
        let generation = self.generation + 1;
        let mut removed = self.removed.clone();
        for app in self.targets.keys().filter(|a| !targets.contains_key(*a)) {
            removed.insert(app.clone(), generation);
        }
        let mut removals_since = self.removals_since;
        let horizon = generation.saturating_sub(REMOVALS_KEPT);
        removed.retain(|app, at| {
            if targets.contains_key(app) {
                // Back again: its new Target is an upsert for every older generation.
                return false;
            }
            if *at <= horizon {
                removals_since = removals_since.max(*at);
                return false;
            }
            true
        });
        let targets = targets
            .into_iter()
            .map(|(app, target)| {
                let spec_generation = match self.targets.get(&app) {
                    Some(v) if Arc::ptr_eq(&v.target, &target) || v.target == target => {
                        v.spec_generation
                    }
                    _ => generation,
                };
                (
                    app,
                    VersionedTarget {
                        spec_generation,
                        target,
                    },
                )
            })
            .collect();
        ClusterDesired {
            generation,
            targets,
            removed,
            removals_since,
        }
    }

    /// Whether the Targets are `targets` (generations aside), without copying them.
    pub fn has_targets(&self, targets: &BTreeMap<String, Arc<DesiredTarget>>) -> bool {
        self.targets.len() == targets.len()
            && self
                .targets
                .iter()
                .zip(targets)
                .all(|((a, v), (b, t))| a == b && (Arc::ptr_eq(&v.target, t) || v.target == *t))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncState {
    #[default]
    Unknown,
    Pending,
    Syncing,
    Synced,
    OutOfSync,
    Failed,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealthState {
    #[default]
    Unknown,
    Healthy,
    Progressing,
    Degraded,
    Missing,
    Suspended,
}

/// A state by its name (`Synced`, `OutOfSync`, `Healthy`), as reports and tables show it.
macro_rules! display_by_name {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(self, f)
            }
        }
    )*};
}
display_by_name!(SyncState, HealthState);

/// The outcome for one Kubernetes object of a Target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceOutcome {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub action: String,
    pub health: HealthState,
    pub message: String,
    pub source_file: String,
    /// The sync hook phase the object ran in; empty for an ordinary object.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hook: String,
}

/// What the hub keeps in memory of a Target's last report: what rollouts and events need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportSummary {
    pub seq: u64,
    pub revision: String,
    pub chart_digest: String,
    pub sync: SyncState,
    pub health: HealthState,
    pub message: String,
}

impl From<&TargetReport> for ReportSummary {
    fn from(r: &TargetReport) -> Self {
        Self {
            seq: r.seq,
            revision: r.revision.clone(),
            chart_digest: r.chart_digest.clone(),
            sync: r.sync,
            health: r.health,
            message: r.message.clone(),
        }
    }
}

/// What a spoke reported about one of its Targets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetReport {
    pub seq: u64,
    pub cluster: String,
    pub app: String,
    pub revision: String,
    /// For a Target of a chart from a repository: the chart's digest the report is about.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub chart_digest: String,
    pub spec_generation: u64,
    pub sync: SyncState,
    pub health: HealthState,
    pub message: String,
    pub resources: Vec<ResourceOutcome>,
    pub observed_at_unix: i64,
    pub trace: BTreeMap<String, String>,
    /// When the hub stored the report (hub clock).
    #[serde(default)]
    pub received_at_unix: i64,
}

/// What the hub last learned from a Repo's fetches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoStatus {
    /// The commit the Repo's ref resolved to at the last successful fetch.
    pub commit: String,
    pub git_ref: String,
    pub last_fetch_unix: i64,
    pub last_success_unix: i64,
    /// The last fetch's error, empty when it succeeded.
    pub error: String,
    /// For the fleet Repo (`--fleet-repo`): the last commit whose fleet path was applied.
    #[serde(default)]
    pub fleet_commit: String,
    /// Why the fleet path at `commit` was not applied (invalid YAML, a resource refused...),
    /// empty when it was.
    #[serde(default)]
    pub fleet_error: String,
    /// Signed commits only (`spec.verify`): the trusted key that signed `commit` (or its tag).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signed_by: String,
    /// Signed commits only: the commit the ref last resolved to that was refused, never
    /// dispatched (empty once the ref resolves to a verified commit again), and why.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub refused_commit: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub refused_reason: String,
    /// Fetches finished since the hub first fetched the Repo (successful or not): what
    /// `gitfleet repo refresh --wait` waits to see grow, where a time in seconds would not
    /// tell two fetches of one second apart.
    #[serde(default)]
    pub fetches: u64,
}

/// One row of `gitfleet status`: a Target's desired and reported state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetView {
    pub app: String,
    pub cluster: String,
    pub desired_revision: String,
    pub report: Option<TargetReport>,
    pub updated_at_unix: i64,
    pub cluster_connected: bool,
    /// What holds the App's new revision from this Target, as its rollout says; empty when
    /// nothing does.
    pub held: String,
}

/// A cluster as `gitfleet cluster list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub record: ClusterRecord,
    pub connected: bool,
}

/// A credential for fetching a repository: used by the hub's own fetches and sent to the spokes
/// that have a Target in that repository (never to others), and only ever to the places its
/// entry names.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoCredential {
    /// URL prefixes the credential may be sent to (`https://`, `ssh://` or `user@host:path`;
    /// see `gitfleet_hub::credentials` and [`crate::credential_scope`]); checked when a Repo names it and again by the hub's and the
    /// spoke's fetches whenever a server asks for it.
    pub urls: Vec<String>,
    pub kind: CredentialKind,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CredentialKind {
    Https {
        username: String,
        password: String,
    },
    Ssh {
        username: String,
        private_key_pem: String,
        /// OpenSSH known_hosts lines; the server's host key must be listed (no trust on first use).
        known_hosts: String,
    },
}

impl RepoCredential {
    /// Whether this credential may be sent to `url`: an `https://` or `ssh://` URL (or
    /// `user@host:path`) under one of its prefixes.
    pub fn may_be_sent_to(&self, url: &str) -> bool {
        crate::credential_scope::allows(&self.urls, url)
    }
}

impl std::fmt::Debug for RepoCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoCredential")
            .field("urls", &self.urls)
            .field("kind", &self.kind)
            .finish()
    }
}

impl std::fmt::Debug for CredentialKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialKind::Https { username, .. } => f
                .debug_struct("Https")
                .field("username", username)
                .finish_non_exhaustive(),
            CredentialKind::Ssh { username, .. } => f
                .debug_struct("Ssh")
                .field("username", username)
                .finish_non_exhaustive(),
        }
    }
}

/// Something that happened to an App or one of its Targets, for `gitfleet events`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Increasing in the order events were recorded (assigned by the store).
    pub id: u64,
    pub at_unix: i64,
    pub app: String,
    /// The cluster, for an event about one Target; empty for the App as a whole.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    /// The rollout's number, for rollout events; 0 otherwise.
    #[serde(default)]
    pub rollout: u64,
    /// What happened, in one word: a rollout step (`WaveStarted`, `Paused`, …), a Target's
    /// change (`RevisionApplied`, `SyncFailed`, `Degraded`, `Healthy`, …) or an App's
    /// (`Created`, `Configured`, `Suspended`, `SyncRequested`, `NewRevision`, …).
    pub kind: String,
    pub message: String,
    /// Who asked for it (an admin's identity), for what people did.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub by: String,
    /// The commit a rollout event's rollout rolls out; empty for other events (and for events
    /// recorded before hubs kept it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub commit: String,
}

/// What people asked of an App outside its spec: suspension and forced syncs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppControl {
    /// No Target of the App is synced, and its rollout stands still, until resumed.
    #[serde(default)]
    pub suspended: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub suspended_by: String,
    #[serde(default)]
    pub suspended_at_unix: i64,
    /// Per cluster, how many times a sync was forced: a new number makes the spoke sync again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sync_requests: BTreeMap<String, u64>,
}
