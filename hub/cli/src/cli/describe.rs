//! `gitfleet describe KIND NAME`: one resource or cluster with everything about it on one page,
//! as `kubectl describe` shows an object: its fields, then (for an App) its rollout and Targets,
//! (for a cluster) its Targets, and the latest events. Pure: values in, text out.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::output::{self, ClusterReport, StatusReport, Style};
use super::rollout::{self, EventsReport, RolloutReport};

/// An App, a Repo, a ClusterGroup, a Project or a HealthRule, with what the hub knows of it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDescription {
    pub resource: Value,
    /// Apps only: the current rollout (absent before the App's first revision).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutReport>,
    /// Apps only: every Target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targets: Option<StatusReport>,
    pub events: EventsReport,
}

/// A registered cluster, its Targets and its latest events.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDescription {
    pub cluster: ClusterReport,
    pub targets: StatusReport,
    pub events: EventsReport,
}

/// The text of a resource's description.
pub fn resource_text(d: &ResourceDescription, style: Style) -> String {
    let mut out = String::new();
    let r = &d.resource;
    let str_at = |p: &str| r.pointer(p).and_then(Value::as_str).unwrap_or_default();
    field(&mut out, 0, "Name", str_at("/metadata/name"));
    field(&mut out, 0, "Kind", str_at("/kind"));
    field(&mut out, 0, "API Version", str_at("/apiVersion"));
    map_field(&mut out, "Labels", r.pointer("/metadata/labels"));
    map_field(&mut out, "Annotations", r.pointer("/metadata/annotations"));
    for section in ["spec", "status"] {
        if let Some(v) = r.get(section).filter(|v| !is_empty(v)) {
            out.push_str(&format!("{}:\n", capitalize(section)));
            value_lines(&mut out, 1, v);
        }
    }
    if let Some(targets) = &d.targets {
        out.push_str("Rollout:\n");
        match &d.rollout {
            Some(r) => out.push_str(&indent(&rollout::rollout_text(r, style))),
            None => out.push_str("  none yet: the App has no revision\n"),
        }
        out.push_str("Targets:\n");
        if targets.targets.is_empty() {
            out.push_str("  none: the App is placed on no cluster\n");
        } else {
            out.push_str(&indent(&output::status_table(targets, false, style)));
        }
    }
    events_section(&mut out, &d.events, style);
    out
}

/// The text of a cluster's description.
pub fn cluster_text(d: &ClusterDescription, style: Style) -> String {
    let mut out = String::new();
    let c = &d.cluster;
    field(&mut out, 0, "Name", &c.name);
    let labels: BTreeMap<String, Value> = c
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    map_field(
        &mut out,
        "Labels",
        Some(&Value::Object(labels.into_iter().collect())),
    );
    let state = if c.revoked {
        "revoked"
    } else if c.connected {
        "connected"
    } else {
        "disconnected"
    };
    field(&mut out, 0, "State", state);
    let when = |t: &Option<String>| {
        t.as_deref().map_or_else(
            || "never".to_owned(),
            |t| format!("{t} ({})", output::ago(Some(t), style.now_unix)),
        )
    };
    field(&mut out, 0, "Last Contact", &when(&c.last_contact));
    field(&mut out, 0, "Registered", &when(&c.registered_at));
    field(
        &mut out,
        0,
        "Certificate Expires",
        c.certificate_expires.as_deref().unwrap_or("unknown"),
    );
    field(
        &mut out,
        0,
        "Agent Version",
        output::dash(&c.agent_version).as_str(),
    );
    out.push_str("Targets:\n");
    if d.targets.targets.is_empty() {
        out.push_str("  none: no App is placed on this cluster\n");
    } else {
        out.push_str(&indent(&output::status_table(&d.targets, false, style)));
    }
    events_section(&mut out, &d.events, style);
    out
}

fn events_section(out: &mut String, events: &EventsReport, style: Style) {
    out.push_str("Events:\n");
    if events.events.is_empty() {
        out.push_str("  none\n");
    } else {
        out.push_str(&indent(&rollout::events_table(events, style, true)));
    }
}

/// `Name:  value`, values aligned as kubectl aligns them.
fn field(out: &mut String, depth: usize, name: &str, value: &str) {
    let pad = "  ".repeat(depth);
    let label = format!("{name}:");
    // Every value starts in the same column, however deep its field.
    let width = 21usize.saturating_sub(2 * depth).max(label.len() + 1);
    let line = format!("{pad}{label:<width$}{value}");
    out.push_str(line.trim_end());
    out.push('\n');
}

fn map_field(out: &mut String, name: &str, map: Option<&Value>) {
    let entries: Vec<(String, String)> = map
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), scalar(v)))
        .collect();
    if entries.is_empty() {
        field(out, 0, name, "<none>");
        return;
    }
    for (i, (k, v)) in entries.iter().enumerate() {
        let label = if i == 0 { name } else { "" };
        let line = format!("{k}={v}");
        if i == 0 {
            field(out, 0, label, &line);
        } else {
            out.push_str(&format!("{:<22}{line}\n", ""));
        }
    }
}

