//! Requests that create or change a base, an opening or a candidate's profile.

use chrono::NaiveDate;
use mesh_kit::{
    error::{FieldViolations, ServiceError},
    validate::check_text,
};
use mesh_proto::placement as pb;
use uuid::Uuid;

use super::{
    MAX_CANDIDATE_SKILLS, MAX_CONTACT_NAME_CHARS, MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS, MAX_POSITIONS,
    MAX_REASON_CHARS, MAX_REQUIRED_SKILLS, MAX_SECTOR_PREFERENCES, check_date, check_distinct,
    check_jurisdiction_field, check_optional, check_optional_text, check_phone, check_required, check_skills,
    check_uuid,
};
use crate::domain::{BaseChanges, BaseType, Offence, Sector};

const BASE_TYPES: &str = "must be enterprise, farm, workshop or other";

/// A base that passed validation.
#[derive(Debug, Clone)]
pub struct NewBase {
    pub name: String,
    pub township_code: String,
    pub county_code: String,
    pub base_type: BaseType,
    pub contact_name: String,
    pub contact_phone: String,
}

pub fn validate_create_base(request: &pb::CreateBaseRequest) -> Result<NewBase, ServiceError> {
    let mut violations = FieldViolations::new();
    let name = check_text(&mut violations, "name", &request.name, MAX_NAME_CHARS);
    let (township_code, county_code) =
        check_jurisdiction_field(&mut violations, "jurisdiction", request.jurisdiction.as_ref());
    let base_type = check_required(
        &mut violations,
        "type",
        BaseType::from_proto(request.r#type),
        BaseType::Other,
        BASE_TYPES,
    );
    let contact_name = check_text(
        &mut violations,
        "contact_name",
        &request.contact_name,
        MAX_CONTACT_NAME_CHARS,
    );
    let contact_phone = check_phone(&mut violations, "contact_phone", &request.contact_phone);
    violations.into_result()?;
    Ok(NewBase {
        name,
        township_code,
        county_code,
        base_type,
        contact_name,
        contact_phone,
    })
}

/// A validated UpdateBase request.
#[derive(Debug, Clone)]
pub struct BaseUpdate {
    pub base_id: Uuid,
    pub changes: BaseChanges,
}

pub fn validate_update_base(request: &pb::UpdateBaseRequest) -> Result<BaseUpdate, ServiceError> {
    let mut violations = FieldViolations::new();
    let base_id = check_uuid(&mut violations, "base_id", &request.base_id);
    let name = request
        .name
        .as_deref()
        .map(|name| check_text(&mut violations, "name", name, MAX_NAME_CHARS));
    let base_type = request.r#type.map(|value| {
        check_required(
            &mut violations,
            "type",
            BaseType::from_proto(value),
            BaseType::Other,
            BASE_TYPES,
        )
    });
    let contact_name = request
        .contact_name
        .as_deref()
        .map(|name| check_text(&mut violations, "contact_name", name, MAX_CONTACT_NAME_CHARS));
    let contact_phone = request
        .contact_phone
        .as_deref()
        .map(|phone| check_phone(&mut violations, "contact_phone", phone));
    violations.into_result()?;
    Ok(BaseUpdate {
        base_id,
        changes: BaseChanges {
            name,
            base_type,
            contact_name,
            contact_phone,
            active: request.active,
        },
    })
}

/// An opening that passed validation.
#[derive(Debug, Clone)]
pub struct NewOpening {
    pub base_id: Uuid,
    pub title: String,
    pub sector: Sector,
    pub description: String,
    pub required_skills: Vec<String>,
    pub positions_total: u32,
    pub work_township_code: String,
    pub work_county_code: String,
    pub work_location: Option<(f64, f64)>,
    pub closing_date: NaiveDate,
    pub excluded_offences: Vec<Offence>,
}

