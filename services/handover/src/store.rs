//! The one place with SQL: reading handovers and their amendments into domain records, and
//! each step's write. Steps load the handover with [`lock`] first, so concurrent steps on one
//! handover apply one after the other.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use mesh_kit::error::{ServiceError, is_unique_violation};
use sqlx::{FromRow, PgConnection, Row, postgres::PgRow};
use uuid::Uuid;

use crate::{
    domain::{
        Actor, Amendment, Cancellation, Destination, GateCollection, Handover, Notice, ReportIn, Status,
        access::Scope, lifecycle::AmendedValues,
    },
    request::ListCursor,
    sealing::SealedNotice,
};

const COLUMNS: &str = "id, prison_id, prison_reference, submission_fingerprint, person_name, national_id_sealed, \
     date_of_birth, category, expected_release_date, township_code, county_code, key_assistance_target, \
     risk_notes_sealed, offence_category, status, notified_at, acknowledged_at, acknowledged_by_subject, \
     acknowledged_by_role, actual_release_time, gate_collected_at, gate_collecting_officer_id, reported_in_at, \
     assigned_level, assigned_officer_id, report_in_fingerprint, cancel_reason, cancel_note, cancelled_at, \
     updated_at, version";

/// The statement of a step's update of handover `$1`: it sets `set` (parameters from `$2`),
/// bumps the version every change carries, and returns the updated row.
fn update(set: &str) -> String {
    format!("UPDATE handovers SET {set}, version = version + 1 WHERE id = $1 RETURNING {COLUMNS}")
}

/// A text column holding one of an enumeration's stored names.
fn stored<T>(row: &PgRow, column: &str, parse: fn(&str) -> Option<T>) -> sqlx::Result<T> {
    let text: String = row.try_get(column)?;
    parse(&text).ok_or_else(|| unknown(column, &text))
}

fn stored_optional<T>(row: &PgRow, column: &str, parse: fn(&str) -> Option<T>) -> sqlx::Result<Option<T>> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|text| parse(&text).ok_or_else(|| unknown(column, &text)))
        .transpose()
}

/// A stored name no enumeration value has: a bug or a foreign write, never the caller's.
fn unknown(column: &str, text: &str) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: format!("unknown stored value {text:?}").into(),
    }
}

/// Both halves of a pair of nullable columns, or nothing.
fn both<A, B>(a: Option<A>, b: Option<B>) -> Option<(A, B)> {
    a.zip(b)
}

impl FromRow<'_, PgRow> for Handover {
    fn from_row(row: &PgRow) -> sqlx::Result<Self> {
        use crate::domain::{CancelReason, Level, OffenceCategory, ReleaseCategory};
        Ok(Handover {
            id: row.try_get("id")?,
            prison_id: row.try_get("prison_id")?,
            prison_reference: row.try_get("prison_reference")?,
            submission_fingerprint: row.try_get("submission_fingerprint")?,
            person_name: row.try_get("person_name")?,
            national_id_sealed: row.try_get("national_id_sealed")?,
            date_of_birth: row.try_get("date_of_birth")?,
            category: stored(row, "category", ReleaseCategory::parse)?,
            expected_release_date: row.try_get("expected_release_date")?,
            destination: Destination {
                township_code: row.try_get("township_code")?,
                county_code: row.try_get("county_code")?,
            },
            key_assistance_target: row.try_get("key_assistance_target")?,
            risk_notes_sealed: row.try_get("risk_notes_sealed")?,
            offence_category: stored(row, "offence_category", OffenceCategory::parse)?,
            status: stored(row, "status", Status::parse)?,
            notified_at: row.try_get("notified_at")?,
            acknowledged_at: row.try_get("acknowledged_at")?,
            acknowledged_by: both(
                row.try_get("acknowledged_by_subject")?,
                row.try_get("acknowledged_by_role")?,
            )
            .map(|(subject, role)| Actor { subject, role }),
            actual_release_time: row.try_get("actual_release_time")?,
            gate_collected_at: row.try_get("gate_collected_at")?,
            gate_collecting_officer_id: row.try_get("gate_collecting_officer_id")?,
            reported_in_at: row.try_get("reported_in_at")?,
            assigned_level: stored_optional(row, "assigned_level", Level::parse)?,
            assigned_officer_id: row.try_get("assigned_officer_id")?,
            report_in_fingerprint: row.try_get("report_in_fingerprint")?,
            cancel_reason: stored_optional(row, "cancel_reason", CancelReason::parse)?,
            cancel_note: row.try_get("cancel_note")?,
            cancelled_at: row.try_get("cancelled_at")?,
            updated_at: row.try_get("updated_at")?,
            version: row.try_get("version")?,
        })
    }
}

