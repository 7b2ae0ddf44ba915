//! The keys of personal data, read from the environment: each service's own key ring for
//! fields at rest (`MESH_FIELD_KEYS` with `MESH_FIELD_KEY_CURRENT`, or the single
//! `MESH_FIELD_ENCRYPTION_KEY` of old), the blind-index key (`MESH_BLIND_INDEX_KEY`), and the
//! ring handover and registry alone share for the report-in's personal fields
//! (`MESH_HANDOVER_TRANSIT_KEYS` with `MESH_HANDOVER_TRANSIT_KEY_CURRENT`). One key serves
//! one purpose: no key may appear in two of them.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretBox};

use super::{Reader, decode_key_32};
use crate::keyring::{KeyRing, RingError, valid_kid};

/// The variables one key ring is read from.
#[derive(Debug, Clone, Copy)]
pub struct RingVars {
    /// `id:base64-key` pairs, newest first, comma separated.
    pub keys: &'static str,
    /// The id of the key that seals.
    pub current: &'static str,
    /// The older single-key variable, read as a ring of one key named `legacy`.
    pub single: Option<&'static str>,
}

/// A service's ring for its own fields at rest.
pub const FIELD_RING: RingVars = RingVars {
    keys: "MESH_FIELD_KEYS",
    current: "MESH_FIELD_KEY_CURRENT",
    single: Some("MESH_FIELD_ENCRYPTION_KEY"),
};

/// The ring sealing the report-in's personal fields from handover to registry.
pub const HANDOVER_TRANSIT_RING: RingVars = RingVars {
    keys: "MESH_HANDOVER_TRANSIT_KEYS",
    current: "MESH_HANDOVER_TRANSIT_KEY_CURRENT",
    single: None,
};

/// Rows one re-sealing transaction takes by default: small, so the service's own writes
/// never wait long behind a rotation.
const DEFAULT_ROTATION_BATCH: usize = 100;
const MAX_ROTATION_BATCH: usize = 10_000;

/// The keys of a service's personal fields at rest: its key ring, the HMAC key of the
/// national-ID blind index, and how re-sealing after a rotation goes. The blind-index key
/// must differ from every ring key: an index keyed like the ciphertext would tie the two
/// together.
pub struct FieldKeys {
    pub ring: Arc<KeyRing>,
    pub blind_index: SecretBox<[u8; 32]>,
    /// Rows re-sealed per transaction after a rotation (`MESH_FIELD_KEY_ROTATION_BATCH`).
    pub rotation_batch: usize,
}

impl FieldKeys {
    /// Reads the ring, the blind-index key and the batch, recording every problem in `reader`.
    pub fn read(reader: &mut Reader<'_>) -> Option<Self> {
        let ring = read_ring(reader, &FIELD_RING);
        let blind_index = reader.key_32("MESH_BLIND_INDEX_KEY");
        let rotation_batch = reader.optional("MESH_FIELD_KEY_ROTATION_BATCH", DEFAULT_ROTATION_BATCH);
        if !(1..=MAX_ROTATION_BATCH).contains(&rotation_batch) {
            reader.problem(format!(
                "MESH_FIELD_KEY_ROTATION_BATCH must be 1 to {MAX_ROTATION_BATCH}, got {rotation_batch}"
            ));
        }
        if let (Some(ring), Some(index)) = (&ring, &blind_index)
            && ring.holds(index.expose_secret())
        {
            reader.problem(
                "MESH_BLIND_INDEX_KEY must differ from every field-encryption key \
                 (MESH_FIELD_KEYS or MESH_FIELD_ENCRYPTION_KEY)",
            );
        }
        Some(Self {
            ring: Arc::new(ring?),
            blind_index: blind_index?,
            rotation_batch,
        })
    }
}

/// Reads the handover → registry transit ring; none of its keys may be one of `field`'s.
pub fn read_transit(reader: &mut Reader<'_>, field: Option<&FieldKeys>) -> Option<Arc<KeyRing>> {
    let ring = read_ring(reader, &HANDOVER_TRANSIT_RING)?;
    if let Some(field) = field
        && (ring.shares_a_key_with(&field.ring) || ring.holds(field.blind_index.expose_secret()))
    {
        reader.problem(
            "MESH_HANDOVER_TRANSIT_KEYS must not hold a key of MESH_FIELD_KEYS, \
             MESH_FIELD_ENCRYPTION_KEY or MESH_BLIND_INDEX_KEY (one key, one purpose)",
        );
    }
    Some(Arc::new(ring))
}

