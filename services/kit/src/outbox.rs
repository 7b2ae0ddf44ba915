//! Transactional outbox: a service writes its state change and the event row in one
//! PostgreSQL transaction ([`enqueue`]); the [`Relay`] publishes rows in id order with an
//! idempotent producer and marks them published, and deletes published rows once older than
//! the retention (`purge`). A broker outage delays events, never loses them; consumers drop
//! the rare duplicate (after a crash between send and mark) by event id.

use std::{cell::Cell, collections::HashMap, future::Future, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use rdkafka::{
    error::KafkaError,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{kafka, telemetry};

mod purge;

/// An event to publish.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub topic: String,
    /// Kafka key: the subject's id, so one subject's events stay in order.
    pub key: String,
    /// Event type, e.g. `supervisee.registered`.
    pub event_type: &'static str,
    /// Protobuf-encoded payload.
    pub payload: Vec<u8>,
    pub occurred_at: DateTime<Utc>,
}

/// Writes `event` into the outbox inside the caller's transaction; returns its event id.
/// The current trace context is stored with it so the trace continues through Kafka.
pub async fn enqueue(conn: &mut PgConnection, event: NewEvent) -> sqlx::Result<Uuid> {
    let event_id = Uuid::now_v7();
    let trace_headers = serde_json::to_value(telemetry::current_trace_headers()).unwrap_or_default();
    sqlx::query(
        "INSERT INTO kit_outbox (event_id, topic, event_key, event_type, payload, trace_headers, occurred_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(event_id)
    .bind(&event.topic)
    .bind(&event.key)
    .bind(event.event_type)
    .bind(&event.payload)
    .bind(trace_headers)
    .bind(event.occurred_at)
    .execute(conn)
    .await?;
    note_enqueued();
    Ok(event_id)
}

/// An event with the trace context it continues.
#[derive(Debug, Clone)]
pub struct TracedEvent {
    pub event: NewEvent,
    /// W3C trace headers (`telemetry::current_trace_headers`).
    pub trace_headers: HashMap<String, String>,
}

impl NewEvent {
    /// This event, continuing the current span's trace (take it inside the span whose
    /// trace the event should carry on).
    pub fn traced(self) -> TracedEvent {
        TracedEvent {
            event: self,
            trace_headers: telemetry::current_trace_headers(),
        }
    }
}

/// Writes `events` into the outbox inside the caller's transaction in one statement, in the
/// order given (ids are UUID v7 taken in that order, and the relay publishes by id): for a
/// change that publishes many events at once, one round trip instead of one per event.
pub async fn enqueue_all(conn: &mut PgConnection, events: &[TracedEvent]) -> sqlx::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let event_ids: Vec<Uuid> = events.iter().map(|_| Uuid::now_v7()).collect();
    let text = |value: fn(&TracedEvent) -> String| events.iter().map(value).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO kit_outbox (event_id, topic, event_key, event_type, payload, trace_headers, occurred_at)
         SELECT event_id, topic, event_key, event_type, payload, trace_headers::jsonb, occurred_at
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[], $7::timestamptz[])
             WITH ORDINALITY AS event(event_id, topic, event_key, event_type, payload, trace_headers, occurred_at, ordinal)
         ORDER BY ordinal",
    )
    .bind(&event_ids)
    .bind(text(|traced| traced.event.topic.clone()))
    .bind(text(|traced| traced.event.key.clone()))
    .bind(text(|traced| traced.event.event_type.to_owned()))
    .bind(events.iter().map(|traced| traced.event.payload.as_slice()).collect::<Vec<_>>())
    .bind(text(|traced| serde_json::to_string(&traced.trace_headers).unwrap_or_default()))
    .bind(events.iter().map(|traced| traced.event.occurred_at).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    note_enqueued();
    Ok(())
}

tokio::task_local! {
    /// Whether the work [`tracking`] runs wrote an event to the outbox.
    static ENQUEUED: Cell<bool>;
}

