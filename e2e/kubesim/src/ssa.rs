//! Server-side apply and field ownership (`managedFields`), after sigs.k8s.io/structured-merge-diff.
//!
//! Pure: values in, values out. [`apply`] merges an applied configuration into the live object,
//! detects conflicts with other managers, removes fields the applier stopped applying (unless
//! someone else owns them) and rewrites ownership; [`update`] records ownership for ordinary
//! writes (create, update, patch, controllers' status writes).

use serde_json::{Map, Value, json};

use super::fieldset::{self, FieldSet, Path, PathElement, get_path, path_string, to_field_set};
use super::schema::{self, ListType};
use super::status::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: String,
    pub fields: FieldSet,
}

impl ManagedEntry {
    /// Apply entries are one per manager (and subresource); Update entries one per manager,
    /// subresource and apiVersion.
    fn same_owner(
        &self,
        manager: &str,
        op: Operation,
        subresource: &str,
        api_version: &str,
    ) -> bool {
        self.manager == manager
            && self.operation == op
            && self.subresource == subresource
            && (op == Operation::Apply || self.api_version == api_version)
    }

    /// How conflict messages name this manager (apiserver's `printManager`).
    fn display(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == Operation::Update {
            match &self.time {
                Some(t) => s.push_str(&format!(" using {} at {t}", self.api_version)),
                None => s.push_str(&format!(" using {}", self.api_version)),
            }
        }
        s
    }
}

/// Who is writing: the identity a write is recorded under.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub subresource: &'a str,
    pub now: &'a str,
}

/// Reads `metadata.managedFields`.
pub fn decode_managed_fields(obj: &Value) -> Result<Vec<ManagedEntry>, String> {
    let Some(entries) = obj.pointer("/metadata/managedFields") else {
        return Ok(Vec::new());
    };
    let Some(entries) = entries.as_array() else {
        return Err("metadata.managedFields must be a list".into());
    };
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let manager = e.get("manager").and_then(Value::as_str).unwrap_or("");
        let operation = match e.get("operation").and_then(Value::as_str) {
            Some("Apply") => Operation::Apply,
            Some("Update") | None => Operation::Update,
            Some(other) => return Err(format!("unknown managedFields operation {other:?}")),
        };
        let fields = match e.get("fieldsV1") {
            Some(f) => FieldSet::from_fields_v1(f)?,
            None => FieldSet::new(),
        };
        out.push(ManagedEntry {
            manager: manager.to_string(),
            operation,
            api_version: e
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            time: e.get("time").and_then(Value::as_str).map(str::to_string),
            subresource: e
                .get("subresource")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            fields,
        });
    }
    Ok(out)
}

