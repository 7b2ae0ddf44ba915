//! The deadline engine. A consumer keeps the supervisee projection and the deadlines in step
//! with registry and check-in events (each applied once, in the event's transaction); the
//! scheduler raises an alert for every deadline whose grace has passed, exactly once per
//! dedup key, however many replicas run or restarts happen.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use mesh_kit::{
    CancellationToken,
    clock::SharedClock,
    consumer::{HandleError, Handler, InboundEvent},
    events,
    outbox::OutboxSignal,
    proto_time::{from_timestamp, to_timestamp},
};
use mesh_proto::{
    alert as pb,
    checkin::{CheckinMethod, CheckinRecorded},
    common::Jurisdiction,
    handover::{self as handover_pb, HandoverSnapshot},
    registry::{self as registry_pb, SuperviseeSnapshot},
};
use sqlx::{PgConnection, PgPool};
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    alerts::{self, NewAlert, Publisher, Resolution},
    policy::{Deadline, HandoverFacts, Level, Policy, ReleaseCategory, Track},
    rules::{self, About},
};

/// Shared state of the engine's parts.
#[derive(Clone)]
pub struct Engine {
    pub pool: PgPool,
    pub policy: Policy,
    pub tz: Tz,
    pub clock: SharedClock,
    pub publisher: Publisher,
    pub outbox_signal: OutboxSignal,
}

#[derive(sqlx::FromRow)]
struct Projection {
    name: String,
    township_code: String,
    county_code: String,
    level: Option<String>,
    status: Option<String>,
    version: i64,
    last_contact_at: Option<DateTime<Utc>>,
    last_in_person_at: Option<DateTime<Utc>>,
    last_checkin_id: Option<String>,
}

/// Statuses under which check-in deadlines run (an absconded person is still watched, so
/// the absconding thresholds keep escalating).
fn watched(status: Option<&str>) -> bool {
    matches!(status, Some("active" | "absconded"))
}

/// Statuses that end or pause supervision: their open alerts are withdrawn.
fn supervision_stopped(status: &str) -> bool {
    matches!(status, "suspended" | "terminated" | "revoked" | "deceased")
}

fn status_name(status: i32) -> Option<&'static str> {
    Some(match registry_pb::SuperviseeStatus::try_from(status).ok()? {
        registry_pb::SuperviseeStatus::PendingReportIn => "pending_report_in",
        registry_pb::SuperviseeStatus::Active => "active",
        registry_pb::SuperviseeStatus::Suspended => "suspended",
        registry_pb::SuperviseeStatus::Absconded => "absconded",
        registry_pb::SuperviseeStatus::Terminated => "terminated",
        registry_pb::SuperviseeStatus::Revoked => "revoked",
        registry_pb::SuperviseeStatus::Deceased => "deceased",
        registry_pb::SuperviseeStatus::Unspecified => return None,
    })
}

fn level_name(level: i32) -> Option<Level> {
    match registry_pb::SupervisionLevel::try_from(level).ok()? {
        registry_pb::SupervisionLevel::Strict => Some(Level::Strict),
        registry_pb::SupervisionLevel::Normal => Some(Level::Normal),
        registry_pb::SupervisionLevel::Lenient => Some(Level::Lenient),
        registry_pb::SupervisionLevel::Unspecified => None,
    }
}

