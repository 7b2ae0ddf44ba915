//! The one place with SQL: the projected supervisees, the check-ins and the permitted areas,
//! their rows and how they become domain types. Every function runs on the connection it is
//! given (a [`Change`](mesh_kit::change::Change), a pooled connection, the consumer's
//! transaction), so the caller decides what one transaction holds. Recording check-ins,
//! a group at a time, is in [`group`] and [`publish`].

use chrono::{DateTime, Utc};
use mesh_kit::{auth::Caller, error::ServiceError};
use sqlx::PgConnection;
use uuid::Uuid;

mod group;
mod publish;

pub use self::{
    group::{circles_of, find_checkins, find_supervisees, insert_checkins, supervisions_at},
    publish::{Publication, publish_all},
};
use crate::domain::{
    AreaCheck, AreaVersion, Checkin, Circle, Identity, Jurisdiction, Method, Position, ProjectedSupervisee,
    Supervisee, SuperviseeStatus,
};

/// Applies a registry snapshot unless a newer (or the same) version is kept already: events
/// can be redelivered, replayed after a restart or reordered across a rebalance. Returns
/// whether it was applied.
pub async fn project_supervisee(
    conn: &mut PgConnection,
    supervisee: &ProjectedSupervisee,
) -> Result<bool, ServiceError> {
    let applied = sqlx::query(
        "INSERT INTO supervisees (id, name, township_code, county_code, status, level, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET
             name = EXCLUDED.name, township_code = EXCLUDED.township_code,
             county_code = EXCLUDED.county_code, status = EXCLUDED.status, level = EXCLUDED.level,
             version = EXCLUDED.version, projected_at = now()
         WHERE supervisees.version < EXCLUDED.version",
    )
    .bind(supervisee.id)
    .bind(&supervisee.name)
    .bind(&supervisee.jurisdiction.township_code)
    .bind(&supervisee.jurisdiction.county_code)
    .bind(supervisee.status.as_str())
    .bind(supervisee.level.as_str())
    .bind(supervisee.version)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(applied > 0)
}

/// Keeps how a just projected snapshot supervises the person, from `since` (the registry's
/// change time; the projection's clock when the event carried none). A repeat is a no-op.
pub async fn record_supervision(
    conn: &mut PgConnection,
    supervisee: &ProjectedSupervisee,
    since: Option<DateTime<Utc>>,
) -> Result<(), ServiceError> {
    sqlx::query(
        "INSERT INTO supervision_history (supervisee_id, version, township_code, county_code, status, since)
         VALUES ($1, $2, $3, $4, $5, COALESCE($6, now()))
         ON CONFLICT (supervisee_id, version) DO NOTHING",
    )
    .bind(supervisee.id)
    .bind(supervisee.version)
    .bind(&supervisee.jurisdiction.township_code)
    .bind(&supervisee.jurisdiction.county_code)
    .bind(supervisee.status.as_str())
    .bind(since)
    .execute(conn)
    .await?;
    Ok(())
}

/// A supervisee as projected from the registry.
#[derive(sqlx::FromRow)]
struct SuperviseeRow {
    township_code: String,
    county_code: String,
    status: String,
}

/// The projected supervisee `id`, if the registry has told of it.
pub async fn find_supervisee(conn: &mut PgConnection, id: Uuid) -> Result<Option<Supervisee>, ServiceError> {
    Ok(find_supervisees(conn, &[id]).await?.remove(&id))
}

impl TryFrom<SuperviseeRow> for Supervisee {
    type Error = ServiceError;

    fn try_from(row: SuperviseeRow) -> Result<Self, ServiceError> {
        Ok(Supervisee {
            status: SuperviseeStatus::parse(&row.status)
                .ok_or_else(|| ServiceError::internal("unknown projected supervisee status"))?,
            jurisdiction: Jurisdiction {
                township_code: row.township_code,
                county_code: row.county_code,
            },
        })
    }
}

#[derive(sqlx::FromRow)]
struct CheckinRow {
    checkin_id: Uuid,
    supervisee_id: Uuid,
    method: String,
    recording_officer_id: String,
    device_time: DateTime<Utc>,
    received_at: DateTime<Utc>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    accuracy_m: Option<f64>,
    face_match_score: Option<f64>,
    manual_officer_id: Option<String>,
    manual_note: Option<String>,
    identity_verified: bool,
    captured_offline: bool,
    out_of_area: bool,
    distance_outside_m: f64,
    township_code: String,
    county_code: String,
    note: String,
    content_sha256: Vec<u8>,
}

const CHECKIN_COLUMNS: &str = "checkin_id, supervisee_id, method, recording_officer_id, device_time, received_at, \
     latitude, longitude, accuracy_m, face_match_score, manual_officer_id, manual_note, identity_verified, \
     captured_offline, out_of_area, distance_outside_m, township_code, county_code, note, content_sha256";

impl TryFrom<CheckinRow> for Checkin {
    type Error = ServiceError;

