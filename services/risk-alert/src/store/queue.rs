//! Webhook notifications queued for many alert steps at once: the endpoints of every office
//! the steps tell, read in one statement, and the notifications written in one, so a batch
//! of alerts costs two round trips rather than a few per alert. The rows are those
//! `webhooks::queue_notification` writes one at a time (due at once).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use mesh_kit::error::ServiceError;
use sqlx::PgConnection;
use uuid::Uuid;

use super::webhooks::NewNotification;
use crate::domain::Jurisdiction;

/// The endpoint of each of `offices` that registered one (a township office, or a county
/// bureau when the township code is empty).
pub async fn endpoints_of(
    conn: &mut PgConnection,
    offices: &[Jurisdiction],
) -> Result<HashMap<Jurisdiction, Uuid>, ServiceError> {
    if offices.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, String, Uuid)> = sqlx::query_as(
        "SELECT endpoints.township_code, endpoints.county_code, endpoints.endpoint_id
         FROM endpoints JOIN UNNEST($1::text[], $2::text[]) AS office(township_code, county_code)
             ON endpoints.township_code = office.township_code AND endpoints.county_code = office.county_code",
    )
    .bind(offices.iter().map(|office| office.township_code.as_str()).collect::<Vec<_>>())
    .bind(offices.iter().map(|office| office.county_code.as_str()).collect::<Vec<_>>())
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(township_code, county_code, endpoint_id)| {
            (
                Jurisdiction {
                    township_code,
                    county_code,
                },
                endpoint_id,
            )
        })
        .collect())
}

/// Queues `notifications`, due at once, in one statement.
pub async fn queue_all(
    conn: &mut PgConnection,
    notifications: &[NewNotification<'_>],
    now: DateTime<Utc>,
) -> Result<(), ServiceError> {
    if notifications.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO notifications (notification_id, alert_id, event_type, endpoint_id, body, created_at, next_attempt_at)
         SELECT notification_id, alert_id, event_type, endpoint_id, body, $6, $6
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::bytea[])
             AS queued(notification_id, alert_id, event_type, endpoint_id, body)",
    )
    .bind(notifications.iter().map(|n| n.notification_id).collect::<Vec<_>>())
    .bind(notifications.iter().map(|n| n.alert_id).collect::<Vec<_>>())
    .bind(notifications.iter().map(|n| n.event_type).collect::<Vec<_>>())
    .bind(notifications.iter().map(|n| n.endpoint_id).collect::<Vec<_>>())
    .bind(notifications.iter().map(|n| n.body.as_slice()).collect::<Vec<_>>())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}
