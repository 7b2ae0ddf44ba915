//! The handover's domain: the stored enumerations, the handover and amendment records, the
//! validated values each step takes, and the configurable rules. The lifecycle lives in
//! [`lifecycle`], who may do what in [`access`].
//!
//! Nothing here touches the database, the network, protobuf messages or the system clock:
//! callers pass "now" and "today", so tests cover every rule without sleeping.

pub mod access;
pub mod lifecycle;

use chrono::{DateTime, Days, Months, NaiveDate, Utc};
use mesh_kit::{auth::Caller, jurisdiction::Directory, national_id::NationalId};
use mesh_proto::{common, handover as pb, registry};
use uuid::Uuid;

pub use lifecycle::{Decision, IllegalTransition, Step, StepError, SubmitError, Transition, transition};

// The enumerations name their protobuf counterparts only so the edges can convert them.
mesh_kit::stored_enum!(ReleaseCategory, pb::ReleaseCategory, {
    Parole = "parole" => Parole,
    TemporaryExecutionOutsidePrison = "temporary_execution_outside_prison" => TemporaryExecutionOutsidePrison,
    SentenceCompleted = "sentence_completed" => SentenceCompleted,
});

mesh_kit::stored_enum!(Status, pb::HandoverStatus, {
    Notified = "notified" => Notified,
    Acknowledged = "acknowledged" => Acknowledged,
    Released = "released" => Released,
    ReportedIn = "reported_in" => ReportedIn,
    Cancelled = "cancelled" => Cancelled,
});

mesh_kit::stored_enum!(CancelReason, pb::CancelReason, {
    ReleaseRevoked = "release_revoked" => ReleaseRevoked,
    PostponedIndefinitely = "postponed_indefinitely" => PostponedIndefinitely,
});

// UNSPECIFIED is a real value here ("not known"), so it is stored like the others.
mesh_kit::stored_enum!(OffenceCategory, common::OffenceCategory, {
    Unspecified = "unspecified" => Unspecified,
    Violent = "violent" => Violent,
    Property = "property" => Property,
    Drug = "drug" => Drug,
    Sexual = "sexual" => Sexual,
    AgainstMinors = "against_minors" => AgainstMinors,
    Traffic = "traffic" => Traffic,
    EconomicFraud = "economic_fraud" => EconomicFraud,
    Other = "other" => Other,
});

mesh_kit::stored_enum!(Level, registry::SupervisionLevel, {
    Strict = "strict" => Strict,
    Normal = "normal" => Normal,
    Lenient = "lenient" => Lenient,
});

impl ReleaseCategory {
    /// Parole and temporary execution outside prison continue as community corrections (the
    /// registry registers the person on report-in); a completed sentence leads to
    /// resettlement and assistance only.
    pub fn is_community_corrections(self) -> bool {
        !matches!(self, ReleaseCategory::SentenceCompleted)
    }
}

/// The configurable rules the service applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// How many days before today an expected release date may lie (a notice sent on the
    /// release day itself, or a day late, is still accepted).
    pub past_tolerance_days: u32,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            past_tolerance_days: DEFAULT_PAST_TOLERANCE_DAYS,
        }
    }
}

/// Default of [`Rules::past_tolerance_days`].
pub const DEFAULT_PAST_TOLERANCE_DAYS: u32 = 1;

/// Longest free-text fields, in characters.
pub const MAX_REFERENCE_CHARS: usize = 64;
pub const MAX_PRISON_ID_CHARS: usize = 64;
pub const MAX_NAME_CHARS: usize = 64;
pub const MAX_RISK_NOTES_CHARS: usize = 2000;
pub const MAX_REASON_CHARS: usize = 500;
pub const MAX_NOTE_CHARS: usize = 500;
pub const MAX_OFFICER_ID_CHARS: usize = 64;
pub const MAX_ADDRESS_CHARS: usize = 256;

/// A notice more than this far ahead is a typo (notices come about a month before release).
pub const MAX_NOTICE_LEAD_MONTHS: u32 = 60;
/// Tolerated clock skew of a caller's "now" (release, collection and report-in times).
pub const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);
/// Release, collection and report-in times older than this are data-entry errors.
pub const MAX_EVENT_AGE: chrono::Duration = chrono::Duration::days(366);

/// The calendar date at `now` in the offices' time zone (release dates are office dates).
pub fn office_today(now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&Directory::get().time_zone).date_naive()
}