/// Reads the ring `vars` name, recording every problem (each naming its variable, never a
/// key) in `reader`.
pub fn read_ring(reader: &mut Reader<'_>, vars: &RingVars) -> Option<KeyRing> {
    let listed = reader.raw(vars.keys);
    let single = vars.single.filter(|name| reader.raw(name).is_some());
    match (listed, single) {
        (Some(_), Some(single)) => {
            reader.problem(format!(
                "set {} or {single}, not both (to keep opening what {single} sealed, list it in {} as legacy:<key>)",
                vars.keys, vars.keys
            ));
            None
        }
        (None, Some(single)) => reader.key_32(single).map(KeyRing::single),
        (None, None) => {
            let or_single = vars
                .single
                .map(|single| format!("; or the single {single}"))
                .unwrap_or_default();
            reader.problem(format!(
                "{} is required (id:key pairs, newest first, comma separated, each key 32 bytes in base64{or_single})",
                vars.keys
            ));
            None
        }
        (Some(list), None) => {
            let current = reader.raw(vars.current);
            if current.is_none() {
                reader.problem(format!(
                    "{} is required with {} (the id of the key that seals)",
                    vars.current, vars.keys
                ));
            }
            let keys = entries(reader, vars.keys, &list)?;
            let current = current?;
            let current = current.trim();
            KeyRing::new(keys, current)
                .map_err(|error| match error {
                    RingError::NoSuchCurrent(_, ids) if valid_kid(current) => reader.problem(format!(
                        "{}={current:?} is not a key id of {} ({ids})",
                        vars.current, vars.keys
                    )),
                    RingError::NoSuchCurrent(..) => reader.problem(format!(
                        "{} is not a key id (1 to 32 letters, digits, '.', '_' or '-'; value not shown)",
                        vars.current
                    )),
                    other => reader.problem(format!("{}: {other}", vars.keys)),
                })
                .ok()
        }
    }
}

