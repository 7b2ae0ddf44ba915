//! The kit's at-least-once consumer against real Kafka and PostgreSQL: poison records go to
//! the dead-letter topic and the consumer keeps going; redelivered events apply once;
//! infrastructure errors are retried, never skipped.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use mesh::harness::{Mesh, publish_record};
use mesh_kit::{
    CancellationToken,
    consumer::{ConsumerConfig, EventConsumer, HandleError, Handler, InboundEvent},
    kafka::{dead_letter_topic, headers},
};
use sqlx::PgConnection;

/// Applies `ok:<n>` payloads by inserting `n`; anything else is a permanent failure. The
/// first `flaky` attempts fail as if the database were briefly unreachable.
struct RecordingHandler {
    attempts: Arc<AtomicUsize>,
    flaky: usize,
}

impl Handler for RecordingHandler {
    async fn handle(&self, conn: &mut PgConnection, event: &InboundEvent) -> Result<(), HandleError> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst);
        if attempt < self.flaky {
            return Err(HandleError::Transient(anyhow::anyhow!("simulated outage")));
        }
        let text = String::from_utf8(event.payload.clone())
            .map_err(|_| HandleError::Permanent("not utf-8".into()))?;
        let value: i32 = text
            .strip_prefix("ok:")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| HandleError::Permanent(format!("unexpected payload {text:?}")))?;
        sqlx::query("INSERT INTO applied (value) VALUES ($1)")
            .bind(value)
            .execute(conn)
            .await?;
        Ok(())
    }
}

async fn send(mesh: &Mesh, event_id: Option<&str>, payload: &str) {
    let mut record_headers = vec![(headers::EVENT_TYPE, "test.event")];
    if let Some(id) = event_id {
        record_headers.push((headers::EVENT_ID, id));
    }
    publish_record(
        mesh.producer().expect("producer"),
        topic(mesh),
        "subject-1",
        &record_headers,
        payload.as_bytes(),
    )
    .await
    .expect("produced");
}

/// The topic the consumer reads: any fresh topic of the mesh with its dead-letter topic
/// serves, as no service of the mesh runs to read it.
fn topic(mesh: &Mesh) -> &str {
    &mesh.topics.registry
}

#[tokio::test]
async fn poison_records_are_dead_lettered_and_duplicates_apply_once() {
    // One partition: the dead letters' source offsets count every record sent.
    let mut mesh = Mesh::builder().partitions(1).build().await.expect("mesh");
    mesh.database("consumer").await.expect("database");
    let pool = mesh.pool("consumer").expect("pool");
    mesh_kit::db::migrate(&pool, &mesh_kit::db::KIT_MIGRATOR)
        .await
        .expect("kit tables");
    sqlx::query("CREATE TABLE applied (value INTEGER NOT NULL)")
        .execute(&pool)
        .await
        .expect("table");
    let topic = topic(&mesh).to_owned();

    let first_id = uuid::Uuid::now_v7().to_string();
    send(&mesh, Some(&first_id), "ok:1").await;
    send(&mesh, None, "ok:999").await; // no event id: poison
    send(&mesh, Some(&uuid::Uuid::now_v7().to_string()), "garbage").await; // handler refuses
    send(&mesh, Some(&first_id), "ok:1").await; // redelivery of the first event
    send(&mesh, Some(&uuid::Uuid::now_v7().to_string()), "ok:2").await;

    let attempts = Arc::new(AtomicUsize::new(0));
    let group = format!("test-group-{}", uuid::Uuid::new_v4().simple());
    let consumer = EventConsumer::new(
        pool.clone(),
        RecordingHandler {
            attempts: attempts.clone(),
            flaky: 2,
        },
        ConsumerConfig::new(&mesh.infra.brokers, &group, &[topic.as_str()]),
    )
    .expect("consumer");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));

    let mut applied: Vec<i32> = Vec::new();
    for _ in 0..300 {
        applied = sqlx::query_scalar("SELECT value FROM applied ORDER BY value")
            .fetch_all(&pool)
            .await
            .expect("rows");
        if applied.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        applied,
        vec![1, 2],
        "both good events applied once, despite the simulated outage"
    );

    let dead = mesh
        .tap(&dead_letter_topic(&topic))
        .expect("dlq tap")
        .collect(2, Duration::from_secs(20))
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 2);
    assert_eq!(
        dead[0].header(headers::DLQ_REASON),
        Some("missing event_id header")
    );
    assert_eq!(dead[0].payload, b"ok:999");
    assert!(
        dead[1]
            .header(headers::DLQ_REASON)
            .is_some_and(|r| r.contains("unexpected payload"))
    );
    assert_eq!(dead[1].header(headers::DLQ_SOURCE_OFFSET), Some("2"));
    assert_eq!(dead[1].header(headers::DLQ_CONSUMER), Some(group.as_str()));

    shutdown.cancel();
    running.await.expect("consumer stops");

    // A restarted consumer of the same group resumes after what was applied: nothing is
    // applied twice and a new event is picked up.
    send(&mesh, Some(&uuid::Uuid::now_v7().to_string()), "ok:3").await;
    let handled_before = attempts.load(Ordering::SeqCst);
    let consumer = EventConsumer::new(
        pool.clone(),
        RecordingHandler {
            attempts: attempts.clone(),
            flaky: 0,
        },
        ConsumerConfig::new(&mesh.infra.brokers, &group, &[topic.as_str()]),
    )
    .expect("consumer");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));
    for _ in 0..300 {
        applied = sqlx::query_scalar("SELECT value FROM applied ORDER BY value")
            .fetch_all(&pool)
            .await
            .expect("rows");
        if applied.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(applied, vec![1, 2, 3]);
    assert_eq!(
        attempts.load(Ordering::SeqCst) - handled_before,
        1,
        "only the new event reached the handler"
    );
    shutdown.cancel();
    running.await.expect("consumer stops");
}
