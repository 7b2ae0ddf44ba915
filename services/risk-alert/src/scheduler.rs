//! The scheduler raises the alert of every deadline whose grace has passed, exactly once per
//! dedup key however many replicas run or restarts happen, and never leaves a track without
//! a deadline: a fired recurring deadline is rolled to its next period and a fired one-shot
//! deadline stays, marked fired, in the transaction that raises the alert.
//!
//! A deadline is not fired while the events that could answer it may still be in flight:
//! the scheduler fires only what falls before the consumer's `caught_up_at` (kit `lag`),
//! or what has waited `max_defer` already, so an event lag delays an alert by at most the
//! lag (bounded) and never produces a wave of false alerts.
//!
//! Each subject is handled in a transaction of its own that first locks the subject's row
//! without waiting (`SKIP LOCKED`), then its due deadlines: the consumer takes the same
//! locks in the same order, so a check-in arriving as its deadline fires can neither
//! deadlock with the scheduler nor abort anyone else's firing. A few subjects are fired at
//! once, so a wave of deadlines falling due together (midnight) is not one long queue.
//!
//! Between rounds the scheduler sleeps until the earliest pending deadline (`wake`), read
//! from the table, which stays the truth across replicas and restarts; a deadline written
//! to fall due sooner rings the `alarm` (LISTEN/NOTIFY), and a due deadline deferred for
//! events in flight is looked at again as the consumer's caught-up instant moves. The
//! fallback poll (`MESH_ALERT_TICK_MS`) catches what a notice lost with its connection did
//! not announce.

mod alarm;
pub mod wake;

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{StreamExt, stream};
use mesh_kit::{
    CancellationToken,
    change::Changes,
    clock::SharedClock,
    error::ServiceError,
    lag::{self, CaughtUp},
};
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    domain::{
        compose::{Composer, DueDeadline},
        policy::Level,
        schedule::{self, Scheduled},
    },
    lifecycle::Lifecycle,
    store::{self, deadlines::DueSubject, watch::Locked},
};

/// Subjects looked at per round.
const BATCH: i64 = 200;

/// Subjects fired at once, each in its own transaction (of the pool's connections, which
/// the consumers, the relay and the API share).
const CONCURRENCY: usize = 4;

/// The pause before a due deadline a round left (its subject busy with an event) is tried
/// again: the consumer holds a subject for one event's transaction.
const RETRY: Duration = Duration::from_millis(200);

/// The longest fallback poll: deadlines firing within the hour notify
/// (`migrations/risk-alert/20261130500001_deadline_notices.sql`), so one further away must
/// be seen by a poll before then.
const MAX_FALLBACK: Duration = Duration::from_secs(30 * 60);

/// Fires due deadlines.
pub struct Scheduler {
    pub changes: Changes,
    pub composer: Composer,
    pub clock: SharedClock,
    pub lifecycle: Lifecycle,
    /// The fallback poll: the longest sleep between rounds, in case a deadline-change notice
    /// was lost (the alarm's connection dropped unnoticed).
    pub tick: Duration,
    /// Until when the consumer has applied every event (`None`: not monitored). A
    /// deadline after it waits, since an event in flight may answer it …
    pub caught_up: Option<CaughtUp>,
    /// … but never longer than this.
    pub max_defer: Duration,
}

