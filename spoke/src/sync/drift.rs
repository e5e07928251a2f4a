//! Drift: did someone change, in the cluster, a field that Git declares?
//!
//! Pure. Comparing Git's manifest with the live object directly gives false alarms (the server
//! normalises `cpu: 0.5` to `500m`, adds defaults, reorders). Instead, right after applying, the
//! spoke [`project`]s the server's answer onto the fields the manifest declares: that is what
//! "in sync" looks like in the server's own spelling. Later, [`diff`] compares that projection
//! with the live object. Fields the manifest does not declare (an HPA's replicas when Git sets
//! none, a controller's annotations) are never looked at, so they are never fought over.

use serde_json::{Map, Value};

/// The server's values at the paths `declared` has. Lists of objects are matched by `name`
/// (containers, env, volumes, ports with names), else by position.
pub fn project(declared: &Value, server: &Value) -> Value {
    match (declared, server) {
        (Value::Object(declared), Value::Object(server)) => {
            let mut out = Map::new();
            for (key, want) in declared {
                if let Some(have) = server.get(key) {
                    out.insert(key.clone(), project(want, have));
                }
            }
            Value::Object(out)
        }
        (Value::Array(declared), Value::Array(server)) if declared.iter().all(Value::is_object) => {
            let projected = declared
                .iter()
                .enumerate()
                .filter_map(|(index, want)| {
                    matching(want, index, server).map(|have| project(want, have))
                })
                .collect();
            Value::Array(projected)
        }
        (_, server) => server.clone(),
    }
}

/// Paths where `live` no longer matches `expected` (a projection), e.g. `spec.replicas`.
pub fn diff(expected: &Value, live: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(expected, live, String::new(), &mut out);
    out
}

fn walk(expected: &Value, live: &Value, path: String, out: &mut Vec<String>) {
    match (expected, live) {
        (Value::Object(expected), Value::Object(live)) => {
            for (key, want) in expected {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match live.get(key) {
                    Some(have) => walk(want, have, child, out),
                    None if want.is_null() => {}
                    None => out.push(child),
                }
            }
        }
        (Value::Array(expected), Value::Array(live)) if expected.iter().all(Value::is_object) => {
            for (index, want) in expected.iter().enumerate() {
                let label = match want.get("name").and_then(Value::as_str) {
                    Some(name) => format!("{path}[{name}]"),
                    None => format!("{path}[{index}]"),
                };
                match matching(want, index, live) {
                    Some(have) => walk(want, have, label, out),
                    None => out.push(label),
                }
            }
        }
        (expected, live) if expected == live => {}
        _ => out.push(path),
    }
}

fn matching<'v>(want: &Value, index: usize, candidates: &'v [Value]) -> Option<&'v Value> {
    match want.get("name") {
        Some(name) => candidates.iter().find(|c| c.get("name") == Some(name)),
        None => candidates.get(index),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn declared() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "web", "image": "nginx:1", "resources": {"requests": {"cpu": 0.5}}}
            ]}}}
        })
    }

    fn server() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "resourceVersion": "7",
                         "annotations": {"deployment.kubernetes.io/revision": "1"}},
            "spec": {"replicas": 3, "progressDeadlineSeconds": 600, "template": {"spec": {"containers": [
                {"name": "sidecar", "image": "envoy"},
                {"name": "web", "image": "nginx:1", "imagePullPolicy": "IfNotPresent",
                 "resources": {"requests": {"cpu": "500m"}}}
            ]}}},
            "status": {"replicas": 3}
        })
    }

    #[test]
    fn projection_keeps_only_declared_paths_in_the_servers_spelling() {
        let p = project(&declared(), &server());
        assert_eq!(
            p["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"],
            "500m"
        );
        assert!(p["metadata"].get("resourceVersion").is_none());
        assert!(p["spec"].get("progressDeadlineSeconds").is_none());
        assert!(p.get("status").is_none());
        assert_eq!(
            p["spec"]["template"]["spec"]["containers"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn an_unchanged_object_has_no_drift_despite_normalisation_and_additions() {
        let p = project(&declared(), &server());
        let mut live = server();
        live["metadata"]["resourceVersion"] = json!("9");
        live["status"]["readyReplicas"] = json!(3);
        assert!(diff(&p, &live).is_empty(), "{:?}", diff(&p, &live));
    }

    #[test]
    fn changed_declared_fields_are_drift() {
        let p = project(&declared(), &server());
        let mut live = server();
        live["spec"]["replicas"] = json!(5);
        live["spec"]["template"]["spec"]["containers"][1]["image"] = json!("nginx:2");
        live["metadata"]["labels"] = json!({});
        assert_eq!(
            diff(&p, &live),
            [
                "metadata.labels.app",
                "spec.replicas",
                "spec.template.spec.containers[web].image"
            ]
        );
    }

    #[test]
    fn a_removed_list_item_is_drift() {
        let p = project(&declared(), &server());
        let mut live = server();
        live["spec"]["template"]["spec"]["containers"] = json!([{"name": "sidecar"}]);
        assert_eq!(diff(&p, &live), ["spec.template.spec.containers[web]"]);
    }

    #[test]
    fn scalar_lists_must_match_exactly() {
        let p = project(&json!({"args": ["a", "b"]}), &json!({"args": ["a", "b"]}));
        assert!(diff(&p, &json!({"args": ["a", "b"]})).is_empty());
        assert_eq!(diff(&p, &json!({"args": ["a"]})), ["args"]);
    }

    #[test]
    fn fields_the_server_dropped_are_not_expected() {
        let p = project(
            &json!({"spec": {"x": 1, "gone": 2}}),
            &json!({"spec": {"x": 1}}),
        );
        assert_eq!(p, json!({"spec": {"x": 1}}));
        assert!(diff(&p, &json!({"spec": {"x": 1}})).is_empty());
    }
}
