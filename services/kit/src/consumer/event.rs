//! What the consumer hands its handler: a record with the mesh's event headers decoded, or
//! the reason it cannot be (a poison record, set aside as it came); how handling fails
//! (permanent: set aside; transient: retried); and the `Handler` a service implements.

use std::{collections::HashMap, future::Future};

use chrono::{DateTime, Utc};
use rdkafka::{
    Message,
    message::{BorrowedMessage, Headers},
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    error::{ServiceError, is_permanent_data_error},
    kafka,
    ops::Origin,
};

/// A record from Kafka with the mesh's event headers decoded.
#[derive(Debug, Clone)]
pub struct InboundEvent {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub event_id: Uuid,
    pub event_type: String,
    pub occurred_at: Option<DateTime<Utc>>,
    pub producer: Option<String>,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, String>,
}

impl InboundEvent {
    /// Decodes headers; an error is a reason to dead-letter the record.
    fn from_message(message: &BorrowedMessage<'_>) -> Result<Self, String> {
        Self::from_parts(
            message.topic(),
            message.partition(),
            message.offset(),
            message.key().map(|key| String::from_utf8_lossy(key).into_owned()),
            header_map(message),
            message.payload().unwrap_or_default().to_vec(),
        )
    }

    /// An event from a record's parts (live, or a stored dead letter being replayed).
    pub fn from_parts(
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<String>,
        headers: HashMap<String, String>,
        payload: Vec<u8>,
    ) -> Result<Self, String> {
        let event_id = headers
            .get(kafka::headers::EVENT_ID)
            .ok_or("missing event_id header")?
            .parse::<Uuid>()
            .map_err(|_| "event_id header is not a UUID")?;
        let event_type = headers
            .get(kafka::headers::EVENT_TYPE)
            .ok_or("missing event_type header")?
            .clone();
        let occurred_at = headers
            .get(kafka::headers::OCCURRED_AT)
            .and_then(|value| DateTime::parse_from_rfc3339(value).ok())
            .map(|time| time.with_timezone(&Utc));
        Ok(Self {
            topic: topic.to_owned(),
            partition,
            offset,
            key,
            event_id,
            event_type,
            occurred_at,
            producer: headers.get(kafka::headers::PRODUCER).cloned(),
            payload,
            headers,
        })
    }

    /// Decodes the payload as `M`, or a permanent error naming the event type.
    pub fn decode<M: prost::Message + Default>(&self) -> Result<M, HandleError> {
        M::decode(self.payload.as_slice()).map_err(|error| {
            HandleError::Permanent(format!("undecodable {} payload: {error}", self.event_type))
        })
    }
}

fn header_map(message: &BorrowedMessage<'_>) -> HashMap<String, String> {
    let mut map = HashMap::new();
    if let Some(headers) = message.headers() {
        for header in headers.iter() {
            if let Some(value) = header.value.and_then(|value| std::str::from_utf8(value).ok()) {
                map.insert(header.key.to_owned(), value.to_owned());
            }
        }
    }
    map
}

/// How handling an event failed.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The event can never be applied: dead-letter it and move on.
    #[error("{0}")]
    Permanent(String),
    /// Infrastructure trouble (database, network): retry the same event with backoff.
    #[error(transparent)]
    Transient(#[from] anyhow::Error),
}

impl HandleError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, HandleError::Permanent(_))
    }
}

impl From<ServiceError> for HandleError {
    /// Bad data is permanent: a refused value (`Invalid`), a taken unique key (`Conflict`) or
    /// a database data exception or constraint violation however it was wrapped. Everything
    /// else is retried: a record not found or in the wrong state may be found or change once
    /// a projection catches up, and an outage passes.
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Invalid(_) | ServiceError::Conflict(_) => HandleError::Permanent(error.to_string()),
            ServiceError::Internal(inner) => match inner.downcast::<sqlx::Error>() {
                Ok(database) => HandleError::from(database),
                Err(inner) => HandleError::Transient(ServiceError::Internal(inner).into()),
            },
            other => HandleError::Transient(other.into()),
        }
    }
}

