//! `gitfleet status --watch` and `--wait`, and what every `--watch` shares.
//!
//! `--watch` follows the hub's `Watch` stream: the Targets as they are, then only what changes,
//! printed as kubectl's `-w` does (the table once, then a row per change; `-o json`: one JSON
//! object per line). A dropped connection is dialled again with backoff; the status stream then
//! sends a fresh snapshot, of which only what differs from what was printed is printed. A hub
//! without the stream (older than this CLI) is polled every `--interval`, as `--wait` alone is.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use gitfleet_proto::v1 as pb;
use serde::Serialize;
use tokio::time::Instant;

use super::args::{OutputFormat, StatusArgs};
use super::output::{self, StatusReport, Style};
use super::{CliError, now_unix, write_out};
use crate::client::{AdminClient, ClientError};

#[cfg(test)]
mod tests;

/// The pause before dialling a dropped stream again after `failures` failures in a row:
/// 250 ms, doubling, at most 8 s.
pub(super) fn reconnect_delay(failures: u32) -> Duration {
    Duration::from_millis(250)
        .saturating_mul(1 << failures.min(5))
        .min(Duration::from_secs(8))
}

/// After a stream failed with `error`: waits before it is opened again (and says so on
/// stderr), or gives the error back when dialling again cannot help.
pub(super) async fn before_reconnect(
    error: Option<ClientError>,
    failures: &mut u32,
) -> Result<(), CliError> {
    let why = match error {
        Some(e) if !e.reconnectable() => return Err(e.into()),
        Some(e) => e.to_string(),
        None => "the hub ended the stream".to_owned(),
    };
    let delay = reconnect_delay(*failures);
    *failures = failures.saturating_add(1);
    eprintln!(
        "{why}; watching again in {}",
        humantime::format_duration(delay)
    );
    tokio::time::sleep(delay).await;
    Ok(())
}

/// Whether `error` says the hub has no `Watch` service (it is older than this CLI).
pub(super) fn no_stream(error: &CliError) -> bool {
    matches!(error, CliError::Client(ClientError::Unimplemented { .. }))
}

/// The next message of `stream`, or `Err(None)` when it ended, `Err(Some(e))` when it failed;
/// at `deadline` (when one is set), `Ok(None)`.
pub(super) async fn next_before<T>(
    client: &AdminClient,
    stream: &mut tonic::Streaming<T>,
    deadline: Option<Instant>,
) -> Result<Option<T>, Option<ClientError>> {
    let next = match deadline {
        Some(d) => match tokio::time::timeout_at(d, client.next(stream)).await {
            Ok(next) => next,
            Err(_) => return Ok(None),
        },
        None => client.next(stream).await,
    };
    match next {
        Ok(Some(m)) => Ok(Some(m)),
        Ok(None) => Err(None),
        Err(e) => Err(Some(e)),
    }
}

pub(super) async fn status(
    client: &mut AdminClient,
    args: &StatusArgs,
    format: OutputFormat,
    out: &mut (dyn Write + Send),
    out_is_terminal: bool,
    color: bool,
) -> Result<(), CliError> {
    if args.watch {
        match follow_status(client, args, format, out, color).await {
            Err(e) if no_stream(&e) => {}
            done => return done,
        }
    }
    poll_status(client, args, format, out, out_is_terminal, color).await
}

/// What a status stream's message changes of the Targets shown.
#[derive(Debug, Default, PartialEq)]
pub(super) struct StatusChanges {
    /// New or changed Targets, by (app, cluster).
    pub changed: Vec<pb::TargetStatus>,
    /// Targets gone, (app, cluster).
    pub removed: Vec<(String, String)>,
}

/// The Targets a status stream has shown, and a snapshot being received.
#[derive(Debug, Default)]
pub(super) struct ShownTargets {
    pub shown: BTreeMap<(String, String), pb::TargetStatus>,
    incoming: Option<BTreeMap<(String, String), pb::TargetStatus>>,
}

