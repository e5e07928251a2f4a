//! `meta.k8s.io/v1` Table responses, which `kubectl get` asks for: a name and age for every kind,
//! plus the columns a real API server prints for Deployments, StatefulSets, DaemonSets, Jobs,
//! CronJobs, Pods, Services, PersistentVolumeClaims, HorizontalPodAutoscalers and Ingresses.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::resources::ResourceType;

fn col(name: &str, ty: &str, format: &str) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": "", "priority": 0})
}

/// A duration in kubectl's short form (`5s`, `3m`, `2h`, `4d`).
pub fn short_age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// A duration as kubectl's human form for durations prints it (`45s`, `2m30s`, `12m`, `5h3m`).
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let (minutes, hours) = (s / 60, s / 3600);
    let with_rest = |big: i64, big_unit: &str, rest: i64, rest_unit: &str| {
        if rest == 0 {
            format!("{big}{big_unit}")
        } else {
            format!("{big}{big_unit}{rest}{rest_unit}")
        }
    };
    match s {
        0..120 => format!("{s}s"),
        120..600 => with_rest(minutes, "m", s % 60, "s"),
        600..10_800 => format!("{minutes}m"),
        10_800..28_800 => with_rest(hours, "h", minutes % 60, "m"),
        28_800..172_800 => format!("{hours}h"),
        172_800..691_200 => with_rest(hours / 24, "d", hours % 24, "h"),
        _ => format!("{}d", hours / 24),
    }
}

fn time_at(obj: &Value, ptr: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    obj.pointer(ptr)
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

fn since(obj: &Value, ptr: &str) -> Option<String> {
    time_at(obj, ptr).map(|t| short_age((chrono::Utc::now() - t).num_seconds()))
}

fn age(obj: &Value) -> String {
    since(obj, "/metadata/creationTimestamp").unwrap_or_else(|| "<unknown>".into())
}

fn int(obj: &Value, ptr: &str) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn text(obj: &Value, ptr: &str, otherwise: &str) -> Value {
    json!(
        obj.pointer(ptr)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(otherwise)
    )
}

fn has_condition(obj: &Value, ty: &str) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == ty && c["status"] == "True"))
}