/// Writes `entries` as `metadata.managedFields`, sorted as the real server sorts them
/// (operation, time, manager, apiVersion, subresource); removes the field when there are none.
pub fn encode_managed_fields(obj: &mut Value, entries: &mut [ManagedEntry]) {
    entries.sort_by(|a, b| {
        (
            a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if entries.is_empty() {
        meta.remove("managedFields");
        return;
    }
    let list: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut m = Map::new();
            m.insert("manager".into(), json!(e.manager));
            m.insert("operation".into(), json!(e.operation.as_str()));
            m.insert("apiVersion".into(), json!(e.api_version));
            if let Some(t) = &e.time {
                m.insert("time".into(), json!(t));
            }
            m.insert("fieldsType".into(), json!("FieldsV1"));
            m.insert("fieldsV1".into(), e.fields.to_fields_v1());
            if !e.subresource.is_empty() {
                m.insert("subresource".into(), json!(e.subresource));
            }
            Value::Object(m)
        })
        .collect();
    meta.insert("managedFields".into(), Value::Array(list));
}

/// Fields nobody owns: identity and bookkeeping the server sets (apiserver's `stripMeta`).
fn strip_meta(set: &mut FieldSet) {
    for path in [
        &["apiVersion"][..],
        &["kind"],
        &["metadata", "name"],
        &["metadata", "namespace"],
        &["metadata", "uid"],
        &["metadata", "resourceVersion"],
        &["metadata", "generation"],
        &["metadata", "creationTimestamp"],
        &["metadata", "managedFields"],
        &["metadata", "selfLink"],
        &["metadata", "deletionTimestamp"],
        &["metadata", "deletionGracePeriodSeconds"],
    ] {
        let p: Path = path
            .iter()
            .map(|s| PathElement::Field((*s).to_string()))
            .collect();
        set.remove_subtree(&p);
    }
}

/// The fields `value` sets, minus the ones nobody owns.
pub fn owned_fields(value: &Value) -> FieldSet {
    let mut set = to_field_set(value);
    strip_meta(&mut set);
    set
}

/// Member paths of `new` that `old` lacks or holds a different value at. List items count as
/// changed only when they are new (their contents are compared field by field).
fn changed_fields(old: &Value, new_fields: &FieldSet, new: &Value) -> FieldSet {
    let mut changed = FieldSet::new();
    for path in new_fields.members() {
        let is_item = matches!(
            path.last(),
            Some(PathElement::Key(_) | PathElement::Value(_) | PathElement::Index(_))
        );
        let differs = match get_path(old, &path) {
            None => true,
            Some(_) if is_item => false,
            Some(o) => Some(o) != get_path(new, &path),
        };
        if differs {
            changed.insert(&path);
        }
    }
    changed
}

/// Merges an applied configuration into the live object (structured merge: maps by key,
/// associative lists by item key, sets by value, everything else replaced). `null` in the
/// configuration removes the field.
pub fn merge(live: &Value, config: &Value) -> Value {
    let mut path = Vec::new();
    merge_at(live, config, &mut path)
}

fn merge_at(live: &Value, config: &Value, path: &mut Path) -> Value {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) if path.is_empty() || !schema::is_atomic_map(path) => {
            let mut out = l.clone();
            for (k, cv) in c {
                if cv.is_null() {
                    out.remove(k);
                    continue;
                }
                path.push(PathElement::Field(k.clone()));
                let merged = match l.get(k) {
                    Some(lv) => merge_at(lv, cv, path),
                    None => cv.clone(),
                };
                path.pop();
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) => {
            let lt = schema::list_type(path);
            let (Some(le), Some(ce)) = (
                fieldset::list_elements(path, l),
                fieldset::list_elements(path, c),
            ) else {
                return config.clone();
            };
            if lt == ListType::Atomic {
                return config.clone();
            }
            let mut out = Vec::with_capacity(l.len() + c.len());
            for (lpe, litem) in le.iter().zip(l) {
                match ce.iter().position(|cpe| cpe == lpe) {
                    Some(ci) => {
                        path.push(lpe.clone());
                        out.push(merge_at(litem, &c[ci], path));
                        path.pop();
                    }
                    None => out.push(litem.clone()),
                }
            }
            for (cpe, citem) in ce.iter().zip(c) {
                if !le.contains(cpe) {
                    out.push(citem.clone());
                }
            }
            Value::Array(out)
        }
        _ => config.clone(),
    }
}

