//! Job openings: create, close, list. Openings are managed by the offices of their base and
//! read county-wide (see [`domain::ensure_reads_county`]).

use mesh_kit::change::Tx;
use mesh_kit::{auth::Caller, error::ServiceError};
use mesh_proto::placement as pb;
use serde_json::json;
use uuid::Uuid;

use super::Api;
use crate::{
    domain::{self, OpeningStatus},
    events::Published,
    request::{self, Scope},
    response,
    store::{self, Lock},
};

pub(super) async fn create(
    api: &Api,
    caller: &Caller,
    request: &pb::CreateOpeningRequest,
) -> Result<pb::CreateOpeningResponse, ServiceError> {
    let opening = request::validate_create_opening(request, api.today())?;
    let mut change = api.changes.begin().await?;
    // Shared lock: the base cannot be deactivated while its new opening is written.
    let base = store::bases::load(&mut change, opening.base_id, Lock::Share).await?;
    caller.ensure_access(&base.township_code, &base.county_code)?;
    domain::check_takes_openings(base.active)?;
    let id = Uuid::now_v7();
    tracing::Span::current().record("opening_id", tracing::field::display(id));
    let now = api.now();
    let row = store::openings::insert(&mut change, id, &opening, now).await?;
    let created = response::opening(&row);
    let event = api
        .events
        .event(base.id, Published::OpeningCreated(&created), caller, now);
    let excluded: Vec<&str> = row.excluded_offences.iter().map(|o| o.as_str()).collect();
    let detail = json!({
        "base_id": base.id, "title": row.title, "positions_total": row.positions_total,
        "work_county_code": row.work_county_code, "excluded": excluded,
    });
    change.publish(caller, event, Some(id), detail).await?;
    change.commit().await?;
    Ok(pb::CreateOpeningResponse {
        opening: Some(created),
    })
}

pub(super) async fn close(
    api: &Api,
    caller: &Caller,
    request: &pb::CloseOpeningRequest,
) -> Result<pb::CloseOpeningResponse, ServiceError> {
    let closing = request::validate_close_opening(request)?;
    let id = closing.opening_id;
    let mut change = api.changes.begin().await?;
    let current = store::openings::load(&mut change, id, Lock::Update).await?;
    caller.ensure_access(&current.base_township_code, &current.base_county_code)?;
    if current.status == OpeningStatus::Closed {
        // Closing a closed opening is a no-op (and publishes nothing).
        return Ok(pb::CloseOpeningResponse {
            opening: Some(response::opening(&current)),
        });
    }
    let now = api.now();
    let row = store::openings::close(&mut change, id, &closing.reason, now).await?;
    let closed = response::opening(&row);
    let event = api
        .events
        .event(row.base_id, Published::OpeningClosed(&closed), caller, now);
    let detail = json!({ "reason": closing.reason });
    change.publish(caller, event, Some(id), detail).await?;
    change.commit().await?;
    Ok(pb::CloseOpeningResponse {
        opening: Some(closed),
    })
}

pub(super) async fn list(
    api: &Api,
    caller: &Caller,
    request: &pb::ListOpeningsRequest,
) -> Result<pb::ListOpeningsResponse, ServiceError> {
    let query = request::validate_list_openings(request, &api.cursors)?;
    let mut change = api.changes.begin().await?;
    let county = match &query.scope {
        Scope::Base(base_id) => {
            store::bases::load(&mut change, *base_id, Lock::None)
                .await?
                .county_code
        }
        Scope::Area(area) => area.county_code().to_owned(),
    };
    domain::ensure_reads_county(caller, &county)?;
    let rows = store::openings::list(&mut change, &query).await?;
    let (rows, page) = api
        .cursors
        .finish(&query.cursor_scope, query.page.size, rows, |opening| {
            (opening.created_at.timestamp_micros(), opening.id)
        });
    change.commit().await?;
    Ok(pb::ListOpeningsResponse {
        openings: rows.iter().map(response::opening).collect(),
        page: Some(page),
    })
}
