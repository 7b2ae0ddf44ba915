//! risk-alert end to end, with second-scale policies: real registry, check-in and risk-alert
//! processes on real PostgreSQL and Tansu, and a township office's webhook receiver.

use std::time::Duration;

use mesh::harness::{MeshBuilder, check_in, new_checkin, record_checkin};
use mesh_e2e::{
    Mesh, authorized, eventually, fast_risk_alert, home_jurisdiction, home_officer, list_alerts, officer,
    register, reported_in,
};
use mesh_proto::{
    alert::{self as pb, alert_service_client::AlertServiceClient},
    registry as registry_pb,
};
use prost::Message;
use tonic::{Code, transport::Channel};

/// A mesh whose risk-alert runs the shared fast policy, with webhook retries a few hundred
/// milliseconds apart.
fn fast() -> MeshBuilder {
    fast_risk_alert(&[
        ("MESH_WEBHOOK_RETRY_BASE_MS", "300"),
        ("MESH_WEBHOOK_RETRY_MAX_SECS", "2"),
    ])
}

/// Registers person `n` as already reported in (active), returning the supervisee id.
async fn register_active(mesh: &Mesh, n: u16) -> String {
    register(mesh, reported_in(n, chrono::Utc::now())).await
}

async fn wait_for_alerts(
    alerts: &mut AlertServiceClient<Channel>,
    token: &str,
    timeout: Duration,
    done: impl Fn(&[pb::Alert]) -> bool,
) -> Vec<pb::Alert> {
    eventually("the alerts", timeout, async || {
        let listed = list_alerts(alerts, token).await;
        done(&listed).then_some(listed)
    })
    .await
}

fn subject_id(alert: &pb::Alert) -> String {
    match alert.subject.as_ref().and_then(|s| s.id.clone()) {
        Some(pb::alert_subject::Id::SuperviseeId(id)) => id,
        _ => String::new(),
    }
}

/// The `alert.*` event types on the alert topic, read until it is quiet.
async fn alert_events(mesh: &Mesh) -> Vec<(String, pb::Alert)> {
    let events = mesh
        .tap(&mesh.topics.alert)
        .expect("tap")
        .collect(1000, Duration::from_secs(5))
        .await
        .expect("events");
    events
        .into_iter()
        .map(|event| {
            let event_type = event.header("event_type").unwrap_or_default().to_owned();
            let alert = match event_type.as_str() {
                "alert.raised" => pb::AlertRaised::decode(event.payload.as_slice())
                    .ok()
                    .and_then(|e| e.alert),
                "alert.resolved" => pb::AlertResolved::decode(event.payload.as_slice())
                    .ok()
                    .and_then(|e| e.alert),
                "alert.acknowledged" => pb::AlertAcknowledged::decode(event.payload.as_slice())
                    .ok()
                    .and_then(|e| e.alert),
                _ => None,
            };
            (event_type, alert.unwrap_or_default())
        })
        .collect()
}

