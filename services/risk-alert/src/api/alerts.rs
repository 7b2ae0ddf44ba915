//! Alert handlers: list a township's or county's alerts, get one, acknowledge, resolve, and
//! stream the live feed. Jurisdiction is checked on every call.

use mesh_kit::{auth, error::ServiceError};
use mesh_proto::alert::{self as pb, AlertChange};
use tokio_stream::{StreamExt, wrappers::BroadcastStream};
use tonic::{Request, Status};

use super::{AlertApi, AlertStream, authorized, scope};
use crate::{
    convert::alert_to_proto,
    domain::{
        Actor,
        access::{self, ALERT_ROLES},
        alert::Resolution,
    },
    request, store,
};

pub(super) async fn list(
    api: &AlertApi,
    request: Request<pb::ListAlertsRequest>,
) -> Result<pb::ListAlertsResponse, ServiceError> {
    let caller = authorized(&request, ALERT_ROLES)?;
    let request = request.into_inner();
    let scope = scope(&caller, request.jurisdiction.as_ref())?;
    let list = request::list_alerts(&request, scope, &api.cursors)?;
    let rows = store::alerts::list(
        api.changes.pool(),
        &list.filter,
        list.page.after,
        list.page.fetch_limit(),
    )
    .await?;
    let (rows, page) = api
        .cursors
        .finish(&list.cursor_scope, list.page.size, rows, |row| {
            (row.raised_at, row.alert_id)
        });
    Ok(pb::ListAlertsResponse {
        alerts: rows
            .iter()
            .filter_map(|row| row.alert.as_ref().map(alert_to_proto))
            .collect(),
        page: Some(page),
    })
}

pub(super) async fn get(
    api: &AlertApi,
    request: Request<pb::GetAlertRequest>,
) -> Result<pb::GetAlertResponse, ServiceError> {
    let caller = authorized(&request, ALERT_ROLES)?;
    let id = request::alert_id(&request.get_ref().alert_id)?;
    let alert = api.visible_alert(&caller, id).await?;
    Ok(pb::GetAlertResponse {
        alert: Some(alert_to_proto(&alert)),
    })
}

pub(super) async fn acknowledge(
    api: &AlertApi,
    request: Request<pb::AcknowledgeAlertRequest>,
) -> Result<pb::AcknowledgeAlertResponse, ServiceError> {
    let caller = authorized(&request, ALERT_ROLES)?;
    let id = request::alert_id(&request.get_ref().alert_id)?;
    let (mut change, alert) = api.alert_to_change(&caller, id).await?;
    let alert = api
        .lifecycle
        .acknowledge(&mut change, alert, Actor::caller(&caller), api.clock.now())
        .await?;
    change.commit().await?;
    Ok(pb::AcknowledgeAlertResponse {
        alert: Some(alert_to_proto(&alert)),
    })
}

pub(super) async fn resolve(
    api: &AlertApi,
    request: Request<pb::ResolveAlertRequest>,
) -> Result<pb::ResolveAlertResponse, ServiceError> {
    let caller = authorized(&request, ALERT_ROLES)?;
    let resolve = request::resolve(request.get_ref())?;
    let (mut change, alert) = api.alert_to_change(&caller, resolve.alert_id).await?;
    access::ensure_may_resolve(&caller, &alert)?;
    let resolution = Resolution {
        by: Actor::caller(&caller),
        note: resolve.note,
        reference: None,
    };
    let alert = api
        .lifecycle
        .resolve(&mut change, alert, resolution, api.clock.now())
        .await?;
    change.commit().await?;
    Ok(pb::ResolveAlertResponse {
        alert: Some(alert_to_proto(&alert)),
    })
}

pub(super) async fn stream(
    api: &AlertApi,
    request: Request<pb::StreamAlertsRequest>,
) -> Result<AlertStream, ServiceError> {
    let caller = authorized(&request, ALERT_ROLES)?;
    let expires_at = auth::token_expiry(&request);
    let request = request.into_inner();
    let scope = scope(&caller, request.jurisdiction.as_ref())?;
    // Subscribe before reading the current alerts so nothing falls between the two.
    let live = BroadcastStream::new(api.live.subscribe());
    let current = if request.include_current {
        store::alerts::current(api.changes.pool(), &scope).await?
    } else {
        Vec::new()
    };
    let current = tokio_stream::iter(current.into_iter().map(|alert| {
        Ok(pb::StreamAlertsResponse {
            change: AlertChange::Current as i32,
            alert: Some(alert_to_proto(&alert)),
        })
    }));
    let live = live.filter_map(move |item| match item {
        Ok(change) if change.concerns(&scope) => Some(Ok(pb::StreamAlertsResponse {
            // Re-sent after a lost connection: the alert as it is now.
            change: change
                .event
                .map_or(AlertChange::Current, |event| event.to_proto()) as i32,
            alert: Some(alert_to_proto(&change.alert)),
        })),
        Ok(_) => None,
        Err(_) => Some(Err(fell_behind())),
    });
    // The caller is authenticated until the token's exp, no longer: then the stream ends
    // with UNAUTHENTICATED (the client reconnects with a fresh token).
    let left = expires_at.map_or(std::time::Duration::MAX, |expires_at| {
        (expires_at - api.clock.now()).to_std().unwrap_or_default()
    });
    let expired = futures::stream::once(async move {
        tokio::time::sleep(left).await;
        Err(Status::from(ServiceError::Unauthenticated(
            "token expired".into(),
        )))
    });
    Ok(Box::pin(futures::stream::select(current.chain(live), expired)))
}

/// A slow dashboard missed changes: it is told to reload rather than silently skip them.
fn fell_behind() -> Status {
    ServiceError::DataLoss("stream fell behind; reconnect with include_current".into()).into()
}
