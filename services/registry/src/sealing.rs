//! Personal data at rest: a supervisee's national ID, phone and address are stored only as
//! ciphertext bound to their column (the national ID also as a keyed blind index, which the
//! one-open-supervision-per-person index compares), and are opened only to answer a caller.

use mesh_kit::{crypto::FieldCrypto, error::ServiceError, rotation::SealedColumn};

/// Associated-data contexts that bind each ciphertext to its column.
const NATIONAL_ID: &str = "supervisees.national_id";
const PHONE: &str = "supervisees.phone";
const ADDRESS: &str = "supervisees.address";

/// Every sealed column, re-sealed under the current key after a rotation.
pub const SEALED_COLUMNS: &[SealedColumn] = &[
    SealedColumn {
        table: "supervisees",
        key: "id",
        column: "national_id_sealed",
        context: NATIONAL_ID,
    },
    SealedColumn {
        table: "supervisees",
        key: "id",
        column: "phone_sealed",
        context: PHONE,
    },
    SealedColumn {
        table: "supervisees",
        key: "id",
        column: "address_sealed",
        context: ADDRESS,
    },
];

/// A supervisee's personal fields as stored: ciphertext that the rules never read.
#[derive(Clone)]
pub struct Sealed {
    pub national_id: Vec<u8>,
    pub phone: Vec<u8>,
    pub address: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealed(..)")
    }
}

/// A supervisee's personal fields in plain text (no `Debug`: they must not reach a log).
pub struct Personal {
    pub national_id: String,
    pub phone: String,
    pub address: String,
}

/// Seals and opens personal fields with the registry's own key ring and blind-index key.
pub struct Sealer(FieldCrypto);

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(keys hidden)")
    }
}

impl Sealer {
    pub fn new(crypto: FieldCrypto) -> Self {
        Self(crypto)
    }

    /// Seals the personal fields; also returns the national ID's blind index.
    pub fn seal(&self, national_id: &str, phone: &str, address: &str) -> (Sealed, Vec<u8>) {
        let sealed = Sealed {
            national_id: self.0.seal(national_id, NATIONAL_ID),
            phone: self.0.seal(phone, PHONE),
            address: self.0.seal(address, ADDRESS),
        };
        (sealed, self.0.blind_index(national_id, NATIONAL_ID))
    }

    /// The national ID's blind index alone, to find the person's open supervision.
    pub fn national_id_index(&self, national_id: &str) -> Vec<u8> {
        self.0.blind_index(national_id, NATIONAL_ID)
    }

    /// Opens stored personal fields; failing means a wrong key or corrupted data (internal).
    pub fn open(&self, sealed: &Sealed) -> Result<Personal, ServiceError> {
        let open = |value: &[u8], context| self.0.open(value, context).map_err(ServiceError::internal);
        Ok(Personal {
            national_id: open(&sealed.national_id, NATIONAL_ID)?,
            phone: open(&sealed.phone, PHONE)?,
            address: open(&sealed.address, ADDRESS)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mesh_kit::keyring::KeyRing;
    use secrecy::SecretBox;

    use super::*;

    #[test]
    fn each_field_opens_only_from_its_own_column() {
        let sealer = Sealer::new(FieldCrypto::new(
            Arc::new(KeyRing::single(SecretBox::new(Box::new([1; 32])))),
            SecretBox::new(Box::new([2; 32])),
        ));
        let (sealed, index) = sealer.seal("11010519491231002X", "+8613800000000", "甘肃省张掖市");
        let opened = sealer.open(&sealed).expect("opens");
        assert_eq!(opened.national_id, "11010519491231002X");
        assert_eq!(opened.phone, "+8613800000000");
        assert_eq!(opened.address, "甘肃省张掖市");
        assert_eq!(
            index,
            sealer.seal("11010519491231002X", "", "").1,
            "the index is deterministic"
        );

        let swapped = Sealed {
            phone: sealed.address.clone(),
            ..sealed
        };
        assert!(sealer.open(&swapped).is_err());
    }
}
