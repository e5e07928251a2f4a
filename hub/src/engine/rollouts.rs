//! The engine's side of rollouts: it keeps each App's [`RolloutState`] in the store, feeds the
//! pure [`crate::fleet::rollout`] module what the Targets report, and turns its decisions into
//! desired state. Also the App controls people use outside the spec (suspend, forced sync) and
//! the event history.
//!
//! Deciding happens inside [`Engine::recompute_scoped`], under the engine's write lock, so a
//! rollout step and the desired state it implies are stored together. Changes to resources,
//! revisions, clusters and controls decide every App's rollout where they happen; the
//! controller task ([`drive_rollouts`]) decides only the Apps queued since its last turn: the
//! App of a report, the Apps in progress when a cluster comes or goes, an App whose rollout
//! asked to be woken (a `minHealthyFor` wait ending, a deadline), plus a resync on a timer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tracing::{Instrument, debug, info, info_span, warn};

use super::{Engine, EngineError, RolloutView};
use crate::fleet::freeze::Freeze;
use crate::fleet::hold::SelfHealHolds;
use crate::fleet::rollout::{
    self, Command, Observation, Phase, Plan, RolloutEvent, RolloutState, StatusDetail, decide_with,
    plan_waves,
};
use crate::fleet::{AppRevision, ClusterLabels, dependencies, history};
use crate::model::{AppControl, EventRecord, ReportSummary, TargetReport};
use crate::pki::now_unix;
use crate::resources::{App, ClusterGroup, Project};

/// The rollout controller's own state, under a lock of its own (a report takes it to find
/// whether its App is rolling out).
#[derive(Default)]
pub(super) struct Controller {
    /// Apps whose rollout is not complete: their reports wake the controller.
    incomplete_rollouts: HashSet<String>,
    /// By App: when its rollout asked to be decided again although nothing changed.
    next_rollout_checks: HashMap<String, i64>,
    /// The Apps whose rollouts the controller decides next (see [`drive_rollouts`]).
    rollout_queue: HashSet<String>,
    /// How often each App's rollout was decided (see [`Engine::rollout_decisions`]).
    rollout_decisions: HashMap<String, u64>,
    /// By App: how many Targets its rollout's decisions read from the store (see
    /// [`Engine::rollout_targets_read`]).
    rollout_targets_read: HashMap<String, u64>,
    /// How often the controller's timer decided rollouts whatever woke them.
    rollout_resyncs: u64,
    /// By App: the Apps that depend on it (`spec.dependsOn`), whose Targets may wait for its
    /// reports. Rebuilt whenever every App is decided (resources changed).
    dependents: HashMap<String, Vec<String>>,
    /// By App: where a freeze or window that holds it suspends its self-heal, as last decided
    /// (an App not decided in a turn keeps its entry, like its rollout). Apps without: none.
    self_heal_holds: BTreeMap<String, SelfHealHolds>,
    /// By App: what its complete rollout was last decided from (see [`Memo`]).
    memos: HashMap<String, Memo>,
    /// What every App's decision shares, as the memos were made with: a change drops them all.
    memo_context: Option<MemoContext>,
    /// By App: its waves over the placed clusters, with the App they were planned for, made
    /// in the same context as the memos (and dropped with them). A rollout in progress is
    /// decided on every batch of reports, and planning it again matched every cluster's
    /// labels against its selectors each time.
    plans: HashMap<String, (App, Arc<Plan>)>,
    /// By App whose rollout is not complete: what its last decision observed of its Targets
    /// (see [`Engine::observe`]).
    observed: HashMap<String, Observed>,
}

/// What `app`'s decision works from: the observations kept for it when it observes (its
/// rollout is not complete, or starts now), none otherwise.
fn observations_of<'a>(
    observed: &'a HashMap<String, Observed>,
    app: &str,
    observing: bool,
    none: &'a BTreeMap<String, Observation>,
) -> &'a BTreeMap<String, Observation> {
    match observed.get(app) {
        Some(kept) if observing => &kept.observations,
        _ => none,
    }
}

/// What a rollout's last decision knew of its App's Targets, kept for the next one, which
/// reads again only the Targets whose report or healthy mark changed since (the store records
/// which: [`crate::store::Store::take_target_changes`]). A rollout over 10,000 clusters read
/// 10,000 reports and built 10,000 observations on every decision, and is decided on every
/// batch of reports.
#[derive(Default)]
pub(super) struct Observed {
    /// The placed clusters these were read for, in the plan's order.
    clusters: Vec<String>,
    observations: BTreeMap<String, Observation>,
}

/// What a complete rollout was last decided from, and what the decision came to. Decided
/// again from equal inputs it decides the same (a decision is a function of them and of the
/// time, and the time matters to it only from `next_check` on), so a recompute that changes
/// nothing costs a comparison per App instead of a pass over the App's clusters. Apps with
/// `dependsOn` have none: what their dependencies report holds them.
struct Memo {
    app: App,
    revision: AppRevision,
    control: Option<AppControl>,
    state: Arc<RolloutState>,
    next_check: Option<i64>,
    self_heal: Option<SelfHealHolds>,
}

