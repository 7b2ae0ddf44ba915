//! Who hears of an alert, end to end (issue 9, paths 4, 7, 11 and 13): the webhook body is
//! the proto3 JSON of `WebhookNotification`, a township without an endpoint falls back to
//! its county bureau, undeliverable notifications escalate and end, transfers are told, a
//! hanging endpoint delays nobody else, and the live stream neither loses changes when its
//! LISTEN connection drops nor outlives the caller's token.

use std::time::Duration;

use mesh::{
    harness::{MeshBuilder, WEBHOOK_SECRET},
    receiver::{Received, Receiver},
};
use mesh_e2e::{
    HOME_COUNTY, HOME_TOWNSHIP, Mesh, alert_about, alert_changes, authorized, county_bureau, eventually,
    fast_risk_alert, home_jurisdiction, home_officer, jurisdiction, officer, register, reported_in,
    township_office,
};
use mesh_kit::auth::{Caller, keygen::SERVICES};
use mesh_proto::{alert as pb, json::alert::alert_subject::Id as JsonSubjectId, registry as registry_pb};
use prost::Message;
use tonic::Code;

/// A mesh whose risk-alert runs the shared fast policy with quick webhook retries, and then
/// `extra`.
fn fast(extra: &[(&'static str, &'static str)]) -> MeshBuilder {
    let mut env = vec![
        ("MESH_WEBHOOK_RETRY_BASE_MS", "200"),
        ("MESH_WEBHOOK_RETRY_MAX_SECS", "1"),
    ];
    env.extend_from_slice(extra);
    fast_risk_alert(&env)
}

const OTHER_TOWNSHIP: &str = "620702002";

fn ganzhou_bureau() -> Caller {
    county_bureau("bureau-ganzhou", HOME_COUNTY)
}

/// Registers `url` as the endpoint of `office` (a county bureau when its township is empty).
async fn register_endpoint(
    mesh: &Mesh,
    caller: &Caller,
    office: mesh_proto::common::Jurisdiction,
    url: String,
) {
    mesh.risk_alert()
        .register_endpoint(authorized(
            pb::RegisterEndpointRequest {
                jurisdiction: Some(office),
                url,
                secret: WEBHOOK_SECRET.into(),
                description: "test endpoint".into(),
                max_batch_size: 0,
            },
            &mesh.token(caller),
        ))
        .await
        .expect("endpoint registered");
}

/// A receiver of `office`'s notifications, listening and registered.
async fn receiver_for(mesh: &Mesh, caller: &Caller, office: mesh_proto::common::Jurisdiction) -> Receiver {
    let receiver = Receiver::start(WEBHOOK_SECRET).await.expect("receiver");
    register_endpoint(mesh, caller, office, receiver.url()).await;
    receiver
}

fn county() -> mesh_proto::common::Jurisdiction {
    jurisdiction("", HOME_COUNTY)
}

async fn register_active(mesh: &Mesh, n: u16) -> String {
    register(mesh, reported_in(n, chrono::Utc::now())).await
}

/// Waits for a notification of `event_type` about `subject_id`.
async fn notified(receiver: &Receiver, event_type: &str, subject_id: &str, timeout: Duration) -> Received {
    let received = receiver
        .wait_for(timeout, |received| {
            received
                .iter()
                .any(|n| n.event_type == event_type && n.subject_id() == subject_id)
        })
        .await;
    received
        .into_iter()
        .find(|n| n.event_type == event_type && n.subject_id() == subject_id)
        .unwrap_or_else(|| panic!("no {event_type} notification about {subject_id}"))
}

