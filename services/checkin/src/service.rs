//! The check-in gRPC API. Every handler authenticates the caller (done by the interceptor),
//! checks its role and its jurisdiction over the supervisee (from the registry projection),
//! validates input naming each bad field, and writes the check-in, its `checkin.recorded`
//! event (outbox) and an audit record in one transaction.
//!
//! Idempotency: the client-generated check-in id is the primary key and the stored content
//! fingerprint tells a retry (same content: the stored check-in is returned, nothing is
//! written or published) from a conflicting reuse of the id (`AlreadyExists`).

use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Utc};
use mesh_kit::{
    audit,
    auth::{Caller, Role, caller},
    clock::SharedClock,
    error::{self, FieldViolations, invalid_field, violated_fields},
    jurisdiction::Directory,
    outbox::{NewEvent, OutboxSignal},
    proto_time::{from_timestamp, to_timestamp},
};
use mesh_proto::{checkin as pb, common};
use prost::Message;
use sqlx::{PgConnection, PgPool};
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use crate::domain::{self, AreaCheck, Circle, Identity, Method, Rules, SuperviseeStatus};

const DEFAULT_PAGE_SIZE: u32 = 50;
const MAX_PAGE_SIZE: u32 = 500;

/// Event type of a stored check-in.
const CHECKIN_RECORDED: &str = "checkin.recorded";

/// Roles that record and read check-ins (prisons do not).
const RECORDERS: &[Role] = &[
    Role::Officer,
    Role::TownshipOffice,
    Role::CountyBureau,
    Role::Admin,
    Role::System,
];

/// Roles that set a township's permitted area: the township office itself, its county
/// bureau, or an admin (not individual officers).
const AREA_SETTERS: &[Role] = &[Role::TownshipOffice, Role::CountyBureau, Role::Admin];

/// The check-in service's state.
#[derive(Clone)]
pub struct Checkins {
    pool: PgPool,
    clock: SharedClock,
    outbox_signal: OutboxSignal,
    topic: String,
    rules: Arc<Rules>,
    /// Radius of the default permitted area around the county seat; 0 disables it.
    default_area_radius_m: f64,
}

#[derive(sqlx::FromRow)]
struct CheckinRow {
    checkin_id: Uuid,
    supervisee_id: Uuid,
    method: String,
    recording_officer_id: String,
    device_time: DateTime<Utc>,
    received_at: DateTime<Utc>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    accuracy_m: Option<f64>,
    face_match_score: Option<f64>,
    manual_officer_id: Option<String>,
    manual_note: Option<String>,
    identity_verified: bool,
    captured_offline: bool,
    out_of_area: bool,
    distance_outside_m: f64,
    township_code: String,
    county_code: String,
    note: String,
    content_sha256: Vec<u8>,
}

const CHECKIN_COLUMNS: &str = "checkin_id, supervisee_id, method, recording_officer_id, device_time, received_at, \
     latitude, longitude, accuracy_m, face_match_score, manual_officer_id, manual_note, identity_verified, \
     captured_offline, out_of_area, distance_outside_m, township_code, county_code, note, content_sha256";

impl CheckinRow {
    fn method(&self) -> Result<Method, Status> {
        Method::parse(&self.method).ok_or_else(|| error::internal("unknown stored check-in method"))
    }

    fn position(&self) -> Option<common::GeoPoint> {
        match (self.latitude, self.longitude, self.accuracy_m) {
            (Some(latitude), Some(longitude), Some(accuracy_m)) => Some(common::GeoPoint {
                latitude,
                longitude,
                accuracy_m,
            }),
            _ => None,
        }
    }

    fn jurisdiction(&self) -> common::Jurisdiction {
        common::Jurisdiction {
            township_code: self.township_code.clone(),
            county_code: self.county_code.clone(),
        }
    }

    fn identity_verification(&self) -> Result<pb::IdentityVerification, Status> {
        use pb::identity_verification::Verification;
        let verification = match (self.face_match_score, &self.manual_officer_id) {
            (Some(score), None) => Verification::FaceMatch(pb::FaceMatch { score }),
            (None, Some(officer_id)) => Verification::Manual(pb::ManualVerification {
                officer_id: officer_id.clone(),
                note: self.manual_note.clone().unwrap_or_default(),
            }),
            _ => {
                return Err(error::internal(
                    "stored check-in without one identity verification",
                ));
            }
        };
        Ok(pb::IdentityVerification {
            verification: Some(verification),
        })
    }

