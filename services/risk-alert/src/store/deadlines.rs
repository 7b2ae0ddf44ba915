//! The `deadlines` table: every subject's scheduled deadlines, one row per track, pending
//! or (one-shot tracks) fired. Rows are changed only by a transaction that holds the
//! subject's row lock (`store::watch`), which is what keeps replicas from firing one twice.

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use mesh_kit::error::ServiceError;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{
    policy::{Deadline, Track},
    schedule::Scheduled,
};

#[derive(sqlx::FromRow)]
struct Row {
    track: String,
    due_at: DateTime<Utc>,
    grace_seconds: i64,
    since_at: DateTime<Utc>,
    origin_due: DateTime<Utc>,
    fired_at: Option<DateTime<Utc>>,
}

impl Row {
    /// The stored deadline; `None` for a track this version does not know.
    fn scheduled(self) -> Option<Scheduled> {
        Some(Scheduled {
            deadline: Deadline {
                track: Track::parse(&self.track)?,
                due: self.due_at,
                grace: Duration::from_secs(u64::try_from(self.grace_seconds).unwrap_or(0)),
                since: self.since_at,
            },
            origin_due: self.origin_due,
            fired_at: self.fired_at,
        })
    }
}

/// The channel a trigger notifies when a pending deadline is written to fire soon
/// (`migrations/risk-alert/20261130500001_deadline_notices.sql`); the scheduler listens.
pub const CHANGES_CHANNEL: &str = "mesh_deadline_changes";

const COLUMNS: &str = "track, due_at, grace_seconds, since_at, origin_due, fired_at";

/// The stored deadline; `None` (logged) for a track this version does not know.
fn known(row: Row, subject_id: Uuid) -> Option<Scheduled> {
    let track = row.track.clone();
    let scheduled = row.scheduled();
    if scheduled.is_none() {
        tracing::error!(%subject_id, track, "deadline of an unknown track ignored");
    }
    scheduled
}

/// Every stored deadline of a subject (the caller holds the subject's lock).
pub async fn of_subject(conn: &mut PgConnection, subject_id: Uuid) -> Result<Vec<Scheduled>, ServiceError> {
    Ok(of_subjects(conn, &[subject_id])
        .await?
        .remove(&subject_id)
        .unwrap_or_default())
}

/// Every stored deadline of each of `subject_ids`, by track, in one statement (the caller
/// holds the subjects' locks); a subject without deadlines is absent.
pub async fn of_subjects(
    conn: &mut PgConnection,
    subject_ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<Scheduled>>, ServiceError> {
    let rows: Vec<SubjectRow> = sqlx::query_as(&format!(
        "SELECT subject_id, {COLUMNS} FROM deadlines WHERE subject_id = ANY($1) ORDER BY subject_id, track"
    ))
    .bind(subject_ids)
    .fetch_all(conn)
    .await?;
    let mut deadlines: HashMap<Uuid, Vec<Scheduled>> = HashMap::new();
    for row in rows {
        if let Some(scheduled) = known(row.row, row.subject_id) {
            deadlines.entry(row.subject_id).or_default().push(scheduled);
        }
    }
    Ok(deadlines)
}

/// The pending deadlines of `subject_ids` whose time has come by `now`, locked, by subject
/// and then firing time. The caller holds the subjects' row locks, so nobody else holds
/// these rows; a row held anyway (a subject without a row, fired by another replica at
/// this moment) is skipped rather than waited for, so a batch never waits on a batch.
pub async fn due_of_subjects(
    conn: &mut PgConnection,
    subject_ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<Vec<(Uuid, Scheduled)>, ServiceError> {
    let rows: Vec<SubjectRow> = sqlx::query_as(&format!(
        "SELECT subject_id, {COLUMNS} FROM deadlines
         WHERE subject_id = ANY($1) AND fired_at IS NULL AND fire_at <= $2
         ORDER BY subject_id, fire_at FOR UPDATE SKIP LOCKED"
    ))
    .bind(subject_ids)
    .bind(now)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| Some((row.subject_id, known(row.row, row.subject_id)?)))
        .collect())
}

