//! Check-in policy and deadline computation, as pure functions of the last contact, the
//! policy and the office's time zone (calendar rules such as "by the end of the day a week
//! later" are evaluated in local time; docs/domain.md, "Time and calendar spans"). No clock
//! is read here.

use std::{fmt, str::FromStr, time::Duration};

use chrono::{DateTime, Days, Months, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use mesh_proto::{handover as handover_pb, registry as registry_pb};

/// How far a deadline lies after the contact that sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// Exactly this many seconds later (second-scale test policies, hour-based thresholds).
    Seconds(u64),
    /// By the end of the local calendar day this many days later.
    EndOfDay(u32),
    /// By the end of the local calendar day this many months later.
    Months(u32),
}

impl Span {
    /// The deadline a contact at `from` sets, evaluated in `tz`.
    pub fn after(self, from: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        let local_day = from.with_timezone(&tz).date_naive();
        let due_day = match self {
            Span::Seconds(seconds) => {
                return from + chrono::Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX / 2_000));
            }
            Span::EndOfDay(days) => local_day.checked_add_days(Days::new(u64::from(days))),
            Span::Months(months) => local_day.checked_add_months(Months::new(months)),
        };
        // The end of a day is the first instant of the next one.
        let next_midnight = due_day
            .and_then(|day| day.checked_add_days(Days::new(1)))
            .map(|day| day.and_time(NaiveTime::MIN));
        match next_midnight.and_then(|naive| tz.from_local_datetime(&naive).earliest()) {
            Some(local) => local.with_timezone(&Utc),
            None => from + chrono::Duration::days(3650),
        }
    }
}

impl Span {
    /// The deadline of the period after one that ended at `due`. A calendar deadline is the
    /// first instant of the next local day, which belongs to the period that follows: the
    /// next period is counted from the last day of this one, so a week stays a week.
    pub fn following(self, due: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        match self {
            Span::Seconds(_) => self.after(due, tz),
            Span::EndOfDay(_) | Span::Months(_) => self.after(due - chrono::Duration::seconds(1), tz),
        }
    }
}

impl FromStr for Span {
    type Err = String;
    /// `30s`, `36h` (seconds-exact), `7d` (end of day), `1mo` (end of day, calendar months).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
        let value: u32 = number
            .parse()
            .map_err(|_| format!("expected a number and a unit in {text:?}"))?;
        if value == 0 {
            return Err("must be greater than zero".into());
        }
        match unit {
            "s" => Ok(Span::Seconds(u64::from(value))),
            "m" => Ok(Span::Seconds(u64::from(value) * 60)),
            "h" => Ok(Span::Seconds(u64::from(value) * 3600)),
            "d" => Ok(Span::EndOfDay(value)),
            "mo" => Ok(Span::Months(value)),
            _ => Err(format!("unit of {text:?} must be s, m, h, d or mo")),
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Span::Seconds(s) => write!(f, "{s}s"),
            Span::EndOfDay(d) => write!(f, "{d}d"),
            Span::Months(m) => write!(f, "{m}mo"),
        }
    }
}

/// A grace period: `0` or a span in `s`, `m`, `h` or `d` (whole days, not calendar-aligned).
pub fn parse_grace(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text
        .trim_end_matches(|c: char| c.is_ascii_alphabetic())
        .chars()
        .all(|c| c == '0')
        && !text.is_empty()
    {
        return Ok(Duration::ZERO);
    }
    match text.parse::<Span>()? {
        Span::Seconds(seconds) => Ok(Duration::from_secs(seconds)),
        Span::EndOfDay(days) => Ok(Duration::from_secs(u64::from(days) * 86_400)),
        Span::Months(_) => Err("a grace period must be given in s, m, h or d".into()),
    }
}

/// One recurring obligation: a contact within `interval`, with `grace` before alerting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Obligation {
    pub interval: Span,
    pub grace: Duration,
}

/// The policy of one supervision level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelPolicy {
    /// Any identity-verified check-in (app, phone, visit, office).
    pub checkin: Obligation,
    /// In-person contact (home visit or office report), for levels that require it.
    pub in_person: Option<Obligation>,
}

