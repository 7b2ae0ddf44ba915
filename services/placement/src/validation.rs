//! Request validation: every check records a violation naming the proto field path
//! (`work_location.latitude`, `required_skills[2]`) instead of failing fast, so a caller can
//! fix everything at once. Pure functions; "today" is passed in.

use base64::Engine;
use chrono::NaiveDate;
use mesh_kit::{
    error::{FieldViolations, invalid_field},
    jurisdiction::Directory,
    proto_time::from_date,
    validate::{check_jurisdiction, check_text},
};
use mesh_proto::{common, placement as pb};
use tonic::Status;
use uuid::Uuid;

use crate::domain::{BaseType, DeclinedBy, EndReason, Offence, Sector};

/// Longest base name and job title, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest contact person name, in characters.
pub const MAX_CONTACT_NAME_CHARS: usize = 64;
/// Longest job description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 2000;
/// Longest skill tag, in characters.
pub const MAX_SKILL_CHARS: usize = 64;
/// Most skills an opening may require.
pub const MAX_REQUIRED_SKILLS: usize = 20;
/// Most skills recorded for a candidate.
pub const MAX_CANDIDATE_SKILLS: usize = 30;
/// Most sector preferences (one per sector).
pub const MAX_SECTOR_PREFERENCES: usize = 9;
/// Positions of one opening.
pub const MAX_POSITIONS: u32 = 1000;
/// Longest reason or note, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// Default and largest number of matches.
pub const DEFAULT_MATCHES: u32 = 10;
pub const MAX_MATCHES: u32 = 50;
/// Default and largest page.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 500;

/// A UUID field, recorded as a violation when malformed.
pub fn parse_uuid(violations: &mut FieldViolations, field: &str, value: &str) -> Option<Uuid> {
    match value.trim().parse::<Uuid>() {
        Ok(id) if !id.is_nil() => Some(id),
        _ => {
            violations.add(field, "must be a UUID");
            None
        }
    }
}

/// A single UUID field of a request that has nothing else to check.
pub fn require_uuid(field: &str, value: &str) -> Result<Uuid, Status> {
    let mut violations = FieldViolations::new();
    let id = parse_uuid(&mut violations, field, value);
    violations.into_result()?;
    id.ok_or_else(|| invalid_field(field, "must be a UUID"))
}

/// Optional free text: at most `max` characters, no control characters other than line
/// breaks. Returns the trimmed value.
fn check_optional_text(violations: &mut FieldViolations, field: &str, value: &str, max: usize) -> String {
    let value = value.trim();
    if value.chars().count() > max {
        violations.add(field, format!("must be at most {max} characters"));
    } else if value.chars().any(|c| c.is_control() && c != '\n') {
        violations.add(field, "must not contain control characters");
    }
    value.to_owned()
}

fn check_phone(violations: &mut FieldViolations, field: &str, phone: &str) -> String {
    let phone = phone.trim();
    let digits = phone.strip_prefix('+').unwrap_or(phone);
    if digits.len() < 5 || digits.len() > 20 || !digits.chars().all(|c| c.is_ascii_digit()) {
        violations.add(field, "must be 5 to 20 digits, optionally starting with +");
    }
    phone.to_owned()
}

/// Checks a jurisdiction message field; returns (township, county).
fn check_jurisdiction_field(
    violations: &mut FieldViolations,
    field: &str,
    jurisdiction: Option<&common::Jurisdiction>,
) -> (String, String) {
    match jurisdiction {
        None => {
            violations.add(field, "is required");
            (String::new(), String::new())
        }
        Some(jurisdiction) => {
            let township = jurisdiction.township_code.trim().to_owned();
            let county = jurisdiction.county_code.trim().to_owned();
            check_jurisdiction(
                violations,
                &format!("{field}.township_code"),
                &township,
                &format!("{field}.county_code"),
                &county,
            );
            (township, county)
        }
    }
}

