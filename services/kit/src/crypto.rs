//! Field encryption at rest (AES-256-GCM) and keyed blind indexes (HMAC-SHA256) for
//! personal data such as national ID numbers: the database holds ciphertext plus a keyed
//! hash for equality lookups, never the plain value.

use aes_gcm::{
    Aes256Gcm, Nonce,
    aead::{Aead, KeyInit, OsRng, rand_core::RngCore},
};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;

const NONCE_LEN: usize = 12;

/// Could not decrypt a stored value (wrong key or tampered data).
#[derive(Debug, thiserror::Error)]
#[error("stored value could not be decrypted (wrong key or corrupted data)")]
pub struct DecryptError;

/// Encrypts and indexes sensitive fields with two independent keys.
pub struct FieldCrypto {
    cipher: Aes256Gcm,
    index_key: SecretBox<[u8; 32]>,
}

impl std::fmt::Debug for FieldCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FieldCrypto(keys hidden)")
    }
}

impl FieldCrypto {
    pub fn new(encryption_key: &SecretBox<[u8; 32]>, index_key: SecretBox<[u8; 32]>) -> Self {
        let cipher = Aes256Gcm::new(encryption_key.expose_secret().into());
        Self { cipher, index_key }
    }

    /// Encrypts `plain`; the output is `nonce || ciphertext+tag`. `context` (for example the
    /// column name) is bound as associated data so a value cannot be moved to another column.
    pub fn seal(&self, plain: &str, context: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let payload = aes_gcm::aead::Payload {
            msg: plain.as_bytes(),
            aad: context.as_bytes(),
        };
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts the output of [`FieldCrypto::seal`] with the same context.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<String, DecryptError> {
        if sealed.len() < NONCE_LEN {
            return Err(DecryptError);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let payload = aes_gcm::aead::Payload {
            msg: ciphertext,
            aad: context.as_bytes(),
        };
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| DecryptError)?;
        String::from_utf8(plain).map_err(|_| DecryptError)
    }

    /// Keyed, deterministic hash of `value` for equality lookups without storing the value.
    pub fn blind_index(&self, value: &str, context: &str) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.index_key.expose_secret())
            .expect("HMAC accepts keys of any length");
        mac.update(context.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crypto(seed: u8) -> FieldCrypto {
        FieldCrypto::new(
            &SecretBox::new(Box::new([seed; 32])),
            SecretBox::new(Box::new([seed + 1; 32])),
        )
    }

    #[test]
    fn seal_round_trips_and_hides_the_value() {
        let crypto = crypto(1);
        let sealed = crypto.seal("11010519491231002X", "national_id");
        assert!(!sealed.windows(18).any(|w| w == b"11010519491231002X"));
        assert_eq!(
            crypto.open(&sealed, "national_id").expect("opens"),
            "11010519491231002X"
        );
        // Same value twice gives different ciphertexts (random nonce).
        assert_ne!(sealed, crypto.seal("11010519491231002X", "national_id"));
    }

    #[test]
    fn wrong_key_context_or_tampering_fail() {
        let sealed = crypto(1).seal("secret", "phone");
        assert!(crypto(3).open(&sealed, "phone").is_err());
        assert!(crypto(1).open(&sealed, "address").is_err());
        let mut tampered = sealed.clone();
        tampered[NONCE_LEN] ^= 1;
        assert!(crypto(1).open(&tampered, "phone").is_err());
        assert!(crypto(1).open(&[1, 2, 3], "phone").is_err());
    }

    #[test]
    fn blind_index_is_deterministic_and_keyed() {
        let a = crypto(1).blind_index("11010519491231002X", "national_id");
        assert_eq!(a, crypto(1).blind_index("11010519491231002X", "national_id"));
        assert_ne!(a, crypto(3).blind_index("11010519491231002X", "national_id"));
        assert_ne!(a, crypto(1).blind_index("11010519491231002X", "other"));
        assert_eq!(a.len(), 32);
    }
}