#[tokio::test]
async fn one_missed_checkin_among_three_raises_one_signed_alert_and_a_late_checkin_resolves_it() {
    let mesh = fast()
        .start(&["registry", "checkin", "risk-alert"])
        .await
        .expect("mesh");
    let mut checkins = mesh.checkin();
    let mut alerts = mesh.risk_alert();
    let officer_token = mesh.token(&home_officer());
    let receiver = mesh.receiver();
    mesh.register_webhook().await.expect("endpoint registered");

    // A dashboard watches the township's live feed from the start.
    let mut stream = alerts
        .stream_alerts(authorized(
            pb::StreamAlertsRequest {
                jurisdiction: Some(home_jurisdiction()),
                include_current: true,
            },
            &officer_token,
        ))
        .await
        .expect("stream")
        .into_inner();

    let punctual_a = register_active(&mesh, 31).await;
    let punctual_b = register_active(&mesh, 32).await;
    let missing = register_active(&mesh, 33).await;

    // Two supervisees check in every second for 8 s; the third never does.
    let until = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < until {
        check_in(&mut checkins, &officer_token, &punctual_a)
            .await
            .expect("check-in");
        check_in(&mut checkins, &officer_token, &punctual_b)
            .await
            .expect("check-in");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let listed = list_alerts(&mut alerts, &officer_token).await;
    assert_eq!(listed.len(), 1, "exactly one alert: {listed:#?}");
    let alert = &listed[0];
    assert_eq!(subject_id(alert), missing);
    assert_eq!(alert.kind(), pb::AlertKind::MissedCheckin);
    assert_eq!(alert.status(), pb::AlertStatus::Open);
    assert_eq!(alert.escalation_target(), pb::EscalationTarget::TownshipOffice);
    assert_eq!(alert.recommended_measure(), pb::RecommendedMeasure::Admonition);
    // It explains itself: rule, legal basis, evidence of the deadline and grace that passed.
    assert_eq!(
        alert.rule.as_ref().expect("rule").rule_id,
        "checkin.missed.normal"
    );
    assert!(alert.legal_basis.contains("社区矫正法实施办法"));
    let evidence = alert.evidence.as_ref().expect("evidence");
    assert_eq!(evidence.grace_period_seconds, 1);
    assert!(evidence.last_contact_at.is_some());
    assert!(
        evidence
            .facts
            .iter()
            .any(|f| f.key == "required_interval" && f.value == "4s")
    );
    assert!(alert.dedup_key.starts_with(&format!("missed_checkin:{missing}:")));
    assert_eq!(alert.subject.as_ref().expect("subject").name, "测试人员33");

    let raised = receiver
        .wait_for(Duration::from_secs(10), |r| {
            r.iter().any(|n| n.event_type == "alert.raised")
        })
        .await;
    let raised: Vec<_> = raised.iter().filter(|n| n.event_type == "alert.raised").collect();
    assert_eq!(raised.len(), 1, "one notification: {raised:#?}");
    assert!(raised[0].signature_valid, "signed with the endpoint secret");
    assert_eq!(raised[0].subject_id(), missing);
    assert_eq!(raised[0].alert_kind(), "ALERT_KIND_MISSED_CHECKIN");
    assert!(!raised[0].notification_id.is_empty());

    let streamed = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("stream delivers")
        .expect("stream ok")
        .expect("a message");
    assert_eq!(streamed.change(), pb::AlertChange::Raised);
    assert_eq!(subject_id(streamed.alert.as_ref().expect("alert")), missing);

    // Someone else's officer sees none of it.
    let stranger = mesh.token(&officer("officer-9", "620702002"));
    let denied = alerts
        .list_alerts(authorized(
            pb::ListAlertsRequest {
                jurisdiction: Some(home_jurisdiction()),
                ..Default::default()
            },
            &stranger,
        ))
        .await
        .expect_err("refused");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = alerts
        .acknowledge_alert(authorized(
            pb::AcknowledgeAlertRequest {
                alert_id: alert.alert_id.clone(),
            },
            &stranger,
        ))
        .await
        .expect_err("refused");
    assert_eq!(denied.code(), Code::PermissionDenied);

    // The late check-in resolves the alert, and the resolution is notified too.
    let late = check_in(&mut checkins, &officer_token, &missing)
        .await
        .expect("check-in");
    let listed = wait_for_alerts(&mut alerts, &officer_token, Duration::from_secs(15), |alerts| {
        alerts.iter().all(|a| a.status() == pb::AlertStatus::Resolved)
    })
    .await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status(), pb::AlertStatus::Resolved);
    assert!(listed[0].auto_resolved);
    assert_eq!(listed[0].resolved_by_reference, format!("checkin:{late}"));
    let resolved = receiver
        .wait_for(Duration::from_secs(10), |r| {
            r.iter().any(|n| n.event_type == "alert.resolved")
        })
        .await;
    let resolved: Vec<_> = resolved
        .iter()
        .filter(|n| n.event_type == "alert.resolved")
        .collect();
    assert_eq!(resolved.len(), 1);
    assert!(resolved[0].signature_valid);

    // (Check-ins stopped with the loop, so later deadlines lapse too; only the missing
    // supervisee's first alert is followed here.)
    let events = alert_events(&mesh).await;
    let about_missing: Vec<&(String, pb::Alert)> = events
        .iter()
        .filter(|(_, alert)| subject_id(alert) == missing)
        .collect();
    assert_eq!(about_missing[0].0, "alert.raised");
    assert_eq!(about_missing[1].0, "alert.resolved");
    assert_eq!(about_missing[0].1.alert_id, about_missing[1].1.alert_id);
    // Silence after the late check-in is a new missed deadline: a new alert, never a repeat.
    for (event_type, alert) in &about_missing[2..] {
        assert_eq!(event_type, "alert.raised");
        assert_ne!(alert.dedup_key, about_missing[0].1.dedup_key);
    }
}

