//! What firing a batch of subjects' due deadlines decides, apart from the database: for each
//! due deadline, the alert it raises (none while its track's alert is still open, or when
//! nothing is known to alert about) and where the deadline moves (`schedule::after_firing`),
//! so no track is left without a deadline. The scheduler reads the batch under its locks,
//! decides here, and writes the decision set-based.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    alert::{Alert, NewAlert},
    compose::{Composer, DueDeadline},
    policy::{Level, Track},
    schedule::{self, Scheduled},
    watch::{HandoverWatch, SuperviseeWatch},
};

/// What is known of the subject a deadline belongs to.
#[derive(Debug, Clone)]
pub enum Watched {
    Supervisee(SuperviseeWatch),
    Handover(HandoverWatch),
}

/// A subject under its row lock, with what firing its deadlines needs.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: Uuid,
    /// `None` when the subject's row is missing.
    pub watched: Option<Watched>,
    /// Its unresolved alerts (before this batch raises any).
    pub open: Vec<Alert>,
    /// Its pending deadlines due by the cutoff.
    pub deadlines: Vec<Scheduled>,
}

/// A missed deadline's alert to raise.
#[derive(Debug, Clone)]
pub struct Missed {
    pub subject_id: Uuid,
    pub track: Track,
    pub draft: NewAlert,
}

/// What a batch does: the alerts to raise and every fired deadline's next row, in the
/// order of the subjects and their deadlines.
#[derive(Debug, Clone, Default)]
pub struct Decision {
    pub alerts: Vec<Missed>,
    pub moved: Vec<(Uuid, Scheduled)>,
    /// Due deadlines with nothing to alert about (the subject's row is missing or its level
    /// unknown): the coverage reconciliation reports what is wrong; the deadline still
    /// moves on so it is not fired again every round.
    pub unexplained: Vec<(Uuid, Track)>,
}

/// Decides what firing `subjects`' due deadlines at `now` does.
pub fn decide(composer: &Composer, subjects: &[Due], now: DateTime<Utc>) -> Decision {
    let mut decision = Decision::default();
    for subject in subjects {
        for row in &subject.deadlines {
            let track = row.deadline.track;
            let (draft, level) = alert_for(composer, subject, row, now);
            match draft {
                None => decision.unexplained.push((subject.id, track)),
                // A recurring track whose alert is still open raises nothing new: the open
                // alert still says the contact is missing.
                Some(_) if schedule::still_alerted(track, &subject.open) => {}
                Some(draft) => decision.alerts.push(Missed {
                    subject_id: subject.id,
                    track,
                    draft,
                }),
            }
            let next = schedule::after_firing(&composer.policy, level, row, now, composer.tz);
            decision.moved.push((subject.id, next));
        }
    }
    decision
}

