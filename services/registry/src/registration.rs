//! The one registration path, for a person an officer types in (an RPC) and a person a
//! prison hands over (the handover consumer) alike: store the person, then publish
//! `supervisee.registered` with its audit record, in the transaction the caller holds.

use chrono::{DateTime, Utc};
use mesh_kit::{auth::Caller, change::Tx};

use crate::{
    domain::{RegisterError, Registration, Supervisee},
    events::Events,
    sealing::Sealer,
    store,
};

/// Registers a validated person; `handover_id` when a prison handed them over.
pub async fn register<T: Tx + ?Sized>(
    tx: &mut T,
    sealer: &Sealer,
    events: &Events,
    registration: &Registration,
    caller: &Caller,
    handover_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Supervisee, RegisterError> {
    let supervisee = store::insert(tx.conn(), sealer, registration, handover_id, now)
        .await?
        .ok_or(RegisterError::AlreadyOpen)?;
    let published = events.registered(&supervisee, caller, handover_id);
    published.write(tx, caller).await?;
    Ok(supervisee)
}
