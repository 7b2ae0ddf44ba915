//! Who may do what with a handover: the releasing prison takes the prison's steps, the
//! destination township office the township's, and reads and lists stay within the
//! caller's own prison or jurisdiction.

use mesh_kit::{
    auth::{Caller, Role},
    error::ServiceError,
    jurisdiction::Directory,
};

use super::Handover;

/// Roles acting for the releasing prison (admins may act for any prison).
pub const PRISON_SIDE: &[Role] = &[Role::Prison, Role::Admin];
/// Roles acting for the receiving township office.
pub const TOWNSHIP_SIDE: &[Role] = &[Role::Officer, Role::TownshipOffice, Role::Admin];
/// Roles that may read handovers (each within its own jurisdiction).
pub const READERS: &[Role] = &[
    Role::Prison,
    Role::Officer,
    Role::TownshipOffice,
    Role::CountyBureau,
    Role::Admin,
    Role::System,
];

/// Why the caller may not do this; every case becomes `PermissionDenied` with its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("a prison submits only its own notices (prison_id must be the caller's)")]
    ForeignNotice,
    #[error("this handover is outside the caller's jurisdiction")]
    Unreadable,
    #[error("this notice belongs to another prison")]
    AnotherPrison,
    #[error("only the releasing prison may do this")]
    NotThePrison,
    #[error("only the destination township office may do this")]
    NotTheReceivingOffice,
    #[error("outside the caller's jurisdiction")]
    OutsideScope,
}

impl From<Denied> for ServiceError {
    fn from(denied: Denied) -> Self {
        ServiceError::denied(denied.to_string())
    }
}

/// A prison submits notices in its own name only (an admin in any prison's).
pub fn ensure_own_notice(caller: &Caller, prison_id: &str) -> Result<(), Denied> {
    if caller.role == Role::Prison && caller.prison.as_deref() != Some(prison_id) {
        return Err(Denied::ForeignNotice);
    }
    Ok(())
}

/// Whether `caller` may read `handover`: the releasing prison, the destination township's
/// office and officers, the destination county's bureau, admins and mesh services.
pub fn can_read(caller: &Caller, handover: &Handover) -> bool {
    match caller.role {
        Role::Prison => caller.prison.as_deref() == Some(handover.prison_id.as_str()),
        _ => caller.can_access(
            &handover.destination.township_code,
            &handover.destination.county_code,
        ),
    }
}

pub fn ensure_can_read(caller: &Caller, handover: &Handover) -> Result<(), Denied> {
    if can_read(caller, handover) {
        Ok(())
    } else {
        Err(Denied::Unreadable)
    }
}

/// Steps of the prison: only the releasing prison (or an admin) takes them.
pub fn ensure_releasing_prison(caller: &Caller, handover: &Handover) -> Result<(), Denied> {
    match caller.role {
        Role::Admin => Ok(()),
        Role::Prison if caller.prison.as_deref() == Some(handover.prison_id.as_str()) => Ok(()),
        Role::Prison => Err(Denied::AnotherPrison),
        _ => Err(Denied::NotThePrison),
    }
}

/// Steps of the township: only the destination township's office and officers (or an admin).
pub fn ensure_receiving_office(caller: &Caller, handover: &Handover) -> Result<(), Denied> {
    match caller.role {
        Role::Admin => Ok(()),
        Role::Officer | Role::TownshipOffice
            if caller.township.as_deref() == Some(handover.destination.township_code.as_str()) =>
        {
            Ok(())
        }
        _ => Err(Denied::NotTheReceivingOffice),
    }
}

/// The two parties that take a handover's steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The releasing prison: submits, amends and cancels the notice, confirms the release.
    ReleasingPrison,
    /// The destination township office: acknowledges, records gate collection and report-in.
    ReceivingOffice,
}

impl Side {
    /// The roles that may act for this side at all.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Side::ReleasingPrison => PRISON_SIDE,
            Side::ReceivingOffice => TOWNSHIP_SIDE,
        }
    }

    /// Whether `caller` is this side of `handover`.
    pub fn ensure(self, caller: &Caller, handover: &Handover) -> Result<(), Denied> {
        match self {
            Side::ReleasingPrison => ensure_releasing_prison(caller, handover),
            Side::ReceivingOffice => ensure_receiving_office(caller, handover),
        }
    }
}

/// Which handovers a list covers: one prison's notices, or those bound for one township or
/// one county.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Prison(String),
    Township(String),
    County(String),
}