impl Memo {
    /// Whether deciding `app` at `now` from these inputs would come to the memo's decision.
    /// A stored state equal to the memo's but not the same allocation (it was stored since)
    /// is taken as the memo's from now on.
    fn holds(
        &mut self,
        app: &App,
        revision: &AppRevision,
        control: Option<&AppControl>,
        stored: &Arc<RolloutState>,
        now: i64,
    ) -> bool {
        let same_state = Arc::ptr_eq(&self.state, stored) || *self.state == **stored;
        let holds = same_state
            && self.next_check.is_none_or(|at| now < at)
            && self.revision == *revision
            && self.control.as_ref() == control
            && self.app == *app;
        if holds {
            self.state = Arc::clone(stored);
        }
        holds
    }
}

/// The inputs every App's decision shares besides its own: where clusters are placed, the
/// groups and Projects, and the freezes holding now.
#[derive(PartialEq)]
struct MemoContext {
    placement_version: u64,
    groups: BTreeMap<String, ClusterGroup>,
    projects: BTreeMap<String, Project>,
    active_freezes: Vec<Freeze>,
}

/// Which Apps' rollouts a recompute decides.
#[derive(Clone, Copy)]
pub(super) enum Scope<'a> {
    /// Every App's: after a change to resources, revisions, clusters or controls, and as a
    /// safety net on a timer.
    All,
    /// These Apps' only: what a report, a connection or a rollout's own timer concerns.
    Apps(&'a HashSet<String>),
    /// Every App's, each decided afresh even where its inputs are those of its last decision
    /// (see [`Memo`]): the timer's safety net.
    AllAfresh,
}

impl Scope<'_> {
    fn contains(&self, app: &str) -> bool {
        match self {
            Scope::All | Scope::AllAfresh => true,
            Scope::Apps(apps) => apps.contains(app),
        }
    }
}

/// The clusters Apps can be placed on, and the version of the store's clusters they were read
/// at (see [`crate::store::Store::clusters_snapshot`]).
#[derive(Clone, Copy)]
pub(super) struct Placement<'a, 'b> {
    pub labels: &'a [ClusterLabels<'b>],
    pub version: u64,
}

/// What [`Engine::decide_rollouts`] hands back to the recompute.
pub(super) struct Decided {
    /// App → its rollout, whose `assigned` is the revision it gives each cluster. Shared with
    /// the store's memory: a decision that changes nothing copies nothing.
    pub rollouts: BTreeMap<String, Arc<RolloutState>>,
    pub controls: BTreeMap<String, AppControl>,
    /// By App: where its self-heal is suspended (see [`crate::fleet::hold::Holds::self_heal`]);
    /// Apps without an entry self-heal as they say.
    pub self_heal: BTreeMap<String, SelfHealHolds>,
}

