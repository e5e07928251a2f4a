//! `gitfleet rollout …`, `gitfleet app …` and `gitfleet events`: the reports they print (pure
//! functions from the hub's answers) and the `--watch` loops.
//!
//! `rollout status --watch` draws one progress bar per wave on a terminal (indicatif); anywhere
//! else it prints a line whenever the rollout's reason changes, so logs and CI keep a record.

use std::io::Write;
use std::time::Duration;

use comfy_table::{Cell, Color};
use gitfleet_proto::v1 as pb;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::args::{EventsArgs, OutputFormat, RolloutStatusArgs};
use super::output::{self, Style, rfc3339, short_revision};
use super::{CliError, now_unix, watch, write_out};
use crate::client::AdminClient;

#[cfg(test)]
mod tests;

// ---------------------------------------------------------------------------------------------
// rollout status

/// `rollout status -o json|yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutReport {
    pub app: String,
    pub number: u64,
    /// `update` or `rollback`.
    pub kind: String,
    /// `progressing`, `paused`, `rollingBack`, `complete` or `rolledBack`.
    pub summary: String,
    pub reason: String,
    pub revision: String,
    pub git_ref: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_by: Option<String>,
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// 1-based, as people count waves.
    pub current_wave: u32,
    pub suspended: bool,
    /// The commit Git points at, when the rollout does not follow it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_message: Option<String>,
    pub waves: Vec<WaveReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaveReport {
    pub name: String,
    /// `done`, `current` or `waiting`.
    pub progress: String,
    pub total: u32,
    pub updated: u32,
    pub healthy: u32,
    pub failed: u32,
    pub max_unavailable: u32,
    pub targets: Vec<RolloutTargetReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutTargetReport {
    pub cluster: String,
    /// `pending`, `updating`, `healthy`, `failed`, `tolerated` or `disconnected`.
    pub state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

pub fn rollout_report(s: &pb::RolloutStatus) -> RolloutReport {
    RolloutReport {
        app: s.app.clone(),
        number: s.number,
        kind: s.kind.clone(),
        summary: s.summary.clone(),
        reason: s.reason.clone(),
        revision: s.revision.clone(),
        git_ref: s.git_ref.clone(),
        stable_revision: non_empty(&s.stable_revision),
        rolled_back_from: non_empty(&s.rolled_back_from),
        rollback_by: non_empty(&s.rollback_by),
        started_at: rfc3339(s.started_at_unix),
        finished_at: rfc3339(s.finished_at_unix),
        current_wave: s.current_wave.saturating_add(1),
        suspended: s.suspended,
        git_revision: non_empty(&s.git_revision),
        paused_message: non_empty(&s.paused_message),
        waves: s
            .waves
            .iter()
            .map(|w| WaveReport {
                name: w.name.clone(),
                progress: w.progress.clone(),
                total: w.total,
                updated: w.updated,
                healthy: w.healthy,
                failed: w.failed,
                max_unavailable: w.max_unavailable,
                targets: w
                    .targets
                    .iter()
                    .map(|t| RolloutTargetReport {
                        cluster: t.cluster.clone(),
                        state: t.state.clone(),
                        detail: t.detail.clone(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

impl RolloutReport {
    /// Finished: complete or rolled back (no more steps without a new commit or a command).
    pub fn finished(&self) -> bool {
        matches!(self.summary.as_str(), "complete" | "rolledBack")
    }

    /// What `rollout status --watch` exits with once it stops: success only when complete.
    pub fn succeeded(&self) -> bool {
        self.summary == "complete"
    }

    /// Stopped where it is until someone acts: paused (and not just suspended).
    pub fn stopped(&self) -> bool {
        self.summary == "paused"
    }

    fn headline(&self) -> String {
        let what = if self.kind == "rollback" {
            format!(
                "rollback #{} to {}{}",
                self.number,
                short_revision(&self.revision),
                self.rolled_back_from
                    .as_deref()
                    .map(|f| format!(" (from {})", short_revision(f)))
                    .unwrap_or_default()
            )
        } else {
            format!(
                "rollout #{} to {}",
                self.number,
                short_revision(&self.revision)
            )
        };
        format!("{}: {what}", self.app)
    }
}

fn summary_text(summary: &str) -> (&'static str, Option<Color>) {
    match summary {
        "complete" => ("COMPLETE", Some(Color::Green)),
        "rolledBack" => ("ROLLED BACK", Some(Color::Yellow)),
        "rollingBack" => ("ROLLING BACK", Some(Color::Yellow)),
        "paused" => ("PAUSED", Some(Color::Red)),
        "held" => ("HELD", Some(Color::Yellow)),
        _ => ("PROGRESSING", None),
    }
}

/// A bar of `width` cells: `#` for healthy Targets, `~` for Targets updating, `!` for failed,
/// `-` for the rest.
pub fn bar(w: &WaveReport, width: usize) -> String {
    if w.total == 0 {
        return format!("[{}]", "#".repeat(width));
    }
    let cells = |n: u32| (n as usize * width).div_ceil(w.total as usize).min(width);
    let healthy = cells(w.healthy);
    let failed = cells(w.failed).min(width - healthy);
    let updating =
        cells(w.updated.saturating_sub(w.healthy + w.failed)).min(width - healthy - failed);
    let rest = width - healthy - failed - updating;
    format!(
        "[{}{}{}{}]",
        "#".repeat(healthy),
        "!".repeat(failed),
        "~".repeat(updating),
        "-".repeat(rest)
    )
}

pub fn rollout_text(r: &RolloutReport, style: Style) -> String {
    let (summary, color) = summary_text(&r.summary);
    let mut text = format!(
        "{}   {}\n",
        r.headline(),
        output_paint(summary, color, style.color)
    );
    if r.suspended {
        text.push_str("  App suspended: nothing moves until `gitfleet app resume`\n");
    }
    text.push_str(&format!("  {}\n", r.reason));
    let mut facts = Vec::new();
    if let Some(stable) = &r.stable_revision {
        facts.push(format!("stable {}", short_revision(stable)));
    }
    if let Some(git) = &r.git_revision {
        facts.push(format!("git at {}", short_revision(git)));
    }
    if let Some(started) = r.started_at.as_deref() {
        facts.push(format!("started {}", ago(started, style.now_unix)));
    }
    if let Some(by) = &r.rollback_by {
        facts.push(format!("by {by}"));
    }
    if !facts.is_empty() {
        text.push_str(&format!("  {}\n", facts.join(", ")));
    }
    text.push('\n');
    let mut table =
        output::plain_table(&["WAVE", "PROGRESS", "UPDATED", "HEALTHY", "FAILED", "STATE"]);
    for (i, w) in r.waves.iter().enumerate() {
        let color = match (w.progress.as_str(), w.failed) {
            (_, f) if f > 0 => Some(Color::Red),
            ("done", _) => Some(Color::Green),
            ("current", _) => Some(Color::Yellow),
            _ => None,
        };
        table.add_row(vec![
            Cell::new(format!("{}/{} {}", i + 1, r.waves.len(), w.name)),
            Cell::new(bar(w, 20)),
            Cell::new(format!("{}/{}", w.updated, w.total)),
            Cell::new(w.healthy),
            Cell::new(w.failed),
            output::colored(&w.progress, color, style),
        ]);
    }
    text.push_str(&output::finish(&table));
    // Targets worth a look: the current wave's, and any failed, away, held or not self-healing
    // elsewhere.
    let mut rows = Vec::new();
    for (i, w) in r.waves.iter().enumerate() {
        let current = !r.finished() && i + 1 == r.current_wave as usize;
        for t in &w.targets {
            let notable = matches!(
                t.state.as_str(),
                "failed" | "tolerated" | "disconnected" | "held"
            ) || t.detail.contains("self-heal suspended");
            if current || notable {
                rows.push((w.name.as_str(), t));
            }
        }
    }
    if !rows.is_empty() {
        text.push('\n');
        let mut table = output::plain_table(&["CLUSTER", "WAVE", "STATE", "DETAIL"]);
        for (wave, t) in rows {
            let color = match t.state.as_str() {
                "healthy" => Some(Color::Green),
                "failed" => Some(Color::Red),
                "updating" | "disconnected" | "tolerated" | "held" => Some(Color::Yellow),
                _ => None,
            };
            table.add_row(vec![
                Cell::new(&t.cluster),
                Cell::new(wave),
                output::colored(&t.state, color, style),
                Cell::new(output::dash(&t.detail)),
            ]);
        }
        text.push_str(&output::finish(&table));
    }
    text
}

fn output_paint(text: &str, color: Option<Color>, enabled: bool) -> String {
    output::paint(text, color, enabled)
}

fn ago(rfc: &str, now_unix: i64) -> String {
    output::ago(Some(rfc), now_unix)
}

/// One line for the log of `rollout status --watch` off a terminal.
pub fn rollout_line(r: &RolloutReport, now_unix: i64) -> String {
    let at = rfc3339(now_unix).unwrap_or_default();
    let waves = r
        .waves
        .iter()
        .map(|w| format!("{} {}/{}", w.name, w.healthy, w.total))
        .collect::<Vec<_>>()
        .join(", ");
    format!("{at}  {}  [{waves}]  {}\n", r.headline(), r.reason)
}

/// Where `rollout status --watch` gets the rollout from: the hub's stream (dialled again with
/// backoff when it drops; its first message is the rollout as it is then), or, from a hub
/// without it, a poll every `--interval`.
enum RolloutSource {
    Stream(Option<Box<tonic::Streaming<pb::RolloutStatus>>>),
    Poll,
}

/// The rollout's next state; `None` at the deadline.
async fn next_rollout(
    client: &mut AdminClient,
    app: &str,
    source: &mut RolloutSource,
    deadline: Option<Instant>,
    failures: &mut u32,
    seen: bool,
) -> Result<Option<pb::RolloutStatus>, CliError> {
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        let RolloutSource::Stream(open) = source else {
            return Ok(Some(client.rollout(app).await?));
        };
        let stream = match open {
            Some(stream) => stream,
            None => match client.watch_rollout(app).await {
                Ok(stream) => open.insert(Box::new(stream)),
                Err(e) => {
                    let e = CliError::from(e);
                    if watch::no_stream(&e) {
                        *source = RolloutSource::Poll;
                        continue;
                    }
                    match e {
                        CliError::Client(e) if seen || e.reconnectable() => {
                            watch::before_reconnect(Some(e), failures).await?;
                        }
                        e => return Err(e),
                    }
                    continue;
                }
            },
        };
        match watch::next_before(client, stream.as_mut(), deadline).await {
            Ok(next) => {
                *failures = 0;
                return Ok(next);
            }
            Err(ended) => {
                *open = None;
                watch::before_reconnect(ended, failures).await?;
            }
        }
    }
}

/// `rollout status --watch`: until the rollout completes (Ok), pauses or rolls back
/// ([`CliError::RolloutStopped`]) or the timeout passes.
pub(super) async fn watch(
    client: &mut AdminClient,
    args: &RolloutStatusArgs,
    format: OutputFormat,
    out: &mut (dyn Write + Send),
    out_is_terminal: bool,
    color: bool,
) -> Result<(), CliError> {
    let deadline = args.timeout.map(|t| Instant::now() + t);
    let bars = (out_is_terminal && format == OutputFormat::Table).then(WaveBars::new);
    let mut last: Option<RolloutReport> = None;
    let mut source = RolloutSource::Stream(None);
    let mut failures = 0;
    loop {
        let next = next_rollout(
            client,
            &args.app,
            &mut source,
            deadline,
            &mut failures,
            last.is_some(),
        )
        .await?;
        let (report, timed_out) = match (next, &last) {
            (Some(status), _) => (rollout_report(&status), false),
            (None, Some(last)) => (last.clone(), true),
            (None, None) => (rollout_report(&client.rollout(&args.app).await?), true),
        };
        let now = now_unix();
        if last.as_ref() != Some(&report) {
            match (&bars, format) {
                (Some(bars), _) => bars.show(&report),
                (None, OutputFormat::Json) => {
                    let mut line = serde_json::to_string(&report).expect("reports serialise");
                    line.push('\n');
                    write_out(out, &line)?;
                }
                (None, OutputFormat::Yaml) => {
                    write_out(out, &format!("---\n{}", output::to_yaml(&report)))?;
                }
                (None, OutputFormat::Table) => {
                    if last.as_ref().is_none_or(|l| l.reason != report.reason) {
                        write_out(out, &rollout_line(&report, now))?;
                    }
                }
            }
        }
        let over = report.finished() || report.stopped();
        let timed_out = !over && timed_out;
        if over || timed_out {
            if let Some(bars) = &bars {
                bars.finish();
                let style = Style {
                    color,
                    now_unix: now,
                };
                write_out(out, &rollout_text(&report, style))?;
            }
            if report.succeeded() {
                return Ok(());
            }
            return Err(CliError::RolloutStopped {
                app: report.app.clone(),
                state: if timed_out {
                    format!(
                        "still {} after {}",
                        summary_text(&report.summary).0.to_lowercase(),
                        humantime::format_duration(args.timeout.unwrap_or_default())
                    )
                } else {
                    summary_text(&report.summary).0.to_lowercase()
                },
                reason: report.reason.clone(),
            });
        }
        last = Some(report);
        if matches!(source, RolloutSource::Poll) {
            tokio::time::sleep(args.interval).await;
        }
    }
}

/// The terminal view of `rollout status --watch`: a line with the reason, one bar per wave.
struct WaveBars {
    multi: MultiProgress,
    header: ProgressBar,
    waves: std::sync::Mutex<Vec<ProgressBar>>,
}

impl WaveBars {
    fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let header = multi.add(ProgressBar::new_spinner());
        header.set_style(
            ProgressStyle::with_template("{spinner} {msg}").expect("the template is valid"),
        );
        header.enable_steady_tick(Duration::from_millis(120));
        Self {
            multi,
            header,
            waves: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn show(&self, r: &RolloutReport) {
        self.header
            .set_message(format!("{}: {}", r.headline(), r.reason));
        let mut waves = self.waves.lock().unwrap_or_else(|p| p.into_inner());
        let style = ProgressStyle::with_template(
            "  {prefix:<16} [{bar:30.green/red}] {pos:>3}/{len:<3} {msg}",
        )
        .expect("the template is valid")
        .progress_chars("#>-");
        while waves.len() < r.waves.len() {
            let bar = self.multi.add(ProgressBar::new(0));
            bar.set_style(style.clone());
            waves.push(bar);
        }
        for (i, (bar, w)) in waves.iter().zip(&r.waves).enumerate() {
            bar.set_prefix(format!("{}/{} {}", i + 1, r.waves.len(), w.name));
            bar.set_length(u64::from(w.total));
            bar.set_position(u64::from(w.healthy));
            let mut msg = format!("healthy, {} updated", w.updated);
            if w.failed > 0 {
                msg.push_str(&format!(", {} FAILED", w.failed));
            }
            msg.push_str(&format!("  {}", w.progress));
            bar.set_message(msg);
        }
    }

    fn finish(&self) {
        self.header.finish_and_clear();
        for bar in self.waves.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            bar.finish();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// rollout history

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryReport {
    pub app: String,
    pub rollouts: Vec<HistoryEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub number: u64,
    pub kind: String,
    pub revision: String,
    pub git_ref: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_by: Option<String>,
    pub outcome: String,
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub clusters: u32,
}

pub fn history_report(app: &str, records: &[pb::RolloutRecord]) -> HistoryReport {
    HistoryReport {
        app: app.to_owned(),
        rollouts: records
            .iter()
            .map(|r| HistoryEntry {
                number: r.number,
                kind: r.kind.clone(),
                revision: r.revision.clone(),
                git_ref: r.git_ref.clone(),
                rolled_back_from: non_empty(&r.rolled_back_from),
                rollback_by: non_empty(&r.rollback_by),
                outcome: r.outcome.clone(),
                started_at: rfc3339(r.started_at_unix),
                finished_at: rfc3339(r.finished_at_unix),
                clusters: r.clusters,
            })
            .collect(),
    }
}

pub fn history_table(r: &HistoryReport, style: Style) -> String {
    if r.rollouts.is_empty() {
        return format!(
            "app {} has no rollouts yet: its Repo has not been fetched\n",
            r.app
        );
    }
    let mut table = output::plain_table(&[
        "#", "KIND", "REVISION", "OUTCOME", "STARTED", "TOOK", "CLUSTERS", "NOTE",
    ]);
    for h in &r.rollouts {
        let color = match h.outcome.as_str() {
            "complete" => Some(Color::Green),
            "paused" | "replaced by a rollback" => Some(Color::Red),
            "rolled back" | "rolling back" => Some(Color::Yellow),
            _ => None,
        };
        let took = match (
            h.started_at.as_deref().and_then(output::parse_rfc3339),
            h.finished_at.as_deref().and_then(output::parse_rfc3339),
        ) {
            (Some(s), Some(f)) => output::humanize(u64::try_from(f - s).unwrap_or(0)),
            _ => "-".to_owned(),
        };
        let note = match (&h.rolled_back_from, &h.rollback_by) {
            (Some(from), Some(by)) => format!("from {} by {by}", short_revision(from)),
            (Some(from), None) => format!("from {}", short_revision(from)),
            _ => String::new(),
        };
        table.add_row(vec![
            Cell::new(h.number),
            Cell::new(&h.kind),
            Cell::new(short_revision(&h.revision)),
            output::colored(&h.outcome, color, style),
            Cell::new(
                h.started_at
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), |s| ago(s, style.now_unix)),
            ),
            Cell::new(took),
            Cell::new(h.clusters),
            Cell::new(output::dash(&note)),
        ]);
    }
    output::finish(&table)
}

// ---------------------------------------------------------------------------------------------
// app suspend / resume / sync

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppControlReport {
    pub app: String,
    pub action: String,
    pub message: String,
}

// ---------------------------------------------------------------------------------------------
// events

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsReport {
    pub events: Vec<EventReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventReport {
    pub id: u64,
    pub at: Option<String>,
    pub app: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<u64>,
    pub kind: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub by: String,
}

pub fn events_report(events: &[pb::Event]) -> EventsReport {
    EventsReport {
        events: events.iter().map(event_report).collect(),
    }
}

fn event_report(e: &pb::Event) -> EventReport {
    EventReport {
        id: e.id,
        at: rfc3339(e.at_unix),
        app: e.app.clone(),
        cluster: e.cluster.clone(),
        rollout: (e.rollout != 0).then_some(e.rollout),
        kind: e.kind.clone(),
        message: e.message.clone(),
        by: e.by.clone(),
    }
}

fn event_color(kind: &str) -> Option<Color> {
    match kind {
        "Failed" | "SyncFailed" | "Degraded" | "Missing" | "Paused" => Some(Color::Red),
        "RollbackStarted" | "Drifted" | "Suspended" | "Superseded" => Some(Color::Yellow),
        "Completed" | "Healthy" | "WaveCompleted" => Some(Color::Green),
        _ => None,
    }
}

pub fn events_table(r: &EventsReport, style: Style, header: bool) -> String {
    if r.events.is_empty() {
        return if header {
            "No events yet\n".to_owned()
        } else {
            String::new()
        };
    }
    let mut table = output::plain_table(&["AGE", "APP", "CLUSTER", "KIND", "MESSAGE"]);
    for e in &r.events {
        let age =
            e.at.as_deref()
                .map_or_else(|| "-".to_owned(), |a| ago(a, style.now_unix));
        let mut message = e.message.clone();
        if let Some(n) = e.rollout {
            message = format!("#{n} {message}");
        }
        table.add_row(vec![
            Cell::new(age),
            Cell::new(&e.app),
            Cell::new(output::dash(&e.cluster)),
            output::colored(&e.kind, event_color(&e.kind), style),
            Cell::new(message),
        ]);
    }
    let text = output::finish(&table);
    if header {
        text
    } else {
        // Followed events: rows only, the header was printed once.
        text.lines().skip(1).map(|l| format!("{l}\n")).collect()
    }
}

/// The lines `events --watch` prints for `events`: a table (its header only when `header`),
/// JSON one event per line, YAML a `---` stream.
fn event_lines(events: &[pb::Event], format: OutputFormat, color: bool, header: bool) -> String {
    let report = events_report(events);
    let style = Style {
        color,
        now_unix: now_unix(),
    };
    match format {
        OutputFormat::Table => events_table(&report, style, header),
        OutputFormat::Json => report
            .events
            .iter()
            .map(|e| format!("{}\n", serde_json::to_string(e).expect("reports serialise")))
            .collect(),
        OutputFormat::Yaml => report
            .events
            .iter()
            .map(|e| format!("---\n{}", output::to_yaml(e)))
            .collect(),
    }
}

/// `gitfleet events --watch`: the newest events, then new ones as they come, from the hub's
/// stream. A dropped stream is opened again (with backoff) from the last event printed, so
/// none is missed or printed twice; a hub without the stream is polled every `--interval`.
pub(super) async fn watch_events(
    client: &mut AdminClient,
    args: &EventsArgs,
    format: OutputFormat,
    out: &mut (dyn Write + Send),
    color: bool,
) -> Result<(), CliError> {
    let app = args.app.as_deref().unwrap_or_default();
    let cluster = args.cluster.as_deref().unwrap_or_default();
    let mut after = 0;
    let mut first = true;
    let mut failures = 0;
    loop {
        let mut stream = match client.watch_events(app, cluster, after, args.limit).await {
            Ok(s) => s,
            Err(e) => {
                let e = CliError::from(e);
                if watch::no_stream(&e) {
                    return poll_events(client, args, format, out, color).await;
                }
                match e {
                    CliError::Client(e) if !first || e.reconnectable() => {
                        watch::before_reconnect(Some(e), &mut failures).await?;
                        continue;
                    }
                    e => return Err(e),
                }
            }
        };
        let ended = loop {
            let events = match watch::next_before(client, &mut stream, None).await {
                Ok(Some(m)) => m.events,
                Ok(None) => continue,
                Err(ended) => break ended,
            };
            failures = 0;
            if let Some(last) = events.last() {
                after = after.max(last.id);
            }
            if !events.is_empty() || first {
                write_out(out, &event_lines(&events, format, color, first))?;
            }
            first = false;
        };
        watch::before_reconnect(ended, &mut failures).await?;
    }
}

/// `events --watch` against a hub without the stream: polls every `--interval`.
async fn poll_events(
    client: &mut AdminClient,
    args: &EventsArgs,
    format: OutputFormat,
    out: &mut (dyn Write + Send),
    color: bool,
) -> Result<(), CliError> {
    let app = args.app.as_deref().unwrap_or_default();
    let cluster = args.cluster.as_deref().unwrap_or_default();
    let mut after = 0;
    let mut first = true;
    loop {
        let events = client.events(app, cluster, after, args.limit).await?;
        if let Some(last) = events.last() {
            after = last.id;
        }
        if !events.is_empty() || first {
            write_out(out, &event_lines(&events, format, color, first))?;
        }
        first = false;
        tokio::time::sleep(args.interval).await;
    }
}
