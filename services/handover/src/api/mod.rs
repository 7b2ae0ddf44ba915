//! The handover gRPC API. Every handler authenticates the caller (done by the interceptor),
//! converts the request at the edge ([`crate::request`]), checks the caller's standing
//! towards the handover ([`crate::domain::access`]), asks the lifecycle whether the step is
//! legal, a repeat or a conflict ([`crate::domain::lifecycle`]), and writes the change, its
//! `handover.*` event and its audit record in one [`Change`].
//!
//! The trait methods below only authenticate and wrap; each RPC's body is an inner function
//! returning [`ServiceError`], in `notice` (the prison's steps), `steps` (release and the
//! township's steps) and `read`.

mod notice;
mod read;
mod steps;

use chrono::{DateTime, NaiveDate, Utc};
use mesh_kit::{
    auth::{self, Caller},
    change::{Change, Changes, Tx},
    clock::SharedClock,
    error::ServiceError,
    page::Cursors,
};
use mesh_proto::handover as pb;
use sqlx::PgConnection;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{self, Handover, Rules, access::Side},
    events::Event,
    request, response,
    sealing::Sealer,
    store,
};

/// The handover service's state.
#[derive(Debug, Clone)]
pub struct Handovers {
    changes: Changes,
    cursors: Cursors,
    sealer: Sealer,
    clock: SharedClock,
    topic: String,
    rules: Rules,
}

