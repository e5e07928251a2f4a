use chrono::NaiveDateTime;

use super::*;

/// Unix seconds of a UTC wall time `YYYY-MM-DD HH:MM`.
fn utc(s: &str) -> i64 {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
        .expect("test time")
        .and_utc()
        .timestamp()
}

fn window(kind: SyncWindowKind, schedule: &str, duration: &str, tz: Option<&str>) -> SyncWindow {
    SyncWindow {
        kind,
        schedule: schedule.into(),
        duration: humantime_serde::re::humantime::parse_duration(duration).expect("duration"),
        time_zone: tz.map(Into::into),
        cluster_selector: None,
        self_heal: true,
    }
}

fn deny(schedule: &str, duration: &str, tz: Option<&str>) -> CompiledWindow {
    CompiledWindow::compile(&window(SyncWindowKind::Deny, schedule, duration, tz))
        .expect("a valid window")
}

#[test]
fn a_window_is_open_from_its_opening_for_its_duration_and_closed_at_its_end() {
    // Fridays 14:00 UTC for 10h. 2026-12-04 is a Friday.
    let w = deny("0 14 * * 5", "10h", None);
    assert_eq!(w.label, "'0 14 * * 5' (10h, UTC)");
    assert_eq!(
        w.state(utc("2026-12-04 13:59")),
        WindowState::Closed {
            opens: Some(utc("2026-12-04 14:00"))
        }
    );
    assert_eq!(
        w.state(utc("2026-12-04 14:00")),
        WindowState::Open {
            until: utc("2026-12-05 00:00")
        },
        "open from its first second"
    );
    assert_eq!(
        w.state(utc("2026-12-04 23:59")),
        WindowState::Open {
            until: utc("2026-12-05 00:00")
        }
    );
    assert_eq!(
        w.state(utc("2026-12-05 00:00")),
        WindowState::Closed {
            opens: Some(utc("2026-12-11 14:00"))
        },
        "closed at its end, next Friday next"
    );
}

#[test]
fn a_window_spanning_midnight_is_open_on_both_days() {
    // Every day 22:00 for 4h: until 02:00 the next day.
    let w = deny("0 22 * * *", "4h", None);
    assert_eq!(
        w.state(utc("2026-12-05 01:30")),
        WindowState::Open {
            until: utc("2026-12-05 02:00")
        }
    );
    assert_eq!(
        w.state(utc("2026-12-05 02:00")),
        WindowState::Closed {
            opens: Some(utc("2026-12-05 22:00"))
        }
    );
}

#[test]
fn the_schedule_is_read_in_its_time_zone() {
    // 14:00 in Berlin is 13:00 UTC in winter (CET, +1).
    let w = deny("0 14 * * 5", "10h", Some("Europe/Berlin"));
    assert_eq!(
        w.state(utc("2026-12-04 13:30")),
        WindowState::Open {
            until: utc("2026-12-04 23:00")
        }
    );
    // And 12:00 UTC in summer (CEST, +2): 2026-07-03 is a Friday.
    assert_eq!(
        w.state(utc("2026-07-03 12:00")),
        WindowState::Open {
            until: utc("2026-07-03 22:00")
        }
    );
}

#[test]
fn dst_a_nightly_window_in_the_skipped_hour_still_opens_and_a_repeated_hour_opens_once() {
    // Berlin springs forward on 2026-03-29 at 02:00 CET → 03:00 CEST: 02:30 does not exist
    // that night. The window must not be lost for the night (croner runs it at the first
    // time after the gap), and it lasts its full hour from then.
    let w = deny("30 2 * * *", "1h", Some("Europe/Berlin"));
    let state = w.state(utc("2026-03-29 01:10")); // 03:10 CEST
    let WindowState::Open { until } = state else {
        panic!("the skipped opening still opens: {state:?}");
    };
    assert!(
        until > utc("2026-03-29 01:10") && until <= utc("2026-03-29 01:30") + 3600,
        "until {}",
        utc_text(until)
    );
    // The night before and after as usual: 02:30 CET = 01:30 UTC; 02:30 CEST = 00:30 UTC.
    assert_eq!(
        w.state(utc("2026-03-28 01:45")),
        WindowState::Open {
            until: utc("2026-03-28 02:30")
        }
    );
    assert_eq!(
        w.state(utc("2026-03-30 00:45")),
        WindowState::Open {
            until: utc("2026-03-30 01:30")
        }
    );
    // Falling back on 2026-10-25, 03:00 CEST → 02:00 CET: 02:30 happens twice. One hour of
    // window from the first 02:30 (00:30 UTC); whatever the second does, the window is never
    // open for more than two hours that night and is closed by 02:30 UTC.
    let first = utc("2026-10-25 00:30");
    assert!(matches!(w.state(first), WindowState::Open { .. }));
    assert!(matches!(
        w.state(utc("2026-10-25 02:30")),
        WindowState::Closed { .. }
    ));
}

