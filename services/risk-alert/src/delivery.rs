//! The webhook delivery worker: leases due notifications (replicas share the work with
//! `FOR UPDATE SKIP LOCKED`), POSTs each signed to its endpoint, and records every attempt;
//! a failed one is retried with exponential backoff until delivered. Delivery is at least
//! once: receivers deduplicate by the notification id.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use mesh_kit::{
    CancellationToken, change::Changes, clock::SharedClock, crypto::FieldCrypto, error::ServiceError,
};
use tokio::sync::broadcast;

use crate::{
    notify::{self, HEADER_EVENT_TYPE, HEADER_NOTIFICATION_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP},
    store::webhooks::{self, Attempt, Leased},
};

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub tick: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub request_timeout: Duration,
    /// How long a claimed notification is hidden from other replicas while it is sent.
    pub lease: Duration,
    pub batch_size: i64,
}

/// Delivers pending notifications until shutdown.
pub struct DeliveryWorker {
    changes: Changes,
    crypto: Arc<FieldCrypto>,
    clock: SharedClock,
    http: reqwest::Client,
    config: DeliveryConfig,
}

impl DeliveryWorker {
    pub fn new(
        changes: Changes,
        crypto: Arc<FieldCrypto>,
        clock: SharedClock,
        config: DeliveryConfig,
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
        })
    }

    /// Delivers until shutdown. `woken` fires as soon as any replica commits an alert change
    /// (so a notification does not wait for the next tick); the tick still drives retries
    /// that come due.
    pub async fn run<T: Clone>(self, mut woken: broadcast::Receiver<T>, shutdown: CancellationToken) {
        loop {
            let delivered_any = match self.deliver_due().await {
                Ok(count) => count > 0,
                Err(error) => {
                    tracing::warn!(error = %error, "webhook delivery round failed; retrying");
                    false
                }
            };
            if !delivered_any {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = woken.recv() => {}
                    _ = tokio::time::sleep(self.config.tick) => {}
                }
            } else if shutdown.is_cancelled() {
                break;
            }
        }
        tracing::info!("webhook delivery stopped");
    }

    /// Leases due notifications, sends them concurrently, and records the outcomes.
    pub async fn deliver_due(&self) -> Result<usize, ServiceError> {
        let now = self.clock.now();
        let lease_until =
            now + chrono::Duration::from_std(self.config.lease).map_err(ServiceError::internal)?;
        let leased =
            webhooks::lease_due(self.changes.pool(), now, lease_until, self.config.batch_size).await?;
        let count = leased.len();
        futures::future::join_all(leased.into_iter().map(|notification| self.deliver(notification))).await;
        Ok(count)
    }

    async fn deliver(&self, notification: Leased) {
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
        let next_attempt_at = (!delivered).then(|| {
            let wait = notify::backoff(
                attempt_number as u32,
                self.config.retry_base,
                self.config.retry_max,
            );
            attempted_at + chrono::Duration::from_std(wait).unwrap_or_default()
        });
        let attempt = Attempt {
            attempt_number,
            attempted_at,
            http_status,
            delivered,
            error,
            duration_ms,
            next_attempt_at,
        };
        if let Err(db_error) = self.record(&notification, &attempt).await {
            // The lease expires and the notification is sent again: at least once.
            tracing::warn!(error = %db_error, notification_id = %notification.notification_id, "delivery outcome not recorded");
        }
        if attempt.delivered {
            tracing::info!(notification_id = %notification.notification_id, alert_id = %notification.alert_id, attempt_number, "webhook delivered");
        } else {
            tracing::warn!(notification_id = %notification.notification_id, attempt_number, error = %attempt.error, "webhook delivery failed; will retry");
        }
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

    /// Records the attempt and its effect on the notification together.
    async fn record(&self, notification: &Leased, attempt: &Attempt) -> Result<(), ServiceError> {
        let mut change = self.changes.begin().await?;
        webhooks::record_attempt(&mut change, notification, attempt).await?;
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
