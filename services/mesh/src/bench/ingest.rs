//! The end-to-end stage of `mesh bench`: the path a check-in really takes. Concurrent gRPC
//! clients call `RecordCheckin` (then `SyncOfflineBatch`) on the check-in service, which
//! stores each with its outbox event; the relay publishes it; risk-alert applies it. The
//! clock starts at the first call and stops when risk-alert has applied the last check-in.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use mesh_proto::checkin::{
    self as checkin_pb, SyncItemOutcome, checkin_service_client::CheckinServiceClient,
};
use rdkafka::producer::FutureProducer;
use tonic::transport::Channel;

use super::{Options, bench_mesh, register_all, report::Report, wait_for_inbox};
use crate::harness::{Infra, authorized, new_checkin, officer};

/// Policy under which check-ins only move deadlines (nothing falls due during the run).
pub(super) const QUIET_POLICY: [(&str, &str); 2] = [
    ("MESH_POLICY_NORMAL_INTERVAL", "1000h"),
    ("MESH_ABSCONDING_WARNING_AFTER", "2000h"),
];

/// The 64 clients play many phones with one officer's token, thousands of writes a second:
/// the bench measures the pipeline, not a caller, so the per-caller write limit is off.
const UNLIMITED_WRITES: [(&str, &str); 1] = [("MESH_WRITE_RATE_PER_SEC", "0")];

/// What one kind of call measured.
struct Calls {
    /// Latency of each call, milliseconds, sorted.
    latencies: Vec<f64>,
    /// From the first call to the last answer.
    acknowledged: Duration,
    /// From the first call until risk-alert applied the last check-in.
    applied: Duration,
}

pub(super) async fn end_to_end(
    report: &mut Report,
    infra: &Infra,
    producer: &FutureProducer,
    log_dir: &std::path::Path,
    options: &Options,
) -> anyhow::Result<()> {
    println!(
        "== end to end: {} check-ins from {} clients, {} offline batches of {} ==",
        options.checkins, options.clients, options.offline_batches, options.offline_batch_size
    );
    let mut mesh = bench_mesh(infra.clone(), log_dir).await?;
    let risk = mesh.spawn("risk-alert", &QUIET_POLICY).await?;
    let checkin = mesh.spawn("checkin", &UNLIMITED_WRITES).await?;
    let ids: Arc<Vec<String>> = Arc::new(
        (0..options.supervisees)
            .map(|_| uuid::Uuid::now_v7().to_string())
            .collect(),
    );
    register_all(producer, &mesh, &ids).await?;
    let (risk_pool, checkin_pool) = (mesh.pool("risk-alert")?, mesh.pool("checkin")?);
    let people = ids.len() as i64;
    wait_for_inbox(&checkin_pool, None, people, Duration::from_secs(120)).await?;
    wait_for_inbox(&risk_pool, None, people, Duration::from_secs(120)).await?;
    let client = Client {
        channel: checkin.channel().await?,
        token: Arc::new(mesh.token(&officer("bench-officer", "620702001"))),
        ids,
    };
    let topic = mesh.topics.checkin.clone();

    let mut expected = 0;
    if options.checkins > 0 {
        expected += options.checkins as i64;
        let calls = client
            .run(options.checkins, options.clients, Client::record)
            .await?;
        let applied = settle(&risk_pool, &topic, expected, calls).await?;
        add(
            report,
            "RecordCheckin",
            options.checkins,
            &applied,
            ("check-ins", "check-ins/s"),
        );
    }
    if options.offline_batches > 0 {
        let size = options.offline_batch_size;
        expected += (options.offline_batches * size) as i64;
        let calls = client
            .run(options.offline_batches, options.clients, move |client, n| {
                client.sync(n, size)
            })
            .await?;
        let applied = settle(&risk_pool, &topic, expected, calls).await?;
        add(
            report,
            "SyncOfflineBatch",
            options.offline_batches * size,
            &applied,
            ("offline check-ins", "offline check-ins/s"),
        );
    }
    checkin.stop(Duration::from_secs(30)).await?;
    risk.stop(Duration::from_secs(30)).await?;
    Ok(())
}

