//! A ring of AES-256-GCM keys, each named by a key id: the current key seals, every key
//! opens, and each sealed value carries the id of the key that sealed it, so keys can be
//! rotated (a new key made current, old values re-sealed by [`crate::rotation`], the old
//! key removed) without a flag day.
//!
//! A sealed value is `header || nonce || ciphertext+tag`, the header being `"mkr"`, the
//! format version (1), the key id's length and the key id. The header is authenticated as
//! associated data together with the caller's context (the column or purpose), so neither
//! the key id nor the purpose can be swapped. Values sealed before key ids existed have no
//! header (`nonce || ciphertext+tag`, the context alone as associated data); they open
//! with the key named [`LEGACY_KID`].

use aes_gcm::{
    Aes256Gcm, Nonce,
    aead::{Aead, KeyInit, OsRng, Payload, rand_core::RngCore},
};
use secrecy::{ExposeSecret, SecretBox};

/// The key id of values sealed before key ids existed, and of the single key given the old
/// way (`MESH_FIELD_ENCRYPTION_KEY`).
pub const LEGACY_KID: &str = "legacy";

const MAGIC: &[u8; 3] = b"mkr";
const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
/// Longest key id: the header stays small beside every value.
pub const MAX_KID_LEN: usize = 32;

/// Why a sealed value did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// Sealed under a key the ring does not hold (removed too early, or another service's).
    #[error("sealed under key id {0:?}, which this key ring does not hold")]
    UnknownKey(String),
    /// The key is known but the value does not authenticate: a wrong key of the same id,
    /// another purpose's value, or tampered bytes.
    #[error("sealed value could not be decrypted (wrong key, other purpose or corrupted data)")]
    Undecryptable,
}

/// What is wrong with the keys a ring was given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    #[error("no key given")]
    Empty,
    #[error("key id {0:?} must be 1 to 32 letters, digits, '.', '_' or '-'")]
    BadKeyId(String),
    #[error("key id {0:?} is given twice")]
    DuplicateId(String),
    #[error("key ids {0:?} and {1:?} hold the same key (one key per id)")]
    SameKey(String, String),
    #[error("{0:?} is not one of the key ids given ({1})")]
    NoSuchCurrent(String, String),
}

struct Key {
    id: String,
    secret: SecretBox<[u8; 32]>,
    cipher: Aes256Gcm,
}

impl Key {
    fn new(id: String, secret: SecretBox<[u8; 32]>) -> Self {
        let cipher = Aes256Gcm::new(secret.expose_secret().into());
        Self { id, secret, cipher }
    }
}

/// Keys newest first; one of them is current.
pub struct KeyRing {
    keys: Vec<Key>,
    current: usize,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KeyRing(ids {:?}, current {:?}, keys hidden)",
            self.ids(),
            self.current_id()
        )
    }
}

