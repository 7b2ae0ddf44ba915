//! The handover lifecycle: which step is legal from which status ([`transition`]), and for
//! each step whether a request is a first take, a harmless repeat, or a conflict with what
//! was already recorded.

use chrono::{DateTime, NaiveDate, Utc};
use mesh_kit::error::ServiceError;

use super::{
    Actor, Amendment, AmendmentRequest, Cancellation, Destination, GateCollection, Handover, Status,
};

/// One state-changing call of the lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The destination township office acknowledges the notice.
    Acknowledge,
    /// The prison confirms the actual release.
    ConfirmRelease,
    /// The township office records collection at the prison gate.
    RecordGateCollection,
    /// The township office records the person's report-in (报到).
    RecordReportIn,
    /// The prison changes the expected release date only.
    AmendReleaseDate,
    /// The prison changes the destination (with or without the date).
    AmendDestination,
    /// The prison cancels the notice.
    Cancel,
}

impl Step {
    pub const ALL: &'static [Step] = &[
        Step::Acknowledge,
        Step::ConfirmRelease,
        Step::RecordGateCollection,
        Step::RecordReportIn,
        Step::AmendReleaseDate,
        Step::AmendDestination,
        Step::Cancel,
    ];

    /// What the step leads to, as named in errors and in its event type (`handover.<target>`).
    pub fn target(self) -> &'static str {
        match self {
            Step::Acknowledge => "acknowledged",
            Step::ConfirmRelease => "released",
            Step::RecordGateCollection => "gate_collected",
            Step::RecordReportIn => "reported_in",
            Step::AmendReleaseDate | Step::AmendDestination => "amended",
            Step::Cancel => "cancelled",
        }
    }
}

/// A step the lifecycle does not allow from the current status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition from {from} to {}", step.target())]
pub struct IllegalTransition {
    pub from: Status,
    pub step: Step,
}

impl Status {
    /// Reported-in and cancelled handovers are closed for good.
    pub fn is_final(self) -> bool {
        matches!(self, Status::ReportedIn | Status::Cancelled)
    }

    /// Handovers that still await something (and hold the person's one open handover).
    pub fn is_open(self) -> bool {
        !self.is_final()
    }
}

/// The status after `step` from `from`, or why the step is illegal now. The lifecycle (see
/// `handover.proto`): notified → acknowledged → released → reported_in; a township may
/// acknowledge after the release without changing the status; the township may record a
/// report-in before the prison confirms the release; the prison amends or cancels only
/// before release, and a new destination sends the notice back to notified; gate collection
/// may be recorded in any status but cancelled.
///
/// Repeats of a step that already took effect (a second acknowledgement, the same release
/// time again) are not transitions; the step rules below answer them before asking here.
pub fn transition(from: Status, step: Step) -> Result<Status, IllegalTransition> {
    use Status::*;
    let next = match (from, step) {
        (Notified, Step::Acknowledge) => Some(Acknowledged),
        // Released but never acknowledged: the acknowledgement is recorded, the status stays.
        (Released, Step::Acknowledge) => Some(Released),
        (Notified | Acknowledged, Step::ConfirmRelease) => Some(Released),
        (Notified | Acknowledged | Released | ReportedIn, Step::RecordGateCollection) => Some(from),
        (Notified | Acknowledged | Released, Step::RecordReportIn) => Some(ReportedIn),
        (Notified | Acknowledged, Step::AmendReleaseDate) => Some(from),
        (Notified | Acknowledged, Step::AmendDestination) => Some(Notified),
        (Notified | Acknowledged, Step::Cancel) => Some(Cancelled),
        _ => None,
    };
    next.ok_or(IllegalTransition { from, step })
}

/// A legal change of status (`from` and `to` may be equal: the step changes other fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Status,
    pub to: Status,
}

impl Transition {
    fn of(from: Status, step: Step) -> Result<Self, IllegalTransition> {
        Ok(Self {
            from,
            to: transition(from, step)?,
        })
    }
}

/// What a step request does to a handover.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<T = ()> {
    /// The step already took effect with the same values: the caller gets the handover as it
    /// is and nothing is published (a retry after a lost answer is harmless).
    Repeat,
    /// The step takes effect: the status changes as `transition` says, with `change`.
    Apply { transition: Transition, change: T },
}

impl Decision {
    fn apply(from: Status, step: Step) -> Result<Self, StepError> {
        Ok(Decision::Apply {
            transition: Transition::of(from, step)?,
            change: (),
        })
    }
}

