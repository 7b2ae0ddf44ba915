//! Operational alerts: a record a service set aside (dead letter) or keeps failing on
//! (stalled consumer) means a registration, check-in or report-in has not taken effect, so
//! whoever answers for the person must hear of it, and the operators must fix it. These are
//! the alerts raised for them, their dedup keys (one alert per dead letter, one per stall)
//! and the resolution a replay or recovery brings.

use chrono::{DateTime, Utc};

use super::{
    Actor, Jurisdiction,
    alert::{Evidence, Fact, NewAlert, Resolution, Subject, SubjectKind},
    rules,
};

/// Which consumer of which service a record reached, and where it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub service: String,
    pub consumer: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub event_type: String,
    pub event_id: String,
}

/// Whose record it was, when the record itself says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whose {
    pub subject: Subject,
    pub jurisdiction: Jurisdiction,
}

/// A record set aside in `service`'s dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub dead_letter_id: i64,
    pub record: ConsumedRecord,
    pub reason: String,
    pub at: DateTime<Utc>,
    pub whose: Option<Whose>,
}

/// A record that keeps failing, or that applied at last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    pub record: ConsumedRecord,
    pub reason: String,
    pub failing_since: DateTime<Utc>,
    pub whose: Option<Whose>,
}

/// The one alert of a dead letter (ids count per service database, hence the consumer).
pub fn dead_letter_key(consumer: &str, dead_letter_id: i64) -> String {
    format!("dead_letter:{consumer}:{dead_letter_id}")
}

/// The one alert of one stall of one record (a record that stalls again after recovering
/// is a new stall).
pub fn stall_key(stall: &Stall) -> String {
    format!(
        "{}{}",
        stalls_of(&stall.record),
        stall.failing_since.timestamp_micros()
    )
}

/// What the keys of every stall of one record start with: its recovery resolves them all,
/// also one reported by an earlier process that stopped while the record was failing.
pub fn stalls_of(record: &ConsumedRecord) -> String {
    format!(
        "consumer_stalled:{}:{}:{}:{}:",
        record.consumer, record.topic, record.partition, record.offset
    )
}

/// The alert a dead letter raises: to the person's county bureau and township when the
/// record names them, else to the operators only.
pub fn dead_letter_alert(dead_letter: &DeadLetter) -> NewAlert {
    let mut facts = record_facts(&dead_letter.record);
    facts.push(fact("reason", &dead_letter.reason));
    facts.push(fact("dead_letter_id", &dead_letter.dead_letter_id.to_string()));
    let (subject, jurisdiction) = owner(&dead_letter.whose, &dead_letter.record);
    NewAlert {
        spec: rules::dead_letter(),
        dedup_key: dead_letter_key(&dead_letter.record.consumer, dead_letter.dead_letter_id),
        subject,
        jurisdiction,
        deadline: dead_letter.at,
        evidence: evidence(facts),
    }
}

/// The alert a stalled consumer raises.
pub fn stalled_alert(stall: &Stall) -> NewAlert {
    let mut facts = record_facts(&stall.record);
    facts.push(fact("reason", &stall.reason));
    facts.push(fact("failing_since", &stall.failing_since.to_rfc3339()));
    let (subject, jurisdiction) = owner(&stall.whose, &stall.record);
    NewAlert {
        spec: rules::consumer_stalled(),
        dedup_key: stall_key(stall),
        subject,
        jurisdiction,
        deadline: stall.failing_since,
        evidence: evidence(facts),
    }
}

/// How a replayed dead letter's alert is resolved.
pub fn replayed(dead_letter_id: i64) -> Resolution {
    Resolution {
        by: Actor::system(),
        note: "the record was replayed and has taken effect".to_owned(),
        reference: Some(format!("dead_letter_replayed:{dead_letter_id}")),
    }
}

/// How a stall's alert is resolved once the record applied (or was set aside).
pub fn recovered(record: &ConsumedRecord) -> Resolution {
    Resolution {
        by: Actor::system(),
        note: "the consumer got past the record; the events behind it are applied".to_owned(),
        reference: Some(format!(
            "consumer_recovered:{}:{}:{}",
            record.topic, record.partition, record.offset
        )),
    }
}

