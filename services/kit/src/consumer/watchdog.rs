//! The consumer's watchdog: a Kafka client that stops delivering records while records
//! wait for it, or that keeps failing while the broker answers others, is stuck (after a
//! broker crash librdkafka can stay so for minutes). The watchdog sees it within one
//! window and hands the consumer a reason to rebuild its client: same group, resuming from
//! the committed offsets, so nothing is skipped and the inbox drops what is read twice. A
//! consumer busy applying a record is never judged here: a record that keeps failing is
//! the stall report's business (`stall.rs`), and a new client would not help it.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use rdkafka::{
    Offset,
    consumer::{BaseConsumer, Consumer},
};

use crate::lag;

/// Receive errors remembered (enough to judge "repeated").
const ERRORS_KEPT: usize = 16;
/// How many receive errors within a window make them "repeated".
const REPEATED_ERRORS: usize = 3;

/// What the consume loop is doing, as the watchdog sees it.
#[derive(Debug)]
struct State {
    /// When the client last delivered a record (or was created).
    delivered_at: Instant,
    /// Whether a record is being applied now.
    busy: bool,
    /// When the latest receive errors happened, newest last.
    errors: VecDeque<Instant>,
    /// Records the client delivered.
    deliveries: u64,
}

/// The consume loop's progress, shared with the watchdog.
#[derive(Debug)]
pub(super) struct Progress {
    state: Mutex<State>,
}

impl Progress {
    /// The progress of a client created now.
    pub(super) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                delivered_at: Instant::now(),
                busy: false,
                errors: VecDeque::new(),
                deliveries: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A record arrived; it is being applied until [`Progress::idle`].
    pub(super) fn delivered(&self) {
        let mut state = self.state();
        state.delivered_at = Instant::now();
        state.busy = true;
        state.errors.clear();
        state.deliveries += 1;
    }

    /// How many records the client delivered.
    pub(super) fn deliveries(&self) -> u64 {
        self.state().deliveries
    }

    /// The record was applied (or set aside): the loop waits for the client again.
    pub(super) fn idle(&self) {
        let mut state = self.state();
        state.busy = false;
        state.delivered_at = Instant::now();
    }

    /// The client reported an error instead of a record.
    pub(super) fn receive_error(&self) {
        let mut state = self.state();
        state.errors.push_back(Instant::now());
        if state.errors.len() > ERRORS_KEPT {
            state.errors.pop_front();
        }
    }

    fn observe(&self, window: Duration) -> (bool, Duration, usize) {
        let state = self.state();
        let now = Instant::now();
        let recent = state
            .errors
            .iter()
            .filter(|at| now.duration_since(**at) < window)
            .count();
        (state.busy, now.duration_since(state.delivered_at), recent)
    }
}

/// One look at a consumer: how long its client has delivered nothing, how many receive
/// errors it had in the window, whether the broker answers, and how many records wait for
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Observation {
    pub busy: bool,
    pub idle: Duration,
    pub recent_errors: usize,
    pub broker_answers: bool,
    pub waiting: i64,
}

/// Whether the client is stuck, and why.
pub(super) fn judge(observation: Observation, window: Duration) -> Option<String> {
    let Observation {
        busy,
        idle,
        recent_errors,
        broker_answers,
        waiting,
    } = observation;
    // Applying a record, fresh from one, or the broker itself is away: nothing to rebuild.
    if busy || idle < window || !broker_answers {
        return None;
    }
    if waiting > 0 {
        return Some(format!(
            "no record delivered for {} s while {waiting} wait and the broker answers",
            idle.as_secs()
        ));
    }
    (recent_errors >= REPEATED_ERRORS).then(|| {
        format!(
            "{recent_errors} receive errors in {} s while the broker answers",
            window.as_secs()
        )
    })
}

/// Watches one consumer's client for the stuck states `judge` names.
pub(super) struct Watchdog {
    /// A client outside the group (never subscribes): it asks the broker for metadata,
    /// watermarks and the group's committed offsets, so it shows whether the broker answers.
    probe: Arc<BaseConsumer>,
    topics: Vec<String>,
    window: Duration,
    /// Extra time a new client has to join its group (a member of a crashed process holds
    /// its partitions until the session times out).
    joining: Duration,
}

impl Watchdog {
    pub(super) fn new(probe: BaseConsumer, topics: &[String], window: Duration, joining: Duration) -> Self {
        Self {
            probe: Arc::new(probe),
            topics: topics.to_vec(),
            window,
            joining,
        }
    }

