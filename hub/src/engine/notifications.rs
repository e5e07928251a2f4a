//! Notifications: which Notifiers each recorded event goes to (queued with the event, in the
//! same flush), and the delivery worker that sends them, on the leader only, at least once:
//! a delivery leaves the durable queue only once a receiver accepted it (2xx) or it was given
//! up (refused for good, or retried [`RetryPolicy::max_attempts`] times with exponential
//! backoff and jitter), and every outcome shows on the Notifier's status (`notifier list`).
//! The decisions (matching, requests, signatures, backoff) are `gitfleet_core::notify`'s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gitfleet_core::notify::{
    self, Answer, Delivery, EventFacts, EventType, Next, Notification, NotifierStatus, RetryPolicy,
};
use gitfleet_support::fetch::{FetchError, Fetcher};
use tracing::{Instrument as _, debug, info, info_span, warn};

use super::{Engine, EngineError};
use crate::fleet::rollout::RolloutKind;
use crate::metrics::NotificationOutcome;
use crate::model::EventRecord;
use crate::pki::now_unix;
use crate::resources::{DEFAULT_PROJECT, Kind, Notifier, Resource};
use crate::store::Store;

/// How often the worker looks at the queue when nothing woke it (deliveries another replica
/// queued arrive through the store's watch, without a wake).
const RESYNC: Duration = Duration::from_secs(1);
/// Deliveries of one Notifier sent per round, at most.
const ROUND: usize = 32;
/// Bytes of a receiver's answer read (for the error shown when it refuses).
const MAX_ANSWER_BYTES: usize = 4096;
/// Characters of a receiver's answer kept in an error.
const ANSWER_SHOWN: usize = 200;

/// How notifications are sent.
#[derive(Debug, Clone)]
pub struct NotificationConfig {
    /// The HTTP client: what it may contact (https, loopback only in tests), its timeout.
    pub fetcher: Fetcher,
    pub retry: RetryPolicy,
}

impl NotificationConfig {
    /// Whether `http://` to a loopback host may be used (tests).
    fn allow_loopback(&self) -> bool {
        self.fetcher.policy().allow_loopback
    }
}

/// One Notifier as `notifier list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifierView {
    pub name: String,
    /// Empty for a hub-wide Notifier.
    pub project: String,
    /// `webhook https://…`, `slack`, `github` (never a secret).
    pub sink: String,
    pub events: Vec<String>,
    pub status: NotifierStatus,
    /// Deliveries waiting (being retried, or not yet sent).
    pub pending: usize,
    /// The earliest next attempt of a waiting delivery (milliseconds since the epoch), 0 when
    /// none waits.
    pub next_attempt_ms: i64,
}

/// The deliveries `events` (just recorded, with their ids) make: one per event and Notifier
/// that asks for it, with what the hub knows of the event now (its App's Project and Repo,
/// the rollout's commit, the cluster's labels). From memory only.
pub(super) fn deliveries_for(store: &Store, events: &[EventRecord], now: i64) -> Vec<Delivery> {
    let mut out = Vec::new();
    let typed: Vec<(&EventRecord, EventType)> = events
        .iter()
        .filter_map(|e| notify::event_type(e).map(|t| (e, t)))
        .collect();
    if typed.is_empty() {
        return out;
    }
    let notifiers = store.notifiers();
    if notifiers.is_empty() {
        return out;
    }
    for (event, event_type) in typed {
        let notification = notification(store, event, event_type);
        let labels = match event.cluster.as_str() {
            "" => None,
            c => store.cluster(c).ok().flatten().map(|c| c.labels),
        };
        let facts = EventFacts {
            event_type,
            app: &event.app,
            project: &notification.project,
            cluster_labels: labels.as_ref(),
        };
        for n in &notifiers {
            if !notify::matches(&n.spec, &facts) {
                continue;
            }
            // A commit status without a commit cannot be set: not queued at all.
            let needs_commit = matches!(n.spec.sink(), Some(notify::Sink::CommitStatus(..)));
            if needs_commit && notification.commit.is_empty() {
                continue;
            }
            out.push(Delivery {
                notifier: n.metadata.name.clone(),
                notification: notification.clone(),
                created_unix: now,
                attempts: 0,
                next_attempt_ms: 0,
                last_error: String::new(),
            });
        }
    }
    out
}

