//! A submitted check-in (`NewCheckin`) into a [`ValidCheckin`], every bad field named, and
//! the content fingerprint that tells a retry from a conflicting reuse of its id.

use chrono::{DateTime, Utc};
use mesh_kit::{
    error::{FieldViolations, ServiceError},
    proto_time::from_timestamp,
};
use mesh_proto::{checkin as pb, common};
use pb::identity_verification::Verification;
use prost::Message;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::parse_uuid;
use crate::domain::{
    self, Identity, MAX_MANUAL_NOTE_CHARS, MAX_NOTE_CHARS, MAX_OFFICER_ID_CHARS, Method, Position, Rules,
    ValidCheckin,
};

/// Field paths of one check-in: RecordCheckin's sit under `checkin.`, batch items' at the top.
struct Fields<'a>(&'a str);

impl Fields<'_> {
    fn name(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }
}

/// Validates a submitted check-in at `now`, naming every invalid field as `prefix` + its
/// path within `NewCheckin` (RecordCheckin passes `"checkin."`, batch items `""`).
/// `officer_subject` is the caller's token subject when the caller is an officer: officers
/// record check-ins only under their own id.
pub fn checkin(
    new: &pb::NewCheckin,
    prefix: &str,
    now: DateTime<Utc>,
    rules: &Rules,
    officer_subject: Option<&str>,
) -> Result<ValidCheckin, ServiceError> {
    let fields = Fields(prefix);
    let mut violations = FieldViolations::new();
    let checkin_id = parse_uuid(&mut violations, &fields.name("checkin_id"), &new.checkin_id);
    let supervisee_id = parse_uuid(&mut violations, &fields.name("supervisee_id"), &new.supervisee_id);
    let method = Method::from_proto(new.method);
    if method.is_none() {
        violations.add(
            &fields.name("method"),
            "must be home visit, office report, phone verification or app self check-in",
        );
    }
    let recording_officer_id = recording_officer(
        &mut violations,
        &fields,
        method,
        &new.recording_officer_id,
        officer_subject,
    );
    let device_time = device_time(&mut violations, &fields, new.device_time.as_ref(), now, rules);
    let position = position(&mut violations, &fields, method, new.position.as_ref());
    let identity = identity(
        &mut violations,
        &fields,
        method,
        new.identity_verification.as_ref(),
    );
    let note = optional_text(&mut violations, &fields.name("note"), &new.note, MAX_NOTE_CHARS);
    let valid = (|| {
        Some(ValidCheckin {
            checkin_id: checkin_id?,
            supervisee_id: supervisee_id?,
            method: method?,
            recording_officer_id,
            device_time: device_time?,
            position,
            identity: identity?,
            captured_offline: new.captured_offline,
            note,
        })
    })();
    violations.complete(valid)
}

/// Whether `value` is at most `max` characters, none of them a control character.
fn printable(value: &str, max: usize) -> bool {
    value.chars().count() <= max && !value.chars().any(char::is_control)
}

/// The recording officer: required (and the caller's own id, for an officer) when an officer
/// records the check-in; empty for a self check-in.
fn recording_officer(
    violations: &mut FieldViolations,
    fields: &Fields<'_>,
    method: Option<Method>,
    value: &str,
    officer_subject: Option<&str>,
) -> String {
    let field = fields.name("recording_officer_id");
    let value = value.trim();
    let too_long = || format!("must be at most {MAX_OFFICER_ID_CHARS} printable characters");
    match method {
        Some(method) if method.is_recorded_by_officer() => {
            if value.is_empty() {
                violations.add(&field, "is required when an officer records the check-in");
            } else if !printable(value, MAX_OFFICER_ID_CHARS) {
                violations.add(&field, too_long());
            } else if let Some(subject) = officer_subject
                && subject != value
            {
                violations.add(&field, "must be the calling officer's own id");
            }
            value.to_owned()
        }
        Some(_) => {
            // A self check-in has no recording officer. A client that names one anyway (the
            // app running on an officer's phone) is tolerated, but the id is not kept:
            // stored check-ins and events promise an empty officer for self check-ins.
            if !printable(value, MAX_OFFICER_ID_CHARS) {
                violations.add(&field, too_long());
            }
            String::new()
        }
        None => value.to_owned(),
    }
}

