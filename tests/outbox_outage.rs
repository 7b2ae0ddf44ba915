//! A broker outage delays events but loses none: with the broker down, registrations still
//! succeed; once it is back, every event arrives exactly once, in outbox order. Published
//! rows leave the outbox after the retention, so it does not keep every event ever sent.

use std::time::Duration;

use mesh::harness::{Infra, TansuProcess};
use mesh_e2e::{authorized, eventually, home_officer, register, registration, registry_alone};
use mesh_proto::registry as pb;

#[tokio::test]
async fn events_written_while_the_broker_is_down_arrive_once_in_order() {
    let broker_dir = std::env::temp_dir().join(format!("mesh-e2e-tansu-{}", uuid::Uuid::new_v4().simple()));
    let mut broker = TansuProcess::start(&broker_dir)
        .await
        .expect("private broker starts");
    let base = Infra::from_env();
    let infra = Infra {
        brokers: broker.brokers(),
        ..base
    };
    let fast_retry = [("MESH_KAFKA_MESSAGE_TIMEOUT_MS", "3000")];
    let mut mesh = registry_alone(infra, &fast_retry).await;
    let token = mesh.token(&home_officer());

    // Before the outage: one registration goes straight through.
    let first = register(&mesh, registration(20)).await;
    let before = mesh.tap(&mesh.topics.registry).expect("tap");
    assert_eq!(
        before
            .collect(1, Duration::from_secs(30))
            .await
            .expect("events")
            .len(),
        1
    );
    drop(before);

    broker.kill().await.expect("broker killed");
    // During the outage: registrations and a change of the first supervisee all succeed.
    for n in 21..26 {
        mesh.registry()
            .register_supervisee(authorized(registration(n), &token))
            .await
            .expect("accepted while down");
    }
    mesh.registry()
        .change_level(authorized(
            pb::ChangeLevelRequest {
                supervisee_id: first,
                level: pb::SupervisionLevel::Strict as i32,
                reason: "assessment during outage".into(),
            },
            &token,
        ))
        .await
        .expect("change accepted while down");
    let pool = mesh.pool("registry").expect("pool");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM kit_outbox WHERE published_at IS NULL")
        .fetch_one(&pool)
        .await
        .expect("pending");
    assert_eq!(pending, 6, "the six events wait in the outbox");

    broker.restart().await.expect("broker back");
    let tap = mesh.tap(&mesh.topics.registry).expect("tap");
    // Read until nothing new arrives for a while, so a duplicate would be seen too.
    let events = tap.collect(100, Duration::from_secs(15)).await.expect("events");
    let received: Vec<uuid::Uuid> = events
        .iter()
        .map(|e| e.header("event_id").expect("event_id").parse().expect("uuid"))
        .collect();
    let outbox_order: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT event_id FROM kit_outbox ORDER BY id")
        .fetch_all(&pool)
        .await
        .expect("outbox");
    assert_eq!(outbox_order.len(), 7);
    assert_eq!(received, outbox_order, "each event exactly once, in outbox order");
    let unpublished: i64 = sqlx::query_scalar("SELECT count(*) FROM kit_outbox WHERE published_at IS NULL")
        .fetch_one(&pool)
        .await
        .expect("pending");
    assert_eq!(unpublished, 0);
    mesh.stop_all().await.expect("graceful stop");
    broker.kill().await.expect("broker stopped");
    let _ = std::fs::remove_dir_all(&broker_dir);
}

#[tokio::test]
async fn published_events_leave_the_outbox_after_the_retention() {
    let mesh = registry_alone(Infra::from_env(), &[("MESH_OUTBOX_RETENTION_SECS", "1")]).await;
    let pool = mesh.pool("registry").expect("pool");
    let outbox = async || -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM kit_outbox")
            .fetch_one(&pool)
            .await
            .expect("outbox")
    };
    for n in 40..43 {
        register(&mesh, registration(n)).await;
    }
    let events = mesh
        .tap(&mesh.topics.registry)
        .expect("tap")
        .collect(3, Duration::from_secs(30))
        .await
        .expect("events");
    assert_eq!(events.len(), 3, "every event was published");
    eventually("the published rows purged", Duration::from_secs(15), async || {
        (outbox().await == 0).then_some(())
    })
    .await;
    // What the changes wrote besides stays: the audit record of each.
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM kit_audit_log WHERE action = 'supervisee.registered'")
            .fetch_one(&pool)
            .await
            .expect("audit");
    assert_eq!(audited, 3);
}