/// Validates a CreateOpening request; `today` is the office date (the closing date may not
/// be before it).
pub fn validate_create_opening(
    request: &pb::CreateOpeningRequest,
    today: NaiveDate,
) -> Result<NewOpening, ServiceError> {
    let mut violations = FieldViolations::new();
    let base_id = check_uuid(&mut violations, "base_id", &request.base_id);
    let title = check_text(&mut violations, "title", &request.title, MAX_NAME_CHARS);
    let sector = check_required(
        &mut violations,
        "sector",
        Sector::from_proto(request.sector),
        Sector::Other,
        "must be a known sector",
    );
    let description = check_optional_text(
        &mut violations,
        "description",
        &request.description,
        MAX_DESCRIPTION_CHARS,
    );
    let required_skills = check_skills(
        &mut violations,
        "required_skills",
        &request.required_skills,
        MAX_REQUIRED_SKILLS,
    );
    if !(1..=MAX_POSITIONS).contains(&request.positions_total) {
        violations.add(
            "positions_total",
            format!("must be between 1 and {MAX_POSITIONS}"),
        );
    }
    let (work_township_code, work_county_code) = check_jurisdiction_field(
        &mut violations,
        "work_jurisdiction",
        request.work_jurisdiction.as_ref(),
    );
    let work_location = request.work_location.as_ref().map(|point| {
        if !(point.latitude.is_finite() && (-90.0..=90.0).contains(&point.latitude)) {
            violations.add("work_location.latitude", "must be between -90 and 90 degrees");
        }
        if !(point.longitude.is_finite() && (-180.0..=180.0).contains(&point.longitude)) {
            violations.add("work_location.longitude", "must be between -180 and 180 degrees");
        }
        (point.latitude, point.longitude)
    });
    let closing_date = check_date(
        &mut violations,
        "closing_date",
        request.closing_date.as_ref(),
        today,
    );
    let excluded_offences = check_distinct(
        &mut violations,
        "excluded_offence_categories",
        &request.excluded_offence_categories,
        Offence::from_proto,
        (
            "must be a known offence category, not UNSPECIFIED",
            "duplicates an earlier category",
        ),
    );
    violations.into_result()?;
    Ok(NewOpening {
        base_id,
        title,
        sector,
        description,
        required_skills,
        positions_total: request.positions_total,
        work_township_code,
        work_county_code,
        work_location,
        closing_date,
        excluded_offences,
    })
}

/// A validated CloseOpening request.
#[derive(Debug, Clone)]
pub struct OpeningClosing {
    pub opening_id: Uuid,
    pub reason: String,
}

pub fn validate_close_opening(request: &pb::CloseOpeningRequest) -> Result<OpeningClosing, ServiceError> {
    let mut violations = FieldViolations::new();
    let opening_id = check_uuid(&mut violations, "opening_id", &request.opening_id);
    let reason = check_text(&mut violations, "reason", &request.reason, MAX_REASON_CHARS);
    violations.into_result()?;
    Ok(OpeningClosing { opening_id, reason })
}

/// A validated UpdateCandidateProfile request.
#[derive(Debug, Clone)]
pub struct Profile {
    pub candidate_id: Uuid,
    pub skills: Vec<String>,
    pub sector_preferences: Vec<Sector>,
    /// `None` keeps the current category.
    pub offence: Option<Offence>,
}

