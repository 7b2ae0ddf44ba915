//! Resettlement bases: create, update, list. Bases belong to a township; only its offices
//! (and the county's bureau) manage them.

use mesh_kit::change::Tx;
use mesh_kit::{auth::Caller, error::ServiceError};
use mesh_proto::placement as pb;
use serde_json::json;
use uuid::Uuid;

use super::Api;
use crate::{
    events::Published,
    request, response,
    store::{self, Lock},
};

pub(super) async fn create(
    api: &Api,
    caller: &Caller,
    request: &pb::CreateBaseRequest,
) -> Result<pb::CreateBaseResponse, ServiceError> {
    let base = request::validate_create_base(request)?;
    caller.ensure_access(&base.township_code, &base.county_code)?;
    let id = Uuid::now_v7();
    tracing::Span::current().record("base_id", tracing::field::display(id));
    let now = api.now();
    let mut change = api.changes.begin().await?;
    let row = store::bases::insert(&mut change, id, &base, now).await?;
    let base = response::base(&row);
    let event = api.events.event(id, Published::BaseCreated(&base), caller, now);
    let detail = json!({ "township_code": row.township_code, "name": row.name });
    change.publish(caller, event, Some(id), detail).await?;
    change.commit().await?;
    Ok(pb::CreateBaseResponse { base: Some(base) })
}

pub(super) async fn update(
    api: &Api,
    caller: &Caller,
    request: &pb::UpdateBaseRequest,
) -> Result<pb::UpdateBaseResponse, ServiceError> {
    let update = request::validate_update_base(request)?;
    let mut change = api.changes.begin().await?;
    let current = store::bases::load(&mut change, update.base_id, Lock::Update).await?;
    caller.ensure_access(&current.township_code, &current.county_code)?;
    let profile = update.changes.applied_to(&current.profile());
    if profile == current.profile() {
        // Nothing changes: a retried request writes nothing.
        return Ok(pb::UpdateBaseResponse {
            base: Some(response::base(&current)),
        });
    }
    let row = store::bases::update(&mut change, update.base_id, &profile, api.now()).await?;
    // The event contract has no base-updated event; the change is in the audit log.
    let detail = json!({
        "name": row.name, "type": row.base_type.as_str(), "active": row.active, "was_active": current.active,
    });
    change
        .audit(
            caller,
            "placement.base_updated",
            Some(update.base_id),
            None,
            detail,
        )
        .await?;
    change.commit().await?;
    Ok(pb::UpdateBaseResponse {
        base: Some(response::base(&row)),
    })
}

pub(super) async fn list(
    api: &Api,
    caller: &Caller,
    request: &pb::ListBasesRequest,
) -> Result<pb::ListBasesResponse, ServiceError> {
    let query = request::validate_list_bases(request, &api.cursors)?;
    let (township, county) = (query.area.township_code(), query.area.county_code());
    caller.ensure_access(township.unwrap_or_default(), county)?;
    let mut change = api.changes.begin().await?;
    let rows = store::bases::list(&mut change, &query).await?;
    let (rows, page) = api
        .cursors
        .finish(&query.cursor_scope, query.page.size, rows, |base| {
            (base.name.clone(), base.id)
        });
    let detail = json!({ "county_code": county, "township_code": township, "returned": rows.len() });
    change
        .audit(caller, "placement.base_list", None, None, detail)
        .await?;
    change.commit().await?;
    Ok(pb::ListBasesResponse {
        bases: rows.iter().map(response::base).collect(),
        page: Some(page),
    })
}
