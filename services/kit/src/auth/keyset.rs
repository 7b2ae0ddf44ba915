//! The key set services verify tokens against: a JSON Web Key Set (RFC 7517) of Ed25519
//! public keys, each found by its `kid`, and each bound by three members of this mesh to
//! what it may vouch for — the issuer that holds its private half (`mesh_issuer`), the roles
//! its tokens may carry (`mesh_roles`) and the services they may be presented to
//! (`mesh_audiences`). So the key a service holds to call another cannot mint an admin, and
//! a token meant for one service is refused by the others.

use std::collections::HashMap;

use jsonwebtoken::DecodingKey;
use serde::Deserialize;

use super::Role;

/// A verifying key and what its tokens may claim.
#[derive(Clone)]
pub struct TrustedKey {
    pub kid: String,
    pub issuer: String,
    pub roles: Vec<Role>,
    pub audiences: Vec<String>,
    pub(super) decoding: DecodingKey,
}

impl std::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedKey")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("roles", &self.roles)
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

/// Every key a service trusts, by key id.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, TrustedKey>,
}

/// One JWK as this mesh writes it.
#[derive(Debug, Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    crv: String,
    #[serde(default)]
    x: String,
    #[serde(default)]
    kid: String,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    usage: Option<String>,
    #[serde(default)]
    mesh_issuer: String,
    #[serde(default)]
    mesh_roles: Vec<String>,
    #[serde(default)]
    mesh_audiences: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

impl KeySet {
    /// Parses a JWKS document; every key must be a complete Ed25519 signing key with a unique
    /// id, an issuer, at least one role and at least one audience, or the whole set is refused
    /// (a half-read set would lock some callers out without saying why).
    pub fn parse(json: &str) -> Result<Self, String> {
        let document: Jwks =
            serde_json::from_str(json).map_err(|error| format!("not a JWKS document: {error}"))?;
        let mut keys = HashMap::new();
        for (index, jwk) in document.keys.into_iter().enumerate() {
            let key = trusted(jwk).map_err(|problem| format!("keys[{index}]: {problem}"))?;
            if keys.contains_key(&key.kid) {
                return Err(format!("keys[{index}]: kid {:?} appears twice", key.kid));
            }
            keys.insert(key.kid.clone(), key);
        }
        if keys.is_empty() {
            return Err("the key set holds no keys".into());
        }
        Ok(Self { keys })
    }

    pub fn get(&self, kid: &str) -> Option<&TrustedKey> {
        self.keys.get(kid)
    }

    /// The key ids, sorted (for logs: which keys a reload brought).
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }
}

fn trusted(jwk: Jwk) -> Result<TrustedKey, String> {
    if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
        return Err(format!(
            "only Ed25519 keys (kty OKP, crv Ed25519) are trusted, got kty {:?} crv {:?}",
            jwk.kty, jwk.crv
        ));
    }
    if jwk.alg.as_deref().is_some_and(|alg| alg != "EdDSA") {
        return Err("alg must be EdDSA".into());
    }
    if jwk.usage.as_deref().is_some_and(|usage| usage != "sig") {
        return Err("use must be sig".into());
    }
    if jwk.kid.trim().is_empty() {
        return Err("kid is required".into());
    }
    if jwk.mesh_issuer.trim().is_empty() {
        return Err("mesh_issuer is required".into());
    }
    let roles = jwk
        .mesh_roles
        .iter()
        .map(|role| role.parse::<Role>())
        .collect::<Result<Vec<_>, _>>()?;
    if roles.is_empty() {
        return Err("mesh_roles must name at least one role".into());
    }
    if jwk
        .mesh_audiences
        .iter()
        .all(|audience| audience.trim().is_empty())
    {
        return Err("mesh_audiences must name at least one service".into());
    }
    // Decoded once, here: an Ed25519 public key is 32 bytes, and anything else would only
    // fail at first use. The raw key is what `DecodingKey` verifies `EdDSA` with.
    let x = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        jwk.x.trim_end_matches('='),
    )
    .map_err(|_| "x is not base64url".to_owned())?;
    if x.len() != 32 {
        return Err("x must be a 32-byte Ed25519 public key".into());
    }
    let decoding = DecodingKey::from_ed_der(&x);
    Ok(TrustedKey {
        kid: jwk.kid,
        issuer: jwk.mesh_issuer,
        roles,
        audiences: jwk.mesh_audiences,
        decoding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(kid: &str) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid,
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
            "mesh_issuer": "mesh-idp", "mesh_roles": ["officer"], "mesh_audiences": ["registry"],
        })
    }

    fn parse(keys: Vec<serde_json::Value>) -> Result<KeySet, String> {
        KeySet::parse(&serde_json::json!({ "keys": keys }).to_string())
    }

    #[test]
    fn a_complete_key_is_trusted_for_what_it_names() {
        let set = parse(vec![jwk("a"), jwk("b")]).expect("valid");
        assert_eq!(set.kids(), vec!["a", "b"]);
        let key = set.get("a").expect("a");
        assert_eq!(key.issuer, "mesh-idp");
        assert_eq!(key.roles, vec![Role::Officer]);
        assert_eq!(key.audiences, vec!["registry".to_owned()]);
    }

    #[test]
    fn an_incomplete_or_foreign_key_refuses_the_whole_set() {
        let broken = |field: &str, value: serde_json::Value| {
            let mut key = jwk("b");
            key[field] = value;
            parse(vec![jwk("a"), key]).expect_err("refused")
        };
        assert!(broken("kty", "RSA".into()).contains("keys[1]: only Ed25519"));
        assert!(broken("alg", "HS256".into()).contains("alg must be EdDSA"));
        assert!(broken("kid", "".into()).contains("kid is required"));
        assert!(broken("mesh_issuer", "".into()).contains("mesh_issuer is required"));
        assert!(broken("mesh_roles", serde_json::json!([])).contains("mesh_roles"));
        assert!(broken("mesh_roles", serde_json::json!(["emperor"])).contains("unknown role"));
        assert!(broken("mesh_audiences", serde_json::json!([])).contains("mesh_audiences"));
        assert!(broken("x", "AAAA".into()).contains("32-byte"));
        assert!(
            parse(vec![jwk("a"), jwk("a")])
                .expect_err("dup")
                .contains("appears twice")
        );
        assert!(parse(vec![]).expect_err("empty").contains("no keys"));
        assert!(KeySet::parse("{").expect_err("json").contains("not a JWKS"));
    }
}
