//! The kit's outbox and audit tables written for a group of check-ins at once: the events
//! of one transaction in two statements instead of two per check-in (the outbox rows
//! through the kit's `outbox::enqueue_all`, the audit records here, as the kit's
//! `Tx::publish` writes them: the event type as action).

use chrono::{DateTime, Utc};
use mesh_kit::{
    auth::Caller,
    error::ServiceError,
    outbox::{self, NewEvent, TracedEvent},
};
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
    let events: Vec<TracedEvent> = publications
        .iter()
        .map(|publication| TracedEvent {
            event: NewEvent {
                topic: publication.topic.to_owned(),
                key: publication.key.clone(),
                event_type: publication.event_type,
                payload: publication.payload.clone(),
                occurred_at: publication.occurred_at,
            },
            trace_headers: serde_json::from_value(publication.trace_headers.clone()).unwrap_or_default(),
        })
        .collect();
    outbox::enqueue_all(&mut *conn, &events).await?;
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
