//! The plausible term of a community-corrections supervision, as a pure function shared by
//! the services that take one in (the registry's registration, the handover's report-in):
//! a term far from the present is a typing error whose deadlines would raise false alerts,
//! and refusing it where it is typed in beats dead-lettering it where it is consumed.

use chrono::{Months, NaiveDate};

use crate::error::FieldViolations;

/// Longest term: the longest fixed-term sentence after combining punishments is 25 years
/// (Criminal Law art. 69), so no remaining term of parole or temporary execution is longer.
pub const MAX_TERM_YEARS: u32 = 25;
/// How far ahead a term may start: a judgment or release is registered in the weeks before
/// it takes effect, never years ahead.
pub const MAX_TERM_START_AHEAD_DAYS: u64 = 366;

/// The term of a registration, once both dates are valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    pub start: NaiveDate,
    pub end: NaiveDate,
}

/// Checks a term against `today` (office time zone): it starts at most
/// [`MAX_TERM_START_AHEAD_DAYS`] ahead and at most [`MAX_TERM_YEARS`] ago, ends on or after
/// its start, at most [`MAX_TERM_YEARS`] later, and not before today (a term already over
/// has nobody to supervise). The term, when both dates pass.
pub fn check_term(
    violations: &mut FieldViolations,
    start: Option<NaiveDate>,
    end: Option<NaiveDate>,
    today: NaiveDate,
) -> Option<Term> {
    let latest_start = today.checked_add_days(chrono::Days::new(MAX_TERM_START_AHEAD_DAYS));
    let earliest_start = today.checked_sub_months(Months::new(12 * MAX_TERM_YEARS));
    let start = start.filter(|start| {
        if latest_start.is_none_or(|latest| *start > latest) {
            violations.add(
                "term_start",
                format!("must not be more than {MAX_TERM_START_AHEAD_DAYS} days after today"),
            );
            false
        } else if earliest_start.is_none_or(|earliest| *start < earliest) {
            violations.add(
                "term_start",
                format!("must not be more than {MAX_TERM_YEARS} years ago"),
            );
            false
        } else {
            true
        }
    });
    let (start, end) = (start?, end?);
    // One violation per field: the first rule broken is the one to fix.
    if end < start {
        violations.add("term_end", "must not be before term_start");
    } else if start
        .checked_add_months(Months::new(12 * MAX_TERM_YEARS))
        .is_none_or(|longest| end > longest)
    {
        violations.add(
            "term_end",
            format!("must not be more than {MAX_TERM_YEARS} years after term_start"),
        );
    } else if end < today {
        violations.add("term_end", "must not be in the past: the term is already over");
    } else {
        return Some(Term { start, end });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(year: i32, month: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(year, month, day).expect("date")
    }

    fn today() -> NaiveDate {
        date(2026, 11, 26)
    }

    fn term_violations(start: NaiveDate, end: NaiveDate) -> String {
        let mut violations = FieldViolations::new();
        check_term(&mut violations, Some(start), Some(end), today());
        violations.to_string()
    }

    #[test]
    fn a_plausible_term_passes() {
        let mut violations = FieldViolations::new();
        let term = check_term(
            &mut violations,
            Some(date(2026, 10, 1)),
            Some(date(2027, 9, 30)),
            today(),
        );
        assert!(violations.is_empty(), "{violations}");
        assert_eq!(
            term,
            Some(Term {
                start: date(2026, 10, 1),
                end: date(2027, 9, 30)
            })
        );
        // The edges: a term ending today, starting a year ahead, lasting 25 years.
        assert_eq!(term_violations(date(2026, 1, 1), today()), "");
        assert_eq!(term_violations(date(2027, 11, 27), date(2028, 1, 1)), "");
        assert_eq!(term_violations(date(2001, 11, 26), date(2026, 11, 26)), "");
        assert_eq!(term_violations(today(), date(2051, 11, 26)), "");
    }

    #[test]
    fn a_term_far_from_the_present_is_refused() {
        assert_eq!(
            term_violations(date(1970, 1, 1), date(2027, 1, 1)),
            "term_start: must not be more than 25 years ago"
        );
        assert_eq!(
            term_violations(date(2001, 11, 25), date(2027, 1, 1)),
            "term_start: must not be more than 25 years ago"
        );
        assert_eq!(
            term_violations(date(2100, 1, 1), date(2101, 1, 1)),
            "term_start: must not be more than 366 days after today"
        );
        assert_eq!(
            term_violations(date(2027, 11, 28), date(2028, 1, 1)),
            "term_start: must not be more than 366 days after today"
        );
    }

    #[test]
    fn a_term_end_is_ordered_bounded_and_not_over() {
        assert_eq!(
            term_violations(date(2026, 10, 1), date(2026, 9, 30)),
            "term_end: must not be before term_start"
        );
        assert_eq!(
            term_violations(date(2026, 10, 1), date(2051, 10, 2)),
            "term_end: must not be more than 25 years after term_start"
        );
        assert_eq!(
            term_violations(date(2026, 1, 1), date(2026, 11, 25)),
            "term_end: must not be in the past: the term is already over"
        );
        // A term end is not judged against a start that is itself refused or missing.
        let mut violations = FieldViolations::new();
        assert_eq!(
            check_term(&mut violations, None, Some(date(1970, 1, 1)), today()),
            None
        );
        assert!(violations.is_empty());
    }
}
