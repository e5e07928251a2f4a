//! Strategic merge patch (`application/strategic-merge-patch+json`), as kubectl sends it for
//! `apply` (client-side), `label`, `annotate`, `edit` and `rollout restart`.
//!
//! Pure. Lists merge according to [`schema::patch_strategy`]; the directives `$patch`
//! (merge/replace/delete), `$retainKeys`, `$deleteFromPrimitiveList/<field>` and
//! `$setElementOrder/<field>` are honoured.

use serde_json::{Map, Value};

use super::fieldset::{Path, PathElement, canonical_json};
use super::schema::{self, PatchStrategy};

pub fn strategic_merge(original: &Value, patch: &Value) -> Result<Value, String> {
    let mut path = Vec::new();
    merge_value(original, patch, &mut path)
}

fn merge_value(original: &Value, patch: &Value, path: &mut Path) -> Result<Value, String> {
    match (original, patch) {
        (Value::Object(o), Value::Object(p)) => merge_map(o, p, path).map(Value::Object),
        (_, Value::Object(p)) => {
            // Nothing to merge into: the patch (minus directives) is the value.
            merge_map(&Map::new(), p, path).map(Value::Object)
        }
        (Value::Array(o), Value::Array(p)) => merge_list(o, p, path).map(Value::Array),
        (_, Value::Array(p)) => merge_list(&[], p, path).map(Value::Array),
        _ => Ok(patch.clone()),
    }
}

fn merge_map(
    original: &Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Path,
) -> Result<Map<String, Value>, String> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut out = patch.clone();
            out.remove("$patch");
            return strip_directives(out, path);
        }
        Some("delete") => return Ok(Map::new()),
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch type: {other} in map: {patch:?}")),
    }
    let mut out = original.clone();
    if let Some(retain) = patch.get("$retainKeys") {
        let keep: Vec<&str> = retain
            .as_array()
            .ok_or("$retainKeys must be a list")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, pv) in patch {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = pv
                .as_array()
                .ok_or("$deleteFromPrimitiveList must be a list")?;
            if let Some(Value::Array(items)) = out.get_mut(field) {
                items.retain(|i| !remove.contains(i));
            }
            continue;
        }
        if pv.is_null() {
            out.remove(k);
            continue;
        }
        path.push(PathElement::Field(k.clone()));
        let merged = match out.get(k) {
            Some(ov) => merge_value(ov, pv, path)?,
            None => merge_value(&Value::Null, pv, path)?,
        };
        path.pop();
        // `{$patch: delete}` as a map value removes the field.
        if pv.get("$patch").and_then(Value::as_str) == Some("delete") {
            out.remove(k);
        } else {
            out.insert(k.clone(), merged);
        }
    }
    Ok(out)
}

fn strip_directives(
    mut map: Map<String, Value>,
    path: &mut Path,
) -> Result<Map<String, Value>, String> {
    map.retain(|k, _| !k.starts_with('$'));
    let keys: Vec<String> = map.keys().cloned().collect();
    for k in keys {
        if let Some(Value::Object(inner)) = map.get(&k) {
            path.push(PathElement::Field(k.clone()));
            let cleaned = strip_directives(inner.clone(), path)?;
            path.pop();
            map.insert(k, Value::Object(cleaned));
        }
    }
    Ok(map)
}