// Release category of a handover, as far as deadlines are concerned.
mesh_kit::stored_enum!(ReleaseCategory, handover_pb::ReleaseCategory, {
    Parole = "parole" => Parole,
    TemporaryExecutionOutsidePrison = "temporary_execution_outside_prison" => TemporaryExecutionOutsidePrison,
    SentenceCompleted = "sentence_completed" => SentenceCompleted,
});

/// Handover deadlines (docs/domain.md, "Prison-to-community handover"; Community Corrections
/// Law art. 21: report in within 10 days of release; key assistance targets collected at the
/// gate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandoverPolicy {
    /// How long the destination township has to acknowledge a release notice.
    pub ack_period: Span,
    /// Report-in period after release, per category.
    pub report_in_parole: Span,
    pub report_in_temporary_execution: Span,
    pub report_in_sentence_completed: Span,
    /// Grace after the release time before a missing gate collection is alerted.
    pub gate_grace: Duration,
}

impl Default for HandoverPolicy {
    fn default() -> Self {
        Self {
            ack_period: Span::EndOfDay(5),
            report_in_parole: Span::EndOfDay(10),
            report_in_temporary_execution: Span::EndOfDay(10),
            report_in_sentence_completed: Span::EndOfDay(10),
            gate_grace: Duration::from_secs(2 * 3600),
        }
    }
}

impl HandoverPolicy {
    pub fn report_in(&self, category: ReleaseCategory) -> Span {
        match category {
            ReleaseCategory::Parole => self.report_in_parole,
            ReleaseCategory::TemporaryExecutionOutsidePrison => self.report_in_temporary_execution,
            ReleaseCategory::SentenceCompleted => self.report_in_sentence_completed,
        }
    }
}

/// What the deadline engine knows of an open handover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandoverFacts {
    pub category: ReleaseCategory,
    pub key_target: bool,
    /// Since when the destination township has had the notice to acknowledge; `None` once
    /// acknowledged.
    pub awaiting_ack_since: Option<DateTime<Utc>>,
    /// Confirmed release time, or failing that the start of the expected release day: the
    /// report-in period runs from it even if the prison never confirms (漏管 must not hide
    /// behind a missing confirmation).
    pub release: DateTime<Utc>,
    pub release_confirmed: bool,
    pub gate_collected: bool,
}

impl HandoverPolicy {
    /// The deadlines of an open (not reported in, not cancelled) handover.
    pub fn deadlines(&self, facts: &HandoverFacts, tz: Tz) -> Vec<Deadline> {
        let mut deadlines = Vec::new();
        if let Some(since) = facts.awaiting_ack_since {
            deadlines.push(Deadline {
                track: Track::HandoverAck,
                due: self.ack_period.after(since, tz),
                grace: Duration::ZERO,
                since,
            });
        }
        if facts.key_target && facts.release_confirmed && !facts.gate_collected {
            deadlines.push(Deadline {
                track: Track::GateCollection,
                due: facts.release,
                grace: self.gate_grace,
                since: facts.release,
            });
        }
        deadlines.push(Deadline {
            track: Track::ReportIn,
            due: self.report_in(facts.category).after(facts.release, tz),
            grace: Duration::ZERO,
            since: facts.release,
        });
        deadlines
    }
}

/// The whole policy: the three levels and the absconding thresholds of the Implementation
/// Measures (up to 10 days without contact → admonition; over 10 days → warning; over one
/// month → revocation proposal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub strict: LevelPolicy,
    pub normal: LevelPolicy,
    pub lenient: LevelPolicy,
    pub absconding_warning: Span,
    pub absconding_revocation: Span,
    /// Report-in period of a person sentenced directly to community corrections (registered
    /// pending report-in), from the first day of the term.
    pub report_in_direct: Span,
    pub handover: HandoverPolicy,
}

