//! The `supervisee.*` events the registry publishes: each carries a snapshot of the
//! supervisee (never its national ID, phone or address) for the services that follow it,
//! and goes with the detail of its audit record.

use chrono::{DateTime, Utc};
use mesh_kit::{
    auth::Caller,
    change::Tx,
    error::ServiceError,
    outbox::NewEvent,
    proto_time::{to_date, to_timestamp},
};
use mesh_proto::registry as pb;
use prost::Message;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    domain::{Jurisdiction, Level, Supervisee, SupervisionStatus},
    response::jurisdiction,
};

/// An event to publish about a supervisee, and the detail of its audit record.
#[derive(Debug)]
pub struct Published {
    pub subject_id: Uuid,
    pub event: NewEvent,
    pub detail: Value,
}

impl Published {
    /// Writes the event and its audit record in `tx` (an RPC's change or a consumer's
    /// transaction).
    pub async fn write<T: Tx + ?Sized>(self, tx: &mut T, caller: &Caller) -> Result<(), ServiceError> {
        tx.publish(caller, self.event, Some(self.subject_id), self.detail)
            .await
            .map(drop)
    }
}

/// Builds the registry's events for its topic.
#[derive(Debug, Clone)]
pub struct Events {
    topic: String,
}

impl Events {
    pub fn new(topic: String) -> Self {
        Self { topic }
    }

    pub fn registered(
        &self,
        supervisee: &Supervisee,
        caller: &Caller,
        handover_id: Option<&str>,
    ) -> Published {
        let event = pb::SuperviseeRegistered {
            supervisee: Some(snapshot(supervisee)),
            actor: Some(caller.actor()),
            handover_id: handover_id.unwrap_or_default().to_owned(),
        };
        let detail = json!({
            "township_code": supervisee.jurisdiction.township_code,
            "status": supervisee.status.as_str(),
            "handover_id": handover_id,
        });
        self.published("supervisee.registered", supervisee, event, detail)
    }

    pub fn level_changed(
        &self,
        supervisee: &Supervisee,
        previous: Level,
        reason: &str,
        caller: &Caller,
    ) -> Published {
        let event = pb::SuperviseeLevelChanged {
            supervisee: Some(snapshot(supervisee)),
            previous_level: previous.to_proto() as i32,
            reason: reason.to_owned(),
            actor: Some(caller.actor()),
        };
        let detail = json!({ "from": previous.as_str(), "to": supervisee.level.as_str(), "reason": reason });
        self.published("supervisee.level_changed", supervisee, event, detail)
    }

    pub fn transferred(
        &self,
        supervisee: &Supervisee,
        previous: &Jurisdiction,
        reason: &str,
        caller: &Caller,
    ) -> Published {
        let event = pb::SuperviseeTransferred {
            supervisee: Some(snapshot(supervisee)),
            previous_jurisdiction: Some(jurisdiction(previous)),
            reason: reason.to_owned(),
            actor: Some(caller.actor()),
        };
        let detail = json!({
            "from": previous.township_code,
            "to": supervisee.jurisdiction.township_code,
            "reason": reason,
        });
        self.published("supervisee.transferred", supervisee, event, detail)
    }

    pub fn status_changed(
        &self,
        supervisee: &Supervisee,
        previous: SupervisionStatus,
        reason: &str,
        effective_at: DateTime<Utc>,
        caller: &Caller,
    ) -> Published {
        let event = pb::SuperviseeStatusChanged {
            supervisee: Some(snapshot(supervisee)),
            previous_status: previous.to_proto() as i32,
            reason: reason.to_owned(),
            effective_at: Some(to_timestamp(effective_at)),
            actor: Some(caller.actor()),
        };
        let detail = json!({ "from": previous.as_str(), "to": supervisee.status.as_str(), "reason": reason });
        self.published("supervisee.status_changed", supervisee, event, detail)
    }

    /// Keyed by the supervisee, so one person's events stay in order; occurred when the
    /// change was stored.
    fn published(
        &self,
        event_type: &'static str,
        supervisee: &Supervisee,
        payload: impl Message,
        detail: Value,
    ) -> Published {
        Published {
            subject_id: supervisee.id,
            event: NewEvent {
                topic: self.topic.clone(),
                key: supervisee.id.to_string(),
                event_type,
                payload: payload.encode_to_vec(),
                occurred_at: supervisee.updated_at,
            },
            detail,
        }
    }
}

/// What events say about the supervisee (no national ID, phone or address).
fn snapshot(supervisee: &Supervisee) -> pb::SuperviseeSnapshot {
    pb::SuperviseeSnapshot {
        supervisee_id: supervisee.id.to_string(),
        name: supervisee.name.clone(),
        category: supervisee.category.to_proto() as i32,
        term_start: Some(to_date(supervisee.term_start)),
        term_end: Some(to_date(supervisee.term_end)),
        level: supervisee.level.to_proto() as i32,
        jurisdiction: Some(jurisdiction(&supervisee.jurisdiction)),
        officer_id: supervisee.officer_id.clone(),
        status: supervisee.status.to_proto() as i32,
        version: supervisee.version,
        reported_at: supervisee.reported_at.map(to_timestamp),
        needs_employment: supervisee.needs_employment,
        handover_id: supervisee.handover_id.clone().unwrap_or_default(),
    }
}
