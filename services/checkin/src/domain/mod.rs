//! The check-in service's rules as pure functions, free of SQL and gRPC (the clock is passed
//! in, never read): the device-time window, identity verification, who may check in, and
//! what tells a resent check-in (a retry) from a conflicting reuse of its id; the
//! permitted-area (geofence) rules are in [`area`]. Protobuf names appear only in the
//! `stored_enum!` declarations, which map each enum to its stored text and wire value.

use chrono::{DateTime, Duration, Utc};
use mesh_kit::error::ServiceError;
use mesh_proto::{checkin as pb, registry as registry_pb};
use uuid::Uuid;

pub mod area;
pub mod sync;

pub use self::area::{
    AreaCheck, AreaPolicy, AreaVersion, Circle, MAX_AREA_CIRCLES, MAX_RADIUS_M, MIN_RADIUS_M,
    NoPermittedArea, PermittedArea, check_area, haversine_m,
};

/// Most check-ins one offline batch may carry (bounded request work).
pub const MAX_BATCH_ITEMS: usize = 500;
/// Longest officer id, in characters (same bound as the registry's).
pub const MAX_OFFICER_ID_CHARS: usize = 64;
/// Longest free-text remark on a check-in, in characters.
pub const MAX_NOTE_CHARS: usize = 500;
/// Longest note of a manual identity verification, in characters.
pub const MAX_MANUAL_NOTE_CHARS: usize = 200;

mesh_kit::stored_enum!(Method, pb::CheckinMethod, {
    HomeVisit = "home_visit" => HomeVisit,
    OfficeReport = "office_report" => OfficeReport,
    PhoneVerification = "phone_verification" => PhoneVerification,
    AppSelfCheckin = "app_self_checkin" => AppSelfCheckin,
});

impl Method {
    /// Methods where an officer records the check-in (and so must be named).
    pub fn is_recorded_by_officer(self) -> bool {
        self != Method::AppSelfCheckin
    }

    /// A phone verification proves contact but not whereabouts; every other method has a
    /// device at the person's side and must say where.
    pub fn requires_position(self) -> bool {
        self != Method::PhoneVerification
    }
}

// A supervisee's status as projected from the registry's events, stored under the
// registry's own names so both databases read alike.
mesh_kit::stored_enum!(SuperviseeStatus, registry_pb::SuperviseeStatus, {
    PendingReportIn = "pending_report_in" => PendingReportIn,
    Active = "active" => Active,
    Suspended = "suspended" => Suspended,
    Absconded = "absconded" => Absconded,
    Terminated = "terminated" => Terminated,
    Revoked = "revoked" => Revoked,
    Deceased = "deceased" => Deceased,
});

impl SuperviseeStatus {
    /// Whether check-ins are taken. An absconded person checking in is contact restored,
    /// which risk-alert must hear about; before report-in, while suspended (e.g. in
    /// custody) or after the supervision ended there is nobody to check in.
    pub fn accepts_checkins(self) -> bool {
        matches!(self, SuperviseeStatus::Active | SuperviseeStatus::Absconded)
    }
}

// Supervision level as projected (kept for the check-in schedule; no rule here uses it).
mesh_kit::stored_enum!(Level, registry_pb::SupervisionLevel, {
    Strict = "strict" => Strict,
    Normal = "normal" => Normal,
    Lenient = "lenient" => Lenient,
});

/// The township office and county bureau a supervisee (or a check-in) belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jurisdiction {
    pub township_code: String,
    pub county_code: String,
}

/// What the check-in service keeps about a supervisee, from a registry snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectedSupervisee {
    pub id: Uuid,
    pub name: String,
    pub jurisdiction: Jurisdiction,
    pub status: SuperviseeStatus,
    pub level: Level,
    /// The registry's record version: only a newer snapshot replaces a kept one.
    pub version: i64,
}

/// A supervisee as a check-in needs it: where supervised, and whether under supervision.
#[derive(Debug, Clone, PartialEq)]
pub struct Supervisee {
    pub jurisdiction: Jurisdiction,
    pub status: SuperviseeStatus,
}

