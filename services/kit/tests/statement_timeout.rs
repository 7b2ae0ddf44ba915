//! The service pool's sessions carry the configured statement timeout: a statement running
//! longer is cancelled by PostgreSQL, and "0" turns the limit off. Runs against the real
//! PostgreSQL of `MESH_DATABASE_URL_BASE`, in a database of its own.

use mesh_kit::{
    config::{CommonSettings, Reader},
    db,
};
use sqlx::migrate::Migrator;

mod support;
use support::base;

fn settings(database: &str, timeout_secs: &str) -> CommonSettings {
    let url = format!("{}/{database}", base());
    let source = vec![
        ("MESH_DATABASE_URL".to_owned(), url),
        ("MESH_KAFKA_BROKERS".to_owned(), "127.0.0.1:9092".to_owned()),
        // Required settings this test never uses: the key set is not loaded here.
        ("MESH_JWKS_FILE".to_owned(), "/nonexistent/jwks.json".to_owned()),
        (
            "MESH_CURSOR_SECRET".to_owned(),
            "0123456789abcdef0123456789abcdef".to_owned(),
        ),
        (
            "MESH_DATABASE_STATEMENT_TIMEOUT_SECS".to_owned(),
            timeout_secs.to_owned(),
        ),
    ];
    let mut reader = Reader::new(&source);
    let settings = CommonSettings::read(&mut reader, "kit-test", 0);
    reader.finish().expect("valid settings");
    settings.expect("read")
}

/// The statement timeout of the pool's sessions.
async fn shown(pool: &sqlx::PgPool) -> String {
    sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(pool)
        .await
        .expect("shown")
}

#[tokio::test]
async fn a_statement_over_the_timeout_is_cancelled_and_zero_means_none() {
    let name = support::create_database("test_timeout").await;
    let no_migrations = Migrator::DEFAULT;

    let pool = db::connect_and_migrate(&settings(&name, "1"), &no_migrations)
        .await
        .expect("connected and migrated");
    assert_eq!(shown(&pool).await, "1s");
    let error = sqlx::query("SELECT pg_sleep(2)")
        .execute(&pool)
        .await
        .expect_err("cancelled");
    let code = error
        .as_database_error()
        .and_then(|db| db.code())
        .map(|code| code.into_owned());
    assert_eq!(code.as_deref(), Some("57014"), "{error}");
    sqlx::query("SELECT pg_sleep(0.1)")
        .execute(&pool)
        .await
        .expect("a short statement runs");
    pool.close().await;

    let unlimited = db::connect_and_migrate(&settings(&name, "0"), &no_migrations)
        .await
        .expect("connected");
    assert_eq!(shown(&unlimited).await, "0");
    unlimited.close().await;

    support::drop_database(&name).await;
}
