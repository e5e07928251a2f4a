//! The web dashboard's side of the engine: sign-in links and browser sessions in the store
//! (hashed, so that a copy of the store opens no session; read from the backend, so that in HA
//! any replica accepts what another wrote; a link spent once, by a conditional write), and the
//! fleet grid read from memory. Decisions are `gitfleet_core::dashboard`'s.

use std::time::Duration;

use gitfleet_core::dashboard::{
    Cell, Grid, GridApp, GridCluster, GridTarget, SHORT_REVISION, SessionProblem, SessionRecord,
    SigninRecord, build_grid,
};
use gitfleet_core::users::UserRecord;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::{Engine, EngineError, split_resources};
use crate::pki::now_unix;

const SIGNIN_PREFIX: &str = "signin/";
const SESSION_PREFIX: &str = "session/";

/// SHA-256 of a token, hex: the key its record is stored under, or what is compared.
pub(super) fn secret_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn new_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// A session a used sign-in link started: the cookie's token and the CSRF token, both shown
/// once (the store has their hashes).
#[derive(Debug, Clone)]
pub struct NewSession {
    pub token: String,
    pub csrf: String,
    pub record: SessionRecord,
}

/// Why a sign-in or a session is refused.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("{0}")]
    Refused(#[from] SessionProblem),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl Engine {
    /// A single-use sign-in link's token for `user` (an authenticated caller), durable before
    /// it is returned. Expired links and sessions are swept on the way.
    pub async fn create_dashboard_signin(
        &self,
        user: &UserRecord,
    ) -> Result<(String, SigninRecord), EngineError> {
        let now = now_unix();
        let swept = self
            .store
            .sweep_dashboard_records(|key, value| expired_record(key, value, now))
            .await?;
        let token = new_token();
        let record = SigninRecord::new(user, now);
        self.store
            .put_dashboard_record(&format!("{SIGNIN_PREFIX}{}", secret_hash(&token)), &record);
        self.store.flush().await?;
        info!(user = %user.name, swept, "dashboard sign-in link created");
        Ok((token, record))
    }

    /// Spends a sign-in link and starts its session, durably; a link used already (here or at
    /// another replica), expired, or whose user no longer accepts it is refused.
    pub async fn dashboard_sign_in(
        &self,
        token: &str,
        session_ttl: Duration,
    ) -> Result<NewSession, DashboardError> {
        let now = now_unix();
        let used = format!("{SIGNIN_PREFIX}{}", secret_hash(token));
        let Some((link, old)) = self
            .store
            .dashboard_record::<SigninRecord>(&used)
            .await
            .map_err(EngineError::from)?
        else {
            return Err(SessionProblem::Unknown.into());
        };
        let csrf = new_token();
        let ttl = i64::try_from(session_ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let user = self.store.user(&link.user);
        let record = match link.start_session(user.as_ref(), secret_hash(&csrf), ttl, now) {
            Ok(record) => record,
            Err(problem) => {
                self.store.delete_dashboard_record(&used);
                self.store.flush().await.map_err(EngineError::from)?;
                return Err(problem.into());
            }
        };
        let session = new_token();
        let check = self.store.consume_dashboard_record(
            &used,
            old,
            &format!("{SESSION_PREFIX}{}", secret_hash(&session)),
            &record,
        );
        match check.confirm(&self.store).await {
            Ok(()) => {}
            Err(crate::store::StoreError::Conflict(why)) => {
                warn!(user = %link.user, %why, "dashboard sign-in link used twice; refused");
                return Err(SessionProblem::Unknown.into());
            }
            Err(e) => return Err(EngineError::from(e).into()),
        }
        info!(user = %record.user, expires_at = record.expires_at_unix, "dashboard session started");
        Ok(NewSession {
            token: session,
            csrf,
            record,
        })
    }

    /// The session a cookie's token opens and its user as the user's record is now.
    pub async fn dashboard_session(
        &self,
        token: &str,
    ) -> Result<(SessionRecord, UserRecord), DashboardError> {
        let key = format!("{SESSION_PREFIX}{}", secret_hash(token));
        let Some((session, _)) = self
            .store
            .dashboard_record::<SessionRecord>(&key)
            .await
            .map_err(EngineError::from)?
        else {
            return Err(SessionProblem::Unknown.into());
        };
        let user = session.check(self.store.user(&session.user).as_ref(), now_unix())?;
        Ok((session, user))
    }

    /// Ends a session (sign out), durably.
    pub async fn dashboard_sign_out(&self, token: &str) -> Result<(), EngineError> {
        self.store
            .delete_dashboard_record(&format!("{SESSION_PREFIX}{}", secret_hash(token)));
        self.store.flush().await?;
        Ok(())
    }

    /// The fleet grid: every App × every cluster, from memory (no report is read from the
    /// backend).
    pub fn dashboard_grid(&self) -> Result<Grid, EngineError> {
        let split = split_resources(self.store.resources()?);
        let apps = split
            .apps
            .iter()
            .map(|a| GridApp {
                name: a.metadata.name.clone(),
                project: super::app_project(a),
                labels: a.metadata.labels.clone(),
            })
            .collect();
        let now = now_unix();
        let (records, _) = self.store.clusters_snapshot();
        let state = self.lock();
        let clusters = records
            .values()
            .filter(|c| !c.pending && !c.revoked)
            .map(|c| GridCluster {
                name: c.name.clone(),
                labels: c.labels.clone(),
                connected: self.is_connected(&state, &c.name, now),
            })
            .collect();
        let mut targets = Vec::new();
        for (cluster, tx) in &state.desired {
            for (app, t) in &tx.borrow().desired.targets {
                targets.push(GridTarget {
                    app: app.clone(),
                    cluster: cluster.clone(),
                    desired_revision: t.target.commit.clone(),
                    report: self
                        .store
                        .report_summary(cluster, app)
                        .map(|r| (r.sync, r.health, r.revision)),
                });
            }
        }
        drop(state);
        Ok(build_grid(apps, clusters, &targets))
    }

    /// One Target's grid cell and reported revision (from memory), for a live update.
    pub fn dashboard_cell(&self, app: &str, cluster: &str) -> (Cell, String) {
        let now = now_unix();
        let state = self.lock();
        let desired = state.desired.get(cluster).and_then(|tx| {
            tx.borrow()
                .desired
                .targets
                .get(app)
                .map(|t| t.target.commit.clone())
        });
        let Some(desired) = desired else {
            return (Cell::None, String::new());
        };
        let connected = self.is_connected(&state, cluster, now);
        drop(state);
        let report = self.store.report_summary(cluster, app);
        let cell = Cell::of(
            report
                .as_ref()
                .map(|r| (r.sync, r.health, r.revision.as_str())),
            &desired,
            connected,
        );
        let revision = report
            .map(|r| r.revision.chars().take(SHORT_REVISION).collect())
            .unwrap_or_default();
        (cell, revision)
    }
}

/// Whether a stored dashboard record is over (or unreadable).
fn expired_record(key: &str, value: &[u8], now: i64) -> bool {
    let expires = if key.starts_with(SIGNIN_PREFIX) {
        serde_json::from_slice::<SigninRecord>(value).map(|r| r.expires_at_unix)
    } else {
        serde_json::from_slice::<SessionRecord>(value).map(|r| r.expires_at_unix)
    };
    expires.map_or(true, |at| at <= now)
}