#[tokio::test]
async fn a_township_without_an_endpoint_falls_back_to_its_county_bureau_and_a_later_endpoint_hears_what_is_open()
 {
    let mesh = fast(&[])
        .start(&["registry", "checkin", "risk-alert"])
        .await
        .expect("mesh");
    let bureau = receiver_for(&mesh, &ganzhou_bureau(), county()).await;
    // Standing in for the township is not taking over its endpoint: the bureau may not
    // register the township's URL and secret.
    let refused = mesh
        .risk_alert()
        .register_endpoint(authorized(
            pb::RegisterEndpointRequest {
                jurisdiction: Some(home_jurisdiction()),
                url: bureau.url(),
                secret: WEBHOOK_SECRET.into(),
                description: "taken over".into(),
                max_batch_size: 0,
            },
            &mesh.token(&ganzhou_bureau()),
        ))
        .await
        .expect_err("the township's endpoint is the township's to register");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let missing = register_active(&mesh, 41).await;

    // A missed check-in is the township's alert, but the township has no endpoint.
    let fallback = notified(&bureau, "alert.raised", &missing, Duration::from_secs(20)).await;
    assert!(fallback.signature_valid);
    // The body parses with the type generated from alert.proto (proto3 JSON mapping).
    let notification = fallback.notification.clone().expect("a WebhookNotification");
    assert_eq!(notification.event_type, "alert.raised");
    assert_eq!(notification.notification_id, fallback.notification_id);
    assert_eq!(
        notification.reason,
        format!("township office {HOME_TOWNSHIP} has no registered endpoint")
    );
    let alert = notification.alert.expect("alert");
    assert_eq!(alert.kind(), mesh_proto::json::alert::AlertKind::MissedCheckin);
    assert_eq!(
        alert.subject.as_ref().and_then(|subject| subject.id.clone()),
        Some(JsonSubjectId::SuperviseeId(missing.clone()))
    );
    let evidence = alert.evidence.as_ref().expect("evidence");
    assert!(
        evidence
            .facts
            .iter()
            .any(|fact| fact.key == "required_interval" && fact.value == "4s"),
        "facts are a list of key/value: {evidence:?}"
    );
    assert!(evidence.last_contact_at.is_some());
    assert_eq!(
        alert.jurisdiction.as_ref().map(|j| j.township_code.as_str()),
        Some(HOME_TOWNSHIP)
    );

    // The township registers: it hears at once of what is still open.
    mesh.register_webhook().await.expect("township endpoint");
    let current = notified(
        mesh.receiver(),
        "alert.current",
        &missing,
        Duration::from_secs(10),
    )
    .await;
    let current_alert = current.alert().expect("alert");
    assert_eq!(current_alert.alert_id, alert.alert_id);
    assert!(current.signature_valid);
}

