//! The handover gRPC API. Every handler authenticates the caller (done by the interceptor),
//! validates input naming each bad field, checks the caller's standing towards the handover
//! (the releasing prison, the destination township office, the destination county bureau),
//! asks the domain whether the step is legal, and writes the change, its `handover.*` event
//! (outbox) and an audit record in one transaction.

use std::{collections::HashMap, sync::Arc};

use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use mesh_kit::{
    audit,
    auth::{Caller, Role, caller},
    clock::SharedClock,
    crypto::FieldCrypto,
    error::{self, FieldViolations, invalid_field},
    jurisdiction::Directory,
    national_id::NationalId,
    outbox::{NewEvent, OutboxSignal},
    proto_time::{to_date, to_timestamp},
};
use mesh_proto::{common, handover as pb};
use prost::Message;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::{
    self, CancelReason, IllegalTransition, Level, OffenceCategory, ReleaseCategory, Rules,
    Status as HandoverStatus, Step,
};

/// Associated-data and blind-index contexts, binding each value to its purpose.
const NATIONAL_ID: &str = "handovers.national_id";
const RISK_NOTES: &str = "handovers.risk_notes";
const SUBMISSION: &str = "handovers.submission";
const REPORT_IN: &str = "handovers.report_in";

const DEFAULT_PAGE_SIZE: u32 = 50;
const MAX_PAGE_SIZE: u32 = 500;

/// Roles acting for the releasing prison (admins may act for any prison).
const PRISON_SIDE: &[Role] = &[Role::Prison, Role::Admin];
/// Roles acting for the receiving township office.
const TOWNSHIP_SIDE: &[Role] = &[Role::Officer, Role::TownshipOffice, Role::Admin];
/// Roles that may read handovers (each within its own jurisdiction).
const READERS: &[Role] = &[
    Role::Prison,
    Role::Officer,
    Role::TownshipOffice,
    Role::CountyBureau,
    Role::Admin,
    Role::System,
];

/// The handover service's state.
#[derive(Clone)]
pub struct Handovers {
    pool: PgPool,
    crypto: Arc<FieldCrypto>,
    clock: SharedClock,
    outbox_signal: OutboxSignal,
    topic: String,
    rules: Rules,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    prison_id: String,
    prison_reference: String,
    submission_fingerprint: Vec<u8>,
    person_name: String,
    national_id_sealed: Vec<u8>,
    date_of_birth: NaiveDate,
    category: String,
    expected_release_date: NaiveDate,
    township_code: String,
    county_code: String,
    key_assistance_target: bool,
    risk_notes_sealed: Vec<u8>,
    offence_category: String,
    status: String,
    notified_at: DateTime<Utc>,
    acknowledged_at: Option<DateTime<Utc>>,
    acknowledged_by_subject: Option<String>,
    acknowledged_by_role: Option<String>,
    actual_release_time: Option<DateTime<Utc>>,
    gate_collected_at: Option<DateTime<Utc>>,
    gate_collecting_officer_id: Option<String>,
    reported_in_at: Option<DateTime<Utc>>,
    assigned_level: Option<String>,
    assigned_officer_id: Option<String>,
    report_in_fingerprint: Option<Vec<u8>>,
    cancel_reason: Option<String>,
    cancel_note: Option<String>,
    cancelled_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    version: i64,
}

const COLUMNS: &str = "id, prison_id, prison_reference, submission_fingerprint, person_name, national_id_sealed, \
     date_of_birth, category, expected_release_date, township_code, county_code, key_assistance_target, \
     risk_notes_sealed, offence_category, status, notified_at, acknowledged_at, acknowledged_by_subject, \
     acknowledged_by_role, actual_release_time, gate_collected_at, gate_collecting_officer_id, reported_in_at, \
     assigned_level, assigned_officer_id, report_in_fingerprint, cancel_reason, cancel_note, cancelled_at, \
     updated_at, version";

impl Row {
    fn status(&self) -> Result<HandoverStatus, Status> {
        HandoverStatus::parse(&self.status).ok_or_else(|| error::internal("unknown stored status"))
    }

    fn category(&self) -> Result<ReleaseCategory, Status> {
        ReleaseCategory::parse(&self.category).ok_or_else(|| error::internal("unknown stored category"))
    }

    fn offence_category(&self) -> Result<OffenceCategory, Status> {
        OffenceCategory::parse(&self.offence_category)
            .ok_or_else(|| error::internal("unknown stored offence category"))
    }

    fn destination(&self) -> common::Jurisdiction {
        common::Jurisdiction {
            township_code: self.township_code.clone(),
            county_code: self.county_code.clone(),
        }
    }

    /// What events say about the handover: no national ID number, no risk notes.
    fn snapshot(&self) -> Result<pb::HandoverSnapshot, Status> {
        Ok(pb::HandoverSnapshot {
            handover_id: self.id.to_string(),
            prison_id: self.prison_id.clone(),
            prison_reference: self.prison_reference.clone(),
            person_name: self.person_name.clone(),
            category: self.category()?.to_proto() as i32,
            expected_release_date: Some(to_date(self.expected_release_date)),
            destination: Some(self.destination()),
            key_assistance_target: self.key_assistance_target,
            offence_category: self.offence_category()?.to_proto() as i32,
            status: self.status()?.to_proto() as i32,
            notified_at: Some(to_timestamp(self.notified_at)),
            acknowledged_at: self.acknowledged_at.map(to_timestamp),
            actual_release_time: self.actual_release_time.map(to_timestamp),
            gate_collected_at: self.gate_collected_at.map(to_timestamp),
            reported_in_at: self.reported_in_at.map(to_timestamp),
            version: self.version,
        })
    }
}