impl Handovers {
    pub fn new(
        changes: Changes,
        cursors: Cursors,
        sealer: Sealer,
        clock: SharedClock,
        topic: String,
        rules: Rules,
    ) -> Self {
        Self {
            changes,
            cursors,
            sealer,
            clock,
            topic,
            rules,
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Today's date in the office time zone, from the injected clock.
    fn today(&self) -> NaiveDate {
        domain::office_today(self.now())
    }

    /// One handover as callers see it, amendments included.
    async fn full(&self, conn: &mut PgConnection, handover: &Handover) -> Result<pb::Handover, ServiceError> {
        let mut amendments = store::amendments(conn, &[handover.id]).await?;
        response::handover(
            handover,
            &amendments.remove(&handover.id).unwrap_or_default(),
            &self.sealer,
        )
    }

    /// The handover a step request names, once the caller's role may act for `side`.
    fn step_target(&self, caller: &Caller, side: Side, handover_id: &str) -> Result<Uuid, ServiceError> {
        caller.ensure_role(side.roles())?;
        let id = request::handover_id(handover_id)?;
        record_handover_id(id);
        Ok(id)
    }

    /// Begins a step's change with handover `id` locked, once the caller is `side` of it.
    async fn lock(&self, caller: &Caller, side: Side, id: Uuid) -> Result<(Change, Handover), ServiceError> {
        let mut change = self.changes.begin().await?;
        let current = store::lock(&mut change, id).await?;
        side.ensure(caller, &current)?;
        Ok((change, current))
    }

    /// Answers a repeated step that already took effect (`step` names it as its event would):
    /// the current handover, audited, no event.
    async fn repeated(
        &self,
        mut change: Change,
        caller: &Caller,
        step: &str,
        handover: &Handover,
    ) -> Result<pb::Handover, ServiceError> {
        let detail = serde_json::json!({ "step": step });
        change
            .audit(caller, "handover.repeated", Some(handover.id), None, detail)
            .await?;
        let answer = self.full(&mut change, handover).await?;
        change.commit().await?;
        Ok(answer)
    }

    /// Publishes `event` about the changed `handover` with its audit `detail`, commits, and
    /// answers with the handover as it is now.
    async fn publish(
        &self,
        mut change: Change,
        caller: &Caller,
        handover: &Handover,
        event: Event<'_>,
        detail: serde_json::Value,
    ) -> Result<pb::Handover, ServiceError> {
        let event = event.into_outbox(&self.topic, handover, caller.actor());
        change.publish(caller, event, Some(handover.id), detail).await?;
        let answer = self.full(&mut change, handover).await?;
        change.commit().await?;
        Ok(answer)
    }
}

/// Names the handover in the RPC's span once it is known.
fn record_handover_id(id: Uuid) {
    tracing::Span::current().record("handover_id", tracing::field::display(id));
}

#[tonic::async_trait]
impl pb::handover_service_server::HandoverService for Handovers {
    #[tracing::instrument(skip_all, fields(handover_id))]
    async fn submit_release_notice(
        &self,
        request: Request<pb::SubmitReleaseNoticeRequest>,
    ) -> Result<Response<pb::SubmitReleaseNoticeResponse>, Status> {
        let caller = auth::caller(&request)?;
        let (handover, duplicate) = self.submit(&caller, request.get_ref()).await?;
        Ok(Response::new(pb::SubmitReleaseNoticeResponse {
            handover: Some(handover),
            duplicate,
        }))
    }

    #[tracing::instrument(skip_all, fields(handover_id))]
    async fn acknowledge_notice(
        &self,
        request: Request<pb::AcknowledgeNoticeRequest>,
    ) -> Result<Response<pb::AcknowledgeNoticeResponse>, Status> {
        let caller = auth::caller(&request)?;
        let handover = self.acknowledge(&caller, request.get_ref()).await?;
        Ok(Response::new(pb::AcknowledgeNoticeResponse {
            handover: Some(handover),
        }))
    }

    #[tracing::instrument(skip_all, fields(handover_id))]
    async fn confirm_release(
        &self,
        request: Request<pb::ConfirmReleaseRequest>,
    ) -> Result<Response<pb::ConfirmReleaseResponse>, Status> {
        let caller = auth::caller(&request)?;
        let handover = self.release(&caller, request.get_ref()).await?;
        Ok(Response::new(pb::ConfirmReleaseResponse {
            handover: Some(handover),
        }))
    }

    #[tracing::instrument(skip_all, fields(handover_id))]
    async fn record_gate_collection(
        &self,
        request: Request<pb::RecordGateCollectionRequest>,
    ) -> Result<Response<pb::RecordGateCollectionResponse>, Status> {
        let caller = auth::caller(&request)?;
        let handover = self.gate_collection(&caller, request.get_ref()).await?;
        Ok(Response::new(pb::RecordGateCollectionResponse {
            handover: Some(handover),
        }))
    }

    #[tracing::instrument(skip_all, fields(handover_id))]
    async fn record_report_in(
        &self,
        request: Request<pb::RecordReportInRequest>,
    ) -> Result<Response<pb::RecordReportInResponse>, Status> {
        let caller = auth::caller(&request)?;
        let handover = self.report_in(&caller, request.get_ref()).await?;
        Ok(Response::new(pb::RecordReportInResponse {
            handover: Some(handover),
        }))
    }

    #[tracing::instrument(skip_all, fields(handover_id))]
    async fn amend_release_notice(
        &self,
        request: Request<pb::AmendReleaseNoticeRequest>,
    ) -> Result<Response<pb::AmendReleaseNoticeResponse>, Status> {
        let caller = auth::caller(&request)?;
        let handover = self.amend(&caller, request.get_ref()).await?;
        Ok(Response::new(pb::AmendReleaseNoticeResponse {
            handover: Some(handover),
        }))
    }

    #[tracing::instrument(skip_all, fields(handover_id))]
    async fn cancel_release_notice(
        &self,
        request: Request<pb::CancelReleaseNoticeRequest>,
    ) -> Result<Response<pb::CancelReleaseNoticeResponse>, Status> {
        let caller = auth::caller(&request)?;
        let handover = self.cancel(&caller, request.get_ref()).await?;
        Ok(Response::new(pb::CancelReleaseNoticeResponse {
            handover: Some(handover),
        }))
    }

    #[tracing::instrument(skip_all, fields(handover_id))]
    async fn get_handover(
        &self,
        request: Request<pb::GetHandoverRequest>,
    ) -> Result<Response<pb::GetHandoverResponse>, Status> {
        let caller = auth::caller(&request)?;
        let handover = self.get(&caller, request.get_ref()).await?;
        Ok(Response::new(pb::GetHandoverResponse {
            handover: Some(handover),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_handovers(
        &self,
        request: Request<pb::ListHandoversRequest>,
    ) -> Result<Response<pb::ListHandoversResponse>, Status> {
        let caller = auth::caller(&request)?;
        Ok(Response::new(self.list(&caller, request.get_ref()).await?))
    }

    async fn list_awaiting_report_in(
        &self,
        request: Request<pb::ListAwaitingReportInRequest>,
    ) -> Result<Response<pb::ListAwaitingReportInResponse>, Status> {
        let caller = auth::caller(&request)?;
        Ok(Response::new(
            self.awaiting_report_in(&caller, request.get_ref()).await?,
        ))
    }
}
