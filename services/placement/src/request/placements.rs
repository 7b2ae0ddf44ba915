//! Requests about one placement: its proposal, each later lifecycle step, and reading it.

use chrono::NaiveDate;
use mesh_kit::{
    error::{FieldViolations, ServiceError},
    validate::check_text,
};
use mesh_proto::placement as pb;
use uuid::Uuid;

use super::{MAX_REASON_CHARS, check_date, check_optional_text, check_required, check_uuid};
use crate::domain::{DeclinedBy, EndReason, Step};

/// A validated ProposePlacement request.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub candidate_id: Uuid,
    pub opening_id: Uuid,
    pub note: String,
}

pub fn validate_propose(request: &pb::ProposePlacementRequest) -> Result<Proposal, ServiceError> {
    let mut violations = FieldViolations::new();
    let candidate_id = check_uuid(&mut violations, "candidate_id", &request.candidate_id);
    let opening_id = check_uuid(&mut violations, "opening_id", &request.opening_id);
    let note = check_optional_text(&mut violations, "note", &request.note, MAX_REASON_CHARS);
    violations.into_result()?;
    Ok(Proposal {
        candidate_id,
        opening_id,
        note,
    })
}

/// The placement id of a request that carries nothing else (accept, get).
pub fn validate_placement_id(placement_id: &str) -> Result<Uuid, ServiceError> {
    let mut violations = FieldViolations::new();
    let id = check_uuid(&mut violations, "placement_id", placement_id);
    violations.into_result()?;
    Ok(id)
}

/// A validated request for a lifecycle step of a placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementStep {
    pub placement_id: Uuid,
    pub step: Step,
}

pub fn validate_decline(request: &pb::DeclinePlacementRequest) -> Result<PlacementStep, ServiceError> {
    let mut violations = FieldViolations::new();
    let placement_id = check_uuid(&mut violations, "placement_id", &request.placement_id);
    let by = check_required(
        &mut violations,
        "declined_by",
        DeclinedBy::from_proto(request.declined_by),
        DeclinedBy::Candidate,
        "must be candidate or base",
    );
    let reason = check_text(&mut violations, "reason", &request.reason, MAX_REASON_CHARS);
    violations.into_result()?;
    Ok(PlacementStep {
        placement_id,
        step: Step::Decline { by, reason },
    })
}

pub fn validate_start(request: &pb::StartPlacementRequest) -> Result<PlacementStep, ServiceError> {
    let mut violations = FieldViolations::new();
    let placement_id = check_uuid(&mut violations, "placement_id", &request.placement_id);
    // Not before the proposal: checked against the placement (see `domain::plan_step`).
    let date = check_date(
        &mut violations,
        "start_date",
        request.start_date.as_ref(),
        NaiveDate::MIN,
    );
    violations.into_result()?;
    Ok(PlacementStep {
        placement_id,
        step: Step::Start { date },
    })
}

pub fn validate_end(request: &pb::EndPlacementRequest) -> Result<PlacementStep, ServiceError> {
    let mut violations = FieldViolations::new();
    let placement_id = check_uuid(&mut violations, "placement_id", &request.placement_id);
    let date = check_date(
        &mut violations,
        "end_date",
        request.end_date.as_ref(),
        NaiveDate::MIN,
    );
    // Kept as an `Option` until the end: the note rule below applies to a real "other" only.
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
    Ok(PlacementStep {
        placement_id,
        step: Step::End {
            date,
            // A missing reason was refused above; the placeholder never leaves.
            reason: reason.unwrap_or(EndReason::Other),
            note,
        },
    })
}

#[cfg(test)]
mod tests {
    use mesh_proto::common;

    use super::*;
    use crate::request::testing::fields;

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
        let propose = pb::ProposePlacementRequest {
            candidate_id: "x".into(),
            opening_id: String::new(),
            note: "\u{0}".into(),
        };
        assert_eq!(
            fields(validate_propose(&propose)),
            vec!["candidate_id", "opening_id", "note"]
        );
        assert_eq!(
            fields(validate_placement_id(&Uuid::nil().to_string())),
            vec!["placement_id"]
        );
    }

    #[test]
    fn a_good_ending_is_complete() {
        let end = pb::EndPlacementRequest {
            placement_id: Uuid::now_v7().to_string(),
            end_date: Some(common::Date {
                year: 2027,
                month: 3,
                day: 1,
            }),
            reason: pb::EndReason::Resigned as i32,
            note: " 回老家 ".into(),
        };
        let step = validate_end(&end).expect("valid").step;
        assert_eq!(
            step,
            Step::End {
                date: NaiveDate::from_ymd_opt(2027, 3, 1).unwrap_or_default(),
                reason: EndReason::Resigned,
                note: "回老家".into()
            }
        );
    }
}
