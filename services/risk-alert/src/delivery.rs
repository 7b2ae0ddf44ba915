//! The webhook delivery worker: leases due notifications (replicas share the work with
//! `FOR UPDATE SKIP LOCKED`), POSTs them signed to their endpoints (one per POST, or batches
//! to endpoints that opted in), and records every notification's attempt. POSTs run side by
//! side, each bounded by its timeout, and the worker leases more as soon as any finishes,
//! never more than a few at once per endpoint: a slow or dead endpoint only delays its own
//! notifications. A failed attempt is retried with backoff; after a few failures the alert
//! is escalated to the county bureau, and after more the notification is given up
//! (`domain::redelivery`, per notification, also in a batch). Delivery is at least once:
//! receivers deduplicate by the notification id. POSTs go only where `egress` allows
//! (`send`), and a failure is recorded in the few words of `failure`.

mod failure;
mod post;
mod send;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures::{StreamExt, stream::FuturesUnordered};
use mesh_kit::{
    CancellationToken, change::Changes, clock::SharedClock, crypto::FieldCrypto, error::ServiceError,
    retention,
};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    domain::redelivery::{self, RetryPolicy},
    egress::Egress,
    lifecycle::Lifecycle,
    notify::{self, HEADER_SIGNATURE, HEADER_TIMESTAMP},
    store::{self, deliveries},
};
use failure::Failure;
use post::{Outcome, Post, Recorded};
use send::Sender;

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub tick: Duration,
    pub retry: RetryPolicy,
    pub request_timeout: Duration,
    /// How long a claimed notification is hidden from other replicas while it is sent.
    pub lease: Duration,
    /// POSTs in flight at once, over all endpoints.
    pub concurrency: usize,
    /// POSTs in flight at once to one endpoint (each may carry a batch).
    pub per_endpoint: usize,
    /// How long a delivered or given-up notification keeps its body.
    pub body_retention: Duration,
}

/// Delivers pending notifications until shutdown.
pub struct DeliveryWorker {
    changes: Changes,
    crypto: Arc<FieldCrypto>,
    clock: SharedClock,
    sender: Sender,
    config: DeliveryConfig,
    lifecycle: Lifecycle,
}

