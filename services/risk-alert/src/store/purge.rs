//! Retention of what notifications carried: a notification's body (the alert with the
//! person's name, township and evidence) is needed only until it is delivered or given up;
//! kept beyond the retention it is personal data held for no purpose (PIPL's minimisation).
//! The row, its attempts and the alert itself stay, for `ListDeliveries` and audits.

use std::time::Duration;

use mesh_kit::error::ServiceError;
use sqlx::PgPool;

/// Rows emptied per statement: short statements beside delivery's own writes.
const CHUNK: i64 = 10_000;

/// Empties the bodies of notifications delivered or given up longer than `retention` ago
/// (by the database's clock), a chunk per statement; returns how many. A pending
/// notification is never touched.
pub async fn finished_notification_bodies(pool: &PgPool, retention: Duration) -> Result<u64, ServiceError> {
    let seconds = retention.as_secs_f64();
    let mut emptied = 0;
    loop {
        let chunk = sqlx::query(
            "UPDATE notifications SET body = ''::bytea WHERE notification_id IN (
                 SELECT notification_id FROM notifications
                 WHERE body <> ''::bytea
                   AND COALESCE(delivered_at, gave_up_at) < now() - make_interval(secs => $1)
                 LIMIT $2)",
        )
        .bind(seconds)
        .bind(CHUNK)
        .execute(pool)
        .await?
        .rows_affected();
        emptied += chunk;
        if chunk < CHUNK as u64 {
            return Ok(emptied);
        }
    }
}
