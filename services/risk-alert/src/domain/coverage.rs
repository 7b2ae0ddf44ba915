//! The coverage invariant: every person the registry holds as under supervision (active or
//! absconded) has a live deadline on every track that applies to him, and every handover
//! awaiting report-in has its deadline. These rules compare the source service's truth with
//! what this service watches and say what is broken; the coverage alert names it.

use chrono::{DateTime, Utc};

use super::{
    Jurisdiction,
    alert::{Evidence, Fact, NewAlert, Subject, SubjectKind},
    policy::{Level, Policy, Track},
    rules,
    watch::{HandoverStatus, HandoverWatch, SuperviseeStatus, SuperviseeWatch},
};

/// What the source service holds of a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truth {
    pub subject: Subject,
    pub jurisdiction: Jurisdiction,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

/// How the watch of a subject diverges from the truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gap {
    /// This service has never heard of the subject.
    Unknown,
    /// It applied an older version (events lag or were lost).
    Behind { applied: i64 },
    /// It holds the current version, yet the subject is not watched as it should be.
    NotWatched,
    /// Tracks that apply have no deadline (neither pending nor fired).
    MissingTracks(Vec<Track>),
}

impl Gap {
    /// Whether the gap may be events in flight, which the consumer closes by itself: it is
    /// reported only when it persists.
    pub fn may_be_lag(&self) -> bool {
        matches!(self, Gap::Unknown | Gap::Behind { .. })
    }

