//! Which open alerts an event answers: a verified contact answers the lost-contact alerts it
//! comes after; a handover's progress answers the alerts of the step it completed; leaving
//! supervision withdraws everything. The projection resolves what these rules select.

use chrono::{DateTime, Utc};

use super::{
    alert::{Alert, AlertKind},
    rules::RuleId,
    watch::{HandoverSnapshot, HandoverStatus, SuperviseeStatus},
};

/// A verified contact with the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contact {
    pub at: DateTime<Utc>,
    pub in_person: bool,
}

/// Which of a subject's open alerts an event resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answers {
    /// All of them (supervision stopped, the handover closed or moved).
    Every,
    /// Those of one kind (the missing step happened).
    Kind(AlertKind),
    /// Those a verified contact answers (see [`contact_answers`]).
    Contact(Contact),
}

impl Answers {
    pub fn covers(&self, alert: &Alert) -> bool {
        match self {
            // An operational alert says a record has not taken effect; nothing the person
            // does answers that, only its replay (or an operator).
            Answers::Every => !alert.kind.is_operational(),
            Answers::Kind(kind) => alert.kind == *kind,
            Answers::Contact(contact) => contact_answers(alert, *contact),
        }
    }
}

/// Whether a verified contact answers an alert: it must come after the contact the alert's
/// evidence counts from, the alert must be about lost contact (an out-of-area check-in is
/// not answered by checking in again), and a missed in-person contact needs an in-person one.
pub fn contact_answers(alert: &Alert, contact: Contact) -> bool {
    let after_evidence = alert
        .evidence
        .last_contact_at
        .is_none_or(|last| contact.at > last);
    let needs_in_person = alert.rule.id == RuleId::MissedInPerson;
    after_evidence && alert.kind.is_lost_contact() && (!needs_in_person || contact.in_person)
}

/// A resolution an event asks for: what it answers and the note it leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withdrawal {
    pub answers: Answers,
    pub note: String,
}

/// What a supervisee's new status withdraws: everything when supervision stops or pauses.
pub fn status_withdrawal(status: Option<SuperviseeStatus>) -> Option<Withdrawal> {
    let status = status.filter(|status| status.stops_supervision())?;
    Some(Withdrawal {
        answers: Answers::Every,
        note: format!("supervision {status}: alerts withdrawn"),
    })
}

/// What a supervisee's new status answers: once under supervision, the person has reported
/// in, which answers an overdue report-in of a registration pending report-in.
pub fn report_in_answered(status: Option<SuperviseeStatus>) -> Option<Withdrawal> {
    status.filter(|status| status.is_watched())?;
    Some(Withdrawal {
        answers: Answers::Kind(AlertKind::ReportInOverdue),
        note: "the person reported in (报到)".to_owned(),
    })
}

/// What a handover snapshot resolves, in order: everything when it is settled (reported in
/// and, where supervision follows, registered), cancelled or sent to a new destination
/// (deadlines restart there); then the acknowledgement and gate-collection alerts once
/// those steps happened or the person reported in. The 漏管 alert of a person who reported
/// in but whom the registry has not registered stays open.
pub fn handover_withdrawals(snapshot: &HandoverSnapshot, redirected: bool, settled: bool) -> Vec<Withdrawal> {
    let every = |note: &str| Withdrawal {
        answers: Answers::Every,
        note: note.to_owned(),
    };
    let mut withdrawals = Vec::new();
    let reported_in = snapshot.status == HandoverStatus::ReportedIn;
    match snapshot.status {
        HandoverStatus::ReportedIn if settled => withdrawals.push(every("the person reported in (报到)")),
        HandoverStatus::Cancelled => withdrawals.push(every("release notice cancelled")),
        _ if redirected => withdrawals.push(every(
            "destination changed: deadlines restart at the new township",
        )),
        _ => {}
    }
    if snapshot.acknowledged_at.is_some() || reported_in {
        withdrawals.push(Withdrawal {
            answers: Answers::Kind(AlertKind::HandoverNotAcknowledged),
            note: "notice acknowledged".to_owned(),
        });
    }
    if snapshot.gate_collected_at.is_some() || reported_in {
        withdrawals.push(Withdrawal {
            answers: Answers::Kind(AlertKind::GateNotCollected),
            note: if snapshot.gate_collected_at.is_some() {
                "collected at the gate"
            } else {
                "the person reported in (报到)"
            }
            .to_owned(),
        });
    }
    withdrawals
}

