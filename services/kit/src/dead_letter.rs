//! The `kit_dead_letters` table: records a consumer could never apply, kept in the consuming
//! service's own database with an `ops.dead_lettered` event written in the same transaction.
//! `mesh dlq` lists them and requests replays; each consumer's replay worker applies what was
//! requested (see [`crate::consumer`]).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::{
    consumer::InboundEvent,
    ops::{Origin, Reporter},
    outbox,
};

/// A set-aside record as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetter {
    pub id: i64,
    pub service: String,
    pub consumer: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub event_key: Option<String>,
    pub headers: serde_json::Value,
    pub payload: Vec<u8>,
    pub event_type: Option<String>,
    pub event_id: Option<Uuid>,
    pub reason: String,
    pub dead_lettered_at: DateTime<Utc>,
    pub replay_requested_at: Option<DateTime<Utc>>,
    pub replayed_at: Option<DateTime<Utc>>,
    pub last_replay_error: Option<String>,
}

const COLUMNS: &str = "id, service, consumer, source_topic, source_partition, source_offset, event_key,
    headers, payload, event_type, event_id, reason, dead_lettered_at, replay_requested_at,
    replayed_at, last_replay_error";

impl DeadLetter {
    pub fn origin(&self) -> Origin {
        Origin {
            topic: self.source_topic.clone(),
            partition: self.source_partition,
            offset: self.source_offset,
            key: self.event_key.clone(),
            event_type: self.event_type.clone(),
            event_id: self.event_id,
        }
    }

    /// The record as the consumer first saw it, to apply again; an error when its headers
    /// never made it an event (then only a fixed producer can resend it).
    pub fn to_event(&self) -> Result<InboundEvent, String> {
        let headers: HashMap<String, String> = serde_json::from_value(self.headers.clone())
            .map_err(|error| format!("stored headers unreadable: {error}"))?;
        InboundEvent::from_parts(
            &self.source_topic,
            self.source_partition,
            self.source_offset,
            self.event_key.clone(),
            headers,
            self.payload.clone(),
        )
    }

    /// `replayed`, `requested`, `failed: <error>` or `set aside`.
    pub fn replay_state(&self) -> String {
        match (
            &self.replayed_at,
            &self.replay_requested_at,
            &self.last_replay_error,
        ) {
            (Some(at), _, _) => format!("replayed {}", at.format("%Y-%m-%d %H:%M:%S")),
            (None, Some(_), _) => "replay requested".to_owned(),
            (None, None, Some(error)) => format!("replay failed: {error}"),
            (None, None, None) => "set aside".to_owned(),
        }
    }
}

/// Sets a record aside and announces it, in one transaction. A record already set aside (a
/// redelivery after a crash) is neither stored nor announced again. Returns the row id when
/// it was stored now.
pub async fn set_aside(
    pool: &PgPool,
    reporter: &Reporter,
    origin: &Origin,
    headers: &HashMap<String, String>,
    payload: &[u8],
    reason: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<i64>> {
    let mut tx = pool.begin().await?;
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO kit_dead_letters (service, consumer, source_topic, source_partition, source_offset,
             event_key, headers, payload, event_type, event_id, reason, dead_lettered_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (consumer, source_topic, source_partition, source_offset) DO NOTHING
         RETURNING id",
    )
    .bind(&reporter.service)
    .bind(&reporter.consumer)
    .bind(&origin.topic)
    .bind(origin.partition)
    .bind(origin.offset)
    // A NUL byte is what PostgreSQL refuses in text; the key must not make the dead letter
    // itself unstorable.
    .bind(origin.key.as_deref().map(strip_nul))
    .bind(serde_json::to_value(stripped(headers)).unwrap_or_default())
    .bind(payload)
    .bind(origin.event_type.as_deref().map(strip_nul))
    .bind(origin.event_id)
    .bind(strip_nul(reason))
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = id {
        outbox::enqueue(
            &mut tx,
            reporter.dead_lettered(id, origin, &strip_nul(reason), payload, now),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(id)
}

fn strip_nul(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

fn stripped(headers: &HashMap<String, String>) -> HashMap<String, String> {
    headers
        .iter()
        .map(|(key, value)| (strip_nul(key), strip_nul(value)))
        .collect()
}

/// The oldest dead letter of `consumer` from one of `topics` whose replay was requested,
/// locked for the caller's transaction (replicas skip each other's). The topics tell apart
/// the handlers of a service that runs several consumers in one group.
pub async fn next_requested(
    conn: &mut PgConnection,
    consumer: &str,
    topics: &[String],
) -> sqlx::Result<Option<DeadLetter>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM kit_dead_letters
         WHERE consumer = $1 AND source_topic = ANY($2)
           AND replay_requested_at IS NOT NULL AND replayed_at IS NULL
         ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
    ))
    .bind(consumer)
    .bind(topics)
    .fetch_optional(conn)
    .await
}

/// Marks a dead letter replayed, inside the transaction that applied it.
pub async fn mark_replayed(conn: &mut PgConnection, id: i64, now: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query("UPDATE kit_dead_letters SET replayed_at = $2, last_replay_error = NULL WHERE id = $1")
        .bind(id)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records why a replay failed and withdraws the request: the row stays for another try
/// after a further fix, and the worker does not spin on it meanwhile.
pub async fn replay_failed(executor: impl PgExecutor<'_>, id: i64, error: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE kit_dead_letters SET replay_requested_at = NULL, last_replay_error = $2 WHERE id = $1",
    )
    .bind(id)
    .bind(strip_nul(error))
    .execute(executor)
    .await?;
    Ok(())
}

/// Which dead letters a listing or a replay request selects.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only this one (`None`: all).
    pub id: Option<i64>,
    /// Only those of this service (empty: every service in the database).
    pub service: String,
    /// Also those replayed already.
    pub include_replayed: bool,
}