/// The device time, required, valid and inside the window of `rules` at `now`.
fn device_time(
    violations: &mut FieldViolations,
    fields: &Fields<'_>,
    value: Option<&prost_types::Timestamp>,
    now: DateTime<Utc>,
    rules: &Rules,
) -> Option<DateTime<Utc>> {
    let field = fields.name("device_time");
    let Some(timestamp) = value else {
        violations.add(&field, "is required");
        return None;
    };
    let Some(time) = from_timestamp(timestamp) else {
        violations.add(&field, "must be a valid time");
        return None;
    };
    match domain::check_device_time(time, now, rules) {
        Ok(()) => Some(time),
        Err(outside) => {
            violations.add(&field, outside.to_string());
            None
        }
    }
}

/// The position, required unless the method proves contact without whereabouts.
fn position(
    violations: &mut FieldViolations,
    fields: &Fields<'_>,
    method: Option<Method>,
    value: Option<&common::GeoPoint>,
) -> Option<Position> {
    let Some(point) = value else {
        if method.is_some_and(Method::requires_position) {
            violations.add(&fields.name("position"), "is required for this check-in method");
        }
        return None;
    };
    check_coordinates(
        violations,
        &fields.name("position"),
        point.latitude,
        point.longitude,
    );
    if !(point.accuracy_m.is_finite() && point.accuracy_m >= 0.0) {
        violations.add(
            &fields.name("position.accuracy_m"),
            "must be a finite number of metres, at least 0",
        );
    }
    Some(Position {
        latitude: point.latitude,
        longitude: point.longitude,
        accuracy_m: point.accuracy_m,
    })
}

/// How identity was verified: a face match score, or an officer's manual check (never for
/// an app self check-in).
fn identity(
    violations: &mut FieldViolations,
    fields: &Fields<'_>,
    method: Option<Method>,
    value: Option<&pb::IdentityVerification>,
) -> Option<Identity> {
    match value.and_then(|identity| identity.verification.as_ref()) {
        None => {
            violations.add(
                &fields.name("identity_verification"),
                "is required: a face match or a manual verification",
            );
            None
        }
        Some(Verification::FaceMatch(face)) => {
            if !(0.0..=1.0).contains(&face.score) {
                violations.add(
                    &fields.name("identity_verification.face_match.score"),
                    "must be between 0 and 1",
                );
            }
            Some(Identity::FaceMatch { score: face.score })
        }
        Some(Verification::Manual(manual)) => {
            if method == Some(Method::AppSelfCheckin) {
                violations.add(
                    &fields.name("identity_verification"),
                    "an app self check-in must be verified by face match",
                );
            }
            let officer_id = manual.officer_id.trim().to_owned();
            if officer_id.is_empty() || !printable(&officer_id, MAX_OFFICER_ID_CHARS) {
                violations.add(
                    &fields.name("identity_verification.manual.officer_id"),
                    format!("must be 1 to {MAX_OFFICER_ID_CHARS} printable characters"),
                );
            }
            let note = optional_text(
                violations,
                &fields.name("identity_verification.manual.note"),
                &manual.note,
                MAX_MANUAL_NOTE_CHARS,
            );
            Some(Identity::Manual { officer_id, note })
        }
    }
}

