//! Personal data at rest: which context seals or fingerprints each value, so that a value
//! sealed for one purpose never opens for another and no plain national ID number, risk note
//! or report-in detail is stored.

use std::sync::Arc;

use mesh_kit::{crypto::FieldCrypto, error::ServiceError};

use crate::domain::{Handover, Notice, ReportIn};

/// Associated-data and blind-index contexts, binding each value to its purpose.
const NATIONAL_ID: &str = "handovers.national_id";
const RISK_NOTES: &str = "handovers.risk_notes";
const SUBMISSION: &str = "handovers.submission";
const REPORT_IN: &str = "handovers.report_in";

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

/// Seals, opens and fingerprints the handover's personal data.
#[derive(Debug, Clone)]
pub struct Sealer(Arc<FieldCrypto>);

impl Sealer {
    pub fn new(crypto: FieldCrypto) -> Self {
        Self(Arc::new(crypto))
    }

    pub fn seal_notice(&self, notice: &Notice) -> SealedNotice {
        let national_id = notice.national_id.expose();
        SealedNotice {
            fingerprint: self.0.blind_index(&notice.canonical_text(), SUBMISSION),
            national_id: self.0.seal(national_id, NATIONAL_ID),
            national_id_index: self.0.blind_index(national_id, NATIONAL_ID),
            risk_notes: self.0.seal(&notice.risk_notes, RISK_NOTES),
        }
    }

    /// Keyed hash of a report-in, to tell a retry from a conflicting second report.
    pub fn report_in_fingerprint(&self, report: &ReportIn) -> Vec<u8> {
        self.0.blind_index(&report.canonical_text(), REPORT_IN)
    }

    pub fn national_id(&self, handover: &Handover) -> Result<String, ServiceError> {
        self.0
            .open(&handover.national_id_sealed, NATIONAL_ID)
            .map_err(ServiceError::internal)
    }

    pub fn risk_notes(&self, handover: &Handover) -> Result<String, ServiceError> {
        self.0
            .open(&handover.risk_notes_sealed, RISK_NOTES)
            .map_err(ServiceError::internal)
    }
}
