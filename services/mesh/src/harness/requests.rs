//! Callers and requests the demo, the benchmark and the tests share: the people, offices and
//! prisons of the home township, valid release notices, report-ins and check-ins.

use std::time::Duration;

use chrono::Utc;
use mesh_kit::auth::{Caller, Role};
use mesh_proto::{
    checkin::{self as checkin_pb, checkin_service_client::CheckinServiceClient},
    common::{GeoPoint, Jurisdiction},
    registry as registry_pb,
};
use tonic::transport::Channel;

/// Callers for demos and tests.
pub fn officer(subject: &str, township: &str) -> Caller {
    let county = township.get(..6).map(str::to_owned);
    Caller {
        subject: subject.to_owned(),
        role: Role::Officer,
        township: Some(township.to_owned()),
        county,
        prison: None,
    }
}

/// A township judicial office (司法所) as an organisation.
pub fn township_office(township: &str) -> Caller {
    Caller {
        subject: format!("office-{township}"),
        role: Role::TownshipOffice,
        township: Some(township.to_owned()),
        county: township.get(..6).map(str::to_owned),
        prison: None,
    }
}

pub fn county_bureau(subject: &str, county: &str) -> Caller {
    Caller {
        subject: subject.to_owned(),
        role: Role::CountyBureau,
        township: None,
        county: Some(county.to_owned()),
        prison: None,
    }
}

pub fn prison(subject: &str, prison_id: &str) -> Caller {
    Caller {
        subject: subject.to_owned(),
        role: Role::Prison,
        township: None,
        county: None,
        prison: Some(prison_id.to_owned()),
    }
}

pub use mesh_kit::auth::authorized;

/// The prison of the demo's and tests' release notices.
pub const PRISON_A: &str = "zhangye-prison";
/// 甘州区东街街道, where the demo's and tests' people live.
pub const HOME_TOWNSHIP: &str = "620702001";
pub const HOME_COUNTY: &str = "620702";

/// Today in the office time zone (the service decides "in the past" the same way).
pub fn today() -> chrono::NaiveDate {
    chrono::Utc::now()
        .with_timezone(&mesh_kit::jurisdiction::Directory::get().time_zone)
        .date_naive()
}

pub fn whole_seconds_ago(seconds: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() - seconds, 0).unwrap_or_default()
}

pub fn jurisdiction(township: &str, county: &str) -> Jurisdiction {
    Jurisdiction {
        township_code: township.into(),
        county_code: county.into(),
    }
}

/// The home township and its county.
pub fn home_jurisdiction() -> Jurisdiction {
    jurisdiction(HOME_TOWNSHIP, HOME_COUNTY)
}

/// Supervisee `id` at `version` as the registry's events carry it: on probation in the home
/// township for a year, under normal supervision, reported in now and active. For events
/// published directly, in place of the registry's.
pub fn supervisee_snapshot(id: &str, version: i64) -> registry_pb::SuperviseeSnapshot {
    registry_pb::SuperviseeSnapshot {
        supervisee_id: id.to_owned(),
        name: "测试人员".into(),
        category: registry_pb::Category::Probation as i32,
        term_start: Some(mesh_kit::proto_time::to_date(today())),
        term_end: Some(mesh_kit::proto_time::to_date(today() + chrono::Days::new(365))),
        level: registry_pb::SupervisionLevel::Normal as i32,
        jurisdiction: Some(home_jurisdiction()),
        officer_id: "officer-1".into(),
        status: registry_pb::SuperviseeStatus::Active as i32,
        version,
        reported_at: Some(mesh_kit::proto_time::to_timestamp(Utc::now())),
        needs_employment: false,
        handover_id: String::new(),
    }
}

