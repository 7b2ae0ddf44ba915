//! Starts and drives real mesh processes: creates databases, spawns service binaries with
//! their environment (gRPC on port 0, address read back from the log), waits for health,
//! mints tokens, creates Kafka topics and reads events back. Used by the demo and the
//! end-to-end tests so both exercise the same binaries the same way.

mod events;
mod process;
mod requests;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use base64::Engine;
use chrono::Utc;
use mesh_kit::{
    auth::{Caller, TokenKeys},
    kafka::Topics,
};
use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    types::RDKafkaErrorCode,
};
use secrecy::SecretString;

pub use self::{
    events::{EventTap, ReceivedEvent, producer, publish_event},
    process::{ServiceProcess, TansuProcess, binary_path},
    requests::{
        HOME_COUNTY, HOME_TOWNSHIP, PRISON_A, authorized, check_in, county_bureau, new_checkin, notice,
        officer, prison, record_checkin, report_in_request, today, township_office, whole_seconds_ago,
    },
};

/// Where the local infrastructure is (from the environment `scripts/infra` sets up).
#[derive(Debug, Clone)]
pub struct Infra {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// PostgreSQL server URL without a database name.
    pub database_url_base: String,
}

impl Infra {
    pub fn from_env() -> Self {
        Self {
            brokers: std::env::var("MESH_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned()),
            database_url_base: std::env::var("MESH_DATABASE_URL_BASE")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned()),
        }
    }

    pub fn database_url(&self, database: &str) -> String {
        format!("{}/{database}", self.database_url_base.trim_end_matches('/'))
    }

    /// Creates a new, uniquely named database (one per test).
    pub async fn fresh_database(&self, prefix: &str) -> anyhow::Result<String> {
        let name = format!("test_{prefix}_{}", uuid::Uuid::new_v4().simple());
        self.ensure_database(&name).await?;
        Ok(name)
    }

    /// Creates `database` unless it exists.
    pub async fn ensure_database(&self, database: &str) -> anyhow::Result<()> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.database_url("postgres"))
            .await
            .context("connecting to PostgreSQL (is it running? see scripts/infra)")?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&mut conn)
            .await?;
        if !exists {
            // Identifiers cannot be bound; callers pass generated names only.
            sqlx::query(&format!("CREATE DATABASE \"{}\"", database.replace('"', "")))
                .execute(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// Creates a topic; an existing topic is fine. (Never delete topics: Tansu 0.6 deletes
    /// them all.)
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()?;
        let results = admin
            .create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => bail!("creating topic {name}: {code}"),
            }
        }
        Ok(())
    }
}

/// Infrastructure, secrets and topics shared by the services of one test or demo run.
pub struct Mesh {
    pub infra: Infra,
    pub secrets: Secrets,
    pub topics: Topics,
    databases: HashMap<String, String>,
    log_dir: PathBuf,
}

impl Mesh {
    /// Fresh topics (and their dead-letter topics) on the shared broker.
    pub async fn new() -> anyhow::Result<Self> {
        Self::on(Infra::from_env(), 2, &std::env::temp_dir().join("mesh-e2e-logs")).await
    }

    /// Fresh topics of `partitions` partitions each on `infra`'s broker; service logs go to
    /// `log_dir`.
    pub async fn on(infra: Infra, partitions: i32, log_dir: &Path) -> anyhow::Result<Self> {
        Self::with_topics(infra, partitions, log_dir, Topics::unique("test")).await
    }

    /// Like [`Mesh::on`] with the given topic names.
    pub async fn with_topics(
        infra: Infra,
        partitions: i32,
        log_dir: &Path,
        topics: Topics,
    ) -> anyhow::Result<Self> {
        for topic in topics.all() {
            infra.create_topic(topic, partitions).await?;
            infra
                .create_topic(&mesh_kit::kafka::dead_letter_topic(topic), 1)
                .await?;
        }
        Ok(Self {
            infra,
            secrets: Secrets::random(),
            topics,
            databases: HashMap::new(),
            log_dir: log_dir.to_owned(),
        })
    }

