//! The placement gRPC API. Every handler authenticates the caller (done by the
//! interceptor), checks its role and jurisdiction, validates input naming each bad field,
//! and writes the change, its `placement.*` event (outbox) and an audit record in one
//! transaction.
//!
//! Concurrency: rows are locked in one order everywhere — candidate, then placement, then
//! opening — so concurrent handlers (and the event projection) never deadlock. Taking a
//! position happens under the opening's row lock (`SELECT … FOR NO KEY UPDATE`): concurrent
//! acceptances of the last position queue on that lock, the first one takes it, and each
//! later one sees the opening full and fails with `FailedPrecondition`. (`NO KEY` because
//! ids never change: the lock excludes other writers but not the foreign-key checks of
//! placements being inserted meanwhile.)

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use mesh_kit::{
    audit,
    auth::{Caller, Role, caller},
    clock::SharedClock,
    error::{self, invalid_field},
    jurisdiction::Directory,
    outbox::{self, NewEvent, OutboxSignal},
    proto_time::{to_date, to_timestamp},
};
use mesh_proto::{common, placement as pb};
use prost::Message;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{
        self, BaseType, CandidateFacts, CandidateSource, DeclinedBy, EndReason, Offence, OpeningFacts,
        OpeningStatus, PlacementStatus, Sector,
    },
    validation::{self, Scope},
};

/// Roles that work with placements (prisons do not).
const MANAGERS: &[Role] = &[
    Role::Officer,
    Role::TownshipOffice,
    Role::CountyBureau,
    Role::Admin,
    Role::System,
];

/// Most open openings read for one match; far above a city's open openings, it only bounds
/// the work of one request.
const MATCH_SCAN_LIMIT: i64 = 5000;

/// The placement service's state.
#[derive(Clone)]
pub struct Placements {
    pool: PgPool,
    clock: SharedClock,
    outbox_signal: OutboxSignal,
    topic: String,
    time_zone: Tz,
}

type Tx = Transaction<'static, Postgres>;

fn parse_stored<T>(value: Option<T>, what: &str) -> Result<T, Status> {
    value.ok_or_else(|| error::internal(format!("unknown stored {what}")))
}

fn jurisdiction(township_code: &str, county_code: &str) -> common::Jurisdiction {
    common::Jurisdiction {
        township_code: township_code.to_owned(),
        county_code: county_code.to_owned(),
    }
}

