//! Who is told of an alert's step, and why: the offices whose endpoints get a notification.
//! The township office always; the county bureau when the alert is its (escalation is
//! cumulative), when the township office has no endpoint to hear it (so nothing falls
//! silent), when the alert is escalated, and when a transfer brings it into the county; and
//! the township office an alert left. Endpoint lookups are the store's; the rule is here.

use super::{
    Actor, Jurisdiction,
    alert::{Alert, AlertEvent, EscalationTarget},
};

/// A lifecycle step, with what its announcement carries besides the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    Raised,
    Acknowledged {
        by: &'a Actor,
    },
    Resolved {
        by: &'a Actor,
    },
    /// The county bureau was made the target; `reason` says why.
    Escalated {
        previous: EscalationTarget,
        reason: &'a str,
    },
    /// The subject was transferred; the alert left `from`.
    Transferred {
        from: &'a Jurisdiction,
    },
}

impl Step<'_> {
    pub fn event(&self) -> AlertEvent {
        match self {
            Step::Raised => AlertEvent::Raised,
            Step::Acknowledged { .. } => AlertEvent::Acknowledged,
            Step::Resolved { .. } => AlertEvent::Resolved,
            Step::Escalated { .. } => AlertEvent::Escalated,
            Step::Transferred { .. } => AlertEvent::Transferred,
        }
    }

    /// Who acted, for the steps a person (or the system) takes.
    pub fn actor(&self) -> Option<&Actor> {
        match self {
            Step::Acknowledged { by } | Step::Resolved { by } => Some(by),
            _ => None,
        }
    }

    /// The jurisdiction the alert left, for a transfer.
    pub fn previous_jurisdiction(&self) -> Option<&Jurisdiction> {
        match self {
            Step::Transferred { from } => Some(from),
            _ => None,
        }
    }
}

/// One office to tell: a township office, or a county bureau (township code empty), and why
/// when it is not simply the office the alert belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub office: Jurisdiction,
    pub reason: String,
}

/// The county bureau of `jurisdiction`.
pub fn county_bureau(jurisdiction: &Jurisdiction) -> Jurisdiction {
    Jurisdiction {
        township_code: String::new(),
        county_code: jurisdiction.county_code.clone(),
    }
}

/// Why a county bureau is told in place of a township office without an endpoint.
pub fn no_endpoint_reason(township: &Jurisdiction) -> String {
    format!(
        "township office {} has no registered endpoint",
        township.township_code
    )
}

/// The offices told of `step` of `alert` (after the step), given whether the alert's
/// township office has an endpoint. Each office appears once.
pub fn audience(alert: &Alert, step: &Step<'_>, township_has_endpoint: bool) -> Vec<Notice> {
    let township = &alert.jurisdiction;
    let mut notices = vec![Notice {
        office: township.clone(),
        reason: String::new(),
    }];
    let county_reason = if !township_has_endpoint {
        Some(no_endpoint_reason(township))
    } else {
        match step {
            Step::Escalated { reason, .. } => Some((*reason).to_owned()),
            Step::Transferred { .. } => Some(format!(
                "the subject was transferred into township {}",
                township.township_code
            )),
            _ if alert.escalation_target == EscalationTarget::CountyBureau => Some(String::new()),
            _ => None,
        }
    };
    if let Some(reason) = county_reason {
        notices.push(Notice {
            office: county_bureau(township),
            reason,
        });
    }
    if let Step::Transferred { from } = step
        && !from.is_county_wide()
        && *from != township
    {
        notices.push(Notice {
            office: (*from).clone(),
            reason: format!(
                "the subject was transferred to township {}",
                township.township_code
            ),
        });
    }
    notices
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alert::tests::{missed_checkin, utc};

    fn offices(notices: &[Notice]) -> Vec<&str> {
        notices
            .iter()
            .map(|notice| {
                if notice.office.is_county_wide() {
                    "county"
                } else {
                    notice.office.township_code.as_str()
                }
            })
            .collect()
    }

    #[test]
    fn a_township_alert_goes_to_the_township_office_alone() {
        let alert = missed_checkin();
        let notices = audience(&alert, &Step::Raised, true);
        assert_eq!(offices(&notices), ["620702001"]);
        assert_eq!(notices[0].reason, "");
    }

    #[test]
    fn a_township_without_an_endpoint_falls_back_to_its_county_bureau_with_the_reason() {
        let alert = missed_checkin();
        let notices = audience(&alert, &Step::Raised, false);
        assert_eq!(offices(&notices), ["620702001", "county"]);
        assert_eq!(notices[1].office.county_code, "620702");
        assert_eq!(
            notices[1].reason,
            "township office 620702001 has no registered endpoint"
        );
    }

    #[test]
    fn the_county_bureau_hears_of_its_alerts_and_of_escalations() {
        let mut alert = missed_checkin();
        let previous = alert.escalate(utc("2026-12-05T01:00:00Z")).expect("escalated");
        let step = Step::Escalated {
            previous,
            reason: "notifications to the township office failed 5 times",
        };
        let notices = audience(&alert, &step, true);
        assert_eq!(offices(&notices), ["620702001", "county"]);
        assert!(notices[1].reason.contains("failed 5 times"));
        let by = Actor::system();
        let later = audience(&alert, &Step::Resolved { by: &by }, true);
        assert_eq!(offices(&later), ["620702001", "county"], "escalation is kept");
        assert_eq!(later[1].reason, "");
    }

    #[test]
    fn a_transfer_tells_the_new_township_and_county_and_the_old_township() {
        let mut alert = missed_checkin();
        let from = alert.move_to(
            Jurisdiction {
                township_code: "620721001".into(),
                county_code: "620721".into(),
            },
            utc("2026-12-05T01:00:00Z"),
        );
        let notices = audience(&alert, &Step::Transferred { from: &from }, true);
        assert_eq!(offices(&notices), ["620721001", "county", "620702001"]);
        assert_eq!(notices[1].office.county_code, "620721");
        assert!(notices[2].reason.contains("transferred to township 620721001"));
    }
}
