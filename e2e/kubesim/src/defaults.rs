//! API defaulting, as the real API server does it on create, update, patch and apply: the
//! scheme's defaulters of the built-in kinds (`replicas`, update strategies, history limits, pod
//! template and container defaults, ...) and the registry's allocations (Service cluster IPs and
//! node ports, the phases a new object starts in).
//!
//! Pure: values in, values out. The store runs [`default_object`] on the merged object after
//! server-side apply has worked out ownership, so defaulted fields belong to no manager, and an
//! apply that omits a defaulted field leaves it (the default comes back if it was removed).

use serde_json::{Map, Value, json};

fn kind_of(obj: &Value) -> &str {
    obj.get("kind").and_then(Value::as_str).unwrap_or("")
}

/// Sets `key` when it is absent or null (a nil pointer in Go's types).
fn default(m: &mut Map<String, Value>, key: &str, value: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), value);
    }
}

/// The object under `key`, made an empty one when absent or null; None when it is something else.
fn child<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    default(m, key, json!({}));
    m.get_mut(key).and_then(Value::as_object_mut)
}

/// The object under `key` if there is one (never created).
fn existing<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    m.get_mut(key).and_then(Value::as_object_mut)
}

fn str_of<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}

/// Every object in the list under `key`.
fn items<'a>(
    m: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    m.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// Defaults the API server fills in on every write (kept on update): the scheme's defaults of
/// the kind and the registry's allocations. `old` is the stored object when updating; `seed`
/// makes allocated addresses differ between objects.
pub fn default_object(new: &mut Value, old: Option<&Value>, seed: u64) {
    let kind = kind_of(new).to_string();
    let api_version = new
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    match kind.as_str() {
        "Service" => default_service(new, old, seed),
        "Namespace" => default_namespace(new),
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
    if matches!(kind.as_str(), "PersistentVolumeClaim" | "Pod")
        && new.pointer("/status/phase").is_none()
    {
        new["status"] = json!({"phase": "Pending"});
    }
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    match kind.as_str() {
        "Deployment" => deployment(spec),
        "StatefulSet" => stateful_set(spec),
        "DaemonSet" => daemon_set(spec),
        "ReplicaSet" | "ReplicationController" => {
            default(spec, "replicas", json!(1));
            pod_template(spec);
        }
        "Job" => job(spec),
        "CronJob" => cron_job(spec),
        "Pod" => {
            pod_spec(spec);
            default(spec, "enableServiceLinks", json!(true));
        }
        "PodTemplate" => {}
        "PersistentVolumeClaim" => pvc_spec(spec),
        "HorizontalPodAutoscaler" => hpa(spec, &api_version),
        _ => {}
    }
    if kind == "PodTemplate"
        && let Some(template) = new.get_mut("template").and_then(Value::as_object_mut)
        && let Some(spec) = existing(template, "spec")
    {
        pod_spec(spec);
    }
}

fn default_namespace(new: &mut Value) {
    if new.pointer("/status/phase").is_none() {
        new["status"] = json!({"phase": "Active"});
    }
    let name = new
        .pointer("/metadata/name")
        .cloned()
        .unwrap_or(Value::Null);
    if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut)
        && let Some(labels) = child(meta, "labels")
    {
        labels.insert("kubernetes.io/metadata.name".into(), name);
    }
    if new.pointer("/spec/finalizers").is_none() {
        new["spec"] = json!({"finalizers": ["kubernetes"]});
    }
}

fn deployment(spec: &mut Map<String, Value>) {
    default(spec, "replicas", json!(1));
    if let Some(strategy) = child(spec, "strategy") {
        default(strategy, "type", json!("RollingUpdate"));
        if str_of(strategy, "type") == Some("RollingUpdate")
            && let Some(rolling) = child(strategy, "rollingUpdate")
        {
            default(rolling, "maxUnavailable", json!("25%"));
            default(rolling, "maxSurge", json!("25%"));
        }
    }
    default(spec, "revisionHistoryLimit", json!(10));
    default(spec, "progressDeadlineSeconds", json!(600));
    pod_template(spec);
}

