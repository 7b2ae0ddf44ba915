//! The edge where requests come in: each incoming message becomes a complete, validated
//! domain value, or `InvalidArgument` naming every bad field. Handlers never re-check.

use chrono::{DateTime, Utc};
use mesh_kit::{
    error::{FieldViolations, ServiceError},
    jurisdiction::Directory,
    national_id::NationalId,
    page::{Cursors, Page},
    proto_time::{from_date, from_timestamp},
    validate::{check_jurisdiction, check_text},
};
use mesh_proto::registry as pb;
use uuid::Uuid;

use crate::{
    dates::{self, ReportedBy},
    domain::{
        Category, Jurisdiction, Level, MAX_ADDRESS_CHARS, MAX_NAME_CHARS, MAX_OFFICER_ID_CHARS,
        MAX_REASON_CHARS, Registration, SupervisionStatus,
    },
};

/// A request's `supervisee_id` (a request with no other field).
pub fn supervisee_id(value: &str) -> Result<Uuid, ServiceError> {
    let mut violations = FieldViolations::new();
    parse_id(&mut violations, value).ok_or(ServiceError::Invalid(violations))
}

/// Validates a registration (typed in by an officer, or built from a handover's report-in:
/// `by` says which, for the report-in time's rules, see [`ReportedBy`]).
pub fn registration(
    request: &pb::RegisterSuperviseeRequest,
    now: DateTime<Utc>,
    by: ReportedBy,
) -> Result<Registration, ServiceError> {
    let mut violations = FieldViolations::new();
    let time_zone = Directory::get().time_zone;
    let today = now.with_timezone(&time_zone).date_naive();
    let name = check_text(&mut violations, "name", &request.name, MAX_NAME_CHARS);
    let national_id = NationalId::parse(&request.national_id, today)
        .map_err(|error| violations.add("national_id", error.to_string()))
        .ok();
    let category = required(
        &mut violations,
        "category",
        Category::from_proto(request.category),
        "must be one of the four community-corrections categories",
    );
    let term_start = required(
        &mut violations,
        "term_start",
        request.term_start.as_ref().and_then(from_date),
        "must be a valid date",
    );
    let term_end = required(
        &mut violations,
        "term_end",
        request.term_end.as_ref().and_then(from_date),
        "must be a valid date",
    );
    let term = dates::check_term(&mut violations, term_start, term_end, today);
    let level = required(
        &mut violations,
        "level",
        Level::from_proto(request.level),
        "must be strict, normal or lenient",
    );
    check_jurisdiction(
        &mut violations,
        "township_code",
        &request.township_code,
        "county_code",
        &request.county_code,
    );
    let officer_id = check_text(
        &mut violations,
        "officer_id",
        &request.officer_id,
        MAX_OFFICER_ID_CHARS,
    );
    let phone = check_phone(&mut violations, &request.phone);
    let address = check_text(&mut violations, "address", &request.address, MAX_ADDRESS_CHARS);
    let reported_at = match request.reported_at.as_ref().map(from_timestamp) {
        None => None,
        Some(None) => {
            violations.add("reported_at", "must be a valid time");
            None
        }
        Some(Some(time)) => dates::check_reported_at(time, term, now, time_zone, by)
            .map_err(|why| violations.add("reported_at", why))
            .ok(),
    };
    match (national_id, category, term_start, term_end, level) {
        (Some(national_id), Some(category), Some(term_start), Some(term_end), Some(level))
            if violations.is_empty() =>
        {
            Ok(Registration {
                name,
                national_id,
                category,
                term_start,
                term_end,
                level,
                jurisdiction: Jurisdiction {
                    township_code: request.township_code.clone(),
                    county_code: request.county_code.clone(),
                },
                officer_id,
                phone,
                address,
                reported_at,
                needs_employment: request.needs_employment,
            })
        }
        _ => Err(ServiceError::Invalid(violations)),
    }
}

/// A validated list request.
#[derive(Debug)]
pub struct ListQuery {
    /// The township office listed (from the directory, so with its county).
    pub township: Jurisdiction,
    /// Only supervisees in this status, if given.
    pub status: Option<SupervisionStatus>,
    /// The page, positioned after a supervisee id.
    pub page: Page<Uuid>,
    /// The cursor scope: this list and its filters.
    pub scope: String,
}

