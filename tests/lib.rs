//! Shared fixtures of the end-to-end tests: a [`Mesh`] of real service processes sharing
//! fresh topics, each on a fresh database, with tokens for callers of any jurisdiction.

use std::{path::PathBuf, time::Duration};

use chrono::NaiveDate;
use mesh::harness::{EventTap, Infra, ServiceProcess};
use mesh_kit::{auth::Caller, national_id::synthesize, proto_time::to_date};
use mesh_proto::registry::{self as pb, registry_service_client::RegistryServiceClient};
use tonic::transport::Channel;

pub use mesh::harness::{
    HOME_COUNTY, HOME_TOWNSHIP, Mesh, PRISON_A, authorized, county_bureau, notice, officer, prison,
    report_in_request, today, township_office, whole_seconds_ago,
};

/// Where test logs go (kept for inspection after a failure).
pub fn log_dir() -> PathBuf {
    std::env::temp_dir().join("mesh-e2e-logs")
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
        let mut mesh = Mesh::on(infra, 1, &log_dir()).await?;
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
