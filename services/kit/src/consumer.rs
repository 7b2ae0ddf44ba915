//! At-least-once Kafka consumer. For each record: begin a transaction, record the event id
//! in the inbox (`ON CONFLICT DO NOTHING`: a redelivered event is skipped), apply the
//! handler's effect, commit, and only then store the offset. A record that can never be
//! applied (no event id, undecodable payload, bad data: SQLSTATE classes 22/23, a refused
//! value) is set aside in the service's own `kit_dead_letters` table with an
//! `ops.dead_lettered` event, and the consumer moves on. Everything else is retried with
//! backoff and never skips a record; a record failing for longer than the stall cap writes
//! one `ops.consumer_stalled` event, and `ops.consumer_recovered` when it applies at last.
//! Beside the live records, a replay worker applies the dead letters an operator asked to
//! replay (`mesh dlq replay`), through the same handler and inbox. A watchdog rebuilds the
//! Kafka client when it is stuck (`watchdog.rs`): the consumer is cattle, the committed
//! offset the truth; while stuck, the service's readiness reports NOT_SERVING.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

mod batch;
mod client;
mod config;
mod event;
pub mod inbox;
mod replay;
mod stall;
mod watchdog;

use client::{Client, close, stick, store_offset};
pub use config::ConsumerConfig;
use event::Received;
pub use event::{HandleError, Handler, InboundEvent};

use crate::{
    dead_letter, kafka,
    ops::{Origin, Reporter},
    readiness::Readiness,
    stalls::Place,
    telemetry,
};
use watchdog::{Progress, Watchdog};

/// The longest pause after a receive error (see `consume`).
const RECEIVE_ERROR_PAUSE_MAX: Duration = Duration::from_millis(500);

/// Runs a [`Handler`] over the configured topics, and replays the dead letters an operator
/// asked to replay through the same handler.
pub struct EventConsumer<H: Handler> {
    pool: PgPool,
    handler: Arc<H>,
    config: ConsumerConfig,
    reporter: Reporter,
    /// Woken after a commit that wrote to the outbox, so the handler's events leave at once.
    outbox: Option<crate::outbox::OutboxSignal>,
    /// The records this consumer group reported stalled on and has not got past (a copy of
    /// `kit_consumer_stalls`, refreshed by the replay loop), with when each began failing.
    stalled: Mutex<HashMap<Place, DateTime<Utc>>>,
    watchdog: Watchdog,
    /// Where a stuck client is reported (NOT_SERVING until it delivers again).
    readiness: Readiness,
    rebuilds: Arc<AtomicU64>,
    rebuild_counter: opentelemetry::metrics::Counter<u64>,
}

impl<H: Handler> EventConsumer<H> {
    pub fn new(pool: PgPool, handler: H, config: ConsumerConfig) -> anyhow::Result<Self> {
        // The watchdog's probe reads the group's committed offsets; it never joins the group.
        // Built from the same settings as the consumer's own client, it also refuses a bad
        // setting here, at start, rather than in the loop.
        let probe =
            kafka::consumer_config(&config.brokers, &config.group_id, config.session_timeout).create()?;
        let watchdog = Watchdog::new(
            probe,
            &config.topics,
            config.watchdog_window,
            config.session_timeout,
        );
        let reporter = Reporter {
            service: config.service.clone(),
            consumer: config.group_id.clone(),
            topic: config.ops_topic.clone(),
        };
        let rebuild_counter = telemetry::meter()
            .u64_counter("mesh.consumer.rebuilds")
            .with_description("Kafka clients rebuilt because they were stuck")
            .build();
        let consumer = Self {
            pool,
            handler: Arc::new(handler),
            config,
            reporter,
            outbox: None,
            stalled: Mutex::default(),
            watchdog,
            readiness: Readiness::default(),
            rebuilds: Arc::default(),
            rebuild_counter,
        };
        Ok(consumer)
    }

    /// Reports a stuck client to `readiness` (the service's health), as `consumer <group>`.
    pub fn reporting_to(mut self, readiness: Readiness) -> Self {
        self.readiness = readiness;
        self
    }

    /// How many times the client was rebuilt (shared: it counts on after `run` starts).
    pub fn rebuilds(&self) -> Arc<AtomicU64> {
        self.rebuilds.clone()
    }

