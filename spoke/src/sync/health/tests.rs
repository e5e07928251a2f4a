use serde_json::{Value, json};

use super::*;

fn check(object: Value, health: Health, message: &str) {
    let a = assess(Some(&object));
    assert_eq!(a.health, health, "{object}: {}", a.message);
    assert!(
        a.message.contains(message),
        "expected {message:?} in {:?}",
        a.message
    );
}

fn deploy(spec: Value, status: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "web", "generation": 2}, "spec": spec, "status": status})
}

#[test]
fn missing_object() {
    assert_eq!(assess(None).health, Health::Missing);
}

#[test]
fn deleting_object_is_progressing() {
    check(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "deletionTimestamp": "2024-01-01T00:00:00Z"}}),
        Health::Progressing,
        "being deleted",
    );
}

#[test]
fn deployment_healthy() {
    check(
        deploy(
            json!({"replicas": 3}),
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
        ),
        Health::Healthy,
        "3/3 replicas available",
    );
}

#[test]
fn deployment_default_replicas_is_one() {
    check(
        deploy(
            json!({}),
            json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}),
        ),
        Health::Healthy,
        "1/1",
    );
    check(
        deploy(json!({}), json!({"observedGeneration": 2})),
        Health::Progressing,
        "0/1 replicas updated",
    );
}

#[test]
fn deployment_scaled_to_zero_is_healthy() {
    check(
        deploy(json!({"replicas": 0}), json!({"observedGeneration": 2})),
        Health::Healthy,
        "0/0",
    );
}

#[test]
fn deployment_not_observed_yet() {
    check(
        deploy(
            json!({"replicas": 1}),
            json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}),
        ),
        Health::Progressing,
        "observe generation 2 (observed 1)",
    );
    check(
        deploy(json!({"replicas": 1}), json!({})),
        Health::Progressing,
        "observed 0",
    );
}

#[test]
fn deployment_rolling_out() {
    check(
        deploy(
            json!({"replicas": 3}),
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 3}),
        ),
        Health::Progressing,
        "1/3 replicas updated",
    );
    check(
        deploy(
            json!({"replicas": 3}),
            json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3}),
        ),
        Health::Progressing,
        "1 old replicas pending termination",
    );
    check(
        deploy(
            json!({"replicas": 3}),
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 1}),
        ),
        Health::Progressing,
        "1/3 replicas available",
    );
}

#[test]
fn deployment_progress_deadline_exceeded_is_degraded() {
    let status = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 1,
        "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]});
    let a = assess(Some(&deploy(json!({"replicas": 3}), status)));
    assert_eq!(a.health, Health::Degraded);
    assert_eq!(
        a.message,
        "1/3 replicas available: ProgressDeadlineExceeded"
    );
}

#[test]
fn deployment_replica_failure_is_degraded() {
    let status = json!({"observedGeneration": 2, "conditions": [{"type": "ReplicaFailure", "status": "True",
        "reason": "FailedCreate", "message": "exceeded quota"}]});
    check(
        deploy(json!({"replicas": 2}), status),
        Health::Degraded,
        "0/2 replicas available: FailedCreate: exceeded quota",
    );
}

#[test]
fn deployment_paused_is_suspended() {
    check(
        deploy(json!({"paused": true}), json!({})),
        Health::Suspended,
        "paused",
    );
}

fn sts(spec: Value, status: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "generation": 1}, "spec": spec, "status": status})
}

#[test]
fn statefulset_states() {
    check(
        sts(
            json!({"replicas": 3}),
            json!({"observedGeneration": 1, "readyReplicas": 3}),
        ),
        Health::Healthy,
        "3/3 replicas ready",
    );
    check(
        sts(
            json!({"replicas": 3}),
            json!({"observedGeneration": 1, "readyReplicas": 2}),
        ),
        Health::Progressing,
        "2/3 replicas ready",
    );
    check(
        sts(json!({"replicas": 3}), json!({})),
        Health::Progressing,
        "observe generation 1",
    );
    check(
        sts(
            json!({"replicas": 3}),
            json!({"observedGeneration": 1, "readyReplicas": 3, "updatedReplicas": 1,
            "currentRevision": "db-1", "updateRevision": "db-2"}),
        ),
        Health::Progressing,
        "1/3 replicas at revision db-2",
    );
    check(
        sts(
            json!({"replicas": 3, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}),
            json!({"observedGeneration": 1, "readyReplicas": 3, "updatedReplicas": 0}),
        ),
        Health::Progressing,
        "0/1 replicas updated (partition 2)",
    );
    check(
        sts(
            json!({"replicas": 3, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}),
            json!({"observedGeneration": 1, "readyReplicas": 3, "updatedReplicas": 1}),
        ),
        Health::Healthy,
        "partitioned rollout complete",
    );
    check(
        sts(
            json!({"replicas": 1, "updateStrategy": {"type": "OnDelete"}}),
            json!({"observedGeneration": 1, "readyReplicas": 1, "currentRevision": "a", "updateRevision": "b"}),
        ),
        Health::Healthy,
        "OnDelete",
    );
}

