//! The event backbone heals itself: a service whose Kafka client is stuck rebuilds it and
//! says it is not ready meanwhile; after the broker is killed (SIGKILL) and started again
//! on the same storage, every service consumes again without being restarted, and the
//! outage raises no alert — neither a deadline nor a coverage gap (a person registered
//! while the broker is down is events in flight, not a person lost).

use std::time::Duration;

use chrono::{Days, Utc};
use mesh::harness::{Infra, TansuProcess};
use mesh_e2e::{
    Mesh, PRISON_A, authorized, count, eventually, home_jurisdiction, home_officer, notice, prison, register,
    reported_in, submit_notice, today,
};
use mesh_kit::proto_time::to_date;
use mesh_proto::alert as pb;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Nothing falls due during the test: any alert would be a false one.
const QUIET: &[(&str, &str)] = &[
    ("MESH_POLICY_NORMAL_INTERVAL", "1000h"),
    ("MESH_POLICY_STRICT_INTERVAL", "1000h"),
    ("MESH_POLICY_STRICT_IN_PERSON_INTERVAL", "off"),
    ("MESH_HANDOVER_ACK_PERIOD", "1000h"),
    ("MESH_ALERT_TICK_MS", "100"),
    // The reconciliation runs all through the outage, with a tolerance shorter than it.
    ("MESH_COVERAGE_INTERVAL_MS", "1000"),
    ("MESH_COVERAGE_TOLERANCE_MS", "10000"),
    // Time for the producers to publish again before the consumer's progress is trusted.
    ("MESH_LAG_SETTLE_MS", "8000"),
];

/// Waits until `sql` (a count on `service`'s database) is 1.
async fn consumed(mesh: &Mesh, service: &str, sql: &str) {
    eventually(
        &format!("{service} to consume again"),
        Duration::from_secs(30),
        async || (count(mesh, service, sql).await == 1).then_some(()),
    )
    .await;
}

#[tokio::test]
async fn every_service_consumes_again_after_a_broker_crash_without_being_restarted() {
    let dir = std::env::temp_dir().join(format!("mesh-e2e-tansu-{}", uuid::Uuid::new_v4().simple()));
    let mut broker = TansuProcess::start(&dir).await.expect("private broker starts");
    let infra = Infra {
        brokers: broker.brokers(),
        ..Infra::from_env()
    };
    let fast_retry = [("MESH_KAFKA_MESSAGE_TIMEOUT_MS", "3000")];
    let mesh = Mesh::builder()
        .infra(infra)
        .env("risk-alert", QUIET)
        .env("registry", &fast_retry)
        .env("handover", &fast_retry)
        .start(&["registry", "checkin", "handover", "placement", "risk-alert"])
        .await
        .expect("mesh");
    // Every consumer has joined and applied something before the crash.
    let before = register(&mesh, reported_in(301, Utc::now())).await;
    let known = |id: &str| format!("SELECT count(*) FROM supervisees WHERE id = '{id}'");
    consumed(&mesh, "checkin", &known(&before)).await;

    broker.kill().await.expect("broker killed");
    let during = register(&mesh, reported_in(303, Utc::now())).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    broker.restart().await.expect("broker back");
    let back = tokio::time::Instant::now();

    // New events after the restart reach every consumer: registry → checkin, placement,
    // risk-alert; handover → risk-alert.
    let mut person = reported_in(302, Utc::now());
    person.needs_employment = true;
    let id = register(&mesh, person).await;
    let mut release = notice(302);
    release.expected_release_date = Some(to_date(today() + Days::new(20)));
    let handover = submit_notice(&mesh, release, &mesh.token(&prison("clerk-1", PRISON_A)))
        .await
        .handover_id;
    consumed(&mesh, "checkin", &known(&id)).await;
    consumed(
        &mesh,
        "placement",
        &format!("SELECT count(*) FROM supervisee_versions WHERE supervisee_id = '{id}'"),
    )
    .await;
    consumed(
        &mesh,
        "risk-alert",
        &format!("SELECT count(*) FROM supervisees WHERE supervisee_id = '{id}'"),
    )
    .await;
    consumed(
        &mesh,
        "risk-alert",
        &format!("SELECT count(*) FROM supervisees WHERE supervisee_id = '{during}'"),
    )
    .await;
    consumed(
        &mesh,
        "risk-alert",
        &format!("SELECT count(*) FROM handovers WHERE handover_id = '{handover}'"),
    )
    .await;
    assert!(
        back.elapsed() < Duration::from_secs(45),
        "consumers back in {:?}",
        back.elapsed()
    );

    let alerts = mesh
        .risk_alert()
        .list_alerts(authorized(
            pb::ListAlertsRequest {
                jurisdiction: Some(home_jurisdiction()),
                ..Default::default()
            },
            &mesh.token(&home_officer()),
        ))
        .await
        .expect("alerts")
        .into_inner()
        .alerts;
    assert!(alerts.is_empty(), "the outage raised alerts: {alerts:#?}");
    drop(mesh);
    broker.kill().await.expect("broker stopped");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_service_with_a_stuck_consumer_rebuilds_it_and_is_not_ready_meanwhile() {
    let mesh = Mesh::builder()
        .env(
            "checkin",
            &[
                // Its consumer's first client stops fetching after one record.
                ("MESH_FAULT_STICK_CONSUMER_AFTER", "1"),
                ("MESH_CONSUMER_WATCHDOG_SECS", "1"),
            ],
        )
        .start(&["registry", "checkin"])
        .await
        .expect("mesh");
    let known = |id: &str| format!("SELECT count(*) FROM supervisees WHERE id = '{id}'");
    let first = register(&mesh, reported_in(311, Utc::now())).await;
    consumed(&mesh, "checkin", &known(&first)).await;

    // Every status the health service reports from now on.
    let mut health = HealthClient::new(mesh.channel("checkin", 0))
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health watch")
        .into_inner();
    let statuses = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(Some(update)) = health.message().await {
            seen.push(update.status());
            if seen.ends_with(&[ServingStatus::NotServing, ServingStatus::Serving]) {
                break;
            }
        }
        seen
    });

    let second = register(&mesh, reported_in(312, Utc::now())).await;
    consumed(&mesh, "checkin", &known(&second)).await;
    let seen = tokio::time::timeout(Duration::from_secs(30), statuses)
        .await
        .expect("ready again")
        .expect("health watch");
    assert_eq!(
        seen.first(),
        Some(&ServingStatus::Serving),
        "ready before: {seen:?}"
    );
    assert!(
        seen.ends_with(&[ServingStatus::NotServing, ServingStatus::Serving]),
        "not ready while stuck, ready once rebuilt: {seen:?}"
    );
}
