//! New Ed25519 signing keys and the key set that trusts them: what `mesh keys generate`
//! writes for a deployment, and what the demo and the tests create for each run.

use base64::Engine;
use ed25519_dalek::{
    SigningKey,
    pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding},
};
use rand::RngCore;

use super::{Role, TokenIssuer};

/// The services of the mesh, each the audience of the tokens presented to it.
pub const SERVICES: [&str; 5] = ["registry", "checkin", "handover", "placement", "risk-alert"];

/// Roles the identity provider vouches for: every person's role, never a service's.
pub const PEOPLE_ROLES: [Role; 5] = [
    Role::Officer,
    Role::TownshipOffice,
    Role::CountyBureau,
    Role::Prison,
    Role::Admin,
];

/// A freshly generated key: its private half (PKCS#8 PEM) and what the key set will trust
/// it for.
#[derive(Clone)]
pub struct GeneratedKey {
    pub kid: String,
    pub issuer: String,
    pub roles: Vec<Role>,
    pub audiences: Vec<String>,
    pub private_pem: String,
    public_x: String,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl GeneratedKey {
    /// A new random key for `issuer`, trusted for `roles` towards `audiences`; its key id is
    /// `name` plus a random suffix, so a rotated key never reuses an old id.
    pub fn generate(name: &str, issuer: &str, roles: &[Role], audiences: &[&str]) -> Self {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let signing = SigningKey::from_bytes(&seed);
        let private_pem = signing
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .unwrap_or_default();
        let mut suffix = [0u8; 4];
        rand::rng().fill_bytes(&mut suffix);
        Self {
            kid: format!("{name}-{}", hex(&suffix)),
            issuer: issuer.to_owned(),
            roles: roles.to_vec(),
            audiences: audiences.iter().map(|audience| (*audience).to_owned()).collect(),
            private_pem,
            public_x: base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(signing.verifying_key().as_bytes()),
        }
    }

    /// Signs as this key.
    pub fn issuer(&self) -> TokenIssuer {
        TokenIssuer::from_pem(self.private_pem.as_bytes(), &self.kid, &self.issuer)
            .unwrap_or_else(|problem| unreachable!("a generated key is a valid key: {problem}"))
    }

    /// This key's public entry in a key set.
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": "EdDSA",
            "use": "sig",
            "kid": self.kid,
            "x": self.public_x,
            "mesh_issuer": self.issuer,
            "mesh_roles": self.roles.iter().map(|role| role.as_str()).collect::<Vec<_>>(),
            "mesh_audiences": self.audiences,
        })
    }
}

/// A JWKS document trusting `keys`.
pub fn jwks<'a>(keys: impl IntoIterator<Item = &'a GeneratedKey>) -> String {
    let keys: Vec<_> = keys.into_iter().map(GeneratedKey::jwk).collect();
    serde_json::to_string_pretty(&serde_json::json!({ "keys": keys })).unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
