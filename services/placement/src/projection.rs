//! Candidates come from events, never from retyping: this consumer keeps the `candidates`
//! table in step with the registry's `supervisee.*` events (supervisees marked as needing
//! employment) and the handover service's `handover.*` events (offence category and key
//! assistance target of every release; released prisoners under resettlement who report in
//! needing work). It reads each event's snapshot, applies the domain rules and writes
//! through [`store::sources`], in the consumer's transaction together with the event's
//! inbox record; the version gates there make redelivered or reordered snapshots harmless.
//!
//! An event that can never be applied (a malformed id, a snapshot without a place) is
//! dead-lettered; a database error is retried.
//!
//! The report-in event carries the national ID number in plain text (access-restricted
//! topic). This service never reads, stores or logs that field.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use mesh_kit::{
    clock::SharedClock,
    consumer::{HandleError, Handler, InboundEvent},
    error::ServiceError,
    events,
    proto_time::from_timestamp,
};
use mesh_proto::{handover as handover_pb, registry as registry_pb};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::{self, Offence},
    store::sources::{self, HandoverFacts, ReleasedPerson, Supervisee},
};

/// Applies registry and handover events to the candidate tables.
#[derive(Debug, Clone)]
pub struct CandidateProjection {
    pub clock: SharedClock,
    pub time_zone: Tz,
}

/// What a handover event says that matters here.
struct HandoverChange {
    snapshot: handover_pb::HandoverSnapshot,
    /// Set for `handover.reported_in`: whether the person needs work.
    reported_in_needing_work: Option<bool>,
}

fn permanent(event: &InboundEvent, reason: impl std::fmt::Display) -> HandleError {
    HandleError::Permanent(format!("{}: {reason}", event.event_type))
}

/// An optional UUID from an event: empty means none, anything else must parse.
fn optional_uuid(event: &InboundEvent, field: &str, value: &str) -> Result<Option<Uuid>, HandleError> {
    match value.trim() {
        "" => Ok(None),
        text => text
            .parse()
            .map(Some)
            .map_err(|_| permanent(event, format!("malformed {field}"))),
    }
}

/// The supervisee a `supervisee.*` snapshot describes.
fn supervisee(
    event: &InboundEvent,
    snapshot: registry_pb::SuperviseeSnapshot,
) -> Result<Supervisee, HandleError> {
    let supervisee_id: Uuid = snapshot
        .supervisee_id
        .parse()
        .map_err(|_| permanent(event, "malformed supervisee_id"))?;
    let jurisdiction = snapshot.jurisdiction.unwrap_or_default();
    if jurisdiction.township_code.is_empty() || jurisdiction.county_code.is_empty() {
        return Err(permanent(event, "snapshot without a jurisdiction"));
    }
    let status = registry_pb::SuperviseeStatus::try_from(snapshot.status)
        .map_err(|_| permanent(event, "unknown supervisee status"))?;
    Ok(Supervisee {
        supervisee_id,
        version: snapshot.version,
        name: snapshot.name,
        township_code: jurisdiction.township_code,
        county_code: jurisdiction.county_code,
        seeks_work: domain::supervisee_seeks_work(snapshot.needs_employment, status),
    })
}

impl CandidateProjection {
    /// The snapshot (and the registration's handover id) inside a `supervisee.*` event.
    fn supervisee_snapshot(
        event: &InboundEvent,
    ) -> Result<Option<(registry_pb::SuperviseeSnapshot, String)>, HandleError> {
        let Some(snapshot) = events::supervisee_snapshot(event)? else {
            return Ok(None);
        };
        // Only a registration says which handover (if any) it came from.
        let handover_id = if event.event_type == "supervisee.registered" {
            event.decode::<registry_pb::SuperviseeRegistered>()?.handover_id
        } else {
            String::new()
        };
        Ok(Some((snapshot, handover_id)))
    }

