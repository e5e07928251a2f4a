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
//! HorizontalPodAutoscalers report their scale target's replicas ([`hpa_status`]: a cluster
//! with a metrics server whose metrics always sit at the target), and Ingresses get the ingress
//! controller's address unless [`ControllerOptions::ingress_controller`] is off.

use serde_json::{Value, json};

/// Annotation that makes a workload (or Job, or Pod) fail instead of becoming ready.
pub const FAIL_ANNOTATION: &str = "kubesim.gitfleet.dev/fail";

/// The address the simulated ingress controller gives every Ingress (an ingress controller's
/// load balancer serves all of them).
pub const INGRESS_ADDRESS: &str = "172.18.0.200";

/// Which optional controllers a cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerOptions {
    /// An ingress controller that gives Ingresses an address (most clusters run one).
    pub ingress_controller: bool,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        Self {
            ingress_controller: true,
        }
    }
}

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
pub fn plan(old: Option<&Value>, new: &Value, options: ControllerOptions) -> Vec<(Delay, Step)> {
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
        // The autoscaler reads its target when it comes round; its target's writes wake it too
        // (see the store).
        "HorizontalPodAutoscaler" if restarted => vec![(Delay::Ready, Step::Settle)],
        "Ingress"
            if options.ingress_controller
                && new.pointer("/status/loadBalancer/ingress/0").is_none() =>
        {
            vec![(Delay::Ready, Step::Settle)]
        }
        _ => Vec::new(),
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
        ("Ingress", Step::Settle) => {
            Some(json!({"loadBalancer": {"ingress": [{"ip": INGRESS_ADDRESS}]}}))
        }
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

/// What the HPA controller decides for one autoscaler: the status it writes and, when the target
/// runs outside `minReplicas..=maxReplicas`, the replica count it scales the target to.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaDecision {
    pub status: Value,
    pub scale_to: Option<i64>,
}