fn ds(spec: Value, status: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "generation": 1}, "spec": spec, "status": status})
}

#[test]
fn daemonset_states() {
    let full = json!({"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 3});
    check(ds(json!({}), full), Health::Healthy, "3/3 pods available");
    check(
        ds(
            json!({}),
            json!({"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 1, "numberAvailable": 3}),
        ),
        Health::Progressing,
        "1/3 pods updated",
    );
    check(
        ds(
            json!({}),
            json!({"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 2}),
        ),
        Health::Progressing,
        "2/3 pods available",
    );
    check(
        ds(
            json!({"updateStrategy": {"type": "OnDelete"}}),
            json!({"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 0, "numberAvailable": 3}),
        ),
        Health::Healthy,
        "",
    );
}

#[test]
fn replicaset_and_replication_controller() {
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "r", "generation": 1},
        "spec": {"replicas": 2}, "status": {"observedGeneration": 1, "availableReplicas": 2}});
    check(rs, Health::Healthy, "2/2");
    let rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "r", "generation": 1},
        "spec": {"replicas": 2}, "status": {"observedGeneration": 1, "availableReplicas": 1}});
    check(rc, Health::Progressing, "1/2 replicas available");
    let failing = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "r", "generation": 1},
        "spec": {"replicas": 2}, "status": {"observedGeneration": 1, "conditions": [
            {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "forbidden"}]}});
    check(failing, Health::Degraded, "FailedCreate: forbidden");
}

fn job_with(spec: Value, status: Value) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": spec, "status": status})
}

#[test]
fn job_states() {
    check(
        job_with(
            json!({}),
            json!({"conditions": [{"type": "Complete", "status": "True"}]}),
        ),
        Health::Healthy,
        "completed",
    );
    check(
        job_with(
            json!({}),
            json!({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit"}]}),
        ),
        Health::Degraded,
        "job failed: BackoffLimitExceeded: Job has reached the specified backoff limit",
    );
    check(
        job_with(json!({"suspend": true}), json!({})),
        Health::Suspended,
        "suspended",
    );
    check(
        job_with(json!({}), json!({"active": 1})),
        Health::Progressing,
        "1 active, 0 succeeded",
    );
    check(
        job_with(
            json!({}),
            json!({"conditions": [{"type": "Complete", "status": "False"}], "active": 2}),
        ),
        Health::Progressing,
        "2 active",
    );
}

#[test]
fn cronjob_states() {
    let cj = |spec: Value, status: Value| json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"}, "spec": spec, "status": status});
    check(
        cj(json!({"suspend": true}), json!({})),
        Health::Suspended,
        "suspended",
    );
    check(
        cj(json!({}), json!({})),
        Health::Healthy,
        "not scheduled yet",
    );
    check(
        cj(
            json!({}),
            json!({"lastScheduleTime": "2024-01-01T00:00:00Z"}),
        ),
        Health::Healthy,
        "2024-01-01",
    );
}

fn pod_with(spec: Value, status: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec, "status": status})
}

#[test]
fn pod_states() {
    check(
        pod_with(
            json!({}),
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}),
        ),
        Health::Healthy,
        "running and ready",
    );
    check(
        pod_with(
            json!({}),
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "a", "ready": true}, {"name": "b", "ready": false}]}),
        ),
        Health::Progressing,
        "1/2 containers ready",
    );
    check(
        pod_with(
            json!({}),
            json!({"phase": "Running", "containerStatuses": [{"name": "app", "ready": false,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}}}]}),
        ),
        Health::Degraded,
        "container app: CrashLoopBackOff: back-off 5m0s",
    );
    check(
        pod_with(
            json!({}),
            json!({"phase": "Pending", "initContainerStatuses": [{"name": "init",
            "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}),
        ),
        Health::Degraded,
        "container init: ImagePullBackOff",
    );
    check(
        pod_with(
            json!({}),
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/3 nodes are available"}]}),
        ),
        Health::Progressing,
        "pending: Unschedulable: 0/3 nodes are available",
    );
    check(
        pod_with(json!({}), json!({"phase": "Succeeded"})),
        Health::Healthy,
        "completed",
    );
    check(
        pod_with(
            json!({}),
            json!({"phase": "Failed", "reason": "Evicted", "message": "low on memory"}),
        ),
        Health::Degraded,
        "Evicted: low on memory",
    );
    check(
        pod_with(
            json!({"restartPolicy": "Never"}),
            json!({"phase": "Running"}),
        ),
        Health::Progressing,
        "running",
    );
    check(
        pod_with(json!({}), json!({})),
        Health::Progressing,
        "scheduled",
    );
    check(
        pod_with(json!({}), json!({"phase": "Weird"})),
        Health::Unknown,
        "Weird",
    );
}

#[test]
fn pvc_and_pv_states() {
    let pvc = |phase: &str| json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"}, "status": {"phase": phase}});
    check(pvc("Bound"), Health::Healthy, "bound");
    check(pvc("Pending"), Health::Progressing, "waiting for a volume");
    check(pvc("Lost"), Health::Degraded, "lost");
    let pv = |phase: &str| json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "v"}, "status": {"phase": phase, "message": "disk gone"}});
    check(pv("Available"), Health::Healthy, "");
    check(pv("Failed"), Health::Degraded, "volume failed: disk gone");
    check(pv("Pending"), Health::Progressing, "");
}

