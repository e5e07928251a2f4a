use super::*;

/// Planning in a cluster with the default controllers.
fn plan(old: Option<&Value>, new: &Value) -> Vec<(Delay, Step)> {
    super::plan(old, new, ControllerOptions::default())
}

const NOW: &str = "2026-01-01T00:00:00Z";

fn deployment(replicas: i64, generation: i64, fail: bool) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "generation": generation},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "a"}]}}}
    });
    if fail {
        d["metadata"]["annotations"] = json!({FAIL_ANNOTATION: "true"});
    }
    d
}

fn cond<'a>(status: &'a Value, ty: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == ty)
        .unwrap()
}

#[test]
fn plans_rollouts_on_create_and_spec_change_only() {
    let d1 = deployment(2, 1, false);
    assert_eq!(
        plan(None, &d1),
        vec![(Delay::Now, Step::Progress), (Delay::Ready, Step::Settle)]
    );
    assert!(
        plan(Some(&d1), &d1).is_empty(),
        "a status or metadata write does not restart"
    );
    let d2 = deployment(3, 2, false);
    assert_eq!(plan(Some(&d1), &d2).len(), 2);
    let failing = deployment(2, 1, true);
    assert_eq!(
        plan(Some(&d1), &failing).len(),
        2,
        "toggling the fail annotation restarts"
    );
    let mut deleting = d1.clone();
    deleting["metadata"]["deletionTimestamp"] = json!(NOW);
    assert!(plan(None, &deleting).is_empty());
    assert!(plan(None, &json!({"kind": "ConfigMap"})).is_empty());
    assert_eq!(
        plan(None, &json!({"kind": "PersistentVolumeClaim"})),
        vec![(Delay::Ready, Step::Settle)]
    );
    let lb = json!({"kind": "Service", "spec": {"type": "LoadBalancer"}});
    assert_eq!(plan(None, &lb), vec![(Delay::Ready, Step::Settle)]);
    assert!(
        plan(
            None,
            &json!({"kind": "Service", "spec": {"type": "ClusterIP"}})
        )
        .is_empty()
    );
}

#[test]
fn deployment_progress_then_ready() {
    let d = deployment(3, 2, false);
    let s = run(Step::Progress, &d, NOW).unwrap();
    assert_eq!(s["observedGeneration"], 2);
    assert_eq!(s["unavailableReplicas"], 3);
    assert_eq!(cond(&s, "Available")["status"], "False");
    assert_eq!(cond(&s, "Progressing")["reason"], "ReplicaSetUpdated");
    let s = run(Step::Settle, &d, NOW).unwrap();
    assert_eq!(
        (
            s["readyReplicas"].clone(),
            s["availableReplicas"].clone(),
            s["updatedReplicas"].clone()
        ),
        (json!(3), json!(3), json!(3))
    );
    assert!(s.get("unavailableReplicas").is_none());
    assert_eq!(cond(&s, "Available")["reason"], "MinimumReplicasAvailable");
    assert_eq!(cond(&s, "Progressing")["reason"], "NewReplicaSetAvailable");
    let rs = replicaset_name(&d);
    assert!(rs.starts_with("web-") && rs.len() == 14, "{rs}");
    assert!(
        cond(&s, "Progressing")["message"]
            .as_str()
            .unwrap()
            .contains(&rs)
    );
}

#[test]
fn failing_deployment_times_out() {
    let d = deployment(2, 1, true);
    let s = run(Step::Settle, &d, NOW).unwrap();
    assert_eq!(cond(&s, "Progressing")["status"], "False");
    assert_eq!(
        cond(&s, "Progressing")["reason"],
        "ProgressDeadlineExceeded"
    );
    assert_eq!(
        cond(&s, "Available")["reason"],
        "MinimumReplicasUnavailable"
    );
    assert_eq!(s["unavailableReplicas"], 2);
}

