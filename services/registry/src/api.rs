//! The registry's gRPC handlers, thin: authenticate and authorize the caller, turn the
//! request into domain values (`request`), load and lock through `store`, apply the rules of
//! `domain`, write the change with its `supervisee.*` event and audit record in one
//! [`Change`], and answer (`response`). Every failure is a [`ServiceError`] until the edge.

use std::sync::Arc;

use mesh_kit::{
    auth::{self, Caller, Role, SUPERVISION_ROLES},
    change::{Change, Changes, Tx},
    clock::SharedClock,
    error::ServiceError,
    jurisdiction::Directory,
    page::Cursors,
};
use mesh_proto::registry::{self as pb, registry_service_server::RegistryService};
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    dates::{self, ReportedBy},
    domain::Supervisee,
    events::{Events, Published},
    registration, request, response,
    sealing::Sealer,
    store,
};

/// Roles that manage supervisees (prisons do not).
const MANAGERS: &[Role] = SUPERVISION_ROLES;

/// The registry's API.
#[derive(Clone)]
pub struct Registry {
    changes: Changes,
    cursors: Cursors,
    sealer: Arc<Sealer>,
    events: Events,
    clock: SharedClock,
}

impl Registry {
    pub fn new(
        changes: Changes,
        cursors: Cursors,
        sealer: Arc<Sealer>,
        events: Events,
        clock: SharedClock,
    ) -> Self {
        Self {
            changes,
            cursors,
            sealer,
            events,
            clock,
        }
    }

    async fn register(
        &self,
        request: Request<pb::RegisterSuperviseeRequest>,
    ) -> Result<pb::Supervisee, ServiceError> {
        let caller = manager(&request)?;
        let now = self.clock.now();
        let registration = request::registration(request.get_ref(), now, ReportedBy::Officer)?;
        let jurisdiction = &registration.jurisdiction;
        caller.ensure_access(&jurisdiction.township_code, &jurisdiction.county_code)?;
        let mut change = self.changes.begin().await?;
        let supervisee = registration::register(
            &mut change,
            &self.sealer,
            &self.events,
            &registration,
            &caller,
            None,
            now,
        )
        .await?;
        tracing::Span::current().record("supervisee_id", tracing::field::display(supervisee.id));
        change.commit().await?;
        tracing::info!(township = %jurisdiction.township_code, "supervisee registered");
        response::supervisee(&self.sealer, &supervisee)
    }

    async fn get(&self, request: Request<pb::GetSuperviseeRequest>) -> Result<pb::Supervisee, ServiceError> {
        let caller = manager(&request)?;
        let id = request::supervisee_id(&request.get_ref().supervisee_id)?;
        let mut change = self.changes.begin().await?;
        let supervisee = accessible(&caller, store::get(&mut change, id).await?)?;
        change
            .audit(&caller, "supervisee.get", Some(id), None, json!({}))
            .await?;
        change.commit().await?;
        response::supervisee(&self.sealer, &supervisee)
    }

    async fn list(
        &self,
        request: Request<pb::ListSuperviseesRequest>,
    ) -> Result<pb::ListSuperviseesResponse, ServiceError> {
        let caller = manager(&request)?;
        let query = request::list(request.get_ref(), &self.cursors)?;
        let township = &query.township;
        caller.ensure_access(&township.township_code, &township.county_code)?;
        let mut change = self.changes.begin().await?;
        let rows = store::list(
            &mut change,
            &township.township_code,
            query.status,
            query.page.after,
            query.page.fetch_limit(),
        )
        .await?;
        let (rows, page) = self
            .cursors
            .finish(&query.scope, query.page.size, rows, |row| row.id);
        let detail = json!({ "township_code": township.township_code, "returned": rows.len() });
        change
            .audit(&caller, "supervisee.list", None, None, detail)
            .await?;
        change.commit().await?;
        Ok(pb::ListSuperviseesResponse {
            supervisees: rows
                .iter()
                .map(|row| response::supervisee(&self.sealer, row))
                .collect::<Result<_, _>>()?,
            page: Some(page),
        })
    }

