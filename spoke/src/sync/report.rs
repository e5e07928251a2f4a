//! From per-resource results to what a Target says: sync state, health, and one message a
//! person can act on; and reports kept within the limits the hub accepts.

use std::time::Duration;

use gitfleet_proto::report_limits::{
    MAX_FIELD_BYTES, MAX_MESSAGE_BYTES, MAX_REPORT_BYTES, MAX_RESOURCE_MESSAGE_BYTES,
    MAX_RESOURCES, MAX_TRACE_FIELDS,
};

use crate::model::{Health, ResourceAction, ResourceResult, SyncState, TargetStatus};

/// How many problems the Target message names before it just counts the rest.
const MESSAGE_ITEMS: usize = 3;

/// What a Target says as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub sync: SyncState,
    pub health: Health,
    pub message: String,
}

/// Summarises a finished sync attempt. `fatal` is set when fetching or rendering failed, so
/// that nothing of this revision could be applied.
pub fn summarize(resources: &[ResourceResult], fatal: Option<&str>) -> Summary {
    if let Some(fatal) = fatal {
        return Summary {
            sync: SyncState::Failed,
            health: Health::Unknown,
            message: fatal.to_owned(),
        };
    }
    // A hook this sync did not run (an upgrade hook on a first sync, the hooks of a phase the
    // sync did not reach) says nothing about whether the cluster matches Git.
    let quiet = |r: &ResourceResult| r.action == ResourceAction::Skipped && !r.hook.is_empty();
    let kept: Vec<ResourceResult>;
    let resources = if resources.iter().any(quiet) {
        kept = resources.iter().filter(|r| !quiet(r)).cloned().collect();
        &kept[..]
    } else {
        resources
    };
    let failed = resources.iter().filter(|r| is_failure(r.action)).count();
    let count = |action: ResourceAction| resources.iter().filter(|r| r.action == action).count();
    let (drifted, skipped, unpruned) = (
        count(ResourceAction::Drifted),
        count(ResourceAction::Skipped),
        count(ResourceAction::RequiresPruning),
    );
    let applied = resources.len() - failed - skipped - unpruned;
    let sync = if failed + drifted + skipped + unpruned == 0 {
        SyncState::Synced
    } else if applied == 0 && failed + skipped > 0 {
        SyncState::Failed
    } else {
        SyncState::OutOfSync
    };
    // Invalid files, skipped objects and objects left for pruning have no health that says
    // anything about this revision; they show in the sync state.
    let health = resources
        .iter()
        .filter(|r| !is_not_applied(r.action))
        .map(|r| r.health)
        .max()
        .unwrap_or(Health::Healthy);

    let mut problems: Vec<String> = resources
        .iter()
        .filter(|r| is_failure(r.action) || is_out_of_sync(r.action))
        .map(|r| match r.action {
            ResourceAction::Invalid => r.message.clone(),
            _ => format!("{}: {}", name(r), r.message),
        })
        .collect();
    let mut unhealthy: Vec<&ResourceResult> = resources
        .iter()
        .filter(|r| {
            !is_failure(r.action) && !is_out_of_sync(r.action) && r.health != Health::Healthy
        })
        .collect();
    unhealthy.sort_by_key(|r| std::cmp::Reverse(r.health));
    problems.extend(unhealthy.iter().map(|r| {
        if r.message.is_empty() {
            format!("{}: {}", name(r), r.health.as_str())
        } else {
            format!("{}: {}", name(r), r.message)
        }
    }));

    let message = if problems.is_empty() {
        match resources.len() {
            0 => "no manifests to apply".to_owned(),
            1 => "1 resource synced and healthy".to_owned(),
            n => format!("{n} resources synced and healthy"),
        }
    } else {
        let mut message = String::new();
        if failed > 0 {
            message.push_str(&format!(
                "{failed} of {} resources failed: ",
                resources.len()
            ));
        }
        message.push_str(
            &problems
                .iter()
                .take(MESSAGE_ITEMS)
                .cloned()
                .collect::<Vec<_>>()
                .join("; "),
        );
        if problems.len() > MESSAGE_ITEMS {
            message.push_str(&format!(" (and {} more)", problems.len() - MESSAGE_ITEMS));
        }
        message
    };
    Summary {
        sync,
        health,
        message,
    }
}

