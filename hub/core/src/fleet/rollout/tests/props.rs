//! Property tests: random fleets, strategies and sequences of what spokes, the clock, Git and
//! people do, checked against the rollout's promises after every decision.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;

use super::super::*;
use super::rev;
use crate::model::{HealthState, SyncState};
use crate::resources::{IntOrPercent, OnFailure};

const NOW: i64 = 5_000_000;

#[derive(Debug, Clone)]
enum Op {
    /// Every connected spoke applies what it was told; `bad` ones turn out degraded.
    Converge,
    Advance(i64),
    /// A Target's health changes by itself.
    Degrade(usize),
    Recover(usize),
    Disconnect(usize),
    Reconnect(usize),
    Pause,
    Resume,
    Promote,
    /// Git moves to a fresh revision, bad on the clusters whose bit is set.
    NewRevision(u16),
    Rollback,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Converge),
        4 => (1i64..400).prop_map(Op::Advance),
        1 => (0usize..10).prop_map(Op::Degrade),
        1 => (0usize..10).prop_map(Op::Recover),
        1 => (0usize..10).prop_map(Op::Disconnect),
        2 => (0usize..10).prop_map(Op::Reconnect),
        1 => Just(Op::Pause),
        2 => Just(Op::Resume),
        1 => Just(Op::Promote),
        1 => any::<u16>().prop_map(Op::NewRevision),
        1 => Just(Op::Rollback),
    ]
}

fn int_or_percent(zero_ok: bool) -> impl Strategy<Value = IntOrPercent> {
    let low = u32::from(!zero_ok);
    prop_oneof![
        (low..5).prop_map(IntOrPercent::Count),
        (low..=100).prop_map(IntOrPercent::Percent),
    ]
}

fn wave_spec() -> impl Strategy<Value = (IntOrPercent, u64, IntOrPercent)> {
    (
        int_or_percent(false),
        prop_oneof![Just(0u64), Just(30), Just(300)],
        prop_oneof![3 => Just(IntOrPercent::Count(0)), 1 => int_or_percent(true)],
    )
}

prop_compose! {
    fn a_plan()(
        n in 1usize..=10,
        waves in prop::collection::vec(wave_spec(), 1..=3),
    )(
        membership in prop::collection::vec(0..waves.len(), n),
        waves in Just(waves),
        rollback in any::<bool>(),
    ) -> Plan {
        let mut plan = Plan {
            waves: waves
                .iter()
                .enumerate()
                .map(|(i, (max, soak, budget))| Wave {
                    max_unavailable: *max,
                    min_healthy_for: Duration::from_secs(*soak),
                    failure_budget: *budget,
                    ..Wave::new(&format!("w{i}"), Vec::<String>::new())
                })
                .collect(),
            progress_deadline: Duration::from_secs(900),
            on_failure: if rollback { OnFailure::Rollback } else { OnFailure::Pause },
        };
        for (c, w) in membership.iter().enumerate() {
            plan.waves[*w].clusters.push(format!("c{c}"));
        }
        plan
    }
}

struct World {
    plan: Plan,
    state: RolloutState,
    obs: BTreeMap<String, Observation>,
    now: i64,
    bad: BTreeSet<(String, String)>,
    next_revision: u8,
    clusters: Vec<String>,
}

impl World {
    fn new(plan: Plan) -> Self {
        let clusters: Vec<String> = plan.clusters().map(str::to_owned).collect();
        let obs = clusters
            .iter()
            .map(|c| {
                (
                    c.clone(),
                    Observation {
                        connected: true,
                        last_contact: Some(NOW),
                        ..Default::default()
                    },
                )
            })
            .collect();
        Self {
            state: RolloutState::first(rev('a'), NOW),
            plan,
            obs,
            now: NOW,
            bad: BTreeSet::new(),
            next_revision: b'b',
            clusters,
        }
    }

