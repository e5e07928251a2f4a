//! What in a Target's reports is worth an event in the App's history. Pure: two reports in,
//! events out.

use crate::model::{HealthState, ReportSummary, SyncState, TargetReport};

/// The events a new report makes, against the Target's previous report: a revision synced, a
/// sync failing, drift, and health turning Healthy, Degraded, Missing or Suspended. Reports that
/// only repeat, or pass through Progressing and Unknown, make none.
pub fn target_events(
    previous: Option<&ReportSummary>,
    report: &TargetReport,
) -> Vec<(&'static str, String)> {
    let short = short(&report.revision);
    let same_revision = previous.is_some_and(|p| p.revision == report.revision);
    let was = |sync: SyncState| same_revision && previous.is_some_and(|p| p.sync == sync);
    let mut out = Vec::new();
    match report.sync {
        SyncState::Synced if !was(SyncState::Synced) && !was(SyncState::OutOfSync) => {
            out.push(("Synced", format!("synced at {short}")));
        }
        SyncState::Failed if !was(SyncState::Failed) => {
            out.push((
                "SyncFailed",
                with_message(format!("sync of {short} failed"), report),
            ));
        }
        SyncState::OutOfSync if !was(SyncState::OutOfSync) => {
            out.push((
                "Drifted",
                with_message(format!("out of sync at {short}"), report),
            ));
        }
        _ => {}
    }
    let health_was = |h: HealthState| same_revision && previous.is_some_and(|p| p.health == h);
    // While syncing, the health a spoke reports is still that of what it is leaving.
    if report.sync == SyncState::Syncing {
        return out;
    }
    let health = match report.health {
        HealthState::Healthy => Some(("Healthy", format!("healthy at {short}"))),
        HealthState::Degraded => Some((
            "Degraded",
            with_message(format!("degraded at {short}"), report),
        )),
        HealthState::Missing => Some((
            "Missing",
            with_message(format!("objects missing at {short}"), report),
        )),
        HealthState::Suspended => Some(("Suspended", format!("suspended at {short}"))),
        HealthState::Progressing | HealthState::Unknown => None,
    };
    if let Some(e) = health
        && !health_was(report.health)
    {
        out.push(e);
    }
    out
}

fn with_message(what: String, report: &TargetReport) -> String {
    if report.message.is_empty() {
        what
    } else {
        format!("{what}: {}", report.message)
    }
}

fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(revision: &str, sync: SyncState, health: HealthState) -> TargetReport {
        TargetReport {
            cluster: "eu-1".into(),
            app: "web".into(),
            revision: revision.into(),
            sync,
            health,
            message: "deploy/web: CrashLoopBackOff".into(),
            ..Default::default()
        }
    }

    fn kinds(events: &[(&'static str, String)]) -> Vec<&'static str> {
        events.iter().map(|(k, _)| *k).collect()
    }

    #[test]
    fn a_first_healthy_sync_is_two_events() {
        let r = report("aaaaaaaaaa", SyncState::Synced, HealthState::Healthy);
        let e = target_events(None, &r);
        assert_eq!(kinds(&e), ["Synced", "Healthy"]);
        assert_eq!(e[0].1, "synced at aaaaaaa");
    }

    #[test]
    fn repeating_a_report_is_no_event() {
        let r = report("aaaaaaaaaa", SyncState::Synced, HealthState::Healthy);
        assert!(target_events(Some(&(&r).into()), &r).is_empty());
    }

    #[test]
    fn a_new_revision_syncing_again_is_recorded() {
        let old = report("aaaaaaaaaa", SyncState::Synced, HealthState::Healthy);
        let new = report("bbbbbbbbbb", SyncState::Synced, HealthState::Healthy);
        assert_eq!(
            kinds(&target_events(Some(&(&old).into()), &new)),
            ["Synced", "Healthy"]
        );
    }

    #[test]
    fn degrading_carries_the_reason() {
        let old = report("aaaaaaaaaa", SyncState::Synced, HealthState::Progressing);
        let new = report("aaaaaaaaaa", SyncState::Synced, HealthState::Degraded);
        let e = target_events(Some(&(&old).into()), &new);
        assert_eq!(kinds(&e), ["Degraded"]);
        assert_eq!(e[0].1, "degraded at aaaaaaa: deploy/web: CrashLoopBackOff");
    }

    #[test]
    fn health_carried_into_a_new_sync_is_not_an_event() {
        let old = report("aaaaaaaaaa", SyncState::Synced, HealthState::Degraded);
        let new = report("bbbbbbbbbb", SyncState::Syncing, HealthState::Degraded);
        assert!(target_events(Some(&(&old).into()), &new).is_empty());
        let synced = report("bbbbbbbbbb", SyncState::Synced, HealthState::Healthy);
        assert_eq!(
            kinds(&target_events(Some(&(&new).into()), &synced)),
            ["Synced", "Healthy"]
        );
    }

    #[test]
    fn progressing_and_unknown_are_not_events() {
        let old = report("aaaaaaaaaa", SyncState::Syncing, HealthState::Unknown);
        let new = report("aaaaaaaaaa", SyncState::Syncing, HealthState::Progressing);
        assert!(target_events(Some(&(&old).into()), &new).is_empty());
    }

    #[test]
    fn a_failed_sync_and_drift_are_events_once() {
        let failed = report("aaaaaaaaaa", SyncState::Failed, HealthState::Unknown);
        assert_eq!(kinds(&target_events(None, &failed)), ["SyncFailed"]);
        assert!(target_events(Some(&(&failed).into()), &failed).is_empty());
        let synced = report("aaaaaaaaaa", SyncState::Synced, HealthState::Unknown);
        let drifted = report("aaaaaaaaaa", SyncState::OutOfSync, HealthState::Unknown);
        assert_eq!(
            kinds(&target_events(Some(&(&synced).into()), &drifted)),
            ["Drifted"]
        );
        // Healed: back to Synced at the same revision is not a new sync event.
        assert!(target_events(Some(&(&drifted).into()), &synced).is_empty());
    }
}
