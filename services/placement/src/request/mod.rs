//! The edge of the API: incoming protos become validated domain values. Every check records
//! a violation naming the proto field path (`work_location.latitude`, `required_skills[2]`)
//! instead of failing fast, so a caller can fix everything at once. Pure functions; "today"
//! and the page-cursor codec are passed in.
//!
//! Each validator returns a complete value with no `Option` left to re-check. A field check
//! that refuses its field records the violation and returns a placeholder (an empty string,
//! the nil UUID, a default enum value); the placeholder never leaves this module, because
//! the validator then ends in `violations.into_result()?`, which refuses the request.

mod lists;
mod placements;
#[cfg(test)]
mod properties;
mod records;

use chrono::NaiveDate;
use mesh_kit::{error::FieldViolations, proto_time::from_date, validate::check_jurisdiction};
use mesh_proto::common;
use uuid::Uuid;

pub use lists::{
    Area, BaseQuery, CandidateQuery, MatchQuery, NameCursor, OpeningQuery, Scope, TimeCursor,
    validate_list_bases, validate_list_candidates, validate_list_openings, validate_match,
};
pub use placements::{
    PlacementStep, Proposal, validate_decline, validate_end, validate_placement_id, validate_propose,
    validate_start,
};
pub use records::{
    BaseUpdate, NewBase, NewOpening, OpeningClosing, Profile, validate_close_opening, validate_create_base,
    validate_create_opening, validate_profile, validate_update_base,
};

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

/// A UUID field; the nil UUID (itself refused) when malformed.
fn check_uuid(violations: &mut FieldViolations, field: &str, value: &str) -> Uuid {
    match value.trim().parse::<Uuid>() {
        Ok(id) if !id.is_nil() => id,
        _ => {
            violations.add(field, "must be a UUID");
            Uuid::nil()
        }
    }
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
        let skill = mesh_kit::validate::check_text(violations, &item, skill, MAX_SKILL_CHARS);
        let key = skill.to_lowercase();
        if !skill.is_empty() && seen.contains(&key) {
            violations.add(&item, "duplicates an earlier skill");
        }
        seen.push(key);
        valid.push(skill);
    }
    valid
}

/// A required calendar date field, not before `earliest` (today, for dates that may not lie
/// in the past). `NaiveDate::MIN` when missing or invalid.
fn check_date(
    violations: &mut FieldViolations,
    field: &str,
    date: Option<&common::Date>,
    earliest: NaiveDate,
) -> NaiveDate {
    match date.and_then(from_date) {
        None => {
            violations.add(field, "must be a valid date");
            NaiveDate::MIN
        }
        Some(date) => {
            if date < earliest {
                violations.add(field, format!("must be today ({earliest}) or later"));
            }
            date
        }
    }
}

/// A required enumeration field: its value, or `why` recorded and `placeholder`.
fn check_required<T>(
    violations: &mut FieldViolations,
    field: &str,
    parsed: Option<T>,
    placeholder: T,
    why: &str,
) -> T {
    violations.require(parsed.is_some(), field, why);
    parsed.unwrap_or(placeholder)
}

/// An optional enumeration field (a filter): 0 (UNSPECIFIED) means none; any other value
/// must be one `parse` knows.
fn check_optional<T>(
    violations: &mut FieldViolations,
    field: &str,
    value: i32,
    parse: fn(i32) -> Option<T>,
    why: &str,
) -> Option<T> {
    match value {
        0 => None,
        value => {
            let parsed = parse(value);
            violations.require(parsed.is_some(), field, why);
            parsed
        }
    }
}

/// Distinct known values of a repeated enumeration field; each unknown item is named with
/// `unknown`, each repeated one with `repeated`.
fn check_distinct<T: PartialEq>(
    violations: &mut FieldViolations,
    field: &str,
    values: &[i32],
    parse: fn(i32) -> Option<T>,
    (unknown, repeated): (&str, &str),
) -> Vec<T> {
    let mut distinct = Vec::with_capacity(values.len());
    for (index, value) in values.iter().enumerate() {
        let item = format!("{field}[{index}]");
        match parse(*value) {
            None => violations.add(&item, unknown),
            Some(parsed) if distinct.contains(&parsed) => violations.add(&item, repeated),
            Some(parsed) => distinct.push(parsed),
        }
    }
    distinct
}

#[cfg(test)]
mod testing {
    use mesh_kit::error::ServiceError;

    /// The fields a validation result blames (none when it passed).
    pub fn fields(result: Result<impl std::fmt::Debug, ServiceError>) -> Vec<String> {
        match result {
            Err(ServiceError::Invalid(violations)) => violations.fields(),
            Err(other) => panic!("not a validation error: {other}"),
            Ok(_) => Vec::new(),
        }
    }
}
