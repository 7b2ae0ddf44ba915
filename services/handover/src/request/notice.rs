//! The prison's requests: a release notice, its amendment and its cancellation.

use chrono::NaiveDate;
use mesh_kit::{
    error::{FieldViolations, ServiceError},
    national_id::NationalId,
    proto_time::from_date,
    validate::check_text,
};
use mesh_proto::handover as pb;

use super::{check_destination, check_notes, check_release_date, refused};
use crate::domain::{
    AmendmentRequest, CancelReason, Cancellation, MAX_NAME_CHARS, MAX_NOTE_CHARS, MAX_PRISON_ID_CHARS,
    MAX_REASON_CHARS, MAX_REFERENCE_CHARS, MAX_RISK_NOTES_CHARS, Notice, OffenceCategory, ReleaseCategory,
};

/// Validates a release notice, naming every invalid field. `today` is the office-time-zone
/// date; the expected release date may lie up to `past_tolerance_days` before it.
pub fn notice(
    request: &pb::SubmitReleaseNoticeRequest,
    today: NaiveDate,
    past_tolerance_days: u32,
) -> Result<Notice, ServiceError> {
    let mut violations = FieldViolations::new();
    let prison_reference = check_text(
        &mut violations,
        "prison_reference",
        &request.prison_reference,
        MAX_REFERENCE_CHARS,
    );
    let prison_id = check_text(
        &mut violations,
        "prison_id",
        &request.prison_id,
        MAX_PRISON_ID_CHARS,
    );
    let person_name = check_text(
        &mut violations,
        "person_name",
        &request.person_name,
        MAX_NAME_CHARS,
    );
    let national_id = match NationalId::parse(&request.national_id, today) {
        Ok(id) => Some(id),
        Err(error) => {
            violations.add("national_id", error.to_string());
            None
        }
    };
    let date_of_birth = request.date_of_birth.as_ref().and_then(from_date);
    match (date_of_birth, &national_id) {
        (None, _) => violations.add("date_of_birth", "must be a valid date"),
        (Some(birth), Some(id)) if id.birth_date() != Some(birth) => violations.add(
            "date_of_birth",
            "does not match the birth date in the national ID number",
        ),
        _ => {}
    }
    let category = ReleaseCategory::from_proto(request.category);
    violations.require(
        category.is_some(),
        "category",
        "must be parole, temporary execution outside prison or sentence completed",
    );
    let expected_release_date = check_release_date(
        &mut violations,
        "expected_release_date",
        request.expected_release_date.as_ref(),
        today,
        past_tolerance_days,
    );
    let destination = check_destination(&mut violations, "destination", request.destination.as_ref());
    let risk_notes = check_notes(
        &mut violations,
        "risk_notes",
        &request.risk_notes,
        MAX_RISK_NOTES_CHARS,
    );
    let offence_category = OffenceCategory::from_proto(request.offence_category);
    violations.require(
        offence_category.is_some(),
        "offence_category",
        "unknown offence category",
    );
    let (
        Some(national_id),
        Some(date_of_birth),
        Some(category),
        Some(expected_release_date),
        Some(destination),
        Some(offence_category),
    ) = (
        national_id,
        date_of_birth,
        category,
        expected_release_date,
        destination,
        offence_category,
    )
    else {
        return Err(refused(violations));
    };
    violations.into_result()?;
    Ok(Notice {
        prison_reference,
        prison_id,
        person_name,
        national_id,
        date_of_birth,
        category,
        expected_release_date,
        destination,
        key_assistance_target: request.key_assistance_target,
        risk_notes,
        offence_category,
    })
}

