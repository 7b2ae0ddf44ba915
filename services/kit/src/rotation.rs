//! Re-sealing after a key rotation: a background worker of the service that owns the rows
//! opens every value sealed under an older key of its ring and seals it again under the
//! current key, a small batch per transaction, until none is left; then the old key can be
//! removed from the ring. It runs in the owning service because only the service knows its
//! sealed columns and their contexts and holds its keys (an operator's tool would need
//! every service's keys). Progress is logged per column and key id (`field keys:` lines).
//!
//! Which values are re-sealed: those under a key listed after the current one
//! (`KeyRing::settled_ids`), and those sealed before key ids existed. Keys listed before the
//! current one are being introduced and are left alone, so a replica still on the previous
//! configuration never re-seals back what a newer replica re-sealed.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::{
    CancellationToken,
    keyring::{KeyRing, LEGACY_KID},
};

/// A column of sealed values: `table.column`, the row's UUID key, and the context the values
/// are sealed with. Names come from the service's code, never from input.
#[derive(Debug, Clone, Copy)]
pub struct SealedColumn {
    pub table: &'static str,
    pub key: &'static str,
    pub column: &'static str,
    pub context: &'static str,
}

/// How long between passes while some values cannot be re-sealed yet (rows locked by the
/// service's own work, or values under a key the ring does not hold).
const RETRY_AFTER: Duration = Duration::from_secs(60);
/// A breath between batches, so a rotation never crowds out the service's own work.
const PAUSE: Duration = Duration::from_millis(20);

/// The re-sealing worker of one service.
pub struct Rotation {
    pool: PgPool,
    ring: Arc<KeyRing>,
    columns: &'static [SealedColumn],
    batch: usize,
}

/// Sealed values per column and key id.
pub type Census = BTreeMap<String, BTreeMap<String, i64>>;

impl Rotation {
    pub fn new(pool: PgPool, ring: Arc<KeyRing>, columns: &'static [SealedColumn], batch: usize) -> Self {
        Self {
            pool,
            ring,
            columns,
            batch: batch.max(1),
        }
    }

