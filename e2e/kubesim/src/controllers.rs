//! Simulated controllers, as pure decisions: which follow-up work a write schedules
//! ([`plan`]), and what status that work writes when it comes due ([`run`]). The one shared
//! timer task in `server.rs` keeps the schedule; nothing here sleeps or spawns.
//!
//! Workloads (Deployments, StatefulSets, DaemonSets, ReplicaSets, ReplicationControllers) report a
//! rollout in progress at once and become ready after the configured delay, unless annotated
//! [`FAIL_ANNOTATION`]`: "true"`, in which case they never become available (Deployments report
//! `Progressing=False/ProgressDeadlineExceeded` as a real one does after its deadline). Jobs
//! complete (or fail, with the annotation), PersistentVolumeClaims bind, LoadBalancer Services get
//! an address, Pods run, CustomResourceDefinitions and APIServices become established.

use serde_json::{Value, json};

/// Annotation that makes a workload (or Job, or Pod) fail instead of becoming ready.
pub const FAIL_ANNOTATION: &str = "kubesim.gitfleet.dev/fail";

/// When a planned step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delay {
    /// As soon as the timer gets to it (controllers react within milliseconds).
    Now,
    /// After the configured readiness delay.
    Ready,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A rollout (or run) has started.
    Progress,
    /// The delay has passed: ready, bound, complete, or failed.
    Settle,
    /// Delete a terminating namespace's contents, then the namespace.
    NamespaceCleanup,
}

fn kind_of(obj: &Value) -> &str {
    obj.get("kind").and_then(Value::as_str).unwrap_or("")
}

fn generation(obj: &Value) -> i64 {
    obj.pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

pub fn fails(obj: &Value) -> bool {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(FAIL_ANNOTATION))
        .and_then(Value::as_str)
        == Some("true")
}

fn is_workload(kind: &str) -> bool {
    matches!(
        kind,
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ReplicationController"
    )
}

/// The steps a write of `new` (replacing `old`, if any) schedules.
pub fn plan(old: Option<&Value>, new: &Value) -> Vec<(Delay, Step)> {
    if new.pointer("/metadata/deletionTimestamp").is_some() {
        return Vec::new();
    }
    let kind = kind_of(new);
    let created = old.is_none();
    let restarted = match old {
        None => true,
        Some(o) => generation(o) != generation(new) || fails(o) != fails(new),
    };
    match kind {
        k if is_workload(k) && restarted => {
            vec![(Delay::Now, Step::Progress), (Delay::Ready, Step::Settle)]
        }
        "Job" if restarted => vec![(Delay::Now, Step::Progress), (Delay::Ready, Step::Settle)],
        "PersistentVolumeClaim" | "Pod" if created => vec![(Delay::Ready, Step::Settle)],
        "Service"
            if new.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer")
                && new.pointer("/status/loadBalancer/ingress").is_none() =>
        {
            vec![(Delay::Ready, Step::Settle)]
        }
        "CustomResourceDefinition" | "APIService" => vec![(Delay::Now, Step::Settle)],
        _ => Vec::new(),
    }
}

/// Defaults the API server fills in on create (and keeps on update): enough for clients that
/// read them back (Service cluster IPs, replica counts, phases).
pub fn default_object(new: &mut Value, old: Option<&Value>, seed: u64) {
    let kind = kind_of(new).to_string();
    let spec_replicas = matches!(
        kind.as_str(),
        "Deployment" | "StatefulSet" | "ReplicaSet" | "ReplicationController"
    );
    if spec_replicas
        && new.pointer("/spec/replicas").is_none()
        && let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.insert("replicas".into(), json!(1));
    }
    match kind.as_str() {
        "Service" => default_service(new, old, seed),
        "Namespace" if new.pointer("/status/phase").is_none() => {
            new["status"] = json!({"phase": "Active"});
        }
        "Namespace" => {}
        "PersistentVolumeClaim" | "Pod" if new.pointer("/status/phase").is_none() => {
            new["status"] = json!({"phase": "Pending"});
        }
        "Secret"
            if new
                .get("type")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty) =>
        {
            new["type"] = json!("Opaque");
        }
        "PersistentVolume" if new.pointer("/status/phase").is_none() => {
            new["status"] = json!({"phase": "Available"});
        }
        _ => {}
    }
    if kind == "Namespace" {
        let name = new
            .pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::Null);
        if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), name);
            }
        }
        if new.pointer("/spec/finalizers").is_none() {
            new["spec"] = json!({"finalizers": ["kubernetes"]});
        }
    }
}

