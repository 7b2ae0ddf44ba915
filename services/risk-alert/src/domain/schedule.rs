//! How a subject's stored deadlines move, so that no track is ever left without one: a
//! recomputation (after any event) keeps the rows it would rebuild anyway, so a rolled or
//! fired deadline is not reset to one already missed; a fired deadline on a recurring track
//! is rolled forward to its next period, and on a one-shot track it stays, marked fired.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::{
    alert::{Alert, AlertKind},
    policy::{Deadline, Level, Policy, Track},
    rules::RuleId,
};

/// A deadline as stored: where it stands now (`deadline`, rolled forward after each miss),
/// the deadline its contact set before any rolling (`origin_due`), and when a one-shot
/// track fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    pub deadline: Deadline,
    pub origin_due: DateTime<Utc>,
    pub fired_at: Option<DateTime<Utc>>,
}

impl Scheduled {
    /// A freshly computed deadline, not yet missed.
    pub fn fresh(deadline: Deadline) -> Self {
        Self {
            deadline,
            origin_due: deadline.due,
            fired_at: None,
        }
    }

    /// Whether this row was computed from the same contact and rule as `computed`.
    fn same_origin(&self, computed: &Deadline) -> bool {
        self.deadline.track == computed.track
            && self.origin_due == computed.due
            && self.deadline.since == computed.since
            && self.deadline.grace == computed.grace
    }
}

/// The rows a subject keeps after its deadlines were computed again: a stored row from the
/// same contact and rule stays as it is (it may have rolled forward or fired); anything
/// else is the computed deadline afresh. Tracks that no longer apply are dropped.
pub fn merge(stored: &[Scheduled], computed: &[Deadline]) -> Vec<Scheduled> {
    computed
        .iter()
        .map(|deadline| {
            stored
                .iter()
                .find(|row| row.same_origin(deadline))
                .copied()
                .unwrap_or_else(|| Scheduled::fresh(*deadline))
        })
        .collect()
}

/// How far apart a recurring track's periods are; `None` for one-shot tracks, whose alert
/// stays open until answered (absconding thresholds, gate collection, report-in).
fn period(policy: &Policy, level: Option<Level>, track: Track) -> Option<super::policy::Span> {
    match track {
        Track::Checkin => level.map(|level| policy.level(level).checkin.interval),
        Track::InPerson => level.and_then(|level| policy.level(level).in_person.map(|o| o.interval)),
        Track::HandoverAck => Some(policy.handover.ack_period),
        Track::AbscondingWarning
        | Track::AbscondingRevocation
        | Track::GateCollection
        | Track::ReportIn
        | Track::PendingReportIn => None,
    }
}

/// Most periods a recurring track is rolled past in one step (after a long outage the next
/// live deadline is the first one still ahead; the missed one has its alert).
const MAX_ROLLS: usize = 10_000;

/// What a deadline becomes once it fired at `now`: on a recurring track the next period
/// still ahead of `now`, counted from the missed deadline, with the same contact as
/// evidence; on a one-shot track the same row, marked fired.
pub fn after_firing(
    policy: &Policy,
    level: Option<Level>,
    fired: &Scheduled,
    now: DateTime<Utc>,
    tz: Tz,
) -> Scheduled {
    let Some(period) = period(policy, level, fired.deadline.track) else {
        return Scheduled {
            fired_at: Some(now),
            ..*fired
        };
    };
    let mut next = fired.deadline;
    for _ in 0..MAX_ROLLS {
        next.due = period.following(next.due, tz);
        if next.fires_at() > now {
            break;
        }
    }
    Scheduled {
        deadline: next,
        origin_due: fired.origin_due,
        fired_at: None,
    }
}