/// A valid parole release notice of prison A for person number `n`, to township 620702001.
pub fn notice(n: u16) -> mesh_proto::handover::SubmitReleaseNoticeRequest {
    let birth = chrono::NaiveDate::from_ymd_opt(
        1970 + i32::from(n % 40),
        1 + u32::from(n % 12),
        1 + u32::from(n % 28),
    )
    .unwrap_or_default();
    mesh_proto::handover::SubmitReleaseNoticeRequest {
        prison_reference: format!("ZY-2026-{n:04}"),
        prison_id: PRISON_A.into(),
        person_name: format!("刑释人员{n}"),
        national_id: mesh_kit::national_id::synthesize("620702", birth, n),
        date_of_birth: Some(mesh_kit::proto_time::to_date(birth)),
        category: mesh_proto::handover::ReleaseCategory::Parole as i32,
        expected_release_date: Some(mesh_kit::proto_time::to_date(today() + chrono::Days::new(30))),
        destination: Some(home_jurisdiction()),
        key_assistance_target: true,
        risk_notes: format!("风险提示{n}: 有酗酒史, 家属联系电话见档案"),
        offence_category: mesh_proto::common::OffenceCategory::Property as i32,
    }
}

pub fn report_in_request(
    id: &str,
    reported_in_at: chrono::DateTime<chrono::Utc>,
) -> mesh_proto::handover::RecordReportInRequest {
    mesh_proto::handover::RecordReportInRequest {
        handover_id: id.to_owned(),
        reported_in_at: Some(mesh_kit::proto_time::to_timestamp(reported_in_at)),
        supervision_level: mesh_proto::registry::SupervisionLevel::Strict as i32,
        officer_id: "officer-1".into(),
        term_start: Some(mesh_kit::proto_time::to_date(today())),
        term_end: Some(mesh_kit::proto_time::to_date(today() + chrono::Days::new(365))),
        phone: "13912345678".into(),
        address: "甘州区东街 1 号".into(),
        needs_employment: true,
    }
}

/// A face-verified app check-in near the Ganzhou district seat (inside the default
/// permitted area) at `at`.
pub fn new_checkin(supervisee_id: &str, at: chrono::DateTime<Utc>) -> checkin_pb::NewCheckin {
    checkin_pb::NewCheckin {
        checkin_id: uuid::Uuid::new_v4().to_string(),
        supervisee_id: supervisee_id.to_owned(),
        method: checkin_pb::CheckinMethod::AppSelfCheckin as i32,
        recording_officer_id: String::new(),
        device_time: Some(mesh_kit::proto_time::to_timestamp(at)),
        position: Some(GeoPoint {
            latitude: 38.931,
            longitude: 100.452,
            accuracy_m: 12.0,
        }),
        identity_verification: Some(checkin_pb::IdentityVerification {
            verification: Some(checkin_pb::identity_verification::Verification::FaceMatch(
                checkin_pb::FaceMatch { score: 0.96 },
            )),
        }),
        captured_offline: false,
        note: String::new(),
    }
}

/// Records a check-in made now, retrying while the check-in service has not yet learnt of
/// the supervisee from the registry's events (it follows them asynchronously).
pub async fn check_in(
    client: &mut CheckinServiceClient<Channel>,
    token: &str,
    supervisee_id: &str,
) -> anyhow::Result<String> {
    record_checkin(client, token, || new_checkin(supervisee_id, chrono::Utc::now())).await
}

/// Records the check-in `make` builds (a fresh one per attempt), retrying while the
/// check-in service does not know the supervisee yet. Returns the recorded check-in id.
pub async fn record_checkin(
    client: &mut CheckinServiceClient<Channel>,
    token: &str,
    make: impl Fn() -> checkin_pb::NewCheckin,
) -> anyhow::Result<String> {
    for _ in 0..100 {
        let checkin = make();
        let id = checkin.checkin_id.clone();
        let request = checkin_pb::RecordCheckinRequest {
            checkin: Some(checkin),
        };
        match client.record_checkin(authorized(request, token)).await {
            Ok(_) => return Ok(id),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => return Err(status.into()),
        }
    }
    anyhow::bail!("the check-in service never accepted the check-in (supervisee unknown?)")
}