#[derive(sqlx::FromRow)]
struct AmendmentRow {
    handover_id: Uuid,
    previous_expected_release_date: Option<NaiveDate>,
    new_expected_release_date: Option<NaiveDate>,
    previous_township_code: Option<String>,
    previous_county_code: Option<String>,
    new_township_code: Option<String>,
    new_county_code: Option<String>,
    reason: String,
    amended_by_subject: String,
    amended_by_role: String,
    amended_at: DateTime<Utc>,
}

impl AmendmentRow {
    fn to_proto(&self) -> pb::Amendment {
        let jurisdiction = |township: &Option<String>, county: &Option<String>| match (township, county) {
            (Some(township), Some(county)) => Some(common::Jurisdiction {
                township_code: township.clone(),
                county_code: county.clone(),
            }),
            _ => None,
        };
        pb::Amendment {
            previous_expected_release_date: self.previous_expected_release_date.map(to_date),
            new_expected_release_date: self.new_expected_release_date.map(to_date),
            previous_destination: jurisdiction(&self.previous_township_code, &self.previous_county_code),
            new_destination: jurisdiction(&self.new_township_code, &self.new_county_code),
            reason: self.reason.clone(),
            amended_by: Some(common::Actor {
                subject: self.amended_by_subject.clone(),
                role: self.amended_by_role.clone(),
            }),
            amended_at: Some(to_timestamp(self.amended_at)),
        }
    }
}

/// Whether `caller` may read `row`: the releasing prison, the destination township's office
/// and officers, the destination county's bureau, admins and mesh services.
fn can_read(caller: &Caller, row: &Row) -> bool {
    match caller.role {
        Role::Prison => caller.prison.as_deref() == Some(row.prison_id.as_str()),
        _ => caller.can_access(&row.township_code, &row.county_code),
    }
}

fn ensure_can_read(caller: &Caller, row: &Row) -> Result<(), Status> {
    if can_read(caller, row) {
        Ok(())
    } else {
        Err(Status::permission_denied(
            "this handover is outside the caller's jurisdiction",
        ))
    }
}

/// Steps of the prison: only the releasing prison (or an admin) takes them.
fn ensure_releasing_prison(caller: &Caller, row: &Row) -> Result<(), Status> {
    match caller.role {
        Role::Admin => Ok(()),
        Role::Prison if caller.prison.as_deref() == Some(row.prison_id.as_str()) => Ok(()),
        Role::Prison => Err(Status::permission_denied("this notice belongs to another prison")),
        _ => Err(Status::permission_denied("only the releasing prison may do this")),
    }
}

/// Steps of the township: only the destination township's office and officers (or an admin).
fn ensure_receiving_office(caller: &Caller, row: &Row) -> Result<(), Status> {
    match caller.role {
        Role::Admin => Ok(()),
        Role::Officer | Role::TownshipOffice
            if caller.township.as_deref() == Some(row.township_code.as_str()) =>
        {
            Ok(())
        }
        _ => Err(Status::permission_denied(
            "only the destination township office may do this",
        )),
    }
}

fn illegal(error: IllegalTransition) -> Status {
    Status::failed_precondition(error.to_string())
}

fn parse_id(value: &str) -> Result<Uuid, Status> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid_field("handover_id", "must be a UUID"))
}

/// Which handovers a list covers.
enum Scope {
    Prison(String),
    Township(String),
    County(String),
}

impl Scope {
    /// The column the scope filters on (a fixed name, never caller input).
    fn column(&self) -> &'static str {
        match self {
            Scope::Prison(_) => "prison_id",
            Scope::Township(_) => "township_code",
            Scope::County(_) => "county_code",
        }
    }

    fn value(&self) -> &str {
        match self {
            Scope::Prison(value) | Scope::Township(value) | Scope::County(value) => value,
        }
    }

    fn ensure_access(&self, caller: &Caller) -> Result<(), Status> {
        let allowed = match (self, caller.role) {
            (_, Role::Admin | Role::System) => true,
            (Scope::Prison(prison), Role::Prison) => caller.prison.as_deref() == Some(prison.as_str()),
            (Scope::Township(township), Role::Officer | Role::TownshipOffice) => {
                caller.township.as_deref() == Some(township.as_str())
            }
            (Scope::Township(township), Role::CountyBureau) => Directory::get()
                .township(township)
                .is_some_and(|known| caller.county.as_deref() == Some(known.county_code.as_str())),
            (Scope::County(county), Role::CountyBureau) => caller.county.as_deref() == Some(county.as_str()),
            _ => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(Status::permission_denied("outside the caller's jurisdiction"))
        }
    }
}

