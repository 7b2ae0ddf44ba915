//! The risk-alert gRPC API: alerts by jurisdiction, acknowledge, resolve, the live stream,
//! and webhook endpoints with their delivery record. Jurisdiction is checked on every call.

use std::{pin::Pin, sync::Arc};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use mesh_kit::{
    auth::{Caller, Role, caller},
    crypto::FieldCrypto,
    error::{self, FieldViolations, invalid_field},
    jurisdiction::Directory,
    proto_time::to_timestamp,
    validate::check_text,
};
use mesh_proto::{
    alert::{self as pb, AlertChange, alert_service_server::AlertService},
    common::{Jurisdiction, PageResponse},
};
use tokio::sync::broadcast;
use tokio_stream::{Stream, StreamExt, wrappers::BroadcastStream};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    alerts::{self, Resolution},
    engine::Engine,
    notify,
};

const DEFAULT_PAGE_SIZE: u32 = 50;
const MAX_PAGE_SIZE: u32 = 500;
const MAX_NOTE_CHARS: usize = 1000;

/// Roles that work with alerts.
const ALERT_ROLES: &[Role] = &[
    Role::Officer,
    Role::TownshipOffice,
    Role::CountyBureau,
    Role::Admin,
    Role::System,
];

/// An alert change as fanned out to live streams.
pub type Change = (AlertChange, pb::Alert);

pub struct AlertApi {
    engine: Arc<Engine>,
    crypto: Arc<FieldCrypto>,
    changes: broadcast::Sender<Change>,
    allow_http: bool,
}

impl AlertApi {
    pub fn new(
        engine: Arc<Engine>,
        crypto: Arc<FieldCrypto>,
        changes: broadcast::Sender<Change>,
        allow_http: bool,
    ) -> Self {
        Self {
            engine,
            crypto,
            changes,
            allow_http,
        }
    }
}

/// A township (both codes) or a county (township empty), validated and checked against the
/// caller.
fn scope(caller: &Caller, field: &str, jurisdiction: Option<&Jurisdiction>) -> Result<Jurisdiction, Status> {
    let jurisdiction = jurisdiction.cloned().unwrap_or_default();
    let directory = Directory::get();
    if jurisdiction.township_code.is_empty() {
        if directory.county(&jurisdiction.county_code).is_none() {
            return Err(invalid_field(
                &format!("{field}.county_code"),
                "unknown county bureau code",
            ));
        }
        let county_wide = match caller.role {
            Role::Admin | Role::System => true,
            Role::CountyBureau => caller.county.as_deref() == Some(jurisdiction.county_code.as_str()),
            _ => false,
        };
        if !county_wide {
            return Err(Status::permission_denied("outside the caller's jurisdiction"));
        }
    } else {
        let mut violations = FieldViolations::new();
        mesh_kit::validate::check_jurisdiction(
            &mut violations,
            &format!("{field}.township_code"),
            &jurisdiction.township_code,
            &format!("{field}.county_code"),
            &jurisdiction.county_code,
        );
        violations.into_result()?;
        caller.ensure_access(&jurisdiction.township_code, &jurisdiction.county_code)?;
    }
    Ok(jurisdiction)
}

fn in_scope(scope: &Jurisdiction, alert: &pb::Alert) -> bool {
    let jurisdiction = alert.jurisdiction.clone().unwrap_or_default();
    jurisdiction.county_code == scope.county_code
        && (scope.township_code.is_empty() || jurisdiction.township_code == scope.township_code)
}

fn ensure_alert_access(caller: &Caller, alert: &pb::Alert) -> Result<(), Status> {
    let jurisdiction = alert.jurisdiction.clone().unwrap_or_default();
    Ok(caller.ensure_access(&jurisdiction.township_code, &jurisdiction.county_code)?)
}

fn parse_alert_id(value: &str) -> Result<Uuid, Status> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid_field("alert_id", "must be a UUID"))
}

/// Position after which a page of alerts starts: (raised_at, alert_id) of the last one seen.
type Cursor = (DateTime<Utc>, Uuid);

