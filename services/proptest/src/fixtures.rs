//! Valid values the properties start from, shared by the services' tests: a place in the
//! demo directory, a cursor codec, and the snapshots the registry and the handover service
//! publish.

use mesh_kit::page::Cursors;
use mesh_proto::{common, handover, registry};
use uuid::Uuid;

/// 甘州区 东街街道 (620702001) in its county: a township the directory holds.
pub fn home() -> Option<common::Jurisdiction> {
    Some(common::Jurisdiction {
        township_code: "620702001".into(),
        county_code: "620702".into(),
    })
}

/// The cursor codec of a list, keyed by a test secret.
pub fn cursors() -> Cursors {
    Cursors::new(&"a secret of at least thirty-two bytes!!".to_owned().into())
}

/// A first page of 20.
pub fn first_page() -> Option<common::PageRequest> {
    Some(common::PageRequest {
        page_size: 20,
        page_token: String::new(),
    })
}

/// The registration of an active supervisee in [`home`] who needs work, come from a
/// handover.
pub fn registered() -> registry::SuperviseeRegistered {
    registry::SuperviseeRegistered {
        supervisee: Some(registry::SuperviseeSnapshot {
            supervisee_id: Uuid::now_v7().to_string(),
            jurisdiction: home(),
            level: registry::SupervisionLevel::Normal as i32,
            status: registry::SuperviseeStatus::Active as i32,
            needs_employment: true,
            version: 1,
            ..Default::default()
        }),
        handover_id: Uuid::now_v7().to_string(),
        ..Default::default()
    }
}

/// A handover of `category` to [`home`], notified, released on 2026-12-01.
pub fn handover(category: handover::ReleaseCategory) -> handover::HandoverSnapshot {
    handover::HandoverSnapshot {
        handover_id: Uuid::now_v7().to_string(),
        person_name: "测试人员".into(),
        category: category as i32,
        status: handover::HandoverStatus::Notified as i32,
        expected_release_date: Some(common::Date {
            year: 2026,
            month: 12,
            day: 1,
        }),
        destination: home(),
        version: 1,
        ..Default::default()
    }
}
