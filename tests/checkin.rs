//! The check-in service end to end: the real registry and check-in binaries against real
//! PostgreSQL and Tansu. Supervisees are registered through the registry's API and reach the
//! check-in service only through the registry's Kafka events.

use std::time::Duration;

use chrono::{DateTime, Utc};
use mesh_e2e::{
    Mesh, authorized, count, county_bureau, eventually, home_officer, officer, prison, registration,
    reported_in, supervisee_snapshot, township_office,
};
use mesh_kit::{auth::Caller, error::violated_fields, proto_time::to_timestamp};
use mesh_proto::{checkin as pb, common, registry as registry_pb};
use prost::Message;
use tonic::{Code, Status};
use uuid::Uuid;

/// Ganzhou district seat, inside the default permitted area of its townships.
const SEAT: (f64, f64) = (38.93, 100.45);
/// Metres per degree of latitude (haversine on the mean Earth radius).
const METRES_PER_DEGREE: f64 = 111_195.0;

/// A registry and a check-in service sharing one mesh (topics), each on its own database.
async fn start_registry_and_checkin() -> Mesh {
    Mesh::start(&["registry", "checkin"]).await.expect("mesh")
}

/// Registers person `n` in township 620702001, already reported in (active) or not.
async fn register(mesh: &Mesh, n: u16, reported: bool) -> String {
    let request = if reported {
        reported_in(n, Utc::now() - chrono::Duration::days(1))
    } else {
        registration(n)
    };
    mesh_e2e::register(mesh, request).await
}

/// Registers an active supervisee and waits until the check-in service knows it.
async fn register_active(mesh: &Mesh, n: u16) -> String {
    let id = register(mesh, n, true).await;
    wait_projected(mesh, &id, 1).await;
    id
}

async fn change_status(mesh: &Mesh, id: &str, status: registry_pb::SuperviseeStatus) {
    let token = mesh.token(&home_officer());
    mesh.registry()
        .change_status(authorized(
            registry_pb::ChangeStatusRequest {
                supervisee_id: id.to_owned(),
                status: status as i32,
                reason: "test".into(),
                effective_at: None,
            },
            &token,
        ))
        .await
        .expect("status changed");
}

/// Waits (bounded) until the check-in service's projection holds `version` of the
/// supervisee; returns the projected status.
async fn wait_projected(mesh: &Mesh, id: &str, version: i64) -> String {
    let pool = mesh.pool("checkin").expect("pool");
    let id: Uuid = id.parse().expect("uuid");
    let what = format!(
        "supervisee {id} version {version} in the check-in projection; log: {}",
        mesh.process("checkin").log_path.display()
    );
    eventually(&what, Duration::from_secs(30), async || {
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT version, status FROM supervisees WHERE id = $1")
                .bind(id)
                .fetch_optional(&pool)
                .await
                .expect("projection readable");
        row.filter(|(projected, _)| *projected >= version)
            .map(|(_, status)| status)
    })
    .await
}

