//! The read model: what admin RPCs, `/metrics` and a dashboard show (Targets and their
//! status, clusters, rollouts, events). Reads only; nothing here takes the write lock.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use super::{Engine, EngineError, Published, Split, State, placeable, split_resources};
use crate::fleet::rollout::{Phase, RolloutKind, RolloutState, Status, decide_held, plan_waves};
use crate::fleet::{AppRevision, ClusterLabels, dependencies};
use crate::model::{ClusterView, EventRecord, TargetReport, TargetView};
use crate::pki::now_unix;
use crate::resources::{App, Kind, Resource};

/// A rollout as `gitfleet rollout status` shows it.
#[derive(Debug, Clone)]
pub struct RolloutView {
    pub app: String,
    pub state: RolloutState,
    pub status: Status,
    pub suspended: bool,
    /// The commit Git points at, when the rollout does not follow it (rolled back from it, or
    /// the App is suspended).
    pub git_revision: Option<String>,
}

/// One entry of `gitfleet rollout history`.
#[derive(Debug, Clone)]
pub struct RolloutRecord {
    pub state: RolloutState,
    /// "progressing", "paused", "complete", "rolling back", "rolled back", "superseded",
    /// "replaced by a rollback".
    pub outcome: &'static str,
}

impl Engine {
    pub(super) fn app(&self, name: &str) -> Result<App, EngineError> {
        match self.store.resource(Kind::App, name)? {
            Some(Resource::App(app)) => Ok(app),
            _ => Err(EngineError::NotFound(format!(
                "app {name:?} not found; list Apps with `gitfleet get apps`"
            ))),
        }
    }

    /// An App's rollout as last decided, without its status (which reads every Target's
    /// report): what a caller waiting for a phase needs. `None` before the first decision.
    pub fn rollout_state(&self, name: &str) -> Option<Arc<RolloutState>> {
        self.store.rollout_shared(name)
    }

    /// An App's rollout with its status as of now.
    pub fn rollout_status(&self, name: &str) -> Result<RolloutView, EngineError> {
        let app = self.app(name)?;
        let split = split_resources(self.store.resources()?);
        let (clusters, _) = self.store.clusters_snapshot();
        let labels = placeable(clusters.values());
        let revisions = self.store.revisions()?;
        let state = self.store.rollout_shared(name).ok_or_else(|| {
            EngineError::NotFound(format!(
                "app {name:?} has no rollout yet: its Repo {:?} has not been fetched \
                 (see `gitfleet get repo {}`)",
                app.spec.repo, app.spec.repo
            ))
        })?;
        self.view(&app, state, &labels, &split, &revisions)
    }

    /// Every App's rollout view, reading resources, clusters and revisions once: what a
    /// `/metrics` scrape needs, whose cost must not grow with Apps × stored resources (the
    /// listener is unauthenticated). Apps without a rollout yet are left out.
    pub fn rollout_statuses(&self) -> Result<Vec<RolloutView>, EngineError> {
        let split = split_resources(self.store.resources()?);
        let (clusters, _) = self.store.clusters_snapshot();
        let labels = placeable(clusters.values());
        let revisions = self.store.revisions()?;
        let mut views = Vec::new();
        for app in &split.apps {
            let Some(state) = self.store.rollout_shared(&app.metadata.name) else {
                continue;
            };
            views.push(self.view(app, state, &labels, &split, &revisions)?);
        }
        Ok(views)
    }