pub fn list(request: &pb::ListSuperviseesRequest, cursors: &Cursors) -> Result<ListQuery, ServiceError> {
    let mut violations = FieldViolations::new();
    let township = required(
        &mut violations,
        "township_code",
        Directory::get().township(&request.township_code),
        "unknown township office code",
    );
    // Unspecified means every status; any other value must be a known one.
    let status = match request.status {
        0 => Some(None),
        value => required(
            &mut violations,
            "status",
            SupervisionStatus::from_proto(value).map(Some),
            "unknown status",
        ),
    };
    let scope = format!(
        "registry.list|{}|{}",
        request.township_code,
        status.flatten().map_or("", SupervisionStatus::as_str)
    );
    let page = cursors.page(&scope, request.page.as_ref(), &mut violations);
    match (township, status) {
        (Some(township), Some(status)) if violations.is_empty() => Ok(ListQuery {
            township: Jurisdiction {
                township_code: township.code.clone(),
                county_code: township.county_code.clone(),
            },
            status,
            page,
            scope,
        }),
        _ => Err(ServiceError::Invalid(violations)),
    }
}

/// A validated level change.
#[derive(Debug)]
pub struct LevelChange {
    pub id: Uuid,
    pub level: Level,
    pub reason: String,
}

pub fn level_change(request: &pb::ChangeLevelRequest) -> Result<LevelChange, ServiceError> {
    let mut violations = FieldViolations::new();
    let id = parse_id(&mut violations, &request.supervisee_id);
    let level = required(
        &mut violations,
        "level",
        Level::from_proto(request.level),
        "must be strict, normal or lenient",
    );
    let reason = check_text(&mut violations, "reason", &request.reason, MAX_REASON_CHARS);
    match (id, level) {
        (Some(id), Some(level)) if violations.is_empty() => Ok(LevelChange { id, level, reason }),
        _ => Err(ServiceError::Invalid(violations)),
    }
}

/// A validated transfer.
#[derive(Debug)]
pub struct Transfer {
    pub id: Uuid,
    pub to: Jurisdiction,
    /// Trimmed; may be empty (the receiving office assigns an officer later).
    pub officer_id: String,
    pub reason: String,
}

pub fn transfer(request: &pb::TransferSuperviseeRequest) -> Result<Transfer, ServiceError> {
    let mut violations = FieldViolations::new();
    let id = parse_id(&mut violations, &request.supervisee_id);
    check_jurisdiction(
        &mut violations,
        "to_township_code",
        &request.to_township_code,
        "to_county_code",
        &request.to_county_code,
    );
    let officer_id = request.to_officer_id.trim().to_owned();
    if officer_id.chars().count() > MAX_OFFICER_ID_CHARS {
        violations.add(
            "to_officer_id",
            format!("must be at most {MAX_OFFICER_ID_CHARS} characters"),
        );
    }
    let reason = check_text(&mut violations, "reason", &request.reason, MAX_REASON_CHARS);
    match id {
        Some(id) if violations.is_empty() => Ok(Transfer {
            id,
            to: Jurisdiction {
                township_code: request.to_township_code.clone(),
                county_code: request.to_county_code.clone(),
            },
            officer_id,
            reason,
        }),
        _ => Err(ServiceError::Invalid(violations)),
    }
}

/// A validated status change.
#[derive(Debug)]
pub struct StatusChange {
    pub id: Uuid,
    pub status: SupervisionStatus,
    pub reason: String,
    /// When the change took effect (`now` when not given).
    pub effective_at: DateTime<Utc>,
}

pub fn status_change(
    request: &pb::ChangeStatusRequest,
    now: DateTime<Utc>,
) -> Result<StatusChange, ServiceError> {
    let mut violations = FieldViolations::new();
    let id = parse_id(&mut violations, &request.supervisee_id);
    let status = required(
        &mut violations,
        "status",
        SupervisionStatus::from_proto(request.status),
        "must be a known status",
    );
    let reason = check_text(&mut violations, "reason", &request.reason, MAX_REASON_CHARS);
    let effective_at = match request.effective_at.as_ref().map(from_timestamp) {
        None => Some(now),
        Some(None) => {
            violations.add("effective_at", "must be a valid time");
            None
        }
        Some(Some(time)) => dates::check_effective_at(time, now)
            .map(|()| time)
            .map_err(|why| violations.add("effective_at", why))
            .ok(),
    };
    match (id, status, effective_at) {
        (Some(id), Some(status), Some(effective_at)) if violations.is_empty() => Ok(StatusChange {
            id,
            status,
            reason,
            effective_at,
        }),
        _ => Err(ServiceError::Invalid(violations)),
    }
}

fn parse_id(violations: &mut FieldViolations, value: &str) -> Option<Uuid> {
    required(
        violations,
        "supervisee_id",
        value.trim().parse().ok(),
        "must be a UUID",
    )
}

