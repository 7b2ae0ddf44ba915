//! The registry end to end: the real binary against real PostgreSQL and Tansu.

use std::time::Duration;

use mesh::harness::{Infra, key_ring};
use mesh_e2e::{
    Mesh, authorized, count, county_bureau, dump, home_officer, officer, prison, register, registration,
    registry_alone, run_misconfigured,
};
use mesh_kit::{error::violated_fields, keyring::KeyRing, transit};
use mesh_proto::registry as pb;
use prost::Message;
use tonic::Code;

async fn count_supervisees(mesh: &Mesh) -> i64 {
    count(mesh, "registry", "SELECT count(*) FROM supervisees").await
}

#[tokio::test]
async fn registered_event_reaches_kafka_and_decodes() {
    let mut mesh = registry_alone(Infra::from_env(), &[]).await;
    let token = mesh.token(&home_officer());
    let response = mesh
        .registry()
        .register_supervisee(authorized(registration(1), &token))
        .await
        .expect("registered")
        .into_inner();
    let supervisee = response.supervisee.expect("supervisee");
    assert_eq!(supervisee.status(), pb::SuperviseeStatus::PendingReportIn);
    assert_eq!(supervisee.national_id_masked.len(), 18);
    assert!(supervisee.national_id_masked.contains("********"));

    let tap = mesh.tap(&mesh.topics.registry).expect("tap");
    let event = tap
        .next(Duration::from_secs(30))
        .await
        .expect("kafka")
        .expect("an event arrives");
    assert_eq!(event.header("event_type"), Some("supervisee.registered"));
    assert_eq!(event.header("producer"), Some("registry"));
    assert_eq!(event.key.as_deref(), Some(supervisee.supervisee_id.as_str()));
    let event_id: uuid::Uuid = event.header("event_id").expect("event_id").parse().expect("uuid");
    assert_eq!(event_id.get_version_num(), 7);
    assert!(event.header("occurred_at").is_some());
    assert!(event.header("traceparent").is_some_and(|t| t.starts_with("00-")));
    let decoded = pb::SuperviseeRegistered::decode(event.payload.as_slice()).expect("decodes");
    let snapshot = decoded.supervisee.expect("snapshot");
    assert_eq!(snapshot.supervisee_id, supervisee.supervisee_id);
    assert_eq!(snapshot.name, "测试人员1");
    assert_eq!(snapshot.level(), pb::SupervisionLevel::Normal);
    assert_eq!(
        snapshot.jurisdiction.expect("jurisdiction").township_code,
        "620702001"
    );
    assert_eq!(decoded.actor.expect("actor").subject, "officer-1");
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn second_open_supervision_of_the_same_person_is_refused() {
    let mut mesh = registry_alone(Infra::from_env(), &[]).await;
    let token = mesh.token(&home_officer());
    let first = mesh
        .registry()
        .register_supervisee(authorized(registration(2), &token))
        .await
        .expect("first registration")
        .into_inner()
        .supervisee
        .expect("supervisee");
    // Same person, different details and even a different (lower-case) spelling of the ID.
    let mut again = registration(2);
    again.name = "另一个名字".into();
    again.national_id = again.national_id.to_lowercase();
    let status = mesh
        .registry()
        .register_supervisee(authorized(again.clone(), &token))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert_eq!(count_supervisees(&mesh).await, 1);

    // Once the first supervision has ended, the person can be registered again.
    mesh.registry()
        .change_status(authorized(
            pb::ChangeStatusRequest {
                supervisee_id: first.supervisee_id,
                status: pb::SuperviseeStatus::Terminated as i32,
                reason: "term completed".into(),
                effective_at: None,
            },
            &token,
        ))
        .await
        .expect("terminated");
    mesh.registry()
        .register_supervisee(authorized(again, &token))
        .await
        .expect("new supervision allowed");
    assert_eq!(count_supervisees(&mesh).await, 2);
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn bad_inputs_name_the_field_and_store_nothing() {
    let mut mesh = registry_alone(Infra::from_env(), &[]).await;
    let token = mesh.token(&home_officer());
    type Mutation = fn(&mut pb::RegisterSuperviseeRequest);
    let cases: Vec<(&str, Mutation)> = vec![
        ("name", |r| r.name = "   ".into()),
        ("name", |r| r.name = "长".repeat(65)),
        ("national_id", |r| r.national_id.truncate(17)),
        ("national_id", |r| {
            let last = if r.national_id.ends_with('0') { "1" } else { "0" };
            r.national_id.replace_range(17..18, last);
        }),
        ("national_id", |r| r.national_id.replace_range(10..14, "1340")),
        ("national_id", |r| r.national_id = "ABCDEFGHIJKLMNOPQR".into()),
        ("category", |r| r.category = 0),
        ("category", |r| r.category = 42),
        ("term_start", |r| r.term_start = None),
        ("term_end", |r| {
            r.term_end = Some(mesh_proto::common::Date {
                year: 2026,
                month: 2,
                day: 30,
            })
        }),
        ("term_end", |r| {
            r.term_end = Some(mesh_proto::common::Date {
                year: 2025,
                month: 1,
                day: 1,
            })
        }),
        ("level", |r| r.level = 0),
        ("township_code", |r| r.township_code = "620702999".into()),
        ("county_code", |r| r.county_code = "620721".into()),
        ("officer_id", |r| r.officer_id = String::new()),
        ("phone", |r| r.phone = "call me".into()),
        ("address", |r| r.address = "\u{7}".into()),
        ("reported_at", |r| {
            r.reported_at = Some(prost_types_timestamp(
                chrono::Utc::now() + chrono::Duration::days(2),
            ))
        }),
    ];
    for (field, mutate) in cases {
        let mut request = registration(3);
        mutate(&mut request);
        let status = mesh
            .registry()
            .register_supervisee(authorized(request, &token))
            .await
            .expect_err(&format!("{field} case must be refused"));
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(
            violated_fields(&status),
            vec![field.to_owned()],
            "{field}: {}",
            status.message()
        );
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    }
    // Several bad fields at once are all named.
    let mut request = registration(3);
    request.name.clear();
    request.level = 0;
    let status = mesh
        .registry()
        .register_supervisee(authorized(request, &token))
        .await
        .expect_err("refused");
    assert_eq!(violated_fields(&status), vec!["name", "level"]);

    assert_eq!(count_supervisees(&mesh).await, 0, "nothing stored");
    let pool = mesh.pool("registry").expect("pool");
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM kit_outbox")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(outbox, 0, "no event emitted");
    mesh.stop_all().await.expect("graceful stop");
}

fn prost_types_timestamp(time: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    mesh_kit::proto_time::to_timestamp(time)
}

#[tokio::test]
async fn callers_outside_the_jurisdiction_are_refused() {
    let mut mesh = registry_alone(Infra::from_env(), &[]).await;
    let neighbour = mesh.token(&officer("officer-9", "620702002"));
    let other_county = mesh.token(&county_bureau("bureau-minle", "620722"));
    let own_county = mesh.token(&county_bureau("bureau-ganzhou", "620702"));
    let a_prison = mesh.token(&prison("prison-1", "zhangye-prison"));

    // Registering into another township is refused and stores nothing.
    let status = mesh
        .registry()
        .register_supervisee(authorized(registration(4), &neighbour))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(count_supervisees(&mesh).await, 0);

    let id = register(&mesh, registration(4)).await;
    for token in [&neighbour, &other_county, &a_prison] {
        let get = mesh
            .registry()
            .get_supervisee(authorized(
                pb::GetSuperviseeRequest {
                    supervisee_id: id.clone(),
                },
                token,
            ))
            .await
            .expect_err("get refused");
        assert_eq!(get.code(), Code::PermissionDenied);
        let change = mesh
            .registry()
            .change_level(authorized(
                pb::ChangeLevelRequest {
                    supervisee_id: id.clone(),
                    level: pb::SupervisionLevel::Strict as i32,
                    reason: "not mine".into(),
                },
                token,
            ))
            .await
            .expect_err("change refused");
        assert_eq!(change.code(), Code::PermissionDenied);
    }
    let list = mesh
        .registry()
        .list_supervisees(authorized(
            pb::ListSuperviseesRequest {
                township_code: "620702001".into(),
                status: 0,
                page: None,
            },
            &neighbour,
        ))
        .await
        .expect_err("list refused");
    assert_eq!(list.code(), Code::PermissionDenied);
    // The county bureau of the township sees it; no token at all is unauthenticated.
    mesh.registry()
        .get_supervisee(authorized(
            pb::GetSuperviseeRequest {
                supervisee_id: id.clone(),
            },
            &own_county,
        ))
        .await
        .expect("own county bureau reads");
    let anonymous = mesh
        .registry()
        .get_supervisee(tonic::Request::new(pb::GetSuperviseeRequest {
            supervisee_id: id,
        }))
        .await
        .expect_err("no token");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn lifecycle_changes_emit_events_and_illegal_transitions_are_refused() {
    let mut mesh = registry_alone(Infra::from_env(), &[]).await;
    let token = mesh.token(&home_officer());
    let id = register(&mesh, registration(5)).await;
    let change_status = |status: pb::SuperviseeStatus| {
        authorized(
            pb::ChangeStatusRequest {
                supervisee_id: id.clone(),
                status: status as i32,
                reason: "test".into(),
                effective_at: None,
            },
            &token,
        )
    };
    let illegal = mesh
        .registry()
        .change_status(change_status(pb::SuperviseeStatus::Suspended))
        .await
        .expect_err("pending → suspended is illegal");
    assert_eq!(illegal.code(), Code::FailedPrecondition);
    assert!(
        illegal.message().contains("from pending_report_in to suspended"),
        "{}",
        illegal.message()
    );
    mesh.registry()
        .change_status(change_status(pb::SuperviseeStatus::Active))
        .await
        .expect("report in");
    mesh.registry()
        .change_status(change_status(pb::SuperviseeStatus::Absconded))
        .await
        .expect("abscond");
    mesh.registry()
        .change_status(change_status(pb::SuperviseeStatus::Active))
        .await
        .expect("back");
    mesh.registry()
        .change_level(authorized(
            pb::ChangeLevelRequest {
                supervisee_id: id.clone(),
                level: pb::SupervisionLevel::Strict as i32,
                reason: "assessment".into(),
            },
            &token,
        ))
        .await
        .expect("level");
    let moved = mesh
        .registry()
        .transfer_supervisee(authorized(
            pb::TransferSuperviseeRequest {
                supervisee_id: id.clone(),
                to_township_code: "620702002".into(),
                to_county_code: "620702".into(),
                to_officer_id: "officer-2".into(),
                reason: "moved house".into(),
            },
            &token,
        ))
        .await
        .expect("transfer")
        .into_inner()
        .supervisee
        .expect("supervisee");
    assert_eq!(
        moved.jurisdiction.expect("jurisdiction").township_code,
        "620702002"
    );
    // After the transfer the old township's officer no longer has access.
    let gone = mesh
        .registry()
        .get_supervisee(authorized(
            pb::GetSuperviseeRequest {
                supervisee_id: id.clone(),
            },
            &token,
        ))
        .await
        .expect_err("no longer in the old township");
    assert_eq!(gone.code(), Code::PermissionDenied);

    let events = mesh
        .tap(&mesh.topics.registry)
        .expect("tap")
        .collect(6, Duration::from_secs(30))
        .await
        .expect("events");
    let types: Vec<_> = events
        .iter()
        .map(|e| e.header("event_type").unwrap_or("?").to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "supervisee.registered",
            "supervisee.status_changed",
            "supervisee.status_changed",
            "supervisee.status_changed",
            "supervisee.level_changed",
            "supervisee.transferred"
        ]
    );
    let transferred = pb::SuperviseeTransferred::decode(events[5].payload.as_slice()).expect("decodes");
    assert_eq!(
        transferred.previous_jurisdiction.expect("previous").township_code,
        "620702001"
    );
    assert_eq!(transferred.supervisee.expect("snapshot").version, 6);

    // Every read and change left an audit record, and the audit log cannot be rewritten.
    let pool = mesh.pool("registry").expect("pool");
    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM kit_audit_log ORDER BY id")
        .fetch_all(&pool)
        .await
        .expect("audit");
    assert_eq!(actions.first().map(String::as_str), Some("supervisee.registered"));
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "supervisee.status_changed")
            .count(),
        3
    );
    assert!(actions.contains(&"supervisee.transferred".to_owned()));
    assert!(
        sqlx::query("DELETE FROM kit_audit_log")
            .execute(&pool)
            .await
            .is_err()
    );
    assert!(
        sqlx::query("UPDATE kit_audit_log SET action = 'x'")
            .execute(&pool)
            .await
            .is_err()
    );
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn listing_pages_are_stable_and_complete() {
    let mut mesh = registry_alone(Infra::from_env(), &[]).await;
    let token = mesh.token(&home_officer());
    let mut registered = Vec::new();
    for n in 10..17 {
        registered.push(register(&mesh, registration(n)).await);
    }
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = mesh
            .registry()
            .list_supervisees(authorized(
                pb::ListSuperviseesRequest {
                    township_code: "620702001".into(),
                    status: 0,
                    page: Some(mesh_proto::common::PageRequest {
                        page_size: 3,
                        page_token: page_token.clone(),
                    }),
                },
                &token,
            ))
            .await
            .expect("page")
            .into_inner();
        assert!(page.supervisees.len() <= 3);
        seen.extend(page.supervisees.into_iter().map(|s| s.supervisee_id));
        page_token = page.page.expect("page info").next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, registered, "every supervisee once, in registration order");
    let bad = mesh
        .registry()
        .list_supervisees(authorized(
            pb::ListSuperviseesRequest {
                township_code: "620702001".into(),
                status: 0,
                page: Some(mesh_proto::common::PageRequest {
                    page_size: 3,
                    page_token: "garbage!".into(),
                }),
            },
            &token,
        ))
        .await
        .expect_err("bad token");
    assert_eq!(violated_fields(&bad), vec!["page.page_token"]);
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn national_id_never_appears_in_plain_text_in_database_logs_or_events() {
    let mut mesh = registry_alone(Infra::from_env(), &[("RUST_LOG", "debug")]).await;
    let token = mesh.token(&home_officer());
    let request = registration(7);
    let national_id = request.national_id.clone();
    let phone = request.phone.clone();
    let id = register(&mesh, request.clone()).await;
    // A duplicate and an invalid variant go through the error paths too.
    mesh.registry()
        .register_supervisee(authorized(request.clone(), &token))
        .await
        .expect_err("duplicate");
    let mut invalid = request;
    invalid
        .national_id
        .replace_range(17..18, if national_id.ends_with('0') { "1" } else { "0" });
    let invalid_id = invalid.national_id.clone();
    mesh.registry()
        .register_supervisee(authorized(invalid, &token))
        .await
        .expect_err("invalid");
    mesh.registry()
        .get_supervisee(authorized(pb::GetSuperviseeRequest { supervisee_id: id }, &token))
        .await
        .expect("read back");
    let events = mesh
        .tap(&mesh.topics.registry)
        .expect("tap")
        .collect(1, Duration::from_secs(30))
        .await
        .expect("events");
    assert_eq!(events.len(), 1);

    // Everything in the database, every row of every table as text (bytea shows as hex).
    let (tables, dump) = dump(&mesh, "registry").await;
    assert!(tables.contains(&"supervisees".to_owned()));
    let stop = mesh.process("registry").log_text();
    for secret in [&national_id, &invalid_id, &phone] {
        let hex_form = hex::encode(secret.as_bytes());
        assert!(!dump.contains(secret.as_str()), "plain value in the database");
        assert!(!dump.contains(&hex_form), "plain value inside a bytea column");
        assert!(!stop.contains(secret.as_str()), "plain value in the logs");
        for event in &events {
            assert!(
                !event
                    .payload
                    .windows(secret.len())
                    .any(|w| w == secret.as_bytes()),
                "plain value in an event"
            );
        }
    }
    assert!(stop.contains("supervisee registered"), "the log was captured");
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn invalid_configuration_exits_64_with_one_message() {
    let output = run_misconfigured("registry", &[("MESH_CURSOR_SECRET", "too-short")]).await;
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    for expected in [
        "MESH_DATABASE_URL is required",
        "MESH_KAFKA_BROKERS is required",
        "MESH_CURSOR_SECRET must be at least 32 bytes",
        "MESH_JWKS_FILE or MESH_JWKS_URL is required",
        "MESH_FIELD_KEYS is required",
        "MESH_HANDOVER_TRANSIT_KEYS is required",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    assert!(!stderr.contains("too-short"), "secret echoed: {stderr}");
}

/// A date of the office calendar, `days` from today.
fn day(days: i64) -> mesh_proto::common::Date {
    mesh_kit::proto_time::to_date(mesh_e2e::today() + chrono::Duration::days(days))
}

#[tokio::test]
async fn impossible_dates_are_refused_naming_the_field_and_change_nothing() {
    let mut mesh = registry_alone(Infra::from_env(), &[]).await;
    let token = mesh.token(&home_officer());
    let epoch = chrono::DateTime::from_timestamp(0, 0).expect("1970-01-01");
    let date = |year, month, day| mesh_proto::common::Date { year, month, day };
    type Mutation = Box<dyn Fn(&mut pb::RegisterSuperviseeRequest)>;
    let cases: Vec<(&[&str], Mutation)> = vec![
        // The report-in of 1970 that raised a revocation proposal at once.
        (
            &["reported_at"],
            Box::new(move |r| r.reported_at = Some(prost_types_timestamp(epoch))),
        ),
        (
            &["term_start", "reported_at"],
            Box::new(move |r| {
                r.term_start = Some(date(1970, 1, 1));
                r.reported_at = Some(prost_types_timestamp(epoch));
            }),
        ),
        (
            &["term_start"],
            Box::new(move |r| r.term_start = Some(date(1970, 1, 1))),
        ),
        (
            &["term_start"],
            Box::new(move |r| {
                r.term_start = Some(date(2100, 1, 1));
                r.term_end = Some(date(2101, 1, 1));
            }),
        ),
        (
            &["term_end"],
            Box::new(move |r| r.term_end = Some(date(2090, 1, 1))),
        ),
        (
            &["term_end"],
            Box::new(|r| {
                r.term_start = Some(day(-300));
                r.term_end = Some(day(-1));
            }),
        ),
        // Reported in before the term even started.
        (
            &["reported_at"],
            Box::new(|r| {
                r.term_start = Some(day(10));
                r.reported_at = Some(prost_types_timestamp(chrono::Utc::now()));
            }),
        ),
        // Three weeks ago: the watch would start with its absconding ladder passed.
        (
            &["reported_at"],
            Box::new(|r| {
                r.term_start = Some(day(-60));
                r.reported_at = Some(prost_types_timestamp(
                    chrono::Utc::now() - chrono::Duration::days(21),
                ));
            }),
        ),
    ];
    for (fields, mutate) in cases {
        let mut request = registration(30);
        mutate(&mut request);
        let status = mesh
            .registry()
            .register_supervisee(authorized(request, &token))
            .await
            .expect_err(&format!("{fields:?} case must be refused"));
        assert_eq!(status.code(), Code::InvalidArgument, "{fields:?}: {status:?}");
        assert_eq!(violated_fields(&status), fields, "{}", status.message());
    }
    assert_eq!(count_supervisees(&mesh).await, 0, "nothing stored");

    // A status change dated in 1970, or before the term started, is refused the same way.
    let mut request = registration(31);
    request.term_start = Some(day(-3));
    let id = register(&mesh, request).await;
    for effective_at in [epoch, chrono::Utc::now() - chrono::Duration::days(5)] {
        let status = mesh
            .registry()
            .change_status(authorized(
                pb::ChangeStatusRequest {
                    supervisee_id: id.clone(),
                    status: pb::SuperviseeStatus::Active as i32,
                    reason: "reported in".into(),
                    effective_at: Some(prost_types_timestamp(effective_at)),
                },
                &token,
            ))
            .await
            .expect_err("refused");
        assert_eq!(violated_fields(&status), ["effective_at"], "{}", status.message());
    }
    let stored: String = sqlx::query_scalar("SELECT status FROM supervisees")
        .fetch_one(&mesh.pool("registry").expect("pool"))
        .await
        .expect("status");
    assert_eq!(stored, "pending_report_in", "unchanged");
    let events = count(&mesh, "registry", "SELECT count(*) FROM kit_outbox").await;
    assert_eq!(events, 1, "only the valid registration published");
    mesh.stop_all().await.expect("graceful stop");
}

const PHONE: &str = "13912345678";
const ADDRESS: &str = "甘州区东街 1 号";

/// A prison's report-in of parolee `national_id` to the home township at `reported_in_at`,
/// without its sealed personal fields (see [`sealed_for`]).
fn report_in_event(
    national_id: &str,
    reported_in_at: chrono::DateTime<chrono::Utc>,
) -> (
    mesh_proto::handover::HandoverReportedIn,
    mesh_proto::handover::ReportInPersonal,
) {
    use mesh_proto::handover as handover_pb;
    let event = handover_pb::HandoverReportedIn {
        handover: Some(handover_pb::HandoverSnapshot {
            handover_id: uuid::Uuid::now_v7().to_string(),
            prison_id: "zhangye-prison".into(),
            prison_reference: format!("ZY-{}", uuid::Uuid::new_v4().simple()),
            person_name: "刑释人员".into(),
            category: handover_pb::ReleaseCategory::Parole as i32,
            expected_release_date: Some(day(-1)),
            destination: Some(mesh_e2e::home_jurisdiction()),
            status: handover_pb::HandoverStatus::ReportedIn as i32,
            reported_in_at: Some(prost_types_timestamp(reported_in_at)),
            version: 4,
            ..Default::default()
        }),
        registry_category: pb::Category::Parole as i32,
        supervision_level: pb::SupervisionLevel::Strict as i32,
        officer_id: "officer-1".into(),
        term_start: Some(day(-1)),
        term_end: Some(day(365)),
        ..Default::default()
    };
    let personal = handover_pb::ReportInPersonal {
        national_id: national_id.to_owned(),
        phone: PHONE.into(),
        address: ADDRESS.into(),
    };
    (event, personal)
}

/// `event` with `personal` sealed under `ring`, as the handover service publishes it.
fn sealed_for(
    ring: &KeyRing,
    (mut event, personal): (
        mesh_proto::handover::HandoverReportedIn,
        mesh_proto::handover::ReportInPersonal,
    ),
) -> mesh_proto::handover::HandoverReportedIn {
    let handover_id = event.handover.as_ref().expect("handover").handover_id.clone();
    event.sealed_personal = transit::seal_report_in(ring, &handover_id, &personal);
    event
}

/// A report-in of `national_id` sealed with the mesh's transit ring, as the handover
/// service publishes it.
fn sealed_report_in(
    mesh: &Mesh,
    national_id: &str,
    reported_in_at: chrono::DateTime<chrono::Utc>,
) -> mesh_proto::handover::HandoverReportedIn {
    let transit = mesh.secrets.transit_ring().expect("transit ring");
    sealed_for(&transit, report_in_event(national_id, reported_in_at))
}

async fn publish_report_in(mesh: &Mesh, event: &mesh_proto::handover::HandoverReportedIn) -> String {
    let handover_id = event.handover.as_ref().expect("handover").handover_id.clone();
    mesh.publish(
        &mesh.topics.handover,
        &handover_id,
        "handover.reported_in",
        &event.encode_to_vec(),
    )
    .await
    .expect("published");
    handover_id
}

/// The registry's dead letters: reason and payload, oldest first, once `n` are there.
async fn dead_letters(mesh: &Mesh, n: usize) -> Vec<(String, Vec<u8>)> {
    let pool = mesh.pool("registry").expect("pool");
    mesh_e2e::eventually("the dead letters", Duration::from_secs(30), async || {
        let rows: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT reason, payload FROM kit_dead_letters ORDER BY id")
                .fetch_all(&pool)
                .await
                .expect("dead letters");
        (rows.len() >= n).then_some(rows)
    })
    .await
}

/// Whether `payload` holds any of the person's personal fields in plain text.
fn holds_personal(payload: &[u8], national_id: &str) -> bool {
    [national_id, PHONE, ADDRESS]
        .iter()
        .any(|plain| payload.windows(plain.len()).any(|w| w == plain.as_bytes()))
}

/// The supervisees stored: status, handover id, report-in time and version, in id order.
async fn stored(mesh: &Mesh) -> Vec<(String, Option<String>, Option<chrono::DateTime<chrono::Utc>>, i64)> {
    sqlx::query_as("SELECT status, handover_id, reported_at, version FROM supervisees ORDER BY id")
        .fetch_all(&mesh.pool("registry").expect("pool"))
        .await
        .expect("rows")
}

#[tokio::test]
async fn a_report_in_starts_the_pending_supervision_of_the_same_person() {
    let mut mesh = registry_alone(Infra::from_env(), &[]).await;
    // The court's record came first: parole, pending report-in.
    let mut court = registration(32);
    court.category = pb::Category::Parole as i32;
    court.term_start = Some(day(-1));
    let id = register(&mesh, court.clone()).await;

    let reported_in_at = mesh_e2e::whole_seconds_ago(600);
    let handover_id = publish_report_in(
        &mesh,
        &sealed_report_in(&mesh, &court.national_id, reported_in_at),
    )
    .await;
    let rows = mesh_e2e::eventually(
        "the report-in to activate the record",
        Duration::from_secs(30),
        async || {
            let rows = stored(&mesh).await;
            (rows.first().is_some_and(|row| row.0 != "pending_report_in")).then_some(rows)
        },
    )
    .await;
    assert_eq!(
        rows,
        [(
            "active".to_owned(),
            Some(handover_id.clone()),
            Some(reported_in_at),
            2
        )],
        "one record, active, linked to the handover"
    );

    let events = mesh
        .tap(&mesh.topics.registry)
        .expect("tap")
        .collect(2, Duration::from_secs(30))
        .await
        .expect("events");
    assert_eq!(events[1].header("event_type"), Some("supervisee.status_changed"));
    let changed = pb::SuperviseeStatusChanged::decode(events[1].payload.as_slice()).expect("decodes");
    assert_eq!(changed.previous_status(), pb::SuperviseeStatus::PendingReportIn);
    let snapshot = changed.supervisee.expect("snapshot");
    assert_eq!(snapshot.supervisee_id, id);
    assert_eq!(snapshot.status(), pb::SuperviseeStatus::Active);
    assert_eq!(snapshot.handover_id, handover_id);
    assert_eq!(snapshot.version, 2);
    assert_eq!(snapshot.reported_at, Some(prost_types_timestamp(reported_in_at)));
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn a_report_in_never_replaces_a_running_supervision_and_says_why() {
    let mut mesh = registry_alone(Infra::from_env(), &[]).await;
    let mut running = mesh_e2e::reported_in(33, chrono::Utc::now() - chrono::Duration::days(1));
    running.category = pb::Category::Parole as i32;
    register(&mesh, running.clone()).await;
    let before = stored(&mesh).await;

    publish_report_in(
        &mesh,
        &sealed_report_in(&mesh, &running.national_id, mesh_e2e::whole_seconds_ago(60)),
    )
    .await;
    // Set aside in the registry's own database, with the reason (kit `dead_letter`), and
    // with the personal fields still sealed.
    let letters = dead_letters(&mesh, 1).await;
    let (reason, payload) = &letters[0];
    assert!(
        reason.contains("already has a supervision in status active"),
        "{reason}"
    );
    assert!(
        !holds_personal(payload, &running.national_id),
        "plain personal data in the dead letter"
    );
    assert!(
        !holds_personal(reason.as_bytes(), &running.national_id),
        "plain personal data in the reason"
    );
    assert_eq!(stored(&mesh).await, before, "the running supervision unchanged");
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn a_report_in_stamped_ahead_of_the_registrys_clock_registers_the_person() {
    let mut mesh = registry_alone(Infra::from_env(), &[]).await;
    // The handover service's clock runs ten minutes ahead of the registry's.
    let national_id = registration(34).national_id;
    let ahead = chrono::Utc::now() + chrono::Duration::minutes(10);
    let handover_id = publish_report_in(&mesh, &sealed_report_in(&mesh, &national_id, ahead)).await;
    let rows = mesh_e2e::eventually(
        "the person to be registered",
        Duration::from_secs(30),
        async || {
            let rows = stored(&mesh).await;
            (!rows.is_empty()).then_some(rows)
        },
    )
    .await;
    let (status, linked, reported_at, _) = &rows[0];
    assert_eq!(
        (status.as_str(), linked.as_deref()),
        ("active", Some(handover_id.as_str()))
    );
    let reported_at = reported_at.expect("reported_at");
    assert!(
        reported_at < ahead,
        "taken as the registry's now, not the future: {reported_at}"
    );
    assert!(reported_at > chrono::Utc::now() - chrono::Duration::minutes(1));
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn a_report_in_whose_sealed_part_does_not_open_is_set_aside_with_the_reason() {
    let mut mesh = registry_alone(Infra::from_env(), &[]).await;
    let national_id = registration(35).national_id;
    let at = mesh_e2e::whole_seconds_ago(60);
    let event = || report_in_event(&national_id, at);
    // The transit key id with another key; a ring the registry does not hold at all
    // (risk-alert's own); bytes changed on the way; no sealed part; a part moved from
    // another handover's event.
    let impostor = key_ring("t1:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=", "t1").expect("ring");
    let stranger = mesh.secrets.field_ring("risk-alert").expect("ring");
    let transit = mesh.secrets.transit_ring().expect("ring");
    let mut tampered = sealed_for(&transit, event());
    if let Some(last) = tampered.sealed_personal.last_mut() {
        *last ^= 1;
    }
    let mut moved = sealed_for(&transit, event());
    moved.sealed_personal = sealed_for(&transit, event()).sealed_personal;
    let broken = [
        (sealed_for(&impostor, event()), "could not be decrypted"),
        (
            sealed_for(&stranger, event()),
            "sealed under key id \"k1\", which this key ring does not hold",
        ),
        (tampered, "could not be decrypted"),
        (event().0, "carries no sealed personal fields"),
        (moved, "could not be decrypted"),
    ];
    for (report, _) in &broken {
        publish_report_in(&mesh, report).await;
    }
    let letters = dead_letters(&mesh, broken.len()).await;
    for ((reason, payload), (_, expected)) in letters.iter().zip(&broken) {
        assert!(reason.starts_with("report-in cannot be registered:"), "{reason}");
        assert!(reason.contains(expected), "{expected}: {reason}");
        assert!(
            !holds_personal(payload, &national_id),
            "plain personal data in the dead letter"
        );
    }
    assert_eq!(count_supervisees(&mesh).await, 0, "nothing registered from them");

    // The consumer goes on: the same person's report-in, sealed right, registers them with
    // the personal fields it carried.
    publish_report_in(&mesh, &sealed_for(&transit, event())).await;
    let token = mesh.token(&home_officer());
    let registered = mesh_e2e::eventually("the registration", Duration::from_secs(30), async || {
        mesh.registry()
            .list_supervisees(authorized(
                pb::ListSuperviseesRequest {
                    township_code: "620702001".into(),
                    status: 0,
                    page: None,
                },
                &token,
            ))
            .await
            .expect("list")
            .into_inner()
            .supervisees
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(registered.phone, PHONE);
    assert_eq!(registered.address, ADDRESS);
    assert_eq!(
        registered.national_id_masked,
        format!("{}********{}", &national_id[..6], &national_id[14..])
    );
    mesh.stop_all().await.expect("graceful stop");
}
