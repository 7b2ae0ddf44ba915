//! The registry's gRPC API. Every handler authenticates the caller (done by the
//! interceptor), checks its jurisdiction, validates input naming each bad field, and writes
//! the change, its `supervisee.*` event (outbox) and an audit record in one transaction.

use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use mesh_kit::{
    audit,
    auth::{Caller, Role, caller},
    clock::SharedClock,
    crypto::FieldCrypto,
    error::{self, FieldViolations, invalid_field},
    outbox::{NewEvent, OutboxSignal},
    proto_time::{from_timestamp, to_date, to_timestamp},
    validate::{check_jurisdiction, check_text},
};
use mesh_proto::{common, registry as pb};
use prost::Message;
use sqlx::{PgConnection, PgPool};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::{self, Category, Level, Status as SupervisionStatus};

/// Associated-data contexts that bind each ciphertext to its column.
const NATIONAL_ID: &str = "supervisees.national_id";
const PHONE: &str = "supervisees.phone";
const ADDRESS: &str = "supervisees.address";

const DEFAULT_PAGE_SIZE: u32 = 50;
const MAX_PAGE_SIZE: u32 = 500;

/// Roles that manage supervisees (prisons do not).
const MANAGERS: &[Role] = &[
    Role::Officer,
    Role::TownshipOffice,
    Role::CountyBureau,
    Role::Admin,
    Role::System,
];

/// The registry service's state.
#[derive(Clone)]
pub struct Registry {
    pool: PgPool,
    crypto: Arc<FieldCrypto>,
    clock: SharedClock,
    outbox_signal: OutboxSignal,
    topic: String,
}

#[derive(sqlx::FromRow)]
pub(crate) struct Row {
    pub(crate) id: Uuid,
    name: String,
    national_id_sealed: Vec<u8>,
    category: String,
    term_start: NaiveDate,
    term_end: NaiveDate,
    level: String,
    township_code: String,
    county_code: String,
    officer_id: String,
    phone_sealed: Vec<u8>,
    address_sealed: Vec<u8>,
    status: String,
    needs_employment: bool,
    reported_at: Option<DateTime<Utc>>,
    registered_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
}

const COLUMNS: &str = "id, name, national_id_sealed, category, term_start, term_end, level, township_code, \
     county_code, officer_id, phone_sealed, address_sealed, status, needs_employment, reported_at, registered_at, \
     updated_at, version";

impl Row {
    fn status(&self) -> Result<SupervisionStatus, Status> {
        SupervisionStatus::parse(&self.status).ok_or_else(|| error::internal("unknown stored status"))
    }

    fn level(&self) -> Result<Level, Status> {
        Level::parse(&self.level).ok_or_else(|| error::internal("unknown stored level"))
    }

    fn category(&self) -> Result<Category, Status> {
        Category::parse(&self.category).ok_or_else(|| error::internal("unknown stored category"))
    }

    fn jurisdiction(&self) -> common::Jurisdiction {
        common::Jurisdiction {
            township_code: self.township_code.clone(),
            county_code: self.county_code.clone(),
        }
    }

    /// What events say about the supervisee (no national ID, phone or address).
    fn snapshot(&self) -> Result<pb::SuperviseeSnapshot, Status> {
        Ok(pb::SuperviseeSnapshot {
            supervisee_id: self.id.to_string(),
            name: self.name.clone(),
            category: self.category()?.to_proto() as i32,
            term_start: Some(to_date(self.term_start)),
            term_end: Some(to_date(self.term_end)),
            level: self.level()?.to_proto() as i32,
            jurisdiction: Some(self.jurisdiction()),
            officer_id: self.officer_id.clone(),
            status: self.status()?.to_proto() as i32,
            version: self.version,
            reported_at: self.reported_at.map(to_timestamp),
            needs_employment: self.needs_employment,
        })
    }
}

impl Registry {
    pub fn new(
        pool: PgPool,
        crypto: Arc<FieldCrypto>,
        clock: SharedClock,
        outbox_signal: OutboxSignal,
        topic: String,
    ) -> Self {
        Self {
            pool,
            crypto,
            clock,
            outbox_signal,
            topic,
        }
    }

