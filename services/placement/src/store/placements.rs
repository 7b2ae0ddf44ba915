//! Placements: the row, the locking read of a lifecycle step (candidate, placement, opening),
//! the proposal's insert and each step's update.

use chrono::{DateTime, NaiveDate, Utc};
use mesh_kit::{
    auth::Caller,
    error::{ServiceError, is_unique_violation},
};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Candidate, LIVE_PLACEMENT, Lock, Opening, candidates, load_one, openings};
use crate::domain::{DeclinedBy, EndReason, PlacementStatus, Step};

/// A placement as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Placement {
    pub id: Uuid,
    pub candidate_id: Uuid,
    pub opening_id: Uuid,
    pub base_id: Uuid,
    pub status: PlacementStatus,
    /// The candidate's jurisdiction (moves with a transfer while the placement is live).
    pub township_code: String,
    pub county_code: String,
    pub proposed_by_subject: String,
    pub proposed_by_role: String,
    pub proposed_at: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub declined_at: Option<DateTime<Utc>>,
    pub declined_by: Option<DeclinedBy>,
    pub decline_reason: String,
    pub start_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
    pub end_reason: Option<EndReason>,
    pub end_note: String,
    pub note: String,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

const COLUMNS: &str = "id, candidate_id, opening_id, base_id, status, township_code, county_code, \
     proposed_by_subject, proposed_by_role, proposed_at, accepted_at, declined_at, declined_by, decline_reason, \
     start_date, end_date, end_reason, end_note, note, updated_at, version";

pub async fn load(conn: &mut PgConnection, id: Uuid, lock: Lock) -> Result<Placement, ServiceError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM placements WHERE id = $1{}",
        lock.clause(None)
    );
    load_one(conn, &sql, id, "no such placement").await
}

/// A placement with its candidate and opening, as a lifecycle step changes them.
#[derive(Debug, Clone)]
pub struct Locked {
    pub candidate: Candidate,
    pub placement: Placement,
    pub opening: Opening,
}

/// Locks the placement's candidate, the placement and its opening, in the one lock order
/// (the candidate is found first by an unlocked read: a placement never changes candidate).
/// Concurrent acceptances of an opening's last position queue on the opening's lock; the
/// first takes the position, each later one then sees the opening full.
pub async fn lock_for_step(conn: &mut PgConnection, id: Uuid) -> Result<Locked, ServiceError> {
    let candidate_id: Option<Uuid> = sqlx::query_scalar("SELECT candidate_id FROM placements WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let candidate_id = candidate_id.ok_or_else(|| ServiceError::not_found("no such placement"))?;
    let candidate = candidates::load(conn, candidate_id, Lock::Update).await?;
    let placement = load(conn, id, Lock::Update).await?;
    let opening = openings::load(conn, placement.opening_id, Lock::Update).await?;
    Ok(Locked {
        candidate,
        placement,
        opening,
    })
}

/// The live (not final) placement of the candidate into this opening, if any.
pub async fn live_for_opening(
    conn: &mut PgConnection,
    candidate_id: Uuid,
    opening_id: Uuid,
) -> Result<Option<Uuid>, ServiceError> {
    let id = sqlx::query_scalar(&format!(
        "SELECT id FROM placements WHERE candidate_id = $1 AND opening_id = $2 AND {LIVE_PLACEMENT}"
    ))
    .bind(candidate_id)
    .bind(opening_id)
    .fetch_optional(conn)
    .await?;
    Ok(id)
}

/// A new proposal, by `caller`, of `candidate` for `opening`.
pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    (candidate, opening): (&Candidate, &Opening),
    caller: &Caller,
    note: &str,
    now: DateTime<Utc>,
) -> Result<Placement, ServiceError> {
    sqlx::query_as(&format!(
        "INSERT INTO placements (id, candidate_id, opening_id, base_id, status, township_code, county_code,
             proposed_by_subject, proposed_by_role, proposed_at, note, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $10) RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(candidate.id)
    .bind(opening.id)
    .bind(opening.base_id)
    .bind(PlacementStatus::Proposed)
    .bind(&candidate.township_code)
    .bind(&candidate.county_code)
    .bind(&caller.subject)
    .bind(caller.role.as_str())
    .bind(now)
    .bind(note)
    .fetch_one(conn)
    .await
    .map_err(|error| {
        // The partial unique index `placements_one_current_per_candidate`: another
        // proposal for this candidate won a race the row lock should have prevented.
        if is_unique_violation(&error) {
            ServiceError::precondition("the candidate already has a current placement")
        } else {
            error.into()
        }
    })
}

/// Records `step` (its status, time and details) on the placement.
pub async fn record_step(
    conn: &mut PgConnection,
    id: Uuid,
    step: &Step,
    now: DateTime<Utc>,
) -> Result<Placement, ServiceError> {
    // $1 id, $2 now, $3 the new status, then the step's own details.
    let details = match step {
        Step::Accept => "accepted_at = $2",
        Step::Decline { .. } => "declined_at = $2, declined_by = $4, decline_reason = $5",
        Step::Start { .. } => "start_date = $4",
        Step::End { .. } => "end_date = $4, end_reason = $5, end_note = $6",
    };
    let sql = format!(
        "UPDATE placements SET status = $3, {details}, updated_at = $2, version = version + 1
         WHERE id = $1 RETURNING {COLUMNS}"
    );
    let query = sqlx::query_as::<_, Placement>(&sql)
        .bind(id)
        .bind(now)
        .bind(step.target());
    let query = match step {
        Step::Accept => query,
        Step::Decline { by, reason } => query.bind(*by).bind(reason),
        Step::Start { date } => query.bind(*date),
        Step::End { date, reason, note } => query.bind(*date).bind(*reason).bind(note),
    };
    Ok(query.fetch_one(conn).await?)
}
