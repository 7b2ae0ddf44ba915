//! Registers supervisees from prison handovers: a `handover.reported_in` event of a
//! community-corrections category (parole, temporary execution outside prison) becomes a
//! registration, so the check-in schedule starts without anyone typing the person in again.
//! Sentence-completed releases are resettlement cases, not supervision: they are skipped here.

use std::sync::Arc;

use mesh_kit::{
    auth::{Caller, Role},
    clock::SharedClock,
    consumer::{HandleError, Handler, InboundEvent},
};
use mesh_proto::{
    handover::{HandoverReportedIn, ReleaseCategory},
    registry as pb,
};
use sqlx::PgConnection;

use crate::{
    dates::ReportedBy, domain::RegisterError, events::Events, registration, request, sealing::Sealer, store,
};

/// Consumes the handover topic.
pub struct ReportInHandler {
    pub sealer: Arc<Sealer>,
    pub events: Events,
    pub clock: SharedClock,
}

/// The caller recorded for registrations that come from a handover.
fn handover_caller() -> Caller {
    Caller {
        subject: "handover".into(),
        role: Role::System,
        township: None,
        county: None,
        prison: None,
    }
}

/// The registration request a report-in amounts to.
fn registration_request(report: &HandoverReportedIn) -> pb::RegisterSuperviseeRequest {
    let handover = report.handover.clone().unwrap_or_default();
    let destination = handover.destination.unwrap_or_default();
    pb::RegisterSuperviseeRequest {
        name: handover.person_name,
        national_id: report.national_id.clone(),
        category: report.registry_category,
        term_start: report.term_start,
        term_end: report.term_end,
        level: report.supervision_level,
        township_code: destination.township_code,
        county_code: destination.county_code,
        officer_id: report.officer_id.clone(),
        phone: report.phone.clone(),
        address: report.address.clone(),
        reported_at: handover.reported_in_at,
        needs_employment: report.needs_employment,
    }
}

impl Handler for ReportInHandler {
    async fn handle(&self, conn: &mut PgConnection, event: &InboundEvent) -> Result<(), HandleError> {
        if event.event_type != "handover.reported_in" {
            return Ok(());
        }
        let report = event.decode::<HandoverReportedIn>()?;
        let handover = report.handover.clone().unwrap_or_default();
        match handover.category() {
            ReleaseCategory::SentenceCompleted => return Ok(()),
            ReleaseCategory::Unspecified => {
                return Err(HandleError::Permanent(
                    "report-in without a release category".into(),
                ));
            }
            ReleaseCategory::Parole | ReleaseCategory::TemporaryExecutionOutsidePrison => {}
        }
        if store::registered_from_handover(conn, &handover.handover_id)
            .await
            .map_err(HandleError::from)?
        {
            return Ok(());
        }
        let now = self.clock.now();
        // The same validation as a registration typed in by an officer; a report-in that
        // fails it needs a person, so it goes to the dead-letter topic with the reason.
        let registration = request::registration(&registration_request(&report), now, ReportedBy::Handover)
            .map_err(|error| {
            HandleError::Permanent(format!(
                "report-in cannot be registered: {}",
                error.public_message()
            ))
        })?;
        let registered = registration::register(
            conn,
            &self.sealer,
            &self.events,
            &registration,
            &handover_caller(),
            Some(&handover.handover_id),
            now,
        )
        .await;
        match registered {
            Ok(supervisee) => {
                tracing::info!(supervisee_id = %supervisee.id, handover_id = %handover.handover_id, "registered from handover");
                Ok(())
            }
            Err(RegisterError::AlreadyOpen) => Err(HandleError::Permanent(
                "the person already has an open supervision; an officer must reconcile the report-in".into(),
            )),
            Err(RegisterError::Service(error)) => Err(error.into()),
        }
    }
}