    fn cluster(&self, i: usize) -> String {
        self.clusters[i % self.clusters.len()].clone()
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Converge => {
                for (c, o) in self.obs.iter_mut() {
                    let Some(desired) = o.desired_revision.clone() else {
                        continue;
                    };
                    if !o.connected || o.applied_revision.as_ref() == Some(&desired) {
                        continue;
                    }
                    o.applied_revision = Some(desired.clone());
                    o.sync = SyncState::Synced;
                    if self.bad.contains(&(c.clone(), desired)) {
                        o.health = HealthState::Degraded;
                        o.healthy_since = None;
                    } else {
                        o.health = HealthState::Healthy;
                        o.healthy_since = Some(self.now);
                    }
                }
            }
            Op::Advance(s) => self.now += s,
            Op::Degrade(i) => {
                let c = self.cluster(*i);
                let o = self.obs.get_mut(&c).expect("observed");
                o.health = HealthState::Degraded;
                o.healthy_since = None;
            }
            Op::Recover(i) => {
                let c = self.cluster(*i);
                let o = self.obs.get_mut(&c).expect("observed");
                if o.applied_revision.is_some() && o.health != HealthState::Healthy {
                    o.health = HealthState::Healthy;
                    o.healthy_since = Some(self.now);
                }
            }
            Op::Disconnect(i) => {
                let c = self.cluster(*i);
                let now = self.now;
                let o = self.obs.get_mut(&c).expect("observed");
                o.connected = false;
                o.last_contact = Some(now);
            }
            Op::Reconnect(i) => {
                let c = self.cluster(*i);
                self.obs.get_mut(&c).expect("observed").connected = true;
            }
            Op::Pause => self.command(Command::Pause { by: "p".into() }),
            Op::Resume => self.command(Command::Resume { by: "p".into() }),
            Op::Promote => self.command(Command::Promote { by: "p".into() }),
            Op::Rollback => self.command(Command::Rollback {
                to: None,
                by: "p".into(),
            }),
            Op::NewRevision(mask) => {
                let r = rev(char::from(self.next_revision));
                self.next_revision += 1;
                for (i, c) in self.clusters.iter().enumerate() {
                    if mask & (1 << i) != 0 {
                        self.bad.insert((c.clone(), r.commit.clone()));
                    }
                }
                self.command(Command::NewRevision(r));
            }
        }
    }

    fn command(&mut self, c: Command) {
        // Refusals (nothing to pause, nothing to roll back to) are fine here.
        if let Ok(out) = self.state.command(c, self.now) {
            self.state = out.state;
        }
    }

    fn unavailable_in(&self, wave: &Wave, st: &RolloutState) -> usize {
        wave.clusters
            .iter()
            .filter(|c| {
                let holds = st.assigned.get(*c) == Some(&st.revision);
                let o = &self.obs[*c];
                let healthy = o.connected
                    && o.applied_revision.as_ref() == Some(&st.revision.commit)
                    && o.sync == SyncState::Synced
                    && o.health == HealthState::Healthy;
                holds && !healthy && !st.tolerated.contains(*c)
            })
            .count()
    }

    /// Decides, checks every promise, and lets the spokes learn their desired state.
    fn decide_and_check(&mut self) -> Result<(), TestCaseError> {
        let before = self.state.clone();
        let d = decide(&before, &self.plan, &self.obs, self.now);
        let st = &d.state;

        // Idempotent.
        let again = decide(st, &self.plan, &self.obs, self.now);
        prop_assert!(again.changes.is_empty(), "again: {:?}", again.changes);
        prop_assert!(again.events.is_empty(), "again: {:?}", again.events);
        prop_assert_eq!(&again.state, st);

        // Survives a restart exactly: the stored state decides as the live one does.
        let json = serde_json::to_string(&before).expect("serialises");
        let restored: RolloutState = serde_json::from_str(&json).expect("deserialises");
        prop_assert_eq!(&restored, &before);
        prop_assert_eq!(&decide(&restored, &self.plan, &self.obs, self.now), &d);

        // Updates never go to a disconnected cluster, except to get it off a rolled-back
        // revision.
        if matches!(st.kind, RolloutKind::Update) {
            for c in &d.changes {
                prop_assert!(
                    self.obs[&c.cluster].connected || Some(&c.to) == st.stable.as_ref(),
                    "{} is disconnected but was given {}",
                    c.cluster,
                    c.to.commit
                );
            }
        }
        // A disconnected cluster is never counted as failed.
        for w in &d.status.waves {
            for t in &w.targets {
                if !self.obs[&t.cluster].connected {
                    prop_assert_eq!(t.state, TargetState::Disconnected);
                }
            }
        }

        // Pause stops every update.
        if before.is_paused() {
            prop_assert!(d.changes.is_empty(), "paused, yet {:?}", d.changes);
        }

        if matches!(st.kind, RolloutKind::Update) {
            let complete = matches!(st.phase, Phase::Complete);
            for (i, wave) in self.plan.waves.iter().enumerate() {
                // Never more of a wave unavailable because of the rollout than allowed, when
                // the rollout adds to it.
                let added = d
                    .changes
                    .iter()
                    .any(|c| c.to == st.revision && wave.clusters.contains(&c.cluster));
                if added {
                    prop_assert!(
                        self.unavailable_in(wave, st) <= wave.max_unavailable_count(),
                        "wave {} over maxUnavailable {}: {:?}",
                        i,
                        wave.max_unavailable_count(),
                        d.status.waves[i]
                    );
                }
                // Nobody outside the waves reached so far has the new revision.
                if !complete && i > st.wave {
                    for c in &wave.clusters {
                        prop_assert_ne!(
                            st.assigned.get(c),
                            Some(&st.revision),
                            "{} in wave {} has the revision while the rollout is at wave {}",
                            c,
                            i,
                            st.wave
                        );
                    }
                }
            }
        }
        for c in &d.changes {
            prop_assert_eq!(st.assigned.get(&c.cluster), Some(&c.to));
        }

        self.state = d.state;
        for (c, r) in &self.state.assigned {
            if let Some(o) = self.obs.get_mut(c) {
                o.desired_revision = Some(r.commit.clone());
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn rollouts_keep_their_promises(plan in a_plan(), ops in prop::collection::vec(op(), 1..60)) {
        let mut w = World::new(plan);
        w.decide_and_check()?;
        for op in &ops {
            w.apply(op);
            w.decide_and_check()?;
        }
    }

    #[test]
    fn a_rollout_where_everything_turns_healthy_completes(
        plan in a_plan(),
        supersede_at in 0usize..6,
        pause_at in prop::option::of(0usize..6),
    ) {
        let mut w = World::new(plan);
        let longest = w.plan.waves.iter().map(|w| w.min_healthy_for.as_secs()).max().unwrap_or(0);
        let mut completed = false;
        // Each step can finish a wave; a few more for the superseding revision.
        for step in 0..(w.plan.waves.len() * 4 + 20) {
            if step == supersede_at {
                w.apply(&Op::NewRevision(0));
            }
            if Some(step) == pause_at {
                w.apply(&Op::Pause);
                w.decide_and_check()?;
                w.apply(&Op::Resume);
            }
            w.decide_and_check()?;
            w.apply(&Op::Converge);
            w.apply(&Op::Advance(i64::try_from(longest).expect("small") + 1));
            if step > supersede_at && matches!(w.state.phase, Phase::Complete) {
                completed = true;
                break;
            }
        }
        prop_assert!(completed, "stuck: {:?}", decide(&w.state, &w.plan, &w.obs, w.now).status);
        let revision = w.state.revision.clone();
        for c in &w.clusters {
            prop_assert_eq!(w.state.assigned.get(c), Some(&revision));
        }
    }
}
