//! `gitfleet diff -f FILE...`: what `gitfleet apply -f` would change on the hub, per resource
//! (created, configured with a unified diff of its YAML, unchanged), like `kubectl diff`.
//!
//! The hub decides the action (an `Apply` dry run validates every document exactly as a real
//! apply would); the diff compares the hub's stored resource with the document in the form the
//! hub stores it (defaults filled in, keys sorted), so that only real differences show. The
//! comparison ([`diff_report`]) is pure; [`run`] does the IO.
//!
//! Exit codes follow `diff(1)` and `kubectl diff`: 0 no differences, 1 differences, 2 the diff
//! could not be made (bad file, invalid resource, hub unreachable, usage error).
//!
//! `gitfleet diff --live APP` compares an App with its clusters instead (`live`).

use std::collections::BTreeMap;
use std::io::Write;

use gitfleet_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use similar::TextDiff;

use super::args::{DiffArgs, GlobalArgs};
use super::documents::{self, Document};
use super::output::{self, Style};
use super::{CliError, write_out};
use gitfleet_core::resources::parse_document;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffReport {
    /// How many resources `apply` would create or change.
    pub differences: usize,
    pub resources: Vec<ResourceDiff>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDiff {
    pub kind: String,
    pub name: String,
    /// Where the document came from (`fleet/web.yaml#0`).
    pub origin: String,
    /// "created", "configured" or "unchanged", as `apply` would report it.
    pub action: String,
    /// Unified diff of the stored YAML (`---`) against the applied one (`+++`); absent when
    /// unchanged. A resource to be created diffs against nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

/// Compares the local `documents` with the hub's `live` resources (as `Get` returns them), using
/// the hub's dry-run `outcomes` for each document's action.
pub fn diff_report(
    documents: &[Document],
    outcomes: &[pb::ApplyOutcome],
    live: &[pb::ResourceDocument],
) -> DiffReport {
    let live: BTreeMap<(String, String), Value> = live
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(&d.json).ok())
        .filter_map(|mut v| {
            let kind = v.get("kind")?.as_str()?.to_owned();
            let name = v.pointer("/metadata/name")?.as_str()?.to_owned();
            // What the hub learned (commit, errors) is not part of what apply changes.
            if let Some(o) = v.as_object_mut() {
                o.remove("status");
            }
            Some(((kind, name), v))
        })
        .collect();
    let mut resources = Vec::new();
    for (i, doc) in documents.iter().enumerate() {
        // The hub answers in document order; fall back to the document's own kind and name.
        let (kind, name, action) = match outcomes.get(i) {
            Some(o) => (o.kind.clone(), o.name.clone(), o.action.clone()),
            None => (
                text_at(&doc.value, "/kind"),
                text_at(&doc.value, "/metadata/name"),
                "configured".to_owned(),
            ),
        };
        let diff = (action != "unchanged").then(|| {
            let before = live
                .get(&(kind.clone(), name.clone()))
                .map(yaml)
                .unwrap_or_default();
            let after = yaml(&canonical(doc));
            let subject = format!("{}/{}", kind.to_ascii_lowercase(), name);
            TextDiff::from_lines(&before, &after)
                .unified_diff()
                .context_radius(3)
                .header(
                    &format!("hub: {subject}"),
                    &format!("{}: {subject}", doc.origin),
                )
                .to_string()
        });
        resources.push(ResourceDiff {
            kind,
            name,
            origin: doc.origin.clone(),
            action,
            diff,
        });
    }
    DiffReport {
        differences: resources.iter().filter(|r| r.diff.is_some()).count(),
        resources,
    }
}

/// The document as the hub would store it (defaults filled in), or as written when this CLI
/// cannot parse it (the hub, which did, may be newer).
fn canonical(doc: &Document) -> Value {
    match parse_document(&doc.origin, &doc.value.to_string()) {
        Ok(resource) => resource.to_json(),
        Err(_) => doc.value.clone(),
    }
}

fn yaml(value: &Value) -> String {
    serde_saphyr::to_string(value).expect("JSON values serialise as YAML")
}

fn text_at(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// `app/web configured (fleet/web.yaml#1)` per resource, each followed by its diff; `+` lines
/// green and `-` lines red when colour is on.
pub fn diff_text(report: &DiffReport, style: Style) -> String {
    let mut text = String::new();
    for r in &report.resources {
        text.push_str(&format!(
            "{}/{} {} ({})\n",
            r.kind.to_ascii_lowercase(),
            r.name,
            r.action,
            r.origin
        ));
        for line in r.diff.iter().flat_map(|d| d.lines()) {
            text.push_str(&color_diff_line(line, style));
            text.push('\n');
        }
    }
    text
}

/// A line of a unified diff, coloured when colour is on: headers bold, `+` green, `-` red,
/// hunks cyan.
fn color_diff_line(line: &str, style: Style) -> String {
    let code = match line.as_bytes().first() {
        _ if !style.color => None,
        _ if line.starts_with("+++") || line.starts_with("---") => Some("1"),
        Some(b'+') => Some("32"),
        Some(b'-') => Some("31"),
        Some(b'@') => Some("36"),
        _ => None,
    };
    match code {
        Some(c) => format!("\x1b[{c}m{line}\x1b[0m"),
        None => line.to_owned(),
    }
}

/// Runs `gitfleet diff`: prints the report, then fails with [`CliError::Differences`] when
/// anything differs; every other failure comes back as [`CliError::DiffFailed`] (exit 2).
pub(super) async fn run(
    global: &GlobalArgs,
    args: &DiffArgs,
    out: &mut (dyn Write + Send),
    style: Style,
) -> Result<(), CliError> {
    if args.live {
        let app = args.app.as_deref().unwrap_or_default();
        return live::run(global, args, app, out, style).await;
    }
    let report = report(global, args)
        .await
        .map_err(|e| CliError::DiffFailed(Box::new(e)))?;
    let text = output::render(global.output, &report, || diff_text(&report, style));
    write_out(out, &text).map_err(|e| CliError::DiffFailed(Box::new(e)))?;
    if report.differences > 0 {
        return Err(CliError::Differences {
            count: report.differences,
        });
    }
    Ok(())
}

async fn report(global: &GlobalArgs, args: &DiffArgs) -> Result<DiffReport, CliError> {
    let docs = documents::load(&args.files, &mut std::io::stdin())?;
    let request: Vec<pb::ResourceDocument> = docs
        .iter()
        .map(|d| pb::ResourceDocument {
            origin: d.origin.clone(),
            json: d.value.to_string(),
        })
        .collect();
    let mut client = super::connect(global).await?;
    let outcomes = client.apply(request, true).await?;
    let live = client.get("", "").await?;
    Ok(diff_report(&docs, &outcomes, &live))
}

pub mod live;

#[cfg(test)]
mod tests;
