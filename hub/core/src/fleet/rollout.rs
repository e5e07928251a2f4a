//! Rollouts, pure: how a new revision of an App moves across its clusters, wave by wave.
//!
//! Three steps, all values in and values out (no IO, no clock: `now` is an argument, in unix
//! seconds like the rest of the hub's records):
//! - [`plan_waves`]: the App's strategy and its placed clusters → a [`Plan`] (ordered waves with
//!   their clusters and limits resolved).
//! - [`RolloutState::command`]: a new revision from Git, or a person's `pause`, `resume`,
//!   `promote`, `rollback [--to]` → the next persisted [`RolloutState`] and its events.
//! - [`decide`]: the state, the plan, what each Target reports, and `now` → a [`Decision`]: which
//!   Targets get which revision now, the next state, the events, and a status with a reason.
//!
//! The state holds the revision the rollout gives each cluster ([`RolloutState::assigned`]); the
//! engine turns that into desired state with [`target_revisions`] and
//! [`super::compute_fleet_with_rollouts`]. `decide` is idempotent: deciding again on its own
//! output with the same observations and `now` changes nothing. See `docs/rollouts.md`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::desired::AppRevision;
use super::hold::{Hold, Holds};
use super::placement::{ClusterLabels, selection_matches};
use crate::model::{HealthState, ReportSummary, SyncState};
use crate::resources::{App, ClusterGroup, IntOrPercent, OnFailure, RolloutSpec};

mod assigned;
#[cfg(test)]
mod tests;

// ---------------------------------------------------------------------------------------------
// Plan

/// The strategy of one App resolved against its placed clusters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// In order; the implicit "rest" wave (clusters no wave names) last, when it has clusters.
    pub waves: Vec<Wave>,
    pub progress_deadline: Duration,
    pub on_failure: OnFailure,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wave {
    pub name: String,
    /// Sorted by name; the order in which the wave's Targets are updated.
    pub clusters: Vec<String>,
    pub max_unavailable: IntOrPercent,
    pub min_healthy_for: Duration,
    pub failure_budget: IntOrPercent,
    /// Whether Targets of disconnected clusters are given the revision too (rollbacks: the
    /// cluster must leave the bad revision as soon as it comes back).
    pub include_disconnected: bool,
}

/// Name of the implicit last wave.
pub const REST_WAVE: &str = "rest";
/// Name of the single wave of an App without waves.
pub const ALL_WAVE: &str = "all";

impl Wave {
    /// A wave with the strategy defaults (100% at once, no soak, no failure tolerated).
    pub fn new(name: &str, clusters: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let mut clusters: Vec<String> = clusters.into_iter().map(Into::into).collect();
        clusters.sort();
        clusters.dedup();
        Self {
            name: name.to_owned(),
            clusters,
            max_unavailable: RolloutSpec::DEFAULT_MAX_UNAVAILABLE,
            min_healthy_for: RolloutSpec::DEFAULT_MIN_HEALTHY_FOR,
            failure_budget: RolloutSpec::DEFAULT_FAILURE_BUDGET,
            include_disconnected: false,
        }
    }

    /// How many of the wave's Targets may be unavailable at once because of the rollout. Never 0
    /// for a non-empty wave, so that a rollout always makes progress.
    pub fn max_unavailable_count(&self) -> usize {
        let total = self.clusters.len();
        self.max_unavailable
            .resolve(total)
            .max(usize::from(total > 0))
    }

    /// How many failed Targets the wave tolerates.
    pub fn failure_budget_count(&self) -> usize {
        self.failure_budget.resolve(self.clusters.len())
    }
}

impl Plan {
    /// All clusters at once: what an App without `spec.rollout` gets.
    pub fn all_at_once(clusters: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            waves: vec![Wave::new(ALL_WAVE, clusters)],
            progress_deadline: RolloutSpec::DEFAULT_PROGRESS_DEADLINE,
            on_failure: OnFailure::Pause,
        }
    }

    /// Index of the wave `cluster` belongs to, if it is placed.
    pub fn wave_of(&self, cluster: &str) -> Option<usize> {
        self.waves
            .iter()
            .position(|w| w.clusters.iter().any(|c| c == cluster))
    }

    pub fn clusters(&self) -> impl Iterator<Item = &str> {
        self.waves
            .iter()
            .flat_map(|w| w.clusters.iter().map(String::as_str))
    }

    /// The plan a rollback follows: every cluster at once, Targets of disconnected clusters
    /// included, and a failure pauses (a rollback is never rolled back).
    fn for_rollback(&self) -> Plan {
        let mut wave = Wave::new("rollback", self.clusters());
        wave.include_disconnected = true;
        Plan {
            waves: vec![wave],
            progress_deadline: self.progress_deadline,
            on_failure: OnFailure::Pause,
        }
    }
}

