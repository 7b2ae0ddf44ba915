//! A private Tansu broker for tests that kill and restart the broker without disturbing the
//! shared one. It stores its log where `scripts/infra` would (`MESH_TANSU_STORAGE`): by
//! default in a fresh database of the broker's own PostgreSQL cluster
//! (`MESH_TANSU_DATABASE_URL_BASE`, default port 5433, started by `scripts/infra up`),
//! dropped with it; with `sqlite`, in a file under the test's directory. Either way a
//! restart keeps every record.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
use sqlx::Connection;
use tokio::process::{Child, Command};

use super::{Infra, drop_databases_now};

/// The tables of Tansu's PostgreSQL storage engine, as `scripts/infra` creates them.
const POSTGRES_SCHEMA: &str = include_str!("../../../../scripts/tansu-postgres.sql");

enum Storage {
    Sqlite,
    Postgres { infra: Infra, database: String },
}

impl Storage {
    async fn create() -> anyhow::Result<Self> {
        match std::env::var("MESH_TANSU_STORAGE").as_deref() {
            Ok("sqlite") => Ok(Self::Sqlite),
            Ok("postgres") | Err(_) => {
                // Not the services' cluster: the engine's fetch waits for every older
                // transaction of the cluster to end (docs/tansu.md).
                let infra = Infra {
                    database_url_base: std::env::var("MESH_TANSU_DATABASE_URL_BASE")
                        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5433".to_owned()),
                    ..Infra::from_env()
                };
                let database = infra.fresh_database("tansu").await?;
                if let Err(error) = create_tables(&infra, &database).await {
                    let _ = infra.drop_database(&database).await;
                    return Err(error);
                }
                Ok(Self::Postgres { infra, database })
            }
            Ok(other) => bail!("MESH_TANSU_STORAGE must be postgres or sqlite, not {other:?}"),
        }
    }

    /// The broker's `--storage-engine`. PostgreSQL through `localhost`: Tansu's client tries
    /// TLS first and the local server's certificate names localhost, not 127.0.0.1.
    fn url(&self) -> String {
        match self {
            Self::Sqlite => "sqlite://tansu.db".to_owned(),
            Self::Postgres { infra, database } => {
                infra.database_url(database).replace("@127.0.0.1:", "@localhost:")
            }
        }
    }
}

async fn create_tables(infra: &Infra, database: &str) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect(&infra.database_url(database)).await?;
    sqlx::raw_sql(POSTGRES_SCHEMA)
        .execute(&mut conn)
        .await
        .context("creating Tansu's tables")?;
    Ok(())
}

pub struct TansuProcess {
    dir: PathBuf,
    port: u16,
    storage: Storage,
    child: Option<Child>,
}

impl TansuProcess {
    /// Starts a broker on a free loopback port, with its log and files in `dir`.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        // The broker is another program, so the port must be chosen before it binds; the
        // window between releasing it here and Tansu binding it is tiny on loopback.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        std::fs::create_dir_all(dir)?;
        // Tansu reads `.env` from its working directory and its parents; pin an empty one.
        std::fs::write(dir.join(".env"), "")?;
        let mut broker = Self {
            dir: dir.to_owned(),
            port,
            storage: Storage::create().await?,
            child: None,
        };
        broker.restart().await?;
        Ok(broker)
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn binary() -> PathBuf {
        let home_bin = std::env::var("HOME").map(|home| PathBuf::from(home).join(".cargo/bin/tansu"));
        match home_bin {
            Ok(path) if path.is_file() => path,
            _ => PathBuf::from("tansu"),
        }
    }

    /// (Re)starts the broker on the same port and storage; waits until it accepts connections.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))?;
        let child = Command::new(Self::binary())
            .current_dir(&self.dir)
            .args([
                "broker",
                "--kafka-cluster-id=test",
                &format!("--storage-engine={}", self.storage.url()),
                &format!("--kafka-listener-url={url}"),
                &format!("--kafka-advertised-listener-url={url}"),
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting tansu (run scripts/infra up to install it)")?;
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("tansu did not listen on port {} within 10 s", self.port)
    }

    /// Kills the broker abruptly (SIGKILL), as a crash or outage would.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }
}

impl Drop for TansuProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // `kill_on_drop` would too, but only after the database below is gone
            let _ = child.start_kill();
        }
        if let Storage::Postgres { infra, database } = &self.storage {
            drop_databases_now(infra, vec![database.clone()]);
        }
    }
}
