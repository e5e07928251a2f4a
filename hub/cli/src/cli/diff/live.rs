//! `gitfleet diff --live APP`: what syncing an App would change on its clusters. Each spoke
//! renders the App at the revision and server-side applies every object with `dryRun=All`
//! (nothing in the cluster changes); the hub gathers the answers (`Admin.DiffLive`). The report
//! ([`live_report`], [`live_text`]) is pure; [`run`] does the IO.
//!
//! Exit codes as `gitfleet diff -f`: 0 nothing would change, 1 something would, 2 the diff
//! could not be made — the call failed, or a cluster could not be compared (offline, its render
//! failed, an object the dry run refused), after printing what could be.

use std::io::Write;

use gitfleet_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::super::args::{DiffArgs, GlobalArgs};
use super::super::output::{self, Style};
use super::super::{CliError, write_out};
use super::color_diff_line;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveDiffReport {
    pub app: String,
    /// The commit compared, in full.
    pub revision: String,
    /// Objects that would be created, changed or pruned, over every cluster.
    pub differences: usize,
    pub clusters: Vec<ClusterReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReport {
    pub cluster: String,
    /// Why the cluster could not be compared; absent when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The spoke is not connected.
    pub offline: bool,
    pub create: u32,
    pub change: u32,
    pub prune: u32,
    /// Objects that could not be compared (see their message).
    pub failed: u32,
    /// Objects left out to keep the answer within the limits (counted above).
    pub omitted: u32,
    pub objects: Vec<ObjectReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReport {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
    /// "create", "update", "unchanged", "prune" or "failed".
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_file: String,
}

fn action_name(action: i32) -> &'static str {
    match pb::DiffAction::try_from(action) {
        Ok(pb::DiffAction::Create) => "create",
        Ok(pb::DiffAction::Update) => "update",
        Ok(pb::DiffAction::Unchanged) => "unchanged",
        Ok(pb::DiffAction::Prune) => "prune",
        Ok(pb::DiffAction::Failed) => "failed",
        Ok(pb::DiffAction::Unspecified) | Err(_) => "unknown",
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// The hub's answer as the CLI reports it.
pub fn live_report(response: pb::DiffLiveResponse) -> LiveDiffReport {
    let clusters: Vec<ClusterReport> = response
        .clusters
        .into_iter()
        .map(|c| ClusterReport {
            cluster: c.cluster,
            error: non_empty(c.error),
            offline: c.offline,
            create: c.creates,
            change: c.updates,
            prune: c.prunes,
            failed: c.failures,
            omitted: c.omitted,
            objects: c
                .objects
                .into_iter()
                .map(|o| ObjectReport {
                    action: action_name(o.action).to_owned(),
                    api_version: o.api_version,
                    kind: o.kind,
                    namespace: o.namespace,
                    name: o.name,
                    diff: non_empty(o.diff),
                    message: non_empty(o.message),
                    source_file: o.source_file,
                })
                .collect(),
        })
        .collect();
    let differences = clusters
        .iter()
        .map(|c| (c.create + c.change + c.prune) as usize)
        .sum();
    LiveDiffReport {
        app: response.app,
        revision: response.revision,
        differences,
        clusters,
    }
}

fn short(revision: &str) -> &str {
    revision.get(..8).unwrap_or(revision)
}

/// `deployment/web -n hello`, `namespace/hello`, or the file of an object that did not parse.
fn object_name(o: &ObjectReport) -> String {
    if o.name.is_empty() {
        return o.source_file.clone();
    }
    let mut name = format!("{}/{}", o.kind.to_ascii_lowercase(), o.name);
    if !o.namespace.is_empty() {
        name.push_str(" -n ");
        name.push_str(&o.namespace);
    }
    name
}

/// One section per cluster: a header, each object that differs with its diff (`+` green, `-`
/// red when colour is on), objects that could not be compared, and a summary line; an offline
/// cluster's section says so.
pub fn live_text(report: &LiveDiffReport, style: Style) -> String {
    let mut text = String::new();
    let bold = |s: &str| {
        if style.color {
            format!("\x1b[1m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    };
    for c in &report.clusters {
        text.push_str(&bold(&format!(
            "=== cluster {}: app {} at {}",
            c.cluster,
            report.app,
            short(&report.revision)
        )));
        text.push('\n');
        if let Some(error) = &c.error {
            text.push_str(&format!("error: {error}\n\n"));
            continue;
        }
        for o in &c.objects {
            match o.action.as_str() {
                "unchanged" => continue,
                "failed" => {
                    text.push_str(&format!(
                        "{} failed: {}\n",
                        object_name(o),
                        o.message.as_deref().unwrap_or("no reason given")
                    ));
                    continue;
                }
                action => {
                    let verb = match action {
                        "create" => "would be created",
                        "update" => "would be changed",
                        "prune" => "would be pruned",
                        other => other,
                    };
                    text.push_str(&format!("{} {verb}\n", object_name(o)));
                }
            }
            for line in o.diff.iter().flat_map(|d| d.lines()) {
                text.push_str(&color_diff_line(line, style));
                text.push('\n');
            }
        }
        let mut summary = format!(
            "cluster {}: {} to create, {} to change, {} to prune",
            c.cluster, c.create, c.change, c.prune
        );
        if c.failed > 0 {
            summary.push_str(&format!(", {} failed", c.failed));
        }
        if c.omitted > 0 {
            summary.push_str(&format!(
                " ({} objects not shown: the answer has a size limit; ask for this cluster alone with --cluster {})",
                c.omitted, c.cluster
            ));
        }
        text.push_str(&bold(&summary));
        text.push_str("\n\n");
    }
    if report.clusters.is_empty() {
        text.push_str(&format!(
            "app {} has no Target on any cluster: nothing to compare\n",
            report.app
        ));
    }
    text
}

/// The clusters that could not be (fully) compared, for the error line: `eu-3 (offline: …)`.
fn incomplete(report: &LiveDiffReport) -> Vec<String> {
    report
        .clusters
        .iter()
        .filter_map(|c| match (&c.error, c.failed) {
            (Some(error), _) => Some(format!("{} ({error})", c.cluster)),
            (None, 0) => None,
            (None, n) => Some(format!("{} ({n} object(s) failed)", c.cluster)),
        })
        .collect()
}

/// Runs `gitfleet diff --live`: prints the report, then fails with
/// [`CliError::LiveDiffIncomplete`] (exit 2) when a cluster could not be compared, with
/// [`CliError::Differences`] (exit 1) when something would change.
pub(in crate::cli) async fn run(
    global: &GlobalArgs,
    args: &DiffArgs,
    app: &str,
    out: &mut (dyn Write + Send),
    style: Style,
) -> Result<(), CliError> {
    let mut client = super::super::connect(global)
        .await
        .map_err(|e| CliError::DiffFailed(Box::new(e)))?;
    let response = client
        .diff_live(
            app,
            args.cluster.as_deref().unwrap_or_default(),
            args.revision.as_deref().unwrap_or_default(),
        )
        .await
        .map_err(|e| CliError::DiffFailed(Box::new(e.into())))?;
    let report = live_report(response);
    let text = output::render(global.output, &report, || live_text(&report, style));
    write_out(out, &text).map_err(|e| CliError::DiffFailed(Box::new(e)))?;
    let incomplete = incomplete(&report);
    if !incomplete.is_empty() {
        return Err(CliError::LiveDiffIncomplete {
            count: incomplete.len(),
            clusters: incomplete.join("; "),
        });
    }
    if report.differences > 0 {
        return Err(CliError::Differences {
            count: report.differences,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