impl FromRow<'_, PgRow> for Amendment {
    fn from_row(row: &PgRow) -> sqlx::Result<Self> {
        let destination = |township: Option<String>, county: Option<String>| {
            both(township, county).map(|(township_code, county_code)| Destination {
                township_code,
                county_code,
            })
        };
        Ok(Amendment {
            handover_id: row.try_get("handover_id")?,
            previous_expected_release_date: row.try_get("previous_expected_release_date")?,
            new_expected_release_date: row.try_get("new_expected_release_date")?,
            previous_destination: destination(
                row.try_get("previous_township_code")?,
                row.try_get("previous_county_code")?,
            ),
            new_destination: destination(row.try_get("new_township_code")?, row.try_get("new_county_code")?),
            reason: row.try_get("reason")?,
            amended_by: Actor {
                subject: row.try_get("amended_by_subject")?,
                role: row.try_get("amended_by_role")?,
            },
            amended_at: row.try_get("amended_at")?,
        })
    }
}

/// The handover `id`, if it exists.
pub async fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<Handover>, ServiceError> {
    Ok(
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM handovers WHERE id = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await?,
    )
}

/// Loads a handover for update: its row lock is held until the transaction ends, so
/// concurrent steps on one handover apply one after the other.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Handover, ServiceError> {
    let handover: Option<Handover> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM handovers WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    handover.ok_or_else(|| ServiceError::not_found("no such handover"))
}

/// The notice a prison submitted under `reference`, if any.
pub async fn submitted(
    conn: &mut PgConnection,
    prison_id: &str,
    reference: &str,
) -> Result<Option<Handover>, ServiceError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM handovers WHERE prison_id = $1 AND prison_reference = $2"
    ))
    .bind(prison_id)
    .bind(reference)
    .fetch_optional(conn)
    .await?)
}

/// What inserting a notice came to.
#[derive(Debug)]
pub enum Inserted {
    /// The new handover (boxed: the other outcomes carry nothing).
    New(Box<Handover>),
    /// The prison's reference is taken: the notice was submitted before (the transaction is
    /// still usable).
    ReferenceTaken,
    /// Another unique index refused the row: the person already has an open handover, or a
    /// concurrent submission of this very notice won the race. The transaction is aborted.
    Refused,
}

