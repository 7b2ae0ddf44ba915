//! The placement lifecycle: the legal transitions, what each step does to the opening's
//! positions, and every rule a proposal and each later step must satisfy, in the order they
//! are checked.

use chrono::NaiveDate;
use mesh_kit::error::ServiceError;
use uuid::Uuid;

use super::{
    DeclinedBy, EndReason, PlacementStatus,
    matching::{CandidateFacts, Ineligible, OpeningFacts, check_person, check_proposal},
};

impl PlacementStatus {
    /// Declined and ended placements never change again.
    pub fn is_final(self) -> bool {
        matches!(self, PlacementStatus::Declined | PlacementStatus::Ended)
    }

    /// Whether a placement in this status holds one of the opening's positions.
    pub fn holds_position(self) -> bool {
        matches!(self, PlacementStatus::Accepted | PlacementStatus::Started)
    }

    /// The legal transitions: proposed → accepted | declined; accepted → started |
    /// declined; started → ended.
    pub fn can_become(self, next: PlacementStatus) -> bool {
        use PlacementStatus::*;
        matches!(
            (self, next),
            (Proposed, Accepted | Declined) | (Accepted, Started | Declined) | (Started, Ended)
        )
    }
}

/// What a lifecycle step does to the opening's positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionEffect {
    /// The placement takes a position (acceptance).
    Take,
    /// The placement gives its position back (declined after acceptance, or ended).
    Release,
    /// Positions are untouched.
    Unchanged,
}

/// A step the lifecycle does not allow; becomes `FailedPrecondition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition from {from} to {to}")]
pub struct IllegalTransition {
    pub from: PlacementStatus,
    pub to: PlacementStatus,
}

/// Checks `from → to` and says what it does to the opening's positions.
pub fn transition(from: PlacementStatus, to: PlacementStatus) -> Result<PositionEffect, IllegalTransition> {
    if !from.can_become(to) {
        return Err(IllegalTransition { from, to });
    }
    Ok(match (from.holds_position(), to.holds_position()) {
        (false, true) => PositionEffect::Take,
        (true, false) => PositionEffect::Release,
        _ => PositionEffect::Unchanged,
    })
}

/// Every position of the opening is taken; becomes `FailedPrecondition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no position left in this opening")]
pub struct NoPositionLeft;

/// Positions filled after applying `effect`. The caller holds the opening's row lock, so
/// the check and the write cannot interleave with another placement's.
pub fn apply_position_effect(effect: PositionEffect, filled: u32, total: u32) -> Result<u32, NoPositionLeft> {
    match effect {
        PositionEffect::Take if filled >= total => Err(NoPositionLeft),
        PositionEffect::Take => Ok(filled + 1),
        PositionEffect::Release => Ok(filled.saturating_sub(1)),
        PositionEffect::Unchanged => Ok(filled),
    }
}

/// Why a new placement may not be proposed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    /// A live placement of this candidate into this opening exists: `AlreadyExists`.
    #[error("the candidate is already proposed for this opening (placement {0})")]
    AlreadyProposed(Uuid),
    /// One current placement per candidate: `FailedPrecondition`.
    #[error("the candidate already has a current placement ({0})")]
    HasCurrentPlacement(Uuid),
    #[error(transparent)]
    Ineligible(#[from] Ineligible),
}

impl From<ProposalError> for ServiceError {
    fn from(error: ProposalError) -> Self {
        match error {
            ProposalError::AlreadyProposed(_) => ServiceError::conflict(error.to_string()),
            _ => ServiceError::precondition(error.to_string()),
        }
    }
}

/// Every rule a new placement must meet, in order: no live placement for the same opening
/// (`same_opening`), no current placement at all (`current`), then [`check_proposal`].
pub fn check_new_placement(
    same_opening: Option<Uuid>,
    current: Option<Uuid>,
    candidate: &CandidateFacts,
    opening: &OpeningFacts,
    today: NaiveDate,
) -> Result<(), ProposalError> {
    if let Some(existing) = same_opening {
        return Err(ProposalError::AlreadyProposed(existing));
    }
    if let Some(current) = current {
        return Err(ProposalError::HasCurrentPlacement(current));
    }
    Ok(check_proposal(candidate, opening, today)?)
}

/// A lifecycle step after the proposal, with what it records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Accept,
    Decline {
        by: DeclinedBy,
        reason: String,
    },
    Start {
        date: NaiveDate,
    },
    End {
        date: NaiveDate,
        reason: EndReason,
        note: String,
    },
}

