//! What an alert says. For a missed deadline or a flagged check-in: the rule that fired and
//! its legal basis, whom it is about and who must act, the recommended measure, the missed
//! deadline, the last contact and the grace it was counted with, the facts behind it, and
//! the dedup key that makes it exactly one alert. Local times are shown in the office's
//! time zone.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use mesh_proto::checkin as checkin_pb;
use uuid::Uuid;

use super::{
    alert::{AlertKind, Evidence, Fact, NewAlert, Subject, SubjectKind},
    policy::{Policy, Track},
    rules::{self, About},
    watch::{Checkin, HandoverWatch, SuperviseeWatch},
};

/// A deadline whose time (due + grace) has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueDeadline {
    pub subject_id: Uuid,
    pub track: Track,
    pub due_at: DateTime<Utc>,
    pub grace_seconds: i64,
    /// The contact it counted from.
    pub since_at: DateTime<Utc>,
}

/// Writes alerts under one policy and time zone.
#[derive(Debug, Clone)]
pub struct Composer {
    pub policy: Policy,
    pub tz: Tz,
}

impl Composer {
    /// The alert a supervisee's missed deadline raises; `None` while the supervisee's level
    /// is unknown. A missed check-in recommends the measure the time without contact calls
    /// for (admonition, then warning, then revocation proposal).
    pub fn supervisee_alert(
        &self,
        deadline: &DueDeadline,
        watch: &SuperviseeWatch,
        now: DateTime<Utc>,
    ) -> Option<NewAlert> {
        let level = watch.level?;
        let track = deadline.track;
        let mut spec = rules::for_track(track, About::Supervisee(level));
        if matches!(track, Track::Checkin | Track::InPerson) {
            spec.measure = rules::measure_for_lost_contact(&self.policy, deadline.since_at, now, self.tz);
        }
        let level_policy = self.policy.level(level);
        let interval = match track {
            Track::Checkin => level_policy.checkin.interval.to_string(),
            Track::InPerson => level_policy
                .in_person
                .map(|obligation| obligation.interval.to_string())
                .unwrap_or_default(),
            Track::AbscondingWarning => self.policy.absconding_warning.to_string(),
            Track::PendingReportIn => self.policy.report_in_direct.to_string(),
            _ => self.policy.absconding_revocation.to_string(),
        };
        let mut facts = vec![
            fact("supervision_level", level.as_str()),
            fact(
                "status",
                watch.status.map(|status| status.as_str()).unwrap_or_default(),
            ),
            fact("required_interval", interval),
            fact("deadline_local", self.local(deadline.due_at)),
        ];
        if let Some(checkin_id) = &watch.last_checkin_id {
            facts.push(fact("last_checkin_id", checkin_id));
        }
        let subject_id = deadline.subject_id.to_string();
        Some(NewAlert {
            dedup_key: rules::deadline_dedup_key(
                track,
                spec.kind,
                &subject_id,
                deadline.due_at,
                watch.episode,
            ),
            spec,
            subject: Subject {
                kind: SubjectKind::Supervisee,
                id: subject_id,
                name: watch.name.clone(),
            },
            jurisdiction: watch.jurisdiction.clone(),
            deadline: deadline.due_at,
            evidence: Evidence {
                last_contact_at: Some(deadline.since_at),
                grace_period_seconds: deadline.grace_seconds,
                facts,
            },
        })
    }

    /// The alert a handover's missed deadline raises; `None` once the handover is closed or
    /// when its category is unknown.
    pub fn handover_alert(&self, deadline: &DueDeadline, watch: &HandoverWatch) -> Option<NewAlert> {
        let category = watch.category?;
        if watch.is_settled() {
            return None;
        }
        let spec = rules::for_track(deadline.track, About::Handover(category));
        let mut facts = vec![
            fact("release_category", category.as_str()),
            fact(
                "prison_reference",
                format!("{} / {}", watch.prison_id, watch.prison_reference),
            ),
            fact("expected_release_date", watch.expected_release_date.to_string()),
            fact("deadline_local", self.local(deadline.due_at)),
            fact("key_assistance_target", watch.key_target.to_string()),
        ];
        if let Some(released) = watch.actual_release_time {
            facts.push(fact("released_at_local", self.local(released)));
        }
        if deadline.track == Track::ReportIn {
            facts.push(fact(
                "report_in_period",
                self.policy.handover.report_in(category).to_string(),
            ));
        }
        let subject_id = deadline.subject_id.to_string();
        Some(NewAlert {
            dedup_key: rules::deadline_dedup_key(deadline.track, spec.kind, &subject_id, deadline.due_at, 1),
            spec,
            subject: Subject {
                kind: SubjectKind::Handover,
                id: subject_id,
                name: watch.person_name.clone(),
            },
            jurisdiction: watch.jurisdiction.clone(),
            deadline: deadline.due_at,
            evidence: Evidence {
                // For a handover the last "contact" is the release (or the notice).
                last_contact_at: Some(deadline.since_at),
                grace_period_seconds: deadline.grace_seconds,
                facts,
            },
        })
    }

