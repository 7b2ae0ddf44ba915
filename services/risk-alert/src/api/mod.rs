//! The risk-alert gRPC API. Each handler is a thin `async fn` returning `ServiceError`
//! (alerts in `alerts`, webhook endpoints and deliveries in `endpoints`): who calls, what
//! they asked (`request`), may they (`domain::access`), the store and the lifecycle do the
//! rest, and `convert` answers. Statuses are made once, at the end of each call.

mod alerts;
mod endpoints;

use std::{pin::Pin, sync::Arc};

use mesh_kit::{
    auth::{self, Caller, Role},
    change::{Change, Changes},
    clock::SharedClock,
    crypto::FieldCrypto,
    error::ServiceError,
    page::Cursors,
};
use mesh_proto::{
    alert::{self as pb, alert_service_server::AlertService},
    common,
};
use tokio::sync::broadcast;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{Jurisdiction, access, alert::Alert},
    egress::Egress,
    fanout::LiveChange,
    lifecycle::Lifecycle,
    request, store,
};

/// The handlers' shared state.
pub struct AlertApi {
    pub changes: Changes,
    pub cursors: Cursors,
    pub clock: SharedClock,
    pub lifecycle: Lifecycle,
    /// Seals webhook secrets at rest.
    pub crypto: Arc<FieldCrypto>,
    /// Alert changes of every replica, for live streams.
    pub live: broadcast::Sender<LiveChange>,
    /// Accept plain-http webhook URLs (development only).
    pub allow_http: bool,
    /// Where webhook endpoints may lead (checked as they are registered).
    pub egress: Egress,
}

/// The live feed of one stream.
pub type AlertStream = Pin<Box<dyn Stream<Item = Result<pb::StreamAlertsResponse, Status>> + Send>>;

/// The caller, when they have one of `roles`.
fn authorized<T>(request: &Request<T>, roles: &[Role]) -> Result<Caller, ServiceError> {
    let caller = auth::caller(request)?;
    caller.ensure_role(roles)?;
    Ok(caller)
}

/// The township or county a request's `jurisdiction` names, when the caller may work there.
fn scope(caller: &Caller, jurisdiction: Option<&common::Jurisdiction>) -> Result<Jurisdiction, ServiceError> {
    let scope = request::scope("jurisdiction", jurisdiction)?;
    access::ensure_scope(caller, &scope)?;
    Ok(scope)
}

fn no_such_alert() -> ServiceError {
    ServiceError::not_found("no such alert")
}

impl AlertApi {
    /// An alert the caller may see.
    async fn visible_alert(&self, caller: &Caller, id: Uuid) -> Result<Alert, ServiceError> {
        let alert = store::alerts::load(self.changes.pool(), id)
            .await?
            .ok_or_else(no_such_alert)?;
        access::ensure_alert(caller, &alert)?;
        Ok(alert)
    }

    /// An alert the caller may act on, locked in a new change.
    async fn alert_to_change(&self, caller: &Caller, id: Uuid) -> Result<(Change, Alert), ServiceError> {
        let mut change = self.changes.begin().await?;
        let alert = store::alerts::load_for_update(&mut change, id)
            .await?
            .ok_or_else(no_such_alert)?;
        access::ensure_alert(caller, &alert)?;
        Ok((change, alert))
    }
}

/// The one place a handler's result becomes a response or a status.
fn respond<T>(result: Result<T, ServiceError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl AlertService for AlertApi {
    #[tracing::instrument(skip_all)]
    async fn list_alerts(
        &self,
        request: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        respond(alerts::list(self, request).await)
    }

    #[tracing::instrument(skip_all)]
    async fn get_alert(
        &self,
        request: Request<pb::GetAlertRequest>,
    ) -> Result<Response<pb::GetAlertResponse>, Status> {
        respond(alerts::get(self, request).await)
    }

    #[tracing::instrument(skip_all)]
    async fn acknowledge_alert(
        &self,
        request: Request<pb::AcknowledgeAlertRequest>,
    ) -> Result<Response<pb::AcknowledgeAlertResponse>, Status> {
        respond(alerts::acknowledge(self, request).await)
    }

    #[tracing::instrument(skip_all)]
    async fn resolve_alert(
        &self,
        request: Request<pb::ResolveAlertRequest>,
    ) -> Result<Response<pb::ResolveAlertResponse>, Status> {
        respond(alerts::resolve(self, request).await)
    }

    type StreamAlertsStream = AlertStream;

    #[tracing::instrument(skip_all)]
    async fn stream_alerts(
        &self,
        request: Request<pb::StreamAlertsRequest>,
    ) -> Result<Response<Self::StreamAlertsStream>, Status> {
        respond(alerts::stream(self, request).await)
    }

    #[tracing::instrument(skip_all)]
    async fn register_endpoint(
        &self,
        request: Request<pb::RegisterEndpointRequest>,
    ) -> Result<Response<pb::RegisterEndpointResponse>, Status> {
        respond(endpoints::register(self, request).await)
    }

    #[tracing::instrument(skip_all)]
    async fn list_endpoints(
        &self,
        request: Request<pb::ListEndpointsRequest>,
    ) -> Result<Response<pb::ListEndpointsResponse>, Status> {
        respond(endpoints::list(self, request).await)
    }

    #[tracing::instrument(skip_all)]
    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        respond(endpoints::deliveries(self, request).await)
    }
}
