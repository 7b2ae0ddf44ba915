//! One mapping from failures to gRPC statuses: bad input becomes `InvalidArgument` with a
//! `BadRequest` detail naming each offending field; database errors become `AlreadyExists`
//! (unique violation) or an opaque `Internal` whose details are logged, never returned.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Collects every invalid field of a request so the caller can fix them all at once.
#[derive(Debug, Default)]
pub struct FieldViolations(Vec<FieldViolation>);

impl FieldViolations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` is invalid because of `description`.
    pub fn add(&mut self, field: &str, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Records a violation when `condition` is false.
    pub fn require(&mut self, condition: bool, field: &str, description: &str) {
        if !condition {
            self.add(field, description);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok` when nothing was recorded, else `InvalidArgument`.
    pub fn into_result(self) -> Result<(), Status> {
        if self.0.is_empty() {
            return Ok(());
        }
        let message = self
            .0
            .iter()
            .map(|violation| format!("{}: {}", violation.field, violation.description))
            .collect::<Vec<_>>()
            .join("; ");
        Err(Status::with_error_details(
            Code::InvalidArgument,
            message,
            ErrorDetails::with_bad_request(self.0),
        ))
    }
}

/// `InvalidArgument` for a single field.
pub fn invalid_field(field: &str, description: impl Into<String>) -> Status {
    let mut violations = FieldViolations::new();
    violations.add(field, description);
    violations
        .into_result()
        .err()
        .unwrap_or_else(|| Status::invalid_argument(field.to_owned()))
}

/// The names of the fields a status's `BadRequest` detail blames (for clients and tests).
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|bad| bad.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// PostgreSQL SQLSTATE for a unique-constraint violation.
pub const UNIQUE_VIOLATION: &str = "23505";

/// Whether `error` is a unique-constraint violation.
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code == UNIQUE_VIOLATION)
}

/// Maps an unexpected internal error to an opaque status, logging the detail.
pub fn internal(error: impl std::fmt::Display) -> Status {
    tracing::error!(error = %error, "internal error");
    Status::internal("internal error")
}

/// Maps a database error: unique violations to `AlreadyExists`, the rest to [`internal`].
pub fn database(error: sqlx::Error) -> Status {
    if is_unique_violation(&error) {
        Status::already_exists("already exists")
    } else {
        internal(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_name_every_field() {
        let mut violations = FieldViolations::new();
        violations.add("name", "must not be empty");
        violations.require(false, "national_id", "wrong check character");
        violations.require(true, "phone", "never recorded");
        let status = violations.into_result().expect_err("two violations");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "name: must not be empty; national_id: wrong check character"
        );
        assert_eq!(violated_fields(&status), vec!["name", "national_id"]);
    }

    #[test]
    fn no_violations_is_ok() {
        assert!(FieldViolations::new().into_result().is_ok());
    }
}
