//! Minting tokens: an Ed25519 private key with its key id and issuer. The identity provider
//! holds one for people (in development, `mesh token`), and each service that calls another
//! holds its own, which the key set trusts only for `system` tokens to the services it calls.

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::{Caller, claims::Claims};

/// Issuer of the tokens people carry (in development, `mesh token` and the test harness).
pub const IDP_ISSUER: &str = "mesh-idp";

/// The issuer a service's own key signs as.
pub fn service_issuer(service: &str) -> String {
    format!("mesh-service:{service}")
}

/// Signs tokens with one private key.
#[derive(Clone)]
pub struct TokenIssuer {
    kid: String,
    issuer: String,
    encoding: EncodingKey,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// An issuer from a PKCS#8 PEM Ed25519 private key.
    pub fn from_pem(pem: &[u8], kid: &str, issuer: &str) -> Result<Self, String> {
        let encoding =
            EncodingKey::from_ed_pem(pem).map_err(|_| "not a PKCS#8 PEM Ed25519 private key".to_owned())?;
        if kid.trim().is_empty() {
            return Err("a signing key needs a kid".into());
        }
        Ok(Self {
            kid: kid.to_owned(),
            issuer: issuer.to_owned(),
            encoding,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A token for `caller`, to be presented to the services in `audiences`, valid from
    /// `issued_at` until `expires_at`.
    pub fn mint(
        &self,
        caller: &Caller,
        audiences: &[&str],
        issued_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> String {
        let claims = Claims {
            sub: caller.subject.clone(),
            role: caller.role,
            township: caller.township.clone(),
            county: caller.county.clone(),
            prison: caller.prison.clone(),
            iss: self.issuer.clone(),
            aud: audiences.iter().map(|audience| (*audience).to_owned()).collect(),
            iat: issued_at.timestamp(),
            exp: expires_at.timestamp(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        // The key parsed at construction and the claims are plain data: signing cannot fail.
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap_or_default()
    }
}
