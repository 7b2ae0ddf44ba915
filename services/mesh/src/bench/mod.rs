//! `mesh bench`: measures the mesh on this machine against the local broker and PostgreSQL,
//! each figure beside the ceilings measured in the same run, and writes them as JSON and
//! markdown under a results folder. Stages (each skipped when its size is 0):
//! - end to end (`ingest.rs`): concurrent gRPC clients → checkin → PostgreSQL → outbox →
//!   broker → risk-alert caught up; single check-ins and offline batches;
//! - ceilings (`ceilings.rs`): a raw batched insert of the same rows, and the broker's raw
//!   produce rate;
//! - risk-alert alone (`risk_alert.rs`): its apply rate with events produced directly, and
//!   the delay from a missed deadline to the signed webhook;
//! - at scale (`scale.rs`): N supervisees seeded, deadline → alert under churn, a wave of
//!   deadlines passing at once, peak memory and database size.

use std::{path::PathBuf, time::Duration};

use chrono::Utc;
use mesh_kit::{kafka::Topics, proto_time::to_timestamp};
use mesh_proto::registry::{SuperviseeRegistered, SuperviseeSnapshot};
use prost::Message;
use rdkafka::producer::FutureProducer;

use crate::harness::{self, Infra, Mesh, publish_event};

mod ceilings;
mod ingest;
pub mod report;
mod risk_alert;
mod scale;

use report::Report;

/// The webhook secret of the bench's receiver.
const SECRET: &str = "benchmark-webhook-secret-0123456789abcdef";

/// What to measure, and how much.
#[derive(Debug, Clone)]
pub struct Options {
    /// Check-ins recorded through the check-in service (end to end) and produced straight
    /// to risk-alert (its own rate); also the rows of the ceilings.
    pub checkins: usize,
    /// Concurrent gRPC clients of the end-to-end stage.
    pub clients: usize,
    /// Offline batches uploaded end to end, and their size.
    pub offline_batches: usize,
    pub offline_batch_size: usize,
    /// People the check-ins are spread over.
    pub supervisees: usize,
    /// Deadlines of the deadline → webhook stage.
    pub deadlines: usize,
    /// Supervisees seeded for the scale stage, and the deadlines of its wave.
    pub scale: usize,
    pub wave: usize,
    /// Check-ins per second of steady churn while deadlines are measured at scale.
    pub churn: u64,
    /// Where `bench.json` and `bench.md` go.
    pub out: PathBuf,
}

impl Options {
    /// A run of seconds that goes through every stage (CI runs it so the bench cannot rot).
    pub fn smoke(out: PathBuf) -> Self {
        Self {
            checkins: 300,
            clients: 8,
            offline_batches: 4,
            offline_batch_size: 50,
            supervisees: 30,
            deadlines: 20,
            scale: 2_000,
            wave: 500,
            churn: 10,
            out,
        }
    }
}

/// Runs every stage and writes the report; returns it.
pub async fn run(infra: Infra, options: Options, command: String) -> anyhow::Result<Report> {
    let log_dir = std::env::temp_dir().join("mesh-bench");
    let producer = harness::producer(&infra.brokers)?;
    let mut report = Report {
        command,
        ..Report::default()
    };
    println!(
        "mesh bench on {} cores (services, broker, PostgreSQL and clients share them)",
        report::cores()
    );
    if options.checkins > 0 || options.offline_batches > 0 {
        ingest::end_to_end(&mut report, &infra, &producer, &log_dir, &options).await?;
        ceilings::measure(
            &mut report,
            &infra,
            &producer,
            &log_dir,
            options.checkins.max(1000),
        )
        .await?;
        ceilings::ratios(&mut report);
    }
    if options.checkins > 0 {
        risk_alert::throughput(
            &mut report,
            &infra,
            &producer,
            &log_dir,
            (options.checkins, options.supervisees),
        )
        .await?;
    }
    if options.deadlines > 0 {
        risk_alert::latency(&mut report, infra.clone(), &producer, &log_dir, options.deadlines).await?;
    }
    if options.scale > 0 {
        scale::at_scale(
            &mut report,
            &infra,
            &producer,
            &log_dir,
            (options.scale, options.wave, options.churn),
        )
        .await?;
    }
    report.write(&options.out)?;
    println!("\n{}\nwritten to {}", report.table(), options.out.display());
    Ok(report)
}

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

/// A `supervisee.registered` event of an active person of the home township.
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

/// Publishes the registration of `ids` onto the registry topic, as the registry would.
async fn register_all(producer: &FutureProducer, mesh: &Mesh, ids: &[String]) -> anyhow::Result<()> {
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
    .await
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

async fn futures_join<F: std::future::Future<Output = anyhow::Result<()>>>(
    futures: impl IntoIterator<Item = F>,
) -> anyhow::Result<()> {
    for result in futures::future::join_all(futures).await {
        result?;
    }
    Ok(())
}

/// Waits until the service behind `pool` has applied `count` events (of `topic`, or of all
/// its topics).
async fn wait_for_inbox(
    pool: &sqlx::PgPool,
    topic: Option<&str>,
    count: i64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let applied: i64 =
            sqlx::query_scalar("SELECT count(*) FROM kit_inbox WHERE $1::text IS NULL OR topic = $1")
                .bind(topic)
                .fetch_one(pool)
                .await?;
        if applied >= count {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{applied} of {count} events applied within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