/// Resolves `app`'s strategy against the clusters it is placed on. A cluster belongs to the
/// first wave that names it; clusters no wave names form the implicit last wave [`REST_WAVE`].
/// Waves that name no placed cluster stay in the plan (empty, done at once) so that wave
/// numbers do not shift while clusters come and go.
pub fn plan_waves(
    app: &App,
    clusters: &[ClusterLabels<'_>],
    groups: &BTreeMap<String, ClusterGroup>,
    projects: &BTreeMap<String, crate::resources::Project>,
) -> Plan {
    let project = super::project::project_of(app, projects);
    let placed: BTreeSet<String> = super::project::place_in_project(app, project, clusters, groups)
        .into_iter()
        .map(|p| p.cluster)
        .collect();
    let default_spec = RolloutSpec::default();
    let spec = app.spec.rollout.as_deref().unwrap_or(&default_spec);
    let defaults = |w: Option<&crate::resources::WaveSpec>| {
        let max_unavailable = w
            .and_then(|w| w.max_unavailable)
            .or(spec.max_unavailable)
            .unwrap_or(RolloutSpec::DEFAULT_MAX_UNAVAILABLE);
        let min_healthy_for = w
            .and_then(|w| w.min_healthy_for)
            .or(spec.min_healthy_for)
            .unwrap_or(RolloutSpec::DEFAULT_MIN_HEALTHY_FOR);
        let failure_budget = w
            .and_then(|w| w.failure_budget)
            .or(spec.failure_budget)
            .unwrap_or(RolloutSpec::DEFAULT_FAILURE_BUDGET);
        (max_unavailable, min_healthy_for, failure_budget)
    };
    let mut left = placed.clone();
    let mut waves = Vec::new();
    for (i, w) in spec.waves.iter().enumerate() {
        let selection = w.selection();
        let members: Vec<String> = clusters
            .iter()
            .filter(|c| left.contains(c.name) && selection_matches(&selection, **c, groups))
            .map(|c| c.name.to_owned())
            .collect();
        for m in &members {
            left.remove(m);
        }
        let name = w
            .name
            .clone()
            .or_else(|| w.cluster_group.clone())
            .unwrap_or_else(|| format!("wave-{}", i + 1));
        let (max_unavailable, min_healthy_for, failure_budget) = defaults(Some(w));
        waves.push(Wave {
            max_unavailable,
            min_healthy_for,
            failure_budget,
            ..Wave::new(&name, members)
        });
    }
    if !left.is_empty() || waves.is_empty() {
        let name = if waves.is_empty() {
            ALL_WAVE
        } else {
            REST_WAVE
        };
        let (max_unavailable, min_healthy_for, failure_budget) = defaults(None);
        waves.push(Wave {
            max_unavailable,
            min_healthy_for,
            failure_budget,
            // Without a strategy, like the peers: every Target gets the revision at once, a
            // disconnected cluster too (it finds it waiting when it returns).
            include_disconnected: app.spec.rollout.is_none(),
            ..Wave::new(name, left)
        });
    }
    Plan {
        waves,
        progress_deadline: spec
            .progress_deadline
            .unwrap_or(RolloutSpec::DEFAULT_PROGRESS_DEADLINE),
        on_failure: spec.on_failure.unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------------------------
// State

/// One App's rollout, as the hub persists it. Everything [`decide`] needs to carry on exactly
/// where it was after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutState {
    /// 1 for an App's first rollout, +1 for every later one (a rollback is a rollout too).
    pub number: u64,
    pub kind: RolloutKind,
    /// The revision this rollout moves the App's Targets to. Shared with every cluster the
    /// rollout gives it ([`RolloutState::assigned`]): a rollout over 10,000 clusters copied it
    /// (a commit, a ref, a trace context) for each, and each decision copied them all again.
    pub revision: Arc<AppRevision>,
    /// The last revision that completed a rollout before this one: what `rollback` (and
    /// `onFailure: rollback`) returns to, and what clusters of waves not yet reached run when
    /// they join. `None` while the App has never completed a rollout.
    pub stable: Option<Arc<AppRevision>>,
    /// A commit rolled back from: Git still pointing at it does not start a rollout again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
    pub phase: Phase,
    /// Index of the current wave in the plan.
    pub wave: usize,
    /// The revision the rollout gives each cluster; clusters absent run nothing of the App.
    /// Stored grouped by revision (see `assigned`).
    #[serde(with = "assigned")]
    pub assigned: BTreeMap<String, Arc<AppRevision>>,
    /// Failed Targets a person accepted with `resume`: they no longer count against the budget.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub tolerated: BTreeSet<String>,
    /// The current wave skips its `minHealthyFor` wait.
    #[serde(default)]
    pub promoted: bool,
    pub started_at: i64,
    pub wave_started_at: i64,
    /// The last time the current wave progressed (a Target updated or turning healthy, a wave
    /// starting, a resume); the progress deadline counts from here.
    pub last_progress_at: i64,
    /// The most Targets of the current wave seen healthy at the revision so far.
    #[serde(default)]
    pub best_healthy: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    /// `gitfleet rollout start --override-freeze`: freezes and sync windows do not hold this
    /// rollout (dependencies still do). A newer rollout starts without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_holds: Option<HoldOverride>,
    /// What held the rollout when it was last decided, as announced in its events: a change of
    /// it is an event ("held: ...", "released"), the same holds again are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// Who lifted a rollout's freezes and windows, and why: kept with the rollout and in the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldOverride {
    pub by: String,
    pub reason: String,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum RolloutKind {
    /// Git moved: a new revision, wave by wave.
    Update,
    /// Back to an earlier revision, every Target at once.
    Rollback {
        /// Started by `onFailure: rollback` rather than a person.
        automatic: bool,
        /// The revision rolled back from.
        from: AppRevision,
        /// Who or what asked for it, for history.
        by: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum Phase {
    Progressing,
    Paused {
        cause: PauseCause,
        at: i64,
        /// Why, as it was said when the rollout paused.
        message: String,
    },
    Complete,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum PauseCause {
    /// `gitfleet rollout pause`. Survives a newer commit: the new rollout starts paused.
    Manual { by: String },
    /// More Targets of the wave failed than its failure budget allows.
    Failures { clusters: Vec<String> },
    /// The wave went longer than `progressDeadline` without progress.
    Deadline { waiting: Vec<String> },
}

/// What a person or Git asks of a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// The App's ref resolved to a new revision.
    NewRevision(AppRevision),
    Pause {
        by: String,
    },
    Resume {
        by: String,
    },
    /// Skip the `minHealthyFor` wait of the current wave.
    Promote {
        by: String,
    },
    /// Roll back to `to`, or to the stable revision.
    Rollback {
        to: Option<AppRevision>,
        by: String,
    },
    /// Go on although freezes or sync windows hold the rollout (an emergency fix).
    OverrideHolds {
        by: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("rollout #{number} to {revision} is complete: there is nothing to {verb}")]
    NotInProgress {
        number: u64,
        revision: String,
        verb: &'static str,
    },
    #[error("no earlier revision has completed a rollout: name one with `rollback --to REVISION`")]
    NothingToRollBackTo,
    #[error("already at {revision}: there is nothing to roll back")]
    AlreadyAt { revision: String },
}

/// Something that happened to a rollout, for the App's history (`gitfleet events`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutEvent {
    pub at: i64,
    /// The rollout's number.
    pub rollout: u64,
    pub kind: EventKind,
    pub message: String,
    /// The commit the rollout rolls out (for a rollback, the commit it returns to).
    pub commit: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventKind {
    Started,
    Superseded,
    WaveStarted,
    TargetsUpdated,
    WaveCompleted,
    Failed,
    Paused,
    Resumed,
    Promoted,
    RollbackStarted,
    Completed,
    /// Freezes, windows or dependencies started holding Targets (or held others).
    Held,
    /// Nothing holds the rollout any more.
    Released,
    /// A person lifted the freezes and windows of this rollout.
    Overridden,
}

/// The state change a command makes, with its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub state: RolloutState,
    pub events: Vec<RolloutEvent>,
}

impl RolloutState {
    /// The first rollout of a new App: nothing runs anywhere yet, so clusters get the revision
    /// only when their wave is reached.
    pub fn first(revision: AppRevision, now: i64) -> Self {
        Self::starting(
            1,
            RolloutKind::Update,
            Arc::new(revision),
            BTreeMap::new(),
            now,
        )
    }

    /// Rollout `number` just started at `now`, with the revisions clusters were `assigned` so
    /// far: in its first wave, progressing, nothing tolerated, promoted or healthy yet.
    fn starting(
        number: u64,
        kind: RolloutKind,
        revision: Arc<AppRevision>,
        assigned: BTreeMap<String, Arc<AppRevision>>,
        now: i64,
    ) -> Self {
        Self {
            number,
            kind,
            revision,
            stable: None,
            rejected: None,
            phase: Phase::Progressing,
            wave: 0,
            assigned,
            tolerated: BTreeSet::new(),
            promoted: false,
            started_at: now,
            wave_started_at: now,
            last_progress_at: now,
            best_healthy: 0,
            finished_at: None,
            override_holds: None,
            held: None,
        }
    }

    /// A completed rollout of `revision` on `clusters`: for an App that already runs there (it
    /// was deployed before the hub kept rollout state).
    pub fn adopt(
        revision: AppRevision,
        clusters: impl IntoIterator<Item = String>,
        now: i64,
    ) -> Self {
        let first = Self::first(revision, now);
        let assigned = clusters
            .into_iter()
            .map(|c| (c, Arc::clone(&first.revision)))
            .collect();
        Self {
            phase: Phase::Complete,
            assigned,
            finished_at: Some(now),
            ..first
        }
    }

    pub fn is_paused(&self) -> bool {
        matches!(self.phase, Phase::Paused { .. })
    }

    pub fn is_rollback(&self) -> bool {
        matches!(self.kind, RolloutKind::Rollback { .. })
    }

    /// Applies a command. `NewRevision` of the current revision, or of a revision rolled back
    /// from, changes nothing (Git is polled again and again).
    pub fn command(&self, command: Command, now: i64) -> Result<Outcome, CommandError> {
        let unchanged = || Outcome {
            state: self.clone(),
            events: Vec::new(),
        };
        let complete = matches!(self.phase, Phase::Complete);
        let not_in_progress = |verb| CommandError::NotInProgress {
            number: self.number,
            revision: short(&self.revision.commit).to_owned(),
            verb,
        };
        match command {
            Command::NewRevision(revision) => {
                // A new chart at the same commit is a new revision too.
                if (revision.commit == self.revision.commit
                    && revision.chart == self.revision.chart)
                    || self.rejected.as_deref() == Some(revision.commit.as_str())
                {
                    return Ok(unchanged());
                }
                Ok(self.supersede(revision, now))
            }
            Command::Pause { by } => match &self.phase {
                Phase::Complete => Err(not_in_progress("pause")),
                Phase::Paused {
                    cause: PauseCause::Manual { .. },
                    ..
                } => Ok(unchanged()),
                _ => {
                    let mut state = self.clone();
                    let message = format!("paused by {by}");
                    state.phase = Phase::Paused {
                        cause: PauseCause::Manual { by },
                        at: now,
                        message: message.clone(),
                    };
                    Ok(Outcome {
                        events: vec![state.event(now, EventKind::Paused, message)],
                        state,
                    })
                }
            },
            Command::Resume { by } => match &self.phase {
                Phase::Complete => Err(not_in_progress("resume")),
                Phase::Progressing => Ok(unchanged()),
                Phase::Paused { cause, .. } => {
                    let mut state = self.clone();
                    let mut message = format!("resumed by {by}");
                    if let PauseCause::Failures { clusters } = cause {
                        // Resuming after failures means going on with them as they are;
                        // otherwise the next decision would pause again at once.
                        state.tolerated.extend(clusters.iter().cloned());
                        let _ = write!(message, ", accepting the failure of {}", list(clusters));
                    }
                    state.phase = Phase::Progressing;
                    state.last_progress_at = now;
                    Ok(Outcome {
                        events: vec![state.event(now, EventKind::Resumed, message)],
                        state,
                    })
                }
            },
            Command::Promote { by } => {
                if complete {
                    return Err(not_in_progress("promote"));
                }
                if self.promoted {
                    return Ok(unchanged());
                }
                let mut state = self.clone();
                state.promoted = true;
                let message = format!(
                    "wave {} promoted by {by}: it skips its minHealthyFor wait",
                    self.wave + 1
                );
                Ok(Outcome {
                    events: vec![state.event(now, EventKind::Promoted, message)],
                    state,
                })
            }
            Command::Rollback { to, by } => {
                let to = to
                    .map(Arc::new)
                    .or_else(|| self.stable.clone())
                    .ok_or(CommandError::NothingToRollBackTo)?;
                if complete && to.commit == self.revision.commit {
                    return Err(CommandError::AlreadyAt {
                        revision: short(&to.commit).to_owned(),
                    });
                }
                let reason = format!("rollback to {} asked by {by}", short(&to.commit));
                Ok(self.begin_rollback(to, false, by, reason, now))
            }
            Command::OverrideHolds { by, reason } => {
                if complete {
                    return Err(not_in_progress("start"));
                }
                let mut state = self.clone();
                let message = format!(
                    "freezes and sync windows overridden by {by} for rollout #{} to {}: {reason}",
                    self.number,
                    short(&self.revision.commit)
                );
                state.override_holds = Some(HoldOverride {
                    by,
                    reason,
                    at: now,
                });
                Ok(Outcome {
                    events: vec![state.event(now, EventKind::Overridden, message)],
                    state,
                })
            }
        }
    }

    /// A newer revision replaces this rollout: it starts again from wave 0, every Target keeps
    /// what it has until its wave is reached, and a manual pause carries over.
    fn supersede(&self, revision: AppRevision, now: i64) -> Outcome {
        let stable = match self.phase {
            Phase::Complete => Some(self.revision.clone()),
            _ => self.stable.clone(),
        };
        let mut events = Vec::new();
        if !matches!(self.phase, Phase::Complete) {
            events.push(self.event(
                now,
                EventKind::Superseded,
                format!(
                    "superseded by {} at wave {}",
                    short(&revision.commit),
                    self.wave + 1
                ),
            ));
        }
        let phase = match &self.phase {
            Phase::Paused {
                cause: cause @ PauseCause::Manual { by },
                ..
            } => Phase::Paused {
                cause: cause.clone(),
                at: now,
                message: format!(
                    "paused by {by} (before {} arrived)",
                    short(&revision.commit)
                ),
            },
            _ => Phase::Progressing,
        };
        let state = RolloutState {
            stable,
            phase,
            ..Self::starting(
                self.number + 1,
                RolloutKind::Update,
                Arc::new(revision),
                self.assigned.clone(),
                now,
            )
        };
        let from = match &state.stable {
            Some(s) => format!(" (stable: {})", short(&s.commit)),
            None => String::new(),
        };
        events.push(state.event(
            now,
            EventKind::Started,
            format!(
                "rollout #{} to {} started{from}",
                state.number,
                short(&state.revision.commit)
            ),
        ));
        Outcome { state, events }
    }

    fn begin_rollback(
        &self,
        to: Arc<AppRevision>,
        automatic: bool,
        by: String,
        reason: String,
        now: i64,
    ) -> Outcome {
        // Git keeps pointing at the revision rolled back from; remember not to roll it out
        // again. A rollback of a rollback keeps the commit Git points at.
        let rejected = match self.kind {
            RolloutKind::Update if self.revision.commit != to.commit => {
                Some(self.revision.commit.clone())
            }
            _ => self.rejected.clone(),
        };
        let kind = RolloutKind::Rollback {
            automatic,
            from: AppRevision::clone(&self.revision),
            by,
        };
        let state = RolloutState {
            stable: Some(to.clone()),
            rejected,
            ..Self::starting(self.number + 1, kind, to, self.assigned.clone(), now)
        };
        let message = format!(
            "rollout #{} rolls back from {} to {}: {reason}",
            state.number,
            short(&self.revision.commit),
            short(&state.revision.commit)
        );
        let events = vec![state.event(now, EventKind::RollbackStarted, message)];
        Outcome { state, events }
    }

    fn event(&self, at: i64, kind: EventKind, message: String) -> RolloutEvent {
        RolloutEvent {
            at,
            rollout: self.number,
            kind,
            message,
            commit: self.revision.commit.clone(),
        }
    }
}

/// The revision each cluster should run, as the rollout assigns it: the per-Target input of
/// [`super::compute_fleet_with_rollouts`].
pub fn target_revisions(state: &RolloutState) -> BTreeMap<String, Arc<AppRevision>> {
    state.assigned.clone()
}

// ---------------------------------------------------------------------------------------------
// Observations

/// What the hub knows of one Target right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// The commit in the cluster's desired state as last computed (what the spoke was told).
    pub desired_revision: Option<String>,
    /// The commit of the spoke's last report.
    pub applied_revision: Option<String>,
    /// The chart digest of the spoke's last report (a Target of a chart from a repository).
    pub applied_chart: Option<String>,
    pub sync: SyncState,
    pub health: HealthState,
    /// The last report's message, for reasons.
    pub message: String,
    /// Since when the Target has been healthy without a break at `applied_revision`
    /// (see [`next_healthy_since`]).
    pub healthy_since: Option<i64>,
    pub connected: bool,
    /// Last time the cluster was heard from, for "disconnected for 45s".
    pub last_contact: Option<i64>,
}

impl Observation {
    /// From what the hub keeps: the commit in the cluster's desired state for the App, the
    /// spoke's last report on it, the Target's healthy mark (see [`next_healthy_since`]), and the
    /// cluster's connection.
    pub fn from_report(
        desired_revision: Option<&str>,
        report: Option<&ReportSummary>,
        healthy: Option<&HealthyMark>,
        connected: bool,
        last_contact: Option<i64>,
    ) -> Self {
        let mut o = Observation {
            desired_revision: desired_revision.map(str::to_owned),
            connected,
            last_contact,
            ..Default::default()
        };
        if let Some(r) = report {
            o.applied_revision = (!r.revision.is_empty()).then(|| r.revision.clone());
            o.applied_chart = (!r.chart_digest.is_empty()).then(|| r.chart_digest.clone());
            o.sync = r.sync;
            o.health = r.health;
            o.message = r.message.clone();
            o.healthy_since = healthy
                .filter(|m| {
                    m.revision == mark_revision(&r.revision, &r.chart_digest)
                        && counts_as_healthy(r.health)
                })
                .map(|m| m.since);
        }
        o
    }
}

/// Healthy, or deliberately suspended (a suspended CronJob, a paused Deployment): a steady state
/// a person chose, which must not hold a rollout forever. Missing and Progressing are not.
pub fn counts_as_healthy(health: HealthState) -> bool {
    matches!(health, HealthState::Healthy | HealthState::Suspended)
}

/// When a Target turned healthy at a revision, carried from report to report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthyMark {
    pub revision: String,
    pub since: i64,
}

/// What a healthy mark is kept for: the commit, and the chart's digest for a Target of a chart
/// from a repository (a new chart at the same commit starts the soak again).
pub fn mark_revision(revision: &str, chart_digest: &str) -> String {
    if chart_digest.is_empty() {
        revision.to_owned()
    } else {
        format!("{revision}@{chart_digest}")
    }
}

/// The healthy mark after a report: kept while the Target stays healthy at the same revision,
/// set to `now` when it turns healthy, dropped when it is anything else.
pub fn next_healthy_since(
    previous: Option<&HealthyMark>,
    revision: &str,
    sync: SyncState,
    health: HealthState,
    now: i64,
) -> Option<HealthyMark> {
    if !(sync == SyncState::Synced && counts_as_healthy(health)) {
        return None;
    }
    match previous {
        Some(m) if m.revision == revision => Some(m.clone()),
        _ => Some(HealthyMark {
            revision: revision.to_owned(),
            since: now,
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Decision

/// What [`decide`] concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub state: RolloutState,
    /// Targets whose revision changes now, by cluster name.
    pub changes: Vec<Change>,
    pub events: Vec<RolloutEvent>,
    pub status: Status,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub cluster: String,
    pub from: Option<Arc<AppRevision>>,
    pub to: Arc<AppRevision>,
}

/// The rollout as `gitfleet rollout status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub summary: Summary,
    /// One line a person can act on: "wave 2/3 eu: 3/8 updated, 2 healthy, maxUnavailable 2
    /// reached".
    pub reason: String,
    pub waves: Vec<WaveStatus>,
    /// When deciding again could change something although no input changed (a `minHealthyFor`
    /// wait ending, a progress deadline passing). The engine wakes up then.
    pub next_check_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Summary {
    Progressing,
    Paused,
    RollingBack,
    Complete,
    RolledBack,
    /// Progressing, but every Target it would update next is held (a freeze, a window, a
    /// dependency) and none is updating.
    Held,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaveStatus {
    pub name: String,
    pub progress: WaveProgress,
    pub total: usize,
    /// Targets given the rollout's revision.
    pub updated: usize,
    pub healthy: usize,
    pub failed: usize,
    pub max_unavailable: usize,
    pub targets: Vec<TargetStatus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WaveProgress {
    Done,
    Current,
    Waiting,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetStatus {
    pub cluster: String,
    pub state: TargetState,
    /// Why, for anything not simply done ("Degraded: deployment web: CrashLoopBackOff").
    pub detail: String,
}

/// A Target as the rollout sees it, against the rollout's revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TargetState {
    /// Not given the revision yet.
    Pending,
    /// Given the revision, not yet healthy at it.
    Updating,
    /// Healthy at the revision (perhaps not yet for `minHealthyFor`).
    Healthy,
    /// Failed at the revision (sync failed, or degraded).
    Failed,
    /// Failed, and a person accepted it with `resume`.
    Tolerated,
    /// The cluster is not connected: its state is unknown. Never counted as failed.
    Disconnected,
    /// Not given the revision: a freeze, a sync window or a dependency holds it (the detail
    /// says which, and until when).
    Held,
}

struct Classified<'a> {
    cluster: &'a str,
    state: TargetState,
    holds: bool,
    /// Healthy for long enough (or promoted).
    soaked: bool,
    /// When the `minHealthyFor` wait ends, for a healthy Target still waiting.
    soaked_at: Option<i64>,
    /// What [`Classified::detail`] words, only when someone reads it (a decision classifies
    /// every Target of a wave, often 10,000, and words none of them).
    obs: &'a Observation,
    /// What holds the Target, for a Target not given the revision.
    hold: Option<&'a Hold>,
    applied: bool,
    /// For a healthy Target: since when, and how long it must stay so.
    healthy_since: i64,
    min_healthy_for: i64,
    now: i64,
}

impl Classified<'_> {
    /// Why the Target is in its state, for a person; empty when simply done or pending.
    fn detail(&self) -> String {
        let o = self.obs;
        match self.state {
            TargetState::Disconnected => match o.last_contact {
                Some(t) => format!("disconnected for {}", human_secs(self.now - t)),
                None => "never connected".to_owned(),
            },
            TargetState::Pending => String::new(),
            TargetState::Held => self.hold.map(|h| h.reason.clone()).unwrap_or_default(),
            TargetState::Tolerated => "failure accepted on resume".into(),
            TargetState::Failed => {
                let what = if o.sync == SyncState::Failed {
                    "sync failed".to_owned()
                } else {
                    format!("{:?}", o.health)
                };
                join_detail(&what, &o.message)
            }
            TargetState::Healthy if self.soaked => String::new(),
            TargetState::Healthy => format!(
                "healthy for {} of {}",
                human_secs(self.now - self.healthy_since),
                human_secs(self.min_healthy_for)
            ),
            TargetState::Updating if !self.applied => match &o.applied_revision {
                Some(r) => format!("at {}, updating", short(r)),
                None => "updating".into(),
            },
            TargetState::Updating => {
                join_detail(&format!("{:?}, {:?}", o.sync, o.health), &o.message)
            }
        }
    }
}

/// What a cluster without an observation counts as: never connected.
static NEVER_SEEN: Observation = Observation {
    desired_revision: None,
    applied_revision: None,
    applied_chart: None,
    sync: SyncState::Unknown,
    health: HealthState::Unknown,
    message: String::new(),
    healthy_since: None,
    connected: false,
    last_contact: None,
};

fn classify<'a>(
    cluster: &'a str,
    wave: &Wave,
    state: &RolloutState,
    obs: Option<&'a Observation>,
    holds: &'a Holds,
    now: i64,
) -> Classified<'a> {
    let to = &state.revision.commit;
    let o = obs.unwrap_or(&NEVER_SEEN);
    // Reports name commits only: a cluster assigned the commit with another chart has not been
    // given this revision, whatever it reports.
    let assigned = state.assigned.get(cluster);
    let given = assigned.is_some_and(|r| &r.commit == to && r.chart == state.revision.chart)
        || (o.desired_revision.as_ref() == Some(to)
            && assigned.is_none_or(|r| r.chart == state.revision.chart));
    // A report at the commit counts only with the revision's chart: a new chart at the same
    // commit is not applied before the spoke says it rendered that chart.
    let applied = o.applied_revision.as_ref() == Some(to)
        && o.applied_chart.as_deref() == state.revision.chart.as_ref().map(|c| c.digest.as_str());
    let min_healthy_for = ceil_secs(wave.min_healthy_for);
    let mut soaked = false;
    let mut soaked_at = None;
    let mut healthy_since = now;
    let hold = if given {
        None
    } else {
        holds.first(cluster, state.override_holds.is_some())
    };
    let target_state = if hold.is_some() {
        TargetState::Held
    } else if !o.connected {
        TargetState::Disconnected
    } else if !given {
        TargetState::Pending
    } else if state.tolerated.contains(cluster) {
        TargetState::Tolerated
    } else if applied
        && (o.sync == SyncState::Failed
            // A Target still syncing the revision is not judged on the health it had before.
            || (o.health == HealthState::Degraded && o.sync != SyncState::Syncing))
    {
        TargetState::Failed
    } else if applied && o.sync == SyncState::Synced && counts_as_healthy(o.health) {
        healthy_since = o.healthy_since.unwrap_or(now).min(now);
        let ends = healthy_since.saturating_add(min_healthy_for);
        soaked = state.promoted || ends <= now;
        if !soaked {
            soaked_at = Some(ends);
        }
        TargetState::Healthy
    } else {
        TargetState::Updating
    };
    Classified {
        cluster,
        state: target_state,
        holds: given,
        soaked,
        soaked_at,
        obs: o,
        hold,
        applied,
        healthy_since,
        min_healthy_for,
        now,
    }
}

fn join_detail(what: &str, message: &str) -> String {
    if message.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {message}")
    }
}

/// Counts of one wave's classified Targets.
struct WaveView<'a> {
    targets: Vec<Classified<'a>>,
}

impl WaveView<'_> {
    fn count(&self, s: TargetState) -> usize {
        self.targets.iter().filter(|t| t.state == s).count()
    }
    fn holding(&self) -> usize {
        self.targets.iter().filter(|t| t.holds).count()
    }
    /// Targets made unavailable by the rollout: given the revision and not (yet) healthy at it.
    fn unavailable(&self) -> usize {
        self.targets
            .iter()
            .filter(|t| {
                t.holds && !matches!(t.state, TargetState::Healthy | TargetState::Tolerated)
            })
            .count()
    }
    fn failed(&self) -> Vec<&str> {
        self.targets
            .iter()
            .filter(|t| t.state == TargetState::Failed)
            .map(|t| t.cluster)
            .collect()
    }
    /// Every Target healthy long enough, failed (within the budget: checked by the caller), or
    /// accepted as failed.
    fn done(&self) -> bool {
        self.targets.iter().all(|t| match t.state {
            TargetState::Healthy => t.soaked,
            TargetState::Failed | TargetState::Tolerated => true,
            TargetState::Pending
            | TargetState::Updating
            | TargetState::Disconnected
            | TargetState::Held => false,
        })
    }
    /// Whether a freeze, a window or a dependency holds a Target of the wave.
    fn any_held(&self) -> bool {
        self.targets.iter().any(|t| t.state == TargetState::Held)
    }
    /// Waiting only for `minHealthyFor` to pass: the progress deadline does not apply.
    fn only_soaking(&self) -> bool {
        self.targets.iter().all(|t| {
            matches!(
                t.state,
                TargetState::Healthy | TargetState::Failed | TargetState::Tolerated
            )
        })
    }
}

