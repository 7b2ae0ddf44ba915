//! The check-in service's domain rules as pure functions (the clock is passed in, never
//! read): validation of a submitted check-in and its device-time window, identity
//! verification, the permitted-area (geofence) test, validation of permitted areas, the
//! content fingerprint that makes retries idempotent, and the registry snapshot projection.

use chrono::{DateTime, Duration, Utc};
use mesh_kit::{error::FieldViolations, proto_time::from_timestamp};
use mesh_proto::{checkin as pb, registry as registry_pb};
use prost::Message;
use sha2::{Digest, Sha256};
use tonic::Status;
use uuid::Uuid;

/// Most check-ins one offline batch may carry (bounded request work).
pub const MAX_BATCH_ITEMS: usize = 500;
/// Longest officer id, in characters (same bound as the registry's).
pub const MAX_OFFICER_ID_CHARS: usize = 64;
/// Longest free-text remark on a check-in, in characters.
pub const MAX_NOTE_CHARS: usize = 500;
/// Longest note of a manual identity verification, in characters.
pub const MAX_MANUAL_NOTE_CHARS: usize = 200;
/// Most circles in one permitted area.
pub const MAX_AREA_CIRCLES: usize = 20;
/// Smallest and largest permitted-area radius, in metres. A circle smaller than a phone's
/// usual GPS error flags honest check-ins; one larger than a county is no fence at all.
pub const MIN_RADIUS_M: f64 = 50.0;
pub const MAX_RADIUS_M: f64 = 100_000.0;
/// Mean Earth radius (IUGG), metres: haversine's error is well under the GPS accuracy.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// How a check-in was made, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    HomeVisit,
    OfficeReport,
    PhoneVerification,
    AppSelfCheckin,
}

impl Method {
    pub const ALL: &'static [Method] = &[
        Method::HomeVisit,
        Method::OfficeReport,
        Method::PhoneVerification,
        Method::AppSelfCheckin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::HomeVisit => "home_visit",
            Method::OfficeReport => "office_report",
            Method::PhoneVerification => "phone_verification",
            Method::AppSelfCheckin => "app_self_checkin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|method| method.as_str() == text)
    }

    pub fn to_proto(self) -> pb::CheckinMethod {
        match self {
            Method::HomeVisit => pb::CheckinMethod::HomeVisit,
            Method::OfficeReport => pb::CheckinMethod::OfficeReport,
            Method::PhoneVerification => pb::CheckinMethod::PhoneVerification,
            Method::AppSelfCheckin => pb::CheckinMethod::AppSelfCheckin,
        }
    }

    /// From the wire value; `None` for UNSPECIFIED or unknown numbers.
    pub fn from_proto(value: i32) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|method| method.to_proto() as i32 == value)
    }

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

/// A supervisee's status as projected from the registry's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuperviseeStatus {
    PendingReportIn,
    Active,
    Suspended,
    Absconded,
    Terminated,
    Revoked,
    Deceased,
}

impl SuperviseeStatus {
    pub const ALL: &'static [SuperviseeStatus] = &[
        SuperviseeStatus::PendingReportIn,
        SuperviseeStatus::Active,
        SuperviseeStatus::Suspended,
        SuperviseeStatus::Absconded,
        SuperviseeStatus::Terminated,
        SuperviseeStatus::Revoked,
        SuperviseeStatus::Deceased,
    ];

    /// The registry's stored names, so both databases read alike.
    pub fn as_str(self) -> &'static str {
        match self {
            SuperviseeStatus::PendingReportIn => "pending_report_in",
            SuperviseeStatus::Active => "active",
            SuperviseeStatus::Suspended => "suspended",
            SuperviseeStatus::Absconded => "absconded",
            SuperviseeStatus::Terminated => "terminated",
            SuperviseeStatus::Revoked => "revoked",
            SuperviseeStatus::Deceased => "deceased",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|status| status.as_str() == text)
    }

    pub fn from_proto(value: i32) -> Option<Self> {
        use registry_pb::SuperviseeStatus as Wire;
        Some(match Wire::try_from(value).ok()? {
            Wire::PendingReportIn => SuperviseeStatus::PendingReportIn,
            Wire::Active => SuperviseeStatus::Active,
            Wire::Suspended => SuperviseeStatus::Suspended,
            Wire::Absconded => SuperviseeStatus::Absconded,
            Wire::Terminated => SuperviseeStatus::Terminated,
            Wire::Revoked => SuperviseeStatus::Revoked,
            Wire::Deceased => SuperviseeStatus::Deceased,
            Wire::Unspecified => return None,
        })
    }

    /// Whether check-ins are taken. An absconded person checking in is contact restored,
    /// which risk-alert must hear about; before report-in, while suspended (e.g. in
    /// custody) or after the supervision ended there is nobody to check in.
    pub fn accepts_checkins(self) -> bool {
        matches!(self, SuperviseeStatus::Active | SuperviseeStatus::Absconded)
    }
}

