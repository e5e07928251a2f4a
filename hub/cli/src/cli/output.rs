//! What the CLI prints, as pure functions from the hub's answers to text.
//!
//! Each command has a report type: the stable, complete document printed with `-o json|yaml`
//! (camelCase fields, RFC 3339 times, full revisions), which scripts and tests can also
//! deserialise; and a table or text form for people (short revisions, "12s ago").

use std::collections::BTreeMap;

use comfy_table::{Cell, CellAlignment, Color, Table};
use gitfleet_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::args::OutputFormat;

#[cfg(test)]
mod tests;

/// How to print for people.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
    /// "Now" as Unix seconds, for "12s ago".
    pub now_unix: i64,
}

/// Renders `report` as JSON or YAML, or with `table` for [`OutputFormat::Table`]. Always ends
/// with a newline.
pub fn render<T: Serialize>(
    format: OutputFormat,
    report: &T,
    table: impl FnOnce() -> String,
) -> String {
    let mut text = match format {
        OutputFormat::Table => table(),
        OutputFormat::Json => to_json(report),
        OutputFormat::Yaml => to_yaml(report),
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

pub fn to_json<T: Serialize>(value: &T) -> String {
    let mut text =
        serde_json::to_string_pretty(value).expect("reports serialise: string keys only");
    text.push('\n');
    text
}

pub fn to_yaml<T: Serialize>(value: &T) -> String {
    serde_saphyr::to_string(value).expect("reports serialise: string keys only")
}

// ---------------------------------------------------------------------------------------------
// apply

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyReport {
    pub dry_run: bool,
    pub outcomes: Vec<ApplyOutcomeReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyOutcomeReport {
    pub kind: String,
    pub name: String,
    /// "created", "configured" or "unchanged".
    pub action: String,
}

pub fn apply_report(outcomes: &[pb::ApplyOutcome], dry_run: bool) -> ApplyReport {
    ApplyReport {
        dry_run,
        outcomes: outcomes
            .iter()
            .map(|o| ApplyOutcomeReport {
                kind: o.kind.clone(),
                name: o.name.clone(),
                action: o.action.clone(),
            })
            .collect(),
    }
}

/// `app/guestbook created`, one line per document, like kubectl.
pub fn apply_text(report: &ApplyReport, style: Style) -> String {
    let suffix = if report.dry_run { " (dry run)" } else { "" };
    let mut text = String::new();
    for o in &report.outcomes {
        let color = match o.action.as_str() {
            "created" => Some(Color::Green),
            "configured" => Some(Color::Yellow),
            _ => None,
        };
        text.push_str(&format!(
            "{}/{} {}{suffix}\n",
            o.kind.to_ascii_lowercase(),
            o.name,
            paint(&o.action, color, style.color)
        ));
    }
    text
}

// ---------------------------------------------------------------------------------------------
// status

/// A Target's sync and health states: the hub's own types, which serialise as the reports
/// always did.
pub use gitfleet_core::model::{HealthState as Health, SyncState as Sync};

/// The CLI's reading of a state off the wire, and its colour in tables.
pub trait State: Sized {
    fn from_proto(value: i32) -> Self;
    fn color(self) -> Option<Color>;
}

impl State for Sync {
    fn from_proto(value: i32) -> Sync {
        match pb::SyncState::try_from(value) {
            Ok(pb::SyncState::Pending) => Sync::Pending,
            Ok(pb::SyncState::Syncing) => Sync::Syncing,
            Ok(pb::SyncState::Synced) => Sync::Synced,
            Ok(pb::SyncState::OutOfSync) => Sync::OutOfSync,
            Ok(pb::SyncState::Failed) => Sync::Failed,
            Ok(pb::SyncState::Unspecified) | Err(_) => Sync::Unknown,
        }
    }

    fn color(self) -> Option<Color> {
        match self {
            Sync::Synced => Some(Color::Green),
            Sync::Pending | Sync::Syncing | Sync::OutOfSync => Some(Color::Yellow),
            Sync::Failed => Some(Color::Red),
            Sync::Unknown => None,
        }
    }
}

impl State for Health {
    fn from_proto(value: i32) -> Health {
        match pb::HealthState::try_from(value) {
            Ok(pb::HealthState::Healthy) => Health::Healthy,
            Ok(pb::HealthState::Progressing) => Health::Progressing,
            Ok(pb::HealthState::Degraded) => Health::Degraded,
            Ok(pb::HealthState::Missing) => Health::Missing,
            Ok(pb::HealthState::Suspended) => Health::Suspended,
            Ok(pb::HealthState::Unknown | pb::HealthState::Unspecified) | Err(_) => Health::Unknown,
        }
    }

    fn color(self) -> Option<Color> {
        match self {
            Health::Healthy => Some(Color::Green),
            Health::Progressing | Health::Suspended => Some(Color::Yellow),
            Health::Degraded | Health::Missing => Some(Color::Red),
            Health::Unknown => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub targets: Vec<TargetReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetReport {
    pub app: String,
    pub cluster: String,
    /// Full commit ids; empty when not known yet.
    pub desired_revision: String,
    pub applied_revision: String,
    pub sync: Sync,
    pub health: Health,
    pub message: String,
    pub cluster_connected: bool,
    /// What holds a new revision from this Target (a freeze, a sync window, a dependency).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub held: String,
    /// RFC 3339; absent when the hub never heard about this Target.
    pub updated_at: Option<String>,
    pub resources: Vec<ResourceReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceReport {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// "applied", "unchanged", "pruned", "failed" or "invalid".
    pub action: String,
    pub health: Health,
    pub message: String,
    pub source_file: String,
    /// The sync hook phase it ran in ("PreSync", ...); empty for an ordinary object.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hook: String,
}

impl ResourceReport {
    /// Failed and invalid objects are shown even without `--resources`.
    pub fn failed(&self) -> bool {
        matches!(self.action.as_str(), "failed" | "invalid")
    }
}

/// Sorted by App, then cluster.
pub fn status_report(targets: &[pb::TargetStatus]) -> StatusReport {
    let mut targets: Vec<TargetReport> = targets
        .iter()
        .map(|t| TargetReport {
            app: t.app.clone(),
            cluster: t.cluster.clone(),
            desired_revision: t.desired_revision.clone(),
            applied_revision: t.applied_revision.clone(),
            sync: Sync::from_proto(t.sync),
            health: Health::from_proto(t.health),
            message: t.message.clone(),
            cluster_connected: t.cluster_connected,
            held: t.held.clone(),
            updated_at: rfc3339(t.updated_at_unix),
            resources: t
                .resources
                .iter()
                .map(|r| ResourceReport {
                    api_version: r.api_version.clone(),
                    kind: r.kind.clone(),
                    namespace: r.namespace.clone(),
                    name: r.name.clone(),
                    action: r.action.clone(),
                    health: Health::from_proto(r.health),
                    message: r.message.clone(),
                    source_file: r.source_file.clone(),
                    hook: r.hook.clone(),
                })
                .collect(),
        })
        .collect();
    targets.sort_by(|a, b| (&a.app, &a.cluster).cmp(&(&b.app, &b.cluster)));
    StatusReport { targets }
}

/// The Targets table; then, when any Target has failed objects (or `all_resources`), a table of
/// objects: with `all_resources` every object, otherwise only failed ones.
pub fn status_table(report: &StatusReport, all_resources: bool, style: Style) -> String {
    if report.targets.is_empty() {
        return "No Targets: apply an App whose targets match registered clusters, then check \
                `gitfleet cluster list`\n"
            .to_owned();
    }
    let mut table = plain_table(&[
        "APP", "CLUSTER", "DESIRED", "APPLIED", "SYNC", "HEALTH", "MESSAGE",
    ]);
    for t in &report.targets {
        let mut message = t.message.clone();
        if t.held.starts_with("self-heal suspended") {
            // Nothing new waits: the Target only does not self-heal while a freeze or window
            // holds it.
            message = join_nonempty(&t.held, &message);
        } else if !t.held.is_empty() {
            message = join_nonempty(&format!("held: {}", t.held), &message);
        }
        if !t.cluster_connected {
            message = join_nonempty("cluster disconnected", &message);
        }
        table.add_row(vec![
            Cell::new(&t.app),
            Cell::new(&t.cluster),
            Cell::new(short_revision(&t.desired_revision)),
            Cell::new(short_revision(&t.applied_revision)),
            colored(t.sync, t.sync.color(), style),
            colored(t.health, t.health.color(), style),
            Cell::new(dash(&message)),
        ]);
    }
    let mut text = finish(&table);

    let rows: Vec<(&TargetReport, &ResourceReport)> = report
        .targets
        .iter()
        .flat_map(|t| t.resources.iter().map(move |r| (t, r)))
        .filter(|(_, r)| all_resources || r.failed())
        .collect();
    if !rows.is_empty() {
        let mut table = plain_table(&[
            "APP", "CLUSTER", "RESOURCE", "HOOK", "ACTION", "HEALTH", "SOURCE", "MESSAGE",
        ]);
        for (t, r) in rows {
            let action_color = if r.failed() { Some(Color::Red) } else { None };
            table.add_row(vec![
                Cell::new(&t.app),
                Cell::new(&t.cluster),
                Cell::new(resource_ref(r)),
                Cell::new(dash(&r.hook)),
                colored(&r.action, action_color, style),
                colored(r.health, r.health.color(), style),
                Cell::new(dash(&r.source_file)),
                Cell::new(dash(&r.message)),
            ]);
        }
        text.push('\n');
        text.push_str(&finish(&table));
    }
    text
}

impl TargetReport {
    /// Synced and healthy at the revision the hub wants.
    pub fn converged(&self) -> bool {
        self.sync == Sync::Synced
            && self.health == Health::Healthy
            && !self.desired_revision.is_empty()
            && self.applied_revision == self.desired_revision
    }
}

/// Whether `status --wait` is done: at least one Target, and every Target converged (at
/// `revision`, a commit id or a prefix of one, when given: `status --wait --revision`).
pub fn converged(report: &StatusReport, revision: Option<&str>) -> bool {
    !report.targets.is_empty() && report.targets.iter().all(|t| t.converged_at(revision))
}

impl TargetReport {
    /// Converged, and at `revision` when one is given.
    pub fn converged_at(&self, revision: Option<&str>) -> bool {
        self.converged()
            && revision.is_none_or(|r| {
                self.applied_revision
                    .to_ascii_lowercase()
                    .starts_with(&r.to_ascii_lowercase())
            })
    }
}

/// What `status --wait` is still waiting for, in words.
pub fn pending(report: &StatusReport, revision: Option<&str>) -> String {
    if report.targets.is_empty() {
        return "no Targets match (is the App applied, and are its clusters registered? see \
                `gitfleet cluster list`)"
            .to_owned();
    }
    let waiting: Vec<String> = report
        .targets
        .iter()
        .filter(|t| !t.converged_at(revision))
        .map(|t| {
            let mut line = format!(
                "{} on {} is {}/{} at {} (wants {})",
                t.app,
                t.cluster,
                t.sync,
                t.health,
                short_revision(&t.applied_revision),
                short_revision(revision.unwrap_or(&t.desired_revision))
            );
            if !t.message.is_empty() {
                line.push_str(&format!(": {}", t.message));
            }
            line
        })
        .collect();
    format!(
        "{} of {} not yet: {}",
        waiting.len(),
        report.targets.len(),
        waiting.join("; ")
    )
}

/// `Deployment/guestbook/web`, or `Namespace/guestbook` for cluster-scoped objects.
fn resource_ref(r: &ResourceReport) -> String {
    if r.namespace.is_empty() {
        format!("{}/{}", r.kind, r.name)
    } else {
        format!("{}/{}/{}", r.kind, r.namespace, r.name)
    }
}

/// The first 8 characters of a commit id, `-` when there is none.
pub fn short_revision(revision: &str) -> String {
    if revision.is_empty() {
        "-".to_owned()
    } else {
        revision.chars().take(8).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// get

/// The resources as the hub stores them, Repos first, then Projects, Apps, ClusterGroups (the
/// order they depend on each other), each by name. JSON that is not valid stays a string so that
/// nothing is hidden.
pub fn resource_values(documents: &[pb::ResourceDocument]) -> Vec<Value> {
    let mut values: Vec<Value> = documents
        .iter()
        .map(|d| serde_json::from_str(&d.json).unwrap_or_else(|_| Value::String(d.json.clone())))
        .collect();
    values.sort_by(|a, b| {
        let key = |v: &Value| {
            (
                kind_rank(str_at(v, &["kind"])),
                str_at(v, &["metadata", "name"]).to_owned(),
            )
        };
        key(a).cmp(&key(b))
    });
    values
}

fn kind_rank(kind: &str) -> u8 {
    match kind {
        "Repo" => 0,
        "Project" => 1,
        "App" => 2,
        "ClusterGroup" => 3,
        "HealthRule" => 4,
        "Notifier" => 5,
        _ => 6,
    }
}

/// What `get -o json|yaml` prints: one resource when a name was asked for, otherwise a `List`
/// (which `gitfleet apply -f` reads back).
pub fn resource_document(values: Vec<Value>, single: bool) -> Value {
    if single && values.len() == 1 {
        return values.into_iter().next().expect("one value, checked above");
    }
    serde_json::json!({
        "apiVersion": "gitfleet.dev/v1",
        "kind": "List",
        "items": values,
    })
}

/// One table per kind (Repos, then Apps, then ClusterGroups), each with the columns that matter
/// for it.
pub fn resources_table(values: &[Value], style: Style) -> String {
    if values.is_empty() {
        return "No resources found\n".to_owned();
    }
    let mut by_kind: BTreeMap<(u8, &str), Vec<&Value>> = BTreeMap::new();
    for v in values {
        let kind = str_at(v, &["kind"]);
        by_kind.entry((kind_rank(kind), kind)).or_default().push(v);
    }
    let several = by_kind.len() > 1;
    let mut sections = Vec::new();
    for ((_, kind), items) in by_kind {
        let header: &[&str] = match kind {
            "Repo" => &["NAME", "URL", "REF", "COMMIT", "FETCHED", "MESSAGE"],
            "App" => &[
                "NAME",
                "REPO",
                "PATH",
                "NAMESPACE",
                "TARGETS",
                "SUSPENDED",
                "PROJECT",
            ],
            "ClusterGroup" => &["NAME", "SELECTOR"],
            "Project" => &["NAME", "SOURCE REPOS", "DESTINATIONS", "CLUSTER RESOURCES"],
            "HealthRule" => &["NAME", "KIND", "DEGRADED WHEN", "HEALTHY WHEN"],
            "Notifier" => &["NAME", "SINK", "EVENTS", "PROJECT", "PENDING", "LAST ERROR"],
            _ => &["KIND", "NAME"],
        };
        // Resources of Kubernetes objects (docs/kube-api.md) say whose they are.
        let owned = items.iter().any(|i| kube_owner(i).is_some());
        let mut header = header.to_vec();
        if owned {
            header.push("MANAGED BY");
        }
        let mut table = plain_table(&header);
        for item in items {
            let mut cells = match kind {
                "Repo" => repo_row(item, style.now_unix),
                "App" => app_row(item),
                "ClusterGroup" => group_row(item),
                "Project" => project_row(item),
                "HealthRule" => health_rule_row(item),
                "Notifier" => notifier_row(item),
                _ => other_row(item),
            };
            if several {
                cells[0] = format!("{}/{}", kind.to_ascii_lowercase(), cells[0]);
            }
            if owned {
                cells.push(match kube_owner(item) {
                    Some(owner) => format!("kubernetes:{owner}"),
                    None => "-".to_owned(),
                });
            }
            table.add_row(cells);
        }
        sections.push(finish(&table));
    }
    sections.join("\n")
}

/// The Kubernetes object (`NAMESPACE/NAME`) a resource was taken from, if any.
fn kube_owner(v: &Value) -> Option<&str> {
    v.pointer("/metadata/annotations")
        .and_then(|a| a.get(gitfleet_core::kube_api::OWNER_ANNOTATION))
        .and_then(Value::as_str)
}

/// A Repo with what the hub learned about it (`status`: the commit it follows, the last fetch
/// and its error).
fn repo_row(v: &Value, now_unix: i64) -> Vec<String> {
    let reference = match v.pointer("/spec/ref") {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "branch main".to_owned(),
    };
    let fetched = match v.pointer("/status/lastSuccessUnix").and_then(Value::as_i64) {
        Some(t) if t > 0 => relative(t, now_unix),
        _ => "never".to_owned(),
    };
    vec![
        name_of(v),
        dash(str_at(v, &["spec", "url"])),
        reference,
        short_revision(str_at(v, &["status", "commit"])),
        fetched,
        dash(str_at(v, &["status", "error"])),
    ]
}

/// A Notifier: its one sink (never a secret: the URL only for a webhook), its events, and
/// what its deliveries did (`status`).
fn notifier_row(v: &Value) -> Vec<String> {
    let sink = ["webhook", "slack", "github", "gitlab", "gitea"]
        .into_iter()
        .find(|s| v.pointer(&format!("/spec/{s}")).is_some())
        .unwrap_or_default();
    let sink = match sink {
        "webhook" => format!("webhook {}", str_at(v, &["spec", "webhook", "url"])),
        other => other.to_owned(),
    };
    let events = match v.pointer("/spec/events") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    };
    let pending = v
        .pointer("/status/pending")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    vec![
        name_of(v),
        dash(&sink),
        dash(&events),
        dash(str_at(v, &["spec", "project"])),
        pending.to_string(),
        dash(str_at(v, &["status", "lastError"])),
    ]
}

fn app_row(v: &Value) -> Vec<String> {
    let targets = match v.pointer("/spec/targets") {
        Some(Value::Array(items)) => items
            .iter()
            .map(describe_selection)
            .collect::<Vec<_>>()
            .join("; "),
        _ => String::new(),
    };
    let suspended = v
        .pointer("/spec/syncPolicy/suspended")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    vec![
        name_of(v),
        dash(str_at(v, &["spec", "repo"])),
        dash(str_at(v, &["spec", "path"])),
        dash(str_at(v, &["spec", "namespace"])),
        dash(&targets),
        if suspended { "yes" } else { "no" }.to_owned(),
        project_cell(v),
    ]
}

/// The App's Project, and whether it is outside it now (`-o yaml` says where).
fn project_cell(v: &Value) -> String {
    let name = match str_at(v, &["spec", "project"]) {
        "" => "default",
        name => name,
    };
    match v
        .pointer("/status/project/problems")
        .and_then(Value::as_array)
    {
        Some(problems) if !problems.is_empty() => format!(
            "{name} (outside: {} problem{}, see -o yaml)",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        ),
        _ => name.to_owned(),
    }
}

/// `shop, https://git.example.com/team-a/*`; `env=prod: team-a,team-a-*`; `rbac.../Role`.
fn health_rule_row(v: &Value) -> Vec<String> {
    let group = str_at(v, &["spec", "group"]);
    let kind = str_at(v, &["spec", "kind"]);
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    vec![
        str_at(v, &["metadata", "name"]).to_owned(),
        if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{group}/{kind}")
        },
        or_dash(str_at(v, &["spec", "degradedWhen"])),
        or_dash(str_at(v, &["spec", "healthyWhen"])),
    ]
}

fn project_row(v: &Value) -> Vec<String> {
    let strings = |pointer: &str| -> Vec<String> {
        v.pointer(pointer)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let destinations = v
        .pointer("/spec/destinations")
        .and_then(Value::as_array)
        .map(|ds| {
            ds.iter()
                .map(|d| {
                    let clusters = if let Some(name) = d.get("name").and_then(Value::as_str) {
                        format!("cluster {name}")
                    } else if let Some(group) = d.get("group").and_then(Value::as_str) {
                        format!("group {group}")
                    } else {
                        d.get("clusterSelector")
                            .map(describe_selector)
                            .unwrap_or_default()
                    };
                    let namespaces: Vec<&str> = d
                        .get("namespaces")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    format!("{clusters}: {}", namespaces.join(","))
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    let kinds = v
        .pointer("/spec/clusterResources")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|gk| {
                    let group = gk.get("group").and_then(Value::as_str).unwrap_or_default();
                    let kind = gk.get("kind").and_then(Value::as_str).unwrap_or_default();
                    if group.is_empty() {
                        kind.to_owned()
                    } else {
                        format!("{group}/{kind}")
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    vec![
        name_of(v),
        dash(&strings("/spec/sourceRepos").join(", ")),
        dash(&destinations),
        if kinds.is_empty() {
            "none".to_owned()
        } else {
            kinds
        },
    ]
}

fn group_row(v: &Value) -> Vec<String> {
    let selector = v
        .pointer("/spec/selector")
        .map(describe_selector)
        .unwrap_or_default();
    vec![name_of(v), dash(&selector)]
}

fn other_row(v: &Value) -> Vec<String> {
    vec![dash(str_at(v, &["kind"])), name_of(v)]
}

fn name_of(v: &Value) -> String {
    dash(str_at(v, &["metadata", "name"]))
}

/// `env=prod`, `group eu`, `clusters edge-1,edge-2`.
fn describe_selection(selection: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(selector) = selection.get("clusterSelector") {
        parts.push(describe_selector(selector));
    }
    if let Some(group) = selection.get("clusterGroup").and_then(Value::as_str) {
        parts.push(format!("group {group}"));
    }
    if let Some(Value::Array(names)) = selection.get("clusters") {
        let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
        if !names.is_empty() {
            parts.push(format!("clusters {}", names.join(",")));
        }
    }
    parts.join(" ")
}

/// A label selector the way kubectl writes one: `env=prod,tier in (a,b),!legacy`.
fn describe_selector(selector: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(Value::Object(labels)) = selector.get("matchLabels") {
        for (k, v) in labels {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    if let Some(Value::Array(exprs)) = selector.get("matchExpressions") {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
            let values: Vec<&str> = match e.get("values") {
                Some(Value::Array(vs)) => vs.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            let part = match e
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or_default()
            {
                "In" => format!("{key} in ({})", values.join(",")),
                "NotIn" => format!("{key} notin ({})", values.join(",")),
                "Exists" => key.to_owned(),
                "DoesNotExist" => format!("!{key}"),
                other => format!("{key} {other} ({})", values.join(",")),
            };
            parts.push(part);
        }
    }
    if parts.is_empty() {
        "<all clusters>".to_owned()
    } else {
        parts.join(",")
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut current = v;
    for key in path {
        match current.get(key) {
            Some(next) => current = next,
            None => return "",
        }
    }
    current.as_str().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// delete

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteReport {
    pub kind: String,
    pub name: String,
    pub deleted: bool,
}

pub fn delete_text(report: &DeleteReport) -> String {
    format!(
        "{}/{} deleted\n",
        report.kind.to_ascii_lowercase(),
        report.name
    )
}

// ---------------------------------------------------------------------------------------------
// token create

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenReport {
    pub token: String,
    pub token_id: String,
    /// RFC 3339.
    pub expires_at: Option<String>,
    pub expires_at_unix: i64,
}

pub fn token_report(response: &pb::CreateTokenResponse) -> TokenReport {
    TokenReport {
        token: response.token.clone(),
        token_id: response.token_id.clone(),
        expires_at: rfc3339(response.expires_at_unix),
        expires_at_unix: response.expires_at_unix,
    }
}

/// The token on its own first line (easy to copy), then its expiry and how a spoke uses it
/// against `server`, the hub this CLI talked to.
pub fn token_text(report: &TokenReport, server: &str, style: Style) -> String {
    let expires = match &report.expires_at {
        Some(at) => format!(
            "{at} ({})",
            relative(report.expires_at_unix, style.now_unix)
        ),
        None => "never".to_owned(),
    };
    format!(
        "{token}\n\ntoken id: {id}\nexpires:  {expires}\n\n\
         This token is shown only once. Register a cluster with it on the spoke's first start:\n\
         \x20 gitfleet config view --ca > hub-ca.pem\n\
         \x20 gitfleet-spoke run --hub {server} --hub-ca hub-ca.pem --bootstrap-token {token} \\\n\
         \x20     --cluster-name NAME --data-dir DIR\n",
        token = report.token,
        id = report.token_id,
    )
}

// ---------------------------------------------------------------------------------------------
// cluster list

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterListReport {
    pub clusters: Vec<ClusterReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReport {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
    pub connected: bool,
    /// Cut off by an admin (listed only with `cluster list --all`).
    #[serde(default)]
    pub revoked: bool,
    /// RFC 3339 times; absent when unknown.
    pub last_contact: Option<String>,
    pub registered_at: Option<String>,
    pub certificate_expires: Option<String>,
}

/// Sorted by name.
pub fn cluster_list_report(clusters: &[pb::ClusterInfo]) -> ClusterListReport {
    let mut clusters: Vec<ClusterReport> = clusters.iter().map(cluster_report).collect();
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    ClusterListReport { clusters }
}

/// One cluster as `cluster list` shows it (and `cluster label` answers with).
pub fn cluster_report(c: &pb::ClusterInfo) -> ClusterReport {
    ClusterReport {
        name: c.name.clone(),
        labels: c.labels.clone().into_iter().collect(),
        agent_version: c.agent_version.clone(),
        connected: c.connected,
        revoked: c.revoked,
        last_contact: rfc3339(c.last_contact_unix),
        registered_at: rfc3339(c.registered_at_unix),
        certificate_expires: rfc3339(c.certificate_expires_unix),
    }
}

/// kubectl's answer to `label`, with the labels the cluster now has.
pub fn labeled_text(report: &ClusterReport) -> String {
    let labels = if report.labels.is_empty() {
        "none".to_owned()
    } else {
        report
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!("cluster/{} labeled (labels: {labels})\n", report.name)
}

pub fn cluster_table(report: &ClusterListReport, style: Style) -> String {
    if report.clusters.is_empty() {
        return "No clusters registered: create a token with `gitfleet token create` and start a \
                spoke with it (registrations waiting for approval: `gitfleet cluster pending`)\n"
            .to_owned();
    }
    let mut table = plain_table(&["NAME", "LABELS", "CONNECTED", "LAST CONTACT", "AGENT"]);
    for c in &report.clusters {
        let labels = labels_text(&c.labels);
        let (connected, color) = if c.revoked {
            ("revoked", Color::DarkGrey)
        } else if c.connected {
            ("yes", Color::Green)
        } else {
            ("no", Color::Red)
        };
        let last_contact = ago(c.last_contact.as_deref(), style.now_unix);
        table.add_row(vec![
            Cell::new(&c.name),
            Cell::new(dash(&labels)),
            colored(connected, Some(color), style),
            Cell::new(last_contact),
            Cell::new(dash(&c.agent_version)),
        ]);
    }
    finish(&table)
}

// ---------------------------------------------------------------------------------------------
// cluster pending / approve / revoke

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingListReport {
    pub clusters: Vec<PendingClusterReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingClusterReport {
    pub name: String,
    /// The labels the cluster will have once approved (the token's, plus the spoke's under
    /// keys the token allows).
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
    /// RFC 3339; when the spoke first asked to register.
    pub requested_at: Option<String>,
}

/// Sorted by name.
pub fn pending_list_report(clusters: &[pb::PendingCluster]) -> PendingListReport {
    let mut clusters: Vec<PendingClusterReport> = clusters
        .iter()
        .map(|c| PendingClusterReport {
            name: c.name.clone(),
            labels: c.labels.clone().into_iter().collect(),
            agent_version: c.agent_version.clone(),
            requested_at: rfc3339(c.requested_at_unix),
        })
        .collect();
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    PendingListReport { clusters }
}

pub fn pending_table(report: &PendingListReport, style: Style) -> String {
    if report.clusters.is_empty() {
        return "No registrations waiting for approval (only a hub started with \
                --require-approval keeps them waiting)\n"
            .to_owned();
    }
    let mut table = plain_table(&["NAME", "LABELS", "AGENT", "REQUESTED"]);
    for c in &report.clusters {
        table.add_row(vec![
            c.name.clone(),
            dash(&labels_text(&c.labels)),
            dash(&c.agent_version),
            ago(c.requested_at.as_deref(), style.now_unix),
        ]);
    }
    finish(&table)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApproveReport {
    pub name: String,
    pub approved: bool,
}

pub fn approve_text(report: &ApproveReport) -> String {
    format!(
        "cluster/{} approved; its spoke gets its certificate on its next registration retry\n",
        report.name
    )
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokeClusterReport {
    pub name: String,
    pub revoked: bool,
}

pub fn revoke_cluster_text(report: &RevokeClusterReport) -> String {
    format!(
        "cluster/{} revoked; its connection is closed, its certificate is refused from now on and \
         its Targets are removed\n",
        report.name
    )
}

// ---------------------------------------------------------------------------------------------
// token list / revoke

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenListReport {
    pub tokens: Vec<TokenInfoReport>,
}

/// A token as the hub keeps it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfoReport {
    pub token_id: String,
    pub description: String,
    /// Labels that clusters registering with the token get.
    pub labels: BTreeMap<String, String>,
    /// Keys under which the registering spoke may add labels of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_label_keys: Vec<String>,
    /// The one cluster name the token registers; absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Clusters registered with it so far.
    pub uses: u32,
    /// `null`: any number of uses until it expires.
    pub max_uses: Option<u32>,
    /// RFC 3339.
    pub expires_at: Option<String>,
    pub expires_at_unix: i64,
    pub revoked: bool,
}

/// Sorted by expiry (soonest first), then id.
pub fn token_list_report(tokens: &[pb::TokenInfo]) -> TokenListReport {
    let mut tokens: Vec<TokenInfoReport> = tokens
        .iter()
        .map(|t| TokenInfoReport {
            token_id: t.token_id.clone(),
            description: t.description.clone(),
            labels: t
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            allowed_label_keys: {
                let mut keys = t.allowed_label_keys.clone();
                keys.sort();
                keys
            },
            cluster: Some(t.cluster_name.clone()).filter(|c| !c.is_empty()),
            uses: t.uses,
            max_uses: (t.max_uses > 0).then_some(t.max_uses),
            expires_at: rfc3339(t.expires_at_unix),
            expires_at_unix: t.expires_at_unix,
            revoked: t.revoked,
        })
        .collect();
    tokens.sort_by(|a, b| (a.expires_at_unix, &a.token_id).cmp(&(b.expires_at_unix, &b.token_id)));
    TokenListReport { tokens }
}

pub fn token_table(report: &TokenListReport, style: Style) -> String {
    if report.tokens.is_empty() {
        return "No bootstrap tokens: create one with `gitfleet token create`\n".to_owned();
    }
    let mut table = plain_table(&[
        "ID",
        "DESCRIPTION",
        "CLUSTER",
        "LABELS",
        "USES",
        "EXPIRES",
        "REVOKED",
    ]);
    for t in &report.tokens {
        let max = t
            .max_uses
            .map_or_else(|| "unlimited".to_owned(), |m| m.to_string());
        let used_up = t.max_uses.is_some_and(|m| t.uses >= m);
        let expired = t.expires_at_unix != 0 && t.expires_at_unix <= style.now_unix;
        let expires = if t.expires_at_unix == 0 {
            "never".to_owned()
        } else if expired {
            format!("expired {}", relative(t.expires_at_unix, style.now_unix))
        } else {
            relative(t.expires_at_unix, style.now_unix)
        };
        let (revoked, revoked_color) = if t.revoked {
            ("yes", Some(Color::Red))
        } else {
            ("no", None)
        };
        table.add_row(vec![
            Cell::new(&t.token_id),
            Cell::new(dash(&t.description)),
            Cell::new(t.cluster.as_deref().unwrap_or("any")),
            Cell::new(dash(&token_labels_text(t))),
            colored(
                format!("{}/{max}", t.uses),
                used_up.then_some(Color::Red),
                style,
            ),
            colored(expires, expired.then_some(Color::Red), style),
            colored(revoked, revoked_color, style),
        ]);
    }
    finish(&table)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokeTokenReport {
    pub token_id: String,
    pub revoked: bool,
}

pub fn revoke_token_text(report: &RevokeTokenReport) -> String {
    format!(
        "token/{} revoked; no cluster can register with it any more (clusters it already \
         registered keep their certificates)\n",
        report.token_id
    )
}

// ---------------------------------------------------------------------------------------------
// time

/// RFC 3339 in UTC; `None` for 0 (the wire's "unset").
pub fn rfc3339(unix: i64) -> Option<String> {
    if unix == 0 {
        return None;
    }
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

pub(super) fn parse_rfc3339(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp())
}

/// `12s ago`, `in 59m`, `just now`.
pub fn relative(then_unix: i64, now_unix: i64) -> String {
    let delta = now_unix - then_unix;
    if delta == 0 {
        "just now".to_owned()
    } else if delta > 0 {
        format!("{} ago", humanize(delta.unsigned_abs()))
    } else {
        format!("in {}", humanize(delta.unsigned_abs()))
    }
}

/// A duration the way kubectl prints ages: `12s`, `3m12s`, `45m`, `5h3m`, `3d4h`, `41d`.
pub fn humanize(seconds: u64) -> String {
    const MIN: u64 = 60;
    const HOUR: u64 = 60 * MIN;
    const DAY: u64 = 24 * HOUR;
    let with = |big: u64, big_unit: &str, small: u64, small_unit: &str| {
        if small == 0 {
            format!("{big}{big_unit}")
        } else {
            format!("{big}{big_unit}{small}{small_unit}")
        }
    };
    match seconds {
        s if s < MIN => format!("{s}s"),
        s if s < 10 * MIN => with(s / MIN, "m", s % MIN, "s"),
        s if s < HOUR => format!("{}m", s / MIN),
        s if s < DAY => with(s / HOUR, "h", (s % HOUR) / MIN, "m"),
        s if s < 10 * DAY => with(s / DAY, "d", (s % DAY) / HOUR, "h"),
        s => format!("{}d", s / DAY),
    }
}

// ---------------------------------------------------------------------------------------------
// table plumbing

/// A borderless table like kubectl's: left-aligned, three spaces between columns.
pub(super) fn plain_table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(header.to_vec());
    // Styling is decided by the caller (Style::color), not by whether our stdout is a tty.
    table.enforce_styling();
    table
}

pub(super) fn finish(table: &Table) -> String {
    let mut table = table.clone();
    let columns = table.column_count();
    for (i, column) in table.column_iter_mut().enumerate() {
        let right = if i + 1 == columns { 0 } else { 3 };
        column.set_padding((0, right));
        column.set_cell_alignment(CellAlignment::Left);
    }
    let mut text = table.trim_fmt();
    text.push('\n');
    text
}

pub(super) fn colored(text: impl std::fmt::Display, color: Option<Color>, style: Style) -> Cell {
    let cell = Cell::new(text);
    match color {
        Some(c) if style.color => cell.fg(c),
        _ => cell,
    }
}

/// Plain text in a colour, for lines outside tables.
pub(super) fn paint(text: &str, color: Option<Color>, enabled: bool) -> String {
    let code = match color {
        Some(Color::Green) => "32",
        Some(Color::Yellow) => "33",
        Some(Color::Red) => "31",
        _ => return text.to_owned(),
    };
    if enabled {
        format!("\u{1b}[{code}m{text}\u{1b}[0m")
    } else {
        text.to_owned()
    }
}

/// `env=prod,region=eu`, sorted by key.
/// A token's labels, then the keys a spoke may set as `KEY=*`.
fn token_labels_text(t: &TokenInfoReport) -> String {
    let mut parts: Vec<String> = t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.extend(t.allowed_label_keys.iter().map(|k| format!("{k}=*")));
    parts.join(",")
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `12s ago` for an RFC 3339 time, `never` when there is none.
pub(super) fn ago(time: Option<&str>, now_unix: i64) -> String {
    time.and_then(parse_rfc3339)
        .map_or_else(|| "never".to_owned(), |t| relative(t, now_unix))
}

pub(super) fn dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

fn join_nonempty(a: &str, b: &str) -> String {
    if b.is_empty() {
        a.to_owned()
    } else {
        format!("{a}; {b}")
    }
}
