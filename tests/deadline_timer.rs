//! The scheduler wakes at the next deadline, not on a poll tick: with the fallback poll set
//! to a minute (`MESH_ALERT_TICK_MS`), a missed deadline is still alerted within about a
//! second of its time, and a deadline an event moves earlier re-arms the timer (a
//! deadline-change notice). Real registry and risk-alert processes on real PostgreSQL and
//! Tansu; the alert's own times are compared, never the wall clock's.

use std::time::Duration;

use mesh::harness::MeshBuilder;
use mesh_e2e::{authorized, eventually, fast_risk_alert, home_officer, list_alerts, register, reported_in};
use mesh_proto::{
    alert::{self as pb, alert_service_client::AlertServiceClient},
    registry as registry_pb,
};
use tonic::transport::Channel;

/// A fallback poll no test waits for: an alert on time is the timer's doing.
const SLOW_POLL: (&str, &str) = ("MESH_ALERT_TICK_MS", "60000");

/// How late after its deadline an alert may be raised: the grace (1 s) plus the consumer's
/// progress probe (250 ms) and a round, with room for a loaded machine; the poll it must not
/// depend on is a minute.
const ON_TIME: Duration = Duration::from_secs(3);

fn slow_poll(extra: &[(&'static str, &'static str)]) -> MeshBuilder {
    let mut env = vec![SLOW_POLL];
    env.extend_from_slice(extra);
    fast_risk_alert(&env)
}

async fn first_alert(alerts: &mut AlertServiceClient<Channel>, token: &str) -> pb::Alert {
    eventually("an alert", Duration::from_secs(30), async || {
        list_alerts(alerts, token).await.into_iter().next()
    })
    .await
}

/// How long after its deadline the alert was raised.
fn lateness(alert: &pb::Alert) -> chrono::Duration {
    let time = |stamp: Option<&prost_types::Timestamp>| {
        let stamp = stamp.expect("timestamp");
        chrono::DateTime::from_timestamp(stamp.seconds, u32::try_from(stamp.nanos).unwrap_or(0))
            .expect("valid timestamp")
    };
    time(alert.raised_at.as_ref()) - time(alert.deadline.as_ref())
}

#[tokio::test]
async fn a_missed_deadline_is_alerted_at_its_time_not_at_the_next_poll() {
    let mesh = slow_poll(&[])
        .start(&["registry", "risk-alert"])
        .await
        .expect("mesh");
    let token = mesh.token(&home_officer());
    let mut alerts = mesh.risk_alert();

    // Reported in now: the check-in deadline (4 s) and its grace (1 s) pass in 5 s.
    register(&mesh, reported_in(61, chrono::Utc::now())).await;

    let alert = first_alert(&mut alerts, &token).await;
    assert_eq!(alert.kind(), pb::AlertKind::MissedCheckin);
    let late = lateness(&alert);
    assert!(
        late >= chrono::Duration::seconds(1),
        "never before the grace has passed: {late}"
    );
    assert!(
        late < chrono::Duration::from_std(ON_TIME).expect("span"),
        "raised {late} after the deadline"
    );
}

#[tokio::test]
async fn a_deadline_an_event_moves_earlier_re_arms_the_timer() {
    // Normal level: the first deadline is two hours away, so the scheduler sleeps until
    // its fallback poll. Strict level: 8 s.
    let mesh = slow_poll(&[
        ("MESH_POLICY_NORMAL_INTERVAL", "2h"),
        ("MESH_POLICY_STRICT_INTERVAL", "8s"),
    ])
    .start(&["registry", "risk-alert"])
    .await
    .expect("mesh");
    let token = mesh.token(&home_officer());
    let mut alerts = mesh.risk_alert();
    let pool = mesh.pool("risk-alert").expect("pool");

    let reported_at = chrono::Utc::now();
    let id = register(&mesh, reported_in(62, reported_at)).await;
    let subject: uuid::Uuid = id.parse().expect("uuid");
    let first_due = eventually("the first deadline", Duration::from_secs(10), async || {
        sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
            "SELECT due_at FROM deadlines WHERE subject_id = $1 AND track = 'checkin'",
        )
        .bind(subject)
        .fetch_optional(&pool)
        .await
        .ok()
        .flatten()
    })
    .await;
    assert!(
        first_due > reported_at + chrono::Duration::hours(1),
        "the normal deadline is far"
    );

    // The assessment makes him strict: his deadline moves to 8 s after his report-in, still
    // ahead, which only a re-armed timer fires on time.
    mesh.registry()
        .change_level(authorized(
            registry_pb::ChangeLevelRequest {
                supervisee_id: id.clone(),
                level: registry_pb::SupervisionLevel::Strict as i32,
                reason: "periodic assessment".into(),
            },
            &token,
        ))
        .await
        .expect("level changed");

    let alert = first_alert(&mut alerts, &token).await;
    assert_eq!(alert.kind(), pb::AlertKind::MissedCheckin);
    let deadline = alert.deadline.as_ref().expect("deadline");
    assert!(
        deadline.seconds <= (reported_at + chrono::Duration::seconds(9)).timestamp(),
        "the strict deadline was missed, not the normal one: {deadline:?}"
    );
    let late = lateness(&alert);
    assert!(
        late < chrono::Duration::from_std(ON_TIME).expect("span"),
        "raised {late} after the deadline"
    );
}
