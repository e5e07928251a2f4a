//! Health of one live object: from its JSON to a [`Health`] and the reason a person needs.
//!
//! Pure. An object of a kind a custom health rule names (the Target's rules, then the
//! built-in ones for common CRDs: `gitfleet_core::health_rules`) is judged by the rule. Otherwise
//! the judgement follows what the Kubernetes controllers report: a workload is healthy when its
//! controller has observed the latest spec (`observedGeneration`) and enough replicas are updated
//! and available; Jobs by their terminal conditions; anything else with standard `Ready` /
//! `Available` conditions by those. Timing ("progressing for too long") is the caller's business.

use std::sync::LazyLock;

use serde_json::Value;

use gitfleet_core::health_rules::RuleHealth;
pub use gitfleet_core::health_rules::RuleSet;

use crate::model::Health;

/// Health of one object, with the reason (empty when there is nothing worth saying).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub health: Health,
    pub message: String,
}

impl Assessment {
    fn new(health: Health, message: impl Into<String>) -> Self {
        Self {
            health,
            message: message.into(),
        }
    }
    fn healthy(message: impl Into<String>) -> Self {
        Self::new(Health::Healthy, message)
    }
    fn progressing(message: impl Into<String>) -> Self {
        Self::new(Health::Progressing, message)
    }
    fn degraded(message: impl Into<String>) -> Self {
        Self::new(Health::Degraded, message)
    }
}

/// Container states that will not fix themselves without a change.
const FAILED_WAITING_REASONS: &[&str] = &[
    "CrashLoopBackOff",
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Assesses a live object (`None`: it does not exist) by the built-in rules alone.
pub fn assess(object: Option<&Value>) -> Assessment {
    static BUILTIN: LazyLock<RuleSet> = LazyLock::new(|| RuleSet::new(&[]));
    assess_with(object, &BUILTIN)
}

/// Assesses a live object (`None`: it does not exist), by the first of `rules` that names its
/// kind, else by what its controller reports.
pub fn assess_with(object: Option<&Value>, rules: &RuleSet) -> Assessment {
    let Some(object) = object else {
        return Assessment::new(Health::Missing, "not found in the cluster");
    };
    if object
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        return Assessment::progressing("being deleted");
    }
    let api_version = str_at(object, "/apiVersion").unwrap_or_default();
    let group = super::render::group_of(api_version);
    let kind = str_at(object, "/kind").unwrap_or_default();
    if let Some(judged) = rules.judge(group, kind, object) {
        let health = match judged.health {
            RuleHealth::Healthy => Health::Healthy,
            RuleHealth::Progressing => Health::Progressing,
            RuleHealth::Degraded => Health::Degraded,
            RuleHealth::Suspended => Health::Suspended,
            RuleHealth::Unknown => Health::Unknown,
        };
        return Assessment::new(health, judged.message);
    }
    match (group, kind) {
        ("apps", "Deployment") => deployment(object),
        ("apps", "StatefulSet") => stateful_set(object),
        ("apps", "DaemonSet") => daemon_set(object),
        ("apps", "ReplicaSet") | ("", "ReplicationController") => replica_set(object),
        ("batch", "Job") => job(object),
        ("batch", "CronJob") => cron_job(object),
        ("", "Pod") => pod(object),
        ("", "PersistentVolumeClaim") => pvc(object),
        ("", "PersistentVolume") => pv(object),
        ("", "Service") => service(object),
        ("networking.k8s.io" | "extensions", "Ingress") => ingress(object),
        ("autoscaling", "HorizontalPodAutoscaler") => hpa(object),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(object),
        _ => generic(object),
    }
}

/// Progressing while the controller has not yet seen the latest spec. `required`: the kind's
/// controller always reports observedGeneration, so its absence means "not observed yet".
fn unobserved(object: &Value, required: bool) -> Option<Assessment> {
    let generation = i64_at(object, "/metadata/generation")?;
    let observed = match i64_at(object, "/status/observedGeneration") {
        Some(observed) => observed,
        None if required => 0,
        None => return None,
    };
    (observed < generation).then(|| {
        Assessment::progressing(format!(
            "waiting for the controller to observe generation {generation} (observed {observed})"
        ))
    })
}

