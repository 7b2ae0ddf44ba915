//! Who may see and act on which alerts: officers and township offices those of their
//! township, county bureaus those of their county, admins and the mesh's own services all;
//! an alert escalated to the county bureau is resolved at county level.

use mesh_kit::{
    auth::{Caller, Role},
    error::ServiceError,
};

use super::{
    Jurisdiction,
    alert::{Alert, EscalationTarget},
};

/// Roles that work with alerts.
pub const ALERT_ROLES: &[Role] = &[
    Role::Officer,
    Role::TownshipOffice,
    Role::CountyBureau,
    Role::Admin,
    Role::System,
];

/// Roles that register webhook endpoints.
pub const ENDPOINT_ROLES: &[Role] = &[Role::TownshipOffice, Role::CountyBureau, Role::Admin];

/// Whether `caller` may work in `scope`: a township as for any of its records; a whole
/// county only as its county bureau, an admin or a service; no jurisdiction at all (the
/// operators' alerts) only as an admin or a service.
pub fn ensure_scope(caller: &Caller, scope: &Jurisdiction) -> Result<(), ServiceError> {
    if scope.is_operations() {
        // Operational alerts naming no jurisdiction are the operators' alone.
        return if matches!(caller.role, Role::Admin | Role::System) {
            Ok(())
        } else {
            Err(ServiceError::denied("operational alerts are for the operators"))
        };
    }
    if !scope.is_county_wide() {
        return caller.ensure_access(&scope.township_code, &scope.county_code);
    }
    let county_wide = match caller.role {
        Role::Admin | Role::System => true,
        Role::CountyBureau => caller.county.as_deref() == Some(scope.county_code.as_str()),
        _ => false,
    };
    if county_wide {
        Ok(())
    } else {
        Err(ServiceError::denied("outside the caller's jurisdiction"))
    }
}

/// Whether `caller` may see and act on `alert` (by the jurisdiction that owns it now).
pub fn ensure_alert(caller: &Caller, alert: &Alert) -> Result<(), ServiceError> {
    caller.ensure_access(&alert.jurisdiction.township_code, &alert.jurisdiction.county_code)
}

/// Whether `caller` may register (or replace) the webhook endpoint of `scope`: a
/// township's endpoint by its own township office, a county's by its county bureau, either
/// by an admin. A county bureau may not redirect a township's notifications (URL and
/// secret) to an address of its choosing, nor a township the county's.
pub fn ensure_may_register_endpoint(caller: &Caller, scope: &Jurisdiction) -> Result<(), ServiceError> {
    ensure_scope(caller, scope)?;
    let own_office = match caller.role {
        Role::Admin => true,
        Role::TownshipOffice => !scope.is_county_wide(),
        Role::CountyBureau => scope.is_county_wide(),
        _ => false,
    };
    if own_office {
        Ok(())
    } else {
        Err(ServiceError::denied(
            "an endpoint is registered by the office it belongs to",
        ))
    }
}