/// Supervision level as projected (kept for the check-in schedule; not used for rules here).
fn level_name(value: i32) -> Option<&'static str> {
    use registry_pb::SupervisionLevel as Wire;
    match Wire::try_from(value).ok()? {
        Wire::Strict => Some("strict"),
        Wire::Normal => Some("normal"),
        Wire::Lenient => Some("lenient"),
        Wire::Unspecified => None,
    }
}

/// What the check-in service keeps about a supervisee, from a registry snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectedSupervisee {
    pub id: Uuid,
    pub name: String,
    pub township_code: String,
    pub county_code: String,
    pub status: SuperviseeStatus,
    pub level: &'static str,
    pub version: i64,
}

/// Reads a registry snapshot; an error means the event can never be applied.
pub fn project_snapshot(snapshot: &registry_pb::SuperviseeSnapshot) -> Result<ProjectedSupervisee, String> {
    let id = snapshot
        .supervisee_id
        .parse()
        .map_err(|_| format!("supervisee_id {:?} is not a UUID", snapshot.supervisee_id))?;
    let jurisdiction = snapshot
        .jurisdiction
        .as_ref()
        .filter(|j| !j.township_code.is_empty() && !j.county_code.is_empty())
        .ok_or("snapshot without a jurisdiction")?;
    let status = SuperviseeStatus::from_proto(snapshot.status)
        .ok_or_else(|| format!("unknown supervisee status {}", snapshot.status))?;
    let level =
        level_name(snapshot.level).ok_or_else(|| format!("unknown supervision level {}", snapshot.level))?;
    Ok(ProjectedSupervisee {
        id,
        name: snapshot.name.clone(),
        township_code: jurisdiction.township_code.clone(),
        county_code: jurisdiction.county_code.clone(),
        status,
        level,
        version: snapshot.version,
    })
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

/// A check-in that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidCheckin {
    pub checkin_id: Uuid,
    pub supervisee_id: Uuid,
    pub method: Method,
    pub recording_officer_id: String,
    pub device_time: DateTime<Utc>,
    pub position: Option<Position>,
    pub identity: Identity,
    pub captured_offline: bool,
    pub note: String,
}

/// Checks the device time against the window `[now - sync_window, now + max_future]`.
pub fn check_device_time(
    device_time: DateTime<Utc>,
    now: DateTime<Utc>,
    rules: &Rules,
) -> Result<(), String> {
    if device_time > now + rules.max_future {
        return Err(format!(
            "is in the future (more than {} seconds ahead of the service clock)",
            rules.max_future.num_seconds()
        ));
    }
    if device_time < now - rules.sync_window {
        let window = rules.sync_window.num_seconds();
        let window = if window % 3600 == 0 {
            format!("{}-hour", window / 3600)
        } else {
            format!("{window}-second")
        };
        return Err(format!("is older than the {window} sync window"));
    }
    Ok(())
}

/// Whether a latitude/longitude pair is a valid WGS84 position (NaN and infinities fail).
fn check_coordinates(violations: &mut FieldViolations, field: &str, latitude: f64, longitude: f64) {
    if !(-90.0..=90.0).contains(&latitude) {
        violations.add(&format!("{field}.latitude"), "must be between -90 and 90 degrees");
    }
    if !(-180.0..=180.0).contains(&longitude) {
        violations.add(
            &format!("{field}.longitude"),
            "must be between -180 and 180 degrees",
        );
    }
}