/// The selected dead letters, oldest first.
pub async fn list(executor: impl PgExecutor<'_>, selection: &Selection) -> sqlx::Result<Vec<DeadLetter>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM kit_dead_letters
         WHERE ($1::BIGINT IS NULL OR id = $1) AND ($2 = '' OR service = $2)
           AND ($3 OR replayed_at IS NULL)
         ORDER BY id"
    ))
    .bind(selection.id)
    .bind(&selection.service)
    .bind(selection.include_replayed)
    .fetch_all(executor)
    .await
}

/// Requests the replay of the selected dead letters not yet replayed; returns their ids.
pub async fn request_replay(
    executor: impl PgExecutor<'_>,
    selection: &Selection,
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar(
        "UPDATE kit_dead_letters SET replay_requested_at = $3
         WHERE ($1::BIGINT IS NULL OR id = $1) AND ($2 = '' OR service = $2) AND replayed_at IS NULL
         RETURNING id",
    )
    .bind(selection.id)
    .bind(&selection.service)
    .bind(now)
    .fetch_all(executor)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::headers;

    fn row() -> DeadLetter {
        DeadLetter {
            id: 1,
            service: "registry".into(),
            consumer: "registry".into(),
            source_topic: "handover.events".into(),
            source_partition: 0,
            source_offset: 9,
            event_key: Some("h-1".into()),
            headers: serde_json::json!({
                headers::EVENT_ID: "0190d5e0-0000-7000-8000-000000000001",
                headers::EVENT_TYPE: "handover.reported_in",
            }),
            payload: b"payload".to_vec(),
            event_type: Some("handover.reported_in".into()),
            event_id: None,
            reason: "the person already has an open supervision".into(),
            dead_lettered_at: Utc::now(),
            replay_requested_at: None,
            replayed_at: None,
            last_replay_error: None,
        }
    }

    #[test]
    fn a_stored_record_becomes_the_event_it_was() {
        let event = row().to_event().expect("an event");
        assert_eq!(event.event_type, "handover.reported_in");
        assert_eq!((event.topic.as_str(), event.offset), ("handover.events", 9));
        assert_eq!(event.key.as_deref(), Some("h-1"));
        let headerless = DeadLetter {
            headers: serde_json::json!({}),
            ..row()
        };
        assert!(headerless.to_event().is_err());
        let garbage = DeadLetter {
            headers: serde_json::json!([1, 2]),
            ..row()
        };
        assert!(garbage.to_event().is_err());
    }

    #[test]
    fn the_replay_state_says_where_a_dead_letter_stands() {
        assert_eq!(row().replay_state(), "set aside");
        let requested = DeadLetter {
            replay_requested_at: Some(Utc::now()),
            ..row()
        };
        assert_eq!(requested.replay_state(), "replay requested");
        let failed = DeadLetter {
            last_replay_error: Some("still refused".into()),
            ..row()
        };
        assert_eq!(failed.replay_state(), "replay failed: still refused");
        let replayed = DeadLetter {
            replayed_at: Some(Utc::now()),
            ..row()
        };
        assert!(replayed.replay_state().starts_with("replayed "));
    }

    #[test]
    fn nul_bytes_never_make_a_dead_letter_unstorable() {
        assert_eq!(strip_nul("a\0b"), "a\u{FFFD}b");
        let headers = HashMap::from([("k\0".to_owned(), "v\0".to_owned())]);
        assert_eq!(
            stripped(&headers),
            HashMap::from([("k\u{FFFD}".to_owned(), "v\u{FFFD}".to_owned())])
        );
    }
}