/// Whether `caller` may resolve `alert` by hand: as for any step, except that an alert
/// escalated to the county bureau is the bureau's to close (or an admin's), so a township
/// cannot quietly resolve what was escalated over its head. Resolutions the mesh makes
/// itself (a check-in answering a missed one) are not requests and are not checked here.
pub fn ensure_may_resolve(caller: &Caller, alert: &Alert) -> Result<(), ServiceError> {
    ensure_alert(caller, alert)?;
    let county_level = matches!(caller.role, Role::CountyBureau | Role::Admin | Role::System);
    if alert.escalation_target == EscalationTarget::CountyBureau && !county_level {
        return Err(ServiceError::denied(
            "an alert escalated to the county bureau is resolved at county level",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alert::tests::missed_checkin;

    fn caller(role: Role, township: Option<&str>, county: Option<&str>) -> Caller {
        Caller::new("someone", role, township, county)
    }

    fn place(township: &str, county: &str) -> Jurisdiction {
        Jurisdiction {
            township_code: township.into(),
            county_code: county.into(),
        }
    }

    #[test]
    fn only_the_county_bureau_admins_and_services_see_a_whole_county() {
        let county = place("", "620702");
        let officer = caller(Role::Officer, Some("620702001"), Some("620702"));
        let bureau = caller(Role::CountyBureau, None, Some("620702"));
        let other_bureau = caller(Role::CountyBureau, None, Some("620721"));
        assert!(ensure_scope(&officer, &county).is_err());
        assert!(ensure_scope(&bureau, &county).is_ok());
        assert!(ensure_scope(&other_bureau, &county).is_err());
        assert!(ensure_scope(&caller(Role::Admin, None, None), &county).is_ok());
        assert!(ensure_scope(&caller(Role::System, None, None), &county).is_ok());
    }

    #[test]
    fn a_township_is_seen_by_its_officers_and_its_county_bureau() {
        let township = place("620702001", "620702");
        let officer = caller(Role::Officer, Some("620702001"), Some("620702"));
        let neighbour = caller(Role::Officer, Some("620702002"), Some("620702"));
        assert!(ensure_scope(&officer, &township).is_ok());
        assert!(matches!(
            ensure_scope(&neighbour, &township),
            Err(ServiceError::Denied(_))
        ));
        assert!(ensure_scope(&caller(Role::CountyBureau, None, Some("620702")), &township).is_ok());
        let alert = missed_checkin();
        assert!(ensure_alert(&officer, &alert).is_ok());
        assert!(ensure_alert(&neighbour, &alert).is_err());
    }

    #[test]
    fn only_admins_and_services_see_the_operators_alerts() {
        let operations = Jurisdiction::operations();
        assert!(ensure_scope(&caller(Role::Admin, None, None), &operations).is_ok());
        assert!(ensure_scope(&caller(Role::System, None, None), &operations).is_ok());
        assert!(ensure_scope(&caller(Role::CountyBureau, None, Some("620702")), &operations).is_err());
        assert!(
            ensure_scope(
                &caller(Role::Officer, Some("620702001"), Some("620702")),
                &operations
            )
            .is_err()
        );
    }

    #[test]
    fn an_alert_escalated_to_the_county_is_resolved_at_county_level() {
        let mut alert = missed_checkin();
        let officer = caller(Role::Officer, Some("620702001"), Some("620702"));
        let office = caller(Role::TownshipOffice, Some("620702001"), Some("620702"));
        let bureau = caller(Role::CountyBureau, None, Some("620702"));
        let other_bureau = caller(Role::CountyBureau, None, Some("620721"));
        assert!(ensure_may_resolve(&officer, &alert).is_ok(), "the township's own");
        alert.escalation_target = EscalationTarget::CountyBureau;
        for township in [&officer, &office] {
            let refused = ensure_may_resolve(township, &alert).expect_err("county level");
            assert!(matches!(refused, ServiceError::Denied(_)), "{refused:?}");
        }
        assert!(ensure_may_resolve(&bureau, &alert).is_ok());
        assert!(ensure_may_resolve(&caller(Role::Admin, None, None), &alert).is_ok());
        assert!(
            ensure_may_resolve(&other_bureau, &alert).is_err(),
            "another county's bureau"
        );
    }

    #[test]
    fn an_endpoint_is_registered_by_the_office_it_belongs_to() {
        let township = place("620702001", "620702");
        let county = place("", "620702");
        let office = caller(Role::TownshipOffice, Some("620702001"), Some("620702"));
        let bureau = caller(Role::CountyBureau, None, Some("620702"));
        let admin = caller(Role::Admin, None, None);
        assert!(ensure_may_register_endpoint(&office, &township).is_ok());
        assert!(ensure_may_register_endpoint(&bureau, &county).is_ok());
        assert!(ensure_may_register_endpoint(&admin, &township).is_ok());
        assert!(
            ensure_may_register_endpoint(&bureau, &township).is_err(),
            "the bureau does not redirect a township's notifications"
        );
        assert!(ensure_may_register_endpoint(&office, &county).is_err());
    }
}
