//! The one registration path, for a person an officer types in (an RPC) and a person a
//! prison hands over (the handover consumer) alike: store the person, then publish
//! `supervisee.registered` with its audit record, in the transaction the caller holds.

use std::future::Future;

use chrono::{DateTime, Utc};
use mesh_kit::{audit, auth::Caller, change::Change, error::ServiceError};
use sqlx::PgConnection;

use crate::{
    domain::{RegisterError, Registration, Supervisee},
    events::{Events, Published},
    sealing::Sealer,
    store,
};

/// A transaction that can publish an event with its audit record: an RPC's [`Change`] (which
/// wakes the relay when it commits) or a consumer's connection (whose consumer wakes it).
///
/// Kit proposal: this trait (or `Change` over a borrowed connection) belongs in
/// `mesh_kit::change`, so consumers publish the same way RPCs do.
pub trait Publish: Send {
    fn connection(&mut self) -> &mut PgConnection;

    /// Writes the event to the outbox and its audit record.
    fn publish(
        &mut self,
        caller: &Caller,
        published: Published,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send;
}

impl Publish for Change {
    fn connection(&mut self) -> &mut PgConnection {
        self
    }

    async fn publish(&mut self, caller: &Caller, published: Published) -> Result<(), ServiceError> {
        let subject_id = Some(published.subject_id);
        Change::publish(self, caller, published.event, subject_id, published.detail)
            .await
            .map(drop)
    }
}

impl Publish for PgConnection {
    fn connection(&mut self) -> &mut PgConnection {
        self
    }

    async fn publish(&mut self, caller: &Caller, published: Published) -> Result<(), ServiceError> {
        let (event, detail) = (published.event, published.detail);
        let written = audit::record_change(self, caller, event, Some(published.subject_id), detail);
        written.await.map_err(ServiceError::from)
    }
}

/// Registers a validated person; `handover_id` when a prison handed them over.
pub async fn register<T: Publish + ?Sized>(
    tx: &mut T,
    sealer: &Sealer,
    events: &Events,
    registration: &Registration,
    caller: &Caller,
    handover_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Supervisee, RegisterError> {
    let supervisee = store::insert(tx.connection(), sealer, registration, handover_id, now)
        .await?
        .ok_or(RegisterError::AlreadyOpen)?;
    let published = events.registered(&supervisee, caller, handover_id);
    tx.publish(caller, published).await?;
    Ok(supervisee)
}
