//! The replay worker of the consumer: applies the dead letters an operator asked to replay
//! (`mesh dlq replay`) exactly like live records — inbox and handler in one transaction —
//! and marks them replayed with `ops.dead_letter_replayed`, or records why not.

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::{EventConsumer, HandleError, Handler};
use crate::dead_letter;

impl<H: Handler> EventConsumer<H> {
    /// Applies the dead letters whose replay was requested, until `shutdown`.
    pub(super) async fn replay(&self, shutdown: &CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.config.replay_poll) => {}
            }
            self.refresh_stalls().await;
            loop {
                match self.replay_next().await {
                    Ok(true) if !shutdown.is_cancelled() => {}
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(error = %error, group = %self.config.group_id, "replay worker failed; retrying");
                        break;
                    }
                }
            }
        }
    }

    /// Replays the oldest requested dead letter, if any: applied like a live record (inbox,
    /// handler) and marked replayed in one transaction; on failure the error is recorded and
    /// the row kept. Returns whether there was one.
    async fn replay_next(&self) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let Some(row) =
            dead_letter::next_requested(&mut tx, &self.config.group_id, &self.config.topics).await?
        else {
            return Ok(false);
        };
        let outcome = match row.to_event() {
            Ok(event) => self.apply_in(&mut tx, &event).await,
            Err(reason) => Err(HandleError::Permanent(reason)),
        };
        match outcome {
            Ok(()) => {
                let now = Utc::now();
                dead_letter::mark_replayed(&mut tx, row.id, now).await?;
                crate::outbox::enqueue(
                    &mut tx,
                    self.reporter.dead_letter_replayed(row.id, &row.origin(), now),
                )
                .await?;
                tx.commit().await?;
                self.wake_outbox();
                tracing::info!(dead_letter_id = row.id, "dead letter replayed");
            }
            Err(error) => {
                tx.rollback().await?;
                let error = format!("{error:#}");
                tracing::warn!(dead_letter_id = row.id, error = %error, "dead letter replay failed; kept");
                dead_letter::replay_failed(&self.pool, row.id, &error).await?;
            }
        }
        Ok(true)
    }
}
