//! `mesh keys generate` and `mesh token`: a deployment's signing keys and the key set that
//! trusts them, and development tokens signed with the identity provider's key.

use std::{
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::Context;
use chrono::{Duration, Utc};
use mesh_kit::auth::{
    Caller, IDP_ISSUER, Role, TokenIssuer,
    keygen::{GeneratedKey, PEOPLE_ROLES, SERVICES, jwks},
    service_issuer,
};

/// The keys a deployment starts with: the identity provider's (people's tokens) and
/// risk-alert's (its reconciliation reads the registry and the handover service).
pub fn deployment_keys() -> [GeneratedKey; 2] {
    [
        GeneratedKey::generate("idp", IDP_ISSUER, &PEOPLE_ROLES, &SERVICES),
        GeneratedKey::generate(
            "risk-alert",
            &service_issuer("risk-alert"),
            &[Role::System],
            &["registry", "handover"],
        ),
    ]
}

/// Writes each key's private half to `<dir>/<kid>.pem` (readable by its owner only) and the
/// key set trusting them all to `<dir>/jwks.json`; returns what it wrote, for the operator.
pub fn generate(dir: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let keys = deployment_keys();
    let mut report = String::new();
    for key in &keys {
        let path = dir.join(format!("{}.pem", key.kid));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        file.write_all(key.private_pem.as_bytes())?;
        report.push_str(&format!(
            "{}  issuer {}  roles {}  audiences {}\n",
            path.display(),
            key.issuer,
            key.roles
                .iter()
                .map(|role| role.as_str())
                .collect::<Vec<_>>()
                .join(","),
            key.audiences.join(",")
        ));
    }
    let set = dir.join("jwks.json");
    std::fs::write(&set, jwks(&keys)).with_context(|| format!("cannot write {}", set.display()))?;
    report.push_str(&format!(
        "{}  the key set: give it to every service as MESH_JWKS_FILE\n",
        set.display()
    ));
    Ok(report)
}

/// A token request from the command line.
#[derive(Debug)]
pub struct TokenRequest {
    /// The identity provider's private key; its key id is the file's stem unless `kid`.
    pub key_file: PathBuf,
    pub kid: Option<String>,
    pub caller: Caller,
    /// Services the token may be presented to (empty: all of them).
    pub audiences: Vec<String>,
    pub hours: i64,
}

/// A development token signed with the identity provider's key.
pub fn token(request: &TokenRequest) -> anyhow::Result<String> {
    let pem = std::fs::read(&request.key_file)
        .with_context(|| format!("cannot read {}", request.key_file.display()))?;
    let kid = match &request.kid {
        Some(kid) => kid.clone(),
        None => request
            .key_file
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .context("--key-file names no file")?,
    };
    let issuer = TokenIssuer::from_pem(&pem, &kid, IDP_ISSUER).map_err(anyhow::Error::msg)?;
    let audiences: Vec<&str> = if request.audiences.is_empty() {
        SERVICES.to_vec()
    } else {
        request.audiences.iter().map(String::as_str).collect()
    };
    let now = Utc::now();
    Ok(issuer.mint(
        &request.caller,
        &audiences,
        now,
        now + Duration::hours(request.hours),
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration as StdDuration;

    use mesh_kit::auth::{KeySet, TokenVerifier};

    use super::*;

    #[test]
    fn generated_keys_sign_tokens_their_key_set_accepts() {
        let dir = std::env::temp_dir().join(format!("mesh-keys-test-{}", uuid::Uuid::new_v4()));
        generate(&dir).expect("generate");
        let set =
            KeySet::parse(&std::fs::read_to_string(dir.join("jwks.json")).expect("jwks")).expect("parse");
        let idp_file = std::fs::read_dir(&dir)
            .expect("dir")
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| {
                path.file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with("idp-"))
            })
            .expect("idp key");
        let caller = Caller::new("dev", Role::Officer, Some("620702001"), None);
        let request = TokenRequest {
            key_file: idp_file.clone(),
            kid: None,
            caller: caller.clone(),
            audiences: vec!["checkin".into()],
            hours: 8,
        };
        let minted = token(&request).expect("token");
        let lifetime = StdDuration::from_secs(12 * 3600);
        assert_eq!(
            TokenVerifier::new("checkin", set.clone(), lifetime)
                .verify(&minted)
                .expect("valid")
                .subject,
            "dev"
        );
        assert!(
            TokenVerifier::new("registry", set, lifetime)
                .verify(&minted)
                .is_err()
        );
        let mode = std::fs::metadata(&idp_file).expect("meta").permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        // A second run refuses to overwrite nothing it did not write: new kids, new files.
        assert!(generate(&dir).is_ok());
        std::fs::remove_dir_all(&dir).ok();
    }
}