/// Checks optional free text: at most `max` characters, no control characters other than
/// line breaks. Returns the trimmed value.
fn check_optional_text(violations: &mut FieldViolations, field: &str, value: &str, max: usize) -> String {
    let value = value.trim();
    if value.chars().count() > max {
        violations.add(field, format!("must be at most {max} characters"));
    } else if value.chars().any(|c| c.is_control() && c != '\n') {
        violations.add(field, "must not contain control characters");
    }
    value.to_owned()
}

fn parse_uuid(violations: &mut FieldViolations, field: &str, value: &str) -> Option<Uuid> {
    match value.trim().parse::<Uuid>() {
        Ok(id) if !id.is_nil() => Some(id),
        _ => {
            violations.add(field, "must be a UUID");
            None
        }
    }
}

/// Validates a submitted check-in at `now`, naming every invalid field as `prefix` + its
/// path within `NewCheckin` (RecordCheckin passes `"checkin."`, batch items `""`).
/// `officer_subject` is the caller's token subject when the caller is an officer: officers
/// record check-ins only under their own id.
pub fn validate_checkin(
    new: &pb::NewCheckin,
    prefix: &str,
    now: DateTime<Utc>,
    rules: &Rules,
    officer_subject: Option<&str>,
) -> Result<ValidCheckin, Status> {
    let field = |name: &str| format!("{prefix}{name}");
    let mut violations = FieldViolations::new();
    let checkin_id = parse_uuid(&mut violations, &field("checkin_id"), &new.checkin_id);
    let supervisee_id = parse_uuid(&mut violations, &field("supervisee_id"), &new.supervisee_id);
    let method = Method::from_proto(new.method);
    if method.is_none() {
        violations.add(
            &field("method"),
            "must be home visit, office report, phone verification or app self check-in",
        );
    }

    let mut recording_officer_id = new.recording_officer_id.trim().to_owned();
    match method {
        Some(method) if method.is_recorded_by_officer() => {
            if recording_officer_id.is_empty() {
                violations.add(
                    &field("recording_officer_id"),
                    "is required when an officer records the check-in",
                );
            } else if recording_officer_id.chars().count() > MAX_OFFICER_ID_CHARS
                || recording_officer_id.chars().any(char::is_control)
            {
                violations.add(
                    &field("recording_officer_id"),
                    format!("must be at most {MAX_OFFICER_ID_CHARS} printable characters"),
                );
            } else if let Some(subject) = officer_subject
                && subject != recording_officer_id
            {
                violations.add(
                    &field("recording_officer_id"),
                    "must be the calling officer's own id",
                );
            }
        }
        Some(_) => {
            // A self check-in has no recording officer. A client that names one anyway (the
            // app running on an officer's phone) is tolerated, but the id is not kept:
            // stored check-ins and events promise an empty officer for self check-ins.
            if recording_officer_id.chars().count() > MAX_OFFICER_ID_CHARS
                || recording_officer_id.chars().any(char::is_control)
            {
                violations.add(
                    &field("recording_officer_id"),
                    format!("must be at most {MAX_OFFICER_ID_CHARS} printable characters"),
                );
            }
            recording_officer_id.clear();
        }
        None => {}
    }

    let device_time = match new.device_time.as_ref() {
        None => {
            violations.add(&field("device_time"), "is required");
            None
        }
        Some(timestamp) => match from_timestamp(timestamp) {
            None => {
                violations.add(&field("device_time"), "must be a valid time");
                None
            }
            Some(time) => match check_device_time(time, now, rules) {
                Ok(()) => Some(time),
                Err(description) => {
                    violations.add(&field("device_time"), description);
                    None
                }
            },
        },
    };

    let position = match &new.position {
        None => {
            if method.is_some_and(Method::requires_position) {
                violations.add(&field("position"), "is required for this check-in method");
            }
            None
        }
        Some(point) => {
            check_coordinates(
                &mut violations,
                &field("position"),
                point.latitude,
                point.longitude,
            );
            if !(point.accuracy_m.is_finite() && point.accuracy_m >= 0.0) {
                violations.add(
                    &field("position.accuracy_m"),
                    "must be a finite number of metres, at least 0",
                );
            }
            Some(Position {
                latitude: point.latitude,
                longitude: point.longitude,
                accuracy_m: point.accuracy_m,
            })
        }
    };

    use pb::identity_verification::Verification;
    let identity = match new
        .identity_verification
        .as_ref()
        .and_then(|identity| identity.verification.as_ref())
    {
        None => {
            violations.add(
                &field("identity_verification"),
                "is required: a face match or a manual verification",
            );
            None
        }
        Some(Verification::FaceMatch(face)) => {
            if !(0.0..=1.0).contains(&face.score) {
                violations.add(
                    &field("identity_verification.face_match.score"),
                    "must be between 0 and 1",
                );
            }
            Some(Identity::FaceMatch { score: face.score })
        }
        Some(Verification::Manual(manual)) => {
            if method == Some(Method::AppSelfCheckin) {
                violations.add(
                    &field("identity_verification"),
                    "an app self check-in must be verified by face match",
                );
            }
            let officer_id = manual.officer_id.trim().to_owned();
            if officer_id.is_empty()
                || officer_id.chars().count() > MAX_OFFICER_ID_CHARS
                || officer_id.chars().any(char::is_control)
            {
                violations.add(
                    &field("identity_verification.manual.officer_id"),
                    format!("must be 1 to {MAX_OFFICER_ID_CHARS} printable characters"),
                );
            }
            let note = check_optional_text(
                &mut violations,
                &field("identity_verification.manual.note"),
                &manual.note,
                MAX_MANUAL_NOTE_CHARS,
            );
            Some(Identity::Manual { officer_id, note })
        }
    };
    let note = check_optional_text(&mut violations, &field("note"), &new.note, MAX_NOTE_CHARS);
    violations.into_result()?;
    match (checkin_id, supervisee_id, method, device_time, identity) {
        (Some(checkin_id), Some(supervisee_id), Some(method), Some(device_time), Some(identity)) => {
            Ok(ValidCheckin {
                checkin_id,
                supervisee_id,
                method,
                recording_officer_id,
                device_time,
                position,
                identity,
                captured_offline: new.captured_offline,
                note,
            })
        }
        _ => Err(Status::internal("validation inconsistency")),
    }
}