impl DeliveryWorker {
    pub fn new(
        changes: Changes,
        crypto: Arc<FieldCrypto>,
        clock: SharedClock,
        config: DeliveryConfig,
        lifecycle: Lifecycle,
        egress: Egress,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            changes,
            crypto,
            clock,
            sender: Sender::new(config.request_timeout, egress)?,
            config,
            lifecycle,
        })
    }

    /// Delivers until shutdown. `woken` fires as soon as any replica commits an alert change
    /// (so a notification does not wait for the next tick); the tick still drives retries
    /// that come due. Attempts in flight at shutdown are dropped; their leases run out and
    /// they are sent again.
    pub async fn run(self, woken: Arc<Notify>, shutdown: CancellationToken) {
        let mut in_flight = FuturesUnordered::new();
        // Endpoint → POSTs in flight to it.
        let mut busy: HashMap<Uuid, usize> = HashMap::new();
        // Bodies are emptied as often as their retention, at most every ten minutes.
        let purge_every = retention::cadence(self.config.body_retention, Duration::from_secs(600));
        let mut next_purge = tokio::time::Instant::now() + purge_every;
        loop {
            if tokio::time::Instant::now() >= next_purge {
                self.purge_bodies().await;
                next_purge = tokio::time::Instant::now() + purge_every;
            }
            let room = self.config.concurrency.saturating_sub(in_flight.len());
            let mut leased_any = false;
            if room > 0 {
                match self.lease(room, &busy).await {
                    Ok(posts) => {
                        leased_any = !posts.is_empty();
                        for post in posts {
                            *busy.entry(post.endpoint_id).or_default() += 1;
                            in_flight.push(self.deliver(post));
                        }
                    }
                    Err(error) => tracing::warn!(error = %error, "leasing webhooks failed; retrying"),
                }
            }
            if leased_any && in_flight.len() < self.config.concurrency {
                // More may be due for endpoints that were at their limit; look again at once.
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(endpoint_id) = in_flight.next(), if !in_flight.is_empty() => {
                    if let Some(count) = busy.get_mut(&endpoint_id) {
                        *count -= 1;
                        if *count == 0 {
                            busy.remove(&endpoint_id);
                        }
                    }
                }
                _ = woken.notified() => {}
                _ = tokio::time::sleep(self.config.tick) => {}
            }
        }
        tracing::info!("webhook delivery stopped");
    }

    /// Empties the bodies of notifications finished longer than the retention ago; a
    /// failure is retried at the next purge.
    async fn purge_bodies(&self) {
        match store::purge::finished_notification_bodies(self.changes.pool(), self.config.body_retention)
            .await
        {
            Ok(0) => {}
            Ok(emptied) => tracing::debug!(emptied, "finished notifications' bodies emptied"),
            Err(error) => {
                tracing::warn!(error = %error, "emptying finished notifications' bodies failed; will retry")
            }
        }
    }

    /// Leases the due notifications of up to `room` POSTs, each endpoint's up to its limit.
    async fn lease(&self, room: usize, busy: &HashMap<Uuid, usize>) -> Result<Vec<Post>, ServiceError> {
        let now = self.clock.now();
        let lease_until =
            now + chrono::Duration::from_std(self.config.lease).map_err(ServiceError::internal)?;
        let in_flight: Vec<(Uuid, i64)> = busy
            .iter()
            .map(|(endpoint_id, posts)| (*endpoint_id, i64::try_from(*posts).unwrap_or(i64::MAX)))
            .collect();
        let leased = deliveries::lease_due(
            self.changes.pool(),
            now,
            lease_until,
            i64::try_from(room).unwrap_or(i64::MAX),
            &in_flight,
            i64::try_from(self.config.per_endpoint).unwrap_or(1),
        )
        .await?;
        Ok(post::group(leased, post::MAX_BATCH_BYTES))
    }

    /// One POST, each of its notifications' attempt recorded; returns the endpoint it went to.
    async fn deliver(&self, post: Post) -> Uuid {
        let started = std::time::Instant::now();
        let attempted_at = self.clock.now();
        let outcome = match self.crypto.open(&post.secret_sealed, notify::SECRET_CONTEXT) {
            Err(error) => {
                // Ours to fix (a key changed under a stored secret), not the office's to read.
                tracing::error!(endpoint_id = %post.endpoint_id, error = %error, "webhook secret cannot be opened");
                Err(Failure::Failed)
            }
            Ok(secret) => self.send(&post, secret.as_bytes(), attempted_at).await,
        };
        let duration_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
        let recorded = post::attempts(&post, &outcome, attempted_at, duration_ms, &self.config.retry);
        if let Err(db_error) = self.record(&post, &recorded).await {
            // The leases expire and the notifications are sent again: at least once.
            tracing::warn!(error = %db_error, endpoint_id = %post.endpoint_id, notifications = recorded.len(), "delivery outcome not recorded");
        }
        log(&post, &outcome, &recorded);
        post.endpoint_id
    }

    async fn send(&self, post: &Post, secret: &[u8], attempted_at: DateTime<Utc>) -> Outcome {
        let timestamp = attempted_at.timestamp();
        let body = post.body();
        let mut headers = vec![
            ("content-type", "application/json".to_owned()),
            (HEADER_TIMESTAMP, timestamp.to_string()),
            (HEADER_SIGNATURE, notify::sign(secret, timestamp, &body)),
        ];
        headers.extend(post.headers());
        self.sender.post(&post.url, headers, body).await
    }

    /// Records the attempts and their effect on the notifications together, and when the
    /// township office could not be reached, escalates the alerts to the county bureau in
    /// the same transaction (a county bureau's endpoint has no one above it to escalate to).
    /// An alert with several notifications in one failed batch is escalated once.
    async fn record(&self, post: &Post, recorded: &[Recorded]) -> Result<(), ServiceError> {
        let mut change = self.changes.begin().await?;
        let attempts: Vec<(Uuid, &deliveries::Attempt)> =
            recorded.iter().map(|r| (r.notification_id, &r.attempt)).collect();
        deliveries::record_attempts(&mut change, &attempts).await?;
        let mut escalated = HashSet::new();
        for r in recorded.iter().filter(|r| r.escalate) {
            if post.endpoint_township.is_empty() {
                tracing::error!(alert_id = %r.alert_id, "the county bureau's endpoint cannot be reached");
            } else if escalated.insert(r.alert_id)
                && let Some(alert) = store::alerts::load_for_update(&mut change, r.alert_id).await?
                // The office that must act is the one not reached (not, say, the township a
                // transferred alert left).
                && alert.jurisdiction.township_code == post.endpoint_township
            {
                let reason = redelivery::escalation_reason(r.attempt.attempt_number.unsigned_abs());
                self.lifecycle
                    .escalate(&mut change, alert, &reason, r.attempt.attempted_at)
                    .await?;
            }
        }
        change.commit().await
    }
}

/// One line per POST, and one per notification given up (someone must look at those).
fn log(post: &Post, outcome: &Outcome, recorded: &[Recorded]) {
    let notifications = recorded.len();
    match outcome {
        Ok(_) => {
            tracing::info!(endpoint_id = %post.endpoint_id, notifications, batched = post.batched, "webhook delivered");
        }
        Err(failure) => {
            tracing::warn!(endpoint_id = %post.endpoint_id, notifications, error = %failure, "webhook delivery failed");
        }
    }
    for r in recorded.iter().filter(|r| r.attempt.gave_up) {
        tracing::error!(notification_id = %r.notification_id, alert_id = %r.alert_id, attempt_number = r.attempt.attempt_number, error = %r.attempt.error, "webhook delivery given up");
    }
}