    /// The snapshot inside a `handover.*` event, with the report-in's employment flag.
    fn handover_change(event: &InboundEvent) -> Result<Option<HandoverChange>, HandleError> {
        let Some(snapshot) = events::handover_snapshot(event)? else {
            return Ok(None);
        };
        // Only the employment flag is read beyond the snapshot; the report-in message (with
        // its plain-text national ID) is dropped here and never logged.
        let reported_in_needing_work = if event.event_type == "handover.reported_in" {
            Some(
                event
                    .decode::<handover_pb::HandoverReportedIn>()?
                    .needs_employment,
            )
        } else {
            None
        };
        Ok(Some(HandoverChange {
            snapshot,
            reported_in_needing_work,
        }))
    }

    async fn apply_supervisee(
        &self,
        conn: &mut PgConnection,
        supervisee: Supervisee,
        handover_id: Option<Uuid>,
    ) -> Result<(), ServiceError> {
        let supervisee_id = supervisee.supervisee_id;
        let Some(handover_id) =
            sources::pass_supervisee_version(conn, supervisee_id, supervisee.version, handover_id).await?
        else {
            tracing::debug!(%supervisee_id, version = supervisee.version, "stale supervisee snapshot ignored");
            return Ok(());
        };
        let facts = match handover_id {
            Some(handover_id) => sources::handover_facts(conn, handover_id).await?,
            None => None,
        }
        .unwrap_or_default();
        let now = self.clock.now();
        match sources::lock_supervisee_candidate(conn, supervisee_id).await? {
            None if !supervisee.seeks_work => {}
            None => {
                let id = Uuid::now_v7();
                sources::insert_supervisee_candidate(conn, id, (&supervisee, handover_id), facts, now)
                    .await?;
                tracing::info!(candidate_id = %id, %supervisee_id, "supervisee became a candidate");
            }
            Some(candidate) => {
                sources::update_supervisee_candidate(
                    conn,
                    candidate.id,
                    (&supervisee, handover_id),
                    facts,
                    now,
                )
                .await?;
                if candidate.township_code != supervisee.township_code
                    || candidate.county_code != supervisee.county_code
                {
                    // A transfer moves the responsibility for the person's current placement
                    // with them; whether the job is still inside the county is checked again
                    // at acceptance and start.
                    let place = (supervisee.township_code.as_str(), supervisee.county_code.as_str());
                    sources::move_live_placements(conn, candidate.id, place, now).await?;
                }
                tracing::info!(candidate_id = %candidate.id, %supervisee_id, active = supervisee.seeks_work, "supervisee candidate updated");
            }
        }
        Ok(())
    }

    async fn apply_handover(
        &self,
        conn: &mut PgConnection,
        event: &InboundEvent,
        change: HandoverChange,
    ) -> Result<(), HandleError> {
        let snapshot = &change.snapshot;
        let handover_id: Uuid = snapshot
            .handover_id
            .parse()
            .map_err(|_| permanent(event, "malformed handover_id"))?;
        let facts = HandoverFacts {
            offence: Offence::from_proto(snapshot.offence_category),
            key_assistance_target: snapshot.key_assistance_target,
        };
        if !sources::pass_handover_version(conn, handover_id, snapshot.version, facts)
            .await
            .map_err(HandleError::from)?
        {
            tracing::debug!(%handover_id, version = snapshot.version, "stale handover snapshot ignored");
            return Ok(());
        }
        let now = self.clock.now();
        sources::apply_handover_facts(conn, handover_id, facts, now)
            .await
            .map_err(HandleError::from)?;

        let resettlement = snapshot.category() == handover_pb::ReleaseCategory::SentenceCompleted;
        let Some(needs_work) = change.reported_in_needing_work.filter(|_| resettlement) else {
            // Community-corrections releases become candidates through the registry, which
            // registers them from the same report-in.
            return Ok(());
        };
        let destination = snapshot.destination.clone().unwrap_or_default();
        if destination.township_code.is_empty() || destination.county_code.is_empty() {
            return Err(permanent(event, "report-in without a destination"));
        }
        // Assistance runs five years from release; the report-in stands in when the prison
        // never confirmed the release time.
        let released_at: DateTime<Utc> = snapshot
            .actual_release_time
            .as_ref()
            .and_then(from_timestamp)
            .or_else(|| snapshot.reported_in_at.as_ref().and_then(from_timestamp))
            .or(event.occurred_at)
            .unwrap_or(now);
        let person = ReleasedPerson {
            handover_id,
            version: snapshot.version,
            name: snapshot.person_name.clone(),
            township_code: destination.township_code,
            county_code: destination.county_code,
            facts,
            needs_work,
            assistance_ends_on: domain::assistance_ends_on(domain::office_today(released_at, self.time_zone)),
        };
        // Someone reporting in without needing work is not a candidate (yet); the insert
        // only happens for those who do, and a redelivery updates the existing row.
        if sources::upsert_released_candidate(conn, Uuid::now_v7(), &person, now)
            .await
            .map_err(HandleError::from)?
        {
            tracing::info!(%handover_id, active = needs_work, "released prisoner candidate recorded");
        }
        Ok(())
    }
}

