//! Notifications, the pure parts: a Notifier's spec and its validation, which events a
//! Notifier is sent (event types, Apps, Projects, cluster labels), the HTTP request each sink
//! gets (a generic JSON webhook signed with HMAC-SHA256, Slack's incoming-webhook format, a
//! commit status on GitHub, GitLab or Gitea), where a secret may be used, and the retry
//! schedule. No IO: the hub resolves secrets, sends, stores and retries (see
//! `docs/notifications.md`).

use std::collections::BTreeMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::model::EventRecord;
use crate::resources::LabelSelector;

#[cfg(test)]
mod tests;

/// The header carrying the generic webhook's signature: `sha256=` and the hex HMAC-SHA256 of
/// the exact body under the Notifier's secret.
pub const SIGNATURE_HEADER: &str = "X-Gitfleet-Signature";
/// The header carrying a delivery's idempotency key: the same on every attempt of one
/// delivery, so that a receiver can drop the repeats at-least-once delivery may bring.
pub const DELIVERY_HEADER: &str = "X-Gitfleet-Delivery";
/// The header naming the event type (`RolloutStarted`, ...).
pub const EVENT_HEADER: &str = "X-Gitfleet-Event";

/// Longest description a commit status takes (GitHub's limit; GitLab's and Gitea's are
/// larger).
pub const MAX_STATUS_DESCRIPTION: usize = 140;

// ---------------------------------------------------------------------------------------------
// The spec

/// `spec` of a Notifier: exactly one sink, the events it is sent, and filters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotifierSpec {
    /// The Project the Notifier belongs to: it sees only events of that Project's Apps, and the
    /// Project's operators may apply it. Absent: a hub-wide Notifier (admins only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSink>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackSink>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<CommitStatusSink>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitlab: Option<CommitStatusSink>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitea: Option<CommitStatusSink>,
    /// Which events are sent (at least one).
    pub events: Vec<EventType>,
    /// Only events of these Apps; empty: every App.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<String>,
    /// Only events of Apps in these Projects; empty: every Project.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    /// Only Target events of clusters whose labels match; events of an App as a whole
    /// (rollouts) are not filtered by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<LabelSelector>,
}

/// A generic webhook: the event as JSON, POSTed to `url`, signed when `secretRef` names a
/// secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookSink {
    pub url: String,
    /// The credentials file entry whose `notifierSecret` signs the body (HMAC-SHA256); its
    /// `urls:` must cover `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
}

/// Slack's incoming webhook. Its URL is a secret (whoever has it may post to the channel):
/// name a credentials entry holding it (`urlSecretRef`), or, for a receiver whose URL is not
/// secret, give it as `url`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlackSink {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The credentials file entry whose `notifierSecret` is the webhook URL; its `urls:` must
    /// cover it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<String>,
}

/// A commit status on GitHub, GitLab or Gitea, on the commit a rollout rolls out, in the
/// repository of the App's Repo.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommitStatusSink {
    /// The credentials file entry whose `notifierSecret` is the API token; its `urls:` must
    /// cover the API's status URL.
    pub secret_ref: String,
    /// The API's base URL (GitHub Enterprise, self-hosted GitLab or Gitea). Absent: from the
    /// host of the App's Repo URL (`https://api.github.com` for github.com,
    /// `https://HOST/api/v3`, `https://HOST/api/v4`, `https://HOST/api/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// `owner/repo` (GitLab: the project's path or numeric id) when the App's Repo URL is not
    /// the forge's (a mirror). Absent: from the Repo URL's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The status's name (GitHub and Gitea `context`, GitLab `name`). Absent:
    /// `gitfleet/APP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// A link the status shows (a dashboard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_url: Option<String>,
}

/// The events a Notifier may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventType {
    RolloutStarted,
    /// A wave of a rollout is done (its Targets healthy for `minHealthyFor`).
    WaveCompleted,
    RolloutPaused,
    RolloutRolledBack,
    RolloutCompleted,
    /// A rollout's failures exceeded its budget.
    RolloutFailed,
    /// A newer commit replaced a rollout before it was complete: its commit will not be
    /// rolled out (a commit status ends at error, GitLab's canceled, instead of pending).
    RolloutSuperseded,
    /// A Target's health turned Degraded.
    TargetDegraded,
    /// A freeze was created (and holds from now on).
    FreezeStarted,
    /// A freeze ended: at its `until`, or deleted while in force.
    FreezeEnded,
}

