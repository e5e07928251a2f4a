//! One virtual cluster's state: objects, resource versions, the watch history and live watchers,
//! and the write paths (create, update, patch, apply, delete) with everything the API server does
//! around them (identity, generation, ownership, defaults, garbage collection, namespaces).
//!
//! Objects are kept as serialised JSON so that reads and watches just copy bytes and an idle
//! cluster costs little memory; writes parse, change and re-serialise.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::controllers::{self, ControllerOptions, Delay, Step};
use super::defaults;
use super::resources::{self, ResourceType};
use super::selector::{FieldSelector, LabelSelector};
use super::smp;
use super::ssa::{self, ManagedEntry, Writer};
use super::status::{ApiError, FieldError};
use super::validation;

/// One stored object version.
#[derive(Debug)]
pub struct Stored {
    pub namespace: String,
    pub name: String,
    pub rv: u64,
    pub labels: BTreeMap<String, String>,
    /// The object as JSON (compact).
    pub bytes: Bytes,
}

impl Stored {
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub type_key: Arc<str>,
    pub kind: EventType,
    pub obj: Arc<Stored>,
    pub prev: Option<Arc<Stored>>,
}

/// What a watch wants to see.
#[derive(Debug, Clone)]
pub struct WatchFilter {
    pub type_key: String,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl WatchFilter {
    pub fn matches(&self, obj: &Stored) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| ns == obj.namespace)
            && self.labels.matches(&obj.labels)
            && self.fields.matches(&obj.name, &obj.namespace)
    }

    /// The event a watcher with this filter sees for `e`, if any: objects moving into or out of
    /// the selection appear as added or deleted.
    pub fn translate(&self, e: &Event) -> Option<(EventType, Arc<Stored>)> {
        if *e.type_key != *self.type_key {
            return None;
        }
        let now = self.matches(&e.obj);
        let before = e.prev.as_ref().is_some_and(|p| self.matches(p));
        match (e.kind, before, now) {
            (EventType::Deleted, _, true) => Some((EventType::Deleted, e.obj.clone())),
            (EventType::Deleted, _, false) => None,
            (_, true, true) => Some((e.kind, e.obj.clone())),
            (_, false, true) => Some((EventType::Added, e.obj.clone())),
            (_, true, false) => Some((EventType::Deleted, e.obj.clone())),
            (_, false, false) => None,
        }
    }
}

pub type WatchItem = (EventType, Arc<Stored>);

struct Watcher {
    filter: WatchFilter,
    tx: mpsc::Sender<WatchItem>,
}

/// Work for the simulated controllers, handed to the shared timer.
#[derive(Debug, Clone)]
pub struct PlannedJob {
    pub delay: Delay,
    pub step: Step,
    pub type_key: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub generation: i64,
}

