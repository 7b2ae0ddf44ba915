//! The registry's domain rules as pure functions: the supervision status machine, the
//! enumerations as stored in the database, and validation of a registration request.

use chrono::{DateTime, NaiveDate, Utc};
use mesh_kit::{
    error::FieldViolations,
    jurisdiction::Directory,
    national_id::NationalId,
    proto_time::{from_date, from_timestamp},
    validate::{check_jurisdiction, check_text},
};
use mesh_proto::registry as pb;

mesh_kit::stored_enum!(Category, pb::Category, {
    PublicSurveillance = "public_surveillance" => PublicSurveillance,
    Probation = "probation" => Probation,
    Parole = "parole" => Parole,
    TemporaryExecutionOutsidePrison = "temporary_execution_outside_prison" => TemporaryExecutionOutsidePrison,
});

mesh_kit::stored_enum!(Level, pb::SupervisionLevel, {
    Strict = "strict" => Strict,
    Normal = "normal" => Normal,
    Lenient = "lenient" => Lenient,
});

mesh_kit::stored_enum!(Status, pb::SuperviseeStatus, {
    PendingReportIn = "pending_report_in" => PendingReportIn,
    Active = "active" => Active,
    Suspended = "suspended" => Suspended,
    Absconded = "absconded" => Absconded,
    Terminated = "terminated" => Terminated,
    Revoked = "revoked" => Revoked,
    Deceased = "deceased" => Deceased,
});

impl Status {
    /// Terminated, revoked and deceased end a supervision for good.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Terminated | Status::Revoked | Status::Deceased)
    }

    /// Whether the status machine allows `self → next`:
    /// pending report-in → active; active → suspended | absconded; suspended | absconded →
    /// active; any non-final status → terminated | revoked | deceased.
    pub fn can_become(self, next: Status) -> bool {
        use Status::*;
        if self.is_final() {
            return false;
        }
        matches!(
            (self, next),
            (PendingReportIn, Active)
                | (Active, Suspended | Absconded)
                | (Suspended | Absconded, Active)
                | (_, Terminated | Revoked | Deceased)
        )
    }
}

/// Longest free-text fields, in characters.
pub const MAX_NAME_CHARS: usize = 64;
pub const MAX_ADDRESS_CHARS: usize = 256;
pub const MAX_REASON_CHARS: usize = 500;
pub const MAX_OFFICER_ID_CHARS: usize = 64;

/// A registration that passed validation.
#[derive(Debug, Clone)]
pub struct Registration {
    pub name: String,
    pub national_id: NationalId,
    pub category: Category,
    pub term_start: NaiveDate,
    pub term_end: NaiveDate,
    pub level: Level,
    pub township_code: String,
    pub county_code: String,
    pub officer_id: String,
    pub phone: String,
    pub address: String,
    pub reported_at: Option<DateTime<Utc>>,
    pub needs_employment: bool,
}

fn check_phone(violations: &mut FieldViolations, phone: &str) -> String {
    let phone = phone.trim();
    let digits = phone.strip_prefix('+').unwrap_or(phone);
    if digits.len() < 5 || digits.len() > 20 || !digits.chars().all(|c| c.is_ascii_digit()) {
        violations.add("phone", "must be 5 to 20 digits, optionally starting with +");
    }
    phone.to_owned()
}

/// Validates a registration request, naming every invalid field.
pub fn validate_registration(
    request: &pb::RegisterSuperviseeRequest,
    now: DateTime<Utc>,
) -> Result<Registration, tonic::Status> {
    let mut violations = FieldViolations::new();
    let today = now.with_timezone(&Directory::get().time_zone).date_naive();
    let name = check_text(&mut violations, "name", &request.name, MAX_NAME_CHARS);
    let national_id = match NationalId::parse(&request.national_id, today) {
        Ok(id) => Some(id),
        Err(error) => {
            violations.add("national_id", error.to_string());
            None
        }
    };
    let category = Category::from_proto(request.category);
    if category.is_none() {
        violations.add(
            "category",
            "must be one of the four community-corrections categories",
        );
    }
    let term_start = request.term_start.as_ref().and_then(from_date);
    let term_end = request.term_end.as_ref().and_then(from_date);
    violations.require(term_start.is_some(), "term_start", "must be a valid date");
    violations.require(term_end.is_some(), "term_end", "must be a valid date");
    if let (Some(start), Some(end)) = (term_start, term_end)
        && end < start
    {
        violations.add("term_end", "must not be before term_start");
    }
    let level = Level::from_proto(request.level);
    violations.require(level.is_some(), "level", "must be strict, normal or lenient");
    check_jurisdiction(
        &mut violations,
        "township_code",
        &request.township_code,
        "county_code",
        &request.county_code,
    );
    let officer_id = check_text(
        &mut violations,
        "officer_id",
        &request.officer_id,
        MAX_OFFICER_ID_CHARS,
    );
    let phone = check_phone(&mut violations, &request.phone);
    let address = check_text(&mut violations, "address", &request.address, MAX_ADDRESS_CHARS);
    let reported_at = match &request.reported_at {
        None => None,
        Some(timestamp) => match from_timestamp(timestamp) {
            Some(time) if time <= now + chrono::Duration::minutes(5) => Some(time),
            _ => {
                violations.add("reported_at", "must be a valid time, not in the future");
                None
            }
        },
    };
    violations.into_result()?;
    match (national_id, category, term_start, term_end, level) {
        (Some(national_id), Some(category), Some(term_start), Some(term_end), Some(level)) => {
            Ok(Registration {
                name,
                national_id,
                category,
                term_start,
                term_end,
                level,
                township_code: request.township_code.clone(),
                county_code: request.county_code.clone(),
                officer_id,
                phone,
                address,
                reported_at,
                needs_employment: request.needs_employment,
            })
        }
        _ => Err(tonic::Status::internal("validation inconsistency")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    #[test]
    fn every_legal_and_illegal_transition() {
        let legal = [
            (PendingReportIn, Active),
            (PendingReportIn, Terminated),
            (PendingReportIn, Revoked),
            (PendingReportIn, Deceased),
            (Active, Suspended),
            (Active, Absconded),
            (Active, Terminated),
            (Active, Revoked),
            (Active, Deceased),
            (Suspended, Active),
            (Suspended, Terminated),
            (Suspended, Revoked),
            (Suspended, Deceased),
            (Absconded, Active),
            (Absconded, Terminated),
            (Absconded, Revoked),
            (Absconded, Deceased),
        ];
        for &from in Status::ALL {
            for &to in Status::ALL {
                let expected = legal.contains(&(from, to));
                assert_eq!(from.can_become(to), expected, "{from:?} → {to:?}");
            }
        }
        // Spot-check the illegal ones the rules call out.
        assert!(!PendingReportIn.can_become(Suspended));
        assert!(!Suspended.can_become(Absconded));
        assert!(!Active.can_become(Active));
        assert!(!Terminated.can_become(Active));
        assert!(!Deceased.can_become(Revoked));
    }

    #[test]
    fn stored_names_round_trip() {
        for &status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
            assert_eq!(Status::from_proto(status.to_proto() as i32), Some(status));
        }
        for &level in Level::ALL {
            assert_eq!(Level::parse(level.as_str()), Some(level));
        }
        for &category in Category::ALL {
            assert_eq!(Category::from_proto(category.to_proto() as i32), Some(category));
        }
        assert_eq!(Status::from_proto(0), None);
        assert_eq!(Level::from_proto(99), None);
    }
}
