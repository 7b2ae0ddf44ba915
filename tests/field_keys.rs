//! Field keys end to end: every service seals with keys of its own, and a rotation re-seals
//! what an older key sealed in the background of the owning service, until the old key can
//! go. The real registry and risk-alert binaries against real PostgreSQL.

use std::time::Duration;

use mesh::harness::{ServiceProcess, key_ring};
use mesh_e2e::{Mesh, authorized, eventually, home_officer, register, registration};
use mesh_kit::keyring::key_id_of;
use mesh_proto::registry::{self as pb, registry_service_client::RegistryServiceClient};

/// The contexts the registry and risk-alert seal with (their `sealing.rs` and `notify.rs`).
const NATIONAL_ID: &str = "supervisees.national_id";
const WEBHOOK_SECRET: &str = "endpoints.secret";

const K1: &str = "k1:ERERERERERERERERERERERERERERERERERERERERERE=";
const K2: &str = "k2:IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI=";

/// Every sealed value of the registry, by row: national ID, phone, address.
async fn sealed_rows(mesh: &Mesh) -> Vec<(uuid::Uuid, Vec<u8>, Vec<u8>, Vec<u8>)> {
    sqlx::query_as("SELECT id, national_id_sealed, phone_sealed, address_sealed FROM supervisees ORDER BY id")
        .fetch_all(&mesh.pool("registry").expect("pool"))
        .await
        .expect("rows")
}

/// The key ids of every sealed value of the registry.
async fn key_ids(mesh: &Mesh) -> Vec<String> {
    sealed_rows(mesh)
        .await
        .iter()
        .flat_map(|(_, a, b, c)| [a, b, c])
        .map(|sealed| key_id_of(sealed).to_owned())
        .collect()
}

/// Starts a registry process of `mesh` with the field ring `keys` sealing with `current`.
async fn registry_with(
    mesh: &mut Mesh,
    keys: &str,
    current: &str,
) -> (ServiceProcess, RegistryServiceClient<tonic::transport::Channel>) {
    let process = mesh
        .spawn(
            "registry",
            &[
                ("MESH_FIELD_KEYS", keys),
                ("MESH_FIELD_KEY_CURRENT", current),
                ("MESH_FIELD_KEY_ROTATION_BATCH", "2"),
            ],
        )
        .await
        .expect("registry starts");
    let client = RegistryServiceClient::new(process.channel().await.expect("channel"));
    (process, client)
}

/// What the registry answers about `ids`: the personal fields opened (national ID masked).
async fn answers(
    client: &mut RegistryServiceClient<tonic::transport::Channel>,
    token: &str,
    ids: &[String],
) -> Vec<(String, String, String, i64)> {
    let mut answers = Vec::new();
    for id in ids {
        let supervisee = client
            .get_supervisee(authorized(
                pb::GetSuperviseeRequest {
                    supervisee_id: id.clone(),
                },
                token,
            ))
            .await
            .expect("read")
            .into_inner()
            .supervisee
            .expect("supervisee");
        answers.push((
            supervisee.national_id_masked,
            supervisee.phone,
            supervisee.address,
            supervisee.version,
        ));
    }
    answers
}

#[tokio::test]
async fn each_service_opens_only_what_it_sealed_itself() {
    let mesh = Mesh::builder()
        .env("risk-alert", &[("MESH_WEBHOOK_ALLOW_HTTP", "true")])
        .start(&["registry", "risk-alert"])
        .await
        .expect("mesh");
    let person = registration(50);
    register(&mesh, person.clone()).await;
    mesh.register_webhook().await.expect("endpoint");

    let (_, national_id, _, _) = sealed_rows(&mesh).await.remove(0);
    let secret: Vec<u8> = sqlx::query_scalar("SELECT secret_sealed FROM endpoints")
        .fetch_one(&mesh.pool("risk-alert").expect("pool"))
        .await
        .expect("endpoint");
    let registry = mesh.secrets.field_ring("registry").expect("ring");
    let risk_alert = mesh.secrets.field_ring("risk-alert").expect("ring");
    // Same key id in both rings, different keys.
    assert_eq!(key_id_of(&national_id), key_id_of(&secret));
    assert_eq!(
        registry
            .open(&national_id, NATIONAL_ID)
            .expect("the registry's own"),
        person.national_id.as_bytes()
    );
    assert!(
        risk_alert.open(&national_id, NATIONAL_ID).is_err(),
        "risk-alert opened the registry's value"
    );
    assert_eq!(
        risk_alert
            .open(&secret, WEBHOOK_SECRET)
            .expect("risk-alert's own"),
        mesh::harness::WEBHOOK_SECRET.as_bytes()
    );
    assert!(
        registry.open(&secret, WEBHOOK_SECRET).is_err(),
        "the registry opened risk-alert's value"
    );
    // Nor does the transit ring open either.
    let transit = mesh.secrets.transit_ring().expect("ring");
    assert!(transit.open(&national_id, NATIONAL_ID).is_err());
}

#[tokio::test]
async fn a_rotation_reseals_every_value_in_the_background_and_the_old_key_can_go() {
    let mut mesh = Mesh::builder().build().await.expect("mesh");
    let token = mesh.token(&home_officer());

    // Sealed under k1.
    let (process, mut client) = registry_with(&mut mesh, K1, "k1").await;
    let mut ids = Vec::new();
    let mut national_ids = Vec::new();
    for n in 60..65 {
        let person = registration(n);
        national_ids.push(person.national_id.clone());
        let answer = client
            .register_supervisee(authorized(person, &token))
            .await
            .expect("registered")
            .into_inner();
        ids.push(answer.supervisee.expect("supervisee").supervisee_id);
    }
    let before = answers(&mut client, &token, &ids).await;
    assert_eq!(key_ids(&mesh).await, vec!["k1"; 15]);
    process.stop(Duration::from_secs(20)).await.expect("stopped");

    // k2 made current beside k1: the registry re-seals in batches of two, and says so.
    let ring = format!("{K2},{K1}");
    let (process, mut client) = registry_with(&mut mesh, &ring, "k2").await;
    eventually("every value under k2", Duration::from_secs(30), async || {
        key_ids(&mesh).await.iter().all(|id| id == "k2").then_some(())
    })
    .await;
    let log = eventually("the rotation's last word", Duration::from_secs(10), async || {
        let log = process.log_text();
        log.contains("every sealed value is under a current key")
            .then_some(log)
    })
    .await;
    assert!(log.matches("field keys: batch re-sealed").count() >= 8, "{log}");
    assert!(log.contains("supervisees.national_id_sealed: k2=5"), "{log}");
    assert_eq!(
        answers(&mut client, &token, &ids).await,
        before,
        "the same values, no new version"
    );
    process.stop(Duration::from_secs(20)).await.expect("stopped");

    // k1 removed: everything still opens, to the same values.
    let k2_only = key_ring(K2, "k2").expect("ring");
    for ((_, national_id, _, _), expected) in sealed_rows(&mesh).await.iter().zip(&national_ids) {
        assert_eq!(
            k2_only.open(national_id, NATIONAL_ID).expect("opens"),
            expected.as_bytes()
        );
    }
    let (process, mut client) = registry_with(&mut mesh, K2, "k2").await;
    assert_eq!(answers(&mut client, &token, &ids).await, before);
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM kit_outbox")
        .fetch_one(&mesh.pool("registry").expect("pool"))
        .await
        .expect("outbox");
    assert_eq!(outbox, 5, "re-sealing published nothing");
    process.stop(Duration::from_secs(20)).await.expect("stopped");
}