#[test]
fn services() {
    let svc = |t: &str, status: Value| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"type": t}, "status": status});
    check(svc("ClusterIP", json!({})), Health::Healthy, "");
    check(svc("NodePort", json!({})), Health::Healthy, "");
    check(
        svc("LoadBalancer", json!({})),
        Health::Progressing,
        "waiting for a load balancer",
    );
    check(
        svc("LoadBalancer", json!({"loadBalancer": {"ingress": []}})),
        Health::Progressing,
        "waiting",
    );
    check(
        svc(
            "LoadBalancer",
            json!({"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}),
        ),
        Health::Healthy,
        "10.0.0.1",
    );
    check(
        svc(
            "LoadBalancer",
            json!({"loadBalancer": {"ingress": [{"hostname": "lb.example"}]}}),
        ),
        Health::Healthy,
        "lb.example",
    );
}

#[test]
fn ingresses() {
    let ing = |status: Value| json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i"}, "status": status});
    check(
        ing(json!({})),
        Health::Progressing,
        "waiting for an address",
    );
    check(
        ing(json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}})),
        Health::Healthy,
        "1.2.3.4",
    );
}

#[test]
fn hpas() {
    let hpa = |status: Value| json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"}, "status": status});
    check(
        hpa(json!({})),
        Health::Progressing,
        "waiting for the autoscaler",
    );
    check(
        hpa(json!({"currentReplicas": 2, "desiredReplicas": 3})),
        Health::Healthy,
        "2/3 replicas",
    );
    check(
        hpa(
            json!({"conditions": [{"type": "AbleToScale", "status": "False", "reason": "FailedGetScale"}]}),
        ),
        Health::Degraded,
        "cannot scale: FailedGetScale",
    );
    check(
        hpa(
            json!({"conditions": [{"type": "ScalingActive", "status": "False", "reason": "FailedGetResourceMetric", "message": "no metrics"}]}),
        ),
        Health::Degraded,
        "FailedGetResourceMetric: no metrics",
    );
    check(
        hpa(
            json!({"conditions": [{"type": "ScalingActive", "status": "False", "reason": "ScalingDisabled"}]}),
        ),
        Health::Suspended,
        "disabled",
    );
}

#[test]
fn crds() {
    let crd = |conditions: Value| {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"}, "status": {"conditions": conditions}})
    };
    check(
        crd(json!([{"type": "Established", "status": "True"}])),
        Health::Healthy,
        "established",
    );
    check(crd(json!([])), Health::Progressing, "established");
    check(
        crd(json!([{"type": "NamesAccepted", "status": "False", "reason": "ListKindConflict"}])),
        Health::Degraded,
        "ListKindConflict",
    );
}

#[test]
fn generic_conditions() {
    let cr = |status: Value| json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "generation": 3}, "status": status});
    check(
        cr(json!({"conditions": [{"type": "Ready", "status": "True"}]})),
        Health::Healthy,
        "",
    );
    check(
        cr(
            json!({"conditions": [{"type": "Ready", "status": "False", "reason": "Issuing", "message": "in progress"}]}),
        ),
        Health::Progressing,
        "Ready=False: Issuing: in progress",
    );
    check(
        cr(json!({"conditions": [{"type": "Available", "status": "True"}]})),
        Health::Healthy,
        "",
    );
    check(
        cr(
            json!({"conditions": [{"type": "Stalled", "status": "True", "reason": "Broken"}, {"type": "Ready", "status": "False"}]}),
        ),
        Health::Degraded,
        "stalled: Broken",
    );
    check(
        cr(json!({"conditions": [{"type": "Reconciling", "status": "True"}]})),
        Health::Progressing,
        "reconciling",
    );
    check(
        cr(json!({"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True"}]})),
        Health::Progressing,
        "observe generation 3",
    );
    check(cr(json!({})), Health::Healthy, "");
    check(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
        Health::Healthy,
        "",
    );
}