/// A load balancer's addresses (IPs, else hostnames), comma-separated.
fn addresses(obj: &Value) -> String {
    obj.pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .map(|is| {
            is.iter()
                .filter_map(|i| i.get("ip").or_else(|| i.get("hostname")))
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn job_row(o: &Value) -> Vec<Value> {
    let status = if has_condition(o, "Complete") {
        "Complete"
    } else if has_condition(o, "Failed") {
        "Failed"
    } else if o.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else if has_condition(o, "Suspended") {
        "Suspended"
    } else if has_condition(o, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let succeeded = int(o, "/status/succeeded");
    let completions = match o.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match int(o, "/spec/parallelism") {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (
        time_at(o, "/status/startTime"),
        time_at(o, "/status/completionTime"),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration((chrono::Utc::now() - start).num_seconds()),
        (Some(start), Some(end)) => human_duration((end - start).num_seconds()),
    };
    vec![json!(status), json!(completions), json!(duration)]
}

fn cron_job_row(o: &Value) -> Vec<Value> {
    let suspend = match o.pointer("/spec/suspend").and_then(Value::as_bool) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let active = o
        .pointer("/status/active")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    vec![
        text(o, "/spec/schedule", ""),
        text(o, "/spec/timeZone", "<none>"),
        json!(suspend),
        json!(active),
        json!(since(o, "/status/lastScheduleTime").unwrap_or_else(|| "<none>".into())),
    ]
}

fn pvc_row(o: &Value) -> Vec<Value> {
    let modes: Vec<&str> = o
        .pointer("/status/accessModes")
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .filter_map(Value::as_str)
                .map(|m| match m {
                    "ReadWriteOnce" => "RWO",
                    "ReadOnlyMany" => "ROX",
                    "ReadWriteMany" => "RWX",
                    "ReadWriteOncePod" => "RWOP",
                    other => other,
                })
                .collect()
        })
        .unwrap_or_default();
    vec![
        text(o, "/status/phase", ""),
        text(o, "/spec/volumeName", ""),
        text(o, "/status/capacity/storage", ""),
        json!(modes.join(",")),
        text(o, "/spec/storageClassName", ""),
        text(o, "/spec/volumeAttributesClassName", "<unset>"),
    ]
}

/// One metric of an HPA as `kubectl get hpa` shows it: `cpu: 40%/80%`, `<unknown>` before the
/// autoscaler has read it.
fn hpa_metric(spec: &Value, current: Option<&Value>) -> String {
    let ty = spec["type"].as_str().unwrap_or("");
    let key = match ty {
        "Resource" => "resource",
        "ContainerResource" => "containerResource",
        "Pods" => "pods",
        "Object" => "object",
        "External" => "external",
        _ => return "<unknown>".into(),
    };
    let target = &spec[key]["target"];
    let now = current.map(|c| &c[key]["current"]);
    let quantity = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let (current, wanted) = if let Some(u) = target.get("averageUtilization") {
        (
            now.and_then(|c| c.get("averageUtilization"))
                .map_or("<unknown>".into(), |c| format!("{}%", quantity(c))),
            format!("{}%", quantity(u)),
        )
    } else {
        let field = if target.get("averageValue").is_some() {
            "averageValue"
        } else {
            "value"
        };
        (
            now.and_then(|c| c.get(field))
                .map_or("<unknown>".into(), quantity),
            target.get(field).map(quantity).unwrap_or_default(),
        )
    };
    match ty {
        "Resource" | "ContainerResource" => {
            format!(
                "{}: {current}/{wanted}",
                spec[key]["name"].as_str().unwrap_or("")
            )
        }
        _ => format!("{current}/{wanted}"),
    }
}

fn hpa_targets(o: &Value) -> String {
    let (specs, currents): (Vec<Value>, Vec<Value>) = match o
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
    {
        Some(specs) => (
            specs.clone(),
            o.pointer("/status/currentMetrics")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        ),
        // autoscaling/v1: one CPU utilization target.
        None => (
            vec![
                json!({"type": "Resource", "resource": {"name": "cpu", "target": {
                    "averageUtilization": o.pointer("/spec/targetCPUUtilizationPercentage").cloned().unwrap_or(json!(80))}}}),
            ],
            o.pointer("/status/currentCPUUtilizationPercentage")
                .map(|u| vec![json!({"resource": {"current": {"averageUtilization": u}}})])
                .unwrap_or_default(),
        ),
    };
    if specs.is_empty() {
        return "<none>".into();
    }
    const SHOWN: usize = 2;
    let list: Vec<String> = specs
        .iter()
        .take(SHOWN)
        .enumerate()
        .map(|(i, s)| hpa_metric(s, currents.get(i)))
        .collect();
    let mut out = list.join(", ");
    if specs.len() > SHOWN {
        out.push_str(&format!(" + {} more...", specs.len() - SHOWN));
    }
    out
}

fn hpa_row(o: &Value) -> Vec<Value> {
    let min = o
        .pointer("/spec/minReplicas")
        .and_then(Value::as_i64)
        .map_or("<unset>".to_string(), |m| m.to_string());
    vec![
        json!(format!(
            "{}/{}",
            o.pointer("/spec/scaleTargetRef/kind")
                .and_then(Value::as_str)
                .unwrap_or(""),
            o.pointer("/spec/scaleTargetRef/name")
                .and_then(Value::as_str)
                .unwrap_or("")
        )),
        json!(hpa_targets(o)),
        json!(min),
        json!(int(o, "/spec/maxReplicas")),
        json!(int(o, "/status/currentReplicas")),
    ]
}

fn ingress_row(o: &Value) -> Vec<Value> {
    const SHOWN: usize = 3;
    let rules = o
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let hosts: Vec<&str> = rules
        .iter()
        .take(SHOWN)
        .filter_map(|r| r.get("host").and_then(Value::as_str))
        .filter(|h| !h.is_empty())
        .collect();
    let mut host_cell = if hosts.is_empty() {
        "*".to_string()
    } else {
        hosts.join(",")
    };
    if rules.len() > SHOWN {
        host_cell.push_str(&format!(" + {} more...", rules.len() - SHOWN));
    }
    let tls = o
        .pointer("/spec/tls")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    vec![
        text(o, "/spec/ingressClassName", "<none>"),
        json!(host_cell),
        json!(addresses(o)),
        json!(if tls { "80, 443" } else { "80" }),
    ]
}

fn daemon_set_row(o: &Value) -> Vec<Value> {
    let selector = o
        .pointer("/spec/template/spec/nodeSelector")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
        .map_or("<none>".to_string(), |m| {
            let mut pairs: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            pairs.sort();
            pairs.join(",")
        });
    vec![
        json!(int(o, "/status/desiredNumberScheduled")),
        json!(int(o, "/status/currentNumberScheduled")),
        json!(int(o, "/status/numberReady")),
        json!(int(o, "/status/updatedNumberScheduled")),
        json!(int(o, "/status/numberAvailable")),
        json!(selector),
    ]
}

/// The kind-specific cells of one row.
type Cells = fn(&Value) -> Vec<Value>;

/// A value as the API server's JSONPath printer writes it: strings as they are, maps and lists
/// as Go's `fmt` prints them (`map[env:prod]`, `[a b]`).
fn go_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<nil>".into(),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{k}:{}", go_text(&m[k])))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(go_text).collect::<Vec<_>>().join(" ")),
        other => other.to_string(),
    }
}