impl EventType {
    pub const ALL: [EventType; 10] = [
        EventType::RolloutStarted,
        EventType::WaveCompleted,
        EventType::RolloutPaused,
        EventType::RolloutRolledBack,
        EventType::RolloutCompleted,
        EventType::RolloutFailed,
        EventType::RolloutSuperseded,
        EventType::TargetDegraded,
        EventType::FreezeStarted,
        EventType::FreezeEnded,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::RolloutStarted => "RolloutStarted",
            EventType::WaveCompleted => "WaveCompleted",
            EventType::RolloutPaused => "RolloutPaused",
            EventType::RolloutRolledBack => "RolloutRolledBack",
            EventType::RolloutCompleted => "RolloutCompleted",
            EventType::RolloutFailed => "RolloutFailed",
            EventType::RolloutSuperseded => "RolloutSuperseded",
            EventType::TargetDegraded => "TargetDegraded",
            EventType::FreezeStarted => "FreezeStarted",
            EventType::FreezeEnded => "FreezeEnded",
        }
    }

    /// Whether a commit status can report it: rollout events, which concern one commit.
    pub const fn is_rollout(self) -> bool {
        matches!(
            self,
            EventType::RolloutStarted
                | EventType::WaveCompleted
                | EventType::RolloutPaused
                | EventType::RolloutRolledBack
                | EventType::RolloutCompleted
                | EventType::RolloutFailed
                | EventType::RolloutSuperseded
        )
    }

    /// Whether it concerns no App (a freeze): such events pass no `apps:` or `projects:`
    /// filter, and Project-scoped Notifiers never see them.
    pub const fn is_fleet_wide(self) -> bool {
        matches!(self, EventType::FreezeStarted | EventType::FreezeEnded)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of an event recorded for a freeze's creation (the hub's event history).
pub const FREEZE_STARTED_KIND: &str = "FreezeStarted";
/// The kind of an event recorded for a freeze's deletion.
pub const FREEZE_ENDED_KIND: &str = "FreezeEnded";

/// The event type a recorded event is, if Notifiers can be sent it.
pub fn event_type(e: &EventRecord) -> Option<EventType> {
    if e.rollout > 0 && e.cluster.is_empty() {
        return match e.kind.as_str() {
            "Started" => Some(EventType::RolloutStarted),
            "WaveCompleted" => Some(EventType::WaveCompleted),
            "Paused" => Some(EventType::RolloutPaused),
            "RollbackStarted" => Some(EventType::RolloutRolledBack),
            "Completed" => Some(EventType::RolloutCompleted),
            "Failed" => Some(EventType::RolloutFailed),
            "Superseded" => Some(EventType::RolloutSuperseded),
            _ => None,
        };
    }
    match e.kind.as_str() {
        "Degraded" if !e.cluster.is_empty() => Some(EventType::TargetDegraded),
        FREEZE_STARTED_KIND if e.app.is_empty() => Some(EventType::FreezeStarted),
        FREEZE_ENDED_KIND if e.app.is_empty() => Some(EventType::FreezeEnded),
        _ => None,
    }
}

/// Which provider a commit status goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    GitLab,
    Gitea,
}

impl Provider {
    pub const fn as_str(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::GitLab => "gitlab",
            Provider::Gitea => "gitea",
        }
    }
}

