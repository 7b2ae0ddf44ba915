//! The stall report of the consumer: once one record has failed (temporarily) for longer
//! than the cap, one `ops.consumer_stalled`, and `ops.consumer_recovered` when any process of
//! the group gets past it (reported stalls are kept in `kit_consumer_stalls`).

use std::{collections::HashMap, sync::PoisonError, time::Instant};

use chrono::{DateTime, Utc};

use super::{EventConsumer, Handler, InboundEvent, place};
use crate::stalls::{self, Place};

impl<H: Handler> EventConsumer<H> {
    /// Writes `ops.consumer_stalled` once the record has failed for longer than the cap
    /// (`since`: when it began failing here), unless a stall on it is known already. Best
    /// effort: when the database is what fails, the next retry tries again.
    pub(super) async fn check_stall(
        &self,
        event: &InboundEvent,
        since: (Instant, DateTime<Utc>),
        error: &anyhow::Error,
    ) {
        let place = place(event);
        if since.0.elapsed() < self.config.stall_after || self.known_stall(&place).is_some() {
            return;
        }
        let report = self
            .reporter
            .stalled(event, &format!("{error:#}"), since.1, Utc::now());
        let written = async {
            let mut tx = self.pool.begin().await?;
            crate::outbox::enqueue(&mut tx, report).await?;
            stalls::record(&mut tx, &self.config.group_id, &place, since.1).await?;
            tx.commit().await
        };
        match written.await {
            Ok(()) => {
                self.wake_outbox();
                self.stalls().insert(place, since.1);
                tracing::error!(topic = %event.topic, partition = event.partition, offset = event.offset, "consumer stalled: one record keeps failing; every record behind it waits");
            }
            Err(report_error) => {
                tracing::error!(error = %report_error, topic = %event.topic, offset = event.offset, "consumer stalled and the stall could not be reported; retrying");
            }
        }
    }

    /// Writes `ops.consumer_recovered` when a stall on this record was reported (by this
    /// process or an earlier one).
    pub(super) async fn recover(&self, event: &InboundEvent) {
        let place = place(event);
        let Some(since) = self.known_stall(&place) else {
            return;
        };
        let report = self.reporter.recovered(event, since, Utc::now());
        let written = async {
            let mut tx = self.pool.begin().await?;
            crate::outbox::enqueue(&mut tx, report).await?;
            stalls::clear(&mut tx, &self.config.group_id, &place).await?;
            tx.commit().await
        };
        match written.await {
            Ok(()) => {
                self.wake_outbox();
                self.stalls().remove(&place);
                tracing::info!(topic = %event.topic, offset = event.offset, "consumer recovered");
            }
            Err(error) => {
                tracing::error!(error = %error, topic = %event.topic, offset = event.offset, "consumer recovered but the recovery could not be reported; its stall alert stays open");
            }
        }
    }

    fn stalls(&self) -> std::sync::MutexGuard<'_, HashMap<Place, DateTime<Utc>>> {
        self.stalled.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn known_stall(&self, place: &Place) -> Option<DateTime<Utc>> {
        self.stalls().get(place).copied()
    }

    /// Reloads the reported stalls of this group, which another process (before a restart,
    /// or the replica that had the partition before a rebalance) may have written.
    pub(super) async fn refresh_stalls(&self) {
        match stalls::open(&self.pool, &self.config.group_id, &self.config.topics).await {
            Ok(open) => *self.stalls() = open,
            Err(error) => {
                tracing::warn!(error = %error, group = %self.config.group_id, "reported stalls not read; retrying")
            }
        }
    }
}
