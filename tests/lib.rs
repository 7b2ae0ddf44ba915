//! What the end-to-end tests share beyond the harness. The fixture is [`Mesh`]
//! (`mesh::harness`): `Mesh::start(&["registry", "checkin"])` gives fresh topics, a fresh
//! database per service, the running binaries, typed clients and tokens, and drops those
//! databases when the test ends. Here: the registrations the tests make, how they wait for
//! the mesh to catch up, and how they look into a service's database.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use mesh::harness::{Infra, MeshBuilder};
use mesh_kit::{auth::Caller, national_id::synthesize, proto_time::to_date};
use mesh_proto::registry as pb;

pub use mesh::harness::{
    HOME_COUNTY, HOME_TOWNSHIP, Mesh, PRISON_A, authorized, county_bureau, home_jurisdiction, jurisdiction,
    notice, officer, prison, report_in_request, supervisee_snapshot, today, township_office,
    whole_seconds_ago,
};

/// The registry alone on `infra`, with `env`, on topics of one partition: its tests check
/// the total order of its events.
pub async fn registry_alone(infra: Infra, env: &[(&str, &str)]) -> Mesh {
    Mesh::builder()
        .infra(infra)
        .partitions(1)
        .env("registry", env)
        .start(&["registry"])
        .await
        .expect("registry starts")
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

/// [`registration`] of person `n` who reported in at `at`: under active supervision at once.
pub fn reported_in(n: u16, at: DateTime<Utc>) -> pb::RegisterSuperviseeRequest {
    pb::RegisterSuperviseeRequest {
        reported_at: Some(mesh_kit::proto_time::to_timestamp(at)),
        ..registration(n)
    }
}

/// The officer of township 620702001 that [`registration`] belongs to.
pub fn home_officer() -> Caller {
    officer("officer-1", "620702001")
}

/// Registers `request` through the registry as [`home_officer`]; returns the supervisee id.
pub async fn register(mesh: &Mesh, request: pb::RegisterSuperviseeRequest) -> String {
    register_as(mesh, request, &mesh.token(&home_officer())).await
}

/// Registers `request` through the registry with `token`; returns the supervisee id.
pub async fn register_as(mesh: &Mesh, request: pb::RegisterSuperviseeRequest, token: &str) -> String {
    mesh.registry()
        .register_supervisee(authorized(request, token))
        .await
        .expect("registered")
        .into_inner()
        .supervisee
        .expect("supervisee")
        .supervisee_id
}

/// Submits the release notice `request` with `token` (a prison's); returns the handover.
pub async fn submit_notice(
    mesh: &Mesh,
    request: mesh_proto::handover::SubmitReleaseNoticeRequest,
    token: &str,
) -> mesh_proto::handover::Handover {
    mesh.handover()
        .submit_release_notice(authorized(request, token))
        .await
        .expect("submitted")
        .into_inner()
        .handover
        .expect("handover")
}

/// Acknowledges receipt of the notice of handover `id` with `token` (a township's).
pub async fn acknowledge(
    mesh: &Mesh,
    id: &str,
    token: &str,
) -> Result<mesh_proto::handover::Handover, tonic::Status> {
    let request = mesh_proto::handover::AcknowledgeNoticeRequest {
        handover_id: id.to_owned(),
    };
    mesh.handover()
        .acknowledge_notice(authorized(request, token))
        .await
        .map(|response| response.into_inner().handover.expect("handover"))
}

/// Runs `binary` with nothing in its environment but `env` (and a gRPC address it never
/// gets to bind), to see how it refuses a bad configuration.
pub async fn run_misconfigured(binary: &str, env: &[(&str, &str)]) -> std::process::Output {
    tokio::process::Command::new(mesh::harness::binary_path(binary).expect("built"))
        .env_clear()
        .env("MESH_GRPC_ADDR", "127.0.0.1:1")
        .envs(env.iter().copied())
        .output()
        .await
        .expect("runs")
}

/// Polls `probe` every 200 ms until it yields a value; fails the test after `timeout`,
/// naming `what` it waited for. The mesh follows events asynchronously, so tests wait for
/// their effects instead of sleeping.
pub async fn eventually<T>(what: &str, timeout: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The result of `sql`, a `SELECT count(*) …`, on the database of `service`.
pub async fn count(mesh: &Mesh, service: &str, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&mesh.pool(service).expect("pool"))
        .await
        .expect("count")
}

/// The tables of the public schema of `service`'s database, and all their rows as text
/// (bytea shows as hex): to search a whole database for a value that must not be there.
pub async fn dump(mesh: &Mesh, service: &str) -> (Vec<String>, String) {
    let pool = mesh.pool(service).expect("pool");
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
            .fetch_all(&pool)
            .await
            .expect("tables");
    let mut dump = String::new();
    for table in &tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM \"{table}\" t"))
            .fetch_all(&pool)
            .await
            .expect("rows");
        dump.push_str(&rows.join("\n"));
    }
    (tables, dump)
}

