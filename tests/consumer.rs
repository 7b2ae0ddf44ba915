//! The kit's at-least-once consumer against real Kafka and PostgreSQL: poison records and
//! records the database refuses (a constraint violation) are set aside in the service's
//! `kit_dead_letters` with an `ops.dead_lettered` event and the consumer keeps going;
//! redelivered events apply once; infrastructure errors are retried, never skipped; records
//! waiting together are applied in one transaction per partition, and a batch holding a
//! record the database refuses falls back to one by one with the same outcome; a Kafka
//! client stuck on purpose is found by the watchdog and rebuilt, the service reporting
//! itself not ready meanwhile, and nothing is skipped or applied twice; the outbox relay is
//! woken only after a commit that wrote an event.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use mesh::harness::{Mesh, publish_record};
use mesh_e2e::eventually;
use mesh_kit::{
    CancellationToken,
    consumer::{ConsumerConfig, EventConsumer, HandleError, Handler, InboundEvent},
    kafka::headers,
    outbox::{self, OutboxSignal},
    readiness::Readiness,
};
use sqlx::PgConnection;

/// Applies `ok:<n>` payloads by inserting `n`, and `ev:<n>` ones by inserting `n` and writing
/// an event to the outbox; anything else is a permanent failure. The
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
        let (publishes, value) = match text.split_once(':') {
            Some(("ok", n)) => (false, n.parse().ok()),
            Some(("ev", n)) => (true, n.parse().ok()),
            _ => (false, None),
        };
        let value: i32 =
            value.ok_or_else(|| HandleError::Permanent(format!("unexpected payload {text:?}")))?;
        sqlx::query("INSERT INTO applied (value, tx) VALUES ($1, txid_current())")
            .bind(value)
            .execute(&mut *conn)
            .await?;
        if publishes {
            outbox::enqueue(
                conn,
                outbox::NewEvent {
                    topic: "test.published".into(),
                    key: "subject-1".into(),
                    event_type: "test.published",
                    payload: Vec::new(),
                    occurred_at: chrono::Utc::now(),
                },
            )
            .await?;
        }
        Ok(())
    }
}

