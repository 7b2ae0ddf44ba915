//! The edge: incoming protos (requests and the registry's snapshots) into domain types,
//! validated, every violation named by field. Each validator returns the complete typed
//! value or every violation at once, so handlers never re-check what was optional.

mod checkin;
#[cfg(test)]
mod properties;

use chrono::{DateTime, Utc};
use mesh_kit::{
    error::{FieldViolations, ServiceError},
    jurisdiction::Directory,
    page::{Cursors, Page},
    proto_time::from_timestamp,
};
use mesh_proto::{checkin as pb, registry as registry_pb};
use uuid::Uuid;

pub use self::checkin::{checkin, fingerprint};
use crate::domain::{
    Circle, Jurisdiction, Level, MAX_AREA_CIRCLES, MAX_BATCH_ITEMS, MAX_RADIUS_M, MIN_RADIUS_M,
    ProjectedSupervisee, SuperviseeStatus,
};

/// A non-nil UUID, or a violation on `field`.
fn parse_uuid(violations: &mut FieldViolations, field: &str, value: &str) -> Option<Uuid> {
    match value.trim().parse::<Uuid>() {
        Ok(id) if !id.is_nil() => Some(id),
        _ => {
            violations.add(field, "must be a UUID");
            None
        }
    }
}

/// The check-in of a RecordCheckin request.
pub fn record(request: pb::RecordCheckinRequest) -> Result<pb::NewCheckin, ServiceError> {
    request
        .checkin
        .ok_or_else(|| ServiceError::invalid("checkin", "is required"))
}

/// The items of an offline batch: 1 to [`MAX_BATCH_ITEMS`] (each is validated on its own).
pub fn batch(request: pb::SyncOfflineBatchRequest) -> Result<Vec<pb::NewCheckin>, ServiceError> {
    let items = request.checkins;
    if items.is_empty() || items.len() > MAX_BATCH_ITEMS {
        return Err(ServiceError::invalid(
            "checkins",
            format!("must hold 1 to {MAX_BATCH_ITEMS} check-ins, got {}", items.len()),
        ));
    }
    Ok(items)
}

/// Where a ListCheckins page continues: after the check-in with this device time and id.
pub type CheckinKey = (DateTime<Utc>, Uuid);

/// A validated ListCheckins request: one supervisee's check-ins with device times in
/// `[start, end)`, a page of them.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub supervisee_id: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub page: Page<CheckinKey>,
}

impl ListQuery {
    /// The list and its filters, so a cursor serves only the list it came from.
    pub fn scope(&self) -> String {
        list_scope(self.supervisee_id, self.start, self.end)
    }
}

fn list_scope(supervisee_id: Uuid, start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    format!("checkin.list|{supervisee_id}|{start}|{end}")
}

/// Validates a ListCheckins request; its cursor must come from the same list and filters.
pub fn list(request: &pb::ListCheckinsRequest, cursors: &Cursors) -> Result<ListQuery, ServiceError> {
    let mut violations = FieldViolations::new();
    let supervisee_id = request.supervisee_id.trim().parse::<Uuid>().ok();
    violations.require(supervisee_id.is_some(), "supervisee_id", "must be a UUID");
    let (start, end) = match &request.range {
        None => {
            violations.add("range", "is required");
            (None, None)
        }
        Some(range) => {
            let start = bound(&mut violations, "range.start", range.start.as_ref());
            let end = bound(&mut violations, "range.end", range.end.as_ref());
            if let (Some(start), Some(end)) = (start, end)
                && end <= start
            {
                violations.add("range.end", "must be after range.start");
            }
            (start, end)
        }
    };
    // With filters in error no cursor can belong to them: any cursor is refused too.
    let scope = match (supervisee_id, start, end) {
        (Some(supervisee_id), Some(start), Some(end)) => list_scope(supervisee_id, start, end),
        _ => "checkin.list|invalid".to_owned(),
    };
    let page = cursors.page(&scope, request.page.as_ref(), &mut violations);
    let query = (|| {
        Some(ListQuery {
            supervisee_id: supervisee_id?,
            start: start?,
            end: end?,
            page,
        })
    })();
    violations.complete(query)
}

/// A required, valid time bound of a range.
fn bound(
    violations: &mut FieldViolations,
    field: &str,
    value: Option<&prost_types::Timestamp>,
) -> Option<DateTime<Utc>> {
    let Some(timestamp) = value else {
        violations.add(field, "is required");
        return None;
    };
    let time = from_timestamp(timestamp);
    violations.require(time.is_some(), field, "must be a valid time");
    time
}