fn view<'a>(
    wave: &'a Wave,
    state: &RolloutState,
    obs: &'a BTreeMap<String, Observation>,
    holds: &'a Holds,
    now: i64,
) -> WaveView<'a> {
    WaveView {
        targets: wave
            .clusters
            .iter()
            .map(|c| classify(c, wave, state, obs.get(c), holds, now))
            .collect(),
    }
}

/// The next step of a rollout. `plan` comes from [`plan_waves`] (for an App without a strategy,
/// one wave, all at once); `observations` has an entry per placed cluster (a missing one counts
/// as a cluster never connected).
pub fn decide(
    state: &RolloutState,
    plan: &Plan,
    observations: &BTreeMap<String, Observation>,
    now: i64,
) -> Decision {
    decide_held(state, plan, observations, &Holds::none(), now)
}

/// [`decide`], with what holds Targets from being given the revision (see [`super::hold`]): a
/// held Target stays at what it runs, is shown with its hold, and does not count against the
/// progress deadline; once its hold ends it is given the revision. A rollback is never held
/// (it returns to a revision that ran before), and `override_holds` lifts freezes and windows.
pub fn decide_held(
    state: &RolloutState,
    plan: &Plan,
    observations: &BTreeMap<String, Observation>,
    holds: &Holds,
    now: i64,
) -> Decision {
    decide_with(state, plan, observations, holds, now, StatusDetail::Targets)
}

