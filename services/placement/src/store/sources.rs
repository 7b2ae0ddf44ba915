//! The candidate projection's writes, in the consumer's transaction: the version gates of
//! the registry's and the handover service's snapshots, the handover facts, and the
//! candidates built from them.
//!
//! Every source is applied only when newer than what was applied before (the gates below
//! `ON CONFLICT … WHERE version < EXCLUDED.version`): a redelivered, replayed or reordered
//! older snapshot changes nothing.

use chrono::{DateTime, NaiveDate, Utc};
use mesh_kit::error::ServiceError;
use sqlx::PgConnection;
use uuid::Uuid;

use super::LIVE_PLACEMENT;
use crate::domain::{CandidateSource, Offence};

/// A supervisee as the registry's newest snapshot describes them.
#[derive(Debug, Clone)]
pub struct Supervisee {
    pub supervisee_id: Uuid,
    pub version: i64,
    pub name: String,
    pub township_code: String,
    pub county_code: String,
    /// Whether they are offered work (see `domain::supervisee_seeks_work`).
    pub seeks_work: bool,
}

/// What this service knows of a handover (nothing, by default: no offence category known,
/// not a key assistance target).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandoverFacts {
    pub offence: Option<Offence>,
    pub key_assistance_target: bool,
}

/// A released prisoner under resettlement, as their report-in describes them.
#[derive(Debug, Clone)]
pub struct ReleasedPerson {
    pub handover_id: Uuid,
    pub version: i64,
    pub name: String,
    pub township_code: String,
    pub county_code: String,
    pub facts: HandoverFacts,
    pub needs_work: bool,
    pub assistance_ends_on: NaiveDate,
}

/// The supervisee's candidate, locked (the first lock of the one lock order).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SuperviseeCandidate {
    pub id: Uuid,
    pub township_code: String,
    pub county_code: String,
}

/// Passes the supervisee's snapshot `version` through the gate. `None` when it is not newer
/// than the last one applied; else the handover the supervisee came from: given only by the
/// registration (`handover_id`), and kept across later snapshots.
pub async fn pass_supervisee_version(
    conn: &mut PgConnection,
    supervisee_id: Uuid,
    version: i64,
    handover_id: Option<Uuid>,
) -> Result<Option<Option<Uuid>>, ServiceError> {
    let linked = sqlx::query_scalar(
        "INSERT INTO supervisee_versions (supervisee_id, version, handover_id) VALUES ($1, $2, $3)
         ON CONFLICT (supervisee_id) DO UPDATE SET version = EXCLUDED.version,
             handover_id = COALESCE(EXCLUDED.handover_id, supervisee_versions.handover_id), projected_at = now()
         WHERE supervisee_versions.version < EXCLUDED.version
         RETURNING handover_id",
    )
    .bind(supervisee_id)
    .bind(version)
    .bind(handover_id)
    .fetch_optional(conn)
    .await?;
    Ok(linked)
}

/// What the handover's newest snapshot said, if one arrived.
pub async fn handover_facts(
    conn: &mut PgConnection,
    handover_id: Uuid,
) -> Result<Option<HandoverFacts>, ServiceError> {
    let facts: Option<(Option<Offence>, bool)> = sqlx::query_as(
        "SELECT offence_category, key_assistance_target FROM handover_facts WHERE handover_id = $1",
    )
    .bind(handover_id)
    .fetch_optional(conn)
    .await?;
    Ok(facts.map(|(offence, key_assistance_target)| HandoverFacts {
        offence,
        key_assistance_target,
    }))
}

pub async fn lock_supervisee_candidate(
    conn: &mut PgConnection,
    supervisee_id: Uuid,
) -> Result<Option<SuperviseeCandidate>, ServiceError> {
    let candidate = sqlx::query_as(
        "SELECT id, township_code, county_code FROM candidates WHERE supervisee_id = $1 FOR NO KEY UPDATE",
    )
    .bind(supervisee_id)
    .fetch_optional(conn)
    .await?;
    Ok(candidate)
}

/// A new candidate for a supervisee looking for work; the handover's facts (when the
/// supervisee came from one) are the prison's word on the offence.
pub async fn insert_supervisee_candidate(
    conn: &mut PgConnection,
    id: Uuid,
    (supervisee, handover_id): (&Supervisee, Option<Uuid>),
    facts: HandoverFacts,
    now: DateTime<Utc>,
) -> Result<(), ServiceError> {
    sqlx::query(
        "INSERT INTO candidates (id, source, supervisee_id, handover_id, source_version, name, township_code,
             county_code, offence_category, offence_from_handover, key_assistance_target, active,
             created_at, updated_at)
         VALUES ($1, $12, $2, $3, $4, $5, $6, $7, $8, $9, $10, true, $11, $11)",
    )
    .bind(id)
    .bind(supervisee.supervisee_id)
    .bind(handover_id)
    .bind(supervisee.version)
    .bind(&supervisee.name)
    .bind(&supervisee.township_code)
    .bind(&supervisee.county_code)
    .bind(facts.offence)
    .bind(facts.offence.is_some())
    .bind(facts.key_assistance_target)
    .bind(now)
    .bind(CandidateSource::Supervisee)
    .execute(conn)
    .await?;
    Ok(())
}

