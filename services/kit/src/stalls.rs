//! The `kit_consumer_stalls` table: the records a consumer reported stalled on and has not
//! yet got past, so that whichever process applies such a record at last (after a restart,
//! or another replica after a rebalance) writes its `ops.consumer_recovered`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

/// A record's place: topic, partition, offset.
pub type Place = (String, i32, i64);

/// Notes that `consumer` reported a stall on the record at `place`, in the caller's
/// transaction (the one writing `ops.consumer_stalled`).
pub async fn record(
    conn: &mut PgConnection,
    consumer: &str,
    place: &Place,
    failing_since: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO kit_consumer_stalls (consumer, source_topic, source_partition, source_offset, failing_since)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(consumer)
    .bind(&place.0)
    .bind(place.1)
    .bind(place.2)
    .bind(failing_since)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets the stall at `place`, in the caller's transaction (the one writing
/// `ops.consumer_recovered`).
pub async fn clear(conn: &mut PgConnection, consumer: &str, place: &Place) -> sqlx::Result<()> {
    sqlx::query(
        "DELETE FROM kit_consumer_stalls
         WHERE consumer = $1 AND source_topic = $2 AND source_partition = $3 AND source_offset = $4",
    )
    .bind(consumer)
    .bind(&place.0)
    .bind(place.1)
    .bind(place.2)
    .execute(conn)
    .await?;
    Ok(())
}

/// The stalls `consumer` reported on records of `topics`, with when each began failing.
pub async fn open(
    executor: impl PgExecutor<'_>,
    consumer: &str,
    topics: &[String],
) -> sqlx::Result<HashMap<Place, DateTime<Utc>>> {
    let rows: Vec<(String, i32, i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT source_topic, source_partition, source_offset, failing_since FROM kit_consumer_stalls
         WHERE consumer = $1 AND source_topic = ANY($2)",
    )
    .bind(consumer)
    .bind(topics)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(topic, partition, offset, since)| ((topic, partition, offset), since))
        .collect())
}