    /// The name of this consumer in the service's readiness.
    fn part(&self) -> String {
        format!("consumer {}", self.config.group_id)
    }

    /// Wakes the outbox relay after each commit that wrote an event.
    pub fn waking(mut self, outbox: crate::outbox::OutboxSignal) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// Consumes and replays until `shutdown`, then commits what it has applied.
    pub async fn run(self, shutdown: CancellationToken) {
        // Before the first record, so a stall an earlier process reported is recognised.
        self.refresh_stalls().await;
        tokio::join!(self.consume(&shutdown), self.replay(&shutdown));
        tracing::info!(group = %self.config.group_id, "consumer stopped");
    }

    /// Receives with one client after another: a client the watchdog finds stuck is closed
    /// (its stored offsets committed) and replaced by a new one of the same group, which
    /// resumes from the committed offsets.
    async fn consume(&self, shutdown: &CancellationToken) {
        let part = self.part();
        let mut failed_rebuilds = 0;
        let mut generation = 0;
        loop {
            let client = match self.client() {
                Ok(client) => client,
                Err(error) => {
                    tracing::error!(error = %error, group = %self.config.group_id, "kafka client not created; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(RECEIVE_ERROR_PAUSE_MAX) => continue,
                    }
                }
            };
            let progress = Progress::new();
            let window = self.watchdog.window(failed_rebuilds);
            let stuck = tokio::select! {
                () = self.receive(&client, &progress, generation, shutdown) => None,
                reason = self.watchdog.stuck(&client, &progress, window, || self.readiness.recovered(&part)) => Some(reason),
            };
            close(client).await;
            let Some(reason) = stuck else { break };
            self.readiness.stalled(&part);
            self.rebuilds.fetch_add(1, Ordering::SeqCst);
            self.rebuild_counter
                .add(1, &[telemetry::attribute("group", self.config.group_id.clone())]);
            tracing::error!(group = %self.config.group_id, reason, "kafka client stuck: rebuilt (same group, from the committed offsets)");
            failed_rebuilds = if progress.deliveries() > 0 {
                0
            } else {
                failed_rebuilds + 1
            };
            generation += 1;
        }
        self.readiness.recovered(&part);
    }