    fn view(
        &self,
        app: &App,
        state: Arc<RolloutState>,
        labels: &[ClusterLabels<'_>],
        split: &Split,
        revisions: &BTreeMap<String, AppRevision>,
    ) -> Result<RolloutView, EngineError> {
        let name = app.metadata.name.as_str();
        let plan = plan_waves(app, labels, &split.groups, &split.projects);
        let now = now_unix();
        let observations = self.observations(name, plan.clusters(), now);
        let wanted = |dep: &str| {
            let rollout = self.store.rollout_shared(dep);
            dependencies::wanted_revision(revisions.get(dep), rollout.as_deref()).map(str::to_owned)
        };
        let holds = self.holds_for(app, &plan, labels, &split.projects, &wanted, now);
        let decision = decide_held(&state, &plan, &observations, &holds, now);
        if decision.state != *state {
            // Time moved the rollout on since it was last decided: let the driver store it.
            self.wake_rollout(name);
        }
        let mut status = decision.status;
        let self_heal = holds.self_heal();
        if !self_heal.is_empty() {
            for t in status.waves.iter_mut().flat_map(|w| w.targets.iter_mut()) {
                if let Some(why) = self_heal.on(&t.cluster) {
                    t.detail = with_self_heal_suspended(&t.detail, why);
                }
            }
        }
        let control = self.store.app_control(name)?;
        let git_revision = revisions
            .get(name)
            .map(|r| r.commit.clone())
            .filter(|c| *c != state.revision.commit);
        Ok(RolloutView {
            app: name.to_owned(),
            state: RolloutState::clone(&state),
            status,
            suspended: control.suspended,
            git_revision,
        })
    }

    /// Every rollout of an App, oldest first, with how each ended.
    pub async fn rollout_history(&self, name: &str) -> Result<Vec<RolloutRecord>, EngineError> {
        self.app(name)?;
        let states = self.store.rollout_history(name).await?;
        let mut out = Vec::with_capacity(states.len());
        for (i, state) in states.iter().enumerate() {
            let next = states.get(i + 1);
            let outcome = match (&state.phase, &state.kind, next) {
                (Phase::Complete, RolloutKind::Update, _) => "complete",
                (Phase::Complete, RolloutKind::Rollback { .. }, _) => "rolled back",
                (_, _, Some(n)) if n.is_rollback() => "replaced by a rollback",
                (_, _, Some(_)) => "superseded",
                (Phase::Paused { .. }, _, None) => "paused",
                (Phase::Progressing, RolloutKind::Rollback { .. }, None) => "rolling back",
                (Phase::Progressing, RolloutKind::Update, None) => "progressing",
            };
            out.push(RolloutRecord {
                state: state.clone(),
                outcome,
            });
        }
        Ok(out)
    }

    /// The newest `limit` events, oldest first, of one App and/or cluster when given, with ids
    /// above `after`.
    pub async fn events(
        &self,
        app: Option<&str>,
        cluster: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, EngineError> {
        if let Some(a) = app {
            self.app(a)?;
        }
        Ok(self.store.events(app, cluster, after, limit).await?)
    }

    /// The oldest events above `after` (of one App and/or cluster when given), a page at a
    /// time, and the id to read on from (`None`: no more): what a live read resumes with.
    pub async fn events_after(
        &self,
        app: Option<&str>,
        cluster: Option<&str>,
        after: u64,
    ) -> Result<(Vec<EventRecord>, Option<u64>), EngineError> {
        Ok(self.store.events_after(app, cluster, after).await?)
    }

    /// What holds `app`'s rollout from its revision, while it is not complete: (the revision,
    /// why). Its Targets not at that revision show why as held (from memory).
    pub fn app_hold(&self, app: &str) -> Result<Option<(String, String)>, EngineError> {
        // Shared, not copied: a rollout holds an entry per cluster.
        Ok(self.store.rollout_shared(app).and_then(|r| {
            let incomplete = !matches!(r.phase, Phase::Complete);
            r.held
                .clone()
                .filter(|_| incomplete)
                .map(|h| (r.revision.commit.clone(), h))
        }))
    }

    /// NOT_FOUND unless App `name` exists (with the message every read about an App gives).
    pub fn check_app(&self, name: &str) -> Result<(), EngineError> {
        self.app(name).map(|_| ())
    }

    /// Whether `cluster`'s published desired state has a Target of `app` (from memory).
    pub fn has_target(&self, cluster: &str, app: &str) -> bool {
        self.lock()
            .desired
            .get(cluster)
            .is_some_and(|tx| tx.borrow().desired.targets.contains_key(app))
    }

    pub fn clusters(&self) -> Result<Vec<ClusterView>, EngineError> {
        let now = now_unix();
        let state = self.lock();
        Ok(self
            .store
            .clusters()?
            .into_iter()
            .filter(|c| !c.pending)
            .map(|mut record| {
                if let Some(t) = state.last_contact.get(&record.name) {
                    record.last_contact_unix = record.last_contact_unix.max(*t);
                }
                if let Some(c) = state.connections.get(&record.name) {
                    record.agent_version = c.agent_version.clone();
                }
                let connected = self.is_connected(&state, &record.name, now);
                ClusterView { record, connected }
            })
            .collect())
    }

    /// Whether `cluster` has a live link heard from within the heartbeat grace here, or a link
    /// at another replica (which holds it while its lease lives).
    pub(super) fn is_connected(&self, state: &State, cluster: &str, now: i64) -> bool {
        self.linked_here(state, cluster, now) || self.store.connected_elsewhere(cluster)
    }

    /// Whether `cluster`'s link is on this replica and heard from within the grace.
    pub(super) fn linked_here(&self, state: &State, cluster: &str, now: i64) -> bool {
        state.connections.contains_key(cluster)
            && state
                .last_contact
                .get(cluster)
                .is_some_and(|t| now - t <= self.config.heartbeat_grace.as_secs() as i64)
    }

    /// Every Target (optionally of one App and/or cluster) with its last report, ordered by
    /// (app, cluster).
    pub async fn status(
        &self,
        app: Option<&str>,
        cluster: Option<&str>,
    ) -> Result<Vec<TargetView>, EngineError> {
        Ok(self
            .status_page(app, cluster, None, usize::MAX)
            .await?
            .targets)
    }

    /// One page of `status`: at most `limit` Targets ordered by (app, cluster), starting after
    /// the Target `after` (which need not exist any more). Only the page's reports are read from
    /// the store; the keys come from memory.
    pub async fn status_page(
        &self,
        app: Option<&str>,
        cluster: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<StatusPage, EngineError> {
        let now = now_unix();
        // (app, cluster, desired revision, connected, what suspends self-heal)
        type Key = (String, String, String, bool, Option<String>);
        let mut keys: Vec<Key> = {
            let state = self.lock();
            let mut keys = Vec::new();
            // One cluster, or one App, is looked up rather than scanned for: a live read asks
            // for one Target, or one cluster's, at every change.
            let clusters: Box<dyn Iterator<Item = (&String, &watch::Sender<Arc<Published>>)>> =
                match cluster {
                    Some(want) => Box::new(state.desired.get_key_value(want).into_iter()),
                    None => Box::new(state.desired.iter()),
                };
            for (c, tx) in clusters {
                let connected = self.is_connected(&state, c, now);
                let desired = tx.borrow();
                let targets: Box<dyn Iterator<Item = (&String, &_)>> = match app {
                    Some(want) => Box::new(desired.desired.targets.get_key_value(want).into_iter()),
                    None => Box::new(desired.desired.targets.iter()),
                };
                for (a, t) in targets {
                    if after.is_some_and(|(aa, ac)| (a.as_str(), c.as_str()) <= (aa, ac)) {
                        continue;
                    }
                    keys.push((
                        a.clone(),
                        c.clone(),
                        t.target.commit.clone(),
                        connected,
                        t.target.self_heal_suspended.clone(),
                    ));
                }
            }
            keys
        };
        keys.sort_unstable_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
        let more = keys.len() > limit;
        keys.truncate(limit);
        let mut targets = Vec::with_capacity(keys.len());
        // By App (the keys are sorted by App): what holds its rollout's revision, and which.
        let mut held: Option<(String, Option<(String, String)>)> = None;
        for (app, cluster, desired_revision, cluster_connected, self_heal) in keys {
            let report = self.store.report(&cluster, &app).await?;
            if held.as_ref().is_none_or(|(a, _)| *a != app) {
                held = Some((app.clone(), self.app_hold(&app)?));
            }
            let mut held_text = match held.as_ref().and_then(|(_, h)| h.as_ref()) {
                Some((commit, text)) if *commit != desired_revision => text.clone(),
                _ => String::new(),
            };
            if let Some(why) = &self_heal {
                held_text = with_self_heal_suspended(&held_text, why);
            }
            targets.push(TargetView {
                held: held_text,
                updated_at_unix: report.as_ref().map(|r| r.received_at_unix).unwrap_or(0),
                app,
                cluster,
                desired_revision,
                report,
                cluster_connected,
            });
        }
        Ok(StatusPage { targets, more })
    }

    /// Every Target's last sync and health (from memory), for gauges; a Target with no report
    /// yet counts with the defaults a missing report shows.
    pub fn target_states(
        &self,
    ) -> Vec<(String, crate::model::SyncState, crate::model::HealthState)> {
        let state = self.lock();
        let mut out = Vec::new();
        for (c, tx) in &state.desired {
            for a in tx.borrow().desired.targets.keys() {
                out.push(match self.store.report_summary(c, a) {
                    Some(r) => (a.clone(), r.sync, r.health),
                    None => {
                        let r = TargetReport::default();
                        (a.clone(), r.sync, r.health)
                    }
                });
            }
        }
        out
    }
}

/// `text` (a Target's detail or held text) saying that `why` suspends its self-heal:
/// `self-heal suspended by freeze campaign`.
fn with_self_heal_suspended(text: &str, why: &str) -> String {
    if text.is_empty() {
        format!("self-heal suspended by {why}")
    } else {
        format!("{text}; self-heal suspended by {why}")
    }
}

/// A page of Targets; `more` when Targets follow the last one.
#[derive(Debug, Clone)]
pub struct StatusPage {
    pub targets: Vec<TargetView>,
    pub more: bool,
}