/// Free-text tags, trimmed, each 1..`MAX_SKILL_CHARS`, no duplicates (ignoring case).
fn check_skills(violations: &mut FieldViolations, field: &str, skills: &[String], max: usize) -> Vec<String> {
    if skills.len() > max {
        violations.add(field, format!("must hold at most {max} skills"));
        return Vec::new();
    }
    let mut seen: Vec<String> = Vec::with_capacity(skills.len());
    let mut valid = Vec::with_capacity(skills.len());
    for (index, skill) in skills.iter().enumerate() {
        let item = format!("{field}[{index}]");
        let skill = check_text(violations, &item, skill, MAX_SKILL_CHARS);
        let key = skill.to_lowercase();
        if !skill.is_empty() && seen.contains(&key) {
            violations.add(&item, "duplicates an earlier skill");
        }
        seen.push(key);
        valid.push(skill);
    }
    valid
}

/// A required calendar date field.
fn check_date(
    violations: &mut FieldViolations,
    field: &str,
    date: Option<&common::Date>,
) -> Option<NaiveDate> {
    let parsed = date.and_then(from_date);
    if parsed.is_none() {
        violations.add(field, "must be a valid date");
    }
    parsed
}

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

pub fn validate_create_base(request: &pb::CreateBaseRequest) -> Result<NewBase, Status> {
    let mut violations = FieldViolations::new();
    let name = check_text(&mut violations, "name", &request.name, MAX_NAME_CHARS);
    let (township_code, county_code) =
        check_jurisdiction_field(&mut violations, "jurisdiction", request.jurisdiction.as_ref());
    let base_type = BaseType::from_proto(request.r#type);
    violations.require(
        base_type.is_some(),
        "type",
        "must be enterprise, farm, workshop or other",
    );
    let contact_name = check_text(
        &mut violations,
        "contact_name",
        &request.contact_name,
        MAX_CONTACT_NAME_CHARS,
    );
    let contact_phone = check_phone(&mut violations, "contact_phone", &request.contact_phone);
    violations.into_result()?;
    let base_type = base_type.ok_or_else(|| Status::internal("validation inconsistency"))?;
    Ok(NewBase {
        name,
        township_code,
        county_code,
        base_type,
        contact_name,
        contact_phone,
    })
}

/// The changes of an UpdateBase request; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct BaseChanges {
    pub name: Option<String>,
    pub base_type: Option<BaseType>,
    pub contact_name: Option<String>,
    pub contact_phone: Option<String>,
    pub active: Option<bool>,
}

pub fn validate_update_base(request: &pb::UpdateBaseRequest) -> Result<(Uuid, BaseChanges), Status> {
    let mut violations = FieldViolations::new();
    let id = parse_uuid(&mut violations, "base_id", &request.base_id);
    let name = request
        .name
        .as_deref()
        .map(|name| check_text(&mut violations, "name", name, MAX_NAME_CHARS));
    let base_type = request.r#type.map(|value| {
        let parsed = BaseType::from_proto(value);
        violations.require(
            parsed.is_some(),
            "type",
            "must be enterprise, farm, workshop or other",
        );
        parsed
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
    let id = id.ok_or_else(|| Status::internal("validation inconsistency"))?;
    Ok((
        id,
        BaseChanges {
            name,
            base_type: base_type.flatten(),
            contact_name,
            contact_phone,
            active: request.active,
        },
    ))
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
) -> Result<NewOpening, Status> {
    let mut violations = FieldViolations::new();
    let base_id = parse_uuid(&mut violations, "base_id", &request.base_id);
    let title = check_text(&mut violations, "title", &request.title, MAX_NAME_CHARS);
    let sector = Sector::from_proto(request.sector);
    violations.require(sector.is_some(), "sector", "must be a known sector");
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
    let closing_date = check_date(&mut violations, "closing_date", request.closing_date.as_ref());
    if let Some(closing) = closing_date
        && closing < today
    {
        violations.add("closing_date", format!("must be today ({today}) or later"));
    }
    let mut excluded_offences = Vec::with_capacity(request.excluded_offence_categories.len());
    for (index, value) in request.excluded_offence_categories.iter().enumerate() {
        let field = format!("excluded_offence_categories[{index}]");
        match Offence::from_proto(*value) {
            None => violations.add(&field, "must be a known offence category, not UNSPECIFIED"),
            Some(offence) if excluded_offences.contains(&offence) => {
                violations.add(&field, "duplicates an earlier category")
            }
            Some(offence) => excluded_offences.push(offence),
        }
    }
    violations.into_result()?;
    match (base_id, sector, closing_date) {
        (Some(base_id), Some(sector), Some(closing_date)) => Ok(NewOpening {
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
        }),
        _ => Err(Status::internal("validation inconsistency")),
    }
}

