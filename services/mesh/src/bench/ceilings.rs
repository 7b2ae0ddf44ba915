//! The ceilings `mesh bench` sets each figure beside, measured in the same run on the same
//! machine: how fast PostgreSQL takes the rows a check-in writes (the check-in row and its
//! outbox row) in plain batched inserts, and how fast the broker takes records of a
//! check-in event's size. No service runs while they are measured.

use std::time::{Duration, Instant};

use chrono::Utc;
use mesh_proto::checkin::CheckinRecorded;
use prost::Message;
use rdkafka::producer::FutureProducer;

use super::{bench_mesh, futures_join, publish, report::Report};
use crate::harness::Infra;

/// Rows per statement (and transaction) of the raw insert.
const ROWS_PER_STATEMENT: usize = 1000;

pub(super) async fn measure(
    report: &mut Report,
    infra: &Infra,
    producer: &FutureProducer,
    log_dir: &std::path::Path,
    rows: usize,
) -> anyhow::Result<()> {
    println!("== ceilings: {rows} rows / records ==");
    let mut mesh = bench_mesh(infra.clone(), log_dir).await?;
    // The check-in service creates its schema; it is stopped before anything is measured.
    mesh.spawn("checkin", &[])
        .await?
        .stop(Duration::from_secs(30))
        .await?;
    let pool = mesh.pool("checkin")?;
    let writers = super::report::cores().max(1);
    let started = Instant::now();
    let chunks: Vec<usize> = (0..rows.div_ceil(ROWS_PER_STATEMENT))
        .map(|chunk| ROWS_PER_STATEMENT.min(rows - chunk * ROWS_PER_STATEMENT))
        .collect();
    for group in chunks.chunks(writers) {
        futures_join(group.iter().map(|&count| insert_checkins(&pool, count))).await?;
    }
    report.add(
        "ceiling",
        "raw batched insert of the same rows",
        rows as f64 / started.elapsed().as_secs_f64(),
        "check-ins/s",
        format!(
            "check-in row + outbox row, UNNEST {ROWS_PER_STATEMENT} per statement and transaction, {writers} writers"
        ),
    );

    let payload = CheckinRecorded {
        supervisee_id: uuid::Uuid::now_v7().to_string(),
        checkin_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    }
    .encode_to_vec();
    let padded = [payload, vec![0u8; 200]].concat();
    let started = Instant::now();
    futures_join((0..rows).map(|n| {
        let key = format!("key-{}", n % 500);
        let payload = padded.clone();
        let topic = mesh.topics.checkin.clone();
        async move { publish(producer, &topic, &key, "checkin.recorded", payload).await }
    }))
    .await?;
    report.add(
        "ceiling",
        "broker raw produce",
        rows as f64 / started.elapsed().as_secs_f64(),
        "records/s",
        format!("{} B records, acks=all, 4 partitions, one producer", padded.len()),
    );
    Ok(())
}

/// One statement per table of `count` check-ins and their outbox rows, in one transaction.
async fn insert_checkins(pool: &sqlx::PgPool, count: usize) -> anyhow::Result<()> {
    let ids: Vec<uuid::Uuid> = (0..count).map(|_| uuid::Uuid::new_v4()).collect();
    let people: Vec<uuid::Uuid> = (0..count).map(|_| uuid::Uuid::now_v7()).collect();
    let now = Utc::now();
    let times: Vec<chrono::DateTime<Utc>> = (0..count)
        .map(|n| now - chrono::Duration::milliseconds(n as i64))
        .collect();
    let payloads: Vec<Vec<u8>> = (0..count).map(|_| vec![7u8; 240]).collect();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO checkins (checkin_id, supervisee_id, method, recording_officer_id, device_time,
             received_at, latitude, longitude, accuracy_m, face_match_score, identity_verified,
             captured_offline, out_of_area, distance_outside_m, township_code, county_code, note,
             content_sha256, recorded_by_subject, recorded_by_role)
         SELECT c.id, c.person, 'app_self_checkin', '', c.at, now(), 38.931, 100.452, 12.0, 0.96,
             true, false, false, 0, '620702001', '620702', '', sha256(c.id::text::bytea),
             'bench-officer', 'officer'
         FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) AS c (id, person, at)",
    )
    .bind(&ids)
    .bind(&people)
    .bind(&times)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO kit_outbox (event_id, topic, event_key, event_type, payload, occurred_at)
         SELECT e.id, 'bench.ceiling', e.person::text, 'checkin.recorded', e.payload, now()
         FROM unnest($1::uuid[], $2::uuid[], $3::bytea[]) AS e (id, person, payload)",
    )
    .bind(&ids)
    .bind(&people)
    .bind(&payloads)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Each end-to-end rate as a share of its ceilings.
pub(super) fn ratios(report: &mut Report) {
    let Some(end_to_end) = report.value("RecordCheckin: applied by risk-alert") else {
        return;
    };
    for (ceiling, name) in [
        ("raw batched insert of the same rows", "end to end / raw insert"),
        ("broker raw produce", "end to end / raw produce"),
    ] {
        if let Some(limit) = report.value(ceiling).filter(|limit| *limit > 0.0) {
            report.add(
                "ratio",
                name,
                100.0 * end_to_end / limit,
                "%",
                "RecordCheckin applied by risk-alert, against the ceiling",
            );
        }
    }
}