    /// Returns the reason once `client` is stuck; `window` grows after rebuilds that did
    /// not help. Until then calls `healthy` whenever the client is seen working (nothing
    /// waiting, or records delivered).
    pub(super) async fn stuck<
        C: Consumer<X> + Send + Sync + 'static,
        X: rdkafka::consumer::ConsumerContext,
    >(
        &self,
        client: &Arc<C>,
        progress: &Progress,
        window: Duration,
        healthy: impl Fn(),
    ) -> String {
        let check = (window / 4).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(check).await;
            let window = if progress.deliveries() == 0 {
                window + self.joining
            } else {
                window
            };
            let (busy, idle, recent_errors) = progress.observe(window);
            if busy || idle < window {
                if idle < window && !busy && recent_errors == 0 {
                    healthy();
                }
                continue;
            }
            let positions = own_positions(client.as_ref());
            let (probe, topics) = (self.probe.clone(), self.topics.clone());
            let waiting = tokio::task::spawn_blocking(move || {
                let partitions = lag::partitions(&probe, &topics)?;
                let (high, committed) = lag::probe(&probe, &partitions)?;
                Ok::<_, rdkafka::error::KafkaError>(waiting(&high, &committed, &positions))
            })
            .await;
            let (broker_answers, waiting) = match waiting {
                Ok(Ok(waiting)) => (true, waiting),
                _ => (false, 0),
            };
            // Looked at again: the loop may have received a record while the broker answered.
            let (busy, idle, recent_errors) = progress.observe(window);
            let observation = Observation {
                busy,
                idle,
                recent_errors,
                broker_answers,
                waiting,
            };
            match judge(observation, window) {
                Some(reason) => return reason,
                None if broker_answers && waiting == 0 && recent_errors == 0 => healthy(),
                None => {}
            }
        }
    }

    /// The first window; doubled after each rebuild that did not bring a record, up to 8×.
    pub(super) fn window(&self, failed_rebuilds: u32) -> Duration {
        self.window * 2u32.pow(failed_rebuilds.min(3))
    }
}

/// Where the client will read next, per assigned partition (no broker request).
fn own_positions<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(client: &C) -> lag::Offsets {
    client
        .position()
        .map(|list| {
            list.elements()
                .iter()
                .map(|element| {
                    let position = match element.offset() {
                        Offset::Offset(offset) => offset,
                        _ => -1,
                    };
                    ((element.topic().to_owned(), element.partition()), position)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Records that wait for this client: on its own partitions (or every partition when it
/// holds none, as a client that never joined), the high watermark beyond the furthest of
/// the group's committed offset and the client's own position.
fn waiting(high: &lag::Offsets, committed: &lag::Offsets, own: &lag::Offsets) -> i64 {
    high.iter()
        .filter(|(key, _)| own.is_empty() || own.contains_key(*key))
        .map(|(key, high)| {
            let done = committed
                .get(key)
                .copied()
                .unwrap_or(0)
                .max(own.get(key).copied().unwrap_or(-1));
            (high - done).max(0)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(idle_secs: u64, waiting: i64) -> Observation {
        Observation {
            busy: false,
            idle: Duration::from_secs(idle_secs),
            recent_errors: 0,
            broker_answers: true,
            waiting,
        }
    }

    #[test]
    fn a_client_idle_for_a_window_while_records_wait_is_stuck() {
        let window = Duration::from_secs(10);
        assert!(judge(look(11, 5), window).is_some());
        assert_eq!(judge(look(9, 5), window), None, "not yet a window");
        assert_eq!(
            judge(look(60, 0), window),
            None,
            "nothing waits: quiet, not stuck"
        );
        let applying = Observation {
            busy: true,
            ..look(60, 5)
        };
        assert_eq!(
            judge(applying, window),
            None,
            "a failing record is not the client's fault"
        );
        let outage = Observation {
            broker_answers: false,
            ..look(60, 5)
        };
        assert_eq!(
            judge(outage, window),
            None,
            "the broker is away: librdkafka reconnects"
        );
    }

    #[test]
    fn repeated_receive_errors_while_the_broker_answers_are_a_stall() {
        let window = Duration::from_secs(10);
        let failing = Observation {
            recent_errors: 3,
            ..look(11, 0)
        };
        assert!(judge(failing, window).is_some_and(|reason| reason.contains("receive errors")));
        let once = Observation {
            recent_errors: 1,
            ..failing
        };
        assert_eq!(judge(once, window), None);
    }

    #[test]
    fn waiting_counts_the_clients_own_partitions_from_its_furthest_position() {
        let key = |partition| ("t".to_owned(), partition);
        let high = lag::Offsets::from([(key(0), 10), (key(1), 7)]);
        let committed = lag::Offsets::from([(key(0), 4), (key(1), 7)]);
        assert_eq!(
            waiting(&high, &committed, &lag::Offsets::new()),
            6,
            "no assignment: all"
        );
        let own = lag::Offsets::from([(key(0), 8)]);
        assert_eq!(waiting(&high, &committed, &own), 2, "own partition, own position");
        let invalid = lag::Offsets::from([(key(0), -1)]);
        assert_eq!(
            waiting(&high, &committed, &invalid),
            6,
            "no position yet: committed"
        );
    }

    #[test]
    fn progress_counts_only_recent_errors_and_a_delivery_clears_them() {
        let progress = Progress::new();
        for _ in 0..20 {
            progress.receive_error();
        }
        assert_eq!(progress.observe(Duration::from_secs(10)).2, ERRORS_KEPT);
        assert_eq!(
            progress.observe(Duration::ZERO).2,
            0,
            "none within an empty window"
        );
        progress.delivered();
        let (busy, _, errors) = progress.observe(Duration::from_secs(10));
        assert!(busy);
        assert_eq!(errors, 0);
    }
}
