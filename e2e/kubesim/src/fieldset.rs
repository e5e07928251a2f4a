//! Field sets as server-side apply records them (`managedFields[].fieldsV1`), and the walks over
//! JSON values that produce and use them.
//!
//! A set is a tree of path elements. A node is a *member* when the path itself is owned: scalars,
//! atomic lists and maps, list items, and empty maps. In FieldsV1 a leaf `{}` is a member; an inner
//! node is a member when it holds `".": {}`.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use super::schema::{self, ListType};

/// One step into a value. The derived order (fields, keys, values, indexes) is the one the real
/// server serialises FieldsV1 in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    Field(String),
    /// An associative list item, as the canonical JSON object of its key fields.
    Key(String),
    /// A set item, as its JSON text.
    Value(String),
    Index(usize),
}

pub type Path = Vec<PathElement>;

impl fmt::Display for PathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(json) => {
                let parsed: Map<String, Value> = serde_json::from_str(json).unwrap_or_default();
                let parts: Vec<String> = parsed.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(json) => write!(f, "[={json}]"),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// `.spec.containers[name="web"].image`, as the real conflict messages print paths.
pub fn path_string(path: &[PathElement]) -> String {
    path.iter().map(ToString::to_string).collect()
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    pub fn insert(&mut self, path: &[PathElement]) {
        match path.split_first() {
            None => self.member = true,
            Some((head, rest)) => self.children.entry(head.clone()).or_default().insert(rest),
        }
    }

    fn node(&self, path: &[PathElement]) -> Option<&FieldSet> {
        match path.split_first() {
            None => Some(self),
            Some((head, rest)) => self.children.get(head)?.node(rest),
        }
    }

    /// Whether `path` itself is a member.
    pub fn has(&self, path: &[PathElement]) -> bool {
        self.node(path).is_some_and(|n| n.member)
    }

    /// Whether `path` or anything below it is a member.
    pub fn has_at_or_below(&self, path: &[PathElement]) -> bool {
        self.node(path).is_some_and(|n| !n.is_empty())
    }

    /// Removes `path` and everything below it.
    pub fn remove_subtree(&mut self, path: &[PathElement]) {
        match path.split_first() {
            None => {
                self.member = false;
                self.children.clear();
            }
            Some((head, rest)) => {
                if let Some(child) = self.children.get_mut(head) {
                    child.remove_subtree(rest);
                    if child.is_empty() {
                        self.children.remove(head);
                    }
                }
            }
        }
    }

    pub fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (k, v) in &other.children {
            self.children.entry(k.clone()).or_default().union(v);
        }
    }

    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (k, v) in &self.children {
            let d = match other.children.get(k) {
                Some(o) => v.difference(o),
                None => v.clone(),
            };
            if !d.is_empty() {
                out.children.insert(k.clone(), d);
            }
        }
        out
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (k, v) in &self.children {
            if let Some(o) = other.children.get(k) {
                let i = v.intersection(o);
                if !i.is_empty() {
                    out.children.insert(k.clone(), i);
                }
            }
        }
        out
    }

    /// Every member path, in serialisation order.
    pub fn members(&self) -> Vec<Path> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect(&mut prefix, &mut out);
        out
    }

    fn collect(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (k, v) in &self.children {
            prefix.push(k.clone());
            v.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The FieldsV1 JSON of this set.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".into(), Value::Object(Map::new()));
        }
        for (k, v) in &self.children {
            let key = match k {
                PathElement::Field(name) => format!("f:{name}"),
                PathElement::Key(json) => format!("k:{json}"),
                PathElement::Value(json) => format!("v:{json}"),
                PathElement::Index(i) => format!("i:{i}"),
            };
            map.insert(key, v.to_fields_v1());
        }
        Value::Object(map)
    }

    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        let mut set = FieldSet::new();
        set.read_fields_v1(v)?;
        // The root itself is never a member.
        set.member = false;
        Ok(set)
    }

    fn read_fields_v1(&mut self, v: &Value) -> Result<(), String> {
        let obj = v
            .as_object()
            .ok_or_else(|| format!("fieldsV1 node must be an object, got {v}"))?;
        if obj.is_empty() {
            self.member = true;
        }
        for (k, child) in obj {
            if k == "." {
                self.member = true;
                continue;
            }
            let pe = if let Some(name) = k.strip_prefix("f:") {
                PathElement::Field(name.to_string())
            } else if let Some(json) = k.strip_prefix("k:") {
                let parsed: Value = serde_json::from_str(json)
                    .map_err(|e| format!("invalid key {json:?} in fieldsV1: {e}"))?;
                PathElement::Key(canonical_json(&parsed))
            } else if let Some(json) = k.strip_prefix("v:") {
                let parsed: Value = serde_json::from_str(json)
                    .map_err(|e| format!("invalid value {json:?} in fieldsV1: {e}"))?;
                PathElement::Value(canonical_json(&parsed))
            } else if let Some(i) = k.strip_prefix("i:") {
                PathElement::Index(
                    i.parse()
                        .map_err(|e| format!("invalid index {i:?} in fieldsV1: {e}"))?,
                )
            } else {
                return Err(format!("unknown path element {k:?} in fieldsV1"));
            };
            self.children.entry(pe).or_default().read_fields_v1(child)?;
        }
        Ok(())
    }
}