pub fn validate_close_opening(request: &pb::CloseOpeningRequest) -> Result<(Uuid, String), Status> {
    let mut violations = FieldViolations::new();
    let id = parse_uuid(&mut violations, "opening_id", &request.opening_id);
    let reason = check_text(&mut violations, "reason", &request.reason, MAX_REASON_CHARS);
    violations.into_result()?;
    let id = id.ok_or_else(|| Status::internal("validation inconsistency"))?;
    Ok((id, reason))
}

/// What a list is restricted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Township {
        township_code: String,
        county_code: String,
    },
    County {
        county_code: String,
    },
    Base(Uuid),
}

/// Exactly one of township_code / county_code (/ base_id when `base_id` is given).
fn check_scope(
    violations: &mut FieldViolations,
    base_id: Option<&str>,
    township_code: &str,
    county_code: &str,
) -> Option<Scope> {
    let base_id_allowed = base_id.is_some();
    let base_id = base_id.map(str::trim).filter(|id| !id.is_empty());
    let (township_code, county_code) = (township_code.trim(), county_code.trim());
    let choices = if base_id_allowed {
        "base_id, township_code or county_code"
    } else {
        "township_code or county_code"
    };
    let given: Vec<&str> = [
        ("base_id", base_id.is_some()),
        ("township_code", !township_code.is_empty()),
        ("county_code", !county_code.is_empty()),
    ]
    .iter()
    .filter(|(_, given)| *given)
    .map(|(field, _)| *field)
    .collect();
    match given.len() {
        1 => {}
        0 => {
            let field = if base_id_allowed {
                "base_id"
            } else {
                "township_code"
            };
            violations.add(field, format!("give exactly one of {choices}"));
            return None;
        }
        _ => {
            for field in given {
                violations.add(field, format!("give exactly one of {choices}"));
            }
            return None;
        }
    }
    let directory = Directory::get();
    if let Some(id) = base_id {
        return parse_uuid(violations, "base_id", id).map(Scope::Base);
    }
    if !township_code.is_empty() {
        return match directory.township(township_code) {
            Some(township) => Some(Scope::Township {
                township_code: township.code.clone(),
                county_code: township.county_code.clone(),
            }),
            None => {
                violations.add("township_code", "unknown township office code");
                None
            }
        };
    }
    match directory.county(county_code) {
        Some(county) => Some(Scope::County {
            county_code: county.code.clone(),
        }),
        None => {
            violations.add("county_code", "unknown county bureau code");
            None
        }
    }
}

/// A validated page request, with the decoded position after which it starts.
#[derive(Debug, Clone)]
pub struct Page<C> {
    pub size: u32,
    pub after: Option<C>,
}

/// A page token: the last row's sort key as base64url JSON. Opaque to callers and stable
/// across inserts (keyset pagination never skips or repeats rows).
pub fn page_token(key: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.to_string())
}

/// Sort key of lists ordered by name, then id.
pub type NameCursor = (String, Uuid);
/// Sort key of lists ordered newest first: creation time (microseconds since the epoch),
/// then id.
pub type TimeCursor = (i64, Uuid);

fn check_page<C>(
    violations: &mut FieldViolations,
    page: Option<&common::PageRequest>,
    decode: impl Fn(&[u8]) -> Option<C>,
) -> Page<C> {
    let page = page.cloned().unwrap_or_default();
    if page.page_size > MAX_PAGE_SIZE {
        violations.add("page.page_size", format!("must be at most {MAX_PAGE_SIZE}"));
    }
    let after = match page.page_token.as_str() {
        "" => None,
        token => {
            let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token)
                .ok()
                .and_then(|bytes| decode(&bytes));
            violations.require(
                decoded.is_some(),
                "page.page_token",
                "not a token from a previous page",
            );
            decoded
        }
    };
    Page {
        size: if page.page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            page.page_size.min(MAX_PAGE_SIZE)
        },
        after,
    }
}

