//! Prison → community handover end to end (漏管): real registry, handover and risk-alert
//! processes with a seconds-scale report-in period, and a township office's webhook receiver.

use std::time::Duration;

use chrono::{Days, Utc};
use mesh_e2e::{
    HOME_TOWNSHIP, Mesh, PRISON_A, acknowledge, authorized, dump, eventually, home_jurisdiction, notice,
    prison, report_in_request, submit_notice, today, township_office, whole_seconds_ago,
};
use mesh_kit::proto_time::{to_date, to_timestamp};
use mesh_proto::{alert as alert_pb, handover as pb, registry as registry_pb};

/// Report in within 5 s of release; nothing else fires during a test.
const POLICY: &[(&str, &str)] = &[
    ("MESH_REPORT_IN_PERIOD_PAROLE", "5s"),
    ("MESH_REPORT_IN_PERIOD_TEMPORARY_EXECUTION", "5s"),
    ("MESH_REPORT_IN_PERIOD_SENTENCE_COMPLETED", "5s"),
    ("MESH_HANDOVER_ACK_PERIOD", "1000h"),
    ("MESH_HANDOVER_GATE_GRACE", "1000h"),
    ("MESH_POLICY_STRICT_INTERVAL", "1000h"),
    ("MESH_POLICY_STRICT_IN_PERSON_INTERVAL", "off"),
    ("MESH_ALERT_TICK_MS", "100"),
    ("MESH_WEBHOOK_ALLOW_HTTP", "true"),
];

/// Registry, handover and risk-alert with `policy`, sharing one mesh.
async fn start_chain(policy: &[(&str, &str)]) -> Mesh {
    Mesh::builder()
        .env("risk-alert", policy)
        .start(&["registry", "handover", "risk-alert"])
        .await
        .expect("mesh")
}

/// The prison clerk's and the home township office's tokens.
fn tokens(mesh: &Mesh) -> (String, String) {
    (
        mesh.token(&prison("prison-clerk-1", PRISON_A)),
        mesh.token(&township_office(HOME_TOWNSHIP)),
    )
}

async fn alerts_about(mesh: &Mesh, handover_id: &str) -> Vec<alert_pb::Alert> {
    mesh.risk_alert()
        .list_alerts(authorized(
            alert_pb::ListAlertsRequest {
                jurisdiction: Some(home_jurisdiction()),
                subject_id: handover_id.to_owned(),
                ..Default::default()
            },
            &tokens(mesh).1,
        ))
        .await
        .expect("alerts")
        .into_inner()
        .alerts
}

/// Waits until every alert about handover `id` is resolved, for `what`; returns them.
async fn all_resolved(mesh: &Mesh, id: &str, what: &str) -> Vec<alert_pb::Alert> {
    eventually(what, Duration::from_secs(20), async || {
        let alerts = alerts_about(mesh, id).await;
        alerts
            .iter()
            .all(|a| a.status() == alert_pb::AlertStatus::Resolved)
            .then_some(alerts)
    })
    .await
}

