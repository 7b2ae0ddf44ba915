//! One way to change state: a [`Change`] is a transaction that writes the rows, the outbox
//! event that tells the mesh, and the audit record that tells an inspector — all or none —
//! and wakes the outbox relay once it has committed (so the event leaves at once instead of
//! at the relay's next poll).

use std::{
    future::Future,
    ops::{Deref, DerefMut},
};

use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::{
    audit,
    auth::Caller,
    error::ServiceError,
    outbox::{self, NewEvent, OutboxSignal},
};

/// Opens [`Change`]s on a service's database.
#[derive(Debug, Clone)]
pub struct Changes {
    pool: PgPool,
    signal: OutboxSignal,
}

impl Changes {
    pub fn new(pool: PgPool, signal: OutboxSignal) -> Self {
        Self { pool, signal }
    }

    /// The database, for reads that need no transaction.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The relay's wake-up, for writers outside a [`Change`] (the consumer's transactions).
    pub fn signal(&self) -> &OutboxSignal {
        &self.signal
    }

    /// Begins a change.
    pub async fn begin(&self) -> Result<Change, ServiceError> {
        Ok(Change {
            tx: self.pool.begin().await?,
            signal: self.signal.clone(),
            published: false,
        })
    }
}

/// A transaction that may publish events and records audit entries. Queries run on it
/// through `&mut *change` (it dereferences to the connection). Dropped without
/// [`Change::commit`], it rolls back and nothing is published.
pub struct Change {
    tx: Transaction<'static, Postgres>,
    signal: OutboxSignal,
    published: bool,
}

impl std::fmt::Debug for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Change")
            .field("published", &self.published)
            .finish()
    }
}

/// A transaction that writes changes with their events and audit records: an RPC's
/// [`Change`] (which wakes the relay when it commits) or the connection a consumer's handler
/// runs in (whose consumer wakes the relay after its commit). Rules that run on both paths
/// (registering a person from an RPC or from a prison's handover; raising an alert from the
/// scheduler or a consumed event) take `&mut impl Tx` and are written once.
pub trait Tx: Send {
    /// The connection of the transaction, for the store's queries.
    fn conn(&mut self) -> &mut PgConnection;

    /// Notes that an event was written, so the relay is woken after the commit.
    fn note_published(&mut self);

    /// Writes `event` to the outbox and its audit record (action = the event type): every
    /// change the mesh hears of is also audited, and neither is stored without the other.
    fn publish(
        &mut self,
        caller: &Caller,
        event: NewEvent,
        subject_id: Option<Uuid>,
        detail: serde_json::Value,
    ) -> impl Future<Output = Result<Uuid, ServiceError>> + Send {
        self.publish_about(caller, event, subject_id, None, detail)
    }

    /// [`Tx::publish`] for a change that touches `person_id`'s personal data besides its
    /// subject (a placement's candidate).
    fn publish_about(
        &mut self,
        caller: &Caller,
        event: NewEvent,
        subject_id: Option<Uuid>,
        person_id: Option<Uuid>,
        detail: serde_json::Value,
    ) -> impl Future<Output = Result<Uuid, ServiceError>> + Send {
        async move {
            let action = event.event_type;
            let event_id = outbox::enqueue(self.conn(), event).await?;
            audit::record(self.conn(), caller, action, subject_id, person_id, detail).await?;
            self.note_published();
            Ok(event_id)
        }
    }

    /// Writes an event to the outbox without an audit record: for changes the service makes
    /// on its own (a deadline that passed), which have no caller to audit.
    fn publish_unaudited(
        &mut self,
        event: NewEvent,
    ) -> impl Future<Output = Result<Uuid, ServiceError>> + Send {
        async move {
            let event_id = outbox::enqueue(self.conn(), event).await?;
            self.note_published();
            Ok(event_id)
        }
    }

    /// Writes many such events in one statement, in order ([`outbox::enqueue_all`]).
    fn publish_all_unaudited(
        &mut self,
        events: &[outbox::TracedEvent],
    ) -> impl Future<Output = Result<(), ServiceError>> + Send {
        async move {
            if !events.is_empty() {
                outbox::enqueue_all(self.conn(), events).await?;
                self.note_published();
            }
            Ok(())
        }
    }

    /// Records that `caller` read or acted on personal data (see [`audit::record`]).
    fn audit(
        &mut self,
        caller: &Caller,
        action: &str,
        subject_id: Option<Uuid>,
        person_id: Option<Uuid>,
        detail: serde_json::Value,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send {
        async move {
            audit::record(self.conn(), caller, action, subject_id, person_id, detail).await?;
            Ok(())
        }
    }
}

impl Tx for Change {
    fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    fn note_published(&mut self) {
        self.published = true;
    }
}

impl Tx for PgConnection {
    fn conn(&mut self) -> &mut PgConnection {
        self
    }

    /// The consumer wakes the relay after its commit.
    fn note_published(&mut self) {}
}

impl Change {
    /// Commits, then wakes the relay if an event was written.
    pub async fn commit(self) -> Result<(), ServiceError> {
        self.tx.commit().await?;
        if self.published {
            self.signal.notify();
        }
        Ok(())
    }
}

impl Deref for Change {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for Change {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}
