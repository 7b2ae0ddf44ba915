//! Webhook handlers: register a township's or county's endpoint (which then hears of the
//! alerts still open) once its URL is found to lead only to public addresses, list them,
//! and list the delivery attempts of an alert's notifications.

use mesh_kit::{error::ServiceError, proto_time::to_timestamp};
use mesh_proto::{alert as pb, common::PageResponse};
use tonic::Request;

use super::{AlertApi, authorized, scope};
use crate::{
    convert::{actor_to_proto, delivery_to_proto, endpoint_to_proto, jurisdiction_to_proto},
    domain::{
        Actor,
        access::{self, ALERT_ROLES, ENDPOINT_ROLES},
    },
    notify, request,
    store::{self, webhooks::NewEndpoint},
};

pub(super) async fn register(
    api: &AlertApi,
    request: Request<pb::RegisterEndpointRequest>,
) -> Result<pb::RegisterEndpointResponse, ServiceError> {
    let caller = authorized(&request, ENDPOINT_ROLES)?;
    let request = request.into_inner();
    let jurisdiction = scope(&caller, request.jurisdiction.as_ref())?;
    access::ensure_may_register_endpoint(&caller, &jurisdiction)?;
    let endpoint = request::endpoint(&request, api.allow_http)?;
    // Before anything is written: a URL leading into the service's own network (at
    // registration; `egress` looks again at every delivery) is refused.
    api.egress
        .vet(&endpoint.url)
        .await
        .map_err(|_| request::destination_refused())?;
    let now = api.clock.now();
    let registered_by = Actor::caller(&caller);
    let mut change = api.changes.begin().await?;
    let (endpoint_id, created_at, first) = store::webhooks::save_endpoint(
        &mut *change,
        NewEndpoint {
            jurisdiction: &jurisdiction,
            url: endpoint.url.as_str(),
            secret_sealed: api.crypto.seal(&endpoint.secret, notify::SECRET_CONTEXT),
            description: &endpoint.description,
            max_batch_size: endpoint.max_batch_size,
            registered_by: &registered_by,
        },
        now,
    )
    .await?;
    // A first registration hears, in the same transaction, of every alert still open that
    // the office would have been told of: nothing raised before it had an endpoint is lost.
    // (A re-registration only moves the URL: its pending notifications follow.)
    let told = if first {
        api.lifecycle
            .tell_current(&mut change, &jurisdiction, endpoint_id, now)
            .await?
    } else {
        0
    };
    change.commit().await?;
    tracing::info!(%endpoint_id, township = %jurisdiction.township_code, told, "webhook endpoint registered");
    Ok(pb::RegisterEndpointResponse {
        endpoint: Some(pb::WebhookEndpoint {
            endpoint_id: endpoint_id.to_string(),
            jurisdiction: Some(jurisdiction_to_proto(&jurisdiction)),
            url: endpoint.url.into(),
            description: endpoint.description,
            registered_by: Some(actor_to_proto(&registered_by)),
            created_at: Some(to_timestamp(created_at)),
            updated_at: Some(to_timestamp(now)),
            max_batch_size: endpoint.max_batch_size.unsigned_abs(),
        }),
    })
}

pub(super) async fn list(
    api: &AlertApi,
    request: Request<pb::ListEndpointsRequest>,
) -> Result<pb::ListEndpointsResponse, ServiceError> {
    let caller = authorized(&request, ALERT_ROLES)?;
    let request = request.into_inner();
    let scope = scope(&caller, request.jurisdiction.as_ref())?;
    // One endpoint per jurisdiction keeps this list short: a county has at most a few dozen
    // townships, so it is returned in one page.
    let rows = store::webhooks::endpoints(api.changes.pool(), &scope).await?;
    Ok(pb::ListEndpointsResponse {
        endpoints: rows.into_iter().map(endpoint_to_proto).collect(),
        page: Some(PageResponse::default()),
    })
}

pub(super) async fn deliveries(
    api: &AlertApi,
    request: Request<pb::ListDeliveriesRequest>,
) -> Result<pb::ListDeliveriesResponse, ServiceError> {
    let caller = authorized(&request, ALERT_ROLES)?;
    let request = request.into_inner();
    let id = request::alert_id(&request.alert_id)?;
    let alert = api.visible_alert(&caller, id).await?;
    let cursor_scope = format!("alert.deliveries|{id}");
    let page = request::page::<i64>(&api.cursors, &cursor_scope, request.page.as_ref())?;
    let rows = store::deliveries::deliveries(
        api.changes.pool(),
        id,
        page.after.unwrap_or(0),
        page.fetch_limit(),
    )
    .await?;
    let (rows, page) = api.cursors.finish(&cursor_scope, page.size, rows, |row| row.id);
    let alert_id = alert.id.to_string();
    Ok(pb::ListDeliveriesResponse {
        deliveries: rows
            .into_iter()
            .map(|row| delivery_to_proto(&alert_id, row))
            .collect(),
        page: Some(page),
    })
}
