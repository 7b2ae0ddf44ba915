//! Candidates come from events, never from retyping: this consumer keeps the `candidates`
//! table in step with the registry's `supervisee.*` events (supervisees marked as needing
//! employment) and the handover service's `handover.*` events (offence category and key
//! assistance target of every release; released prisoners under resettlement who report in
//! needing work).
//!
//! Every event carries a full snapshot with the record's version, so each source is applied
//! only when newer than what was applied before: a redelivered, replayed or reordered older
//! snapshot changes nothing. Each event is applied in the consumer's transaction, together
//! with its inbox record.
//!
//! The report-in event carries the national ID number in plain text (access-restricted
//! topic). This service never reads, stores or logs that field.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use mesh_kit::{
    clock::SharedClock,
    consumer::{HandleError, Handler, InboundEvent},
    events,
    proto_time::from_timestamp,
};
use mesh_proto::{handover as handover_pb, registry as registry_pb};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{self, Offence};

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
        event: &InboundEvent,
        snapshot: registry_pb::SuperviseeSnapshot,
        handover_id: Option<Uuid>,
    ) -> Result<(), HandleError> {
        let supervisee_id: Uuid = snapshot
            .supervisee_id
            .parse()
            .map_err(|_| permanent(event, "malformed supervisee_id"))?;
        let jurisdiction = snapshot.jurisdiction.clone().unwrap_or_default();
        if jurisdiction.township_code.is_empty() || jurisdiction.county_code.is_empty() {
            return Err(permanent(event, "snapshot without a jurisdiction"));
        }
        let status = registry_pb::SuperviseeStatus::try_from(snapshot.status)
            .map_err(|_| permanent(event, "unknown supervisee status"))?;

        // The version gate: only a newer snapshot goes on. The handover link, given only by
        // the registration, is kept across later snapshots.
        let linked_handover: Option<Option<Uuid>> = sqlx::query_scalar(
            "INSERT INTO supervisee_versions (supervisee_id, version, handover_id) VALUES ($1, $2, $3)
             ON CONFLICT (supervisee_id) DO UPDATE SET version = EXCLUDED.version,
                 handover_id = COALESCE(EXCLUDED.handover_id, supervisee_versions.handover_id), projected_at = now()
             WHERE supervisee_versions.version < EXCLUDED.version
             RETURNING handover_id",
        )
        .bind(supervisee_id)
        .bind(snapshot.version)
        .bind(handover_id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(handover_id) = linked_handover else {
            tracing::debug!(%supervisee_id, version = snapshot.version, "stale supervisee snapshot ignored");
            return Ok(());
        };

        let seeks_work = domain::supervisee_seeks_work(snapshot.needs_employment, status);
        let facts: Option<(Option<String>, bool)> = match handover_id {
            Some(handover_id) => sqlx::query_as(
                "SELECT offence_category, key_assistance_target FROM handover_facts WHERE handover_id = $1",
            )
            .bind(handover_id)
            .fetch_optional(&mut *conn)
            .await?,
            None => None,
        };
        let (offence, key_target) = match &facts {
            Some((offence, key_target)) => (offence.clone(), *key_target),
            None => (None, false),
        };
        let now = self.clock.now();
        // Lock order everywhere: candidate, then its placements, then the opening.
        let existing: Option<(Uuid, String, String)> = sqlx::query_as(
            "SELECT id, township_code, county_code FROM candidates WHERE supervisee_id = $1 FOR NO KEY UPDATE",
        )
        .bind(supervisee_id)
        .fetch_optional(&mut *conn)
        .await?;
        match existing {
            None if !seeks_work => {}
            None => {
                let id = Uuid::now_v7();
                sqlx::query(
                    "INSERT INTO candidates (id, source, supervisee_id, handover_id, source_version, name, township_code,
                         county_code, offence_category, offence_from_handover, key_assistance_target, active,
                         created_at, updated_at)
                     VALUES ($1, 'supervisee', $2, $3, $4, $5, $6, $7, $8, $9, $10, true, $11, $11)",
                )
                .bind(id)
                .bind(supervisee_id)
                .bind(handover_id)
                .bind(snapshot.version)
                .bind(&snapshot.name)
                .bind(&jurisdiction.township_code)
                .bind(&jurisdiction.county_code)
                .bind(&offence)
                .bind(offence.is_some())
                .bind(key_target)
                .bind(now)
                .execute(&mut *conn)
                .await?;
                tracing::info!(candidate_id = %id, %supervisee_id, "supervisee became a candidate");
            }
            Some((candidate_id, township_code, county_code)) => {
                sqlx::query(
                    "UPDATE candidates SET name = $2, township_code = $3, county_code = $4, active = $5,
                         source_version = $6, handover_id = COALESCE(handover_id, $7),
                         offence_category = CASE WHEN $8::text IS NULL THEN offence_category ELSE $8 END,
                         offence_from_handover = offence_from_handover OR $8::text IS NOT NULL,
                         key_assistance_target = key_assistance_target OR $9,
                         updated_at = $10, version = version + 1
                     WHERE id = $1",
                )
                .bind(candidate_id)
                .bind(&snapshot.name)
                .bind(&jurisdiction.township_code)
                .bind(&jurisdiction.county_code)
                .bind(seeks_work)
                .bind(snapshot.version)
                .bind(handover_id)
                .bind(&offence)
                .bind(key_target)
                .bind(now)
                .execute(&mut *conn)
                .await?;
                if township_code != jurisdiction.township_code || county_code != jurisdiction.county_code {
                    // A transfer moves the responsibility for the person's current placement
                    // with them; whether the job is still inside the county is checked again
                    // at acceptance and start.
                    sqlx::query(
                        "UPDATE placements SET township_code = $2, county_code = $3, updated_at = $4,
                             version = version + 1
                         WHERE candidate_id = $1 AND status IN ('proposed', 'accepted', 'started')",
                    )
                    .bind(candidate_id)
                    .bind(&jurisdiction.township_code)
                    .bind(&jurisdiction.county_code)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                }
                tracing::info!(%candidate_id, %supervisee_id, active = seeks_work, "supervisee candidate updated");
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
        let offence = Offence::from_proto(snapshot.offence_category).map(Offence::as_str);
        let applied = sqlx::query(
            "INSERT INTO handover_facts (handover_id, offence_category, key_assistance_target, version)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (handover_id) DO UPDATE SET offence_category = EXCLUDED.offence_category,
                 key_assistance_target = EXCLUDED.key_assistance_target, version = EXCLUDED.version,
                 projected_at = now()
             WHERE handover_facts.version < EXCLUDED.version",
        )
        .bind(handover_id)
        .bind(offence)
        .bind(snapshot.key_assistance_target)
        .bind(snapshot.version)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if applied == 0 {
            tracing::debug!(%handover_id, version = snapshot.version, "stale handover snapshot ignored");
            return Ok(());
        }
        let now = self.clock.now();

        // The prison's word on the offence is authoritative: it replaces what an office may
        // have entered for a supervisee who came from this handover.
        sqlx::query(
            "UPDATE candidates SET
                 offence_category = CASE WHEN $2::text IS NULL THEN offence_category ELSE $2 END,
                 offence_from_handover = offence_from_handover OR $2::text IS NOT NULL,
                 key_assistance_target = $3, updated_at = $4, version = version + 1
             WHERE handover_id = $1",
        )
        .bind(handover_id)
        .bind(offence)
        .bind(snapshot.key_assistance_target)
        .bind(now)
        .execute(&mut *conn)
        .await?;

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
        let assistance_ends_on =
            domain::assistance_ends_on(domain::office_today(released_at, self.time_zone));
        let id = Uuid::now_v7();
        // Someone reporting in without needing work is not a candidate (yet); the insert
        // only happens for those who do, and a redelivery updates the existing row.
        let inserted = sqlx::query(
            "INSERT INTO candidates (id, source, handover_id, source_version, name, township_code, county_code,
                 offence_category, offence_from_handover, key_assistance_target, active, assistance_ends_on,
                 created_at, updated_at)
             SELECT $1, 'released_prisoner', $2, $3, $4, $5, $6, $7, $7::text IS NOT NULL, $8, $9, $10, $11, $11
             WHERE $9 OR EXISTS (SELECT 1 FROM candidates WHERE handover_id = $2 AND source = 'released_prisoner')
             ON CONFLICT (handover_id) WHERE source = 'released_prisoner' DO UPDATE SET
                 source_version = EXCLUDED.source_version, name = EXCLUDED.name,
                 township_code = EXCLUDED.township_code, county_code = EXCLUDED.county_code,
                 active = EXCLUDED.active, assistance_ends_on = EXCLUDED.assistance_ends_on,
                 updated_at = EXCLUDED.updated_at, version = candidates.version + 1
             WHERE candidates.source_version < EXCLUDED.source_version",
        )
        .bind(id)
        .bind(handover_id)
        .bind(snapshot.version)
        .bind(&snapshot.person_name)
        .bind(&destination.township_code)
        .bind(&destination.county_code)
        .bind(offence)
        .bind(snapshot.key_assistance_target)
        .bind(needs_work)
        .bind(assistance_ends_on)
        .bind(now)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if inserted > 0 {
            tracing::info!(%handover_id, active = needs_work, "released prisoner candidate recorded");
        }
        Ok(())
    }
}

impl Handler for CandidateProjection {
    async fn handle(&self, conn: &mut PgConnection, event: &InboundEvent) -> Result<(), HandleError> {
        if let Some((snapshot, handover_id)) = Self::supervisee_snapshot(event)? {
            let handover_id = optional_uuid(event, "handover_id", &handover_id)?;
            return self.apply_supervisee(conn, event, snapshot, handover_id).await;
        }
        if let Some(change) = Self::handover_change(event)? {
            return self.apply_handover(conn, event, change).await;
        }
        // Other event types (e.g. ones added later) are not about candidates.
        tracing::debug!(event_type = %event.event_type, "event type not projected; ignored");
        Ok(())
    }
}
