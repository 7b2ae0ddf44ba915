//! Check-in ingest under load, end to end: many concurrent RecordCheckin calls are committed
//! in groups, yet each caller gets its own answer, every accepted check-in is stored once with
//! exactly one `checkin.recorded` event, and retries get the original answer; a large mixed
//! offline batch is stored a chunk per transaction with the per-item results of one item at
//! a time, and one supervisee's events keep the batch's order.

use std::{collections::HashMap, time::Duration};

use chrono::Utc;
use mesh_e2e::{Mesh, authorized, count, eventually, home_officer, officer, reported_in};
use mesh_kit::{auth::Caller, error::violated_fields, proto_time::to_timestamp};
use mesh_proto::checkin as pb;
use prost::Message;
use tonic::Code;
use uuid::Uuid;

/// People registered (and reported in) in the home township, 620702001.
const PEOPLE: u16 = 20;

/// Registers [`PEOPLE`] active supervisees and waits until the check-in service knows them
/// all; returns their ids.
async fn people(mesh: &Mesh) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..PEOPLE {
        ids.push(
            mesh_e2e::register(mesh, reported_in(300 + n, Utc::now() - chrono::Duration::days(1))).await,
        );
    }
    eventually(
        "every supervisee projected",
        Duration::from_secs(60),
        async || {
            let known = count(
                mesh,
                "checkin",
                "SELECT count(*) FROM supervisees WHERE status = 'active'",
            )
            .await;
            (known == i64::from(PEOPLE)).then_some(())
        },
    )
    .await;
    ids
}

/// An app check-in of `supervisee_id` made `minutes` ago, near the district seat.
fn app_checkin(supervisee_id: &str, minutes: i64) -> pb::NewCheckin {
    mesh::harness::new_checkin(supervisee_id, Utc::now() - chrono::Duration::minutes(minutes))
}

/// The check-in ids of the `checkin.recorded` events in the outbox, in outbox (publication)
/// order.
async fn published_ids(mesh: &Mesh) -> Vec<String> {
    let payloads: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT payload FROM kit_outbox WHERE event_type = 'checkin.recorded' ORDER BY id",
    )
    .fetch_all(&mesh.pool("checkin").expect("pool"))
    .await
    .expect("outbox readable");
    payloads
        .iter()
        .map(|payload| {
            pb::CheckinRecorded::decode(payload.as_slice())
                .expect("event decodes")
                .checkin_id
        })
        .collect()
}

/// How many transactions stored the check-ins: the rows of one share its id (`xmin`).
async fn transactions(mesh: &Mesh) -> i64 {
    count(mesh, "checkin", "SELECT count(DISTINCT xmin::text) FROM checkins").await
}

/// Sends `checkins` as one offline batch with `token`; the per-item results.
async fn sync(mesh: &Mesh, token: &str, checkins: Vec<pb::NewCheckin>) -> Vec<pb::SyncItemResult> {
    mesh.checkin()
        .sync_offline_batch(authorized(pb::SyncOfflineBatchRequest { checkins }, token))
        .await
        .expect("batch answered")
        .into_inner()
        .results
}

/// What a call is expected to come to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Stored once: the first of its copies to arrive is accepted, the others are duplicates.
    Stored,
    /// Refused as invalid, naming this field.
    Invalid(&'static str),
    Denied,
    /// One of two contents sent under one id: exactly one is stored, the other conflicts.
    Contested,
}

