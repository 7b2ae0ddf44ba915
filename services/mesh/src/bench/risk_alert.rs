//! The risk-alert stages of `mesh bench`: how many check-in events per second one
//! risk-alert instance absorbs when they are produced straight onto its topics (its own
//! ceiling, without the check-in service in front), and how long after a deadline (plus
//! grace) passes the township's webhook receives the alert.

use std::time::{Duration, Instant};

use chrono::Utc;
use mesh_kit::{
    auth::{Caller, Role},
    proto_time::to_timestamp,
};
use mesh_proto::{
    alert::{self as alert_pb, alert_service_client::AlertServiceClient},
    checkin::{CheckinMethod, CheckinRecorded},
    common::{GeoPoint, Jurisdiction},
};
use prost::Message;
use rdkafka::producer::FutureProducer;

use super::{
    SECRET, bench_mesh, futures_join, ingest::QUIET_POLICY, publish, register_all, registered, wait_for_inbox,
};
use crate::{
    bench::report::Report,
    harness::{Infra, Mesh, ServiceProcess, authorized},
    receiver::{Received, Receiver},
};

/// Check-ins per second one risk-alert instance applies.
pub(super) async fn throughput(
    report: &mut Report,
    infra: &Infra,
    producer: &FutureProducer,
    log_dir: &std::path::Path,
    (checkins, supervisees): (usize, usize),
) -> anyhow::Result<()> {
    // Throughput: check-ins only move deadlines (a policy far longer than the run).
    println!("== risk-alert alone: {checkins} check-in events over {supervisees} supervisees ==");
    let mut mesh = bench_mesh(infra.clone(), log_dir).await?;
    let risk = mesh.spawn("risk-alert", &QUIET_POLICY).await?;
    let pool = mesh.pool("risk-alert")?;
    let ids: Vec<String> = (0..supervisees)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    register_all(producer, &mesh, &ids).await?;
    wait_for_inbox(&pool, None, supervisees as i64, Duration::from_secs(120)).await?;

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
    wait_for_inbox(
        &pool,
        None,
        (supervisees + checkins) as i64,
        Duration::from_secs(1800),
    )
    .await?;
    let absorbed = started.elapsed();
    report.add(
        "risk-alert",
        "risk-alert apply rate (events produced directly)",
        checkins as f64 / absorbed.as_secs_f64(),
        "check-ins/s",
        format!(
            "{checkins} events produced in {:.1} s; applied (inbox, projection, deadlines) in {:.1} s",
            produced.as_secs_f64(),
            absorbed.as_secs_f64()
        ),
    );
    risk.stop(Duration::from_secs(30)).await?;

    Ok(())
}

/// Delay from a deadline passing to the township's webhook receiving the alert.
pub(super) async fn latency(
    report: &mut Report,
    infra: Infra,
    producer: &FutureProducer,
    log_dir: &std::path::Path,
    deadlines: usize,
) -> anyhow::Result<()> {
    // Latency: each supervisee's deadline passes 3 s after its report-in, grace 0.
    println!("== deadline → webhook delay: {deadlines} deadlines ==");
    let mut mesh = bench_mesh(infra, log_dir).await?;
    let policy = [
        ("MESH_POLICY_NORMAL_INTERVAL", "3s"),
        ("MESH_POLICY_NORMAL_GRACE", "0s"),
        ("MESH_ABSCONDING_WARNING_AFTER", "1000h"),
        ("MESH_WEBHOOK_ALLOW_HTTP", "true"),
    ];
    let risk = mesh.spawn("risk-alert", &policy).await?;
    let receiver = webhook_receiver(&mesh, &risk, 0).await?;
    register_probes(producer, &mesh, deadlines).await?;
    let received = receiver
        .wait_for(Duration::from_secs(120), |r| r.len() >= deadlines)
        .await;
    anyhow::ensure!(
        received.len() == deadlines,
        "only {} of {deadlines} notifications arrived",
        received.len()
    );
    let delays = delays(&received, Delay::Received);
    report.add_quantiles(
        "alerts",
        "deadline → signed webhook received",
        &delays,
        &TAIL,
        "ms",
        &format!("{} alerts, grace 0", delays.len()),
    );
    risk.stop(Duration::from_secs(30)).await?;
    Ok(())
}

/// A receiver of the home township's webhooks, registered with `risk` for batches of up to
/// `max_batch_size` notifications (0: one per POST).
pub(super) async fn webhook_receiver(
    mesh: &Mesh,
    risk: &ServiceProcess,
    max_batch_size: u32,
) -> anyhow::Result<Receiver> {
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
                max_batch_size,
            },
            &office,
        ))
        .await?;
    Ok(receiver)
}

/// Registers `count` new people, as the registry would, one after another over up to 10 s
/// (50 ms apart): under the probe policy (normal level, 3 s interval, no grace) each one's
/// deadline passes 3 s after it reported in, so the delays are measured at many instants
/// under the churn, not as one round of the scheduler that raises them all together.
pub(super) async fn register_probes(
    producer: &FutureProducer,
    mesh: &Mesh,
    count: usize,
) -> anyhow::Result<()> {
    let gap = (Duration::from_secs(10) / u32::try_from(count.max(1)).unwrap_or(u32::MAX))
        .min(Duration::from_millis(50));
    for n in 0..count {
        let id = uuid::Uuid::now_v7().to_string();
        let payload = registered(&id, n, Utc::now());
        publish(
            producer,
            &mesh.topics.registry,
            &id,
            "supervisee.registered",
            payload,
        )
        .await?;
        tokio::time::sleep(gap).await;
    }
    Ok(())
}

/// The quantiles a delay is reported at.
pub(super) const TAIL: [(&str, f64); 3] = [("p50", 0.5), ("p99", 0.99), ("max", 1.0)];

/// Which delay after the deadline.
#[derive(Debug, Clone, Copy)]
pub(super) enum Delay {
    /// Until the alert was raised (its `raised_at`).
    Raised,
    /// Until the signed webhook was received.
    Received,
}

/// The delays after the deadline of each received notification, milliseconds, sorted.
pub(super) fn delays(received: &[Received], delay: Delay) -> Vec<f64> {
    let time = |value: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(value.as_str()?)
            .ok()
            .map(|time| time.with_timezone(&Utc))
    };
    let mut delays: Vec<f64> = received
        .iter()
        .filter_map(|notification| {
            let deadline = time(&notification.body["alert"]["deadline"])?;
            let at = match delay {
                Delay::Raised => time(&notification.body["alert"]["raisedAt"])?,
                Delay::Received => notification.received_at,
            };
            Some((at - deadline).num_milliseconds() as f64)
        })
        .collect();
    delays.sort_by(f64::total_cmp);
    delays
}
