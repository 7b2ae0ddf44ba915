//! The webhook delivery worker: leases due notifications (replicas share the work with
//! `FOR UPDATE SKIP LOCKED`), POSTs each signed to its endpoint, and records every attempt.
//! Attempts run side by side, each bounded by its timeout, and the worker leases more as
//! soon as any finishes, never more than a few at once per endpoint: a slow or dead endpoint
//! only delays its own notifications. A failed attempt is retried with backoff; after a few
//! failures the alert is escalated to the county bureau, and after more the notification
//! is given up (`domain::redelivery`). Delivery is at least once: receivers deduplicate by
//! the notification id.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use futures::{StreamExt, stream::FuturesUnordered};
use mesh_kit::{
    CancellationToken, change::Changes, clock::SharedClock, crypto::FieldCrypto, error::ServiceError,
};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::{
    domain::redelivery::{self, RetryPolicy},
    lifecycle::Lifecycle,
    notify::{self, HEADER_EVENT_TYPE, HEADER_NOTIFICATION_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP},
    store::{
        self,
        webhooks::{self, Attempt, Leased},
    },
};

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub tick: Duration,
    pub retry: RetryPolicy,
    pub request_timeout: Duration,
    /// How long a claimed notification is hidden from other replicas while it is sent.
    pub lease: Duration,
    /// Attempts in flight at once, over all endpoints.
    pub concurrency: usize,
    /// Attempts in flight at once to one endpoint.
    pub per_endpoint: usize,
}

