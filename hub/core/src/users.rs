//! People who call the admin API, and what they did: the user records the hub checks every
//! admin call against, and the audit log's entries. Plain data and the decisions on it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::authz::{Role, Subject};

#[cfg(test)]
mod tests;

/// The name of the user the hub's own first-start credential belongs to.
pub const BOOTSTRAP_ADMIN: &str = "admin";
/// A user's certificate lives this long unless asked otherwise.
pub const DEFAULT_USER_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// The longest a user's certificate may live (the hub's own admin credential's lifetime).
pub const MAX_USER_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// A user as the hub keeps it: never its private key, which only the credentials file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub role: Role,
    /// An operator's Projects (empty: `default`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    /// SHA-256 of the public key of the user's certificate, hex: the only certificate accepted
    /// for this user, so that a certificate of an earlier user of the same name stays refused.
    pub key_fingerprint: String,
    pub expires_at_unix: i64,
    pub created_at_unix: i64,
    pub created_by: String,
    #[serde(default)]
    pub revoked: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revoked_by: String,
    #[serde(default)]
    pub revoked_at_unix: i64,
    /// The hub's own first-start credential (`DATA/pki/admin.crt`): the hub moves the binding
    /// when it renews that certificate (unless the user was revoked).
    #[serde(default)]
    pub bootstrap: bool,
}

/// Why a certificate naming a user is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserProblem {
    #[error("no user named {0:?} exists; ask an admin for a credential (`gitfleet user create`)")]
    Unknown(String),
    #[error("user {0:?} was revoked")]
    Revoked(String),
    #[error(
        "this certificate of user {0:?} is not the user's current one (the user was revoked and created again); import the newer credentials file"
    )]
    Replaced(String),
    #[error("the certificate of user {0:?} has expired; ask an admin for a new one")]
    Expired(String),
}

impl UserRecord {
    /// Whether a verified certificate with this key fingerprint speaks for this user now.
    pub fn check(&self, key_fingerprint: &str, now_unix: i64) -> Result<(), UserProblem> {
        if self.revoked {
            return Err(UserProblem::Revoked(self.name.clone()));
        }
        if self.key_fingerprint != key_fingerprint {
            return Err(UserProblem::Replaced(self.name.clone()));
        }
        if self.expires_at_unix <= now_unix {
            return Err(UserProblem::Expired(self.name.clone()));
        }
        Ok(())
    }

    /// "active", "revoked" or "expired".
    pub fn status(&self, now_unix: i64) -> &'static str {
        if self.revoked {
            "revoked"
        } else if self.expires_at_unix <= now_unix {
            "expired"
        } else {
            "active"
        }
    }

    /// An admin that can still call: counts towards "the last admin".
    pub fn is_active_admin(&self, now_unix: i64) -> bool {
        self.role == Role::Admin && self.status(now_unix) == "active"
    }

    pub fn subject(&self) -> Subject {
        Subject {
            name: self.name.clone(),
            role: self.role,
            projects: self.projects.clone(),
        }
    }
}

/// How an audited call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutcome {
    Ok,
    /// Refused for who the caller is (permission denied, or an unusable certificate).
    Denied,
    /// Failed for any other reason (invalid input, not found, a store failure).
    Failed,
    /// Recorded before the call ran, never finished: the hub stopped before it answered, so
    /// the caller got no answer and the change may or may not have been made.
    Unanswered,
}

impl AuditOutcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Ok => "ok",
            AuditOutcome::Denied => "denied",
            AuditOutcome::Failed => "failed",
            AuditOutcome::Unanswered => "unanswered",
        }
    }
}

/// One mutating call: who, what, when and how it ended. Never a secret (no token value, no
/// key): targets are names and ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Increasing in the order calls were recorded (assigned by the store).
    #[serde(default)]
    pub id: u64,
    pub at_unix: i64,
    pub user: String,
    /// The call, in the CLI's words (`apply`, `user revoke`, …).
    pub action: String,
    /// What it was about (`App/web`, a cluster, a token id, a user), or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    pub outcome: AuditOutcome,
    /// The error, for a call that did not succeed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// How much of the audit log the hub keeps: the newest `max_entries` entries, none older than
/// `max_age`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditRetention {
    pub max_entries: usize,
    pub max_age: Duration,
}

impl Default for AuditRetention {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_age: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

impl AuditRetention {
    /// How many of the oldest entries go, given how many there are and each one's time, oldest
    /// first (`at` is asked from the oldest on, until one stays).
    pub fn expired(&self, len: usize, now_unix: i64, at: impl Fn(usize) -> i64) -> usize {
        let over = len.saturating_sub(self.max_entries);
        let cutoff =
            now_unix.saturating_sub(i64::try_from(self.max_age.as_secs()).unwrap_or(i64::MAX));
        let mut n = over;
        while n < len && at(n) < cutoff {
            n += 1;
        }
        n
    }
}

/// A list of names for an audit entry's target, cut short after a few (an apply of a thousand
/// documents names ten and how many more).
pub fn summarize_targets<S: AsRef<str>>(names: &[S]) -> String {
    const SHOWN: usize = 10;
    let mut text = names
        .iter()
        .take(SHOWN)
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}