/// Why a step cannot be taken now; every case becomes `FailedPrecondition` with its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error("the release was already confirmed with a different actual_release_time")]
    ReleaseTimeDiffers,
    #[error("a gate collection with different values was already recorded")]
    GateCollectionDiffers,
    #[error("a report-in with different values was already recorded")]
    ReportInDiffers,
    #[error("the notice was already cancelled with a different reason or note")]
    CancellationDiffers,
}

impl From<StepError> for ServiceError {
    fn from(error: StepError) -> Self {
        ServiceError::precondition(error.to_string())
    }
}

/// The destination township office acknowledges: once (a second acknowledgement, in any
/// status, is a repeat).
pub fn acknowledge(current: &Handover) -> Result<Decision, StepError> {
    if current.acknowledged_at.is_some() {
        return Ok(Decision::Repeat);
    }
    Decision::apply(current.status, Step::Acknowledge)
}

/// The prison confirms the release at `released_at`: once, with one time.
pub fn confirm_release(current: &Handover, released_at: DateTime<Utc>) -> Result<Decision, StepError> {
    match current.actual_release_time {
        Some(recorded) if recorded == released_at => Ok(Decision::Repeat),
        Some(_) => Err(StepError::ReleaseTimeDiffers),
        None => Decision::apply(current.status, Step::ConfirmRelease),
    }
}

/// The township office records the gate collection: once, with one time and officer.
pub fn record_gate_collection(
    current: &Handover,
    collection: &GateCollection,
) -> Result<Decision, StepError> {
    match (&current.gate_collected_at, &current.gate_collecting_officer_id) {
        (Some(at), Some(officer)) if *at == collection.collected_at && *officer == collection.officer_id => {
            Ok(Decision::Repeat)
        }
        (Some(_), _) => Err(StepError::GateCollectionDiffers),
        (None, _) => Decision::apply(current.status, Step::RecordGateCollection),
    }
}

/// The township office records the report-in whose keyed fingerprint is `fingerprint`: once,
/// with one content.
pub fn record_report_in(current: &Handover, fingerprint: &[u8]) -> Result<Decision, StepError> {
    if current.status == Status::ReportedIn {
        return if current.report_in_fingerprint.as_deref() == Some(fingerprint) {
            Ok(Decision::Repeat)
        } else {
            Err(StepError::ReportInDiffers)
        };
    }
    Decision::apply(current.status, Step::RecordReportIn)
}

/// The prison cancels the notice: once, with one reason and note.
pub fn cancel(current: &Handover, cancellation: &Cancellation) -> Result<Decision, StepError> {
    if current.status == Status::Cancelled {
        return if current.cancel_reason == Some(cancellation.reason)
            && current.cancel_note.as_deref().unwrap_or_default() == cancellation.note
        {
            Ok(Decision::Repeat)
        } else {
            Err(StepError::CancellationDiffers)
        };
    }
    Decision::apply(current.status, Step::Cancel)
}

/// The values an amendment really changes (`None`: unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmendedValues {
    pub expected_release_date: Option<NaiveDate>,
    pub destination: Option<Destination>,
}

/// The prison amends the notice: values equal to the current ones are no change, and an
/// amendment that changes nothing is a repeat. A new destination is a different step from a
/// new date alone, since it sends the notice back to be acknowledged by the new township.
pub fn amend(current: &Handover, request: &AmendmentRequest) -> Result<Decision<AmendedValues>, StepError> {
    let expected_release_date = request
        .expected_release_date
        .filter(|date| *date != current.expected_release_date);
    let destination = request
        .destination
        .clone()
        .filter(|destination| *destination != current.destination);
    let step = match (&expected_release_date, &destination) {
        (None, None) => return Ok(Decision::Repeat),
        (_, Some(_)) => Step::AmendDestination,
        (Some(_), None) => Step::AmendReleaseDate,
    };
    Ok(Decision::Apply {
        transition: Transition::of(current.status, step)?,
        change: AmendedValues {
            expected_release_date,
            destination,
        },
    })
}

impl Amendment {
    /// The record of `change` to `current`, by `amended_by` at `now`.
    pub fn record(
        current: &Handover,
        change: AmendedValues,
        reason: String,
        amended_by: Actor,
        now: DateTime<Utc>,
    ) -> Self {
        Amendment {
            handover_id: current.id,
            previous_expected_release_date: change
                .expected_release_date
                .map(|_| current.expected_release_date),
            new_expected_release_date: change.expected_release_date,
            previous_destination: change.destination.as_ref().map(|_| current.destination.clone()),
            new_destination: change.destination,
            reason,
            amended_by,
            amended_at: now,
        }
    }
}