/// Whether `id` may name a key: it is written into every sealed value and into logs.
pub fn valid_kid(id: &str) -> bool {
    (1..=MAX_KID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl KeyRing {
    /// A ring of `keys` (id and key, newest first) sealing with `current`.
    pub fn new(keys: Vec<(String, SecretBox<[u8; 32]>)>, current: &str) -> Result<Self, RingError> {
        if keys.is_empty() {
            return Err(RingError::Empty);
        }
        let mut ring: Vec<Key> = Vec::with_capacity(keys.len());
        for (id, secret) in keys {
            if !valid_kid(&id) {
                return Err(RingError::BadKeyId(id));
            }
            if let Some(other) = ring.iter().find(|key| key.id == id) {
                return Err(RingError::DuplicateId(other.id.clone()));
            }
            if let Some(other) = ring
                .iter()
                .find(|key| key.secret.expose_secret() == secret.expose_secret())
            {
                return Err(RingError::SameKey(other.id.clone(), id));
            }
            ring.push(Key::new(id, secret));
        }
        let Some(current) = ring.iter().position(|key| key.id == current) else {
            let ids = ring
                .iter()
                .map(|key| key.id.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(RingError::NoSuchCurrent(current.to_owned(), ids));
        };
        Ok(Self { keys: ring, current })
    }

    /// A ring of one key named [`LEGACY_KID`]: the single key of the old configuration,
    /// which also opens values sealed before key ids existed.
    pub fn single(key: SecretBox<[u8; 32]>) -> Self {
        Self {
            keys: vec![Key::new(LEGACY_KID.to_owned(), key)],
            current: 0,
        }
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.keys[self.current].id
    }

    /// Every key id, newest first.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|key| key.id.as_str()).collect()
    }

    /// The current key's id and those listed before it (newer keys being introduced): values
    /// under them stay as they are; values under the others are re-sealed.
    pub fn settled_ids(&self) -> Vec<String> {
        self.keys[..=self.current]
            .iter()
            .map(|key| key.id.clone())
            .collect()
    }

    /// Whether `secret` is one of the ring's keys (one key must never serve two purposes).
    pub fn holds(&self, secret: &[u8; 32]) -> bool {
        self.keys.iter().any(|key| key.secret.expose_secret() == secret)
    }

    /// Whether the two rings share a key.
    pub fn shares_a_key_with(&self, other: &KeyRing) -> bool {
        self.keys
            .iter()
            .any(|key| other.holds(key.secret.expose_secret()))
    }

    /// Seals `plain` under the current key, bound to `context` (a column or purpose).
    pub fn seal(&self, plain: &[u8], context: &str) -> Vec<u8> {
        let key = &self.keys[self.current];
        let mut header = Vec::with_capacity(MAGIC.len() + 2 + key.id.len());
        header.extend_from_slice(MAGIC);
        header.push(VERSION);
        // The id is at most MAX_KID_LEN bytes (checked when the ring was made).
        header.push(u8::try_from(key.id.len()).unwrap_or(u8::MAX));
        header.extend_from_slice(key.id.as_bytes());
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let aad = associated_data(&header, context);
        // AES-GCM fails only beyond 64 GiB of plaintext; no field comes near.
        let sealed = key
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let mut out = header;
        out.reserve(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a value sealed by [`KeyRing::seal`] (under any key of the ring) with the same
    /// context, or one sealed before key ids existed (with the [`LEGACY_KID`] key).
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, OpenError> {
        if let Some((id, header_len)) = header(sealed) {
            let opened = match self.key(id) {
                Some(key) => decrypt(
                    key,
                    &sealed[header_len..],
                    &associated_data(&sealed[..header_len], context),
                ),
                None => Err(OpenError::UnknownKey(id.to_owned())),
            };
            // A value without a header starts with a random nonce, which may look like a
            // header by chance (about one in 2^32); the legacy key settles it.
            return match (opened, self.key(LEGACY_KID)) {
                (Err(error), Some(legacy)) => decrypt(legacy, sealed, context.as_bytes()).map_err(|_| error),
                (opened, _) => opened,
            };
        }
        match self.key(LEGACY_KID) {
            Some(legacy) => decrypt(legacy, sealed, context.as_bytes()),
            None => Err(OpenError::UnknownKey(LEGACY_KID.to_owned())),
        }
    }

    fn key(&self, id: &str) -> Option<&Key> {
        self.keys.iter().find(|key| key.id == id)
    }
}

/// The id of the key `sealed` names in its header, or [`LEGACY_KID`] when it has none.
pub fn key_id_of(sealed: &[u8]) -> &str {
    header(sealed).map_or(LEGACY_KID, |(id, _)| id)
}

/// The key id and the header's length, when `sealed` starts with a well-formed header.
fn header(sealed: &[u8]) -> Option<(&str, usize)> {
    let rest = sealed.strip_prefix(MAGIC.as_slice())?;
    let (&[version, len], rest) = rest.split_first_chunk::<2>()?;
    let id = rest.get(..usize::from(len))?;
    let id = std::str::from_utf8(id)
        .ok()
        .filter(|id| version == VERSION && valid_kid(id))?;
    Some((id, MAGIC.len() + 2 + id.len()))
}

fn associated_data(header: &[u8], context: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + context.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(context.as_bytes());
    aad
}

fn decrypt(key: &Key, body: &[u8], aad: &[u8]) -> Result<Vec<u8>, OpenError> {
    if body.len() < NONCE_LEN {
        return Err(OpenError::Undecryptable);
    }
    let (nonce, ciphertext) = body.split_at(NONCE_LEN);
    key.cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad })
        .map_err(|_| OpenError::Undecryptable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SecretBox<[u8; 32]> {
        SecretBox::new(Box::new([seed; 32]))
    }

    fn ring(keys: &[(&str, u8)], current: &str) -> KeyRing {
        let keys = keys
            .iter()
            .map(|(id, seed)| ((*id).to_owned(), key(*seed)))
            .collect();
        KeyRing::new(keys, current).expect("valid ring")
    }

    /// What `FieldCrypto` wrote before key ids: nonce || ciphertext, context as AAD.
    fn sealed_the_old_way(seed: u8, plain: &[u8], context: &str) -> Vec<u8> {
        let cipher = Aes256Gcm::new(key(seed).expose_secret().into());
        let nonce = [9u8; NONCE_LEN];
        let mut out = nonce.to_vec();
        out.extend(
            cipher
                .encrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: plain,
                        aad: context.as_bytes(),
                    },
                )
                .expect("sealed"),
        );
        out
    }

    #[test]
    fn the_current_key_seals_and_its_id_travels_with_the_value() {
        let old = ring(&[("k1", 1)], "k1");
        let rotated = ring(&[("k2", 2), ("k1", 1)], "k2");
        let under_k1 = old.seal(b"11010519491231002X", "national_id");
        assert_eq!(key_id_of(&under_k1), "k1");
        assert!(!under_k1.windows(18).any(|w| w == b"11010519491231002X"));
        let under_k2 = rotated.seal(b"11010519491231002X", "national_id");
        assert_eq!(key_id_of(&under_k2), "k2");
        // The new ring opens both; the old one cannot open what the new key sealed.
        assert_eq!(
            rotated.open(&under_k1, "national_id").expect("k1"),
            b"11010519491231002X"
        );
        assert_eq!(
            rotated.open(&under_k2, "national_id").expect("k2"),
            b"11010519491231002X"
        );
        assert_eq!(
            old.open(&under_k2, "national_id"),
            Err(OpenError::UnknownKey("k2".into()))
        );
        // Random nonces: the same value twice seals differently.
        assert_ne!(under_k2, rotated.seal(b"11010519491231002X", "national_id"));
    }

    #[test]
    fn wrong_key_purpose_key_id_or_tampering_fail_cleanly() {
        let ring_a = ring(&[("k1", 1)], "k1");
        let sealed = ring_a.seal(b"secret", "phone");
        // Another service's ring with the same key id but another key.
        assert_eq!(
            ring(&[("k1", 3)], "k1").open(&sealed, "phone"),
            Err(OpenError::Undecryptable)
        );
        assert_eq!(ring_a.open(&sealed, "address"), Err(OpenError::Undecryptable));
        // The key id is authenticated: naming another key of the ring does not open it.
        let both = ring(&[("k2", 1), ("k1", 2)], "k2");
        let mut renamed = both.seal(b"secret", "phone");
        renamed[6] = b'1';
        assert_eq!(key_id_of(&renamed), "k1");
        assert_eq!(both.open(&renamed, "phone"), Err(OpenError::Undecryptable));
        for at in [0, 4, 8, sealed.len() - 1] {
            let mut tampered = sealed.clone();
            tampered[at] ^= 1;
            assert!(ring_a.open(&tampered, "phone").is_err(), "byte {at}");
        }
        for short in [&[][..], &[1, 2, 3], &sealed[..10]] {
            assert!(ring_a.open(short, "phone").is_err());
        }
    }

    #[test]
    fn values_sealed_before_key_ids_open_with_the_legacy_key() {
        let old = sealed_the_old_way(1, b"13912345678", "supervisees.phone");
        assert_eq!(key_id_of(&old), LEGACY_KID);
        let single = KeyRing::single(key(1));
        assert_eq!(single.current_id(), LEGACY_KID);
        assert_eq!(
            single.open(&old, "supervisees.phone").expect("opens"),
            b"13912345678"
        );
        // New values from the single key carry a header naming it.
        let new = single.seal(b"13912345678", "supervisees.phone");
        assert_eq!(key_id_of(&new), LEGACY_KID);
        assert_eq!(
            single.open(&new, "supervisees.phone").expect("opens"),
            b"13912345678"
        );
        // A ring listing the old key as `legacy` still opens them; one without it cannot.
        let rotated = ring(&[("k2", 2), (LEGACY_KID, 1)], "k2");
        assert_eq!(
            rotated.open(&old, "supervisees.phone").expect("opens"),
            b"13912345678"
        );
        assert_eq!(
            ring(&[("k2", 2)], "k2").open(&old, "supervisees.phone"),
            Err(OpenError::UnknownKey(LEGACY_KID.into()))
        );
    }

    #[test]
    fn settled_ids_are_the_current_key_and_newer_ones() {
        assert_eq!(
            ring(&[("k3", 3), ("k2", 2), ("k1", 1)], "k2").settled_ids(),
            ["k3", "k2"]
        );
        assert_eq!(ring(&[("k2", 2), ("k1", 1)], "k2").settled_ids(), ["k2"]);
    }

    #[test]
    fn a_ring_refuses_bad_ids_duplicates_shared_keys_and_an_absent_current() {
        let make = |keys: &[(&str, u8)], current: &str| {
            let keys = keys
                .iter()
                .map(|(id, seed)| ((*id).to_owned(), key(*seed)))
                .collect();
            KeyRing::new(keys, current).err()
        };
        assert_eq!(make(&[], "k1"), Some(RingError::Empty));
        assert_eq!(
            make(&[("k 1", 1)], "k 1"),
            Some(RingError::BadKeyId("k 1".into()))
        );
        assert_eq!(
            make(&[(&"k".repeat(33), 1)], "k"),
            Some(RingError::BadKeyId("k".repeat(33)))
        );
        assert_eq!(
            make(&[("k1", 1), ("k1", 2)], "k1"),
            Some(RingError::DuplicateId("k1".into()))
        );
        assert_eq!(
            make(&[("k1", 1), ("k2", 1)], "k1"),
            Some(RingError::SameKey("k1".into(), "k2".into()))
        );
        assert_eq!(
            make(&[("k2", 2), ("k1", 1)], "k3"),
            Some(RingError::NoSuchCurrent("k3".into(), "k2, k1".into()))
        );
    }
}
