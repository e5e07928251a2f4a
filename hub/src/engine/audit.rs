//! The audit log: every mutating admin call, recorded before it runs (so that the flush of its
//! change carries the entry too) and finished with its outcome, durably, before it is answered.

use gitfleet_core::authz::Action;
use gitfleet_core::users::{AuditOutcome, AuditRecord};

use super::{Engine, EngineError};
use crate::pki::now_unix;

#[cfg(test)]
mod tests;

/// An entry's target and message are cut at these many bytes: what a caller sends (a
/// document's origin) or causes (a validation error per document) must not make one entry
/// megabytes long.
const MAX_TARGET: usize = 1024;
const MAX_MESSAGE: usize = 4096;

/// `text`, cut at a character boundary within `max` bytes, saying so.
fn bounded(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" …(cut)");
    }
    text
}

/// An audited call under way: its entry is recorded as `unanswered` until finished.
#[derive(Debug)]
pub struct AuditEntry {
    record: AuditRecord,
}

impl AuditEntry {
    pub fn user(&self) -> &str {
        &self.record.user
    }

    /// Names what the call turned out to be about (an apply's resources, once parsed).
    pub fn set_target(&mut self, target: String) {
        self.record.target = bounded(target, MAX_TARGET);
    }
}

impl Engine {
    /// Records that `user` is making the call `action` (not yet flushed: the change the call
    /// makes flushes it, and [`Engine::audit_finish`] does in any case).
    pub fn audit_begin(
        &self,
        user: &str,
        action: Action,
        target: String,
    ) -> Result<AuditEntry, EngineError> {
        let mut record = AuditRecord {
            id: 0,
            at_unix: now_unix(),
            user: user.to_owned(),
            action: action.name().to_owned(),
            target: bounded(target, MAX_TARGET),
            outcome: AuditOutcome::Unanswered,
            message: String::new(),
        };
        self.store.append_audit(&mut record)?;
        Ok(AuditEntry { record })
    }

    /// Records how the call ended and makes the entry durable: the caller answers only after.
    pub async fn audit_finish(
        &self,
        mut entry: AuditEntry,
        outcome: AuditOutcome,
        message: String,
    ) -> Result<(), EngineError> {
        entry.record.outcome = outcome;
        entry.record.message = bounded(message, MAX_MESSAGE);
        self.store.put_audit(&entry.record)?;
        self.store.flush().await?;
        Ok(())
    }

    /// A call refused before it ran, recorded durably.
    pub async fn audit_refused(
        &self,
        user: &str,
        action: Action,
        target: String,
        message: String,
    ) -> Result<(), EngineError> {
        let entry = self.audit_begin(user, action, target)?;
        self.audit_finish(entry, AuditOutcome::Denied, message)
            .await
    }

    /// The newest `limit` entries (of one user, since a time), oldest first.
    pub async fn audit_log(
        &self,
        user: Option<&str>,
        since_unix: i64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, EngineError> {
        Ok(self.store.audit(user, since_unix, limit).await?)
    }
}
