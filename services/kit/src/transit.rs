//! The report-in's personal fields on their way from handover to registry: the national ID
//! number, phone and address travel in `handover.reported_in` only sealed under the
//! handover-transit key ring, which handover and registry alone hold
//! (`MESH_HANDOVER_TRANSIT_KEYS`), bound to the handover's id. So the topic, handover's
//! outbox, the registry's dead letters and the operations events that copy a set-aside
//! record hold ciphertext, and risk-alert and placement, which read the same topic, cannot
//! open it. Handover seals ([`seal_report_in`]), the registry opens ([`open_report_in`]).

use mesh_proto::handover::ReportInPersonal;
use prost::Message;

use crate::keyring::{KeyRing, OpenError};

/// The purpose bound into the sealed bytes, with the handover's id: a sealed part moved to
/// another handover's event, or sealed for another purpose, does not open.
fn context(handover_id: &str) -> String {
    format!("handover.reported_in.personal:{handover_id}")
}

/// Why the personal fields of a report-in could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TransitError {
    #[error("the report-in carries no sealed personal fields")]
    Missing,
    #[error("the report-in's sealed personal fields do not open: {0}")]
    Open(#[from] OpenError),
    #[error("the report-in's sealed personal fields open to an undecodable message")]
    Undecodable,
}

/// Seals `personal` for the registry, bound to `handover_id`.
pub fn seal_report_in(ring: &KeyRing, handover_id: &str, personal: &ReportInPersonal) -> Vec<u8> {
    ring.seal(&personal.encode_to_vec(), &context(handover_id))
}

/// Opens the sealed personal fields of the report-in of `handover_id`.
pub fn open_report_in(
    ring: &KeyRing,
    handover_id: &str,
    sealed: &[u8],
) -> Result<ReportInPersonal, TransitError> {
    if sealed.is_empty() {
        return Err(TransitError::Missing);
    }
    let plain = ring.open(sealed, &context(handover_id))?;
    ReportInPersonal::decode(plain.as_slice()).map_err(|_| TransitError::Undecodable)
}

#[cfg(test)]
mod tests {
    use secrecy::SecretBox;

    use super::*;

    fn ring(id: &str, seed: u8) -> KeyRing {
        KeyRing::new(vec![(id.to_owned(), SecretBox::new(Box::new([seed; 32])))], id).expect("ring")
    }

    fn person() -> ReportInPersonal {
        ReportInPersonal {
            national_id: "11010519491231002X".into(),
            phone: "13912345678".into(),
            address: "甘州区东街 1 号".into(),
        }
    }

    #[test]
    fn only_the_transit_ring_opens_it_and_only_for_its_handover() {
        let transit = ring("t1", 1);
        let sealed = seal_report_in(&transit, "h1", &person());
        for plain in [
            &b"11010519491231002X"[..],
            b"13912345678",
            "甘州区东街 1 号".as_bytes(),
        ] {
            assert!(
                !sealed.windows(plain.len()).any(|w| w == plain),
                "plain value in the sealed part"
            );
        }
        assert_eq!(open_report_in(&transit, "h1", &sealed).expect("opens"), person());
        assert!(matches!(
            open_report_in(&transit, "h2", &sealed),
            Err(TransitError::Open(OpenError::Undecryptable))
        ));
        assert!(matches!(
            open_report_in(&ring("t1", 2), "h1", &sealed),
            Err(TransitError::Open(OpenError::Undecryptable))
        ));
        assert!(matches!(
            open_report_in(&ring("r1", 1), "h1", &sealed),
            Err(TransitError::Open(OpenError::UnknownKey(id))) if id == "t1"
        ));
        assert!(matches!(
            open_report_in(&transit, "h1", &[]),
            Err(TransitError::Missing)
        ));
        // Sealed under the ring but not a personal-fields message.
        let other = transit.seal(&[0xff, 0xff, 0xff], &context("h1"));
        assert!(matches!(
            open_report_in(&transit, "h1", &other),
            Err(TransitError::Undecodable)
        ));
    }
}