impl Engine {
    async fn load(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Projection>> {
        sqlx::query_as(
            "SELECT name, township_code, county_code, level, status, version, last_contact_at, last_in_person_at,
                    last_checkin_id
             FROM supervisees WHERE supervisee_id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(conn)
        .await
    }

    /// Recomputes every deadline of a supervisee from its last contacts, or removes them when
    /// it is not watched.
    async fn reschedule(&self, conn: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM deadlines WHERE subject_id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?;
        let Some(row) = Self::load(conn, id).await? else {
            return Ok(());
        };
        let (Some(level), Some(last_contact)) =
            (row.level.as_deref().and_then(Level::parse), row.last_contact_at)
        else {
            return Ok(());
        };
        if !watched(row.status.as_deref()) {
            return Ok(());
        }
        let last_in_person = row.last_in_person_at.unwrap_or(last_contact);
        for deadline in self
            .policy
            .deadlines(level, last_contact, last_in_person, self.tz)
        {
            sqlx::query(
                "INSERT INTO deadlines (subject_id, track, due_at, grace_seconds, fire_at, since_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(deadline.track.as_str())
            .bind(deadline.due)
            .bind(i64::try_from(deadline.grace.as_secs()).unwrap_or(i64::MAX))
            .bind(deadline.fires_at())
            .bind(deadline.since)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    /// Applies a registry snapshot unless a newer one was applied already.
    async fn apply_snapshot(
        &self,
        conn: &mut PgConnection,
        snapshot: SuperviseeSnapshot,
        occurred_at: DateTime<Utc>,
    ) -> Result<(), HandleError> {
        let id: Uuid = snapshot
            .supervisee_id
            .parse()
            .map_err(|_| HandleError::Permanent("snapshot with a malformed supervisee_id".into()))?;
        let existing = Self::load(conn, id).await?;
        if existing
            .as_ref()
            .is_some_and(|row| row.version >= snapshot.version)
        {
            return Ok(()); // stale or repeated snapshot
        }
        let jurisdiction = snapshot.jurisdiction.clone().unwrap_or_default();
        let status = status_name(snapshot.status);
        let level = level_name(snapshot.level).map(Level::as_str);
        // The first contact of a newly watched person is the report-in (or, failing that,
        // the moment supervision became active), so the first deadline counts from there.
        let reported_at = snapshot.reported_at.as_ref().and_then(from_timestamp);
        let first_contact = existing
            .as_ref()
            .and_then(|row| row.last_contact_at)
            .or(if watched(status) {
                Some(reported_at.unwrap_or(occurred_at))
            } else {
                None
            });
        sqlx::query(
            "INSERT INTO supervisees (supervisee_id, name, township_code, county_code, level, status, version,
                 last_contact_at, last_in_person_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, now())
             ON CONFLICT (supervisee_id) DO UPDATE SET name = $2, township_code = $3, county_code = $4,
                 level = $5, status = $6, version = $7,
                 last_contact_at = COALESCE(supervisees.last_contact_at, $8),
                 last_in_person_at = COALESCE(supervisees.last_in_person_at, $8), updated_at = now()",
        )
        .bind(id)
        .bind(&snapshot.name)
        .bind(&jurisdiction.township_code)
        .bind(&jurisdiction.county_code)
        .bind(level)
        .bind(status)
        .bind(snapshot.version)
        .bind(first_contact)
        .execute(&mut *conn)
        .await?;

        let now = self.clock.now();
        let moved = existing.as_ref().is_some_and(|row| {
            row.township_code != jurisdiction.township_code && !row.township_code.is_empty()
        });
        if moved {
            // Open alerts follow the person to the new township.
            for alert in alerts::open_for_subject(conn, &snapshot.supervisee_id).await? {
                alerts::move_to(conn, alert, jurisdiction.clone(), now).await?;
            }
        }
        if let Some(status) = status.filter(|status| supervision_stopped(status)) {
            let note = format!("supervision {status}: alerts withdrawn");
            self.resolve_open(
                conn,
                &snapshot.supervisee_id,
                |_| true,
                &note,
                &format!("supervisee.status:{status}"),
            )
            .await?;
        }
        self.reschedule(conn, id).await?;
        Ok(())
    }

    /// Applies a check-in: moves the last contact, resolves what it answers, reschedules,
    /// and raises the out-of-area alert when the check-in was flagged.
    async fn apply_checkin(
        &self,
        conn: &mut PgConnection,
        checkin: CheckinRecorded,
    ) -> Result<(), HandleError> {
        let id: Uuid = checkin
            .supervisee_id
            .parse()
            .map_err(|_| HandleError::Permanent("check-in with a malformed supervisee_id".into()))?;
        let device_time = checkin
            .device_time
            .as_ref()
            .and_then(from_timestamp)
            .ok_or_else(|| HandleError::Permanent("check-in without a valid device_time".into()))?;
        let jurisdiction = checkin.jurisdiction.clone().unwrap_or_default();
        let in_person = matches!(
            checkin.method(),
            CheckinMethod::HomeVisit | CheckinMethod::OfficeReport
        );
        let now = self.clock.now();

        let existing = Self::load(conn, id).await?;
        if checkin.identity_verified {
            // An offline check-in can arrive after newer ones: keep the latest contact.
            sqlx::query(
                "INSERT INTO supervisees (supervisee_id, township_code, county_code, last_contact_at, last_in_person_at,
                     last_checkin_id, updated_at)
                 VALUES ($1, $2, $3, $4, CASE WHEN $5 THEN $4 END, $6, now())
                 ON CONFLICT (supervisee_id) DO UPDATE SET
                     last_contact_at = GREATEST(supervisees.last_contact_at, $4),
                     last_in_person_at = CASE WHEN $5 THEN GREATEST(supervisees.last_in_person_at, $4)
                                              ELSE supervisees.last_in_person_at END,
                     last_checkin_id = CASE WHEN supervisees.last_contact_at IS NULL OR $4 >= supervisees.last_contact_at
                                            THEN $6 ELSE supervisees.last_checkin_id END,
                     updated_at = now()",
            )
            .bind(id)
            .bind(&jurisdiction.township_code)
            .bind(&jurisdiction.county_code)
            .bind(device_time)
            .bind(in_person)
            .bind(&checkin.checkin_id)
            .execute(&mut *conn)
            .await?;
            // A contact after an alert's evidence answers it; in-person alerts need an
            // in-person contact.
            let reference = format!("checkin:{}", checkin.checkin_id);
            let answers = |alert: &pb::Alert| {
                let contact_before = alert
                    .evidence
                    .as_ref()
                    .and_then(|e| e.last_contact_at.as_ref())
                    .and_then(from_timestamp)
                    .is_none_or(|last| device_time > last);
                let in_person_rule = alert
                    .rule
                    .as_ref()
                    .is_some_and(|rule| rule.rule_id == "checkin.missed.strict_in_person");
                contact_before
                    && matches!(
                        alert.kind(),
                        pb::AlertKind::MissedCheckin
                            | pb::AlertKind::AbscondingTenDays
                            | pb::AlertKind::AbscondingOneMonth
                    )
                    && (!in_person_rule || in_person)
            };
            self.resolve_open(
                conn,
                &checkin.supervisee_id,
                answers,
                "contact restored by a check-in",
                &reference,
            )
            .await?;
            self.reschedule(conn, id).await?;
        }

        if checkin.out_of_area {
            let name = existing.as_ref().map(|row| row.name.clone()).unwrap_or_default();
            let position = checkin.position.unwrap_or_default();
            let draft = NewAlert {
                spec: rules::out_of_area(),
                subject: subject(&checkin.supervisee_id, name),
                subject_id: checkin.supervisee_id.clone(),
                jurisdiction,
                deadline: device_time,
                dedup_key: format!(
                    "{}:{}:{}",
                    rules::kind_key(pb::AlertKind::OutOfArea),
                    checkin.supervisee_id,
                    checkin.checkin_id
                ),
                evidence: pb::AlertEvidence {
                    last_contact_at: Some(to_timestamp(device_time)),
                    grace_period_seconds: 0,
                    facts: facts(&[
                        ("checkin_id", checkin.checkin_id.clone()),
                        (
                            "position",
                            format!(
                                "{:.5},{:.5} (±{:.0} m)",
                                position.latitude, position.longitude, position.accuracy_m
                            ),
                        ),
                        ("distance_outside_m", format!("{:.0}", checkin.distance_outside_m)),
                        ("method", checkin.method().as_str_name().to_owned()),
                    ]),
                },
            };
            alerts::raise(conn, &self.publisher, draft, now).await?;
        }
        Ok(())
    }

    async fn resolve_open(
        &self,
        conn: &mut PgConnection,
        subject_id: &str,
        answers: impl Fn(&pb::Alert) -> bool,
        note: &str,
        reference: &str,
    ) -> sqlx::Result<()> {
        let now = self.clock.now();
        for alert in alerts::open_for_subject(conn, subject_id).await? {
            if answers(&alert) {
                let resolution = Resolution {
                    actor: alerts::system_actor(),
                    note: note.to_owned(),
                    reference: Some(reference.to_owned()),
                };
                alerts::resolve(conn, &self.publisher, alert, resolution, now).await?;
            }
        }
        Ok(())
    }

    /// Raises the alerts of every deadline whose grace has passed; returns how many were
    /// raised. Replicas skip each other's locked rows, and the dedup key makes a repeat
    /// after a crash a no-op.
    pub async fn fire_due(&self, batch: i64) -> anyhow::Result<usize> {
        let now = self.clock.now();
        let mut tx = self.pool.begin().await?;
        #[derive(sqlx::FromRow)]
        struct Due {
            subject_id: Uuid,
            track: String,
            due_at: DateTime<Utc>,
            grace_seconds: i64,
            since_at: DateTime<Utc>,
        }
        let due: Vec<Due> = sqlx::query_as(
            "SELECT subject_id, track, due_at, grace_seconds, since_at FROM deadlines
             WHERE fire_at <= $1 ORDER BY fire_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(now)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        let mut raised = 0;
        for deadline in &due {
            sqlx::query("DELETE FROM deadlines WHERE subject_id = $1 AND track = $2")
                .bind(deadline.subject_id)
                .bind(&deadline.track)
                .execute(&mut *tx)
                .await?;
            let Some(track) = Track::parse(&deadline.track) else {
                continue;
            };
            let due = DueDeadline {
                subject_id: deadline.subject_id,
                track,
                due_at: deadline.due_at,
                grace_seconds: deadline.grace_seconds,
                since_at: deadline.since_at,
            };
            let draft = if track.is_handover() {
                self.handover_alert(&mut tx, &due).await?
            } else {
                self.supervisee_alert(&mut tx, &due, now).await?
            };
            // Each missed deadline starts a trace of its own, which the alert event and its
            // notifications carry on.
            let span = tracing::info_span!("deadline.missed", track = track.as_str(), subject_id = %deadline.subject_id);
            if let Some(draft) = draft
                && alerts::raise(&mut tx, &self.publisher, draft, now)
                    .instrument(span)
                    .await?
                    .is_some()
            {
                raised += 1;
            }
        }
        tx.commit().await?;
        if raised > 0 {
            self.outbox_signal.notify();
        }
        Ok(due.len().max(raised))
    }

    fn local(&self, time: DateTime<Utc>) -> String {
        time.with_timezone(&self.tz)
            .format("%Y-%m-%d %H:%M:%S %Z")
            .to_string()
    }

    /// The alert a supervisee's missed deadline raises, if the supervisee is still known.
    async fn supervisee_alert(
        &self,
        conn: &mut PgConnection,
        deadline: &DueDeadline,
        now: DateTime<Utc>,
    ) -> sqlx::Result<Option<NewAlert>> {
        let Some(row) = Self::load(conn, deadline.subject_id).await? else {
            return Ok(None);
        };
        let Some(level) = row.level.as_deref().and_then(Level::parse) else {
            return Ok(None);
        };
        let track = deadline.track;
        let mut spec = rules::for_track(track, About::Supervisee(level));
        if matches!(track, Track::Checkin | Track::InPerson) {
            spec.measure = rules::measure_for_lost_contact(&self.policy, deadline.since_at, now, self.tz);
        }
        let interval = match track {
            Track::Checkin => self.policy.level(level).checkin.interval.to_string(),
            Track::InPerson => self
                .policy
                .level(level)
                .in_person
                .map(|o| o.interval.to_string())
                .unwrap_or_default(),
            Track::AbscondingWarning => self.policy.absconding_warning.to_string(),
            _ => self.policy.absconding_revocation.to_string(),
        };
        let mut evidence_facts = vec![
            ("supervision_level", level.as_str().to_owned()),
            ("status", row.status.clone().unwrap_or_default()),
            ("required_interval", interval),
            ("deadline_local", self.local(deadline.due_at)),
        ];
        if let Some(checkin_id) = &row.last_checkin_id {
            evidence_facts.push(("last_checkin_id", checkin_id.clone()));
        }
        let subject_id = deadline.subject_id.to_string();
        Ok(Some(NewAlert {
            dedup_key: rules::deadline_dedup_key(track, spec.kind, &subject_id, deadline.due_at),
            spec,
            subject: subject(&subject_id, row.name.clone()),
            subject_id,
            jurisdiction: Jurisdiction {
                township_code: row.township_code,
                county_code: row.county_code,
            },
            deadline: deadline.due_at,
            evidence: pb::AlertEvidence {
                last_contact_at: Some(to_timestamp(deadline.since_at)),
                grace_period_seconds: deadline.grace_seconds,
                facts: facts(&evidence_facts),
            },
        }))
    }

    /// The alert a handover's missed deadline raises, if the handover is still open.
    async fn handover_alert(
        &self,
        conn: &mut PgConnection,
        deadline: &DueDeadline,
    ) -> sqlx::Result<Option<NewAlert>> {
        let Some(row) = load_handover(conn, deadline.subject_id).await? else {
            return Ok(None);
        };
        let Some(category) = ReleaseCategory::parse(&row.category) else {
            return Ok(None);
        };
        if matches!(row.status.as_str(), "reported_in" | "cancelled") {
            return Ok(None);
        }
        let spec = rules::for_track(deadline.track, About::Handover(category));
        let mut evidence_facts = vec![
            ("release_category", category.as_str().to_owned()),
            (
                "prison_reference",
                format!("{} / {}", row.prison_id, row.prison_reference),
            ),
            ("expected_release_date", row.expected_release_date.to_string()),
            ("deadline_local", self.local(deadline.due_at)),
            ("key_assistance_target", row.key_target.to_string()),
        ];
        if let Some(released) = row.actual_release_time {
            evidence_facts.push(("released_at_local", self.local(released)));
        }
        if deadline.track == Track::ReportIn {
            evidence_facts.push((
                "report_in_period",
                self.policy.handover.report_in(category).to_string(),
            ));
        }
        let subject_id = deadline.subject_id.to_string();
        Ok(Some(NewAlert {
            dedup_key: rules::deadline_dedup_key(deadline.track, spec.kind, &subject_id, deadline.due_at),
            spec,
            subject: handover_subject(&subject_id, row.person_name.clone()),
            subject_id,
            jurisdiction: Jurisdiction {
                township_code: row.township_code,
                county_code: row.county_code,
            },
            deadline: deadline.due_at,
            evidence: pb::AlertEvidence {
                // For a handover the last "contact" is the release (or the notice).
                last_contact_at: Some(to_timestamp(deadline.since_at)),
                grace_period_seconds: deadline.grace_seconds,
                facts: facts(&evidence_facts),
            },
        }))
    }

    /// Applies a handover snapshot: projection, resolutions, and the handover's deadlines.
    async fn apply_handover(
        &self,
        conn: &mut PgConnection,
        snapshot: HandoverSnapshot,
        event: &InboundEvent,
        occurred_at: DateTime<Utc>,
    ) -> Result<(), HandleError> {
        let id: Uuid = snapshot
            .handover_id
            .parse()
            .map_err(|_| HandleError::Permanent("handover snapshot with a malformed handover_id".into()))?;
        let existing = load_handover(conn, id).await?;
        if existing
            .as_ref()
            .is_some_and(|row| row.version >= snapshot.version)
        {
            return Ok(());
        }
        let category = match snapshot.category() {
            handover_pb::ReleaseCategory::Parole => ReleaseCategory::Parole,
            handover_pb::ReleaseCategory::TemporaryExecutionOutsidePrison => {
                ReleaseCategory::TemporaryExecutionOutsidePrison
            }
            handover_pb::ReleaseCategory::SentenceCompleted => ReleaseCategory::SentenceCompleted,
            handover_pb::ReleaseCategory::Unspecified => {
                return Err(HandleError::Permanent(
                    "handover without a release category".into(),
                ));
            }
        };
        let status = match snapshot.status() {
            handover_pb::HandoverStatus::Notified => "notified",
            handover_pb::HandoverStatus::Acknowledged => "acknowledged",
            handover_pb::HandoverStatus::Released => "released",
            handover_pb::HandoverStatus::ReportedIn => "reported_in",
            handover_pb::HandoverStatus::Cancelled => "cancelled",
            handover_pb::HandoverStatus::Unspecified => {
                return Err(HandleError::Permanent("handover without a status".into()));
            }
        };
        let expected_release_date = snapshot
            .expected_release_date
            .as_ref()
            .and_then(mesh_kit::proto_time::from_date)
            .ok_or_else(|| HandleError::Permanent("handover without a valid expected release date".into()))?;
        let destination = snapshot.destination.clone().unwrap_or_default();
        let time = |t: &Option<prost_types::Timestamp>| t.as_ref().and_then(from_timestamp);
        let notified_at = time(&snapshot.notified_at);
        let acknowledged_at = time(&snapshot.acknowledged_at);
        let moved = existing
            .as_ref()
            .is_some_and(|row| row.township_code != destination.township_code);
        // A new destination township gets the full acknowledgement period from the change.
        let ack_since = match &existing {
            Some(row) if !moved => row.ack_since,
            Some(_) => Some(occurred_at),
            None => Some(notified_at.unwrap_or(occurred_at)),
        };
        sqlx::query(
            "INSERT INTO handovers (handover_id, person_name, prison_id, prison_reference, category, township_code,
                 county_code, key_target, status, expected_release_date, notified_at, ack_since, acknowledged_at,
                 actual_release_time, gate_collected_at, reported_in_at, version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
             ON CONFLICT (handover_id) DO UPDATE SET person_name = $2, prison_id = $3, prison_reference = $4,
                 category = $5, township_code = $6, county_code = $7, key_target = $8, status = $9,
                 expected_release_date = $10, notified_at = $11, ack_since = $12, acknowledged_at = $13,
                 actual_release_time = $14, gate_collected_at = $15, reported_in_at = $16, version = $17",
        )
        .bind(id)
        .bind(&snapshot.person_name)
        .bind(&snapshot.prison_id)
        .bind(&snapshot.prison_reference)
        .bind(category.as_str())
        .bind(&destination.township_code)
        .bind(&destination.county_code)
        .bind(snapshot.key_assistance_target)
        .bind(status)
        .bind(expected_release_date)
        .bind(notified_at)
        .bind(ack_since)
        .bind(acknowledged_at)
        .bind(time(&snapshot.actual_release_time))
        .bind(time(&snapshot.gate_collected_at))
        .bind(time(&snapshot.reported_in_at))
        .bind(snapshot.version)
        .execute(&mut *conn)
        .await?;

        let reference = format!("{}:{}", event.event_type, event.event_id);
        let handover_id = snapshot.handover_id.as_str();
        match status {
            "reported_in" => {
                self.resolve_open(
                    conn,
                    handover_id,
                    |_| true,
                    "the person reported in (报到)",
                    &reference,
                )
                .await?
            }
            "cancelled" => {
                self.resolve_open(
                    conn,
                    handover_id,
                    |_| true,
                    "release notice cancelled",
                    &reference,
                )
                .await?
            }
            _ if moved => {
                let note = "destination changed: deadlines restart at the new township";
                self.resolve_open(conn, handover_id, |_| true, note, &reference)
                    .await?
            }
            _ => {}
        }
        if acknowledged_at.is_some() {
            let answered = |alert: &pb::Alert| alert.kind() == pb::AlertKind::HandoverNotAcknowledged;
            self.resolve_open(conn, handover_id, answered, "notice acknowledged", &reference)
                .await?;
        }
        if snapshot.gate_collected_at.is_some() {
            let answered = |alert: &pb::Alert| alert.kind() == pb::AlertKind::GateNotCollected;
            self.resolve_open(conn, handover_id, answered, "collected at the gate", &reference)
                .await?;
        }
        self.reschedule_handover(conn, id).await?;
        Ok(())
    }

    /// Recomputes an open handover's deadlines (amendments move them; closing removes them).
    async fn reschedule_handover(&self, conn: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM deadlines WHERE subject_id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?;
        let Some(row) = load_handover(conn, id).await? else {
            return Ok(());
        };
        let Some(category) = ReleaseCategory::parse(&row.category) else {
            return Ok(());
        };
        if matches!(row.status.as_str(), "reported_in" | "cancelled") {
            return Ok(());
        }
        let expected_release = row
            .expected_release_date
            .and_time(chrono::NaiveTime::MIN)
            .and_local_timezone(self.tz)
            .earliest()
            .map(|local| local.with_timezone(&Utc));
        let Some(release) = row.actual_release_time.or(expected_release) else {
            return Ok(());
        };
        let facts = HandoverFacts {
            category,
            key_target: row.key_target,
            awaiting_ack_since: if row.acknowledged_at.is_none() {
                row.ack_since
            } else {
                None
            },
            release,
            release_confirmed: row.actual_release_time.is_some(),
            gate_collected: row.gate_collected_at.is_some(),
        };
        store_deadlines(conn, id, &self.policy.handover.deadlines(&facts, self.tz)).await
    }

    /// Runs the scheduler until shutdown; the first round runs at once, so deadlines that
    /// passed while the service was down are alerted right after start.
    pub async fn run_scheduler(self: Arc<Self>, tick: Duration, shutdown: CancellationToken) {
        loop {
            match self.fire_due(200).await {
                Ok(handled) if handled > 0 => continue,
                Ok(_) => {}
                Err(error) => tracing::warn!(error = %error, "deadline round failed; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(tick) => {}
            }
        }
        tracing::info!("deadline scheduler stopped");
    }
}

/// Replaces nothing: callers delete a subject's deadlines first, then store the new set.
async fn store_deadlines(
    conn: &mut PgConnection,
    subject_id: Uuid,
    deadlines: &[Deadline],
) -> sqlx::Result<()> {
    for deadline in deadlines {
        sqlx::query(
            "INSERT INTO deadlines (subject_id, track, due_at, grace_seconds, fire_at, since_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(subject_id)
        .bind(deadline.track.as_str())
        .bind(deadline.due)
        .bind(i64::try_from(deadline.grace.as_secs()).unwrap_or(i64::MAX))
        .bind(deadline.fires_at())
        .bind(deadline.since)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A deadline whose time has come.
struct DueDeadline {
    subject_id: Uuid,
    track: Track,
    due_at: DateTime<Utc>,
    grace_seconds: i64,
    since_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct HandoverRow {
    person_name: String,
    prison_id: String,
    prison_reference: String,
    category: String,
    township_code: String,
    county_code: String,
    key_target: bool,
    status: String,
    expected_release_date: chrono::NaiveDate,
    ack_since: Option<DateTime<Utc>>,
    acknowledged_at: Option<DateTime<Utc>>,
    actual_release_time: Option<DateTime<Utc>>,
    gate_collected_at: Option<DateTime<Utc>>,
    version: i64,
}

async fn load_handover(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<HandoverRow>> {
    sqlx::query_as(
        "SELECT person_name, prison_id, prison_reference, category, township_code, county_code, key_target, status,
                expected_release_date, ack_since, acknowledged_at, actual_release_time, gate_collected_at, version
         FROM handovers WHERE handover_id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

fn handover_subject(handover_id: &str, name: String) -> pb::AlertSubject {
    pb::AlertSubject {
        id: Some(pb::alert_subject::Id::HandoverId(handover_id.to_owned())),
        name,
    }
}

fn subject(supervisee_id: &str, name: String) -> pb::AlertSubject {
    pb::AlertSubject {
        id: Some(pb::alert_subject::Id::SuperviseeId(supervisee_id.to_owned())),
        name,
    }
}

fn facts(pairs: &[(&str, String)]) -> Vec<pb::EvidenceFact> {
    pairs
        .iter()
        .map(|(key, value)| pb::EvidenceFact {
            key: (*key).to_owned(),
            value: value.clone(),
        })
        .collect()
}

/// The consumer side of the engine.
pub struct EventHandler(pub Arc<Engine>);

impl Handler for EventHandler {
    async fn handle(&self, conn: &mut PgConnection, event: &InboundEvent) -> Result<(), HandleError> {
        let occurred_at = event.occurred_at.unwrap_or_else(|| self.0.clock.now());
        let engine = &self.0;
        let result = if event.event_type == "checkin.recorded" {
            engine
                .apply_checkin(conn, event.decode::<CheckinRecorded>()?)
                .await
        } else if let Some(snapshot) = events::supervisee_snapshot(event)? {
            engine.apply_snapshot(conn, snapshot, occurred_at).await
        } else if let Some(snapshot) = events::handover_snapshot(event)? {
            engine.apply_handover(conn, snapshot, event, occurred_at).await
        } else {
            // Other event types on these topics are not about deadlines.
            Ok(())
        };
        if result.is_ok() {
            engine.outbox_signal.notify();
        }
        result
    }
}