#[test]
fn transition_times_stay_while_status_does() {
    let mut d = deployment(1, 1, false);
    d["status"] = run(Step::Settle, &d, "2026-01-01T00:00:00Z").unwrap();
    let later = run(Step::Settle, &d, "2026-01-02T00:00:00Z").unwrap();
    assert_eq!(
        cond(&later, "Available")["lastTransitionTime"],
        "2026-01-01T00:00:00Z"
    );
    assert_eq!(
        cond(&later, "Available")["lastUpdateTime"],
        "2026-01-02T00:00:00Z"
    );
}

#[test]
fn other_workloads_and_jobs() {
    let sts =
        json!({"kind": "StatefulSet", "metadata": {"generation": 1}, "spec": {"replicas": 2}});
    assert_eq!(run(Step::Progress, &sts, NOW).unwrap()["readyReplicas"], 0);
    assert_eq!(run(Step::Settle, &sts, NOW).unwrap()["readyReplicas"], 2);
    let ds = json!({"kind": "DaemonSet", "metadata": {"generation": 1}});
    assert_eq!(run(Step::Settle, &ds, NOW).unwrap()["numberAvailable"], 1);
    let rs = json!({"kind": "ReplicaSet", "metadata": {"generation": 1}, "spec": {"replicas": 3}});
    assert_eq!(run(Step::Settle, &rs, NOW).unwrap()["availableReplicas"], 3);
    let job = json!({"kind": "Job", "spec": {"completions": 2}});
    let done = run(Step::Settle, &job, NOW).unwrap();
    assert_eq!(done["succeeded"], 2);
    assert_eq!(cond(&done, "Complete")["status"], "True");
    let mut bad_job = job.clone();
    bad_job["metadata"] = json!({"annotations": {FAIL_ANNOTATION: "true"}});
    assert_eq!(
        cond(&run(Step::Settle, &bad_job, NOW).unwrap(), "Failed")["reason"],
        "BackoffLimitExceeded"
    );
    let pvc = json!({"kind": "PersistentVolumeClaim", "spec": {"resources": {"requests": {"storage": "5Gi"}}}});
    let bound = run(Step::Settle, &pvc, NOW).unwrap();
    assert_eq!(bound["phase"], "Bound");
    assert_eq!(bound["capacity"]["storage"], "5Gi");
    let lb =
        json!({"kind": "Service", "metadata": {"uid": "abc"}, "spec": {"type": "LoadBalancer"}});
    assert!(
        run(Step::Settle, &lb, NOW).unwrap()["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .unwrap()
            .starts_with("172.18.")
    );
    assert!(run(Step::Settle, &json!({"kind": "ConfigMap"}), NOW).is_none());
}

#[test]
fn crds_become_established() {
    let crd = json!({"kind": "CustomResourceDefinition", "spec": {"names": {"kind": "Widget", "plural": "widgets"},
        "versions": [{"name": "v1", "storage": true}]}});
    let s = run(Step::Settle, &crd, NOW).unwrap();
    assert_eq!(cond(&s, "Established")["status"], "True");
    assert_eq!(s["acceptedNames"]["listKind"], "WidgetList");
    assert_eq!(s["storedVersions"], json!(["v1"]));
}

#[test]
fn ingresses_get_the_controllers_address_unless_it_is_off() {
    let ing = json!({"kind": "Ingress", "metadata": {"name": "shop", "generation": 1}});
    assert_eq!(plan(None, &ing), vec![(Delay::Ready, Step::Settle)]);
    let off = ControllerOptions {
        ingress_controller: false,
    };
    assert!(super::plan(None, &ing, off).is_empty());
    let status = run(Step::Settle, &ing, NOW).unwrap();
    assert_eq!(status["loadBalancer"]["ingress"][0]["ip"], INGRESS_ADDRESS);
    let mut addressed = ing.clone();
    addressed["status"] = status;
    assert!(
        plan(Some(&ing), &addressed).is_empty(),
        "an Ingress with an address needs nothing"
    );
}

fn hpa(min: i64, max: i64) -> Value {
    json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "generation": 1},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": min, "maxReplicas": max,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70}}}]}})
}