fn deployment(d: &Value) -> Assessment {
    if bool_at(d, "/spec/paused") {
        return Assessment::new(Health::Suspended, "rollout is paused");
    }
    if let Some(a) = unobserved(d, true) {
        return a;
    }
    let replicas = i64_at(d, "/spec/replicas").unwrap_or(1);
    let updated = i64_at(d, "/status/updatedReplicas").unwrap_or(0);
    let current = i64_at(d, "/status/replicas").unwrap_or(0);
    let available = i64_at(d, "/status/availableReplicas").unwrap_or(0);
    if let Some(c) = condition(d, "ReplicaFailure").filter(|c| c.status == "True") {
        return Assessment::degraded(format!(
            "{available}/{replicas} replicas available: {}",
            c.reason_message()
        ));
    }
    if let Some(c) = condition(d, "Progressing").filter(|c| c.reason == "ProgressDeadlineExceeded")
    {
        return Assessment::degraded(format!(
            "{available}/{replicas} replicas available: {}",
            c.reason
        ));
    }
    if updated < replicas {
        return Assessment::progressing(format!("{updated}/{replicas} replicas updated"));
    }
    if current > updated {
        return Assessment::progressing(format!(
            "{} old replicas pending termination",
            current - updated
        ));
    }
    if available < updated {
        return Assessment::progressing(format!("{available}/{replicas} replicas available"));
    }
    Assessment::healthy(format!("{available}/{replicas} replicas available"))
}

fn stateful_set(s: &Value) -> Assessment {
    if let Some(a) = unobserved(s, true) {
        return a;
    }
    let replicas = i64_at(s, "/spec/replicas").unwrap_or(1);
    let ready = i64_at(s, "/status/readyReplicas").unwrap_or(0);
    let updated = i64_at(s, "/status/updatedReplicas").unwrap_or(0);
    if ready < replicas {
        return Assessment::progressing(format!("{ready}/{replicas} replicas ready"));
    }
    if str_at(s, "/spec/updateStrategy/type") == Some("OnDelete") {
        return Assessment::healthy(format!(
            "{ready}/{replicas} replicas ready (update strategy OnDelete)"
        ));
    }
    let partition = i64_at(s, "/spec/updateStrategy/rollingUpdate/partition").unwrap_or(0);
    if partition > 0 {
        let expected = (replicas - partition).max(0);
        if updated < expected {
            return Assessment::progressing(format!(
                "{updated}/{expected} replicas updated (partition {partition})"
            ));
        }
        return Assessment::healthy(format!(
            "partitioned rollout complete: {updated} replicas updated"
        ));
    }
    if let (Some(update), Some(current)) = (
        str_at(s, "/status/updateRevision"),
        str_at(s, "/status/currentRevision"),
    ) && update != current
    {
        return Assessment::progressing(format!(
            "rolling update: {updated}/{replicas} replicas at revision {update}"
        ));
    }
    Assessment::healthy(format!("{ready}/{replicas} replicas ready"))
}

fn daemon_set(d: &Value) -> Assessment {
    if let Some(a) = unobserved(d, true) {
        return a;
    }
    let desired = i64_at(d, "/status/desiredNumberScheduled").unwrap_or(0);
    let updated = i64_at(d, "/status/updatedNumberScheduled").unwrap_or(0);
    let available = i64_at(d, "/status/numberAvailable").unwrap_or(0);
    let on_delete = str_at(d, "/spec/updateStrategy/type") == Some("OnDelete");
    if !on_delete && updated < desired {
        return Assessment::progressing(format!("{updated}/{desired} pods updated"));
    }
    if available < desired {
        return Assessment::progressing(format!("{available}/{desired} pods available"));
    }
    Assessment::healthy(format!("{available}/{desired} pods available"))
}

fn replica_set(r: &Value) -> Assessment {
    if let Some(a) = unobserved(r, true) {
        return a;
    }
    let replicas = i64_at(r, "/spec/replicas").unwrap_or(1);
    let available = i64_at(r, "/status/availableReplicas").unwrap_or(0);
    if let Some(c) = condition(r, "ReplicaFailure").filter(|c| c.status == "True") {
        return Assessment::degraded(format!(
            "{available}/{replicas} replicas available: {}",
            c.reason_message()
        ));
    }
    if available < replicas {
        return Assessment::progressing(format!("{available}/{replicas} replicas available"));
    }
    Assessment::healthy(format!("{available}/{replicas} replicas available"))
}