/// Risk-alert with second-scale policies: every level must check in every 4 s with 1 s of
/// grace; lost-contact thresholds stay far away so only missed check-ins fire; webhooks may
/// be plain http.
pub const FAST_POLICY: &[(&str, &str)] = &[
    ("MESH_POLICY_STRICT_INTERVAL", "4s"),
    ("MESH_POLICY_STRICT_GRACE", "1s"),
    ("MESH_POLICY_STRICT_IN_PERSON_INTERVAL", "off"),
    ("MESH_POLICY_NORMAL_INTERVAL", "4s"),
    ("MESH_POLICY_NORMAL_GRACE", "1s"),
    ("MESH_POLICY_LENIENT_INTERVAL", "4s"),
    ("MESH_POLICY_LENIENT_GRACE", "1s"),
    ("MESH_ABSCONDING_WARNING_AFTER", "1000h"),
    ("MESH_ABSCONDING_REVOCATION_AFTER", "2000h"),
    ("MESH_ALERT_TICK_MS", "100"),
    ("MESH_WEBHOOK_POLL_MS", "100"),
    ("MESH_WEBHOOK_ALLOW_HTTP", "true"),
];

/// The alerts of [`home_jurisdiction`] that `token` may see, newest first.
pub async fn list_alerts(
    alerts: &mut mesh_proto::alert::alert_service_client::AlertServiceClient<tonic::transport::Channel>,
    token: &str,
) -> Vec<mesh_proto::alert::Alert> {
    alerts
        .list_alerts(authorized(
            mesh_proto::alert::ListAlertsRequest {
                jurisdiction: Some(home_jurisdiction()),
                ..Default::default()
            },
            token,
        ))
        .await
        .expect("alerts listed")
        .into_inner()
        .alerts
}

/// The id of the first alert of [`home_jurisdiction`] about `subject_id`, once there is one
/// (within 30 s).
pub async fn alert_about(
    alerts: &mut mesh_proto::alert::alert_service_client::AlertServiceClient<tonic::transport::Channel>,
    subject_id: &str,
    token: &str,
) -> String {
    eventually("the alert", Duration::from_secs(30), async || {
        let alerts = alerts
            .list_alerts(authorized(
                mesh_proto::alert::ListAlertsRequest {
                    jurisdiction: Some(home_jurisdiction()),
                    subject_id: subject_id.to_owned(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .ok()?
            .into_inner()
            .alerts;
        Some(alerts.first()?.alert_id.clone())
    })
    .await
}

/// The delivery attempts of `alert_id`'s notifications (first page), if they could be read.
pub async fn deliveries(
    alerts: &mut mesh_proto::alert::alert_service_client::AlertServiceClient<tonic::transport::Channel>,
    alert_id: &str,
    token: &str,
) -> Option<Vec<mesh_proto::alert::DeliveryAttempt>> {
    let request = mesh_proto::alert::ListDeliveriesRequest {
        alert_id: alert_id.to_owned(),
        page: None,
    };
    let response = alerts.list_deliveries(authorized(request, token)).await.ok()?;
    Some(response.into_inner().deliveries)
}

/// A mesh whose risk-alert runs [`FAST_POLICY`] and then `extra`.
pub fn fast_risk_alert(extra: &[(&'static str, &'static str)]) -> MeshBuilder {
    let mut env = FAST_POLICY.to_vec();
    env.extend_from_slice(extra);
    Mesh::builder().env("risk-alert", &env)
}

/// A live stream of the alert changes of `scope`, opened with `token` (changes only, no
/// current alerts first): what a township's dashboard sees.
pub async fn alert_changes(
    mesh: &Mesh,
    scope: mesh_proto::common::Jurisdiction,
    token: &str,
) -> tonic::Streaming<mesh_proto::alert::StreamAlertsResponse> {
    mesh.risk_alert()
        .stream_alerts(authorized(
            mesh_proto::alert::StreamAlertsRequest {
                jurisdiction: Some(scope),
                include_current: false,
            },
            token,
        ))
        .await
        .expect("stream opens")
        .into_inner()
}

/// An opening at `base_id` in `township`, closing in 30 days.
pub fn opening_request(
    base_id: &str,
    title: &str,
    township: &str,
    county: &str,
) -> mesh_proto::placement::CreateOpeningRequest {
    mesh_proto::placement::CreateOpeningRequest {
        base_id: base_id.into(),
        title: title.into(),
        sector: mesh_proto::placement::Sector::Manufacturing as i32,
        description: "车间操作工，包吃住".into(),
        required_skills: vec!["welding".into()],
        positions_total: 3,
        work_jurisdiction: Some(jurisdiction(township, county)),
        work_location: Some(mesh_proto::common::GeoPoint {
            latitude: 38.935,
            longitude: 100.455,
            accuracy_m: 0.0,
        }),
        closing_date: Some(mesh_kit::proto_time::to_date(today() + chrono::Days::new(30))),
        excluded_offence_categories: vec![],
    }
}
