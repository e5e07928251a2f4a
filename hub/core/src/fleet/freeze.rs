//! Freezes, pure: an ad hoc stop of new revisions (`gitfleet freeze create`), its validation
//! and its scope. Which Targets a freeze holds is decided in [`super::change_control`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::placement::selector_matches;
use crate::resources::{
    LabelSelector, LabelSelectorRequirement, SelectorOperator, dns1123_label_problem,
    label_key_problem, label_value_problem,
};

#[cfg(test)]
mod tests;

/// The longest a freeze may last from its creation: a freeze is for a campaign or an incident;
/// a rule that holds every week is a sync window.
pub const MAX_FREEZE_SECS: i64 = 366 * 24 * 3600;
/// The longest reason kept.
pub const MAX_REASON: usize = 1024;
/// How many Apps or Projects one freeze may name.
pub const MAX_NAMED: usize = 256;

/// A stored freeze.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Freeze {
    pub name: String,
    /// The Apps it holds; with `projects`, either names an App (both empty: every App).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<String>,
    /// The Projects whose Apps it holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    /// Only the clusters that match; absent: every cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<LabelSelector>,
    /// When it ends by itself (unix seconds, excluded).
    pub until: i64,
    pub reason: String,
    pub created_by: String,
    pub created_at: i64,
    /// Whether what it holds keeps self-healing (the default); false (`--no-self-heal`): the
    /// Targets it holds report drift and leave it be until it ends.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub self_heal: bool,
    /// Whether its end by time was recorded as an event (`FreezeEnded`, for Notifiers).
    #[serde(default, skip_serializing_if = "is_false")]
    pub end_recorded: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// How long after its end a freeze's end is still told as an event: a hub that was down longer
/// (or one upgraded with freezes that ended long ago) marks it told without telling.
pub const END_EVENT_WINDOW: i64 = 24 * 3600;

/// What a person asks for: checked by [`FreezeRequest::validate`] into a [`Freeze`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FreezeRequest {
    pub name: String,
    pub apps: Vec<String>,
    pub projects: Vec<String>,
    /// kubectl's selector syntax (`env=prod,tier!=edge,region in (eu,us)`); empty: every
    /// cluster.
    pub cluster_selector: String,
    pub until: i64,
    pub reason: String,
    /// `--no-self-heal`: the Targets it holds stop self-healing while it holds them.
    pub suspend_self_heal: bool,
}

/// A freeze request's problem, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("freeze {name:?}: {field}: {message}")]
pub struct FreezeError {
    pub name: String,
    pub field: String,
    pub message: String,
}

impl FreezeRequest {
    /// Checks every field; `by` is who asks, `now` the time it is asked.
    pub fn validate(self, by: &str, now: i64) -> Result<Freeze, FreezeError> {
        let fail = |field: &str, message: String| FreezeError {
            name: self.name.clone(),
            field: field.to_owned(),
            message,
        };
        if let Some(problem) = dns1123_label_problem(&self.name) {
            return Err(fail("name", format!("{:?} {problem}", self.name)));
        }
        for (field, names) in [("apps", &self.apps), ("projects", &self.projects)] {
            if names.len() > MAX_NAMED {
                return Err(fail(field, format!("at most {MAX_NAMED} names")));
            }
            for (i, n) in names.iter().enumerate() {
                if let Some(problem) = dns1123_label_problem(n) {
                    return Err(fail(&format!("{field}[{i}]"), format!("{n:?} {problem}")));
                }
            }
        }
        let cluster_selector = if self.cluster_selector.trim().is_empty() {
            None
        } else {
            Some(parse_selector(&self.cluster_selector).map_err(|m| fail("clusterSelector", m))?)
        };
        if self.until <= now {
            return Err(fail(
                "until",
                format!(
                    "{} is not in the future (it is {} now)",
                    super::window::utc_text(self.until),
                    super::window::utc_text(now)
                ),
            ));
        }
        if self.until - now > MAX_FREEZE_SECS {
            return Err(fail(
                "until",
                format!(
                    "{} is more than 366 days away (a rule that recurs is a sync window)",
                    super::window::utc_text(self.until)
                ),
            ));
        }
        let reason = self.reason.trim();
        if reason.is_empty() {
            return Err(fail(
                "reason",
                "is required: say why, for whoever is held by it".into(),
            ));
        }
        if reason.len() > MAX_REASON {
            return Err(fail("reason", format!("is longer than {MAX_REASON} bytes")));
        }
        let mut apps = self.apps.clone();
        apps.sort();
        apps.dedup();
        let mut projects = self.projects.clone();
        projects.sort();
        projects.dedup();
        Ok(Freeze {
            name: self.name.clone(),
            apps,
            projects,
            cluster_selector,
            until: self.until,
            reason: reason.to_owned(),
            created_by: by.to_owned(),
            created_at: now,
            self_heal: !self.suspend_self_heal,
            end_recorded: false,
        })
    }
}

