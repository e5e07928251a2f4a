//! `gitfleet diff --live`, the decisions: what a dry-run apply of an object shows against the
//! live one. Both are compared without what the API server manages (managedFields,
//! resourceVersion, generation, uid, creationTimestamp, status) and without gitfleet's revision
//! annotation (bookkeeping every commit changes), as YAML; a Secret's values are masked on
//! both sides as `kubectl diff` masks them; and a result stays within the wire's limits
//! (`gitfleet_proto::diff_limits`).
//!
//! No IO: `agent::diff` reads the cluster and calls these.

use std::collections::BTreeSet;

use gitfleet_proto::diff_limits;
use serde_json::Value;
use similar::TextDiff;

use crate::model::ObjectRef;
use crate::sync::render::ANNOTATION_REVISION;

#[cfg(test)]
mod tests;

/// What applying the revision would do to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiffAction {
    Create,
    Update,
    Unchanged,
    Prune,
    /// Not compared: `message` says why.
    Failed,
}

/// One object's line of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDiff {
    pub object: ObjectRef,
    pub action: DiffAction,
    /// Unified diff, live (`---`) against what apply would make (`+++`); empty when unchanged
    /// or failed.
    pub diff: String,
    pub message: String,
    pub source_file: String,
}

/// What applying a Target at a revision would change on this cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TargetDiff {
    pub target_id: String,
    pub revision: String,
    pub objects: Vec<ObjectDiff>,
    /// Set when no diff could be made (fetch, render, the cluster unreadable).
    pub error: Option<String>,
    /// Objects left out by [`within_limits`].
    pub omitted: usize,
    pub counts: Counts,
}

/// Objects per action, over everything compared (left-out objects included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub creates: usize,
    pub updates: usize,
    pub prunes: usize,
    pub failures: usize,
}

impl Counts {
    pub fn of(objects: &[ObjectDiff]) -> Counts {
        let mut counts = Counts::default();
        for o in objects {
            match o.action {
                DiffAction::Create => counts.creates += 1,
                DiffAction::Update => counts.updates += 1,
                DiffAction::Prune => counts.prunes += 1,
                DiffAction::Failed => counts.failures += 1,
                DiffAction::Unchanged => {}
            }
        }
        counts
    }
}

/// Metadata the API server sets, never part of what apply changes.
const SERVER_METADATA: [&str; 6] = [
    "managedFields",
    "resourceVersion",
    "generation",
    "uid",
    "creationTimestamp",
    "selfLink",
];

/// What a Secret's values are shown as (kubectl diff's words).
pub const MASK: &str = "***";
const MASK_BEFORE: &str = "*** (before)";
const MASK_AFTER: &str = "*** (after)";
/// kubectl's client-side apply keeps the whole object, values included, in this annotation.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// `object` as compared: without the server's metadata, its status and gitfleet's revision
/// annotation (and an annotations map that only held it).
pub fn comparable(object: &Value) -> Value {
    let mut object = object.clone();
    let Some(fields) = object.as_object_mut() else {
        return object;
    };
    fields.remove("status");
    if let Some(Value::Object(metadata)) = fields.get_mut("metadata") {
        for key in SERVER_METADATA {
            metadata.remove(key);
        }
        let emptied = match metadata.get_mut("annotations") {
            Some(Value::Object(annotations)) => {
                annotations.remove(ANNOTATION_REVISION);
                annotations.is_empty()
            }
            _ => false,
        };
        if emptied {
            metadata.remove("annotations");
        }
    }
    object
}

fn is_secret(object: &ObjectRef) -> bool {
    object.kind == "Secret" && object.api_version == "v1"
}

/// Masks a Secret's `data` and `stringData` values on both sides, as `kubectl diff` does: a
/// value the same on both sides is `***` on both, one that differs is `*** (before)` and `***
/// (after)`, one on a single side `***`. So a diff says which keys change, never what they
/// hold. Also masks kubectl's last-applied annotation, which holds the values in clear.
pub fn mask_secret(live: Option<&mut Value>, planned: Option<&mut Value>) {
    let mut live = live;
    let mut planned = planned;
    for field in ["data", "stringData"] {
        let before = live
            .as_deref()
            .and_then(|v| v.get(field))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let after = planned
            .as_deref()
            .and_then(|v| v.get(field))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
        for key in keys {
            let (b, a) = match (before.get(key), after.get(key)) {
                (Some(b), Some(a)) if b == a => (MASK, MASK),
                (Some(_), Some(_)) => (MASK_BEFORE, MASK_AFTER),
                _ => (MASK, MASK),
            };
            set_masked(live.as_deref_mut(), field, key, b);
            set_masked(planned.as_deref_mut(), field, key, a);
        }
        // A value that is not a map (malformed) says nothing either.
        for side in [live.as_deref_mut(), planned.as_deref_mut()]
            .into_iter()
            .flatten()
        {
            if let Some(value) = side.get_mut(field)
                && !value.is_object()
                && !value.is_null()
            {
                *value = Value::String(MASK.into());
            }
        }
    }
    for side in [live, planned].into_iter().flatten() {
        if let Some(Value::Object(annotations)) = side.pointer_mut("/metadata/annotations")
            && let Some(value) = annotations.get_mut(LAST_APPLIED)
        {
            *value = Value::String(MASK.into());
        }
    }
}

