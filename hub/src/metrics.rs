//! The hub's Prometheus metrics (`GET /metrics` on the HTTP listener), prefixed `gitfleet_`.
//!
//! Two kinds: counters and histograms the hub bumps as things happen (webhooks, polls, fetch
//! durations, status reports, errors), and gauges of the fleet's state, filled from a
//! [`FleetSnapshot`] at each scrape (connected spokes, Targets by sync state and health, store
//! size, rollout progress, Targets per App by sync state and health) so that they can never
//! drift from what the hub knows; and `gitfleet_build_info`, always 1, whose labels say which
//! build runs.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::model::{HealthState, SyncState};

/// What became of a webhook request.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum WebhookOutcome {
    /// Verified, and at least one Repo fetches now.
    accepted,
    /// Bad signature or token.
    unauthorized,
    /// Unreadable payload, or one without a repository.
    bad_request,
    /// Verified, but no Repo follows that repository.
    unknown_repository,
    /// Unknown provider, or webhooks are off on this hub.
    not_found,
    /// The body was larger than `--webhook-max-body-bytes`.
    too_large,
}

/// What one attempt of a notification delivery came to.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum NotificationOutcome {
    /// The receiver accepted it (2xx).
    delivered,
    /// Not accepted; tried again later.
    failed,
    /// Not accepted, and dropped: refused for good or retried to the bound.
    given_up,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    pub notifier: String,
    pub outcome: NotificationOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub provider: String,
    pub outcome: WebhookOutcome,
}

/// What one poll of a Repo found.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum PollOutcome {
    /// The ref moved.
    changed,
    unchanged,
    failed,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PollLabels {
    pub repo: String,
    pub outcome: PollOutcome,
}

/// Where an error happened, for `gitfleet_errors_total{kind}`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ErrorKind {
    /// A Git fetch of a Repo failed.
    fetch,
    /// A webhook was refused (signature, payload).
    webhook,
    /// A spoke's status report could not be stored.
    status_ingest,
    /// The store failed (read, write, flush).
    store,
    /// A spoke sent a malformed or oversized message (its stream is closed), or a status
    /// report over the report limits (a summary of it is kept).
    link,
}

/// Why a spoke's session ended, for `gitfleet_link_sessions_ended_total{reason}`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum SessionEndKind {
    /// The spoke ended its stream.
    spoke_closed,
    /// The connection broke (reset, keepalive timeout, lost).
    transport,
    /// The spoke sent a malformed or oversized message.
    malformed,
    /// The hub refused a message.
    refused,
    /// The spoke stopped reading its stream.
    spoke_gone,
    replaced,
    revoked,
    shutdown,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionEndLabels {
    reason: SessionEndKind,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: ErrorKind,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    sync: String,
    health: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppTargetLabels {
    app: String,
    sync: String,
    health: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabels {
    app: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutLabels {
    app: String,
    state: String,
}

/// The fleet as the hub sees it at one scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetSnapshot {
    /// Registered clusters (not revoked, not waiting for approval).
    pub clusters: usize,
    /// Of those, the ones with a live stream heard from within the heartbeat grace.
    pub connected: usize,
    /// Every Target's App and last reported sync state and health (`Unknown` before any
    /// report).
    pub targets: Vec<(String, SyncState, HealthState)>,
    /// Every App's current (or last) rollout.
    pub rollouts: Vec<(String, RolloutProgress)>,
}

/// How far one App's rollout is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolloutProgress {
    /// Index of the current wave (0 for the first).
    pub wave: usize,
    pub waves: usize,
    pub paused: bool,
    /// Targets not yet told about the new revision.
    pub pending: usize,
    /// Told, not healthy at it yet.
    pub progressing: usize,
    pub healthy: usize,
    /// Failed at the revision (tolerated ones included).
    pub failed: usize,
    /// On clusters that are not connected: state unknown.
    pub disconnected: usize,
}

const ROLLOUT_STATES: [&str; 5] = [
    "pending",
    "progressing",
    "healthy",
    "failed",
    "disconnected",
];

pub struct HubMetrics {
    registry: Registry,
    store_dir: Option<PathBuf>,
    webhooks: Family<WebhookLabels, Counter>,
    notifications: Family<NotificationLabels, Counter>,
    polls: Family<PollLabels, Counter>,
    fetch_duration: Histogram,
    dispatch_latency: Histogram,
    status_reports: Counter,
    fleet_reads: Counter,
    errors: Family<ErrorLabels, Counter>,
    sessions_ended: Family<SessionEndLabels, Counter>,
    clusters: Gauge,
    connected: Gauge,
    targets: Family<TargetLabels, Gauge>,
    app_targets: Family<AppTargetLabels, Gauge>,
    store_bytes: Gauge,
    rollout_wave: Family<AppLabels, Gauge>,
    rollout_waves: Family<AppLabels, Gauge>,
    rollout_paused: Family<AppLabels, Gauge>,
    rollout_targets: Family<RolloutLabels, Gauge>,
    leader: Gauge,
    /// One scrape at a time refills the snapshot gauges.
    scrape: Mutex<()>,
}

impl std::fmt::Debug for HubMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubMetrics").finish_non_exhaustive()
    }
}

