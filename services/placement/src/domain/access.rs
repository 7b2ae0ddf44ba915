//! Who may read and manage what. Bases, candidates and their lists follow the kit's
//! jurisdiction rule ([`Caller::ensure_access`]); the rules here are the placement
//! service's own: openings are read county-wide, and a placement is managed from both ends.

use mesh_kit::{
    auth::{Caller, Role, SUPERVISION_ROLES},
    error::ServiceError,
};

/// Roles that work with placements (prisons do not).
pub const MANAGERS: &[Role] = SUPERVISION_ROLES;

/// The caller may not touch this record; becomes `PermissionDenied`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("outside the caller's jurisdiction")]
pub struct OutsideJurisdiction;

impl From<OutsideJurisdiction> for ServiceError {
    fn from(error: OutsideJurisdiction) -> Self {
        ServiceError::denied(error.to_string())
    }
}

/// Whether the caller may read openings of a county: openings are no personal data, and
/// every office of a county may propose its people for any opening in it, so officers and
/// township offices see their whole county; county bureaus theirs; admins all.
pub fn ensure_reads_county(caller: &Caller, county_code: &str) -> Result<(), OutsideJurisdiction> {
    let allowed = match caller.role {
        Role::Admin | Role::System => true,
        Role::Officer | Role::TownshipOffice | Role::CountyBureau => {
            caller.county.as_deref() == Some(county_code)
        }
        Role::Prison => false,
    };
    if allowed { Ok(()) } else { Err(OutsideJurisdiction) }
}

/// Placements are managed by the offices responsible for the candidate (the placement's
/// jurisdiction, `(township, county)`), and — to record the employer's answer and the work
/// itself — by those of the base.
pub fn ensure_placement_access(
    caller: &Caller,
    candidate_side: (&str, &str),
    base_side: (&str, &str),
) -> Result<(), OutsideJurisdiction> {
    if caller.can_access(candidate_side.0, candidate_side.1) || caller.can_access(base_side.0, base_side.1) {
        Ok(())
    } else {
        Err(OutsideJurisdiction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, township: Option<&str>, county: Option<&str>) -> Caller {
        Caller::new("someone", role, township, county)
    }

    #[test]
    fn openings_are_readable_county_wide_but_not_by_prisons() {
        let officer = caller(Role::Officer, Some("620702001"), Some("620702"));
        assert!(ensure_reads_county(&officer, "620702").is_ok());
        assert!(ensure_reads_county(&officer, "620721").is_err());
        assert!(ensure_reads_county(&caller(Role::Admin, None, None), "620721").is_ok());
        assert!(ensure_reads_county(&caller(Role::Prison, None, None), "620702").is_err());
    }

    #[test]
    fn placements_are_managed_from_the_candidates_and_the_bases_side() {
        let officer = caller(Role::Officer, Some("620702001"), Some("620702"));
        let home = ("620702001", "620702");
        let neighbour = ("620702005", "620702");
        assert!(ensure_placement_access(&officer, home, neighbour).is_ok());
        assert!(ensure_placement_access(&officer, neighbour, home).is_ok());
        assert_eq!(
            ensure_placement_access(&officer, neighbour, neighbour),
            Err(OutsideJurisdiction)
        );
    }
}
