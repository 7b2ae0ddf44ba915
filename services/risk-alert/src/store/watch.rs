//! What is watched: the supervisee and handover projections (`supervisees`, `handovers`),
//! each row locked while an event or a deadline works on it, and the `deadlines` the
//! scheduler claims with `FOR UPDATE SKIP LOCKED` so replicas never fire the same one.

use chrono::{DateTime, NaiveDate, Utc};
use mesh_kit::error::ServiceError;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{
    Jurisdiction,
    policy::{Deadline, Level, ReleaseCategory},
    watch::{
        Checkin, HandoverSnapshot, HandoverStatus, HandoverWatch, SuperviseeSnapshot, SuperviseeStatus,
        SuperviseeWatch,
    },
};

#[derive(sqlx::FromRow)]
struct SuperviseeRow {
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

impl From<SuperviseeRow> for SuperviseeWatch {
    fn from(row: SuperviseeRow) -> Self {
        Self {
            name: row.name,
            jurisdiction: Jurisdiction {
                township_code: row.township_code,
                county_code: row.county_code,
            },
            level: row.level.as_deref().and_then(Level::parse),
            status: row.status.as_deref().and_then(SuperviseeStatus::parse),
            version: row.version,
            last_contact_at: row.last_contact_at,
            last_in_person_at: row.last_in_person_at,
            last_checkin_id: row.last_checkin_id,
        }
    }
}

/// A supervisee as known, locked for the rest of the transaction.
pub async fn supervisee_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<SuperviseeWatch>, ServiceError> {
    let row: Option<SuperviseeRow> = sqlx::query_as(
        "SELECT name, township_code, county_code, level, status, version, last_contact_at, last_in_person_at,
                last_checkin_id
         FROM supervisees WHERE supervisee_id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(SuperviseeWatch::from))
}

/// Applies a registry snapshot. A known last contact is kept; `first_contact` fills it (and
/// the in-person one) only where none is known yet.
pub async fn save_supervisee(
    conn: &mut PgConnection,
    snapshot: &SuperviseeSnapshot,
    first_contact: Option<DateTime<Utc>>,
) -> Result<(), ServiceError> {
    sqlx::query(
        "INSERT INTO supervisees (supervisee_id, name, township_code, county_code, level, status, version,
             last_contact_at, last_in_person_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, now())
         ON CONFLICT (supervisee_id) DO UPDATE SET name = $2, township_code = $3, county_code = $4,
             level = $5, status = $6, version = $7,
             last_contact_at = COALESCE(supervisees.last_contact_at, $8),
             last_in_person_at = COALESCE(supervisees.last_in_person_at, $8), updated_at = now()",
    )
    .bind(snapshot.id)
    .bind(&snapshot.name)
    .bind(&snapshot.jurisdiction.township_code)
    .bind(&snapshot.jurisdiction.county_code)
    .bind(snapshot.level.map(Level::as_str))
    .bind(snapshot.status.map(SuperviseeStatus::as_str))
    .bind(snapshot.version)
    .bind(first_contact)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a verified contact. An offline check-in can arrive after newer ones: the latest
/// contact (and the check-in that made it) is kept.
pub async fn record_contact(conn: &mut PgConnection, checkin: &Checkin) -> Result<(), ServiceError> {
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
    .bind(checkin.supervisee)
    .bind(&checkin.jurisdiction.township_code)
    .bind(&checkin.jurisdiction.county_code)
    .bind(checkin.device_time)
    .bind(checkin.in_person())
    .bind(&checkin.checkin_id)
    .execute(conn)
    .await?;
    Ok(())
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
    expected_release_date: NaiveDate,
    ack_since: Option<DateTime<Utc>>,
    acknowledged_at: Option<DateTime<Utc>>,
    actual_release_time: Option<DateTime<Utc>>,
    gate_collected_at: Option<DateTime<Utc>>,
    version: i64,
}

impl From<HandoverRow> for HandoverWatch {
    fn from(row: HandoverRow) -> Self {
        Self {
            person_name: row.person_name,
            prison_id: row.prison_id,
            prison_reference: row.prison_reference,
            category: ReleaseCategory::parse(&row.category),
            jurisdiction: Jurisdiction {
                township_code: row.township_code,
                county_code: row.county_code,
            },
            key_target: row.key_target,
            status: HandoverStatus::parse(&row.status),
            expected_release_date: row.expected_release_date,
            ack_since: row.ack_since,
            acknowledged_at: row.acknowledged_at,
            actual_release_time: row.actual_release_time,
            gate_collected_at: row.gate_collected_at,
            version: row.version,
        }
    }
}

/// A handover as known, locked for the rest of the transaction.
pub async fn handover_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<HandoverWatch>, ServiceError> {
    let row: Option<HandoverRow> = sqlx::query_as(
        "SELECT person_name, prison_id, prison_reference, category, township_code, county_code, key_target, status,
                expected_release_date, ack_since, acknowledged_at, actual_release_time, gate_collected_at, version
         FROM handovers WHERE handover_id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(HandoverWatch::from))
}

/// Applies a handover snapshot, with since when its destination has had the notice.
pub async fn save_handover(
    conn: &mut PgConnection,
    snapshot: &HandoverSnapshot,
    ack_since: Option<DateTime<Utc>>,
) -> Result<(), ServiceError> {
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
    .bind(snapshot.id)
    .bind(&snapshot.person_name)
    .bind(&snapshot.prison_id)
    .bind(&snapshot.prison_reference)
    .bind(snapshot.category.as_str())
    .bind(&snapshot.destination.township_code)
    .bind(&snapshot.destination.county_code)
    .bind(snapshot.key_target)
    .bind(snapshot.status.as_str())
    .bind(snapshot.expected_release_date)
    .bind(snapshot.notified_at)
    .bind(ack_since)
    .bind(snapshot.acknowledged_at)
    .bind(snapshot.actual_release_time)
    .bind(snapshot.gate_collected_at)
    .bind(snapshot.reported_in_at)
    .bind(snapshot.version)
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes every deadline of a subject (before its new set is computed).
pub async fn clear_deadlines(conn: &mut PgConnection, subject_id: Uuid) -> Result<(), ServiceError> {
    sqlx::query("DELETE FROM deadlines WHERE subject_id = $1")
        .bind(subject_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Stores a subject's deadlines (after [`clear_deadlines`]).
pub async fn add_deadlines(
    conn: &mut PgConnection,
    subject_id: Uuid,
    deadlines: &[Deadline],
) -> Result<(), ServiceError> {
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

/// A deadline row whose time has come, as stored.
#[derive(Debug, sqlx::FromRow)]
pub struct DueRow {
    pub subject_id: Uuid,
    pub track: String,
    pub due_at: DateTime<Utc>,
    pub grace_seconds: i64,
    pub since_at: DateTime<Utc>,
}

/// Claims up to `batch` deadlines due by `now`, earliest first, skipping rows another
/// replica holds; they stay locked until the transaction ends.
pub async fn claim_due(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    batch: i64,
) -> Result<Vec<DueRow>, ServiceError> {
    Ok(sqlx::query_as(
        "SELECT subject_id, track, due_at, grace_seconds, since_at FROM deadlines
         WHERE fire_at <= $1 ORDER BY fire_at LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(now)
    .bind(batch)
    .fetch_all(conn)
    .await?)
}

/// Removes one claimed deadline (its alert carries it on).
pub async fn remove_deadline(
    conn: &mut PgConnection,
    subject_id: Uuid,
    track: &str,
) -> Result<(), ServiceError> {
    sqlx::query("DELETE FROM deadlines WHERE subject_id = $1 AND track = $2")
        .bind(subject_id)
        .bind(track)
        .execute(conn)
        .await?;
    Ok(())
}