/// Per-request write options.
#[derive(Debug, Clone)]
pub struct WriteCtx {
    pub manager: String,
    pub dry_run: bool,
    pub force: bool,
    pub now: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchStart {
    /// Synthetic ADDED events for what exists now, then changes.
    Snapshot,
    /// Every change after this resource version.
    After(u64),
}

pub const DEFAULT_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

pub struct ClusterState {
    rv: u64,
    objects: HashMap<String, BTreeMap<(String, String), Arc<Stored>>>,
    custom: BTreeMap<String, Arc<ResourceType>>,
    history: VecDeque<Arc<Event>>,
    /// Events at or below this resource version are no longer in the history.
    history_floor: u64,
    history_cap: usize,
    watchers: Vec<Watcher>,
    seq: u64,
    /// Controller work planned by writes, drained by the server after each operation.
    pub jobs: Vec<PlannedJob>,
    /// Which optional controllers run in this cluster.
    pub options: ControllerOptions,
}

fn meta_str<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn metadata_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    v["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

/// The `autoscaling/v1` Scale of a workload.
fn scale_of(v: &Value) -> Value {
    let selector = v
        .pointer("/spec/selector/matchLabels")
        .or_else(|| v.pointer("/spec/selector"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let meta = |k: &str| {
        v.pointer(&format!("/metadata/{k}"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta("name"),
            "namespace": meta("namespace"),
            "uid": meta("uid"),
            "resourceVersion": meta("resourceVersion"),
            "creationTimestamp": meta("creationTimestamp"),
        },
        "spec": {"replicas": v.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": v.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// The real server serialises ObjectMeta with `omitempty`: empty label, annotation, finalizer
/// and owner lists do not appear.
fn drop_empty_metadata(v: &mut Value) {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "labels",
            "annotations",
            "finalizers",
            "ownerReferences",
            "generateName",
        ] {
            let empty = match m.get(k) {
                Some(Value::Object(o)) => o.is_empty(),
                Some(Value::Array(a)) => a.is_empty(),
                Some(Value::String(s)) => s.is_empty(),
                Some(Value::Null) => true,
                _ => false,
            };
            if empty {
                m.remove(k);
            }
        }
    }
}

/// Whether two JSON objects agree on every key not in `skip` (compared in place, no clones:
/// this runs on every write).
fn equal_except(
    a: Option<&Map<String, Value>>,
    b: Option<&Map<String, Value>>,
    skip: &[&str],
) -> bool {
    let empty = Map::new();
    let (a, b) = (a.unwrap_or(&empty), b.unwrap_or(&empty));
    let kept = |m: &Map<String, Value>| m.keys().filter(|k| !skip.contains(&k.as_str())).count();
    kept(a) == kept(b)
        && a.iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .all(|(k, v)| b.get(k) == Some(v))
}

/// Whether what `generation` tracks (everything but metadata and status) is unchanged.
fn same_spec(a: &Value, b: &Value) -> bool {
    equal_except(
        a.as_object(),
        b.as_object(),
        &["metadata", "status", "apiVersion", "kind"],
    )
}

/// For no-op detection: equal apart from the fields that change on every write.
fn same_content(a: &Value, b: &Value) -> bool {
    fn meta(v: &Value) -> Option<&Map<String, Value>> {
        v.get("metadata").and_then(Value::as_object)
    }
    equal_except(a.as_object(), b.as_object(), &["metadata"])
        && equal_except(meta(a), meta(b), &["managedFields", "resourceVersion"])
}

pub fn parse_body(body: &[u8], yaml: bool) -> Result<Value, ApiError> {
    let parsed = match serde_json::from_slice::<Value>(body) {
        Ok(v) => Ok(v),
        Err(_) if yaml => crate::yaml::value(body).map_err(|e| {
            ApiError::bad_request(format!(
                "error decoding YAML: error converting YAML to JSON: yaml: {e}"
            ))
        }),
        Err(e) => Err(ApiError::bad_request(format!(
            "the object provided is unrecognized: couldn't get version/kind; json parse error: {e}"
        ))),
    }?;
    if !parsed.is_object() {
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized: expected an object, got {}",
            match parsed {
                Value::Array(_) => "a list",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        )));
    }
    Ok(parsed)
}

impl ClusterState {
    pub fn new(history_cap: usize, now: &str) -> Self {
        let mut s = Self {
            rv: 0,
            objects: HashMap::new(),
            custom: BTreeMap::new(),
            history: VecDeque::new(),
            history_floor: 0,
            history_cap: history_cap.max(1),
            watchers: Vec::new(),
            seq: 0,
            jobs: Vec::new(),
            options: ControllerOptions::default(),
        };
        let ctx = WriteCtx {
            manager: "kube-apiserver".into(),
            dry_run: false,
            force: false,
            now: now.into(),
        };
        let ns_type = s
            .resolve("", "v1", "namespaces")
            .expect("namespaces are built in");
        for ns in DEFAULT_NAMESPACES {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            // Creating the built-in namespaces in an empty cluster cannot fail.
            let _ = s.create(&ns_type, "v1", None, body, &ctx);
        }
        // Nobody needs the history of the cluster's birth.
        s.history.clear();
        s.history_floor = s.rv;
        s
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The type served at `group/version/plural`.
    pub fn resolve(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        resources::builtins()
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .cloned()
            .or_else(|| {
                self.custom
                    .values()
                    .find(|r| r.group == group && r.plural == plural)
                    .cloned()
            })
            .filter(|r| r.serves(version))
    }

    /// The type of objects with this apiVersion and kind.
    pub fn resolve_kind(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Option<(Arc<ResourceType>, String)> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        resources::builtins()
            .iter()
            .chain(self.custom.values())
            .find(|r| r.group == group && r.kind == kind && r.serves(version))
            .map(|r| (r.clone(), version.to_string()))
    }

    /// Built-in types followed by those the cluster's CRDs define.
    pub fn all_types(&self) -> Vec<Arc<ResourceType>> {
        resources::builtins()
            .iter()
            .cloned()
            .chain(self.custom.values().cloned())
            .collect()
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Arc<Stored>, ApiError> {
        self.objects
            .get(&rt.key())
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
    }

    fn lookup(&self, key: &str, ns: &str, name: &str) -> Option<Arc<Stored>> {
        self.objects
            .get(key)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Vec<Arc<Stored>> {
        let Some(m) = self.objects.get(&rt.key()) else {
            return Vec::new();
        };
        m.values()
            .filter(|o| ns.is_none_or(|ns| ns == o.namespace))
            .filter(|o| labels.matches(&o.labels) && fields.matches(&o.name, &o.namespace))
            .cloned()
            .collect()
    }

    /// Every object, for assertions.
    pub fn all_objects(&self) -> Vec<Arc<Stored>> {
        let mut keys: Vec<&String> = self.objects.keys().collect();
        keys.sort();
        keys.iter()
            .flat_map(|k| self.objects[*k].values().cloned())
            .collect()
    }

    /// Registers a watch and returns the events it starts with.
    pub fn watch(
        &mut self,
        filter: WatchFilter,
        start: WatchStart,
        tx: mpsc::Sender<WatchItem>,
    ) -> Result<Vec<WatchItem>, ApiError> {
        let initial = match start {
            WatchStart::Snapshot => self
                .objects
                .get(&filter.type_key)
                .map(|m| {
                    m.values()
                        .filter(|o| filter.matches(o))
                        .map(|o| (EventType::Added, o.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            WatchStart::After(rv) => {
                if rv < self.history_floor {
                    return Err(ApiError::expired(rv, self.history_floor + 1));
                }
                self.history
                    .iter()
                    .filter(|e| e.rv > rv)
                    .filter_map(|e| filter.translate(e))
                    .collect()
            }
        };
        self.watchers.retain(|w| !w.tx.is_closed());
        self.watchers.push(Watcher { filter, tx });
        Ok(initial)
    }

    fn emit(
        &mut self,
        type_key: &str,
        kind: EventType,
        obj: Arc<Stored>,
        prev: Option<Arc<Stored>>,
    ) {
        let event = Arc::new(Event {
            rv: self.rv,
            type_key: Arc::from(type_key),
            kind,
            obj,
            prev,
        });
        self.watchers.retain(|w| {
            let Some(item) = w.filter.translate(&event) else {
                return !w.tx.is_closed();
            };
            // A watcher that cannot keep up is closed, as the real server does; it re-watches.
            w.tx.try_send(item).is_ok()
        });
        self.history.push_back(event);
        while self.history.len() > self.history_cap {
            if let Some(e) = self.history.pop_front() {
                self.history_floor = e.rv;
            }
        }
    }

    fn namespace_state(&self, ns: &str) -> Option<Value> {
        self.lookup("namespaces", "", ns).map(|o| o.value())
    }

    /// Stores `new` (already merged and owned) as the next version of `name`.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &mut self,
        rt: &ResourceType,
        version: &str,
        ns: &str,
        name: &str,
        old: Option<(&Arc<Stored>, &Value, &[ManagedEntry])>,
        mut new: Value,
        mut entries: Vec<ManagedEntry>,
        ctx: &WriteCtx,
    ) -> Result<(Arc<Stored>, bool), ApiError> {
        let old_value = old.map(|(_, v, _)| v);
        new["apiVersion"] = json!(rt.api_version(version));
        new["kind"] = json!(rt.kind);
        let meta = metadata_mut(&mut new);
        meta.insert("name".into(), json!(name));
        if rt.namespaced {
            meta.insert("namespace".into(), json!(ns));
        } else {
            meta.remove("namespace");
        }

        let mut errors = validation::validate_name(rt.name_rule, name);
        if let Some(labels) = new.pointer("/metadata/labels") {
            match labels.as_object() {
                Some(l) => errors.extend(validation::validate_labels(l)),
                None if labels.is_null() => {}
                None => errors.push(FieldError::invalid(
                    "metadata.labels",
                    &labels.to_string(),
                    "must be a map of strings",
                )),
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid(&rt.kind, &rt.group, name, errors));
        }
        if rt.custom && old.is_none() {
            // Nothing to check beyond names: kubesim does not validate against CRD schemas.
        }
        if rt.kind == "CustomResourceDefinition" {
            resources::from_crd(&new)?;
        }

        if old.is_none() && rt.namespaced {
            match self.namespace_state(ns) {
                None => {
                    return Err(ApiError::not_found("", "namespaces", ns));
                }
                Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => {
                    return Err(ApiError::namespace_terminating(
                        ns, &rt.group, &rt.plural, name,
                    ));
                }
                Some(_) => {}
            }
        }

        // Identity and bookkeeping come from the server, never from the client.
        let (uid, created_at, generation) = match old_value {
            Some(o) => (
                json!(meta_str(o, "uid")),
                o.pointer("/metadata/creationTimestamp")
                    .cloned()
                    .unwrap_or(Value::Null),
                o.pointer("/metadata/generation").and_then(Value::as_i64),
            ),
            None => (
                json!(uuid::Uuid::new_v4().to_string()),
                json!(ctx.now),
                None,
            ),
        };
        self.seq += 1;
        defaults::default_object(&mut new, old_value, self.seq);
        let errors = validation::validate_update_strategy(&new);
        if !errors.is_empty() {
            return Err(ApiError::invalid(&rt.kind, &rt.group, name, errors));
        }
        drop_empty_metadata(&mut new);
        let meta = metadata_mut(&mut new);
        meta.insert("uid".into(), uid);
        meta.insert("creationTimestamp".into(), created_at);
        for k in ["selfLink", "resourceVersion", "generation"] {
            meta.remove(k);
        }
        // Only DELETE marks an object deleted; once marked it stays marked.
        if let Some(t) = old_value.and_then(|o| o.pointer("/metadata/deletionTimestamp")) {
            meta.insert("deletionTimestamp".into(), t.clone());
        }
        if rt.generation {
            let g = match (old_value, generation) {
                // The fail annotation stands for a bad image: changing it is a spec change,
                // so clients see the controller has not observed it until its step runs.
                (Some(o), Some(g))
                    if same_spec(o, &new) && controllers::fails(o) == controllers::fails(&new) =>
                {
                    g
                }
                (Some(_), Some(g)) => g + 1,
                _ => 1,
            };
            metadata_mut(&mut new).insert("generation".into(), json!(g));
        }
        ssa::encode_managed_fields(&mut new, &mut entries);

        if let Some((stored, o, old_entries)) = old
            && same_content(&new, o)
            && ssa::same_ownership(old_entries, &entries)
        {
            return Ok((stored.clone(), false));
        }

        // A deleted object whose last finalizer went away is gone.
        // (Namespaces go once their contents have, see `finish_namespace`.)
        let finalizers_done = rt.kind != "Namespace"
            && new.pointer("/metadata/deletionTimestamp").is_some()
            && new
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);

        // A dry run shows the version the object has (none when it would be created).
        let rv = match (ctx.dry_run, old) {
            (false, _) => self.rv + 1,
            (true, Some((stored, _, _))) => stored.rv,
            (true, None) => 0,
        };
        if rv > 0 {
            metadata_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
        }
        let stored = Arc::new(Stored {
            namespace: if rt.namespaced {
                ns.to_string()
            } else {
                String::new()
            },
            name: name.to_string(),
            rv,
            labels: labels_of(&new),
            bytes: Bytes::from(
                serde_json::to_vec(&new).map_err(|e| ApiError::internal(e.to_string()))?,
            ),
        });
        if ctx.dry_run {
            return Ok((stored, true));
        }
        if finalizers_done && old.is_some() {
            self.remove(rt, ns, name, Propagation::Background);
            return Ok((stored, true));
        }
        self.rv = rv;
        let key = rt.key();
        let prev = self
            .objects
            .entry(key.clone())
            .or_default()
            .insert((stored.namespace.clone(), name.to_string()), stored.clone());
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.emit(&key, kind, stored.clone(), prev);

        if rt.kind == "CustomResourceDefinition" {
            let t = resources::from_crd(&new)?;
            self.custom.insert(t.key(), Arc::new(t));
        }
        if rt.has_scale() {
            self.wake_autoscalers(rt, old_value, &new, ns, name);
        }
        for (delay, step) in controllers::plan(old_value, &new, self.options) {
            self.jobs.push(PlannedJob {
                delay,
                step,
                type_key: key.clone(),
                namespace: stored.namespace.clone(),
                name: name.to_string(),
                uid: meta_str(&new, "uid").to_string(),
                generation: new
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
            });
        }
        Ok((stored, true))
    }

    /// A scale target created or resized wakes the autoscalers that scale it (the real HPA
    /// controller would see it on its next resync).
    fn wake_autoscalers(
        &mut self,
        rt: &ResourceType,
        old: Option<&Value>,
        new: &Value,
        ns: &str,
        name: &str,
    ) {
        let replicas = |v: &Value| v.pointer("/spec/replicas").cloned();
        if old.is_some_and(|o| replicas(o) == replicas(new)) {
            return;
        }
        let Some(hpas) = self.objects.get("horizontalpodautoscalers.autoscaling") else {
            return;
        };
        for hpa in hpas.values().filter(|h| h.namespace == ns) {
            let v = hpa.value();
            if controllers::hpa_targets(&v, &rt.kind, name) {
                self.jobs.push(PlannedJob {
                    delay: Delay::Now,
                    step: Step::Settle,
                    type_key: "horizontalpodautoscalers.autoscaling".into(),
                    namespace: ns.to_string(),
                    name: hpa.name.clone(),
                    uid: meta_str(&v, "uid").to_string(),
                    generation: v
                        .pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(0),
                });
            }
        }
    }

    /// The object an HPA scales, if it exists.
    fn scale_target(&self, hpa: &Value, ns: &str) -> Option<(Arc<ResourceType>, Arc<Stored>)> {
        let kind = hpa.pointer("/spec/scaleTargetRef/kind")?.as_str()?;
        let name = hpa.pointer("/spec/scaleTargetRef/name")?.as_str()?;
        let rt = match hpa
            .pointer("/spec/scaleTargetRef/apiVersion")
            .and_then(Value::as_str)
        {
            Some(av) => self.resolve_kind(av, kind)?.0,
            None => resources::builtins()
                .iter()
                .find(|t| t.kind == kind)?
                .clone(),
        };
        if !rt.has_scale() {
            return None;
        }
        let target = self.get(&rt, ns, name).ok()?;
        Some((rt, target))
    }

    /// Checks the identity in a request body against the URL.
    fn check_body(
        rt: &ResourceType,
        version: &str,
        ns: &str,
        name: Option<&str>,
        body: &Value,
    ) -> Result<(), ApiError> {
        if let Some(av) = body.get("apiVersion").and_then(Value::as_str) {
            let expected = rt.api_version(version);
            if av != expected {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({expected})"
                )));
            }
        }
        if let Some(kind) = body.get("kind").and_then(Value::as_str)
            && kind != rt.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                rt.kind
            )));
        }
        let body_name = meta_str(body, "name");
        if let Some(url_name) = name
            && !body_name.is_empty()
            && body_name != url_name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({url_name})"
            )));
        }
        let body_ns = meta_str(body, "namespace");
        if rt.namespaced && !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        Ok(())
    }

    /// Keeps what a write through the main resource may not change (status, when there is a
    /// status subresource) or, through `/status`, everything but status.
    fn scope_write(
        rt: &ResourceType,
        status_sub: bool,
        old: Option<&Value>,
        mut new: Value,
    ) -> Value {
        if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
        }
        if status_sub {
            let mut out = old.cloned().unwrap_or_else(|| json!({}));
            match new.get_mut("status").map(Value::take) {
                Some(s) => out["status"] = s,
                None => {
                    if let Some(m) = out.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            return out;
        }
        if rt.status {
            match old.and_then(|o| o.get("status")) {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        new
    }

    pub fn create(
        &mut self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        body: Value,
        ctx: &WriteCtx,
    ) -> Result<Arc<Stored>, ApiError> {
        let ns = ns.unwrap_or("");
        Self::check_body(rt, version, ns, None, &body)?;
        let mut name = meta_str(&body, "name").to_string();
        if name.is_empty() {
            let prefix = meta_str(&body, "generateName");
            if !prefix.is_empty() {
                name = format!(
                    "{prefix}{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..5]
                );
            }
        }
        if self
            .lookup(&rt.key(), if rt.namespaced { ns } else { "" }, &name)
            .is_some()
        {
            return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
        }
        let new = Self::scope_write(rt, false, None, body);
        let mut entries = Vec::new();
        let writer = Writer {
            manager: &ctx.manager,
            api_version: &rt.api_version(version),
            subresource: "",
            now: &ctx.now,
        };
        ssa::update(&json!({}), &new, &mut entries, &writer);
        Ok(self
            .commit(rt, version, ns, &name, None, new, entries, ctx)?
            .0)
    }

    /// PUT: replaces the object (or its status).
    #[allow(clippy::too_many_arguments)]
    pub fn replace(
        &mut self,
        rt: &ResourceType,
        version: &str,
        ns: &str,
        name: &str,
        body: Value,
        status_sub: bool,
        ctx: &WriteCtx,
    ) -> Result<Arc<Stored>, ApiError> {
        Self::check_body(rt, version, ns, Some(name), &body)?;
        let old = self.get(rt, ns, name)?;
        let requested_rv = meta_str(&body, "resourceVersion");
        if !requested_rv.is_empty() && requested_rv != old.rv.to_string() {
            return Err(ApiError::stale(&rt.group, &rt.plural, name));
        }
        let old_value = old.value();
        let new = Self::scope_write(rt, status_sub, Some(&old_value), body);
        self.write_update(
            rt, version, ns, name, &old, &old_value, new, status_sub, ctx,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn write_update(
        &mut self,
        rt: &ResourceType,
        version: &str,
        ns: &str,
        name: &str,
        old: &Arc<Stored>,
        old_value: &Value,
        new: Value,
        status_sub: bool,
        ctx: &WriteCtx,
    ) -> Result<Arc<Stored>, ApiError> {
        let old_entries = ssa::decode_managed_fields(old_value).map_err(ApiError::bad_request)?;
        // A client may rewrite managedFields explicitly (e.g. to reset them).
        let mut entries = match new.pointer("/metadata/managedFields") {
            Some(m) if Some(m) != old_value.pointer("/metadata/managedFields") => {
                ssa::decode_managed_fields(&new).map_err(ApiError::bad_request)?
            }
            _ => old_entries.clone(),
        };
        let api_version = rt.api_version(version);
        let writer = Writer {
            manager: &ctx.manager,
            api_version: &api_version,
            subresource: if status_sub { "status" } else { "" },
            now: &ctx.now,
        };
        ssa::update(old_value, &new, &mut entries, &writer);
        Ok(self
            .commit(
                rt,
                version,
                ns,
                name,
                Some((old, old_value, &old_entries)),
                new,
                entries,
                ctx,
            )?
            .0)
    }

    /// PATCH in any of the four patch formats; returns the object and whether it was created.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        version: &str,
        ns: &str,
        name: &str,
        kind: PatchKind,
        body: &[u8],
        status_sub: bool,
        ctx: &WriteCtx,
    ) -> Result<(Arc<Stored>, bool), ApiError> {
        if kind == PatchKind::Apply {
            return self.apply(rt, version, ns, name, body, status_sub, ctx);
        }
        let old = self.get(rt, ns, name)?;
        let old_value = old.value();
        let new = match kind {
            PatchKind::Json => {
                let ops: json_patch::Patch = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                let mut doc = old_value.clone();
                json_patch::patch(&mut doc, &ops).map_err(|e| {
                    ApiError::new(
                        422,
                        "Invalid",
                        format!(
                            "the server rejected our request due to an error in our request: {e}"
                        ),
                    )
                })?;
                doc
            }
            PatchKind::Merge => {
                let p: Value = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                let mut doc = old_value.clone();
                json_patch::merge(&mut doc, &p);
                doc
            }
            PatchKind::Strategic => {
                let p: Value = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                smp::strategic_merge(&old_value, &p).map_err(ApiError::bad_request)?
            }
            PatchKind::Apply => return self.apply(rt, version, ns, name, body, status_sub, ctx),
        };
        Self::check_body(rt, version, ns, Some(name), &new)?;
        let requested_rv = meta_str(&new, "resourceVersion");
        if !requested_rv.is_empty() && requested_rv != old.rv.to_string() {
            return Err(ApiError::stale(&rt.group, &rt.plural, name));
        }
        let new = Self::scope_write(rt, status_sub, Some(&old_value), new);
        let stored = self.write_update(
            rt, version, ns, name, &old, &old_value, new, status_sub, ctx,
        )?;
        Ok((stored, false))
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        rt: &ResourceType,
        version: &str,
        ns: &str,
        name: &str,
        body: &[u8],
        status_sub: bool,
        ctx: &WriteCtx,
    ) -> Result<(Arc<Stored>, bool), ApiError> {
        let mut config = parse_body(body, true)?;
        let api_version = rt.api_version(version);
        match config.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => return Err(ApiError::bad_request("apiVersion must be specified")),
            Some(_) => {}
        }
        match config.get("kind").and_then(Value::as_str) {
            None | Some("") => return Err(ApiError::bad_request("kind must be specified")),
            Some(_) => {}
        }
        Self::check_body(rt, version, ns, Some(name), &config)?;
        if meta_str(&config, "name").is_empty() {
            metadata_mut(&mut config).insert("name".into(), json!(name));
        }
        if let Some(m) = config.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            if m.remove("managedFields").is_some_and(|mf| !mf.is_null()) {
                return Err(ApiError::bad_request("metadata.managedFields must be nil"));
            }
        }
        let old = self.lookup(&rt.key(), if rt.namespaced { ns } else { "" }, name);
        let old_value = old.as_ref().map(|o| o.value());
        if let (Some(o), rv) = (&old, meta_str(&config, "resourceVersion"))
            && !rv.is_empty()
            && rv != o.rv.to_string()
        {
            return Err(ApiError::stale(&rt.group, &rt.plural, name));
        }
        if old.is_none() && status_sub {
            return Err(ApiError::not_found(&rt.group, &rt.plural, name));
        }
        // Status is not applied through the main resource, nor anything but status through /status.
        let config = if status_sub {
            let mut c = json!({"apiVersion": config["apiVersion"], "kind": config["kind"], "metadata": {"name": name}});
            if let Some(s) = config.get("status") {
                c["status"] = s.clone();
            }
            c
        } else if rt.status {
            let mut c = config;
            if let Some(m) = c.as_object_mut() {
                m.remove("status");
            }
            c
        } else {
            config
        };
        let live = old_value.clone().unwrap_or_else(|| json!({}));
        let old_entries = ssa::decode_managed_fields(&live).map_err(ApiError::bad_request)?;
        let mut entries = old_entries.clone();
        let writer = Writer {
            manager: &ctx.manager,
            api_version: &api_version,
            subresource: if status_sub { "status" } else { "" },
            now: &ctx.now,
        };
        let merged = ssa::apply(&live, &config, &mut entries, &writer, ctx.force)?;
        let old_ref = match (&old, &old_value) {
            (Some(o), Some(v)) => Some((o, v, &old_entries[..])),
            _ => None,
        };
        let created = old.is_none();
        let (stored, _) = self.commit(rt, version, ns, name, old_ref, merged, entries, ctx)?;
        Ok((stored, created))
    }

    /// The `/scale` view of a workload.
    pub fn scale(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        Ok(scale_of(&self.get(rt, ns, name)?.value()))
    }

    /// PUT (no patch kind) or PATCH of `/scale`: changes `spec.replicas`.
    #[allow(clippy::too_many_arguments)]
    pub fn write_scale(
        &mut self,
        rt: &ResourceType,
        version: &str,
        ns: &str,
        name: &str,
        kind: Option<PatchKind>,
        body: &[u8],
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        let old = self.get(rt, ns, name)?;
        let old_value = old.value();
        let current = scale_of(&old_value);
        let decode = |b: &[u8]| -> Result<Value, ApiError> {
            serde_json::from_slice(b)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
        };
        let wanted = match kind {
            None => parse_body(body, false)?,
            Some(PatchKind::Json) => {
                let ops: json_patch::Patch = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                let mut doc = current.clone();
                json_patch::patch(&mut doc, &ops)
                    .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?;
                doc
            }
            Some(PatchKind::Merge) => {
                let mut doc = current.clone();
                json_patch::merge(&mut doc, &decode(body)?);
                doc
            }
            Some(PatchKind::Strategic) => {
                smp::strategic_merge(&current, &decode(body)?).map_err(ApiError::bad_request)?
            }
            Some(PatchKind::Apply) => ssa::merge(&current, &parse_body(body, true)?),
        };
        let replicas = wanted
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .filter(|r| *r >= 0)
            .ok_or_else(|| {
                ApiError::invalid(
                    "Scale",
                    "autoscaling",
                    name,
                    vec![FieldError::invalid(
                        "spec.replicas",
                        &wanted
                            .pointer("/spec/replicas")
                            .map(Value::to_string)
                            .unwrap_or_default(),
                        "must be greater than or equal to 0",
                    )],
                )
            })?;
        let mut new = old_value.clone();
        new["spec"]["replicas"] = json!(replicas);
        let stored = self.write_update(rt, version, ns, name, &old, &old_value, new, false, ctx)?;
        Ok(scale_of(&stored.value()))
    }

    /// DELETE; returns the object as last seen and whether it is gone (false: finalizers or a
    /// namespace's cleanup keep it for now).
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        propagation: Propagation,
        preconditions: (Option<&str>, Option<&str>),
        ctx: &WriteCtx,
    ) -> Result<(Arc<Stored>, bool), ApiError> {
        let old = self.get(rt, ns, name)?;
        let old_value = old.value();
        let mismatch = |field: &str, expected: &str, actual: &str| {
            ApiError::delete_precondition(&rt.group, &rt.kind, name, field, expected, actual)
        };
        if let Some(uid) = preconditions.0 {
            let actual = meta_str(&old_value, "uid");
            if uid != actual {
                return Err(mismatch("UID", uid, actual));
            }
        }
        if let Some(rv) = preconditions.1 {
            let actual = old.rv.to_string();
            if rv != actual {
                return Err(mismatch("ResourceVersion", rv, &actual));
            }
        }
        if ctx.dry_run {
            return Ok((old, true));
        }
        let finalizers = old_value
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if rt.kind == "Namespace" || finalizers {
            if old_value.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok((old, false));
            }
            let mut new = old_value.clone();
            metadata_mut(&mut new).insert("deletionTimestamp".into(), json!(ctx.now));
            metadata_mut(&mut new).insert("deletionGracePeriodSeconds".into(), json!(0));
            if rt.kind == "Namespace" {
                new["status"] = json!({"phase": "Terminating"});
            }
            let entries = ssa::decode_managed_fields(&old_value).map_err(ApiError::bad_request)?;
            let version = rt.preferred_version().to_string();
            let (stored, _) = self.commit(
                rt,
                &version,
                ns,
                name,
                Some((&old, &old_value, &entries)),
                new,
                entries.clone(),
                ctx,
            )?;
            if rt.kind == "Namespace" {
                self.jobs.push(PlannedJob {
                    delay: Delay::Now,
                    step: Step::NamespaceCleanup,
                    type_key: rt.key(),
                    namespace: String::new(),
                    name: name.to_string(),
                    uid: meta_str(&old_value, "uid").to_string(),
                    generation: 0,
                });
            }
            return Ok((stored, false));
        }
        let gone = self.remove(rt, ns, name, propagation).unwrap_or(old);
        Ok((gone, true))
    }

    /// Removes an object for good: the DELETED event, garbage collection of dependents, and for
    /// CRDs the custom resources they served.
    fn remove(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        propagation: Propagation,
    ) -> Option<Arc<Stored>> {
        let key = rt.key();
        let ns = if rt.namespaced { ns } else { "" };
        let old = self
            .objects
            .get_mut(&key)?
            .remove(&(ns.to_string(), name.to_string()))?;
        self.rv += 1;
        // The DELETED event carries the deletion's resource version.
        let mut v = old.value();
        metadata_mut(&mut v).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let gone = Arc::new(Stored {
            namespace: old.namespace.clone(),
            name: old.name.clone(),
            rv: self.rv,
            labels: old.labels.clone(),
            bytes: Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
        });
        self.emit(&key, EventType::Deleted, gone.clone(), Some(old));

        let uid = meta_str(&v, "uid").to_string();
        if rt.kind == "CustomResourceDefinition"
            && let Ok(t) = resources::from_crd(&v)
        {
            let tkey = t.key();
            let names: Vec<(String, String)> = self
                .objects
                .get(&tkey)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            for (ons, oname) in names {
                self.remove(&t, &ons, &oname, Propagation::Background);
            }
            self.custom.remove(&tkey);
            self.objects.remove(&tkey);
        }
        self.collect_dependents(&uid, propagation);
        Some(gone)
    }

    /// Garbage collection: objects owned by `uid` are deleted (or orphaned).
    fn collect_dependents(&mut self, uid: &str, propagation: Propagation) {
        if uid.is_empty() {
            return;
        }
        let mut dependents = Vec::new();
        for (key, m) in &self.objects {
            for o in m.values() {
                if std::str::from_utf8(&o.bytes).is_ok_and(|s| s.contains(uid)) {
                    let v = o.value();
                    let owned = v
                        .pointer("/metadata/ownerReferences")
                        .and_then(Value::as_array)
                        .is_some_and(|refs| {
                            refs.iter()
                                .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
                        });
                    if owned {
                        dependents.push((key.clone(), o.namespace.clone(), o.name.clone(), v));
                    }
                }
            }
        }
        for (key, ns, name, v) in dependents {
            let Some(rt) = self.all_types().into_iter().find(|t| t.key() == key) else {
                continue;
            };
            if propagation == Propagation::Orphan {
                let mut new = v.clone();
                if let Some(Value::Array(refs)) = new.pointer_mut("/metadata/ownerReferences") {
                    refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
                }
                let Some(old) = self.lookup(&key, &ns, &name) else {
                    continue;
                };
                let ctx = WriteCtx {
                    manager: "kube-controller-manager".into(),
                    dry_run: false,
                    force: false,
                    now: String::new(),
                };
                let version = rt.preferred_version().to_string();
                let _ = self.write_update(&rt, &version, &ns, &name, &old, &v, new, false, &ctx);
            } else {
                self.remove(&rt, &ns, &name, propagation);
            }
        }
    }

    /// DELETE on a collection.
    pub fn delete_collection(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        ctx: &WriteCtx,
    ) -> Vec<Arc<Stored>> {
        let targets = self.list(rt, ns, labels, fields);
        let mut out = Vec::new();
        for t in targets {
            if let Ok((o, _)) = self.delete(
                rt,
                &t.namespace.clone(),
                &t.name.clone(),
                Propagation::Background,
                (None, None),
                ctx,
            ) {
                out.push(o);
            }
        }
        out
    }

    /// Runs a controller step that came due.
    pub fn run_job(&mut self, job: &PlannedJob, now: &str) {
        let Some(current) = self.lookup(&job.type_key, &job.namespace, &job.name) else {
            return;
        };
        let value = current.value();
        if meta_str(&value, "uid") != job.uid {
            return;
        }
        let Some(rt) = self
            .all_types()
            .into_iter()
            .find(|t| t.key() == job.type_key)
        else {
            return;
        };
        if job.step == Step::NamespaceCleanup {
            self.finish_namespace(&job.name);
            return;
        }
        if rt.generation
            && value
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                != job.generation
        {
            // A newer spec restarted the rollout; its own steps are queued.
            return;
        }
        let ctx = WriteCtx {
            manager: "kube-controller-manager".into(),
            dry_run: false,
            force: false,
            now: now.into(),
        };
        let status = if rt.kind == "HorizontalPodAutoscaler" && !rt.custom {
            let target = self.scale_target(&value, &job.namespace);
            let decision = controllers::hpa_status(
                &value,
                target.as_ref().map(|(_, t)| t.value()).as_ref(),
                now,
            );
            if let (Some(replicas), Some((target_rt, target))) = (decision.scale_to, &target) {
                let target_value = target.value();
                let mut scaled = target_value.clone();
                scaled["spec"]["replicas"] = json!(replicas);
                let version = target_rt.preferred_version().to_string();
                let _ = self.write_update(
                    target_rt,
                    &version,
                    &job.namespace,
                    &target.name,
                    target,
                    &target_value,
                    scaled,
                    false,
                    &ctx,
                );
            }
            Some(decision.status)
        } else {
            controllers::run(job.step, &value, now)
        };
        let Some(status) = status else {
            return;
        };
        let mut new = value.clone();
        new["status"] = status;
        let version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .and_then(|av| av.rsplit('/').next())
            .unwrap_or("v1")
            .to_string();
        let _ = self.write_update(
            &rt,
            &version,
            &job.namespace,
            &job.name,
            &current,
            &value,
            new,
            true,
            &ctx,
        );
    }

    fn finish_namespace(&mut self, ns: &str) {
        for rt in self.all_types().into_iter().filter(|t| t.namespaced) {
            let names: Vec<String> = self
                .objects
                .get(&rt.key())
                .map(|m| {
                    m.keys()
                        .filter(|(n, _)| n == ns)
                        .map(|(_, name)| name.clone())
                        .collect()
                })
                .unwrap_or_default();
            for name in names {
                self.remove(&rt, ns, &name, Propagation::Background);
            }
        }
        if let Some(rt) = self.resolve("", "v1", "namespaces") {
            self.remove(&rt, "", ns, Propagation::Background);
        }
    }

    /// Approximate bytes held by stored objects and history (for the benchmark's sanity check).
    pub fn stored_bytes(&self) -> usize {
        self.objects
            .values()
            .flat_map(|m| m.values())
            .map(|o| o.bytes.len())
            .sum::<usize>()
            + self
                .history
                .iter()
                .map(|e| e.obj.bytes.len())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests;
