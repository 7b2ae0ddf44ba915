//! The consumer's Kafka client: created per group and subscribed, offsets stored after
//! each applied record, committed before partitions are taken away and when the client is
//! closed (at shutdown, or replaced because it was stuck).

use std::{sync::Arc, time::Duration};

use rdkafka::{
    ClientContext, Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
};

use super::{EventConsumer, Handler};
use crate::kafka;

/// How long closing a replaced client (committing its offsets) is waited for.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Commits stored offsets before partitions are taken away, so the next owner resumes
/// right after what this consumer applied.
pub(super) struct CommitOnRevoke;

impl ClientContext for CommitOnRevoke {}

impl ConsumerContext for CommitOnRevoke {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance
            && let Err(error) = consumer.commit_consumer_state(CommitMode::Sync)
        {
            tracing::debug!(error = %error, "no offsets committed on revoke");
        }
    }
}

/// A consumer's Kafka client.
pub(super) type Client = Arc<StreamConsumer<CommitOnRevoke>>;

impl<H: Handler> EventConsumer<H> {
    /// A new client of the group, subscribed to the topics.
    pub(super) fn client(&self) -> anyhow::Result<Client> {
        let client: StreamConsumer<CommitOnRevoke> = kafka::consumer_config(
            &self.config.brokers,
            &self.config.group_id,
            self.config.session_timeout,
        )
        .create_with_context(CommitOnRevoke)?;
        let topics: Vec<&str> = self.config.topics.iter().map(String::as_str).collect();
        client.subscribe(&topics)?;
        Ok(Arc::new(client))
    }
}

/// Stores the offset after the record at `offset`, to be committed in the background.
pub(super) fn store_offset(client: &Client, topic: &str, partition: i32, offset: i64) {
    let mut list = TopicPartitionList::new();
    if let Err(error) = list
        .add_partition_offset(topic, partition, Offset::Offset(offset + 1))
        .and_then(|()| client.store_offsets(&list))
    {
        // The partition was revoked meanwhile: the next owner re-reads the record and the
        // inbox makes that harmless.
        tracing::warn!(error = %error, topic, offset, "offset not stored");
    }
}

/// Commits what `client` applied and closes it (leaving the group), off the async
/// threads: a stuck client may take long, so it is waited for `CLOSE_TIMEOUT` at most (its
/// replacement then starts from an earlier committed offset, and the inbox drops repeats).
pub(super) async fn close(client: Client) {
    let closing = tokio::task::spawn_blocking(move || {
        if let Err(error) = client.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %error, "nothing committed on close");
        }
        drop(client);
    });
    if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
        tracing::warn!("kafka client still closing; going on without it");
    }
}

/// Fault injection: stops `client` fetching, as a stuck client does.
pub(super) fn stick(client: &Client) {
    match client.assignment() {
        Ok(assignment) => {
            tracing::warn!("fault injection: the consumer's client stops fetching");
            if let Err(error) = client.pause(&assignment) {
                tracing::warn!(error = %error, "fault injection failed");
            }
        }
        Err(error) => tracing::warn!(error = %error, "fault injection failed"),
    }
}
