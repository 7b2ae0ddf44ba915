//! Processed inbox rows leave after the retention, except what dedup and the lag monitor
//! still need: recent rows, and the newest row of each (consumer, topic, partition) however
//! old. Runs against the real PostgreSQL of `MESH_DATABASE_URL_BASE`, in a database of its
//! own with the kit's migrations.

use std::time::Duration;

use mesh_kit::{consumer::inbox, db::KIT_MIGRATOR};
use sqlx::PgPool;
use uuid::Uuid;

mod support;

/// Records `event_id` as the consumer does (`consumer.rs`, `apply_in`), processed `age_secs`
/// ago; returns whether it was new (false: the consumer would skip it as a duplicate).
async fn record(
    pool: &PgPool,
    consumer: &str,
    event_id: Uuid,
    partition: i32,
    offset: i64,
    age_secs: f64,
) -> bool {
    sqlx::query(
        "INSERT INTO kit_inbox (consumer, event_id, topic, kafka_partition, kafka_offset, processed_at)
         VALUES ($1, $2, 'mesh.events', $3, $4, now() - make_interval(secs => $5))
         ON CONFLICT DO NOTHING",
    )
    .bind(consumer)
    .bind(event_id)
    .bind(partition)
    .bind(offset)
    .bind(age_secs)
    .execute(pool)
    .await
    .expect("inbox row")
    .rows_affected()
        == 1
}

async fn kept(pool: &PgPool, event_id: Uuid) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM kit_inbox WHERE event_id = $1)")
        .bind(event_id)
        .fetch_one(pool)
        .await
        .expect("lookup")
}

/// What the lag monitor reads (`lag.rs`, `applied`): the newest offset per partition.
async fn position(pool: &PgPool, consumer: &str, partition: i32) -> Option<i64> {
    sqlx::query_scalar(
        "SELECT max(kafka_offset) FROM kit_inbox
         WHERE consumer = $1 AND topic = 'mesh.events' AND kafka_partition = $2",
    )
    .bind(consumer)
    .bind(partition)
    .fetch_one(pool)
    .await
    .expect("position")
}

#[tokio::test]
async fn old_inbox_rows_leave_but_recent_ones_and_each_partitions_newest_stay() {
    let name = support::create_database("test_inbox").await;
    let pool = PgPool::connect(&format!("{}/{name}", support::base()))
        .await
        .expect("pool");
    KIT_MIGRATOR.run(&pool).await.expect("kit migrations");

    let retention = Duration::from_secs(3_600);
    let day = 86_400.0;
    // Partition 0 of group "a": two old rows, then a recent one.
    let (old_a0, older_a0, recent_a0) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    assert!(record(&pool, "a", older_a0, 0, 10, 3.0 * day).await);
    assert!(record(&pool, "a", old_a0, 0, 11, 2.0 * day).await);
    assert!(record(&pool, "a", recent_a0, 0, 12, 60.0).await);
    // Partition 1 of group "a" and partition 0 of group "b": only old rows, the newest of
    // each the consumer's last position (a quiet partition).
    let (old_a1, newest_a1) = (Uuid::now_v7(), Uuid::now_v7());
    assert!(record(&pool, "a", old_a1, 1, 5, 3.0 * day).await);
    assert!(record(&pool, "a", newest_a1, 1, 6, 2.0 * day).await);
    let newest_b0 = Uuid::now_v7();
    assert!(record(&pool, "b", newest_b0, 0, 40, 5.0 * day).await);

    let deleted = inbox::purge_processed_before(&pool, retention)
        .await
        .expect("swept");

    assert_eq!(deleted, 3);
    for gone in [older_a0, old_a0, old_a1] {
        assert!(!kept(&pool, gone).await, "{gone} purged");
    }
    for stays in [recent_a0, newest_a1, newest_b0] {
        assert!(kept(&pool, stays).await, "{stays} kept");
    }
    assert_eq!(position(&pool, "a", 0).await, Some(12));
    assert_eq!(position(&pool, "a", 1).await, Some(6));
    assert_eq!(position(&pool, "b", 0).await, Some(40));
    // A redelivered recent event is still a duplicate; the kept newest rows are too.
    assert!(
        !record(&pool, "a", recent_a0, 0, 12, 0.0).await,
        "recent event deduplicated"
    );
    assert!(
        !record(&pool, "a", newest_a1, 1, 6, 0.0).await,
        "newest event deduplicated"
    );
    // A second sweep finds nothing more: the newest rows stay however often it runs.
    assert_eq!(
        inbox::purge_processed_before(&pool, retention)
            .await
            .expect("swept"),
        0
    );
    assert!(kept(&pool, newest_b0).await);

    pool.close().await;
    support::drop_database(&name).await;
}