/// Delivers pending notifications until shutdown.
pub struct DeliveryWorker {
    changes: Changes,
    crypto: Arc<FieldCrypto>,
    clock: SharedClock,
    http: reqwest::Client,
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
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            changes,
            crypto,
            clock,
            http,
            config,
            lifecycle,
        })
    }

    /// Delivers until shutdown. `woken` fires as soon as any replica commits an alert change
    /// (so a notification does not wait for the next tick); the tick still drives retries
    /// that come due. Attempts in flight at shutdown are dropped; their leases run out and
    /// they are sent again.
    pub async fn run<T: Clone>(self, mut woken: broadcast::Receiver<T>, shutdown: CancellationToken) {
        let mut in_flight = FuturesUnordered::new();
        // Endpoint → attempts in flight to it.
        let mut busy: HashMap<Uuid, usize> = HashMap::new();
        loop {
            let room = self.config.concurrency.saturating_sub(in_flight.len());
            let mut leased_any = false;
            if room > 0 {
                match self.lease(room, &busy).await {
                    Ok(leased) => {
                        leased_any = !leased.is_empty();
                        for notification in leased {
                            *busy.entry(notification.endpoint_id).or_default() += 1;
                            in_flight.push(self.deliver(notification));
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
                _ = woken.recv() => {}
                _ = tokio::time::sleep(self.config.tick) => {}
            }
        }
        tracing::info!("webhook delivery stopped");
    }

    /// Leases up to `room` due notifications, skipping endpoints already at their limit.
    async fn lease(&self, room: usize, busy: &HashMap<Uuid, usize>) -> Result<Vec<Leased>, ServiceError> {
        let now = self.clock.now();
        let lease_until =
            now + chrono::Duration::from_std(self.config.lease).map_err(ServiceError::internal)?;
        let full: Vec<Uuid> = busy
            .iter()
            .filter(|(_, count)| **count >= self.config.per_endpoint)
            .map(|(endpoint_id, _)| *endpoint_id)
            .collect();
        webhooks::lease_due(
            self.changes.pool(),
            now,
            lease_until,
            i64::try_from(room).unwrap_or(i64::MAX),
            &full,
            i64::try_from(self.config.per_endpoint).unwrap_or(1),
        )
        .await
    }

    /// One attempt, recorded; returns the endpoint it went to.
    async fn deliver(&self, notification: Leased) -> Uuid {
        let attempt_number = notification.attempts + 1;
        let started = std::time::Instant::now();
        let attempted_at = self.clock.now();
        let outcome = match self
            .crypto
            .open(&notification.secret_sealed, notify::SECRET_CONTEXT)
        {
            Err(error) => Err((0, error.to_string())),
            Ok(secret) => self.post(&notification, secret.as_bytes(), attempted_at).await,
        };
        let duration_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
        let (delivered, http_status, error) = match outcome {
            Ok(status) => (true, i32::from(status), String::new()),
            Err((status, error)) => (false, i32::from(status), error),
        };
        let after = (!delivered).then(|| {
            redelivery::after_failure(
                &self.config.retry,
                u32::try_from(attempt_number).unwrap_or(u32::MAX),
                notification.created_at,
                attempted_at,
            )
        });
        let attempt = Attempt {
            attempt_number,
            attempted_at,
            http_status,
            delivered,
            gave_up: after.is_some_and(|after| after.next_attempt_at.is_none()),
            error,
            duration_ms,
            next_attempt_at: after.and_then(|after| after.next_attempt_at),
        };
        let escalate = after.is_some_and(|after| after.escalate);
        if let Err(db_error) = self.record(&notification, &attempt, escalate).await {
            // The lease expires and the notification is sent again: at least once.
            tracing::warn!(error = %db_error, notification_id = %notification.notification_id, "delivery outcome not recorded");
        }
        if attempt.delivered {
            tracing::info!(notification_id = %notification.notification_id, alert_id = %notification.alert_id, attempt_number, "webhook delivered");
        } else if attempt.gave_up {
            tracing::error!(notification_id = %notification.notification_id, alert_id = %notification.alert_id, attempt_number, error = %attempt.error, "webhook delivery given up");
        } else {
            tracing::warn!(notification_id = %notification.notification_id, attempt_number, error = %attempt.error, "webhook delivery failed; will retry");
        }
        notification.endpoint_id
    }

    async fn post(
        &self,
        notification: &Leased,
        secret: &[u8],
        attempted_at: DateTime<Utc>,
    ) -> Result<u16, (u16, String)> {
        let timestamp = attempted_at.timestamp();
        let response = self
            .http
            .post(&notification.url)
            .header("content-type", "application/json")
            .header(HEADER_NOTIFICATION_ID, notification.notification_id.to_string())
            .header(HEADER_EVENT_TYPE, &notification.event_type)
            .header(HEADER_TIMESTAMP, timestamp.to_string())
            .header(
                HEADER_SIGNATURE,
                notify::sign(secret, timestamp, &notification.body),
            )
            .body(notification.body.clone())
            .send()
            .await
            .map_err(|error| (0, without_url(&error)))?;
        let status = response.status();
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err((status.as_u16(), format!("HTTP {status}")))
        }
    }

    /// Records the attempt and its effect on the notification together, and when the
    /// township office could not be reached, escalates the alert to the county bureau in
    /// the same transaction (a county bureau's endpoint has no one above it to escalate to).
    async fn record(
        &self,
        notification: &Leased,
        attempt: &Attempt,
        escalate: bool,
    ) -> Result<(), ServiceError> {
        let mut change = self.changes.begin().await?;
        webhooks::record_attempt(&mut change, notification, attempt).await?;
        if escalate && notification.endpoint_township.is_empty() {
            tracing::error!(alert_id = %notification.alert_id, "the county bureau's endpoint cannot be reached");
        } else if escalate
            && let Some(alert) = store::alerts::load_for_update(&mut change, notification.alert_id).await?
            // The office that must act is the one not reached (not, say, the township a
            // transferred alert left).
            && alert.jurisdiction.township_code == notification.endpoint_township
        {
            let reason = redelivery::escalation_reason(attempt.attempt_number.unsigned_abs());
            self.lifecycle
                .escalate(&mut change, alert, &reason, attempt.attempted_at)
                .await?;
        }
        change.commit().await
    }
}

/// A transport error without its URL (which may carry a receiver's token).
fn without_url(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    kind.to_owned()
}
