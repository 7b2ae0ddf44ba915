//! Shared fixtures of the end-to-end tests: a [`Mesh`] of real service processes sharing
//! fresh topics, each on a fresh database, with tokens for callers of any jurisdiction.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use chrono::NaiveDate;
use mesh::harness::{EventTap, Infra, Secrets, ServiceProcess, service_env};
use mesh_kit::{auth::Caller, kafka::Topics, national_id::synthesize, proto_time::to_date};
use mesh_proto::registry::{self as pb, registry_service_client::RegistryServiceClient};
use tonic::transport::Channel;

pub mod webhook_receiver;

pub use mesh::harness::{authorized, county_bureau, officer, prison};

/// Where test logs go (kept for inspection after a failure).
pub fn log_dir() -> PathBuf {
    std::env::temp_dir().join("mesh-e2e-logs")
}

/// Infrastructure, secrets and topics shared by the services of one test.
pub struct Mesh {
    pub infra: Infra,
    pub secrets: Secrets,
    pub topics: Topics,
    databases: HashMap<String, String>,
}

impl Mesh {
    /// Fresh topics (and their dead-letter topics) on the shared broker.
    pub async fn new() -> anyhow::Result<Self> {
        Self::on(Infra::from_env(), 2).await
    }

    /// Fresh topics of `partitions` partitions each on `infra`'s broker.
    pub async fn on(infra: Infra, partitions: i32) -> anyhow::Result<Self> {
        let topics = Topics::unique("test");
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
        })
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
        for (key, value) in extra_env {
            env.insert((*key).to_owned(), (*value).to_owned());
        }
        ServiceProcess::spawn(service, &env, &log_dir()).await
    }

    pub fn token(&self, caller: &Caller) -> String {
        self.secrets.token(caller)
    }

    pub fn tap(&self, topic: &str) -> anyhow::Result<EventTap> {
        EventTap::from_beginning(&self.infra, topic)
    }
}

/// A registry process in its own mesh.
pub struct RegistryFixture {
    pub mesh: Mesh,
    pub topic: String,
    pub process: ServiceProcess,
    pub client: RegistryServiceClient<Channel>,
}

impl RegistryFixture {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Infra::from_env(), &[]).await
    }

    /// Starts against `infra` with extra environment variables.
    pub async fn start_with(infra: Infra, extra_env: &[(&str, &str)]) -> anyhow::Result<Self> {
        // One partition: the registry tests check the total order of events.
        let mut mesh = Mesh::on(infra, 1).await?;
        let process = mesh.spawn("registry", extra_env).await?;
        let client = RegistryServiceClient::new(process.channel().await?);
        let topic = mesh.topics.registry.clone();
        Ok(Self {
            mesh,
            topic,
            process,
            client,
        })
    }

    pub fn token(&self, caller: &Caller) -> String {
        self.mesh.token(caller)
    }

    pub fn tap(&self) -> anyhow::Result<EventTap> {
        self.mesh.tap(&self.topic)
    }

    pub async fn pool(&mut self) -> anyhow::Result<sqlx::PgPool> {
        self.mesh.pool("registry").await
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        let status = self.process.stop(Duration::from_secs(20)).await?;
        anyhow::ensure!(status.success(), "registry exited with {status}");
        Ok(())
    }
}

/// A valid registration in township `620702001` (Ganzhou, 东街街道) for person number `n`.
pub fn registration(n: u16) -> pb::RegisterSuperviseeRequest {
    let birth = NaiveDate::from_ymd_opt(
        1970 + i32::from(n % 40),
        1 + u32::from(n % 12),
        1 + u32::from(n % 28),
    )
    .unwrap_or_default();
    pb::RegisterSuperviseeRequest {
        name: format!("测试人员{n}"),
        national_id: synthesize("620702", birth, n),
        category: pb::Category::Probation as i32,
        term_start: NaiveDate::from_ymd_opt(2026, 10, 1).map(to_date),
        term_end: NaiveDate::from_ymd_opt(2027, 9, 30).map(to_date),
        level: pb::SupervisionLevel::Normal as i32,
        township_code: "620702001".into(),
        county_code: "620702".into(),
        officer_id: "officer-1".into(),
        phone: "13912345678".into(),
        address: "甘州区东街 1 号".into(),
        reported_at: None,
        needs_employment: false,
    }
}

/// The officer of township 620702001 that [`registration`] belongs to.
pub fn home_officer() -> Caller {
    officer("officer-1", "620702001")
}
