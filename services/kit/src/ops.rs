//! Operational events (`ops.*` on the operations topic): what a consumer set aside, replayed,
//! or kept failing on. They are written to the service's outbox inside the transaction that
//! records the fact, so an operator hears of every dead letter and every stall.

use chrono::{DateTime, Utc};
use mesh_proto::ops as pb;
use prost::Message;

use crate::{consumer::InboundEvent, outbox::NewEvent, proto_time::to_timestamp};

/// A record was set aside in `kit_dead_letters`.
pub const DEAD_LETTERED: &str = "ops.dead_lettered";
/// A dead letter applied on replay.
pub const DEAD_LETTER_REPLAYED: &str = "ops.dead_letter_replayed";
/// A record has kept failing for longer than the stall cap.
pub const CONSUMER_STALLED: &str = "ops.consumer_stalled";
/// The stalled record applied at last.
pub const CONSUMER_RECOVERED: &str = "ops.consumer_recovered";

/// Which consumer of which service writes operational events, and where to.
#[derive(Debug, Clone)]
pub struct Reporter {
    pub service: String,
    pub consumer: String,
    pub topic: String,
}

/// Where a record came from, as the events name it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub event_type: Option<String>,
    pub event_id: Option<uuid::Uuid>,
}

impl From<&InboundEvent> for Origin {
    fn from(event: &InboundEvent) -> Self {
        Self {
            topic: event.topic.clone(),
            partition: event.partition,
            offset: event.offset,
            key: event.key.clone(),
            event_type: Some(event.event_type.clone()),
            event_id: Some(event.event_id),
        }
    }
}

impl Reporter {
    fn record(&self, origin: &Origin) -> pb::ConsumedRecord {
        pb::ConsumedRecord {
            service: self.service.clone(),
            consumer: self.consumer.clone(),
            topic: origin.topic.clone(),
            partition: origin.partition,
            offset: origin.offset,
            event_type: origin.event_type.clone().unwrap_or_default(),
            event_id: origin.event_id.map(|id| id.to_string()).unwrap_or_default(),
        }
    }

    /// One consumer's operational events share a key, so they stay in order (stalled before
    /// recovered, dead-lettered before replayed).
    fn event(&self, event_type: &'static str, payload: Vec<u8>, at: DateTime<Utc>) -> NewEvent {
        NewEvent {
            topic: self.topic.clone(),
            key: self.consumer.clone(),
            event_type,
            payload,
            occurred_at: at,
        }
    }

    pub fn dead_lettered(
        &self,
        dead_letter_id: i64,
        origin: &Origin,
        reason: &str,
        payload: &[u8],
        at: DateTime<Utc>,
    ) -> NewEvent {
        let message = pb::DeadLettered {
            dead_letter_id,
            record: Some(self.record(origin)),
            reason: reason.to_owned(),
            key: origin.key.clone().unwrap_or_default(),
            payload: payload.to_vec(),
            dead_lettered_at: Some(to_timestamp(at)),
        };
        self.event(DEAD_LETTERED, message.encode_to_vec(), at)
    }

    pub fn dead_letter_replayed(&self, dead_letter_id: i64, origin: &Origin, at: DateTime<Utc>) -> NewEvent {
        let message = pb::DeadLetterReplayed {
            dead_letter_id,
            record: Some(self.record(origin)),
            replayed_at: Some(to_timestamp(at)),
        };
        self.event(DEAD_LETTER_REPLAYED, message.encode_to_vec(), at)
    }

    pub fn stalled(
        &self,
        event: &InboundEvent,
        reason: &str,
        failing_since: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> NewEvent {
        let message = pb::ConsumerStalled {
            record: Some(self.record(&Origin::from(event))),
            reason: reason.to_owned(),
            failing_since: Some(to_timestamp(failing_since)),
            key: event.key.clone().unwrap_or_default(),
            payload: event.payload.clone(),
        };
        self.event(CONSUMER_STALLED, message.encode_to_vec(), at)
    }

    pub fn recovered(
        &self,
        event: &InboundEvent,
        failing_since: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> NewEvent {
        let message = pb::ConsumerRecovered {
            record: Some(self.record(&Origin::from(event))),
            failing_since: Some(to_timestamp(failing_since)),
            recovered_at: Some(to_timestamp(at)),
        };
        self.event(CONSUMER_RECOVERED, message.encode_to_vec(), at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_event_names_the_record_and_carries_it() {
        let reporter = Reporter {
            service: "risk-alert".into(),
            consumer: "risk-alert".into(),
            topic: "ops.events".into(),
        };
        let origin = Origin {
            topic: "checkin.events".into(),
            partition: 3,
            offset: 41,
            key: Some("person".into()),
            event_type: Some("checkin.recorded".into()),
            event_id: None,
        };
        let event = reporter.dead_lettered(7, &origin, "bad", b"payload", Utc::now());
        assert_eq!(event.event_type, DEAD_LETTERED);
        assert_eq!(event.key, "risk-alert");
        let decoded = pb::DeadLettered::decode(event.payload.as_slice()).expect("decodes");
        let record = decoded.record.expect("record");
        assert_eq!(
            (record.topic.as_str(), record.partition, record.offset),
            ("checkin.events", 3, 41)
        );
        assert_eq!(record.event_id, "");
        assert_eq!(
            (decoded.key.as_str(), decoded.payload.as_slice()),
            ("person", &b"payload"[..])
        );
        assert_eq!(decoded.dead_letter_id, 7);
    }
}
