//! Caller identity: HS256-signed bearer tokens (JWT) carrying a role and a jurisdiction,
//! verified on every RPC by a tonic interceptor that puts the [`Caller`] into the request's
//! extensions. Handlers then ask the caller whether it may touch a given jurisdiction.

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tonic::{Request, Status};

use crate::error::ServiceError;

/// Issuer written into and required from every token.
pub const ISSUER: &str = "community-corrections-mesh";

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

/// The token's claims.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: the user or organisation id.
    pub sub: String,
    pub role: Role,
    /// Township code, for officers and township offices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub township: Option<String>,
    /// County code, for county bureaus (and the county of a township).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub county: Option<String>,
    /// Prison id, for prisons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prison: Option<String>,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
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
    #[error("token lacks the jurisdiction its role needs: {0}")]
    MissingJurisdiction(&'static str),
    #[error("token names a {0} the jurisdiction directory does not hold")]
    UnknownJurisdiction(&'static str),
}

/// Whether the claims name the jurisdiction their role needs, and one that exists: an empty
/// code is no code (a blank township once passed and read a whole county), and a code the
/// directory does not hold, or a county other than its township's, is refused rather than
/// compared against records.
fn check_jurisdiction(claims: &Claims) -> Result<(), TokenError> {
    let present = |value: &Option<String>| {
        value
            .as_deref()
            .filter(|code| !code.trim().is_empty())
            .map(str::to_owned)
    };
    let directory = crate::jurisdiction::Directory::get();
    match claims.role {
        Role::Officer | Role::TownshipOffice => {
            let code = present(&claims.township).ok_or(TokenError::MissingJurisdiction("township"))?;
            let township = directory
                .township(&code)
                .ok_or(TokenError::UnknownJurisdiction("township"))?;
            if present(&claims.county).is_some_and(|county| county != township.county_code) {
                return Err(TokenError::UnknownJurisdiction("county"));
            }
        }
        Role::CountyBureau => {
            let code = present(&claims.county).ok_or(TokenError::MissingJurisdiction("county"))?;
            directory
                .county(&code)
                .ok_or(TokenError::UnknownJurisdiction("county"))?;
        }
        Role::Prison => {
            present(&claims.prison).ok_or(TokenError::MissingJurisdiction("prison"))?;
        }
        Role::Admin | Role::System => {}
    }
    Ok(())
}

/// Signs and verifies tokens with one shared secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(hidden)")
    }
}

