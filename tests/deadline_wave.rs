//! A wave of deadlines falling due in the same second, fired in batches by two risk-alert
//! replicas at once: every missed deadline raises exactly one alert, with its one
//! `alert.raised` event and its one notification to the township office, and every deadline
//! is rolled on (no track left without one). The people and their deadlines are written
//! straight into risk-alert's tables, as the bench's wave does, so the wave is larger than
//! one batch without registering each person through the registry. A dashboard streaming
//! the township sees every alert of a burst raised together.

use std::{collections::HashSet, time::Duration};

use mesh_e2e::{alert_changes, count, eventually, fast_risk_alert, home_jurisdiction, home_officer};
use mesh_proto::alert as pb;

/// More than two batches of the scheduler (500 deadlines each), so the replicas share it.
const WAVE: i64 = 1_200;

#[tokio::test]
async fn a_wave_of_deadlines_raises_exactly_one_alert_each_across_two_replicas() {
    let mesh = fast_risk_alert(&[])
        .start(&["risk-alert", "risk-alert"])
        .await
        .expect("two replicas");
    mesh.register_webhook().await.expect("endpoint registered");
    let pool = mesh.pool("risk-alert").expect("pool");

    seed_wave(&pool, WAVE).await;

    eventually("every alert of the wave", Duration::from_secs(90), async || {
        (count(&mesh, "risk-alert", "SELECT count(*) FROM alerts").await >= WAVE).then_some(())
    })
    .await;
    // Both replicas keep firing the rolled deadlines meanwhile; none may alert again.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let alerts = count(&mesh, "risk-alert", "SELECT count(*) FROM alerts").await;
    assert_eq!(alerts, WAVE, "exactly one alert per missed deadline");
    let subjects = count(
        &mesh,
        "risk-alert",
        "SELECT count(DISTINCT subject_id) FROM alerts",
    )
    .await;
    assert_eq!(subjects, WAVE, "one per person");
    let kinds = count(
        &mesh,
        "risk-alert",
        "SELECT count(*) FROM alerts WHERE kind <> 'missed_checkin'",
    )
    .await;
    assert_eq!(kinds, 0);

    let events = mesh
        .tap(&mesh.topics.alert)
        .expect("tap")
        .collect(WAVE as usize + 100, Duration::from_secs(10))
        .await
        .expect("events");
    let raised_events = events
        .iter()
        .filter(|event| event.header("event_type") == Some("alert.raised"))
        .count();
    assert_eq!(raised_events, WAVE as usize, "one alert.raised event per alert");
    let notified = count(
        &mesh,
        "risk-alert",
        "SELECT count(DISTINCT alert_id) FROM notifications WHERE event_type = 'alert.raised'",
    )
    .await;
    let notifications = count(
        &mesh,
        "risk-alert",
        "SELECT count(*) FROM notifications WHERE event_type = 'alert.raised'",
    )
    .await;
    assert_eq!(
        (notified, notifications),
        (WAVE, WAVE),
        "one notification per alert, to the township office"
    );

    let rolled = count(
        &mesh,
        "risk-alert",
        "SELECT count(*) FROM deadlines WHERE track = 'checkin' AND fired_at IS NULL AND due_at > origin_due",
    )
    .await;
    assert_eq!(rolled, WAVE, "every deadline rolled on, none left without one");
}

/// Writes `size` normal-level people of the home township, all missing the same deadline 3 s
/// from now (grace 0), which the fast policy rolls every 4 s afterwards.
async fn seed_wave(pool: &sqlx::PgPool, size: i64) {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO supervisees (supervisee_id, name, township_code, county_code, level, status, version,
             last_contact_at, episode, episode_since)
         SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid, '浪潮' || n, '620702001',
             '620702', 'normal', 'active', 1, now() - interval '1 hour', 1, now() - interval '30 days'
         FROM generate_series(1, $1) AS n",
    )
    .bind(size)
    .execute(&mut *tx)
    .await
    .expect("people");
    sqlx::query(
        "INSERT INTO deadlines (subject_id, track, due_at, grace_seconds, fire_at, since_at, origin_due)
         SELECT supervisee_id, 'checkin', now() + interval '3 seconds', 0, now() + interval '3 seconds',
             last_contact_at, now() + interval '3 seconds'
         FROM supervisees",
    )
    .execute(&mut *tx)
    .await
    .expect("deadlines");
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn a_dashboard_streaming_the_township_sees_every_alert_of_a_burst() {
    // Fewer than one scheduler batch: the alerts commit together and their notices arrive
    // as one burst, which the fan-out reads in one statement.
    const BURST: i64 = 300;
    let mesh = fast_risk_alert(&[])
        .start(&["risk-alert"])
        .await
        .expect("risk-alert");
    let token = mesh.token(&home_officer());
    let mut stream = alert_changes(&mesh, home_jurisdiction(), &token).await;
    seed_wave(&mesh.pool("risk-alert").expect("pool"), BURST).await;

    let mut seen = HashSet::new();
    while seen.len() < BURST as usize {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("the stream goes on until every alert of the burst is seen")
            .expect("no stream error")
            .expect("the stream is open");
        assert_eq!(message.change(), pb::AlertChange::Raised);
        seen.insert(message.alert.expect("alert").alert_id);
    }
    assert_eq!(
        count(&mesh, "risk-alert", "SELECT count(*) FROM alerts").await,
        BURST,
        "each alert seen once, none other raised"
    );
}
