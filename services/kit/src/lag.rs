//! How far behind its topics a consumer group is, as one instant: `caught_up_at`, before
//! which every record on those topics has been applied (committed) by the group. A
//! deadline that falls after it may yet be answered by an event in flight, so the
//! risk-alert scheduler waits for it (within a bound) instead of alerting on stale state.
//!
//! The monitor probes each partition's high watermark and how far the group has applied
//! it: the furthest of its committed offset (broker-side), its inbox and its dead letters
//! (the service's database, written in the transaction that applied or set the record
//! aside, so a record applied just before a crash counts although Kafka never got its
//! offset). Every replica sees the same, whichever partitions it owns. A probe taken at `t`
//! is passed once the group has applied past every watermark it saw: then everything
//! produced before `t` has been applied. While the broker is unreachable no
//! probe is passed and `caught_up_at` stays where it was; after it returns, probes count
//! only once it has been reachable for `settle`, because the producers' outboxes need that
//! long to hand over what they kept meanwhile (their lag is not the group's to see). A
//! process that starts treats its start the same way.

use std::{collections::HashMap, collections::VecDeque, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaResult,
};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{clock::SharedClock, kafka};

/// The instant before which the group has applied everything, if known.
pub type CaughtUp = watch::Receiver<Option<DateTime<Utc>>>;

/// How long one broker request of a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Probes older than this many are dropped (the group is far behind; the oldest kept still
/// bounds what is known).
const MAX_PENDING: usize = 600;

/// High watermarks seen at one instant, per (topic, partition).
#[derive(Debug, Clone, PartialEq)]
struct Probe {
    at: DateTime<Utc>,
    high: HashMap<(String, i32), i64>,
}

/// Which probes the committed offsets have passed; returns the newest passed instant.
fn pass(pending: &mut VecDeque<Probe>, committed: &HashMap<(String, i32), i64>) -> Option<DateTime<Utc>> {
    let mut passed = None;
    while let Some(probe) = pending.front() {
        let done = probe
            .high
            .iter()
            .all(|(key, high)| committed.get(key).is_some_and(|offset| offset >= high));
        if !done {
            break;
        }
        passed = Some(probe.at);
        pending.pop_front();
    }
    passed
}

/// Watches one group's progress on its topics.
pub struct LagMonitor {
    client: Arc<BaseConsumer>,
    topics: Vec<String>,
    clock: SharedClock,
    interval: Duration,
    settle: Duration,
    group: String,
    pool: PgPool,
    sender: watch::Sender<Option<DateTime<Utc>>>,
}

impl LagMonitor {
    /// A monitor of `group` on `topics`, probing every `interval`, trusting probes again
    /// `settle` after an outage. It never joins the group: it only reads the group's
    /// committed offsets.
    pub fn new(
        (brokers, group): (&str, &str),
        pool: PgPool,
        topics: &[&str],
        clock: SharedClock,
        (interval, settle): (Duration, Duration),
    ) -> anyhow::Result<Self> {
        let client: BaseConsumer =
            kafka::consumer_config(brokers, group, Duration::from_secs(10)).create()?;
        Ok(Self {
            client: Arc::new(client),
            topics: topics.iter().map(|topic| (*topic).to_owned()).collect(),
            clock,
            interval,
            settle,
            group: group.to_owned(),
            pool,
            sender: watch::channel(None).0,
        })
    }

    /// What the monitor finds, as `caught_up_at` moves (`None` until the first pass).
    pub fn caught_up(&self) -> CaughtUp {
        self.sender.subscribe()
    }

