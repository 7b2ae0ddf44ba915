//! What an office may change of a resettlement base, when an update changes nothing, and
//! what an inactive base no longer takes.

use mesh_kit::error::ServiceError;

use super::BaseType;

/// The parts of a base an office maintains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseProfile {
    pub name: String,
    pub base_type: BaseType,
    pub contact_name: String,
    pub contact_phone: String,
    /// Whether the base takes placements.
    pub active: bool,
}

/// The changes of an update; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseChanges {
    pub name: Option<String>,
    pub base_type: Option<BaseType>,
    pub contact_name: Option<String>,
    pub contact_phone: Option<String>,
    pub active: Option<bool>,
}

impl BaseChanges {
    /// The profile after these changes. When it equals `current`, the update changes
    /// nothing and writes nothing (a retried request is harmless).
    pub fn applied_to(self, current: &BaseProfile) -> BaseProfile {
        BaseProfile {
            name: self.name.unwrap_or_else(|| current.name.clone()),
            base_type: self.base_type.unwrap_or(current.base_type),
            contact_name: self.contact_name.unwrap_or_else(|| current.contact_name.clone()),
            contact_phone: self
                .contact_phone
                .unwrap_or_else(|| current.contact_phone.clone()),
            active: self.active.unwrap_or(current.active),
        }
    }
}

/// The base is inactive; becomes `FailedPrecondition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the base does not take placements (inactive)")]
pub struct BaseInactive;

impl From<BaseInactive> for ServiceError {
    fn from(error: BaseInactive) -> Self {
        ServiceError::precondition(error.to_string())
    }
}

/// Whether a base takes new openings: only while active.
pub fn check_takes_openings(active: bool) -> Result<(), BaseInactive> {
    if active { Ok(()) } else { Err(BaseInactive) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_fields_keep_the_current_value() {
        let current = BaseProfile {
            name: "东街社区服务站".into(),
            base_type: BaseType::Workshop,
            contact_name: "王经理".into(),
            contact_phone: "13800001111".into(),
            active: true,
        };
        assert_eq!(BaseChanges::default().applied_to(&current), current);
        let closed = BaseChanges {
            active: Some(false),
            name: Some(current.name.clone()),
            ..Default::default()
        }
        .applied_to(&current);
        assert_eq!(
            closed,
            BaseProfile {
                active: false,
                ..current
            }
        );
        assert_eq!(check_takes_openings(true), Ok(()));
        assert_eq!(check_takes_openings(false), Err(BaseInactive));
    }
}
