//! The scheduler's alarm: a LISTEN on the deadline-change channel, which a trigger on the
//! `deadlines` table notifies in the transaction that writes a pending deadline falling due
//! soon (`migrations/risk-alert/20261130500001_deadline_notices.sql`). A notice only says
//! "look again": the table stays the truth, read after every notice, so replicas and
//! restarts agree and a duplicate notice costs one indexed query.
//!
//! PostgreSQL drops the notices sent while the connection is down; after a lost connection
//! the alarm rings once it listens again, so the table is read after the gap, and the
//! scheduler's fallback poll covers a notice lost unnoticed.

use std::time::Duration;

use sqlx::{PgPool, postgres::PgListener};

use crate::store::deadlines::CHANGES_CHANNEL;

/// The pause after a failed connection attempt, so a database outage is not hammered.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// Rings when the earliest pending deadline may have changed.
pub struct Alarm {
    pool: PgPool,
    listener: Option<PgListener>,
}

impl Alarm {
    /// Not yet listening: the first `rung` connects.
    pub fn new(pool: PgPool) -> Self {
        Self { pool, listener: None }
    }

    /// Resolves when the deadlines must be read again: a notice arrived, or the alarm has
    /// just started listening (after a start or a lost connection, when notices may have
    /// been missed). Dropping the future (the scheduler's timer won) loses no notice: the
    /// listener keeps what arrived for the next call.
    pub async fn rung(&mut self) {
        let Some(listener) = self.listener.as_mut() else {
            match listen(&self.pool).await {
                Ok(listener) => self.listener = Some(listener),
                Err(error) => {
                    tracing::warn!(error = %error, "cannot listen for deadline changes; the fallback poll stands in");
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
            }
            return;
        };
        // `try_recv` (not `recv`, which reconnects silently) says when the connection was
        // lost; the listener is then rebuilt, and rings again once it listens.
        match listener.try_recv().await {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::warn!("deadline-change connection lost; reconnecting");
                self.listener = None;
            }
            Err(error) => {
                tracing::warn!(error = %error, "deadline-change connection failed; reconnecting");
                self.listener = None;
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
        }
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANGES_CHANNEL).await?;
    Ok(listener)
}
