//! The handover's domain rules as pure functions: the lifecycle state machine, the report-in
//! deadline per release category (risk-alert applies the same rule), the enumerations as
//! stored in the database, and validation of every request that changes a handover.
//!
//! Nothing here touches the database, the network or the system clock: callers pass "now"
//! and "today", so tests cover every rule without sleeping.

use chrono::{DateTime, Days, Months, NaiveDate, Utc};
use mesh_kit::{
    error::FieldViolations,
    jurisdiction::Directory,
    national_id::NationalId,
    proto_time::{from_date, from_timestamp},
    validate::{check_jurisdiction, check_text},
};
use mesh_proto::{common, handover as pb, registry};

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

    /// The registry category the person is registered under on report-in.
    pub fn registry_category(self) -> Option<registry::Category> {
        match self {
            ReleaseCategory::Parole => Some(registry::Category::Parole),
            ReleaseCategory::TemporaryExecutionOutsidePrison => {
                Some(registry::Category::TemporaryExecutionOutsidePrison)
            }
            ReleaseCategory::SentenceCompleted => None,
        }
    }
}

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
#[error("illegal transition from {from} to {to}")]
pub struct IllegalTransition {
    pub from: &'static str,
    pub to: &'static str,
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

    /// The status after `step`, or why the step is illegal now. The lifecycle (see
    /// `handover.proto`): notified → acknowledged → released → reported_in; a township may
    /// acknowledge after the release without changing the status; the township may record
    /// a report-in before the prison confirms the release; the prison amends or cancels only
    /// before release, and a new destination sends the notice back to notified; gate
    /// collection may be recorded in any status but cancelled.
    ///
    /// Repeats of a step that already took effect (a second acknowledgement, the same
    /// release time again) are not transitions; the service answers them before asking here.
    pub fn after(self, step: Step) -> Result<Status, IllegalTransition> {
        use Status::*;
        let next = match (self, step) {
            (Notified, Step::Acknowledge) => Some(Acknowledged),
            // Released but never acknowledged: the acknowledgement is recorded, the status stays.
            (Released, Step::Acknowledge) => Some(Released),
            (Notified | Acknowledged, Step::ConfirmRelease) => Some(Released),
            (Notified | Acknowledged | Released | ReportedIn, Step::RecordGateCollection) => Some(self),
            (Notified | Acknowledged | Released, Step::RecordReportIn) => Some(ReportedIn),
            (Notified | Acknowledged, Step::AmendReleaseDate) => Some(self),
            (Notified | Acknowledged, Step::AmendDestination) => Some(Notified),
            (Notified | Acknowledged, Step::Cancel) => Some(Cancelled),
            _ => None,
        };
        next.ok_or(IllegalTransition {
            from: self.as_str(),
            to: step.target(),
        })
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
    pub township_code: String,
    pub county_code: String,
    pub key_assistance_target: bool,
    pub risk_notes: String,
    pub offence_category: OffenceCategory,
}

impl Notice {
    /// A canonical text of the whole normalised notice: two submissions with the same content
    /// give the same text. It contains the national ID number, so the service stores only a
    /// keyed hash of it (never the text, never a plain hash that could be brute-forced).
    pub fn canonical_text(&self) -> String {
        serde_json::json!([
            self.prison_id,
            self.prison_reference,
            self.person_name,
            self.national_id.expose(),
            self.date_of_birth.to_string(),
            self.category.as_str(),
            self.expected_release_date.to_string(),
            self.township_code,
            self.county_code,
            self.key_assistance_target,
            self.risk_notes,
            self.offence_category.as_str(),
        ])
        .to_string()
    }
}

/// Checks multi-line free text: at most `max` characters, no control characters other than
/// line breaks and tabs. Empty is allowed. Returns the trimmed value.
pub fn check_notes(violations: &mut FieldViolations, field: &str, value: &str, max: usize) -> String {
    let value = value.trim();
    if value.chars().count() > max {
        violations.add(field, format!("must be at most {max} characters"));
    } else if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        violations.add(field, "must not contain control characters");
    }
    value.to_owned()
}

