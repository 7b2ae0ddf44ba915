//! What each alert means: severity, who must act, the recommended measure, the rule that
//! fired and its legal basis, so an officer can act without looking anything up. The system
//! recommends; a person decides (docs/domain.md, "The system recommends; a person decides").

use std::fmt;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::{
    alert::{AlertKind, AlertSeverity, EscalationTarget, RecommendedMeasure},
    policy::{Level, Policy, ReleaseCategory, Track},
};

/// The fixed meaning of one kind of alert.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSpec {
    pub kind: AlertKind,
    pub severity: AlertSeverity,
    pub target: EscalationTarget,
    pub measure: RecommendedMeasure,
    pub rule_id: RuleId,
    pub description: String,
    pub legal_basis: &'static str,
}

/// The rule that fired, as a value. Its text (`Display`, [`RuleId::parse`]) is the stable
/// `rule_id` clients see, e.g. `checkin.missed.normal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleId {
    /// `checkin.missed.<level>`: no verified check-in within the level's interval.
    MissedCheckin(Level),
    /// `checkin.missed.strict_in_person`: no home visit or office report within the week.
    MissedInPerson,
    /// `absconding.over_10_days`
    AbscondingTenDays,
    /// `absconding.over_1_month`
    AbscondingOneMonth,
    /// `checkin.out_of_area`
    OutOfArea,
    /// `handover.not_acknowledged`
    HandoverNotAcknowledged,
    /// `handover.gate_not_collected`
    GateNotCollected,
    /// `handover.report_in_overdue.<release category>`
    ReportInOverdue(ReleaseCategory),
    /// `supervisee.report_in_overdue`: a person registered pending report-in did not report
    /// in.
    PendingReportInOverdue,
    /// `coverage.gap`: the registry's truth and the watch list diverged.
    CoverageGap,
    /// `operations.dead_letter`: an event was set aside as unusable.
    DeadLetter,
    /// `operations.consumer_stalled`: an event kept failing past the retry cap.
    ConsumerStalled,
}

impl RuleId {
    /// Every rule id there is.
    pub fn all() -> impl Iterator<Item = RuleId> {
        let per_level = Level::ALL.iter().map(|&level| RuleId::MissedCheckin(level));
        let per_category = ReleaseCategory::ALL
            .iter()
            .map(|&category| RuleId::ReportInOverdue(category));
        per_level.chain(per_category).chain([
            RuleId::MissedInPerson,
            RuleId::AbscondingTenDays,
            RuleId::AbscondingOneMonth,
            RuleId::OutOfArea,
            RuleId::HandoverNotAcknowledged,
            RuleId::GateNotCollected,
            RuleId::PendingReportInOverdue,
            RuleId::CoverageGap,
            RuleId::DeadLetter,
            RuleId::ConsumerStalled,
        ])
    }

    /// The rule id of a stored alert; `None` for text no rule has.
    pub fn parse(text: &str) -> Option<Self> {
        Self::all().find(|rule| rule.to_string() == text)
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleId::MissedCheckin(level) => write!(f, "checkin.missed.{level}"),
            RuleId::MissedInPerson => f.write_str("checkin.missed.strict_in_person"),
            RuleId::AbscondingTenDays => f.write_str("absconding.over_10_days"),
            RuleId::AbscondingOneMonth => f.write_str("absconding.over_1_month"),
            RuleId::OutOfArea => f.write_str("checkin.out_of_area"),
            RuleId::HandoverNotAcknowledged => f.write_str("handover.not_acknowledged"),
            RuleId::GateNotCollected => f.write_str("handover.gate_not_collected"),
            RuleId::ReportInOverdue(category) => write!(f, "handover.report_in_overdue.{category}"),
            RuleId::PendingReportInOverdue => f.write_str("supervisee.report_in_overdue"),
            RuleId::CoverageGap => f.write_str("coverage.gap"),
            RuleId::DeadLetter => f.write_str("operations.dead_letter"),
            RuleId::ConsumerStalled => f.write_str("operations.consumer_stalled"),
        }
    }
}

const LAW_SUPERVISION: &str =
    "《中华人民共和国社区矫正法》第二十三条（遵守报告等监督管理规定）、第二十八条（视情节给予训诫、警告）";
const MEASURES_ADMONITION: &str =
    "《社区矫正法实施办法》第三十五条：不按规定时间报到或者接受社区矫正期间脱离监管，未超过十日的，给予训诫";
const MEASURES_WARNING: &str =
    "《社区矫正法实施办法》第三十六条：不按规定时间报到或者接受社区矫正期间脱离监管，超过十日的，给予警告";