impl Default for Policy {
    /// The defaults of docs/domain.md, "Check-in obligations per supervision level": strict =
    /// daily app check-in + weekly in person, normal = weekly, lenient = monthly, each with a
    /// grace period.
    fn default() -> Self {
        let hours = |h: u64| Duration::from_secs(h * 3600);
        Self {
            strict: LevelPolicy {
                checkin: Obligation {
                    interval: Span::EndOfDay(1),
                    grace: hours(2),
                },
                in_person: Some(Obligation {
                    interval: Span::EndOfDay(7),
                    grace: hours(24),
                }),
            },
            normal: LevelPolicy {
                checkin: Obligation {
                    interval: Span::EndOfDay(7),
                    grace: hours(24),
                },
                in_person: None,
            },
            lenient: LevelPolicy {
                checkin: Obligation {
                    interval: Span::Months(1),
                    grace: hours(72),
                },
                in_person: None,
            },
            absconding_warning: Span::Seconds(10 * 24 * 3600),
            absconding_revocation: Span::Months(1),
            report_in_direct: Span::EndOfDay(10),
            handover: HandoverPolicy::default(),
        }
    }
}

// Supervision level as the deadline rules see it.
mesh_kit::stored_enum!(Level, registry_pb::SupervisionLevel, {
    Strict = "strict" => Strict,
    Normal = "normal" => Normal,
    Lenient = "lenient" => Lenient,
});

/// The deadline tracks: four per watched supervisee (one while pending report-in), three per
/// open handover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Track {
    Checkin,
    InPerson,
    AbscondingWarning,
    AbscondingRevocation,
    /// The destination township must acknowledge a release notice.
    HandoverAck,
    /// A key assistance target must be collected at the prison gate (必接必送).
    GateCollection,
    /// The released person must report in (报到).
    ReportIn,
    /// A person registered pending report-in must report in (报到, the Law, art. 21).
    PendingReportIn,
}

impl Track {
    pub const ALL: [Track; 8] = [
        Track::Checkin,
        Track::InPerson,
        Track::AbscondingWarning,
        Track::AbscondingRevocation,
        Track::HandoverAck,
        Track::GateCollection,
        Track::ReportIn,
        Track::PendingReportIn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Track::Checkin => "checkin",
            Track::InPerson => "in_person",
            Track::AbscondingWarning => "absconding_warning",
            Track::AbscondingRevocation => "absconding_revocation",
            Track::HandoverAck => "handover_ack",
            Track::GateCollection => "gate_collection",
            Track::ReportIn => "report_in",
            Track::PendingReportIn => "pending_report_in",
        }
    }

    /// Whether the track's subject is a handover (else a supervisee).
    pub fn is_handover(self) -> bool {
        matches!(self, Track::HandoverAck | Track::GateCollection | Track::ReportIn)
    }

    pub fn parse(text: &str) -> Option<Self> {
        Track::ALL.into_iter().find(|track| track.as_str() == text)
    }
}

/// A computed deadline: `due` is the deadline itself; the alert fires at `due + grace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub track: Track,
    pub due: DateTime<Utc>,
    pub grace: Duration,
    /// The contact the deadline counts from.
    pub since: DateTime<Utc>,
}

impl Deadline {
    pub fn fires_at(&self) -> DateTime<Utc> {
        self.due + chrono::Duration::from_std(self.grace).unwrap_or_default()
    }
}

impl Policy {
    pub fn level(&self, level: Level) -> &LevelPolicy {
        match level {
            Level::Strict => &self.strict,
            Level::Normal => &self.normal,
            Level::Lenient => &self.lenient,
        }
    }