impl Engine {
    fn controller(&self) -> std::sync::MutexGuard<'_, Controller> {
        self.controller
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decides the next step of the rollout of every App in `scope` and stores what changed,
    /// with its events; the other Apps keep the rollout last decided.
    pub(super) fn decide_rollouts(
        &self,
        apps: &[App],
        revisions: &BTreeMap<String, AppRevision>,
        placement: Placement<'_, '_>,
        groups: &BTreeMap<String, ClusterGroup>,
        projects: &BTreeMap<String, Project>,
        scope: Scope<'_>,
    ) -> Result<Decided, EngineError> {
        let Placement {
            labels,
            version: placement_version,
        } = placement;
        let now = now_unix();
        let mut stored = self.store.rollouts_shared();
        let controls = self.store.app_controls()?;
        // The memos, taken for this turn (one that fails leaves none: every App is decided
        // afresh next time) and put back with what it made of them.
        let context = MemoContext {
            placement_version,
            groups: groups.clone(),
            projects: projects.clone(),
            active_freezes: self
                .store
                .freezes()
                .into_iter()
                .filter(|f| f.active(now))
                .collect(),
        };
        let mut memos = {
            let mut st = self.controller();
            if st.memo_context.as_ref() != Some(&context) {
                st.memos.clear();
                st.plans.clear();
                st.memo_context = Some(context);
            }
            std::mem::take(&mut st.memos)
        };
        let mut plans = std::mem::take(&mut self.controller().plans);
        // Taken for this turn like the memos: one that fails leaves none, and the next reads
        // every Target afresh.
        let mut observed = std::mem::take(&mut self.controller().observed);
        let none = BTreeMap::new();
        let mut targets_read: Vec<(&str, usize)> = Vec::new();
        let use_memos = !matches!(scope, Scope::AllAfresh);
        let mut rollouts = BTreeMap::new();
        let mut events = Vec::new();
        let mut incomplete = HashSet::new();
        let mut next_checks: HashMap<String, i64> = HashMap::new();
        let mut decided: Vec<&str> = Vec::new();
        let mut self_heal: BTreeMap<String, SelfHealHolds> = BTreeMap::new();
        let mut current = None;
        for app in apps {
            let name = app.metadata.name.as_str();
            let suspended = controls.get(name).is_some_and(|c| c.suspended);
            let previous = stored.remove(name);
            if !scope.contains(name) {
                if let Some(state) = previous {
                    rollouts.insert(name.to_owned(), state);
                }
                continue;
            }
            let Some(git) = revisions.get(name) else {
                // Not fetched yet (or its Repo changed): it keeps what it had, if anything.
                decided.push(name);
                if let Some(state) = previous {
                    rollouts.insert(name.to_owned(), state);
                }
                continue;
            };
            if use_memos
                && let Some(stored_state) = &previous
                && let Some(memo) = memos.get_mut(name)
                && memo.holds(app, git, controls.get(name), stored_state, now)
            {
                if let Some(at) = memo.next_check {
                    next_checks.insert(name.to_owned(), at);
                }
                if let Some(holds) = &memo.self_heal {
                    self_heal.insert(name.to_owned(), holds.clone());
                }
                rollouts.insert(name.to_owned(), Arc::clone(stored_state));
                continue;
            }
            decided.push(name);
            let mut app_events: Vec<RolloutEvent> = Vec::new();
            let mut state: Arc<RolloutState> = match &previous {
                Some(s) => Arc::clone(s),
                None => {
                    // Taken once for every App without a rollout yet (a thousand Apps applied
                    // at once), and only when there is one.
                    let running: Vec<String> = current
                        .get_or_insert_with(|| self.desired_snapshot())
                        .iter()
                        .filter(|(_, d)| {
                            d.targets
                                .get(name)
                                .is_some_and(|t| t.target.commit == git.commit)
                        })
                        .map(|(c, _)| c.clone())
                        .collect();
                    Arc::new(if running.is_empty() {
                        let s = RolloutState::first(git.clone(), now);
                        app_events.push(RolloutEvent {
                            at: now,
                            rollout: s.number,
                            commit: git.commit.clone(),
                            kind: rollout::EventKind::Started,
                            message: format!(
                                "rollout #{} to {} started (first deployment)",
                                s.number,
                                rollout::short(&git.commit)
                            ),
                        });
                        s
                    } else {
                        RolloutState::adopt(git.clone(), running, now)
                    })
                }
            };
            let changed = |state: &Arc<RolloutState>| {
                previous
                    .as_ref()
                    .is_none_or(|p| !Arc::ptr_eq(p, state) && **p != **state)
            };
            if suspended {
                // Stands still: no new revision, no step, until resumed.
                if changed(&state) {
                    self.store.put_rollout(name, &state)?;
                    self.app_changed(name);
                }
                rollouts.insert(name.to_owned(), state);
                continue;
            }
            let plan = match plans.get(name) {
                Some((planned, plan)) if planned == app => {
                    debug_assert!(
                        **plan == plan_waves(app, labels, groups, projects),
                        "{name}: the plan kept differs from a fresh one"
                    );
                    Arc::clone(plan)
                }
                _ => {
                    let plan = Arc::new(plan_waves(app, labels, groups, projects));
                    plans.insert(name.to_owned(), (app.clone(), Arc::clone(&plan)));
                    plan
                }
            };
            let wanted = |dep: &str| {
                let rollout = rollouts.get(dep).or_else(|| stored.get(dep));
                dependencies::wanted_revision(revisions.get(dep), rollout.map(|r| &**r))
                    .map(str::to_owned)
            };
            let holds = self.holds_for(app, &plan, labels, projects, &wanted, now);
            let suspended_self_heal = holds.self_heal();
            let memo_self_heal =
                (!suspended_self_heal.is_empty()).then(|| suspended_self_heal.clone());
            if !suspended_self_heal.is_empty() {
                self_heal.insert(name.to_owned(), suspended_self_heal);
            }
            let was_complete = matches!(state.phase, Phase::Complete);
            // A complete rollout only places clusters that joined; reports change nothing: it
            // observes nothing and keeps no observations.
            let mut observing = !was_complete;
            if observing {
                let kept = observed.entry(name.to_owned()).or_default();
                targets_read.push((name, self.observe(name, &plan, now, kept)));
            }
            if *state.revision != *git {
                // The running rollout may have finished by now (a soak ended since it was last
                // decided): a newer revision must find it complete, so that it is the stable one.
                // A complete one is commanded as it is (copying its 10,000 clusters first was
                // for nothing: the command makes the new state).
                if !matches!(state.phase, Phase::Complete) {
                    let observations = observations_of(&observed, name, observing, &none);
                    let caught_up = decide_with(
                        &state,
                        &plan,
                        observations,
                        &holds,
                        now,
                        StatusDetail::Summary,
                    );
                    state = Arc::new(caught_up.state);
                    app_events.extend(caught_up.events);
                }
                match state.command(Command::NewRevision(git.clone()), now) {
                    Ok(outcome) => {
                        state = Arc::new(outcome.state);
                        app_events.extend(outcome.events);
                    }
                    Err(e) => warn!(app = %name, error = %e, "new revision refused"),
                }
                // The new rollout's first step needs what the clusters report: without it every
                // Target looks disconnected, and a strategy gives none of them the revision
                // until something else wakes the rollout.
                if was_complete {
                    let kept = observed.entry(name.to_owned()).or_default();
                    targets_read.push((name, self.observe(name, &plan, now, kept)));
                    observing = true;
                }
            }
            let observations = observations_of(&observed, name, observing, &none);
            // Only the next check is read of its status.
            let decision = decide_with(
                &state,
                &plan,
                observations,
                &holds,
                now,
                StatusDetail::Summary,
            );
            if !decision.changes.is_empty() {
                info!(
                    app = %name,
                    rollout = decision.state.number,
                    revision = %decision.state.revision.commit,
                    clusters = %summarize_clusters(decision.changes.iter().map(|c| c.cluster.as_str())),
                    "rollout step"
                );
            }
            if decision.state != *state {
                state = Arc::new(decision.state);
            }
            app_events.extend(decision.events);
            if matches!(state.phase, Phase::Complete) {
                // Nothing reads them until the next rollout: it reads every Target afresh.
                if observing {
                    observed.remove(name);
                    self.store.forget_target_changes(name);
                }
            } else {
                incomplete.insert(name.to_owned());
            }
            // A complete rollout asks too while a freeze holds a cluster that joined meanwhile.
            // And when what suspends self-heal may change by itself (a window that suspends it
            // opening), held or not.
            let next_check = match (decision.status.next_check_at, holds.next_self_heal_change()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(t) = next_check {
                next_checks.insert(name.to_owned(), t);
            }
            if changed(&state) {
                self.store.put_rollout(name, &state)?;
                self.app_changed(name);
            }
            events.extend(app_events.into_iter().map(|e| rollout_event(name, e)));
            if matches!(state.phase, Phase::Complete) && app.spec.depends_on.is_empty() {
                let memo = Memo {
                    app: app.clone(),
                    revision: git.clone(),
                    control: controls.get(name).cloned(),
                    state: Arc::clone(&state),
                    next_check,
                    self_heal: memo_self_heal,
                };
                memos.insert(name.to_owned(), memo);
            } else {
                memos.remove(name);
            }
            rollouts.insert(name.to_owned(), state);
        }
        if !matches!(scope, Scope::Apps(_)) {
            let present: HashSet<&str> = apps.iter().map(|a| a.metadata.name.as_str()).collect();
            memos.retain(|app, _| present.contains(app.as_str()));
            plans.retain(|app, _| present.contains(app.as_str()));
            observed.retain(|app, _| {
                let keep = present.contains(app.as_str());
                if !keep {
                    self.store.forget_target_changes(app);
                }
                keep
            });
        }
        self.bus.record(&mut events)?;
        for e in &events {
            info!(app = %e.app, rollout = e.rollout, kind = %e.kind, "{}", e.message);
        }
        let (self_heal, sooner) = {
            let mut st = self.controller();
            st.memos = memos;
            st.plans = plans;
            st.observed = observed;
            let earliest_before = st.next_rollout_checks.values().min().copied();
            match scope {
                Scope::All | Scope::AllAfresh => {
                    st.incomplete_rollouts = incomplete;
                    st.next_rollout_checks = next_checks;
                    st.dependents = dependents_of(apps);
                    st.self_heal_holds = self_heal;
                }
                Scope::Apps(apps) => {
                    for app in apps {
                        st.incomplete_rollouts.remove(app);
                        st.next_rollout_checks.remove(app);
                        st.self_heal_holds.remove(app);
                    }
                    st.self_heal_holds.extend(self_heal);
                    st.incomplete_rollouts.extend(incomplete);
                    st.next_rollout_checks.extend(next_checks);
                }
            }
            for app in decided {
                match st.rollout_decisions.get_mut(app) {
                    Some(n) => *n += 1,
                    None => {
                        st.rollout_decisions.insert(app.to_owned(), 1);
                    }
                }
            }
            for (app, n) in targets_read {
                match st.rollout_targets_read.get_mut(app) {
                    Some(total) => *total += n as u64,
                    None => {
                        st.rollout_targets_read.insert(app.to_owned(), n as u64);
                    }
                }
            }
            let earliest = st.next_rollout_checks.values().min().copied();
            let sooner = earliest.is_some_and(|t| earliest_before.is_none_or(|b| t < b));
            (st.self_heal_holds.clone(), sooner)
        };
        if sooner {
            // The driver sleeps until the earliest check it knew of: one asked for sooner here
            // (a freeze created, an App applied) must not wait for its next wake or resync.
            self.rollout_kick.notify_one();
        }
        Ok(Decided {
            rollouts,
            controls,
            self_heal,
        })
    }

    /// What the hub knows of `app`'s Targets on the clusters of `plan`, for a decision of its
    /// rollout, kept in `kept` since the last one: the reports and healthy marks are read only
    /// for the Targets that changed since (or joined the plan); each cluster's link and the
    /// commit it was told, which change with time and with every publish, are refreshed in
    /// place (a lookup each, nothing copied unless it changed). Debug builds check what was
    /// kept against the store. Returns how many Targets it read.
    fn observe(&self, app: &str, plan: &Plan, now: i64, kept: &mut Observed) -> usize {
        let changed = self.store.take_target_changes(app);
        let Observed {
            clusters,
            observations,
        } = kept;
        if changed.is_none() {
            observations.clear();
            clusters.clear();
        }
        // The placed clusters are usually the last decision's, in the same order.
        let mut placed = 0;
        let mut same = true;
        for (i, c) in plan.clusters().enumerate() {
            if clusters.get(i).map(String::as_str) != Some(c) {
                same = false;
                break;
            }
            placed = i + 1;
        }
        let same = same && placed == clusters.len();
        if !same {
            let now_placed: HashSet<&str> = plan.clusters().collect();
            observations.retain(|c, _| now_placed.contains(c.as_str()));
            *clusters = plan.clusters().map(str::to_owned).collect();
        }
        // What changed among the clusters still placed, then those placed since.
        let mut reread: Vec<String> = changed
            .into_iter()
            .flatten()
            .filter(|c| observations.contains_key(c))
            .collect();
        if !same {
            reread.extend(
                plan.clusters()
                    .filter(|c| !observations.contains_key(*c))
                    .map(str::to_owned),
            );
        }
        let read = reread.len();
        if !reread.is_empty() {
            let names: Vec<&str> = reread.iter().map(String::as_str).collect();
            let fresh = self.store.with_targets(app, &names, |_, report, mark| {
                Observation::from_report(None, report, mark, false, None)
            });
            for (cluster, o) in reread.into_iter().zip(fresh) {
                observations.insert(cluster, o);
            }
        }
        let elsewhere = self
            .store
            .connected_elsewhere_each(&observations.keys().map(String::as_str).collect::<Vec<_>>());
        let st = self.lock();
        for ((cluster, o), elsewhere) in observations.iter_mut().zip(elsewhere) {
            let published = st.desired.get(cluster.as_str()).map(|tx| tx.borrow());
            let told = published
                .as_ref()
                .and_then(|p| p.desired.targets.get(app))
                .map(|t| t.target.commit.as_str());
            if o.desired_revision.as_deref() != told {
                o.desired_revision = told.map(str::to_owned);
            }
            o.connected = elsewhere || self.linked_here(&st, cluster, now);
            o.last_contact = st.last_contact.get(cluster.as_str()).copied();
        }
        drop(st);
        debug_assert_eq!(
            observations.len(),
            plan.clusters().collect::<HashSet<_>>().len(),
            "{app}: observations kept for exactly the placed clusters"
        );
        #[cfg(debug_assertions)]
        self.check_observed(app, observations);
        read
    }

    /// Debug builds: what [`Engine::observe`] kept of each Target not changed since it took
    /// the changes is what the store holds now.
    #[cfg(debug_assertions)]
    fn check_observed(&self, app: &str, observations: &BTreeMap<String, Observation>) {
        let clusters: Vec<&str> = observations.keys().map(String::as_str).collect();
        let fresh =
            self.store
                .with_targets_since_taken(app, &clusters, |i, report, mark, changed| {
                    let kept = observations.get(clusters[i])?;
                    (!changed).then(|| {
                        Observation::from_report(
                            kept.desired_revision.as_deref(),
                            report,
                            mark,
                            kept.connected,
                            kept.last_contact,
                        )
                    })
                });
        let stale: Vec<&str> = observations
            .iter()
            .zip(fresh)
            .filter(|((_, kept), fresh)| fresh.as_ref().is_some_and(|f| f != *kept))
            .map(|((c, _), _)| c.as_str())
            .collect();
        debug_assert!(
            stale.is_empty(),
            "{app}: observations kept for {stale:?} are not what the store holds"
        );
    }

    /// What the hub knows of each of `clusters`' Target of `app`: read under one lock of the
    /// engine's state and one of the store's memory, not one per cluster.
    pub(super) fn observations<'a>(
        &self,
        app: &str,
        clusters: impl Iterator<Item = &'a str>,
        now: i64,
    ) -> BTreeMap<String, Observation> {
        let clusters: Vec<&str> = clusters.collect();
        let elsewhere = self.store.connected_elsewhere_each(&clusters);
        // The commit each cluster was told, whether it is connected, when it was last heard
        // (what `is_connected` says, with the other replicas' links read once for all).
        let links: Vec<(Option<String>, bool, Option<i64>)> = {
            let st = self.lock();
            clusters
                .iter()
                .zip(elsewhere)
                .map(|(c, elsewhere)| {
                    let desired = st.desired.get(*c).and_then(|tx| {
                        tx.borrow()
                            .desired
                            .targets
                            .get(app)
                            .map(|t| t.target.commit.clone())
                    });
                    (
                        desired,
                        elsewhere || self.linked_here(&st, c, now),
                        st.last_contact.get(*c).copied(),
                    )
                })
                .collect()
        };
        let observations = self.store.with_targets(app, &clusters, |i, report, mark| {
            let (desired, connected, last_contact) = &links[i];
            Observation::from_report(desired.as_deref(), report, mark, *connected, *last_contact)
        });
        clusters
            .iter()
            .map(|c| (*c).to_owned())
            .zip(observations)
            .collect()
    }

