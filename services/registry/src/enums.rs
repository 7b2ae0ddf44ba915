//! The registry's enumerations — category, supervision level, supervisee status — each with
//! its text as stored in `supervisees` and its protobuf value (one `stored_enum!` each).

use mesh_proto::registry as pb;

mesh_kit::stored_enum!(Category, pb::Category, {
    PublicSurveillance = "public_surveillance" => PublicSurveillance,
    Probation = "probation" => Probation,
    Parole = "parole" => Parole,
    TemporaryExecutionOutsidePrison = "temporary_execution_outside_prison" => TemporaryExecutionOutsidePrison,
});

mesh_kit::stored_enum!(Level, pb::SupervisionLevel, {
    Strict = "strict" => Strict,
    Normal = "normal" => Normal,
    Lenient = "lenient" => Lenient,
});

mesh_kit::stored_enum!(SupervisionStatus, pb::SuperviseeStatus, {
    PendingReportIn = "pending_report_in" => PendingReportIn,
    Active = "active" => Active,
    Suspended = "suspended" => Suspended,
    Absconded = "absconded" => Absconded,
    Terminated = "terminated" => Terminated,
    Revoked = "revoked" => Revoked,
    Deceased = "deceased" => Deceased,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_round_trip() {
        for &status in SupervisionStatus::ALL {
            assert_eq!(SupervisionStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                SupervisionStatus::from_proto(status.to_proto() as i32),
                Some(status)
            );
        }
        for &level in Level::ALL {
            assert_eq!(Level::parse(level.as_str()), Some(level));
        }
        for &category in Category::ALL {
            assert_eq!(Category::from_proto(category.to_proto() as i32), Some(category));
        }
        assert_eq!(SupervisionStatus::from_proto(0), None);
        assert_eq!(Level::from_proto(99), None);
    }
}
