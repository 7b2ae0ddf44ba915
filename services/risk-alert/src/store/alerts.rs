//! The `alerts` table: each alert's encoded body beside the columns lists filter on. The
//! unique dedup key is what makes "exactly one alert per missed deadline" hold across
//! replicas and restarts.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use mesh_kit::error::ServiceError;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::{
    convert::{alert_body, alert_from_body},
    domain::{
        Jurisdiction,
        alert::{Alert, AlertKind, AlertStatus},
    },
};

/// Stores newly raised alerts in one statement, each unless one with its dedup key exists;
/// returns the ids of those stored.
pub async fn insert_all(conn: &mut PgConnection, alerts: &[Alert]) -> Result<HashSet<Uuid>, ServiceError> {
    if alerts.is_empty() {
        return Ok(HashSet::new());
    }
    let text = |value: fn(&Alert) -> &str| alerts.iter().map(value).collect::<Vec<_>>();
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO alerts (alert_id, dedup_key, kind, status, subject_id, township_code, county_code, raised_at, body,
             updated_at)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
             $8::timestamptz[], $9::bytea[], $10::timestamptz[])
         ON CONFLICT (dedup_key) DO NOTHING RETURNING alert_id",
    )
    .bind(alerts.iter().map(|alert| alert.id).collect::<Vec<_>>())
    .bind(text(|alert| &alert.dedup_key))
    .bind(text(|alert| alert.kind.as_str()))
    .bind(text(|alert| alert.status.as_str()))
    .bind(text(|alert| &alert.subject.id))
    .bind(text(|alert| &alert.jurisdiction.township_code))
    .bind(text(|alert| &alert.jurisdiction.county_code))
    .bind(alerts.iter().map(|alert| alert.raised_at).collect::<Vec<_>>())
    .bind(alerts.iter().map(alert_body).collect::<Vec<_>>())
    .bind(alerts.iter().map(|alert| alert.updated_at).collect::<Vec<_>>())
    .fetch_all(conn)
    .await?;
    Ok(inserted.into_iter().collect())
}

/// Writes a changed alert back.
pub async fn update(conn: &mut PgConnection, alert: &Alert) -> Result<(), ServiceError> {
    sqlx::query(
        "UPDATE alerts SET status = $2, township_code = $3, county_code = $4, body = $5, updated_at = $6
         WHERE alert_id = $1",
    )
    .bind(alert.id)
    .bind(alert.status.as_str())
    .bind(&alert.jurisdiction.township_code)
    .bind(&alert.jurisdiction.county_code)
    .bind(alert_body(alert))
    .bind(alert.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// An alert by id.
pub async fn load(executor: impl PgExecutor<'_>, alert_id: Uuid) -> Result<Option<Alert>, ServiceError> {
    let body: Option<Vec<u8>> = sqlx::query_scalar("SELECT body FROM alerts WHERE alert_id = $1")
        .bind(alert_id)
        .fetch_optional(executor)
        .await?;
    Ok(body.and_then(|body| alert_from_body(&body)))
}

/// The alerts of `alert_ids` that exist, by id, in one statement (the live fan-out reads
/// a burst of changes at once).
pub async fn load_all(
    executor: impl PgExecutor<'_>,
    alert_ids: &[Uuid],
) -> Result<HashMap<Uuid, Alert>, ServiceError> {
    let rows: Vec<(Uuid, Vec<u8>)> =
        sqlx::query_as("SELECT alert_id, body FROM alerts WHERE alert_id = ANY($1)")
            .bind(alert_ids)
            .fetch_all(executor)
            .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, body)| Some((id, alert_from_body(&body)?)))
        .collect())
}

/// An alert by id, locked for the rest of the transaction.
pub async fn load_for_update(conn: &mut PgConnection, alert_id: Uuid) -> Result<Option<Alert>, ServiceError> {
    let body: Option<Vec<u8>> = sqlx::query_scalar("SELECT body FROM alerts WHERE alert_id = $1 FOR UPDATE")
        .bind(alert_id)
        .fetch_optional(conn)
        .await?;
    Ok(body.and_then(|body| alert_from_body(&body)))
}

/// The alert with `dedup_key`, locked for the rest of the transaction (what an event that
/// ends a condition resolves, e.g. a replayed dead letter).
pub async fn by_dedup_key_for_update(
    conn: &mut PgConnection,
    dedup_key: &str,
) -> Result<Option<Alert>, ServiceError> {
    let body: Option<Vec<u8>> = sqlx::query_scalar("SELECT body FROM alerts WHERE dedup_key = $1 FOR UPDATE")
        .bind(dedup_key)
        .fetch_optional(conn)
        .await?;
    Ok(body.and_then(|body| alert_from_body(&body)))
}

/// The unresolved alerts whose dedup key starts with `prefix`, oldest first, locked for
/// update (every stall of one record).
pub async fn open_by_dedup_prefix_for_update(
    conn: &mut PgConnection,
    prefix: &str,
) -> Result<Vec<Alert>, ServiceError> {
    let bodies: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT body FROM alerts WHERE left(dedup_key, length($1)) = $1 AND status <> $2
         ORDER BY raised_at FOR UPDATE",
    )
    .bind(prefix)
    .bind(AlertStatus::Resolved.as_str())
    .fetch_all(conn)
    .await?;
    Ok(decode_all(&bodies))
}