#[tokio::test]
async fn two_replicas_never_double_alert() {
    let mesh = fast()
        .start(&["registry", "risk-alert", "risk-alert"])
        .await
        .expect("two replicas");
    let mut alerts = mesh.risk_alert();
    let receiver = mesh.receiver();
    mesh.register_webhook().await.expect("endpoint registered");
    let token = mesh.token(&home_officer());

    let mut missing = Vec::new();
    for n in 40..46 {
        missing.push(register_active(&mesh, n).await);
    }
    let listed = wait_for_alerts(&mut alerts, &token, Duration::from_secs(30), |a| {
        a.len() >= missing.len()
    })
    .await;
    // Give both replicas time to (wrongly) raise more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let listed_again = list_alerts(&mut alerts, &token).await;
    assert_eq!(listed.len(), missing.len());
    assert_eq!(
        listed_again.len(),
        missing.len(),
        "no second alert for any deadline"
    );
    let mut subjects: Vec<String> = listed_again.iter().map(subject_id).collect();
    subjects.sort();
    missing.sort();
    assert_eq!(subjects, missing);

    let raised_events = alert_events(&mesh)
        .await
        .into_iter()
        .filter(|(t, _)| t == "alert.raised")
        .count();
    assert_eq!(
        raised_events,
        missing.len(),
        "one alert.raised event per missed deadline"
    );
    receiver
        .wait_for(Duration::from_secs(10), |r| r.len() >= missing.len())
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let notified = receiver.received();
    assert_eq!(
        notified.len(),
        missing.len(),
        "one notification per alert: {notified:#?}"
    );

    // Both replicas see the same alerts.
    let mut alerts_b = AlertServiceClient::new(mesh.channel("risk-alert", 1));
    assert_eq!(list_alerts(&mut alerts_b, &token).await.len(), missing.len());
}

#[tokio::test]
async fn a_deadline_that_passes_while_risk_alert_is_down_is_alerted_once_after_restart() {
    let mut mesh = fast().start(&["registry", "risk-alert"]).await.expect("mesh");
    let token = mesh.token(&home_officer());
    let pool = mesh.pool("risk-alert").expect("pool");

    let id = register_active(&mesh, 50).await;
    let id_uuid: uuid::Uuid = id.parse().expect("uuid");
    // Wait until risk-alert holds the deadline, then crash it before the deadline passes.
    for _ in 0..100 {
        let tracked: i64 = sqlx::query_scalar("SELECT count(*) FROM deadlines WHERE subject_id = $1")
            .bind(id_uuid)
            .fetch_one(&pool)
            .await
            .expect("count");
        if tracked > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    mesh.kill("risk-alert").await.expect("killed");
    tokio::time::sleep(Duration::from_secs(7)).await; // deadline (4 s) + grace (1 s) pass while down
    let alerts_while_down: i64 = sqlx::query_scalar("SELECT count(*) FROM alerts")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(alerts_while_down, 0);

    mesh.launch("risk-alert").await.expect("restarted");
    let mut alerts = mesh.risk_alert();
    let listed = wait_for_alerts(&mut alerts, &token, Duration::from_secs(15), |a| !a.is_empty()).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(subject_id(&listed[0]), id);
    // A second restart does not raise it again.
    mesh.stop("risk-alert").await.expect("stopped");
    mesh.launch("risk-alert").await.expect("restarted again");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut alerts = mesh.risk_alert();
    assert_eq!(list_alerts(&mut alerts, &token).await.len(), 1);
    let raised_events = alert_events(&mesh)
        .await
        .into_iter()
        .filter(|(t, _)| t == "alert.raised")
        .count();
    assert_eq!(raised_events, 1);
}

#[tokio::test]
async fn notifications_reach_a_receiver_that_was_down_once_per_idempotency_key() {
    // The township's receiver is down: its port is reserved, nothing listens.
    let mut mesh = fast()
        .receiver_down()
        .start(&["registry", "risk-alert"])
        .await
        .expect("mesh");
    let mut alerts = mesh.risk_alert();
    let token = mesh.token(&home_officer());
    mesh.register_webhook().await.expect("endpoint registered");

    register_active(&mesh, 60).await;
    let listed = wait_for_alerts(&mut alerts, &token, Duration::from_secs(15), |a| !a.is_empty()).await;
    let alert_id = listed.first().expect("alert raised").alert_id.clone();
    // While the receiver is down, attempts fail and are recorded.
    let mut failed = Vec::new();
    for _ in 0..100 {
        failed = alerts
            .list_deliveries(authorized(
                pb::ListDeliveriesRequest {
                    alert_id: alert_id.clone(),
                    page: None,
                },
                &token,
            ))
            .await
            .expect("deliveries")
            .into_inner()
            .deliveries;
        if failed.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(failed.len() >= 2, "retried while down: {failed:#?}");
    assert!(
        failed
            .iter()
            .all(|d| d.outcome() == pb::DeliveryOutcome::Failed && d.http_status == 0)
    );
    assert_eq!(failed[0].attempt_number, 1);
    assert_eq!(failed[1].attempt_number, 2);
    assert_eq!(
        failed[0].notification_id, failed[1].notification_id,
        "same idempotency key on retry"
    );

    mesh.receiver_mut().listen().await.expect("receiver up");
    let receiver = mesh.receiver();
    let received = receiver
        .wait_for(Duration::from_secs(15), |r| !r.is_empty())
        .await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].notification_id, failed[0].notification_id);
    assert!(received[0].signature_valid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.received().len(), 1, "delivered once, not again");
    let deliveries = alerts
        .list_deliveries(authorized(
            pb::ListDeliveriesRequest { alert_id, page: None },
            &token,
        ))
        .await
        .expect("deliveries")
        .into_inner()
        .deliveries;
    let last = deliveries.last().expect("attempts");
    assert_eq!(last.outcome(), pb::DeliveryOutcome::Delivered);
    assert_eq!(last.http_status, 204);
    assert_eq!(
        deliveries
            .iter()
            .filter(|d| d.outcome() == pb::DeliveryOutcome::Delivered)
            .count(),
        1
    );
}

