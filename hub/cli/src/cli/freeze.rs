//! `gitfleet freeze …` and `gitfleet rollout start --override-freeze`: the reports these
//! commands print (pure functions from the hub's answers).

use comfy_table::{Cell, Color};
use gitfleet_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::output::{Style, colored, dash, finish, plain_table, relative, rfc3339};

#[cfg(test)]
mod tests;

/// One freeze, for `freeze list` and `freeze create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FreezeReport {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_selector: String,
    /// For people: "apps checkout; clusters env=prod", "the whole fleet".
    pub scope: String,
    pub until: Option<String>,
    /// False once it has ended (it holds nothing; kept until deleted).
    pub active: bool,
    pub reason: String,
    pub created_by: String,
    pub created: Option<String>,
    /// False when created with `--no-self-heal`: what it holds does not self-heal meanwhile.
    #[serde(default = "yes")]
    pub self_heal: bool,
}

fn yes() -> bool {
    true
}

pub fn freeze_report(f: &pb::FreezeInfo) -> FreezeReport {
    FreezeReport {
        name: f.name.clone(),
        apps: f.apps.clone(),
        projects: f.projects.clone(),
        cluster_selector: f.cluster_selector.clone(),
        scope: f.scope.clone(),
        until: rfc3339(f.until_unix),
        active: f.active,
        reason: f.reason.clone(),
        created_by: f.created_by.clone(),
        created: rfc3339(f.created_at_unix),
        self_heal: !f.no_self_heal,
    }
}

/// `freeze list -o json|yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FreezeListReport {
    pub freezes: Vec<FreezeReport>,
}

pub fn freeze_list_report(freezes: &[pb::FreezeInfo]) -> FreezeListReport {
    FreezeListReport {
        freezes: freezes.iter().map(freeze_report).collect(),
    }
}

/// NAME, SCOPE, UNTIL (with how far away, or "ended"), SELF-HEAL ("kept" or "suspended"), BY,
/// REASON.
pub fn freeze_table(report: &FreezeListReport, style: Style) -> String {
    if report.freezes.is_empty() {
        return "no freezes\n".to_owned();
    }
    let mut table = plain_table(&["NAME", "SCOPE", "UNTIL", "SELF-HEAL", "BY", "REASON"]);
    for f in &report.freezes {
        let until = f.until.as_deref().unwrap_or("-");
        let when = match f.until.as_deref().and_then(super::output::parse_rfc3339) {
            Some(t) if f.active => format!("{until} ({})", relative(t, style.now_unix)),
            Some(_) => format!("{until} (ended)"),
            None => until.to_owned(),
        };
        let color = (!f.active).then_some(Color::DarkGrey);
        table.add_row(vec![
            Cell::new(&f.name),
            Cell::new(&f.scope),
            colored(when, color, style),
            Cell::new(if f.self_heal { "kept" } else { "suspended" }),
            Cell::new(dash(&f.created_by)),
            Cell::new(&f.reason),
        ]);
    }
    finish(&table)
}

/// `freeze create`: what now holds, until when.
pub fn created_text(f: &FreezeReport, style: Style) -> String {
    let until = f.until.as_deref().unwrap_or("-");
    let when = f
        .until
        .as_deref()
        .and_then(super::output::parse_rfc3339)
        .map(|t| format!(" ({})", relative(t, style.now_unix)))
        .unwrap_or_default();
    let self_heal = if f.self_heal {
        ""
    } else {
        ", and do not self-heal"
    };
    format!(
        "freeze {} created: new revisions of {} are held until {until}{when}{self_heal}\n",
        f.name, f.scope
    )
}

/// `freeze delete -o json|yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteFreezeReport {
    pub name: String,
    pub deleted: bool,
}