    /// Receives and applies records with `client` until `shutdown`: what the client holds
    /// is taken as one batch (`batch.rs`).
    async fn receive(
        &self,
        client: &Client,
        progress: &Progress,
        generation: u64,
        shutdown: &CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(100);
        let mut applied = 0;
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                message = client.recv() => message,
            };
            match message {
                Ok(message) => {
                    backoff = Duration::from_millis(100);
                    progress.delivered();
                    let first = Received::from_message(&message);
                    drop(message);
                    let batch = self.gather(client, first, progress).await;
                    let count = batch.len() as u64;
                    if !self.apply_batch(client, batch, shutdown).await {
                        break;
                    }
                    progress.idle();
                    let before = applied;
                    applied += count;
                    if generation == 0
                        && self
                            .config
                            .stick_after
                            .is_some_and(|after| before < after && after <= applied)
                    {
                        stick(client);
                    }
                }
                Err(error) => {
                    // librdkafka reports transport trouble as errors on the queue and
                    // reconnects by itself; it can only rejoin the group and fetch while it is
                    // polled. A long pause per queued error (an outage queues many) kept
                    // consumers away for minutes after the broker was back: pause briefly.
                    tracing::warn!(error = %error, group = %self.config.group_id, "kafka receive failed; retrying");
                    progress.receive_error();
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(RECEIVE_ERROR_PAUSE_MAX);
                }
            }
        }
    }

    /// Applies one record on its own and stores its offset: retried while it fails
    /// temporarily, set aside when it can never apply. Returns false when shutdown
    /// interrupted a retry (the offset is then not stored and the record is redelivered).
    async fn process(&self, client: &Client, record: Received, shutdown: &CancellationToken) -> bool {
        let event = match record {
            Received::Event(event) => event,
            Received::Poison {
                origin,
                headers,
                payload,
                reason,
            } => {
                if !self
                    .dead_letter(&origin, &headers, &payload, &reason, shutdown)
                    .await
                {
                    return false;
                }
                store_offset(client, &origin.topic, origin.partition, origin.offset);
                return true;
            }
        };
        let span = tracing::info_span!(
            "consume",
            otel.kind = "consumer",
            topic = %event.topic,
            partition = event.partition,
            offset = event.offset,
            event_type = %event.event_type,
            event_id = %event.event_id,
        );
        telemetry::set_parent_from_headers(&span, &event.headers);
        let mut backoff = Duration::from_millis(100);
        let mut failing_since = None;
        loop {
            match self.apply(&event).instrument(span.clone()).await {
                Ok(()) => {
                    self.recover(&event).await;
                    break;
                }
                Err(HandleError::Permanent(reason)) => {
                    let origin = Origin::from(&event);
                    if !self
                        .dead_letter(&origin, &event.headers, &event.payload, &reason, shutdown)
                        .await
                    {
                        return false;
                    }
                    // Set aside, it no longer holds the partition up.
                    self.recover(&event).await;
                    break;
                }
                Err(HandleError::Transient(error)) => {
                    tracing::warn!(parent: &span, error = format!("{error:#}"), retry_in_ms = backoff.as_millis() as u64, "event not applied; retrying");
                    let since = *failing_since.get_or_insert_with(|| (Instant::now(), Utc::now()));
                    self.check_stall(&event, since, &error).await;
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.config.retry_cap());
                }
            }
        }
        store_offset(client, &event.topic, event.partition, event.offset);
        true
    }

    fn wake_outbox(&self) {
        if let Some(outbox) = &self.outbox {
            outbox.notify();
        }
    }

    /// Runs `commit` (a transaction it commits) and wakes the relay if it wrote an event.
    async fn waking_after(
        &self,
        commit: impl std::future::Future<Output = Result<(), HandleError>>,
    ) -> Result<(), HandleError> {
        let (committed, enqueued) = crate::outbox::tracking(commit).await;
        if enqueued && committed.is_ok() {
            self.wake_outbox();
        }
        committed
    }

    async fn apply(&self, event: &InboundEvent) -> Result<(), HandleError> {
        self.waking_after(async {
            let mut tx = self.pool.begin().await?;
            self.apply_in(&mut tx, event).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Records the event id in the inbox and applies the event in `conn`'s transaction; a
    /// duplicate is skipped. The live consumer and the replay worker both apply this way.
    async fn apply_in(&self, conn: &mut PgConnection, event: &InboundEvent) -> Result<(), HandleError> {
        let inserted = sqlx::query(
            "INSERT INTO kit_inbox (consumer, event_id, topic, kafka_partition, kafka_offset)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&self.config.group_id)
        .bind(event.event_id)
        .bind(&event.topic)
        .bind(event.partition)
        .bind(event.offset)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if inserted == 0 {
            tracing::debug!(event_id = %event.event_id, "duplicate event skipped");
            return Ok(());
        }
        self.handler.handle(conn, event).await
    }

    /// Sets a record aside in the service's database (with its `ops.dead_lettered` event),
    /// retrying until the database takes it: the offset moves on only once it is stored.
    async fn dead_letter(
        &self,
        origin: &Origin,
        headers: &HashMap<String, String>,
        payload: &[u8],
        reason: &str,
        shutdown: &CancellationToken,
    ) -> bool {
        tracing::warn!(
            topic = %origin.topic,
            partition = origin.partition,
            offset = origin.offset,
            reason,
            "dead-lettering record"
        );
        let mut backoff = Duration::from_millis(200);
        loop {
            match dead_letter::set_aside(
                &self.pool,
                &self.reporter,
                origin,
                headers,
                payload,
                reason,
                Utc::now(),
            )
            .await
            {
                Ok(id) => {
                    if let Some(id) = id {
                        tracing::warn!(dead_letter_id = id, topic = %origin.topic, offset = origin.offset, "record set aside; `mesh dlq list` shows it");
                    }
                    self.wake_outbox();
                    return true;
                }
                Err(error) => {
                    tracing::error!(error = %error, topic = %origin.topic, offset = origin.offset, "dead letter not stored; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.config.retry_cap());
                }
            }
        }
    }
}

/// Where a record is: its topic, partition and offset.
fn place(event: &InboundEvent) -> Place {
    (event.topic.clone(), event.partition, event.offset)
}
