//! Who may do what through the admin API: a user's role × the action × the Project it touches
//! → allowed, or a denial that says which role would be needed.
//!
//! - `viewer` reads: resources, status, clusters, events, rollouts, `diff --live`, and `whoami`.
//! - `operator` reads, and applies, deletes and steers Apps and their rollouts inside its
//!   Projects (`default` when it was given none).
//! - `admin` does everything: Repos, ClusterGroups, users, tokens, clusters, the audit log,
//!   freezes and overriding them (`rollout start --override-freeze`).
//!
//! The audit log is admin only: it records every team's calls across all Projects, and access
//! management (user names, token ids, denied attempts), which is the platform team's business.

use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// The Project of an App that names none, and the one an operator given no Project operates.
pub use crate::resources::DEFAULT_PROJECT;

/// What a user may do, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The user a call comes from, as its record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub name: String,
    pub role: Role,
    /// The Projects an operator works in, as given (empty: [`DEFAULT_PROJECT`]).
    pub projects: Vec<String>,
}

impl Subject {
    /// The Projects this user may change Apps in (an operator's; an admin's are all, a
    /// viewer's none, and neither is listed).
    pub fn operated_projects(&self) -> Vec<String> {
        if self.projects.is_empty() {
            vec![DEFAULT_PROJECT.to_owned()]
        } else {
            self.projects.clone()
        }
    }
}

/// Every call of the admin API, by what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    // Reads: any role.
    Get,
    Status,
    ListClusters,
    ListPendingClusters,
    ListEvents,
    RolloutStatus,
    RolloutHistory,
    Whoami,
    /// Fetch a Repo now: a read, as Argo CD's refresh (see the RPC).
    RefreshRepo,
    /// `notifier list`: Notifiers and their deliveries (never a secret).
    ListNotifiers,
    /// `gitfleet diff --live`: the spokes render and dry-run apply an App, changing nothing;
    /// a read like `status` (Secret values are masked).
    DiffLive,
    /// `gitfleet dashboard`: a sign-in link to the web dashboard as oneself, with one's own
    /// role. Any role; audited (it starts a session).
    DashboardSignin,
    // Changes to Apps and their rollouts: an operator of the App's Project, or an admin. An
    // `Apply` or `Delete` of anything but an App is the admins'.
    Apply,
    Delete,
    PauseRollout,
    ResumeRollout,
    PromoteRollout,
    RollbackRollout,
    SuspendApp,
    ResumeApp,
    SyncApp,
    // The admins'.
    CreateToken,
    ListTokens,
    RevokeToken,
    ApproveCluster,
    RevokeCluster,
    LabelCluster,
    CreateUser,
    ListUsers,
    RevokeUser,
    ListAudit,
    /// Freezes: anyone reads them; creating and deleting one is the admins' (a freeze may
    /// hold every team's Apps, and an operator's Projects are not a scope a freeze is bound
    /// to).
    ListFreezes,
    CreateFreeze,
    DeleteFreeze,
    /// `rollout start --override-freeze`: the admins' alone, whatever the App's Project.
    OverrideFreeze,
}

/// What an action needs, in the order roles grant it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    Read,
    /// An operator of the Project touched (an admin when it touches no Project).
    Project,
    Admin,
}

