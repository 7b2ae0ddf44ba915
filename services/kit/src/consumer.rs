//! At-least-once Kafka consumer. For each record: begin a transaction, record the event id
//! in the inbox (`ON CONFLICT DO NOTHING`: a redelivered event is skipped), apply the
//! handler's effect, commit, and only then store the offset. A record that can never be
//! applied (no event id, undecodable payload, a permanent rule violation) is copied to the
//! topic's dead-letter topic with the reason and the consumer moves on; infrastructure errors
//! are retried with backoff and never skip a record.

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use rdkafka::{
    ClientContext, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    message::{BorrowedMessage, Header, Headers, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::{kafka, telemetry};

/// A record from Kafka with the mesh's event headers decoded.
#[derive(Debug, Clone)]
pub struct InboundEvent {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub event_id: Uuid,
    pub event_type: String,
    pub occurred_at: Option<DateTime<Utc>>,
    pub producer: Option<String>,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, String>,
}

impl InboundEvent {
    /// Decodes headers; an error is a reason to dead-letter the record.
    fn from_message(message: &BorrowedMessage<'_>) -> Result<Self, String> {
        let headers = header_map(message);
        let event_id = headers
            .get(kafka::headers::EVENT_ID)
            .ok_or("missing event_id header")?
            .parse::<Uuid>()
            .map_err(|_| "event_id header is not a UUID")?;
        let event_type = headers
            .get(kafka::headers::EVENT_TYPE)
            .ok_or("missing event_type header")?
            .clone();
        let occurred_at = headers
            .get(kafka::headers::OCCURRED_AT)
            .and_then(|value| DateTime::parse_from_rfc3339(value).ok())
            .map(|time| time.with_timezone(&Utc));
        Ok(Self {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(|key| String::from_utf8_lossy(key).into_owned()),
            event_id,
            event_type,
            occurred_at,
            producer: headers.get(kafka::headers::PRODUCER).cloned(),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
        })
    }

    /// Decodes the payload as `M`, or a permanent error naming the event type.
    pub fn decode<M: prost::Message + Default>(&self) -> Result<M, HandleError> {
        M::decode(self.payload.as_slice()).map_err(|error| {
            HandleError::Permanent(format!("undecodable {} payload: {error}", self.event_type))
        })
    }
}

fn header_map(message: &BorrowedMessage<'_>) -> HashMap<String, String> {
    let mut map = HashMap::new();
    if let Some(headers) = message.headers() {
        for header in headers.iter() {
            if let Some(value) = header.value.and_then(|value| std::str::from_utf8(value).ok()) {
                map.insert(header.key.to_owned(), value.to_owned());
            }
        }
    }
    map
}

/// How handling an event failed.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The event can never be applied: dead-letter it and move on.
    #[error("{0}")]
    Permanent(String),
    /// Infrastructure trouble (database, network): retry the same event with backoff.
    #[error(transparent)]
    Transient(#[from] anyhow::Error),
}

impl From<crate::error::ServiceError> for HandleError {
    /// What a handler's store or rules return is retried: a handler that knows an event can
    /// never be applied says so with [`HandleError::Permanent`] itself, so an error that
    /// might pass (a projection that has not caught up yet) never dead-letters an event.
    fn from(error: crate::error::ServiceError) -> Self {
        HandleError::Transient(error.into())
    }
}

impl From<sqlx::Error> for HandleError {
    fn from(error: sqlx::Error) -> Self {
        HandleError::Transient(error.into())
    }
}

/// Applies events. Runs inside the transaction that also records the event id, so the
/// effect and the dedup record commit together.
pub trait Handler: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a InboundEvent,
    ) -> impl Future<Output = Result<(), HandleError>> + Send + 'a;
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub brokers: String,
    pub group_id: String,
    pub topics: Vec<String>,
    pub session_timeout: Duration,
    pub max_backoff: Duration,
    /// Whether the dead-letter producer uses Kafka idempotence (see the outbox relay).
    pub idempotent_producer: bool,
}

impl ConsumerConfig {
    /// A consumer of `topics` in the service's own group, with the service's producer mode.
    pub fn from_settings(settings: &crate::config::CommonSettings, topics: &[&str]) -> Self {
        Self {
            idempotent_producer: settings.kafka_idempotent_producer,
            ..Self::new(&settings.kafka_brokers, &settings.consumer_group, topics)
        }
    }

    pub fn new(brokers: &str, group_id: &str, topics: &[&str]) -> Self {
        Self {
            brokers: brokers.to_owned(),
            group_id: group_id.to_owned(),
            topics: topics.iter().map(|topic| (*topic).to_owned()).collect(),
            session_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(30),
            idempotent_producer: false,
        }
    }
}

/// Commits stored offsets before partitions are taken away, so the next owner resumes
/// right after what this consumer applied.
struct CommitOnRevoke;

impl ClientContext for CommitOnRevoke {}

impl ConsumerContext for CommitOnRevoke {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance
            && let Err(error) = consumer.commit_consumer_state(CommitMode::Sync)
        {
            tracing::debug!(error = %error, "no offsets committed on revoke");
        }
    }
}

