//! Test fixtures shared by the domain's rule tests: a supervisee and a released prisoner of
//! Ganzhou, and an open manufacturing opening in Ganzhou.

use chrono::NaiveDate;

use super::{CandidateFacts, CandidateSource, Offence, OpeningFacts, OpeningStatus, Sector};

pub fn date(text: &str) -> NaiveDate {
    text.parse().expect("date")
}

const GANZHOU_SEAT: (f64, f64) = (38.93, 100.45);

pub fn supervisee() -> CandidateFacts {
    CandidateFacts {
        source: CandidateSource::Supervisee,
        township_code: "620702001".into(),
        county_code: "620702".into(),
        offence: Some(Offence::Property),
        skills: vec!["Welding".into(), "forklift".into()],
        sector_preferences: vec![Sector::Manufacturing, Sector::Logistics],
        active: true,
        home_seat: Some(GANZHOU_SEAT),
    }
}

pub fn released() -> CandidateFacts {
    CandidateFacts {
        source: CandidateSource::ReleasedPrisoner,
        ..supervisee()
    }
}

pub fn opening() -> OpeningFacts {
    OpeningFacts {
        status: OpeningStatus::Open,
        base_active: true,
        closing_date: date("2026-12-31"),
        positions_total: 3,
        positions_filled: 1,
        sector: Sector::Manufacturing,
        required_skills: vec!["welding".into()],
        work_township_code: "620702002".into(),
        work_county_code: "620702".into(),
        work_location: Some((38.94, 100.46)),
        excluded_offences: vec![],
    }
}

pub fn in_sunan(mut opening: OpeningFacts) -> OpeningFacts {
    opening.work_township_code = "620721001".into();
    opening.work_county_code = "620721".into();
    opening.work_location = Some((38.83, 99.62));
    opening
}