/// Checks an expected release date against [`release_date_window`].
fn check_release_date(
    violations: &mut FieldViolations,
    field: &str,
    date: Option<&common::Date>,
    today: NaiveDate,
    past_tolerance_days: u32,
) -> Option<NaiveDate> {
    let Some(date) = date.and_then(from_date) else {
        violations.add(field, "must be a valid date");
        return None;
    };
    let (earliest, latest) = release_date_window(today, past_tolerance_days);
    if date < earliest {
        violations.add(
            field,
            format!("must not be in the past (earliest accepted: {earliest})"),
        );
        return None;
    }
    if date > latest {
        violations.add(
            field,
            format!("must be within {MAX_NOTICE_LEAD_MONTHS} months (latest accepted: {latest})"),
        );
        return None;
    }
    Some(date)
}

/// Checks a destination: present, known township of a known county, and the township in that
/// county. Field names are `<field>.township_code` and `<field>.county_code`.
fn check_destination(
    violations: &mut FieldViolations,
    field: &str,
    destination: Option<&common::Jurisdiction>,
) -> Option<(String, String)> {
    let Some(destination) = destination else {
        violations.add(field, "is required");
        return None;
    };
    let township = destination.township_code.trim();
    let county = destination.county_code.trim();
    check_jurisdiction(
        violations,
        &format!("{field}.township_code"),
        township,
        &format!("{field}.county_code"),
        county,
    );
    let directory = Directory::get();
    let valid = directory.county(county).is_some()
        && directory
            .township(township)
            .is_some_and(|known| known.county_code == county);
    valid.then(|| (township.to_owned(), county.to_owned()))
}

/// A checked time of something that already happened: present, valid, not in the future
/// (beyond clock skew) and not implausibly old. Truncated to microseconds, the database's
/// precision, so a repeated request compares equal to what was stored.
fn check_past_time(
    violations: &mut FieldViolations,
    field: &str,
    time: Option<&prost_types::Timestamp>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let time = time
        .and_then(from_timestamp)
        .and_then(|time| DateTime::from_timestamp_micros(time.timestamp_micros()));
    let latest = now.checked_add_signed(CLOCK_SKEW).unwrap_or(now);
    let earliest = now.checked_sub_signed(MAX_EVENT_AGE).unwrap_or(now);
    match time {
        None => {
            violations.add(field, "must be a valid time");
            None
        }
        Some(time) if time > latest => {
            violations.add(field, "must not be in the future");
            None
        }
        Some(time) if time < earliest => {
            violations.add(field, "must be within the last year");
            None
        }
        Some(time) => Some(time),
    }
}

