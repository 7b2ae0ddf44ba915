//! The paths by which a person could silently stop being watched (issue 9), each driven end
//! to end against the real registry, handover and risk-alert processes with second-scale
//! policies: a reactivated supervision, a missed deadline resolved by hand, and a report-in
//! the registry could not register.

use std::time::Duration;

use chrono::{DateTime, Days, Utc};
use mesh_e2e::{
    HOME_COUNTY, HOME_TOWNSHIP, Mesh, PRISON_A, acknowledge, authorized, count, eventually, home_officer,
    jurisdiction, notice, prison, register, registration, report_in_request, reported_in, submit_notice,
    today, township_office, whole_seconds_ago,
};
use mesh_kit::proto_time::{from_timestamp, to_date, to_timestamp};
use mesh_proto::{alert as pb, handover as handover_pb, registry as registry_pb};

/// A normal-level person must check in every 3 s (1 s grace); ten days without contact is
/// 8 s here; nothing else fires.
const POLICY: &[(&str, &str)] = &[
    ("MESH_POLICY_NORMAL_INTERVAL", "3s"),
    ("MESH_POLICY_NORMAL_GRACE", "1s"),
    ("MESH_POLICY_STRICT_INTERVAL", "1000h"),
    ("MESH_POLICY_STRICT_IN_PERSON_INTERVAL", "off"),
    ("MESH_ABSCONDING_WARNING_AFTER", "8s"),
    ("MESH_ABSCONDING_REVOCATION_AFTER", "1000h"),
    ("MESH_HANDOVER_ACK_PERIOD", "1000h"),
    ("MESH_HANDOVER_GATE_GRACE", "1000h"),
    ("MESH_ALERT_TICK_MS", "100"),
];

async fn start(services: &[&str]) -> Mesh {
    Mesh::builder()
        .env("risk-alert", POLICY)
        .start(services)
        .await
        .expect("mesh")
}

/// The alerts about `subject_id` a township office sees in its township.
async fn alerts_in(mesh: &Mesh, township: &str, subject_id: &str) -> Vec<pb::Alert> {
    mesh.risk_alert()
        .list_alerts(authorized(
            pb::ListAlertsRequest {
                jurisdiction: Some(jurisdiction(township, HOME_COUNTY)),
                subject_id: subject_id.to_owned(),
                ..Default::default()
            },
            &mesh.token(&township_office(township)),
        ))
        .await
        .expect("alerts")
        .into_inner()
        .alerts
}

async fn alerts_about(mesh: &Mesh, subject_id: &str) -> Vec<pb::Alert> {
    alerts_in(mesh, HOME_TOWNSHIP, subject_id).await
}

/// Waits (up to 15 s) for an open alert of `kind` about `subject_id` in `township` that
/// `also` accepts.
async fn open_alert_in(
    mesh: &Mesh,
    township: &str,
    subject_id: &str,
    kind: pb::AlertKind,
    also: impl Fn(&pb::Alert) -> bool,
) -> pb::Alert {
    eventually(
        &format!("an open {kind:?} alert"),
        Duration::from_secs(15),
        async || {
            alerts_in(mesh, township, subject_id)
                .await
                .into_iter()
                .find(|a| a.kind() == kind && a.status() == pb::AlertStatus::Open && also(a))
        },
    )
    .await
}

/// [`open_alert_in`] the home township.
async fn open_alert(
    mesh: &Mesh,
    subject_id: &str,
    kind: pb::AlertKind,
    also: impl Fn(&pb::Alert) -> bool,
) -> pb::Alert {
    open_alert_in(mesh, HOME_TOWNSHIP, subject_id, kind, also).await
}

async fn change_status(mesh: &Mesh, id: &str, status: registry_pb::SuperviseeStatus) {
    mesh.registry()
        .change_status(authorized(
            registry_pb::ChangeStatusRequest {
                supervisee_id: id.to_owned(),
                status: status as i32,
                reason: "本人住院治疗".into(),
                effective_at: None,
            },
            &mesh.token(&home_officer()),
        ))
        .await
        .expect("status changed");
}

fn time(timestamp: &Option<prost_types::Timestamp>) -> DateTime<Utc> {
    timestamp.as_ref().and_then(from_timestamp).expect("timestamp")
}