#[tokio::test]
async fn suspension_withdraws_deadlines_and_alerts() {
    let mesh = fast().start(&["registry", "risk-alert"]).await.expect("mesh");
    let mut alerts = mesh.risk_alert();
    let token = mesh.token(&home_officer());
    let id = register_active(&mesh, 70).await;
    let listed = wait_for_alerts(&mut alerts, &token, Duration::from_secs(15), |a| !a.is_empty()).await;
    assert_eq!(listed.len(), 1);
    mesh.registry()
        .change_status(authorized(
            registry_pb::ChangeStatusRequest {
                supervisee_id: id.clone(),
                status: registry_pb::SuperviseeStatus::Suspended as i32,
                reason: "detained on another matter".into(),
                effective_at: None,
            },
            &token,
        ))
        .await
        .expect("suspended");
    let listed = wait_for_alerts(&mut alerts, &token, Duration::from_secs(15), |a| {
        a.iter().all(|alert| alert.status() == pb::AlertStatus::Resolved)
    })
    .await;
    assert_eq!(listed[0].status(), pb::AlertStatus::Resolved);
    assert!(listed[0].resolution_note.contains("suspended"));
    let pool = mesh.pool("risk-alert").expect("pool");
    let deadlines: i64 = sqlx::query_scalar("SELECT count(*) FROM deadlines WHERE subject_id = $1")
        .bind(id.parse::<uuid::Uuid>().expect("uuid"))
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(deadlines, 0, "a suspended supervisee produces no deadlines");
}

