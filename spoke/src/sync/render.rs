//! Plain-YAML rendering: the files of an App path in, Kubernetes objects out.
//!
//! Pure: the caller reads the files (from a Git tree) and passes them in. A bad file becomes a
//! [`FileError`] naming the file and line while the other files still render; only limits that
//! protect the spoke itself (documents, bytes) fail the whole Target.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use gitfleet_core::yaml::{Budget, LimitExceeded, Limits, YamlError};
use serde_json::{Map, Value};

use crate::model::ObjectRef;

/// Label naming the App an object belongs to.
pub const LABEL_APP: &str = "gitfleet.dev/app";
/// Annotation naming the Target that applied an object.
pub const ANNOTATION_TARGET: &str = "gitfleet.dev/target";
/// Annotation naming the commit an object was rendered from.
pub const ANNOTATION_REVISION: &str = "gitfleet.dev/revision";
/// Annotation ordering objects into waves (an integer; lower waves apply first; default 0).
pub const ANNOTATION_WAVE: &str = "gitfleet.dev/wave";
/// Argo CD's spelling of the wave, honoured when `gitfleet.dev/wave` is absent.
pub const ANNOTATION_ARGO_SYNC_WAVE: &str = "argocd.argoproj.io/sync-wave";
/// Annotation on any object of a wave: `stop` makes a failed apply in that wave stop the sync
/// before later waves (`continue`, the default, applies them anyway).
pub const ANNOTATION_WAVE_ON_FAILURE: &str = "gitfleet.dev/wave-on-failure";
/// Annotation that keeps an object from ever being pruned (`disabled`).
pub const ANNOTATION_PRUNE: &str = "gitfleet.dev/prune";

/// Lists nested deeper than this are refused rather than flattened.
const MAX_LIST_DEPTH: usize = 4;

/// One file of the App path, as read from the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Path in the repository, '/'-separated.
    pub path: String,
    pub content: Vec<u8>,
}

impl SourceFile {
    pub fn new(path: impl Into<String>, content: impl Into<Vec<u8>>) -> Self {
        Self {
            path: path.into(),
            content: content.into(),
        }
    }
}

/// What the renderer needs to know about the Target it renders for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderContext {
    pub app: String,
    pub target_id: String,
    pub revision: String,
    /// Namespace for namespaced objects that name none (empty: leave them without one).
    pub namespace: String,
    /// Add a Namespace object for `namespace` when the manifests do not contain one.
    pub create_namespace: bool,
}

/// Bounds that protect the spoke from hostile repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderLimits {
    /// Most documents (after flattening lists) one Target may render.
    pub max_documents: usize,
    /// Most bytes of manifest files one Target may render.
    pub max_bytes: usize,
    /// The YAML budget of one render: events, aliases, depth and expanded bytes, per document
    /// and over every file of the Target together.
    pub yaml: Limits,
}

impl Default for RenderLimits {
    fn default() -> Self {
        Self {
            max_documents: 5_000,
            max_bytes: 32 * 1024 * 1024,
            yaml: Limits::DEFAULT,
        }
    }
}

/// One object ready to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub object: ObjectRef,
    /// The full object, gitfleet's labels and annotations included.
    pub body: Value,
    /// File in the repository it came from (empty for objects gitfleet adds itself).
    pub source_file: String,
}

impl Manifest {
    /// The `gitfleet.dev/wave` of this object, else its `argocd.argoproj.io/sync-wave` (0 when
    /// it has neither).
    pub fn wave(&self) -> i32 {
        Self::wave_of(&self.body)
    }

    /// [`Manifest::wave`] of an object's body.
    pub fn wave_of(body: &Value) -> i32 {
        annotation(body, ANNOTATION_WAVE)
            .or_else(|| annotation(body, ANNOTATION_ARGO_SYNC_WAVE))
            .and_then(|w| w.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Whether this object asks its wave to stop the sync when an apply in it fails.
    pub fn stops_wave_on_failure(&self) -> bool {
        annotation(&self.body, ANNOTATION_WAVE_ON_FAILURE).is_some_and(|v| v.trim() == "stop")
    }

    /// The API group of this object ("" for the core group).
    pub fn group(&self) -> &str {
        group_of(&self.object.api_version)
    }
}

/// A file (or one object in it) that could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub file: String,
    /// 1-based line the problem is at, where known.
    pub line: Option<usize>,
    /// What is wrong, for a person (already naming the line where known).
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.message)
    }
}

/// The outcome of rendering: objects, and the files that could not be rendered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rendered {
    pub manifests: Vec<Manifest>,
    pub errors: Vec<FileError>,
}

