//! Who a check-in belongs to when it arrives late, and what an offline batch tells the app
//! about an item it could not store. The app drops an item it is told is rejected, so a
//! rejection is kept for what can never succeed; whatever may succeed once this service's
//! view of the registry catches up is "retry later". A contact captured offline counts for
//! where and how the person was supervised when it was captured, not when it arrived.

use super::{Jurisdiction, RecordError, SuperviseeStatus};

/// What the app must do with an item that was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemFailure {
    /// It can never succeed: the app may drop it.
    Rejected,
    /// It may succeed later: the app keeps it and sends it again unchanged.
    RetryLater,
}

/// The supervisee as this service knows them now and, when known, as they were when the
/// check-in was captured (the registry snapshot in force at its device time).
#[derive(Debug, Clone, PartialEq)]
pub struct Supervision {
    pub now: (Jurisdiction, SuperviseeStatus),
    pub at_capture: Option<(Jurisdiction, SuperviseeStatus)>,
}

/// The jurisdiction a check-in is recorded for. The caller must supervise the person now, or
/// have supervised them when it was captured: an officer syncing after a transfer the
/// contacts made before it (they count for the township they were made in). The person
/// must be under supervision now or when it was captured (a contact made before a
/// suspension was made under supervision).
pub fn attribute(
    supervision: &Supervision,
    may_act_for: impl Fn(&Jurisdiction) -> bool,
) -> Result<Jurisdiction, RecordError> {
    let (current, current_status) = &supervision.now;
    let captured = supervision.at_capture.as_ref();
    let jurisdiction = if may_act_for(current) {
        current
    } else {
        match captured {
            Some((then, _)) if may_act_for(then) => then,
            _ => return Err(RecordError::OutsideJurisdiction),
        }
    };
    let under_supervision =
        current_status.accepts_checkins() || captured.is_some_and(|(_, status)| status.accepts_checkins());
    if !under_supervision {
        return Err(RecordError::NotUnderSupervision(*current_status));
    }
    Ok(jurisdiction.clone())
}

impl RecordError {
    /// Whether an item failing this way can ever succeed. The registry's events reach this
    /// service a little after the registry changes, so a person not known yet, not yet
    /// reported in, suspended or not yet in the caller's township may be known, active or
    /// transferred a moment later; a reused id or an ended supervision never changes.
    pub fn item_failure(&self) -> ItemFailure {
        match self {
            RecordError::IdReused => ItemFailure::Rejected,
            RecordError::NotUnderSupervision(status) if status.is_final() => ItemFailure::Rejected,
            RecordError::UnknownSupervisee
            | RecordError::NotUnderSupervision(_)
            | RecordError::OutsideJurisdiction => ItemFailure::RetryLater,
        }
    }

    /// The field of the item the failure concerns.
    pub fn field(&self) -> &'static str {
        match self {
            RecordError::IdReused => "checkin_id",
            RecordError::UnknownSupervisee
            | RecordError::NotUnderSupervision(_)
            | RecordError::OutsideJurisdiction => "supervisee_id",
        }
    }
}

impl SuperviseeStatus {
    /// Terminated, revoked and deceased end a supervision for good.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            SuperviseeStatus::Terminated | SuperviseeStatus::Revoked | SuperviseeStatus::Deceased
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::jurisdiction;
    use SuperviseeStatus::*;

    fn other() -> Jurisdiction {
        Jurisdiction {
            township_code: "620702002".into(),
            county_code: "620702".into(),
        }
    }

    fn only(allowed: Jurisdiction) -> impl Fn(&Jurisdiction) -> bool {
        move |jurisdiction| *jurisdiction == allowed
    }

    #[test]
    fn the_current_township_records_for_itself() {
        let supervision = Supervision {
            now: (jurisdiction(), Active),
            at_capture: Some((other(), Active)),
        };
        assert_eq!(attribute(&supervision, only(jurisdiction())), Ok(jurisdiction()));
    }

    #[test]
    fn a_contact_made_before_a_transfer_counts_for_the_township_it_was_made_in() {
        // Transferred from 620702001 to 620702002 after the capture; the old officer syncs.
        let supervision = Supervision {
            now: (other(), Active),
            at_capture: Some((jurisdiction(), Active)),
        };
        assert_eq!(attribute(&supervision, only(jurisdiction())), Ok(jurisdiction()));
        // A township that supervised the person neither then nor now is refused, for now.
        let third = Jurisdiction {
            township_code: "620702003".into(),
            county_code: "620702".into(),
        };
        assert_eq!(
            attribute(&supervision, only(third)),
            Err(RecordError::OutsideJurisdiction)
        );
        // Without a known past, only the present counts.
        let unknown_past = Supervision {
            at_capture: None,
            ..supervision
        };
        assert_eq!(
            attribute(&unknown_past, only(jurisdiction())),
            Err(RecordError::OutsideJurisdiction)
        );
    }

    #[test]
    fn a_contact_made_under_supervision_counts_after_a_suspension() {
        let suspended_since = Supervision {
            now: (jurisdiction(), Suspended),
            at_capture: Some((jurisdiction(), Active)),
        };
        assert_eq!(
            attribute(&suspended_since, only(jurisdiction())),
            Ok(jurisdiction())
        );
        let suspended_then = Supervision {
            now: (jurisdiction(), Suspended),
            at_capture: Some((jurisdiction(), Suspended)),
        };
        assert_eq!(
            attribute(&suspended_then, only(jurisdiction())),
            Err(RecordError::NotUnderSupervision(Suspended))
        );
    }

    #[test]
    fn only_what_can_never_succeed_is_rejected() {
        use ItemFailure::{Rejected, RetryLater};
        let cases = [
            (RecordError::IdReused, Rejected, "checkin_id"),
            (RecordError::UnknownSupervisee, RetryLater, "supervisee_id"),
            (RecordError::OutsideJurisdiction, RetryLater, "supervisee_id"),
            (
                RecordError::NotUnderSupervision(PendingReportIn),
                RetryLater,
                "supervisee_id",
            ),
            (
                RecordError::NotUnderSupervision(Suspended),
                RetryLater,
                "supervisee_id",
            ),
            (
                RecordError::NotUnderSupervision(Terminated),
                Rejected,
                "supervisee_id",
            ),
            (
                RecordError::NotUnderSupervision(Revoked),
                Rejected,
                "supervisee_id",
            ),
            (
                RecordError::NotUnderSupervision(Deceased),
                Rejected,
                "supervisee_id",
            ),
        ];
        for (error, failure, field) in cases {
            assert_eq!(
                (error.item_failure(), error.field()),
                (failure, field),
                "{error:?}"
            );
        }
    }
}
