//! Properties of the request edge: whatever a caller sends, every validator answers without
//! panicking, and each refusal is `InvalidArgument` naming fields of the request.

use mesh_proptest::{config, fixtures::cursors, rejection, requests};
use proptest::prelude::*;
use uuid::Uuid;

use super::{tests::registration_request, *};

const REGISTER: &str = "mesh.registry.v1.RegisterSuperviseeRequest";
const GET: &str = "mesh.registry.v1.GetSuperviseeRequest";
const LIST: &str = "mesh.registry.v1.ListSuperviseesRequest";
const LEVEL: &str = "mesh.registry.v1.ChangeLevelRequest";
const TRANSFER: &str = "mesh.registry.v1.TransferSuperviseeRequest";
const STATUS: &str = "mesh.registry.v1.ChangeStatusRequest";

fn now() -> DateTime<Utc> {
    super::tests::now()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn registrations(request in requests(REGISTER, &registration_request())) {
        for by in [ReportedBy::Officer, ReportedBy::Handover] {
            rejection(REGISTER, &registration(&request, now(), by))?;
        }
    }

    #[test]
    fn supervisee_ids(request in requests(GET, &pb::GetSuperviseeRequest { supervisee_id: Uuid::now_v7().to_string() })) {
        rejection(GET, &supervisee_id(&request.supervisee_id))?;
    }

    #[test]
    fn lists(request in requests(LIST, &pb::ListSuperviseesRequest {
        township_code: "620702001".into(),
        status: pb::SuperviseeStatus::Active as i32,
        page: Some(mesh_proto::common::PageRequest { page_size: 20, page_token: String::new() }),
    })) {
        rejection(LIST, &list(&request, &cursors()))?;
    }

    #[test]
    fn level_changes(request in requests(LEVEL, &pb::ChangeLevelRequest {
        supervisee_id: Uuid::now_v7().to_string(),
        level: pb::SupervisionLevel::Strict as i32,
        reason: "violations".into(),
    })) {
        rejection(LEVEL, &level_change(&request))?;
    }

    #[test]
    fn transfers(request in requests(TRANSFER, &pb::TransferSuperviseeRequest {
        supervisee_id: Uuid::now_v7().to_string(),
        to_township_code: "620702002".into(),
        to_county_code: "620702".into(),
        to_officer_id: "officer-9".into(),
        reason: "moved".into(),
    })) {
        rejection(TRANSFER, &transfer(&request))?;
    }

    #[test]
    fn status_changes(request in requests(STATUS, &pb::ChangeStatusRequest {
        supervisee_id: Uuid::now_v7().to_string(),
        status: pb::SuperviseeStatus::Active as i32,
        reason: "reported in".into(),
        effective_at: None,
    })) {
        rejection(STATUS, &status_change(&request, now()))?;
    }
}

#[test]
fn a_page_over_the_maximum_is_refused_by_name() {
    let request = pb::ListSuperviseesRequest {
        township_code: "620702001".into(),
        status: 0,
        page: Some(mesh_proto::common::PageRequest {
            page_size: mesh_kit::page::MAX_PAGE_SIZE + 1,
            page_token: String::new(),
        }),
    };
    let Err(ServiceError::Invalid(violations)) = list(&request, &cursors()) else {
        panic!("an over-size page is refused");
    };
    assert_eq!(violations.fields(), ["page.page_size"]);
}