    /// After a report was stored: carries the Target's healthy mark, records what changed as
    /// events, and wakes the rollout driver if the App is in a rollout. The caller flushes.
    pub(super) fn after_report(
        &self,
        previous: Option<&ReportSummary>,
        report: &TargetReport,
    ) -> Result<(), EngineError> {
        let now = report.received_at_unix;
        let old = self.store.healthy_mark(&report.cluster, &report.app)?;
        let mark = rollout::next_healthy_since(
            old.as_ref(),
            &rollout::mark_revision(&report.revision, &report.chart_digest),
            report.sync,
            report.health,
            now,
        );
        if mark != old {
            self.store
                .put_healthy_mark(&report.cluster, &report.app, mark.as_ref())?;
        }
        let mut events: Vec<EventRecord> = history::target_events(previous, report)
            .into_iter()
            .map(|(kind, message)| EventRecord {
                at_unix: now,
                app: report.app.clone(),
                cluster: report.cluster.clone(),
                kind: kind.to_owned(),
                message,
                ..Default::default()
            })
            .collect();
        self.bus.record(&mut events)?;
        self.target_changed(&report.app, &report.cluster);
        self.kick_rollout_of(&report.app);
        Ok(())
    }

    /// A report on one of `app`'s Targets arrived (here or at another replica): only this
    /// App's rollout can have moved, and those of the Apps that depend on it (complete or not:
    /// a cluster that joined may wait for the dependency).
    pub(super) fn kick_rollout_of(&self, app: &str) {
        let mut st = self.controller();
        let Controller {
            incomplete_rollouts,
            rollout_queue,
            dependents,
            ..
        } = &mut *st;
        let mut kicked = false;
        if incomplete_rollouts.contains(app) {
            if !rollout_queue.contains(app) {
                rollout_queue.insert(app.to_owned());
            }
            kicked = true;
        }
        for dependent in dependents.get(app).into_iter().flatten() {
            if !rollout_queue.contains(dependent) {
                rollout_queue.insert(dependent.clone());
            }
            kicked = true;
        }
        drop(st);
        if kicked {
            self.rollout_kick.notify_one();
        }
    }

