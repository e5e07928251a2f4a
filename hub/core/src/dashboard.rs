//! The web dashboard's decisions (docs/dashboard.md), as values: sign-in links and browser
//! sessions (what they hold, when they are spent or expired), what a user's role may do from
//! the dashboard, and the fleet grid's compact model (Apps × clusters, one character a cell).
//!
//! Secrets never appear here: the hub hashes a sign-in token, a session token and a session's
//! CSRF token before they are stored or compared, and keys its records by the hash.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::authz::{Action, Role, Scope, Subject, authorize};
use crate::model::{HealthState, SyncState};
use crate::users::{UserProblem, UserRecord};

#[cfg(test)]
mod tests;

/// How long a sign-in link lives before it is used (it is single-use either way).
pub const SIGNIN_TTL_SECS: i64 = 5 * 60;

/// How long a browser session lives when the hub is given no `--ui-session-ttl`.
pub const DEFAULT_SESSION_TTL_SECS: i64 = 8 * 3600;

/// A sign-in link's record, stored under the hash of its token until it is used or expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigninRecord {
    pub user: String,
    /// The user's certificate key when the link was made: a user revoked and created again
    /// since (a new key) does not get the old user's session.
    pub key_fingerprint: String,
    pub created_at_unix: i64,
    pub expires_at_unix: i64,
}

/// A browser session, stored under the hash of its cookie's token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub user: String,
    pub key_fingerprint: String,
    /// SHA-256 (hex) of the token every action must carry in its `x-gitfleet-csrf` header.
    pub csrf_hash: String,
    pub created_at_unix: i64,
    pub expires_at_unix: i64,
}

/// Why a sign-in link or a session is refused. The browser is told only that it must sign in
/// again (`gitfleet dashboard`); the hub's log says which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionProblem {
    #[error("unknown or already used")]
    Unknown,
    #[error("expired")]
    Expired,
    #[error("{0}")]
    User(#[from] UserProblem),
}

impl SigninRecord {
    pub fn new(user: &UserRecord, now_unix: i64) -> Self {
        Self {
            user: user.name.clone(),
            key_fingerprint: user.key_fingerprint.clone(),
            created_at_unix: now_unix,
            expires_at_unix: now_unix + SIGNIN_TTL_SECS,
        }
    }

    pub fn is_expired(&self, now_unix: i64) -> bool {
        self.expires_at_unix <= now_unix
    }

    /// The session a used link starts: it lives `ttl_secs` from now, and never past the user's
    /// certificate.
    pub fn start_session(
        &self,
        user: Option<&UserRecord>,
        csrf_hash: String,
        ttl_secs: i64,
        now_unix: i64,
    ) -> Result<SessionRecord, SessionProblem> {
        if self.is_expired(now_unix) {
            return Err(SessionProblem::Expired);
        }
        let user = user.ok_or_else(|| UserProblem::Unknown(self.user.clone()))?;
        user.check(&self.key_fingerprint, now_unix)?;
        Ok(SessionRecord {
            user: self.user.clone(),
            key_fingerprint: self.key_fingerprint.clone(),
            csrf_hash,
            created_at_unix: now_unix,
            expires_at_unix: (now_unix + ttl_secs.max(1)).min(user.expires_at_unix),
        })
    }
}

impl SessionRecord {
    /// The session's user as its record is now: a revoked, expired or replaced user ends every
    /// session at once, and the role is the record's now, not the one at sign-in.
    pub fn check(
        &self,
        user: Option<&UserRecord>,
        now_unix: i64,
    ) -> Result<UserRecord, SessionProblem> {
        if self.expires_at_unix <= now_unix {
            return Err(SessionProblem::Expired);
        }
        let user = user.ok_or_else(|| UserProblem::Unknown(self.user.clone()))?;
        user.check(&self.key_fingerprint, now_unix)?;
        Ok(user.clone())
    }
}

/// The actions the dashboard offers, each the CLI's command of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UiAction {
    Pause,
    Resume,
    Promote,
    Rollback,
    Sync,
}

impl UiAction {
    pub const ALL: [UiAction; 5] = [
        UiAction::Pause,
        UiAction::Resume,
        UiAction::Promote,
        UiAction::Rollback,
        UiAction::Sync,
    ];

    pub fn parse(s: &str) -> Option<UiAction> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            UiAction::Pause => "pause",
            UiAction::Resume => "resume",
            UiAction::Promote => "promote",
            UiAction::Rollback => "rollback",
            UiAction::Sync => "sync",
        }
    }

    /// The admin API's action: the same authorization and the same audit entry as the CLI's.
    pub const fn action(self) -> Action {
        match self {
            UiAction::Pause => Action::PauseRollout,
            UiAction::Resume => Action::ResumeRollout,
            UiAction::Promote => Action::PromoteRollout,
            UiAction::Rollback => Action::RollbackRollout,
            UiAction::Sync => Action::SyncApp,
        }
    }
}

/// The actions `subject` may take on an App of `project` from the dashboard: none for a viewer,
/// all for an operator of the Project or an admin. The page shows buttons for these only; the
/// server decides each request again with [`authorize`].
pub fn allowed_actions(subject: &Subject, app: &str, project: &str) -> Vec<UiAction> {
    let what = format!("App {app:?}");
    UiAction::ALL
        .into_iter()
        .filter(|a| {
            authorize(
                subject,
                a.action(),
                Scope::Project {
                    what: &what,
                    project,
                },
            )
            .is_ok()
        })
        .collect()
}