/// Runs a [`Handler`] over the configured topics.
pub struct EventConsumer<H: Handler> {
    consumer: StreamConsumer<CommitOnRevoke>,
    dead_letters: FutureProducer,
    pool: PgPool,
    handler: Arc<H>,
    config: ConsumerConfig,
    /// Woken after each commit, so events the handler wrote to the outbox leave at once.
    outbox: Option<crate::outbox::OutboxSignal>,
}

impl<H: Handler> EventConsumer<H> {
    pub fn new(pool: PgPool, handler: H, config: ConsumerConfig) -> anyhow::Result<Self> {
        let consumer: StreamConsumer<CommitOnRevoke> =
            kafka::consumer_config(&config.brokers, &config.group_id, config.session_timeout)
                .create_with_context(CommitOnRevoke)?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let dead_letters = kafka::producer_config(
            &config.brokers,
            Duration::from_secs(30),
            config.idempotent_producer,
        )
        .create()?;
        Ok(Self {
            consumer,
            dead_letters,
            pool,
            handler: Arc::new(handler),
            config,
            outbox: None,
        })
    }

    /// Wakes the outbox relay after each applied record.
    pub fn waking(mut self, outbox: crate::outbox::OutboxSignal) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// Consumes until `shutdown`, then commits what it has applied.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                message = self.consumer.recv() => message,
            };
            match message {
                Ok(message) => {
                    backoff = Duration::from_millis(100);
                    if !self.process(&message, &shutdown).await {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, group = %self.config.group_id, "kafka receive failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
        if let Err(error) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %error, "nothing to commit at shutdown");
        }
        tracing::info!(group = %self.config.group_id, "consumer stopped");
    }

    /// Applies one record and stores its offset. Returns false when shutdown interrupted a
    /// retry (the offset is then not stored and the record is redelivered later).
    async fn process(&self, message: &BorrowedMessage<'_>, shutdown: &CancellationToken) -> bool {
        let event = match InboundEvent::from_message(message) {
            Ok(event) => event,
            Err(reason) => {
                if !self.dead_letter(message, &reason, shutdown).await {
                    return false;
                }
                return self.store_offset(message);
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
        loop {
            match self.apply(&event).instrument(span.clone()).await {
                Ok(()) => break,
                Err(HandleError::Permanent(reason)) => {
                    if !self.dead_letter(message, &reason, shutdown).await {
                        return false;
                    }
                    break;
                }
                Err(HandleError::Transient(error)) => {
                    tracing::warn!(parent: &span, error = %error, retry_in_ms = backoff.as_millis() as u64, "event not applied; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
        self.store_offset(message)
    }

    async fn apply(&self, event: &InboundEvent) -> Result<(), HandleError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO kit_inbox (consumer, event_id, topic, kafka_partition, kafka_offset)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&self.config.group_id)
        .bind(event.event_id)
        .bind(&event.topic)
        .bind(event.partition)
        .bind(event.offset)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tracing::debug!(event_id = %event.event_id, "duplicate event skipped");
            return Ok(());
        }
        self.handler.handle(&mut tx, event).await?;
        tx.commit().await?;
        if let Some(outbox) = &self.outbox {
            outbox.notify();
        }
        Ok(())
    }

    fn store_offset(&self, message: &BorrowedMessage<'_>) -> bool {
        let mut list = TopicPartitionList::new();
        if let Err(error) = list
            .add_partition_offset(
                message.topic(),
                message.partition(),
                Offset::Offset(message.offset() + 1),
            )
            .and_then(|()| self.consumer.store_offsets(&list))
        {
            // The partition was revoked meanwhile: the next owner re-reads the record and the
            // inbox makes that harmless.
            tracing::warn!(error = %error, topic = message.topic(), offset = message.offset(), "offset not stored");
        }
        true
    }

    /// Copies a record to the dead-letter topic, retrying until the broker accepts it.
    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        reason: &str,
        shutdown: &CancellationToken,
    ) -> bool {
        let dlq_topic = kafka::dead_letter_topic(message.topic());
        tracing::warn!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            reason,
            "dead-lettering record"
        );
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let mut backoff = Duration::from_millis(200);
        loop {
            let mut headers = OwnedHeaders::new();
            if let Some(original) = message.headers() {
                for header in original.iter() {
                    headers = headers.insert(Header {
                        key: header.key,
                        value: header.value,
                    });
                }
            }
            let headers = headers
                .insert(Header {
                    key: kafka::headers::DLQ_REASON,
                    value: Some(reason),
                })
                .insert(Header {
                    key: kafka::headers::DLQ_SOURCE_TOPIC,
                    value: Some(message.topic()),
                })
                .insert(Header {
                    key: kafka::headers::DLQ_SOURCE_PARTITION,
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: kafka::headers::DLQ_SOURCE_OFFSET,
                    value: Some(offset.as_str()),
                })
                .insert(Header {
                    key: kafka::headers::DLQ_CONSUMER,
                    value: Some(self.config.group_id.as_str()),
                });
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&dlq_topic).headers(headers);
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            if let Some(payload) = message.payload() {
                record = record.payload(payload);
            }
            match self.dead_letters.send(record, Duration::from_secs(5)).await {
                Ok(_) => return true,
                Err((error, _)) => {
                    tracing::warn!(error = %error, topic = %dlq_topic, "dead-letter publish failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
    }
}
