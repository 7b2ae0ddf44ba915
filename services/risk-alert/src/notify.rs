//! The webhook contract with township offices and county bureaus: the headers, the HMAC
//! signature over timestamp + body (which receivers verify the same way), the JSON body of a
//! notification, and the backoff between attempts. Queueing is `lifecycle`'s, delivery
//! `delivery`'s.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::domain::alert::{Alert, SubjectKind};

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
    format!(
        "sha256={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

/// Checks a signature as a receiver would (constant-time comparison).
pub fn verify(secret: &[u8], timestamp: i64, body: &[u8], signature: &str) -> bool {
    let Some(hex_mac) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_mac) else {
        return false;
    };
    mac(secret, timestamp, body).verify_slice(&expected).is_ok()
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Exponential backoff before attempt `attempts + 1`: base × 2^(attempts-1), capped.
pub fn backoff(attempts: u32, base: Duration, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
    base.saturating_mul(factor).min(max)
}

/// The JSON body of a notification (fields of mesh.alert.v1.WebhookNotification).
pub fn body(notification_id: Uuid, event_type: &str, alert: &Alert, occurred_at: DateTime<Utc>) -> Vec<u8> {
    let time = |time: DateTime<Utc>| time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let subject_kind = match alert.subject.kind {
        SubjectKind::Supervisee => "supervisee",
        SubjectKind::Handover => "handover",
    };
    let facts: serde_json::Map<String, serde_json::Value> = alert
        .evidence
        .facts
        .iter()
        .map(|fact| (fact.key.clone(), serde_json::Value::String(fact.value.clone())))
        .collect();
    let resolved = alert.resolved.as_ref();
    let value = serde_json::json!({
        "notification_id": notification_id.to_string(),
        "event_type": event_type,
        "occurred_at": time(occurred_at),
        "alert": {
            "alert_id": alert.id.to_string(),
            "kind": alert.kind.to_proto().as_str_name(),
            "severity": alert.severity.to_proto().as_str_name(),
            "status": alert.status.to_proto().as_str_name(),
            "subject": { "kind": subject_kind, "id": alert.subject.id, "name": alert.subject.name },
            "jurisdiction": {
                "township_code": alert.jurisdiction.township_code,
                "county_code": alert.jurisdiction.county_code,
            },
            "escalation_target": alert.escalation_target.to_proto().as_str_name(),
            "recommended_measure": alert.recommended_measure.to_proto().as_str_name(),
            "rule": { "rule_id": alert.rule.id.to_string(), "description": alert.rule.description },
            "legal_basis": alert.legal_basis,
            "evidence": {
                "last_contact_at": alert.evidence.last_contact_at.map(time),
                "grace_period_seconds": alert.evidence.grace_period_seconds,
                "facts": facts,
            },
            "raised_at": time(alert.raised_at),
            "deadline": time(alert.deadline),
            "dedup_key": alert.dedup_key,
            "resolved_at": resolved.map(|resolved| time(resolved.at)),
            "resolution_note": resolved.map(|resolved| resolved.note.as_str()).unwrap_or_default(),
            "auto_resolved": alert.auto_resolved(),
            "version": alert.version,
        }
    });
    serde_json::to_vec(&value).unwrap_or_default()
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
    fn the_body_says_what_the_alert_says() {
        let mut alert = crate::domain::alert::tests::missed_checkin();
        alert.evidence.facts.push(crate::domain::alert::Fact {
            key: "required_interval".into(),
            value: "7d".into(),
        });
        let occurred_at = alert.raised_at;
        let body = body(Uuid::nil(), "alert.raised", &alert, occurred_at);
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(json["event_type"], "alert.raised");
        assert_eq!(json["occurred_at"], "2026-12-04T16:00:00.000Z");
        let alert = &json["alert"];
        assert_eq!(alert["kind"], "ALERT_KIND_MISSED_CHECKIN");
        assert_eq!(alert["status"], "ALERT_STATUS_OPEN");
        assert_eq!(alert["escalation_target"], "ESCALATION_TARGET_TOWNSHIP_OFFICE");
        assert_eq!(alert["recommended_measure"], "RECOMMENDED_MEASURE_ADMONITION");
        assert_eq!(alert["subject"]["kind"], "supervisee");
        assert_eq!(alert["rule"]["rule_id"], "checkin.missed.normal");
        assert_eq!(alert["evidence"]["last_contact_at"], "2026-11-26T02:00:00.000Z");
        assert_eq!(alert["evidence"]["grace_period_seconds"], 86_400);
        assert_eq!(alert["evidence"]["facts"]["required_interval"], "7d");
        assert_eq!(alert["deadline"], "2026-12-03T16:00:00.000Z");
        assert_eq!(alert["resolved_at"], serde_json::Value::Null);
        assert_eq!(alert["resolution_note"], "");
        assert_eq!(alert["auto_resolved"], false);
        assert_eq!(alert["version"], 1);
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