/// Validates a release notice, naming every invalid field. `today` is the office-time-zone
/// date; the expected release date may lie up to `past_tolerance_days` before it.
pub fn validate_notice(
    request: &pb::SubmitReleaseNoticeRequest,
    today: NaiveDate,
    past_tolerance_days: u32,
) -> Result<Notice, tonic::Status> {
    let mut violations = FieldViolations::new();
    let prison_reference = check_text(
        &mut violations,
        "prison_reference",
        &request.prison_reference,
        MAX_REFERENCE_CHARS,
    );
    let prison_id = check_text(
        &mut violations,
        "prison_id",
        &request.prison_id,
        MAX_PRISON_ID_CHARS,
    );
    let person_name = check_text(
        &mut violations,
        "person_name",
        &request.person_name,
        MAX_NAME_CHARS,
    );
    let national_id = match NationalId::parse(&request.national_id, today) {
        Ok(id) => Some(id),
        Err(error) => {
            violations.add("national_id", error.to_string());
            None
        }
    };
    let date_of_birth = request.date_of_birth.as_ref().and_then(from_date);
    match (date_of_birth, &national_id) {
        (None, _) => violations.add("date_of_birth", "must be a valid date"),
        (Some(birth), Some(id)) if id.birth_date() != Some(birth) => violations.add(
            "date_of_birth",
            "does not match the birth date in the national ID number",
        ),
        _ => {}
    }
    let category = ReleaseCategory::from_proto(request.category);
    violations.require(
        category.is_some(),
        "category",
        "must be parole, temporary execution outside prison or sentence completed",
    );
    let expected_release_date = check_release_date(
        &mut violations,
        "expected_release_date",
        request.expected_release_date.as_ref(),
        today,
        past_tolerance_days,
    );
    let destination = check_destination(&mut violations, "destination", request.destination.as_ref());
    let risk_notes = check_notes(
        &mut violations,
        "risk_notes",
        &request.risk_notes,
        MAX_RISK_NOTES_CHARS,
    );
    let offence_category = OffenceCategory::from_proto(request.offence_category);
    violations.require(
        offence_category.is_some(),
        "offence_category",
        "unknown offence category",
    );
    violations.into_result()?;
    match (
        national_id,
        date_of_birth,
        category,
        expected_release_date,
        destination,
        offence_category,
    ) {
        (
            Some(national_id),
            Some(date_of_birth),
            Some(category),
            Some(expected_release_date),
            Some((township_code, county_code)),
            Some(offence_category),
        ) => Ok(Notice {
            prison_reference,
            prison_id,
            person_name,
            national_id,
            date_of_birth,
            category,
            expected_release_date,
            township_code,
            county_code,
            key_assistance_target: request.key_assistance_target,
            risk_notes,
            offence_category,
        }),
        _ => Err(tonic::Status::internal("validation inconsistency")),
    }
}

/// A checked amendment request; `None` keeps the current value.
#[derive(Debug, Clone, PartialEq)]
pub struct AmendmentRequest {
    pub expected_release_date: Option<NaiveDate>,
    /// (township code, county code).
    pub destination: Option<(String, String)>,
    pub reason: String,
}

/// Validates an amendment: at least one change, each valid, and a reason.
pub fn validate_amendment(
    request: &pb::AmendReleaseNoticeRequest,
    today: NaiveDate,
    past_tolerance_days: u32,
) -> Result<AmendmentRequest, tonic::Status> {
    let mut violations = FieldViolations::new();
    if request.new_expected_release_date.is_none() && request.new_destination.is_none() {
        for field in ["new_expected_release_date", "new_destination"] {
            violations.add(
                field,
                "at least one of new_expected_release_date and new_destination is required",
            );
        }
    }
    let expected_release_date = match &request.new_expected_release_date {
        None => None,
        Some(date) => check_release_date(
            &mut violations,
            "new_expected_release_date",
            Some(date),
            today,
            past_tolerance_days,
        ),
    };
    let destination = match &request.new_destination {
        None => None,
        Some(destination) => check_destination(&mut violations, "new_destination", Some(destination)),
    };
    let reason = check_text(&mut violations, "reason", &request.reason, MAX_REASON_CHARS);
    violations.into_result()?;
    Ok(AmendmentRequest {
        expected_release_date,
        destination,
        reason,
    })
}

/// Validates a cancellation: a known reason and a bounded note.
pub fn validate_cancel(
    request: &pb::CancelReleaseNoticeRequest,
) -> Result<(CancelReason, String), tonic::Status> {
    let mut violations = FieldViolations::new();
    let reason = CancelReason::from_proto(request.reason);
    violations.require(
        reason.is_some(),
        "reason",
        "must be release revoked or postponed indefinitely",
    );
    let note = check_notes(&mut violations, "note", &request.note, MAX_NOTE_CHARS);
    violations.into_result()?;
    reason
        .map(|reason| (reason, note))
        .ok_or_else(|| tonic::Status::internal("validation inconsistency"))
}