fn name_cursor(bytes: &[u8]) -> Option<NameCursor> {
    serde_json::from_slice(bytes).ok()
}

fn time_cursor(bytes: &[u8]) -> Option<TimeCursor> {
    serde_json::from_slice(bytes).ok()
}

/// A validated ListBases request.
#[derive(Debug, Clone)]
pub struct BaseQuery {
    pub scope: Scope,
    pub base_type: Option<BaseType>,
    pub include_inactive: bool,
    pub page: Page<NameCursor>,
}

pub fn validate_list_bases(request: &pb::ListBasesRequest) -> Result<BaseQuery, Status> {
    let mut violations = FieldViolations::new();
    let scope = check_scope(
        &mut violations,
        None,
        &request.township_code,
        &request.county_code,
    );
    let base_type = match request.r#type {
        0 => None,
        value => {
            let parsed = BaseType::from_proto(value);
            violations.require(parsed.is_some(), "type", "unknown base type");
            parsed
        }
    };
    let page = check_page(&mut violations, request.page.as_ref(), name_cursor);
    violations.into_result()?;
    let scope = scope.ok_or_else(|| Status::internal("validation inconsistency"))?;
    Ok(BaseQuery {
        scope,
        base_type,
        include_inactive: request.include_inactive,
        page,
    })
}

/// A validated ListOpenings request.
#[derive(Debug, Clone)]
pub struct OpeningQuery {
    pub scope: Scope,
    pub status: Option<crate::domain::OpeningStatus>,
    pub sector: Option<Sector>,
    pub page: Page<TimeCursor>,
}

pub fn validate_list_openings(request: &pb::ListOpeningsRequest) -> Result<OpeningQuery, Status> {
    let mut violations = FieldViolations::new();
    let scope = check_scope(
        &mut violations,
        Some(&request.base_id),
        &request.township_code,
        &request.county_code,
    );
    let status = match request.status {
        0 => None,
        value => {
            let parsed = crate::domain::OpeningStatus::from_proto(value);
            violations.require(parsed.is_some(), "status", "unknown opening status");
            parsed
        }
    };
    let sector = match request.sector {
        0 => None,
        value => {
            let parsed = Sector::from_proto(value);
            violations.require(parsed.is_some(), "sector", "unknown sector");
            parsed
        }
    };
    let page = check_page(&mut violations, request.page.as_ref(), time_cursor);
    violations.into_result()?;
    let scope = scope.ok_or_else(|| Status::internal("validation inconsistency"))?;
    Ok(OpeningQuery {
        scope,
        status,
        sector,
        page,
    })
}

/// A validated ListCandidates request.
#[derive(Debug, Clone)]
pub struct CandidateQuery {
    pub scope: Scope,
    pub source: Option<crate::domain::CandidateSource>,
    pub include_inactive: bool,
    pub only_unplaced: bool,
    pub page: Page<NameCursor>,
}