/// Page tokens are the (notified_at, id) of the last row returned: 8 bytes of microseconds
/// since the epoch, big-endian, then the 16 bytes of the UUID; base64url.
fn encode_page_token(notified_at: DateTime<Utc>, id: Uuid) -> String {
    let mut bytes = Vec::with_capacity(24);
    bytes.extend_from_slice(&notified_at.timestamp_micros().to_be_bytes());
    bytes.extend_from_slice(id.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_page_token(token: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let (micros, id) = bytes.split_at_checked(8)?;
    let micros = i64::from_be_bytes(micros.try_into().ok()?);
    Some((
        DateTime::from_timestamp_micros(micros)?,
        Uuid::from_slice(id).ok()?,
    ))
}

impl Handovers {
    pub fn new(
        pool: PgPool,
        crypto: Arc<FieldCrypto>,
        clock: SharedClock,
        outbox_signal: OutboxSignal,
        topic: String,
        rules: Rules,
    ) -> Self {
        Self {
            pool,
            crypto,
            clock,
            outbox_signal,
            topic,
            rules,
        }
    }

    /// Today's date in the office time zone, from the injected clock.
    fn today(&self) -> NaiveDate {
        self.clock
            .now()
            .with_timezone(&Directory::get().time_zone)
            .date_naive()
    }

    fn to_proto(&self, row: &Row, amendments: Vec<pb::Amendment>) -> Result<pb::Handover, Status> {
        let national_id = self
            .crypto
            .open(&row.national_id_sealed, NATIONAL_ID)
            .map_err(error::internal)?;
        let masked = NationalId::parse(&national_id, NaiveDate::MAX)
            .map(|id| id.masked())
            .unwrap_or_else(|_| "******************".to_owned());
        let risk_notes = self
            .crypto
            .open(&row.risk_notes_sealed, RISK_NOTES)
            .map_err(error::internal)?;
        let acknowledged_by = match (&row.acknowledged_by_subject, &row.acknowledged_by_role) {
            (Some(subject), Some(role)) => Some(common::Actor {
                subject: subject.clone(),
                role: role.clone(),
            }),
            _ => None,
        };
        let assigned_level = match &row.assigned_level {
            None => 0,
            Some(level) => Level::parse(level)
                .ok_or_else(|| error::internal("unknown stored level"))?
                .to_proto() as i32,
        };
        let cancel_reason = match &row.cancel_reason {
            None => 0,
            Some(reason) => CancelReason::parse(reason)
                .ok_or_else(|| error::internal("unknown stored cancel reason"))?
                .to_proto() as i32,
        };
        Ok(pb::Handover {
            handover_id: row.id.to_string(),
            prison_id: row.prison_id.clone(),
            prison_reference: row.prison_reference.clone(),
            person_name: row.person_name.clone(),
            national_id_masked: masked,
            date_of_birth: Some(to_date(row.date_of_birth)),
            category: row.category()?.to_proto() as i32,
            expected_release_date: Some(to_date(row.expected_release_date)),
            destination: Some(row.destination()),
            key_assistance_target: row.key_assistance_target,
            risk_notes,
            offence_category: row.offence_category()?.to_proto() as i32,
            status: row.status()?.to_proto() as i32,
            notified_at: Some(to_timestamp(row.notified_at)),
            acknowledged_at: row.acknowledged_at.map(to_timestamp),
            acknowledged_by,
            actual_release_time: row.actual_release_time.map(to_timestamp),
            gate_collected_at: row.gate_collected_at.map(to_timestamp),
            gate_collecting_officer_id: row.gate_collecting_officer_id.clone().unwrap_or_default(),
            reported_in_at: row.reported_in_at.map(to_timestamp),
            assigned_level,
            assigned_officer_id: row.assigned_officer_id.clone().unwrap_or_default(),
            cancel_reason,
            cancel_note: row.cancel_note.clone().unwrap_or_default(),
            cancelled_at: row.cancelled_at.map(to_timestamp),
            amendments,
            updated_at: Some(to_timestamp(row.updated_at)),
            version: row.version,
        })
    }

    /// The amendments of each of `ids`, oldest first.
    async fn amendments(
        &self,
        conn: &mut PgConnection,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, Vec<pb::Amendment>>, Status> {
        let rows: Vec<AmendmentRow> = sqlx::query_as(
            "SELECT handover_id, previous_expected_release_date, new_expected_release_date, previous_township_code,
                 previous_county_code, new_township_code, new_county_code, reason, amended_by_subject,
                 amended_by_role, amended_at
             FROM handover_amendments WHERE handover_id = ANY($1) ORDER BY id",
        )
        .bind(ids)
        .fetch_all(conn)
        .await
        .map_err(error::database)?;
        let mut by_handover: HashMap<Uuid, Vec<pb::Amendment>> = HashMap::new();
        for row in rows {
            by_handover
                .entry(row.handover_id)
                .or_default()
                .push(row.to_proto());
        }
        Ok(by_handover)
    }

    /// One handover as callers see it, amendments included.
    async fn full(&self, conn: &mut PgConnection, row: &Row) -> Result<pb::Handover, Status> {
        let mut amendments = self.amendments(conn, &[row.id]).await?;
        self.to_proto(row, amendments.remove(&row.id).unwrap_or_default())
    }

    /// Loads a handover for update: its row lock is held until the transaction ends, so
    /// concurrent steps on one handover apply one after the other.
    async fn load_for_update(&self, conn: &mut PgConnection, id: Uuid) -> Result<Row, Status> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM handovers WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(error::database)?;
        row.ok_or_else(|| Status::not_found("no such handover"))
    }

    /// Answers a repeated step that already took effect: the current handover, no event.
    async fn repeated(
        &self,
        mut tx: Transaction<'static, Postgres>,
        caller: &Caller,
        step: &str,
        row: &Row,
    ) -> Result<pb::Handover, Status> {
        audit::record(
            &mut tx,
            caller,
            "handover.repeated",
            Some(row.id),
            None,
            serde_json::json!({ "step": step }),
        )
        .await
        .map_err(error::database)?;
        let handover = self.full(&mut tx, row).await?;
        tx.commit().await.map_err(error::database)?;
        Ok(handover)
    }

    /// The notice a prison submitted under `reference`, if any.
    async fn submitted(
        &self,
        conn: &mut PgConnection,
        prison_id: &str,
        reference: &str,
    ) -> Result<Option<Row>, Status> {
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM handovers WHERE prison_id = $1 AND prison_reference = $2"
        ))
        .bind(prison_id)
        .bind(reference)
        .fetch_optional(conn)
        .await
        .map_err(error::database)
    }

    /// A notice submitted again under an existing reference: the same content is an
    /// idempotent repeat (the existing handover, no event); different content is refused,
    /// because changes go through AmendReleaseNotice with a reason.
    async fn resubmission(
        &self,
        tx: Transaction<'static, Postgres>,
        caller: &Caller,
        existing: &Row,
        fingerprint: &[u8],
    ) -> Result<Response<pb::SubmitReleaseNoticeResponse>, Status> {
        tracing::Span::current().record("handover_id", tracing::field::display(existing.id));
        if existing.submission_fingerprint != fingerprint {
            return Err(Status::already_exists(
                "this prison_reference was already submitted with different content; \
                 use AmendReleaseNotice to change the notice",
            ));
        }
        let handover = self.repeated(tx, caller, "notified", existing).await?;
        Ok(Response::new(pb::SubmitReleaseNoticeResponse {
            handover: Some(handover),
            duplicate: true,
        }))
    }

    /// Writes the updated row's event and audit record, commits, and wakes the relay.
    async fn finish_change(
        &self,
        mut tx: Transaction<'static, Postgres>,
        caller: &Caller,
        event_type: &'static str,
        row: &Row,
        payload: Vec<u8>,
        detail: serde_json::Value,
    ) -> Result<pb::Handover, Status> {
        let event = NewEvent {
            topic: self.topic.clone(),
            key: row.id.to_string(),
            event_type,
            payload,
            occurred_at: row.updated_at,
        };
        audit::record_change(&mut tx, caller, event, Some(row.id), detail)
            .await
            .map_err(error::database)?;
        let handover = self.full(&mut tx, row).await?;
        tx.commit().await.map_err(error::database)?;
        self.outbox_signal.notify();
        Ok(handover)
    }
}