#[tokio::test]
async fn released_person_who_does_not_report_in_raises_one_alert_until_the_report_in() {
    let mesh = start_chain(POLICY).await;
    let (prison_token, office_token) = tokens(&mesh);
    let receiver = mesh.receiver();
    mesh.register_webhook().await.expect("endpoint");

    let mut request = notice(1);
    request.key_assistance_target = false;
    // Due tomorrow but released today: until the release is confirmed, the report-in period
    // runs from the expected day, which must not lapse during the test.
    request.expected_release_date = Some(to_date(today() + Days::new(1)));
    let person = request.person_name.clone();
    let national_id = request.national_id.clone();
    let id = submit_notice(&mesh, request, &prison_token).await.handover_id;
    acknowledge(&mesh, &id, &office_token)
        .await
        .expect("acknowledged");
    let released_at = whole_seconds_ago(1);
    mesh.handover()
        .confirm_release(authorized(
            pb::ConfirmReleaseRequest {
                handover_id: id.clone(),
                actual_release_time: Some(to_timestamp(released_at)),
            },
            &prison_token,
        ))
        .await
        .expect("released");

    // Nobody reports in: one 漏管 alert, to the township and the county bureau.
    let alerts = eventually("the report-in alert", Duration::from_secs(30), async || {
        let alerts = alerts_about(&mesh, &id).await;
        (!alerts.is_empty()).then_some(alerts)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(alerts_about(&mesh, &id).await.len(), 1, "exactly one alert");
    let alert = &alerts[0];
    assert_eq!(alert.kind(), alert_pb::AlertKind::ReportInOverdue);
    assert_eq!(
        alert.escalation_target(),
        alert_pb::EscalationTarget::CountyBureau
    );
    assert_eq!(alert.subject.as_ref().expect("subject").name, person);
    assert!(alert.legal_basis.contains("第二十一条"), "{}", alert.legal_basis);
    let evidence = alert.evidence.as_ref().expect("evidence");
    assert_eq!(
        evidence.last_contact_at.as_ref().map(|t| t.seconds),
        Some(released_at.timestamp()),
        "the release time is the evidence"
    );
    assert_eq!(
        alert.deadline.as_ref().map(|t| t.seconds),
        Some(released_at.timestamp() + 5)
    );
    assert!(
        evidence
            .facts
            .iter()
            .any(|f| f.key == "prison_reference" && f.value.contains(PRISON_A))
    );
    let notified = receiver
        .wait_for(Duration::from_secs(10), |r| !r.is_empty())
        .await;
    assert_eq!(notified.len(), 1);
    assert!(notified[0].signature_valid);
    assert_eq!(notified[0].alert_kind(), "ALERT_KIND_REPORT_IN_OVERDUE");

    // The late report-in resolves it and registers the supervisee, whose check-ins are
    // then watched by risk-alert.
    mesh.handover()
        .record_report_in(authorized(
            report_in_request(&id, whole_seconds_ago(0)),
            &office_token,
        ))
        .await
        .expect("reported in");
    let resolved = all_resolved(&mesh, &id, "the resolution").await;
    assert!(resolved[0].auto_resolved);
    // It closes with whichever of the two arrives last at risk-alert: the report-in, or the
    // registry's registration of the person (both are needed for parole).
    let reference = &resolved[0].resolved_by_reference;
    assert!(
        reference.starts_with("supervisee.registered:") || reference.starts_with("handover.reported_in:"),
        "{reference}"
    );
    let notified = receiver.wait_for(Duration::from_secs(10), |r| r.len() >= 2).await;
    assert_eq!(notified[1].event_type, "alert.resolved");

    let supervisee = eventually("the registration", Duration::from_secs(20), async || {
        mesh.registry()
            .list_supervisees(authorized(
                registry_pb::ListSuperviseesRequest {
                    township_code: HOME_TOWNSHIP.into(),
                    status: 0,
                    page: None,
                },
                &office_token,
            ))
            .await
            .expect("list")
            .into_inner()
            .supervisees
            .into_iter()
            .find(|s| s.name == person)
    })
    .await;
    assert_eq!(supervisee.status(), registry_pb::SuperviseeStatus::Active);
    assert_eq!(supervisee.category(), registry_pb::Category::Parole);
    // Registered with the personal fields the office recorded, though they crossed only
    // sealed for the registry: none of them in plain text on the topic, in any service's
    // database (the handover outbox, risk-alert's projection, dead letters) or in a log.
    let (phone, address) = ("13912345678", "甘州区东街 1 号");
    assert_eq!(supervisee.phone, phone);
    assert_eq!(supervisee.address, address);
    assert_eq!(
        supervisee.national_id_masked,
        format!("{}********{}", &national_id[..6], &national_id[14..])
    );
    let events = mesh
        .tap(&mesh.topics.handover)
        .expect("tap")
        .collect(4, Duration::from_secs(30))
        .await
        .expect("handover events");
    assert_eq!(events[3].header("event_type"), Some("handover.reported_in"));
    for service in ["handover", "registry", "risk-alert"] {
        let (_, dump) = dump(&mesh, service).await;
        let log = mesh.process(service).log_text();
        for plain in [national_id.as_str(), phone, address] {
            assert!(!dump.contains(plain), "plain value in {service}'s database");
            assert!(
                !dump.contains(&hex::encode(plain)),
                "plain value in a bytea column of {service}"
            );
            assert!(!log.contains(plain), "plain value in {service}'s log");
            for event in &events {
                assert!(!event.payload.windows(plain.len()).any(|w| w == plain.as_bytes()));
            }
        }
    }
    let pool = mesh.pool("risk-alert").expect("pool");
    let supervisee_id: uuid::Uuid = supervisee.supervisee_id.parse().expect("uuid");
    let tracked = eventually(
        "the first check-in deadline",
        Duration::from_secs(20),
        async || {
            let tracks: Vec<String> = sqlx::query_scalar("SELECT track FROM deadlines WHERE subject_id = $1")
                .bind(supervisee_id)
                .fetch_all(&pool)
                .await
                .expect("deadlines");
            tracks.contains(&"checkin".to_owned()).then_some(tracks)
        },
    )
    .await;
    assert!(tracked.contains(&"checkin".to_owned()));
    let handover_uuid: uuid::Uuid = id.parse().expect("uuid");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM deadlines WHERE subject_id = $1")
        .bind(handover_uuid)
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(left, 0, "a reported-in handover has no deadline left");
}

#[tokio::test]
async fn amendment_moves_the_deadline_and_cancellation_withdraws_it() {
    let mesh = start_chain(POLICY).await;
    let (prison_token, _) = tokens(&mesh);
    let pool = mesh.pool("risk-alert").expect("pool");
    let mut request = notice(2);
    request.expected_release_date = Some(to_date(today() + Days::new(3)));
    let id = submit_notice(&mesh, request, &prison_token).await.handover_id;
    let handover_uuid: uuid::Uuid = id.parse().expect("uuid");
    let report_in_due = async |pool: &sqlx::PgPool| -> Option<chrono::DateTime<Utc>> {
        sqlx::query_scalar("SELECT due_at FROM deadlines WHERE subject_id = $1 AND track = 'report_in'")
            .bind(handover_uuid)
            .fetch_optional(pool)
            .await
            .expect("deadline")
    };
    let first = eventually("the report-in deadline", Duration::from_secs(20), async || {
        report_in_due(&pool).await
    })
    .await;

    mesh.handover()
        .amend_release_notice(authorized(
            pb::AmendReleaseNoticeRequest {
                handover_id: id.clone(),
                new_expected_release_date: Some(to_date(today() + Days::new(5))),
                new_destination: None,
                reason: "减刑裁定变更释放日期".into(),
            },
            &prison_token,
        ))
        .await
        .expect("amended");
    let moved = eventually("the moved deadline", Duration::from_secs(20), async || {
        report_in_due(&pool).await.filter(|due| *due != first)
    })
    .await;
    assert_eq!(
        moved - first,
        chrono::Duration::days(2),
        "two days later, like the release"
    );

    mesh.handover()
        .cancel_release_notice(authorized(
            pb::CancelReleaseNoticeRequest {
                handover_id: id.clone(),
                reason: pb::CancelReason::ReleaseRevoked as i32,
                note: "假释撤销".into(),
            },
            &prison_token,
        ))
        .await
        .expect("cancelled");
    eventually("the deadlines to go", Duration::from_secs(20), async || {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM deadlines WHERE subject_id = $1")
            .bind(handover_uuid)
            .fetch_one(&pool)
            .await
            .expect("count");
        (count == 0).then_some(())
    })
    .await;
    assert!(alerts_about(&mesh, &id).await.is_empty(), "nothing was ever due");
}

#[tokio::test]
async fn unacknowledged_notices_and_uncollected_key_targets_are_alerted_until_done() {
    // Acknowledge within 3 s; collect a key assistance target within 1 s of release.
    let policy = [
        ("MESH_HANDOVER_ACK_PERIOD", "3s"),
        ("MESH_HANDOVER_GATE_GRACE", "1s"),
        ("MESH_REPORT_IN_PERIOD_PAROLE", "1000h"),
        ("MESH_ALERT_TICK_MS", "100"),
    ];
    let mesh = start_chain(&policy).await;
    let (prison_token, office_token) = tokens(&mesh);
    let mut request = notice(3);
    request.expected_release_date = Some(to_date(today()));
    request.key_assistance_target = true;
    let id = submit_notice(&mesh, request, &prison_token).await.handover_id;

    // Nobody acknowledges the notice.
    let alerts = eventually("the acknowledgement alert", Duration::from_secs(20), async || {
        let alerts = alerts_about(&mesh, &id).await;
        (!alerts.is_empty()).then_some(alerts)
    })
    .await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].kind(), alert_pb::AlertKind::HandoverNotAcknowledged);
    assert_eq!(
        alerts[0].escalation_target(),
        alert_pb::EscalationTarget::TownshipOffice
    );
    acknowledge(&mesh, &id, &office_token)
        .await
        .expect("acknowledged");
    all_resolved(&mesh, &id, "the acknowledgement to resolve it").await;

    // Released; nobody records the gate collection (必接必送).
    mesh.handover()
        .confirm_release(authorized(
            pb::ConfirmReleaseRequest {
                handover_id: id.clone(),
                actual_release_time: Some(to_timestamp(whole_seconds_ago(0))),
            },
            &prison_token,
        ))
        .await
        .expect("released");
    let gate = eventually("the gate alert", Duration::from_secs(20), async || {
        alerts_about(&mesh, &id)
            .await
            .into_iter()
            .find(|a| a.kind() == alert_pb::AlertKind::GateNotCollected)
    })
    .await;
    assert_eq!(gate.escalation_target(), alert_pb::EscalationTarget::CountyBureau);
    assert_eq!(gate.severity(), alert_pb::AlertSeverity::High);
    mesh.handover()
        .record_gate_collection(authorized(
            pb::RecordGateCollectionRequest {
                handover_id: id.clone(),
                collected_at: Some(to_timestamp(whole_seconds_ago(0))),
                officer_id: "officer-1".into(),
            },
            &office_token,
        ))
        .await
        .expect("collected");
    let all = all_resolved(&mesh, &id, "the collection to resolve it").await;
    assert_eq!(all.len(), 2, "one alert per missed deadline: {all:#?}");
}
