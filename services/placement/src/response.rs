//! The outgoing edge: stored records as the protos the API returns and the events carry.

use chrono::NaiveDate;
use mesh_kit::proto_time::{to_date, to_timestamp};
use mesh_proto::{common, placement as pb};

use crate::store::{Base, Candidate, Opening, Placement};

fn jurisdiction(township_code: &str, county_code: &str) -> common::Jurisdiction {
    common::Jurisdiction {
        township_code: township_code.to_owned(),
        county_code: county_code.to_owned(),
    }
}

/// An optional id as the protos carry it: empty when absent.
fn id_text(id: Option<uuid::Uuid>) -> String {
    id.map(|id| id.to_string()).unwrap_or_default()
}

pub fn base(base: &Base) -> pb::ResettlementBase {
    pb::ResettlementBase {
        base_id: base.id.to_string(),
        name: base.name.clone(),
        jurisdiction: Some(jurisdiction(&base.township_code, &base.county_code)),
        r#type: base.base_type.to_proto() as i32,
        contact_name: base.contact_name.clone(),
        contact_phone: base.contact_phone.clone(),
        active: base.active,
        created_at: Some(to_timestamp(base.created_at)),
        updated_at: Some(to_timestamp(base.updated_at)),
        version: base.version,
    }
}

pub fn opening(opening: &Opening) -> pb::JobOpening {
    pb::JobOpening {
        opening_id: opening.id.to_string(),
        base_id: opening.base_id.to_string(),
        title: opening.title.clone(),
        sector: opening.sector.to_proto() as i32,
        description: opening.description.clone(),
        required_skills: opening.required_skills.clone(),
        positions_total: opening.positions_total(),
        positions_filled: opening.positions_filled(),
        work_jurisdiction: Some(jurisdiction(
            &opening.work_township_code,
            &opening.work_county_code,
        )),
        work_location: opening.location().map(|(latitude, longitude)| common::GeoPoint {
            latitude,
            longitude,
            accuracy_m: 0.0,
        }),
        closing_date: Some(to_date(opening.closing_date)),
        excluded_offence_categories: opening
            .excluded_offences
            .iter()
            .map(|offence| offence.to_proto() as i32)
            .collect(),
        status: opening.status.to_proto() as i32,
        close_reason: opening.close_reason.clone(),
        created_at: Some(to_timestamp(opening.created_at)),
        updated_at: Some(to_timestamp(opening.updated_at)),
    }
}

/// A candidate as of `today` (whether they still look for work depends on it).
pub fn candidate(candidate: &Candidate, today: NaiveDate) -> pb::Candidate {
    pb::Candidate {
        candidate_id: candidate.id.to_string(),
        source: candidate.source.to_proto() as i32,
        supervisee_id: id_text(candidate.supervisee_id),
        handover_id: id_text(candidate.handover_id),
        name: candidate.name.clone(),
        jurisdiction: Some(jurisdiction(&candidate.township_code, &candidate.county_code)),
        offence_category: candidate
            .offence_category
            .map(|offence| offence.to_proto() as i32)
            .unwrap_or(0),
        key_assistance_target: candidate.key_assistance_target,
        skills: candidate.skills.clone(),
        sector_preferences: candidate
            .sector_preferences
            .iter()
            .map(|sector| sector.to_proto() as i32)
            .collect(),
        active: candidate.is_active(today),
        current_placement_id: id_text(candidate.current_placement_id),
        created_at: Some(to_timestamp(candidate.created_at)),
        updated_at: Some(to_timestamp(candidate.updated_at)),
    }
}

pub fn placement(placement: &Placement) -> pb::Placement {
    pb::Placement {
        placement_id: placement.id.to_string(),
        candidate_id: placement.candidate_id.to_string(),
        opening_id: placement.opening_id.to_string(),
        base_id: placement.base_id.to_string(),
        status: placement.status.to_proto() as i32,
        jurisdiction: Some(jurisdiction(&placement.township_code, &placement.county_code)),
        proposed_by: Some(common::Actor {
            subject: placement.proposed_by_subject.clone(),
            role: placement.proposed_by_role.clone(),
        }),
        proposed_at: Some(to_timestamp(placement.proposed_at)),
        accepted_at: placement.accepted_at.map(to_timestamp),
        declined_at: placement.declined_at.map(to_timestamp),
        declined_by: placement.declined_by.map(|by| by.to_proto() as i32).unwrap_or(0),
        decline_reason: placement.decline_reason.clone(),
        start_date: placement.start_date.map(to_date),
        end_date: placement.end_date.map(to_date),
        end_reason: placement
            .end_reason
            .map(|reason| reason.to_proto() as i32)
            .unwrap_or(0),
        end_note: placement.end_note.clone(),
        note: placement.note.clone(),
        updated_at: Some(to_timestamp(placement.updated_at)),
        version: placement.version,
    }
}