/// A township office of the directory (and its county), named by `field`.
pub fn township(field: &str, code: &str) -> Result<Jurisdiction, ServiceError> {
    Directory::get()
        .township(code)
        .map(|township| Jurisdiction {
            township_code: township.code.clone(),
            county_code: township.county_code.clone(),
        })
        .ok_or_else(|| ServiceError::invalid(field, "unknown township office code"))
}

/// The circles of a permitted area, each bad one named (`circles[2].radius_m`).
pub fn circles(circles: &[pb::GeoCircle]) -> Result<Vec<Circle>, ServiceError> {
    if circles.is_empty() || circles.len() > MAX_AREA_CIRCLES {
        return Err(ServiceError::invalid(
            "circles",
            format!("must hold 1 to {MAX_AREA_CIRCLES} circles"),
        ));
    }
    let mut violations = FieldViolations::new();
    let mut valid = Vec::with_capacity(circles.len());
    for (index, circle) in circles.iter().enumerate() {
        let field = format!("circles[{index}]");
        match &circle.centre {
            None => violations.add(&format!("{field}.centre"), "is required"),
            Some(centre) => {
                checkin::check_coordinates(
                    &mut violations,
                    &format!("{field}.centre"),
                    centre.latitude,
                    centre.longitude,
                );
                valid.push(Circle {
                    latitude: centre.latitude,
                    longitude: centre.longitude,
                    radius_m: circle.radius_m,
                });
            }
        }
        if !(MIN_RADIUS_M..=MAX_RADIUS_M).contains(&circle.radius_m) {
            violations.add(
                &format!("{field}.radius_m"),
                format!("must be between {MIN_RADIUS_M} and {MAX_RADIUS_M} metres"),
            );
        }
    }
    violations.into_result()?;
    Ok(valid)
}

/// Why a registry snapshot can never be projected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BadSnapshot {
    #[error("supervisee_id {0:?} is not a UUID")]
    SuperviseeId(String),
    #[error("snapshot without a jurisdiction")]
    NoJurisdiction,
    #[error("unknown supervisee status {0}")]
    Status(i32),
    #[error("unknown supervision level {0}")]
    Level(i32),
}

/// Reads a registry snapshot into what the check-in service keeps of a supervisee.
pub fn supervisee(snapshot: &registry_pb::SuperviseeSnapshot) -> Result<ProjectedSupervisee, BadSnapshot> {
    let id = snapshot
        .supervisee_id
        .parse()
        .map_err(|_| BadSnapshot::SuperviseeId(snapshot.supervisee_id.clone()))?;
    let jurisdiction = snapshot
        .jurisdiction
        .as_ref()
        .filter(|j| !j.township_code.is_empty() && !j.county_code.is_empty())
        .ok_or(BadSnapshot::NoJurisdiction)?;
    let status = SuperviseeStatus::from_proto(snapshot.status).ok_or(BadSnapshot::Status(snapshot.status))?;
    let level = Level::from_proto(snapshot.level).ok_or(BadSnapshot::Level(snapshot.level))?;
    Ok(ProjectedSupervisee {
        id,
        name: snapshot.name.clone(),
        jurisdiction: Jurisdiction {
            township_code: jurisdiction.township_code.clone(),
            county_code: jurisdiction.county_code.clone(),
        },
        status,
        level,
        version: snapshot.version,
    })
}

#[cfg(test)]
mod tests {
    use mesh_kit::proto_time::to_timestamp;
    use mesh_proto::common;
    use secrecy::SecretString;

    use super::*;

    fn fields<T>(result: Result<T, ServiceError>) -> Vec<String> {
        match result {
            Ok(_) => Vec::new(),
            Err(ServiceError::Invalid(violations)) => violations.fields(),
            Err(other) => panic!("not a validation error: {other}"),
        }
    }

    #[test]
    fn circles_are_validated_one_by_one() {
        let circle = |latitude, radius_m| pb::GeoCircle {
            centre: Some(common::GeoPoint {
                latitude,
                longitude: 100.0,
                accuracy_m: 0.0,
            }),
            radius_m,
        };
        assert!(circles(&[circle(38.0, 1_000.0)]).is_ok());
        assert_eq!(fields(circles(&[])), ["circles"]);
        assert_eq!(fields(circles(&vec![circle(38.0, 1_000.0); 21])), ["circles"]);
        assert_eq!(
            fields(circles(&[
                circle(38.0, 1_000.0),
                circle(91.0, 10.0),
                pb::GeoCircle {
                    centre: None,
                    radius_m: 1_000.0
                }
            ])),
            [
                "circles[1].centre.latitude",
                "circles[1].radius_m",
                "circles[2].centre"
            ]
        );
        assert_eq!(
            fields(circles(&[circle(38.0, f64::NAN)])),
            ["circles[0].radius_m"]
        );
    }