/// Why a release notice cannot be accepted; both become `AlreadyExists`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error(
        "this prison_reference was already submitted with different content; use AmendReleaseNotice to change the notice"
    )]
    DifferentContent,
    #[error("this person already has an open handover; amend or cancel it instead")]
    OpenHandover,
}

impl From<SubmitError> for ServiceError {
    fn from(error: SubmitError) -> Self {
        ServiceError::conflict(error.to_string())
    }
}

/// A notice submitted again under an existing reference: the same content (the same keyed
/// fingerprint) is an idempotent repeat; different content is refused, because changes go
/// through AmendReleaseNotice with a reason.
pub fn resubmission(existing: &Handover, fingerprint: &[u8]) -> Result<(), SubmitError> {
    if existing.submission_fingerprint == fingerprint {
        Ok(())
    } else {
        Err(SubmitError::DifferentContent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        CancelReason,
        testing::{date, destination, handover, utc},
    };
    use Status::*;

    fn applied(from: Status, to: Status) -> Result<Decision, StepError> {
        Ok(Decision::Apply {
            transition: Transition { from, to },
            change: (),
        })
    }

    #[test]
    fn every_legal_and_illegal_transition() {
        use Step::*;
        let legal = [
            (Notified, Acknowledge, Acknowledged),
            (Notified, ConfirmRelease, Released),
            (Notified, RecordGateCollection, Notified),
            (Notified, RecordReportIn, ReportedIn),
            (Notified, AmendReleaseDate, Notified),
            (Notified, AmendDestination, Notified),
            (Notified, Cancel, Cancelled),
            (Acknowledged, ConfirmRelease, Released),
            (Acknowledged, RecordGateCollection, Acknowledged),
            (Acknowledged, RecordReportIn, ReportedIn),
            (Acknowledged, AmendReleaseDate, Acknowledged),
            (Acknowledged, AmendDestination, Notified),
            (Acknowledged, Cancel, Cancelled),
            (Released, Acknowledge, Released),
            (Released, RecordGateCollection, Released),
            (Released, RecordReportIn, ReportedIn),
            (ReportedIn, RecordGateCollection, ReportedIn),
        ];
        let mut legal_seen = 0;
        for &from in Status::ALL {
            for &step in Step::ALL {
                let expected = legal
                    .iter()
                    .find(|(f, s, _)| *f == from && *s == step)
                    .map(|(_, _, to)| *to);
                match (transition(from, step), expected) {
                    (Ok(next), Some(to)) => {
                        assert_eq!(next, to, "{from:?} by {step:?}");
                        legal_seen += 1;
                    }
                    (Err(error), None) => {
                        assert_eq!(error.from, from);
                        assert_eq!(error.step, step);
                    }
                    (got, want) => panic!("{from:?} by {step:?}: got {got:?}, want {want:?}"),
                }
            }
        }
        assert_eq!(legal_seen, legal.len());
    }

    #[test]
    fn illegal_transitions_name_both_ends() {
        assert_eq!(
            transition(Released, Step::Cancel)
                .expect_err("illegal")
                .to_string(),
            "illegal transition from released to cancelled"
        );
        assert_eq!(
            transition(Released, Step::AmendReleaseDate)
                .expect_err("illegal")
                .to_string(),
            "illegal transition from released to amended"
        );
        assert_eq!(
            transition(Cancelled, Step::Acknowledge)
                .expect_err("illegal")
                .to_string(),
            "illegal transition from cancelled to acknowledged"
        );
        assert_eq!(
            transition(ReportedIn, Step::ConfirmRelease)
                .expect_err("illegal")
                .to_string(),
            "illegal transition from reported_in to released"
        );
        // Final statuses allow nothing but a late gate-collection record after report-in.
        for &step in Step::ALL {
            assert!(transition(Cancelled, step).is_err(), "{step:?}");
        }
        assert!(Cancelled.is_final() && ReportedIn.is_final());
        assert!(Notified.is_open() && Acknowledged.is_open() && Released.is_open());
    }

    #[test]
    fn a_second_acknowledgement_is_a_repeat_in_any_status() {
        assert_eq!(acknowledge(&handover(Notified)), applied(Notified, Acknowledged));
        assert_eq!(acknowledge(&handover(Released)), applied(Released, Released));
        let mut acknowledged = handover(Cancelled);
        acknowledged.acknowledged_at = Some(utc("2026-11-02T00:00:00Z"));
        assert_eq!(acknowledge(&acknowledged), Ok(Decision::Repeat));
        assert!(matches!(
            acknowledge(&handover(Cancelled)),
            Err(StepError::Illegal(_))
        ));
    }

    #[test]
    fn recorded_values_make_repeats_or_conflicts() {
        let at = utc("2026-12-05T01:00:00Z");
        let mut released = handover(Released);
        released.actual_release_time = Some(at);
        assert_eq!(confirm_release(&released, at), Ok(Decision::Repeat));
        assert_eq!(
            confirm_release(&released, utc("2026-12-05T02:00:00Z")),
            Err(StepError::ReleaseTimeDiffers)
        );
        assert_eq!(
            confirm_release(&handover(Acknowledged), at),
            applied(Acknowledged, Released)
        );

        let collection = GateCollection {
            collected_at: at,
            officer_id: "officer-1".into(),
        };
        let mut collected = handover(Released);
        collected.gate_collected_at = Some(at);
        collected.gate_collecting_officer_id = Some("officer-1".into());
        assert_eq!(
            record_gate_collection(&collected, &collection),
            Ok(Decision::Repeat)
        );
        let other_officer = GateCollection {
            officer_id: "officer-2".into(),
            ..collection.clone()
        };
        assert_eq!(
            record_gate_collection(&collected, &other_officer),
            Err(StepError::GateCollectionDiffers)
        );
        assert_eq!(
            record_gate_collection(&handover(ReportedIn), &collection),
            applied(ReportedIn, ReportedIn)
        );

        let mut reported = handover(ReportedIn);
        reported.report_in_fingerprint = Some(vec![7]);
        assert_eq!(record_report_in(&reported, &[7]), Ok(Decision::Repeat));
        assert_eq!(record_report_in(&reported, &[8]), Err(StepError::ReportInDiffers));
        assert_eq!(
            record_report_in(&handover(Notified), &[7]),
            applied(Notified, ReportedIn)
        );

        let cancellation = Cancellation {
            reason: CancelReason::ReleaseRevoked,
            note: String::new(),
        };
        let mut cancelled = handover(Cancelled);
        cancelled.cancel_reason = Some(CancelReason::ReleaseRevoked);
        assert_eq!(cancel(&cancelled, &cancellation), Ok(Decision::Repeat));
        let with_note = Cancellation {
            note: "改判".into(),
            ..cancellation.clone()
        };
        assert_eq!(
            cancel(&cancelled, &with_note),
            Err(StepError::CancellationDiffers)
        );
        assert!(matches!(
            cancel(&handover(Released), &cancellation),
            Err(StepError::Illegal(_))
        ));
    }

    #[test]
    fn amendments_change_only_what_differs() {
        let current = handover(Acknowledged);
        let same = AmendmentRequest {
            expected_release_date: Some(current.expected_release_date),
            destination: Some(current.destination.clone()),
            reason: "核对".into(),
        };
        assert_eq!(amend(&current, &same), Ok(Decision::Repeat));

        let new_date = AmendmentRequest {
            expected_release_date: Some(date(2026, 12, 20)),
            ..same.clone()
        };
        let Ok(Decision::Apply { transition, change }) = amend(&current, &new_date) else {
            panic!("a new date is a change");
        };
        assert_eq!(transition.to, Acknowledged, "a new date keeps the status");
        assert_eq!(change.destination, None);
        let record = Amendment::record(
            &current,
            change,
            new_date.reason.clone(),
            Actor {
                subject: "clerk".into(),
                role: "prison".into(),
            },
            utc("2026-11-26T00:00:00Z"),
        );
        assert_eq!(record.previous_expected_release_date, Some(date(2026, 12, 5)));
        assert_eq!(record.new_expected_release_date, Some(date(2026, 12, 20)));
        assert_eq!(record.previous_destination, None);

        let moved = AmendmentRequest {
            destination: Some(destination("620721002", "620721")),
            ..same
        };
        let Ok(Decision::Apply { transition, change }) = amend(&current, &moved) else {
            panic!("a new destination is a change");
        };
        assert_eq!(transition.to, Notified, "the new township must acknowledge");
        assert_eq!(change.expected_release_date, None);
        assert!(matches!(
            amend(&handover(Released), &moved),
            Err(StepError::Illegal(_))
        ));
    }

    #[test]
    fn a_resubmission_must_match_the_notice() {
        let existing = handover(Notified);
        assert_eq!(resubmission(&existing, &[1, 2, 3]), Ok(()));
        assert_eq!(
            resubmission(&existing, &[1, 2, 4]),
            Err(SubmitError::DifferentContent)
        );
    }
}