/// Runs `work` and says whether it wrote an event to the outbox ([`enqueue`] or
/// [`enqueue_all`], however deep in the handler): the consumer wakes the relay after its
/// commit only then, so a stream of check-ins that publish nothing costs the relay nothing.
/// Reading `kit_outbox` instead would cost a query per batch; marking every call site would
/// have every rule that writes an event pass a flag up.
pub async fn tracking<F: Future>(work: F) -> (F::Output, bool) {
    ENQUEUED
        .scope(Cell::new(false), async move {
            let output = work.await;
            (output, ENQUEUED.with(Cell::get))
        })
        .await
}

fn note_enqueued() {
    // Outside `tracking` (an RPC's `Change`, which notes its own events) there is nothing to
    // tell.
    let _ = ENQUEUED.try_with(|enqueued| enqueued.set(true));
}

/// Wakes the relay right after a commit instead of waiting for its next poll.
#[derive(Debug, Clone, Default)]
pub struct OutboxSignal(Arc<Notify>);

impl OutboxSignal {
    pub fn notify(&self) {
        self.0.notify_one();
    }

    /// Resolves once [`OutboxSignal::notify`] was called (at once if it was called since the
    /// last wake: the wake is kept until taken).
    pub async fn notified(&self) {
        self.0.notified().await;
    }
}

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub brokers: String,
    /// Name written into the `producer` header (the service name).
    pub producer: &'static str,
    pub poll_interval: Duration,
    pub batch_size: i64,
    /// How long one send waits for the broker before the batch is retried later.
    pub message_timeout: Duration,
    /// Whether the producer uses Kafka idempotence.
    pub idempotent: bool,
    /// Longest wait between retries while the broker is unreachable.
    pub max_backoff: Duration,
    /// How long a published row is kept before it is deleted.
    pub retention: Duration,
}

impl RelayConfig {
    /// Relay settings from the service's common settings.
    pub fn from_settings(settings: &crate::config::CommonSettings, producer: &'static str) -> Self {
        Self {
            brokers: settings.kafka_brokers.clone(),
            producer,
            poll_interval: settings.outbox_poll_interval,
            batch_size: 500,
            message_timeout: settings.kafka_message_timeout,
            idempotent: settings.kafka_idempotent_producer,
            max_backoff: Duration::from_secs(10),
            retention: settings.outbox_retention,
        }
    }
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    event_id: Uuid,
    topic: String,
    event_key: String,
    event_type: String,
    payload: Vec<u8>,
    trace_headers: serde_json::Value,
    occurred_at: DateTime<Utc>,
}

/// Advisory-lock key: only one relay per database publishes at a time, which keeps the
/// outbox order across replicas.
const RELAY_LOCK_KEY: i64 = 0x6d65_7368_6f75_7462; // "meshoutb"

/// Publishes outbox rows to Kafka.
pub struct Relay {
    pool: PgPool,
    config: RelayConfig,
    producer: FutureProducer,
    signal: OutboxSignal,
}

impl Relay {
    pub fn new(pool: PgPool, config: RelayConfig, signal: OutboxSignal) -> anyhow::Result<Self> {
        let producer = Self::build_producer(&config)?;
        Ok(Self {
            pool,
            config,
            producer,
            signal,
        })
    }

    fn build_producer(config: &RelayConfig) -> anyhow::Result<FutureProducer> {
        Ok(kafka::producer_config(&config.brokers, config.message_timeout, config.idempotent).create()?)
    }

