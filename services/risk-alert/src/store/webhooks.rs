//! Webhook endpoints (one per township office or county bureau, each taking one
//! notification per POST or batches of up to its `max_batch_size`) and the notifications
//! queued for them (one per alert change and endpoint, in the change's transaction).
//! Leasing and attempts are `deliveries`'.

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
    /// 1: one notification per POST; more: batches of up to this many.
    pub max_batch_size: i32,
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
             registered_by_subject, registered_by_role, created_at, updated_at, max_batch_size)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10)
         ON CONFLICT (county_code, township_code) DO UPDATE SET url = $4, secret_sealed = $5, description = $6,
             registered_by_subject = $7, registered_by_role = $8, updated_at = $9, max_batch_size = $10
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
    .bind(endpoint.max_batch_size)
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
    pub max_batch_size: i32,
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
        "SELECT endpoint_id, township_code, county_code, url, description, max_batch_size, registered_by_subject,
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