/// The `id:base64-key` pairs of `list`; a key id is shown in a problem only when it is a
/// valid one (a key pasted in its place must not reach a log).
fn entries(reader: &mut Reader<'_>, name: &str, list: &str) -> Option<Vec<(String, SecretBox<[u8; 32]>)>> {
    let mut keys = Vec::new();
    let mut complete = true;
    for (n, entry) in list.split(',').map(str::trim).enumerate() {
        let number = n + 1;
        let parsed = match entry.split_once(':') {
            None => Err(format!("{name}: entry {number} is not id:key (value not shown)")),
            Some((id, _)) if !valid_kid(id.trim()) => Err(format!(
                "{name}: entry {number} has no valid key id (1 to 32 letters, digits, '.', '_' or '-'; value not shown)"
            )),
            Some((id, key)) => decode_key_32(key)
                .map(|key| (id.trim().to_owned(), key))
                .map_err(|problem| format!("{name}: key {:?} {problem}", id.trim())),
        };
        match parsed {
            Ok(key) => keys.push(key),
            Err(problem) => {
                reader.problem(problem);
                complete = false;
            }
        }
    }
    complete.then_some(keys)
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;
    use crate::config::{ConfigError, Source};

    fn b64(seed: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([seed; 32])
    }

    fn source(pairs: &[(&str, String)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    fn field_keys(source: &dyn Source) -> Result<FieldKeys, ConfigError> {
        let mut reader = Reader::new(source);
        let keys = FieldKeys::read(&mut reader);
        reader.finish()?;
        Ok(keys.expect("no problems means every key was read"))
    }

    fn problems(source: &dyn Source) -> String {
        field_keys(source)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn a_ring_of_named_keys_seals_with_the_current_one() {
        let keys = field_keys(&source(&[
            ("MESH_FIELD_KEYS", format!("k2:{}, k1:{}", b64(2), b64(1))),
            ("MESH_FIELD_KEY_CURRENT", "k2".into()),
            ("MESH_BLIND_INDEX_KEY", b64(9)),
        ]))
        .expect("valid");
        assert_eq!(keys.ring.ids(), ["k2", "k1"]);
        assert_eq!(keys.ring.current_id(), "k2");
        assert_eq!(keys.rotation_batch, DEFAULT_ROTATION_BATCH);
    }

    #[test]
    fn the_single_key_of_old_is_a_ring_of_one_named_legacy() {
        let keys = field_keys(&source(&[
            ("MESH_FIELD_ENCRYPTION_KEY", b64(1)),
            ("MESH_BLIND_INDEX_KEY", b64(9)),
        ]))
        .expect("valid");
        assert_eq!(keys.ring.ids(), ["legacy"]);
    }

    #[test]
    fn every_problem_names_its_variable_and_shows_no_key() {
        let message = problems(&source(&[
            (
                "MESH_FIELD_KEYS",
                format!(
                    "k2:{}, {}, {}:{}, k1:AAAA, k 3:{}",
                    b64(2),
                    b64(3),
                    b64(4),
                    b64(5),
                    b64(6)
                ),
            ),
            ("MESH_BLIND_INDEX_KEY", b64(2)),
            ("MESH_FIELD_KEY_ROTATION_BATCH", "0".into()),
        ]));
        for expected in [
            "MESH_FIELD_KEY_CURRENT is required with MESH_FIELD_KEYS",
            "MESH_FIELD_KEYS: entry 2 is not id:key",
            "MESH_FIELD_KEYS: entry 3 has no valid key id",
            "MESH_FIELD_KEYS: key \"k1\" must decode to 32 bytes, got 3",
            "MESH_FIELD_KEYS: entry 5 has no valid key id",
            "MESH_FIELD_KEY_ROTATION_BATCH must be 1 to 10000, got 0",
        ] {
            assert!(message.contains(expected), "{expected}: {message}");
        }
        for seed in 2..=6 {
            assert!(!message.contains(&b64(seed)), "a key leaked: {message}");
        }

        let ring = |keys: String, current: &str| {
            vec![
                ("MESH_FIELD_KEYS", keys),
                ("MESH_FIELD_KEY_CURRENT", current.to_owned()),
            ]
        };
        let with = |mut pairs: Vec<(&'static str, String)>, more: &[(&'static str, String)]| {
            pairs.extend_from_slice(more);
            pairs
        };
        let cases = [
            (
                with(
                    ring(format!("k2:{}, k1:{}", b64(2), b64(1)), "k3"),
                    &[("MESH_BLIND_INDEX_KEY", b64(9))],
                ),
                vec!["MESH_FIELD_KEY_CURRENT=\"k3\" is not a key id of MESH_FIELD_KEYS (k2, k1)"],
            ),
            (
                with(
                    ring(format!("k2:{}, k1:{}", b64(2), b64(2)), "k2"),
                    &[("MESH_BLIND_INDEX_KEY", b64(2))],
                ),
                vec!["MESH_FIELD_KEYS: key ids \"k2\" and \"k1\" hold the same key"],
            ),
            (
                with(
                    ring(format!("k1:{}", b64(1)), "k1"),
                    &[("MESH_FIELD_ENCRYPTION_KEY", b64(1))],
                ),
                vec![
                    "set MESH_FIELD_KEYS or MESH_FIELD_ENCRYPTION_KEY, not both",
                    "MESH_BLIND_INDEX_KEY is required",
                ],
            ),
            (
                vec![("MESH_BLIND_INDEX_KEY", b64(1))],
                vec!["MESH_FIELD_KEYS is required"],
            ),
            (
                vec![
                    ("MESH_FIELD_ENCRYPTION_KEY", b64(1)),
                    ("MESH_BLIND_INDEX_KEY", b64(1)),
                ],
                vec!["MESH_BLIND_INDEX_KEY must differ"],
            ),
        ];
        for (pairs, expected) in cases {
            let message = problems(&source(&pairs));
            for expected in expected {
                assert!(message.contains(expected), "{expected}: {message}");
            }
        }
    }

    #[test]
    fn the_transit_ring_holds_keys_of_its_own() {
        let read = |transit: String| {
            let source = source(&[
                ("MESH_FIELD_KEYS", format!("k1:{}", b64(1))),
                ("MESH_FIELD_KEY_CURRENT", "k1".into()),
                ("MESH_BLIND_INDEX_KEY", b64(9)),
                ("MESH_HANDOVER_TRANSIT_KEYS", transit),
                ("MESH_HANDOVER_TRANSIT_KEY_CURRENT", "t1".into()),
            ]);
            let mut reader = Reader::new(&source);
            let field = FieldKeys::read(&mut reader);
            let transit = read_transit(&mut reader, field.as_ref());
            reader.finish().map(|()| transit.expect("read"))
        };
        let ring = read(format!("t1:{}", b64(5))).expect("valid");
        assert_eq!(ring.current_id(), "t1");
        for shared in [1, 9] {
            let message = read(format!("t1:{}", b64(shared)))
                .expect_err("shared")
                .to_string();
            assert!(
                message.contains("MESH_HANDOVER_TRANSIT_KEYS must not hold a key of MESH_FIELD_KEYS"),
                "{message}"
            );
        }
    }
}