    #[test]
    fn batches_hold_one_to_five_hundred_items() {
        let batch_of = |n| {
            batch(pb::SyncOfflineBatchRequest {
                checkins: vec![pb::NewCheckin::default(); n],
            })
        };
        assert_eq!(fields(batch_of(0)), ["checkins"]);
        assert_eq!(fields(batch_of(501)), ["checkins"]);
        assert_eq!(batch_of(500).map(|items| items.len()).ok(), Some(500));
        assert_eq!(
            fields(record(pb::RecordCheckinRequest { checkin: None })),
            ["checkin"]
        );
    }

    #[test]
    fn list_requests_name_each_bad_field_and_keep_cursors_to_their_list() {
        let cursors = Cursors::new(&SecretString::from("a secret of at least thirty-two bytes!!"));
        let start = DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default();
        let end = start + chrono::Duration::hours(1);
        let supervisee_id = Uuid::now_v7();
        let request = |page_token: String| pb::ListCheckinsRequest {
            supervisee_id: supervisee_id.to_string(),
            range: Some(common::TimeRange {
                start: Some(to_timestamp(start)),
                end: Some(to_timestamp(end)),
            }),
            page: Some(common::PageRequest {
                page_size: 2,
                page_token,
            }),
        };
        let first = list(&request(String::new()), &cursors).expect("valid");
        assert_eq!(
            (first.supervisee_id, first.start, first.end),
            (supervisee_id, start, end)
        );
        assert_eq!((first.page.size, first.page.after), (2, None));

        let key: CheckinKey = (start, Uuid::now_v7());
        let token = cursors.encode(&first.scope(), &key);
        let next = list(&request(token.clone()), &cursors).expect("valid");
        assert_eq!(next.page.after, Some(key));
        // The same cursor under other filters is refused.
        let mut other = request(token);
        other.supervisee_id = Uuid::now_v7().to_string();
        assert_eq!(fields(list(&other, &cursors)), ["page.page_token"]);

        let mut bad = request(String::new());
        bad.supervisee_id = "x".into();
        bad.range = Some(common::TimeRange {
            start: None,
            end: Some(to_timestamp(end)),
        });
        assert_eq!(fields(list(&bad, &cursors)), ["supervisee_id", "range.start"]);
        bad.range = None;
        assert_eq!(fields(list(&bad, &cursors)), ["supervisee_id", "range"]);
    }

    #[test]
    fn snapshots_project_or_explain_why_not() {
        let snapshot = registry_pb::SuperviseeSnapshot {
            supervisee_id: "0193a5c4-0000-7000-8000-0000000000aa".into(),
            name: "测试".into(),
            level: registry_pb::SupervisionLevel::Strict as i32,
            status: registry_pb::SuperviseeStatus::Absconded as i32,
            jurisdiction: Some(common::Jurisdiction {
                township_code: "620702001".into(),
                county_code: "620702".into(),
            }),
            version: 4,
            ..Default::default()
        };
        let projected = supervisee(&snapshot).expect("projects");
        assert_eq!(projected.status, SuperviseeStatus::Absconded);
        assert_eq!(projected.level, Level::Strict);
        assert_eq!(projected.version, 4);
        let no_place = registry_pb::SuperviseeSnapshot {
            jurisdiction: None,
            ..snapshot.clone()
        };
        assert_eq!(supervisee(&no_place), Err(BadSnapshot::NoJurisdiction));
        let no_level = registry_pb::SuperviseeSnapshot {
            level: 0,
            ..snapshot.clone()
        };
        assert_eq!(
            supervisee(&no_level).map_err(|error| error.to_string()),
            Err("unknown supervision level 0".to_owned())
        );
        let bad_id = registry_pb::SuperviseeSnapshot {
            supervisee_id: "x".into(),
            ..snapshot
        };
        assert_eq!(
            supervisee(&bad_id).map_err(|error| error.to_string()),
            Err("supervisee_id \"x\" is not a UUID".to_owned())
        );
    }
}