impl From<sqlx::Error> for HandleError {
    /// SQLSTATE classes 22 (data exception: out-of-range timestamp, NUL byte) and 23
    /// (integrity constraint violation) fail the same way every time: permanent. The rest
    /// (lost connections, deadlocks, a missing table) can pass: transient.
    fn from(error: sqlx::Error) -> Self {
        if is_permanent_data_error(&error) {
            HandleError::Permanent(format!("database refused the record: {error}"))
        } else {
            HandleError::Transient(error.into())
        }
    }
}

/// Applies events. Runs inside the transaction that also records the event ids, so the
/// effects and the dedup records commit together.
pub trait Handler: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a InboundEvent,
    ) -> impl Future<Output = Result<(), HandleError>> + Send + 'a;

    /// Applies `events` — new ones, of one partition, in order — in one transaction. By
    /// default one by one; a handler overrides it to share work across the batch (what
    /// several events of one subject change is then done once). On any error the consumer
    /// applies the events one by one with `handle`, so each gets its own outcome.
    fn handle_batch<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [InboundEvent],
    ) -> impl Future<Output = Result<(), HandleError>> + Send + 'a {
        async move {
            for event in events {
                self.handle(&mut *conn, event).await?;
            }
            Ok(())
        }
    }
}

/// A record as received: decoded, or a poison record with why it cannot be.
#[derive(Debug, Clone)]
pub(super) enum Received {
    Event(InboundEvent),
    Poison {
        origin: Origin,
        headers: HashMap<String, String>,
        payload: Vec<u8>,
        reason: String,
    },
}

impl Received {
    pub(super) fn from_message(message: &BorrowedMessage<'_>) -> Self {
        match InboundEvent::from_message(message) {
            Ok(event) => Received::Event(event),
            Err(reason) => {
                let headers = header_map(message);
                let origin = Origin {
                    topic: message.topic().to_owned(),
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(|key| String::from_utf8_lossy(key).into_owned()),
                    event_type: headers.get(kafka::headers::EVENT_TYPE).cloned(),
                    event_id: headers
                        .get(kafka::headers::EVENT_ID)
                        .and_then(|id| id.parse().ok()),
                };
                Received::Poison {
                    origin,
                    headers,
                    payload: message.payload().unwrap_or_default().to_vec(),
                    reason,
                }
            }
        }
    }

    /// Where the record is: topic, partition, offset.
    pub(super) fn place(&self) -> (&str, i32, i64) {
        match self {
            Received::Event(event) => (&event.topic, event.partition, event.offset),
            Received::Poison { origin, .. } => (&origin.topic, origin.partition, origin.offset),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::tests::database_error;

    #[test]
    fn data_exceptions_and_constraint_violations_are_permanent() {
        // Out-of-range timestamp, NUL byte, foreign key, check constraint.
        for code in ["22008", "22021", "23503", "23514"] {
            assert!(HandleError::from(database_error(code)).is_permanent(), "{code}");
            assert!(
                HandleError::from(ServiceError::from(database_error(code))).is_permanent(),
                "{code} through ServiceError"
            );
        }
    }

    #[test]
    fn outages_and_missing_tables_are_retried() {
        for code in ["40001", "40P01", "08006", "57P01", "42P01"] {
            assert!(!HandleError::from(database_error(code)).is_permanent(), "{code}");
            assert!(!HandleError::from(ServiceError::from(database_error(code))).is_permanent());
        }
        assert!(!HandleError::from(sqlx::Error::PoolTimedOut).is_permanent());
    }

    #[test]
    fn bad_data_service_errors_are_permanent_and_lagging_state_is_retried() {
        assert!(HandleError::from(ServiceError::invalid("f", "bad")).is_permanent());
        assert!(HandleError::from(ServiceError::conflict("taken")).is_permanent());
        for lagging in [
            ServiceError::not_found("not yet projected"),
            ServiceError::precondition("not yet"),
            ServiceError::Unavailable("down".into()),
            ServiceError::internal("bug"),
        ] {
            assert!(!HandleError::from(lagging).is_permanent());
        }
    }

    #[test]
    fn a_record_without_an_event_id_is_no_event() {
        let headers = HashMap::from([(kafka::headers::EVENT_TYPE.to_owned(), "x".to_owned())]);
        let error = InboundEvent::from_parts("t", 0, 1, None, headers, vec![]).expect_err("no id");
        assert_eq!(error, "missing event_id header");
    }
}