/// Page size and the decoded cursor of a list request.
fn page(request: Option<&mesh_proto::common::PageRequest>) -> Result<(i64, Option<Cursor>), Status> {
    let request = request.cloned().unwrap_or_default();
    if request.page_size > MAX_PAGE_SIZE {
        return Err(invalid_field(
            "page.page_size",
            format!("must be at most {MAX_PAGE_SIZE}"),
        ));
    }
    let size = if request.page_size == 0 {
        DEFAULT_PAGE_SIZE
    } else {
        request.page_size
    };
    if request.page_token.is_empty() {
        return Ok((i64::from(size), None));
    }
    let cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&request.page_token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| {
            let (time, id) = text.split_once('|')?;
            Some((
                DateTime::parse_from_rfc3339(time).ok()?.with_timezone(&Utc),
                id.parse().ok()?,
            ))
        })
        .ok_or_else(|| invalid_field("page.page_token", "not a token from a previous page"))?;
    Ok((i64::from(size), Some(cursor)))
}

fn cursor_token(raised_at: DateTime<Utc>, id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}|{id}",
        raised_at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    ))
}

type AlertStream = Pin<Box<dyn Stream<Item = Result<pb::StreamAlertsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AlertService for AlertApi {
    #[tracing::instrument(skip_all)]
    async fn list_alerts(
        &self,
        request: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(ALERT_ROLES)?;
        let request = request.into_inner();
        let scope = scope(&caller, "jurisdiction", request.jurisdiction.as_ref())?;
        let statuses: Vec<String> = request
            .statuses
            .iter()
            .map(|status| match pb::AlertStatus::try_from(*status) {
                Ok(pb::AlertStatus::Open) => Ok("open".to_owned()),
                Ok(pb::AlertStatus::Acknowledged) => Ok("acknowledged".to_owned()),
                Ok(pb::AlertStatus::Resolved) => Ok("resolved".to_owned()),
                _ => Err(invalid_field("statuses", "unknown status")),
            })
            .collect::<Result<_, _>>()?;
        let kinds: Vec<String> = request
            .kinds
            .iter()
            .map(|kind| match pb::AlertKind::try_from(*kind) {
                Ok(pb::AlertKind::Unspecified) | Err(_) => Err(invalid_field("kinds", "unknown kind")),
                Ok(kind) => Ok(crate::rules::kind_key(kind)),
            })
            .collect::<Result<_, _>>()?;
        let (size, after) = page(request.page.as_ref())?;
        #[derive(sqlx::FromRow)]
        struct Row {
            alert_id: Uuid,
            raised_at: DateTime<Utc>,
            body: Vec<u8>,
        }
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT alert_id, raised_at, body FROM alerts
             WHERE county_code = $1 AND ($2 = '' OR township_code = $2)
               AND (cardinality($3::text[]) = 0 OR status = ANY($3))
               AND (cardinality($4::text[]) = 0 OR kind = ANY($4))
               AND ($5 = '' OR subject_id = $5)
               AND ($6::timestamptz IS NULL OR (raised_at, alert_id) < ($6, $7))
             ORDER BY raised_at DESC, alert_id DESC LIMIT $8",
        )
        .bind(&scope.county_code)
        .bind(&scope.township_code)
        .bind(&statuses)
        .bind(&kinds)
        .bind(request.subject_id.trim())
        .bind(after.map(|(time, _)| time))
        .bind(after.map(|(_, id)| id))
        .bind(size + 1)
        .fetch_all(&self.engine.pool)
        .await
        .map_err(error::database)?;
        let has_more = rows.len() as i64 > size;
        let rows = &rows[..rows.len().min(size as usize)];
        let next_page_token = match (has_more, rows.last()) {
            (true, Some(last)) => cursor_token(last.raised_at, last.alert_id),
            _ => String::new(),
        };
        let alerts = alerts::decode_all(rows.iter().map(|row| row.body.clone()).collect());
        Ok(Response::new(pb::ListAlertsResponse {
            alerts,
            page: Some(PageResponse { next_page_token }),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_alert(
        &self,
        request: Request<pb::GetAlertRequest>,
    ) -> Result<Response<pb::GetAlertResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(ALERT_ROLES)?;
        let id = parse_alert_id(&request.get_ref().alert_id)?;
        let mut conn = self.engine.pool.acquire().await.map_err(error::database)?;
        let alert = alerts::load(&mut conn, id)
            .await
            .map_err(error::database)?
            .ok_or_else(|| Status::not_found("no such alert"))?;
        ensure_alert_access(&caller, &alert)?;
        Ok(Response::new(pb::GetAlertResponse { alert: Some(alert) }))
    }

    #[tracing::instrument(skip_all)]
    async fn acknowledge_alert(
        &self,
        request: Request<pb::AcknowledgeAlertRequest>,
    ) -> Result<Response<pb::AcknowledgeAlertResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(ALERT_ROLES)?;
        let id = parse_alert_id(&request.get_ref().alert_id)?;
        let mut tx = self.engine.pool.begin().await.map_err(error::database)?;
        let alert = alerts::load_for_update(&mut tx, id)
            .await
            .map_err(error::database)?
            .ok_or_else(|| Status::not_found("no such alert"))?;
        ensure_alert_access(&caller, &alert)?;
        if alert.status() == pb::AlertStatus::Resolved {
            return Err(Status::failed_precondition("the alert is already resolved"));
        }
        let now = self.engine.clock.now();
        let alert = alerts::acknowledge(&mut tx, &self.engine.publisher, alert, caller.actor(), now)
            .await
            .map_err(error::database)?;
        tx.commit().await.map_err(error::database)?;
        self.engine.outbox_signal.notify();
        Ok(Response::new(pb::AcknowledgeAlertResponse { alert: Some(alert) }))
    }

    #[tracing::instrument(skip_all)]
    async fn resolve_alert(
        &self,
        request: Request<pb::ResolveAlertRequest>,
    ) -> Result<Response<pb::ResolveAlertResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(ALERT_ROLES)?;
        let request = request.into_inner();
        let id = parse_alert_id(&request.alert_id)?;
        let mut violations = FieldViolations::new();
        let note = check_text(&mut violations, "note", &request.note, MAX_NOTE_CHARS);
        violations.into_result()?;
        let mut tx = self.engine.pool.begin().await.map_err(error::database)?;
        let alert = alerts::load_for_update(&mut tx, id)
            .await
            .map_err(error::database)?
            .ok_or_else(|| Status::not_found("no such alert"))?;
        ensure_alert_access(&caller, &alert)?;
        let now = self.engine.clock.now();
        let resolution = Resolution {
            actor: caller.actor(),
            note,
            reference: None,
        };
        let alert = alerts::resolve(&mut tx, &self.engine.publisher, alert, resolution, now)
            .await
            .map_err(error::database)?;
        tx.commit().await.map_err(error::database)?;
        self.engine.outbox_signal.notify();
        Ok(Response::new(pb::ResolveAlertResponse { alert: Some(alert) }))
    }

    type StreamAlertsStream = AlertStream;

    #[tracing::instrument(skip_all)]
    async fn stream_alerts(
        &self,
        request: Request<pb::StreamAlertsRequest>,
    ) -> Result<Response<Self::StreamAlertsStream>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(ALERT_ROLES)?;
        let request = request.into_inner();
        let scope = scope(&caller, "jurisdiction", request.jurisdiction.as_ref())?;
        // Subscribe before reading the current alerts so nothing falls between the two.
        let live = BroadcastStream::new(self.changes.subscribe());
        let current = if request.include_current {
            let bodies: Vec<Vec<u8>> = sqlx::query_scalar(
                "SELECT body FROM alerts WHERE county_code = $1 AND ($2 = '' OR township_code = $2)
                   AND status <> 'resolved' ORDER BY raised_at",
            )
            .bind(&scope.county_code)
            .bind(&scope.township_code)
            .fetch_all(&self.engine.pool)
            .await
            .map_err(error::database)?;
            alerts::decode_all(bodies)
        } else {
            Vec::new()
        };
        let current = tokio_stream::iter(current.into_iter().map(|alert| {
            Ok(pb::StreamAlertsResponse {
                change: AlertChange::Current as i32,
                alert: Some(alert),
            })
        }));
        let live_scope = scope.clone();
        let live = live.filter_map(move |item| match item {
            Ok((change, alert)) if in_scope(&live_scope, &alert) => Some(Ok(pb::StreamAlertsResponse {
                change: change as i32,
                alert: Some(alert),
            })),
            Ok(_) => None,
            // A slow dashboard missed changes: tell it to reload rather than silently skip.
            Err(_) => Some(Err(Status::data_loss(
                "stream fell behind; reconnect with include_current",
            ))),
        });
        Ok(Response::new(Box::pin(current.chain(live))))
    }

    #[tracing::instrument(skip_all)]
    async fn register_endpoint(
        &self,
        request: Request<pb::RegisterEndpointRequest>,
    ) -> Result<Response<pb::RegisterEndpointResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(&[Role::TownshipOffice, Role::CountyBureau, Role::Admin])?;
        let request = request.into_inner();
        let jurisdiction = scope(&caller, "jurisdiction", request.jurisdiction.as_ref())?;
        let mut violations = FieldViolations::new();
        let url = request.url.trim().to_owned();
        let scheme_ok = url.starts_with("https://") || (self.allow_http && url.starts_with("http://"));
        if url.len() > 2048 || !scheme_ok || reqwest::Url::parse(&url).is_err() {
            violations.add(
                "url",
                if self.allow_http {
                    "must be an http(s) URL of at most 2048 characters"
                } else {
                    "must be an https URL of at most 2048 characters"
                },
            );
        }
        let secret_len = request.secret.chars().count();
        if !(32..=256).contains(&secret_len) {
            violations.add("secret", "must be 32 to 256 characters");
        }
        if request.description.chars().count() > 200 {
            violations.add("description", "must be at most 200 characters");
        }
        violations.into_result()?;
        let now = self.engine.clock.now();
        let sealed = self.crypto.seal(&request.secret, notify::SECRET_CONTEXT);
        #[derive(sqlx::FromRow)]
        struct Stored {
            endpoint_id: Uuid,
            created_at: DateTime<Utc>,
        }
        let stored: Stored = sqlx::query_as(
            "INSERT INTO endpoints (endpoint_id, township_code, county_code, url, secret_sealed, description,
                 registered_by_subject, registered_by_role, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
             ON CONFLICT (county_code, township_code) DO UPDATE SET url = $4, secret_sealed = $5, description = $6,
                 registered_by_subject = $7, registered_by_role = $8, updated_at = $9
             RETURNING endpoint_id, created_at",
        )
        .bind(Uuid::now_v7())
        .bind(&jurisdiction.township_code)
        .bind(&jurisdiction.county_code)
        .bind(&url)
        .bind(sealed)
        .bind(request.description.trim())
        .bind(&caller.subject)
        .bind(caller.role.as_str())
        .bind(now)
        .fetch_one(&self.engine.pool)
        .await
        .map_err(error::database)?;
        tracing::info!(endpoint_id = %stored.endpoint_id, township = %jurisdiction.township_code, "webhook endpoint registered");
        Ok(Response::new(pb::RegisterEndpointResponse {
            endpoint: Some(pb::WebhookEndpoint {
                endpoint_id: stored.endpoint_id.to_string(),
                jurisdiction: Some(jurisdiction),
                url,
                description: request.description.trim().to_owned(),
                registered_by: Some(caller.actor()),
                created_at: Some(to_timestamp(stored.created_at)),
                updated_at: Some(to_timestamp(now)),
            }),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_endpoints(
        &self,
        request: Request<pb::ListEndpointsRequest>,
    ) -> Result<Response<pb::ListEndpointsResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(ALERT_ROLES)?;
        let request = request.into_inner();
        let scope = scope(&caller, "jurisdiction", request.jurisdiction.as_ref())?;
        #[derive(sqlx::FromRow)]
        struct Row {
            endpoint_id: Uuid,
            township_code: String,
            county_code: String,
            url: String,
            description: String,
            registered_by_subject: String,
            registered_by_role: String,
            created_at: DateTime<Utc>,
            updated_at: DateTime<Utc>,
        }
        // One endpoint per jurisdiction keeps this list short: a county has at most a few
        // dozen townships, so it is returned in one page.
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT endpoint_id, township_code, county_code, url, description, registered_by_subject,
                    registered_by_role, created_at, updated_at
             FROM endpoints WHERE county_code = $1 AND ($2 = '' OR township_code = $2)
             ORDER BY township_code, endpoint_id",
        )
        .bind(&scope.county_code)
        .bind(&scope.township_code)
        .fetch_all(&self.engine.pool)
        .await
        .map_err(error::database)?;
        let endpoints = rows
            .into_iter()
            .map(|row| pb::WebhookEndpoint {
                endpoint_id: row.endpoint_id.to_string(),
                jurisdiction: Some(Jurisdiction {
                    township_code: row.township_code,
                    county_code: row.county_code,
                }),
                url: row.url,
                description: row.description,
                registered_by: Some(mesh_proto::common::Actor {
                    subject: row.registered_by_subject,
                    role: row.registered_by_role,
                }),
                created_at: Some(to_timestamp(row.created_at)),
                updated_at: Some(to_timestamp(row.updated_at)),
            })
            .collect();
        Ok(Response::new(pb::ListEndpointsResponse {
            endpoints,
            page: Some(PageResponse::default()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let caller = caller(&request)?;
        caller.ensure_role(ALERT_ROLES)?;
        let request = request.into_inner();
        let id = parse_alert_id(&request.alert_id)?;
        let mut conn = self.engine.pool.acquire().await.map_err(error::database)?;
        let alert = alerts::load(&mut conn, id)
            .await
            .map_err(error::database)?
            .ok_or_else(|| Status::not_found("no such alert"))?;
        ensure_alert_access(&caller, &alert)?;
        let page_request = request.page.unwrap_or_default();
        if page_request.page_size > MAX_PAGE_SIZE {
            return Err(invalid_field(
                "page.page_size",
                format!("must be at most {MAX_PAGE_SIZE}"),
            ));
        }
        let size = if page_request.page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            page_request.page_size
        };
        let after: i64 = match page_request.page_token.as_str() {
            "" => 0,
            token => token
                .parse()
                .map_err(|_| invalid_field("page.page_token", "not a token from a previous page"))?,
        };
        #[derive(sqlx::FromRow)]
        struct Row {
            id: i64,
            notification_id: Uuid,
            event_type: String,
            endpoint_id: Uuid,
            url: String,
            attempt_number: i32,
            attempted_at: DateTime<Utc>,
            http_status: i32,
            delivered: bool,
            error: String,
            duration_ms: i32,
            next_attempt_at: Option<DateTime<Utc>>,
        }
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, notification_id, event_type, endpoint_id, url, attempt_number, attempted_at, http_status,
                    delivered, error, duration_ms, next_attempt_at
             FROM delivery_attempts WHERE alert_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(id)
        .bind(after)
        .bind(i64::from(size) + 1)
        .fetch_all(&mut *conn)
        .await
        .map_err(error::database)?;
        let has_more = rows.len() > size as usize;
        let rows = &rows[..rows.len().min(size as usize)];
        let next_page_token = match (has_more, rows.last()) {
            (true, Some(last)) => last.id.to_string(),
            _ => String::new(),
        };
        let deliveries = rows
            .iter()
            .map(|row| pb::DeliveryAttempt {
                alert_id: alert.alert_id.clone(),
                notification_id: row.notification_id.to_string(),
                event_type: row.event_type.clone(),
                endpoint_id: row.endpoint_id.to_string(),
                url: row.url.clone(),
                attempt_number: row.attempt_number as u32,
                attempted_at: Some(to_timestamp(row.attempted_at)),
                http_status: row.http_status as u32,
                outcome: if row.delivered {
                    pb::DeliveryOutcome::Delivered
                } else {
                    pb::DeliveryOutcome::Failed
                } as i32,
                error: row.error.clone(),
                duration_ms: row.duration_ms as u32,
                next_attempt_at: row.next_attempt_at.map(to_timestamp),
            })
            .collect();
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries,
            page: Some(PageResponse { next_page_token }),
        }))
    }
}
