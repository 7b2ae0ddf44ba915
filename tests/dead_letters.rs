//! Dead letters are never silent, and a failing consumer is never silently stuck: risk-alert
//! against real Kafka and PostgreSQL. A check-in or registration the database refuses (a NUL
//! byte, a constraint violation, a timestamp out of its range) is set aside at once and the
//! next one on its partition applies; the
//! dead letter raises an alert for the county bureau and the operators, `mesh dlq` lists and
//! replays it after the fix, and the replay resolves the alert. A check-in that fails for a
//! passing reason (its table is gone for a while) is retried, never skipped, and raises a
//! stalled-consumer alert that its recovery resolves.

use std::{process::Command, time::Duration};

use chrono::{DateTime, Utc};
use mesh::harness::{binary_path, publish_record};
use mesh_e2e::{HOME_COUNTY, Mesh, authorized, county_bureau, eventually, home_jurisdiction, jurisdiction};
use mesh_kit::{
    auth::{Caller, Role},
    proto_time::to_timestamp,
};
use mesh_proto::{alert as pb, checkin as checkin_pb, registry as registry_pb};
use prost::Message;

/// A stall is reported after a second of failing.
const SETTINGS: &[(&str, &str)] = &[("MESH_CONSUMER_STALL_AFTER_SECS", "1")];

const WAIT: Duration = Duration::from_secs(30);

async fn risk_alert() -> Mesh {
    Mesh::builder()
        .env("risk-alert", SETTINGS)
        .start(&["risk-alert"])
        .await
        .expect("mesh")
}

/// Publishes a registration of a new person (reported in an hour ago, active in the home
/// township) and waits until risk-alert projected it; returns the person's id.
async fn registered_person(mesh: &Mesh) -> String {
    let person = uuid::Uuid::now_v7().to_string();
    let snapshot = registry_pb::SuperviseeSnapshot {
        reported_at: Some(to_timestamp(Utc::now() - chrono::Duration::hours(1))),
        ..mesh_e2e::supervisee_snapshot(&person, 1)
    };
    let payload = registry_pb::SuperviseeRegistered {
        supervisee: Some(snapshot),
        ..Default::default()
    }
    .encode_to_vec();
    mesh.publish(&mesh.topics.registry, &person, "supervisee.registered", &payload)
        .await
        .expect("published");
    let pool = mesh.pool("risk-alert").expect("pool");
    eventually("the registration projected", WAIT, async || {
        let found: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM supervisees WHERE supervisee_id = $1::uuid")
                .bind(&person)
                .fetch_optional(&pool)
                .await
                .expect("query");
        found.map(|_| ())
    })
    .await;
    person
}

/// Publishes a verified check-in of `person` with `checkin_id`, made `seconds_ago`.
async fn publish_checkin(mesh: &Mesh, person: &str, checkin_id: &str, seconds_ago: i64) {
    let at: DateTime<Utc> = Utc::now() - chrono::Duration::seconds(seconds_ago);
    let payload = checkin_pb::CheckinRecorded {
        supervisee_id: person.to_owned(),
        checkin_id: checkin_id.to_owned(),
        method: checkin_pb::CheckinMethod::AppSelfCheckin as i32,
        device_time: Some(to_timestamp(at)),
        received_at: Some(to_timestamp(at)),
        jurisdiction: Some(home_jurisdiction()),
        identity_verified: true,
        ..Default::default()
    }
    .encode_to_vec();
    mesh.publish(&mesh.topics.checkin, person, "checkin.recorded", &payload)
        .await
        .expect("published");
}

async fn last_checkin(mesh: &Mesh, table: &str, person: &str) -> Option<String> {
    sqlx::query_scalar(&format!(
        "SELECT last_checkin_id FROM {table} WHERE supervisee_id = $1::uuid"
    ))
    .bind(person)
    .fetch_optional(&mesh.pool("risk-alert").expect("pool"))
    .await
    .expect("query")
    .flatten()
}

async fn alerts(
    mesh: &Mesh,
    caller: &Caller,
    scope: mesh_proto::common::Jurisdiction,
    kind: pb::AlertKind,
) -> Vec<pb::Alert> {
    mesh.risk_alert()
        .list_alerts(authorized(
            pb::ListAlertsRequest {
                jurisdiction: Some(scope),
                kinds: vec![kind as i32],
                ..Default::default()
            },
            &mesh.token(caller),
        ))
        .await
        .expect("alerts listed")
        .into_inner()
        .alerts
}

fn fact<'a>(alert: &'a pb::Alert, key: &str) -> Option<&'a str> {
    alert
        .evidence
        .as_ref()?
        .facts
        .iter()
        .find(|fact| fact.key == key)
        .map(|fact| fact.value.as_str())
}