    /// Re-seals until every value is under a settled key or shutdown; logs each pass.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let resealed = match self.pass(&shutdown).await {
                Ok(resealed) => resealed,
                Err(error) => {
                    tracing::warn!(error = %error, "field keys: re-sealing interrupted; trying again");
                    0
                }
            };
            if shutdown.is_cancelled() {
                return;
            }
            match self.census().await {
                Ok(census) => {
                    let left = self.unsettled(&census);
                    let current = self.ring.current_id();
                    if left == 0 {
                        tracing::info!(current, resealed, census = %show(&census), "field keys: every sealed value is under a current key");
                        return;
                    }
                    tracing::warn!(current, resealed, left, census = %show(&census), "field keys: values left under older keys");
                    // A pass that moved some goes on at once; one that moved none waits.
                    if resealed > 0 {
                        continue;
                    }
                }
                Err(error) => tracing::warn!(error = %error, "field keys: census failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(RETRY_AFTER) => {}
            }
        }
    }

    /// How many values of every column each key id sealed (`legacy` for values without a
    /// header).
    pub async fn census(&self) -> Result<Census, sqlx::Error> {
        let mut census = Census::new();
        for column in self.columns {
            let sql = format!(
                "SELECT {kid} AS kid, count(*) AS n FROM {table} GROUP BY 1",
                kid = kid_sql(column.column),
                table = column.table,
            );
            let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
            let counts = census
                .entry(format!("{}.{}", column.table, column.column))
                .or_default();
            for row in rows {
                counts.insert(row.try_get("kid")?, row.try_get("n")?);
            }
        }
        Ok(census)
    }

    /// Values in `census` under a key that is not settled.
    fn unsettled(&self, census: &Census) -> i64 {
        let settled = self.ring.settled_ids();
        census
            .values()
            .flat_map(|counts| counts.iter())
            .filter(|(kid, _)| !settled.contains(kid))
            .map(|(_, n)| n)
            .sum()
    }

    /// One pass over every column in key order; returns how many values were re-sealed.
    async fn pass(&self, shutdown: &CancellationToken) -> Result<u64, sqlx::Error> {
        let mut resealed = 0;
        for column in self.columns {
            let mut after = Uuid::nil();
            loop {
                if shutdown.is_cancelled() {
                    return Ok(resealed);
                }
                let Some((last, moved)) = self.batch(column, after).await? else {
                    break;
                };
                after = last;
                resealed += moved;
                tokio::time::sleep(PAUSE).await;
            }
        }
        Ok(resealed)
    }

    /// Re-seals the next batch of `column` after key `after` in one transaction; `None` at
    /// the end of the table. Rows the service is working on are skipped (a later pass takes
    /// them); a value that does not open is left as it was and counted by the census.
    async fn batch(&self, column: &SealedColumn, after: Uuid) -> Result<Option<(Uuid, u64)>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let select = format!(
            "SELECT {key} AS id, {col} AS sealed FROM {table} \
             WHERE {key} > $1 AND NOT ({kid} = ANY($2)) \
             ORDER BY {key} LIMIT $3 FOR NO KEY UPDATE SKIP LOCKED",
            key = column.key,
            col = column.column,
            table = column.table,
            kid = kid_sql(column.column),
        );
        let rows = sqlx::query(&select)
            .bind(after)
            .bind(self.ring.settled_ids())
            .bind(i64::try_from(self.batch).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await?;
        let Some(last) = rows.last().map(|row| row.try_get::<Uuid, _>("id")).transpose()? else {
            return Ok(None);
        };
        let mut ids = Vec::with_capacity(rows.len());
        let mut sealed = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: Uuid = row.try_get("id")?;
            let value: Vec<u8> = row.try_get("sealed")?;
            match self.ring.open(&value, column.context) {
                Ok(plain) => {
                    ids.push(id);
                    sealed.push(self.ring.seal(&plain, column.context));
                }
                // The row's id only: the value is personal data even when it does not open.
                Err(error) => tracing::error!(
                    table = column.table,
                    column = column.column,
                    id = %id,
                    error = %error,
                    "field keys: a sealed value does not open; it stays under its key"
                ),
            }
        }
        let update = format!(
            "UPDATE {table} SET {col} = v.sealed \
             FROM UNNEST($1::uuid[], $2::bytea[]) AS v(id, sealed) WHERE {table}.{key} = v.id",
            table = column.table,
            col = column.column,
            key = column.key,
        );
        let moved = sqlx::query(&update)
            .bind(&ids)
            .bind(&sealed)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        if moved > 0 {
            tracing::info!(
                table = column.table,
                column = column.column,
                resealed = moved,
                current = self.ring.current_id(),
                "field keys: batch re-sealed"
            );
        }
        Ok(Some((last, moved)))
    }
}

/// The key id a sealed value names, in SQL: the header's id, or `legacy` without a header
/// (the same reading as `keyring::key_id_of`).
fn kid_sql(column: &str) -> String {
    format!(
        "(CASE WHEN substr({column}, 1, 4) = '\\x6d6b7201'::bytea AND length({column}) > 4 \
         THEN encode(substr({column}, 6, get_byte({column}, 4)), 'escape') ELSE '{LEGACY_KID}' END)"
    )
}

/// `table.column: kid=n, kid=n; …` for a log line.
fn show(census: &Census) -> String {
    census
        .iter()
        .map(|(column, counts)| {
            let counts: Vec<String> = counts.iter().map(|(kid, n)| format!("{kid}={n}")).collect();
            let counts = if counts.is_empty() {
                "none".to_owned()
            } else {
                counts.join(", ")
            };
            format!("{column}: {counts}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}