impl TokenKeys {
    pub fn new(secret: &SecretString) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 30;
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
        }
    }

    /// Issues a token for `caller` valid until `expires_at`.
    pub fn mint(&self, caller: &Caller, issued_at: DateTime<Utc>, expires_at: DateTime<Utc>) -> String {
        let claims = Claims {
            sub: caller.subject.clone(),
            role: caller.role,
            township: caller.township.clone(),
            county: caller.county.clone(),
            prison: caller.prison.clone(),
            iss: ISSUER.to_owned(),
            iat: issued_at.timestamp(),
            exp: expires_at.timestamp(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of serialisable claims cannot fail")
    }

    /// Verifies a token and checks its role has the jurisdiction it needs.
    pub fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        self.verify_until(token).map(|(caller, _)| caller)
    }

    /// [`TokenKeys::verify`], with when the token expires (long-lived calls such as streams
    /// end then).
    pub fn verify_until(&self, token: &str) -> Result<(Caller, TokenExpiry), TokenError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?.claims;
        check_jurisdiction(&claims)?;
        let expiry = TokenExpiry(DateTime::from_timestamp(claims.exp, 0).unwrap_or(DateTime::<Utc>::MIN_UTC));
        let caller = Caller {
            subject: claims.sub,
            role: claims.role,
            township: claims.township,
            county: claims.county,
            prison: claims.prison,
        };
        Ok((caller, expiry))
    }

    /// A tonic interceptor that requires a valid bearer token on every call.
    pub fn interceptor(&self) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        let keys = self.clone();
        move |mut request: Request<()>| {
            let header = request
                .metadata()
                .get("authorization")
                .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
            let token = header
                .to_str()
                .ok()
                .and_then(|value| value.strip_prefix("Bearer "))
                .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))?;
            let (caller, expiry) = keys.verify_until(token.trim()).map_err(|error| {
                tracing::info!(error = %error, "rejected caller token");
                Status::unauthenticated("invalid or expired token")
            })?;
            request.extensions_mut().insert(caller);
            request.extensions_mut().insert(expiry);
            Ok(request)
        }
    }
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
    use chrono::Timelike;

    use super::*;

    fn keys(secret: &str) -> TokenKeys {
        TokenKeys::new(&SecretString::from(secret.to_owned()))
    }

    fn officer() -> Caller {
        Caller {
            subject: "officer-1".into(),
            role: Role::Officer,
            township: Some("620702001".into()),
            county: Some("620702".into()),
            prison: None,
        }
    }

    #[test]
    fn minted_token_verifies_to_the_same_caller() {
        let keys = keys("0123456789abcdef0123456789abcdef");
        let now = Utc::now();
        let token = keys.mint(&officer(), now, now + chrono::Duration::hours(1));
        assert_eq!(keys.verify(&token).expect("valid"), officer());
    }

    #[test]
    fn the_interceptor_records_when_the_token_expires() {
        let keys = keys("0123456789abcdef0123456789abcdef");
        let now = Utc::now();
        let expires = now + chrono::Duration::minutes(5);
        let token = keys.mint(&officer(), now, expires);
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
        let request = (keys.interceptor())(request).expect("accepted");
        assert_eq!(
            token_expiry(&request),
            Some(expires.with_nanosecond(0).expect("whole second"))
        );
        assert_eq!(caller(&request).expect("caller"), officer());
        assert_eq!(token_expiry(&Request::new(())), None);
    }

    #[test]
    fn wrong_secret_and_expired_tokens_are_refused() {
        let now = Utc::now();
        let token =
            keys("0123456789abcdef0123456789abcdef").mint(&officer(), now, now + chrono::Duration::hours(1));
        assert!(keys("another-secret-another-secret-xx").verify(&token).is_err());
        let old = keys("0123456789abcdef0123456789abcdef").mint(
            &officer(),
            now - chrono::Duration::hours(3),
            now - chrono::Duration::hours(2),
        );
        assert!(keys("0123456789abcdef0123456789abcdef").verify(&old).is_err());
    }

    #[test]
    fn role_without_its_jurisdiction_is_refused() {
        let keys = keys("0123456789abcdef0123456789abcdef");
        let now = Utc::now();
        let caller = Caller {
            township: None,
            ..officer()
        };
        let token = keys.mint(&caller, now, now + chrono::Duration::hours(1));
        assert!(matches!(
            keys.verify(&token),
            Err(TokenError::MissingJurisdiction("township"))
        ));
    }

    #[test]
    fn a_blank_or_unknown_jurisdiction_is_refused() {
        let keys = keys("0123456789abcdef0123456789abcdef");
        let now = Utc::now();
        let verify = |caller: Caller| keys.verify(&keys.mint(&caller, now, now + chrono::Duration::hours(1)));
        let blank = Caller {
            township: Some(" ".into()),
            ..officer()
        };
        assert!(matches!(
            verify(blank),
            Err(TokenError::MissingJurisdiction("township"))
        ));
        let unknown = Caller {
            township: Some("620702999".into()),
            ..officer()
        };
        assert!(matches!(
            verify(unknown),
            Err(TokenError::UnknownJurisdiction("township"))
        ));
        let other_county = Caller {
            county: Some("620721".into()),
            ..officer()
        };
        assert!(matches!(
            verify(other_county),
            Err(TokenError::UnknownJurisdiction("county"))
        ));
        let bureau = |county: &str| Caller {
            role: Role::CountyBureau,
            township: None,
            county: Some(county.into()),
            ..officer()
        };
        assert!(matches!(
            verify(bureau("")),
            Err(TokenError::MissingJurisdiction("county"))
        ));
        assert!(matches!(
            verify(bureau("999999")),
            Err(TokenError::UnknownJurisdiction("county"))
        ));
        assert!(verify(bureau("620721")).is_ok());
        assert!(verify(officer()).is_ok());
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
