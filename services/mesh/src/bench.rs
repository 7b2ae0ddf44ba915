//! `mesh bench`: measures one risk-alert instance on this machine against the local broker
//! and PostgreSQL — how many check-in events per second it absorbs, and how long after a
//! deadline (plus grace) passes the township's webhook receives the alert. Events are
//! produced straight onto fresh topics (as the registry and check-in services would), so
//! the figures are risk-alert's own.

use std::time::{Duration, Instant};

use chrono::Utc;
use mesh_kit::{
    auth::{Caller, Role},
    kafka::Topics,
    proto_time::to_timestamp,
};
use mesh_proto::{
    alert::{self as alert_pb, alert_service_client::AlertServiceClient},
    checkin::{CheckinMethod, CheckinRecorded},
    common::{GeoPoint, Jurisdiction},
    registry::{SuperviseeRegistered, SuperviseeSnapshot},
};
use prost::Message;
use rdkafka::producer::FutureProducer;

use crate::{
    harness::{self, Infra, Mesh, authorized, publish_event},
    receiver::Receiver,
};

const SECRET: &str = "benchmark-webhook-secret-0123456789abcdef";

async fn publish(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    event_type: &str,
    payload: Vec<u8>,
) -> anyhow::Result<()> {
    publish_event(producer, topic, key, event_type, &payload)
        .await
        .map(drop)
}

fn registered(id: &str, n: usize, reported_at: chrono::DateTime<Utc>) -> Vec<u8> {
    SuperviseeRegistered {
        supervisee: Some(SuperviseeSnapshot {
            name: format!("基准{n}"),
            reported_at: Some(to_timestamp(reported_at)),
            ..harness::supervisee_snapshot(id, 1)
        }),
        actor: None,
        handover_id: String::new(),
    }
    .encode_to_vec()
}

/// Fresh topics of four partitions; its databases go with it.
async fn bench_mesh(infra: Infra, log_dir: &std::path::Path) -> anyhow::Result<Mesh> {
    Mesh::builder()
        .infra(infra)
        .partitions(4)
        .log_dir(log_dir)
        .topics(Topics::unique("bench"))
        .build()
        .await
}

async fn inbox_count(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM kit_inbox")
        .fetch_one(pool)
        .await?)
}

pub async fn run(infra: Infra, checkins: usize, supervisees: usize, deadlines: usize) -> anyhow::Result<()> {
    let log_dir = std::env::temp_dir().join("mesh-bench");
    let producer = harness::producer(&infra.brokers)?;

    if checkins > 0 {
        throughput(&infra, &producer, &log_dir, checkins, supervisees).await?;
    }
    if deadlines > 0 {
        latency(infra, &producer, &log_dir, deadlines).await?;
    }
    Ok(())
}

/// Check-ins per second one risk-alert instance applies.
async fn throughput(
    infra: &Infra,
    producer: &FutureProducer,
    log_dir: &std::path::Path,
    checkins: usize,
    supervisees: usize,
) -> anyhow::Result<()> {
    // Throughput: check-ins only move deadlines (a policy far longer than the run).
    println!("== check-in throughput: {checkins} check-ins over {supervisees} supervisees ==");
    let mut mesh = bench_mesh(infra.clone(), log_dir).await?;
    let quiet_policy = [
        ("MESH_POLICY_NORMAL_INTERVAL", "1000h"),
        ("MESH_ABSCONDING_WARNING_AFTER", "2000h"),
    ];
    let risk = mesh.spawn("risk-alert", &quiet_policy).await?;
    let pool = mesh.pool("risk-alert")?;
    let ids: Vec<String> = (0..supervisees)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    let now = Utc::now();
    futures_join(ids.iter().enumerate().map(|(n, id)| {
        publish(
            producer,
            &mesh.topics.registry,
            id,
            "supervisee.registered",
            registered(id, n, now),
        )
    }))
    .await?;
    wait_for(&pool, supervisees as i64, Duration::from_secs(120)).await?;

    let started = Instant::now();
    let base = Utc::now() - chrono::Duration::hours(1);
    let mut sends = Vec::with_capacity(checkins);
    for n in 0..checkins {
        let id = &ids[n % supervisees];
        let event = CheckinRecorded {
            supervisee_id: id.clone(),
            checkin_id: uuid::Uuid::new_v4().to_string(),
            method: CheckinMethod::AppSelfCheckin as i32,
            device_time: Some(to_timestamp(base + chrono::Duration::milliseconds(n as i64))),
            received_at: Some(to_timestamp(Utc::now())),
            position: Some(GeoPoint {
                latitude: 38.93,
                longitude: 100.45,
                accuracy_m: 10.0,
            }),
            jurisdiction: Some(Jurisdiction {
                township_code: "620702001".into(),
                county_code: "620702".into(),
            }),
            identity_verified: true,
            ..Default::default()
        };
        sends.push(publish(
            producer,
            &mesh.topics.checkin,
            id,
            "checkin.recorded",
            event.encode_to_vec(),
        ));
    }
    futures_join(sends).await?;
    let produced = started.elapsed();
    wait_for(&pool, (supervisees + checkins) as i64, Duration::from_secs(1800)).await?;
    let absorbed = started.elapsed();
    println!(
        "produced in {:.1} s; risk-alert applied all {checkins} in {:.1} s → {:.0} check-ins/s (each: inbox dedup, \
         projection update, deadline reschedule, in one transaction)",
        produced.as_secs_f64(),
        absorbed.as_secs_f64(),
        checkins as f64 / absorbed.as_secs_f64()
    );
    risk.stop(Duration::from_secs(30)).await?;

    Ok(())
}