fn key(t: &pb::TargetStatus) -> (String, String) {
    (t.app.clone(), t.cluster.clone())
}

impl ShownTargets {
    /// Takes in one message; `None` while a snapshot is incomplete, else what to print: for a
    /// snapshot, only what differs from what was shown before it.
    pub fn apply(&mut self, m: pb::WatchStatusResponse) -> Option<StatusChanges> {
        if m.snapshot {
            let incoming = self.incoming.get_or_insert_with(BTreeMap::new);
            incoming.extend(m.targets.into_iter().map(|t| (key(&t), t)));
            if !m.snapshot_complete {
                return None;
            }
            let fresh = self.incoming.take().unwrap_or_default();
            let old = std::mem::replace(&mut self.shown, fresh);
            let changed = self
                .shown
                .iter()
                .filter(|(k, t)| old.get(*k) != Some(*t))
                .map(|(_, t)| t.clone())
                .collect();
            let removed = old
                .into_keys()
                .filter(|k| !self.shown.contains_key(k))
                .collect();
            return Some(StatusChanges { changed, removed });
        }
        let mut changes = StatusChanges::default();
        for t in m.targets {
            let k = key(&t);
            if self.shown.get(&k) != Some(&t) {
                self.shown.insert(k, t.clone());
                changes.changed.push(t);
            }
        }
        for r in m.removed {
            let k = (r.app, r.cluster);
            if self.shown.remove(&k).is_some() {
                changes.removed.push(k);
            }
        }
        Some(changes)
    }

    fn report(&self) -> StatusReport {
        let targets: Vec<pb::TargetStatus> = self.shown.values().cloned().collect();
        output::status_report(&targets)
    }
}

/// A Target gone from the watch, as `-o json` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RemovedTarget<'a> {
    app: &'a str,
    cluster: &'a str,
    removed: bool,
}

/// The lines `--watch` prints for `changes`: the first time the whole table (with its header),
/// later rows without it; JSON one object per Target and line, YAML a `---` stream.
pub(super) fn status_lines(
    changes: &StatusChanges,
    first: bool,
    args: &StatusArgs,
    format: OutputFormat,
    style: Style,
) -> String {
    let report = output::status_report(&changes.changed);
    match format {
        OutputFormat::Json | OutputFormat::Yaml => {
            let removed = changes.removed.iter().map(|(app, cluster)| RemovedTarget {
                app,
                cluster,
                removed: true,
            });
            let values: Vec<serde_json::Value> = report
                .targets
                .iter()
                .map(serde_json::to_value)
                .chain(removed.map(|r| serde_json::to_value(&r)))
                .collect::<Result<_, _>>()
                .expect("reports serialise");
            values
                .iter()
                .map(|v| match format {
                    OutputFormat::Yaml => format!("---\n{}", output::to_yaml(v)),
                    _ => format!("{v}\n"),
                })
                .collect()
        }
        OutputFormat::Table => {
            let mut text = String::new();
            if first || !report.targets.is_empty() {
                let table = output::status_table(&report, args.resources, style);
                if first {
                    text.push_str(&table);
                } else {
                    // kubectl's -w: rows only, the header was printed once.
                    text.extend(table.lines().skip(1).map(|l| format!("{l}\n")));
                }
            }
            for (app, cluster) in &changes.removed {
                text.push_str(&format!("{app}  {cluster}  (Target removed)\n"));
            }
            text
        }
    }
}

