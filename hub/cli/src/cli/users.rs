//! `gitfleet user …`, `gitfleet whoami` and `gitfleet audit`: the credentials file a new user
//! gets, and the reports these commands print (pure functions from the hub's answers).

use comfy_table::{Cell, Color};
use gitfleet_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::output::{Style, colored, dash, finish, plain_table, relative, rfc3339};
use crate::client::config::{ClientConfig, Context};

#[cfg(test)]
mod tests;

/// The credentials file of a user the hub just created: one context with the hub's address and
/// CA as the creator's context has them, and the new certificate and key. Named `NAME@CONTEXT`
/// (`gitfleet config import --name` renames it).
pub fn credentials(creator: &Context, response: &pb::CreateUserResponse) -> ClientConfig {
    let name = response.user.as_ref().map_or("", |u| u.name.as_str());
    ClientConfig::single(Context {
        name: format!("{name}@{}", creator.name),
        server: creator.server.clone(),
        certificate_authority_data: response.ca_pem.clone(),
        client_certificate_data: response.certificate_pem.clone(),
        client_key_data: response.private_key_pem.clone(),
        tls_server_name: creator.tls_server_name.clone(),
    })
}

/// One user, for `user list` and `user create -f`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserReport {
    pub name: String,
    pub role: String,
    pub projects: Vec<String>,
    pub expires: Option<String>,
    /// "active", "revoked" or "expired".
    pub status: String,
    pub created_by: String,
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revoked_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
    /// Where `user create -f` wrote the credentials file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<String>,
}

pub fn user_report(u: &pb::UserInfo) -> UserReport {
    UserReport {
        name: u.name.clone(),
        role: u.role.clone(),
        projects: u.projects.clone(),
        expires: rfc3339(u.expires_at_unix),
        status: u.status.clone(),
        created_by: u.created_by.clone(),
        created: rfc3339(u.created_at_unix),
        revoked_by: u.revoked_by.clone(),
        revoked: rfc3339(u.revoked_at_unix),
        credentials_file: None,
    }
}

/// `user create -f FILE`: what was created and where the file is.
pub fn created_text(report: &UserReport, file: &str) -> String {
    format!(
        "user {} created ({}{}, expires {}); credentials written to {file} (the only copy of its key): `gitfleet config import {file}`\n",
        report.name,
        report.role,
        projects_suffix(report),
        report.expires.as_deref().unwrap_or("never"),
    )
}

fn projects_suffix(report: &UserReport) -> String {
    if report.role == "operator" {
        let projects = if report.projects.is_empty() {
            "default".to_owned()
        } else {
            report.projects.join(", ")
        };
        format!(" of {projects}")
    } else {
        String::new()
    }
}

/// `user list -o json|yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserListReport {
    pub users: Vec<UserReport>,
}

pub fn user_list_report(users: &[pb::UserInfo]) -> UserListReport {
    UserListReport {
        users: users.iter().map(user_report).collect(),
    }
}

pub fn user_table(report: &UserListReport, style: Style) -> String {
    let mut table = plain_table(&[
        "NAME",
        "ROLE",
        "PROJECTS",
        "EXPIRES",
        "STATUS",
        "CREATED-BY",
    ]);
    for u in &report.users {
        let projects = match (u.role.as_str(), u.projects.is_empty()) {
            ("operator", true) => "default".to_owned(),
            ("operator", false) => u.projects.join(","),
            ("admin", _) => "*".to_owned(),
            _ => "-".to_owned(),
        };
        let expires = u
            .expires
            .as_deref()
            .and_then(super::output::parse_rfc3339)
            .map_or_else(|| "-".to_owned(), |t| relative(t, style.now_unix));
        let status_color = match u.status.as_str() {
            "active" => None,
            _ => Some(Color::Red),
        };
        table.add_row(vec![
            Cell::new(&u.name),
            Cell::new(&u.role),
            Cell::new(projects),
            Cell::new(expires),
            colored(&u.status, status_color, style),
            Cell::new(dash(&u.created_by)),
        ]);
    }
    finish(&table)
}