fn job(j: &Value) -> Assessment {
    for failed in ["Failed", "FailureTarget"] {
        if let Some(c) = condition(j, failed).filter(|c| c.status == "True") {
            return Assessment::degraded(format!("job failed: {}", c.reason_message()));
        }
    }
    for done in ["Complete", "SuccessCriteriaMet"] {
        if condition(j, done).is_some_and(|c| c.status == "True") {
            return Assessment::healthy("job completed");
        }
    }
    if bool_at(j, "/spec/suspend") || condition(j, "Suspended").is_some_and(|c| c.status == "True")
    {
        return Assessment::new(Health::Suspended, "job is suspended");
    }
    let active = i64_at(j, "/status/active").unwrap_or(0);
    let succeeded = i64_at(j, "/status/succeeded").unwrap_or(0);
    Assessment::progressing(format!(
        "job running: {active} active, {succeeded} succeeded"
    ))
}

fn cron_job(c: &Value) -> Assessment {
    if bool_at(c, "/spec/suspend") {
        return Assessment::new(Health::Suspended, "cron job is suspended");
    }
    match str_at(c, "/status/lastScheduleTime") {
        Some(at) => Assessment::healthy(format!("last scheduled at {at}")),
        None => Assessment::healthy("not scheduled yet"),
    }
}

fn pod(p: &Value) -> Assessment {
    for statuses in ["/status/initContainerStatuses", "/status/containerStatuses"] {
        for status in p
            .pointer(statuses)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let reason = str_at(status, "/state/waiting/reason").unwrap_or_default();
            if FAILED_WAITING_REASONS.contains(&reason) {
                let name = str_at(status, "/name").unwrap_or("?");
                let message = str_at(status, "/state/waiting/message").unwrap_or_default();
                return Assessment::degraded(join(format!("container {name}: {reason}"), message));
            }
        }
    }
    let restart_always = str_at(p, "/spec/restartPolicy").is_none_or(|r| r == "Always");
    match str_at(p, "/status/phase").unwrap_or_default() {
        "Succeeded" => Assessment::healthy("pod completed"),
        "Failed" => {
            let reason = str_at(p, "/status/reason").unwrap_or("pod failed");
            Assessment::degraded(join(
                reason.to_owned(),
                str_at(p, "/status/message").unwrap_or_default(),
            ))
        }
        "Running" if restart_always => match condition(p, "Ready") {
            Some(c) if c.status == "True" => Assessment::healthy("running and ready"),
            _ => {
                let statuses = p
                    .pointer("/status/containerStatuses")
                    .and_then(Value::as_array);
                let total = statuses.map_or(0, Vec::len);
                let ready = statuses
                    .into_iter()
                    .flatten()
                    .filter(|s| s.get("ready").and_then(Value::as_bool) == Some(true))
                    .count();
                Assessment::progressing(format!("{ready}/{total} containers ready"))
            }
        },
        "Running" => Assessment::progressing("running"),
        "Pending" => match condition(p, "PodScheduled").filter(|c| c.status == "False") {
            Some(c) => Assessment::progressing(format!("pending: {}", c.reason_message())),
            None => Assessment::progressing("pending"),
        },
        "" => Assessment::progressing("waiting for the pod to be scheduled"),
        other => Assessment::new(Health::Unknown, format!("pod phase {other}")),
    }
}

fn pvc(p: &Value) -> Assessment {
    match str_at(p, "/status/phase") {
        Some("Bound") => Assessment::healthy("bound"),
        Some("Lost") => Assessment::degraded("the claim lost its volume"),
        _ => Assessment::progressing("waiting for a volume to be bound"),
    }
}

fn pv(p: &Value) -> Assessment {
    match str_at(p, "/status/phase") {
        Some("Bound" | "Available" | "Released") => Assessment::healthy(""),
        Some("Failed") => Assessment::degraded(join(
            "volume failed".to_owned(),
            str_at(p, "/status/message").unwrap_or_default(),
        )),
        _ => Assessment::progressing("waiting for the volume"),
    }
}

fn load_balancer_address(object: &Value) -> Option<String> {
    let ingress = object.pointer("/status/loadBalancer/ingress")?.as_array()?;
    let first = ingress.first()?;
    str_at(first, "/ip")
        .or_else(|| str_at(first, "/hostname"))
        .map(str::to_owned)
        .or(Some(String::new()))
}

fn service(s: &Value) -> Assessment {
    if str_at(s, "/spec/type") != Some("LoadBalancer") {
        return Assessment::healthy("");
    }
    match load_balancer_address(s) {
        Some(address) => Assessment::healthy(format!("load balancer at {address}")),
        None => Assessment::progressing("waiting for a load balancer address"),
    }
}

