//! The registry's rules as pure functions over domain values (the clock passed in as a
//! value): the supervision status machine, what a level change, a transfer and a status
//! change do to a supervisee, and where a new registration starts. No proto, SQL or gRPC.

use chrono::{DateTime, NaiveDate, Utc};
use mesh_kit::{error::ServiceError, national_id::NationalId};
use uuid::Uuid;

pub use crate::enums::{Category, Level, SupervisionStatus};
use crate::sealing::Sealed;

/// Longest free-text fields, in characters.
pub const MAX_NAME_CHARS: usize = 64;
pub const MAX_ADDRESS_CHARS: usize = 256;
pub const MAX_REASON_CHARS: usize = 500;
pub const MAX_OFFICER_ID_CHARS: usize = 64;

impl SupervisionStatus {
    /// Terminated, revoked and deceased end a supervision for good.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Terminated | Self::Revoked | Self::Deceased)
    }

    /// Whether the status machine allows `self → next`:
    /// pending report-in → active; active → suspended | absconded; suspended | absconded →
    /// active; any non-final status → terminated | revoked | deceased.
    pub fn can_become(self, next: SupervisionStatus) -> bool {
        use SupervisionStatus::*;
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

/// The township office (and its county bureau) that supervises a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jurisdiction {
    pub township_code: String,
    pub county_code: String,
}

/// A registration that passed validation.
#[derive(Debug, Clone)]
pub struct Registration {
    pub name: String,
    pub national_id: NationalId,
    pub category: Category,
    pub term_start: NaiveDate,
    pub term_end: NaiveDate,
    pub level: Level,
    pub jurisdiction: Jurisdiction,
    pub officer_id: String,
    pub phone: String,
    pub address: String,
    pub reported_at: Option<DateTime<Utc>>,
    pub needs_employment: bool,
}

impl Registration {
    /// A person who has already reported in starts active; anyone else is awaited.
    pub fn initial_status(&self) -> SupervisionStatus {
        if self.reported_at.is_some() {
            SupervisionStatus::Active
        } else {
            SupervisionStatus::PendingReportIn
        }
    }
}

/// A registered supervisee as stored.
#[derive(Debug, Clone)]
pub struct Supervisee {
    pub id: Uuid,
    pub name: String,
    /// National ID, phone and address, sealed (see [`crate::sealing`]).
    pub personal: Sealed,
    pub category: Category,
    pub term_start: NaiveDate,
    pub term_end: NaiveDate,
    pub level: Level,
    pub jurisdiction: Jurisdiction,
    pub officer_id: String,
    pub status: SupervisionStatus,
    pub needs_employment: bool,
    pub reported_at: Option<DateTime<Utc>>,
    /// The prison handover whose report-in registered or activated the person, if any.
    pub handover_id: Option<String>,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// Why a supervisee's level, township or status may not change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("the supervision has ended")]
    Ended,
    /// A transfer to the township that already supervises the person.
    #[error("is the current township")]
    SameTownship,
    #[error("illegal status transition from {from} to {to}")]
    IllegalTransition {
        from: SupervisionStatus,
        to: SupervisionStatus,
    },
}

impl From<ChangeError> for ServiceError {
    fn from(error: ChangeError) -> Self {
        match error {
            ChangeError::SameTownship => ServiceError::invalid("to_township_code", error.to_string()),
            ChangeError::Ended | ChangeError::IllegalTransition { .. } => {
                ServiceError::precondition(error.to_string())
            }
        }
    }
}

/// Why a registration was not stored.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The person already has an open supervision (one open supervision per person).
    #[error("this person already has an open supervision")]
    AlreadyOpen,
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<RegisterError> for ServiceError {
    fn from(error: RegisterError) -> Self {
        match error {
            RegisterError::AlreadyOpen => ServiceError::conflict(error.to_string()),
            RegisterError::Service(error) => error,
        }
    }
}

/// Why a handover's report-in cannot be taken as the report-in of the person's open
/// supervision: each needs a person to reconcile the two records, and says what differs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The person is already under supervision (or suspended, absconded): a second report-in
    /// is not a start, and nothing may silently replace the running supervision.
    #[error("the person already has a supervision in status {0}, which a report-in cannot start")]
    NotPending(SupervisionStatus),
    #[error("the pending supervision is linked to another handover ({0})")]
    OtherHandover(String),
    #[error("the pending supervision is of category {record}, the handover of {report}")]
    CategoryDiffers { record: Category, report: Category },
    #[error("the pending supervision is in township {record}, the handover's destination is {report}")]
    TownshipDiffers { record: String, report: String },
}

