//! The edge where answers go out: a stored supervisee as the API shows it, with its personal
//! fields opened and the national ID masked.

use chrono::NaiveDate;
use mesh_kit::{
    error::ServiceError,
    national_id::NationalId,
    proto_time::{to_date, to_timestamp},
};
use mesh_proto::{common, registry as pb};

use crate::{
    domain::{Jurisdiction, Supervisee},
    sealing::Sealer,
};

/// What a stored national ID that no longer parses is shown as.
const UNREADABLE_NATIONAL_ID: &str = "******************";

pub fn supervisee(sealer: &Sealer, supervisee: &Supervisee) -> Result<pb::Supervisee, ServiceError> {
    let personal = sealer.open(&supervisee.personal)?;
    // Parsed with no birth-date limit: a stored ID was checked when it was registered.
    let national_id_masked = NationalId::parse(&personal.national_id, NaiveDate::MAX)
        .map(|id| id.masked())
        .unwrap_or_else(|_| UNREADABLE_NATIONAL_ID.to_owned());
    Ok(pb::Supervisee {
        supervisee_id: supervisee.id.to_string(),
        name: supervisee.name.clone(),
        national_id_masked,
        category: supervisee.category.to_proto() as i32,
        term_start: Some(to_date(supervisee.term_start)),
        term_end: Some(to_date(supervisee.term_end)),
        level: supervisee.level.to_proto() as i32,
        jurisdiction: Some(jurisdiction(&supervisee.jurisdiction)),
        officer_id: supervisee.officer_id.clone(),
        phone: personal.phone,
        address: personal.address,
        status: supervisee.status.to_proto() as i32,
        registered_at: Some(to_timestamp(supervisee.registered_at)),
        updated_at: Some(to_timestamp(supervisee.updated_at)),
        version: supervisee.version,
        needs_employment: supervisee.needs_employment,
    })
}

/// A supervisee as the coverage reconciliation sees it: nothing sealed is opened.
pub fn under_supervision(supervisee: &Supervisee) -> pb::UnderSupervision {
    pb::UnderSupervision {
        supervisee_id: supervisee.id.to_string(),
        name: supervisee.name.clone(),
        level: supervisee.level.to_proto() as i32,
        status: supervisee.status.to_proto() as i32,
        jurisdiction: Some(jurisdiction(&supervisee.jurisdiction)),
        version: supervisee.version,
        updated_at: Some(to_timestamp(supervisee.updated_at)),
        reported_at: supervisee.reported_at.map(to_timestamp),
    }
}

pub fn jurisdiction(jurisdiction: &Jurisdiction) -> common::Jurisdiction {
    common::Jurisdiction {
        township_code: jurisdiction.township_code.clone(),
        county_code: jurisdiction.county_code.clone(),
    }
}
