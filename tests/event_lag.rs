//! Lag-aware firing: while the events that could answer a deadline are known to be in
//! flight (the broker is down, so a check-in waits in the check-in service's outbox), the
//! missed-check-in alert is not raised on stale state; the wait is bounded, so an outage
//! delays an alert but never suppresses it.

use std::time::Duration;

use chrono::Utc;
use mesh::harness::{Infra, TansuProcess, check_in};
use mesh_e2e::{Mesh, authorized, count, eventually, home_jurisdiction, home_officer, register, reported_in};
use mesh_proto::alert as pb;

/// A normal-level person must check in every `interval` (1 s grace); nothing else fires.
/// After the outage, probes are trusted again only once the check-in service's outbox relay
/// has certainly retried (its pause between attempts reaches 10 s).
fn policy(interval: &'static str, max_defer_secs: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("MESH_LAG_SETTLE_MS", "12000"),
        ("MESH_POLICY_NORMAL_INTERVAL", interval),
        ("MESH_POLICY_NORMAL_GRACE", "1s"),
        ("MESH_ABSCONDING_WARNING_AFTER", "1000h"),
        ("MESH_ABSCONDING_REVOCATION_AFTER", "2000h"),
        ("MESH_ALERT_TICK_MS", "100"),
        ("MESH_LAG_MAX_DEFER_SECS", max_defer_secs),
    ]
}

/// A mesh on a broker of its own, which the test can stop.
async fn on_private_broker(
    interval: &'static str,
    max_defer_secs: &'static str,
) -> (Mesh, TansuProcess, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("mesh-e2e-tansu-{}", uuid::Uuid::new_v4().simple()));
    let broker = TansuProcess::start(&dir).await.expect("private broker starts");
    let infra = Infra {
        brokers: broker.brokers(),
        ..Infra::from_env()
    };
    let fast_retry = [("MESH_KAFKA_MESSAGE_TIMEOUT_MS", "3000")];
    let mesh = Mesh::builder()
        .infra(infra)
        .env("risk-alert", &policy(interval, max_defer_secs))
        .env("checkin", &fast_retry)
        .start(&["registry", "checkin", "risk-alert"])
        .await
        .expect("mesh");
    (mesh, broker, dir)
}

async fn missed_checkins(mesh: &Mesh) -> Vec<pb::Alert> {
    mesh.risk_alert()
        .list_alerts(authorized(
            pb::ListAlertsRequest {
                jurisdiction: Some(home_jurisdiction()),
                kinds: vec![pb::AlertKind::MissedCheckin as i32],
                ..Default::default()
            },
            &mesh.token(&home_officer()),
        ))
        .await
        .expect("alerts")
        .into_inner()
        .alerts
}

/// Registers a person and waits until risk-alert watches him.
async fn watched_person(mesh: &Mesh, n: u16) -> String {
    let id = register(mesh, reported_in(n, Utc::now())).await;
    eventually(
        "risk-alert to watch the person",
        Duration::from_secs(20),
        async || {
            let sql = format!("SELECT count(*) FROM deadlines WHERE subject_id = '{id}'");
            (count(mesh, "risk-alert", &sql).await > 0).then_some(())
        },
    )
    .await;
    id
}

#[tokio::test]
async fn a_checkin_held_up_by_a_broker_outage_raises_no_false_alert() {
    let (mesh, mut broker, dir) = on_private_broker("20s", "600").await;
    let id = watched_person(&mesh, 101).await;
    // The check-in service knows the person too before the broker goes.
    let mut checkins = mesh.checkin();
    let token = mesh.token(&home_officer());
    check_in(&mut checkins, &token, &id)
        .await
        .expect("first check-in");
    eventually("the first check-in to arrive", Duration::from_secs(20), async || {
        let sql = format!("SELECT count(*) FROM supervisees WHERE supervisee_id = '{id}' AND last_checkin_id IS NOT NULL");
        (count(&mesh, "risk-alert", &sql).await == 1).then_some(())
    })
    .await;

    let first = tokio::time::Instant::now();

    broker.kill().await.expect("broker down");
    // Checked in on time, but the event cannot leave the check-in service.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let held_up = check_in(&mut checkins, &token, &id)
        .await
        .expect("check-in accepted while down");
    // The deadline the first check-in set (20 s + 1 s) passes during the outage.
    tokio::time::sleep_until(first + Duration::from_secs(23)).await;
    assert!(
        missed_checkins(&mesh).await.is_empty(),
        "no alert while the answering check-in is in flight"
    );

    broker.restart().await.expect("broker back");
    eventually(
        "the held-up check-in to arrive",
        Duration::from_secs(30),
        async || {
            let sql = format!("SELECT count(*) FROM supervisees WHERE last_checkin_id = '{held_up}'");
            (count(&mesh, "risk-alert", &sql).await == 1).then_some(())
        },
    )
    .await;
    assert!(missed_checkins(&mesh).await.is_empty(), "and none after it");
    drop(mesh);
    broker.kill().await.expect("broker stopped");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_outage_delays_an_alert_by_the_bound_but_never_suppresses_it() {
    let (mesh, mut broker, dir) = on_private_broker("4s", "3").await;
    let id = watched_person(&mesh, 102).await;
    broker.kill().await.expect("broker down");
    // Nobody checks in: the alert comes during the outage, at most 3 s after it was due.
    let alert = eventually("the delayed alert", Duration::from_secs(20), async || {
        missed_checkins(&mesh).await.into_iter().next()
    })
    .await;
    let due = alert.deadline.as_ref().map(|t| t.seconds).unwrap_or_default();
    let raised = alert.raised_at.as_ref().map(|t| t.seconds).unwrap_or_default();
    assert!(
        raised >= due + 1 + 3 - 1,
        "waited for the bound: due {due}, raised {raised}"
    );
    assert!(
        alert.subject.as_ref().and_then(|s| s.id.clone()).is_some(),
        "{id}"
    );
    drop(mesh);
    broker.kill().await.expect("broker stopped");
    let _ = std::fs::remove_dir_all(&dir);
}
