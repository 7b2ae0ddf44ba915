//! An alert as the service keeps it, and its lifecycle: raised open, acknowledged by a
//! person, resolved by a person or automatically (open → acknowledged → resolved, or open →
//! resolved). Every step stamps the time and bumps the version, so readers can order them.

use chrono::{DateTime, Utc};
use mesh_kit::error::ServiceError;
use mesh_proto::alert as pb;
use uuid::Uuid;

use super::{
    Actor, Jurisdiction,
    rules::{AlertSpec, RuleId},
};

// What an alert is about. The text is the kind's name inside dedup keys and the stored
// `kind` column: the protobuf value name without `ALERT_KIND_`, in lower case.
mesh_kit::stored_enum!(AlertKind, pb::AlertKind, {
    MissedCheckin = "missed_checkin" => MissedCheckin,
    AbscondingTenDays = "absconding_ten_days" => AbscondingTenDays,
    AbscondingOneMonth = "absconding_one_month" => AbscondingOneMonth,
    OutOfArea = "out_of_area" => OutOfArea,
    HandoverNotAcknowledged = "handover_not_acknowledged" => HandoverNotAcknowledged,
    GateNotCollected = "gate_not_collected" => GateNotCollected,
    ReportInOverdue = "report_in_overdue" => ReportInOverdue,
    CoverageGap = "coverage_gap" => CoverageGap,
    DeadLetter = "dead_letter" => DeadLetter,
    ConsumerStalled = "consumer_stalled" => ConsumerStalled,
});

mesh_kit::stored_enum!(AlertStatus, pb::AlertStatus, {
    Open = "open" => Open,
    Acknowledged = "acknowledged" => Acknowledged,
    Resolved = "resolved" => Resolved,
});

mesh_kit::stored_enum!(AlertSeverity, pb::AlertSeverity, {
    Low = "low" => Low,
    Medium = "medium" => Medium,
    High = "high" => High,
    Critical = "critical" => Critical,
});

mesh_kit::stored_enum!(EscalationTarget, pb::EscalationTarget, {
    TownshipOffice = "township_office" => TownshipOffice,
    CountyBureau = "county_bureau" => CountyBureau,
});

mesh_kit::stored_enum!(RecommendedMeasure, pb::RecommendedMeasure, {
    None = "none" => None,
    Admonition = "admonition" => Admonition,
    Warning = "warning" => Warning,
    RevocationProposal = "revocation_proposal" => RevocationProposal,
});

// A step of the lifecycle, as published (`alert.<text>`) and streamed.
mesh_kit::stored_enum!(AlertEvent, pb::AlertChange, {
    Raised = "raised" => Raised,
    Acknowledged = "acknowledged" => Acknowledged,
    Resolved = "resolved" => Resolved,
    Escalated = "escalated" => Escalated,
    Transferred = "transferred" => Transferred,
});

impl AlertKind {
    /// Kinds about the mesh itself (a record set aside, a consumer stalled), resolved by the
    /// replay or recovery that ends them, never by the person's own events.
    pub fn is_operational(self) -> bool {
        matches!(self, AlertKind::DeadLetter | AlertKind::ConsumerStalled)
    }

    /// Kinds that say contact with the person was lost, which any later verified contact
    /// answers.
    pub fn is_lost_contact(self) -> bool {
        matches!(
            self,
            AlertKind::MissedCheckin | AlertKind::AbscondingTenDays | AlertKind::AbscondingOneMonth
        )
    }
}

impl AlertEvent {
    /// The event type of the `alert.*` event and of its webhook notifications.
    pub fn event_type(self) -> &'static str {
        match self {
            AlertEvent::Raised => "alert.raised",
            AlertEvent::Acknowledged => "alert.acknowledged",
            AlertEvent::Resolved => "alert.resolved",
            AlertEvent::Escalated => "alert.escalated",
            AlertEvent::Transferred => "alert.transferred",
        }
    }
}

/// Whom an alert is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub kind: SubjectKind,
    /// The supervisee or handover id, as the events spelled it.
    pub id: String,
    /// Full name of the person, for alert texts.
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    Supervisee,
    Handover,
}

/// The rule that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: RuleId,
    pub description: String,
}

/// One supporting fact, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    pub key: String,
    pub value: String,
}

/// The facts that made the rule fire (the missed deadline itself is [`Alert::deadline`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// Last verified contact (for a handover: the release or the notice).
    pub last_contact_at: Option<DateTime<Utc>>,
    pub grace_period_seconds: i64,
    pub facts: Vec<Fact>,
}

/// Who did something to an alert, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub by: Actor,
    pub at: DateTime<Utc>,
}

/// How an alert is being resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub by: Actor,
    pub note: String,
    /// Set for automatic resolutions: what resolved it (e.g. `checkin:<id>`).
    pub reference: Option<String>,
}