#[derive(sqlx::FromRow)]
struct SubjectRow {
    subject_id: Uuid,
    #[sqlx(flatten)]
    row: Row,
}

/// Replaces each subject's deadlines with its rows, in two statements for them all.
pub async fn replace_all(
    conn: &mut PgConnection,
    subjects: &[(Uuid, Vec<Scheduled>)],
) -> Result<(), ServiceError> {
    if subjects.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM deadlines WHERE subject_id = ANY($1)")
        .bind(subjects.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    let rows: Vec<(Uuid, Scheduled)> = subjects
        .iter()
        .flat_map(|(id, rows)| rows.iter().map(|row| (*id, *row)))
        .collect();
    put_all(conn, &rows).await
}

/// Writes each subject's row in one statement (the track's row is replaced).
pub async fn put_all(conn: &mut PgConnection, rows: &[(Uuid, Scheduled)]) -> Result<(), ServiceError> {
    if rows.is_empty() {
        return Ok(());
    }
    let column = |value: fn(&(Uuid, Scheduled)) -> DateTime<Utc>| rows.iter().map(value).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO deadlines (subject_id, track, due_at, grace_seconds, fire_at, since_at, origin_due, fired_at)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[], $4::bigint[], $5::timestamptz[],
             $6::timestamptz[], $7::timestamptz[], $8::timestamptz[])
         ON CONFLICT (subject_id, track) DO UPDATE SET due_at = excluded.due_at,
             grace_seconds = excluded.grace_seconds, fire_at = excluded.fire_at, since_at = excluded.since_at,
             origin_due = excluded.origin_due, fired_at = excluded.fired_at",
    )
    .bind(rows.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, row)| row.deadline.track.as_str()).collect::<Vec<_>>())
    .bind(column(|(_, row)| row.deadline.due))
    .bind(
        rows.iter()
            .map(|(_, row)| i64::try_from(row.deadline.grace.as_secs()).unwrap_or(i64::MAX))
            .collect::<Vec<_>>(),
    )
    .bind(column(|(_, row)| row.deadline.fires_at()))
    .bind(column(|(_, row)| row.deadline.since))
    .bind(column(|(_, row)| row.origin_due))
    .bind(rows.iter().map(|(_, row)| row.fired_at).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// A subject with a pending deadline due by `now`, and whether it is a handover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueSubject {
    pub subject_id: Uuid,
    pub handover: bool,
}

/// Where a page of due deadlines ended: the (fire time, subject) of its last row.
pub type Cursor = (DateTime<Utc>, Uuid);

/// A page of due deadlines: their subjects, earliest first, and how far it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuePage {
    pub subjects: Vec<DueSubject>,
    /// Deadline rows read (the page is full when it equals the limit).
    pub rows: i64,
    /// The last row read, where the next page starts (`None` for an empty page).
    pub last: Option<Cursor>,
}