fn stateful_set(spec: &mut Map<String, Value>) {
    default(spec, "replicas", json!(1));
    default(spec, "podManagementPolicy", json!("OrderedReady"));
    if let Some(strategy) = child(spec, "updateStrategy") {
        default(strategy, "type", json!("RollingUpdate"));
        if str_of(strategy, "type") == Some("RollingUpdate")
            && let Some(rolling) = child(strategy, "rollingUpdate")
        {
            default(rolling, "partition", json!(0));
        }
    }
    if let Some(policy) = child(spec, "persistentVolumeClaimRetentionPolicy") {
        default(policy, "whenDeleted", json!("Retain"));
        default(policy, "whenScaled", json!("Retain"));
    }
    default(spec, "revisionHistoryLimit", json!(10));
    for claim in items(spec, "volumeClaimTemplates") {
        default(claim, "apiVersion", json!("v1"));
        default(claim, "kind", json!("PersistentVolumeClaim"));
        if let Some(claim_spec) = existing(claim, "spec") {
            pvc_spec(claim_spec);
        }
        if let Some(status) = child(claim, "status") {
            default(status, "phase", json!("Pending"));
        }
    }
    pod_template(spec);
}

fn daemon_set(spec: &mut Map<String, Value>) {
    if let Some(strategy) = child(spec, "updateStrategy") {
        default(strategy, "type", json!("RollingUpdate"));
        if str_of(strategy, "type") == Some("RollingUpdate")
            && let Some(rolling) = child(strategy, "rollingUpdate")
        {
            default(rolling, "maxUnavailable", json!(1));
            default(rolling, "maxSurge", json!(0));
        }
    }
    default(spec, "revisionHistoryLimit", json!(10));
    pod_template(spec);
}

fn job(spec: &mut Map<String, Value>) {
    if spec.get("completions").is_none_or(Value::is_null)
        && spec.get("parallelism").is_none_or(Value::is_null)
    {
        spec.insert("completions".into(), json!(1));
    }
    default(spec, "parallelism", json!(1));
    // With a backoff limit per index, the global limit is effectively off.
    let backoff = if spec
        .get("backoffLimitPerIndex")
        .is_some_and(|v| !v.is_null())
    {
        i64::from(i32::MAX)
    } else {
        6
    };
    default(spec, "backoffLimit", json!(backoff));
    default(spec, "completionMode", json!("NonIndexed"));
    default(spec, "suspend", json!(false));
    let replacement = if spec.get("podFailurePolicy").is_some_and(|v| !v.is_null()) {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    default(spec, "podReplacementPolicy", json!(replacement));
    pod_template(spec);
}

fn cron_job(spec: &mut Map<String, Value>) {
    default(spec, "concurrencyPolicy", json!("Allow"));
    default(spec, "suspend", json!(false));
    default(spec, "successfulJobsHistoryLimit", json!(3));
    default(spec, "failedJobsHistoryLimit", json!(1));
    // The Job template's own spec gets no Job defaults (those run on Jobs), only its pods'.
    if let Some(job_template) = existing(spec, "jobTemplate")
        && let Some(job_spec) = existing(job_template, "spec")
    {
        pod_template(job_spec);
    }
}

fn pvc_spec(spec: &mut Map<String, Value>) {
    default(spec, "volumeMode", json!("Filesystem"));
}

fn hpa(spec: &mut Map<String, Value>, api_version: &str) {
    default(spec, "minReplicas", json!(1));
    if api_version != "autoscaling/v2" {
        return;
    }
    if spec
        .get("metrics")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80}}}]),
        );
    }
    // A behavior given in part is completed with the default rules.
    if let Some(behavior) = existing(spec, "behavior") {
        if let Some(up) = child(behavior, "scaleUp") {
            default(up, "stabilizationWindowSeconds", json!(0));
            default(up, "selectPolicy", json!("Max"));
            default(
                up,
                "policies",
                json!([
                    {"type": "Pods", "value": 4, "periodSeconds": 15},
                    {"type": "Percent", "value": 100, "periodSeconds": 15},
                ]),
            );
        }
        if let Some(down) = child(behavior, "scaleDown") {
            default(down, "stabilizationWindowSeconds", json!(300));
            default(down, "selectPolicy", json!("Max"));
            default(
                down,
                "policies",
                json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
            );
        }
    }
}

/// `spec.template.spec` of a workload.
fn pod_template(spec: &mut Map<String, Value>) {
    if let Some(template) = existing(spec, "template")
        && let Some(pod) = existing(template, "spec")
    {
        pod_spec(pod);
    }
}