/// Rendering failures that stop the whole Target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("the App path holds more than {limit} documents; refusing to render it")]
    TooManyDocuments { limit: usize },
    #[error("the App path holds {actual} bytes of manifests, more than the limit of {limit}")]
    TooManyBytes { actual: usize, limit: usize },
    /// The files together went over the Target's YAML budget; `file` is where it ran out.
    #[error("{file}: {error}; refusing to render the App path")]
    OverBudget { file: String, error: LimitExceeded },
}

/// Whether a file is a manifest by its name: `.yaml`, `.yml` or `.json`.
pub fn is_manifest_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json")
}

/// Renders the files of an App path.
///
/// `namespaced` answers whether a kind is namespaced where the caller knows better (from server
/// discovery); kinds it does not know fall back to [`is_cluster_scoped`].
pub fn render(
    files: &[SourceFile],
    ctx: &RenderContext,
    limits: &RenderLimits,
    namespaced: &dyn Fn(&str, &str) -> Option<bool>,
) -> Result<Rendered, RenderError> {
    let mut files: Vec<&SourceFile> = files.iter().filter(|f| is_manifest_file(&f.path)).collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let total: usize = files.iter().map(|f| f.content.len()).sum();
    if total > limits.max_bytes {
        return Err(RenderError::TooManyBytes {
            actual: total,
            limit: limits.max_bytes,
        });
    }

    let mut out = Rendered::default();
    let mut documents = 0usize;
    let budget = Budget::new(limits.yaml);
    // (group, kind, namespace, name) → file, to refuse an object defined twice.
    let mut seen: HashMap<(String, String, String, String), String> = HashMap::new();
    for file in files {
        let objects = match parse_file(file, limits, &budget, &mut documents) {
            Ok(objects) => objects,
            Err(FileFailure::Invalid(error)) => {
                out.errors.push(error);
                continue;
            }
            Err(FileFailure::TooManyDocuments) => {
                return Err(RenderError::TooManyDocuments {
                    limit: limits.max_documents,
                });
            }
            Err(FileFailure::OverBudget(error)) => {
                return Err(RenderError::OverBudget {
                    file: file.path.clone(),
                    error,
                });
            }
        };
        let mut manifests = Vec::with_capacity(objects.len());
        let mut invalid = None;
        for (line, body) in objects {
            match to_manifest(body, &file.path, line, ctx, namespaced) {
                Ok(manifest) => manifests.push(manifest),
                Err(error) => {
                    invalid = Some(error);
                    break;
                }
            }
        }
        // A file is applied whole or not at all: half a file is harder to reason about than none.
        if let Some(error) = invalid {
            out.errors.push(error);
            continue;
        }
        for manifest in manifests {
            let key = (
                manifest.group().to_owned(),
                manifest.object.kind.clone(),
                manifest.object.namespace.clone(),
                manifest.object.name.clone(),
            );
            if let Some(first) = seen.get(&key) {
                out.errors.push(FileError {
                    file: file.path.clone(),
                    line: None,
                    message: format!(
                        "{} is already defined in {first}; this definition is ignored",
                        describe(&manifest.object)
                    ),
                });
                continue;
            }
            seen.insert(key, file.path.clone());
            out.manifests.push(manifest);
        }
    }

    if ctx.create_namespace && !ctx.namespace.is_empty() {
        let present = out.manifests.iter().any(|m| {
            m.group().is_empty() && m.object.kind == "Namespace" && m.object.name == ctx.namespace
        });
        if !present {
            out.manifests.push(namespace_manifest(ctx));
        }
    }
    Ok(out)
}

/// Places an object in its scope once the server's discovery says whether its kind is
/// namespaced: namespaced objects without a namespace get the App's, cluster-scoped objects lose
/// any namespace they name.
pub fn place_in_scope(manifest: &mut Manifest, namespaced: bool, app_namespace: &str) {
    let metadata = manifest
        .body
        .get_mut("metadata")
        .and_then(Value::as_object_mut);
    let Some(metadata) = metadata else { return };
    if namespaced {
        if manifest.object.namespace.is_empty() && !app_namespace.is_empty() {
            manifest.object.namespace = app_namespace.to_owned();
            metadata.insert("namespace".into(), Value::String(app_namespace.to_owned()));
        }
    } else {
        manifest.object.namespace.clear();
        metadata.remove("namespace");
    }
}

