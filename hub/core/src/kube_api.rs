//! The Kubernetes-native API (docs/kube-api.md), its pure decisions: a custom resource
//! (`gitfleet.dev/v1` Repo, App, ClusterGroup, Project in the management cluster) as the hub's
//! resource document, who owns a stored resource, the status written back (conditions, an App's
//! summary of its Targets) and which way a Cluster's labels flow. The hub's `kube_api` adapter
//! does the IO (kube-rs) and the engine validates and applies the documents as it does every
//! `gitfleet apply`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::cluster_labels::LabelChanges;
use crate::model::{HealthState, SyncState};
use crate::resources::{API_VERSION, Kind, Metadata};

#[cfg(test)]
mod tests;

/// The API group of every gitfleet custom resource.
pub const GROUP: &str = "gitfleet.dev";
/// Its one version.
pub const VERSION: &str = "v1";
/// The annotation the hub puts on a resource taken from a custom resource; its value is
/// [`owner`] (`NAMESPACE/NAME`). `gitfleet apply` and `delete` refuse such a resource.
pub const OWNER_ANNOTATION: &str = "gitfleet.dev/kube-object";
/// The finalizer the hub puts on every custom resource it has taken: the hub's resource is
/// deleted before the custom resource goes.
pub const FINALIZER: &str = "gitfleet.dev/hub-resource";
/// The field manager of the hub's writes to the management cluster.
pub const FIELD_MANAGER: &str = "gitfleet-hub";
/// The kind of the custom resource per registered cluster.
pub const CLUSTER_KIND: &str = "Cluster";
pub const CLUSTER_PLURAL: &str = "clusters";

/// The resource kinds declared as custom resources, with their plural.
pub const RESOURCE_KINDS: [(Kind, &str); 4] = [
    (Kind::Repo, "repos"),
    (Kind::App, "apps"),
    (Kind::ClusterGroup, "clustergroups"),
    (Kind::Project, "projects"),
];

/// The plural of a kind declared as a custom resource.
pub fn plural(kind: Kind) -> Option<&'static str> {
    RESOURCE_KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, p)| *p)
}

/// The owner annotation's value for the custom resource `name` in `namespace`.
pub fn owner(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The custom resource that owns a stored resource, if one does.
pub fn owner_of(metadata: &Metadata) -> Option<&str> {
    metadata
        .annotations
        .get(OWNER_ANNOTATION)
        .map(String::as_str)
}

/// Why `gitfleet apply` or `delete` (`verb`) may not touch `kind`/`name`, owned by the custom
/// resource `owner`: it would be overwritten, or come back, at the controller's next pass.
pub fn refusal(verb: &str, kind: Kind, name: &str, owner: &str) -> String {
    let plural = plural(kind).unwrap_or("resources");
    let (namespace, cr) = owner.split_once('/').unwrap_or(("", owner));
    format!(
        "{kind} {name:?} is owned by the Kubernetes object {plural}.{GROUP}/{cr} in namespace \
         {namespace:?}: {verb} it there (kubectl {verb} ... -n {namespace}), not with gitfleet"
    )
}

/// Whether the custom resource `owner` may write (apply or delete) the stored resource
/// described by `stored` (`None`: there is none yet).
pub fn may_take(
    kind: Kind,
    name: &str,
    stored: Option<&Metadata>,
    owner: &str,
) -> Result<(), String> {
    match stored.map(owner_of) {
        None => Ok(()),
        Some(Some(o)) if o == owner => Ok(()),
        Some(Some(other)) => Err(format!(
            "{kind} {name:?} is already owned by the Kubernetes object {other}"
        )),
        Some(None) => Err(format!(
            "{kind} {name:?} exists in the hub, applied with `gitfleet apply`: delete it there \
             (gitfleet delete {} {name}) for this object to take it over",
            kind.as_str().to_ascii_lowercase()
        )),
    }
}

/// The hub's resource document for a custom resource of `kind` in `namespace` (the object as
/// the API server returns it): its name, its labels, the owner annotation and its `spec` as
/// written. Validation is the hub's, as for `gitfleet apply`.
pub fn document(kind: Kind, namespace: &str, object: &Value) -> Value {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut metadata = json!({
        "name": name,
        "annotations": { OWNER_ANNOTATION: owner(namespace, name) },
    });
    if let Some(labels) = object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .filter(|l| !l.is_empty())
    {
        metadata["labels"] = Value::Object(labels.clone());
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": kind.as_str(),
        "metadata": metadata,
        "spec": object.get("spec").cloned().unwrap_or_else(|| json!({})),
    })
}

