//! When to try a failed step again: exponential backoff with a cap and jitter, as a pure
//! function of the attempt number. The caller supplies the randomness, so that the decision
//! stays testable; the agent uses it to retry transient fetch failures before it reports a
//! Target as Failed.

use std::time::Duration;

/// How often, and how patiently, a step is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first one included: 1 means never retry (0 counts as 1).
    pub attempts: u32,
    /// The wait after the first failed try; it doubles after each further one.
    pub base: Duration,
    /// The longest wait between two tries.
    pub max: Duration,
}

impl RetryPolicy {
    /// The tries in all; at least one, whatever the configuration says.
    pub fn attempts(&self) -> u32 {
        self.attempts.max(1)
    }

    /// The wait before the next try after try number `failed` (1 for the first) failed, or
    /// `None` when that was the last try.
    ///
    /// The wait is `base * 2^(failed - 1)`, capped at `max`, then scaled by `jitter` (a value
    /// in 0..=1, drawn by the caller) into its upper half: from half the wait (jitter 0) to
    /// all of it (jitter 1). Thousands of spokes that failed together against one Git
    /// server then come back spread out, while each still waits at least half the backoff.
    /// A jitter outside 0..=1 is clamped; one that is not a number counts as 1.
    pub fn next_delay(&self, failed: u32, jitter: f64) -> Option<Duration> {
        if failed == 0 || failed >= self.attempts() {
            return None;
        }
        let doublings = (failed - 1).min(31);
        let backoff = self.base.saturating_mul(1u32 << doublings).min(self.max);
        let jitter = if jitter.is_nan() {
            1.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        let half = backoff / 2;
        let rest = backoff.saturating_sub(half);
        Some(half.saturating_add(rest.mul_f64(jitter)).min(backoff))
    }
}

/// A wait as the user reads it in a status message: "750ms", "2s", "1.5s", "15s".
pub fn describe(wait: Duration) -> String {
    let millis = wait.as_millis();
    if millis < 1_000 {
        return format!("{millis}ms");
    }
    let tenths = (millis + 50) / 100;
    if tenths.is_multiple_of(10) || tenths >= 100 {
        format!("{}s", (millis + 500) / 1_000)
    } else {
        format!("{}.{}s", tenths / 10, tenths % 10)
    }
}

#[cfg(test)]
mod tests;
