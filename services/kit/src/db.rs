//! PostgreSQL pool and migrations: the kit's own tables (outbox, inbox, audit log) plus the
//! service's embedded migrations, run under sqlx's advisory lock so concurrent replicas are
//! safe.

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::CommonSettings;

/// The kit's own migrations (outbox, inbox and audit log tables).
pub static KIT_MIGRATOR: Migrator = sqlx::migrate!("../../migrations/kit");

/// Connects to the service's database (failing fast if it is unreachable) and migrates it.
/// The pool's sessions cancel a statement that runs longer than the configured statement
/// timeout, so a runaway query cannot hold locks and connections for ever.
pub async fn connect_and_migrate(settings: &CommonSettings, service: &Migrator) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = settings.database_url.expose_secret().parse()?;
    // Migrations may rewrite or index whole tables: they get a connection of their own
    // without the statement timeout.
    let migrating = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.clone())
        .await?;
    let migrated = migrate(&migrating, service).await;
    migrating.close().await;
    migrated?;
    let options = match settings.database_statement_timeout {
        Some(timeout) => options.options([("statement_timeout", format!("{}ms", timeout.as_millis()))]),
        None => options,
    };
    let pool = PgPoolOptions::new()
        .max_connections(settings.database_max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Runs the kit's and the service's migrations. Both share sqlx's bookkeeping table, so each
/// ignores the other's versions.
pub async fn migrate(pool: &PgPool, service: &Migrator) -> anyhow::Result<()> {
    for migrator in [&KIT_MIGRATOR, service] {
        let tolerant = Migrator {
            migrations: migrator.migrations.clone(),
            ignore_missing: true,
            ..Migrator::DEFAULT
        };
        tolerant.run(pool).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    /// The kit's and a service's migrations share sqlx's bookkeeping table, keyed by
    /// version: a service migration with a kit migration's version would be taken for it and
    /// refused as "modified" at start. Every version under `migrations/` is unique.
    #[test]
    fn no_two_migrations_share_a_version() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
        let mut seen: HashMap<String, String> = HashMap::new();
        for dir in std::fs::read_dir(&root).expect("migrations") {
            let dir = dir.expect("entry").path();
            for file in std::fs::read_dir(&dir).expect("service migrations") {
                let path = file.expect("entry").path();
                let name = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                let Some((version, _)) = name.split_once('_') else {
                    continue;
                };
                if let Some(other) = seen.insert(version.to_owned(), path.display().to_string()) {
                    panic!("{} and {other} share version {version}", path.display());
                }
            }
        }
        assert!(seen.len() > 10, "read the migrations: {seen:?}");
    }
}