    fn local(&self, time: DateTime<Utc>) -> String {
        time.with_timezone(&self.tz)
            .format("%Y-%m-%d %H:%M:%S %Z")
            .to_string()
    }
}

/// The alert a check-in raises when it was made outside the permitted area: one per
/// check-in, dated by the device's time. `name` is the supervisee's, when known.
pub fn out_of_area_alert(checkin: &Checkin, name: String) -> Option<NewAlert> {
    let area = checkin.out_of_area?;
    let spec = rules::out_of_area();
    // The method as clients know it (its protobuf value name).
    let method = checkin
        .method
        .map_or(checkin_pb::CheckinMethod::Unspecified, |method| method.to_proto());
    Some(NewAlert {
        dedup_key: format!(
            "{}:{}:{}",
            AlertKind::OutOfArea.as_str(),
            checkin.subject_id,
            checkin.checkin_id
        ),
        spec,
        subject: Subject {
            kind: SubjectKind::Supervisee,
            id: checkin.subject_id.clone(),
            name,
        },
        jurisdiction: checkin.jurisdiction.clone(),
        deadline: checkin.device_time,
        evidence: Evidence {
            last_contact_at: Some(checkin.device_time),
            grace_period_seconds: 0,
            facts: vec![
                fact("checkin_id", &checkin.checkin_id),
                fact(
                    "position",
                    format!(
                        "{:.5},{:.5} (±{:.0} m)",
                        area.latitude, area.longitude, area.accuracy_m
                    ),
                ),
                fact("distance_outside_m", format!("{:.0}", area.distance_outside_m)),
                fact("method", method.as_str_name()),
            ],
        },
    })
}

fn fact(key: &str, value: impl Into<String>) -> Fact {
    Fact {
        key: key.to_owned(),
        value: value.into(),
    }
}

#[cfg(test)]
mod tests {
    use chrono_tz::Asia::Shanghai;

    use super::*;
    use crate::domain::{
        alert::{Alert, AlertSeverity, EscalationTarget, RecommendedMeasure, tests::utc},
        policy::{Level, ReleaseCategory},
        rules::RuleId,
        watch::{
            CheckinMethod, HandoverStatus, OutOfArea,
            tests::{handover, home, supervisee},
        },
    };

    fn composer() -> Composer {
        Composer {
            policy: Policy::default(),
            tz: Shanghai,
        }
    }

    fn due(track: Track, due_at: &str, grace_seconds: i64, since_at: &str) -> DueDeadline {
        DueDeadline {
            subject_id: Uuid::from_u128(7),
            track,
            due_at: utc(due_at),
            grace_seconds,
            since_at: utc(since_at),
        }
    }

