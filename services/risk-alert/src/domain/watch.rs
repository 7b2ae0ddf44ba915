//! What is watched and from when: the supervisees and handovers the service knows of (a
//! projection of registry, check-in and handover events), which of their states run
//! deadlines, where a newly watched person's first deadline counts from, and the deadlines
//! each of them has now.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use mesh_proto::{checkin as checkin_pb, handover as handover_pb, registry as registry_pb};
use uuid::Uuid;

use super::{
    Jurisdiction,
    policy::{Deadline, HandoverFacts, HandoverPolicy, Level, Policy, ReleaseCategory, Track},
};

mesh_kit::stored_enum!(SuperviseeStatus, registry_pb::SuperviseeStatus, {
    PendingReportIn = "pending_report_in" => PendingReportIn,
    Active = "active" => Active,
    Suspended = "suspended" => Suspended,
    Absconded = "absconded" => Absconded,
    Terminated = "terminated" => Terminated,
    Revoked = "revoked" => Revoked,
    Deceased = "deceased" => Deceased,
});

mesh_kit::stored_enum!(HandoverStatus, handover_pb::HandoverStatus, {
    Notified = "notified" => Notified,
    Acknowledged = "acknowledged" => Acknowledged,
    Released = "released" => Released,
    ReportedIn = "reported_in" => ReportedIn,
    Cancelled = "cancelled" => Cancelled,
});

mesh_kit::stored_enum!(CheckinMethod, checkin_pb::CheckinMethod, {
    HomeVisit = "home_visit" => HomeVisit,
    OfficeReport = "office_report" => OfficeReport,
    PhoneVerification = "phone_verification" => PhoneVerification,
    AppSelfCheckin = "app_self_checkin" => AppSelfCheckin,
});

impl SuperviseeStatus {
    /// Statuses under which check-in deadlines run (an absconded person is still watched, so
    /// the absconding thresholds keep escalating).
    pub fn is_watched(self) -> bool {
        matches!(self, SuperviseeStatus::Active | SuperviseeStatus::Absconded)
    }

    /// Statuses that end or pause supervision: their open alerts are withdrawn.
    pub fn stops_supervision(self) -> bool {
        matches!(
            self,
            SuperviseeStatus::Suspended
                | SuperviseeStatus::Terminated
                | SuperviseeStatus::Revoked
                | SuperviseeStatus::Deceased
        )
    }
}

impl HandoverStatus {
    /// A handover that was reported in or cancelled needs no acknowledgement or gate
    /// collection any more.
    pub fn is_closed(self) -> bool {
        matches!(self, HandoverStatus::ReportedIn | HandoverStatus::Cancelled)
    }
}

impl ReleaseCategory {
    /// Whether a released person of this category must be registered in supervision: a
    /// sentence-completed release is a resettlement case, whose report-in closes the watch.
    pub fn enters_supervision(self) -> bool {
        self != ReleaseCategory::SentenceCompleted
    }
}

impl HandoverWatch {
    /// Whether nothing is left to watch: the notice was cancelled, or the person reported in
    /// and, where supervision follows, the registry has registered him (a report-in the
    /// registry could not register leaves the 漏管 watch running).
    pub fn is_settled(&self) -> bool {
        match self.status {
            Some(HandoverStatus::Cancelled) => true,
            Some(HandoverStatus::ReportedIn) => {
                self.registered || !self.category.is_some_and(ReleaseCategory::enters_supervision)
            }
            _ => false,
        }
    }
}

impl CheckinMethod {
    /// A home visit or an office report is in-person contact; the strict level needs one a
    /// week.
    pub fn is_in_person(self) -> bool {
        matches!(self, CheckinMethod::HomeVisit | CheckinMethod::OfficeReport)
    }
}