impl Scope {
    /// The request field that chose the scope (as recorded in the audit log).
    pub fn field(&self) -> &'static str {
        match self {
            Scope::Prison(_) => "prison_id",
            Scope::Township(_) => "township_code",
            Scope::County(_) => "county_code",
        }
    }

    pub fn value(&self) -> &str {
        match self {
            Scope::Prison(value) | Scope::Township(value) | Scope::County(value) => value,
        }
    }

    /// A prison lists its own notices, a township office or officer its township's, a county
    /// bureau its county's or one of its townships'; admins and mesh services anything.
    pub fn ensure_access(&self, caller: &Caller) -> Result<(), Denied> {
        let allowed = match (self, caller.role) {
            (_, Role::Admin | Role::System) => true,
            (Scope::Prison(prison), Role::Prison) => caller.prison.as_deref() == Some(prison.as_str()),
            (Scope::Township(township), Role::Officer | Role::TownshipOffice) => {
                caller.township.as_deref() == Some(township.as_str())
            }
            (Scope::Township(township), Role::CountyBureau) => Directory::get()
                .township(township)
                .is_some_and(|known| caller.county.as_deref() == Some(known.county_code.as_str())),
            (Scope::County(county), Role::CountyBureau) => caller.county.as_deref() == Some(county.as_str()),
            _ => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(Denied::OutsideScope)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Status, testing::handover};

    fn prison(id: &str) -> Caller {
        Caller {
            subject: format!("{id}-clerk"),
            role: Role::Prison,
            township: None,
            county: None,
            prison: Some(id.to_owned()),
        }
    }

    fn bureau(county: &str) -> Caller {
        Caller {
            subject: "bureau".into(),
            role: Role::CountyBureau,
            township: None,
            county: Some(county.into()),
            prison: None,
        }
    }

    fn office(township: &str, county: &str) -> Caller {
        Caller {
            subject: "office".into(),
            role: Role::TownshipOffice,
            township: Some(township.into()),
            county: Some(county.into()),
            prison: None,
        }
    }

    fn admin() -> Caller {
        Caller {
            subject: "admin".into(),
            role: Role::Admin,
            township: None,
            county: None,
            prison: None,
        }
    }

    #[test]
    fn list_scopes_follow_the_jurisdiction() {
        let own = Scope::Prison("zhangye-prison".into());
        assert!(own.ensure_access(&prison("zhangye-prison")).is_ok());
        assert!(own.ensure_access(&prison("jiuquan-prison")).is_err());
        let township = Scope::Township("620702001".into());
        assert!(township.ensure_access(&prison("zhangye-prison")).is_err());
        assert!(township.ensure_access(&bureau("620702")).is_ok());
        assert!(township.ensure_access(&bureau("620721")).is_err());
        assert!(
            Scope::County("620702".into())
                .ensure_access(&bureau("620702"))
                .is_ok()
        );
        let office = office("620702001", "620702");
        assert!(township.ensure_access(&office).is_ok());
        assert!(Scope::County("620702".into()).ensure_access(&office).is_err());
        assert!(Scope::County("620721".into()).ensure_access(&admin()).is_ok());
    }

    #[test]
    fn each_side_takes_only_its_own_steps() {
        // The sample handover comes from zhangye-prison and goes to township 620702001.
        let handover = handover(Status::Notified);
        assert_eq!(
            ensure_releasing_prison(&prison("zhangye-prison"), &handover),
            Ok(())
        );
        assert_eq!(
            ensure_releasing_prison(&prison("jiuquan-prison"), &handover),
            Err(Denied::AnotherPrison)
        );
        assert_eq!(
            ensure_releasing_prison(&office("620702001", "620702"), &handover),
            Err(Denied::NotThePrison)
        );
        assert_eq!(ensure_releasing_prison(&admin(), &handover), Ok(()));

        assert_eq!(
            ensure_receiving_office(&office("620702001", "620702"), &handover),
            Ok(())
        );
        assert_eq!(
            ensure_receiving_office(&office("620702002", "620702"), &handover),
            Err(Denied::NotTheReceivingOffice)
        );
        assert_eq!(
            ensure_receiving_office(&bureau("620702"), &handover),
            Err(Denied::NotTheReceivingOffice),
            "a bureau reads but does not receive"
        );
        assert_eq!(
            ensure_receiving_office(&prison("zhangye-prison"), &handover),
            Err(Denied::NotTheReceivingOffice)
        );
        assert_eq!(ensure_receiving_office(&admin(), &handover), Ok(()));
    }

    #[test]
    fn readers_are_the_parties_and_their_bureau() {
        let handover = handover(Status::Released);
        assert!(can_read(&prison("zhangye-prison"), &handover));
        assert!(!can_read(&prison("jiuquan-prison"), &handover));
        assert!(can_read(&office("620702001", "620702"), &handover));
        assert!(!can_read(&office("620702002", "620702"), &handover));
        assert!(can_read(&bureau("620702"), &handover));
        assert!(!can_read(&bureau("620721"), &handover));
        assert_eq!(
            ensure_can_read(&bureau("620721"), &handover),
            Err(Denied::Unreadable)
        );
    }

    #[test]
    fn a_prison_submits_in_its_own_name() {
        assert_eq!(
            ensure_own_notice(&prison("zhangye-prison"), "zhangye-prison"),
            Ok(())
        );
        assert_eq!(
            ensure_own_notice(&prison("zhangye-prison"), "jiuquan-prison"),
            Err(Denied::ForeignNotice)
        );
        assert_eq!(ensure_own_notice(&admin(), "jiuquan-prison"), Ok(()));
    }
}
