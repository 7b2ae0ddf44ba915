//! When a person is a candidate: supervisees while under supervision and marked as needing
//! work, released prisoners for the five years of resettlement assistance; and what an
//! office may change of a candidate's profile.

use chrono::{Months, NaiveDate};
use mesh_kit::error::ServiceError;
// The registry owns the supervision status; this service only reads it from the registry's
// events, so the rule below takes the registry's own enumeration (no copy of it here).
use mesh_proto::registry::SuperviseeStatus;

use super::Offence;

/// Years of resettlement assistance (安置帮教) after release from prison.
pub const ASSISTANCE_YEARS: u32 = 5;

/// Last day of the assistance period of a person released on `released_on`.
pub fn assistance_ends_on(released_on: NaiveDate) -> NaiveDate {
    released_on
        .checked_add_months(Months::new(ASSISTANCE_YEARS * 12))
        .unwrap_or(NaiveDate::MAX)
}

/// Whether a supervisee with this registry status and flag is offered work: only while
/// under supervision (pending report-in or active) and marked as needing employment. A
/// suspended or absconded person cannot start work; a final status ends the search.
pub fn supervisee_seeks_work(needs_employment: bool, status: SuperviseeStatus) -> bool {
    use SuperviseeStatus::*;
    needs_employment && matches!(status, PendingReportIn | Active)
}

/// Whether a candidate still looks for work today: as the source events say, and for
/// released prisoners only within the assistance period.
pub fn candidate_active(
    stored_active: bool,
    assistance_ends_on: Option<NaiveDate>,
    today: NaiveDate,
) -> bool {
    stored_active && assistance_ends_on.is_none_or(|last_day| today <= last_day)
}

/// The prison's word on an offence category is final; becomes `FailedPrecondition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the offence category came from the prison's handover and cannot be changed here")]
pub struct OffenceFixedByHandover;

impl From<OffenceFixedByHandover> for ServiceError {
    fn from(error: OffenceFixedByHandover) -> Self {
        ServiceError::precondition(error.to_string())
    }
}

/// Whether an office may set the candidate's offence category to `requested` (`None`
/// keeps it): not when the category came from the prison's handover and would change.
pub fn check_offence_change(
    current: Option<Offence>,
    from_handover: bool,
    requested: Option<Offence>,
) -> Result<(), OffenceFixedByHandover> {
    match requested {
        Some(offence) if from_handover && current != Some(offence) => Err(OffenceFixedByHandover),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::date;

    #[test]
    fn assistance_lasts_five_years_and_candidates_follow_the_registry() {
        let released_on = date("2026-03-01");
        assert_eq!(assistance_ends_on(released_on), date("2031-03-01"));
        assert!(candidate_active(
            true,
            Some(date("2031-03-01")),
            date("2031-03-01")
        ));
        assert!(!candidate_active(
            true,
            Some(date("2031-03-01")),
            date("2031-03-02")
        ));
        assert!(!candidate_active(false, None, date("2026-03-02")));
        assert!(candidate_active(true, None, date("2040-01-01")));
        use SuperviseeStatus as S;
        assert!(supervisee_seeks_work(true, S::Active));
        assert!(supervisee_seeks_work(true, S::PendingReportIn));
        for status in [
            S::Suspended,
            S::Absconded,
            S::Terminated,
            S::Revoked,
            S::Deceased,
            S::Unspecified,
        ] {
            assert!(!supervisee_seeks_work(true, status), "{status:?}");
        }
        assert!(!supervisee_seeks_work(false, S::Active));
    }

    #[test]
    fn the_prisons_offence_category_stays() {
        assert_eq!(check_offence_change(None, false, Some(Offence::Drug)), Ok(()));
        assert_eq!(
            check_offence_change(Some(Offence::Property), false, Some(Offence::Drug)),
            Ok(())
        );
        assert_eq!(
            check_offence_change(Some(Offence::Property), true, Some(Offence::Drug)),
            Err(OffenceFixedByHandover)
        );
        // Repeating the same category, or leaving it, is no change.
        assert_eq!(
            check_offence_change(Some(Offence::Drug), true, Some(Offence::Drug)),
            Ok(())
        );
        assert_eq!(check_offence_change(Some(Offence::Drug), true, None), Ok(()));
    }
}
