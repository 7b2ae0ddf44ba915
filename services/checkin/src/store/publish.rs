//! The kit's outbox and audit tables written for a group of check-ins at once: the events
//! of one transaction in two statements instead of two per check-in. The kit's
//! `Tx::publish` writes one event at a time; the rows here are the same as its (an outbox
//! row per event, an audit record with the event type as action).

use chrono::{DateTime, Utc};
use mesh_kit::{auth::Caller, error::ServiceError};
use sqlx::PgConnection;
use uuid::Uuid;

/// An event to publish with the audit record of the change it tells of.
pub struct Publication<'a> {
    pub topic: &'a str,
    /// Kafka key: the subject's id, so one subject's events stay in order.
    pub key: String,
    pub event_type: &'static str,
    pub payload: Vec<u8>,
    pub occurred_at: DateTime<Utc>,
    /// W3C trace context of the request that made the change.
    pub trace_headers: serde_json::Value,
    pub caller: &'a Caller,
    pub subject_id: Uuid,
    pub detail: serde_json::Value,
}

/// Writes each publication's outbox row and audit record, in order: the relay publishes by
/// outbox id, so the order given is the order one subject's events leave in.
pub async fn publish_all(
    conn: &mut PgConnection,
    publications: &[Publication<'_>],
) -> Result<(), ServiceError> {
    let column = |value: fn(&Publication<'_>) -> String| publications.iter().map(value).collect::<Vec<_>>();
    // UUID v7, as the kit assigns: ids that sort by creation.
    let event_ids: Vec<Uuid> = publications.iter().map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "INSERT INTO kit_outbox (event_id, topic, event_key, event_type, payload, trace_headers, occurred_at)
         SELECT event_id, topic, event_key, event_type, payload, trace_headers::jsonb, occurred_at
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[], $7::timestamptz[])
             WITH ORDINALITY AS event(event_id, topic, event_key, event_type, payload, trace_headers, occurred_at, ordinal)
         ORDER BY ordinal",
    )
    .bind(&event_ids)
    .bind(column(|publication| publication.topic.to_owned()))
    .bind(column(|publication| publication.key.clone()))
    .bind(column(|publication| publication.event_type.to_owned()))
    .bind(publications.iter().map(|publication| publication.payload.as_slice()).collect::<Vec<_>>())
    .bind(column(|publication| publication.trace_headers.to_string()))
    .bind(publications.iter().map(|publication| publication.occurred_at).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO kit_audit_log (actor_subject, actor_role, action, subject_id, detail)
         SELECT actor_subject, actor_role, action, subject_id, detail::jsonb
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::uuid[], $5::text[])
             WITH ORDINALITY AS record(actor_subject, actor_role, action, subject_id, detail, ordinal)
         ORDER BY ordinal",
    )
    .bind(column(|publication| publication.caller.subject.clone()))
    .bind(column(|publication| publication.caller.role.as_str().to_owned()))
    .bind(column(|publication| publication.event_type.to_owned()))
    .bind(
        publications
            .iter()
            .map(|publication| publication.subject_id)
            .collect::<Vec<_>>(),
    )
    .bind(column(|publication| publication.detail.to_string()))
    .execute(conn)
    .await?;
    Ok(())
}
