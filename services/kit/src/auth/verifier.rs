//! Verifying tokens on every call: the signature against the key its `kid` names, the
//! issuer, roles and audiences that key is trusted for, this service as an audience, a
//! lifetime no longer than allowed, and a jurisdiction the directory holds. The key set is
//! re-read in the background, so keys are added and retired without a restart.

use std::{
    path::PathBuf,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use chrono::DateTime;
use jsonwebtoken::{Algorithm, Validation};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status};

use super::{
    Caller, TokenError, TokenExpiry,
    claims::{Claims, check_jurisdiction},
    keyset::KeySet,
};

/// Clock skew tolerated between issuer and verifier, in seconds.
const LEEWAY_SECS: u64 = 30;
/// However many unknown key ids arrive, the key set is re-read at most this often.
const MIN_RELOAD_GAP: Duration = Duration::from_secs(1);
/// How long fetching a key set over HTTP may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the trusted key set is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A JWKS file (mounted from a secret store in production).
    File(PathBuf),
    /// A JWKS URL (the identity provider's `jwks_uri`).
    Url(String),
}

impl KeySource {
    /// Reads and parses the key set.
    pub async fn load(&self) -> Result<KeySet, String> {
        let text = match self {
            KeySource::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|error| format!("cannot read {}: {error}", path.display()))?,
            KeySource::Url(url) => fetch(url).await?,
        };
        KeySet::parse(&text)
    }
}

async fn fetch(url: &str) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .build()
        .map_err(|error| format!("cannot build an HTTP client: {error}"))?;
    let response = client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|error| format!("cannot fetch {url}: {error}"))?;
    response
        .text()
        .await
        .map_err(|error| format!("cannot read {url}: {error}"))
}

