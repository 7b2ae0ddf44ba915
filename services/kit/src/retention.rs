//! Retention: what the mesh keeps only for a while (published outbox rows, the bodies of
//! finished notifications) is removed by a sweep of short statements, each touching at most
//! a chunk of rows, so a sweep never holds many locks or one long transaction beside the
//! service's own writes.

use std::time::Duration;

use sqlx::PgPool;

/// Rows one statement of a sweep touches at most.
pub const CHUNK: i64 = 10_000;

/// Runs `statement` until it touches fewer rows than a chunk; returns how many it touched
/// in all. The statement binds the retention in seconds as `$1` (compared with the
/// database's `now()`, the clock that stamped the rows) and the chunk size as `$2`.
/// Replicas may sweep at once: a row one has touched, the other's condition no longer
/// selects.
pub async fn sweep(pool: &PgPool, statement: &'static str, retention: Duration) -> sqlx::Result<u64> {
    let seconds = retention.as_secs_f64();
    let mut touched = 0;
    loop {
        let chunk = sqlx::query(statement)
            .bind(seconds)
            .bind(CHUNK)
            .execute(pool)
            .await?
            .rows_affected();
        touched += chunk;
        if chunk < CHUNK as u64 {
            return Ok(touched);
        }
    }
}

/// How often to sweep: as often as the retention, but at least every second and at most
/// every `at_most`.
pub fn cadence(retention: Duration, at_most: Duration) -> Duration {
    retention.clamp(Duration::from_secs(1), at_most.max(Duration::from_secs(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_runs_as_often_as_the_retention_within_its_bounds() {
        let minute = Duration::from_secs(60);
        assert_eq!(cadence(Duration::from_millis(10), minute), Duration::from_secs(1));
        assert_eq!(cadence(Duration::from_secs(30), minute), Duration::from_secs(30));
        assert_eq!(cadence(Duration::from_secs(86_400), minute), minute);
    }
}