/// The alert one missed deadline raises, and the supervisee's level its track rolls by.
fn alert_for(
    composer: &Composer,
    subject: &Due,
    row: &Scheduled,
    now: DateTime<Utc>,
) -> (Option<NewAlert>, Option<Level>) {
    let deadline = DueDeadline {
        subject_id: subject.id,
        track: row.deadline.track,
        due_at: row.deadline.due,
        grace_seconds: i64::try_from(row.deadline.grace.as_secs()).unwrap_or(i64::MAX),
        since_at: row.deadline.since,
    };
    match &subject.watched {
        Some(Watched::Supervisee(watch)) => (composer.supervisee_alert(&deadline, watch, now), watch.level),
        Some(Watched::Handover(watch)) => (composer.handover_alert(&deadline, watch), None),
        None => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use chrono_tz::Asia::Shanghai;

    use super::*;
    use crate::domain::{
        alert::{Alert, AlertKind, tests::utc},
        policy::{Level, Policy, ReleaseCategory},
        watch::tests::{handover, supervisee},
    };

    fn composer() -> Composer {
        Composer {
            policy: Policy::default(),
            tz: Shanghai,
        }
    }

    /// A normal-level supervisee's check-in and absconding deadlines from a contact on
    /// 26 Nov, fired on 20 Dec (both passed).
    const CONTACT: &str = "2026-11-26T02:00:00Z";
    const NOW: &str = "2026-12-20T00:00:00Z";

    fn deadlines(contact: &str) -> Vec<Scheduled> {
        let contact = utc(contact);
        Policy::default()
            .deadlines(Level::Normal, contact, contact, Shanghai)
            .into_iter()
            .map(Scheduled::fresh)
            .collect()
    }

    fn due(n: u128, watched: Option<Watched>, open: Vec<Alert>, tracks: &[Track]) -> Due {
        Due {
            id: Uuid::from_u128(n),
            watched,
            open,
            deadlines: deadlines(CONTACT)
                .into_iter()
                .filter(|row| tracks.contains(&row.deadline.track))
                .collect(),
        }
    }

    fn person() -> Option<Watched> {
        Some(Watched::Supervisee(supervisee(Level::Normal, CONTACT)))
    }

    #[test]
    fn each_missed_deadline_of_many_subjects_raises_its_own_alert_and_moves_on() {
        let subjects: Vec<Due> = (1..=3)
            .map(|n| due(n, person(), Vec::new(), &[Track::Checkin]))
            .collect();
        let decision = decide(&composer(), &subjects, utc(NOW));
        assert_eq!(decision.alerts.len(), 3);
        let mut keys: Vec<&str> = decision
            .alerts
            .iter()
            .map(|m| m.draft.dedup_key.as_str())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), 3, "one dedup key per subject's deadline");
        for (n, missed) in (1..=3).zip(&decision.alerts) {
            assert_eq!(missed.subject_id, Uuid::from_u128(n));
            assert_eq!(missed.track, Track::Checkin);
            assert_eq!(missed.draft.spec.kind, AlertKind::MissedCheckin);
            assert_eq!(missed.draft.subject.id, Uuid::from_u128(n).to_string());
        }
        assert_eq!(decision.moved.len(), 3);
        for (id, next) in &decision.moved {
            assert!(subjects.iter().any(|s| s.id == *id));
            assert_eq!(next.fired_at, None, "a recurring track rolls on");
            assert!(next.deadline.fires_at() > utc(NOW), "to a deadline still ahead");
        }
        assert!(decision.unexplained.is_empty());
    }

    #[test]
    fn an_open_alert_of_the_track_raises_nothing_new_but_the_deadline_still_rolls() {
        let open = crate::domain::alert::tests::missed_checkin();
        let subjects = vec![
            due(1, person(), vec![open], &[Track::Checkin]),
            due(2, person(), Vec::new(), &[Track::Checkin]),
        ];
        let decision = decide(&composer(), &subjects, utc(NOW));
        let alerted: Vec<Uuid> = decision.alerts.iter().map(|m| m.subject_id).collect();
        assert_eq!(alerted, vec![Uuid::from_u128(2)]);
        assert_eq!(decision.moved.len(), 2);
        assert_eq!(decision.moved[0].0, Uuid::from_u128(1));
        assert!(decision.moved[0].1.deadline.fires_at() > utc(NOW));
    }

    #[test]
    fn a_one_shot_deadline_stays_marked_fired() {
        let subjects = vec![due(1, person(), Vec::new(), &[Track::AbscondingWarning])];
        let decision = decide(&composer(), &subjects, utc(NOW));
        assert_eq!(decision.alerts.len(), 1);
        assert_eq!(decision.alerts[0].track, Track::AbscondingWarning);
        let (_, next) = decision.moved[0];
        assert_eq!(next.fired_at, Some(utc(NOW)));
        assert_eq!(next.deadline, subjects[0].deadlines[0].deadline);
    }

    #[test]
    fn a_subject_with_nothing_known_raises_nothing_and_its_deadline_still_moves() {
        let unknown_level = Watched::Supervisee(crate::domain::watch::SuperviseeWatch {
            level: None,
            ..supervisee(Level::Normal, CONTACT)
        });
        let subjects = vec![
            due(1, None, Vec::new(), &[Track::Checkin]),
            due(2, Some(unknown_level), Vec::new(), &[Track::Checkin]),
        ];
        let decision = decide(&composer(), &subjects, utc(NOW));
        assert!(decision.alerts.is_empty());
        assert_eq!(
            decision.unexplained,
            vec![
                (Uuid::from_u128(1), Track::Checkin),
                (Uuid::from_u128(2), Track::Checkin)
            ]
        );
        // Without a level the period is unknown: the row is marked fired, not left due.
        assert_eq!(decision.moved.len(), 2);
        assert!(
            decision
                .moved
                .iter()
                .all(|(_, next)| next.fired_at == Some(utc(NOW)))
        );
    }

    #[test]
    fn a_handover_and_a_supervisee_in_one_batch_are_each_alerted() {
        let mut watch = handover(ReleaseCategory::Parole);
        watch.acknowledged_at = None;
        let ack = crate::domain::policy::Deadline {
            track: Track::HandoverAck,
            due: utc("2026-12-01T00:00:00Z"),
            grace: std::time::Duration::ZERO,
            since: utc("2026-11-26T00:00:00Z"),
        };
        let subjects = vec![
            Due {
                id: Uuid::from_u128(9),
                watched: Some(Watched::Handover(watch)),
                open: Vec::new(),
                deadlines: vec![Scheduled::fresh(ack)],
            },
            due(1, person(), Vec::new(), &[Track::Checkin]),
        ];
        let decision = decide(&composer(), &subjects, utc(NOW));
        let kinds: Vec<AlertKind> = decision.alerts.iter().map(|m| m.draft.spec.kind).collect();
        assert_eq!(
            kinds,
            vec![AlertKind::HandoverNotAcknowledged, AlertKind::MissedCheckin]
        );
        assert_eq!(decision.moved.len(), 2);
        assert!(
            decision.moved[0].1.deadline.fires_at() > utc(NOW),
            "the acknowledgement period rolls"
        );
    }
}