/// How much of a [`Status`] a decision words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusDetail {
    /// Every Target of every wave, with why it is where it is: a rollout's view.
    Targets,
    /// Only the held Targets in [`WaveStatus::targets`] (what the held summary names); the
    /// counts, the summary, the reason and the next check are the same. What the rollout
    /// driver steps with: it reads nothing else of the status, and wording every Target of a
    /// wave of 10,000 (a name and a detail each) cost a quarter of a decision.
    Summary,
}

/// [`decide_held`], its status worded as `detail` says.
pub fn decide_with(
    state: &RolloutState,
    plan: &Plan,
    observations: &BTreeMap<String, Observation>,
    holds: &Holds,
    now: i64,
    detail: StatusDetail,
) -> Decision {
    let none = Holds::none();
    let holds = if state.is_rollback() { &none } else { holds };
    let rollback_plan;
    let plan = if state.is_rollback() {
        rollback_plan = plan.for_rollback();
        &rollback_plan
    } else {
        plan
    };
    let mut st = state.clone();
    let mut changes = Vec::new();
    let mut events = Vec::new();

    // Clusters the App left run nothing of it any more.
    // A set by hash: sorting 10,000 names on every decision cost more than the lookups.
    let placed: HashSet<&str> = plan.clusters().collect();
    st.assigned.retain(|c, _| placed.contains(c.as_str()));
    st.tolerated.retain(|c| placed.contains(c.as_str()));
    // The strategy may have lost waves meanwhile: carry on in the last one rather than finish
    // without checking anything.
    if !matches!(st.phase, Phase::Complete) && st.wave >= plan.waves.len() {
        st.wave = plan.waves.len().saturating_sub(1);
    }

    // Every pass finishes a wave, updates at least one Target, or stops: bounded.
    let passes = plan.waves.len() * 2 + placed.len() + 4;
    for _ in 0..passes {
        assign_outside_current_wave(&mut st, plan, holds, &mut changes);
        if !matches!(st.phase, Phase::Progressing) {
            break;
        }
        let Some(wave) = plan.waves.get(st.wave) else {
            st.phase = Phase::Complete;
            st.finished_at = Some(now);
            let message = if st.is_rollback() {
                format!(
                    "rolled back to {} on {} clusters",
                    short(&st.revision.commit),
                    placed.len()
                )
            } else {
                format!(
                    "rollout #{} to {} complete on {} clusters",
                    st.number,
                    short(&st.revision.commit),
                    placed.len()
                )
            };
            events.push(st.event(now, EventKind::Completed, message));
            continue;
        };
        // A wave reached so far can fail after it was done (a canary degrading while the next
        // wave runs): every reached wave is held to its failure budget.
        // The current wave's view is the last one classified here, and used below.
        let mut current = None;
        let mut tripped = None;
        for (i, w) in plan.waves.iter().enumerate().take(st.wave + 1) {
            let v = view(w, &st, observations, holds, now);
            let failed = v.count(TargetState::Failed);
            let budget = w.failure_budget_count();
            if failed > budget {
                let message = format!(
                    "{}: {failed} of {} failed (failure budget {budget}): {}",
                    wave_label(plan, i),
                    w.clusters.len(),
                    target_details(&v, TargetState::Failed)
                );
                let failed: Vec<String> = v.failed().into_iter().map(str::to_owned).collect();
                tripped = Some((failed, message));
                break;
            }
            current = Some(v);
        }
        if let Some((failed, failure)) = tripped {
            events.push(st.event(now, EventKind::Failed, failure.clone()));
            match (plan.on_failure, &st.stable) {
                (OnFailure::Rollback, Some(stable)) => {
                    let outcome = st.begin_rollback(
                        stable.clone(),
                        true,
                        "onFailure: rollback".into(),
                        failure,
                        now,
                    );
                    events.extend(outcome.events);
                    // The rollback is decided at once: its Targets go back in this same step.
                    let next = decide_with(&outcome.state, plan, observations, holds, now, detail);
                    changes.extend(next.changes);
                    events.extend(next.events);
                    return Decision {
                        state: next.state,
                        changes: merge_changes(changes),
                        events,
                        status: next.status,
                    };
                }
                (on_failure, _) => {
                    let mut message = format!("paused: {failure}");
                    if on_failure == OnFailure::Rollback {
                        message.push_str(
                            " (onFailure is rollback, but no earlier revision has completed a rollout)",
                        );
                    }
                    st.phase = Phase::Paused {
                        cause: PauseCause::Failures { clusters: failed },
                        at: now,
                        message: message.clone(),
                    };
                    events.push(st.event(now, EventKind::Paused, message));
                }
            }
            break;
        }
        let v = current.unwrap_or_else(|| view(wave, &st, observations, holds, now));
        if v.done() {
            events.push(st.event(
                now,
                EventKind::WaveCompleted,
                format!("{} done", wave_label(plan, st.wave)),
            ));
            st.wave += 1;
            st.wave_started_at = now;
            st.last_progress_at = now;
            st.best_healthy = 0;
            st.promoted = false;
            if st.wave < plan.waves.len() {
                events.push(st.event(
                    now,
                    EventKind::WaveStarted,
                    format!("{} started", wave_label(plan, st.wave)),
                ));
            }
            continue;
        }
        // Update as many pending Targets as the wave's unavailability limit allows.
        let slots = wave.max_unavailable_count().saturating_sub(v.unavailable());
        let batch: Vec<String> = v
            .targets
            .iter()
            .filter(|t| match t.state {
                TargetState::Pending => true,
                TargetState::Disconnected => wave.include_disconnected && !t.holds,
                _ => false,
            })
            .take(slots)
            .map(|t| t.cluster.to_owned())
            .collect();
        if !batch.is_empty() {
            for c in &batch {
                assign(&mut st, c, &mut changes);
            }
            st.last_progress_at = now;
            events.push(st.event(
                now,
                EventKind::TargetsUpdated,
                format!(
                    "{}: {} given {}",
                    wave_label(plan, st.wave),
                    list(&batch),
                    short(&st.revision.commit)
                ),
            ));
            // A Target given a revision it already runs may be healthy at once: look again.
            continue;
        }
        let healthy = v.count(TargetState::Healthy);
        if healthy > st.best_healthy {
            st.best_healthy = healthy;
            st.last_progress_at = now;
        }
        let deadline = ceil_secs(plan.progress_deadline);
        // A held Target is waiting for a person's rule or another App, not failing to progress:
        // the deadline counts again from the moment it is given the revision.
        if !v.only_soaking() && !v.any_held() && now - st.last_progress_at > deadline {
            let v = view(wave, &st, observations, holds, now);
            let waiting: Vec<String> = v
                .targets
                .iter()
                .filter(|t| {
                    matches!(
                        t.state,
                        TargetState::Pending | TargetState::Updating | TargetState::Disconnected
                    )
                })
                .map(|t| t.cluster.to_owned())
                .collect();
            let message = format!(
                "paused: progress deadline {} passed in {} (no progress for {}): waiting for {}",
                human_secs(deadline),
                wave_label(plan, st.wave),
                human_secs(now - st.last_progress_at),
                waiting_details(&v)
            );
            st.phase = Phase::Paused {
                cause: PauseCause::Deadline { waiting },
                at: now,
                message: message.clone(),
            };
            events.push(st.event(now, EventKind::Paused, message));
        }
        break;
    }
    let mut status = status(&st, plan, observations, holds, now, detail);
    let held = held_summary(&st, &status);
    if held != st.held {
        match &held {
            Some(h) => events.push(st.event(now, EventKind::Held, format!("held: {h}"))),
            None => events.push(st.event(
                now,
                EventKind::Released,
                "released: nothing holds the rollout any more".into(),
            )),
        }
        st.held = held;
    }
    if !st.is_rollback() {
        let ends = holds.next_end(st.override_holds.is_some());
        status.next_check_at = [status.next_check_at, ends.map(|t| t.max(now) + 1)]
            .into_iter()
            .flatten()
            .min();
    }
    Decision {
        state: st,
        changes: merge_changes(changes),
        events,
        status,
    }
}