/// Turns resources that have been progressing for longer than `timeout` into Degraded, so that
/// a rollout that will never finish says so instead of hanging.
pub fn expire_progressing(resources: &mut [ResourceResult], timeout: Duration) {
    for r in resources
        .iter_mut()
        .filter(|r| r.health == Health::Progressing)
    {
        r.health = Health::Degraded;
        r.message = if r.message.is_empty() {
            format!("still progressing after {}s", timeout.as_secs())
        } else {
            format!(
                "still progressing after {}s: {}",
                timeout.as_secs(),
                r.message
            )
        };
    }
}

/// Room in [`MAX_REPORT_BYTES`] kept for everything but the resources: the message, the ids
/// and the trace context, each bounded far below this.
const REPORT_HEADER_BYTES: usize = 64 * 1024;

/// Marks a string that was cut short.
const CUT: &str = "…";

/// `status` within the limits of a status report (docs/protocol.md), so that the hub keeps it
/// whole and no report is ever too big to send: long strings are cut (ending in "…"), a trace
/// context too big is dropped, and beyond [`MAX_RESOURCES`] resources or the size budget the
/// report leaves resources out, problems last, and its message says how many. A report within
/// the limits comes back as it was.
pub fn bounded(mut status: TargetStatus) -> TargetStatus {
    for r in &mut status.resources {
        shorten(&mut r.message, MAX_RESOURCE_MESSAGE_BYTES);
        for field in [
            &mut r.object.api_version,
            &mut r.object.kind,
            &mut r.object.namespace,
            &mut r.object.name,
            &mut r.source_file,
            &mut r.hook,
        ] {
            shorten(field, MAX_FIELD_BYTES);
        }
    }
    if status.trace.len() > MAX_TRACE_FIELDS
        || status
            .trace
            .iter()
            .any(|(k, v)| k.len() > MAX_FIELD_BYTES || v.len() > MAX_FIELD_BYTES)
    {
        status.trace.clear();
    }
    let total = status.resources.len();
    let budget = MAX_REPORT_BYTES - REPORT_HEADER_BYTES;
    let size: usize = status.resources.iter().map(encoded_bound).sum();
    let mut note = String::new();
    if total > MAX_RESOURCES || size > budget {
        // What a person must see first: failures, drift, unhealthy objects.
        let mut by_priority: Vec<usize> = (0..total).collect();
        by_priority.sort_by_key(|&i| !is_problem(&status.resources[i]));
        let mut keep = vec![false; total];
        let (mut kept, mut used) = (0, 0);
        for i in by_priority {
            let size = encoded_bound(&status.resources[i]);
            if kept == MAX_RESOURCES || used + size > budget {
                break;
            }
            keep[i] = true;
            kept += 1;
            used += size;
        }
        let mut keep = keep.into_iter();
        status.resources.retain(|_| keep.next().unwrap_or(false));
        note = format!(
            " ({} of {total} resources not listed: a report lists at most {MAX_RESOURCES} \
             resources in {MAX_REPORT_BYTES} bytes)",
            total - kept
        );
    }
    shorten(&mut status.message, MAX_MESSAGE_BYTES - note.len());
    status.message.push_str(&note);
    status
}