/// Validates the actual release time of ConfirmRelease.
pub fn validate_release(
    request: &pb::ConfirmReleaseRequest,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, tonic::Status> {
    let mut violations = FieldViolations::new();
    let time = check_past_time(
        &mut violations,
        "actual_release_time",
        request.actual_release_time.as_ref(),
        now,
    );
    violations.into_result()?;
    time.ok_or_else(|| tonic::Status::internal("validation inconsistency"))
}

/// Validates a gate collection: when and by which officer.
pub fn validate_gate_collection(
    request: &pb::RecordGateCollectionRequest,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, String), tonic::Status> {
    let mut violations = FieldViolations::new();
    let time = check_past_time(
        &mut violations,
        "collected_at",
        request.collected_at.as_ref(),
        now,
    );
    let officer = check_text(
        &mut violations,
        "officer_id",
        &request.officer_id,
        MAX_OFFICER_ID_CHARS,
    );
    violations.into_result()?;
    time.map(|time| (time, officer))
        .ok_or_else(|| tonic::Status::internal("validation inconsistency"))
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

fn check_phone(violations: &mut FieldViolations, phone: &str, required: bool) -> String {
    let phone = phone.trim();
    if phone.is_empty() && !required {
        return String::new();
    }
    let digits = phone.strip_prefix('+').unwrap_or(phone);
    if digits.len() < 5 || digits.len() > 20 || !digits.chars().all(|c| c.is_ascii_digit()) {
        violations.add("phone", "must be 5 to 20 digits, optionally starting with +");
    }
    phone.to_owned()
}

/// Validates a report-in for a handover of `category`. Community-corrections categories need
/// everything the registry needs to register the person (level, officer, term, phone,
/// address); a completed sentence takes no level or term. The report-in cannot precede the
/// confirmed release.
pub fn validate_report_in(
    request: &pb::RecordReportInRequest,
    category: ReleaseCategory,
    released_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<ReportIn, tonic::Status> {
    let mut violations = FieldViolations::new();
    let reported_in_at = check_past_time(
        &mut violations,
        "reported_in_at",
        request.reported_in_at.as_ref(),
        now,
    );
    if let (Some(reported), Some(released)) = (reported_in_at, released_at)
        && reported < released
    {
        violations.add("reported_in_at", "must not be before the actual release time");
    }
    let corrections = category.is_community_corrections();
    let level = match (corrections, request.supervision_level) {
        (true, value) => {
            let level = Level::from_proto(value);
            violations.require(
                level.is_some(),
                "supervision_level",
                "must be strict, normal or lenient for community corrections",
            );
            level
        }
        (false, 0) => None,
        (false, _) => {
            violations.add(
                "supervision_level",
                "must be unspecified for a completed sentence",
            );
            None
        }
    };
    let officer_id = if corrections || !request.officer_id.trim().is_empty() {
        check_text(
            &mut violations,
            "officer_id",
            &request.officer_id,
            MAX_OFFICER_ID_CHARS,
        )
    } else {
        String::new()
    };
    let (term_start, term_end) = if corrections {
        let start = request.term_start.as_ref().and_then(from_date);
        let end = request.term_end.as_ref().and_then(from_date);
        violations.require(start.is_some(), "term_start", "must be a valid date");
        violations.require(end.is_some(), "term_end", "must be a valid date");
        if let (Some(start), Some(end)) = (start, end)
            && end < start
        {
            violations.add("term_end", "must not be before term_start");
        }
        (start, end)
    } else {
        violations.require(
            request.term_start.is_none(),
            "term_start",
            "must be unset for a completed sentence",
        );
        violations.require(
            request.term_end.is_none(),
            "term_end",
            "must be unset for a completed sentence",
        );
        (None, None)
    };
    let phone = check_phone(&mut violations, &request.phone, corrections);
    let address = check_text(&mut violations, "address", &request.address, MAX_ADDRESS_CHARS);
    violations.into_result()?;
    let reported_in_at = reported_in_at.ok_or_else(|| tonic::Status::internal("validation inconsistency"))?;
    Ok(ReportIn {
        reported_in_at,
        level,
        officer_id,
        term_start,
        term_end,
        phone,
        address,
        needs_employment: request.needs_employment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;
    use mesh_kit::{error::violated_fields, national_id::synthesize, proto_time::to_date};

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
    }

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("RFC 3339")
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
                match (from.after(step), expected) {
                    (Ok(next), Some(to)) => {
                        assert_eq!(next, to, "{from:?} by {step:?}");
                        legal_seen += 1;
                    }
                    (Err(error), None) => {
                        assert_eq!(error.from, from.as_str());
                        assert_eq!(error.to, step.target());
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
            Released.after(Step::Cancel).expect_err("illegal").to_string(),
            "illegal transition from released to cancelled"
        );
        assert_eq!(
            Released
                .after(Step::AmendReleaseDate)
                .expect_err("illegal")
                .to_string(),
            "illegal transition from released to amended"
        );
        assert_eq!(
            Cancelled
                .after(Step::Acknowledge)
                .expect_err("illegal")
                .to_string(),
            "illegal transition from cancelled to acknowledged"
        );
        assert_eq!(
            ReportedIn
                .after(Step::ConfirmRelease)
                .expect_err("illegal")
                .to_string(),
            "illegal transition from reported_in to released"
        );
        // Final statuses allow nothing but a late gate-collection record after report-in.
        for &step in Step::ALL {
            assert!(Cancelled.after(step).is_err(), "{step:?}");
        }
        assert!(Cancelled.is_final() && ReportedIn.is_final());
        assert!(Notified.is_open() && Acknowledged.is_open() && Released.is_open());
    }

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
        assert_eq!(
            ReleaseCategory::Parole.registry_category(),
            Some(registry::Category::Parole)
        );
        assert_eq!(ReleaseCategory::SentenceCompleted.registry_category(), None);
    }

    fn notice_request(today: NaiveDate) -> pb::SubmitReleaseNoticeRequest {
        let birth = date(1985, 6, 15);
        pb::SubmitReleaseNoticeRequest {
            prison_reference: "ZY-2026-0001".into(),
            prison_id: "zhangye-prison".into(),
            person_name: "李四".into(),
            national_id: synthesize("620702", birth, 17),
            date_of_birth: Some(to_date(birth)),
            category: pb::ReleaseCategory::Parole as i32,
            expected_release_date: Some(to_date(today + Days::new(30))),
            destination: Some(common::Jurisdiction {
                township_code: "620702001".into(),
                county_code: "620702".into(),
            }),
            key_assistance_target: true,
            risk_notes: "糖尿病\n家属联系人: 妻子".into(),
            offence_category: common::OffenceCategory::Property as i32,
        }
    }

    fn refused_fields<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Vec<String> {
        violated_fields(&result.expect_err("must be refused"))
    }

    #[test]
    fn a_valid_notice_is_normalised() {
        let today = date(2026, 11, 26);
        let mut request = notice_request(today);
        request.national_id = request.national_id.to_lowercase();
        request.person_name = "  李四 ".into();
        let notice = validate_notice(&request, today, 1).expect("valid");
        assert_eq!(notice.person_name, "李四");
        assert_eq!(notice.category, ReleaseCategory::Parole);
        assert_eq!(notice.township_code, "620702001");
        assert_eq!(notice.offence_category, OffenceCategory::Property);
        // The same content spelled differently has the same canonical text.
        let again = validate_notice(&notice_request(today), today, 1).expect("valid");
        assert_eq!(notice.canonical_text(), again.canonical_text());
        let mut changed = notice_request(today);
        changed.key_assistance_target = false;
        let changed = validate_notice(&changed, today, 1).expect("valid");
        assert_ne!(notice.canonical_text(), changed.canonical_text());
    }

    #[test]
    fn release_date_in_the_past_is_tolerated_only_within_the_tolerance() {
        let today = date(2026, 11, 26);
        let mut request = notice_request(today);
        request.expected_release_date = Some(to_date(date(2026, 11, 25)));
        assert!(validate_notice(&request, today, 1).is_ok());
        assert_eq!(
            refused_fields(validate_notice(&request, today, 0)),
            ["expected_release_date"]
        );
        request.expected_release_date = Some(to_date(date(2026, 11, 24)));
        assert_eq!(
            refused_fields(validate_notice(&request, today, 1)),
            ["expected_release_date"]
        );
        request.expected_release_date = Some(to_date(date(2032, 1, 1)));
        assert_eq!(
            refused_fields(validate_notice(&request, today, 1)),
            ["expected_release_date"]
        );
    }

    #[test]
    fn bad_notices_name_every_field() {
        let today = date(2026, 11, 26);
        type Mutation = fn(&mut pb::SubmitReleaseNoticeRequest);
        let cases: Vec<(&str, Mutation)> = vec![
            ("prison_reference", |r| r.prison_reference = " ".into()),
            ("prison_id", |r| r.prison_id = "x".repeat(65)),
            ("person_name", |r| r.person_name = String::new()),
            ("national_id", |r| r.national_id.truncate(17)),
            ("national_id", |r| {
                let last = if r.national_id.ends_with('0') { "1" } else { "0" };
                r.national_id.replace_range(17..18, last);
            }),
            ("date_of_birth", |r| r.date_of_birth = None),
            ("date_of_birth", |r| {
                r.date_of_birth = Some(to_date(date(1985, 6, 16)))
            }),
            ("category", |r| r.category = 0),
            ("category", |r| r.category = 7),
            ("expected_release_date", |r| r.expected_release_date = None),
            ("destination", |r| r.destination = None),
            ("destination.township_code", |r| {
                if let Some(d) = r.destination.as_mut() {
                    d.township_code = "620702999".into();
                }
            }),
            ("destination.county_code", |r| {
                if let Some(d) = r.destination.as_mut() {
                    d.county_code = "620721".into();
                }
            }),
            ("risk_notes", |r| r.risk_notes = "长".repeat(2001)),
            ("risk_notes", |r| r.risk_notes = "bell\u{7}".into()),
            ("offence_category", |r| r.offence_category = 42),
        ];
        for (field, mutate) in cases {
            let mut request = notice_request(today);
            mutate(&mut request);
            assert_eq!(
                refused_fields(validate_notice(&request, today, 1)),
                [field],
                "{field}"
            );
        }
        let mut request = notice_request(today);
        request.person_name.clear();
        request.category = 0;
        assert_eq!(
            refused_fields(validate_notice(&request, today, 1)),
            ["person_name", "category"]
        );
    }

    #[test]
    fn amendments_need_a_change_and_a_reason() {
        let today = date(2026, 11, 26);
        let request = pb::AmendReleaseNoticeRequest {
            handover_id: String::new(),
            new_expected_release_date: None,
            new_destination: None,
            reason: String::new(),
        };
        assert_eq!(
            refused_fields(validate_amendment(&request, today, 1)),
            ["new_expected_release_date", "new_destination", "reason"]
        );
        let request = pb::AmendReleaseNoticeRequest {
            new_expected_release_date: Some(to_date(date(2026, 12, 20))),
            new_destination: Some(common::Jurisdiction {
                township_code: "620721002".into(),
                county_code: "620721".into(),
            }),
            reason: "法院裁定延期".into(),
            ..request
        };
        let amendment = validate_amendment(&request, today, 1).expect("valid");
        assert_eq!(amendment.expected_release_date, Some(date(2026, 12, 20)));
        assert_eq!(
            amendment.destination,
            Some(("620721002".to_owned(), "620721".to_owned()))
        );
        let mut bad = request.clone();
        bad.new_destination = Some(common::Jurisdiction {
            township_code: "620721002".into(),
            county_code: "620702".into(),
        });
        bad.new_expected_release_date = Some(to_date(date(2026, 1, 1)));
        assert_eq!(
            refused_fields(validate_amendment(&bad, today, 1)),
            ["new_expected_release_date", "new_destination.county_code"]
        );
    }

    #[test]
    fn report_in_rules_depend_on_the_category() {
        let now = utc("2026-12-05T08:00:00Z");
        let request = pb::RecordReportInRequest {
            handover_id: String::new(),
            reported_in_at: Some(mesh_kit::proto_time::to_timestamp(utc("2026-12-05T02:00:00Z"))),
            supervision_level: registry::SupervisionLevel::Strict as i32,
            officer_id: "officer-1".into(),
            term_start: Some(to_date(date(2026, 12, 5))),
            term_end: Some(to_date(date(2028, 6, 30))),
            phone: "13912345678".into(),
            address: "甘州区东街 1 号".into(),
            needs_employment: true,
        };
        let report = validate_report_in(&request, ReleaseCategory::Parole, None, now).expect("valid");
        assert_eq!(report.level, Some(Level::Strict));
        // Sentence completed takes neither level nor term.
        assert_eq!(
            refused_fields(validate_report_in(
                &request,
                ReleaseCategory::SentenceCompleted,
                None,
                now
            )),
            ["supervision_level", "term_start", "term_end"]
        );
        let resettlement = pb::RecordReportInRequest {
            supervision_level: 0,
            term_start: None,
            term_end: None,
            officer_id: String::new(),
            phone: String::new(),
            ..request.clone()
        };
        assert!(validate_report_in(&resettlement, ReleaseCategory::SentenceCompleted, None, now).is_ok());
        // Community corrections need everything the registry needs.
        assert_eq!(
            refused_fields(validate_report_in(
                &resettlement,
                ReleaseCategory::Parole,
                None,
                now
            )),
            [
                "supervision_level",
                "officer_id",
                "term_start",
                "term_end",
                "phone"
            ]
        );
        // Not before the release, not in the future.
        assert_eq!(
            refused_fields(validate_report_in(
                &request,
                ReleaseCategory::Parole,
                Some(utc("2026-12-05T03:00:00Z")),
                now
            )),
            ["reported_in_at"]
        );
        let future = pb::RecordReportInRequest {
            reported_in_at: Some(mesh_kit::proto_time::to_timestamp(
                now + chrono::Duration::hours(1),
            )),
            ..request
        };
        assert_eq!(
            refused_fields(validate_report_in(&future, ReleaseCategory::Parole, None, now)),
            ["reported_in_at"]
        );
    }

    #[test]
    fn past_times_are_truncated_to_microseconds() {
        let now = utc("2026-12-05T08:00:00Z");
        let request = pb::ConfirmReleaseRequest {
            handover_id: String::new(),
            actual_release_time: Some(prost_types::Timestamp {
                seconds: utc("2026-12-05T01:00:00Z").timestamp(),
                nanos: 123_456_789,
            }),
        };
        let time = validate_release(&request, now).expect("valid");
        assert_eq!(time.timestamp_subsec_nanos(), 123_456_000);
        let missing = pb::ConfirmReleaseRequest {
            actual_release_time: None,
            ..request
        };
        assert_eq!(
            refused_fields(validate_release(&missing, now)),
            ["actual_release_time"]
        );
    }

    #[test]
    fn cancellation_needs_a_reason() {
        let request = pb::CancelReleaseNoticeRequest {
            handover_id: String::new(),
            reason: 0,
            note: String::new(),
        };
        assert_eq!(refused_fields(validate_cancel(&request)), ["reason"]);
        let request = pb::CancelReleaseNoticeRequest {
            reason: pb::CancelReason::ReleaseRevoked as i32,
            note: " 假释裁定撤销 ".into(),
            ..request
        };
        assert_eq!(
            validate_cancel(&request).expect("valid"),
            (CancelReason::ReleaseRevoked, "假释裁定撤销".to_owned())
        );
    }
}
