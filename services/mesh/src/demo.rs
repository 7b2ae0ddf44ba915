//! The demo scenario run by the README's main command: the registry starts against the
//! local broker and PostgreSQL, officers of Zhangye's townships register supervisees, bad
//! and unauthorised requests are refused, and every `supervisee.*` event is read back from
//! Kafka and decoded.

use std::time::Duration;

use anyhow::Context;
use chrono::NaiveDate;
use mesh_kit::{kafka::REGISTRY_TOPIC, national_id::synthesize, proto_time::to_date};
use mesh_proto::registry::{self as pb, registry_service_client::RegistryServiceClient};
use prost::Message;

use crate::harness::{
    EventTap, Infra, Secrets, ServiceProcess, authorized, county_bureau, officer, service_env,
};

/// Demo database, recreated on every run (the demo's keys are fresh each time).
const DEMO_DATABASE: &str = "mesh_demo_registry";

pub async fn run(infra: Infra) -> anyhow::Result<()> {
    println!("== community-corrections mesh demo ==");
    reset_database(&infra).await?;
    let secrets = Secrets::random();
    let tap = EventTap::from_now(&infra, REGISTRY_TOPIC).context("is the broker up? run scripts/infra up")?;
    let log_dir = std::env::temp_dir().join("mesh-demo");
    let registry = ServiceProcess::spawn(
        "registry",
        &service_env(&infra, &secrets, DEMO_DATABASE),
        &log_dir,
    )
    .await?;
    println!(
        "registry up at {} (log: {})",
        registry.endpoint(),
        registry.log_path.display()
    );
    let mut client = RegistryServiceClient::new(registry.channel().await?);

    // Officers of 甘州区 东街街道 (620702001) and 民乐县 洪水镇 (620722001).
    let ganzhou = secrets.token(&officer("officer-ganzhou-1", "620702001"));
    let minle = secrets.token(&officer("officer-minle-1", "620722001"));
    let other_township = secrets.token(&officer("officer-ganzhou-2", "620702002"));
    let bureau = secrets.token(&county_bureau("bureau-ganzhou", "620702"));

    println!("\n-- registering supervisees --");
    let zhang = register(
        &mut client,
        &ganzhou,
        "张伟",
        "620702",
        1,
        pb::SupervisionLevel::Strict,
        "620702001",
    )
    .await?;
    let li = register(
        &mut client,
        &ganzhou,
        "李娜",
        "620702",
        2,
        pb::SupervisionLevel::Normal,
        "620702001",
    )
    .await?;
    let wang = register(
        &mut client,
        &minle,
        "王强",
        "620722",
        3,
        pb::SupervisionLevel::Lenient,
        "620722001",
    )
    .await?;

    println!("\n-- requests the registry refuses --");
    let mut bad = registration("赵敏", "620702", 4, pb::SupervisionLevel::Normal, "620702001");
    bad.national_id
        .replace_range(17..18, if bad.national_id.ends_with('0') { "1" } else { "0" });
    show_refusal(
        "wrong ID check digit",
        client.register_supervisee(authorized(bad, &ganzhou)).await,
    );
    let duplicate = registration("张伟", "620702", 1, pb::SupervisionLevel::Strict, "620702001");
    show_refusal(
        "same person registered twice",
        client.register_supervisee(authorized(duplicate, &ganzhou)).await,
    );
    let get = pb::GetSuperviseeRequest {
        supervisee_id: zhang.clone(),
    };
    show_refusal(
        "officer of another township reads",
        client.get_supervisee(authorized(get, &other_township)).await,
    );

    println!("\n-- changes --");
    client
        .change_status(authorized(
            pb::ChangeStatusRequest {
                supervisee_id: zhang.clone(),
                status: pb::SuperviseeStatus::Active as i32,
                reason: "reported in at 东街街道司法所".into(),
                effective_at: None,
            },
            &ganzhou,
        ))
        .await?;
    println!("张伟 reported in: status → active");
    client
        .change_level(authorized(
            pb::ChangeLevelRequest {
                supervisee_id: li.clone(),
                level: pb::SupervisionLevel::Strict as i32,
                reason: "quarterly assessment".into(),
            },
            &ganzhou,
        ))
        .await?;
    println!("李娜 level → strict");
    client
        .transfer_supervisee(authorized(
            pb::TransferSuperviseeRequest {
                supervisee_id: wang.clone(),
                to_township_code: "620722002".into(),
                to_county_code: "620722".into(),
                to_officer_id: "officer-minle-2".into(),
                reason: "moved to 六坝镇".into(),
            },
            &minle,
        ))
        .await?;
    println!("王强 transferred 洪水镇 → 六坝镇");
    let listed = client
        .list_supervisees(authorized(
            pb::ListSuperviseesRequest {
                township_code: "620702001".into(),
                status: 0,
                page: None,
            },
            &bureau,
        ))
        .await?
        .into_inner();
    println!(
        "county bureau lists 东街街道: {} supervisees",
        listed.supervisees.len()
    );
    for s in &listed.supervisees {
        println!(
            "  {} {} level={:?} status={:?}",
            s.name,
            s.national_id_masked,
            s.level(),
            s.status()
        );
    }

    println!("\n-- events on Kafka topic {REGISTRY_TOPIC} --");
    let events = tap.collect(6, Duration::from_secs(20)).await?;
    for event in &events {
        println!(
            "  p{}@{} {:<26} key={} event_id={} traceparent={}",
            event.partition,
            event.offset,
            event.header("event_type").unwrap_or("?"),
            event.key.as_deref().unwrap_or("-"),
            event.header("event_id").unwrap_or("?"),
            event.header("traceparent").unwrap_or("-"),
        );
        println!(
            "      {}",
            describe(event.header("event_type").unwrap_or(""), &event.payload)
        );
    }
    let status = registry.stop(Duration::from_secs(20)).await?;
    println!(
        "\nregistry stopped gracefully ({status}); {} events received (expected 6)",
        events.len()
    );
    anyhow::ensure!(events.len() == 6, "expected 6 events, got {}", events.len());
    Ok(())
}