    /// Every person under supervision, for the coverage reconciliation (no personal data
    /// is opened, so no audit record of a read of it either).
    async fn under_supervision(
        &self,
        request: Request<pb::ListUnderSupervisionRequest>,
    ) -> Result<pb::ListUnderSupervisionResponse, ServiceError> {
        auth::caller(&request)?.ensure_role(&[Role::System, Role::Admin])?;
        const SCOPE: &str = "registry.under_supervision";
        let mut violations = mesh_kit::error::FieldViolations::new();
        let page = self
            .cursors
            .page::<Uuid>(SCOPE, request.get_ref().page.as_ref(), &mut violations);
        violations.into_result()?;
        let mut change = self.changes.begin().await?;
        let rows = store::under_supervision(&mut change, page.after, page.fetch_limit()).await?;
        change.commit().await?;
        let (rows, page) = self.cursors.finish(SCOPE, page.size, rows, |row| row.id);
        Ok(pb::ListUnderSupervisionResponse {
            supervisees: rows.iter().map(response::under_supervision).collect(),
            page: Some(page),
        })
    }

    async fn set_level(
        &self,
        request: Request<pb::ChangeLevelRequest>,
    ) -> Result<pb::Supervisee, ServiceError> {
        let caller = manager(&request)?;
        let input = request::level_change(request.get_ref())?;
        let mut change = self.changes.begin().await?;
        let mut supervisee = self.lock(&mut change, &caller, input.id).await?;
        let Some(previous) = supervisee.change_level(input.level)? else {
            // Already at that level: nothing is written or published.
            return response::supervisee(&self.sealer, &supervisee);
        };
        let supervisee = store::update(&mut change, &supervisee, self.clock.now()).await?;
        let published = self
            .events
            .level_changed(&supervisee, previous, &input.reason, &caller);
        self.finish(change, &caller, published, supervisee).await
    }

    async fn transfer(
        &self,
        request: Request<pb::TransferSuperviseeRequest>,
    ) -> Result<pb::Supervisee, ServiceError> {
        let caller = manager(&request)?;
        let input = request::transfer(request.get_ref())?;
        let mut change = self.changes.begin().await?;
        let mut supervisee = self.lock(&mut change, &caller, input.id).await?;
        let previous = supervisee.transfer(input.to, input.officer_id)?;
        let supervisee = store::update(&mut change, &supervisee, self.clock.now()).await?;
        let published = self
            .events
            .transferred(&supervisee, &previous, &input.reason, &caller);
        self.finish(change, &caller, published, supervisee).await
    }

    async fn set_status(
        &self,
        request: Request<pb::ChangeStatusRequest>,
    ) -> Result<pb::Supervisee, ServiceError> {
        let caller = manager(&request)?;
        let now = self.clock.now();
        let input = request::status_change(request.get_ref(), now)?;
        let mut change = self.changes.begin().await?;
        let mut supervisee = self.lock(&mut change, &caller, input.id).await?;
        dates::check_effective_in_term(
            input.effective_at,
            supervisee.term_start,
            Directory::get().time_zone,
        )
        .map_err(|why| ServiceError::invalid("effective_at", why))?;
        let previous = supervisee.change_status(input.status, now)?;
        let supervisee = store::update(&mut change, &supervisee, now).await?;
        let published =
            self.events
                .status_changed(&supervisee, previous, &input.reason, input.effective_at, &caller);
        self.finish(change, &caller, published, supervisee).await
    }

    /// Loads a supervisee locked for a change, if the caller may act on it.
    async fn lock(&self, change: &mut Change, caller: &Caller, id: Uuid) -> Result<Supervisee, ServiceError> {
        accessible(caller, store::get_for_update(change, id).await?)
    }

