//! Notifications to township offices and county bureaus: webhook endpoints, one notification
//! row per alert change and endpoint (written in the alert's transaction, so none is lost),
//! and the delivery worker that POSTs them signed with HMAC-SHA256 over timestamp + body,
//! retrying with exponential backoff until delivered and recording every attempt. Several
//! replicas share the work by leasing due rows with `FOR UPDATE SKIP LOCKED`.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use mesh_kit::{CancellationToken, clock::SharedClock, crypto::FieldCrypto};
use mesh_proto::alert::{self as pb, EscalationTarget};
use sha2::Sha256;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Header carrying the notification id: the receiver's idempotency key.
pub const HEADER_NOTIFICATION_ID: &str = "x-mesh-notification-id";
/// Header carrying the Unix time (seconds) the attempt was signed at.
pub const HEADER_TIMESTAMP: &str = "x-mesh-timestamp";
/// Header carrying `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
pub const HEADER_SIGNATURE: &str = "x-mesh-signature";
/// Header carrying the event type (`alert.raised`, …).
pub const HEADER_EVENT_TYPE: &str = "x-mesh-event-type";

/// Associated-data context of sealed endpoint secrets.
pub const SECRET_CONTEXT: &str = "endpoints.secret";

/// The signature of a webhook body: hex HMAC-SHA256 keyed with the endpoint secret over
/// the timestamp, a dot, and the raw body bytes.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature as a receiver would (constant-time comparison).
pub fn verify(secret: &[u8], timestamp: i64, body: &[u8], signature: &str) -> bool {
    let Some(hex_mac) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_mac) else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// Exponential backoff before attempt `attempts + 1`: base × 2^(attempts-1), capped.
pub fn backoff(attempts: u32, base: Duration, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
    base.saturating_mul(factor).min(max)
}

/// The JSON body of a notification (fields of mesh.alert.v1.WebhookNotification).
pub fn body(
    notification_id: Uuid,
    event_type: &str,
    alert: &pb::Alert,
    occurred_at: DateTime<Utc>,
) -> Vec<u8> {
    let time = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .and_then(mesh_kit::proto_time::from_timestamp)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    let subject = alert.subject.clone().unwrap_or_default();
    let (subject_kind, subject_id) = match subject.id {
        Some(pb::alert_subject::Id::SuperviseeId(id)) => ("supervisee", id),
        Some(pb::alert_subject::Id::HandoverId(id)) => ("handover", id),
        None => ("", String::new()),
    };
    let jurisdiction = alert.jurisdiction.clone().unwrap_or_default();
    let rule = alert.rule.clone().unwrap_or_default();
    let evidence = alert.evidence.clone().unwrap_or_default();
    let facts: serde_json::Map<String, serde_json::Value> = evidence
        .facts
        .iter()
        .map(|fact| (fact.key.clone(), serde_json::Value::String(fact.value.clone())))
        .collect();
    let value = serde_json::json!({
        "notification_id": notification_id.to_string(),
        "event_type": event_type,
        "occurred_at": occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "alert": {
            "alert_id": alert.alert_id,
            "kind": alert.kind().as_str_name(),
            "severity": alert.severity().as_str_name(),
            "status": alert.status().as_str_name(),
            "subject": { "kind": subject_kind, "id": subject_id, "name": subject.name },
            "jurisdiction": { "township_code": jurisdiction.township_code, "county_code": jurisdiction.county_code },
            "escalation_target": alert.escalation_target().as_str_name(),
            "recommended_measure": alert.recommended_measure().as_str_name(),
            "rule": { "rule_id": rule.rule_id, "description": rule.description },
            "legal_basis": alert.legal_basis,
            "evidence": {
                "last_contact_at": time(&evidence.last_contact_at),
                "grace_period_seconds": evidence.grace_period_seconds,
                "facts": facts,
            },
            "raised_at": time(&alert.raised_at),
            "deadline": time(&alert.deadline),
            "dedup_key": alert.dedup_key,
            "resolved_at": time(&alert.resolved_at),
            "resolution_note": alert.resolution_note,
            "auto_resolved": alert.auto_resolved,
            "version": alert.version,
        }
    });
    serde_json::to_vec(&value).unwrap_or_default()
}

