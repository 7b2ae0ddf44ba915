//! The state snapshot that every `supervisee.*` and `handover.*` event carries, read the same
//! way by every consumer: projections are rebuilt from the latest snapshot, whatever the
//! event type, so consumers need not know each type's own fields.

use mesh_proto::{handover as handover_pb, registry as registry_pb};

use crate::consumer::{HandleError, InboundEvent};

/// The supervisee snapshot of a `supervisee.*` event; `None` for other event types (ignored,
/// so the registry can add types without breaking its consumers).
pub fn supervisee_snapshot(
    event: &InboundEvent,
) -> Result<Option<registry_pb::SuperviseeSnapshot>, HandleError> {
    let snapshot = match event.event_type.as_str() {
        "supervisee.registered" => event.decode::<registry_pb::SuperviseeRegistered>()?.supervisee,
        "supervisee.level_changed" => event.decode::<registry_pb::SuperviseeLevelChanged>()?.supervisee,
        "supervisee.transferred" => event.decode::<registry_pb::SuperviseeTransferred>()?.supervisee,
        "supervisee.status_changed" => event.decode::<registry_pb::SuperviseeStatusChanged>()?.supervisee,
        _ => return Ok(None),
    };
    snapshot
        .map(Some)
        .ok_or_else(|| HandleError::Permanent(format!("{} without a supervisee snapshot", event.event_type)))
}

/// The handover snapshot of a `handover.*` event; `None` for other event types. The
/// report-in event's national ID is not read here (and so never leaves the decoder).
pub fn handover_snapshot(event: &InboundEvent) -> Result<Option<handover_pb::HandoverSnapshot>, HandleError> {
    let snapshot = match event.event_type.as_str() {
        "handover.notified" => event.decode::<handover_pb::HandoverNotified>()?.handover,
        "handover.acknowledged" => event.decode::<handover_pb::HandoverAcknowledged>()?.handover,
        "handover.released" => event.decode::<handover_pb::HandoverReleased>()?.handover,
        "handover.gate_collected" => event.decode::<handover_pb::HandoverGateCollected>()?.handover,
        "handover.reported_in" => event.decode::<handover_pb::HandoverReportedIn>()?.handover,
        "handover.amended" => event.decode::<handover_pb::HandoverAmended>()?.handover,
        "handover.cancelled" => event.decode::<handover_pb::HandoverCancelled>()?.handover,
        _ => return Ok(None),
    };
    snapshot
        .map(Some)
        .ok_or_else(|| HandleError::Permanent(format!("{} without a handover snapshot", event.event_type)))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use prost::Message;

    use super::*;

    fn event(event_type: &str, payload: Vec<u8>) -> InboundEvent {
        InboundEvent {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            key: None,
            event_id: uuid::Uuid::now_v7(),
            event_type: event_type.into(),
            occurred_at: None,
            producer: None,
            payload,
            headers: HashMap::new(),
        }
    }

    #[test]
    fn snapshots_come_out_of_every_event_type() {
        let snapshot = registry_pb::SuperviseeSnapshot {
            supervisee_id: "s1".into(),
            version: 3,
            ..Default::default()
        };
        let moved = registry_pb::SuperviseeTransferred {
            supervisee: Some(snapshot.clone()),
            ..Default::default()
        };
        let found =
            supervisee_snapshot(&event("supervisee.transferred", moved.encode_to_vec())).expect("decodes");
        assert_eq!(found, Some(snapshot));
        let handover = handover_pb::HandoverSnapshot {
            handover_id: "h1".into(),
            ..Default::default()
        };
        let reported = handover_pb::HandoverReportedIn {
            handover: Some(handover.clone()),
            sealed_personal: b"not read".to_vec(),
            ..Default::default()
        };
        let found =
            handover_snapshot(&event("handover.reported_in", reported.encode_to_vec())).expect("decodes");
        assert_eq!(found, Some(handover));
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 512, failure_persistence: None, ..Default::default() })]

        /// Whatever a record carries, a snapshot comes out, or nothing (another type), or a
        /// permanent error naming the payload or the missing snapshot; never a panic.
        #[test]
        fn any_record_is_read_or_refused_for_good(
            event_type in proptest::sample::select(&[
                "supervisee.registered", "supervisee.status_changed", "handover.notified",
                "handover.reported_in", "handover.cancelled", "other.type",
            ][..]),
            payload in proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..64),
        ) {
            let event = event(event_type, payload);
            for refusal in [
                supervisee_snapshot(&event).err(),
                handover_snapshot(&event).err(),
            ]
            .into_iter()
            .flatten()
            {
                let HandleError::Permanent(reason) = refusal else {
                    return Err(proptest::test_runner::TestCaseError::fail("bad data retried"));
                };
                proptest::prop_assert!(
                    reason.contains("payload") || reason.contains("snapshot"),
                    "{reason}"
                );
            }
        }
    }

    #[test]
    fn other_types_are_ignored_and_broken_ones_are_permanent() {
        assert_eq!(
            supervisee_snapshot(&event("supervisee.renamed", vec![])).expect("ignored"),
            None
        );
        assert_eq!(
            handover_snapshot(&event("checkin.recorded", vec![])).expect("ignored"),
            None
        );
        let empty = handover_pb::HandoverNotified::default().encode_to_vec();
        assert!(matches!(
            handover_snapshot(&event("handover.notified", empty)),
            Err(HandleError::Permanent(_))
        ));
        assert!(matches!(
            supervisee_snapshot(&event("supervisee.registered", vec![0xff, 0xff])),
            Err(HandleError::Permanent(_))
        ));
    }
}
