//! The consumer of operational events (`ops.*`, from every service): each dead-lettered
//! record raises a dead-letter alert and its replay resolves it; a stalled consumer raises a
//! stalled-consumer alert and its recovery resolves it. The alert goes to the jurisdiction
//! the original record names when risk-alert can read it, else to the operators.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use mesh_kit::{
    clock::SharedClock,
    consumer::{HandleError, Handler, InboundEvent},
    events, ops,
    proto_time::from_timestamp,
};
use mesh_proto::{checkin::CheckinRecorded, ops as pb};
use prost::Message;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    convert::jurisdiction_from_proto,
    domain::{
        Jurisdiction,
        alert::{Resolution, Subject, SubjectKind},
        operations::{self, ConsumedRecord, DeadLetter, Stall, Whose},
    },
    lifecycle::Lifecycle,
    store,
};

/// Raises and resolves operational alerts.
pub struct Operations {
    pub clock: SharedClock,
    pub lifecycle: Lifecycle,
}

impl Handler for Operations {
    async fn handle(&self, conn: &mut PgConnection, event: &InboundEvent) -> Result<(), HandleError> {
        match self.apply(conn, event).await {
            // The dead letter of an operational event is announced on this very topic: were
            // its alert refused for good too, each refusal would announce another, without
            // end. Held and retried instead, the failure stalls this consumer loudly.
            Err(HandleError::Permanent(reason)) if about_this_topic(event) => Err(HandleError::Transient(
                anyhow::anyhow!("the alert of an operational event's own dead letter was refused: {reason}"),
            )),
            outcome => outcome,
        }
    }
}

/// Whether `event` is about a record of the topic it came on (the operations topic).
fn about_this_topic(event: &InboundEvent) -> bool {
    let record = match event.event_type.as_str() {
        ops::DEAD_LETTERED => event.decode::<pb::DeadLettered>().ok().and_then(|m| m.record),
        _ => None,
    };
    record.is_some_and(|record| record.topic == event.topic)
}

impl Operations {
    async fn apply(&self, conn: &mut PgConnection, event: &InboundEvent) -> Result<(), HandleError> {
        let now = self.clock.now();
        match event.event_type.as_str() {
            ops::DEAD_LETTERED => {
                let message = event.decode::<pb::DeadLettered>()?;
                let record = record(message.record);
                let dead_letter = DeadLetter {
                    dead_letter_id: message.dead_letter_id,
                    whose: whose(&record.event_type, &message.payload),
                    reason: clean(&message.reason),
                    at: time(message.dead_lettered_at, now),
                    record,
                };
                self.lifecycle
                    .raise(conn, operations::dead_letter_alert(&dead_letter), now)
                    .await?;
            }
            ops::DEAD_LETTER_REPLAYED => {
                let message = event.decode::<pb::DeadLetterReplayed>()?;
                let record = record(message.record);
                let key = operations::dead_letter_key(&record.consumer, message.dead_letter_id);
                self.resolve(conn, &key, operations::replayed(message.dead_letter_id), now)
                    .await?;
            }
            ops::CONSUMER_STALLED => {
                let message = event.decode::<pb::ConsumerStalled>()?;
                let record = record(message.record);
                let stall = Stall {
                    whose: whose(&record.event_type, &message.payload),
                    reason: clean(&message.reason),
                    failing_since: time(message.failing_since, now),
                    record,
                };
                self.lifecycle
                    .raise(conn, operations::stalled_alert(&stall), now)
                    .await?;
            }
            ops::CONSUMER_RECOVERED => {
                let message = event.decode::<pb::ConsumerRecovered>()?;
                let record = record(message.record);
                let stalls = operations::stalls_of(&record);
                for alert in store::alerts::open_by_dedup_prefix_for_update(conn, &stalls).await? {
                    self.lifecycle
                        .resolve(conn, alert, operations::recovered(&record), now)
                        .await?;
                }
            }
            // Types added later are someone else's to read.
            _ => {}
        }
        Ok(())
    }

    /// Resolves the alert with `key`, if it was raised (an event of a stall or dead letter
    /// raised before this consumer existed has none).
    async fn resolve(
        &self,
        conn: &mut PgConnection,
        key: &str,
        resolution: Resolution,
        now: DateTime<Utc>,
    ) -> Result<(), HandleError> {
        if let Some(alert) = store::alerts::by_dedup_key_for_update(conn, key).await? {
            self.lifecycle.resolve(conn, alert, resolution, now).await?;
        }
        Ok(())
    }
}

fn record(record: Option<pb::ConsumedRecord>) -> ConsumedRecord {
    let record = record.unwrap_or_default();
    ConsumedRecord {
        service: clean(&record.service),
        consumer: clean(&record.consumer),
        topic: clean(&record.topic),
        partition: record.partition,
        offset: record.offset,
        event_type: clean(&record.event_type),
        event_id: clean(&record.event_id),
    }
}

fn time(timestamp: Option<prost_types::Timestamp>, default: DateTime<Utc>) -> DateTime<Utc> {
    timestamp.as_ref().and_then(from_timestamp).unwrap_or(default)
}