fn merge_list(original: &[Value], patch: &[Value], path: &mut Path) -> Result<Vec<Value>, String> {
    // A `{$patch: replace}` item replaces the whole list with the other items.
    if patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(patch
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect());
    }
    match schema::patch_strategy(path) {
        PatchStrategy::Replace => Ok(patch.to_vec()),
        PatchStrategy::MergePrimitives => {
            let mut out = original.to_vec();
            for p in patch {
                if !out.contains(p) {
                    out.push(p.clone());
                }
            }
            Ok(out)
        }
        PatchStrategy::MergeByKey(key) => {
            let mut out = original.to_vec();
            for p in patch {
                let Some(pk) = p.get(key) else {
                    return Err(format!(
                        "map: {p} does not contain declared merge key: {key}"
                    ));
                };
                let pos = out.iter().position(|o| o.get(key) == Some(pk));
                if p.get("$patch").and_then(Value::as_str) == Some("delete") {
                    if let Some(i) = pos {
                        out.remove(i);
                    }
                    continue;
                }
                let mut key_obj = Map::new();
                key_obj.insert(key.to_string(), pk.clone());
                path.push(PathElement::Key(canonical_json(&Value::Object(key_obj))));
                match pos {
                    Some(i) => out[i] = merge_value(&out[i], p, path)?,
                    None => out.push(merge_value(&Value::Null, p, path)?),
                }
                path.pop();
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}, "finalizers": ["a"]},
            "spec": {
                "replicas": 2,
                "template": {"spec": {
                    "containers": [
                        {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}],
                         "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                         "args": ["x", "y"]},
                        {"name": "sidecar", "image": "envoy"}
                    ],
                    "tolerations": [{"key": "a"}]
                }}
            }
        })
    }

    #[test]
    fn merges_maps_and_deletes_nulls() {
        let out = strategic_merge(
            &deployment(),
            &json!({"metadata": {"labels": {"tier": null, "env": "prod"}}, "spec": {"replicas": 3}}),
        )
        .unwrap();
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "env": "prod"})
        );
        assert_eq!(out["spec"]["replicas"], 3);
        assert_eq!(out["spec"]["template"], deployment()["spec"]["template"]);
    }

    #[test]
    fn merges_containers_by_name_and_env_by_name() {
        let out = strategic_merge(
            &deployment(),
            &json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "nginx:2", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]},
                {"name": "new", "image": "busybox"}
            ]}}}}),
        )
        .unwrap();
        let cs = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(cs.len(), 3);
        assert_eq!(cs[0]["image"], "nginx:2");
        assert_eq!(cs[0]["ports"], json!([{"containerPort": 80}]));
        assert_eq!(
            cs[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
        );
        assert_eq!(cs[0]["args"], json!(["x", "y"]));
        assert_eq!(cs[1]["name"], "sidecar");
        assert_eq!(cs[2]["name"], "new");
    }

    #[test]
    fn atomic_lists_are_replaced() {
        let out = strategic_merge(
            &deployment(),
            &json!({"spec": {"template": {"spec": {"tolerations": [{"key": "b"}],
                "containers": [{"name": "web", "args": ["z"]}]}}}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "b"}])
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["args"],
            json!(["z"])
        );
    }

    #[test]
    fn delete_directives() {
        let out = strategic_merge(
            &deployment(),
            &json!({
                "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]},
                "spec": {"template": {"spec": {
                    "$setElementOrder/containers": [{"name": "web"}],
                    "containers": [{"name": "sidecar", "$patch": "delete"}]
                }}}
            }),
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!([]));
        let cs = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0]["name"], "web");
        assert!(
            out["spec"]["template"]["spec"]
                .get("$setElementOrder/containers")
                .is_none()
        );
    }

    #[test]
    fn replace_directives() {
        let out = strategic_merge(
            &deployment(),
            &json!({"metadata": {"labels": {"$patch": "replace", "only": "this"}}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"only": "this"}));
        let out = strategic_merge(
            &deployment(),
            &json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "solo", "image": "x"}]}}}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "solo", "image": "x"}])
        );
        let out = strategic_merge(
            &deployment(),
            &json!({"spec": {"template": {"$patch": "delete"}}}),
        )
        .unwrap();
        assert!(out["spec"].get("template").is_none());
    }

    #[test]
    fn retain_keys_and_primitive_union() {
        let orig = json!({"metadata": {"finalizers": ["a"]}, "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let out = strategic_merge(
            &orig,
            &json!({"metadata": {"finalizers": ["b", "a"]}, "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn errors_name_the_problem() {
        let err = strategic_merge(
            &deployment(),
            &json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
        )
        .unwrap_err();
        assert!(err.contains("merge key: name"), "{err}");
        assert!(strategic_merge(&deployment(), &json!({"metadata": {"$patch": "bogus"}})).is_err());
    }
}
