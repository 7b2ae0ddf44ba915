//! The scale stage of `mesh bench`: risk-alert watching a whole country's caseload. It
//! seeds N active supervisees with their deadlines straight into risk-alert's tables (COPY,
//! with progress), then, under steady check-in churn, measures missed deadline → alert
//! raised and → signed webhook received for people registered meanwhile; then makes a wave
//! of deadlines pass in the same second and times until every alert is raised and every
//! notification delivered (the township's endpoint takes batches, as a township's system
//! expecting waves would register it). Last, risk-alert's peak resident memory and its database size.

use std::{
    sync::Arc,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use mesh_kit::proto_time::to_timestamp;
use mesh_proto::{
    checkin::{CheckinMethod, CheckinRecorded},
    common::Jurisdiction,
};
use prost::Message;
use rdkafka::producer::FutureProducer;
use uuid::Uuid;

use super::{
    bench_mesh, publish,
    report::Report,
    risk_alert::{Delay, TAIL, delays, register_probes, webhook_receiver},
    wait_for_inbox,
};
use crate::harness::Infra;

/// Seeded people are strict-level with a long interval: churn moves their deadlines far
/// away. Probes are normal-level: their deadline passes 3 s after they report in.
const POLICY: [(&str, &str); 7] = [
    ("MESH_POLICY_STRICT_INTERVAL", "1000h"),
    ("MESH_POLICY_STRICT_IN_PERSON_INTERVAL", "off"),
    ("MESH_POLICY_NORMAL_INTERVAL", "3s"),
    ("MESH_POLICY_NORMAL_GRACE", "0s"),
    ("MESH_ABSCONDING_WARNING_AFTER", "1000h"),
    ("MESH_WEBHOOK_ALLOW_HTTP", "true"),
    ("MESH_WEBHOOK_RETRY_MAX_SECS", "5"),
];
/// Rows per COPY (one progress line each).
const SEED_CHUNK: usize = 50_000;
/// People registered to measure deadline → alert under churn.
const PROBES: usize = 200;
/// How long risk-alert runs before deadlines are measured (past the lag settle time).
const WARM_UP: Duration = Duration::from_secs(20);
/// Most notifications the township's endpoint takes in one POST.
const MAX_BATCH_SIZE: u32 = 100;
/// How long a wave may take before the bench reports how far it got.
const WAVE_TIMEOUT: Duration = Duration::from_secs(900);

/// The id of the `n`th seeded person (deterministic, so churn can pick anyone).
fn seeded(n: usize) -> Uuid {
    Uuid::from_u128((0x5eed_u128 << 112) | n as u128)
}

pub(super) async fn at_scale(
    report: &mut Report,
    infra: &Infra,
    producer: &FutureProducer,
    log_dir: &std::path::Path,
    (people, wave, churn_rate): (usize, usize, u64),
) -> anyhow::Result<()> {
    println!("== at scale: {people} active supervisees ==");
    let mut mesh = bench_mesh(infra.clone(), log_dir).await?;
    let risk = mesh.spawn("risk-alert", &POLICY).await?;
    let warm = Instant::now() + WARM_UP;
    let pool = mesh.pool("risk-alert")?;
    let receiver = webhook_receiver(&mesh, &risk, MAX_BATCH_SIZE).await?;

    let started = Instant::now();
    seed(&pool, people).await?;
    report.add(
        "scale",
        "seeding (COPY)",
        people as f64 / started.elapsed().as_secs_f64(),
        "supervisees/s",
        format!("{people} supervisees, 2 deadlines each, into risk-alert's tables"),
    );

    // Deadline → alert under churn, in the steady state: after its start, risk-alert trusts
    // its consumer's progress only once the broker has been reachable for the lag settle
    // time (15 s), and defers deadlines until then.
    tokio::time::sleep_until(warm.into()).await;
    let churning = Arc::new(AtomicBool::new(true));
    let churn = tokio::spawn(churn(
        producer.clone(),
        mesh.topics.checkin.clone(),
        (people, churn_rate),
        churning.clone(),
    ));
    register_probes(producer, &mesh, PROBES).await?;
    let received = receiver
        .wait_for(Duration::from_secs(120), |r| r.len() >= PROBES)
        .await;
    churning.store(false, Ordering::Relaxed);
    let churned = churn.await??;
    // Applied before the wave: a check-in applied after it would rightly move a deadline
    // of the wave away.
    wait_for_inbox(
        &pool,
        Some(&mesh.topics.checkin),
        churned as i64,
        Duration::from_secs(120),
    )
    .await?;
    anyhow::ensure!(
        received.len() >= PROBES,
        "only {} of {PROBES} probe alerts arrived",
        received.len()
    );
    for (delay, what) in [
        (Delay::Raised, "alert raised"),
        (Delay::Received, "signed webhook received"),
    ] {
        report.add_quantiles(
            "scale",
            &format!("at {people}: deadline → {what}"),
            &delays(&received, delay),
            &TAIL,
            "ms",
            &format!("{PROBES} probes under {churn_rate} check-ins/s of churn ({churned} in all)"),
        );
    }

    // A wave of deadlines passing in the same second.
    let wave = wave.min(people);
    if wave > 0 {
        let before = receiver.count();
        let posts_before = receiver.posts().len();
        let alerts_before = alerts(&pool).await?;
        let at =
            Utc::now() + chrono::Duration::seconds(5) + chrono::Duration::milliseconds((wave / 50) as i64);
        let ids: Vec<Uuid> = (0..wave).map(seeded).collect();
        sqlx::query(
            "UPDATE deadlines SET due_at = $2, fire_at = $2, origin_due = $2
             WHERE track = 'checkin' AND subject_id = ANY($1)",
        )
        .bind(&ids)
        .bind(at)
        .execute(&pool)
        .await?;
        // The deadline, or when the wave's deadlines were written if that took longer.
        let start = at.max(Utc::now());
        let from = Instant::now() + (start - Utc::now()).to_std().unwrap_or_default();
        // Counting a million alerts takes a tenth of a second of PostgreSQL: polled once a
        // second so the bench does not take the machine from what it measures, and timed by
        // the last alert's own raising time.
        let raised = wait_until(WAVE_TIMEOUT, Duration::from_secs(1), async || {
            Ok(alerts(&pool).await? >= alerts_before + wave as i64)
        })
        .await?;
        let last_raised: Option<chrono::DateTime<Utc>> =
            sqlx::query_scalar("SELECT max(raised_at) FROM alerts")
                .fetch_one(&pool)
                .await?;
        report_wave(
            report,
            wave,
            "all alerts raised",
            raised
                .and(last_raised)
                .map(|last| (last - start).to_std().unwrap_or_default()),
        );
        let delivered = wait_until(WAVE_TIMEOUT, Duration::from_millis(100), async || {
            Ok(receiver.count() >= before + wave)
        })
        .await?;
        report_wave(
            report,
            wave,
            "all notifications delivered",
            delivered.map(|done| done.saturating_duration_since(from)),
        );
        report.add(
            "scale",
            format!("wave of {wave}: webhook POSTs"),
            (receiver.posts().len() - posts_before) as f64,
            "POSTs",
            format!("batches of up to {MAX_BATCH_SIZE}"),
        );
        if delivered.is_none() {
            report.add(
                "scale",
                format!("wave of {wave}: delivered within the timeout"),
                (receiver.count() - before) as f64,
                "notifications",
                format!("of {wave}, in {} s", WAVE_TIMEOUT.as_secs()),
            );
        }
    }

    if let Some(kib) = risk.pid().and_then(peak_rss_kib) {
        report.add(
            "scale",
            "risk-alert peak RSS",
            kib as f64 / 1024.0,
            "MiB",
            "VmHWM",
        );
    }
    let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(&pool)
        .await?;
    report.add(
        "scale",
        "risk-alert database size",
        size as f64 / (1024.0 * 1024.0),
        "MiB",
        format!("{people} supervisees"),
    );
    risk.stop(Duration::from_secs(30)).await?;
    Ok(())
}

fn report_wave(report: &mut Report, wave: usize, what: &str, took: Option<Duration>) {
    match took {
        Some(took) => report.add(
            "scale",
            format!("wave of {wave}: {what}"),
            took.as_secs_f64(),
            "s",
            "from the deadline",
        ),
        None => println!("  wave of {wave}: not {what} within {} s", WAVE_TIMEOUT.as_secs()),
    }
}

/// Polls `done` every `poll` until it holds (returns when) or `timeout` passes (`None`).
async fn wait_until(
    timeout: Duration,
    poll: Duration,
    mut done: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Option<Instant>> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done().await? {
            return Ok(Some(Instant::now()));
        }
        tokio::time::sleep(poll).await;
    }
    Ok(None)
}

