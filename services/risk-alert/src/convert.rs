//! Domain values ↔ protobuf messages: the alert as stored (its body), published in `alert.*`
//! events and returned by the API; jurisdictions and actors; endpoint and delivery rows in
//! responses. An alert read back from its proto is the alert that was written.

use mesh_kit::proto_time::{from_timestamp, to_timestamp};
use mesh_proto::{
    alert::{self as pb, alert_subject::Id as SubjectId},
    common,
};
use prost::Message;

use crate::{
    domain::{
        Actor, Jurisdiction,
        alert::{
            Alert, AlertKind, AlertSeverity, AlertStatus, EscalationTarget, Evidence, Fact,
            RecommendedMeasure, Resolved, Rule, Stamp, Subject, SubjectKind,
        },
        notice::Step,
        rules::RuleId,
    },
    store::{deliveries::DeliveryRow, webhooks::EndpointRow},
};

pub fn jurisdiction_to_proto(jurisdiction: &Jurisdiction) -> common::Jurisdiction {
    common::Jurisdiction {
        township_code: jurisdiction.township_code.clone(),
        county_code: jurisdiction.county_code.clone(),
    }
}

/// A jurisdiction from a message; an absent one is empty (and then fails validation).
pub fn jurisdiction_from_proto(jurisdiction: Option<&common::Jurisdiction>) -> Jurisdiction {
    jurisdiction.map_or_else(Jurisdiction::default, |jurisdiction| Jurisdiction {
        township_code: jurisdiction.township_code.clone(),
        county_code: jurisdiction.county_code.clone(),
    })
}

pub fn actor_to_proto(actor: &Actor) -> common::Actor {
    common::Actor {
        subject: actor.subject.clone(),
        role: actor.role.clone(),
    }
}

fn actor_from_proto(actor: common::Actor) -> Actor {
    Actor {
        subject: actor.subject,
        role: actor.role,
    }
}

/// The alert as clients, events and the stored body carry it.
pub fn alert_to_proto(alert: &Alert) -> pb::Alert {
    let time = |time| Some(to_timestamp(time));
    pb::Alert {
        alert_id: alert.id.to_string(),
        kind: alert.kind.to_proto() as i32,
        severity: alert.severity.to_proto() as i32,
        status: alert.status.to_proto() as i32,
        subject: Some(pb::AlertSubject {
            id: Some(match alert.subject.kind {
                SubjectKind::Supervisee => SubjectId::SuperviseeId(alert.subject.id.clone()),
                SubjectKind::Handover => SubjectId::HandoverId(alert.subject.id.clone()),
            }),
            name: alert.subject.name.clone(),
        }),
        jurisdiction: Some(jurisdiction_to_proto(&alert.jurisdiction)),
        escalation_target: alert.escalation_target.to_proto() as i32,
        recommended_measure: alert.recommended_measure.to_proto() as i32,
        rule: Some(pb::AlertRule {
            rule_id: alert.rule.id.to_string(),
            description: alert.rule.description.clone(),
        }),
        legal_basis: alert.legal_basis.clone(),
        evidence: Some(pb::AlertEvidence {
            last_contact_at: alert.evidence.last_contact_at.map(to_timestamp),
            grace_period_seconds: alert.evidence.grace_period_seconds,
            facts: alert
                .evidence
                .facts
                .iter()
                .map(|fact| pb::EvidenceFact {
                    key: fact.key.clone(),
                    value: fact.value.clone(),
                })
                .collect(),
        }),
        raised_at: time(alert.raised_at),
        deadline: time(alert.deadline),
        dedup_key: alert.dedup_key.clone(),
        acknowledged_by: alert.acknowledged.as_ref().map(|stamp| actor_to_proto(&stamp.by)),
        acknowledged_at: alert.acknowledged.as_ref().map(|stamp| to_timestamp(stamp.at)),
        resolved_by: alert
            .resolved
            .as_ref()
            .map(|resolved| actor_to_proto(&resolved.by)),
        resolved_at: alert.resolved.as_ref().map(|resolved| to_timestamp(resolved.at)),
        resolution_note: alert
            .resolved
            .as_ref()
            .map(|resolved| resolved.note.clone())
            .unwrap_or_default(),
        auto_resolved: alert.auto_resolved(),
        resolved_by_reference: alert
            .resolved
            .as_ref()
            .and_then(|resolved| resolved.reference.clone())
            .unwrap_or_default(),
        escalated_at: alert.escalated_at.map(to_timestamp),
        updated_at: time(alert.updated_at),
        version: alert.version,
    }
}