/// `whoami -o json|yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WhoamiReport {
    pub name: String,
    pub role: String,
    pub projects: Vec<String>,
    pub certificate_expires: Option<String>,
}

pub fn whoami_report(w: &pb::WhoamiResponse) -> WhoamiReport {
    WhoamiReport {
        name: w.name.clone(),
        role: w.role.clone(),
        projects: w.projects.clone(),
        certificate_expires: rfc3339(w.certificate_expires_unix),
    }
}

pub fn whoami_text(report: &WhoamiReport, server: &str, style: Style) -> String {
    let projects = match report.role.as_str() {
        "admin" => "all".to_owned(),
        "operator" => report.projects.join(", "),
        _ => "none (read only)".to_owned(),
    };
    let expires = match report
        .certificate_expires
        .as_deref()
        .and_then(super::output::parse_rfc3339)
    {
        Some(t) => format!(
            "{} ({})",
            report.certificate_expires.as_deref().unwrap_or_default(),
            relative(t, style.now_unix)
        ),
        None => "-".to_owned(),
    };
    format!(
        "user:         {}\nrole:         {}\nprojects:     {projects}\ncertificate:  expires {expires}\nhub:          {server}\n",
        report.name, report.role
    )
}

/// `version -o json|yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionReport {
    pub client_version: String,
    /// Absent with `--client`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_version: Option<String>,
    /// The hub's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
}

pub fn version_text(report: &VersionReport) -> String {
    let mut out = format!("Client Version: {}\n", report.client_version);
    if let Some(hub) = &report.hub_version {
        out.push_str(&format!(
            "Hub Version:    {hub} ({})\n",
            report.hub.as_deref().unwrap_or("-")
        ));
    }
    out
}

/// `audit -o json|yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditReport {
    pub entries: Vec<AuditEntryReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntryReport {
    pub id: u64,
    pub time: Option<String>,
    pub user: String,
    pub action: String,
    pub target: String,
    /// "ok", "denied", "failed" or "unanswered".
    pub outcome: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

pub fn audit_report(entries: &[pb::AuditEntry]) -> AuditReport {
    AuditReport {
        entries: entries
            .iter()
            .map(|e| AuditEntryReport {
                id: e.id,
                time: rfc3339(e.at_unix),
                user: e.user.clone(),
                action: e.action.clone(),
                target: e.target.clone(),
                outcome: e.outcome.clone(),
                message: e.message.clone(),
            })
            .collect(),
    }
}

pub fn audit_table(report: &AuditReport, style: Style) -> String {
    if report.entries.is_empty() {
        return "No audit entries match\n".to_owned();
    }
    let mut table = plain_table(&["TIME", "USER", "ACTION", "TARGET", "RESULT"]);
    for e in &report.entries {
        let (result, color) = match e.outcome.as_str() {
            "ok" => ("ok".to_owned(), None),
            other if e.message.is_empty() => (other.to_owned(), Some(Color::Red)),
            other => (format!("{other}: {}", e.message), Some(Color::Red)),
        };
        table.add_row(vec![
            Cell::new(e.time.as_deref().unwrap_or("-")),
            Cell::new(&e.user),
            Cell::new(&e.action),
            Cell::new(dash(&e.target)),
            colored(result, color, style),
        ]);
    }
    finish(&table)
}

/// `user revoke -o json|yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokeUserReport {
    pub name: String,
    pub revoked: bool,
}

/// `dashboard -o json|yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DashboardReport {
    pub url: String,
    pub expires: Option<String>,
}

pub fn dashboard_report(r: &pb::CreateDashboardSigninResponse) -> DashboardReport {
    DashboardReport {
        url: r.url.clone(),
        expires: rfc3339(r.expires_at_unix),
    }
}

pub fn dashboard_text(report: &DashboardReport, style: Style) -> String {
    let expires = report
        .expires
        .as_deref()
        .and_then(super::output::parse_rfc3339)
        .map(|t| format!(" (expires {})", relative(t, style.now_unix)))
        .unwrap_or_default();
    format!(
        "Open this link to sign in to the dashboard; it works once{expires}:\n{}\n",
        report.url
    )
}