/// A device position (WGS84 degrees) with its horizontal accuracy in metres.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    pub latitude: f64,
    pub longitude: f64,
    pub accuracy_m: f64,
}

/// How identity was verified.
#[derive(Debug, Clone, PartialEq)]
pub enum Identity {
    FaceMatch { score: f64 },
    Manual { officer_id: String, note: String },
}

impl Identity {
    /// An officer's manual check proves identity; a face match only at or above the
    /// threshold (below it the app saw *someone*, which does not prove contact).
    pub fn is_verified(&self, face_match_threshold: f64) -> bool {
        match self {
            Identity::Manual { .. } => true,
            Identity::FaceMatch { score } => *score >= face_match_threshold,
        }
    }
}

/// The configurable rules of check-in validation.
#[derive(Debug, Clone)]
pub struct Rules {
    /// How far a device clock may run ahead of the service's (clock drift, not time travel).
    pub max_future: Duration,
    /// How old a check-in may be when it arrives: the longest an offline device may wait
    /// for signal before its check-ins no longer count.
    pub sync_window: Duration,
    /// Face-match score from which identity counts as verified.
    pub face_match_threshold: f64,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            max_future: Duration::seconds(300),
            sync_window: Duration::hours(72),
            face_match_threshold: 0.8,
        }
    }
}

/// A submitted check-in that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidCheckin {
    pub checkin_id: Uuid,
    pub supervisee_id: Uuid,
    pub method: Method,
    /// Empty for app self check-ins.
    pub recording_officer_id: String,
    pub device_time: DateTime<Utc>,
    pub position: Option<Position>,
    pub identity: Identity,
    pub captured_offline: bool,
    pub note: String,
}

/// A check-in as stored: what was submitted, and how it was judged when it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkin {
    pub checkin_id: Uuid,
    pub supervisee_id: Uuid,
    pub method: Method,
    pub recording_officer_id: String,
    pub device_time: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub position: Option<Position>,
    pub identity: Identity,
    /// Judged with the face-match threshold of the day it arrived.
    pub identity_verified: bool,
    pub captured_offline: bool,
    /// Judged against the permitted area as it was when it arrived.
    pub area: AreaCheck,
    /// Where the supervisee was supervised when it arrived (transfers move people).
    pub jurisdiction: Jurisdiction,
    pub note: String,
    /// Fingerprint of the submitted content (see `request::fingerprint`).
    pub fingerprint: Vec<u8>,
}

/// Why a device time falls outside `[now - sync_window, now + max_future]`; the text
/// describes the `device_time` field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeviceTimeError {
    #[error(
        "is in the future (more than {} seconds ahead of the service clock)",
        .max_future.num_seconds()
    )]
    Future { max_future: Duration },
    #[error("is older than the {} sync window", window_name(*.sync_window))]
    TooOld { sync_window: Duration },
}

/// "72-hour" for whole hours, "90-second" otherwise.
fn window_name(window: Duration) -> String {
    let seconds = window.num_seconds();
    if seconds % 3600 == 0 {
        format!("{}-hour", seconds / 3600)
    } else {
        format!("{seconds}-second")
    }
}

/// Checks the device time against the window `[now - sync_window, now + max_future]`.
pub fn check_device_time(
    device_time: DateTime<Utc>,
    now: DateTime<Utc>,
    rules: &Rules,
) -> Result<(), DeviceTimeError> {
    if device_time > now + rules.max_future {
        return Err(DeviceTimeError::Future {
            max_future: rules.max_future,
        });
    }
    if device_time < now - rules.sync_window {
        return Err(DeviceTimeError::TooOld {
            sync_window: rules.sync_window,
        });
    }
    Ok(())
}

/// Why a check-in that passed validation is not stored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    /// The id is taken by a check-in of other content: not a retry, a conflicting reuse.
    #[error("checkin_id is already used by a different check-in")]
    IdReused,
    /// The projection may trail a fresh registration by a moment: the caller retries.
    #[error("supervisee is not known to the check-in service (unknown, or just registered: retry shortly)")]
    UnknownSupervisee,
    #[error("supervisee is not under active supervision (status {0})")]
    NotUnderSupervision(SuperviseeStatus),
    /// The caller supervises the person neither now nor when the check-in was captured, as
    /// far as this service knows (a transfer to the caller may not have reached it yet).
    #[error("supervisee is not in the caller's jurisdiction")]
    OutsideJurisdiction,
}

