//! Published outbox rows are kept for a retention period (to see what left in an incident,
//! beside the audit log and the topic itself) and then deleted by the relay
//! (`crate::retention`): without it the outbox would keep every event the service ever
//! published.

use std::time::Duration;

use sqlx::PgPool;

use crate::retention;

/// How often the relay purges: as often as the retention, at most every minute.
pub fn every(retention: Duration) -> Duration {
    retention::cadence(retention, Duration::from_secs(60))
}

/// Deletes the rows published longer than `retention` ago, oldest first; returns how many.
/// A row not yet published is never touched.
pub async fn published_before(pool: &PgPool, retention: Duration) -> sqlx::Result<u64> {
    retention::sweep(
        pool,
        "DELETE FROM kit_outbox WHERE id IN (
             SELECT id FROM kit_outbox
             WHERE published_at < now() - make_interval(secs => $1)
             ORDER BY published_at LIMIT $2)",
        retention,
    )
    .await
}
