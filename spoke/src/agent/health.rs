//! After a sync: reads what was applied back, judges its health and drift, reports changes,
//! re-applies drifted objects with selfHeal, and paces its checks.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::model::{Health, ObjectRef, ResourceAction, ResourceResult, TargetSpec, TargetStatus};
use crate::sync::{drift, health, ownership, report};

use super::pipeline::Attempt;
use super::{AgentConfig, Context, send_if_changed, status_of};

/// Watches the health of what was applied, reporting changes. Returns true when a new spec
/// arrived (sync again), false when the worker should stop.
pub(super) async fn watch_health(
    ctx: &Context,
    mut attempt: Attempt,
    last: &mut Option<TargetStatus>,
    spec_rx: &mut watch::Receiver<TargetSpec>,
    cancel: &CancellationToken,
    sync_span: tracing::Span,
) -> bool {
    let mut failure_wait = ctx.config.retry_after_failure;
    // A change to what was applied wakes the loop at once (drift is reported, and reverted
    // with selfHeal, within moments); the timed checks are the safety net.
    let watches = ctx
        .watches
        .subscribe(&attempt.spec.app, attempt.manifests.keys())
        .await;
    drop(attempt.listing.take());
    let mut quiet_rounds: u32 = 0;
    // Health is watched in a `health` span of the sync until the Target first settles, which
    // ends the sync's part of the change's trace; later checks run in a `watch` span, which is
    // not exported.
    let mut health = Some(tracing::info_span!(parent: &sync_span, "health"));
    let watch = tracing::info_span!(
        parent: None,
        "watch",
        app = %attempt.spec.app,
        cluster = %ctx.config.cluster_name,
        revision = %attempt.spec.source.commit,
    );
    drop(sync_span);
    loop {
        let span = health.clone().unwrap_or_else(|| watch.clone());
        let (delay, settled) = async {
            let mut resources = attempt.resources.clone();
            if attempt.fatal.is_some() {
                send_summary(
                    ctx,
                    last,
                    &attempt.spec,
                    resources,
                    attempt.fatal.as_deref(),
                );
                let wait = failure_wait;
                failure_wait = (failure_wait * 2).min(Duration::from_secs(600));
                (wait, true)
            } else {
                let drifted =
                    assess_health(ctx, &mut resources, &attempt.expected, &attempt.rules).await;
                let expired = attempt.finished.elapsed() >= ctx.config.progress_timeout;
                if expired {
                    report::expire_progressing(&mut resources, ctx.config.progress_timeout);
                }
                let any_progressing = resources.iter().any(|r| r.health == Health::Progressing);
                let (changed, health) = send_summary(ctx, last, &attempt.spec, resources, None);
                let progressing = health == Health::Progressing || any_progressing;
                quiet_rounds = if changed {
                    0
                } else {
                    quiet_rounds.saturating_add(1)
                };
                let delay = if !drifted.is_empty() && attempt.spec.sync_policy.self_heal {
                    heal(ctx, &mut attempt, &drifted).await;
                    ctx.config.health_poll
                } else if progressing {
                    ctx.config.health_poll
                } else {
                    settled_delay(
                        &ctx.config,
                        attempt.spec.sync_policy.self_heal && !watches.working(),
                        quiet_rounds,
                    )
                };
                (delay, !progressing)
            }
        }
        .instrument(span)
        .await;
        if settled {
            health = None;
        }
        tokio::select! {
            changed = spec_rx.changed() => {
                if changed.is_err() {
                    return false;
                }
                let next = spec_rx.borrow_and_update().clone();
                if !attempt.spec.differs_only_in_watching(&next) {
                    // Seen here, synced by the worker: it reads the newest spec itself.
                    return true;
                }
                // What was applied stays: heal (or stop healing), and judge health by the
                // rules, from the next check on, which is now; report under the new spec's
                // generation.
                tracing::info!(self_heal = next.sync_policy.self_heal, health_rules = next.health_rules.len(), generation = next.spec_generation, "self-heal or health rules changed");
                if next.health_rules != attempt.spec.health_rules {
                    attempt.rules = health::RuleSet::new(&next.health_rules);
                }
                attempt.spec = TargetSpec {
                    trace: std::mem::take(&mut attempt.spec.trace),
                    ..next
                };
                quiet_rounds = 0;
            }
            () = watches.changed() => {}
            () = tokio::time::sleep(delay) => {
                if attempt.fatal.is_some() {
                    // Retry the whole sync: the repository or network may be back.
                    spec_rx.mark_changed();
                    return true;
                }
            }
            () = cancel.cancelled() => return false,
        }
    }
}

/// Reports what `resources` (and `fatal`, the failure that ended the sync early) come to,
/// unless the last report said the same. Returns whether it reported, and the Target's health.
fn send_summary(
    ctx: &Context,
    last: &mut Option<TargetStatus>,
    spec: &TargetSpec,
    resources: Vec<ResourceResult>,
    fatal: Option<&str>,
) -> (bool, Health) {
    let summary = report::summarize(&resources, fatal);
    let health = summary.health;
    let status = status_of(spec, summary.sync, health, summary.message, resources);
    (send_if_changed(ctx, last, status), health)
}

