//! Webhook endpoints (one per township office or county bureau), the notifications queued
//! for them (one per alert change and endpoint, in the change's transaction), the leases by
//! which replicas share delivery (`FOR UPDATE SKIP LOCKED`), and every delivery attempt.

use chrono::{DateTime, Utc};
use mesh_kit::error::ServiceError;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::{Actor, Jurisdiction};

/// An endpoint to register (or re-register: its jurisdiction's endpoint is replaced).
#[derive(Debug)]
pub struct NewEndpoint<'a> {
    pub jurisdiction: &'a Jurisdiction,
    pub url: &'a str,
    /// The secret, sealed for storage.
    pub secret_sealed: Vec<u8>,
    pub description: &'a str,
    pub registered_by: &'a Actor,
}

/// Registers an endpoint, replacing its jurisdiction's; returns its id, when the
/// jurisdiction's endpoint was first registered, and whether this was that first time.
pub async fn save_endpoint(
    executor: impl PgExecutor<'_>,
    endpoint: NewEndpoint<'_>,
    now: DateTime<Utc>,
) -> Result<(Uuid, DateTime<Utc>, bool), ServiceError> {
    Ok(sqlx::query_as(
        "INSERT INTO endpoints (endpoint_id, township_code, county_code, url, secret_sealed, description,
             registered_by_subject, registered_by_role, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
         ON CONFLICT (county_code, township_code) DO UPDATE SET url = $4, secret_sealed = $5, description = $6,
             registered_by_subject = $7, registered_by_role = $8, updated_at = $9
         RETURNING endpoint_id, created_at, (xmax = 0) AS inserted",
    )
    .bind(Uuid::now_v7())
    .bind(&endpoint.jurisdiction.township_code)
    .bind(&endpoint.jurisdiction.county_code)
    .bind(endpoint.url)
    .bind(endpoint.secret_sealed)
    .bind(endpoint.description)
    .bind(&endpoint.registered_by.subject)
    .bind(&endpoint.registered_by.role)
    .bind(now)
    .fetch_one(executor)
    .await?)
}

/// A registered endpoint (never its secret).
#[derive(Debug, sqlx::FromRow)]
pub struct EndpointRow {
    pub endpoint_id: Uuid,
    pub township_code: String,
    pub county_code: String,
    pub url: String,
    pub description: String,
    pub registered_by_subject: String,
    pub registered_by_role: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The endpoints of a township, or of a county and all its townships, by township.
pub async fn endpoints(
    executor: impl PgExecutor<'_>,
    scope: &Jurisdiction,
) -> Result<Vec<EndpointRow>, ServiceError> {
    Ok(sqlx::query_as(
        "SELECT endpoint_id, township_code, county_code, url, description, registered_by_subject,
                registered_by_role, created_at, updated_at
         FROM endpoints WHERE county_code = $1 AND ($2 = '' OR township_code = $2)
         ORDER BY township_code, endpoint_id",
    )
    .bind(&scope.county_code)
    .bind(&scope.township_code)
    .fetch_all(executor)
    .await?)
}

/// The endpoint of one office (a township office, or a county bureau when the township code
/// is empty), if it registered one.
pub async fn endpoint_of(
    conn: &mut PgConnection,
    office: &Jurisdiction,
) -> Result<Option<Uuid>, ServiceError> {
    Ok(
        sqlx::query_scalar("SELECT endpoint_id FROM endpoints WHERE county_code = $1 AND township_code = $2")
            .bind(&office.county_code)
            .bind(&office.township_code)
            .fetch_optional(conn)
            .await?,
    )
}

/// A notification to queue: due at once.
#[derive(Debug)]
pub struct NewNotification<'a> {
    pub notification_id: Uuid,
    pub alert_id: Uuid,
    pub event_type: &'a str,
    pub endpoint_id: Uuid,
    pub body: Vec<u8>,
}

