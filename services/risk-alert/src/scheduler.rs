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
//! Subjects are fired in batches, each in one transaction that first locks the batch's
//! subject rows without waiting (`SKIP LOCKED`), then their due deadlines: the consumer
//! takes the same locks in the same order, so a check-in arriving as its deadline fires can
//! neither deadlock with the scheduler nor abort anyone else's firing; a busy subject waits
//! for the next round. What to raise and where each deadline moves is decided in pure code
//! (`domain::firing`) and written set-based, so a wave of deadlines falling due together
//! (midnight) costs a few statements per batch, not per alert.
//!
//! Rounds page through the due deadlines with a cursor on (fire time, subject), so a wave's
//! fired rows, which stay in the pending index until vacuum, are sought past rather than
//! walked again each round; a pass ends at the last due deadline and the next starts from
//! the first (what a busy subject left is fired then).
//!
//! Between rounds the scheduler sleeps until the earliest pending deadline (`wake`), read
//! from the table, which stays the truth across replicas and restarts; a deadline written
//! to fall due sooner rings the `alarm` (LISTEN/NOTIFY), and a due deadline deferred for
//! events in flight is looked at again as the consumer's caught-up instant moves. The
//! fallback poll (`MESH_ALERT_TICK_MS`) catches what a notice lost with its connection did
//! not announce.

mod alarm;
pub mod wake;

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use mesh_kit::{
    CancellationToken,
    change::{Change, Changes},
    clock::SharedClock,
    error::ServiceError,
    lag::{self, CaughtUp},
};
use uuid::Uuid;

use crate::{
    domain::{
        alert::Alert,
        compose::Composer,
        firing::{self, Due, Watched},
        schedule::Scheduled,
    },
    lifecycle::{Lifecycle, Raising},
    store::{
        self,
        deadlines::{Cursor, DueSubject},
    },
};

