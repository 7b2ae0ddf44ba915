//! Matching: who may be proposed for which opening (the county of supervision, the
//! employer's offence exclusions, open and free openings), and how eligible openings are
//! ranked and explained.

use chrono::NaiveDate;
use mesh_kit::error::ServiceError;
use uuid::Uuid;

use super::{CandidateSource, Offence, OpeningStatus, Sector, lifecycle::NoPositionLeft};

/// What matching needs to know about a candidate.
#[derive(Debug, Clone)]
pub struct CandidateFacts {
    pub source: CandidateSource,
    pub township_code: String,
    pub county_code: String,
    /// `None` when unknown (never "no offence").
    pub offence: Option<Offence>,
    pub skills: Vec<String>,
    /// Most preferred first.
    pub sector_preferences: Vec<Sector>,
    /// Whether the candidate looks for work today (see [`candidate_active`](super::candidate_active)).
    pub active: bool,
    /// Seat of the candidate's county (latitude, longitude): the reference point for
    /// distances, since townships have no coordinates of their own.
    pub home_seat: Option<(f64, f64)>,
}

/// What matching needs to know about an opening.
#[derive(Debug, Clone)]
pub struct OpeningFacts {
    pub status: OpeningStatus,
    pub base_active: bool,
    pub closing_date: NaiveDate,
    pub positions_total: u32,
    pub positions_filled: u32,
    pub sector: Sector,
    pub required_skills: Vec<String>,
    pub work_township_code: String,
    pub work_county_code: String,
    /// (latitude, longitude) when known.
    pub work_location: Option<(f64, f64)>,
    pub excluded_offences: Vec<Offence>,
}

/// Why a candidate may not be proposed for (or committed to) an opening; becomes
/// `FailedPrecondition` with this text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ineligible {
    #[error("the candidate no longer looks for work")]
    CandidateInactive,
    #[error("the opening is closed")]
    OpeningClosed,
    #[error("the opening is past its closing date")]
    PastClosingDate,
    #[error("{}", NoPositionLeft)]
    NoPositionLeft,
    #[error("the base does not take placements")]
    BaseInactive,
    /// A supervisee may not work outside the county they may not leave without approval.
    #[error("a supervisee may only work inside the county of supervision (leaving it needs approval)")]
    OutsideSuperviseeCounty,
    #[error("the opening excludes {}", .0.label())]
    ExcludedOffence(Offence),
    /// The opening excludes some categories and the candidate's is unknown.
    #[error("the opening excludes offence categories and the candidate's category is unknown")]
    UnknownOffence,
}

impl From<Ineligible> for ServiceError {
    fn from(error: Ineligible) -> Self {
        ServiceError::precondition(error.to_string())
    }
}

/// Whether the candidate looks for work at all (matching is pointless otherwise).
pub fn check_seeks_work(candidate: &CandidateFacts) -> Result<(), Ineligible> {
    if candidate.active {
        Ok(())
    } else {
        Err(Ineligible::CandidateInactive)
    }
}

