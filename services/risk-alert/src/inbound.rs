//! The edge of the consumer: registry, check-in and handover messages → domain values.
//! What can never be applied is refused with the reason the dead-letter record carries;
//! what an older or newer producer leaves unset stays unknown (`None`) rather than failing.

use chrono::{DateTime, Utc};
use mesh_kit::{
    consumer::{HandleError, InboundEvent},
    proto_time::{from_date, from_timestamp},
};
use mesh_proto::{checkin::CheckinRecorded, handover as handover_pb, registry as registry_pb};
use uuid::Uuid;

use crate::{
    convert::jurisdiction_from_proto,
    domain::{
        policy::{Level, ReleaseCategory},
        watch::{
            Checkin, CheckinMethod, HandoverSnapshot, HandoverStatus, OutOfArea, SuperviseeSnapshot,
            SuperviseeStatus,
        },
    },
};

/// Why an event can never be applied (the dead-letter reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unusable(&'static str);

impl From<Unusable> for HandleError {
    fn from(reason: Unusable) -> Self {
        HandleError::Permanent(reason.to_string())
    }
}

fn time(timestamp: &Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    timestamp.as_ref().and_then(from_timestamp)
}

pub fn supervisee(snapshot: registry_pb::SuperviseeSnapshot) -> Result<SuperviseeSnapshot, Unusable> {
    let id: Uuid = snapshot
        .supervisee_id
        .parse()
        .map_err(|_| Unusable("snapshot with a malformed supervisee_id"))?;
    Ok(SuperviseeSnapshot {
        id,
        jurisdiction: jurisdiction_from_proto(snapshot.jurisdiction.as_ref()),
        level: Level::from_proto(snapshot.level),
        status: SuperviseeStatus::from_proto(snapshot.status),
        version: snapshot.version,
        reported_at: time(&snapshot.reported_at),
        term_start: snapshot.term_start.as_ref().and_then(from_date),
        subject_id: snapshot.supervisee_id,
        name: snapshot.name,
    })
}

pub fn checkin(checkin: CheckinRecorded) -> Result<Checkin, Unusable> {
    let supervisee: Uuid = checkin
        .supervisee_id
        .parse()
        .map_err(|_| Unusable("check-in with a malformed supervisee_id"))?;
    let device_time = time(&checkin.device_time).ok_or(Unusable("check-in without a valid device_time"))?;
    let position = checkin.position.unwrap_or_default();
    Ok(Checkin {
        supervisee,
        device_time,
        jurisdiction: jurisdiction_from_proto(checkin.jurisdiction.as_ref()),
        method: CheckinMethod::from_proto(checkin.method),
        identity_verified: checkin.identity_verified,
        out_of_area: checkin.out_of_area.then_some(OutOfArea {
            latitude: position.latitude,
            longitude: position.longitude,
            accuracy_m: position.accuracy_m,
            distance_outside_m: checkin.distance_outside_m,
        }),
        checkin_id: checkin.checkin_id,
        subject_id: checkin.supervisee_id,
    })
}

/// The handover the registry's supervision came from, if any: every snapshot of such a
/// supervision names it (`handover_id`); a `supervisee.registered` of an older registry says
/// it beside the snapshot.
pub fn registered_handover(
    event: &InboundEvent,
    snapshot: &registry_pb::SuperviseeSnapshot,
) -> Result<Option<Uuid>, HandleError> {
    let named = if !snapshot.handover_id.is_empty() {
        snapshot.handover_id.clone()
    } else if event.event_type == "supervisee.registered" {
        event.decode::<registry_pb::SuperviseeRegistered>()?.handover_id
    } else {
        String::new()
    };
    if named.is_empty() {
        return Ok(None);
    }
    let id = named
        .parse()
        .map_err(|_| Unusable("registration with a malformed handover_id"))?;
    Ok(Some(id))
}

/// The handover id of a snapshot, read first: a stale snapshot is skipped before anything
/// else of it is looked at.
pub fn handover_id(snapshot: &handover_pb::HandoverSnapshot) -> Result<Uuid, Unusable> {
    snapshot
        .handover_id
        .parse()
        .map_err(|_| Unusable("handover snapshot with a malformed handover_id"))
}

pub fn handover(snapshot: handover_pb::HandoverSnapshot) -> Result<HandoverSnapshot, Unusable> {
    let id = handover_id(&snapshot)?;
    let category = ReleaseCategory::from_proto(snapshot.category)
        .ok_or(Unusable("handover without a release category"))?;
    let status = HandoverStatus::from_proto(snapshot.status).ok_or(Unusable("handover without a status"))?;
    let expected_release_date = snapshot
        .expected_release_date
        .as_ref()
        .and_then(from_date)
        .ok_or(Unusable("handover without a valid expected_release_date"))?;
    Ok(HandoverSnapshot {
        id,
        category,
        destination: jurisdiction_from_proto(snapshot.destination.as_ref()),
        key_target: snapshot.key_assistance_target,
        status,
        expected_release_date,
        notified_at: time(&snapshot.notified_at),
        acknowledged_at: time(&snapshot.acknowledged_at),
        actual_release_time: time(&snapshot.actual_release_time),
        gate_collected_at: time(&snapshot.gate_collected_at),
        reported_in_at: time(&snapshot.reported_in_at),
        version: snapshot.version,
        subject_id: snapshot.handover_id,
        person_name: snapshot.person_name,
        prison_id: snapshot.prison_id,
        prison_reference: snapshot.prison_reference,
    })
}

