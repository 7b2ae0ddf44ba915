//! Job openings, always read with their base: the row, its reads (single, paged newest
//! first, and the ones a candidate could match) and writes.

use chrono::{DateTime, NaiveDate, Utc};
use mesh_kit::error::ServiceError;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{LIVE_PLACEMENT, Lock, count, load_one, stored_count};
use crate::{
    domain::{Offence, OpeningFacts, OpeningStatus, Sector},
    request::{NewOpening, OpeningQuery, Scope},
};

/// An opening as stored, with what the API needs of its base.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Opening {
    pub id: Uuid,
    pub base_id: Uuid,
    pub title: String,
    pub sector: Sector,
    pub description: String,
    pub required_skills: Vec<String>,
    pub positions_total: i32,
    pub positions_filled: i32,
    pub work_township_code: String,
    pub work_county_code: String,
    pub work_latitude: Option<f64>,
    pub work_longitude: Option<f64>,
    pub closing_date: NaiveDate,
    pub excluded_offences: Vec<Offence>,
    pub status: OpeningStatus,
    pub close_reason: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// From the joined base.
    pub base_name: String,
    pub base_active: bool,
    pub base_township_code: String,
    pub base_county_code: String,
}

impl Opening {
    /// (latitude, longitude) of the work, when known.
    pub fn location(&self) -> Option<(f64, f64)> {
        self.work_latitude.zip(self.work_longitude)
    }

    pub fn positions_total(&self) -> u32 {
        count(self.positions_total)
    }

    pub fn positions_filled(&self) -> u32 {
        count(self.positions_filled)
    }

    /// What the matching and lifecycle rules read.
    pub fn facts(&self) -> OpeningFacts {
        OpeningFacts {
            status: self.status,
            base_active: self.base_active,
            closing_date: self.closing_date,
            positions_total: self.positions_total(),
            positions_filled: self.positions_filled(),
            sector: self.sector,
            required_skills: self.required_skills.clone(),
            work_township_code: self.work_township_code.clone(),
            work_county_code: self.work_county_code.clone(),
            work_location: self.location(),
            excluded_offences: self.excluded_offences.clone(),
        }
    }
}

/// Openings are always read with their base (`o` and `b`).
const COLUMNS: &str = "o.id, o.base_id, o.title, o.sector, o.description, o.required_skills, \
     o.positions_total, o.positions_filled, o.work_township_code, o.work_county_code, o.work_latitude, \
     o.work_longitude, o.closing_date, o.excluded_offences, o.status, o.close_reason, o.created_at, o.updated_at, \
     b.name AS base_name, b.active AS base_active, b.township_code AS base_township_code, \
     b.county_code AS base_county_code";

/// Most open openings read for one match; far above a city's open openings, it only bounds
/// the work of one request.
const MATCH_SCAN_LIMIT: i64 = 5000;

/// The opening; with [`Lock::Update`] only the opening's row is locked, not its base's.
pub async fn load(conn: &mut PgConnection, id: Uuid, lock: Lock) -> Result<Opening, ServiceError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM openings o JOIN bases b ON b.id = o.base_id WHERE o.id = $1{}",
        lock.clause(Some("o"))
    );
    load_one(conn, &sql, id, "no such opening").await
}

/// Inserts an open opening and reads it back with its base.
pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    opening: &NewOpening,
    now: DateTime<Utc>,
) -> Result<Opening, ServiceError> {
    let (latitude, longitude) = opening.work_location.unzip();
    sqlx::query(
        "INSERT INTO openings (id, base_id, title, sector, description, required_skills, positions_total,
             work_township_code, work_county_code, work_latitude, work_longitude, closing_date,
             excluded_offences, status, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)",
    )
    .bind(id)
    .bind(opening.base_id)
    .bind(&opening.title)
    .bind(opening.sector)
    .bind(&opening.description)
    .bind(&opening.required_skills)
    .bind(stored_count(opening.positions_total))
    .bind(&opening.work_township_code)
    .bind(&opening.work_county_code)
    .bind(latitude)
    .bind(longitude)
    .bind(opening.closing_date)
    .bind(&opening.excluded_offences)
    .bind(OpeningStatus::Open)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    load(conn, id, Lock::None).await
}

/// Closes the opening and reads it back.
pub async fn close(
    conn: &mut PgConnection,
    id: Uuid,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Opening, ServiceError> {
    sqlx::query("UPDATE openings SET status = $2, close_reason = $3, updated_at = $4 WHERE id = $1")
        .bind(id)
        .bind(OpeningStatus::Closed)
        .bind(reason)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    load(conn, id, Lock::None).await
}

/// Records the opening's filled positions; the caller holds its row lock.
pub async fn set_positions_filled(
    conn: &mut PgConnection,
    id: Uuid,
    filled: u32,
    now: DateTime<Utc>,
) -> Result<(), ServiceError> {
    sqlx::query("UPDATE openings SET positions_filled = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(stored_count(filled))
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// A page of openings newest first, with one row more than the page when another follows.
pub async fn list(conn: &mut PgConnection, query: &OpeningQuery) -> Result<Vec<Opening>, ServiceError> {
    let (base_id, township, county) = match &query.scope {
        Scope::Base(base_id) => (Some(*base_id), None, None),
        Scope::Area(area) => match area.township_code() {
            Some(township) => (None, Some(township), None),
            None => (None, None, Some(area.county_code())),
        },
    };
    let (after_time, after_id) = query
        .page
        .after
        .map(|(micros, id)| {
            (
                DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MIN_UTC),
                id,
            )
        })
        .unzip();
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM openings o JOIN bases b ON b.id = o.base_id
         WHERE ($1::uuid IS NULL OR o.base_id = $1) AND ($2::text IS NULL OR o.work_township_code = $2)
           AND ($3::text IS NULL OR o.work_county_code = $3) AND ($4::text IS NULL OR o.status = $4)
           AND ($5::text IS NULL OR o.sector = $5)
           AND ($6::timestamptz IS NULL OR (o.created_at, o.id) < ($6, $7))
         ORDER BY o.created_at DESC, o.id DESC LIMIT $8"
    ))
    .bind(base_id)
    .bind(township)
    .bind(county)
    .bind(query.status)
    .bind(query.sector)
    .bind(after_time)
    .bind(after_id)
    .bind(query.page.fetch_limit())
    .fetch_all(conn)
    .await?;
    Ok(rows)
}

/// The openings that can possibly match `candidate_id` today: open, at an active base, not
/// full, not past closing, in `county_only` when given (a supervisee's own county), and not
/// already live for this candidate. The domain rules then decide every one.
pub async fn matchable(
    conn: &mut PgConnection,
    today: NaiveDate,
    county_only: Option<&str>,
    candidate_id: Uuid,
) -> Result<Vec<Opening>, ServiceError> {
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM openings o JOIN bases b ON b.id = o.base_id
         WHERE o.status = $5 AND b.active AND o.positions_filled < o.positions_total
           AND o.closing_date >= $1 AND ($2::text IS NULL OR o.work_county_code = $2)
           AND NOT EXISTS (SELECT 1 FROM placements p WHERE p.opening_id = o.id AND p.candidate_id = $3
                           AND p.{LIVE_PLACEMENT})
         ORDER BY o.id LIMIT $4"
    ))
    .bind(today)
    .bind(county_only)
    .bind(candidate_id)
    .bind(MATCH_SCAN_LIMIT)
    .bind(OpeningStatus::Open)
    .fetch_all(conn)
    .await?;
    Ok(rows)
}