/// SHA-256 over the submitted check-in in a canonical form: ids in their canonical UUID
/// spelling and text trimmed, then prost-encoded (deterministic for equal messages). Equal
/// fingerprints under one id mean a retry; different ones a conflicting reuse of the id.
pub fn content_fingerprint(new: &pb::NewCheckin) -> [u8; 32] {
    let canonical_id = |value: &str| {
        value
            .trim()
            .parse::<Uuid>()
            .map(|id| id.to_string())
            .unwrap_or_else(|_| value.to_owned())
    };
    let mut canonical = new.clone();
    canonical.checkin_id = canonical_id(&new.checkin_id);
    canonical.supervisee_id = canonical_id(&new.supervisee_id);
    canonical.recording_officer_id = new.recording_officer_id.trim().to_owned();
    canonical.note = new.note.trim().to_owned();
    if let Some(pb::identity_verification::Verification::Manual(manual)) = canonical
        .identity_verification
        .as_mut()
        .and_then(|identity| identity.verification.as_mut())
    {
        manual.officer_id = manual.officer_id.trim().to_owned();
        manual.note = manual.note.trim().to_owned();
    }
    Sha256::digest(canonical.encode_to_vec()).into()
}

/// One circle of a permitted area.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Circle {
    pub latitude: f64,
    pub longitude: f64,
    pub radius_m: f64,
}

/// Outcome of the permitted-area test for one position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AreaCheck {
    pub out_of_area: bool,
    /// Metres beyond the edge of the nearest circle; 0 unless out of area.
    pub distance_outside_m: f64,
}

