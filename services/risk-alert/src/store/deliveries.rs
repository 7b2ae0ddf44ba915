//! Delivering queued notifications: the leases by which replicas share the work (`FOR
//! UPDATE SKIP LOCKED`), grouped into the POSTs they go in, and every attempt, recorded per
//! notification.

use chrono::{DateTime, Utc};
use mesh_kit::error::ServiceError;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// A notification leased for delivery, with where it goes and in which POST.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Leased {
    pub notification_id: Uuid,
    pub alert_id: Uuid,
    pub event_type: String,
    pub endpoint_id: Uuid,
    pub body: Vec<u8>,
    pub attempts: i32,
    /// When it was queued (retries end some time after).
    pub created_at: DateTime<Utc>,
    /// When it came due (orders a batch).
    pub due_at: DateTime<Utc>,
    pub url: String,
    pub secret_sealed: Vec<u8>,
    /// The endpoint's township; empty for a county bureau's endpoint.
    pub endpoint_township: String,
    /// 1: the endpoint takes one notification per POST; more: batches.
    pub max_batch_size: i32,
    /// Which of this lease's POSTs to its endpoint it goes in (0-based).
    pub post: i64,
}

/// Leases due notifications for up to `posts` POSTs until `lease_until`, so other replicas
/// skip them while they are sent; if the outcome is never recorded the lease runs out and
/// they are sent again (at least once). An endpoint gets at most `per_endpoint` POSTs in
/// flight, counting the `in_flight` this replica is still waiting on, so a slow endpoint
/// cannot take every slot from the others; a POST carries up to the endpoint's
/// `max_batch_size` notifications, those due first.
///
/// It walks the endpoints (a few hundred) and, through the index on pending notifications
/// by endpoint and due time, reads only the rows each can take now: its cost does not grow
/// with the notifications waiting.
pub async fn lease_due(
    executor: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    posts: i64,
    in_flight: &[(Uuid, i64)],
    per_endpoint: i64,
) -> Result<Vec<Leased>, ServiceError> {
    let (busy, busy_posts): (Vec<Uuid>, Vec<i64>) = in_flight.iter().copied().unzip();
    Ok(sqlx::query_as(
        "WITH room AS (
             SELECT e.endpoint_id, e.max_batch_size,
                    GREATEST($5 - COALESCE(busy.posts, 0), 0) * e.max_batch_size AS notifications
             FROM endpoints e
             LEFT JOIN unnest($4::uuid[], $6::bigint[]) AS busy (endpoint_id, posts) USING (endpoint_id)),
         due AS (
             SELECT room.endpoint_id, n.notification_id, n.next_attempt_at,
                    (row_number() OVER (PARTITION BY room.endpoint_id ORDER BY n.next_attempt_at, n.notification_id)
                        - 1) / room.max_batch_size AS post
             FROM room CROSS JOIN LATERAL (
                 SELECT notification_id, next_attempt_at FROM notifications
                 WHERE endpoint_id = room.endpoint_id AND delivered_at IS NULL AND gave_up_at IS NULL
                   AND next_attempt_at <= $1
                 ORDER BY next_attempt_at LIMIT room.notifications
                 FOR UPDATE SKIP LOCKED) n
             WHERE room.notifications > 0),
         chosen AS (
             SELECT endpoint_id, post FROM due GROUP BY endpoint_id, post
             ORDER BY min(next_attempt_at), endpoint_id, post LIMIT $3)
         UPDATE notifications n SET next_attempt_at = $2
         FROM due JOIN chosen USING (endpoint_id, post), endpoints e
         WHERE n.notification_id = due.notification_id AND e.endpoint_id = n.endpoint_id
         RETURNING n.notification_id, n.alert_id, n.event_type, n.endpoint_id, n.body, n.attempts, n.created_at,
                   due.next_attempt_at AS due_at, e.url, e.secret_sealed, e.township_code AS endpoint_township,
                   e.max_batch_size, due.post",
    )
    .bind(now)
    .bind(lease_until)
    .bind(posts)
    .bind(&busy)
    .bind(per_endpoint)
    .bind(&busy_posts)
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

/// Records one attempt per notification (a batch's notifications were attempted together)
/// and moves each on (delivered, or due again later), in two statements however many.
pub async fn record_attempts(
    conn: &mut PgConnection,
    attempts: &[(Uuid, &Attempt)],
) -> Result<(), ServiceError> {
    // One array per column, unnested back into rows by the statement.
    let ids: Vec<Uuid> = attempts.iter().map(|(id, _)| *id).collect();
    let numbers: Vec<i32> = attempts.iter().map(|(_, a)| a.attempt_number).collect();
    let attempted: Vec<DateTime<Utc>> = attempts.iter().map(|(_, a)| a.attempted_at).collect();
    let statuses: Vec<i32> = attempts.iter().map(|(_, a)| a.http_status).collect();
    let delivered: Vec<bool> = attempts.iter().map(|(_, a)| a.delivered).collect();
    let errors: Vec<&str> = attempts.iter().map(|(_, a)| a.error.as_str()).collect();
    let durations: Vec<i32> = attempts.iter().map(|(_, a)| a.duration_ms).collect();
    let next: Vec<Option<DateTime<Utc>>> = attempts.iter().map(|(_, a)| a.next_attempt_at).collect();
    let gave_up: Vec<bool> = attempts.iter().map(|(_, a)| a.gave_up).collect();
    sqlx::query(
        "WITH outcome AS (
             SELECT * FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::int[], $5::bool[], $6::text[],
                                  $7::int[], $8::timestamptz[], $9::bool[])
                 WITH ORDINALITY AS o (notification_id, attempt_number, attempted_at, http_status, delivered,
                                       error, duration_ms, next_attempt_at, gave_up, place)),
         recorded AS (
             INSERT INTO delivery_attempts (notification_id, alert_id, event_type, endpoint_id, url,
                 attempt_number, attempted_at, http_status, delivered, error, duration_ms, next_attempt_at, gave_up)
             SELECT o.notification_id, n.alert_id, n.event_type, n.endpoint_id, e.url, o.attempt_number,
                    o.attempted_at, o.http_status, o.delivered, o.error, o.duration_ms, o.next_attempt_at, o.gave_up
             FROM outcome o JOIN notifications n USING (notification_id) JOIN endpoints e USING (endpoint_id)
             ORDER BY o.place)
         UPDATE notifications n SET attempts = o.attempt_number,
             delivered_at = CASE WHEN o.delivered THEN o.attempted_at END,
             next_attempt_at = COALESCE(o.next_attempt_at, n.next_attempt_at), last_error = NULLIF(o.error, ''),
             gave_up_at = CASE WHEN o.gave_up THEN o.attempted_at END
         FROM outcome o WHERE n.notification_id = o.notification_id",
    )
    .bind(&ids)
    .bind(&numbers)
    .bind(&attempted)
    .bind(&statuses)
    .bind(&delivered)
    .bind(&errors)
    .bind(&durations)
    .bind(&next)
    .bind(&gave_up)
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
