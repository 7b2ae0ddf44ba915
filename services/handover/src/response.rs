//! The edge where answers go out: domain records as the protobuf messages callers see.
//! Callers get the national ID number masked and the risk notes opened; events get neither
//! (see [`crate::events`]).

use chrono::NaiveDate;
use mesh_kit::{
    error::ServiceError,
    national_id::NationalId,
    proto_time::{to_date, to_timestamp},
};
use mesh_proto::{common, handover as pb};

use crate::{
    domain::{Actor, Amendment, Destination, Handover},
    sealing::Sealer,
};

pub fn jurisdiction(destination: &Destination) -> common::Jurisdiction {
    common::Jurisdiction {
        township_code: destination.township_code.clone(),
        county_code: destination.county_code.clone(),
    }
}

fn actor(actor: &Actor) -> common::Actor {
    common::Actor {
        subject: actor.subject.clone(),
        role: actor.role.clone(),
    }
}

pub fn amendment(amendment: &Amendment) -> pb::Amendment {
    pb::Amendment {
        previous_expected_release_date: amendment.previous_expected_release_date.map(to_date),
        new_expected_release_date: amendment.new_expected_release_date.map(to_date),
        previous_destination: amendment.previous_destination.as_ref().map(jurisdiction),
        new_destination: amendment.new_destination.as_ref().map(jurisdiction),
        reason: amendment.reason.clone(),
        amended_by: Some(actor(&amendment.amended_by)),
        amended_at: Some(to_timestamp(amendment.amended_at)),
    }
}

/// One handover as callers see it, with its amendments (oldest first).
pub fn handover(
    handover: &Handover,
    amendments: &[Amendment],
    sealer: &Sealer,
) -> Result<pb::Handover, ServiceError> {
    // A stored number that no longer validates is still never shown.
    let national_id_masked = NationalId::parse(&sealer.national_id(handover)?, NaiveDate::MAX)
        .map(|id| id.masked())
        .unwrap_or_else(|_| "******************".to_owned());
    Ok(pb::Handover {
        handover_id: handover.id.to_string(),
        prison_id: handover.prison_id.clone(),
        prison_reference: handover.prison_reference.clone(),
        person_name: handover.person_name.clone(),
        national_id_masked,
        date_of_birth: Some(to_date(handover.date_of_birth)),
        category: handover.category.to_proto() as i32,
        expected_release_date: Some(to_date(handover.expected_release_date)),
        destination: Some(jurisdiction(&handover.destination)),
        key_assistance_target: handover.key_assistance_target,
        risk_notes: sealer.risk_notes(handover)?,
        offence_category: handover.offence_category.to_proto() as i32,
        status: handover.status.to_proto() as i32,
        notified_at: Some(to_timestamp(handover.notified_at)),
        acknowledged_at: handover.acknowledged_at.map(to_timestamp),
        acknowledged_by: handover.acknowledged_by.as_ref().map(actor),
        actual_release_time: handover.actual_release_time.map(to_timestamp),
        gate_collected_at: handover.gate_collected_at.map(to_timestamp),
        gate_collecting_officer_id: handover.gate_collecting_officer_id.clone().unwrap_or_default(),
        reported_in_at: handover.reported_in_at.map(to_timestamp),
        assigned_level: handover.assigned_level.map_or(0, |level| level.to_proto() as i32),
        assigned_officer_id: handover.assigned_officer_id.clone().unwrap_or_default(),
        cancel_reason: handover
            .cancel_reason
            .map_or(0, |reason| reason.to_proto() as i32),
        cancel_note: handover.cancel_note.clone().unwrap_or_default(),
        cancelled_at: handover.cancelled_at.map(to_timestamp),
        amendments: amendments.iter().map(amendment).collect(),
        updated_at: Some(to_timestamp(handover.updated_at)),
        version: handover.version,
    })
}

/// A handover as the coverage reconciliation sees it: nothing sealed.
pub fn awaiting_report_in(handover: &Handover) -> pb::AwaitingReportIn {
    pb::AwaitingReportIn {
        handover_id: handover.id.to_string(),
        person_name: handover.person_name.clone(),
        category: handover.category.to_proto() as i32,
        status: handover.status.to_proto() as i32,
        destination: Some(jurisdiction(&handover.destination)),
        version: handover.version,
        updated_at: Some(to_timestamp(handover.updated_at)),
    }
}
