//! Personal data at rest and in transit: which context seals or fingerprints each value, so
//! that a value sealed for one purpose never opens for another and no plain national ID
//! number, risk note or report-in detail is stored or published (the report-in's personal
//! fields leave sealed for the registry alone, `mesh_kit::transit`).

use std::sync::Arc;

use mesh_kit::{crypto::FieldCrypto, error::ServiceError, keyring::KeyRing, rotation::SealedColumn, transit};
use mesh_proto::handover::ReportInPersonal;

use crate::domain::{Handover, Notice, ReportIn};

/// Associated-data and blind-index contexts, binding each value to its purpose.
const NATIONAL_ID: &str = "handovers.national_id";
const RISK_NOTES: &str = "handovers.risk_notes";
const SUBMISSION: &str = "handovers.submission";
const REPORT_IN: &str = "handovers.report_in";

/// Every sealed column, re-sealed under the current key after a rotation.
pub const SEALED_COLUMNS: &[SealedColumn] = &[
    SealedColumn {
        table: "handovers",
        key: "id",
        column: "national_id_sealed",
        context: NATIONAL_ID,
    },
    SealedColumn {
        table: "handovers",
        key: "id",
        column: "risk_notes_sealed",
        context: RISK_NOTES,
    },
];

/// What a notice is stored as besides its plain fields.
#[derive(Debug)]
pub struct SealedNotice {
    /// Keyed hash of the whole notice, to tell a resubmission from a conflicting one.
    pub fingerprint: Vec<u8>,
    pub national_id: Vec<u8>,
    /// Keyed hash of the national ID number, for the one-open-handover-per-person index.
    pub national_id_index: Vec<u8>,
    pub risk_notes: Vec<u8>,
}

/// Seals, opens and fingerprints the handover's personal data with the service's own keys,
/// and seals the report-in's personal fields for the registry with the transit ring.
#[derive(Debug, Clone)]
pub struct Sealer {
    at_rest: Arc<FieldCrypto>,
    transit: Arc<KeyRing>,
}

impl Sealer {
    pub fn new(crypto: FieldCrypto, transit: Arc<KeyRing>) -> Self {
        Self {
            at_rest: Arc::new(crypto),
            transit,
        }
    }

    pub fn seal_notice(&self, notice: &Notice) -> SealedNotice {
        let national_id = notice.national_id.expose();
        SealedNotice {
            fingerprint: self.at_rest.blind_index(&notice.canonical_text(), SUBMISSION),
            national_id: self.at_rest.seal(national_id, NATIONAL_ID),
            national_id_index: self.at_rest.blind_index(national_id, NATIONAL_ID),
            risk_notes: self.at_rest.seal(&notice.risk_notes, RISK_NOTES),
        }
    }

    /// Keyed hash of a report-in, to tell a retry from a conflicting second report.
    pub fn report_in_fingerprint(&self, report: &ReportIn) -> Vec<u8> {
        self.at_rest.blind_index(&report.canonical_text(), REPORT_IN)
    }

    pub fn national_id(&self, handover: &Handover) -> Result<String, ServiceError> {
        self.at_rest
            .open(&handover.national_id_sealed, NATIONAL_ID)
            .map_err(ServiceError::internal)
    }

    /// The report-in's personal fields sealed for the registry: the national ID number (for
    /// a community-corrections category; empty otherwise, nobody is registered), phone and
    /// address.
    pub fn report_in_personal(
        &self,
        handover: &Handover,
        report: &ReportIn,
    ) -> Result<Vec<u8>, ServiceError> {
        let national_id = if handover.category.is_community_corrections() {
            self.national_id(handover)?
        } else {
            String::new()
        };
        let personal = ReportInPersonal {
            national_id,
            phone: report.phone.clone(),
            address: report.address.clone(),
        };
        Ok(transit::seal_report_in(
            &self.transit,
            &handover.id.to_string(),
            &personal,
        ))
    }

    pub fn risk_notes(&self, handover: &Handover) -> Result<String, ServiceError> {
        self.at_rest
            .open(&handover.risk_notes_sealed, RISK_NOTES)
            .map_err(ServiceError::internal)
    }
}