impl Handler for CandidateProjection {
    async fn handle(&self, conn: &mut PgConnection, event: &InboundEvent) -> Result<(), HandleError> {
        if let Some((snapshot, handover_id)) = Self::supervisee_snapshot(event)? {
            let handover_id = optional_uuid(event, "handover_id", &handover_id)?;
            let supervisee = supervisee(event, snapshot)?;
            return self
                .apply_supervisee(conn, supervisee, handover_id)
                .await
                .map_err(HandleError::from);
        }
        if let Some(change) = Self::handover_change(event)? {
            return self.apply_handover(conn, event, change).await;
        }
        // Other event types (e.g. ones added later) are not about candidates.
        tracing::debug!(event_type = %event.event_type, "event type not projected; ignored");
        Ok(())
    }
}

#[cfg(test)]
mod properties {
    use mesh_proptest::{config, event_rejection, fixtures, inbound, payloads};
    use proptest::{prelude::*, sample::select};

    use super::*;

    const REGISTERED: &str = "mesh.registry.v1.SuperviseeRegistered";
    const REPORTED_IN: &str = "mesh.handover.v1.HandoverReportedIn";

    fn valid_report_in() -> handover_pb::HandoverReportedIn {
        handover_pb::HandoverReportedIn {
            handover: Some(fixtures::handover(
                handover_pb::ReleaseCategory::SentenceCompleted,
            )),
            needs_employment: true,
            ..Default::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        /// The registry's snapshots, read as the projection reads them before any write.
        #[test]
        fn registry_events(
            event_type in select(&["supervisee.registered", "supervisee.transferred", "supervisee.other"][..]),
            payload in payloads(REGISTERED, &fixtures::registered()),
        ) {
            let event = inbound(event_type, payload);
            let read = CandidateProjection::supervisee_snapshot(&event).and_then(|found| {
                found
                    .map(|(snapshot, handover_id)| {
                        let handover_id = optional_uuid(&event, "handover_id", &handover_id)?;
                        Ok((handover_id, supervisee(&event, snapshot)?))
                    })
                    .transpose()
            });
            event_rejection(REGISTERED, &read)?;
        }

        /// The handover service's snapshots and the report-in's employment flag.
        #[test]
        fn handover_events(
            event_type in select(&["handover.reported_in", "handover.notified", "handover.other"][..]),
            payload in payloads(REPORTED_IN, &valid_report_in()),
        ) {
            let event = inbound(event_type, payload);
            let read = CandidateProjection::handover_change(&event).map(|change| change.map(|change| change.snapshot));
            event_rejection(REPORTED_IN, &read)?;
        }
    }
}
