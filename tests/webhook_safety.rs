//! Webhooks cannot be pointed into the service's own network (issue 12): a URL whose host
//! leads to loopback, private, link-local or metadata addresses is refused at registration,
//! and a stored one is refused again at delivery — reported in a few words that tell
//! nothing about the network. The other end-to-end tests run risk-alert with the harness's
//! loopback allow-list; these run it without, as in production.

use std::time::Duration;

use mesh::harness::WEBHOOK_SECRET;
use mesh_e2e::{
    FAST_POLICY, HOME_TOWNSHIP, Mesh, alert_about, authorized, count, deliveries, eventually,
    home_jurisdiction, home_officer, register, reported_in, run_misconfigured, township_office,
};
use mesh_kit::error::violated_fields;
use mesh_proto::alert::{self as pb, alert_service_client::AlertServiceClient};
use tonic::Code;

/// Risk-alert's allow-list emptied: production's policy.
const PUBLIC_ONLY: (&str, &str) = ("MESH_WEBHOOK_ALLOW_PRIVATE", "");

fn registration(url: &str) -> pb::RegisterEndpointRequest {
    pb::RegisterEndpointRequest {
        jurisdiction: Some(home_jurisdiction()),
        url: url.into(),
        secret: WEBHOOK_SECRET.into(),
        description: "东街司法所值班系统".into(),
        max_batch_size: 0,
    }
}

#[tokio::test]
async fn urls_leading_into_the_network_are_refused_naming_the_url_and_nothing_is_stored() {
    let mesh = Mesh::builder()
        .env("risk-alert", &[PUBLIC_ONLY])
        .start(&["risk-alert"])
        .await
        .expect("mesh");
    let token = mesh.token(&township_office(HOME_TOWNSHIP));
    for url in [
        "https://127.0.0.1:5432/x",
        "https://169.254.169.254/latest",
        // A name resolving to loopback, and the same addresses written otherwise.
        "https://localhost:5432/x",
        "https://2130706433:5432/x",
        "https://[::ffff:127.0.0.1]:5432/x",
        "https://[::ffff:a9fe:a9fe]/latest",
        "https://10.0.0.1/hook",
        "https://[fd00:ec2::254]/latest",
        // Credentials in the URL are refused whatever the host.
        "https://user:password@office.example/hook",
    ] {
        let status = mesh
            .risk_alert()
            .register_endpoint(authorized(registration(url), &token))
            .await
            .expect_err(url);
        assert_eq!(status.code(), Code::InvalidArgument, "{url}: {status:?}");
        assert_eq!(violated_fields(&status), ["url"], "{url}: {}", status.message());
        assert!(
            !status.message().contains("127.0.0.1") || url.contains("127.0.0.1"),
            "the resolved address is not told: {}",
            status.message()
        );
    }
    let listed = mesh
        .risk_alert()
        .list_endpoints(authorized(
            pb::ListEndpointsRequest {
                jurisdiction: Some(home_jurisdiction()),
                page: None,
            },
            &token,
        ))
        .await
        .expect("listed")
        .into_inner()
        .endpoints;
    assert!(listed.is_empty(), "{listed:?}");
    assert_eq!(
        count(&mesh, "risk-alert", "SELECT count(*) FROM endpoints").await,
        0
    );
}

/// An endpoint registered while loopback was allowed, delivered to after the allow-list is
/// gone (as if its name now resolved to loopback): every attempt fails without a connection,
/// in the words callers see, and is retried like any failure.
#[tokio::test]
async fn a_stored_endpoint_that_policy_no_longer_allows_is_refused_at_delivery() {
    let mut mesh = Mesh::builder()
        .env("risk-alert", FAST_POLICY)
        .start(&["registry", "checkin", "risk-alert"])
        .await
        .expect("mesh");
    mesh.register_webhook()
        .await
        .expect("registered under the allow-list");
    mesh.stop("risk-alert").await.expect("stopped");
    let mut env = FAST_POLICY.to_vec();
    env.extend([("MESH_WEBHOOK_RETRY_BASE_MS", "200"), PUBLIC_ONLY]);
    let production = mesh.spawn("risk-alert", &env).await.expect("risk-alert again");
    let mut alerts = AlertServiceClient::new(production.channel().await.expect("channel"));

    let missing = register(&mesh, reported_in(61, chrono::Utc::now())).await;
    let token = mesh.token(&home_officer());
    let alert_id = alert_about(&mut alerts, &missing, &token).await;
    let attempts = eventually("two refused attempts", Duration::from_secs(30), async || {
        let deliveries = deliveries(&mut alerts, &alert_id, &token).await?;
        (deliveries.len() >= 2).then_some(deliveries)
    })
    .await;
    for attempt in &attempts {
        assert_eq!(attempt.error, "destination refused by policy", "{attempt:?}");
        assert_eq!(attempt.http_status, 0);
        assert_eq!(attempt.duration_ms, 0, "no timing of what was never connected");
        assert_eq!(attempt.outcome(), pb::DeliveryOutcome::Failed);
        assert!(attempt.next_attempt_at.is_some(), "retried like any failure");
    }
    assert!(
        mesh.receiver().received().is_empty(),
        "nothing reached the loopback receiver"
    );
    let url = mesh.receiver().url();
    let address = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("host:port");
    assert!(
        !production.log_text().contains(address),
        "the service's log does not name the address either"
    );
}

#[tokio::test]
async fn a_malformed_allow_list_stops_the_service_naming_the_variable() {
    let output = run_misconfigured(
        "risk-alert",
        &[("MESH_WEBHOOK_ALLOW_PRIVATE", "127.0.0.1/32,localhost")],
    )
    .await;
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("MESH_WEBHOOK_ALLOW_PRIVATE=\"127.0.0.1/32,localhost\" is invalid: \"localhost\" is not a network in CIDR form"),
        "{stderr}"
    );
}