async fn record(
    mesh: &Mesh,
    caller: &Caller,
    checkin: pb::NewCheckin,
) -> Result<pb::RecordCheckinResponse, Status> {
    let token = mesh.token(caller);
    mesh.checkin()
        .record_checkin(authorized(
            pb::RecordCheckinRequest {
                checkin: Some(checkin),
            },
            &token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn sync(
    mesh: &Mesh,
    caller: &Caller,
    checkins: Vec<pb::NewCheckin>,
) -> Result<Vec<pb::SyncItemResult>, Status> {
    let token = mesh.token(caller);
    mesh.checkin()
        .sync_offline_batch(authorized(pb::SyncOfflineBatchRequest { checkins }, &token))
        .await
        .map(|response| response.into_inner().results)
}

async fn list(
    mesh: &Mesh,
    caller: &Caller,
    supervisee_id: &str,
    range: (DateTime<Utc>, DateTime<Utc>),
    page: Option<common::PageRequest>,
) -> Result<pb::ListCheckinsResponse, Status> {
    let token = mesh.token(caller);
    mesh.checkin()
        .list_checkins(authorized(
            pb::ListCheckinsRequest {
                supervisee_id: supervisee_id.to_owned(),
                range: Some(common::TimeRange {
                    start: Some(to_timestamp(range.0)),
                    end: Some(to_timestamp(range.1)),
                }),
                page,
            },
            &token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn stored_checkins(mesh: &Mesh) -> i64 {
    count(mesh, "checkin", "SELECT count(*) FROM checkins").await
}

async fn recorded_events(mesh: &Mesh) -> i64 {
    count(
        mesh,
        "checkin",
        "SELECT count(*) FROM kit_outbox WHERE event_type = 'checkin.recorded'",
    )
    .await
}

fn manual(officer_id: &str) -> Option<pb::IdentityVerification> {
    Some(pb::IdentityVerification {
        verification: Some(pb::identity_verification::Verification::Manual(
            pb::ManualVerification {
                officer_id: officer_id.into(),
                note: "known in person".into(),
            },
        )),
    })
}

fn face(score: f64) -> Option<pb::IdentityVerification> {
    Some(pb::IdentityVerification {
        verification: Some(pb::identity_verification::Verification::FaceMatch(
            pb::FaceMatch { score },
        )),
    })
}

fn point(latitude: f64, longitude: f64, accuracy_m: f64) -> Option<common::GeoPoint> {
    Some(common::GeoPoint {
        latitude,
        longitude,
        accuracy_m,
    })
}

/// A home visit by officer-1 (the home officer) at the district seat, `ago` before now.
fn home_visit(supervisee_id: &str, ago: chrono::Duration) -> pb::NewCheckin {
    pb::NewCheckin {
        checkin_id: Uuid::new_v4().to_string(),
        supervisee_id: supervisee_id.to_owned(),
        method: pb::CheckinMethod::HomeVisit as i32,
        recording_officer_id: "officer-1".into(),
        device_time: Some(to_timestamp(Utc::now() - ago)),
        position: point(SEAT.0, SEAT.1, 15.0),
        identity_verification: manual("officer-1"),
        captured_offline: false,
        note: "at home, all well".into(),
    }
}

fn hours(n: i64) -> chrono::Duration {
    chrono::Duration::hours(n)
}

#[tokio::test]
async fn accepted_checkin_is_published_with_its_fields() {
    let mut mesh = start_registry_and_checkin().await;
    let id = register_active(&mesh, 1).await;
    let visit = home_visit(&id, chrono::Duration::minutes(3));
    let response = record(&mesh, &home_officer(), visit.clone())
        .await
        .expect("accepted");
    assert!(!response.duplicate);
    let stored = response.checkin.expect("checkin");
    assert_eq!(stored.checkin_id, visit.checkin_id);
    assert_eq!(stored.method(), pb::CheckinMethod::HomeVisit);
    assert!(stored.identity_verified);
    assert!(!stored.out_of_area, "the seat lies in the default area");
    assert_eq!(stored.distance_outside_m, 0.0);
    let jurisdiction = stored.jurisdiction.clone().expect("jurisdiction");
    assert_eq!(jurisdiction.township_code, "620702001");
    assert_eq!(jurisdiction.county_code, "620702");
    assert!(stored.received_at.is_some());

    // A supervisee app self check-in with a weak face match is stored but proves nothing.
    let mut app = home_visit(&id, chrono::Duration::minutes(1));
    app.method = pb::CheckinMethod::AppSelfCheckin as i32;
    app.identity_verification = face(0.42);
    let weak = record(&mesh, &home_officer(), app.clone())
        .await
        .expect("accepted")
        .checkin
        .expect("checkin");
    assert!(!weak.identity_verified);
    assert_eq!(
        weak.recording_officer_id, "",
        "a self check-in has no recording officer"
    );

    let tap = mesh.tap(&mesh.topics.checkin).expect("tap");
    let events = tap.collect(2, Duration::from_secs(30)).await.expect("kafka");
    assert_eq!(events.len(), 2, "one event per accepted check-in");
    let event = events
        .iter()
        .find(|event| {
            pb::CheckinRecorded::decode(event.payload.as_slice())
                .is_ok_and(|decoded| decoded.checkin_id == visit.checkin_id)
        })
        .expect("the home visit's event");
    assert_eq!(event.header("event_type"), Some("checkin.recorded"));
    assert_eq!(event.header("producer"), Some("checkin"));
    assert_eq!(event.key.as_deref(), Some(id.as_str()));
    assert!(event.header("traceparent").is_some_and(|t| t.starts_with("00-")));
    let decoded = pb::CheckinRecorded::decode(event.payload.as_slice()).expect("decodes");
    assert_eq!(decoded.supervisee_id, id);
    assert_eq!(decoded.method(), pb::CheckinMethod::HomeVisit);
    assert_eq!(decoded.device_time, stored.device_time);
    assert_eq!(decoded.received_at, stored.received_at);
    assert_eq!(decoded.position, stored.position);
    assert_eq!(decoded.jurisdiction, stored.jurisdiction);
    assert!(decoded.identity_verified);
    assert!(!decoded.out_of_area);
    assert!(!decoded.captured_offline);
    assert_eq!(decoded.recording_officer_id, "officer-1");
    let actor = decoded.actor.expect("actor");
    assert_eq!(
        (actor.subject.as_str(), actor.role.as_str()),
        ("officer-1", "officer")
    );
    let weak_event = events
        .iter()
        .filter_map(|event| pb::CheckinRecorded::decode(event.payload.as_slice()).ok())
        .find(|decoded| decoded.checkin_id == app.checkin_id)
        .expect("the app check-in's event");
    assert!(!weak_event.identity_verified);
    assert_eq!(weak_event.method(), pb::CheckinMethod::AppSelfCheckin);

    let audited = count(
        &mesh,
        "checkin",
        "SELECT count(*) FROM kit_audit_log WHERE action = 'checkin.recorded'",
    )
    .await;
    assert_eq!(audited, 2);
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn retried_checkin_is_idempotent_and_reusing_its_id_is_refused() {
    let mut mesh = start_registry_and_checkin().await;
    let id = register_active(&mesh, 2).await;
    let visit = home_visit(&id, chrono::Duration::minutes(10));
    let first = record(&mesh, &home_officer(), visit.clone())
        .await
        .expect("accepted");
    let again = record(&mesh, &home_officer(), visit.clone())
        .await
        .expect("retry accepted");
    assert!(!first.duplicate);
    assert!(again.duplicate, "the retry is recognised");
    assert_eq!(again.checkin, first.checkin, "same answer");
    // The same check-in re-uploaded in an offline batch is a duplicate too.
    let results = sync(&mesh, &home_officer(), vec![visit.clone()])
        .await
        .expect("batch");
    assert_eq!(results[0].outcome(), pb::SyncItemOutcome::Duplicate);
    assert_eq!(results[0].checkin, first.checkin);

    // Same id, different content: refused, whatever changed.
    let mut other_note = visit.clone();
    other_note.note = "a different remark".into();
    let mut other_time = visit.clone();
    other_time.device_time = Some(to_timestamp(Utc::now()));
    let mut other_person = visit.clone();
    other_person.supervisee_id = Uuid::new_v4().to_string();
    for conflicting in [other_note, other_time, other_person.clone()] {
        let status = record(&mesh, &home_officer(), conflicting)
            .await
            .expect_err("id reuse refused");
        assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    }
    // An officer of another township who reuses the id is refused as outside the
    // jurisdiction, before anything says whether the content matched.
    let outsider = officer("officer-9", "620702002");
    for reused in [visit.clone(), other_person] {
        let status = record(&mesh, &outsider, reused)
            .await
            .expect_err("not the outsider's check-in");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }

    // Concurrent first attempts of one check-in: exactly one is stored.
    let racing = home_visit(&id, chrono::Duration::minutes(5));
    let token = mesh.token(&home_officer());
    let mut calls = Vec::new();
    for _ in 0..6 {
        let mut client = mesh.checkin();
        let request = pb::RecordCheckinRequest {
            checkin: Some(racing.clone()),
        };
        let token = token.clone();
        calls.push(tokio::spawn(async move {
            client
                .record_checkin(authorized(request, &token))
                .await
                .map(tonic::Response::into_inner)
        }));
    }
    let mut fresh = 0;
    let mut answers = Vec::new();
    for call in calls {
        let response = call.await.expect("joined").expect("accepted");
        fresh += usize::from(!response.duplicate);
        answers.push(response.checkin);
    }
    assert_eq!(fresh, 1, "one first write, the rest are retries");
    assert!(
        answers.windows(2).all(|pair| pair[0] == pair[1]),
        "same answer for all"
    );

    assert_eq!(stored_checkins(&mesh).await, 2);
    assert_eq!(recorded_events(&mesh).await, 2, "retries publish nothing");
    let tap = mesh.tap(&mesh.topics.checkin).expect("tap");
    let events = tap.collect(2, Duration::from_secs(30)).await.expect("kafka");
    assert_eq!(events.len(), 2);
    assert!(
        tap.next(Duration::from_secs(3)).await.expect("kafka").is_none(),
        "no third event"
    );
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn offline_batch_accepts_items_inside_the_window_and_rejects_the_rest_one_by_one() {
    let mut mesh = start_registry_and_checkin().await;
    let id = register_active(&mesh, 3).await;
    let offline = |ago| pb::NewCheckin {
        captured_offline: true,
        ..home_visit(&id, ago)
    };
    let inside_old = offline(hours(71));
    let inside_recent = offline(hours(2));
    let too_old = offline(hours(73));
    let future = offline(-chrono::Duration::minutes(10));
    let mut bad_latitude = offline(hours(1));
    bad_latitude.position = point(123.0, SEAT.1, 10.0);
    let unknown_person = pb::NewCheckin {
        supervisee_id: Uuid::new_v4().to_string(),
        ..offline(hours(1))
    };
    let reused_id = pb::NewCheckin {
        note: "different content".into(),
        ..inside_recent.clone()
    };
    let batch = vec![
        inside_old.clone(),
        inside_recent.clone(),
        too_old,
        future,
        inside_old.clone(), // the same item twice in one batch
        bad_latitude,
        unknown_person,
        reused_id,
    ];
    let results = sync(&mesh, &home_officer(), batch.clone())
        .await
        .expect("batch answered");
    use pb::SyncItemOutcome::{Accepted, Duplicate, Rejected, RetryLater};
    let expected = [
        (Accepted, ""),
        (Accepted, ""),
        (Rejected, "device_time"),
        (Rejected, "device_time"),
        (Duplicate, ""),
        (Rejected, "position.latitude"),
        // Perhaps registered a moment ago: the app keeps it and sends it again.
        (RetryLater, "supervisee_id"),
        (Rejected, "checkin_id"),
    ];
    assert_eq!(results.len(), expected.len());
    for (index, (result, (outcome, field))) in results.iter().zip(expected).enumerate() {
        assert_eq!(result.index as usize, index);
        assert_eq!(result.checkin_id, batch[index].checkin_id);
        assert_eq!(result.outcome(), outcome, "item {index}: {result:?}");
        assert_eq!(result.reject_field, field, "item {index}: {result:?}");
        let stored = matches!(outcome, Accepted | Duplicate);
        assert_eq!(result.checkin.is_some(), stored, "item {index}");
        assert_eq!(result.reject_reason.is_empty(), stored, "item {index}");
    }
    assert!(
        results[2].reject_reason.contains("72-hour"),
        "{}",
        results[2].reject_reason
    );
    assert!(
        results[3].reject_reason.contains("future"),
        "{}",
        results[3].reject_reason
    );
    let accepted = results[0].checkin.clone().expect("checkin");
    assert!(accepted.captured_offline);
    assert_eq!(
        accepted.device_time,
        inside_old.device_time.map(|t| prost_types::Timestamp {
            nanos: t.nanos / 1000 * 1000, // stored to the microsecond
            ..t
        })
    );
    assert_eq!(stored_checkins(&mesh).await, 2);
    assert_eq!(recorded_events(&mesh).await, 2);

    // The client did not get the answer and sends the whole batch again: nothing doubles.
    let again = sync(&mesh, &home_officer(), batch).await.expect("batch answered");
    let outcomes: Vec<_> = again.iter().map(pb::SyncItemResult::outcome).collect();
    assert_eq!(
        outcomes,
        [
            Duplicate, Duplicate, Rejected, Rejected, Duplicate, Rejected, RetryLater, Rejected
        ]
    );
    assert_eq!(stored_checkins(&mesh).await, 2);
    assert_eq!(recorded_events(&mesh).await, 2);

    let tap = mesh.tap(&mesh.topics.checkin).expect("tap");
    let events = tap.collect(2, Duration::from_secs(30)).await.expect("kafka");
    let mut published: Vec<String> = events
        .iter()
        .filter_map(|event| pb::CheckinRecorded::decode(event.payload.as_slice()).ok())
        .inspect(|decoded| assert!(decoded.captured_offline))
        .map(|decoded| decoded.checkin_id)
        .collect();
    published.sort();
    let mut expected_ids = vec![inside_old.checkin_id, inside_recent.checkin_id];
    expected_ids.sort();
    assert_eq!(published, expected_ids);
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn batch_size_is_bounded() {
    let mut mesh = start_registry_and_checkin().await;
    let id = register_active(&mesh, 4).await;
    let oversized: Vec<_> = (0..501)
        .map(|_| home_visit(&id, chrono::Duration::minutes(30)))
        .collect();
    let status = sync(&mesh, &home_officer(), oversized.clone())
        .await
        .expect_err("refused as a whole");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["checkins"]);
    let empty = sync(&mesh, &home_officer(), Vec::new())
        .await
        .expect_err("empty batch refused");
    assert_eq!(violated_fields(&empty), ["checkins"]);
    assert_eq!(
        stored_checkins(&mesh).await,
        0,
        "nothing of the refused batch stored"
    );

    // The largest batch allowed goes through.
    let results = sync(&mesh, &home_officer(), oversized[..500].to_vec())
        .await
        .expect("500 items accepted");
    assert_eq!(results.len(), 500);
    assert!(
        results
            .iter()
            .all(|result| result.outcome() == pb::SyncItemOutcome::Accepted)
    );
    assert_eq!(stored_checkins(&mesh).await, 500);
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn callers_outside_the_jurisdiction_are_refused() {
    let mut mesh = start_registry_and_checkin().await;
    let id = register_active(&mesh, 5).await;
    let neighbour = officer("officer-9", "620702002");
    let mut theirs = home_visit(&id, chrono::Duration::minutes(5));
    theirs.recording_officer_id = "officer-9".into();
    theirs.identity_verification = manual("officer-9");

    let status = record(&mesh, &neighbour, theirs.clone())
        .await
        .expect_err("record refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let results = sync(&mesh, &neighbour, vec![theirs])
        .await
        .expect("batch answered");
    // Not stored; but a transfer to the neighbour may not have reached the service yet.
    assert_eq!(results[0].outcome(), pb::SyncItemOutcome::RetryLater);
    assert_eq!(results[0].reject_field, "supervisee_id");
    let window = (Utc::now() - hours(24), Utc::now() + hours(1));
    for caller in [neighbour.clone(), county_bureau("bureau-minle", "620722")] {
        let status = list(&mesh, &caller, &id, window, None)
            .await
            .expect_err("list refused");
        assert_eq!(status.code(), Code::PermissionDenied, "{caller:?}");
    }
    // Prisons have no business with check-ins at all.
    let a_prison = prison("prison-1", "zhangye-prison");
    let status = record(&mesh, &a_prison, home_visit(&id, chrono::Duration::minutes(5)))
        .await
        .expect_err("prison refused");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = sync(
        &mesh,
        &a_prison,
        vec![home_visit(&id, chrono::Duration::minutes(5))],
    )
    .await
    .expect_err("prison refused");
    assert_eq!(status.code(), Code::PermissionDenied);
    // An officer records under their own id only.
    let status = record(
        &mesh,
        &officer("officer-2", "620702001"),
        home_visit(&id, chrono::Duration::minutes(5)),
    )
    .await
    .expect_err("someone else's id refused");
    assert_eq!(violated_fields(&status), ["checkin.recording_officer_id"]);
    assert_eq!(stored_checkins(&mesh).await, 0);

    // The county bureau of the township records and reads.
    let own_county = county_bureau("bureau-ganzhou", "620702");
    record(&mesh, &own_county, home_visit(&id, chrono::Duration::minutes(5)))
        .await
        .expect("own county bureau records");
    let listed = list(&mesh, &own_county, &id, window, None)
        .await
        .expect("own county bureau reads");
    assert_eq!(listed.checkins.len(), 1);

    // After a transfer the old township's officer is refused, the new one accepted.
    let token = mesh.token(&home_officer());
    mesh.registry()
        .transfer_supervisee(authorized(
            registry_pb::TransferSuperviseeRequest {
                supervisee_id: id.clone(),
                to_township_code: "620702002".into(),
                to_county_code: "620702".into(),
                to_officer_id: "officer-9".into(),
                reason: "moved house".into(),
            },
            &token,
        ))
        .await
        .expect("transferred");
    wait_projected(&mesh, &id, 2).await;
    // (A contact the old township made before the transfer still counts: see
    // `an_offline_contact_captured_before_a_transfer_counts_for_its_township`.)
    let status = record(&mesh, &home_officer(), home_visit(&id, chrono::Duration::zero()))
        .await
        .expect_err("old township refused");
    assert_eq!(status.code(), Code::PermissionDenied);
    let mut new_home = home_visit(&id, chrono::Duration::minutes(1));
    new_home.recording_officer_id = "officer-9".into();
    let moved = record(&mesh, &neighbour, new_home)
        .await
        .expect("new township accepted")
        .checkin
        .expect("checkin");
    assert_eq!(
        moved.jurisdiction.expect("jurisdiction").township_code,
        "620702002"
    );
    assert_eq!(stored_checkins(&mesh).await, 2);
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn position_outside_the_permitted_area_is_accepted_and_flagged() {
    let mut mesh = start_registry_and_checkin().await;
    let id = register_active(&mesh, 6).await;
    let get_area = |mesh: &Mesh, caller: &Caller| {
        let mut client = mesh.checkin();
        let token = mesh.token(caller);
        async move {
            client
                .get_permitted_area(authorized(
                    pb::GetPermittedAreaRequest {
                        township_code: "620702001".into(),
                    },
                    &token,
                ))
                .await
                .map(|response| response.into_inner().area.expect("area"))
        }
    };
    // Before any area is set, the default circle around the county seat applies.
    let default = get_area(&mesh, &home_officer()).await.expect("default area");
    assert_eq!(default.version, 0);
    assert_eq!(default.circles.len(), 1);
    assert_eq!(default.circles[0].radius_m, 60_000.0);

    let small_area = |radius_m: f64| pb::SetPermittedAreaRequest {
        township_code: "620702001".into(),
        circles: vec![pb::GeoCircle {
            centre: point(SEAT.0, SEAT.1, 0.0),
            radius_m,
        }],
    };
    let other_office = Caller {
        subject: "office-620702002".into(),
        township: Some("620702002".into()),
        ..township_office("620702001")
    };
    for (caller, code) in [
        (home_officer(), Code::PermissionDenied),
        (other_office, Code::PermissionDenied),
    ] {
        let token = mesh.token(&caller);
        let status = mesh
            .checkin()
            .set_permitted_area(authorized(small_area(2_000.0), &token))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code, "{caller:?}");
    }
    let token = mesh.token(&township_office("620702001"));
    let status = mesh
        .checkin()
        .set_permitted_area(authorized(small_area(1.0), &token))
        .await
        .expect_err("tiny radius refused");
    assert_eq!(violated_fields(&status), ["circles[0].radius_m"]);
    let set = mesh
        .checkin()
        .set_permitted_area(authorized(small_area(2_000.0), &token))
        .await
        .expect("township office sets its area")
        .into_inner()
        .area
        .expect("area");
    assert_eq!(set.version, 1);
    let read = get_area(&mesh, &home_officer()).await.expect("area");
    assert_eq!(read, set);
    assert_eq!(read.updated_by.expect("actor").subject, "office-620702001");

    let at = |metres_north: f64, accuracy_m: f64| pb::NewCheckin {
        position: point(SEAT.0 + metres_north / METRES_PER_DEGREE, SEAT.1, accuracy_m),
        ..home_visit(&id, chrono::Duration::minutes(2))
    };
    let inside = record(&mesh, &home_officer(), at(500.0, 10.0))
        .await
        .expect("accepted")
        .checkin
        .expect("checkin");
    assert!(!inside.out_of_area);
    // 100 m beyond the edge, but the device only knows its position to 150 m: not flagged.
    let uncertain = record(&mesh, &home_officer(), at(2_100.0, 150.0))
        .await
        .expect("accepted")
        .checkin
        .expect("checkin");
    assert!(!uncertain.out_of_area);
    // 5.5 km north of the centre: 3.5 km outside the circle, accepted and flagged.
    let outside_visit = at(5_500.0, 20.0);
    let outside = record(&mesh, &home_officer(), outside_visit.clone())
        .await
        .expect("accepted although out of area")
        .checkin
        .expect("checkin");
    assert!(outside.out_of_area);
    assert!(
        (outside.distance_outside_m - 3_500.0).abs() < 20.0,
        "{}",
        outside.distance_outside_m
    );

    let tap = mesh.tap(&mesh.topics.checkin).expect("tap");
    let events = tap.collect(3, Duration::from_secs(30)).await.expect("kafka");
    let flagged = events
        .iter()
        .filter_map(|event| pb::CheckinRecorded::decode(event.payload.as_slice()).ok())
        .find(|decoded| decoded.checkin_id == outside_visit.checkin_id)
        .expect("the out-of-area event");
    assert!(flagged.out_of_area, "risk-alert learns of it from the event");
    assert_eq!(flagged.distance_outside_m, outside.distance_outside_m);

    // Replacing the area bumps its version; stored check-ins keep their flag.
    let replaced = mesh
        .checkin()
        .set_permitted_area(authorized(small_area(10_000.0), &token))
        .await
        .expect("replaced")
        .into_inner()
        .area
        .expect("area");
    assert_eq!(replaced.version, 2);
    let listed = list(
        &mesh,
        &home_officer(),
        &id,
        (Utc::now() - hours(1), Utc::now() + hours(1)),
        None,
    )
    .await
    .expect("listed");
    assert_eq!(listed.checkins.iter().filter(|c| c.out_of_area).count(), 1);
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn bad_inputs_name_the_field_and_store_nothing() {
    let mut mesh = start_registry_and_checkin().await;
    let id = register_active(&mesh, 7).await;
    type Mutation = fn(&mut pb::NewCheckin);
    let cases: Vec<(&str, Mutation)> = vec![
        ("checkin.checkin_id", |c| c.checkin_id = "not-a-uuid".into()),
        ("checkin.supervisee_id", |c| c.supervisee_id = "42".into()),
        ("checkin.method", |c| c.method = 0),
        ("checkin.recording_officer_id", |c| c.recording_officer_id.clear()),
        ("checkin.device_time", |c| c.device_time = None),
        ("checkin.device_time", |c| {
            c.device_time = Some(to_timestamp(Utc::now() + chrono::Duration::hours(1)))
        }),
        ("checkin.device_time", |c| {
            c.device_time = Some(to_timestamp(Utc::now() - chrono::Duration::days(4)))
        }),
        ("checkin.position", |c| c.position = None),
        ("checkin.position.latitude", |c| {
            c.position = point(-91.0, 100.0, 5.0)
        }),
        ("checkin.position.longitude", |c| {
            c.position = point(38.0, 181.0, 5.0)
        }),
        ("checkin.position.latitude", |c| {
            c.position = point(f64::NAN, 100.0, 5.0)
        }),
        ("checkin.position.accuracy_m", |c| {
            c.position = point(38.0, 100.0, -3.0)
        }),
        ("checkin.identity_verification", |c| {
            c.identity_verification = None
        }),
        ("checkin.identity_verification.face_match.score", |c| {
            c.identity_verification = face(-0.1)
        }),
        ("checkin.identity_verification.manual.officer_id", |c| {
            c.identity_verification = manual("")
        }),
        ("checkin.note", |c| c.note = "长".repeat(501)),
    ];
    for (field, mutate) in cases {
        let mut checkin = home_visit(&id, chrono::Duration::minutes(5));
        mutate(&mut checkin);
        let status = record(&mesh, &home_officer(), checkin)
            .await
            .expect_err(&format!("{field} case must be refused"));
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(
            violated_fields(&status),
            vec![field.to_owned()],
            "{field}: {}",
            status.message()
        );
    }
    // Several bad fields at once are all named; a missing check-in is named too.
    let mut several = home_visit(&id, chrono::Duration::minutes(5));
    several.method = 0;
    several.position = point(100.0, 100.0, 1.0);
    let status = record(&mesh, &home_officer(), several)
        .await
        .expect_err("refused");
    assert_eq!(
        violated_fields(&status),
        ["checkin.method", "checkin.position.latitude"]
    );
    let token = mesh.token(&home_officer());
    let status = mesh
        .checkin()
        .record_checkin(authorized(pb::RecordCheckinRequest { checkin: None }, &token))
        .await
        .expect_err("refused");
    assert_eq!(violated_fields(&status), ["checkin"]);

    assert_eq!(stored_checkins(&mesh).await, 0, "nothing stored");
    assert_eq!(recorded_events(&mesh).await, 0, "no event emitted");
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn only_supervisees_under_active_supervision_check_in() {
    let mut mesh = start_registry_and_checkin().await;
    let refused = |status: Status, needle: &str| {
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(status.message().contains(needle), "{}", status.message());
    };

    // Registered but not yet reported in.
    let pending = register(&mesh, 8, false).await;
    assert_eq!(wait_projected(&mesh, &pending, 1).await, "pending_report_in");
    let status = record(
        &mesh,
        &home_officer(),
        home_visit(&pending, chrono::Duration::minutes(5)),
    )
    .await
    .expect_err("pending refused");
    refused(status, "not under active supervision");

    // Suspended (e.g. taken into custody).
    let suspended = register_active(&mesh, 9).await;
    change_status(&mesh, &suspended, registry_pb::SuperviseeStatus::Suspended).await;
    assert_eq!(wait_projected(&mesh, &suspended, 2).await, "suspended");
    let status = record(
        &mesh,
        &home_officer(),
        home_visit(&suspended, chrono::Duration::minutes(5)),
    )
    .await
    .expect_err("suspended refused");
    refused(status, "not under active supervision");

    // Absconded: a check-in is contact restored and must get through.
    let absconded = register_active(&mesh, 10).await;
    change_status(&mesh, &absconded, registry_pb::SuperviseeStatus::Absconded).await;
    assert_eq!(wait_projected(&mesh, &absconded, 2).await, "absconded");
    record(
        &mesh,
        &home_officer(),
        home_visit(&absconded, chrono::Duration::minutes(5)),
    )
    .await
    .expect("absconded person's check-in accepted");

    // Nobody the registry ever announced.
    let status = record(
        &mesh,
        &home_officer(),
        home_visit(&Uuid::new_v4().to_string(), chrono::Duration::minutes(5)),
    )
    .await
    .expect_err("unknown refused");
    refused(status, "not known");

    assert_eq!(stored_checkins(&mesh).await, 1);
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn list_returns_a_time_range_newest_first_in_pages() {
    let mut mesh = start_registry_and_checkin().await;
    let id = register_active(&mesh, 11).await;
    let other = register_active(&mesh, 12).await;
    let now = Utc::now();
    let batch: Vec<_> = [50, 40, 30, 20, 10]
        .into_iter()
        .map(|ago| pb::NewCheckin {
            captured_offline: true,
            ..home_visit(&id, hours(ago))
        })
        .chain([home_visit(&other, hours(25))])
        .collect();
    let results = sync(&mesh, &home_officer(), batch.clone()).await.expect("batch");
    assert!(
        results
            .iter()
            .all(|result| result.outcome() == pb::SyncItemOutcome::Accepted)
    );
    let ids_of = |response: &pb::ListCheckinsResponse| -> Vec<String> {
        response
            .checkins
            .iter()
            .map(|checkin| checkin.checkin_id.clone())
            .collect()
    };

    // [now - 45 h, now - 15 h): the 40, 30 and 20 hour old ones, newest first.
    let ranged = list(
        &mesh,
        &home_officer(),
        &id,
        (now - hours(45), now - hours(15)),
        None,
    )
    .await
    .expect("listed");
    assert_eq!(
        ids_of(&ranged),
        [
            batch[3].checkin_id.clone(),
            batch[2].checkin_id.clone(),
            batch[1].checkin_id.clone()
        ]
    );
    assert!(ranged.page.expect("page").next_page_token.is_empty());

    // Pages of two over everything: 10 20 | 30 40 | 50, never skipping or repeating.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = list(
            &mesh,
            &home_officer(),
            &id,
            (now - hours(60), now + hours(1)),
            Some(common::PageRequest {
                page_size: 2,
                page_token: token.clone(),
            }),
        )
        .await
        .expect("page");
        pages += 1;
        seen.extend(ids_of(&page));
        token = page.page.expect("page").next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(pages, 3);
    let newest_first: Vec<String> = batch[..5]
        .iter()
        .rev()
        .map(|checkin| checkin.checkin_id.clone())
        .collect();
    assert_eq!(seen, newest_first);

    // Bad requests name the field; an unknown supervisee is not found.
    let token = mesh.token(&home_officer());
    type Mutation = fn(&mut pb::ListCheckinsRequest);
    let bad = |mutate: Mutation| {
        let mut request = pb::ListCheckinsRequest {
            supervisee_id: id.clone(),
            range: Some(common::TimeRange {
                start: Some(to_timestamp(now - hours(1))),
                end: Some(to_timestamp(now)),
            }),
            page: None,
        };
        mutate(&mut request);
        authorized(request, &token)
    };
    let cases: Vec<(&str, Mutation)> = vec![
        ("supervisee_id", |r| r.supervisee_id = "x".into()),
        ("range", |r| r.range = None),
        ("range.start", |r| {
            if let Some(range) = r.range.as_mut() {
                range.start = None
            }
        }),
        ("range.end", |r| {
            if let Some(range) = r.range.as_mut() {
                range.end = range.start
            }
        }),
        ("page.page_size", |r| {
            r.page = Some(common::PageRequest {
                page_size: 501,
                page_token: String::new(),
            })
        }),
        ("page.page_token", |r| {
            r.page = Some(common::PageRequest {
                page_size: 0,
                page_token: "not-a-token".into(),
            })
        }),
    ];
    for (field, mutate) in cases {
        let status = mesh.checkin().list_checkins(bad(mutate)).await.expect_err(field);
        assert_eq!(violated_fields(&status), [field], "{status:?}");
    }
    let unknown = list(
        &mesh,
        &home_officer(),
        &Uuid::new_v4().to_string(),
        (now - hours(1), now),
        None,
    )
    .await
    .expect_err("unknown supervisee");
    assert_eq!(unknown.code(), Code::NotFound);

    // Reads are audited, and the audit log cannot be rewritten.
    let reads = count(
        &mesh,
        "checkin",
        "SELECT count(*) FROM kit_audit_log WHERE action = 'checkin.list'",
    )
    .await;
    assert_eq!(reads, 4);
    let tampering = sqlx::query("DELETE FROM kit_audit_log")
        .execute(&mesh.pool("checkin").expect("pool"))
        .await;
    assert!(tampering.is_err(), "audit log is append-only");
    mesh.stop_all().await.expect("graceful stop");
}

/// Supervisee `id` at `version` with `status`, as the registry's events carry it.
fn snapshot(
    id: &str,
    version: i64,
    status: registry_pb::SuperviseeStatus,
) -> registry_pb::SuperviseeSnapshot {
    registry_pb::SuperviseeSnapshot {
        status: status as i32,
        ..supervisee_snapshot(id, version)
    }
}

#[tokio::test]
async fn projection_keeps_the_newest_snapshot_and_dead_letters_garbage() {
    use registry_pb::SuperviseeStatus::{Absconded, Active, Suspended};
    let mut mesh = Mesh::start(&["checkin"]).await.expect("checkin starts");
    let pool = mesh.pool("checkin").expect("pool");
    let topic = mesh.topics.registry.clone();
    let (person, sentinel) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
    let registered = |snapshot| {
        registry_pb::SuperviseeRegistered {
            supervisee: Some(snapshot),
            actor: None,
            handover_id: String::new(),
        }
        .encode_to_vec()
    };
    let status_changed = |snapshot| {
        registry_pb::SuperviseeStatusChanged {
            supervisee: Some(snapshot),
            ..Default::default()
        }
        .encode_to_vec()
    };
    // Version 2 arrives before a stale version 1 (a redelivery after a restart, say).
    mesh.publish(
        &topic,
        &person,
        "supervisee.registered",
        &registered(snapshot(&person, 2, Active)),
    )
    .await
    .expect("published");
    mesh.publish(
        &topic,
        &person,
        "supervisee.status_changed",
        &status_changed(snapshot(&person, 1, Suspended)),
    )
    .await
    .expect("published");
    mesh.publish(
        &topic,
        &person,
        "supervisee.photo_added",
        b"a type we do not project",
    )
    .await
    .expect("published");
    mesh.publish(&topic, &person, "supervisee.registered", &[0xff, 0xff, 0xff])
        .await
        .expect("published");
    // Same Kafka key, so the same partition: once the sentinel is projected, every event
    // before it has been handled.
    mesh.publish(
        &topic,
        &person,
        "supervisee.registered",
        &registered(snapshot(&sentinel, 1, Active)),
    )
    .await
    .expect("published");

    let projected = |id: String| {
        let pool = pool.clone();
        async move {
            for _ in 0..300 {
                let row: Option<(i64, String)> =
                    sqlx::query_as("SELECT version, status FROM supervisees WHERE id = $1::uuid")
                        .bind(&id)
                        .fetch_optional(&pool)
                        .await
                        .expect("readable");
                if row.is_some() {
                    return row;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None
        }
    };
    assert!(projected(sentinel.clone()).await.is_some(), "sentinel projected");
    assert_eq!(
        projected(person.clone()).await,
        Some((2, "active".to_owned())),
        "the stale snapshot changed nothing"
    );

    // The garbage was dead-lettered with its reason in checkin's own database, and the
    // consumer moved on; the unknown type was ignored, not dead-lettered.
    let reasons: Vec<String> = sqlx::query_scalar("SELECT reason FROM kit_dead_letters ORDER BY id")
        .fetch_all(&pool)
        .await
        .expect("dead letters");
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("undecodable"), "{reasons:?}");

    // A newer snapshot still applies.
    mesh.publish(
        &topic,
        &person,
        "supervisee.status_changed",
        &status_changed(snapshot(&person, 3, Absconded)),
    )
    .await
    .expect("published");
    let mut latest = None;
    for _ in 0..300 {
        latest = projected(person.clone()).await;
        if latest.as_ref().is_some_and(|(version, _)| *version == 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(latest, Some((3, "absconded".to_owned())));
    mesh.stop_all().await.expect("stops");
}

/// Transfers supervisee `id` from the home township to 620702002 (officer-9).
async fn transfer_to_neighbour(mesh: &Mesh, id: &str) {
    mesh.registry()
        .transfer_supervisee(authorized(
            registry_pb::TransferSuperviseeRequest {
                supervisee_id: id.to_owned(),
                to_township_code: "620702002".into(),
                to_county_code: "620702".into(),
                to_officer_id: "officer-9".into(),
                reason: "moved house".into(),
            },
            &mesh.token(&home_officer()),
        ))
        .await
        .expect("transferred");
}

#[tokio::test]
async fn offline_sync_tells_the_app_to_keep_what_may_succeed_later() {
    use pb::SyncItemOutcome::{Accepted, Rejected, RetryLater};
    let mut mesh = start_registry_and_checkin().await;
    let offline = |id: &str| pb::NewCheckin {
        captured_offline: true,
        ..home_visit(id, chrono::Duration::zero())
    };

    // Registered pending report-in; the officer's visit is synced before the activation
    // reaches the check-in service.
    let pending = register(&mesh, 40, false).await;
    wait_projected(&mesh, &pending, 1).await;
    let visit = offline(&pending);
    // A person nobody has told the check-in service about yet.
    let unknown = offline(&Uuid::new_v4().to_string());
    // A supervision that has ended for good: that can never change.
    let ended = register_active(&mesh, 41).await;
    change_status(&mesh, &ended, registry_pb::SuperviseeStatus::Terminated).await;
    wait_projected(&mesh, &ended, 2).await;
    let after_the_end = offline(&ended);

    let batch = vec![visit.clone(), unknown, after_the_end];
    let results = sync(&mesh, &home_officer(), batch).await.expect("batch answered");
    let outcomes: Vec<_> = results
        .iter()
        .map(|result| (result.outcome(), result.reject_field.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (RetryLater, "supervisee_id"),
            (RetryLater, "supervisee_id"),
            (Rejected, "supervisee_id"),
        ]
    );
    assert!(
        results[0].reject_reason.contains("pending_report_in"),
        "{:?}",
        results[0]
    );
    assert!(
        results[1].reject_reason.contains("retry shortly"),
        "{:?}",
        results[1]
    );
    assert!(results.iter().all(|result| result.checkin.is_none()));
    assert_eq!(stored_checkins(&mesh).await, 0);

    // Once the registry's activation arrives, the same item sent again is stored.
    change_status(&mesh, &pending, registry_pb::SuperviseeStatus::Active).await;
    wait_projected(&mesh, &pending, 2).await;
    let again = sync(&mesh, &home_officer(), vec![visit])
        .await
        .expect("batch answered");
    assert_eq!(again[0].outcome(), Accepted, "{:?}", again[0]);
    assert_eq!(stored_checkins(&mesh).await, 1);
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn an_offline_contact_captured_before_a_transfer_counts_for_its_township() {
    let mut mesh = start_registry_and_checkin().await;
    let id = register_active(&mesh, 42).await;
    // The home officer visits offline; the person is transferred before the phone syncs.
    let visit = pb::NewCheckin {
        captured_offline: true,
        ..home_visit(&id, chrono::Duration::zero())
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    transfer_to_neighbour(&mesh, &id).await;
    wait_projected(&mesh, &id, 2).await;

    let results = sync(&mesh, &home_officer(), vec![visit])
        .await
        .expect("batch answered");
    assert_eq!(
        results[0].outcome(),
        pb::SyncItemOutcome::Accepted,
        "{:?}",
        results[0]
    );
    let stored = results[0].checkin.clone().expect("checkin");
    assert_eq!(
        stored.jurisdiction.expect("jurisdiction").township_code,
        "620702001",
        "recorded for the township it was captured in"
    );

    // A visit captured after the transfer is no longer the old township's to record.
    let late = pb::NewCheckin {
        captured_offline: true,
        ..home_visit(&id, chrono::Duration::zero())
    };
    let results = sync(&mesh, &home_officer(), vec![late])
        .await
        .expect("batch answered");
    assert_eq!(
        results[0].outcome(),
        pb::SyncItemOutcome::RetryLater,
        "{:?}",
        results[0]
    );
    assert_eq!(stored_checkins(&mesh).await, 1);
    mesh.stop_all().await.expect("graceful stop");
}

#[tokio::test]
async fn an_offline_contact_captured_before_a_suspension_counts() {
    let mut mesh = start_registry_and_checkin().await;
    let id = register_active(&mesh, 43).await;
    let visit = pb::NewCheckin {
        captured_offline: true,
        ..home_visit(&id, chrono::Duration::zero())
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    change_status(&mesh, &id, registry_pb::SuperviseeStatus::Suspended).await;
    wait_projected(&mesh, &id, 2).await;
    let results = sync(&mesh, &home_officer(), vec![visit])
        .await
        .expect("batch answered");
    assert_eq!(
        results[0].outcome(),
        pb::SyncItemOutcome::Accepted,
        "{:?}",
        results[0]
    );

    // One captured during the suspension waits: the suspension may be lifted.
    let during = pb::NewCheckin {
        captured_offline: true,
        ..home_visit(&id, chrono::Duration::zero())
    };
    let results = sync(&mesh, &home_officer(), vec![during])
        .await
        .expect("batch answered");
    assert_eq!(
        results[0].outcome(),
        pb::SyncItemOutcome::RetryLater,
        "{:?}",
        results[0]
    );
    assert_eq!(stored_checkins(&mesh).await, 1);
    mesh.stop_all().await.expect("graceful stop");
}
