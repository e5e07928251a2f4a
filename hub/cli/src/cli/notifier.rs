//! `gitfleet notifier list`: the report it prints (pure functions from the hub's answer).

use comfy_table::{Cell, Color};
use gitfleet_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::output::{Style, colored, dash, finish, plain_table, relative, rfc3339};

/// One Notifier and what its deliveries did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifierReport {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub project: String,
    pub sink: String,
    pub events: Vec<String>,
    /// The idempotency key of the last delivery a receiver accepted, and when.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_delivery: String,
    pub last_delivery_at: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    pub last_error_at: Option<String>,
    pub pending: u64,
    pub delivered: u64,
    pub given_up: u64,
    pub next_attempt_at: Option<String>,
    #[serde(skip)]
    last_delivery_unix: i64,
    #[serde(skip)]
    last_error_unix: i64,
}

pub fn notifier_report(n: &pb::NotifierInfo) -> NotifierReport {
    NotifierReport {
        name: n.name.clone(),
        project: n.project.clone(),
        sink: n.sink.clone(),
        events: n.events.clone(),
        last_delivery: n.last_delivery.clone(),
        last_delivery_at: rfc3339(n.last_delivery_unix),
        last_error: n.last_error.clone(),
        last_error_at: rfc3339(n.last_error_unix),
        pending: n.pending,
        delivered: n.delivered,
        given_up: n.given_up,
        next_attempt_at: rfc3339(n.next_attempt_unix),
        last_delivery_unix: n.last_delivery_unix,
        last_error_unix: n.last_error_unix,
    }
}

/// `notifier list -o json|yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifierListReport {
    pub notifiers: Vec<NotifierReport>,
}

pub fn notifier_list_report(notifiers: &[pb::NotifierInfo]) -> NotifierListReport {
    NotifierListReport {
        notifiers: notifiers.iter().map(notifier_report).collect(),
    }
}

/// NAME, SINK, EVENTS, LAST DELIVERY (how long ago), LAST ERROR (red, with how long ago),
/// PENDING (with how many were given up).
pub fn notifier_table(report: &NotifierListReport, style: Style) -> String {
    if report.notifiers.is_empty() {
        return "no notifiers\n".to_owned();
    }
    let mut table = plain_table(&[
        "NAME",
        "SINK",
        "EVENTS",
        "LAST DELIVERY",
        "LAST ERROR",
        "PENDING",
    ]);
    for n in &report.notifiers {
        let name = if n.project.is_empty() {
            n.name.clone()
        } else {
            format!("{} (project {})", n.name, n.project)
        };
        let delivered = match n.last_delivery_unix {
            0 => "never".to_owned(),
            t => relative(t, style.now_unix),
        };
        let error = match n.last_error_unix {
            0 => dash(&n.last_error),
            t => format!("{} ({})", n.last_error, relative(t, style.now_unix)),
        };
        let pending = if n.given_up == 0 {
            n.pending.to_string()
        } else {
            format!("{} ({} given up)", n.pending, n.given_up)
        };
        let failing = !n.last_error.is_empty();
        table.add_row(vec![
            Cell::new(name),
            Cell::new(&n.sink),
            Cell::new(n.events.join(",")),
            Cell::new(delivered),
            colored(error, failing.then_some(Color::Red), style),
            colored(
                pending,
                (n.given_up > 0 || n.pending > 0).then_some(Color::Yellow),
                style,
            ),
        ]);
    }
    finish(&table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> pb::NotifierInfo {
        pb::NotifierInfo {
            name: "ops".into(),
            sink: "webhook https://hooks.example.com/gitfleet".into(),
            events: vec!["RolloutStarted".into(), "RolloutCompleted".into()],
            last_delivery: "ops/41".into(),
            last_delivery_unix: 1_000,
            last_error: "ops/42: attempt 2 failed (trying again in 4s): HTTP 503".into(),
            last_error_unix: 1_050,
            pending: 1,
            delivered: 7,
            given_up: 1,
            next_attempt_unix: 1_054,
            ..Default::default()
        }
    }

    fn style() -> Style {
        Style {
            color: false,
            now_unix: 1_060,
        }
    }

    #[test]
    fn the_table_shows_last_delivery_last_error_and_what_waits() {
        let table = notifier_table(&notifier_list_report(&[info()]), style());
        let lines: Vec<&str> = table.lines().collect();
        for column in [
            "NAME",
            "SINK",
            "EVENTS",
            "LAST DELIVERY",
            "LAST ERROR",
            "PENDING",
        ] {
            assert!(lines[0].contains(column), "{table}");
        }
        for cell in [
            "ops",
            "webhook https://hooks.example.com/gitfleet",
            "RolloutStarted,RolloutCompleted",
            "1m ago",
            "HTTP 503 (10s ago)",
            "1 (1 given up)",
        ] {
            assert!(lines[1].contains(cell), "{cell}: {table}");
        }
        assert_eq!(
            notifier_table(&notifier_list_report(&[]), style()),
            "no notifiers\n"
        );
    }

    #[test]
    fn a_notifier_that_never_delivered_says_so_and_a_projects_says_which() {
        let n = pb::NotifierInfo {
            name: "team".into(),
            project: "team-a".into(),
            sink: "slack".into(),
            events: vec!["TargetDegraded".into()],
            ..Default::default()
        };
        let table = notifier_table(&notifier_list_report(&[n]), style());
        assert!(table.contains("team (project team-a)"), "{table}");
        assert!(table.contains("never"), "{table}");
    }

    #[test]
    fn json_carries_times_and_counts() {
        let report = notifier_list_report(&[info()]);
        let json = serde_json::to_value(&report).unwrap();
        let n = &json["notifiers"][0];
        assert_eq!(n["lastDelivery"], "ops/41");
        assert_eq!(n["lastDeliveryAt"], "1970-01-01T00:16:40Z");
        assert_eq!(n["pending"], 1);
        assert_eq!(n["givenUp"], 1);
        assert_eq!(n["delivered"], 7);
        assert_eq!(n["nextAttemptAt"], "1970-01-01T00:17:34Z");
        assert!(n.get("lastDeliveryUnix").is_none());
    }
}