/// Kinds of the Kubernetes API that are cluster-scoped, by (group, kind). Kinds not listed
/// (custom resources included) are assumed namespaced unless discovery says otherwise.
pub fn is_cluster_scoped(group: &str, kind: &str) -> bool {
    const CLUSTER_SCOPED: &[(&str, &str)] = &[
        ("", "Namespace"),
        ("", "Node"),
        ("", "PersistentVolume"),
        ("", "ComponentStatus"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
        ("apiregistration.k8s.io", "APIService"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("storage.k8s.io", "StorageClass"),
        ("storage.k8s.io", "CSIDriver"),
        ("storage.k8s.io", "CSINode"),
        ("storage.k8s.io", "VolumeAttachment"),
        ("storage.k8s.io", "VolumeAttributesClass"),
        ("scheduling.k8s.io", "PriorityClass"),
        ("networking.k8s.io", "IngressClass"),
        ("networking.k8s.io", "IPAddress"),
        ("networking.k8s.io", "ServiceCIDR"),
        ("node.k8s.io", "RuntimeClass"),
        (
            "admissionregistration.k8s.io",
            "ValidatingWebhookConfiguration",
        ),
        (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration",
        ),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
        (
            "admissionregistration.k8s.io",
            "ValidatingAdmissionPolicyBinding",
        ),
        ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"),
        (
            "admissionregistration.k8s.io",
            "MutatingAdmissionPolicyBinding",
        ),
        ("certificates.k8s.io", "CertificateSigningRequest"),
        ("certificates.k8s.io", "ClusterTrustBundle"),
        ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
        ("policy", "PodSecurityPolicy"),
        ("resource.k8s.io", "DeviceClass"),
        ("resource.k8s.io", "ResourceSlice"),
        ("authentication.k8s.io", "TokenReview"),
        ("authentication.k8s.io", "SelfSubjectReview"),
        ("authorization.k8s.io", "SubjectAccessReview"),
        ("authorization.k8s.io", "SelfSubjectAccessReview"),
        ("authorization.k8s.io", "SelfSubjectRulesReview"),
    ];
    CLUSTER_SCOPED
        .iter()
        .any(|(g, k)| *g == group && *k == kind)
}

/// The group part of an apiVersion ("" for `v1`).
pub fn group_of(api_version: &str) -> &str {
    match api_version.rsplit_once('/') {
        Some((group, _)) => group,
        None => "",
    }
}

enum FileFailure {
    Invalid(FileError),
    TooManyDocuments,
    OverBudget(LimitExceeded),
}

/// Parses a file into its objects (lists flattened, empty documents skipped), each with the
/// line its document starts at.
fn parse_file(
    file: &SourceFile,
    limits: &RenderLimits,
    budget: &Budget,
    documents: &mut usize,
) -> Result<Vec<(Option<usize>, Value)>, FileFailure> {
    let invalid = |line: Option<usize>, message: String| {
        FileFailure::Invalid(FileError {
            file: file.path.clone(),
            line,
            message,
        })
    };
    let text = std::str::from_utf8(&file.content)
        .map_err(|e| invalid(None, format!("not valid UTF-8: {e}")))?;

    let parsed = if file.path.to_ascii_lowercase().ends_with(".json") {
        budget.json(text).map(|value| vec![value])
    } else {
        budget.documents(text)
    };
    let docs = match parsed {
        Ok(docs) => docs,
        Err(YamlError::Syntax { line, message, .. }) => {
            let message = match line {
                Some(line) => format!("line {line}: {message}"),
                None => message,
            };
            return Err(invalid(line, message));
        }
        // One document too big or too deep: that file is refused, the others render.
        Err(YamlError::Limit(
            error @ (LimitExceeded::DocumentBytes { .. } | LimitExceeded::Depth { .. }),
        )) => return Err(invalid(None, error.to_string())),
        // The Target's budget is spent: nothing more of it is read.
        Err(YamlError::Limit(error)) => return Err(FileFailure::OverBudget(error)),
    };
    // Empty documents count too, so that 10,000 of them are refused.
    if docs.len() + *documents > limits.max_documents {
        return Err(FileFailure::TooManyDocuments);
    }

    // Line numbers of document starts line up with the parser's documents only when our scan
    // agrees on how many there are; otherwise name documents by position alone.
    let starts = document_start_lines(text);
    let starts_known = starts.len() == docs.len();
    let mut objects = Vec::new();
    for (index, doc) in docs.into_iter().enumerate() {
        let line = if starts_known {
            starts.get(index).copied()
        } else {
            None
        };
        if doc.is_null() {
            continue;
        }
        flatten(doc, line, 0, &mut objects)
            .map_err(|message| invalid(line, format!("{}: {message}", where_(index, line))))?;
        if *documents + objects.len() > limits.max_documents {
            return Err(FileFailure::TooManyDocuments);
        }
    }
    *documents += objects.len();
    Ok(objects)
}

fn where_(index: usize, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("document {} (line {line})", index + 1),
        None => format!("document {}", index + 1),
    }
}

/// Expands `kind: List` (and `*List` with `items`) into its items.
fn flatten(
    doc: Value,
    line: Option<usize>,
    depth: usize,
    out: &mut Vec<(Option<usize>, Value)>,
) -> Result<(), String> {
    let is_list = doc
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && doc.get("items").is_some_and(Value::is_array);
    if !is_list {
        out.push((line, doc));
        return Ok(());
    }
    if depth >= MAX_LIST_DEPTH {
        return Err(format!("lists nested more than {MAX_LIST_DEPTH} deep"));
    }
    let Value::Object(mut fields) = doc else {
        return Ok(());
    };
    let Some(Value::Array(items)) = fields.remove("items") else {
        return Ok(());
    };
    for item in items {
        if !item.is_null() {
            flatten(item, line, depth + 1, out)?;
        }
    }
    Ok(())
}

/// The 1-based line at which each YAML document of `text` starts. A line `---` (alone or
/// followed by a space) always starts one; content after `...` or at the start of the stream
/// starts an implicit one. YAML forbids these markers at column 0 inside content.
fn document_start_lines(text: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut in_document = false;
    for (index, line) in text.lines().enumerate() {
        let is_marker = |m: &str| {
            line.strip_prefix(m)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
        };
        if is_marker("---") {
            starts.push(index + 1);
            in_document = true;
        } else if is_marker("...") {
            in_document = false;
        } else if !in_document {
            let trimmed = line.trim_start();
            let is_content =
                !trimmed.is_empty() && !trimmed.starts_with('#') && !line.starts_with('%');
            if is_content {
                starts.push(index + 1);
                in_document = true;
            }
        }
    }
    starts
}

fn to_manifest(
    mut body: Value,
    file: &str,
    line: Option<usize>,
    ctx: &RenderContext,
    namespaced: &dyn Fn(&str, &str) -> Option<bool>,
) -> Result<Manifest, FileError> {
    let error = |message: String| FileError {
        file: file.to_owned(),
        line,
        message: match line {
            Some(line) => format!("object at line {line}: {message}"),
            None => message,
        },
    };
    let Value::Object(fields) = &mut body else {
        return Err(error("a manifest must be a mapping".into()));
    };
    let api_version = required_string(fields, "apiVersion").map_err(error)?;
    let kind = required_string(fields, "kind").map_err(error)?;
    let metadata = match fields.get_mut("metadata") {
        Some(Value::Object(metadata)) => metadata,
        Some(_) => return Err(error("metadata must be a mapping".into())),
        None => return Err(error(format!("{kind} has no metadata.name"))),
    };
    let name = match metadata.get("name") {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        // A hook may be named by the server (`generateName`): it is created, never applied,
        // and is known by its prefix until then (see `sync::hooks`).
        Some(Value::String(_)) | None
            if crate::sync::hooks::is_hook_body(metadata)
                && metadata
                    .get("generateName")
                    .and_then(Value::as_str)
                    .is_some_and(|g| !g.is_empty()) =>
        {
            metadata
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        }
        Some(Value::String(_)) | None => {
            let hint = if metadata.contains_key("generateName") {
                " (generateName cannot be applied declaratively; only a hook may use it)"
            } else {
                ""
            };
            return Err(error(format!("{kind} has no metadata.name{hint}")));
        }
        Some(_) => {
            return Err(error(format!(
                "{kind} has a metadata.name that is not a string"
            )));
        }
    };
    let mut namespace = match metadata.get("namespace") {
        Some(Value::String(ns)) => ns.clone(),
        None | Some(Value::Null) => String::new(),
        Some(_) => {
            return Err(error(format!(
                "{kind} {name}: metadata.namespace is not a string"
            )));
        }
    };
    for field in ["labels", "annotations"] {
        check_string_map(metadata, field).map_err(|m| error(format!("{kind} {name}: {m}")))?;
    }
    for key in [ANNOTATION_WAVE, ANNOTATION_ARGO_SYNC_WAVE] {
        if let Some(wave) = metadata
            .get("annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            && wave.trim().parse::<i32>().is_err()
        {
            return Err(error(format!(
                "{kind} {name}: annotation {key} must be an integer, not {wave:?}"
            )));
        }
    }

    if let Some(on_failure) = metadata
        .get("annotations")
        .and_then(|a| a.get(ANNOTATION_WAVE_ON_FAILURE))
        .and_then(Value::as_str)
        && !matches!(on_failure.trim(), "stop" | "continue")
    {
        return Err(error(format!(
            "{kind} {name}: annotation {ANNOTATION_WAVE_ON_FAILURE} must be \"stop\" or \"continue\", not {on_failure:?}"
        )));
    }

    let group = group_of(&api_version);
    let is_namespaced = namespaced(&api_version, &kind).unwrap_or(!is_cluster_scoped(group, &kind));
    if is_namespaced {
        if namespace.is_empty() && !ctx.namespace.is_empty() {
            namespace = ctx.namespace.clone();
            metadata.insert("namespace".into(), Value::String(namespace.clone()));
        }
    } else {
        namespace.clear();
        metadata.remove("namespace");
    }
    label(metadata, ctx);

    Ok(Manifest {
        object: ObjectRef {
            api_version,
            kind,
            namespace,
            name,
        },
        body,
        source_file: file.to_owned(),
    })
}

fn required_string(fields: &Map<String, Value>, field: &str) -> Result<String, String> {
    match fields.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) | None | Some(Value::Null) => Err(format!("missing {field}")),
        Some(_) => Err(format!("{field} must be a string")),
    }
}