/// Validates an amendment: at least one change, each valid, and a reason.
pub fn amendment(
    request: &pb::AmendReleaseNoticeRequest,
    today: NaiveDate,
    past_tolerance_days: u32,
) -> Result<AmendmentRequest, ServiceError> {
    let mut violations = FieldViolations::new();
    if request.new_expected_release_date.is_none() && request.new_destination.is_none() {
        for field in ["new_expected_release_date", "new_destination"] {
            violations.add(
                field,
                "at least one of new_expected_release_date and new_destination is required",
            );
        }
    }
    let expected_release_date = match &request.new_expected_release_date {
        None => None,
        Some(date) => check_release_date(
            &mut violations,
            "new_expected_release_date",
            Some(date),
            today,
            past_tolerance_days,
        ),
    };
    let destination = match &request.new_destination {
        None => None,
        Some(destination) => check_destination(&mut violations, "new_destination", Some(destination)),
    };
    let reason = check_text(&mut violations, "reason", &request.reason, MAX_REASON_CHARS);
    violations.into_result()?;
    Ok(AmendmentRequest {
        expected_release_date,
        destination,
        reason,
    })
}

/// Validates a cancellation: a known reason and a bounded note.
pub fn cancellation(request: &pb::CancelReleaseNoticeRequest) -> Result<Cancellation, ServiceError> {
    let mut violations = FieldViolations::new();
    let reason = CancelReason::from_proto(request.reason);
    violations.require(
        reason.is_some(),
        "reason",
        "must be release revoked or postponed indefinitely",
    );
    let note = check_notes(&mut violations, "note", &request.note, MAX_NOTE_CHARS);
    let Some(reason) = reason else {
        return Err(refused(violations));
    };
    violations.into_result()?;
    Ok(Cancellation { reason, note })
}

#[cfg(test)]
pub(super) mod tests {
    use chrono::Days;
    use mesh_kit::{national_id::synthesize, proto_time::to_date};
    use mesh_proto::common;

    use super::*;
    use crate::{
        domain::testing::{date, destination},
        request::testing::refused_fields,
    };

    /// A valid release notice, for the edge's tests.
    pub(in crate::request) fn notice_request(today: NaiveDate) -> pb::SubmitReleaseNoticeRequest {
        let birth = date(1985, 6, 15);
        pb::SubmitReleaseNoticeRequest {
            prison_reference: "ZY-2026-0001".into(),
            prison_id: "zhangye-prison".into(),
            person_name: "李四".into(),
            national_id: synthesize("620702", birth, 17),
            date_of_birth: Some(to_date(birth)),
            category: pb::ReleaseCategory::Parole as i32,
            expected_release_date: Some(to_date(today + Days::new(30))),
            destination: Some(common::Jurisdiction {
                township_code: "620702001".into(),
                county_code: "620702".into(),
            }),
            key_assistance_target: true,
            risk_notes: "糖尿病\n家属联系人: 妻子".into(),
            offence_category: common::OffenceCategory::Property as i32,
        }
    }

    #[test]
    fn a_valid_notice_is_normalised() {
        let today = date(2026, 11, 26);
        let mut request = notice_request(today);
        request.national_id = request.national_id.to_lowercase();
        request.person_name = "  李四 ".into();
        let valid = notice(&request, today, 1).expect("valid");
        assert_eq!(valid.person_name, "李四");
        assert_eq!(valid.category, ReleaseCategory::Parole);
        assert_eq!(valid.destination.township_code, "620702001");
        assert_eq!(valid.offence_category, OffenceCategory::Property);
        // The same content spelled differently has the same canonical text.
        let again = notice(&notice_request(today), today, 1).expect("valid");
        assert_eq!(valid.canonical_text(), again.canonical_text());
        let mut changed = notice_request(today);
        changed.key_assistance_target = false;
        let changed = notice(&changed, today, 1).expect("valid");
        assert_ne!(valid.canonical_text(), changed.canonical_text());
    }

    #[test]
    fn release_date_in_the_past_is_tolerated_only_within_the_tolerance() {
        let today = date(2026, 11, 26);
        let mut request = notice_request(today);
        request.expected_release_date = Some(to_date(date(2026, 11, 25)));
        assert!(notice(&request, today, 1).is_ok());
        assert_eq!(
            refused_fields(notice(&request, today, 0)),
            ["expected_release_date"]
        );
        request.expected_release_date = Some(to_date(date(2026, 11, 24)));
        assert_eq!(
            refused_fields(notice(&request, today, 1)),
            ["expected_release_date"]
        );
        request.expected_release_date = Some(to_date(date(2032, 1, 1)));
        assert_eq!(
            refused_fields(notice(&request, today, 1)),
            ["expected_release_date"]
        );
    }