    fn to_proto(&self) -> Result<pb::Checkin, Status> {
        Ok(pb::Checkin {
            checkin_id: self.checkin_id.to_string(),
            supervisee_id: self.supervisee_id.to_string(),
            method: self.method()?.to_proto() as i32,
            recording_officer_id: self.recording_officer_id.clone(),
            device_time: Some(to_timestamp(self.device_time)),
            received_at: Some(to_timestamp(self.received_at)),
            position: self.position(),
            identity_verification: Some(self.identity_verification()?),
            identity_verified: self.identity_verified,
            captured_offline: self.captured_offline,
            out_of_area: self.out_of_area,
            distance_outside_m: self.distance_outside_m,
            jurisdiction: Some(self.jurisdiction()),
            note: self.note.clone(),
        })
    }

    /// The `checkin.recorded` payload: everything risk-alert needs to move the deadline,
    /// restore contact or raise an out-of-area alert, without reading our tables.
    fn event(&self, caller: &Caller) -> Result<pb::CheckinRecorded, Status> {
        Ok(pb::CheckinRecorded {
            supervisee_id: self.supervisee_id.to_string(),
            checkin_id: self.checkin_id.to_string(),
            method: self.method()?.to_proto() as i32,
            device_time: Some(to_timestamp(self.device_time)),
            received_at: Some(to_timestamp(self.received_at)),
            position: self.position(),
            out_of_area: self.out_of_area,
            distance_outside_m: self.distance_outside_m,
            jurisdiction: Some(self.jurisdiction()),
            captured_offline: self.captured_offline,
            identity_verified: self.identity_verified,
            recording_officer_id: self.recording_officer_id.clone(),
            actor: Some(caller.actor()),
        })
    }
}

/// A supervisee as projected from the registry.
#[derive(sqlx::FromRow)]
struct SuperviseeRow {
    township_code: String,
    county_code: String,
    status: String,
}

#[derive(sqlx::FromRow)]
struct AreaRow {
    township_code: String,
    county_code: String,
    version: i64,
    updated_by_subject: String,
    updated_by_role: String,
    updated_at: DateTime<Utc>,
}

/// What recording one check-in came to.
enum Recorded {
    /// Stored now (and `checkin.recorded` enqueued).
    Accepted(pb::Checkin),
    /// Already stored with the same content: the stored check-in, nothing written.
    Duplicate(pb::Checkin),
}

impl Checkins {
    pub fn new(
        pool: PgPool,
        clock: SharedClock,
        outbox_signal: OutboxSignal,
        topic: String,
        rules: Rules,
        default_area_radius_m: f64,
    ) -> Self {
        Self {
            pool,
            clock,
            outbox_signal,
            topic,
            rules: Arc::new(rules),
            default_area_radius_m,
        }
    }