/// Whether an alert of `track` is still open among a subject's open alerts: a rolled
/// deadline of a recurring track then raises nothing new (the open alert still says the
/// contact is missing, and the absconding thresholds escalate it); once a person resolved
/// it, the next missed period is alerted again.
pub fn still_alerted(track: Track, open: &[Alert]) -> bool {
    open.iter().any(|alert| match track {
        Track::Checkin => matches!(alert.rule.id, RuleId::MissedCheckin(_)),
        Track::InPerson => alert.rule.id == RuleId::MissedInPerson,
        Track::HandoverAck => alert.kind == AlertKind::HandoverNotAcknowledged,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono_tz::Asia::Shanghai;

    use super::*;
    use crate::domain::{
        alert::tests::utc,
        policy::{HandoverFacts, ReleaseCategory},
    };

    fn normal_deadlines(contact: &str) -> Vec<Deadline> {
        let contact = utc(contact);
        Policy::default().deadlines(Level::Normal, contact, contact, Shanghai)
    }

    #[test]
    fn a_missed_checkin_rolls_to_the_next_period_with_the_same_evidence() {
        let policy = Policy::default();
        let rows: Vec<_> = normal_deadlines("2026-11-26T02:00:00Z")
            .into_iter()
            .map(Scheduled::fresh)
            .collect();
        let checkin = rows[0];
        // Due end of 3 Dec local, fires a day later; the next period ends a week after.
        let fired_at = checkin.deadline.fires_at();
        let next = after_firing(&policy, Some(Level::Normal), &checkin, fired_at, Shanghai);
        assert_eq!(next.deadline.due, utc("2026-12-10T16:00:00Z"));
        assert_eq!(
            next.deadline.since, checkin.deadline.since,
            "evidence keeps the contact"
        );
        assert_eq!(next.origin_due, checkin.origin_due);
        assert_eq!(next.fired_at, None);
        assert!(next.deadline.fires_at() > fired_at);
    }

    #[test]
    fn after_an_outage_the_next_deadline_is_the_first_still_ahead() {
        let policy = Policy::default();
        let checkin = Scheduled::fresh(normal_deadlines("2026-11-26T02:00:00Z")[0]);
        let now = utc("2027-01-20T00:00:00Z");
        let next = after_firing(&policy, Some(Level::Normal), &checkin, now, Shanghai);
        assert!(next.deadline.fires_at() > now);
        assert!(next.deadline.fires_at() - now <= chrono::Duration::days(8));
    }

    #[test]
    fn one_shot_tracks_stay_marked_fired() {
        let policy = Policy::default();
        let warning = Scheduled::fresh(normal_deadlines("2026-11-26T02:00:00Z")[1]);
        assert_eq!(warning.deadline.track, Track::AbscondingWarning);
        let now = warning.deadline.fires_at();
        let fired = after_firing(&policy, Some(Level::Normal), &warning, now, Shanghai);
        assert_eq!(fired.fired_at, Some(now));
        assert_eq!(fired.deadline, warning.deadline);
        let report_in = Scheduled::fresh(
            policy.handover.deadlines(
                &HandoverFacts {
                    category: ReleaseCategory::Parole,
                    key_target: false,
                    awaiting_ack_since: None,
                    release: utc("2026-12-01T01:00:00Z"),
                    release_confirmed: true,
                    gate_collected: false,
                },
                Shanghai,
            )[0],
        );
        let fired = after_firing(&policy, None, &report_in, now, Shanghai);
        assert_eq!(fired.fired_at, Some(now), "the 漏管 alert stays the watch");
    }

    #[test]
    fn an_unacknowledged_notice_is_reminded_every_period() {
        let policy = Policy::default();
        let since = utc("2026-11-02T02:00:00Z");
        let ack = Scheduled::fresh(Deadline {
            track: Track::HandoverAck,
            due: policy.handover.ack_period.after(since, Shanghai),
            grace: Duration::ZERO,
            since,
        });
        let next = after_firing(&policy, None, &ack, ack.deadline.fires_at(), Shanghai);
        assert_eq!(next.fired_at, None);
        assert!(next.deadline.due > ack.deadline.due);
    }

    #[test]
    fn recomputing_from_the_same_contact_keeps_rolled_and_fired_rows() {
        let policy = Policy::default();
        let computed = normal_deadlines("2026-11-26T02:00:00Z");
        let mut stored: Vec<_> = computed.iter().copied().map(Scheduled::fresh).collect();
        let now = stored[0].deadline.fires_at();
        stored[0] = after_firing(&policy, Some(Level::Normal), &stored[0], now, Shanghai);
        stored[1] = after_firing(&policy, Some(Level::Normal), &stored[1], now, Shanghai);
        assert_eq!(merge(&stored, &computed), stored);
    }

    #[test]
    fn a_new_contact_or_level_replaces_the_rows() {
        let policy = Policy::default();
        let computed = normal_deadlines("2026-11-26T02:00:00Z");
        let mut stored: Vec<_> = computed.iter().copied().map(Scheduled::fresh).collect();
        stored[0] = after_firing(
            &policy,
            Some(Level::Normal),
            &stored[0],
            utc("2026-12-05T00:00:00Z"),
            Shanghai,
        );
        let later = normal_deadlines("2026-12-06T02:00:00Z");
        assert_eq!(
            merge(&stored, &later),
            later.iter().copied().map(Scheduled::fresh).collect::<Vec<_>>()
        );
        let contact = utc("2026-11-26T02:00:00Z");
        let strict = policy.deadlines(Level::Strict, contact, contact, Shanghai);
        let merged = merge(&stored, &strict);
        assert_eq!(merged.len(), 4, "the in-person track joins");
        assert_eq!(
            merged[0],
            Scheduled::fresh(strict[0]),
            "a stricter period is not kept"
        );
        assert_eq!(merged[2], stored[1], "the absconding threshold is the same");
    }

    #[test]
    fn a_rolled_deadline_is_not_alerted_again_while_its_alert_is_open() {
        let open = crate::domain::alert::tests::missed_checkin();
        assert!(still_alerted(Track::Checkin, std::slice::from_ref(&open)));
        assert!(!still_alerted(Track::InPerson, std::slice::from_ref(&open)));
        assert!(!still_alerted(
            Track::AbscondingWarning,
            std::slice::from_ref(&open)
        ));
        assert!(
            !still_alerted(Track::Checkin, &[]),
            "resolved: the next period alerts"
        );
    }
}
