//! The edge where requests come in: each incoming protobuf message becomes a complete,
//! validated domain value, or `InvalidArgument` naming every offending field. Handlers get
//! values with nothing left to check.
//!
//! Every checker below that yields `None` has recorded a violation for its field, so a
//! request with a missing value is always refused with at least one named field.

mod list;
mod notice;
#[cfg(test)]
mod properties;
mod steps;

pub use list::{ListCursor, list};
pub use notice::{amendment, cancellation, notice};
pub use steps::{gate_collection, release_time, report_in};

use chrono::{DateTime, NaiveDate, Utc};
use mesh_kit::{
    error::{FieldViolations, ServiceError},
    jurisdiction::Directory,
    proto_time::{from_date, from_timestamp},
    validate::check_jurisdiction,
};
use mesh_proto::common;
use uuid::Uuid;

use crate::domain::{Destination, MAX_NOTICE_LEAD_MONTHS, past_time_window, release_date_window};

/// The handover a step request names.
pub fn handover_id(value: &str) -> Result<Uuid, ServiceError> {
    value
        .trim()
        .parse()
        .map_err(|_| ServiceError::invalid("handover_id", "must be a UUID"))
}

/// The refusal of a request in which some checker found no value (see the module doc: the
/// violations then name at least that field).
fn refused(violations: FieldViolations) -> ServiceError {
    debug_assert!(
        !violations.is_empty(),
        "a checker yielded no value without naming its field"
    );
    ServiceError::Invalid(violations)
}

/// Checks multi-line free text: at most `max` characters, no control characters other than
/// line breaks and tabs. Empty is allowed. Returns the trimmed value.
fn check_notes(violations: &mut FieldViolations, field: &str, value: &str, max: usize) -> String {
    let value = value.trim();
    if value.chars().count() > max {
        violations.add(field, format!("must be at most {max} characters"));
    } else if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        violations.add(field, "must not contain control characters");
    }
    value.to_owned()
}

/// Checks an expected release date against [`release_date_window`].
fn check_release_date(
    violations: &mut FieldViolations,
    field: &str,
    date: Option<&common::Date>,
    today: NaiveDate,
    past_tolerance_days: u32,
) -> Option<NaiveDate> {
    let Some(date) = date.and_then(from_date) else {
        violations.add(field, "must be a valid date");
        return None;
    };
    let (earliest, latest) = release_date_window(today, past_tolerance_days);
    if date < earliest {
        violations.add(
            field,
            format!("must not be in the past (earliest accepted: {earliest})"),
        );
        return None;
    }
    if date > latest {
        violations.add(
            field,
            format!("must be within {MAX_NOTICE_LEAD_MONTHS} months (latest accepted: {latest})"),
        );
        return None;
    }
    Some(date)
}

/// Checks a destination: present, known township of a known county, and the township in that
/// county. Field names are `<field>.township_code` and `<field>.county_code`.
fn check_destination(
    violations: &mut FieldViolations,
    field: &str,
    destination: Option<&common::Jurisdiction>,
) -> Option<Destination> {
    let Some(destination) = destination else {
        violations.add(field, "is required");
        return None;
    };
    let township = destination.township_code.trim();
    let county = destination.county_code.trim();
    // Records a violation for every way the pair below can be invalid.
    check_jurisdiction(
        violations,
        &format!("{field}.township_code"),
        township,
        &format!("{field}.county_code"),
        county,
    );
    let directory = Directory::get();
    let valid = directory.county(county).is_some()
        && directory
            .township(township)
            .is_some_and(|known| known.county_code == county);
    valid.then(|| Destination {
        township_code: township.to_owned(),
        county_code: county.to_owned(),
    })
}

/// A checked time of something that already happened: present, valid, within
/// [`past_time_window`]. Truncated to microseconds, the database's precision, so a repeated
/// request compares equal to what was stored.
fn check_past_time(
    violations: &mut FieldViolations,
    field: &str,
    time: Option<&prost_types::Timestamp>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let time = time
        .and_then(from_timestamp)
        .and_then(|time| DateTime::from_timestamp_micros(time.timestamp_micros()));
    let (earliest, latest) = past_time_window(now);
    match time {
        None => {
            violations.add(field, "must be a valid time");
            None
        }
        Some(time) if time > latest => {
            violations.add(field, "must not be in the future");
            None
        }
        Some(time) if time < earliest => {
            violations.add(field, "must be within the last year");
            None
        }
        Some(time) => Some(time),
    }
}

/// Test helpers shared by the request tests.
#[cfg(test)]
mod testing {
    use mesh_kit::error::ServiceError;

    /// The fields a refused request names.
    pub fn refused_fields<T: std::fmt::Debug>(result: Result<T, ServiceError>) -> Vec<String> {
        match result.expect_err("must be refused") {
            ServiceError::Invalid(violations) => violations.fields(),
            other => panic!("refused as {other:?}, not as invalid"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handover_ids_are_uuids() {
        let id = Uuid::now_v7();
        assert_eq!(handover_id(&format!(" {id} ")).expect("valid"), id);
        assert_eq!(
            testing::refused_fields(handover_id("not-a-uuid")),
            ["handover_id"]
        );
    }
}