/// `kind/name`-style description of what an HPA scales, as its messages name it.
fn hpa_target_name(hpa: &Value) -> String {
    let kind = hpa
        .pointer("/spec/scaleTargetRef/kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = hpa
        .pointer("/spec/scaleTargetRef/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let plural = match kind {
        "Deployment" => "deployments.apps",
        "StatefulSet" => "statefulsets.apps",
        "ReplicaSet" => "replicasets.apps",
        "ReplicationController" => "replicationcontrollers",
        other => return format!("{} {name:?}", other.to_lowercase()),
    };
    format!("{plural} {name:?}")
}

/// An HPA condition: the autoscaler's conditions carry no `lastUpdateTime`.
fn hpa_condition(
    ty: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
    old: &Value,
) -> Value {
    let mut c = condition(ty, status, reason, message, now, old);
    if let Some(m) = c.as_object_mut() {
        m.remove("lastUpdateTime");
    }
    c
}

/// What one metric of an HPA's spec reads now: kubesim's metrics sit at the target, so the
/// recommendation is always the current size.
fn current_metric(spec: &Value) -> Option<Value> {
    let ty = spec.get("type").and_then(Value::as_str)?;
    let key = match ty {
        "Resource" => "resource",
        "ContainerResource" => "containerResource",
        "Pods" => "pods",
        "Object" => "object",
        "External" => "external",
        _ => return None,
    };
    let source = spec.get(key)?;
    let target = source.get("target").cloned().unwrap_or_else(|| json!({}));
    let mut current = serde_json::Map::new();
    for field in ["averageUtilization", "averageValue", "value"] {
        if let Some(v) = target.get(field) {
            current.insert(field.into(), v.clone());
        }
    }
    let mut out = json!({"type": ty});
    let mut status = source.clone();
    if let Some(m) = status.as_object_mut() {
        m.remove("target");
        m.insert("current".into(), Value::Object(current));
    }
    out[key] = status;
    Some(out)
}

/// How the `ScalingActive` message names the metric a recommendation came from.
fn metric_description(spec: &Value) -> String {
    let ty = spec.get("type").and_then(Value::as_str).unwrap_or("");
    let name = |key: &str, field: &str| {
        spec.pointer(&format!("/{key}/{field}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    match ty {
        "Resource" | "ContainerResource" => {
            let key = if ty == "Resource" {
                "resource"
            } else {
                "containerResource"
            };
            let resource = name(key, "name");
            if spec
                .pointer(&format!("/{key}/target/type"))
                .and_then(Value::as_str)
                == Some("Utilization")
            {
                format!("{resource} resource utilization (percentage of request)")
            } else {
                format!("{resource} resource")
            }
        }
        "Pods" => format!("pods metric {}", name("pods", "metric/name")),
        "Object" => format!(
            "{} metric {}",
            name("object", "describedObject/kind"),
            name("object", "metric/name")
        ),
        "External" => format!("external metric {}", name("external", "metric/name")),
        other => format!("{other} metric"),
    }
}

/// The status the HPA controller writes for `hpa`, whose scale target is `target` (None: not
/// found). Metrics always read at their target, so the recommendation is the current size,
/// clamped to `minReplicas..=maxReplicas`; a target outside that range is scaled into it.
pub fn hpa_status(hpa: &Value, target: Option<&Value>, now: &str) -> HpaDecision {
    let cond =
        |ty, status, reason, message: &str| hpa_condition(ty, status, reason, message, now, hpa);
    let last_scale = hpa.pointer("/status/lastScaleTime").cloned();
    let mut status = json!({"observedGeneration": generation(hpa)});
    if let Some(t) = &last_scale {
        status["lastScaleTime"] = t.clone();
    }
    let Some(target) = target else {
        status["currentReplicas"] = json!(0);
        status["desiredReplicas"] = json!(0);
        status["conditions"] = json!([cond(
            "AbleToScale",
            "False",
            "FailedGetScale",
            &format!(
                "the HPA controller was unable to get the target's current scale: {} not found",
                hpa_target_name(hpa)
            ),
        )]);
        return HpaDecision {
            status,
            scale_to: None,
        };
    };
    let current = replicas(target);
    let min = hpa
        .pointer("/spec/minReplicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let max = hpa
        .pointer("/spec/maxReplicas")
        .and_then(Value::as_i64)
        .unwrap_or(min)
        .max(min);
    status["currentReplicas"] = json!(current);
    if current == 0 && min > 0 {
        status["desiredReplicas"] = json!(0);
        status["conditions"] = json!([
            cond(
                "AbleToScale",
                "True",
                "SucceededGetScale",
                "the HPA controller was able to get the target's current scale"
            ),
            cond(
                "ScalingActive",
                "False",
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero"
            ),
        ]);
        return HpaDecision {
            status,
            scale_to: None,
        };
    }
    let desired = current.clamp(min, max);
    let metrics: Vec<Value> = hpa
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_else(|| {
            // autoscaling/v1: one CPU target, 80% unless given.
            let utilization = hpa
                .pointer("/spec/targetCPUUtilizationPercentage")
                .cloned()
                .unwrap_or_else(|| json!(80));
            vec![json!({"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": utilization}}})]
        });
    let current_metrics: Vec<Value> = metrics.iter().filter_map(current_metric).collect();
    if !current_metrics.is_empty() {
        status["currentMetrics"] = json!(current_metrics);
    }
    if hpa.pointer("/spec/metrics").is_none() {
        // autoscaling/v1 reports the one CPU figure flat.
        if let Some(u) = current_metrics
            .first()
            .and_then(|m| m.pointer("/resource/current/averageUtilization"))
        {
            status["currentCPUUtilizationPercentage"] = u.clone();
        }
        if let Some(m) = status.as_object_mut() {
            m.remove("currentMetrics");
        }
    }
    status["desiredReplicas"] = json!(desired);
    let able = if desired == current {
        cond(
            "AbleToScale",
            "True",
            "ReadyForNewScale",
            "recommended size matches current size",
        )
    } else {
        status["lastScaleTime"] = json!(now);
        cond(
            "AbleToScale",
            "True",
            "SucceededRescale",
            &format!("the HPA controller was able to update the target scale to {desired}"),
        )
    };
    let active = cond(
        "ScalingActive",
        "True",
        "ValidMetricFound",
        &format!(
            "the HPA was able to successfully calculate a replica count from {}",
            metrics.first().map(metric_description).unwrap_or_default()
        ),
    );
    let limited = if current < min {
        cond(
            "ScalingLimited",
            "True",
            "TooFewReplicas",
            "the desired replica count is less than the minimum replica count",
        )
    } else if current > max {
        cond(
            "ScalingLimited",
            "True",
            "TooManyReplicas",
            "the desired replica count is more than the maximum replica count",
        )
    } else {
        cond(
            "ScalingLimited",
            "False",
            "DesiredWithinRange",
            "the desired count is within the acceptable range",
        )
    };
    status["conditions"] = json!([able, active, limited]);
    HpaDecision {
        status,
        scale_to: (desired != current).then_some(desired),
    }
}

/// Whether `hpa` scales the object `kind`/`name` (in its own namespace).
pub fn hpa_targets(hpa: &Value, kind: &str, name: &str) -> bool {
    hpa.pointer("/spec/scaleTargetRef/kind")
        .and_then(Value::as_str)
        == Some(kind)
        && hpa
            .pointer("/spec/scaleTargetRef/name")
            .and_then(Value::as_str)
            == Some(name)
}

#[cfg(test)]
mod tests;
