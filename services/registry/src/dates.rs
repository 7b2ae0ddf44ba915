//! The date rules of a supervision, as pure functions: a term plausible around the present,
//! and report-in and status-change times that fit the term and the clock. An impossible date
//! is not a harmless typo: risk-alert counts deadlines from it, so a report-in of 1970 would
//! raise a revocation proposal at once. Each rule names the field it refuses. The term's own
//! rule is the kit's (`mesh_kit::term`), shared with the handover service's report-in.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
pub use mesh_kit::term::{Term, check_term};

/// How far ahead of the registry's clock a time typed in by a person may be (clocks drift).
pub const CLOCK_SKEW: Duration = Duration::minutes(5);
/// How old a report-in an officer types in may be. The first deadlines count from it, so a
/// report-in weeks ago would start the watch with its absconding ladder already passed; a
/// person who reported in earlier is registered pending and activated, which starts the
/// watch at the activation.
pub const MAX_REPORTED_AT_AGE: Duration = Duration::days(7);
/// How far back a status change may be dated: it corrects the record of the last weeks,
/// not history.
pub const MAX_EFFECTIVE_AT_AGE: Duration = Duration::days(31);

/// Who stated a report-in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportedBy {
    /// An officer, through the API: a future time is a mistake and refused, and it must be
    /// recent.
    Officer,
    /// The handover service, which recorded it at its own "now" and refused future times
    /// itself: a time ahead of the registry's clock can only be the two clocks differing,
    /// so it is taken as the registry's now. Its age is not limited: a report-in consumed
    /// late (after an outage) happened when it says.
    Handover,
}

/// Checks a report-in time: not in the future (an officer's beyond [`CLOCK_SKEW`]; a
/// handover's is clamped to `now`, see [`ReportedBy`]), an officer's at most
/// [`MAX_REPORTED_AT_AGE`] old, and within the term's days (office time zone) when the term
/// is valid. The time to record, or why not (describing `reported_at`).
pub fn check_reported_at(
    reported_at: DateTime<Utc>,
    term: Option<Term>,
    now: DateTime<Utc>,
    time_zone: Tz,
    by: ReportedBy,
) -> Result<DateTime<Utc>, String> {
    let reported_at = match by {
        ReportedBy::Handover => reported_at.min(now),
        ReportedBy::Officer if reported_at > now + CLOCK_SKEW => {
            return Err("must not be in the future".into());
        }
        ReportedBy::Officer if reported_at < now - MAX_REPORTED_AT_AGE => {
            return Err(format!(
                "must not be more than {} days ago: register the person pending report-in and \
                 activate them, so the watch starts then",
                MAX_REPORTED_AT_AGE.num_days()
            ));
        }
        ReportedBy::Officer => reported_at,
    };
    let day = reported_at.with_timezone(&time_zone).date_naive();
    match term {
        Some(term) if day < term.start => Err("must not be before term_start".into()),
        Some(term) if day > term.end => Err("must not be after term_end".into()),
        _ => Ok(reported_at),
    }
}

/// Checks when a status change took effect: not in the future beyond [`CLOCK_SKEW`] and at
/// most [`MAX_EFFECTIVE_AT_AGE`] ago (describing `effective_at`).
pub fn check_effective_at(effective_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), String> {
    if effective_at > now + CLOCK_SKEW {
        Err("must not be in the future".into())
    } else if effective_at < now - MAX_EFFECTIVE_AT_AGE {
        Err(format!(
            "must not be more than {} days ago",
            MAX_EFFECTIVE_AT_AGE.num_days()
        ))
    } else {
        Ok(())
    }
}