/// Brings the supervisee's candidate up to the snapshot: name, place, whether they look for
/// work; a known offence category from the handover replaces the office's.
pub async fn update_supervisee_candidate(
    conn: &mut PgConnection,
    id: Uuid,
    (supervisee, handover_id): (&Supervisee, Option<Uuid>),
    facts: HandoverFacts,
    now: DateTime<Utc>,
) -> Result<(), ServiceError> {
    sqlx::query(
        "UPDATE candidates SET name = $2, township_code = $3, county_code = $4, active = $5,
             source_version = $6, handover_id = COALESCE(handover_id, $7),
             offence_category = CASE WHEN $8::text IS NULL THEN offence_category ELSE $8 END,
             offence_from_handover = offence_from_handover OR $8::text IS NOT NULL,
             key_assistance_target = key_assistance_target OR $9,
             updated_at = $10, version = version + 1
         WHERE id = $1",
    )
    .bind(id)
    .bind(&supervisee.name)
    .bind(&supervisee.township_code)
    .bind(&supervisee.county_code)
    .bind(supervisee.seeks_work)
    .bind(supervisee.version)
    .bind(handover_id)
    .bind(facts.offence)
    .bind(facts.key_assistance_target)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves the responsibility for the candidate's live placements to their new township.
pub async fn move_live_placements(
    conn: &mut PgConnection,
    candidate_id: Uuid,
    (township_code, county_code): (&str, &str),
    now: DateTime<Utc>,
) -> Result<(), ServiceError> {
    sqlx::query(&format!(
        "UPDATE placements SET township_code = $2, county_code = $3, updated_at = $4, version = version + 1
         WHERE candidate_id = $1 AND {LIVE_PLACEMENT}"
    ))
    .bind(candidate_id)
    .bind(township_code)
    .bind(county_code)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Passes the handover's snapshot `version` through the gate, recording its facts; false
/// when it is not newer than the last one applied.
pub async fn pass_handover_version(
    conn: &mut PgConnection,
    handover_id: Uuid,
    version: i64,
    facts: HandoverFacts,
) -> Result<bool, ServiceError> {
    let applied = sqlx::query(
        "INSERT INTO handover_facts (handover_id, offence_category, key_assistance_target, version)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (handover_id) DO UPDATE SET offence_category = EXCLUDED.offence_category,
             key_assistance_target = EXCLUDED.key_assistance_target, version = EXCLUDED.version,
             projected_at = now()
         WHERE handover_facts.version < EXCLUDED.version",
    )
    .bind(handover_id)
    .bind(facts.offence)
    .bind(facts.key_assistance_target)
    .bind(version)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(applied > 0)
}

/// The prison's word on the offence is authoritative: it replaces what an office may have
/// entered for every candidate who came from this handover.
pub async fn apply_handover_facts(
    conn: &mut PgConnection,
    handover_id: Uuid,
    facts: HandoverFacts,
    now: DateTime<Utc>,
) -> Result<(), ServiceError> {
    sqlx::query(
        "UPDATE candidates SET
             offence_category = CASE WHEN $2::text IS NULL THEN offence_category ELSE $2 END,
             offence_from_handover = offence_from_handover OR $2::text IS NOT NULL,
             key_assistance_target = $3, updated_at = $4, version = version + 1
         WHERE handover_id = $1",
    )
    .bind(handover_id)
    .bind(facts.offence)
    .bind(facts.key_assistance_target)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a released prisoner's candidate: inserted only when they need work, updated
/// (a redelivery, or a newer report-in) when it exists and the snapshot is newer. Returns
/// whether a row was written.
pub async fn upsert_released_candidate(
    conn: &mut PgConnection,
    id: Uuid,
    person: &ReleasedPerson,
    now: DateTime<Utc>,
) -> Result<bool, ServiceError> {
    // The conflict target's predicate is the literal of the partial unique index
    // `candidates_one_per_release`, as the index inference requires.
    let written = sqlx::query(
        "INSERT INTO candidates (id, source, handover_id, source_version, name, township_code, county_code,
             offence_category, offence_from_handover, key_assistance_target, active, assistance_ends_on,
             created_at, updated_at)
         SELECT $1, $12, $2, $3, $4, $5, $6, $7, $7::text IS NOT NULL, $8, $9, $10, $11, $11
         WHERE $9 OR EXISTS (SELECT 1 FROM candidates WHERE handover_id = $2 AND source = $12)
         ON CONFLICT (handover_id) WHERE source = 'released_prisoner' DO UPDATE SET
             source_version = EXCLUDED.source_version, name = EXCLUDED.name,
             township_code = EXCLUDED.township_code, county_code = EXCLUDED.county_code,
             active = EXCLUDED.active, assistance_ends_on = EXCLUDED.assistance_ends_on,
             updated_at = EXCLUDED.updated_at, version = candidates.version + 1
         WHERE candidates.source_version < EXCLUDED.source_version",
    )
    .bind(id)
    .bind(person.handover_id)
    .bind(person.version)
    .bind(&person.name)
    .bind(&person.township_code)
    .bind(&person.county_code)
    .bind(person.facts.offence)
    .bind(person.facts.key_assistance_target)
    .bind(person.needs_work)
    .bind(person.assistance_ends_on)
    .bind(now)
    .bind(CandidateSource::ReleasedPrisoner)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(written > 0)
}