/// Why a stored or received alert message is not an alert this service wrote.
#[derive(Debug, thiserror::Error)]
#[error("not a valid alert: {0}")]
pub struct InvalidAlert(&'static str);

/// The alert a message carries.
pub fn alert_from_proto(alert: pb::Alert) -> Result<Alert, InvalidAlert> {
    let time = |time: Option<prost_types::Timestamp>, what| {
        time.as_ref().and_then(from_timestamp).ok_or(InvalidAlert(what))
    };
    let optional_time = |time: Option<prost_types::Timestamp>| time.as_ref().and_then(from_timestamp);
    let subject = alert.subject.ok_or(InvalidAlert("subject"))?;
    let (kind, id) = match subject.id.ok_or(InvalidAlert("subject.id"))? {
        SubjectId::SuperviseeId(id) => (SubjectKind::Supervisee, id),
        SubjectId::HandoverId(id) => (SubjectKind::Handover, id),
    };
    let rule = alert.rule.ok_or(InvalidAlert("rule"))?;
    let evidence = alert.evidence.unwrap_or_default();
    let acknowledged = match (alert.acknowledged_by, optional_time(alert.acknowledged_at)) {
        (Some(by), Some(at)) => Some(Stamp {
            by: actor_from_proto(by),
            at,
        }),
        _ => None,
    };
    let resolved = match (alert.resolved_by, optional_time(alert.resolved_at)) {
        (Some(by), Some(at)) => Some(Resolved {
            by: actor_from_proto(by),
            at,
            note: alert.resolution_note,
            reference: alert.auto_resolved.then_some(alert.resolved_by_reference),
        }),
        _ => None,
    };
    Ok(Alert {
        id: alert.alert_id.parse().map_err(|_| InvalidAlert("alert_id"))?,
        kind: AlertKind::from_proto(alert.kind).ok_or(InvalidAlert("kind"))?,
        severity: AlertSeverity::from_proto(alert.severity).ok_or(InvalidAlert("severity"))?,
        status: AlertStatus::from_proto(alert.status).ok_or(InvalidAlert("status"))?,
        subject: Subject {
            kind,
            id,
            name: subject.name,
        },
        jurisdiction: jurisdiction_from_proto(alert.jurisdiction.as_ref()),
        escalation_target: EscalationTarget::from_proto(alert.escalation_target)
            .ok_or(InvalidAlert("escalation_target"))?,
        recommended_measure: RecommendedMeasure::from_proto(alert.recommended_measure)
            .ok_or(InvalidAlert("recommended_measure"))?,
        rule: Rule {
            id: RuleId::parse(&rule.rule_id).ok_or(InvalidAlert("rule.rule_id"))?,
            description: rule.description,
        },
        legal_basis: alert.legal_basis,
        evidence: Evidence {
            last_contact_at: optional_time(evidence.last_contact_at),
            grace_period_seconds: evidence.grace_period_seconds,
            facts: evidence
                .facts
                .into_iter()
                .map(|fact| Fact {
                    key: fact.key,
                    value: fact.value,
                })
                .collect(),
        },
        raised_at: time(alert.raised_at, "raised_at")?,
        deadline: time(alert.deadline, "deadline")?,
        dedup_key: alert.dedup_key,
        acknowledged,
        resolved,
        escalated_at: optional_time(alert.escalated_at),
        updated_at: time(alert.updated_at, "updated_at")?,
        version: alert.version,
    })
}

/// The stored body of an alert: its encoded message.
pub fn alert_body(alert: &Alert) -> Vec<u8> {
    alert_to_proto(alert).encode_to_vec()
}

/// The alert a stored body holds; `None` (logged) for a body that is not one.
pub fn alert_from_body(body: &[u8]) -> Option<Alert> {
    let decoded = pb::Alert::decode(body)
        .map_err(|error| error.to_string())
        .and_then(|alert| alert_from_proto(alert).map_err(|error| error.to_string()));
    match decoded {
        Ok(alert) => Some(alert),
        Err(error) => {
            tracing::error!(error = %error, "undecodable stored alert");
            None
        }
    }
}

/// The payload of the `alert.*` event of a lifecycle step.
pub fn event_payload(step: &Step<'_>, alert: &Alert) -> Vec<u8> {
    let alert = Some(alert_to_proto(alert));
    let actor = step.actor().map(actor_to_proto);
    match *step {
        Step::Raised => pb::AlertRaised { alert }.encode_to_vec(),
        Step::Acknowledged { .. } => pb::AlertAcknowledged { alert, actor }.encode_to_vec(),
        Step::Resolved { .. } => pb::AlertResolved { alert, actor }.encode_to_vec(),
        Step::Escalated { previous, reason } => pb::AlertEscalated {
            alert,
            previous_target: previous.to_proto() as i32,
            reason: reason.to_owned(),
        }
        .encode_to_vec(),
        Step::Transferred { from } => pb::AlertTransferred {
            alert,
            previous_jurisdiction: Some(jurisdiction_to_proto(from)),
        }
        .encode_to_vec(),
    }
}

pub fn endpoint_to_proto(row: EndpointRow) -> pb::WebhookEndpoint {
    pb::WebhookEndpoint {
        endpoint_id: row.endpoint_id.to_string(),
        jurisdiction: Some(common::Jurisdiction {
            township_code: row.township_code,
            county_code: row.county_code,
        }),
        url: row.url,
        description: row.description,
        registered_by: Some(common::Actor {
            subject: row.registered_by_subject,
            role: row.registered_by_role,
        }),
        created_at: Some(to_timestamp(row.created_at)),
        updated_at: Some(to_timestamp(row.updated_at)),
        max_batch_size: row.max_batch_size.unsigned_abs(),
    }
}

pub fn delivery_to_proto(alert_id: &str, row: DeliveryRow) -> pb::DeliveryAttempt {
    let attempt = row.attempt;
    pb::DeliveryAttempt {
        alert_id: alert_id.to_owned(),
        notification_id: row.notification_id.to_string(),
        event_type: row.event_type,
        endpoint_id: row.endpoint_id.to_string(),
        url: row.url,
        attempt_number: attempt.attempt_number as u32,
        attempted_at: Some(to_timestamp(attempt.attempted_at)),
        http_status: attempt.http_status as u32,
        outcome: if attempt.delivered {
            pb::DeliveryOutcome::Delivered
        } else if attempt.gave_up {
            pb::DeliveryOutcome::GivenUp
        } else {
            pb::DeliveryOutcome::Failed
        } as i32,
        error: attempt.error,
        // Only with a response: how long a failed connection took would tell a closed port
        // (refused at once) from an absent host (timed out), as its error does not.
        duration_ms: if attempt.http_status == 0 {
            0
        } else {
            attempt.duration_ms as u32
        },
        next_attempt_at: attempt.next_attempt_at.map(to_timestamp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alert::tests::{missed_checkin, utc};

    #[test]
    fn an_alert_reads_back_as_written_through_every_step() {
        let mut alert = missed_checkin();
        let round_trip = |alert: &Alert| {
            let body = alert_body(alert);
            let back = alert_from_body(&body).expect("decodes");
            assert_eq!(&back, alert);
            assert_eq!(alert_body(&back), body, "byte for byte");
        };
        round_trip(&alert);
        alert
            .acknowledge(
                Actor {
                    subject: "officer-1".into(),
                    role: "officer".into(),
                },
                utc("2026-12-05T01:00:00Z"),
            )
            .expect("acknowledged");
        round_trip(&alert);
        alert.resolve(
            crate::domain::alert::Resolution {
                by: Actor::system(),
                note: "contact restored by a check-in".into(),
                reference: Some("checkin:c1".into()),
            },
            utc("2026-12-05T02:00:00.123456Z"),
        );
        round_trip(&alert);
        let proto = alert_to_proto(&alert);
        assert!(proto.auto_resolved);
        assert_eq!(proto.resolved_by_reference, "checkin:c1");
        assert_eq!(
            proto.rule.as_ref().expect("rule").rule_id,
            "checkin.missed.normal"
        );
        assert_eq!(proto.kind(), pb::AlertKind::MissedCheckin);
    }

    #[test]
    fn a_message_that_is_no_alert_is_refused() {
        assert!(alert_from_body(b"\xff\xff").is_none());
        let mut proto = alert_to_proto(&missed_checkin());
        proto.rule = Some(pb::AlertRule {
            rule_id: "no.such.rule".into(),
            description: String::new(),
        });
        assert!(alert_from_proto(proto).is_err());
    }
}
