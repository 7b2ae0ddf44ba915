//! The rule every rejection keeps. A request validator refuses with `InvalidArgument`
//! naming at least one field, each by its path in the request (`checkin.device_time`,
//! `circles[2].radius_m`), so the caller can fix it; an event decoder refuses with a
//! permanent error (dead-lettered, never retried for ever) whose reason names the field at
//! fault or the undecodable payload, so an operator can tell what to fix.

use mesh_kit::{consumer::HandleError, error::ServiceError};
use proptest::{prop_assert, test_runner::TestCaseError};
use prost_reflect::{Kind, MessageDescriptor};

use crate::arbitrary::descriptor;

/// Checks a validator's answer to a request of the type `full_name`: accepted, or
/// `InvalidArgument` whose every field path exists in that type.
pub fn rejection<T: std::fmt::Debug>(
    full_name: &str,
    result: &Result<T, ServiceError>,
) -> Result<(), TestCaseError> {
    let error = match result {
        Ok(_) => return Ok(()),
        Err(error) => error,
    };
    let ServiceError::Invalid(violations) = error else {
        return Err(TestCaseError::fail(format!(
            "refused without naming a field: {error:?}"
        )));
    };
    let fields = violations.fields();
    prop_assert!(!fields.is_empty(), "InvalidArgument without a field violation");
    let request = descriptor(full_name);
    for field in fields {
        prop_assert!(
            path_exists(&request, &field),
            "{field:?} is not a field of {full_name} ({violations})"
        );
    }
    Ok(())
}

/// Checks a decoder's answer to an event whose payload is of the type `full_name`:
/// applied, or dead-lettered with a reason that names one of its fields (at any depth) or
/// the payload itself.
pub fn event_rejection<T: std::fmt::Debug>(
    full_name: &str,
    result: &Result<T, HandleError>,
) -> Result<(), TestCaseError> {
    let reason = match result {
        Ok(_) => return Ok(()),
        Err(HandleError::Permanent(reason)) => reason,
        Err(error @ HandleError::Transient(_)) => {
            return Err(TestCaseError::fail(format!(
                "bad data retried as if it were an outage: {error}"
            )));
        }
    };
    let mut names = Vec::new();
    field_names(&descriptor(full_name), 0, &mut names);
    prop_assert!(
        reason.contains("payload") || names.iter().any(|name| reason.contains(name.as_str())),
        "{reason:?} names no field of {full_name}"
    );
    Ok(())
}

/// Whether `path` (`items[2].device_time`) leads through fields of `message`.
pub fn path_exists(message: &MessageDescriptor, path: &str) -> bool {
    let mut current = Some(message.clone());
    for segment in path.split('.') {
        let name = segment.split_once('[').map_or(segment, |(name, _)| name);
        let Some(field) = current
            .as_ref()
            .and_then(|message| message.get_field_by_name(name))
        else {
            return false;
        };
        current = match field.kind() {
            Kind::Message(nested) => Some(nested),
            _ => None,
        };
    }
    !path.is_empty()
}

fn field_names(message: &MessageDescriptor, depth: usize, names: &mut Vec<String>) {
    for field in message.fields() {
        names.push(field.name().to_owned());
        if let Kind::Message(nested) = field.kind()
            && depth < 3
        {
            field_names(&nested, depth + 1, names);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_followed_through_nested_messages_and_lists() {
        let batch = descriptor("mesh.checkin.v1.SyncOfflineBatchRequest");
        let field = batch.fields().next().expect("a field").name().to_owned();
        assert!(path_exists(&batch, &field));
        assert!(!path_exists(&batch, ""));
        assert!(!path_exists(&batch, "no_such_field"));
        let record = descriptor("mesh.checkin.v1.RecordCheckinRequest");
        assert!(path_exists(&record, "checkin.device_time"));
        assert!(!path_exists(&record, "checkin.device_time.nope"));
        let area = descriptor("mesh.checkin.v1.SetPermittedAreaRequest");
        assert!(path_exists(&area, "circles[2].radius_m"));
    }
}