fn set_masked(side: Option<&mut Value>, field: &str, key: &str, mask: &str) {
    if let Some(Value::Object(values)) = side.and_then(|v| v.get_mut(field))
        && let Some(value) = values.get_mut(key)
    {
        *value = Value::String(mask.into());
    }
}

/// `Deployment hello/web`, `Namespace hello`: an object in a diff header.
fn header_name(object: &ObjectRef) -> String {
    if object.namespace.is_empty() {
        format!("{} {}", object.kind, object.name)
    } else {
        format!("{} {}/{}", object.kind, object.namespace, object.name)
    }
}

fn yaml(value: &Value) -> String {
    // A JSON value always serialises; an error would be a bug of the serialiser, shown rather
    // than hidden.
    serde_saphyr::to_string(value).unwrap_or_else(|e| format!("# cannot show as YAML: {e}\n"))
}

/// Compares the live object (`None`: absent) with what the dry run returned (`None`: the
/// object would be pruned): the action and its unified diff, cut at the limit.
pub fn compare(
    object: &ObjectRef,
    live: Option<&Value>,
    planned: Option<&Value>,
    revision: &str,
) -> (DiffAction, String) {
    let mut before = live.map(comparable);
    let mut after = planned.map(comparable);
    let action = match (&before, &after) {
        (None, None) => return (DiffAction::Unchanged, String::new()),
        (None, Some(_)) => DiffAction::Create,
        (Some(_), None) => DiffAction::Prune,
        (Some(b), Some(a)) if b == a => return (DiffAction::Unchanged, String::new()),
        (Some(_), Some(_)) => DiffAction::Update,
    };
    if is_secret(object) {
        mask_secret(before.as_mut(), after.as_mut());
    }
    let before = before.as_ref().map(yaml).unwrap_or_default();
    let after = after.as_ref().map(yaml).unwrap_or_default();
    let name = header_name(object);
    let short = short(revision);
    let text = TextDiff::from_lines(&before, &after)
        .unified_diff()
        .context_radius(3)
        .header(&format!("live {name}"), &format!("{short} {name}"))
        .to_string();
    (action, cut_diff(text))
}

/// A commit as a diff names it: its first 8 characters, as `gitfleet` prints revisions.
pub fn short(revision: &str) -> &str {
    revision.get(..8).unwrap_or(revision)
}

/// `text` within [`diff_limits::MAX_OBJECT_DIFF_BYTES`], cut at a line's end and ended with
/// [`diff_limits::CUT_MARKER`] when it was longer.
pub fn cut_diff(text: String) -> String {
    let max = diff_limits::MAX_OBJECT_DIFF_BYTES;
    if text.len() <= max {
        return text;
    }
    let room = max - diff_limits::CUT_MARKER.len() - 1;
    let mut end = room;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let end = text[..end].rfind('\n').map_or(0, |i| i + 1);
    let mut cut = text[..end].to_owned();
    cut.push_str(diff_limits::CUT_MARKER);
    cut.push('\n');
    cut
}

/// `s` within `max` bytes, ending in `…` when cut.
pub fn cut_text(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Roughly what an object costs encoded: its strings and the fields' tags.
fn cost(o: &ObjectDiff) -> usize {
    o.object.api_version.len()
        + o.object.kind.len()
        + o.object.namespace.len()
        + o.object.name.len()
        + o.diff.len()
        + o.message.len()
        + o.source_file.len()
        + 32
}

/// Room kept for the envelope: ids, revision, error, counts.
const ENVELOPE: usize = 16 * 1024;

/// A diff of `objects` (in the order they were compared) within the wire's limits: messages
/// cut, and beyond [`diff_limits::MAX_OBJECTS`] or the size budget objects left out — failures
/// first kept, then creations, changes and prunes, unchanged objects last — in their order;
/// `counts` cover them all.
pub fn within_limits(
    target_id: &str,
    revision: &str,
    objects: Vec<ObjectDiff>,
    error: Option<String>,
) -> TargetDiff {
    let counts = Counts::of(&objects);
    let rank = |a: DiffAction| match a {
        DiffAction::Failed => 0,
        DiffAction::Create | DiffAction::Update | DiffAction::Prune => 1,
        DiffAction::Unchanged => 2,
    };
    let mut order: Vec<usize> = (0..objects.len()).collect();
    order.sort_by_key(|&i| rank(objects[i].action));
    let budget = diff_limits::MAX_RESULT_BYTES - ENVELOPE;
    let mut keep = vec![false; objects.len()];
    let mut spent = 0;
    let mut kept = 0;
    for i in order {
        let c = cost(&objects[i]);
        if kept == diff_limits::MAX_OBJECTS || spent + c > budget {
            continue;
        }
        spent += c;
        kept += 1;
        keep[i] = true;
    }
    let total = objects.len();
    let objects: Vec<ObjectDiff> = objects
        .into_iter()
        .zip(keep)
        .filter_map(|(mut o, keep)| {
            keep.then(|| {
                o.message = cut_text(&o.message, diff_limits::MAX_MESSAGE_BYTES);
                o
            })
        })
        .collect();
    TargetDiff {
        target_id: target_id.to_owned(),
        revision: revision.to_owned(),
        omitted: total - objects.len(),
        objects,
        error: error.map(|e| cut_text(&e, diff_limits::MAX_ERROR_BYTES)),
        counts,
    }
}

/// A diff that could not be made.
pub fn failed(target_id: &str, revision: &str, error: String) -> TargetDiff {
    within_limits(target_id, revision, Vec::new(), Some(error))
}