/// A Notifier's one sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink<'a> {
    Webhook(&'a WebhookSink),
    Slack(&'a SlackSink),
    CommitStatus(Provider, &'a CommitStatusSink),
}

impl NotifierSpec {
    /// Every sink the spec names (exactly one once validated).
    pub fn sinks(&self) -> Vec<Sink<'_>> {
        let mut out = Vec::new();
        if let Some(w) = &self.webhook {
            out.push(Sink::Webhook(w));
        }
        if let Some(s) = &self.slack {
            out.push(Sink::Slack(s));
        }
        for (provider, sink) in [
            (Provider::GitHub, &self.github),
            (Provider::GitLab, &self.gitlab),
            (Provider::Gitea, &self.gitea),
        ] {
            if let Some(s) = sink {
                out.push(Sink::CommitStatus(provider, s));
            }
        }
        out
    }

    /// The sink; `None` for a spec that names none (never a validated one).
    pub fn sink(&self) -> Option<Sink<'_>> {
        self.sinks().into_iter().next()
    }

    /// The credentials entry the sink's secret comes from, and the field naming it.
    pub fn secret_ref(&self) -> Option<(&str, &'static str)> {
        match self.sink()? {
            Sink::Webhook(w) => w
                .secret_ref
                .as_deref()
                .map(|r| (r, "spec.webhook.secretRef")),
            Sink::Slack(s) => s
                .url_secret_ref
                .as_deref()
                .map(|r| (r, "spec.slack.urlSecretRef")),
            Sink::CommitStatus(p, s) => Some((
                s.secret_ref.as_str(),
                match p {
                    Provider::GitHub => "spec.github.secretRef",
                    Provider::GitLab => "spec.gitlab.secretRef",
                    Provider::Gitea => "spec.gitea.secretRef",
                },
            )),
        }
    }

    /// The URL a secret is used for that is known without an event (the webhook's, the
    /// commit status API's when given), and its field: checked against the secret's `urls:`
    /// at apply. A commit status's URL derived from a Repo, and a Slack URL that is itself the
    /// secret, are checked when sent.
    pub fn static_url(&self) -> Option<(&str, &'static str)> {
        match self.sink()? {
            Sink::Webhook(w) => Some((w.url.as_str(), "spec.webhook.url")),
            Sink::Slack(s) => s.url.as_deref().map(|u| (u, "spec.slack.url")),
            Sink::CommitStatus(p, s) => s.api_url.as_deref().map(|u| {
                (
                    u,
                    match p {
                        Provider::GitHub => "spec.github.apiUrl",
                        Provider::GitLab => "spec.gitlab.apiUrl",
                        Provider::Gitea => "spec.gitea.apiUrl",
                    },
                )
            }),
        }
    }

    /// For `notifier list`: `webhook https://hooks.example.com/x`, `slack`, `github`.
    pub fn sink_text(&self) -> String {
        match self.sink() {
            Some(Sink::Webhook(w)) => {
                format!("webhook {}", crate::credential_scope::redacted(&w.url))
            }
            // The URL of a Slack webhook is a secret even when given inline.
            Some(Sink::Slack(_)) => "slack".to_owned(),
            Some(Sink::CommitStatus(p, s)) => match &s.api_url {
                Some(api) => format!("{} {}", p.as_str(), crate::credential_scope::redacted(api)),
                None => p.as_str().to_owned(),
            },
            None => "-".to_owned(),
        }
    }
}

/// A validation problem: the field path under the resource and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    pub path: String,
    pub message: String,
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> SpecProblem {
    SpecProblem {
        path: path.into(),
        message: message.into(),
    }
}

/// What is wrong with `spec`, the first problem found (names and label selectors are checked
/// by the resource parser, which knows their rules).
pub fn validate(spec: &NotifierSpec) -> Result<(), SpecProblem> {
    let sinks = spec.sinks();
    match sinks.len() {
        1 => {}
        0 => {
            return Err(problem(
                "spec",
                "name a sink: one of webhook, slack, github, gitlab or gitea",
            ));
        }
        _ => {
            return Err(problem(
                "spec",
                "name one sink only (of webhook, slack, github, gitlab and gitea): apply one Notifier per sink",
            ));
        }
    }
    match sinks[0] {
        Sink::Webhook(w) => {
            if let Some(why) = url_problem(&w.url) {
                return Err(problem(
                    "spec.webhook.url",
                    format!("{:?} {why}", redact(&w.url)),
                ));
            }
        }
        Sink::Slack(s) => match (&s.url, &s.url_secret_ref) {
            (Some(url), None) => {
                if let Some(why) = url_problem(url) {
                    return Err(problem("spec.slack.url", why));
                }
            }
            (None, Some(_)) => {}
            _ => {
                return Err(problem(
                    "spec.slack",
                    "give one of url and urlSecretRef (the webhook URL is a secret: prefer urlSecretRef)",
                ));
            }
        },
        Sink::CommitStatus(p, s) => {
            let at = |field: &str| format!("spec.{}.{field}", p.as_str());
            if let Some(api) = &s.api_url
                && let Some(why) = url_problem(api)
            {
                return Err(problem(at("apiUrl"), format!("{:?} {why}", redact(api))));
            }
            if let Some(repo) = &s.repository
                && let Err(why) = repository_path(p, repo)
            {
                return Err(problem(at("repository"), why));
            }
            if let Some(context) = &s.context
                && (context.trim().is_empty()
                    || context.len() > 255
                    || context.chars().any(char::is_control))
            {
                return Err(problem(
                    at("context"),
                    "must be 1 to 255 characters, without control characters",
                ));
            }
            if let Some(link) = &s.target_url
                && !(link.starts_with("https://") || link.starts_with("http://"))
            {
                return Err(problem(
                    at("targetUrl"),
                    "must be an https:// or http:// URL",
                ));
            }
            // A Project's operators set statuses only on their Apps' own repositories, and
            // never under a context another check (a required CI job) uses.
            if spec.project.is_some() {
                if s.repository.is_some() {
                    return Err(problem(
                        at("repository"),
                        "a Project's Notifier sets statuses on its Apps' Repos only: leave it out",
                    ));
                }
                if let Some(context) = &s.context
                    && !context.starts_with("gitfleet/")
                {
                    return Err(problem(
                        at("context"),
                        format!(
                            "{context:?}: a Project's Notifier's context starts with gitfleet/"
                        ),
                    ));
                }
            }
            for (i, e) in spec.events.iter().enumerate() {
                if !e.is_rollout() {
                    return Err(problem(
                        format!("spec.events[{i}]"),
                        format!(
                            "{e} is not a rollout event: a commit status reports rollouts of a commit only (RolloutStarted, WaveCompleted, RolloutPaused, RolloutRolledBack, RolloutCompleted, RolloutFailed, RolloutSuperseded)"
                        ),
                    ));
                }
            }
        }
    }
    if spec.events.is_empty() {
        return Err(problem(
            "spec.events",
            format!(
                "must name at least one event type (of {})",
                EventType::ALL.map(EventType::as_str).join(", ")
            ),
        ));
    }
    for (i, e) in spec.events.iter().enumerate() {
        if spec.events[..i].contains(e) {
            return Err(problem(
                format!("spec.events[{i}]"),
                format!("{e} is listed twice"),
            ));
        }
    }
    if spec.project.is_some() && spec.events.iter().any(|e| e.is_fleet_wide()) {
        let i = spec
            .events
            .iter()
            .position(|e| e.is_fleet_wide())
            .unwrap_or_default();
        return Err(problem(
            format!("spec.events[{i}]"),
            "a Project's Notifier sees its Apps' events only, and freezes concern the whole fleet",
        ));
    }
    Ok(())
}