/// How long to wait between checks of a settled Target: `settled_poll` while it changes or
/// when it must heal itself without working watches (drift must be caught within seconds),
/// doubling per quiet round up to `max_settled_poll` otherwise, so that an idle spoke costs
/// next to nothing.
fn settled_delay(config: &AgentConfig, poll_for_drift: bool, quiet_rounds: u32) -> Duration {
    if poll_for_drift {
        return config.settled_poll;
    }
    let factor = 1u32 << quiet_rounds.min(8);
    config
        .settled_poll
        .saturating_mul(factor)
        .min(config.max_settled_poll.max(config.settled_poll))
}

/// Self-heal: re-applies drifted objects, taking back the fields Git declares (force: someone
/// else's update took their ownership).
pub(super) async fn heal(
    ctx: &Context,
    attempt: &mut Attempt,
    drifted: &[(ObjectRef, Vec<String>)],
) {
    for (object, paths) in drifted {
        let Some(manifest) = attempt.manifests.get(object) else {
            continue;
        };
        let resolved = match ctx.cluster.resolve(&object.api_version, &object.kind).await {
            Ok(resolved) => resolved,
            Err(error) => {
                tracing::warn!(object = %object.display_name(), %error, "could not revert drift");
                continue;
            }
        };
        // Deleted and made again by someone else, it is no longer the App's to force: the
        // resource fails with the owner's name (in the report, where the user looks) and is no
        // longer watched for drift, until the next sync checks it again.
        match super::pipeline::claim(ctx, &attempt.spec, &resolved, manifest).await {
            Ok(ownership::Claim::Apply | ownership::Claim::Adopt) => {}
            Ok(ownership::Claim::LeaveAsIs) => continue,
            Err(message) => {
                tracing::warn!(object = %object.display_name(), %message, "not reverting drift");
                attempt.expected.remove(object);
                if let Some(r) = attempt.resources.iter_mut().find(|r| &r.object == object) {
                    r.action = ResourceAction::Failed;
                    r.health = Health::Unknown;
                    r.message = format!("not reverting drift: {message}");
                }
                continue;
            }
        }
        let manager = ownership::field_manager(&attempt.spec.app);
        let applied = ctx.cluster.apply(&resolved, manifest, &manager, true).await;
        match applied {
            Ok(applied) => {
                tracing::info!(object = %object.display_name(), paths = %paths.join(", "), "reverted drift");
                attempt.expected.insert(
                    object.clone(),
                    drift::project(&manifest.body, &applied.object),
                );
            }
            Err(error) => {
                tracing::warn!(object = %object.display_name(), %error, "could not revert drift")
            }
        }
    }
}

/// Reads every applied object back and judges its health.
/// Returns the objects that drifted from what was applied (changed or deleted), with the
/// paths that changed.
async fn assess_health(
    ctx: &Context,
    resources: &mut [ResourceResult],
    expected: &HashMap<ObjectRef, serde_json::Value>,
    rules: &health::RuleSet,
) -> Vec<(ObjectRef, Vec<String>)> {
    let mut drifted = Vec::new();
    for r in resources.iter_mut() {
        // A hook's result is its run's; it is not judged again (it may well be deleted).
        if !matches!(
            r.action,
            ResourceAction::Applied | ResourceAction::Unchanged
        ) || !r.hook.is_empty()
        {
            continue;
        }
        match ctx.cluster.get(&r.object).await {
            Ok(live) => {
                let assessment = health::assess_with(live.as_ref(), rules);
                r.health = assessment.health;
                r.message = assessment.message;
                let paths = match (&live, expected.get(&r.object)) {
                    (Some(live), Some(expected)) => drift::diff(expected, live),
                    (None, Some(_)) => vec!["(the object was deleted)".to_owned()],
                    _ => Vec::new(),
                };
                if !paths.is_empty() {
                    r.action = ResourceAction::Drifted;
                    r.message = format!("drifted from Git: {}", paths.join(", "));
                    drifted.push((r.object.clone(), paths));
                }
            }
            Err(error) => {
                r.health = Health::Unknown;
                r.message = format!("reading it back: {error}");
            }
        }
    }
    drifted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_targets_are_checked_less_often_unless_they_heal_themselves() {
        let config = AgentConfig::new("c");
        assert_eq!(settled_delay(&config, false, 0), Duration::from_secs(5));
        assert_eq!(settled_delay(&config, false, 1), Duration::from_secs(10));
        assert_eq!(settled_delay(&config, false, 3), Duration::from_secs(40));
        assert_eq!(settled_delay(&config, false, 30), Duration::from_secs(60));
        assert_eq!(settled_delay(&config, true, 30), Duration::from_secs(5));
    }
}