/// Great-circle distance in metres between two WGS84 positions (haversine).
pub fn haversine_m(from_lat: f64, from_lon: f64, to_lat: f64, to_lon: f64) -> f64 {
    let (phi1, phi2) = (from_lat.to_radians(), to_lat.to_radians());
    let d_phi = (to_lat - from_lat).to_radians();
    let d_lambda = (to_lon - from_lon).to_radians();
    let a = (d_phi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (d_lambda / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

/// Whether `position` lies outside the area made of `circles`. The benefit of the doubt
/// goes to the supervisee: out of area only when the position is beyond every circle's
/// edge by more than the device's reported accuracy. No circles means no fence.
pub fn check_area(position: &Position, circles: &[Circle]) -> AreaCheck {
    let beyond_nearest_edge = circles
        .iter()
        .map(|circle| {
            haversine_m(
                position.latitude,
                position.longitude,
                circle.latitude,
                circle.longitude,
            ) - circle.radius_m
        })
        .fold(f64::INFINITY, f64::min);
    if beyond_nearest_edge.is_finite() && beyond_nearest_edge > position.accuracy_m {
        AreaCheck {
            out_of_area: true,
            distance_outside_m: beyond_nearest_edge,
        }
    } else {
        AreaCheck {
            out_of_area: false,
            distance_outside_m: 0.0,
        }
    }
}

/// Validates the circles of a permitted area, naming each bad one (`circles[2].radius_m`).
pub fn validate_circles(circles: &[pb::GeoCircle]) -> Result<Vec<Circle>, Status> {
    if circles.is_empty() || circles.len() > MAX_AREA_CIRCLES {
        return Err(mesh_kit::error::invalid_field(
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
                check_coordinates(
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

#[cfg(test)]
mod tests {
    use mesh_kit::{error::violated_fields, proto_time::to_timestamp};
    use mesh_proto::common;

    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-26T08:00:00Z")
            .map(|time| time.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn home_visit() -> pb::NewCheckin {
        pb::NewCheckin {
            checkin_id: "0193a5c4-0000-7000-8000-000000000001".into(),
            supervisee_id: "0193a5c4-0000-7000-8000-0000000000aa".into(),
            method: pb::CheckinMethod::HomeVisit as i32,
            recording_officer_id: "officer-1".into(),
            device_time: Some(to_timestamp(now() - Duration::minutes(10))),
            position: Some(common::GeoPoint {
                latitude: 38.93,
                longitude: 100.45,
                accuracy_m: 12.0,
            }),
            identity_verification: Some(pb::IdentityVerification {
                verification: Some(pb::identity_verification::Verification::Manual(
                    pb::ManualVerification {
                        officer_id: "officer-1".into(),
                        note: "known in person".into(),
                    },
                )),
            }),
            captured_offline: false,
            note: "at home".into(),
        }
    }

    fn fields_of(new: &pb::NewCheckin, officer: Option<&str>) -> Vec<String> {
        match validate_checkin(new, "checkin.", now(), &Rules::default(), officer) {
            Ok(_) => Vec::new(),
            Err(status) => violated_fields(&status),
        }
    }

    #[test]
    fn a_complete_home_visit_is_valid() {
        let valid =
            validate_checkin(&home_visit(), "", now(), &Rules::default(), Some("officer-1")).expect("valid");
        assert_eq!(valid.method, Method::HomeVisit);
        assert_eq!(valid.recording_officer_id, "officer-1");
        assert!(valid.identity.is_verified(0.8));
        assert_eq!(valid.position.map(|p| p.accuracy_m), Some(12.0));
    }

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
    fn each_bad_field_is_named() {
        type Mutation = fn(&mut pb::NewCheckin);
        let cases: Vec<(&str, Mutation)> = vec![
            ("checkin.checkin_id", |c| c.checkin_id = "not-a-uuid".into()),
            ("checkin.checkin_id", |c| c.checkin_id = Uuid::nil().to_string()),
            ("checkin.supervisee_id", |c| c.supervisee_id.clear()),
            ("checkin.method", |c| c.method = 0),
            ("checkin.method", |c| c.method = 99),
            ("checkin.recording_officer_id", |c| c.recording_officer_id.clear()),
            ("checkin.device_time", |c| c.device_time = None),
            ("checkin.device_time", |c| {
                c.device_time = Some(to_timestamp(now() + Duration::minutes(6)))
            }),
            ("checkin.device_time", |c| {
                c.device_time = Some(to_timestamp(now() - Duration::hours(73)))
            }),
            ("checkin.device_time", |c| {
                c.device_time = Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: -1,
                })
            }),
            ("checkin.position", |c| c.position = None),
            ("checkin.position.latitude", |c| {
                if let Some(p) = c.position.as_mut() {
                    p.latitude = 90.5
                }
            }),
            ("checkin.position.latitude", |c| {
                if let Some(p) = c.position.as_mut() {
                    p.latitude = f64::NAN
                }
            }),
            ("checkin.position.longitude", |c| {
                if let Some(p) = c.position.as_mut() {
                    p.longitude = -180.1
                }
            }),
            ("checkin.position.accuracy_m", |c| {
                if let Some(p) = c.position.as_mut() {
                    p.accuracy_m = -1.0
                }
            }),
            ("checkin.position.accuracy_m", |c| {
                if let Some(p) = c.position.as_mut() {
                    p.accuracy_m = f64::INFINITY
                }
            }),
            ("checkin.identity_verification", |c| {
                c.identity_verification = None
            }),
            ("checkin.identity_verification.face_match.score", |c| {
                c.identity_verification = Some(pb::IdentityVerification {
                    verification: Some(pb::identity_verification::Verification::FaceMatch(
                        pb::FaceMatch { score: 1.2 },
                    )),
                })
            }),
            ("checkin.identity_verification.manual.officer_id", |c| {
                if let Some(pb::identity_verification::Verification::Manual(m)) = c
                    .identity_verification
                    .as_mut()
                    .and_then(|i| i.verification.as_mut())
                {
                    m.officer_id = " ".into()
                }
            }),
            ("checkin.identity_verification.manual.note", |c| {
                if let Some(pb::identity_verification::Verification::Manual(m)) = c
                    .identity_verification
                    .as_mut()
                    .and_then(|i| i.verification.as_mut())
                {
                    m.note = "x".repeat(201)
                }
            }),
            ("checkin.note", |c| c.note = "长".repeat(501)),
            ("checkin.note", |c| c.note = "a\u{7}b".into()),
        ];
        for (field, mutate) in cases {
            let mut new = home_visit();
            mutate(&mut new);
            assert_eq!(fields_of(&new, None), vec![field.to_owned()], "{field}");
        }
    }

    #[test]
    fn method_specific_rules() {
        // A phone verification may have no position.
        let mut phone = home_visit();
        phone.method = pb::CheckinMethod::PhoneVerification as i32;
        phone.position = None;
        assert!(fields_of(&phone, None).is_empty());

        // An app self check-in needs a face match; a named officer is tolerated, not kept.
        let mut app = home_visit();
        app.method = pb::CheckinMethod::AppSelfCheckin as i32;
        assert_eq!(fields_of(&app, None), ["checkin.identity_verification"]);
        app.identity_verification = Some(pb::IdentityVerification {
            verification: Some(pb::identity_verification::Verification::FaceMatch(
                pb::FaceMatch { score: 0.5 },
            )),
        });
        let valid = validate_checkin(&app, "", now(), &Rules::default(), Some("officer-2")).expect("valid");
        assert!(
            !valid.identity.is_verified(0.8),
            "a weak face match proves nothing"
        );
        assert_eq!(
            valid.recording_officer_id, "",
            "self check-ins have no recording officer"
        );

        // Officers record under their own id only.
        assert_eq!(
            fields_of(&home_visit(), Some("officer-2")),
            ["checkin.recording_officer_id"]
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
    fn fingerprint_ignores_spelling_but_not_content() {
        let original = content_fingerprint(&home_visit());
        let mut respelled = home_visit();
        respelled.checkin_id = respelled.checkin_id.to_uppercase();
        respelled.note = "  at home ".into();
        assert_eq!(content_fingerprint(&respelled), original);
        let mut moved = home_visit();
        if let Some(p) = moved.position.as_mut() {
            p.latitude += 0.001;
        }
        assert_ne!(content_fingerprint(&moved), original);
        let mut later = home_visit();
        later.device_time = Some(to_timestamp(now()));
        assert_ne!(content_fingerprint(&later), original);
    }

    #[test]
    fn haversine_matches_known_distances() {
        // One degree of latitude is about 111.2 km.
        let degree = haversine_m(38.0, 100.0, 39.0, 100.0);
        assert!((degree - 111_195.0).abs() < 50.0, "{degree}");
        assert_eq!(haversine_m(38.93, 100.45, 38.93, 100.45), 0.0);
        // Beijing to Shanghai, about 1068 km.
        let far = haversine_m(39.9042, 116.4074, 31.2304, 121.4737);
        assert!((far - 1_067_000.0).abs() < 5_000.0, "{far}");
    }

    #[test]
    fn area_check_gives_the_benefit_of_the_doubt() {
        let circles = [
            Circle {
                latitude: 38.0,
                longitude: 100.0,
                radius_m: 1_000.0,
            },
            Circle {
                latitude: 39.0,
                longitude: 100.0,
                radius_m: 5_000.0,
            },
        ];
        let at = |latitude, accuracy_m| Position {
            latitude,
            longitude: 100.0,
            accuracy_m,
        };
        // Inside the first circle.
        assert!(!check_area(&at(38.005, 0.0), &circles).out_of_area);
        // About 111 m beyond the first circle's edge: flagged with a precise accuracy,
        // not with a coarse one that covers the gap.
        let beyond = at(38.0 + 1_111.95 / 111_195.0, 10.0);
        let check = check_area(&beyond, &circles);
        assert!(check.out_of_area);
        assert!((check.distance_outside_m - 111.95).abs() < 1.0, "{check:?}");
        assert!(!check_area(&at(beyond.latitude, 200.0), &circles).out_of_area);
        // The nearest circle's edge counts: 10 km north of the second centre is 5 km out.
        let north = at(39.0 + 10_000.0 / 111_195.0, 0.0);
        let check = check_area(&north, &circles);
        assert!((check.distance_outside_m - 5_000.0).abs() < 5.0, "{check:?}");
        // No circles: no fence.
        assert_eq!(
            check_area(&north, &[]),
            AreaCheck {
                out_of_area: false,
                distance_outside_m: 0.0
            }
        );
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
        assert!(validate_circles(&[circle(38.0, 1_000.0)]).is_ok());
        let fields = |circles: &[pb::GeoCircle]| {
            validate_circles(circles)
                .err()
                .map(|status| violated_fields(&status))
                .unwrap_or_default()
        };
        assert_eq!(fields(&[]), ["circles"]);
        assert_eq!(fields(&vec![circle(38.0, 1_000.0); 21]), ["circles"]);
        assert_eq!(
            fields(&[
                circle(38.0, 1_000.0),
                circle(91.0, 10.0),
                pb::GeoCircle {
                    centre: None,
                    radius_m: 1_000.0
                }
            ]),
            [
                "circles[1].centre.latitude",
                "circles[1].radius_m",
                "circles[2].centre"
            ]
        );
        assert_eq!(fields(&[circle(38.0, f64::NAN)]), ["circles[0].radius_m"]);
    }

    #[test]
    fn only_active_and_absconded_supervisees_check_in() {
        for &status in SuperviseeStatus::ALL {
            let expected = matches!(status, SuperviseeStatus::Active | SuperviseeStatus::Absconded);
            assert_eq!(status.accepts_checkins(), expected, "{status:?}");
            assert_eq!(SuperviseeStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(SuperviseeStatus::from_proto(0), None);
        for &method in Method::ALL {
            assert_eq!(Method::from_proto(method.to_proto() as i32), Some(method));
            assert_eq!(Method::parse(method.as_str()), Some(method));
        }
    }

    #[test]
    fn snapshots_project_or_explain_why_not() {
        let snapshot = registry_pb::SuperviseeSnapshot {
            supervisee_id: "0193a5c4-0000-7000-8000-0000000000aa".into(),
            name: "测试".into(),
            level: registry_pb::SupervisionLevel::Strict as i32,
            status: registry_pb::SuperviseeStatus::Absconded as i32,
            jurisdiction: Some(mesh_proto::common::Jurisdiction {
                township_code: "620702001".into(),
                county_code: "620702".into(),
            }),
            version: 4,
            ..Default::default()
        };
        let projected = project_snapshot(&snapshot).expect("projects");
        assert_eq!(projected.status, SuperviseeStatus::Absconded);
        assert_eq!(projected.level, "strict");
        assert_eq!(projected.version, 4);
        let no_place = registry_pb::SuperviseeSnapshot {
            jurisdiction: None,
            ..snapshot.clone()
        };
        assert!(project_snapshot(&no_place).is_err());
        let bad_id = registry_pb::SuperviseeSnapshot {
            supervisee_id: "x".into(),
            ..snapshot
        };
        assert!(project_snapshot(&bad_id).is_err());
    }
}
