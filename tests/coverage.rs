//! The coverage invariant, checked continuously: risk-alert's reconciliation compares the
//! registry's people under supervision and the handover service's handovers awaiting
//! report-in with its own watch list. These tests break the watch list behind its back, in
//! its database, and expect a coverage-gap alert naming the township and the broken track,
//! and the watch restored.

use std::time::Duration;

use chrono::{Days, Utc};
use mesh_e2e::{
    HOME_COUNTY, HOME_TOWNSHIP, Mesh, PRISON_A, authorized, count, county_bureau, eventually, notice, prison,
    register, reported_in, submit_notice, today,
};
use mesh_kit::proto_time::to_date;
use mesh_proto::{alert as pb, common};

/// Nothing falls due during a test; the reconciliation runs twice a second and treats a
/// divergence older than a second as more than events in flight.
const POLICY: &[(&str, &str)] = &[
    ("MESH_POLICY_NORMAL_INTERVAL", "1000h"),
    ("MESH_POLICY_STRICT_INTERVAL", "1000h"),
    ("MESH_POLICY_STRICT_IN_PERSON_INTERVAL", "off"),
    ("MESH_HANDOVER_ACK_PERIOD", "1000h"),
    ("MESH_ALERT_TICK_MS", "100"),
    ("MESH_COVERAGE_INTERVAL_MS", "500"),
    ("MESH_COVERAGE_TOLERANCE_MS", "1000"),
];

async fn start(services: &[&str]) -> Mesh {
    Mesh::builder()
        .env("risk-alert", POLICY)
        .start(services)
        .await
        .expect("mesh")
}

/// The coverage-gap alerts the county bureau sees about `subject_id`.
async fn gap_alerts(mesh: &Mesh, subject_id: &str) -> Vec<pb::Alert> {
    mesh.risk_alert()
        .list_alerts(authorized(
            pb::ListAlertsRequest {
                jurisdiction: Some(common::Jurisdiction {
                    township_code: String::new(),
                    county_code: HOME_COUNTY.into(),
                }),
                subject_id: subject_id.to_owned(),
                kinds: vec![pb::AlertKind::CoverageGap as i32],
                ..Default::default()
            },
            &mesh.token(&county_bureau("bureau-1", HOME_COUNTY)),
        ))
        .await
        .expect("alerts")
        .into_inner()
        .alerts
}

fn fact(alert: &pb::Alert, key: &str) -> String {
    alert
        .evidence
        .as_ref()
        .and_then(|evidence| evidence.facts.iter().find(|fact| fact.key == key))
        .map(|fact| fact.value.clone())
        .unwrap_or_default()
}

async fn deadlines(mesh: &Mesh, subject_id: &str) -> i64 {
    count(
        mesh,
        "risk-alert",
        &format!("SELECT count(*) FROM deadlines WHERE subject_id = '{subject_id}'"),
    )
    .await
}

async fn wait_for_deadlines(mesh: &Mesh, subject_id: &str, expected: i64) {
    eventually("the deadlines", Duration::from_secs(20), async || {
        (deadlines(mesh, subject_id).await == expected).then_some(())
    })
    .await;
}

async fn execute(mesh: &Mesh, sql: &str) {
    sqlx::query(sql)
        .execute(&mesh.pool("risk-alert").expect("pool"))
        .await
        .expect("corrupted");
}

#[tokio::test]
async fn deadlines_deleted_behind_the_services_back_raise_a_coverage_gap_and_come_back() {
    let mesh = start(&["registry", "risk-alert"]).await;
    let id = register(&mesh, reported_in(81, Utc::now())).await;
    // A normal-level person: check-in and the two absconding thresholds.
    wait_for_deadlines(&mesh, &id, 3).await;
    assert!(gap_alerts(&mesh, &id).await.is_empty(), "no gap while watched");

    execute(
        &mesh,
        &format!("DELETE FROM deadlines WHERE subject_id = '{id}' AND track = 'checkin'"),
    )
    .await;
    let alert = eventually("the coverage-gap alert", Duration::from_secs(20), async || {
        gap_alerts(&mesh, &id).await.into_iter().next()
    })
    .await;
    assert_eq!(alert.status(), pb::AlertStatus::Open);
    assert_eq!(
        alert.jurisdiction.as_ref().map(|j| j.township_code.as_str()),
        Some(HOME_TOWNSHIP)
    );
    assert_eq!(fact(&alert, "broken_tracks"), "checkin");
    assert_eq!(alert.escalation_target(), pb::EscalationTarget::CountyBureau);
    wait_for_deadlines(&mesh, &id, 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(gap_alerts(&mesh, &id).await.len(), 1, "one alert for one gap");
}

#[tokio::test]
async fn a_person_the_watch_list_lost_entirely_is_found_and_watched_again() {
    let mesh = start(&["registry", "risk-alert"]).await;
    let id = register(&mesh, reported_in(82, Utc::now())).await;
    wait_for_deadlines(&mesh, &id, 3).await;

    execute(&mesh, &format!("DELETE FROM deadlines WHERE subject_id = '{id}'")).await;
    execute(
        &mesh,
        &format!("DELETE FROM supervisees WHERE supervisee_id = '{id}'"),
    )
    .await;
    let alert = eventually("the coverage-gap alert", Duration::from_secs(20), async || {
        gap_alerts(&mesh, &id).await.into_iter().next()
    })
    .await;
    assert_eq!(
        fact(&alert, "broken_tracks"),
        "checkin,absconding_warning,absconding_revocation"
    );
    assert!(fact(&alert, "reason").contains("no record"), "{alert:?}");
    wait_for_deadlines(&mesh, &id, 3).await;
    let restored = count(
        &mesh,
        "risk-alert",
        &format!("SELECT count(*) FROM supervisees WHERE supervisee_id = '{id}' AND status = 'active'"),
    )
    .await;
    assert_eq!(restored, 1, "the registry's record is applied again");
}

#[tokio::test]
async fn a_handover_whose_report_in_deadline_vanished_raises_a_coverage_gap() {
    let mesh = start(&["handover", "risk-alert"]).await;
    let mut request = notice(83);
    request.expected_release_date = Some(to_date(today() + Days::new(3)));
    let id = submit_notice(&mesh, request, &mesh.token(&prison("clerk-1", PRISON_A)))
        .await
        .handover_id;
    // Notified: the acknowledgement and the report-in.
    wait_for_deadlines(&mesh, &id, 2).await;

    execute(
        &mesh,
        &format!("DELETE FROM deadlines WHERE subject_id = '{id}' AND track = 'report_in'"),
    )
    .await;
    let alert = eventually("the coverage-gap alert", Duration::from_secs(20), async || {
        gap_alerts(&mesh, &id).await.into_iter().next()
    })
    .await;
    assert_eq!(fact(&alert, "broken_tracks"), "report_in");
    assert_eq!(fact(&alert, "subject_kind"), "handover");
    wait_for_deadlines(&mesh, &id, 2).await;
}