    #[test]
    fn bad_notices_name_every_field() {
        let today = date(2026, 11, 26);
        type Mutation = fn(&mut pb::SubmitReleaseNoticeRequest);
        let cases: Vec<(&str, Mutation)> = vec![
            ("prison_reference", |r| r.prison_reference = " ".into()),
            ("prison_id", |r| r.prison_id = "x".repeat(65)),
            ("person_name", |r| r.person_name = String::new()),
            ("national_id", |r| r.national_id.truncate(17)),
            ("national_id", |r| {
                let last = if r.national_id.ends_with('0') { "1" } else { "0" };
                r.national_id.replace_range(17..18, last);
            }),
            ("date_of_birth", |r| r.date_of_birth = None),
            ("date_of_birth", |r| {
                r.date_of_birth = Some(to_date(date(1985, 6, 16)))
            }),
            ("category", |r| r.category = 0),
            ("category", |r| r.category = 7),
            ("expected_release_date", |r| r.expected_release_date = None),
            ("destination", |r| r.destination = None),
            ("destination.township_code", |r| {
                if let Some(d) = r.destination.as_mut() {
                    d.township_code = "620702999".into();
                }
            }),
            ("destination.county_code", |r| {
                if let Some(d) = r.destination.as_mut() {
                    d.county_code = "620721".into();
                }
            }),
            ("risk_notes", |r| r.risk_notes = "长".repeat(2001)),
            ("risk_notes", |r| r.risk_notes = "bell\u{7}".into()),
            ("offence_category", |r| r.offence_category = 42),
        ];
        for (field, mutate) in cases {
            let mut request = notice_request(today);
            mutate(&mut request);
            assert_eq!(refused_fields(notice(&request, today, 1)), [field], "{field}");
        }
        let mut request = notice_request(today);
        request.person_name.clear();
        request.category = 0;
        assert_eq!(
            refused_fields(notice(&request, today, 1)),
            ["person_name", "category"]
        );
    }

    #[test]
    fn amendments_need_a_change_and_a_reason() {
        let today = date(2026, 11, 26);
        let request = pb::AmendReleaseNoticeRequest {
            handover_id: String::new(),
            new_expected_release_date: None,
            new_destination: None,
            reason: String::new(),
        };
        assert_eq!(
            refused_fields(amendment(&request, today, 1)),
            ["new_expected_release_date", "new_destination", "reason"]
        );
        let request = pb::AmendReleaseNoticeRequest {
            new_expected_release_date: Some(to_date(date(2026, 12, 20))),
            new_destination: Some(common::Jurisdiction {
                township_code: "620721002".into(),
                county_code: "620721".into(),
            }),
            reason: "法院裁定延期".into(),
            ..request
        };
        let valid = amendment(&request, today, 1).expect("valid");
        assert_eq!(valid.expected_release_date, Some(date(2026, 12, 20)));
        assert_eq!(valid.destination, Some(destination("620721002", "620721")));
        let mut bad = request.clone();
        bad.new_destination = Some(common::Jurisdiction {
            township_code: "620721002".into(),
            county_code: "620702".into(),
        });
        bad.new_expected_release_date = Some(to_date(date(2026, 1, 1)));
        assert_eq!(
            refused_fields(amendment(&bad, today, 1)),
            ["new_expected_release_date", "new_destination.county_code"]
        );
    }

    #[test]
    fn cancellation_needs_a_reason() {
        let request = pb::CancelReleaseNoticeRequest {
            handover_id: String::new(),
            reason: 0,
            note: String::new(),
        };
        assert_eq!(refused_fields(cancellation(&request)), ["reason"]);
        let request = pb::CancelReleaseNoticeRequest {
            reason: pb::CancelReason::ReleaseRevoked as i32,
            note: " 假释裁定撤销 ".into(),
            ..request
        };
        assert_eq!(
            cancellation(&request).expect("valid"),
            Cancellation {
                reason: CancelReason::ReleaseRevoked,
                note: "假释裁定撤销".to_owned()
            }
        );
    }
}
