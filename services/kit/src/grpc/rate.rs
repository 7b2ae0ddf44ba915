//! Per-caller rate limits on write RPCs: a token bucket per token subject (`governor`'s
//! GCRA), so one runaway or abused account cannot flood a service with changes while every
//! other caller goes on unhindered. Reads are not limited (they change nothing, and list
//! pages are bounded). Mesh services calling each other (`Role::System`) are exempt: their
//! calls are the mesh's own work, and their tokens never leave it.

use std::{
    num::NonZeroU32,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    auth::{Caller, Role},
    config::Reader,
};

/// How many writes one caller may make: `per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteRate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

/// Sustained writes per second per caller by default: far above what a person types or an
/// officer's app sends when it syncs (one `SyncOfflineBatch` carries up to 500 check-ins).
const DEFAULT_PER_SECOND: u32 = 100;
/// Writes a caller may make at once by default: an app's backlog replayed at reconnect.
const DEFAULT_BURST: u32 = 500;
/// Checks between two sweeps of the buckets of callers who stopped writing.
const SWEEP_EVERY: u64 = 4096;

impl WriteRate {
    /// `MESH_WRITE_RATE_PER_SEC` (default 100; 0 turns the limit off) and
    /// `MESH_WRITE_BURST` (default 500, at least 1).
    pub fn read(reader: &mut Reader<'_>) -> Option<WriteRate> {
        let per_second: u32 = reader.optional("MESH_WRITE_RATE_PER_SEC", DEFAULT_PER_SECOND);
        let burst: u32 = reader.optional("MESH_WRITE_BURST", DEFAULT_BURST);
        let Some(burst) = NonZeroU32::new(burst) else {
            reader.problem("MESH_WRITE_BURST must be at least 1");
            return None;
        };
        NonZeroU32::new(per_second).map(|per_second| WriteRate { per_second, burst })
    }
}

/// The buckets of every caller of one service process.
pub struct WriteLimiter {
    buckets: DefaultKeyedRateLimiter<String>,
    checks: AtomicU64,
}

impl std::fmt::Debug for WriteLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteLimiter")
            .field("callers", &self.buckets.len())
            .finish_non_exhaustive()
    }
}

impl WriteLimiter {
    pub fn new(rate: WriteRate) -> Self {
        Self {
            buckets: RateLimiter::keyed(Quota::per_second(rate.per_second).allow_burst(rate.burst)),
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one write from `caller`'s bucket, or `ResourceExhausted` saying when to retry
    /// (in the message and as a `RetryInfo` detail).
    pub fn check(&self, caller: &Caller) -> Result<(), Status> {
        if caller.role == Role::System {
            return Ok(());
        }
        // A bucket left full again is the same as none: drop those now and then, so the
        // map holds the callers of the last moments, not everyone who ever wrote.
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.buckets.retain_recent();
        }
        self.buckets.check_key(&caller.subject).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.buckets.clock().now());
            let wait = Duration::from_millis(wait.as_millis().max(1).try_into().unwrap_or(u64::MAX));
            tracing::info!(subject = %caller.subject, retry_after_ms = wait.as_millis(), "write rate limit reached");
            Status::with_error_details(
                Code::ResourceExhausted,
                format!(
                    "too many writes from this caller; retry later (in {} ms)",
                    wait.as_millis()
                ),
                ErrorDetails::with_retry_info(Some(wait)),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(subject: &str, role: Role) -> Caller {
        Caller::new(subject, role, Some("620702001"), Some("620702"))
    }

    fn rate(per_second: u32, burst: u32) -> WriteRate {
        WriteRate {
            per_second: NonZeroU32::new(per_second).expect("non-zero"),
            burst: NonZeroU32::new(burst).expect("non-zero"),
        }
    }

    #[test]
    fn a_caller_over_its_burst_waits_and_others_do_not() {
        let limiter = WriteLimiter::new(rate(1, 3));
        let busy = caller("officer-busy", Role::Officer);
        for _ in 0..3 {
            limiter.check(&busy).expect("within the burst");
        }
        let refused = limiter.check(&busy).expect_err("over the burst");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(refused.message().contains("retry later"), "{}", refused.message());
        let retry = refused
            .get_error_details()
            .retry_info()
            .and_then(|info| info.retry_delay);
        assert!(
            retry.is_some_and(|delay| delay > Duration::ZERO && delay <= Duration::from_secs(1)),
            "{retry:?}"
        );
        limiter
            .check(&caller("officer-other", Role::Officer))
            .expect("another caller's own bucket");
    }

    #[test]
    fn mesh_services_are_not_limited() {
        let limiter = WriteLimiter::new(rate(1, 1));
        for _ in 0..10 {
            limiter
                .check(&caller("risk-alert", Role::System))
                .expect("exempt");
        }
    }

    #[test]
    fn the_rate_is_read_from_the_environment_and_zero_turns_it_off() {
        let read = |source: &dyn crate::config::Source| {
            let mut reader = Reader::new(source);
            let rate = WriteRate::read(&mut reader);
            (rate, reader.finish().map_err(|error| error.to_string()))
        };
        assert_eq!(read(&[("X", "")]), (Some(rate(100, 500)), Ok(())));
        assert_eq!(
            read(&[("MESH_WRITE_RATE_PER_SEC", "5"), ("MESH_WRITE_BURST", "20")]),
            (Some(rate(5, 20)), Ok(()))
        );
        assert_eq!(read(&[("MESH_WRITE_RATE_PER_SEC", "0")]), (None, Ok(())));
        let (rate, problems) = read(&[("MESH_WRITE_BURST", "0")]);
        assert_eq!(rate, None);
        assert!(
            problems
                .expect_err("refused")
                .contains("MESH_WRITE_BURST must be at least 1")
        );
    }
}