/// The subjects of up to `limit` deadlines due by `now`, in (fire time, subject) order,
/// after `after` (from the start when `None`). Only those rows are read: the index is
/// sought past the cursor, so a round costs the same however large the wave behind it, and
/// however many fired rows of the wave still sit in the index until vacuum. Nothing is
/// locked here: the scheduler then locks the subjects (skipping busy ones) and reads their
/// due rows again, so a row another replica fired meanwhile is not fired twice.
pub async fn due_subjects(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
    after: Option<Cursor>,
) -> Result<DuePage, ServiceError> {
    let handover_tracks: Vec<&str> = Track::ALL
        .iter()
        .filter(|track| track.is_handover())
        .map(|track| track.as_str())
        .collect();
    // Before every row (year 1, within PostgreSQL's range): the start.
    let start = DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or(DateTime::UNIX_EPOCH);
    let (after_at, after_subject) = after.unwrap_or((start, Uuid::nil()));
    // The due bound is applied outside the page on purpose. With it inside, a planner whose
    // statistics predate a wave (all of it moved to one instant since the last ANALYZE)
    // estimated a few hundred due rows and read every due row of the wave through a bitmap
    // scan to sort them, 255 ms a page at 600,000 due. Without it, "every pending row after
    // the cursor" is always estimated large, so the plan walks the index in order and stops
    // after the page; a page that reaches past the due rows simply ends the pass.
    let rows: Vec<(Uuid, bool, DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT subject_id, bool_or(track = ANY($3)), max(fire_at), count(*) FROM (
             SELECT subject_id, track, fire_at FROM deadlines
             WHERE fired_at IS NULL AND (fire_at, subject_id) > ($4, $5)
             ORDER BY fire_at, subject_id LIMIT $2
         ) AS page
         WHERE fire_at <= $1
         GROUP BY subject_id ORDER BY min(fire_at), subject_id",
    )
    .bind(now)
    .bind(limit)
    .bind(&handover_tracks)
    .bind(after_at)
    .bind(after_subject)
    .fetch_all(conn)
    .await?;
    Ok(page(rows))
}

/// The page of grouped rows: each subject once, the rows counted, the last row found.
fn page(rows: Vec<(Uuid, bool, DateTime<Utc>, i64)>) -> DuePage {
    DuePage {
        rows: rows.iter().map(|(_, _, _, count)| count).sum(),
        // The last row in (fire time, subject) order is the greatest of each subject's
        // latest row.
        last: rows
            .iter()
            .map(|(subject_id, _, latest, _)| (*latest, *subject_id))
            .max(),
        subjects: rows
            .into_iter()
            .map(|(subject_id, handover, _, _)| DueSubject { subject_id, handover })
            .collect(),
    }
}

/// When the earliest pending deadline fires, if any (the scheduler sleeps until then).
pub async fn earliest_pending(pool: &PgPool) -> Result<Option<DateTime<Utc>>, ServiceError> {
    Ok(
        sqlx::query_scalar("SELECT min(fire_at) FROM deadlines WHERE fired_at IS NULL")
            .fetch_one(pool)
            .await?,
    )
}

/// The tracks each of `ids` has a deadline on (pending or fired).
pub async fn tracks(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<Track>>, ServiceError> {
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT subject_id, track FROM deadlines WHERE subject_id = ANY($1)")
            .bind(ids)
            .fetch_all(conn)
            .await?;
    let mut tracks: HashMap<Uuid, Vec<Track>> = HashMap::new();
    for (id, track) in rows {
        if let Some(track) = Track::parse(&track) {
            tracks.entry(id).or_default().push(track);
        }
    }
    Ok(tracks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alert::tests::utc;

    #[test]
    fn a_page_names_each_subject_once_counts_its_rows_and_ends_at_its_greatest_row() {
        let (a, b) = (Uuid::from_u128(2), Uuid::from_u128(1));
        let at = utc("2026-12-01T00:00:00Z");
        // As the statement returns them: by earliest row, then subject. Subject a has two
        // rows, the later one the greatest of the page even though b sorts before a at the
        // same instant.
        let rows = vec![(b, false, at, 1), (a, true, utc("2026-12-01T00:00:05Z"), 2)];
        let page = page(rows);
        assert_eq!(
            page.subjects,
            [
                DueSubject {
                    subject_id: b,
                    handover: false
                },
                DueSubject {
                    subject_id: a,
                    handover: true
                }
            ]
        );
        assert_eq!(page.rows, 3);
        assert_eq!(page.last, Some((utc("2026-12-01T00:00:05Z"), a)));
        // Same instant: the greater subject ends the page.
        assert_eq!(
            page_last(vec![(a, false, at, 1), (b, false, at, 1)]),
            Some((at, a))
        );
        assert_eq!(page_last(Vec::new()), None);
    }

    fn page_last(rows: Vec<(Uuid, bool, DateTime<Utc>, i64)>) -> Option<Cursor> {
        page(rows).last
    }
}
