//! The hub's own records: registered clusters, bootstrap tokens, per-cluster desired state, and
//! what spokes report about their Targets. Plain data, shared by the store, the engine and the
//! gRPC adapter (which alone converts them to and from the wire).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fleet::DesiredTarget;

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
    /// SHA-256 of the public key of the cluster's current certificate, hex.
    #[serde(default)]
    pub key_fingerprint: String,
    /// Registered, waiting for an admin's approval (no certificate yet).
    #[serde(default)]
    pub pending: bool,
}

/// A bootstrap token, stored by the SHA-256 of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub expires_at_unix: i64,
    /// 0: unlimited within the TTL.
    pub max_uses: u32,
    pub uses: u32,
    pub labels: BTreeMap<String, String>,
    pub description: String,
    #[serde(default)]
    pub revoked: bool,
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
}

/// One Target in a cluster's desired state, with the generation at which it last changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionedTarget {
    pub spec_generation: u64,
    pub target: DesiredTarget,
}

/// Everything one cluster should run, versioned.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterDesired {
    /// Starts at 1 for a registered cluster (0 on the wire means "nothing").
    pub generation: u64,
    pub targets: BTreeMap<String, VersionedTarget>,
}

impl ClusterDesired {
    /// Whether the Targets are `targets` (generations aside), without copying them.
    pub fn has_targets(&self, targets: &BTreeMap<String, DesiredTarget>) -> bool {
        self.targets.len() == targets.len()
            && self
                .targets
                .iter()
                .zip(targets)
                .all(|((a, v), (b, t))| a == b && v.target == *t)
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
}

/// What the hub keeps in memory of a Target's last report: what rollouts and events need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportSummary {
    pub seq: u64,
    pub revision: String,
    pub sync: SyncState,
    pub health: HealthState,
    pub message: String,
}

impl From<&TargetReport> for ReportSummary {
    fn from(r: &TargetReport) -> Self {
        Self {
            seq: r.seq,
            revision: r.revision.clone(),
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
    /// see [`crate::credentials`]); checked when a Repo names it and again by the hub's and the
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
        gitfleet_core::credential_scope::allows(&self.urls, url)
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