impl Supervisee {
    /// Takes a prison handover's report-in as the report-in of this supervision, which a
    /// court's record (for instance) registered before the prison's: the same person
    /// (the caller found it by national ID), pending report-in, same category and township,
    /// not linked to another handover. It becomes active at `reported_at`, linked to the
    /// handover; returns the previous status. The record's own term, level and officer stay.
    pub fn link_report_in(
        &mut self,
        handover_id: &str,
        report: &Registration,
        reported_at: DateTime<Utc>,
    ) -> Result<SupervisionStatus, LinkError> {
        if self.status != SupervisionStatus::PendingReportIn {
            return Err(LinkError::NotPending(self.status));
        }
        if let Some(linked) = self
            .handover_id
            .as_deref()
            .filter(|linked| *linked != handover_id)
        {
            return Err(LinkError::OtherHandover(linked.to_owned()));
        }
        if self.category != report.category {
            return Err(LinkError::CategoryDiffers {
                record: self.category,
                report: report.category,
            });
        }
        if self.jurisdiction.township_code != report.jurisdiction.township_code {
            return Err(LinkError::TownshipDiffers {
                record: self.jurisdiction.township_code.clone(),
                report: report.jurisdiction.township_code.clone(),
            });
        }
        self.reported_at = Some(reported_at);
        self.handover_id = Some(handover_id.to_owned());
        Ok(std::mem::replace(&mut self.status, SupervisionStatus::Active))
    }

    /// Sets the supervision level; returns the previous one, or `None` when the level is
    /// already `to` (a retried request changes nothing and emits nothing).
    pub fn change_level(&mut self, to: Level) -> Result<Option<Level>, ChangeError> {
        if self.status.is_final() {
            return Err(ChangeError::Ended);
        }
        if self.level == to {
            return Ok(None);
        }
        Ok(Some(std::mem::replace(&mut self.level, to)))
    }

    /// Moves the supervision to another township office and officer; returns the previous
    /// jurisdiction.
    pub fn transfer(&mut self, to: Jurisdiction, officer_id: String) -> Result<Jurisdiction, ChangeError> {
        if self.status.is_final() {
            return Err(ChangeError::Ended);
        }
        if self.jurisdiction.township_code == to.township_code {
            return Err(ChangeError::SameTownship);
        }
        self.officer_id = officer_id;
        Ok(std::mem::replace(&mut self.jurisdiction, to))
    }