/// Whether a role may ever act from the dashboard (a viewer's page has no action at all).
pub fn role_may_act(role: Role) -> bool {
    role != Role::Viewer
}

/// One cell of the grid: a Target's sync and health folded into what its colour says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    /// The App has no Target on the cluster.
    None,
    /// Synced and healthy.
    Healthy,
    /// Syncing, pending, or progressing towards health.
    Progressing,
    /// Out of sync (drift, or not yet at the desired revision).
    OutOfSync,
    /// Sync failed, or degraded or missing.
    Failed,
    /// Suspended (a suspended workload).
    Suspended,
    /// No report yet, or one that says nothing.
    Unknown,
    /// The cluster's link is down: what it last said may be stale.
    Disconnected,
}

impl Cell {
    /// The character the grid's JSON carries for the cell.
    pub const fn code(self) -> char {
        match self {
            Cell::None => '.',
            Cell::Healthy => 'h',
            Cell::Progressing => 'p',
            Cell::OutOfSync => 'o',
            Cell::Failed => 'f',
            Cell::Suspended => 's',
            Cell::Unknown => 'u',
            Cell::Disconnected => 'x',
        }
    }

    /// A Target's cell from its last report (if any), its desired revision and its link.
    pub fn of(
        report: Option<(SyncState, HealthState, &str)>,
        desired_revision: &str,
        connected: bool,
    ) -> Cell {
        if !connected {
            return Cell::Disconnected;
        }
        let Some((sync, health, revision)) = report else {
            return Cell::Unknown;
        };
        match (sync, health) {
            (SyncState::Failed, _) | (_, HealthState::Degraded | HealthState::Missing) => {
                Cell::Failed
            }
            (SyncState::Syncing | SyncState::Pending, _) | (_, HealthState::Progressing) => {
                Cell::Progressing
            }
            (SyncState::OutOfSync, _) => Cell::OutOfSync,
            (SyncState::Synced, _)
                if !desired_revision.is_empty() && revision != desired_revision =>
            {
                Cell::OutOfSync
            }
            (_, HealthState::Suspended) => Cell::Suspended,
            (SyncState::Synced, HealthState::Healthy) => Cell::Healthy,
            _ => Cell::Unknown,
        }
    }
}

/// An App as the grid lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GridApp {
    pub name: String,
    pub project: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A cluster as the grid lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GridCluster {
    pub name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub connected: bool,
}

/// One Target's state, as the engine reads it from memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridTarget {
    pub app: String,
    pub cluster: String,
    pub desired_revision: String,
    /// The last report's sync, health and revision.
    pub report: Option<(SyncState, HealthState, String)>,
}

/// The fleet grid, compact: one string per App with a character per cluster ([`Cell::code`]),
/// and per App the index of each cell's reported revision in `revisions` (-1: none). 1,000
/// clusters × 20 Apps is some 100 KB of JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grid {
    pub apps: Vec<GridApp>,
    pub clusters: Vec<GridCluster>,
    /// By App (in `apps` order): a cell code per cluster (in `clusters` order).
    pub cells: Vec<String>,
    /// By App: a revision index per cluster.
    pub revs: Vec<Vec<i32>>,
    /// Every revision a cell names (abbreviated to 12 characters).
    pub revisions: Vec<String>,
}

/// How many characters of a commit the grid shows.
pub const SHORT_REVISION: usize = 12;

/// Builds the grid: Apps and clusters sorted by name, every Target in its cell.
pub fn build_grid(
    mut apps: Vec<GridApp>,
    mut clusters: Vec<GridCluster>,
    targets: &[GridTarget],
) -> Grid {
    apps.sort_by(|a, b| a.name.cmp(&b.name));
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    let app_index: HashMap<&str, usize> = apps
        .iter()
        .enumerate()
        .map(|(i, a)| (a.name.as_str(), i))
        .collect();
    let cluster_index: HashMap<&str, usize> = clusters
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let mut cells = vec![vec![Cell::None.code(); clusters.len()]; apps.len()];
    let mut revs = vec![vec![-1i32; clusters.len()]; apps.len()];
    let mut revisions: Vec<String> = Vec::new();
    let mut revision_index: HashMap<String, i32> = HashMap::new();
    for t in targets {
        let (Some(&a), Some(&c)) = (
            app_index.get(t.app.as_str()),
            cluster_index.get(t.cluster.as_str()),
        ) else {
            continue;
        };
        let report = t.report.as_ref().map(|(s, h, r)| (*s, *h, r.as_str()));
        cells[a][c] = Cell::of(report, &t.desired_revision, clusters[c].connected).code();
        if let Some((_, _, rev)) = report.filter(|(_, _, r)| !r.is_empty()) {
            let short: String = rev.chars().take(SHORT_REVISION).collect();
            let next = i32::try_from(revisions.len()).unwrap_or(i32::MAX);
            let i = *revision_index.entry(short.clone()).or_insert_with(|| {
                revisions.push(short);
                next
            });
            revs[a][c] = i;
        }
    }
    Grid {
        apps,
        clusters,
        cells: cells.into_iter().map(String::from_iter).collect(),
        revs,
        revisions,
    }
}