/// What the registry's registration of the person released under a handover resolves:
/// everything left of the handover, the 漏管 alert included.
pub fn registration_withdrawal() -> Withdrawal {
    Withdrawal {
        answers: Answers::Every,
        note: "the person is registered in supervision".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use uuid::Uuid;

    use super::*;
    use crate::domain::{
        alert::tests::{missed_checkin, utc},
        policy::{Level, ReleaseCategory, Track},
        rules::{About, for_track, out_of_area},
        watch::tests::home,
    };

    fn contact(at: &str, in_person: bool) -> Contact {
        Contact {
            at: utc(at),
            in_person,
        }
    }

    /// The missed-check-in alert (last contact 26 Nov 02:00 UTC) with another rule's spec.
    fn alert_of(track: Track) -> Alert {
        let spec = for_track(track, About::Supervisee(Level::Strict));
        let mut alert = missed_checkin();
        alert.kind = spec.kind;
        alert.rule.id = spec.rule_id;
        alert
    }

    #[test]
    fn a_later_contact_answers_lost_contact_alerts() {
        let later = contact("2026-11-27T02:00:00Z", false);
        for track in [
            Track::Checkin,
            Track::AbscondingWarning,
            Track::AbscondingRevocation,
        ] {
            assert!(contact_answers(&alert_of(track), later), "{track:?}");
        }
    }

    #[test]
    fn a_contact_before_the_evidence_answers_nothing() {
        let alert = alert_of(Track::Checkin);
        assert!(
            !contact_answers(&alert, contact("2026-11-26T02:00:00Z", true)),
            "same instant"
        );
        assert!(!contact_answers(&alert, contact("2026-11-25T02:00:00Z", true)));
        let without_contact = Alert {
            evidence: crate::domain::alert::Evidence {
                last_contact_at: None,
                ..alert.evidence.clone()
            },
            ..alert
        };
        assert!(contact_answers(
            &without_contact,
            contact("2020-01-01T00:00:00Z", false)
        ));
    }

    #[test]
    fn a_missed_in_person_contact_needs_an_in_person_contact() {
        let alert = alert_of(Track::InPerson);
        assert_eq!(alert.rule.id, RuleId::MissedInPerson);
        assert!(!contact_answers(&alert, contact("2026-11-27T02:00:00Z", false)));
        assert!(contact_answers(&alert, contact("2026-11-27T02:00:00Z", true)));
    }

    #[test]
    fn checking_in_again_does_not_answer_an_out_of_area_alert() {
        let spec = out_of_area();
        let mut alert = missed_checkin();
        alert.kind = spec.kind;
        alert.rule.id = spec.rule_id;
        assert!(!contact_answers(&alert, contact("2026-12-27T02:00:00Z", true)));
        assert!(!Answers::Contact(contact("2026-12-27T02:00:00Z", true)).covers(&alert));
        assert!(Answers::Every.covers(&alert));
        assert!(Answers::Kind(AlertKind::OutOfArea).covers(&alert));
        assert!(!Answers::Kind(AlertKind::GateNotCollected).covers(&alert));
    }

    #[test]
    fn stopping_supervision_withdraws_everything() {
        let withdrawal = status_withdrawal(Some(SuperviseeStatus::Suspended)).expect("withdrawn");
        assert_eq!(withdrawal.answers, Answers::Every);
        assert_eq!(withdrawal.note, "supervision suspended: alerts withdrawn");
        assert_eq!(status_withdrawal(Some(SuperviseeStatus::Absconded)), None);
        assert_eq!(status_withdrawal(None), None);
    }

    fn handover(status: HandoverStatus) -> HandoverSnapshot {
        HandoverSnapshot {
            id: Uuid::nil(),
            subject_id: Uuid::nil().to_string(),
            person_name: "李四".into(),
            prison_id: "P".into(),
            prison_reference: "R".into(),
            category: ReleaseCategory::Parole,
            destination: home(),
            key_target: true,
            status,
            expected_release_date: NaiveDate::from_ymd_opt(2026, 12, 1).expect("date"),
            notified_at: None,
            acknowledged_at: None,
            actual_release_time: None,
            gate_collected_at: None,
            reported_in_at: None,
            version: 1,
        }
    }

    #[test]
    fn handover_progress_answers_its_steps() {
        let notes = |snapshot: &HandoverSnapshot, redirected: bool| -> Vec<(Answers, String)> {
            handover_withdrawals(snapshot, redirected, true)
                .into_iter()
                .map(|w| (w.answers, w.note))
                .collect()
        };
        assert!(notes(&handover(HandoverStatus::Notified), false).is_empty());
        assert_eq!(
            notes(&handover(HandoverStatus::Notified), true),
            [(
                Answers::Every,
                "destination changed: deadlines restart at the new township".to_owned()
            )]
        );
        let collected = HandoverSnapshot {
            acknowledged_at: Some(utc("2026-11-03T02:00:00Z")),
            gate_collected_at: Some(utc("2026-12-01T01:30:00Z")),
            ..handover(HandoverStatus::ReportedIn)
        };
        assert_eq!(
            notes(&collected, true),
            [
                (Answers::Every, "the person reported in (报到)".to_owned()),
                (
                    Answers::Kind(AlertKind::HandoverNotAcknowledged),
                    "notice acknowledged".to_owned()
                ),
                (
                    Answers::Kind(AlertKind::GateNotCollected),
                    "collected at the gate".to_owned()
                ),
            ]
        );
        let unregistered: Vec<_> = handover_withdrawals(&handover(HandoverStatus::ReportedIn), false, false)
            .into_iter()
            .map(|w| w.answers)
            .collect();
        assert_eq!(
            unregistered,
            [
                Answers::Kind(AlertKind::HandoverNotAcknowledged),
                Answers::Kind(AlertKind::GateNotCollected)
            ],
            "the 漏管 alert stays open until the registry registers the person"
        );
        assert_eq!(
            notes(&handover(HandoverStatus::Cancelled), true)[0].1,
            "release notice cancelled",
            "cancellation wins over the new destination"
        );
    }

    #[test]
    fn leaving_supervision_never_withdraws_an_operational_alert() {
        for kind in [AlertKind::DeadLetter, AlertKind::ConsumerStalled] {
            let operational = Alert {
                kind,
                ..missed_checkin()
            };
            assert!(!Answers::Every.covers(&operational), "{kind:?}");
            assert!(!Answers::Contact(contact("2026-12-27T02:00:00Z", true)).covers(&operational));
        }
    }
}