/// Targets outside the current wave: clusters of waves already passed (they joined late, or the
/// rollout is complete) get the revision; clusters of waves not yet reached that run nothing
/// get the stable revision, if there is one. A paused rollout gives nobody the new revision.
fn assign_outside_current_wave(
    st: &mut RolloutState,
    plan: &Plan,
    holds: &Holds,
    changes: &mut Vec<Change>,
) {
    let complete = matches!(st.phase, Phase::Complete);
    let progressing = matches!(st.phase, Phase::Progressing);
    let overridden = st.override_holds.is_some();
    for (i, wave) in plan.waves.iter().enumerate() {
        for c in &wave.clusters {
            // A held cluster keeps what it runs, even nothing (it joined during a freeze).
            if !holds.is_empty() && holds.first(c, overridden).is_some() {
                continue;
            }
            let at_revision = st.assigned.get(c).is_some_and(|r| *r == st.revision);
            if complete || (progressing && i < st.wave) {
                if !at_revision {
                    assign(st, c, changes);
                }
            } else if !st.assigned.contains_key(c)
                && (i > st.wave || !progressing)
                && let Some(stable) = st.stable.clone()
            {
                changes.push(Change {
                    cluster: c.clone(),
                    from: None,
                    to: stable.clone(),
                });
                st.assigned.insert(c.clone(), stable);
            }
        }
    }
}