    /// Probes until shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        let sender = self.sender.clone();
        let mut pending = VecDeque::new();
        let settle = chrono::Duration::from_std(self.settle).unwrap_or_default();
        // A process may start during or just after an outage (restarted by an operator or
        // an orchestrator): until the broker has been reachable for `settle`, producers'
        // outboxes may still hold what answers a deadline, as after an outage seen here.
        let mut last_failure: Option<DateTime<Utc>> = Some(self.clock.now());
        let mut known_partitions: Vec<(String, i32)> = Vec::new();
        let mut rounds: u64 = 0;
        loop {
            let at = self.clock.now();
            let (client, topics) = (self.client.clone(), self.topics.clone());
            let known = std::mem::take(&mut known_partitions);
            let probed = tokio::task::spawn_blocking(move || {
                let partitions = if known.is_empty() {
                    partitions(&client, &topics)?
                } else {
                    known
                };
                probe(&client, &partitions).map(|offsets| (partitions, offsets))
            })
            .await;
            match probed {
                Ok(Ok((partitions, (high, mut committed)))) => {
                    rounds += 1;
                    // Asked again now and then, in case partitions were added.
                    match applied(&self.pool, &self.group, &partitions).await {
                        Ok(applied) => furthest(&mut committed, applied),
                        Err(error) => tracing::debug!(error = %error, "applied positions not read"),
                    }
                    if !rounds.is_multiple_of(300) {
                        known_partitions = partitions;
                    }
                    if last_failure.is_none_or(|failed| at - failed >= settle) {
                        last_failure = None;
                        pending.push_back(Probe { at, high });
                        if pending.len() > MAX_PENDING {
                            pending.pop_front();
                        }
                    }
                    if let Some(passed) = pass(&mut pending, &committed) {
                        sender.send_replace(Some(passed));
                    } else if let Some(oldest) = pending.front() {
                        tracing::debug!(waiting_since = %oldest.at, high = ?oldest.high, committed = ?committed, "consumer behind");
                    }
                }
                // The failure's time is when the probe gave up, not when it began: a probe
                // against a down broker can take its whole timeout, and the settle period
                // must count from the last moment the broker was seen unreachable.
                Ok(Err(error)) => {
                    tracing::debug!(error = %error, "consumer lag not probed");
                    last_failure = Some(self.clock.now());
                }
                Err(error) => {
                    tracing::warn!(error = %error, "consumer lag probe failed");
                    last_failure = Some(self.clock.now());
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}

pub(crate) type Offsets = HashMap<(String, i32), i64>;

/// The partitions of `topics` (they change rarely; the monitor asks again now and then).
pub(crate) fn partitions(client: &BaseConsumer, topics: &[String]) -> KafkaResult<Vec<(String, i32)>> {
    let mut partitions = Vec::new();
    for topic in topics {
        let metadata = client.fetch_metadata(Some(topic), PROBE_TIMEOUT)?;
        for partition in metadata.topics().iter().flat_map(|topic| topic.partitions()) {
            partitions.push((topic.clone(), partition.id()));
        }
    }
    Ok(partitions)
}

/// Offsets of `partitions` at `position` (`Offset::End`: the high watermark), in one
/// request per broker.
fn offsets_at(client: &BaseConsumer, partitions: &[(String, i32)], position: Offset) -> KafkaResult<Offsets> {
    let mut list = TopicPartitionList::new();
    for (topic, partition) in partitions {
        list.add_partition_offset(topic, *partition, position)?;
    }
    Ok(offsets(&client.offsets_for_times(list, PROBE_TIMEOUT)?))
}

fn offsets(list: &TopicPartitionList) -> Offsets {
    list.elements()
        .iter()
        .filter_map(|element| match element.offset() {
            Offset::Offset(offset) => Some(((element.topic().to_owned(), element.partition()), offset)),
            _ => None,
        })
        .collect()
}

/// Each partition's high watermark and the group's committed offset (a partition the group
/// never committed counts from its low watermark: nothing of it was applied). Two or three
/// requests whatever the number of partitions, so probing stays cheap for the broker.
pub(crate) fn probe(client: &BaseConsumer, partitions: &[(String, i32)]) -> KafkaResult<(Offsets, Offsets)> {
    let high = offsets_at(client, partitions, Offset::End)?;
    let mut list = TopicPartitionList::new();
    for (topic, partition) in partitions {
        list.add_partition(topic, *partition);
    }
    let mut committed = offsets(&client.committed_offsets(list, PROBE_TIMEOUT)?);
    let never: Vec<(String, i32)> = partitions
        .iter()
        .filter(|key| !committed.contains_key(*key))
        .cloned()
        .collect();
    if !never.is_empty() {
        committed.extend(offsets_at(client, &never, Offset::Beginning)?);
    }
    Ok((high, committed))
}

/// The next offset after what the group applied or set aside, per partition, from its
/// database. One index lookup per partition and table (the newest entry of the
/// `(consumer, topic, partition, offset)` indexes), so the cost does not grow with the
/// inbox.
async fn applied(pool: &PgPool, group: &str, partitions: &[(String, i32)]) -> sqlx::Result<Offsets> {
    let (topics, numbers): (Vec<&str>, Vec<i32>) = partitions
        .iter()
        .map(|(topic, partition)| (topic.as_str(), *partition))
        .unzip();
    let rows: Vec<(String, i32, Option<i64>)> = sqlx::query_as(
        "SELECT p.topic, p.partition, GREATEST(
             (SELECT max(i.kafka_offset) FROM kit_inbox i
              WHERE i.consumer = $1 AND i.topic = p.topic AND i.kafka_partition = p.partition),
             (SELECT max(d.source_offset) FROM kit_dead_letters d
              WHERE d.consumer = $1 AND d.source_topic = p.topic AND d.source_partition = p.partition)) + 1
         FROM unnest($2::text[], $3::int[]) AS p (topic, partition)",
    )
    .bind(group)
    .bind(&topics)
    .bind(&numbers)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(topic, partition, next)| Some(((topic, partition), next?)))
        .collect())
}

