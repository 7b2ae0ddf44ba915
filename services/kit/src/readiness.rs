//! Whether a service is ready for work beyond answering calls: the parts that can stall
//! (its consumers) report here, and the gRPC health service reports NOT_SERVING while any
//! of them is stalled, so an orchestrator (a readiness probe, a load balancer) sees it.

use std::{collections::BTreeSet, sync::Arc};

use tokio::sync::watch;

/// The stalled parts of one process, shared by everything that reports or watches them.
#[derive(Debug, Clone)]
pub struct Readiness {
    stalled: Arc<watch::Sender<BTreeSet<String>>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            stalled: Arc::new(watch::channel(BTreeSet::new()).0),
        }
    }
}

impl Readiness {
    /// Notes that `part` (e.g. `consumer registry`) is stalled.
    pub fn stalled(&self, part: &str) {
        self.stalled
            .send_if_modified(|stalled| stalled.insert(part.to_owned()));
    }

    /// Notes that `part` works again.
    pub fn recovered(&self, part: &str) {
        self.stalled.send_if_modified(|stalled| stalled.remove(part));
    }

    /// Whether no part is stalled.
    pub fn is_ready(&self) -> bool {
        self.stalled.borrow().is_empty()
    }

    /// The stalled parts, as they change.
    pub fn watch(&self) -> watch::Receiver<BTreeSet<String>> {
        self.stalled.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_while_no_part_is_stalled() {
        let readiness = Readiness::default();
        let mut changes = readiness.watch();
        assert!(readiness.is_ready());
        readiness.stalled("consumer a");
        readiness.stalled("consumer b");
        readiness.recovered("consumer a");
        assert!(!readiness.is_ready(), "b is still stalled");
        assert!(changes.has_changed().unwrap_or(false));
        readiness.recovered("consumer b");
        assert!(readiness.is_ready());
        assert!(changes.borrow_and_update().is_empty());
        readiness.recovered("consumer b");
        assert!(!changes.has_changed().unwrap_or(true), "no change, no wake-up");
    }
}
