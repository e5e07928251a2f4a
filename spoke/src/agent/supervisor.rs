//! Keeps one worker per Target of the desired state: starts a worker for a new Target, hands
//! a changed spec to its worker, and stops the worker of a removed Target (pruning what it
//! applied when its policy says so).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::desired::DesiredState;
use crate::git::GitCache;
use crate::model::TargetSpec;
use crate::renderer::RenderGate;
use crate::watch::Watches;

use super::prune::prune_removed;
use super::worker::target_worker;
use super::{AgentConfig, Context, Reporter};

struct Worker {
    spec: watch::Sender<TargetSpec>,
    cancel: CancellationToken,
}

/// Runs until `cancel` fires, keeping one worker per Target of the desired state.
pub async fn run(
    config: AgentConfig,
    cluster: Arc<Cluster>,
    git: Arc<GitCache>,
    reporter: Arc<dyn Reporter>,
    mut desired: watch::Receiver<DesiredState>,
    cancel: CancellationToken,
) {
    let ctx = Arc::new(Context {
        render_settings: config.render_settings(),
        render_gate: RenderGate::new(config.max_concurrent_renders),
        config,
        watches: Watches::new(cluster.clone()),
        cluster,
        git,
        reporter,
    });
    if let Some(slot) = &ctx.config.diffs {
        slot.set(Arc::new(super::diff::AgentDiffer::new(
            ctx.clone(),
            desired.clone(),
        )));
    }
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut tasks = JoinSet::new();
    loop {
        let state = desired.borrow_and_update().clone();
        let state = Arc::new(state);
        let removed: Vec<String> = workers
            .keys()
            .filter(|id| !state.targets.contains_key(*id))
            .cloned()
            .collect();
        for id in removed {
            if let Some(worker) = workers.remove(&id) {
                tracing::info!(target_id = %id, "target removed; stopping its worker");
                worker.cancel.cancel();
                let spec = worker.spec.borrow().clone();
                if spec.sync_policy.prune {
                    tasks.spawn(prune_removed(ctx.clone(), spec));
                }
            }
        }
        for (id, spec) in &state.targets {
            match workers.get(id) {
                Some(worker) => {
                    worker.spec.send_if_modified(|held| {
                        let changed = !same_spec(held, spec);
                        if changed {
                            *held = spec.clone();
                        }
                        changed
                    });
                }
                None => {
                    let (tx, rx) = watch::channel(spec.clone());
                    let worker_cancel = cancel.child_token();
                    tasks.spawn(target_worker(
                        ctx.clone(),
                        rx,
                        desired.clone(),
                        worker_cancel.clone(),
                    ));
                    workers.insert(
                        id.clone(),
                        Worker {
                            spec: tx,
                            cancel: worker_cancel,
                        },
                    );
                }
            }
        }
        tokio::select! {
            changed = desired.changed() => if changed.is_err() { break },
            () = cancel.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    for worker in workers.values() {
        worker.cancel.cancel();
    }
    while tasks.join_next().await.is_some() {}
}

/// Whether two specs ask for the same thing. The trace context says which hub step sent a
/// spec, not what it asks for: a spec sent again (a snapshot after a reconnect) is no change.
fn same_spec(a: &TargetSpec, b: &TargetSpec) -> bool {
    TargetSpec {
        trace: BTreeMap::new(),
        ..a.clone()
    } == TargetSpec {
        trace: BTreeMap::new(),
        ..b.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_sent_again_with_another_trace_context_is_no_change() {
        let held = TargetSpec::test("t", "app");
        let mut again = held.clone();
        again.trace.insert(
            "traceparent".into(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        );
        assert!(same_spec(&held, &again));
        let mut moved = again.clone();
        moved.source.commit = "b".repeat(40);
        assert!(!same_spec(&held, &moved));
    }
}