impl Action {
    /// The action as the audit log names it (the CLI's words).
    pub const fn name(self) -> &'static str {
        match self {
            Action::Get => "get",
            Action::Status => "status",
            Action::ListClusters => "cluster list",
            Action::ListPendingClusters => "cluster pending",
            Action::ListEvents => "events",
            Action::RolloutStatus => "rollout status",
            Action::RolloutHistory => "rollout history",
            Action::Whoami => "whoami",
            Action::RefreshRepo => "repo refresh",
            Action::ListNotifiers => "notifier list",
            Action::DiffLive => "diff --live",
            Action::DashboardSignin => "dashboard",
            Action::Apply => "apply",
            Action::Delete => "delete",
            Action::PauseRollout => "rollout pause",
            Action::ResumeRollout => "rollout resume",
            Action::PromoteRollout => "rollout promote",
            Action::RollbackRollout => "rollout rollback",
            Action::SuspendApp => "app suspend",
            Action::ResumeApp => "app resume",
            Action::SyncApp => "app sync",
            Action::CreateToken => "token create",
            Action::ListTokens => "token list",
            Action::RevokeToken => "token revoke",
            Action::ApproveCluster => "cluster approve",
            Action::RevokeCluster => "cluster revoke",
            Action::LabelCluster => "cluster label",
            Action::CreateUser => "user create",
            Action::ListUsers => "user list",
            Action::RevokeUser => "user revoke",
            Action::ListAudit => "audit",
            Action::ListFreezes => "freeze list",
            Action::CreateFreeze => "freeze create",
            Action::DeleteFreeze => "freeze delete",
            Action::OverrideFreeze => "rollout start --override-freeze",
        }
    }

    /// The action in a sentence: "alice cannot {verb}".
    const fn verb(self) -> &'static str {
        match self {
            Action::Get => "get resources",
            Action::Status => "read status",
            Action::ListClusters => "list clusters",
            Action::ListPendingClusters => "list pending clusters",
            Action::ListEvents => "read events",
            Action::RolloutStatus => "read rollouts",
            Action::RolloutHistory => "read rollout history",
            Action::Whoami => "ask whoami",
            Action::RefreshRepo => "refresh repos",
            Action::ListNotifiers => "list notifiers",
            Action::DiffLive => "diff Apps against their clusters",
            Action::DashboardSignin => "sign in to the dashboard",
            Action::Apply => "apply",
            Action::Delete => "delete",
            Action::PauseRollout => "pause rollouts",
            Action::ResumeRollout => "resume rollouts",
            Action::PromoteRollout => "promote rollouts",
            Action::RollbackRollout => "roll back",
            Action::SuspendApp => "suspend apps",
            Action::ResumeApp => "resume apps",
            Action::SyncApp => "sync apps",
            Action::CreateToken => "create tokens",
            Action::ListTokens => "list tokens",
            Action::RevokeToken => "revoke tokens",
            Action::ApproveCluster => "approve clusters",
            Action::RevokeCluster => "revoke clusters",
            Action::LabelCluster => "label clusters",
            Action::CreateUser => "create users",
            Action::ListUsers => "list users",
            Action::RevokeUser => "revoke users",
            Action::ListAudit => "read the audit log",
            Action::ListFreezes => "list freezes",
            Action::CreateFreeze => "create freezes",
            Action::DeleteFreeze => "delete freezes",
            Action::OverrideFreeze => "override freezes and sync windows",
        }
    }

    const fn needs(self) -> Needs {
        match self {
            Action::Get
            | Action::Status
            | Action::ListClusters
            | Action::ListPendingClusters
            | Action::ListEvents
            | Action::RolloutStatus
            | Action::RolloutHistory
            | Action::Whoami
            | Action::RefreshRepo
            | Action::ListNotifiers
            | Action::DiffLive
            | Action::DashboardSignin
            | Action::ListFreezes => Needs::Read,
            Action::Apply
            | Action::Delete
            | Action::PauseRollout
            | Action::ResumeRollout
            | Action::PromoteRollout
            | Action::RollbackRollout
            | Action::SuspendApp
            | Action::ResumeApp
            | Action::SyncApp => Needs::Project,
            Action::CreateToken
            | Action::ListTokens
            | Action::RevokeToken
            | Action::ApproveCluster
            | Action::RevokeCluster
            | Action::LabelCluster
            | Action::CreateUser
            | Action::ListUsers
            | Action::RevokeUser
            | Action::ListAudit
            | Action::CreateFreeze
            | Action::DeleteFreeze
            | Action::OverrideFreeze => Needs::Admin,
        }
    }

    /// Whether the action changes anything (and so is written to the audit log). A dry-run
    /// apply is audited too: it is an apply as far as who tried what goes.
    pub const fn mutates(self) -> bool {
        !matches!(self.needs(), Needs::Read)
            && !matches!(
                self,
                Action::ListTokens | Action::ListUsers | Action::ListAudit
            )
    }
}

/// What an action touches, for the decision and the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Whatever the action is about in general, before its target is known: can this user do
    /// it to anything at all?
    Any,
    /// Something in no Project (a Repo, a ClusterGroup, a cluster, a user), named for the
    /// message (`Repo "shop" (fleet.yaml#1)`).
    Fleet { what: &'a str },
    /// An App (named for the message) in a Project.
    Project { what: &'a str, project: &'a str },
}

/// Why a call is refused; the message is what the caller sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("permission denied: {role} {user} cannot {verb}{what} ({needed})")]
pub struct Denied {
    pub user: String,
    pub role: Role,
    verb: &'static str,
    /// " App \"web\" of Project \"team-b\"", or empty.
    what: String,
    /// "operator or admin required", or which operator would do.
    needed: String,
}

/// May `subject` do `action` to what `scope` names?
pub fn authorize(subject: &Subject, action: Action, scope: Scope<'_>) -> Result<(), Denied> {
    let deny = |what: String, needed: String| {
        Err(Denied {
            user: subject.name.clone(),
            role: subject.role,
            verb: action.verb(),
            what,
            needed,
        })
    };
    let what = match scope {
        Scope::Any => String::new(),
        Scope::Fleet { what } => format!(" {what}"),
        Scope::Project { what, project } => format!(" {what} of Project {project:?}"),
    };
    match (action.needs(), subject.role) {
        (_, Role::Admin) | (Needs::Read, _) => Ok(()),
        (Needs::Admin, _) => deny(what, "admin required".into()),
        (Needs::Project, Role::Viewer) => deny(what, "operator or admin required".into()),
        (Needs::Project, Role::Operator) => match scope {
            Scope::Any => Ok(()),
            Scope::Fleet { .. } => deny(what, "admin required".into()),
            Scope::Project { project, .. } => {
                let operated = subject.operated_projects();
                if operated.iter().any(|p| p == project) {
                    Ok(())
                } else {
                    deny(
                        what,
                        format!(
                            "{} operates Projects {}; an operator of Project {project:?} or an admin is required",
                            subject.name,
                            operated.join(", ")
                        ),
                    )
                }
            }
        },
    }
}
