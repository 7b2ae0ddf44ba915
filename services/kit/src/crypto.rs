//! Field encryption at rest (AES-256-GCM under a service's key ring, `keyring`) and keyed
//! blind indexes (HMAC-SHA256) for personal data such as national ID numbers: the database
//! holds ciphertext plus a keyed hash for equality lookups, never the plain value.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;

use crate::keyring::KeyRing;

/// Could not open a stored value: its key is not in the ring, or a wrong key, another
/// purpose or corrupted data.
pub use crate::keyring::OpenError as DecryptError;

/// Encrypts and indexes sensitive fields with independent keys: a service's own key ring
/// for the fields, one HMAC key for the blind index.
pub struct FieldCrypto {
    ring: Arc<KeyRing>,
    index_key: SecretBox<[u8; 32]>,
}

impl std::fmt::Debug for FieldCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FieldCrypto(keys hidden)")
    }
}

impl FieldCrypto {
    pub fn new(ring: Arc<KeyRing>, index_key: SecretBox<[u8; 32]>) -> Self {
        Self { ring, index_key }
    }

    /// The ring that seals and opens the fields (for re-sealing after a rotation).
    pub fn ring(&self) -> &Arc<KeyRing> {
        &self.ring
    }

    /// Encrypts `plain` under the ring's current key (see [`KeyRing::seal`] for the format).
    /// `context` (for example the column name) is bound as associated data so a value cannot
    /// be moved to another column or purpose.
    pub fn seal(&self, plain: &str, context: &str) -> Vec<u8> {
        self.ring.seal(plain.as_bytes(), context)
    }

    /// Decrypts the output of [`FieldCrypto::seal`] with the same context.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<String, DecryptError> {
        let plain = self.ring.open(sealed, context)?;
        String::from_utf8(plain).map_err(|_| DecryptError::Undecryptable)
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
            Arc::new(KeyRing::single(SecretBox::new(Box::new([seed; 32])))),
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
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
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