    /// A cluster came or went: the rollouts in progress may move (whether a cluster is
    /// connected decides whether its Target is given a revision, in any wave the rollout
    /// places on it). Complete rollouts do not look at connections.
    pub(super) fn kick_rollouts(&self) {
        let mut st = self.controller();
        if st.incomplete_rollouts.is_empty() {
            return;
        }
        let Controller {
            incomplete_rollouts,
            rollout_queue,
            ..
        } = &mut *st;
        rollout_queue.extend(incomplete_rollouts.iter().cloned());
        drop(st);
        self.rollout_kick.notify_one();
    }

    /// Queues `app`'s rollout to be decided again (time moved it on).
    pub(super) fn wake_rollout(&self, app: &str) {
        self.controller().rollout_queue.insert(app.to_owned());
        self.rollout_kick.notify_one();
    }

    /// How often `app`'s rollout has been decided since the hub started: a report for one App
    /// must decide that App's rollout only.
    #[doc(hidden)]
    pub fn rollout_decisions(&self, app: &str) -> u64 {
        self.controller()
            .rollout_decisions
            .get(app)
            .copied()
            .unwrap_or(0)
    }

    /// How many Targets' reports `app`'s rollout decisions have read since the hub started:
    /// a decision reads again only the Targets that changed since the last one.
    #[doc(hidden)]
    pub fn rollout_targets_read(&self, app: &str) -> u64 {
        self.controller()
            .rollout_targets_read
            .get(app)
            .copied()
            .unwrap_or(0)
    }