#[tonic::async_trait]
impl pb::handover_service_server::HandoverService for Handovers {
    #[tracing::instrument(skip_all, fields(handover_id))]
    async fn submit_release_notice(
        &self,
        request: Request<pb::SubmitReleaseNoticeRequest>,
    ) -> Result<Response<pb::SubmitReleaseNoticeResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(PRISON_SIDE)?;
        let notice =
            domain::validate_notice(request.get_ref(), self.today(), self.rules.past_tolerance_days)?;
        if caller.role == Role::Prison && caller.prison.as_deref() != Some(notice.prison_id.as_str()) {
            return Err(Status::permission_denied(
                "a prison submits only its own notices (prison_id must be the caller's)",
            ));
        }
        let now = self.clock.now();
        let national_id = notice.national_id.expose();
        let fingerprint = self.crypto.blind_index(&notice.canonical_text(), SUBMISSION);
        let id = Uuid::now_v7();

        let mut tx = self.pool.begin().await.map_err(error::database)?;
        // A concurrent submission of the same reference waits on the unique constraint and
        // then finds the row below, so exactly one notice (and one event) results.
        let inserted: Result<Option<Row>, sqlx::Error> = sqlx::query_as(&format!(
            "INSERT INTO handovers (id, prison_id, prison_reference, submission_fingerprint, person_name,
                 national_id_sealed, national_id_index, date_of_birth, category, expected_release_date,
                 township_code, county_code, key_assistance_target, risk_notes_sealed, offence_category, status,
                 notified_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 'notified', $16, $16)
             ON CONFLICT ON CONSTRAINT handovers_prison_reference_key DO NOTHING
             RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(&notice.prison_id)
        .bind(&notice.prison_reference)
        .bind(&fingerprint)
        .bind(&notice.person_name)
        .bind(self.crypto.seal(national_id, NATIONAL_ID))
        .bind(self.crypto.blind_index(national_id, NATIONAL_ID))
        .bind(notice.date_of_birth)
        .bind(notice.category.as_str())
        .bind(notice.expected_release_date)
        .bind(&notice.township_code)
        .bind(&notice.county_code)
        .bind(notice.key_assistance_target)
        .bind(self.crypto.seal(&notice.risk_notes, RISK_NOTES))
        .bind(notice.offence_category.as_str())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await;
        let inserted = match inserted {
            Ok(inserted) => inserted,
            Err(e) if error::is_unique_violation(&e) => {
                // ON CONFLICT covers only the reference constraint. A concurrent submission
                // of the same notice can trip the one-open-handover-per-person index first;
                // after that transaction committed, the notice exists and this is a repeat.
                drop(tx);
                let mut tx = self.pool.begin().await.map_err(error::database)?;
                if let Some(existing) = self
                    .submitted(&mut tx, &notice.prison_id, &notice.prison_reference)
                    .await?
                {
                    return self.resubmission(tx, &caller, &existing, &fingerprint).await;
                }
                return Err(Status::already_exists(
                    "this person already has an open handover; amend or cancel it instead",
                ));
            }
            Err(e) => return Err(error::database(e)),
        };
        let Some(row) = inserted else {
            let existing = self
                .submitted(&mut tx, &notice.prison_id, &notice.prison_reference)
                .await?
                .ok_or_else(|| error::internal("conflicting notice vanished"))?;
            return self.resubmission(tx, &caller, &existing, &fingerprint).await;
        };

        tracing::Span::current().record("handover_id", tracing::field::display(row.id));
        let event = pb::HandoverNotified {
            handover: Some(row.snapshot()?),
            actor: Some(caller.actor()),
        };
        let detail = serde_json::json!({
            "prison_id": row.prison_id,
            "prison_reference": row.prison_reference,
            "township_code": row.township_code,
            "category": row.category,
        });
        let handover = self
            .finish_change(
                tx,
                &caller,
                "handover.notified",
                &row,
                event.encode_to_vec(),
                detail,
            )
            .await?;
        tracing::info!(
            prison = %row.prison_id,
            township = %row.township_code,
            category = %row.category,
            "release notice submitted"
        );
        Ok(Response::new(pb::SubmitReleaseNoticeResponse {
            handover: Some(handover),
            duplicate: false,
        }))
    }

