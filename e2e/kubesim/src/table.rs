//! `meta.k8s.io/v1` Table responses, which `kubectl get` asks for: a name and age for every kind,
//! plus the columns kubectl users expect for Deployments, Pods and Services.

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

fn age(obj: &Value) -> String {
    let created = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    match created {
        Some(t) => short_age((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()),
        None => "<unknown>".into(),
    }
}

fn int(obj: &Value, ptr: &str) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

/// The kind-specific cells of one row.
type Cells = fn(&Value) -> Vec<Value>;

pub fn table(rt: &ResourceType, objects: &[Value], rv: u64, q: &HashMap<String, String>) -> Value {
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
    let include = q
        .get("includeObject")
        .map(String::as_str)
        .unwrap_or("Metadata");
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![o.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
            cells.extend(extra(o));
            cells.push(json!(age(o)));
            let object = match include {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
                }),
            };
            json!({"cells": cells, "object": object})
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
    fn ages() {
        assert_eq!(short_age(5), "5s");
        assert_eq!(short_age(600), "10m");
        assert_eq!(short_age(3 * 3600), "3h");
        assert_eq!(short_age(3 * 86400), "3d");
        assert_eq!(short_age(-3), "0s");
    }
}
