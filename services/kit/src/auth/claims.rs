//! What a token says about its bearer, and the check that the jurisdiction it names is one
//! the directory holds.

use serde::{Deserialize, Serialize};

use super::{Role, TokenError};

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
    /// The services the token may be presented to.
    pub aud: Vec<String>,
    pub iat: i64,
    pub exp: i64,
}

/// Whether the claims name the jurisdiction their role needs, and one that exists: an empty
/// code is no code (a blank township once passed and read a whole county), and a code the
/// directory does not hold, or a county other than its township's, is refused rather than
/// compared against records.
pub(super) fn check_jurisdiction(claims: &Claims) -> Result<(), TokenError> {
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