fn count(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------

#[derive(sqlx::FromRow)]
struct BaseRow {
    id: Uuid,
    name: String,
    township_code: String,
    county_code: String,
    base_type: String,
    contact_name: String,
    contact_phone: String,
    active: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
}

const BASE_COLUMNS: &str = "id, name, township_code, county_code, base_type, contact_name, contact_phone, active, \
     created_at, updated_at, version";

impl BaseRow {
    fn to_proto(&self) -> Result<pb::ResettlementBase, Status> {
        Ok(pb::ResettlementBase {
            base_id: self.id.to_string(),
            name: self.name.clone(),
            jurisdiction: Some(jurisdiction(&self.township_code, &self.county_code)),
            r#type: parse_stored(BaseType::parse(&self.base_type), "base type")?.to_proto() as i32,
            contact_name: self.contact_name.clone(),
            contact_phone: self.contact_phone.clone(),
            active: self.active,
            created_at: Some(to_timestamp(self.created_at)),
            updated_at: Some(to_timestamp(self.updated_at)),
            version: self.version,
        })
    }
}

#[derive(sqlx::FromRow)]
struct OpeningRow {
    id: Uuid,
    base_id: Uuid,
    title: String,
    sector: String,
    description: String,
    required_skills: Vec<String>,
    positions_total: i32,
    positions_filled: i32,
    work_township_code: String,
    work_county_code: String,
    work_latitude: Option<f64>,
    work_longitude: Option<f64>,
    closing_date: NaiveDate,
    excluded_offences: Vec<String>,
    status: String,
    close_reason: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// From the joined base.
    base_name: String,
    base_active: bool,
    base_township_code: String,
    base_county_code: String,
}

/// Openings are always read with their base (`o` and `b`).
const OPENING_COLUMNS: &str = "o.id, o.base_id, o.title, o.sector, o.description, o.required_skills, \
     o.positions_total, o.positions_filled, o.work_township_code, o.work_county_code, o.work_latitude, \
     o.work_longitude, o.closing_date, o.excluded_offences, o.status, o.close_reason, o.created_at, o.updated_at, \
     b.name AS base_name, b.active AS base_active, b.township_code AS base_township_code, \
     b.county_code AS base_county_code";

impl OpeningRow {
    fn sector(&self) -> Result<Sector, Status> {
        parse_stored(Sector::parse(&self.sector), "sector")
    }

    fn status(&self) -> Result<OpeningStatus, Status> {
        parse_stored(OpeningStatus::parse(&self.status), "opening status")
    }

    fn excluded(&self) -> Result<Vec<Offence>, Status> {
        self.excluded_offences
            .iter()
            .map(|offence| parse_stored(Offence::parse(offence), "offence category"))
            .collect()
    }

    fn location(&self) -> Option<(f64, f64)> {
        self.work_latitude.zip(self.work_longitude)
    }

    fn facts(&self) -> Result<OpeningFacts, Status> {
        Ok(OpeningFacts {
            status: self.status()?,
            base_active: self.base_active,
            closing_date: self.closing_date,
            positions_total: count(self.positions_total),
            positions_filled: count(self.positions_filled),
            sector: self.sector()?,
            required_skills: self.required_skills.clone(),
            work_township_code: self.work_township_code.clone(),
            work_county_code: self.work_county_code.clone(),
            work_location: self.location(),
            excluded_offences: self.excluded()?,
        })
    }

    fn to_proto(&self) -> Result<pb::JobOpening, Status> {
        Ok(pb::JobOpening {
            opening_id: self.id.to_string(),
            base_id: self.base_id.to_string(),
            title: self.title.clone(),
            sector: self.sector()?.to_proto() as i32,
            description: self.description.clone(),
            required_skills: self.required_skills.clone(),
            positions_total: count(self.positions_total),
            positions_filled: count(self.positions_filled),
            work_jurisdiction: Some(jurisdiction(&self.work_township_code, &self.work_county_code)),
            work_location: self.location().map(|(latitude, longitude)| common::GeoPoint {
                latitude,
                longitude,
                accuracy_m: 0.0,
            }),
            closing_date: Some(to_date(self.closing_date)),
            excluded_offence_categories: self
                .excluded()?
                .into_iter()
                .map(|offence| offence.to_proto() as i32)
                .collect(),
            status: self.status()?.to_proto() as i32,
            close_reason: self.close_reason.clone(),
            created_at: Some(to_timestamp(self.created_at)),
            updated_at: Some(to_timestamp(self.updated_at)),
        })
    }
}

#[derive(sqlx::FromRow)]
struct CandidateRow {
    id: Uuid,
    source: String,
    supervisee_id: Option<Uuid>,
    handover_id: Option<Uuid>,
    name: String,
    township_code: String,
    county_code: String,
    offence_category: Option<String>,
    offence_from_handover: bool,
    key_assistance_target: bool,
    skills: Vec<String>,
    sector_preferences: Vec<String>,
    active: bool,
    assistance_ends_on: Option<NaiveDate>,
    current_placement_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const CANDIDATE_COLUMNS: &str = "id, source, supervisee_id, handover_id, name, township_code, county_code, \
     offence_category, offence_from_handover, key_assistance_target, skills, sector_preferences, active, \
     assistance_ends_on, current_placement_id, created_at, updated_at";

impl CandidateRow {
    fn source(&self) -> Result<CandidateSource, Status> {
        parse_stored(CandidateSource::parse(&self.source), "candidate source")
    }

    fn offence(&self) -> Result<Option<Offence>, Status> {
        self.offence_category
            .as_deref()
            .map(|offence| parse_stored(Offence::parse(offence), "offence category"))
            .transpose()
    }

    fn sectors(&self) -> Result<Vec<Sector>, Status> {
        self.sector_preferences
            .iter()
            .map(|sector| parse_stored(Sector::parse(sector), "sector"))
            .collect()
    }

    fn active(&self, today: NaiveDate) -> bool {
        domain::candidate_active(self.active, self.assistance_ends_on, today)
    }

    fn facts(&self, today: NaiveDate) -> Result<CandidateFacts, Status> {
        Ok(CandidateFacts {
            source: self.source()?,
            township_code: self.township_code.clone(),
            county_code: self.county_code.clone(),
            offence: self.offence()?,
            skills: self.skills.clone(),
            sector_preferences: self.sectors()?,
            active: self.active(today),
            home_seat: Directory::get()
                .county(&self.county_code)
                .map(|county| county.seat),
        })
    }

    fn to_proto(&self, today: NaiveDate) -> Result<pb::Candidate, Status> {
        Ok(pb::Candidate {
            candidate_id: self.id.to_string(),
            source: self.source()?.to_proto() as i32,
            supervisee_id: self.supervisee_id.map(|id| id.to_string()).unwrap_or_default(),
            handover_id: self.handover_id.map(|id| id.to_string()).unwrap_or_default(),
            name: self.name.clone(),
            jurisdiction: Some(jurisdiction(&self.township_code, &self.county_code)),
            offence_category: self
                .offence()?
                .map(|offence| offence.to_proto() as i32)
                .unwrap_or(0),
            key_assistance_target: self.key_assistance_target,
            skills: self.skills.clone(),
            sector_preferences: self
                .sectors()?
                .into_iter()
                .map(|sector| sector.to_proto() as i32)
                .collect(),
            active: self.active(today),
            current_placement_id: self
                .current_placement_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            created_at: Some(to_timestamp(self.created_at)),
            updated_at: Some(to_timestamp(self.updated_at)),
        })
    }
}

#[derive(sqlx::FromRow)]
struct PlacementRow {
    id: Uuid,
    candidate_id: Uuid,
    opening_id: Uuid,
    base_id: Uuid,
    status: String,
    township_code: String,
    county_code: String,
    proposed_by_subject: String,
    proposed_by_role: String,
    proposed_at: DateTime<Utc>,
    accepted_at: Option<DateTime<Utc>>,
    declined_at: Option<DateTime<Utc>>,
    declined_by: Option<String>,
    decline_reason: String,
    start_date: Option<NaiveDate>,
    end_date: Option<NaiveDate>,
    end_reason: Option<String>,
    end_note: String,
    note: String,
    updated_at: DateTime<Utc>,
    version: i64,
}

const PLACEMENT_COLUMNS: &str = "id, candidate_id, opening_id, base_id, status, township_code, county_code, \
     proposed_by_subject, proposed_by_role, proposed_at, accepted_at, declined_at, declined_by, decline_reason, \
     start_date, end_date, end_reason, end_note, note, updated_at, version";

impl PlacementRow {
    fn status(&self) -> Result<PlacementStatus, Status> {
        parse_stored(PlacementStatus::parse(&self.status), "placement status")
    }

    fn to_proto(&self) -> Result<pb::Placement, Status> {
        let declined_by = match &self.declined_by {
            Some(text) => parse_stored(DeclinedBy::parse(text), "declined_by")?.to_proto() as i32,
            None => 0,
        };
        let end_reason = match &self.end_reason {
            Some(text) => parse_stored(EndReason::parse(text), "end reason")?.to_proto() as i32,
            None => 0,
        };
        Ok(pb::Placement {
            placement_id: self.id.to_string(),
            candidate_id: self.candidate_id.to_string(),
            opening_id: self.opening_id.to_string(),
            base_id: self.base_id.to_string(),
            status: self.status()?.to_proto() as i32,
            jurisdiction: Some(jurisdiction(&self.township_code, &self.county_code)),
            proposed_by: Some(common::Actor {
                subject: self.proposed_by_subject.clone(),
                role: self.proposed_by_role.clone(),
            }),
            proposed_at: Some(to_timestamp(self.proposed_at)),
            accepted_at: self.accepted_at.map(to_timestamp),
            declined_at: self.declined_at.map(to_timestamp),
            declined_by,
            decline_reason: self.decline_reason.clone(),
            start_date: self.start_date.map(to_date),
            end_date: self.end_date.map(to_date),
            end_reason,
            end_note: self.end_note.clone(),
            note: self.note.clone(),
            updated_at: Some(to_timestamp(self.updated_at)),
            version: self.version,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Shared steps
// ---------------------------------------------------------------------------------------

/// Whether the caller may read openings of a county: openings are no personal data, and
/// every office of a county may propose its people for any opening in it, so officers and
/// township offices see their whole county; county bureaus theirs; admins all.
fn can_read_county(caller: &Caller, county_code: &str) -> bool {
    match caller.role {
        Role::Admin | Role::System => true,
        Role::Officer | Role::TownshipOffice | Role::CountyBureau => {
            caller.county.as_deref() == Some(county_code)
        }
        Role::Prison => false,
    }
}

/// What a lifecycle step records.
enum Step {
    Accept,
    Decline {
        by: DeclinedBy,
        reason: String,
    },
    Start {
        date: NaiveDate,
    },
    End {
        date: NaiveDate,
        reason: EndReason,
        note: String,
    },
}

impl Step {
    fn target(&self) -> PlacementStatus {
        match self {
            Step::Accept => PlacementStatus::Accepted,
            Step::Decline { .. } => PlacementStatus::Declined,
            Step::Start { .. } => PlacementStatus::Started,
            Step::End { .. } => PlacementStatus::Ended,
        }
    }
}

impl Placements {
    pub fn new(pool: PgPool, clock: SharedClock, outbox_signal: OutboxSignal, topic: String) -> Self {
        Self {
            pool,
            clock,
            outbox_signal,
            topic,
            time_zone: Directory::get().time_zone,
        }
    }

    /// Today in the office time zone.
    fn today(&self) -> NaiveDate {
        domain::office_today(self.clock.now(), self.time_zone)
    }

    async fn begin(&self) -> Result<Tx, Status> {
        self.pool.begin().await.map_err(error::database)
    }

    /// Writes an event into the outbox (same transaction as the change).
    async fn emit(
        &self,
        conn: &mut PgConnection,
        key: Uuid,
        event_type: &'static str,
        payload: Vec<u8>,
        occurred_at: DateTime<Utc>,
    ) -> Result<(), Status> {
        outbox::enqueue(
            conn,
            NewEvent {
                topic: self.topic.clone(),
                key: key.to_string(),
                event_type,
                payload,
                occurred_at,
            },
        )
        .await
        .map_err(error::database)?;
        Ok(())
    }

    /// Commits and wakes the outbox relay.
    async fn commit(&self, tx: Tx) -> Result<(), Status> {
        tx.commit().await.map_err(error::database)?;
        self.outbox_signal.notify();
        Ok(())
    }

    async fn load_base(&self, conn: &mut PgConnection, id: Uuid, lock: bool) -> Result<BaseRow, Status> {
        let sql = format!(
            "SELECT {BASE_COLUMNS} FROM bases WHERE id = $1{}",
            lock_clause(lock, "")
        );
        load_one(conn, &sql, id, "no such base").await
    }

    async fn load_opening(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        lock: bool,
    ) -> Result<OpeningRow, Status> {
        let sql = format!(
            "SELECT {OPENING_COLUMNS} FROM openings o JOIN bases b ON b.id = o.base_id WHERE o.id = $1{}",
            lock_clause(lock, " OF o")
        );
        load_one(conn, &sql, id, "no such opening").await
    }

    async fn load_candidate(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        lock: bool,
    ) -> Result<CandidateRow, Status> {
        let sql = format!(
            "SELECT {CANDIDATE_COLUMNS} FROM candidates WHERE id = $1{}",
            lock_clause(lock, "")
        );
        load_one(conn, &sql, id, "no such candidate").await
    }

    async fn load_placement(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        lock: bool,
    ) -> Result<PlacementRow, Status> {
        let sql = format!(
            "SELECT {PLACEMENT_COLUMNS} FROM placements WHERE id = $1{}",
            lock_clause(lock, "")
        );
        load_one(conn, &sql, id, "no such placement").await
    }

    /// Placements are managed by the offices responsible for the candidate, and — to record
    /// the employer's answer and the work itself — by those of the base.
    fn ensure_placement_access(
        caller: &Caller,
        placement: &PlacementRow,
        opening: &OpeningRow,
    ) -> Result<(), Status> {
        if caller.can_access(&placement.township_code, &placement.county_code)
            || caller.can_access(&opening.base_township_code, &opening.base_county_code)
        {
            Ok(())
        } else {
            Err(Status::permission_denied("outside the caller's jurisdiction"))
        }
    }

    /// One lifecycle step: locks candidate, placement and opening (in that order), checks
    /// the transition and the rules that still hold about the person, moves the opening's
    /// positions, records the step and its event.
    async fn step(&self, caller: &Caller, placement_id: Uuid, step: Step) -> Result<pb::Placement, Status> {
        let mut tx = self.begin().await?;
        let candidate_id: Option<Uuid> =
            sqlx::query_scalar("SELECT candidate_id FROM placements WHERE id = $1")
                .bind(placement_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(error::database)?;
        let candidate_id = candidate_id.ok_or_else(|| Status::not_found("no such placement"))?;
        let candidate = self.load_candidate(&mut tx, candidate_id, true).await?;
        let placement = self.load_placement(&mut tx, placement_id, true).await?;
        let opening = self.load_opening(&mut tx, placement.opening_id, true).await?;
        Self::ensure_placement_access(caller, &placement, &opening)?;

        let from = placement.status()?;
        let to = step.target();
        let effect = domain::transition(from, to)
            .map_err(|illegal| Status::failed_precondition(illegal.to_string()))?;
        let today = self.today();
        if matches!(step, Step::Accept | Step::Start { .. }) {
            // The person must still be allowed to take this job: still looking for work,
            // still supervised in the job's county, offence category still accepted.
            domain::check_person(&candidate.facts(today)?, &opening.facts()?)
                .map_err(|ineligible| Status::failed_precondition(ineligible.to_string()))?;
        }
        let filled = domain::apply_position_effect(
            effect,
            count(opening.positions_filled),
            count(opening.positions_total),
        )
        .map_err(|full| Status::failed_precondition(full.to_string()))?;
        let now = self.clock.now();
        if filled != count(opening.positions_filled) {
            sqlx::query("UPDATE openings SET positions_filled = $2, updated_at = $3 WHERE id = $1")
                .bind(opening.id)
                .bind(i32::try_from(filled).unwrap_or(i32::MAX))
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(error::database)?;
        }

        let returning =
            format!("updated_at = $2, version = version + 1 WHERE id = $1 RETURNING {PLACEMENT_COLUMNS}");
        let (row, detail): (PlacementRow, serde_json::Value) = match &step {
            Step::Accept => {
                let row = sqlx::query_as(&format!(
                    "UPDATE placements SET status = 'accepted', accepted_at = $2, {returning}"
                ))
                .bind(placement_id)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(error::database)?;
                (row, serde_json::json!({ "positions_filled": filled }))
            }
            Step::Decline { by, reason } => {
                let row = sqlx::query_as(&format!(
                    "UPDATE placements SET status = 'declined', declined_at = $2, declined_by = $3,
                         decline_reason = $4, {returning}"
                ))
                .bind(placement_id)
                .bind(now)
                .bind(by.as_str())
                .bind(reason)
                .fetch_one(&mut *tx)
                .await
                .map_err(error::database)?;
                (
                    row,
                    serde_json::json!({ "declined_by": by.as_str(), "reason": reason }),
                )
            }
            Step::Start { date } => {
                let proposed_on = domain::office_today(placement.proposed_at, self.time_zone);
                if *date < proposed_on {
                    return Err(invalid_field(
                        "start_date",
                        format!("must not be before the proposal ({proposed_on})"),
                    ));
                }
                let row = sqlx::query_as(&format!(
                    "UPDATE placements SET status = 'started', start_date = $3, {returning}"
                ))
                .bind(placement_id)
                .bind(now)
                .bind(date)
                .fetch_one(&mut *tx)
                .await
                .map_err(error::database)?;
                (row, serde_json::json!({ "start_date": date }))
            }
            Step::End { date, reason, note } => {
                if let Some(start) = placement.start_date
                    && *date < start
                {
                    return Err(invalid_field(
                        "end_date",
                        format!("must be on or after the start date ({start})"),
                    ));
                }
                let row = sqlx::query_as(&format!(
                    "UPDATE placements SET status = 'ended', end_date = $3, end_reason = $4, end_note = $5, {returning}"
                ))
                .bind(placement_id)
                .bind(now)
                .bind(date)
                .bind(reason.as_str())
                .bind(note)
                .fetch_one(&mut *tx)
                .await
                .map_err(error::database)?;
                (
                    row,
                    serde_json::json!({ "end_date": date, "reason": reason.as_str() }),
                )
            }
        };
        if to.is_final() {
            // The candidate is free for the next proposal.
            sqlx::query(
                "UPDATE candidates SET current_placement_id = NULL, updated_at = $3, version = version + 1
                 WHERE id = $1 AND current_placement_id = $2",
            )
            .bind(candidate.id)
            .bind(placement_id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(error::database)?;
        }

        let placement = row.to_proto()?;
        let actor = Some(caller.actor());
        let (event_type, payload) = match step {
            Step::Accept => (
                "placement.accepted",
                pb::PlacementAccepted {
                    placement: Some(placement.clone()),
                    actor,
                }
                .encode_to_vec(),
            ),
            Step::Decline { .. } => (
                "placement.declined",
                pb::PlacementDeclined {
                    placement: Some(placement.clone()),
                    actor,
                }
                .encode_to_vec(),
            ),
            Step::Start { .. } => (
                "placement.started",
                pb::PlacementStarted {
                    placement: Some(placement.clone()),
                    actor,
                }
                .encode_to_vec(),
            ),
            Step::End { .. } => (
                "placement.ended",
                pb::PlacementEnded {
                    placement: Some(placement.clone()),
                    actor,
                }
                .encode_to_vec(),
            ),
        };
        self.emit(&mut tx, candidate.id, event_type, payload, now).await?;
        audit::record(
            &mut tx,
            caller,
            event_type,
            Some(placement_id),
            Some(candidate.id),
            detail,
        )
        .await
        .map_err(error::database)?;
        self.commit(tx).await?;
        tracing::info!(%placement_id, from = %from, to = %to, "placement moved");
        Ok(placement)
    }
}

fn name_page_token(name: &str, id: Uuid) -> String {
    validation::page_token(&serde_json::json!([name, id]))
}

fn time_page_token(created_at: DateTime<Utc>, id: Uuid) -> String {
    validation::page_token(&serde_json::json!([created_at.timestamp_micros(), id]))
}

/// Splits the extra row fetched to learn whether another page exists.
fn split_page<T>(mut rows: Vec<T>, size: u32) -> (Vec<T>, bool) {
    let has_more = rows.len() > size as usize;
    rows.truncate(size as usize);
    (rows, has_more)
}

#[tonic::async_trait]
impl pb::placement_service_server::PlacementService for Placements {
    #[tracing::instrument(skip_all, fields(base_id))]
    async fn create_base(
        &self,
        request: Request<pb::CreateBaseRequest>,
    ) -> Result<Response<pb::CreateBaseResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(MANAGERS)?;
        let base = validation::validate_create_base(request.get_ref())?;
        caller.ensure_access(&base.township_code, &base.county_code)?;
        let id = Uuid::now_v7();
        tracing::Span::current().record("base_id", tracing::field::display(id));
        let now = self.clock.now();
        let mut tx = self.begin().await?;
        let inserted: Result<BaseRow, sqlx::Error> = sqlx::query_as(&format!(
            "INSERT INTO bases (id, name, township_code, county_code, base_type, contact_name, contact_phone, active,
                 created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, true, $8, $8) RETURNING {BASE_COLUMNS}"
        ))
        .bind(id)
        .bind(&base.name)
        .bind(&base.township_code)
        .bind(&base.county_code)
        .bind(base.base_type.as_str())
        .bind(&base.contact_name)
        .bind(&base.contact_phone)
        .bind(now)
        .fetch_one(&mut *tx)
        .await;
        let row = match inserted {
            Ok(row) => row,
            Err(e) if error::is_unique_violation(&e) => {
                return Err(Status::already_exists(
                    "the township already has a base with this name",
                ));
            }
            Err(e) => return Err(error::database(e)),
        };
        let base = row.to_proto()?;
        let event = pb::BaseCreated {
            base: Some(base.clone()),
            actor: Some(caller.actor()),
        };
        self.emit(&mut tx, id, "placement.base_created", event.encode_to_vec(), now)
            .await?;
        let detail = serde_json::json!({ "township_code": row.township_code, "name": row.name });
        audit::record(&mut tx, &caller, "placement.base_created", Some(id), None, detail)
            .await
            .map_err(error::database)?;
        self.commit(tx).await?;
        Ok(Response::new(pb::CreateBaseResponse { base: Some(base) }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_base(
        &self,
        request: Request<pb::UpdateBaseRequest>,
    ) -> Result<Response<pb::UpdateBaseResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(MANAGERS)?;
        let (id, changes) = validation::validate_update_base(request.get_ref())?;
        let mut tx = self.begin().await?;
        let current = self.load_base(&mut tx, id, true).await?;
        caller.ensure_access(&current.township_code, &current.county_code)?;
        let name = changes.name.unwrap_or_else(|| current.name.clone());
        let base_type = changes
            .base_type
            .map(BaseType::as_str)
            .unwrap_or(&current.base_type)
            .to_owned();
        let contact_name = changes
            .contact_name
            .unwrap_or_else(|| current.contact_name.clone());
        let contact_phone = changes
            .contact_phone
            .unwrap_or_else(|| current.contact_phone.clone());
        let active = changes.active.unwrap_or(current.active);
        if name == current.name
            && base_type == current.base_type
            && contact_name == current.contact_name
            && contact_phone == current.contact_phone
            && active == current.active
        {
            // Nothing changes: a retried request writes nothing.
            return Ok(Response::new(pb::UpdateBaseResponse {
                base: Some(current.to_proto()?),
            }));
        }
        let now = self.clock.now();
        let updated: Result<BaseRow, sqlx::Error> = sqlx::query_as(&format!(
            "UPDATE bases SET name = $2, base_type = $3, contact_name = $4, contact_phone = $5, active = $6,
                 updated_at = $7, version = version + 1
             WHERE id = $1 RETURNING {BASE_COLUMNS}"
        ))
        .bind(id)
        .bind(&name)
        .bind(&base_type)
        .bind(&contact_name)
        .bind(&contact_phone)
        .bind(active)
        .bind(now)
        .fetch_one(&mut *tx)
        .await;
        let row = match updated {
            Ok(row) => row,
            Err(e) if error::is_unique_violation(&e) => {
                return Err(Status::already_exists(
                    "the township already has a base with this name",
                ));
            }
            Err(e) => return Err(error::database(e)),
        };
        // The event contract has no base-updated event; the change is in the audit log.
        let detail = serde_json::json!({
            "name": row.name, "type": row.base_type, "active": row.active, "was_active": current.active,
        });
        audit::record(&mut tx, &caller, "placement.base_updated", Some(id), None, detail)
            .await
            .map_err(error::database)?;
        self.commit(tx).await?;
        Ok(Response::new(pb::UpdateBaseResponse {
            base: Some(row.to_proto()?),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_bases(
        &self,
        request: Request<pb::ListBasesRequest>,
    ) -> Result<Response<pb::ListBasesResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(MANAGERS)?;
        let query = validation::validate_list_bases(request.get_ref())?;
        let (township, county) = match &query.scope {
            Scope::Township {
                township_code,
                county_code,
            } => {
                caller.ensure_access(township_code, county_code)?;
                (Some(township_code.clone()), county_code.clone())
            }
            Scope::County { county_code } => {
                caller.ensure_access("", county_code)?;
                (None, county_code.clone())
            }
            Scope::Base(_) => return Err(error::internal("base scope in ListBases")),
        };
        let (after_name, after_id) = query.page.after.clone().unzip();
        let mut tx = self.begin().await?;
        let rows: Vec<BaseRow> = sqlx::query_as(&format!(
            "SELECT {BASE_COLUMNS} FROM bases
             WHERE county_code = $1 AND ($2::text IS NULL OR township_code = $2)
               AND ($3::text IS NULL OR base_type = $3) AND ($4 OR active)
               AND ($5::text IS NULL OR (name, id) > ($5, $6))
             ORDER BY name, id LIMIT $7"
        ))
        .bind(&county)
        .bind(&township)
        .bind(query.base_type.map(BaseType::as_str))
        .bind(query.include_inactive)
        .bind(after_name)
        .bind(after_id)
        .bind(i64::from(query.page.size) + 1)
        .fetch_all(&mut *tx)
        .await
        .map_err(error::database)?;
        let (rows, has_more) = split_page(rows, query.page.size);
        let next_page_token = match (has_more, rows.last()) {
            (true, Some(last)) => name_page_token(&last.name, last.id),
            _ => String::new(),
        };
        let detail =
            serde_json::json!({ "county_code": county, "township_code": township, "returned": rows.len() });
        audit::record(&mut tx, &caller, "placement.base_list", None, None, detail)
            .await
            .map_err(error::database)?;
        tx.commit().await.map_err(error::database)?;
        Ok(Response::new(pb::ListBasesResponse {
            bases: rows.iter().map(BaseRow::to_proto).collect::<Result<_, _>>()?,
            page: Some(common::PageResponse { next_page_token }),
        }))
    }

    #[tracing::instrument(skip_all, fields(opening_id))]
    async fn create_opening(
        &self,
        request: Request<pb::CreateOpeningRequest>,
    ) -> Result<Response<pb::CreateOpeningResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(MANAGERS)?;
        let opening = validation::validate_create_opening(request.get_ref(), self.today())?;
        let mut tx = self.begin().await?;
        // Shared lock: the base cannot be deactivated while its new opening is written.
        let base: Option<BaseRow> = sqlx::query_as(&format!(
            "SELECT {BASE_COLUMNS} FROM bases WHERE id = $1 FOR SHARE"
        ))
        .bind(opening.base_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(error::database)?;
        let base = base.ok_or_else(|| Status::not_found("no such base"))?;
        caller.ensure_access(&base.township_code, &base.county_code)?;
        if !base.active {
            return Err(Status::failed_precondition(
                "the base does not take placements (inactive)",
            ));
        }
        let id = Uuid::now_v7();
        tracing::Span::current().record("opening_id", tracing::field::display(id));
        let now = self.clock.now();
        let (latitude, longitude) = opening.work_location.unzip();
        let excluded: Vec<&str> = opening.excluded_offences.iter().map(|o| o.as_str()).collect();
        sqlx::query(
            "INSERT INTO openings (id, base_id, title, sector, description, required_skills, positions_total,
                 work_township_code, work_county_code, work_latitude, work_longitude, closing_date,
                 excluded_offences, status, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'open', $14, $14)",
        )
        .bind(id)
        .bind(opening.base_id)
        .bind(&opening.title)
        .bind(opening.sector.as_str())
        .bind(&opening.description)
        .bind(&opening.required_skills)
        .bind(i32::try_from(opening.positions_total).unwrap_or(i32::MAX))
        .bind(&opening.work_township_code)
        .bind(&opening.work_county_code)
        .bind(latitude)
        .bind(longitude)
        .bind(opening.closing_date)
        .bind(&excluded)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(error::database)?;
        let row = self.load_opening(&mut tx, id, false).await?;
        let proto = row.to_proto()?;
        let event = pb::OpeningCreated {
            opening: Some(proto.clone()),
            actor: Some(caller.actor()),
        };
        self.emit(
            &mut tx,
            base.id,
            "placement.opening_created",
            event.encode_to_vec(),
            now,
        )
        .await?;
        let detail = serde_json::json!({
            "base_id": base.id, "title": row.title, "positions_total": row.positions_total,
            "work_county_code": row.work_county_code, "excluded": excluded,
        });
        audit::record(
            &mut tx,
            &caller,
            "placement.opening_created",
            Some(id),
            None,
            detail,
        )
        .await
        .map_err(error::database)?;
        self.commit(tx).await?;
        Ok(Response::new(pb::CreateOpeningResponse { opening: Some(proto) }))
    }

    #[tracing::instrument(skip_all)]
    async fn close_opening(
        &self,
        request: Request<pb::CloseOpeningRequest>,
    ) -> Result<Response<pb::CloseOpeningResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(MANAGERS)?;
        let (id, reason) = validation::validate_close_opening(request.get_ref())?;
        let mut tx = self.begin().await?;
        let current = self.load_opening(&mut tx, id, true).await?;
        caller.ensure_access(&current.base_township_code, &current.base_county_code)?;
        if current.status()? == OpeningStatus::Closed {
            // Closing a closed opening is a no-op (and publishes nothing).
            return Ok(Response::new(pb::CloseOpeningResponse {
                opening: Some(current.to_proto()?),
            }));
        }
        let now = self.clock.now();
        sqlx::query(
            "UPDATE openings SET status = 'closed', close_reason = $2, updated_at = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(&reason)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(error::database)?;
        let row = self.load_opening(&mut tx, id, false).await?;
        let proto = row.to_proto()?;
        let event = pb::OpeningClosed {
            opening: Some(proto.clone()),
            actor: Some(caller.actor()),
        };
        self.emit(
            &mut tx,
            row.base_id,
            "placement.opening_closed",
            event.encode_to_vec(),
            now,
        )
        .await?;
        audit::record(
            &mut tx,
            &caller,
            "placement.opening_closed",
            Some(id),
            None,
            serde_json::json!({ "reason": reason }),
        )
        .await
        .map_err(error::database)?;
        self.commit(tx).await?;
        Ok(Response::new(pb::CloseOpeningResponse { opening: Some(proto) }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_openings(
        &self,
        request: Request<pb::ListOpeningsRequest>,
    ) -> Result<Response<pb::ListOpeningsResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(MANAGERS)?;
        let query = validation::validate_list_openings(request.get_ref())?;
        let mut tx = self.begin().await?;
        let (base_id, township, county) = match &query.scope {
            Scope::Base(base_id) => {
                let base = self.load_base(&mut tx, *base_id, false).await?;
                if !can_read_county(&caller, &base.county_code) {
                    return Err(Status::permission_denied("outside the caller's jurisdiction"));
                }
                (Some(*base_id), None, None)
            }
            Scope::Township {
                township_code,
                county_code,
            } => {
                if !can_read_county(&caller, county_code) {
                    return Err(Status::permission_denied("outside the caller's jurisdiction"));
                }
                (None, Some(township_code.clone()), None)
            }
            Scope::County { county_code } => {
                if !can_read_county(&caller, county_code) {
                    return Err(Status::permission_denied("outside the caller's jurisdiction"));
                }
                (None, None, Some(county_code.clone()))
            }
        };
        let after = query.page.after.map(|(micros, id)| {
            (
                DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MIN_UTC),
                id,
            )
        });
        let (after_time, after_id) = after.unzip();
        let rows: Vec<OpeningRow> = sqlx::query_as(&format!(
            "SELECT {OPENING_COLUMNS} FROM openings o JOIN bases b ON b.id = o.base_id
             WHERE ($1::uuid IS NULL OR o.base_id = $1) AND ($2::text IS NULL OR o.work_township_code = $2)
               AND ($3::text IS NULL OR o.work_county_code = $3) AND ($4::text IS NULL OR o.status = $4)
               AND ($5::text IS NULL OR o.sector = $5)
               AND ($6::timestamptz IS NULL OR (o.created_at, o.id) < ($6, $7))
             ORDER BY o.created_at DESC, o.id DESC LIMIT $8"
        ))
        .bind(base_id)
        .bind(&township)
        .bind(&county)
        .bind(query.status.map(OpeningStatus::as_str))
        .bind(query.sector.map(Sector::as_str))
        .bind(after_time)
        .bind(after_id)
        .bind(i64::from(query.page.size) + 1)
        .fetch_all(&mut *tx)
        .await
        .map_err(error::database)?;
        let (rows, has_more) = split_page(rows, query.page.size);
        let next_page_token = match (has_more, rows.last()) {
            (true, Some(last)) => time_page_token(last.created_at, last.id),
            _ => String::new(),
        };
        tx.commit().await.map_err(error::database)?;
        Ok(Response::new(pb::ListOpeningsResponse {
            openings: rows.iter().map(OpeningRow::to_proto).collect::<Result<_, _>>()?,
            page: Some(common::PageResponse { next_page_token }),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_candidates(
        &self,
        request: Request<pb::ListCandidatesRequest>,
    ) -> Result<Response<pb::ListCandidatesResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(MANAGERS)?;
        let query = validation::validate_list_candidates(request.get_ref())?;
        let (township, county) = match &query.scope {
            Scope::Township {
                township_code,
                county_code,
            } => {
                caller.ensure_access(township_code, county_code)?;
                (Some(township_code.clone()), county_code.clone())
            }
            Scope::County { county_code } => {
                caller.ensure_access("", county_code)?;
                (None, county_code.clone())
            }
            Scope::Base(_) => return Err(error::internal("base scope in ListCandidates")),
        };
        let today = self.today();
        let (after_name, after_id) = query.page.after.clone().unzip();
        let mut tx = self.begin().await?;
        let rows: Vec<CandidateRow> = sqlx::query_as(&format!(
            "SELECT {CANDIDATE_COLUMNS} FROM candidates
             WHERE county_code = $1 AND ($2::text IS NULL OR township_code = $2)
               AND ($3::text IS NULL OR source = $3)
               AND ($4 OR (active AND (assistance_ends_on IS NULL OR assistance_ends_on >= $5)))
               AND (NOT $6 OR current_placement_id IS NULL)
               AND ($7::text IS NULL OR (name, id) > ($7, $8))
             ORDER BY name, id LIMIT $9"
        ))
        .bind(&county)
        .bind(&township)
        .bind(query.source.map(CandidateSource::as_str))
        .bind(query.include_inactive)
        .bind(today)
        .bind(query.only_unplaced)
        .bind(after_name)
        .bind(after_id)
        .bind(i64::from(query.page.size) + 1)
        .fetch_all(&mut *tx)
        .await
        .map_err(error::database)?;
        let (rows, has_more) = split_page(rows, query.page.size);
        let next_page_token = match (has_more, rows.last()) {
            (true, Some(last)) => name_page_token(&last.name, last.id),
            _ => String::new(),
        };
        let detail =
            serde_json::json!({ "county_code": county, "township_code": township, "returned": rows.len() });
        audit::record(&mut tx, &caller, "placement.candidate_list", None, None, detail)
            .await
            .map_err(error::database)?;
        tx.commit().await.map_err(error::database)?;
        Ok(Response::new(pb::ListCandidatesResponse {
            candidates: rows
                .iter()
                .map(|row| row.to_proto(today))
                .collect::<Result<_, _>>()?,
            page: Some(common::PageResponse { next_page_token }),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_candidate_profile(
        &self,
        request: Request<pb::UpdateCandidateProfileRequest>,
    ) -> Result<Response<pb::UpdateCandidateProfileResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(MANAGERS)?;
        let profile = validation::validate_profile(request.get_ref())?;
        let mut tx = self.begin().await?;
        let current = self.load_candidate(&mut tx, profile.candidate_id, true).await?;
        caller.ensure_access(&current.township_code, &current.county_code)?;
        if let Some(offence) = profile.offence
            && current.offence_from_handover
            && current.offence()? != Some(offence)
        {
            return Err(Status::failed_precondition(
                "the offence category came from the prison's handover and cannot be changed here",
            ));
        }
        let now = self.clock.now();
        let sectors: Vec<&str> = profile.sector_preferences.iter().map(|s| s.as_str()).collect();
        let row: CandidateRow = sqlx::query_as(&format!(
            "UPDATE candidates SET skills = $2, sector_preferences = $3,
                 offence_category = COALESCE($4, offence_category), updated_at = $5, version = version + 1
             WHERE id = $1 RETURNING {CANDIDATE_COLUMNS}"
        ))
        .bind(current.id)
        .bind(&profile.skills)
        .bind(&sectors)
        .bind(profile.offence.map(Offence::as_str))
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(error::database)?;
        // Candidates have no event of their own in the contract; the change is audited.
        let detail = serde_json::json!({
            "skills": profile.skills.len(), "sector_preferences": sectors,
            "offence_category_set": profile.offence.map(Offence::as_str),
        });
        audit::record(
            &mut tx,
            &caller,
            "placement.candidate_profile_updated",
            Some(row.id),
            Some(row.id),
            detail,
        )
        .await
        .map_err(error::database)?;
        tx.commit().await.map_err(error::database)?;
        Ok(Response::new(pb::UpdateCandidateProfileResponse {
            candidate: Some(row.to_proto(self.today())?),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn match_openings(
        &self,
        request: Request<pb::MatchOpeningsRequest>,
    ) -> Result<Response<pb::MatchOpeningsResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(MANAGERS)?;
        let (candidate_id, max_results) = validation::validate_match(request.get_ref())?;
        let today = self.today();
        let mut tx = self.begin().await?;
        let candidate = self.load_candidate(&mut tx, candidate_id, false).await?;
        caller.ensure_access(&candidate.township_code, &candidate.county_code)?;
        let facts = candidate.facts(today)?;
        if !facts.active {
            return Err(Status::failed_precondition(
                "the candidate no longer looks for work",
            ));
        }
        // The database narrows to what can possibly match (a supervisee's own county only);
        // the domain rules then decide every opening.
        let county_only =
            (facts.source == CandidateSource::Supervisee).then_some(candidate.county_code.as_str());
        let rows: Vec<OpeningRow> = sqlx::query_as(&format!(
            "SELECT {OPENING_COLUMNS} FROM openings o JOIN bases b ON b.id = o.base_id
             WHERE o.status = 'open' AND b.active AND o.positions_filled < o.positions_total
               AND o.closing_date >= $1 AND ($2::text IS NULL OR o.work_county_code = $2)
               AND NOT EXISTS (SELECT 1 FROM placements p WHERE p.opening_id = o.id AND p.candidate_id = $3
                               AND p.status IN ('proposed', 'accepted', 'started'))
             ORDER BY o.id LIMIT $4"
        ))
        .bind(today)
        .bind(county_only)
        .bind(candidate.id)
        .bind(MATCH_SCAN_LIMIT)
        .fetch_all(&mut *tx)
        .await
        .map_err(error::database)?;
        let openings: Vec<(Uuid, OpeningFacts)> = rows
            .iter()
            .map(|row| Ok((row.id, row.facts()?)))
            .collect::<Result<_, Status>>()?;
        let ranked = domain::rank(&facts, &openings, today, max_results);
        let mut matches = Vec::with_capacity(ranked.len());
        for (id, found) in ranked {
            let Some(row) = rows.iter().find(|row| row.id == id) else {
                continue;
            };
            matches.push(pb::OpeningMatch {
                opening: Some(row.to_proto()?),
                base_name: row.base_name.clone(),
                score: found.score,
                reasons: found.reasons,
            });
        }
        let detail = serde_json::json!({ "considered": rows.len(), "returned": matches.len() });
        audit::record(
            &mut tx,
            &caller,
            "placement.match",
            Some(candidate.id),
            Some(candidate.id),
            detail,
        )
        .await
        .map_err(error::database)?;
        tx.commit().await.map_err(error::database)?;
        Ok(Response::new(pb::MatchOpeningsResponse { matches }))
    }

    #[tracing::instrument(skip_all, fields(placement_id))]
    async fn propose_placement(
        &self,
        request: Request<pb::ProposePlacementRequest>,
    ) -> Result<Response<pb::ProposePlacementResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(MANAGERS)?;
        let proposal = validation::validate_propose(request.get_ref())?;
        let today = self.today();
        let mut tx = self.begin().await?;
        // The candidate's row lock serialises proposals for one person, so "one current
        // placement per candidate" is decided by one transaction at a time.
        let candidate = self.load_candidate(&mut tx, proposal.candidate_id, true).await?;
        caller.ensure_access(&candidate.township_code, &candidate.county_code)?;
        let opening = self.load_opening(&mut tx, proposal.opening_id, false).await?;
        let same_opening: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM placements WHERE candidate_id = $1 AND opening_id = $2
                 AND status IN ('proposed', 'accepted', 'started')",
        )
        .bind(candidate.id)
        .bind(opening.id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(error::database)?;
        if let Some(existing) = same_opening {
            return Err(Status::already_exists(format!(
                "the candidate is already proposed for this opening (placement {existing})"
            )));
        }
        if let Some(current) = candidate.current_placement_id {
            return Err(Status::failed_precondition(format!(
                "the candidate already has a current placement ({current})"
            )));
        }
        domain::check_proposal(&candidate.facts(today)?, &opening.facts()?, today)
            .map_err(|ineligible| Status::failed_precondition(ineligible.to_string()))?;

        let id = Uuid::now_v7();
        tracing::Span::current().record("placement_id", tracing::field::display(id));
        let now = self.clock.now();
        let inserted: Result<PlacementRow, sqlx::Error> = sqlx::query_as(&format!(
            "INSERT INTO placements (id, candidate_id, opening_id, base_id, status, township_code, county_code,
                 proposed_by_subject, proposed_by_role, proposed_at, note, updated_at)
             VALUES ($1, $2, $3, $4, 'proposed', $5, $6, $7, $8, $9, $10, $9) RETURNING {PLACEMENT_COLUMNS}"
        ))
        .bind(id)
        .bind(candidate.id)
        .bind(opening.id)
        .bind(opening.base_id)
        .bind(&candidate.township_code)
        .bind(&candidate.county_code)
        .bind(&caller.subject)
        .bind(caller.role.as_str())
        .bind(now)
        .bind(&proposal.note)
        .fetch_one(&mut *tx)
        .await;
        let row = match inserted {
            Ok(row) => row,
            Err(e) if error::is_unique_violation(&e) => {
                return Err(Status::failed_precondition(
                    "the candidate already has a current placement",
                ));
            }
            Err(e) => return Err(error::database(e)),
        };
        sqlx::query(
            "UPDATE candidates SET current_placement_id = $2, updated_at = $3, version = version + 1 WHERE id = $1",
        )
        .bind(candidate.id)
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(error::database)?;
        let placement = row.to_proto()?;
        let event = pb::PlacementProposed {
            placement: Some(placement.clone()),
            actor: Some(caller.actor()),
        };
        self.emit(
            &mut tx,
            candidate.id,
            "placement.proposed",
            event.encode_to_vec(),
            now,
        )
        .await?;
        let detail = serde_json::json!({ "opening_id": opening.id, "base_id": opening.base_id });
        audit::record(
            &mut tx,
            &caller,
            "placement.proposed",
            Some(id),
            Some(candidate.id),
            detail,
        )
        .await
        .map_err(error::database)?;
        self.commit(tx).await?;
        Ok(Response::new(pb::ProposePlacementResponse {
            placement: Some(placement),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn accept_placement(
        &self,
        request: Request<pb::AcceptPlacementRequest>,
    ) -> Result<Response<pb::AcceptPlacementResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(MANAGERS)?;
        let id = validation::require_uuid("placement_id", &request.get_ref().placement_id)?;
        let placement = self.step(&caller, id, Step::Accept).await?;
        Ok(Response::new(pb::AcceptPlacementResponse {
            placement: Some(placement),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn decline_placement(
        &self,
        request: Request<pb::DeclinePlacementRequest>,
    ) -> Result<Response<pb::DeclinePlacementResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(MANAGERS)?;
        let (id, by, reason) = validation::validate_decline(request.get_ref())?;
        let placement = self.step(&caller, id, Step::Decline { by, reason }).await?;
        Ok(Response::new(pb::DeclinePlacementResponse {
            placement: Some(placement),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn start_placement(
        &self,
        request: Request<pb::StartPlacementRequest>,
    ) -> Result<Response<pb::StartPlacementResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(MANAGERS)?;
        let (id, date) = validation::validate_start(request.get_ref())?;
        let placement = self.step(&caller, id, Step::Start { date }).await?;
        Ok(Response::new(pb::StartPlacementResponse {
            placement: Some(placement),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn end_placement(
        &self,
        request: Request<pb::EndPlacementRequest>,
    ) -> Result<Response<pb::EndPlacementResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(MANAGERS)?;
        let ending = validation::validate_end(request.get_ref())?;
        let step = Step::End {
            date: ending.end_date,
            reason: ending.reason,
            note: ending.note,
        };
        let placement = self.step(&caller, ending.placement_id, step).await?;
        Ok(Response::new(pb::EndPlacementResponse {
            placement: Some(placement),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_placement(
        &self,
        request: Request<pb::GetPlacementRequest>,
    ) -> Result<Response<pb::GetPlacementResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(MANAGERS)?;
        let id = validation::require_uuid("placement_id", &request.get_ref().placement_id)?;
        let mut tx = self.begin().await?;
        let placement = self.load_placement(&mut tx, id, false).await?;
        let opening = self.load_opening(&mut tx, placement.opening_id, false).await?;
        Self::ensure_placement_access(&caller, &placement, &opening)?;
        audit::record(
            &mut tx,
            &caller,
            "placement.get",
            Some(id),
            Some(placement.candidate_id),
            serde_json::json!({}),
        )
        .await
        .map_err(error::database)?;
        tx.commit().await.map_err(error::database)?;
        Ok(Response::new(pb::GetPlacementResponse {
            placement: Some(placement.to_proto()?),
        }))
    }
}

/// `FOR NO KEY UPDATE` (of `table`, e.g. " OF o", in a join) when `lock`: the row lock that
/// serialises changes to one record without blocking inserts that reference it.
fn lock_clause(lock: bool, table: &str) -> String {
    if lock {
        format!(" FOR NO KEY UPDATE{table}")
    } else {
        String::new()
    }
}

/// The one row `sql` selects for `id`, or `NotFound` with `missing`.
async fn load_one<R>(conn: &mut PgConnection, sql: &str, id: Uuid, missing: &'static str) -> Result<R, Status>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let row: Option<R> = sqlx::query_as(sql)
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(error::database)?;
    row.ok_or_else(|| Status::not_found(missing))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, township: Option<&str>, county: Option<&str>) -> Caller {
        Caller {
            subject: "someone".into(),
            role,
            township: township.map(str::to_owned),
            county: county.map(str::to_owned),
            prison: None,
        }
    }

    #[test]
    fn openings_are_readable_county_wide_but_not_by_prisons() {
        let officer = caller(Role::Officer, Some("620702001"), Some("620702"));
        assert!(can_read_county(&officer, "620702"));
        assert!(!can_read_county(&officer, "620721"));
        assert!(can_read_county(&caller(Role::Admin, None, None), "620721"));
        assert!(!can_read_county(&caller(Role::Prison, None, None), "620702"));
    }

    #[test]
    fn pages_split_off_the_probe_row() {
        assert_eq!(split_page(vec![1, 2, 3], 2), (vec![1, 2], true));
        assert_eq!(split_page(vec![1, 2], 2), (vec![1, 2], false));
    }
}