/// What the service knows of a supervisee. A row may exist before the registry's event
/// arrives (a check-in can overtake the registration); level and status are then unknown.
#[derive(Debug, Clone, PartialEq)]
pub struct SuperviseeWatch {
    pub name: String,
    pub jurisdiction: Jurisdiction,
    pub level: Option<Level>,
    pub status: Option<SuperviseeStatus>,
    /// The registry record version applied.
    pub version: i64,
    /// Last identity-verified contact.
    pub last_contact_at: Option<DateTime<Utc>>,
    /// Last home visit or office report.
    pub last_in_person_at: Option<DateTime<Utc>>,
    pub last_checkin_id: Option<String>,
    /// The supervision episode: 1 from the first report-in, one more at each reactivation
    /// after a suspension (its alerts get dedup keys of their own).
    pub episode: i32,
    /// When the current episode began: deadlines never count from before it.
    pub episode_since: Option<DateTime<Utc>>,
    /// Where the report-in period of a person registered pending report-in runs from: the
    /// start of the first day of the term (the judgment's taking effect, the Law, art. 21).
    pub report_in_from: Option<DateTime<Utc>>,
}

/// A registry snapshot of a supervisee, as far as deadlines are concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct SuperviseeSnapshot {
    pub id: Uuid,
    /// The id as the event spelled it (alerts are about this text).
    pub subject_id: String,
    pub name: String,
    pub jurisdiction: Jurisdiction,
    pub level: Option<Level>,
    pub status: Option<SuperviseeStatus>,
    pub version: i64,
    pub reported_at: Option<DateTime<Utc>>,
    /// First day of the term, when the event says.
    pub term_start: Option<NaiveDate>,
}

/// A recorded check-in.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkin {
    pub checkin_id: String,
    pub supervisee: Uuid,
    /// The supervisee id as the event spelled it.
    pub subject_id: String,
    pub device_time: DateTime<Utc>,
    pub jurisdiction: Jurisdiction,
    pub method: Option<CheckinMethod>,
    /// Only a verified check-in proves contact and moves deadlines.
    pub identity_verified: bool,
    /// Set when the position was outside the township's permitted area.
    pub out_of_area: Option<OutOfArea>,
}

/// Where an out-of-area check-in was made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutOfArea {
    pub latitude: f64,
    pub longitude: f64,
    pub accuracy_m: f64,
    pub distance_outside_m: f64,
}

impl Checkin {
    pub fn in_person(&self) -> bool {
        self.method.is_some_and(CheckinMethod::is_in_person)
    }
}

/// What the service knows of a handover it watches.
#[derive(Debug, Clone, PartialEq)]
pub struct HandoverWatch {
    pub person_name: String,
    pub prison_id: String,
    pub prison_reference: String,
    pub category: Option<ReleaseCategory>,
    /// The destination township office.
    pub jurisdiction: Jurisdiction,
    pub key_target: bool,
    pub status: Option<HandoverStatus>,
    pub expected_release_date: NaiveDate,
    /// When the current destination received the notice.
    pub ack_since: Option<DateTime<Utc>>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub actual_release_time: Option<DateTime<Utc>>,
    pub gate_collected_at: Option<DateTime<Utc>>,
    pub version: i64,
    /// Whether the registry has registered the person from this handover.
    pub registered: bool,
}

/// A handover snapshot from the handover service.
#[derive(Debug, Clone, PartialEq)]
pub struct HandoverSnapshot {
    pub id: Uuid,
    /// The id as the event spelled it (alerts are about this text).
    pub subject_id: String,
    pub person_name: String,
    pub prison_id: String,
    pub prison_reference: String,
    pub category: ReleaseCategory,
    pub destination: Jurisdiction,
    pub key_target: bool,
    pub status: HandoverStatus,
    pub expected_release_date: NaiveDate,
    pub notified_at: Option<DateTime<Utc>>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub actual_release_time: Option<DateTime<Utc>>,
    pub gate_collected_at: Option<DateTime<Utc>>,
    pub reported_in_at: Option<DateTime<Utc>>,
    pub version: i64,
}

/// Whether a snapshot of `version` is older than (or the same as) what was applied.
pub fn is_stale(applied: Option<i64>, version: i64) -> bool {
    applied.is_some_and(|applied| applied >= version)
}