/// Everything needed to raise an alert: what [`super::compose`] says about a missed
/// deadline or a flagged check-in.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    pub spec: AlertSpec,
    pub subject: Subject,
    pub jurisdiction: Jurisdiction,
    pub deadline: DateTime<Utc>,
    pub dedup_key: String,
    pub evidence: Evidence,
}

/// An alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub id: Uuid,
    pub kind: AlertKind,
    pub severity: AlertSeverity,
    pub status: AlertStatus,
    pub subject: Subject,
    /// Who is responsible for the subject now (it follows a transferred supervisee).
    pub jurisdiction: Jurisdiction,
    pub escalation_target: EscalationTarget,
    pub recommended_measure: RecommendedMeasure,
    pub rule: Rule,
    pub legal_basis: String,
    pub evidence: Evidence,
    pub raised_at: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    /// Exactly one alert exists per key, whatever the replicas or restarts.
    pub dedup_key: String,
    pub acknowledged: Option<Stamp>,
    pub resolved: Option<Resolved>,
    pub escalated_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// Who resolved an alert, when, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub by: Actor,
    pub at: DateTime<Utc>,
    pub note: String,
    /// What resolved it automatically; `None` when a person did.
    pub reference: Option<String>,
}

/// Why a lifecycle step cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    #[error("the alert is already resolved")]
    AlreadyResolved,
}

impl From<AlertError> for ServiceError {
    fn from(error: AlertError) -> Self {
        match error {
            AlertError::AlreadyResolved => ServiceError::precondition(error.to_string()),
        }
    }
}

impl Alert {
    /// A new open alert, as raised at `now`.
    pub fn raise(id: Uuid, draft: NewAlert, now: DateTime<Utc>) -> Self {
        Self {
            id,
            kind: draft.spec.kind,
            severity: draft.spec.severity,
            status: AlertStatus::Open,
            subject: draft.subject,
            jurisdiction: draft.jurisdiction,
            escalation_target: draft.spec.target,
            recommended_measure: draft.spec.measure,
            rule: Rule {
                id: draft.spec.rule_id,
                description: draft.spec.description,
            },
            legal_basis: draft.spec.legal_basis.to_owned(),
            evidence: draft.evidence,
            raised_at: now,
            deadline: draft.deadline,
            dedup_key: draft.dedup_key,
            acknowledged: None,
            resolved: None,
            escalated_at: None,
            updated_at: now,
            version: 1,
        }
    }

    /// Someone takes an open alert. Acknowledging it again changes nothing (`Ok(false)`); a
    /// resolved alert can no longer be acknowledged.
    pub fn acknowledge(&mut self, by: Actor, now: DateTime<Utc>) -> Result<bool, AlertError> {
        match self.status {
            AlertStatus::Resolved => Err(AlertError::AlreadyResolved),
            AlertStatus::Acknowledged => Ok(false),
            AlertStatus::Open => {
                self.status = AlertStatus::Acknowledged;
                self.acknowledged = Some(Stamp { by, at: now });
                self.touch(now);
                Ok(true)
            }
        }
    }

    /// Resolves an open or acknowledged alert; resolving it again changes nothing (`false`).
    pub fn resolve(&mut self, resolution: Resolution, now: DateTime<Utc>) -> bool {
        if self.status == AlertStatus::Resolved {
            return false;
        }
        self.status = AlertStatus::Resolved;
        self.resolved = Some(Resolved {
            by: resolution.by,
            at: now,
            note: resolution.note,
            reference: resolution.reference,
        });
        self.touch(now);
        true
    }

    /// Hands the alert to another jurisdiction (its subject was transferred): nothing about
    /// the alert itself changes except who owns it. Returns the jurisdiction it left.
    pub fn move_to(&mut self, jurisdiction: Jurisdiction, now: DateTime<Utc>) -> Jurisdiction {
        let previous = std::mem::replace(&mut self.jurisdiction, jurisdiction);
        self.touch(now);
        previous
    }

    /// Raises the escalation target to the county bureau (the township office was not
    /// reached); returns the target before, or `None` when there was nothing to raise: a
    /// resolved alert, or one the county bureau already has.
    pub fn escalate(&mut self, now: DateTime<Utc>) -> Option<EscalationTarget> {
        if self.status == AlertStatus::Resolved || self.escalation_target == EscalationTarget::CountyBureau {
            return None;
        }
        let previous = std::mem::replace(&mut self.escalation_target, EscalationTarget::CountyBureau);
        self.escalated_at = Some(now);
        self.touch(now);
        Some(previous)
    }

    /// Whether it was resolved automatically, because what was missing arrived.
    pub fn auto_resolved(&self) -> bool {
        self.resolved
            .as_ref()
            .is_some_and(|resolved| resolved.reference.is_some())
    }

    /// Whether the county bureau's endpoint hears of it, besides the township office's
    /// (escalation is cumulative: the township always does).
    pub fn notifies_county_bureau(&self) -> bool {
        self.escalation_target == EscalationTarget::CountyBureau
    }