#[test]
fn overlapping_openings_are_one_window_and_its_end_is_the_last_ones() {
    // Every minute for 10 minutes: open all the time, the end always 10 minutes after the
    // latest opening found (bounded).
    let w = deny("* * * * *", "10m", None);
    let now = utc("2026-12-04 12:00");
    let WindowState::Open { until } = w.state(now) else {
        panic!("open");
    };
    assert!(
        until > now + 600,
        "merged past one opening: {}",
        utc_text(until)
    );
    // Every hour for 1h: each opening touches the next, one endless window, bounded search.
    let w = deny("0 * * * *", "1h", None);
    let WindowState::Open { until } = w.state(now) else {
        panic!("open");
    };
    assert!(until >= now + 3600 * 24, "{}", utc_text(until));
}

#[test]
fn a_schedule_that_never_fires_is_never_open() {
    let w = deny("0 0 31 2 *", "1h", None);
    assert!(matches!(
        w.state(utc("2026-12-04 12:00")),
        WindowState::Closed { opens: None }
    ));
}

#[test]
fn bad_windows_name_the_field() {
    let problem = |w: SyncWindow| CompiledWindow::compile(&w).expect_err("refused");
    let p = problem(window(SyncWindowKind::Deny, "0 14 * *", "1h", None));
    assert_eq!(p.field, "schedule");
    assert!(p.message.contains("4 fields"), "{}", p.message);
    let p = problem(window(SyncWindowKind::Deny, "0 14 * * * *", "1h", None));
    assert_eq!(p.field, "schedule", "6 fields (seconds) refused");
    let p = problem(window(SyncWindowKind::Deny, "61 14 * * *", "1h", None));
    assert_eq!(p.field, "schedule");
    let p = problem(window(SyncWindowKind::Deny, "0 14 * * 5", "30s", None));
    assert_eq!(p.field, "duration");
    let p = problem(window(SyncWindowKind::Deny, "0 14 * * 5", "400d", None));
    assert_eq!(p.field, "duration");
    let p = problem(window(
        SyncWindowKind::Deny,
        "0 14 * * 5",
        "1h",
        Some("Europe/Berlinn"),
    ));
    assert_eq!(p.field, "timeZone");
    assert!(p.message.contains("Europe/Berlinn"), "{}", p.message);
}

#[test]
fn times_for_people_are_utc_with_seconds_only_when_there_are_some() {
    assert_eq!(utc_text(utc("2026-12-07 06:00")), "2026-12-07 06:00 UTC");
    assert_eq!(
        utc_text(utc("2026-12-07 06:00") + 5),
        "2026-12-07 06:00:05 UTC"
    );
}

#[test]
fn dst_an_opening_in_the_repeated_hour_happens_once() {
    // 2026-10-25 in Berlin: 03:00 CEST → 02:00 CET; 02:30 is 00:30 UTC, then 01:30 UTC again.
    let w = deny("30 2 * * *", "30m", Some("Europe/Berlin"));
    assert_eq!(
        w.state(utc("2026-10-25 00:45")),
        WindowState::Open {
            until: utc("2026-10-25 01:00")
        }
    );
    assert!(
        matches!(w.state(utc("2026-10-25 01:45")), WindowState::Closed { .. }),
        "{:?}",
        w.state(utc("2026-10-25 01:45"))
    );
}