fn default_service(new: &mut Value, old: Option<&Value>, seed: u64) {
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let ty = spec
        .entry("type")
        .or_insert_with(|| json!("ClusterIP"))
        .as_str()
        .unwrap_or("ClusterIP")
        .to_string();
    if ty == "ExternalName" {
        return;
    }
    if !spec.contains_key("clusterIP") {
        let ip = old
            .and_then(|o| o.pointer("/spec/clusterIP"))
            .cloned()
            .unwrap_or_else(|| json!(format!("10.96.{}.{}", (seed >> 8) % 256, seed % 254 + 1)));
        spec.insert("clusterIP".into(), ip.clone());
        spec.insert("clusterIPs".into(), json!([ip]));
    }
    spec.entry("sessionAffinity")
        .or_insert_with(|| json!("None"));
    spec.entry("ipFamilies").or_insert_with(|| json!(["IPv4"]));
    spec.entry("ipFamilyPolicy")
        .or_insert_with(|| json!("SingleStack"));
    spec.entry("internalTrafficPolicy")
        .or_insert_with(|| json!("Cluster"));
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for (i, p) in ports.iter_mut().enumerate() {
            let Some(p) = p.as_object_mut() else { continue };
            p.entry("protocol").or_insert_with(|| json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                p.entry("targetPort").or_insert(port);
            }
            if (ty == "NodePort" || ty == "LoadBalancer") && !p.contains_key("nodePort") {
                let n = 30000 + (seed * 7 + i as u64) % 2768;
                p.insert("nodePort".into(), json!(n));
            }
        }
    }
    if ty == "LoadBalancer" && new.get("status").is_none() {
        new["status"] = json!({"loadBalancer": {}});
    }
}

/// The name of the ReplicaSet a Deployment's current template would get: the name plus a hash of
/// the pod template, in the real controller's alphabet.
pub fn replicaset_name(obj: &Value) -> String {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let template = obj
        .pointer("/spec/template")
        .map(|t| serde_json::to_string(t).unwrap_or_default())
        .unwrap_or_default();
    // FNV-1a, then the controller's "safe encode" alphabet.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in template.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut suffix = String::new();
    for _ in 0..10 {
        suffix.push(ALPHABET[(h % ALPHABET.len() as u64) as usize] as char);
        h /= ALPHABET.len() as u64;
    }
    format!("{name}-{suffix}")
}

fn condition(ty: &str, status: &str, reason: &str, message: &str, now: &str, old: &Value) -> Value {
    // A condition keeps its transition time while its status stays the same.
    let previous = old
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
        });
    let transition = match previous {
        Some(p) if p.get("status").and_then(Value::as_str) == Some(status) => p
            .get("lastTransitionTime")
            .cloned()
            .unwrap_or_else(|| json!(now)),
        _ => json!(now),
    };
    json!({
        "type": ty,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": transition,
    })
}

fn replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

/// The status `step` writes for `obj`, or None when it has nothing to write.
pub fn run(step: Step, obj: &Value, now: &str) -> Option<Value> {
    let kind = kind_of(obj);
    let observed = generation(obj);
    let failing = fails(obj);
    match (kind, step) {
        ("Deployment", _) => Some(deployment_status(obj, step, failing, now)),
        ("StatefulSet", _) => {
            let n = replicas(obj);
            let ready = if step == Step::Settle && !failing {
                n
            } else {
                0
            };
            let rev = replicaset_name(obj);
            Some(json!({
                "observedGeneration": observed,
                "replicas": n,
                "readyReplicas": ready,
                "currentReplicas": n,
                "updatedReplicas": n,
                "availableReplicas": ready,
                "currentRevision": rev,
                "updateRevision": rev,
                "collisionCount": 0,
            }))
        }
        ("DaemonSet", _) => {
            let ready = i64::from(step == Step::Settle && !failing);
            Some(json!({
                "observedGeneration": observed,
                "currentNumberScheduled": 1,
                "desiredNumberScheduled": 1,
                "numberMisscheduled": 0,
                "numberReady": ready,
                "numberAvailable": ready,
                "numberUnavailable": 1 - ready,
                "updatedNumberScheduled": 1,
            }))
        }
        ("ReplicaSet" | "ReplicationController", _) => {
            let n = replicas(obj);
            let ready = if step == Step::Settle && !failing {
                n
            } else {
                0
            };
            Some(json!({
                "observedGeneration": observed,
                "replicas": n,
                "fullyLabeledReplicas": n,
                "readyReplicas": ready,
                "availableReplicas": ready,
            }))
        }
        ("Job", Step::Progress) => Some(json!({
            "startTime": now,
            "active": obj.pointer("/spec/parallelism").and_then(Value::as_i64).unwrap_or(1),
            "ready": 0,
            "terminating": 0,
            "uncountedTerminatedPods": {},
        })),
        ("Job", _) => Some(job_finished(obj, failing, now)),
        ("PersistentVolumeClaim", Step::Settle) => {
            let storage = obj
                .pointer("/spec/resources/requests/storage")
                .cloned()
                .unwrap_or_else(|| json!("1Gi"));
            let modes = obj
                .pointer("/spec/accessModes")
                .cloned()
                .unwrap_or_else(|| json!(["ReadWriteOnce"]));
            Some(json!({"phase": "Bound", "accessModes": modes, "capacity": {"storage": storage}}))
        }
        ("Service", Step::Settle) => {
            let seed = obj
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .map(|u| {
                    u.bytes()
                        .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)))
                })
                .unwrap_or(0);
            let ip = format!("172.18.{}.{}", (seed >> 8) % 256, seed % 254 + 1);
            Some(json!({"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}))
        }
        ("Pod", Step::Settle) => Some(pod_status(obj, failing, now)),
        ("CustomResourceDefinition", Step::Settle) => {
            let names = obj
                .pointer("/spec/names")
                .cloned()
                .unwrap_or_else(|| json!({}));
            let mut accepted = names.clone();
            if accepted.get("singular").is_none() {
                let kind = names.get("kind").and_then(Value::as_str).unwrap_or("");
                accepted["singular"] = json!(kind.to_lowercase());
            }
            if accepted.get("listKind").is_none() {
                let kind = names.get("kind").and_then(Value::as_str).unwrap_or("");
                accepted["listKind"] = json!(format!("{kind}List"));
            }
            let stored: Vec<Value> = obj
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                        .filter_map(|v| v.get("name").cloned())
                        .collect()
                })
                .unwrap_or_default();
            Some(json!({
                "acceptedNames": accepted,
                "conditions": [
                    condition("NamesAccepted", "True", "NoConflicts", "no conflicts found", now, obj),
                    condition("Established", "True", "InitialNamesAccepted", "the initial names have been accepted", now, obj),
                ],
                "storedVersions": stored,
            }))
        }
        ("APIService", Step::Settle) => Some(json!({
            "conditions": [condition("Available", "True", "Local", "Local APIServices are always available", now, obj)]
        })),
        _ => None,
    }
}