/// The earliest and latest acceptable expected release date on `today`: not in the past
/// beyond `past_tolerance_days` (a notice sent on release day, or late by a day, is still
/// useful), and not implausibly far ahead.
pub fn release_date_window(today: NaiveDate, past_tolerance_days: u32) -> (NaiveDate, NaiveDate) {
    let earliest = today
        .checked_sub_days(Days::new(u64::from(past_tolerance_days)))
        .unwrap_or(NaiveDate::MIN);
    let latest = today
        .checked_add_months(Months::new(MAX_NOTICE_LEAD_MONTHS))
        .unwrap_or(NaiveDate::MAX);
    (earliest, latest)
}

/// The earliest and latest acceptable time of something that already happened (a release,
/// a gate collection, a report-in): not in the future beyond [`CLOCK_SKEW`], not older than
/// [`MAX_EVENT_AGE`].
pub fn past_time_window(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let earliest = now.checked_sub_signed(MAX_EVENT_AGE).unwrap_or(now);
    let latest = now.checked_add_signed(CLOCK_SKEW).unwrap_or(now);
    (earliest, latest)
}

/// Where the person goes: a township office and the county bureau it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub township_code: String,
    pub county_code: String,
}

/// Who took a step, as recorded with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub subject: String,
    pub role: String,
}

impl From<&Caller> for Actor {
    fn from(caller: &Caller) -> Self {
        Actor {
            subject: caller.subject.clone(),
            role: caller.role.as_str().to_owned(),
        }
    }
}

/// A release notice that passed validation.
#[derive(Debug, Clone)]
pub struct Notice {
    pub prison_reference: String,
    pub prison_id: String,
    pub person_name: String,
    pub national_id: NationalId,
    pub date_of_birth: NaiveDate,
    pub category: ReleaseCategory,
    pub expected_release_date: NaiveDate,
    pub destination: Destination,
    pub key_assistance_target: bool,
    pub risk_notes: String,
    pub offence_category: OffenceCategory,
}

impl Notice {
    /// A canonical text of the whole normalised notice: two submissions with the same content
    /// give the same text. It contains the national ID number, so the service stores only a
    /// keyed hash of it (never the text, never a plain hash that could be brute-forced).
    /// Stored fingerprints are hashes of this text: its form must never change.
    pub fn canonical_text(&self) -> String {
        serde_json::json!([
            self.prison_id,
            self.prison_reference,
            self.person_name,
            self.national_id.expose(),
            self.date_of_birth.to_string(),
            self.category.as_str(),
            self.expected_release_date.to_string(),
            self.destination.township_code,
            self.destination.county_code,
            self.key_assistance_target,
            self.risk_notes,
            self.offence_category.as_str(),
        ])
        .to_string()
    }
}

/// A checked amendment request; `None` keeps the current value.
#[derive(Debug, Clone, PartialEq)]
pub struct AmendmentRequest {
    pub expected_release_date: Option<NaiveDate>,
    pub destination: Option<Destination>,
    pub reason: String,
}

/// A checked cancellation: why, and an optional note (empty when none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancellation {
    pub reason: CancelReason,
    pub note: String,
}

/// A checked gate collection (必接必送): when, and by which officer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateCollection {
    pub collected_at: DateTime<Utc>,
    pub officer_id: String,
}

/// A report-in that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportIn {
    pub reported_in_at: DateTime<Utc>,
    pub level: Option<Level>,
    pub officer_id: String,
    pub term_start: Option<NaiveDate>,
    pub term_end: Option<NaiveDate>,
    pub phone: String,
    pub address: String,
    pub needs_employment: bool,
}

impl ReportIn {
    /// A canonical text of the report-in, to tell a retry from a conflicting second report.
    /// It contains phone and address, so the service stores only a keyed hash of it.
    /// Stored fingerprints are hashes of this text: its form must never change.
    pub fn canonical_text(&self) -> String {
        serde_json::json!([
            self.reported_in_at.timestamp_micros(),
            self.level.map(Level::as_str),
            self.officer_id,
            self.term_start.map(|d| d.to_string()),
            self.term_end.map(|d| d.to_string()),
            self.phone,
            self.address,
            self.needs_employment,
        ])
        .to_string()
    }
}