/// `value`, recording a violation of `field` when there is none: so a missing value is
/// always named, and a complete value is built only from present ones.
fn required<T>(violations: &mut FieldViolations, field: &str, value: Option<T>, why: &str) -> Option<T> {
    violations.require(value.is_some(), field, why);
    value
}

fn check_phone(violations: &mut FieldViolations, phone: &str) -> String {
    let phone = phone.trim();
    let digits = phone.strip_prefix('+').unwrap_or(phone);
    if digits.len() < 5 || digits.len() > 20 || !digits.chars().all(|c| c.is_ascii_digit()) {
        violations.add("phone", "must be 5 to 20 digits, optionally starting with +");
    }
    phone.to_owned()
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use mesh_kit::{national_id::synthesize, proto_time::to_date, proto_time::to_timestamp};
    use secrecy::SecretString;

    use super::*;

    pub(super) fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-26T08:00:00Z")
            .expect("valid")
            .with_timezone(&Utc)
    }

    pub(super) fn registration_request() -> pb::RegisterSuperviseeRequest {
        pb::RegisterSuperviseeRequest {
            name: " 测试人员 ".into(),
            national_id: synthesize("620702", NaiveDate::from_ymd_opt(1990, 3, 7).expect("date"), 1),
            category: pb::Category::Probation as i32,
            term_start: NaiveDate::from_ymd_opt(2026, 10, 1).map(to_date),
            term_end: NaiveDate::from_ymd_opt(2027, 9, 30).map(to_date),
            level: pb::SupervisionLevel::Normal as i32,
            township_code: "620702001".into(),
            county_code: "620702".into(),
            officer_id: "officer-1".into(),
            phone: "13912345678".into(),
            address: "甘州区东街 1 号".into(),
            reported_at: None,
            needs_employment: true,
        }
    }

    fn fields(error: ServiceError) -> String {
        match error {
            ServiceError::Invalid(violations) => violations.to_string(),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn a_valid_registration_is_complete_and_trimmed() {
        let registration = registration(&registration_request(), now(), ReportedBy::Officer).expect("valid");
        assert_eq!(registration.name, "测试人员");
        assert_eq!(registration.level, Level::Normal);
        assert_eq!(registration.jurisdiction.township_code, "620702001");
        assert_eq!(registration.reported_at, None);
        assert!(registration.needs_employment);
    }

    #[test]
    fn a_registration_names_every_bad_field_in_order() {
        let request = pb::RegisterSuperviseeRequest {
            name: String::new(),
            national_id: "123".into(),
            category: 0,
            term_start: None,
            level: 99,
            phone: "12".into(),
            reported_at: Some(to_timestamp(now() + chrono::Duration::minutes(6))),
            ..registration_request()
        };
        let Err(ServiceError::Invalid(violations)) = registration(&request, now(), ReportedBy::Officer)
        else {
            panic!("not a validation error");
        };
        assert_eq!(
            violations.fields(),
            [
                "name",
                "national_id",
                "category",
                "term_start",
                "level",
                "phone",
                "reported_at"
            ]
        );
    }

    #[test]
    fn a_term_may_not_end_before_it_starts() {
        let request = pb::RegisterSuperviseeRequest {
            term_end: NaiveDate::from_ymd_opt(2026, 9, 30).map(to_date),
            ..registration_request()
        };
        assert_eq!(
            fields(registration(&request, now(), ReportedBy::Officer).expect_err("invalid")),
            "term_end: must not be before term_start"
        );
    }

    #[test]
    fn impossible_dates_are_named_and_a_handovers_time_ahead_is_taken_as_now() {
        let epoch = DateTime::from_timestamp(0, 0).expect("1970");
        let request = pb::RegisterSuperviseeRequest {
            term_start: NaiveDate::from_ymd_opt(1970, 1, 1).map(to_date),
            reported_at: Some(to_timestamp(epoch)),
            ..registration_request()
        };
        // A handover's report-in time is bounded by the term only, and this term is refused.
        for (by, expected) in [
            (ReportedBy::Officer, &["term_start", "reported_at"][..]),
            (ReportedBy::Handover, &["term_start"][..]),
        ] {
            let Err(ServiceError::Invalid(violations)) = registration(&request, now(), by) else {
                panic!("not a validation error");
            };
            assert_eq!(violations.fields(), expected, "{by:?}");
        }
        let valid_term = pb::RegisterSuperviseeRequest {
            reported_at: Some(to_timestamp(epoch)),
            ..registration_request()
        };
        assert_eq!(
            fields(registration(&valid_term, now(), ReportedBy::Handover).expect_err("1970")),
            "reported_at: must not be before term_start"
        );
        let ahead = pb::RegisterSuperviseeRequest {
            reported_at: Some(to_timestamp(now() + chrono::Duration::minutes(10))),
            ..registration_request()
        };
        assert_eq!(
            fields(registration(&ahead, now(), ReportedBy::Officer).expect_err("future")),
            "reported_at: must not be in the future"
        );
        let from_handover = registration(&ahead, now(), ReportedBy::Handover).expect("clamped");
        assert_eq!(from_handover.reported_at, Some(now()));
    }

    #[test]
    fn a_status_change_takes_effect_now_unless_told_and_never_in_the_future() {
        let request = pb::ChangeStatusRequest {
            supervisee_id: Uuid::now_v7().to_string(),
            status: pb::SuperviseeStatus::Active as i32,
            reason: "reported in".into(),
            effective_at: None,
        };
        let change = status_change(&request, now()).expect("valid");
        assert_eq!(change.effective_at, now());
        assert_eq!(change.status, SupervisionStatus::Active);

        let future = pb::ChangeStatusRequest {
            status: 0,
            effective_at: Some(to_timestamp(now() + chrono::Duration::hours(1))),
            ..request
        };
        assert_eq!(
            fields(status_change(&future, now()).expect_err("invalid")),
            "status: must be a known status; effective_at: must not be in the future"
        );
        let bad_id = pb::ChangeStatusRequest {
            supervisee_id: "nope".into(),
            ..future
        };
        assert_eq!(
            fields(status_change(&bad_id, now()).expect_err("invalid")),
            "supervisee_id: must be a UUID; status: must be a known status; \
             effective_at: must not be in the future"
        );
    }

    #[test]
    fn a_level_change_names_every_bad_field() {
        let request = pb::ChangeLevelRequest {
            supervisee_id: "not-a-uuid".into(),
            level: 0,
            reason: String::new(),
        };
        let Err(ServiceError::Invalid(violations)) = level_change(&request) else {
            panic!("not a validation error");
        };
        assert_eq!(violations.fields(), ["supervisee_id", "level", "reason"]);
        let request = pb::ChangeLevelRequest {
            supervisee_id: format!(" {} ", Uuid::nil()),
            level: pb::SupervisionLevel::Lenient as i32,
            reason: "stable for a year".into(),
        };
        let change = level_change(&request).expect("valid");
        assert_eq!((change.id, change.level), (Uuid::nil(), Level::Lenient));
    }

    #[test]
    fn a_transfer_checks_the_destination_and_the_officer() {
        let request = pb::TransferSuperviseeRequest {
            supervisee_id: Uuid::now_v7().to_string(),
            to_township_code: "620702001".into(),
            to_county_code: "620721".into(),
            to_officer_id: "x".repeat(MAX_OFFICER_ID_CHARS + 1),
            reason: " ".into(),
        };
        assert_eq!(
            fields(transfer(&request).expect_err("invalid")),
            format!(
                "to_county_code: the township office does not belong to this county bureau; \
                 to_officer_id: must be at most {MAX_OFFICER_ID_CHARS} characters; reason: must not be empty"
            )
        );
    }

    #[test]
    fn a_list_cursor_is_bound_to_its_township_and_status() {
        let cursors = Cursors::new(&SecretString::from("a secret of at least thirty-two bytes!!"));
        let request = pb::ListSuperviseesRequest {
            township_code: "620702001".into(),
            status: pb::SuperviseeStatus::Active as i32,
            page: None,
        };
        let query = list(&request, &cursors).expect("valid");
        assert_eq!(query.township.county_code, "620702");
        assert_eq!(query.status, Some(SupervisionStatus::Active));
        let token = cursors.encode(&query.scope, &Uuid::nil());

        let next = pb::ListSuperviseesRequest {
            page: Some(mesh_proto::common::PageRequest {
                page_size: 0,
                page_token: token.clone(),
            }),
            ..request.clone()
        };
        assert_eq!(
            list(&next, &cursors).expect("valid").page.after,
            Some(Uuid::nil())
        );
        let other_filter = pb::ListSuperviseesRequest { status: 0, ..next };
        assert_eq!(
            fields(list(&other_filter, &cursors).expect_err("foreign cursor")),
            "page.page_token: not a token from a previous page of this list"
        );
        let unknown = pb::ListSuperviseesRequest {
            township_code: "999".into(),
            status: 42,
            page: None,
        };
        assert_eq!(
            fields(list(&unknown, &cursors).expect_err("invalid")),
            "township_code: unknown township office code; status: unknown status"
        );
    }
}
