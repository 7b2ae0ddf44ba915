//! When the scheduler looks for due deadlines next: at the earliest pending deadline, or as
//! soon as the consumer's progress may let a deferred one fire, and never later than the
//! fallback poll (a deadline-change notice can be lost with its LISTEN connection).

use std::time::Duration;

use chrono::{DateTime, Utc};

/// How long the scheduler may sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The longest sleep: the poll that catches what a lost notice did not announce.
    pub fallback: Duration,
    /// The pause before looking again at a due deadline that a round did not fire (its
    /// subject was busy with an event, or its transaction failed).
    pub retry: Duration,
    /// How long a due deadline waits at most for events in flight (lag-aware firing).
    pub max_defer: Duration,
}

/// When to look again after a round that fired nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wake {
    /// At this instant at the latest.
    pub at: DateTime<Utc>,
    /// And as soon as the consumer's caught-up instant moves: a due deadline waits for it.
    pub on_progress: bool,
}

/// When to look again, given the earliest pending deadline's firing time and the cutoff the
/// round fired up to (`lag::firing_cutoff`).
pub fn next(
    now: DateTime<Utc>,
    earliest: Option<DateTime<Utc>>,
    cutoff: DateTime<Utc>,
    timing: &Timing,
) -> Wake {
    let fallback = after(now, timing.fallback);
    let wake = |at: DateTime<Utc>, on_progress| Wake {
        at: at.min(fallback),
        on_progress,
    };
    match earliest {
        None => wake(fallback, false),
        Some(earliest) if earliest > now => wake(earliest, false),
        // Due, but events that could answer it may be in flight: it fires when the consumer
        // catches up past it, or once it has waited `max_defer`.
        Some(earliest) if earliest > cutoff => wake(after(earliest, timing.max_defer), true),
        Some(_) => wake(after(now, timing.retry), false),
    }
}

/// `span` after `at` (the end of time when that overflows).
pub fn after(at: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(span)
        .ok()
        .and_then(|span| at.checked_add_signed(span))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap_or_default()
    }

    const TIMING: Timing = Timing {
        fallback: Duration::from_secs(30),
        retry: Duration::from_secs(1),
        max_defer: Duration::from_secs(600),
    };

    #[test]
    fn sleeps_until_the_earliest_deadline_within_the_fallback_poll() {
        assert_eq!(
            next(at(0), Some(at(5)), at(0), &TIMING),
            Wake {
                at: at(5),
                on_progress: false
            }
        );
        assert_eq!(
            next(at(0), Some(at(3600)), at(0), &TIMING),
            Wake {
                at: at(30),
                on_progress: false
            },
            "a far deadline is looked at again by the fallback poll"
        );
        assert_eq!(
            next(at(0), None, at(0), &TIMING),
            Wake {
                at: at(30),
                on_progress: false
            },
            "nothing pending: the fallback poll"
        );
    }

    #[test]
    fn a_deadline_deferred_for_events_in_flight_waits_for_progress_or_its_bound() {
        // Due at 10, now 12, the consumer caught up to 8 only.
        assert_eq!(
            next(at(12), Some(at(10)), at(8), &TIMING),
            Wake {
                at: at(42),
                on_progress: true
            },
            "the fallback comes before the 600 s bound"
        );
        let short = Timing {
            max_defer: Duration::from_secs(5),
            ..TIMING
        };
        assert_eq!(
            next(at(12), Some(at(10)), at(8), &short),
            Wake {
                at: at(15),
                on_progress: true
            },
            "fired anyway once it has waited max_defer"
        );
    }

    #[test]
    fn a_fireable_deadline_left_by_a_round_is_retried_shortly() {
        assert_eq!(
            next(at(12), Some(at(10)), at(12), &TIMING),
            Wake {
                at: at(13),
                on_progress: false
            }
        );
    }
}