    /// Runs until `shutdown`, then makes one last attempt to flush what is pending.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let published_counter = telemetry::meter().u64_counter("mesh.outbox.published").build();
        let mut backoff = self.config.poll_interval;
        let purge_every = purge::every(self.config.retention);
        let mut next_purge = tokio::time::Instant::now() + purge_every;
        loop {
            if tokio::time::Instant::now() >= next_purge {
                match purge::published_before(&self.pool, self.config.retention).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::debug!(deleted, "published outbox rows purged"),
                    Err(error) => {
                        tracing::warn!(error = %error, "purging published outbox rows failed; will retry")
                    }
                }
                next_purge = tokio::time::Instant::now() + purge_every;
            }
            match self.publish_batch().await {
                Ok(0) => {
                    backoff = self.config.poll_interval;
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = self.signal.notified() => {}
                        _ = tokio::time::sleep(self.config.poll_interval) => {}
                    }
                }
                Ok(published) => {
                    published_counter.add(
                        published as u64,
                        &[telemetry::attribute("producer", self.config.producer)],
                    );
                    backoff = self.config.poll_interval;
                    if shutdown.is_cancelled() {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, retry_in_ms = backoff.as_millis() as u64, "outbox publish failed; will retry");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
        // Flush what the last requests wrote; whatever stays pending is sent after restart.
        match tokio::time::timeout(self.config.message_timeout, self.publish_batch()).await {
            Ok(Ok(count)) => tracing::info!(published = count, "outbox relay stopped"),
            Ok(Err(error)) => tracing::warn!(error = %error, "outbox relay stopped with events pending"),
            Err(_) => tracing::warn!("outbox relay stopped before the final flush finished"),
        }
    }

    /// Publishes one batch of pending rows in id order; returns how many were published.
    pub async fn publish_batch(&mut self) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(RELAY_LOCK_KEY)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            return Ok(0);
        }
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT id, event_id, topic, event_key, event_type, payload, trace_headers, occurred_at
             FROM kit_outbox WHERE published_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(self.config.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }

        // Enqueue the whole batch first (librdkafka keeps per-partition order), then await.
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in &rows {
            let headers = self.headers_for(row);
            let record = FutureRecord::to(&row.topic)
                .key(&row.event_key)
                .payload(&row.payload)
                .headers(headers);
            deliveries.push(self.producer.send_result(record).map_err(|(error, _)| error));
        }
        let mut published = Vec::with_capacity(rows.len());
        let mut first_error: Option<KafkaError> = None;
        for (row, delivery) in rows.iter().zip(deliveries) {
            let outcome = match delivery {
                Ok(future) => match future.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((error, _))) => Err(error),
                    Err(_canceled) => Err(KafkaError::Canceled),
                },
                Err(error) => Err(error),
            };
            match outcome {
                Ok(()) => published.push(row.id),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        sqlx::query("UPDATE kit_outbox SET published_at = now() WHERE id = ANY($1)")
            .bind(&published)
            .execute(&mut *tx)
            .await?;
        if let Some(error) = &first_error {
            let failed: Vec<i64> = rows
                .iter()
                .map(|row| row.id)
                .filter(|id| !published.contains(id))
                .collect();
            sqlx::query("UPDATE kit_outbox SET attempts = attempts + 1, last_error = $2 WHERE id = ANY($1)")
                .bind(&failed)
                .bind(error.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        if let Some(error) = first_error {
            // After timed-out sends an idempotent producer carries sequence state the broker
            // may no longer accept; a fresh producer starts clean. Nothing is lost: the
            // failed rows are still pending.
            self.producer = Self::build_producer(&self.config)?;
            anyhow::bail!(
                "{} of {} events not delivered: {error}",
                rows.len() - published.len(),
                rows.len()
            );
        }
        Ok(published.len())
    }

    fn headers_for(&self, row: &OutboxRow) -> OwnedHeaders {
        let event_id = row.event_id.to_string();
        let occurred_at = row
            .occurred_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: kafka::headers::EVENT_ID,
                value: Some(event_id.as_str()),
            })
            .insert(Header {
                key: kafka::headers::EVENT_TYPE,
                value: Some(row.event_type.as_str()),
            })
            .insert(Header {
                key: kafka::headers::OCCURRED_AT,
                value: Some(occurred_at.as_str()),
            })
            .insert(Header {
                key: kafka::headers::PRODUCER,
                value: Some(self.config.producer),
            });
        let trace: HashMap<String, String> =
            serde_json::from_value(row.trace_headers.clone()).unwrap_or_default();
        for (key, value) in &trace {
            headers = headers.insert(Header {
                key: key.as_str(),
                value: Some(value.as_str()),
            });
        }
        headers
    }
}