impl Step {
    /// The status the placement moves to.
    pub fn target(&self) -> PlacementStatus {
        match self {
            Step::Accept => PlacementStatus::Accepted,
            Step::Decline { .. } => PlacementStatus::Declined,
            Step::Start { .. } => PlacementStatus::Started,
            Step::End { .. } => PlacementStatus::Ended,
        }
    }
}

/// What a step needs to know of the placement it moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacementNow {
    pub status: PlacementStatus,
    /// The proposal's date in the office time zone.
    pub proposed_on: NaiveDate,
    pub start_date: Option<NaiveDate>,
}

/// What a legal step changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepPlan {
    pub from: PlacementStatus,
    pub to: PlacementStatus,
    /// The opening's filled positions after the step.
    pub positions_filled: u32,
    /// Whether the step changes the opening's filled positions.
    pub positions_changed: bool,
}

/// Why a step may not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error(transparent)]
    Ineligible(#[from] Ineligible),
    #[error(transparent)]
    Full(#[from] NoPositionLeft),
    /// Names the request's `start_date`.
    #[error("must not be before the proposal ({proposed_on})")]
    StartBeforeProposal { proposed_on: NaiveDate },
    /// Names the request's `end_date`.
    #[error("must be on or after the start date ({start})")]
    EndBeforeStart { start: NaiveDate },
}

impl From<StepError> for ServiceError {
    fn from(error: StepError) -> Self {
        match error {
            StepError::StartBeforeProposal { .. } => ServiceError::invalid("start_date", error.to_string()),
            StepError::EndBeforeStart { .. } => ServiceError::invalid("end_date", error.to_string()),
            _ => ServiceError::precondition(error.to_string()),
        }
    }
}

/// Checks one step and says what it changes, in order: the transition is legal; for an
/// acceptance or a start, the person may still take this job ([`check_person`]: still
/// looking for work, still supervised in the job's county, offence category still
/// accepted); a position is left to take; the dates fit the placement's history.
pub fn plan_step(
    step: &Step,
    placement: &PlacementNow,
    candidate: &CandidateFacts,
    opening: &OpeningFacts,
) -> Result<StepPlan, StepError> {
    let (from, to) = (placement.status, step.target());
    let effect = transition(from, to)?;
    if matches!(step, Step::Accept | Step::Start { .. }) {
        check_person(candidate, opening)?;
    }
    let filled = apply_position_effect(effect, opening.positions_filled, opening.positions_total)?;
    match step {
        Step::Start { date } if *date < placement.proposed_on => {
            return Err(StepError::StartBeforeProposal {
                proposed_on: placement.proposed_on,
            });
        }
        Step::End { date, .. } => {
            if let Some(start) = placement.start_date
                && *date < start
            {
                return Err(StepError::EndBeforeStart { start });
            }
        }
        _ => {}
    }
    Ok(StepPlan {
        from,
        to,
        positions_filled: filled,
        positions_changed: filled != opening.positions_filled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::{date, opening, supervisee};
    use PlacementStatus::*;

    #[test]
    fn every_legal_and_illegal_transition() {
        let legal = [
            (Proposed, Accepted, PositionEffect::Take),
            (Proposed, Declined, PositionEffect::Unchanged),
            (Accepted, Started, PositionEffect::Unchanged),
            (Accepted, Declined, PositionEffect::Release),
            (Started, Ended, PositionEffect::Release),
        ];
        for &from in PlacementStatus::ALL {
            for &to in PlacementStatus::ALL {
                let expected = legal
                    .iter()
                    .find(|(f, t, _)| *f == from && *t == to)
                    .map(|(_, _, effect)| *effect);
                match (transition(from, to), expected) {
                    (Ok(effect), Some(want)) => assert_eq!(effect, want, "{from} → {to}"),
                    (Err(error), None) => {
                        assert_eq!(
                            error.to_string(),
                            format!("illegal transition from {from} to {to}")
                        )
                    }
                    (got, want) => panic!("{from} → {to}: got {got:?}, want {want:?}"),
                }
            }
        }
        assert!(Declined.is_final() && Ended.is_final());
        assert!(!Proposed.is_final() && !Accepted.is_final() && !Started.is_final());
    }

    #[test]
    fn positions_are_taken_once_and_given_back() {
        assert_eq!(apply_position_effect(PositionEffect::Take, 0, 1), Ok(1));
        assert_eq!(
            apply_position_effect(PositionEffect::Take, 1, 1),
            Err(NoPositionLeft)
        );
        assert_eq!(
            apply_position_effect(PositionEffect::Take, 5, 3),
            Err(NoPositionLeft)
        );
        assert_eq!(apply_position_effect(PositionEffect::Release, 1, 1), Ok(0));
        assert_eq!(apply_position_effect(PositionEffect::Release, 0, 1), Ok(0));
        assert_eq!(apply_position_effect(PositionEffect::Unchanged, 1, 1), Ok(1));
        // A whole lifecycle on a one-position opening: accept takes it, a second acceptance
        // is refused, ending gives it back for the next person.
        let mut filled = 0;
        filled =
            apply_position_effect(transition(Proposed, Accepted).expect("legal"), filled, 1).expect("free");
        assert!(apply_position_effect(transition(Proposed, Accepted).expect("legal"), filled, 1).is_err());
        filled =
            apply_position_effect(transition(Accepted, Started).expect("legal"), filled, 1).expect("kept");
        assert_eq!(filled, 1);
        filled = apply_position_effect(transition(Started, Ended).expect("legal"), filled, 1).expect("freed");
        assert_eq!(filled, 0);
    }

    fn placement(status: PlacementStatus) -> PlacementNow {
        PlacementNow {
            status,
            proposed_on: date("2026-12-01"),
            start_date: (status == Started).then(|| date("2026-12-03")),
        }
    }

    #[test]
    fn steps_are_checked_in_order_and_say_what_they_change() {
        let accepted = plan_step(&Step::Accept, &placement(Proposed), &supervisee(), &opening());
        assert_eq!(
            accepted,
            Ok(StepPlan {
                from: Proposed,
                to: Accepted,
                positions_filled: 2,
                positions_changed: true
            })
        );
        // The transition comes first, even when the dates are wrong as well.
        let early = Step::Start {
            date: date("2026-11-30"),
        };
        assert_eq!(
            plan_step(&early, &placement(Proposed), &supervisee(), &opening()),
            Err(StepError::Illegal(IllegalTransition {
                from: Proposed,
                to: Started
            }))
        );
        let refused = ServiceError::from(
            plan_step(&early, &placement(Accepted), &supervisee(), &opening()).expect_err("early"),
        );
        assert_eq!(refused.field(), Some("start_date"));
        let mut gone = supervisee();
        gone.active = false;
        assert_eq!(
            plan_step(&Step::Accept, &placement(Proposed), &gone, &opening()),
            Err(StepError::Ineligible(Ineligible::CandidateInactive))
        );
        // Declining needs nothing of the person.
        assert!(plan_step(&decline(), &placement(Proposed), &gone, &opening()).is_ok());
        let mut full = opening();
        full.positions_filled = full.positions_total;
        assert_eq!(
            plan_step(&Step::Accept, &placement(Proposed), &supervisee(), &full),
            Err(StepError::Full(NoPositionLeft))
        );
        let ended_early = Step::End {
            date: date("2026-12-02"),
            reason: EndReason::Completed,
            note: String::new(),
        };
        let refused = ServiceError::from(
            plan_step(&ended_early, &placement(Started), &supervisee(), &opening()).expect_err("early"),
        );
        assert_eq!(refused.field(), Some("end_date"));
        assert_eq!(
            refused.public_message(),
            "end_date: must be on or after the start date (2026-12-03)"
        );
    }

    fn decline() -> Step {
        Step::Decline {
            by: DeclinedBy::Base,
            reason: "full".into(),
        }
    }

    #[test]
    fn a_proposal_needs_a_free_candidate_and_no_twin() {
        let today = date("2026-12-01");
        let twin = Uuid::now_v7();
        let error =
            check_new_placement(Some(twin), Some(twin), &supervisee(), &opening(), today).expect_err("twin");
        assert_eq!(error, ProposalError::AlreadyProposed(twin));
        assert!(matches!(ServiceError::from(error), ServiceError::Conflict(_)));
        let error =
            check_new_placement(None, Some(twin), &supervisee(), &opening(), today).expect_err("busy");
        assert!(matches!(
            ServiceError::from(error),
            ServiceError::FailedPrecondition(_)
        ));
        assert_eq!(
            check_new_placement(None, None, &supervisee(), &opening(), today),
            Ok(())
        );
    }
}
