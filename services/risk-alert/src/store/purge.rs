//! Retention of what notifications carried: a notification's body (the alert with the
//! person's name, township and evidence) is needed only until it is delivered or given up;
//! kept beyond the retention it is personal data held for no purpose (PIPL's minimisation).
//! The row, its attempts and the alert itself stay, for `ListDeliveries` and audits.

use std::time::Duration;

use mesh_kit::{error::ServiceError, retention};
use sqlx::PgPool;

/// Empties the bodies of notifications delivered or given up longer than `retention` ago
/// (`mesh_kit::retention::sweep`); returns how many. A pending notification is never
/// touched.
pub async fn finished_notification_bodies(pool: &PgPool, retention: Duration) -> Result<u64, ServiceError> {
    Ok(retention::sweep(
        pool,
        "UPDATE notifications SET body = ''::bytea WHERE notification_id IN (
             SELECT notification_id FROM notifications
             WHERE body <> ''::bytea
               AND COALESCE(delivered_at, gave_up_at) < now() - make_interval(secs => $1)
             LIMIT $2)",
        retention,
    )
    .await?)
}
