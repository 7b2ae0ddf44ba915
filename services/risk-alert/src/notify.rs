//! The webhook contract with township offices and county bureaus: the headers, the HMAC
//! signature over timestamp + body (which receivers verify the same way), the JSON body of a
//! notification and of a batch of them. When to retry is `domain::redelivery`'s. Queueing is `lifecycle`'s, delivery
//! `delivery`'s.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use mesh_kit::proto_time::to_timestamp;
use mesh_proto::{alert as pb, json};
use prost::Message;

use crate::{convert::alert_to_proto, domain::alert::Alert};

/// Header carrying the notification id: the receiver's idempotency key.
pub const HEADER_NOTIFICATION_ID: &str = "x-mesh-notification-id";
/// Header carrying the Unix time (seconds) the attempt was signed at.
pub const HEADER_TIMESTAMP: &str = "x-mesh-timestamp";
/// Header carrying `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
pub const HEADER_SIGNATURE: &str = "x-mesh-signature";
/// Header carrying the event type (`alert.raised`, …).
pub const HEADER_EVENT_TYPE: &str = "x-mesh-event-type";
/// Header of a batched POST, carrying how many notifications its `WebhookBatch` holds; its
/// presence is what tells a batch from a single notification.
pub const HEADER_BATCH_SIZE: &str = "x-mesh-batch-size";

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

/// The JSON body of a notification: `mesh.alert.v1.WebhookNotification` in the proto3 JSON
/// mapping, so a receiver generated from `alert.proto` parses it. The message is built with
/// the service's types and transcoded, through its binary encoding, into the JSON-capable
/// generation of the same contract (`mesh_proto::json`), whose serde impls are generated.
/// `reason` says why this endpoint is told when it is not simply the alert's own office.
pub fn body(
    notification_id: Uuid,
    event_type: &str,
    alert: &Alert,
    occurred_at: DateTime<Utc>,
    reason: &str,
) -> Vec<u8> {
    let message = pb::WebhookNotification {
        notification_id: notification_id.to_string(),
        event_type: event_type.to_owned(),
        alert: Some(alert_to_proto(alert)),
        occurred_at: Some(to_timestamp(occurred_at)),
        reason: reason.to_owned(),
    };
    let json = json::alert::WebhookNotification::decode(message.encode_to_vec().as_slice());
    match json.map(|json| serde_json::to_vec(&json)) {
        Ok(Ok(body)) => body,
        // Both generations come from one .proto, so this cannot happen; an empty body would
        // be refused by receivers and retried rather than crash the change that queued it.
        failed => {
            tracing::error!(failed = ?failed.err(), "webhook body not encoded");
            Vec::new()
        }
    }
}

/// The JSON body of a batch: `mesh.alert.v1.WebhookBatch` in the proto3 JSON mapping, built
/// from the queued bodies of its notifications (each the proto3 JSON of one
/// `WebhookNotification`, see [`body`]) without decoding them again.
pub fn batch_body<'a>(bodies: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut batch = b"{\"notifications\":[".to_vec();
    for (n, body) in bodies.into_iter().enumerate() {
        if n > 0 {
            batch.push(b',');
        }
        batch.extend_from_slice(body);
    }
    batch.extend_from_slice(b"]}");
    batch
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
    fn the_body_is_the_proto3_json_of_the_notification() {
        let mut alert = crate::domain::alert::tests::missed_checkin();
        alert.evidence.facts.push(crate::domain::alert::Fact {
            key: "required_interval".into(),
            value: "7d".into(),
        });
        let occurred_at = alert.raised_at;
        let body = body(Uuid::nil(), "alert.raised", &alert, occurred_at, "");
        // What a receiver written from alert.proto does: parse with the generated type.
        let parsed: json::alert::WebhookNotification = serde_json::from_slice(&body).expect("proto3 JSON");
        assert_eq!(parsed.event_type, "alert.raised");
        assert_eq!(parsed.notification_id, Uuid::nil().to_string());
        let parsed_alert = parsed.alert.expect("alert");
        assert_eq!(
            parsed_alert.encode_to_vec(),
            alert_to_proto(&alert).encode_to_vec(),
            "the alert arrives whole"
        );
        // The mapping itself, as the contract documents it for hand-written receivers.
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(json["eventType"], "alert.raised");
        assert_eq!(json["occurredAt"], "2026-12-04T16:00:00+00:00");
        let alert = &json["alert"];
        assert_eq!(alert["kind"], "ALERT_KIND_MISSED_CHECKIN");
        assert_eq!(alert["subject"]["superviseeId"], "s1");
        assert_eq!(alert["evidence"]["facts"][0]["key"], "required_interval");
        assert_eq!(alert["evidence"]["facts"][0]["value"], "7d");
        assert_eq!(
            alert["evidence"]["gracePeriodSeconds"], "86400",
            "int64 is a string"
        );
        assert_eq!(alert["version"], "1");
    }

    #[test]
    fn a_batch_body_is_the_proto3_json_of_a_webhook_batch() {
        let alert = crate::domain::alert::tests::missed_checkin();
        let ids = [Uuid::from_u128(1), Uuid::from_u128(2)];
        let bodies: Vec<Vec<u8>> = ids
            .iter()
            .zip(["alert.raised", "alert.resolved"])
            .map(|(id, event_type)| body(*id, event_type, &alert, alert.raised_at, ""))
            .collect();
        let batch = batch_body(bodies.iter().map(Vec::as_slice));
        // What a receiver written from alert.proto does: parse with the generated type.
        let parsed: json::alert::WebhookBatch = serde_json::from_slice(&batch).expect("proto3 JSON");
        let got: Vec<(String, String)> = parsed
            .notifications
            .iter()
            .map(|n| (n.notification_id.clone(), n.event_type.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (ids[0].to_string(), "alert.raised".to_owned()),
                (ids[1].to_string(), "alert.resolved".to_owned())
            ]
        );
        for (parsed, single) in parsed.notifications.iter().zip(&bodies) {
            let single: json::alert::WebhookNotification = serde_json::from_slice(single).expect("JSON");
            assert_eq!(parsed, &single, "each notification arrives whole");
        }
        let empty: json::alert::WebhookBatch =
            serde_json::from_slice(&batch_body(std::iter::empty())).expect("JSON");
        assert!(empty.notifications.is_empty());
    }
}