pub fn validate_profile(request: &pb::UpdateCandidateProfileRequest) -> Result<Profile, ServiceError> {
    let mut violations = FieldViolations::new();
    let candidate_id = check_uuid(&mut violations, "candidate_id", &request.candidate_id);
    let skills = check_skills(&mut violations, "skills", &request.skills, MAX_CANDIDATE_SKILLS);
    let sector_preferences = if request.sector_preferences.len() > MAX_SECTOR_PREFERENCES {
        violations.add(
            "sector_preferences",
            format!("must hold at most {MAX_SECTOR_PREFERENCES} sectors"),
        );
        Vec::new()
    } else {
        check_distinct(
            &mut violations,
            "sector_preferences",
            &request.sector_preferences,
            Sector::from_proto,
            (
                "must be a known sector, not UNSPECIFIED",
                "duplicates an earlier sector",
            ),
        )
    };
    let offence = check_optional(
        &mut violations,
        "offence_category",
        request.offence_category,
        Offence::from_proto,
        "unknown offence category",
    );
    violations.into_result()?;
    Ok(Profile {
        candidate_id,
        skills,
        sector_preferences,
        offence,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use mesh_kit::proto_time::to_date;
    use mesh_proto::common;

    use super::*;
    use crate::request::testing::fields;

    pub(in crate::request) fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 1).unwrap_or_default()
    }

    /// A valid opening, for the edge's tests.
    pub(in crate::request) fn opening_request() -> pb::CreateOpeningRequest {
        pb::CreateOpeningRequest {
            base_id: Uuid::now_v7().to_string(),
            title: "焊工".into(),
            sector: pb::Sector::Manufacturing as i32,
            description: "车间焊接\n两班倒".into(),
            required_skills: vec!["welding".into()],
            positions_total: 2,
            work_jurisdiction: Some(common::Jurisdiction {
                township_code: "620702001".into(),
                county_code: "620702".into(),
            }),
            work_location: Some(common::GeoPoint {
                latitude: 38.93,
                longitude: 100.45,
                accuracy_m: 0.0,
            }),
            closing_date: Some(to_date(today())),
            excluded_offence_categories: vec![common::OffenceCategory::Drug as i32],
        }
    }

    #[test]
    fn a_good_opening_passes() {
        let opening = validate_create_opening(&opening_request(), today()).expect("valid");
        assert_eq!(opening.excluded_offences, vec![Offence::Drug]);
        assert_eq!(opening.work_location, Some((38.93, 100.45)));
    }

    #[test]
    fn every_bad_opening_field_is_named() {
        let mut request = opening_request();
        request.base_id = "nope".into();
        request.title = " ".into();
        request.sector = 0;
        request.required_skills = vec!["a".into(), "A".into(), "".into()];
        request.positions_total = 0;
        request.work_jurisdiction = Some(common::Jurisdiction {
            township_code: "620702001".into(),
            county_code: "620721".into(),
        });
        request.work_location = Some(common::GeoPoint {
            latitude: 91.0,
            longitude: f64::NAN,
            accuracy_m: 0.0,
        });
        request.closing_date = NaiveDate::from_ymd_opt(2026, 11, 30).map(to_date);
        request.excluded_offence_categories = vec![3, 3, 0];
        assert_eq!(
            fields(validate_create_opening(&request, today())),
            vec![
                "base_id",
                "title",
                "sector",
                "required_skills[1]",
                "required_skills[2]",
                "positions_total",
                "work_jurisdiction.county_code",
                "work_location.latitude",
                "work_location.longitude",
                "closing_date",
                "excluded_offence_categories[1]",
                "excluded_offence_categories[2]",
            ]
        );
        request.work_jurisdiction = None;
        request.closing_date = None;
        let named = fields(validate_create_opening(&request, today()));
        assert!(named.contains(&"work_jurisdiction".to_owned()));
        assert!(named.contains(&"closing_date".to_owned()));
        // A missing date is named once, not also as "before today".
        assert_eq!(named.iter().filter(|field| *field == "closing_date").count(), 1);
    }

    #[test]
    fn bases_need_a_name_place_type_and_contact() {
        let request = pb::CreateBaseRequest {
            name: "".into(),
            jurisdiction: None,
            r#type: 0,
            contact_name: "王经理".into(),
            contact_phone: "12ab".into(),
        };
        assert_eq!(
            fields(validate_create_base(&request)),
            vec!["name", "jurisdiction", "type", "contact_phone"]
        );
        let update = pb::UpdateBaseRequest {
            base_id: Uuid::now_v7().to_string(),
            name: Some("".into()),
            r#type: Some(0),
            ..Default::default()
        };
        assert_eq!(fields(validate_update_base(&update)), vec!["name", "type"]);
    }

    #[test]
    fn profiles_name_their_fields() {
        let profile = pb::UpdateCandidateProfileRequest {
            candidate_id: Uuid::now_v7().to_string(),
            skills: vec![],
            sector_preferences: vec![1, 1, 0],
            offence_category: 42,
        };
        assert_eq!(
            fields(validate_profile(&profile)),
            vec![
                "sector_preferences[1]",
                "sector_preferences[2]",
                "offence_category"
            ]
        );
    }
}