/// Why `url` may not be a sink's URL: `https://` with a host, or `http://` to a loopback host
/// only (which the hub contacts only when started for tests); no user information or fragment,
/// no link-local or metadata-service host.
pub fn url_problem(url: &str) -> Option<&'static str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Some("must be an https:// URL");
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host = host_of_authority(authority);
    match scheme {
        "https" => {}
        "http" if crate::charts::is_loopback_host(host) => {}
        _ => return Some("must be an https:// URL (http:// only to a loopback host)"),
    }
    if host.is_empty() {
        return Some("must name a host");
    }
    if authority.contains('@') {
        return Some("must not hold user information: secrets come from the credentials file");
    }
    if rest.contains('#') || rest.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Some("must not hold a fragment, spaces or control characters");
    }
    if let Some(why) = crate::charts::host_problem(host) {
        return Some(why);
    }
    if let Ok(ip) = host.parse::<std::net::IpAddr>()
        && let Some(why) = crate::charts::address_problem(ip, true)
    {
        return Some(why);
    }
    None
}

/// The host of `host[:port]` or `[v6]:port`.
fn host_of_authority(authority: &str) -> &str {
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(rest) = hostport.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    hostport.split(':').next().unwrap_or("")
}

fn redact(url: &str) -> String {
    crate::credential_scope::redacted(url)
}

// ---------------------------------------------------------------------------------------------
// Matching

/// What the hub knows of an event when it decides who is sent it.
#[derive(Debug, Clone, Copy)]
pub struct EventFacts<'a> {
    pub event_type: EventType,
    pub app: &'a str,
    /// The App's Project (`default` when it names none); empty for fleet-wide events.
    pub project: &'a str,
    /// The labels of the event's cluster, for a Target event.
    pub cluster_labels: Option<&'a BTreeMap<String, String>>,
}

/// Whether a Notifier with `spec` is sent the event.
pub fn matches(spec: &NotifierSpec, facts: &EventFacts<'_>) -> bool {
    if !spec.events.contains(&facts.event_type) {
        return false;
    }
    if facts.event_type.is_fleet_wide() {
        return spec.project.is_none() && spec.apps.is_empty() && spec.projects.is_empty();
    }
    if spec.project.as_deref().is_some_and(|p| p != facts.project) {
        return false;
    }
    if !spec.apps.is_empty() && !spec.apps.iter().any(|a| a == facts.app) {
        return false;
    }
    if !spec.projects.is_empty() && !spec.projects.iter().any(|p| p == facts.project) {
        return false;
    }
    match (&spec.cluster_selector, facts.cluster_labels) {
        (Some(selector), Some(labels)) => {
            crate::fleet::placement::selector_matches(selector, labels)
        }
        _ => true,
    }
}

// ---------------------------------------------------------------------------------------------
// Deliveries

