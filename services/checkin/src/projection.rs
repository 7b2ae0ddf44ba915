//! The check-in service's projection of the registry: who the supervisees are, where they
//! are supervised and whether they are under active supervision, kept from the registry's
//! `supervisee.*` events (never from the registry's tables).
//!
//! Every `supervisee.*` event carries a full snapshot with the record's version, so the
//! projection simply keeps the newest snapshot: an older or repeated one (redelivery, replay
//! after a restart, reordering across a rebalance) changes nothing. Each applied snapshot is
//! also kept with the time of its change, so a late offline check-in is judged by how the
//! person was supervised when it was captured.

use mesh_kit::consumer::{HandleError, Handler, InboundEvent};
use sqlx::PgConnection;

use crate::{domain::ProjectedSupervisee, request, store};

/// Applies registry events to the `supervisees` table.
#[derive(Debug, Clone, Default)]
pub struct RegistryProjection;

/// The supervisee an event describes: `None` for event types not projected, a permanent
/// error (dead letter) for a snapshot that can never be.
fn supervisee(event: &InboundEvent) -> Result<Option<ProjectedSupervisee>, HandleError> {
    let Some(snapshot) = mesh_kit::events::supervisee_snapshot(event)? else {
        return Ok(None);
    };
    request::supervisee(&snapshot)
        .map(Some)
        .map_err(|reason| HandleError::Permanent(format!("{}: {reason}", event.event_type)))
}

impl Handler for RegistryProjection {
    async fn handle(&self, conn: &mut PgConnection, event: &InboundEvent) -> Result<(), HandleError> {
        let Some(supervisee) = supervisee(event)? else {
            tracing::debug!(event_type = %event.event_type, "event type not projected; ignored");
            return Ok(());
        };
        // A failed write is the database's trouble, never the event's: retry it.
        let applied = store::project_supervisee(conn, &supervisee)
            .await
            .map_err(HandleError::from)?;
        // The history keeps every version, even one that arrives after a newer snapshot.
        store::record_supervision(conn, &supervisee, event.occurred_at)
            .await
            .map_err(HandleError::from)?;
        if applied {
            tracing::info!(
                supervisee_id = %supervisee.id,
                version = supervisee.version,
                status = supervisee.status.as_str(),
                "supervisee projected"
            );
        } else {
            tracing::debug!(supervisee_id = %supervisee.id, version = supervisee.version, "stale snapshot ignored");
        }
        Ok(())
    }
}

#[cfg(test)]
mod properties {
    use mesh_proptest::{config, event_rejection, fixtures, inbound, payloads};
    use proptest::{prelude::*, sample::select};

    use super::*;

    const REGISTERED: &str = "mesh.registry.v1.SuperviseeRegistered";

    proptest! {
        #![proptest_config(config())]

        /// Whatever the registry's topic carries, the projection reads a supervisee or sets
        /// the record aside naming the field at fault; it never panics.
        #[test]
        fn registry_events(
            event_type in select(&["supervisee.registered", "supervisee.level_changed", "supervisee.transferred", "supervisee.status_changed", "supervisee.renamed"][..]),
            payload in payloads(REGISTERED, &fixtures::registered()),
        ) {
            event_rejection(REGISTERED, &supervisee(&inbound(event_type, payload)))?;
        }
    }
}