    /// Moves the status along the status machine; returns the previous status. Becoming
    /// active records the report-in time (`now`) unless one is already recorded.
    pub fn change_status(
        &mut self,
        to: SupervisionStatus,
        now: DateTime<Utc>,
    ) -> Result<SupervisionStatus, ChangeError> {
        if !self.status.can_become(to) {
            return Err(ChangeError::IllegalTransition {
                from: self.status,
                to,
            });
        }
        if to == SupervisionStatus::Active {
            self.reported_at.get_or_insert(now);
        }
        Ok(std::mem::replace(&mut self.status, to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SupervisionStatus::*;

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
        for &from in SupervisionStatus::ALL {
            for &to in SupervisionStatus::ALL {
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

    fn time(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("valid")
    }

    fn jurisdiction(township_code: &str) -> Jurisdiction {
        Jurisdiction {
            township_code: township_code.into(),
            county_code: "620702".into(),
        }
    }

    fn supervisee(status: SupervisionStatus) -> Supervisee {
        Supervisee {
            id: Uuid::now_v7(),
            name: "测试人员".into(),
            personal: Sealed {
                national_id: Vec::new(),
                phone: Vec::new(),
                address: Vec::new(),
            },
            category: Category::Parole,
            term_start: NaiveDate::from_ymd_opt(2026, 1, 1).expect("date"),
            term_end: NaiveDate::from_ymd_opt(2027, 1, 1).expect("date"),
            level: Level::Normal,
            jurisdiction: jurisdiction("620702001"),
            officer_id: "officer-1".into(),
            status,
            needs_employment: false,
            reported_at: None,
            handover_id: None,
            registered_at: time(0),
            updated_at: time(0),
            version: 1,
        }
    }

    #[test]
    fn a_level_change_returns_the_previous_level_and_a_repeat_changes_nothing() {
        let mut person = supervisee(Active);
        assert_eq!(person.change_level(Level::Strict), Ok(Some(Level::Normal)));
        assert_eq!(person.level, Level::Strict);
        assert_eq!(person.change_level(Level::Strict), Ok(None));
        assert_eq!(
            supervisee(Revoked).change_level(Level::Strict),
            Err(ChangeError::Ended)
        );
    }

    #[test]
    fn a_transfer_needs_another_township_and_an_open_supervision() {
        let mut person = supervisee(Suspended);
        assert_eq!(
            person.transfer(jurisdiction("620702001"), "officer-2".into()),
            Err(ChangeError::SameTownship)
        );
        assert_eq!(
            person.transfer(jurisdiction("620702002"), "officer-2".into()),
            Ok(jurisdiction("620702001"))
        );
        assert_eq!(person.jurisdiction, jurisdiction("620702002"));
        assert_eq!(person.officer_id, "officer-2");
        assert_eq!(
            supervisee(Terminated).transfer(jurisdiction("620702002"), String::new()),
            Err(ChangeError::Ended)
        );
    }

    #[test]
    fn becoming_active_records_the_first_report_in_only() {
        let mut person = supervisee(PendingReportIn);
        assert_eq!(
            person.change_status(Suspended, time(1)),
            Err(ChangeError::IllegalTransition {
                from: PendingReportIn,
                to: Suspended
            })
        );
        assert_eq!(person.change_status(Active, time(1)), Ok(PendingReportIn));
        assert_eq!(person.reported_at, Some(time(1)));
        assert_eq!(person.change_status(Absconded, time(2)), Ok(Active));
        assert_eq!(person.change_status(Active, time(3)), Ok(Absconded));
        assert_eq!(person.reported_at, Some(time(1)), "kept");
    }

    fn report(category: Category, township_code: &str) -> Registration {
        Registration {
            name: "测试人员".into(),
            national_id: NationalId::parse(
                &mesh_kit::national_id::synthesize(
                    "620702",
                    NaiveDate::from_ymd_opt(1990, 3, 7).expect("date"),
                    1,
                ),
                NaiveDate::from_ymd_opt(2026, 11, 26).expect("date"),
            )
            .expect("valid id"),
            category,
            term_start: NaiveDate::from_ymd_opt(2026, 1, 1).expect("date"),
            term_end: NaiveDate::from_ymd_opt(2027, 1, 1).expect("date"),
            level: Level::Strict,
            jurisdiction: jurisdiction(township_code),
            officer_id: "officer-9".into(),
            phone: "13900000000".into(),
            address: "x".into(),
            reported_at: Some(time(5)),
            needs_employment: true,
        }
    }

    #[test]
    fn a_report_in_activates_a_compatible_pending_supervision_and_links_it() {
        let mut person = supervisee(PendingReportIn);
        let previous = person.link_report_in("h-1", &report(Category::Parole, "620702001"), time(5));
        assert_eq!(previous, Ok(PendingReportIn));
        assert_eq!(person.status, Active);
        assert_eq!(person.reported_at, Some(time(5)));
        assert_eq!(person.handover_id.as_deref(), Some("h-1"));
        // The record's own level and officer stay: the court's record is the supervision.
        assert_eq!(
            (person.level, person.officer_id.as_str()),
            (Level::Normal, "officer-1")
        );
    }

    #[test]
    fn a_report_in_never_replaces_a_running_or_different_supervision() {
        let parole = report(Category::Parole, "620702001");
        for status in [Active, Suspended, Absconded] {
            let mut person = supervisee(status);
            assert_eq!(
                person.link_report_in("h-1", &parole, time(5)),
                Err(LinkError::NotPending(status))
            );
            assert_eq!(
                (person.status, person.handover_id.clone()),
                (status, None),
                "unchanged"
            );
        }
        let mut linked = supervisee(PendingReportIn);
        linked.handover_id = Some("h-0".into());
        assert_eq!(
            linked.link_report_in("h-1", &parole, time(5)),
            Err(LinkError::OtherHandover("h-0".into()))
        );
        assert_eq!(
            supervisee(PendingReportIn).link_report_in(
                "h-1",
                &report(Category::TemporaryExecutionOutsidePrison, "620702001"),
                time(5)
            ),
            Err(LinkError::CategoryDiffers {
                record: Category::Parole,
                report: Category::TemporaryExecutionOutsidePrison
            })
        );
        let elsewhere = supervisee(PendingReportIn).link_report_in(
            "h-1",
            &report(Category::Parole, "620702002"),
            time(5),
        );
        assert_eq!(
            elsewhere.map_err(|error| error.to_string()),
            Err(
                "the pending supervision is in township 620702001, the handover's destination is 620702002"
                    .into()
            )
        );
    }

    #[test]
    fn errors_map_to_their_codes_and_messages() {
        let illegal = ServiceError::from(ChangeError::IllegalTransition {
            from: PendingReportIn,
            to: Suspended,
        });
        assert_eq!(
            illegal.public_message(),
            "illegal status transition from pending_report_in to suspended"
        );
        assert!(matches!(illegal, ServiceError::FailedPrecondition(_)));
        let same = ServiceError::from(ChangeError::SameTownship);
        assert_eq!(same.field(), Some("to_township_code"));
        assert!(matches!(
            ServiceError::from(RegisterError::AlreadyOpen),
            ServiceError::Conflict(_)
        ));
    }
}