impl Freeze {
    /// Whether it holds anything at `now`.
    pub fn active(&self, now: i64) -> bool {
        now < self.until
    }

    /// Whether its end by time is due to be recorded at `now`: `None` while it holds, or once
    /// recorded; `Some(true)` to record it as an event, `Some(false)` to mark it recorded only
    /// (it ended more than [`END_EVENT_WINDOW`] ago).
    pub fn end_event_due(&self, now: i64) -> Option<bool> {
        if self.active(now) || self.end_recorded {
            return None;
        }
        Some(now - self.until <= END_EVENT_WINDOW)
    }

    /// Whether it holds `app` (of Project `project`) on some cluster.
    pub fn covers_app(&self, app: &str, project: &str) -> bool {
        (self.apps.is_empty() && self.projects.is_empty())
            || self.apps.iter().any(|a| a == app)
            || self.projects.iter().any(|p| p == project)
    }

    /// Whether it holds a cluster with these labels (for an App it covers).
    pub fn covers_cluster(&self, labels: &BTreeMap<String, String>) -> bool {
        self.cluster_selector
            .as_ref()
            .is_none_or(|s| selector_matches(s, labels))
    }

    /// What it holds, for people: `apps checkout,cart; clusters env=prod`, or `the whole fleet`.
    pub fn scope_text(&self) -> String {
        let mut parts = Vec::new();
        if !self.apps.is_empty() {
            parts.push(format!("apps {}", self.apps.join(",")));
        }
        if !self.projects.is_empty() {
            parts.push(format!("projects {}", self.projects.join(",")));
        }
        if let Some(s) = &self.cluster_selector {
            parts.push(format!("clusters {}", format_selector(s)));
        }
        if parts.is_empty() {
            "the whole fleet".to_owned()
        } else {
            parts.join("; ")
        }
    }

    /// What suspends self-heal, when it does: `freeze campaign`.
    pub fn self_heal_text(&self) -> Option<String> {
        (!self.self_heal).then(|| format!("freeze {}", self.name))
    }

    /// Why a Target is held, complete on its own: `freeze campaign until 2026-12-07 06:00 UTC
    /// (alice: holiday campaign)`.
    pub fn hold_reason(&self) -> String {
        format!(
            "freeze {} until {} ({}: {})",
            self.name,
            super::window::utc_text(self.until),
            self.created_by,
            self.reason
        )
    }
}

/// Parses kubectl's label selector syntax: requirements separated by commas, each `k=v`,
/// `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` (exists) or `!k` (does not exist).
pub fn parse_selector(text: &str) -> Result<LabelSelector, String> {
    let mut selector = LabelSelector::default();
    for raw in split_requirements(text)? {
        let req = raw.trim();
        if req.is_empty() {
            return Err(format!("{text:?} has an empty requirement"));
        }
        let requirement = parse_requirement(req)?;
        match requirement {
            Parsed::Equals(k, v) => {
                if let Some(old) = selector.match_labels.get(&k)
                    && *old != v
                {
                    return Err(format!("{req:?}: {k:?} is given two values"));
                }
                selector.match_labels.insert(k, v);
            }
            Parsed::Expression(e) => selector.match_expressions.push(e),
        }
    }
    Ok(selector)
}