/// What a Notifier is told about: the event, with what the hub knew when it was recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub event: EventRecord,
    pub event_type: Option<EventType>,
    /// The App's Project (empty for fleet-wide events).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub project: String,
    /// The commit the rollout rolls out (a rollback: the commit rolled back from); empty when
    /// unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub commit: String,
    /// The URL of the App's Repo (where a commit status goes).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub repo_url: String,
}

/// One notification to one Notifier, until it is delivered or given up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub notifier: String,
    pub notification: Notification,
    pub created_unix: i64,
    /// Attempts made so far.
    #[serde(default)]
    pub attempts: u32,
    /// When the next attempt is due, in milliseconds since the epoch.
    #[serde(default)]
    pub next_attempt_ms: i64,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
}

impl Delivery {
    /// The delivery's idempotency key: the same for every attempt, unique per Notifier and
    /// event.
    pub fn key(&self) -> String {
        delivery_key(&self.notifier, self.notification.event.id)
    }
}

/// `NOTIFIER/EVENT-ID`.
pub fn delivery_key(notifier: &str, event_id: u64) -> String {
    format!("{notifier}/{event_id}")
}

/// What a Notifier's deliveries did, for `notifier list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifierStatus {
    /// The last delivery a receiver accepted: when, and its key.
    #[serde(default)]
    pub last_delivery_unix: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_delivery: String,
    /// The last failed attempt's error (cleared by the next delivery), and when.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    #[serde(default)]
    pub last_error_unix: i64,
    #[serde(default)]
    pub delivered: u64,
    /// Deliveries given up (retries exhausted, or refused for good).
    #[serde(default)]
    pub given_up: u64,
}

// ---------------------------------------------------------------------------------------------
// Requests

/// One HTTP header of a request; a sensitive one (a token) is never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    pub name: &'static str,
    pub value: String,
    pub sensitive: bool,
}

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = if self.sensitive {
            "<redacted>"
        } else {
            &self.value
        };
        write!(f, "{}: {value}", self.name)
    }
}

/// The POST a delivery makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub url: String,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }
}