fn subject(alert: &pb::Alert) -> String {
    match alert.subject.as_ref().and_then(|s| s.id.clone()) {
        Some(pb::alert_subject::Id::SuperviseeId(id)) => id,
        _ => String::new(),
    }
}

fn admin() -> Caller {
    Caller::new("operator", Role::Admin, None, None)
}

/// Runs `mesh dlq <args>` on risk-alert's database; its standard output.
fn mesh_dlq(mesh: &Mesh, args: &[&str]) -> String {
    let database = mesh.infra.database_url(&mesh_database(mesh));
    let output = Command::new(binary_path("mesh").expect("mesh binary"))
        .arg("dlq")
        .args(args)
        .args(["--database-url", &database])
        .env_remove("MESH_DATABASE_URL")
        .output()
        .expect("mesh runs");
    assert!(
        output.status.success(),
        "mesh dlq {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn mesh_database(mesh: &Mesh) -> String {
    mesh.pool("risk-alert")
        .expect("pool")
        .connect_options()
        .get_database()
        .expect("database name")
        .to_owned()
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: i64,
    reason: String,
    replayed_at: Option<DateTime<Utc>>,
    last_replay_error: Option<String>,
    replay_requested_at: Option<DateTime<Utc>>,
}

async fn dead_letters(mesh: &Mesh) -> Vec<Row> {
    sqlx::query_as(
        "SELECT id, reason, replayed_at, last_replay_error, replay_requested_at
         FROM kit_dead_letters ORDER BY id",
    )
    .fetch_all(&mesh.pool("risk-alert").expect("pool"))
    .await
    .expect("dead letters")
}

#[tokio::test]
async fn a_refused_checkin_is_set_aside_at_once_alerts_the_county_and_replays_after_the_fix() {
    let mesh = risk_alert().await;
    let pool = mesh.pool("risk-alert").expect("pool");
    let person = registered_person(&mesh).await;
    // Whatever the operators' reason, the database now refuses a check-in with this id.
    sqlx::query(
        "ALTER TABLE supervisees ADD CONSTRAINT test_refuses_blocked
         CHECK (last_checkin_id IS DISTINCT FROM 'blocked')",
    )
    .execute(&pool)
    .await
    .expect("constraint");

    // One key, one partition: a NUL byte (SQLSTATE 22021), then a good check-in, then one
    // the constraint refuses (23514), then another good (older) one.
    publish_checkin(&mesh, &person, "nul\0byte", 40).await;
    publish_checkin(&mesh, &person, "good", 30).await;
    publish_checkin(&mesh, &person, "blocked", 20).await;
    publish_checkin(&mesh, &person, "older", 50).await;
    // And a record that names nobody: no headers at all.
    publish_record(
        mesh.producer().expect("producer"),
        &mesh.topics.checkin,
        &person,
        &[],
        b"not an event",
    )
    .await
    .expect("published");

    // Before, the NUL byte held the partition at 30 s backoff forever.
    eventually(
        "the check-in behind the NUL byte",
        Duration::from_secs(15),
        async || (last_checkin(&mesh, "supervisees", &person).await.as_deref() == Some("good")).then_some(()),
    )
    .await;
    let rows = eventually("the three dead letters", Duration::from_secs(15), async || {
        let rows = dead_letters(&mesh).await;
        (rows.len() == 3).then_some(rows)
    })
    .await;
    let id_of = |needle: &str| {
        rows.iter()
            .find(|row| row.reason.contains(needle))
            .unwrap_or_else(|| panic!("no dead letter for {needle}: {rows:?}"))
            .id
    };
    let nul = id_of("invalid byte sequence");
    let blocked = id_of("test_refuses_blocked");
    let headerless = id_of("missing event_id header");

    // The county bureau of the person's county and the operators each see both alerts.
    let bureau = county_bureau("bureau-1", HOME_COUNTY);
    let county = jurisdiction("", HOME_COUNTY);
    let raised = eventually("the dead-letter alerts", WAIT, async || {
        let listed = alerts(&mesh, &bureau, county.clone(), pb::AlertKind::DeadLetter).await;
        (listed.len() == 2).then_some(listed)
    })
    .await;
    for alert in &raised {
        assert_eq!(subject(alert), person);
        assert_eq!(fact(alert, "service"), Some("risk-alert"));
        assert_eq!(fact(alert, "event_type"), Some("checkin.recorded"));
        assert_eq!(alert.status, pb::AlertStatus::Open as i32);
    }
    let blocked_alert = raised
        .iter()
        .find(|alert| fact(alert, "dead_letter_id") == Some(blocked.to_string().as_str()))
        .expect("the blocked check-in's alert")
        .clone();
    assert_eq!(
        alerts(&mesh, &admin(), county.clone(), pb::AlertKind::DeadLetter)
            .await
            .len(),
        2,
        "the operators see them too"
    );
    // The record naming nobody is the operators' alone.
    let nobody = jurisdiction("", "");
    let operators = eventually("the operators' dead-letter alert", WAIT, async || {
        let listed = alerts(&mesh, &admin(), nobody.clone(), pb::AlertKind::DeadLetter).await;
        (listed.len() == 1).then_some(listed)
    })
    .await;
    assert_eq!(
        fact(&operators[0], "dead_letter_id"),
        Some(headerless.to_string().as_str())
    );
    let denied = mesh
        .risk_alert()
        .list_alerts(authorized(
            pb::ListAlertsRequest {
                jurisdiction: Some(nobody),
                ..Default::default()
            },
            &mesh.token(&bureau),
        ))
        .await
        .expect_err("not the bureau's");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    // Listed; a replay before the fix fails, is recorded and keeps the row.
    let listing = mesh_dlq(&mesh, &["list"]);
    assert!(listing.contains("checkin.recorded"), "{listing}");
    assert!(listing.contains(&format!("\n{nul}\trisk-alert\t")), "{listing}");
    assert!(
        listing.contains(&format!("\n{blocked}\trisk-alert\t")),
        "{listing}"
    );
    mesh_dlq(&mesh, &["replay", &blocked.to_string()]);
    let failed = eventually("the failed replay", WAIT, async || {
        let rows = dead_letters(&mesh).await;
        rows.into_iter().find(|row| {
            row.id == blocked && row.last_replay_error.is_some() && row.replay_requested_at.is_none()
        })
    })
    .await;
    assert!(failed.replayed_at.is_none());

    // The fix, then the replay applies it and resolves its alert; the NUL byte still fails.
    sqlx::query("ALTER TABLE supervisees DROP CONSTRAINT test_refuses_blocked")
        .execute(&pool)
        .await
        .expect("fixed");
    mesh_dlq(&mesh, &["replay", &blocked.to_string()]);
    mesh_dlq(&mesh, &["replay", &nul.to_string()]);
    eventually("the replay", WAIT, async || {
        let rows = dead_letters(&mesh).await;
        let done = rows
            .iter()
            .any(|row| row.id == blocked && row.replayed_at.is_some())
            && rows
                .iter()
                .any(|row| row.id == nul && row.replayed_at.is_none() && row.replay_requested_at.is_none());
        done.then_some(())
    })
    .await;
    assert_eq!(
        last_checkin(&mesh, "supervisees", &person).await.as_deref(),
        Some("blocked")
    );
    eventually("the replayed dead letter's alert resolved", WAIT, async || {
        let listed = alerts(&mesh, &bureau, county.clone(), pb::AlertKind::DeadLetter).await;
        let status = |id: &str| {
            listed
                .iter()
                .find(|alert| alert.alert_id == id)
                .map(|alert| alert.status)
        };
        let resolved = status(&blocked_alert.alert_id) == Some(pb::AlertStatus::Resolved as i32);
        let others_open = listed
            .iter()
            .filter(|alert| alert.alert_id != blocked_alert.alert_id)
            .all(|alert| alert.status == pb::AlertStatus::Open as i32);
        (resolved && others_open).then_some(())
    })
    .await;
    let listing = mesh_dlq(&mesh, &["list", "--all"]);
    assert!(listing.contains("replayed"), "{listing}");
    assert!(listing.contains("replay failed"), "{listing}");
}

#[tokio::test]
async fn a_consumer_failing_for_a_passing_reason_stalls_loudly_keeps_the_record_and_recovers() {
    let mesh = risk_alert().await;
    let pool = mesh.pool("risk-alert").expect("pool");
    let person = registered_person(&mesh).await;

    // The table the check-in needs is gone for a while (SQLSTATE 42P01: not the data's fault).
    sqlx::query("ALTER TABLE supervisees RENAME TO supervisees_away")
        .execute(&pool)
        .await
        .expect("renamed");
    publish_checkin(&mesh, &person, "during", 5).await;

    let bureau = county_bureau("bureau-1", HOME_COUNTY);
    let county = jurisdiction("", HOME_COUNTY);
    let stalled = eventually("the stalled-consumer alert", WAIT, async || {
        let listed = alerts(&mesh, &bureau, county.clone(), pb::AlertKind::ConsumerStalled).await;
        listed.into_iter().next()
    })
    .await;
    assert_eq!(subject(&stalled), person);
    assert_eq!(fact(&stalled, "event_type"), Some("checkin.recorded"));
    assert!(
        fact(&stalled, "reason").is_some_and(|reason| reason.contains("supervisees")),
        "{stalled:?}"
    );
    assert_ne!(
        last_checkin(&mesh, "supervisees_away", &person).await.as_deref(),
        Some("during")
    );
    assert!(
        dead_letters(&mesh).await.is_empty(),
        "a passing failure is never set aside"
    );

    sqlx::query("ALTER TABLE supervisees_away RENAME TO supervisees")
        .execute(&pool)
        .await
        .expect("renamed back");
    eventually("the held check-in applied", WAIT, async || {
        (last_checkin(&mesh, "supervisees", &person).await.as_deref() == Some("during")).then_some(())
    })
    .await;
    eventually("the stalled-consumer alert resolved", WAIT, async || {
        let listed = alerts(&mesh, &bureau, county.clone(), pb::AlertKind::ConsumerStalled).await;
        listed
            .iter()
            .all(|alert| alert.status == pb::AlertStatus::Resolved as i32)
            .then_some(())
    })
    .await;
    assert!(dead_letters(&mesh).await.is_empty());
}

#[tokio::test]
async fn a_stall_reported_before_a_restart_is_resolved_by_the_process_that_gets_past_it() {
    let mut mesh = risk_alert().await;
    let pool = mesh.pool("risk-alert").expect("pool");
    let person = registered_person(&mesh).await;
    sqlx::query("ALTER TABLE supervisees RENAME TO supervisees_away")
        .execute(&pool)
        .await
        .expect("renamed");
    publish_checkin(&mesh, &person, "during", 5).await;
    let bureau = county_bureau("bureau-1", HOME_COUNTY);
    let county = jurisdiction("", HOME_COUNTY);
    eventually("the stalled-consumer alert", WAIT, async || {
        let listed = alerts(&mesh, &bureau, county.clone(), pb::AlertKind::ConsumerStalled).await;
        listed.into_iter().next()
    })
    .await;

    // The process that saw the stall is gone (stopped: a killed one's group membership
    // would hold the partition for the broker's session timeout); its successor applies the
    // record at once.
    mesh.stop("risk-alert").await.expect("stopped");
    sqlx::query("ALTER TABLE supervisees_away RENAME TO supervisees")
        .execute(&pool)
        .await
        .expect("renamed back");
    mesh.launch("risk-alert").await.expect("restarted");
    eventually("the held check-in applied", WAIT, async || {
        (last_checkin(&mesh, "supervisees", &person).await.as_deref() == Some("during")).then_some(())
    })
    .await;
    eventually("the stalled-consumer alert resolved", WAIT, async || {
        let listed = alerts(&mesh, &bureau, county.clone(), pb::AlertKind::ConsumerStalled).await;
        (!listed.is_empty()
            && listed
                .iter()
                .all(|alert| alert.status == pb::AlertStatus::Resolved as i32))
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_registration_out_of_the_databases_range_is_set_aside_and_the_next_one_applies() {
    let mesh = risk_alert().await;
    let person = uuid::Uuid::now_v7().to_string();
    let registered = |reported_at: prost_types::Timestamp, version: i64| {
        registry_pb::SuperviseeRegistered {
            supervisee: Some(registry_pb::SuperviseeSnapshot {
                reported_at: Some(reported_at),
                ..mesh_e2e::supervisee_snapshot(&person, version)
            }),
            ..Default::default()
        }
        .encode_to_vec()
    };
    // About 5000 BC: a valid protobuf timestamp, before PostgreSQL's first (SQLSTATE 22008).
    let ancient = prost_types::Timestamp {
        seconds: -220_000_000_000,
        nanos: 0,
    };
    for payload in [registered(ancient, 1), registered(to_timestamp(Utc::now()), 2)] {
        mesh.publish(&mesh.topics.registry, &person, "supervisee.registered", &payload)
            .await
            .expect("published");
    }
    let pool = mesh.pool("risk-alert").expect("pool");
    eventually(
        "the registration behind it",
        Duration::from_secs(15),
        async || {
            let version: Option<i64> =
                sqlx::query_scalar("SELECT version FROM supervisees WHERE supervisee_id = $1::uuid")
                    .bind(&person)
                    .fetch_optional(&pool)
                    .await
                    .expect("query");
            (version == Some(2)).then_some(())
        },
    )
    .await;
    let rows = dead_letters(&mesh).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].reason.contains("out of range"), "{rows:?}");
}
