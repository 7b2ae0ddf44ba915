//! Published outbox rows are kept for a retention period (to see what left in an incident,
//! beside the audit log and the topic itself) and then deleted, set-based, by the relay:
//! without it the outbox would keep every event the service ever published.

use std::time::Duration;

use sqlx::PgPool;

/// Rows deleted per statement: short statements, so the purge never holds many locks or
/// one long transaction beside the service's writes.
const CHUNK: i64 = 10_000;

/// How often the relay purges: as often as the retention, at most every minute, at least
/// every second.
pub fn every(retention: Duration) -> Duration {
    retention.clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Deletes the rows published longer than `retention` ago (by the database's clock, which
/// stamped them), oldest first, a chunk per statement; returns how many. A row not yet
/// published is never touched. Replicas may purge at once: a row one deletes the other
/// skips.
pub async fn published_before(pool: &PgPool, retention: Duration) -> sqlx::Result<u64> {
    let seconds = retention.as_secs_f64();
    let mut deleted = 0;
    loop {
        let chunk = sqlx::query(
            "DELETE FROM kit_outbox WHERE id IN (
                 SELECT id FROM kit_outbox
                 WHERE published_at < now() - make_interval(secs => $1)
                 ORDER BY published_at LIMIT $2)",
        )
        .bind(seconds)
        .bind(CHUNK)
        .execute(pool)
        .await?
        .rows_affected();
        deleted += chunk;
        if chunk < CHUNK as u64 {
            return Ok(deleted);
        }
    }
}
