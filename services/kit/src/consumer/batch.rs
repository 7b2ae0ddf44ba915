//! Batches: what the client holds when a record arrives (up to `batch_max` records, or what
//! arrives within `batch_linger`) is applied together. The batch is split by partition and
//! the partitions are applied concurrently, each in order in one transaction: one
//! set-based inbox insert drops what was applied before, the handler's `handle_batch`
//! applies the rest, and the partition's offset is stored after the commit. Per-key order
//! holds because a key lives on one partition. A partition's batch that fails in any way
//! is applied again one record at a time (`process`), so a poison record or a failing one
//! gets exactly the treatment it would get alone, and never holds up what applied.

use std::collections::HashSet;

use futures::future::join_all;
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::{
    EventConsumer, HandleError, Handler, InboundEvent, Received, client::Client, store_offset,
    watchdog::Progress,
};

impl<H: Handler> EventConsumer<H> {
    /// The batch that begins with `first`: what else the client delivers within the
    /// linger, up to the batch size (a lone record waits at most the linger).
    pub(super) async fn gather(
        &self,
        client: &Client,
        first: Received,
        progress: &Progress,
    ) -> Vec<Received> {
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + self.config.batch_linger;
        while batch.len() < self.config.batch_max {
            match tokio::time::timeout_at(until, client.recv()).await {
                Ok(Ok(message)) => batch.push(Received::from_message(&message)),
                Ok(Err(error)) => {
                    tracing::warn!(error = %error, group = %self.config.group_id, "kafka receive failed; applying what was received");
                    progress.receive_error();
                    break;
                }
                Err(_) => break,
            }
        }
        batch
    }

    /// Applies a batch, its partitions concurrently. Returns false when shutdown
    /// interrupted it (what was not applied is redelivered).
    pub(super) async fn apply_batch(
        &self,
        client: &Client,
        batch: Vec<Received>,
        shutdown: &CancellationToken,
    ) -> bool {
        let partitions = by_partition(batch);
        join_all(
            partitions
                .into_iter()
                .map(|records| self.apply_partition(client, records, shutdown)),
        )
        .await
        .into_iter()
        .all(|applied| applied)
    }

    /// Applies one partition's records together, or one by one when that fails.
    async fn apply_partition(
        &self,
        client: &Client,
        records: Vec<Received>,
        shutdown: &CancellationToken,
    ) -> bool {
        let events: Vec<&InboundEvent> = records
            .iter()
            .filter_map(|record| match record {
                Received::Event(event) => Some(event),
                Received::Poison { .. } => None,
            })
            .collect();
        if records.len() > 1 && events.len() == records.len() {
            let span = tracing::info_span!(
                "consume batch",
                otel.kind = "consumer",
                topic = %events[0].topic,
                partition = events[0].partition,
                first_offset = events[0].offset,
                records = events.len(),
            );
            match self.apply_together(&events).instrument(span).await {
                Ok(()) => {
                    for event in &events {
                        self.recover(event).await;
                    }
                    let last = events[events.len() - 1];
                    store_offset(client, &last.topic, last.partition, last.offset);
                    return true;
                }
                Err(error) => {
                    tracing::debug!(error = %error, records = events.len(), "batch not applied together; applying one by one");
                }
            }
        }
        for record in records {
            if !self.process(client, record, shutdown).await {
                return false;
            }
        }
        true
    }

