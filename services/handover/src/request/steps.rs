//! The receiving side's and the release's requests: the actual release time, the gate
//! collection and the report-in.

use chrono::{DateTime, Utc};
use mesh_kit::{
    error::{FieldViolations, ServiceError},
    jurisdiction::Directory,
    proto_time::from_date,
    term::check_term,
    validate::check_text,
};
use mesh_proto::handover as pb;

use super::{check_past_time, refused};
use crate::domain::{
    GateCollection, Level, MAX_ADDRESS_CHARS, MAX_OFFICER_ID_CHARS, ReleaseCategory, ReportIn,
};

/// Validates the actual release time of ConfirmRelease.
pub fn release_time(
    request: &pb::ConfirmReleaseRequest,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, ServiceError> {
    let mut violations = FieldViolations::new();
    let time = check_past_time(
        &mut violations,
        "actual_release_time",
        request.actual_release_time.as_ref(),
        now,
    );
    time.ok_or_else(|| refused(violations))
}

/// Validates a gate collection: when and by which officer.
pub fn gate_collection(
    request: &pb::RecordGateCollectionRequest,
    now: DateTime<Utc>,
) -> Result<GateCollection, ServiceError> {
    let mut violations = FieldViolations::new();
    let collected_at = check_past_time(
        &mut violations,
        "collected_at",
        request.collected_at.as_ref(),
        now,
    );
    let officer_id = check_text(
        &mut violations,
        "officer_id",
        &request.officer_id,
        MAX_OFFICER_ID_CHARS,
    );
    let Some(collected_at) = collected_at else {
        return Err(refused(violations));
    };
    violations.into_result()?;
    Ok(GateCollection {
        collected_at,
        officer_id,
    })
}

fn check_phone(violations: &mut FieldViolations, phone: &str, required: bool) -> String {
    let phone = phone.trim();
    if phone.is_empty() && !required {
        return String::new();
    }
    let digits = phone.strip_prefix('+').unwrap_or(phone);
    if digits.len() < 5 || digits.len() > 20 || !digits.chars().all(|c| c.is_ascii_digit()) {
        violations.add("phone", "must be 5 to 20 digits, optionally starting with +");
    }
    phone.to_owned()
}

/// Validates a report-in for a handover of `category`. Community-corrections categories need
/// everything the registry needs to register the person (level, officer, term, phone,
/// address); a completed sentence takes no level or term. The report-in cannot precede the
/// confirmed release.
pub fn report_in(
    request: &pb::RecordReportInRequest,
    category: ReleaseCategory,
    released_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<ReportIn, ServiceError> {
    let mut violations = FieldViolations::new();
    let reported_in_at = check_past_time(
        &mut violations,
        "reported_in_at",
        request.reported_in_at.as_ref(),
        now,
    );
    if let (Some(reported), Some(released)) = (reported_in_at, released_at)
        && reported < released
    {
        violations.add("reported_in_at", "must not be before the actual release time");
    }
    let corrections = category.is_community_corrections();
    let level = match (corrections, request.supervision_level) {
        (true, value) => {
            let level = Level::from_proto(value);
            violations.require(
                level.is_some(),
                "supervision_level",
                "must be strict, normal or lenient for community corrections",
            );
            level
        }
        (false, 0) => None,
        (false, _) => {
            violations.add(
                "supervision_level",
                "must be unspecified for a completed sentence",
            );
            None
        }
    };
    let officer_id = if corrections || !request.officer_id.trim().is_empty() {
        check_text(
            &mut violations,
            "officer_id",
            &request.officer_id,
            MAX_OFFICER_ID_CHARS,
        )
    } else {
        String::new()
    };
    let (term_start, term_end) = if corrections {
        let start = request.term_start.as_ref().and_then(from_date);
        let end = request.term_end.as_ref().and_then(from_date);
        violations.require(start.is_some(), "term_start", "must be a valid date");
        violations.require(end.is_some(), "term_end", "must be a valid date");
        // The registry's rule: a term it would refuse is refused here, where a person can
        // correct it, instead of dead-lettering the report-in there.
        let today = now.with_timezone(&Directory::get().time_zone).date_naive();
        check_term(&mut violations, start, end, today);
        (start, end)
    } else {
        violations.require(
            request.term_start.is_none(),
            "term_start",
            "must be unset for a completed sentence",
        );
        violations.require(
            request.term_end.is_none(),
            "term_end",
            "must be unset for a completed sentence",
        );
        (None, None)
    };
    let phone = check_phone(&mut violations, &request.phone, corrections);
    let address = check_text(&mut violations, "address", &request.address, MAX_ADDRESS_CHARS);
    let Some(reported_in_at) = reported_in_at else {
        return Err(refused(violations));
    };
    violations.into_result()?;
    Ok(ReportIn {
        reported_in_at,
        level,
        officer_id,
        term_start,
        term_end,
        phone,
        address,
        needs_employment: request.needs_employment,
    })
}

#[cfg(test)]
mod tests {
    use mesh_kit::proto_time::{to_date, to_timestamp};
    use mesh_proto::registry;

    use super::*;
    use crate::{
        domain::testing::{date, utc},
        request::testing::refused_fields,
    };

    #[test]
    fn report_in_rules_depend_on_the_category() {
        let now = utc("2026-12-05T08:00:00Z");
        let request = pb::RecordReportInRequest {
            handover_id: String::new(),
            reported_in_at: Some(to_timestamp(utc("2026-12-05T02:00:00Z"))),
            supervision_level: registry::SupervisionLevel::Strict as i32,
            officer_id: "officer-1".into(),
            term_start: Some(to_date(date(2026, 12, 5))),
            term_end: Some(to_date(date(2028, 6, 30))),
            phone: "13912345678".into(),
            address: "甘州区东街 1 号".into(),
            needs_employment: true,
        };
        let report = report_in(&request, ReleaseCategory::Parole, None, now).expect("valid");
        assert_eq!(report.level, Some(Level::Strict));
        // Sentence completed takes neither level nor term.
        assert_eq!(
            refused_fields(report_in(&request, ReleaseCategory::SentenceCompleted, None, now)),
            ["supervision_level", "term_start", "term_end"]
        );
        let resettlement = pb::RecordReportInRequest {
            supervision_level: 0,
            term_start: None,
            term_end: None,
            officer_id: String::new(),
            phone: String::new(),
            ..request.clone()
        };
        assert!(report_in(&resettlement, ReleaseCategory::SentenceCompleted, None, now).is_ok());
        // A term the registry would refuse is refused here, not dead-lettered there.
        let impossible = pb::RecordReportInRequest {
            term_start: Some(to_date(date(1970, 1, 1))),
            term_end: Some(to_date(date(2026, 1, 1))),
            ..request.clone()
        };
        assert_eq!(
            refused_fields(report_in(&impossible, ReleaseCategory::Parole, None, now)),
            ["term_start"]
        );
        let over = pb::RecordReportInRequest {
            term_start: Some(to_date(date(2026, 1, 1))),
            ..impossible
        };
        assert_eq!(
            refused_fields(report_in(&over, ReleaseCategory::Parole, None, now)),
            ["term_end"]
        );
        // Community corrections need everything the registry needs.
        assert_eq!(
            refused_fields(report_in(&resettlement, ReleaseCategory::Parole, None, now)),
            [
                "supervision_level",
                "officer_id",
                "term_start",
                "term_end",
                "phone"
            ]
        );
        // Not before the release, not in the future.
        assert_eq!(
            refused_fields(report_in(
                &request,
                ReleaseCategory::Parole,
                Some(utc("2026-12-05T03:00:00Z")),
                now
            )),
            ["reported_in_at"]
        );
        let future = pb::RecordReportInRequest {
            reported_in_at: Some(to_timestamp(now + chrono::Duration::hours(1))),
            ..request
        };
        assert_eq!(
            refused_fields(report_in(&future, ReleaseCategory::Parole, None, now)),
            ["reported_in_at"]
        );
    }

    #[test]
    fn past_times_are_truncated_to_microseconds() {
        let now = utc("2026-12-05T08:00:00Z");
        let request = pb::ConfirmReleaseRequest {
            handover_id: String::new(),
            actual_release_time: Some(prost_types::Timestamp {
                seconds: utc("2026-12-05T01:00:00Z").timestamp(),
                nanos: 123_456_789,
            }),
        };
        let time = release_time(&request, now).expect("valid");
        assert_eq!(time.timestamp_subsec_nanos(), 123_456_000);
        let missing = pb::ConfirmReleaseRequest {
            actual_release_time: None,
            ..request
        };
        assert_eq!(
            refused_fields(release_time(&missing, now)),
            ["actual_release_time"]
        );
    }

    #[test]
    fn gate_collections_name_time_and_officer() {
        let now = utc("2026-12-05T08:00:00Z");
        let request = pb::RecordGateCollectionRequest {
            handover_id: String::new(),
            collected_at: Some(to_timestamp(utc("2026-12-05T01:00:00Z"))),
            officer_id: " officer-1 ".into(),
        };
        let collection = gate_collection(&request, now).expect("valid");
        assert_eq!(collection.officer_id, "officer-1");
        let bad = pb::RecordGateCollectionRequest {
            collected_at: Some(to_timestamp(utc("2024-12-05T01:00:00Z"))),
            officer_id: String::new(),
            ..request
        };
        assert_eq!(
            refused_fields(gate_collection(&bad, now)),
            ["collected_at", "officer_id"]
        );
    }
}