    /// Publishes a change's event with its audit record, commits, and answers with the
    /// changed supervisee.
    async fn finish(
        &self,
        mut change: Change,
        caller: &Caller,
        published: Published,
        supervisee: Supervisee,
    ) -> Result<pb::Supervisee, ServiceError> {
        published.write(&mut change, caller).await?;
        change.commit().await?;
        response::supervisee(&self.sealer, &supervisee)
    }
}

/// The authenticated caller, if it manages supervisees.
fn manager<T>(request: &Request<T>) -> Result<Caller, ServiceError> {
    let caller = auth::caller(request)?;
    caller.ensure_role(MANAGERS)?;
    Ok(caller)
}

/// The supervisee, if it exists and lies in the caller's jurisdiction.
fn accessible(caller: &Caller, supervisee: Option<Supervisee>) -> Result<Supervisee, ServiceError> {
    let supervisee = supervisee.ok_or_else(|| ServiceError::not_found("no such supervisee"))?;
    let jurisdiction = &supervisee.jurisdiction;
    caller.ensure_access(&jurisdiction.township_code, &jurisdiction.county_code)?;
    Ok(supervisee)
}

/// The one place a handler's result becomes a gRPC response or status.
fn respond<T, R>(result: Result<T, ServiceError>, into: impl FnOnce(T) -> R) -> Result<Response<R>, Status> {
    result
        .map(|value| Response::new(into(value)))
        .map_err(Status::from)
}

#[tonic::async_trait]
impl RegistryService for Registry {
    #[tracing::instrument(skip_all, fields(supervisee_id))]
    async fn register_supervisee(
        &self,
        request: Request<pb::RegisterSuperviseeRequest>,
    ) -> Result<Response<pb::RegisterSuperviseeResponse>, Status> {
        respond(self.register(request).await, |supervisee| {
            pb::RegisterSuperviseeResponse {
                supervisee: Some(supervisee),
            }
        })
    }

    #[tracing::instrument(skip_all)]
    async fn get_supervisee(
        &self,
        request: Request<pb::GetSuperviseeRequest>,
    ) -> Result<Response<pb::GetSuperviseeResponse>, Status> {
        respond(self.get(request).await, |supervisee| pb::GetSuperviseeResponse {
            supervisee: Some(supervisee),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn list_supervisees(
        &self,
        request: Request<pb::ListSuperviseesRequest>,
    ) -> Result<Response<pb::ListSuperviseesResponse>, Status> {
        respond(self.list(request).await, std::convert::identity)
    }

    #[tracing::instrument(skip_all)]
    async fn list_under_supervision(
        &self,
        request: Request<pb::ListUnderSupervisionRequest>,
    ) -> Result<Response<pb::ListUnderSupervisionResponse>, Status> {
        respond(self.under_supervision(request).await, std::convert::identity)
    }

    #[tracing::instrument(skip_all)]
    async fn change_level(
        &self,
        request: Request<pb::ChangeLevelRequest>,
    ) -> Result<Response<pb::ChangeLevelResponse>, Status> {
        respond(self.set_level(request).await, |supervisee| {
            pb::ChangeLevelResponse {
                supervisee: Some(supervisee),
            }
        })
    }

    #[tracing::instrument(skip_all)]
    async fn transfer_supervisee(
        &self,
        request: Request<pb::TransferSuperviseeRequest>,
    ) -> Result<Response<pb::TransferSuperviseeResponse>, Status> {
        respond(self.transfer(request).await, |supervisee| {
            pb::TransferSuperviseeResponse {
                supervisee: Some(supervisee),
            }
        })
    }

    #[tracing::instrument(skip_all)]
    async fn change_status(
        &self,
        request: Request<pb::ChangeStatusRequest>,
    ) -> Result<Response<pb::ChangeStatusResponse>, Status> {
        respond(self.set_status(request).await, |supervisee| {
            pb::ChangeStatusResponse {
                supervisee: Some(supervisee),
            }
        })
    }
}