/// The last contact a supervisee's snapshot leaves: the known one, or for a newly watched
/// person the report-in (failing that, the moment supervision became active), so the first
/// deadline counts from there. `None` while the person is not watched and never was.
pub fn first_contact(
    existing: Option<&SuperviseeWatch>,
    snapshot: &SuperviseeSnapshot,
    occurred_at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    existing.and_then(|watch| watch.last_contact_at).or(
        if snapshot.status.is_some_and(SuperviseeStatus::is_watched) {
            Some(snapshot.reported_at.unwrap_or(occurred_at))
        } else {
            None
        },
    )
}

/// A supervision episode: its number and when it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Episode {
    pub number: i32,
    pub since: Option<DateTime<Utc>>,
}

/// The episode a snapshot leaves. A person who becomes watched again after supervision was
/// paused (suspended) starts a new episode at the change: the deadlines count from the
/// reactivation, neither from a contact before the pause nor across it. The first episode
/// begins at the report-in (failing that, when supervision became active).
pub fn episode(
    existing: Option<&SuperviseeWatch>,
    snapshot: &SuperviseeSnapshot,
    occurred_at: DateTime<Utc>,
) -> Episode {
    let watched_now = snapshot.status.is_some_and(SuperviseeStatus::is_watched);
    match existing {
        Some(watch) if watched_now && watch.status == Some(SuperviseeStatus::Suspended) => Episode {
            number: watch.episode + 1,
            since: Some(occurred_at),
        },
        Some(watch) if watch.episode_since.is_some() || !watched_now => Episode {
            number: watch.episode,
            since: watch.episode_since,
        },
        _ => Episode {
            number: existing.map_or(1, |watch| watch.episode),
            since: watched_now.then(|| snapshot.reported_at.unwrap_or(occurred_at)),
        },
    }
}

/// Whether the snapshot moves a known supervisee to another township (its open alerts then
/// follow it).
pub fn transferred(existing: Option<&SuperviseeWatch>, to: &Jurisdiction) -> bool {
    existing.is_some_and(|watch| {
        watch.jurisdiction.township_code != to.township_code && !watch.jurisdiction.township_code.is_empty()
    })
}

/// The start of a local day (a term's first day, an expected release day) in the office's
/// time zone.
pub fn start_of(day: NaiveDate, tz: Tz) -> Option<DateTime<Utc>> {
    day.and_time(NaiveTime::MIN)
        .and_local_timezone(tz)
        .earliest()
        .map(|local| local.with_timezone(&Utc))
}

/// Every deadline a supervisee has now: while pending report-in, the report-in (counted from
/// the start of the term); once watched, the check-in and absconding tracks, which need
/// level and a contact.
pub fn supervisee_deadlines(policy: &Policy, tz: Tz, watch: &SuperviseeWatch) -> Vec<Deadline> {
    if watch.status == Some(SuperviseeStatus::PendingReportIn) {
        return watch
            .report_in_from
            .map(|from| Deadline {
                track: Track::PendingReportIn,
                due: policy.report_in_direct.after(from, tz),
                grace: std::time::Duration::ZERO,
                since: from,
            })
            .into_iter()
            .collect();
    }
    let (Some(level), Some(last_contact)) = (watch.level, watch.last_contact_at) else {
        return Vec::new();
    };
    if !watch.status.is_some_and(SuperviseeStatus::is_watched) {
        return Vec::new();
    }
    // Nothing before the current episode counts: a contact before a suspension does not
    // make the reactivated person overdue at once.
    let not_before = |time: DateTime<Utc>| watch.episode_since.map_or(time, |since| time.max(since));
    let last_in_person = not_before(watch.last_in_person_at.unwrap_or(last_contact));
    policy.deadlines(level, not_before(last_contact), last_in_person, tz)
}

/// Whether the snapshot sends a known handover to another destination township.
pub fn redirected(existing: Option<&HandoverWatch>, to: &Jurisdiction) -> bool {
    existing.is_some_and(|watch| watch.jurisdiction.township_code != to.township_code)
}

