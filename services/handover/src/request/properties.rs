//! Properties of the request edge: whatever a prison or an office sends, every validator
//! answers without panicking, and each refusal is `InvalidArgument` naming fields of the
//! request.

use chrono::Days;
use mesh_kit::proto_time::{to_date, to_timestamp};
use mesh_proptest::{config, fixtures::cursors, rejection, requests};
use mesh_proto::{common, handover as pb, registry};
use proptest::prelude::*;

use super::{notice::tests::notice_request, *};
use crate::domain::{
    ReleaseCategory,
    testing::{date, utc},
};

const NOTICE: &str = "mesh.handover.v1.SubmitReleaseNoticeRequest";
const AMEND: &str = "mesh.handover.v1.AmendReleaseNoticeRequest";
const CANCEL: &str = "mesh.handover.v1.CancelReleaseNoticeRequest";
const RELEASE: &str = "mesh.handover.v1.ConfirmReleaseRequest";
const GATE: &str = "mesh.handover.v1.RecordGateCollectionRequest";
const REPORT_IN: &str = "mesh.handover.v1.RecordReportInRequest";
const LIST: &str = "mesh.handover.v1.ListHandoversRequest";
const GET: &str = "mesh.handover.v1.GetHandoverRequest";

fn today() -> NaiveDate {
    date(2026, 11, 26)
}

fn now() -> DateTime<Utc> {
    utc("2026-11-26T08:00:00Z")
}

fn id() -> String {
    Uuid::now_v7().to_string()
}

fn valid_report_in() -> pb::RecordReportInRequest {
    pb::RecordReportInRequest {
        handover_id: id(),
        reported_in_at: Some(to_timestamp(now() - chrono::Duration::hours(2))),
        supervision_level: registry::SupervisionLevel::Strict as i32,
        officer_id: "officer-1".into(),
        term_start: Some(to_date(today())),
        term_end: Some(to_date(date(2028, 6, 30))),
        phone: "13912345678".into(),
        address: "甘州区东街 1 号".into(),
        needs_employment: true,
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn notices(request in requests(NOTICE, &notice_request(today()))) {
        rejection(NOTICE, &notice(&request, today(), 1))?;
    }

    #[test]
    fn amendments(request in requests(AMEND, &pb::AmendReleaseNoticeRequest {
        handover_id: id(),
        new_expected_release_date: Some(to_date(today() + Days::new(10))),
        new_destination: Some(common::Jurisdiction { township_code: "620702002".into(), county_code: "620702".into() }),
        reason: "moved".into(),
    })) {
        rejection(AMEND, &amendment(&request, today(), 1))?;
        rejection(AMEND, &handover_id(&request.handover_id))?;
    }

    #[test]
    fn cancellations(request in requests(CANCEL, &pb::CancelReleaseNoticeRequest {
        handover_id: id(),
        reason: pb::CancelReason::ReleaseRevoked as i32,
        note: "revoked".into(),
    })) {
        rejection(CANCEL, &cancellation(&request))?;
    }

    #[test]
    fn releases(request in requests(RELEASE, &pb::ConfirmReleaseRequest {
        handover_id: id(),
        actual_release_time: Some(to_timestamp(now() - chrono::Duration::hours(1))),
    })) {
        rejection(RELEASE, &release_time(&request, now()))?;
    }

    #[test]
    fn gate_collections(request in requests(GATE, &pb::RecordGateCollectionRequest {
        handover_id: id(),
        collected_at: Some(to_timestamp(now() - chrono::Duration::hours(1))),
        officer_id: "officer-1".into(),
    })) {
        rejection(GATE, &gate_collection(&request, now()))?;
    }

    #[test]
    fn report_ins(request in requests(REPORT_IN, &valid_report_in())) {
        for category in [ReleaseCategory::Parole, ReleaseCategory::TemporaryExecutionOutsidePrison, ReleaseCategory::SentenceCompleted] {
            for released_at in [None, Some(now() - chrono::Duration::days(2))] {
                rejection(REPORT_IN, &report_in(&request, category, released_at, now()))?;
            }
        }
    }

    #[test]
    fn lists(request in requests(LIST, &pb::ListHandoversRequest {
        township_code: "620702001".into(),
        statuses: vec![pb::HandoverStatus::Released as i32],
        page: Some(common::PageRequest { page_size: 10, page_token: String::new() }),
        ..Default::default()
    })) {
        rejection(LIST, &list(&request, &cursors()))?;
    }

    #[test]
    fn reads(request in requests(GET, &pb::GetHandoverRequest { handover_id: id() })) {
        rejection(GET, &handover_id(&request.handover_id))?;
    }
}

#[test]
fn a_page_over_the_maximum_is_refused_by_name() {
    let request = pb::ListHandoversRequest {
        township_code: "620702001".into(),
        page: Some(common::PageRequest {
            page_size: mesh_kit::page::MAX_PAGE_SIZE + 1,
            page_token: String::new(),
        }),
        ..Default::default()
    };
    let Err(ServiceError::Invalid(violations)) = list(&request, &cursors()) else {
        panic!("an over-size page is refused");
    };
    assert_eq!(violations.fields(), ["page.page_size"]);
}
