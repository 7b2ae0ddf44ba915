//! What is watched: the supervisee and handover projections (`supervisees`, `handovers`),
//! each row locked while an event or a deadline works on it. Whoever changes a subject's
//! deadlines locks the subject's row first (`deadlines` lock after it), so the consumer and
//! the scheduler never wait on each other in opposite orders.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use mesh_kit::error::ServiceError;
use sqlx::{PgConnection, Row as _, postgres::PgRow};
use uuid::Uuid;

use crate::domain::{
    Jurisdiction,
    contacts::ContactUpdate,
    policy::{Level, ReleaseCategory},
    watch::{
        Episode, HandoverSnapshot, HandoverStatus, HandoverWatch, SuperviseeSnapshot, SuperviseeStatus,
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
    episode: i32,
    episode_since: Option<DateTime<Utc>>,
    report_in_from: Option<DateTime<Utc>>,
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
            episode: row.episode,
            episode_since: row.episode_since,
            report_in_from: row.report_in_from,
        }
    }
}

const SUPERVISEE_COLUMNS: &str = "name, township_code, county_code, level, status, version, last_contact_at,
    last_in_person_at, last_checkin_id, episode, episode_since, report_in_from";

/// A supervisee as known, locked for the rest of the transaction.
pub async fn supervisee_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<SuperviseeWatch>, ServiceError> {
    Ok(lock_supervisees(conn, &[id]).await?.remove(&id))
}

/// The supervisees among `ids` that are known, locked for the rest of the transaction in id
/// order (one statement for a run of check-ins; two consumers locking overlapping sets take
/// them in the same order).
pub async fn lock_supervisees(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, SuperviseeWatch>, ServiceError> {
    let rows: Vec<IdSupervisee> = sqlx::query_as(&format!(
        "SELECT supervisee_id, {SUPERVISEE_COLUMNS} FROM supervisees WHERE supervisee_id = ANY($1)
         ORDER BY supervisee_id FOR UPDATE"
    ))
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.supervisee_id, row.row.into()))
        .collect())
}

/// Subject rows the scheduler tried to lock without waiting; the ids in neither list are
/// busy (another transaction holds them: an event is being applied), tried again next round.
#[derive(Debug)]
pub struct Locked<T> {
    /// Locked for the rest of the transaction.
    pub held: Vec<(Uuid, T)>,
    /// No such row.
    pub missing: Vec<Uuid>,
}

/// A row read with the id of its subject.
struct WithId<R> {
    id: Uuid,
    row: R,
}

impl<'r, R: sqlx::FromRow<'r, PgRow>> sqlx::FromRow<'r, PgRow> for WithId<R> {
    fn from_row(row: &'r PgRow) -> sqlx::Result<Self> {
        Ok(Self {
            id: row.try_get("subject_id")?,
            row: R::from_row(row)?,
        })
    }
}

/// Locks the rows of `table` whose `key` is among `ids` without waiting, reading `columns`,
/// in one statement; the rows are taken in key order. Callers pass fixed table, key and
/// column names, never input.
async fn try_lock_all<R>(
    conn: &mut PgConnection,
    (table, key, columns): (&str, &str, &str),
    ids: &[Uuid],
) -> Result<Locked<R>, ServiceError>
where
    R: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
{
    if ids.is_empty() {
        return Ok(Locked {
            held: Vec::new(),
            missing: Vec::new(),
        });
    }
    let rows: Vec<WithId<R>> = sqlx::query_as(&format!(
        "SELECT {key} AS subject_id, {columns} FROM {table} WHERE {key} = ANY($1)
         ORDER BY {key} FOR UPDATE SKIP LOCKED"
    ))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let held: Vec<(Uuid, R)> = rows.into_iter().map(|row| (row.id, row.row)).collect();
    // Only when some were not locked: busy, or missing?
    let missing = if held.len() == ids.len() {
        Vec::new()
    } else {
        sqlx::query_scalar(&format!(
            "SELECT id FROM UNNEST($1::uuid[]) AS id WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE {key} = id)"
        ))
        .bind(ids)
        .fetch_all(conn)
        .await?
    };
    Ok(Locked { held, missing })
}

impl<R> Locked<R> {
    fn map<T>(self, into: impl Fn(R) -> T) -> Locked<T> {
        Locked {
            held: self.held.into_iter().map(|(id, row)| (id, into(row))).collect(),
            missing: self.missing,
        }
    }
}