#[tokio::test]
async fn concurrent_checkins_each_get_their_own_answer_and_are_stored_once() {
    let mut mesh = Mesh::start(&["registry", "checkin"]).await.expect("mesh");
    let people = people(&mesh).await;
    let home = home_officer();
    let neighbour = officer("officer-2", "620702002");

    // 200 calls over 20 people: 90 check-ins sent once, 20 sent three times (retries racing
    // their first attempt), 15 invalid, 15 from an officer of another township, and 10 ids
    // sent with two different contents at once.
    let mut calls: Vec<(Caller, pb::NewCheckin, Expect)> = Vec::new();
    for (n, person) in people.iter().cycle().take(90).enumerate() {
        let minutes = i64::try_from(n).unwrap_or_default();
        calls.push((home.clone(), app_checkin(person, minutes), Expect::Stored));
    }
    for person in people.iter() {
        let checkin = app_checkin(person, 150);
        for _ in 0..3 {
            calls.push((home.clone(), checkin.clone(), Expect::Stored));
        }
    }
    for person in people.iter().take(15) {
        let mut invalid = app_checkin(person, 5);
        invalid.position = invalid.position.map(|point| pb_point(123.0, point.longitude));
        calls.push((
            home.clone(),
            invalid,
            Expect::Invalid("checkin.position.latitude"),
        ));
        calls.push((neighbour.clone(), app_checkin(person, 6), Expect::Denied));
    }
    for person in people.iter().take(10) {
        let first = app_checkin(person, 7);
        let second = pb::NewCheckin {
            note: "other content under the same id".into(),
            ..first.clone()
        };
        calls.push((home.clone(), first, Expect::Contested));
        calls.push((home.clone(), second, Expect::Contested));
    }
    assert_eq!(calls.len(), 200);

    let mut running = Vec::new();
    for (caller, checkin, expect) in calls {
        let mut client = mesh.checkin();
        let token = mesh.token(&caller);
        running.push(tokio::spawn(async move {
            let request = pb::RecordCheckinRequest {
                checkin: Some(checkin.clone()),
            };
            let answer = client.record_checkin(authorized(request, &token)).await;
            (checkin, expect, answer.map(tonic::Response::into_inner))
        }));
    }
    // Per check-in id: the answers of the calls that got one stored or as a duplicate.
    let mut answers: HashMap<String, Vec<pb::RecordCheckinResponse>> = HashMap::new();
    let mut conflicts: HashMap<String, usize> = HashMap::new();
    // Per stored id: the content that was stored.
    let mut originals: HashMap<String, pb::NewCheckin> = HashMap::new();
    for call in running {
        let (checkin, expect, answer) = call.await.expect("joined");
        let id = checkin.checkin_id.clone();
        match (expect, answer) {
            (Expect::Stored | Expect::Contested, Ok(response)) => {
                let stored = response.checkin.clone().expect("checkin");
                assert_eq!(stored.checkin_id, id);
                assert_eq!(stored.note, checkin.note, "the answer is this call's content");
                answers.entry(id.clone()).or_default().push(response);
                originals.insert(id, checkin);
            }
            (Expect::Contested, Err(status)) => {
                assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
                *conflicts.entry(id).or_default() += 1;
            }
            (Expect::Invalid(field), Err(status)) => {
                assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
                assert_eq!(violated_fields(&status), [field]);
            }
            (Expect::Denied, Err(status)) => assert_eq!(status.code(), Code::PermissionDenied, "{status:?}"),
            (expect, answer) => panic!("{id}: expected {expect:?}, got {answer:?}"),
        }
    }
    assert_eq!(answers.len(), 120, "every stored id answered");
    assert_eq!(conflicts.len(), 10, "one conflict per contested id");
    assert!(conflicts.values().all(|&n| n == 1));
    for (id, responses) in &answers {
        let fresh = responses.iter().filter(|response| !response.duplicate).count();
        assert_eq!(fresh, 1, "{id}: one first write, the rest are retries");
        assert!(
            responses
                .windows(2)
                .all(|pair| pair[0].checkin == pair[1].checkin),
            "{id}: retries get the original answer"
        );
    }

    // Stored once each, with exactly one event and one audit record each.
    let mut published = published_ids(&mesh).await;
    published.sort();
    let mut accepted: Vec<String> = answers.keys().cloned().collect();
    accepted.sort();
    assert_eq!(published, accepted, "one event per accepted check-in");
    assert_eq!(
        count(&mesh, "checkin", "SELECT count(*) FROM checkins").await,
        120
    );
    let audited = "SELECT count(*) FROM kit_audit_log WHERE action = 'checkin.recorded'";
    assert_eq!(count(&mesh, "checkin", audited).await, 120);
    let transactions = transactions(&mesh).await;
    assert!(
        transactions < 120,
        "check-ins were committed in groups ({transactions} transactions)"
    );

    // Sent again later, every stored check-in gets its original answer, and nothing more is
    // written.
    let token = mesh.token(&home);
    for (id, responses) in &answers {
        let request = pb::RecordCheckinRequest {
            checkin: originals.get(id).cloned(),
        };
        let again = mesh
            .checkin()
            .record_checkin(authorized(request, &token))
            .await
            .expect("retry answered")
            .into_inner();
        assert!(again.duplicate);
        assert_eq!(again.checkin, responses[0].checkin, "{id}");
    }
    assert_eq!(published_ids(&mesh).await.len(), 120, "retries publish nothing");
    mesh.stop_all().await.expect("graceful stop");
}

