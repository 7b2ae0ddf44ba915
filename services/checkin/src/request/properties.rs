//! Properties of the request edge: whatever a caller sends, every validator answers without
//! panicking, and each refusal is `InvalidArgument` naming fields of the request (a batch
//! item's fields are named within the item, as the batch reports them per item).

use mesh_kit::proto_time::to_timestamp;
use mesh_proptest::{config, fixtures::cursors, rejection, requests};
use mesh_proto::common;
use proptest::prelude::*;

use super::{checkin::tests::home_visit, *};
use crate::domain::{Rules, fixtures::now};

const RECORD: &str = "mesh.checkin.v1.RecordCheckinRequest";
const BATCH: &str = "mesh.checkin.v1.SyncOfflineBatchRequest";
const ITEM: &str = "mesh.checkin.v1.NewCheckin";
const LIST: &str = "mesh.checkin.v1.ListCheckinsRequest";
const AREA: &str = "mesh.checkin.v1.SetPermittedAreaRequest";
const GET_AREA: &str = "mesh.checkin.v1.GetPermittedAreaRequest";

/// Validates a RecordCheckin request as the handler does: the check-in, then its fields.
fn recorded(request: pb::RecordCheckinRequest, officer: Option<&str>) -> Result<(), ServiceError> {
    let new = record(request)?;
    checkin(&new, "checkin.", now(), &Rules::default(), officer).map(|_| ())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn record_checkin(request in requests(RECORD, &pb::RecordCheckinRequest { checkin: Some(home_visit()) })) {
        for officer in [None, Some("officer-1")] {
            rejection(RECORD, &recorded(request.clone(), officer))?;
        }
    }

    #[test]
    fn offline_batches(request in requests(BATCH, &pb::SyncOfflineBatchRequest { checkins: vec![home_visit(); 3] })) {
        match batch(request) {
            Ok(items) => {
                for item in items {
                    rejection(ITEM, &checkin(&item, "", now(), &Rules::default(), Some("officer-1")))?;
                }
            }
            refused => rejection(BATCH, &refused)?,
        }
    }

    #[test]
    fn lists(request in requests(LIST, &pb::ListCheckinsRequest {
        supervisee_id: "0193a5c4-0000-7000-8000-0000000000aa".into(),
        range: Some(common::TimeRange {
            start: Some(to_timestamp(now() - chrono::Duration::days(7))),
            end: Some(to_timestamp(now())),
        }),
        page: Some(common::PageRequest { page_size: 100, page_token: String::new() }),
    })) {
        rejection(LIST, &list(&request, &cursors()))?;
    }

    #[test]
    fn permitted_areas(request in requests(AREA, &pb::SetPermittedAreaRequest {
        township_code: "620702001".into(),
        circles: vec![pb::GeoCircle {
            centre: Some(common::GeoPoint { latitude: 38.93, longitude: 100.45, accuracy_m: 0.0 }),
            radius_m: 5_000.0,
        }],
    })) {
        rejection(AREA, &township("township_code", &request.township_code))?;
        rejection(AREA, &circles(&request.circles))?;
    }

    #[test]
    fn permitted_area_reads(request in requests(GET_AREA, &pb::GetPermittedAreaRequest { township_code: "620702001".into() })) {
        rejection(GET_AREA, &township("township_code", &request.township_code))?;
    }
}

#[test]
fn a_page_over_the_maximum_is_refused_by_name() {
    let request = pb::ListCheckinsRequest {
        supervisee_id: "0193a5c4-0000-7000-8000-0000000000aa".into(),
        range: Some(common::TimeRange {
            start: Some(to_timestamp(now() - chrono::Duration::days(7))),
            end: Some(to_timestamp(now())),
        }),
        page: Some(common::PageRequest {
            page_size: mesh_kit::page::MAX_PAGE_SIZE + 1,
            page_token: String::new(),
        }),
    };
    let Err(ServiceError::Invalid(violations)) = list(&request, &cursors()) else {
        panic!("an over-size page is refused");
    };
    assert_eq!(violations.fields(), ["page.page_size"]);
}