fn ingress(i: &Value) -> Assessment {
    match load_balancer_address(i) {
        Some(address) => Assessment::healthy(format!("address {address}")),
        None => Assessment::progressing("waiting for an address from the ingress controller"),
    }
}

fn hpa(h: &Value) -> Assessment {
    if let Some(c) = condition(h, "AbleToScale").filter(|c| c.status == "False") {
        return Assessment::degraded(format!("cannot scale: {}", c.reason_message()));
    }
    if let Some(c) = condition(h, "ScalingActive").filter(|c| c.status == "False") {
        if c.reason == "ScalingDisabled" {
            return Assessment::new(Health::Suspended, "scaling is disabled");
        }
        if c.reason.starts_with("Failed") || c.reason.starts_with("Invalid") {
            return Assessment::degraded(format!("scaling inactive: {}", c.reason_message()));
        }
        return Assessment::progressing(format!("scaling inactive: {}", c.reason_message()));
    }
    let current = i64_at(h, "/status/currentReplicas");
    let desired = i64_at(h, "/status/desiredReplicas");
    match (current, desired) {
        (Some(current), Some(desired)) => {
            Assessment::healthy(format!("{current}/{desired} replicas"))
        }
        (Some(current), None) => Assessment::healthy(format!("{current} replicas")),
        _ => Assessment::progressing("waiting for the autoscaler to report"),
    }
}

fn crd(c: &Value) -> Assessment {
    if let Some(names) = condition(c, "NamesAccepted").filter(|c| c.status == "False") {
        return Assessment::degraded(format!("names not accepted: {}", names.reason_message()));
    }
    if condition(c, "Terminating").is_some_and(|c| c.status == "True") {
        return Assessment::progressing("being deleted");
    }
    match condition(c, "Established") {
        Some(e) if e.status == "True" => Assessment::healthy("established"),
        _ => Assessment::progressing("waiting for the CRD to be established"),
    }
}

/// Custom resources and everything else: the conventions of kstatus (Stalled, Reconciling,
/// Ready, Available). A `Ready=False` is Progressing, not Degraded: many controllers report it
/// while they work; the progress timeout turns a lasting one into Degraded with this reason.
fn generic(o: &Value) -> Assessment {
    if let Some(a) = unobserved(o, false) {
        return a;
    }
    if let Some(c) = condition(o, "Stalled").filter(|c| c.status == "True") {
        return Assessment::degraded(format!("stalled: {}", c.reason_message()));
    }
    if let Some(c) = condition(o, "Reconciling").filter(|c| c.status == "True") {
        return Assessment::progressing(format!("reconciling: {}", c.reason_message()));
    }
    for kind in ["Ready", "Available"] {
        if let Some(c) = condition(o, kind) {
            return match c.status.as_str() {
                "True" => Assessment::healthy(""),
                "False" => Assessment::progressing(format!("{kind}=False: {}", c.reason_message())),
                _ => {
                    Assessment::progressing(format!("{kind}={}: {}", c.status, c.reason_message()))
                }
            };
        }
    }
    Assessment::healthy("")
}

struct Condition {
    status: String,
    reason: String,
    message: String,
}

impl Condition {
    fn reason_message(&self) -> String {
        let reason = if self.reason.is_empty() {
            "no reason given"
        } else {
            &self.reason
        };
        join(reason.to_owned(), &self.message)
    }
}

fn condition(object: &Value, kind: &str) -> Option<Condition> {
    let conditions = object.pointer("/status/conditions")?.as_array()?;
    let c = conditions
        .iter()
        .find(|c| str_at(c, "/type") == Some(kind))?;
    Some(Condition {
        status: str_at(c, "/status").unwrap_or("Unknown").to_owned(),
        reason: str_at(c, "/reason").unwrap_or_default().to_owned(),
        message: str_at(c, "/message").unwrap_or_default().to_owned(),
    })
}

fn join(head: String, tail: &str) -> String {
    if tail.is_empty() {
        head
    } else {
        format!("{head}: {tail}")
    }
}

fn str_at<'v>(v: &'v Value, pointer: &str) -> Option<&'v str> {
    v.pointer(pointer)?.as_str()
}

fn i64_at(v: &Value, pointer: &str) -> Option<i64> {
    v.pointer(pointer)?.as_i64()
}

fn bool_at(v: &Value, pointer: &str) -> bool {
    v.pointer(pointer).and_then(Value::as_bool).unwrap_or(false)
}

#[cfg(test)]
mod tests;