/// `event` with what the hub knows of it now.
fn notification(store: &Store, event: &EventRecord, event_type: EventType) -> Notification {
    let app = match store.resource(Kind::App, &event.app) {
        Ok(Some(Resource::App(app))) => Some(app),
        _ => None,
    };
    let project = match (&app, event_type.is_fleet_wide()) {
        (_, true) => String::new(),
        (Some(app), false) => app.spec.project_name().to_owned(),
        (None, false) => DEFAULT_PROJECT.to_owned(),
    };
    let repo_url = app
        .as_ref()
        .and_then(|a| match store.resource(Kind::Repo, &a.spec.repo) {
            Ok(Some(Resource::Repo(r))) => Some(r.spec.url),
            _ => None,
        })
        .unwrap_or_default();
    let commit = match event_type {
        // The commit a rollback leaves is the one whose status it fails.
        EventType::RolloutRolledBack => store
            .rollout_shared(&event.app)
            .filter(|state| state.number == event.rollout)
            .and_then(|state| match &state.kind {
                RolloutKind::Rollback { from, .. } => Some(from.commit.clone()),
                _ => None,
            })
            .unwrap_or_default(),
        // A rollout event names the commit its rollout rolls out (a superseded one's too, though
        // the App's rollout is the newer one by the time it is queued).
        t if t.is_rollout() => event.commit.clone(),
        _ => String::new(),
    };
    Notification {
        event: event.clone(),
        event_type: Some(event_type),
        project,
        commit,
        repo_url,
    }
}

/// What one attempt came to.
enum Attempt {
    Delivered,
    /// Worth trying again later.
    Failed(String),
    /// Not worth trying again.
    Refused(String),
}

impl Engine {
    /// The Notifiers with what their deliveries did, by name.
    pub fn notifiers_view(&self) -> Vec<NotifierView> {
        let statuses = self.store.notifier_statuses();
        let mut pending: BTreeMap<String, (usize, i64)> = BTreeMap::new();
        for d in self.store.deliveries() {
            let entry = pending.entry(d.notifier.clone()).or_insert((0, i64::MAX));
            entry.0 += 1;
            entry.1 = entry.1.min(d.next_attempt_ms);
        }
        self.store
            .notifiers()
            .into_iter()
            .map(|n| {
                let name = n.metadata.name.clone();
                let (count, next) = pending.get(&name).copied().unwrap_or((0, 0));
                NotifierView {
                    project: n.spec.project.clone().unwrap_or_default(),
                    sink: n.spec.sink_text(),
                    events: n
                        .spec
                        .events
                        .iter()
                        .map(|e| e.as_str().to_owned())
                        .collect(),
                    status: statuses.get(&name).cloned().unwrap_or_default(),
                    pending: count,
                    next_attempt_ms: if count == 0 { 0 } else { next },
                    name,
                }
            })
            .collect()
    }

    /// The Project a stored Notifier belongs to, if it is a Project's.
    pub fn project_of_notifier(&self, name: &str) -> Option<String> {
        match self.store.resource(Kind::Notifier, name) {
            Ok(Some(Resource::Notifier(n))) => n.spec.project,
            _ => None,
        }
    }

    /// A field-path error for every Notifier in `resources` whose secret the credentials
    /// file does not have, or may not use for the Notifier's URL.
    pub(super) fn notifier_secret_errors(&self, resources: &[Resource]) -> Vec<String> {
        let allow_loopback = self.config.notifications.allow_loopback();
        resources
            .iter()
            .filter_map(|r| match r {
                Resource::Notifier(n) => {
                    secret_problem(&self.config.repo_credentials, n, allow_loopback)
                        .map(|problem| format!("notifier {:?}: {problem}", n.metadata.name))
                }
                _ => None,
            })
            .collect()
    }