/// A handover as stored. Personal fields stay sealed (`*_sealed`) until an edge that may
/// show them opens them; the fingerprints are keyed hashes that tell a repeated request
/// from a conflicting one.
#[derive(Debug, Clone)]
pub struct Handover {
    pub id: Uuid,
    pub prison_id: String,
    pub prison_reference: String,
    pub submission_fingerprint: Vec<u8>,
    pub person_name: String,
    pub national_id_sealed: Vec<u8>,
    pub date_of_birth: NaiveDate,
    pub category: ReleaseCategory,
    pub expected_release_date: NaiveDate,
    pub destination: Destination,
    pub key_assistance_target: bool,
    pub risk_notes_sealed: Vec<u8>,
    pub offence_category: OffenceCategory,
    pub status: Status,
    pub notified_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<Actor>,
    pub actual_release_time: Option<DateTime<Utc>>,
    pub gate_collected_at: Option<DateTime<Utc>>,
    pub gate_collecting_officer_id: Option<String>,
    pub reported_in_at: Option<DateTime<Utc>>,
    pub assigned_level: Option<Level>,
    pub assigned_officer_id: Option<String>,
    pub report_in_fingerprint: Option<Vec<u8>>,
    pub cancel_reason: Option<CancelReason>,
    pub cancel_note: Option<String>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// One recorded amendment of a notice: for each changed value its previous and new value
/// (`None` on both sides when that value did not change).
#[derive(Debug, Clone, PartialEq)]
pub struct Amendment {
    pub handover_id: Uuid,
    pub previous_expected_release_date: Option<NaiveDate>,
    pub new_expected_release_date: Option<NaiveDate>,
    pub previous_destination: Option<Destination>,
    pub new_destination: Option<Destination>,
    pub reason: String,
    pub amended_by: Actor,
    pub amended_at: DateTime<Utc>,
}

/// Builders of sample values for the unit tests of every module.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
    }

    pub fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("RFC 3339")
    }

    pub fn destination(township: &str, county: &str) -> Destination {
        Destination {
            township_code: township.into(),
            county_code: county.into(),
        }
    }

    /// A parole handover from zhangye-prison to township 620702001 in `status`, nothing
    /// recorded beyond the notice.
    pub fn handover(status: Status) -> Handover {
        Handover {
            id: Uuid::now_v7(),
            prison_id: "zhangye-prison".into(),
            prison_reference: "ZY-2026-0001".into(),
            submission_fingerprint: vec![1, 2, 3],
            person_name: "李四".into(),
            national_id_sealed: Vec::new(),
            date_of_birth: date(1985, 6, 15),
            category: ReleaseCategory::Parole,
            expected_release_date: date(2026, 12, 5),
            destination: destination("620702001", "620702"),
            key_assistance_target: false,
            risk_notes_sealed: Vec::new(),
            offence_category: OffenceCategory::Property,
            status,
            notified_at: utc("2026-11-01T00:00:00Z"),
            acknowledged_at: None,
            acknowledged_by: None,
            actual_release_time: None,
            gate_collected_at: None,
            gate_collecting_officer_id: None,
            reported_in_at: None,
            assigned_level: None,
            assigned_officer_id: None,
            report_in_fingerprint: None,
            cancel_reason: None,
            cancel_note: None,
            cancelled_at: None,
            updated_at: utc("2026-11-01T00:00:00Z"),
            version: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{testing::date, *};

    #[test]
    fn stored_names_round_trip() {
        for &status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
            assert_eq!(Status::from_proto(status.to_proto() as i32), Some(status));
        }
        for &category in ReleaseCategory::ALL {
            assert_eq!(ReleaseCategory::parse(category.as_str()), Some(category));
            assert_eq!(
                ReleaseCategory::from_proto(category.to_proto() as i32),
                Some(category)
            );
        }
        for &offence in OffenceCategory::ALL {
            assert_eq!(OffenceCategory::parse(offence.as_str()), Some(offence));
            assert_eq!(
                OffenceCategory::from_proto(offence.to_proto() as i32),
                Some(offence)
            );
        }
        assert_eq!(OffenceCategory::from_proto(0), Some(OffenceCategory::Unspecified));
        assert_eq!(OffenceCategory::from_proto(99), None);
        assert_eq!(ReleaseCategory::from_proto(0), None);
        assert_eq!(Status::from_proto(0), None);
        assert_eq!(CancelReason::from_proto(0), None);
        assert!(ReleaseCategory::Parole.is_community_corrections());
        assert!(!ReleaseCategory::SentenceCompleted.is_community_corrections());
    }

    #[test]
    fn release_dates_lie_between_tolerated_lateness_and_five_years_ahead() {
        let today = date(2026, 11, 26);
        assert_eq!(
            release_date_window(today, 1),
            (date(2026, 11, 25), date(2031, 11, 26))
        );
        assert_eq!(release_date_window(today, 0).0, today);
    }
}