    fn to_proto(&self, row: &Row) -> Result<pb::Supervisee, Status> {
        let national_id = self
            .crypto
            .open(&row.national_id_sealed, NATIONAL_ID)
            .map_err(error::internal)?;
        let masked = mesh_kit::national_id::NationalId::parse(&national_id, NaiveDate::MAX)
            .map(|id| id.masked())
            .unwrap_or_else(|_| "******************".to_owned());
        Ok(pb::Supervisee {
            supervisee_id: row.id.to_string(),
            name: row.name.clone(),
            national_id_masked: masked,
            category: row.category()?.to_proto() as i32,
            term_start: Some(to_date(row.term_start)),
            term_end: Some(to_date(row.term_end)),
            level: row.level()?.to_proto() as i32,
            jurisdiction: Some(row.jurisdiction()),
            officer_id: row.officer_id.clone(),
            phone: self
                .crypto
                .open(&row.phone_sealed, PHONE)
                .map_err(error::internal)?,
            address: self
                .crypto
                .open(&row.address_sealed, ADDRESS)
                .map_err(error::internal)?,
            status: row.status()?.to_proto() as i32,
            registered_at: Some(to_timestamp(row.registered_at)),
            updated_at: Some(to_timestamp(row.updated_at)),
            version: row.version,
            needs_employment: row.needs_employment,
        })
    }

