//! The placement service's domain rules as pure functions: no SQL, no gRPC, and nothing looked
//! up — today's date, the candidate's home seat and the records' facts are passed in. This
//! module declares the enumerations as stored; its parts hold the rules:
//!
//! - [`lifecycle`]: the placement lifecycle, what each step does to an opening's positions,
//!   and what a proposal and each later step must satisfy;
//! - [`matching`]: who may be matched to which opening, and how matches are ranked and
//!   explained;
//! - [`candidates`]: when a person is (still) a candidate, and what an office may change;
//! - [`bases`]: what an office may change of a base;
//! - [`access`]: which offices may read and manage what.
//!
//! Capacity rule: a position is taken when a placement is **accepted** (the candidate and
//! the employer have both said yes, so the employer counts on that person) and kept while
//! it is started; it is given back when an accepted placement is declined or a started one
//! ends. A mere proposal takes nothing: offices may propose several people for the last
//! position, and the first acceptance wins. `positions_filled` therefore counts accepted and
//! started placements, and "full" means no position is left to accept into.
//!
//! Each rule family has its own error type, turned into the service's [`ServiceError`]
//! (`FailedPrecondition`, `PermissionDenied` or a named `InvalidArgument` field) by one
//! `From` impl next to it.
//!
//! [`ServiceError`]: mesh_kit::error::ServiceError

pub mod access;
pub mod bases;
pub mod candidates;
#[cfg(test)]
mod fixtures;
pub mod lifecycle;
pub mod matching;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use mesh_proto::{common, placement as pb};

pub use access::{MANAGERS, OutsideJurisdiction, ensure_placement_access, ensure_reads_county};
pub use bases::{BaseChanges, BaseInactive, BaseProfile, check_takes_openings};
pub use candidates::{
    OffenceFixedByHandover, assistance_ends_on, candidate_active, check_offence_change, supervisee_seeks_work,
};
pub use lifecycle::{
    IllegalTransition, NoPositionLeft, PlacementNow, PositionEffect, ProposalError, Step, StepError,
    StepPlan, apply_position_effect, check_new_placement, plan_step, transition,
};
pub use matching::{
    CandidateFacts, Ineligible, Match, OpeningFacts, check_person, check_proposal, check_seeks_work, rank,
    score,
};

mesh_kit::stored_enum!(BaseType, pb::BaseType, {
    Enterprise = "enterprise" => Enterprise,
    Farm = "farm" => Farm,
    Workshop = "workshop" => Workshop,
    Other = "other" => Other,
});

mesh_kit::stored_enum!(Sector, pb::Sector, {
    Agriculture = "agriculture" => Agriculture,
    Manufacturing = "manufacturing" => Manufacturing,
    Construction = "construction" => Construction,
    Logistics = "logistics" => Logistics,
    Catering = "catering" => Catering,
    Retail = "retail" => Retail,
    Services = "services" => Services,
    Handicraft = "handicraft" => Handicraft,
    Other = "other" => Other,
});

mesh_kit::stored_enum!(OpeningStatus, pb::OpeningStatus, {
    Open = "open" => Open,
    Closed = "closed" => Closed,
});

mesh_kit::stored_enum!(CandidateSource, pb::CandidateSource, {
    Supervisee = "supervisee" => Supervisee,
    ReleasedPrisoner = "released_prisoner" => ReleasedPrisoner,
});

mesh_kit::stored_enum!(PlacementStatus, pb::PlacementStatus, {
    Proposed = "proposed" => Proposed,
    Accepted = "accepted" => Accepted,
    Declined = "declined" => Declined,
    Started = "started" => Started,
    Ended = "ended" => Ended,
});

mesh_kit::stored_enum!(DeclinedBy, pb::DeclinedBy, {
    Candidate = "candidate" => Candidate,
    Base = "base" => Base,
});

mesh_kit::stored_enum!(EndReason, pb::EndReason, {
    Completed = "completed" => Completed,
    Resigned = "resigned" => Resigned,
    Dismissed = "dismissed" => Dismissed,
    Custody = "custody" => Custody,
    Other = "other" => Other,
});

mesh_kit::stored_enum!(Offence, common::OffenceCategory, {
    Violent = "violent" => Violent,
    Property = "property" => Property,
    Drug = "drug" => Drug,
    Sexual = "sexual" => Sexual,
    AgainstMinors = "against_minors" => AgainstMinors,
    Traffic = "traffic" => Traffic,
    EconomicFraud = "economic_fraud" => EconomicFraud,
    Other = "other" => Other,
});

impl Sector {
    /// Name used in match reasons.
    pub fn label(self) -> &'static str {
        match self {
            Sector::Agriculture => "agriculture",
            Sector::Manufacturing => "manufacturing",
            Sector::Construction => "construction",
            Sector::Logistics => "logistics",
            Sector::Catering => "catering",
            Sector::Retail => "retail",
            Sector::Services => "community services",
            Sector::Handicraft => "handicraft",
            Sector::Other => "other sectors",
        }
    }
}

impl Offence {
    /// Name used in match reasons and error messages.
    pub fn label(self) -> &'static str {
        match self {
            Offence::Violent => "violent offences",
            Offence::Property => "property offences",
            Offence::Drug => "drug offences",
            Offence::Sexual => "sexual offences",
            Offence::AgainstMinors => "offences against minors",
            Offence::Traffic => "traffic offences",
            Offence::EconomicFraud => "economic offences and fraud",
            Offence::Other => "other offences",
        }
    }
}

/// The calendar date at `now` in the office time zone.
pub fn office_today(now: DateTime<Utc>, time_zone: Tz) -> NaiveDate {
    now.with_timezone(&time_zone).date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_round_trip() {
        for &status in PlacementStatus::ALL {
            assert_eq!(PlacementStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                PlacementStatus::from_proto(status.to_proto() as i32),
                Some(status)
            );
        }
        for &offence in Offence::ALL {
            assert_eq!(Offence::from_proto(offence.to_proto() as i32), Some(offence));
        }
        for &sector in Sector::ALL {
            assert_eq!(Sector::parse(sector.as_str()), Some(sector));
        }
        assert_eq!(Offence::from_proto(0), None);
        assert_eq!(Sector::from_proto(99), None);
    }
}
