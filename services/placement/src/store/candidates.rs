//! Candidates as the API reads and changes them: the row, its reads (single and paged by
//! name), the profile an office maintains, and the link to the current placement. (The
//! projection's writes are in [`super::sources`].)

use chrono::{DateTime, NaiveDate, Utc};
use mesh_kit::{error::ServiceError, jurisdiction::Directory};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Lock, load_one, resume_after};
use crate::{
    domain::{self, CandidateFacts, CandidateSource, Offence, Sector},
    request::{CandidateQuery, Profile},
};

/// A candidate as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Candidate {
    pub id: Uuid,
    pub source: CandidateSource,
    pub supervisee_id: Option<Uuid>,
    pub handover_id: Option<Uuid>,
    pub name: String,
    pub township_code: String,
    pub county_code: String,
    /// `None` when unknown (never "no offence").
    pub offence_category: Option<Offence>,
    pub offence_from_handover: bool,
    pub key_assistance_target: bool,
    pub skills: Vec<String>,
    pub sector_preferences: Vec<Sector>,
    /// As the source events say; see [`Candidate::is_active`].
    pub active: bool,
    pub assistance_ends_on: Option<NaiveDate>,
    pub current_placement_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Candidate {
    /// Whether the candidate looks for work `today`.
    pub fn is_active(&self, today: NaiveDate) -> bool {
        domain::candidate_active(self.active, self.assistance_ends_on, today)
    }

    /// What the matching and lifecycle rules read; distances are measured from the seat of
    /// the candidate's county.
    pub fn facts(&self, today: NaiveDate) -> CandidateFacts {
        CandidateFacts {
            source: self.source,
            township_code: self.township_code.clone(),
            county_code: self.county_code.clone(),
            offence: self.offence_category,
            skills: self.skills.clone(),
            sector_preferences: self.sector_preferences.clone(),
            active: self.is_active(today),
            home_seat: Directory::get()
                .county(&self.county_code)
                .map(|county| county.seat),
        }
    }
}

const COLUMNS: &str = "id, source, supervisee_id, handover_id, name, township_code, county_code, \
     offence_category, offence_from_handover, key_assistance_target, skills, sector_preferences, active, \
     assistance_ends_on, current_placement_id, created_at, updated_at";

pub async fn load(conn: &mut PgConnection, id: Uuid, lock: Lock) -> Result<Candidate, ServiceError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM candidates WHERE id = $1{}",
        lock.clause(None)
    );
    load_one(conn, &sql, id, "no such candidate").await
}

/// A page of a county's (or township's) candidates by name, then id, with one row more than
/// the page when another follows. Inactive ones (as of `today`) only when asked for.
pub async fn list(
    conn: &mut PgConnection,
    query: &CandidateQuery,
    today: NaiveDate,
) -> Result<Vec<Candidate>, ServiceError> {
    let (after_name, after_id) = resume_after(&query.page);
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM candidates
         WHERE county_code = $1 AND ($2::text IS NULL OR township_code = $2)
           AND ($3::text IS NULL OR source = $3)
           AND ($4 OR (active AND (assistance_ends_on IS NULL OR assistance_ends_on >= $5)))
           AND (NOT $6 OR current_placement_id IS NULL)
           AND ($7::text IS NULL OR (name, id) > ($7, $8))
         ORDER BY name, id LIMIT $9"
    ))
    .bind(query.area.county_code())
    .bind(query.area.township_code())
    .bind(query.source)
    .bind(query.include_inactive)
    .bind(today)
    .bind(query.only_unplaced)
    .bind(after_name)
    .bind(after_id)
    .bind(query.page.fetch_limit())
    .fetch_all(conn)
    .await?;
    Ok(rows)
}

/// Records the profile an office maintains (the offence category only when given).
pub async fn update_profile(
    conn: &mut PgConnection,
    profile: &Profile,
    now: DateTime<Utc>,
) -> Result<Candidate, ServiceError> {
    let candidate = sqlx::query_as(&format!(
        "UPDATE candidates SET skills = $2, sector_preferences = $3,
             offence_category = COALESCE($4, offence_category), updated_at = $5, version = version + 1
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(profile.candidate_id)
    .bind(&profile.skills)
    .bind(&profile.sector_preferences)
    .bind(profile.offence)
    .bind(now)
    .fetch_one(conn)
    .await?;
    Ok(candidate)
}

/// Makes `placement_id` the candidate's current placement; the caller holds the row lock.
pub async fn set_current_placement(
    conn: &mut PgConnection,
    id: Uuid,
    placement_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), ServiceError> {
    sqlx::query(
        "UPDATE candidates SET current_placement_id = $2, updated_at = $3, version = version + 1 WHERE id = $1",
    )
    .bind(id)
    .bind(placement_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Frees the candidate for the next proposal when `placement_id` is (still) the current one.
pub async fn release_current_placement(
    conn: &mut PgConnection,
    id: Uuid,
    placement_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), ServiceError> {
    sqlx::query(
        "UPDATE candidates SET current_placement_id = NULL, updated_at = $3, version = version + 1
         WHERE id = $1 AND current_placement_id = $2",
    )
    .bind(id)
    .bind(placement_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}