#[tokio::test]
async fn out_of_area_checkin_raises_its_own_alert_which_officers_acknowledge_and_resolve() {
    // Check-in deadlines far away: only the out-of-area rule can fire.
    let policy = [
        ("MESH_POLICY_NORMAL_INTERVAL", "1000h"),
        ("MESH_ALERT_TICK_MS", "100"),
    ];
    let mesh = Mesh::builder()
        .env("risk-alert", &policy)
        .start(&["registry", "checkin", "risk-alert"])
        .await
        .expect("mesh");
    let mut checkins = mesh.checkin();
    let mut alerts = mesh.risk_alert();
    let token = mesh.token(&home_officer());
    let id = register_active(&mesh, 80).await;

    // A check-in from Lanzhou, some 450 km from Zhangye: accepted, flagged, alerted.
    let far = record_checkin(&mut checkins, &token, || {
        let mut checkin = new_checkin(&id, chrono::Utc::now());
        checkin.position = Some(mesh_proto::common::GeoPoint {
            latitude: 36.06,
            longitude: 103.83,
            accuracy_m: 20.0,
        });
        checkin
    })
    .await
    .expect("check-in accepted");
    let listed = wait_for_alerts(&mut alerts, &token, Duration::from_secs(20), |a| !a.is_empty()).await;
    assert_eq!(listed.len(), 1);
    let alert = &listed[0];
    assert_eq!(alert.kind(), pb::AlertKind::OutOfArea);
    assert_eq!(alert.dedup_key, format!("out_of_area:{id}:{far}"));
    let facts = &alert.evidence.as_ref().expect("evidence").facts;
    assert!(facts.iter().any(|f| f.key == "checkin_id" && f.value == far));
    let distance: f64 = facts
        .iter()
        .find(|f| f.key == "distance_outside_m")
        .and_then(|f| f.value.parse().ok())
        .expect("distance");
    assert!(distance > 300_000.0, "{distance}");
    // A normal check-in does not resolve it: being somewhere one may not be is not answered
    // by checking in again.
    check_in(&mut checkins, &token, &id).await.expect("check-in");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        list_alerts(&mut alerts, &token).await[0].status(),
        pb::AlertStatus::Open
    );

    let acknowledged = alerts
        .acknowledge_alert(authorized(
            pb::AcknowledgeAlertRequest {
                alert_id: alert.alert_id.clone(),
            },
            &token,
        ))
        .await
        .expect("acknowledged")
        .into_inner()
        .alert
        .expect("alert");
    assert_eq!(acknowledged.status(), pb::AlertStatus::Acknowledged);
    assert_eq!(
        acknowledged.acknowledged_by.as_ref().expect("by").subject,
        "officer-1"
    );
    let again = alerts
        .acknowledge_alert(authorized(
            pb::AcknowledgeAlertRequest {
                alert_id: alert.alert_id.clone(),
            },
            &token,
        ))
        .await
        .expect("repeat is a no-op")
        .into_inner()
        .alert
        .expect("alert");
    assert_eq!(again.version, acknowledged.version);
    let empty_note = alerts
        .resolve_alert(authorized(
            pb::ResolveAlertRequest {
                alert_id: alert.alert_id.clone(),
                note: "  ".into(),
            },
            &token,
        ))
        .await
        .expect_err("a note is required");
    assert_eq!(mesh_kit::error::violated_fields(&empty_note), ["note"]);
    let resolved = alerts
        .resolve_alert(authorized(
            pb::ResolveAlertRequest {
                alert_id: alert.alert_id.clone(),
                note: "已核实：经批准赴兰州就医".into(),
            },
            &token,
        ))
        .await
        .expect("resolved")
        .into_inner()
        .alert
        .expect("alert");
    assert_eq!(resolved.status(), pb::AlertStatus::Resolved);
    assert!(!resolved.auto_resolved);
    assert_eq!(resolved.resolution_note, "已核实：经批准赴兰州就医");
    let late_ack = alerts
        .acknowledge_alert(authorized(
            pb::AcknowledgeAlertRequest {
                alert_id: alert.alert_id.clone(),
            },
            &token,
        ))
        .await
        .expect_err("resolved alerts cannot be acknowledged");
    assert_eq!(late_ack.code(), Code::FailedPrecondition);

    let types: Vec<String> = alert_events(&mesh).await.into_iter().map(|(t, _)| t).collect();
    assert_eq!(types, ["alert.raised", "alert.acknowledged", "alert.resolved"]);
}

/// A `checkin.recorded` event as the check-in service publishes it, verified, in the area.
fn recorded(supervisee: &str, checkin_id: &str, at: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
    mesh_proto::checkin::CheckinRecorded {
        supervisee_id: supervisee.to_owned(),
        checkin_id: checkin_id.to_owned(),
        method: mesh_proto::checkin::CheckinMethod::AppSelfCheckin as i32,
        device_time: Some(mesh_kit::proto_time::to_timestamp(at)),
        received_at: Some(mesh_kit::proto_time::to_timestamp(chrono::Utc::now())),
        jurisdiction: Some(home_jurisdiction()),
        identity_verified: true,
        ..Default::default()
    }
    .encode_to_vec()
}

