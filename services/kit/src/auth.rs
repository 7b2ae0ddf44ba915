//! Caller identity: Ed25519-signed bearer tokens (JWT, `EdDSA`) carrying a role and a
//! jurisdiction, verified on every RPC by a tonic interceptor that puts the [`Caller`] into
//! the request's extensions. Handlers then ask the caller whether it may touch a given
//! jurisdiction.
//!
//! Tokens are minted with a private key ([`TokenIssuer`]) and verified against a key set of
//! public keys ([`KeySet`]), each trusted for one issuer, some roles and some services: no
//! service holds a secret that could mint an administrator, and a token is accepted only by
//! the services it names.

mod claims;
mod issuer;
pub mod keygen;
mod keyset;
mod verifier;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tonic::Request;

pub use self::{
    claims::Claims,
    issuer::{IDP_ISSUER, TokenIssuer, service_issuer},
    keyset::{KeySet, TrustedKey},
    verifier::{KeySource, TokenVerifier},
};
use crate::error::ServiceError;

/// What a caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Correction officer at a township judicial office.
    Officer,
    /// A township judicial office (司法所) as an organisation.
    TownshipOffice,
    /// A county judicial bureau (县区司法局).
    CountyBureau,
    /// A prison or detention centre.
    Prison,
    /// City-wide administrator.
    Admin,
    /// Another service of the mesh acting on its own behalf.
    System,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Officer => "officer",
            Role::TownshipOffice => "township_office",
            Role::CountyBureau => "county_bureau",
            Role::Prison => "prison",
            Role::Admin => "admin",
            Role::System => "system",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(value.to_owned()))
            .map_err(|_| format!("unknown role {value:?}"))
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub subject: String,
    pub role: Role,
    pub township: Option<String>,
    pub county: Option<String>,
    pub prison: Option<String>,
}

/// Roles that work with people under supervision: everyone but prisons, which see only
/// their own release notices.
pub const SUPERVISION_ROLES: &[Role] = &[
    Role::Officer,
    Role::TownshipOffice,
    Role::CountyBureau,
    Role::Admin,
    Role::System,
];

impl Caller {
    /// A caller of `role` in the given township and county (no prison).
    pub fn new(subject: &str, role: Role, township: Option<&str>, county: Option<&str>) -> Self {
        Self {
            subject: subject.to_owned(),
            role,
            township: township.map(str::to_owned),
            county: county.map(str::to_owned),
            prison: None,
        }
    }

    /// Whether the caller may read or change data of the given township/county.
    pub fn can_access(&self, township_code: &str, county_code: &str) -> bool {
        match self.role {
            Role::Admin | Role::System => true,
            Role::Officer | Role::TownshipOffice => self.township.as_deref() == Some(township_code),
            Role::CountyBureau => self.county.as_deref() == Some(county_code),
            Role::Prison => false,
        }
    }

    /// `PermissionDenied` unless [`Caller::can_access`].
    pub fn ensure_access(&self, township_code: &str, county_code: &str) -> Result<(), ServiceError> {
        if self.can_access(township_code, county_code) {
            Ok(())
        } else {
            Err(ServiceError::denied("outside the caller's jurisdiction"))
        }
    }

    /// `PermissionDenied` unless the caller has one of `roles`.
    pub fn ensure_role(&self, roles: &[Role]) -> Result<(), ServiceError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ServiceError::denied(format!(
                "role {} may not do this",
                self.role.as_str()
            )))
        }
    }

    /// The caller as recorded in events.
    pub fn actor(&self) -> mesh_proto::common::Actor {
        mesh_proto::common::Actor {
            subject: self.subject.clone(),
            role: self.role.as_str().to_owned(),
        }
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("token is not signed with EdDSA")]
    Algorithm,
    #[error("token names no key id (kid)")]
    NoKeyId,
    #[error("token is signed with a key the key set does not hold")]
    UnknownKey,
    #[error("token's key is not trusted for this service")]
    NotForThisService,
    #[error("token's key may not vouch for role {0}")]
    RoleNotVouched(&'static str),
    #[error("token lives longer than the longest lifetime allowed")]
    TooLong,
    #[error("token lacks the jurisdiction its role needs: {0}")]
    MissingJurisdiction(&'static str),
    #[error("token names a {0} the jurisdiction directory does not hold")]
    UnknownJurisdiction(&'static str),
}

/// When the caller's token expires (its `exp` claim), as the interceptor put it into the
/// request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenExpiry(pub DateTime<Utc>);

/// When the token of the request's caller expires; `None` when the interceptor did not run.
pub fn token_expiry<T>(request: &Request<T>) -> Option<DateTime<Utc>> {
    request.extensions().get::<TokenExpiry>().map(|expiry| expiry.0)
}

/// The caller the interceptor put into the request.
pub fn caller<T>(request: &Request<T>) -> Result<Caller, ServiceError> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| ServiceError::Unauthenticated("no authenticated caller".into()))
}

/// A request carrying `token` as its bearer token: how one service calls another (and the
/// tests and the demo call the services).
pub fn authorized<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    fn officer() -> Caller {
        Caller::new("officer-1", Role::Officer, Some("620702001"), Some("620702"))
    }

    #[test]
    fn jurisdiction_rules_per_role() {
        let officer = officer();
        assert!(officer.can_access("620702001", "620702"));
        assert!(!officer.can_access("620702002", "620702"));
        let bureau = Caller {
            role: Role::CountyBureau,
            township: None,
            ..officer.clone()
        };
        assert!(bureau.can_access("620702002", "620702"));
        assert!(!bureau.can_access("620721001", "620721"));
        let prison = Caller {
            role: Role::Prison,
            prison: Some("p1".into()),
            ..officer.clone()
        };
        assert!(!prison.can_access("620702001", "620702"));
        let admin = Caller {
            role: Role::Admin,
            township: None,
            county: None,
            ..officer
        };
        assert!(admin.can_access("620721001", "620721"));
    }
}