/// A consumer applying with a [`RecordingHandler`] whose first `flaky` attempts fail.
fn recording(
    pool: &sqlx::PgPool,
    attempts: Arc<AtomicUsize>,
    flaky: usize,
    config: ConsumerConfig,
) -> EventConsumer<RecordingHandler> {
    EventConsumer::new(pool.clone(), RecordingHandler { attempts, flaky }, config).expect("consumer")
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

/// The topic the consumer reads: any fresh topic of the mesh serves, as no service of the
/// mesh runs to read it.
fn topic(mesh: &Mesh) -> &str {
    &mesh.topics.registry
}

#[tokio::test]
async fn poison_records_are_dead_lettered_and_duplicates_apply_once() {
    // One partition: the dead letters' source offsets count every record sent.
    let mut mesh = Mesh::builder().partitions(1).build().await.expect("mesh");
    let pool = consumer_database(&mut mesh).await;
    let topic = topic(&mesh).to_owned();

    let first_id = uuid::Uuid::now_v7().to_string();
    send(&mesh, Some(&first_id), "ok:1").await;
    send(&mesh, None, "ok:999").await; // no event id: poison
    send(&mesh, Some(&uuid::Uuid::now_v7().to_string()), "garbage").await; // handler refuses
    send(&mesh, Some(&uuid::Uuid::now_v7().to_string()), "ok:-5").await; // CHECK violated
    send(&mesh, Some(&first_id), "ok:1").await; // redelivery of the first event
    send(&mesh, Some(&uuid::Uuid::now_v7().to_string()), "ok:2").await;

    let attempts = Arc::new(AtomicUsize::new(0));
    let group = format!("test-group-{}", uuid::Uuid::new_v4().simple());
    let config = ConsumerConfig {
        ops_topic: mesh.topics.ops.clone(),
        ..ConsumerConfig::new(&mesh.infra.brokers, &group, &[topic.as_str()])
    };
    let consumer = recording(&pool, attempts.clone(), 2, config.clone());
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

    let dead: Vec<(i64, String, String, Option<String>)> = sqlx::query_as(
        "SELECT source_offset, reason, consumer, event_type FROM kit_dead_letters ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("dead letters");
    assert_eq!(dead.len(), 3, "{dead:?}");
    assert_eq!((dead[0].0, dead[0].1.as_str()), (1, "missing event_id header"));
    assert!(dead[1].1.contains("unexpected payload"), "{dead:?}");
    assert_eq!(dead[1].0, 2);
    assert_eq!(dead[1].2, group);
    assert_eq!(dead[1].3.as_deref(), Some("test.event"));
    assert!(
        dead[2].1.contains("database refused the record"),
        "a constraint violation is set aside at once: {dead:?}"
    );
    assert_eq!(dead[2].0, 3);
    let announced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM kit_outbox WHERE event_type = 'ops.dead_lettered' AND topic = $1",
    )
    .bind(&mesh.topics.ops)
    .fetch_one(&pool)
    .await
    .expect("outbox");
    assert_eq!(announced, 3, "every dead letter is announced");

    shutdown.cancel();
    running.await.expect("consumer stops");

    // A restarted consumer of the same group resumes after what was applied: nothing is
    // applied twice and a new event is picked up.
    send(&mesh, Some(&uuid::Uuid::now_v7().to_string()), "ok:3").await;
    let handled_before = attempts.load(Ordering::SeqCst);
    let consumer = recording(&pool, attempts.clone(), 0, config);
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

/// A database with the kit's tables and the handler's `applied` table, for one test.
async fn consumer_database(mesh: &mut Mesh) -> sqlx::PgPool {
    mesh.database("consumer").await.expect("database");
    let pool = mesh.pool("consumer").expect("pool");
    mesh_kit::db::migrate(&pool, &mesh_kit::db::KIT_MIGRATOR)
        .await
        .expect("kit tables");
    sqlx::query("CREATE TABLE applied (value INTEGER NOT NULL CHECK (value >= 0), tx BIGINT NOT NULL)")
        .execute(&pool)
        .await
        .expect("table");
    pool
}

/// A mesh with one-partition topics (no service runs), the consumer's database, and a
/// consumer of the test topic in a group of its own.
async fn one_partition() -> (Mesh, sqlx::PgPool, ConsumerConfig) {
    let mut mesh = Mesh::builder().partitions(1).build().await.expect("mesh");
    let pool = consumer_database(&mut mesh).await;
    let group = format!("test-group-{}", uuid::Uuid::new_v4().simple());
    let config = ConsumerConfig {
        ops_topic: mesh.topics.ops.clone(),
        ..ConsumerConfig::new(&mesh.infra.brokers, &group, &[topic(&mesh)])
    };
    (mesh, pool, config)
}

#[tokio::test]
async fn a_stuck_client_is_rebuilt_and_the_service_is_not_ready_meanwhile() {
    let (mesh, pool, config) = one_partition().await;
    let config = ConsumerConfig {
        watchdog_window: Duration::from_secs(1),
        session_timeout: Duration::from_secs(6),
        // The first client stops fetching after one record, as a client stuck after a
        // broker crash does.
        stick_after: Some(1),
        ..config
    };
    let readiness = Readiness::default();
    let consumer = recording(&pool, Arc::new(AtomicUsize::new(0)), 0, config).reporting_to(readiness.clone());
    let rebuilds = consumer.rebuilds();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));
    // Whether the service ever reported itself not ready.
    let seen_not_ready = Arc::new(AtomicBool::new(false));
    let mut changes = readiness.watch();
    let seen = seen_not_ready.clone();
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            if !changes.borrow_and_update().is_empty() {
                seen.store(true, Ordering::SeqCst);
            }
        }
    });
    let applied = async || -> Vec<i32> {
        sqlx::query_scalar("SELECT value FROM applied ORDER BY value")
            .fetch_all(&pool)
            .await
            .expect("rows")
    };

    send(&mesh, Some(&uuid::Uuid::now_v7().to_string()), "ok:1").await;
    eventually("the first record", Duration::from_secs(30), async || {
        (applied().await == [1]).then_some(())
    })
    .await;
    // The client is stuck now; these wait for it.
    for n in 2..=4 {
        send(&mesh, Some(&uuid::Uuid::now_v7().to_string()), &format!("ok:{n}")).await;
    }
    eventually(
        "the records behind the stuck client",
        Duration::from_secs(30),
        async || (applied().await.len() >= 4).then_some(()),
    )
    .await;
    assert_eq!(
        applied().await,
        vec![1, 2, 3, 4],
        "nothing skipped, nothing applied twice"
    );
    assert!(rebuilds.load(Ordering::SeqCst) >= 1, "the client was rebuilt");
    assert!(
        seen_not_ready.load(Ordering::SeqCst),
        "readiness reported the stall"
    );
    eventually("ready again", Duration::from_secs(10), async || {
        readiness.is_ready().then_some(())
    })
    .await;
    shutdown.cancel();
    running.await.expect("consumer stops");
}