pub fn validate_list_candidates(request: &pb::ListCandidatesRequest) -> Result<CandidateQuery, Status> {
    let mut violations = FieldViolations::new();
    let scope = check_scope(
        &mut violations,
        None,
        &request.township_code,
        &request.county_code,
    );
    let source = match request.source {
        0 => None,
        value => {
            let parsed = crate::domain::CandidateSource::from_proto(value);
            violations.require(parsed.is_some(), "source", "unknown candidate source");
            parsed
        }
    };
    let page = check_page(&mut violations, request.page.as_ref(), name_cursor);
    violations.into_result()?;
    let scope = scope.ok_or_else(|| Status::internal("validation inconsistency"))?;
    Ok(CandidateQuery {
        scope,
        source,
        include_inactive: request.include_inactive,
        only_unplaced: request.only_unplaced,
        page,
    })
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

pub fn validate_profile(request: &pb::UpdateCandidateProfileRequest) -> Result<Profile, Status> {
    let mut violations = FieldViolations::new();
    let candidate_id = parse_uuid(&mut violations, "candidate_id", &request.candidate_id);
    let skills = check_skills(&mut violations, "skills", &request.skills, MAX_CANDIDATE_SKILLS);
    let mut sector_preferences = Vec::with_capacity(request.sector_preferences.len());
    if request.sector_preferences.len() > MAX_SECTOR_PREFERENCES {
        violations.add(
            "sector_preferences",
            format!("must hold at most {MAX_SECTOR_PREFERENCES} sectors"),
        );
    } else {
        for (index, value) in request.sector_preferences.iter().enumerate() {
            let field = format!("sector_preferences[{index}]");
            match Sector::from_proto(*value) {
                None => violations.add(&field, "must be a known sector, not UNSPECIFIED"),
                Some(sector) if sector_preferences.contains(&sector) => {
                    violations.add(&field, "duplicates an earlier sector")
                }
                Some(sector) => sector_preferences.push(sector),
            }
        }
    }
    let offence = match request.offence_category {
        0 => None,
        value => {
            let parsed = Offence::from_proto(value);
            violations.require(parsed.is_some(), "offence_category", "unknown offence category");
            parsed
        }
    };
    violations.into_result()?;
    let candidate_id = candidate_id.ok_or_else(|| Status::internal("validation inconsistency"))?;
    Ok(Profile {
        candidate_id,
        skills,
        sector_preferences,
        offence,
    })
}

pub fn validate_match(request: &pb::MatchOpeningsRequest) -> Result<(Uuid, usize), Status> {
    let mut violations = FieldViolations::new();
    let candidate_id = parse_uuid(&mut violations, "candidate_id", &request.candidate_id);
    if request.max_results > MAX_MATCHES {
        violations.add("max_results", format!("must be at most {MAX_MATCHES}"));
    }
    violations.into_result()?;
    let candidate_id = candidate_id.ok_or_else(|| Status::internal("validation inconsistency"))?;
    let max = if request.max_results == 0 {
        DEFAULT_MATCHES
    } else {
        request.max_results
    };
    Ok((candidate_id, max as usize))
}

/// A validated ProposePlacement request.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub candidate_id: Uuid,
    pub opening_id: Uuid,
    pub note: String,
}

pub fn validate_propose(request: &pb::ProposePlacementRequest) -> Result<Proposal, Status> {
    let mut violations = FieldViolations::new();
    let candidate_id = parse_uuid(&mut violations, "candidate_id", &request.candidate_id);
    let opening_id = parse_uuid(&mut violations, "opening_id", &request.opening_id);
    let note = check_optional_text(&mut violations, "note", &request.note, MAX_REASON_CHARS);
    violations.into_result()?;
    match (candidate_id, opening_id) {
        (Some(candidate_id), Some(opening_id)) => Ok(Proposal {
            candidate_id,
            opening_id,
            note,
        }),
        _ => Err(Status::internal("validation inconsistency")),
    }
}

pub fn validate_decline(request: &pb::DeclinePlacementRequest) -> Result<(Uuid, DeclinedBy, String), Status> {
    let mut violations = FieldViolations::new();
    let id = parse_uuid(&mut violations, "placement_id", &request.placement_id);
    let declined_by = DeclinedBy::from_proto(request.declined_by);
    violations.require(declined_by.is_some(), "declined_by", "must be candidate or base");
    let reason = check_text(&mut violations, "reason", &request.reason, MAX_REASON_CHARS);
    violations.into_result()?;
    match (id, declined_by) {
        (Some(id), Some(declined_by)) => Ok((id, declined_by, reason)),
        _ => Err(Status::internal("validation inconsistency")),
    }
}

pub fn validate_start(request: &pb::StartPlacementRequest) -> Result<(Uuid, NaiveDate), Status> {
    let mut violations = FieldViolations::new();
    let id = parse_uuid(&mut violations, "placement_id", &request.placement_id);
    let start_date = check_date(&mut violations, "start_date", request.start_date.as_ref());
    violations.into_result()?;
    match (id, start_date) {
        (Some(id), Some(start_date)) => Ok((id, start_date)),
        _ => Err(Status::internal("validation inconsistency")),
    }
}

