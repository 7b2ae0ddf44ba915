//! The check-in service's projection of the registry: who the supervisees are, where they
//! are supervised and whether they are under active supervision, kept from the registry's
//! `supervisee.*` events (never from the registry's tables).
//!
//! Every `supervisee.*` event carries a full snapshot with the record's version, so the
//! projection simply keeps the newest snapshot: an older or repeated one (redelivery, replay
//! after a restart, reordering across a rebalance) changes nothing.

use mesh_kit::consumer::{HandleError, Handler, InboundEvent};
use sqlx::PgConnection;

use crate::domain;

/// Applies registry events to the `supervisees` table.
#[derive(Debug, Clone, Default)]
pub struct RegistryProjection;

impl Handler for RegistryProjection {
    async fn handle(&self, conn: &mut PgConnection, event: &InboundEvent) -> Result<(), HandleError> {
        let Some(snapshot) = mesh_kit::events::supervisee_snapshot(event)? else {
            tracing::debug!(event_type = %event.event_type, "event type not projected; ignored");
            return Ok(());
        };
        let supervisee = domain::project_snapshot(&snapshot)
            .map_err(|reason| HandleError::Permanent(format!("{}: {reason}", event.event_type)))?;
        let applied = sqlx::query(
            "INSERT INTO supervisees (id, name, township_code, county_code, status, level, version)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET
                 name = EXCLUDED.name, township_code = EXCLUDED.township_code,
                 county_code = EXCLUDED.county_code, status = EXCLUDED.status, level = EXCLUDED.level,
                 version = EXCLUDED.version, projected_at = now()
             WHERE supervisees.version < EXCLUDED.version",
        )
        .bind(supervisee.id)
        .bind(&supervisee.name)
        .bind(&supervisee.township_code)
        .bind(&supervisee.county_code)
        .bind(supervisee.status.as_str())
        .bind(supervisee.level)
        .bind(supervisee.version)
        .execute(conn)
        .await?
        .rows_affected();
        if applied == 0 {
            tracing::debug!(supervisee_id = %supervisee.id, version = supervisee.version, "stale snapshot ignored");
        } else {
            tracing::info!(
                supervisee_id = %supervisee.id,
                version = supervisee.version,
                status = supervisee.status.as_str(),
                "supervisee projected"
            );
        }
        Ok(())
    }
}