/// Delay from a deadline passing to the township's webhook receiving the alert.
async fn latency(
    infra: Infra,
    producer: &FutureProducer,
    log_dir: &std::path::Path,
    deadlines: usize,
) -> anyhow::Result<()> {
    // Latency: each supervisee's deadline passes 3 s after its report-in, grace 0.
    println!("\n== deadline → webhook delay: {deadlines} deadlines, default 500 ms scheduler tick ==");
    let mut mesh = bench_mesh(infra, log_dir).await?;
    let policy = [
        ("MESH_POLICY_NORMAL_INTERVAL", "3s"),
        ("MESH_POLICY_NORMAL_GRACE", "0s"),
        ("MESH_ABSCONDING_WARNING_AFTER", "1000h"),
        ("MESH_WEBHOOK_ALLOW_HTTP", "true"),
    ];
    let risk = mesh.spawn("risk-alert", &policy).await?;
    let receiver = Receiver::start(SECRET).await?;
    let office = mesh.token(&Caller {
        subject: "bench-office".into(),
        role: Role::TownshipOffice,
        township: Some("620702001".into()),
        county: Some("620702".into()),
        prison: None,
    });
    AlertServiceClient::new(risk.channel().await?)
        .register_endpoint(authorized(
            alert_pb::RegisterEndpointRequest {
                jurisdiction: Some(Jurisdiction {
                    township_code: "620702001".into(),
                    county_code: "620702".into(),
                }),
                url: receiver.url(),
                secret: SECRET.into(),
                description: "bench".into(),
            },
            &office,
        ))
        .await?;
    let reported_at = Utc::now();
    futures_join((0..deadlines).map(|n| {
        let id = uuid::Uuid::now_v7().to_string();
        let payload = registered(&id, n, reported_at);
        let topic = mesh.topics.registry.clone();

        async move { publish(producer, &topic, &id, "supervisee.registered", payload).await }
    }))
    .await?;
    let received = receiver
        .wait_for(Duration::from_secs(120), |r| r.len() >= deadlines)
        .await;
    anyhow::ensure!(
        received.len() == deadlines,
        "only {} of {deadlines} notifications arrived",
        received.len()
    );
    let mut delays: Vec<f64> = received
        .iter()
        .filter_map(|n| {
            let deadline =
                chrono::DateTime::parse_from_rfc3339(n.body["alert"]["deadline"].as_str()?).ok()?;
            Some((n.received_at - deadline.with_timezone(&Utc)).num_milliseconds() as f64)
        })
        .collect();
    delays.sort_by(f64::total_cmp);
    let percentile = |p: f64| delays[((delays.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "delay from deadline to signed webhook received: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms ({} alerts)",
        percentile(0.5),
        percentile(0.95),
        percentile(1.0),
        delays.len()
    );
    risk.stop(Duration::from_secs(30)).await?;
    Ok(())
}

async fn futures_join<F: std::future::Future<Output = anyhow::Result<()>>>(
    futures: impl IntoIterator<Item = F>,
) -> anyhow::Result<()> {
    for result in futures::future::join_all(futures).await {
        result?;
    }
    Ok(())
}

async fn wait_for(pool: &sqlx::PgPool, count: i64, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while inbox_count(pool).await? < count {
        anyhow::ensure!(
            Instant::now() < deadline,
            "risk-alert did not apply {count} events within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
