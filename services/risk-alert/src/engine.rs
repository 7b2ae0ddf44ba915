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
    outbox::OutboxSignal,
    proto_time::{from_timestamp, to_timestamp},
};
use mesh_proto::{
    alert as pb,
    checkin::{CheckinMethod, CheckinRecorded},
    common::Jurisdiction,
    registry::{
        self as registry_pb, SuperviseeLevelChanged, SuperviseeRegistered, SuperviseeSnapshot,
        SuperviseeStatusChanged, SuperviseeTransferred,
    },
};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    alerts::{self, NewAlert, Publisher, Resolution},
    policy::{Level, Policy, Track},
    rules,
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
            let (Some(track), Some(row)) = (
                Track::parse(&deadline.track),
                Self::load(&mut tx, deadline.subject_id).await?,
            ) else {
                continue;
            };
            let Some(level) = row.level.as_deref().and_then(Level::parse) else {
                continue;
            };
            let mut spec = rules::for_track(track, level);
            if matches!(track, Track::Checkin | Track::InPerson) {
                spec.measure = rules::measure_for_lost_contact(&self.policy, deadline.since_at, now, self.tz);
            }
            let subject_id = deadline.subject_id.to_string();
            let local_due = deadline
                .due_at
                .with_timezone(&self.tz)
                .format("%Y-%m-%d %H:%M:%S %Z")
                .to_string();
            let interval = match track {
                Track::Checkin => self.policy.level(level).checkin.interval.to_string(),
                Track::InPerson => self
                    .policy
                    .level(level)
                    .in_person
                    .map(|o| o.interval.to_string())
                    .unwrap_or_default(),
                Track::AbscondingWarning => self.policy.absconding_warning.to_string(),
                Track::AbscondingRevocation => self.policy.absconding_revocation.to_string(),
            };
            let mut evidence_facts = vec![
                ("supervision_level", level.as_str().to_owned()),
                ("status", row.status.clone().unwrap_or_default()),
                ("required_interval", interval),
                ("deadline_local", local_due),
            ];
            if let Some(checkin_id) = &row.last_checkin_id {
                evidence_facts.push(("last_checkin_id", checkin_id.clone()));
            }
            let draft = NewAlert {
                dedup_key: rules::deadline_dedup_key(track, spec.kind, &subject_id, deadline.due_at),
                spec,
                subject: subject(&subject_id, row.name.clone()),
                subject_id,
                jurisdiction: Jurisdiction {
                    township_code: row.township_code.clone(),
                    county_code: row.county_code.clone(),
                },
                deadline: deadline.due_at,
                evidence: pb::AlertEvidence {
                    last_contact_at: Some(to_timestamp(deadline.since_at)),
                    grace_period_seconds: deadline.grace_seconds,
                    facts: facts(&evidence_facts),
                },
            };
            if alerts::raise(&mut tx, &self.publisher, draft, now)
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
        let result = match event.event_type.as_str() {
            "supervisee.registered" => {
                let snapshot = event.decode::<SuperviseeRegistered>()?.supervisee;
                engine
                    .apply_snapshot(conn, snapshot.unwrap_or_default(), occurred_at)
                    .await
            }
            "supervisee.level_changed" => {
                let snapshot = event.decode::<SuperviseeLevelChanged>()?.supervisee;
                engine
                    .apply_snapshot(conn, snapshot.unwrap_or_default(), occurred_at)
                    .await
            }
            "supervisee.transferred" => {
                let snapshot = event.decode::<SuperviseeTransferred>()?.supervisee;
                engine
                    .apply_snapshot(conn, snapshot.unwrap_or_default(), occurred_at)
                    .await
            }
            "supervisee.status_changed" => {
                let snapshot = event.decode::<SuperviseeStatusChanged>()?.supervisee;
                engine
                    .apply_snapshot(conn, snapshot.unwrap_or_default(), occurred_at)
                    .await
            }
            "checkin.recorded" => {
                engine
                    .apply_checkin(conn, event.decode::<CheckinRecorded>()?)
                    .await
            }
            // Other event types on these topics are not about deadlines.
            _ => Ok(()),
        };
        if result.is_ok() {
            engine.outbox_signal.notify();
        }
        result
    }
}