/// Waits until risk-alert applied `expected` check-ins; `calls` with the time that took.
async fn settle(
    pool: &sqlx::PgPool,
    topic: &str,
    expected: i64,
    calls: (Vec<f64>, Duration, Instant),
) -> anyhow::Result<Calls> {
    let (latencies, acknowledged, started) = calls;
    wait_for_inbox(pool, Some(topic), expected, Duration::from_secs(1800)).await?;
    Ok(Calls {
        latencies,
        acknowledged,
        applied: started.elapsed(),
    })
}

fn add(report: &mut Report, rpc: &str, items: usize, calls: &Calls, (what, unit): (&str, &'static str)) {
    let per_second = |elapsed: Duration| items as f64 / elapsed.as_secs_f64();
    report.add(
        "end to end",
        format!("{rpc}: applied by risk-alert"),
        per_second(calls.applied),
        unit,
        format!("{items} {what}; clock stops when risk-alert applied the last"),
    );
    report.add(
        "end to end",
        format!("{rpc}: acknowledged"),
        per_second(calls.acknowledged),
        unit,
        "answered to the clients",
    );
    report.add_quantiles(
        "end to end",
        &format!("{rpc} latency"),
        &calls.latencies,
        &[("p50", 0.5), ("p99", 0.99)],
        "ms",
        &format!("{} calls", calls.latencies.len()),
    );
}

/// The clients' shared connection and identity.
#[derive(Clone)]
struct Client {
    channel: Channel,
    token: Arc<String>,
    ids: Arc<Vec<String>>,
}

impl Client {
    /// Makes `calls` calls of `call(n)` from `clients` concurrent tasks; returns the sorted
    /// latencies, the time until the last answer, and when the first call went out.
    async fn run<F, Fut>(
        &self,
        calls: usize,
        clients: usize,
        call: F,
    ) -> anyhow::Result<(Vec<f64>, Duration, Instant)>
    where
        F: Fn(Client, usize) -> Fut + Send + Sync + Copy + 'static,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
    {
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients.max(1))
            .map(|_| {
                let (client, next) = (self.clone(), next.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= calls {
                            return Ok::<_, anyhow::Error>(latencies);
                        }
                        let sent = Instant::now();
                        call(client.clone(), n).await?;
                        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    }
                })
            })
            .collect();
        let mut latencies = Vec::with_capacity(calls);
        for task in tasks {
            latencies.extend(task.await??);
        }
        let acknowledged = started.elapsed();
        latencies.sort_by(f64::total_cmp);
        Ok((latencies, acknowledged, started))
    }

    /// The `n`th check-in: a person in turn, at a device time that moves on (an hour ago,
    /// plus a millisecond per check-in).
    fn checkin(&self, n: usize, offline: bool) -> checkin_pb::NewCheckin {
        let base = Utc::now() - chrono::Duration::hours(if offline { 2 } else { 1 });
        let at = base + chrono::Duration::milliseconds(n as i64);
        checkin_pb::NewCheckin {
            captured_offline: offline,
            ..new_checkin(&self.ids[n % self.ids.len()], at)
        }
    }

    async fn record(self, n: usize) -> anyhow::Result<()> {
        let request = checkin_pb::RecordCheckinRequest {
            checkin: Some(self.checkin(n, false)),
        };
        CheckinServiceClient::new(self.channel.clone())
            .record_checkin(authorized(request, &self.token))
            .await?;
        Ok(())
    }

    async fn sync(self, batch: usize, size: usize) -> anyhow::Result<()> {
        let request = checkin_pb::SyncOfflineBatchRequest {
            checkins: (0..size).map(|i| self.checkin(batch * size + i, true)).collect(),
        };
        let response = CheckinServiceClient::new(self.channel.clone())
            .sync_offline_batch(authorized(request, &self.token))
            .await?
            .into_inner();
        if let Some(refused) = response
            .results
            .iter()
            .find(|item| item.outcome() != SyncItemOutcome::Accepted)
        {
            anyhow::bail!(
                "offline item {} not accepted: {:?} {}",
                refused.index,
                refused.outcome(),
                refused.reject_reason
            );
        }
        Ok(())
    }
}
