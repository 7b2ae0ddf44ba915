//! The handover service end to end: the real binary against real PostgreSQL and Tansu.
//! Prisons submit release notices, township offices receive the people released, and every
//! step must arrive on Kafka as its `handover.*` event, in order per handover.

use std::{sync::LazyLock, time::Duration};

use chrono::{DateTime, Days, NaiveDate, Utc};
use mesh::harness::{EventTap, ReceivedEvent};
use mesh_e2e::{
    HOME_COUNTY, HOME_TOWNSHIP, Mesh, PRISON_A, acknowledge, authorized, count, county_bureau, dump, notice,
    officer, prison, report_in_request, run_misconfigured, submit_notice, today, township_office,
    whole_seconds_ago,
};
use mesh_kit::{
    auth::Caller,
    error::violated_fields,
    proto_time::{to_date, to_timestamp},
    transit,
};
use mesh_proto::{common, handover as pb, registry};
use prost::Message;
use tonic::Code;

const PRISON_B: &str = "jiuquan-prison";
const OTHER_TOWNSHIP: &str = "620721002"; // 肃南县皇城镇
const OTHER_COUNTY: &str = "620721";

/// When people were released and reported in: fixed for the run, so that a repeated step
/// sends exactly the same values, and whole seconds in the past, so that the values read
/// back compare equal.
static STEP_TIMES: LazyLock<(DateTime<Utc>, DateTime<Utc>)> =
    LazyLock::new(|| (whole_seconds_ago(3600), whole_seconds_ago(600)));

fn released_at() -> DateTime<Utc> {
    STEP_TIMES.0
}

fn reported_in_at() -> DateTime<Utc> {
    STEP_TIMES.1
}

fn clerk_a() -> Caller {
    prison("clerk-a", PRISON_A)
}

fn clerk_b() -> Caller {
    prison("clerk-b", PRISON_B)
}

fn home_office() -> Caller {
    township_office(HOME_TOWNSHIP)
}

fn other_office() -> Caller {
    township_office(OTHER_TOWNSHIP)
}

async fn start_handover(env: &[(&str, &str)]) -> Mesh {
    Mesh::builder()
        .env("handover", env)
        .start(&["handover"])
        .await
        .expect("handover starts")
}

fn tap(mesh: &Mesh) -> EventTap {
    mesh.tap(&mesh.topics.handover).expect("tap")
}

async fn rows(mesh: &Mesh, table: &str) -> i64 {
    count(mesh, "handover", &format!("SELECT count(*) FROM {table}")).await
}

/// Submits `request` as prison A's clerk.
async fn submit(mesh: &Mesh, request: pb::SubmitReleaseNoticeRequest) -> pb::Handover {
    submit_notice(mesh, request, &mesh.token(&clerk_a())).await
}

/// The handover a step's answer carries.
fn handover<R>(
    answer: Result<tonic::Response<R>, tonic::Status>,
    of: impl FnOnce(R) -> Option<pb::Handover>,
) -> Result<pb::Handover, tonic::Status> {
    Ok(of(answer?.into_inner()).expect("handover"))
}

/// Confirms the release at [`released_at`].
async fn confirm_release(mesh: &Mesh, id: &str, token: &str) -> Result<pb::Handover, tonic::Status> {
    let request = pb::ConfirmReleaseRequest {
        handover_id: id.to_owned(),
        actual_release_time: Some(to_timestamp(released_at())),
    };
    let answer = mesh.handover().confirm_release(authorized(request, token)).await;
    handover(answer, |r| r.handover)
}

/// Records the report-in at [`reported_in_at`].
async fn report_in(mesh: &Mesh, id: &str, token: &str) -> Result<pb::Handover, tonic::Status> {
    let request = report_in_request(id, reported_in_at());
    let answer = mesh.handover().record_report_in(authorized(request, token)).await;
    handover(answer, |r| r.handover)
}

async fn amend_date(
    mesh: &Mesh,
    id: &str,
    date: NaiveDate,
    token: &str,
) -> Result<pb::Handover, tonic::Status> {
    let request = pb::AmendReleaseNoticeRequest {
        handover_id: id.to_owned(),
        new_expected_release_date: Some(to_date(date)),
        new_destination: None,
        reason: "法院裁定变更释放日期".into(),
    };
    let answer = mesh
        .handover()
        .amend_release_notice(authorized(request, token))
        .await;
    handover(answer, |r| r.handover)
}

async fn cancel(mesh: &Mesh, id: &str, token: &str) -> Result<pb::Handover, tonic::Status> {
    let request = pb::CancelReleaseNoticeRequest {
        handover_id: id.to_owned(),
        reason: pb::CancelReason::ReleaseRevoked as i32,
        note: "假释裁定撤销".into(),
    };
    let answer = mesh
        .handover()
        .cancel_release_notice(authorized(request, token))
        .await;
    handover(answer, |r| r.handover)
}