    /// Every deadline of an active supervisee whose last verified contact was `last_contact`
    /// and last in-person contact `last_in_person`.
    pub fn deadlines(
        &self,
        level: Level,
        last_contact: DateTime<Utc>,
        last_in_person: DateTime<Utc>,
        tz: Tz,
    ) -> Vec<Deadline> {
        let level_policy = self.level(level);
        let obligation = |track, obligation: Obligation, since: DateTime<Utc>| Deadline {
            track,
            due: obligation.interval.after(since, tz),
            grace: obligation.grace,
            since,
        };
        let mut deadlines = vec![obligation(Track::Checkin, level_policy.checkin, last_contact)];
        if let Some(in_person) = level_policy.in_person {
            deadlines.push(obligation(Track::InPerson, in_person, last_in_person));
        }
        for (track, span) in [
            (Track::AbscondingWarning, self.absconding_warning),
            (Track::AbscondingRevocation, self.absconding_revocation),
        ] {
            deadlines.push(Deadline {
                track,
                due: span.after(last_contact, tz),
                grace: Duration::ZERO,
                since: last_contact,
            });
        }
        deadlines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America::New_York, Asia::Shanghai};

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("RFC 3339")
    }

    #[test]
    fn end_of_day_is_local_midnight() {
        // 10:00 in Zhangye on 26 Nov; strict daily → by the end of 27 Nov local time,
        // i.e. 28 Nov 00:00 +08:00 = 27 Nov 16:00 UTC.
        let contact = utc("2026-11-26T02:00:00Z");
        assert_eq!(
            Span::EndOfDay(1).after(contact, Shanghai),
            utc("2026-11-27T16:00:00Z")
        );
        // 23:30 local on 26 Nov is 15:30 UTC: still the 26th locally, same deadline.
        assert_eq!(
            Span::EndOfDay(1).after(utc("2026-11-26T15:30:00Z"), Shanghai),
            utc("2026-11-27T16:00:00Z")
        );
        // 00:30 local on 27 Nov (16:30 UTC on the 26th) is already the next local day.
        assert_eq!(
            Span::EndOfDay(1).after(utc("2026-11-26T16:30:00Z"), Shanghai),
            utc("2026-11-28T16:00:00Z")
        );
    }

    #[test]
    fn time_zone_changes_the_calendar_day() {
        let contact = utc("2026-11-26T02:00:00Z"); // 25 Nov 21:00 in New York
        assert_eq!(
            Span::EndOfDay(1).after(contact, New_York),
            utc("2026-11-27T05:00:00Z")
        );
        assert_eq!(
            Span::EndOfDay(1).after(contact, Shanghai),
            utc("2026-11-27T16:00:00Z")
        );
    }

    #[test]
    fn months_follow_the_calendar() {
        // 31 Jan + 1 month clamps to 28 Feb (2027 is not a leap year); end of that day.
        let contact = utc("2027-01-31T04:00:00Z");
        assert_eq!(
            Span::Months(1).after(contact, Shanghai),
            utc("2027-02-28T16:00:00Z")
        );
    }

    #[test]
    fn seconds_are_exact() {
        let contact = utc("2026-11-26T02:00:00Z");
        assert_eq!(
            Span::Seconds(30).after(contact, Shanghai),
            utc("2026-11-26T02:00:30Z")
        );
    }

    #[test]
    fn grace_periods_parse() {
        assert_eq!(parse_grace("0"), Ok(Duration::ZERO));
        assert_eq!(parse_grace("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_grace("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_grace("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_grace("1mo").is_err());
        assert!(parse_grace("").is_err());
    }

    #[test]
    fn spans_parse_and_print() {
        assert_eq!("30s".parse(), Ok(Span::Seconds(30)));
        assert_eq!("2m".parse(), Ok(Span::Seconds(120)));
        assert_eq!("240h".parse(), Ok(Span::Seconds(864_000)));
        assert_eq!("7d".parse(), Ok(Span::EndOfDay(7)));
        assert_eq!("1mo".parse(), Ok(Span::Months(1)));
        assert!("0d".parse::<Span>().is_err());
        assert!("7w".parse::<Span>().is_err());
        assert!("d".parse::<Span>().is_err());
        assert_eq!(Span::Months(1).to_string(), "1mo");
    }

    #[test]
    fn default_deadlines_per_level() {
        let policy = Policy::default();
        let contact = utc("2026-11-26T02:00:00Z"); // Thursday 10:00 in Zhangye
        let strict = policy.deadlines(Level::Strict, contact, contact, Shanghai);
        let tracks: Vec<_> = strict.iter().map(|d| d.track).collect();
        assert_eq!(tracks, Track::ALL[..4]);
        assert_eq!(strict[0].due, utc("2026-11-27T16:00:00Z"));
        assert_eq!(strict[0].fires_at(), utc("2026-11-27T18:00:00Z"));
        assert_eq!(
            strict[1].due,
            utc("2026-12-03T16:00:00Z"),
            "in person within the week"
        );
        assert_eq!(
            strict[2].due,
            utc("2026-12-06T02:00:00Z"),
            "10 days without contact"
        );
        assert_eq!(
            strict[3].due,
            utc("2026-12-26T16:00:00Z"),
            "one month without contact"
        );

        let normal = policy.deadlines(Level::Normal, contact, contact, Shanghai);
        assert_eq!(normal.len(), 3, "no in-person track");
        assert_eq!(normal[0].due, utc("2026-12-03T16:00:00Z"));
        assert_eq!(normal[0].fires_at(), utc("2026-12-04T16:00:00Z"));

        let lenient = policy.deadlines(Level::Lenient, contact, contact, Shanghai);
        assert_eq!(lenient[0].due, utc("2026-12-26T16:00:00Z"));
        assert_eq!(lenient[0].fires_at(), utc("2026-12-29T16:00:00Z"));
    }

    #[test]
    fn report_in_is_due_by_the_end_of_the_tenth_day_after_release() {
        let policy = HandoverPolicy::default();
        // Released 09:00 local on 1 Dec → report in by the end of 11 Dec local.
        let facts = HandoverFacts {
            category: ReleaseCategory::Parole,
            key_target: false,
            awaiting_ack_since: None,
            release: utc("2026-12-01T01:00:00Z"),
            release_confirmed: true,
            gate_collected: false,
        };
        let deadlines = policy.deadlines(&facts, Shanghai);
        assert_eq!(deadlines.len(), 1);
        assert_eq!(deadlines[0].track, Track::ReportIn);
        assert_eq!(deadlines[0].due, utc("2026-12-11T16:00:00Z"));
    }

    #[test]
    fn report_in_period_per_category() {
        let policy = HandoverPolicy {
            report_in_sentence_completed: Span::EndOfDay(30),
            ..HandoverPolicy::default()
        };
        let release = utc("2026-12-01T01:00:00Z");
        assert_eq!(
            policy.report_in(ReleaseCategory::Parole).after(release, Shanghai),
            utc("2026-12-11T16:00:00Z")
        );
        assert_eq!(
            policy
                .report_in(ReleaseCategory::TemporaryExecutionOutsidePrison)
                .after(release, Shanghai),
            utc("2026-12-11T16:00:00Z")
        );
        assert_eq!(
            policy
                .report_in(ReleaseCategory::SentenceCompleted)
                .after(release, Shanghai),
            utc("2026-12-31T16:00:00Z")
        );
    }

    #[test]
    fn handover_tracks_follow_its_state() {
        let policy = HandoverPolicy::default();
        let notified = utc("2026-11-02T02:00:00Z");
        let waiting = HandoverFacts {
            category: ReleaseCategory::SentenceCompleted,
            key_target: true,
            awaiting_ack_since: Some(notified),
            release: utc("2026-11-30T16:00:00Z"),
            release_confirmed: false,
            gate_collected: false,
        };
        let tracks: Vec<_> = policy
            .deadlines(&waiting, Shanghai)
            .iter()
            .map(|d| (d.track, d.due))
            .collect();
        assert_eq!(
            tracks,
            [
                (Track::HandoverAck, utc("2026-11-07T16:00:00Z")),
                (Track::ReportIn, utc("2026-12-11T16:00:00Z"))
            ],
            "no gate deadline before the release is confirmed"
        );
        let released = HandoverFacts {
            awaiting_ack_since: None,
            release: utc("2026-12-01T01:00:00Z"),
            release_confirmed: true,
            ..waiting
        };
        let deadlines = policy.deadlines(&released, Shanghai);
        assert_eq!(deadlines[0].track, Track::GateCollection);
        assert_eq!(deadlines[0].fires_at(), utc("2026-12-01T03:00:00Z"));
        let collected = HandoverFacts {
            gate_collected: true,
            ..released
        };
        assert_eq!(policy.deadlines(&collected, Shanghai).len(), 1);
    }

    #[test]
    fn in_person_counts_from_the_last_in_person_contact() {
        let policy = Policy::default();
        let app = utc("2026-11-26T02:00:00Z");
        let visit = utc("2026-11-20T02:00:00Z");
        let strict = policy.deadlines(Level::Strict, app, visit, Shanghai);
        assert_eq!(strict[1].since, visit);
        assert_eq!(strict[1].due, utc("2026-11-27T16:00:00Z"));
    }
}
