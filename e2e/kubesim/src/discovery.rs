//! Discovery documents (`/api`, `/apis`, `/apis/{group}/{version}`, aggregated discovery) and the
//! OpenAPI v3 documents kubectl reads, built from the served resource types.
//!
//! The OpenAPI documents are deliberately thin: one PATCH operation per kind, declaring the
//! `fieldValidation` query parameter. That is what kubectl's `--validate=strict` default looks for
//! to decide that the server validates fields itself; finding it, kubectl skips client-side schema
//! validation (which would need the full schemas kubesim does not have).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::resources::ResourceType;

pub const KUBE_VERSION: &str = "v1.32.0";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": format!("{KUBE_VERSION}+kubesim"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-12-11T00:00:00Z",
        "goVersion": "go1.23.4",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

/// Groups in first-seen order with their versions (preferred first).
fn groups(types: &[Arc<ResourceType>]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for t in types.iter().filter(|t| !t.group.is_empty()) {
        let entry = match out.iter_mut().position(|(g, _)| *g == t.group) {
            Some(i) => &mut out[i].1,
            None => {
                out.push((t.group.clone(), Vec::new()));
                &mut out.last_mut().expect("just pushed").1
            }
        };
        for v in &t.versions {
            if !entry.contains(v) {
                entry.push(v.clone());
            }
        }
    }
    for (_, versions) in &mut out {
        versions.sort_by_key(|v| super::resources::version_priority(v));
    }
    out
}

pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_json(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

pub fn api_group_list(types: &[Arc<ResourceType>]) -> Value {
    let gs: Vec<Value> = groups(types)
        .iter()
        .map(|(g, vs)| group_json(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs})
}

pub fn api_group(types: &[Arc<ResourceType>], group: &str) -> Option<Value> {
    groups(types)
        .iter()
        .find(|(g, _)| g == group)
        .map(|(g, vs)| {
            let mut v = group_json(g, vs);
            v["kind"] = json!("APIGroup");
            v["apiVersion"] = json!("v1");
            v
        })
}

fn storage_hash(t: &ResourceType) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in t.key().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    base64_12(h)
}

fn base64_12(mut h: u64) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for _ in 0..11 {
        s.push(A[(h % 64) as usize] as char);
        h /= 64;
    }
    s.push('=');
    s
}

/// A discovery entry's short names and categories, when the type has any.
fn add_names(entry: &mut Value, t: &ResourceType) {
    if !t.short_names.is_empty() {
        entry["shortNames"] = json!(t.short_names);
    }
    if !t.categories.is_empty() {
        entry["categories"] = json!(t.categories);
    }
}

/// The types served at `group`/`version`; None when there are none.
fn served<'a>(
    types: &'a [Arc<ResourceType>],
    group: &str,
    version: &str,
) -> Option<Vec<&'a Arc<ResourceType>>> {
    let served: Vec<_> = types
        .iter()
        .filter(|t| t.group == group && t.serves(version))
        .collect();
    (!served.is_empty()).then_some(served)
}