#[tokio::test]
async fn a_reactivated_supervision_is_watched_again_counting_from_the_reactivation() {
    let mesh = start(&["registry", "risk-alert"]).await;
    let id = register(&mesh, reported_in(91, Utc::now())).await;
    let first = open_alert(&mesh, &id, pb::AlertKind::MissedCheckin, |_| true).await;

    // Suspended past the ten-day threshold (8 s here), then active again.
    change_status(&mesh, &id, registry_pb::SuperviseeStatus::Suspended).await;
    eventually("the withdrawal", Duration::from_secs(15), async || {
        let alerts = alerts_about(&mesh, &id).await;
        alerts
            .iter()
            .all(|a| a.status() == pb::AlertStatus::Resolved)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let reactivated_at = Utc::now();
    change_status(&mesh, &id, registry_pb::SuperviseeStatus::Active).await;

    // The new episode has its own missed check-in, counted from the reactivation …
    let second = open_alert(&mesh, &id, pb::AlertKind::MissedCheckin, |a| {
        a.alert_id != first.alert_id
    })
    .await;
    let since = time(&second.evidence.as_ref().expect("evidence").last_contact_at);
    assert!(
        since >= reactivated_at - chrono::Duration::seconds(2),
        "counted from {since}, reactivated at {reactivated_at}"
    );
    assert_ne!(second.dedup_key, first.dedup_key);
    // … and the suspended time does not count towards lost contact: the ten-day threshold
    // lies 8 s after the reactivation, not already behind it.
    let absconding: Vec<_> = alerts_about(&mesh, &id)
        .await
        .into_iter()
        .filter(|a| a.kind() == pb::AlertKind::AbscondingTenDays)
        .collect();
    assert!(absconding.is_empty(), "{absconding:?}");
    let warning = open_alert(&mesh, &id, pb::AlertKind::AbscondingTenDays, |_| true).await;
    assert!(time(&warning.deadline) >= reactivated_at + chrono::Duration::seconds(6));
}

#[tokio::test]
async fn a_missed_checkin_resolved_by_hand_is_followed_by_the_next_period() {
    let mesh = start(&["registry", "risk-alert"]).await;
    let id = register(&mesh, reported_in(92, Utc::now())).await;
    let first = open_alert(&mesh, &id, pb::AlertKind::MissedCheckin, |_| true).await;
    mesh.risk_alert()
        .resolve_alert(authorized(
            pb::ResolveAlertRequest {
                alert_id: first.alert_id.clone(),
                note: "已电话联系本人，系手机损坏".into(),
            },
            &mesh.token(&home_officer()),
        ))
        .await
        .expect("resolved");

    // No check-in follows: the next period is missed too, and alerted.
    let next = open_alert(&mesh, &id, pb::AlertKind::MissedCheckin, |a| {
        a.alert_id != first.alert_id
    })
    .await;
    assert!(time(&next.deadline) > time(&first.deadline));
    assert_eq!(
        next.evidence.as_ref().and_then(|e| e.last_contact_at),
        first.evidence.as_ref().and_then(|e| e.last_contact_at),
        "the evidence still names the last real contact"
    );
    let pending = count(
        &mesh,
        "risk-alert",
        &format!("SELECT count(*) FROM deadlines WHERE subject_id = '{id}' AND track = 'checkin' AND fired_at IS NULL"),
    )
    .await;
    assert_eq!(pending, 1, "the check-in track always has its next deadline");
}

#[tokio::test]
async fn a_report_in_the_registry_could_not_register_keeps_the_missed_report_in_watch() {
    let mesh = start(&["registry", "handover", "risk-alert"]).await;
    let prison_token = mesh.token(&prison("prison-clerk-1", PRISON_A));
    let office_token = mesh.token(&township_office(HOME_TOWNSHIP));
    // The same person is already under active supervision, so the registry refuses to
    // register the report-in a second time (an officer must reconcile the two).
    register(&mesh, reported_in(93, Utc::now())).await;
    let mut request = notice(93);
    request.key_assistance_target = false;
    request.expected_release_date = Some(to_date(today() + Days::new(1)));
    let id = submit_notice(&mesh, request, &prison_token).await.handover_id;
    acknowledge(&mesh, &id, &office_token)
        .await
        .expect("acknowledged");
    mesh.handover()
        .confirm_release(authorized(
            handover_pb::ConfirmReleaseRequest {
                handover_id: id.clone(),
                actual_release_time: Some(to_timestamp(whole_seconds_ago(1))),
            },
            &prison_token,
        ))
        .await
        .expect("released");
    mesh.handover()
        .record_report_in(authorized(
            report_in_request(&id, whole_seconds_ago(0)),
            &office_token,
        ))
        .await
        .expect("reported in");

    let report_in_watch =
        format!("SELECT count(*) FROM deadlines WHERE subject_id = '{id}' AND track = 'report_in'");
    eventually(
        "risk-alert to apply the report-in",
        Duration::from_secs(20),
        async || {
            let applied = count(
                &mesh,
                "risk-alert",
                &format!(
                    "SELECT count(*) FROM handovers WHERE handover_id = '{id}' AND status = 'reported_in'"
                ),
            )
            .await;
            (applied == 1).then_some(())
        },
    )
    .await;
    // The registry has had time to refuse it by now as well.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&mesh, "risk-alert", &report_in_watch).await,
        1,
        "a report-in nobody registered must not end the 漏管 watch"
    );
}

/// The notice goes to another township: the old one is told (its open alert is resolved,
/// and its webhook hears it) and the new one gets the full acknowledgement period.
#[tokio::test]
async fn an_amended_destination_restarts_the_acknowledgement_watch_at_the_new_township() {
    let mesh = Mesh::builder()
        .env(
            "risk-alert",
            &[
                ("MESH_HANDOVER_ACK_PERIOD", "3s"),
                ("MESH_HANDOVER_GATE_GRACE", "1000h"),
                ("MESH_ALERT_TICK_MS", "100"),
                ("MESH_WEBHOOK_ALLOW_HTTP", "true"),
            ],
        )
        .start(&["handover", "risk-alert"])
        .await
        .expect("mesh");
    let receiver = mesh.receiver();
    mesh.register_webhook()
        .await
        .expect("endpoint of the old township");
    let prison_token = mesh.token(&prison("prison-clerk-1", PRISON_A));
    let mut request = notice(94);
    request.expected_release_date = Some(to_date(today() + Days::new(20)));
    let id = submit_notice(&mesh, request, &prison_token).await.handover_id;
    let old = open_alert(&mesh, &id, pb::AlertKind::HandoverNotAcknowledged, |_| true).await;

    let new_township = jurisdiction("620702002", "620702");
    let amended_at = Utc::now();
    mesh.handover()
        .amend_release_notice(authorized(
            handover_pb::AmendReleaseNoticeRequest {
                handover_id: id.clone(),
                new_expected_release_date: None,
                new_destination: Some(new_township),
                reason: "家属变更居住地".into(),
            },
            &prison_token,
        ))
        .await
        .expect("amended");

    // The old township hears that the alert left it.
    let told = receiver
        .wait_for(Duration::from_secs(15), |received| {
            received.iter().any(|r| r.event_type == "alert.resolved")
        })
        .await;
    assert!(told.iter().any(|r| r.event_type == "alert.resolved"));
    // The new township gets its own acknowledgement deadline, counted from the amendment.
    let new = open_alert_in(
        &mesh,
        "620702002",
        &id,
        pb::AlertKind::HandoverNotAcknowledged,
        |a| a.alert_id != old.alert_id,
    )
    .await;
    assert!(
        time(&new.evidence.as_ref().expect("evidence").last_contact_at)
            >= amended_at - chrono::Duration::seconds(2)
    );
    assert_eq!(
        new.jurisdiction.as_ref().map(|j| j.township_code.as_str()),
        Some("620702002")
    );
}

/// Sentenced directly to community corrections (registered pending report-in), the person
/// must report in within the period from the term's first day (art. 21): 漏管 is watched for
/// him too, and his report-in ends it.
#[tokio::test]
async fn a_person_registered_pending_report_in_who_does_not_report_in_is_alerted() {
    let mesh = Mesh::builder()
        .env(
            "risk-alert",
            &[
                ("MESH_REPORT_IN_PERIOD_DIRECT", "2s"),
                ("MESH_ALERT_TICK_MS", "100"),
            ],
        )
        .start(&["registry", "risk-alert"])
        .await
        .expect("mesh");
    let mut pending = registration(95);
    pending.term_start = Some(to_date(today()));
    let id = register(&mesh, pending).await;
    // The term began at midnight: the 2 s period is long over.
    let overdue = open_alert(&mesh, &id, pb::AlertKind::ReportInOverdue, |_| true).await;
    assert_eq!(
        overdue.rule.as_ref().map(|r| r.rule_id.as_str()),
        Some("supervisee.report_in_overdue")
    );
    assert_eq!(overdue.escalation_target(), pb::EscalationTarget::CountyBureau);
    assert!(overdue.legal_basis.contains("第二十一条"));

    // He reports in: the alert is answered and the check-in deadlines start.
    change_status(&mesh, &id, registry_pb::SuperviseeStatus::Active).await;
    eventually(
        "the report-in to answer the alert",
        Duration::from_secs(15),
        async || {
            let alerts = alerts_about(&mesh, &id).await;
            alerts
                .iter()
                .all(|a| a.status() == pb::AlertStatus::Resolved)
                .then_some(())
        },
    )
    .await;
    let checkin_track = count(
        &mesh,
        "risk-alert",
        &format!("SELECT count(*) FROM deadlines WHERE subject_id = '{id}' AND track = 'checkin'"),
    )
    .await;
    assert_eq!(checkin_track, 1);
}

/// A check-in being applied as its deadline fires: the test takes the locks the consumer
/// takes when it applies a check-in (the supervisee's row, then the supervisee's
/// deadlines) while the scheduler fires. The scheduler takes them in the same order and
/// skips a subject whose row is held, so nothing deadlocks, and the other people's alerts
/// are not held up behind the busy one.
#[tokio::test]
async fn a_checkin_applied_as_its_deadline_fires_neither_deadlocks_nor_holds_up_others() {
    let mesh = Mesh::builder()
        .env(
            "risk-alert",
            &[
                ("MESH_POLICY_NORMAL_INTERVAL", "2s"),
                ("MESH_POLICY_NORMAL_GRACE", "0"),
                ("MESH_ABSCONDING_WARNING_AFTER", "1000h"),
                ("MESH_ABSCONDING_REVOCATION_AFTER", "1000h"),
                ("MESH_ALERT_TICK_MS", "50"),
            ],
        )
        .start(&["registry", "risk-alert"])
        .await
        .expect("mesh");
    let reported = Utc::now() + chrono::Duration::seconds(4);
    let busy = register(&mesh, reported_in(96, reported)).await;
    let other = register(&mesh, reported_in(97, reported)).await;
    let watched = format!("SELECT count(*) FROM deadlines WHERE subject_id IN ('{busy}', '{other}')");
    eventually("both watched", Duration::from_secs(20), async || {
        (count(&mesh, "risk-alert", &watched).await == 6).then_some(())
    })
    .await;

    // The consumer's first step: the supervisee's row, held across the deadline.
    let pool = mesh.pool("risk-alert").expect("pool");
    let mut consumer = pool.begin().await.expect("transaction");
    sqlx::query(&format!(
        "SELECT 1 FROM supervisees WHERE supervisee_id = '{busy}' FOR UPDATE"
    ))
    .execute(&mut *consumer)
    .await
    .expect("row locked");
    // Both deadlines fall due (4 s + 2 s); the other person's alert is not held up.
    open_alert(&mesh, &other, pb::AlertKind::MissedCheckin, |_| true).await;
    // The consumer's second step: the supervisee's deadlines, as a rescheduling does.
    sqlx::query("SET LOCAL lock_timeout = '5s'")
        .execute(&mut *consumer)
        .await
        .expect("timeout set");
    sqlx::query(&format!("DELETE FROM deadlines WHERE subject_id = '{busy}'"))
        .execute(&mut *consumer)
        .await
        .expect("the consumer's step neither deadlocks nor waits on the scheduler");
    consumer.rollback().await.expect("rolled back");
    // Released, the busy person's deadline fires too.
    open_alert(&mesh, &busy, pb::AlertKind::MissedCheckin, |_| true).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deadlocks = count(
        &mesh,
        "risk-alert",
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
    )
    .await;
    assert_eq!(deadlocks, 0, "PostgreSQL broke a deadlock");
}
