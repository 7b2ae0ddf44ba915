//! Shared fixtures of the end-to-end tests: a [`Mesh`] of real service processes sharing
//! fresh topics, each on a fresh database, with tokens for callers of any jurisdiction.

use std::{path::PathBuf, time::Duration};

use chrono::NaiveDate;
use chrono::{Days, Utc};
use mesh::harness::{EventTap, Infra, ServiceProcess};
use mesh_kit::{auth::Caller, national_id::synthesize, proto_time::to_date};
use mesh_kit::{jurisdiction::Directory, proto_time::to_timestamp};
use mesh_proto::{
    handover as handover_pb,
    registry::{self as pb, registry_service_client::RegistryServiceClient},
};
use tonic::transport::Channel;

pub use mesh::harness::{Mesh, authorized, county_bureau, officer, prison, township_office};

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

/// The prison of the handover tests' notices.
pub const PRISON_A: &str = "zhangye-prison";
/// 甘州区东街街道, where the tests' people live.
pub const HOME_TOWNSHIP: &str = "620702001";
pub const HOME_COUNTY: &str = "620702";

/// Today in the office time zone (the service decides "in the past" the same way).
pub fn today() -> NaiveDate {
    Utc::now().with_timezone(&Directory::get().time_zone).date_naive()
}

pub fn whole_seconds_ago(seconds: i64) -> chrono::DateTime<Utc> {
    chrono::DateTime::from_timestamp(Utc::now().timestamp() - seconds, 0).unwrap_or_default()
}

/// A valid parole release notice of prison A for person number `n`, to township 620702001.
pub fn notice(n: u16) -> handover_pb::SubmitReleaseNoticeRequest {
    let birth = NaiveDate::from_ymd_opt(
        1970 + i32::from(n % 40),
        1 + u32::from(n % 12),
        1 + u32::from(n % 28),
    )
    .unwrap_or_default();
    handover_pb::SubmitReleaseNoticeRequest {
        prison_reference: format!("ZY-2026-{n:04}"),
        prison_id: PRISON_A.into(),
        person_name: format!("刑释人员{n}"),
        national_id: synthesize("620702", birth, n),
        date_of_birth: Some(to_date(birth)),
        category: handover_pb::ReleaseCategory::Parole as i32,
        expected_release_date: Some(to_date(today() + Days::new(30))),
        destination: Some(mesh_proto::common::Jurisdiction {
            township_code: HOME_TOWNSHIP.into(),
            county_code: HOME_COUNTY.into(),
        }),
        key_assistance_target: true,
        risk_notes: format!("风险提示{n}: 有酗酒史, 家属联系电话见档案"),
        offence_category: mesh_proto::common::OffenceCategory::Property as i32,
    }
}

pub fn report_in_request(
    id: &str,
    reported_in_at: chrono::DateTime<Utc>,
) -> handover_pb::RecordReportInRequest {
    handover_pb::RecordReportInRequest {
        handover_id: id.to_owned(),
        reported_in_at: Some(to_timestamp(reported_in_at)),
        supervision_level: pb::SupervisionLevel::Strict as i32,
        officer_id: "officer-1".into(),
        term_start: Some(to_date(today())),
        term_end: Some(to_date(today() + Days::new(365))),
        phone: "13912345678".into(),
        address: "甘州区东街 1 号".into(),
        needs_employment: true,
    }
}