    fn value<'a>(alert: &'a NewAlert, key: &str) -> Option<&'a str> {
        alert
            .evidence
            .facts
            .iter()
            .find(|fact| fact.key == key)
            .map(|fact| fact.value.as_str())
    }

    #[test]
    fn a_missed_weekly_checkin_says_rule_basis_contact_deadline_and_grace() {
        // Last contact Thursday 26 Nov 10:00 in Zhangye; normal level: by the end of 3 Dec.
        let deadline = due(
            Track::Checkin,
            "2026-12-03T16:00:00Z",
            86_400,
            "2026-11-26T02:00:00Z",
        );
        let watch = supervisee(Level::Normal, "2026-11-26T02:00:00Z");
        let alert = composer()
            .supervisee_alert(&deadline, &watch, utc("2026-12-04T16:00:00Z"))
            .expect("alert");
        assert_eq!(alert.spec.rule_id, RuleId::MissedCheckin(Level::Normal));
        assert_eq!(alert.spec.kind, AlertKind::MissedCheckin);
        assert!(
            alert.spec.legal_basis.contains("第三十五条"),
            "{}",
            alert.spec.legal_basis
        );
        assert_eq!(alert.spec.measure, RecommendedMeasure::Admonition);
        assert_eq!(alert.spec.target, EscalationTarget::TownshipOffice);
        assert_eq!(alert.deadline, utc("2026-12-03T16:00:00Z"));
        assert_eq!(alert.evidence.last_contact_at, Some(utc("2026-11-26T02:00:00Z")));
        assert_eq!(alert.evidence.grace_period_seconds, 86_400);
        assert_eq!(alert.subject.kind, SubjectKind::Supervisee);
        assert_eq!(alert.subject.id, Uuid::from_u128(7).to_string());
        assert_eq!(alert.subject.name, "张三");
        assert_eq!(alert.jurisdiction, home());
        assert_eq!(
            alert.dedup_key,
            format!("missed_checkin:{}:2026-12-03T16:00:00Z", Uuid::from_u128(7))
        );
        let facts: Vec<(&str, &str)> = alert
            .evidence
            .facts
            .iter()
            .map(|fact| (fact.key.as_str(), fact.value.as_str()))
            .collect();
        assert_eq!(
            facts,
            [
                ("supervision_level", "normal"),
                ("status", "active"),
                ("required_interval", "7d"),
                ("deadline_local", "2026-12-04 00:00:00 CST"),
                ("last_checkin_id", "c1"),
            ]
        );
    }

    #[test]
    fn the_measure_grows_with_the_time_without_contact() {
        let deadline = due(Track::Checkin, "2026-12-03T16:00:00Z", 0, "2026-11-26T02:00:00Z");
        let watch = supervisee(Level::Normal, "2026-11-26T02:00:00Z");
        let measure = |now: &str| {
            composer()
                .supervisee_alert(&deadline, &watch, utc(now))
                .expect("alert")
                .spec
                .measure
        };
        assert_eq!(measure("2026-12-04T00:00:00Z"), RecommendedMeasure::Admonition);
        assert_eq!(measure("2026-12-07T00:00:00Z"), RecommendedMeasure::Warning);
        assert_eq!(
            measure("2026-12-27T00:00:00Z"),
            RecommendedMeasure::RevocationProposal
        );
        // The absconding tracks keep the measure their rule names.
        let absconding = due(
            Track::AbscondingWarning,
            "2026-12-06T02:00:00Z",
            0,
            "2026-11-26T02:00:00Z",
        );
        let alert = composer()
            .supervisee_alert(&absconding, &watch, utc("2026-12-27T00:00:00Z"))
            .expect("alert");
        assert_eq!(alert.spec.measure, RecommendedMeasure::Warning);
        assert_eq!(value(&alert, "required_interval"), Some("864000s"));
    }

    #[test]
    fn absconding_goes_to_the_county_bureau_as_well() {
        let deadline = due(
            Track::AbscondingRevocation,
            "2026-12-26T16:00:00Z",
            0,
            "2026-11-26T02:00:00Z",
        );
        let watch = supervisee(Level::Strict, "2026-11-26T02:00:00Z");
        let draft = composer()
            .supervisee_alert(&deadline, &watch, utc("2026-12-26T16:00:01Z"))
            .expect("alert");
        assert_eq!(draft.spec.severity, AlertSeverity::Critical);
        assert_eq!(value(&draft, "required_interval"), Some("1mo"));
        let alert = Alert::raise(Uuid::nil(), draft, utc("2026-12-26T16:00:01Z"));
        assert!(
            alert.notifies_county_bureau(),
            "recipients: township and county bureau"
        );
        let missed = composer()
            .supervisee_alert(
                &due(Track::InPerson, "2026-12-03T16:00:00Z", 0, "2026-11-26T02:00:00Z"),
                &watch,
                utc("2026-12-04T00:00:00Z"),
            )
            .expect("alert");
        assert_eq!(missed.spec.rule_id, RuleId::MissedInPerson);
        assert!(missed.dedup_key.ends_with(":in_person"));
        assert_eq!(value(&missed, "required_interval"), Some("7d"));
        let alert = Alert::raise(Uuid::nil(), missed, utc("2026-12-04T00:00:00Z"));
        assert!(
            !alert.notifies_county_bureau(),
            "recipients: the township office only"
        );
    }

    #[test]
    fn no_alert_while_the_level_is_unknown() {
        let deadline = due(Track::Checkin, "2026-12-03T16:00:00Z", 0, "2026-11-26T02:00:00Z");
        let watch = SuperviseeWatch {
            level: None,
            ..supervisee(Level::Normal, "2026-11-26T02:00:00Z")
        };
        assert_eq!(
            composer().supervisee_alert(&deadline, &watch, utc("2026-12-04T00:00:00Z")),
            None
        );
    }

    #[test]
    fn an_overdue_report_in_says_release_prison_and_period() {
        let deadline = due(Track::ReportIn, "2026-12-11T16:00:00Z", 0, "2026-12-01T01:00:00Z");
        let watch = handover(ReleaseCategory::Parole);
        let alert = composer().handover_alert(&deadline, &watch).expect("alert");
        assert_eq!(
            alert.spec.rule_id,
            RuleId::ReportInOverdue(ReleaseCategory::Parole)
        );
        assert!(alert.spec.legal_basis.contains("第二十一条"));
        assert_eq!(alert.spec.target, EscalationTarget::CountyBureau);
        assert_eq!(alert.subject.kind, SubjectKind::Handover);
        assert_eq!(alert.subject.name, "李四");
        assert_eq!(alert.evidence.last_contact_at, Some(utc("2026-12-01T01:00:00Z")));
        assert_eq!(
            alert.dedup_key,
            format!("report_in_overdue:{}:2026-12-11T16:00:00Z", Uuid::from_u128(7))
        );
        assert_eq!(value(&alert, "release_category"), Some("parole"));
        assert_eq!(value(&alert, "prison_reference"), Some("P-620701 / 2026-0042"));
        assert_eq!(value(&alert, "expected_release_date"), Some("2026-12-01"));
        assert_eq!(value(&alert, "key_assistance_target"), Some("false"));
        assert_eq!(
            value(&alert, "released_at_local"),
            Some("2026-12-01 09:00:00 CST")
        );
        assert_eq!(value(&alert, "report_in_period"), Some("10d"));
    }

    #[test]
    fn a_closed_handover_raises_nothing_and_other_tracks_omit_the_period() {
        let gate = due(
            Track::GateCollection,
            "2026-12-01T01:00:00Z",
            7200,
            "2026-12-01T01:00:00Z",
        );
        let watch = HandoverWatch {
            key_target: true,
            ..handover(ReleaseCategory::SentenceCompleted)
        };
        let alert = composer().handover_alert(&gate, &watch).expect("alert");
        assert_eq!(alert.spec.kind, AlertKind::GateNotCollected);
        assert_eq!(alert.evidence.grace_period_seconds, 7200);
        assert_eq!(value(&alert, "report_in_period"), None);
        let cancelled = HandoverWatch {
            status: Some(HandoverStatus::Cancelled),
            ..watch
        };
        assert_eq!(composer().handover_alert(&gate, &cancelled), None);
    }

    #[test]
    fn an_out_of_area_checkin_names_the_checkin_position_and_distance() {
        let area = OutOfArea {
            latitude: 36.06,
            longitude: 103.83,
            accuracy_m: 20.4,
            distance_outside_m: 452_123.6,
        };
        let checkin = Checkin {
            checkin_id: "c9".into(),
            supervisee: Uuid::from_u128(7),
            subject_id: "s7".into(),
            device_time: utc("2026-12-01T03:00:00Z"),
            jurisdiction: home(),
            method: Some(CheckinMethod::AppSelfCheckin),
            identity_verified: true,
            out_of_area: Some(area),
        };
        let alert = out_of_area_alert(&checkin, "张三".into()).expect("out of area");
        assert_eq!(alert.spec.rule_id, RuleId::OutOfArea);
        assert_eq!(alert.dedup_key, "out_of_area:s7:c9");
        assert_eq!(alert.deadline, checkin.device_time);
        assert_eq!(alert.evidence.last_contact_at, Some(checkin.device_time));
        assert_eq!(alert.evidence.grace_period_seconds, 0);
        assert_eq!(value(&alert, "position"), Some("36.06000,103.83000 (±20 m)"));
        assert_eq!(value(&alert, "distance_outside_m"), Some("452124"));
        assert_eq!(value(&alert, "method"), Some("CHECKIN_METHOD_APP_SELF_CHECKIN"));
        let unknown = Checkin {
            method: None,
            ..checkin.clone()
        };
        let alert = out_of_area_alert(&unknown, String::new()).expect("out of area");
        assert_eq!(value(&alert, "method"), Some("CHECKIN_METHOD_UNSPECIFIED"));
        let inside = Checkin {
            out_of_area: None,
            ..checkin
        };
        assert_eq!(out_of_area_alert(&inside, String::new()), None);
    }
}