#[cfg(test)]
mod tests {
    use mesh_kit::proto_time::{to_date, to_timestamp};

    use super::*;
    use crate::domain::alert::tests::utc;

    #[test]
    fn a_checkin_needs_an_id_and_a_device_time() {
        let valid = CheckinRecorded {
            supervisee_id: Uuid::from_u128(1).to_string(),
            checkin_id: "c1".into(),
            method: mesh_proto::checkin::CheckinMethod::HomeVisit as i32,
            device_time: Some(to_timestamp(utc("2026-12-01T03:00:00Z"))),
            identity_verified: true,
            ..Default::default()
        };
        let checkin = checkin(valid.clone()).expect("valid");
        assert!(checkin.in_person());
        assert_eq!(checkin.out_of_area, None);
        assert_eq!(
            super::checkin(CheckinRecorded {
                device_time: None,
                ..valid.clone()
            }),
            Err(Unusable("check-in without a valid device_time"))
        );
        assert_eq!(
            super::checkin(CheckinRecorded {
                supervisee_id: "x".into(),
                ..valid
            }),
            Err(Unusable("check-in with a malformed supervisee_id"))
        );
    }

    #[test]
    fn a_handover_needs_category_status_and_release_date() {
        let valid = handover_pb::HandoverSnapshot {
            handover_id: Uuid::from_u128(2).to_string(),
            category: handover_pb::ReleaseCategory::Parole as i32,
            status: handover_pb::HandoverStatus::Notified as i32,
            expected_release_date: chrono::NaiveDate::from_ymd_opt(2026, 12, 1).map(to_date),
            ..Default::default()
        };
        assert!(handover(valid.clone()).is_ok());
        let reasons: Vec<String> = [
            handover_pb::HandoverSnapshot {
                category: 0,
                ..valid.clone()
            },
            handover_pb::HandoverSnapshot {
                status: 0,
                ..valid.clone()
            },
            handover_pb::HandoverSnapshot {
                expected_release_date: None,
                ..valid
            },
        ]
        .into_iter()
        .map(|snapshot| handover(snapshot).expect_err("unusable").to_string())
        .collect();
        assert_eq!(
            reasons,
            [
                "handover without a release category",
                "handover without a status",
                "handover without a valid expected_release_date"
            ]
        );
    }

    #[test]
    fn unknown_levels_and_statuses_stay_unknown() {
        let snapshot = supervisee(registry_pb::SuperviseeSnapshot {
            supervisee_id: Uuid::from_u128(3).to_string(),
            level: 0,
            status: 42,
            ..Default::default()
        })
        .expect("usable");
        assert_eq!((snapshot.level, snapshot.status), (None, None));
    }
}

#[cfg(test)]
mod properties {
    use mesh_kit::{events, proto_time::to_timestamp};
    use mesh_proptest::{
        config, event_rejection,
        fixtures::{self, home},
        inbound, payloads,
    };
    use proptest::{prelude::*, sample::select};

    use super::*;
    use crate::domain::alert::tests::utc;

    const CHECKIN: &str = "mesh.checkin.v1.CheckinRecorded";
    const REGISTERED: &str = "mesh.registry.v1.SuperviseeRegistered";
    const NOTIFIED: &str = "mesh.handover.v1.HandoverNotified";

    fn valid_checkin() -> CheckinRecorded {
        CheckinRecorded {
            supervisee_id: Uuid::now_v7().to_string(),
            checkin_id: Uuid::now_v7().to_string(),
            device_time: Some(to_timestamp(utc("2026-12-01T03:00:00Z"))),
            jurisdiction: home(),
            identity_verified: true,
            ..Default::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        /// The check-ins the projection reads, as it reads them.
        #[test]
        fn checkins(payload in payloads(CHECKIN, &valid_checkin())) {
            let event = inbound("checkin.recorded", payload);
            let read = event.decode::<CheckinRecorded>().and_then(|message| Ok(checkin(message)?));
            event_rejection(CHECKIN, &read)?;
        }

        /// The registry's snapshots, with the handover a registration names.
        #[test]
        fn registry_events(
            event_type in select(&["supervisee.registered", "supervisee.status_changed", "supervisee.other"][..]),
            payload in payloads(REGISTERED, &fixtures::registered()),
        ) {
            let event = inbound(event_type, payload);
            let read = events::supervisee_snapshot(&event).and_then(|snapshot| {
                snapshot
                    .map(|snapshot| {
                        let handover = registered_handover(&event, &snapshot)?;
                        Ok((handover, supervisee(snapshot)?))
                    })
                    .transpose()
            });
            event_rejection(REGISTERED, &read)?;
        }

        /// The handover service's snapshots: the id first (a stale one is skipped before the
        /// rest is read), then the rest.
        #[test]
        fn handover_events(
            event_type in select(&["handover.notified", "handover.released", "handover.other"][..]),
            payload in payloads(NOTIFIED, &handover_pb::HandoverNotified {
                handover: Some(fixtures::handover(handover_pb::ReleaseCategory::Parole)),
                ..Default::default()
            }),
        ) {
            let event = inbound(event_type, payload);
            let read = events::handover_snapshot(&event).and_then(|snapshot| {
                snapshot
                    .map(|snapshot| {
                        handover_id(&snapshot)?;
                        Ok(handover(snapshot)?)
                    })
                    .transpose()
            });
            event_rejection(NOTIFIED, &read)?;
        }
    }
}