/// Since when the destination township has had the notice: kept while the destination
/// stays; a new destination gets the full acknowledgement period from the change; a new
/// handover counts from the notice.
pub fn ack_since(
    existing: Option<&HandoverWatch>,
    redirected: bool,
    notified_at: Option<DateTime<Utc>>,
    occurred_at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match existing {
        Some(watch) if !redirected => watch.ack_since,
        Some(_) => Some(occurred_at),
        None => Some(notified_at.unwrap_or(occurred_at)),
    }
}

/// The deadlines of a handover now: none once it is closed, or when its category or its
/// release time cannot be known.
pub fn handover_deadlines(policy: &HandoverPolicy, tz: Tz, watch: &HandoverWatch) -> Vec<Deadline> {
    let Some(category) = watch.category else {
        return Vec::new();
    };
    if watch.is_settled() {
        return Vec::new();
    }
    // Without a confirmed release the period runs from the start of the expected day.
    let expected_release = start_of(watch.expected_release_date, tz);
    let Some(release) = watch.actual_release_time.or(expected_release) else {
        return Vec::new();
    };
    let reported_in = watch.status.is_some_and(HandoverStatus::is_closed);
    let facts = HandoverFacts {
        category,
        // After the report-in only the registration is awaited.
        key_target: watch.key_target && !reported_in,
        awaiting_ack_since: if watch.acknowledged_at.is_none() && !reported_in {
            watch.ack_since
        } else {
            None
        },
        release,
        release_confirmed: watch.actual_release_time.is_some(),
        gate_collected: watch.gate_collected_at.is_some(),
    };
    policy.deadlines(&facts, tz)
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono_tz::Asia::Shanghai;

    use super::*;
    use crate::domain::alert::tests::utc;

    pub(crate) fn home() -> Jurisdiction {
        Jurisdiction {
            township_code: "620702001".into(),
            county_code: "620702".into(),
        }
    }

    pub(crate) fn supervisee(level: Level, last_contact: &str) -> SuperviseeWatch {
        SuperviseeWatch {
            name: "张三".into(),
            jurisdiction: home(),
            level: Some(level),
            status: Some(SuperviseeStatus::Active),
            version: 1,
            last_contact_at: Some(utc(last_contact)),
            last_in_person_at: None,
            last_checkin_id: Some("c1".into()),
            episode: 1,
            episode_since: None,
            report_in_from: None,
        }
    }

    pub(crate) fn handover(category: ReleaseCategory) -> HandoverWatch {
        HandoverWatch {
            person_name: "李四".into(),
            prison_id: "P-620701".into(),
            prison_reference: "2026-0042".into(),
            category: Some(category),
            jurisdiction: home(),
            key_target: false,
            status: Some(HandoverStatus::Released),
            expected_release_date: NaiveDate::from_ymd_opt(2026, 12, 1).expect("date"),
            ack_since: Some(utc("2026-11-02T02:00:00Z")),
            acknowledged_at: Some(utc("2026-11-03T02:00:00Z")),
            actual_release_time: Some(utc("2026-12-01T01:00:00Z")),
            gate_collected_at: None,
            version: 3,
            registered: false,
        }
    }

    fn snapshot(status: Option<SuperviseeStatus>, reported_at: Option<&str>) -> SuperviseeSnapshot {
        SuperviseeSnapshot {
            id: Uuid::nil(),
            subject_id: Uuid::nil().to_string(),
            name: "张三".into(),
            jurisdiction: home(),
            level: Some(Level::Normal),
            status,
            version: 2,
            reported_at: reported_at.map(utc),
            term_start: None,
        }
    }

    #[test]
    fn only_active_and_absconded_people_are_watched() {
        let watched: Vec<_> = SuperviseeStatus::ALL
            .iter()
            .filter(|status| status.is_watched())
            .collect();
        assert_eq!(watched, [&SuperviseeStatus::Active, &SuperviseeStatus::Absconded]);
        assert!(!SuperviseeStatus::PendingReportIn.stops_supervision());
        assert!(SuperviseeStatus::Suspended.stops_supervision());
        assert!(SuperviseeStatus::Deceased.stops_supervision());
    }

    #[test]
    fn the_first_deadline_counts_from_the_report_in() {
        let occurred = utc("2026-11-26T05:00:00Z");
        let reported = snapshot(Some(SuperviseeStatus::Active), Some("2026-11-26T02:00:00Z"));
        assert_eq!(
            first_contact(None, &reported, occurred),
            Some(utc("2026-11-26T02:00:00Z"))
        );
        let unreported = snapshot(Some(SuperviseeStatus::Active), None);
        assert_eq!(first_contact(None, &unreported, occurred), Some(occurred));
        let pending = snapshot(Some(SuperviseeStatus::PendingReportIn), None);
        assert_eq!(first_contact(None, &pending, occurred), None);
        let known = supervisee(Level::Normal, "2026-11-20T02:00:00Z");
        assert_eq!(
            first_contact(Some(&known), &reported, occurred),
            Some(utc("2026-11-20T02:00:00Z")),
            "a known contact stays"
        );
    }

    #[test]
    fn a_transfer_needs_a_known_township_that_differs() {
        let known = supervisee(Level::Normal, "2026-11-20T02:00:00Z");
        let elsewhere = Jurisdiction {
            township_code: "620702002".into(),
            county_code: "620702".into(),
        };
        assert!(transferred(Some(&known), &elsewhere));
        assert!(!transferred(Some(&known), &home()));
        assert!(!transferred(None, &elsewhere));
        let overtaken = SuperviseeWatch {
            jurisdiction: Jurisdiction::default(),
            ..known
        };
        assert!(!transferred(Some(&overtaken), &elsewhere), "never placed yet");
    }

    #[test]
    fn supervisee_deadlines_need_level_contact_and_a_watched_status() {
        let watch = supervisee(Level::Normal, "2026-11-26T02:00:00Z");
        let deadlines = supervisee_deadlines(&Policy::default(), Shanghai, &watch);
        assert_eq!(deadlines.len(), 3);
        assert_eq!(deadlines[0].track, Track::Checkin);
        let suspended = SuperviseeWatch {
            status: Some(SuperviseeStatus::Suspended),
            ..watch.clone()
        };
        assert!(supervisee_deadlines(&Policy::default(), Shanghai, &suspended).is_empty());
        let unknown_level = SuperviseeWatch { level: None, ..watch };
        assert!(supervisee_deadlines(&Policy::default(), Shanghai, &unknown_level).is_empty());
    }

    #[test]
    fn a_new_destination_restarts_the_acknowledgement_period() {
        let occurred = utc("2026-11-05T02:00:00Z");
        let notified = Some(utc("2026-11-02T02:00:00Z"));
        let known = handover(ReleaseCategory::Parole);
        assert_eq!(ack_since(None, false, notified, occurred), notified);
        assert_eq!(ack_since(None, false, None, occurred), Some(occurred));
        assert_eq!(
            ack_since(Some(&known), false, notified, occurred),
            known.ack_since
        );
        assert_eq!(ack_since(Some(&known), true, notified, occurred), Some(occurred));
        assert!(redirected(
            Some(&known),
            &Jurisdiction {
                township_code: "620702002".into(),
                county_code: "620702".into()
            }
        ));
    }

    #[test]
    fn handover_deadlines_stop_when_closed_and_run_from_the_expected_day() {
        let policy = HandoverPolicy::default();
        let released = handover(ReleaseCategory::Parole);
        let tracks: Vec<_> = handover_deadlines(&policy, Shanghai, &released)
            .iter()
            .map(|deadline| deadline.track)
            .collect();
        assert_eq!(tracks, [Track::ReportIn]);
        let reported = HandoverWatch {
            status: Some(HandoverStatus::ReportedIn),
            ..released.clone()
        };
        let awaiting: Vec<_> = handover_deadlines(&policy, Shanghai, &reported)
            .iter()
            .map(|deadline| deadline.track)
            .collect();
        assert_eq!(awaiting, [Track::ReportIn], "reported in, not yet registered");
        let registered = HandoverWatch {
            registered: true,
            ..reported.clone()
        };
        assert!(handover_deadlines(&policy, Shanghai, &registered).is_empty());
        let resettled = HandoverWatch {
            category: Some(ReleaseCategory::SentenceCompleted),
            ..reported
        };
        assert!(
            handover_deadlines(&policy, Shanghai, &resettled).is_empty(),
            "a resettlement case is not registered in supervision"
        );
        let unconfirmed = HandoverWatch {
            actual_release_time: None,
            ..released
        };
        let deadlines = handover_deadlines(&policy, Shanghai, &unconfirmed);
        // 1 Dec 00:00 local is 30 Nov 16:00 UTC; ten days later by the end of 11 Dec local.
        assert_eq!(deadlines[0].since, utc("2026-11-30T16:00:00Z"));
        assert_eq!(deadlines[0].due, utc("2026-12-11T16:00:00Z"));
    }

    #[test]
    fn a_reactivation_starts_a_new_episode_that_counts_from_it() {
        let suspended = SuperviseeWatch {
            status: Some(SuperviseeStatus::Suspended),
            episode_since: Some(utc("2026-11-01T02:00:00Z")),
            ..supervisee(Level::Normal, "2026-11-01T02:00:00Z")
        };
        let reactivated_at = utc("2026-11-20T02:00:00Z");
        let active = snapshot(Some(SuperviseeStatus::Active), Some("2026-11-01T02:00:00Z"));
        let episode = episode(Some(&suspended), &active, reactivated_at);
        assert_eq!(
            episode,
            Episode {
                number: 2,
                since: Some(reactivated_at)
            }
        );
        let watch = SuperviseeWatch {
            status: Some(SuperviseeStatus::Active),
            episode: episode.number,
            episode_since: episode.since,
            ..suspended
        };
        let deadlines = supervisee_deadlines(&Policy::default(), Shanghai, &watch);
        assert!(
            deadlines.iter().all(|deadline| deadline.since == reactivated_at),
            "no track counts the suspended time: {deadlines:?}"
        );
    }

    #[test]
    fn an_episode_lasts_while_watched_and_the_first_begins_at_the_report_in() {
        let occurred = utc("2026-11-26T05:00:00Z");
        let reported = snapshot(Some(SuperviseeStatus::Active), Some("2026-11-26T02:00:00Z"));
        assert_eq!(
            episode(None, &reported, occurred),
            Episode {
                number: 1,
                since: Some(utc("2026-11-26T02:00:00Z"))
            }
        );
        let pending = snapshot(Some(SuperviseeStatus::PendingReportIn), None);
        assert_eq!(episode(None, &pending, occurred).since, None);
        let known = SuperviseeWatch {
            episode: 3,
            episode_since: Some(utc("2026-11-10T00:00:00Z")),
            ..supervisee(Level::Normal, "2026-11-20T02:00:00Z")
        };
        let absconded = snapshot(Some(SuperviseeStatus::Absconded), None);
        assert_eq!(
            episode(Some(&known), &absconded, occurred),
            Episode {
                number: 3,
                since: known.episode_since
            },
            "absconding does not pause supervision"
        );
    }

    #[test]
    fn a_person_pending_report_in_must_report_in_within_ten_days_of_the_term_start() {
        let pending = SuperviseeWatch {
            status: Some(SuperviseeStatus::PendingReportIn),
            last_contact_at: None,
            report_in_from: start_of(NaiveDate::from_ymd_opt(2026, 12, 1).expect("date"), Shanghai),
            ..supervisee(Level::Normal, "2026-11-20T02:00:00Z")
        };
        let deadlines = supervisee_deadlines(&Policy::default(), Shanghai, &pending);
        assert_eq!(deadlines.len(), 1);
        assert_eq!(deadlines[0].track, Track::PendingReportIn);
        // From 1 Dec 00:00 local: by the end of 11 Dec local.
        assert_eq!(deadlines[0].since, utc("2026-11-30T16:00:00Z"));
        assert_eq!(deadlines[0].due, utc("2026-12-11T16:00:00Z"));
        let unknown_term = SuperviseeWatch {
            report_in_from: None,
            ..pending
        };
        assert!(supervisee_deadlines(&Policy::default(), Shanghai, &unknown_term).is_empty());
    }
}
