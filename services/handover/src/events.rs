//! The `handover.*` events each step publishes (see `events.proto`): the event type and the
//! payload, which carries a snapshot of the handover without its national ID number or risk
//! notes (the report-in event carries the number, phone and address sealed for the
//! registry alone).

use mesh_kit::{
    outbox::NewEvent,
    proto_time::{to_date, to_timestamp},
};
use mesh_proto::{common, handover as pb, registry};
use prost::Message;

use crate::{
    domain::{Amendment, Cancellation, Handover, ReleaseCategory, ReportIn},
    response,
};

/// What happened to a handover, with what its event says beyond the snapshot.
#[derive(Debug)]
pub enum Event<'a> {
    Notified,
    Acknowledged,
    Released,
    GateCollected {
        officer_id: &'a str,
    },
    ReportedIn {
        report: &'a ReportIn,
        /// National ID number, phone and address, sealed for the registry
        /// (`Sealer::report_in_personal`).
        sealed_personal: Vec<u8>,
    },
    Amended {
        amendment: &'a Amendment,
    },
    Cancelled {
        cancellation: &'a Cancellation,
    },
}

impl Event<'_> {
    /// The event type, also the action of its audit record.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::Notified => "handover.notified",
            Event::Acknowledged => "handover.acknowledged",
            Event::Released => "handover.released",
            Event::GateCollected { .. } => "handover.gate_collected",
            Event::ReportedIn { .. } => "handover.reported_in",
            Event::Amended { .. } => "handover.amended",
            Event::Cancelled { .. } => "handover.cancelled",
        }
    }

    /// The event about `handover` (as it is after the step) by `actor`, keyed by the
    /// handover so one handover's events stay in order.
    pub fn into_outbox(self, topic: &str, handover: &Handover, actor: common::Actor) -> NewEvent {
        let snapshot = Some(snapshot(handover));
        let actor = Some(actor);
        let event_type = self.event_type();
        let payload = match self {
            Event::Notified => pb::HandoverNotified {
                handover: snapshot,
                actor,
            }
            .encode_to_vec(),
            Event::Acknowledged => pb::HandoverAcknowledged {
                handover: snapshot,
                actor,
            }
            .encode_to_vec(),
            Event::Released => pb::HandoverReleased {
                handover: snapshot,
                actor,
            }
            .encode_to_vec(),
            Event::GateCollected { officer_id } => pb::HandoverGateCollected {
                handover: snapshot,
                officer_id: officer_id.to_owned(),
                actor,
            }
            .encode_to_vec(),
            Event::ReportedIn {
                report,
                sealed_personal,
            } => pb::HandoverReportedIn {
                handover: snapshot,
                registry_category: registry_category(handover.category).map_or(0, |c| c as i32),
                supervision_level: report.level.map_or(0, |level| level.to_proto() as i32),
                officer_id: report.officer_id.clone(),
                term_start: report.term_start.map(to_date),
                term_end: report.term_end.map(to_date),
                needs_employment: report.needs_employment,
                actor,
                sealed_personal,
            }
            .encode_to_vec(),
            Event::Amended { amendment } => pb::HandoverAmended {
                handover: snapshot,
                amendment: Some(response::amendment(amendment)),
                actor,
            }
            .encode_to_vec(),
            Event::Cancelled { cancellation } => pb::HandoverCancelled {
                handover: snapshot,
                reason: cancellation.reason.to_proto() as i32,
                note: cancellation.note.clone(),
                actor,
            }
            .encode_to_vec(),
        };
        NewEvent {
            topic: topic.to_owned(),
            key: handover.id.to_string(),
            event_type,
            payload,
            occurred_at: handover.updated_at,
        }
    }
}

/// What events say about the handover: no national ID number, no risk notes.
fn snapshot(handover: &Handover) -> pb::HandoverSnapshot {
    pb::HandoverSnapshot {
        handover_id: handover.id.to_string(),
        prison_id: handover.prison_id.clone(),
        prison_reference: handover.prison_reference.clone(),
        person_name: handover.person_name.clone(),
        category: handover.category.to_proto() as i32,
        expected_release_date: Some(to_date(handover.expected_release_date)),
        destination: Some(response::jurisdiction(&handover.destination)),
        key_assistance_target: handover.key_assistance_target,
        offence_category: handover.offence_category.to_proto() as i32,
        status: handover.status.to_proto() as i32,
        notified_at: Some(to_timestamp(handover.notified_at)),
        acknowledged_at: handover.acknowledged_at.map(to_timestamp),
        actual_release_time: handover.actual_release_time.map(to_timestamp),
        gate_collected_at: handover.gate_collected_at.map(to_timestamp),
        reported_in_at: handover.reported_in_at.map(to_timestamp),
        version: handover.version,
    }
}

/// The registry category the person is registered under on report-in (none for a
/// completed sentence: no community corrections follow).
fn registry_category(category: ReleaseCategory) -> Option<registry::Category> {
    match category {
        ReleaseCategory::Parole => Some(registry::Category::Parole),
        ReleaseCategory::TemporaryExecutionOutsidePrison => {
            Some(registry::Category::TemporaryExecutionOutsidePrison)
        }
        ReleaseCategory::SentenceCompleted => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Status, testing::handover};

    #[test]
    fn only_community_corrections_are_registered() {
        assert_eq!(
            registry_category(ReleaseCategory::Parole),
            Some(registry::Category::Parole)
        );
        assert_eq!(registry_category(ReleaseCategory::SentenceCompleted), None);
    }

    #[test]
    fn events_are_keyed_by_the_handover_and_carry_no_personal_notes() {
        let handover = handover(Status::Acknowledged);
        let actor = common::Actor {
            subject: "office".into(),
            role: "township_office".into(),
        };
        let event = Event::Acknowledged.into_outbox("handover", &handover, actor.clone());
        assert_eq!(event.event_type, "handover.acknowledged");
        assert_eq!(event.key, handover.id.to_string());
        assert_eq!(event.occurred_at, handover.updated_at);
        let decoded = pb::HandoverAcknowledged::decode(event.payload.as_slice()).expect("payload");
        assert_eq!(decoded.actor, Some(actor));
        let snapshot = decoded.handover.expect("snapshot");
        assert_eq!(snapshot.status, pb::HandoverStatus::Acknowledged as i32);
        assert_eq!(snapshot.handover_id, handover.id.to_string());
    }
}
