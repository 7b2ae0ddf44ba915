//! The `placement.*` events this service publishes: for each change, its type, its key and
//! its payload (the record's full snapshot and the actor). Bases' and openings' events are
//! keyed by the base, placements' by the candidate, so each one's events stay in order.

use chrono::{DateTime, Utc};
use mesh_kit::{auth::Caller, outbox::NewEvent};
use mesh_proto::placement as pb;
use prost::Message;
use uuid::Uuid;

use crate::domain::Step;

/// A change the mesh hears of, with the snapshot its event carries.
#[derive(Debug, Clone, Copy)]
pub enum Published<'a> {
    BaseCreated(&'a pb::ResettlementBase),
    OpeningCreated(&'a pb::JobOpening),
    OpeningClosed(&'a pb::JobOpening),
    Proposed(&'a pb::Placement),
    /// A lifecycle step: accepted, declined, started or ended.
    Stepped(&'a Step, &'a pb::Placement),
}

/// Builds the events of the service's topic.
#[derive(Debug, Clone)]
pub struct Events {
    topic: String,
}

impl Events {
    pub fn new(topic: String) -> Self {
        Self { topic }
    }

    /// The event of `change` by `caller` at `at`, keyed by `key` (the base of a base's or
    /// an opening's change, the candidate of a placement's).
    pub fn event(&self, key: Uuid, change: Published<'_>, caller: &Caller, at: DateTime<Utc>) -> NewEvent {
        let actor = Some(caller.actor());
        let (event_type, payload) = match change {
            Published::BaseCreated(base) => (
                "placement.base_created",
                pb::BaseCreated {
                    base: Some(base.clone()),
                    actor,
                }
                .encode_to_vec(),
            ),
            Published::OpeningCreated(opening) => (
                "placement.opening_created",
                pb::OpeningCreated {
                    opening: Some(opening.clone()),
                    actor,
                }
                .encode_to_vec(),
            ),
            Published::OpeningClosed(opening) => (
                "placement.opening_closed",
                pb::OpeningClosed {
                    opening: Some(opening.clone()),
                    actor,
                }
                .encode_to_vec(),
            ),
            Published::Proposed(placement) => (
                "placement.proposed",
                pb::PlacementProposed {
                    placement: Some(placement.clone()),
                    actor,
                }
                .encode_to_vec(),
            ),
            Published::Stepped(step, placement) => {
                let placement = Some(placement.clone());
                match step {
                    Step::Accept => (
                        "placement.accepted",
                        pb::PlacementAccepted { placement, actor }.encode_to_vec(),
                    ),
                    Step::Decline { .. } => (
                        "placement.declined",
                        pb::PlacementDeclined { placement, actor }.encode_to_vec(),
                    ),
                    Step::Start { .. } => (
                        "placement.started",
                        pb::PlacementStarted { placement, actor }.encode_to_vec(),
                    ),
                    Step::End { .. } => (
                        "placement.ended",
                        pb::PlacementEnded { placement, actor }.encode_to_vec(),
                    ),
                }
            }
        };
        NewEvent {
            topic: self.topic.clone(),
            key: key.to_string(),
            event_type,
            payload,
            occurred_at: at,
        }
    }
}

#[cfg(test)]
mod tests {
    use mesh_kit::auth::Role;

    use super::*;
    use crate::domain::{DeclinedBy, EndReason};

    #[test]
    fn each_change_has_its_type_key_and_snapshot() {
        let events = Events::new("mesh.placement".into());
        let caller = Caller {
            subject: "officer-1".into(),
            role: Role::Officer,
            township: Some("620702001".into()),
            county: Some("620702".into()),
            prison: None,
        };
        let candidate = Uuid::now_v7();
        let placement = pb::Placement {
            placement_id: Uuid::now_v7().to_string(),
            ..Default::default()
        };
        let at = Utc::now();
        let steps = [
            (Step::Accept, "placement.accepted"),
            (
                Step::Decline {
                    by: DeclinedBy::Base,
                    reason: "full".into(),
                },
                "placement.declined",
            ),
            (
                Step::Start {
                    date: at.date_naive(),
                },
                "placement.started",
            ),
            (
                Step::End {
                    date: at.date_naive(),
                    reason: EndReason::Completed,
                    note: String::new(),
                },
                "placement.ended",
            ),
        ];
        for (step, event_type) in &steps {
            let event = events.event(candidate, Published::Stepped(step, &placement), &caller, at);
            assert_eq!(event.event_type, *event_type);
            assert_eq!(event.key, candidate.to_string());
            assert_eq!(event.topic, "mesh.placement");
        }
        let ended = events.event(
            candidate,
            Published::Stepped(&steps[3].0, &placement),
            &caller,
            at,
        );
        let decoded = pb::PlacementEnded::decode(ended.payload.as_slice()).expect("decodes");
        assert_eq!(decoded.placement, Some(placement));
        assert_eq!(decoded.actor.map(|actor| actor.subject), Some("officer-1".into()));
    }
}