/// Why a delivery's request cannot be made: for good, not worth retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the Notifier names no sink")]
    NoSink,
    #[error("{0} needs its secret, and none was given")]
    NoSecret(&'static str),
    #[error("the event has no commit to set a status on")]
    NoCommit,
    #[error("the commit status's repository: {0}")]
    Repository(String),
    #[error("the Slack webhook URL in the credentials entry: {0}")]
    SlackUrl(&'static str),
}

/// The request that tells the Notifier `name` (with `spec`) of `n`, under the idempotency
/// key `key`; `secret` is the value of the entry its `secretRef` names (the caller checks that
/// the entry may be used for the request's URL before sending).
pub fn request(
    name: &str,
    spec: &NotifierSpec,
    n: &Notification,
    key: &str,
    secret: Option<&str>,
) -> Result<HttpRequest, RequestError> {
    let mut headers = vec![
        plain("Content-Type", "application/json"),
        plain(DELIVERY_HEADER, key),
    ];
    if let Some(t) = n.event_type {
        headers.push(plain(EVENT_HEADER, t.as_str()));
    }
    match spec.sink().ok_or(RequestError::NoSink)? {
        Sink::Webhook(w) => {
            let body = webhook_body(name, n, key);
            if w.secret_ref.is_some() {
                let secret = secret.ok_or(RequestError::NoSecret("spec.webhook.secretRef"))?;
                headers.push(plain(
                    SIGNATURE_HEADER,
                    &signature(secret.as_bytes(), &body),
                ));
            }
            Ok(HttpRequest {
                url: w.url.clone(),
                headers,
                body,
            })
        }
        Sink::Slack(s) => {
            let url = match (&s.url, &s.url_secret_ref) {
                (Some(url), _) => url.clone(),
                (None, _) => {
                    let url = secret.ok_or(RequestError::NoSecret("spec.slack.urlSecretRef"))?;
                    if let Some(why) = url_problem(url) {
                        return Err(RequestError::SlackUrl(why));
                    }
                    url.to_owned()
                }
            };
            Ok(HttpRequest {
                url,
                headers,
                body: slack_body(n),
            })
        }
        Sink::CommitStatus(provider, s) => {
            if n.commit.is_empty() {
                return Err(RequestError::NoCommit);
            }
            let token = secret.ok_or(RequestError::NoSecret(match provider {
                Provider::GitHub => "spec.github.secretRef",
                Provider::GitLab => "spec.gitlab.secretRef",
                Provider::Gitea => "spec.gitea.secretRef",
            }))?;
            let url = status_url(provider, s, &n.repo_url, &n.commit)
                .map_err(RequestError::Repository)?;
            match provider {
                Provider::GitHub => {
                    headers.push(secret_header("Authorization", format!("Bearer {token}")));
                    headers.push(plain("Accept", "application/vnd.github+json"));
                    headers.push(plain("X-GitHub-Api-Version", "2022-11-28"));
                }
                Provider::GitLab => headers.push(secret_header("PRIVATE-TOKEN", token.to_owned())),
                Provider::Gitea => {
                    headers.push(secret_header("Authorization", format!("token {token}")));
                }
            }
            Ok(HttpRequest {
                url,
                headers,
                body: status_body(provider, s, n),
            })
        }
    }
}

fn plain(name: &'static str, value: &str) -> Header {
    Header {
        name,
        value: value.to_owned(),
        sensitive: false,
    }
}

fn secret_header(name: &'static str, value: String) -> Header {
    Header {
        name,
        value,
        sensitive: true,
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`: what
/// [`SIGNATURE_HEADER`] carries.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` (a [`SIGNATURE_HEADER`] value) signs `body` under `secret`, compared in
/// constant time: what a receiver checks.
pub fn verify_signature(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_mac) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_mac) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

/// The generic webhook's JSON body.
pub fn webhook_body(notifier: &str, n: &Notification, key: &str) -> Vec<u8> {
    let e = &n.event;
    let body = serde_json::json!({
        "id": key,
        "notifier": notifier,
        "type": n.event_type.map(EventType::as_str).unwrap_or_default(),
        "summary": summary(n),
        "event": {
            "id": e.id,
            "kind": e.kind,
            "at": rfc3339(e.at_unix),
            "atUnix": e.at_unix,
            "app": e.app,
            "project": n.project,
            "cluster": e.cluster,
            "rollout": e.rollout,
            "commit": n.commit,
            "message": e.message,
            "by": e.by,
        },
    });
    body.to_string().into_bytes()
}

/// One line for people: `shop: rollout #3 started (abc1234): ...`.
pub fn summary(n: &Notification) -> String {
    let e = &n.event;
    let commit = if n.commit.is_empty() {
        String::new()
    } else {
        format!(" ({})", short(&n.commit))
    };
    let what = match n.event_type {
        Some(EventType::RolloutStarted) => format!("rollout #{} started{commit}", e.rollout),
        Some(EventType::WaveCompleted) => format!("rollout #{}: a wave is done{commit}", e.rollout),
        Some(EventType::RolloutPaused) => format!("rollout #{} paused{commit}", e.rollout),
        Some(EventType::RolloutRolledBack) => format!("rolling back{commit}"),
        Some(EventType::RolloutCompleted) => format!("rollout #{} completed{commit}", e.rollout),
        Some(EventType::RolloutFailed) => format!("rollout #{} failed{commit}", e.rollout),
        Some(EventType::RolloutSuperseded) => format!("rollout #{} replaced{commit}", e.rollout),
        Some(EventType::TargetDegraded) => format!("degraded on {}", e.cluster),
        Some(EventType::FreezeStarted) => "freeze started".to_owned(),
        Some(EventType::FreezeEnded) => "freeze ended".to_owned(),
        None => e.kind.clone(),
    };
    let subject = if e.app.is_empty() {
        "fleet".to_owned()
    } else {
        e.app.clone()
    };
    if e.message.is_empty() {
        format!("{subject}: {what}")
    } else {
        format!("{subject}: {what}: {}", e.message)
    }
}

/// Slack's incoming-webhook body: `text` (also what notifications show) and one section
/// block in mrkdwn.
pub fn slack_body(n: &Notification) -> Vec<u8> {
    let icon = match n.event_type {
        Some(EventType::RolloutCompleted) => ":white_check_mark:",
        Some(EventType::RolloutStarted | EventType::WaveCompleted) => ":rocket:",
        Some(EventType::RolloutPaused) => ":double_vertical_bar:",
        Some(EventType::RolloutSuperseded) => ":fast_forward:",
        Some(EventType::RolloutRolledBack | EventType::RolloutFailed) => ":rotating_light:",
        Some(EventType::TargetDegraded) => ":warning:",
        Some(EventType::FreezeStarted | EventType::FreezeEnded) => ":snowflake:",
        None => ":information_source:",
    };
    let text = format!("{icon} {}", summary(n));
    serde_json::json!({
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": slack_escape(&text)}},
        ],
    })
    .to_string()
    .into_bytes()
}

/// Slack's three control characters in mrkdwn text.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A commit status's state, as each provider names it.
fn status_state(provider: Provider, t: Option<EventType>) -> &'static str {
    match (provider, t) {
        (_, Some(EventType::RolloutCompleted)) => "success",
        (Provider::GitLab, Some(EventType::RolloutRolledBack | EventType::RolloutFailed)) => {
            "failed"
        }
        (_, Some(EventType::RolloutRolledBack | EventType::RolloutFailed)) => "failure",
        // Not rolled out, and not for a fault of its own.
        (Provider::GitLab, Some(EventType::RolloutSuperseded)) => "canceled",
        (_, Some(EventType::RolloutSuperseded)) => "error",
        (Provider::GitLab, Some(EventType::RolloutStarted | EventType::WaveCompleted)) => "running",
        _ => "pending",
    }
}

