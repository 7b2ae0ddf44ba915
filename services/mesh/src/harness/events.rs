//! Kafka as the tests and the benchmark see it: taps that read a topic back outside any
//! consumer group, and publishing events with the mesh's headers as a service's relay would.

use std::{collections::HashMap, time::Duration};

use anyhow::bail;
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{Consumer, StreamConsumer},
    message::{Header, Headers, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};

use super::Infra;

/// An event read back from Kafka.
#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub headers: HashMap<String, String>,
    pub payload: Vec<u8>,
}

impl ReceivedEvent {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Reads a topic from a given position, outside any consumer group's commits.
pub struct EventTap {
    consumer: StreamConsumer,
}

impl EventTap {
    /// Reads `topic` from the beginning.
    pub fn from_beginning(infra: &Infra, topic: &str) -> anyhow::Result<Self> {
        Self::open(infra, topic, |_, _| Ok(Offset::Beginning))
    }

    /// Reads only what is published to `topic` from now on.
    pub fn from_now(infra: &Infra, topic: &str) -> anyhow::Result<Self> {
        Self::open(infra, topic, |consumer, partition| {
            let (_, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
            Ok(Offset::Offset(high))
        })
    }

    fn open(
        infra: &Infra,
        topic: &str,
        start: impl Fn(&StreamConsumer, i32) -> anyhow::Result<Offset>,
    ) -> anyhow::Result<Self> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &infra.brokers)
            .set("group.id", format!("tap-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            // as the services' consumers do (kit::kafka::consumer_config says why)
            .set("isolation.level", "read_uncommitted")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            bail!("topic {topic} has no partitions (does it exist?)");
        }
        let mut assignment = TopicPartitionList::new();
        for partition in partitions {
            assignment.add_partition_offset(topic, partition, start(&consumer, partition)?)?;
        }
        consumer.assign(&assignment)?;
        Ok(Self { consumer })
    }

    /// The next event, or `None` if nothing arrives within `timeout`.
    pub async fn next(&self, timeout: Duration) -> anyhow::Result<Option<ReceivedEvent>> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Connection errors (a broker still starting) are transient: keep waiting.
        let message = loop {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Err(_) => return Ok(None),
                Ok(Ok(message)) => break message,
                Ok(Err(error)) => {
                    eprintln!("event tap: {error}; still waiting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let mut headers = HashMap::new();
        if let Some(list) = message.headers() {
            for header in list.iter() {
                if let Some(value) = header.value {
                    headers.insert(header.key.to_owned(), String::from_utf8_lossy(value).into_owned());
                }
            }
        }
        Ok(Some(ReceivedEvent {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            headers,
            payload: message.payload().unwrap_or_default().to_vec(),
        }))
    }

    /// Collects events until `count` arrived or `timeout` passed with nothing new.
    pub async fn collect(&self, count: usize, idle_timeout: Duration) -> anyhow::Result<Vec<ReceivedEvent>> {
        let mut events = Vec::new();
        while events.len() < count {
            match self.next(idle_timeout).await? {
                Some(event) => events.push(event),
                None => break,
            }
        }
        Ok(events)
    }
}

/// A producer for publishing events as a service would (tests, benchmark).
pub fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()?)
}

/// Publishes one event with the mesh's Kafka headers (`event_id`, `event_type`,
/// `occurred_at`, `producer` = the event type's prefix), as its producing service would, and
/// waits for the broker's acknowledgement. Returns the event id.
pub async fn publish_event(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    event_type: &str,
    payload: &[u8],
) -> anyhow::Result<uuid::Uuid> {
    use mesh_kit::kafka::headers;
    let id = uuid::Uuid::now_v7();
    let event_id = id.to_string();
    let occurred_at = chrono::Utc::now().to_rfc3339();
    let record_headers = [
        (headers::EVENT_ID, event_id.as_str()),
        (headers::EVENT_TYPE, event_type),
        (headers::OCCURRED_AT, occurred_at.as_str()),
        (
            headers::PRODUCER,
            event_type.split('.').next().unwrap_or_default(),
        ),
    ];
    publish_record(producer, topic, key, &record_headers, payload).await?;
    Ok(id)
}

/// Publishes one record with exactly `headers` and waits for the broker's acknowledgement;
/// for records no service would write (a missing event id, say), to test what consumers do
/// with them.
pub async fn publish_record(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    headers: &[(&str, &str)],
    payload: &[u8],
) -> anyhow::Result<()> {
    let record_headers = headers.iter().fold(OwnedHeaders::new(), |list, (key, value)| {
        list.insert(Header {
            key,
            value: Some(*value),
        })
    });
    producer
        .send(
            FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .headers(record_headers),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(error, _)| error)?;
    Ok(())
}