/// The rules about the person that hold at every step until work starts: still looking
/// for work, inside the county of supervision, and an offence category the employer
/// accepts. (A transfer or a newly known offence category after the proposal is caught at
/// acceptance and start.)
pub fn check_person(candidate: &CandidateFacts, opening: &OpeningFacts) -> Result<(), Ineligible> {
    check_seeks_work(candidate)?;
    if candidate.source == CandidateSource::Supervisee && opening.work_county_code != candidate.county_code {
        return Err(Ineligible::OutsideSuperviseeCounty);
    }
    if !opening.excluded_offences.is_empty() {
        match candidate.offence {
            None => return Err(Ineligible::UnknownOffence),
            Some(offence) if opening.excluded_offences.contains(&offence) => {
                return Err(Ineligible::ExcludedOffence(offence));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Whether the opening takes new proposals today: open, at an active base, not past its
/// closing date (the closing date itself is still open, office time zone) and not full.
pub fn check_opening_takes_proposals(opening: &OpeningFacts, today: NaiveDate) -> Result<(), Ineligible> {
    if opening.status == OpeningStatus::Closed {
        return Err(Ineligible::OpeningClosed);
    }
    if !opening.base_active {
        return Err(Ineligible::BaseInactive);
    }
    if today > opening.closing_date {
        return Err(Ineligible::PastClosingDate);
    }
    if opening.positions_filled >= opening.positions_total {
        return Err(Ineligible::NoPositionLeft);
    }
    Ok(())
}

/// Every rule a proposal must meet.
pub fn check_proposal(
    candidate: &CandidateFacts,
    opening: &OpeningFacts,
    today: NaiveDate,
) -> Result<(), Ineligible> {
    check_seeks_work(candidate)?;
    check_opening_takes_proposals(opening, today)?;
    check_person(candidate, opening)
}

/// Score and reasons of one eligible opening.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// 0..1, 1 = best fit.
    pub score: f64,
    pub reasons: Vec<String>,
}

/// Weights of the score's parts; they add up to 1.
const SECTOR_WEIGHT: f64 = 0.40;
const SKILLS_WEIGHT: f64 = 0.25;
const PLACE_WEIGHT: f64 = 0.25;
const DISTANCE_WEIGHT: f64 = 0.10;
/// Share of the place weight for work in the candidate's county but another township.
const SAME_COUNTY_SHARE: f64 = 0.6;
/// Beyond this distance the proximity bonus is zero (the city's counties are ~50-150 km
/// apart; daily commuting beyond that is unrealistic in rural Gansu).
const DISTANCE_HORIZON_KM: f64 = 100.0;
/// Mean Earth radius (IUGG), kilometres.
const EARTH_RADIUS_KM: f64 = 6_371.008_8;

/// Great-circle distance in kilometres (haversine).
pub fn distance_km(from: (f64, f64), to: (f64, f64)) -> f64 {
    let (phi1, phi2) = (from.0.to_radians(), to.0.to_radians());
    let d_phi = (to.0 - from.0).to_radians();
    let d_lambda = (to.1 - from.1).to_radians();
    let a = (d_phi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (d_lambda / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
}

fn normalised_skill(skill: &str) -> String {
    skill.trim().to_lowercase()
}

/// How well an eligible opening fits the candidate, with the reasons in words. Parts:
/// sector preference (first choice counts most), share of required skills the candidate
/// has, place (same township, else same county), and closeness of the work location to the
/// candidate's county seat when the location is known.
pub fn score(candidate: &CandidateFacts, opening: &OpeningFacts) -> Match {
    let mut score = 0.0;
    let mut reasons = Vec::new();

    match candidate
        .sector_preferences
        .iter()
        .position(|sector| *sector == opening.sector)
    {
        Some(rank) => {
            let share = match rank {
                0 => 1.0,
                1 => 0.75,
                2 => 0.6,
                _ => 0.5,
            };
            score += SECTOR_WEIGHT * share;
            let ordinal = match rank {
                0 => "first".to_owned(),
                1 => "second".to_owned(),
                2 => "third".to_owned(),
                n => format!("{}th", n + 1),
            };
            reasons.push(format!(
                "sector {} matches the {ordinal} preference",
                opening.sector.label()
            ));
        }
        None if candidate.sector_preferences.is_empty() => {
            score += SECTOR_WEIGHT * 0.25;
            reasons.push(format!(
                "sector {} (no sector preference recorded)",
                opening.sector.label()
            ));
        }
        None => reasons.push(format!(
            "sector {} is not among the preferences",
            opening.sector.label()
        )),
    }

    if opening.required_skills.is_empty() {
        score += SKILLS_WEIGHT;
        reasons.push("no particular skills required".to_owned());
    } else {
        let have: Vec<String> = candidate.skills.iter().map(|s| normalised_skill(s)).collect();
        let matched: Vec<&str> = opening
            .required_skills
            .iter()
            .filter(|skill| have.contains(&normalised_skill(skill)))
            .map(|skill| skill.trim())
            .collect();
        let total = opening.required_skills.len();
        score += SKILLS_WEIGHT * matched.len() as f64 / total as f64;
        if matched.is_empty() {
            reasons.push(format!("none of the {total} required skills"));
        } else {
            reasons.push(format!(
                "{} of {total} required skills ({})",
                matched.len(),
                matched.join(", ")
            ));
        }
    }

    if opening.work_township_code == candidate.township_code {
        score += PLACE_WEIGHT;
        reasons.push("work in the candidate's township".to_owned());
    } else if opening.work_county_code == candidate.county_code {
        score += PLACE_WEIGHT * SAME_COUNTY_SHARE;
        reasons.push("work in the candidate's county".to_owned());
    } else {
        reasons.push("work in another county (not under supervision, so allowed)".to_owned());
    }

    if let (Some(home), Some(work)) = (candidate.home_seat, opening.work_location) {
        let km = distance_km(home, work);
        score += DISTANCE_WEIGHT * (1.0 - km / DISTANCE_HORIZON_KM).max(0.0);
        reasons.push(format!("work about {km:.0} km from the candidate's county seat"));
    }

    if !opening.excluded_offences.is_empty()
        && let Some(offence) = candidate.offence
    {
        reasons.push(format!("{} not excluded by the employer", offence.label()));
    }
    let free = opening.positions_total.saturating_sub(opening.positions_filled);
    reasons.push(format!(
        "{free} of {} positions free, proposals until {}",
        opening.positions_total, opening.closing_date
    ));

    Match {
        score: score.clamp(0.0, 1.0),
        reasons,
    }
}

/// The openings the candidate may be proposed for today, best first (score descending,
/// then opening id), at most `max_results`.
pub fn rank(
    candidate: &CandidateFacts,
    openings: &[(Uuid, OpeningFacts)],
    today: NaiveDate,
    max_results: usize,
) -> Vec<(Uuid, Match)> {
    let mut matches: Vec<(Uuid, Match)> = openings
        .iter()
        .filter(|(_, opening)| check_proposal(candidate, opening, today).is_ok())
        .map(|(id, opening)| (*id, score(candidate, opening)))
        .collect();
    matches.sort_by(|(a_id, a), (b_id, b)| b.score.total_cmp(&a.score).then_with(|| a_id.cmp(b_id)));
    matches.truncate(max_results);
    matches
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::domain::{
        fixtures::{date, in_sunan, opening, released, supervisee},
        office_today,
    };

    #[test]
    fn supervisees_never_work_outside_their_county_released_prisoners_may() {
        let today = date("2026-12-01");
        assert_eq!(check_proposal(&supervisee(), &opening(), today), Ok(()));
        assert_eq!(
            check_proposal(&supervisee(), &in_sunan(opening()), today),
            Err(Ineligible::OutsideSuperviseeCounty)
        );
        assert_eq!(check_proposal(&released(), &in_sunan(opening()), today), Ok(()));
        // Also at acceptance: a supervisee transferred to another county after the
        // proposal cannot take the job.
        let mut transferred = supervisee();
        transferred.county_code = "620721".into();
        transferred.township_code = "620721001".into();
        assert_eq!(
            check_person(&transferred, &opening()),
            Err(Ineligible::OutsideSuperviseeCounty)
        );
    }

    #[test]
    fn excluded_and_unknown_offences_are_never_matched() {
        let today = date("2026-12-01");
        let mut pharmacy = opening();
        pharmacy.excluded_offences = vec![Offence::Drug];
        let mut drug = supervisee();
        drug.offence = Some(Offence::Drug);
        assert_eq!(
            check_proposal(&drug, &pharmacy, today),
            Err(Ineligible::ExcludedOffence(Offence::Drug))
        );
        assert_eq!(check_proposal(&supervisee(), &pharmacy, today), Ok(()));
        let mut unknown = supervisee();
        unknown.offence = None;
        assert_eq!(
            check_proposal(&unknown, &pharmacy, today),
            Err(Ineligible::UnknownOffence)
        );
        // Without exclusions an unknown category does not matter.
        assert_eq!(check_proposal(&unknown, &opening(), today), Ok(()));
        assert!(rank(&drug, &[(Uuid::now_v7(), pharmacy)], today, 10).is_empty());
    }

    #[test]
    fn closed_full_past_closing_and_inactive_are_never_offered() {
        let today = date("2026-12-31");
        assert_eq!(
            check_proposal(&supervisee(), &opening(), today),
            Ok(()),
            "closing day is open"
        );
        assert_eq!(
            check_proposal(&supervisee(), &opening(), date("2027-01-01")),
            Err(Ineligible::PastClosingDate)
        );
        let mut closed = opening();
        closed.status = OpeningStatus::Closed;
        assert_eq!(
            check_proposal(&supervisee(), &closed, today),
            Err(Ineligible::OpeningClosed)
        );
        let mut full = opening();
        full.positions_filled = full.positions_total;
        assert_eq!(
            check_proposal(&supervisee(), &full, today),
            Err(Ineligible::NoPositionLeft)
        );
        let mut inactive_base = opening();
        inactive_base.base_active = false;
        assert_eq!(
            check_proposal(&supervisee(), &inactive_base, today),
            Err(Ineligible::BaseInactive)
        );
        let mut gone = supervisee();
        gone.active = false;
        assert_eq!(
            check_proposal(&gone, &opening(), today),
            Err(Ineligible::CandidateInactive)
        );
        let offered = rank(
            &supervisee(),
            &[
                (Uuid::now_v7(), closed),
                (Uuid::now_v7(), full),
                (Uuid::now_v7(), inactive_base),
            ],
            today,
            10,
        );
        assert!(offered.is_empty());
    }

    #[test]
    fn ranking_prefers_sector_then_place_and_explains_why() {
        let today = date("2026-12-01");
        let candidate = released();
        let first_choice_far = in_sunan(opening());
        let mut second_choice_home = opening();
        second_choice_home.sector = Sector::Logistics;
        second_choice_home.work_township_code = candidate.township_code.clone();
        let mut unwanted_home = opening();
        unwanted_home.sector = Sector::Catering;
        unwanted_home.work_township_code = candidate.township_code.clone();
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let ranked = rank(
            &candidate,
            &[
                (ids[0], unwanted_home),
                (ids[1], first_choice_far),
                (ids[2], second_choice_home),
            ],
            today,
            10,
        );
        let order: Vec<Uuid> = ranked.iter().map(|(id, _)| *id).collect();
        assert_eq!(order, vec![ids[2], ids[1], ids[0]]);
        let best = &ranked[0].1;
        assert!(best.score > 0.0 && best.score <= 1.0);
        assert!(
            best.reasons
                .iter()
                .any(|r| r == "sector logistics matches the second preference")
        );
        assert!(
            best.reasons
                .iter()
                .any(|r| r == "1 of 1 required skills (welding)")
        );
        assert!(
            best.reasons
                .iter()
                .any(|r| r == "work in the candidate's township")
        );
        assert!(
            ranked[1]
                .1
                .reasons
                .iter()
                .any(|r| r.starts_with("work in another county"))
        );
        assert!(
            ranked[1]
                .1
                .reasons
                .iter()
                .any(|r| r.contains("km from the candidate's county seat"))
        );
        assert!(
            ranked[2]
                .1
                .reasons
                .iter()
                .any(|r| r.contains("not among the preferences"))
        );
    }

    #[test]
    fn same_township_beats_same_county_beats_far_away() {
        let candidate = released();
        let mut home = opening();
        home.work_township_code = candidate.township_code.clone();
        let county = opening();
        let far = in_sunan(opening());
        let (home, county, far) = (
            score(&candidate, &home).score,
            score(&candidate, &county).score,
            score(&candidate, &far).score,
        );
        assert!(home > county && county > far, "{home} {county} {far}");
    }

    #[test]
    fn ties_break_on_opening_id_and_results_are_bounded() {
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        let openings: Vec<(Uuid, OpeningFacts)> = ids.iter().rev().map(|id| (*id, opening())).collect();
        let ranked = rank(&supervisee(), &openings, date("2026-12-01"), 3);
        let order: Vec<Uuid> = ranked.iter().map(|(id, _)| *id).collect();
        assert_eq!(order, ids[..3].to_vec());
    }

    #[test]
    fn skills_compare_without_case_and_count_partially() {
        let mut job = opening();
        job.required_skills = vec!["WELDING".into(), "driving licence".into()];
        let matched = score(&supervisee(), &job);
        assert!(
            matched
                .reasons
                .iter()
                .any(|r| r == "1 of 2 required skills (WELDING)")
        );
        job.required_skills.clear();
        assert!(
            score(&supervisee(), &job)
                .reasons
                .iter()
                .any(|r| r == "no particular skills required")
        );
    }

    #[test]
    fn office_day_is_shanghai_time() {
        // 2026-12-31 16:30 UTC is already 1 January in Shanghai: the opening has closed.
        let now: DateTime<Utc> = "2026-12-31T16:30:00Z".parse().expect("time");
        assert_eq!(office_today(now, chrono_tz::Asia::Shanghai), date("2027-01-01"));
        assert_eq!(
            check_proposal(
                &supervisee(),
                &opening(),
                office_today(now, chrono_tz::Asia::Shanghai)
            ),
            Err(Ineligible::PastClosingDate)
        );
    }
}