impl From<RecordError> for ServiceError {
    fn from(error: RecordError) -> Self {
        match error {
            RecordError::IdReused => ServiceError::conflict(error.to_string()),
            RecordError::UnknownSupervisee | RecordError::NotUnderSupervision(_) => {
                ServiceError::precondition(error.to_string())
            }
            RecordError::OutsideJurisdiction => ServiceError::denied(error.to_string()),
        }
    }
}

/// A check-in whose id is already stored is a retry when its content is the same (the
/// stored check-in is the answer, whatever has changed since); otherwise the id is reused.
pub fn check_retry(stored: &Checkin, fingerprint: &[u8]) -> Result<(), RecordError> {
    if stored.fingerprint.as_slice() == fingerprint {
        Ok(())
    } else {
        Err(RecordError::IdReused)
    }
}

/// Whether `status` takes check-ins (see [`SuperviseeStatus::accepts_checkins`]).
pub fn check_under_supervision(status: SuperviseeStatus) -> Result<(), RecordError> {
    if status.accepts_checkins() {
        Ok(())
    } else {
        Err(RecordError::NotUnderSupervision(status))
    }
}

/// The check-in to store for `valid`, arriving at `now` for a supervisee supervised in
/// `jurisdiction` whose permitted area is `circles` (not consulted without a position).
pub fn assess(
    valid: ValidCheckin,
    jurisdiction: Jurisdiction,
    circles: &[Circle],
    now: DateTime<Utc>,
    rules: &Rules,
    fingerprint: [u8; 32],
) -> Checkin {
    let area = valid
        .position
        .map_or(AreaCheck::INSIDE, |position| check_area(&position, circles));
    Checkin {
        identity_verified: valid.identity.is_verified(rules.face_match_threshold),
        checkin_id: valid.checkin_id,
        supervisee_id: valid.supervisee_id,
        method: valid.method,
        recording_officer_id: valid.recording_officer_id,
        device_time: valid.device_time,
        received_at: now,
        position: valid.position,
        identity: valid.identity,
        captured_offline: valid.captured_offline,
        area,
        jurisdiction,
        note: valid.note,
        fingerprint: fingerprint.to_vec(),
    }
}

/// Values the unit tests of every layer share.
#[cfg(test)]
pub(crate) mod fixtures {
    use chrono::{DateTime, Utc};

    use super::Jurisdiction;

