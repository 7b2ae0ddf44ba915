//! Properties of the request edge: whatever an office sends, every validator answers
//! without panicking, and each refusal is `InvalidArgument` naming fields of the request.

use mesh_proptest::{
    config,
    fixtures::{cursors, first_page, home},
    rejection, requests,
};
use proptest::prelude::*;

use super::*;

const LIST: &str = "mesh.alert.v1.ListAlertsRequest";
const RESOLVE: &str = "mesh.alert.v1.ResolveAlertRequest";
const ACKNOWLEDGE: &str = "mesh.alert.v1.AcknowledgeAlertRequest";
const ENDPOINT: &str = "mesh.alert.v1.RegisterEndpointRequest";
const ENDPOINTS: &str = "mesh.alert.v1.ListEndpointsRequest";
const DELIVERIES: &str = "mesh.alert.v1.ListDeliveriesRequest";
const STREAM: &str = "mesh.alert.v1.StreamAlertsRequest";

proptest! {
    #![proptest_config(config())]

    /// A list is validated as the handler does it: the scope, then the filters and page.
    #[test]
    fn alert_lists(request in requests(LIST, &pb::ListAlertsRequest {
        jurisdiction: home(),
        statuses: vec![pb::AlertStatus::Open as i32],
        kinds: vec![],
        subject_id: String::new(),
        page: first_page(),
    })) {
        let listed = scope("jurisdiction", request.jurisdiction.as_ref())
            .and_then(|scope| list_alerts(&request, scope, &cursors()));
        rejection(LIST, &listed)?;
    }

    #[test]
    fn streams(request in requests(STREAM, &pb::StreamAlertsRequest { jurisdiction: home(), include_current: true })) {
        rejection(STREAM, &scope("jurisdiction", request.jurisdiction.as_ref()))?;
    }

    #[test]
    fn acknowledgements(request in requests(ACKNOWLEDGE, &pb::AcknowledgeAlertRequest { alert_id: Uuid::now_v7().to_string() })) {
        rejection(ACKNOWLEDGE, &alert_id(&request.alert_id))?;
    }

    #[test]
    fn resolutions(request in requests(RESOLVE, &pb::ResolveAlertRequest {
        alert_id: Uuid::now_v7().to_string(),
        note: "reached by phone".into(),
    })) {
        rejection(RESOLVE, &resolve(&request))?;
    }

    #[test]
    fn endpoints(request in requests(ENDPOINT, &pb::RegisterEndpointRequest {
        jurisdiction: home(),
        url: "https://dongjie.example.cn/hooks/mesh".into(),
        secret: "s".repeat(40),
        description: "东街司法所".into(),
        max_batch_size: 10,
    })) {
        for allow_http in [false, true] {
            rejection(ENDPOINT, &scope("jurisdiction", request.jurisdiction.as_ref()))?;
            rejection(ENDPOINT, &endpoint(&request, allow_http))?;
        }
    }

    #[test]
    fn endpoint_lists(request in requests(ENDPOINTS, &pb::ListEndpointsRequest { jurisdiction: home(), page: first_page() })) {
        rejection(ENDPOINTS, &scope("jurisdiction", request.jurisdiction.as_ref()))?;
    }

    #[test]
    fn delivery_lists(request in requests(DELIVERIES, &pb::ListDeliveriesRequest {
        alert_id: Uuid::now_v7().to_string(),
        page: first_page(),
    })) {
        rejection(DELIVERIES, &alert_id(&request.alert_id))?;
        rejection(DELIVERIES, &page::<i64>(&cursors(), "alert.deliveries", request.page.as_ref()))?;
    }
}

#[test]
fn a_page_over_the_maximum_is_refused_by_name() {
    let request = pb::ListAlertsRequest {
        jurisdiction: home(),
        page: Some(PageRequest {
            page_size: mesh_kit::page::MAX_PAGE_SIZE + 1,
            page_token: String::new(),
        }),
        ..Default::default()
    };
    let scope = scope("jurisdiction", request.jurisdiction.as_ref()).expect("a known township");
    let Err(ServiceError::Invalid(violations)) = list_alerts(&request, scope, &cursors()) else {
        panic!("an over-size page is refused");
    };
    assert_eq!(violations.fields(), ["page.page_size"]);
}