/// One change per cluster, from its first `from` to its last `to`; none where they are equal.
/// Linear in the changes: a first rollout assigns every cluster of its wave at once.
fn merge_changes(changes: Vec<Change>) -> Vec<Change> {
    let mut merged: Vec<Change> = Vec::with_capacity(changes.len());
    let mut index: HashMap<String, usize> = HashMap::with_capacity(changes.len());
    for c in changes {
        match index.get(&c.cluster) {
            Some(&i) => merged[i].to = c.to,
            None => {
                index.insert(c.cluster.clone(), merged.len());
                merged.push(c);
            }
        }
    }
    merged.retain(|c| c.from.as_ref() != Some(&c.to));
    merged
}

fn assign(st: &mut RolloutState, cluster: &str, changes: &mut Vec<Change>) {
    // A cluster that ran another revision keeps its entry (no new name to allocate).
    let to = Arc::clone(&st.revision);
    let from = match st.assigned.get_mut(cluster) {
        Some(held) => Some(std::mem::replace(held, to)),
        None => st.assigned.insert(cluster.to_owned(), to),
    };
    if from.as_ref() != Some(&st.revision) {
        changes.push(Change {
            cluster: cluster.to_owned(),
            from,
            to: st.revision.clone(),
        });
    }
}

fn status(
    st: &RolloutState,
    plan: &Plan,
    observations: &BTreeMap<String, Observation>,
    holds: &Holds,
    now: i64,
    detail: StatusDetail,
) -> Status {
    let complete = matches!(st.phase, Phase::Complete);
    let mut waves = Vec::new();
    let mut next_check_at: Option<i64> = None;
    let mut reason = String::new();
    // A Target of the current wave is being updated.
    let mut in_flight = false;
    for (i, wave) in plan.waves.iter().enumerate() {
        let v = view(wave, st, observations, holds, now);
        let progress = if complete || i < st.wave {
            WaveProgress::Done
        } else if i == st.wave {
            WaveProgress::Current
        } else {
            WaveProgress::Waiting
        };
        if progress == WaveProgress::Current {
            in_flight |= v.targets.iter().any(|t| t.state == TargetState::Updating);
            reason = current_wave_reason(st, plan, &v);
            if matches!(st.phase, Phase::Progressing) {
                let soak = v.targets.iter().filter_map(|t| t.soaked_at).min();
                let deadline = (!v.only_soaking() && !v.any_held())
                    .then(|| st.last_progress_at + ceil_secs(plan.progress_deadline) + 1);
                next_check_at = [soak, deadline].into_iter().flatten().min();
            }
        }
        waves.push(WaveStatus {
            name: wave.name.clone(),
            progress,
            total: wave.clusters.len(),
            updated: v.holding(),
            healthy: v.count(TargetState::Healthy),
            failed: v.count(TargetState::Failed),
            max_unavailable: wave.max_unavailable_count(),
            targets: v
                .targets
                .iter()
                .filter(|t| detail == StatusDetail::Targets || t.state == TargetState::Held)
                .map(|t| TargetStatus {
                    cluster: t.cluster.to_owned(),
                    state: t.state,
                    detail: t.detail(),
                })
                .collect(),
        });
    }
    let (summary, reason) = match (&st.phase, st.is_rollback()) {
        (Phase::Complete, false) => (
            Summary::Complete,
            format!(
                "rollout #{} to {} complete on {} clusters",
                st.number,
                short(&st.revision.commit),
                st.assigned.len()
            ),
        ),
        (Phase::Complete, true) => (
            Summary::RolledBack,
            format!(
                "rolled back to {} on {} clusters{}",
                short(&st.revision.commit),
                st.assigned.len(),
                rollback_origin(st)
            ),
        ),
        (Phase::Paused { message, .. }, _) => (Summary::Paused, format!("{message}; now {reason}")),
        (Phase::Progressing, true) => (
            Summary::RollingBack,
            format!(
                "rolling back to {}{}: {reason}",
                short(&st.revision.commit),
                rollback_origin(st)
            ),
        ),
        (Phase::Progressing, false) => (Summary::Progressing, reason),
    };
    let mut status = Status {
        summary,
        reason,
        waves,
        next_check_at,
    };
    if let Some(held) = held_summary(st, &status) {
        let _ = write!(status.reason, "; held: {held}");
        if status.summary == Summary::Progressing && !in_flight {
            status.summary = Summary::Held;
        }
    }
    status
}