const MEASURES_REVOCATION: &str = "《社区矫正法实施办法》第四十六条、第四十七条：无正当理由不按规定时间报到或者接受社区矫正期间脱离监管，超过一个月的，提出撤销缓刑、假释建议";
const LAW_AREA: &str = "《中华人民共和国社区矫正法》第二十七条（离开所居住的市、县应当经批准）";
const LAW_REPORT_IN: &str = "《中华人民共和国社区矫正法》第二十一条：社区矫正对象应当自判决、裁定生效或者离开监所之日起十日内到执行地社区矫正机构报到";
const RESETTLEMENT_REPORT_IN: &str =
    "刑满释放人员安置帮教衔接规定：刑满释放人员应当及时到居住地司法所报到，纳入安置帮教";
const RESETTLEMENT_NOTICE: &str = "刑满释放人员无缝衔接：监狱提前通知，接收地司法所应当及时签收、核实";
const LAW_NOTICE: &str = "《中华人民共和国社区矫正法》第二十条（决定机关通知、执行地社区矫正机构接收）";
const GATE: &str = "重点帮教对象必接必送：刑满释放时由司法所到监所门口接回";

/// Whom a deadline is about, as the rules need to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum About {
    Supervisee(Level),
    Handover(ReleaseCategory),
}

/// The spec of the alert a missed deadline on `track` raises.
pub fn for_track(track: Track, about: About) -> AlertSpec {
    let level = match about {
        About::Supervisee(level) => level,
        About::Handover(_) => Level::Normal,
    };
    let category = match about {
        About::Handover(category) => category,
        About::Supervisee(_) => ReleaseCategory::Parole,
    };
    let community_corrections = category != ReleaseCategory::SentenceCompleted;
    match track {
        Track::HandoverAck => AlertSpec {
            kind: AlertKind::HandoverNotAcknowledged,
            severity: AlertSeverity::Medium,
            target: EscalationTarget::TownshipOffice,
            measure: RecommendedMeasure::None,
            rule_id: RuleId::HandoverNotAcknowledged,
            description: "监所发出的释放衔接通知逾期未签收".to_owned(),
            legal_basis: if community_corrections {
                LAW_NOTICE
            } else {
                RESETTLEMENT_NOTICE
            },
        },
        Track::GateCollection => AlertSpec {
            kind: AlertKind::GateNotCollected,
            severity: AlertSeverity::High,
            target: EscalationTarget::CountyBureau,
            measure: RecommendedMeasure::None,
            rule_id: RuleId::GateNotCollected,
            description: "重点帮教对象已释放，未登记必接必送".to_owned(),
            legal_basis: GATE,
        },
        Track::ReportIn => AlertSpec {
            kind: AlertKind::ReportInOverdue,
            severity: AlertSeverity::High,
            target: EscalationTarget::CountyBureau,
            measure: RecommendedMeasure::None,
            rule_id: RuleId::ReportInOverdue(category),
            description: "释放后逾期未报到（漏管）".to_owned(),
            legal_basis: if community_corrections {
                LAW_REPORT_IN
            } else {
                RESETTLEMENT_REPORT_IN
            },
        },
        Track::PendingReportIn => AlertSpec {
            kind: AlertKind::ReportInOverdue,
            severity: AlertSeverity::High,
            target: EscalationTarget::CountyBureau,
            measure: RecommendedMeasure::None,
            rule_id: RuleId::PendingReportInOverdue,
            description: "判决、裁定生效后逾期未报到（漏管）".to_owned(),
            legal_basis: LAW_REPORT_IN,
        },
        Track::Checkin => AlertSpec {
            kind: AlertKind::MissedCheckin,
            severity: AlertSeverity::Medium,
            target: EscalationTarget::TownshipOffice,
            measure: RecommendedMeasure::Admonition,
            rule_id: RuleId::MissedCheckin(level),
            description: match level {
                Level::Strict => "严管对象应每日签到，逾期未签到".to_owned(),
                Level::Normal => "普管对象应每周签到，逾期未签到".to_owned(),
                Level::Lenient => "宽管对象应每月签到，逾期未签到".to_owned(),
            },
            legal_basis: MEASURES_ADMONITION,
        },
        Track::InPerson => AlertSpec {
            kind: AlertKind::MissedCheckin,
            severity: AlertSeverity::Medium,
            target: EscalationTarget::TownshipOffice,
            measure: RecommendedMeasure::Admonition,
            rule_id: RuleId::MissedInPerson,
            description: "严管对象应每周当面报到或接受走访，逾期未见面".to_owned(),
            legal_basis: LAW_SUPERVISION,
        },
        Track::AbscondingWarning => AlertSpec {
            kind: AlertKind::AbscondingTenDays,
            severity: AlertSeverity::High,
            target: EscalationTarget::CountyBureau,
            measure: RecommendedMeasure::Warning,
            rule_id: RuleId::AbscondingTenDays,
            description: "脱离监管超过十日".to_owned(),
            legal_basis: MEASURES_WARNING,
        },
        Track::AbscondingRevocation => AlertSpec {
            kind: AlertKind::AbscondingOneMonth,
            severity: AlertSeverity::Critical,
            target: EscalationTarget::CountyBureau,
            measure: RecommendedMeasure::RevocationProposal,
            rule_id: RuleId::AbscondingOneMonth,
            description: "脱离监管超过一个月".to_owned(),
            legal_basis: MEASURES_REVOCATION,
        },
    }
}