/// `status --watch` on the hub's stream.
async fn follow_status(
    client: &mut AdminClient,
    args: &StatusArgs,
    format: OutputFormat,
    out: &mut (dyn Write + Send),
    color: bool,
) -> Result<(), CliError> {
    let deadline = args.wait.then(|| Instant::now() + args.timeout);
    let app = args.app.as_deref().unwrap_or_default();
    let cluster = args.cluster.as_deref().unwrap_or_default();
    let mut targets = ShownTargets::default();
    let mut printed = false;
    let mut failures = 0;
    loop {
        let mut stream = match client.watch_status(app, cluster).await {
            Ok(s) => s,
            Err(e) if !printed && !e.reconnectable() => return Err(e.into()),
            Err(e) => {
                before_reconnect(Some(e), &mut failures).await?;
                continue;
            }
        };
        let ended = loop {
            let m = match next_before(client, &mut stream, deadline).await {
                Ok(Some(m)) => m,
                Ok(None) => {
                    return Err(CliError::WaitTimeout {
                        after: humantime::format_duration(args.timeout).to_string(),
                        pending: output::pending(&targets.report(), args.revision.as_deref()),
                    });
                }
                Err(ended) => break ended,
            };
            failures = 0;
            let Some(changes) = targets.apply(m) else {
                continue;
            };
            let style = Style {
                color,
                now_unix: now_unix(),
            };
            write_out(out, &status_lines(&changes, !printed, args, format, style))?;
            printed = true;
            if args.wait && output::converged(&targets.report(), args.revision.as_deref()) {
                return Ok(());
            }
        };
        before_reconnect(ended, &mut failures).await?;
    }
}

/// `--wait` (and `--watch` against a hub without the stream): polls every `--interval`.
async fn poll_status(
    client: &mut AdminClient,
    args: &StatusArgs,
    format: OutputFormat,
    out: &mut (dyn Write + Send),
    out_is_terminal: bool,
    color: bool,
) -> Result<(), CliError> {
    let deadline = args.wait.then(|| Instant::now() + args.timeout);
    let app = args.app.as_deref().unwrap_or_default();
    let cluster = args.cluster.as_deref().unwrap_or_default();
    let mut last: Option<StatusReport> = None;
    loop {
        let targets = client.status(app, cluster).await?;
        let report = output::status_report(&targets);
        let style = Style {
            color,
            now_unix: now_unix(),
        };
        let done = args.wait && output::converged(&report, args.revision.as_deref());
        let timed_out = !done && deadline.is_some_and(|d| Instant::now() >= d);
        if args.watch {
            if last.as_ref() != Some(&report) {
                write_out(out, &frame(&report, args, format, out_is_terminal, style))?;
            }
        } else if done || timed_out {
            // --wait alone prints once, at the end.
            let text = output::render(format, &report, || {
                output::status_table(&report, args.resources, style)
            });
            write_out(out, &text)?;
        }
        if done {
            return Ok(());
        }
        if timed_out {
            return Err(CliError::WaitTimeout {
                after: humantime::format_duration(args.timeout).to_string(),
                pending: output::pending(&report, args.revision.as_deref()),
            });
        }
        last = Some(report);
        tokio::time::sleep(args.interval).await;
    }
}

/// Moves the cursor home and clears the screen, so a terminal shows one live table.
const CLEAR: &str = "\u{1b}[H\u{1b}[2J";

/// One update of a polled `--watch`: on a terminal the screen is redrawn; elsewhere each table
/// follows the last, and JSON is one compact document per line (JSON Lines), YAML a `---`
/// stream.
fn frame(
    report: &StatusReport,
    args: &StatusArgs,
    format: OutputFormat,
    out_is_terminal: bool,
    style: Style,
) -> String {
    match format {
        OutputFormat::Json => {
            let mut line = serde_json::to_string(report).expect("reports serialise");
            line.push('\n');
            line
        }
        OutputFormat::Yaml => format!("---\n{}", output::to_yaml(report)),
        OutputFormat::Table => {
            let table = output::status_table(report, args.resources, style);
            let at = output::rfc3339(style.now_unix).unwrap_or_default();
            if out_is_terminal {
                format!(
                    "{CLEAR}{table}\nevery {}, last change {at}; Ctrl-C to stop\n",
                    humantime::format_duration(args.interval)
                )
            } else {
                format!("{at}\n{table}\n")
            }
        }
    }
}