    /// The tests' "now": a fixed instant, so windows and deadlines are exact.
    pub fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-26T08:00:00Z")
            .map(|time| time.with_timezone(&Utc))
            .unwrap_or_default()
    }

    /// A township of the demo directory and its county.
    pub fn jurisdiction() -> Jurisdiction {
        Jurisdiction {
            township_code: "620702001".into(),
            county_code: "620702".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        fixtures::{jurisdiction, now},
        *,
    };

    #[test]
    fn device_time_window_edges() {
        let rules = Rules::default();
        let ok = |time| check_device_time(time, now(), &rules).is_ok();
        assert!(ok(now()));
        assert!(ok(now() + Duration::seconds(300)));
        assert!(!ok(now() + Duration::seconds(301)));
        assert!(ok(now() - Duration::hours(72)));
        assert!(!ok(now() - Duration::hours(72) - Duration::seconds(1)));
        let narrow = Rules {
            sync_window: Duration::hours(1),
            ..Rules::default()
        };
        assert!(check_device_time(now() - Duration::hours(2), now(), &narrow).is_err());
    }

    #[test]
    fn device_time_errors_describe_the_window() {
        let rules = Rules::default();
        let future = check_device_time(now() + Duration::hours(1), now(), &rules);
        assert_eq!(
            future.map_err(|error| error.to_string()),
            Err("is in the future (more than 300 seconds ahead of the service clock)".to_owned())
        );
        let old = check_device_time(now() - Duration::hours(73), now(), &rules);
        assert_eq!(
            old.map_err(|error| error.to_string()),
            Err("is older than the 72-hour sync window".to_owned())
        );
        let odd = Rules {
            sync_window: Duration::seconds(90),
            ..Rules::default()
        };
        let old = check_device_time(now() - Duration::hours(1), now(), &odd);
        assert_eq!(
            old.map_err(|error| error.to_string()),
            Err("is older than the 90-second sync window".to_owned())
        );
    }

    #[test]
    fn identity_threshold_is_inclusive() {
        let face = |score| Identity::FaceMatch { score };
        assert!(face(0.8).is_verified(0.8));
        assert!(!face(0.79).is_verified(0.8));
        assert!(
            Identity::Manual {
                officer_id: "o".into(),
                note: String::new()
            }
            .is_verified(0.99)
        );
    }

    #[test]
    fn only_active_and_absconded_supervisees_check_in() {
        for &status in SuperviseeStatus::ALL {
            let expected = matches!(status, SuperviseeStatus::Active | SuperviseeStatus::Absconded);
            assert_eq!(status.accepts_checkins(), expected, "{status:?}");
            assert_eq!(check_under_supervision(status).is_ok(), expected, "{status:?}");
            assert_eq!(SuperviseeStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(SuperviseeStatus::from_proto(0), None);
        assert_eq!(
            check_under_supervision(SuperviseeStatus::Suspended).map_err(|error| error.to_string()),
            Err("supervisee is not under active supervision (status suspended)".to_owned())
        );
        for &method in Method::ALL {
            assert_eq!(Method::from_proto(method.to_proto() as i32), Some(method));
            assert_eq!(Method::parse(method.as_str()), Some(method));
        }
        assert_eq!(Method::from_proto(0), None);
    }

    fn valid_checkin(position: Option<Position>, identity: Identity) -> ValidCheckin {
        ValidCheckin {
            checkin_id: Uuid::now_v7(),
            supervisee_id: Uuid::now_v7(),
            method: Method::HomeVisit,
            recording_officer_id: "officer-1".into(),
            device_time: now() - Duration::minutes(10),
            position,
            identity,
            captured_offline: false,
            note: String::new(),
        }
    }

    #[test]
    fn assessment_judges_identity_and_area_on_arrival() {
        let far_away = Position {
            latitude: 30.0,
            longitude: 100.0,
            accuracy_m: 10.0,
        };
        let circles = [Circle {
            latitude: 38.0,
            longitude: 100.0,
            radius_m: 1_000.0,
        }];
        let valid = valid_checkin(Some(far_away), Identity::FaceMatch { score: 0.5 });
        let checkin = assess(
            valid.clone(),
            jurisdiction(),
            &circles,
            now(),
            &Rules::default(),
            [7; 32],
        );
        assert!(checkin.area.out_of_area);
        assert!(!checkin.identity_verified, "a weak face match proves nothing");
        assert_eq!(checkin.received_at, now());
        assert_eq!(checkin.fingerprint, vec![7; 32]);
        assert_eq!(check_retry(&checkin, &[7; 32]), Ok(()));
        assert_eq!(check_retry(&checkin, &[8; 32]), Err(RecordError::IdReused));

        // A phone verification has no position: never out of area.
        let phone = valid_checkin(None, Identity::FaceMatch { score: 0.9 });
        let checkin = assess(phone, jurisdiction(), &circles, now(), &Rules::default(), [0; 32]);
        assert_eq!(checkin.area, AreaCheck::INSIDE);
        assert!(checkin.identity_verified);
    }

    #[test]
    fn record_errors_have_their_kinds() {
        assert!(matches!(
            ServiceError::from(RecordError::IdReused),
            ServiceError::Conflict(_)
        ));
        assert!(matches!(
            ServiceError::from(RecordError::UnknownSupervisee),
            ServiceError::FailedPrecondition(_)
        ));
        assert!(matches!(
            ServiceError::from(NoPermittedArea),
            ServiceError::NotFound(_)
        ));
    }
}