/// The spec of the alert an out-of-area check-in raises.
pub fn out_of_area() -> AlertSpec {
    AlertSpec {
        kind: AlertKind::OutOfArea,
        severity: AlertSeverity::Medium,
        target: EscalationTarget::TownshipOffice,
        measure: RecommendedMeasure::None,
        rule_id: RuleId::OutOfArea,
        description: "签到位置超出所在司法所允许活动范围".to_owned(),
        legal_basis: LAW_AREA,
    }
}

const COVERAGE: &str = "《中华人民共和国社区矫正法》第二十三条、《社区矫正法实施办法》第三十四条：执行地社区矫正机构应当掌握社区矫正对象的活动情况，防止脱管、漏管";

/// The spec of a coverage-gap alert: a person the registry holds as supervised (or a
/// handover awaiting report-in) has no live deadline on a track that applies.
pub fn coverage_gap() -> AlertSpec {
    AlertSpec {
        kind: AlertKind::CoverageGap,
        severity: AlertSeverity::High,
        target: EscalationTarget::CountyBureau,
        measure: RecommendedMeasure::None,
        rule_id: RuleId::CoverageGap,
        description: "监管期限缺失：登记在册的对象没有有效的监管期限，已自动补建，请核实".to_owned(),
        legal_basis: COVERAGE,
    }
}

/// The spec of a dead-letter alert: what the set-aside event carried has not taken effect.
pub fn dead_letter() -> AlertSpec {
    AlertSpec {
        kind: AlertKind::DeadLetter,
        severity: AlertSeverity::High,
        target: EscalationTarget::CountyBureau,
        measure: RecommendedMeasure::None,
        rule_id: RuleId::DeadLetter,
        description: "系统事件无法处理，已搁置待人工修复后重放；其中的登记、签到或报到尚未生效".to_owned(),
        legal_basis: COVERAGE,
    }
}

/// The spec of a stalled-consumer alert: events behind the failing one wait.
pub fn consumer_stalled() -> AlertSpec {
    AlertSpec {
        kind: AlertKind::ConsumerStalled,
        severity: AlertSeverity::Critical,
        target: EscalationTarget::CountyBureau,
        measure: RecommendedMeasure::None,
        rule_id: RuleId::ConsumerStalled,
        description: "系统事件处理持续失败，后续签到、登记等事件积压，预警可能延迟".to_owned(),
        legal_basis: COVERAGE,
    }
}

/// The measure the absconding thresholds recommend after losing contact at `last_contact`:
/// up to the first threshold an admonition, beyond it a warning, beyond the second a
/// revocation proposal.
pub fn measure_for_lost_contact(
    policy: &Policy,
    last_contact: DateTime<Utc>,
    now: DateTime<Utc>,
    tz: Tz,
) -> RecommendedMeasure {
    if now > policy.absconding_revocation.after(last_contact, tz) {
        RecommendedMeasure::RevocationProposal
    } else if now > policy.absconding_warning.after(last_contact, tz) {
        RecommendedMeasure::Warning
    } else {
        RecommendedMeasure::Admonition
    }
}

