//! Resettlement bases: the row, its reads (single and paged by name) and writes.

use chrono::{DateTime, Utc};
use mesh_kit::error::{ServiceError, is_unique_violation};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Lock, load_one, resume_after};
use crate::{
    domain::{BaseProfile, BaseType},
    request::{BaseQuery, NewBase},
};

/// A base as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Base {
    pub id: Uuid,
    pub name: String,
    pub township_code: String,
    pub county_code: String,
    pub base_type: BaseType,
    pub contact_name: String,
    pub contact_phone: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

impl Base {
    /// What an office maintains of it.
    pub fn profile(&self) -> BaseProfile {
        BaseProfile {
            name: self.name.clone(),
            base_type: self.base_type,
            contact_name: self.contact_name.clone(),
            contact_phone: self.contact_phone.clone(),
            active: self.active,
        }
    }
}

const COLUMNS: &str = "id, name, township_code, county_code, base_type, contact_name, contact_phone, active, \
     created_at, updated_at, version";

/// The base name is unique per township (`bases_name_per_township`).
fn name_taken(error: sqlx::Error) -> ServiceError {
    if is_unique_violation(&error) {
        ServiceError::conflict("the township already has a base with this name")
    } else {
        error.into()
    }
}

pub async fn load(conn: &mut PgConnection, id: Uuid, lock: Lock) -> Result<Base, ServiceError> {
    let sql = format!("SELECT {COLUMNS} FROM bases WHERE id = $1{}", lock.clause(None));
    load_one(conn, &sql, id, "no such base").await
}

pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    base: &NewBase,
    now: DateTime<Utc>,
) -> Result<Base, ServiceError> {
    sqlx::query_as(&format!(
        "INSERT INTO bases (id, name, township_code, county_code, base_type, contact_name, contact_phone, active,
             created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, true, $8, $8) RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(&base.name)
    .bind(&base.township_code)
    .bind(&base.county_code)
    .bind(base.base_type)
    .bind(&base.contact_name)
    .bind(&base.contact_phone)
    .bind(now)
    .fetch_one(conn)
    .await
    .map_err(name_taken)
}

pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    profile: &BaseProfile,
    now: DateTime<Utc>,
) -> Result<Base, ServiceError> {
    sqlx::query_as(&format!(
        "UPDATE bases SET name = $2, base_type = $3, contact_name = $4, contact_phone = $5, active = $6,
             updated_at = $7, version = version + 1
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(&profile.name)
    .bind(profile.base_type)
    .bind(&profile.contact_name)
    .bind(&profile.contact_phone)
    .bind(profile.active)
    .bind(now)
    .fetch_one(conn)
    .await
    .map_err(name_taken)
}

/// A page of a county's (or township's) bases by name, then id, with one row more than the
/// page when another page follows.
pub async fn list(conn: &mut PgConnection, query: &BaseQuery) -> Result<Vec<Base>, ServiceError> {
    let (after_name, after_id) = resume_after(&query.page);
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM bases
         WHERE county_code = $1 AND ($2::text IS NULL OR township_code = $2)
           AND ($3::text IS NULL OR base_type = $3) AND ($4 OR active)
           AND ($5::text IS NULL OR (name, id) > ($5, $6))
         ORDER BY name, id LIMIT $7"
    ))
    .bind(query.area.county_code())
    .bind(query.area.township_code())
    .bind(query.base_type)
    .bind(query.include_inactive)
    .bind(after_name)
    .bind(after_id)
    .bind(query.page.fetch_limit())
    .fetch_all(conn)
    .await?;
    Ok(rows)
}