/// Keeps, per partition, the furthest of two positions.
fn furthest(positions: &mut Offsets, other: Offsets) {
    for (key, offset) in other {
        let entry = positions.entry(key).or_insert(offset);
        *entry = (*entry).max(offset);
    }
}

/// The instant up to which deadlines may fire at `now`: those the group's progress has
/// passed, and any that has waited `max_defer` already (an outage delays alerts by at most
/// that much, it never suppresses them).
pub fn firing_cutoff(
    now: DateTime<Utc>,
    caught_up_at: Option<DateTime<Utc>>,
    max_defer: Duration,
) -> DateTime<Utc> {
    let waited_enough = chrono::Duration::from_std(max_defer)
        .ok()
        .and_then(|bound| now.checked_sub_signed(bound))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let known = caught_up_at.unwrap_or(DateTime::<Utc>::MIN_UTC);
    now.min(known.max(waited_enough))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap_or_default()
    }

    fn offsets(values: &[(i32, i64)]) -> Offsets {
        values
            .iter()
            .map(|&(partition, offset)| (("checkin".to_owned(), partition), offset))
            .collect()
    }

    #[test]
    fn a_probe_is_passed_once_every_partition_is_committed_past_it() {
        let mut pending = VecDeque::from([
            Probe {
                at: at(0),
                high: offsets(&[(0, 10), (1, 5)]),
            },
            Probe {
                at: at(1),
                high: offsets(&[(0, 12), (1, 5)]),
            },
        ]);
        assert_eq!(pass(&mut pending, &offsets(&[(0, 10), (1, 4)])), None);
        assert_eq!(pending.len(), 2);
        assert_eq!(pass(&mut pending, &offsets(&[(0, 11), (1, 5)])), Some(at(0)));
        assert_eq!(pass(&mut pending, &offsets(&[(0, 12), (1, 5)])), Some(at(1)));
        assert!(pending.is_empty());
    }

    #[test]
    fn deadlines_wait_for_the_lag_but_never_longer_than_the_bound() {
        let bound = Duration::from_secs(60);
        assert_eq!(firing_cutoff(at(100), Some(at(100)), bound), at(100), "caught up");
        assert_eq!(firing_cutoff(at(100), Some(at(90)), bound), at(90), "10 s behind");
        assert_eq!(
            firing_cutoff(at(100), Some(at(10)), bound),
            at(40),
            "bounded wait"
        );
        assert_eq!(firing_cutoff(at(100), None, bound), at(40), "unknown lag");
        assert_eq!(
            firing_cutoff(at(100), Some(at(200)), bound),
            at(100),
            "never ahead of now"
        );
    }

    #[test]
    fn a_record_applied_before_a_crash_counts_although_its_offset_was_not_committed() {
        let mut committed = offsets(&[(0, 3), (1, 7)]);
        furthest(&mut committed, offsets(&[(0, 5), (1, 6)]));
        assert_eq!(committed, offsets(&[(0, 5), (1, 7)]));
    }
}