/// Verifies the tokens presented to one service.
#[derive(Clone)]
pub struct TokenVerifier {
    audience: String,
    max_lifetime_secs: i64,
    keys: Arc<RwLock<Arc<KeySet>>>,
    /// Woken when a token names a key this set lacks: it may just have been added.
    stale: Arc<Notify>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier for tokens presented to `audience` (the service's name), trusting `keys`
    /// and refusing tokens that live longer than `max_lifetime`.
    pub fn new(audience: &str, keys: KeySet, max_lifetime: Duration) -> Self {
        Self {
            audience: audience.to_owned(),
            max_lifetime_secs: i64::try_from(max_lifetime.as_secs()).unwrap_or(i64::MAX),
            keys: Arc::new(RwLock::new(Arc::new(keys))),
            stale: Arc::new(Notify::new()),
        }
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Trusts `keys` from now on, instead of the set before.
    pub fn replace(&self, keys: KeySet) {
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
    }

    /// Verifies a token and checks its role has the jurisdiction it needs.
    pub fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        self.verify_until(token).map(|(caller, _)| caller)
    }

    /// [`TokenVerifier::verify`], with when the token expires (long-lived calls such as
    /// streams end then).
    pub fn verify_until(&self, token: &str) -> Result<(Caller, TokenExpiry), TokenError> {
        let header = jsonwebtoken::decode_header(token)?;
        // The algorithm is fixed, never taken from the token: an HS256 token "signed" with a
        // public key must not pass.
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Algorithm);
        }
        let kid = header.kid.ok_or(TokenError::NoKeyId)?;
        let keys = self.current();
        let Some(key) = keys.get(&kid) else {
            self.stale.notify_one();
            return Err(TokenError::UnknownKey);
        };
        if !key.audiences.contains(&self.audience) {
            return Err(TokenError::NotForThisService);
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&key.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        validation.leeway = LEEWAY_SECS;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)?.claims;
        if !key.roles.contains(&claims.role) {
            return Err(TokenError::RoleNotVouched(claims.role.as_str()));
        }
        if claims.exp.saturating_sub(claims.iat) > self.max_lifetime_secs {
            return Err(TokenError::TooLong);
        }
        check_jurisdiction(&claims)?;
        let expiry =
            TokenExpiry(DateTime::from_timestamp(claims.exp, 0).unwrap_or(DateTime::<chrono::Utc>::MIN_UTC));
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
        let verifier = self.clone();
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
            let (caller, expiry) = verifier.verify_until(token.trim()).map_err(|error| {
                tracing::info!(error = %error, "rejected caller token");
                Status::unauthenticated("invalid or expired token")
            })?;
            request.extensions_mut().insert(caller);
            request.extensions_mut().insert(expiry);
            Ok(request)
        }
    }

    /// Re-reads the key set from `source` every `every`, and soon after a token names an
    /// unknown key, until `shutdown`. A set that cannot be read or parsed is logged and the
    /// one in use kept: a broken deployment of the key file must not lock everyone out.
    pub async fn keep_fresh(self, source: KeySource, every: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
                _ = self.stale.notified() => {}
            }
            match source.load().await {
                Ok(keys) => {
                    let before = self.current().kids().join(",");
                    let after = keys.kids().join(",");
                    if before != after {
                        tracing::info!(before, after, "trusted token keys changed");
                    }
                    self.replace(keys);
                }
                Err(problem) => tracing::warn!(
                    problem,
                    "cannot reload the token key set; keeping the keys in use"
                ),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(MIN_RELOAD_GAP) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Timelike, Utc};

    use super::*;
    use crate::auth::{
        IDP_ISSUER, Role, TokenIssuer, caller,
        keygen::{GeneratedKey, PEOPLE_ROLES, SERVICES, jwks},
        service_issuer, token_expiry,
    };

    fn idp() -> GeneratedKey {
        GeneratedKey::generate("idp", IDP_ISSUER, &PEOPLE_ROLES, &SERVICES)
    }

    fn verifier(service: &str, keys: &[&GeneratedKey]) -> TokenVerifier {
        let set = KeySet::parse(&jwks(keys.iter().copied())).expect("generated keys parse");
        TokenVerifier::new(service, set, Duration::from_secs(12 * 3600))
    }

    fn officer() -> Caller {
        Caller::new("officer-1", Role::Officer, Some("620702001"), Some("620702"))
    }

    fn mint(issuer: &TokenIssuer, caller: &Caller, audiences: &[&str]) -> String {
        let now = Utc::now();
        issuer.mint(caller, audiences, now, now + chrono::Duration::hours(1))
    }

    #[test]
    fn a_minted_token_verifies_to_the_same_caller_with_its_expiry() {
        let idp = idp();
        let verifier = verifier("registry", &[&idp]);
        let now = Utc::now();
        let expires = now + chrono::Duration::minutes(5);
        let token = idp.issuer().mint(&officer(), &["registry"], now, expires);
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
        let request = (verifier.interceptor())(request).expect("accepted");
        assert_eq!(caller(&request).expect("caller"), officer());
        assert_eq!(
            token_expiry(&request),
            Some(expires.with_nanosecond(0).expect("whole second"))
        );
    }

    #[test]
    fn a_token_is_accepted_only_by_the_services_it_names() {
        let idp = idp();
        let token = mint(&idp.issuer(), &officer(), &["checkin"]);
        assert!(verifier("checkin", &[&idp]).verify(&token).is_ok());
        assert!(matches!(
            verifier("registry", &[&idp]).verify(&token),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn a_service_key_mints_only_what_the_key_set_trusts_it_for() {
        let idp = idp();
        let risk_alert = GeneratedKey::generate(
            "risk-alert",
            &service_issuer("risk-alert"),
            &[Role::System],
            &["registry", "handover"],
        );
        let registry = verifier("registry", &[&idp, &risk_alert]);
        let system = Caller::new("risk-alert", Role::System, None, None);
        assert!(
            registry
                .verify(&mint(&risk_alert.issuer(), &system, &["registry"]))
                .is_ok()
        );
        let admin = Caller::new("risk-alert", Role::Admin, None, None);
        assert!(matches!(
            registry.verify(&mint(&risk_alert.issuer(), &admin, &["registry"])),
            Err(TokenError::RoleNotVouched("admin"))
        ));
        // Its key is not trusted towards placement, whatever the token says.
        let placement = verifier("placement", &[&idp, &risk_alert]);
        assert!(matches!(
            placement.verify(&mint(&risk_alert.issuer(), &system, &["placement"])),
            Err(TokenError::NotForThisService)
        ));
        // The people's key does not vouch for services.
        assert!(matches!(
            registry.verify(&mint(&idp.issuer(), &system, &["registry"])),
            Err(TokenError::RoleNotVouched("system"))
        ));
    }

    #[test]
    fn forged_expired_long_lived_and_foreign_algorithm_tokens_are_refused() {
        let idp = idp();
        let registry = verifier("registry", &[&idp]);
        // Signed by another key under the trusted key's id.
        let impostor = TokenIssuer::from_pem(
            GeneratedKey::generate("x", IDP_ISSUER, &PEOPLE_ROLES, &SERVICES)
                .private_pem
                .as_bytes(),
            &idp.kid,
            IDP_ISSUER,
        )
        .expect("key");
        assert!(matches!(
            registry.verify(&mint(&impostor, &officer(), &["registry"])),
            Err(TokenError::Invalid(_))
        ));
        let now = Utc::now();
        let expired = idp.issuer().mint(
            &officer(),
            &["registry"],
            now - chrono::Duration::hours(3),
            now - chrono::Duration::hours(2),
        );
        assert!(registry.verify(&expired).is_err());
        let long = idp
            .issuer()
            .mint(&officer(), &["registry"], now, now + chrono::Duration::days(2));
        assert!(matches!(registry.verify(&long), Err(TokenError::TooLong)));
        // HS256 with the public key as the secret: the classic algorithm confusion.
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.kid = Some(idp.kid.clone());
        let claims = serde_json::json!({
            "sub": "x", "role": "admin", "iss": IDP_ISSUER, "aud": ["registry"],
            "iat": now.timestamp(), "exp": (now + chrono::Duration::hours(1)).timestamp(),
        });
        let hs = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(idp.jwk()["x"].as_str().expect("x").as_bytes()),
        )
        .expect("encode");
        assert!(matches!(registry.verify(&hs), Err(TokenError::Algorithm)));
    }

    #[test]
    fn a_token_of_an_unknown_key_passes_once_the_set_trusts_it() {
        let (old, new) = (idp(), idp());
        let registry = verifier("registry", &[&old]);
        let token = mint(&new.issuer(), &officer(), &["registry"]);
        assert!(matches!(registry.verify(&token), Err(TokenError::UnknownKey)));
        registry.replace(KeySet::parse(&jwks([&old, &new])).expect("parse"));
        assert!(registry.verify(&token).is_ok());
        registry.replace(KeySet::parse(&jwks([&new])).expect("parse"));
        assert!(matches!(
            registry.verify(&mint(&old.issuer(), &officer(), &["registry"])),
            Err(TokenError::UnknownKey)
        ));
    }

    #[test]
    fn a_blank_or_unknown_jurisdiction_is_refused() {
        let idp = idp();
        let registry = verifier("registry", &[&idp]);
        let verify = |caller: Caller| registry.verify(&mint(&idp.issuer(), &caller, &["registry"]));
        let blank = Caller {
            township: Some(" ".into()),
            ..officer()
        };
        assert!(matches!(
            verify(blank),
            Err(TokenError::MissingJurisdiction("township"))
        ));
        let none = Caller {
            township: None,
            ..officer()
        };
        assert!(matches!(
            verify(none),
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
        let bureau = |county: &str| Caller::new("b", Role::CountyBureau, None, Some(county));
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

    #[tokio::test]
    async fn a_key_added_to_the_file_is_trusted_without_a_restart() {
        let (old, new) = (idp(), idp());
        let path = std::env::temp_dir().join(format!("mesh-jwks-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&path, jwks([&old])).expect("write");
        let source = KeySource::File(path.clone());
        let registry = TokenVerifier::new(
            "registry",
            source.load().await.expect("load"),
            Duration::from_secs(3600),
        );
        let shutdown = CancellationToken::new();
        // An hour between scheduled reloads: only the unknown key can prompt this one.
        let refresher = tokio::spawn(registry.clone().keep_fresh(
            source,
            Duration::from_secs(3600),
            shutdown.clone(),
        ));
        std::fs::write(&path, jwks([&old, &new])).expect("rotate");
        let token = mint(&new.issuer(), &officer(), &["registry"]);
        let accepted = tokio::time::timeout(Duration::from_secs(10), async {
            while registry.verify(&token).is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        shutdown.cancel();
        refresher.await.expect("refresher");
        std::fs::remove_file(&path).ok();
        assert!(accepted.is_ok(), "the added key was never trusted");
    }
}