async fn reset_database(infra: &Infra) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&infra.database_url("postgres")).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {DEMO_DATABASE} WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {DEMO_DATABASE}"))
        .execute(&mut conn)
        .await?;
    Ok(())
}

fn registration(
    name: &str,
    area: &str,
    sequence: u16,
    level: pb::SupervisionLevel,
    township: &str,
) -> pb::RegisterSuperviseeRequest {
    let birth = NaiveDate::from_ymd_opt(1985 + i32::from(sequence), 3, 14).unwrap_or_default();
    pb::RegisterSuperviseeRequest {
        name: name.into(),
        national_id: synthesize(area, birth, sequence),
        category: pb::Category::Probation as i32,
        term_start: NaiveDate::from_ymd_opt(2026, 9, 1).map(to_date),
        term_end: NaiveDate::from_ymd_opt(2028, 8, 31).map(to_date),
        level: level as i32,
        township_code: township.into(),
        county_code: township[..6].into(),
        officer_id: "officer-1".into(),
        phone: "13800000000".into(),
        address: "张掖市 demo address".into(),
        reported_at: None,
        needs_employment: sequence.is_multiple_of(2),
    }
}

async fn register(
    client: &mut RegistryServiceClient<tonic::transport::Channel>,
    token: &str,
    name: &str,
    area: &str,
    sequence: u16,
    level: pb::SupervisionLevel,
    township: &str,
) -> anyhow::Result<String> {
    let response = client
        .register_supervisee(authorized(
            registration(name, area, sequence, level, township),
            token,
        ))
        .await?
        .into_inner();
    let supervisee = response.supervisee.context("response without supervisee")?;
    println!(
        "registered {} ({}) at township {} → id {} status {:?}",
        supervisee.name,
        supervisee.national_id_masked,
        township,
        supervisee.supervisee_id,
        supervisee.status()
    );
    Ok(supervisee.supervisee_id)
}

fn show_refusal<T>(what: &str, result: Result<tonic::Response<T>, tonic::Status>) {
    match result {
        Ok(_) => println!("UNEXPECTED: {what} was accepted"),
        Err(status) => println!("{what}: {:?} — {}", status.code(), status.message()),
    }
}

fn describe(event_type: &str, payload: &[u8]) -> String {
    let snapshot = |s: Option<pb::SuperviseeSnapshot>| {
        s.map(|s| {
            let township = s
                .jurisdiction
                .as_ref()
                .map(|j| j.township_code.clone())
                .unwrap_or_default();
            format!(
                "{} level={:?} status={:?} township={township}",
                s.name,
                s.level(),
                s.status()
            )
        })
        .unwrap_or_default()
    };
    match event_type {
        "supervisee.registered" => pb::SuperviseeRegistered::decode(payload).map(|e| snapshot(e.supervisee)),
        "supervisee.level_changed" => pb::SuperviseeLevelChanged::decode(payload).map(|e| {
            format!(
                "{} (was {:?})",
                snapshot(e.supervisee.clone()),
                e.previous_level()
            )
        }),
        "supervisee.transferred" => pb::SuperviseeTransferred::decode(payload).map(|e| {
            let from = e
                .previous_jurisdiction
                .as_ref()
                .map(|j| j.township_code.clone())
                .unwrap_or_default();
            format!("{} (from {from})", snapshot(e.supervisee))
        }),
        "supervisee.status_changed" => pb::SuperviseeStatusChanged::decode(payload).map(|e| {
            format!(
                "{} (was {:?})",
                snapshot(e.supervisee.clone()),
                e.previous_status()
            )
        }),
        other => return format!("(unknown event type {other})"),
    }
    .unwrap_or_else(|error| format!("(undecodable: {error})"))
}