enum Parsed {
    Equals(String, String),
    Expression(LabelSelectorRequirement),
}

/// Splits at the commas outside parentheses.
fn split_requirements(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("{text:?} has an unmatched ')'"))?;
            }
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("{text:?} has an unclosed '('"));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn parse_requirement(req: &str) -> Result<Parsed, String> {
    let key_ok = |k: &str| match label_key_problem(k) {
        Some(problem) => Err(format!("{req:?}: key {k:?} {problem}")),
        None => Ok(k.to_owned()),
    };
    let value_ok = |v: &str| match label_value_problem(v) {
        Some(problem) => Err(format!("{req:?}: value {v:?} {problem}")),
        None => Ok(v.to_owned()),
    };
    if let Some((k, v)) = req.split_once("!=") {
        return Ok(Parsed::Expression(LabelSelectorRequirement {
            key: key_ok(k.trim())?,
            operator: SelectorOperator::NotIn,
            values: vec![value_ok(v.trim())?],
        }));
    }
    if let Some((k, v)) = req.split_once('=') {
        let v = v.strip_prefix('=').unwrap_or(v);
        return Ok(Parsed::Equals(key_ok(k.trim())?, value_ok(v.trim())?));
    }
    if let Some(open) = req.find('(') {
        let close = req
            .strip_suffix(')')
            .ok_or_else(|| format!("{req:?}: nothing may follow ')'"))?;
        let head: Vec<&str> = req[..open].split_whitespace().collect();
        let operator = match head.as_slice() {
            [_, "in"] => SelectorOperator::In,
            [_, "notin"] => SelectorOperator::NotIn,
            _ => {
                return Err(format!(
                    "{req:?}: expected `KEY in (V1,V2)` or `KEY notin (V1,V2)`"
                ));
            }
        };
        let values = close[open + 1..]
            .split(',')
            .map(|v| value_ok(v.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        if values.iter().any(String::is_empty) {
            return Err(format!("{req:?}: an empty value in the list"));
        }
        return Ok(Parsed::Expression(LabelSelectorRequirement {
            key: key_ok(head[0])?,
            operator,
            values,
        }));
    }
    if let Some(k) = req.strip_prefix('!') {
        return Ok(Parsed::Expression(LabelSelectorRequirement {
            key: key_ok(k.trim())?,
            operator: SelectorOperator::DoesNotExist,
            values: vec![],
        }));
    }
    if req.split_whitespace().count() != 1 {
        return Err(format!(
            "{req:?} is not a requirement (KEY=VALUE, KEY!=VALUE, KEY in (..), KEY notin (..), \
             KEY or !KEY)"
        ));
    }
    Ok(Parsed::Expression(LabelSelectorRequirement {
        key: key_ok(req)?,
        operator: SelectorOperator::Exists,
        values: vec![],
    }))
}

/// A selector in kubectl's syntax (what [`parse_selector`] reads).
pub fn format_selector(s: &LabelSelector) -> String {
    let mut parts: Vec<String> = s
        .match_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in &s.match_expressions {
        parts.push(match e.operator {
            SelectorOperator::In => format!("{} in ({})", e.key, e.values.join(",")),
            SelectorOperator::NotIn if e.values.len() == 1 => {
                format!("{}!={}", e.key, e.values[0])
            }
            SelectorOperator::NotIn => format!("{} notin ({})", e.key, e.values.join(",")),
            SelectorOperator::Exists => e.key.clone(),
            SelectorOperator::DoesNotExist => format!("!{}", e.key),
        });
    }
    parts.join(",")
}
