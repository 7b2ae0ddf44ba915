//! The placement gRPC API, as thin handlers: each gets the caller (authenticated by the
//! interceptor, and one of the roles that work with placements), validates the request at
//! the edge ([`crate::request`]), loads through [`crate::store`], applies the
//! [`crate::domain`] rules, writes the change with its `placement.*` event and its audit
//! record in one [`Change`], and answers with [`crate::response`]. One file per resource:
//! bases, openings, candidates (lists, profiles, matching) and placements.
//!
//! Concurrency: see [`crate::store`] for the one lock order. Taking a position happens under
//! the opening's row lock: concurrent acceptances of the last position queue on that lock,
//! the first one takes it, and each later one sees the opening full and fails with
//! `FailedPrecondition`.

mod bases;
mod candidates;
mod openings;
mod placements;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use mesh_kit::{
    auth::{self, Caller},
    change::Changes,
    clock::SharedClock,
    error::ServiceError,
    host::Host,
    jurisdiction::Directory,
    page::Cursors,
};
use mesh_proto::placement::{self as pb, placement_service_server::PlacementService};
use tonic::{Request, Response, Status};

use crate::{
    domain::{self, MANAGERS},
    events::Events,
};

/// The API's state: how it writes, pages, tells time and names its events.
#[derive(Debug, Clone)]
pub struct Api {
    changes: Changes,
    cursors: Cursors,
    clock: SharedClock,
    events: Events,
    time_zone: Tz,
}

impl Api {
    pub fn new(host: &Host, clock: SharedClock) -> Self {
        Self {
            changes: host.changes(),
            cursors: host.cursors(),
            clock,
            events: Events::new(host.settings().topics.placement.clone()),
            time_zone: Directory::get().time_zone,
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Today in the office time zone.
    fn today(&self) -> NaiveDate {
        domain::office_today(self.clock.now(), self.time_zone)
    }
}

/// The caller of `request`, who must have one of the roles that work with placements.
fn manager<T>(request: &Request<T>) -> Result<Caller, ServiceError> {
    let caller = auth::caller(request)?;
    caller.ensure_role(MANAGERS)?;
    Ok(caller)
}

/// A handler's answer: its error becomes the status here, and only here.
fn reply<T>(result: Result<T, ServiceError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl PlacementService for Api {
    #[tracing::instrument(skip_all, fields(base_id))]
    async fn create_base(
        &self,
        request: Request<pb::CreateBaseRequest>,
    ) -> Result<Response<pb::CreateBaseResponse>, Status> {
        let caller = manager(&request)?;
        reply(bases::create(self, &caller, request.get_ref()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn update_base(
        &self,
        request: Request<pb::UpdateBaseRequest>,
    ) -> Result<Response<pb::UpdateBaseResponse>, Status> {
        let caller = manager(&request)?;
        reply(bases::update(self, &caller, request.get_ref()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn list_bases(
        &self,
        request: Request<pb::ListBasesRequest>,
    ) -> Result<Response<pb::ListBasesResponse>, Status> {
        let caller = manager(&request)?;
        reply(bases::list(self, &caller, request.get_ref()).await)
    }

    #[tracing::instrument(skip_all, fields(opening_id))]
    async fn create_opening(
        &self,
        request: Request<pb::CreateOpeningRequest>,
    ) -> Result<Response<pb::CreateOpeningResponse>, Status> {
        let caller = manager(&request)?;
        reply(openings::create(self, &caller, request.get_ref()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn close_opening(
        &self,
        request: Request<pb::CloseOpeningRequest>,
    ) -> Result<Response<pb::CloseOpeningResponse>, Status> {
        let caller = manager(&request)?;
        reply(openings::close(self, &caller, request.get_ref()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn list_openings(
        &self,
        request: Request<pb::ListOpeningsRequest>,
    ) -> Result<Response<pb::ListOpeningsResponse>, Status> {
        let caller = manager(&request)?;
        reply(openings::list(self, &caller, request.get_ref()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn list_candidates(
        &self,
        request: Request<pb::ListCandidatesRequest>,
    ) -> Result<Response<pb::ListCandidatesResponse>, Status> {
        let caller = manager(&request)?;
        reply(candidates::list(self, &caller, request.get_ref()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn update_candidate_profile(
        &self,
        request: Request<pb::UpdateCandidateProfileRequest>,
    ) -> Result<Response<pb::UpdateCandidateProfileResponse>, Status> {
        let caller = manager(&request)?;
        reply(candidates::update_profile(self, &caller, request.get_ref()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn match_openings(
        &self,
        request: Request<pb::MatchOpeningsRequest>,
    ) -> Result<Response<pb::MatchOpeningsResponse>, Status> {
        let caller = manager(&request)?;
        reply(candidates::match_openings(self, &caller, request.get_ref()).await)
    }

    #[tracing::instrument(skip_all, fields(placement_id))]
    async fn propose_placement(
        &self,
        request: Request<pb::ProposePlacementRequest>,
    ) -> Result<Response<pb::ProposePlacementResponse>, Status> {
        let caller = manager(&request)?;
        reply(placements::propose(self, &caller, request.get_ref()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn accept_placement(
        &self,
        request: Request<pb::AcceptPlacementRequest>,
    ) -> Result<Response<pb::AcceptPlacementResponse>, Status> {
        let caller = manager(&request)?;
        reply(placements::accept(self, &caller, request.get_ref()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn decline_placement(
        &self,
        request: Request<pb::DeclinePlacementRequest>,
    ) -> Result<Response<pb::DeclinePlacementResponse>, Status> {
        let caller = manager(&request)?;
        reply(placements::decline(self, &caller, request.get_ref()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn start_placement(
        &self,
        request: Request<pb::StartPlacementRequest>,
    ) -> Result<Response<pb::StartPlacementResponse>, Status> {
        let caller = manager(&request)?;
        reply(placements::start(self, &caller, request.get_ref()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn end_placement(
        &self,
        request: Request<pb::EndPlacementRequest>,
    ) -> Result<Response<pb::EndPlacementResponse>, Status> {
        let caller = manager(&request)?;
        reply(placements::end(self, &caller, request.get_ref()).await)
    }

    #[tracing::instrument(skip_all)]
    async fn get_placement(
        &self,
        request: Request<pb::GetPlacementRequest>,
    ) -> Result<Response<pb::GetPlacementResponse>, Status> {
        let caller = manager(&request)?;
        reply(placements::get(self, &caller, request.get_ref()).await)
    }
}