#[tokio::test]
async fn a_burst_of_checkins_applied_together_leaves_what_one_by_one_would() {
    // Periods long enough that no second alert comes while the test looks; people who
    // reported in ten minutes ago have missed their first check-in already.
    let mesh = fast_risk_alert(&[
        ("MESH_POLICY_STRICT_INTERVAL", "60s"),
        ("MESH_POLICY_NORMAL_INTERVAL", "60s"),
        ("MESH_POLICY_LENIENT_INTERVAL", "60s"),
    ])
    .start(&["registry", "risk-alert"])
    .await
    .expect("mesh");
    let mut alerts = mesh.risk_alert();
    let token = mesh.token(&home_officer());
    let reported = chrono::Utc::now() - chrono::Duration::minutes(10);
    let twice = register(&mesh, reported_in(91, reported)).await;
    let once = register(&mesh, reported_in(92, reported)).await;
    let stale = register(&mesh, reported_in(93, reported)).await;
    wait_for_alerts(&mut alerts, &token, Duration::from_secs(30), |listed| {
        listed.len() == 3
    })
    .await;

    // One burst, as the check-in service's relay sends a backlog: two check-ins of one
    // person (the newer first), one of another, and one of a third made before the contact
    // the alert counts from, which answers nothing.
    let now = chrono::Utc::now();
    let producer = mesh.producer().expect("producer");
    let burst = [
        (&twice, "twice-newer", now),
        (&once, "once", now),
        (&twice, "twice-older", now - chrono::Duration::seconds(1)),
        (&stale, "stale", now - chrono::Duration::hours(2)),
    ];
    for (person, checkin_id, at) in burst {
        mesh::harness::publish_event(
            producer,
            &mesh.topics.checkin,
            person,
            "checkin.recorded",
            &recorded(person, checkin_id, at),
        )
        .await
        .expect("published");
    }

    let listed = wait_for_alerts(&mut alerts, &token, Duration::from_secs(20), |listed| {
        listed
            .iter()
            .filter(|alert| alert.status() == pb::AlertStatus::Resolved)
            .count()
            == 2
    })
    .await;
    let status = |person: &str| {
        listed
            .iter()
            .find(|alert| subject_id(alert) == person)
            .map(|alert| alert.status())
    };
    assert_eq!(status(&twice), Some(pb::AlertStatus::Resolved));
    assert_eq!(status(&once), Some(pb::AlertStatus::Resolved));
    assert_eq!(
        status(&stale),
        Some(pb::AlertStatus::Open),
        "an older contact answers nothing"
    );

    // The newest contact is kept with its check-in, whatever order the burst came in.
    let pool = mesh.pool("risk-alert").expect("pool");
    let last = async |person: &str| -> (Option<String>, Option<chrono::DateTime<chrono::Utc>>) {
        sqlx::query_as(
            "SELECT last_checkin_id, last_contact_at FROM supervisees WHERE supervisee_id = $1::uuid",
        )
        .bind(person)
        .fetch_one(&pool)
        .await
        .expect("supervisee")
    };
    let (checkin_id, contact) = last(&twice).await;
    assert_eq!(checkin_id.as_deref(), Some("twice-newer"));
    assert_eq!(
        contact.map(|at| at.timestamp_millis()),
        Some(now.timestamp_millis())
    );
    let (checkin_id, contact) = last(&stale).await;
    assert_ne!(checkin_id.as_deref(), Some("stale"));
    assert!(contact.is_some_and(|at| at > now - chrono::Duration::hours(1)));
    // Each answered person's deadline now counts from the check-in.
    let counted_from: Vec<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT since_at FROM deadlines WHERE subject_id = ANY($1::uuid[]) AND track = 'checkin'",
    )
    .bind(vec![twice.clone(), once.clone()])
    .fetch_all(&pool)
    .await
    .expect("deadlines");
    assert_eq!(counted_from.len(), 2);
    assert!(
        counted_from
            .iter()
            .all(|since| since.timestamp_millis() == now.timestamp_millis()),
        "{counted_from:?} counts from {now}"
    );
    let resolved = alert_events(&mesh)
        .await
        .into_iter()
        .filter(|(event_type, _)| event_type == "alert.resolved")
        .count();
    assert_eq!(
        resolved, 2,
        "one resolution per alert, however many check-ins answer it"
    );
}
