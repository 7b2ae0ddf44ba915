//! The statements on the hot paths reach their indexes even through the generic plan
//! PostgreSQL switches a prepared statement to after five executions: a condition bound as a
//! parameter cannot match a partial index's predicate, and the plan then reads every row.
//! Runs against the real PostgreSQL of `MESH_DATABASE_URL_BASE`, in a database of its own.

use std::time::Duration;

use risk_alert::{MIGRATOR, store};
use sqlx::{Connection, PgConnection, PgPool};

/// A fresh database with risk-alert's schema; dropped by the caller.
async fn fresh_database() -> (PgPool, String, String) {
    let base = std::env::var("MESH_DATABASE_URL_BASE")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let name = format!("test_plans_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin(&base).await)
        .await
        .expect("database created");
    let pool = PgPool::connect(&format!("{base}/{name}")).await.expect("pool");
    MIGRATOR.run(&pool).await.expect("migrated");
    (pool, base, name)
}

/// A connection to the server's `postgres` database, to create and drop test databases.
async fn admin(base: &str) -> PgConnection {
    PgConnection::connect(&format!("{base}/postgres"))
        .await
        .expect("admin connection")
}

/// Index scans of `index` so far, as the statistics report them once flushed.
async fn index_scans(pool: &PgPool, index: &str) -> i64 {
    sqlx::query_scalar("SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = $1")
        .bind(index)
        .fetch_one(pool)
        .await
        .expect("index statistics")
}

#[tokio::test]
async fn a_batch_reads_its_open_alerts_through_the_open_alert_index_with_a_generic_plan() {
    let (pool, base, name) = fresh_database().await;
    let mut conn = pool.acquire().await.expect("connection");
    // The plan every call gets after the fifth; a sequential scan priced out, so the plan
    // shows whether the index can serve the statement at all.
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .expect("generic plans");
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .expect("no sequential scans");
    let subjects = vec!["0195f3a0-0000-7000-8000-000000000001".to_owned()];
    let mut tx = conn.begin().await.expect("begin");
    let open = store::alerts::open_for_subjects(&mut tx, &subjects)
        .await
        .expect("open alerts read");
    assert!(open.is_empty());
    tx.commit().await.expect("commit");
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .expect("flush");
    drop(conn);

    let mut scans = 0;
    for _ in 0..50 {
        scans = index_scans(&pool, "alerts_open_by_subject").await;
        if scans > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(scans > 0, "open_for_subjects did not use alerts_open_by_subject");

    pool.close().await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut admin(&base).await)
        .await
        .expect("database dropped");
}