    /// Sends the queued deliveries as they fall due, until the hub shuts down (see the
    /// module's documentation). Started by [`Engine::lead`]: only the leader delivers.
    pub(super) async fn deliver_notifications(self: Arc<Self>) {
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            if let Err(e) = self.record_freeze_ends().await {
                warn!(error = %e, "the ends of freezes not recorded");
            }
            let now_ms = now_millis();
            let (due, next) = due_rounds(self.store.deliveries(), now_ms);
            if !due.is_empty() {
                // What a delivery reports is durable before anyone hears of it.
                match self.store.flush().await {
                    Ok(()) => {
                        let rounds = due
                            .into_values()
                            .map(|deliveries| self.deliver_in_order(deliveries));
                        futures::future::join_all(rounds).await;
                        if let Err(e) = self.store.flush().await {
                            warn!(error = %e, "notification deliveries' outcomes not stored");
                        }
                        continue;
                    }
                    Err(e) => warn!(error = %e, "notifications wait: the store cannot flush"),
                }
            }
            let wait = next
                .map(|t| Duration::from_millis(u64::try_from(t - now_ms).unwrap_or(0)))
                .unwrap_or(RESYNC)
                .min(RESYNC);
            tokio::select! {
                () = self.bus.deliveries_queued() => {}
                () = tokio::time::sleep(wait) => {}
                () = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Sends one Notifier's due deliveries in event order, stopping at the first that fails
    /// (the receiver is likely down: the rest wait for its next attempt).
    async fn deliver_in_order(&self, deliveries: Vec<Delivery>) {
        for d in deliveries {
            if self.shutdown.is_cancelled() || !self.store.delivery_waits(&d) {
                return;
            }
            if !self.deliver(d).await {
                return;
            }
        }
    }

    /// One attempt of `delivery`, recorded; whether it is done with (delivered or given up).
    async fn deliver(&self, mut delivery: Delivery) -> bool {
        let notifier = match self.store.resource(Kind::Notifier, &delivery.notifier) {
            Ok(Some(Resource::Notifier(n))) => n,
            // Deleted meanwhile: its deliveries went with it.
            _ => return true,
        };
        let key = delivery.key();
        let attempt = self
            .attempt(&notifier, &delivery, &key)
            .instrument(info_span!("notify", notifier = %delivery.notifier, delivery = %key, attempt = delivery.attempts + 1))
            .await;
        let now = now_unix();
        delivery.attempts += 1;
        let mut status = self.store.notifier_status(&delivery.notifier);
        let (error, retryable) = match attempt {
            Attempt::Delivered => {
                status.delivered += 1;
                status.last_delivery_unix = now;
                status.last_delivery = key.clone();
                status.last_error.clear();
                status.last_error_unix = 0;
                self.store.record_attempt(&delivery, true, &status);
                self.config
                    .metrics
                    .notification(&delivery.notifier, NotificationOutcome::delivered);
                debug!(notifier = %delivery.notifier, delivery = %key, attempts = delivery.attempts, "notification delivered");
                return true;
            }
            Attempt::Failed(e) => (e, true),
            Attempt::Refused(e) => (e, false),
        };
        let jitter = rand::random::<f64>();
        match notify::after_failure(
            delivery.attempts,
            retryable,
            &self.config.notifications.retry,
            jitter,
        ) {
            Next::RetryIn(wait) => {
                delivery.next_attempt_ms =
                    now_millis() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2);
                delivery.last_error = error.clone();
                status.last_error = format!(
                    "{key}: attempt {} failed (trying again in {}): {error}",
                    delivery.attempts,
                    humantime::format_duration(Duration::from_secs(wait.as_secs().max(1)))
                );
                status.last_error_unix = now;
                warn!(notifier = %delivery.notifier, delivery = %key, attempts = delivery.attempts, retry_in = ?wait, error = %error, "notification not delivered");
                self.store.record_attempt(&delivery, false, &status);
                self.config
                    .metrics
                    .notification(&delivery.notifier, NotificationOutcome::failed);
                false
            }
            Next::GiveUp => {
                status.given_up += 1;
                status.last_error = format!(
                    "{key}: given up after {} attempt{}: {error}",
                    delivery.attempts,
                    if delivery.attempts == 1 { "" } else { "s" }
                );
                status.last_error_unix = now;
                warn!(notifier = %delivery.notifier, delivery = %key, attempts = delivery.attempts, error = %error, "notification given up");
                self.store.record_attempt(&delivery, true, &status);
                self.config
                    .metrics
                    .notification(&delivery.notifier, NotificationOutcome::given_up);
                // The next delivery may fare better (a refusal is about this one).
                true
            }
        }
    }

    /// Builds and sends the request; never logs nor returns a secret.
    async fn attempt(&self, notifier: &Notifier, delivery: &Delivery, key: &str) -> Attempt {
        let spec = &notifier.spec;
        let credentials = &self.config.repo_credentials;
        let secret = match spec.secret_ref() {
            Some((reference, path)) => match credentials.notifier_secrets.get(reference) {
                Some(s) => Some(s),
                None => {
                    return Attempt::Refused(format!(
                        "{path}: the hub's credentials file has no entry {reference:?} with a notifierSecret"
                    ));
                }
            },
            None => None,
        };
        let request = match notify::request(
            &notifier.metadata.name,
            spec,
            &delivery.notification,
            key,
            secret.map(|s| s.secret.as_str()),
        ) {
            Ok(r) => r,
            Err(e) => return Attempt::Refused(e.to_string()),
        };
        // A Slack URL from the credentials file is the secret: never shown.
        let shown = match (spec.sink(), spec.secret_ref()) {
            (Some(notify::Sink::Slack(_)), Some((reference, _))) => {
                format!("the Slack webhook URL of credentials entry {reference:?}")
            }
            _ => gitfleet_core::credential_scope::redacted(&request.url),
        };
        if let (Some(s), Some((reference, path))) = (secret, spec.secret_ref())
            && !notify::secret_allowed(
                &s.urls,
                &request.url,
                self.config.notifications.allow_loopback(),
            )
        {
            return Attempt::Refused(format!(
                "{path}: the credentials entry {reference:?} may not be used for {shown}: its urls are {}",
                s.urls.join(", ")
            ));
        }
        let mut headers = Vec::with_capacity(request.headers.len());
        for h in &request.headers {
            let (Ok(name), Ok(mut value)) = (
                http::HeaderName::from_bytes(h.name.as_bytes()),
                http::HeaderValue::from_str(&h.value),
            ) else {
                return Attempt::Refused(format!("header {} is not a valid header value", h.name));
            };
            value.set_sensitive(h.sensitive);
            headers.push((name, value));
        }
        let redacted = gitfleet_core::credential_scope::redacted(&request.url);
        let hide = |message: String| message.replace(&redacted, &shown);
        match self
            .config
            .notifications
            .fetcher
            .post(
                &request.url,
                &headers,
                request.body.into(),
                MAX_ANSWER_BYTES,
            )
            .await
        {
            Ok((status, body)) => match notify::classify(status) {
                Answer::Delivered => Attempt::Delivered,
                Answer::Retry => Attempt::Failed(answer_text(&shown, status, &body)),
                Answer::Refused => Attempt::Refused(answer_text(&shown, status, &body)),
            },
            // The policy refuses the address (or the URL): it will next time too.
            Err(e @ FetchError::Refused { .. }) => Attempt::Refused(hide(e.to_string())),
            Err(e) => Attempt::Failed(hide(e.to_string())),
        }
    }

    /// Records the end of every freeze that ended by time since (`FreezeEnded`): once each,
    /// under the write lock (freezes are written under it), flushed.
    async fn record_freeze_ends(&self) -> Result<(), EngineError> {
        let now = now_unix();
        let due = |f: &crate::fleet::freeze::Freeze| f.end_event_due(now).is_some();
        if !self.store.freezes().iter().any(due) {
            return Ok(());
        }
        let guard = self.write.lock().await;
        for mut freeze in self.store.freezes() {
            let Some(tell) = freeze.end_event_due(now) else {
                continue;
            };
            freeze.end_recorded = true;
            self.store.put_freeze(&freeze);
            if tell {
                self.record_freeze_event(
                    notify::FREEZE_ENDED_KIND,
                    format!(
                        "freeze {} of {} ended at {}",
                        freeze.name,
                        freeze.scope_text(),
                        crate::fleet::window::utc_text(freeze.until)
                    ),
                    "",
                )?;
            }
        }
        self.store.flush().await?;
        drop(guard);
        Ok(())
    }

    /// Records a freeze's start or end as an event (Notifiers of `FreezeStarted` and
    /// `FreezeEnded` are sent it). The caller flushes.
    pub(super) fn record_freeze_event(
        &self,
        kind: &str,
        message: String,
        by: &str,
    ) -> Result<(), EngineError> {
        self.bus.record(&mut [EventRecord {
            at_unix: now_unix(),
            kind: kind.to_owned(),
            message,
            by: by.to_owned(),
            ..Default::default()
        }])?;
        Ok(())
    }
}

/// The deliveries to send now, by Notifier (in event order, at most [`ROUND`] each), and when
/// the next one falls due. A Notifier with a failed delivery waiting for its next attempt sends
/// nothing else meanwhile: its receiver is likely down, and its deliveries stay in order.
fn due_rounds(
    waiting: Vec<Delivery>,
    now_ms: i64,
) -> (BTreeMap<String, Vec<Delivery>>, Option<i64>) {
    let mut blocked: BTreeMap<String, i64> = BTreeMap::new();
    for d in &waiting {
        if d.attempts > 0 && d.next_attempt_ms > now_ms {
            let until = blocked
                .entry(d.notifier.clone())
                .or_insert(d.next_attempt_ms);
            *until = (*until).min(d.next_attempt_ms);
        }
    }
    let mut due: BTreeMap<String, Vec<Delivery>> = BTreeMap::new();
    let mut next: Option<i64> = None;
    for d in waiting {
        let at = blocked
            .get(&d.notifier)
            .copied()
            .unwrap_or(d.next_attempt_ms)
            .max(d.next_attempt_ms);
        if at <= now_ms {
            let of = due.entry(d.notifier.clone()).or_default();
            if of.len() < ROUND {
                of.push(d);
            }
        } else {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    (due, next)
}

/// `URL: HTTP 500: first bytes of the answer`.
fn answer_text(url: &str, status: u16, body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(ANSWER_SHOWN)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        format!("{url}: HTTP {status}")
    } else {
        format!("{url}: HTTP {status}: {text}")
    }
}

/// Why the Notifier's secret cannot be used: its entry is missing or its `urls:` do not cover
/// the URL the spec gives (a URL known only when sending is checked then).
fn secret_problem(
    credentials: &crate::credentials::Credentials,
    notifier: &Notifier,
    allow_loopback: bool,
) -> Option<String> {
    let (reference, path) = notifier.spec.secret_ref()?;
    let Some(secret) = credentials.notifier_secrets.get(reference) else {
        return Some(format!(
            "{path}: the hub's credentials file (--repo-credentials) has no entry {reference:?} with a notifierSecret"
        ));
    };
    let (url, field) = notifier.spec.static_url()?;
    if notify::secret_allowed(&secret.urls, url, allow_loopback) {
        return None;
    }
    // A commit status API's base: the statuses are POSTed under it, where the entry's urls
    // may bind the secret more narrowly (one organisation's repositories).
    if matches!(notifier.spec.sink(), Some(notify::Sink::CommitStatus(..))) {
        let base = format!("{}/", url.trim_end_matches('/'));
        if secret.urls.iter().any(|p| p.starts_with(&base)) {
            return None;
        }
    }
    Some(format!(
        "{path}: the credentials entry {reference:?} may not be used for {:?} ({field}): its urls are {}",
        gitfleet_core::credential_scope::redacted(url),
        secret.urls.join(", ")
    ))
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Logged once when the worker starts, so that an operator sees the policy in force.
pub(super) fn log_policy(config: &NotificationConfig) {
    info!(
        base = ?config.retry.base,
        cap = ?config.retry.cap,
        max_attempts = config.retry.max_attempts,
        "notification deliveries: retried with backoff, then given up"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(notifier: &str, id: u64, attempts: u32, next_attempt_ms: i64) -> Delivery {
        Delivery {
            notifier: notifier.into(),
            notification: Notification {
                event: EventRecord {
                    id,
                    ..Default::default()
                },
                ..Default::default()
            },
            attempts,
            next_attempt_ms,
            ..Default::default()
        }
    }

    fn ids(due: &BTreeMap<String, Vec<Delivery>>, notifier: &str) -> Vec<u64> {
        due.get(notifier)
            .map(|ds| ds.iter().map(|d| d.notification.event.id).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_notifier_waiting_to_retry_sends_nothing_else_meanwhile() {
        let waiting = vec![
            // ops: 1 failed, retried at 5000; 2 and 3 queued behind it.
            delivery("ops", 1, 2, 5_000),
            delivery("ops", 2, 0, 0),
            delivery("ops", 3, 0, 0),
            // chat: nothing failed.
            delivery("chat", 4, 0, 0),
            delivery("chat", 5, 0, 0),
        ];
        let (due, next) = due_rounds(waiting.clone(), 1_000);
        assert_eq!(ids(&due, "ops"), Vec::<u64>::new());
        assert_eq!(ids(&due, "chat"), [4, 5]);
        assert_eq!(next, Some(5_000));
        // Once its retry is due, ops goes on in event order.
        let (due, next) = due_rounds(waiting, 5_000);
        assert_eq!(ids(&due, "ops"), [1, 2, 3]);
        assert_eq!(next, None);
    }

    #[test]
    fn a_round_is_bounded_and_the_next_due_time_is_the_earliest() {
        let mut waiting: Vec<Delivery> = (1..=40).map(|i| delivery("ops", i, 0, 0)).collect();
        waiting.push(delivery("later", 99, 0, 9_000));
        waiting.push(delivery("sooner", 98, 0, 3_000));
        let (due, next) = due_rounds(waiting, 1_000);
        assert_eq!(ids(&due, "ops").len(), ROUND);
        assert_eq!(ids(&due, "ops")[0], 1);
        assert!(!due.contains_key("later") && !due.contains_key("sooner"));
        assert_eq!(next, Some(3_000));
    }

    #[test]
    fn answers_are_shown_short_and_on_one_line() {
        assert_eq!(
            answer_text("https://h/x", 503, b""),
            "https://h/x: HTTP 503"
        );
        let long = format!("line one\nline two {}", "x".repeat(500));
        let text = answer_text("https://h/x", 500, long.as_bytes());
        assert!(
            text.starts_with("https://h/x: HTTP 500: line one line two x"),
            "{text}"
        );
        assert!(text.len() < 240, "{}", text.len());
    }
}