/// The value at a simple JSONPath (`.status.sync`, `.metadata.labels['a/b']`, `.items[0].x`),
/// as CRDs' printer columns name it; `None` when a step is missing.
pub fn json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut rest = path.trim_start_matches('$');
    let mut at = obj;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            if !key.is_empty() {
                at = at.get(key)?;
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix("[?(@.") {
            // A filter: `[?(@.type=="Ready")]`, the first element whose field equals the value.
            let end = r.find(")]")?;
            let (field, value) = r[..end].split_once("==")?;
            let value = value.trim().trim_matches(['"', '\'']);
            at = at
                .as_array()?
                .iter()
                .find(|e| e.get(field.trim()).and_then(Value::as_str) == Some(value))?;
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = r[..end].trim();
            let quoted = inner
                .strip_prefix('\'')
                .and_then(|i| i.strip_suffix('\''))
                .or_else(|| inner.strip_prefix('"').and_then(|i| i.strip_suffix('"')));
            at = match quoted {
                Some(key) => at.get(key)?,
                None => at.get(inner.parse::<usize>().ok()?)?,
            };
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(at)
}

/// The cell of one CRD printer column, as the real server's table convertor makes it.
fn printer_cell(o: &Value, c: &super::resources::PrinterColumn) -> Value {
    let Some(v) = json_path(o, &c.json_path) else {
        return Value::Null;
    };
    match c.type_.as_str() {
        "date" => v
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| {
                json!(short_age(
                    (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()
                ))
            })
            .unwrap_or(Value::Null),
        "integer" | "number" if v.is_number() => v.clone(),
        "boolean" if v.is_boolean() => v.clone(),
        "string" => json!(go_text(v)),
        _ => Value::Null,
    }
}

/// The Table of a custom resource whose CRD declares `additionalPrinterColumns`: the name,
/// then those columns (no age unless one of them is).
fn custom_table(rt: &ResourceType, objects: &[Value], include: &str) -> (Vec<Value>, Vec<Value>) {
    let mut defs = vec![col("Name", "string", "name")];
    defs.extend(rt.printer_columns.iter().map(|c| {
        json!({
            "name": c.name,
            "type": c.type_,
            "format": c.format,
            "description": c.description,
            "priority": c.priority,
        })
    }));
    let rows = objects
        .iter()
        .map(|o| {
            let mut cells = vec![o.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
            cells.extend(rt.printer_columns.iter().map(|c| printer_cell(o, c)));
            json!({"cells": cells, "object": row_object(o, include)})
        })
        .collect();
    (defs, rows)
}

fn row_object(o: &Value, include: &str) -> Value {
    match include {
        "None" => Value::Null,
        "Object" => o.clone(),
        _ => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
        }),
    }
}