impl Scheduler {
    /// Runs until shutdown; the first round runs at once, so deadlines that passed while the
    /// service was down are alerted right after start. Then it sleeps until the earliest
    /// pending deadline, a deadline-change notice, the consumer's progress (for a deferred
    /// deadline) or the fallback poll, whichever comes first.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut alarm = alarm::Alarm::new(self.changes.pool().clone());
        let mut progress = self.caught_up.clone();
        let timing = wake::Timing {
            fallback: self.tick.min(MAX_FALLBACK),
            retry: RETRY,
            max_defer: self.max_defer,
        };
        loop {
            let wake = match self.fire_due(BATCH).await {
                Ok(round) if round.fired > 0 => continue,
                Ok(round) => self.next_wake(round.cutoff, &timing).await,
                Err(error) => {
                    tracing::warn!(error = %error, "deadline round failed; retrying");
                    None
                }
            };
            let wake = wake.unwrap_or_else(|| wake::Wake {
                at: wake::after(self.clock.now(), RETRY),
                on_progress: false,
            });
            let sleep = (wake.at - self.clock.now()).to_std().unwrap_or_default();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(sleep) => {}
                _ = alarm.rung() => {}
                _ = moved(&mut progress), if wake.on_progress => {}
            }
        }
        tracing::info!("deadline scheduler stopped");
    }

    /// When to look again after a round that fired nothing (`None`: the table could not be
    /// read; try again shortly).
    async fn next_wake(&self, cutoff: DateTime<Utc>, timing: &wake::Timing) -> Option<wake::Wake> {
        match store::deadlines::earliest_pending(self.changes.pool()).await {
            Ok(earliest) => Some(wake::next(self.clock.now(), earliest, cutoff, timing)),
            Err(error) => {
                tracing::warn!(error = %error, "earliest deadline not read; retrying");
                None
            }
        }
    }

    /// Fires the due deadlines of up to `batch` subjects, a few at once; returns how many
    /// subjects had deadlines fired (so a busy round is followed at once by the next) and
    /// the cutoff it fired up to. A subject whose row is busy is left for the next round;
    /// one that fails is logged and does not stop the others.
    pub async fn fire_due(&self, batch: i64) -> Result<Round, ServiceError> {
        let now = self.clock.now();
        let cutoff = match &self.caught_up {
            Some(caught_up) => lag::firing_cutoff(now, *caught_up.borrow(), self.max_defer),
            None => now,
        };
        let due = {
            let mut change = self.changes.begin().await?;
            let due = store::deadlines::due_subjects(&mut change, cutoff, batch).await?;
            change.commit().await?;
            due
        };
        let fired = stream::iter(due)
            .map(|subject| async move {
                match self.fire_subject(subject, cutoff, now).await {
                    Ok(fired) => fired,
                    Err(error) => {
                        tracing::warn!(error = %error, subject_id = %subject.subject_id, "deadlines not fired; retrying next round");
                        false
                    }
                }
            })
            .buffer_unordered(CONCURRENCY)
            .filter(|fired| std::future::ready(*fired))
            .count()
            .await;
        Ok(Round { fired, cutoff })
    }

    /// Fires one subject's deadlines due by `cutoff`; false when its row was busy or
    /// nothing of it was due any more (another replica fired it).
    async fn fire_subject(
        &self,
        subject: DueSubject,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, ServiceError> {
        let mut change = self.changes.begin().await?;
        let id = subject.subject_id;
        // Lock order: the subject's row, then its deadlines (as the consumer does).
        let watched = if subject.handover {
            match store::watch::try_lock_handover(&mut change, id).await? {
                Locked::Held(watch) => Some(Watched::Handover(watch)),
                Locked::Busy => return Ok(false),
                Locked::Missing => None,
            }
        } else {
            match store::watch::try_lock_supervisee(&mut change, id).await? {
                Locked::Held(watch) => Some(Watched::Supervisee(watch)),
                Locked::Busy => return Ok(false),
                Locked::Missing => None,
            }
        };
        let due = store::deadlines::due_of_subject(&mut change, id, cutoff).await?;
        if due.is_empty() {
            return Ok(false);
        }
        let subject = Firing {
            id,
            watched,
            open: store::alerts::open_for_subject(&mut change, &id.to_string()).await?,
        };
        for row in &due {
            self.fire(&mut change, &subject, row, now).await?;
        }
        // Commit wakes the relay when an alert was raised.
        change.commit().await?;
        Ok(true)
    }

    /// Raises one missed deadline's alert and moves the deadline on.
    async fn fire(
        &self,
        change: &mut mesh_kit::change::Change,
        subject: &Firing,
        row: &Scheduled,
        now: DateTime<Utc>,
    ) -> Result<(), ServiceError> {
        let id = subject.id;
        let track = row.deadline.track;
        let deadline = DueDeadline {
            subject_id: id,
            track,
            due_at: row.deadline.due,
            grace_seconds: i64::try_from(row.deadline.grace.as_secs()).unwrap_or(i64::MAX),
            since_at: row.deadline.since,
        };
        let (draft, level) = match &subject.watched {
            Some(Watched::Supervisee(watch)) => {
                (self.composer.supervisee_alert(&deadline, watch, now), watch.level)
            }
            Some(Watched::Handover(watch)) => (self.composer.handover_alert(&deadline, watch), None::<Level>),
            None => (None, None),
        };
        if draft.is_none() {
            // The coverage reconciliation reports what is wrong with this subject; the
            // deadline still moves on so it is not fired again every round.
            tracing::error!(subject_id = %id, track = track.as_str(), "due deadline without a subject to alert about");
        }
        // Each missed deadline starts a trace of its own, which the alert event and its
        // notifications carry on.
        let span = tracing::info_span!("deadline.missed", track = track.as_str(), subject_id = %id);
        if let Some(draft) = draft.filter(|_| !schedule::still_alerted(track, &subject.open)) {
            self.lifecycle.raise(change, draft, now).instrument(span).await?;
        }
        let next = schedule::after_firing(&self.composer.policy, level, row, now, self.composer.tz);
        store::deadlines::put(change, id, &next).await
    }
}

/// What a round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Subjects whose deadlines were fired.
    pub fired: usize,
    /// The instant the round fired up to (now, or earlier while events may be in flight).
    pub cutoff: DateTime<Utc>,
}

/// Resolves when the consumer's caught-up instant moves; never when it is not monitored or
/// its monitor stopped (the timer and the alarm still wake the scheduler).
async fn moved(progress: &mut Option<CaughtUp>) {
    let Some(caught_up) = progress else {
        return std::future::pending().await;
    };
    if caught_up.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A subject whose deadlines are being fired, under its row lock: what is known of it and
/// its open alerts (read once for all its due deadlines).
struct Firing {
    id: Uuid,
    watched: Option<Watched>,
    open: Vec<crate::domain::alert::Alert>,
}

/// What is known of the subject a deadline belongs to.
enum Watched {
    Supervisee(crate::domain::watch::SuperviseeWatch),
    Handover(crate::domain::watch::HandoverWatch),
}
