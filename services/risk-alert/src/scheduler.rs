//! The scheduler raises the alert of every deadline whose grace has passed, exactly once per
//! dedup key however many replicas run or restarts happen: replicas claim due deadlines
//! with `FOR UPDATE SKIP LOCKED` and delete them in the transaction that raises the alert,
//! and a repeat after a crash finds the dedup key taken.

use std::time::Duration;

use mesh_kit::{CancellationToken, change::Changes, clock::SharedClock, error::ServiceError};
use tracing::Instrument;

use crate::{
    domain::{
        compose::{Composer, DueDeadline},
        policy::Track,
    },
    lifecycle::Lifecycle,
    store,
};

/// Deadlines claimed per round.
const BATCH: i64 = 200;

/// Fires due deadlines.
pub struct Scheduler {
    pub changes: Changes,
    pub composer: Composer,
    pub clock: SharedClock,
    pub lifecycle: Lifecycle,
    /// How often due deadlines are looked for.
    pub tick: Duration,
}

impl Scheduler {
    /// Runs until shutdown; the first round runs at once, so deadlines that passed while the
    /// service was down are alerted right after start.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            match self.fire_due(BATCH).await {
                Ok(handled) if handled > 0 => continue,
                Ok(_) => {}
                Err(error) => tracing::warn!(error = %error, "deadline round failed; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.tick) => {}
            }
        }
        tracing::info!("deadline scheduler stopped");
    }

    /// Raises the alerts of up to `batch` due deadlines; returns how many deadlines were
    /// handled (so a full batch is followed at once by the next).
    pub async fn fire_due(&self, batch: i64) -> Result<usize, ServiceError> {
        let now = self.clock.now();
        let mut change = self.changes.begin().await?;
        let due = store::watch::claim_due(&mut change, now, batch).await?;
        let mut raised = 0;
        for row in &due {
            store::watch::remove_deadline(&mut change, row.subject_id, &row.track).await?;
            let Some(track) = Track::parse(&row.track) else {
                continue;
            };
            let deadline = DueDeadline {
                subject_id: row.subject_id,
                track,
                due_at: row.due_at,
                grace_seconds: row.grace_seconds,
                since_at: row.since_at,
            };
            let draft = if track.is_handover() {
                store::watch::handover_for_update(&mut change, row.subject_id)
                    .await?
                    .and_then(|handover| self.composer.handover_alert(&deadline, &handover))
            } else {
                store::watch::supervisee_for_update(&mut change, row.subject_id)
                    .await?
                    .and_then(|supervisee| self.composer.supervisee_alert(&deadline, &supervisee, now))
            };
            // Each missed deadline starts a trace of its own, which the alert event and its
            // notifications carry on.
            let span =
                tracing::info_span!("deadline.missed", track = track.as_str(), subject_id = %row.subject_id);
            if let Some(draft) = draft
                && self
                    .lifecycle
                    .raise(&mut change, draft, now)
                    .instrument(span)
                    .await?
                    .is_some()
            {
                raised += 1;
            }
        }
        // Commit wakes the relay when an alert was raised.
        change.commit().await?;
        Ok(due.len().max(raised))
    }
}