/// The unresolved alerts about a subject, oldest first, locked for update.
pub async fn open_for_subject(conn: &mut PgConnection, subject_id: &str) -> Result<Vec<Alert>, ServiceError> {
    open_for_subjects(conn, &[subject_id.to_owned()]).await
}

/// The unresolved alerts about any of `subject_ids`, by subject and oldest first, locked for
/// update.
pub async fn open_for_subjects(
    conn: &mut PgConnection,
    subject_ids: &[String],
) -> Result<Vec<Alert>, ServiceError> {
    // The condition is written out, not bound: only then can a generic plan (which
    // PostgreSQL switches to after five executions of a prepared statement) use the partial
    // index `alerts_open_by_subject` (`WHERE status <> 'resolved'`); with a parameter it
    // scanned every alert, 123 ms a call at 100,000 alerts.
    let bodies: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT body FROM alerts WHERE subject_id = ANY($1) AND status <> 'resolved'
         ORDER BY subject_id, raised_at FOR UPDATE",
    )
    .bind(subject_ids)
    .fetch_all(conn)
    .await?;
    Ok(decode_all(&bodies))
}

/// The unresolved alerts of a township or county, oldest first (a live stream's start).
pub async fn current(
    executor: impl PgExecutor<'_>,
    scope: &Jurisdiction,
) -> Result<Vec<Alert>, ServiceError> {
    let bodies: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT body FROM alerts WHERE county_code = $1 AND ($2 = '' OR township_code = $2)
           AND status <> $3 ORDER BY raised_at",
    )
    .bind(&scope.county_code)
    .bind(&scope.township_code)
    .bind(AlertStatus::Resolved.as_str())
    .fetch_all(executor)
    .await?;
    Ok(decode_all(&bodies))
}

/// The alerts that changed at or after `since`, oldest change first (a live stream's resync
/// after its notifications were lost).
pub async fn changed_since(
    executor: impl PgExecutor<'_>,
    since: DateTime<Utc>,
) -> Result<Vec<Alert>, ServiceError> {
    let bodies: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT body FROM alerts WHERE updated_at >= $1 ORDER BY updated_at")
            .bind(since)
            .fetch_all(executor)
            .await?;
    Ok(decode_all(&bodies))
}

/// Which alerts of a township or county a list wants; empty filters take all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertFilter {
    pub scope: Jurisdiction,
    pub statuses: Vec<AlertStatus>,
    pub kinds: Vec<AlertKind>,
    /// Only alerts about this supervisee or handover id; empty for all.
    pub subject_id: String,
}

/// A listed alert with its sort key; `alert` is `None` when its body could not be read
/// (the row still counts for paging).
#[derive(Debug)]
pub struct Listed {
    pub raised_at: DateTime<Utc>,
    pub alert_id: Uuid,
    pub alert: Option<Alert>,
}

/// Up to `limit` alerts, newest first (raised_at, then alert id, descending), after the
/// position `after`.
pub async fn list(
    executor: impl PgExecutor<'_>,
    filter: &AlertFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Listed>, ServiceError> {
    let statuses: Vec<&str> = filter.statuses.iter().map(|status| status.as_str()).collect();
    let kinds: Vec<&str> = filter.kinds.iter().map(|kind| kind.as_str()).collect();
    let rows: Vec<(Uuid, DateTime<Utc>, Vec<u8>)> = sqlx::query_as(
        "SELECT alert_id, raised_at, body FROM alerts
         WHERE county_code = $1 AND ($2 = '' OR township_code = $2)
           AND (cardinality($3::text[]) = 0 OR status = ANY($3))
           AND (cardinality($4::text[]) = 0 OR kind = ANY($4))
           AND ($5 = '' OR subject_id = $5)
           AND ($6::timestamptz IS NULL OR (raised_at, alert_id) < ($6, $7))
         ORDER BY raised_at DESC, alert_id DESC LIMIT $8",
    )
    .bind(&filter.scope.county_code)
    .bind(&filter.scope.township_code)
    .bind(&statuses)
    .bind(&kinds)
    .bind(&filter.subject_id)
    .bind(after.map(|(raised_at, _)| raised_at))
    .bind(after.map(|(_, alert_id)| alert_id))
    .bind(limit)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(alert_id, raised_at, body)| Listed {
            raised_at,
            alert_id,
            alert: alert_from_body(&body),
        })
        .collect())
}

/// Decodes stored bodies, skipping (and logging) any that cannot be read.
fn decode_all(bodies: &[Vec<u8>]) -> Vec<Alert> {
    bodies.iter().filter_map(|body| alert_from_body(body)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_alert_condition_names_the_stored_resolved_status() {
        // `open_for_subjects` writes `status <> 'resolved'` out for its index.
        assert_eq!(AlertStatus::Resolved.as_str(), "resolved");
    }
}