/// Inserts a notice as a new handover in status notified. A concurrent submission of the
/// same reference waits on the unique constraint and then counts as taken, so exactly one
/// notice (and one event) results.
pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    notice: &Notice,
    sealed: &SealedNotice,
    now: DateTime<Utc>,
) -> Result<Inserted, ServiceError> {
    let inserted: Result<Option<Handover>, sqlx::Error> = sqlx::query_as(&format!(
        "INSERT INTO handovers (id, prison_id, prison_reference, submission_fingerprint, person_name,
             national_id_sealed, national_id_index, date_of_birth, category, expected_release_date,
             township_code, county_code, key_assistance_target, risk_notes_sealed, offence_category, status,
             notified_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17)
         ON CONFLICT ON CONSTRAINT handovers_prison_reference_key DO NOTHING
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(&notice.prison_id)
    .bind(&notice.prison_reference)
    .bind(&sealed.fingerprint)
    .bind(&notice.person_name)
    .bind(&sealed.national_id)
    .bind(&sealed.national_id_index)
    .bind(notice.date_of_birth)
    .bind(notice.category.as_str())
    .bind(notice.expected_release_date)
    .bind(&notice.destination.township_code)
    .bind(&notice.destination.county_code)
    .bind(notice.key_assistance_target)
    .bind(&sealed.risk_notes)
    .bind(notice.offence_category.as_str())
    .bind(Status::Notified.as_str())
    .bind(now)
    .fetch_optional(conn)
    .await;
    match inserted {
        Ok(Some(handover)) => Ok(Inserted::New(Box::new(handover))),
        Ok(None) => Ok(Inserted::ReferenceTaken),
        // ON CONFLICT covers only the reference constraint.
        Err(error) if is_unique_violation(&error) => Ok(Inserted::Refused),
        Err(error) => Err(error.into()),
    }
}

pub async fn acknowledge(
    conn: &mut PgConnection,
    id: Uuid,
    to: Status,
    by: &Actor,
    now: DateTime<Utc>,
) -> Result<Handover, ServiceError> {
    Ok(sqlx::query_as(&update(
        "status = $2, acknowledged_at = $3, acknowledged_by_subject = $4,
             acknowledged_by_role = $5, updated_at = $3",
    ))
    .bind(id)
    .bind(to.as_str())
    .bind(now)
    .bind(&by.subject)
    .bind(&by.role)
    .fetch_one(conn)
    .await?)
}

pub async fn confirm_release(
    conn: &mut PgConnection,
    id: Uuid,
    to: Status,
    released_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Handover, ServiceError> {
    Ok(
        sqlx::query_as(&update("status = $2, actual_release_time = $3, updated_at = $4"))
            .bind(id)
            .bind(to.as_str())
            .bind(released_at)
            .bind(now)
            .fetch_one(conn)
            .await?,
    )
}

/// Records the gate collection; the status does not change.
pub async fn record_gate_collection(
    conn: &mut PgConnection,
    id: Uuid,
    collection: &GateCollection,
    now: DateTime<Utc>,
) -> Result<Handover, ServiceError> {
    Ok(sqlx::query_as(&update(
        "gate_collected_at = $2, gate_collecting_officer_id = $3, updated_at = $4",
    ))
    .bind(id)
    .bind(collection.collected_at)
    .bind(&collection.officer_id)
    .bind(now)
    .fetch_one(conn)
    .await?)
}

/// Records the report-in with its keyed `fingerprint` (the report itself holds personal
/// data the handover does not keep: phone, address, term).
pub async fn record_report_in(
    conn: &mut PgConnection,
    id: Uuid,
    to: Status,
    report: &ReportIn,
    fingerprint: &[u8],
    now: DateTime<Utc>,
) -> Result<Handover, ServiceError> {
    Ok(sqlx::query_as(&update(
        "status = $2, reported_in_at = $3, assigned_level = $4, assigned_officer_id = $5,
             report_in_fingerprint = $6, updated_at = $7",
    ))
    .bind(id)
    .bind(to.as_str())
    .bind(report.reported_in_at)
    .bind(report.level.map(|level| level.as_str()))
    .bind(&report.officer_id)
    .bind(fingerprint)
    .bind(now)
    .fetch_one(conn)
    .await?)
}

/// Applies an amendment's new values. A new destination must be acknowledged by the new
/// township: the old township's acknowledgement no longer counts.
pub async fn amend(
    conn: &mut PgConnection,
    id: Uuid,
    to: Status,
    change: &AmendedValues,
    now: DateTime<Utc>,
) -> Result<Handover, ServiceError> {
    let destination = change.destination.as_ref();
    Ok(sqlx::query_as(&update(
        "status = $2,
             expected_release_date = COALESCE($3, expected_release_date),
             township_code = COALESCE($4, township_code),
             county_code = COALESCE($5, county_code),
             acknowledged_at = CASE WHEN $4::text IS NULL THEN acknowledged_at END,
             acknowledged_by_subject = CASE WHEN $4::text IS NULL THEN acknowledged_by_subject END,
             acknowledged_by_role = CASE WHEN $4::text IS NULL THEN acknowledged_by_role END,
             updated_at = $6",
    ))
    .bind(id)
    .bind(to.as_str())
    .bind(change.expected_release_date)
    .bind(destination.map(|d| d.township_code.as_str()))
    .bind(destination.map(|d| d.county_code.as_str()))
    .bind(now)
    .fetch_one(conn)
    .await?)
}

pub async fn insert_amendment(conn: &mut PgConnection, amendment: &Amendment) -> Result<(), ServiceError> {
    let previous = amendment.previous_destination.as_ref();
    let new = amendment.new_destination.as_ref();
    sqlx::query(
        "INSERT INTO handover_amendments (handover_id, previous_expected_release_date, new_expected_release_date,
             previous_township_code, previous_county_code, new_township_code, new_county_code, reason,
             amended_by_subject, amended_by_role, amended_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(amendment.handover_id)
    .bind(amendment.previous_expected_release_date)
    .bind(amendment.new_expected_release_date)
    .bind(previous.map(|d| d.township_code.as_str()))
    .bind(previous.map(|d| d.county_code.as_str()))
    .bind(new.map(|d| d.township_code.as_str()))
    .bind(new.map(|d| d.county_code.as_str()))
    .bind(&amendment.reason)
    .bind(&amendment.amended_by.subject)
    .bind(&amendment.amended_by.role)
    .bind(amendment.amended_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn cancel(
    conn: &mut PgConnection,
    id: Uuid,
    to: Status,
    cancellation: &Cancellation,
    now: DateTime<Utc>,
) -> Result<Handover, ServiceError> {
    Ok(sqlx::query_as(&update(
        "status = $2, cancel_reason = $3, cancel_note = $4, cancelled_at = $5,
             updated_at = $5",
    ))
    .bind(id)
    .bind(to.as_str())
    .bind(cancellation.reason.as_str())
    .bind(&cancellation.note)
    .bind(now)
    .fetch_one(conn)
    .await?)
}

/// The amendments of each of `ids`, oldest first.
pub async fn amendments(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<Amendment>>, ServiceError> {
    let amendments: Vec<Amendment> = sqlx::query_as(
        "SELECT handover_id, previous_expected_release_date, new_expected_release_date, previous_township_code,
             previous_county_code, new_township_code, new_county_code, reason, amended_by_subject,
             amended_by_role, amended_at
         FROM handover_amendments WHERE handover_id = ANY($1) ORDER BY id",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    let mut by_handover: HashMap<Uuid, Vec<Amendment>> = HashMap::new();
    for amendment in amendments {
        by_handover
            .entry(amendment.handover_id)
            .or_default()
            .push(amendment);
    }
    Ok(by_handover)
}

/// Up to `limit` handovers of `scope` in `statuses` (all when empty), in (notified_at, id)
/// order after `after`.
pub async fn list(
    conn: &mut PgConnection,
    scope: &Scope,
    statuses: &[Status],
    after: Option<ListCursor>,
    limit: i64,
) -> Result<Vec<Handover>, ServiceError> {
    // A fixed column name per scope, never caller input.
    let column = match scope {
        Scope::Prison(_) => "prison_id",
        Scope::Township(_) => "township_code",
        Scope::County(_) => "county_code",
    };
    let statuses: Vec<&str> = statuses.iter().map(|status| status.as_str()).collect();
    let (after_at, after_id) = after.unzip();
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM handovers
         WHERE {column} = $1
           AND (cardinality($2::text[]) = 0 OR status = ANY($2))
           AND ($3::timestamptz IS NULL OR (notified_at, id) > ($3, $4::uuid))
         ORDER BY notified_at, id LIMIT $5"
    ))
    .bind(scope.value())
    .bind(&statuses)
    .bind(after_at)
    .bind(after_id)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Up to `limit` handovers still awaiting report-in (notified, acknowledged or released)
/// after the id `after`, in id order, across every prison and township.
pub async fn awaiting_report_in(
    conn: &mut PgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Handover>, ServiceError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM handovers
         WHERE status IN ('notified', 'acknowledged', 'released') AND ($1::uuid IS NULL OR id > $1)
         ORDER BY id LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}