    fn try_from(row: CheckinRow) -> Result<Self, ServiceError> {
        let method = Method::parse(&row.method)
            .ok_or_else(|| ServiceError::internal("unknown stored check-in method"))?;
        // The table's checks keep a position all or nothing, and exactly one verification.
        let position = match (row.latitude, row.longitude, row.accuracy_m) {
            (Some(latitude), Some(longitude), Some(accuracy_m)) => Some(Position {
                latitude,
                longitude,
                accuracy_m,
            }),
            _ => None,
        };
        let identity = match (row.face_match_score, row.manual_officer_id) {
            (Some(score), None) => Identity::FaceMatch { score },
            (None, Some(officer_id)) => Identity::Manual {
                officer_id,
                note: row.manual_note.unwrap_or_default(),
            },
            _ => {
                return Err(ServiceError::internal(
                    "stored check-in without one identity verification",
                ));
            }
        };
        Ok(Checkin {
            checkin_id: row.checkin_id,
            supervisee_id: row.supervisee_id,
            method,
            recording_officer_id: row.recording_officer_id,
            device_time: row.device_time,
            received_at: row.received_at,
            position,
            identity,
            identity_verified: row.identity_verified,
            captured_offline: row.captured_offline,
            area: AreaCheck {
                out_of_area: row.out_of_area,
                distance_outside_m: row.distance_outside_m,
            },
            jurisdiction: Jurisdiction {
                township_code: row.township_code,
                county_code: row.county_code,
            },
            note: row.note,
            fingerprint: row.content_sha256,
        })
    }
}

/// A supervisee's check-ins with device times in `[start, end)`, newest first, after the
/// check-in `after` (device time, id) of the previous page; at most `limit`.
pub async fn list_checkins(
    conn: &mut PgConnection,
    supervisee_id: Uuid,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Checkin>, ServiceError> {
    let rows: Vec<CheckinRow> = sqlx::query_as(&format!(
        "SELECT {CHECKIN_COLUMNS} FROM checkins
         WHERE supervisee_id = $1 AND device_time >= $2 AND device_time < $3
           AND ($4::timestamptz IS NULL OR (device_time, checkin_id) < ($4, $5::uuid))
         ORDER BY device_time DESC, checkin_id DESC LIMIT $6"
    ))
    .bind(supervisee_id)
    .bind(start)
    .bind(end)
    .bind(after.map(|(time, _)| time))
    .bind(after.map(|(_, id)| id))
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(Checkin::try_from).collect()
}

/// The circles a township has set, in the order given (none if it has set none).
pub async fn area_circles(conn: &mut PgConnection, township_code: &str) -> Result<Vec<Circle>, ServiceError> {
    let township_code = township_code.to_owned();
    let mut circles = circles_of(conn, std::slice::from_ref(&township_code)).await?;
    Ok(circles.remove(&township_code).unwrap_or_default())
}

#[derive(sqlx::FromRow)]
struct AreaRow {
    version: i64,
    updated_by_subject: String,
    updated_by_role: String,
    updated_at: DateTime<Utc>,
}

impl From<AreaRow> for AreaVersion {
    fn from(row: AreaRow) -> Self {
        AreaVersion {
            version: row.version,
            updated_by_subject: row.updated_by_subject,
            updated_by_role: row.updated_by_role,
            updated_at: row.updated_at,
        }
    }
}

/// The area a township has set, with its circles; `None` if it never set one.
pub async fn find_area(
    conn: &mut PgConnection,
    township_code: &str,
) -> Result<Option<(AreaVersion, Vec<Circle>)>, ServiceError> {
    let area: Option<AreaRow> = sqlx::query_as(
        "SELECT version, updated_by_subject, updated_by_role, updated_at
         FROM permitted_areas WHERE township_code = $1",
    )
    .bind(township_code)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(area) = area else {
        return Ok(None);
    };
    let circles = area_circles(conn, township_code).await?;
    Ok(Some((area.into(), circles)))
}

/// Replaces a township's permitted area with `circles`, set by `caller` at `now`, and
/// returns its new version.
pub async fn replace_area(
    conn: &mut PgConnection,
    township: &Jurisdiction,
    circles: &[Circle],
    caller: &Caller,
    now: DateTime<Utc>,
) -> Result<AreaVersion, ServiceError> {
    // The upsert locks the township's row, so concurrent replacements apply one after
    // the other and each bumps the version.
    let area: AreaRow = sqlx::query_as(
        "INSERT INTO permitted_areas (township_code, county_code, version, updated_by_subject, updated_by_role, updated_at)
         VALUES ($1, $2, 1, $3, $4, $5)
         ON CONFLICT (township_code) DO UPDATE SET
             version = permitted_areas.version + 1, updated_by_subject = EXCLUDED.updated_by_subject,
             updated_by_role = EXCLUDED.updated_by_role, updated_at = EXCLUDED.updated_at
         RETURNING version, updated_by_subject, updated_by_role, updated_at",
    )
    .bind(&township.township_code)
    .bind(&township.county_code)
    .bind(&caller.subject)
    .bind(caller.role.as_str())
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM permitted_area_circles WHERE township_code = $1")
        .bind(&township.township_code)
        .execute(&mut *conn)
        .await?;
    let positions: Vec<i32> = (0..circles.len())
        .map(|index| i32::try_from(index).unwrap_or(i32::MAX))
        .collect();
    let latitudes: Vec<f64> = circles.iter().map(|circle| circle.latitude).collect();
    let longitudes: Vec<f64> = circles.iter().map(|circle| circle.longitude).collect();
    let radii: Vec<f64> = circles.iter().map(|circle| circle.radius_m).collect();
    sqlx::query(
        "INSERT INTO permitted_area_circles (township_code, position, latitude, longitude, radius_m)
         SELECT $1, * FROM UNNEST($2::int4[], $3::float8[], $4::float8[], $5::float8[])",
    )
    .bind(&township.township_code)
    .bind(&positions)
    .bind(&latitudes)
    .bind(&longitudes)
    .bind(&radii)
    .execute(conn)
    .await?;
    Ok(area.into())
}
