//! The SQL of recording a group of check-ins in one transaction, set-based: one statement
//! per table whatever the group's size (`= ANY` reads, `UNNEST` writes), so a busy service
//! pays a few round trips per group instead of per check-in.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use mesh_kit::{auth::Caller, error::ServiceError};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::{CHECKIN_COLUMNS, CheckinRow, SuperviseeRow};
use crate::domain::{Checkin, Circle, Identity, Supervisee};

/// The stored check-ins among `ids`, by id (read on the pool or in a transaction).
pub async fn find_checkins(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Checkin>, ServiceError> {
    let rows: Vec<CheckinRow> = sqlx::query_as(&format!(
        "SELECT {CHECKIN_COLUMNS} FROM checkins WHERE checkin_id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|row| Checkin::try_from(row).map(|checkin| (checkin.checkin_id, checkin)))
        .collect()
}

#[derive(sqlx::FromRow)]
struct IdentifiedSuperviseeRow {
    id: Uuid,
    #[sqlx(flatten)]
    supervisee: SuperviseeRow,
}

/// The projected supervisees among `ids` that the registry has told of, by id.
pub async fn find_supervisees(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Supervisee>, ServiceError> {
    let rows: Vec<IdentifiedSuperviseeRow> =
        sqlx::query_as("SELECT id, township_code, county_code, status FROM supervisees WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(conn)
            .await?;
    rows.into_iter()
        .map(|row| Supervisee::try_from(row.supervisee).map(|supervisee| (row.id, supervisee)))
        .collect()
}

#[derive(sqlx::FromRow)]
struct NumberedSuperviseeRow {
    ordinal: i64,
    #[sqlx(flatten)]
    supervisee: SuperviseeRow,
}

/// For each (supervisee, time) of `moments`, in order, how the supervisee was supervised
/// then (the newest snapshot of a change made by that time), if this service has heard of one.
pub async fn supervisions_at(
    conn: &mut PgConnection,
    moments: &[(Uuid, DateTime<Utc>)],
) -> Result<Vec<Option<Supervisee>>, ServiceError> {
    let (ids, times): (Vec<Uuid>, Vec<DateTime<Utc>>) = moments.iter().copied().unzip();
    let rows: Vec<NumberedSuperviseeRow> = sqlx::query_as(
        "SELECT moment.ordinal, history.township_code, history.county_code, history.status
         FROM UNNEST($1::uuid[], $2::timestamptz[]) WITH ORDINALITY AS moment(supervisee_id, at, ordinal)
         CROSS JOIN LATERAL (
             SELECT township_code, county_code, status FROM supervision_history
             WHERE supervisee_id = moment.supervisee_id AND since <= moment.at
             ORDER BY version DESC LIMIT 1
         ) AS history",
    )
    .bind(&ids)
    .bind(&times)
    .fetch_all(conn)
    .await?;
    let mut supervisions: Vec<Option<Supervisee>> = vec![None; moments.len()];
    for row in rows {
        // Ordinals count from 1 over `moments`.
        let slot = usize::try_from(row.ordinal - 1)
            .ok()
            .and_then(|index| supervisions.get_mut(index))
            .ok_or_else(|| ServiceError::internal("supervision history row out of range"))?;
        *slot = Some(Supervisee::try_from(row.supervisee)?);
    }
    Ok(supervisions)
}

/// The circles each of `townships` has set, in the order given (a township that has set
/// none is absent).
pub async fn circles_of(
    conn: &mut PgConnection,
    townships: &[String],
) -> Result<HashMap<String, Vec<Circle>>, ServiceError> {
    let rows: Vec<(String, f64, f64, f64)> = sqlx::query_as(
        "SELECT township_code, latitude, longitude, radius_m FROM permitted_area_circles
         WHERE township_code = ANY($1) ORDER BY township_code, position",
    )
    .bind(townships)
    .fetch_all(conn)
    .await?;
    let mut circles: HashMap<String, Vec<Circle>> = HashMap::new();
    for (township_code, latitude, longitude, radius_m) in rows {
        circles.entry(township_code).or_default().push(Circle {
            latitude,
            longitude,
            radius_m,
        });
    }
    Ok(circles)
}

/// Stores each check-in with the caller who recorded it and returns those stored now (times
/// to the microsecond), by id; an id already taken (a twin committed first) is skipped. The
/// ids must be distinct. Rows go in id order, so two groups sharing ids lock them in the
/// same order and never deadlock.
pub async fn insert_checkins(
    conn: &mut PgConnection,
    checkins: &[(&Checkin, &Caller)],
) -> Result<HashMap<Uuid, Checkin>, ServiceError> {
    let rows: Vec<CheckinRow> = sqlx::query_as(&format!(
        "INSERT INTO checkins (checkin_id, supervisee_id, method, recording_officer_id, device_time, received_at,
             latitude, longitude, accuracy_m, face_match_score, manual_officer_id, manual_note,
             identity_verified, captured_offline, out_of_area, distance_outside_m, township_code,
             county_code, note, content_sha256, recorded_by_subject, recorded_by_role)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[],
             $6::timestamptz[], $7::float8[], $8::float8[], $9::float8[], $10::float8[], $11::text[],
             $12::text[], $13::bool[], $14::bool[], $15::bool[], $16::float8[], $17::text[], $18::text[],
             $19::text[], $20::bytea[], $21::text[], $22::text[])
         ORDER BY 1
         ON CONFLICT (checkin_id) DO NOTHING
         RETURNING {CHECKIN_COLUMNS}"
    ))
    .bind(column(checkins, |checkin, _| checkin.checkin_id))
    .bind(column(checkins, |checkin, _| checkin.supervisee_id))
    .bind(column(checkins, |checkin, _| checkin.method.as_str()))
    .bind(column(checkins, |checkin, _| checkin.recording_officer_id.as_str()))
    .bind(column(checkins, |checkin, _| checkin.device_time))
    .bind(column(checkins, |checkin, _| checkin.received_at))
    .bind(column(checkins, |checkin, _| checkin.position.map(|p| p.latitude)))
    .bind(column(checkins, |checkin, _| checkin.position.map(|p| p.longitude)))
    .bind(column(checkins, |checkin, _| checkin.position.map(|p| p.accuracy_m)))
    .bind(column(checkins, |checkin, _| match checkin.identity {
        Identity::FaceMatch { score } => Some(score),
        Identity::Manual { .. } => None,
    }))
    .bind(column(checkins, |checkin, _| manual(checkin).map(|(officer_id, _)| officer_id)))
    .bind(column(checkins, |checkin, _| manual(checkin).map(|(_, note)| note)))
    .bind(column(checkins, |checkin, _| checkin.identity_verified))
    .bind(column(checkins, |checkin, _| checkin.captured_offline))
    .bind(column(checkins, |checkin, _| checkin.area.out_of_area))
    .bind(column(checkins, |checkin, _| checkin.area.distance_outside_m))
    .bind(column(checkins, |checkin, _| checkin.jurisdiction.township_code.as_str()))
    .bind(column(checkins, |checkin, _| checkin.jurisdiction.county_code.as_str()))
    .bind(column(checkins, |checkin, _| checkin.note.as_str()))
    .bind(column(checkins, |checkin, _| checkin.fingerprint.as_slice()))
    .bind(column(checkins, |_, caller| caller.subject.as_str()))
    .bind(column(checkins, |_, caller| caller.role.as_str()))
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|row| Checkin::try_from(row).map(|checkin| (checkin.checkin_id, checkin)))
        .collect()
}

/// One column of a multi-row insert: `value` of each check-in, in order.
fn column<'a, T>(
    checkins: &[(&'a Checkin, &'a Caller)],
    value: impl Fn(&'a Checkin, &'a Caller) -> T,
) -> Vec<T> {
    checkins
        .iter()
        .map(|(checkin, caller)| value(checkin, caller))
        .collect()
}

/// The officer and note of a manual identity check.
fn manual(checkin: &Checkin) -> Option<(&str, &str)> {
    match &checkin.identity {
        Identity::Manual { officer_id, note } => Some((officer_id.as_str(), note.as_str())),
        Identity::FaceMatch { .. } => None,
    }
}