/// What holds the rollout, for a person and its events: the holds of the current wave's Targets
/// (of every wave once complete: clusters that joined while held), each reason once with the
/// clusters it holds. `None` when nothing is held.
fn held_summary(st: &RolloutState, status: &Status) -> Option<String> {
    let complete = matches!(st.phase, Phase::Complete);
    let mut by_reason: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for w in &status.waves {
        if !(complete || w.progress == WaveProgress::Current) {
            continue;
        }
        for t in w.targets.iter().filter(|t| t.state == TargetState::Held) {
            by_reason
                .entry(t.detail.as_str())
                .or_default()
                .push(t.cluster.as_str());
        }
    }
    if by_reason.is_empty() {
        return None;
    }
    let parts: Vec<String> = by_reason
        .iter()
        .map(|(reason, clusters)| {
            let n = clusters.len();
            let noun = if n == 1 { "cluster" } else { "clusters" };
            format!(
                "{reason} ({n} {noun}: {})",
                truncate_list(clusters.iter(), |c| (*c).to_owned())
            )
        })
        .collect();
    Some(parts.join("; "))
}

fn rollback_origin(st: &RolloutState) -> String {
    match &st.kind {
        RolloutKind::Rollback { from, by, .. } => {
            format!(" (from {}, by {by})", short(&from.commit))
        }
        RolloutKind::Update => String::new(),
    }
}