#[tokio::test]
async fn waiting_records_apply_together_and_a_refused_one_is_set_aside_alone() {
    let (mesh, pool, config) = one_partition().await;
    let run = async |config: ConsumerConfig| {
        let consumer = recording(&pool, Arc::new(AtomicUsize::new(0)), 0, config);
        let shutdown = CancellationToken::new();
        (shutdown.clone(), tokio::spawn(consumer.run(shutdown)))
    };
    let applied = async || -> Vec<(i32, i64)> {
        sqlx::query_as("SELECT value, tx FROM applied ORDER BY value")
            .fetch_all(&pool)
            .await
            .expect("rows")
    };

    // Forty records wait before the consumer starts; one is sent twice.
    let repeated = uuid::Uuid::now_v7().to_string();
    for n in 1..=40 {
        let id = if n == 20 {
            repeated.clone()
        } else {
            uuid::Uuid::now_v7().to_string()
        };
        send(&mesh, Some(&id), &format!("ok:{n}")).await;
    }
    send(&mesh, Some(&repeated), "ok:20").await;
    let (shutdown, running) = run(config.clone()).await;
    eventually("forty records applied", Duration::from_secs(30), async || {
        (applied().await.len() >= 40).then_some(())
    })
    .await;
    let rows = applied().await;
    assert_eq!(
        rows.iter().map(|(value, _)| *value).collect::<Vec<_>>(),
        (1..=40).collect::<Vec<_>>(),
        "each applied once"
    );
    let transactions: std::collections::HashSet<i64> = rows.iter().map(|(_, tx)| *tx).collect();
    assert!(
        transactions.len() < 10,
        "applied together, not in forty transactions: {} transactions",
        transactions.len()
    );
    shutdown.cancel();
    running.await.expect("consumer stops");

    // A batch holding a value the database refuses: the others apply, it alone is set aside.
    for payload in ["ok:41", "ok:-1", "ok:42"] {
        send(&mesh, Some(&uuid::Uuid::now_v7().to_string()), payload).await;
    }
    let (shutdown, running) = run(config).await;
    eventually(
        "the good records of the batch",
        Duration::from_secs(30),
        async || (applied().await.len() >= 42).then_some(()),
    )
    .await;
    let dead: Vec<(i64, String)> = sqlx::query_as("SELECT source_offset, reason FROM kit_dead_letters")
        .fetch_all(&pool)
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, 42, "the refused record, by its offset");
    assert!(dead[0].1.contains("database refused the record"), "{dead:?}");
    assert_eq!(applied().await.len(), 42);
    shutdown.cancel();
    running.await.expect("consumer stops");
}

#[tokio::test]
async fn the_relay_is_woken_only_after_a_commit_that_wrote_an_event() {
    let (mesh, pool, config) = one_partition().await;
    let signal = OutboxSignal::default();
    let consumer = recording(&pool, Arc::new(AtomicUsize::new(0)), 0, config).waking(signal.clone());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));
    let applied = async |count: i64| {
        eventually("records applied", Duration::from_secs(30), async || {
            let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM applied")
                .fetch_one(&pool)
                .await
                .expect("count");
            (applied >= count).then_some(())
        })
        .await;
    };

    // Records whose handling writes no event: the relay has nothing to send.
    for n in 1..=10 {
        send(&mesh, Some(&uuid::Uuid::now_v7().to_string()), &format!("ok:{n}")).await;
    }
    applied(10).await;
    // A wake is kept until taken, so one given at any time since the start shows here.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), signal.notified())
            .await
            .is_err(),
        "the relay was woken though nothing was written to the outbox"
    );

    // A record whose handling writes an event wakes it.
    send(&mesh, Some(&uuid::Uuid::now_v7().to_string()), "ev:11").await;
    applied(11).await;
    tokio::time::timeout(Duration::from_secs(5), signal.notified())
        .await
        .expect("the relay is woken after the commit that wrote an event");
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM kit_outbox WHERE event_type = 'test.published'")
            .fetch_one(&pool)
            .await
            .expect("outbox");
    assert_eq!(events, 1);
    shutdown.cancel();
    running.await.expect("consumer stops");
}
