//! Kafka client settings shared by the outbox relay and the consumers, and the mesh's topic
//! names (one topic per producing service, and the operations topic every service writes to).

use std::{sync::RwLock, time::Duration};

use rdkafka::ClientConfig;

/// Topic of registry events (`supervisee.*`).
pub const REGISTRY_TOPIC: &str = "registry.events";
/// Topic of check-in events (`checkin.*`).
pub const CHECKIN_TOPIC: &str = "checkin.events";
/// Topic of handover events (`handover.*`).
pub const HANDOVER_TOPIC: &str = "handover.events";
/// Topic of placement events (`placement.*`).
pub const PLACEMENT_TOPIC: &str = "placement.events";
/// Topic of risk-alert events (`alert.*`).
pub const ALERT_TOPIC: &str = "alert.events";

/// Topic of operational events every service writes (`ops.*`: dead letters, stalls).
pub const OPS_TOPIC: &str = "ops.events";

/// Every event topic of the mesh.
pub const ALL_TOPICS: [&str; 6] = [
    REGISTRY_TOPIC,
    CHECKIN_TOPIC,
    HANDOVER_TOPIC,
    PLACEMENT_TOPIC,
    ALERT_TOPIC,
    OPS_TOPIC,
];

/// The topic names a service uses, overridable per deployment (and per test, so tests can
/// run side by side on one broker): `MESH_<SERVICE>_TOPIC`, e.g. `MESH_REGISTRY_TOPIC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub registry: String,
    pub checkin: String,
    pub handover: String,
    pub placement: String,
    pub alert: String,
    pub ops: String,
}

impl Topics {
    pub fn read(reader: &mut crate::config::Reader<'_>) -> Self {
        let mut topic = |name: &str, default: &str| reader.optional(name, default.to_owned());
        Self {
            registry: topic("MESH_REGISTRY_TOPIC", REGISTRY_TOPIC),
            checkin: topic("MESH_CHECKIN_TOPIC", CHECKIN_TOPIC),
            handover: topic("MESH_HANDOVER_TOPIC", HANDOVER_TOPIC),
            placement: topic("MESH_PLACEMENT_TOPIC", PLACEMENT_TOPIC),
            alert: topic("MESH_ALERT_TOPIC", ALERT_TOPIC),
            ops: topic("MESH_OPS_TOPIC", OPS_TOPIC),
        }
    }

    /// The variables that point a service at these topics (for spawning services).
    pub fn env(&self) -> [(&'static str, &str); 6] {
        [
            ("MESH_REGISTRY_TOPIC", &self.registry),
            ("MESH_CHECKIN_TOPIC", &self.checkin),
            ("MESH_HANDOVER_TOPIC", &self.handover),
            ("MESH_PLACEMENT_TOPIC", &self.placement),
            ("MESH_ALERT_TOPIC", &self.alert),
            ("MESH_OPS_TOPIC", &self.ops),
        ]
    }

    /// Fresh, unique topic names (tests).
    pub fn unique(prefix: &str) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let name = |service: &str| format!("{prefix}.{service}.{id}");
        Self {
            registry: name("registry"),
            checkin: name("checkin"),
            handover: name("handover"),
            placement: name("placement"),
            alert: name("alert"),
            ops: name("ops"),
        }
    }

    pub fn all(&self) -> [&str; 6] {
        [
            &self.registry,
            &self.checkin,
            &self.handover,
            &self.placement,
            &self.alert,
            &self.ops,
        ]
    }
}

/// Kafka header names carried by every event.
pub mod headers {
    pub const EVENT_ID: &str = "event_id";
    pub const EVENT_TYPE: &str = "event_type";
    pub const OCCURRED_AT: &str = "occurred_at";
    pub const PRODUCER: &str = "producer";
}

/// Extra librdkafka properties of this process (`MESH_KAFKA_CLIENT_CONFIG`), set once from
/// the configuration; empty by default.
static CLIENT_CONFIG: RwLock<Vec<(String, String)>> = RwLock::new(Vec::new());

/// Sets the extra properties every client created afterwards gets (see [`client_config`]).
pub fn set_client_config(properties: Vec<(String, String)>) {
    if let Ok(mut config) = CLIENT_CONFIG.write() {
        *config = properties;
    }
}

/// Parses `name=value` pairs separated by commas, e.g.
/// `session.timeout.ms=45000,auto.commit.interval.ms=5000`.
pub fn parse_client_config(value: &str) -> Result<Vec<(String, String)>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() && !value.trim().is_empty() => {
                Ok((name.trim().to_owned(), value.trim().to_owned()))
            }
            _ => Err(format!("{pair:?} is not name=value")),
        })
        .collect()
}

/// Applies the process's extra properties (`MESH_KAFKA_CLIENT_CONFIG`) over `config`. They
/// exist for brokers that need other settings than Apache Kafka does: the local Tansu broker
/// with SQLite storage answers group requests slowly under load (see `docs/tansu.md`), so
/// `scripts/infra` prints the settings the services need against it. With Apache Kafka the
/// variable stays unset and the kit's settings below apply unchanged.
pub fn client_config(mut config: ClientConfig) -> ClientConfig {
    if let Ok(extra) = CLIENT_CONFIG.read() {
        for (name, value) in extra.iter() {
            config.set(name, value);
        }
    }
    config
}

/// Config of a producer that never reorders within a partition. `message_timeout` bounds
/// how long a send waits for a down broker before reporting failure (the outbox then keeps
/// the row and tries again).
///
/// With `idempotent` the broker also drops retried duplicates (Apache Kafka). Without it,
/// one request in flight per connection keeps the order and the consumers' inbox drops the
/// rare duplicate. Tansu 0.6 needs `idempotent = false`: after a crash and restart its
/// idempotent-produce check panics the storage task and the broker stops accepting writes.
pub fn producer_config(brokers: &str, message_timeout: Duration, idempotent: bool) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", message_timeout.as_millis().to_string())
        .set("client.id", "mesh");
    if idempotent {
        config.set("enable.idempotence", "true");
    } else {
        config
            .set("enable.idempotence", "false")
            .set("max.in.flight.requests.per.connection", "1");
    }
    client_config(config)
}

/// Config of an at-least-once consumer: offsets are stored by the application only after
/// the effect committed, and the stored offsets are auto-committed in the background.
///
/// It reads `read_uncommitted`: the mesh's producers are outboxes that write no Kafka
/// transactions, so there is nothing a `read_committed` reader would hold back, and reading
/// uncommitted spares the broker the last-stable-offset computation on every watermark
/// query (the lag monitor's). Tansu's PostgreSQL engine cannot answer that query on
/// PostgreSQL 15 at all (docs/tansu.md). A producer that starts using Kafka transactions
/// must bring `read_committed` back.
pub fn consumer_config(brokers: &str, group_id: &str, session_timeout: Duration) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("isolation.level", "read_uncommitted")
        .set("group.id", group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", session_timeout.as_millis().to_string())
        .set("enable.partition.eof", "false");
    client_config(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_config_is_name_value_pairs_separated_by_commas() {
        assert_eq!(
            parse_client_config(" session.timeout.ms=45000, auto.commit.interval.ms = 5000 ,"),
            Ok(vec![
                ("session.timeout.ms".to_owned(), "45000".to_owned()),
                ("auto.commit.interval.ms".to_owned(), "5000".to_owned()),
            ])
        );
        assert_eq!(parse_client_config(""), Ok(vec![]));
        assert!(parse_client_config("session.timeout.ms").is_err());
        assert!(parse_client_config("=1").is_err());
    }
}
