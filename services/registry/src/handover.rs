//! Registers supervisees from prison handovers: a `handover.reported_in` event of a
//! community-corrections category (parole, temporary execution outside prison) becomes a
//! registration, so the check-in schedule starts without anyone typing the person in again.
//! Sentence-completed releases are resettlement cases, not supervision: they are skipped here.
//! When the person already has a pending supervision (a court's record entered before the
//! prison's report-in arrived), the report-in starts that one instead of being refused.
//! The person's national ID, phone and address come sealed under the handover-transit ring
//! (`mesh_kit::transit`); a report-in whose sealed part does not open is dead-lettered.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use mesh_kit::{
    auth::{Caller, Role},
    clock::SharedClock,
    consumer::{HandleError, Handler, InboundEvent},
    error::ServiceError,
    keyring::KeyRing,
    transit,
};
use mesh_proto::{
    handover::{HandoverReportedIn, ReleaseCategory, ReportInPersonal},
    registry as pb,
};
use sqlx::PgConnection;

use crate::{
    dates::ReportedBy,
    domain::{RegisterError, Registration, Supervisee},
    events::Events,
    registration, request,
    sealing::Sealer,
    store,
};

/// Consumes the handover topic.
pub struct ReportInHandler {
    pub sealer: Arc<Sealer>,
    /// Opens the report-in's personal fields (shared with the handover service alone).
    pub transit: Arc<KeyRing>,
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

/// The registration request a report-in amounts to, with its opened personal fields.
fn registration_request(
    report: &HandoverReportedIn,
    personal: ReportInPersonal,
) -> pb::RegisterSuperviseeRequest {
    let handover = report.handover.clone().unwrap_or_default();
    let destination = handover.destination.unwrap_or_default();
    pb::RegisterSuperviseeRequest {
        name: handover.person_name,
        national_id: personal.national_id,
        category: report.registry_category,
        term_start: report.term_start,
        term_end: report.term_end,
        level: report.supervision_level,
        township_code: destination.township_code,
        county_code: destination.county_code,
        officer_id: report.officer_id.clone(),
        phone: personal.phone,
        address: personal.address,
        reported_at: handover.reported_in_at,
        needs_employment: report.needs_employment,
    }
}

/// The report-in an event is, when it starts a supervision: `None` for other event types
/// and for sentence-completed releases (resettlement, not supervision).
fn report_in(event: &InboundEvent) -> Result<Option<HandoverReportedIn>, HandleError> {
    if event.event_type != "handover.reported_in" {
        return Ok(None);
    }
    let report = event.decode::<HandoverReportedIn>()?;
    match report.handover.as_ref().map(|handover| handover.category()) {
        Some(ReleaseCategory::SentenceCompleted) => Ok(None),
        None | Some(ReleaseCategory::Unspecified) => Err(HandleError::Permanent(
            "report-in without a release category (handover.category)".into(),
        )),
        Some(ReleaseCategory::Parole | ReleaseCategory::TemporaryExecutionOutsidePrison) => Ok(Some(report)),
    }
}

/// The registration a report-in amounts to, validated as one typed in by an officer,
/// except that a report-in time ahead of `now` is taken as now (see `ReportedBy::Handover`);
/// a report-in that fails it needs a person, so it is set aside as a dead letter (kit
/// `dead_letter`), which alerts.
fn registration_of(
    report: &HandoverReportedIn,
    personal: ReportInPersonal,
    now: DateTime<Utc>,
) -> Result<Registration, HandleError> {
    request::registration(&registration_request(report, personal), now, ReportedBy::Handover).map_err(
        |error| {
            let why = match error {
                ServiceError::Invalid(violations) => violations
                    .renamed(|field| {
                        REPORT_IN_FIELDS
                            .iter()
                            .find(|(registration, _)| *registration == field)
                            .map(|(_, report_in)| (*report_in).to_owned())
                    })
                    .to_string(),
                other => other.public_message(),
            };
            HandleError::Permanent(format!("report-in cannot be registered: {why}"))
        },
    )
}

/// Where a registration's fields come from in a report-in, when not from a field of the
/// same name (see [`registration_request`]): what the dead-letter reason names.
const REPORT_IN_FIELDS: [(&str, &str); 6] = [
    ("name", "handover.person_name"),
    ("category", "registry_category"),
    ("level", "supervision_level"),
    ("township_code", "handover.destination.township_code"),
    ("county_code", "handover.destination.county_code"),
    ("reported_at", "handover.reported_in_at"),
];

impl Handler for ReportInHandler {
    async fn handle(&self, conn: &mut PgConnection, event: &InboundEvent) -> Result<(), HandleError> {
        let Some(report) = report_in(event)? else {
            return Ok(());
        };
        let handover = report.handover.clone().unwrap_or_default();
        if store::registered_from_handover(conn, &handover.handover_id)
            .await
            .map_err(HandleError::from)?
        {
            return Ok(());
        }
        // A part sealed under a key the registry lacks, with another key or tampered with
        // cannot be registered by retrying: set aside with the reason (the key id at most).
        let personal = transit::open_report_in(&self.transit, &handover.handover_id, &report.sealed_personal)
            .map_err(|error| HandleError::Permanent(format!("report-in cannot be registered: {error}")))?;
        let now = self.clock.now();
        let registration = registration_of(&report, personal, now)?;
        let handover_id = handover.handover_id.as_str();
        // Looked up before inserting: a refused insert would abort the transaction, and a
        // pending record of the same person (the court's, say) is this report-in's to start.
        let index = self.sealer.national_id_index(registration.national_id.expose());
        if let Some(open) = store::open_of_person_for_update(conn, &index)
            .await
            .map_err(HandleError::from)?
        {
            return self.link(conn, open, &registration, handover_id, now).await;
        }
        let registered = registration::register(
            conn,
            &self.sealer,
            &self.events,
            &registration,
            &handover_caller(),
            Some(handover_id),
            now,
        )
        .await;
        match registered {
            Ok(supervisee) => {
                tracing::info!(supervisee_id = %supervisee.id, handover_id, "registered from handover");
                Ok(())
            }
            // An officer registered the person between the lookup and the insert: the
            // retry finds the record and links to it.
            Err(RegisterError::AlreadyOpen) => Err(HandleError::Transient(anyhow::anyhow!(
                "the person was registered concurrently; retrying to link the report-in"
            ))),
            Err(RegisterError::Service(error)) => Err(error.into()),
        }
    }
}

impl ReportInHandler {
    /// Takes the report-in as the start of the person's open supervision when it is the
    /// pending one this report-in completes; anything else (a running supervision, another
    /// category or township) is a conflict only a person can settle: dead-lettered with
    /// what differs.
    async fn link(
        &self,
        conn: &mut PgConnection,
        mut open: Supervisee,
        registration: &Registration,
        handover_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), HandleError> {
        let reported_at = registration.reported_at.unwrap_or(now);
        let previous = open
            .link_report_in(handover_id, registration, reported_at)
            .map_err(|conflict| {
                HandleError::Permanent(format!(
                    "report-in of handover {handover_id} conflicts with supervisee {}: {conflict}; \
                     an officer must reconcile the two records",
                    open.id
                ))
            })?;
        let linked = store::update(conn, &open, now).await.map_err(HandleError::from)?;
        let caller = handover_caller();
        let reason = format!("reported in (报到) on prison handover {handover_id}");
        self.events
            .status_changed(&linked, previous, &reason, reported_at, &caller)
            .write(conn, &caller)
            .await
            .map_err(HandleError::from)?;
        tracing::info!(supervisee_id = %linked.id, handover_id, "report-in linked to the pending supervision");
        Ok(())
    }
}

#[cfg(test)]
mod properties {
    use chrono::NaiveDate;
    use mesh_kit::proto_time::{to_date, to_timestamp};
    use mesh_proptest::{config, event_rejection, fixtures, inbound, payloads};
    use mesh_proto::handover::HandoverSnapshot;
    use proptest::{prelude::*, sample::select};

