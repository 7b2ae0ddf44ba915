//! The `placement.*` events this service publishes: for each change, its type, its key and
//! its payload (the record's full snapshot and the actor). Bases' and openings' events are
//! keyed by the base, placements' by the candidate, so each one's events stay in order.

use chrono::{DateTime, Utc};
use mesh_kit::{auth::Caller, outbox::NewEvent};
use mesh_proto::placement as pb;
use prost::Message;
use uuid::Uuid;

use crate::domain::Step;

/// Builds the events of the service's topic.
#[derive(Debug, Clone)]
pub struct Events {
    topic: String,
}

impl Events {
    pub fn new(topic: String) -> Self {
        Self { topic }
    }

    fn event(&self, key: Uuid, event_type: &'static str, payload: Vec<u8>, at: DateTime<Utc>) -> NewEvent {
        NewEvent {
            topic: self.topic.clone(),
            key: key.to_string(),
            event_type,
            payload,
            occurred_at: at,
        }
    }

    pub fn base_created(
        &self,
        base_id: Uuid,
        base: &pb::ResettlementBase,
        caller: &Caller,
        at: DateTime<Utc>,
    ) -> NewEvent {
        let payload = pb::BaseCreated {
            base: Some(base.clone()),
            actor: Some(caller.actor()),
        };
        self.event(base_id, "placement.base_created", payload.encode_to_vec(), at)
    }

    pub fn opening_created(
        &self,
        base_id: Uuid,
        opening: &pb::JobOpening,
        caller: &Caller,
        at: DateTime<Utc>,
    ) -> NewEvent {
        let payload = pb::OpeningCreated {
            opening: Some(opening.clone()),
            actor: Some(caller.actor()),
        };
        self.event(base_id, "placement.opening_created", payload.encode_to_vec(), at)
    }

    pub fn opening_closed(
        &self,
        base_id: Uuid,
        opening: &pb::JobOpening,
        caller: &Caller,
        at: DateTime<Utc>,
    ) -> NewEvent {
        let payload = pb::OpeningClosed {
            opening: Some(opening.clone()),
            actor: Some(caller.actor()),
        };
        self.event(base_id, "placement.opening_closed", payload.encode_to_vec(), at)
    }

    pub fn proposed(
        &self,
        candidate_id: Uuid,
        placement: &pb::Placement,
        caller: &Caller,
        at: DateTime<Utc>,
    ) -> NewEvent {
        let payload = pb::PlacementProposed {
            placement: Some(placement.clone()),
            actor: Some(caller.actor()),
        };
        self.event(candidate_id, "placement.proposed", payload.encode_to_vec(), at)
    }

    /// The event of a lifecycle step (accepted, declined, started, ended).
    pub fn step(
        &self,
        candidate_id: Uuid,
        step: &Step,
        placement: &pb::Placement,
        caller: &Caller,
        at: DateTime<Utc>,
    ) -> NewEvent {
        let placement = Some(placement.clone());
        let actor = Some(caller.actor());
        let (event_type, payload) = match step {
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
        };
        self.event(candidate_id, event_type, payload, at)
    }
}