    /// How often the rollout driver's timer decided rollouts whatever woke them (see
    /// [`Engine::rollout_decisions`]).
    #[doc(hidden)]
    pub fn rollout_resyncs(&self) -> u64 {
        self.controller().rollout_resyncs
    }

    // --- commands ----------------------------------------------------------------------------

    /// `pause`, `resume`, `promote` or `rollback` on an App's rollout.
    pub async fn rollout_command(
        &self,
        name: &str,
        command: Command,
    ) -> Result<RolloutView, EngineError> {
        let guard = self.write.lock().await;
        self.app(name)?;
        let state = self.store.rollout(name)?.ok_or_else(|| {
            EngineError::FailedPrecondition(format!(
                "app {name:?} has no rollout yet: its Repo has not been fetched"
            ))
        })?;
        let now = now_unix();
        let by = match &command {
            Command::NewRevision(_) => String::new(),
            Command::Pause { by }
            | Command::Resume { by }
            | Command::Promote { by }
            | Command::Rollback { by, .. }
            | Command::OverrideHolds { by, .. } => by.clone(),
        };
        let outcome = state
            .command(command, now)
            .map_err(|e| EngineError::FailedPrecondition(format!("app {name:?}: {e}")))?;
        self.store.put_rollout(name, &outcome.state)?;
        self.app_changed(name);
        let mut events: Vec<EventRecord> = outcome
            .events
            .into_iter()
            .map(|e| EventRecord {
                by: by.clone(),
                ..rollout_event(name, e)
            })
            .collect();
        self.bus.record(&mut events)?;
        self.recompute_locked(&guard).await?;
        self.store.flush().await?;
        drop(guard);
        self.rollout_status(name)
    }