fn check_string_map(metadata: &Map<String, Value>, field: &str) -> Result<(), String> {
    match metadata.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(map)) => match map.iter().find(|(_, v)| !v.is_string()) {
            Some((key, value)) => Err(format!(
                "metadata.{field}.{key} must be a string, not {value} (quote it in YAML)"
            )),
            None => Ok(()),
        },
        Some(_) => Err(format!("metadata.{field} must be a mapping")),
    }
}

/// Sets gitfleet's label and annotations, replacing any a manifest brings itself.
fn label(metadata: &mut Map<String, Value>, ctx: &RenderContext) {
    let labels = metadata
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()));
    if labels.is_null() {
        *labels = Value::Object(Map::new());
    }
    if let Value::Object(labels) = labels {
        labels.insert(LABEL_APP.into(), Value::String(ctx.app.clone()));
    }
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if annotations.is_null() {
        *annotations = Value::Object(Map::new());
    }
    if let Value::Object(annotations) = annotations {
        annotations.insert(
            ANNOTATION_TARGET.into(),
            Value::String(ctx.target_id.clone()),
        );
        annotations.insert(
            ANNOTATION_REVISION.into(),
            Value::String(ctx.revision.clone()),
        );
    }
}

/// Whether `manifest` is the Namespace [`render`] added for the App (not one from Git).
pub fn is_added_namespace(manifest: &Manifest) -> bool {
    manifest.source_file.is_empty()
        && manifest.group().is_empty()
        && manifest.object.kind == "Namespace"
}

