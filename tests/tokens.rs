//! Caller tokens against a running service: a token is accepted only when signed by a key of
//! the key set that is trusted for its role and for this service, and keys are added and
//! retired by rewriting the key set file, without restarting anything.

use std::time::Duration;

use chrono::Utc;
use mesh::harness::Mesh;
use mesh_e2e::{HOME_TOWNSHIP, authorized, eventually, home_officer};
use mesh_kit::auth::{
    Caller, IDP_ISSUER, Role,
    keygen::{GeneratedKey, PEOPLE_ROLES, SERVICES},
};
use mesh_proto::registry as pb;
use tonic::Code;

/// What the registry answers `token` when listing the home township.
async fn list_with(mesh: &Mesh, token: &str) -> Result<(), Code> {
    let request = pb::ListSuperviseesRequest {
        township_code: HOME_TOWNSHIP.into(),
        ..Default::default()
    };
    mesh.registry()
        .list_supervisees(authorized(request, token))
        .await
        .map(drop)
        .map_err(|status| status.code())
}

async fn registry() -> Mesh {
    Mesh::builder()
        .env("registry", &[("MESH_JWKS_REFRESH_SECS", "1")])
        .start(&["registry"])
        .await
        .expect("registry starts")
}

fn mint(key: &GeneratedKey, caller: &Caller, audiences: &[&str]) -> String {
    let now = Utc::now();
    key.issuer()
        .mint(caller, audiences, now, now + chrono::Duration::hours(1))
}

#[tokio::test]
async fn a_token_is_accepted_only_for_the_roles_and_services_its_key_is_trusted_for() {
    let mesh = registry().await;
    let officer = home_officer();
    assert_eq!(
        list_with(&mesh, &mint(&mesh.secrets.idp, &officer, &["registry"])).await,
        Ok(())
    );
    // Meant for the check-in service: the registry refuses it.
    assert_eq!(
        list_with(&mesh, &mint(&mesh.secrets.idp, &officer, &["checkin"])).await,
        Err(Code::Unauthenticated)
    );
    // Risk-alert's own key is trusted for system tokens to the registry, never for an admin.
    let admin = Caller::new("risk-alert", Role::Admin, None, None);
    assert_eq!(
        list_with(&mesh, &mint(&mesh.secrets.risk_alert, &admin, &["registry"])).await,
        Err(Code::Unauthenticated)
    );
    assert_eq!(
        list_with(&mesh, &mesh.secrets.system_token("risk-alert")).await,
        Ok(())
    );
    // A day-long token is longer than the service accepts.
    let now = Utc::now();
    let long = mesh
        .secrets
        .token_issuer()
        .mint(&officer, &SERVICES, now, now + chrono::Duration::days(1));
    assert_eq!(list_with(&mesh, &long).await, Err(Code::Unauthenticated));
}

#[tokio::test]
async fn keys_are_rotated_by_rewriting_the_key_set_without_a_restart() {
    let mesh = registry().await;
    let officer = home_officer();
    let old_token = mint(&mesh.secrets.idp, &officer, &["registry"]);
    let next = GeneratedKey::generate("idp", IDP_ISSUER, &PEOPLE_ROLES, &SERVICES);
    let new_token = mint(&next, &officer, &["registry"]);
    assert_eq!(list_with(&mesh, &new_token).await, Err(Code::Unauthenticated));

    // The new key is published beside the old one: both are accepted.
    mesh.secrets
        .write_key_set([&mesh.secrets.idp, &mesh.secrets.risk_alert, &next])
        .expect("publish the new key");
    eventually("the new key trusted", Duration::from_secs(15), async || {
        list_with(&mesh, &new_token).await.ok()
    })
    .await;
    assert_eq!(list_with(&mesh, &old_token).await, Ok(()));

    // The old key is retired: its tokens stop working, the new key's keep working.
    mesh.secrets
        .write_key_set([&mesh.secrets.risk_alert, &next])
        .expect("retire the old key");
    eventually("the old key retired", Duration::from_secs(15), async || {
        (list_with(&mesh, &old_token).await == Err(Code::Unauthenticated)).then_some(())
    })
    .await;
    assert_eq!(list_with(&mesh, &new_token).await, Ok(()));

    // A key set that does not parse is not applied: the keys in use stay.
    std::fs::write(mesh.secrets.key_set_file(), "{ not json").expect("break the file");
    let unknown = mint(
        &GeneratedKey::generate("idp", IDP_ISSUER, &PEOPLE_ROLES, &SERVICES),
        &officer,
        &["registry"],
    );
    assert_eq!(list_with(&mesh, &unknown).await, Err(Code::Unauthenticated));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(list_with(&mesh, &new_token).await, Ok(()));
}
