//! `gitfleet status --watch` and `--wait`: poll the hub, print what changed, stop when every
//! Target has converged (with `--wait`) or the timeout passes.

use std::io::Write;

use tokio::time::Instant;

use super::args::{OutputFormat, StatusArgs};
use super::output::{self, StatusReport, Style};
use super::{CliError, now_unix, write_out};
use crate::client::AdminClient;

/// Moves the cursor home and clears the screen, so a terminal shows one live table.
const CLEAR: &str = "\u{1b}[H\u{1b}[2J";

pub(super) async fn status(
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

/// One update of `--watch`: on a terminal the screen is redrawn; elsewhere each table follows the
/// last, and JSON is one compact document per line (JSON Lines), YAML a `---` stream.
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