/// The Namespace gitfleet creates for an App. Never pruned: deleting a namespace deletes
/// everything in it, including what gitfleet does not manage.
fn namespace_manifest(ctx: &RenderContext) -> Manifest {
    let mut metadata = Map::new();
    metadata.insert("name".into(), Value::String(ctx.namespace.clone()));
    label(&mut metadata, ctx);
    if let Some(Value::Object(annotations)) = metadata.get_mut("annotations") {
        annotations.insert(ANNOTATION_PRUNE.into(), Value::String("disabled".into()));
    }
    let mut body = Map::new();
    body.insert("apiVersion".into(), Value::String("v1".into()));
    body.insert("kind".into(), Value::String("Namespace".into()));
    body.insert("metadata".into(), Value::Object(metadata));
    Manifest {
        object: ObjectRef {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            namespace: String::new(),
            name: ctx.namespace.clone(),
        },
        body: Value::Object(body),
        source_file: String::new(),
    }
}

fn describe(object: &ObjectRef) -> String {
    if object.namespace.is_empty() {
        format!("{} {}", object.kind, object.name)
    } else {
        format!("{} {}/{}", object.kind, object.namespace, object.name)
    }
}

fn annotation<'v>(body: &'v Value, key: &str) -> Option<&'v str> {
    body.get("metadata")?.get("annotations")?.get(key)?.as_str()
}

/// Convenience for tests and callers that know no scopes beyond the built-in table.
pub fn no_discovery(_api_version: &str, _kind: &str) -> Option<bool> {
    None
}

/// Builds a `namespaced` lookup from a map of (apiVersion, kind) → namespaced.
pub fn scopes_from(
    map: &BTreeMap<(String, String), bool>,
) -> impl Fn(&str, &str) -> Option<bool> + '_ {
    move |api_version, kind| map.get(&(api_version.to_owned(), kind.to_owned())).copied()
}

#[cfg(test)]
mod tests;
