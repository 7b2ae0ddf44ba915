//! The consumer's settings: its group and topics, retry and stall caps, the watchdog's
//! window, and the fault injection of tests and drills.

use std::time::Duration;

use crate::kafka;

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub brokers: String,
    pub group_id: String,
    pub topics: Vec<String>,
    pub session_timeout: Duration,
    pub max_backoff: Duration,
    /// The consuming service, named in dead letters and operational events.
    pub service: String,
    /// Where operational events (`ops.*`) go.
    pub ops_topic: String,
    /// How long one record may keep failing before `ops.consumer_stalled` is written.
    pub stall_after: Duration,
    /// How often the replay worker looks for requested replays.
    pub replay_poll: Duration,
    /// How long a client may deliver nothing while records wait (or keep failing while the
    /// broker answers) before it is rebuilt.
    pub watchdog_window: Duration,
    /// The most records applied together (per batch, across partitions).
    pub batch_max: usize,
    /// How long a batch waits for more records after its first.
    pub batch_linger: Duration,
    /// Fault injection for tests: the first client stops fetching after this many records,
    /// as a stuck client does, so the watchdog can be seen at work.
    pub stick_after: Option<u64>,
}

impl ConsumerConfig {
    /// A consumer of `topics` in the service's own group.
    pub fn from_settings(settings: &crate::config::CommonSettings, service: &str, topics: &[&str]) -> Self {
        Self {
            service: service.to_owned(),
            ops_topic: settings.topics.ops.clone(),
            stall_after: settings.consumer_stall_after,
            watchdog_window: settings.consumer_watchdog_window,
            stick_after: settings.fault_stick_consumer_after,
            batch_max: settings.consumer_batch_max,
            batch_linger: settings.consumer_batch_linger,
            ..Self::new(&settings.kafka_brokers, &settings.consumer_group, topics)
        }
    }

    pub fn new(brokers: &str, group_id: &str, topics: &[&str]) -> Self {
        Self {
            brokers: brokers.to_owned(),
            group_id: group_id.to_owned(),
            topics: topics.iter().map(|topic| (*topic).to_owned()).collect(),
            session_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(30),
            service: group_id.to_owned(),
            ops_topic: kafka::OPS_TOPIC.to_owned(),
            stall_after: Duration::from_secs(300),
            replay_poll: Duration::from_secs(1),
            watchdog_window: Duration::from_secs(10),
            stick_after: None,
            batch_max: 500,
            batch_linger: Duration::from_millis(2),
        }
    }

    /// The longest wait between retries of a failing record: never longer than the stall
    /// cap, so a stall is reported (and a recovery noticed) within about one cap.
    pub(super) fn retry_cap(&self) -> Duration {
        self.max_backoff
            .min(self.stall_after)
            .max(Duration::from_millis(100))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_is_reported_within_the_cap() {
        let mut config = ConsumerConfig::new("b", "g", &["t"]);
        config.stall_after = Duration::from_secs(2);
        assert_eq!(config.retry_cap(), Duration::from_secs(2));
        config.stall_after = Duration::from_secs(300);
        assert_eq!(config.retry_cap(), config.max_backoff);
    }
}