    async fn find_checkin(&self, id: Uuid) -> Result<Option<CheckinRow>, Status> {
        sqlx::query_as(&format!(
            "SELECT {CHECKIN_COLUMNS} FROM checkins WHERE checkin_id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(error::database)
    }

    /// Answers a check-in whose id is already stored: the stored one for a retry with the
    /// same content (to callers who may see it), `AlreadyExists` otherwise.
    fn replay(caller: &Caller, stored: &CheckinRow, fingerprint: &[u8; 32]) -> Result<Recorded, Status> {
        if stored.content_sha256.as_slice() != fingerprint.as_slice() {
            return Err(Status::already_exists(
                "checkin_id is already used by a different check-in",
            ));
        }
        caller.ensure_access(&stored.township_code, &stored.county_code)?;
        Ok(Recorded::Duplicate(stored.to_proto()?))
    }

    /// The circles a township's check-ins are tested against: its own permitted area, else
    /// the configured default around the county seat (none when that is disabled).
    async fn area_circles(
        &self,
        conn: &mut PgConnection,
        township_code: &str,
        county_code: &str,
    ) -> Result<Vec<Circle>, Status> {
        let rows: Vec<(f64, f64, f64)> = sqlx::query_as(
            "SELECT latitude, longitude, radius_m FROM permitted_area_circles
             WHERE township_code = $1 ORDER BY position",
        )
        .bind(township_code)
        .fetch_all(conn)
        .await
        .map_err(error::database)?;
        if rows.is_empty() {
            return Ok(self.default_area(county_code));
        }
        Ok(rows
            .into_iter()
            .map(|(latitude, longitude, radius_m)| Circle {
                latitude,
                longitude,
                radius_m,
            })
            .collect())
    }

    fn default_area(&self, county_code: &str) -> Vec<Circle> {
        if self.default_area_radius_m <= 0.0 {
            return Vec::new();
        }
        Directory::get()
            .county(county_code)
            .map(|county| {
                vec![Circle {
                    latitude: county.seat.0,
                    longitude: county.seat.1,
                    radius_m: self.default_area_radius_m,
                }]
            })
            .unwrap_or_default()
    }

    /// Records one check-in (RecordCheckin, or one item of an offline batch). Field paths in
    /// errors start with `prefix`. Every error but an infrastructure one is final for the item.
    async fn record(&self, caller: &Caller, new: &pb::NewCheckin, prefix: &str) -> Result<Recorded, Status> {
        let fingerprint = domain::content_fingerprint(new);
        // A retry answers from what is stored, whatever has changed since (the device-time
        // window has moved on, the supervisee's status has changed): same question, same answer.
        if let Ok(id) = new.checkin_id.trim().parse::<Uuid>()
            && let Some(stored) = self.find_checkin(id).await?
        {
            return Self::replay(caller, &stored, &fingerprint);
        }

        let now = self.clock.now();
        let officer_subject = (caller.role == Role::Officer).then_some(caller.subject.as_str());
        let valid = domain::validate_checkin(new, prefix, now, &self.rules, officer_subject)?;

        let mut tx = self.pool.begin().await.map_err(error::database)?;
        let supervisee: Option<SuperviseeRow> =
            sqlx::query_as("SELECT township_code, county_code, status FROM supervisees WHERE id = $1")
                .bind(valid.supervisee_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(error::database)?;
        let supervisee = supervisee.ok_or_else(|| {
            // The projection may trail a fresh registration by a moment: the caller retries.
            Status::failed_precondition(
                "supervisee is not known to the check-in service (unknown, or just registered: retry shortly)",
            )
        })?;
        caller.ensure_access(&supervisee.township_code, &supervisee.county_code)?;
        let status = SuperviseeStatus::parse(&supervisee.status)
            .ok_or_else(|| error::internal("unknown projected supervisee status"))?;
        if !status.accepts_checkins() {
            return Err(Status::failed_precondition(format!(
                "supervisee is not under active supervision (status {})",
                status.as_str()
            )));
        }

        let area = match &valid.position {
            Some(position) => {
                let circles = self
                    .area_circles(&mut tx, &supervisee.township_code, &supervisee.county_code)
                    .await?;
                domain::check_area(position, &circles)
            }
            None => AreaCheck {
                out_of_area: false,
                distance_outside_m: 0.0,
            },
        };
        let identity_verified = valid.identity.is_verified(self.rules.face_match_threshold);
        let (face_match_score, manual_officer_id, manual_note) = match &valid.identity {
            Identity::FaceMatch { score } => (Some(*score), None, None),
            Identity::Manual { officer_id, note } => (None, Some(officer_id.as_str()), Some(note.as_str())),
        };
        let inserted: Option<CheckinRow> = sqlx::query_as(&format!(
            "INSERT INTO checkins (checkin_id, supervisee_id, method, recording_officer_id, device_time, received_at,
                 latitude, longitude, accuracy_m, face_match_score, manual_officer_id, manual_note,
                 identity_verified, captured_offline, out_of_area, distance_outside_m, township_code,
                 county_code, note, content_sha256, recorded_by_subject, recorded_by_role)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)
             ON CONFLICT (checkin_id) DO NOTHING
             RETURNING {CHECKIN_COLUMNS}"
        ))
        .bind(valid.checkin_id)
        .bind(valid.supervisee_id)
        .bind(valid.method.as_str())
        .bind(&valid.recording_officer_id)
        .bind(valid.device_time)
        .bind(now)
        .bind(valid.position.map(|p| p.latitude))
        .bind(valid.position.map(|p| p.longitude))
        .bind(valid.position.map(|p| p.accuracy_m))
        .bind(face_match_score)
        .bind(manual_officer_id)
        .bind(manual_note)
        .bind(identity_verified)
        .bind(valid.captured_offline)
        .bind(area.out_of_area)
        .bind(area.distance_outside_m)
        .bind(&supervisee.township_code)
        .bind(&supervisee.county_code)
        .bind(&valid.note)
        .bind(fingerprint.as_slice())
        .bind(&caller.subject)
        .bind(caller.role.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(error::database)?;
        let Some(row) = inserted else {
            // A concurrent call with the same id committed first: answer as a retry would.
            drop(tx);
            let stored = self
                .find_checkin(valid.checkin_id)
                .await?
                .ok_or_else(|| error::internal("check-in missing after an id conflict"))?;
            return Self::replay(caller, &stored, &fingerprint);
        };

        let event = NewEvent {
            topic: self.topic.clone(),
            key: row.supervisee_id.to_string(),
            event_type: CHECKIN_RECORDED,
            payload: row.event(caller)?.encode_to_vec(),
            occurred_at: row.received_at,
        };
        let detail = serde_json::json!({
            "checkin_id": row.checkin_id,
            "method": row.method,
            "captured_offline": row.captured_offline,
            "out_of_area": row.out_of_area,
        });
        audit::record_change(&mut tx, caller, event, Some(row.supervisee_id), detail)
            .await
            .map_err(error::database)?;
        tx.commit().await.map_err(error::database)?;
        self.outbox_signal.notify();
        // Ids and flags only: positions are personal data and stay out of logs.
        tracing::info!(
            checkin_id = %row.checkin_id,
            supervisee_id = %row.supervisee_id,
            method = %row.method,
            captured_offline = row.captured_offline,
            out_of_area = row.out_of_area,
            identity_verified = row.identity_verified,
            "check-in recorded"
        );
        Ok(Recorded::Accepted(row.to_proto()?))
    }

    async fn load_area(&self, township_code: &str) -> Result<Option<(AreaRow, Vec<Circle>)>, Status> {
        let mut conn = self.pool.acquire().await.map_err(error::database)?;
        let area: Option<AreaRow> = sqlx::query_as(
            "SELECT township_code, county_code, version, updated_by_subject, updated_by_role, updated_at
             FROM permitted_areas WHERE township_code = $1",
        )
        .bind(township_code)
        .fetch_optional(&mut *conn)
        .await
        .map_err(error::database)?;
        let Some(area) = area else {
            return Ok(None);
        };
        let circles = self
            .area_circles(&mut conn, &area.township_code, &area.county_code)
            .await?;
        Ok(Some((area, circles)))
    }
}

fn area_to_proto(
    township_code: &str,
    county_code: &str,
    circles: &[Circle],
    area: Option<&AreaRow>,
) -> pb::PermittedArea {
    pb::PermittedArea {
        jurisdiction: Some(common::Jurisdiction {
            township_code: township_code.to_owned(),
            county_code: county_code.to_owned(),
        }),
        circles: circles
            .iter()
            .map(|circle| pb::GeoCircle {
                centre: Some(common::GeoPoint {
                    latitude: circle.latitude,
                    longitude: circle.longitude,
                    accuracy_m: 0.0,
                }),
                radius_m: circle.radius_m,
            })
            .collect(),
        updated_by: area.map(|area| common::Actor {
            subject: area.updated_by_subject.clone(),
            role: area.updated_by_role.clone(),
        }),
        updated_at: area.map(|area| to_timestamp(area.updated_at)),
        // Version 0: the configured default, never set for this township.
        version: area.map_or(0, |area| area.version),
    }
}

/// How a failed batch item is reported: `None` for infrastructure errors, which fail the
/// whole call so the client retries the batch (safe: items are idempotent).
fn rejection(status: &Status) -> Option<(String, String)> {
    let field = match status.code() {
        Code::InvalidArgument => violated_fields(status).into_iter().next().unwrap_or_default(),
        Code::AlreadyExists => "checkin_id".to_owned(),
        Code::FailedPrecondition | Code::PermissionDenied | Code::NotFound => "supervisee_id".to_owned(),
        _ => return None,
    };
    Some((status.message().to_owned(), field))
}

/// Page token of ListCheckins: the (device_time, checkin_id) of the last row returned.
fn encode_page_token(device_time: DateTime<Utc>, checkin_id: Uuid) -> String {
    let mut bytes = Vec::with_capacity(24);
    bytes.extend_from_slice(&device_time.timestamp_micros().to_be_bytes());
    bytes.extend_from_slice(checkin_id.as_bytes());
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

fn township_of(field: &str, code: &str) -> Result<&'static mesh_kit::jurisdiction::Township, Status> {
    Directory::get()
        .township(code)
        .ok_or_else(|| invalid_field(field, "unknown township office code"))
}

#[tonic::async_trait]
impl pb::checkin_service_server::CheckinService for Checkins {
    #[tracing::instrument(skip_all)]
    async fn record_checkin(
        &self,
        request: Request<pb::RecordCheckinRequest>,
    ) -> Result<Response<pb::RecordCheckinResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(RECORDERS)?;
        let new = request
            .into_inner()
            .checkin
            .ok_or_else(|| invalid_field("checkin", "is required"))?;
        let (checkin, duplicate) = match self.record(&caller, &new, "checkin.").await? {
            Recorded::Accepted(checkin) => (checkin, false),
            Recorded::Duplicate(checkin) => (checkin, true),
        };
        Ok(Response::new(pb::RecordCheckinResponse {
            checkin: Some(checkin),
            duplicate,
        }))
    }

    #[tracing::instrument(skip_all, fields(items))]
    async fn sync_offline_batch(
        &self,
        request: Request<pb::SyncOfflineBatchRequest>,
    ) -> Result<Response<pb::SyncOfflineBatchResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(RECORDERS)?;
        let items = request.into_inner().checkins;
        tracing::Span::current().record("items", items.len());
        if items.is_empty() || items.len() > domain::MAX_BATCH_ITEMS {
            return Err(invalid_field(
                "checkins",
                format!(
                    "must hold 1 to {} check-ins, got {}",
                    domain::MAX_BATCH_ITEMS,
                    items.len()
                ),
            ));
        }
        // Items are stored one by one, each in its own transaction: one bad item never
        // costs the others, and a batch cut short by an outage is simply sent again.
        let mut results = Vec::with_capacity(items.len());
        let (mut accepted, mut duplicates, mut rejected) = (0u32, 0u32, 0u32);
        for (index, item) in items.iter().enumerate() {
            let mut result = pb::SyncItemResult {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                checkin_id: item.checkin_id.clone(),
                ..Default::default()
            };
            match self.record(&caller, item, "").await {
                Ok(Recorded::Accepted(checkin)) => {
                    accepted += 1;
                    result.set_outcome(pb::SyncItemOutcome::Accepted);
                    result.checkin = Some(checkin);
                }
                Ok(Recorded::Duplicate(checkin)) => {
                    duplicates += 1;
                    result.set_outcome(pb::SyncItemOutcome::Duplicate);
                    result.checkin = Some(checkin);
                }
                Err(status) => {
                    let Some((reason, field)) = rejection(&status) else {
                        return Err(status);
                    };
                    rejected += 1;
                    result.set_outcome(pb::SyncItemOutcome::Rejected);
                    result.reject_reason = reason;
                    result.reject_field = field;
                }
            }
            results.push(result);
        }
        tracing::info!(accepted, duplicates, rejected, "offline batch synced");
        Ok(Response::new(pb::SyncOfflineBatchResponse { results }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_checkins(
        &self,
        request: Request<pb::ListCheckinsRequest>,
    ) -> Result<Response<pb::ListCheckinsResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(RECORDERS)?;
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let supervisee_id = request.supervisee_id.trim().parse::<Uuid>().ok();
        violations.require(supervisee_id.is_some(), "supervisee_id", "must be a UUID");
        let (start, end) = match &request.range {
            None => {
                violations.add("range", "is required");
                (None, None)
            }
            Some(range) => {
                let mut bound = |field: &str, value: &Option<prost_types::Timestamp>| match value {
                    None => {
                        violations.add(field, "is required");
                        None
                    }
                    Some(timestamp) => {
                        let time = from_timestamp(timestamp);
                        violations.require(time.is_some(), field, "must be a valid time");
                        time
                    }
                };
                let start = bound("range.start", &range.start);
                let end = bound("range.end", &range.end);
                if let (Some(start), Some(end)) = (start, end)
                    && end <= start
                {
                    violations.add("range.end", "must be after range.start");
                }
                (start, end)
            }
        };
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
        let (Some(supervisee_id), Some(start), Some(end)) = (supervisee_id, start, end) else {
            return Err(error::internal("validation inconsistency"));
        };
        let page_size = if page.page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            page.page_size
        };

        let mut tx = self.pool.begin().await.map_err(error::database)?;
        let supervisee: Option<SuperviseeRow> =
            sqlx::query_as("SELECT township_code, county_code, status FROM supervisees WHERE id = $1")
                .bind(supervisee_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(error::database)?;
        let supervisee = supervisee.ok_or_else(|| Status::not_found("no such supervisee"))?;
        caller.ensure_access(&supervisee.township_code, &supervisee.county_code)?;
        // Newest first; one row more than asked tells whether another page exists.
        let rows: Vec<CheckinRow> = sqlx::query_as(&format!(
            "SELECT {CHECKIN_COLUMNS} FROM checkins
             WHERE supervisee_id = $1 AND device_time >= $2 AND device_time < $3
               AND ($4::timestamptz IS NULL OR (device_time, checkin_id) < ($4, $5::uuid))
             ORDER BY device_time DESC, checkin_id DESC LIMIT $6"
        ))
        .bind(supervisee_id)
        .bind(start)
        .bind(end)
        .bind(after.map(|(time, _)| time))
        .bind(after.map(|(_, id)| id))
        .bind(i64::from(page_size) + 1)
        .fetch_all(&mut *tx)
        .await
        .map_err(error::database)?;
        let has_more = rows.len() > page_size as usize;
        let rows = &rows[..rows.len().min(page_size as usize)];
        let next_page_token = match (has_more, rows.last()) {
            (true, Some(last)) => encode_page_token(last.device_time, last.checkin_id),
            _ => String::new(),
        };
        let detail = serde_json::json!({
            "start": start, "end": end, "returned": rows.len(),
        });
        audit::record(
            &mut tx,
            &caller,
            "checkin.list",
            Some(supervisee_id),
            None,
            detail,
        )
        .await
        .map_err(error::database)?;
        tx.commit().await.map_err(error::database)?;
        let checkins = rows.iter().map(CheckinRow::to_proto).collect::<Result<_, _>>()?;
        Ok(Response::new(pb::ListCheckinsResponse {
            checkins,
            page: Some(common::PageResponse { next_page_token }),
        }))
    }

    #[tracing::instrument(skip_all, fields(township_code))]
    async fn set_permitted_area(
        &self,
        request: Request<pb::SetPermittedAreaRequest>,
    ) -> Result<Response<pb::SetPermittedAreaResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(AREA_SETTERS)?;
        let request = request.into_inner();
        let township = township_of("township_code", &request.township_code)?;
        tracing::Span::current().record("township_code", township.code.as_str());
        let circles = domain::validate_circles(&request.circles)?;
        caller.ensure_access(&township.code, &township.county_code)?;
        let now = self.clock.now();

        let mut tx = self.pool.begin().await.map_err(error::database)?;
        // The upsert locks the township's row, so concurrent replacements apply one after
        // the other and each bumps the version.
        let area: AreaRow = sqlx::query_as(
            "INSERT INTO permitted_areas (township_code, county_code, version, updated_by_subject, updated_by_role, updated_at)
             VALUES ($1, $2, 1, $3, $4, $5)
             ON CONFLICT (township_code) DO UPDATE SET
                 version = permitted_areas.version + 1, updated_by_subject = EXCLUDED.updated_by_subject,
                 updated_by_role = EXCLUDED.updated_by_role, updated_at = EXCLUDED.updated_at
             RETURNING township_code, county_code, version, updated_by_subject, updated_by_role, updated_at",
        )
        .bind(&township.code)
        .bind(&township.county_code)
        .bind(&caller.subject)
        .bind(caller.role.as_str())
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(error::database)?;
        sqlx::query("DELETE FROM permitted_area_circles WHERE township_code = $1")
            .bind(&township.code)
            .execute(&mut *tx)
            .await
            .map_err(error::database)?;
        let positions: Vec<i32> = (0..circles.len())
            .map(|index| i32::try_from(index).unwrap_or(i32::MAX))
            .collect();
        let latitudes: Vec<f64> = circles.iter().map(|circle| circle.latitude).collect();
        let longitudes: Vec<f64> = circles.iter().map(|circle| circle.longitude).collect();
        let radii: Vec<f64> = circles.iter().map(|circle| circle.radius_m).collect();
        sqlx::query(
            "INSERT INTO permitted_area_circles (township_code, position, latitude, longitude, radius_m)
             SELECT $1, * FROM UNNEST($2::int4[], $3::float8[], $4::float8[], $5::float8[])",
        )
        .bind(&township.code)
        .bind(&positions)
        .bind(&latitudes)
        .bind(&longitudes)
        .bind(&radii)
        .execute(&mut *tx)
        .await
        .map_err(error::database)?;
        let detail = serde_json::json!({
            "township_code": township.code, "circles": circles.len(), "version": area.version,
        });
        audit::record(&mut tx, &caller, "permitted_area.set", None, None, detail)
            .await
            .map_err(error::database)?;
        tx.commit().await.map_err(error::database)?;
        tracing::info!(
            version = area.version,
            circles = circles.len(),
            "permitted area set"
        );
        Ok(Response::new(pb::SetPermittedAreaResponse {
            area: Some(area_to_proto(
                &township.code,
                &township.county_code,
                &circles,
                Some(&area),
            )),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_permitted_area(
        &self,
        request: Request<pb::GetPermittedAreaRequest>,
    ) -> Result<Response<pb::GetPermittedAreaResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(RECORDERS)?;
        let township = township_of("township_code", &request.get_ref().township_code)?;
        caller.ensure_access(&township.code, &township.county_code)?;
        let area = match self.load_area(&township.code).await? {
            Some((area, circles)) => {
                area_to_proto(&township.code, &township.county_code, &circles, Some(&area))
            }
            None => {
                // Never set: the default that check-ins are tested against, if any.
                let circles = self.default_area(&township.county_code);
                if circles.is_empty() {
                    return Err(Status::not_found("no permitted area is set for this township"));
                }
                area_to_proto(&township.code, &township.county_code, &circles, None)
            }
        };
        Ok(Response::new(pb::GetPermittedAreaResponse { area: Some(area) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let time = DateTime::from_timestamp_micros(1_790_000_000_123_456).unwrap_or_default();
        let id = Uuid::now_v7();
        assert_eq!(decode_page_token(&encode_page_token(time, id)), Some((time, id)));
        assert_eq!(decode_page_token("%%%"), None);
        assert_eq!(decode_page_token("AAAA"), None);
    }

    #[test]
    fn infrastructure_errors_fail_the_batch_and_the_rest_reject_the_item() {
        assert_eq!(rejection(&Status::internal("x")), None);
        assert_eq!(rejection(&Status::unavailable("x")), None);
        assert_eq!(
            rejection(&Status::already_exists("taken")),
            Some(("taken".to_owned(), "checkin_id".to_owned()))
        );
        assert_eq!(
            rejection(&invalid_field("device_time", "too old")).map(|(_, field)| field),
            Some("device_time".to_owned())
        );
        assert_eq!(
            rejection(&Status::permission_denied("no")).map(|(_, field)| field),
            Some("supervisee_id".to_owned())
        );
    }
}