/// Supervisees locked without waiting (the scheduler never queues behind the consumer).
pub async fn try_lock_supervisees(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Locked<SuperviseeWatch>, ServiceError> {
    let locked =
        try_lock_all::<SuperviseeRow>(conn, ("supervisees", "supervisee_id", SUPERVISEE_COLUMNS), ids)
            .await?;
    Ok(locked.map(SuperviseeWatch::from))
}

/// Handovers locked without waiting.
pub async fn try_lock_handovers(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Locked<HandoverWatch>, ServiceError> {
    let locked =
        try_lock_all::<HandoverRow>(conn, ("handovers", "handover_id", HANDOVER_COLUMNS), ids).await?;
    Ok(locked.map(HandoverWatch::from))
}

/// Applies a registry snapshot and the episode it leaves. A known last contact is kept;
/// `first_contact` fills it (and the in-person one) only where none is known yet.
pub async fn save_supervisee(
    conn: &mut PgConnection,
    snapshot: &SuperviseeSnapshot,
    first_contact: Option<DateTime<Utc>>,
    episode: Episode,
    report_in_from: Option<DateTime<Utc>>,
) -> Result<(), ServiceError> {
    sqlx::query(
        "INSERT INTO supervisees (supervisee_id, name, township_code, county_code, level, status, version,
             last_contact_at, last_in_person_at, episode, episode_since, report_in_from, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11, now())
         ON CONFLICT (supervisee_id) DO UPDATE SET name = $2, township_code = $3, county_code = $4,
             level = $5, status = $6, version = $7,
             last_contact_at = COALESCE(supervisees.last_contact_at, $8),
             last_in_person_at = COALESCE(supervisees.last_in_person_at, $8),
             episode = $9, episode_since = $10,
             report_in_from = COALESCE($11, supervisees.report_in_from), updated_at = now()",
    )
    .bind(snapshot.id)
    .bind(&snapshot.name)
    .bind(&snapshot.jurisdiction.township_code)
    .bind(&snapshot.jurisdiction.county_code)
    .bind(snapshot.level.map(Level::as_str))
    .bind(snapshot.status.map(SuperviseeStatus::as_str))
    .bind(snapshot.version)
    .bind(first_contact)
    .bind(episode.number)
    .bind(episode.since)
    .bind(report_in_from)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records the contacts a run of verified check-ins left (`domain::contacts`), one row per
/// person in one statement. An offline check-in can arrive after newer ones: each time only
/// moves forward, and the check-in id follows the newest contact.
pub async fn record_contacts(conn: &mut PgConnection, updates: &[ContactUpdate]) -> Result<(), ServiceError> {
    if updates.is_empty() {
        return Ok(());
    }
    let column = |value: fn(&ContactUpdate) -> &str| updates.iter().map(value).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO supervisees (supervisee_id, township_code, county_code, last_contact_at, last_in_person_at,
             last_checkin_id, updated_at)
         SELECT id, township, county, contact, in_person, checkin, now()
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::text[])
             AS update (id, township, county, contact, in_person, checkin)
         ON CONFLICT (supervisee_id) DO UPDATE SET
             last_contact_at = GREATEST(supervisees.last_contact_at, excluded.last_contact_at),
             last_in_person_at = GREATEST(supervisees.last_in_person_at, excluded.last_in_person_at),
             last_checkin_id = CASE WHEN supervisees.last_contact_at IS NULL
                                         OR excluded.last_contact_at >= supervisees.last_contact_at
                                    THEN excluded.last_checkin_id ELSE supervisees.last_checkin_id END,
             updated_at = now()",
    )
    .bind(updates.iter().map(|update| update.supervisee).collect::<Vec<_>>())
    .bind(column(|update| &update.jurisdiction.township_code))
    .bind(column(|update| &update.jurisdiction.county_code))
    .bind(updates.iter().map(|update| update.last_contact_at).collect::<Vec<_>>())
    .bind(updates.iter().map(|update| update.last_in_person_at).collect::<Vec<_>>())
    .bind(column(|update| &update.last_checkin_id))
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
    registered: bool,
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
            registered: row.registered,
        }
    }
}

const HANDOVER_COLUMNS: &str = "person_name, prison_id, prison_reference, category, township_code, county_code,
    key_target, status, expected_release_date, ack_since, acknowledged_at, actual_release_time, gate_collected_at,
    version, registered_supervisee_id IS NOT NULL AS registered";

/// A handover as known, locked for the rest of the transaction.
pub async fn handover_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<HandoverWatch>, ServiceError> {
    let row: Option<HandoverRow> = sqlx::query_as(&format!(
        "SELECT {HANDOVER_COLUMNS} FROM handovers WHERE handover_id = $1 FOR UPDATE"
    ))
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

/// Records that the registry registered `supervisee` from the handover; false when the
/// handover is not known here.
pub async fn mark_registered(
    conn: &mut PgConnection,
    handover_id: Uuid,
    supervisee: Uuid,
) -> Result<bool, ServiceError> {
    let updated = sqlx::query("UPDATE handovers SET registered_supervisee_id = $2 WHERE handover_id = $1")
        .bind(handover_id)
        .bind(supervisee)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(updated > 0)
}

#[derive(sqlx::FromRow)]
struct IdSupervisee {
    supervisee_id: Uuid,
    #[sqlx(flatten)]
    row: SuperviseeRow,
}

#[derive(sqlx::FromRow)]
struct IdHandover {
    handover_id: Uuid,
    #[sqlx(flatten)]
    row: HandoverRow,
}

/// The supervisees among `ids` that are known, unlocked (the coverage reconciliation reads
/// many; it locks one only to act on it).
pub async fn supervisees(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, SuperviseeWatch>, ServiceError> {
    let rows: Vec<IdSupervisee> = sqlx::query_as(&format!(
        "SELECT supervisee_id, {SUPERVISEE_COLUMNS} FROM supervisees WHERE supervisee_id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.supervisee_id, row.row.into()))
        .collect())
}

/// The handovers among `ids` that are known, unlocked.
pub async fn handovers(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, HandoverWatch>, ServiceError> {
    let rows: Vec<IdHandover> = sqlx::query_as(&format!(
        "SELECT handover_id, {HANDOVER_COLUMNS} FROM handovers WHERE handover_id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.handover_id, row.row.into()))
        .collect())
}