    /// Resolves a revision a person named (a full commit id, or a unique prefix of a commit
    /// this App has rolled out) for `rollback --to`.
    pub async fn resolve_revision(
        &self,
        name: &str,
        wanted: &str,
    ) -> Result<AppRevision, EngineError> {
        let wanted = wanted.trim().to_ascii_lowercase();
        if wanted.len() < 4 || !wanted.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(EngineError::Invalid(format!(
                "{wanted:?} is not a commit id: give at least 4 hex digits of a commit from \
                 `gitfleet rollout history {name}`"
            )));
        }
        let mut known: Vec<Arc<AppRevision>> = Vec::new();
        for s in self.store.rollout_history(name).await? {
            for r in std::iter::once(s.revision).chain(s.stable) {
                if !known.contains(&r) {
                    known.push(r);
                }
            }
        }
        let matching: Vec<&AppRevision> = known
            .iter()
            .map(|r| &**r)
            .filter(|r| r.commit.starts_with(&wanted))
            .collect();
        match matching.as_slice() {
            [one] => Ok((*one).clone()),
            [] if matches!(wanted.len(), 40 | 64) => {
                let git_ref = self
                    .store
                    .revisions()?
                    .remove(name)
                    .map(|r| r.git_ref)
                    .unwrap_or_default();
                Ok(AppRevision {
                    commit: wanted,
                    git_ref,
                    ..Default::default()
                })
            }
            [] => Err(EngineError::Invalid(format!(
                "app {name:?} has never rolled out a commit starting with {wanted}; see \
                 `gitfleet rollout history {name}`, or give the full 40-digit commit id"
            ))),
            many => Err(EngineError::Invalid(format!(
                "{wanted} is ambiguous for app {name:?}: {}",
                many.iter()
                    .map(|r| r.commit.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Suspends (or resumes) an App: its spokes stop syncing it and its rollout stands still.
    pub async fn set_suspended(
        &self,
        name: &str,
        suspended: bool,
        by: &str,
    ) -> Result<String, EngineError> {
        let guard = self.write.lock().await;
        self.app(name)?;
        let mut control = self.store.app_control(name)?;
        if control.suspended == suspended {
            return Ok(if suspended {
                format!(
                    "app {name} was already suspended (by {})",
                    control.suspended_by
                )
            } else {
                format!("app {name} is not suspended")
            });
        }
        let now = now_unix();
        control.suspended = suspended;
        let (kind, message) = if suspended {
            control.suspended_by = by.to_owned();
            control.suspended_at_unix = now;
            ("Suspended", format!("suspended by {by}"))
        } else {
            control.suspended_by.clear();
            control.suspended_at_unix = 0;
            // The rollout stood still: its deadline must not count the suspension.
            if let Some(mut state) = self.store.rollout(name)?
                && !matches!(state.phase, Phase::Complete)
            {
                state.last_progress_at = now;
                self.store.put_rollout(name, &state)?;
                self.app_changed(name);
            }
            ("Resumed", format!("resumed by {by}"))
        };
        self.store.put_app_control(name, &control)?;
        self.app_changed(name);
        self.record_app_event(name, "", kind, message.clone(), by)?;
        self.recompute_locked(&guard).await?;
        self.store.flush().await?;
        Ok(format!("app {name} {message}"))
    }

    /// Makes the spokes sync an App (on one cluster, or all of its clusters) again now.
    pub async fn request_sync(
        &self,
        name: &str,
        cluster: Option<&str>,
        by: &str,
    ) -> Result<String, EngineError> {
        let guard = self.write.lock().await;
        self.app(name)?;
        let current = self.desired_snapshot();
        let mut clusters: Vec<String> = current
            .iter()
            .filter(|(_, d)| d.targets.contains_key(name))
            .map(|(c, _)| c.clone())
            .filter(|c| cluster.is_none_or(|want| want == c))
            .collect();
        clusters.sort();
        if clusters.is_empty() {
            return Err(EngineError::FailedPrecondition(match cluster {
                Some(c) => format!(
                    "app {name:?} has no Target on cluster {c:?}; see `gitfleet status --app {name}`"
                ),
                None => format!("app {name:?} has no Targets yet"),
            }));
        }
        let mut control = self.store.app_control(name)?;
        if control.suspended {
            return Err(EngineError::FailedPrecondition(format!(
                "app {name:?} is suspended; `gitfleet app resume {name}` first"
            )));
        }
        for c in &clusters {
            *control.sync_requests.entry(c.clone()).or_default() += 1;
        }
        self.store.put_app_control(name, &control)?;
        self.app_changed(name);
        let message = format!("sync requested by {by} on {}", clusters.join(", "));
        self.record_app_event(
            name,
            cluster.unwrap_or_default(),
            "SyncRequested",
            message.clone(),
            by,
        )?;
        self.recompute_locked(&guard).await?;
        self.store.flush().await?;
        Ok(format!("app {name}: {message}"))
    }

    /// Records an event about an App (not part of a rollout), on one of its clusters when
    /// `cluster` is not empty.
    pub(super) fn record_app_event(
        &self,
        app: &str,
        cluster: &str,
        kind: &str,
        message: String,
        by: &str,
    ) -> Result<(), EngineError> {
        self.bus.record(&mut [EventRecord {
            at_unix: now_unix(),
            app: app.to_owned(),
            cluster: cluster.to_owned(),
            kind: kind.to_owned(),
            message,
            by: by.to_owned(),
            ..Default::default()
        }])?;
        Ok(())
    }
}

/// Up to ten cluster names for a log line, then how many more.
fn summarize_clusters<'a>(clusters: impl ExactSizeIterator<Item = &'a str>) -> String {
    const SHOWN: usize = 10;
    let n = clusters.len();
    let mut text = clusters.take(SHOWN).collect::<Vec<_>>().join(",");
    if n > SHOWN {
        text.push_str(&format!(" and {} more", n - SHOWN));
    }
    text
}

fn rollout_event(app: &str, e: RolloutEvent) -> EventRecord {
    EventRecord {
        at_unix: e.at,
        app: app.to_owned(),
        rollout: e.rollout,
        kind: format!("{:?}", e.kind),
        message: e.message,
        commit: e.commit,
        ..Default::default()
    }
}

/// The suspension and forced syncs people asked for, laid over computed desired state.
pub(super) fn apply_controls(
    fleet: &mut crate::fleet::SharedFleet,
    controls: &BTreeMap<String, AppControl>,
) {
    for (cluster, targets) in fleet.iter_mut() {
        for (app, target) in targets.iter_mut() {
            if let Some(c) = controls.get(app) {
                let suspended = target.sync_policy.suspended || c.suspended;
                let sync_request = c.sync_requests.get(cluster).copied().unwrap_or(0);
                // A shared Target is copied only where this changes it.
                if target.sync_policy.suspended != suspended || target.sync_request != sync_request
                {
                    let target = Arc::make_mut(target);
                    target.sync_policy.suspended = suspended;
                    target.sync_request = sync_request;
                }
            }
        }
    }
}

/// The longest pause between two decisions (see [`drive_rollouts`]).
const PACE_CAP: Duration = Duration::from_secs(1);
/// The pause after a decision, in multiples of the time it took.
const PACE_RATIO: u32 = 3;
/// How often the rollouts still in progress are all decided again whatever woke them, as a
/// safety net (a cluster gone silent counts as disconnected only by the clock).
const RESYNC_IN_PROGRESS: Duration = Duration::from_secs(30);
/// How often every App's rollout is decided again when nothing woke any.
const RESYNC_ALL: Duration = Duration::from_secs(3600);

/// The rollout controller: a queue of Apps, each woken by what concerns it (a report of one
/// of its Targets, a cluster coming or going while it rolls out, the time its rollout asked to
/// be looked at again), deduplicated while it waits; each turn decides the queued Apps only.
/// Changes to resources, revisions, clusters and controls decide every App where they happen.
pub(super) async fn drive_rollouts(engine: Arc<Engine>) {
    let mut last_resync = tokio::time::Instant::now();
    loop {
        let (wake, in_progress) = {
            let st = engine.controller();
            (
                st.next_rollout_checks.values().min().copied(),
                !st.incomplete_rollouts.is_empty(),
            )
        };
        let resync_every = if in_progress {
            RESYNC_IN_PROGRESS
        } else {
            RESYNC_ALL
        };
        let until_resync = resync_every.saturating_sub(last_resync.elapsed());
        let sleep = match wake {
            // To the start of second `at` (rollout times are whole seconds), not a whole second
            // after it.
            Some(at) => (std::time::UNIX_EPOCH
                + Duration::from_secs(u64::try_from(at).unwrap_or(0)))
            .duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .min(until_resync),
            None => until_resync,
        };
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = engine.rollout_kick.notified() => {}
            () = engine.shutdown.cancelled() => return,
        }
        let resync = last_resync.elapsed() >= resync_every;
        let queued: HashSet<String> = {
            let mut st = engine.controller();
            let now = now_unix();
            let Controller {
                rollout_queue,
                next_rollout_checks,
                incomplete_rollouts,
                ..
            } = &mut *st;
            let mut queued = std::mem::take(rollout_queue);
            queued.extend(
                next_rollout_checks
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(app, _)| app.clone()),
            );
            if resync && in_progress {
                queued.extend(incomplete_rollouts.iter().cloned());
            }
            if resync {
                st.rollout_resyncs += 1;
            }
            queued
        };
        let scope = if resync && !in_progress {
            Scope::AllAfresh
        } else {
            Scope::Apps(&queued)
        };
        if resync {
            last_resync = tokio::time::Instant::now();
        }
        if matches!(scope, Scope::Apps(apps) if apps.is_empty()) {
            continue;
        }
        let started = std::time::Instant::now();
        let decided = async {
            let guard = engine.write.lock().await;
            engine.recompute_scoped(&guard, scope).await
        };
        if let Err(e) = decided.instrument(info_span!("rollout")).await {
            warn!(error = %e, "cannot move rollouts on");
        }
        let took = started.elapsed();
        debug!(
            took_ms = took.as_millis() as u64,
            apps = queued.len(),
            "rollouts decided"
        );
        // Reports of a large fleet arrive faster than decisions are worth making: leave the
        // hub three times as long as the last decision took before the next, so that deciding
        // takes at most a quarter of one core (dispatching desired state, which a decision
        // may just have changed, and storing reports need the rest). Apps woken meanwhile wait
        // in the queue, each once.
        tokio::select! {
            () = tokio::time::sleep((took * PACE_RATIO).min(PACE_CAP)) => {}
            () = engine.shutdown.cancelled() => return,
        }
    }
}

/// By App: the Apps that name it in `spec.dependsOn`.
fn dependents_of(apps: &[App]) -> HashMap<String, Vec<String>> {
    let mut dependents: HashMap<String, Vec<String>> = HashMap::new();
    for app in apps {
        for dependency in &app.spec.depends_on {
            dependents
                .entry(dependency.clone())
                .or_default()
                .push(app.metadata.name.clone());
        }
    }
    dependents
}