    fn touch(&mut self, now: DateTime<Utc>) {
        self.updated_at = now;
        self.version += 1;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::{
        policy::{Level, Track},
        rules::{About, for_track},
    };

    pub(crate) fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("RFC 3339")
    }

    pub(crate) fn missed_checkin() -> Alert {
        let draft = NewAlert {
            spec: for_track(Track::Checkin, About::Supervisee(Level::Normal)),
            subject: Subject {
                kind: SubjectKind::Supervisee,
                id: "s1".into(),
                name: "张三".into(),
            },
            jurisdiction: Jurisdiction {
                township_code: "620702001".into(),
                county_code: "620702".into(),
            },
            deadline: utc("2026-12-03T16:00:00Z"),
            dedup_key: "missed_checkin:s1:2026-12-03T16:00:00Z".into(),
            evidence: Evidence {
                last_contact_at: Some(utc("2026-11-26T02:00:00Z")),
                grace_period_seconds: 86_400,
                facts: Vec::new(),
            },
        };
        Alert::raise(Uuid::nil(), draft, utc("2026-12-04T16:00:00Z"))
    }

    fn officer() -> Actor {
        Actor {
            subject: "officer-1".into(),
            role: "officer".into(),
        }
    }

    #[test]
    fn kind_names_are_the_protobuf_names_in_lower_case() {
        for &kind in AlertKind::ALL {
            let expected = kind
                .to_proto()
                .as_str_name()
                .trim_start_matches("ALERT_KIND_")
                .to_ascii_lowercase();
            assert_eq!(kind.as_str(), expected);
        }
    }

    #[test]
    fn a_raised_alert_is_open_at_version_one() {
        let alert = missed_checkin();
        assert_eq!(alert.status, AlertStatus::Open);
        assert_eq!(alert.version, 1);
        assert_eq!(alert.raised_at, alert.updated_at);
        assert_eq!(alert.rule.id, RuleId::MissedCheckin(Level::Normal));
    }

    #[test]
    fn acknowledge_once_then_no_op_and_never_after_resolution() {
        let mut alert = missed_checkin();
        let later = utc("2026-12-05T01:00:00Z");
        assert_eq!(alert.acknowledge(officer(), later), Ok(true));
        assert_eq!(alert.status, AlertStatus::Acknowledged);
        assert_eq!(alert.version, 2);
        assert_eq!(alert.acknowledge(officer(), later), Ok(false));
        assert_eq!(alert.version, 2, "a repeat changes nothing");
        let resolution = Resolution {
            by: officer(),
            note: "已电话联系".into(),
            reference: None,
        };
        assert!(alert.resolve(resolution.clone(), later));
        assert_eq!(alert.version, 3);
        assert!(!alert.auto_resolved());
        assert!(
            !alert.resolve(resolution, later),
            "resolving again changes nothing"
        );
        assert_eq!(
            alert.acknowledge(officer(), later),
            Err(AlertError::AlreadyResolved)
        );
        assert!(matches!(
            ServiceError::from(AlertError::AlreadyResolved),
            ServiceError::FailedPrecondition(_)
        ));
    }

    #[test]
    fn escalation_raises_the_target_once_and_never_on_a_resolved_alert() {
        let mut alert = missed_checkin();
        let later = utc("2026-12-05T01:00:00Z");
        assert_eq!(alert.escalate(later), Some(EscalationTarget::TownshipOffice));
        assert_eq!(alert.escalation_target, EscalationTarget::CountyBureau);
        assert_eq!(alert.escalated_at, Some(later));
        assert_eq!(alert.version, 2);
        assert_eq!(alert.escalate(later), None, "already the county bureau's");
        assert_eq!(alert.version, 2);
        let mut resolved = missed_checkin();
        resolved.resolve(
            Resolution {
                by: officer(),
                note: "已处理".into(),
                reference: None,
            },
            later,
        );
        assert_eq!(resolved.escalate(later), None);
    }

    #[test]
    fn a_move_returns_the_jurisdiction_left() {
        let mut alert = missed_checkin();
        let new = Jurisdiction {
            township_code: "620702002".into(),
            county_code: "620702".into(),
        };
        let previous = alert.move_to(new.clone(), utc("2026-12-05T01:00:00Z"));
        assert_eq!(previous.township_code, "620702001");
        assert_eq!(alert.jurisdiction, new);
        assert_eq!(alert.version, 2);
    }

    #[test]
    fn an_automatic_resolution_names_what_resolved_it() {
        let mut alert = missed_checkin();
        alert.resolve(
            Resolution {
                by: Actor::system(),
                note: "contact restored by a check-in".into(),
                reference: Some("checkin:c1".into()),
            },
            utc("2026-12-05T01:00:00Z"),
        );
        assert!(alert.auto_resolved());
        let resolved = alert.resolved.expect("resolved");
        assert_eq!(resolved.by.role, "system");
        assert_eq!(resolved.reference.as_deref(), Some("checkin:c1"));
    }
}