/// The person or handover the record is about, else the consumer itself, filed with the
/// operators.
fn owner(whose: &Option<Whose>, record: &ConsumedRecord) -> (Subject, Jurisdiction) {
    match whose {
        Some(whose) => (whose.subject.clone(), whose.jurisdiction.clone()),
        None => (
            Subject {
                kind: SubjectKind::Supervisee,
                id: format!("ops:{}", record.consumer),
                name: String::new(),
            },
            Jurisdiction::operations(),
        ),
    }
}

fn record_facts(record: &ConsumedRecord) -> Vec<Fact> {
    vec![
        fact("service", &record.service),
        fact("consumer", &record.consumer),
        fact("topic", &record.topic),
        fact("partition", &record.partition.to_string()),
        fact("offset", &record.offset.to_string()),
        fact("event_type", &record.event_type),
        fact("event_id", &record.event_id),
    ]
}

fn evidence(facts: Vec<Fact>) -> Evidence {
    Evidence {
        last_contact_at: None,
        grace_period_seconds: 0,
        facts,
    }
}

fn fact(key: &str, value: &str) -> Fact {
    Fact {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alert::{AlertKind, tests::utc};

    fn record() -> ConsumedRecord {
        ConsumedRecord {
            service: "risk-alert".into(),
            consumer: "risk-alert".into(),
            topic: "checkin.events".into(),
            partition: 1,
            offset: 17,
            event_type: "checkin.recorded".into(),
            event_id: "e-1".into(),
        }
    }

    fn person() -> Whose {
        Whose {
            subject: Subject {
                kind: SubjectKind::Supervisee,
                id: "p-1".into(),
                name: "张三".into(),
            },
            jurisdiction: Jurisdiction {
                township_code: "620702001".into(),
                county_code: "620702".into(),
            },
        }
    }

    fn dead_letter(whose: Option<Whose>) -> DeadLetter {
        DeadLetter {
            dead_letter_id: 5,
            record: record(),
            reason: "database refused the record".into(),
            at: utc("2026-12-01T03:00:00Z"),
            whose,
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
    fn a_dead_letter_goes_to_the_persons_jurisdiction_with_its_facts() {
        let alert = dead_letter_alert(&dead_letter(Some(person())));
        assert_eq!(alert.spec.kind, AlertKind::DeadLetter);
        assert_eq!(alert.subject.id, "p-1");
        assert_eq!(alert.jurisdiction.county_code, "620702");
        assert_eq!(alert.dedup_key, "dead_letter:risk-alert:5");
        assert_eq!(value(&alert, "dead_letter_id"), Some("5"));
        assert_eq!(value(&alert, "offset"), Some("17"));
        assert_eq!(value(&alert, "reason"), Some("database refused the record"));
        assert_eq!(value(&alert, "service"), Some("risk-alert"));
    }

    #[test]
    fn a_dead_letter_naming_nobody_goes_to_the_operators() {
        let alert = dead_letter_alert(&dead_letter(None));
        assert!(alert.jurisdiction.is_operations());
        assert_eq!(alert.subject.id, "ops:risk-alert");
    }

    #[test]
    fn each_dead_letter_and_each_stall_has_its_own_alert() {
        let other = DeadLetter {
            dead_letter_id: 6,
            ..dead_letter(None)
        };
        assert_ne!(
            dead_letter_alert(&dead_letter(None)).dedup_key,
            dead_letter_alert(&other).dedup_key
        );
        let stall = Stall {
            record: record(),
            reason: "relation does not exist".into(),
            failing_since: utc("2026-12-01T03:00:00Z"),
            whose: Some(person()),
        };
        let again = Stall {
            failing_since: utc("2026-12-01T04:00:00Z"),
            ..stall.clone()
        };
        let alert = stalled_alert(&stall);
        assert_eq!(alert.spec.kind, AlertKind::ConsumerStalled);
        assert_eq!(alert.subject.id, "p-1");
        assert_ne!(alert.dedup_key, stalled_alert(&again).dedup_key);
        assert_eq!(stall_key(&stall), alert.dedup_key);
        assert!(alert.dedup_key.starts_with(&stalls_of(&stall.record)));
        assert!(
            stalled_alert(&again)
                .dedup_key
                .starts_with(&stalls_of(&stall.record))
        );
    }

    #[test]
    fn resolutions_are_automatic_and_name_their_cause() {
        let resolution = replayed(5);
        assert_eq!(resolution.by, Actor::system());
        assert_eq!(resolution.reference.as_deref(), Some("dead_letter_replayed:5"));
        assert_eq!(
            recovered(&record()).reference.as_deref(),
            Some("consumer_recovered:checkin.events:1:17")
        );
    }
}
