//! Changes an admin makes to a cluster's labels (`gitfleet cluster label`), in kubectl's
//! grammar: `key=value` sets, `key-` removes. Pure: the hub applies the result to the record.

use std::collections::{BTreeMap, BTreeSet};

use crate::resources::{label_key_problem, label_value_problem};

/// What to do to a cluster's labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelChanges {
    pub set: BTreeMap<String, String>,
    pub remove: BTreeSet<String>,
    /// A key that already has another value may be given a new one; kubectl's `--overwrite`.
    pub overwrite: bool,
}

/// Reads one `key=value` or `key-` argument into `changes`; the message names the argument.
pub fn parse_label_arg(arg: &str, changes: &mut LabelChanges) -> Result<(), String> {
    if let Some((key, value)) = arg.split_once('=') {
        if changes.set.contains_key(key) || changes.remove.contains(key) {
            return Err(format!("label {key:?} is given more than once"));
        }
        changes.set.insert(key.to_owned(), value.to_owned());
    } else if let Some(key) = arg.strip_suffix('-') {
        if changes.set.contains_key(key) || changes.remove.contains(key) {
            return Err(format!("label {key:?} is given more than once"));
        }
        changes.remove.insert(key.to_owned());
    } else {
        return Err(format!(
            "{arg:?} is neither key=value (to set a label) nor key- (to remove one)"
        ));
    }
    Ok(())
}

/// `labels` with `changes` made, or why not (naming the key or value that is wrong). Keys and
/// values are checked as Kubernetes checks labels, since selectors match them the same way.
/// Removing a key the cluster does not have changes nothing, as with kubectl.
pub fn apply_label_changes(
    labels: &BTreeMap<String, String>,
    changes: &LabelChanges,
) -> Result<BTreeMap<String, String>, String> {
    if changes.set.is_empty() && changes.remove.is_empty() {
        return Err("no label changes given: name at least one key=value or key-".to_owned());
    }
    for key in changes.set.keys().chain(&changes.remove) {
        if let Some(problem) = label_key_problem(key) {
            return Err(format!("label key {key:?} {problem}"));
        }
    }
    if let Some(key) = changes.set.keys().find(|k| changes.remove.contains(*k)) {
        return Err(format!("label {key:?} is both set and removed"));
    }
    for (key, value) in &changes.set {
        if let Some(problem) = label_value_problem(value) {
            return Err(format!("label {key:?}: value {value:?} {problem}"));
        }
        if !changes.overwrite
            && let Some(old) = labels.get(key)
            && old != value
        {
            return Err(format!(
                "label {key:?} already has the value {old:?}; pass --overwrite to change it"
            ));
        }
    }
    let mut out = labels.clone();
    for key in &changes.remove {
        out.remove(key);
    }
    out.extend(changes.set.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(out)
}

#[cfg(test)]
mod tests;