fn pod_spec(spec: &mut Map<String, Value>) {
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "securityContext", json!({}));
    default(spec, "schedulerName", json!("default-scheduler"));
    for list in ["initContainers", "containers"] {
        for c in items(spec, list) {
            container(c);
        }
    }
    for volume in items(spec, "volumes") {
        volume_source(volume);
    }
}

/// `IfNotPresent`, or `Always` for an image whose tag is `latest` or that names no tag (and no
/// digest), as the real defaulter decides.
pub fn image_pull_policy(image: &str) -> &'static str {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let last_segment = name.rsplit('/').next().unwrap_or(name);
    let tag = last_segment.split_once(':').map(|(_, tag)| tag);
    match (tag, digest) {
        (Some("latest"), _) | (None, None) => "Always",
        _ => "IfNotPresent",
    }
}

fn container(c: &mut Map<String, Value>) {
    let image = str_of(c, "image").unwrap_or("").to_string();
    default(c, "imagePullPolicy", json!(image_pull_policy(&image)));
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    default(c, "resources", json!({}));
    for port in items(c, "ports") {
        default(port, "protocol", json!("TCP"));
    }
    for env in items(c, "env") {
        if let Some(field_ref) = existing(env, "valueFrom").and_then(|v| existing(v, "fieldRef")) {
            default(field_ref, "apiVersion", json!("v1"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = existing(c, probe) {
            default(p, "timeoutSeconds", json!(1));
            default(p, "periodSeconds", json!(10));
            default(p, "successThreshold", json!(1));
            default(p, "failureThreshold", json!(3));
            if let Some(get) = existing(p, "httpGet") {
                default(get, "path", json!("/"));
                default(get, "scheme", json!("HTTP"));
            }
        }
    }
}

fn volume_source(v: &mut Map<String, Value>) {
    const SOURCES_WITH_MODE: [&str; 4] = ["secret", "configMap", "downwardAPI", "projected"];
    // A volume naming no source is an emptyDir.
    if v.keys().all(|k| k == "name") {
        v.insert("emptyDir".into(), json!({}));
    }
    for source in SOURCES_WITH_MODE {
        if let Some(s) = existing(v, source) {
            // 0644
            default(s, "defaultMode", json!(420));
        }
    }
    if let Some(host_path) = existing(v, "hostPath") {
        default(host_path, "type", json!(""));
    }
}

fn default_service(new: &mut Value, old: Option<&Value>, seed: u64) {
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    default(spec, "type", json!("ClusterIP"));
    let ty = str_of(spec, "type").unwrap_or("ClusterIP").to_string();
    default(spec, "sessionAffinity", json!("None"));
    if str_of(spec, "sessionAffinity") == Some("ClientIP")
        && let Some(config) = child(spec, "sessionAffinityConfig")
        && let Some(client_ip) = child(config, "clientIP")
    {
        default(client_ip, "timeoutSeconds", json!(10800));
    }
    for p in items(spec, "ports") {
        default(p, "protocol", json!("TCP"));
        if let Some(port) = p.get("port").cloned() {
            default(p, "targetPort", port);
        }
    }
    if ty == "ExternalName" {
        return;
    }
    match spec.get("clusterIP").filter(|ip| !ip.is_null()).cloned() {
        None => {
            let ip = old
                .and_then(|o| o.pointer("/spec/clusterIP"))
                .cloned()
                .unwrap_or_else(|| {
                    json!(format!("10.96.{}.{}", (seed >> 8) % 256, seed % 254 + 1))
                });
            spec.insert("clusterIP".into(), ip.clone());
            spec.insert("clusterIPs".into(), json!([ip]));
        }
        Some(ip) => default(spec, "clusterIPs", json!([ip])),
    }
    default(spec, "ipFamilies", json!(["IPv4"]));
    default(spec, "ipFamilyPolicy", json!("SingleStack"));
    default(spec, "internalTrafficPolicy", json!("Cluster"));
    if ty == "NodePort" || ty == "LoadBalancer" {
        default(spec, "externalTrafficPolicy", json!("Cluster"));
        for (i, p) in items(spec, "ports").enumerate() {
            let n = 30000 + (seed * 7 + i as u64) % 2768;
            default(p, "nodePort", json!(n));
        }
    }
    if ty == "LoadBalancer" {
        default(spec, "allocateLoadBalancerNodePorts", json!(true));
        if new.get("status").is_none() {
            new["status"] = json!({"loadBalancer": {}});
        }
    }
}

#[cfg(test)]
mod tests;