/// Why a custom resource is not (or is) in force in the hub: the `Ready` condition's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// CamelCase: `Applied`, `Invalid`, `Conflict`, `FetchFailed`, `DeleteRefused`.
    pub reason: String,
    pub message: String,
}

impl Readiness {
    pub fn ready(reason: &str, message: impl Into<String>) -> Self {
        Self {
            ready: true,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    pub fn not_ready(reason: &str, message: impl Into<String>) -> Self {
        Self {
            ready: false,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

/// The `Ready` condition for `generation`, keeping the transition time of `previous` (the
/// object's current `status`) when the status did not change; `now` is RFC 3339.
pub fn ready_condition(
    readiness: &Readiness,
    generation: i64,
    previous: &Value,
    now: &str,
) -> Value {
    let status = if readiness.ready { "True" } else { "False" };
    let since = previous
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .filter(|c| c["status"] == status)
        .and_then(|c| c.get("lastTransitionTime"))
        .and_then(Value::as_str)
        .unwrap_or(now);
    json!({
        "type": "Ready",
        "status": status,
        "reason": readiness.reason,
        "message": readiness.message,
        "observedGeneration": generation,
        "lastTransitionTime": since,
    })
}

/// One Target of an App as its status summary needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetState {
    /// The revision the hub gives the Target.
    pub desired: String,
    /// The revision the spoke last reported about (empty: no report yet).
    pub reported: String,
    pub sync: SyncState,
    pub health: HealthState,
}

/// How bad a health is, Argo CD's order: Healthy, Suspended, Progressing, Missing, Degraded,
/// Unknown.
fn badness(h: HealthState) -> u8 {
    match h {
        HealthState::Healthy => 0,
        HealthState::Suspended => 1,
        HealthState::Progressing => 2,
        HealthState::Missing => 3,
        HealthState::Degraded => 4,
        HealthState::Unknown => 5,
    }
}

/// An App's sync over its Targets: `Synced` when every Target is synced at the revision the hub
/// gives it, `Failed` when one failed, `OutOfSync` when one drifted, `Syncing` while any is on
/// its way; `Unknown` without Targets.
pub fn app_sync(targets: &[TargetState]) -> SyncState {
    if targets.is_empty() {
        return SyncState::Unknown;
    }
    if targets.iter().any(|t| t.sync == SyncState::Failed) {
        return SyncState::Failed;
    }
    if targets.iter().any(|t| t.sync == SyncState::OutOfSync) {
        return SyncState::OutOfSync;
    }
    if targets
        .iter()
        .all(|t| t.sync == SyncState::Synced && t.reported == t.desired)
    {
        return SyncState::Synced;
    }
    SyncState::Syncing
}

/// An App's health over its Targets: the worst one's; a Target still reporting about another
/// revision than the one it is given counts as Progressing at best. `Unknown` without Targets.
pub fn app_health(targets: &[TargetState]) -> HealthState {
    targets
        .iter()
        .map(|t| {
            if t.reported != t.desired && badness(t.health) < badness(HealthState::Progressing) {
                HealthState::Progressing
            } else {
                t.health
            }
        })
        .max_by_key(|h| badness(*h))
        .unwrap_or(HealthState::Unknown)
}

/// The first 8 characters of a commit, as the CLI prints it.
pub fn short_revision(commit: &str) -> &str {
    commit.get(..8).unwrap_or(commit)
}

/// An App custom resource's `status` summary (besides its conditions): the revision its rollout
/// moves to, its sync and health, its Targets counted by health, the rollout's phase and reason.
pub fn app_status(revision: &str, phase: &str, reason: &str, targets: &[TargetState]) -> Value {
    let mut counts: BTreeMap<&str, usize> = [
        "healthy",
        "progressing",
        "degraded",
        "missing",
        "suspended",
        "unknown",
    ]
    .into_iter()
    .map(|k| (k, 0))
    .collect();
    for t in targets {
        let key = match t.health {
            HealthState::Healthy => "healthy",
            HealthState::Progressing => "progressing",
            HealthState::Degraded => "degraded",
            HealthState::Missing => "missing",
            HealthState::Suspended => "suspended",
            HealthState::Unknown => "unknown",
        };
        *counts.entry(key).or_default() += 1;
    }
    let mut summary = json!({ "total": targets.len() });
    for (k, v) in counts {
        summary[k] = json!(v);
    }
    json!({
        "revision": revision,
        "shortRevision": short_revision(revision),
        "sync": app_sync(targets).to_string(),
        "health": app_health(targets).to_string(),
        "phase": phase,
        "message": reason,
        "targets": summary,
    })
}

/// Which way a Cluster's labels go, between the hub and its custom resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelFlow {
    /// They agree.
    None,
    /// The custom resource's `spec.labels` changed (a person edited it): the hub takes them.
    ToHub(BTreeMap<String, String>),
    /// The hub's changed (`gitfleet cluster label`, or a new cluster): the custom resource's
    /// `spec.labels` take them.
    ToObject(BTreeMap<String, String>),
}

/// A three-way decision over a Cluster's labels: the hub's, the custom resource's `spec.labels`
/// (`None`: no object yet, or none in its spec) and the labels both last agreed on
/// (`status.labels`, `None` when never written). The side that moved from the agreed labels
/// wins; when both did, the object (the later, declarative edit) wins.
pub fn label_flow(
    hub: &BTreeMap<String, String>,
    spec: Option<&BTreeMap<String, String>>,
    agreed: Option<&BTreeMap<String, String>>,
) -> LabelFlow {
    let Some(spec) = spec else {
        return LabelFlow::ToObject(hub.clone());
    };
    if spec == hub {
        return LabelFlow::None;
    }
    match agreed {
        Some(agreed) if agreed == spec => LabelFlow::ToObject(hub.clone()),
        _ => LabelFlow::ToHub(spec.clone()),
    }
}

/// The label changes that turn `from` into `to` (`cluster label`'s grammar, overwriting); `None`
/// when they are the same.
pub fn label_changes(
    from: &BTreeMap<String, String>,
    to: &BTreeMap<String, String>,
) -> Option<LabelChanges> {
    if from == to {
        return None;
    }
    let set: BTreeMap<String, String> = to
        .iter()
        .filter(|(k, v)| from.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let remove: BTreeSet<String> = from
        .keys()
        .filter(|k| !to.contains_key(*k))
        .cloned()
        .collect();
    Some(LabelChanges {
        set,
        remove,
        overwrite: true,
    })
}

/// Labels read from a JSON object of strings (`spec.labels`); `None` when absent or not one.
pub fn labels_of(value: Option<&Value>) -> Option<BTreeMap<String, String>> {
    let map = value?.as_object()?;
    Some(
        map.iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
            .collect(),
    )
}

/// How far a Cluster's last contact may move before its object's status is written again.
pub const CONTACT_GRANULARITY_SECS: i64 = 60;

/// The last contact (unix seconds) a Cluster object's status shows: the hub's once it moved by
/// [`CONTACT_GRANULARITY_SECS`] or more from what the object shows (`written`), or when the
/// connection state changed; else what the object has, so that heartbeats cause no writes.
pub fn contact_to_write(written: Option<i64>, latest: i64, connection_changed: bool) -> i64 {
    match written {
        Some(w) if !connection_changed && (latest - w).abs() < CONTACT_GRANULARITY_SECS => w,
        _ => latest,
    }
}

/// A Repo object's status summary (besides its conditions): the commit its ref resolved to at
/// the last fetch, and the fetch's error; with what that makes of a Repo the hub took (not
/// ready while it fails to fetch, or before its first fetch).
pub fn repo_status(commit: &str, error: &str) -> (Value, Readiness) {
    let mut status = json!({
        "revision": commit,
        "shortRevision": short_revision(commit),
    });
    let readiness = if !error.is_empty() {
        status["error"] = json!(error);
        Readiness::not_ready("FetchFailed", error)
    } else if commit.is_empty() {
        Readiness::not_ready("Fetching", "not fetched yet")
    } else {
        Readiness::ready("Applied", "in force in the hub")
    };
    (status, readiness)
}

/// A registered cluster as its Cluster object's status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterFacts {
    /// The labels the hub and the object last agreed on.
    pub labels: BTreeMap<String, String>,
    pub connected: bool,
    pub agent_version: String,
    /// RFC 3339; `None` when never heard from.
    pub last_contact: Option<String>,
    pub registered: String,
}

/// A Cluster object's status summary (besides its conditions).
pub fn cluster_status(facts: &ClusterFacts) -> Value {
    let mut status = json!({
        "labels": facts.labels,
        "connected": facts.connected,
        "agentVersion": facts.agent_version,
        "registered": facts.registered,
    });
    if let Some(t) = &facts.last_contact {
        status["lastContact"] = json!(t);
    }
    status
}
