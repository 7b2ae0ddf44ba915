//! Retention of the consumer inbox (`kit_inbox`): an event id is needed only while Kafka
//! could deliver its record again, so rows processed longer than `MESH_INBOX_RETENTION_SECS`
//! ago are deleted by one worker per service ([`run`], through `crate::retention`).
//!
//! Two readers rely on the inbox, and the sweep keeps what each needs:
//! - deduplication: a record is redelivered only from the group's committed offset (committed
//!   about every second after the record is applied) or, if the group's offsets are lost,
//!   from the start of what the topic still holds. A retention at least as long as the
//!   topics' own (`retention.ms`) keeps every id Kafka can still deliver; see ARCHITECTURE.md.
//! - the lag monitor (`crate::lag`) reads the newest offset applied per partition from the
//!   inbox, so the newest row of each (consumer, topic, partition) is never deleted, however
//!   old.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::retention;

/// How often the inbox is swept: as often as the retention, at most every ten minutes (a
/// retention of days loses nothing by a sweep a few minutes late).
pub fn every(retention: Duration) -> Duration {
    retention::cadence(retention, Duration::from_secs(600))
}

/// Deletes the inbox rows processed longer than `retention` ago, oldest first, except the
/// newest (highest offset) row of each (consumer, topic, partition); returns how many.
/// The newest offset is one backward lookup in `kit_inbox_position` per candidate.
pub async fn purge_processed_before(pool: &PgPool, retention: Duration) -> sqlx::Result<u64> {
    retention::sweep(
        pool,
        "DELETE FROM kit_inbox WHERE (consumer, event_id) IN (
             SELECT i.consumer, i.event_id FROM kit_inbox i
             WHERE i.processed_at < now() - make_interval(secs => $1)
               AND i.kafka_offset < (
                   SELECT max(n.kafka_offset) FROM kit_inbox n
                   WHERE n.consumer = i.consumer AND n.topic = i.topic
                     AND n.kafka_partition = i.kafka_partition)
             ORDER BY i.processed_at LIMIT $2)",
        retention,
    )
    .await
}

/// Sweeps the inbox every [`every`] until `shutdown`. A failed sweep is logged and tried
/// again at the next turn: rows kept a little longer harm nothing.
pub async fn run(pool: PgPool, retention: Duration, shutdown: CancellationToken) {
    let period = every(retention);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        match purge_processed_before(&pool, retention).await {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "processed inbox rows purged"),
            Err(error) => tracing::warn!(error = %error, "purging processed inbox rows failed; will retry"),
        }
    }
}
