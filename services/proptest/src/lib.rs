//! What the property tests of every service share: arbitrary requests and event payloads
//! of any message of the mesh's contracts, built from the embedded descriptor set
//! (`arbitrary`), and the rule every rejection keeps — `InvalidArgument` naming fields that
//! exist in the request, or a dead-letter reason naming what was wrong (`check`).

pub mod arbitrary;
pub mod check;
pub mod fixtures;

pub use arbitrary::{any_message, near, payloads, requests};
pub use check::{event_rejection, rejection};

/// Cases per property: enough to meet every kind of bad field, few enough that a service's
/// properties run in seconds.
pub fn config() -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases: 256,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}

/// A consumed record of `event_type` carrying `payload`, as a consumer's handler gets it.
pub fn inbound(event_type: &str, payload: Vec<u8>) -> mesh_kit::consumer::InboundEvent {
    let headers = [
        (
            mesh_kit::kafka::headers::EVENT_ID,
            uuid::Uuid::now_v7().to_string(),
        ),
        (mesh_kit::kafka::headers::EVENT_TYPE, event_type.to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    mesh_kit::consumer::InboundEvent::from_parts("topic", 0, 0, None, headers, payload)
        .expect("the event headers are complete")
}
