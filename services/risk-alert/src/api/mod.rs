//! The risk-alert gRPC API. Each handler is a thin `async fn` returning `ServiceError`
//! (alerts in `alerts`, webhook endpoints and deliveries in `endpoints`): who calls, what
//! they asked (`request`), may they (`domain::access`), the store and the lifecycle do the
//! rest, and `convert` answers. Statuses are made once, at the end of each call.

mod alerts;
mod endpoints;

use std::{pin::Pin, sync::Arc};

use mesh_kit::{change::Changes, clock::SharedClock, crypto::FieldCrypto, error::ServiceError, page::Cursors};
use mesh_proto::alert::{self as pb, alert_service_server::AlertService};
use tokio::sync::broadcast;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::{fanout::LiveChange, lifecycle::Lifecycle};

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
}

/// The live feed of one stream.
pub type AlertStream = Pin<Box<dyn Stream<Item = Result<pb::StreamAlertsResponse, Status>> + Send>>;

fn no_such_alert() -> ServiceError {
    ServiceError::not_found("no such alert")
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
