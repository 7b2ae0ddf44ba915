//! The one place with SQL: the `supervisees` row and its reads (one, one locked, a page of a
//! township) and writes (a registration, a change). Rows come back as domain values.

use chrono::{DateTime, NaiveDate, Utc};
use mesh_kit::error::{ServiceError, is_unique_violation};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::{Category, Jurisdiction, Level, Registration, Supervisee, SupervisionStatus},
    sealing::{Sealed, Sealer},
};

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    name: String,
    national_id_sealed: Vec<u8>,
    category: String,
    term_start: NaiveDate,
    term_end: NaiveDate,
    level: String,
    township_code: String,
    county_code: String,
    officer_id: String,
    phone_sealed: Vec<u8>,
    address_sealed: Vec<u8>,
    status: String,
    needs_employment: bool,
    reported_at: Option<DateTime<Utc>>,
    handover_id: Option<String>,
    registered_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
}

const COLUMNS: &str = "id, name, national_id_sealed, category, term_start, term_end, level, township_code, \
     county_code, officer_id, phone_sealed, address_sealed, status, needs_employment, reported_at, handover_id, \
     registered_at, updated_at, version";

impl TryFrom<Row> for Supervisee {
    type Error = ServiceError;

    fn try_from(row: Row) -> Result<Self, ServiceError> {
        // The table's CHECK constraints admit only known values: anything else is a bug.
        let unknown = |what: &str| ServiceError::internal(format!("unknown stored {what}"));
        Ok(Supervisee {
            id: row.id,
            name: row.name,
            personal: Sealed {
                national_id: row.national_id_sealed,
                phone: row.phone_sealed,
                address: row.address_sealed,
            },
            category: Category::parse(&row.category).ok_or_else(|| unknown("category"))?,
            term_start: row.term_start,
            term_end: row.term_end,
            level: Level::parse(&row.level).ok_or_else(|| unknown("level"))?,
            jurisdiction: Jurisdiction {
                township_code: row.township_code,
                county_code: row.county_code,
            },
            officer_id: row.officer_id,
            status: SupervisionStatus::parse(&row.status).ok_or_else(|| unknown("status"))?,
            needs_employment: row.needs_employment,
            reported_at: row.reported_at,
            handover_id: row.handover_id,
            registered_at: row.registered_at,
            updated_at: row.updated_at,
            version: row.version,
        })
    }
}

/// A supervisee, if it exists.
pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<Supervisee>, ServiceError> {
    let row: Option<Row> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM supervisees WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.map(Supervisee::try_from).transpose()
}

/// A supervisee, locked until the transaction ends, so a change reads what it replaces.
pub async fn get_for_update(conn: &mut PgConnection, id: Uuid) -> Result<Option<Supervisee>, ServiceError> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM supervisees WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.map(Supervisee::try_from).transpose()
}

/// Up to `limit` supervisees of a township (optionally in one status) after the id `after`,
/// in id (registration) order.
pub async fn list(
    conn: &mut PgConnection,
    township_code: &str,
    status: Option<SupervisionStatus>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Supervisee>, ServiceError> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM supervisees
         WHERE township_code = $1 AND ($2::text IS NULL OR status = $2) AND ($3::uuid IS NULL OR id > $3)
         ORDER BY id LIMIT $4"
    ))
    .bind(township_code)
    .bind(status.map(SupervisionStatus::as_str))
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(Supervisee::try_from).collect()
}

/// Up to `limit` supervisees under supervision (active or absconded) after the id `after`,
/// in id order, across every township.
pub async fn under_supervision(
    conn: &mut PgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Supervisee>, ServiceError> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM supervisees
         WHERE status IN ('active', 'absconded') AND ($1::uuid IS NULL OR id > $1)
         ORDER BY id LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(Supervisee::try_from).collect()
}

/// The person's open (not final) supervision, locked until the transaction ends, found by
/// the national ID's blind index: at most one exists (a unique index keeps it so).
pub async fn open_of_person_for_update(
    conn: &mut PgConnection,
    national_id_index: &[u8],
) -> Result<Option<Supervisee>, ServiceError> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM supervisees
         WHERE national_id_index = $1 AND status NOT IN ('terminated', 'revoked', 'deceased') FOR UPDATE"
    ))
    .bind(national_id_index)
    .fetch_optional(conn)
    .await?;
    row.map(Supervisee::try_from).transpose()
}

/// Whether the handover has already registered a supervisee.
pub async fn registered_from_handover(
    conn: &mut PgConnection,
    handover_id: &str,
) -> Result<bool, ServiceError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM supervisees WHERE handover_id = $1)")
            .bind(handover_id)
            .fetch_one(conn)
            .await?,
    )
}

/// Inserts a registration, its personal fields sealed; `None` when a unique index refuses it
/// (the person already has an open supervision, or the handover already registered one).
pub async fn insert(
    conn: &mut PgConnection,
    sealer: &Sealer,
    registration: &Registration,
    handover_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<Supervisee>, ServiceError> {
    let (personal, national_id_index) = sealer.seal(
        registration.national_id.expose(),
        &registration.phone,
        &registration.address,
    );
    let inserted: Result<Row, sqlx::Error> = sqlx::query_as(&format!(
        "INSERT INTO supervisees (id, name, national_id_sealed, national_id_index, category, term_start, term_end,
             level, township_code, county_code, officer_id, phone_sealed, address_sealed, status,
             needs_employment, reported_at, handover_id, registered_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $18)
         RETURNING {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(&registration.name)
    .bind(personal.national_id)
    .bind(national_id_index)
    .bind(registration.category.as_str())
    .bind(registration.term_start)
    .bind(registration.term_end)
    .bind(registration.level.as_str())
    .bind(&registration.jurisdiction.township_code)
    .bind(&registration.jurisdiction.county_code)
    .bind(&registration.officer_id)
    .bind(personal.phone)
    .bind(personal.address)
    .bind(registration.initial_status().as_str())
    .bind(registration.needs_employment)
    .bind(registration.reported_at)
    .bind(handover_id)
    .bind(now)
    .fetch_one(conn)
    .await;
    match inserted {
        Ok(row) => Ok(Some(row.try_into()?)),
        Err(error) if is_unique_violation(&error) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// Writes a changed supervisee's level, jurisdiction, officer, status, report-in time and
/// handover link (the row must be
/// locked by [`get_for_update`] in the same transaction), stamping `now` and a new version.
pub async fn update(
    conn: &mut PgConnection,
    supervisee: &Supervisee,
    now: DateTime<Utc>,
) -> Result<Supervisee, ServiceError> {
    let row: Row = sqlx::query_as(&format!(
        "UPDATE supervisees SET level = $2, township_code = $3, county_code = $4, officer_id = $5, status = $6,
             reported_at = $7, handover_id = $9, updated_at = $8, version = version + 1
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(supervisee.id)
    .bind(supervisee.level.as_str())
    .bind(&supervisee.jurisdiction.township_code)
    .bind(&supervisee.jurisdiction.county_code)
    .bind(&supervisee.officer_id)
    .bind(supervisee.status.as_str())
    .bind(supervisee.reported_at)
    .bind(now)
    .bind(&supervisee.handover_id)
    .fetch_one(conn)
    .await?;
    row.try_into()
}