/// A point at `latitude`, `longitude` with the accuracy of [`app_checkin`]'s.
fn pb_point(latitude: f64, longitude: f64) -> mesh_proto::common::GeoPoint {
    mesh_proto::common::GeoPoint {
        latitude,
        longitude,
        accuracy_m: 12.0,
    }
}

#[tokio::test]
async fn a_large_mixed_offline_batch_gets_per_item_results_and_keeps_each_persons_order() {
    let mut mesh = Mesh::start(&["registry", "checkin"]).await.expect("mesh");
    let people = people(&mesh).await;
    let offline = |person: &String, minutes| pb::NewCheckin {
        captured_offline: true,
        ..app_checkin(person, minutes)
    };
    use pb::SyncItemOutcome::{Accepted, Duplicate, Rejected, RetryLater};
    // 300 items (three chunks) for two people, oldest first, with the mixed items of the
    // batch test of tests/checkin.rs spread through it.
    let mut batch = Vec::new();
    let mut expected = Vec::new();
    for n in 0..300_i64 {
        let person = &people[usize::from(n % 2 == 1)];
        batch.push(offline(person, 600 - n));
        expected.push((Accepted, ""));
    }
    let first = batch[0].clone();
    let mut too_old = offline(&people[0], 0);
    too_old.device_time = Some(to_timestamp(Utc::now() - chrono::Duration::hours(73)));
    let mut bad_latitude = offline(&people[1], 3);
    bad_latitude.position = Some(pb_point(123.0, 100.45));
    let reused_id = pb::NewCheckin {
        note: "different content".into(),
        ..batch[10].clone()
    };
    // An invalid item under the id of an item accepted earlier in the batch reuses that id.
    let invalid_reuse = pb::NewCheckin {
        position: Some(pb_point(123.0, 100.45)),
        ..batch[20].clone()
    };
    let unknown_person = offline(&Uuid::new_v4().to_string(), 4);
    let mixed = [
        (50, too_old, (Rejected, "device_time")),
        (100, first, (Duplicate, "")),
        (150, bad_latitude, (Rejected, "position.latitude")),
        (200, reused_id, (Rejected, "checkin_id")),
        (250, unknown_person, (RetryLater, "supervisee_id")),
        (280, invalid_reuse, (Rejected, "checkin_id")),
    ];
    for (index, item, outcome) in mixed {
        batch.insert(index, item);
        expected.insert(index, outcome);
    }
    let token = mesh.token(&home_officer());
    let results = sync(&mesh, &token, batch.clone()).await;
    assert_eq!(results.len(), batch.len());
    for (index, (result, (outcome, field))) in results.iter().zip(&expected).enumerate() {
        assert_eq!(result.index as usize, index);
        assert_eq!(result.checkin_id, batch[index].checkin_id);
        assert_eq!(
            (result.outcome(), result.reject_field.as_str()),
            (*outcome, *field),
            "item {index}: {result:?}"
        );
        let stored = matches!(outcome, Accepted | Duplicate);
        assert_eq!(result.checkin.is_some(), stored, "item {index}");
    }
    assert_eq!(
        results[100].checkin, results[0].checkin,
        "the duplicate answers as the original"
    );

    // Each accepted item once, and each person's events in the batch's order.
    let accepted: Vec<String> = results
        .iter()
        .filter(|result| result.outcome() == Accepted)
        .map(|result| result.checkin_id.clone())
        .collect();
    assert_eq!(accepted.len(), 300);
    assert_eq!(published_ids(&mesh).await, accepted, "events in batch order");
    assert_eq!(
        count(&mesh, "checkin", "SELECT count(*) FROM checkins").await,
        300
    );
    let transactions = transactions(&mesh).await;
    assert_eq!(transactions, 3, "one transaction per chunk");

    // Sent again, the batch changes nothing and answers every stored item as a duplicate.
    let again = sync(&mesh, &token, batch).await;
    for (index, (result, (outcome, _))) in again.iter().zip(&expected).enumerate() {
        let now_expected = if *outcome == Accepted { Duplicate } else { *outcome };
        assert_eq!(result.outcome(), now_expected, "item {index}: {result:?}");
        if *outcome == Accepted {
            assert_eq!(result.checkin, results[index].checkin, "item {index}");
        }
    }
    assert_eq!(published_ids(&mesh).await.len(), 300);
    mesh.stop_all().await.expect("graceful stop");
}
