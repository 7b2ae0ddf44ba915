//! The outgoing edge: domain values into the protos of responses and of the
//! `checkin.recorded` event.

use mesh_kit::{auth::Caller, proto_time::to_timestamp};
use mesh_proto::{checkin as pb, common};

use crate::domain::{Checkin, Identity, Jurisdiction, PermittedArea, Position};

fn jurisdiction(jurisdiction: &Jurisdiction) -> common::Jurisdiction {
    common::Jurisdiction {
        township_code: jurisdiction.township_code.clone(),
        county_code: jurisdiction.county_code.clone(),
    }
}

fn position(position: &Position) -> common::GeoPoint {
    common::GeoPoint {
        latitude: position.latitude,
        longitude: position.longitude,
        accuracy_m: position.accuracy_m,
    }
}

fn identity(identity: &Identity) -> pb::IdentityVerification {
    use pb::identity_verification::Verification;
    let verification = match identity {
        Identity::FaceMatch { score } => Verification::FaceMatch(pb::FaceMatch { score: *score }),
        Identity::Manual { officer_id, note } => Verification::Manual(pb::ManualVerification {
            officer_id: officer_id.clone(),
            note: note.clone(),
        }),
    };
    pb::IdentityVerification {
        verification: Some(verification),
    }
}

/// A stored check-in as answered to callers.
pub fn checkin(checkin: &Checkin) -> pb::Checkin {
    pb::Checkin {
        checkin_id: checkin.checkin_id.to_string(),
        supervisee_id: checkin.supervisee_id.to_string(),
        method: checkin.method.to_proto() as i32,
        recording_officer_id: checkin.recording_officer_id.clone(),
        device_time: Some(to_timestamp(checkin.device_time)),
        received_at: Some(to_timestamp(checkin.received_at)),
        position: checkin.position.as_ref().map(position),
        identity_verification: Some(identity(&checkin.identity)),
        identity_verified: checkin.identity_verified,
        captured_offline: checkin.captured_offline,
        out_of_area: checkin.area.out_of_area,
        distance_outside_m: checkin.area.distance_outside_m,
        jurisdiction: Some(jurisdiction(&checkin.jurisdiction)),
        note: checkin.note.clone(),
    }
}

/// The `checkin.recorded` payload: everything risk-alert needs to move the deadline,
/// restore contact or raise an out-of-area alert, without reading our tables.
pub fn recorded(checkin: &Checkin, caller: &Caller) -> pb::CheckinRecorded {
    pb::CheckinRecorded {
        supervisee_id: checkin.supervisee_id.to_string(),
        checkin_id: checkin.checkin_id.to_string(),
        method: checkin.method.to_proto() as i32,
        device_time: Some(to_timestamp(checkin.device_time)),
        received_at: Some(to_timestamp(checkin.received_at)),
        position: checkin.position.as_ref().map(position),
        out_of_area: checkin.area.out_of_area,
        distance_outside_m: checkin.area.distance_outside_m,
        jurisdiction: Some(jurisdiction(&checkin.jurisdiction)),
        captured_offline: checkin.captured_offline,
        identity_verified: checkin.identity_verified,
        recording_officer_id: checkin.recording_officer_id.clone(),
        actor: Some(caller.actor()),
    }
}

/// A township's permitted area; version 0 and no author for the configured default.
pub fn area(area: &PermittedArea) -> pb::PermittedArea {
    pb::PermittedArea {
        jurisdiction: Some(jurisdiction(&area.jurisdiction)),
        circles: area
            .circles
            .iter()
            .map(|circle| pb::GeoCircle {
                centre: Some(common::GeoPoint {
                    latitude: circle.latitude,
                    longitude: circle.longitude,
                    accuracy_m: 0.0,
                }),
                radius_m: circle.radius_m,
            })
            .collect(),
        updated_by: area.set.as_ref().map(|set| common::Actor {
            subject: set.updated_by_subject.clone(),
            role: set.updated_by_role.clone(),
        }),
        updated_at: area.set.as_ref().map(|set| to_timestamp(set.updated_at)),
        version: area.set.as_ref().map_or(0, |set| set.version),
    }
}