#[test]
fn an_hpa_reports_its_targets_replicas() {
    assert_eq!(plan(None, &hpa(1, 5)), vec![(Delay::Ready, Step::Settle)]);
    let d = hpa_status(&hpa(1, 5), Some(&deployment(3, 1, false)), NOW);
    assert_eq!(d.scale_to, None);
    let s = &d.status;
    assert_eq!(
        (&s["currentReplicas"], &s["desiredReplicas"]),
        (&json!(3), &json!(3))
    );
    assert!(s.get("lastScaleTime").is_none(), "never scaled");
    assert_eq!(s["observedGeneration"], 1);
    assert_eq!(
        s["currentMetrics"],
        json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 70}}}])
    );
    assert_eq!(cond(s, "AbleToScale")["reason"], "ReadyForNewScale");
    assert_eq!(cond(s, "ScalingActive")["status"], "True");
    assert_eq!(cond(s, "ScalingActive")["reason"], "ValidMetricFound");
    assert!(
        cond(s, "ScalingActive")["message"]
            .as_str()
            .unwrap()
            .ends_with("from cpu resource utilization (percentage of request)")
    );
    assert_eq!(cond(s, "ScalingLimited")["status"], "False");
    assert!(cond(s, "AbleToScale").get("lastUpdateTime").is_none());
}

#[test]
fn an_hpa_scales_a_target_outside_its_range() {
    let d = hpa_status(&hpa(4, 6), Some(&deployment(2, 1, false)), NOW);
    assert_eq!(d.scale_to, Some(4));
    assert_eq!(d.status["desiredReplicas"], 4);
    assert_eq!(d.status["lastScaleTime"], NOW);
    assert_eq!(cond(&d.status, "AbleToScale")["reason"], "SucceededRescale");
    assert_eq!(
        cond(&d.status, "ScalingLimited")["reason"],
        "TooFewReplicas"
    );
    let d = hpa_status(&hpa(1, 2), Some(&deployment(5, 1, false)), NOW);
    assert_eq!(d.scale_to, Some(2));
    assert_eq!(
        cond(&d.status, "ScalingLimited")["reason"],
        "TooManyReplicas"
    );

    // Once scaled, the next pass keeps the time of the last scale.
    let mut scaled = hpa(4, 6);
    scaled["status"] = json!({"lastScaleTime": NOW});
    let d = hpa_status(
        &scaled,
        Some(&deployment(4, 1, false)),
        "2026-01-01T00:01:00Z",
    );
    assert_eq!(d.scale_to, None);
    assert_eq!(d.status["lastScaleTime"], NOW);
    assert_eq!(cond(&d.status, "AbleToScale")["reason"], "ReadyForNewScale");
}

#[test]
fn an_hpa_without_its_target_or_with_a_zero_target_reports_why() {
    let d = hpa_status(&hpa(1, 5), None, NOW);
    assert_eq!(cond(&d.status, "AbleToScale")["status"], "False");
    assert_eq!(cond(&d.status, "AbleToScale")["reason"], "FailedGetScale");
    assert!(
        cond(&d.status, "AbleToScale")["message"]
            .as_str()
            .unwrap()
            .contains("deployments.apps \"web\" not found")
    );
    let d = hpa_status(&hpa(1, 5), Some(&deployment(0, 1, false)), NOW);
    assert_eq!(d.scale_to, None);
    assert_eq!(
        cond(&d.status, "ScalingActive")["reason"],
        "ScalingDisabled"
    );
}

#[test]
fn an_autoscaling_v1_hpa_reports_cpu_flat() {
    let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "generation": 1},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3,
            "targetCPUUtilizationPercentage": 50}});
    let d = hpa_status(&v1, Some(&deployment(1, 1, false)), NOW);
    assert_eq!(d.status["currentCPUUtilizationPercentage"], 50);
    assert!(d.status.get("currentMetrics").is_none());
}