/// `/api/v1` or `/apis/{group}/{version}`, or None when nothing is served there.
pub fn resource_list(types: &[Arc<ResourceType>], group: &str, version: &str) -> Option<Value> {
    let served = served(types, group, version)?;
    let mut resources = Vec::new();
    for t in served {
        let mut r = json!({
            "name": t.plural,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": VERBS,
            "storageVersionHash": storage_hash(t),
        });
        add_names(&mut r, t);
        resources.push(r);
        if t.has_scale() {
            resources.push(json!({
                "name": format!("{}/scale", t.plural),
                "singularName": "",
                "namespaced": t.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": STATUS_VERBS,
            }));
        }
        if t.status {
            resources.push(json!({
                "name": format!("{}/status", t.plural),
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": STATUS_VERBS,
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }))
}

/// Aggregated discovery (`apidiscovery.k8s.io/v2`) for `/api` (core) or `/apis` (groups).
pub fn aggregated(types: &[Arc<ResourceType>], core: bool) -> Value {
    let mut by_group: BTreeMap<usize, (String, Vec<String>)> = BTreeMap::new();
    let gs: Vec<(String, Vec<String>)> = if core {
        vec![(String::new(), vec!["v1".to_string()])]
    } else {
        groups(types)
    };
    for (i, g) in gs.into_iter().enumerate() {
        by_group.insert(i, g);
    }
    let items: Vec<Value> = by_group
        .values()
        .map(|(group, versions)| {
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = types
                        .iter()
                        .filter(|t| t.group == *group && t.serves(v))
                        .map(|t| {
                            let kind = json!({"group": t.group, "version": v, "kind": t.kind});
                            let mut r = json!({
                                "resource": t.plural,
                                "responseKind": kind,
                                "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": t.singular,
                                "verbs": VERBS,
                            });
                            add_names(&mut r, t);
                            if t.status {
                                r["subresources"] = json!([{
                                    "subresource": "status",
                                    "responseKind": kind,
                                    "verbs": STATUS_VERBS,
                                }]);
                            }
                            r
                        })
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": vs})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

/// `/openapi/v2` as gnostic's protobuf `openapi_v2.Document` (what kubectl asks for): just the
/// swagger version and info, no definitions. kubectl only consults it to validate kinds the v3
/// documents do not cover (custom resources whose CRD is missing), and a document without the
/// kind lets them through to the mapping step, which reports the missing CRD as a real cluster does.
pub fn openapi_v2_protobuf() -> Vec<u8> {
    fn field(tag: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![tag, u8::try_from(bytes.len()).expect("short field")];
        out.extend_from_slice(bytes);
        out
    }
    let mut info = field(0x0a, b"Kubernetes");
    info.extend(field(0x12, KUBE_VERSION.as_bytes()));
    let mut doc = field(0x0a, b"2.0");
    doc.extend(field(0x12, &info));
    doc
}

/// `/openapi/v2` as JSON, for clients that ask for JSON.
pub fn openapi_v2_json() -> Value {
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": KUBE_VERSION}, "paths": {}, "definitions": {}})
}

/// `/openapi/v3`: where each group version's document is (server-relative, so it carries the
/// cluster's path prefix).
pub fn openapi_v3_root(types: &[Arc<ResourceType>], prefix: &str) -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs: Vec<String> = vec!["api/v1".to_string()];
    for (g, vs) in groups(types) {
        for v in vs {
            gvs.push(format!("apis/{g}/{v}"));
        }
    }
    for gv in gvs {
        let hash = storage_hash_str(&format!("{gv}{}", types.len()));
        paths.insert(
            gv.clone(),
            json!({"serverRelativeURL": format!("{prefix}/openapi/v3/{gv}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

fn storage_hash_str(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016X}")
}

/// The OpenAPI v3 document of one group version: a PATCH operation per kind that declares the
/// `fieldValidation` parameter.
pub fn openapi_v3_group_version(
    types: &[Arc<ResourceType>],
    group: &str,
    version: &str,
) -> Option<Value> {
    let served = served(types, group, version)?;
    let base = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let mut paths = serde_json::Map::new();
    for t in served {
        let path = if t.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
        } else {
            format!("{base}/{}/{{name}}", t.plural)
        };
        let gvk = json!({"group": t.group, "version": version, "kind": t.kind});
        let params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldValidation", "in": "query", "description": "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields.", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}},
        ]);
        paths.insert(
            path,
            json!({
                "patch": {
                    "tags": [format!("{}{}", group, version)],
                    "operationId": format!("patch{}", t.kind),
                    "parameters": params,
                    "responses": {"200": {"description": "OK"}, "201": {"description": "Created"}},
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": gvk,
                },
                "parameters": [
                    {"name": "name", "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}},
                ],
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBE_VERSION},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::builtins;

    #[test]
    fn openapi_v2_protobuf_encodes_swagger_and_info() {
        let pb = openapi_v2_protobuf();
        assert_eq!(&pb[..5], &[0x0a, 3, b'2', b'.', b'0']);
        assert_eq!(pb[5], 0x12);
        assert_eq!(usize::from(pb[6]), pb.len() - 7);
    }

    #[test]
    fn group_list_has_preferred_versions() {
        let list = api_group_list(builtins());
        let groups = list["groups"].as_array().unwrap();
        assert!(groups.iter().all(|g| g["name"] != ""));
        let autoscaling = groups.iter().find(|g| g["name"] == "autoscaling").unwrap();
        assert_eq!(autoscaling["preferredVersion"]["version"], "v2");
        assert_eq!(autoscaling["versions"][1]["groupVersion"], "autoscaling/v1");
    }

    #[test]
    fn resource_lists_include_status_subresources() {
        let apps = resource_list(builtins(), "apps", "v1").unwrap();
        let names: Vec<&str> = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"deployments"));
        assert!(names.contains(&"deployments/status"));
        assert!(resource_list(builtins(), "apps", "v2").is_none());
        assert!(resource_list(builtins(), "example.com", "v1").is_none());
        let core = resource_list(builtins(), "", "v1").unwrap();
        assert_eq!(core["groupVersion"], "v1");
    }

    #[test]
    fn openapi_declares_field_validation() {
        let root = openapi_v3_root(builtins(), "/clusters/a");
        let url = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/clusters/a/openapi/v3/apis/apps/v1?hash="));
        let doc = openapi_v3_group_version(builtins(), "apps", "v1").unwrap();
        let op = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(
            op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        let ns = openapi_v3_group_version(builtins(), "", "v1").unwrap();
        assert!(ns["paths"].get("/api/v1/namespaces/{name}").is_some());
    }

    #[test]
    fn aggregated_discovery_shape() {
        let core = aggregated(builtins(), true);
        assert_eq!(core["items"][0]["metadata"]["name"], "");
        let apis = aggregated(builtins(), false);
        let apps = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "apps")
            .unwrap();
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        assert_eq!(deploy["scope"], "Namespaced");
        assert_eq!(deploy["subresources"][0]["subresource"], "status");
    }
}