/// A validated EndPlacement request.
#[derive(Debug, Clone)]
pub struct Ending {
    pub placement_id: Uuid,
    pub end_date: NaiveDate,
    pub reason: EndReason,
    pub note: String,
}

pub fn validate_end(request: &pb::EndPlacementRequest) -> Result<Ending, Status> {
    let mut violations = FieldViolations::new();
    let id = parse_uuid(&mut violations, "placement_id", &request.placement_id);
    let end_date = check_date(&mut violations, "end_date", request.end_date.as_ref());
    let reason = EndReason::from_proto(request.reason);
    violations.require(
        reason.is_some(),
        "reason",
        "must be completed, resigned, dismissed, custody or other",
    );
    let note = check_optional_text(&mut violations, "note", &request.note, MAX_REASON_CHARS);
    if reason == Some(EndReason::Other) && note.is_empty() {
        violations.add("note", "is required when the reason is other");
    }
    violations.into_result()?;
    match (id, end_date, reason) {
        (Some(placement_id), Some(end_date), Some(reason)) => Ok(Ending {
            placement_id,
            end_date,
            reason,
            note,
        }),
        _ => Err(Status::internal("validation inconsistency")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_kit::{error::violated_fields, proto_time::to_date};

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 1).unwrap_or_default()
    }

    fn opening_request() -> pb::CreateOpeningRequest {
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

    fn fields(result: Result<impl std::fmt::Debug, Status>) -> Vec<String> {
        match result {
            Ok(_) => Vec::new(),
            Err(status) => violated_fields(&status),
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
    fn lists_take_exactly_one_scope_and_real_tokens() {
        let none = pb::ListBasesRequest::default();
        assert_eq!(fields(validate_list_bases(&none)), vec!["township_code"]);
        let both = pb::ListBasesRequest {
            township_code: "620702001".into(),
            county_code: "620702".into(),
            ..Default::default()
        };
        assert_eq!(
            fields(validate_list_bases(&both)),
            vec!["township_code", "county_code"]
        );
        let bad_token = pb::ListCandidatesRequest {
            county_code: "620702".into(),
            page: Some(common::PageRequest {
                page_size: 501,
                page_token: "garbage".into(),
            }),
            ..Default::default()
        };
        assert_eq!(
            fields(validate_list_candidates(&bad_token)),
            vec!["page.page_size", "page.page_token"]
        );
        let key = serde_json::json!(["张三", Uuid::nil()]);
        let good = pb::ListCandidatesRequest {
            township_code: "620702001".into(),
            page: Some(common::PageRequest {
                page_size: 0,
                page_token: page_token(&key),
            }),
            ..Default::default()
        };
        let query = validate_list_candidates(&good).expect("valid");
        assert_eq!(query.page.size, DEFAULT_PAGE_SIZE);
        assert_eq!(query.page.after, Some(("张三".to_owned(), Uuid::nil())));
        assert_eq!(
            query.scope,
            Scope::Township {
                township_code: "620702001".into(),
                county_code: "620702".into()
            }
        );
    }

    #[test]
    fn lifecycle_requests_name_their_fields() {
        let decline = pb::DeclinePlacementRequest {
            placement_id: "x".into(),
            declined_by: 0,
            reason: "".into(),
        };
        assert_eq!(
            fields(validate_decline(&decline)),
            vec!["placement_id", "declined_by", "reason"]
        );
        let end = pb::EndPlacementRequest {
            placement_id: Uuid::now_v7().to_string(),
            end_date: Some(common::Date {
                year: 2026,
                month: 2,
                day: 30,
            }),
            reason: pb::EndReason::Other as i32,
            note: String::new(),
        };
        assert_eq!(fields(validate_end(&end)), vec!["end_date", "note"]);
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
        let matching = pb::MatchOpeningsRequest {
            candidate_id: Uuid::now_v7().to_string(),
            max_results: 51,
        };
        assert_eq!(fields(validate_match(&matching)), vec!["max_results"]);
    }
}