/// Queues one notification per endpoint that must hear of this alert change: the township
/// office's always, the county bureau's when the alert is escalated to it.
pub async fn enqueue_for_alert(
    conn: &mut PgConnection,
    alert: &pb::Alert,
    event_type: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    let jurisdiction = alert.jurisdiction.clone().unwrap_or_default();
    let include_county = alert.escalation_target() == EscalationTarget::CountyBureau;
    let endpoints: Vec<Uuid> = sqlx::query_scalar(
        "SELECT endpoint_id FROM endpoints
         WHERE county_code = $1 AND (township_code = $2 OR ($3 AND township_code = ''))",
    )
    .bind(&jurisdiction.county_code)
    .bind(&jurisdiction.township_code)
    .bind(include_county)
    .fetch_all(&mut *conn)
    .await?;
    let alert_id: Uuid = alert.alert_id.parse().unwrap_or_default();
    for endpoint_id in endpoints {
        let notification_id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO notifications (notification_id, alert_id, event_type, endpoint_id, body, created_at, next_attempt_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(notification_id)
        .bind(alert_id)
        .bind(event_type)
        .bind(endpoint_id)
        .bind(body(notification_id, event_type, alert, now))
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

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

#[derive(sqlx::FromRow)]
struct Claimed {
    notification_id: Uuid,
    alert_id: Uuid,
    event_type: String,
    endpoint_id: Uuid,
    body: Vec<u8>,
    attempts: i32,
    url: String,
    secret_sealed: Vec<u8>,
}

/// Delivers pending notifications until shutdown.
pub struct DeliveryWorker {
    pool: PgPool,
    crypto: Arc<FieldCrypto>,
    clock: SharedClock,
    http: reqwest::Client,
    config: DeliveryConfig,
}

impl DeliveryWorker {
    pub fn new(
        pool: PgPool,
        crypto: Arc<FieldCrypto>,
        clock: SharedClock,
        config: DeliveryConfig,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            pool,
            crypto,
            clock,
            http,
            config,
        })
    }

    /// Delivers until shutdown. `changes` wakes it as soon as any replica commits an alert
    /// change (so a notification does not wait for the next tick); the tick still drives
    /// retries that come due.
    pub async fn run<T: Clone>(
        self,
        mut changes: tokio::sync::broadcast::Receiver<T>,
        shutdown: CancellationToken,
    ) {
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
                    _ = changes.recv() => {}
                    _ = tokio::time::sleep(self.config.tick) => {}
                }
            } else if shutdown.is_cancelled() {
                break;
            }
        }
        tracing::info!("webhook delivery stopped");
    }

    /// Claims due notifications, sends them concurrently, and records the outcomes.
    pub async fn deliver_due(&self) -> anyhow::Result<usize> {
        let now = self.clock.now();
        let lease_until = now + chrono::Duration::from_std(self.config.lease)?;
        let claimed: Vec<Claimed> = sqlx::query_as(
            "WITH due AS (
                 SELECT notification_id FROM notifications
                 WHERE delivered_at IS NULL AND next_attempt_at <= $1
                 ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED)
             UPDATE notifications n SET next_attempt_at = $2
             FROM due, endpoints e
             WHERE n.notification_id = due.notification_id AND e.endpoint_id = n.endpoint_id
             RETURNING n.notification_id, n.alert_id, n.event_type, n.endpoint_id, n.body, n.attempts, e.url, e.secret_sealed",
        )
        .bind(now)
        .bind(lease_until)
        .bind(self.config.batch_size)
        .fetch_all(&self.pool)
        .await?;
        let count = claimed.len();
        futures::future::join_all(claimed.into_iter().map(|notification| self.deliver(notification))).await;
        Ok(count)
    }

    async fn deliver(&self, notification: Claimed) {
        let attempt_number = notification.attempts + 1;
        let started = std::time::Instant::now();
        let attempted_at = self.clock.now();
        let outcome = match self.crypto.open(&notification.secret_sealed, SECRET_CONTEXT) {
            Err(error) => Err((0, error.to_string())),
            Ok(secret) => self.post(&notification, secret.as_bytes(), attempted_at).await,
        };
        let duration_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
        let (delivered, http_status, error) = match &outcome {
            Ok(status) => (true, i32::from(*status), String::new()),
            Err((status, error)) => (false, i32::from(*status), error.clone()),
        };
        let next_attempt_at = (!delivered).then(|| {
            let wait = backoff(
                attempt_number as u32,
                self.config.retry_base,
                self.config.retry_max,
            );
            attempted_at + chrono::Duration::from_std(wait).unwrap_or_default()
        });
        if let Err(db_error) = self
            .record(
                &notification,
                attempt_number,
                attempted_at,
                http_status,
                delivered,
                &error,
                duration_ms,
                next_attempt_at,
            )
            .await
        {
            // The lease expires and the notification is sent again: at least once.
            tracing::warn!(error = %db_error, notification_id = %notification.notification_id, "delivery outcome not recorded");
        }
        if delivered {
            tracing::info!(notification_id = %notification.notification_id, alert_id = %notification.alert_id, attempt_number, "webhook delivered");
        } else {
            tracing::warn!(notification_id = %notification.notification_id, attempt_number, error = %error, "webhook delivery failed; will retry");
        }
    }

    async fn post(
        &self,
        notification: &Claimed,
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
            .header(HEADER_SIGNATURE, sign(secret, timestamp, &notification.body))
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

    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        notification: &Claimed,
        attempt_number: i32,
        attempted_at: DateTime<Utc>,
        http_status: i32,
        delivered: bool,
        error: &str,
        duration_ms: i32,
        next_attempt_at: Option<DateTime<Utc>>,
    ) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO delivery_attempts (notification_id, alert_id, event_type, endpoint_id, url, attempt_number,
                 attempted_at, http_status, delivered, error, duration_ms, next_attempt_at)
             SELECT $1, $2, $3, $4, url, $5, $6, $7, $8, $9, $10, $11 FROM endpoints WHERE endpoint_id = $4",
        )
        .bind(notification.notification_id)
        .bind(notification.alert_id)
        .bind(&notification.event_type)
        .bind(notification.endpoint_id)
        .bind(attempt_number)
        .bind(attempted_at)
        .bind(http_status)
        .bind(delivered)
        .bind(error)
        .bind(duration_ms)
        .bind(next_attempt_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE notifications SET attempts = $2, delivered_at = CASE WHEN $3 THEN $4 END,
                 next_attempt_at = COALESCE($5, next_attempt_at), last_error = NULLIF($6, '')
             WHERE notification_id = $1",
        )
        .bind(notification.notification_id)
        .bind(attempt_number)
        .bind(delivered)
        .bind(attempted_at)
        .bind(next_attempt_at)
        .bind(error)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_covers_timestamp_and_body() {
        let secret = b"endpoint-secret-endpoint-secret-0123";
        let signature = sign(secret, 1_764_000_000, b"{\"a\":1}");
        assert!(signature.starts_with("sha256="));
        assert_eq!(signature.len(), "sha256=".len() + 64);
        assert!(verify(secret, 1_764_000_000, b"{\"a\":1}", &signature));
        assert!(
            !verify(secret, 1_764_000_001, b"{\"a\":1}", &signature),
            "timestamp is signed"
        );
        assert!(
            !verify(secret, 1_764_000_000, b"{\"a\":2}", &signature),
            "body is signed"
        );
        assert!(
            !verify(b"another-secret", 1_764_000_000, b"{\"a\":1}", &signature),
            "keyed"
        );
        assert!(!verify(secret, 1_764_000_000, b"{\"a\":1}", "sha256=zz"));
    }

    #[test]
    fn known_signature_vector() {
        // HMAC-SHA256("key", "1.The quick brown fox") computed independently with Python's hmac module.
        assert_eq!(
            sign(b"key", 1, b"The quick brown fox"),
            "sha256=1ef269d2a2a1f8d397e0e25c3e3013fb5687509234565e6e49ea45a138768457"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        assert_eq!(backoff(1, base, max), Duration::from_secs(1));
        assert_eq!(backoff(2, base, max), Duration::from_secs(2));
        assert_eq!(backoff(5, base, max), Duration::from_secs(16));
        assert_eq!(backoff(7, base, max), Duration::from_secs(60));
        assert_eq!(backoff(10_000, base, max), Duration::from_secs(60));
    }
}
