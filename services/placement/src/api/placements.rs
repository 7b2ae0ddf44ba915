//! Placements: propose, the lifecycle steps (accept, decline, start, end) and get. A
//! placement is managed by the offices of the candidate and, to record the employer's answer
//! and the work itself, by those of the base.

use mesh_kit::change::Tx;
use mesh_kit::{auth::Caller, error::ServiceError};
use mesh_proto::placement as pb;
use serde_json::json;
use uuid::Uuid;

use super::Api;
use crate::{
    domain::{self, OutsideJurisdiction, PlacementNow, Step},
    events::Published,
    request::{self, PlacementStep},
    response,
    store::{self, Lock, Opening, Placement, placements::Locked},
};

/// Whether `caller` manages this placement (see [`domain::ensure_placement_access`]).
fn ensure_manages(
    caller: &Caller,
    placement: &Placement,
    opening: &Opening,
) -> Result<(), OutsideJurisdiction> {
    domain::ensure_placement_access(
        caller,
        (&placement.township_code, &placement.county_code),
        (&opening.base_township_code, &opening.base_county_code),
    )
}

pub(super) async fn propose(
    api: &Api,
    caller: &Caller,
    request: &pb::ProposePlacementRequest,
) -> Result<pb::ProposePlacementResponse, ServiceError> {
    let proposal = request::validate_propose(request)?;
    let today = api.today();
    let mut change = api.changes.begin().await?;
    // The candidate's row lock serialises proposals for one person, so "one current
    // placement per candidate" is decided by one transaction at a time.
    let candidate = store::candidates::load(&mut change, proposal.candidate_id, Lock::Update).await?;
    caller.ensure_access(&candidate.township_code, &candidate.county_code)?;
    let opening = store::openings::load(&mut change, proposal.opening_id, Lock::None).await?;
    let same_opening = store::placements::live_for_opening(&mut change, candidate.id, opening.id).await?;
    domain::check_new_placement(
        same_opening,
        candidate.current_placement_id,
        &candidate.facts(today),
        &opening.facts(),
        today,
    )?;
    let id = Uuid::now_v7();
    tracing::Span::current().record("placement_id", tracing::field::display(id));
    let now = api.now();
    let row = store::placements::insert(
        &mut change,
        id,
        (&candidate, &opening),
        caller,
        &proposal.note,
        now,
    )
    .await?;
    store::candidates::set_current_placement(&mut change, candidate.id, id, now).await?;
    let placement = response::placement(&row);
    let event = api
        .events
        .event(candidate.id, Published::Proposed(&placement), caller, now);
    let detail = json!({ "opening_id": opening.id, "base_id": opening.base_id });
    change
        .publish_about(caller, event, Some(id), Some(candidate.id), detail)
        .await?;
    change.commit().await?;
    Ok(pb::ProposePlacementResponse {
        placement: Some(placement),
    })
}

pub(super) async fn accept(
    api: &Api,
    caller: &Caller,
    request: &pb::AcceptPlacementRequest,
) -> Result<pb::AcceptPlacementResponse, ServiceError> {
    let placement_id = request::validate_placement_id(&request.placement_id)?;
    let placement = step(
        api,
        caller,
        PlacementStep {
            placement_id,
            step: Step::Accept,
        },
    )
    .await?;
    Ok(pb::AcceptPlacementResponse {
        placement: Some(placement),
    })
}

pub(super) async fn decline(
    api: &Api,
    caller: &Caller,
    request: &pb::DeclinePlacementRequest,
) -> Result<pb::DeclinePlacementResponse, ServiceError> {
    let placement = step(api, caller, request::validate_decline(request)?).await?;
    Ok(pb::DeclinePlacementResponse {
        placement: Some(placement),
    })
}

pub(super) async fn start(
    api: &Api,
    caller: &Caller,
    request: &pb::StartPlacementRequest,
) -> Result<pb::StartPlacementResponse, ServiceError> {
    let placement = step(api, caller, request::validate_start(request)?).await?;
    Ok(pb::StartPlacementResponse {
        placement: Some(placement),
    })
}

pub(super) async fn end(
    api: &Api,
    caller: &Caller,
    request: &pb::EndPlacementRequest,
) -> Result<pb::EndPlacementResponse, ServiceError> {
    let placement = step(api, caller, request::validate_end(request)?).await?;
    Ok(pb::EndPlacementResponse {
        placement: Some(placement),
    })
}

/// One lifecycle step: locks candidate, placement and opening, checks the step against the
/// domain rules, moves the opening's positions, records the step, frees the candidate when
/// the placement is over, and publishes the step's event.
async fn step(api: &Api, caller: &Caller, request: PlacementStep) -> Result<pb::Placement, ServiceError> {
    let PlacementStep { placement_id, step } = request;
    let mut change = api.changes.begin().await?;
    let Locked {
        candidate,
        placement,
        opening,
    } = store::placements::lock_for_step(&mut change, placement_id).await?;
    ensure_manages(caller, &placement, &opening)?;
    let current = PlacementNow {
        status: placement.status,
        proposed_on: domain::office_today(placement.proposed_at, api.time_zone),
        start_date: placement.start_date,
    };
    let plan = domain::plan_step(&step, &current, &candidate.facts(api.today()), &opening.facts())?;
    let now = api.now();
    if plan.positions_changed {
        store::openings::set_positions_filled(&mut change, opening.id, plan.positions_filled, now).await?;
    }
    let row = store::placements::record_step(&mut change, placement_id, &step, now).await?;
    if plan.to.is_final() {
        // The candidate is free for the next proposal.
        store::candidates::release_current_placement(&mut change, candidate.id, placement_id, now).await?;
    }
    let moved = response::placement(&row);
    let event = api
        .events
        .event(candidate.id, Published::Stepped(&step, &moved), caller, now);
    let detail = match &step {
        Step::Accept => json!({ "positions_filled": plan.positions_filled }),
        Step::Decline { by, reason } => json!({ "declined_by": by.as_str(), "reason": reason }),
        Step::Start { date } => json!({ "start_date": date }),
        Step::End { date, reason, .. } => json!({ "end_date": date, "reason": reason.as_str() }),
    };
    change
        .publish_about(caller, event, Some(placement_id), Some(candidate.id), detail)
        .await?;
    change.commit().await?;
    tracing::info!(%placement_id, from = %plan.from, to = %plan.to, "placement moved");
    Ok(moved)
}

pub(super) async fn get(
    api: &Api,
    caller: &Caller,
    request: &pb::GetPlacementRequest,
) -> Result<pb::GetPlacementResponse, ServiceError> {
    let id = request::validate_placement_id(&request.placement_id)?;
    let mut change = api.changes.begin().await?;
    let placement = store::placements::load(&mut change, id, Lock::None).await?;
    let opening = store::openings::load(&mut change, placement.opening_id, Lock::None).await?;
    ensure_manages(caller, &placement, &opening)?;
    change
        .audit(
            caller,
            "placement.get",
            Some(id),
            Some(placement.candidate_id),
            json!({}),
        )
        .await?;
    change.commit().await?;
    Ok(pb::GetPlacementResponse {
        placement: Some(response::placement(&placement)),
    })
}