    use super::*;

    const REPORT_IN: &str = "mesh.handover.v1.HandoverReportedIn";

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-26T08:00:00Z")
            .expect("valid")
            .with_timezone(&Utc)
    }

    fn valid() -> HandoverReportedIn {
        HandoverReportedIn {
            handover: Some(HandoverSnapshot {
                reported_in_at: Some(to_timestamp(now() - chrono::Duration::hours(1))),
                ..fixtures::handover(ReleaseCategory::Parole)
            }),
            registry_category: pb::Category::Parole as i32,
            supervision_level: pb::SupervisionLevel::Normal as i32,
            officer_id: "officer-1".into(),
            term_start: NaiveDate::from_ymd_opt(2026, 11, 1).map(to_date),
            term_end: NaiveDate::from_ymd_opt(2027, 10, 31).map(to_date),
            needs_employment: true,
            sealed_personal: Vec::new(),
            actor: None,
        }
    }

    /// The personal part, sealed apart (`transit`, tested there): valid here, so the
    /// properties reach every other field.
    fn personal() -> ReportInPersonal {
        ReportInPersonal {
            national_id: mesh_kit::national_id::synthesize(
                "620702",
                NaiveDate::from_ymd_opt(1990, 3, 7).expect("date"),
                1,
            ),
            phone: "13912345678".into(),
            address: "甘州区东街 1 号".into(),
        }
    }

    proptest! {
        #![proptest_config(config())]

        /// Whatever a handover event carries, the registry registers the person or sets the
        /// record aside naming the field at fault; it never panics.
        #[test]
        fn report_ins(
            event_type in select(&["handover.reported_in", "handover.notified"][..]),
            payload in payloads(REPORT_IN, &valid()),
        ) {
            let event = inbound(event_type, payload);
            let result = report_in(&event)
                .and_then(|report| report.map(|report| registration_of(&report, personal(), now())).transpose());
            event_rejection(REPORT_IN, &result)?;
        }
    }

    #[test]
    fn a_valid_report_in_registers_and_a_bad_one_names_the_event_field() {
        let registered = registration_of(&valid(), personal(), now()).expect("valid");
        assert_eq!(registered.name, "测试人员");
        let bad = HandoverReportedIn {
            supervision_level: 0,
            ..valid()
        };
        let reason = registration_of(&bad, personal(), now())
            .expect_err("no level")
            .to_string();
        assert_eq!(
            reason,
            "report-in cannot be registered: supervision_level: must be strict, normal or lenient"
        );
    }
}