/// "wave 2/3 eu: 3/8 updated, 2 healthy, maxUnavailable 2 reached; waiting for prod-3:
/// disconnected for 45s".
fn current_wave_reason(st: &RolloutState, plan: &Plan, v: &WaveView<'_>) -> String {
    let wave = &plan.waves[st.wave];
    let total = wave.clusters.len();
    let mut s = format!(
        "{}: {}/{total} updated, {} healthy",
        wave_label(plan, st.wave),
        v.holding(),
        v.count(TargetState::Healthy)
    );
    let failed = v.count(TargetState::Failed);
    if failed > 0 {
        let _ = write!(
            s,
            ", {failed} failed (failure budget {})",
            wave.failure_budget_count()
        );
    }
    let tolerated = v.count(TargetState::Tolerated);
    if tolerated > 0 {
        let _ = write!(s, ", {tolerated} failed and accepted");
    }
    let pending = v.count(TargetState::Pending);
    let max = wave.max_unavailable_count();
    if pending > 0 && v.unavailable() >= max {
        let _ = write!(s, ", maxUnavailable {max} reached");
    }
    let progressing = matches!(st.phase, Phase::Progressing);
    if v.done() && st.promoted {
        s.push_str(", promoted");
    } else if progressing
        && v.only_soaking()
        && let Some(t) = v
            .targets
            .iter()
            .filter(|t| t.soaked_at.is_some())
            .max_by_key(|t| t.soaked_at)
    {
        let _ = write!(
            s,
            ", waiting for minHealthyFor {} ({})",
            human_secs(ceil_secs(wave.min_healthy_for)),
            t.detail()
        );
    }
    let waiting = waiting_details(v);
    if !waiting.is_empty() && !v.only_soaking() {
        let _ = write!(s, "; waiting for {waiting}");
    }
    s
}

/// Disconnected Targets first (they need a person), then those still updating.
fn waiting_details(v: &WaveView<'_>) -> String {
    let waiting = [TargetState::Disconnected, TargetState::Updating]
        .into_iter()
        .flat_map(|state| v.targets.iter().filter(move |t| t.state == state));
    truncate_list(waiting, |t| format!("{}: {}", t.cluster, t.detail()))
}

fn target_details(v: &WaveView<'_>, state: TargetState) -> String {
    truncate_list(v.targets.iter().filter(|t| t.state == state), |t| {
        format!("{}: {}", t.cluster, t.detail())
    })
}

/// The first few of `items` as `show` words them, then how many more: only those shown are
/// worded (a wave may have 10,000 Targets).
fn truncate_list<T>(items: impl Iterator<Item = T>, show: impl Fn(T) -> String) -> String {
    const SHOWN: usize = 3;
    let mut items = items;
    let mut s = items
        .by_ref()
        .take(SHOWN)
        .map(show)
        .collect::<Vec<_>>()
        .join(", ");
    let more = items.count();
    if more > 0 {
        let _ = write!(s, " and {more} more");
    }
    s
}

fn wave_label(plan: &Plan, i: usize) -> String {
    let name = plan.waves.get(i).map(|w| w.name.as_str()).unwrap_or("");
    format!("wave {}/{} {name}", i + 1, plan.waves.len())
}

fn list(items: &[String]) -> String {
    truncate_list(items.iter(), String::clone)
}

/// The first 7 characters of a commit id, as people read them.
pub fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

fn ceil_secs(d: Duration) -> i64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// "45s", "4m30s", "2h", "1h5m".
pub fn human_secs(secs: i64) -> String {
    let secs = secs.max(0);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if m > 0 {
        let _ = write!(out, "{m}m");
    }
    if s > 0 || out.is_empty() {
        if h > 0 {
            // Hours-long waits do not need seconds.
            return out;
        }
        let _ = write!(out, "{s}s");
    }
    out
}
