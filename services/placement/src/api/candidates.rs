//! Candidates: list, update the profile an office maintains, and match a candidate to the
//! openings they may be proposed for. Every read of a candidate is audited (personal data).

use mesh_kit::change::Tx;
use mesh_kit::{auth::Caller, error::ServiceError};
use mesh_proto::placement as pb;
use serde_json::json;
use uuid::Uuid;

use super::Api;
use crate::{
    domain::{self, CandidateSource, OpeningFacts},
    request, response,
    store::{self, Lock},
};

pub(super) async fn list(
    api: &Api,
    caller: &Caller,
    request: &pb::ListCandidatesRequest,
) -> Result<pb::ListCandidatesResponse, ServiceError> {
    let query = request::validate_list_candidates(request, &api.cursors)?;
    let (township, county) = (query.area.township_code(), query.area.county_code());
    caller.ensure_access(township.unwrap_or_default(), county)?;
    let today = api.today();
    let mut change = api.changes.begin().await?;
    let rows = store::candidates::list(&mut change, &query, today).await?;
    let (rows, page) = api
        .cursors
        .finish(&query.cursor_scope, query.page.size, rows, |candidate| {
            (candidate.name.clone(), candidate.id)
        });
    let detail = json!({ "county_code": county, "township_code": township, "returned": rows.len() });
    change
        .audit(caller, "placement.candidate_list", None, None, detail)
        .await?;
    change.commit().await?;
    Ok(pb::ListCandidatesResponse {
        candidates: rows
            .iter()
            .map(|candidate| response::candidate(candidate, today))
            .collect(),
        page: Some(page),
    })
}

pub(super) async fn update_profile(
    api: &Api,
    caller: &Caller,
    request: &pb::UpdateCandidateProfileRequest,
) -> Result<pb::UpdateCandidateProfileResponse, ServiceError> {
    let profile = request::validate_profile(request)?;
    let mut change = api.changes.begin().await?;
    let current = store::candidates::load(&mut change, profile.candidate_id, Lock::Update).await?;
    caller.ensure_access(&current.township_code, &current.county_code)?;
    domain::check_offence_change(
        current.offence_category,
        current.offence_from_handover,
        profile.offence,
    )?;
    let row = store::candidates::update_profile(&mut change, &profile, api.now()).await?;
    // Candidates have no event of their own in the contract; the change is audited.
    let sectors: Vec<&str> = profile.sector_preferences.iter().map(|s| s.as_str()).collect();
    let detail = json!({
        "skills": profile.skills.len(), "sector_preferences": sectors,
        "offence_category_set": profile.offence.map(|offence| offence.as_str()),
    });
    change
        .audit(
            caller,
            "placement.candidate_profile_updated",
            Some(row.id),
            Some(row.id),
            detail,
        )
        .await?;
    change.commit().await?;
    Ok(pb::UpdateCandidateProfileResponse {
        candidate: Some(response::candidate(&row, api.today())),
    })
}

pub(super) async fn match_openings(
    api: &Api,
    caller: &Caller,
    request: &pb::MatchOpeningsRequest,
) -> Result<pb::MatchOpeningsResponse, ServiceError> {
    let query = request::validate_match(request)?;
    let today = api.today();
    let mut change = api.changes.begin().await?;
    let candidate = store::candidates::load(&mut change, query.candidate_id, Lock::None).await?;
    caller.ensure_access(&candidate.township_code, &candidate.county_code)?;
    let facts = candidate.facts(today);
    domain::check_seeks_work(&facts)?;
    // The database narrows to what can possibly match (a supervisee's own county only);
    // the domain rules then decide every opening.
    let county_only = (facts.source == CandidateSource::Supervisee).then_some(candidate.county_code.as_str());
    let rows = store::openings::matchable(&mut change, today, county_only, candidate.id).await?;
    let openings: Vec<(Uuid, OpeningFacts)> = rows.iter().map(|row| (row.id, row.facts())).collect();
    let matches: Vec<pb::OpeningMatch> = domain::rank(&facts, &openings, today, query.max_results)
        .into_iter()
        .filter_map(|(id, found)| {
            let row = rows.iter().find(|row| row.id == id)?;
            Some(pb::OpeningMatch {
                opening: Some(response::opening(row)),
                base_name: row.base_name.clone(),
                score: found.score,
                reasons: found.reasons,
            })
        })
        .collect();
    let detail = json!({ "considered": rows.len(), "returned": matches.len() });
    change
        .audit(
            caller,
            "placement.match",
            Some(candidate.id),
            Some(candidate.id),
            detail,
        )
        .await?;
    change.commit().await?;
    Ok(pb::MatchOpeningsResponse { matches })
}
