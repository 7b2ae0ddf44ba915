//! What the kit's database tests share: the real PostgreSQL of `MESH_DATABASE_URL_BASE`
//! (default the local one), and a database of a test's own, created and dropped.

use sqlx::{Connection, PgConnection};

pub fn base() -> String {
    std::env::var("MESH_DATABASE_URL_BASE").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

async fn admin() -> PgConnection {
    PgConnection::connect(&format!("{}/postgres", base()))
        .await
        .expect("admin connection")
}

/// Creates an empty database named `<prefix>_<random>`; returns its name.
pub async fn create_database(prefix: &str) -> String {
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin().await)
        .await
        .expect("database created");
    name
}

pub async fn drop_database(name: &str) {
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut admin().await)
        .await
        .expect("database dropped");
}