/// Cuts `s` to at most `max` bytes, on a character boundary, ending in [`CUT`].
fn shorten(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max.saturating_sub(CUT.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(CUT);
}

/// What `r` takes in an encoded report, or a little more: its strings, and for each of its
/// eight fields a tag and a length (or the health's value), and its own tag and length.
fn encoded_bound(r: &ResourceResult) -> usize {
    r.object.api_version.len()
        + r.object.kind.len()
        + r.object.namespace.len()
        + r.object.name.len()
        + r.action.as_str().len()
        + r.message.len()
        + r.source_file.len()
        + r.hook.len()
        + 8 * 4
        + 8
}

fn is_problem(r: &ResourceResult) -> bool {
    is_failure(r.action) || is_out_of_sync(r.action) || r.health != Health::Healthy
}

fn is_failure(action: ResourceAction) -> bool {
    matches!(action, ResourceAction::Failed | ResourceAction::Invalid)
}

/// Applied, but the cluster does not match Git (or nothing was applied and it does not).
fn is_out_of_sync(action: ResourceAction) -> bool {
    matches!(
        action,
        ResourceAction::Drifted | ResourceAction::Skipped | ResourceAction::RequiresPruning
    )
}

fn is_not_applied(action: ResourceAction) -> bool {
    matches!(
        action,
        ResourceAction::Invalid | ResourceAction::Skipped | ResourceAction::RequiresPruning
    )
}

fn name(r: &ResourceResult) -> String {
    if r.object.name.is_empty() {
        r.source_file.clone()
    } else {
        r.object.display_name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectRef;

    fn result(
        kind: &str,
        name: &str,
        action: ResourceAction,
        health: Health,
        message: &str,
    ) -> ResourceResult {
        ResourceResult {
            object: ObjectRef {
                api_version: "v1".into(),
                kind: kind.into(),
                namespace: "ns".into(),
                name: name.into(),
            },
            action,
            health,
            message: message.into(),
            source_file: format!("app/{name}.yaml"),
            hook: String::new(),
        }
    }

    fn invalid(file: &str, message: &str) -> ResourceResult {
        ResourceResult::invalid(file, message)
    }

    #[test]
    fn hooks_not_run_leave_the_target_synced_but_a_failed_hook_does_not() {
        let web = result(
            "Deployment",
            "web",
            ResourceAction::Applied,
            Health::Healthy,
            "",
        );
        let mut upgrade = result(
            "Job",
            "upgrade",
            ResourceAction::Skipped,
            Health::Unknown,
            "not run",
        );
        upgrade.hook = "pre-upgrade".into();
        let s = summarize(&[web.clone(), upgrade], None);
        assert_eq!((s.sync, s.health), (SyncState::Synced, Health::Healthy));
        assert_eq!(s.message, "1 resource synced and healthy");

        let mut migrate = result(
            "Job",
            "migrate-x1",
            ResourceAction::Failed,
            Health::Degraded,
            "PreSync hook failed: job failed: BackoffLimitExceeded",
        );
        migrate.hook = "PreSync".into();
        let s = summarize(&[migrate], None);
        assert_eq!(s.health, Health::Degraded);
        assert!(
            s.message.contains("job/migrate-x1: PreSync hook failed"),
            "{}",
            s.message
        );
    }

    #[test]
    fn all_applied_and_healthy() {
        let s = summarize(
            &[
                result(
                    "Deployment",
                    "web",
                    ResourceAction::Applied,
                    Health::Healthy,
                    "3/3 replicas available",
                ),
                result(
                    "Service",
                    "web",
                    ResourceAction::Unchanged,
                    Health::Healthy,
                    "",
                ),
            ],
            None,
        );
        assert_eq!(
            s,
            Summary {
                sync: SyncState::Synced,
                health: Health::Healthy,
                message: "2 resources synced and healthy".into()
            }
        );
    }

    #[test]
    fn nothing_to_apply() {
        let s = summarize(&[], None);
        assert_eq!((s.sync, s.health), (SyncState::Synced, Health::Healthy));
        assert_eq!(s.message, "no manifests to apply");
    }

    #[test]
    fn fatal_error_fails_the_target() {
        let s = summarize(&[], Some("fetch https://x: commit abc not found"));
        assert_eq!((s.sync, s.health), (SyncState::Failed, Health::Unknown));
        assert_eq!(s.message, "fetch https://x: commit abc not found");
    }

    #[test]
    fn some_failures_are_out_of_sync_and_named() {
        let s = summarize(
            &[
                result(
                    "Deployment",
                    "web",
                    ResourceAction::Applied,
                    Health::Healthy,
                    "",
                ),
                result(
                    "ServiceMonitor",
                    "mon",
                    ResourceAction::Failed,
                    Health::Missing,
                    "the server does not know kind ServiceMonitor",
                ),
                invalid(
                    "app/bad.yaml",
                    "app/bad.yaml: mapping values are not allowed at line 3 column 5",
                ),
            ],
            None,
        );
        assert_eq!(s.sync, SyncState::OutOfSync);
        assert_eq!(
            s.health,
            Health::Missing,
            "failed objects count, invalid files do not"
        );
        assert_eq!(
            s.message,
            "2 of 3 resources failed: servicemonitor/mon: the server does not know kind ServiceMonitor; app/bad.yaml: mapping values are not allowed at line 3 column 5"
        );
    }

    #[test]
    fn only_failures_is_failed() {
        let s = summarize(&[invalid("a.yaml", "a.yaml: missing kind")], None);
        assert_eq!(s.sync, SyncState::Failed);
        assert_eq!(s.health, Health::Healthy);
    }

    #[test]
    fn health_is_the_worst_and_degraded_comes_first_in_the_message() {
        let s = summarize(
            &[
                result(
                    "Deployment",
                    "a",
                    ResourceAction::Applied,
                    Health::Progressing,
                    "1/3 replicas available",
                ),
                result(
                    "Deployment",
                    "b",
                    ResourceAction::Applied,
                    Health::Degraded,
                    "0/1 replicas available: ProgressDeadlineExceeded",
                ),
                result(
                    "ConfigMap",
                    "c",
                    ResourceAction::Applied,
                    Health::Healthy,
                    "",
                ),
            ],
            None,
        );
        assert_eq!((s.sync, s.health), (SyncState::Synced, Health::Degraded));
        assert_eq!(
            s.message,
            "deployment/b: 0/1 replicas available: ProgressDeadlineExceeded; deployment/a: 1/3 replicas available"
        );
    }

    #[test]
    fn long_messages_are_cut_with_a_count() {
        let resources: Vec<_> = (0..6)
            .map(|i| {
                result(
                    "Pod",
                    &format!("p{i}"),
                    ResourceAction::Applied,
                    Health::Progressing,
                    "pending",
                )
            })
            .collect();
        let s = summarize(&resources, None);
        assert!(
            s.message.ends_with("pod/p2: pending (and 3 more)"),
            "{}",
            s.message
        );
    }

    #[test]
    fn unhealthy_without_message_names_the_state() {
        let s = summarize(
            &[result(
                "Widget",
                "w",
                ResourceAction::Applied,
                Health::Suspended,
                "",
            )],
            None,
        );
        assert_eq!(s.health, Health::Suspended);
        assert_eq!(s.message, "widget/w: Suspended");
    }

    #[test]
    fn drift_is_out_of_sync_and_named() {
        let s = summarize(
            &[
                result(
                    "Deployment",
                    "web",
                    ResourceAction::Drifted,
                    Health::Healthy,
                    "drifted from Git: spec.replicas",
                ),
                result(
                    "Service",
                    "web",
                    ResourceAction::Applied,
                    Health::Healthy,
                    "",
                ),
            ],
            None,
        );
        assert_eq!((s.sync, s.health), (SyncState::OutOfSync, Health::Healthy));
        assert_eq!(s.message, "deployment/web: drifted from Git: spec.replicas");
    }

    #[test]
    fn expiring_progress_degrades_only_progressing() {
        let mut resources = vec![
            result(
                "Deployment",
                "a",
                ResourceAction::Applied,
                Health::Progressing,
                "1/3 replicas available",
            ),
            result(
                "Deployment",
                "b",
                ResourceAction::Applied,
                Health::Healthy,
                "3/3",
            ),
            result(
                "Ingress",
                "i",
                ResourceAction::Applied,
                Health::Progressing,
                "",
            ),
        ];
        expire_progressing(&mut resources, Duration::from_secs(300));
        assert_eq!(resources[0].health, Health::Degraded);
        assert_eq!(
            resources[0].message,
            "still progressing after 300s: 1/3 replicas available"
        );
        assert_eq!(resources[1].health, Health::Healthy);
        assert_eq!(resources[2].message, "still progressing after 300s");
    }

    #[test]
    fn skipped_waves_are_out_of_sync_and_named_after_the_failure() {
        let migrate = result(
            "Job",
            "migrate",
            ResourceAction::Failed,
            Health::Unknown,
            "rejected",
        );
        let skipped = |message| {
            result(
                "Deployment",
                "web",
                ResourceAction::Skipped,
                Health::Unknown,
                message,
            )
        };
        let applied = result(
            "ConfigMap",
            "cfg",
            ResourceAction::Applied,
            Health::Healthy,
            "",
        );
        let s = summarize(
            &[
                migrate.clone(),
                skipped("not applied: wave 0 stops on failure"),
                applied,
            ],
            None,
        );
        assert_eq!(s.sync, SyncState::OutOfSync);
        assert_eq!(
            s.health,
            Health::Unknown,
            "the failed object's health counts"
        );
        assert_eq!(
            s.message,
            "1 of 3 resources failed: job/migrate: rejected; deployment/web: not applied: wave 0 stops on failure"
        );
        let nothing_applied = summarize(&[migrate, skipped("skipped")], None);
        assert_eq!(nothing_applied.sync, SyncState::Failed);
    }

    #[test]
    fn objects_left_for_pruning_are_out_of_sync_but_do_not_change_health() {
        let s = summarize(
            &[
                result(
                    "Deployment",
                    "web",
                    ResourceAction::Unchanged,
                    Health::Healthy,
                    "",
                ),
                result(
                    "ConfigMap",
                    "old",
                    ResourceAction::RequiresPruning,
                    Health::Unknown,
                    "requires pruning: no longer in Git, and the App's sync policy has prune off",
                ),
            ],
            None,
        );
        assert_eq!((s.sync, s.health), (SyncState::OutOfSync, Health::Healthy));
        assert_eq!(
            s.message,
            "configmap/old: requires pruning: no longer in Git, and the App's sync policy has prune off"
        );
        let only_leftovers = summarize(
            &[result(
                "ConfigMap",
                "old",
                ResourceAction::RequiresPruning,
                Health::Unknown,
                "x",
            )],
            None,
        );
        assert_eq!(only_leftovers.sync, SyncState::OutOfSync);
    }

    fn status_with(resources: Vec<ResourceResult>) -> TargetStatus {
        TargetStatus {
            chart_digest: String::new(),
            target_id: "web".into(),
            revision: "0123456789abcdef0123456789abcdef01234567".into(),
            spec_generation: 1,
            sync: SyncState::Synced,
            health: Health::Healthy,
            message: format!("{} resources synced and healthy", resources.len()),
            resources,
            observed_at_unix: 1,
            trace: [("traceparent".to_owned(), "00-abc-def-01".to_owned())].into(),
        }
    }

    fn many(n: usize, message: &str) -> Vec<ResourceResult> {
        (0..n)
            .map(|i| {
                result(
                    "ConfigMap",
                    &format!("settings-{i:05}"),
                    ResourceAction::Applied,
                    Health::Healthy,
                    message,
                )
            })
            .collect()
    }

    #[test]
    fn a_report_within_the_limits_is_sent_as_it_is() {
        // A real 2,000-object App, some of whose objects say something.
        let mut resources = many(2000, "");
        for r in resources.iter_mut().step_by(10) {
            r.message = "1/1 replicas available".into();
        }
        let status = status_with(resources);
        assert_eq!(bounded(status.clone()), status);
    }

    #[test]
    fn long_strings_are_cut_on_a_character_boundary() {
        let mut status = status_with(many(2, &"é".repeat(5000)));
        status.resources[1].object.name = "n".repeat(2000);
        status.message = "ü".repeat(10_000);
        status.trace = (0..20).map(|i| (format!("k{i}"), "v".into())).collect();
        let b = bounded(status);
        assert!(b.message.len() <= MAX_MESSAGE_BYTES && b.message.ends_with(CUT));
        for r in &b.resources {
            assert!(
                r.message.len() <= MAX_RESOURCE_MESSAGE_BYTES,
                "{}",
                r.message.len()
            );
            assert!(r.message.ends_with(CUT));
        }
        assert_eq!(b.resources[1].object.name.len(), MAX_FIELD_BYTES);
        assert!(
            b.trace.is_empty(),
            "a trace context over the limits is dropped"
        );
    }

    #[test]
    fn beyond_the_limits_resources_are_left_out_problems_last_and_the_message_says_so() {
        // 10,000 objects with long messages: 25 MiB, six times the link's message limit.
        let mut resources = many(10_000, &"x".repeat(2500));
        for i in (0..10_000).step_by(97) {
            resources[i].action = ResourceAction::Failed;
            resources[i].health = Health::Missing;
        }
        let failed = resources
            .iter()
            .filter(|r| r.action == ResourceAction::Failed)
            .count();
        let b = bounded(status_with(resources));
        assert!(b.resources.len() <= MAX_RESOURCES);
        let size: usize = b.resources.iter().map(encoded_bound).sum();
        assert!(size <= MAX_REPORT_BYTES - REPORT_HEADER_BYTES, "{size}");
        assert_eq!(
            b.resources
                .iter()
                .filter(|r| r.action == ResourceAction::Failed)
                .count(),
            failed,
            "every failure is listed"
        );
        let names: Vec<&str> = b.resources.iter().map(|r| r.object.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "what is listed keeps its order");
        let left_out = 10_000 - b.resources.len();
        assert!(
            b.message.ends_with(&format!(
                "({left_out} of 10000 resources not listed: a report lists at most \
                 {MAX_RESOURCES} resources in {MAX_REPORT_BYTES} bytes)"
            )),
            "{}",
            b.message
        );
        assert!(b.message.starts_with("10000 resources"));
        assert!(b.message.len() <= MAX_MESSAGE_BYTES);

        // Too many small ones: the count is the limit.
        let b = bounded(status_with(many(MAX_RESOURCES + 1, "")));
        assert_eq!(b.resources.len(), MAX_RESOURCES);
        assert!(
            b.message.contains("(1 of 5001 resources not listed"),
            "{}",
            b.message
        );
    }
}