    fn reason(&self) -> String {
        match self {
            Gap::Unknown => "risk-alert has no record of the person".to_owned(),
            Gap::Behind { applied } => format!("risk-alert applied record version {applied} only"),
            Gap::NotWatched => "risk-alert does not watch the person".to_owned(),
            Gap::MissingTracks(tracks) => format!(
                "no deadline on track {}",
                tracks
                    .iter()
                    .map(|track| track.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// The tracks the gap leaves uncovered (all of them unless only some are missing).
    fn tracks(&self, all: &[Track]) -> Vec<Track> {
        match self {
            Gap::MissingTracks(tracks) => tracks.clone(),
            _ => all.to_vec(),
        }
    }
}

impl Policy {
    /// The tracks that apply to a watched supervisee of `level`.
    pub fn tracks(&self, level: Level) -> Vec<Track> {
        let mut tracks = vec![Track::Checkin];
        if self.level(level).in_person.is_some() {
            tracks.push(Track::InPerson);
        }
        tracks.extend([Track::AbscondingWarning, Track::AbscondingRevocation]);
        tracks
    }
}

/// Whether a gap that may be lag has lasted long enough to be reported: it was seen in an
/// earlier round (`first_seen` before `now`), and the consumer's progress (`applied_through`:
/// the instant before which it has applied every event, see kit `lag`) has passed the
/// source record's `updated_at` by `tolerance` — the record's event had time to be
/// published and applied. Measured against the consumer's progress, not the wall clock, a
/// broker outage or a backlog is never mistaken for a gap.
pub fn lag_gap_persists(
    first_seen: DateTime<Utc>,
    now: DateTime<Utc>,
    applied_through: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    tolerance: chrono::Duration,
) -> bool {
    first_seen < now && applied_through - updated_at >= tolerance
}

fn missing(required: &[Track], stored: &[Track]) -> Option<Gap> {
    let missing: Vec<Track> = required
        .iter()
        .copied()
        .filter(|track| !stored.contains(track))
        .collect();
    (!missing.is_empty()).then_some(Gap::MissingTracks(missing))
}

/// The gap, if any, between a supervisee the registry holds as under supervision at
/// `version` with `level`, and what is known and stored here.
pub fn supervisee_gap(
    policy: &Policy,
    level: Level,
    version: i64,
    known: Option<&SuperviseeWatch>,
    stored: &[Track],
) -> Option<Gap> {
    let Some(known) = known else {
        return Some(Gap::Unknown);
    };
    if known.version < version {
        return Some(Gap::Behind {
            applied: known.version,
        });
    }
    if !known.status.is_some_and(SuperviseeStatus::is_watched) || known.level.is_none() {
        return Some(Gap::NotWatched);
    }
    missing(&policy.tracks(known.level.unwrap_or(level)), stored)
}

/// The tracks a handover awaiting report-in must have: the report-in, and the
/// acknowledgement while the notice is not acknowledged.
pub fn handover_tracks(status: HandoverStatus) -> Vec<Track> {
    match status {
        HandoverStatus::Notified => vec![Track::HandoverAck, Track::ReportIn],
        _ => vec![Track::ReportIn],
    }
}

/// The gap, if any, between a handover the handover service holds as awaiting report-in
/// at `version` and what is known and stored here.
pub fn handover_gap(version: i64, known: Option<&HandoverWatch>, stored: &[Track]) -> Option<Gap> {
    let Some(known) = known else {
        return Some(Gap::Unknown);
    };
    if known.version < version {
        return Some(Gap::Behind {
            applied: known.version,
        });
    }
    if known.is_settled() || known.category.is_none() {
        return Some(Gap::NotWatched);
    }
    missing(
        &handover_tracks(known.status.unwrap_or(HandoverStatus::Notified)),
        stored,
    )
}

/// The coverage-gap alert: about the person, to the township and county where the source
/// service supervises him, naming the broken tracks. One per gap found: `found_at` is part
/// of the dedup key (the reconciliation raises none while one is open for the subject).
pub fn gap_alert(truth: &Truth, gap: &Gap, all_tracks: &[Track], found_at: DateTime<Utc>) -> NewAlert {
    let tracks: Vec<&str> = gap
        .tracks(all_tracks)
        .iter()
        .map(|track| track.as_str())
        .collect();
    let kind = match truth.subject.kind {
        SubjectKind::Supervisee => "supervisee",
        SubjectKind::Handover => "handover",
    };
    NewAlert {
        spec: rules::coverage_gap(),
        dedup_key: format!(
            "coverage_gap:{}:{}",
            truth.subject.id,
            found_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ),
        subject: truth.subject.clone(),
        jurisdiction: truth.jurisdiction.clone(),
        deadline: found_at,
        evidence: Evidence {
            last_contact_at: None,
            grace_period_seconds: 0,
            facts: vec![
                Fact {
                    key: "broken_tracks".to_owned(),
                    value: tracks.join(","),
                },
                Fact {
                    key: "reason".to_owned(),
                    value: gap.reason(),
                },
                Fact {
                    key: "subject_kind".to_owned(),
                    value: kind.to_owned(),
                },
                Fact {
                    key: "source_version".to_owned(),
                    value: truth.version.to_string(),
                },
            ],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        alert::{AlertKind, tests::utc},
        policy::ReleaseCategory,
        watch::tests::{handover, home, supervisee},
    };

    #[test]
    fn a_watched_supervisee_needs_every_track_of_his_level() {
        let policy = Policy::default();
        let known = supervisee(Level::Strict, "2026-11-26T02:00:00Z");
        let all = policy.tracks(Level::Strict);
        assert_eq!(
            supervisee_gap(&policy, Level::Strict, 1, Some(&known), &all),
            None
        );
        assert_eq!(
            supervisee_gap(&policy, Level::Strict, 1, Some(&known), &all[..1]),
            Some(Gap::MissingTracks(all[1..].to_vec()))
        );
        assert_eq!(policy.tracks(Level::Normal).len(), 3, "no in-person track");
    }

    #[test]
    fn unknown_or_older_records_may_be_lag_but_a_current_unwatched_one_is_not() {
        let policy = Policy::default();
        let known = supervisee(Level::Normal, "2026-11-26T02:00:00Z");
        let unknown = supervisee_gap(&policy, Level::Normal, 1, None, &[]).expect("gap");
        assert!(unknown.may_be_lag());
        let behind = supervisee_gap(&policy, Level::Normal, 2, Some(&known), &[]).expect("gap");
        assert_eq!(behind, Gap::Behind { applied: 1 });
        let suspended = SuperviseeWatch {
            status: Some(SuperviseeStatus::Suspended),
            ..known
        };
        let not_watched = supervisee_gap(&policy, Level::Normal, 1, Some(&suspended), &[]).expect("gap");
        assert_eq!(not_watched, Gap::NotWatched);
        assert!(!not_watched.may_be_lag());
    }

    #[test]
    fn a_possible_lag_gap_is_reported_only_once_the_consumer_has_passed_the_record() {
        let updated = utc("2026-11-30T02:00:00Z");
        let tolerance = chrono::Duration::seconds(30);
        let first_seen = utc("2026-11-30T02:00:40Z");
        let now = utc("2026-11-30T02:01:00Z");
        // The consumer is past the record by the tolerance: the event should have been applied.
        assert!(lag_gap_persists(first_seen, now, now, updated, tolerance));
        // A broker outage: the wall clock moved on, the consumer's progress did not.
        let stuck = utc("2026-11-30T02:00:10Z");
        assert!(!lag_gap_persists(first_seen, now, stuck, updated, tolerance));
        // Seen for the first time in this round: wait for the next.
        assert!(!lag_gap_persists(now, now, now, updated, tolerance));
    }

    #[test]
    fn a_handover_awaiting_report_in_needs_its_report_in_deadline() {
        let released = handover(ReleaseCategory::Parole);
        assert_eq!(handover_gap(3, Some(&released), &[Track::ReportIn]), None);
        assert_eq!(
            handover_gap(3, Some(&released), &[]),
            Some(Gap::MissingTracks(vec![Track::ReportIn]))
        );
        let notified = HandoverWatch {
            status: Some(HandoverStatus::Notified),
            ..released.clone()
        };
        assert_eq!(
            handover_gap(3, Some(&notified), &[Track::ReportIn]),
            Some(Gap::MissingTracks(vec![Track::HandoverAck]))
        );
        assert_eq!(
            handover_gap(4, Some(&released), &[Track::ReportIn]),
            Some(Gap::Behind { applied: 3 })
        );
    }

    #[test]
    fn the_gap_alert_names_township_and_tracks() {
        let truth = Truth {
            subject: Subject {
                kind: SubjectKind::Supervisee,
                id: "s1".into(),
                name: "张三".into(),
            },
            jurisdiction: home(),
            version: 4,
            updated_at: utc("2026-11-30T02:00:00Z"),
        };
        let found = utc("2026-11-30T03:00:00Z");
        let alert = gap_alert(&truth, &Gap::MissingTracks(vec![Track::Checkin]), &[], found);
        assert_eq!(alert.spec.kind, AlertKind::CoverageGap);
        assert_eq!(alert.jurisdiction, home());
        let fact = |key: &str| {
            alert
                .evidence
                .facts
                .iter()
                .find(|fact| fact.key == key)
                .map(|fact| fact.value.clone())
        };
        assert_eq!(fact("broken_tracks").as_deref(), Some("checkin"));
        assert_eq!(fact("source_version").as_deref(), Some("4"));
        let unknown = gap_alert(&truth, &Gap::Unknown, &[Track::Checkin, Track::InPerson], found);
        assert_eq!(unknown.evidence.facts[0].value, "checkin,in_person");
    }
}