async fn get(mesh: &Mesh, id: &str, token: &str) -> Result<pb::Handover, tonic::Status> {
    let request = pb::GetHandoverRequest {
        handover_id: id.to_owned(),
    };
    let answer = mesh.handover().get_handover(authorized(request, token)).await;
    handover(answer, |r| r.handover)
}

/// The `count` next events of handover `id` (other handovers' events are skipped).
async fn events_of(tap: &EventTap, id: &str, count: usize) -> Vec<ReceivedEvent> {
    let mut events = Vec::new();
    while events.len() < count {
        let Some(event) = tap.next(Duration::from_secs(30)).await.expect("kafka") else {
            break;
        };
        if event.key.as_deref() == Some(id) {
            events.push(event);
        }
    }
    events
}

fn event_types(events: &[ReceivedEvent]) -> Vec<String> {
    events
        .iter()
        .map(|event| event.header("event_type").unwrap_or("?").to_owned())
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn notified_event_reaches_kafka_and_decodes() {
    let mut mesh = start_handover(&[]).await;
    let request = notice(1);
    let handover = submit(&mesh, request.clone()).await;
    assert_eq!(handover.status(), pb::HandoverStatus::Notified);
    assert_eq!(handover.prison_reference, "ZY-2026-0001");
    assert_eq!(
        handover.national_id_masked,
        format!(
            "{}********{}",
            &request.national_id[..6],
            &request.national_id[14..]
        )
    );
    assert_eq!(
        handover.risk_notes, request.risk_notes,
        "the prison reads its own notes back"
    );
    assert_eq!(handover.offence_category(), common::OffenceCategory::Property);
    assert_eq!(handover.version, 1);

    let events = events_of(&tap(&mesh), &handover.handover_id, 1).await;
    let event = events.first().expect("an event arrives");
    assert_eq!(event.header("event_type"), Some("handover.notified"));
    assert_eq!(event.header("producer"), Some("handover"));
    let event_id: uuid::Uuid = event.header("event_id").expect("event_id").parse().expect("uuid");
    assert_eq!(event_id.get_version_num(), 7);
    assert!(event.header("traceparent").is_some_and(|t| t.starts_with("00-")));
    let decoded = pb::HandoverNotified::decode(event.payload.as_slice()).expect("decodes");
    let snapshot = decoded.handover.expect("snapshot");
    assert_eq!(snapshot.handover_id, handover.handover_id);
    assert_eq!(snapshot.prison_id, PRISON_A);
    assert_eq!(snapshot.person_name, "刑释人员1");
    assert_eq!(snapshot.category(), pb::ReleaseCategory::Parole);
    assert_eq!(snapshot.status(), pb::HandoverStatus::Notified);
    assert!(snapshot.key_assistance_target);
    assert_eq!(snapshot.expected_release_date, request.expected_release_date);
    assert_eq!(
        snapshot.destination.expect("destination").township_code,
        HOME_TOWNSHIP
    );
    assert_eq!(decoded.actor.expect("actor").subject, "clerk-a");
    assert!(!contains(&event.payload, &request.national_id), "no national ID");
    assert!(!contains(&event.payload, &request.risk_notes), "no risk notes");
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn duplicate_submission_is_idempotent_and_different_content_is_refused() {
    let mut mesh = start_handover(&[]).await;
    let token = mesh.token(&clerk_a());
    let first = mesh
        .handover()
        .submit_release_notice(authorized(notice(2), &token))
        .await
        .expect("first")
        .into_inner();
    assert!(!first.duplicate);
    // The same notice again, even with cosmetic differences (case of the X, spaces).
    let mut again = notice(2);
    again.person_name = format!("  {} ", again.person_name);
    again.national_id = again.national_id.to_lowercase();
    let second = mesh
        .handover()
        .submit_release_notice(authorized(again, &token))
        .await
        .expect("idempotent")
        .into_inner();
    assert!(second.duplicate);
    let (first, second) = (
        first.handover.expect("handover"),
        second.handover.expect("handover"),
    );
    assert_eq!(first.handover_id, second.handover_id);
    assert_eq!(second.version, 1);

    // Same reference, different content: an amendment, which has its own call.
    let mut changed = notice(2);
    changed.expected_release_date = Some(to_date(today() + Days::new(40)));
    let status = mesh
        .handover()
        .submit_release_notice(authorized(changed, &token))
        .await
        .expect_err("conflicting content");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(
        status.message().contains("AmendReleaseNotice"),
        "{}",
        status.message()
    );
    // The same person under another reference while the first notice is open.
    let mut other_reference = notice(2);
    other_reference.prison_reference = "ZY-2026-9999".into();
    let status = mesh
        .handover()
        .submit_release_notice(authorized(other_reference, &token))
        .await
        .expect_err("second open handover");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");

    assert_eq!(rows(&mesh, "handovers").await, 1);
    assert_eq!(rows(&mesh, "kit_outbox").await, 1, "one event only");

    // The same notice sent concurrently (a clerk's double click, a client retry racing the
    // first attempt): one notice, one event, every caller gets its id.
    let racers: Vec<_> = (0..16)
        .map(|_| {
            let mut client = mesh.handover().clone();
            let token = token.clone();
            tokio::spawn(async move {
                client
                    .submit_release_notice(authorized(notice(11), &token))
                    .await
                    .map(|response| response.into_inner())
            })
        })
        .collect();
    let mut ids = Vec::new();
    for racer in racers {
        let response = racer.await.expect("task").expect("submitted");
        ids.push(response.handover.expect("handover").handover_id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(rows(&mesh, "handovers").await, 2);
    assert_eq!(rows(&mesh, "kit_outbox").await, 2);

    let events = tap(&mesh)
        .collect(3, Duration::from_secs(5))
        .await
        .expect("kafka");
    assert_eq!(event_types(&events), ["handover.notified", "handover.notified"]);
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn full_lifecycle_emits_each_event_in_order() {
    let mut mesh = start_handover(&[]).await;
    let request = notice(3);
    let id = submit(&mesh, request.clone()).await.handover_id;
    let (office, prison_a) = (mesh.token(&home_office()), mesh.token(&clerk_a()));

    let acknowledged = acknowledge(&mesh, &id, &office).await.expect("acknowledged");
    assert_eq!(acknowledged.status(), pb::HandoverStatus::Acknowledged);
    assert_eq!(
        acknowledged.acknowledged_by.expect("by").subject,
        format!("office-{HOME_TOWNSHIP}")
    );
    // Retrying a step that took effect returns the handover and publishes nothing.
    let again = acknowledge(&mesh, &id, &office).await.expect("retry");
    assert_eq!(again.version, acknowledged.version);

    let released = confirm_release(&mesh, &id, &prison_a).await.expect("released");
    assert_eq!(released.status(), pb::HandoverStatus::Released);
    assert_eq!(released.actual_release_time, Some(to_timestamp(released_at())));
    let collected = mesh
        .handover()
        .record_gate_collection(authorized(
            pb::RecordGateCollectionRequest {
                handover_id: id.clone(),
                collected_at: Some(to_timestamp(released_at())),
                officer_id: "officer-1".into(),
            },
            &office,
        ))
        .await
        .expect("gate collection")
        .into_inner()
        .handover
        .expect("handover");
    assert_eq!(collected.status(), pb::HandoverStatus::Released);
    assert_eq!(collected.gate_collecting_officer_id, "officer-1");

    let reported = report_in(&mesh, &id, &office).await.expect("reported in");
    assert_eq!(reported.status(), pb::HandoverStatus::ReportedIn);
    assert_eq!(reported.assigned_officer_id, "officer-1");
    assert_eq!(reported.assigned_level, registry::SupervisionLevel::Strict as i32);
    // Same report-in again: fine; a different one: refused.
    report_in(&mesh, &id, &office).await.expect("retry");
    let mut different = report_in_request(&id, reported_in_at());
    different.officer_id = "officer-2".into();
    let status = mesh
        .handover()
        .record_report_in(authorized(different, &office))
        .await
        .expect_err("conflicting report-in");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    let events = events_of(&tap(&mesh), &id, 5).await;
    assert_eq!(
        event_types(&events),
        [
            "handover.notified",
            "handover.acknowledged",
            "handover.released",
            "handover.gate_collected",
            "handover.reported_in"
        ]
    );
    let released_event = pb::HandoverReleased::decode(events[2].payload.as_slice()).expect("decodes");
    assert_eq!(
        released_event.handover.expect("snapshot").actual_release_time,
        Some(to_timestamp(released_at()))
    );
    // The report-in event carries what the registry needs to register the person, the
    // personal fields sealed for it alone.
    let reported_in = pb::HandoverReportedIn::decode(events[4].payload.as_slice()).expect("decodes");
    let transit = mesh.secrets.transit_ring().expect("transit ring");
    let personal = transit::open_report_in(&transit, &id, &reported_in.sealed_personal).expect("opens");
    assert_eq!(personal.national_id, request.national_id);
    assert_eq!(personal.phone, "13912345678");
    assert_eq!(personal.address, "甘州区东街 1 号");
    // Sealed to this handover: moved into another handover's event, it does not open.
    assert!(
        transit::open_report_in(
            &transit,
            &uuid::Uuid::now_v7().to_string(),
            &reported_in.sealed_personal
        )
        .is_err()
    );
    assert_eq!(reported_in.registry_category(), registry::Category::Parole);
    assert_eq!(
        reported_in.supervision_level(),
        registry::SupervisionLevel::Strict
    );
    assert_eq!(reported_in.officer_id, "officer-1");
    assert_eq!(reported_in.term_start, Some(to_date(today())));
    assert_eq!(reported_in.term_end, Some(to_date(today() + Days::new(365))));
    assert!(reported_in.needs_employment);
    let snapshot = reported_in.handover.expect("snapshot");
    assert_eq!(snapshot.status(), pb::HandoverStatus::ReportedIn);
    assert_eq!(snapshot.version, 5);
    assert_eq!(
        snapshot.destination.expect("destination").county_code,
        HOME_COUNTY
    );
    // No event carries the national ID number, phone or address in plain text.
    for event in &events {
        for plain in [request.national_id.as_str(), "13912345678", "甘州区东街 1 号"] {
            assert!(
                !contains(&event.payload, plain),
                "{}",
                event.header("event_type").unwrap_or_default()
            );
        }
    }
    assert_eq!(rows(&mesh, "kit_outbox").await, 5, "retries published nothing");

    // Every change left an audit record; the audit log cannot be rewritten.
    let pool = mesh.pool("handover").expect("pool");
    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM kit_audit_log ORDER BY id")
        .fetch_all(&pool)
        .await
        .expect("audit");
    for action in [
        "handover.notified",
        "handover.acknowledged",
        "handover.released",
        "handover.gate_collected",
        "handover.reported_in",
        "handover.repeated",
    ] {
        assert!(actions.contains(&action.to_owned()), "{action}: {actions:?}");
    }
    assert!(
        sqlx::query("DELETE FROM kit_audit_log")
            .execute(&pool)
            .await
            .is_err()
    );
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn illegal_transitions_are_failed_precondition() {
    let mut mesh = start_handover(&[]).await;
    let (office, prison_a) = (mesh.token(&home_office()), mesh.token(&clerk_a()));

    // The township records the person standing in its office before the prison confirmed
    // the release: legal, and final.
    let id = submit(&mesh, notice(4)).await.handover_id;
    report_in(&mesh, &id, &office)
        .await
        .expect("report-in before release confirmation");
    let status = confirm_release(&mesh, &id, &prison_a)
        .await
        .expect_err("reported_in is final");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "illegal transition from reported_in to released"
    );
    let status = acknowledge(&mesh, &id, &office).await.expect_err("final");
    assert_eq!(
        status.message(),
        "illegal transition from reported_in to acknowledged"
    );

    // Released: the prison can no longer cancel; the township may still acknowledge late.
    let id = submit(&mesh, notice(5)).await.handover_id;
    confirm_release(&mesh, &id, &prison_a).await.expect("released");
    let status = cancel(&mesh, &id, &prison_a).await.expect_err("after release");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "illegal transition from released to cancelled");
    let late = acknowledge(&mesh, &id, &office)
        .await
        .expect("late acknowledgement");
    assert_eq!(late.status(), pb::HandoverStatus::Released);
    assert!(late.acknowledged_at.is_some());
    // Confirming a different release time is refused; the same one is a harmless retry.
    let status = mesh
        .handover()
        .confirm_release(authorized(
            pb::ConfirmReleaseRequest {
                handover_id: id.clone(),
                actual_release_time: Some(to_timestamp(released_at() - chrono::Duration::hours(1))),
            },
            &prison_a,
        ))
        .await
        .expect_err("different time");
    assert_eq!(status.code(), Code::FailedPrecondition);
    confirm_release(&mesh, &id, &prison_a)
        .await
        .expect("same time again");

    // Steps are taken by their party only.
    let status = confirm_release(&mesh, &id, &office)
        .await
        .expect_err("not a prison");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = acknowledge(&mesh, &id, &prison_a)
        .await
        .expect_err("not an office");
    assert_eq!(status.code(), Code::PermissionDenied);
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn amendment_before_release_is_kept_and_refused_after() {
    let mut mesh = start_handover(&[]).await;
    let (home, other, prison_a) = (
        mesh.token(&home_office()),
        mesh.token(&other_office()),
        mesh.token(&clerk_a()),
    );
    let id = submit(&mesh, notice(6)).await.handover_id;
    acknowledge(&mesh, &id, &home).await.expect("acknowledged");

    let new_date = today() + Days::new(45);
    let amended = amend_date(&mesh, &id, new_date, &prison_a)
        .await
        .expect("amended");
    assert_eq!(amended.expected_release_date, Some(to_date(new_date)));
    assert_eq!(
        amended.status(),
        pb::HandoverStatus::Acknowledged,
        "a new date keeps the receipt"
    );
    assert_eq!(amended.amendments.len(), 1);
    assert_eq!(amended.amendments[0].reason, "法院裁定变更释放日期");
    // The same amendment again changes nothing.
    let again = amend_date(&mesh, &id, new_date, &prison_a).await.expect("no-op");
    assert_eq!(again.version, amended.version);

    // A new destination goes back to notified: the new township must acknowledge it.
    let moved = mesh
        .handover()
        .amend_release_notice(authorized(
            pb::AmendReleaseNoticeRequest {
                handover_id: id.clone(),
                new_expected_release_date: None,
                new_destination: Some(common::Jurisdiction {
                    township_code: OTHER_TOWNSHIP.into(),
                    county_code: OTHER_COUNTY.into(),
                }),
                reason: "家属迁居肃南县".into(),
            },
            &prison_a,
        ))
        .await
        .expect("destination amended")
        .into_inner()
        .handover
        .expect("handover");
    assert_eq!(moved.status(), pb::HandoverStatus::Notified);
    assert!(moved.acknowledged_at.is_none());
    assert_eq!(moved.amendments.len(), 2);
    let status = acknowledge(&mesh, &id, &home)
        .await
        .expect_err("no longer the destination");
    assert_eq!(status.code(), Code::PermissionDenied);
    acknowledge(&mesh, &id, &other)
        .await
        .expect("new township acknowledges");

    confirm_release(&mesh, &id, &prison_a).await.expect("released");
    let status = amend_date(&mesh, &id, today() + Days::new(50), &prison_a)
        .await
        .expect_err("after release");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "illegal transition from released to amended");

    let events = events_of(&tap(&mesh), &id, 6).await;
    assert_eq!(
        event_types(&events),
        [
            "handover.notified",
            "handover.acknowledged",
            "handover.amended",
            "handover.amended",
            "handover.acknowledged",
            "handover.released"
        ]
    );
    let date_change = pb::HandoverAmended::decode(events[2].payload.as_slice()).expect("decodes");
    let amendment = date_change.amendment.expect("amendment");
    assert_eq!(amendment.reason, "法院裁定变更释放日期");
    assert_eq!(
        amendment.previous_expected_release_date,
        Some(to_date(today() + Days::new(30)))
    );
    assert_eq!(amendment.new_expected_release_date, Some(to_date(new_date)));
    assert!(amendment.new_destination.is_none());
    let move_event = pb::HandoverAmended::decode(events[3].payload.as_slice()).expect("decodes");
    let amendment = move_event.amendment.expect("amendment");
    assert_eq!(amendment.reason, "家属迁居肃南县");
    assert_eq!(
        amendment.previous_destination.expect("previous").township_code,
        HOME_TOWNSHIP
    );
    assert_eq!(
        amendment.new_destination.expect("new").township_code,
        OTHER_TOWNSHIP
    );
    assert_eq!(
        move_event.handover.expect("snapshot").status(),
        pb::HandoverStatus::Notified
    );
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn cancelled_notice_refuses_further_steps() {
    let mut mesh = start_handover(&[]).await;
    let (office, prison_a) = (mesh.token(&home_office()), mesh.token(&clerk_a()));
    let id = submit(&mesh, notice(7)).await.handover_id;
    let cancelled = cancel(&mesh, &id, &prison_a).await.expect("cancelled");
    assert_eq!(cancelled.status(), pb::HandoverStatus::Cancelled);
    assert_eq!(cancelled.cancel_reason(), pb::CancelReason::ReleaseRevoked);
    assert_eq!(cancelled.cancel_note, "假释裁定撤销");
    cancel(&mesh, &id, &prison_a)
        .await
        .expect("same cancellation again");

    let refusals = [
        (
            acknowledge(&mesh, &id, &office).await.expect_err("ack"),
            "illegal transition from cancelled to acknowledged",
        ),
        (
            confirm_release(&mesh, &id, &prison_a).await.expect_err("release"),
            "illegal transition from cancelled to released",
        ),
        (
            report_in(&mesh, &id, &office).await.expect_err("report-in"),
            "illegal transition from cancelled to reported_in",
        ),
        (
            amend_date(&mesh, &id, today() + Days::new(60), &prison_a)
                .await
                .expect_err("amend"),
            "illegal transition from cancelled to amended",
        ),
    ];
    for (status, message) in refusals {
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert_eq!(status.message(), message);
    }
    // A cancelled notice no longer blocks a new notice for the same person.
    let mut renewed = notice(7);
    renewed.prison_reference = "ZY-2026-0007-R".into();
    submit(&mesh, renewed).await;

    let events = events_of(&tap(&mesh), &id, 2).await;
    assert_eq!(event_types(&events), ["handover.notified", "handover.cancelled"]);
    let decoded = pb::HandoverCancelled::decode(events[1].payload.as_slice()).expect("decodes");
    assert_eq!(decoded.reason(), pb::CancelReason::ReleaseRevoked);
    assert_eq!(decoded.note, "假释裁定撤销");
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn prisons_and_offices_act_only_within_their_jurisdiction() {
    let mut mesh = start_handover(&[]).await;
    let (prison_b, other_office) = (mesh.token(&clerk_b()), mesh.token(&other_office()));
    let id = submit(&mesh, notice(8)).await.handover_id;

    // Prison B can neither read nor act on prison A's notice.
    let status = get(&mesh, &id, &prison_b).await.expect_err("read");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = amend_date(&mesh, &id, today() + Days::new(31), &prison_b)
        .await
        .expect_err("amend");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = cancel(&mesh, &id, &prison_b).await.expect_err("cancel");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = confirm_release(&mesh, &id, &prison_b).await.expect_err("release");
    assert_eq!(status.code(), Code::PermissionDenied);
    // Nor submit in prison A's name, nor list prison A's notices.
    let mut forged = notice(9);
    forged.prison_reference = "JQ-0001".into();
    let status = mesh
        .handover()
        .submit_release_notice(authorized(forged, &prison_b))
        .await
        .expect_err("another prison's name");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = mesh
        .handover()
        .list_handovers(authorized(
            pb::ListHandoversRequest {
                prison_id: PRISON_A.into(),
                ..Default::default()
            },
            &prison_b,
        ))
        .await
        .expect_err("list");
    assert_eq!(status.code(), Code::PermissionDenied);

    // Another township's office cannot acknowledge or read it; another county's bureau
    // cannot read it; the destination's county bureau and officers can.
    let status = acknowledge(&mesh, &id, &other_office).await.expect_err("ack");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = get(&mesh, &id, &other_office).await.expect_err("read");
    assert_eq!(status.code(), Code::PermissionDenied);
    let other_bureau = mesh.token(&county_bureau("bureau-sunan", OTHER_COUNTY));
    let status = get(&mesh, &id, &other_bureau).await.expect_err("read");
    assert_eq!(status.code(), Code::PermissionDenied);
    let own_bureau = mesh.token(&county_bureau("bureau-ganzhou", HOME_COUNTY));
    let read = get(&mesh, &id, &own_bureau)
        .await
        .expect("own county bureau reads");
    assert!(
        !read.risk_notes.is_empty(),
        "the receiving side sees the risk notes"
    );
    let home_officer = mesh.token(&officer("officer-1", HOME_TOWNSHIP));
    acknowledge(&mesh, &id, &home_officer)
        .await
        .expect("an officer of the township acknowledges");
    let anonymous = mesh
        .handover()
        .get_handover(tonic::Request::new(pb::GetHandoverRequest {
            handover_id: id.clone(),
        }))
        .await
        .expect_err("no token");
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    assert_eq!(rows(&mesh, "handovers").await, 1, "nothing forged was stored");
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn bad_inputs_name_the_field_and_store_nothing() {
    let mut mesh = start_handover(&[]).await;
    let token = mesh.token(&clerk_a());
    type Mutation = fn(&mut pb::SubmitReleaseNoticeRequest);
    let cases: Vec<(&str, Mutation)> = vec![
        ("destination.township_code", |r| {
            if let Some(d) = r.destination.as_mut() {
                d.township_code = "620702999".into();
            }
        }),
        ("destination.county_code", |r| {
            if let Some(d) = r.destination.as_mut() {
                d.township_code = OTHER_TOWNSHIP.into();
            }
        }),
        ("destination", |r| r.destination = None),
        ("expected_release_date", |r| {
            r.expected_release_date = Some(to_date(today() - Days::new(2)))
        }),
        ("expected_release_date", |r| {
            r.expected_release_date = Some(common::Date {
                year: 2026,
                month: 2,
                day: 30,
            })
        }),
        ("national_id", |r| {
            let last = if r.national_id.ends_with('0') { "1" } else { "0" };
            r.national_id.replace_range(17..18, last);
        }),
        ("national_id", |r| r.national_id.truncate(17)),
        ("national_id", |r| r.national_id = "ABCDEFGHIJKLMNOPQR".into()),
        ("date_of_birth", |r| {
            r.date_of_birth = Some(common::Date {
                year: 1969,
                month: 1,
                day: 1,
            })
        }),
        ("category", |r| r.category = 0),
        ("person_name", |r| r.person_name = "  ".into()),
        ("prison_reference", |r| r.prison_reference = "x".repeat(65)),
        ("risk_notes", |r| r.risk_notes = "长".repeat(2001)),
    ];
    for (field, mutate) in cases {
        let mut request = notice(10);
        mutate(&mut request);
        let status = mesh
            .handover()
            .submit_release_notice(authorized(request, &token))
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
    assert_eq!(rows(&mesh, "handovers").await, 0, "nothing stored");
    assert_eq!(rows(&mesh, "kit_outbox").await, 0, "no event emitted");

    // Yesterday is within the default tolerance of one day.
    let mut late = notice(10);
    late.expected_release_date = Some(to_date(today() - Days::new(1)));
    let handover = submit(&mesh, late).await;
    // Steps validate their input too, naming the field.
    let status = mesh
        .handover()
        .confirm_release(authorized(
            pb::ConfirmReleaseRequest {
                handover_id: handover.handover_id.clone(),
                actual_release_time: Some(to_timestamp(Utc::now() + chrono::Duration::days(1))),
            },
            &token,
        ))
        .await
        .expect_err("release in the future");
    assert_eq!(violated_fields(&status), ["actual_release_time"]);
    let status = mesh
        .handover()
        .amend_release_notice(authorized(
            pb::AmendReleaseNoticeRequest {
                handover_id: handover.handover_id.clone(),
                new_expected_release_date: None,
                new_destination: Some(common::Jurisdiction {
                    township_code: "999999001".into(),
                    county_code: HOME_COUNTY.into(),
                }),
                reason: "搬家".into(),
            },
            &token,
        ))
        .await
        .expect_err("unknown township");
    assert_eq!(violated_fields(&status), ["new_destination.township_code"]);
    // A report-in whose term the registry would refuse is refused here, where the office can
    // correct it, instead of being dead-lettered by the registry.
    let mut impossible = report_in_request(&handover.handover_id, Utc::now());
    impossible.term_start = Some(common::Date {
        year: 1970,
        month: 1,
        day: 1,
    });
    let status = mesh
        .handover()
        .record_report_in(authorized(impossible, &mesh.token(&home_office())))
        .await
        .expect_err("term of 1970");
    assert_eq!(violated_fields(&status), ["term_start"], "{}", status.message());
    let status = get(&mesh, "not-a-uuid", &token).await.expect_err("bad id");
    assert_eq!(violated_fields(&status), ["handover_id"]);
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn listing_is_scoped_ordered_and_paginated() {
    let mut mesh = start_handover(&[]).await;
    let mut submitted = Vec::new();
    for n in 20..25 {
        submitted.push(submit(&mesh, notice(n)).await.handover_id);
    }
    let prison_b = mesh.token(&clerk_b());
    let mut theirs = notice(30);
    theirs.prison_id = PRISON_B.into();
    mesh.handover()
        .submit_release_notice(authorized(theirs, &prison_b))
        .await
        .expect("prison B submits");

    let list = |request: pb::ListHandoversRequest, token: &str| authorized(request, token);
    let prison_a = mesh.token(&clerk_a());
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = mesh
            .handover()
            .list_handovers(list(
                pb::ListHandoversRequest {
                    prison_id: PRISON_A.into(),
                    page: Some(common::PageRequest {
                        page_size: 2,
                        page_token: page_token.clone(),
                    }),
                    ..Default::default()
                },
                &prison_a,
            ))
            .await
            .expect("page")
            .into_inner();
        assert!(page.handovers.len() <= 2);
        seen.extend(page.handovers.into_iter().map(|h| h.handover_id));
        page_token = page.page.expect("page info").next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    assert_eq!(
        seen, submitted,
        "prison A sees its own notices once each, oldest first"
    );

    // The township office sees both prisons' notices; a status filter narrows them.
    let office = mesh.token(&home_office());
    let township = mesh
        .handover()
        .list_handovers(list(
            pb::ListHandoversRequest {
                township_code: HOME_TOWNSHIP.into(),
                ..Default::default()
            },
            &office,
        ))
        .await
        .expect("township list")
        .into_inner();
    assert_eq!(township.handovers.len(), 6);
    acknowledge(&mesh, &submitted[0], &office)
        .await
        .expect("acknowledged");
    let bureau = mesh.token(&county_bureau("bureau-ganzhou", HOME_COUNTY));
    let acknowledged = mesh
        .handover()
        .list_handovers(list(
            pb::ListHandoversRequest {
                county_code: HOME_COUNTY.into(),
                statuses: vec![pb::HandoverStatus::Acknowledged as i32],
                ..Default::default()
            },
            &bureau,
        ))
        .await
        .expect("county list")
        .into_inner();
    let ids: Vec<_> = acknowledged
        .handovers
        .iter()
        .map(|h| h.handover_id.clone())
        .collect();
    assert_eq!(ids, [submitted[0].clone()]);

    // Exactly one scope, and tokens must come from a previous page.
    let status = mesh
        .handover()
        .list_handovers(list(
            pb::ListHandoversRequest {
                prison_id: PRISON_A.into(),
                township_code: HOME_TOWNSHIP.into(),
                ..Default::default()
            },
            &prison_a,
        ))
        .await
        .expect_err("two scopes");
    assert_eq!(violated_fields(&status), ["prison_id", "township_code"]);
    let status = mesh
        .handover()
        .list_handovers(list(
            pb::ListHandoversRequest {
                prison_id: PRISON_A.into(),
                page: Some(common::PageRequest {
                    page_size: 2,
                    page_token: "garbage!".into(),
                }),
                ..Default::default()
            },
            &prison_a,
        ))
        .await
        .expect_err("bad token");
    assert_eq!(violated_fields(&status), ["page.page_token"]);
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn national_id_and_risk_notes_never_appear_in_plain_text_at_rest_or_in_logs() {
    let mut mesh = start_handover(&[("RUST_LOG", "debug")]).await;
    let request = notice(40);
    let national_id = request.national_id.clone();
    let risk_notes = request.risk_notes.clone();
    let office = mesh.token(&home_office());
    let token = mesh.token(&clerk_a());
    let id = submit(&mesh, request.clone()).await.handover_id;
    // A duplicate and an invalid variant go through the other paths too.
    mesh.handover()
        .submit_release_notice(authorized(request.clone(), &token))
        .await
        .expect("duplicate");
    let mut invalid = request;
    invalid.prison_reference = "ZY-INVALID".into();
    invalid
        .national_id
        .replace_range(17..18, if national_id.ends_with('0') { "1" } else { "0" });
    let invalid_id = invalid.national_id.clone();
    mesh.handover()
        .submit_release_notice(authorized(invalid, &token))
        .await
        .expect_err("invalid");
    get(&mesh, &id, &office).await.expect("read back");
    report_in(&mesh, &id, &office).await.expect("reported in");
    let events = events_of(&tap(&mesh), &id, 2).await;
    assert_eq!(
        event_types(&events),
        ["handover.notified", "handover.reported_in"]
    );

    // Everything in the database, the outbox with the report-in event included, every row
    // of every table as text (bytea shows as hex).
    let (tables, dump) = dump(&mesh, "handover").await;
    assert!(tables.contains(&"handovers".to_owned()));
    assert!(tables.contains(&"kit_outbox".to_owned()));
    assert_eq!(
        count(
            &mesh,
            "handover",
            "SELECT count(*) FROM kit_outbox WHERE event_type = 'handover.reported_in'"
        )
        .await,
        1,
        "the report-in event is in the outbox, and in the dump"
    );
    let log = mesh.process("handover").log_text();
    let phone = "13912345678".to_owned();
    let address = "甘州区东街 1 号".to_owned();
    for secret in [&national_id, &invalid_id, &risk_notes, &phone, &address] {
        assert!(!dump.contains(secret.as_str()), "plain value in the database");
        assert!(
            !dump.contains(&hex::encode(secret.as_bytes())),
            "plain value inside a bytea column"
        );
        assert!(!log.contains(secret.as_str()), "plain value in the logs");
        for event in &events {
            assert!(!contains(&event.payload, secret), "plain value on the topic");
        }
    }
    // What the report-in seals opens with the transit ring alone, not with the handover
    // service's own field key.
    let reported_in = pb::HandoverReportedIn::decode(events[1].payload.as_slice()).expect("decodes");
    let transit = mesh.secrets.transit_ring().expect("transit ring");
    let personal = transit::open_report_in(&transit, &id, &reported_in.sealed_personal).expect("opens");
    assert_eq!(personal.national_id, national_id);
    let own = mesh.secrets.field_ring("handover").expect("handover's ring");
    assert!(transit::open_report_in(&own, &id, &reported_in.sealed_personal).is_err());
    assert!(log.contains("release notice submitted"), "the log was captured");
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn invalid_configuration_exits_64_with_one_message() {
    let output = run_misconfigured("handover", &[("MESH_HANDOVER_PAST_TOLERANCE_DAYS", "400")]).await;
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    for expected in [
        "MESH_DATABASE_URL is required",
        "MESH_FIELD_KEYS is required",
        "MESH_HANDOVER_TRANSIT_KEYS is required",
        "MESH_HANDOVER_PAST_TOLERANCE_DAYS must be at most 30",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
}