async fn alerts(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM alerts")
        .fetch_one(pool)
        .await?)
}

/// COPYs `people` active strict-level supervisees of the home township, each with a
/// check-in deadline and an absconding deadline a month away (spread over a day).
async fn seed(pool: &sqlx::PgPool, people: usize) -> anyhow::Result<()> {
    let now = Utc::now();
    let stamp = |time: DateTime<Utc>| time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (contact, since) = (
        stamp(now - chrono::Duration::hours(1)),
        stamp(now - chrono::Duration::days(30)),
    );
    let mut conn = pool.acquire().await?;
    for start in (0..people).step_by(SEED_CHUNK) {
        let end = (start + SEED_CHUNK).min(people);
        let mut supervisees = String::new();
        let mut deadlines = String::new();
        for n in start..end {
            let id = seeded(n);
            supervisees.push_str(&format!(
                "{id},基准{n},620702001,620702,strict,active,1,{contact},1,{since}\n"
            ));
            let due =
                stamp(now + chrono::Duration::days(30) + chrono::Duration::seconds((n % 86_400) as i64));
            for track in ["checkin", "absconding_warning"] {
                deadlines.push_str(&format!("{id},{track},{due},0,{due},{contact},{due}\n"));
            }
        }
        let mut copy = conn
            .copy_in_raw(
                "COPY supervisees (supervisee_id, name, township_code, county_code, level, status, version,
                     last_contact_at, episode, episode_since) FROM STDIN WITH (FORMAT csv)",
            )
            .await?;
        copy.send(supervisees.into_bytes()).await?;
        copy.finish().await?;
        let mut copy = conn
            .copy_in_raw(
                "COPY deadlines (subject_id, track, due_at, grace_seconds, fire_at, since_at, origin_due)
                 FROM STDIN WITH (FORMAT csv)",
            )
            .await?;
        copy.send(deadlines.into_bytes()).await?;
        copy.finish().await?;
        println!("  seeded {end} of {people}");
    }
    for table in ["supervisees", "deadlines"] {
        sqlx::query(&format!("ANALYZE {table}"))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Check-ins of seeded people at a steady rate until `churning` is cleared (each sent
/// without waiting for the one before); returns how many were produced.
async fn churn(
    producer: FutureProducer,
    topic: String,
    (people, per_second): (usize, u64),
    churning: Arc<AtomicBool>,
) -> anyhow::Result<u64> {
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / per_second.max(1)));
    let mut sends = tokio::task::JoinSet::new();
    let mut sent = 0u64;
    while churning.load(Ordering::Relaxed) {
        tick.tick().await;
        let person = seeded((sent as usize * 7919) % people.max(1)).to_string();
        let event = CheckinRecorded {
            supervisee_id: person.clone(),
            checkin_id: Uuid::new_v4().to_string(),
            method: CheckinMethod::AppSelfCheckin as i32,
            device_time: Some(to_timestamp(Utc::now())),
            received_at: Some(to_timestamp(Utc::now())),
            jurisdiction: Some(Jurisdiction {
                township_code: "620702001".into(),
                county_code: "620702".into(),
            }),
            identity_verified: true,
            ..Default::default()
        };
        let (producer, topic) = (producer.clone(), topic.clone());
        sends.spawn(async move {
            publish(
                &producer,
                &topic,
                &person,
                "checkin.recorded",
                event.encode_to_vec(),
            )
            .await
        });
        sent += 1;
    }
    while let Some(result) = sends.join_next().await {
        result??;
    }
    Ok(sent)
}

/// The peak resident set of process `pid`, KiB (Linux `VmHWM`).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}