#[tokio::test]
async fn notifications_the_township_cannot_receive_escalate_to_the_county_bureau_which_alone_may_resolve_it()
{
    let mut mesh = fast(&[
        ("MESH_WEBHOOK_ESCALATE_AFTER_ATTEMPTS", "2"),
        ("MESH_WEBHOOK_MAX_ATTEMPTS", "3"),
    ])
    .receiver_down()
    .start(&["registry", "checkin", "risk-alert"])
    .await
    .expect("mesh");
    // The township's endpoint is registered but refuses connections.
    mesh.register_webhook().await.expect("township endpoint");
    let bureau = receiver_for(&mesh, &ganzhou_bureau(), county()).await;
    let token = mesh.token(&home_officer());
    let mut stream = alert_changes(&mesh, home_jurisdiction(), &token).await;
    let missing = register_active(&mesh, 42).await;

    let escalated = notified(&bureau, "alert.escalated", &missing, Duration::from_secs(30)).await;
    let notification = escalated.notification.clone().expect("parsed");
    assert_eq!(
        notification.reason,
        "notifications to the township office failed 2 times"
    );
    let alert = notification.alert.expect("alert");
    assert_eq!(
        alert.escalation_target(),
        mesh_proto::json::alert::EscalationTarget::CountyBureau
    );
    assert!(alert.escalated_at.is_some());
    assert!(
        !bureau
            .received()
            .iter()
            .any(|n| n.event_type == "alert.raised" && n.subject_id() == missing),
        "the township had an endpoint: no fallback on raise"
    );

    // The live stream saw it escalate.
    let seen = eventually(
        "the escalation on the stream",
        Duration::from_secs(10),
        async || {
            let message = tokio::time::timeout(Duration::from_secs(1), stream.message())
                .await
                .ok()?
                .ok()??;
            (message.change() == pb::AlertChange::Escalated).then_some(message)
        },
    )
    .await;
    assert_eq!(
        seen.alert.as_ref().map(|a| a.alert_id.clone()),
        Some(alert.alert_id.clone())
    );

    // alert.escalated is published with the previous target and the reason.
    let events = mesh
        .tap(&mesh.topics.alert)
        .expect("tap")
        .collect(1000, Duration::from_secs(3))
        .await
        .expect("events");
    let published = events
        .iter()
        .filter(|event| event.header("event_type") == Some("alert.escalated"))
        .filter_map(|event| pb::AlertEscalated::decode(event.payload.as_slice()).ok())
        .find(|event| event.alert.as_ref().map(|a| &a.alert_id) == Some(&alert.alert_id))
        .expect("alert.escalated published");
    assert_eq!(published.previous_target(), pb::EscalationTarget::TownshipOffice);
    assert!(published.reason.contains("failed 2 times"));

    // Retries end: the township's notification is given up after 3 attempts.
    let deliveries = eventually("a given-up delivery", Duration::from_secs(20), async || {
        let deliveries = mesh_e2e::deliveries(&mut mesh.risk_alert(), &alert.alert_id, &token).await?;
        deliveries
            .iter()
            .any(|d| d.outcome() == pb::DeliveryOutcome::GivenUp)
            .then_some(deliveries)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = mesh_e2e::deliveries(&mut mesh.risk_alert(), &alert.alert_id, &token)
        .await
        .expect("deliveries");
    let raised_attempts: Vec<_> = later.iter().filter(|d| d.event_type == "alert.raised").collect();
    assert_eq!(raised_attempts.len(), 3, "no attempt after giving up: {later:#?}");
    assert_eq!(raised_attempts[2].outcome(), pb::DeliveryOutcome::GivenUp);
    assert!(raised_attempts[2].next_attempt_at.is_none());
    assert!(
        raised_attempts
            .iter()
            .all(|d| d.error == "could not connect" && d.http_status == 0 && d.duration_ms == 0),
        "a closed port reads like any host out of reach, without timing: {raised_attempts:#?}"
    );
    assert!(deliveries.len() <= later.len());

    // Escalated over the township's head, it is the county bureau's to close.
    let resolve = |caller: &Caller| {
        authorized(
            pb::ResolveAlertRequest {
                alert_id: alert.alert_id.clone(),
                note: "家访核实，人员在辖区".into(),
            },
            &mesh.token(caller),
        )
    };
    let refused = mesh
        .risk_alert()
        .resolve_alert(resolve(&home_officer()))
        .await
        .expect_err("a township officer cannot resolve a county-escalated alert");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let resolved = mesh
        .risk_alert()
        .resolve_alert(resolve(&ganzhou_bureau()))
        .await
        .expect("the county bureau resolves it")
        .into_inner()
        .alert
        .expect("alert");
    assert_eq!(resolved.status(), pb::AlertStatus::Resolved);
    mesh.receiver_mut().listen().await.expect("listen");
}

#[tokio::test]
async fn a_transfer_tells_the_new_township_and_county_and_the_old_township_office() {
    let mesh = fast(&[])
        .start(&["registry", "checkin", "risk-alert"])
        .await
        .expect("mesh");
    mesh.register_webhook().await.expect("old township endpoint");
    let bureau = receiver_for(&mesh, &ganzhou_bureau(), county()).await;
    let new_township = receiver_for(
        &mesh,
        &township_office(OTHER_TOWNSHIP),
        jurisdiction(OTHER_TOWNSHIP, HOME_COUNTY),
    )
    .await;
    let missing = register_active(&mesh, 43).await;
    let raised = notified(mesh.receiver(), "alert.raised", &missing, Duration::from_secs(20)).await;
    let alert_id = raised.alert().expect("alert").alert_id.clone();

    // A dashboard of the new township watches.
    let mut stream = alert_changes(
        &mesh,
        jurisdiction(OTHER_TOWNSHIP, HOME_COUNTY),
        &mesh.token(&officer("officer-9", OTHER_TOWNSHIP)),
    )
    .await;

    mesh.registry()
        .transfer_supervisee(authorized(
            registry_pb::TransferSuperviseeRequest {
                supervisee_id: missing.clone(),
                to_township_code: OTHER_TOWNSHIP.into(),
                to_county_code: HOME_COUNTY.into(),
                to_officer_id: "officer-9".into(),
                reason: "moved house".into(),
            },
            &mesh.token(&home_officer()),
        ))
        .await
        .expect("transferred");

    for (who, receiver) in [
        ("new township", &new_township),
        ("county bureau", &bureau),
        ("old township", mesh.receiver()),
    ] {
        let told = notified(receiver, "alert.transferred", &missing, Duration::from_secs(20)).await;
        let alert = told.alert().expect("alert");
        assert_eq!(alert.alert_id, alert_id, "{who}");
        assert_eq!(
            alert.jurisdiction.as_ref().map(|j| j.township_code.as_str()),
            Some(OTHER_TOWNSHIP),
            "{who}"
        );
        if who == "old township" {
            assert!(
                told.notification
                    .as_ref()
                    .expect("parsed")
                    .reason
                    .contains("transferred to township"),
                "{who}"
            );
        }
    }
    let seen = eventually(
        "the transfer on the new stream",
        Duration::from_secs(10),
        async || {
            let message = tokio::time::timeout(Duration::from_secs(1), stream.message())
                .await
                .ok()?
                .ok()??;
            (message.change() == pb::AlertChange::Transferred).then_some(message)
        },
    )
    .await;
    assert_eq!(seen.alert.map(|a| a.alert_id), Some(alert_id));
}

/// An endpoint that accepts connections and never answers.
async fn hanging_endpoint() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hooks/alerts", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}

#[tokio::test]
async fn a_hanging_endpoint_does_not_delay_notifications_to_another() {
    let mesh = fast(&[("MESH_WEBHOOK_TIMEOUT_SECS", "40")])
        .start(&["registry", "checkin", "risk-alert"])
        .await
        .expect("mesh");
    let (hanging_url, _hanging) = hanging_endpoint().await;
    register_endpoint(
        &mesh,
        &township_office(HOME_TOWNSHIP),
        home_jurisdiction(),
        hanging_url,
    )
    .await;
    let other = receiver_for(
        &mesh,
        &township_office(OTHER_TOWNSHIP),
        jurisdiction(OTHER_TOWNSHIP, HOME_COUNTY),
    )
    .await;
    // The hanging township's alert comes first, then the other township's.
    let first = register_active(&mesh, 44).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let request = registry_pb::RegisterSuperviseeRequest {
        township_code: OTHER_TOWNSHIP.into(),
        officer_id: "officer-9".into(),
        ..reported_in(45, chrono::Utc::now())
    };
    let second = mesh
        .registry()
        .register_supervisee(authorized(
            request,
            &mesh.token(&officer("officer-9", OTHER_TOWNSHIP)),
        ))
        .await
        .expect("registered")
        .into_inner()
        .supervisee
        .expect("supervisee")
        .supervisee_id;

    let token = mesh.token(&ganzhou_bureau());
    let raised_at = eventually(
        "the other township's alert",
        Duration::from_secs(30),
        async || {
            let alerts = mesh
                .risk_alert()
                .list_alerts(authorized(
                    pb::ListAlertsRequest {
                        jurisdiction: Some(county()),
                        subject_id: second.clone(),
                        ..Default::default()
                    },
                    &token,
                ))
                .await
                .ok()?
                .into_inner()
                .alerts;
            alerts.first()?.raised_at
        },
    )
    .await;
    let received = notified(&other, "alert.raised", &second, Duration::from_secs(15)).await;
    let raised_at = chrono::DateTime::from_timestamp(raised_at.seconds, 0).expect("time");
    let delay = received.received_at - raised_at;
    assert!(
        delay < chrono::Duration::seconds(8),
        "delivered {delay} after raising, behind the hanging endpoint"
    );
    assert!(!first.is_empty());
}

#[tokio::test]
async fn the_live_stream_ends_when_the_token_expires() {
    let mesh = fast(&[])
        .start(&["registry", "checkin", "risk-alert"])
        .await
        .expect("mesh");
    let now = chrono::Utc::now();
    let short = mesh.secrets.token_issuer().mint(
        &home_officer(),
        &SERVICES,
        now,
        now + chrono::Duration::seconds(3),
    );
    let mut stream = alert_changes(&mesh, home_jurisdiction(), &short).await;
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ends soon after the token expires");
    let status = ended.expect_err("ends with a status");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn the_live_stream_resends_what_changed_while_its_listen_connection_was_down() {
    let mesh = fast(&[])
        .start(&["registry", "checkin", "risk-alert"])
        .await
        .expect("mesh");
    let token = mesh.token(&home_officer());
    let missing = register_active(&mesh, 46).await;
    let alert_id = alert_about(&mut mesh.risk_alert(), &missing, &token).await;
    let mut stream = alert_changes(&mesh, home_jurisdiction(), &token).await;

    // The acknowledgement's own transaction cuts every other connection of the service,
    // LISTEN included, while new connections are refused: its notification is sent while
    // nobody listens (the pooled connections the listener would reconnect through are
    // gone too), as when the connection drops at the wrong moment.
    let pool = mesh.pool("risk-alert").expect("pool");
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .expect("database");
    sqlx::raw_sql(
        "CREATE FUNCTION cut_listener() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             PERFORM pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid();
             RETURN NEW;
         END $$;
         CREATE TRIGGER cut_listener AFTER UPDATE ON alerts
             FOR EACH ROW WHEN (NEW.status = 'acknowledged') EXECUTE FUNCTION cut_listener();",
    )
    .execute(&pool)
    .await
    .expect("trigger");
    let listening: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%mesh_alert_changes%'",
    )
    .fetch_one(&pool)
    .await
    .expect("listeners");
    // (The scheduler listens too, on the deadline-change channel.)
    assert_eq!(listening, 1, "the fan-out listens");
    // A database cannot refuse connections from a session inside it.
    let admin = sqlx::PgPool::connect(&mesh.infra.database_url("postgres"))
        .await
        .expect("admin connection");
    sqlx::query(&format!("ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS false"))
        .execute(&admin)
        .await
        .expect("connections held");
    let acknowledged = mesh
        .risk_alert()
        .acknowledge_alert(authorized(
            pb::AcknowledgeAlertRequest {
                alert_id: alert_id.clone(),
            },
            &token,
        ))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    sqlx::query(&format!("ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS true"))
        .execute(&admin)
        .await
        .expect("connections allowed again");
    acknowledged.expect("acknowledged while the listener was down");

    let seen = eventually(
        "the acknowledgement on the stream",
        Duration::from_secs(20),
        async || {
            let message = tokio::time::timeout(Duration::from_secs(1), stream.message())
                .await
                .ok()?
                .ok()??;
            let alert = message.alert.clone()?;
            (alert.alert_id == alert_id && alert.status() == pb::AlertStatus::Acknowledged).then_some(message)
        },
    )
    .await;
    assert!(matches!(
        seen.change(),
        pb::AlertChange::Current | pb::AlertChange::Acknowledged
    ));
}

#[tokio::test]
async fn a_delivered_notification_keeps_its_body_only_for_the_retention() {
    let mesh = fast(&[("MESH_NOTIFICATION_BODY_RETENTION_SECS", "1")])
        .start(&["registry", "risk-alert"])
        .await
        .expect("mesh");
    mesh.register_webhook().await.expect("township endpoint");
    let missing = register_active(&mesh, 44).await;
    let raised = notified(mesh.receiver(), "alert.raised", &missing, Duration::from_secs(30)).await;
    assert!(raised.signature_valid);

    // Delivered, the body (the person's name, township, evidence) is emptied after the
    // retention; the row and its attempts stay for ListDeliveries.
    let pool = mesh.pool("risk-alert").expect("pool");
    let bodies = async || -> Vec<(bool, i32)> {
        sqlx::query_as("SELECT delivered_at IS NOT NULL, length(body) FROM notifications WHERE notification_id = $1::uuid")
            .bind(&raised.notification_id)
            .fetch_all(&pool)
            .await
            .expect("notification")
    };
    eventually(
        "the delivered body emptied",
        Duration::from_secs(15),
        async || (bodies().await == [(true, 0)]).then_some(()),
    )
    .await;
    let attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM delivery_attempts WHERE notification_id = $1::uuid")
            .bind(&raised.notification_id)
            .fetch_one(&pool)
            .await
            .expect("attempts");
    assert!(attempts >= 1, "its attempts are kept");
}