    #[tracing::instrument(skip_all, fields(handover_id))]
    async fn acknowledge_notice(
        &self,
        request: Request<pb::AcknowledgeNoticeRequest>,
    ) -> Result<Response<pb::AcknowledgeNoticeResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(TOWNSHIP_SIDE)?;
        let id = parse_id(&request.get_ref().handover_id)?;
        tracing::Span::current().record("handover_id", tracing::field::display(id));
        let mut tx = self.pool.begin().await.map_err(error::database)?;
        let current = self.load_for_update(&mut tx, id).await?;
        ensure_receiving_office(&caller, &current)?;
        if current.acknowledged_at.is_some() {
            let handover = self.repeated(tx, &caller, "acknowledged", &current).await?;
            return Ok(Response::new(pb::AcknowledgeNoticeResponse {
                handover: Some(handover),
            }));
        }
        let previous = current.status()?;
        let next = previous.after(Step::Acknowledge).map_err(illegal)?;
        let now = self.clock.now();
        let row: Row = sqlx::query_as(&format!(
            "UPDATE handovers SET status = $2, acknowledged_at = $3, acknowledged_by_subject = $4,
                 acknowledged_by_role = $5, updated_at = $3, version = version + 1
             WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(next.as_str())
        .bind(now)
        .bind(&caller.subject)
        .bind(caller.role.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(error::database)?;
        let event = pb::HandoverAcknowledged {
            handover: Some(row.snapshot()?),
            actor: Some(caller.actor()),
        };
        let detail = serde_json::json!({ "from": previous.as_str(), "to": next.as_str() });
        let handover = self
            .finish_change(
                tx,
                &caller,
                "handover.acknowledged",
                &row,
                event.encode_to_vec(),
                detail,
            )
            .await?;
        Ok(Response::new(pb::AcknowledgeNoticeResponse {
            handover: Some(handover),
        }))
    }

    #[tracing::instrument(skip_all, fields(handover_id))]
    async fn confirm_release(
        &self,
        request: Request<pb::ConfirmReleaseRequest>,
    ) -> Result<Response<pb::ConfirmReleaseResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(PRISON_SIDE)?;
        let id = parse_id(&request.get_ref().handover_id)?;
        tracing::Span::current().record("handover_id", tracing::field::display(id));
        let released_at = domain::validate_release(request.get_ref(), self.clock.now())?;
        let mut tx = self.pool.begin().await.map_err(error::database)?;
        let current = self.load_for_update(&mut tx, id).await?;
        ensure_releasing_prison(&caller, &current)?;
        match current.actual_release_time {
            Some(recorded) if recorded == released_at => {
                let handover = self.repeated(tx, &caller, "released", &current).await?;
                return Ok(Response::new(pb::ConfirmReleaseResponse {
                    handover: Some(handover),
                }));
            }
            Some(_) => {
                return Err(Status::failed_precondition(
                    "the release was already confirmed with a different actual_release_time",
                ));
            }
            None => {}
        }
        let previous = current.status()?;
        let next = previous.after(Step::ConfirmRelease).map_err(illegal)?;
        let now = self.clock.now();
        let row: Row = sqlx::query_as(&format!(
            "UPDATE handovers SET status = $2, actual_release_time = $3, updated_at = $4, version = version + 1
             WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(next.as_str())
        .bind(released_at)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(error::database)?;
        let event = pb::HandoverReleased {
            handover: Some(row.snapshot()?),
            actor: Some(caller.actor()),
        };
        let detail = serde_json::json!({
            "from": previous.as_str(),
            "to": next.as_str(),
            "actual_release_time": released_at,
        });
        let handover = self
            .finish_change(
                tx,
                &caller,
                "handover.released",
                &row,
                event.encode_to_vec(),
                detail,
            )
            .await?;
        tracing::info!(
            township = %row.township_code,
            key_assistance_target = row.key_assistance_target,
            "release confirmed"
        );
        Ok(Response::new(pb::ConfirmReleaseResponse {
            handover: Some(handover),
        }))
    }

    #[tracing::instrument(skip_all, fields(handover_id))]
    async fn record_gate_collection(
        &self,
        request: Request<pb::RecordGateCollectionRequest>,
    ) -> Result<Response<pb::RecordGateCollectionResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(TOWNSHIP_SIDE)?;
        let id = parse_id(&request.get_ref().handover_id)?;
        tracing::Span::current().record("handover_id", tracing::field::display(id));
        let (collected_at, officer_id) =
            domain::validate_gate_collection(request.get_ref(), self.clock.now())?;
        let mut tx = self.pool.begin().await.map_err(error::database)?;
        let current = self.load_for_update(&mut tx, id).await?;
        ensure_receiving_office(&caller, &current)?;
        match (&current.gate_collected_at, &current.gate_collecting_officer_id) {
            (Some(at), Some(officer)) if *at == collected_at && *officer == officer_id => {
                let handover = self.repeated(tx, &caller, "gate_collected", &current).await?;
                return Ok(Response::new(pb::RecordGateCollectionResponse {
                    handover: Some(handover),
                }));
            }
            (Some(_), _) => {
                return Err(Status::failed_precondition(
                    "a gate collection with different values was already recorded",
                ));
            }
            (None, _) => {}
        }
        let status = current.status()?;
        status.after(Step::RecordGateCollection).map_err(illegal)?;
        let now = self.clock.now();
        let row: Row = sqlx::query_as(&format!(
            "UPDATE handovers SET gate_collected_at = $2, gate_collecting_officer_id = $3, updated_at = $4,
                 version = version + 1
             WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(collected_at)
        .bind(&officer_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(error::database)?;
        let event = pb::HandoverGateCollected {
            handover: Some(row.snapshot()?),
            officer_id: officer_id.clone(),
            actor: Some(caller.actor()),
        };
        let detail = serde_json::json!({ "status": status.as_str(), "officer_id": officer_id });
        let handover = self
            .finish_change(
                tx,
                &caller,
                "handover.gate_collected",
                &row,
                event.encode_to_vec(),
                detail,
            )
            .await?;
        Ok(Response::new(pb::RecordGateCollectionResponse {
            handover: Some(handover),
        }))
    }

    #[tracing::instrument(skip_all, fields(handover_id))]
    async fn record_report_in(
        &self,
        request: Request<pb::RecordReportInRequest>,
    ) -> Result<Response<pb::RecordReportInResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(TOWNSHIP_SIDE)?;
        let id = parse_id(&request.get_ref().handover_id)?;
        tracing::Span::current().record("handover_id", tracing::field::display(id));
        let mut tx = self.pool.begin().await.map_err(error::database)?;
        let current = self.load_for_update(&mut tx, id).await?;
        ensure_receiving_office(&caller, &current)?;
        // What is required depends on the handover's category and release time.
        let category = current.category()?;
        let report = domain::validate_report_in(
            request.get_ref(),
            category,
            current.actual_release_time,
            self.clock.now(),
        )?;
        let fingerprint = self.crypto.blind_index(&report.canonical_text(), REPORT_IN);
        let previous = current.status()?;
        if previous == HandoverStatus::ReportedIn {
            if current.report_in_fingerprint.as_deref() == Some(fingerprint.as_slice()) {
                let handover = self.repeated(tx, &caller, "reported_in", &current).await?;
                return Ok(Response::new(pb::RecordReportInResponse {
                    handover: Some(handover),
                }));
            }
            return Err(Status::failed_precondition(
                "a report-in with different values was already recorded",
            ));
        }
        let next = previous.after(Step::RecordReportIn).map_err(illegal)?;
        let now = self.clock.now();
        let row: Row = sqlx::query_as(&format!(
            "UPDATE handovers SET status = $2, reported_in_at = $3, assigned_level = $4, assigned_officer_id = $5,
                 report_in_fingerprint = $6, updated_at = $7, version = version + 1
             WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(next.as_str())
        .bind(report.reported_in_at)
        .bind(report.level.map(Level::as_str))
        .bind(&report.officer_id)
        .bind(&fingerprint)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(error::database)?;
        // The registry registers community-corrections persons from this event, so it alone
        // carries the national ID number (the topic is access-restricted, see events.proto).
        let national_id = if category.is_community_corrections() {
            self.crypto
                .open(&row.national_id_sealed, NATIONAL_ID)
                .map_err(error::internal)?
        } else {
            String::new()
        };
        let event = pb::HandoverReportedIn {
            handover: Some(row.snapshot()?),
            national_id,
            registry_category: category.registry_category().map_or(0, |c| c as i32),
            supervision_level: report.level.map_or(0, |level| level.to_proto() as i32),
            officer_id: report.officer_id.clone(),
            term_start: report.term_start.map(to_date),
            term_end: report.term_end.map(to_date),
            phone: report.phone.clone(),
            address: report.address.clone(),
            needs_employment: report.needs_employment,
            actor: Some(caller.actor()),
        };
        let detail = serde_json::json!({
            "from": previous.as_str(),
            "to": next.as_str(),
            "officer_id": report.officer_id,
            "level": report.level.map(Level::as_str),
        });
        let handover = self
            .finish_change(
                tx,
                &caller,
                "handover.reported_in",
                &row,
                event.encode_to_vec(),
                detail,
            )
            .await?;
        tracing::info!(township = %row.township_code, "report-in recorded");
        Ok(Response::new(pb::RecordReportInResponse {
            handover: Some(handover),
        }))
    }

    #[tracing::instrument(skip_all, fields(handover_id))]
    async fn amend_release_notice(
        &self,
        request: Request<pb::AmendReleaseNoticeRequest>,
    ) -> Result<Response<pb::AmendReleaseNoticeResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(PRISON_SIDE)?;
        let id = parse_id(&request.get_ref().handover_id)?;
        tracing::Span::current().record("handover_id", tracing::field::display(id));
        let amendment =
            domain::validate_amendment(request.get_ref(), self.today(), self.rules.past_tolerance_days)?;
        let mut tx = self.pool.begin().await.map_err(error::database)?;
        let current = self.load_for_update(&mut tx, id).await?;
        ensure_releasing_prison(&caller, &current)?;
        let new_date = amendment
            .expected_release_date
            .filter(|date| *date != current.expected_release_date);
        let new_destination = amendment.destination.clone().filter(|(township, county)| {
            *township != current.township_code || *county != current.county_code
        });
        if new_date.is_none() && new_destination.is_none() {
            let handover = self.repeated(tx, &caller, "amended", &current).await?;
            return Ok(Response::new(pb::AmendReleaseNoticeResponse {
                handover: Some(handover),
            }));
        }
        let step = if new_destination.is_some() {
            Step::AmendDestination
        } else {
            Step::AmendReleaseDate
        };
        let previous = current.status()?;
        let next = previous.after(step).map_err(illegal)?;
        let now = self.clock.now();
        let (new_township, new_county) = new_destination.clone().unzip();
        // A new destination must be acknowledged by the new township: the old township's
        // acknowledgement no longer counts.
        let row: Row = sqlx::query_as(&format!(
            "UPDATE handovers SET status = $2,
                 expected_release_date = COALESCE($3, expected_release_date),
                 township_code = COALESCE($4, township_code),
                 county_code = COALESCE($5, county_code),
                 acknowledged_at = CASE WHEN $4::text IS NULL THEN acknowledged_at END,
                 acknowledged_by_subject = CASE WHEN $4::text IS NULL THEN acknowledged_by_subject END,
                 acknowledged_by_role = CASE WHEN $4::text IS NULL THEN acknowledged_by_role END,
                 updated_at = $6, version = version + 1
             WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(next.as_str())
        .bind(new_date)
        .bind(&new_township)
        .bind(&new_county)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(error::database)?;
        let previous_date = new_date.map(|_| current.expected_release_date);
        let (previous_township, previous_county) = match new_destination {
            Some(_) => (
                Some(current.township_code.clone()),
                Some(current.county_code.clone()),
            ),
            None => (None, None),
        };
        let stored = AmendmentRow {
            handover_id: id,
            previous_expected_release_date: previous_date,
            new_expected_release_date: new_date,
            previous_township_code: previous_township,
            previous_county_code: previous_county,
            new_township_code: new_township,
            new_county_code: new_county,
            reason: amendment.reason.clone(),
            amended_by_subject: caller.subject.clone(),
            amended_by_role: caller.role.as_str().to_owned(),
            amended_at: now,
        };
        sqlx::query(
            "INSERT INTO handover_amendments (handover_id, previous_expected_release_date, new_expected_release_date,
                 previous_township_code, previous_county_code, new_township_code, new_county_code, reason,
                 amended_by_subject, amended_by_role, amended_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(stored.handover_id)
        .bind(stored.previous_expected_release_date)
        .bind(stored.new_expected_release_date)
        .bind(&stored.previous_township_code)
        .bind(&stored.previous_county_code)
        .bind(&stored.new_township_code)
        .bind(&stored.new_county_code)
        .bind(&stored.reason)
        .bind(&stored.amended_by_subject)
        .bind(&stored.amended_by_role)
        .bind(stored.amended_at)
        .execute(&mut *tx)
        .await
        .map_err(error::database)?;
        let event = pb::HandoverAmended {
            handover: Some(row.snapshot()?),
            amendment: Some(stored.to_proto()),
            actor: Some(caller.actor()),
        };
        let detail = serde_json::json!({
            "from": previous.as_str(),
            "to": next.as_str(),
            "previous_expected_release_date": stored.previous_expected_release_date,
            "new_expected_release_date": stored.new_expected_release_date,
            "previous_township_code": stored.previous_township_code,
            "new_township_code": stored.new_township_code,
            "reason": stored.reason,
        });
        let handover = self
            .finish_change(
                tx,
                &caller,
                "handover.amended",
                &row,
                event.encode_to_vec(),
                detail,
            )
            .await?;
        Ok(Response::new(pb::AmendReleaseNoticeResponse {
            handover: Some(handover),
        }))
    }

    #[tracing::instrument(skip_all, fields(handover_id))]
    async fn cancel_release_notice(
        &self,
        request: Request<pb::CancelReleaseNoticeRequest>,
    ) -> Result<Response<pb::CancelReleaseNoticeResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(PRISON_SIDE)?;
        let id = parse_id(&request.get_ref().handover_id)?;
        tracing::Span::current().record("handover_id", tracing::field::display(id));
        let (reason, note) = domain::validate_cancel(request.get_ref())?;
        let mut tx = self.pool.begin().await.map_err(error::database)?;
        let current = self.load_for_update(&mut tx, id).await?;
        ensure_releasing_prison(&caller, &current)?;
        let previous = current.status()?;
        if previous == HandoverStatus::Cancelled {
            if current.cancel_reason.as_deref() == Some(reason.as_str())
                && current.cancel_note.as_deref().unwrap_or_default() == note
            {
                let handover = self.repeated(tx, &caller, "cancelled", &current).await?;
                return Ok(Response::new(pb::CancelReleaseNoticeResponse {
                    handover: Some(handover),
                }));
            }
            return Err(Status::failed_precondition(
                "the notice was already cancelled with a different reason or note",
            ));
        }
        let next = previous.after(Step::Cancel).map_err(illegal)?;
        let now = self.clock.now();
        let row: Row = sqlx::query_as(&format!(
            "UPDATE handovers SET status = $2, cancel_reason = $3, cancel_note = $4, cancelled_at = $5,
                 updated_at = $5, version = version + 1
             WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(next.as_str())
        .bind(reason.as_str())
        .bind(&note)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(error::database)?;
        let event = pb::HandoverCancelled {
            handover: Some(row.snapshot()?),
            reason: reason.to_proto() as i32,
            note: note.clone(),
            actor: Some(caller.actor()),
        };
        let detail =
            serde_json::json!({ "from": previous.as_str(), "reason": reason.as_str(), "note": note });
        let handover = self
            .finish_change(
                tx,
                &caller,
                "handover.cancelled",
                &row,
                event.encode_to_vec(),
                detail,
            )
            .await?;
        Ok(Response::new(pb::CancelReleaseNoticeResponse {
            handover: Some(handover),
        }))
    }

    #[tracing::instrument(skip_all, fields(handover_id))]
    async fn get_handover(
        &self,
        request: Request<pb::GetHandoverRequest>,
    ) -> Result<Response<pb::GetHandoverResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(READERS)?;
        let id = parse_id(&request.get_ref().handover_id)?;
        tracing::Span::current().record("handover_id", tracing::field::display(id));
        let mut tx = self.pool.begin().await.map_err(error::database)?;
        let row: Option<Row> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM handovers WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(error::database)?;
        let row = row.ok_or_else(|| Status::not_found("no such handover"))?;
        ensure_can_read(&caller, &row)?;
        audit::record(
            &mut tx,
            &caller,
            "handover.get",
            Some(id),
            None,
            serde_json::json!({}),
        )
        .await
        .map_err(error::database)?;
        let handover = self.full(&mut tx, &row).await?;
        tx.commit().await.map_err(error::database)?;
        Ok(Response::new(pb::GetHandoverResponse {
            handover: Some(handover),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_handovers(
        &self,
        request: Request<pb::ListHandoversRequest>,
    ) -> Result<Response<pb::ListHandoversResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(READERS)?;
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let given: Vec<(&str, &str)> = [
            ("prison_id", request.prison_id.trim()),
            ("township_code", request.township_code.trim()),
            ("county_code", request.county_code.trim()),
        ]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .collect();
        let scope = match given.as_slice() {
            [("prison_id", prison)] => Some(Scope::Prison((*prison).to_owned())),
            [("township_code", township)] => {
                let known = Directory::get().township(township).is_some();
                violations.require(known, "township_code", "unknown township office code");
                known.then(|| Scope::Township((*township).to_owned()))
            }
            [("county_code", county)] => {
                let known = Directory::get().county(county).is_some();
                violations.require(known, "county_code", "unknown county bureau code");
                known.then(|| Scope::County((*county).to_owned()))
            }
            [] => {
                for field in ["prison_id", "township_code", "county_code"] {
                    violations.add(
                        field,
                        "exactly one of prison_id, township_code or county_code is required",
                    );
                }
                None
            }
            several => {
                for (field, _) in several {
                    violations.add(
                        field,
                        "exactly one of prison_id, township_code or county_code is allowed",
                    );
                }
                None
            }
        };
        let mut statuses = Vec::new();
        for &value in &request.statuses {
            match HandoverStatus::from_proto(value) {
                Some(status) => statuses.push(status.as_str().to_owned()),
                None => violations.add("statuses", "must list known statuses only"),
            }
        }
        let page = request.page.unwrap_or_default();
        if page.page_size > MAX_PAGE_SIZE {
            violations.add("page.page_size", format!("must be at most {MAX_PAGE_SIZE}"));
        }
        let after = match page.page_token.as_str() {
            "" => None,
            token => {
                let decoded = decode_page_token(token);
                violations.require(
                    decoded.is_some(),
                    "page.page_token",
                    "not a token from a previous page",
                );
                decoded
            }
        };
        violations.into_result()?;
        let scope = scope.ok_or_else(|| error::internal("validation inconsistency"))?;
        scope.ensure_access(&caller)?;
        let page_size = if page.page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            page.page_size
        };
        let (after_at, after_id) = after.unzip();

        let mut tx = self.pool.begin().await.map_err(error::database)?;
        // One row more than asked tells whether another page exists. The column is a fixed
        // name chosen by the scope, never caller input.
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM handovers
             WHERE {column} = $1
               AND (cardinality($2::text[]) = 0 OR status = ANY($2))
               AND ($3::timestamptz IS NULL OR (notified_at, id) > ($3, $4::uuid))
             ORDER BY notified_at, id LIMIT $5",
            column = scope.column()
        ))
        .bind(scope.value())
        .bind(&statuses)
        .bind(after_at)
        .bind(after_id)
        .bind(i64::from(page_size) + 1)
        .fetch_all(&mut *tx)
        .await
        .map_err(error::database)?;
        let has_more = rows.len() > page_size as usize;
        let rows = &rows[..rows.len().min(page_size as usize)];
        let next_page_token = match (has_more, rows.last()) {
            (true, Some(last)) => encode_page_token(last.notified_at, last.id),
            _ => String::new(),
        };
        let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
        let mut amendments = self.amendments(&mut tx, &ids).await?;
        let detail = serde_json::json!({
            "scope": scope.column(),
            "value": scope.value(),
            "returned": rows.len(),
        });
        audit::record(&mut tx, &caller, "handover.list", None, None, detail)
            .await
            .map_err(error::database)?;
        tx.commit().await.map_err(error::database)?;
        let handovers = rows
            .iter()
            .map(|row| self.to_proto(row, amendments.remove(&row.id).unwrap_or_default()))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::ListHandoversResponse {
            handovers,
            page: Some(common::PageResponse { next_page_token }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let at = DateTime::from_timestamp_micros(1_790_000_000_123_456).expect("time");
        let id = Uuid::now_v7();
        let token = encode_page_token(at, id);
        assert_eq!(decode_page_token(&token), Some((at, id)));
        assert_eq!(decode_page_token("garbage!"), None);
        assert_eq!(decode_page_token(""), None);
        assert_eq!(decode_page_token("AAAA"), None);
    }

    fn prison(id: &str) -> Caller {
        Caller {
            subject: format!("{id}-clerk"),
            role: Role::Prison,
            township: None,
            county: None,
            prison: Some(id.to_owned()),
        }
    }

    #[test]
    fn list_scopes_follow_the_jurisdiction() {
        let own = Scope::Prison("zhangye-prison".into());
        assert!(own.ensure_access(&prison("zhangye-prison")).is_ok());
        assert!(own.ensure_access(&prison("jiuquan-prison")).is_err());
        let township = Scope::Township("620702001".into());
        assert!(township.ensure_access(&prison("zhangye-prison")).is_err());
        let bureau = |county: &str| Caller {
            subject: "bureau".into(),
            role: Role::CountyBureau,
            township: None,
            county: Some(county.into()),
            prison: None,
        };
        assert!(township.ensure_access(&bureau("620702")).is_ok());
        assert!(township.ensure_access(&bureau("620721")).is_err());
        assert!(
            Scope::County("620702".into())
                .ensure_access(&bureau("620702"))
                .is_ok()
        );
        let office = Caller {
            subject: "office".into(),
            role: Role::TownshipOffice,
            township: Some("620702001".into()),
            county: Some("620702".into()),
            prison: None,
        };
        assert!(township.ensure_access(&office).is_ok());
        assert!(Scope::County("620702".into()).ensure_access(&office).is_err());
    }
}
