//! Properties of the request edge: whatever an office sends, every validator answers
//! without panicking, and each refusal is `InvalidArgument` naming fields of the request.

use mesh_kit::proto_time::to_date;
use mesh_proptest::{
    config,
    fixtures::{cursors, first_page, home},
    rejection, requests,
};
use mesh_proto::{common, placement as pb};
use proptest::prelude::*;
use uuid::Uuid;

use super::{
    records::tests::{opening_request, today},
    *,
};

fn id() -> String {
    Uuid::now_v7().to_string()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn bases(request in requests("mesh.placement.v1.CreateBaseRequest", &pb::CreateBaseRequest {
        name: "甘州区安置基地".into(),
        jurisdiction: home(),
        r#type: pb::BaseType::Farm as i32,
        contact_name: "王五".into(),
        contact_phone: "13912345678".into(),
    })) {
        rejection("mesh.placement.v1.CreateBaseRequest", &validate_create_base(&request))?;
    }

    #[test]
    fn base_updates(request in requests("mesh.placement.v1.UpdateBaseRequest", &pb::UpdateBaseRequest {
        base_id: id(),
        name: Some("新名字".into()),
        r#type: Some(pb::BaseType::Farm as i32),
        contact_name: None,
        contact_phone: Some("13912345678".into()),
        active: Some(true),
    })) {
        rejection("mesh.placement.v1.UpdateBaseRequest", &validate_update_base(&request))?;
    }

    #[test]
    fn openings(request in requests("mesh.placement.v1.CreateOpeningRequest", &opening_request())) {
        rejection("mesh.placement.v1.CreateOpeningRequest", &validate_create_opening(&request, today()))?;
    }

    #[test]
    fn closings(request in requests("mesh.placement.v1.CloseOpeningRequest", &pb::CloseOpeningRequest {
        opening_id: id(),
        reason: "filled".into(),
    })) {
        rejection("mesh.placement.v1.CloseOpeningRequest", &validate_close_opening(&request))?;
    }

    #[test]
    fn profiles(request in requests("mesh.placement.v1.UpdateCandidateProfileRequest", &pb::UpdateCandidateProfileRequest {
        candidate_id: id(),
        skills: vec!["welding".into()],
        sector_preferences: vec![pb::Sector::Manufacturing as i32],
        offence_category: common::OffenceCategory::Property as i32,
    })) {
        rejection("mesh.placement.v1.UpdateCandidateProfileRequest", &validate_profile(&request))?;
    }

    #[test]
    fn proposals(request in requests("mesh.placement.v1.ProposePlacementRequest", &pb::ProposePlacementRequest {
        candidate_id: id(),
        opening_id: id(),
        note: "good fit".into(),
    })) {
        rejection("mesh.placement.v1.ProposePlacementRequest", &validate_propose(&request))?;
    }

    #[test]
    fn placement_ids(request in requests("mesh.placement.v1.AcceptPlacementRequest", &pb::AcceptPlacementRequest { placement_id: id() })) {
        rejection("mesh.placement.v1.AcceptPlacementRequest", &validate_placement_id(&request.placement_id))?;
    }

    #[test]
    fn declines(request in requests("mesh.placement.v1.DeclinePlacementRequest", &pb::DeclinePlacementRequest {
        placement_id: id(),
        declined_by: pb::DeclinedBy::Candidate as i32,
        reason: "too far".into(),
    })) {
        rejection("mesh.placement.v1.DeclinePlacementRequest", &validate_decline(&request))?;
    }

    #[test]
    fn starts(request in requests("mesh.placement.v1.StartPlacementRequest", &pb::StartPlacementRequest {
        placement_id: id(),
        start_date: Some(to_date(today())),
    })) {
        rejection("mesh.placement.v1.StartPlacementRequest", &validate_start(&request))?;
    }

    #[test]
    fn ends(request in requests("mesh.placement.v1.EndPlacementRequest", &pb::EndPlacementRequest {
        placement_id: id(),
        end_date: Some(to_date(today())),
        reason: pb::EndReason::Completed as i32,
        note: "done".into(),
    })) {
        rejection("mesh.placement.v1.EndPlacementRequest", &validate_end(&request))?;
    }

    #[test]
    fn base_lists(request in requests("mesh.placement.v1.ListBasesRequest", &pb::ListBasesRequest {
        township_code: "620702001".into(),
        page: first_page(),
        ..Default::default()
    })) {
        rejection("mesh.placement.v1.ListBasesRequest", &validate_list_bases(&request, &cursors()))?;
    }

    #[test]
    fn opening_lists(request in requests("mesh.placement.v1.ListOpeningsRequest", &pb::ListOpeningsRequest {
        county_code: "620702".into(),
        status: pb::OpeningStatus::Open as i32,
        page: first_page(),
        ..Default::default()
    })) {
        rejection("mesh.placement.v1.ListOpeningsRequest", &validate_list_openings(&request, &cursors()))?;
    }

    #[test]
    fn candidate_lists(request in requests("mesh.placement.v1.ListCandidatesRequest", &pb::ListCandidatesRequest {
        township_code: "620702001".into(),
        only_unplaced: true,
        page: first_page(),
        ..Default::default()
    })) {
        rejection("mesh.placement.v1.ListCandidatesRequest", &validate_list_candidates(&request, &cursors()))?;
    }

    #[test]
    fn matches(request in requests("mesh.placement.v1.MatchOpeningsRequest", &pb::MatchOpeningsRequest {
        candidate_id: id(),
        max_results: 10,
    })) {
        rejection("mesh.placement.v1.MatchOpeningsRequest", &validate_match(&request))?;
    }
}