/// Whether a latitude/longitude pair is a valid WGS84 position (NaN and infinities fail).
pub(super) fn check_coordinates(
    violations: &mut FieldViolations,
    field: &str,
    latitude: f64,
    longitude: f64,
) {
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
fn optional_text(violations: &mut FieldViolations, field: &str, value: &str, max: usize) -> String {
    let value = value.trim();
    if value.chars().count() > max {
        violations.add(field, format!("must be at most {max} characters"));
    } else if value.chars().any(|c| c.is_control() && c != '\n') {
        violations.add(field, "must not contain control characters");
    }
    value.to_owned()
}

/// SHA-256 over the submitted check-in in a canonical form: ids in their canonical UUID
/// spelling and text trimmed, then prost-encoded (deterministic for equal messages). Equal
/// fingerprints under one id mean a retry; different ones a conflicting reuse of the id.
pub fn fingerprint(new: &pb::NewCheckin) -> [u8; 32] {
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
    if let Some(Verification::Manual(manual)) = canonical
        .identity_verification
        .as_mut()
        .and_then(|identity| identity.verification.as_mut())
    {
        manual.officer_id = manual.officer_id.trim().to_owned();
        manual.note = manual.note.trim().to_owned();
    }
    Sha256::digest(canonical.encode_to_vec()).into()
}

#[cfg(test)]
pub(super) mod tests {
    use chrono::Duration;
    use mesh_kit::proto_time::to_timestamp;

    use super::*;
    use crate::domain::fixtures::now;

    /// A valid check-in (an officer's home visit), for the edge's tests.
    pub(in crate::request) fn home_visit() -> pb::NewCheckin {
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
                verification: Some(Verification::Manual(pb::ManualVerification {
                    officer_id: "officer-1".into(),
                    note: "known in person".into(),
                })),
            }),
            captured_offline: false,
            note: "at home".into(),
        }
    }

    fn fields_of(new: &pb::NewCheckin, officer: Option<&str>) -> Vec<String> {
        match checkin(new, "checkin.", now(), &Rules::default(), officer) {
            Ok(_) => Vec::new(),
            Err(ServiceError::Invalid(violations)) => violations.fields(),
            Err(other) => panic!("not a validation error: {other}"),
        }
    }

    #[test]
    fn a_complete_home_visit_is_valid() {
        let valid = checkin(&home_visit(), "", now(), &Rules::default(), Some("officer-1")).expect("valid");
        assert_eq!(valid.method, Method::HomeVisit);
        assert_eq!(valid.recording_officer_id, "officer-1");
        assert!(valid.identity.is_verified(0.8));
        assert_eq!(valid.position.map(|p| p.accuracy_m), Some(12.0));
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
                    verification: Some(Verification::FaceMatch(pb::FaceMatch { score: 1.2 })),
                })
            }),
            ("checkin.identity_verification.manual.officer_id", |c| {
                if let Some(Verification::Manual(m)) = c
                    .identity_verification
                    .as_mut()
                    .and_then(|i| i.verification.as_mut())
                {
                    m.officer_id = " ".into()
                }
            }),
            ("checkin.identity_verification.manual.note", |c| {
                if let Some(Verification::Manual(m)) = c
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
    fn the_device_time_window_is_described() {
        let mut old = home_visit();
        old.device_time = Some(to_timestamp(now() - Duration::hours(73)));
        let error = checkin(&old, "", now(), &Rules::default(), None).expect_err("too old");
        assert_eq!(error.field(), Some("device_time"));
        assert_eq!(
            error.public_message(),
            "device_time: is older than the 72-hour sync window"
        );
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
            verification: Some(Verification::FaceMatch(pb::FaceMatch { score: 0.5 })),
        });
        let valid = checkin(&app, "", now(), &Rules::default(), Some("officer-2")).expect("valid");
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
    fn several_bad_fields_are_named_in_order() {
        let mut several = home_visit();
        several.method = 0;
        several.position = Some(common::GeoPoint {
            latitude: 100.0,
            longitude: 100.0,
            accuracy_m: 1.0,
        });
        assert_eq!(
            fields_of(&several, None),
            ["checkin.method", "checkin.position.latitude"]
        );
    }

    #[test]
    fn fingerprint_ignores_spelling_but_not_content() {
        let original = fingerprint(&home_visit());
        let mut respelled = home_visit();
        respelled.checkin_id = respelled.checkin_id.to_uppercase();
        respelled.note = "  at home ".into();
        assert_eq!(fingerprint(&respelled), original);
        let mut moved = home_visit();
        if let Some(p) = moved.position.as_mut() {
            p.latitude += 0.001;
        }
        assert_ne!(fingerprint(&moved), original);
        let mut later = home_visit();
        later.device_time = Some(to_timestamp(now()));
        assert_ne!(fingerprint(&later), original);
    }
}