/// Compact JSON with object keys sorted (serde_json's map is ordered by key).
pub fn canonical_json(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The path element identifying `item` in the list at `list_path`, or None when the list is
/// atomic (or an item lacks a key field, which makes kubesim treat the list as atomic).
pub fn item_element(list_type: ListType, item: &Value) -> Option<PathElement> {
    match list_type {
        ListType::Atomic => None,
        ListType::Set => Some(PathElement::Value(canonical_json(item))),
        ListType::Map(keys) => {
            let obj = item.as_object()?;
            let mut key = Map::new();
            for (k, default) in keys {
                match (obj.get(*k), default) {
                    (Some(v), _) if !v.is_null() => {
                        key.insert((*k).to_string(), v.clone());
                    }
                    (_, Some(d)) => {
                        key.insert((*k).to_string(), Value::String((*d).to_string()));
                    }
                    _ => return None,
                }
            }
            Some(PathElement::Key(canonical_json(&Value::Object(key))))
        }
    }
}

/// The elements of every item of a list, or None when the list must be treated atomically.
pub fn list_elements(path: &[PathElement], items: &[Value]) -> Option<Vec<PathElement>> {
    let lt = schema::list_type(path);
    if lt == ListType::Atomic {
        return None;
    }
    items.iter().map(|i| item_element(lt, i)).collect()
}

/// The set of fields `value` (an object) sets, as server-side apply counts them.
pub fn to_field_set(value: &Value) -> FieldSet {
    let mut set = FieldSet::new();
    let mut path = Vec::new();
    if let Value::Object(map) = value {
        walk_object(map, &mut path, &mut set);
    }
    set
}

fn walk_object(map: &Map<String, Value>, path: &mut Path, set: &mut FieldSet) {
    for (k, child) in map {
        path.push(PathElement::Field(k.clone()));
        walk_value(child, path, set);
        path.pop();
    }
}

fn walk_value(v: &Value, path: &mut Path, set: &mut FieldSet) {
    match v {
        Value::Object(m) if m.is_empty() || schema::is_atomic_map(path) => set.insert(path),
        Value::Object(m) => walk_object(m, path, set),
        Value::Array(items) => match list_elements(path, items) {
            None => set.insert(path),
            Some(elements) => {
                for (pe, item) in elements.into_iter().zip(items) {
                    path.push(pe);
                    set.insert(path);
                    if let Value::Object(m) = item {
                        walk_object(m, path, set);
                    }
                    path.pop();
                }
            }
        },
        _ => set.insert(path),
    }
}

/// The value at `path`, if present.
pub fn get_path<'a>(value: &'a Value, path: &[PathElement]) -> Option<&'a Value> {
    let Some((head, rest)) = path.split_first() else {
        return Some(value);
    };
    let child = match (head, value) {
        (PathElement::Field(name), Value::Object(m)) => m.get(name)?,
        (PathElement::Index(i), Value::Array(items)) => items.get(*i)?,
        (pe @ (PathElement::Key(_) | PathElement::Value(_)), Value::Array(items)) => {
            find_item(items, pe)?.1
        }
        _ => return None,
    };
    get_path(child, rest)
}

fn find_item<'a>(items: &'a [Value], pe: &PathElement) -> Option<(usize, &'a Value)> {
    match pe {
        PathElement::Value(json) => items
            .iter()
            .enumerate()
            .find(|(_, item)| canonical_json(item) == *json),
        PathElement::Key(json) => {
            // Parsed once per lookup, not once per item.
            let Ok(Value::Object(key)) = serde_json::from_str::<Value>(json) else {
                return None;
            };
            items
                .iter()
                .enumerate()
                .find(|(_, item)| key_matches(item, &key))
        }
        _ => None,
    }
}

fn key_matches(item: &Value, key: &Map<String, Value>) -> bool {
    let Some(obj) = item.as_object() else {
        return false;
    };
    key.iter().all(|(k, want)| match obj.get(k) {
        Some(v) => v == want,
        // A key field left out takes its default (protocol TCP).
        None => want == "TCP" && k == "protocol",
    })
}

/// Removes the value at `path`; returns whether something was removed.
pub fn remove_path(value: &mut Value, path: &[PathElement]) -> bool {
    let Some((last, parent_path)) = path.split_last() else {
        return false;
    };
    let Some(parent) = get_path_mut(value, parent_path) else {
        return false;
    };
    match (last, parent) {
        (PathElement::Field(name), Value::Object(m)) => m.remove(name).is_some(),
        (PathElement::Index(i), Value::Array(items)) if *i < items.len() => {
            items.remove(*i);
            true
        }
        (pe @ (PathElement::Key(_) | PathElement::Value(_)), Value::Array(items)) => {
            match find_item(items, pe).map(|(i, _)| i) {
                Some(i) => {
                    items.remove(i);
                    true
                }
                None => false,
            }
        }
        _ => false,
    }
}

pub fn get_path_mut<'a>(value: &'a mut Value, path: &[PathElement]) -> Option<&'a mut Value> {
    let Some((head, rest)) = path.split_first() else {
        return Some(value);
    };
    let child = match (head, value) {
        (PathElement::Field(name), Value::Object(m)) => m.get_mut(name)?,
        (PathElement::Index(i), Value::Array(items)) => items.get_mut(*i)?,
        (pe @ (PathElement::Key(_) | PathElement::Value(_)), Value::Array(items)) => {
            let i = find_item(items, pe)?.0;
            &mut items[i]
        }
        _ => return None,
    };
    get_path_mut(child, rest)
}

#[cfg(test)]
mod tests;