fn deployment_status(obj: &Value, step: Step, failing: bool, now: &str) -> Value {
    let n = replicas(obj);
    let rs = replicaset_name(obj);
    let cond = |ty, status, reason, message: &str| condition(ty, status, reason, message, now, obj);
    let availability = |available: bool| {
        if available {
            cond(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        } else {
            cond(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        }
    };
    let (available, progressing, ready) = match (step, failing) {
        (Step::Settle, false) => (
            availability(true),
            cond(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                &format!("ReplicaSet \"{rs}\" has successfully progressed."),
            ),
            n,
        ),
        (Step::Settle, true) => (
            availability(false),
            cond(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                &format!("ReplicaSet \"{rs}\" has timed out progressing."),
            ),
            0,
        ),
        _ => (
            availability(false),
            cond(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                &format!("ReplicaSet \"{rs}\" is progressing."),
            ),
            0,
        ),
    };
    // A scaled-to-zero Deployment is available at once.
    let (available, ready) = if n == 0 && !failing {
        (availability(true), 0)
    } else {
        (available, ready)
    };
    let mut status = json!({
        "observedGeneration": generation(obj),
        "replicas": n,
        "updatedReplicas": n,
        "conditions": [available, progressing],
    });
    if ready > 0 {
        status["readyReplicas"] = json!(ready);
        status["availableReplicas"] = json!(ready);
    }
    if n - ready > 0 {
        status["unavailableReplicas"] = json!(n - ready);
    }
    status
}

fn job_finished(obj: &Value, failing: bool, now: &str) -> Value {
    let start = obj
        .pointer("/status/startTime")
        .cloned()
        .unwrap_or_else(|| json!(now));
    if failing {
        let backoff = obj
            .pointer("/spec/backoffLimit")
            .and_then(Value::as_i64)
            .unwrap_or(6);
        return json!({
            "startTime": start,
            "failed": backoff + 1,
            "ready": 0,
            "terminating": 0,
            "uncountedTerminatedPods": {},
            "conditions": [
                condition("FailureTarget", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit", now, obj),
                condition("Failed", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit", now, obj),
            ],
        });
    }
    let completions = obj
        .pointer("/spec/completions")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    json!({
        "startTime": start,
        "completionTime": now,
        "succeeded": completions,
        "ready": 0,
        "terminating": 0,
        "uncountedTerminatedPods": {},
        "conditions": [
            condition("SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods", now, obj),
            condition("Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods", now, obj),
        ],
    })
}

fn pod_status(obj: &Value, failing: bool, now: &str) -> Value {
    let ready = if failing { "False" } else { "True" };
    let statuses: Vec<Value> = obj
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let state = if failing {
                        json!({"waiting": {"reason": "CrashLoopBackOff"}})
                    } else {
                        json!({"running": {"startedAt": now}})
                    };
                    json!({
                        "name": c.get("name").cloned().unwrap_or(Value::Null),
                        "image": c.get("image").cloned().unwrap_or(Value::Null),
                        "ready": !failing,
                        "started": !failing,
                        "restartCount": 0,
                        "state": state,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "phase": "Running",
        "podIP": "10.244.0.10",
        "hostIP": "172.18.0.2",
        "startTime": now,
        "conditions": [
            condition("Initialized", "True", "", "", now, obj),
            condition("Ready", ready, "", "", now, obj),
            condition("ContainersReady", ready, "", "", now, obj),
            condition("PodScheduled", "True", "", "", now, obj),
        ],
        "containerStatuses": statuses,
    })
}

#[cfg(test)]
mod tests;