/// Checks a status change's time against the supervisee's term: a change cannot take effect
/// before the term started (office time zone).
pub fn check_effective_in_term(
    effective_at: DateTime<Utc>,
    term_start: NaiveDate,
    time_zone: Tz,
) -> Result<(), String> {
    if effective_at.with_timezone(&time_zone).date_naive() < term_start {
        Err("must not be before the term started".into())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE: Tz = chrono_tz::Asia::Shanghai;

    fn date(year: i32, month: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(year, month, day).expect("date")
    }

    /// 16:00 local on 26 Nov 2026.
    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-26T08:00:00Z")
            .expect("valid")
            .with_timezone(&Utc)
    }

    fn term() -> Option<Term> {
        Some(Term {
            start: date(2026, 11, 20),
            end: date(2027, 11, 19),
        })
    }

    #[test]
    fn an_officers_report_in_is_recent_and_not_in_the_future() {
        let term = Some(Term {
            start: date(2026, 11, 1),
            end: date(2027, 10, 31),
        });
        let check = |time| check_reported_at(time, term, now(), ZONE, ReportedBy::Officer);
        assert_eq!(check(now()), Ok(now()));
        assert_eq!(check(now() + CLOCK_SKEW), Ok(now() + CLOCK_SKEW));
        assert_eq!(
            check(now() + CLOCK_SKEW + Duration::seconds(1)),
            Err("must not be in the future".into())
        );
        assert_eq!(
            check(now() - MAX_REPORTED_AT_AGE),
            Ok(now() - MAX_REPORTED_AT_AGE)
        );
        let old = check(now() - MAX_REPORTED_AT_AGE - Duration::seconds(1)).expect_err("old");
        assert!(old.starts_with("must not be more than 7 days ago"), "{old}");
        let epoch = DateTime::from_timestamp(0, 0).expect("1970");
        assert!(check(epoch).is_err());
    }

    #[test]
    fn a_handovers_report_in_ahead_of_the_clock_is_taken_as_now() {
        let check = |time| check_reported_at(time, term(), now(), ZONE, ReportedBy::Handover);
        assert_eq!(check(now() + Duration::minutes(7)), Ok(now()));
        assert_eq!(check(now() - Duration::days(3)), Ok(now() - Duration::days(3)));
        // Its age is not limited, but it still falls within the term.
        assert_eq!(
            check(now() - Duration::days(30)),
            Err("must not be before term_start".into())
        );
    }

    #[test]
    fn a_report_in_falls_within_the_terms_local_days() {
        // 20 Nov 00:30 local is 19 Nov 16:30 UTC: inside a term starting on 20 Nov.
        let local_midnight = DateTime::parse_from_rfc3339("2026-11-19T16:30:00Z")
            .expect("valid")
            .with_timezone(&Utc);
        let check = |time, term| check_reported_at(time, term, now(), ZONE, ReportedBy::Officer);
        assert_eq!(check(local_midnight, term()), Ok(local_midnight));
        assert_eq!(
            check(local_midnight - Duration::hours(1), term()),
            Err("must not be before term_start".into())
        );
        let ended = Some(Term {
            start: date(2026, 1, 1),
            end: date(2026, 11, 25),
        });
        assert_eq!(check(now(), ended), Err("must not be after term_end".into()));
        // Without a valid term only the clock is checked.
        assert_eq!(
            check(local_midnight - Duration::hours(1), None),
            Ok(local_midnight - Duration::hours(1))
        );
    }

    #[test]
    fn a_status_change_is_dated_within_the_last_month_and_the_term() {
        assert_eq!(check_effective_at(now(), now()), Ok(()));
        assert_eq!(
            check_effective_at(now() + Duration::hours(1), now()),
            Err("must not be in the future".into())
        );
        assert_eq!(check_effective_at(now() - MAX_EFFECTIVE_AT_AGE, now()), Ok(()));
        assert_eq!(
            check_effective_at(now() - MAX_EFFECTIVE_AT_AGE - Duration::seconds(1), now()),
            Err("must not be more than 31 days ago".into())
        );
        assert_eq!(check_effective_in_term(now(), date(2026, 11, 26), ZONE), Ok(()));
        assert_eq!(
            check_effective_in_term(now(), date(2026, 11, 27), ZONE),
            Err("must not be before the term started".into())
        );
    }
}