/// Dedup key of a deadline alert: one alert per kind, subject, supervision episode and
/// missed deadline. The kind is named by its stored text (e.g. `missed_checkin`); the
/// in-person track gets its own suffix so it never collides with the check-in track, and an
/// episode after the first (a reactivated supervision) its own, so an alert of an earlier
/// episode never silences one of a later.
pub fn deadline_dedup_key(
    track: Track,
    kind: AlertKind,
    subject_id: &str,
    due: DateTime<Utc>,
    episode: i32,
) -> String {
    let mut key = format!(
        "{}:{subject_id}:{}",
        kind.as_str(),
        due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    if track == Track::InPerson {
        key.push_str(":in_person");
    }
    if episode > 1 {
        key.push_str(&format!(":episode{episode}"));
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Asia::Shanghai;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("RFC 3339")
    }

    #[test]
    fn escalation_thresholds_follow_the_implementation_measures() {
        let policy = Policy::default();
        let contact = utc("2026-11-01T02:00:00Z");
        let measure = |now: &str| measure_for_lost_contact(&policy, contact, utc(now), Shanghai);
        assert_eq!(measure("2026-11-05T02:00:00Z"), RecommendedMeasure::Admonition);
        assert_eq!(
            measure("2026-11-11T02:00:00Z"),
            RecommendedMeasure::Admonition,
            "exactly 10 days"
        );
        assert_eq!(
            measure("2026-11-11T02:00:01Z"),
            RecommendedMeasure::Warning,
            "over 10 days"
        );
        assert_eq!(
            measure("2026-12-01T15:59:59Z"),
            RecommendedMeasure::Warning,
            "within the month"
        );
        assert_eq!(
            measure("2026-12-01T16:00:01Z"),
            RecommendedMeasure::RevocationProposal,
            "over one month"
        );
    }

    #[test]
    fn absconding_alerts_go_to_the_county_bureau() {
        let warning = for_track(Track::AbscondingWarning, About::Supervisee(Level::Normal));
        assert_eq!(warning.target, EscalationTarget::CountyBureau);
        assert_eq!(warning.measure, RecommendedMeasure::Warning);
        assert!(warning.legal_basis.contains("第三十六条"));
        let revocation = for_track(Track::AbscondingRevocation, About::Supervisee(Level::Normal));
        assert_eq!(revocation.severity, AlertSeverity::Critical);
        assert_eq!(revocation.measure, RecommendedMeasure::RevocationProposal);
        let missed = for_track(Track::Checkin, About::Supervisee(Level::Strict));
        assert_eq!(missed.target, EscalationTarget::TownshipOffice);
        assert_eq!(missed.measure, RecommendedMeasure::Admonition);
        assert_eq!(missed.rule_id, RuleId::MissedCheckin(Level::Strict));
        assert_eq!(missed.rule_id.to_string(), "checkin.missed.strict");
    }

    #[test]
    fn overdue_report_in_cites_article_21_for_community_corrections() {
        let parole = for_track(Track::ReportIn, About::Handover(ReleaseCategory::Parole));
        assert_eq!(parole.kind, AlertKind::ReportInOverdue);
        assert_eq!(parole.target, EscalationTarget::CountyBureau);
        assert!(parole.legal_basis.contains("第二十一条"));
        let resettlement = for_track(
            Track::ReportIn,
            About::Handover(ReleaseCategory::SentenceCompleted),
        );
        assert!(!resettlement.legal_basis.contains("社区矫正法》第二十一条"));
        assert_eq!(
            resettlement.rule_id.to_string(),
            "handover.report_in_overdue.sentence_completed"
        );
        let gate = for_track(
            Track::GateCollection,
            About::Handover(ReleaseCategory::SentenceCompleted),
        );
        assert_eq!(gate.kind, AlertKind::GateNotCollected);
        assert_eq!(gate.severity, AlertSeverity::High);
    }

    #[test]
    fn dedup_keys_name_kind_subject_and_deadline() {
        let due = utc("2026-03-01T16:00:00Z");
        assert_eq!(
            deadline_dedup_key(Track::Checkin, AlertKind::MissedCheckin, "s1", due, 1),
            "missed_checkin:s1:2026-03-01T16:00:00Z"
        );
        assert_eq!(
            deadline_dedup_key(Track::InPerson, AlertKind::MissedCheckin, "s1", due, 1),
            "missed_checkin:s1:2026-03-01T16:00:00Z:in_person"
        );
        assert_eq!(
            deadline_dedup_key(Track::InPerson, AlertKind::MissedCheckin, "s1", due, 2),
            "missed_checkin:s1:2026-03-01T16:00:00Z:in_person:episode2",
            "a reactivated supervision is a new episode"
        );
        assert_eq!(AlertKind::ReportInOverdue.as_str(), "report_in_overdue");
    }

    #[test]
    fn rule_ids_read_back_from_their_text() {
        let texts: Vec<String> = RuleId::all().map(|rule| rule.to_string()).collect();
        assert_eq!(texts.len(), 16);
        for rule in RuleId::all() {
            assert_eq!(RuleId::parse(&rule.to_string()), Some(rule), "{rule}");
        }
        assert_eq!(
            RuleId::parse("checkin.missed.strict_in_person"),
            Some(RuleId::MissedInPerson)
        );
        assert_eq!(RuleId::parse("checkin.missed.weekly"), None);
        // Every spec a track can produce names a rule that reads back.
        for track in Track::ALL {
            for about in [
                About::Supervisee(Level::Lenient),
                About::Handover(ReleaseCategory::TemporaryExecutionOutsidePrison),
            ] {
                let rule = for_track(track, about).rule_id;
                assert_eq!(RuleId::parse(&rule.to_string()), Some(rule));
            }
        }
    }
}
