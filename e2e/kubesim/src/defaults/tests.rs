use super::*;

fn defaulted(mut obj: Value) -> Value {
    default_object(&mut obj, None, 7);
    obj
}

fn pod_template() -> Value {
    json!({"metadata": {"labels": {"app": "db"}},
        "spec": {"containers": [{"name": "db", "image": "postgres:16", "ports": [{"containerPort": 5432}]}]}})
}

#[test]
fn services() {
    let svc = defaulted(
        json!({"kind": "Service", "spec": {"ports": [{"port": 80}], "type": "LoadBalancer"}}),
    );
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .starts_with("10.96.")
    );
    assert_eq!(svc["spec"]["clusterIPs"], json!([svc["spec"]["clusterIP"]]));
    assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
    assert!(svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap() >= 30000);
    assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(svc["spec"]["allocateLoadBalancerNodePorts"], true);
    assert_eq!(svc["status"], json!({"loadBalancer": {}}));

    let plain = defaulted(
        json!({"kind": "Service", "spec": {"ports": [{"port": 80, "targetPort": "http"}]}}),
    );
    let spec = &plain["spec"];
    assert_eq!(
        (
            &spec["type"],
            &spec["sessionAffinity"],
            &spec["ipFamilies"],
            &spec["ipFamilyPolicy"],
            &spec["internalTrafficPolicy"],
        ),
        (
            &json!("ClusterIP"),
            &json!("None"),
            &json!(["IPv4"]),
            &json!("SingleStack"),
            &json!("Cluster"),
        )
    );
    assert_eq!(spec["ports"][0]["targetPort"], "http", "a given one stays");
    assert!(spec.get("externalTrafficPolicy").is_none());
    assert!(spec["ports"][0].get("nodePort").is_none());

    let headless = defaulted(json!({"kind": "Service", "spec": {"clusterIP": "None"}}));
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));

    let sticky = defaulted(json!({"kind": "Service", "spec": {"sessionAffinity": "ClientIP"}}));
    assert_eq!(
        sticky["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
        10800
    );

    let external = defaulted(
        json!({"kind": "Service", "spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
    );
    assert_eq!(external["spec"]["sessionAffinity"], "None");
    assert!(external["spec"].get("clusterIP").is_none());
}

#[test]
fn a_service_keeps_its_cluster_ip_on_update() {
    let old = defaulted(json!({"kind": "Service", "spec": {"ports": [{"port": 80}]}}));
    let mut new = json!({"kind": "Service", "spec": {"ports": [{"port": 81}]}});
    default_object(&mut new, Some(&old), 99);
    assert_eq!(new["spec"]["clusterIP"], old["spec"]["clusterIP"]);
}

#[test]
fn namespaces_secrets_and_phases() {
    let ns = defaulted(json!({"kind": "Namespace", "metadata": {"name": "x"}}));
    assert_eq!(ns["status"]["phase"], "Active");
    assert_eq!(ns["metadata"]["labels"]["kubernetes.io/metadata.name"], "x");
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(defaulted(json!({"kind": "Secret"}))["type"], "Opaque");
    let pvc = defaulted(
        json!({"kind": "PersistentVolumeClaim", "spec": {"accessModes": ["ReadWriteOnce"]}}),
    );
    assert_eq!(pvc["status"]["phase"], "Pending");
    assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    let block =
        defaulted(json!({"kind": "PersistentVolumeClaim", "spec": {"volumeMode": "Block"}}));
    assert_eq!(block["spec"]["volumeMode"], "Block");
}

#[test]
fn stateful_sets() {
    let sts = defaulted(json!({"kind": "StatefulSet", "spec": {
        "serviceName": "db", "template": pod_template(),
        "volumeClaimTemplates": [{"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}));
    let spec = &sts["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["podManagementPolicy"], "OrderedReady");
    assert_eq!(
        spec["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    );
    assert_eq!(
        spec["persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );
    assert_eq!(spec["revisionHistoryLimit"], 10);
    let claim = &spec["volumeClaimTemplates"][0];
    assert_eq!(
        (&claim["apiVersion"], &claim["kind"]),
        (&json!("v1"), &json!("PersistentVolumeClaim"))
    );
    assert_eq!(claim["spec"]["volumeMode"], "Filesystem");
    assert_eq!(claim["status"]["phase"], "Pending");
    assert_eq!(
        spec["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );

    let on_delete = defaulted(
        json!({"kind": "StatefulSet", "spec": {"replicas": 3, "updateStrategy": {"type": "OnDelete"}}}),
    );
    assert_eq!(
        on_delete["spec"]["updateStrategy"],
        json!({"type": "OnDelete"})
    );
    assert_eq!(on_delete["spec"]["replicas"], 3);
    let partitioned = defaulted(json!({"kind": "StatefulSet", "spec": {
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}}));
    assert_eq!(
        partitioned["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
        2
    );
}

#[test]
fn deployments() {
    let d = defaulted(json!({"kind": "Deployment", "spec": {"template": pod_template()}}));
    let spec = &d["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    );
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    let recreate = defaulted(
        json!({"kind": "Deployment", "spec": {"replicas": 0, "strategy": {"type": "Recreate"}}}),
    );
    assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(recreate["spec"]["replicas"], 0);
    let surge = defaulted(json!({"kind": "Deployment", "spec": {
        "strategy": {"rollingUpdate": {"maxSurge": 1}}}}));
    assert_eq!(
        surge["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 1}})
    );
}

#[test]
fn daemon_sets() {
    let ds = defaulted(json!({"kind": "DaemonSet", "spec": {"template": pod_template()}}));
    assert_eq!(
        ds["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    );
    assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);
    assert!(ds["spec"].get("replicas").is_none());
}

#[test]
fn jobs() {
    let job = defaulted(json!({"kind": "Job", "spec": {"template": pod_template()}}));
    let spec = &job["spec"];
    assert_eq!(
        (
            &spec["backoffLimit"],
            &spec["completions"],
            &spec["parallelism"],
            &spec["completionMode"],
            &spec["suspend"],
            &spec["podReplacementPolicy"],
        ),
        (
            &json!(6),
            &json!(1),
            &json!(1),
            &json!("NonIndexed"),
            &json!(false),
            &json!("TerminatingOrFailed"),
        )
    );
    // A work queue (parallelism without completions) keeps completions unset.
    let queue = defaulted(json!({"kind": "Job", "spec": {"parallelism": 3}}));
    assert!(queue["spec"].get("completions").is_none());
    assert_eq!(queue["spec"]["parallelism"], 3);
    let fixed = defaulted(json!({"kind": "Job", "spec": {"completions": 5}}));
    assert_eq!(
        (&fixed["spec"]["completions"], &fixed["spec"]["parallelism"]),
        (&json!(5), &json!(1))
    );
    let per_index = defaulted(json!({"kind": "Job", "spec": {
        "completionMode": "Indexed", "backoffLimitPerIndex": 1, "podFailurePolicy": {"rules": []}}}));
    assert_eq!(per_index["spec"]["backoffLimit"], 2_147_483_647);
    assert_eq!(per_index["spec"]["podReplacementPolicy"], "Failed");
}

#[test]
fn cron_jobs() {
    let cj = defaulted(
        json!({"kind": "CronJob", "spec": {"schedule": "*/5 * * * *",
        "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure",
            "containers": [{"name": "report", "image": "busybox"}]}}}}}}),
    );
    let spec = &cj["spec"];
    assert_eq!(
        (
            &spec["concurrencyPolicy"],
            &spec["suspend"],
            &spec["successfulJobsHistoryLimit"],
            &spec["failedJobsHistoryLimit"],
        ),
        (&json!("Allow"), &json!(false), &json!(3), &json!(1))
    );
    let job_spec = &spec["jobTemplate"]["spec"];
    assert!(
        job_spec.get("backoffLimit").is_none(),
        "Job defaults run on Jobs, not on a CronJob's template"
    );
    let pod = &job_spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "OnFailure");
    assert_eq!(pod["containers"][0]["imagePullPolicy"], "Always");
}

#[test]
fn pod_templates_and_containers() {
    let d = defaulted(json!({"kind": "Deployment", "spec": {"template": {"spec": {
        "initContainers": [{"name": "init", "image": "busybox:latest"}],
        "containers": [{"name": "web", "image": "registry.local:5000/shop/web",
            "ports": [{"containerPort": 8080}, {"containerPort": 53, "protocol": "UDP"}],
            "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "readinessProbe": {"httpGet": {"port": 8080}},
            "imagePullPolicy": "Never"}],
        "volumes": [{"name": "scratch"}, {"name": "cfg", "configMap": {"name": "web"}},
            {"name": "tls", "secret": {"secretName": "web-tls", "defaultMode": 256}},
            {"name": "host", "hostPath": {"path": "/var/log"}}]}}}}));
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(
        (
            &pod["restartPolicy"],
            &pod["dnsPolicy"],
            &pod["schedulerName"],
            &pod["terminationGracePeriodSeconds"],
            &pod["securityContext"],
        ),
        (
            &json!("Always"),
            &json!("ClusterFirst"),
            &json!("default-scheduler"),
            &json!(30),
            &json!({}),
        )
    );
    let init = &pod["initContainers"][0];
    assert_eq!(init["imagePullPolicy"], "Always");
    let web = &pod["containers"][0];
    assert_eq!(web["imagePullPolicy"], "Never", "a given policy stays");
    assert_eq!(web["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(web["terminationMessagePolicy"], "File");
    assert_eq!(web["resources"], json!({}));
    assert_eq!(web["ports"][0]["protocol"], "TCP");
    assert_eq!(web["ports"][1]["protocol"], "UDP");
    assert_eq!(web["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
    assert_eq!(
        web["readinessProbe"],
        json!({"httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
            "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
    );
    assert_eq!(
        pod["volumes"],
        json!([{"name": "scratch", "emptyDir": {}},
            {"name": "cfg", "configMap": {"name": "web", "defaultMode": 420}},
            {"name": "tls", "secret": {"secretName": "web-tls", "defaultMode": 256}},
            {"name": "host", "hostPath": {"path": "/var/log", "type": ""}}])
    );
    let pod =
        defaulted(json!({"kind": "Pod", "spec": {"containers": [{"name": "a", "image": "a:1"}]}}));
    assert_eq!(pod["spec"]["enableServiceLinks"], true);
    assert_eq!(pod["spec"]["restartPolicy"], "Always");
    assert_eq!(pod["status"]["phase"], "Pending");
}

#[test]
fn image_pull_policies() {
    for (image, policy) in [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("nginx:1.27", "IfNotPresent"),
        ("registry.local:5000/nginx", "Always"),
        ("registry.local:5000/nginx:1.27", "IfNotPresent"),
        ("nginx@sha256:0123", "IfNotPresent"),
        ("nginx:latest@sha256:0123", "Always"),
    ] {
        assert_eq!(image_pull_policy(image), policy, "{image}");
    }
}

#[test]
fn hpas() {
    let v2 = defaulted(
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "spec": {"maxReplicas": 5, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}}),
    );
    assert_eq!(v2["spec"]["minReplicas"], 1);
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        80
    );
    assert_eq!(
        v2["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        60
    );
    assert_eq!(v2["spec"]["behavior"]["scaleUp"]["selectPolicy"], "Max");
    let plain = defaulted(
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "spec": {"maxReplicas": 5, "minReplicas": 2}}),
    );
    assert!(plain["spec"].get("behavior").is_none());
    assert_eq!(plain["spec"]["minReplicas"], 2);
    let v1 = defaulted(
        json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
        "spec": {"maxReplicas": 5}}),
    );
    assert_eq!(v1["spec"]["minReplicas"], 1);
    assert!(v1["spec"].get("metrics").is_none());
}

#[test]
fn defaulting_twice_changes_nothing() {
    for obj in [
        json!({"kind": "StatefulSet", "spec": {"template": pod_template()}}),
        json!({"kind": "Deployment", "spec": {"template": pod_template()}}),
        json!({"kind": "Service", "spec": {"ports": [{"port": 80}]}}),
        json!({"kind": "Job", "spec": {"template": pod_template()}}),
    ] {
        let once = defaulted(obj);
        let mut twice = once.clone();
        default_object(&mut twice, Some(&once), 8);
        assert_eq!(once, twice);
    }
}