fn status_body(provider: Provider, s: &CommitStatusSink, n: &Notification) -> Vec<u8> {
    let context = s
        .context
        .clone()
        .unwrap_or_else(|| format!("gitfleet/{}", n.event.app));
    let description = truncate(&summary(n), MAX_STATUS_DESCRIPTION);
    let state = status_state(provider, n.event_type);
    let mut body = match provider {
        Provider::GitLab => serde_json::json!({
            "state": state,
            "name": context,
            "description": description,
        }),
        Provider::GitHub | Provider::Gitea => serde_json::json!({
            "state": state,
            "context": context,
            "description": description,
        }),
    };
    if let Some(link) = &s.target_url {
        body["target_url"] = serde_json::json!(link);
    }
    body.to_string().into_bytes()
}

/// `text` cut to at most `max` bytes on a character boundary, with `…` when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The host (with its port) and path (`owner/repo`, no `.git`) of a Git URL: `https://`,
/// `http://`, `ssh://` or scp-like `user@host:path`.
pub fn repo_location(url: &str) -> Result<(String, String), String> {
    let (hostport, path) = match url.split_once("://") {
        Some((scheme, rest)) => {
            if !matches!(scheme, "https" | "http" | "ssh") {
                return Err(format!(
                    "cannot tell the forge's repository from a {scheme}:// URL: give `repository` and `apiUrl`"
                ));
            }
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let hostport = if scheme == "ssh" {
                // The SSH port says nothing of the API's.
                match hostport.rsplit_once(':') {
                    Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
                    _ => hostport,
                }
            } else {
                hostport
            };
            (hostport.to_owned(), path.to_owned())
        }
        None => match url.split_once(':') {
            Some((head, path)) if !head.contains('/') => {
                let host = head.rsplit_once('@').map_or(head, |(_, h)| h);
                (host.to_owned(), path.to_owned())
            }
            _ => return Err("cannot tell the forge's repository from the Repo's URL: give `repository` and `apiUrl`".into()),
        },
    };
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    if hostport.is_empty() || path.is_empty() {
        return Err("the Repo's URL names no host and repository path".into());
    }
    Ok((hostport.to_ascii_lowercase(), path.to_owned()))
}

/// The repository path as the provider's status API names it: `owner/repo` for GitHub and
/// Gitea; for GitLab the URL-encoded project path (groups and subgroups) or a numeric id.
pub fn repository_path(provider: Provider, repository: &str) -> Result<String, String> {
    let segments: Vec<&str> = repository.trim_matches('/').split('/').collect();
    let valid = |s: &&str| {
        !s.is_empty()
            && *s != "."
            && *s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if !segments.iter().all(valid) {
        return Err(format!(
            "{repository:?} is not a repository path (segments of letters, digits, '-', '_' and '.')"
        ));
    }
    match provider {
        Provider::GitHub | Provider::Gitea if segments.len() != 2 => Err(format!(
            "{repository:?} is not owner/repo ({} names a repository by its owner and name)",
            provider.as_str()
        )),
        Provider::GitHub | Provider::Gitea => Ok(segments.join("/")),
        Provider::GitLab => Ok(segments.join("%2F")),
    }
}

/// The API's base URL for a provider on `host` (a Repo URL's).
pub fn default_api_url(provider: Provider, host: &str) -> String {
    match provider {
        Provider::GitHub if host == "github.com" || host == "www.github.com" => {
            "https://api.github.com".to_owned()
        }
        Provider::GitHub => format!("https://{host}/api/v3"),
        Provider::GitLab => format!("https://{host}/api/v4"),
        Provider::Gitea => format!("https://{host}/api/v1"),
    }
}

/// The URL a commit status on `commit` is POSTed to.
pub fn status_url(
    provider: Provider,
    sink: &CommitStatusSink,
    repo_url: &str,
    commit: &str,
) -> Result<String, String> {
    if commit.len() < 7 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{commit:?} is not a commit id"));
    }
    let repository = match &sink.repository {
        Some(r) => repository_path(provider, r)?,
        None => repository_path(provider, &repo_location(repo_url)?.1)?,
    };
    let api = match &sink.api_url {
        Some(api) => api.trim_end_matches('/').to_owned(),
        None => default_api_url(provider, &repo_location(repo_url)?.0),
    };
    Ok(match provider {
        Provider::GitHub | Provider::Gitea => format!("{api}/repos/{repository}/statuses/{commit}"),
        Provider::GitLab => format!("{api}/projects/{repository}/statuses/{commit}"),
    })
}