    /// Records the events' ids in the inbox with one statement and applies those not seen
    /// before (the first of any repeated id), in one transaction.
    async fn apply_together(&self, events: &[&InboundEvent]) -> Result<(), HandleError> {
        self.waking_after(async {
            let mut tx = self.pool.begin().await?;
            let fresh = self.record_in_inbox(&mut tx, events).await?;
            self.handler.handle_batch(&mut tx, &fresh).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Inserts the events' ids into the inbox; returns the events that were new, in order.
    async fn record_in_inbox(
        &self,
        conn: &mut PgConnection,
        events: &[&InboundEvent],
    ) -> Result<Vec<InboundEvent>, HandleError> {
        let ids: Vec<Uuid> = events.iter().map(|event| event.event_id).collect();
        let topics: Vec<&str> = events.iter().map(|event| event.topic.as_str()).collect();
        let partitions: Vec<i32> = events.iter().map(|event| event.partition).collect();
        let offsets: Vec<i64> = events.iter().map(|event| event.offset).collect();
        let inserted: HashSet<Uuid> = sqlx::query_scalar(
            "INSERT INTO kit_inbox (consumer, event_id, topic, kafka_partition, kafka_offset)
             SELECT $1, e.id, e.topic, e.part, e.off
             FROM unnest($2::uuid[], $3::text[], $4::int[], $5::bigint[]) AS e (id, topic, part, off)
             ON CONFLICT DO NOTHING
             RETURNING event_id",
        )
        .bind(&self.config.group_id)
        .bind(&ids)
        .bind(&topics)
        .bind(&partitions)
        .bind(&offsets)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
        Ok(fresh(events, &inserted))
    }
}

/// The events whose ids were inserted now, each id once (its first occurrence), in order.
fn fresh(events: &[&InboundEvent], inserted: &HashSet<Uuid>) -> Vec<InboundEvent> {
    let mut taken = HashSet::new();
    events
        .iter()
        .filter(|event| inserted.contains(&event.event_id) && taken.insert(event.event_id))
        .map(|event| (*event).clone())
        .collect()
}

/// The records of each partition, in the order received (partitions in order of first
/// appearance).
fn by_partition(batch: Vec<Received>) -> Vec<Vec<Received>> {
    let mut partitions: Vec<((String, i32), Vec<Received>)> = Vec::new();
    for record in batch {
        let (topic, partition, _) = record.place();
        let key = (topic.to_owned(), partition);
        match partitions.iter_mut().find(|(known, _)| *known == key) {
            Some((_, records)) => records.push(record),
            None => partitions.push((key, vec![record])),
        }
    }
    partitions.into_iter().map(|(_, records)| records).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::kafka::headers;

    fn event(topic: &str, partition: i32, offset: i64, id: Uuid) -> InboundEvent {
        let headers = HashMap::from([
            (headers::EVENT_ID.to_owned(), id.to_string()),
            (headers::EVENT_TYPE.to_owned(), "test.event".to_owned()),
        ]);
        InboundEvent::from_parts(topic, partition, offset, None, headers, Vec::new()).expect("event")
    }

    #[test]
    fn partitions_keep_their_order_and_stay_apart() {
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        let batch = vec![
            Received::Event(event("a", 0, 10, ids[0])),
            Received::Event(event("a", 1, 4, ids[1])),
            Received::Event(event("a", 0, 11, ids[2])),
            Received::Event(event("b", 0, 7, ids[3])),
            Received::Event(event("a", 1, 5, ids[4])),
        ];
        let places: Vec<Vec<(String, i32, i64)>> = by_partition(batch)
            .iter()
            .map(|records| {
                records
                    .iter()
                    .map(|record| {
                        let (topic, partition, offset) = record.place();
                        (topic.to_owned(), partition, offset)
                    })
                    .collect()
            })
            .collect();
        let place = |topic: &str, partition, offset| (topic.to_owned(), partition, offset);
        assert_eq!(
            places,
            vec![
                vec![place("a", 0, 10), place("a", 0, 11)],
                vec![place("a", 1, 4), place("a", 1, 5)],
                vec![place("b", 0, 7)],
            ]
        );
    }

    #[test]
    fn only_new_ids_are_applied_and_a_repeated_id_once() {
        let (old, new) = (Uuid::now_v7(), Uuid::now_v7());
        let events = [
            event("a", 0, 1, old),
            event("a", 0, 2, new),
            event("a", 0, 3, new),
        ];
        let refs: Vec<&InboundEvent> = events.iter().collect();
        let applied = fresh(&refs, &HashSet::from([new]));
        assert_eq!(applied.len(), 1);
        assert_eq!((applied[0].event_id, applied[0].offset), (new, 2));
    }
}