/// Text from a record that was set aside may be what PostgreSQL refused (a NUL byte); the
/// alert about it must not be refused for the same reason.
fn clean(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// Whose record it was: the supervisee of a registry snapshot or a check-in, the handover of
/// a handover snapshot; `None` when the payload is not one risk-alert reads.
pub fn whose(event_type: &str, payload: &[u8]) -> Option<Whose> {
    let event = InboundEvent {
        topic: String::new(),
        partition: 0,
        offset: 0,
        key: None,
        event_id: Uuid::nil(),
        event_type: event_type.to_owned(),
        occurred_at: None,
        producer: None,
        payload: payload.to_vec(),
        headers: HashMap::new(),
    };
    let owner = |kind, id: &str, name: &str, jurisdiction: Jurisdiction| Whose {
        subject: Subject {
            kind,
            id: clean(id),
            name: clean(name),
        },
        jurisdiction: Jurisdiction {
            township_code: clean(&jurisdiction.township_code),
            county_code: clean(&jurisdiction.county_code),
        },
    };
    if event_type == "checkin.recorded" {
        let checkin = CheckinRecorded::decode(payload).ok()?;
        let jurisdiction = jurisdiction_from_proto(checkin.jurisdiction.as_ref());
        return Some(owner(
            SubjectKind::Supervisee,
            &checkin.supervisee_id,
            "",
            jurisdiction,
        ));
    }
    if let Ok(Some(snapshot)) = events::supervisee_snapshot(&event) {
        let jurisdiction = jurisdiction_from_proto(snapshot.jurisdiction.as_ref());
        return Some(owner(
            SubjectKind::Supervisee,
            &snapshot.supervisee_id,
            &snapshot.name,
            jurisdiction,
        ));
    }
    if let Ok(Some(snapshot)) = events::handover_snapshot(&event) {
        let jurisdiction = jurisdiction_from_proto(snapshot.destination.as_ref());
        return Some(owner(
            SubjectKind::Handover,
            &snapshot.handover_id,
            &snapshot.person_name,
            jurisdiction,
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use mesh_proto::{common, registry as registry_pb};

    use super::*;

    fn home() -> Option<common::Jurisdiction> {
        Some(common::Jurisdiction {
            township_code: "620702001".into(),
            county_code: "620702".into(),
        })
    }

    #[test]
    fn a_checkin_names_its_supervisee_and_township_even_with_a_nul_byte() {
        let payload = CheckinRecorded {
            supervisee_id: "p\0-1".into(),
            jurisdiction: home(),
            ..Default::default()
        }
        .encode_to_vec();
        let whose = whose("checkin.recorded", &payload).expect("readable");
        assert_eq!(whose.subject.id, "p\u{FFFD}-1");
        assert_eq!(whose.jurisdiction.county_code, "620702");
    }

    #[test]
    fn a_registry_snapshot_names_the_person() {
        let payload = registry_pb::SuperviseeRegistered {
            supervisee: Some(registry_pb::SuperviseeSnapshot {
                supervisee_id: "p-2".into(),
                name: "张三".into(),
                jurisdiction: home(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec();
        let whose = whose("supervisee.registered", &payload).expect("readable");
        assert_eq!(
            (whose.subject.id.as_str(), whose.subject.name.as_str()),
            ("p-2", "张三")
        );
        assert_eq!(whose.jurisdiction.township_code, "620702001");
    }

    #[test]
    fn only_a_dead_letter_of_this_topic_is_about_this_topic() {
        let event = |topic: &str| InboundEvent {
            topic: "ops.events".into(),
            partition: 0,
            offset: 0,
            key: None,
            event_id: Uuid::nil(),
            event_type: ops::DEAD_LETTERED.into(),
            occurred_at: None,
            producer: None,
            payload: pb::DeadLettered {
                record: Some(pb::ConsumedRecord {
                    topic: topic.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .encode_to_vec(),
            headers: HashMap::new(),
        };
        assert!(about_this_topic(&event("ops.events")));
        assert!(!about_this_topic(&event("checkin.events")));
    }

    #[test]
    fn garbage_and_unknown_types_name_nobody() {
        assert_eq!(whose("checkin.recorded", b"\xff\xff\xff"), None);
        assert_eq!(whose("placement.proposed", b""), None);
        assert_eq!(whose("supervisee.registered", b""), None);
    }
}

#[cfg(test)]
mod properties {
    use mesh_proptest::{config, event_rejection, inbound, payloads};
    use proptest::{collection::vec, prelude::*, sample::select};

    use super::*;

    proptest! {
        #![proptest_config(config())]

        /// A dead letter's payload is whatever was set aside: reading whose it is never panics.
        #[test]
        fn whose_any_payload_is(
            event_type in select(&["checkin.recorded", "supervisee.registered", "handover.notified", "x.y"][..]),
            payload in vec(any::<u8>(), 0..96),
        ) {
            let _ = whose(event_type, &payload);
        }

        /// The operations events this consumer reads decode, or are dead-lettered naming the payload.
        #[test]
        fn dead_letter_events(payload in payloads("mesh.ops.v1.DeadLettered", &pb::DeadLettered::default())) {
            let event = inbound(ops::DEAD_LETTERED, payload);
            event_rejection("mesh.ops.v1.DeadLettered", &event.decode::<pb::DeadLettered>())?;
            let _ = about_this_topic(&event);
        }
    }
}
