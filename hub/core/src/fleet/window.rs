//! Sync windows, pure: whether a `spec.syncWindows` entry is open at a time, until when, and
//! when it opens next. Argo CD's semantics: a window opens at each time its cron `schedule`
//! names (read in its `timeZone`) and stays open for `duration`; windows whose openings overlap
//! or touch are one long window.

use std::str::FromStr as _;
use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::resources::{SyncWindow, SyncWindowKind};

#[cfg(test)]
mod tests;

/// The shortest and longest a window may stay open.
pub const MIN_DURATION: Duration = Duration::from_secs(60);
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// How many consecutive overlapping openings are followed to find where a window ends: past
/// that, the end found so far is reported (the rollout is decided again then, and looks
/// further). `* * * * *` with a 10h duration is 600 of them.
const MAX_MERGED_OPENINGS: usize = 2000;

/// A window's fields that are wrong, each with the field (relative to the window) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowProblem {
    /// `schedule`, `duration` or `timeZone`.
    pub field: &'static str,
    pub message: String,
}

/// A sync window ready to be evaluated.
#[derive(Debug, Clone)]
pub struct CompiledWindow {
    pub kind: SyncWindowKind,
    cron: Cron,
    tz: Tz,
    duration: i64,
    /// For people: `'0 14 * * 5' (10h, Europe/Berlin)`.
    pub label: String,
}

/// A window at one time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    /// Open now, until this time (excluded).
    Open { until: i64 },
    /// Closed now; opens at this time (`None`: the schedule names no time in the next years).
    Closed { opens: Option<i64> },
}

/// Parses a 5-field cron schedule (minute hour day-of-month month day-of-week, POSIX/Vixie).
pub fn parse_schedule(schedule: &str) -> Result<Cron, String> {
    let fields = schedule.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "{schedule:?} has {fields} fields; a schedule has 5 (minute hour day-of-month month \
             day-of-week, like \"0 14 * * 5\")"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(schedule)
        .map_err(|e| format!("{schedule:?} is not a cron schedule: {e}"))
}

/// Parses an IANA time zone name (`Europe/Berlin`, `UTC`).
pub fn parse_time_zone(name: &str) -> Result<Tz, String> {
    Tz::from_str(name).map_err(|_| {
        format!("{name:?} is not an IANA time zone (like \"UTC\" or \"Europe/Berlin\")")
    })
}

impl CompiledWindow {
    /// Checks and compiles a window, naming the field that is wrong.
    pub fn compile(w: &SyncWindow) -> Result<Self, WindowProblem> {
        let cron = parse_schedule(&w.schedule).map_err(|message| WindowProblem {
            field: "schedule",
            message,
        })?;
        if w.duration < MIN_DURATION || w.duration > MAX_DURATION {
            return Err(WindowProblem {
                field: "duration",
                message: format!(
                    "{} is out of range: a window stays open at least 1m and at most 366d",
                    humantime_text(w.duration)
                ),
            });
        }
        let zone = w.time_zone.as_deref().unwrap_or("UTC");
        let tz = parse_time_zone(zone).map_err(|message| WindowProblem {
            field: "timeZone",
            message,
        })?;
        let duration = i64::try_from(w.duration.as_secs()).unwrap_or(i64::MAX);
        Ok(Self {
            kind: w.kind,
            cron,
            tz,
            duration,
            label: format!(
                "'{}' ({}, {zone})",
                w.schedule.split_whitespace().collect::<Vec<_>>().join(" "),
                humantime_text(w.duration)
            ),
        })
    }

    fn at(&self, t: i64) -> Option<DateTime<Tz>> {
        DateTime::<Utc>::from_timestamp(t, 0).map(|u| self.tz.from_utc_datetime(&u.naive_utc()))
    }

    /// The last opening at or before `t`.
    fn previous_opening(&self, t: i64) -> Option<i64> {
        let at = self.at(t)?;
        self.cron
            .find_previous_occurrence(&at, true)
            .ok()
            .map(|d| d.timestamp())
    }

    /// The first opening after `t`.
    fn next_opening(&self, t: i64) -> Option<i64> {
        let at = self.at(t)?;
        self.cron
            .find_next_occurrence(&at, false)
            .ok()
            .map(|d| d.timestamp())
    }

    /// Whether the window is open at `now`, and until when or when it opens next.
    pub fn state(&self, now: i64) -> WindowState {
        // Every opening lasts as long, so the last one at or before `now` ends last.
        let Some(last) = self.previous_opening(now) else {
            return WindowState::Closed {
                opens: self.next_opening(now),
            };
        };
        let mut until = last.saturating_add(self.duration);
        if until <= now {
            return WindowState::Closed {
                opens: self.next_opening(now),
            };
        }
        // Openings before this one ends extend it.
        let mut from = last;
        for _ in 0..MAX_MERGED_OPENINGS {
            match self.next_opening(from) {
                Some(next) if next <= until => {
                    until = next.saturating_add(self.duration);
                    from = next;
                }
                _ => break,
            }
        }
        WindowState::Open { until }
    }
}

/// `10h`, `1h 30m`, `2days`: how humantime writes it, which is also what it reads.
fn humantime_text(d: Duration) -> String {
    humantime_serde::re::humantime::format_duration(d).to_string()
}

/// A time for people, in UTC: `2026-12-07 06:00 UTC` (with seconds when it has any).
pub fn utc_text(t: i64) -> String {
    match Utc.timestamp_opt(t, 0).single() {
        Some(d) if t % 60 == 0 => d.format("%Y-%m-%d %H:%M UTC").to_string(),
        Some(d) => d.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => format!("{t} (unix)"),
    }
}