pub fn table(rt: &ResourceType, objects: &[Value], rv: u64, q: &HashMap<String, String>) -> Value {
    let include = q
        .get("includeObject")
        .map(String::as_str)
        .unwrap_or("Metadata");
    if rt.custom && !rt.printer_columns.is_empty() {
        let (defs, rows) = custom_table(rt, objects, include);
        return json!({
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": rv.to_string()},
            "columnDefinitions": defs,
            "rows": rows,
        });
    }
    let (mut columns, extra): (Vec<Value>, Cells) = match rt.kind.as_str() {
        "Deployment" => (
            vec![
                col("Ready", "string", ""),
                col("Up-to-date", "integer", ""),
                col("Available", "integer", ""),
            ],
            |o| {
                vec![
                    json!(format!(
                        "{}/{}",
                        int(o, "/status/readyReplicas"),
                        int(o, "/spec/replicas")
                    )),
                    json!(int(o, "/status/updatedReplicas")),
                    json!(int(o, "/status/availableReplicas")),
                ]
            },
        ),
        "StatefulSet" => (vec![col("Ready", "string", "")], |o| {
            vec![json!(format!(
                "{}/{}",
                int(o, "/status/readyReplicas"),
                o.pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
            ))]
        }),
        "DaemonSet" => (
            vec![
                col("Desired", "integer", ""),
                col("Current", "integer", ""),
                col("Ready", "integer", ""),
                col("Up-to-date", "integer", ""),
                col("Available", "integer", ""),
                col("Node Selector", "string", ""),
            ],
            daemon_set_row,
        ),
        "Job" => (
            vec![
                col("Status", "string", ""),
                col("Completions", "string", ""),
                col("Duration", "string", ""),
            ],
            job_row,
        ),
        "CronJob" => (
            vec![
                col("Schedule", "string", ""),
                col("Timezone", "string", ""),
                col("Suspend", "boolean", ""),
                col("Active", "integer", ""),
                col("Last Schedule", "string", ""),
            ],
            cron_job_row,
        ),
        "PersistentVolumeClaim" => (
            vec![
                col("Status", "string", ""),
                col("Volume", "string", ""),
                col("Capacity", "string", ""),
                col("Access Modes", "string", ""),
                col("StorageClass", "string", ""),
                col("VolumeAttributesClass", "string", ""),
            ],
            pvc_row,
        ),
        "HorizontalPodAutoscaler" => (
            vec![
                col("Reference", "string", ""),
                col("Targets", "string", ""),
                col("MinPods", "string", ""),
                col("MaxPods", "integer", ""),
                col("Replicas", "integer", ""),
            ],
            hpa_row,
        ),
        "Ingress" => (
            vec![
                col("Class", "string", ""),
                col("Hosts", "string", ""),
                col("Address", "string", ""),
                col("Ports", "string", ""),
            ],
            ingress_row,
        ),
        "Pod" => (
            vec![
                col("Ready", "string", ""),
                col("Status", "string", ""),
                col("Restarts", "string", ""),
            ],
            |o| {
                let total = o
                    .pointer("/spec/containers")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                let ready = o
                    .pointer("/status/containerStatuses")
                    .and_then(Value::as_array)
                    .map_or(0, |cs| cs.iter().filter(|c| c["ready"] == true).count());
                vec![
                    json!(format!("{ready}/{total}")),
                    o.pointer("/status/phase")
                        .cloned()
                        .unwrap_or(json!("Pending")),
                    json!("0"),
                ]
            },
        ),
        "Service" => (
            vec![
                col("Type", "string", ""),
                col("Cluster-IP", "string", ""),
                col("External-IP", "string", ""),
                col("Port(s)", "string", ""),
            ],
            |o| {
                let ports: Vec<String> = o
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .map(|ps| {
                        ps.iter()
                            .map(|p| {
                                format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP"))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let external = o
                    .pointer("/status/loadBalancer/ingress/0/ip")
                    .and_then(Value::as_str)
                    .unwrap_or("<none>");
                vec![
                    o.pointer("/spec/type")
                        .cloned()
                        .unwrap_or(json!("ClusterIP")),
                    o.pointer("/spec/clusterIP")
                        .cloned()
                        .unwrap_or(json!("<none>")),
                    json!(external),
                    json!(if ports.is_empty() {
                        "<none>".to_string()
                    } else {
                        ports.join(",")
                    }),
                ]
            },
        ),
        _ => (vec![], |_| vec![]),
    };
    let mut defs = vec![col("Name", "string", "name")];
    defs.append(&mut columns);
    defs.push(col("Age", "string", ""));
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![o.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
            cells.extend(extra(o));
            cells.push(json!(age(o)));
            json!({"cells": cells, "object": row_object(o, include)})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths() {
        let o =
            json!({"metadata": {"labels": {"a/b": "x", "env": "prod"}}, "spec": {"l": [{"n": 1}]}});
        assert_eq!(json_path(&o, ".metadata.labels.env"), Some(&json!("prod")));
        assert_eq!(json_path(&o, ".metadata.labels['a/b']"), Some(&json!("x")));
        assert_eq!(json_path(&o, "{.spec.l[0].n}"), Some(&json!(1)));
        assert_eq!(json_path(&o, ".status.sync"), None);
        let c = json!({"status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(
            json_path(&c, ".status.conditions[?(@.type==\"Ready\")].status"),
            Some(&json!("True"))
        );
        assert_eq!(go_text(&o["metadata"]["labels"]), "map[a/b:x env:prod]");
        assert_eq!(go_text(&json!(["a", "b"])), "[a b]");
    }

    #[test]
    fn ages() {
        assert_eq!(short_age(5), "5s");
        assert_eq!(short_age(600), "10m");
        assert_eq!(short_age(3 * 3600), "3h");
        assert_eq!(short_age(3 * 86400), "3d");
        assert_eq!(short_age(-3), "0s");
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(180), "3m");
        assert_eq!(human_duration(720), "12m");
        assert_eq!(human_duration(5 * 3600 + 180), "5h3m");
        assert_eq!(human_duration(10 * 3600), "10h");
        assert_eq!(human_duration(3 * 86400 + 7200), "3d2h");
        assert_eq!(human_duration(30 * 86400), "30d");
    }

    fn cells(kind: &str, obj: Value) -> Vec<Value> {
        let rt = crate::resources::builtins()
            .iter()
            .find(|r| r.kind == kind)
            .unwrap();
        let t = table(rt, &[obj], 1, &HashMap::new());
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.first(), Some(&"Name"));
        assert_eq!(names.last(), Some(&"Age"));
        let row = t["rows"][0]["cells"].as_array().unwrap().clone();
        assert_eq!(row.len(), names.len());
        row[1..row.len() - 1].to_vec()
    }

    #[test]
    fn hpa_rows() {
        let hpa = json!({"metadata": {"name": "web"}, "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 2, "maxReplicas": 5,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}},
                {"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
                {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "500Mi"}}}]},
            "status": {"currentReplicas": 3, "currentMetrics": [
                {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 70}}}]}});
        assert_eq!(
            cells("HorizontalPodAutoscaler", hpa),
            vec![
                json!("Deployment/web"),
                json!("cpu: 70%/70%, <unknown>/10 + 1 more..."),
                json!("2"),
                json!(5),
                json!(3)
            ]
        );
        let v1 = json!({"spec": {"scaleTargetRef": {"kind": "StatefulSet", "name": "db"}, "maxReplicas": 3}});
        assert_eq!(
            cells("HorizontalPodAutoscaler", v1)[..3],
            [
                json!("StatefulSet/db"),
                json!("cpu: <unknown>/80%"),
                json!("<unset>")
            ]
        );
    }

    #[test]
    fn ingress_rows() {
        let ing = json!({"spec": {"ingressClassName": "nginx",
            "rules": [{"host": "shop.example.com"}, {"host": "api.example.com"}],
            "tls": [{"hosts": ["shop.example.com"]}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "172.18.0.200"}]}}});
        assert_eq!(
            cells("Ingress", ing),
            vec![
                json!("nginx"),
                json!("shop.example.com,api.example.com"),
                json!("172.18.0.200"),
                json!("80, 443")
            ]
        );
        let bare = json!({"spec": {"defaultBackend": {"service": {"name": "web"}}}});
        assert_eq!(
            cells("Ingress", bare),
            vec![json!("<none>"), json!("*"), json!(""), json!("80")]
        );
    }

    #[test]
    fn workload_rows() {
        let sts = json!({"spec": {"replicas": 3}, "status": {"readyReplicas": 2}});
        assert_eq!(cells("StatefulSet", sts), vec![json!("2/3")]);
        let job = json!({"spec": {"completions": 1, "parallelism": 1}, "status": {
            "succeeded": 1, "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:02:30Z",
            "conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(
            cells("Job", job),
            vec![json!("Complete"), json!("1/1"), json!("2m30s")]
        );
        let queue = json!({"spec": {"parallelism": 3}});
        assert_eq!(
            cells("Job", queue),
            vec![json!("Running"), json!("0/1 of 3"), json!("")]
        );
        let cj = json!({"spec": {"schedule": "0 * * * *", "suspend": false}});
        assert_eq!(
            cells("CronJob", cj),
            vec![
                json!("0 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(0),
                json!("<none>")
            ]
        );
        let pvc = json!({"spec": {"storageClassName": "standard"}, "status": {"phase": "Bound",
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce", "ReadWriteOncePod"]}});
        assert_eq!(
            cells("PersistentVolumeClaim", pvc),
            vec![
                json!("Bound"),
                json!(""),
                json!("1Gi"),
                json!("RWO,RWOP"),
                json!("standard"),
                json!("<unset>")
            ]
        );
        let ds = json!({"spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}},
            "status": {"desiredNumberScheduled": 1, "currentNumberScheduled": 1, "numberReady": 1,
                "updatedNumberScheduled": 1, "numberAvailable": 1}});
        assert_eq!(
            cells("DaemonSet", ds),
            vec![
                json!(1),
                json!(1),
                json!(1),
                json!(1),
                json!(1),
                json!("kubernetes.io/os=linux")
            ]
        );
    }
}