    /// Loads a supervisee for update (row lock held until the transaction ends) and checks
    /// the caller may act on it.
    async fn load_for_update(
        &self,
        conn: &mut PgConnection,
        caller: &Caller,
        id: Uuid,
    ) -> Result<Row, Status> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM supervisees WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(error::database)?;
        let row = row.ok_or_else(|| Status::not_found("no such supervisee"))?;
        caller.ensure_access(&row.township_code, &row.county_code)?;
        Ok(row)
    }

    /// Writes the updated row's event and audit record, commits, and wakes the relay.
    async fn finish_change(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        caller: &Caller,
        action: &'static str,
        row: &Row,
        payload: Vec<u8>,
        detail: serde_json::Value,
    ) -> Result<pb::Supervisee, Status> {
        self.record_change(&mut tx, caller, action, row, payload, detail)
            .await
            .map_err(error::database)?;
        tx.commit().await.map_err(error::database)?;
        self.outbox_signal.notify();
        self.to_proto(row)
    }

    /// Writes a change's event (outbox) and audit record in the caller's transaction.
    async fn record_change(
        &self,
        conn: &mut PgConnection,
        caller: &Caller,
        action: &'static str,
        row: &Row,
        payload: Vec<u8>,
        detail: serde_json::Value,
    ) -> sqlx::Result<()> {
        let event = NewEvent {
            topic: self.topic.clone(),
            key: row.id.to_string(),
            event_type: action,
            payload,
            occurred_at: row.updated_at,
        };
        audit::record_change(conn, caller, event, Some(row.id), detail).await
    }

    /// Inserts a validated registration with its `supervisee.registered` event and audit
    /// record, in the caller's transaction (an RPC's, or the handover consumer's).
    pub(crate) async fn insert_registration(
        &self,
        conn: &mut PgConnection,
        registration: &domain::Registration,
        caller: &Caller,
        handover_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Row, RegisterError> {
        let id = Uuid::now_v7();
        let national_id = registration.national_id.expose();
        let status = if registration.reported_at.is_some() {
            SupervisionStatus::Active
        } else {
            SupervisionStatus::PendingReportIn
        };
        let inserted: Result<Row, sqlx::Error> = sqlx::query_as(&format!(
            "INSERT INTO supervisees (id, name, national_id_sealed, national_id_index, category, term_start, term_end,
                 level, township_code, county_code, officer_id, phone_sealed, address_sealed, status,
                 needs_employment, reported_at, handover_id, registered_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $18)
             RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(&registration.name)
        .bind(self.crypto.seal(national_id, NATIONAL_ID))
        .bind(self.crypto.blind_index(national_id, NATIONAL_ID))
        .bind(registration.category.as_str())
        .bind(registration.term_start)
        .bind(registration.term_end)
        .bind(registration.level.as_str())
        .bind(&registration.township_code)
        .bind(&registration.county_code)
        .bind(&registration.officer_id)
        .bind(self.crypto.seal(&registration.phone, PHONE))
        .bind(self.crypto.seal(&registration.address, ADDRESS))
        .bind(status.as_str())
        .bind(registration.needs_employment)
        .bind(registration.reported_at)
        .bind(handover_id)
        .bind(now)
        .fetch_one(&mut *conn)
        .await;
        let row = match inserted {
            Ok(row) => row,
            Err(e) if error::is_unique_violation(&e) => return Err(RegisterError::AlreadyOpen),
            Err(e) => return Err(RegisterError::Database(e)),
        };
        let event = pb::SuperviseeRegistered {
            supervisee: Some(
                row.snapshot()
                    .map_err(|_| RegisterError::Database(sqlx::Error::RowNotFound))?,
            ),
            actor: Some(caller.actor()),
            handover_id: handover_id.unwrap_or_default().to_owned(),
        };
        let detail = serde_json::json!({
            "township_code": row.township_code, "status": row.status, "handover_id": handover_id,
        });
        self.record_change(
            conn,
            caller,
            "supervisee.registered",
            &row,
            event.encode_to_vec(),
            detail,
        )
        .await
        .map_err(RegisterError::Database)?;
        Ok(row)
    }

    async fn update_row(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        set: &str,
        now: DateTime<Utc>,
    ) -> Result<Row, Status> {
        // `set` is one of the fixed assignments below, never caller input.
        sqlx::query_as(&format!(
            "UPDATE supervisees SET {set}, updated_at = $2, version = version + 1 WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(now)
        .fetch_one(conn)
        .await
        .map_err(error::database)
    }
}

/// Why a registration was not stored.
#[derive(Debug)]
pub(crate) enum RegisterError {
    /// The person already has an open supervision (one-open-per-person index).
    AlreadyOpen,
    Database(sqlx::Error),
}

fn parse_id(field: &str, value: &str) -> Result<Uuid, Status> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid_field(field, "must be a UUID"))
}

fn reason(field: &str, value: &str) -> Result<String, Status> {
    let mut violations = FieldViolations::new();
    let text = check_text(&mut violations, field, value, domain::MAX_REASON_CHARS);
    violations.into_result()?;
    Ok(text)
}

#[tonic::async_trait]
impl pb::registry_service_server::RegistryService for Registry {
    #[tracing::instrument(skip_all, fields(supervisee_id))]
    async fn register_supervisee(
        &self,
        request: Request<pb::RegisterSuperviseeRequest>,
    ) -> Result<Response<pb::RegisterSuperviseeResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(MANAGERS)?;
        let now = self.clock.now();
        let registration = domain::validate_registration(request.get_ref(), now)?;
        caller.ensure_access(&registration.township_code, &registration.county_code)?;

        let mut tx = self.pool.begin().await.map_err(error::database)?;
        let row = match self
            .insert_registration(&mut tx, &registration, &caller, None, now)
            .await
        {
            Ok(row) => row,
            Err(RegisterError::AlreadyOpen) => {
                return Err(Status::already_exists(
                    "this person already has an open supervision",
                ));
            }
            Err(RegisterError::Database(e)) => return Err(error::database(e)),
        };
        tracing::Span::current().record("supervisee_id", tracing::field::display(row.id));
        tx.commit().await.map_err(error::database)?;
        self.outbox_signal.notify();
        let supervisee = self.to_proto(&row)?;
        tracing::info!(township = %row.township_code, "supervisee registered");
        Ok(Response::new(pb::RegisterSuperviseeResponse {
            supervisee: Some(supervisee),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_supervisee(
        &self,
        request: Request<pb::GetSuperviseeRequest>,
    ) -> Result<Response<pb::GetSuperviseeResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(MANAGERS)?;
        let id = parse_id("supervisee_id", &request.get_ref().supervisee_id)?;
        let mut tx = self.pool.begin().await.map_err(error::database)?;
        let row: Option<Row> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM supervisees WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(error::database)?;
        let row = row.ok_or_else(|| Status::not_found("no such supervisee"))?;
        caller.ensure_access(&row.township_code, &row.county_code)?;
        audit::record(
            &mut tx,
            &caller,
            "supervisee.get",
            Some(id),
            None,
            serde_json::json!({}),
        )
        .await
        .map_err(error::database)?;
        tx.commit().await.map_err(error::database)?;
        Ok(Response::new(pb::GetSuperviseeResponse {
            supervisee: Some(self.to_proto(&row)?),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_supervisees(
        &self,
        request: Request<pb::ListSuperviseesRequest>,
    ) -> Result<Response<pb::ListSuperviseesResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(MANAGERS)?;
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let township = mesh_kit::jurisdiction::Directory::get().township(&request.township_code);
        violations.require(
            township.is_some(),
            "township_code",
            "unknown township office code",
        );
        let status_filter = match request.status {
            0 => None,
            value => {
                let status = SupervisionStatus::from_proto(value);
                violations.require(status.is_some(), "status", "unknown status");
                status
            }
        };
        let page = request.page.unwrap_or_default();
        if page.page_size > MAX_PAGE_SIZE {
            violations.add("page.page_size", format!("must be at most {MAX_PAGE_SIZE}"));
        }
        let after = match page.page_token.as_str() {
            "" => None,
            token => {
                let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(token)
                    .ok()
                    .and_then(|bytes| Uuid::from_slice(&bytes).ok());
                violations.require(
                    decoded.is_some(),
                    "page.page_token",
                    "not a token from a previous page",
                );
                decoded
            }
        };
        violations.into_result()?;
        let township =
            township.ok_or_else(|| invalid_field("township_code", "unknown township office code"))?;
        caller.ensure_access(&township.code, &township.county_code)?;
        let page_size = if page.page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            page.page_size
        };

        let mut tx = self.pool.begin().await.map_err(error::database)?;
        // One row more than asked tells whether another page exists.
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM supervisees
             WHERE township_code = $1 AND ($2::text IS NULL OR status = $2) AND ($3::uuid IS NULL OR id > $3)
             ORDER BY id LIMIT $4"
        ))
        .bind(&township.code)
        .bind(status_filter.map(SupervisionStatus::as_str))
        .bind(after)
        .bind(i64::from(page_size) + 1)
        .fetch_all(&mut *tx)
        .await
        .map_err(error::database)?;
        let has_more = rows.len() > page_size as usize;
        let rows = &rows[..rows.len().min(page_size as usize)];
        let next_page_token = match (has_more, rows.last()) {
            (true, Some(last)) => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last.id.as_bytes()),
            _ => String::new(),
        };
        let detail = serde_json::json!({ "township_code": township.code, "returned": rows.len() });
        audit::record(&mut tx, &caller, "supervisee.list", None, None, detail)
            .await
            .map_err(error::database)?;
        tx.commit().await.map_err(error::database)?;
        let supervisees = rows
            .iter()
            .map(|row| self.to_proto(row))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::ListSuperviseesResponse {
            supervisees,
            page: Some(common::PageResponse { next_page_token }),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn change_level(
        &self,
        request: Request<pb::ChangeLevelRequest>,
    ) -> Result<Response<pb::ChangeLevelResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(MANAGERS)?;
        let request = request.into_inner();
        let id = parse_id("supervisee_id", &request.supervisee_id)?;
        let level = Level::from_proto(request.level)
            .ok_or_else(|| invalid_field("level", "must be strict, normal or lenient"))?;
        let reason = reason("reason", &request.reason)?;
        let mut tx = self.pool.begin().await.map_err(error::database)?;
        let current = self.load_for_update(&mut tx, &caller, id).await?;
        if current.status()?.is_final() {
            return Err(Status::failed_precondition("the supervision has ended"));
        }
        let previous = current.level()?;
        if previous == level {
            // A retried request changes nothing and emits nothing.
            return Ok(Response::new(pb::ChangeLevelResponse {
                supervisee: Some(self.to_proto(&current)?),
            }));
        }
        let now = self.clock.now();
        let set = match level {
            Level::Strict => "level = 'strict'",
            Level::Normal => "level = 'normal'",
            Level::Lenient => "level = 'lenient'",
        };
        let row = self.update_row(&mut tx, id, set, now).await?;
        let event = pb::SuperviseeLevelChanged {
            supervisee: Some(row.snapshot()?),
            previous_level: previous.to_proto() as i32,
            reason: reason.clone(),
            actor: Some(caller.actor()),
        };
        let detail = serde_json::json!({ "from": previous.as_str(), "to": level.as_str(), "reason": reason });
        let supervisee = self
            .finish_change(
                tx,
                &caller,
                "supervisee.level_changed",
                &row,
                event.encode_to_vec(),
                detail,
            )
            .await?;
        Ok(Response::new(pb::ChangeLevelResponse {
            supervisee: Some(supervisee),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn transfer_supervisee(
        &self,
        request: Request<pb::TransferSuperviseeRequest>,
    ) -> Result<Response<pb::TransferSuperviseeResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(MANAGERS)?;
        let request = request.into_inner();
        let id = parse_id("supervisee_id", &request.supervisee_id)?;
        let mut violations = FieldViolations::new();
        check_jurisdiction(
            &mut violations,
            "to_township_code",
            &request.to_township_code,
            "to_county_code",
            &request.to_county_code,
        );
        let officer = request.to_officer_id.trim().to_owned();
        if officer.chars().count() > domain::MAX_OFFICER_ID_CHARS {
            violations.add(
                "to_officer_id",
                format!("must be at most {} characters", domain::MAX_OFFICER_ID_CHARS),
            );
        }
        let reason = check_text(
            &mut violations,
            "reason",
            &request.reason,
            domain::MAX_REASON_CHARS,
        );
        violations.into_result()?;

        let mut tx = self.pool.begin().await.map_err(error::database)?;
        let current = self.load_for_update(&mut tx, &caller, id).await?;
        if current.status()?.is_final() {
            return Err(Status::failed_precondition("the supervision has ended"));
        }
        if current.township_code == request.to_township_code {
            return Err(invalid_field("to_township_code", "is the current township"));
        }
        let now = self.clock.now();
        let row: Row = sqlx::query_as(&format!(
            "UPDATE supervisees SET township_code = $2, county_code = $3, officer_id = $4, updated_at = $5,
                 version = version + 1
             WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(&request.to_township_code)
        .bind(&request.to_county_code)
        .bind(&officer)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(error::database)?;
        let event = pb::SuperviseeTransferred {
            supervisee: Some(row.snapshot()?),
            previous_jurisdiction: Some(current.jurisdiction()),
            reason: reason.clone(),
            actor: Some(caller.actor()),
        };
        let detail = serde_json::json!({
            "from": current.township_code, "to": row.township_code, "reason": reason,
        });
        let supervisee = self
            .finish_change(
                tx,
                &caller,
                "supervisee.transferred",
                &row,
                event.encode_to_vec(),
                detail,
            )
            .await?;
        Ok(Response::new(pb::TransferSuperviseeResponse {
            supervisee: Some(supervisee),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn change_status(
        &self,
        request: Request<pb::ChangeStatusRequest>,
    ) -> Result<Response<pb::ChangeStatusResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(MANAGERS)?;
        let request = request.into_inner();
        let id = parse_id("supervisee_id", &request.supervisee_id)?;
        let mut violations = FieldViolations::new();
        let next = SupervisionStatus::from_proto(request.status);
        violations.require(next.is_some(), "status", "must be a known status");
        let reason = check_text(
            &mut violations,
            "reason",
            &request.reason,
            domain::MAX_REASON_CHARS,
        );
        let now = self.clock.now();
        let effective_at = match &request.effective_at {
            None => Some(now),
            Some(timestamp) => {
                from_timestamp(timestamp).filter(|time| *time <= now + chrono::Duration::minutes(5))
            }
        };
        violations.require(
            effective_at.is_some(),
            "effective_at",
            "must be a valid time, not in the future",
        );
        violations.into_result()?;
        let (Some(next), Some(effective_at)) = (next, effective_at) else {
            return Err(error::internal("validation inconsistency"));
        };

        let mut tx = self.pool.begin().await.map_err(error::database)?;
        let current = self.load_for_update(&mut tx, &caller, id).await?;
        let previous = current.status()?;
        if !previous.can_become(next) {
            return Err(Status::failed_precondition(format!(
                "illegal status transition from {} to {}",
                previous.as_str(),
                next.as_str()
            )));
        }
        let set = match next {
            SupervisionStatus::PendingReportIn => "status = 'pending_report_in'",
            SupervisionStatus::Active => "status = 'active', reported_at = COALESCE(reported_at, $2)",
            SupervisionStatus::Suspended => "status = 'suspended'",
            SupervisionStatus::Absconded => "status = 'absconded'",
            SupervisionStatus::Terminated => "status = 'terminated'",
            SupervisionStatus::Revoked => "status = 'revoked'",
            SupervisionStatus::Deceased => "status = 'deceased'",
        };
        let row = self.update_row(&mut tx, id, set, now).await?;
        let event = pb::SuperviseeStatusChanged {
            supervisee: Some(row.snapshot()?),
            previous_status: previous.to_proto() as i32,
            reason: reason.clone(),
            effective_at: Some(to_timestamp(effective_at)),
            actor: Some(caller.actor()),
        };
        let detail = serde_json::json!({ "from": previous.as_str(), "to": next.as_str(), "reason": reason });
        let supervisee = self
            .finish_change(
                tx,
                &caller,
                "supervisee.status_changed",
                &row,
                event.encode_to_vec(),
                detail,
            )
            .await?;
        Ok(Response::new(pb::ChangeStatusResponse {
            supervisee: Some(supervisee),
        }))
    }
}