impl Default for HubMetrics {
    fn default() -> Self {
        Self::new(None)
    }
}

impl HubMetrics {
    /// `store_dir`: the sled directory whose size `gitfleet_store_size_bytes` reports.
    pub fn new(store_dir: Option<PathBuf>) -> Self {
        let mut registry = Registry::with_prefix("gitfleet");
        let webhooks = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhooks",
            "Push webhooks received, by provider and outcome",
            webhooks.clone(),
        );
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "notification_attempts",
            "Notification delivery attempts, by Notifier and outcome",
            notifications.clone(),
        );
        let polls = Family::<PollLabels, Counter>::default();
        registry.register(
            "polls",
            "Fetches of a Repo (timer, webhook or change of spec), by outcome",
            polls.clone(),
        );
        let fetch_duration = Histogram::new(exponential_buckets(0.01, 2.0, 15));
        registry.register_with_unit(
            "git_fetch_duration",
            "Time to fetch a Repo and resolve its ref",
            Unit::Seconds,
            fetch_duration.clone(),
        );
        // Fine below a second, where the fan-out goal lies.
        let dispatch_latency = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
            30.0, 60.0,
        ]);
        registry.register_with_unit(
            "dispatch_latency",
            "From the start of the fetch that found a commit to its desired state handed to a \
             connected spoke's stream, per cluster",
            Unit::Seconds,
            dispatch_latency.clone(),
        );
        let status_reports = Counter::default();
        registry.register(
            "status_reports",
            "Status reports from spokes stored (duplicates included)",
            status_reports.clone(),
        );
        let fleet_reads = Counter::default();
        registry.register(
            "metrics_fleet_reads",
            "Times a scrape read the fleet (clusters, Targets, every rollout's progress); \
             scrapes in between are answered from the last read",
            fleet_reads.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register("errors", "Errors, by where they happened", errors.clone());
        let sessions_ended = Family::<SessionEndLabels, Counter>::default();
        registry.register(
            "link_sessions_ended",
            "Spoke sessions that ended, by why (spoke_closed, transport, malformed, refused, \
             spoke_gone, replaced, revoked, shutdown)",
            sessions_ended.clone(),
        );
        // Every kind and reason is exposed from the start, at 0: an alert on `increase(...)`
        // then sees the first one, and a dashboard shows the series before anything went wrong.
        for kind in [
            ErrorKind::fetch,
            ErrorKind::webhook,
            ErrorKind::status_ingest,
            ErrorKind::store,
            ErrorKind::link,
        ] {
            let _ = errors.get_or_create(&ErrorLabels { kind });
        }
        for reason in [
            SessionEndKind::spoke_closed,
            SessionEndKind::transport,
            SessionEndKind::malformed,
            SessionEndKind::refused,
            SessionEndKind::spoke_gone,
            SessionEndKind::replaced,
            SessionEndKind::revoked,
            SessionEndKind::shutdown,
        ] {
            let _ = sessions_ended.get_or_create(&SessionEndLabels { reason });
        }
        let clusters = Gauge::default();
        registry.register(
            "clusters",
            "Registered clusters (not revoked, not waiting for approval)",
            clusters.clone(),
        );
        let connected = Gauge::default();
        registry.register(
            "spokes_connected",
            "Clusters with a live link heard from within the heartbeat grace",
            connected.clone(),
        );
        let targets = Family::<TargetLabels, Gauge>::default();
        registry.register(
            "targets",
            "Targets by last reported sync state and health",
            targets.clone(),
        );
        let app_targets = Family::<AppTargetLabels, Gauge>::default();
        registry.register(
            "app_targets",
            "An App's Targets by last reported sync state and health: alert on \
             gitfleet_app_targets{health=\"Degraded\"} > 0 per App",
            app_targets.clone(),
        );
        registry.register(
            "build",
            "The build of the hub that runs (its labels; always 1)",
            prometheus_client::metrics::info::Info::new(vec![(
                "version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            )]),
        );
        let store_bytes = Gauge::default();
        registry.register_with_unit(
            "store_size",
            "Size of the hub's store on disk",
            Unit::Bytes,
            store_bytes.clone(),
        );
        let rollout_wave = Family::<AppLabels, Gauge>::default();
        registry.register(
            "rollout_wave",
            "Index of the current wave of an App's rollout (0 for the first)",
            rollout_wave.clone(),
        );
        let rollout_waves = Family::<AppLabels, Gauge>::default();
        registry.register(
            "rollout_waves",
            "Number of waves of an App's rollout",
            rollout_waves.clone(),
        );
        let rollout_paused = Family::<AppLabels, Gauge>::default();
        registry.register(
            "rollout_paused",
            "1 while an App's rollout is paused",
            rollout_paused.clone(),
        );
        let rollout_targets = Family::<RolloutLabels, Gauge>::default();
        registry.register(
            "rollout_targets",
            "Targets of an App's rollout by state (pending, progressing, healthy, failed, disconnected)",
            rollout_targets.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "hub_leader",
            "1 on the hub replica that leads (follows Git, drives rollouts, answers admin calls), 0 on the others",
            leader.clone(),
        );
        Self {
            leader,
            registry,
            store_dir,
            webhooks,
            notifications,
            polls,
            fetch_duration,
            dispatch_latency,
            status_reports,
            fleet_reads,
            errors,
            sessions_ended,
            clusters,
            connected,
            targets,
            app_targets,
            store_bytes,
            rollout_wave,
            rollout_waves,
            rollout_paused,
            rollout_targets,
            scrape: Mutex::new(()),
        }
    }

    /// Whether this replica leads (see `gitfleet_hub_leader`).
    pub fn set_leader(&self, leads: bool) {
        self.leader.set(i64::from(leads));
    }

    /// One attempt of a delivery of `notifier`.
    pub fn notification(&self, notifier: &str, outcome: NotificationOutcome) {
        self.notifications
            .get_or_create(&NotificationLabels {
                notifier: notifier.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn webhook(&self, provider: &str, outcome: WebhookOutcome) {
        self.webhooks
            .get_or_create(&WebhookLabels {
                provider: provider.to_owned(),
                outcome,
            })
            .inc();
    }

    /// One fetch of `repo` that took `took`.
    pub fn poll(&self, repo: &str, outcome: PollOutcome, took: Duration) {
        self.polls
            .get_or_create(&PollLabels {
                repo: repo.to_owned(),
                outcome,
            })
            .inc();
        self.fetch_duration.observe(took.as_secs_f64());
        if outcome == PollOutcome::failed {
            self.error(ErrorKind::fetch);
        }
    }

    /// A revision found by a fetch that started `took` ago reached a spoke's stream.
    pub fn dispatched(&self, took: Duration) {
        self.dispatch_latency.observe(took.as_secs_f64());
    }

    pub fn status_report(&self) {
        self.status_reports.inc();
    }

    /// A scrape read the fleet (see `http::FleetGauges`).
    pub fn fleet_read(&self) {
        self.fleet_reads.inc();
    }

    pub fn session_ended(&self, reason: SessionEndKind) {
        self.sessions_ended
            .get_or_create(&SessionEndLabels { reason })
            .inc();
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors.get_or_create(&ErrorLabels { kind }).inc();
    }

    fn set_rollout(&self, app: &str, progress: &RolloutProgress) {
        let labels = AppLabels {
            app: app.to_owned(),
        };
        self.rollout_wave
            .get_or_create(&labels)
            .set(count(progress.wave));
        self.rollout_waves
            .get_or_create(&labels)
            .set(count(progress.waves));
        self.rollout_paused
            .get_or_create(&labels)
            .set(i64::from(progress.paused));
        let counts = [
            progress.pending,
            progress.progressing,
            progress.healthy,
            progress.failed,
            progress.disconnected,
        ];
        for (state, n) in ROLLOUT_STATES.iter().zip(counts) {
            self.rollout_targets
                .get_or_create(&RolloutLabels {
                    app: app.to_owned(),
                    state: (*state).to_owned(),
                })
                .set(count(n));
        }
    }

    /// The OpenMetrics text of every metric, the fleet gauges taken from `snapshot`.
    pub fn encode(&self, snapshot: &FleetSnapshot) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.clusters.set(count(snapshot.clusters));
        self.connected.set(count(snapshot.connected));
        self.targets.clear();
        self.app_targets.clear();
        for (app, sync, health) in &snapshot.targets {
            let (sync, health) = (format!("{sync:?}"), format!("{health:?}"));
            self.app_targets
                .get_or_create(&AppTargetLabels {
                    app: app.clone(),
                    sync: sync.clone(),
                    health: health.clone(),
                })
                .inc();
            self.targets
                .get_or_create(&TargetLabels { sync, health })
                .inc();
        }
        // Apps deleted since the last scrape disappear.
        self.rollout_wave.clear();
        self.rollout_waves.clear();
        self.rollout_paused.clear();
        self.rollout_targets.clear();
        for (app, progress) in &snapshot.rollouts {
            self.set_rollout(app, progress);
        }
        if let Some(dir) = &self.store_dir {
            self.store_bytes
                .set(i64::try_from(dir_size(dir)).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Bytes of the files under `dir` (0 when it cannot be read).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn fleet_gauges_follow_the_snapshot_of_each_scrape() {
        let m = HubMetrics::default();
        let text = m.encode(&FleetSnapshot {
            clusters: 3,
            connected: 2,
            targets: vec![
                ("web".to_owned(), SyncState::Synced, HealthState::Healthy),
                ("db".to_owned(), SyncState::Synced, HealthState::Healthy),
                ("web".to_owned(), SyncState::Synced, HealthState::Healthy),
                ("web".to_owned(), SyncState::Failed, HealthState::Unknown),
            ],
            rollouts: Vec::new(),
        });
        assert_eq!(
            line(&text, "gitfleet_clusters "),
            Some("gitfleet_clusters 3")
        );
        assert_eq!(
            line(&text, "gitfleet_spokes_connected "),
            Some("gitfleet_spokes_connected 2")
        );
        assert_eq!(
            line(&text, "gitfleet_targets{sync=\"Synced\""),
            Some("gitfleet_targets{sync=\"Synced\",health=\"Healthy\"} 3")
        );
        for expected in [
            "gitfleet_app_targets{app=\"web\",sync=\"Synced\",health=\"Healthy\"} 2",
            "gitfleet_app_targets{app=\"web\",sync=\"Failed\",health=\"Unknown\"} 1",
            "gitfleet_app_targets{app=\"db\",sync=\"Synced\",health=\"Healthy\"} 1",
            concat!(
                "gitfleet_build_info{version=\"",
                env!("CARGO_PKG_VERSION"),
                "\"} 1"
            ),
        ] {
            assert!(text.lines().any(|l| l == expected), "{expected} in\n{text}");
        }
        // A state nobody is in any more disappears instead of keeping its last count.
        let text = m.encode(&FleetSnapshot {
            clusters: 3,
            connected: 3,
            targets: vec![("web".to_owned(), SyncState::Synced, HealthState::Healthy)],
            rollouts: Vec::new(),
        });
        assert_eq!(line(&text, "gitfleet_targets{sync=\"Failed\""), None);
        assert!(!text.contains("app=\"db\""), "{text}");
        assert!(
            !text.contains("gitfleet_app_targets{app=\"web\",sync=\"Failed\""),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn events_count_and_rollouts_report_progress() {
        let m = HubMetrics::default();
        m.webhook("github", WebhookOutcome::accepted);
        m.webhook("github", WebhookOutcome::accepted);
        m.poll("platform", PollOutcome::failed, Duration::from_millis(30));
        m.status_report();
        let rollouts = vec![(
            "web".to_owned(),
            RolloutProgress {
                wave: 1,
                waves: 3,
                paused: false,
                pending: 4,
                progressing: 1,
                healthy: 2,
                failed: 0,
                disconnected: 0,
            },
        )];
        let text = m.encode(&FleetSnapshot {
            rollouts,
            ..FleetSnapshot::default()
        });
        for expected in [
            "gitfleet_webhooks_total{provider=\"github\",outcome=\"accepted\"} 2",
            "gitfleet_polls_total{repo=\"platform\",outcome=\"failed\"} 1",
            "gitfleet_errors_total{kind=\"fetch\"} 1",
            "gitfleet_errors_total{kind=\"store\"} 0",
            "gitfleet_link_sessions_ended_total{reason=\"revoked\"} 0",
            "gitfleet_git_fetch_duration_seconds_count 1",
            "gitfleet_status_reports_total 1",
            "gitfleet_rollout_wave{app=\"web\"} 1",
            "gitfleet_rollout_targets{app=\"web\",state=\"pending\"} 4",
        ] {
            assert!(text.lines().any(|l| l == expected), "{expected} in\n{text}");
        }
        // The App is gone: so are its series.
        let text = m.encode(&FleetSnapshot::default());
        assert!(!text.contains("app=\"web\""), "{text}");
    }

    #[test]
    fn the_store_size_is_the_size_of_its_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("a"), [0u8; 100]).expect("write");
        std::fs::write(dir.path().join("sub/b"), [0u8; 23]).expect("write");
        let m = HubMetrics::new(Some(dir.path().to_owned()));
        let text = m.encode(&FleetSnapshot::default());
        assert_eq!(
            line(&text, "gitfleet_store_size_bytes "),
            Some("gitfleet_store_size_bytes 123")
        );
    }
}
