//! The spoke's Prometheus metrics (`GET /metrics` on its HTTP listener), prefixed
//! `gitfleet_spoke_`: fetch, render and apply durations, reports and errors as they happen, and
//! at each scrape the link's state and this cluster's Targets by sync state and health.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::model::{Health, SyncState, TargetStatus};

/// A step of a sync, for the duration histograms and `errors_total{kind}`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Step {
    fetch,
    render,
    apply,
}

/// Where an error happened.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ErrorKind {
    /// The commit could not be fetched or read.
    fetch,
    /// The manifests could not be rendered (or a file was invalid).
    render,
    /// An object could not be applied.
    apply,
    /// A status report could not be persisted.
    report,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: ErrorKind,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    sync: String,
    health: String,
}

/// The link as it is at one scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkSnapshot {
    pub connected: bool,
    /// Ids of the Targets in the desired state this spoke holds.
    pub targets: BTreeSet<String>,
    /// Reports not yet acknowledged by the hub.
    pub unacked_reports: usize,
    pub desired_generation: u64,
}

pub struct SpokeMetrics {
    registry: Registry,
    fetch: Histogram,
    render: Histogram,
    apply: Histogram,
    reports: Counter,
    errors: Family<ErrorLabels, Counter>,
    connected: Gauge,
    targets: Family<TargetLabels, Gauge>,
    unacked: Gauge,
    generation: Gauge,
    /// The last reported state of each Target.
    last: Mutex<BTreeMap<String, (SyncState, Health)>>,
}

impl std::fmt::Debug for SpokeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpokeMetrics").finish_non_exhaustive()
    }
}

impl Default for SpokeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SpokeMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gitfleet_spoke");
        let mut histogram = |name: &str, help: &str| {
            let h = Histogram::new(exponential_buckets(0.005, 2.0, 16));
            registry.register_with_unit(name, help, Unit::Seconds, h.clone());
            h
        };
        let fetch = histogram(
            "fetch_duration",
            "Time to fetch a Target's commit and read its files",
        );
        let render = histogram(
            "render_duration",
            "Time to render a Target's manifests (kustomize included)",
        );
        let apply = histogram(
            "apply_duration",
            "Time to apply a Target's objects (server-side apply) and prune",
        );
        registry.register(
            "build",
            "The build of the spoke that runs (its labels; always 1)",
            prometheus_client::metrics::info::Info::new(vec![(
                "version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            )]),
        );
        let reports = Counter::default();
        registry.register(
            "status_reports",
            "Status reports handed to the link",
            reports.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register("errors", "Errors, by where they happened", errors.clone());
        let connected = Gauge::default();
        registry.register(
            "connected",
            "1 while the spoke has a live link to the hub",
            connected.clone(),
        );
        let targets = Family::<TargetLabels, Gauge>::default();
        registry.register(
            "targets",
            "Targets of this cluster by last reported sync state and health",
            targets.clone(),
        );
        let unacked = Gauge::default();
        registry.register(
            "unacked_reports",
            "Status reports the hub has not acknowledged yet",
            unacked.clone(),
        );
        let generation = Gauge::default();
        registry.register(
            "desired_generation",
            "Generation of the desired state this spoke holds",
            generation.clone(),
        );
        Self {
            registry,
            fetch,
            render,
            apply,
            reports,
            errors,
            connected,
            targets,
            unacked,
            generation,
            last: Mutex::new(BTreeMap::new()),
        }
    }

    /// One step of a sync took `took`.
    pub fn observe(&self, step: Step, took: Duration) {
        let h = match step {
            Step::fetch => &self.fetch,
            Step::render => &self.render,
            Step::apply => &self.apply,
        };
        h.observe(took.as_secs_f64());
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors.get_or_create(&ErrorLabels { kind }).inc();
    }

    /// A status report about a Target was sent.
    pub fn reported(&self, status: &TargetStatus) {
        self.reports.inc();
        self.lock()
            .insert(status.target_id.clone(), (status.sync, status.health));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (SyncState, Health)>> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The OpenMetrics text of every metric; Targets no longer desired are left out.
    pub fn encode(&self, link: &LinkSnapshot) -> String {
        self.connected.set(i64::from(link.connected));
        self.unacked
            .set(i64::try_from(link.unacked_reports).unwrap_or(i64::MAX));
        self.generation
            .set(i64::try_from(link.desired_generation).unwrap_or(i64::MAX));
        {
            let mut last = self.lock();
            last.retain(|id, _| link.targets.contains(id));
            self.targets.clear();
            for (sync, health) in last.values() {
                self.targets
                    .get_or_create(&TargetLabels {
                        sync: format!("{sync:?}"),
                        health: health.as_str().to_owned(),
                    })
                    .inc();
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: &str, sync: SyncState, health: Health) -> TargetStatus {
        TargetStatus {
            chart_digest: String::new(),
            target_id: id.into(),
            revision: "r".into(),
            spec_generation: 1,
            sync,
            health,
            message: String::new(),
            resources: Vec::new(),
            observed_at_unix: 0,
            trace: BTreeMap::new(),
        }
    }

    fn has(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn targets_count_by_their_last_report_while_desired() {
        let m = SpokeMetrics::new();
        m.reported(&status("web", SyncState::Syncing, Health::Progressing));
        m.reported(&status("web", SyncState::Synced, Health::Healthy));
        m.reported(&status("api", SyncState::Synced, Health::Healthy));
        m.reported(&status("old", SyncState::Failed, Health::Degraded));
        let link = LinkSnapshot {
            connected: true,
            targets: ["web", "api"].map(String::from).into(),
            unacked_reports: 1,
            desired_generation: 7,
        };
        let text = m.encode(&link);
        for line in [
            "gitfleet_spoke_connected 1",
            "gitfleet_spoke_targets{sync=\"Synced\",health=\"Healthy\"} 2",
            "gitfleet_spoke_status_reports_total 4",
            "gitfleet_spoke_unacked_reports 1",
            "gitfleet_spoke_desired_generation 7",
        ] {
            assert!(has(&text, line), "{line} in\n{text}");
        }
        assert!(!text.contains("Degraded"), "{text}");
    }

    #[test]
    fn durations_and_errors_are_recorded() {
        let m = SpokeMetrics::new();
        m.observe(Step::fetch, Duration::from_millis(20));
        m.observe(Step::apply, Duration::from_millis(3));
        m.error(ErrorKind::apply);
        let text = m.encode(&LinkSnapshot::default());
        for line in [
            "gitfleet_spoke_fetch_duration_seconds_count 1",
            "gitfleet_spoke_apply_duration_seconds_count 1",
            "gitfleet_spoke_render_duration_seconds_count 0",
            "gitfleet_spoke_errors_total{kind=\"apply\"} 1",
            "gitfleet_spoke_connected 0",
            concat!(
                "gitfleet_spoke_build_info{version=\"",
                env!("CARGO_PKG_VERSION"),
                "\"} 1"
            ),
        ] {
            assert!(has(&text, line), "{line} in\n{text}");
        }
    }
}