    /// Uses `database` for `service` instead of a fresh one.
    pub fn use_database(&mut self, service: &str, database: &str) {
        self.databases.insert(service.to_owned(), database.to_owned());
    }

    /// The database of `service` in this mesh (created on first use).
    pub async fn database(&mut self, service: &str) -> anyhow::Result<String> {
        if let Some(name) = self.databases.get(service) {
            return Ok(name.clone());
        }
        let name = self.infra.fresh_database(&service.replace('-', "_")).await?;
        self.databases.insert(service.to_owned(), name.clone());
        Ok(name)
    }

    pub async fn pool(&mut self, service: &str) -> anyhow::Result<sqlx::PgPool> {
        let database = self.database(service).await?;
        Ok(sqlx::PgPool::connect(&self.infra.database_url(&database)).await?)
    }

    /// Starts the `binary` of `service` with the mesh's environment plus `extra_env`. Several
    /// replicas of one service share its database.
    pub async fn spawn(
        &mut self,
        service: &str,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<ServiceProcess> {
        let database = self.database(service).await?;
        let mut env = service_env(&self.infra, &self.secrets, &database);
        for (key, value) in self.topics.env() {
            env.insert(key.to_owned(), value.to_owned());
        }
        // Replicas of one service in this mesh share a consumer group; meshes running side by
        // side on one broker must not, or they would rebalance each other's partitions.
        env.insert(
            "MESH_CONSUMER_GROUP".to_owned(),
            format!("{service}-{}", self.topics.registry),
        );
        for (key, value) in extra_env {
            env.insert((*key).to_owned(), (*value).to_owned());
        }
        ServiceProcess::spawn(service, &env, &self.log_dir).await
    }

    pub fn token(&self, caller: &Caller) -> String {
        self.secrets.token(caller)
    }

    pub fn tap(&self, topic: &str) -> anyhow::Result<EventTap> {
        EventTap::from_beginning(&self.infra, topic)
    }
}

/// Random keys and secrets for one run of the mesh (demo or test).
#[derive(Debug, Clone)]
pub struct Secrets {
    pub jwt_secret: String,
    pub field_encryption_key: String,
    pub blind_index_key: String,
}

impl Secrets {
    pub fn random() -> Self {
        let key = || base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        Self {
            jwt_secret: base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 48]>()),
            field_encryption_key: key(),
            blind_index_key: key(),
        }
    }

    pub fn token_keys(&self) -> TokenKeys {
        TokenKeys::new(&SecretString::from(self.jwt_secret.clone()))
    }

    /// A token for `caller`, valid for a day.
    pub fn token(&self, caller: &Caller) -> String {
        let now = Utc::now();
        self.token_keys()
            .mint(caller, now, now + chrono::Duration::hours(24))
    }
}

/// The environment a service needs to run against `infra` with `secrets` and `database`.
pub fn service_env(infra: &Infra, secrets: &Secrets, database: &str) -> HashMap<String, String> {
    HashMap::from([
        ("MESH_DATABASE_URL".to_owned(), infra.database_url(database)),
        ("MESH_KAFKA_BROKERS".to_owned(), infra.brokers.clone()),
        ("MESH_JWT_SECRET".to_owned(), secrets.jwt_secret.clone()),
        (
            "MESH_FIELD_ENCRYPTION_KEY".to_owned(),
            secrets.field_encryption_key.clone(),
        ),
        ("MESH_BLIND_INDEX_KEY".to_owned(), secrets.blind_index_key.clone()),
        ("MESH_OUTBOX_POLL_MS".to_owned(), "100".to_owned()),
        // Tansu cannot take idempotent producers across a broker restart (see kit::kafka).
        ("MESH_KAFKA_IDEMPOTENT_PRODUCER".to_owned(), "false".to_owned()),
        (
            "RUST_LOG".to_owned(),
            std::env::var("MESH_SERVICE_LOG").unwrap_or_else(|_| "info".to_owned()),
        ),
    ])
}