/// A 409 from a non-forced apply.
fn conflict_error(conflicts: &[(String, Path)]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(who, path)| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {who}"),
                "field": path_string(path),
            })
        })
        .collect();
    let message = if conflicts.len() == 1 {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            conflicts[0].0,
            path_string(&conflicts[0].1)
        )
    } else {
        let mut managers: Vec<&String> = conflicts.iter().map(|(m, _)| m).collect();
        managers.sort();
        managers.dedup();
        let mut lines = Vec::new();
        for m in managers {
            lines.push(format!("conflicts with {m}:"));
            for (who, path) in conflicts {
                if who == m {
                    lines.push(format!("- {}", path_string(path)));
                }
            }
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    ApiError::new(409, "Conflict", message).with_details(json!({ "causes": causes }))
}

/// Server-side apply of `config` onto `live` (an empty object when creating) by `writer`.
///
/// `entries` are the live object's managed fields; on success they hold the new ownership and the
/// merged object is returned (its `managedFields` not yet written: see [`encode_managed_fields`]).
pub fn apply(
    live: &Value,
    config: &Value,
    entries: &mut Vec<ManagedEntry>,
    writer: &Writer<'_>,
    force: bool,
) -> Result<Value, ApiError> {
    let mut merged = merge(live, config);
    let applied = owned_fields(config);
    let live_fields = owned_fields(live);
    let merged_fields = owned_fields(&merged);
    let changed = changed_fields(live, &merged_fields, &merged);

    let mine = |e: &ManagedEntry| {
        e.same_owner(
            writer.manager,
            Operation::Apply,
            writer.subresource,
            writer.api_version,
        )
    };

    // Conflicts: fields this apply changes that another manager owns.
    let mut conflicts = Vec::new();
    for e in entries.iter().filter(|e| !mine(e)) {
        for path in e.fields.intersection(&changed).members() {
            conflicts.push((e.display(), path));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }
    for e in entries.iter_mut().filter(|e| !mine(e)) {
        e.fields = e.fields.difference(&changed);
    }

    // Fields this manager applied last time but not now are removed, unless another manager
    // owns them (or something below them).
    let last = entries
        .iter()
        .find(|e| mine(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let dropped = last.difference(&applied);
    let others: Vec<&FieldSet> = entries
        .iter()
        .filter(|e| !mine(e))
        .map(|e| &e.fields)
        .collect();
    for path in dropped.members() {
        if others.iter().any(|o| o.has_at_or_below(&path)) {
            continue;
        }
        if fieldset::remove_path(&mut merged, &path) {
            prune_emptied_parents(&mut merged, &path, &others, &applied);
        }
    }

    // Ownership: the applier owns exactly what it applied; fields that disappeared are owned by
    // nobody.
    entries.retain(|e| !mine(e));
    entries.push(ManagedEntry {
        manager: writer.manager.to_string(),
        operation: Operation::Apply,
        api_version: writer.api_version.to_string(),
        time: Some(writer.now.to_string()),
        subresource: writer.subresource.to_string(),
        fields: applied,
    });
    // Only pruning changed `merged` since `merged_fields` was computed.
    let final_fields = if dropped.is_empty() {
        merged_fields
    } else {
        owned_fields(&merged)
    };
    let removed = live_fields.difference(&final_fields);
    for e in entries.iter_mut() {
        e.fields = e.fields.difference(&removed);
    }
    entries.retain(|e| !e.fields.is_empty());
    Ok(merged)
}

/// After a field was removed, removes the maps above it that it left empty, unless someone owns
/// them; `metadata` always stays.
fn prune_emptied_parents(
    value: &mut Value,
    removed: &[PathElement],
    others: &[&FieldSet],
    applied: &FieldSet,
) {
    let mut path = removed.to_vec();
    while path.len() > 1 {
        path.pop();
        if path.len() == 1 && path[0] == PathElement::Field("metadata".into()) {
            return;
        }
        let empty = match fieldset::get_path(value, &path) {
            Some(Value::Object(m)) => m.is_empty(),
            _ => false,
        };
        let owned = applied.has_at_or_below(&path) || others.iter().any(|o| o.has(&path));
        if !empty || owned {
            return;
        }
        fieldset::remove_path(value, &path);
    }
}

/// Records ownership for an ordinary write from `old` to `new` by `writer`: it takes the fields it
/// changed from everyone else; removed fields are owned by nobody.
pub fn update(old: &Value, new: &Value, entries: &mut Vec<ManagedEntry>, writer: &Writer<'_>) {
    let new_fields = owned_fields(new);
    let changed = changed_fields(old, &new_fields, new);
    let removed = owned_fields(old).difference(&new_fields);
    for e in entries.iter_mut() {
        e.fields = e.fields.difference(&changed).difference(&removed);
    }
    if !changed.is_empty() {
        let me = entries.iter_mut().find(|e| {
            e.same_owner(
                writer.manager,
                Operation::Update,
                writer.subresource,
                writer.api_version,
            )
        });
        match me {
            Some(e) => {
                e.fields.union(&changed);
                e.time = Some(writer.now.to_string());
            }
            None => entries.push(ManagedEntry {
                manager: writer.manager.to_string(),
                operation: Operation::Update,
                api_version: writer.api_version.to_string(),
                time: Some(writer.now.to_string()),
                subresource: writer.subresource.to_string(),
                fields: changed,
            }),
        }
    }
    entries.retain(|e| !e.fields.is_empty());
}

/// Whether two ownership lists are the same apart from timestamps (a no-op apply).
pub fn same_ownership(a: &[ManagedEntry], b: &[ManagedEntry]) -> bool {
    a.len() == b.len()
        && a.iter().all(|x| {
            b.iter().any(|y| {
                x.manager == y.manager
                    && x.operation == y.operation
                    && x.api_version == y.api_version
                    && x.subresource == y.subresource
                    && x.fields == y.fields
            })
        })
}

#[cfg(test)]
mod tests;