// ---------------------------------------------------------------------------------------------
// Where a secret may be used

/// Whether a secret whose entry's `urls:` are `prefixes` may be used for a request to `url`:
/// as `gitfleet_core::credential_scope` decides for Git credentials (https only, whole path
/// segments, an encoded `/` read as one), and, when the hub allows loopback (tests),
/// `http://` to a loopback host under an `http://` prefix of that host.
pub fn secret_allowed(prefixes: &[String], url: &str, allow_loopback_http: bool) -> bool {
    // GitLab names a project by its path with `/` encoded (`group%2Fshop`): compared as the
    // path it is, so that a prefix can bind a token to a group; dot segments stay refused.
    let decoded = url.replace("%2F", "/").replace("%2f", "/");
    let url = decoded.as_str();
    if crate::credential_scope::allows(prefixes, url) {
        return true;
    }
    if !allow_loopback_http {
        return false;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = host_of_authority(rest.split(['/', '?']).next().unwrap_or(""));
    if !crate::charts::is_loopback_host(host) {
        return false;
    }
    let as_https: Vec<String> = prefixes
        .iter()
        .filter_map(|p| p.strip_prefix("http://"))
        .map(|p| format!("https://{p}"))
        .collect();
    crate::credential_scope::allows(&as_https, &format!("https://{rest}"))
}

/// Why `prefix` may not bind a Notifier secret: an `https://` prefix (as Git credentials'), or
/// `http://` to a loopback host (tests).
pub fn secret_prefix_problem(prefix: &str) -> Option<&'static str> {
    if let Some(rest) = prefix.strip_prefix("http://") {
        let host = host_of_authority(rest.split('/').next().unwrap_or(""));
        if !crate::charts::is_loopback_host(host) {
            return Some("must be an https:// URL (http:// only to a loopback host)");
        }
        return crate::credential_scope::check_prefix(&format!("https://{rest}")).err();
    }
    if !crate::credential_scope::is_https(prefix) {
        return Some("must be an https:// URL with a host and no '.' or '..' path segments");
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Retries

/// How deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the first failed attempt; each further failure doubles it.
    pub base: Duration,
    /// The longest wait between two attempts.
    pub cap: Duration,
    /// Attempts made before a delivery is given up.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// 5 s, doubling up to 15 min, 15 attempts: about two hours of trying.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(15 * 60),
            max_attempts: 15,
        }
    }
}

/// What an attempt's answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 2xx: the receiver has it.
    Delivered,
    /// No answer, a timeout, 408, 429 or 5xx: worth trying again.
    Retry,
    /// Any other status (401, 404, 422, a redirect): trying again would get the same answer.
    Refused,
}

/// What an HTTP status means for a delivery.
pub fn classify(status: u16) -> Answer {
    match status {
        200..=299 => Answer::Delivered,
        408 | 425 | 429 | 500..=599 => Answer::Retry,
        _ => Answer::Refused,
    }
}

/// After a failed attempt (the `attempts`-th), the next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    RetryIn(Duration),
    GiveUp,
}

/// When to try again after the `attempts`-th failed attempt (1 for the first): the base
/// doubled per earlier failure, capped, then spread by `jitter` (a random value in [0, 1),
/// given by the caller) over [½, 1] of it so that receivers coming back are not hit by every
/// delivery at once; or give up once `max_attempts` are made, or at once when the failure is
/// not worth retrying.
pub fn after_failure(attempts: u32, retryable: bool, policy: &RetryPolicy, jitter: f64) -> Next {
    if !retryable || attempts >= policy.max_attempts {
        return Next::GiveUp;
    }
    let exponent = attempts.saturating_sub(1).min(32);
    let full = policy
        .base
        .saturating_mul(1u32.checked_shl(exponent).unwrap_or(u32::MAX))
        .min(policy.cap);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    Next::RetryIn(full.mul_f64(0.5 + jitter / 2.0))
}
