//! What follows a failed webhook attempt: when to try again (exponential backoff, capped),
//! when the alert must be escalated to the county bureau because its office cannot be
//! reached, and when to give up on the notification so retries do not go on forever.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Retry settings (`MESH_WEBHOOK_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
    /// After this many failed attempts of one notification its alert is escalated.
    pub escalate_after: u32,
    /// A notification is given up after this many attempts …
    pub max_attempts: u32,
    /// … or once it would be retried later than this after it was queued.
    pub give_up_after: Duration,
}

/// What to do after failed attempt number `attempt_number`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterFailure {
    /// When to try again; `None`: given up.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Escalate the alert now (happens once per notification).
    pub escalate: bool,
}

/// Exponential backoff before attempt `attempts + 1`: base × 2^(attempts-1), capped.
pub fn backoff(attempts: u32, base: Duration, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
    base.saturating_mul(factor).min(max)
}

/// The rule after a failure at `attempted_at` of a notification queued at `queued_at`.
pub fn after_failure(
    policy: &RetryPolicy,
    attempt_number: u32,
    queued_at: DateTime<Utc>,
    attempted_at: DateTime<Utc>,
) -> AfterFailure {
    let wait = backoff(attempt_number, policy.base, policy.max);
    let next = attempted_at + chrono::Duration::from_std(wait).unwrap_or_default();
    let too_old =
        chrono::Duration::from_std(policy.give_up_after).is_ok_and(|limit| next - queued_at > limit);
    let give_up = attempt_number >= policy.max_attempts || too_old;
    // Giving up before the escalation threshold must not leave the alert unescalated.
    let escalate =
        attempt_number == policy.escalate_after || (give_up && attempt_number < policy.escalate_after);
    AfterFailure {
        next_attempt_at: (!give_up).then_some(next),
        escalate,
    }
}

/// Why an alert is escalated when its notifications fail.
pub fn escalation_reason(attempts: u32) -> String {
    format!("notifications to the township office failed {attempts} times")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alert::tests::utc;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            escalate_after: 3,
            max_attempts: 6,
            give_up_after: Duration::from_secs(3600),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        assert_eq!(backoff(1, base, max), Duration::from_secs(1));
        assert_eq!(backoff(2, base, max), Duration::from_secs(2));
        assert_eq!(backoff(5, base, max), Duration::from_secs(16));
        assert_eq!(backoff(7, base, max), Duration::from_secs(60));
        assert_eq!(backoff(10_000, base, max), Duration::from_secs(60));
    }

    #[test]
    fn escalates_once_at_the_threshold_and_gives_up_at_the_cap() {
        let queued = utc("2026-12-05T00:00:00Z");
        let at = utc("2026-12-05T00:00:10Z");
        let steps: Vec<_> = (1..=6).map(|n| after_failure(&policy(), n, queued, at)).collect();
        let escalations: Vec<bool> = steps.iter().map(|step| step.escalate).collect();
        assert_eq!(escalations, [false, false, true, false, false, false]);
        assert_eq!(steps[0].next_attempt_at, Some(utc("2026-12-05T00:00:11Z")));
        assert!(steps[4].next_attempt_at.is_some());
        assert_eq!(steps[5].next_attempt_at, None, "the sixth attempt was the last");
    }

    #[test]
    fn gives_up_on_a_notification_too_old_and_escalates_if_not_yet_done() {
        let queued = utc("2026-12-05T00:00:00Z");
        let late = utc("2026-12-05T01:00:00Z");
        let step = after_failure(&policy(), 1, queued, late);
        assert_eq!(step.next_attempt_at, None);
        assert!(step.escalate, "given up before the threshold: escalate now");
    }
}