/// Due deadlines looked at per round, their subjects fired in one transaction: large enough
/// that a wave costs few round trips per alert, small enough that a batch's locks and
/// transaction stay short beside the consumer's.
const BATCH: i64 = 500;

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
        // Where the next round's page starts: after the last page while a pass through
        // the due deadlines goes on, from the start once it reached their end (so what a
        // busy subject left behind the cursor is fired on the next pass).
        let mut after = None;
        // Subjects fired in this pass: a pass that fired nothing (all busy) sleeps.
        let mut fired_in_pass = 0;
        loop {
            let wake = match self.fire_due(BATCH, after).await {
                Ok(round) => {
                    fired_in_pass += round.fired;
                    if round.full {
                        after = round.last;
                        continue;
                    }
                    after = None;
                    if std::mem::take(&mut fired_in_pass) > 0 {
                        continue;
                    }
                    self.next_wake(round.cutoff, &timing).await
                }
                Err(error) => {
                    tracing::warn!(error = %error, "deadline round failed; retrying");
                    (after, fired_in_pass) = (None, 0);
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

    /// Fires the due deadlines of the subjects of the next `batch` due deadlines after
    /// `after` (from the start when `None`) in one transaction; returns how many subjects
    /// had deadlines fired, whether the page was full (more may follow it), where it ended
    /// and the cutoff it fired up to. A subject whose row is busy is left for the next
    /// pass.
    pub async fn fire_due(&self, batch: i64, after: Option<Cursor>) -> Result<Round, ServiceError> {
        let now = self.clock.now();
        let cutoff = match &self.caught_up {
            Some(caught_up) => lag::firing_cutoff(now, *caught_up.borrow(), self.max_defer),
            None => now,
        };
        let mut change = self.changes.begin().await?;
        // Every read of a round is by key (the page by the cursor, the rest by its subjects);
        // a sequential scan is never the right plan. Statistics lag a wave (a table of alerts
        // that was small at the last ANALYZE and is filling by thousands a second), and the
        // planner then chose to scan every alert for each batch's open alerts: 137 ms a
        // round at 350,000 alerts. Only this transaction is affected.
        sqlx::query("SET LOCAL enable_seqscan = off")
            .execute(&mut *change)
            .await?;
        let page = store::deadlines::due_subjects(&mut change, cutoff, batch, after).await?;
        let subjects = lock(&mut change, &page.subjects, cutoff).await?;
        let decision = firing::decide(&self.composer, &subjects, now);
        for (subject_id, track) in &decision.unexplained {
            tracing::error!(%subject_id, track = track.as_str(), "due deadline without a subject to alert about");
        }
        // Each missed deadline starts a trace of its own, which the alert event and its
        // notifications carry on.
        let raisings = decision
            .alerts
            .into_iter()
            .map(|missed| Raising {
                span: tracing::info_span!("deadline.missed", track = missed.track.as_str(), subject_id = %missed.subject_id),
                draft: missed.draft,
            })
            .collect();
        self.lifecycle.raise_all(&mut change, raisings, now).await?;
        store::deadlines::put_all(&mut change, &decision.moved).await?;
        // Commit wakes the relay when an alert was raised.
        change.commit().await?;
        Ok(Round {
            fired: subjects.len(),
            full: page.rows >= batch,
            last: page.last,
            cutoff,
        })
    }
}

/// Locks the subjects of `due` that are free (rows missing included: their deadlines still
/// move on) and reads, for each with a deadline still due by `cutoff`, what firing needs.
/// Lock order: the subjects' rows, then their deadlines and open alerts, as the consumer.
async fn lock(
    change: &mut Change,
    due: &[DueSubject],
    cutoff: DateTime<Utc>,
) -> Result<Vec<Due>, ServiceError> {
    let ids = |handover: bool| -> Vec<Uuid> {
        due.iter()
            .filter(|subject| subject.handover == handover)
            .map(|subject| subject.subject_id)
            .collect()
    };
    let supervisees = store::watch::try_lock_supervisees(change, &ids(false)).await?;
    let handovers = store::watch::try_lock_handovers(change, &ids(true)).await?;
    let watched: Vec<(Uuid, Option<Watched>)> = supervisees
        .held
        .into_iter()
        .map(|(id, watch)| (id, Some(Watched::Supervisee(watch))))
        .chain(
            handovers
                .held
                .into_iter()
                .map(|(id, watch)| (id, Some(Watched::Handover(watch)))),
        )
        .chain(
            supervisees
                .missing
                .into_iter()
                .chain(handovers.missing)
                .map(|id| (id, None)),
        )
        .collect();
    let ids: Vec<Uuid> = watched.iter().map(|(id, _)| *id).collect();
    let mut deadlines: HashMap<Uuid, Vec<Scheduled>> = HashMap::new();
    for (id, row) in store::deadlines::due_of_subjects(change, &ids, cutoff).await? {
        deadlines.entry(id).or_default().push(row);
    }
    // A subject with nothing due any more was fired by another replica between the read
    // and the lock.
    let watched: Vec<(Uuid, Option<Watched>, Vec<Scheduled>)> = watched
        .into_iter()
        .filter_map(|(id, watched)| Some((id, watched, deadlines.remove(&id)?)))
        .collect();
    let names: Vec<String> = watched.iter().map(|(id, _, _)| id.to_string()).collect();
    let mut open: HashMap<String, Vec<Alert>> = HashMap::new();
    for alert in store::alerts::open_for_subjects(change, &names).await? {
        open.entry(alert.subject.id.clone()).or_default().push(alert);
    }
    Ok(watched
        .into_iter()
        .map(|(id, watched, deadlines)| Due {
            id,
            watched,
            open: open.remove(&id.to_string()).unwrap_or_default(),
            deadlines,
        })
        .collect())
}

/// What a round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Subjects whose deadlines were fired.
    pub fired: usize,
    /// Whether the page of due deadlines was full: more may be due after it.
    pub full: bool,
    /// Where the page ended (the next page starts after it).
    pub last: Option<Cursor>,
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