/// A JSON value as kubectl describes an object's fields: `Key: value`, nested objects
/// indented, list items each introduced by `-`.
/// The keys of a user's map (labels, Helm values) are printed as they are, not titled.
fn value_lines(out: &mut String, depth: usize, v: &Value) {
    value_lines_keyed(out, depth, v, false);
}

/// Fields whose keys are the user's own (label keys, Helm values), not gitfleet's.
const USER_MAPS: &[&str] = &[
    "labels",
    "matchLabels",
    "annotations",
    "values",
    "commonLabels",
    "commonAnnotations",
];

fn value_lines_keyed(out: &mut String, depth: usize, v: &Value, verbatim: bool) {
    let pad = "  ".repeat(depth);
    match v {
        Value::Object(map) => {
            for (k, v) in map.iter().filter(|(_, v)| !is_empty(v)) {
                let label = if verbatim { k.clone() } else { capitalize(k) };
                if is_scalar(v) {
                    field(out, depth, &label, &scalar(v));
                } else {
                    out.push_str(&format!("{pad}{label}:\n"));
                    value_lines_keyed(
                        out,
                        depth + 1,
                        v,
                        verbatim || USER_MAPS.contains(&k.as_str()),
                    );
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                if is_scalar(item) {
                    out.push_str(&format!("{pad}- {}\n", scalar(item)));
                } else {
                    out.push_str(&format!("{pad}-\n"));
                    value_lines_keyed(out, depth + 1, item, verbatim);
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Object(_) | Value::Array(_))
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".to_owned(),
        other => other.to_string(),
    }
}

/// `clusterSelector` → `Cluster Selector`, as kubectl titles fields.
fn capitalize(key: &str) -> String {
    let mut out = String::new();
    for (i, c) in key.chars().enumerate() {
        if i == 0 {
            out.extend(c.to_uppercase());
        } else if c.is_uppercase() {
            out.push(' ');
            out.push(c);
        } else {
            out.push(c);
        }
    }
    out
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_owned()
            } else {
                format!("  {l}\n")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn style() -> Style {
        Style {
            color: false,
            now_unix: 1_000_000,
        }
    }

    #[test]
    fn a_resource_reads_like_kubectl_describe() {
        let d = ResourceDescription {
            resource: serde_json::json!({
                "apiVersion": "gitfleet.dev/v1",
                "kind": "Repo",
                "metadata": {"name": "platform", "labels": {"team": "core"}},
                "spec": {"url": "https://git.example.com/platform.git", "ref": {"branch": "main"},
                         "pollInterval": "1m", "webhookSecretRef": "",
                         "selector": {"matchLabels": {"env": "prod"}}},
                "status": {"revision": "abc", "fetches": 3, "error": ""}
            }),
            rollout: None,
            targets: None,
            events: EventsReport { events: Vec::new() },
        };
        let text = resource_text(&d, style());
        assert_eq!(
            text,
            "Name:                platform
Kind:                Repo
API Version:         gitfleet.dev/v1
Labels:              team=core
Annotations:         <none>
Spec:
  Poll Interval:     1m
  Ref:
    Branch:          main
  Selector:
    Match Labels:
      env:           prod
  Url:               https://git.example.com/platform.git
Status:
  Fetches:           3
  Revision:          abc
Events:
  none
"
        );
    }

    #[test]
    fn an_app_without_a_revision_says_so() {
        let d = ResourceDescription {
            resource: serde_json::json!({"kind": "App", "metadata": {"name": "web"}}),
            rollout: None,
            targets: Some(output::status_report(&[])),
            events: EventsReport { events: Vec::new() },
        };
        let text = resource_text(&d, style());
        assert!(
            text.contains("Rollout:\n  none yet: the App has no revision\n"),
            "{text}"
        );
        assert!(
            text.contains("Targets:\n  none: the App is placed on no cluster\n"),
            "{text}"
        );
    }

    #[test]
    fn a_cluster_shows_its_state_and_targets() {
        let d = ClusterDescription {
            cluster: ClusterReport {
                name: "eu-1".into(),
                labels: [("env".to_owned(), "prod".to_owned())].into(),
                agent_version: "0.1.0".into(),
                connected: false,
                revoked: false,
                last_contact: output::rfc3339(1_000_000 - 120),
                registered_at: None,
                certificate_expires: output::rfc3339(2_000_000),
            },
            targets: output::status_report(&[]),
            events: EventsReport { events: Vec::new() },
        };
        let text = cluster_text(&d, style());
        assert!(text.contains("Labels:              env=prod\n"), "{text}");
        assert!(
            text.contains("State:               disconnected\n"),
            "{text}"
        );
        assert!(text.contains("(2m ago)\n"), "{text}");
        assert!(text.contains("Registered:          never\n"), "{text}");
        assert!(text.contains("Agent Version:       0.1.0\n"), "{text}");
    }
}