pub async fn queue_notification(
    conn: &mut PgConnection,
    notification: NewNotification<'_>,
    now: DateTime<Utc>,
) -> Result<(), ServiceError> {
    sqlx::query(
        "INSERT INTO notifications (notification_id, alert_id, event_type, endpoint_id, body, created_at, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(notification.notification_id)
    .bind(notification.alert_id)
    .bind(notification.event_type)
    .bind(notification.endpoint_id)
    .bind(notification.body)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// A notification leased for delivery, with where it goes.
#[derive(Debug, sqlx::FromRow)]
pub struct Leased {
    pub notification_id: Uuid,
    pub alert_id: Uuid,
    pub event_type: String,
    pub endpoint_id: Uuid,
    pub body: Vec<u8>,
    pub attempts: i32,
    /// When it was queued (retries end some time after).
    pub created_at: DateTime<Utc>,
    pub url: String,
    pub secret_sealed: Vec<u8>,
    /// The endpoint's township; empty for a county bureau's endpoint.
    pub endpoint_township: String,
}

/// Leases up to `batch` notifications due by `now` until `lease_until`, so other replicas
/// skip them while they are sent; if the outcome is never recorded the lease runs out and
/// they are sent again (at least once). Endpoints in `busy` (this replica is still waiting on
/// them) are skipped and no endpoint gets more than `per_endpoint`, so a slow endpoint
/// cannot take every slot from the others.
pub async fn lease_due(
    executor: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    batch: i64,
    busy: &[Uuid],
    per_endpoint: i64,
) -> Result<Vec<Leased>, ServiceError> {
    Ok(sqlx::query_as(
        "WITH due AS (
             SELECT notification_id FROM notifications
             WHERE notification_id IN (
                 SELECT notification_id FROM (
                     SELECT notification_id,
                            row_number() OVER (PARTITION BY endpoint_id ORDER BY next_attempt_at) AS place
                     FROM notifications
                     WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= $1
                       AND NOT (endpoint_id = ANY($4))) ranked
                 WHERE place <= $5)
               AND delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= $1
             ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED)
         UPDATE notifications n SET next_attempt_at = $2
         FROM due, endpoints e
         WHERE n.notification_id = due.notification_id AND e.endpoint_id = n.endpoint_id
         RETURNING n.notification_id, n.alert_id, n.event_type, n.endpoint_id, n.body, n.attempts, n.created_at,
                   e.url, e.secret_sealed, e.township_code AS endpoint_township",
    )
    .bind(now)
    .bind(lease_until)
    .bind(batch)
    .bind(busy)
    .bind(per_endpoint)
    .fetch_all(executor)
    .await?)
}

/// The outcome of one delivery attempt.
#[derive(Debug, sqlx::FromRow)]
pub struct Attempt {
    pub attempt_number: i32,
    pub attempted_at: DateTime<Utc>,
    /// 0 when no HTTP response was received.
    pub http_status: i32,
    pub delivered: bool,
    /// Failed, and the last attempt: the notification is given up.
    pub gave_up: bool,
    /// Empty when delivered.
    pub error: String,
    pub duration_ms: i32,
    /// When to try again; `None` when delivered.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// Records an attempt and moves the notification on (delivered, or due again later).
pub async fn record_attempt(
    conn: &mut PgConnection,
    notification: &Leased,
    attempt: &Attempt,
) -> Result<(), ServiceError> {
    sqlx::query(
        "INSERT INTO delivery_attempts (notification_id, alert_id, event_type, endpoint_id, url, attempt_number,
             attempted_at, http_status, delivered, error, duration_ms, next_attempt_at, gave_up)
         SELECT $1, $2, $3, $4, url, $5, $6, $7, $8, $9, $10, $11, $12 FROM endpoints WHERE endpoint_id = $4",
    )
    .bind(notification.notification_id)
    .bind(notification.alert_id)
    .bind(&notification.event_type)
    .bind(notification.endpoint_id)
    .bind(attempt.attempt_number)
    .bind(attempt.attempted_at)
    .bind(attempt.http_status)
    .bind(attempt.delivered)
    .bind(&attempt.error)
    .bind(attempt.duration_ms)
    .bind(attempt.next_attempt_at)
    .bind(attempt.gave_up)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE notifications SET attempts = $2, delivered_at = CASE WHEN $3 THEN $4 END,
             next_attempt_at = COALESCE($5, next_attempt_at), last_error = NULLIF($6, ''),
             gave_up_at = CASE WHEN $7 THEN $4 END
         WHERE notification_id = $1",
    )
    .bind(notification.notification_id)
    .bind(attempt.attempt_number)
    .bind(attempt.delivered)
    .bind(attempt.attempted_at)
    .bind(attempt.next_attempt_at)
    .bind(&attempt.error)
    .bind(attempt.gave_up)
    .execute(conn)
    .await?;
    Ok(())
}

/// A recorded delivery attempt: which notification went where, and how it went.
#[derive(Debug, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub notification_id: Uuid,
    pub event_type: String,
    pub endpoint_id: Uuid,
    pub url: String,
    #[sqlx(flatten)]
    pub attempt: Attempt,
}

/// Up to `limit` delivery attempts of an alert's notifications, in the order they were
/// recorded, after the attempt `after`.
pub async fn deliveries(
    executor: impl PgExecutor<'_>,
    alert_id: Uuid,
    after: i64,
    limit: i64,
) -> Result<Vec<DeliveryRow>, ServiceError> {
    Ok(sqlx::query_as(
        "SELECT id, notification_id, event_type, endpoint_id, url, attempt_number, attempted_at, http_status,
                delivered, gave_up, error, duration_ms, next_attempt_at
         FROM delivery_attempts WHERE alert_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(alert_id)
    .bind(after)
    .bind(limit)
    .fetch_all(executor)
    .await?)
}
